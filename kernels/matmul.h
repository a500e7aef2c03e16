/* C entry points of the fused matmul on fixed-code tensors (kernels/fused_matmul.cu): y =
 * x·Wᵀ straight from a fixed-code (EXP_FIXED, EXP_FIXED8) tensor's payload in device memory,
 * W decoded in registers and never written back to global memory. No CUDA types here;
 * streams travel as void * (a cudaStream_t). sm_80 or newer (mma.m16n8k16 on BF16,
 * cp.async) up to batch 32; past it the wgmma kernel (kernels/fused_gemm.cu) on sm_90a,
 * elsewhere the mma.sync kernel 32 rows of x at a time. At the end, the fused matmul on
 * Huffman-coded tensors (kernels/decode.cu's chunk decoder, the products on CUDA cores).
 *
 * Accuracy, both: fp32 accumulation (MMA products and sums in fp32, split-K partials summed in
 * fp32 in CTA order), so |y - exact| <= K·2⁻²³·Σ|x·w| as for any fp32 sum; plus half a BF16
 * ulp where y is BF16 (rounded to nearest even). Deterministic: the same inputs on the same
 * device give the same bits, launch after launch.
 */
#ifndef DF11_KERNELS_MATMUL_H
#define DF11_KERNELS_MATMUL_H

#include <stdint.h>

#include "df11/status.h"
#include "kernels/decode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest batch the mma.sync kernel takes in one launch. */
#define DF11_FUSED_MAX_BATCH 32
/* The smallest batch the wgmma kernel takes where it runs (below it, the mma.sync kernel):
 * from 25 rows, where the mma.sync kernel would take 4 groups of 8, the wgmma kernel is 7-9%
 * faster on the 8B block; at 17-24 it is 1% slower to 1% faster (bench/RESULTS.md,
 * twenty-third session). */
#ifndef DF11_FUSED_GEMM_MIN_BATCH
#define DF11_FUSED_GEMM_MIN_BATCH 25
#endif
/* Where the wgmma kernel runs, the fused path's default limit (df11i_fused_matmul_default_max):
 * past it decode + cuBLAS is faster (df11-bench matmul, bench/RESULTS.md: at 128 the wgmma
 * kernel is 1.5x faster; past it each 128-row batch tile decodes W again, and it is slower). */
#define DF11_FUSED_GEMM_MAX_BATCH 128
/* The most tensors one launch multiplies (a stacked weight's parts). */
#define DF11_FUSED_MAX_PARTS 8

/* One tensor of a launch: an EXP_FIXED tensor of a plan (kernels/decode.h), its offsets
 * relative to `payload` (device memory). */
typedef struct df11i_fused_part {
    const df11i_gpu_tensor_desc *d;
    const void *payload;
} df11i_fused_part;

/* 1 when the current device can run the fused kernel (sm_80+), else 0. */
int df11i_fused_matmul_supported(void);

/* 1 when the fused kernels' code on the current device has griddepcontrol (sm_90+ code or PTX
 * on an sm_90+ GPU), so that a programmatic launch of them waits as it must; else 0 (code
 * the driver compiled from sm_80 or sm_75 PTX has none). Every fused kernel is in one
 * target, compiled for the same architectures. */
int df11i_fused_matmul_pdl(void);

/* 1 when the current device's batch 1..8 kernel copies its weights two steps ahead, not one
 * (DRAM bandwidth above 30 GB/s an SM; kernels/fused_matmul.cu's kAheadDeep); else 0. The
 * device's own choice, whatever df11i_fused_matmul_test_deep forces. */
int df11i_fused_matmul_deep(void);

/* The largest batch for which the fused path beats decode + cuBLAS on the current device, for
 * a tensor of `cols` columns: DF11_FUSED_GEMM_MAX_BATCH where the wgmma kernel runs and takes
 * them (df11i_fused_gemm_takes_cols), else DF11_FUSED_MAX_BATCH (past it, 32-row launches
 * are slower than decode + cuBLAS); 0 where the fused kernel cannot run. */
uint32_t df11i_fused_matmul_default_max(uint64_t cols);

/* Bytes of workspace df11i_fused_matmul needs for a launch over n_parts tensors of these
 * rows and `cols` columns, at any batch, on the current device. Its first half must be
 * zero before the first launch, and every launch leaves it zero: it holds the mma.sync
 * kernel's split-sum slots at batch 1..8 (a piece's words are never 0 once written) and
 * its semaphore words past 8 (one per 16-row strip), and the wgmma kernel's semaphore words
 * (one per 128-row block and batch tile where it splits K); the split-K partials past batch
 * 8 lie at its end, in the second half (the Huffman kernel's workspace below is laid out
 * the same way), and every launch checks that they do (DF11_ERR_STATE). It is twice the
 * larger need (for either kernel, df11i_split_ws): so launches may share one workspace of
 * the largest of their sizes, the partials of one never reaching the zero half of another.
 * DF11_ERR_UNSUPPORTED when the device or the shape is out of reach. */
df11_status df11i_fused_matmul_workspace(uint32_t n_parts, const uint64_t *rows, uint64_t cols,
                                         uint64_t *bytes);

/* The stream-K split of nu work units over g CTAs, CTA c taking units [c nu / g, (c + 1) nu /
 * g): the CTA that holds unit u (0 <= u < nu), ((u + 1) g - 1) / nu. Taken through nu's fp64
 * reciprocal (inv_nu = 1.0 / nu) and one correction (df11i_div_recip), exact for every split
 * a launch makes: 1 <= g <= nu <= INT32_MAX (the wgmma kernel's grid may reach nu). The fused
 * kernels take it at every split sum, on their launches' last path, where the division the
 * compiler emits is a chain of ~20 dependent instructions (a call, past 32 bits): the 8B
 * block 0.8-1.2% faster at B = 1..16 (bench/RESULTS.md). */
#ifdef __CUDACC__
#define DF11I_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DF11I_HOST_DEVICE inline
#endif
/* num / den for 0 <= num < 2^62, 1 <= den <= 2^31 and a quotient below 2^50 (inv_den =
 * 1.0 / den): num's conversion, the reciprocal and the product each round by at most 2^-53
 * relative, so the product is within 3 2^-53 q < 1 of the quotient q and its truncation at
 * most one off either way, which the remainder corrects (q den stays below 2^63). */
static DF11I_HOST_DEVICE long long df11i_div_recip(long long num, long long den, double inv_den)
{
    long long q = (long long)((double)num * inv_den);
    const long long r = num - q * den;
    if (r < 0)
        q--;
    else if (r >= den)
        q++;
    return q;
}
static DF11I_HOST_DEVICE int df11i_cta_of(long long u, int nu, int g, double inv_nu)
{
    return (int)df11i_div_recip((u + 1) * g - 1, nu, inv_nu);
}
/* CTA c's first unit, c nu / g, the same way (inv_g = 1.0 / g): every CTA computes its
 * range before its first copy and again at its split sum, where the compiler's division is
 * two dependent chains through MUFU.RCP, or a call past 32 bits. */
static DF11I_HOST_DEVICE long long df11i_range_start(long long c, int nu, int g, double inv_g)
{
    return df11i_div_recip(c * nu, g, inv_g);
}

/* Bytes of a workspace so laid out for one launch: `zero` bytes in its first half (zero
 * between launches), `part` bytes of partials at its end, in its second half. */
static inline uint64_t df11i_split_ws(uint64_t zero, uint64_t part)
{
    return 2 * (zero > part ? zero : part);
}

/* y = x · [W_0; W_1; ...]ᵀ for the n_parts (1..DF11_FUSED_MAX_PARTS) tensors of `parts`,
 * all with the same columns K, in one launch: y is batch x ldy (F32, or BF16 when y_bf16),
 * part i's outputs at columns [R_i, R_i + rows_i), R_i the rows of the parts before it;
 * ldy 0 means the sum of the rows. x is batch x K BF16, row stride K. Any batch from 1:
 * up to DF11_FUSED_MAX_BATCH one mma.sync launch; past it one wgmma launch where
 * df11i_fused_gemm_takes (kernels/fused_gemm.h), else mma.sync launches of 32 rows each.
 * One launch over several tensors sharing x (q, k, v; gate, up)
 * pays the pipeline fill and drain once, and small tensors fill the GPU together.
 * `ws` (ws_size bytes, from df11i_fused_matmul_workspace, 16-byte aligned, else
 * DF11_ERR_INVALID_ARG) is used by one launch at a time:
 * launches sharing it must be ordered (one stream, or events). The plan builder validated
 * the tensors; the kernel still ORs 1 into *d_error (if not NULL) where a tile's codes and
 * exception offsets disagree. Asynchronous; returns argument and launch errors only.
 *
 * grid_scale: 0 or 1 launches SMs x (CTAs an SM) CTAs, the default (the full grid won or
 * tied for every Llama-3-8B matrix in the probe, bench/probes/fused_gemv.cu); n > 1 (up to
 * 64) n times that, for the probe's per-matrix grid search: its split-K partials may then
 * need more than df11i_fused_matmul_workspace's bytes (DF11_ERR_STATE if ws is short).
 *
 * grid_scale applies to the mma.sync kernel only (batch <= 32, and its 32-row launches);
 * the wgmma kernel takes its own grid.
 *
 * pdl: launch with programmatic dependent launch (sm_90+; ignored below): the kernel lets
 * the next programmatic launch start early and, before it reads x or the workspace or
 * writes y or *d_error, waits (griddepcontrol.wait) for the kernel before it on the stream
 * to complete; only the weights are read before that. Correct whatever kernel precedes it,
 * programmatic or not, in a CUDA graph too; it overlaps one launch's pipeline fill with the
 * drain of the one before. */
df11_status df11i_fused_matmul(const df11i_fused_part *parts, uint32_t n_parts, const void *x,
                               uint32_t batch, void *y, uint32_t ldy, int y_bf16, void *ws,
                               uint64_t ws_size, uint32_t *d_error, uint32_t grid_scale, int pdl,
                               void *stream);

/* Tests only: launch the mma.sync kernel over at most `ctas` CTAs (0, the default: its own
 * grid), so that ranges cut strips and span several on any GPU. Returns the previous value. */
uint32_t df11i_fused_matmul_test_grid(uint32_t ctas);

/* Tests only: batch 1..8's look-ahead (kernels/fused_matmul.cu's kAheadDeep): 1 deep, 0 not,
 * -1 (the default) the device's choice. Returns the previous value. */
int df11i_fused_matmul_test_deep(int deep);

/* Tests only: the smallest batch df11i_fused_matmul gives the wgmma kernel where it runs
 * (default DF11_FUSED_GEMM_MIN_BATCH; UINT32_MAX: the mma.sync kernel at every batch it
 * takes, 32 rows at a time past it). Returns the previous value. */
uint32_t df11i_fused_matmul_test_gemm_from(uint32_t batch);

/* --- Huffman-coded tensors (DF11_CODEC_EXP_HUFFMAN; kernels/decode.cu): each warp decodes
 * one chunk of W as the group decoder does (docs/FORMAT.md) and, instead of storing the
 * weights, multiplies them by x on the CUDA cores: fp32 products and sums, a lane's sums
 * added across the warp in a fixed order, a row cut between chunks summed in chunk order by
 * the last of them to finish (deterministic on every device). Up to
 * DF11_HUFFMAN_FUSED_MAX_BATCH rows of x a launch. */
#define DF11_HUFFMAN_FUSED_MAX_BATCH 8
/* The tensors it takes: lane_symbols (S) in [MIN, MAX]. A chunk's lanes each decode their S
 * symbols in sequence, so a tensor of long lanes (df11-compress's default 2048) leaves the
 * GPU mostly idle (4x slower than decode + cuBLAS; at 128-256 it is 10-17% faster, bench/
 * RESULTS.md); short lanes make many chunks, each with two partial sums of 8 floats in the
 * workspace (S = 64: 1 byte a 32 weights). Where it beats decode + cuBLAS: at batch 1;
 * each row of x costs the products of every weight again on the CUDA cores. */
#define DF11_HUFFMAN_FUSED_MIN_LANE_SYMBOLS 64
#define DF11_HUFFMAN_FUSED_MAX_LANE_SYMBOLS 256

/* 1 when the kernel takes a tensor of `cols` columns and `lane_symbols` symbols a lane:
 * cols % 8 == 0 (8 decoded weights never straddle a row), cols >= 256 (a warp's step of 256
 * weights spans two rows at most) and lane_symbols in the range above. */
int df11i_huffman_matmul_takes(uint64_t cols, uint32_t lane_symbols);

/* The largest batch for which the op takes the kernel by default for a Huffman tensor of
 * `cols` columns coded with `lane_symbols` symbols a lane: 1 where the device runs the fused
 * kernels (df11i_fused_matmul_supported) and df11i_huffman_matmul_takes, else 0. */
uint32_t df11i_huffman_matmul_default_max(uint64_t cols, uint32_t lane_symbols);

/* Bytes of workspace df11i_huffman_matmul needs for a tensor of `rows` rows and `n_chunks`
 * chunks: semaphore words at its start (one a row; zero before the first launch, and every
 * launch leaves them zero) and partial sums at its end, twice the larger, so that it shares
 * one workspace with the fixed-code kernels (df11i_fused_matmul_workspace). */
df11_status df11i_huffman_matmul_workspace(uint64_t rows, uint64_t n_chunks, uint64_t *bytes);

/* y = x·Wᵀ for the Huffman tensor of descriptor d (a one-tensor plan's: its decode table at
 * d_plan + d->lut_off, device memory) in d_payload: W rows x cols, x batch x cols BF16 (row
 * stride cols), y batch x ldy (F32, or BF16 when y_bf16). Batches past
 * DF11_HUFFMAN_FUSED_MAX_BATCH run as several launches in order on the stream. Corrupt
 * streams OR 1 into *d_error (if not NULL), as the group decoder's. pdl: launched with
 * programmatic dependent launch where the build's code allows (df11i_fused_matmul_pdl), as
 * df11i_fused_matmul's: only its decode table is read before griddepcontrol.wait, and it
 * triggers its dependents at entry, so it is correct whatever precedes or follows it.
 * Asynchronous; returns argument and launch errors only. */
df11_status df11i_huffman_matmul(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                 const void *d_payload, uint64_t rows, uint64_t cols, const void *x,
                                 uint32_t batch, void *y, uint32_t ldy, int y_bf16, void *ws,
                                 uint64_t ws_size, uint32_t *d_error, int pdl, void *stream);

#ifdef __cplusplus
}
#endif
#endif
