/* df11_model_open: a .df11 file's groups and tensors as the model's (layout), the memory
 * plan checked against the limit before anything is allocated (memory), then the payloads
 * read into the pool (load.c). Layer groups stay compressed and are decoded into arena
 * slots; non-layer groups are decoded once at open (RESIDENT), go through the arena too
 * (ARENA: slots sized for them as well), or stay compressed for the ops (COMPRESSED:
 * slots sized by the layer groups alone). A model of a block range lays out every group but
 * plans, places and loads only the groups it serves (its blocks and the non-layer ones). */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/util.h"
#include "loader/reader.h"
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
    df11_status s = df11i_rt_range_take(m);
    if (s != DF11_OK) return s;
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
        if (df11i_rt_group_served(m, ti->group)) m->bf16_bytes += ti->nbytes;
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

/* Where everything goes, computed from the index alone: the device pieces (arena, non-layer
 * groups, plans, the staging ring when a block is streamed, the payloads of device-tier
 * blocks) and the pinned host ones (host-tier payloads, the I/O buffers). */
typedef struct memory_plan {
    uint64_t slot; /* one arena slot: the largest group that sizes it, decoded */
    uint32_t k;    /* arena slots */
    uint64_t nonlayer_compressed, resident, metadata;
    uint64_t stage;      /* one staging buffer: the largest streamed payload; 0 if none */
    uint32_t n_stages;   /* staging buffers, 0 when nothing is streamed */
    uint64_t io;         /* pinned read buffers: load staging, then the reader's bounce pair */
    uint64_t op;         /* room kept for the matmul op's scratch and workspace (tiers only) */
    uint64_t host_fixed; /* pinned: options.host_gather_tensor's payload and its buffers */
    uint64_t tier[3];    /* layer payload bytes per df11_tier (DEVICE: as allocated) */
    uint32_t blocks[3];  /* layer blocks per tier */
    uint64_t need;       /* device bytes, all of it */
    uint64_t pinned;     /* pinned host bytes: host tier + io */
    uint64_t limit;      /* what the pool may take, 0 = no limit */
} memory_plan;

static uint64_t payload_bytes(const rt_group *g)
{
    return df11i_align_up(g->payload_size, RT_PAYLOAD_ALIGN);
}

/* Whether block i of n is one of the `keep` spread evenly over them (Bresenham), so that
 * streamed blocks alternate with kept ones and the link works while kept ones compute. */
static int spread_pick(uint32_t i, uint32_t n, uint32_t keep)
{
    return (uint64_t)(i + 1) * keep / n > (uint64_t)i * keep / n;
}

static uint64_t device_fixed(const memory_plan *p)
{
    return p->nonlayer_compressed + p->slot * p->k + p->resident + p->metadata + p->op +
           p->stage * p->n_stages;
}

/* Layer blocks into tiers: all on the device when they fit (or no tier is allowed), else as
 * many as fit spread over the model, the rest in pinned host memory up to the host budget,
 * then in the file. */
static df11_status tiers_place(df11_model *m, memory_plan *p)
{
    const df11_model_options *o = &m->opt;
    uint64_t layers = 0, max_payload = 0, max_layer_payload = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        const rt_group *gr = &m->groups[g];
        if (!df11i_rt_group_served(m, g)) continue;
        if (gr->payload_size > max_payload) max_payload = gr->payload_size;
        if (gr->layer < 0) continue;
        layers += payload_bytes(gr);
        if (gr->payload_size > max_layer_payload) max_layer_payload = gr->payload_size;
    }
    p->io = 2 * df11i_align_up(max_payload ? max_payload : 1, DF11_READ_ALIGN);
    const int tiered = o->host_budget || o->stream_from_file;
    if (tiered && p->limit) {
        /* a budget that streams blocks must also hold what the op allocates later */
        uint64_t scratch, ws;
        df11_status s = df11i_rt_matmul_scratch_plan(m, p->slot, &scratch, &ws);
        if (s != DF11_OK) return s;
        /* and each weight's own decode plan (CUDA), cut from its group's: at most the
         * groups' plans again, plus a header and alignment per tensor */
        const uint64_t plans = p->metadata ? p->metadata + 512ull * m->n_tensors : 0;
        p->op = df11i_align_up(scratch + ws + plans, RT_PAYLOAD_ALIGN);
    }
    /* The served blocks, numbered from 0 here: block first + i is the i-th of n. */
    const uint32_t first = m->block_first, n = m->block_end - m->block_first;
    if (!tiered || !p->limit || device_fixed(p) + layers <= p->limit) {
        for (uint32_t i = 0; i < n; i++)
            m->groups[m->block_group[first + i]].tier = DF11_TIER_DEVICE;
        p->tier[DF11_TIER_DEVICE] = layers;
        p->blocks[DF11_TIER_DEVICE] = n;
        p->need = device_fixed(p) + layers;
        p->pinned = p->host_fixed ? p->host_fixed + p->io : 0;
        if (p->pinned && o->host_budget < p->pinned)
            return df11i_fail(DF11_ERR_NO_MEMORY,
                              "'%s': a host budget of %.1f MiB is below the %.1f MiB that '%s' "
                              "and the read buffers take in pinned memory",
                              m->path, df11i_rt_mib(o->host_budget), df11i_rt_mib(p->pinned),
                              o->host_gather_tensor);
        return DF11_OK;
    }
    p->n_stages = o->staging_slots;
    p->stage = df11i_align_up(max_layer_payload, RT_PAYLOAD_ALIGN);
    const uint64_t fixed = device_fixed(p);
    if (fixed > p->limit)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "'%s': a device budget of %.1f MiB cannot stream blocks: the arena "
                          "(%u x %.1f MiB), %u staging buffers of %.1f MiB, non-layer groups "
                          "(%.1f MiB), plans (%.1f MiB) and the matmul op's scratch (%.1f MiB) "
                          "need at least %.1f MiB",
                          m->path, df11i_rt_mib(p->limit), p->k, df11i_rt_mib(p->slot), p->n_stages,
                          df11i_rt_mib(p->stage),
                          df11i_rt_mib(p->nonlayer_compressed + p->resident),
                          df11i_rt_mib(p->metadata), df11i_rt_mib(p->op), df11i_rt_mib(fixed));
    if (o->host_budget && o->host_budget < p->io + p->host_fixed)
        return df11i_fail(DF11_ERR_NO_MEMORY,
                          "'%s': a host budget of %.1f MiB is below the %.1f MiB of pinned read "
                          "buffers that loading and streaming need (and the host-gathered "
                          "tensor's %.1f MiB)",
                          m->path, df11i_rt_mib(o->host_budget), df11i_rt_mib(p->io),
                          df11i_rt_mib(p->host_fixed));
    /* The most blocks that fit on the device, spread evenly. */
    const uint64_t room = p->limit - fixed;
    uint32_t keep = n;
    for (;; keep--) {
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < n; i++)
            if (spread_pick(i, n, keep))
                bytes += payload_bytes(&m->groups[m->block_group[first + i]]);
        if (bytes <= room || keep == 0) break;
    }
    /* The streamed blocks: as many in pinned memory as the host budget holds, spread over
     * them too (so that reads from the file overlap copies from pinned memory), the rest in
     * the file. */
    uint32_t n_streamed = n - keep, hosted = n_streamed;
    if (o->host_budget != UINT64_MAX)
        for (;; hosted--) {
            uint64_t bytes = p->io + p->host_fixed;
            for (uint32_t i = 0, j = 0; i < n; i++) {
                if (spread_pick(i, n, keep)) continue;
                if (spread_pick(j++, n_streamed, hosted))
                    bytes += payload_bytes(&m->groups[m->block_group[first + i]]);
            }
            if ((o->host_budget && bytes <= o->host_budget) || hosted == 0) break;
        }
    if (hosted < n_streamed && !o->stream_from_file)
        return df11i_fail(DF11_ERR_NO_MEMORY,
                          "'%s': %u blocks fit the device budget of %.1f MiB and %u of the other "
                          "%u the host budget of %.1f MiB: raise a budget or stream the rest "
                          "from the file (stream_from_file)",
                          m->path, keep, df11i_rt_mib(p->limit), hosted, n_streamed,
                          df11i_rt_mib(o->host_budget));
    p->pinned = p->io + p->host_fixed;
    for (uint32_t i = 0, j = 0; i < n; i++) {
        rt_group *gr = &m->groups[m->block_group[first + i]];
        if (spread_pick(i, n, keep))
            gr->tier = DF11_TIER_DEVICE;
        else
            gr->tier = spread_pick(j++, n_streamed, hosted) ? DF11_TIER_HOST : DF11_TIER_FILE;
        p->tier[gr->tier] += payload_bytes(gr);
        p->blocks[gr->tier]++;
        if (gr->tier == DF11_TIER_HOST) p->pinned += payload_bytes(gr);
    }
    p->need = fixed + p->tier[DF11_TIER_DEVICE];
    return DF11_OK;
}

/* options.host_gather_tensor: its group goes to pinned memory (HOST tier) from the start. */
static df11_status host_gather_resolve(df11_model *m)
{
    const char *name = m->opt.host_gather_tensor;
    if (!name) return DF11_OK;
    const int64_t t = df11i_rt_tensor_index(m, name);
    const rt_tensor *rt = t >= 0 ? &m->tensors[t] : NULL;
    rt_group *gr = rt ? &m->groups[rt->group] : NULL;
    if (!rt || gr->layer >= 0 || gr->n_tensors != 1 || rt->view.dtype != DF11_DTYPE_BF16 ||
        rt->view.ndim != 2)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "options.host_gather_tensor '%s': not a non-layer BF16 matrix alone in "
                          "its group",
                          name);
    if (m->opt.nonlayer == DF11_NONLAYER_RESIDENT || !m->opt.host_budget)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "options.host_gather_tensor '%s' needs a host budget and a non-layer "
                          "policy that keeps it compressed",
                          name);
    m->hg_group = rt->group;
    gr->tier = DF11_TIER_HOST;
    m->hg_buf_size = df11i_rt_gather_buf_size(rt->view.shape[0], rt->view.shape[1]);
    return DF11_OK;
}

/* Fails with the shortfall, before anything is allocated, when the model does not fit. */
static df11_status memory_plan_make(df11_model *m, memory_plan *p)
{
    *p = (memory_plan){ .k = m->opt.arena_slots };
    df11_status hs = host_gather_resolve(m);
    if (hs != DF11_OK) return hs;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (!df11i_rt_group_served(m, g)) continue;
        if (g == m->hg_group) {
            p->host_fixed = payload_bytes(gr) + 2 * m->hg_buf_size;
        } else if (group_in_arena(m, gr)) {
            if (group_sizes_slot(m, gr) && gr->decoded_size > p->slot) p->slot = gr->decoded_size;
            if (gr->layer < 0) p->nonlayer_compressed += payload_bytes(gr);
        } else {
            p->resident += df11i_align_up(gr->decoded_size, RT_PAYLOAD_ALIGN);
        }
        uint64_t plan = 0;
        df11_status s = plan_estimate(m, g, &plan);
        if (s != DF11_OK) return s;
        p->metadata += plan;
    }
    p->slot = df11i_align_up(p->slot ? p->slot : 1, RT_PAYLOAD_ALIGN);
    /* the plans (256-aligned pieces) may be followed by 4096-aligned ones: stages, scratch */
    p->metadata = df11i_align_up(p->metadata, RT_PAYLOAD_ALIGN);
    p->limit = df11i_rt_memory_limit(m);
    df11_status s = tiers_place(m, p);
    if (s != DF11_OK) return s;
    if (p->limit && p->need > p->limit)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "'%s' needs %.1f MiB (compressed %.1f + arena %u x %.1f + resident "
                          "%.1f + metadata %.1f) but the limit is %.1f MiB: short by %llu bytes "
                          "(%.1f MiB); a host budget or stream_from_file streams the blocks "
                          "that do not fit",
                          m->path, df11i_rt_mib(p->need),
                          df11i_rt_mib(p->nonlayer_compressed + p->tier[DF11_TIER_DEVICE]), p->k,
                          df11i_rt_mib(p->slot), df11i_rt_mib(p->resident),
                          df11i_rt_mib(p->metadata), df11i_rt_mib(p->limit),
                          (unsigned long long)(p->need - p->limit),
                          df11i_rt_mib(p->need - p->limit));
    return DF11_OK;
}

/* One pool reservation for the whole device plan, then the arena and each group's piece of
 * it: the compressed payload of a device-tier group, the decoded data of a resident one;
 * host-tier payloads in a pinned pool held to the host budget. */
static df11_status memory_carve(df11_model *m, const memory_plan *p)
{
    df11i_pool_allocator mem = df11i_backend_device_memory(m->be);
    df11_status s = df11i_pool_create(&mem, p->limit, &m->pool);
    if (s != DF11_OK) return s;
    df11i_pool_set_chunk_min(m->pool, 4ull << 20);
    if ((s = df11i_pool_reserve(m->pool, p->need)) != DF11_OK) return s;
    if (p->pinned) {
        df11i_pool_allocator pinned = df11i_backend_host_memory(m->be);
        const uint64_t lim = m->opt.host_budget != UINT64_MAX ? m->opt.host_budget : 0;
        /* Host-tier payloads now; the reader's bounce buffers (io) after the load's staging
         * buffers (io too, outside this pool) are gone: never more than p->pinned at once. */
        if ((s = df11i_pool_create(&pinned, lim, &m->pinned)) != DF11_OK) return s;
        df11i_pool_set_chunk_min(m->pinned, RT_PAYLOAD_ALIGN);
        if (p->pinned > p->io && (s = df11i_pool_reserve(m->pinned, p->pinned - p->io)) != DF11_OK)
            return s;
    }
    void *base;
    if (!p->k) /* no arena: only the op reads layer weights; its scratch is sized by a slot */
        m->arena.slot_size = p->slot;
    else if ((s = df11i_pool_alloc(m->pool, p->slot * p->k, RT_PAYLOAD_ALIGN, DF11_POOL_USE_ARENA,
                                   &base)) != DF11_OK ||
             (s = df11i_arena_init(&m->arena, p->k, p->slot, base)) != DF11_OK)
        return s;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        if (!df11i_rt_group_served(m, g)) continue;
        if (!group_in_arena(m, gr))
            s = df11i_pool_alloc(m->pool, gr->decoded_size, RT_PAYLOAD_ALIGN,
                                 DF11_POOL_USE_RESIDENT, &gr->resident);
        else if (gr->tier == DF11_TIER_DEVICE) /* the GPU decoder reads 16 bytes at a time */
            s = df11i_pool_alloc(m->pool, df11i_align_up(gr->payload_size, 16), RT_PAYLOAD_ALIGN,
                                 DF11_POOL_USE_COMPRESSED, &gr->payload);
        else if (gr->tier == DF11_TIER_HOST)
            s = df11i_pool_alloc(m->pinned, gr->payload_size, RT_PAYLOAD_ALIGN,
                                 DF11_POOL_USE_COMPRESSED, &gr->host_payload);
        if (s != DF11_OK) return s;
    }
    for (int i = 0; i < 2 && m->hg_group != UINT32_MAX; i++)
        if ((s = df11i_pool_alloc(m->pinned, m->hg_buf_size, RT_PAYLOAD_ALIGN,
                                  DF11_POOL_USE_STAGING, &m->hg_buf[i])) != DF11_OK)
            return s;
    return DF11_OK;
}

/* The side stream decodes run on, the event of df11_block_prefetch_after, two events per
 * slot, and the slots' block views. */
static df11_status scheduler_create(df11_model *m)
{
    df11i_backend *be = m->be;
    df11_status s = be->iface->stream_create(be, !m->opt.decode_normal_priority, &m->side_stream);
    if (s != DF11_OK || (s = be->iface->event_create(be, &m->prefetch_event)) != DF11_OK) return s;
    for (uint32_t i = 0; i < m->arena.n_slots; i++) {
        if ((s = be->iface->event_create(be, &m->slots[i].ready_event)) != DF11_OK ||
            (s = be->iface->event_create(be, &m->slots[i].release_event)) != DF11_OK)
            return s;
    }
    size_t per_slot = m->max_block_tensors ? m->max_block_tensors : 1;
    m->slot_views =
        calloc((size_t)(m->arena.n_slots ? m->arena.n_slots : 1) * per_slot, sizeof *m->slot_views);
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
        (s = scheduler_create(m)) != DF11_OK || (s = df11i_rt_load(m)) != DF11_OK ||
        (s = df11i_rt_ring_open(m)) != DF11_OK || (s = df11i_rt_gather_open(m)) != DF11_OK) {
        df11_model_close(m);
        return s;
    }
    m->config = df11_file_metadata(m->file, &m->config_len);
    return df11i_rt_open_finish(m, t0, out);
}

df11_status df11_model_plan(const char *path, const df11_model_options *options, df11_plan *plan,
                            df11_tier *block_tiers, uint32_t n_tiers)
{
    if (!plan) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_plan: plan is NULL");
    if (n_tiers && !block_tiers)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_plan: block_tiers is NULL");
    df11_model *m = NULL, *out = NULL;
    df11_status s = df11i_rt_model_new("df11_model_plan", path, options, &out, &m);
    if (s != DF11_OK) return s;
    memory_plan p;
    if ((s = df11_file_open(path, &m->file)) == DF11_OK && (s = layout_from_file(m)) == DF11_OK &&
        (s = memory_plan_make(m, &p)) == DF11_OK) {
        uint64_t per_pass_h2d = p.tier[DF11_TIER_HOST] + p.tier[DF11_TIER_FILE];
        *plan = (df11_plan){ .size = sizeof *plan,
                             .device_limit = p.limit,
                             .device_bytes = p.need,
                             .arena_bytes = p.slot * p.k,
                             .staging_ring_bytes = p.stage * p.n_stages,
                             .nonlayer_bytes = p.nonlayer_compressed + p.resident,
                             .metadata_bytes = p.metadata,
                             .matmul_bytes = p.op,
                             .device_tier_bytes = p.tier[DF11_TIER_DEVICE],
                             .host_tier_bytes = p.tier[DF11_TIER_HOST],
                             .file_tier_bytes = p.tier[DF11_TIER_FILE],
                             .pinned_bytes = p.pinned,
                             .h2d_per_pass = per_pass_h2d,
                             .file_per_pass = p.tier[DF11_TIER_FILE],
                             .blocks_device = p.blocks[DF11_TIER_DEVICE],
                             .blocks_host = p.blocks[DF11_TIER_HOST],
                             .blocks_file = p.blocks[DF11_TIER_FILE],
                             .backend = df11_model_backend(m) };
        for (uint32_t b = m->block_first; b < n_tiers && b < m->block_end; b++)
            block_tiers[b] = m->groups[m->block_group[b]].tier;
    }
    df11_model_close(m);
    return s;
}
