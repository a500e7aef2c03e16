/* df11_model_open_bf16: the baseline model, a .safetensors file or Hugging Face folder
 * copied into the pool uncompressed, laid out per block as a df11 group would be (256-byte
 * aligned tensors). Every group is resident, so the scheduler serves its blocks without a
 * slot or a decode but with the same acquire/release rules (an engine bug shows up in the
 * baseline too). A model of a block range copies only the groups it serves. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/names.h"
#include "common/util.h"
#include "runtime/internal.h"

#define RT_LAYER_PREFIX DF11_DEFAULT_LAYER_PREFIX

/* Tensor i of the model is st->tensors[src[i]]: block 0's tensors, block 1's, ... (each
 * in df11i_block_order's order, as df11-compress lays them out), then each non-layer tensor
 * as a group of its own. */
static df11_status groups_from_names(df11_model *m, const int32_t *layer, uint32_t n_nonlayer,
                                     uint32_t *src)
{
    m->n_groups = m->n_blocks + n_nonlayer;
    m->groups = calloc(m->n_groups ? m->n_groups : 1, sizeof *m->groups);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    m->block_group = calloc(m->n_blocks ? m->n_blocks : 1, sizeof *m->block_group);
    if (!m->groups || !m->tensors || !m->block_group)
        return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
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
        df11_status s = df11i_block_order(m->st->tensors, src + g->first_tensor, g->n_tensors);
        if (s != DF11_OK) return s;
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        if (layer[t] >= 0) continue;
        rt_group *g = &m->groups[ng++];
        g->name = m->st->tensors[t].name;
        g->layer = -1;
        g->first_tensor = nt;
        g->n_tensors = 1;
        src[nt++] = t;
    }
    return DF11_OK;
}

/* Groups from the tensors' names (see groups_from_names), `src` malloc'd for the caller. */
static df11_status groups_make(df11_model *m, uint32_t **src)
{
    const df11i_st_model *st = m->st;
    if (st->n_tensors > UINT32_MAX / 2)
        return df11i_fail(DF11_ERR_OVERFLOW, "'%s': too many tensors", m->path);
    m->n_tensors = (uint32_t)st->n_tensors;
    int32_t max_layer = -1;
    uint32_t n_nonlayer = 0;
    int32_t *layer = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *layer);
    *src = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof **src);
    if (!layer || !*src) {
        free(layer);
        return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    }
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        layer[t] = df11i_layer_of(st->tensors[t].name, RT_LAYER_PREFIX);
        if (layer[t] > max_layer) max_layer = layer[t];
        if (layer[t] < 0) n_nonlayer++;
    }
    m->n_blocks = (uint32_t)(max_layer + 1);
    df11_status s = groups_from_names(m, layer, n_nonlayer, *src);
    free(layer);
    return s;
}

/* Each tensor's view and offset in its group; returns the pool bytes the served groups
 * take. */
static uint64_t layout(df11_model *m, const uint32_t *src)
{
    uint64_t total = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rt_group *gr = &m->groups[g];
        uint64_t off = 0;
        for (uint32_t i = gr->first_tensor; i < gr->first_tensor + gr->n_tensors; i++) {
            const df11_tensor_source *ts = &m->st->tensors[src[i]];
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
            off += df11i_align_up(rt->view.nbytes, 256);
            if (df11i_rt_group_served(m, g)) m->bf16_bytes += rt->view.nbytes;
        }
        gr->decoded_size = off;
        if (gr->n_tensors > m->max_block_tensors) m->max_block_tensors = gr->n_tensors;
        if (df11i_rt_group_served(m, g)) total += df11i_align_up(off, RT_PAYLOAD_ALIGN);
    }
    return total;
}

/* Checks `total` against the limit, then copies every tensor into its group's memory. */
static df11_status upload(df11_model *m, const uint32_t *src, uint64_t total)
{
    uint64_t limit = df11i_rt_memory_limit(m);
    if (limit && total > limit)
        return df11i_fail(DF11_ERR_DEVICE_MEMORY,
                          "'%s' needs %.1f MiB of BF16 weights but the "
                          "limit is %.1f MiB: short by %llu bytes (%.1f MiB)",
                          m->path, df11i_rt_mib(total), df11i_rt_mib(limit),
                          (unsigned long long)(total - limit), df11i_rt_mib(total - limit));
    df11i_pool_allocator mem = df11i_backend_device_memory(m->be);
    df11_status s;
    if ((s = df11i_pool_create(&mem, limit, &m->pool)) != DF11_OK ||
        (s = df11i_pool_reserve(m->pool, total)) != DF11_OK)
        return s;
    for (uint32_t g = 0; g < m->n_groups && s == DF11_OK; g++) {
        rt_group *gr = &m->groups[g];
        if (!df11i_rt_group_served(m, g)) continue;
        s = df11i_pool_alloc(m->pool, gr->decoded_size, RT_PAYLOAD_ALIGN, DF11_POOL_USE_RESIDENT,
                             &gr->resident);
        for (uint32_t i = gr->first_tensor; s == DF11_OK && i < gr->first_tensor + gr->n_tensors;
             i++)
            s = m->be->iface->copy_h2d(m->be, (char *)gr->resident + m->tensors[i].offset,
                                       m->st->tensors[src[i]].data, m->tensors[i].view.nbytes,
                                       NULL);
    }
    if (s == DF11_OK) s = m->be->iface->synchronize(m->be, NULL);
    return s;
}

df11_status df11_model_open_bf16(const char *path, const df11_model_options *options,
                                 df11_model **out)
{
    double t0 = df11i_now_ms();
    df11_model *m = NULL;
    df11_status s = df11i_rt_model_new("df11_model_open_bf16", path, options, out, &m);
    if (s != DF11_OK) return s;
    uint32_t *src = NULL;
    if ((s = df11i_st_open(path, &m->st)) != DF11_OK || (s = groups_make(m, &src)) != DF11_OK ||
        (s = df11i_rt_range_take(m)) != DF11_OK)
        goto fail;
    uint64_t total = layout(m, src);
    if ((s = df11i_rt_names_index(m)) != DF11_OK || (s = upload(m, src, total)) != DF11_OK)
        goto fail;
    free(src);
    m->config = m->st->config_json;
    m->config_len = m->st->config_json ? m->st->config_len : 0;
    return df11i_rt_open_finish(m, t0, out);
fail:
    free(src);
    df11_model_close(m);
    return s;
}
