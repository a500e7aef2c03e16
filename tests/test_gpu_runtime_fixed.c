/* tests/test_runtime_fixed.c on the CUDA backend: fixed-codec groups (mixed with Huffman
 * and raw tensors) through the GPU arena decode (exits 77 without a GPU). */
#define RT_TEST_CUDA 1
#include "tests/test_runtime_fixed.c"
