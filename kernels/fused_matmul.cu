/* The fused matmul on fixed-code tensors (codec/fixed.h, DF11_CODEC_EXP_FIXED):
 *     y[b][n] = sum_k x[b][k] * W[n][k],  W rows x cols BF16 as HF stores it, B = 1..16,
 * straight from the compressed payload: W is decoded in registers right after its load,
 * fed to mma.m16n8k16 (bf16 in, fp32 accumulate) and never written back to memory.
 *
 * The kernel is bench/probes/fused_gemv.cu's `fused_gemv` as committed in d341253 ("one
 * stage per warp refilled step by step (8.5 KiB/warp), warp-uniform escape rounds, 2-warp
 * CTAs": 0.92x cuBLAS BF16 on the Llama-3-8B block at B = 1). The probe is where it is
 * tuned; this is the library's one copy. Changes from the probe, all outside the decode and
 * MMA loop: x is B x K with row stride K (the probe pads it to cols_pad with zeros), read
 * with bounds checks where K is not a multiple of 64 or x not 16-byte aligned; y is F32
 * or BF16 (round to nearest even at the store); the error word may be NULL; sm_80+ only.
 *
 * What one warp does: own a 16-row strip and walk its tiles (16 rows x 256 columns),
 * copied by cp.async into the warp's stage a tile ahead, slot by slot; per step of 64
 * columns each lane decodes its 32 weights (16 bf16x2 A-fragment registers: sign|mantissa
 * byte pair doubled by a PRMT, the 3-bit codes ORed into the exponent fields, the row base
 * added, escapes corrected through shared-memory words) and issues 4 MMAs per 8 batch
 * rows. The 2 warps of a CTA take neighbouring strips over the same columns. CTAs split
 * the (strip pair, tile) units evenly (stream-K); a strip cut between CTAs is summed by the
 * last CTA to finish it, from per-CTA partials in the workspace, in CTA order: the result
 * does not depend on timing (deterministic for a given grid, i.e. device). Bytes moved:
 * the compressed tensor once (~1.41 bytes a weight), x from L1/L2, y once.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>

#include "kernels/matmul.h"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

/* The sm_75 PTX of the library's build holds an empty kernel, so its helpers go unused. */
#pragma nv_diag_suppress 177

namespace {

constexpr int kWarps = 2;     /* warps a CTA (the probe's FG_WARPS) */
constexpr int kMinBlocks = 8; /* CTAs an SM, for the register budget (the probe's FG_MINB) */

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

__host__ __device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t sel)
{
#ifdef __CUDA_ARCH__
    return __byte_perm(a, 0, sel);
#else
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        uint32_t s = (sel >> 4 * i) & 7;
        r |= (s < 4 ? (a >> 8 * s) & 0xff : 0) << 8 * i;
    }
    return r;
#endif
}

// The highest set bit (one FLO).
__host__ __device__ __forceinline__ uint32_t top_bit(uint32_t m)
{
#ifdef __CUDA_ARCH__
    return 31 - __clz(m);
#else
    return 31 - (uint32_t)__builtin_clz(m);
#endif
}

__host__ __device__ __forceinline__ uint32_t popc(uint32_t m)
{
#ifdef __CUDA_ARCH__
    return __popc(m);
#else
    return (uint32_t)__builtin_popcount(m);
#endif
}

// df11i_fixed_escape_mask, for both sides: bit p (low) / 16 + p (high) = pair p escapes.
__host__ __device__ __forceinline__ uint32_t escape_mask(uint32_t a, uint32_t b, uint32_t c)
{
    const uint32_t lsb = 0x12491249u;
    return (a & a >> 1 & a >> 2 & lsb) | (b & b >> 1 & b >> 2 & lsb) << 1 |
           (c & c >> 1 & c >> 2 & lsb) << 2 | (a & b & c & 0x80008000u);
}

// The codes of pair P, at bits 7..9 and 23..25 (the exponent fields of a bf16x2).
template <int P>
__host__ __device__ __forceinline__ uint32_t code_pair(uint32_t A, uint32_t B, uint32_t C)
{
    if constexpr (P < 15) {
        const uint32_t W = P % 3 == 0 ? A : P % 3 == 1 ? B : C;
        constexpr int sh = 3 * (P / 3);
        if constexpr (sh <= 7)
            return (W << (7 - sh)) & 0x03800380u;
        else
            return (W >> (sh - 7)) & 0x03800380u;
    } else {
        return ((A >> 8) & 0x00800080u) | ((B >> 7) & 0x01000100u) | ((C >> 6) & 0x02000200u);
    }
}

// A lane's 16 correction words (one per pair) are 64 contiguous bytes; its 16-byte vector
// v sits at slot v ^ sw, sw = (lane >> 1) & 3, so that 8 lanes' 16-byte reads hit 8
// different bank groups. Word of pair p: (p ^ 4 sw) & 15.
__host__ __device__ __forceinline__ uint32_t corr_swz(uint32_t lane)
{
    return ((lane >> 1) & 3) << 2;
}

// Pair P of a step as a bf16x2: sign|mantissa bytes doubled by one PRMT and masked, the
// code pair ORed into the exponent fields, the row's base (b * 0x00800080) and the escape
// correction added. 32-bit modular arithmetic: exact whatever b.
template <int P>
__host__ __device__ __forceinline__ uint32_t pair_bf16x2(const uint32_t w[8], uint32_t A,
                                                         uint32_t B, uint32_t C, uint32_t X0,
                                                         uint32_t X8, uint32_t corr)
{
    return ((prmt(w[P / 2], (P & 1) ? 0x3322 : 0x1100) & 0x807f807fu) | code_pair<P>(A, B, C)) +
           ((P & 4) ? X8 : X0) + corr;
}

__host__ __device__ __forceinline__ void decode_step(uint4 s0, uint4 s1, uint32_t A, uint32_t B,
                                                     uint32_t C, uint32_t X0, uint32_t X8,
                                                     const uint32_t c[16], uint32_t o[16])
{
    const uint32_t w[8] = { s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w };
    o[0] = pair_bf16x2<0>(w, A, B, C, X0, X8, c[0]);
    o[1] = pair_bf16x2<1>(w, A, B, C, X0, X8, c[1]);
    o[2] = pair_bf16x2<2>(w, A, B, C, X0, X8, c[2]);
    o[3] = pair_bf16x2<3>(w, A, B, C, X0, X8, c[3]);
    o[4] = pair_bf16x2<4>(w, A, B, C, X0, X8, c[4]);
    o[5] = pair_bf16x2<5>(w, A, B, C, X0, X8, c[5]);
    o[6] = pair_bf16x2<6>(w, A, B, C, X0, X8, c[6]);
    o[7] = pair_bf16x2<7>(w, A, B, C, X0, X8, c[7]);
    o[8] = pair_bf16x2<8>(w, A, B, C, X0, X8, c[8]);
    o[9] = pair_bf16x2<9>(w, A, B, C, X0, X8, c[9]);
    o[10] = pair_bf16x2<10>(w, A, B, C, X0, X8, c[10]);
    o[11] = pair_bf16x2<11>(w, A, B, C, X0, X8, c[11]);
    o[12] = pair_bf16x2<12>(w, A, B, C, X0, X8, c[12]);
    o[13] = pair_bf16x2<13>(w, A, B, C, X0, X8, c[13]);
    o[14] = pair_bf16x2<14>(w, A, B, C, X0, X8, c[14]);
    o[15] = pair_bf16x2<15>(w, A, B, C, X0, X8, c[15]);
}

// Eight exception bytes from byte idx of src (src 8-aligned, readable 16 bytes past idx).
__host__ __device__ __forceinline__ uint64_t exc_window(const uint8_t *src, uint32_t idx)
{
    const uint64_t *q = reinterpret_cast<const uint64_t *>(src + (idx & ~7u));
    const uint64_t q0 = q[0], q1 = q[1];
    const uint32_t r = 8 * (idx & 7);
    return r ? (q0 >> r) | (q1 << (64 - r)) : q0;
}

__host__ __device__ __forceinline__ void add_corr(uint32_t *c, uint32_t v)
{
#ifdef __CUDA_ARCH__
    atomicAdd(c, v); // no return: a RED, so the loop does not wait on shared memory
#else
    *c += v;
#endif
}

// A lane's exceptions, read in order through an 8-byte window.
struct ExcCursor {
    const uint8_t *src;
    uint32_t pos; // byte index in src of the next exception
    uint64_t win; // bytes pos .. pos + left - 1, the next one lowest
    uint32_t left;
};

// Escapes of a step, highest mask bit first: each adds (e - b - 7) to its exponent field
// (the code 7 contributed 7) through the lane's correction words. bb0/bb8 = b + 7 of the
// lane's two rows; swz = corr_swz(lane).
__host__ __device__ __forceinline__ void apply_escapes(uint32_t M, ExcCursor &ec, uint32_t bb0,
                                                       uint32_t bb8, uint32_t swz, uint32_t *corr)
{
    const uint32_t n = popc(M);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // Warp-uniform trip count, predicated body: no divergent loop, no reconvergence.
    const uint32_t nmax = __reduce_max_sync(~0u, n);
    if (nmax <= 8) {
        if (n > ec.left) {
            ec.win = exc_window(ec.src, ec.pos);
            ec.left = 8;
        }
        ec.pos += n;
        ec.left -= n;
        uint64_t win = ec.win;
        for (uint32_t k = 0; k < nmax; k++) {
            const uint32_t f = 31 - __clz(M); // M = 0: f = ~0, the shift below yields 0
            const bool on = M != 0;
            M ^= on ? 1u << (f & 31) : 0u;
            const uint32_t e = (uint32_t)win & 0xff;
            if (on) {
                win >>= 8;
                add_corr(corr + ((f ^ swz) & 15), (e - ((f & 4) ? bb8 : bb0)) << ((f & 16) | 7));
            }
        }
        ec.win = win;
        return;
    }
#endif
    if (n > ec.left) { // refill: at most once a step for up to 8 escapes
        ec.win = exc_window(ec.src, ec.pos);
        ec.left = 8;
    }
    if (n <= 8) { // the window holds them all: no checks in the loop
        ec.pos += n;
        ec.left -= n;
        while (M) {
            const uint32_t f = top_bit(M);
            M ^= 1u << f;
            const uint32_t e = (uint32_t)ec.win & 0xff;
            ec.win >>= 8;
            add_corr(corr + ((f ^ swz) & 15), (e - ((f & 4) ? bb8 : bb0)) << ((f & 16) | 7));
        }
    } else { // more than 8 escapes in a step (not in trained weights)
        while (M) {
            if (ec.left == 0) {
                ec.win = exc_window(ec.src, ec.pos);
                ec.left = 8;
            }
            const uint32_t f = top_bit(M);
            M ^= 1u << f;
            const uint32_t e = (uint32_t)ec.win & 0xff;
            ec.win >>= 8;
            ec.left--;
            ec.pos++;
            add_corr(corr + ((f ^ swz) & 15), (e - ((f & 4) ? bb8 : bb0)) << ((f & 16) | 7));
        }
    }
}

struct Mat {
    const uint8_t *sm;
    const uint8_t *codes;
    const uint32_t *exc_off;
    const uint8_t *exc;
    const uint8_t *base;
    int rows, cols_pad, n_strips, steps, tiles, last_steps;
    long long strip_code_bytes;
};

struct Args {
    Mat W;
    const uint16_t *x; // B x K BF16, row stride K (library change: the probe's is cols_pad)
    void *y;           // B x rows, F32 or (y_bf16) BF16 (library change: the probe's is F32)
    float *ws;         // partials: n_strips * maxc * 256
    unsigned *sem;     // n_strips, zero between launches
    unsigned *err;     // set when a tile's codes and offsets disagree (may be NULL)
    int B, NU, G, maxc, K, y_bf16;
    bool x_vec; // K % 8 == 0 and x 16-byte aligned: rows read 16 bytes at a time
};

__device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp16(void *smem, const void *g)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

__device__ __forceinline__ uint4 lds128(const uint8_t *p)
{
    return *reinterpret_cast<const uint4 *>(p);
}

// A warp's stage (8.5 KiB with its corrections, so that shared memory leaves L1 room for x):
// 4 sm slots of a step each, the code vectors, and two exception buffers (the tile in use
// and the next), each up to 512 bytes from the 16-byte boundary below the tile's first
// exception (more are read from global memory). Every lane reads back only the sm and code
// bytes it copied itself; only the exceptions cross lanes.
constexpr int EXC_STAGE = 528;
constexpr int RING_BYTES = 4096 + 1536 + 2 * EXC_STAGE;
constexpr int CORR_BYTES = 2048;

// cta_of(u): the CTA whose unit range [c NU / G, (c+1) NU / G) holds unit u.
__device__ __forceinline__ int cta_of(long long u, int NU, int G)
{
    return (int)(((u + 1) * G - 1) / NU);
}

struct TileOff {
    uint32_t off0, off1, nsteps;
};

// Tile (s, t)'s code vectors into the stage and its exceptions into `excb`; one group.
__device__ __forceinline__ TileOff issue_codes(const Mat &W, int s, int t, int t0,
                                               const uint8_t *cdp, uint32_t lane, uint32_t &offw,
                                               int &tw, uint8_t *stage, uint8_t *excb)
{
    const long long sbase = (long long)s * W.tiles;
    if (t - tw >= 31) {
        tw = t;
        offw = __ldg(W.exc_off + sbase + min(t + (int)lane, W.tiles));
    }
    TileOff o;
    o.off0 = __shfl_sync(~0u, offw, t - tw);
    o.off1 = __shfl_sync(~0u, offw, t - tw + 1);
    o.nsteps = t + 1 == W.tiles ? W.last_steps : 4;
    const uint8_t *cp = cdp + (long long)(t - t0) * 1536;
    uint8_t *dst = stage + 4096 + lane * 16;
    const int nv = (3 * o.nsteps + 3) / 4;
#pragma unroll
    for (int i = 0; i < 3; i++)
        if (i < nv) cp16(dst + i * 512, cp + i * 512);
    const uint32_t a0 = o.off0 & ~15u, nvec = (o.off1 - a0 + 15) >> 4;
    if (nvec <= 33 && lane < nvec) cp16(excb + lane * 16, W.exc + a0 + lane * 16);
    if (nvec == 33 && lane == 0) cp16(excb + 512, W.exc + a0 + 512);
    cp_commit();
    return o;
}
// Step g of tile t into sm slot g (the lane's own 32 bytes); one group, empty past the tile.
__device__ __forceinline__ void issue_step(const uint8_t *smp, int t, int t0, int g, bool on,
                                           uint32_t lane, uint8_t *stage)
{
    if (on) {
        const uint8_t *sm = smp + (long long)(t - t0) * 4096 + g * 1024;
        cp16(stage + g * 1024 + lane * 16, sm);
        cp16(stage + g * 1024 + 512 + lane * 16, sm + 512);
    }
    cp_commit();
}

// One lane's c fragments -> y, or a partial for the strip's last CTA to sum.
template <int NB>
__device__ void emit(const Args &a, int s, int grp, float acc[NB][4], uint32_t lane)
{
    const Mat &W = a.W;
    const long long u0 = (long long)grp * W.tiles;
    const int cf = cta_of(u0, a.NU, a.G), cl = cta_of(u0 + W.tiles - 1, a.NU, a.G), n = cl - cf + 1;
    const int r0 = 16 * s + (int)(lane >> 2);
    auto store_y = [&](float v[NB][4]) {
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int row = r0 + 8 * (j >> 1), b = nb * 8 + 2 * (int)(lane & 3) + (j & 1);
                if (b < a.B && row < W.rows) {
                    const long long at = (long long)b * W.rows + row;
                    if (a.y_bf16)
                        static_cast<__nv_bfloat16 *>(a.y)[at] = __float2bfloat16_rn(v[nb][j]);
                    else
                        static_cast<float *>(a.y)[at] = v[nb][j];
                }
            }
    };
    if (n == 1) {
        store_y(acc);
        return;
    }
    float *slot = a.ws + ((long long)s * a.maxc) * 256;
    const int ci = (int)blockIdx.x - cf;
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            slot[ci * 256 + ((lane >> 2) + 8 * (j >> 1)) * 16 + nb * 8 + 2 * (lane & 3) + (j & 1)] =
                acc[nb][j];
    __threadfence();
    __syncwarp();
    unsigned old = 0;
    if (lane == 0) old = atomicAdd(a.sem + s, 1u);
    old = __shfl_sync(~0u, old, 0);
    if (old != (unsigned)n - 1) return;
    __threadfence();
    float sum[NB][4] = {};
    for (int c = 0; c < n; c++)
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                sum[nb][j] += __ldcg(slot + c * 256 + ((lane >> 2) + 8 * (j >> 1)) * 16 + nb * 8 +
                                     2 * (lane & 3) + (j & 1));
    store_y(sum);
    if (lane == 0) atomicExch(a.sem + s, 0u);
}

// What one warp does: walk tiles (s, t0..t1) of its strip, copied into its stage by
// cp.async a tile ahead, slot by slot. Per tile: escape masks, one warp prefix sum of escape
// counts, an 8-byte exception window per lane. Per step of 32 weights a lane: corrections
// (a RED per escape, in warp-uniform rounds), 16 pairs decoded (PRMT, SHF, 2 LOP3, IADD3),
// 4 * NB MMAs. Bytes per tile: 4096 sm + 1536 codes + ~100 exceptions, read once.
// The probe's defaults: 8 CTAs of 2 warps an SM (FG_MINB, FG_WARPS there). XV: K is a
// multiple of 64 (no pad columns) and x_vec, so x needs no bounds check.
template <int NB, bool XV>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) fused_matmul_kernel(Args a)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int WARPS = kWarps;
    extern __shared__ __align__(16) uint8_t dsm[];
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *ring = dsm + warp * RING_BYTES;
    uint4 *corr4 =
        reinterpret_cast<uint4 *>(dsm + WARPS * RING_BYTES + warp * CORR_BYTES + lane * 64);
    uint32_t *corr = reinterpret_cast<uint32_t *>(corr4);
    const uint32_t swz = corr_swz(lane), sw = swz >> 2;
#pragma unroll
    for (int v = 0; v < 4; v++) corr4[v] = make_uint4(0, 0, 0, 0);
    const Mat &W = a.W;
    const long long u_begin = (long long)blockIdx.x * a.NU / a.G,
                    u_end = (long long)(blockIdx.x + 1) * a.NU / a.G;
    const int q = lane & 3, nrow = lane >> 2;

    for (long long u = u_begin; u < u_end;) {
        const int grp = (int)(u / W.tiles), t0 = (int)(u % W.tiles);
        const int t1 = (int)min((long long)W.tiles, t0 + (u_end - u));
        u += t1 - t0;
        const int s = grp * WARPS + (int)warp;
        if (s >= W.n_strips) continue;
        const uint32_t b0 = W.base[16 * s + nrow], b8 = W.base[16 * s + nrow + 8];
        // through a shuffle, so that ptxas keeps them as values and the decode adds them
        // in its IADD3 instead of an IMAD per pair
        const uint32_t X0 = __shfl_sync(~0u, b0 * 0x00800080u, (int)lane),
                       X8 = __shfl_sync(~0u, b8 * 0x00800080u, (int)lane);
        const uint8_t *smp = W.sm + ((long long)s * W.steps + 4LL * t0) * 1024 + lane * 16;
        const uint8_t *cdp = W.codes + s * W.strip_code_bytes + (long long)t0 * 1536 + lane * 16;
        // this lane's activation rows (zero for rows >= B), one 16-byte piece per half step
        const uint16_t *xr[NB];
        bool xon[NB];
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            xon[nb] = nrow + 8 * nb < a.B;
            xr[nb] = a.x + (long long)(nrow + 8 * nb) * a.K;
        }
        long long xc = 256LL * t0 + 8 * q; // this lane's first x column of the tile
        float acc[NB][4] = {};
        uint32_t offw = 0;
        int tw = -1000;
        // Groups in flight, in order: codes+exceptions of tile t, then its 4 steps, so the
        // one a lane waits for always has exactly 4 younger groups (cp.async.wait_group 4).
        uint8_t *stage = ring;
        TileOff cur = issue_codes(W, s, t0, t0, cdp, lane, offw, tw, stage, ring + 5632), nxt = cur;
#pragma unroll
        for (int g = 0; g < 4; g++) issue_step(smp, t0, t0, g, g < (int)cur.nsteps, lane, stage);
        for (int t = t0; t < t1; t++) {
            uint8_t *excb = ring + 5632 + ((t - t0) & 1) * EXC_STAGE;
            cp_wait<4>();
            __syncwarp(); // exceptions copied by other lanes; the other buffer free
            uint4 cw[3];
#pragma unroll
            for (int i = 0; i < 3; i++) cw[i] = lds128(stage + 4096 + i * 512 + lane * 16);
            const bool more = t + 1 < t1;
            if (more)
                nxt = issue_codes(W, s, t + 1, t0, cdp, lane, offw, tw, stage,
                                  ring + 5632 + ((t + 1 - t0) & 1) * EXC_STAGE);
            else
                cp_commit();
            const uint32_t words[12] = { cw[0].x, cw[0].y, cw[0].z, cw[0].w, cw[1].x, cw[1].y,
                                         cw[1].z, cw[1].w, cw[2].x, cw[2].y, cw[2].z, cw[2].w };
            uint32_t M[4], cnt = 0;
#pragma unroll
            for (int g = 0; g < 4; g++) {
                M[g] = escape_mask(words[3 * g], words[3 * g + 1], words[3 * g + 2]);
                if (g >= (int)cur.nsteps) M[g] = 0; // a short last tile: stale words
                cnt += popc(M[g]);
            }
            uint32_t incl = cnt;
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                uint32_t v = __shfl_up_sync(~0u, incl, d);
                if ((int)lane >= d) incl += v;
            }
            const uint32_t total = __shfl_sync(~0u, incl, 31);
            if (total != cur.off1 - cur.off0 && lane == 0 && a.err) atomicOr(a.err, 1u);
            const uint32_t lead = cur.off0 & 15u;
            ExcCursor ec;
            if (lead + total <= EXC_STAGE) { // in the stage
                ec.src = excb;
                ec.pos = lead + incl - cnt;
            } else {
                ec.src = W.exc;
                ec.pos = cur.off0 + incl - cnt;
            }
            ec.left = 0;
            ec.win = 0;
#pragma unroll
            for (int g = 0; g < 4; g++) {
                if (g >= (int)cur.nsteps) break;
                uint4 xv[NB][2];
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        xv[nb][h] = !xon[nb] ? make_uint4(0, 0, 0, 0)
                                    : XV     ? __ldg(reinterpret_cast<const uint4 *>(xr[nb] + xc +
                                                                                 64 * g + 32 * h))
                                             : load_x8(xr[nb], xc + 64 * g + 32 * h, a.K, a.x_vec);
                cp_wait<4>();
                const uint4 s0 = lds128(stage + (2 * g) * 512 + lane * 16),
                            s1 = lds128(stage + (2 * g + 1) * 512 + lane * 16);
                // the slot is the lane's own: refill it with the next tile's step at once
                issue_step(smp, t + 1, t0, g, more && g < (int)nxt.nsteps, lane, stage);
                apply_escapes(M[g], ec, b0 + 7, b8 + 7, swz, corr);
                uint32_t c[16], o[16];
#pragma unroll
                for (int v = 0; v < 4; v++) {
                    uint4 t4 = corr4[v ^ sw];
                    c[4 * v] = t4.x, c[4 * v + 1] = t4.y, c[4 * v + 2] = t4.z, c[4 * v + 3] = t4.w;
                }
                if (M[g]) {
#pragma unroll
                    for (int v = 0; v < 4; v++) corr4[v] = make_uint4(0, 0, 0, 0);
                }
                decode_step(s0, s1, words[3 * g], words[3 * g + 1], words[3 * g + 2], X0, X8, c, o);
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        mma16816(acc[nb], o[8 * h + 0], o[8 * h + 4], o[8 * h + 1], o[8 * h + 5],
                                 xv[nb][h].x, xv[nb][h].y);
                        mma16816(acc[nb], o[8 * h + 2], o[8 * h + 6], o[8 * h + 3], o[8 * h + 7],
                                 xv[nb][h].z, xv[nb][h].w);
                    }
            }
            xc += 256;
            __syncwarp(); // every lane is done with this stage before it is refilled
            cur = nxt;
        }
        emit<NB>(a, s, grp, acc, lane);
    }
#endif
}

constexpr size_t smem_bytes() { return (size_t)kWarps * (RING_BYTES + CORR_BYTES); }

/* Launch geometry of the current device, looked up once per device: SMs and CTAs an SM
 * for NB = 1 and 2 (0: the device cannot run the kernel). */
struct DevGeom {
    int sms, occ[2];
};

constexpr int kMaxDevices = 64;
std::atomic<int> g_state[kMaxDevices]; /* 0 unknown, 1 known, 2 unsupported */
DevGeom g_geom[kMaxDevices];

df11_status dev_geom(DevGeom *out)
{
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused matmul: cudaGetDevice: %s",
                          cudaGetErrorString(e));
    if (dev < 0 || dev >= kMaxDevices)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: device %d", dev);
    int st = g_state[dev].load(std::memory_order_acquire);
    if (st == 0) {
        DevGeom g = { 0, { 0, 0 } };
        int major = 0;
        e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (e == cudaSuccess)
            e = cudaDeviceGetAttribute(&g.sms, cudaDevAttrMultiProcessorCount, dev);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused matmul: device attributes: %s",
                              cudaGetErrorString(e));
        if (major >= 8) {
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &g.occ[0], fused_matmul_kernel<1, true>, kWarps * 32, smem_bytes());
            if (e == cudaSuccess)
                e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                    &g.occ[1], fused_matmul_kernel<2, true>, kWarps * 32, smem_bytes());
            if (e != cudaSuccess)
                return df11i_fail(DF11_ERR_DEVICE, "fused matmul: occupancy: %s",
                                  cudaGetErrorString(e));
        }
        g_geom[dev] = g; /* the same values from every thread that gets here */
        st = major >= 8 && g.occ[0] > 0 && g.occ[1] > 0 ? 1 : 2;
        g_state[dev].store(st, std::memory_order_release);
    }
    *out = st == 1 ? g_geom[dev] : DevGeom{ 0, { 0, 0 } };
    return DF11_OK;
}

/* The grid of one launch: units are (strip pair, tile); G CTAs take NU / G each, so a
 * strip pair's `tiles` units touch at most maxc CTAs (the partial slots per strip). */
struct Grid {
    int NU, G, maxc;
};

Grid make_grid(const df11i_fixed_geom &g, const DevGeom &dg, int nb)
{
    Grid r;
    const long long groups = ((long long)g.n_strips + kWarps - 1) / kWarps;
    const long long nu = groups * (long long)g.tiles;
    r.NU = (int)nu;
    r.G = (int)(nu < (long long)dg.sms * dg.occ[nb - 1] ? nu : (long long)dg.sms * dg.occ[nb - 1]);
    if (r.G < 1) r.G = 1;
    const long long minu = nu / r.G; /* >= 1 */
    long long c = ((long long)g.tiles + minu - 1) / minu + 1;
    r.maxc = (int)(c < r.G ? c : r.G);
    return r;
}

uint64_t align256(uint64_t x) { return (x + 255) / 256 * 256; }

/* Geometry the kernel can index with ints. */
df11_status geom_of(uint64_t rows, uint64_t cols, df11i_fixed_geom *g)
{
    df11_status s = df11i_fixed_geometry(rows, cols, g);
    if (s != DF11_OK) return s;
    if (!rows || !cols || g->rows_pad > INT32_MAX || g->cols_pad > INT32_MAX ||
        g->n_strips * g->tiles > INT32_MAX)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: %llu x %llu is out of range",
                          (unsigned long long)rows, (unsigned long long)cols);
    return DF11_OK;
}

/* The workspace: semaphores at its start, partials at its end. */
uint64_t sem_bytes(const df11i_fixed_geom &g) { return align256(4 * g.n_strips); }
uint64_t part_bytes(const df11i_fixed_geom &g, const Grid &gr)
{
    return 4 * g.n_strips * (uint64_t)gr.maxc * 256;
}

} // namespace

extern "C" int df11i_fused_matmul_supported(void)
{
    DevGeom dg;
    return dev_geom(&dg) == DF11_OK && dg.sms > 0;
}

extern "C" df11_status df11i_fused_matmul_workspace(uint64_t rows, uint64_t cols, uint64_t *bytes)
{
    df11i_fixed_geom g;
    DevGeom dg;
    df11_status s;
    if (!bytes) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul_workspace: NULL");
    if ((s = geom_of(rows, cols, &g)) != DF11_OK || (s = dev_geom(&dg)) != DF11_OK) return s;
    if (!dg.sms) return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: needs sm_80 or newer");
    uint64_t m = sem_bytes(g);
    for (int nb = 1; nb <= 2; nb++)
        if (part_bytes(g, make_grid(g, dg, nb)) > m) m = part_bytes(g, make_grid(g, dg, nb));
    *bytes = 2 * m;
    return DF11_OK;
}

extern "C" df11_status df11i_fused_matmul(const df11i_gpu_tensor_desc *d, const void *d_payload,
                                          const void *x, uint32_t batch, void *y, int y_bf16,
                                          void *ws, uint64_t ws_size, uint32_t *d_error,
                                          void *stream)
{
    if (!d || !d_payload || !x || !y || !ws)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: NULL argument");
    if (d->codec != DF11_CODEC_EXP_FIXED)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: codec %u is not fixed",
                          d->codec);
    if (batch == 0 || batch > DF11_FUSED_MAX_BATCH)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fused_matmul: batch %u (1..%d)", batch,
                          DF11_FUSED_MAX_BATCH);
    df11i_fixed_geom g;
    DevGeom dg;
    df11_status s;
    if ((s = geom_of(d->rows, d->cols, &g)) != DF11_OK || (s = dev_geom(&dg)) != DF11_OK) return s;
    if (!dg.sms) return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: needs sm_80 or newer");
    const int nb = batch > 8 ? 2 : 1;
    const Grid gr = make_grid(g, dg, nb);
    const uint64_t pb = part_bytes(g, gr);
    if (sem_bytes(g) + pb > ws_size)
        return df11i_fail(DF11_ERR_STATE, "fused matmul: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)(sem_bytes(g) + pb));
    const uint8_t *p = static_cast<const uint8_t *>(d_payload);
    Args a;
    a.W = Mat{
        p + d->data_off,  p + d->stream_off, reinterpret_cast<const uint32_t *>(p + d->chunks_off),
        p + d->lanes_off, p + d->base_off,   (int)g.rows,
        (int)g.cols_pad,  (int)g.n_strips,   (int)g.steps,
        (int)g.tiles,     (int)g.last_steps, (long long)g.strip_code_bytes
    };
    a.x = static_cast<const uint16_t *>(x);
    a.y = y;
    a.sem = static_cast<unsigned *>(ws);
    a.ws = reinterpret_cast<float *>(static_cast<uint8_t *>(ws) + (ws_size - pb) / 4 * 4);
    a.err = d_error;
    a.B = (int)batch;
    a.NU = gr.NU;
    a.G = gr.G;
    a.maxc = gr.maxc;
    a.K = (int)g.cols;
    a.y_bf16 = y_bf16 != 0;
    a.x_vec = g.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    const bool xv = a.x_vec && g.cols % 64 == 0;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const unsigned T = kWarps * 32;
    const size_t sm = smem_bytes();
    if (nb == 1)
        xv ? fused_matmul_kernel<1, true><<<gr.G, T, sm, st>>>(a)
           : fused_matmul_kernel<1, false><<<gr.G, T, sm, st>>>(a);
    else
        xv ? fused_matmul_kernel<2, true><<<gr.G, T, sm, st>>>(a)
           : fused_matmul_kernel<2, false><<<gr.G, T, sm, st>>>(a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused matmul launch (%d CTAs): %s", gr.G,
                          cudaGetErrorString(e));
    return DF11_OK;
}
