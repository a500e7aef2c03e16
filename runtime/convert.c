/* The dtype conversions of the public API: the host functions over common/fpconv.h, and
 * df11_convert, which checks its arguments and runs them on the host or enqueues the GPU
 * kernel (through runtime/backend.h: kernels/convert.h in a CUDA build). Holds no state and needs no model. */
#include <string.h>

#include "common/error.h"
#include "common/fpconv.h"
#include "df11/runtime.h"
#include "runtime/backend.h"

static df11_status check(const void *src, const void *dst, size_t n, const char *fn)
{
    if (n && (!src || !dst)) return df11i_fail(DF11_ERR_INVALID_ARG, "%s: NULL buffer", fn);
    return DF11_OK;
}

df11_status df11_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    df11_status s = check(src, dst, n, "df11_bf16_to_f32");
    if (s != DF11_OK) return s;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = df11i_bf16_to_f32_bits(src[i]);
        memcpy(&dst[i], &u, 4);
    }
    return DF11_OK;
}

df11_status df11_bf16_to_f16(const uint16_t *src, uint16_t *dst, size_t n)
{
    df11_status s = check(src, dst, n, "df11_bf16_to_f16");
    if (s != DF11_OK) return s;
    for (size_t i = 0; i < n; i++) dst[i] = df11i_bf16_to_f16(src[i]);
    return DF11_OK;
}

df11_status df11_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
    df11_status s = check(src, dst, n, "df11_f32_to_bf16");
    if (s != DF11_OK) return s;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[i] = df11i_f32_bits_to_bf16(u);
    }
    return DF11_OK;
}

df11_status df11_convert(df11_backend_kind backend, const void *src, df11_dtype src_dtype,
                         void *dst, df11_dtype dst_dtype, size_t n, df11_stream stream)
{
    const int bf16_f32 = src_dtype == DF11_DTYPE_BF16 && dst_dtype == DF11_DTYPE_F32;
    const int bf16_f16 = src_dtype == DF11_DTYPE_BF16 && dst_dtype == DF11_DTYPE_F16;
    const int f32_bf16 = src_dtype == DF11_DTYPE_F32 && dst_dtype == DF11_DTYPE_BF16;
    if (!bf16_f32 && !bf16_f16 && !f32_bf16)
        return df11i_fail(DF11_ERR_UNSUPPORTED,
                          "df11_convert: %s to %s (BF16 to F32 or F16, "
                          "F32 to BF16 only)",
                          df11_dtype_name(src_dtype), df11_dtype_name(dst_dtype));
    df11_status s = check(src, dst, n, "df11_convert");
    if (s != DF11_OK) return s;
    if (backend == DF11_BACKEND_HOST) {
        if (stream)
            return df11i_fail(DF11_ERR_INVALID_ARG,
                              "df11_convert: the host backend takes the NULL stream");
        return bf16_f32   ? df11_bf16_to_f32(src, dst, n)
               : bf16_f16 ? df11_bf16_to_f16(src, dst, n)
                          : df11_f32_to_bf16(src, dst, n);
    }
    if (backend != DF11_BACKEND_CUDA)
        return df11i_fail(DF11_ERR_INVALID_ARG,
                          "df11_convert: backend %d (DF11_BACKEND_HOST or DF11_BACKEND_CUDA)",
                          (int)backend);
    return df11i_backend_cuda_convert(src, src_dtype, dst, dst_dtype, n, stream);
}
