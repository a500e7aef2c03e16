/* The block scheduler. A block whose group is resident (every BF16 block) needs no slot:
 * acquiring it sets the group's flag and hands out views made at open. Any other block
 * goes through the arena: a slot is claimed, the decode is enqueued on the side stream
 * after the slot's release event, and the engine's stream waits for the decode's ready
 * event. The host never waits on the device (only on the file, for a streamed block not
 * read yet). Non-layer groups under the ARENA
 * policy go through the same slots (df11i_rt_group_acquire, for tensors.c). A streamed
 * group's payload comes from the staging ring (stream.c), taken for its decode only. */
#include <stdio.h>

#include "common/error.h"
#include "runtime/internal.h"

static rt_group *block_group(const df11_model *m, uint32_t block)
{
    return &m->groups[m->block_group[block]];
}

/* The arena slot holding `key` while the engine holds it, else -1. */
static int slot_acquired(const df11_model *m, int64_t key)
{
    int slot = df11i_arena_find(&m->arena, key);
    return slot >= 0 && m->arena.slots[slot].state == DF11_SLOT_ACQUIRED ? slot : -1;
}

/* --- arena slots --- */

/* Non-layer groups are keyed after the blocks, so that one arena holds both. */
static int64_t group_key(const df11_model *m, uint32_t group)
{
    return (int64_t)m->n_blocks + group;
}

void df11i_rt_slot_holders(const df11_model *m, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < m->arena.n_slots && n < cap; i++) {
        const df11i_arena_slot *sl = &m->arena.slots[i];
        if (sl->state != DF11_SLOT_ACQUIRED) continue;
        int w = sl->key < (int64_t)m->n_blocks
                    ? snprintf(buf + n, cap - n, "%sblock %lld", n ? ", " : "", (long long)sl->key)
                    : snprintf(buf + n, cap - n, "%snon-layer group '%s' (df11_tensor_get)",
                               n ? ", " : "", m->groups[sl->key - m->n_blocks].name);
        if (w < 0) break;
        n += (size_t)w;
    }
}

/* Makes sure group `g` (arena key `key`) has a slot with its decode enqueued. */
static df11_status slot_fill(df11_model *m, int64_t key, uint32_t g, int prefetch, int *slot)
{
    int i = df11i_arena_find(&m->arena, key);
    if (i >= 0) {
        *slot = i;
        return DF11_OK;
    }
    df11_status s = df11i_arena_claim(&m->arena, key, prefetch, &i, NULL);
    if (s != DF11_OK) return s;
    df11i_backend *be = m->be;
    rt_slot *sl = &m->slots[i];
    rt_group *gr = &m->groups[g];
    /* The slot's previous tenant may still be read by the engine's stream. */
    if (sl->release_recorded &&
        (s = be->iface->stream_wait(be, m->side_stream, sl->release_event)) != DF11_OK)
        goto fail;
    const void *payload;
    if ((s = df11i_rt_payload_get(m, g, m->side_stream, &payload)) != DF11_OK) goto fail;
    df11i_backend_group bg = { .file = m->file,
                               .group = g,
                               .payload = payload,
                               .plan_host = gr->plan_host,
                               .plan_dev = gr->plan_dev,
                               .lean = m->opt.decode_lean,
                               .lean_ctas = m->opt.decode_lean_ctas };
    s = be->iface->decode_group(be, &bg, m->arena.slots[i].data, m->side_stream);
    df11_status s2 = df11i_rt_payload_put(m, g, m->side_stream);
    if (s == DF11_OK) s = s2;
    if (s != DF11_OK) goto fail;
    if ((s = be->iface->event_record(be, sl->ready_event, m->side_stream)) != DF11_OK) goto fail;
    m->decodes++;
    *slot = i;
    return DF11_OK;
fail:
    df11i_arena_drop(&m->arena, i);
    return s;
}

/* Makes `stream` wait for an acquired slot's decode. On failure (the decode failed on the
 * host, or the wait could not be enqueued) the slot is given up. */
static df11_status slot_wait(df11_model *m, int slot, df11_stream stream)
{
    df11_status s = m->be->iface->stream_wait(m->be, stream, m->slots[slot].ready_event);
    if (s != DF11_OK) {
        df11i_arena_release(&m->arena, slot, NULL);
        df11i_arena_drop(&m->arena, slot);
    }
    return s;
}

/* Records on `stream` the point after which an acquired slot may be overwritten, and
 * hands the slot back to the arena. */
static df11_status slot_release(df11_model *m, int slot, df11_stream stream)
{
    rt_slot *sl = &m->slots[slot];
    df11_status s = m->be->iface->event_record(m->be, sl->release_event, stream);
    if (s != DF11_OK) return s;
    sl->release_recorded = 1;
    df11i_arena_release(&m->arena, slot, NULL);
    df11i_rt_stats_publish(m);
    return DF11_OK;
}

/* --- resident blocks --- */

static df11_status resident_acquire(df11_model *m, uint32_t block, df11_block_view *view)
{
    rt_group *gr = block_group(m, block);
    if (gr->acquired) return df11i_fail(DF11_ERR_STATE, "block %u is already acquired", block);
    gr->acquired = 1;
    m->acquires++;
    if (view) {
        view->block = block;
        view->n_tensors = gr->n_tensors;
        view->tensors = &m->resident_views[gr->first_tensor];
    }
    return DF11_OK;
}

static df11_status resident_release(df11_model *m, uint32_t block)
{
    rt_group *gr = block_group(m, block);
    if (!gr->acquired) return df11i_fail(DF11_ERR_STATE, "block %u is not acquired", block);
    gr->acquired = 0;
    return DF11_OK;
}

/* --- arena blocks --- */

/* The views of a block decoded into `slot`, rebuilt in the slot's own view array. */
static void slot_block_view(df11_model *m, uint32_t block, int slot, df11_block_view *view)
{
    rt_group *gr = block_group(m, block);
    df11_tensor_view *v = &m->slot_views[(size_t)slot * m->max_block_tensors];
    for (uint32_t i = 0; i < gr->n_tensors; i++) {
        rt_tensor *rt = &m->tensors[gr->first_tensor + i];
        v[i] = rt->view;
        v[i].data = (char *)m->arena.slots[slot].data + rt->offset;
    }
    view->block = block;
    view->n_tensors = gr->n_tensors;
    view->tensors = v;
}

/* Enqueues a block's decode unless it has a slot already or needs none (resident). */
static df11_status prefetch(df11_model *m, uint32_t block)
{
    if (block_group(m, block)->resident) return DF11_OK;
    /* a block still being read from the file is decoded when acquired, not waited for here */
    if (!df11i_rt_payload_prefetch(m, m->block_group[block]) || !m->arena.n_slots)
        return DF11_OK; /* without an arena, bringing a streamed block in is all there is */
    int slot;
    return slot_fill(m, block, m->block_group[block], 1, &slot);
}

/* Queues the next `prefetch_blocks` (default K-1) blocks behind `block`, wrapping to the
 * first served block for the next token; stops at the first that finds no slot. */
static void prefetch_ahead(df11_model *m, uint32_t block)
{
    if (!m->arena.n_slots) return;
    uint32_t ahead =
        m->opt.prefetch_blocks < 0 ? m->arena.n_slots - 1 : (uint32_t)m->opt.prefetch_blocks;
    const uint32_t served = m->block_end - m->block_first;
    uint32_t next = block;
    for (uint32_t j = 1; j <= ahead && j < served; j++)
        if (prefetch(m, next = df11i_rt_block_next(m, next)) != DF11_OK) break;
}

static df11_status arena_acquire(df11_model *m, uint32_t block, df11_stream stream,
                                 df11_block_view *view)
{
    if (slot_acquired(m, block) >= 0)
        return df11i_fail(DF11_ERR_STATE, "block %u is already acquired", block);
    if (!m->arena.n_slots)
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "block %u: the model has no arena (arena_slots 0): multiply its "
                          "weights with df11_matmul",
                          block);
    int slot;
    df11_status s = slot_fill(m, block, m->block_group[block], 0, &slot);
    if (s == DF11_ERR_BUSY) {
        char who[256];
        df11i_rt_slot_holders(m, who, sizeof who);
        return df11i_fail(DF11_ERR_BUSY,
                          "block %u: all %u arena slots are held, by %s; release one first", block,
                          m->arena.n_slots, who);
    }
    if (s != DF11_OK) return s;
    df11i_arena_acquire(&m->arena, slot);
    prefetch_ahead(m, block);
    if ((s = slot_wait(m, slot, stream)) != DF11_OK) return s;
    df11i_clear_error(); /* a prefetch that found no slot is no failure of this call */
    m->acquires++;
    if (view) slot_block_view(m, block, slot, view);
    df11i_rt_stats_publish(m);
    return DF11_OK;
}

/* --- the API --- */

/* The two prefetch calls: `after` makes a decode that still has to be enqueued wait for the
 * work enqueued on `stream` so far (a block already in a slot is left alone, and so is the
 * side stream). */
static df11_status prefetch_call(df11_model *m, uint32_t block, int after, df11_stream stream,
                                 const char *fn)
{
    df11_status s = df11i_rt_block_check(m, block, fn);
    if (s != DF11_OK) return s;
    if (block_group(m, block)->resident) return DF11_OK; /* nothing to decode or publish */
    df11i_backend *be = m->be;
    if (after && m->arena.n_slots && df11i_arena_find(&m->arena, block) < 0 &&
        ((s = be->iface->event_record(be, m->prefetch_event, stream)) != DF11_OK ||
         (s = be->iface->stream_wait(be, m->side_stream, m->prefetch_event)) != DF11_OK))
        return s;
    if ((s = prefetch(m, block)) == DF11_OK) df11i_rt_stats_publish(m);
    return s;
}

df11_status df11_block_prefetch(df11_model *m, uint32_t block)
{
    return prefetch_call(m, block, 0, NULL, "df11_block_prefetch");
}

df11_status df11_block_prefetch_after(df11_model *m, uint32_t block, df11_stream stream)
{
    return prefetch_call(m, block, 1, stream, "df11_block_prefetch_after");
}

df11_status df11_block_acquire(df11_model *m, uint32_t block, df11_stream stream,
                               df11_block_view *view)
{
    df11_status s = df11i_rt_block_check(m, block, "df11_block_acquire");
    if (s != DF11_OK) return s;
    if (block_group(m, block)->resident) return resident_acquire(m, block, view);
    return arena_acquire(m, block, stream, view);
}

df11_status df11_block_release(df11_model *m, uint32_t block, df11_stream stream)
{
    df11_status s = df11i_rt_block_check(m, block, "df11_block_release");
    if (s != DF11_OK) return s;
    if (block_group(m, block)->resident) return resident_release(m, block);
    int slot = slot_acquired(m, block);
    if (slot < 0) return df11i_fail(DF11_ERR_STATE, "block %u is not acquired", block);
    return slot_release(m, slot, stream);
}

/* --- for tensors.c --- */

const void *df11i_rt_block_data(const df11_model *m, uint32_t block)
{
    const rt_group *gr = block_group(m, block);
    if (gr->resident) return gr->acquired ? gr->resident : NULL;
    int slot = slot_acquired(m, block);
    return slot >= 0 ? m->arena.slots[slot].data : NULL;
}

df11_status df11i_rt_block_wait(df11_model *m, uint32_t block, df11_stream stream)
{
    if (block_group(m, block)->resident) return DF11_OK;
    int slot = slot_acquired(m, block);
    if (slot < 0) return df11i_fail(DF11_ERR_STATE, "block %u is not acquired", block);
    return m->be->iface->stream_wait(m->be, stream, m->slots[slot].ready_event);
}

int df11i_rt_group_fits(const df11_model *m, uint32_t group)
{
    const rt_group *gr = &m->groups[group];
    return gr->resident || (m->arena.n_slots && gr->decoded_size <= m->arena.slot_size);
}

df11_status df11i_rt_group_acquire(df11_model *m, uint32_t group, df11_stream stream,
                                   const void **data)
{
    const rt_group *gr = &m->groups[group];
    if (!m->arena.n_slots)
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "group '%s': the model has no arena (arena_slots 0): read it with "
                          "df11_rows_gather or df11_matmul",
                          gr->name);
    if (!df11i_rt_group_fits(m, group))
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "group '%s' takes %.1f MiB decoded, an arena slot %.1f MiB "
                          "(DF11_NONLAYER_COMPRESSED): read it with df11_rows_gather or "
                          "df11_matmul",
                          gr->name, df11i_rt_mib(gr->decoded_size),
                          df11i_rt_mib(m->arena.slot_size));
    int slot = slot_acquired(m, group_key(m, group));
    if (slot >= 0) {
        df11i_arena_ref(&m->arena, slot);
    } else {
        df11_status s = slot_fill(m, group_key(m, group), group, 0, &slot);
        if (s != DF11_OK) return s;
        df11i_arena_acquire(&m->arena, slot);
        if ((s = slot_wait(m, slot, stream)) != DF11_OK) return s;
    }
    *data = m->arena.slots[slot].data;
    df11i_rt_stats_publish(m);
    return DF11_OK;
}

df11_status df11i_rt_group_release(df11_model *m, uint32_t group, df11_stream stream)
{
    int slot = slot_acquired(m, group_key(m, group));
    if (slot < 0) return df11i_fail(DF11_ERR_STATE, "group %u is not held", group);
    return slot_release(m, slot, stream);
}
