/* The backend a runtime suite runs on: the host backend, or CUDA where a GPU suite
 * (tests/test_gpu_runtime*.c) includes the host suite with RT_TEST_CUDA defined; and how
 * the suite reads back what the backend wrote. */
#ifndef DF11_TESTS_BACKEND_UNDER_TEST_H
#define DF11_TESTS_BACKEND_UNDER_TEST_H

#include <check.h>
#include <string.h>

#include "df11/runtime.h"

#ifdef RT_TEST_CUDA
#include <cuda_runtime_api.h>
#define RT_BACKEND DF11_BACKEND_CUDA
static void read_back(void *dst, const void *src, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), cudaSuccess);
}
#else
#define RT_BACKEND DF11_BACKEND_HOST
static void read_back(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
#endif

#endif
