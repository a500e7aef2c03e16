/* df11_model_open: a .df11 file's groups and tensors as the model's (layout), the memory
 * plan checked against the limit before anything is allocated (memory), then the payloads
 * read into the pool (load.c). Layer groups stay compressed and are decoded into arena
 * slots; non-layer groups are decoded once at open (RESIDENT), go through the arena too
 * (ARENA: slots sized for them as well), or stay compressed for the ops (COMPRESSED:
 * slots sized by the layer groups alone). */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/util.h"
#include "runtime/internal.h"

/* Device bytes the decode plan of group g will take once built (0 on a backend without
 * plans), as load_group allocates it (256-aligned), for the limit check before the plans
 * exist. The backend asks the code that lays plans out (kernels/decode.h,
 * df11i_gpu_plan_size) instead of this file copying its formula. */
static df11_status plan_estimate(df11_model *m, uint32_t g, uint64_t *bytes)
{
    uint64_t n = 0;
    df11_status s = m->be->iface->plan_size(m->be, m->file, g, &n);
    if (s != DF11_OK) return df11i_fail_context(s, "plan size of group %u", g);
    *bytes = df11i_align_up(n, 256);
    return DF11_OK;
}

/* Groups and tensors from the file's index; the decoded data of none exists yet. */
static df11_status layout_from_file(df11_model *m)
{
    df11_file *f = m->file;
    m->n_groups = df11_file_n_groups(f);
    m->n_tensors = df11_file_n_tensors(f);
    m->n_blocks = df11_file_n_layers(f);
    m->groups = calloc(m->n_groups ? m->n_groups : 1, sizeof *m->groups);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    m->block_group = calloc(m->n_blocks ? m->n_blocks : 1, sizeof *m->block_group);
    if (!m->groups || !m->tensors || !m->block_group)
        return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    for (uint32_t g = 0; g < m->n_groups; g++) {
        const df11_group_info *gi = df11_file_group(f, g);
        m->groups[g] = (rt_group){ .name = gi->name,
                                   .layer = gi->layer,
                                   .first_tensor = gi->first_tensor,
                                   .n_tensors = gi->n_tensors,
                                   .payload_size = gi->payload_size,
                                   .decoded_size = gi->decoded_size };
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
    return df11i_rt_names_index(m);
}

/* Kept compressed (else decoded resident at open). */
static int group_in_arena(const df11_model *m, const rt_group *g)
{
    return g->layer >= 0 || m->opt.nonlayer != DF11_NONLAYER_RESIDENT;
}

/* Counts in the slot size: under COMPRESSED the 1 GB embedding of a Llama-3 does not. */
static int group_sizes_slot(const df11_model *m, const rt_group *g)
{
    return g->layer >= 0 || m->opt.nonlayer == DF11_NONLAYER_ARENA;
}

/* What the model needs from the device, computed from the index alone. */
typedef struct memory_plan {
    uint64_t slot; /* one arena slot: the largest group that sizes it, decoded */
    uint32_t k;    /* arena slots */
    uint64_t compressed, resident, metadata;
    uint64_t need;  /* all of it, arena included */
    uint64_t limit; /* what the pool may take, 0 = no limit */
} memory_plan;

/* Fails with the shortfall, before anything is allocated, when the model does not fit. */
static df11_status memory_plan_make(df11_model *m, memory_plan *p)
{
    *p = (memory_plan){ .k = m->opt.arena_slots };
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (group_in_arena(m, gr)) {
            if (group_sizes_slot(m, gr) && gr->decoded_size > p->slot) p->slot = gr->decoded_size;
            p->compressed += df11i_align_up(gr->payload_size, RT_PAYLOAD_ALIGN);
        } else {
            p->resident += df11i_align_up(gr->decoded_size, RT_PAYLOAD_ALIGN);
        }
        uint64_t plan = 0;
        df11_status s = plan_estimate(m, g, &plan);
        if (s != DF11_OK) return s;
        p->metadata += plan;
    }
    p->slot = df11i_align_up(p->slot ? p->slot : 1, RT_PAYLOAD_ALIGN);
    p->need = p->compressed + p->slot * p->k + p->resident + p->metadata;
    p->limit = df11i_rt_memory_limit(m);
    if (p->limit && p->need > p->limit)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "'%s' needs %.1f MiB (compressed %.1f + arena %u x %.1f + resident "
                          "%.1f + metadata %.1f) but the limit is %.1f MiB: short by %llu bytes "
                          "(%.1f MiB)",
                          m->path, df11i_rt_mib(p->need), df11i_rt_mib(p->compressed), p->k,
                          df11i_rt_mib(p->slot), df11i_rt_mib(p->resident),
                          df11i_rt_mib(p->metadata), df11i_rt_mib(p->limit),
                          (unsigned long long)(p->need - p->limit),
                          df11i_rt_mib(p->need - p->limit));
    return DF11_OK;
}

/* One pool reservation for the whole plan, then the arena and each group's piece of it:
 * the compressed payload of an arena group, the decoded data of a resident one. */
static df11_status memory_carve(df11_model *m, const memory_plan *p)
{
    df11i_pool_allocator mem = df11i_backend_device_memory(m->be);
    df11_status s = df11i_pool_create(&mem, p->limit, &m->pool);
    if (s != DF11_OK) return s;
    df11i_pool_set_chunk_min(m->pool, 4ull << 20);
    if ((s = df11i_pool_reserve(m->pool, p->need)) != DF11_OK) return s;
    void *base;
    if ((s = df11i_pool_alloc(m->pool, p->slot * p->k, RT_PAYLOAD_ALIGN, DF11_POOL_USE_ARENA,
                              &base)) != DF11_OK ||
        (s = df11i_arena_init(&m->arena, p->k, p->slot, base)) != DF11_OK)
        return s;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (group_in_arena(m, gr)) /* the GPU decoder reads lane streams 16 bytes at a time */
            s = df11i_pool_alloc(m->pool, df11i_align_up(gr->payload_size, 16), RT_PAYLOAD_ALIGN,
                                 DF11_POOL_USE_COMPRESSED, &gr->payload);
        else
            s = df11i_pool_alloc(m->pool, gr->decoded_size, RT_PAYLOAD_ALIGN,
                                 DF11_POOL_USE_RESIDENT, &gr->resident);
        if (s != DF11_OK) return s;
    }
    return DF11_OK;
}

/* The side stream decodes run on, two events per slot, and the slots' block views. */
static df11_status scheduler_create(df11_model *m)
{
    df11i_backend *be = m->be;
    df11_status s = be->iface->stream_create(be, !m->opt.decode_normal_priority, &m->side_stream);
    if (s != DF11_OK) return s;
    for (uint32_t i = 0; i < m->arena.n_slots; i++) {
        if ((s = be->iface->event_create(be, &m->slots[i].ready_event)) != DF11_OK ||
            (s = be->iface->event_create(be, &m->slots[i].release_event)) != DF11_OK)
            return s;
    }
    size_t per_slot = m->max_block_tensors ? m->max_block_tensors : 1;
    m->slot_views = calloc((size_t)m->arena.n_slots * per_slot, sizeof *m->slot_views);
    if (!m->slot_views) return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    return DF11_OK;
}

df11_status df11_model_open(const char *path, const df11_model_options *options, df11_model **out)
{
    double t0 = df11i_now_ms();
    df11_model *m = NULL;
    df11_status s = df11i_rt_model_new("df11_model_open", path, options, out, &m);
    if (s != DF11_OK) return s;
    memory_plan plan;
    if ((s = df11_file_open(path, &m->file)) != DF11_OK || (s = layout_from_file(m)) != DF11_OK ||
        (s = memory_plan_make(m, &plan)) != DF11_OK || (s = memory_carve(m, &plan)) != DF11_OK ||
        (s = scheduler_create(m)) != DF11_OK || (s = df11i_rt_load(m)) != DF11_OK) {
        df11_model_close(m);
        return s;
    }
    m->config = df11_file_metadata(m->file, &m->config_len);
    return df11i_rt_open_finish(m, t0, out);
}
