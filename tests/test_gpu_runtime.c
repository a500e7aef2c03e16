/* The runtime scenarios of tests/test_runtime.c on the CUDA backend (exits 77 without a
 * GPU). Tensor contents are read back with cudaMemcpy after the legacy default stream
 * (the NULL stream passed to acquire) has waited on the decode. */
#define RT_TEST_CUDA 1
#include "tests/test_runtime.c"
