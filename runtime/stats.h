/* Writing the stats page df11-memstat reads (layout: runtime/memstat.h). The page is
 * passive: it knows no model, only a snapshot of plain numbers that the model computes
 * (runtime/model_stats.c) and hands over on open, acquire, release and tensor_get.
 *
 *     df11i_stats_page pg;
 *     if (df11i_stats_page_create(&pg, path, "cuda", 0, why, sizeof why) == 0) {
 *         df11i_stats_page_write(&pg, &snapshot);     // a seqlock write, no system call
 *         ...
 *         df11i_stats_page_remove(&pg);               // unmapped and unlinked
 *     }
 */
#ifndef DF11_RUNTIME_STATS_H
#define DF11_RUNTIME_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/memstat.h"

/* A model's numbers at one moment: what the page shows besides its fixed fields. */
typedef struct df11i_stats_snapshot {
    uint32_t n_blocks, n_groups, arena_slots;
    uint64_t compressed_bytes, bf16_bytes, arena_bytes, resident_bytes, staging_bytes;
    uint64_t metadata_bytes, pool_reserved, pool_high_water, memory_limit;
    uint64_t decodes, acquires;
    double decode_ms, open_ms;
    int32_t slot_key[DF11_MEMSTAT_SLOTS];   /* what each arena slot holds, -1 if none */
    uint8_t slot_state[DF11_MEMSTAT_SLOTS]; /* 0 empty, 1 cached, 2 acquired */
} df11i_stats_snapshot;

typedef struct df11i_stats_page {
    df11i_memstat_page *map; /* NULL: no page */
    char name[64];           /* the shared-memory object's name, "/df11-<pid>[-n]" */
} df11i_stats_page;

/* Creates a page for this process (mode 0600: it names the model file) with the fixed
 * fields: the model's path, the backend's name, whether it is a BF16 model. Returns 0, or
 * -1 with pg->map NULL and a one-line reason in `why`: stats are optional, the caller
 * carries on without a page. */
int df11i_stats_page_create(df11i_stats_page *pg, const char *model_path, const char *backend,
                            int bf16_model, char *why, size_t why_len);
/* Writes `snap` under the page's seqlock. Nothing when pg has no page. */
void df11i_stats_page_write(df11i_stats_page *pg, const df11i_stats_snapshot *snap);
/* Unmaps and unlinks the page. Nothing when pg has no page. */
void df11i_stats_page_remove(df11i_stats_page *pg);

#endif
