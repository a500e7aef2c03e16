/* The GPU group decoder: one launch turns a group's payload (docs/FORMAT.md) into its BF16
 * tensors at their 256-byte-aligned offsets, padding zeroed. Host code here only launches;
 * the plan (kernels/plan.c) says which CTA does what. Never allocates, never synchronizes.
 * The same warp chunk decoder (decode_chunk, templated on where its output goes) also
 * serves the Huffman row decode of kernels/gather.h (df11i_gpu_rows_huffman), keeping only
 * rows, and the fused matmul on Huffman tensors of kernels/matmul.h (df11i_huffman_matmul),
 * multiplying the decoded weights by x instead of storing them.
 *
 * Work split (decided in one place, df11i_gpu_plan_build):
 *   - EXP_HUFFMAN tensor: one warp per chunk, warps_per_cta chunks per CTA; the CTA first
 *     copies its tensor's decode table into shared memory. Each warp's stream words go
 *     through its own cp.async ring in shared memory; its sm bytes go to registers.
 *   - RAW tensor: DF11_RAW_CTA_BYTES bytes per CTA, copied with 16-byte vectors.
 *   - EXP_FIXED tensor: no CTA here; kernels/decode_fixed.cu decodes the group's fixed
 *     tensors in a launch of their own on the same stream (df11i_gpu_decode_checked
 *     issues both).
 *   - The CTA (warp) that handles a tensor's last piece zero-fills its padding up to the
 *     next 256-byte boundary, so the whole decoded group is written by the kernel.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/decode.h"
#include "kernels/gather.h"
#include "kernels/launch.cuh"
#include "kernels/matmul.h"
#include "kernels/split_count.cuh"
extern "C" {
#include "codec/codec.h" /* DF11_MAX_CODE_LEN */
#include "common/error.h"
}

namespace {

constexpr int kLanes = 32;
constexpr int kGroup = 8; /* elements a lane decodes per step */
constexpr int kSteps = 2; /* steps per iteration of the main loop */

/* A chunk's full words are interleaved in the order its lanes take them (docs/FORMAT.md,
 * "Refill schedule"), so the warp reads its stream front to back. The words reach the lanes
 * through a ring of kRingBytes in shared memory, aligned to its size so that a word's
 * address is one AND-OR. Once per iteration, if the ring has room for kFillBytes more, each
 * lane issues two 16-byte cp.async (the warp's fill is 1 KiB, contiguous) in the
 * iteration's commit group, and the warp then waits until only the kAhead most recent
 * groups are pending.
 *
 * The guarantee: a lane takes at most one word per symbol pair, so a warp at most
 * kIterBytes per iteration, whatever the data. A fill is issued whenever at most
 * kRingBytes - kFillBytes bytes are unread, so after the fill of an iteration at least that
 * many are requested (or the chunk's words all are). What the warp reads in iteration i
 * and the kAhead iterations before it thus lies inside what was requested by iteration
 * i - kAhead, which the wait made valid; and a fill overwrites only bytes already read. */
constexpr uint32_t kRingBytes = 4096;
constexpr uint32_t kFillBytes = 2 * 16 * kLanes;
constexpr uint32_t kIterBytes = kSteps * kGroup / 2 * kLanes * 4;
constexpr int kAhead = 2;
static_assert((kAhead + 1) * kIterBytes <= kRingBytes - kFillBytes, "ring too small for kAhead");
static_assert((kRingBytes & (kRingBytes - 1)) == 0, "kRingBytes must be a power of two");

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#else /* the sm_75 PTX: a plain copy */
    uint4 v = __ldg(static_cast<const uint4 *>(src));
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
#endif
}

template <int N> __device__ __forceinline__ void cp_async_commit_wait()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n\tcp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ uint32_t lds32(uint32_t a)
{
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
}

__device__ __forceinline__ uint32_t lds16(uint32_t a)
{
    uint16_t v;
    asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"(a));
    return v;
}

/* A warp's view of its chunk's interleaved words. Counts are in bytes from `base`, the
 * chunk's first word rounded down to a 16-byte vector: `taken` handed to lanes, `filled`
 * requested into the ring, `end` the end of the interleaved area. Warp-uniform. */
struct word_ring {
    uint32_t smem; /* shared address of the ring, a multiple of kRingBytes */
    uint32_t taken, filled, end;
    uint32_t vlast; /* last vector of the stream section, from base (reads clamp) */
    const uint4 *base;
};

/* Requests the next kFillBytes when the ring has room for them and the area is not all
 * requested (filled < end), in one compare: two 16-byte copies per lane, the same branch
 * for the whole warp. The barrier orders every lane's earlier reads of the slots being
 * refilled before the refill. */
__device__ __forceinline__ void ring_fill(word_ring &r, uint32_t lane)
{
    if (r.filled + kFillBytes <= min(r.taken + kRingBytes, r.end + kFillBytes - 1)) {
        __syncwarp();
        const uint32_t at = r.filled + 16 * lane, v = at / 16;
        cp_async16(r.smem | (at & (kRingBytes - 1)), r.base + min(v, r.vlast));
        cp_async16(r.smem | ((at + kFillBytes / 2) & (kRingBytes - 1)),
                   r.base + min(v + kLanes, r.vlast));
        r.filled += kFillBytes;
    }
}

/* Start of an iteration (or of a step of the generic path): fill, then wait for the copies
 * of kAhead iterations ago; the barrier makes the other lanes' landed copies visible. */
__device__ __forceinline__ void iteration_begin(word_ring &r, uint32_t lane)
{
    ring_fill(r, lane);
    cp_async_commit_wait<kAhead>();
    __syncwarp();
}

/* A lane's bit reader: the window hi:lo holds the next `nbits` bits of the lane's string,
 * left-aligned, zeros below. `words` full words are still to take from the ring; the tail
 * (left-aligned, zeros below) is taken after them and then reads as 0 bits. */
struct bit_reader {
    uint32_t hi, lo, nbits;
    uint32_t words, tail, tail_bits;
};

/* Appends the left-aligned bits x (nbits & 31 < 32 bits in the window) below the window's
 * bits; the window's free bits are zero, so + is |. */
__device__ __forceinline__ void br_append(bit_reader &b, uint32_t x)
{
    b.hi += __funnelshift_r(x, 0u, b.nbits); /* x >> nbits */
    b.lo += __funnelshift_r(0u, x, b.nbits); /* the bits shifted out of hi */
}

/* The refill of the schedule before a symbol pair (docs/FORMAT.md): every lane of the warp
 * calls it (the ballot); `active`: the lane has the pair's first symbol. A lane short of 32
 * bits takes its next full word, at the warp's count plus the lower lanes taking one, or
 * else (kTail) its tail. Iterations in which no lane can run out of full words (the warp
 * checked words >= 8, the most an iteration takes) use kTail = false: no tail to consider.
 * `lower_mul` = 2^(32 - lane) (0 for lane 0): the ballot times it keeps just the lower
 * lanes' bits, on the multiply pipe (the ALU pipe is the kernel's busiest). Every lane
 * loads a ring word (the warp's next few, always landed) so that the takers' updates are
 * predicated, with no data-dependent branch or select.
 * The decoders subtract whole table entries from nbits (one instruction); an entry's bits
 * above its length are multiples of 128, so nbits is exact modulo 128: "fewer than 32
 * bits" is (nbits & 0x60) == 0, and the shifts use nbits & 31 by themselves. */
template <bool kTail>
__device__ __forceinline__ void br_refill(bit_reader &b, word_ring &r, bool active,
                                          uint32_t lower_mul)
{
    const bool lack = active && (b.nbits & 0x60u) == 0;
    const bool word = kTail ? lack && b.words != 0 : lack;
    const uint32_t takers = __ballot_sync(0xffffffffu, word);
    const uint32_t at = r.taken + 4 * __popc(takers * lower_mul);
    r.taken += 4 * __popc(takers);
    const uint32_t w = lds32(r.smem | (at & (kRingBytes - 1)));
    if (word) {
        br_append(b, w);
        b.nbits += 32;
        b.words--;
    } else if (kTail && lack && b.tail_bits) {
        br_append(b, b.tail);
        b.nbits += b.tail_bits;
        b.tail_bits = 0;
    }
}

/* The table entry exp << 7 | len (bit 15: no code starts with these bits) of the top L bits
 * of `top`: umulhi(top, 2^L) = top >> (32 - L), on the multiply pipe. */
__device__ __forceinline__ uint32_t lut_entry(uint32_t lut, uint32_t lut_scale, uint32_t top)
{
    return lds16(lut + 2 * __umulhi(top, lut_scale));
}

/* One symbol. */
__device__ __forceinline__ uint32_t br_decode(bit_reader &b, uint32_t lut, uint32_t lut_scale)
{
    uint32_t e = lut_entry(lut, lut_scale, b.hi);
    b.hi = __funnelshift_l(b.lo, b.hi, e); /* shift amount = e & 31 = len */
    b.lo = __funnelshift_l(0u, b.lo, e);
    b.nbits -= e; /* exact modulo 128: see br_refill */
    return e;
}

/* Two symbols, the window shifted once by both lengths (their sum is at most 30, and it is
 * the low bits of the entries' sum). Returns the entries as e1 << 16 | e0. */
__device__ __forceinline__ uint32_t br_decode2(bit_reader &b, uint32_t lut, uint32_t lut_scale)
{
    const uint32_t e0 = lut_entry(lut, lut_scale, b.hi);
    const uint32_t e1 = lut_entry(lut, lut_scale, __funnelshift_l(b.lo, b.hi, e0));
    const uint32_t s = e0 + e1;
    b.hi = __funnelshift_l(b.lo, b.hi, s);
    b.lo = __funnelshift_l(0u, b.lo, s);
    b.nbits -= s;
    return e1 * 65536u + e0; /* a multiply-add: the multiply pipe */
}

/* Two BF16 values from two table entries (e1 << 16 | e0) and two sign|mantissa bytes at
 * byte `sel` of sm: v = (sm & 0x80) << 8 | exp << 7 | (sm & 0x7f). One byte permute and one
 * three-input logic op: (ex & ~M) | (s & M). */
__device__ __forceinline__ uint32_t join2(uint32_t ex, uint32_t sm, uint32_t sel)
{
    const uint32_t s = __byte_perm(sm, 0, sel); /* each sm byte doubled */
    uint32_t v;
    asm("lop3.b32 %0, %1, %2, %3, 0xd8;" : "=r"(v) : "r"(ex), "r"(s), "n"(0x807f807f));
    return v;
}

/* One step of a lane with 8 symbols: 4 refills of the schedule, 4 symbol pairs, joined
 * with the step's 8 sm bytes into 8 BF16 values. */
template <bool kTail>
__device__ __forceinline__ uint4 decode_step(bit_reader &b, word_ring &r, uint32_t lut,
                                             uint32_t lut_scale, uint32_t lower_mul, uint2 sm,
                                             uint32_t &flags)
{
    uint32_t ex[kGroup / 2];
#pragma unroll
    for (int i = 0; i < kGroup / 2; i++) {
        br_refill<kTail>(b, r, true, lower_mul);
        ex[i] = br_decode2(b, lut, lut_scale);
    }
    flags |= ex[0] | ex[1] | ex[2] | ex[3];
    return make_uint4(join2(ex[0], sm.x, 0x1100), join2(ex[1], sm.x, 0x3322),
                      join2(ex[2], sm.y, 0x1100), join2(ex[3], sm.y, 0x3322));
}

/* decode_step, without tail logic when the warp's vote showed no lane can reach its tail. */
__device__ __forceinline__ uint4 decode_step_voted(bool no_tail, bit_reader &b, word_ring &r,
                                                   uint32_t lut, uint32_t lut_scale,
                                                   uint32_t lower_mul, uint2 sm, uint32_t &flags)
{
    return no_tail ? decode_step<false>(b, r, lut, lut_scale, lower_mul, sm, flags)
                   : decode_step<true>(b, r, lut, lut_scale, lower_mul, sm, flags);
}

/* The sums over a chunk's lanes that place them: the interleaved area's size, and this
 * lane's tail offset (tails before it). One prefix sum of F << 16 | T (Σ F < 2^15,
 * Σ T < 2^10). */
__device__ __forceinline__ void lane_sums(uint32_t lane_bits, uint32_t l, uint32_t *words_total,
                                          uint32_t *tail_before)
{
    uint32_t x = (lane_bits >> 5) << 16 | (lane_bits & 31);
#pragma unroll
    for (int o = 1; o < kLanes; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (l >= (uint32_t)o) x += y;
    }
    *words_total = __shfl_sync(0xffffffffu, x, kLanes - 1) >> 16;
    *tail_before = (x & 0xffff) - (lane_bits & 31);
}

/* Where a decoded chunk goes: every element to out, 16 bytes at a time where it can (the
 * group decoder). `e` is the element's index in its chunk. */
struct dense_sink {
    uint8_t *out; /* the chunk's first element */
    __device__ __forceinline__ void put8(uint32_t e, uint4 v) const
    {
        *reinterpret_cast<uint4 *>(out + 2 * (uint64_t)e) = v;
    }
    __device__ __forceinline__ void put1(uint32_t e, uint16_t v) const
    {
        reinterpret_cast<uint16_t *>(out)[e] = v;
    }
    __device__ __forceinline__ void step_done(uint32_t) const {}
};

/* The row decode's sink: only elements [lo, hi) of the chunk, element e to out[e + off],
 * one at a time (rows need not start on 8 elements), BF16 or F32. */
struct window_sink {
    void *out;
    int64_t off;
    uint32_t lo, hi, f32;
    __device__ __forceinline__ void put1(uint32_t e, uint16_t v) const
    {
        if (e < lo || e >= hi) return;
        if (f32)
            static_cast<float *>(out)[e + off] = __uint_as_float((uint32_t)v << 16);
        else
            static_cast<uint16_t *>(out)[e + off] = v;
    }
    __device__ __forceinline__ void put8(uint32_t e, uint4 v) const
    {
        const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
        for (uint32_t i = 0; i < 8; i++) put1(e + i, (uint16_t)(w[i / 2] >> (16 * (i % 2))));
    }
    __device__ __forceinline__ void step_done(uint32_t) const {}
};

/* One warp decodes chunk `chunk` of tensor d: lane l decodes groups l, l+m, l+2m, ... of 8
 * elements, each handed to the sink (put8, or put1 for the steps taken symbol by symbol);
 * after each step the whole warp calls out.step_done(end), `end` the chunk element the
 * step's elements end before. An iteration is kSteps steps; per step a lane takes its 8 sm
 * bytes (loaded an iteration earlier; the warp's 8m bytes are contiguous in global memory),
 * decodes 8 exponents with 4 refills and 4 symbol pairs, and hands over 16 bytes (the
 * warp's 16m bytes are contiguous). The warp's words come through the word ring, front to
 * back. The steps after the last whole iteration, and every step of a chunk with fewer than
 * 32 lanes, go symbol by symbol. `lut` and `ring` are shared-memory addresses: the decode
 * table and this warp's word ring. */
template <class Sink>
__device__ void decode_chunk(const df11i_gpu_tensor_desc &d, uint32_t chunk, uint32_t lut,
                             uint32_t ring, const uint8_t *__restrict__ payload, Sink &out,
                             uint32_t *err)
{
    const uint32_t l = threadIdx.x % kLanes, S = d.lane_symbols,
                   lower_mul = l ? 1u << (32 - l) : 0u;
    const uint64_t ce = (uint64_t)kLanes * S, base = chunk * ce;
    const uint32_t n = (uint32_t)min(ce, d.n_elements - base);
    const uint32_t m = min((uint32_t)kLanes, (n + S - 1) / S);
    const uint32_t G = (n + kGroup - 1) / kGroup; /* groups, the last may be short */
    const uint32_t steps = (G + m - 1) / m;
    /* whole iterations: steps with 8 symbols per lane, in a chunk of 32 lanes */
    const uint32_t iters = m == kLanes ? n / kGroup / m / kSteps : 0;

    const uint32_t *chunks = reinterpret_cast<const uint32_t *>(payload + d.chunks_off);
    const uint16_t *lanes = reinterpret_cast<const uint16_t *>(payload + d.lanes_off);
    const uint32_t lane_bits = l < m ? lanes[(uint64_t)chunk * kLanes + l] : 0;
    uint32_t words_total, tail_before;
    lane_sums(lane_bits, l, &words_total, &tail_before);

    /* The lane's tail, read directly: the warp's tails are ~64 contiguous bytes. */
    const uint32_t *stream = reinterpret_cast<const uint32_t *>(payload + d.stream_off);
    const uint64_t last_word = d.stream_size / 4 - 1;
    const uint64_t start = chunks[chunk];
    const uint64_t tail_bit = (start + words_total) * 32 + tail_before;
    const uint32_t t0 = __ldg(stream + min(tail_bit >> 5, last_word));
    const uint32_t t1 = __ldg(stream + min((tail_bit >> 5) + 1, last_word));
    bit_reader b = { 0, 0, 0, lane_bits >> 5, 0, lane_bits & 31 };
    if (b.tail_bits)
        b.tail = __funnelshift_l(t1, t0, (uint32_t)tail_bit) & ~(0xffffffffu >> b.tail_bits);

    word_ring r;
    const uint64_t vlast = (d.stream_size + 15) / 16 - 1, v0 = start >> 2;
    uint32_t flags = v0 > vlast ? 0x8000u : 0u; /* a chunk table pointing past the stream */
    r.base = reinterpret_cast<const uint4 *>(stream) + min(v0, vlast);
    r.vlast = (uint32_t)(vlast - min(v0, vlast));
    r.smem = ring;
    r.taken = ((uint32_t)start & 3) * 4;
    r.end = r.taken + words_total * 4;
    r.filled = 0;
    for (uint32_t i = 0; i < kRingBytes / kFillBytes; i++) ring_fill(r, l);

    cp_async_commit_wait<0>();
    __syncwarp();

    /* The sign|mantissa bytes go straight to registers, an iteration ahead: lane l's 8
     * bytes of step k are at sm + 256 k + 8 l (the warp's loads are 256 contiguous bytes),
     * and each step's register is reloaded for the next iteration once the step has used
     * it. Only these loads wait on a register scoreboard (the stream goes through
     * cp.async), so by then they have long landed. */
    const uint8_t *sm = payload + d.data_off + base;
    const uint2 *smp = reinterpret_cast<const uint2 *>(sm) + l;
    uint2 s0 = make_uint2(0, 0), s1 = s0;
    if (iters) s0 = __ldg(smp), s1 = __ldg(smp + kLanes);

    const uint32_t lut_scale = 1u << d.max_len;
    uint32_t e8 = kGroup * l; /* the chunk element of this lane's next 8 */
    for (uint32_t i = 0; i < iters; i++, e8 += kGroup * kSteps * kLanes) {
        const bool more = i + 1 < iters;
        smp += kSteps * kLanes;
        iteration_begin(r, l);
        /* Most iterations: no lane can reach its tail (an iteration takes at most 8 words). */
        const bool no_tail = __all_sync(0xffffffffu, b.words >= kSteps * kGroup / 2);
        const uint32_t step_end = e8 - kGroup * l + kGroup * kLanes;
        out.put8(e8, decode_step_voted(no_tail, b, r, lut, lut_scale, lower_mul, s0, flags));
        out.step_done(step_end);
        if (more) s0 = __ldg(smp);
        out.put8(e8 + kGroup * kLanes,
                 decode_step_voted(no_tail, b, r, lut, lut_scale, lower_mul, s1, flags));
        out.step_done(step_end + kGroup * kLanes);
        if (more) s1 = __ldg(smp + kLanes);
    }
    /* The remaining steps, symbol by symbol: lane l holds group k*m + l, if any, with up to
     * 8 symbols. */
    for (uint32_t k = iters * kSteps; k < steps; k++) {
        iteration_begin(r, l);
        const uint32_t g = k * m + l;
        const uint32_t count = l < m && g < G ? min(8u, n - 8 * g) : 0;
#pragma unroll
        for (uint32_t j = 0; j < kGroup; j += 2) {
            br_refill<true>(b, r, j < count, lower_mul);
            for (uint32_t i = j; i < j + 2 && i < count; i++) {
                uint32_t e = br_decode(b, lut, lut_scale), v = sm[8 * g + i];
                flags |= e;
                out.put1(8 * g + i, (uint16_t)((v & 0x80) << 8 | (e & 0x7f80) | (v & 0x7f)));
            }
        }
        out.step_done(min(n, kGroup * m * (k + 1)));
    }
    cp_async_commit_wait<0>(); /* no copy may land after the CTA's shared memory is gone */
    /* Exactly the recorded length: every word and the tail taken, nothing left over. */
    if (err && ((flags & 0x80008000u) || b.words || b.tail_bits || (b.nbits & 127)))
        atomicOr(err, 1u);
}

/* Raw bytes: the CTA copies its DF11_RAW_CTA_BYTES slice, 16 bytes per thread per step. */
__device__ void copy_raw(const df11i_gpu_tensor_desc &d, uint32_t piece,
                         const uint8_t *__restrict__ payload, uint8_t *__restrict__ out)
{
    uint64_t lo = (uint64_t)piece * DF11_RAW_CTA_BYTES;
    uint64_t hi = min(lo + DF11_RAW_CTA_BYTES, d.n_elements);
    const uint8_t *src = payload + d.data_off;
    uint8_t *dst = out + d.out_off;
    uint64_t vhi = lo + (hi - lo) / 16 * 16;
    for (uint64_t i = lo + 16 * threadIdx.x; i < vhi; i += 16 * blockDim.x)
        *reinterpret_cast<uint4 *>(dst + i) = __ldg(reinterpret_cast<const uint4 *>(src + i));
    for (uint64_t i = vhi + threadIdx.x; i < hi; i += blockDim.x) dst[i] = src[i];
}

/* Zero bytes [end, next multiple of 256) of the output: the gap before the next tensor. */
__device__ void zero_pad(uint8_t *out, uint64_t end, uint32_t t, uint32_t nt)
{
    uint32_t pad = (uint32_t)((256 - end % 256) % 256);
    for (uint32_t i = t; i < pad; i += nt) out[end + i] = 0;
}

/* Dynamic shared memory of a launch: the group's largest decode table, then the warps' word
 * rings, aligned to kRingBytes (up to kRingBytes of padding); none when the group has no
 * EXP_HUFFMAN tensor. */
__host__ __device__ inline size_t smem_bytes(const df11i_gpu_plan_header *h)
{
    if (h->max_lut_entries == 0) return 0;
    return DF11_GPU_LUT_BYTES(h->max_lut_entries) + kRingBytes +
           (size_t)h->warps_per_cta * kRingBytes;
}

/* The last tensor whose first CTA is <= `cta`, searched from `lo` (CTAs only grow). */
__device__ __forceinline__ uint32_t tensor_of_cta(const df11i_gpu_tensor_desc *ds, uint32_t lo,
                                                  uint32_t n_tensors, uint32_t cta)
{
    uint32_t hi = n_tensors;
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (ds[mid].first_cta <= cta)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* A raw tensor's slice `piece` by the whole CTA, and after its last slice the padding. */
__device__ __forceinline__ void raw_piece(const df11i_gpu_tensor_desc &d, uint32_t piece,
                                          const uint8_t *payload, uint8_t *out)
{
    copy_raw(d, piece, payload, out);
    if ((uint64_t)(piece + 1) * DF11_RAW_CTA_BYTES >= d.n_elements)
        zero_pad(out, d.out_off + d.n_elements, threadIdx.x, blockDim.x);
}

/* Grid: plan n_ctas CTAs of 32*warps_per_cta threads; dynamic shared memory: smem_bytes. */
__global__ void __launch_bounds__(1024)
    df11i_decode_kernel(const uint8_t *__restrict__ plan, const uint8_t *__restrict__ payload,
                        uint8_t *__restrict__ out, uint32_t *err)
{
    extern __shared__ uint4 smem[];
    const df11i_gpu_plan_header *h = reinterpret_cast<const df11i_gpu_plan_header *>(plan);
    const df11i_gpu_tensor_desc *ds =
        reinterpret_cast<const df11i_gpu_tensor_desc *>(plan + sizeof *h);
    const uint32_t cta = blockIdx.x;
    const df11i_gpu_tensor_desc d = ds[tensor_of_cta(ds, 0, h->n_tensors, cta)];
    const uint32_t piece = cta - d.first_cta;

    if (d.codec == DF11_CODEC_RAW) {
        raw_piece(d, piece, payload, out);
        return;
    }
    const uint4 *lut_src = reinterpret_cast<const uint4 *>(plan + d.lut_off);
    for (uint32_t i = threadIdx.x; i < DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(d.max_len)) / 16;
         i += blockDim.x)
        smem[i] = __ldg(lut_src + i);
    __syncthreads();
    uint32_t chunk = piece * (blockDim.x / kLanes) + threadIdx.x / kLanes;
    if (chunk >= d.n_chunks) return; /* whole warps: a chunk's warp stays complete */
    uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t rings =
        (lut + (uint32_t)DF11_GPU_LUT_BYTES(h->max_lut_entries) + kRingBytes - 1) &
        ~(kRingBytes - 1);
    const dense_sink sink = { out + d.out_off + 2 * (uint64_t)chunk * kLanes * d.lane_symbols };
    decode_chunk(d, chunk, lut, rings + threadIdx.x / kLanes * kRingBytes, payload, sink, err);
    if (chunk == d.n_chunks - 1)
        zero_pad(out, d.out_off + 2 * d.n_elements, threadIdx.x % kLanes, kLanes);
}

/* The lean group decode (docs/RUNTIME.md, "Co-resident decode"): the plain kernel's work
 * items, the plan's n_ctas virtual CTAs, walked by a persistent grid of few CTAs of
 * kLeanWarps warps: CTA c takes virtual CTAs c, c + grid, ...; for one of a Huffman
 * tensor, warp w decodes its chunks w, w + kLeanWarps, ... of the plan's warps_per_cta,
 * as the plain kernel's warps would; a raw slice is copied by the whole CTA. The decode
 * table is reloaded only when the tensor changes (the virtual CTAs of a tensor are
 * consecutive), between two barriers that every thread reaches (the loop is CTA-uniform).
 * Dynamic shared memory: smem_bytes for kLeanWarps warps. */
constexpr int kLeanWarps = DF11_GPU_LEAN_WARPS;
constexpr int kLeanMinBlocks = 16; /* 65536 / (64 * 16): 64 registers, the plain kernel's */
__global__ void __launch_bounds__(32 * kLeanWarps, kLeanMinBlocks)
    df11i_decode_lean_kernel(const uint8_t *__restrict__ plan, const uint8_t *__restrict__ payload,
                             uint8_t *__restrict__ out, uint32_t *err)
{
    extern __shared__ uint4 smem[];
    const df11i_gpu_plan_header *h = reinterpret_cast<const df11i_gpu_plan_header *>(plan);
    const df11i_gpu_tensor_desc *ds =
        reinterpret_cast<const df11i_gpu_tensor_desc *>(plan + sizeof *h);
    const uint32_t warp = threadIdx.x / kLanes, per_cta = h->warps_per_cta;
    const uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t ring =
        ((lut + (uint32_t)DF11_GPU_LUT_BYTES(h->max_lut_entries) + kRingBytes - 1) &
         ~(kRingBytes - 1)) +
        warp * kRingBytes;
    uint32_t lut_of = UINT32_MAX; /* the tensor whose table is in shared memory */
    uint32_t lo = 0;              /* virtual CTAs only grow: the search starts at the last */
    for (uint32_t cta = blockIdx.x; cta < h->n_ctas; cta += gridDim.x) {
        lo = tensor_of_cta(ds, lo, h->n_tensors, cta);
        const df11i_gpu_tensor_desc d = ds[lo];
        const uint32_t piece = cta - d.first_cta;
        if (d.codec == DF11_CODEC_RAW) {
            raw_piece(d, piece, payload, out);
            continue;
        }
        if (lut_of != lo) {
            __syncthreads(); /* no warp still reads the previous table */
            const uint4 *src = reinterpret_cast<const uint4 *>(plan + d.lut_off);
            for (uint32_t i = threadIdx.x;
                 i < DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(d.max_len)) / 16; i += blockDim.x)
                smem[i] = __ldg(src + i);
            __syncthreads();
            lut_of = lo;
        }
        for (uint32_t j = warp; j < per_cta; j += kLeanWarps) {
            const uint32_t chunk = piece * per_cta + j;
            if (chunk >= d.n_chunks) break; /* whole warps */
            const dense_sink sink = { out + d.out_off +
                                      2 * (uint64_t)chunk * kLanes * d.lane_symbols };
            decode_chunk(d, chunk, lut, ring, payload, sink, err);
            if (chunk == d.n_chunks - 1)
                zero_pad(out, d.out_off + 2 * d.n_elements, threadIdx.x % kLanes, kLanes);
        }
    }
}

constexpr int kRowsWarps = 4; /* warps per CTA of the row decode */

/* The row decode (kernels/gather.h): warp w of the grid decodes one chunk of W (the
 * one-tensor plan's d, decode table at lut_src) and writes the part of it that falls in
 * its window of rows. By id: warp w serves out row i = w / per_row, its j-th chunk
 * (j = w % per_row; a row of `cols` weights spans at most per_row chunks), window W row
 * r.id[i]. A range: chunk w of those holding rows first .. first + n - 1, window all of
 * them. Dynamic shared memory as the group kernel's, for kRowsWarps warps. */
__global__ void __launch_bounds__(32 * kRowsWarps)
    df11i_rows_huffman_kernel(df11i_gpu_tensor_desc d, const uint4 *__restrict__ lut_src,
                              const uint8_t *__restrict__ payload, uint64_t cols, uint32_t per_row,
                              df11i_gpu_rows r, void *__restrict__ out)
{
    extern __shared__ uint4 smem[];
    const uint32_t lut_bytes = DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(d.max_len));
    for (uint32_t i = threadIdx.x; i < lut_bytes / 16; i += blockDim.x)
        smem[i] = __ldg(lut_src + i);
    __syncthreads();
    const uint64_t w = (uint64_t)blockIdx.x * kRowsWarps + threadIdx.x / kLanes;
    const uint64_t ce = (uint64_t)kLanes * d.lane_symbols;
    uint64_t lo, hi, dst; /* window: W elements [lo, hi) to out elements dst.. */
    uint64_t chunk;
    if (r.by_id) {
        const uint64_t i = w / per_row;
        if (i >= r.n) return; /* whole warps */
        lo = (uint64_t)r.id[i] * cols;
        hi = lo + cols;
        dst = i * cols;
        chunk = lo / ce + w % per_row;
    } else {
        lo = (uint64_t)r.first * cols;
        hi = lo + (uint64_t)r.n * cols;
        dst = 0;
        chunk = lo / ce + w;
    }
    if (chunk * ce >= hi || chunk >= d.n_chunks) return;
    const uint64_t cb = chunk * ce;
    window_sink sink;
    sink.out = out;
    sink.off = (int64_t)(cb + dst) - (int64_t)lo;
    sink.lo = (uint32_t)(lo > cb ? lo - cb : 0);
    sink.hi = (uint32_t)(hi - cb < ce ? hi - cb : ce);
    sink.f32 = r.out_f32;
    const uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t rings = (lut + lut_bytes + kRingBytes - 1) & ~(kRingBytes - 1);
    decode_chunk(d, (uint32_t)chunk, lut, rings + threadIdx.x / kLanes * kRingBytes, payload, sink,
                 nullptr);
}

constexpr int kMatmulWarps = 8; /* warps per CTA of the fused Huffman matmul */

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

struct HuffMatmulArgs {
    const uint16_t *x; /* B x K BF16, row stride K */
    void *y;           /* B x ldy, F32 or (y_bf16) BF16 */
    float *part;       /* 2 slots a chunk, its first and its last row's partial sums: NB floats
                          each (the launch's kernel), 8 reserved (huffman_ws) */
    unsigned *sem;     /* a word a row, zero between launches */
    uint32_t *err;
    uint32_t K, B, ldy, y_bf16;
    bool x_vec; /* x 16-byte aligned: 8 weights' x in one load */
};

/* The fused Huffman matmul's sink: y[b][r] = sum_k x[b][k] W[r][k] over the rows of W the
 * chunk touches, NB >= B batch rows. A lane sums its weights' products for the row in
 * progress (acc) and, where a step crosses into the next row, for that one (nxt): a step
 * spans at most 256 <= K elements, so two rows at most, and 8 elements never straddle a
 * row (K % 8 == 0). When a step ends the row in progress (warp-uniform), the warp adds its
 * lanes' sums (a butterfly, fixed order) and commits the row: to y where the chunk holds all
 * of it, else as the chunk's partial, which the last of the row's chunks to finish sums in
 * chunk order (a semaphore a row). So y does not depend on timing or on the device. */
template <int NB> struct dot_sink {
    const HuffMatmulArgs a;
    uint64_t base, row; /* the chunk's first element; the row in progress */
    int64_t bound;      /* chunk-relative end of the row in progress */
    uint32_t n, chunk, ce;
    float acc[NB], nxt[NB];
    uint4 xn[NB]; /* x for the lane's next put8 */

    __device__ dot_sink(const HuffMatmulArgs &args, uint32_t c, uint32_t chunk_elems,
                        uint64_t n_elements)
        : a(args), chunk(c), ce(chunk_elems)
    {
        base = (uint64_t)c * ce;
        n = (uint32_t)min((uint64_t)ce, n_elements - base);
        row = base / a.K;
        bound = (int64_t)((row + 1) * a.K - base);
#pragma unroll
        for (int b = 0; b < NB; b++) acc[b] = nxt[b] = 0.f, xn[b] = make_uint4(0, 0, 0, 0);
        x_ahead(kGroup * (threadIdx.x % kLanes));
    }

    /* x[b][col .. col + 7] as 4 bf16 pairs */
    __device__ __forceinline__ uint4 x8(int b, uint32_t col) const
    {
        const uint16_t *p = a.x + (uint64_t)b * a.K + col;
        if (a.x_vec) return __ldg(reinterpret_cast<const uint4 *>(p));
        uint32_t v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = __ldg(p + 2 * i) | (uint32_t)__ldg(p + 2 * i + 1) << 16;
        return make_uint4(v[0], v[1], v[2], v[3]);
    }
    /* The column of chunk element e, in the row in progress or one or two after it. */
    __device__ __forceinline__ uint32_t col_of(int64_t e) const
    {
        int64_t c = e - (bound - a.K);
        if (c >= a.K) c -= a.K;
        if (c >= a.K) c -= a.K;
        return (uint32_t)c;
    }
    /* x of the lane's next step (chunk element e), loaded a step ahead so that the step's
     * products do not wait for it */
    __device__ __forceinline__ void x_ahead(uint32_t e)
    {
        const uint32_t col = col_of(e);
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (b < (int)a.B) xn[b] = x8(b, col);
    }
    __device__ __forceinline__ void add(bool cur, int b, float d)
    {
        if (cur)
            acc[b] += d;
        else
            nxt[b] += d;
    }
    /* The main loop's steps: lane l's 8 elements at e = 8 l + 256 k, x already loaded */
    __device__ __forceinline__ void put8(uint32_t e, uint4 v)
    {
        const bool cur = (int64_t)e < bound;
        const float w[8] = { bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y),
                             bf16_lo(v.z), bf16_hi(v.z), bf16_lo(v.w), bf16_hi(v.w) };
        uint4 xv[NB];
#pragma unroll
        for (int b = 0; b < NB; b++) xv[b] = xn[b];
        x_ahead(e + kGroup * kLanes);
#pragma unroll
        for (int b = 0; b < NB; b++) {
            if (b >= (int)a.B) break;
            float d = w[0] * bf16_lo(xv[b].x);
            d = fmaf(w[1], bf16_hi(xv[b].x), d);
            d = fmaf(w[2], bf16_lo(xv[b].y), d);
            d = fmaf(w[3], bf16_hi(xv[b].y), d);
            d = fmaf(w[4], bf16_lo(xv[b].z), d);
            d = fmaf(w[5], bf16_hi(xv[b].z), d);
            d = fmaf(w[6], bf16_lo(xv[b].w), d);
            d = fmaf(w[7], bf16_hi(xv[b].w), d);
            add(cur, b, d);
        }
    }
    __device__ __forceinline__ void put1(uint32_t e, uint16_t v)
    {
        const bool cur = (int64_t)e < bound;
        const uint32_t col = col_of(e);
        const float w = bf16_lo(v);
#pragma unroll
        for (int b = 0; b < NB; b++) {
            if (b >= (int)a.B) break;
            add(cur, b, w * bf16_lo(__ldg(a.x + (uint64_t)b * a.K + col)));
        }
    }
    __device__ __forceinline__ void store(int b, uint64_t r, float v) const
    {
        const uint64_t at = (uint64_t)b * a.ldy + r;
        if (a.y_bf16)
            static_cast<__nv_bfloat16 *>(a.y)[at] = __float2bfloat16_rn(v);
        else
            static_cast<float *>(a.y)[at] = v;
    }
    /* Chunk c's partial of row r, NB floats: its first row's (side 0) or its last row's. */
    __device__ __forceinline__ uint64_t slot(uint64_t r, uint64_t c) const
    {
        return (2 * c + (r == c * ce / a.K ? 0 : 1)) * NB;
    }
    /* Row r's sums v (per lane) are complete for this chunk: the whole warp. */
    __device__ __forceinline__ void commit(uint64_t r, float v[NB])
    {
        const uint32_t lane = threadIdx.x % kLanes;
#pragma unroll
        for (int b = 0; b < NB; b++)
#pragma unroll
            for (int o = kLanes / 2; o > 0; o /= 2) v[b] += __shfl_xor_sync(0xffffffffu, v[b], o);
        const uint64_t rs = r * a.K;
        if (rs >= base && rs + a.K <= base + n) { /* the whole row is in this chunk */
#pragma unroll
            for (int b = 0; b < NB; b++)
                if (lane == (uint32_t)b && b < (int)a.B) store(b, r, v[b]);
            return;
        }
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (lane == (uint32_t)b) a.part[slot(r, chunk) + b] = v[b];
        __syncwarp(); /* the lanes' partials before lane 0's count (kernels/split_count.cuh) */
        unsigned old = 0;
        if (lane == 0) old = df11i_fused::split_count(a.sem + r);
        old = __shfl_sync(0xffffffffu, old, 0);
        const uint64_t cf = rs / ce, cl = (rs + a.K - 1) / ce;
        if (old != (unsigned)(cl - cf)) return; /* not the row's last chunk to finish */
        __syncwarp(); /* lane 0's acquire before the lanes' reads (a shuffle orders no memory) */
        if (lane < a.B) {
            float t = 0.f;
            for (uint64_t c = cf; c <= cl; c++) t += __ldcg(a.part + slot(r, c) + lane);
            store((int)lane, r, t);
        }
        if (lane == 0) atomicExch(a.sem + r, 0u);
    }
    __device__ __forceinline__ void step_done(uint32_t end)
    {
        if ((int64_t)end < bound) return;
        commit(row, acc);
#pragma unroll
        for (int b = 0; b < NB; b++) acc[b] = nxt[b], nxt[b] = 0.f;
        row++;
        bound += a.K;
    }
    /* The row in progress at the chunk's end, if the chunk holds any of it. */
    __device__ __forceinline__ void finish()
    {
        if (bound - (int64_t)a.K < (int64_t)n) commit(row, acc);
    }
};

/* The fused Huffman matmul (df11i_huffman_matmul): warp w of the grid decodes chunk w of W
 * (the one-tensor plan's d, decode table at lut_src) into its dot_sink. Dynamic shared
 * memory as the group kernel's, for kMatmulWarps warps. */
template <int NB>
__global__ void __launch_bounds__(32 * kMatmulWarps)
    df11i_huffman_matmul_kernel(df11i_gpu_tensor_desc d, const uint4 *__restrict__ lut_src,
                                const uint8_t *__restrict__ payload, HuffMatmulArgs a)
{
    extern __shared__ uint4 smem[];
#if __CUDA_ARCH__ >= 900
    /* programmatic dependent launch (df11i_huffman_matmul's pdl): the next launch on the
     * stream may start now; its own wait still waits for this whole grid */
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    const uint32_t lut_bytes = DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(d.max_len));
    for (uint32_t i = threadIdx.x; i < lut_bytes / 16; i += blockDim.x)
        smem[i] = __ldg(lut_src + i);
    __syncthreads();
#if __CUDA_ARCH__ >= 900
    /* only the weights and their table were read so far: x, y, the workspace and the error
     * word may be the previous kernel's, still running where this launch was programmatic
     * (a no-op where it was not) */
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    const uint32_t chunk = blockIdx.x * kMatmulWarps + threadIdx.x / kLanes;
    if (chunk >= d.n_chunks) return; /* whole warps */
    const uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t rings = (lut + lut_bytes + kRingBytes - 1) & ~(kRingBytes - 1);
    dot_sink<NB> sink(a, chunk, kLanes * d.lane_symbols, d.n_elements);
    decode_chunk(d, chunk, lut, rings + threadIdx.x / kLanes * kRingBytes, payload, sink, a.err);
    sink.finish();
}

/* The kernel for up to nb batch rows. */
using HuffMatmulFn = void (*)(df11i_gpu_tensor_desc, const uint4 *, const uint8_t *,
                              HuffMatmulArgs);
HuffMatmulFn huffman_matmul_of(uint32_t batch)
{
    return batch <= 1   ? df11i_huffman_matmul_kernel<1>
           : batch <= 2 ? df11i_huffman_matmul_kernel<2>
           : batch <= 4 ? df11i_huffman_matmul_kernel<4>
                        : df11i_huffman_matmul_kernel<DF11_HUFFMAN_FUSED_MAX_BATCH>;
}

/* Workspace of a tensor's launch: semaphores (a word a row), then, from the end, partials. */
struct HuffWs {
    uint64_t sem, part;
    uint64_t bytes() const { return df11i_split_ws(sem, part); }
};
HuffWs huffman_ws(uint64_t rows, uint64_t n_chunks)
{
    return HuffWs{ (4 * rows + 255) / 256 * 256,
                   2 * n_chunks * DF11_HUFFMAN_FUSED_MAX_BATCH * sizeof(float) };
}

/* Lets `kernel` take `smem` bytes of dynamic shared memory (needed above 48 KiB). */
df11_status allow_smem(size_t smem, const void *kernel = (const void *)df11i_decode_kernel)
{
    if (smem <= 48 * 1024) return DF11_OK;
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* reported here, not again by a later launch's check */
        return df11i_fail(DF11_ERR_DEVICE, "decode: %zu bytes of shared memory: %s", smem,
                          cudaGetErrorString(e));
    }
    return DF11_OK;
}

} // namespace

extern "C" int df11i_gpu_ctas_per_sm(uint32_t warps, uint32_t lut_entries, int *sms)
{
    df11i_gpu_plan_header h = {};
    h.max_lut_entries = lut_entries;
    h.warps_per_cta = warps;
    size_t smem = smem_bytes(&h);
    int device, max_smem = 0, n = 0;
    *sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
            cudaSuccess)
        return 0;
    if (smem > (size_t)max_smem) return 0; /* never ask for what the device cannot give */
    if (allow_smem(smem) != DF11_OK ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, df11i_decode_kernel,
                                                      (int)(kLanes * warps), smem) != cudaSuccess)
        return 0;
    return n;
}

/* Both launches of a group: the fixed-code tensors', then the group kernel's; plain
 * (lean_ctas 0) or lean (at most lean_ctas CTAs each). */
static df11_status decode_group(const void *plan, const void *d_plan, const void *d_payload,
                                void *d_out, uint32_t lean_ctas, uint32_t *d_error, void *stream)
{
    if (!plan || !d_plan || !d_payload || !d_out)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_decode: NULL argument");
    const df11i_gpu_plan_header *h = static_cast<const df11i_gpu_plan_header *>(plan);
    const df11i_gpu_tensor_desc *ds = reinterpret_cast<const df11i_gpu_tensor_desc *>(h + 1);
    /* fixed-code tensors: their own launch */
    df11_status st =
        df11i_gpu_decode_fixed(ds, h->n_tensors, d_payload, d_out, lean_ctas, d_error, stream);
    if (st != DF11_OK) return st;
    if (h->n_ctas == 0) return DF11_OK;
    const uint8_t *p = static_cast<const uint8_t *>(d_plan),
                  *pay = static_cast<const uint8_t *>(d_payload);
    uint8_t *o = static_cast<uint8_t *>(d_out);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    uint32_t grid = h->n_ctas;
    if (lean_ctas) {
        df11i_gpu_plan_header lh = *h;
        lh.warps_per_cta = kLeanWarps;
        const size_t smem = smem_bytes(&lh);
        if ((st = allow_smem(smem, (const void *)df11i_decode_lean_kernel)) != DF11_OK) return st;
        if (grid > lean_ctas) grid = lean_ctas;
        df11i_decode_lean_kernel<<<grid, kLanes * kLeanWarps, smem, s>>>(p, pay, o, d_error);
    } else {
        const size_t smem = smem_bytes(h);
        if ((st = allow_smem(smem)) != DF11_OK) return st;
        df11i_decode_kernel<<<grid, kLanes * h->warps_per_cta, smem, s>>>(p, pay, o, d_error);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "decode launch (%u CTAs%s): %s", grid,
                          lean_ctas ? ", lean" : "", cudaGetErrorString(e));
    return DF11_OK;
}

extern "C" df11_status df11i_gpu_decode_checked(const void *plan, const void *d_plan,
                                                const void *d_payload, void *d_out,
                                                uint32_t *d_error, void *stream)
{
    return decode_group(plan, d_plan, d_payload, d_out, 0, d_error, stream);
}

extern "C" int df11i_gpu_sm_count(void)
{
    int device, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return sms;
}

extern "C" df11_status df11i_gpu_decode_lean(const void *plan, const void *d_plan,
                                             const void *d_payload, void *d_out, uint32_t ctas,
                                             uint32_t *d_error, void *stream)
{
    if (ctas == 0 && (ctas = (uint32_t)df11i_gpu_sm_count()) == 0)
        return df11i_fail(DF11_ERR_DEVICE, "lean decode: the device's SM count is unknown");
    return decode_group(plan, d_plan, d_payload, d_out, ctas, d_error, stream);
}

extern "C" df11_status df11i_gpu_decode(const void *plan, const void *d_plan, const void *d_payload,
                                        void *d_out, void *stream)
{
    return df11i_gpu_decode_checked(plan, d_plan, d_payload, d_out, NULL, stream);
}

extern "C" df11_status df11i_gpu_rows_huffman(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                              const void *d_payload, uint64_t cols,
                                              const df11i_gpu_rows *r, void *out, void *stream)
{
    if (!d || !d_plan || !d_payload || !r || !out || !cols || !d->lane_symbols ||
        d->codec != DF11_CODEC_EXP_HUFFMAN)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_rows_huffman: bad argument");
    if (r->n == 0) return DF11_OK;
    const uint64_t ce = (uint64_t)kLanes * d->lane_symbols;
    const uint32_t per_row = (uint32_t)((cols + ce - 2) / ce + 1); /* chunks a row can touch */
    uint64_t warps;
    if (r->by_id) {
        warps = (uint64_t)r->n * per_row;
    } else {
        const uint64_t lo = (uint64_t)r->first * cols, hi = lo + (uint64_t)r->n * cols;
        warps = (hi - 1) / ce - lo / ce + 1;
    }
    df11i_gpu_plan_header h = {};
    h.max_lut_entries = DF11_GPU_LUT_UNITS(d->max_len);
    h.warps_per_cta = kRowsWarps;
    const size_t smem = smem_bytes(&h);
    df11_status st = allow_smem(smem, (const void *)df11i_rows_huffman_kernel);
    if (st != DF11_OK) return st;
    const uint64_t ctas = (warps + kRowsWarps - 1) / kRowsWarps;
    if (ctas > INT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "rows decode: %llu CTAs", (unsigned long long)ctas);
    df11i_rows_huffman_kernel<<<(unsigned)ctas, kLanes * kRowsWarps, smem,
                                static_cast<cudaStream_t>(stream)>>>(
        *d, reinterpret_cast<const uint4 *>(static_cast<const uint8_t *>(d_plan) + d->lut_off),
        static_cast<const uint8_t *>(d_payload), cols, per_row, *r, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "rows decode launch (%llu CTAs): %s",
                          (unsigned long long)ctas, cudaGetErrorString(e));
    return DF11_OK;
}

extern "C" df11_status df11i_huffman_matmul_workspace(uint64_t rows, uint64_t n_chunks,
                                                      uint64_t *bytes)
{
    if (!bytes) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_huffman_matmul_workspace: NULL");
    *bytes = huffman_ws(rows, n_chunks).bytes();
    return DF11_OK;
}

extern "C" int df11i_huffman_matmul_takes(uint64_t cols, uint32_t lane_symbols)
{
    return cols % 8 == 0 && cols >= 256 && cols <= UINT32_MAX / 2 &&
           lane_symbols >= DF11_HUFFMAN_FUSED_MIN_LANE_SYMBOLS &&
           lane_symbols <= DF11_HUFFMAN_FUSED_MAX_LANE_SYMBOLS;
}

extern "C" uint32_t df11i_huffman_matmul_default_max(uint64_t cols, uint32_t lane_symbols)
{
    return df11i_fused_matmul_supported() && df11i_huffman_matmul_takes(cols, lane_symbols) ? 1 : 0;
}

extern "C" df11_status df11i_huffman_matmul(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                            const void *d_payload, uint64_t rows, uint64_t cols,
                                            const void *x, uint32_t batch, void *y, uint32_t ldy,
                                            int y_bf16, void *ws, uint64_t ws_size,
                                            uint32_t *d_error, int pdl, void *stream)
{
    if (!d || !d_plan || !d_payload || !x || !y || !ws || batch == 0 || ldy < rows)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_huffman_matmul: bad argument");
    if (d->codec != DF11_CODEC_EXP_HUFFMAN || d->n_elements != rows * cols ||
        !df11i_huffman_matmul_takes(cols, d->lane_symbols) || rows > UINT32_MAX)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused Huffman matmul: %llu x %llu, codec %u",
                          (unsigned long long)rows, (unsigned long long)cols, d->codec);
    const HuffWs w = huffman_ws(rows, d->n_chunks);
    if (w.bytes() > ws_size)
        return df11i_fail(DF11_ERR_STATE, "fused Huffman matmul: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)w.bytes());
    df11i_gpu_plan_header h = {};
    h.max_lut_entries = DF11_GPU_LUT_UNITS(d->max_len);
    h.warps_per_cta = kMatmulWarps;
    const size_t smem = smem_bytes(&h);
    const uint32_t ctas = (d->n_chunks + kMatmulWarps - 1) / kMatmulWarps;
    const uint4 *lut =
        reinterpret_cast<const uint4 *>(static_cast<const uint8_t *>(d_plan) + d->lut_off);
    HuffMatmulArgs a = {};
    a.sem = static_cast<unsigned *>(ws);
    a.part = reinterpret_cast<float *>(static_cast<uint8_t *>(ws) + (ws_size - w.part) / 4 * 4);
    a.err = d_error;
    a.K = (uint32_t)cols;
    a.ldy = ldy;
    a.y_bf16 = y_bf16 != 0;
    const size_t y_row = (size_t)ldy * (y_bf16 ? 2 : 4);
    const bool programmatic = pdl && df11i_fused_matmul_pdl();
    /* rows of x in launches of at most DF11_HUFFMAN_FUSED_MAX_BATCH, in order on the stream
     * (they share the workspace) */
    for (uint32_t at = 0; at < batch; at += DF11_HUFFMAN_FUSED_MAX_BATCH) {
        const uint32_t nb =
            batch - at < DF11_HUFFMAN_FUSED_MAX_BATCH ? batch - at : DF11_HUFFMAN_FUSED_MAX_BATCH;
        a.x = static_cast<const uint16_t *>(x) + (size_t)at * cols;
        a.y = static_cast<uint8_t *>(y) + at * y_row;
        a.B = nb;
        a.x_vec = reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
        const HuffMatmulFn k = huffman_matmul_of(nb);
        df11_status st = allow_smem(smem, (const void *)k);
        if (st != DF11_OK) return st;
        const cudaError_t e =
            df11i_fused::launch_kernel(k, ctas, kLanes * kMatmulWarps, smem, stream, programmatic,
                                       *d, lut, static_cast<const uint8_t *>(d_payload), a);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused Huffman matmul launch (%u CTAs): %s", ctas,
                              cudaGetErrorString(e));
    }
    return DF11_OK;
}
