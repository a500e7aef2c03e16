/* The shared-memory stats page for df11-memstat (layout: runtime/memstat.h): creating one
 * and writing a model's snapshot into it (stats.h), and reading one back
 * (df11i_memstat_page_read). Passive: it knows no model; runtime/model_stats.c computes the
 * numbers. Updates are a seqlock write of a few hundred bytes, no system call, so acquire
 * and release may publish on the hot path. Stats are optional: nothing here can fail an
 * open. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "runtime/memstat.h"
#include "runtime/stats.h"

#define PAGE_BYTES ((sizeof(df11i_memstat_page) + 4095) & ~(size_t)4095)

static int unavailable(char *why, size_t why_len, int err, const char *what)
{
    snprintf(why, why_len, "%s: %s", what, strerror(err));
    return -1;
}

/* The first free name of this pid: "/df11-<pid>", then "/df11-<pid>-1", ... */
static int page_open(df11i_stats_page *pg, char *why, size_t why_len)
{
    int fd = -1;
    int pid = (int)getpid();
    for (int n = 0; n < 64 && fd < 0; n++) {
        if (n == 0)
            snprintf(pg->name, sizeof pg->name, "/" DF11_MEMSTAT_PREFIX "%d", pid);
        else
            snprintf(pg->name, sizeof pg->name, "/" DF11_MEMSTAT_PREFIX "%d-%d", pid, n);
        /* 0600: the page names the model file (memstat.h). */
        fd = shm_open(pg->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int err = errno;
        /* EEXIST: another model of this process, or a page left by a process that had our
         * pid and died without closing (we cannot tell which), so try the next name. */
        if (fd < 0 && err != EEXIST) {
            char what[96];
            snprintf(what, sizeof what, "shm_open('%s')", pg->name);
            return unavailable(why, why_len, err, what);
        }
    }
    if (fd < 0)
        snprintf(why, why_len, "shm_open: all 64 stats page names of pid %d are taken", pid);
    return fd;
}

int df11i_stats_page_create(df11i_stats_page *pg, const char *model_path, const char *backend,
                            int bf16_model, char *why, size_t why_len)
{
    pg->map = NULL;
    int fd = page_open(pg, why, why_len);
    if (fd < 0) return -1;
    /* The whole page is written in one go, header first in memory, so that a reader finds
     * it zero-sized or complete rather than a valid size with a zero magic. */
    df11i_memstat_page *init = calloc(1, PAGE_BYTES);
    const char *failed = NULL;
    int err = 0;
    if (!init) {
        err = ENOMEM;
        failed = "page";
    } else {
        init->magic = DF11_MEMSTAT_MAGIC;
        init->version = DF11_MEMSTAT_VERSION;
        init->size = sizeof *init;
        init->pid = (int)getpid();
        snprintf(init->path, sizeof init->path, "%s", model_path);
        snprintf(init->backend, sizeof init->backend, "%s", backend);
        init->bf16_model = bf16_model != 0;
        for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) init->slot_block[i] = -1;
        ssize_t w = pwrite(fd, init, PAGE_BYTES, 0);
        if (w != (ssize_t)PAGE_BYTES) {
            err = w < 0 ? errno : ENOSPC;
            failed = "write";
        }
        free(init);
    }
    void *p = MAP_FAILED;
    if (!failed) {
        p = mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            err = errno;
            failed = "mmap";
        }
    }
    close(fd);
    if (failed) {
        char what[96];
        snprintf(what, sizeof what, "%s of '%s'", failed, pg->name);
        unavailable(why, why_len, err, what);
        shm_unlink(pg->name);
        return -1;
    }
    pg->map = p;
    return 0;
}

void df11i_stats_page_write(df11i_stats_page *page, const df11i_stats_snapshot *snap)
{
    df11i_memstat_page *pg = page->map;
    if (!pg) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);

    uint32_t seq = atomic_load_explicit(&pg->seq, memory_order_relaxed);
    atomic_store_explicit(&pg->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    pg->n_blocks = snap->n_blocks;
    pg->n_groups = snap->n_groups;
    pg->arena_slots = snap->arena_slots;
    pg->compressed_bytes = snap->compressed_bytes;
    pg->bf16_bytes = snap->bf16_bytes;
    pg->arena_bytes = snap->arena_bytes;
    pg->resident_bytes = snap->resident_bytes;
    pg->staging_bytes = snap->staging_bytes;
    pg->metadata_bytes = snap->metadata_bytes;
    pg->pool_reserved = snap->pool_reserved;
    pg->pool_high_water = snap->pool_high_water;
    pg->memory_limit = snap->memory_limit;
    pg->decodes = snap->decodes;
    pg->acquires = snap->acquires;
    pg->decode_ms = snap->decode_ms;
    pg->open_ms = snap->open_ms;
    pg->updated_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    memcpy(pg->slot_block, snap->slot_key, sizeof pg->slot_block);
    memcpy(pg->slot_state, snap->slot_state, sizeof pg->slot_state);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&pg->seq, seq + 2, memory_order_release);
}

void df11i_stats_page_remove(df11i_stats_page *pg)
{
    if (!pg->map) return;
    munmap(pg->map, PAGE_BYTES);
    shm_unlink(pg->name);
    pg->map = NULL;
}

/* --- reading a page (df11-memstat, the fuzzer) --- */

#define READ_TRIES 100

static int bad(char *why, size_t why_len, const char *fmt, ...) DF11_PRINTF(3, 4);
static int bad(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A NUL inside the field and printable ASCII before it. */
static int field_string_ok(const char *s, size_t cap, int printable)
{
    const char *nul = memchr(s, '\0', cap);
    if (!nul) return 0;
    for (const char *c = s; printable && c < nul; c++)
        if (*c < 0x20 || *c > 0x7e) return 0;
    return 1;
}

int df11i_memstat_page_read(const void *mapped, size_t mapped_size, df11i_memstat_page *out,
                            char *why, size_t why_len)
{
    if (!mapped || !out) return bad(why, why_len, "no page");
    if ((uintptr_t)mapped % _Alignof(df11i_memstat_page))
        return bad(why, why_len, "page not aligned");
    if (mapped_size < DF11_MEMSTAT_MIN_SIZE)
        return bad(why, why_len, "%zu bytes, less than a version 1 page (%zu)", mapped_size,
                   (size_t)DF11_MEMSTAT_MIN_SIZE);
    /* The page may change under us (another process writes it): every field is read once
     * into a local or into the private copy, and checks look at the copy only. */
    const volatile df11i_memstat_page *pg = mapped;
    uint64_t magic = pg->magic;
    uint32_t version = pg->version, size = pg->size;
    if (magic != DF11_MEMSTAT_MAGIC) return bad(why, why_len, "not a df11 stats page (magic)");
    if (version != DF11_MEMSTAT_VERSION)
        return bad(why, why_len, "stats page version %u (this reader knows %d)", version,
                   DF11_MEMSTAT_VERSION);
    if (size < DF11_MEMSTAT_MIN_SIZE)
        return bad(why, why_len, "page size field %u, less than a version 1 page (%zu)", size,
                   (size_t)DF11_MEMSTAT_MIN_SIZE);
    if (size > mapped_size)
        return bad(why, why_len, "page size field %u past the %zu bytes there are", size,
                   mapped_size);
    size_t n = size < sizeof *out ? size : sizeof *out;

    _Atomic uint32_t *seq = (_Atomic uint32_t *)&((df11i_memstat_page *)mapped)->seq;
    uint32_t s0 = 1;
    int tries;
    for (tries = 0; tries < READ_TRIES; tries++) {
        if (tries) sched_yield();
        s0 = atomic_load_explicit(seq, memory_order_acquire);
        if (s0 & 1) continue;
        memset(out, 0, sizeof *out);
        memcpy(out, mapped, n);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(seq, memory_order_relaxed) == s0) break;
    }
    if (tries == READ_TRIES)
        return bad(why, why_len, "page is %s (seq %u after %d tries)",
                   s0 & 1 ? "stuck mid-update" : "changing too fast", s0, READ_TRIES);
    out->magic = magic;
    out->version = version;
    out->size = size;
    atomic_store_explicit(&out->seq, s0, memory_order_relaxed);

    const df11i_memstat_page *p = out;
    if (p->pid <= 0) return bad(why, why_len, "pid %d", p->pid);
    if (!field_string_ok(p->path, sizeof p->path, 0))
        return bad(why, why_len, "path not NUL-terminated");
    if (!field_string_ok(p->backend, sizeof p->backend, 1))
        return bad(why, why_len, "backend not a NUL-terminated printable name");
    if (p->bf16_model > 1) return bad(why, why_len, "bf16_model %u", p->bf16_model);
    if (p->n_groups > DF11_MEMSTAT_MAX_GROUPS || p->n_blocks > p->n_groups)
        return bad(why, why_len, "%u blocks, %u groups", p->n_blocks, p->n_groups);
    if (p->arena_slots > DF11_MEMSTAT_SLOTS)
        return bad(why, why_len, "%u arena slots (at most %d)", p->arena_slots, DF11_MEMSTAT_SLOTS);
    for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) {
        uint8_t st = p->slot_state[i];
        if (st > 2 || (i >= p->arena_slots && st != 0))
            return bad(why, why_len, "slot %u: state %u", i, st);
        int64_t key = p->slot_block[i];
        if (st != 0 && (key < 0 || key >= (int64_t)p->n_blocks + p->n_groups))
            return bad(why, why_len, "slot %u: key %lld", i, (long long)key);
    }
    if (!isfinite(p->decode_ms) || p->decode_ms < 0 || !isfinite(p->open_ms) || p->open_ms < 0)
        return bad(why, why_len, "times not finite");
    const uint64_t bytes[] = { p->compressed_bytes, p->bf16_bytes,      p->arena_bytes,
                               p->resident_bytes,   p->staging_bytes,   p->metadata_bytes,
                               p->pool_reserved,    p->pool_high_water, p->memory_limit };
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++)
        if (bytes[i] > DF11_MEMSTAT_MAX_BYTES)
            return bad(why, why_len, "a byte count of %llu (at most 2^56)",
                       (unsigned long long)bytes[i]);
    return 0;
}
