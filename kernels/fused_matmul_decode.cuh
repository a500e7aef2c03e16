/* The register-level decode of the fixed exponent code (codec/fixed.h; escapes of codec 2 and
 * records of codec 3 both become corrections added to the pairs' words), host and device:
 * kernels/fused_matmul.cu's kernel runs it on the GPU into MMAs, kernels/decode_fixed.cu's
 * into the arena, and bench/probes/fused_gemv.cu runs the same code on the CPU against the
 * weights (its emulation). CUDA C++ only; everything is in namespace df11i_fused. See
 * fused_matmul.cu for what the pieces do in the kernel. The tile-level helpers at the end
 * (warp shuffles, shared memory) are device only.
 */
#ifndef DF11_KERNELS_FUSED_MATMUL_DECODE_CUH
#define DF11_KERNELS_FUSED_MATMUL_DECODE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "codec/fixed.h"

namespace df11i_fused {

// codec/fixed.h's layouts: a tile's steps; in bytes, a step's sm bytes (one a weight), a
// tile's, and a tile's code vectors (3 words a lane a step); tile t of a strip starts at t
// times each.
constexpr int kTileSteps = DF11_FIXED_TILE_STEPS;
constexpr int kStepSmBytes = DF11_FIXED_STRIP_ROWS * DF11_FIXED_STEP_COLS;
constexpr int kTileSmBytes = kTileSteps * kStepSmBytes;
constexpr int kTileCodeBytes = kTileSteps * 3 * 4 * 32;
static_assert(kStepSmBytes == 1024 && kTileCodeBytes == 1536, "a lane's 16 bytes of 512");

// Where tile t of strip s starts in a tensor's sm bytes (`steps` steps a strip) and in its
// code vectors (strip_code_bytes a strip), in the integer type I of the caller's geometry.
template <class I> __host__ __device__ __forceinline__ I tile_sm_offset(I steps, I s, I t)
{
    return (s * steps + (I)kTileSteps * t) * kStepSmBytes;
}
template <class I>
__host__ __device__ __forceinline__ I tile_codes_offset(I strip_code_bytes, I s, I t)
{
    return s * strip_code_bytes + t * (I)kTileCodeBytes;
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
// (the code 7 contributed 7) through the lane's correction words (in shared memory on the
// device). bb0/bb8 = b + 7 of the lane's two rows; swz = corr_swz(lane).
__host__ __device__ __forceinline__ void apply_escapes(uint32_t M, ExcCursor &ec, uint32_t bb0,
                                                       uint32_t bb8, uint32_t swz, uint32_t *corr)
{
    const uint32_t n = popc(M);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // Warp-uniform rounds with no branch in them: in round k every lane adds to a word, its
    // k-th escape's correction where k < n (byte k of the window, a constant once unrolled),
    // else 0 (to the word of f = ~0). A divergent `if` here cost a reconvergence a round.
    const uint32_t nmax = __reduce_max_sync(~0u, n);
    if (nmax <= 8) {
        if (n > ec.left) {
            ec.win = exc_window(ec.src, ec.pos);
            ec.left = 8;
        }
        ec.pos += n;
        ec.left -= n;
        const uint32_t lo = (uint32_t)ec.win, hi = (uint32_t)(ec.win >> 32);
        const uint32_t corr_s = (uint32_t)__cvta_generic_to_shared(corr);
#pragma unroll
        for (uint32_t k = 0; k < 8; k++) {
            if (k >= nmax) break;
            const uint32_t f = 31 - __clz(M); // M = 0: f = ~0 (no escape left: 0 is added)
            uint32_t bit;
            asm("shl.b32 %0, 1, %1;" : "=r"(bit) : "r"(f)); // clamped: 0 for f = ~0
            M ^= bit;
            const uint32_t e = __byte_perm(k < 4 ? lo : hi, 0, 0x4440 + (k & 3));
            // (f & 16) | 7 and (f & 15) ^ swz, one LOP3 each (ptxas wrote two)
            uint32_t sh, slot;
            asm("lop3.b32 %0, %1, 16, 7, 0xea;" : "=r"(sh) : "r"(f));
            asm("lop3.b32 %0, %1, 15, %2, 0x6a;" : "=r"(slot) : "r"(f), "r"(swz));
            const uint32_t v = (e - ((f & 4) ? bb8 : bb0)) << sh;
            asm volatile("red.shared.add.u32 [%0], %1;" ::"r"(corr_s + 4 * slot),
                         "r"(k < n ? v : 0u)
                         : "memory");
        }
        ec.win = n < 8 ? ec.win >> (8 * n) : 0;
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

// A lane's first exception window, loaded at once (only where the lane has escapes: a
// window reads up to 16 bytes past its first byte).
__host__ __device__ __forceinline__ ExcCursor exc_start(const uint8_t *src, uint32_t pos,
                                                        uint32_t cnt)
{
    ExcCursor ec;
    ec.src = src;
    ec.pos = pos;
    ec.win = cnt ? exc_window(src, pos) : 0;
    ec.left = cnt ? 8 : 0;
    return ec;
}

// The part of a launch that holds unit u, where part i's units start at first(i) (part 0
// at 0, non-decreasing): at most MAX - 1 compares, each on a kernel parameter.
template <int MAX, class U, class First>
__device__ __forceinline__ int part_index(int n_parts, U u, First first)
{
    int p = 0;
#pragma unroll
    for (int i = 1; i < MAX; i++)
        if (i < n_parts && u >= first(i)) p = i;
    return p;
}

// A tile's escape masks from its code words (A0 B0 C0 A1 ...; steps from n_steps on have
// stale words and get none), the lane's escape count `cnt`, and `before`, the escapes of
// the lanes below it (one warp prefix sum), where its own start in the tile's list.
// Returns the warp's total, which must equal the tile's list length.
__device__ __forceinline__ uint32_t tile_escapes(const uint32_t words[12], uint32_t n_steps,
                                                 uint32_t lane, uint32_t M[4], uint32_t &cnt,
                                                 uint32_t &before)
{
    cnt = 0;
#pragma unroll
    for (int g = 0; g < 4; g++) {
        M[g] = df11i_fixed_escape_mask(words[3 * g], words[3 * g + 1], words[3 * g + 2]);
        if (g >= (int)n_steps) M[g] = 0;
        cnt += popc(M[g]);
    }
    uint32_t incl = cnt;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const uint32_t v = __shfl_up_sync(~0u, incl, d);
        if ((int)lane >= d) incl += v;
    }
    before = incl - cnt;
    return __shfl_sync(~0u, incl, 31);
}

// The 16 correction words of a step (zero where its escapes added nothing), read back from
// the lane's swizzled slots (corr_swz, sw = swz >> 2), which are zeroed again for the next
// step if an escape was added (M != 0), in the same swizzled order: in plain order 16 lanes'
// stores met in 4 banks, and these stores were 40% of the kernel's shared-memory wavefronts
// (ncu, bench/RESULTS.md).
__device__ __forceinline__ void take_corrections(uint4 *corr4, uint32_t sw, uint32_t M,
                                                 uint32_t c[16])
{
#pragma unroll
    for (int v = 0; v < 4; v++) {
        const uint4 t4 = corr4[v ^ sw];
        c[4 * v] = t4.x, c[4 * v + 1] = t4.y, c[4 * v + 2] = t4.z, c[4 * v + 3] = t4.w;
    }
    if (M) {
#pragma unroll
        for (int v = 0; v < 4; v++) corr4[v ^ sw] = make_uint4(0, 0, 0, 0);
    }
}

// ---- RECORDS (codec/fixed.h, codec 3): exceptions as per-tile records ----

// Record i of a list, from its u16 words and its nibbles (df11i_fixed_record_join).
__device__ __forceinline__ uint32_t record_of(const uint8_t *words, const uint8_t *nib, uint32_t i)
{
    return df11i_fixed_record_join(*reinterpret_cast<const uint16_t *>(words + 2 * i), nib[i >> 1],
                                   i);
}

// A record as the RED it makes: into the owner lane's (pos >> 7) correction word of its pair
// (corr_swz's slot), (e - b) at the weight's exponent field (its code is 0, so that is all
// it needs), b the base of its row; step 7 where not valid (matches no step). All lanes of
// the warp call it (the owner's bases come by shuffle: bpack = b0 | b8 << 16 of each lane).
// corr_s: the shared address of lane 0's correction words (lane l's at corr_s + 64 l).
struct RecordRed {
    uint32_t addr, val, step;
};
__device__ __forceinline__ RecordRed record_red(uint32_t rec, bool valid, uint32_t bpack,
                                                uint32_t corr_s)
{
    const uint32_t pos = rec & 0xfffu, owner = pos >> 7, f = pos & 31;
    const uint32_t bp = __shfl_sync(~0u, bpack, (int)owner);
    const uint32_t b = (f & 4) ? bp >> 16 : bp & 0xffffu;
    RecordRed r;
    r.addr = corr_s + owner * 64 + 4 * ((f & 15) ^ corr_swz(owner));
    r.val = ((rec >> 12) - b) << ((f & 16) | 7);
    r.step = valid ? (pos >> 5) & 3 : 7u;
    return r;
}

// The RED where the record is of step g (one predicated instruction: no branch).
__device__ __forceinline__ void record_apply(const RecordRed &r, uint32_t g)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.eq.u32 p, %2, %3;\n@p red.shared.add.u32 [%0], %1;\n}\n" ::"r"(
            r.addr),
        "r"(r.val), "r"(r.step), "r"(g)
        : "memory");
}

// Up to kRecRegs * 32 records of a tile held a lane kRecRegs at most (record j = lane + 32 r),
// loaded at the tile's head: get(j) the tile's record j; step 7 (no step) past the list.
// get(j) is called for every j of a round in use, past the list too (n <= j < 32 (r + 1)),
// where its value is not used: no branch a round (it must read somewhere valid there).
constexpr uint32_t kRecRegs = 3;
template <class Get>
__device__ __forceinline__ void tile_records(uint32_t n, uint32_t lane, uint32_t bpack,
                                             uint32_t corr_s, Get &&get, RecordRed rr[kRecRegs])
{
#pragma unroll
    for (uint32_t r = 0; r < kRecRegs; r++) {
        const uint32_t j = lane + 32 * r;
        rr[r] = 32 * r < n ? record_red(get(j), j < n, bpack, corr_s) : RecordRed{ 0, 0, 7u };
    }
}

// A step's records: those held (n <= kRecRegs * 32), else read 32 at a time from the tile's
// list in global memory (words, nib; its record j is index i0 + j), every round by every
// lane. Then the step's 16 correction words into c, zeroed again for the next step (every
// step: which words a record hit is known only to the lane that added it).
__device__ __forceinline__ void step_records(uint32_t n, const RecordRed rr[kRecRegs],
                                             const uint8_t *words, const uint8_t *nib, uint32_t i0,
                                             uint32_t lane, uint32_t bpack, uint32_t corr_s,
                                             uint32_t g, uint4 *corr4, uint32_t sw, uint32_t c[16])
{
    if (n <= kRecRegs * 32) {
#pragma unroll
        for (uint32_t r = 0; r < kRecRegs; r++) record_apply(rr[r], g);
    } else {
        for (uint32_t j0 = 0; j0 < n; j0 += 32) {
            const uint32_t j = j0 + lane;
            record_apply(
                record_red(j < n ? record_of(words, nib, i0 + j) : 0u, j < n, bpack, corr_s), g);
        }
    }
    __syncwarp(); // the other lanes' REDs into this lane's words
    take_corrections(corr4, sw, 1u, c);
    __syncwarp(); // zeroed before any lane adds the next step's
}

} // namespace df11i_fused

#endif
