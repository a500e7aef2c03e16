/* The GPU group decoder: one launch turns a group's payload (docs/FORMAT.md) into its BF16
 * tensors at their 256-byte-aligned offsets, padding zeroed. Host code here only launches;
 * the plan (kernels/plan.c) says which CTA does what. Never allocates, never synchronizes.
 *
 * Work split (decided in one place, df11_gpu_plan_build):
 *   - EXP_HUFFMAN tensor: one warp per chunk, warps_per_cta chunks per CTA; the CTA first
 *     copies its tensor's decode table into shared memory.
 *   - RAW tensor: DF11_RAW_CTA_BYTES bytes per CTA, copied with 16-byte vectors.
 *   - The CTA (warp) that handles a tensor's last piece zero-fills its padding up to the
 *     next 256-byte boundary, so the whole decoded group is written by the kernel.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/decode.h"
extern "C" {
#include "common/error.h"
}

namespace {

constexpr int kLanes = 32;
constexpr int kGroup = 8;       /* elements a lane decodes per step */
constexpr int kSmAhead = 4;     /* steps of sign|mantissa loads kept in flight per lane */

/* A lane's bit reader. The window hi:lo holds the next `nbits` stream bits, left-aligned,
 * zeros below. Words come 16 bytes at a time: q0..q3 are the unread words of the current
 * vector (qn of them), nx is the next vector, loaded one vector ahead so that its latency
 * hides behind ~48 symbols of decoding. */
struct bit_reader {
    uint32_t hi, lo, nbits;
    uint32_t q0, q1, q2, q3, qn;
    uint4 nx;
    const uint4 *vbase;
    uint32_t vi, vlast;   /* index of nx; last vector the reader may touch (clamp) */
    uint32_t words;       /* words moved into the window: consumed = 32 words - off - nbits */
};

__device__ __forceinline__ void prefetch_l1(const void *p)
{
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

__device__ __forceinline__ void br_init(bit_reader &b, const uint8_t *stream,
                                        uint64_t stream_size, uint64_t start_bit)
{
    const uint32_t *w = reinterpret_cast<const uint32_t *>(stream);
    uint64_t wlast = stream_size / 4 - 1, w0 = start_bit >> 5;
    uint32_t off = (uint32_t)start_bit & 31;
    uint32_t a = __ldg(w + min(w0, wlast)), c = __ldg(w + min(w0 + 1, wlast));
    b.vbase = reinterpret_cast<const uint4 *>(stream);
    b.vlast = (uint32_t)((stream_size + 15) / 16 - 1);
    uint32_t qv = (uint32_t)((w0 + 2) >> 2);
    uint32_t p = (uint32_t)(w0 + 2) & 3;
    uint4 q = __ldg(b.vbase + min(qv, b.vlast));
    b.vi = qv + 1;
    b.nx = __ldg(b.vbase + min(b.vi, b.vlast));
    prefetch_l1(b.vbase + min(b.vi + 1, b.vlast));
    if (p >= 2) { q.x = q.z; q.y = q.w; }
    if (p & 1) { q.x = q.y; q.y = q.z; q.z = q.w; }
    b.q0 = q.x; b.q1 = q.y; b.q2 = q.z; b.q3 = q.w; b.qn = 4 - p;
    b.hi = __funnelshift_l(c, a, off);
    b.lo = c << off;
    b.nbits = 64 - off;
    b.words = 2;
}

/* Tops the window up to >= 32 bits. Called with 2..63 bits left (at most 2 symbols of at
 * most 15 bits since the last call), so the shifts stay in 1..31. */
__device__ __forceinline__ void br_refill(bit_reader &b)
{
    if (b.nbits < 32) {
        b.hi |= b.q0 >> b.nbits;
        b.lo |= __funnelshift_r(0u, b.q0, b.nbits);
        b.nbits += 32;
        b.words++;
        b.q0 = b.q1; b.q1 = b.q2; b.q2 = b.q3;
        if (--b.qn == 0) {
            b.q0 = b.nx.x; b.q1 = b.nx.y; b.q2 = b.nx.z; b.q3 = b.nx.w; b.qn = 4;
            b.vi++;
            b.nx = __ldg(b.vbase + min(b.vi, b.vlast));
            /* The warp's scoreboard tracks nx for all lanes at once: a lane reading its
             * (long landed) nx waits for whatever load another lane just issued into it.
             * Prefetching one vector further into L1 keeps that wait at an L1 hit. */
            prefetch_l1(b.vbase + min(b.vi + 1, b.vlast));
        }
    }
}

/* One symbol: a table entry exp << 7 | len (bit 15: no code starts with these bits). */
__device__ __forceinline__ uint32_t br_decode(bit_reader &b, const uint16_t *lut,
                                              uint32_t shift)
{
    uint32_t e = lut[b.hi >> shift];
    b.hi = __funnelshift_l(b.lo, b.hi, e);   /* shift amount = e & 31 = len */
    b.lo = __funnelshift_l(0u, b.lo, e);
    b.nbits -= e & 15;
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

/* One warp decodes chunk `chunk` of tensor d: lane l decodes groups l, l+m, l+2m, ... of 8
 * elements from its own bit stream. Per step the warp reads 8m sm bytes (one 8-byte load
 * per lane) and writes 16m bytes (one 16-byte store per lane); the lane streams add ~L/8
 * bytes... ~0.33 byte per weight of scattered (L1-cached) 16-byte reads. */
__device__ void decode_chunk(const df11_gpu_tensor_desc &d, uint32_t chunk,
                             const uint16_t *lut, const uint8_t *__restrict__ payload,
                             uint8_t *__restrict__ out, uint32_t *err)
{
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

    bit_reader b;
    uint64_t start = (uint64_t)chunks[chunk] * 32 + (x - lane_bits);
    br_init(b, payload + d.stream_off, d.stream_size, start);
    const uint32_t shift = 32 - d.max_len;
    const uint8_t *sm = payload + d.data_off + base;
    uint4 *o4 = reinterpret_cast<uint4 *>(out + d.out_off + 2 * base);
    uint32_t flags = 0;

    uint2 ring[kSmAhead];
#pragma unroll
    for (int j = 0; j < kSmAhead; j++)
        if ((uint32_t)j < kfull)
            ring[j] = __ldg(reinterpret_cast<const uint2 *>(sm + 8 * ((uint64_t)j * m + l)));
    for (uint32_t k = 0; k < kfull; k += kSmAhead) {
#pragma unroll
        for (int j = 0; j < kSmAhead; j++) {
            if (k + j >= kfull) continue;
            uint2 s = ring[j];
            uint32_t kn = k + j + kSmAhead;
            if (kn < kfull)
                ring[j] = __ldg(reinterpret_cast<const uint2 *>(sm + 8 * ((uint64_t)kn * m + l)));
            br_refill(b); uint32_t e0 = br_decode(b, lut, shift), e1 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e2 = br_decode(b, lut, shift), e3 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e4 = br_decode(b, lut, shift), e5 = br_decode(b, lut, shift);
            br_refill(b); uint32_t e6 = br_decode(b, lut, shift), e7 = br_decode(b, lut, shift);
            flags |= e0 | e1 | e2 | e3 | e4 | e5 | e6 | e7;
            o4[(uint64_t)(k + j) * m + l] =
                make_uint4(join2(e0, e1, s.x, 0x1100), join2(e2, e3, s.x, 0x3322),
                           join2(e4, e5, s.y, 0x1100), join2(e6, e7, s.y, 0x3322));
        }
    }
    /* The last step: at most one group per lane, possibly short. */
    uint32_t g = kfull * m + l;
    if (g < G) {
        uint16_t *o2 = reinterpret_cast<uint16_t *>(out + d.out_off + 2 * base);
        for (uint32_t i = 8 * g; i < min(8 * g + 8, n); i++) {
            br_refill(b);
            uint32_t e = br_decode(b, lut, shift), v = sm[i];
            flags |= e;
            o2[i] = (uint16_t)((v & 0x80) << 8 | (e & 0x7f80) | (v & 0x7f));
        }
    }
    uint32_t consumed = 32 * b.words - ((uint32_t)start & 31) - b.nbits;
    if (err && ((flags & 0x8000) || consumed != lane_bits)) atomicOr(err, 1u);
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

/* Grid: plan n_ctas CTAs of 32*warps_per_cta threads; dynamic shared memory holds the
 * largest decode table of the group. */
__global__ void __launch_bounds__(256)
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
    for (uint32_t i = threadIdx.x; i < DF11_GPU_LUT_BYTES(1u << d.max_len) / 16; i += blockDim.x)
        smem[i] = __ldg(lut_src + i);
    __syncthreads();
    uint32_t chunk = piece * (blockDim.x / kLanes) + threadIdx.x / kLanes;
    if (chunk >= d.n_chunks) return;
    decode_chunk(d, chunk, reinterpret_cast<const uint16_t *>(smem), payload, out, err);
    if (chunk == d.n_chunks - 1)
        zero_pad(out, d.out_off + 2 * d.n_elements, threadIdx.x % kLanes, kLanes);
}

}  // namespace

extern "C" df11_status df11_gpu_decode_checked(const void *plan, const void *d_plan,
                                               const void *d_payload, void *d_out,
                                               uint32_t *d_error, void *stream)
{
    if (!plan || !d_plan || !d_payload || !d_out)
        return df11_fail(DF11_ERR_INVALID_ARG, "df11_gpu_decode: NULL argument");
    const df11_gpu_plan_header *h = static_cast<const df11_gpu_plan_header *>(plan);
    if (h->n_ctas == 0) return DF11_OK;
    size_t smem = DF11_GPU_LUT_BYTES(h->max_lut_entries);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(df11_decode_kernel,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess)
            return df11_fail(DF11_ERR_DEVICE, "decode: %zu bytes of shared memory: %s", smem,
                             cudaGetErrorString(e));
    }
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
