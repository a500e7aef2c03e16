/* The page a running df11 model publishes for df11-memstat (options.publish_stats): a
 * POSIX shared-memory object "/df11-<pid>" (a second model of the process adds "-<n>"),
 * mode 0444 to others, removed at df11_model_close. Readers map it read-only and copy it
 * out under the seqlock:
 *
 *     do { s0 = seq (acquire); if (s0 odd) retry; copy; s1 = seq (acquire) } while (s0 != s1)
 *
 * The layout only grows: fields are appended, `version` counts incompatible changes and
 * `size` is the writer's sizeof, so an old reader reads the prefix it knows.
 */
#ifndef DF11_RUNTIME_MEMSTAT_H
#define DF11_RUNTIME_MEMSTAT_H

#include <stdatomic.h>
#include <stdint.h>

#define DF11_MEMSTAT_MAGIC 0x3154415453313144ull /* "D11STAT1" */
#define DF11_MEMSTAT_VERSION 1
#define DF11_MEMSTAT_SLOTS 64
#define DF11_MEMSTAT_PREFIX "df11-"

struct df11_memstat_page {
    uint64_t magic;
    uint32_t version;
    uint32_t size;
    _Atomic uint32_t seq;             /* odd while the writer is updating */
    int32_t pid;
    char path[512];                   /* the model file */
    char backend[16];                 /* "host", "cuda" */
    uint32_t bf16_model;              /* opened with df11_model_open_bf16 */
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
    uint64_t updated_ns;              /* CLOCK_REALTIME of the last update */
    int32_t slot_block[DF11_MEMSTAT_SLOTS]; /* key held by each slot, -1 if none */
    uint8_t slot_state[DF11_MEMSTAT_SLOTS]; /* 0 empty, 1 cached, 2 acquired */
};

typedef struct df11_memstat_page df11_memstat_page;

#endif
