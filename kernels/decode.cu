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

/* Lane bit streams reach the bit readers through a ring in shared memory: kRing 16-byte
 * slots per lane, slot s of lane l at byte (s * 32 + l) * 16 of the warp's ring, so that
 * a warp's 16-byte fills touch 512 contiguous bytes. At the start of every step every lane
 * tops its ring up with up to kFetch predicated cp.async copies (one commit group per step,
 * the same instructions for the whole warp), then waits until only the kAhead most recent
 * groups are pending. Loads thus never stall on another lane's register: a lane only
 * reads shared memory, which the wait made valid kAhead steps ago.
 *
 * The guarantee, for any code length L <= DF11_MAX_CODE_LEN: a step decodes 8 symbols, at
 * most kStepBits bits. Measured at the start of a step, the window holds 2..63 bits, so n
 * steps move at most words_moved(n) words into it. A lane reads word rw (the prefetched
 * next word) at most words_moved(kAhead + 1) words past where it stood kAhead steps ago,
 * when its ring was topped up to kRing vectors from there: that word's vector must lie
 * inside those kRing vectors. A step moves the reader by at most kFetch vectors, so kFetch
 * copies per step keep the ring topped up. */
constexpr int kRing = 8;
constexpr int kStepBits = kGroup * DF11_MAX_CODE_LEN;
constexpr int words_moved(int steps) { return (steps * kStepBits + 61) / 32; }
constexpr int kFetch = (words_moved(1) + 3) / 4;
constexpr int kAhead = 6;
static_assert((words_moved(kAhead + 1) + 3) / 4 <= kRing - 1, "ring too small for kAhead");
static_assert((kRing & (kRing - 1)) == 0, "kRing must be a power of two");

/* The sign|mantissa bytes travel the same way: at step k a lane requests its 8 bytes of
 * step k + kAhead (an 8-byte cp.async into slot (k + kAhead) % kSmRing of its sm ring), in
 * step k's commit group. Register loads kept in flight instead share the warp's few
 * scoreboards with each other, so reading one waits for the newest: a full memory
 * latency per step. */
constexpr int kSmRing = 8;
static_assert(kSmRing >= kAhead + 1 && (kSmRing & (kSmRing - 1)) == 0, "sm ring");
constexpr int kStreamRingBytes = kRing * kLanes * 16;
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

/* A lane's bit reader. The window hi:lo holds the next `nbits` stream bits, left-aligned,
 * zeros below; nw is the word after them (word rw, counted from the lane's first vector).
 * Vectors [0, fv) of the lane's stream have been requested into its ring; fetches stop at
 * vend, past which a valid stream is never read. */
struct bit_reader {
    uint32_t hi, lo, nbits, nw, rw;
    uint32_t fv, vend, vlast;  /* vlast: last vector of the stream section (reads clamp) */
    uint32_t ring;             /* shared address of this lane's slot 0 */
    const uint4 *vbase;        /* the lane's first vector */
};

__device__ __forceinline__ uint32_t ring_word(const bit_reader &b, uint32_t w)
{
    return b.ring + ((w << 7) & ((kRing - 1) << 9)) + ((w & 3) << 2);
}

/* Start of a step: request up to kFetch more vectors (after any other copies of the step),
 * then wait for the copies of kAhead steps ago. The copies are predicated per lane; the
 * instructions are the same for the warp. */
__device__ __forceinline__ void br_topup(bit_reader &b)
{
    uint32_t want = min((b.rw >> 2) + kRing, b.vend);
#pragma unroll
    for (int i = 0; i < kFetch; i++)
        if (b.fv < want) {
            cp_async16(b.ring + ((b.fv & (kRing - 1)) << 9), b.vbase + min(b.fv, b.vlast));
            b.fv++;
        }
    cp_async_commit_wait<kAhead>();
}

/* `start` is the lane's first bit, `bits` its recorded length. Returns the bit offset of
 * the start within the lane's first vector (for the length check), and sets *bad when the
 * start lies outside the stream section (a corrupt chunk table). */
__device__ __forceinline__ uint32_t br_init(bit_reader &b, const uint8_t *stream,
                                            uint64_t stream_size, uint64_t start, uint32_t bits,
                                            uint32_t ring, bool *bad)
{
    uint64_t vlast = (stream_size + 15) / 16 - 1, v0 = start >> 7;
    *bad = v0 > vlast;
    if (*bad) { v0 = vlast; start = v0 << 7; }
    uint32_t s = (uint32_t)start & 127;
    b.vbase = reinterpret_cast<const uint4 *>(stream) + v0;
    b.vlast = (uint32_t)(vlast - v0);
    b.vend = ((s + bits + 127) >> 7) + 1;   /* one vector of margin: see the file comment */
    b.ring = ring;
    b.fv = 0;
    b.rw = s >> 5;
    for (int i = 0; i < kRing; i++)   /* the first kRing vectors, waited for at once */
        if (b.fv < b.vend) {
            cp_async16(b.ring + ((b.fv & (kRing - 1)) << 9), b.vbase + min(b.fv, b.vlast));
            b.fv++;
        }
    cp_async_commit_wait<0>();
    uint32_t a = lds32(ring_word(b, b.rw)), c = lds32(ring_word(b, b.rw + 1));
    b.rw += 2;
    b.nw = lds32(ring_word(b, b.rw));
    b.hi = __funnelshift_l(c, a, s);
    b.lo = c << (s & 31);
    b.nbits = 64 - (s & 31);
    return s;
}

/* Tops the window up to >= 32 bits from nw, and fetches the next nw from the ring (its
 * latency hides behind the next two symbols). Called with 2..63 bits left (at most 2
 * symbols of at most 15 bits since the last call), so the shifts stay in 1..31. The
 * decoders subtract whole table entries from nbits (one instruction); an entry's bits
 * above its length are multiples of 128, so nbits & 127 is exact. */
__device__ __forceinline__ void br_refill(bit_reader &b)
{
    b.nbits &= 127;
    bool t = b.nbits < 32;
    uint32_t w = t ? b.nw : 0u;
    b.hi |= w >> (b.nbits & 31);
    b.lo |= __funnelshift_r(0u, w, b.nbits);
    b.nbits += t ? 32u : 0u;
    if (t) {
        b.rw++;
        b.nw = lds32(ring_word(b, b.rw));
    }
}

/* One symbol: a table entry exp << 7 | len (bit 15: no code starts with these bits). */
__device__ __forceinline__ uint32_t br_decode(bit_reader &b, uint32_t lut, uint32_t shift)
{
    uint32_t e = lds16(lut + 2 * (b.hi >> shift));
    b.hi = __funnelshift_l(b.lo, b.hi, e);   /* shift amount = e & 31 = len */
    b.lo = __funnelshift_l(0u, b.lo, e);
    b.nbits -= e;   /* exact modulo 128: see br_refill */
    return e;
}

/* One lookup of a two-symbol table (L <= DF11_GPU_PAIR_MAX_LEN, built by plan.c): entry
 * T | x1 << 8 | x2 << 16 | s << 24 (bit 31: no code starts here), T bits consumed,
 * s = 8 per symbol. The symbols' rotated exponents x enter the byte queue q1:q0 from the
 * top, so after 8 symbols q0 holds symbols 0..3 and q1 symbols 4..7, byte i = symbol i. */
__device__ __forceinline__ uint32_t br_pair(bit_reader &b, uint32_t lut, uint32_t shift,
                                            uint32_t &q0, uint32_t &q1)
{
    uint32_t e = lds32(lut + 4 * (b.hi >> shift)), s = e >> 24;
    b.hi = __funnelshift_l(b.lo, b.hi, e);   /* shift amount = e & 31 = T */
    b.lo = __funnelshift_l(0u, b.lo, e);
    b.nbits -= e;
    q0 = __funnelshift_r(q0, q1, s);          /* shift amount = s & 31 */
    q1 = __funnelshift_r(q1, e >> 8, s);
    return e;
}

/* Two BF16 values from rotated exponents x (byte i of q, x = exp >> 1 | (exp & 1) << 7)
 * and sign|mantissa bytes (byte i of sm): t1 = {sm, x} and t2 = {x, sm} per value, then
 * v = sign | exp << 7 | mantissa takes bits 0x7f7f of t1 and 0x8080 of t2. */
__device__ __forceinline__ uint32_t join_pair(uint32_t q, uint32_t sm, uint32_t s1, uint32_t s2)
{
    uint32_t t1 = __byte_perm(sm, q, s1), t2 = __byte_perm(sm, q, s2);
    return (t1 & 0x7f7f7f7fu) | (t2 & 0x80808080u);
}

/* Two BF16 values from two table entries and two sign|mantissa bytes at byte `sel` of sm:
 * v = (sm & 0x80) << 8 | exp << 7 | (sm & 0x7f). */
__device__ __forceinline__ uint32_t join2(uint32_t e0, uint32_t e1, uint32_t sm, uint32_t sel)
{
    uint32_t ex = __byte_perm(e0, e1, 0x5410);    /* e0 low half, e1 high half */
    uint32_t s = __byte_perm(sm, 0, sel);         /* each sm byte doubled */
    return ex ^ ((ex ^ s) & 0x807f807fu);
}

/* One warp decodes chunk `chunk` of tensor d: lane l decodes groups l, l+m, l+2m, ... of 8
 * elements from its own bit stream (kPair, L <= DF11_GPU_PAIR_MAX_LEN: up to two symbols per
 * table lookup, ~5 lookups per step instead of 8). Per step a lane takes its 8 sm bytes from its sm ring
 * (requested kAhead steps earlier; the warp's 8m bytes are contiguous in global memory),
 * decodes 8 exponents from its window, and writes 16 bytes (one 16-byte store; the warp's
 * 16m bytes are contiguous). Its stream comes through its stream ring (br_topup): ~L/8...
 * ~0.33 byte per weight on average, in 16-byte copies, plus up to kRing + 1 vectors read
 * past its end. `lut` and `ring` are shared-memory addresses: the decode table, and this
 * warp's kWarpSmem bytes (stream ring, then sm ring). */
template <bool kPair>
__device__ void decode_chunk(const df11_gpu_tensor_desc &d, uint32_t chunk, uint32_t lut,
                             uint32_t ring, const uint8_t *__restrict__ payload,
                             uint8_t *__restrict__ out, uint32_t *err)
{
    const uint32_t lut1 = lut + (4u << d.max_len);   /* kPair: the one-symbol table */
    const uint32_t l = threadIdx.x % kLanes, S = d.lane_symbols;
    const uint64_t ce = (uint64_t)kLanes * S, base = chunk * ce;
    const uint32_t n = (uint32_t)min(ce, d.n_elements - base);
    const uint32_t m = min((uint32_t)kLanes, (n + S - 1) / S);

    const uint32_t *chunks = reinterpret_cast<const uint32_t *>(payload + d.chunks_off);
    const uint16_t *lanes = reinterpret_cast<const uint16_t *>(payload + d.lanes_off);
    uint32_t lane_bits = l < m ? lanes[(uint64_t)chunk * kLanes + l] : 0, x = lane_bits;
#pragma unroll
    for (int o = 1; o < kLanes; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (l >= (uint32_t)o) x += y;
    }
    const uint32_t G = (n + kGroup - 1) / kGroup;  /* groups, the last may be short */
    const uint32_t kfull = n / kGroup / m;          /* steps where all m groups are full */
    if (l >= m) return;

    const uint8_t *sm = payload + d.data_off + base;
    const uint32_t smr = ring + kStreamRingBytes + 8 * l;   /* slot j at smr + 256 j */
    const uint8_t *smn = sm + 8 * l;                        /* sm bytes of step kn */
    uint32_t kn = 0;
    for (; kn < min(kfull, (uint32_t)kAhead); kn++, smn += 8 * m)
        cp_async8(smr + ((kn & (kSmRing - 1)) << 8), smn);
    bit_reader b;
    bool bad;
    uint64_t start = (uint64_t)chunks[chunk] * 32 + (x - lane_bits);
    const uint32_t s0 = br_init(b, payload + d.stream_off, d.stream_size, start, lane_bits,
                                ring + 16 * l, &bad);   /* waits for all copies so far */
    const uint32_t shift = 32 - d.max_len;
    uint4 *o4 = reinterpret_cast<uint4 *>(out + d.out_off + 2 * base) + l;
    uint32_t flags = bad ? 0x80008000u : 0u;   /* the invalid bit of either entry format */

#pragma unroll 2
    for (uint32_t k = 0; k < kfull; k++, kn++, smn += 8 * m, o4 += m) {
        if (kn < kfull) cp_async8(smr + ((kn & (kSmRing - 1)) << 8), smn);
        br_topup(b);
        uint2 s = lds64(smr + ((k & (kSmRing - 1)) << 8));
        if constexpr (kPair) {
            /* 4 two-symbol lookups (room for 2 each), then single lookups where a lane got
             * fewer than 8 symbols; a lookup consumes at most L <= 12 bits, so a refill
             * (>= 32 bits) serves two of them. */
            uint32_t q0 = 0, q1 = 0;
            br_refill(b); uint32_t e0 = br_pair(b, lut, shift, q0, q1), e1 = br_pair(b, lut, shift, q0, q1);
            br_refill(b); uint32_t e2 = br_pair(b, lut, shift, q0, q1), e3 = br_pair(b, lut, shift, q0, q1);
            uint32_t qn = (e0 >> 24) + (e1 >> 24) + (e2 >> 24) + (e3 >> 24);
            flags |= e0 | e1 | e2 | e3;
            while (qn < 64) {   /* an invalid entry adds 128: the step ends, flagged */
                br_refill(b);
                uint32_t e = br_pair(b, qn <= 48 ? lut : lut1, shift, q0, q1);
                qn += e >> 24;
                flags |= e;
            }
            *o4 = make_uint4(join_pair(q0, s.x, 0x5140, 0x1504), join_pair(q0, s.x, 0x7362, 0x3726),
                             join_pair(q1, s.y, 0x5140, 0x1504), join_pair(q1, s.y, 0x7362, 0x3726));
        } else {
            br_refill(b); uint32_t e0 = br_decode(b, lut, shift), e1 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e2 = br_decode(b, lut, shift), e3 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e4 = br_decode(b, lut, shift), e5 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e6 = br_decode(b, lut, shift), e7 = br_decode(b, lut, shift);
            flags |= e0 | e1 | e2 | e3 | e4 | e5 | e6 | e7;
            *o4 = make_uint4(join2(e0, e1, s.x, 0x1100), join2(e2, e3, s.x, 0x3322),
                             join2(e4, e5, s.y, 0x1100), join2(e6, e7, s.y, 0x3322));
        }
    }
    /* The last step: at most one group per lane, possibly short. */
    uint32_t g = kfull * m + l;
    if (g < G) {
        br_topup(b);
        uint16_t *o2 = reinterpret_cast<uint16_t *>(out + d.out_off + 2 * base);
        for (uint32_t i = 8 * g; i < min(8 * g + 8, n); i++) {
            br_refill(b);
            uint32_t e, ex, v = sm[i];
            if constexpr (kPair) {
                uint32_t q0 = 0, q1 = 0;
                e = br_pair(b, lut1, shift, q0, q1);
                ex = (e & 0x7f00) | (e >> 8 & 0x80);   /* x1 back to exp << 7 */
            } else {
                e = br_decode(b, lut, shift);
                ex = e & 0x7f80;
            }
            flags |= e;
            o2[i] = (uint16_t)((v & 0x80) << 8 | ex | (v & 0x7f));
        }
    }
    cp_async_commit_wait<0>();   /* no copy may land after the CTA's shared memory is gone */
    uint32_t consumed = 32 * b.rw - s0 - (b.nbits & 127);
    if (err && ((flags & (kPair ? 0x80000000u : 0x8000u)) || consumed != lane_bits))
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
    if (chunk >= d.n_chunks) return;
    uint32_t lut = (uint32_t)__cvta_generic_to_shared(smem);
    uint32_t ring = lut + (uint32_t)DF11_GPU_LUT_BYTES(h->max_lut_entries) +
                    threadIdx.x / kLanes * kWarpSmem;
    if (d.max_len <= DF11_GPU_PAIR_MAX_LEN)
        decode_chunk<true>(d, chunk, lut, ring, payload, out, err);
    else
        decode_chunk<false>(d, chunk, lut, ring, payload, out, err);
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
