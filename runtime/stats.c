/* Publishing a model's memory statistics in a POSIX shared-memory page for df11-memstat
 * (layout: runtime/memstat.h), and reading such a page back. Updates are a seqlock write of
 * a few hundred bytes, no system call, so acquire/release may publish on the hot path.
 * Stats are optional: nothing here can fail an open. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "runtime/internal.h"
#include "runtime/memstat.h"

#define PAGE_BYTES ((sizeof(df11_memstat_page) + 4095) & ~(size_t)4095)

static void stats_unavailable(df11_model *m, int err, const char *what)
{
    snprintf(m->stats_error, sizeof m->stats_error, "%s: %s", what, strerror(err));
}

void df11_rt_stats_publish_open(df11_model *m)
{
    m->stats_error[0] = '\0';
    int fd = -1, err = 0;
    int pid = (int)getpid();
    for (int n = 0; n < 64 && fd < 0; n++) {
        if (n == 0) snprintf(m->stats_name, sizeof m->stats_name, "/" DF11_MEMSTAT_PREFIX "%d", pid);
        else snprintf(m->stats_name, sizeof m->stats_name, "/" DF11_MEMSTAT_PREFIX "%d-%d", pid, n);
        /* 0600: the page names the model file (memstat.h). */
        fd = shm_open(m->stats_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        err = errno;
        /* EEXIST: another model of this process, or a page left by a process that had our
         * pid and died without closing (we cannot tell which), so try the next name. */
        if (fd < 0 && err != EEXIST) {
            char what[96];
            snprintf(what, sizeof what, "shm_open('%s')", m->stats_name);
            stats_unavailable(m, err, what);
            return;
        }
    }
    if (fd < 0) {
        snprintf(m->stats_error, sizeof m->stats_error,
                 "shm_open: all 64 stats page names of pid %d are taken", pid);
        return;
    }
    /* The whole page is written in one go, header first in memory, so that a reader finds
     * it zero-sized or complete rather than a valid size with a zero magic. */
    df11_memstat_page *init = calloc(1, PAGE_BYTES);
    const char *failed = NULL;
    if (!init) {
        err = ENOMEM;
        failed = "page";
    } else {
        init->magic = DF11_MEMSTAT_MAGIC;
        init->version = DF11_MEMSTAT_VERSION;
        init->size = sizeof *init;
        init->pid = pid;
        snprintf(init->path, sizeof init->path, "%s", m->path);
        snprintf(init->backend, sizeof init->backend, "%s", m->be->iface->name);
        init->bf16_model = m->file == NULL;
        for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) init->slot_block[i] = -1;
        ssize_t w = pwrite(fd, init, PAGE_BYTES, 0);
        if (w != (ssize_t)PAGE_BYTES) {
            err = w < 0 ? errno : ENOSPC;
            failed = "write";
        }
        free(init);
    }
    void *p = MAP_FAILED;
    if (!failed && (p = mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        err = errno;
        failed = "mmap";
    }
    close(fd);
    if (failed) {
        char what[96];
        snprintf(what, sizeof what, "%s of '%s'", failed, m->stats_name);
        stats_unavailable(m, err, what);
        shm_unlink(m->stats_name);
        return;
    }
    m->stats_page = p;
    df11_rt_stats_publish(m);
}

void df11_rt_stats_publish(df11_model *m)
{
    df11_memstat_page *pg = m->stats_page;
    if (!pg) return;
    df11_model_stats st;
    df11_model_stats_get(m, &st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);

    uint32_t seq = atomic_load_explicit(&pg->seq, memory_order_relaxed);
    atomic_store_explicit(&pg->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    pg->n_blocks = m->n_blocks;
    pg->n_groups = m->n_groups;
    pg->arena_slots = m->arena.n_slots;
    pg->compressed_bytes = st.compressed_bytes;
    pg->bf16_bytes = st.bf16_bytes;
    pg->arena_bytes = st.arena_bytes;
    pg->resident_bytes = st.resident_bytes;
    pg->staging_bytes = st.staging_bytes;
    pg->metadata_bytes = st.metadata_bytes;
    pg->pool_reserved = st.pool_reserved;
    pg->pool_high_water = st.pool_high_water;
    pg->memory_limit = m->opt.memory_limit;
    pg->decodes = st.decodes;
    pg->acquires = st.acquires;
    pg->decode_ms = st.decode_ms;
    pg->open_ms = st.open_ms;
    pg->updated_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (uint32_t i = 0; i < DF11_MEMSTAT_SLOTS; i++) {
        const df11_arena_slot *sl = i < m->arena.n_slots ? &m->arena.slots[i] : NULL;
        pg->slot_block[i] = sl && sl->state != DF11_SLOT_EMPTY ? (int32_t)sl->key : -1;
        pg->slot_state[i] = sl ? (uint8_t)sl->state : 0;
    }
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&pg->seq, seq + 2, memory_order_release);
}

void df11_rt_stats_publish_close(df11_model *m)
{
    if (!m->stats_page) return;
    munmap(m->stats_page, PAGE_BYTES);
    shm_unlink(m->stats_name);
    m->stats_page = NULL;
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

int df11_memstat_page_read(const void *mapped, size_t mapped_size, df11_memstat_page *out,
                           char *why, size_t why_len)
{
    if (!mapped || !out) return bad(why, why_len, "no page");
    if ((uintptr_t)mapped % _Alignof(df11_memstat_page))
        return bad(why, why_len, "page not aligned");
    if (mapped_size < DF11_MEMSTAT_MIN_SIZE)
        return bad(why, why_len, "%zu bytes, less than a version 1 page (%zu)", mapped_size,
                   (size_t)DF11_MEMSTAT_MIN_SIZE);
    /* The page may change under us (another process writes it): every field is read once
     * into a local or into the private copy, and checks look at the copy only. */
    const volatile df11_memstat_page *pg = mapped;
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

    _Atomic uint32_t *seq = (_Atomic uint32_t *)&((df11_memstat_page *)mapped)->seq;
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

    const df11_memstat_page *p = out;
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
    return 0;
}
