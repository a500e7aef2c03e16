/* A value per CUDA device, computed once by the first host thread that asks for it: the
 * fused matmul kernels' launch geometry (SMs, CTAs an SM), which kernels/fused_matmul.cu and
 * kernels/fused_gemm.cu look up at every launch. Threads racing on a device's first query
 * compute the same value; a state word stored with release and loaded with acquire hands it
 * to the others. CUDA C++, host code. */
#ifndef DF11_KERNELS_DEVICE_CACHE_CUH
#define DF11_KERNELS_DEVICE_CACHE_CUH

#include <cuda_runtime.h>

#include <atomic>

extern "C" {
#include "common/error.h"
}

namespace df11i_fused {

template <class T> class PerDevice {
  public:
    static constexpr int kMaxDevices = 64;

    /* The current device's value into *out, T{} where it is unusable. query(dev, &value,
     * &usable) -> df11_status computes it the first time (a failure is not cached).
     * DF11_ERR_UNSUPPORTED for a device index past kMaxDevices. `who` names the caller in
     * messages. */
    template <class Query> df11_status get(const char *who, T *out, Query &&query)
    {
        *out = T{};
        int dev = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "%s: cudaGetDevice: %s", who, cudaGetErrorString(e));
        if (dev < 0 || dev >= kMaxDevices)
            return df11i_fail(DF11_ERR_UNSUPPORTED, "%s: device %d", who, dev);
        int st = state_[dev].load(std::memory_order_acquire);
        if (st == 0) {
            T v{};
            bool usable = false;
            df11_status s = query(dev, &v, &usable);
            if (s != DF11_OK) return s;
            value_[dev] = v; /* the same value from every thread that gets here */
            st = usable ? 1 : 2;
            state_[dev].store(st, std::memory_order_release);
        }
        if (st == 1) *out = value_[dev];
        return DF11_OK;
    }

  private:
    std::atomic<int> state_[kMaxDevices] = {}; /* 0 unknown, 1 usable, 2 unusable */
    T value_[kMaxDevices] = {};
};

} // namespace df11i_fused

#endif
