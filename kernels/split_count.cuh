/* The counts behind the fused matmul kernels' split sums. In kernels/decode.cu's Huffman
 * kernel the pieces of one output are written by several warps, each adds 1 to a semaphore
 * word once its piece is written, and the one that sees the last count sums the pieces in a
 * fixed order (split_count); in kernels/fused_gemm.cu and kernels/fused_matmul.cu (past batch
 * 8; up to it the summing CTA polls the pieces themselves, with no count) the summing CTA is
 * fixed and waits for the others' counts instead (split_signal, split_wait). The
 * pattern is CUTLASS's semaphore: a barrier orders the group's writes before one thread's
 * release, and a barrier after that thread's acquire orders the group's reads after it (a
 * shuffle orders no memory: the barrier is needed). One acquire-release RMW at GPU scope
 * does both: one MEMBAR.ALL.GPU and one L1 invalidation in one thread, where a
 * __threadfence() in every thread cost a MEMBAR.SC.GPU and an L1 invalidation a warp, and
 * again in the last: the end of a launch, where this runs, is a chain of such latencies.
 * Where a split's pieces are the CTAs of one cluster, none of this (kernels/fused_gemm.cu's
 * cluster_sum). CUDA C++, device code. */
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

/* The wgmma kernel's split sums (kernels/fused_gemm.cu) and the mma.sync kernel's past batch
 * 8 have one CTA sum each output, which waits for the others' counts instead of being the last
 * to count: the others count with split_signal (a release: the group's barrier before it
 * orders its writes), without waiting for a value, and the summing CTA's thread waits with
 * split_wait (an acquire, before a barrier of its group) until the word reaches n. */
__device__ __forceinline__ void split_signal(unsigned *sem)
{
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(sem) : "memory");
}
__device__ __forceinline__ void split_wait(const unsigned *sem, unsigned n)
{
    for (;;) {
        unsigned v;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(sem) : "memory");
        if (v == n) return;
        __nanosleep(32);
    }
}

} // namespace df11i_fused

#endif
