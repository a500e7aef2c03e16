/* The model object: options, the backend it runs on, what the two opens share (open_df11.c,
 * open_bf16.c), close, accessors and the provider. Scheduling is in schedule.c, tensor
 * lookup in tensors.c, loading in load.c, the model's numbers in model_stats.c. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/error.h"
#include "runtime/internal.h"

void df11_model_options_init(df11_model_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->backend = DF11_BACKEND_AUTO;
    o->device = 0;
    o->arena_slots = 2;
    o->nonlayer = DF11_NONLAYER_RESIDENT;
    o->memory_limit = 0;
    o->n_threads = 0;
    o->publish_stats = 0;
    o->decode_normal_priority = 0;
    o->prefetch_blocks = -1;
    o->host_budget = 0;
    o->stream_from_file = 0;
    o->staging_slots = 3;
}

/* --- making, opening and closing a model --- */

/* The caller's options over the defaults; a struct from a newer header is cut to ours. */
static df11_status options_take(df11_model_options *opt, const df11_model_options *options)
{
    df11_model_options_init(opt);
    if (options) {
        if (options->size < offsetof(df11_model_options, publish_stats) + sizeof(int) ||
            /* the first version ended at publish_stats */
            options->size > 4096)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "options.size %zu: call df11_model_options_init first",
                              options->size);
        memcpy(opt, options, options->size < sizeof *opt ? options->size : sizeof *opt);
        opt->size = sizeof *opt;
    }
    if (opt->staging_slots == 0) opt->staging_slots = 3;
    if (opt->staging_slots < 2 || opt->staging_slots > DF11_MAX_STAGING)
        return df11i_fail(DF11_ERR_INVALID_ARG, "options: staging_slots %u (2..%d, 0 = 3)",
                          opt->staging_slots, DF11_MAX_STAGING);
    if (opt->decode_lean_ctas > DF11_MAX_LEAN_CTAS)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "options: decode_lean_ctas %u (0 = one per SM, at most %d)",
                          opt->decode_lean_ctas, DF11_MAX_LEAN_CTAS);
    if (opt->arena_slots == 1 || opt->arena_slots > DF11_ARENA_MAX_SLOTS ||
        (opt->nonlayer != DF11_NONLAYER_RESIDENT && opt->nonlayer != DF11_NONLAYER_ARENA &&
         opt->nonlayer != DF11_NONLAYER_COMPRESSED))
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "options: arena_slots %u (0, or 2..%d) or nonlayer "
                          "policy out of range",
                          opt->arena_slots, DF11_ARENA_MAX_SLOTS);
    return DF11_OK;
}

/* options.backend; AUTO is CUDA where a device is present, else the host. */
static df11_status backend_create(df11_model *m)
{
    df11_backend_kind kind = m->opt.backend;
    if (kind == DF11_BACKEND_AUTO)
        kind = df11i_backend_cuda_available() ? DF11_BACKEND_CUDA : DF11_BACKEND_HOST;
    df11_status s;
    if (kind == DF11_BACKEND_HOST)
        s = df11i_backend_host_create(m->opt.n_threads, &m->be);
    else if (kind == DF11_BACKEND_CUDA)
        s = df11i_backend_cuda_create(m->opt.device, &m->be);
    else
        return df11i_fail(DF11_ERR_INVALID_ARG, "options: unknown backend %d", (int)m->opt.backend);
    if (s != DF11_OK) return s;
    m->kind = kind;
    m->be->n_threads = m->opt.n_threads;
    return DF11_OK;
}

static df11_status model_new(const df11_model_options *options, const char *path, df11_model **out)
{
    df11_model *m = calloc(1, sizeof *m);
    if (!m) return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    m->hg_group = UINT32_MAX;
    df11_status s = options_take(&m->opt, options);
    if (s == DF11_OK && !(m->path = strdup(path)))
        s = df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    if (s == DF11_OK) s = backend_create(m);
    if (s != DF11_OK) {
        free(m->path);
        free(m);
        return s;
    }
    *out = m;
    return DF11_OK;
}

df11_status df11i_rt_model_new(const char *fn, const char *path, const df11_model_options *options,
                               df11_model **out, df11_model **m)
{
    if (!out) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: path is NULL", fn);
    return model_new(options, path, m);
}

uint64_t df11i_rt_memory_limit(df11_model *m)
{
    if (m->opt.memory_limit) return m->opt.memory_limit;
    uint64_t free_b = 0, total_b = 0;
    if (m->be->iface->mem_info(m->be, &free_b, &total_b) == DF11_OK && free_b) {
        /* leave room for the CUDA context's own allocations and the engine's first ones */
        uint64_t headroom = 256ull << 20;
        return free_b > headroom ? free_b - headroom : 1;
    }
    return 0;
}

/* Resident tensors' views point into their group's memory; a resident block's view is a
 * copy of them made once, so that acquire hands out a pointer and copies nothing. */
static df11_status views_resident(df11_model *m)
{
    m->resident_views = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->resident_views);
    if (!m->resident_views) return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        rt_tensor *rt = &m->tensors[t];
        rt_group *g = &m->groups[rt->group];
        rt->view.data = g->resident ? (char *)g->resident + rt->offset : NULL;
        m->resident_views[t] = rt->view;
    }
    return DF11_OK;
}

df11_status df11i_rt_open_finish(df11_model *m, double t0, df11_model **out)
{
    df11_status s = views_resident(m);
    if (s == DF11_OK) s = df11i_rt_matmul_open(m);
    if (s != DF11_OK) {
        df11_model_close(m);
        return s;
    }
    m->open_ms = df11i_now_ms() - t0;
    if (m->opt.publish_stats) df11i_rt_stats_publish_open(m);
    *out = m;
    return DF11_OK;
}

void df11_model_close(df11_model *m)
{
    if (!m) return;
    df11i_stats_page_remove(&m->stats_page);
    df11i_backend *be = m->be;
    if (m->side_stream) be->iface->synchronize(be, m->side_stream);
    df11i_rt_ring_close(m);
    df11i_rt_gather_close(m);
    df11i_rt_matmul_close(m);
    for (uint32_t i = 0; i < m->arena.n_slots; i++) {
        if (m->slots[i].ready_event) be->iface->event_destroy(be, m->slots[i].ready_event);
        if (m->slots[i].release_event) be->iface->event_destroy(be, m->slots[i].release_event);
    }
    if (m->prefetch_event) be->iface->event_destroy(be, m->prefetch_event);
    if (m->side_stream) be->iface->stream_destroy(be, m->side_stream);
    if (m->groups)
        for (uint32_t g = 0; g < m->n_groups; g++) free(m->groups[g].plan_host);
    df11i_pool_destroy(m->pool);
    df11i_pool_destroy(m->pinned);
    if (m->file) df11_file_close(m->file);
    if (m->st) df11i_st_close(m->st);
    df11i_backend_destroy(be);
    free(m->groups);
    free(m->tensors);
    free(m->block_group);
    free(m->hash);
    free(m->slot_views);
    free(m->resident_views);
    free(m->path);
    free(m);
}

df11_status df11i_rt_range_take(df11_model *m)
{
    const uint32_t first = m->opt.first_block, count = m->opt.block_count;
    if ((first || count) && (first >= m->n_blocks || count > m->n_blocks - first))
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "'%s': options: blocks %u..%u (first_block %u, block_count %u) but the "
                          "model has blocks 0..%u",
                          m->path, first, first + (count ? count : 1) - 1, first, count,
                          m->n_blocks ? m->n_blocks - 1 : 0);
    m->block_first = first;
    m->block_end = count ? first + count : m->n_blocks;
    return DF11_OK;
}

df11_status df11i_rt_block_check(const df11_model *m, uint32_t block, const char *fn)
{
    if (!m) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: model is NULL", fn);
    if (block >= m->n_blocks)
        return df11i_fail(DF11_ERR_NOT_FOUND, "%s: block %u: the model has %u blocks", fn, block,
                          m->n_blocks);
    if (!df11i_rt_block_served(m, block))
        return df11i_fail(DF11_ERR_NOT_FOUND,
                          "%s: block %u is not served by this model (blocks %u..%u)", fn, block,
                          m->block_first, m->block_end - 1);
    return DF11_OK;
}

/* --- accessors --- */

const char *df11_model_config(const df11_model *m, size_t *len)
{
    if (!m || !m->config) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = m->config_len;
    return m->config;
}

df11_status df11_model_hparams(const df11_model *m, df11_hparams *h)
{
    if (!m || !h) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_hparams: NULL argument");
    size_t len;
    const char *json = df11_model_config(m, &len);
    if (!json || !len) /* a df11 file written without one stores none */
        return df11i_fail(DF11_ERR_NOT_FOUND, "'%s' has no config.json", m->path);
    return df11_hparams_parse(json, len, h);
}

df11_backend_kind df11_model_backend(const df11_model *m)
{
    return m ? m->kind : DF11_BACKEND_AUTO;
}
const df11_file *df11_model_file(const df11_model *m) { return m ? m->file : NULL; }
uint32_t df11_model_n_blocks(const df11_model *m) { return m ? m->n_blocks : 0; }

df11_status df11_model_block_range(const df11_model *m, uint32_t *first, uint32_t *count)
{
    if (!m || !first || !count)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_block_range: NULL argument");
    *first = m->block_first;
    *count = m->block_end - m->block_first;
    return DF11_OK;
}

df11_status df11_model_block_tier(const df11_model *m, uint32_t block, df11_tier *tier)
{
    if (!tier) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_block_tier: NULL argument");
    df11_status s = df11i_rt_block_check(m, block, "df11_model_block_tier");
    if (s != DF11_OK) return s;
    *tier = m->groups[m->block_group[block]].tier;
    return DF11_OK;
}

/* --- provider --- */

static uint32_t pv_n_blocks(void *ctx) { return df11_model_n_blocks(ctx); }
static df11_status pv_acquire(void *ctx, uint32_t b, df11_stream s, df11_block_view *v)
{
    return df11_block_acquire(ctx, b, s, v);
}
static df11_status pv_release(void *ctx, uint32_t b, df11_stream s)
{
    return df11_block_release(ctx, b, s);
}
static df11_status pv_tensor_get(void *ctx, const char *n, df11_stream s, df11_tensor_view *v)
{
    return df11_tensor_get(ctx, n, s, v);
}
static df11_status pv_tensor_release(void *ctx, const char *n, df11_stream s)
{
    return df11_tensor_release(ctx, n, s);
}
static df11_status pv_prefetch(void *ctx, uint32_t b) { return df11_block_prefetch(ctx, b); }
static df11_status pv_weight_get(void *ctx, const char *n, df11_weight *w)
{
    return df11_weight_get(ctx, n, w);
}
static df11_status pv_matmul(void *ctx, const df11_weight *w, const void *x, uint32_t batch,
                             void *y, df11_dtype y_dtype, df11_stream s)
{
    return df11_matmul(ctx, w, x, batch, y, y_dtype, s);
}
static df11_status pv_weight_stack(void *ctx, uint32_t n, const df11_weight *parts,
                                   df11_weight *stacked)
{
    return df11_weight_stack(ctx, n, parts, stacked);
}
static df11_status pv_rows_gather(void *ctx, const df11_weight *w, const uint32_t *ids, uint32_t n,
                                  void *out, df11_dtype out_dtype, df11_stream s)
{
    return df11_rows_gather(ctx, w, ids, n, out, out_dtype, s);
}
static df11_status pv_tensor_id(void *ctx, const char *n, uint32_t *id)
{
    return df11_tensor_id(ctx, n, id);
}
static df11_status pv_tensor_get_id(void *ctx, uint32_t id, df11_stream s, df11_tensor_view *v)
{
    return df11_tensor_get_id(ctx, id, s, v);
}
static df11_status pv_tensor_release_id(void *ctx, uint32_t id, df11_stream s)
{
    return df11_tensor_release_id(ctx, id, s);
}

df11_status df11_model_provider(df11_model *m, df11_provider *p)
{
    if (!m || !p) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_provider: NULL argument");
    memset(p, 0, sizeof *p);
    p->size = sizeof *p;
    p->ctx = m;
    p->n_blocks = pv_n_blocks;
    p->block_acquire = pv_acquire;
    p->block_release = pv_release;
    p->tensor_get = pv_tensor_get;
    p->tensor_release = pv_tensor_release;
    p->block_prefetch = pv_prefetch;
    p->weight_get = pv_weight_get;
    p->matmul = pv_matmul;
    p->weight_stack = pv_weight_stack;
    p->rows_gather = pv_rows_gather;
    p->tensor_id = pv_tensor_id;
    p->tensor_get_id = pv_tensor_get_id;
    p->tensor_release_id = pv_tensor_release_id;
    return DF11_OK;
}
