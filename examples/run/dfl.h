/* A small Llama-architecture inference engine (Llama, Mistral, Qwen2 and Qwen3 configs; see
 * docs/ENGINE.md, "Model families") that gets every weight through df11's provider
 * interface (df11_provider, include/df11/runtime.h). It knows nothing else of df11: the
 * same code runs on compressed weights (df11_model_open) and on plain BF16
 * (df11_model_open_bf16), and a test can feed it from memory.
 *
 *     dfl_config cfg;
 *     dfl_config_parse(json, len, &cfg, err, sizeof err);
 *     df11_provider p;
 *     df11_model_provider(model, &p);
 *     dfl_options opt;
 *     dfl_options_init(&opt);                 // host, max_seq = config's
 *     dfl_engine *e;
 *     dfl_create(&cfg, &p, &opt, &e);
 *     float *logits = malloc(cfg.vocab_size * sizeof(float));
 *     dfl_forward(e, prompt, n_prompt, 0, logits);   // prefill, logits of the last
 *     dfl_forward(e, &next, 1, n_prompt, logits);    // one decode step
 *     dfl_destroy(e);
 *
 * Weights are BF16 [out, in] row-major with Hugging Face names. The linear layers run
 * through the provider's matmul op (df11_matmul; the default when the provider has it: a
 * weight used that way needs no acquired block) or, on the engine path, as the engine's
 * own GEMM on tensor views of acquired blocks (dfl_options.matmul). The embedding rows of
 * a pass come from the provider's row gather (df11_rows_gather) where it has one, on
 * either path, else from a tensor view; so on the op path no non-layer tensor is read as
 * a view except model.norm (copied once at create), and the model may keep the embedding
 * and lm_head compressed (DF11_NONLAYER_COMPRESSED). The engine path reads lm_head as a
 * view, which needs them resident (DF11_NONLAYER_RESIDENT). The host path keeps
 * activations in FP32 (the op path rounds each linear layer's input to BF16, as the op
 * takes it) and accumulates every dot product in FP32 in a fixed order, so the logits
 * depend only on the weight bits (not on the thread count or the batch split): df11 and
 * BF16 weights give bit-identical logits on either path. The CUDA path (built with
 * DF11_HAVE_CUDA) keeps the residual stream in FP32 and feeds BF16 operands to the op or
 * to cuBLAS, FP32 accumulation.
 *
 * Not thread-safe: one engine, one thread. The engine does not own the provider.
 */
#ifndef DF11_RUN_DFL_H
#define DF11_RUN_DFL_H

#include <stddef.h>
#include <stdint.h>

#include <df11.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dfl_rope_type {
    DFL_ROPE_DEFAULT = 0,
    DFL_ROPE_LINEAR,  /* positions divided by factor */
    DFL_ROPE_DYNAMIC, /* NTK: base grown once a pass reaches past max_position_embeddings */
    DFL_ROPE_LLAMA3,  /* Llama 3.1: low frequencies divided by factor, a smooth band between */
    DFL_ROPE_YARN,    /* NTK-by-parts ramp between interpolation and extrapolation, mscale */
} dfl_rope_type;

typedef struct dfl_config {
    int dim;        /* hidden_size */
    int n_layers;   /* num_hidden_layers */
    int n_heads;    /* num_attention_heads */
    int n_kv_heads; /* num_key_value_heads (= n_heads without GQA) */
    int head_dim;   /* head_dim, or dim / n_heads */
    int hidden_dim; /* intermediate_size */
    int vocab_size;
    int max_pos; /* max_position_embeddings */
    float rope_theta;
    float norm_eps;     /* rms_norm_eps */
    int tied;           /* tie_word_embeddings: lm_head is embed_tokens */
    int bos_id, eos_id; /* -1 if absent */
    /* rope_scaling or rope_parameters (HF's rope_init_functions; the defaults are HF's) */
    dfl_rope_type rope_type;
    float rope_factor;      /* linear, dynamic, llama3, yarn */
    float rope_low_freq;    /* llama3 low_freq_factor */
    float rope_high_freq;   /* llama3 high_freq_factor */
    float rope_beta_fast;   /* yarn */
    float rope_beta_slow;   /* yarn */
    float rope_attn_factor; /* yarn: cos and sin are scaled by it (1 otherwise) */
    int rope_orig_max;      /* llama3, yarn: original_max_position_embeddings */
    int sliding_window;     /* Mistral: a token sees the last sliding_window positions; 0 all */
    int qkv_bias;           /* q/k/v_proj.bias per layer (Qwen2, attention_bias) */
    int o_bias;             /* o_proj.bias per layer (attention_bias) */
    int qk_norm; /* Qwen3: self_attn.q_norm, k_norm.weight per layer ([head_dim] each), an
                    RMSNorm of every q and k head after the projections, before RoPE */
} dfl_config;

/* Limits on config.json: far above any real model, low enough that the engine's products
 * of them (n_heads * head_dim in int, layers * positions * kv features in size_t) cannot
 * overflow. */
#define DFL_MAX_DIM (1 << 20) /* hidden, intermediate, vocab, heads * head_dim */
#define DFL_MAX_LAYERS 4096
#define DFL_MAX_POSITIONS (1 << 24) /* max_position_embeddings */

/* Parses a Hugging Face config.json: `len` bytes that may be anything (not NUL-terminated,
 * not JSON). Returns 0, or -1 with a message in err (may be NULL). Rejects what the engine
 * cannot run or would run into NaN: a size field that is missing (where it has no default),
 * not an integer, non-positive or over the limits above; rms_norm_eps or rope_theta not a
 * positive finite float; hidden_size not a multiple of num_attention_heads (when head_dim
 * is absent); heads not a multiple of kv heads; an odd head_dim; bos/eos ids not below
 * vocab_size; hidden_act other than silu; a rope_scaling type other than linear, dynamic,
 * llama3 or yarn, or one with a missing or non-positive factor (llama3: low_freq_factor
 * below high_freq_factor); partial_rotary_factor other than 1; mlp_bias; Qwen2's and
 * Qwen3's use_sliding_window, or layer_types other than full_attention (per-layer
 * windows); a model_type other than llama, mistral, qwen2, qwen3 (absent is llama). A
 * config with fewer layers than
 * the weights have blocks parses (it runs the first layers); dfl_create refuses more. */
int dfl_config_parse(const char *json, size_t len, dfl_config *cfg, char *err, size_t errlen);

typedef enum dfl_device {
    DFL_DEVICE_CPU = 0,
    DFL_DEVICE_CUDA = 1, /* the provider must serve device pointers */
} dfl_device;

/* Who multiplies the linear layers (q, k, v, o, gate, up, down, lm_head). */
typedef enum dfl_matmul {
    DFL_MATMUL_AUTO = 0, /* DFL_MATMUL_OP when the provider has weight_get and matmul, else
                            DFL_MATMUL_ENGINE */
    /* provider->matmul (df11_matmul); dfl_create fails without it. q+k+v and gate+up are
     * stacked (provider->weight_stack) into one call each where the provider can, else
     * as DFL_MATMUL_OP_SEPARATE. */
    DFL_MATMUL_OP = 1,
    DFL_MATMUL_ENGINE = 2,      /* tensor views of acquired blocks and the engine's own GEMM */
    DFL_MATMUL_OP_SEPARATE = 3, /* provider->matmul, one call per weight */
} dfl_matmul;

/* Which attention kernel the CUDA path runs (the host path has one and ignores this). */
typedef enum dfl_attention {
    DFL_ATTENTION_AUTO = 0,  /* split for decode passes (up to DFL_ATTENTION_SPLIT_MAX_N
                                tokens) where it runs; mma for longer passes (on an H100 it
                                beat naive and tiled at every length measured,
                                bench/RESULTS.md); else tiled for a pass of
                                DFL_ATTENTION_TILED_MIN tokens or more, a context of
                                DFL_ATTENTION_LONG_CTX positions or more, or one too long for
                                the naive kernel's shared memory; otherwise naive */
    DFL_ATTENTION_NAIVE = 1, /* one block per (head, token) over the cache, FP32: fine for
                                decode, slow for a long prefill (each block reads the whole
                                context) */
    DFL_ATTENTION_TILED = 2, /* flash-style: 64 query tokens per block share each K/V tile;
                                FP32 on the CUDA cores; head_dim <= DFL_ATTENTION_TILED_MAX_HD */
    DFL_ATTENTION_MMA = 3,   /* the same tiling with Q·Kᵀ and P·V on the tensor cores (BF16
                                operands, FP32 sums, as the engine's other products); sm_80+,
                                head_dim <= DFL_ATTENTION_MMA_MAX_HD */
    DFL_ATTENTION_SPLIT = 4, /* decode: each token's context split into ranges, a block per
                                (kv head, range, token) serving the kv head's query group,
                                the ranges merged by the last block; FP32. Passes of up to
                                DFL_ATTENTION_SPLIT_MAX_N tokens, head_dim up to
                                DFL_ATTENTION_SPLIT_MAX_HD, up to
                                DFL_ATTENTION_SPLIT_MAX_GROUP heads per kv head (the default
                                max_batch is then DFL_ATTENTION_SPLIT_MAX_N) */
} dfl_attention;
#define DFL_ATTENTION_TILED_MIN 16
#define DFL_ATTENTION_LONG_CTX 1024
#define DFL_ATTENTION_TILED_MAX_HD 256
#define DFL_ATTENTION_MMA_MAX_HD 128
#define DFL_ATTENTION_SPLIT_MAX_N 8
#define DFL_ATTENTION_SPLIT_MAX_HD 256
#define DFL_ATTENTION_SPLIT_MAX_GROUP 16
#define DFL_ATTENTION_SPLIT_MAX_RANGES 64

typedef struct dfl_options {
    dfl_device device;
    int max_seq;   /* KV cache positions; 0 = config's max_pos */
    int max_batch; /* tokens per pass (longer inputs are split); 0 = a default
                      (DFL_ATTENTION_SPLIT_MAX_N where attention is DFL_ATTENTION_SPLIT) */
    int n_threads; /* host threads; 0 = all cores */
    dfl_matmul matmul;
    dfl_attention attention; /* CUDA path only */
    int plain_launch;        /* CUDA path: launch the engine's kernels without programmatic
                         dependent launch (to measure what it buys; the op's fused kernel
                         has the model's matmul_plain_launch) */
} dfl_options;

void dfl_options_init(dfl_options *opt);

/* The attention kind's name as df11-run spells it ("auto", "naive", "tiled", "mma",
 * "split"), or NULL for a value that is no kind. */
const char *dfl_attention_name(dfl_attention kind);

typedef struct dfl_engine dfl_engine;

/* Allocates the KV cache and scratch (host or device). Returns DF11_OK, or an error with
 * dfl_create_error() set. */
df11_status dfl_create(const dfl_config *cfg, const df11_provider *provider, const dfl_options *opt,
                       dfl_engine **out);
/* Split over several GPUs: one provider per GPU, each serving a contiguous range of
 * layers (a df11 model opened with that device and block range). The layers run on the GPU
 * holding them, each with its own KV cache, stream, cuBLAS handle and scratch; the hidden
 * state is copied to the next GPU between ranges (peer to peer where the GPUs allow it,
 * else the driver stages it through host memory). The embedding runs on the first GPU,
 * the final norm and lm_head on the last. The arithmetic per layer is that of one GPU,
 * so the logits are bit for bit those of dfl_create on one GPU of the same kind. */
#define DFL_MAX_STAGES 8
typedef struct dfl_stage {
    const df11_provider *provider; /* serves blocks [first_layer, first_layer + n_layers) */
    int device;                    /* the CUDA ordinal of the provider's memory (-1: current) */
    int first_layer, n_layers;
} dfl_stage;
/* opt->device must be DFL_DEVICE_CUDA; 1..DFL_MAX_STAGES stages that cover layers
 * 0..cfg->n_layers - 1 in order, none empty (else DF11_ERR_INVALID_ARG, with
 * dfl_create_error() set). dfl_create with DFL_DEVICE_CUDA is one stage of every layer on
 * the current device. Each GPU's work is enqueued with its device made current. */
df11_status dfl_create_split(const dfl_config *cfg, const dfl_stage *stages, int n_stages,
                             const dfl_options *opt, dfl_engine **out);
/* Why the last dfl_create on this thread failed. */
const char *dfl_create_error(void);
void dfl_destroy(dfl_engine *e);

/* Runs tokens[0..n) at positions [pos, pos+n): on the engine path every block is acquired
 * once per pass (on the op path none is: the provider multiplies), their K/V are written to the cache (positions >= pos are overwritten, so going back to
 * an earlier pos rewinds the sequence) and the logits of the last token are written to
 * `logits` (vocab_size floats, host memory). `logits` may be NULL. */
df11_status dfl_forward(dfl_engine *e, const int *tokens, int n, int pos, float *logits);
/* The message of the last failed call on this engine. */
const char *dfl_error(const dfl_engine *e);

const dfl_config *dfl_get_config(const dfl_engine *e);
uint64_t dfl_kv_bytes(const dfl_engine *e);      /* KV cache */
uint64_t dfl_scratch_bytes(const dfl_engine *e); /* activations, tables */
int dfl_max_seq(const dfl_engine *e);
/* What dfl_create chose: DFL_MATMUL_OP (stacked calls), DFL_MATMUL_OP_SEPARATE or
 * DFL_MATMUL_ENGINE. */
dfl_matmul dfl_matmul_used(const dfl_engine *e);
/* Nonzero when the engine reads embedding rows with the provider's row gather (it has
 * one), 0 when from a tensor view of the whole table. */
int dfl_embed_gathered(const dfl_engine *e);
/* Stages (GPUs) the engine runs on: 1 on the host and on one GPU. */
int dfl_n_stages(const dfl_engine *e);
/* What stage i's GPU holds of the engine's memory (KV cache of its layers, scratch). */
uint64_t dfl_stage_kv_bytes(const dfl_engine *e, int stage);
uint64_t dfl_stage_scratch_bytes(const dfl_engine *e, int stage);

/* ---- Shared by the host and CUDA paths (dfl.c), not part of the engine's API ---- */

typedef struct dfl_layer_weights {
    const void *attn_norm, *wq, *wk, *wv, *wo; /* BF16 */
    const void *ffn_norm, *w_gate, *w_up, *w_down;
    const void *bq, *bk, *bv, *bo; /* BF16 biases; NULL where the config has none */
    const void *q_norm, *k_norm;   /* BF16 [head_dim] (Qwen3); NULL without qk_norm */
} dfl_layer_weights;

/* Finds block `layer`'s nine tensors, and the biases and q/k norms the config has, in
 * `view` (or through the provider), checking dtype and shape. */
df11_status dfl_layer_weights_get(const dfl_config *cfg, const df11_provider *p, uint32_t layer,
                                  const df11_block_view *view, df11_stream stream,
                                  dfl_layer_weights *w, char *err, size_t errlen);
/* Gets a non-layer BF16 tensor of shape [rows, cols] (cols = 0: 1-D of rows). */
df11_status dfl_tensor_get(const df11_provider *p, const char *name, int rows, int cols,
                           df11_stream stream, const void **data, char *err, size_t errlen);
/* The op path's weights: every linear layer resolved once (provider->weight_get), shapes
 * checked against the config. */
typedef struct dfl_layer_linears {
    df11_weight wq, wk, wv, wo, w_gate, w_up, w_down;
    /* stacked (dfl_linears.stacked): y = [q | k | v] and [gate | up] per token row */
    df11_weight qkv, gate_up;
} dfl_layer_linears;

typedef struct dfl_linears {
    dfl_layer_linears *layers; /* [n_layers] */
    df11_weight lm_head;       /* lm_head.weight, or model.embed_tokens.weight when tied */
    int stacked;               /* qkv and gate_up are set and used */
} dfl_linears;

/* Nonzero when the provider is recent enough to have weight_get and matmul (weight_stack;
 * weight_get and rows_gather), and has them. */
int dfl_provider_has_matmul(const df11_provider *p);
int dfl_provider_has_stack(const df11_provider *p);
int dfl_provider_has_gather(const df11_provider *p);
/* Layers [first, end) (the others' entries stay zero) and, with head, lm_head. stack: also
 * stack q+k+v and gate+up (the provider must have weight_stack). */
df11_status dfl_linears_get(const dfl_config *cfg, const df11_provider *p, int stack, int first,
                            int end, int head, dfl_linears *out, char *err, size_t errlen);
void dfl_linears_free(dfl_linears *l);

/* The op path keeps a block's 1-D tensors (tiny) in its own buffer, so that no block is
 * acquired per pass: norms = [n_layers][2][dim] (input_layernorm,
 * post_attention_layernorm), model.norm's [dim], then per layer the vectors the config
 * adds, BF16, in this order: q | k | v biases (the stacked q|k|v row's order), o bias,
 * q_norm, k_norm. dfl_norms_copy reads them at create (not on the hot path) by the
 * provider's row gather, or else acquires each block once, checks the block's tensors,
 * has `copy` move each vector into `dst` (host or device memory) on `stream` and releases
 * the block on `stream`. */
typedef df11_status (*dfl_copy_fn)(void *ctx, void *dst, const void *src, size_t bytes,
                                   df11_stream stream, char *err, size_t errlen);
size_t dfl_norms_count(const dfl_config *cfg); /* elements of the buffer above */
/* Points w's norms, biases and q/k norms (the config's; the others NULL) at layer
 * `layer`'s in a buffer laid out as above (host or device); the linear weights NULL. */
void dfl_norms_at(const dfl_config *cfg, const uint16_t *norms, uint32_t layer,
                  dfl_layer_weights *w);
/* Layers [first, end) only (a stage of a split), and model.norm. */
df11_status dfl_norms_copy(const dfl_config *cfg, const df11_provider *p, int first, int end,
                           df11_stream stream, dfl_copy_fn copy, void *ctx, uint16_t *dst,
                           char *err, size_t errlen);

/* RoPE table rows for positions [p0, p1): cos then sin, [p1 - p0][head_dim/2] each, as HF
 * computes them (FP32 inverse frequencies rescaled by rope_scaling, FP32 angle, yarn's
 * attention factor folded in). seq_len matters only to dynamic NTK: the length HF sees
 * (the last position of the pass + 1); the base grows when it exceeds max_pos. */
void dfl_rope_table(const dfl_config *cfg, int seq_len, int p0, int p1, float *cos_t, float *sin_t);

#ifdef DF11_HAVE_CUDA
/* The CUDA path (dfl_cuda.cu); dfl.c calls these. */
typedef struct dfl_gpu dfl_gpu;
/* What one GPU of the engine runs: layers [first, end) on `device` (-1: the current one),
 * the embedding when `embeds`, the final norm and lm_head when `heads`. */
typedef struct dfl_gpu_range {
    int device, first, end, embeds, heads;
} dfl_gpu_range;
/* linears: the op path's weights (NULL: the engine path); embed: the embedding for the
 * provider's row gather (NULL: a tensor view); the engine keeps both alive until
 * dfl_gpu_destroy. */
df11_status dfl_gpu_create(const dfl_config *cfg, const df11_provider *p, const dfl_gpu_range *r,
                           int max_seq, int max_batch, dfl_attention attention, int plain_launch,
                           const dfl_linears *linears, const df11_weight *embed, dfl_gpu **out,
                           char *err, size_t errlen);
void dfl_gpu_destroy(dfl_gpu *g);
/* ids: the same tokens as uint32 in host memory, for the row gather. A GPU that does not
 * embed starts from the hidden state dfl_gpu_hand_on gave it; logits: NULL except on the
 * GPU that heads. */
df11_status dfl_gpu_forward(dfl_gpu *g, const int *tokens, const uint32_t *ids, int n, int pos,
                            float *logits, char *err, size_t errlen);
/* After `from`'s forward: copies its hidden state of n tokens (and the residual the op path
 * has not added yet) to `to`, ordered on both streams without a host wait. */
df11_status dfl_gpu_hand_on(dfl_gpu *from, dfl_gpu *to, int n, char *err, size_t errlen);
/* Replaces the device RoPE table's rows [pos, pos + n) (dynamic NTK) with cos_t, sin_t
 * ([n][head_dim/2] each, host memory, free to reuse on return). */
df11_status dfl_gpu_rope_rows(dfl_gpu *g, int pos, int n, const float *cos_t, const float *sin_t,
                              char *err, size_t errlen);
uint64_t dfl_gpu_kv_bytes(const dfl_gpu *g);
uint64_t dfl_gpu_scratch_bytes(const dfl_gpu *g);
/* cudaMemGetInfo of the current device; -1 without a GPU. */
int dfl_gpu_mem_info(uint64_t *free_bytes, uint64_t *total_bytes);
/* The stream the engine runs on (a cudaStream_t). */
void *dfl_gpu_stream(const dfl_gpu *g);
/* Host-to-device copy bandwidth from pinned memory (GB/s, median of a few copies of
 * `bytes`), the link a model streamed from pinned memory can use at best; -1 on failure. */
double dfl_gpu_h2d_gbps(size_t bytes);
/* The engine's causal attention, exposed so a test can run each kernel on its own inputs.
 * n query tokens at positions [pos0, pos0 + n) over cache positions [0, pos0 + n), with
 * the config's sliding window (0: none). q: [n][n_heads][hd] FP32; kc, vc: [pos0 + n or
 * more][n_kv_heads][hd] FP32; out: [n][n_heads][hd] BF16 bits; all device memory. kind
 * AUTO picks as the engine does. Launches on `stream` (a cudaStream_t) and returns without
 * waiting; DF11_ERR_INVALID_ARG on bad sizes, DF11_ERR_UNSUPPORTED when the kernel cannot
 * take them (naive: the context's scores overflow shared memory; tiled, mma, split:
 * head_dim; mma: a GPU before sm_80; split: more tokens or heads per kv head than it
 * takes). Split (and AUTO where it picks split) takes its workspace for the call from the
 * device's memory pool in stream order (cudaMallocAsync, cudaFreeAsync). */
df11_status dfl_gpu_attention(dfl_attention kind, const float *q, const float *kc, const float *vc,
                              uint16_t *out, int n, int pos0, int n_heads, int n_kv_heads, int hd,
                              int window, void *stream, char *err, size_t errlen);
/* The engine's RMSNorm, exposed for the same reason: for n rows of dim FP32 in x, with
 * `add` (may be NULL) x += add first and is written back, then out = BF16(w · x / rms(x))
 * (HF's LlamaRMSNorm; w and out BF16 bits); all device memory. The kernel is picked as the
 * engine picks it (a row in registers where dim % 4 == 0, dim <= 32768 and the pointers
 * are aligned for it). Launches on `stream` and returns without waiting;
 * DF11_ERR_INVALID_ARG on bad sizes or a NULL pointer other than add. */
df11_status dfl_gpu_rmsnorm(float *x, const float *add, const uint16_t *w, uint16_t *out, int n,
                            int dim, float eps, void *stream, char *err, size_t errlen);
#endif

#ifdef __cplusplus
}
#endif
#endif
