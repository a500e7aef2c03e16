/* C entry point of the GPU dtype conversion (kernels/convert.cu), behind df11_convert
 * (runtime/convert.c). No CUDA types here; streams travel as void *. */
#ifndef DF11_KERNELS_CONVERT_H
#define DF11_KERNELS_CONVERT_H

#include <stddef.h>

#include "df11/file.h"
#include "df11/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* n values at src (device memory) of src_dtype to dst_dtype at dst: BF16 → F32, BF16 →
 * F16 or F32 → BF16 (checked by the caller), with common/fpconv.h's rounding. Asynchronous
 * on `stream`; returns launch errors only. */
df11_status df11i_gpu_convert(const void *src, df11_dtype src_dtype, void *dst,
                              df11_dtype dst_dtype, size_t n, void *stream);

#ifdef __cplusplus
}
#endif
#endif
