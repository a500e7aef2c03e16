/* Tensors by name or by id (the tensor's index in the model, resolved once by
 * df11_tensor_id): the name index built at open, and df11_tensor_get / df11_tensor_release
 * with their _id forms. A layer tensor is served from its block while the block is
 * acquired; a non-layer tensor is held from get to release under every policy: a resident
 * one is counted, one under the ARENA policy holds its group in a slot (schedule.c). */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "runtime/internal.h"

/* --- the name index: open addressing, FNV-1a --- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

df11_status df11i_rt_names_index(df11_model *m)
{
    uint32_t cap = 16;
    while (cap < 2 * m->n_tensors) cap *= 2;
    m->hash = calloc(cap, sizeof *m->hash);
    if (!m->hash) return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    m->hash_mask = cap - 1;
    for (uint32_t t = 0; t < m->n_tensors; t++) {
        uint32_t i = name_hash(m->tensors[t].view.name) & m->hash_mask;
        while (m->hash[i]) {
            if (!strcmp(m->tensors[m->hash[i] - 1].view.name, m->tensors[t].view.name))
                return df11i_fail(DF11_ERR_DUPLICATE, "tensor '%s' appears twice",
                                  m->tensors[t].view.name);
            i = (i + 1) & m->hash_mask;
        }
        m->hash[i] = t + 1;
    }
    return DF11_OK;
}

static rt_tensor *tensor_find(const df11_model *m, const char *name)
{
    uint32_t i = name_hash(name) & m->hash_mask;
    while (m->hash[i]) {
        rt_tensor *rt = &m->tensors[m->hash[i] - 1];
        if (!strcmp(rt->view.name, name)) return rt;
        i = (i + 1) & m->hash_mask;
    }
    return NULL;
}

int64_t df11i_rt_tensor_index(const df11_model *m, const char *name)
{
    const rt_tensor *rt = tensor_find(m, name);
    return rt ? (int64_t)(rt - m->tensors) : -1;
}

/* --- the API --- */

/* The view of tensor rt; `name` names it in details. */
static df11_status tensor_get(df11_model *m, const rt_tensor *rt, df11_stream stream,
                              df11_tensor_view *view)
{
    const char *name = rt->view.name;
    rt_group *gr = &m->groups[rt->group];
    const void *data;
    if (gr->layer >= 0) {
        df11_status s = df11i_rt_block_check(m, (uint32_t)gr->layer, name);
        if (s != DF11_OK) return s;
        if (!(data = df11i_rt_block_data(m, (uint32_t)gr->layer)))
            return df11i_fail(DF11_ERR_STATE, "tensor '%s': block %d is not acquired", name,
                              gr->layer);
    } else if (gr->resident) {
        if (gr->holds == UINT32_MAX)
            return df11i_fail(DF11_ERR_OVERFLOW, "tensor '%s': held 2^32 - 1 times", name);
        gr->holds++;
        data = gr->resident;
    } else {
        df11_status s = df11i_rt_group_acquire(m, rt->group, stream, &data);
        if (s == DF11_ERR_BUSY) {
            char who[256];
            df11i_rt_slot_holders(m, who, sizeof who);
            return df11i_fail(DF11_ERR_BUSY,
                              "tensor '%s': all %u arena slots are held, by %s; release one "
                              "first",
                              name, m->arena.n_slots, who);
        }
        if (s != DF11_OK) return s;
    }
    *view = rt->view;
    view->data = (char *)data + rt->offset;
    return DF11_OK;
}

/* A non-layer tensor's get is counted under every policy and each needs its release; a
 * layer tensor's data goes with its block, so its release is a no-op. */
static df11_status tensor_release(df11_model *m, const rt_tensor *rt, df11_stream stream)
{
    rt_group *gr = &m->groups[rt->group];
    if (gr->layer >= 0) return df11i_rt_block_check(m, (uint32_t)gr->layer, rt->view.name);
    df11_status s = DF11_OK;
    if (gr->resident) {
        if (gr->holds)
            gr->holds--;
        else
            s = DF11_ERR_STATE;
    } else {
        s = df11i_rt_group_release(m, rt->group, stream);
    }
    if (s == DF11_ERR_STATE) /* the group's only failure of that kind: not held */
        return df11i_fail(DF11_ERR_STATE, "tensor '%s' is not held (release without get)",
                          rt->view.name);
    return s;
}

df11_status df11_tensor_get(df11_model *m, const char *name, df11_stream stream,
                            df11_tensor_view *view)
{
    if (!m || !name || !view)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_tensor_get: NULL argument");
    const rt_tensor *rt = tensor_find(m, name);
    if (!rt) return df11i_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    return tensor_get(m, rt, stream, view);
}

df11_status df11_tensor_release(df11_model *m, const char *name, df11_stream stream)
{
    if (!m || !name) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_tensor_release: NULL argument");
    const rt_tensor *rt = tensor_find(m, name);
    if (!rt) return df11i_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    return tensor_release(m, rt, stream);
}

/* --- by id --- */

uint32_t df11_model_n_tensors(const df11_model *m) { return m ? m->n_tensors : 0; }

df11_status df11_tensor_id(const df11_model *m, const char *name, uint32_t *id)
{
    if (!m || !name || !id)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11_tensor_id: NULL argument");
    const rt_tensor *rt = tensor_find(m, name);
    if (!rt) return df11i_fail(DF11_ERR_NOT_FOUND, "no tensor '%s'", name);
    *id = (uint32_t)(rt - m->tensors);
    return DF11_OK;
}

static df11_status id_check(const df11_model *m, uint32_t id, const char *fn)
{
    if (!m) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: model is NULL", fn);
    if (id >= m->n_tensors)
        return df11i_fail(DF11_ERR_NOT_FOUND, "%s: tensor id %u: the model has %u tensors", fn, id,
                          m->n_tensors);
    return DF11_OK;
}

df11_status df11_tensor_get_id(df11_model *m, uint32_t id, df11_stream stream,
                               df11_tensor_view *view)
{
    df11_status s = id_check(m, id, "df11_tensor_get_id");
    if (s != DF11_OK) return s;
    if (!view) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_tensor_get_id: view is NULL");
    return tensor_get(m, &m->tensors[id], stream, view);
}

df11_status df11_tensor_release_id(df11_model *m, uint32_t id, df11_stream stream)
{
    df11_status s = id_check(m, id, "df11_tensor_release_id");
    if (s != DF11_OK) return s;
    return tensor_release(m, &m->tensors[id], stream);
}
