/* A memory pool: a few large allocations ("chunks") taken from an allocator the caller
 * supplies and handed out in aligned pieces, with byte accounting per use. Pieces are never
 * freed one by one: everything goes back at df11i_pool_destroy (a model's memory lives as
 * long as the model), so no allocation happens on the hot path and nothing fragments.
 *
 *     df11i_pool *p;
 *     df11i_pool_allocator mem = {my_alloc, my_free, ctx}; // the runtime's: VRAM, pinned
 *     df11i_pool_create(&mem, limit, &p);
 *     df11i_pool_reserve(p, bytes_needed);          // one allocation up front
 *     void *slot;
 *     df11i_pool_alloc(p, slot_size, 4096, DF11_POOL_USE_ARENA, &slot);
 *     ...
 *     df11i_pool_destroy(p);                        // frees every chunk
 *
 * The pool knows no devices: which memory a chunk is (VRAM, pinned host memory) is the
 * allocator's business, so pool/ never includes runtime/.
 *
 * A request that does not fit the current chunk opens a new chunk of
 * max(request, chunk_min) bytes. A request that would take the pool past its limit fails
 * with DF11_ERR_DEVICE_MEMORY (detail: the shortfall). Not thread-safe: the runtime uses a
 * pool from one thread at a time.
 */
#ifndef DF11_POOL_POOL_H
#define DF11_POOL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "df11/status.h"

typedef struct df11i_pool df11i_pool;

/* Where chunks come from. alloc returns at least 4096-aligned memory (the pool aligns
 * pieces within a chunk, not the chunk) or fails with a status and its detail. */
typedef struct df11i_pool_allocator {
    df11_status (*alloc)(void *ctx, size_t size, void **ptr);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} df11i_pool_allocator;

typedef enum df11i_pool_use {
    DF11_POOL_USE_COMPRESSED = 0, /* compressed payloads */
    DF11_POOL_USE_ARENA,          /* decode slots */
    DF11_POOL_USE_RESIDENT,       /* decoded tensors kept for the model's life */
    DF11_POOL_USE_STAGING,        /* read buffers */
    DF11_POOL_USE_METADATA,       /* decode plans, tables */
    DF11_POOL_USE_COUNT_
} df11i_pool_use;

typedef struct df11i_pool_stats {
    uint64_t used[DF11_POOL_USE_COUNT_]; /* bytes handed out per use, alignment included */
    uint64_t used_total;
    uint64_t reserved;   /* bytes taken from the allocator (all chunks) */
    uint64_t high_water; /* most bytes ever reserved */
    uint64_t limit;      /* 0 = none */
    uint32_t n_chunks;
} df11i_pool_stats;

/* `mem` is copied; what its ctx points to must outlive the pool. `limit`: the most bytes
 * the pool may take from the allocator, 0 = no limit. */
df11_status df11i_pool_create(const df11i_pool_allocator *mem, uint64_t limit, df11i_pool **out);
/* Frees every chunk. NULL is ignored. */
void df11i_pool_destroy(df11i_pool *pool);
/* Smallest size of a chunk opened by a request that does not fit (default 64 MiB). */
void df11i_pool_set_chunk_min(df11i_pool *pool, uint64_t bytes);
/* Opens a chunk of exactly `bytes` now (unless the current chunk has that much left), so
 * that the following allocations come out of one allocation. */
df11_status df11i_pool_reserve(df11i_pool *pool, uint64_t bytes);
/* `align`: a power of two (0 = 256). The piece is valid until df11i_pool_destroy. */
df11_status df11i_pool_alloc(df11i_pool *pool, uint64_t size, uint64_t align, df11i_pool_use use,
                             void **ptr);
void df11i_pool_stats_get(const df11i_pool *pool, df11i_pool_stats *stats);
const char *df11i_pool_use_name(df11i_pool_use use);

/* Bytes currently taken from allocators by every pool in the process (leak checks). */
uint64_t df11i_pool_live_bytes(void);

#endif
