/* The model object shared by the runtime sources. Not installed. */
#ifndef DF11_RUNTIME_INTERNAL_H
#define DF11_RUNTIME_INTERNAL_H

#include <stdint.h>

#include "df11/runtime.h"
#include "loader/safetensors.h"
#include "pool/arena.h"
#include "pool/pool.h"
#include "runtime/backend.h"

typedef struct rt_group {
    const char *name;
    int32_t layer;
    uint32_t first_tensor, n_tensors;
    uint64_t payload_size, decoded_size;
    void *payload;            /* backend memory (compressed); NULL once decoded resident */
    void *plan_host;          /* CUDA: malloc'd plan blob */
    void *plan_dev;
    void *resident;           /* decoded data kept for the model's life, or NULL */
} rt_group;

typedef struct rt_tensor {
    df11_tensor_view view;    /* data: NULL unless resident */
    uint32_t group;
    uint64_t offset;          /* within the decoded group */
} rt_tensor;

/* The runtime's side of arena slot i (pool/arena.h only says which key a slot holds). */
typedef struct rt_slot {
    void *ready_event;        /* recorded on the side stream after the decode into the slot */
    void *release_event;      /* recorded on the engine's stream at release */
    int release_recorded;     /* release_event has been recorded at least once */
} rt_slot;

typedef struct df11_memstat_page df11_memstat_page;

struct df11_model {
    df11_backend *be;
    df11_backend_kind kind;
    df11_model_options opt;
    df11_pool *pool;          /* device memory: payloads, arena, resident, plans */
    df11_file *file;          /* NULL for a BF16 model */
    df11_st_model *st;        /* BF16 model's source, NULL for df11 */
    char *path;
    const char *config;
    size_t config_len;

    uint32_t n_groups, n_tensors, n_blocks;
    rt_group *groups;
    rt_tensor *tensors;
    uint32_t *block_group;    /* block → group */
    uint32_t *hash;           /* open addressing: tensor index + 1, 0 = empty */
    uint32_t hash_mask;

    /* Scheduling (df11 models). */
    void *side_stream;
    df11_arena arena;
    rt_slot slots[DF11_ARENA_MAX_SLOTS]; /* indexed like arena.slots */
    df11_tensor_view *slot_views; /* n_slots × max_block_tensors */
    uint32_t max_block_tensors;
    /* BF16 models: acquisition flags and per-block views. */
    uint8_t *bf16_acquired;
    df11_tensor_view *bf16_views;
    uint32_t *bf16_block_first; /* index into bf16_views of each block's first tensor */

    /* Accounting. */
    uint64_t compressed_bytes, bf16_bytes, staging_bytes;
    uint64_t decodes, acquires;
    double open_ms;

    df11_memstat_page *stats_page;
    char stats_name[64];
    char stats_error[160];    /* why publish_stats has no page, "" if it has one */
};

/* runtime/load.c: reads every group's payload with io_uring into staging buffers,
 * verifies its xxh3, builds the GPU plan where the backend needs one and copies payload
 * (and plan) into the pool; resident groups are decoded on the way. */
df11_status df11_rt_load(df11_model *m);

/* runtime/stats.c: the shared-memory page df11-memstat reads. */
/* Never fails the open: without a page, m->stats_error says why. */
void df11_rt_stats_publish_open(df11_model *m);
void df11_rt_stats_publish(df11_model *m);
void df11_rt_stats_publish_close(df11_model *m);

double df11_rt_now_ms(void);

#endif
