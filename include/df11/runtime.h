/* The df11 runtime: a model's weights held compressed in memory (VRAM on the CUDA backend,
 * host RAM on the host backend), decoded one transformer block at a time into a ring of
 * arena slots, on the runtime's own side stream, ahead of the engine's compute.
 *
 *     df11_model_options opt;
 *     df11_model_options_init(&opt);              // backend AUTO, 2 slots, ...
 *     df11_model *m;
 *     df11_model_open("llama.df11", &opt, &m);
 *     for (uint32_t b = 0; b < df11_model_n_blocks(m); b++) {
 *         df11_block_view blk;
 *         df11_block_acquire(m, b, stream, &blk);  // stream waits for b's decode; the
 *                                                  // next K-1 blocks start decoding
 *         df11_tensor_view q;
 *         df11_tensor_get(m, "model.layers.3.self_attn.q_proj.weight", stream, &q);
 *         ... enqueue the block's kernels on `stream`, reading q.data ...
 *         df11_block_release(m, b, stream);        // slot reusable once `stream` gets here
 *     }
 *     df11_model_close(m);
 *
 * Or, instead of reading tensors and running its own GEMM, an engine asks df11 for the
 * product, and a weight used only that way is never decoded into an arena slot:
 *
 *     df11_weight wq;                              // once, after open
 *     df11_weight_get(m, "model.layers.3.self_attn.q_proj.weight", &wq);
 *     ...
 *     df11_matmul(m, &wq, x, batch, y, DF11_DTYPE_BF16, stream);   // y = x·Wᵀ, on stream
 *
 * Streams: on the CUDA backend a df11_stream is a cudaStream_t (NULL = the legacy default
 * stream); on the host backend pass NULL, and work is ordered on the calling thread: every
 * call returns with its work done (a block's or tensor's data is decoded and ready to read
 * when df11_block_acquire or df11_tensor_get returns; a product is in y when df11_matmul
 * returns), so a host engine needs no synchronisation of its own.
 * No call on the hot path (acquire, release, prefetch, tensor_get, matmul) synchronises
 * the host with the device on the CUDA backend.
 *
 * Thread safety: one df11_model may be used by one thread at a time (calls on a model
 * are not internally locked). Different models may be used from different threads.
 */
#ifndef DF11_RUNTIME_H
#define DF11_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct df11_model df11_model;
typedef void *df11_stream;

typedef enum df11_backend_kind {
    DF11_BACKEND_AUTO = 0, /* CUDA when built with it and a GPU is present, else host */
    DF11_BACKEND_HOST = 1,
    DF11_BACKEND_CUDA = 2,
} df11_backend_kind;

/* Where non-layer groups (embeddings, final norm, lm_head) live (docs/RUNTIME.md, "Memory").
 * RESIDENT suits an engine that reads them with df11_tensor_get and has their BF16 size to
 * spare (2 GB on Llama-3-8B); COMPRESSED an engine on the ops (df11_rows_gather for the
 * embeddings, df11_matmul for lm_head), which keeps them compressed at no slot cost. */
typedef enum df11_nonlayer_policy {
    DF11_NONLAYER_RESIDENT = 0, /* decoded once at open and kept (costs their BF16 size) */
    DF11_NONLAYER_ARENA = 1,    /* kept compressed, decoded through the arena per use; slots
                                   are sized for the largest group, i.e. the embedding */
    /* Kept compressed, and the arena slots are sized by the layer blocks alone: an engine
     * reads embeddings with df11_rows_gather and multiplies by lm_head with df11_matmul
     * (which decodes it in row slices where it does not multiply from it directly).
     * df11_tensor_get serves a non-layer tensor through the arena when its group fits a
     * slot (a norm) and fails with DF11_ERR_UNSUPPORTED when it does not. */
    DF11_NONLAYER_COMPRESSED = 2,
} df11_nonlayer_policy;

typedef struct df11_model_options {
    size_t size; /* sizeof(df11_model_options), set by _init */
    df11_backend_kind backend;
    int device; /* CUDA device ordinal */
    /* K >= 2; or 0: no arena, for an engine that reads layer weights through the ops alone
     * (df11_block_acquire and a layer tensor's df11_tensor_get fail with
     * DF11_ERR_UNSUPPORTED; df11_matmul decodes what it does not fuse into its scratch;
     * df11_block_prefetch still brings a streamed block in). Frees K decoded blocks of
     * device memory. */
    uint32_t arena_slots;
    df11_nonlayer_policy nonlayer;
    uint64_t memory_limit; /* bytes the model may use; 0 = all that is free */
    int n_threads;         /* host decode threads; 0 = all cores */
    int publish_stats;     /* nonzero: publish stats for df11-memstat */
    /* Nonzero: the decode stream gets normal instead of the highest priority (CUDA; for
     * measuring what the priority buys, see docs/RUNTIME.md). */
    int decode_normal_priority;
    /* Blocks df11_block_acquire queues for decoding behind the acquired one: -1 (the
     * default) = arena_slots - 1; 0 = none (decode on demand only, e.g. to measure decode
     * and compute serialised). */
    int32_t prefetch_blocks;
    /* Nonzero: the fused matmul kernels (fixed-code and Huffman) are launched plainly
     * instead of with programmatic dependent launch (CUDA, sm_90; for measuring what PDL
     * buys, see docs/KERNELS.md). */
    int matmul_plain_launch;
    /* --- Larger than memory (docs/RUNTIME.md, "Tiers"): added after the matmul op. ---
     * memory_limit above is the device-memory budget. With host_budget or
     * stream_from_file set, layer blocks that do not fit it (after the arena, the staging
     * buffers, the non-layer groups and the plans) are not an error: they are kept
     * compressed in pinned host memory, up to host_budget bytes, and with stream_from_file
     * the rest stay in the file and are read (O_DIRECT, checksum-verified) on every pass.
     * Such blocks are copied into a ring of staging_slots device buffers ahead of their use,
     * in the order the engine acquires (or multiplies by) blocks, wrapping to block 0. */
    uint64_t host_budget;   /* pinned host bytes the model may hold: the host tier plus its I/O
                             buffers; 0 = no host tier, UINT64_MAX = as much as needed */
    int stream_from_file;   /* nonzero: blocks that fit neither budget are read from the file */
    uint32_t staging_slots; /* device buffers of the ring (2..DF11_MAX_STAGING); 0 = 3 */
    /* --- A range of blocks (added after the tiers): so that an engine can split one file
     * over several devices, one model per device. The model serves blocks [first_block,
     * first_block + block_count) (block_count 0 = to the last block) and loads only their
     * groups plus every non-layer group (each model of a split pays for the embeddings and
     * lm_head: see docs/RUNTIME.md, "A range of blocks"). Blocks keep the file's numbers;
     * a block outside the range, its tensors and its weights are DF11_ERR_NOT_FOUND.
     * Memory plans, tiers, prefetch (which wraps from the last served block to the first)
     * and stats cover the served blocks only. A range starting past the last block or
     * ending past it is DF11_ERR_INVALID_ARG at open. */
    uint32_t first_block;
    uint32_t block_count;
    /* --- An embedding in host memory (added after the block range) ---
     * The name of a non-layer tensor that the engine reads only with df11_rows_gather (the
     * token embedding, "model.embed_tokens.weight", when lm_head is not tied to it), to be
     * kept compressed in pinned host memory instead of device memory (counted in
     * host_budget, which must then be nonzero): its rows are decoded on the CPU and copied
     * in, on the gather's stream. It frees its compressed size of device memory (0.7 GB on
     * Llama-3-8B), for a budget that streams blocks. On the CUDA backend df11_matmul of it is
     * DF11_ERR_UNSUPPORTED. NULL: none. DF11_ERR_INVALID_ARG at open when it names no
     * non-layer BF16 matrix alone in its group, or under DF11_NONLAYER_RESIDENT. */
    const char *host_gather_tensor;
    /* --- Co-resident decode (added after the block range; docs/RUNTIME.md, "Co-resident
     * decode"): nonzero decode_lean decodes arena blocks (CUDA) with the lean persistent
     * decoder, decode_lean_ctas CTAs of 2 warps (0 = one per SM; at most
     * DF11_MAX_LEAN_CTAS), sized to run on the SMs of the engine's GEMMs rather than take
     * turns with them. Same bytes; off by default until it measures faster. The host
     * backend decodes as always. */
    int decode_lean;
    uint32_t decode_lean_ctas;
} df11_model_options;

/* The most CTAs options.decode_lean_ctas may ask for. */
#define DF11_MAX_LEAN_CTAS 65536

/* The most staging buffers a model's ring may have. */
#define DF11_MAX_STAGING 8

/* Where a block's compressed weights live (df11_model_plan, df11_model_block_tier). */
typedef enum df11_tier {
    DF11_TIER_DEVICE = 0, /* in device memory (host memory on the host backend) */
    DF11_TIER_HOST = 1,   /* in pinned host memory, copied in ahead of each use */
    DF11_TIER_FILE = 2,   /* in the file, read and copied in ahead of each use */
} df11_tier;

DF11_API void df11_model_options_init(df11_model_options *options);

typedef struct df11_tensor_view {
    const char *name; /* valid until close */
    df11_dtype dtype;
    uint32_t ndim;
    uint64_t shape[DF11_MAX_DIMS];
    uint64_t nbytes;
    int32_t layer; /* block, or -1 */
    void *data;    /* device pointer (CUDA) or host pointer (host) */
} df11_tensor_view;

typedef struct df11_block_view {
    uint32_t block;
    uint32_t n_tensors;
    const df11_tensor_view *tensors; /* valid until df11_block_release of this block */
} df11_block_view;

/* Opens a .df11 file and loads every group, compressed, into the backend's memory,
 * checking each group's xxh3. Fails cleanly (nothing leaked) on a corrupt file or if the
 * model does not fit (DF11_ERR_DEVICE_MEMORY, the detail names the shortfall). */
DF11_API df11_status df11_model_open(const char *path, const df11_model_options *options,
                                     df11_model **out);
/* Opens uncompressed BF16 weights (a .safetensors file or a Hugging Face folder) behind
 * the same API, every group resident and decoded: the baseline an engine compares
 * against (df11-run --bf16). df11_model_file() returns NULL for such a model; its
 * config.json is available from df11_model_config(). */
DF11_API df11_status df11_model_open_bf16(const char *path, const df11_model_options *options,
                                          df11_model **out);
DF11_API void df11_model_close(df11_model *model);
/* The source model's config.json text (not NUL-terminated), or NULL with *len = 0. */
DF11_API const char *df11_model_config(const df11_model *model, size_t *len);

DF11_API df11_backend_kind df11_model_backend(const df11_model *model);
/* The container's index: config.json (df11_file_metadata), tensor infos. Valid until
 * close. */
DF11_API const df11_file *df11_model_file(const df11_model *model);
/* The file's block count, whatever range the model serves (blocks keep the file's numbers). */
DF11_API uint32_t df11_model_n_blocks(const df11_model *model);
/* The blocks the model serves: [*first, *first + *count) (options.first_block and
 * block_count, the latter resolved: the whole file by default). */
DF11_API df11_status df11_model_block_range(const df11_model *model, uint32_t *first,
                                            uint32_t *count);

/* Enqueues block b's decode into a free slot on the side stream. Returns at once. */
DF11_API df11_status df11_block_prefetch(df11_model *model, uint32_t block);
/* The same, and if the decode has yet to be enqueued, it waits for the work the caller has
 * enqueued on `stream` so far, e.g. a block's first GEMM, so that the decode's CTAs reach
 * SMs only after the GEMM's have taken theirs (docs/RUNTIME.md, "Co-resident decode"; with
 * options.prefetch_blocks = 0, so that acquire queues nothing earlier). On the host backend
 * the wait is already over. */
DF11_API df11_status df11_block_prefetch_after(df11_model *model, uint32_t block,
                                               df11_stream stream);
/* Makes `stream` wait for block b's decode (prefetching it if nobody did), prefetches the
 * next K-1 blocks in order (options.prefetch_blocks; after the last block it wraps to
 * block 0, the next token's first), and fills `view` (may be NULL; its tensors in the
 * order given under "Tensors by id" below). DF11_ERR_BUSY at once, without waiting, if
 * every slot is held, by acquired blocks or by non-layer tensors under df11_tensor_get
 * (the detail names them); DF11_ERR_STATE if b is already acquired. A prefetch never evicts an acquired block or a pending prefetch. */
DF11_API df11_status df11_block_acquire(df11_model *model, uint32_t block, df11_stream stream,
                                        df11_block_view *view);
/* Records on `stream` the point after which block b's slot may be overwritten.
 * DF11_ERR_STATE if b is not acquired. */
DF11_API df11_status df11_block_release(df11_model *model, uint32_t block, df11_stream stream);

/* Looks a tensor up by name (df11_tensor_get_id: by id, without string work). A layer
 * tensor's block must be acquired (else DF11_ERR_STATE); its data is valid until that
 * block's release, and df11_tensor_release of it is a no-op. A non-layer tensor is held
 * from each df11_tensor_get to a matching df11_tensor_release under every policy (the gets
 * are counted; a release without a get is DF11_ERR_STATE), and its data is valid until
 * that release: under RESIDENT (and on a BF16 model) it lies decoded for the model's life
 * and holding it costs nothing; under ARENA (and COMPRESSED, if its group fits an arena
 * slot) it is decoded on `stream` into a slot, which it keeps until the last release
 * (DF11_ERR_BUSY, naming the holders, when every slot is held); under COMPRESSED a group
 * larger than a slot fails with DF11_ERR_UNSUPPORTED (read it with df11_rows_gather /
 * df11_matmul). */
DF11_API df11_status df11_tensor_get(df11_model *model, const char *name, df11_stream stream,
                                     df11_tensor_view *view);
DF11_API df11_status df11_tensor_release(df11_model *model, const char *name, df11_stream stream);

typedef struct df11_model_stats {
    size_t size;               /* sizeof(df11_model_stats) */
    uint64_t compressed_bytes; /* resident compressed payloads */
    uint64_t bf16_bytes;       /* what the same weights take decoded */
    uint64_t arena_bytes;      /* K slots */
    uint64_t resident_bytes;   /* decoded non-layer groups kept resident */
    uint64_t staging_bytes;    /* pinned/host staging used during open */
    uint64_t metadata_bytes;   /* tables, lookup tables on the device */
    uint64_t pool_high_water;  /* most bytes ever taken from the pool */
    uint32_t arena_slots;
    int32_t slot_block[16]; /* block held by each slot, -1 if none (first 16) */
    uint64_t decodes;       /* groups decoded */
    double decode_ms;       /* total decode time, where measured (host backend) */
    double open_ms;
    uint64_t pool_reserved; /* bytes the model holds from the backend now */
    uint64_t acquires;      /* successful df11_block_acquire calls */
    /* options.publish_stats: NULL while the page df11-memstat reads is published, else why
     * it could not be (no free page name, /dev/shm not writable, ...): stats are optional,
     * the model opened all the same. NULL without publish_stats. Valid until close. */
    const char *stats_page_error;
    /* --- Tiers and streaming (added after the matmul op) --- */
    uint32_t blocks_device, blocks_host, blocks_file; /* layer blocks in each tier */
    uint64_t host_tier_bytes;     /* compressed payloads kept in pinned host memory */
    uint64_t file_tier_bytes;     /* compressed payloads left in the file */
    uint64_t pinned_bytes;        /* pinned host memory held now: host tier and I/O buffers */
    uint64_t staging_ring_bytes;  /* the device buffers streamed blocks are copied into */
    uint64_t streamed_h2d_bytes;  /* bytes copied host → device for streamed blocks */
    uint64_t streamed_file_bytes; /* bytes read from the file for streamed blocks */
    uint64_t fetches;             /* streamed blocks brought in */
    double file_read_ms;          /* time the reads of streamed blocks took, end to end */
    double stall_ms;              /* time calls waited on the host for a streamed block's read */
    /* Why reads of the file go through pread instead of io_uring in this process (io_uring
     * unavailable: old kernel, seccomp), or NULL. Static. */
    const char *io_note;
    /* Why some pinned host memory (host tier, read buffers) is plain memory instead in this
     * process (the driver refused to pin it): slower copies, never wrong; or NULL. The
     * pinned bytes are locked where RLIMIT_MEMLOCK allows, and then counted by the kernel
     * too (VmLck in /proc/self/status). Static. */
    const char *host_memory_note;
} df11_model_stats;

/* Where block `block` lives (DF11_ERR_NOT_FOUND past the model's blocks or outside the
 * range it serves). */
DF11_API df11_status df11_model_block_tier(const df11_model *model, uint32_t block,
                                           df11_tier *tier);

/* What df11_model_open would place where under `options`, from the file's index alone:
 * nothing is read past it and no device memory is taken (df11-memstat FILE --vram-budget).
 * Bytes of device memory (arena, staging ring, non-layer groups, plans, layer payloads)
 * and of pinned host memory the model would hold, and what each link carries per pass
 * over the blocks. */
typedef struct df11_plan {
    size_t size;           /* set to sizeof(df11_plan) by the call */
    uint64_t device_limit; /* the budget planned against (memory_limit or free memory); 0 =
                              none known (host backend without a limit) */
    uint64_t device_bytes; /* all the device memory the model takes at open */
    uint64_t arena_bytes, staging_ring_bytes, nonlayer_bytes, metadata_bytes;
    uint64_t matmul_bytes; /* room kept for the matmul op's scratch when blocks stream */
    uint64_t device_tier_bytes, host_tier_bytes, file_tier_bytes; /* layer payloads */
    uint64_t pinned_bytes;                                        /* host tier plus I/O buffers */
    uint64_t h2d_per_pass;  /* host → device bytes per pass over the blocks */
    uint64_t file_per_pass; /* bytes read from the file per pass */
    uint32_t blocks_device, blocks_host, blocks_file;
    df11_backend_kind backend; /* the backend planned for: options' (AUTO resolved, as
                                  df11_model_open would: CUDA where a device is present).
                                  Added in what was the struct's tail padding, so size did
                                  not change: a field added after it must grow size. */
} df11_plan;

/* Fills *plan, and block_tiers[b] for each served block b < n_tiers (block_tiers may be
 * NULL with n_tiers 0; entries of blocks outside options' range are left as they are). Fails as df11_model_open would on the same file and options (a budget
 * too small names the minimum), without loading anything. */
DF11_API df11_status df11_model_plan(const char *path, const df11_model_options *options,
                                     df11_plan *plan, df11_tier *block_tiers, uint32_t n_tiers);

/* Fills the whole struct (stats->size is set to sizeof(df11_model_stats)). Cheap: no
 * device call. On a BF16 model, compressed_bytes and arena_bytes are 0 and every tensor
 * counts in resident_bytes. */
DF11_API df11_status df11_model_stats_get(const df11_model *model, df11_model_stats *stats);

/* --- The matmul op: y = x·Wᵀ on a weight kept compressed ---
 *
 * W is a 2-D BF16 tensor of N rows and K columns as Hugging Face stores a linear layer's
 * weight (out_features × in_features); x is batch × K BF16, y is batch × N, BF16 or F32,
 * all row-major and dense. Sums are accumulated in fp32 (a BF16 y is rounded once, to
 * nearest even, at the end). x and y are device pointers on the CUDA backend and host
 * pointers on the host backend, like tensor views' data; x and y must not overlap.
 *
 * Which path runs (docs/RUNTIME.md, "The matmul op"), chosen per call by the op itself:
 *   - W resident (a BF16 model, a non-layer tensor under the RESIDENT policy, or a tensor
 *     the file stores raw): a plain GEMM on W where it lies (CUDA: cublasGemmEx, BF16
 *     inputs, fp32 compute; host: the row kernel of the fused path below);
 *   - host backend, W Huffman-coded, or fixed-coded (EXP_FIXED, EXP_FIXED8) at batch 1..32:
 *     a fused decode-dot on options.n_threads threads, W decoded a few chunks (16-row
 *     strips) at a time into per-thread buffers, never whole; except a layer W where the
 *     arena has a slot for every served block: through the arena (below), where its block,
 *     decoded once, stays decoded for the products after;
 *   - CUDA backend, W fixed-coded (EXP_FIXED, EXP_FIXED8), batch 1..32 on sm_80+, 1..128 on
 *     Hopper where K % 8 == 0 (sm_90a code, the default build; its wgmma kernel from batch
 *     25; 1..32 for other K): a fused
 *     kernel multiplies straight from the compressed tensor, W decoded on chip and never
 *     written to global memory (fp32 accumulation, deterministic on a device; within the
 *     fp32 bound of, not bit-identical to, the cuBLAS result). Products of one model on one
 *     stream can be captured in a CUDA graph;
 *   - CUDA backend, W Huffman-coded with 64..256 symbols a lane (df11-compress
 *     --lane-symbols), K % 8 == 0, K >= 256, batch 1: a fused kernel decodes W and
 *     multiplies it on the CUDA cores, likewise never writing it to memory;
 *   - otherwise (CUDA: other Huffman products; either backend: W fixed-coded past those
 *     batches):
 *     through the arena. W's block is decoded into an arena slot on the side stream
 *     exactly as df11_block_acquire does it (the next blocks prefetched behind it), held
 *     for the product, and released on `stream`; the block stays cached, so a pass over a
 *     block's weights decodes it once.
 *     A block the engine holds is read in its slot (release it on the stream the products
 *     ran on, or after them). Such products count in stats.acquires. Only when every slot
 *     is held, or no slot can hold W (a non-layer W under DF11_NONLAYER_COMPRESSED), does
 *     W alone get decoded into the op's scratch buffer, in row slices where it is larger
 *     than the scratch. CUDA: cublasGemmEx on `stream`, events order decode and product,
 *     no host sync.
 * The result of a call does not depend on the path's partitioning: on the host backend y
 * is bit-identical for every n_threads, and a df11 model and the BF16 model of the same
 * weights give bit-identical y on the same backend (each row's dot product runs in one
 * fixed order on the same decoded weights), except where the CUDA fused path runs.
 *
 * A df11_weight is a small value the op checks on every call; copy it freely. It stays
 * valid until df11_model_close of its model, and does not need the tensor's block to be
 * acquired (a layer weight may be used through the op with or without its block). */
typedef struct df11_weight {
    uint64_t model;   /* which model it belongs to (an id, not a pointer) */
    uint32_t tensor;  /* the tensor's index in the model */
    uint32_t rows;    /* N: output features, shape[0] */
    uint32_t cols;    /* K: input features, shape[1] */
    const char *name; /* valid until close */
} df11_weight;

/* Resolves a weight for df11_matmul, once (not on the hot path). A 1-D tensor (a norm, a
 * bias) is one row: rows 1, cols its length, so that df11_rows_gather of row 0 reads its
 * values without an arena slot. DF11_ERR_NOT_FOUND if there is no such tensor,
 * DF11_ERR_DTYPE if it is not BF16, DF11_ERR_INVALID_ARG if it is neither 2-D nor 1-D or
 * is empty, DF11_ERR_OVERFLOW if a side exceeds INT32_MAX,
 * DF11_ERR_UNSUPPORTED where the backend has no matmul op. The first weight
 * that may need the decode path's fallback (CUDA backend: compressed W; host: a fixed-code
 * W, or a layer W where the arena has a slot for every served block) allocates the op's
 * scratch buffer, sized for the model's largest compressed 2-D BF16 tensor that fits an
 * arena slot (a larger one, e.g. lm_head under DF11_NONLAYER_COMPRESSED, is decoded into
 * it in row slices), from the model's pool under options.memory_limit
 * (DF11_ERR_DEVICE_MEMORY when it does not fit); on CUDA each such weight also gets its
 * decode plan on the device (a few KiB, uploaded with one host sync: df11_rows_gather
 * reads it on the caller's stream). */
DF11_API df11_status df11_weight_get(df11_model *model, const char *name, df11_weight *weight);

/* The most weights df11_weight_stack joins. */
#define DF11_MAX_STACK 8

/* A weight made of n (1..DF11_MAX_STACK) weights of this model with the same K, stacked by
 * rows: W = [W_0; W_1; ...], so that one df11_matmul gives y = x·Wᵀ = [x·W_0ᵀ | x·W_1ᵀ | ...]
 * (batch × ΣN_i, part i's outputs in the columns after those of the parts before it), as
 * engines that keep q, k, v (or gate, up) in one matrix expect. On the CUDA fused path the
 * parts are multiplied by one launch, which costs less than one launch each (a launch has
 * a fixed cost, and small matrices such as k and v cannot fill the GPU alone). Where the
 * parts are read decoded (a BF16 model; the decode path's arena slot; tensors stored raw)
 * and lie back to back, each part's rows right after the last's, they are one product over
 * one matrix, as BF16 engines keep q, k, v in one matrix: df11-compress and
 * df11_model_open_bf16 lay out a block's "<module>.q_proj.weight" followed by the same
 * module's "k_proj" and "v_proj", and "gate_proj" by "up_proj" (see the order inside a block
 * view, below). Otherwise each part takes its own path.
 * The weights stay where they are: nothing is copied. The
 * stacked weight's name is the parts' names joined by '+'. Not on the hot path: it may
 * allocate a larger workspace for the fused path (DF11_ERR_DEVICE_MEMORY when it does
 * not fit) and synchronise. DF11_ERR_INVALID_ARG for n out of range, a weight of another
 * model or not as returned, a stacked part, a 1-D part, or columns that differ; DF11_ERR_OVERFLOW
 * when the rows add up past INT32_MAX. */
DF11_API df11_status df11_weight_stack(df11_model *model, uint32_t n, const df11_weight *parts,
                                       df11_weight *stacked);

/* y = x·Wᵀ (see above). y_dtype: DF11_DTYPE_BF16 or DF11_DTYPE_F32.
 * CUDA: enqueued on `stream` and returns without waiting; x must be ready on `stream` and
 * y is ready when `stream` reaches this point; x may be reused and y read by work queued
 * on `stream` afterwards. The op's scratch buffer is shared by the model's calls, which
 * the runtime orders by events: calls on different streams are correct but serialise.
 * Host: `stream` must be NULL; the product is computed before the call returns.
 * K and N come from the weight: x must hold batch × K BF16 and y batch × N, which bare
 * pointers cannot show (df11_matmul_checked, below, takes both shapes and checks them).
 * Bad input fails before anything is enqueued: DF11_ERR_INVALID_ARG for a NULL model,
 * weight, x or y, batch 0, a y_dtype other than BF16/F32, a non-NULL stream on the host
 * backend, a weight that is not one of this model's (another model's, out of range, or
 * altered), a 1-D weight (a norm, a bias: df11_rows_gather reads those), or x and y
 * overlapping; DF11_ERR_OVERFLOW when batch × K or batch × N bytes would not fit size_t
 * or batch exceeds INT32_MAX. */
DF11_API df11_status df11_matmul(df11_model *model, const df11_weight *weight, const void *x,
                                 uint32_t batch, void *y, df11_dtype y_dtype, df11_stream stream);

/* A dense row-major matrix in backend memory (device memory on the CUDA backend, host
 * memory on the host backend): an operand of df11_matmul_checked. */
typedef struct df11_matrix {
    void *data;
    uint32_t rows, cols;
    df11_dtype dtype;
} df11_matrix;

/* df11_matmul with the operands' shapes stated, so that a wrong buffer is refused instead of
 * read or written out of bounds: x is batch × K BF16 and y batch × N (BF16 or F32), batch =
 * x->rows, K and N the weight's cols and rows. Before anything is enqueued it refuses what
 * df11_matmul refuses (its x, y, y_dtype: x->data, y->data, y->dtype), and also: a NULL x
 * or y (DF11_ERR_INVALID_ARG), an x that is not BF16 (DF11_ERR_DTYPE), and shapes that do
 * not match (x's columns other than K, y's other than N, or rows that differ:
 * DF11_ERR_INVALID_ARG, the detail naming all three shapes). Where several apply, the one
 * reported is the first found. A few compares a call more than df11_matmul. */
DF11_API df11_status df11_matmul_checked(df11_model *model, const df11_weight *weight,
                                         const df11_matrix *x, const df11_matrix *y,
                                         df11_stream stream);

/* --- Row gather: out[i] = W[ids[i]], e.g. token embeddings ---
 *
 *     df11_weight emb;                             // once, after open
 *     df11_weight_get(m, "model.embed_tokens.weight", &emb);
 *     ...
 *     df11_rows_gather(m, &emb, tokens, n_tokens, h, DF11_DTYPE_BF16, stream);  // h: n x K
 *
 * W is a weight resolved by df11_weight_get (rows x cols BF16). Only the rows asked for
 * are decoded, never the whole tensor, and nothing goes through the arena: a resident or
 * raw W is copied row by row; a fixed-code W decodes the 16-row strip holding each row; a
 * Huffman W decodes the chunks covering each row (C = 32 x lane_symbols weights each: at
 * most ceil(K / C) + 1 chunks a row). out is n x cols, BF16
 * (the exact bits of W) or F32 (exactly those values), in backend memory like
 * df11_matmul's y. ids may repeat and come in any order.
 * ids are host memory, read before the call returns (the caller may reuse them at once):
 * every id is checked against W's rows first, and DF11_ERR_INVALID_ARG names the first
 * bad one with nothing enqueued; also for a NULL model, weight, ids or out, n = 0, an
 * out_dtype other than BF16/F32, a non-NULL stream on the host backend, a weight that is
 * not this model's, or a stacked one (gather from its parts). DF11_ERR_OVERFLOW when n x cols x 4 would not fit size_t.
 * CUDA: enqueued on `stream` (the ids travel as kernel parameters, 768 a launch), returns
 * without waiting; out is ready when `stream` gets there. Host: `stream`
 * must be NULL; the rows are written before the call returns. Works under every
 * non-layer policy and on BF16 models. */
DF11_API df11_status df11_rows_gather(df11_model *model, const df11_weight *weight,
                                      const uint32_t *ids, uint32_t n, void *out,
                                      df11_dtype out_dtype, df11_stream stream);

/* --- Tensors by id: names resolved once ---
 *
 *     uint32_t wq[L];                              // once, after open
 *     for (l = 0; l < L; l++) df11_tensor_id(m, name_of(l, "self_attn.q_proj.weight"), &wq[l]);
 *     ...
 *     df11_tensor_get_id(m, wq[l], stream, &q);    // no string work on the hot path
 *
 * A tensor's id is its index in the model: 0 .. df11_model_n_tensors() - 1, fixed for the
 * model's life (for a .df11 model, the file's tensor index: df11_file_tensor(file, id)).
 * The tensors of one block have consecutive ids, in the order of the block view:
 * view.tensors[i] has id (the id of view.tensors[0]) + i.
 *
 * Order inside a block view (a guarantee): the order the model stores the block's tensors,
 * which is ascending data address in the decoded block; for a .df11 file the file's tensor
 * order. df11-compress (older files keep their input order throughout) and
 * df11_model_open_bf16 store a block's tensors in the order of their input
 * (the safetensors files'), except that each "<module>.q_proj.weight" is followed at once
 * by the same module's "k_proj.weight" and "v_proj.weight", and each "gate_proj.weight" by
 * its "up_proj.weight", so that a stacked product over them is one matrix
 * (df11_weight_stack). Before this version a BF16 model kept the safetensors order
 * throughout. It is not sorted by name: look tensors up by id or name. */
DF11_API uint32_t df11_model_n_tensors(const df11_model *model);
/* The id of tensor `name`: DF11_ERR_NOT_FOUND if the model has none of that name. */
DF11_API df11_status df11_tensor_id(const df11_model *model, const char *name, uint32_t *id);
/* df11_tensor_get and df11_tensor_release by id, with the same rules;
 * DF11_ERR_NOT_FOUND for an id past the model's tensors. */
DF11_API df11_status df11_tensor_get_id(df11_model *model, uint32_t id, df11_stream stream,
                                        df11_tensor_view *view);
DF11_API df11_status df11_tensor_release_id(df11_model *model, uint32_t id, df11_stream stream);

/* --- Hyperparameters: the model's config.json, parsed and checked ---
 *
 *     df11_hparams h;
 *     h.size = sizeof h;                           // the caller's version of the struct
 *     if (df11_model_hparams(m, &h) == DF11_OK)
 *         ... h.hidden_size, h.n_heads, h.head_dim, h.rope_theta, h.rope.type ...
 *
 * config.json is outside input: every field read is type- and range-checked, and a field
 * present with the wrong type is an error, not its default. What the struct holds is safe
 * to multiply in 64-bit (every size is at most DF11_HPARAMS_MAX_DIM). */

/* Limits far above any real model. */
#define DF11_HPARAMS_MAX_DIM (1u << 24) /* hidden, intermediate, vocab, heads × head_dim */
#define DF11_HPARAMS_MAX_LAYERS 4096u
#define DF11_HPARAMS_MAX_POSITIONS (1u << 26) /* max_position_embeddings */
#define DF11_HPARAMS_MAX_EOS 8                /* eos ids kept from a list */

/* rope_scaling's "rope_type" (or older "type"); rope_parameters (newer transformers) is
 * read the same way. NONE also for "default". */
typedef enum df11_rope_type {
    DF11_ROPE_NONE = 0,
    DF11_ROPE_LINEAR = 1,  /* positions divided by factor */
    DF11_ROPE_DYNAMIC = 2, /* dynamic NTK: factor */
    DF11_ROPE_LLAMA3 = 3,  /* factor, low/high_freq_factor, original_max_positions */
    DF11_ROPE_YARN = 4,    /* factor, beta_fast/slow, attention_factor, original_max_pos.. */
    DF11_ROPE_OTHER = 5,   /* a type this version does not know: see rope.name */
} df11_rope_type;

typedef struct df11_rope_scaling {
    df11_rope_type type;
    char name[32];                           /* the type as config.json spells it; "" for NONE */
    float factor;                            /* > 0; 1 for NONE */
    float low_freq_factor, high_freq_factor; /* LLAMA3 (> 0, low < high); else 0 */
    float beta_fast, beta_slow;              /* YARN (default 32 and 1); else 0 */
    float attention_factor; /* YARN: as given, 0 when absent (derive it: 0.1 ln f + 1) */
    /* original_max_position_embeddings: LLAMA3 (required), YARN (else max_positions);
     * else 0. */
    uint32_t original_max_positions;
} df11_rope_scaling;

typedef struct df11_hparams {
    size_t size;                /* set by the caller to sizeof(df11_hparams) before the call */
    char model_type[64];        /* "llama", "qwen2", ...; "" when absent */
    char architecture[64];      /* architectures[0], e.g. "LlamaForCausalLM"; "" when absent */
    uint32_t hidden_size;       /* required */
    uint32_t intermediate_size; /* required */
    uint32_t n_layers;          /* num_hidden_layers, required */
    uint32_t n_heads;           /* num_attention_heads, required */
    uint32_t n_kv_heads;        /* num_key_value_heads; n_heads when absent; divides it */
    uint32_t head_dim;          /* head_dim, else hidden_size / n_heads (exactly); even */
    int head_dim_explicit;      /* nonzero when config.json gave head_dim */
    uint32_t vocab_size;        /* required */
    uint32_t max_positions;     /* max_position_embeddings; 2048 when absent */
    float rms_norm_eps;         /* > 0 and finite as a float; 1e-6 when absent */
    float rope_theta;           /* > 0 and finite as a float; 10000 when absent */
    df11_rope_scaling rope;
    int tie_word_embeddings;  /* nonzero: lm_head is embed_tokens; false when absent */
    int32_t bos_token_id;     /* -1 when absent or negative; else < vocab_size */
    int32_t eos_token_id;     /* the first of eos_token_ids, or -1 */
    uint32_t n_eos_token_ids; /* eos_token_id may be a list (Llama 3): the first 8 */
    int32_t eos_token_ids[DF11_HPARAMS_MAX_EOS];
    uint32_t sliding_window; /* 0 when absent or null (Mistral: the window) */
    int attention_bias;      /* attention_bias: nonzero when true */
    char hidden_act[32];     /* hidden_act (or hidden_activation), e.g. "silu"; "" when absent */
} df11_hparams;

/* Parses a Hugging Face config.json of `len` bytes (any bytes: not NUL-terminated, maybe
 * not JSON) into *h, whose size the caller has set (a struct from an older header is
 * filled up to its size). DF11_ERR_CORRUPT, the detail naming the field, for text that is
 * not a JSON object, a required field missing, a field of the wrong type or out of range
 * (sizes 1..DF11_HPARAMS_MAX_*, ids below vocab_size), hidden_size not a multiple of
 * num_attention_heads without head_dim, num_attention_heads not a multiple of
 * num_key_value_heads, an odd head_dim, or rope scaling parameters its type needs that
 * are missing or not positive; DF11_ERR_INVALID_ARG for a NULL argument or h->size below
 * the first version's. On failure *h is unspecified. */
DF11_API df11_status df11_hparams_parse(const char *json, size_t len, df11_hparams *h);

/* df11_hparams_parse of the model's config.json (df11_model_config); DF11_ERR_NOT_FOUND
 * when the model has none (a .df11 written without one, a lone .safetensors file). */
DF11_API df11_status df11_model_hparams(const df11_model *model, df11_hparams *h);

/* --- Conversions: BF16 to F32 / F16 and F32 to BF16 ---
 *
 * For an engine that computes in F32 or F16 on weights served as BF16 (tensor views, the
 * BF16 results of df11_rows_gather and df11_matmul), and that hands df11_matmul its BF16
 * x. BF16 → F32 is exact (every bit kept, NaN payloads included). BF16 → F16 and F32 →
 * BF16 round to nearest, ties to even: values past the target's range become ±Inf, tiny
 * ones subnormals or ±0, and a NaN stays a NaN of the same sign (quiet; its top payload
 * bits kept). The CUDA path gives the same bits as the host functions.
 *
 * The host functions take host memory and return DF11_ERR_INVALID_ARG for a NULL pointer
 * with n > 0; src and dst must not overlap. */
DF11_API df11_status df11_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
DF11_API df11_status df11_bf16_to_f16(const uint16_t *src, uint16_t *dst, size_t n);
DF11_API df11_status df11_f32_to_bf16(const float *src, uint16_t *dst, size_t n);

/* The same on a backend's memory: n values of src_dtype at src to dst_dtype at dst, for
 * BF16 → F32, BF16 → F16 and F32 → BF16 (else DF11_ERR_UNSUPPORTED). backend is
 * DF11_BACKEND_HOST or DF11_BACKEND_CUDA (df11_model_backend of the model whose memory
 * the engine uses; AUTO is DF11_ERR_INVALID_ARG). CUDA: src and dst are device memory
 * of the current device, the conversion is enqueued on `stream` (a cudaStream_t, NULL the
 * legacy default stream) and the call returns without waiting; dst is ready when `stream`
 * gets there. A build without CUDA returns DF11_ERR_UNSUPPORTED. Host: `stream` must be
 * NULL, and dst is written before the call returns. */
DF11_API df11_status df11_convert(df11_backend_kind backend, const void *src, df11_dtype src_dtype,
                                  void *dst, df11_dtype dst_dtype, size_t n, df11_stream stream);

/* The provider interface: an engine that takes a df11_provider depends on nothing else
 * of df11. df11_model_provider() fills one that forwards to the calls above. */
typedef struct df11_provider {
    size_t size; /* sizeof(df11_provider) */
    void *ctx;
    uint32_t (*n_blocks)(void *ctx);
    df11_status (*block_acquire)(void *ctx, uint32_t block, df11_stream stream,
                                 df11_block_view *view);
    df11_status (*block_release)(void *ctx, uint32_t block, df11_stream stream);
    df11_status (*tensor_get)(void *ctx, const char *name, df11_stream stream,
                              df11_tensor_view *view);
    df11_status (*tensor_release)(void *ctx, const char *name, df11_stream stream);
    /* Added after the first version: check provider.size before use. May be NULL. */
    df11_status (*block_prefetch)(void *ctx, uint32_t block);
    /* Added with the matmul op: check provider.size before use. May be NULL. */
    df11_status (*weight_get)(void *ctx, const char *name, df11_weight *weight);
    df11_status (*matmul)(void *ctx, const df11_weight *weight, const void *x, uint32_t batch,
                          void *y, df11_dtype y_dtype, df11_stream stream);
    /* Added with stacked weights: check provider.size before use. May be NULL. */
    df11_status (*weight_stack)(void *ctx, uint32_t n, const df11_weight *parts,
                                df11_weight *stacked);
    /* Added with the row gather: check provider.size before use. May be NULL. */
    df11_status (*rows_gather)(void *ctx, const df11_weight *weight, const uint32_t *ids,
                               uint32_t n, void *out, df11_dtype out_dtype, df11_stream stream);
    /* Added with tensor ids: check provider.size before use. May be NULL. */
    df11_status (*tensor_id)(void *ctx, const char *name, uint32_t *id);
    df11_status (*tensor_get_id)(void *ctx, uint32_t id, df11_stream stream,
                                 df11_tensor_view *view);
    df11_status (*tensor_release_id)(void *ctx, uint32_t id, df11_stream stream);
} df11_provider;

DF11_API df11_status df11_model_provider(df11_model *model, df11_provider *provider);

#ifdef __cplusplus
}
#endif
#endif
