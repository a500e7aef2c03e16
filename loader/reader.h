/* Reading a .df11 file's group payloads into host memory with io_uring: verified (xxh3),
 * in order, double-buffered. It knows files and buffers, not models or devices;
 * runtime/load.c is its user (staging, GPU plans, uploads happen in its callbacks).
 *
 *     void *bufs[2] = {a, b};                 // DF11_READ_ALIGN-aligned, buf_size each
 *     df11i_read_sink sink = {.consume = copy_out, .reuse = wait_copied, .ctx = model};
 *     df11i_read_groups(file, 0, n_groups, bufs, buf_size, &sink);
 *
 * The two buffers take turns: while sink->consume has group g's payload, group g+1 is
 * being read into the other buffer, in DF11_READ_CHUNK requests, up to DF11_READ_DEPTH in
 * flight. Reads go through the descriptor df11_file_open opened (so they read the file that
 * was indexed, even if its path names another one by now), reopened with O_DIRECT through
 * /proc/self/fd where the filesystem allows it (else buffered; an EINVAL from an O_DIRECT
 * read also switches to buffered). Where io_uring is unavailable (ENOSYS on old kernels,
 * EPERM under seccomp or in some containers), the same reads are made with pread, one
 * group at a time, and df11i_reader_note says so.
 */
#ifndef DF11_LOADER_READER_H
#define DF11_LOADER_READER_H

#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"

#define DF11_READ_CHUNK (4u << 20)
#define DF11_READ_DEPTH 32u
#define DF11_READ_ALIGN 4096u /* O_DIRECT: buffers, offsets and lengths in whole blocks */

typedef struct df11i_read_sink {
    /* Group `group`'s payload, read and checked, in buffer `buf` (0 or 1). The reader leaves
     * that buffer alone until reuse(ctx, buf) has returned. A failure stops the reading. */
    df11_status (*consume)(void *ctx, uint32_t group, const void *payload, int buf);
    /* Called before buffer `buf` is filled, each time, the first fill of a call included
     * (the buffers may come from an earlier call whose copies still run): returns when
     * nothing consume started (an asynchronous copy) still reads it. */
    df11_status (*reuse)(void *ctx, int buf);
    void *ctx;
} df11i_read_sink;

/* Reads groups [first, first + count) of `file` into bufs[0] and bufs[1] (buf_size bytes
 * each, at least every group's payload rounded up to DF11_READ_ALIGN), checks each
 * payload's xxh3 (DF11_ERR_CHECKSUM; taken chunk by chunk as the reads arrive, pread: after
 * the group's read) and hands it to the sink in group order. A file that
 * ends early fails with DF11_ERR_TRUNCATED; a memory image (no descriptor) with
 * DF11_ERR_INVALID_ARG. On return no read is in flight and nothing the reader opened is
 * left open, failure or not; the sink's own work (copies) may still be running. */
df11_status df11i_read_groups(const df11_file *file, uint32_t first, uint32_t count,
                              void *const bufs[2], uint64_t buf_size, const df11i_read_sink *sink);

/* Why reads went through pread instead of io_uring in this process ("io_uring_queue_init:
 * Operation not permitted"), or NULL while they have not. */
const char *df11i_reader_note(void);
/* Nonzero: every later read uses pread as if io_uring were unavailable (tests). Returns the
 * previous setting. */
int df11i_reader_force_pread(int on);

#endif
