/* The count behind the fused matmul kernels' split sums (kernels/fused_matmul.cu,
 * kernels/fused_gemm.cu, kernels/decode.cu's Huffman kernel): the pieces of one output are
 * written by several warps or CTAs, each adds 1 to a semaphore word once its piece is
 * written, and the one that sees the last count sums the pieces in a fixed order. The
 * pattern is CUTLASS's semaphore: a barrier orders the group's writes before one thread's
 * release, and a barrier after that thread's acquire orders the group's reads after it (a
 * shuffle orders no memory: the barrier is needed). One acquire-release RMW at GPU scope
 * does both: one MEMBAR.ALL.GPU and one L1 invalidation in one thread, where a
 * __threadfence() in every thread cost a MEMBAR.SC.GPU and an L1 invalidation a warp, and
 * again in the last: the end of a launch, where this runs, is a chain of such latencies.
 * CUDA C++, device code. */
#ifndef DF11_KERNELS_SPLIT_COUNT_CUH
#define DF11_KERNELS_SPLIT_COUNT_CUH

#include <cuda_runtime.h>

namespace df11i_fused {

/* *sem += 1 with acquire-release semantics at GPU scope; returns the old value. Called by
 * one thread of the group, between two barriers of the group (see the top). */
__device__ __forceinline__ unsigned split_count(unsigned *sem)
{
    unsigned old;
    asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;" : "=r"(old) : "l"(sem) : "memory");
    return old;
}

} // namespace df11i_fused

#endif
