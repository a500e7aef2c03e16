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
 * FP32 cache (Qwen3: q and k heads RMS-normed in place first, head_rmsnorm_kernel, then
 * rotated). Attention (dfl_options.attention): for decode, each token's context split
 * into ranges over blocks (a block per kv head, range and token); for a pass of many
 * tokens, flash-style tiles of 64 queries that share each K/V tile, in FP32 or on the
 * tensor cores (attention_pick chooses). The host never waits except for the
 * logits.
 * Split over GPUs (dfl_create_split): each dfl_gpu runs its range of layers on its device
 * with its own stream, cuBLAS handle, scratch and KV cache of those layers; the first one
 * embeds, the last one heads, and dfl_gpu_hand_on copies the hidden state between them.
 *
 * Layouts: activations [token][feature] row-major; weights [out][in] row-major, which is
 * cuBLAS's column-major [in][out], so Y^T = op_T(W) · X^T needs no copies.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dfl.h"

typedef __nv_bfloat16 bf16;

/* What the attention kernels depend on in the current device. */
typedef struct attention_device {
    int optin; /* shared memory per block (opt-in) */
    int major; /* compute capability */
    int sms;   /* multiprocessors: the split kernel's ranges fill them */
    bool pdl;  /* launch with programmatic dependent launch (sm_90+ code on an sm_90+ GPU, unless
                  asked not to) */
    /* dynamic shared memory each kernel may take: optin less its static shared memory
     * (the naive kernel's block_reduce), 0 where it cannot run */
    int naive_max, tiled_max[3];
} attention_device;

/* The split kernel's workspace: partials of DFL_ATTENTION_SPLIT_MAX_N tokens' ranges, and
 * a zeroed counter per (token, kv head). */
typedef struct attention_ws {
    float *part;
    unsigned *count;
} attention_ws;

struct dfl_gpu {
    dfl_config cfg;
    df11_provider prov;
    int device, first, end, embeds, heads; /* dfl_gpu_range: layers [first, end) */
    int max_seq, max_batch;
    dfl_attention attention;
    int plain_launch; /* dfl_options.plain_launch */
    attention_device att_dev;
    attention_ws att_ws; /* the split kernel's, for a decode pass */
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
    float *kc, *vc;             /* [end - first][S][KV] */
    float *rope_cos, *rope_sin; /* [S][hd/2] */
    const df11_weight *embed;   /* the row gather's embedding (the engine owns it), NULL: a view */
    /* op path only (lin != NULL; the engine owns lin) */
    const dfl_linears *lin;
    bf16 *norms; /* [dfl_norms_count]: per layer attn and ffn norm, then model.norm */
    float *proj; /* [B][D] o_proj / down_proj output, added to x by the next RMSNorm */
    /* proj holds such an output not added yet: after this GPU's last layer (pending_out),
     * or handed on with x from the previous GPU (pending_in) */
    int pending_in, pending_out;
    cudaEvent_t done, arrived; /* after this GPU's layers; after the copy into it */
    int peer_tried;            /* peer access to the next GPU asked for (dfl_gpu_hand_on) */
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

/* Programmatic dependent launch, first thing in every engine kernel. The trigger: a kernel
 * launched after this one with the PDL attribute (the engine's own kernels, the matmul
 * op's fused kernel) may be scheduled now, and the fused kernel prefetches its weights; its
 * griddepcontrol.wait still waits for this whole grid to finish and its writes to be
 * visible, so triggering first is safe whatever the kernel does after. The wait: this
 * kernel, itself launched with the attribute (launch()), may be running before the kernel
 * it depends on has finished, so it waits here before reading anything. Both are no-ops
 * where the launch is not programmatic, and before sm_90. */
__device__ __forceinline__ void pdl_begin()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
    asm volatile("griddepcontrol.wait;" ::: "memory");
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
    pdl_begin();
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
    pdl_begin();
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

/* rmsnorm_kernel for rows of dim % 4 == 0 floats, 16-byte aligned (w and out 8-byte
 * aligned): a thread keeps its VPT 4-float vectors of the row in registers, so that every
 * load of x (and add) is in flight at once and x is read once; the strided loops above wait
 * on memory at every step (15 us for one 4096-float row on an H100). */
template <int VPT>
__global__ void __launch_bounds__(1024)
    rmsnorm_vec_kernel(float *x, const float *add, const bf16 *w, bf16 *out, int dim, float eps)
{
    pdl_begin();
    const int nv = dim / 4;
    float4 *xr = reinterpret_cast<float4 *>(x + (size_t)blockIdx.x * dim);
    const float4 *ar =
        add ? reinterpret_cast<const float4 *>(add + (size_t)blockIdx.x * dim) : NULL;
    float4 v[VPT];
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k >= nv) break;
        v[i] = xr[k];
        if (ar) {
            const float4 a = ar[k];
            v[i].x += a.x, v[i].y += a.y, v[i].z += a.z, v[i].w += a.w;
            xr[k] = v[i];
        }
        ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
    const float scale = rsqrtf(block_reduce(ss, false) / dim + eps);
    const uint2 *wr = reinterpret_cast<const uint2 *>(w);
    uint2 *orow = reinterpret_cast<uint2 *>(out + (size_t)blockIdx.x * dim);
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int k = threadIdx.x + i * blockDim.x;
        if (k >= nv) break;
        const uint2 wv = wr[k];
        const float2 w01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&wv.x));
        const float2 w23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&wv.y));
        const __nv_bfloat162 o01 = __halves2bfloat162(__float2bfloat16(w01.x * (v[i].x * scale)),
                                                      __float2bfloat16(w01.y * (v[i].y * scale)));
        const __nv_bfloat162 o23 = __halves2bfloat162(__float2bfloat16(w23.x * (v[i].z * scale)),
                                                      __float2bfloat16(w23.y * (v[i].w * scale)));
        orow[k] = make_uint2(*reinterpret_cast<const uint32_t *>(&o01),
                             *reinterpret_cast<const uint32_t *>(&o23));
    }
}

/* Rotate-half RoPE in place. One block per token; a thread rotates pairs (i, i + hd/2) of
 * heads, stride n_heads * hd/2 apart. `v` rows are `stride` floats apart. */
__global__ void rope_kernel(float *v, int stride, int n_heads, int hd, int pos0, const float *cos_t,
                            const float *sin_t)
{
    pdl_begin();
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

/* Qwen3's per-head RMSNorm, in place, as rmsnorm_kernel (FP32 in and out, weight BF16):
 * one warp per (token blockIdx.x, head); lanes split the head's hd features. Rows of `v`
 * are `stride` floats apart, heads hd apart within a row. Moves n * n_heads * hd * 8 bytes. */
__global__ void head_rmsnorm_kernel(float *v, int stride, int n_heads, int hd, const bf16 *w,
                                    float eps)
{
    pdl_begin();
    const int head = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (head >= n_heads) return; /* whole warps: the shuffles below see all 32 lanes */
    float *x = v + (size_t)blockIdx.x * stride + (size_t)head * hd;
    float ss = 0.0f;
    for (int i = lane; i < hd; i += 32) ss += x[i] * x[i];
    const float scale = rsqrtf(warp_sum(ss) / hd + eps);
    for (int i = lane; i < hd; i += 32) x[i] = __bfloat162float(w[i]) * (x[i] * scale);
}

/* One thread per element (token t, feature i < width): y[t][i] += b[i], rows ld apart. */
__global__ void bias_kernel(float *y, size_t ld, const bf16 *b, int width, size_t n)
{
    pdl_begin();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i / width * ld + i % width] += __bfloat162float(b[i % width]);
}

/* Causal attention over the cache. One block per (head, token); token t sits at position
 * pos0 + t and sees positions 0..pos0+t, or with a sliding window (window > 0) only the
 * last `window` of them (HF: key j is seen from query i when i - j < window). Warps take
 * positions in turn for the scores (lanes split the head's features, so K rows are read
 * coalesced), the block takes the
 * softmax, then thread d sums p_j * V[j][d] (V rows coalesced across threads).
 * Shared memory: hd + pos0 + t + 1 floats. Moves (pos0 + t + 1) * hd * 8 bytes of K/V. */
__global__ void attention_kernel(const float *q, const float *kc, const float *vc, bf16 *out,
                                 int pos0, int n_heads, int n_kv_heads, int hd, int window)
{
    pdl_begin();
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

/* Flash-style causal attention for a pass of many tokens (prefill): the same masks and
 * layouts as attention_kernel, but each K/V row is read once per 64 queries, not once per
 * query. One block of 256 threads per (head, 64 query tokens): the 64 query rows stay in
 * shared memory while the context goes through in tiles of 64 positions, and each row keeps
 * a running max and sum (online softmax, FP32), so no score outlives its tile. Thread
 * (ty, tx) = (tid / 16, tid % 16) owns query rows 4ty..4ty+3: for the scores, keys
 * tx + 16j of the tile (j < 4; 16 rows of ks read at one feature hit distinct banks);
 * for the output, features 4(tx + 16g)..+3 (g < HDP/64). The 16 threads of a row group
 * are one half-warp, so a row's max and sum are shuffles. HDP is head_dim rounded up to
 * 64, 128 or 256; the padding is zero in Q and K, so it adds nothing to a score. Later
 * query tiles (more keys) are scheduled first. Shared memory: attention_tiled_smem(HDP). */
constexpr int ATT_BQ = 64, ATT_BK = 64, ATT_THREADS = 256;

static constexpr size_t attention_tiled_smem(int hdp)
{
    return ((size_t)ATT_BQ * (hdp + 4) + (size_t)ATT_BK * (hdp + 4) + (size_t)ATT_BK * hdp +
            (size_t)ATT_BK * (ATT_BQ + 4)) *
           sizeof(float);
}

template <int HDP>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_tiled_kernel(const float *__restrict__ q, const float *__restrict__ kc,
                           const float *__restrict__ vc, bf16 *__restrict__ out, int n, int pos0,
                           int n_heads, int n_kv_heads, int hd, int window)
{
    /* row strides: +4 floats keeps float4 alignment and moves each row 4 banks on */
    constexpr int LD = HDP + 4, LDP = ATT_BQ + 4, CG = HDP / 64;
    constexpr int LOADS = ATT_BK * HDP / ATT_THREADS;
    extern __shared__ float4 sm4[];
    float *qs = (float *)sm4, *ks = qs + ATT_BQ * LD, *vs = ks + ATT_BK * LD,
          *pt = vs + ATT_BK * HDP;
    pdl_begin();
    const int h = blockIdx.x, q0 = (gridDim.y - 1 - blockIdx.y) * ATT_BQ;
    const int rows = min(ATT_BQ, n - q0), kvh = h / (n_heads / n_kv_heads);
    const size_t kvd = (size_t)n_kv_heads * hd;
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const float scale = rsqrtf((float)hd);
    const int first = pos0 + q0, last = first + rows - 1; /* positions of rows 0, rows-1 */
    const int lo = window > 0 && first - window + 1 > 0 ? first - window + 1 : 0;

    for (int i = tid; i < ATT_BQ * HDP; i += ATT_THREADS) {
        const int r = i / HDP, d = i % HDP;
        qs[r * LD + d] = r < rows && d < hd ? q[((size_t)(q0 + r) * n_heads + h) * hd + d] : 0.0f;
    }
    float m[4], l[4], o[4][4 * CG];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < 4 * CG; c++) o[i][c] = 0.0f;
    }

    for (int k0 = lo; k0 <= last; k0 += ATT_BK) {
        __syncthreads(); /* the last tile's ks, vs, pt are read (and qs written) */
        /* unrolled, so that 32 loads are in flight at once; positions past `last` (a
         * partial tile) are zero, and masked below */
#pragma unroll 16
        for (int it = 0; it < LOADS; it++) {
            const int i = tid + it * ATT_THREADS, c = i / HDP, d = i % HDP;
            float kv = 0.0f, vv = 0.0f;
            if (k0 + c <= last && d < hd) {
                const size_t at = (size_t)(k0 + c) * kvd + (size_t)kvh * hd + d;
                kv = kc[at];
                vv = vc[at];
            }
            ks[c * LD + d] = kv;
            vs[c * HDP + d] = vv;
        }
        __syncthreads();

        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < HDP; d += 4) {
            float4 a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = *(const float4 *)&qs[(4 * ty + i) * LD + d];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = *(const float4 *)&ks[(tx + 16 * j) * LD + d];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s[i][j] = fmaf(a[i].x, b[j].x, s[i][j]);
                    s[i][j] = fmaf(a[i].y, b[j].y, s[i][j]);
                    s[i][j] = fmaf(a[i].z, b[j].z, s[i][j]);
                    s[i][j] = fmaf(a[i].w, b[j].w, s[i][j]);
                }
        }

        /* mask, then fold the tile into each row's running max, sum and output */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int p = first + 4 * ty + i;
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int key = k0 + tx + 16 * j;
                const bool seen = key <= p && (window <= 0 || p - key < window);
                s[i][j] = seen ? s[i][j] * scale : -INFINITY;
                mx = fmaxf(mx, s[i][j]);
            }
            for (int off = 8; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float mn = fmaxf(m[i], mx);
            /* a row that has seen no key yet keeps m = -inf: exponents from 0, all give 0 */
            const float base = mn == -INFINITY ? 0.0f : mn, alpha = expf(m[i] - base);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s[i][j] = expf(s[i][j] - base);
                sum += s[i][j];
            }
            for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            l[i] = l[i] * alpha + sum;
            m[i] = mn;
#pragma unroll
            for (int c = 0; c < 4 * CG; c++) o[i][c] *= alpha;
        }
        /* probabilities transposed, pt[key][row], so a thread reads its 4 rows as one float4 */
#pragma unroll
        for (int j = 0; j < 4; j++)
            *(float4 *)&pt[(tx + 16 * j) * LDP + 4 * ty] =
                make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
        __syncthreads();

#pragma unroll 4
        for (int c = 0; c < ATT_BK; c++) {
            const float4 pr = *(const float4 *)&pt[c * LDP + 4 * ty];
#pragma unroll
            for (int g = 0; g < CG; g++) {
                const float4 v = *(const float4 *)&vs[c * HDP + 4 * (tx + 16 * g)];
                const float pv[4] = { pr.x, pr.y, pr.z, pr.w };
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    o[i][4 * g + 0] += pv[i] * v.x;
                    o[i][4 * g + 1] += pv[i] * v.y;
                    o[i][4 * g + 2] += pv[i] * v.z;
                    o[i][4 * g + 3] += pv[i] * v.w;
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = 4 * ty + i;
        if (r >= rows) continue;
        const float inv = 1.0f / l[i];
        bf16 *dst = out + ((size_t)(q0 + r) * n_heads + h) * hd;
#pragma unroll
        for (int g = 0; g < CG; g++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int d = 4 * (tx + 16 * g) + e;
                if (d < hd) dst[d] = __float2bfloat16(o[i][4 * g + e] * inv);
            }
    }
}

/* Two floats as a BF16 pair, the first in the low half (the lower index in a fragment). */
__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* c += a · b on the tensor cores: a 16x16 BF16 (row), b 16x8 BF16 (col), c 16x8 FP32. With
 * g = lane / 4, t = lane % 4: a[0] = rows g, cols 2t..2t+1; a[1] rows g+8; a[2], a[3] the
 * same 8 columns on; b0 = rows 2t..2t+1 of col g, b1 rows 8 on; c[0..1] = row g, cols
 * 2t..2t+1, c[2..3] row g+8 (PTX ISA, mma.m16n8k16). */
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* attention_pick never chooses the kernel below sm_80 */
#endif
}

__device__ __forceinline__ uint32_t bf16_pair(float2 v) { return bf16_pair(v.x, v.y); }

/* {row[c], row[c + 1]} where row is not NULL and c < hd (hd and c even: both in or out). */
__device__ __forceinline__ float2 load_pair(const float *row, int c, int hd)
{
    return row && c < hd ? *(const float2 *)(row + c) : make_float2(0.0f, 0.0f);
}

/* attention_tiled_kernel's scheme on the tensor cores: Q·Kᵀ and P·V as BF16 products with
 * FP32 accumulation (the engine's rule for every product: BF16 operands, FP32 sums), the
 * online softmax in FP32. One block of 4 warps per (head, 64 query tokens); warp w owns
 * query rows 16w..16w+15 and keeps them as A fragments in registers; a K/V tile of 64
 * positions goes to shared memory as BF16: ks[key][feature pair], and vp[key pair][feature]
 * (two keys' values of one feature in a word, an mma B fragment register as it is). Lane
 * (g, t) holds rows g and g+8 of its warp's scores, keys 8j+2t..+1 (j < 8), so a row's max
 * and sum are shuffles over the 4 lanes of a g; the scores' C fragments are P's A
 * fragments. HDP: head_dim rounded up to 64 or 128 (zero padding). Padded rows keep 4
 * words between a bank's rows so every fragment load is conflict-free. */
template <int HDP>
__global__ void __launch_bounds__(128, 3)
    attention_mma_kernel(const float *__restrict__ q, const float *__restrict__ kc,
                         const float *__restrict__ vc, bf16 *__restrict__ out, int n, int pos0,
                         int n_heads, int n_kv_heads, int hd, int window)
{
    constexpr int KSTEPS = HDP / 16, NT = HDP / 8, LDK = HDP / 2 + 4, LDV = HDP + 8;
    constexpr int VSLOTS = ATT_BK / 2 * HDP / 2; /* vp's words / 2; ks has twice as many */
    __shared__ __align__(16) uint32_t ks[ATT_BK * LDK];
    __shared__ __align__(16) uint32_t vp[ATT_BK / 2 * LDV];
    pdl_begin();
    const int h = blockIdx.x, q0 = (gridDim.y - 1 - blockIdx.y) * ATT_BQ;
    const int rows = min(ATT_BQ, n - q0), kvh = h / (n_heads / n_kv_heads);
    const size_t kvd = (size_t)n_kv_heads * hd;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = 16 * (threadIdx.x >> 5) + g, r1 = r0 + 8; /* this lane's rows in the tile */
    const float scale = rsqrtf((float)hd);
    const int first = pos0 + q0, last = first + rows - 1;
    const int lo = window > 0 && first - window + 1 > 0 ? first - window + 1 : 0;

    uint32_t qa[KSTEPS][4];
    {
        const float *row0 = r0 < rows ? q + ((size_t)(q0 + r0) * n_heads + h) * hd : NULL;
        const float *row1 = r1 < rows ? q + ((size_t)(q0 + r1) * n_heads + h) * hd : NULL;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
            const int c = 16 * kk + 2 * t;
            qa[kk][0] = bf16_pair(load_pair(row0, c, hd));
            qa[kk][1] = bf16_pair(load_pair(row1, c, hd));
            qa[kk][2] = bf16_pair(load_pair(row0, c + 8, hd));
            qa[kk][3] = bf16_pair(load_pair(row1, c + 8, hd));
        }
    }
    float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f }, o[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

    for (int k0 = lo; k0 <= last; k0 += ATT_BK) {
        __syncthreads(); /* the last tile's ks, vp are read */
        /* iteration i: ks slots i and i + VSLOTS (key, feature pair) and vp slot i (key
         * pair, feature pair), unrolled so that 32 loads are in flight at once; positions
         * past `last` (a partial tile) and features past hd are zero */
#pragma unroll 8
        for (int i = threadIdx.x; i < VSLOTS; i += 128) {
            const size_t head = (size_t)kvh * hd;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int slot = i + half * VSLOTS, c = slot / (HDP / 2),
                          f = 2 * (slot % (HDP / 2));
                const float *kr = k0 + c <= last ? kc + (size_t)(k0 + c) * kvd + head : NULL;
                ks[c * LDK + f / 2] = bf16_pair(load_pair(kr, f, hd));
            }
            const int j = i / (HDP / 2), f = 2 * (i % (HDP / 2)), key = k0 + 2 * j;
            const float2 a = load_pair(key <= last ? vc + (size_t)key * kvd + head : NULL, f, hd);
            const float2 b =
                load_pair(key + 1 <= last ? vc + (size_t)(key + 1) * kvd + head : NULL, f, hd);
            *(uint2 *)&vp[j * LDV + f] = make_uint2(bf16_pair(a.x, b.x), bf16_pair(a.y, b.y));
        }
        __syncthreads();

        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t *kb = &ks[(8 * j + g) * LDK + 8 * kk + t];
                mma_bf16(s[j], qa[kk], kb[0], kb[4]);
            }

            /* mask, then fold the tile into rows r0 (s[.][0..1]) and r1 (s[.][2..3]) */
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int p = first + (half ? r1 : r0);
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int key = k0 + 8 * j + 2 * t + e;
                    const bool seen = key <= p && (window <= 0 || p - key < window);
                    float *v = &s[j][2 * half + e];
                    *v = seen ? *v * scale : -INFINITY;
                    mx = fmaxf(mx, *v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mn = fmaxf(m[half], mx);
            const float base = mn == -INFINITY ? 0.0f : mn, alpha = expf(m[half] - base);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float *v = &s[j][2 * half + e];
                    *v = expf(*v - base);
                    sum += *v;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[half] = l[half] * alpha + sum;
            m[half] = mn;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                o[j][2 * half] *= alpha;
                o[j][2 * half + 1] *= alpha;
            }
        }

#pragma unroll
        for (int kk = 0; kk < ATT_BK / 16; kk++) {
            const uint32_t pa[4] = { bf16_pair(s[2 * kk][0], s[2 * kk][1]),
                                     bf16_pair(s[2 * kk][2], s[2 * kk][3]),
                                     bf16_pair(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                     bf16_pair(s[2 * kk + 1][2], s[2 * kk + 1][3]) };
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const uint32_t *vb = &vp[(8 * kk + t) * LDV + 8 * j + g];
                mma_bf16(o[j], pa, vb[0], vb[4 * LDV]);
            }
        }
    }

#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = half ? r1 : r0;
        if (r >= rows) continue;
        const float inv = 1.0f / l[half];
        bf16 *dst = out + ((size_t)(q0 + r) * n_heads + h) * hd;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const int d = 8 * j + 2 * t;
            if (d < hd)
                *(__nv_bfloat162 *)(dst + d) =
                    __floats2bfloat162_rn(o[j][2 * half] * inv, o[j][2 * half + 1] * inv);
        }
    }
}

/* Decode steps (a pass of at most DFL_ATTENTION_SPLIT_MAX_N tokens): the positions a
 * token sees are split into `splits` ranges, a block per (kv head, range, token), so that a
 * short pass fills the GPU where a block per head leaves most SMs idle and reads the whole
 * context serially. A block serves the kv head's whole query group (the heads that share
 * its K/V rows, up to G <= DFL_ATTENTION_SPLIT_MAX_GROUP), so each row is read once. Per
 * tile of 32 positions, its K and V loads all issued first: warps take keys in turn (lanes
 * split the features, stride 32, so rows are read coalesced) for the group's scores; warp w
 * keeps the running max and sum of the group's heads w, w + 4, ... (online softmax, lane j
 * = key j of the tile); then thread d adds p · V[.][d] for every head of the group. FP32
 * throughout, as the naive kernel. The block writes its unnormalised sums with their max
 * and sum to `part`; the last block of a (kv head, token) to finish (a counter per pair,
 * reset by that block) merges the ranges: a warp per head weighs them, then each thread
 * sums its features over the ranges in range order, so the result does not depend on
 * timing. part: [n][n_heads][splits][HDP + 2] floats; count: [n][n_kv_heads], zero between
 * launches. */
constexpr int SPLIT_THREADS = 128, SPLIT_TILE = 32;

template <int HDP, int G>
__global__ void __launch_bounds__(SPLIT_THREADS)
    attention_split_kernel(const float *__restrict__ q, const float *__restrict__ kc,
                           const float *__restrict__ vc, bf16 *__restrict__ out, float *part,
                           unsigned *count, int pos0, int n_heads, int n_kv_heads, int hd,
                           int window, int splits)
{
    constexpr int PL = HDP / 32;
    constexpr int NF = HDP > SPLIT_THREADS ? HDP / SPLIT_THREADS : 1; /* features a thread sums */
    __shared__ float qs[G][HDP];
    __shared__ float ps[G][SPLIT_TILE];
    __shared__ float run_m[G], run_l[G], alpha[G];
    __shared__ float weight[G][64]; /* the merge's, per range: lanes write two each */
    __shared__ bool merge;
    pdl_begin();
    const int kvh = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
    const int group = n_heads / n_kv_heads, h0 = kvh * group;
    const int n_ctx = pos0 + t + 1, lo = window > 0 && n_ctx > window ? n_ctx - window : 0;
    const long long span = n_ctx - lo;
    const int k_begin = lo + (int)(span * split / splits),
              k_end = lo + (int)(span * (split + 1) / splits);
    const size_t kvd = (size_t)n_kv_heads * hd, head = (size_t)kvh * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float scale = rsqrtf((float)hd);
    for (int i = threadIdx.x; i < G * HDP; i += SPLIT_THREADS) {
        const int g = i / HDP, d = i % HDP;
        qs[g][d] = g < group && d < hd ? q[((size_t)t * n_heads + h0 + g) * hd + d] : 0.0f;
    }
    if (threadIdx.x < G) {
        run_m[threadIdx.x] = -INFINITY;
        run_l[threadIdx.x] = 0.0f;
    }
    float acc[G][NF];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int f = 0; f < NF; f++) acc[g][f] = 0.0f;

    constexpr int KEYS_PER_WARP = SPLIT_TILE / (SPLIT_THREADS / 32);
    for (int k0 = k_begin; k0 < k_end; k0 += SPLIT_TILE) {
        /* the tile's K rows (this warp's keys) and V features (this thread's), every load
         * in flight at once; zero past the range */
        float kr[KEYS_PER_WARP][PL], vr[SPLIT_TILE][NF];
#pragma unroll
        for (int i = 0; i < KEYS_PER_WARP; i++) {
            const int key = k0 + warp + SPLIT_THREADS / 32 * i;
#pragma unroll
            for (int e = 0; e < PL; e++) {
                const int d = lane + 32 * e;
                kr[i][e] = key < k_end && d < hd ? kc[(size_t)key * kvd + head + d] : 0.0f;
            }
        }
#pragma unroll
        for (int j = 0; j < SPLIT_TILE; j++)
#pragma unroll
            for (int f = 0; f < NF; f++) {
                const int d = threadIdx.x + SPLIT_THREADS * f;
                vr[j][f] = k0 + j < k_end && d < hd ? vc[(size_t)(k0 + j) * kvd + head + d] : 0.0f;
            }
        __syncthreads(); /* qs and run_* written; the last tile's ps and alpha read */
#pragma unroll
        for (int i = 0; i < KEYS_PER_WARP; i++) {
            const int jj = warp + SPLIT_THREADS / 32 * i, key = k0 + jj;
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (g >= group) break;
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < PL; e++) s += qs[g][lane + 32 * e] * kr[i][e];
                s = warp_sum(s);
                if (lane == 0) ps[g][jj] = key < k_end ? s * scale : -INFINITY;
            }
        }
        __syncthreads();
        for (int g = warp; g < group; g += SPLIT_THREADS / 32) {
            const float s = ps[g][lane], m_old = run_m[g];
            const float m_new = fmaxf(m_old, warp_max(s));
            const float base = m_new == -INFINITY ? 0.0f : m_new;
            const float p = expf(s - base); /* a key past the range: exp(-inf) = 0 */
            const float sum = warp_sum(p);
            ps[g][lane] = p;
            __syncwarp(); /* every lane has read run_m[g] before lane 0 rewrites it */
            if (lane == 0) {
                const float a = expf(m_old - base);
                alpha[g] = a;
                run_m[g] = m_new;
                run_l[g] = run_l[g] * a + sum;
            }
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < G; g++) {
            if (g >= group) break;
#pragma unroll
            for (int f = 0; f < NF; f++) {
                float a = acc[g][f] * alpha[g];
#pragma unroll
                for (int j = 0; j < SPLIT_TILE; j++) a += ps[g][j] * vr[j][f];
                acc[g][f] = a;
            }
        }
    }

    /* fn(g, f, d) for each head g of the group and feature d = this thread's f-th */
    auto owned = [&](auto fn) {
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int f = 0; f < NF; f++) {
                const int d = threadIdx.x + SPLIT_THREADS * f;
                if (g < group && d < hd) fn(g, f, d);
            }
    };
    /* this range's partial: sums, then max and sum, per head of the group */
    const size_t stride = HDP + 2;
    float *mine = part + (((size_t)t * n_heads + h0) * splits + split) * stride;
    owned([&](int g, int f, int d) { mine[(size_t)g * splits * stride + d] = acc[g][f]; });
    __syncthreads(); /* run_m, run_l final (an empty range leaves -inf, 0) */
    if (threadIdx.x < group) {
        mine[(size_t)threadIdx.x * splits * stride + HDP] = run_m[threadIdx.x];
        mine[(size_t)threadIdx.x * splits * stride + HDP + 1] = run_l[threadIdx.x];
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *c = count + (size_t)t * n_kv_heads + kvh;
        merge = atomicAdd(c, 1u) == (unsigned)splits - 1;
        if (merge) *c = 0; /* the next launch starts after this one ends */
    }
    __syncthreads();
    if (!merge) return;
    __threadfence();
    /* a warp per head: lanes take ranges lane and lane + 32 (an empty one weighs 0) */
    static_assert(DFL_ATTENTION_SPLIT_MAX_RANGES <= 64, "two ranges a lane");
    for (int g = warp; g < group; g += SPLIT_THREADS / 32) {
        const float *r = part + (((size_t)t * n_heads + h0 + g) * splits) * stride;
        float m[2], l[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int sp = lane + 32 * e;
            m[e] = sp < splits ? __ldcg(r + sp * stride + HDP) : -INFINITY;
            l[e] = sp < splits ? __ldcg(r + sp * stride + HDP + 1) : 0.0f;
        }
        const float top = warp_max(fmaxf(m[0], m[1])); /* finite: a range holds the last key */
        const float w0 = expf(m[0] - top), w1 = expf(m[1] - top);
        const float inv = 1.0f / warp_sum(l[0] * w0 + l[1] * w1);
        weight[g][lane] = w0 * inv;
        weight[g][lane + 32] = w1 * inv;
    }
    __syncthreads();
    /* thread d sums its features of every head, a range's loads all in flight at once */
    const float *r = part + ((size_t)t * n_heads + h0) * splits * stride;
    float o[G][NF];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int f = 0; f < NF; f++) o[g][f] = 0.0f;
    constexpr int kMergeUnroll = G * NF <= 4 ? 8 : 2; /* ranges whose loads fly at once */
#pragma unroll kMergeUnroll
    for (int sp = 0; sp < splits; sp++)
        owned([&](int g, int f, int d) {
            o[g][f] += __ldcg(r + ((size_t)g * splits + sp) * stride + d) * weight[g][sp];
        });
    owned([&](int g, int f, int d) {
        out[((size_t)t * n_heads + h0 + g) * hd + d] = __float2bfloat16(o[g][f]);
    });
}

/* One thread per output element (token t, feature i < h): out[t][i] =
 * bf16(silu(gate[t][i]) * up[t][i]), gate and up rows `ld` floats apart (h, or 2h when they
 * are the halves of a stacked gate|up product). */
__global__ void swiglu_kernel(const float *gate, const float *up, int ld, bf16 *out, int h,
                              size_t n)
{
    pdl_begin();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        size_t at = i / h * ld + i % h;
        float g = gate[at];
        out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * up[at]);
    }
}

/* A stacked q|k|v product (rows of Q + 2 KV floats) into place: q rotated into q ([t][Q]),
 * k rotated into the cache rows kc ([t][KV]), v copied into vc; the rotation is
 * rope_kernel's. A grid row of blocks per token; a thread takes one pair (i, i + hd/2) of
 * the q then k heads (contiguous in the row), or one v feature. */
__global__ void qkv_rope_kernel(const float *qkv, float *q, float *kc, float *vc, int n_heads,
                                int n_kv_heads, int hd, int pos0, const float *cos_t,
                                const float *sin_t)
{
    pdl_begin();
    const int half = hd / 2, t = blockIdx.x, Q = n_heads * hd, KV = n_kv_heads * hd;
    const int pairs = (n_heads + n_kv_heads) * half, k = blockIdx.y * blockDim.x + threadIdx.x;
    const float *row = qkv + (size_t)t * (Q + 2 * KV);
    if (k < pairs) {
        const float *cs = cos_t + (size_t)(pos0 + t) * half,
                    *sn = sin_t + (size_t)(pos0 + t) * half;
        const int head = k / half, i = k % half;
        const float *src = row + head * hd;
        float *dst = head < n_heads ? q + (size_t)t * Q + head * hd
                                    : kc + (size_t)t * KV + (head - n_heads) * hd;
        float a = src[i], b = src[i + half];
        dst[i] = a * cs[i] - b * sn[i];
        dst[i + half] = b * cs[i] + a * sn[i];
    } else if (k - pairs < KV) {
        vc[(size_t)t * KV + k - pairs] = row[Q + KV + k - pairs];
    }
}

/* ------------------------------------------------------------------ host side ---- */

static const int THREADS = 256;

/* kernel<<<grid, block, smem, s>>>(args), with programmatic dependent launch where `pdl`:
 * the kernel may be scheduled while the one before it on s finishes (pdl_begin waits for
 * it), so that launch latency and the fused matmul's weight prefetch overlap the tail of
 * the kernel before. Errors are left for cudaGetLastError, as a <<<>>> launch's: checked
 * before every product (gemm, op_linear) and at the end of attention_launch and gpu_layer. */
template <typename... Params, typename... Args>
static void launch(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t s, Args... args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

/* Shared memory a tiled block needs for head_dim hd (0: over DFL_ATTENTION_TILED_MAX_HD). */
static size_t attention_tiled_bytes(int hd)
{
    return hd <= 64                           ? attention_tiled_smem(64)
           : hd <= 128                        ? attention_tiled_smem(128)
           : hd <= DFL_ATTENTION_TILED_MAX_HD ? attention_tiled_smem(256)
                                              : 0;
}

/* Reads the current device's limits and allows every attention kernel up to the opt-in
 * shared memory (a maximum: a launch still takes only what it asks for). */
static cudaError_t attention_setup(attention_device *dev)
{
    int id;
    cudaError_t e = cudaGetDevice(&id);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&dev->optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, id);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&dev->major, cudaDevAttrComputeCapabilityMajor, id);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&dev->sms, cudaDevAttrMultiProcessorCount, id);
    cudaFuncAttributes fa;
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, (const void *)attention_kernel);
    /* pdl_begin's wait is compiled for sm_90+ only: kernels the driver compiled from older
     * PTX (sm_80's or sm_75's) would not wait, so no early start */
    dev->pdl = e == cudaSuccess && dev->major >= 9 && fa.ptxVersion >= 90;
    if (e == cudaSuccess) {
        dev->naive_max = dev->optin - (int)fa.sharedSizeBytes;
        e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 dev->naive_max);
    }
    const void *tiled[] = { (const void *)attention_tiled_kernel<64>,
                            (const void *)attention_tiled_kernel<128>,
                            (const void *)attention_tiled_kernel<256> };
    for (int i = 0; i < 3 && e == cudaSuccess; i++) {
        dev->tiled_max[i] = 0;
        if ((e = cudaFuncGetAttributes(&fa, tiled[i])) != cudaSuccess) break;
        if (attention_tiled_smem(64 << i) + fa.sharedSizeBytes <= (size_t)dev->optin) {
            dev->tiled_max[i] = (int)attention_tiled_smem(64 << i);
            e = cudaFuncSetAttribute(tiled[i], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     dev->tiled_max[i]);
        }
    }
    return e;
}

/* The kernel a pass of n tokens reaching position `ctx` - 1 runs, or AUTO when the one
 * asked for (or, for AUTO, every one) cannot: naive keeps one score per position in shared
 * memory and takes at most 65535 tokens a pass, tiled, mma and split take head_dim up to a
 * limit, mma needs sm_80, split takes short passes and query groups up to a size. */
static dfl_attention attention_pick(dfl_attention kind, int n, int ctx, int hd, int group,
                                    const attention_device *dev)
{
    const bool split_ok = n <= DFL_ATTENTION_SPLIT_MAX_N && hd <= DFL_ATTENTION_SPLIT_MAX_HD &&
                          group <= DFL_ATTENTION_SPLIT_MAX_GROUP;
    const size_t tiled = attention_tiled_bytes(hd);
    /* naive: a grid row per token (gridDim.y <= 65535) */
    const bool naive_ok =
        (size_t)(ctx + hd) * sizeof(float) <= (size_t)dev->naive_max && n <= 65535;
    const int ti = hd <= 64 ? 0 : hd <= 128 ? 1 : 2;
    const bool tiled_ok = tiled && tiled <= (size_t)dev->tiled_max[ti];
    const bool mma_ok = hd <= DFL_ATTENTION_MMA_MAX_HD && dev->major >= 8;
    switch (kind) {
    case DFL_ATTENTION_NAIVE: return naive_ok ? kind : DFL_ATTENTION_AUTO;
    case DFL_ATTENTION_TILED: return tiled_ok ? kind : DFL_ATTENTION_AUTO;
    case DFL_ATTENTION_MMA: return mma_ok ? kind : DFL_ATTENTION_AUTO;
    case DFL_ATTENTION_SPLIT: return split_ok ? kind : DFL_ATTENTION_AUTO;
    default:
        if (split_ok) return DFL_ATTENTION_SPLIT; /* decode: fills the GPU */
        if (mma_ok) return DFL_ATTENTION_MMA;     /* the fastest at every length measured */
        if ((n >= DFL_ATTENTION_TILED_MIN || ctx >= DFL_ATTENTION_LONG_CTX || !naive_ok) &&
            tiled_ok)
            return DFL_ATTENTION_TILED;
        return naive_ok ? DFL_ATTENTION_NAIVE : DFL_ATTENTION_AUTO;
    }
}

static int split_hdp(int hd) { return hd <= 64 ? 64 : hd <= 128 ? 128 : 256; }

static size_t split_part_bytes(int n_heads, int hd)
{
    return (size_t)DFL_ATTENTION_SPLIT_MAX_N * n_heads * DFL_ATTENTION_SPLIT_MAX_RANGES *
           (split_hdp(hd) + 2) * sizeof(float);
}

static size_t split_count_bytes(int n_kv_heads)
{
    return (size_t)DFL_ATTENTION_SPLIT_MAX_N * n_kv_heads * sizeof(unsigned);
}

/* Ranges per token: about two blocks per SM in all, each at least a tile of positions
 * (at 500 positions, 16 ranges of 32: 12.2 us a layer against 13.8 for 32 of 16 or more
 * blocks, H100, bench/RESULTS.md). */
static int split_ranges(int n, int ctx, int window, int n_kv_heads, const attention_device *dev)
{
    const long long span = window > 0 && window < ctx ? window : ctx;
    const long long blocks = (long long)n * n_kv_heads;
    long long r = (2LL * dev->sms + blocks - 1) / blocks;
    const long long tiles = (span + SPLIT_TILE - 1) / SPLIT_TILE;
    if (r > tiles) r = tiles;
    if (r > DFL_ATTENTION_SPLIT_MAX_RANGES) r = DFL_ATTENTION_SPLIT_MAX_RANGES;
    return r < 1 ? 1 : (int)r;
}

/* Launches the attention of n tokens at [pos0, pos0 + n) (see dfl_gpu_attention); sizes
 * already checked, attention_setup done on this device; ws sized for n_heads, hd. */
static df11_status attention_launch(dfl_attention kind, const float *q, const float *kc,
                                    const float *vc, bf16 *out, int n, int pos0, int n_heads,
                                    int n_kv_heads, int hd, int window, const attention_device *dev,
                                    const attention_ws *ws, cudaStream_t s, char *err,
                                    size_t errlen)
{
    const dfl_attention k = attention_pick(kind, n, pos0 + n, hd, n_heads / n_kv_heads, dev);
    if (k == DFL_ATTENTION_AUTO) {
        snprintf(err, errlen,
                 "attention (kind %d): no kernel for %d tokens at positions [%d, %d), head_dim "
                 "%d, %d heads per kv head (%d bytes of shared memory per block, sm_%d0)",
                 (int)kind, n, pos0, pos0 + n, hd, n_heads / n_kv_heads, dev->optin, dev->major);
        return DF11_ERR_UNSUPPORTED;
    }
    const dim3 grid(n_heads, (n + ATT_BQ - 1) / ATT_BQ);
    if (k == DFL_ATTENTION_SPLIT) {
        const int ranges = split_ranges(n, pos0 + n, window, n_kv_heads, dev);
        const dim3 sgrid(n_kv_heads, ranges, n);
        /* rows: head_dim padded to 64, 128, 256; columns: query groups of up to 4 heads, more */
        static const decltype(&attention_split_kernel<64, 4>) kernels[3][2] = {
            { attention_split_kernel<64, 4>,
              attention_split_kernel<64, DFL_ATTENTION_SPLIT_MAX_GROUP> },
            { attention_split_kernel<128, 4>,
              attention_split_kernel<128, DFL_ATTENTION_SPLIT_MAX_GROUP> },
            { attention_split_kernel<256, 4>,
              attention_split_kernel<256, DFL_ATTENTION_SPLIT_MAX_GROUP> },
        };
        launch(dev->pdl, kernels[split_hdp(hd) / 128][n_heads / n_kv_heads > 4], sgrid,
               SPLIT_THREADS, 0, s, q, kc, vc, out, ws->part, ws->count, pos0, n_heads, n_kv_heads,
               hd, window, ranges);
    } else if (k == DFL_ATTENTION_MMA) {
        launch(dev->pdl, hd <= 64 ? attention_mma_kernel<64> : attention_mma_kernel<128>, grid, 128,
               0, s, q, kc, vc, out, n, pos0, n_heads, n_kv_heads, hd, window);
    } else if (k == DFL_ATTENTION_NAIVE) {
        const size_t smem = (size_t)(hd + pos0 + n) * sizeof(float);
        launch(dev->pdl, attention_kernel, dim3(n_heads, n), 128, smem, s, q, kc, vc, out, pos0,
               n_heads, n_kv_heads, hd, window);
    } else {
        const size_t smem = attention_tiled_bytes(hd);
#define TILED(HDP)                                                                                 \
    launch(dev->pdl, attention_tiled_kernel<HDP>, grid, ATT_THREADS, smem, s, q, kc, vc, out, n,   \
           pos0, n_heads, n_kv_heads, hd, window)
        if (hd <= 64)
            TILED(64);
        else if (hd <= 128)
            TILED(128);
        else
            TILED(256);
#undef TILED
    }
    CUDA_TRY(cudaGetLastError());
    return DF11_OK;
}

df11_status dfl_gpu_attention(dfl_attention kind, const float *q, const float *kc, const float *vc,
                              uint16_t *out, int n, int pos0, int n_heads, int n_kv_heads, int hd,
                              int window, void *stream, char *err, size_t errlen)
{
    if (!q || !kc || !vc || !out || n < 1 || pos0 < 0 || n > INT_MAX - pos0 || n_heads < 1 ||
        n_kv_heads < 1 || n_heads % n_kv_heads || hd < 2 || hd % 2 || window < 0 ||
        (unsigned)kind > DFL_ATTENTION_SPLIT) {
        snprintf(err, errlen,
                 "attention: invalid arguments (kind %d, %d tokens at %d, %d heads, %d kv heads, "
                 "head_dim %d, window %d)",
                 (int)kind, n, pos0, n_heads, n_kv_heads, hd, window);
        return DF11_ERR_INVALID_ARG;
    }
    attention_device dev;
    CUDA_TRY(attention_setup(&dev));
    /* this call's own split workspace, in stream order (not the engine's hot path) */
    cudaStream_t s = (cudaStream_t)stream;
    attention_ws ws = { NULL, NULL };
    const bool split =
        attention_pick(kind, n, pos0 + n, hd, n_heads / n_kv_heads, &dev) == DFL_ATTENTION_SPLIT;
    if (split) { /* one allocation, so that no failure below leaves a part of it behind */
        const size_t part = split_part_bytes(n_heads, hd), count = split_count_bytes(n_kv_heads);
        CUDA_TRY(cudaMallocAsync((void **)&ws.part, part + count, s));
        ws.count = (unsigned *)((char *)ws.part + part);
        cudaError_t e = cudaMemsetAsync(ws.count, 0, count, s);
        if (e != cudaSuccess) {
            cudaFreeAsync(ws.part, s);
            CUDA_TRY(e);
        }
    }
    df11_status st = attention_launch(kind, q, kc, vc, (bf16 *)out, n, pos0, n_heads, n_kv_heads,
                                      hd, window, &dev, &ws, s, err, errlen);
    if (split) CUDA_TRY(cudaFreeAsync(ws.part, s));
    return st;
}

/* Y[n][rows] = X[n][cols] · W[rows][cols]^T (+ beta * Y). Checks the engine's launches
 * before it first, as op_linear: a library may take or clear their pending error. */
static df11_status gemm(dfl_gpu *g, const void *w, const bf16 *x, float *y, int n, int rows,
                        int cols, int ldy, float beta, char *err, size_t errlen)
{
    CUDA_TRY(cudaGetLastError());
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
    CUDA_TRY(cudaGetLastError()); /* the engine's launches before it (gemm's note) */
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
    CUDA_TRY(cudaSetDevice(g->device));
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
    cudaSetDevice(g->device);
    if (g->stream) cudaStreamSynchronize(g->stream);
    if (g->done) cudaEventDestroy(g->done);
    if (g->arrived) cudaEventDestroy(g->arrived);
    void *bufs[] = { g->x,      g->xb,     g->q,           g->att,         g->gate,     g->hb,
                     g->logits, g->tokens, g->kc,          g->vc,          g->rope_cos, g->rope_sin,
                     g->norms,  g->proj,   g->att_ws.part, g->att_ws.count };
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
    const size_t L = (size_t)(g->end - g->first);
    CUDA_TRY(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&g->arrived, cudaEventDisableTiming));
    if (cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
        g->blas = NULL;
        snprintf(err, errlen, "cublasCreate failed");
        return DF11_ERR_DEVICE;
    }
    cublasSetStream(g->blas, g->stream);

    /* Every pass must find a kernel (attention_pick): a decode step at the last position,
     * and a pass of max_batch tokens. */
    CUDA_TRY(attention_setup(&g->att_dev));
    if (g->plain_launch) g->att_dev.pdl = false;
    const int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    if (attention_pick(g->attention, 1, (int)S, hd, group, &g->att_dev) == DFL_ATTENTION_AUTO ||
        attention_pick(g->attention, g->max_batch, (int)S, hd, group, &g->att_dev) ==
            DFL_ATTENTION_AUTO) {
        snprintf(err, errlen,
                 "attention (%s) cannot run head_dim %d over %zu positions, %d tokens a pass: "
                 "the naive kernel needs %zu bytes of shared memory (the GPU has %d) and takes "
                 "65535 tokens a pass, tiled takes head_dim up to %d, mma up to %d on sm_80+ "
                 "(this is sm_%d0), split up to %d, %d tokens a pass and %d heads per kv head",
                 dfl_attention_name(g->attention), hd, S, g->max_batch, (S + hd) * sizeof(float),
                 g->att_dev.optin, DFL_ATTENTION_TILED_MAX_HD, DFL_ATTENTION_MMA_MAX_HD,
                 g->att_dev.major, DFL_ATTENTION_SPLIT_MAX_HD, DFL_ATTENTION_SPLIT_MAX_N,
                 DFL_ATTENTION_SPLIT_MAX_GROUP);
        return DF11_ERR_UNSUPPORTED;
    }

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
        { (void **)&g->att_ws.part, split_part_bytes(c->n_heads, hd), &g->scratch_bytes },
        { (void **)&g->att_ws.count, split_count_bytes(c->n_kv_heads), &g->scratch_bytes },
        { (void **)&g->kc, L * S * KV * 4, &g->kv_bytes },
        { (void **)&g->vc, L * S * KV * 4, &g->kv_bytes },
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        df11_status st = gpu_alloc(g, bufs[i].p, bufs[i].bytes, bufs[i].ctr, err, errlen);
        if (st != DF11_OK) return st;
    }
    g->up = g->gate + B * H;
    /* On g->stream, as the tables below: the stream does not wait for the legacy one */
    CUDA_TRY(cudaMemsetAsync(g->att_ws.count, 0, split_count_bytes(c->n_kv_heads), g->stream));
    if (g->lin) {
        df11_status st;
        if ((st = gpu_alloc(g, (void **)&g->norms, dfl_norms_count(c) * 2, &g->scratch_bytes, err,
                            errlen)) != DF11_OK ||
            (st = gpu_alloc(g, (void **)&g->proj, B * D * 4, &g->scratch_bytes, err, errlen)) !=
                DF11_OK)
            return st;
        /* Startup, not the hot path: every block is acquired once here. */
        st = dfl_norms_copy(c, &g->prov, g->first, g->end, g->stream, device_copy, NULL,
                            (uint16_t *)g->norms, err, errlen);
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
    /* On g->stream: cudaMemcpy from pageable memory may return before its copy lands, on
     * the legacy stream, which g->stream (non-blocking) does not wait for. A pageable
     * source has been read when the call returns (dfl_gpu_rope_rows). */
    cudaError_t e = cudaMemcpyAsync(g->rope_cos, cs, S * c->head_dim / 2 * 4,
                                    cudaMemcpyHostToDevice, g->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(g->rope_sin, sn, S * c->head_dim / 2 * 4, cudaMemcpyHostToDevice,
                            g->stream);
    free(cs);
    free(sn);
    CUDA_TRY(e);
    return DF11_OK;
}

df11_status dfl_gpu_create(const dfl_config *cfg, const df11_provider *p, const dfl_gpu_range *r,
                           int max_seq, int max_batch, dfl_attention attention, int plain_launch,
                           const dfl_linears *linears, const df11_weight *embed, dfl_gpu **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (r->device >= 0) CUDA_TRY(cudaSetDevice(r->device));
    int device;
    CUDA_TRY(cudaGetDevice(&device));
    dfl_gpu *g = new dfl_gpu();
    g->cfg = *cfg;
    g->attention = attention;
    g->plain_launch = plain_launch;
    g->prov = *p;
    g->device = device;
    g->first = r->first;
    g->end = r->end;
    g->embeds = r->embeds;
    g->heads = r->heads;
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

/* rmsnorm_kernel's out = norm(x (+= add)) for n rows of dim, on s: the vector kernel where
 * the row fits it and every pointer is aligned for it. */
static void rmsnorm_on(cudaStream_t s, bool pdl, float *x, const float *add, const void *w,
                       bf16 *out, int n, int dim, float eps)
{
    const int nv = dim / 4;
    const bool vec = dim % 4 == 0 && nv <= 8 * 1024 && (uintptr_t)x % 16 == 0 &&
                     (uintptr_t)add % 16 == 0 && (uintptr_t)w % 8 == 0 && (uintptr_t)out % 8 == 0;
    if (!vec) {
        launch(pdl, rmsnorm_kernel, n, THREADS, 0, s, x, add, (const bf16 *)w, out, dim, eps);
        return;
    }
    const int threads = nv >= 1024 ? 1024 : (nv + 31) / 32 * 32, per = (nv + threads - 1) / threads;
#define RMS(VPT)                                                                                   \
    launch(pdl, rmsnorm_vec_kernel<VPT>, n, threads, 0, s, x, add, (const bf16 *)w, out, dim, eps)
    if (per <= 1)
        RMS(1);
    else if (per <= 2)
        RMS(2);
    else if (per <= 4)
        RMS(4);
    else
        RMS(8);
#undef RMS
}

static void rmsnorm(const dfl_gpu *g, float *x, const float *add, const void *w, bf16 *out, int n,
                    int dim, float eps)
{
    rmsnorm_on(g->stream, g->att_dev.pdl, x, add, w, out, n, dim, eps);
}

df11_status dfl_gpu_rmsnorm(float *x, const float *add, const uint16_t *w, uint16_t *out, int n,
                            int dim, float eps, void *stream, char *err, size_t errlen)
{
    if (!x || !w || !out || n < 1 || dim < 1 || !(eps >= 0.0f)) {
        snprintf(err, errlen, "rmsnorm: invalid arguments (%d rows of %d, eps %g)", n, dim,
                 (double)eps);
        return DF11_ERR_INVALID_ARG;
    }
    rmsnorm_on((cudaStream_t)stream, false, x, add, w, (bf16 *)out, n, dim, eps);
    CUDA_TRY(cudaGetLastError());
    return DF11_OK;
}

/* y[t][i] += b[i] for n rows ld floats apart, on g->stream. */
static void add_bias(dfl_gpu *g, float *y, size_t ld, const bf16 *b, int n, int width)
{
    size_t total = (size_t)n * width;
    launch(g->att_dev.pdl, bias_kernel, (unsigned)((total + THREADS - 1) / THREADS), THREADS, 0,
           g->stream, y, ld, b, width, total);
}

/* Each of n_heads heads of n token rows (`stride` floats apart) RMS-normed by w (BF16
 * [head_dim]), on g->stream; nothing when w is NULL (no qk_norm). */
static void head_norm(dfl_gpu *g, float *v, int stride, int n_heads, const void *w, int n)
{
    if (!w) return;
    const int per_block = THREADS / 32;
    const dim3 grid((unsigned)n, (unsigned)((n_heads + per_block - 1) / per_block));
    launch(g->att_dev.pdl, head_rmsnorm_kernel, grid, THREADS, 0, g->stream, v, stride, n_heads,
           g->cfg.head_dim, (const bf16 *)w, g->cfg.norm_eps);
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
    const size_t li = l - (uint32_t)g->first; /* the cache holds this GPU's layers */
    float *kc = g->kc + (li * g->max_seq + pos) * KV;
    float *vc = g->vc + (li * g->max_seq + pos) * KV;
    cudaStream_t s = g->stream;
    const bool pdl = g->att_dev.pdl;
    df11_status st;
    /* Y = X·Wᵀ; into the residual (RES): the engine's GEMM adds to x (beta 1), the op
     * writes g->proj, which the next RMSNorm adds. */
#define LINEAR(W, X, Y, ROWS, COLS, RES)                                                           \
    if ((st = op ? op_linear(g, &op->W, X, (RES) ? g->proj : (Y), n, err, errlen)                  \
                 : gemm(g, w->W, X, Y, n, ROWS, COLS, ROWS, (RES) ? 1.0f : 0.0f, err, errlen)) !=  \
        DF11_OK)                                                                                   \
    return st

    const bool stacked = op && g->lin->stacked;
    rmsnorm(g, g->x, *add, w->attn_norm, g->xb, n, D, c->norm_eps);
    if (stacked) { /* one product, rows [q | k | v] (in g->gate, free until the MLP) */
        if ((st = op_linear(g, &op->qkv, g->xb, g->gate, n, err, errlen)) != DF11_OK) return st;
        if (w->bq) /* q|k|v biases are contiguous in g->norms, as the stacked row */
            add_bias(g, g->gate, Q + 2 * KV, (const bf16 *)w->bq, n, Q + 2 * KV);
        head_norm(g, g->gate, Q + 2 * KV, c->n_heads, w->q_norm, n);
        head_norm(g, g->gate + Q, Q + 2 * KV, c->n_kv_heads, w->k_norm, n);
        const int items = (c->n_heads + c->n_kv_heads) * (hd / 2) + KV;
        launch(pdl, qkv_rope_kernel, dim3(n, (items + THREADS - 1) / THREADS), THREADS, 0, s,
               g->gate, g->q, kc, vc, c->n_heads, c->n_kv_heads, hd, pos, g->rope_cos, g->rope_sin);
    } else {
        LINEAR(wq, g->xb, g->q, Q, D, 0);
        LINEAR(wk, g->xb, kc, KV, D, 0);
        LINEAR(wv, g->xb, vc, KV, D, 0);
        if (w->bq) add_bias(g, g->q, Q, (const bf16 *)w->bq, n, Q);
        if (w->bk) add_bias(g, kc, KV, (const bf16 *)w->bk, n, KV);
        if (w->bv) add_bias(g, vc, KV, (const bf16 *)w->bv, n, KV);
        head_norm(g, g->q, Q, c->n_heads, w->q_norm, n);
        head_norm(g, kc, KV, c->n_kv_heads, w->k_norm, n);
        launch(pdl, rope_kernel, n, THREADS, 0, s, g->q, Q, c->n_heads, hd, pos, g->rope_cos,
               g->rope_sin);
        launch(pdl, rope_kernel, n, THREADS, 0, s, kc, KV, c->n_kv_heads, hd, pos, g->rope_cos,
               g->rope_sin);
    }
    if ((st = attention_launch(g->attention, g->q, g->kc + li * g->max_seq * KV,
                               g->vc + li * g->max_seq * KV, g->att, n, pos, c->n_heads,
                               c->n_kv_heads, hd, c->sliding_window, &g->att_dev, &g->att_ws, s,
                               err, errlen)) != DF11_OK)
        return st;
    LINEAR(wo, g->att, g->x, D, Q, 1); /* x += o_proj(att) */
    if (w->bo) add_bias(g, op ? g->proj : g->x, D, (const bf16 *)w->bo, n, D);

    rmsnorm(g, g->x, op ? g->proj : NULL, w->ffn_norm, g->xb, n, D, c->norm_eps);
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
    launch(pdl, swiglu_kernel, (unsigned)((nh + THREADS - 1) / THREADS), THREADS, 0, s, g->gate, up,
           ld, g->hb, H, nh);
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
    CUDA_TRY(cudaSetDevice(g->device));

    if (!g->embeds) {
        /* the hidden state came from the previous GPU (dfl_gpu_hand_on) */
    } else if (g->embed) { /* ids are read before the call returns: no copy to the device */
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
        launch(g->att_dev.pdl, embed_kernel, n, THREADS, 0, s, (const bf16 *)emb, g->tokens, g->x,
               D);
        if (p->tensor_release) p->tensor_release(p->ctx, "model.embed_tokens.weight", s);
    }

    /* op path: down_proj's output, not yet added to x */
    const float *add = !g->embeds && g->pending_in ? g->proj : NULL;
    for (uint32_t l = (uint32_t)g->first; l < (uint32_t)g->end; l++) {
        if (g->lin) { /* op path: no block acquired, norms from the engine's copy */
            dfl_layer_weights w;
            dfl_norms_at(c, (const uint16_t *)g->norms, l, &w);
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
    g->pending_out = add != NULL;
    /* Without logits x is not read again here (the next pass starts from the embeddings, or
     * the next GPU takes it with the pending add), so that add can be left. */
    if (!logits || !g->heads) return DF11_OK;

    const size_t last = (size_t)(n - 1) * D;
    if (g->lin) {
        rmsnorm(g, g->x + last, add ? add + last : NULL, g->norms + 2 * (size_t)c->n_layers * D,
                g->xb, 1, D, c->norm_eps);
        st = op_linear(g, &g->lin->lm_head, g->xb, g->logits, 1, err, errlen);
    } else {
        const void *norm, *head;
        st = dfl_tensor_get(p, "model.norm.weight", D, 0, s, &norm, err, errlen);
        if (st != DF11_OK) return st;
        rmsnorm(g, g->x + last, NULL, norm, g->xb, 1, D, c->norm_eps);
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

df11_status dfl_gpu_hand_on(dfl_gpu *from, dfl_gpu *to, int n, char *err, size_t errlen)
{
    const size_t bytes = (size_t)n * from->cfg.dim * sizeof(float);
    if (!from->peer_tried) { /* else cudaMemcpyPeerAsync stages through host memory */
        from->peer_tried = 1;
        int can = 0;
        if (from->device != to->device &&
            cudaDeviceCanAccessPeer(&can, to->device, from->device) == cudaSuccess && can) {
            CUDA_TRY(cudaSetDevice(to->device));
            if (cudaDeviceEnablePeerAccess(from->device, 0) != cudaSuccess)
                (void)cudaGetLastError(); /* already enabled, or refused: copies still work */
        }
    }
    /* The copy runs on `to`'s stream once `from` is done; `from` overwrites x (the next
     * pass) only after the copy has read it. */
    CUDA_TRY(cudaSetDevice(from->device));
    CUDA_TRY(cudaEventRecord(from->done, from->stream));
    CUDA_TRY(cudaSetDevice(to->device));
    CUDA_TRY(cudaStreamWaitEvent(to->stream, from->done, 0));
    CUDA_TRY(cudaMemcpyPeerAsync(to->x, to->device, from->x, from->device, bytes, to->stream));
    to->pending_in = from->pending_out;
    if (from->pending_out)
        CUDA_TRY(
            cudaMemcpyPeerAsync(to->proj, to->device, from->proj, from->device, bytes, to->stream));
    CUDA_TRY(cudaEventRecord(to->arrived, to->stream));
    CUDA_TRY(cudaSetDevice(from->device));
    CUDA_TRY(cudaStreamWaitEvent(from->stream, to->arrived, 0));
    return DF11_OK;
}
