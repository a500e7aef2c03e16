/* The GPU dtype conversion (kernels/convert.h): one grid-stride kernel per direction,
 * over common/fpconv.h's scalar functions, which the host path runs too. Never allocates,
 * never synchronizes. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "common/fpconv.h"
#include "kernels/convert.h"
extern "C" {
#include "common/error.h"
}

namespace {

constexpr int kThreads = 256;

/* One thread per value, grid-stride; memory-bound: 2 bytes in and 4 out (BF16 → F32),
 * 2 and 2 (→ F16), 4 and 2 (F32 → BF16). */
template <int kDir>
__global__ void __launch_bounds__(kThreads)
    df11i_convert_kernel(const void *__restrict__ src, void *__restrict__ dst, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        if (kDir == 0) {
            static_cast<uint32_t *>(dst)[i] =
                df11i_bf16_to_f32_bits(static_cast<const uint16_t *>(src)[i]);
        } else if (kDir == 1) {
            static_cast<uint16_t *>(dst)[i] =
                df11i_bf16_to_f16(static_cast<const uint16_t *>(src)[i]);
        } else {
            static_cast<uint16_t *>(dst)[i] =
                df11i_f32_bits_to_bf16(static_cast<const uint32_t *>(src)[i]);
        }
    }
}

} // namespace

extern "C" df11_status df11i_gpu_convert(const void *src, df11_dtype src_dtype, void *dst,
                                         df11_dtype dst_dtype, size_t n, void *stream)
{
    if (n == 0) return DF11_OK;
    const size_t blocks = n / kThreads + 1 < 65536 ? n / kThreads + 1 : 65536;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (src_dtype == DF11_DTYPE_F32)
        df11i_convert_kernel<2><<<(unsigned)blocks, kThreads, 0, s>>>(src, dst, n);
    else if (dst_dtype == DF11_DTYPE_F16)
        df11i_convert_kernel<1><<<(unsigned)blocks, kThreads, 0, s>>>(src, dst, n);
    else
        df11i_convert_kernel<0><<<(unsigned)blocks, kThreads, 0, s>>>(src, dst, n);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "convert launch: %s", cudaGetErrorString(e));
    return DF11_OK;
}
