// Fused GEMV / skinny GEMM on the fixed exponent code (codec/fixed.h, issue 11):
//     y[b][n] = sum_k x[b][k] * W[n][k],  W N x K BF16 (as HF stores it), B = 1..16,
// fp32 accumulation, W decoded in registers right after its load and never written back.
// Standalone like decode_roof.cu; built by bench/CMakeLists.txt (`ninja fused_gemv`, not
// part of `all`). On the synthetic Llama-3-8B block (tools/weights.c, seeded as
// df11-synth --shape llama3-8b-block) it
//   1. encodes the 7 matrices and prints the codec's size and the variants' sizes (--sizes
//      stops there: no GPU needed);
//   2. checks the decoder bit-exact and runs the kernel's per-lane decode on the CPU (the
//      same __host__ __device__ code) against the weights, fragment by fragment;
//   3. checks the kernel and cuBLAS against a float64 CPU reference for B = 1..16;
//   4. times the kernel, cublasGemmEx and cublasLt (each under a CUDA graph, median of
//      --reps replays) per matrix and for the whole block (as 7 tensors, and as engines
//      store it: q/k/v and gate/up stacked into one tensor each), and a device-to-device copy.
// --profile launches the kernel and cuBLAS on gate (B = 1, 8, 16) a few times without
// graphs, for ncu; --sanitize launches the kernel alone on k, the odd shape and the
// escape-heavy tensor, for compute-sanitizer. Device calls and results: bench/RESULTS.md.
//
// The kernel: one warp owns a 16-row strip and walks its tiles (16 rows x 256 columns),
// copied by cp.async into the warp's one shared stage a tile ahead, slot by slot (a step's
// slot is refilled with the next tile's step as soon as the lane has read it); it feeds
// mma.m16n8k16 (bf16 in, fp32 accumulate) with A fragments decoded from 16 bytes of
// sign|mantissa and 3 code words per 32 weights. The WARPS (2) warps of a CTA take
// neighbouring strips over the same columns; x comes from L1. CTAs split the (strip group, tile)
// units evenly (stream-K); a strip cut between CTAs is summed by the last one to finish
// it, partials in CTA order: deterministic. Launched with programmatic dependent launch:
// a launch's CTAs take SMs as the previous launch's CTAs leave and prefetch their first
// tile of weights before griddepcontrol.wait (x, y and the split-K scratch wait), so one
// launch's pipeline fill overlaps the previous one's drain (build with -DFG_NO_PDL for
// plain launches).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "codec/fixed.h"
#include "tools/weights.h"
}

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CB(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d %s: cublas %d\n", __FILE__, __LINE__, #x, (int)s_);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static const struct {
    const char *name, *tag;
    uint64_t rows, cols;
} BLOCK[] = {
    { "model.layers.0.self_attn.q_proj.weight", "q", 4096, 4096 },
    { "model.layers.0.self_attn.k_proj.weight", "k", 1024, 4096 },
    { "model.layers.0.self_attn.v_proj.weight", "v", 1024, 4096 },
    { "model.layers.0.self_attn.o_proj.weight", "o", 4096, 4096 },
    { "model.layers.0.mlp.gate_proj.weight", "gate", 14336, 4096 },
    { "model.layers.0.mlp.up_proj.weight", "up", 14336, 4096 },
    { "model.layers.0.mlp.down_proj.weight", "down", 4096, 14336 },
};
static const int NMAT = 7;
// Timed too: q, k, v and gate, up stacked by rows into one tensor each, as engines store
// them (one launch per group; x is the same for the group's members).
static const int QKV = NMAT, GATE_UP = NMAT + 1, NTIMED = NMAT + 2;
// Checked, not timed: a shape with short strips and a short last tile, and a tensor of
// random exponents (97% escapes: exception lists past the stage, the slow escape path).
static const int NEXTRA = 2, NALL = NTIMED + NEXTRA;
static const char *TAG[NALL] = {
    "q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up", "odd 37x1111", "escapes 100x3000"
};
static const int BS[] = { 1, 2, 4, 8, 16 };

// ---------------------------------------------------------------- decode, host and device

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
#ifdef __CUDA_ARCH__
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

// ---------------------------------------------------------------- the kernel

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
    const __nv_bfloat16 *x; // B x cols_pad (zero past cols)
    float *y;               // B x rows
    float *ws;              // partials: n_strips * maxc * 256
    unsigned *sem;          // n_strips, zero between launches
    unsigned *err;          // set when a tile's codes and offsets disagree
    int B, NU, G, maxc;
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
                if (b < a.B && row < W.rows) a.y[(long long)b * W.rows + row] = v[nb][j];
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
// FG_MINB (CTAs per SM for the register budget) and FG_WARPS are build-time knobs for
// experiments; the defaults (8 CTAs of 2 warps an SM, 122 registers, no spills) measured
// best (bench/RESULTS.md).
#ifndef FG_MINB
#define FG_MINB 8
#endif
template <int NB, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, FG_MINB) fused_gemv(Args a)
{
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
#ifndef FG_NO_PDL
    // the next launch may start (its CTAs take SMs as ours leave) and prefetch its weights
    asm volatile("griddepcontrol.launch_dependents;");
#endif

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
        const uint4 *xq[NB];
        bool xon[NB];
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            xon[nb] = nrow + 8 * nb < a.B;
            xq[nb] = reinterpret_cast<const uint4 *>(a.x + (long long)(nrow + 8 * nb) * W.cols_pad +
                                                     256LL * t0 + 8 * q);
        }
        float acc[NB][4] = {};
        uint32_t offw = 0;
        int tw = -1000;
        // Groups in flight, in order: codes+exceptions of tile t, then its 4 steps, so the
        // one a lane waits for always has exactly 4 younger groups (cp.async.wait_group 4).
        uint8_t *stage = ring;
        TileOff cur = issue_codes(W, s, t0, t0, cdp, lane, offw, tw, stage, ring + 5632), nxt = cur;
#pragma unroll
        for (int g = 0; g < 4; g++) issue_step(smp, t0, t0, g, g < (int)cur.nsteps, lane, stage);
#ifndef FG_NO_PDL
        // weights only above: x, y and the split-K scratch wait for the previous launch
        asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
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
            if (total != cur.off1 - cur.off0 && lane == 0) atomicOr(a.err, 1u);
            const uint32_t lead = cur.off0 & 15u;
            ExcCursor ec;
            if (lead + total <= EXC_STAGE) { // in the stage
                ec.src = excb;
                ec.pos = lead + incl - cnt;
            } else {
                ec.src = W.exc;
                ec.pos = cur.off0 + incl - cnt;
            }
            ec.win = exc_window(ec.src, ec.pos); // early: off the first escape's path
            ec.left = 8;
#pragma unroll
            for (int g = 0; g < 4; g++) {
                if (g >= (int)cur.nsteps) break;
                uint4 xv[NB][2];
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        xv[nb][h] =
                            xon[nb] ? __ldg(xq[nb] + 8 * g + 4 * h) : make_uint4(0, 0, 0, 0);
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
#pragma unroll
            for (int nb = 0; nb < NB; nb++) xq[nb] += 32;
            __syncwarp(); // every lane is done with this stage before it is refilled
            cur = nxt;
        }
        emit<NB>(a, s, grp, acc, lane);
    }
}

constexpr size_t smem_bytes(int warps) { return (size_t)warps * (RING_BYTES + CORR_BYTES); }

// ---------------------------------------------------------------- host side

struct HostMat {
    std::vector<uint16_t> w; // the BF16 original
    df11i_fixed f;
    uint64_t rows, cols;
};

static void gen_extra(HostMat *m, int threads)
{
    m[0].rows = 37, m[0].cols = 1111;
    m[0].w.resize(m[0].rows * m[0].cols);
    weights_fill(m[0].w.data(), m[0].rows, m[0].cols, 77, false, threads);
    m[1].rows = 100, m[1].cols = 3000;
    m[1].w.resize(m[1].rows * m[1].cols);
    for (uint64_t i = 0; i < m[1].w.size(); i++) {
        uint64_t r = weights_mix64(i + 99);
        uint32_t e =
            r % 16 == 0 ? 0 : 60 + (uint32_t)(r >> 8) % 131; // zeros, denormals, 2^-67 .. 2^63
        m[1].w[i] = (uint16_t)(((r >> 40) & 0x8000) | e << 7 | ((r >> 20) & 0x7f));
    }
    for (int i = 0; i < 2; i++)
        if (df11i_fixed_encode(m[i].w.data(), m[i].rows, m[i].cols, threads, &m[i].f) != DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
}

static void gen_block(HostMat *m, int threads)
{
    for (int i = 0; i < NMAT; i++) {
        uint64_t h = 0xcbf29ce484222325ull; // df11-synth's seed: FNV-1a of the name, seed 0
        for (const char *p = BLOCK[i].name; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
        m[i].rows = BLOCK[i].rows;
        m[i].cols = BLOCK[i].cols;
        m[i].w.resize(m[i].rows * m[i].cols);
        weights_fill(m[i].w.data(), m[i].rows, m[i].cols, weights_mix64(0 ^ weights_mix64(h)),
                     false, threads);
        if (df11i_fixed_encode(m[i].w.data(), m[i].rows, m[i].cols, threads, &m[i].f) != DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
    }
    const int groups[2][4] = { { QKV, 0, 1, 2 }, { GATE_UP, 4, 5, -1 } };
    for (auto &gr : groups) {
        HostMat &h = m[gr[0]];
        h.rows = 0;
        h.cols = m[gr[1]].cols;
        for (int k = 1; k < 4 && gr[k] >= 0; k++) {
            h.w.insert(h.w.end(), m[gr[k]].w.begin(), m[gr[k]].w.end());
            h.rows += m[gr[k]].rows;
        }
        if (df11i_fixed_encode(h.w.data(), h.rows, h.cols, threads, &h.f) != DF11_OK) {
            fprintf(stderr, "encode failed\n");
            exit(1);
        }
    }
}

// Exact sizes of the variants from exponent histograms (the 3-bit per-row variant is the
// one encoded; its computed size must match the encoder's).
static void print_sizes(const HostMat *m)
{
    struct V {
        const char *name;
        int bits, scope;
        double bytes;
    } v[] = {
        { "3-bit + escape, base per row (codec/fixed)", 3, 0, 0 },
        { "3-bit + escape, base per 16-row strip", 3, 1, 0 },
        { "3-bit + escape, base per tensor", 3, 2, 0 },
        { "4-bit + escape (15 exponents), base per row", 4, 0, 0 },
        { "4-bit + escape (15 exponents), base per tensor", 4, 2, 0 },
    };
    double weights = 0, actual = 0, esc_rows = 0;
    for (int i = 0; i < NMAT; i++) {
        const HostMat &h = m[i];
        weights += (double)h.rows * h.cols;
        actual += (double)df11i_fixed_stored_bytes(&h.f);
        for (auto &x : v) {
            const int win = (1 << x.bits) - 1;
            const uint64_t scope_rows = x.scope == 0 ? 1 : x.scope == 1 ? 16 : h.rows;
            uint64_t esc = 0;
            for (uint64_t r0 = 0; r0 < h.rows; r0 += scope_rows) {
                uint64_t hist[256] = { 0 };
                for (uint64_t k = r0 * h.cols; k < std::min(h.rows, r0 + scope_rows) * h.cols; k++)
                    hist[(h.w[k] >> 7) & 0xff]++;
                uint64_t best = 0, cur = 0;
                for (int e = 0; e < 256; e++) {
                    cur += hist[e];
                    if (e >= win) cur -= hist[e - win];
                    if (e >= win - 1 && e - win + 1 <= 256 - win) best = std::max(best, cur);
                }
                uint64_t n = 0;
                for (int e = 0; e < 256; e++) n += hist[e];
                esc += n - best;
            }
            const double nw = (double)h.rows * h.cols, tiles = (double)h.f.g.n_tiles;
            const double nbase = x.scope == 0   ? (double)h.f.g.rows_pad
                                 : x.scope == 1 ? h.f.g.rows_pad / 16.0
                                                : 1.0;
            x.bytes += nw + nw * x.bits / 8.0 + 4.0 * (tiles + 1) + nbase + (double)esc;
            if (&x == &v[0]) esc_rows += (double)esc;
        }
    }
    printf("\ncodec sizes on the synthetic Llama-3-8B block (7 matrices, %.0f weights)\n", weights);
    printf("| variant | bits/weight | of BF16 |\n|---|---|---|\n");
    for (auto &x : v)
        printf("| %s | %.4f | %.3f%% |\n", x.name, 8 * x.bytes / weights,
               100 * x.bytes / (2 * weights));
    printf(
        "encoded (codec/fixed): %.0f bytes = %.4f bits/weight = %.3f%% of BF16; escapes %.3f%% of weights\n",
        actual, 8 * actual / weights, 100 * actual / (2 * weights), 100 * esc_rows / weights);
    if (std::fabs(actual - v[0].bytes) > 0.5)
        printf("MISMATCH: encoder %.0f vs computed %.0f bytes\n", actual, v[0].bytes);
}

static int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

template <typename F> static void par_for(uint64_t n, F fn)
{
    int T = hardware_threads();
    std::vector<std::thread> th;
    for (int t = 0; t < T; t++)
        th.emplace_back([=] {
            for (uint64_t i = t; i < n; i += T) fn(i);
        });
    for (auto &x : th) x.join();
}

// The kernel's per-lane decode on the CPU: for every tile and lane, the prefix of escape
// counts, the exception cursor (alternately from the global list and from a 16-byte
// aligned copy, as the kernel reads them), apply_escapes and decode_step; each pair must
// be the two weights the layout puts there. Returns the number of wrong pairs.
static uint64_t emulate(const HostMat &h)
{
    const df11i_fixed &f = h.f;
    const df11i_fixed_geom &g = f.g;
    std::vector<uint64_t> bad(g.n_strips, 0);
    par_for(g.n_strips, [&](uint64_t s) {
        std::vector<uint32_t> corr(16, 0);
        for (uint64_t t = 0; t < g.tiles; t++) {
            const uint32_t nsteps = t + 1 == g.tiles ? (uint32_t)g.last_steps : 4;
            const uint32_t off0 = f.exc_off[s * g.tiles + t], off1 = f.exc_off[s * g.tiles + t + 1];
            const uint32_t *cw = f.codes + s * g.strip_code_bytes / 4 + t * 384;
            auto word = [&](uint32_t l, uint32_t k) { return cw[((k / 4) * 32 + l) * 4 + k % 4]; };
            uint32_t excl = 0; // exclusive prefix over lanes, in lane order
            for (uint32_t l = 0; l < 32; l++) {
                const uint32_t b0 = f.base[16 * s + l / 4], b8 = f.base[16 * s + l / 4 + 8];
                const uint32_t X0 = b0 * 0x00800080u, X8 = b8 * 0x00800080u;
                uint32_t cnt = 0;
                for (uint32_t st = 0; st < nsteps; st++)
                    cnt += popc(
                        escape_mask(word(l, 3 * st), word(l, 3 * st + 1), word(l, 3 * st + 2)));
                ExcCursor ec;
                if (t & 1)
                    ec.src = f.exc, ec.pos = off0 + excl;
                else
                    ec.src = f.exc + (off0 & ~15u), ec.pos = (off0 & 15u) + excl;
                ec.left = 0;
                ec.win = 0;
                excl += cnt;
                for (uint32_t st = 0; st < nsteps; st++) {
                    uint32_t A = word(l, 3 * st), B = word(l, 3 * st + 1), C = word(l, 3 * st + 2);
                    apply_escapes(escape_mask(A, B, C), ec, b0 + 7, b8 + 7, corr_swz(l),
                                  corr.data());
                    uint32_t c[16], o[16];
                    for (uint32_t p = 0; p < 16; p++)
                        c[p] = corr[(p ^ corr_swz(l)) & 15], corr[(p ^ corr_swz(l)) & 15] = 0;
                    uint64_t step = 4 * t + st;
                    uint4 s0, s1;
                    memcpy(&s0, f.sm + ((s * g.steps + step) * 2 + 0) * 512 + 16 * l, 16);
                    memcpy(&s1, f.sm + ((s * g.steps + step) * 2 + 1) * 512 + 16 * l, 16);
                    decode_step(s0, s1, A, B, C, X0, X8, c, o);
                    for (uint32_t p = 0; p < 16; p++)
                        for (uint32_t hi = 0; hi < 2; hi++) {
                            uint32_t hh = p / 8, j = 4 * ((p % 8) / 2) + 2 * (p % 2) + hi;
                            uint64_t row, col;
                            df11i_fixed_weight_pos(s, step, hh, l, j, &row, &col);
                            if (row >= h.rows || col >= h.cols) continue;
                            if ((uint16_t)(o[p] >> (16 * hi)) != h.w[row * h.cols + col]) bad[s]++;
                        }
                }
            }
            if (excl != off1 - off0) bad[s]++;
        }
    });
    uint64_t n = 0;
    for (auto b : bad) n += b;
    return n;
}

struct DevMat {
    Mat m;
    size_t bytes;   // what the kernel streams: the stored bytes of the code
    uint16_t *bf16; // the BF16 copy for cuBLAS
};

static size_t al(size_t x) { return (x + 255) & ~(size_t)255; }

static DevMat upload(const HostMat &h)
{
    const df11i_fixed &f = h.f;
    size_t o_base = 0, o_sm = al(f.g.rows_pad), o_codes = o_sm + al(f.g.sm_bytes),
           o_off = o_codes + al(f.g.code_bytes + 16), o_exc = o_off + al(4 * (f.g.n_tiles + 1)),
           total = o_exc + al(f.n_exc + 32);
    uint8_t *d;
    CK(cudaMalloc(&d, total));
    CK(cudaMemset(d, 0, total));
    CK(cudaMemcpy(d + o_base, f.base, f.g.rows_pad, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_sm, f.sm, f.g.sm_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_codes, f.codes, f.g.code_bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_off, f.exc_off, 4 * (f.g.n_tiles + 1), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d + o_exc, f.exc, f.n_exc, cudaMemcpyHostToDevice));
    DevMat r;
    r.m =
        Mat{ d + o_sm,          d + o_codes,         reinterpret_cast<const uint32_t *>(d + o_off),
             d + o_exc,         d + o_base,          (int)f.g.rows,
             (int)f.g.cols_pad, (int)f.g.n_strips,   (int)f.g.steps,
             (int)f.g.tiles,    (int)f.g.last_steps, (long long)f.g.strip_code_bytes };
    r.bytes = df11i_fixed_stored_bytes(&f);
    CK(cudaMalloc(&r.bf16, h.w.size() * 2));
    CK(cudaMemcpy(r.bf16, h.w.data(), h.w.size() * 2, cudaMemcpyHostToDevice));
    return r;
}

// A copy of everything (for rotating buffers past L2).
static DevMat clone(const DevMat &src, const HostMat &h)
{
    DevMat r = upload(h);
    (void)src;
    return r;
}

struct Plan {
    int NU, G, maxc, NB;
};

#ifndef FG_WARPS
#define FG_WARPS 2
#endif
static const int WARPS = FG_WARPS;

static Plan make_plan(const Mat &m, int B, int G_want)
{
    Plan p;
    const int groups = (m.n_strips + WARPS - 1) / WARPS;
    p.NU = groups * m.tiles;
    p.G = std::max(1, std::min(G_want, p.NU));
    p.NB = B > 8 ? 2 : 1;
    p.maxc = 1;
    for (int g = 0; g < groups; g++) {
        long long u0 = (long long)g * m.tiles, u1 = u0 + m.tiles - 1;
        int cf = (int)(((u0 + 1) * p.G - 1) / p.NU), cl = (int)(((u1 + 1) * p.G - 1) / p.NU);
        p.maxc = std::max(p.maxc, cl - cf + 1);
    }
    return p;
}

struct Scratch {
    float *ws;
    unsigned *sem, *err;
    size_t ws_floats;
};

static void launch(const Mat &m, const Plan &p, const __nv_bfloat16 *x, float *y, int B,
                   Scratch &sc, cudaStream_t st)
{
    Args a;
    a.W = m;
    a.x = x;
    a.y = y;
    a.ws = sc.ws;
    a.sem = sc.sem;
    a.err = sc.err;
    a.B = B;
    a.NU = p.NU;
    a.G = p.G;
    a.maxc = p.maxc;
    if ((size_t)m.n_strips * p.maxc * 256 > sc.ws_floats) {
        fprintf(stderr, "workspace too small\n");
        exit(1);
    }
#ifndef FG_NO_PDL
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.G);
    cfg.blockDim = dim3(WARPS * 32);
    cfg.dynamicSmemBytes = smem_bytes(WARPS);
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    if (p.NB == 1)
        CK(cudaLaunchKernelEx(&cfg, fused_gemv<1, WARPS>, a));
    else
        CK(cudaLaunchKernelEx(&cfg, fused_gemv<2, WARPS>, a));
#else
    if (p.NB == 1)
        fused_gemv<1, WARPS><<<p.G, WARPS * 32, smem_bytes(WARPS), st>>>(a);
    else
        fused_gemv<2, WARPS><<<p.G, WARPS * 32, smem_bytes(WARPS), st>>>(a);
#endif
}

// ---- cuBLAS
struct Blas {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
};

static void gemmex(Blas &b, const uint16_t *W, int N, int K, const __nv_bfloat16 *x, float *y,
                   int B, cudaStream_t st, int ldx = 0)
{
    const float one = 1.f, zero = 0.f;
    CB(cublasSetStream(b.h, st));
    CB(cublasGemmEx(b.h, CUBLAS_OP_T, CUBLAS_OP_N, N, B, K, &one, W, CUDA_R_16BF, K, x, CUDA_R_16BF,
                    ldx ? ldx : K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
}

struct LtPlan {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t A, Bl, C;
    std::vector<cublasLtMatmulHeuristicResult_t> algos;
    int best;
};

static LtPlan lt_plan(Blas &b, int N, int K, int B)
{
    LtPlan p;
    CB(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CB(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CB(cublasLtMatrixLayoutCreate(&p.A, CUDA_R_16BF, K, N, K));
    CB(cublasLtMatrixLayoutCreate(&p.Bl, CUDA_R_16BF, K, B, K));
    CB(cublasLtMatrixLayoutCreate(&p.C, CUDA_R_32F, N, B, N));
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &b.ws_bytes, sizeof b.ws_bytes));
    p.algos.resize(8);
    int n = 0;
    if (cublasLtMatmulAlgoGetHeuristic(b.lt, p.op, p.A, p.Bl, p.C, p.C, pref, 8, p.algos.data(),
                                       &n) != CUBLAS_STATUS_SUCCESS)
        n = 0;
    p.algos.resize(n);
    p.best = 0;
    CB(cublasLtMatmulPreferenceDestroy(pref));
    return p;
}

static cublasStatus_t lt_try(Blas &b, LtPlan &p, int algo, const uint16_t *W,
                             const __nv_bfloat16 *x, float *y, cudaStream_t st)
{
    const float one = 1.f, zero = 0.f;
    return cublasLtMatmul(b.lt, p.op, &one, W, p.A, x, p.Bl, &zero, y, p.C, y, p.C,
                          &p.algos[algo].algo, b.ws, b.ws_bytes, st);
}
static void lt_run(Blas &b, LtPlan &p, int algo, const uint16_t *W, const __nv_bfloat16 *x,
                   float *y, cudaStream_t st)
{
    CB(lt_try(b, p, algo, W, x, y, st));
}

// ---- timing: the median over reps of one graph replay of `body` (which issues `per`
// operations), divided by `per`.
template <typename F> static double time_graph(cudaStream_t st, int reps, int per, F body)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    body();
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphUpload(ge, st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
    std::vector<float> ms;
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float v;
        CK(cudaEventElapsedTime(&v, e0, e1));
        ms.push_back(v);
    }
    CK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return ms[ms.size() / 2] / per;
}

__global__ void copy_kernel(const uint4 *__restrict__ a, uint4 *__restrict__ b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        __stcs(b + i, __ldcs(a + i));
}

static uint16_t f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static double bf2d(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(int argc, char **argv)
{
    bool sizes_only = false, profile = false;
    int reps = 30, pmat = 4, preps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes"))
            sizes_only = true;
        else if (!strcmp(argv[i], "--profile"))
            profile = true;
        else if (!strcmp(argv[i], "--sanitize"))
            profile = true, pmat = -1, preps = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: fused_gemv [--sizes] [--profile | --sanitize] [--reps N]\n");
            return 2;
        }
    }
    const int threads = hardware_threads();
    static HostMat hm[NALL];
    gen_block(hm, threads);
    gen_extra(hm + NTIMED, threads);
    if (!profile) print_sizes(hm);
    // bit-exact decoder and the kernel's decode emulated on the CPU
    bool ok = true;
    if (!profile) {
        for (int i = 0; i < NALL; i++) {
            std::vector<uint16_t> back(hm[i].w.size());
            bool rt = df11i_fixed_decode(&hm[i].f, back.data(), threads) == DF11_OK &&
                      memcmp(back.data(), hm[i].w.data(), back.size() * 2) == 0;
            uint64_t bad = emulate(hm[i]);
            printf("%-5s CPU decode %s, kernel decode emulated: %llu bad pairs\n", TAG[i],
                   rt ? "bit-exact" : "WRONG", (unsigned long long)bad);
            ok = ok && rt && bad == 0;
        }
    }
    if (sizes_only) return ok ? 0 : 1;

    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("\ndevice: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20);
    int occ1 = 0, occ2 = 0;
    const int smem = (int)smem_bytes(WARPS);
    CK(cudaFuncSetAttribute(fused_gemv<1, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            smem));
    CK(cudaFuncSetAttribute(fused_gemv<2, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            smem));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ1, fused_gemv<1, WARPS>, WARPS * 32,
                                                     smem));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ2, fused_gemv<2, WARPS>, WARPS * 32,
                                                     smem));
    cudaFuncAttributes fa1, fa2;
    CK(cudaFuncGetAttributes(&fa1, fused_gemv<1, WARPS>));
    CK(cudaFuncGetAttributes(&fa2, fused_gemv<2, WARPS>));
    printf(
        "kernel NB=1: %d regs, %d B smem, %d CTAs/SM; NB=2: %d regs, %d CTAs/SM (CTA = %d warps)\n",
        fa1.numRegs, smem, occ1, fa2.numRegs, occ2, WARPS);
    const int SMS = prop.multiProcessorCount;

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    // x: 16 x cols, N(0, 1) in BF16; one per matrix
    std::vector<std::vector<uint16_t>> xh(NALL);
    std::vector<__nv_bfloat16 *> xd(NALL);
    uint64_t rs = 12345;
    for (int i = 0; i < NALL; i++) {
        const uint64_t K = hm[i].f.g.cols_pad;
        xh[i].assign(16 * K, 0);
        for (int b = 0; b < 16; b++)
            for (uint64_t k = 0; k < hm[i].cols; k++) {
                double u1 = ((double)(weights_mix64(rs++) >> 11) + 1) / 9007199254740993.0,
                       u2 = (double)(weights_mix64(rs++) >> 11) / 9007199254740992.0;
                xh[i][b * K + k] = f2bf((float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)));
            }
        CK(cudaMalloc(&xd[i], 16 * K * 2 + 1024));
        CK(cudaMemcpy(xd[i], xh[i].data(), 16 * K * 2, cudaMemcpyHostToDevice));
    }
    // copies, so that a timed graph streams > 2 x L2 for every matrix
    std::vector<std::vector<DevMat>> dm(NALL);
    for (int i = 0; i < NALL; i++) {
        const size_t bf = hm[i].w.size() * 2;
        const int R = profile || i >= NTIMED ? 1 : (int)std::max<size_t>(2, (192u << 20) / bf + 1);
        dm[i].push_back(upload(hm[i]));
        for (int r = 1; r < R; r++) dm[i].push_back(clone(dm[i][0], hm[i]));
    }
    Scratch sc;
    sc.ws_floats = 64u << 20;
    CK(cudaMalloc(&sc.ws, sc.ws_floats * 4));
    CK(cudaMalloc(&sc.sem, 1 << 20));
    CK(cudaMemset(sc.sem, 0, 1 << 20));
    CK(cudaMalloc(&sc.err, 4));
    CK(cudaMemset(sc.err, 0, 4));
    float *yd, *yc;
    CK(cudaMalloc(&yd, 16 * 28672 * 4)); // the most rows: gate_up
    CK(cudaMalloc(&yc, 16 * 28672 * 4));
    Blas bl;
    CB(cublasCreate(&bl.h));
    CB(cublasLtCreate(&bl.lt));
    bl.ws_bytes = 32u << 20;
    CK(cudaMalloc(&bl.ws, bl.ws_bytes));
    CB(cublasSetWorkspace(bl.h, bl.ws, bl.ws_bytes));

    if (profile) {
        // gate at B = 1, 8, 16 with cuBLAS at the same sizes, eagerly, for ncu; for
        // compute-sanitizer (--sanitize) k, the odd shape and the escape-heavy tensor
        std::vector<int> mats =
            pmat >= 0 ? std::vector<int>{ pmat } : std::vector<int>{ 1, NTIMED, NTIMED + 1 };
        for (int i : mats) {
            const int N = (int)hm[i].rows, K = (int)hm[i].cols;
            for (int B : { 1, 8, 16 }) {
                Plan p = make_plan(dm[i][0].m, B, SMS * (B > 8 ? occ2 : occ1));
                for (int r = 0; r < preps; r++) launch(dm[i][0].m, p, xd[i], yd, B, sc, st);
                if (preps >
                    1) // not under compute-sanitizer: racecheck reports cuBLAS's own kernels
                    for (int r = 0; r < preps; r++)
                        gemmex(bl, dm[i][0].bf16, N, K, xd[i], yc, B, st);
            }
        }
        CK(cudaStreamSynchronize(st));
        CK(cudaGetLastError());
        printf("profile launches done\n");
        return 0;
    }

    // ---- correctness against float64, for every matrix and B
    printf(
        "\ncorrectness: |y - ref| / (u * sum|x w|), u = 2^-24; bound K (fp32 accumulation, any order)\n");
    printf(
        "| matrix | B | fused max | fused rel L2 | cuBLAS max | fused vs cuBLAS max |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < NALL; i++) {
        const uint64_t N = hm[i].rows, K = hm[i].cols, Kp = hm[i].f.g.cols_pad;
        std::vector<uint16_t> dec(N * K);
        df11i_fixed_decode(&hm[i].f, dec.data(),
                           threads); // the reference is computed from the decoded weights
        std::vector<double> ref(16 * N), mag(16 * N);
        par_for(N, [&](uint64_t n) {
            for (int b = 0; b < 16; b++) {
                double s = 0, m = 0;
                for (uint64_t k = 0; k < K; k++) {
                    double p = bf2d(xh[i][b * Kp + k]) * bf2d(dec[n * K + k]);
                    s += p;
                    m += std::fabs(p);
                }
                ref[b * N + n] = s;
                mag[b * N + n] = m;
            }
        });
        for (int B : BS) {
            double mf = 0, mc = 0, mfc = 0, e2 = 0, r2 = 0;
            bool nan = false, det = true;
            for (int gm : { 1, 2, 4 }) {
                Plan p = make_plan(dm[i][0].m, B, SMS * (B > 8 ? occ2 : occ1) * gm);
                std::vector<float> yf(B * N), ycb(B * N), y2(B * N);
                CK(cudaMemset(yd, 0xff, B * N * 4)); // NaN: every element must be written
                launch(dm[i][0].m, p, xd[i], yd, B, sc, st);
                gemmex(bl, dm[i][0].bf16, (int)N, (int)K, xd[i], yc, B, st, (int)Kp);
                CK(cudaStreamSynchronize(st));
                CK(cudaGetLastError());
                CK(cudaMemcpy(yf.data(), yd, B * N * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(ycb.data(), yc, B * N * 4, cudaMemcpyDeviceToHost));
                launch(dm[i][0].m, p, xd[i], yd, B, sc, st); // the same bits again
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(y2.data(), yd, B * N * 4, cudaMemcpyDeviceToHost));
                det = det && memcmp(y2.data(), yf.data(), B * N * 4) == 0;
                e2 = r2 = 0;
                for (uint64_t j = 0; j < (uint64_t)B * N; j++) {
                    const double u = std::ldexp(mag[j], -24);
                    if (!std::isfinite(yf[j])) nan = true;
                    mf = std::max(mf, std::fabs(yf[j] - ref[j]) / u);
                    mc = std::max(mc, std::fabs(ycb[j] - ref[j]) / u);
                    mfc = std::max(mfc, std::fabs((double)yf[j] - ycb[j]) / u);
                    e2 += (yf[j] - ref[j]) * (yf[j] - ref[j]);
                    r2 += ref[j] * ref[j];
                }
            }
            const bool pass = !nan && det && mf <= (double)K;
            ok = ok && pass;
            printf("| %s | %d | %.1f%s%s | %.2e | %.1f | %.1f |\n", TAG[i], B, nan ? NAN : mf,
                   pass ? "" : " FAIL", det ? "" : " (not deterministic)", std::sqrt(e2 / r2), mc,
                   mfc);
        }
    }
    unsigned herr = 0;
    CK(cudaMemcpy(&herr, sc.err, 4, cudaMemcpyDeviceToHost));
    if (herr) {
        printf("kernel flagged a tile whose codes and offsets disagree\n");
        ok = false;
    }
    printf("correctness: %s\n", ok ? "PASS" : "FAIL");

    // ---- copy bandwidth
    const size_t cbytes = 1u << 30;
    void *ca, *cb2;
    CK(cudaMalloc(&ca, cbytes));
    CK(cudaMalloc(&cb2, cbytes));
    CK(cudaMemset(ca, 1, cbytes));
    // the roof: a 1 GiB device-to-device copy, as cudaMemcpyAsync timed eagerly and as a
    // plain 16-byte copy kernel; the faster counts (bytes read + written)
    cudaEvent_t c0, c1;
    CK(cudaEventCreate(&c0));
    CK(cudaEventCreate(&c1));
    std::vector<float> cm, ck;
    for (int r = 0; r < reps + 3; r++) {
        float v;
        CK(cudaEventRecord(c0, st));
        CK(cudaMemcpyAsync(cb2, ca, cbytes, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(c1, st));
        CK(cudaEventSynchronize(c1));
        CK(cudaEventElapsedTime(&v, c0, c1));
        if (r >= 3) cm.push_back(v);
        CK(cudaEventRecord(c0, st));
        copy_kernel<<<SMS * 8, 256, 0, st>>>(reinterpret_cast<const uint4 *>(ca),
                                             reinterpret_cast<uint4 *>(cb2), cbytes / 16);
        CK(cudaEventRecord(c1, st));
        CK(cudaEventSynchronize(c1));
        CK(cudaEventElapsedTime(&v, c0, c1));
        if (r >= 3) ck.push_back(v);
    }
    std::sort(cm.begin(), cm.end());
    std::sort(ck.begin(), ck.end());
    const double gbs_memcpy = 2.0 * cbytes / cm[cm.size() / 2] / 1e6,
                 gbs_kernel = 2.0 * cbytes / ck[ck.size() / 2] / 1e6;
    const double copy_gbs = std::max(gbs_memcpy, gbs_kernel);
    printf(
        "\ndevice-to-device copy (read + write, 1 GiB, median of %d): cudaMemcpyAsync %.0f GB/s, copy kernel %.0f GB/s\n",
        reps, gbs_memcpy, gbs_kernel);
    CK(cudaFree(ca));
    CK(cudaFree(cb2));

    // ---- timing per matrix
    const int GM[] = { 1, 2, 4 };
    double t_fused[NTIMED][5], t_ex[NTIMED][5], t_lt[NTIMED][5];
    int g_best[NTIMED][5], lt_best[NTIMED][5];
    std::vector<LtPlan> ltp[NTIMED];
    printf(
        "\nper-matrix timings (us per op; median of %d graph replays, each over R rotating copies)\n",
        reps);
    printf(
        "| matrix | B | fused G=1x/2x/4x SMs*occ | GemmEx | Lt best (of n) | best cuBLAS / fused |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < NTIMED; i++) {
        const int N = (int)hm[i].rows, K = (int)hm[i].cols, R = (int)dm[i].size();
        for (int bi = 0; bi < 5; bi++) {
            const int B = BS[bi];
            const int occ = B > 8 ? occ2 : occ1;
            double tg[3];
            for (int gi = 0; gi < 3; gi++) {
                Plan p = make_plan(dm[i][0].m, B, SMS * occ * GM[gi]);
                tg[gi] = time_graph(st, reps, R, [&] {
                    for (int r = 0; r < R; r++) launch(dm[i][r].m, p, xd[i], yd, B, sc, st);
                });
            }
            int gb = (int)(std::min_element(tg, tg + 3) - tg);
            t_fused[i][bi] = tg[gb];
            g_best[i][bi] = GM[gb];
            t_ex[i][bi] = time_graph(st, reps, R, [&] {
                for (int r = 0; r < R; r++) gemmex(bl, dm[i][r].bf16, N, K, xd[i], yc, B, st);
            });
            ltp[i].push_back(lt_plan(bl, N, K, B));
            LtPlan &lp = ltp[i].back();
            double best = 1e30;
            for (int al_ = 0; al_ < (int)lp.algos.size(); al_++) {
                if (lt_try(bl, lp, al_, dm[i][0].bf16, xd[i], yc, st) != CUBLAS_STATUS_SUCCESS ||
                    cudaStreamSynchronize(st) != cudaSuccess)
                    continue;
                double t = time_graph(st, reps, R, [&] {
                    for (int r = 0; r < R; r++) lt_run(bl, lp, al_, dm[i][r].bf16, xd[i], yc, st);
                });
                if (t < best) best = t, lp.best = al_;
            }
            t_lt[i][bi] = best;
            lt_best[i][bi] = best < 1e29 ? lp.best : -1;
            const double cub = std::min(t_ex[i][bi], t_lt[i][bi]);
            printf("| %s | %d | %.2f / %.2f / %.2f | %.2f | %.2f (%zu) | **%.3f** |\n", TAG[i], B,
                   1e3 * tg[0], 1e3 * tg[1], 1e3 * tg[2], 1e3 * t_ex[i][bi], 1e3 * best,
                   lp.algos.size(), cub / t_fused[i][bi]);
        }
    }
    // ---- the block: its matrices in order, one graph, copy 0 of each; as 7 tensors and
    // as engines store them (qkv, o, gate_up, down)
    auto block = [&](const std::vector<int> &mats, const char *what) {
        printf("\nthe block, %s (one graph; us; bandwidth = compressed bytes / time)\n", what);
        printf(
            "| B | fused | GemmEx | Lt best | best cuBLAS / fused | fused GB/s | of copy |\n|---|---|---|---|---|---|---|\n");
        double block_bytes = 0;
        for (int i : mats) block_bytes += (double)dm[i][0].bytes;
        for (int bi = 0; bi < 5; bi++) {
            const int B = BS[bi];
            const int occ = B > 8 ? occ2 : occ1;
            double tf = time_graph(st, reps, 1, [&] {
                for (int i : mats)
                    launch(dm[i][0].m, make_plan(dm[i][0].m, B, SMS * occ * g_best[i][bi]), xd[i],
                           yd, B, sc, st);
            });
            double te = time_graph(st, reps, 1, [&] {
                for (int i : mats)
                    gemmex(bl, dm[i][0].bf16, (int)hm[i].rows, (int)hm[i].cols, xd[i], yc, B, st);
            });
            double tl = time_graph(st, reps, 1, [&] {
                for (int i : mats)
                    if (lt_best[i][bi] >= 0)
                        lt_run(bl, ltp[i][bi], lt_best[i][bi], dm[i][0].bf16, xd[i], yc, st);
                    else
                        gemmex(bl, dm[i][0].bf16, (int)hm[i].rows, (int)hm[i].cols, xd[i], yc, B,
                               st);
            });
            const double gbs = block_bytes / tf / 1e6;
            printf("| %d | %.1f | %.1f | %.1f | **%.3f** | %.0f | %.1f%% |\n", B, 1e3 * tf,
                   1e3 * te, 1e3 * tl, std::min(te, tl) / tf, gbs, 100 * gbs / copy_gbs);
        }
    };
    block({ 0, 1, 2, 3, 4, 5, 6 }, "7 tensors");
    block({ QKV, 3, GATE_UP, 6 }, "merged: qkv, o, gate_up, down");
    printf(
        "\nper-matrix streaming: compressed bytes / fused time, of copy bandwidth\n| matrix | MB | B=1 | B=8 | B=16 |\n|---|---|---|---|---|\n");
    for (int i = 0; i < NTIMED; i++)
        printf("| %s | %.1f | %.1f%% | %.1f%% | %.1f%% |\n", TAG[i], dm[i][0].bytes / 1e6,
               100 * dm[i][0].bytes / t_fused[i][0] / 1e6 / copy_gbs,
               100 * dm[i][0].bytes / t_fused[i][3] / 1e6 / copy_gbs,
               100 * dm[i][0].bytes / t_fused[i][4] / 1e6 / copy_gbs);
    CK(cudaMemcpy(&herr, sc.err, 4, cudaMemcpyDeviceToHost));
    printf("%s\n", ok && !herr ? "ALL CHECKS PASS" : "CHECKS FAILED");
    return ok && !herr ? 0 : 1;
}
