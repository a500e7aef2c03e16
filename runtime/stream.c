/* Streamed groups: layer blocks kept in pinned host memory (HOST tier) or left in the file
 * (FILE tier) instead of device memory, brought into a ring of device staging buffers
 * ahead of their use. Every user of a payload (a decode into an arena slot on the side
 * stream, a fused product or a plain GEMM on a raw tensor on the engine's stream) takes it
 * with df11i_rt_payload_get and gives it back with df11i_rt_payload_put; for a group in
 * device memory that is its own payload and costs nothing.
 *
 * A stage is refilled only when no call holds it, the least recently requested first (the
 * blocks just ahead count as requested, so that a prefetched one is never refilled before
 * its use); the copy into it waits (on the copy stream, never on the host) for the last stream that read
 * its previous tenant. Requests follow the engine's block order: taking block b's payload
 * fetches the next ring.n - 1 streamed blocks behind it, wrapping to block 0 for the next
 * pass, so the link works while earlier blocks compute.
 *
 * HOST tier: the copy is enqueued at once on the copy stream. FILE tier: a reader thread
 * reads the group (loader/reader.h: io_uring, O_DIRECT, xxh3-checked) into one of two
 * pinned bounce buffers and enqueues the copy; a call that needs the group before the
 * read is done waits for it on the host (counted in stall_ms), since the copy to wait for
 * on the device does not exist yet. A failed read fails the call that needs the group. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/util.h"
#include "loader/reader.h"
#include "runtime/internal.h"

#define MU(r) ((pthread_mutex_t *)(r)->mu)
#define CV(r) ((pthread_cond_t *)(r)->cv)

static int stage_find(const rt_ring *r, uint32_t g)
{
    for (uint32_t i = 0; i < r->n; i++)
        if (r->stages[i].group == (int64_t)g) return (int)i;
    return -1;
}

/* --- the reader thread (FILE tier) --- */

typedef struct read_ctx {
    df11_model *m;
    rt_stage *st;
    int buf;
} read_ctx;

/* The payload is read and verified in the bounce buffer: copy it into its stage. */
static df11_status read_consume(void *ctx, uint32_t group, const void *payload, int buf)
{
    read_ctx *c = ctx;
    df11i_backend *be = c->m->be;
    rt_ring *r = &c->m->ring;
    df11_status s = be->iface->copy_h2d(be, c->st->data, payload, c->m->groups[group].payload_size,
                                        r->copy_stream);
    if (s != DF11_OK) return s;
    if ((s = be->iface->event_record(be, r->bounce_copied[c->buf], r->copy_stream)) != DF11_OK) {
        /* the event cannot say when the copy is over: wait for it here, before the buffer
         * is read into again */
        be->iface->synchronize(be, r->copy_stream);
        r->bounce_used[c->buf] = 0;
        return s;
    }
    r->bounce_used[c->buf] = 1;
    return be->iface->event_record(be, c->st->arrived, r->copy_stream);
}

static df11_status read_reuse(void *ctx, int buf) { return DF11_OK; } /* one group a call */

static df11_status read_stage(df11_model *m, rt_stage *st, int buf)
{
    df11i_backend *be = m->be;
    rt_ring *r = &m->ring;
    df11_status s;
    /* the copy out of this bounce buffer two reads ago must be over */
    if (r->bounce_used[buf] && (s = be->iface->event_sync(be, r->bounce_copied[buf])) != DF11_OK)
        return s;
    read_ctx c = { .m = m, .st = st, .buf = buf };
    df11i_read_sink sink = { .consume = read_consume, .reuse = read_reuse, .ctx = &c };
    void *const bufs[2] = { r->bounce[buf], r->bounce[buf] };
    return df11i_read_groups(m->file, (uint32_t)st->group, 1, bufs, r->bounce_size, &sink);
}

static void *reader_main(void *arg)
{
    df11_model *m = arg;
    rt_ring *r = &m->ring;
    int buf = 0;
    pthread_mutex_lock(MU(r));
    for (;;) {
        while (!r->q_len && !r->reader_quit) pthread_cond_wait(CV(r), MU(r));
        if (r->reader_quit) break;
        rt_stage *st = &r->stages[r->queue[r->q_head]];
        r->q_head = (r->q_head + 1) % DF11_MAX_STAGING;
        r->q_len--;
        pthread_mutex_unlock(MU(r));
        double t0 = df11i_now_ms();
        df11_status s = read_stage(m, st, buf);
        double dt = df11i_now_ms() - t0;
        buf ^= 1;
        pthread_mutex_lock(MU(r));
        if (s == DF11_OK) {
            st->state = STAGE_READY;
            r->file_bytes += m->groups[st->group].payload_size;
            r->h2d_bytes += m->groups[st->group].payload_size;
            r->file_read_ms += dt;
        } else {
            st->state = STAGE_FAILED;
            st->error = s;
            snprintf(st->error_detail, sizeof st->error_detail, "%s", df11_last_error_detail());
        }
        pthread_cond_broadcast(CV(r));
    }
    pthread_mutex_unlock(MU(r));
    return NULL;
}

/* --- the ring --- */

df11_status df11i_rt_ring_open(df11_model *m)
{
    df11i_backend *be = m->be;
    rt_ring *r = &m->ring;
    int file_tier = 0;
    uint64_t stage = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        if (!df11i_rt_streamed(m, g) || m->groups[g].layer < 0) continue; /* blocks only */
        if (m->groups[g].payload_size > stage) stage = m->groups[g].payload_size;
        file_tier |= m->groups[g].tier == DF11_TIER_FILE;
    }
    if (!stage) return DF11_OK;
    r->mu = malloc(sizeof(pthread_mutex_t));
    r->cv = malloc(sizeof(pthread_cond_t));
    if (!r->mu || !r->cv) {
        free(r->mu);
        free(r->cv);
        r->mu = r->cv = NULL;
        return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    }
    pthread_mutex_init(MU(r), NULL);
    pthread_cond_init(CV(r), NULL);
    r->n = m->opt.staging_slots;
    r->stage_size = df11i_align_up(stage, RT_PAYLOAD_ALIGN); /* decoders read 16 B at a time */
    df11_status s = be->iface->stream_create(be, 0, &r->copy_stream);
    for (uint32_t i = 0; i < r->n && s == DF11_OK; i++) {
        rt_stage *st = &r->stages[i];
        st->group = -1;
        if ((s = df11i_pool_alloc(m->pool, r->stage_size, RT_PAYLOAD_ALIGN, DF11_POOL_USE_STAGING,
                                  &st->data)) == DF11_OK &&
            (s = be->iface->event_create(be, &st->arrived)) == DF11_OK)
            s = be->iface->event_create(be, &st->used);
    }
    if (s != DF11_OK || !file_tier) return s;
    r->bounce_size = df11i_align_up(stage, DF11_READ_ALIGN);
    for (int i = 0; i < 2 && s == DF11_OK; i++) {
        if ((s = df11i_pool_alloc(m->pinned, r->bounce_size, DF11_READ_ALIGN, DF11_POOL_USE_STAGING,
                                  &r->bounce[i])) == DF11_OK)
            s = be->iface->event_create(be, &r->bounce_copied[i]);
    }
    if (s != DF11_OK) return s;
    pthread_t *t = malloc(sizeof *t);
    if (!t) return df11i_fail(DF11_ERR_NO_MEMORY, "model: out of host memory");
    int e = pthread_create(t, NULL, reader_main, m);
    if (e) {
        free(t);
        return df11i_fail_errno(DF11_ERR_NO_MEMORY, e, "model: cannot start the reader thread");
    }
    r->reader_thread = t;
    r->reader_started = 1;
    return DF11_OK;
}

void df11i_rt_ring_close(df11_model *m)
{
    df11i_backend *be = m->be;
    rt_ring *r = &m->ring;
    if (r->reader_started) {
        pthread_mutex_lock(MU(r));
        r->reader_quit = 1;
        pthread_cond_broadcast(CV(r));
        pthread_mutex_unlock(MU(r));
        pthread_join(*(pthread_t *)r->reader_thread, NULL);
        r->reader_started = 0;
    }
    free(r->reader_thread);
    r->reader_thread = NULL;
    if (r->copy_stream) {
        be->iface->synchronize(be, r->copy_stream);
        be->iface->stream_destroy(be, r->copy_stream);
        r->copy_stream = NULL;
    }
    for (uint32_t i = 0; i < DF11_MAX_STAGING; i++) {
        rt_stage *st = &r->stages[i];
        if (st->arrived) be->iface->event_destroy(be, st->arrived);
        if (st->used) be->iface->event_destroy(be, st->used);
        st->arrived = st->used = NULL;
    }
    for (int i = 0; i < 2; i++)
        if (r->bounce_copied[i]) be->iface->event_destroy(be, r->bounce_copied[i]);
    if (r->mu) {
        pthread_mutex_destroy(MU(r));
        pthread_cond_destroy(CV(r));
    }
    free(r->mu);
    free(r->cv);
    r->mu = r->cv = NULL;
}

/* Stages the reader has yet to fill, the one it is reading included. */
static uint32_t stages_reading(const rt_ring *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n; i++) n += r->stages[i].state == STAGE_READING;
    return n;
}

/* The stage to refill: the least recently requested one that no call holds and no read
 * is filling; -1 when there is none. */
static int stage_victim(const rt_ring *r)
{
    int best = -1;
    for (uint32_t i = 0; i < r->n; i++) {
        const rt_stage *st = &r->stages[i];
        if (st->users || st->state == STAGE_READING) continue;
        if (best < 0 || st->stamp < r->stages[best].stamp) best = (int)i;
    }
    return best;
}

/* Claims a stage for group g and starts bringing its payload in. DF11_ERR_BUSY when every
 * stage is held or being filled. Called with mu held. */
static df11_status fetch(df11_model *m, uint32_t g, int *out)
{
    df11i_backend *be = m->be;
    rt_ring *r = &m->ring;
    const rt_group *gr = &m->groups[g];
    int i = stage_victim(r);
    if (i < 0)
        return df11i_fail(DF11_ERR_BUSY, "group '%s': all %u staging buffers are in use", gr->name,
                          r->n);
    rt_stage *st = &r->stages[i];
    df11_status s;
    st->group = -1;
    st->state = STAGE_EMPTY;
    /* the last reads of the previous tenant come first */
    if (st->used_recorded && (s = be->iface->stream_wait(be, r->copy_stream, st->used)) != DF11_OK)
        return s;
    st->group = g;
    st->stamp = ++r->clock;
    r->fetches++;
    if (gr->tier == DF11_TIER_HOST) {
        if ((s = be->iface->copy_h2d(be, st->data, gr->host_payload, gr->payload_size,
                                     r->copy_stream)) != DF11_OK ||
            (s = be->iface->event_record(be, st->arrived, r->copy_stream)) != DF11_OK) {
            st->group = -1;
            return s;
        }
        st->state = STAGE_READY;
        r->h2d_bytes += gr->payload_size;
    } else {
        st->state = STAGE_READING;
        r->queue[(r->q_head + r->q_len) % DF11_MAX_STAGING] = (uint32_t)i;
        r->q_len++;
        pthread_cond_broadcast(CV(r));
    }
    *out = i;
    return DF11_OK;
}

/* Fetches the streamed groups of the blocks after group g's, up to ring.n - 1 of them,
 * stopping quietly at the first that finds no stage. Called with mu held. */
static void prefetch_after(df11_model *m, uint32_t g)
{
    rt_ring *r = &m->ring;
    const int32_t block = m->groups[g].layer;
    if (block < 0) return;
    uint32_t ahead = 0, b = (uint32_t)block;
    for (uint32_t j = 1; j < m->block_end - m->block_first && ahead + 1 < r->n; j++) {
        uint32_t next = m->block_group[b = df11i_rt_block_next(m, b)];
        if (!df11i_rt_streamed(m, next)) continue;
        ahead++;
        /* the window is always the most recent: nothing in it is refilled before use */
        int i = stage_find(r, next);
        if (i >= 0) {
            r->stages[i].stamp = ++r->clock;
            continue;
        }
        if (fetch(m, next, &i) != DF11_OK) {
            df11i_clear_error();
            return;
        }
    }
}

int df11i_rt_payload_prefetch(df11_model *m, uint32_t g)
{
    if (!df11i_rt_streamed(m, g)) return 1;
    rt_ring *r = &m->ring;
    pthread_mutex_lock(MU(r));
    int i = stage_find(r, g);
    if (i < 0 && fetch(m, g, &i) != DF11_OK) {
        df11i_clear_error();
        i = -1;
    }
    const int ready = i >= 0 && r->stages[i].state == STAGE_READY;
    pthread_mutex_unlock(MU(r));
    return ready;
}

df11_status df11i_rt_payload_get(df11_model *m, uint32_t g, void *stream, const void **payload)
{
    if (!df11i_rt_streamed(m, g)) {
        *payload = m->groups[g].payload;
        return DF11_OK;
    }
    if (m->groups[g].layer < 0) { /* options.host_gather_tensor: host memory, no stage */
        if (m->kind != DF11_BACKEND_HOST)
            return df11i_fail(DF11_ERR_UNSUPPORTED,
                              "'%s' is kept in host memory (options.host_gather_tensor): read "
                              "its rows with df11_rows_gather",
                              m->groups[g].name);
        *payload = m->groups[g].host_payload;
        return DF11_OK;
    }
    rt_ring *r = &m->ring;
    df11_status s = DF11_OK;
    rt_stage *st = NULL;
    pthread_mutex_lock(MU(r));
    /* A read that a prefetch started may have seen the file before a change that the
     * caller made since (a repaired file): one that failed is read again, once. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int i = stage_find(r, g);
        if (i >= 0 && r->stages[i].state == STAGE_FAILED && !r->stages[i].users) {
            r->stages[i].group = -1; /* failed earlier: read again, the file's bytes now */
            r->stages[i].state = STAGE_EMPTY;
            i = -1;
        }
        const int ours = i < 0;
        /* every stage not held may be mid-read (queued, or the one the reader has taken
         * from the queue): wait for one rather than fail */
        if (ours)
            while ((s = fetch(m, g, &i)) == DF11_ERR_BUSY && stages_reading(r)) {
                df11i_clear_error();
                pthread_cond_wait(CV(r), MU(r));
            }
        if (s != DF11_OK) break;
        st = &r->stages[i];
        st->users++;
        st->stamp = ++r->clock;
        if (!attempt) prefetch_after(m, g);
        if (st->state == STAGE_READING) {
            double t0 = df11i_now_ms();
            while (st->state == STAGE_READING) pthread_cond_wait(CV(r), MU(r));
            r->stall_ms += df11i_now_ms() - t0;
        }
        if (st->state != STAGE_FAILED) break;
        st->users--;
        if (ours || attempt) {
            s = df11i_fail(st->error, "block %d ('%s'), streamed from the file: %s",
                           m->groups[g].layer, m->groups[g].name, st->error_detail);
            st->group = -1;
            st->state = STAGE_EMPTY;
            break;
        }
    }
    pthread_mutex_unlock(MU(r));
    if (s != DF11_OK) return s;
    if ((s = m->be->iface->stream_wait(m->be, stream, st->arrived)) != DF11_OK) {
        df11i_rt_payload_put(m, g, stream);
        return s;
    }
    *payload = st->data;
    return DF11_OK;
}

df11_status df11i_rt_payload_put(df11_model *m, uint32_t g, void *stream)
{
    if (!df11i_rt_streamed(m, g) || m->groups[g].layer < 0) return DF11_OK;
    df11i_backend *be = m->be;
    rt_ring *r = &m->ring;
    pthread_mutex_lock(MU(r));
    int i = stage_find(r, g);
    df11_status s = DF11_OK;
    if (i < 0 || !r->stages[i].users) {
        pthread_mutex_unlock(MU(r));
        return df11i_fail(DF11_ERR_STATE, "group %u's payload is not held", g);
    }
    rt_stage *st = &r->stages[i];
    /* one event covers every reader: a second stream joins the first one's point */
    if (st->used_recorded && st->used_stream != stream)
        s = be->iface->stream_wait(be, stream, st->used);
    df11_status s2 = be->iface->event_record(be, st->used, stream);
    if (s2 == DF11_OK) {
        st->used_recorded = 1;
        st->used_stream = stream;
    }
    st->users--;
    pthread_mutex_unlock(MU(r));
    return s != DF11_OK ? s : s2;
}

void df11i_rt_ring_counters(const df11_model *m, df11_model_stats *st)
{
    rt_ring *r = (rt_ring *)&m->ring; /* the lock, not the numbers, changes */
    if (!r->mu) return;
    pthread_mutex_lock(MU(r));
    st->streamed_h2d_bytes = r->h2d_bytes;
    st->streamed_file_bytes = r->file_bytes;
    st->fetches = r->fetches;
    st->file_read_ms = r->file_read_ms;
    st->stall_ms = r->stall_ms;
    pthread_mutex_unlock(MU(r));
}
