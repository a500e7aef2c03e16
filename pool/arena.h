/* The scratch arena's bookkeeping: K equal slots, each empty, holding a decoded group
 * (cached: ready or being decoded, not in use), or held by the engine (acquired). A slot is
 * keyed by what it holds (the runtime uses the block index, and n_blocks + group for
 * non-layer groups under the ARENA policy). This file only decides which slot to use; the
 * slots' memory belongs to a pool, and whatever else the caller tracks per slot (the
 * runtime's decode and release events) lives in the caller's own array, indexed like
 * `slots`.
 *
 * Choice of a slot for a new key (df11i_arena_claim):
 *   1. an empty slot;
 *   2. a cached slot that is not a pending prefetch (released earlier), least recently used;
 *   3. for a demand (acquire), a pending prefetch, the one claimed longest ago;
 * never an acquired slot: when all are acquired the claim fails with DF11_ERR_BUSY.
 * A prefetch claim stops at step 2, so prefetching never evicts work queued for later use.
 */
#ifndef DF11_POOL_ARENA_H
#define DF11_POOL_ARENA_H

#include <stdint.h>

#include "df11/status.h"

#define DF11_ARENA_MAX_SLOTS 64

typedef enum df11i_slot_state {
    DF11_SLOT_EMPTY = 0,
    DF11_SLOT_CACHED = 1, /* decode enqueued or done; not in use */
    DF11_SLOT_ACQUIRED = 2,
} df11i_slot_state;

typedef struct df11i_arena_slot {
    void *data; /* slot_size bytes of pool memory */
    df11i_slot_state state;
    int64_t key;    /* -1 when empty */
    int prefetched; /* claimed by a prefetch and not acquired since */
    uint32_t refs;  /* acquisitions outstanding (ACQUIRED iff refs > 0) */
    uint64_t stamp; /* last claim / release, for LRU */
} df11i_arena_slot;

typedef struct df11i_arena {
    uint32_t n_slots;
    uint64_t slot_size;
    uint64_t clock;
    df11i_arena_slot slots[DF11_ARENA_MAX_SLOTS];
} df11i_arena;

/* Sets up n_slots (1..DF11_ARENA_MAX_SLOTS) empty slots; slot i's memory is
 * base + i * slot_size (base may be NULL in tests). */
df11_status df11i_arena_init(df11i_arena *arena, uint32_t n_slots, uint64_t slot_size, void *base);
/* The slot holding `key` (any state but empty), or -1. */
int df11i_arena_find(const df11i_arena *arena, int64_t key);
/* Claims a slot for `key` per the rules above; the slot becomes CACHED with that key
 * (`prefetched` set for a prefetch). The caller then enqueues the decode into it. Returns
 * DF11_ERR_BUSY if no slot may be taken. `evicted` (may be NULL) gets the key the slot
 * held before, or -1. */
df11_status df11i_arena_claim(df11i_arena *arena, int64_t key, int prefetch, int *slot,
                              int64_t *evicted);
/* CACHED → ACQUIRED (refs 1). DF11_ERR_STATE if the slot is empty or already acquired. */
df11_status df11i_arena_acquire(df11i_arena *arena, int slot);
/* Adds a reference to an acquired slot (several tensor_get of one non-layer group). */
df11_status df11i_arena_ref(df11i_arena *arena, int slot);
/* Drops one reference; at zero the slot becomes CACHED (still holding its key). Sets
 * *now_free when it did. DF11_ERR_STATE if the slot is not acquired. */
df11_status df11i_arena_release(df11i_arena *arena, int slot, int *now_free);
/* Forgets a slot's contents (a failed decode): back to EMPTY. */
void df11i_arena_drop(df11i_arena *arena, int slot);
uint32_t df11i_arena_n_acquired(const df11i_arena *arena);

#endif
