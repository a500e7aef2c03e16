/* The io_uring reader behind reader.h: group payloads into two host buffers, verified, in
 * order. Knows no model and no backend: what happens to a payload is the sink's business.
 * On any failure every read in flight is reaped before returning, so the caller may free
 * the buffers at once. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/util.h"
#include "loader/container.h"
#include "loader/reader.h"

#define RD_CHUNK DF11_READ_CHUNK
#define RD_DEPTH DF11_READ_DEPTH
#define RD_ALIGN ((uint64_t)DF11_READ_ALIGN)

typedef struct rd_buf {
    uint8_t *mem;
    int64_t group;        /* -1: idle */
    uint64_t off, end;    /* file range still to submit: [off, end) */
    uint64_t start, need; /* the group's payload: [start, start + need) */
    uint64_t done;        /* bytes of [start, start+need) completed */
    uint32_t inflight;
    /* The payload's xxh3, taken as its reads arrive (io_uring): chunk k (RD_CHUNK bytes from
     * start) is hashed once it and every chunk before it have all their payload bytes, while
     * the later chunks' reads are still in flight, so that the check costs the reader no
     * time of its own where the disk is the slower of the two. */
    XXH3_state_t *xs;
    uint64_t hashed;       /* payload bytes hashed: chunks [0, hashed / RD_CHUNK) */
    uint32_t *chunk_bytes; /* payload bytes completed, per chunk */
} rd_buf;

typedef struct rd_req {
    rd_buf *buf;
    uint64_t off; /* file offset */
    uint32_t len;
    int direct;
} rd_req;

typedef struct reader {
    struct io_uring ring;
    int ring_ok;     /* else reads are made with pread (no io_uring here) */
    int fd_direct;   /* ours, -1 once reads are buffered */
    int fd_buffered; /* the df11_file's, borrowed */
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
    if (!sqe) return df11i_fail(DF11_ERR_IO, "'%s': io_uring queue full", r->path);
    rd_req *q = r->free_reqs[--r->n_free];
    q->buf = b;
    q->off = off;
    q->len = len;
    q->direct = r->fd_direct >= 0;
    io_uring_prep_read(sqe, q->direct ? r->fd_direct : r->fd_buffered, b->mem + (off - b->start),
                       len, off);
    io_uring_sqe_set_data(sqe, q);
    b->inflight++;
    r->inflight++;
    return DF11_OK;
}

/* Submits reads for buffers in order (the older group first) while requests are free. */
static df11_status rd_pump(reader *r, rd_buf *first, rd_buf *second)
{
    rd_buf *order[2] = { first, second };
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
        if (e < 0) return df11i_fail_errno(DF11_ERR_IO, -e, "'%s': io_uring_submit", r->path);
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
    b->end = gi->payload_offset + df11i_align_up(gi->payload_size, RD_ALIGN);
    b->done = 0;
    b->hashed = 0;
    XXH3_64bits_reset(b->xs);
    memset(b->chunk_bytes, 0,
           (size_t)((b->need + RD_CHUNK - 1) / RD_CHUNK) * sizeof *b->chunk_bytes);
}

/* Hashes the chunks that have become whole in order. */
static void rd_hash_ready(rd_buf *b)
{
    while (b->hashed < b->need) {
        const uint64_t k = b->hashed / RD_CHUNK,
                       len = b->need - b->hashed < RD_CHUNK ? b->need - b->hashed : RD_CHUNK;
        if (b->chunk_bytes[k] < len) return;
        XXH3_64bits_update(b->xs, b->mem + b->hashed, (size_t)len);
        b->hashed += len;
    }
}

/* Reaps one completion. Short reads are resubmitted for the rest; EINVAL on an O_DIRECT
 * read switches the reader to buffered reads. */
static df11_status rd_reap(reader *r)
{
    struct io_uring_cqe *cqe;
    int e = io_uring_wait_cqe(&r->ring, &cqe);
    if (e < 0) {
        if (e == -EINTR) return DF11_OK;
        return df11i_fail_errno(DF11_ERR_IO, -e, "'%s': io_uring_wait_cqe", r->path);
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
        return df11i_fail_errno(DF11_ERR_IO, -res, "'%s': read at offset %llu", r->path,
                                (unsigned long long)off);
    } else {
        uint64_t got = (uint64_t)res;
        uint64_t want_end = off + len < r->file_size ? off + len : r->file_size;
        if (got < len && off + got < want_end) {
            if (got == 0)
                return df11i_fail(DF11_ERR_TRUNCATED,
                                  "'%s': file ends at %llu, before the "
                                  "payload of group %lld",
                                  r->path, (unsigned long long)off, (long long)b->group);
            s = rd_submit_one(r, b, off + got, (uint32_t)(len - got));
            len = got;
        }
        /* Count the bytes of the payload proper this read covered. */
        uint64_t lo = off, hi = off + (got < len ? got : len);
        uint64_t plo = b->start, phi = b->start + b->need;
        if (hi > phi) hi = phi;
        if (lo < plo) lo = plo;
        if (hi > lo) {
            b->done += hi - lo;
            /* a request lies within one chunk: the first ones are chunks, a resubmission is
             * the rest of one */
            b->chunk_bytes[(off - b->start) / RD_CHUNK] += (uint32_t)(hi - lo);
            rd_hash_ready(b);
        }
        /* A short read at end of file is fine unless it stopped inside the payload it
         * was reading; other reads of the same group may still be in flight. */
        uint64_t need_end = off + len < phi ? off + len : phi;
        if (got < len && off + got < need_end)
            return df11i_fail(DF11_ERR_TRUNCATED,
                              "'%s': file ends at %llu, inside the payload "
                              "of group %lld",
                              r->path, (unsigned long long)r->file_size, (long long)b->group);
    }
    if (s != DF11_OK) return s;
    int sub = io_uring_submit(&r->ring);
    if (sub < 0) return df11i_fail_errno(DF11_ERR_IO, -sub, "'%s': io_uring_submit", r->path);
    return DF11_OK;
}

static df11_status rd_wait(reader *r, rd_buf *b, rd_buf *other)
{
    while (b->done < b->need || b->inflight) {
        df11_status s = rd_pump(r, b, other);
        if (s != DF11_OK) return s;
        if (!r->inflight)
            return df11i_fail(DF11_ERR_TRUNCATED,
                              "'%s': group %lld: only %llu of %llu bytes "
                              "could be read",
                              r->path, (long long)b->group, (unsigned long long)b->done,
                              (unsigned long long)b->need);
        if ((s = rd_reap(r)) != DF11_OK) return s;
    }
    return DF11_OK;
}

static void rd_drain(reader *r)
{
    /* Requests prepared but never submitted (a failed io_uring_submit) will not complete:
     * submit them now, or stop counting them, so that the wait below ends. */
    const unsigned queued = io_uring_sq_ready(&r->ring);
    if (queued) {
        const int sent = io_uring_submit(&r->ring);
        const unsigned lost = sent < 0 ? queued : queued - (unsigned)sent;
        r->inflight = r->inflight > lost ? r->inflight - lost : 0;
    }
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

/* The fallback's note, written once per process. */
static atomic_int force_pread;
static pthread_once_t note_once = PTHREAD_ONCE_INIT;
static char note[160];
static atomic_int note_set;
static atomic_int note_errno;

static void note_write(void)
{
    snprintf(note, sizeof note, "io_uring_queue_init: %s: reading with pread",
             atomic_load(&note_errno) ? strerror(atomic_load(&note_errno)) : "disabled");
    atomic_store(&note_set, 1);
}

const char *df11i_reader_note(void) { return atomic_load(&note_set) ? note : NULL; }

int df11i_reader_force_pread(int on) { return atomic_exchange(&force_pread, on); }

/* The df11_file's own descriptor for buffered reads, and an O_DIRECT one on the same open
 * file (not its path) where the filesystem allows it. */
static df11_status rd_open(reader *r, const df11_file *file)
{
    r->fd_buffered = df11i_file_fd(file);
    if (r->fd_buffered < 0)
        return df11i_fail(DF11_ERR_INVALID_ARG, "'%s': a memory image has no file to read",
                          r->path);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", r->fd_buffered);
    if (df11i_open_regular(self, O_DIRECT, &r->fd_direct, NULL) != DF11_OK) {
        r->fd_direct = -1; /* no O_DIRECT here (or no /proc): buffered reads */
        df11i_clear_error();
    }
    int e = atomic_load(&force_pread) ? 0 : io_uring_queue_init(RD_DEPTH, &r->ring, 0);
    if (e < 0 || atomic_load(&force_pread)) {
        atomic_store(&note_errno, -e);
        pthread_once(&note_once, note_write); /* the first reason stays */
        return DF11_OK;
    }
    r->ring_ok = 1;
    return DF11_OK;
}

static void rd_close(reader *r)
{
    if (r->ring_ok) {
        rd_drain(r);
        io_uring_queue_exit(&r->ring);
    }
    if (r->fd_direct >= 0) close(r->fd_direct);
}

static df11_status rd_check_sizes(const reader *r, const df11_file *file, uint32_t first,
                                  uint32_t count, uint64_t buf_size)
{
    for (uint32_t g = first; g < first + count; g++) {
        uint64_t need = df11i_align_up(df11_file_group(file, g)->payload_size, RD_ALIGN);
        if (need > buf_size)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "'%s': group %u needs a %llu-byte read "
                              "buffer, given %llu",
                              r->path, g, (unsigned long long)need, (unsigned long long)buf_size);
    }
    return DF11_OK;
}

/* Without io_uring: group g's whole aligned range into b with pread, O_DIRECT where it
 * works (EINVAL switches to buffered, as with io_uring). */
static df11_status rd_pread(reader *r, rd_buf *b)
{
    uint64_t off = b->off;
    while (off < b->end) {
        const int direct = r->fd_direct >= 0;
        const uint64_t len = b->end - off < RD_CHUNK ? b->end - off : RD_CHUNK;
        ssize_t got = pread(direct ? r->fd_direct : r->fd_buffered, b->mem + (off - b->start),
                            (size_t)len, (off_t)off);
        if (got < 0 && errno == EINVAL && direct) {
            close(r->fd_direct);
            r->fd_direct = -1;
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return df11i_fail_errno(DF11_ERR_IO, errno, "'%s': read at offset %llu", r->path,
                                    (unsigned long long)off);
        if (got == 0) break; /* end of file: whether the payload was all there is below */
        off += (uint64_t)got;
    }
    const uint64_t payload_end = b->start + b->need;
    if (off < payload_end)
        return df11i_fail(DF11_ERR_TRUNCATED,
                          "'%s': file ends at %llu, inside the payload of group %lld", r->path,
                          (unsigned long long)off, (long long)b->group);
    b->done = b->need;
    return DF11_OK;
}

/* Starts group g into buffer i once the sink gives it back: every fill asks, a call's first
 * too, since the sink's copies out of the buffer from an earlier call may still run. */
static df11_status rd_fill(reader *r, int i, const df11_file *file, uint32_t g,
                           const df11i_read_sink *sink)
{
    df11_status s = sink->reuse(sink->ctx, i);
    if (s == DF11_OK) rd_start(r, &r->bufs[i], g, df11_file_group(file, g));
    return s;
}

/* Group g is read (b); the next one starts into the other buffer (nb) before g is checked
 * and handed over, so that reading overlaps the sink's work. Without io_uring (pread), each
 * group is read whole, then checked and handed over. */
static df11_status rd_run(reader *r, const df11_file *file, uint32_t first, uint32_t count,
                          const df11i_read_sink *sink)
{
    df11_status s = rd_fill(r, 0, file, first, sink);
    if (s != DF11_OK) return s;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t g = first + k;
        rd_buf *b = &r->bufs[k & 1], *nb = &r->bufs[(k + 1) & 1];
        if ((s = r->ring_ok ? rd_wait(r, b, NULL) : rd_pread(r, b)) != DF11_OK) return s;
        if (k + 1 < count) {
            if ((s = rd_fill(r, (int)((k + 1) & 1), file, g + 1, sink)) != DF11_OK) return s;
            if (r->ring_ok && (s = rd_pump(r, nb, NULL)) != DF11_OK) return s;
        }
        /* io_uring: hashed as the reads arrived (every chunk whole by now); pread: here */
        if ((s = r->ring_ok ? df11i_group_check_xxh3(file, g, b->need, XXH3_64bits_digest(b->xs))
                            : df11_group_verify(file, g, b->mem, b->need)) != DF11_OK ||
            (s = sink->consume(sink->ctx, g, b->mem, (int)(k & 1))) != DF11_OK)
            return s;
        b->group = -1;
    }
    return DF11_OK;
}

df11_status df11i_read_groups(const df11_file *file, uint32_t first, uint32_t count,
                              void *const bufs[2], uint64_t buf_size, const df11i_read_sink *sink)
{
    if (!file || !bufs || !bufs[0] || !bufs[1] || !sink || !sink->consume || !sink->reuse ||
        first > df11_file_n_groups(file) || count > df11_file_n_groups(file) - first)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_read_groups: bad argument");
    if (count == 0) return DF11_OK;
    reader r;
    memset(&r, 0, sizeof r);
    r.fd_direct = r.fd_buffered = -1;
    r.path = df11_file_path(file);
    r.file_size = df11_file_size(file);
    for (uint32_t i = 0; i < RD_DEPTH; i++) r.free_reqs[i] = &r.reqs[i];
    r.n_free = RD_DEPTH;
    df11_status s = DF11_OK;
    for (int i = 0; i < 2; i++) {
        r.bufs[i].mem = bufs[i];
        r.bufs[i].group = -1;
        r.bufs[i].xs = XXH3_createState();
        r.bufs[i].chunk_bytes = calloc((size_t)(buf_size / RD_CHUNK + 1), sizeof(uint32_t));
        if (!r.bufs[i].xs || !r.bufs[i].chunk_bytes)
            s = df11i_fail(DF11_ERR_NO_MEMORY, "'%s': the reader's checksum state", r.path);
    }
    if (s == DF11_OK) s = rd_check_sizes(&r, file, first, count, buf_size);
    if (s == DF11_OK) s = rd_open(&r, file);
    if (s == DF11_OK) s = rd_run(&r, file, first, count, sink);
    rd_close(&r);
    for (int i = 0; i < 2; i++) {
        XXH3_freeState(r.bufs[i].xs);
        free(r.bufs[i].chunk_bytes);
    }
    return s;
}
