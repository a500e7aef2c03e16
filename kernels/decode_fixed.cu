/* The GPU decoder of fixed-code tensors (codec/fixed.h, docs/FORMAT.md "Fixed-code
 * tensors") into the arena: row-major BF16, as the CPU reference df11i_fixed_decode writes
 * it; and the fixed-code row decode of kernels/gather.h (the same tile decoder, keeping
 * only the rows asked for). Written to be simple and correct, not fast (docs/KERNELS.md):
 * the fused matmul kernels are where this code is meant to be consumed; the arena path
 * only has to work.
 * Host code here only launches; the plan (kernels/plan.c) validated every section.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/decode.h"
#include "kernels/gather.h"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

namespace {

constexpr int kWarps = 4; /* warps (tiles) per CTA */

/* Code of pair p's low (hi = 0) or high (hi = 1) weight from a lane's step words (a, b, c). */
__device__ __forceinline__ uint32_t code_of(const uint32_t w[3], uint32_t p, uint32_t hi)
{
    if (p < 15) return w[p % 3] >> (3 * (p / 3) + 16 * hi) & 7u;
    uint32_t c = 0;
    for (uint32_t k = 0; k < 3; k++) c |= (w[k] >> (15 + 16 * hi) & 1u) << k;
    return c;
}

/* One warp decodes tile `tile` (up to 4 steps of 16 rows x 64 columns); lane l decodes
 * its 32 weights of each step: the 16 sm bytes of each half at 16 l, the code words of its
 * lane, and its escapes, which start at the tile's list offset plus the escapes of the
 * lanes below it (one warp prefix sum of popcounts). Escapes of a step are taken from the
 * highest mask bit down, so the escape of bit f is the one after the popcount of the bits
 * above f. Bytes moved: 1 sm byte + 3/8 code byte in, 2 bytes out per weight. Each
 * weight goes to store(row, col, bf16), padding rows and columns included (the store
 * drops what it does not want); every lane of the warp must take part. */
template <class Store>
__device__ __forceinline__ void decode_tile(const df11i_gpu_tensor_desc &d,
                                            const uint8_t *__restrict__ payload, uint64_t tile,
                                            uint32_t *err, const Store &store)
{
    const uint32_t lane = threadIdx.x % 32;
    const uint64_t steps = (d.cols + 63) / 64, tiles = (steps + 3) / 4;
    const uint64_t s = tile / tiles, t = tile % tiles;
    const uint32_t n_steps = (uint32_t)(t + 1 == tiles ? steps - 4 * t : 4);
    const uint64_t strip_code_bytes =
        ((tiles - 1) * df11i_fixed_tile_vecs(4) + df11i_fixed_tile_vecs(steps - 4 * (tiles - 1))) *
        512;
    const uint8_t *codes =
        payload + d.stream_off + s * strip_code_bytes + t * df11i_fixed_tile_vecs(4) * 512;
    const uint32_t *exc_off = reinterpret_cast<const uint32_t *>(payload + d.chunks_off);
    const uint8_t *exc = payload + d.lanes_off, *base = payload + d.base_off;

    uint32_t w[4][3], n = 0;
    for (uint32_t k = 0; k < n_steps; k++) {
        for (uint32_t x = 0; x < 3; x++) {
            uint32_t i = 3 * k + x;
            w[k][x] = *reinterpret_cast<const uint32_t *>(codes + ((i / 4) * 32 + lane) * 16 +
                                                          (i % 4) * 4);
        }
        n += __popc(df11i_fixed_escape_mask(w[k][0], w[k][1], w[k][2]));
    }
    uint32_t incl = n;
    for (int o = 1; o < 32; o *= 2) {
        uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
        if ((int)lane >= o) incl += v;
    }
    uint64_t at = (uint64_t)exc_off[tile] + (incl - n);
    const uint64_t end = exc_off[tile + 1];

    for (uint32_t k = 0; k < n_steps; k++) {
        const uint64_t g = 4 * t + k;
        const uint32_t m = df11i_fixed_escape_mask(w[k][0], w[k][1], w[k][2]);
        for (uint32_t h = 0; h < 2; h++) {
            const uint4 v = *reinterpret_cast<const uint4 *>(
                payload + d.data_off + ((s * steps + g) * 2 + h) * 512 + 16 * lane);
            const uint32_t sm4[4] = { v.x, v.y, v.z, v.w };
            for (uint32_t j = 0; j < 16; j++) {
                const uint64_t row = 16 * s + lane / 4 + 8 * (j >= 8);
                const uint64_t col = 64 * g + 32 * h + 8 * (lane % 4) + (j % 8);
                const uint32_t p = 8 * h + 2 * (j / 4) + (j % 4) / 2, hi = j % 2, f = p + 16 * hi;
                uint32_t e = (base[row] + code_of(w[k], p, hi)) & 0xffu;
                if (m >> f & 1u) {
                    const uint64_t i = at + __popc((uint32_t)((uint64_t)m >> (f + 1)));
                    if (i < end)
                        e = exc[i];
                    else if (err)
                        atomicOr(err, 1u);
                }
                const uint32_t sm = sm4[j / 4] >> (8 * (j % 4)) & 0xffu;
                store(row, col, (uint16_t)((sm & 0x80u) << 8 | e << 7 | (sm & 0x7fu)));
            }
        }
        at += __popc(m);
    }
}

/* The arena decode: a warp per tile, the tensor row-major at out_off; CTA 0 also zeroes
 * the tensor's padding up to its 256-byte-aligned end. */
__global__ void __launch_bounds__(32 * kWarps)
    df11i_fixed_kernel(df11i_gpu_tensor_desc d, const uint8_t *__restrict__ payload,
                       uint8_t *__restrict__ out, uint32_t *err)
{
    const uint64_t nbytes = 2 * d.rows * d.cols, pad_end = (nbytes + 255) / 256 * 256;
    if (blockIdx.x == 0)
        for (uint64_t i = nbytes + threadIdx.x; i < pad_end; i += blockDim.x)
            out[d.out_off + i] = 0;
    const uint64_t tile = (uint64_t)blockIdx.x * kWarps + threadIdx.x / 32;
    if (tile >= d.n_chunks) return; /* whole warps */
    uint16_t *o16 = reinterpret_cast<uint16_t *>(out + d.out_off);
    decode_tile(d, payload, tile, err, [&](uint64_t row, uint64_t col, uint16_t v) {
        if (row < d.rows && col < d.cols) o16[row * d.cols + col] = v;
    });
}

/* The row decode (kernels/gather.h): warp w decodes one tile of a strip holding wanted
 * rows and keeps only those rows' weights. By id: out row i = w / tiles is W row r.id[i],
 * from tile w % tiles of its strip (15 of a strip's 16 rows are decoded for nothing: the
 * price of reading a row alone). A range: the strips holding rows first .. first + n - 1,
 * tile by tile, out row = W row - first. */
__global__ void __launch_bounds__(32 * kWarps)
    df11i_fixed_rows_kernel(df11i_gpu_tensor_desc d, const uint8_t *__restrict__ payload,
                            df11i_gpu_rows r, void *__restrict__ out)
{
    const uint64_t w = (uint64_t)blockIdx.x * kWarps + threadIdx.x / 32;
    const uint64_t tiles = ((d.cols + 63) / 64 + 3) / 4;
    uint64_t tile, lo, hi, dst; /* W rows [lo, hi) to out rows dst.. */
    if (r.by_id) {
        const uint64_t i = w / tiles;
        if (i >= r.n) return; /* whole warps */
        lo = r.id[i];
        hi = lo + 1;
        dst = i;
        tile = lo / 16 * tiles + w % tiles;
    } else {
        lo = r.first;
        hi = lo + r.n;
        dst = 0;
        tile = lo / 16 * tiles + w;
        if (tile >= (hi + 15) / 16 * tiles) return;
    }
    const uint32_t f32 = r.out_f32;
    decode_tile(d, payload, tile, nullptr, [&](uint64_t row, uint64_t col, uint16_t v) {
        if (row < lo || row >= hi || col >= d.cols) return;
        const uint64_t at = (row - lo + dst) * d.cols + col;
        if (f32)
            static_cast<float *>(out)[at] = __uint_as_float((uint32_t)v << 16);
        else
            static_cast<uint16_t *>(out)[at] = v;
    });
}

} // namespace

extern "C" df11_status df11i_gpu_decode_fixed(const df11i_gpu_tensor_desc *d, const void *d_payload,
                                              void *d_out, uint32_t *d_error, void *stream)
{
    if (!d || !d_payload || !d_out)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_decode_fixed: NULL argument");
    const uint64_t blocks = d->n_chunks ? (d->n_chunks + kWarps - 1) / kWarps : 1;
    df11i_fixed_kernel<<<(unsigned)blocks, 32 * kWarps, 0, static_cast<cudaStream_t>(stream)>>>(
        *d, static_cast<const uint8_t *>(d_payload), static_cast<uint8_t *>(d_out), d_error);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fixed decode launch (%llu CTAs): %s",
                          (unsigned long long)blocks, cudaGetErrorString(e));
    return DF11_OK;
}

extern "C" df11_status df11i_gpu_rows_fixed(const df11i_gpu_tensor_desc *d, const void *d_payload,
                                            const df11i_gpu_rows *r, void *out, void *stream)
{
    if (!d || !d_payload || !r || !out || d->codec != DF11_CODEC_EXP_FIXED || !d->cols)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_rows_fixed: bad argument");
    if (r->n == 0) return DF11_OK;
    const uint64_t tiles = ((d->cols + 63) / 64 + 3) / 4;
    const uint64_t warps = r->by_id
                               ? (uint64_t)r->n * tiles
                               : (((uint64_t)r->first + r->n + 15) / 16 - r->first / 16) * tiles;
    const uint64_t blocks = (warps + kWarps - 1) / kWarps;
    if (blocks > INT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "fixed rows decode: %llu CTAs",
                          (unsigned long long)blocks);
    df11i_fixed_rows_kernel<<<(unsigned)blocks, 32 * kWarps, 0,
                              static_cast<cudaStream_t>(stream)>>>(
        *d, static_cast<const uint8_t *>(d_payload), *r, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fixed rows decode launch (%llu CTAs): %s",
                          (unsigned long long)blocks, cudaGetErrorString(e));
    return DF11_OK;
}
