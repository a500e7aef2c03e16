/* The GPU row decode's entry point (kernels/gather.h): splits the ids into launches of
 * DF11_GATHER_IDS and picks the kernel by W's form; and the kernel for W already decoded
 * (a resident group, a raw tensor): a copy. Never allocates, never synchronizes. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/gather.h"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

namespace {

constexpr int kThreads = 256;

/* One thread per output weight, grid-stride: out[i][c] = W[row i][c], 2 bytes in, 2 or 4
 * out. */
__global__ void __launch_bounds__(kThreads)
    df11i_rows_bf16_kernel(const uint16_t *__restrict__ w, uint64_t cols, df11i_gpu_rows r,
                           void *__restrict__ out)
{
    const uint64_t total = (uint64_t)r.n * cols;
    for (uint64_t x = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; x < total;
         x += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t i = x / cols, c = x % cols;
        const uint64_t row = r.by_id ? r.id[i] : r.first + i;
        const uint16_t v = w[row * cols + c];
        if (r.out_f32)
            static_cast<float *>(out)[x] = __uint_as_float((uint32_t)v << 16);
        else
            static_cast<uint16_t *>(out)[x] = v;
    }
}

df11_status rows_bf16(const void *w, uint64_t cols, const df11i_gpu_rows *r, void *out,
                      void *stream)
{
    const uint64_t total = (uint64_t)r->n * cols;
    const uint64_t blocks = total / kThreads + 1 < 65536 ? total / kThreads + 1 : 65536;
    df11i_rows_bf16_kernel<<<(unsigned)blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const uint16_t *>(w), cols, *r, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "rows copy launch: %s", cudaGetErrorString(e));
    return DF11_OK;
}

} // namespace

extern "C" df11_status df11i_gpu_rows_decode(const df11i_gpu_tensor_desc *d, const void *d_plan,
                                             const void *d_payload, const void *w, uint64_t rows,
                                             uint64_t cols, const uint32_t *ids, uint32_t first,
                                             uint32_t n, void *out, int out_f32, void *stream)
{
    if ((!d && !w) || (d && (!d_plan || !d_payload)) || !out || !cols)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_rows_decode: bad argument");
    if (d && d->codec != DF11_CODEC_EXP_HUFFMAN && !df11i_codec_is_fixed((int)d->codec))
        return df11i_fail(DF11_ERR_UNSUPPORTED, "rows decode: codec %u", d->codec);
    if (!ids && (uint64_t)first + n > rows)
        return df11i_fail(DF11_ERR_INVALID_ARG, "rows decode: rows %u + %u of %llu", first, n,
                          (unsigned long long)rows);
    static thread_local df11i_gpu_rows r; /* 3 KiB: kept off the caller's stack */
    const uint64_t row_bytes = cols * (out_f32 ? 4 : 2);
    for (uint32_t at = 0; at < n;) {
        const uint32_t count = ids ? (n - at < DF11_GATHER_IDS ? n - at : DF11_GATHER_IDS) : n;
        r.n = count;
        r.first = first + at;
        r.by_id = ids != NULL;
        r.out_f32 = out_f32 != 0;
        for (uint32_t i = 0; ids && i < count; i++) r.id[i] = ids[at + i];
        void *o = static_cast<uint8_t *>(out) + at * row_bytes;
        df11_status st = !d ? rows_bf16(w, cols, &r, o, stream)
                         : d->codec == DF11_CODEC_EXP_HUFFMAN
                             ? df11i_gpu_rows_huffman(d, d_plan, d_payload, cols, &r, o, stream)
                             : df11i_gpu_rows_fixed(d, d_payload, &r, o, stream);
        if (st != DF11_OK) return st;
        at += count;
    }
    return DF11_OK;
}
