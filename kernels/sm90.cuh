/* Hopper (sm_90) building blocks shared by the wgmma kernel (kernels/fused_gemm.cu) and the
 * prefill GEMM probe (bench/probes/prefill_gemm.cu): shared-memory addresses and wgmma's
 * matrix descriptors, wgmma's fences and groups, mbarriers, and the thread-block cluster.
 * Device code only, each a PTX instruction or two; callers compile them for sm_90a where they
 * run them. Everything is in namespace df11i_sm90.
 */
#ifndef DF11_KERNELS_SM90_CUH
#define DF11_KERNELS_SM90_CUH

#include <cuda_runtime.h>
#include <stdint.h>

namespace df11i_sm90 {

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* wgmma's shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle: rows
 * of 128 bytes (64 BF16), 8-row atoms 1024 bytes apart (the stride offset), the leading
 * offset unused; the start address moves by 32 bytes a k16 slice. */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t saddr)
{
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) |
           (1ull << 62);
}

/* What a byte offset adds to that descriptor (a multiple of 16, within the shared window). */
__host__ __device__ constexpr uint64_t desc_offset(uint32_t bytes) { return bytes >> 4; }

__device__ __forceinline__ void wgmma_fence()
{
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int K> __device__ __forceinline__ void wgmma_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(K) : "memory");
}

/* Shared-memory writes of the generic proxy (st.shared) made visible to the async proxy
 * (wgmma's and TMA's reads). */
__device__ __forceinline__ void fence_proxy_async()
{
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity)
{
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(smem_u32(bar)), "r"(parity)
                     : "memory");
    } while (!done);
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

/* Every thread of the cluster's CTAs that has not exited gets here: writes before it, to any
 * of their shared memories, are seen after it. */
__device__ __forceinline__ void cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release;\n\tbarrier.cluster.wait.acquire;" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_rank()
{
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

} // namespace df11i_sm90

#endif
