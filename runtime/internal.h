/* The model object shared by the runtime sources, and what each source offers the others.
 * Not installed.
 *
 * A model is groups of tensors: a df11 file's groups, or for a BF16 model one group per
 * block plus one per non-layer tensor. A group is either resident (its decoded tensors
 * stay in the pool for the model's life: every BF16 group, df11 non-layer groups under the
 * RESIDENT policy) or kept compressed and decoded into an arena slot when needed. The
 * scheduler (schedule.c) asks only that: a block of a resident group is acquired by a flag
 * and served from persistent views, any other block through the arena. No scheduling
 * call asks which kind of file the model came from.
 */
#ifndef DF11_RUNTIME_INTERNAL_H
#define DF11_RUNTIME_INTERNAL_H

#include <stdint.h>

#include "df11/runtime.h"
#include "loader/safetensors.h"
#include "pool/arena.h"
#include "pool/pool.h"
#include "runtime/backend.h"
#include "runtime/stats.h"

#define RT_PAYLOAD_ALIGN 4096ull /* payloads, slots, resident groups */

typedef struct rt_group {
    const char *name;
    int32_t layer;
    uint32_t first_tensor, n_tensors;
    uint64_t payload_size, decoded_size;
    df11_tier tier;     /* where the payload lives: DEVICE unless streamed (stream.c) */
    void *payload;      /* backend memory (compressed); NULL once decoded resident, or streamed */
    void *host_payload; /* HOST tier: the payload in pinned host memory */
    void *plan_host;    /* CUDA: malloc'd plan blob */
    void *plan_dev;
    void *resident;   /* decoded data kept for the model's life, or NULL */
    uint8_t acquired; /* resident layer group held by the engine (no slot says so) */
    /* Resident non-layer group: df11_tensor_get calls not yet released, counted as the
     * arena counts a held group's, so that release means the same under every policy. */
    uint32_t holds;
} rt_group;

typedef struct rt_tensor {
    df11_tensor_view view; /* data: NULL unless resident */
    uint32_t group;
    uint64_t offset; /* within the decoded group */
    /* The matmul op (matmul.c), CUDA decode path: the tensor's own decode plan, made by
     * df11_weight_get (host copy malloc'd, device copy in the pool), or NULL. */
    void *mm_plan_host;
    void *mm_plan_dev;
} rt_tensor;

/* The runtime's side of arena slot i (pool/arena.h only says which key a slot holds). */
typedef struct rt_slot {
    void *ready_event;    /* recorded on the side stream after the decode into the slot */
    void *release_event;  /* recorded on the engine's stream at release */
    int release_recorded; /* release_event has been recorded at least once */
} rt_slot;

/* One device buffer of the staging ring that streamed groups are copied into (stream.c). */
typedef enum { STAGE_EMPTY, STAGE_READING, STAGE_READY, STAGE_FAILED } rt_stage_state;

typedef struct rt_stage {
    void *data;    /* backend memory, stage_size bytes */
    int64_t group; /* the group it holds or is filling, -1 if none */
    rt_stage_state state;
    uint32_t users;    /* df11i_rt_payload_get calls not yet put back */
    uint64_t stamp;    /* last request: the least recent unused stage is refilled first */
    void *arrived;     /* recorded on the copy stream after the copy into data */
    void *used;        /* recorded on each stream that read data, after it did */
    void *used_stream; /* the stream `used` was last recorded on */
    int used_recorded;
    df11_status error; /* STAGE_FAILED: why the read failed */
    char error_detail[256];
} rt_stage;

/* Streaming state: the ring, the copy stream, and (FILE tier) the reader thread. */
typedef struct rt_ring {
    uint32_t n;
    uint64_t stage_size;
    rt_stage stages[DF11_MAX_STAGING];
    uint64_t clock;    /* request stamps */
    void *copy_stream; /* host → device copies into the stages */
    /* FILE tier: a thread reads requested groups (FIFO) into two pinned bounce buffers,
     * checks them and enqueues their copies. Guarded by mu: stage state, error, the queue. */
    int reader_started, reader_quit;
    void *reader_thread; /* pthread_t, malloc'd */
    void *mu, *cv;       /* pthread mutex and condition: a stage changed state, or work */
    uint32_t queue[DF11_MAX_STAGING], q_head, q_len;
    void *bounce[2];
    void *bounce_copied[2]; /* events: the copy out of each bounce buffer completed */
    int bounce_used[2];
    uint64_t bounce_size;
    /* Counters (the reader's under mu). */
    uint64_t h2d_bytes, file_bytes, fetches;
    double file_read_ms, stall_ms;
} rt_ring;

struct df11_model {
    df11i_backend *be;
    df11_backend_kind kind;
    df11_model_options opt;
    df11i_pool *pool;   /* device memory: payloads, arena, resident, plans, staging ring */
    df11i_pool *pinned; /* host tier payloads and the reader's bounce buffers, or NULL */
    rt_ring ring;
    df11_file *file;    /* NULL for a BF16 model */
    df11i_st_model *st; /* BF16 model's source, NULL for df11 */
    char *path;
    const char *config;
    size_t config_len;

    uint32_t n_groups, n_tensors, n_blocks;
    uint32_t block_first, block_end; /* the blocks served: [block_first, block_end) */
    rt_group *groups;
    rt_tensor *tensors;    /* each group's tensors are consecutive */
    uint32_t *block_group; /* block → group */
    uint32_t *hash;        /* open addressing: tensor index + 1, 0 = empty */
    uint32_t hash_mask;

    /* Scheduling. Arena blocks: a slot each, views rebuilt into slot_views at acquire. */
    void *side_stream;
    void *prefetch_event; /* df11_block_prefetch_after's point on the engine's stream */
    df11i_arena arena;
    rt_slot slots[DF11_ARENA_MAX_SLOTS]; /* indexed like arena.slots */
    df11_tensor_view *slot_views;        /* n_slots × max_block_tensors */
    uint32_t max_block_tensors;
    /* Resident blocks: views built once at open, indexed like `tensors`. */
    df11_tensor_view *resident_views;

    /* Accounting. */
    uint64_t bf16_bytes, staging_bytes;
    uint64_t decodes, acquires;
    double open_ms;

    /* The matmul op (matmul.c). */
    uint64_t uid;     /* df11_weight.model: unique per model in the process */
    void *mm;         /* the backend's per-model matmul state (CUDA: cuBLAS handle) */
    void *mm_scratch; /* decode target of the decode path, made by the first weight
                                 that needs it, mm_scratch_size bytes; NULL until then */
    uint64_t mm_scratch_size;
    void *mm_ws; /* the fused path's workspace, after the decode area of mm_scratch */
    uint64_t mm_ws_size;
    void *mm_ws_event;        /* recorded after each fused product */
    void *mm_ws_stream;       /* the stream of the last fused product */
    int mm_ws_used;           /* mm_ws_event has been recorded (on mm_ws_stream) */
    void *mm_ready, *mm_done; /* side stream: decoded into scratch; caller: done with it */
    struct rt_stack *stacks;  /* stacked weights (df11_weight_stack), n_stacks of them */
    uint32_t n_stacks;
    int mm_done_recorded;

    /* options.host_gather_tensor: its group (UINT32_MAX: none), kept in pinned memory, and
     * the two pinned buffers its rows are decoded into on the CPU before their copy in
     * (gather.c), each reused once its last copy is over (hg_copied). */
    uint32_t hg_group;
    void *hg_buf[2], *hg_copied[2];
    int hg_used[2], hg_next;
    uint64_t hg_buf_size;

    df11i_stats_page stats_page; /* options.publish_stats */
    char stats_error[160];       /* why publish_stats has no page, "" if it has one */
};

static inline double df11i_rt_mib(uint64_t bytes) { return bytes / 1048576.0; }

/* runtime/model.c: what both opens share. */
/* Checks the arguments and makes the model object with its backend; `fn` names the
 * caller in error details. On failure nothing is left. */
df11_status df11i_rt_model_new(const char *fn, const char *path, const df11_model_options *options,
                               df11_model **out, df11_model **m);
/* The memory limit to plan against: options.memory_limit, else what the device has free
 * less headroom, 0 when neither is known (host backend). */
uint64_t df11i_rt_memory_limit(df11_model *m);
/* Sets the views of resident tensors, takes the open time, publishes the stats page and
 * hands the model out; on failure closes it. */
df11_status df11i_rt_open_finish(df11_model *m, double t0, df11_model **out);

/* The served range from options.first_block and block_count, once n_blocks is known;
 * DF11_ERR_INVALID_ARG for a range past the file's blocks. */
df11_status df11i_rt_range_take(df11_model *m);
static inline int df11i_rt_block_served(const df11_model *m, uint32_t block)
{
    return block >= m->block_first && block < m->block_end;
}
/* Whether group g is loaded: every non-layer group, and the served blocks' groups. */
static inline int df11i_rt_group_served(const df11_model *m, uint32_t g)
{
    const int32_t layer = m->groups[g].layer;
    return layer < 0 || df11i_rt_block_served(m, (uint32_t)layer);
}
/* DF11_ERR_NOT_FOUND, naming the range, for a block past the file's or outside the range;
 * DF11_ERR_INVALID_ARG for a NULL model. `fn` names the caller. */
df11_status df11i_rt_block_check(const df11_model *m, uint32_t block, const char *fn);
/* The served block after `block`, wrapping from the last to the first (prefetch order). */
static inline uint32_t df11i_rt_block_next(const df11_model *m, uint32_t block)
{
    return block + 1 < m->block_end ? block + 1 : m->block_first;
}

/* runtime/load.c: every group's payload, read and verified by reader.c into staging
 * buffers, goes into the pool with its GPU plan where the backend needs one; resident
 * groups are decoded on the way. */
df11_status df11i_rt_load(df11_model *m);

/* runtime/schedule.c: arena slots and resident blocks. */
/* The decoded data of block `block` while it is acquired, else NULL. */
const void *df11i_rt_block_data(const df11_model *m, uint32_t block);
/* Makes `stream` wait for the decode of acquired block `block` (a no-op when resident). */
df11_status df11i_rt_block_wait(df11_model *m, uint32_t block, df11_stream stream);
/* Holds non-resident, non-layer group `group` (the ARENA policy) in a slot until
 * df11i_rt_group_release, decoding it there first unless it is there already; a group held
 * again gains a reference. *data: the slot. DF11_ERR_BUSY when every slot is acquired. */
df11_status df11i_rt_group_acquire(df11_model *m, uint32_t group, df11_stream stream,
                                   const void **data);
/* Who holds the arena's slots, for DF11_ERR_BUSY details: "block 3, non-layer group
 * 'model.embed_tokens' (df11_tensor_get)"; cut to cap bytes. */
void df11i_rt_slot_holders(const df11_model *m, char *buf, size_t cap);
/* Drops one reference; DF11_ERR_STATE when the group is not held. */
df11_status df11i_rt_group_release(df11_model *m, uint32_t group, df11_stream stream);
/* Whether group `group` decoded fits an arena slot: a resident group, a layer group, and
 * under the ARENA policy every group; under COMPRESSED a non-layer group only if it is no
 * larger than a layer block's (df11i_rt_group_acquire refuses the others). */
int df11i_rt_group_fits(const df11_model *m, uint32_t group);

/* runtime/stream.c: streamed groups (HOST and FILE tiers) through the staging ring. */
/* Whether group g is streamed (its payload is not kept in device memory). */
static inline int df11i_rt_streamed(const df11_model *m, uint32_t g)
{
    return m->groups[g].tier != DF11_TIER_DEVICE;
}
/* The copy stream, the stages' events and buffers (ring.n stages of ring.stage_size bytes
 * from the pool), and the reader thread when a group is in the FILE tier; at open, when
 * any group is streamed. */
df11_status df11i_rt_ring_open(df11_model *m);
/* Stops the reader and drains the copy stream; safe on a half-opened model. */
void df11i_rt_ring_close(df11_model *m);
/* Group g's payload in backend memory for work enqueued on `stream` next: a device-tier
 * group's own; a streamed group's stage, copied in (and read first, FILE tier) unless it
 * is there already, with `stream` made to wait for the copy, and the next streamed groups
 * in block order fetched behind it. The stage keeps the group until the matching
 * df11i_rt_payload_put, which must follow once the reads of it are enqueued on `stream`. A
 * failed read (truncated, replaced or corrupt file) returns its status and detail. */
df11_status df11i_rt_payload_get(df11_model *m, uint32_t g, void *stream, const void **payload);
df11_status df11i_rt_payload_put(df11_model *m, uint32_t g, void *stream);
/* Starts bringing group g in, without waiting; 1 when df11i_rt_payload_get would not
 * wait on the host for it (device tier, or its copy is enqueued), else 0. */
int df11i_rt_payload_prefetch(df11_model *m, uint32_t g);
/* The streaming counters into stats (h2d and file bytes, fetches, read and stall time). */
void df11i_rt_ring_counters(const df11_model *m, df11_model_stats *st);

/* runtime/gather.c: options.host_gather_tensor's buffers' events, at open; at close. */
df11_status df11i_rt_gather_open(df11_model *m);
void df11i_rt_gather_close(df11_model *m);
/* Bytes of one of the two pinned buffers of a host-gathered rows x cols tensor. */
uint64_t df11i_rt_gather_buf_size(uint64_t rows, uint64_t cols);

/* runtime/matmul.c: the matmul op's per-model state. */
/* At open (from df11i_rt_open_finish): the model's id, the backend's matmul state, the
 * op's two events. */
df11_status df11i_rt_matmul_open(df11_model *m);
/* At close, after the side stream has drained; safe on a half-opened model. */
void df11i_rt_matmul_close(df11_model *m);
/* The decoded weights of tensor t where they already lie in backend memory (resident group,
 * raw tensor in a payload), else NULL. */
const void *df11i_rt_weight_direct(const df11_model *m, uint32_t t);
/* Tensor t's group for the backend, with the tensor's own decode plan (df11_weight_get). */
df11i_backend_group df11i_rt_backend_group(const df11_model *m, uint32_t t);
/* The checks df11_matmul and df11_rows_gather share on a non-NULL weight: it is one of
 * this model's as df11_weight_get or df11_weight_stack returned it, out_dtype is BF16 or F32, the backend has
 * the op, and the host backend gets the NULL stream. `fn` names the caller in details. */
df11_status df11i_rt_weight_check(const df11_model *m, const df11_weight *w, df11_dtype out_dtype,
                                  df11_stream stream, const char *fn);
/* Bytes of the op's decode scratch and of the fused path's workspace (each 256-aligned; 0,
 * 0 when no weight needs them) for arena slots of `slot` bytes, from the index alone: what
 * the first df11_weight_get takes from the pool, which the memory plan of a streaming
 * model keeps room for. */
df11_status df11i_rt_matmul_scratch_plan(const df11_model *m, uint64_t slot, uint64_t *scratch,
                                         uint64_t *ws);
/* Caps the op's decode scratch (bytes, rounded down to 256; never below a row of the
 * widest tensor) for models whose scratch is made after the call, process-wide, so that
 * tests can force the sliced decode path on small tensors. Returns the previous cap
 * (default UINT64_MAX: no cap). */
uint64_t df11i_rt_matmul_scratch_cap(uint64_t bytes);

/* runtime/tensors.c: tensor names. */
/* Indexes every tensor by name; DF11_ERR_DUPLICATE if a name appears twice. */
df11_status df11i_rt_names_index(df11_model *m);
/* The index of tensor `name`, or -1. */
int64_t df11i_rt_tensor_index(const df11_model *m, const char *name);

/* runtime/model_stats.c: the model's snapshot on its stats page (stats.h). */
/* Creates the page and writes the first snapshot; never fails the open: without a page,
 * m->stats_error says why. */
void df11i_rt_stats_publish_open(df11_model *m);
/* Writes a fresh snapshot; nothing without a page. The page goes at df11_model_close. */
void df11i_rt_stats_publish(df11_model *m);

#endif
