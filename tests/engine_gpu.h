/* For the suites that run the example engine's CUDA kernels alone (tests/test_gpu_attention.c,
 * tests/test_gpu_rmsnorm.c): whether a GPU is there, and Check set up to use it. */
#ifndef DF11_TESTS_ENGINE_GPU_H
#define DF11_TESTS_ENGINE_GPU_H

#include <stdio.h>
#include <stdlib.h>

#include "examples/run/dfl.h"

/* 0 (the suite exits 77, skipped) without a GPU. Otherwise 1, with Check's fork per test
 * turned off: CUDA does not survive a fork after dfl_gpu_mem_info initialized it. */
static inline int engine_gpu_ready(void)
{
    uint64_t free_b, total_b;
    if (dfl_gpu_mem_info(&free_b, &total_b) != 0) {
        fprintf(stderr, "no GPU: skipped\n");
        return 0;
    }
    setenv("CK_FORK", "no", 1);
    return 1;
}

#endif
