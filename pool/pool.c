/* Chunked bump allocator with per-use byte accounting (see pool.h). Must not know about
 * models, blocks, streams or backends: the runtime decides what goes where, and the
 * allocator it passes decides what memory a chunk is. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "pool/pool.h"

#define POOL_CHUNK_MIN_DEFAULT (64ull << 20)
#define POOL_CHUNK_ALIGN 4096ull

typedef struct pool_chunk {
    uint8_t *base;
    uint64_t size, used;
} pool_chunk;

struct df11i_pool {
    df11i_pool_allocator mem;
    uint64_t limit, chunk_min;
    pool_chunk *chunks;
    uint32_t n_chunks, cap_chunks;
    df11i_pool_stats st;
};

static _Atomic uint64_t live_bytes;

uint64_t df11i_pool_live_bytes(void) { return atomic_load(&live_bytes); }

const char *df11i_pool_use_name(df11i_pool_use use)
{
    static const char *const names[DF11_POOL_USE_COUNT_] = { "compressed", "arena", "resident",
                                                             "staging", "metadata" };
    return (unsigned)use < DF11_POOL_USE_COUNT_ ? names[use] : "?";
}

df11_status df11i_pool_create(const df11i_pool_allocator *mem, uint64_t limit, df11i_pool **out)
{
    if (!mem || !mem->alloc || !mem->free || !out)
        return df11i_fail(DF11_ERR_INVALID_ARG, "pool: bad argument");
    *out = NULL;
    df11i_pool *p = calloc(1, sizeof *p);
    if (!p) return df11i_fail(DF11_ERR_NO_MEMORY, "pool: out of host memory");
    p->mem = *mem;
    p->limit = limit;
    p->chunk_min = POOL_CHUNK_MIN_DEFAULT;
    p->st.limit = limit;
    *out = p;
    return DF11_OK;
}

void df11i_pool_destroy(df11i_pool *p)
{
    if (!p) return;
    for (uint32_t i = 0; i < p->n_chunks; i++) {
        p->mem.free(p->mem.ctx, p->chunks[i].base);
        atomic_fetch_sub(&live_bytes, p->chunks[i].size);
    }
    free(p->chunks);
    free(p);
}

void df11i_pool_set_chunk_min(df11i_pool *p, uint64_t bytes)
{
    if (p) p->chunk_min = bytes ? df11i_align_up(bytes, POOL_CHUNK_ALIGN) : POOL_CHUNK_MIN_DEFAULT;
}

static df11_status pool_open_chunk(df11i_pool *p, uint64_t size)
{
    size = df11i_align_up(size, POOL_CHUNK_ALIGN);
    if (p->limit && p->st.reserved + size > p->limit)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "pool: %llu more bytes would take it to %llu, past its limit of "
                          "%llu: short by %llu bytes",
                          (unsigned long long)size, (unsigned long long)(p->st.reserved + size),
                          (unsigned long long)p->limit,
                          (unsigned long long)(p->st.reserved + size - p->limit));
    if (p->n_chunks == p->cap_chunks) {
        uint32_t cap = p->cap_chunks ? 2 * p->cap_chunks : 4;
        pool_chunk *c = realloc(p->chunks, cap * sizeof *c);
        if (!c) return df11i_fail(DF11_ERR_NO_MEMORY, "pool: out of host memory");
        p->chunks = c;
        p->cap_chunks = cap;
    }
    void *base = NULL;
    df11_status s = p->mem.alloc(p->mem.ctx, size, &base);
    if (s != DF11_OK) return s;
    p->chunks[p->n_chunks++] = (pool_chunk){ .base = base, .size = size, .used = 0 };
    atomic_fetch_add(&live_bytes, size);
    p->st.reserved += size;
    p->st.n_chunks = p->n_chunks;
    if (p->st.reserved > p->st.high_water) p->st.high_water = p->st.reserved;
    return DF11_OK;
}

df11_status df11i_pool_reserve(df11i_pool *p, uint64_t bytes)
{
    if (!p) return df11i_fail(DF11_ERR_INVALID_ARG, "pool: NULL");
    if (p->n_chunks) {
        pool_chunk *c = &p->chunks[p->n_chunks - 1];
        if (c->size - c->used >= bytes) return DF11_OK;
    }
    return bytes ? pool_open_chunk(p, bytes) : DF11_OK;
}

df11_status df11i_pool_alloc(df11i_pool *p, uint64_t size, uint64_t align, df11i_pool_use use,
                             void **ptr)
{
    if (!p || !ptr || (unsigned)use >= DF11_POOL_USE_COUNT_)
        return df11i_fail(DF11_ERR_INVALID_ARG, "pool: bad argument");
    if (align == 0) align = 256;
    if (align & (align - 1) || align > POOL_CHUNK_ALIGN)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "pool: alignment %llu is not a power of two "
                          "<= 4096",
                          (unsigned long long)align);
    *ptr = NULL;
    if (size == 0) size = 1;
    if (size > UINT64_MAX / 2) return df11i_fail(DF11_ERR_OVERFLOW, "pool: size overflow");
    pool_chunk *c = p->n_chunks ? &p->chunks[p->n_chunks - 1] : NULL;
    uint64_t off = c ? df11i_align_up(c->used, align) : 0;
    if (!c || off > c->size || c->size - off < size) {
        /* Earlier chunks may still have room for small pieces. */
        for (uint32_t i = 0; c && i + 1 < p->n_chunks; i++) {
            pool_chunk *e = &p->chunks[i];
            uint64_t o = df11i_align_up(e->used, align);
            if (o <= e->size && e->size - o >= size) {
                c = e;
                off = o;
                goto found;
            }
        }
        uint64_t want = size > p->chunk_min ? size : p->chunk_min;
        if (p->limit && p->st.reserved + want > p->limit && p->st.reserved + size <= p->limit)
            want = size; /* a smaller chunk still fits under the limit */
        df11_status s = pool_open_chunk(p, want);
        if (s != DF11_OK) return s;
        c = &p->chunks[p->n_chunks - 1];
        off = 0;
    }
found:;
    uint64_t taken = off + size - c->used;
    c->used = off + size;
    p->st.used[use] += taken;
    p->st.used_total += taken;
    *ptr = c->base + off;
    return DF11_OK;
}

void df11i_pool_stats_get(const df11i_pool *p, df11i_pool_stats *st)
{
    if (!st) return;
    if (!p) {
        memset(st, 0, sizeof *st);
        return;
    }
    *st = p->st;
}
