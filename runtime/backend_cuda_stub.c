/* The CUDA entry points (runtime/backend.h) in a build without CUDA (CMake compiles this
 * file instead of backend_cuda.c): no device, and a model or a conversion asked for CUDA
 * fails with a clear status. */
#include "common/error.h"
#include "runtime/backend.h"

df11_status df11i_backend_cuda_create(int device, df11i_backend **out)
{
    *out = NULL;
    return df11i_fail(DF11_ERR_UNSUPPORTED, "this df11 was built without CUDA");
}

int df11i_backend_cuda_available(void) { return 0; }

df11_status df11i_backend_cuda_convert(const void *src, df11_dtype src_dtype, void *dst,
                                       df11_dtype dst_dtype, size_t n, void *stream)
{
    return df11i_fail(DF11_ERR_UNSUPPORTED, "df11_convert: this df11 was built without CUDA");
}
