/* The page a running df11 model publishes for df11-memstat (options.publish_stats): a
 * POSIX shared-memory object "/df11-<pid>" (a second model of the process adds "-<n>"),
 * removed at df11_model_close. It is created mode 0600: it names the model file, which
 * other users need not learn, so df11-memstat sees only the processes of the user running
 * it (root sees all). A process that cannot create its page opens the model all the same
 * (df11_model_stats.stats_page_error says why).
 *
 * Readers map it read-only and copy it out under the seqlock:
 *
 *     do { s0 = seq (acquire); if (s0 odd) retry; copy; s1 = seq (acquire) } while (s0 != s1)
 *
 * The layout only grows: fields are appended, `version` counts incompatible changes and
 * `size` is the writer's sizeof, so an old reader reads the prefix it knows.
 *
 * A page is outside input: any process of the user can write anything into /dev/shm/df11-*.
 * df11i_memstat_page_read is the one reader, and it checks every field.
 */
#ifndef DF11_RUNTIME_MEMSTAT_H
#define DF11_RUNTIME_MEMSTAT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define DF11_MEMSTAT_MAGIC 0x3154415453313144ull /* "D11STAT1" */
#define DF11_MEMSTAT_VERSION 1
#define DF11_MEMSTAT_SLOTS 64
#define DF11_MEMSTAT_PREFIX "df11-"

struct df11i_memstat_page {
    uint64_t magic;
    uint32_t version;
    uint32_t size;
    _Atomic uint32_t seq; /* odd while the writer is updating */
    int32_t pid;
    char path[512];      /* the model file */
    char backend[16];    /* "host", "cuda" */
    uint32_t bf16_model; /* opened with df11_model_open_bf16 */
    uint32_t n_blocks;
    uint32_t n_groups;
    uint32_t arena_slots;
    uint64_t compressed_bytes;
    uint64_t bf16_bytes;
    uint64_t arena_bytes;
    uint64_t resident_bytes;
    uint64_t staging_bytes;
    uint64_t metadata_bytes;
    uint64_t pool_reserved;
    uint64_t pool_high_water;
    uint64_t memory_limit;
    uint64_t decodes;
    uint64_t acquires;
    double decode_ms;
    double open_ms;
    uint64_t updated_ns;                    /* CLOCK_REALTIME of the last update */
    int32_t slot_block[DF11_MEMSTAT_SLOTS]; /* key held by each slot, -1 if none */
    uint8_t slot_state[DF11_MEMSTAT_SLOTS]; /* 0 empty, 1 cached, 2 acquired */
};

typedef struct df11i_memstat_page df11i_memstat_page;

/* Version 1's layout ends with slot_state: a page's `size` is at least this. */
#define DF11_MEMSTAT_MIN_SIZE (offsetof(df11i_memstat_page, slot_state) + DF11_MEMSTAT_SLOTS)
/* Bounds a reader enforces: more groups than any model has, a page far larger than ours. */
#define DF11_MEMSTAT_MAX_GROUPS (1u << 20)
#define DF11_MEMSTAT_MAX_PAGE (1u << 20)
/* and byte counts of at most 64 PiB each, so that the sums printers take cannot wrap */
#define DF11_MEMSTAT_MAX_BYTES (1ull << 56)

/* Copies the page at `mapped` (mapped_size readable bytes, 8-byte aligned as mmap gives)
 * into `out` under its seqlock and checks it: magic and version, DF11_MEMSTAT_MIN_SIZE <=
 * size <= mapped_size, NUL-terminated strings (`backend` printable ASCII; `path` any bytes, a
 * model path may hold them: printers escape it), counts, byte counts
 * (DF11_MEMSTAT_MAX_BYTES) and slot states in range,
 * finite times. A writer that stays mid-update (seq odd) or keeps updating is given a
 * bounded number of tries. Returns 0 with `out` a checked, NUL-terminated copy (fields past
 * the writer's size zero), or -1 with a one-line reason in `why` (may be NULL). Pure: no
 * system call but sched_yield, never prints; for df11-memstat and the fuzzer. */
int df11i_memstat_page_read(const void *mapped, size_t mapped_size, df11i_memstat_page *out,
                            char *why, size_t why_len);

#endif
