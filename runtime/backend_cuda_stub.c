/* The CUDA backend's constructors in a build without CUDA (CMake compiles this file instead
 * of backend_cuda.c): no device, and a model asked for CUDA fails with a clear status. */
#include "common/error.h"
#include "runtime/backend.h"

df11_status df11i_backend_cuda_create(int device, df11i_backend **out)
{
    *out = NULL;
    return df11i_fail(DF11_ERR_UNSUPPORTED, "this df11 was built without CUDA");
}

int df11i_backend_cuda_available(void) { return 0; }
