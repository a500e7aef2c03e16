/* The fused matmul on fixed-code tensors (codec/fixed.h, DF11_CODEC_EXP_FIXED and _FIXED8):
 *     y[b][n] = sum_k x[b][k] * W[n][k],  W rows x cols BF16 as HF stores it, B = 1..32
 * (df11i_fused_matmul takes any batch: from DF11_FUSED_GEMM_MIN_BATCH on kernels/fused_gemm.cu
 * where it runs, else this kernel 32 rows of x at a time),
 * or W up to 8 such tensors of one K stacked by rows (parts, one launch),
 * straight from the compressed payload: W is decoded in registers right after its load,
 * fed to mma.m16n8k16 (bf16 in, fp32 accumulate) and never written back to memory.
 *
 * The one copy of the kernel: bench/probes/fused_gemv.cu (the harness it was tuned in, up
 * to 6aa6afc/d0264ce: exception window at tile start, programmatic dependent launch) calls
 * df11i_fused_matmul, and runs the decode of kernels/fused_matmul_decode.cuh on the CPU.
 * x is B x K with row stride K, read with bounds checks where K is not a multiple of 64 or
 * x not 16-byte aligned; y is F32 or BF16 (round to nearest even at the store); the error
 * word may be NULL; sm_80+ code only, PDL in sm_90+ code (dev_geom).
 *
 * What one warp does: walk the tiles (16 rows x 256 columns) of a 16-row strip and, chained,
 * of the next ones in its range, copied by cp.async into the warp's stage a step ahead
 * (kAhead); per step of 64 columns each lane decodes its 32 weights (16 bf16x2 A-fragment
 * registers: sign|mantissa byte pair doubled by a PRMT, the 3-bit codes ORed into the exponent
 * fields, the row base added, escapes corrected through shared-memory words) and issues 4 MMAs
 * per 8 batch rows. The 2 warps of a CTA take neighbouring strips over the same columns. CTAs
 * split the (strip pair, tile) units evenly (stream-K), a range over several strip pairs
 * walked as one where K rounded up to 64 is a multiple of 256 (walk_strips chains them); a
 * strip cut between CTAs is summed from per-CTA pieces in the workspace, in CTA order, by
 * the strip's last CTA at the end of its range, which polls the pieces (B <= 8; sum_pieces)
 * or waits for the others' counts (B > 8; sum_partials): the result does not depend on timing
 * (deterministic for a given grid, i.e. device). Bytes moved: the compressed tensor once
 * (~1.41 bytes a weight), x from L1/L2, y once.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>

#include "kernels/device_cache.cuh"
#include "kernels/fused_gemm.h"
#include "kernels/fused_matmul_strip.cuh"
#include "kernels/launch.cuh"
#include "kernels/matmul.h"
#include "kernels/split_count.cuh"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

/* The sm_75 PTX of the library's build holds an empty kernel, so its helpers go unused. */
#pragma nv_diag_suppress 177

namespace {

using namespace df11i_fused;

constexpr int kWarps = 2;     /* warps a CTA (the probe's FG_WARPS) */
constexpr int kMinBlocks = 8; /* CTAs an SM, for the register budget (the probe's FG_MINB) */
constexpr int kMaxNB = DF11_FUSED_MAX_BATCH / 8; /* groups of 8 batch rows (mma's N) */
/* CTAs an SM for NB 3..4: their accumulators and x fragments need more registers (at 8
 * CTAs an SM they spilled) */
constexpr int kMinBlocksWide = 6;
/* Steps a warp's sm copies run ahead of its decode. 16 warps an SM with a step each in
 * flight keep an H100's DRAM busy, and the less a warp has in flight when its range ends,
 * the less the launch's last tiles decode with DRAM idle: 1 step against a tile (4) made the
 * block 3-4% faster at B = 1..16, and 1% faster than 2 at B = 1 (bench/RESULTS.md). A GPU
 * with more DRAM bandwidth an SM needs more bytes in flight: on an H200 (1.5x the H100's an
 * SM) 2 steps made the block 3% faster at B = 1 and 1% at 8 (and B = 16's kernel 1%
 * slower). Unmeasured near the threshold: GH200 (30.3 GB/s an SM), H100 NVL (29.5). */
constexpr int kAhead = 1;
constexpr int kAheadDeep = 2; /* NB = 1 where DRAM gives an SM more than kDeepBytesPerSM */
constexpr double kDeepBytesPerSM = 30e9; /* per second: H100 SXM 25.4e9, H200 37.3e9 */

/* Eight BF16 of row `row` from column col, zero past K; one 16-byte load where it can. */
__device__ __forceinline__ uint4 load_x8(const uint16_t *row, long long col, int K, bool vec)
{
    if (vec && col + 8 <= K) return __ldg(reinterpret_cast<const uint4 *>(row + col));
    uint32_t v[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t lo = col + 2 * i < K ? __ldg(row + col + 2 * i) : 0u;
        const uint32_t hi = col + 2 * i + 1 < K ? __ldg(row + col + 2 * i + 1) : 0u;
        v[i] = lo | hi << 16;
    }
    return make_uint4(v[0], v[1], v[2], v[3]);
}

struct Args {
    Mat W[DF11_FUSED_MAX_PARTS];
    const uint16_t *x; // B x K BF16, row stride K (library change: the probe's is cols_pad)
    void *y;           // B x ldy, F32 or (y_bf16) BF16 (library change: the probe's is F32)
    float *ws;         // pieces: 2 * (strip pairs) * maxc * 128 NB floats (NB = 1: polled slots)
    unsigned *sem;     // NB >= 2: a word per strip of the launch, zero between launches
    unsigned *err;     // set when a tile's codes and offsets disagree (may be NULL)
    int n_parts, B, NU, G, maxc, K, ldy, y_bf16;
    double inv_nu; // 1.0 / NU (df11i_cta_of)
    double inv_g;  // 1.0 / G (df11i_range_start)
    bool x_vec;    // K % 8 == 0 and x 16-byte aligned: rows read 16 bytes at a time
};

// The part holding strip pair grp of the launch (parts in order of g0, part 0 at 0).
__device__ __forceinline__ int part_of(const Args &a, int grp)
{
    return part_index<DF11_FUSED_MAX_PARTS>(a.n_parts, grp, [&](int i) { return a.W[i].g0; });
}

__device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes of x by a generic load, so that ptxas keeps it ahead of the step's cp.async
// refill (a generic load may alias the shared memory the refill writes; ld.global.nc may
// move, and was moved after it). Issued after the refill, an x load that hits L1 waited
// for the refill's DRAM misses and stalled the step's first MMA (ncu source counters:
// a fifth of the stall samples at B = 1); issued before it, the block at B = 1 ran 2%
// faster (bench/RESULTS.md).
__device__ __forceinline__ uint4 ld_x16(const uint16_t *p)
{
    uint4 v;
    asm volatile("ld.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// A slot's 16 bytes as they are in L2 now (polled: a strong load, never hoisted).
__device__ __forceinline__ uint4 ld_piece(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}

// y from one lane's c fragments (or sums of them) of a strip whose lane's first row is r0
// (16 s + lane / 4).
template <int NB>
__device__ __forceinline__ void store_rows(const Args &a, const Mat &W, int r0,
                                           const float v[NB][4], uint32_t lane)
{
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int row = r0 + 8 * (j >> 1), b = nb * 8 + 2 * (int)(lane & 3) + (j & 1);
            if (b < a.B && row < W.rows) {
                const long long at = (long long)b * a.ldy + W.y_col + row;
                if (a.y_bf16)
                    static_cast<__nv_bfloat16 *>(a.y)[at] = __float2bfloat16_rn(v[nb][j]);
                else
                    static_cast<float *>(a.y)[at] = v[nb][j];
            }
        }
}

// The split sums at NB = 1 (B <= 8). A strip cut between CTAs cf..cl (units in order, so
// each CTA's piece is a contiguous run of its tiles) is summed by cl, the last by index, at
// the end of its range: its piece of the strip is the first of its range, the others' are
// the last of theirs, so by then they are mostly written. Every piece goes to its slot as a
// word per value that is never 0 (the bits inverted; a NaN's 0xffffffff stored as
// 0x7fffffff's), so that 0 means "not yet written": cl polls the slots themselves, with no
// count, fence or atomic between the last piece's store and y, sums them in CTA order and
// writes the zeros back. The slots lie at the workspace's start, in the half every launch
// leaves zero (kernels/matmul.h). cl waits only for CTAs of lower index, assumed to start no
// later (CTAs start in index order; kernels/fused_gemm.cu's L2 sums assume it too). Against
// the count (emit's NB >= 2 path) the 8B block ran 2.8-2.9% faster at B = 1 and 8, as fast
// at B = 16 and 9% slower at B = 32 (bench/RESULTS.md), so NB >= 2 keeps the count.
template <int NB>
__device__ __forceinline__ uint4 *slot_of(const Args &a, int gs, int ci, uint32_t lane)
{
    return reinterpret_cast<uint4 *>(a.ws) + ((long long)gs * a.maxc + ci) * (32 * NB) + lane * NB;
}

__device__ __forceinline__ uint32_t piece_word(float v)
{
    const uint32_t w = ~__float_as_uint(v);
    return w ? w : 0x80000000u;
}

// One lane's c fragments of its segment of strip s -> y where the strip is whole; else its
// CTA's piece: NB = 1, into its slot for cl's sum_pieces (above); NB >= 2, a partial for cl's
// sum_partials (below), counted.
template <int NB>
__device__ void emit(const Args &a, const Mat &W, int s, int gs, int grp, float acc[NB][4],
                     uint32_t lane)
{
    const long long u0 = (long long)grp * W.tiles;
    const int cf = df11i_cta_of(u0, a.NU, a.G, a.inv_nu),
              cl = df11i_cta_of(u0 + W.tiles - 1, a.NU, a.G, a.inv_nu), n = cl - cf + 1;
    const int r0 = 16 * s + (int)(lane >> 2);
    if (n == 1) {
        store_rows<NB>(a, W, r0, acc, lane);
        return;
    }
    if constexpr (NB == 1) {
        uint4 *mine = slot_of<NB>(a, gs, (int)blockIdx.x - cf, lane);
        asm volatile("st.relaxed.gpu.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(mine),
                     "r"(piece_word(acc[0][0])), "r"(piece_word(acc[0][1])),
                     "r"(piece_word(acc[0][2])), "r"(piece_word(acc[0][3]))
                     : "memory");
        return;
    }
    // a CTA's partial of a strip: 16 rows x 8 NB batch columns, each lane's c fragments as
    // NB float4 (the lane that sums them holds the same fragments)
    float4 *mine =
        reinterpret_cast<float4 *>(a.ws + ((long long)gs * a.maxc) * (128 * NB)) + lane * NB;
    const int ci = (int)blockIdx.x - cf;
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
        __stcg(mine + ci * 32 * NB + nb,
               make_float4(acc[nb][0], acc[nb][1], acc[nb][2], acc[nb][3]));
    // cl sums them at the end of its range (sum_partials); the others count theirs in
    __syncwarp(); // the lanes' partials before lane 0's release (kernels/split_count.cuh)
    if ((int)blockIdx.x != cl && lane == 0) split_signal(a.sem + gs);
}

// The strip this warp owes a sum at the end of its CTA's range: its first, where the range
// starts inside the strip pair and holds its last tile (this CTA is the pair's cl), with its
// pieces' count n; n = 0 where none.
struct Owed {
    int part, s, gs, n;
};
__device__ __forceinline__ Owed owed(const Args &a, uint32_t warp)
{
    // the range recomputed, not kept live through the walk
    const long long u_begin = df11i_range_start(blockIdx.x, a.NU, a.G, a.inv_g),
                    u_end = df11i_range_start(blockIdx.x + 1, a.NU, a.G, a.inv_g);
    const int tiles = a.W[0].tiles, grp = (int)(u_begin / tiles);
    if (u_begin % tiles == 0 || (long long)(grp + 1) * tiles > u_end) return Owed{};
    const int part = part_of(a, grp), s = (grp - a.W[part].g0) * kWarps + (int)warp;
    if (s >= a.W[part].n_strips) return Owed{};
    return Owed{ part, s, grp * kWarps + (int)warp,
                 (int)blockIdx.x - df11i_cta_of((long long)grp * tiles, a.NU, a.G, a.inv_nu) + 1 };
}

// The owed strip's pieces added in CTA order (the sum does not depend on timing), 16 / NB
// CTAs' loads in flight at a time: a strip of k or v of the 8B block is cut in 16, one round
// trip at B <= 8. fetch(c, v) loads chunk c's words (CTA c + k, its last past n) and returns
// once they hold the pieces; add(s, w) adds a word's four floats to s.
template <int NB, typename Word, typename Fetch, typename Add>
__device__ __forceinline__ void sum_in_order(int n, Fetch fetch, Add add, float sum[NB][4])
{
    constexpr int CH = 16 / NB;
    for (int c = 0; c < n; c += CH) {
        Word v[CH][NB];
        fetch(c, v);
#pragma unroll
        for (int k = 0; k < CH; k++)
            if (c + k < n) // warp-uniform
#pragma unroll
                for (int nb = 0; nb < NB; nb++) add(sum[nb], v[k][nb]);
    }
}

// NB >= 2: the owed strip's sum, once the other n - 1 CTAs' counts are in (split_wait); the
// count then zero again. The strip's other CTAs count with a release and go on, where the last
// to count used to sum (its wait for the count's old value mid-walk): the 8B block 1.5% faster
// at B = 16, 2% at 32 (bench/RESULTS.md).
template <int NB> __device__ void sum_partials(const Args &a, uint32_t lane, uint32_t warp)
{
    const Owed o = owed(a, warp);
    if (!o.n) return;
    if (lane == 0) split_wait(a.sem + o.gs, (unsigned)(o.n - 1));
    __syncwarp(); // lane 0's acquire before the lanes' reads
    const float4 *mine =
        reinterpret_cast<const float4 *>(a.ws + ((long long)o.gs * a.maxc) * (128 * NB)) +
        lane * NB;
    constexpr int CH = 16 / NB;
    float sum[NB][4] = {};
    sum_in_order<NB, float4>(
        o.n,
        [&](int c, float4(&v)[CH][NB]) {
#pragma unroll
            for (int k = 0; k < CH; k++)
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
                    v[k][nb] = __ldcg(mine + min(c + k, o.n - 1) * 32 * NB + nb);
        },
        [](float(&s)[4], const float4 &w) {
            s[0] += w.x;
            s[1] += w.y;
            s[2] += w.z;
            s[3] += w.w;
        },
        sum);
    store_rows<NB>(a, a.W[o.part], 16 * o.s + (int)(lane >> 2), sum, lane);
    if (lane == 0) a.sem[o.gs] = 0u;
}

// NB = 1: the owed strip's sum (owed, sum_partials' counterpart), its pieces polled.
template <int NB> __device__ void sum_pieces(const Args &a, uint32_t lane, uint32_t warp)
{
    const Owed o = owed(a, warp);
    if (!o.n) return;
    const int n = o.n;
    uint4 *p = slot_of<NB>(a, o.gs, 0, lane);
    constexpr int CH = 16 / NB;
    float sum[NB][4] = {};
    sum_in_order<NB, uint4>(
        n,
        [&](int c, uint4(&v)[CH][NB]) {
            auto ready = [](const uint4 &w) { return w.x && w.y && w.z && w.w; };
#pragma unroll
            for (int k = 0; k < CH; k++)
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
                    v[k][nb] = ld_piece(p + min(c + k, n - 1) * 32 * NB + nb);
            // every piece of the chunk not yet written loaded again, all in flight at once: a
            // round trip a round, not one a piece; a short sleep between rounds leaves the SM's
            // issue slots and the L2 to the CTAs still walking (as fast as without it, B = 1..32)
            for (;;) {
                bool all = true;
#pragma unroll
                for (int k = 0; k < CH; k++)
#pragma unroll
                    for (int nb = 0; nb < NB; nb++) all = all && ready(v[k][nb]);
                if (__all_sync(~0u, all)) break;
                __nanosleep(64);
#pragma unroll
                for (int k = 0; k < CH; k++)
#pragma unroll
                    for (int nb = 0; nb < NB; nb++)
                        if (!ready(v[k][nb]))
                            v[k][nb] = ld_piece(p + min(c + k, n - 1) * 32 * NB + nb);
            }
        },
        [](float(&s)[4], const uint4 &w) {
            s[0] += __uint_as_float(~w.x);
            s[1] += __uint_as_float(~w.y);
            s[2] += __uint_as_float(~w.z);
            s[3] += __uint_as_float(~w.w);
        },
        sum);
    store_rows<NB>(a, a.W[o.part], 16 * o.s + (int)(lane >> 2), sum, lane);
    for (int c = 0; c < n; c++)
#pragma unroll
        for (int nb = 0; nb < NB; nb++) __stcg(p + c * 32 * NB + nb, make_uint4(0, 0, 0, 0));
}

// What one warp does: walk its segments of the CTA's range (walk_strips,
// kernels/fused_matmul_strip.cuh; chained from strip to strip where the last tile is whole),
// its split sum (emit) between them, each step's x loaded before the step waits for its
// copies, its 32 decoded weights a lane fed to 4 * NB MMAs. The probe's defaults: 8 CTAs of
// 2 warps an SM (FG_MINB, FG_WARPS there). XV: K is a multiple of 64 (no pad columns) and
// x_vec, so x needs no bounds check.
template <int NB, bool XV, bool REC, int AHEAD = kAhead>
__global__ void __launch_bounds__(kWarps * 32, NB <= 2 ? kMinBlocks : kMinBlocksWide)
    fused_matmul_kernel(Args a)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int WARPS = kWarps;
    extern __shared__ __align__(16) uint8_t dsm[];
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *ring = dsm + warp * RING_BYTES;
    uint4 *corr4 =
        reinterpret_cast<uint4 *>(dsm + WARPS * RING_BYTES + warp * CORR_BYTES + lane * 64);
#pragma unroll
    for (int v = 0; v < 4; v++) corr4[v] = make_uint4(0, 0, 0, 0);
    const int tiles = a.W[0].tiles;
    const long long u_begin = df11i_range_start(blockIdx.x, a.NU, a.G, a.inv_g),
                    u_end = df11i_range_start(blockIdx.x + 1, a.NU, a.G, a.inv_g);
    const int q = lane & 3, nrow = lane >> 2;
    // Programmatic dependent launch: the next launch on the stream may start now, its CTAs
    // taking SMs as ours leave, and prefetch its weights; its griddepcontrol.wait still
    // waits for this whole grid to complete and its writes to be visible, so this is safe
    // whatever follows. A no-op where the next launch is not programmatic.
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif

    // this lane's activation rows (zero for rows >= B), one 16-byte piece per half step
    const uint16_t *xr[NB];
    bool xon[NB];
#pragma unroll
    for (int nb = 0; nb < NB; nb++) {
        xon[nb] = nrow + 8 * nb < a.B;
        xr[nb] = a.x + (long long)(nrow + 8 * nb) * a.K;
    }
    // The warp's segments: the CTA's units cut where a strip pair ends, less strips past
    // the end of their tensor (an odd strip count). s: the strip in its tensor; grp * WARPS
    // + warp: in the launch (the semaphores and partials).
    int u = (int)u_begin; // NU <= INT32_MAX (launch_geom)
    auto next = [&](Seg &o) {
        while (u < (int)u_end) {
            const int grp = u / tiles, t0 = u % tiles;
            const int t1 = min(tiles, t0 + ((int)u_end - u));
            u += t1 - t0;
            const int part = part_of(a, grp);
            const int s = (grp - a.W[part].g0) * WARPS + (int)warp;
            if (s >= a.W[part].n_strips) continue;
            o = Seg{ part, s, t0, t1, grp };
            return true;
        }
        return false;
    };
    float acc[NB][4] = {};
    // NB = 1: zero once, a lane's rows past B stay zero (their loads skipped, not replaced
    // by zeros each step: 4 instructions a step fewer); at NB = 2 that cost ptxas a spill
    uint4 xv[NB][2];
#pragma unroll
    for (int nb = 0; nb < NB; nb++) xv[nb][0] = xv[nb][1] = make_uint4(0, 0, 0, 0);
    // Only weights are read before the walk's griddepcontrol.wait (written before any
    // launch). x, y, the workspace and the error word may be written by the previous
    // kernel on the stream: launched programmatically (df11i_fused_matmul's pdl), this
    // CTA may run before it completes, so the walk waits once its first tile's codes and
    // first step are in flight. A no-op once passed, or where the launch was not
    // programmatic.
    Seg sg;
    while (next(sg))
        walk_strips<true, 1, AHEAD, REC>(
            [&](int i) -> const Mat & { return a.W[i]; }, sg, next, lane, ring, corr4, a.err,
            [&](int t, int g) {
                const long long xc = 256LL * t + 8 * q + 64 * g; // the lane's first x column
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        if (NB > 1 || xon[nb])
                            xv[nb][h] = !xon[nb] ? make_uint4(0, 0, 0, 0)
                                        : XV     ? ld_x16(xr[nb] + xc + 32 * h)
                                                 : load_x8(xr[nb], xc + 32 * h, a.K, a.x_vec);
            },
            [&](int, int, const uint32_t o[16]) {
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        mma16816(acc[nb], o[8 * h + 0], o[8 * h + 4], o[8 * h + 1], o[8 * h + 5],
                                 xv[nb][h].x, xv[nb][h].y);
                        mma16816(acc[nb], o[8 * h + 2], o[8 * h + 6], o[8 * h + 3], o[8 * h + 7],
                                 xv[nb][h].z, xv[nb][h].w);
                    }
            },
            [&](const Seg &d) {
                emit<NB>(a, a.W[d.part], d.s, d.grp * WARPS + (int)warp, d.grp, acc, lane);
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[nb][j] = 0.f;
            });
    if constexpr (NB == 1)
        sum_pieces<NB>(a, lane, warp);
    else
        sum_partials<NB>(a, lane, warp);
#endif
}

constexpr size_t smem_bytes() { return (size_t)kWarps * (RING_BYTES + CORR_BYTES); }

/* The kernel for nb groups of 8 batch rows (1..kMaxNB), and the layout's (rec: RECORDS);
 * deep: nb = 1's copies kAheadDeep steps ahead. */
using KernelFn = void (*)(Args);
KernelFn kernel_of(int nb, bool xv, bool rec, bool deep)
{
    static const KernelFn d[2][2] = { { fused_matmul_kernel<1, false, false, kAheadDeep>,
                                        fused_matmul_kernel<1, true, false, kAheadDeep> },
                                      { fused_matmul_kernel<1, false, true, kAheadDeep>,
                                        fused_matmul_kernel<1, true, true, kAheadDeep> } };
    if (nb == 1 && deep) return d[rec][xv];
#define DF11_FUSED_KERNELS(R)                                                                      \
    {                                                                                              \
        { fused_matmul_kernel<1, false, R>, fused_matmul_kernel<1, true, R> },                     \
            { fused_matmul_kernel<2, false, R>, fused_matmul_kernel<2, true, R> },                 \
            { fused_matmul_kernel<3, false, R>, fused_matmul_kernel<3, true, R> },                 \
        {                                                                                          \
            fused_matmul_kernel<4, false, R>, fused_matmul_kernel<4, true, R>                      \
        }                                                                                          \
    }
    static const KernelFn k[2][kMaxNB][2] = { DF11_FUSED_KERNELS(false), DF11_FUSED_KERNELS(true) };
#undef DF11_FUSED_KERNELS
    return k[rec][nb - 1][xv];
}

/* Launch geometry of the current device, looked up once per device: SMs and CTAs an SM
 * for each NB (0: the device cannot run the kernel), and the virtual architecture the
 * kernel's code on this device was compiled for (cudaFuncAttributes.ptxVersion): 90 where
 * the build's Hopper code runs; elsewhere the driver compiles the build's newest PTX the GPU
 * can run (sm_90's past Hopper, sm_80's on Ampere and Ada, sm_75's on Turing), where the
 * kernel has no griddepcontrol (below sm_90) or is empty (below sm_80). */
struct DevGeom {
    int sms, occ[kMaxNB], major, ptx;
    bool deep; /* DRAM bandwidth an SM above kDeepBytesPerSM (kernel_of's deep) */
};

PerDevice<DevGeom> g_geom;

df11_status dev_geom(DevGeom *out)
{
    return g_geom.get("fused matmul", out, [](int dev, DevGeom *g, bool *usable) {
        int major = 0;
        cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        g->major = major;
        if (e == cudaSuccess)
            e = cudaDeviceGetAttribute(&g->sms, cudaDevAttrMultiProcessorCount, dev);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused matmul: device attributes: %s",
                              cudaGetErrorString(e));
        /* DRAM bandwidth, two transfers a clock (what the vendors quote). Only a speed
         * choice: where the attributes are not reported, one step ahead. */
        int mem_khz = 0, bus_bits = 0;
        if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) !=
                cudaSuccess) {
            (void)cudaGetLastError();
            mem_khz = bus_bits = 0;
        }
        g->deep = g->sms > 0 && 2e3 * mem_khz * (bus_bits / 8.0) / g->sms > kDeepBytesPerSM;
        cudaFuncAttributes fa;
        if (major >= 8 &&
            (e = cudaFuncGetAttributes(&fa, kernel_of(1, true, false, false))) == cudaSuccess)
            g->ptx = fa.ptxVersion;
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused matmul: kernel attributes: %s",
                              cudaGetErrorString(e));
        *usable = g->ptx >= 80;
        for (int nb = 1; nb <= kMaxNB && *usable; nb++) {
            /* the layouts' and look-aheads' kernels: the smallest (the grids assume it);
             * only NB = 1 has a second look-ahead (kernel_of) */
            const int kernels = nb == 1 ? 4 : 2;
            int occ[4] = { 0, 0, 0, 0 };
            for (int k = 0; k < kernels && e == cudaSuccess; k++)
                e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                    &occ[k], kernel_of(nb, true, k & 1, k >> 1), kWarps * 32, smem_bytes());
            if (e != cudaSuccess)
                return df11i_fail(DF11_ERR_DEVICE, "fused matmul: occupancy: %s",
                                  cudaGetErrorString(e));
            g->occ[nb - 1] = occ[0];
            for (int k = 1; k < kernels; k++)
                if (occ[k] < g->occ[nb - 1]) g->occ[nb - 1] = occ[k];
            *usable = g->occ[nb - 1] > 0;
        }
        return DF11_OK;
    });
}

/* Whether the kernels' code on the device has griddepcontrol: a programmatic launch of them
 * then waits as it must (df11i_fused_matmul_pdl). */
bool pdl_ok(const DevGeom &dg) { return dg.sms > 0 && dg.major >= 9 && dg.ptx >= 90; }

/* dev_geom, DF11_ERR_UNSUPPORTED where the device cannot run the kernel. */
df11_status usable_geom(DevGeom *out)
{
    df11_status s = dev_geom(out);
    if (s == DF11_OK && !out->sms)
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "fused matmul: needs an sm_80+ GPU and sm_80+ code for it in the build "
                          "(CMAKE_CUDA_ARCHITECTURES)");
    return s;
}

/* The grid of one launch: units are (strip pair, tile) over all its parts; G CTAs take
 * NU / G each, so a strip pair's `tiles` units touch at most maxc CTAs (the partial slots
 * per strip). */
struct Grid {
    int NU, G, maxc;
};

Grid grid_of(long long pairs, long long tiles, long long ctas)
{
    Grid r;
    const long long nu = pairs * tiles;
    r.NU = (int)nu;
    r.G = (int)(nu < ctas ? nu : ctas);
    if (r.G < 1) r.G = 1;
    const long long minu = nu / r.G; /* >= 1 */
    long long c = (tiles + minu - 1) / minu + 1;
    r.maxc = (int)(c < r.G ? c : r.G);
    return r;
}

Grid make_grid(long long pairs, long long tiles, const DevGeom &dg, int nb, uint32_t scale = 1)
{
    return grid_of(pairs, tiles, (long long)dg.sms * dg.occ[nb - 1] * (scale ? scale : 1));
}

std::atomic<uint32_t> g_test_grid{ 0 }; /* df11i_fused_matmul_test_grid */
std::atomic<int> g_test_deep{ -1 };     /* df11i_fused_matmul_test_deep */
/* the smallest batch for the wgmma kernel (df11i_fused_matmul_test_gemm_from) */
std::atomic<uint32_t> g_gemm_from{ DF11_FUSED_GEMM_MIN_BATCH };

uint64_t align256(uint64_t x) { return (x + 255) / 256 * 256; }

/* The strip pairs of a launch of parts with these rows and one K (their geometries in g),
 * and where each part starts. */
df11_status launch_geom(uint32_t n_parts, const uint64_t *rows, uint64_t cols, df11i_fixed_geom *g,
                        long long *g0, long long *pairs)
{
    if (n_parts == 0 || n_parts > DF11_FUSED_MAX_PARTS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "fused matmul: %u parts (1..%d)", n_parts,
                          DF11_FUSED_MAX_PARTS);
    long long p = 0, y = 0;
    for (uint32_t i = 0; i < n_parts; i++) {
        df11_status s = geom_of(rows[i], cols, &g[i]);
        if (s != DF11_OK) return s;
        g0[i] = p;
        p += ((long long)g[i].n_strips + kWarps - 1) / kWarps;
        y += (long long)rows[i];
    }
    if (p * (long long)g[0].tiles > INT32_MAX || y > INT32_MAX)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: %u parts of %llu rows in all",
                          n_parts, (unsigned long long)y);
    *pairs = p;
    return DF11_OK;
}

/* The workspace (kernels/matmul.h): in its zero first half the polled slots (NB = 1) or a
 * semaphore word per strip (NB >= 2), whose partials lie at its end, in the second half. */
uint64_t sem_bytes(long long pairs) { return align256(4ull * kWarps * pairs); }
uint64_t part_bytes(long long pairs, const Grid &gr, int nb)
{
    return 4ull * kWarps * pairs * (uint64_t)gr.maxc * 128 * nb;
}

/* One launch of the mma.sync kernel, batch 1..DF11_FUSED_MAX_BATCH. */
df11_status launch_mma(const df11i_fused_part *parts, uint32_t n_parts, const df11i_fixed_geom *g,
                       const long long *g0, long long pairs, const DevGeom &dg, const void *x,
                       uint32_t batch, void *y, uint32_t ldy, int y_bf16, void *ws,
                       uint64_t ws_size, uint32_t *d_error, uint32_t grid_scale, int pdl,
                       void *stream)
{
    const int nb = (int)(batch + 7) / 8;
    Grid gr = make_grid(pairs, (long long)g[0].tiles, dg, nb, grid_scale);
    if (const uint32_t forced = g_test_grid.load(); forced && forced < (uint32_t)gr.G)
        gr = grid_of(pairs, (long long)g[0].tiles, (int)forced);
    const uint64_t pb = part_bytes(pairs, gr, nb);
    /* NB = 1: the slots in the first half; else semaphores there and partials at the end,
     * in the second half (where they never reach another launch's slots or semaphores) */
    const uint64_t need = nb == 1 ? df11i_split_ws(pb, 0) : df11i_split_ws(sem_bytes(pairs), pb);
    if (need > ws_size)
        return df11i_fail(DF11_ERR_STATE, "fused matmul: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)need);
    Args a = {};
    int y_col = 0;
    for (uint32_t i = 0; i < n_parts; i++) {
        a.W[i] = mat_of(parts[i], g[i], (int)g0[i], y_col);
        y_col += (int)g[i].rows;
    }
    a.n_parts = (int)n_parts;
    a.x = static_cast<const uint16_t *>(x);
    a.y = y;
    a.sem = static_cast<unsigned *>(ws);
    a.ws = reinterpret_cast<float *>(static_cast<uint8_t *>(ws) +
                                     (nb == 1 ? 0 : (ws_size - pb) / 16 * 16));
    a.err = d_error;
    a.B = (int)batch;
    a.NU = gr.NU;
    a.G = gr.G;
    a.maxc = gr.maxc;
    a.inv_nu = 1.0 / gr.NU;
    a.inv_g = 1.0 / gr.G;
    a.K = (int)g[0].cols;
    a.ldy = (int)ldy;
    a.y_bf16 = y_bf16 != 0;
    a.x_vec = g[0].cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    const bool xv = a.x_vec && g[0].cols % 64 == 0;
    const bool rec = parts[0].d->codec == DF11_CODEC_EXP_FIXED8;
    const int forced_deep = g_test_deep.load();
    const bool deep = forced_deep < 0 ? dg.deep : forced_deep != 0;
    const cudaError_t e = launch_kernel(kernel_of(nb, xv, rec, deep), (unsigned)gr.G, kWarps * 32,
                                        smem_bytes(), stream, pdl && pdl_ok(dg), a);
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused matmul launch (%d CTAs): %s", gr.G,
                          cudaGetErrorString(e));
    return DF11_OK;
}

} // namespace

extern "C" int df11i_fused_matmul_supported(void)
{
    DevGeom dg;
    return dev_geom(&dg) == DF11_OK && dg.sms > 0;
}

extern "C" uint32_t df11i_fused_matmul_test_grid(uint32_t ctas)
{
    return g_test_grid.exchange(ctas);
}

extern "C" int df11i_fused_matmul_test_deep(int deep) { return g_test_deep.exchange(deep); }

extern "C" uint32_t df11i_fused_matmul_test_gemm_from(uint32_t batch)
{
    return g_gemm_from.exchange(batch);
}

extern "C" int df11i_fused_matmul_pdl(void)
{
    DevGeom dg;
    return dev_geom(&dg) == DF11_OK && pdl_ok(dg);
}

extern "C" int df11i_fused_matmul_deep(void)
{
    DevGeom dg;
    return dev_geom(&dg) == DF11_OK && dg.deep;
}

extern "C" uint32_t df11i_fused_matmul_default_max(uint64_t cols)
{
    if (!df11i_fused_matmul_supported()) return 0;
    return df11i_fused_gemm_takes_cols(cols) ? DF11_FUSED_GEMM_MAX_BATCH : DF11_FUSED_MAX_BATCH;
}

extern "C" df11_status df11i_fused_matmul_workspace(uint32_t n_parts, const uint64_t *rows,
                                                    uint64_t cols, uint64_t *bytes)
{
    df11i_fixed_geom g[DF11_FUSED_MAX_PARTS];
    long long g0[DF11_FUSED_MAX_PARTS], pairs = 0;
    DevGeom dg;
    df11_status s;
    if (!bytes || !rows)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul_workspace: NULL");
    if ((s = launch_geom(n_parts, rows, cols, g, g0, &pairs)) != DF11_OK ||
        (s = usable_geom(&dg)) != DF11_OK)
        return s;
    uint64_t m = sem_bytes(pairs);
    for (int nb = 1; nb <= kMaxNB; nb++) {
        const uint64_t b = part_bytes(pairs, make_grid(pairs, (long long)g[0].tiles, dg, nb), nb);
        if (b > m) m = b;
    }
    uint64_t gemm = 0;
    if ((s = df11i_fused_gemm_workspace(g, &gemm)) != DF11_OK) return s;
    /* gemm is already twice the wgmma kernel's larger need: every launch's semaphores lie in
     * the first half and its partials in the second, whichever launch set the size */
    *bytes = 2 * m > gemm ? 2 * m : gemm;
    return DF11_OK;
}

extern "C" df11_status df11i_fused_matmul(const df11i_fused_part *parts, uint32_t n_parts,
                                          const void *x, uint32_t batch, void *y, uint32_t ldy,
                                          int y_bf16, void *ws, uint64_t ws_size, uint32_t *d_error,
                                          uint32_t grid_scale, int pdl, void *stream)
{
    if (!parts || !x || !y || !ws)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: NULL argument");
    if (batch == 0 || batch > INT32_MAX)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: batch %u", batch);
    if (reinterpret_cast<uintptr_t>(ws) % 16)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11i_fused_matmul: workspace not 16-byte aligned");
    if (grid_scale > 64)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: grid scale %u (0..64)",
                          grid_scale);
    uint64_t rows[DF11_FUSED_MAX_PARTS], y_cols = 0;
    for (uint32_t i = 0; i < n_parts && i < DF11_FUSED_MAX_PARTS; i++) {
        const df11i_gpu_tensor_desc *d = parts[i].d;
        if (!d || !parts[i].payload)
            return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: part %u is NULL", i);
        if (!df11i_codec_is_fixed(d->codec) || d->codec != parts[0].d->codec)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11i_fused_matmul: part %u: codec %u (part 0's %u; fixed ones)", i,
                              d->codec, parts[0].d->codec);
        if (d->cols != parts[0].d->cols)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11i_fused_matmul: part %u has %llu columns, part 0 %llu", i,
                              (unsigned long long)d->cols, (unsigned long long)parts[0].d->cols);
        rows[i] = d->rows;
        y_cols += d->rows;
    }
    df11i_fixed_geom g[DF11_FUSED_MAX_PARTS];
    long long g0[DF11_FUSED_MAX_PARTS], pairs = 0;
    DevGeom dg;
    df11_status s;
    if ((s = launch_geom(n_parts, rows, n_parts ? parts[0].d->cols : 0, g, g0, &pairs)) !=
            DF11_OK ||
        (s = usable_geom(&dg)) != DF11_OK)
        return s;
    if (ldy == 0) ldy = (uint32_t)y_cols;
    if (ldy < y_cols || ldy > INT32_MAX)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11i_fused_matmul: ldy %u for %llu output columns", ldy,
                          (unsigned long long)y_cols);
    const bool gemm = batch >= g_gemm_from.load() && df11i_fused_gemm_takes(x, g[0].cols);
    if (batch <= DF11_FUSED_MAX_BATCH && !gemm)
        return launch_mma(parts, n_parts, g, g0, pairs, dg, x, batch, y, ldy, y_bf16, ws, ws_size,
                          d_error, grid_scale, pdl, stream);
    if (gemm)
        return df11i_fused_gemm(parts, n_parts, g, x, batch, y, ldy, y_bf16, ws, ws_size, d_error,
                                pdl, stream);
    /* no wgmma here (or an x it cannot read: K % 8 != 0, or not 16-byte aligned): the mma.sync
     * kernel, 32 rows of x at a time (ordered on the stream, each leaving the workspace's
     * first half zero) */
    const size_t ysize = y_bf16 ? 2 : 4;
    for (uint32_t b = 0; b < batch; b += DF11_FUSED_MAX_BATCH) {
        const uint32_t n = batch - b < DF11_FUSED_MAX_BATCH ? batch - b : DF11_FUSED_MAX_BATCH;
        s = launch_mma(parts, n_parts, g, g0, pairs, dg,
                       static_cast<const uint16_t *>(x) + (size_t)b * g[0].cols, n,
                       static_cast<uint8_t *>(y) + (size_t)b * ldy * ysize, ldy, y_bf16, ws,
                       ws_size, d_error, grid_scale, pdl, stream);
        if (s != DF11_OK) return s;
    }
    return DF11_OK;
}
