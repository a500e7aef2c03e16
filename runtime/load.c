/* Loading a .df11 model's payloads into the backend: reader.c reads each group into one of
 * two host staging buffers (pinned on CUDA) and checks its xxh3; here its GPU plan is built
 * (CUDA) and payload and plan are copied to the device on the side stream, while the
 * reader already reads the next group into the other buffer. A staging buffer is reused
 * only after the copy out of it has completed (its event). Non-layer groups under the
 * RESIDENT policy are decoded as they arrive and their payload is not kept; streamed groups
 * (stream.c) go to pinned host memory (HOST tier) or nowhere (FILE tier): the read still
 * verifies them and builds their plan. A model of a block range reads only the groups it
 * serves.
 *
 * On failure the reader has reaped its reads and the side stream is drained before the
 * staging buffers go; the caller (df11_model_open) then frees the rest with
 * df11_model_close. */
#include <string.h>

#include "common/util.h"
#include "loader/reader.h"
#include "runtime/internal.h"

/* Copies (and for a resident group decodes) one verified group out of staging. */
static df11_status load_group(df11_model *m, uint32_t g, const uint8_t *staged, void *tmp)
{
    df11i_backend *be = m->be;
    rt_group *gr = &m->groups[g];
    df11_status s;
    if (be->iface->plan_build) {
        size_t blob_size = 0;
        if ((s = be->iface->plan_build(be, m->file, g, staged, &gr->plan_host, &blob_size)) !=
            DF11_OK)
            return s;
        if ((s = df11i_pool_alloc(m->pool, blob_size, 256, DF11_POOL_USE_METADATA,
                                  &gr->plan_dev)) != DF11_OK ||
            (s = be->iface->copy_h2d(be, gr->plan_dev, gr->plan_host, blob_size, m->side_stream)) !=
                DF11_OK)
            return s;
    }
    if (gr->tier == DF11_TIER_FILE) return DF11_OK; /* read again on every pass */
    if (gr->tier == DF11_TIER_HOST) {
        memcpy(gr->host_payload, staged, gr->payload_size);
        return DF11_OK;
    }
    void *dst = gr->resident ? tmp : gr->payload;
    if ((s = be->iface->copy_h2d(be, dst, staged, gr->payload_size, m->side_stream)) != DF11_OK)
        return s;
    if (gr->resident) {
        df11i_backend_group bg = { .file = m->file,
                                   .group = g,
                                   .payload = dst,
                                   .plan_host = gr->plan_host,
                                   .plan_dev = gr->plan_dev };
        if ((s = be->iface->decode_group(be, &bg, gr->resident, m->side_stream)) != DF11_OK)
            return s;
        m->decodes++;
        /* `tmp` is reused by the next resident group. */
        if ((s = be->iface->synchronize(be, m->side_stream)) != DF11_OK) return s;
    }
    return DF11_OK;
}

/* What the reader's sink needs: the model, the resident groups' scratch payload memory,
 * and an event per staging buffer marking the end of the copy out of it. */
typedef struct load_ctx {
    df11_model *m;
    void *tmp;
    void *copied[2];
} load_ctx;

static df11_status sink_consume(void *ctx, uint32_t group, const void *payload, int buf)
{
    load_ctx *c = ctx;
    df11_status s = load_group(c->m, group, payload, c->tmp);
    if (s != DF11_OK) return s;
    return c->m->be->iface->event_record(c->m->be, c->copied[buf], c->m->side_stream);
}

static df11_status sink_reuse(void *ctx, int buf)
{
    load_ctx *c = ctx;
    return c->m->be->iface->event_sync(c->m->be, c->copied[buf]);
}

/* Two staging buffers (and their events) in a host pool, each the largest payload. */
static df11_status staging_make(df11_model *m, uint64_t buf_size, df11i_pool **staging,
                                void *bufs[2], load_ctx *c)
{
    df11i_backend *be = m->be;
    df11i_pool_allocator pinned = df11i_backend_host_memory(be);
    df11_status s;
    if ((s = df11i_pool_create(&pinned, 0, staging)) != DF11_OK ||
        (s = df11i_pool_reserve(*staging, 2 * buf_size)) != DF11_OK)
        return s;
    for (int i = 0; i < 2; i++) {
        if ((s = df11i_pool_alloc(*staging, buf_size, DF11_READ_ALIGN, DF11_POOL_USE_STAGING,
                                  &bufs[i])) != DF11_OK ||
            (s = be->iface->event_create(be, &c->copied[i])) != DF11_OK)
            return s;
    }
    m->staging_bytes = 2 * buf_size;
    return DF11_OK;
}

/* Scratch device memory for resident groups' payloads: the arena while it is unused, else
 * an allocation of its own (*owned). */
static df11_status resident_scratch(df11_model *m, uint64_t size, void **tmp, int *owned)
{
    if (!size) return DF11_OK;
    if (size <= (uint64_t)m->arena.n_slots * m->arena.slot_size) {
        *tmp = m->arena.slots[0].data;
        return DF11_OK;
    }
    df11_status s = m->be->iface->alloc(m->be, size, tmp);
    if (s != DF11_OK) return s;
    *owned = 1;
    m->staging_bytes += size;
    return DF11_OK;
}

/* The served groups (a model of a block range skips the others), in runs of consecutive
 * groups, one read each. */
static df11_status read_served(df11_model *m, void *const bufs[2], uint64_t buf_size,
                               const df11i_read_sink *sink)
{
    for (uint32_t g = 0; g < m->n_groups;) {
        if (!df11i_rt_group_served(m, g)) {
            g++;
            continue;
        }
        uint32_t end = g + 1;
        while (end < m->n_groups && df11i_rt_group_served(m, end)) end++;
        df11_status s = df11i_read_groups(m->file, g, end - g, bufs, buf_size, sink);
        if (s != DF11_OK) return s;
        g = end;
    }
    return DF11_OK;
}

df11_status df11i_rt_load(df11_model *m)
{
    df11i_backend *be = m->be;
    if (m->n_groups == 0) return DF11_OK;
    uint64_t max_payload = 0, max_resident_payload = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        const rt_group *gr = &m->groups[g];
        if (!df11i_rt_group_served(m, g)) continue;
        if (gr->payload_size > max_payload) max_payload = gr->payload_size;
        if (gr->resident && gr->payload_size > max_resident_payload)
            max_resident_payload = gr->payload_size;
    }
    uint64_t buf_size = df11i_align_up(max_payload ? max_payload : 1, DF11_READ_ALIGN);
    load_ctx c = { .m = m };
    df11i_pool *staging = NULL;
    void *bufs[2] = { NULL, NULL };
    int tmp_owned = 0;
    df11i_read_sink sink = { .consume = sink_consume, .reuse = sink_reuse, .ctx = &c };
    df11_status s = staging_make(m, buf_size, &staging, bufs, &c);
    if (s == DF11_OK) s = resident_scratch(m, max_resident_payload, &c.tmp, &tmp_owned);
    if (s == DF11_OK) s = read_served(m, bufs, buf_size, &sink);
    /* The side stream may still copy out of staging, after a failure too. */
    if (m->side_stream) {
        df11_status s2 = be->iface->synchronize(be, m->side_stream);
        if (s == DF11_OK) s = s2;
    }
    for (int i = 0; i < 2; i++)
        if (c.copied[i]) be->iface->event_destroy(be, c.copied[i]);
    if (tmp_owned) be->iface->free(be, c.tmp);
    df11i_pool_destroy(staging);
    return s;
}
