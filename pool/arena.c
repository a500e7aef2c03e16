/* Slot selection and state for the scratch arena (see arena.h). Pure bookkeeping: no
 * memory is allocated and no backend is called here, so every rule is unit-testable. */
#include <string.h>

#include "common/error.h"
#include "pool/arena.h"

df11_status df11i_arena_init(df11i_arena *a, uint32_t n_slots, uint64_t slot_size, void *base)
{
    if (!a || n_slots == 0 || n_slots > DF11_ARENA_MAX_SLOTS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "arena: %u slots (1..%d)", n_slots,
                          DF11_ARENA_MAX_SLOTS);
    memset(a, 0, sizeof *a);
    a->n_slots = n_slots;
    a->slot_size = slot_size;
    for (uint32_t i = 0; i < n_slots; i++) {
        a->slots[i].key = -1;
        a->slots[i].data = base ? (char *)base + (uint64_t)i * slot_size : NULL;
    }
    return DF11_OK;
}

int df11i_arena_find(const df11i_arena *a, int64_t key)
{
    for (uint32_t i = 0; i < a->n_slots; i++)
        if (a->slots[i].state != DF11_SLOT_EMPTY && a->slots[i].key == key) return (int)i;
    return -1;
}

df11_status df11i_arena_claim(df11i_arena *a, int64_t key, int prefetch, int *slot,
                              int64_t *evicted)
{
    if (evicted) *evicted = -1;
    if (df11i_arena_find(a, key) >= 0)
        return df11i_fail(DF11_ERR_STATE, "arena: key %lld already has a slot", (long long)key);
    int best = -1, rank = 4;
    for (uint32_t i = 0; i < a->n_slots; i++) {
        const df11i_arena_slot *s = &a->slots[i];
        int r;
        if (s->state == DF11_SLOT_EMPTY)
            r = 0;
        else if (s->state == DF11_SLOT_CACHED && !s->prefetched)
            r = 1;
        else if (s->state == DF11_SLOT_CACHED && !prefetch)
            r = 2;
        else
            continue;
        if (r < rank || (r == rank && s->stamp < a->slots[best].stamp)) {
            best = (int)i;
            rank = r;
        }
    }
    if (best < 0)
        return df11i_fail(DF11_ERR_BUSY, "arena: all %u slots are %s", a->n_slots,
                          prefetch ? "acquired or hold pending prefetches" : "acquired");
    df11i_arena_slot *s = &a->slots[best];
    if (evicted) *evicted = s->state == DF11_SLOT_EMPTY ? -1 : s->key;
    s->state = DF11_SLOT_CACHED;
    s->key = key;
    s->prefetched = prefetch != 0;
    s->refs = 0;
    s->stamp = ++a->clock;
    *slot = best;
    return DF11_OK;
}

df11_status df11i_arena_acquire(df11i_arena *a, int slot)
{
    if (slot < 0 || (uint32_t)slot >= a->n_slots)
        return df11i_fail(DF11_ERR_INVALID_ARG, "arena: no slot %d", slot);
    df11i_arena_slot *s = &a->slots[slot];
    if (s->state != DF11_SLOT_CACHED)
        return df11i_fail(DF11_ERR_STATE, "arena: slot %d is %s", slot,
                          s->state == DF11_SLOT_EMPTY ? "empty" : "already acquired");
    s->state = DF11_SLOT_ACQUIRED;
    s->prefetched = 0;
    s->refs = 1;
    s->stamp = ++a->clock;
    return DF11_OK;
}

df11_status df11i_arena_ref(df11i_arena *a, int slot)
{
    if (slot < 0 || (uint32_t)slot >= a->n_slots || a->slots[slot].state != DF11_SLOT_ACQUIRED)
        return df11i_fail(DF11_ERR_STATE, "arena: slot %d is not acquired", slot);
    a->slots[slot].refs++;
    return DF11_OK;
}

df11_status df11i_arena_release(df11i_arena *a, int slot, int *now_free)
{
    if (now_free) *now_free = 0;
    if (slot < 0 || (uint32_t)slot >= a->n_slots || a->slots[slot].state != DF11_SLOT_ACQUIRED)
        return df11i_fail(DF11_ERR_STATE, "arena: slot %d is not acquired", slot);
    df11i_arena_slot *s = &a->slots[slot];
    if (--s->refs == 0) {
        s->state = DF11_SLOT_CACHED;
        s->stamp = ++a->clock;
        if (now_free) *now_free = 1;
    }
    return DF11_OK;
}

void df11i_arena_drop(df11i_arena *a, int slot)
{
    if (slot < 0 || (uint32_t)slot >= a->n_slots) return;
    df11i_arena_slot *s = &a->slots[slot];
    s->state = DF11_SLOT_EMPTY;
    s->key = -1;
    s->prefetched = 0;
    s->refs = 0;
}

uint32_t df11i_arena_n_acquired(const df11i_arena *a)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->n_slots; i++) n += a->slots[i].state == DF11_SLOT_ACQUIRED;
    return n;
}
