/* The probes' checks on CUDA and cuBLAS calls: a failed call prints where and why and ends the
 * probe (a probe is a one-off measurement, not a library: it has nothing to clean up). */
#ifndef DF11_BENCH_PROBES_CHECK_CUH
#define DF11_BENCH_PROBES_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CB(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d %s: cublas %d\n", __FILE__, __LINE__, #x, (int)s_);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
