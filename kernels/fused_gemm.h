/* The wgmma path of the fused matmul (kernels/fused_gemm.cu): internal to kernels/, called by
 * df11i_fused_matmul (kernels/matmul.h) for batches past DF11_FUSED_MAX_BATCH. No CUDA types;
 * streams travel as void * (a cudaStream_t). */
#ifndef DF11_KERNELS_FUSED_GEMM_H
#define DF11_KERNELS_FUSED_GEMM_H

#include <stdint.h>

#include "codec/fixed.h"
#include "kernels/matmul.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device runs the wgmma kernel: compute capability 9.0 and sm_90a code
 * in the build (CMAKE_CUDA_ARCHITECTURES with 90a), else 0. */
int df11i_fused_gemm_supported(void);

/* 1 when it takes an x of `cols` columns that is 16-byte aligned: supported, and cols % 8 ==
 * 0 (its x rows are read 16 bytes at a time). */
int df11i_fused_gemm_takes_cols(uint64_t cols);

/* 1 when it takes this x: df11i_fused_gemm_takes_cols, and x 16-byte aligned. */
int df11i_fused_gemm_takes(const void *x, uint64_t cols);

/* Bytes of workspace a launch over parts of this geometry's K (any rows, any number of
 * parts) needs at any batch: the full grid's partials, so the parts do not matter (0 where
 * unsupported, or where K fits one tile, so that no range cuts a row block); twice the larger
 * of the semaphores at its start and the partials of cut row blocks at its end, as
 * df11i_fused_matmul's. */
df11_status df11i_fused_gemm_workspace(const df11i_fixed_geom *geom, uint64_t *bytes);

/* df11i_fused_matmul's product for any batch, the parts checked by it and their geometries
 * in geom (df11i_fixed_geometry, in the int range); pdl as df11i_fused_matmul's. */
df11_status df11i_fused_gemm(const df11i_fused_part *parts, uint32_t n_parts,
                             const df11i_fixed_geom *geom, const void *x, uint32_t batch, void *y,
                             uint32_t ldy, int y_bf16, void *ws, uint64_t ws_size,
                             uint32_t *d_error, int pdl, void *stream);

/* Tests only: launch every product over `ctas` CTAs (at most the device's full grid; 0, the
 * default: the kernel's own choice), so that ranges cut units and chain them on any GPU, and
 * sum them through the L2 (never in clusters). Returns the previous value. */
uint32_t df11i_fused_gemm_test_grid(uint32_t ctas);

/* Tests and benchmarks only. on = 0: every split unit summed through the L2 (semaphores and
 * partials in the workspace); 1, the default: where each unit's pieces can be one cluster's
 * CTAs and the clusters all fit at once, the launch is in clusters and sums them in the CTAs'
 * shared memory. The same y either way. (The mma.sync kernel sums through the L2 always: in
 * clusters it measured slower, bench/RESULTS.md, eighteenth session.) Returns the previous
 * value. */
int df11i_fused_gemm_test_clusters(int on);

/* Tests only: launches in clusters so far, in this process. */
uint64_t df11i_fused_gemm_cluster_launches(void);

#ifdef __cplusplus
}
#endif
#endif
