/* df11_model: opening (df11 and BF16), the block scheduler over the arena, the tensor
 * lookup and the provider. The scheduler never blocks the host on the CUDA backend: a
 * decode waits for its slot's release event on the side stream, the engine's stream waits
 * for the decode's ready event. Loading lives in load.c, the stats page in stats.c. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "common/names.h"
#include "common/util.h"
#include "runtime/internal.h"

#define RT_PAYLOAD_ALIGN 4096ull   /* payloads, slots, resident groups */
#define RT_LAYER_PREFIX DF11_DEFAULT_LAYER_PREFIX

double df11_rt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

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
}

/* --- tensor name lookup --- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static df11_status hash_build(df11_model *m)
{
    uint32_t cap = 16;
    while (cap < 2 * m->n_tensors) cap *= 2;
    m->hash = calloc(cap, sizeof *m->hash);
    if (!m->hash) return df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    m->hash_mask = cap - 1;
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        uint32_t i = name_hash(m->tensors[t].view.name) & m->hash_mask;
        while (m->hash[i]) {
            if (!strcmp(m->tensors[m->hash[i] - 1].view.name, m->tensors[t].view.name))
                return df11_fail(DF11_ERR_DUPLICATE, "tensor '%s' appears twice",
                                 m->tensors[t].view.name);
            i = (i + 1) & m->hash_mask;
        }
        m->hash[i] = t + 1;
    }
    return DF11_OK;
}

static int64_t tensor_find(const df11_model *m, const char *name)
{
    uint32_t i = name_hash(name) & m->hash_mask;
    while (m->hash[i]) {
        if (!strcmp(m->tensors[m->hash[i] - 1].view.name, name)) return m->hash[i] - 1;
        i = (i + 1) & m->hash_mask;
    }
    return -1;
}

/* --- common open / close --- */

static df11_status model_new(const df11_model_options *options, const char *path,
                             df11_model **out)
{
    df11_model *m = calloc(1, sizeof *m);
    if (!m) return df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    df11_model_options_init(&m->opt);
    if (options) {
        if (options->size < offsetof(df11_model_options, publish_stats) + sizeof(int) ||
            /* the first version ended at publish_stats */
            options->size > 4096) {
            free(m);
            return df11_fail(DF11_ERR_INVALID_ARG,
                             "options.size %zu: call df11_model_options_init first",
                             options->size);
        }
        memcpy(&m->opt, options, options->size < sizeof m->opt ? options->size : sizeof m->opt);
        m->opt.size = sizeof m->opt;
    }
    if (m->opt.arena_slots < 2 || m->opt.arena_slots > DF11_ARENA_MAX_SLOTS ||
        (m->opt.nonlayer != DF11_NONLAYER_RESIDENT && m->opt.nonlayer != DF11_NONLAYER_ARENA)) {
        uint32_t k = m->opt.arena_slots;
        free(m);
        return df11_fail(DF11_ERR_INVALID_ARG, "options: arena_slots %u (2..%d) or nonlayer "
                         "policy out of range", k, DF11_ARENA_MAX_SLOTS);
    }
    m->path = strdup(path);
    if (!m->path) {
        free(m);
        return df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    }
    df11_status s;
    switch (m->opt.backend) {
    case DF11_BACKEND_AUTO:
        if (df11_backend_cuda_available()) {
            s = df11_backend_cuda_create(m->opt.device, &m->be);
            m->kind = DF11_BACKEND_CUDA;
        } else {
            s = df11_backend_host_create(m->opt.n_threads, &m->be);
            m->kind = DF11_BACKEND_HOST;
        }
        break;
    case DF11_BACKEND_HOST:
        s = df11_backend_host_create(m->opt.n_threads, &m->be);
        m->kind = DF11_BACKEND_HOST;
        break;
    case DF11_BACKEND_CUDA:
        s = df11_backend_cuda_create(m->opt.device, &m->be);
        m->kind = DF11_BACKEND_CUDA;
        break;
    default:
        s = df11_fail(DF11_ERR_INVALID_ARG, "options: unknown backend %d", (int)m->opt.backend);
    }
    if (s != DF11_OK) {
        free(m->path);
        free(m);
        return s;
    }
    m->be->n_threads = m->opt.n_threads;
    *out = m;
    return DF11_OK;
}

void df11_model_close(df11_model *m)
{
    if (!m) return;
    if (m->stats_page) df11_rt_stats_publish_close(m);
    df11_backend *be = m->be;
    if (m->side_stream) be->iface->synchronize(be, m->side_stream);
    for (uint32_t i = 0; i < m->arena.n_slots; i++) {
        if (m->slots[i].ready_event) be->iface->event_destroy(be, m->slots[i].ready_event);
        if (m->slots[i].release_event) be->iface->event_destroy(be, m->slots[i].release_event);
    }
    if (m->side_stream) be->iface->stream_destroy(be, m->side_stream);
    if (m->groups)
        for (uint32_t g = 0; g < m->n_groups; g++) free(m->groups[g].plan_host);
    df11_pool_destroy(m->pool);
    if (m->file) df11_file_close(m->file);
    if (m->st) df11_st_close(m->st);
    df11_backend_destroy(be);
    free(m->groups);
    free(m->tensors);
    free(m->block_group);
    free(m->hash);
    free(m->slot_views);
    free(m->bf16_acquired);
    free(m->bf16_views);
    free(m->bf16_block_first);
    free(m->path);
    free(m);
}

static double mib(uint64_t b) { return b / 1048576.0; }

/* The memory limit to plan against: options.memory_limit, else what the device has free. */
static uint64_t model_limit(df11_model *m)
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

/* --- df11 models --- */

/* Device bytes the decode plan of group g will take once built (0 on a backend without
 * plans), as load_group allocates it (256-aligned), for the limit check before the plans
 * exist. The backend asks the code that lays plans out (kernels/decode.h,
 * df11_gpu_plan_size) instead of this file copying its formula. */
static df11_status plan_estimate(df11_model *m, uint32_t g, uint64_t *bytes)
{
    uint64_t n = 0;
    df11_status s = m->be->iface->plan_size(m->be, m->file, g, &n);
    if (s != DF11_OK) return df11_fail_context(s, "plan size of group %u", g);
    *bytes = df11_align_up(n, 256);
    return DF11_OK;
}

static df11_status df11_open_layout(df11_model *m)
{
    df11_file *f = m->file;
    m->n_groups = df11_file_n_groups(f);
    m->n_tensors = df11_file_n_tensors(f);
    m->n_blocks = df11_file_n_layers(f);
    m->groups = calloc(m->n_groups ? m->n_groups : 1, sizeof *m->groups);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    m->block_group = calloc(m->n_blocks ? m->n_blocks : 1, sizeof *m->block_group);
    if (!m->groups || !m->tensors || !m->block_group)
        return df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    for (uint32_t g = 0; g < m->n_groups; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        m->groups[g] = (rt_group){.name = gi->name, .layer = gi->layer,
                                  .first_tensor = gi->first_tensor, .n_tensors = gi->n_tensors,
                                  .payload_size = gi->payload_size,
                                  .decoded_size = gi->decoded_size};
        if (gi->n_tensors > m->max_block_tensors) m->max_block_tensors = gi->n_tensors;
    }
    for (uint32_t b = 0; b < m->n_blocks; b++) {
        df11_status s = df11_file_layer_group(f, b, &m->block_group[b]);
        if (s != DF11_OK) return s;
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        const df11_tensor_info *ti = df11_file_tensor(f, t);
        rt_tensor *rt = &m->tensors[t];
        rt->group = ti->group;
        rt->offset = ti->decoded_offset;
        rt->view.name = ti->name;
        rt->view.dtype = ti->dtype;
        rt->view.ndim = ti->ndim;
        memcpy(rt->view.shape, ti->shape, sizeof rt->view.shape);
        rt->view.nbytes = ti->nbytes;
        rt->view.layer = m->groups[ti->group].layer;
        m->bf16_bytes += ti->nbytes;
    }
    return hash_build(m);
}

static int group_in_arena(const df11_model *m, const rt_group *g)
{
    return g->layer >= 0 || m->opt.nonlayer == DF11_NONLAYER_ARENA;
}

static df11_status df11_open_memory(df11_model *m)
{
    df11_backend *be = m->be;
    uint64_t slot = 0, compressed = 0, resident = 0, metadata = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (group_in_arena(m, gr)) {
            if (gr->decoded_size > slot) slot = gr->decoded_size;
            compressed += df11_align_up(gr->payload_size, RT_PAYLOAD_ALIGN);
        } else {
            resident += df11_align_up(gr->decoded_size, RT_PAYLOAD_ALIGN);
        }
        uint64_t plan = 0;
        df11_status s = plan_estimate(m, g, &plan);
        if (s != DF11_OK) return s;
        metadata += plan;
    }
    slot = df11_align_up(slot ? slot : 1, RT_PAYLOAD_ALIGN);
    uint32_t k = m->opt.arena_slots;
    uint64_t arena = slot * k;
    uint64_t need = compressed + arena + resident + metadata;
    uint64_t limit = model_limit(m);
    if (limit && need > limit)
        return df11_fail(DF11_ERR_DEVICE_MEMORY,
                         "'%s' needs %.1f MiB (compressed %.1f + arena %u x %.1f + resident "
                         "%.1f + metadata %.1f) but the limit is %.1f MiB: short by %llu bytes "
                         "(%.1f MiB)", m->path, mib(need), mib(compressed), k, mib(slot),
                         mib(resident), mib(metadata), mib(limit),
                         (unsigned long long)(need - limit), mib(need - limit));
    df11_pool_allocator mem = df11_backend_device_memory(be);
    df11_status s = df11_pool_create(&mem, limit, &m->pool);
    if (s != DF11_OK) return s;
    df11_pool_set_chunk_min(m->pool, 4ull << 20);
    if ((s = df11_pool_reserve(m->pool, need)) != DF11_OK) return s;
    void *base;
    if ((s = df11_pool_alloc(m->pool, arena, RT_PAYLOAD_ALIGN, DF11_POOL_USE_ARENA, &base)) != DF11_OK)
        return s;
    if ((s = df11_arena_init(&m->arena, k, slot, base)) != DF11_OK) return s;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (group_in_arena(m, gr))
            /* the GPU decoder reads lane streams 16 bytes at a time */
            s = df11_pool_alloc(m->pool, df11_align_up(gr->payload_size, 16), RT_PAYLOAD_ALIGN,
                                DF11_POOL_USE_COMPRESSED, &gr->payload);
        else
            s = df11_pool_alloc(m->pool, gr->decoded_size, RT_PAYLOAD_ALIGN,
                                DF11_POOL_USE_RESIDENT, &gr->resident);
        if (s != DF11_OK) return s;
    }
    if ((s = be->iface->stream_create(be, !m->opt.decode_normal_priority, &m->side_stream)) != DF11_OK) return s;
    for (uint32_t i = 0; i < k; i++) {
        if ((s = be->iface->event_create(be, &m->slots[i].ready_event)) != DF11_OK ||
            (s = be->iface->event_create(be, &m->slots[i].release_event)) != DF11_OK)
            return s;
    }
    m->slot_views = calloc((size_t)k * (m->max_block_tensors ? m->max_block_tensors : 1),
                           sizeof *m->slot_views);
    if (!m->slot_views) return df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    return DF11_OK;
}

/* The checks and allocation both kinds of open start with. */
static df11_status open_begin(const char *fn, const char *path, const df11_model_options *options,
                              df11_model **out, df11_model **m)
{
    if (!out) return df11_fail(DF11_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return df11_fail(DF11_ERR_INVALID_ARG, "%s: path is NULL", fn);
    return model_new(options, path, m);
}

static void views_resident(df11_model *m)
{
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        rt_tensor *rt = &m->tensors[t];
        rt_group *g = &m->groups[rt->group];
        rt->view.data = g->resident ? (char *)g->resident + rt->offset : NULL;
    }
}

df11_status df11_model_open(const char *path, const df11_model_options *options,
                            df11_model **out)
{
    double t0 = df11_rt_now_ms();
    df11_model *m = NULL;
    df11_status s = open_begin("df11_model_open", path, options, out, &m);
    if (s != DF11_OK) return s;
    if ((s = df11_file_open(path, &m->file)) != DF11_OK ||
        (s = df11_open_layout(m)) != DF11_OK || (s = df11_open_memory(m)) != DF11_OK ||
        (s = df11_rt_load(m)) != DF11_OK) {
        df11_model_close(m);
        return s;
    }
    m->config = df11_file_metadata(m->file, &m->config_len);
    views_resident(m);
    m->open_ms = df11_rt_now_ms() - t0;
    if (m->opt.publish_stats) df11_rt_stats_publish_open(m);
    *out = m;
    return DF11_OK;
}

/* --- BF16 models: every tensor resident, blocks only checked --- */

df11_status df11_model_open_bf16(const char *path, const df11_model_options *options,
                                 df11_model **out)
{
    double t0 = df11_rt_now_ms();
    df11_model *m = NULL;
    df11_status s = open_begin("df11_model_open_bf16", path, options, out, &m);
    if (s != DF11_OK) return s;
    if ((s = df11_st_open(path, &m->st)) != DF11_OK) goto fail;
    df11_st_model *st = m->st;
    if (st->n_tensors > UINT32_MAX / 2) {
        s = df11_fail(DF11_ERR_OVERFLOW, "'%s': too many tensors", path);
        goto fail;
    }
    m->n_tensors = (uint32_t)st->n_tensors;
    int32_t max_layer = -1;
    uint32_t n_nonlayer = 0;
    int32_t *layer = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *layer);
    if (!layer) {
        s = df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
        goto fail;
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        layer[t] = df11_layer_of(st->tensors[t].name, RT_LAYER_PREFIX);
        if (layer[t] > max_layer) max_layer = layer[t];
        if (layer[t] < 0) n_nonlayer++;
    }
    m->n_blocks = (uint32_t)(max_layer + 1);
    m->n_groups = m->n_blocks + n_nonlayer;
    m->groups = calloc(m->n_groups ? m->n_groups : 1, sizeof *m->groups);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    m->block_group = calloc(m->n_blocks ? m->n_blocks : 1, sizeof *m->block_group);
    m->bf16_acquired = calloc(m->n_blocks ? m->n_blocks : 1, 1);
    uint32_t *src = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *src);
    if (!m->groups || !m->tensors || !m->block_group || !m->bf16_acquired || !src) {
        free(layer);
        free(src);
        s = df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
        goto fail;
    }
    /* Order: block 0's tensors, block 1's, ..., then each non-layer tensor as a group. */
    uint32_t nt = 0, ng = 0;
    for (uint32_t b = 0; b < m->n_blocks; b++) {
        rt_group *g = &m->groups[ng];
        m->block_group[b] = ng++;
        g->name = "";
        g->layer = (int32_t)b;
        g->first_tensor = nt;
        for (uint32_t t = 0; t < m->n_tensors; t++)
            if (layer[t] == (int32_t)b) src[nt++] = t;
        g->n_tensors = nt - g->first_tensor;
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        if (layer[t] >= 0) continue;
        rt_group *g = &m->groups[ng++];
        g->name = st->tensors[t].name;
        g->layer = -1;
        g->first_tensor = nt;
        g->n_tensors = 1;
        src[nt++] = t;
    }
    free(layer);
    uint64_t total = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        uint64_t off = 0;
        for (uint32_t i = gr->first_tensor; i < gr->first_tensor + gr->n_tensors; i++) {
            const df11_tensor_source *ts = &st->tensors[src[i]];
            rt_tensor *rt = &m->tensors[i];
            uint64_t n = 1;
            for (uint32_t d = 0; d < ts->ndim; d++) n *= ts->shape[d];
            rt->view.name = ts->name;
            rt->view.dtype = ts->dtype;
            rt->view.ndim = ts->ndim;
            memcpy(rt->view.shape, ts->shape, sizeof rt->view.shape);
            rt->view.nbytes = n * df11_dtype_size(ts->dtype);
            rt->view.layer = gr->layer;
            rt->group = g;
            rt->offset = off;
            off += df11_align_up(rt->view.nbytes, 256);
            m->bf16_bytes += rt->view.nbytes;
        }
        gr->decoded_size = off;
        if (gr->n_tensors > m->max_block_tensors) m->max_block_tensors = gr->n_tensors;
        total += df11_align_up(off, RT_PAYLOAD_ALIGN);
    }
    if ((s = hash_build(m)) != DF11_OK) {
        free(src);
        goto fail;
    }
    uint64_t limit = model_limit(m);
    if (limit && total > limit) {
        free(src);
        s = df11_fail(DF11_ERR_DEVICE_MEMORY, "'%s' needs %.1f MiB of BF16 weights but the "
                      "limit is %.1f MiB: short by %llu bytes (%.1f MiB)", path, mib(total),
                      mib(limit), (unsigned long long)(total - limit), mib(total - limit));
        goto fail;
    }
    df11_pool_allocator mem = df11_backend_device_memory(m->be);
    if ((s = df11_pool_create(&mem, limit, &m->pool)) != DF11_OK ||
        (s = df11_pool_reserve(m->pool, total)) != DF11_OK) {
        free(src);
        goto fail;
    }
    for (uint32_t g = 0; g < m->n_groups && s == DF11_OK; g++) {
        rt_group *gr = &m->groups[g];
        s = df11_pool_alloc(m->pool, gr->decoded_size, RT_PAYLOAD_ALIGN, DF11_POOL_USE_RESIDENT,
                            &gr->resident);
        for (uint32_t i = gr->first_tensor; s == DF11_OK && i < gr->first_tensor + gr->n_tensors; i++)
            s = m->be->iface->copy_h2d(m->be, (char *)gr->resident + m->tensors[i].offset,
                                       st->tensors[src[i]].data, m->tensors[i].view.nbytes, NULL);
    }
    free(src);
    if (s == DF11_OK) s = m->be->iface->synchronize(m->be, NULL);
    if (s != DF11_OK) goto fail;
    views_resident(m);
    /* Per-block views, persistent: the tensors of a block are consecutive. */
    m->bf16_views = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->bf16_views);
    if (!m->bf16_views) {
        s = df11_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
        goto fail;
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) m->bf16_views[t] = m->tensors[t].view;
    m->config = st->config_json;
    m->config_len = st->config_json ? st->config_len : 0;
    m->open_ms = df11_rt_now_ms() - t0;
    if (m->opt.publish_stats) df11_rt_stats_publish_open(m);
    *out = m;
    return DF11_OK;
fail:
    df11_model_close(m);
    return s;
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

df11_backend_kind df11_model_backend(const df11_model *m) { return m ? m->kind : DF11_BACKEND_AUTO; }
const df11_file *df11_model_file(const df11_model *m) { return m ? m->file : NULL; }
uint32_t df11_model_n_blocks(const df11_model *m) { return m ? m->n_blocks : 0; }

/* --- scheduling --- */

/* Makes sure group `g` (arena key `key`) has a slot with its decode enqueued. */
static df11_status slot_fill(df11_model *m, int64_t key, uint32_t g, int prefetch, int *slot)
{
    int i = df11_arena_find(&m->arena, key);
    if (i >= 0) {
        *slot = i;
        return DF11_OK;
    }
    df11_status s = df11_arena_claim(&m->arena, key, prefetch, &i, NULL);
    if (s != DF11_OK) return s;
    df11_backend *be = m->be;
    rt_slot *sl = &m->slots[i];
    rt_group *gr = &m->groups[g];
    /* The slot's previous tenant may still be read by the engine's stream. */
    if (sl->release_recorded && (s = be->iface->stream_wait(be, m->side_stream, sl->release_event)) != DF11_OK)
        goto fail;
    df11_backend_group bg = {.file = m->file, .group = g, .payload = gr->payload,
                             .plan_host = gr->plan_host, .plan_dev = gr->plan_dev};
    if ((s = be->iface->decode_group(be, &bg, m->arena.slots[i].data, m->side_stream)) != DF11_OK)
        goto fail;
    if ((s = be->iface->event_record(be, sl->ready_event, m->side_stream)) != DF11_OK) goto fail;
    m->decodes++;
    *slot = i;
    return DF11_OK;
fail:
    df11_arena_drop(&m->arena, i);
    return s;
}

df11_status df11_block_prefetch(df11_model *m, uint32_t block)
{
    if (!m) return df11_fail(DF11_ERR_INVALID_ARG, "df11_block_prefetch: model is NULL");
    if (block >= m->n_blocks)
        return df11_fail(DF11_ERR_NOT_FOUND, "block %u: the model has %u blocks", block,
                         m->n_blocks);
    if (!m->file) return DF11_OK; /* BF16: always resident */
    int slot;
    df11_status s = slot_fill(m, block, m->block_group[block], 1, &slot);
    if (s == DF11_OK) df11_rt_stats_publish(m);
    return s;
}

static void fill_block_view(df11_model *m, uint32_t block, int slot, df11_block_view *view)
{
    rt_group *gr = &m->groups[m->block_group[block]];
    view->block = block;
    view->n_tensors = gr->n_tensors;
    if (!m->file) {
        view->tensors = &m->bf16_views[gr->first_tensor];
        return;
    }
    df11_tensor_view *v = &m->slot_views[(size_t)slot * m->max_block_tensors];
    for (uint32_t i = 0; i < gr->n_tensors; i++) {
        rt_tensor *rt = &m->tensors[gr->first_tensor + i];
        v[i] = rt->view;
        v[i].data = (char *)m->arena.slots[slot].data + rt->offset;
    }
    view->tensors = v;
}

df11_status df11_block_acquire(df11_model *m, uint32_t block, df11_stream stream,
                               df11_block_view *view)
{
    if (!m) return df11_fail(DF11_ERR_INVALID_ARG, "df11_block_acquire: model is NULL");
    if (block >= m->n_blocks)
        return df11_fail(DF11_ERR_NOT_FOUND, "block %u: the model has %u blocks", block,
                         m->n_blocks);
    if (!m->file) {
        if (m->bf16_acquired[block])
            return df11_fail(DF11_ERR_STATE, "block %u is already acquired", block);
        m->bf16_acquired[block] = 1;
        m->acquires++;
        if (view) fill_block_view(m, block, -1, view);
        return DF11_OK;
    }
    int slot = df11_arena_find(&m->arena, block);
    if (slot >= 0 && m->arena.slots[slot].state == DF11_SLOT_ACQUIRED)
        return df11_fail(DF11_ERR_STATE, "block %u is already acquired", block);
    df11_status s = slot_fill(m, block, m->block_group[block], 0, &slot);
    if (s != DF11_OK) {
        if (s == DF11_ERR_BUSY)
            return df11_fail(DF11_ERR_BUSY, "block %u: all %u arena slots hold acquired "
                             "blocks; release one first", block, m->arena.n_slots);
        return s;
    }
    df11_arena_acquire(&m->arena, slot);
    /* Queue the next K-1 blocks (wrapping to block 0 for the next token) behind it. */
    uint32_t ahead = m->opt.prefetch_blocks < 0 ? m->arena.n_slots - 1
                                                : (uint32_t)m->opt.prefetch_blocks;
    for (uint32_t j = 1; j <= ahead && j < m->n_blocks; j++) {
        uint32_t nb = (block + j) % m->n_blocks;
        int ns;
        if (slot_fill(m, nb, m->block_group[nb], 1, &ns) != DF11_OK) break;
    }
    df11_backend *be = m->be;
    s = be->iface->stream_wait(be, stream, m->slots[slot].ready_event);
    if (s != DF11_OK) { /* the decode failed (host) or the wait could not be enqueued */
        df11_arena_release(&m->arena, slot, NULL);
        df11_arena_drop(&m->arena, slot);
        return s;
    }
    df11_clear_error();
    m->acquires++;
    if (view) fill_block_view(m, block, slot, view);
    df11_rt_stats_publish(m);
    return DF11_OK;
}

/* Records on `stream` the point after which an acquired slot may be overwritten, and
 * hands the slot back to the arena. */
static df11_status slot_release(df11_model *m, int slot, df11_stream stream)
{
    rt_slot *sl = &m->slots[slot];
    df11_status s = m->be->iface->event_record(m->be, sl->release_event, stream);
    if (s != DF11_OK) return s;
    sl->release_recorded = 1;
    df11_arena_release(&m->arena, slot, NULL);
    df11_rt_stats_publish(m);
    return DF11_OK;
}

df11_status df11_block_release(df11_model *m, uint32_t block, df11_stream stream)
{
    if (!m) return df11_fail(DF11_ERR_INVALID_ARG, "df11_block_release: model is NULL");
    if (block >= m->n_blocks)
        return df11_fail(DF11_ERR_NOT_FOUND, "block %u: the model has %u blocks", block,
                         m->n_blocks);
    if (!m->file) {
        if (!m->bf16_acquired[block])
            return df11_fail(DF11_ERR_STATE, "block %u is not acquired", block);
        m->bf16_acquired[block] = 0;
        return DF11_OK;
    }
    int slot = df11_arena_find(&m->arena, block);
    if (slot < 0 || m->arena.slots[slot].state != DF11_SLOT_ACQUIRED)
        return df11_fail(DF11_ERR_STATE, "block %u is not acquired", block);
    return slot_release(m, slot, stream);
}

/* --- tensors --- */

df11_status df11_tensor_get(df11_model *m, const char *name, df11_stream stream,
                            df11_tensor_view *view)
{
    if (!m || !name || !view)
        return df11_fail(DF11_ERR_INVALID_ARG, "df11_tensor_get: NULL argument");
    int64_t t = tensor_find(m, name);
    if (t < 0) return df11_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    rt_tensor *rt = &m->tensors[t];
    rt_group *gr = &m->groups[rt->group];
    if (gr->layer >= 0) {
        uint32_t b = (uint32_t)gr->layer;
        int acquired;
        int slot = -1;
        if (!m->file) {
            acquired = m->bf16_acquired[b];
        } else {
            slot = df11_arena_find(&m->arena, b);
            acquired = slot >= 0 && m->arena.slots[slot].state == DF11_SLOT_ACQUIRED;
        }
        if (!acquired)
            return df11_fail(DF11_ERR_STATE, "tensor '%s': block %u is not acquired", name, b);
        *view = rt->view;
        if (slot >= 0) view->data = (char *)m->arena.slots[slot].data + rt->offset;
        return DF11_OK;
    }
    if (gr->resident) {
        *view = rt->view;
        return DF11_OK;
    }
    /* A non-layer group under the ARENA policy. */
    int64_t key = (int64_t)m->n_blocks + rt->group;
    int slot = df11_arena_find(&m->arena, key);
    df11_status s;
    if (slot >= 0 && m->arena.slots[slot].state == DF11_SLOT_ACQUIRED) {
        df11_arena_ref(&m->arena, slot);
    } else {
        if ((s = slot_fill(m, key, rt->group, 0, &slot)) != DF11_OK) {
            if (s == DF11_ERR_BUSY)
                return df11_fail(DF11_ERR_BUSY, "tensor '%s': all %u arena slots are "
                                 "acquired; release one first", name, m->arena.n_slots);
            return s;
        }
        df11_arena_acquire(&m->arena, slot);
        s = m->be->iface->stream_wait(m->be, stream, m->slots[slot].ready_event);
        if (s != DF11_OK) {
            df11_arena_release(&m->arena, slot, NULL);
            df11_arena_drop(&m->arena, slot);
            return s;
        }
    }
    *view = rt->view;
    view->data = (char *)m->arena.slots[slot].data + rt->offset;
    df11_rt_stats_publish(m);
    return DF11_OK;
}

df11_status df11_tensor_release(df11_model *m, const char *name, df11_stream stream)
{
    if (!m || !name) return df11_fail(DF11_ERR_INVALID_ARG, "df11_tensor_release: NULL argument");
    int64_t t = tensor_find(m, name);
    if (t < 0) return df11_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    rt_tensor *rt = &m->tensors[t];
    rt_group *gr = &m->groups[rt->group];
    if (gr->layer >= 0 || gr->resident) return DF11_OK; /* released with its block / never */
    int64_t key = (int64_t)m->n_blocks + rt->group;
    int slot = df11_arena_find(&m->arena, key);
    if (slot < 0 || m->arena.slots[slot].state != DF11_SLOT_ACQUIRED)
        return df11_fail(DF11_ERR_STATE, "tensor '%s' is not held (release without get)", name);
    return slot_release(m, slot, stream);
}

/* --- stats --- */

df11_status df11_model_stats_get(const df11_model *m, df11_model_stats *st)
{
    if (!m || !st) return df11_fail(DF11_ERR_INVALID_ARG, "df11_model_stats_get: NULL argument");
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    df11_pool_stats ps;
    df11_pool_stats_get(m->pool, &ps);
    st->compressed_bytes = ps.used[DF11_POOL_USE_COMPRESSED];
    st->bf16_bytes = m->bf16_bytes;
    st->arena_bytes = ps.used[DF11_POOL_USE_ARENA];
    st->resident_bytes = ps.used[DF11_POOL_USE_RESIDENT];
    st->staging_bytes = m->staging_bytes;
    st->metadata_bytes = ps.used[DF11_POOL_USE_METADATA];
    st->pool_high_water = ps.high_water;
    st->arena_slots = m->arena.n_slots;
    for (uint32_t i = 0; i < 16; i++)
        st->slot_block[i] = i < m->arena.n_slots && m->arena.slots[i].state != DF11_SLOT_EMPTY
                                ? (int32_t)m->arena.slots[i].key : -1;
    st->decodes = m->decodes;
    double d = m->be->iface->decode_ms(m->be);
    st->decode_ms = d < 0 ? 0 : d;
    st->open_ms = m->open_ms;
    st->pool_reserved = ps.reserved;
    st->acquires = m->acquires;
    st->stats_page_error = m->opt.publish_stats && m->stats_error[0] ? m->stats_error : NULL;
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

df11_status df11_model_provider(df11_model *m, df11_provider *p)
{
    if (!m || !p) return df11_fail(DF11_ERR_INVALID_ARG, "df11_model_provider: NULL argument");
    memset(p, 0, sizeof *p);
    p->size = sizeof *p;
    p->ctx = m;
    p->n_blocks = pv_n_blocks;
    p->block_acquire = pv_acquire;
    p->block_release = pv_release;
    p->tensor_get = pv_tensor_get;
    p->tensor_release = pv_tensor_release;
    p->block_prefetch = pv_prefetch;
    return DF11_OK;
}
