/* tests/test_convert.c with df11_convert on the CUDA backend: the kernels give the host
 * functions' bits on all 65536 BF16 values and on random F32 values (exits 77 without a
 * GPU). */
#define RT_TEST_CUDA 1
#include "tests/test_convert.c"
