/* The backend a runtime suite runs on: the host backend, or CUDA where a GPU suite
 * (tests/test_gpu_runtime*.c, tests/test_gpu_gather.c) includes the host suite with
 * RT_TEST_CUDA defined; how the suite reads back what the backend wrote, buffers in backend
 * memory, and the skip without a GPU. */
#ifndef DF11_TESTS_BACKEND_UNDER_TEST_H
#define DF11_TESTS_BACKEND_UNDER_TEST_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "df11/runtime.h"

#ifdef RT_TEST_CUDA
#include <cuda_runtime_api.h>
#define RT_BACKEND DF11_BACKEND_CUDA
static inline void read_back(void *dst, const void *src, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), cudaSuccess);
}
static inline void *dev_alloc(size_t n)
{
    void *p = NULL;
    ck_assert_int_eq(cudaMalloc(&p, n ? n : 1), cudaSuccess);
    return p;
}
static inline void dev_upload(void *dst, const void *src, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), cudaSuccess);
}
static inline void dev_free(void *p) { cudaFree(p); }
/* Nonzero, with a message, when there is no GPU (main returns 77, CTest's skip); else
 * runs the cases in-process: CUDA, initialised now, does not survive fork(). */
static inline int rt_skip_without_gpu(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("skipping: no CUDA device\n");
        return 1;
    }
    setenv("CK_FORK", "no", 1);
    return 0;
}
#else
#define RT_BACKEND DF11_BACKEND_HOST
static inline void read_back(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static inline void *dev_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}
static inline void dev_upload(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static inline void dev_free(void *p) { free(p); }
static inline int rt_skip_without_gpu(void) { return 0; }
#endif

#endif
