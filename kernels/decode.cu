/* The GPU group decoder: one launch turns a group's payload (docs/FORMAT.md) into its BF16
 * tensors at their 256-byte-aligned offsets, padding zeroed. Host code here only launches;
 * the plan (kernels/plan.c) says which CTA does what. Never allocates, never synchronizes.
 *
 * Work split (decided in one place, df11_gpu_plan_build):
 *   - EXP_HUFFMAN tensor: one warp per chunk, warps_per_cta chunks per CTA; the CTA first
 *     copies its tensor's decode table into shared memory. Each warp's global reads go
 *     through its own cp.async rings in shared memory (stream vectors, sm bytes).
 *   - RAW tensor: DF11_RAW_CTA_BYTES bytes per CTA, copied with 16-byte vectors.
 *   - The CTA (warp) that handles a tensor's last piece zero-fills its padding up to the
 *     next 256-byte boundary, so the whole decoded group is written by the kernel.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/decode.h"
extern "C" {
#include "codec/codec.h"   /* DF11_MAX_CODE_LEN */
#include "common/error.h"
}

namespace {

constexpr int kLanes = 32;
constexpr int kGroup = 8;       /* elements a lane decodes per step */

/* A chunk's full words are interleaved in the order its lanes take them (docs/FORMAT.md,
 * "Refill schedule"), so the warp reads its stream front to back. The words reach the lanes
 * through a ring of kRingWords words in shared memory: at the start of every step, if the
 * ring has room for kFillWords more, each lane issues one 16-byte cp.async (the warp's fill
 * is 512 contiguous bytes), all in one commit group per step, and then waits until only the
 * kAhead most recent groups are pending.
 *
 * The guarantee: a lane takes at most one word per symbol pair, so a warp at most
 * kStepWords per step, whatever the data. A fill is issued whenever at most
 * kRingWords - kFillWords words are unread, so after the fills of a step at least that many
 * are requested (or the chunk's words are all requested). What the warp reads in step k and
 * the kAhead steps before it, (kAhead + 1) * kStepWords words, thus lies inside what was
 * requested by step k - kAhead, which the wait made valid. */
constexpr int kRingWords = 1024;
constexpr int kFillWords = 4 * kLanes;
constexpr int kStepWords = kGroup / 2 * kLanes;
constexpr int kAhead = 6;
static_assert((kAhead + 1) * kStepWords <= kRingWords - kFillWords, "ring too small for kAhead");
static_assert((kRingWords & (kRingWords - 1)) == 0, "kRingWords must be a power of two");

/* The sign|mantissa bytes travel in their own ring: at step k a lane requests its 8 bytes
 * of step k + kAhead (an 8-byte cp.async into slot (k + kAhead) % kSmRing of its sm ring), in
 * step k's commit group. Register loads kept in flight instead share the warp's few
 * scoreboards with each other, so reading one waits for the newest: a full memory
 * latency per step. */
constexpr int kSmRing = 8;
static_assert(kSmRing >= kAhead + 1 && (kSmRing & (kSmRing - 1)) == 0, "sm ring");
constexpr int kStreamRingBytes = kRingWords * 4;
constexpr int kWarpSmem = kStreamRingBytes + kSmRing * kLanes * 8;   /* per warp */

__device__ __forceinline__ void cp_async16(uint32_t dst, const uint4 *src)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#else   /* the sm_75 PTX: a plain copy */
    uint4 v = __ldg(src);
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w) : "memory");
#endif
}

__device__ __forceinline__ void cp_async8(uint32_t dst, const uint8_t *src)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
#else
    uint2 v = __ldg(reinterpret_cast<const uint2 *>(src));
    asm volatile("st.shared.v2.u32 [%0], {%1, %2};" ::"r"(dst), "r"(v.x), "r"(v.y) : "memory");
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

__device__ __forceinline__ uint2 lds64(uint32_t a)
{
    uint2 v;
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(a));
    return v;
}

/* A warp's view of its chunk's interleaved words. Counts are in words from `base`, the
 * chunk's first word rounded down to a 16-byte vector: `taken` words handed to lanes,
 * `filled` requested into the ring, `end` the end of the interleaved area. Warp-uniform. */
struct word_ring {
    uint32_t smem;             /* shared address of the ring */
    uint32_t taken, filled, end;
    uint32_t vlast;            /* last vector of the stream section, from base (reads clamp) */
    const uint4 *base;
};

/* Requests the next kFillWords words when the ring has room for them and the area is not
 * all requested: one 16-byte copy per lane, the same branch for the whole warp. */
__device__ __forceinline__ void ring_fill(word_ring &r, uint32_t lane)
{
    if (r.filled < r.end && r.filled + kFillWords <= r.taken + kRingWords) {   /* taken may lead by 3 */
        uint32_t w = r.filled + 4 * lane;
        cp_async16(r.smem + ((w & (kRingWords - 1)) << 2), r.base + min(w >> 2, r.vlast));
        r.filled += kFillWords;
    }
}

/* Start of a step: fill (after any other copies of the step), then wait for the copies of
 * kAhead steps ago. The first barrier orders every lane's earlier reads of the slots being
 * refilled before the refill; the second makes the other lanes' landed copies visible. */
__device__ __forceinline__ void step_begin(word_ring &r, uint32_t lane)
{
    __syncwarp();
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

/* The refill of the schedule before a symbol pair (docs/FORMAT.md): every lane of the warp
 * calls it (the ballot); `active`: the lane has the pair's first symbol. A lane short of 32
 * bits takes its next full word, at the warp's count plus the lower lanes taking one, or
 * else (kTail) its tail. Steps in which no lane can run out of full words (the warp
 * checked words >= 4, the most a step takes) use kTail = false: no tail to consider, ~30%
 * fewer instructions. `lower_mul` = 2^(32 - lane) (0 for lane 0): the ballot times it
 * keeps just the lower lanes' bits, on the multiply pipe (the ALU pipe is the kernel's
 * busiest). The decoders subtract whole table entries from nbits (one instruction); an
 * entry's bits above its length are multiples of 128, so nbits is exact modulo 128:
 * "fewer than 32 bits" is (nbits & 0x60) == 0, and the shifts use nbits & 31 by themselves. */
template <bool kTail>
__device__ __forceinline__ void br_refill(bit_reader &b, word_ring &r, bool active,
                                          uint32_t lower_mul)
{
    const bool lack = active && (b.nbits & 0x60u) == 0;
    const bool word = kTail ? lack && b.words != 0 : lack;
    const bool tail = kTail && lack && !word;
    const uint32_t takers = __ballot_sync(0xffffffffu, word);
    const uint32_t at = r.taken + __popc(takers * lower_mul);
    r.taken += __popc(takers);
    uint32_t w = tail ? b.tail : 0u;
    if (word) w = lds32(r.smem + ((at & (kRingWords - 1)) << 2));
    b.hi += __funnelshift_r(w, 0u, b.nbits);   /* w >> nbits; the window's free bits are */
    b.lo += __funnelshift_r(0u, w, b.nbits);   /* zero, so + is |; w = 0 unless lack      */
    b.nbits += word ? 32u : tail ? b.tail_bits : 0u;
    b.words -= word;
    if (tail) b.tail = b.tail_bits = 0;
}

/* One symbol: a table entry exp << 7 | len (bit 15: no code starts with these bits), at
 * the window's top L bits: umulhi(hi, 2^L) = hi >> (32 - L), on the multiply pipe. */
__device__ __forceinline__ uint32_t br_decode(bit_reader &b, uint32_t lut, uint32_t lut_scale)
{
    uint32_t e = lds16(lut + 2 * __umulhi(b.hi, lut_scale));
    b.hi = __funnelshift_l(b.lo, b.hi, e);   /* shift amount = e & 31 = len */
    b.lo = __funnelshift_l(0u, b.lo, e);
    b.nbits -= e;   /* exact modulo 128: see br_refill */
    return e;
}

/* Two BF16 values from two table entries and two sign|mantissa bytes at byte `sel` of sm:
 * v = (sm & 0x80) << 8 | exp << 7 | (sm & 0x7f). */
__device__ __forceinline__ uint32_t join2(uint32_t e0, uint32_t e1, uint32_t sm, uint32_t sel)
{
    uint32_t ex = __byte_perm(e0, e1, 0x5410);    /* e0 low half, e1 high half */
    uint32_t s = __byte_perm(sm, 0, sel);         /* each sm byte doubled */
    return ex ^ ((ex ^ s) & 0x807f807fu);
}

/* One step of a lane with 8 symbols: 4 refills of the schedule, 8 table entries. */
template <bool kTail>
__device__ __forceinline__ void decode_step(bit_reader &b, word_ring &r, uint32_t lut,
                                            uint32_t lut_scale, uint32_t lower_mul,
                                            uint32_t (&e)[kGroup])
{
#pragma unroll
    for (int i = 0; i < kGroup; i += 2) {
        br_refill<kTail>(b, r, true, lower_mul);
        e[i] = br_decode(b, lut, lut_scale);
        e[i + 1] = br_decode(b, lut, lut_scale);
    }
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

/* One warp decodes chunk `chunk` of tensor d: lane l decodes groups l, l+m, l+2m, ... of 8
 * elements. Per step a lane takes its 8 sm bytes from its sm ring (requested kAhead steps
 * earlier; the warp's 8m bytes are contiguous in global memory), decodes 8 exponents with 4
 * refills and 8 table lookups, and writes 16 bytes (the warp's 16m bytes are contiguous).
 * The warp's words come through the word ring, front to back. The last step, and every
 * step of a chunk with fewer than 32 lanes, goes symbol by symbol. `lut` and `ring` are
 * shared-memory addresses: the decode table, and this warp's kWarpSmem bytes (word ring,
 * then sm ring). */
__device__ void decode_chunk(const df11_gpu_tensor_desc &d, uint32_t chunk, uint32_t lut,
                             uint32_t ring, const uint8_t *__restrict__ payload,
                             uint8_t *__restrict__ out, uint32_t *err)
{
    const uint32_t l = threadIdx.x % kLanes, S = d.lane_symbols, lower_mul = l ? 1u << (32 - l) : 0u;
    const uint64_t ce = (uint64_t)kLanes * S, base = chunk * ce;
    const uint32_t n = (uint32_t)min(ce, d.n_elements - base);
    const uint32_t m = min((uint32_t)kLanes, (n + S - 1) / S);
    const uint32_t G = (n + kGroup - 1) / kGroup;       /* groups, the last may be short */
    const uint32_t steps = (G + m - 1) / m;
    const uint32_t kfast = m == kLanes ? n / kGroup / m : 0;   /* steps with 8 symbols per lane */

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
    bit_reader b = {0, 0, 0, lane_bits >> 5, 0, lane_bits & 31};
    if (b.tail_bits) b.tail = __funnelshift_l(t1, t0, (uint32_t)tail_bit) & ~(0xffffffffu >> b.tail_bits);

    word_ring r;
    const uint64_t vlast = (d.stream_size + 15) / 16 - 1, v0 = start >> 2;
    uint32_t flags = v0 > vlast ? 0x8000u : 0u;   /* a chunk table pointing past the stream */
    r.base = reinterpret_cast<const uint4 *>(stream) + min(v0, vlast);
    r.vlast = (uint32_t)(vlast - min(v0, vlast));
    r.smem = ring;
    r.taken = (uint32_t)start & 3;
    r.end = r.taken + words_total;
    r.filled = 0;
    for (int i = 0; i < kRingWords / kFillWords; i++) ring_fill(r, l);

    const uint8_t *sm = payload + d.data_off + base;
    const uint32_t smr = ring + kStreamRingBytes + 8 * l;   /* slot j at smr + 256 j */
    const uint8_t *smn = sm + 8 * l;                        /* sm bytes of step kn */
    uint32_t kn = 0;
    for (; kn < min(kfast, (uint32_t)kAhead); kn++, smn += 8 * kLanes)
        cp_async8(smr + ((kn & (kSmRing - 1)) << 8), smn);
    cp_async_commit_wait<0>();
    __syncwarp();

    const uint32_t lut_scale = 1u << d.max_len;
    uint4 *o4 = reinterpret_cast<uint4 *>(out + d.out_off + 2 * base) + l;
#pragma unroll 2
    for (uint32_t k = 0; k < kfast; k++, kn++, smn += 8 * kLanes, o4 += kLanes) {
        if (kn < kfast) cp_async8(smr + ((kn & (kSmRing - 1)) << 8), smn);
        step_begin(r, l);
        uint2 s = lds64(smr + ((k & (kSmRing - 1)) << 8));
        uint32_t e[kGroup];
        if (__all_sync(0xffffffffu, b.words >= kGroup / 2))   /* no lane reaches its tail */
            decode_step<false>(b, r, lut, lut_scale, lower_mul, e);
        else
            decode_step<true>(b, r, lut, lut_scale, lower_mul, e);
        flags |= e[0] | e[1] | e[2] | e[3] | e[4] | e[5] | e[6] | e[7];
        *o4 = make_uint4(join2(e[0], e[1], s.x, 0x1100), join2(e[2], e[3], s.x, 0x3322),
                         join2(e[4], e[5], s.y, 0x1100), join2(e[6], e[7], s.y, 0x3322));
    }
    /* The remaining steps, symbol by symbol: lane l holds group k*m + l, if any, with up to
     * 8 symbols. */
    uint16_t *o2 = reinterpret_cast<uint16_t *>(out + d.out_off + 2 * base);
    for (uint32_t k = kfast; k < steps; k++) {
        step_begin(r, l);
        const uint32_t g = k * m + l;
        const uint32_t count = l < m && g < G ? min(8u, n - 8 * g) : 0;
#pragma unroll
        for (uint32_t j = 0; j < kGroup; j += 2) {
            br_refill<true>(b, r, j < count, lower_mul);
            for (uint32_t i = j; i < j + 2 && i < count; i++) {
                uint32_t e = br_decode(b, lut, lut_scale), v = sm[8 * g + i];
                flags |= e;
                o2[8 * g + i] = (uint16_t)((v & 0x80) << 8 | (e & 0x7f80) | (v & 0x7f));
            }
        }
    }
    cp_async_commit_wait<0>();   /* no copy may land after the CTA's shared memory is gone */
    /* Exactly the recorded length: every word and the tail taken, nothing left over. */
    if (err && ((flags & 0x8000u) || b.words || b.tail_bits || (b.nbits & 127)))
        atomicOr(err, 1u);
}

/* Raw bytes: the CTA copies its DF11_RAW_CTA_BYTES slice, 16 bytes per thread per step. */
__device__ void copy_raw(const df11_gpu_tensor_desc &d, uint32_t piece,
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

/* Dynamic shared memory of a launch: the group's largest decode table, then one stream
 * ring per warp (none when the group has no EXP_HUFFMAN tensor). */
__host__ __device__ inline size_t smem_bytes(const df11_gpu_plan_header *h)
{
    if (h->max_lut_entries == 0) return 0;
    return DF11_GPU_LUT_BYTES(h->max_lut_entries) + (size_t)h->warps_per_cta * kWarpSmem;
}

/* Grid: plan n_ctas CTAs of 32*warps_per_cta threads; dynamic shared memory: smem_bytes. */
__global__ void __launch_bounds__(1024)
df11_decode_kernel(const uint8_t *__restrict__ plan, const uint8_t *__restrict__ payload,
                   uint8_t *__restrict__ out, uint32_t *err)
{
    extern __shared__ uint4 smem[];
    const df11_gpu_plan_header *h = reinterpret_cast<const df11_gpu_plan_header *>(plan);
    const df11_gpu_tensor_desc *ds =
        reinterpret_cast<const df11_gpu_tensor_desc *>(plan + sizeof *h);
    uint32_t lo = 0, hi = h->n_tensors, cta = blockIdx.x;
    while (hi - lo > 1) {   /* the last tensor whose first CTA is <= this one */
        uint32_t mid = (lo + hi) / 2;
        if (ds[mid].first_cta <= cta) lo = mid; else hi = mid;
    }
    const df11_gpu_tensor_desc d = ds[lo];
    const uint32_t piece = cta - d.first_cta;

    if (d.codec == DF11_CODEC_RAW) {
        copy_raw(d, piece, payload, out);
        if ((uint64_t)(piece + 1) * DF11_RAW_CTA_BYTES >= d.n_elements)
            zero_pad(out, d.out_off + d.n_elements, threadIdx.x, blockDim.x);
        return;
    }
    const uint4 *lut_src = reinterpret_cast<const uint4 *>(plan + d.lut_off);
    for (uint32_t i = threadIdx.x; i < DF11_GPU_LUT_BYTES(DF11_GPU_LUT_UNITS(d.max_len)) / 16;
         i += blockDim.x)
        smem[i] = __ldg(lut_src + i);
    __syncthreads();
    uint32_t chunk = piece * (blockDim.x / kLanes) + threadIdx.x / kLanes;
    if (chunk >= d.n_chunks) return;   /* whole warps: a chunk's warp stays complete */
    uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    uint32_t ring = lut + (uint32_t)DF11_GPU_LUT_BYTES(h->max_lut_entries) +
                    threadIdx.x / kLanes * kWarpSmem;
    decode_chunk(d, chunk, lut, ring, payload, out, err);
    if (chunk == d.n_chunks - 1)
        zero_pad(out, d.out_off + 2 * d.n_elements, threadIdx.x % kLanes, kLanes);
}

/* Lets the kernel take `smem` bytes of dynamic shared memory (needed above 48 KiB). */
df11_status allow_smem(size_t smem)
{
    if (smem <= 48 * 1024) return DF11_OK;
    cudaError_t e = cudaFuncSetAttribute(df11_decode_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return df11_fail(DF11_ERR_DEVICE, "decode: %zu bytes of shared memory: %s", smem,
                         cudaGetErrorString(e));
    return DF11_OK;
}

}  // namespace

extern "C" int df11_gpu_ctas_per_sm(uint32_t warps, uint32_t lut_entries, int *sms)
{
    df11_gpu_plan_header h = {};
    h.max_lut_entries = lut_entries;
    h.warps_per_cta = warps;
    size_t smem = smem_bytes(&h);
    int device, max_smem = 0, n = 0;
    *sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        return 0;
    if (smem > (size_t)max_smem) return 0; /* never ask for what the device cannot give */
    if (allow_smem(smem) != DF11_OK ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, df11_decode_kernel, (int)(kLanes * warps),
                                                      smem) != cudaSuccess)
        return 0;
    return n;
}

extern "C" df11_status df11_gpu_decode_checked(const void *plan, const void *d_plan,
                                               const void *d_payload, void *d_out,
                                               uint32_t *d_error, void *stream)
{
    if (!plan || !d_plan || !d_payload || !d_out)
        return df11_fail(DF11_ERR_INVALID_ARG, "df11_gpu_decode: NULL argument");
    const df11_gpu_plan_header *h = static_cast<const df11_gpu_plan_header *>(plan);
    if (h->n_ctas == 0) return DF11_OK;
    size_t smem = smem_bytes(h);
    df11_status st = allow_smem(smem);
    if (st != DF11_OK) return st;
    df11_decode_kernel<<<h->n_ctas, kLanes * h->warps_per_cta, smem,
                         static_cast<cudaStream_t>(stream)>>>(
        static_cast<const uint8_t *>(d_plan), static_cast<const uint8_t *>(d_payload),
        static_cast<uint8_t *>(d_out), d_error);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11_fail(DF11_ERR_DEVICE, "decode launch (%u CTAs): %s", h->n_ctas,
                         cudaGetErrorString(e));
    return DF11_OK;
}

extern "C" df11_status df11_gpu_decode(const void *plan, const void *d_plan,
                                       const void *d_payload, void *d_out, void *stream)
{
    return df11_gpu_decode_checked(plan, d_plan, d_payload, d_out, NULL, stream);
}
