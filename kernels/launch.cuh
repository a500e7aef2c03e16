/* One launch of a fused matmul kernel on a stream (kernels/fused_matmul.cu, kernels/fused_gemm.cu,
 * the Huffman one in kernels/decode.cu), in clusters where asked, and programmatic where asked:
 * the kernel may then be scheduled while the one before it on the stream finishes, and must
 * griddepcontrol.wait before it reads what that one writes. CUDA C++, host code.
 */
#ifndef DF11_KERNELS_LAUNCH_CUH
#define DF11_KERNELS_LAUNCH_CUH

#include <cuda_runtime.h>

namespace df11i_fused {

// The launch attribute for clusters of n CTAs along x (launches, occupancy queries).
inline cudaLaunchAttribute cluster_attribute(unsigned n)
{
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = n;
    at.val.clusterDim.y = at.val.clusterDim.z = 1;
    return at;
}

// kernel<<<grid, block, smem, stream>>>(args...) in clusters of `cluster` CTAs (1: none); the
// launch's error, else cudaGetLastError after it (which may also report an earlier call's
// error left on the thread, as a <<<>>> launch checked the same way would).
template <typename... Params, typename... Args>
cudaError_t launch_clustered(void (*kernel)(Params...), unsigned grid, unsigned cluster,
                             unsigned block, size_t smem, void *stream, bool programmatic,
                             Args... args)
{
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (programmatic) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster > 1) at[n++] = cluster_attribute(cluster);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(block);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = static_cast<cudaStream_t>(stream);
    cfg.attrs = at;
    cfg.numAttrs = n;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    return e == cudaSuccess ? cudaGetLastError() : e;
}

// The same without clusters.
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smem,
                          void *stream, bool programmatic, Args... args)
{
    return launch_clustered(kernel, grid, 1, block, smem, stream, programmatic, args...);
}

} // namespace df11i_fused

#endif
