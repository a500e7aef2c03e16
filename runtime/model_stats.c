/* The model's numbers: df11_model_stats_get, and the snapshot it hands the stats page
 * (stats.c, which knows no model) on open, acquire, release and tensor_get. */
#include <string.h>

#include "common/error.h"
#include "common/hostmem.h"
#include "loader/reader.h"
#include "runtime/internal.h"

df11_status df11_model_stats_get(const df11_model *m, df11_model_stats *st)
{
    if (!m || !st) return df11i_fail(DF11_ERR_INVALID_ARG, "df11_model_stats_get: NULL argument");
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    df11i_pool_stats ps;
    df11i_pool_stats_get(m->pool, &ps);
    st->compressed_bytes = ps.used[DF11_POOL_USE_COMPRESSED];
    st->bf16_bytes = m->bf16_bytes;
    st->arena_bytes = ps.used[DF11_POOL_USE_ARENA];
    st->resident_bytes = ps.used[DF11_POOL_USE_RESIDENT];
    st->staging_bytes = m->staging_bytes;
    st->metadata_bytes = ps.used[DF11_POOL_USE_METADATA];
    st->pool_high_water = ps.high_water;
    st->arena_slots = m->arena.n_slots;
    const uint32_t n_reported = sizeof st->slot_block / sizeof st->slot_block[0];
    for (uint32_t i = 0; i < n_reported; i++)
        st->slot_block[i] = i < m->arena.n_slots && m->arena.slots[i].state != DF11_SLOT_EMPTY
                                ? (int32_t)m->arena.slots[i].key
                                : -1;
    st->decodes = m->decodes;
    double d = m->be->iface->decode_ms(m->be);
    st->decode_ms = d < 0 ? 0 : d;
    st->open_ms = m->open_ms;
    st->pool_reserved = ps.reserved;
    st->acquires = m->acquires;
    st->stats_page_error = m->opt.publish_stats && m->stats_error[0] ? m->stats_error : NULL;
    for (uint32_t b = m->block_first; b < m->block_end; b++) {
        const rt_group *gr = &m->groups[m->block_group[b]];
        st->blocks_device += gr->tier == DF11_TIER_DEVICE;
        st->blocks_host += gr->tier == DF11_TIER_HOST;
        st->blocks_file += gr->tier == DF11_TIER_FILE;
        if (gr->tier == DF11_TIER_HOST) st->host_tier_bytes += gr->payload_size;
        if (gr->tier == DF11_TIER_FILE) st->file_tier_bytes += gr->payload_size;
    }
    if (m->pinned) {
        df11i_pool_stats pp;
        df11i_pool_stats_get(m->pinned, &pp);
        st->pinned_bytes = pp.reserved;
    }
    st->staging_ring_bytes = ps.used[DF11_POOL_USE_STAGING];
    df11i_rt_ring_counters(m, st);
    st->io_note = df11i_reader_note();
    st->host_memory_note = df11i_hostmem_note();
    return DF11_OK;
}

static void snapshot_take(const df11_model *m, df11i_stats_snapshot *snap)
{
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    *snap = (df11i_stats_snapshot){
        .n_blocks = m->n_blocks,
        .n_groups = m->n_groups,
        .arena_slots = m->arena.n_slots,
        .compressed_bytes = st.compressed_bytes,
        .bf16_bytes = st.bf16_bytes,
        .arena_bytes = st.arena_bytes,
        .resident_bytes = st.resident_bytes,
        .staging_bytes = st.staging_bytes,
        .metadata_bytes = st.metadata_bytes,
        .pool_reserved = st.pool_reserved,
        .pool_high_water = st.pool_high_water,
        .memory_limit = m->opt.memory_limit,
        .decodes = st.decodes,
        .acquires = st.acquires,
        .decode_ms = st.decode_ms,
        .open_ms = st.open_ms,
    };
    for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) {
        const df11i_arena_slot *sl = i < m->arena.n_slots ? &m->arena.slots[i] : NULL;
        snap->slot_key[i] = sl && sl->state != DF11_SLOT_EMPTY ? (int32_t)sl->key : -1;
        snap->slot_state[i] = sl ? (uint8_t)sl->state : 0;
    }
}

void df11i_rt_stats_publish_open(df11_model *m)
{
    m->stats_error[0] = '\0';
    if (df11i_stats_page_create(&m->stats_page, m->path, m->be->iface->name, m->file == NULL,
                                m->stats_error, sizeof m->stats_error) == 0)
        df11i_rt_stats_publish(m);
}

void df11i_rt_stats_publish(df11_model *m)
{
    if (!m->stats_page.map) return; /* no snapshot to take without a page */
    df11i_stats_snapshot snap;
    snapshot_take(m, &snap);
    df11i_stats_page_write(&m->stats_page, &snap);
}
