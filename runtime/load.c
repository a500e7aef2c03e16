/* Loading a .df11 file's payloads into the backend: io_uring reads (O_DIRECT where the
 * filesystem allows it, buffered otherwise; RD_CHUNK-sized reads, up to RD_DEPTH in flight)
 * into two host staging buffers, so that group g+1 is being read while group g is checked
 * (xxh3), planned (CUDA) and copied to the device on the side stream. A staging buffer is
 * reused only after the copy out of it has completed (its event). Non-layer groups under
 * the RESIDENT policy are decoded as they arrive and their payload is not kept.
 *
 * On any failure every read in flight is reaped before the buffers are freed; the caller
 * (df11_model_open) then frees the rest with df11_model_close. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/util.h"
#include "runtime/internal.h"

#define RD_CHUNK (4u << 20)
#define RD_DEPTH 32u
#define RD_ALIGN 4096ull

typedef struct rd_buf {
    uint8_t *mem;
    int64_t group;            /* -1: idle */
    uint64_t off, end;        /* file range still to submit: [off, end) */
    uint64_t start, need;     /* the group's payload: [start, start + need) */
    uint64_t done;            /* bytes of [start, start+need) completed */
    uint32_t inflight;
    void *event;              /* copy out of this buffer finished */
    int event_used;
} rd_buf;

typedef struct rd_req {
    rd_buf *buf;
    uint64_t off;             /* file offset */
    uint32_t len;
    int direct;
} rd_req;

typedef struct reader {
    struct io_uring ring;
    int ring_ok;
    int fd_direct, fd_buffered;
    uint64_t file_size;
    rd_req reqs[RD_DEPTH];
    rd_req *free_reqs[RD_DEPTH];
    uint32_t n_free, inflight;
    rd_buf bufs[2];
    const char *path;
} reader;

static df11_status rd_submit_one(reader *r, rd_buf *b, uint64_t off, uint32_t len)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return df11_fail(DF11_ERR_IO, "'%s': io_uring queue full", r->path);
    rd_req *q = r->free_reqs[--r->n_free];
    q->buf = b;
    q->off = off;
    q->len = len;
    q->direct = r->fd_direct >= 0;
    io_uring_prep_read(sqe, q->direct ? r->fd_direct : r->fd_buffered,
                       b->mem + (off - b->start), len, off);
    io_uring_sqe_set_data(sqe, q);
    b->inflight++;
    r->inflight++;
    return DF11_OK;
}

/* Submits reads for buffers in order (the older group first) while requests are free. */
static df11_status rd_pump(reader *r, rd_buf *first, rd_buf *second)
{
    rd_buf *order[2] = {first, second};
    int any = 0;
    for (int k = 0; k < 2; k++) {
        rd_buf *b = order[k];
        if (!b || b->group < 0) continue;
        while (b->off < b->end && r->n_free) {
            uint64_t len = b->end - b->off < RD_CHUNK ? b->end - b->off : RD_CHUNK;
            df11_status s = rd_submit_one(r, b, b->off, (uint32_t)len);
            if (s != DF11_OK) return s;
            b->off += len;
            any = 1;
        }
    }
    if (any) {
        int e = io_uring_submit(&r->ring);
        if (e < 0) return df11_fail_errno(DF11_ERR_IO, -e, "'%s': io_uring_submit", r->path);
    }
    return DF11_OK;
}

static void rd_start(reader *r, rd_buf *b, int64_t group, const df11_group_info *gi)
{
    b->group = group;
    b->start = gi->payload_offset;
    b->need = gi->payload_size;
    b->off = gi->payload_offset;
    /* O_DIRECT wants whole 4 KiB blocks; a read past the end of the file comes back short. */
    b->end = gi->payload_offset + df11_align_up(gi->payload_size, RD_ALIGN);
    b->done = 0;
}

/* Reaps one completion. Short reads are resubmitted for the rest; EINVAL on an O_DIRECT
 * read switches the reader to buffered reads. */
static df11_status rd_reap(reader *r)
{
    struct io_uring_cqe *cqe;
    int e = io_uring_wait_cqe(&r->ring, &cqe);
    if (e < 0) {
        if (e == -EINTR) return DF11_OK;
        return df11_fail_errno(DF11_ERR_IO, -e, "'%s': io_uring_wait_cqe", r->path);
    }
    rd_req *q = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&r->ring, cqe);
    rd_buf *b = q->buf;
    b->inflight--;
    r->inflight--;
    uint64_t off = q->off, len = q->len;
    int direct = q->direct;
    r->free_reqs[r->n_free++] = q;
    df11_status s = DF11_OK;
    if (res == -EINVAL && direct) {
        if (r->fd_direct >= 0) {
            close(r->fd_direct);
            r->fd_direct = -1;
        }
        s = rd_submit_one(r, b, off, (uint32_t)len);
    } else if (res == -EAGAIN || res == -EINTR) {
        s = rd_submit_one(r, b, off, (uint32_t)len);
    } else if (res < 0) {
        return df11_fail_errno(DF11_ERR_IO, -res, "'%s': read at offset %llu", r->path,
                               (unsigned long long)off);
    } else {
        uint64_t got = (uint64_t)res;
        uint64_t want_end = off + len < r->file_size ? off + len : r->file_size;
        if (got < len && off + got < want_end) {
            if (got == 0)
                return df11_fail(DF11_ERR_TRUNCATED, "'%s': file ends at %llu, before the "
                                 "payload of group %lld", r->path, (unsigned long long)off,
                                 (long long)b->group);
            s = rd_submit_one(r, b, off + got, (uint32_t)(len - got));
            len = got;
        }
        /* Count the bytes of the payload proper this read covered. */
        uint64_t lo = off, hi = off + (got < len ? got : len);
        uint64_t plo = b->start, phi = b->start + b->need;
        if (hi > phi) hi = phi;
        if (lo < plo) lo = plo;
        if (hi > lo) b->done += hi - lo;
        /* A short read at end of file is fine unless it stopped inside the payload it
         * was reading; other reads of the same group may still be in flight. */
        uint64_t need_end = off + len < phi ? off + len : phi;
        if (got < len && off + got < need_end)
            return df11_fail(DF11_ERR_TRUNCATED, "'%s': file ends at %llu, inside the payload "
                             "of group %lld", r->path, (unsigned long long)r->file_size,
                             (long long)b->group);
    }
    if (s != DF11_OK) return s;
    int sub = io_uring_submit(&r->ring);
    if (sub < 0) return df11_fail_errno(DF11_ERR_IO, -sub, "'%s': io_uring_submit", r->path);
    return DF11_OK;
}

static df11_status rd_wait(reader *r, rd_buf *b, rd_buf *other)
{
    while (b->done < b->need || b->inflight) {
        df11_status s = rd_pump(r, b, other);
        if (s != DF11_OK) return s;
        if (!r->inflight)
            return df11_fail(DF11_ERR_TRUNCATED, "'%s': group %lld: only %llu of %llu bytes "
                             "could be read", r->path, (long long)b->group,
                             (unsigned long long)b->done, (unsigned long long)b->need);
        if ((s = rd_reap(r)) != DF11_OK) return s;
    }
    return DF11_OK;
}

static void rd_drain(reader *r)
{
    while (r->inflight) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&r->ring, &cqe) < 0) break;
        rd_req *q = io_uring_cqe_get_data(cqe);
        io_uring_cqe_seen(&r->ring, cqe);
        q->buf->inflight--;
        r->inflight--;
        r->free_reqs[r->n_free++] = q;
    }
}

/* Copies (and for a resident group decodes) one verified group out of staging. */
static df11_status load_group(df11_model *m, uint32_t g, const uint8_t *staged, void *tmp)
{
    df11_backend *be = m->be;
    rt_group *gr = &m->groups[g];
    df11_status s;
    if (be->iface->plan_build) {
        size_t blob_size = 0;
        if ((s = be->iface->plan_build(be, m->file, g, staged, &gr->plan_host, &blob_size)) != DF11_OK)
            return s;
        if ((s = df11_pool_alloc(m->pool, blob_size, 256, DF11_POOL_USE_METADATA, &gr->plan_dev)) != DF11_OK ||
            (s = be->iface->copy_h2d(be, gr->plan_dev, gr->plan_host, blob_size, m->side_stream)) != DF11_OK)
            return s;
    }
    void *dst = gr->resident ? tmp : gr->payload;
    if ((s = be->iface->copy_h2d(be, dst, staged, gr->payload_size, m->side_stream)) != DF11_OK)
        return s;
    if (gr->resident) {
        df11_backend_group bg = {.file = m->file, .group = g, .payload = dst,
                                 .plan_host = gr->plan_host, .plan_dev = gr->plan_dev};
        if ((s = be->iface->decode_group(be, &bg, gr->resident, m->side_stream)) != DF11_OK)
            return s;
        m->decodes++;
        /* `tmp` is reused by the next resident group. */
        if ((s = be->iface->synchronize(be, m->side_stream)) != DF11_OK) return s;
    }
    return DF11_OK;
}

df11_status df11_rt_load(df11_model *m)
{
    df11_backend *be = m->be;
    reader r;
    memset(&r, 0, sizeof r);
    r.fd_direct = r.fd_buffered = -1;
    r.path = m->path;
    r.file_size = df11_file_size(m->file);
    for (uint32_t i = 0; i < RD_DEPTH; i++) r.free_reqs[i] = &r.reqs[i];
    r.n_free = RD_DEPTH;
    r.bufs[0].group = r.bufs[1].group = -1;

    uint64_t max_payload = 0, max_resident_payload = 0;
    for (uint32_t g = 0; g < m->n_groups; g++) {
        const rt_group *gr = &m->groups[g];
        if (gr->payload_size > max_payload) max_payload = gr->payload_size;
        if (gr->resident && gr->payload_size > max_resident_payload)
            max_resident_payload = gr->payload_size;
    }
    df11_pool *staging = NULL;
    void *tmp = NULL;
    int tmp_owned = 0;
    df11_status s = DF11_OK;
    if (m->n_groups == 0) return DF11_OK;

    /* The path is opened again, and may name something else by now: regular files only. */
    if ((s = df11_open_regular(m->path, 0, &r.fd_buffered, NULL)) != DF11_OK) return s;
    if (df11_open_regular(m->path, O_DIRECT, &r.fd_direct, NULL) != DF11_OK) /* where unsupported */
        df11_clear_error();
    int e = io_uring_queue_init(RD_DEPTH, &r.ring, 0);
    if (e < 0) {
        s = df11_fail_errno(DF11_ERR_IO, -e, "'%s': io_uring_queue_init", m->path);
        goto out;
    }
    r.ring_ok = 1;

    uint64_t buf_size = df11_align_up(max_payload ? max_payload : 1, RD_ALIGN);
    df11_pool_allocator pinned = df11_backend_host_memory(be);
    if ((s = df11_pool_create(&pinned, 0, &staging)) != DF11_OK ||
        (s = df11_pool_reserve(staging, 2 * buf_size)) != DF11_OK)
        goto out;
    for (int i = 0; i < 2; i++) {
        void *p;
        if ((s = df11_pool_alloc(staging, buf_size, RD_ALIGN, DF11_POOL_USE_STAGING, &p)) != DF11_OK ||
            (s = be->iface->event_create(be, &r.bufs[i].event)) != DF11_OK)
            goto out;
        r.bufs[i].mem = p;
    }
    m->staging_bytes = 2 * buf_size;
    /* Scratch device memory for resident groups' payloads: the arena while it is unused. */
    if (max_resident_payload) {
        if (max_resident_payload <= (uint64_t)m->arena.n_slots * m->arena.slot_size) {
            tmp = m->arena.slots[0].data;
        } else {
            if ((s = be->iface->alloc(be, max_resident_payload, &tmp)) != DF11_OK) goto out;
            tmp_owned = 1;
            m->staging_bytes += max_resident_payload;
        }
    }

    rd_start(&r, &r.bufs[0], 0, df11_file_group(m->file, 0));
    for (uint32_t g = 0; g < m->n_groups; g++) {
        rd_buf *b = &r.bufs[g & 1], *nb = &r.bufs[(g + 1) & 1];
        if ((s = rd_wait(&r, b, NULL)) != DF11_OK) goto out;
        if (g + 1 < m->n_groups) {
            if (nb->event_used && (s = be->iface->event_sync(be, nb->event)) != DF11_OK) goto out;
            rd_start(&r, nb, g + 1, df11_file_group(m->file, g + 1));
            if ((s = rd_pump(&r, nb, NULL)) != DF11_OK) goto out;
        }
        if ((s = df11_group_verify(m->file, g, b->mem, m->groups[g].payload_size)) != DF11_OK ||
            (s = load_group(m, g, b->mem, tmp)) != DF11_OK ||
            (s = be->iface->event_record(be, b->event, m->side_stream)) != DF11_OK)
            goto out;
        b->event_used = 1;
        b->group = -1;
    }
    s = be->iface->synchronize(be, m->side_stream);
out:
    if (r.ring_ok) {
        rd_drain(&r);
        io_uring_queue_exit(&r.ring);
    }
    /* The side stream may still copy out of staging after a failure. */
    if (m->side_stream) {
        df11_status s2 = be->iface->synchronize(be, m->side_stream);
        if (s == DF11_OK) s = s2;
    }
    for (int i = 0; i < 2; i++)
        if (r.bufs[i].event) be->iface->event_destroy(be, r.bufs[i].event);
    if (tmp_owned) be->iface->free(be, tmp);
    df11_pool_destroy(staging);
    if (r.fd_direct >= 0) close(r.fd_direct);
    if (r.fd_buffered >= 0) close(r.fd_buffered);
    return s;
}
