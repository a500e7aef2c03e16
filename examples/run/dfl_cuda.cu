/* The engine's CUDA forward pass. Residual stream FP32; every matrix product has BF16
 * operands (activations rounded to BF16 by the kernel that produces them) and FP32
 * accumulation and output. Two ways to run the products (dfl_options.matmul):
 *   op path: provider->matmul (df11_matmul) on weights resolved once at create; no block
 *     is acquired per pass (the norms were copied into g->norms at create). The op writes
 *     y, so o_proj and down_proj write g->proj and the next RMSNorm adds it to x. Where
 *     the provider stacks weights, q+k+v and gate+up are one product each (one launch of
 *     the fused kernel), qkv_rope_kernel putting q, k, v in place.
 *   engine path: per block, acquire on the engine's stream, cuBLAS GEMMs on the block's
 *     tensor views (beta = 1 folds the residual adds), release on the same stream.
 * Embeddings: the provider's row gather writes a pass's rows as FP32 straight into x (only
 * those rows decoded, so the table may stay compressed), or, without one, embed_kernel
 * reads them from a tensor view. K and V are written by their products straight into an
 * FP32 cache. The host never waits except for the logits.
 *
 * Layouts: activations [token][feature] row-major; weights [out][in] row-major, which is
 * cuBLAS's column-major [in][out], so Y^T = op_T(W) · X^T needs no copies.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dfl.h"

typedef __nv_bfloat16 bf16;

struct dfl_gpu {
    dfl_config cfg;
    df11_provider prov;
    int max_seq, max_batch;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *x;                   /* [B][D] residual stream */
    bf16 *xb;                   /* [B][max(D, Q)] normed input of a GEMM */
    float *q;                   /* [B][Q] */
    bf16 *att;                  /* [B][Q] attention output, o_proj's input */
    float *gate, *up;           /* [B][H] each, one allocation: up = gate + B * H; the op
                                   path's stacked products write [B][Q+2KV] or [B][2H] there */
    bf16 *hb;                   /* [B][H] silu(gate) * up, down_proj's input */
    float *logits;              /* [V] */
    int *tokens;                /* [B] */
    float *kc, *vc;             /* [L][S][KV] */
    float *rope_cos, *rope_sin; /* [S][hd/2] */
    const df11_weight *embed;   /* the row gather's embedding (the engine owns it), NULL: a view */
    /* op path only (lin != NULL; the engine owns lin) */
    const dfl_linears *lin;
    bf16 *norms; /* [dfl_norms_count]: per layer attn and ffn norm, then model.norm */
    float *proj; /* [B][D] o_proj / down_proj output, added to x by the next RMSNorm */
    uint64_t kv_bytes, scratch_bytes;
};

#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            snprintf(err, errlen, "%s: %s", #call, cudaGetErrorString(e_));                        \
            return e_ == cudaErrorMemoryAllocation ? DF11_ERR_DEVICE_MEMORY : DF11_ERR_DEVICE;     \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ kernels ------ */

/* Programmatic dependent launch: a kernel launched after this one with the PDL attribute
 * (the matmul op's fused kernel) may start now and prefetch its weights; its
 * griddepcontrol.wait still waits for this whole grid to finish and its writes to be
 * visible, so calling this first thing is safe whatever the kernel does after. A no-op
 * where the next launch is not programmatic, and before sm_90. */
__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (or max) over the block; every thread gets the result. blockDim a multiple of 32. */
__device__ float block_reduce(float v, bool is_max)
{
    __shared__ float red[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    return is_max ? warp_max(v) : warp_sum(v);
}

/* One block per token; a thread copies every blockDim-th feature of its embedding row. */
__global__ void embed_kernel(const bf16 *emb, const int *tokens, float *x, int dim)
{
    pdl_trigger();
    const bf16 *row = emb + (size_t)tokens[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)blockIdx.x * dim + i] = __bfloat162float(row[i]);
}

/* One block per token: out = bf16(w * (x / rms(x))), as HF's LlamaRMSNorm does it. With
 * `add` (the op path's pending residual), x += add first and is written back; a thread
 * reads back only the elements it wrote. */
__global__ void rmsnorm_kernel(float *x, const float *add, const bf16 *w, bf16 *out, int dim,
                               float eps)
{
    pdl_trigger();
    float *xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (add) {
        const float *ar = add + (size_t)blockIdx.x * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] += ar[i];
    }
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    float scale = rsqrtf(block_reduce(ss, false) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] =
            __float2bfloat16(__bfloat162float(w[i]) * (xr[i] * scale));
}

/* Rotate-half RoPE in place. One block per token; a thread rotates pairs (i, i + hd/2) of
 * heads, stride n_heads * hd/2 apart. `v` rows are `stride` floats apart. */
__global__ void rope_kernel(float *v, int stride, int n_heads, int hd, int pos0, const float *cos_t,
                            const float *sin_t)
{
    pdl_trigger();
    const int half = hd / 2, t = blockIdx.x;
    const float *cs = cos_t + (size_t)(pos0 + t) * half, *sn = sin_t + (size_t)(pos0 + t) * half;
    for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        float *h = v + (size_t)t * stride + (k / half) * hd;
        int i = k % half;
        float a = h[i], b = h[i + half];
        h[i] = a * cs[i] - b * sn[i];
        h[i + half] = b * cs[i] + a * sn[i];
    }
}

/* One thread per element (token t, feature i < width): y[t][i] += b[i], rows ld apart. */
__global__ void bias_kernel(float *y, size_t ld, const bf16 *b, int width, size_t n)
{
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i / width * ld + i % width] += __bfloat162float(b[i % width]);
}

/* Causal attention over the cache. One block per (head, token); token t sits at position
 * pos0 + t and sees positions 0..pos0+t, or with a sliding window (window > 0) only the
 * last `window` of them (HF: key j is seen from query i when i - j < window). Warps take positions in turn for the scores
 * (lanes split the head's features, so K rows are read coalesced), the block takes the
 * softmax, then thread d sums p_j * V[j][d] (V rows coalesced across threads).
 * Shared memory: hd + pos0 + t + 1 floats. Moves (pos0 + t + 1) * hd * 8 bytes of K/V. */
__global__ void attention_kernel(const float *q, const float *kc, const float *vc, bf16 *out,
                                 int pos0, int n_heads, int n_kv_heads, int hd, int window)
{
    pdl_trigger();
    extern __shared__ float sm[];
    float *qs = sm, *p = sm + hd;
    const int h = blockIdx.x, t = blockIdx.y, n_ctx = pos0 + t + 1;
    const int j0 = window > 0 && n_ctx > window ? n_ctx - window : 0;
    const int kvd = n_kv_heads * hd, kvh = h / (n_heads / n_kv_heads);
    const float scale = rsqrtf((float)hd);
    const float *qt = q + ((size_t)t * n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qt[d];
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int j = j0 + warp; j < n_ctx; j += nw) {
        const float *k = kc + (size_t)j * kvd + kvh * hd;
        float s = 0.0f;
        for (int d = lane; d < hd; d += 32) s += qs[d] * k[d];
        s = warp_sum(s);
        if (lane == 0) p[j] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = j0 + threadIdx.x; j < n_ctx; j += blockDim.x) mx = fmaxf(mx, p[j]);
    mx = block_reduce(mx, true);
    float sum = 0.0f;
    for (int j = j0 + threadIdx.x; j < n_ctx; j += blockDim.x) {
        float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, false); /* its barriers also publish p[] */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        const float *v = vc + kvh * hd + d;
        float acc = 0.0f;
        for (int j = j0; j < n_ctx; j++) acc += p[j] * v[(size_t)j * kvd];
        out[((size_t)t * n_heads + h) * hd + d] = __float2bfloat16(acc / sum);
    }
}

/* One thread per output element (token t, feature i < h): out[t][i] =
 * bf16(silu(gate[t][i]) * up[t][i]), gate and up rows `ld` floats apart (h, or 2h when they
 * are the halves of a stacked gate|up product). */
__global__ void swiglu_kernel(const float *gate, const float *up, int ld, bf16 *out, int h,
                              size_t n)
{
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        size_t at = i / h * ld + i % h;
        float g = gate[at];
        out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * up[at]);
    }
}

/* A stacked q|k|v product (rows of Q + 2 KV floats) into place: q rotated into q ([t][Q]),
 * k rotated into the cache rows kc ([t][KV]), v copied into vc; the rotation is
 * rope_kernel's. One block per token; a thread takes pairs (i, i + hd/2) of the q then k
 * heads (contiguous in the row), then v features. */
__global__ void qkv_rope_kernel(const float *qkv, float *q, float *kc, float *vc, int n_heads,
                                int n_kv_heads, int hd, int pos0, const float *cos_t,
                                const float *sin_t)
{
    pdl_trigger();
    const int half = hd / 2, t = blockIdx.x, Q = n_heads * hd, KV = n_kv_heads * hd;
    const float *row = qkv + (size_t)t * (Q + 2 * KV);
    const float *cs = cos_t + (size_t)(pos0 + t) * half, *sn = sin_t + (size_t)(pos0 + t) * half;
    for (int k = threadIdx.x; k < (n_heads + n_kv_heads) * half; k += blockDim.x) {
        const int head = k / half, i = k % half;
        const float *src = row + head * hd;
        float *dst = head < n_heads ? q + (size_t)t * Q + head * hd
                                    : kc + (size_t)t * KV + (head - n_heads) * hd;
        float a = src[i], b = src[i + half];
        dst[i] = a * cs[i] - b * sn[i];
        dst[i + half] = b * cs[i] + a * sn[i];
    }
    for (int i = threadIdx.x; i < KV; i += blockDim.x) vc[(size_t)t * KV + i] = row[Q + KV + i];
}

/* ------------------------------------------------------------------ host side ---- */

static const int THREADS = 256;

/* Y[n][rows] = X[n][cols] · W[rows][cols]^T (+ beta * Y). */
static df11_status gemm(dfl_gpu *g, const void *w, const bf16 *x, float *y, int n, int rows,
                        int cols, int ldy, float beta, char *err, size_t errlen)
{
    const float alpha = 1.0f;
    cublasStatus_t s = cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &alpha, w,
                                    CUDA_R_16BF, cols, x, CUDA_R_16BF, cols, &beta, y, CUDA_R_32F,
                                    ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cublasGemmEx %dx%dx%d: status %d", rows, n, cols, (int)s);
        return DF11_ERR_DEVICE;
    }
    return DF11_OK;
}

/* Y[n][rows] = X[n][cols] · Wᵀ through the provider's op (dense Y, FP32), on g->stream. */
static df11_status op_linear(dfl_gpu *g, const df11_weight *w, const bf16 *x, float *y, int n,
                             char *err, size_t errlen)
{
    const df11_provider *p = &g->prov;
    df11_status st = p->matmul(p->ctx, w, x, (uint32_t)n, y, DF11_DTYPE_F32, g->stream);
    if (st != DF11_OK)
        snprintf(err, errlen, "'%s': matmul: %s%s%s", w->name, df11_strerror(st),
                 *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
    return st;
}

int dfl_gpu_mem_info(uint64_t *free_bytes, uint64_t *total_bytes)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return -1;
    size_t f, t;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) return -1;
    *free_bytes = f;
    *total_bytes = t;
    return 0;
}

void *dfl_gpu_stream(const dfl_gpu *g) { return g->stream; }

double dfl_gpu_h2d_gbps(size_t bytes)
{
    void *host = NULL, *dev = NULL;
    cudaEvent_t a = NULL, b = NULL;
    double ms[5], gbps = -1;
    if (cudaHostAlloc(&host, bytes, cudaHostAllocDefault) != cudaSuccess ||
        cudaMalloc(&dev, bytes) != cudaSuccess || cudaEventCreate(&a) != cudaSuccess ||
        cudaEventCreate(&b) != cudaSuccess)
        goto done;
    memset(host, 1, bytes);
    for (int i = 0; i < 6; i++) { /* the first copy warms up */
        float t = 0;
        if (cudaEventRecord(a, 0) != cudaSuccess ||
            cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, 0) != cudaSuccess ||
            cudaEventRecord(b, 0) != cudaSuccess || cudaEventSynchronize(b) != cudaSuccess ||
            cudaEventElapsedTime(&t, a, b) != cudaSuccess)
            goto done;
        if (i) ms[i - 1] = t;
    }
    for (int i = 1; i < 5; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    gbps = (double)bytes / (ms[2] * 1e6);
done:
    (void)cudaGetLastError();
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    cudaFree(dev);
    cudaFreeHost(host);
    return gbps;
}

df11_status dfl_gpu_rope_rows(dfl_gpu *g, int pos, int n, const float *cos_t, const float *sin_t,
                              char *err, size_t errlen)
{
    /* Pageable source: the copy has left cos_t/sin_t when the call returns; stream order
     * puts it after the kernels that read the old rows. */
    const size_t half = (size_t)g->cfg.head_dim / 2, bytes = (size_t)n * half * sizeof(float);
    CUDA_TRY(
        cudaMemcpyAsync(g->rope_cos + pos * half, cos_t, bytes, cudaMemcpyHostToDevice, g->stream));
    CUDA_TRY(
        cudaMemcpyAsync(g->rope_sin + pos * half, sin_t, bytes, cudaMemcpyHostToDevice, g->stream));
    return DF11_OK;
}
uint64_t dfl_gpu_kv_bytes(const dfl_gpu *g) { return g->kv_bytes; }
uint64_t dfl_gpu_scratch_bytes(const dfl_gpu *g) { return g->scratch_bytes; }

void dfl_gpu_destroy(dfl_gpu *g)
{
    if (!g) return;
    if (g->stream) cudaStreamSynchronize(g->stream);
    void *bufs[] = { g->x,      g->xb, g->q,  g->att,      g->gate,     g->hb,    g->logits,
                     g->tokens, g->kc, g->vc, g->rope_cos, g->rope_sin, g->norms, g->proj };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    if (g->blas) cublasDestroy(g->blas);
    if (g->stream) cudaStreamDestroy(g->stream);
    delete g;
}

static df11_status gpu_alloc(dfl_gpu *g, void **p, size_t bytes, uint64_t *counter, char *err,
                             size_t errlen)
{
    CUDA_TRY(cudaMalloc(p, bytes ? bytes : 1));
    *counter += bytes;
    return DF11_OK;
}

/* dfl_norms_copy's copy: provider pointers are device memory on the CUDA backend. */
static df11_status device_copy(void *ctx, void *dst, const void *src, size_t bytes,
                               df11_stream stream, char *err, size_t errlen)
{
    (void)ctx;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, (cudaStream_t)stream));
    return DF11_OK;
}

static df11_status gpu_create(dfl_gpu *g, char *err, size_t errlen)
{
    const dfl_config *c = &g->cfg;
    const size_t B = g->max_batch, S = g->max_seq, D = c->dim, H = c->hidden_dim;
    const size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    CUDA_TRY(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    if (cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
        g->blas = NULL;
        snprintf(err, errlen, "cublasCreate failed");
        return DF11_ERR_DEVICE;
    }
    cublasSetStream(g->blas, g->stream);

    /* Attention keeps one score per position in shared memory. */
    int dev, optin = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    size_t smem = (S + c->head_dim) * sizeof(float);
    if (smem > (size_t)optin) {
        snprintf(err, errlen,
                 "context of %zu positions needs %zu bytes of shared memory for "
                 "attention, the GPU has %d",
                 S, smem, optin);
        return DF11_ERR_UNSUPPORTED;
    }
    CUDA_TRY(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem));

    struct {
        void **p;
        size_t bytes;
        uint64_t *ctr;
    } bufs[] = {
        { (void **)&g->x, B * D * 4, &g->scratch_bytes },
        { (void **)&g->xb, B * (D > Q ? D : Q) * 2, &g->scratch_bytes },
        { (void **)&g->q, B * Q * 4, &g->scratch_bytes },
        { (void **)&g->att, B * Q * 2, &g->scratch_bytes },
        { (void **)&g->gate, B * (2 * H > Q + 2 * KV ? 2 * H : Q + 2 * KV) * 4, &g->scratch_bytes },
        { (void **)&g->hb, B * H * 2, &g->scratch_bytes },
        { (void **)&g->logits, (size_t)c->vocab_size * 4, &g->scratch_bytes },
        { (void **)&g->tokens, B * sizeof(int), &g->scratch_bytes },
        { (void **)&g->rope_cos, S * c->head_dim / 2 * 4, &g->scratch_bytes },
        { (void **)&g->rope_sin, S * c->head_dim / 2 * 4, &g->scratch_bytes },
        { (void **)&g->kc, (size_t)c->n_layers * S * KV * 4, &g->kv_bytes },
        { (void **)&g->vc, (size_t)c->n_layers * S * KV * 4, &g->kv_bytes },
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        df11_status st = gpu_alloc(g, bufs[i].p, bufs[i].bytes, bufs[i].ctr, err, errlen);
        if (st != DF11_OK) return st;
    }
    g->up = g->gate + B * H;
    if (g->lin) {
        df11_status st;
        if ((st = gpu_alloc(g, (void **)&g->norms, dfl_norms_count(c) * 2, &g->scratch_bytes, err,
                            errlen)) != DF11_OK ||
            (st = gpu_alloc(g, (void **)&g->proj, B * D * 4, &g->scratch_bytes, err, errlen)) !=
                DF11_OK)
            return st;
        /* Startup, not the hot path: every block is acquired once here. */
        st = dfl_norms_copy(c, &g->prov, g->stream, device_copy, NULL, (uint16_t *)g->norms, err,
                            errlen);
        if (st != DF11_OK) return st;
        CUDA_TRY(cudaStreamSynchronize(g->stream));
    }
    float *cs = (float *)malloc(S * c->head_dim / 2 * 4),
          *sn = (float *)malloc(S * c->head_dim / 2 * 4);
    if (!cs || !sn) {
        free(cs);
        free(sn);
        return DF11_ERR_NO_MEMORY;
    }
    dfl_rope_table(c, 0, 0, g->max_seq, cs, sn);
    cudaError_t e1 = cudaMemcpy(g->rope_cos, cs, S * c->head_dim / 2 * 4, cudaMemcpyHostToDevice);
    cudaError_t e2 = cudaMemcpy(g->rope_sin, sn, S * c->head_dim / 2 * 4, cudaMemcpyHostToDevice);
    free(cs);
    free(sn);
    CUDA_TRY(e1);
    CUDA_TRY(e2);
    return DF11_OK;
}

df11_status dfl_gpu_create(const dfl_config *cfg, const df11_provider *p, int max_seq,
                           int max_batch, const dfl_linears *linears, const df11_weight *embed,
                           dfl_gpu **out, char *err, size_t errlen)
{
    *out = NULL;
    dfl_gpu *g = new dfl_gpu();
    g->cfg = *cfg;
    g->prov = *p;
    g->lin = linears;
    g->embed = embed;
    g->max_seq = max_seq;
    g->max_batch = max_batch;
    df11_status st = gpu_create(g, err, errlen);
    if (st != DF11_OK) {
        dfl_gpu_destroy(g);
        return st;
    }
    *out = g;
    return DF11_OK;
}

/* y[t][i] += b[i] for n rows ld floats apart, on g->stream. */
static void add_bias(dfl_gpu *g, float *y, size_t ld, const bf16 *b, int n, int width)
{
    size_t total = (size_t)n * width;
    bias_kernel<<<(unsigned)((total + THREADS - 1) / THREADS), THREADS, 0, g->stream>>>(
        y, ld, b, width, total);
}

/* One block's kernels on g->stream, for tokens at [pos, pos + n). w: the norms and, on the
 * engine path, the linear weights; op: the op path's weights, else NULL. `*add`: x's
 * pending residual on the op path (NULL when none), given to the first RMSNorm and set to
 * down_proj's output for the next one. */
static df11_status gpu_layer(dfl_gpu *g, uint32_t l, const dfl_layer_weights *w,
                             const dfl_layer_linears *op, const float **add, int n, int pos,
                             char *err, size_t errlen)
{
    const dfl_config *c = &g->cfg;
    const int D = c->dim, hd = c->head_dim, H = c->hidden_dim;
    const int Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    float *kc = g->kc + ((size_t)l * g->max_seq + pos) * KV;
    float *vc = g->vc + ((size_t)l * g->max_seq + pos) * KV;
    cudaStream_t s = g->stream;
    df11_status st;
    /* Y = X·Wᵀ; into the residual (RES): the engine's GEMM adds to x (beta 1), the op
     * writes g->proj, which the next RMSNorm adds. */
#define LINEAR(W, X, Y, ROWS, COLS, RES)                                                           \
    if ((st = op ? op_linear(g, &op->W, X, (RES) ? g->proj : (Y), n, err, errlen)                  \
                 : gemm(g, w->W, X, Y, n, ROWS, COLS, ROWS, (RES) ? 1.0f : 0.0f, err, errlen)) !=  \
        DF11_OK)                                                                                   \
    return st

    const bool stacked = op && g->lin->stacked;
    rmsnorm_kernel<<<n, THREADS, 0, s>>>(g->x, *add, (const bf16 *)w->attn_norm, g->xb, D,
                                         c->norm_eps);
    if (stacked) { /* one product, rows [q | k | v] (in g->gate, free until the MLP) */
        if ((st = op_linear(g, &op->qkv, g->xb, g->gate, n, err, errlen)) != DF11_OK) return st;
        if (w->bq) /* q|k|v biases are contiguous in g->norms, as the stacked row */
            add_bias(g, g->gate, Q + 2 * KV, (const bf16 *)w->bq, n, Q + 2 * KV);
        qkv_rope_kernel<<<n, THREADS, 0, s>>>(g->gate, g->q, kc, vc, c->n_heads, c->n_kv_heads, hd,
                                              pos, g->rope_cos, g->rope_sin);
    } else {
        LINEAR(wq, g->xb, g->q, Q, D, 0);
        LINEAR(wk, g->xb, kc, KV, D, 0);
        LINEAR(wv, g->xb, vc, KV, D, 0);
        if (w->bq) add_bias(g, g->q, Q, (const bf16 *)w->bq, n, Q);
        if (w->bk) add_bias(g, kc, KV, (const bf16 *)w->bk, n, KV);
        if (w->bv) add_bias(g, vc, KV, (const bf16 *)w->bv, n, KV);
        rope_kernel<<<n, THREADS, 0, s>>>(g->q, Q, c->n_heads, hd, pos, g->rope_cos, g->rope_sin);
        rope_kernel<<<n, THREADS, 0, s>>>(kc, KV, c->n_kv_heads, hd, pos, g->rope_cos, g->rope_sin);
    }
    size_t smem = (size_t)(hd + pos + n) * sizeof(float);
    attention_kernel<<<dim3(c->n_heads, n), 128, smem, s>>>(
        g->q, g->kc + (size_t)l * g->max_seq * KV, g->vc + (size_t)l * g->max_seq * KV, g->att, pos,
        c->n_heads, c->n_kv_heads, hd, c->sliding_window);
    LINEAR(wo, g->att, g->x, D, Q, 1); /* x += o_proj(att) */
    if (w->bo) add_bias(g, op ? g->proj : g->x, D, (const bf16 *)w->bo, n, D);

    rmsnorm_kernel<<<n, THREADS, 0, s>>>(g->x, op ? g->proj : NULL, (const bf16 *)w->ffn_norm,
                                         g->xb, D, c->norm_eps);
    const float *up = g->up;
    int ld = H;
    if (stacked) { /* one product, rows [gate | up] */
        if ((st = op_linear(g, &op->gate_up, g->xb, g->gate, n, err, errlen)) != DF11_OK) return st;
        up = g->gate + H;
        ld = 2 * H;
    } else {
        LINEAR(w_gate, g->xb, g->gate, H, D, 0);
        LINEAR(w_up, g->xb, g->up, H, D, 0);
    }
    size_t nh = (size_t)n * H;
    swiglu_kernel<<<(unsigned)((nh + THREADS - 1) / THREADS), THREADS, 0, s>>>(g->gate, up, ld,
                                                                               g->hb, H, nh);
    LINEAR(w_down, g->hb, g->x, D, H, 1); /* x += down_proj(hb) */
#undef LINEAR
    *add = op ? g->proj : NULL;
    CUDA_TRY(cudaGetLastError());
    return DF11_OK;
}

df11_status dfl_gpu_forward(dfl_gpu *g, const int *tokens, const uint32_t *ids, int n, int pos,
                            float *logits, char *err, size_t errlen)
{
    const dfl_config *c = &g->cfg;
    const df11_provider *p = &g->prov;
    cudaStream_t s = g->stream;
    const int D = c->dim;
    df11_status st;

    if (g->embed) { /* ids are read before the call returns: no copy to the device */
        st = p->rows_gather(p->ctx, g->embed, ids, (uint32_t)n, g->x, DF11_DTYPE_F32, s);
        if (st != DF11_OK) {
            snprintf(err, errlen, "'%s': rows_gather: %s%s%s", g->embed->name, df11_strerror(st),
                     *df11_last_error_detail() ? ": " : "", df11_last_error_detail());
            return st;
        }
    } else {
        CUDA_TRY(
            cudaMemcpyAsync(g->tokens, tokens, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, s));
        const void *emb;
        st = dfl_tensor_get(p, "model.embed_tokens.weight", c->vocab_size, D, s, &emb, err, errlen);
        if (st != DF11_OK) return st;
        embed_kernel<<<n, THREADS, 0, s>>>((const bf16 *)emb, g->tokens, g->x, D);
        if (p->tensor_release) p->tensor_release(p->ctx, "model.embed_tokens.weight", s);
    }

    const float *add = NULL; /* op path: down_proj's output, not yet added to x */
    for (uint32_t l = 0; l < (uint32_t)c->n_layers; l++) {
        if (g->lin) { /* op path: no block acquired, norms from the engine's copy */
            dfl_layer_weights w;
            memset(&w, 0, sizeof w);
            w.attn_norm = g->norms + 2 * (size_t)l * D;
            w.ffn_norm = g->norms + (2 * (size_t)l + 1) * D;
            dfl_biases_at(c, (const uint16_t *)g->norms, l, &w);
            st = gpu_layer(g, l, &w, &g->lin->layers[l], &add, n, pos, err, errlen);
            if (st != DF11_OK) return st;
            continue;
        }
        df11_block_view view;
        memset(&view, 0, sizeof view);
        st = p->block_acquire(p->ctx, l, s, &view);
        if (st != DF11_OK) {
            snprintf(err, errlen, "block %u: acquire: %s", l, df11_strerror(st));
            return st;
        }
        dfl_layer_weights w;
        st = dfl_layer_weights_get(c, p, l, &view, s, &w, err, errlen);
        if (st == DF11_OK) st = gpu_layer(g, l, &w, NULL, &add, n, pos, err, errlen);
        df11_status rs = p->block_release(p->ctx, l, s);
        if (st != DF11_OK) return st;
        if (rs != DF11_OK) {
            snprintf(err, errlen, "block %u: release: %s", l, df11_strerror(rs));
            return rs;
        }
    }
    /* Without logits x is not read again (the next pass starts from the embeddings), so the
     * last down_proj's pending add can be dropped. */
    if (!logits) return DF11_OK;

    const size_t last = (size_t)(n - 1) * D;
    if (g->lin) {
        rmsnorm_kernel<<<1, THREADS, 0, s>>>(g->x + last, add ? add + last : NULL,
                                             g->norms + 2 * (size_t)c->n_layers * D, g->xb, D,
                                             c->norm_eps);
        st = op_linear(g, &g->lin->lm_head, g->xb, g->logits, 1, err, errlen);
    } else {
        const void *norm, *head;
        st = dfl_tensor_get(p, "model.norm.weight", D, 0, s, &norm, err, errlen);
        if (st != DF11_OK) return st;
        rmsnorm_kernel<<<1, THREADS, 0, s>>>(g->x + last, NULL, (const bf16 *)norm, g->xb, D,
                                             c->norm_eps);
        if (p->tensor_release) p->tensor_release(p->ctx, "model.norm.weight", s);
        const char *head_name = c->tied ? "model.embed_tokens.weight" : "lm_head.weight";
        st = dfl_tensor_get(p, head_name, c->vocab_size, D, s, &head, err, errlen);
        if (st != DF11_OK) return st;
        st = gemm(g, head, g->xb, g->logits, 1, c->vocab_size, D, c->vocab_size, 0.0f, err, errlen);
        if (p->tensor_release) p->tensor_release(p->ctx, head_name, s);
    }
    if (st != DF11_OK) return st;
    CUDA_TRY(cudaMemcpyAsync(logits, g->logits, (size_t)c->vocab_size * sizeof(float),
                             cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return DF11_OK;
}
