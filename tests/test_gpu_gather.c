/* tests/test_gather.c on the CUDA backend: the row kernels of each codec bit-exact against
 * the source, the COMPRESSED policy, and the matmul op's row slices (decode + cuBLAS per
 * slice) within the fp32 bound of an fp64 reference (exits 77 without a GPU). */
#define RT_TEST_CUDA 1
#include "tests/test_gather.c"
