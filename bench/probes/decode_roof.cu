// Memory-only probe of the GPU decoder's traffic (docs/KERNELS.md, bench/RESULTS.md): per weight
// 1 byte of sign|mantissa and ~0.33 byte of stream read, 2 bytes written, nothing decoded.
// It times several access patterns against a device-to-device copy in the same process:
// which weights a warp handles per step (chunked, interleaved per CTA or across the tensor),
// how each lane reads its stream (16, 32 or 64 bytes at a time, or coalesced across the
// warp), L2 prefetch hints and streaming stores. Not part of the build:
//     nvcc -arch=sm_90 -O3 -o decode_roof bench/probes/decode_roof.cu && ./decode_roof
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>
#include <vector>
constexpr uint64_t N = 218103808ull, CH = 65536, NC = N / CH; // 3328 chunks
enum { CHUNKED = 0, CTA_IL = 1, FULL_IL = 2 };
template <int MODE, bool CS>
__global__ void __launch_bounds__(1024) roof(const uint8_t *sm, const uint4 *st, uint4 *out)
{
    uint32_t wic = threadIdx.x / 32, W = blockDim.x / 32, l = threadIdx.x % 32;
    uint32_t warp = blockIdx.x * W + wic;
    if (warp >= NC) return;
    const uint4 *sv = st + (uint64_t)warp * (CH / 3 / 16) + l * (CH / 3 / 16 / 32);
    uint32_t acc = 0;
#pragma unroll 8
    for (int k = 0; k < 256; k++) {
        uint64_t row; // 256-weight row this warp handles at step k
        if (MODE == CHUNKED)
            row = (uint64_t)warp * 256 + k;
        else if (MODE == CTA_IL)
            row = (uint64_t)blockIdx.x * W * 256 + (uint64_t)k * W + wic;
        else
            row = (uint64_t)k * NC + warp;
        uint2 v = __ldg(reinterpret_cast<const uint2 *>(sm + row * 256) + l);
        if (k % 6 == 0) {
            uint4 w = __ldg(sv + k / 6);
            acc ^= w.x ^ w.w;
        }
        uint4 o = make_uint4(v.x ^ acc, v.y, v.x, v.y);
        if (CS)
            __stcs(out + row * 32 + l, o);
        else
            out[row * 32 + l] = o;
    }
}

// SV: 0 no stream reads, 1 16 B/6 steps per lane, 2 32 B/12 steps, 3 64 B/24 steps, 4 warp-coalesced 16 B/6 steps
template <int SV, bool CS, bool SPREAD>
__global__ void __launch_bounds__(1024) roofs(const uint8_t *sm, const uint4 *st, uint4 *out)
{
    uint32_t wic = threadIdx.x / 32, W = blockDim.x / 32, l = threadIdx.x % 32;
    uint32_t warp = SPREAD ? wic * gridDim.x + blockIdx.x : blockIdx.x * W + wic;
    if (warp >= NC) return;
    const uint4 *sv = st + (uint64_t)warp * 1408 + (SV == 4 ? l : l * 44);
    uint32_t acc = 0;
#pragma unroll 8
    for (int k = 0; k < 256; k++) {
        uint64_t row = (uint64_t)warp * 256 + k;
        uint2 v = __ldg(reinterpret_cast<const uint2 *>(sm + row * 256) + l);
        if (SV == 1 && k % 6 == 0) {
            uint4 w = __ldg(sv + k / 6);
            acc ^= w.x ^ w.w;
        }
        if (SV == 2 && k % 12 == 0) {
            uint4 w = __ldg(sv + k / 6), x = __ldg(sv + k / 6 + 1);
            acc ^= w.x ^ x.w;
        }
        if (SV == 3 && k % 24 == 0) {
            uint4 w = __ldg(sv + k / 6), x = __ldg(sv + k / 6 + 1), y = __ldg(sv + k / 6 + 2),
                  z = __ldg(sv + k / 6 + 3);
            acc ^= w.x ^ x.w ^ y.y ^ z.z;
        }
        if (SV == 4 && k % 6 == 0) {
            uint4 w = __ldg(sv + (k / 6) * 32);
            acc ^= w.x ^ w.w;
        }
        uint4 o = make_uint4(v.x ^ acc, v.y, v.x, v.y);
        if (CS)
            __stcs(out + row * 32 + l, o);
        else
            out[row * 32 + l] = o;
    }
}

template <int PF> __device__ __forceinline__ uint4 ldpf(const uint4 *p)
{
    uint4 v;
    if (PF == 128)
        asm volatile("ld.global.nc.L2::128B.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else if (PF == 256)
        asm volatile("ld.global.nc.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else if (PF == 64)
        asm volatile("ld.global.nc.L2::64B.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else
        v = __ldg(p);
    return v;
}
template <int PF, bool SMCS>
__global__ void __launch_bounds__(1024) roofp(const uint8_t *sm, const uint4 *st, uint4 *out)
{
    uint32_t wic = threadIdx.x / 32, W = blockDim.x / 32, l = threadIdx.x % 32;
    uint32_t warp = blockIdx.x * W + wic;
    if (warp >= NC) return;
    const uint4 *sv = st + (uint64_t)warp * 1408 + l * 44;
    uint32_t acc = 0;
#pragma unroll 8
    for (int k = 0; k < 256; k++) {
        uint64_t row = (uint64_t)warp * 256 + k;
        const uint2 *sp = reinterpret_cast<const uint2 *>(sm + row * 256) + l;
        uint2 v = SMCS ? __ldcs(sp) : __ldg(sp);
        if (k % 6 == 0) {
            uint4 w = ldpf<PF>(sv + k / 6);
            acc ^= w.x ^ w.w;
        }
        uint4 o = make_uint4(v.x ^ acc, v.y, v.x, v.y);
        __stcs(out + row * 32 + l, o);
    }
}
__global__ void coalesced(const uint2 *sm, const uint2 *st, uint4 *out)
{
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < N / 8;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint2 v = sm[i], w = i % 3 == 0 ? st[i / 3] : make_uint2(0, 0);
        out[i] = make_uint4(v.x ^ w.x, v.y, v.x, v.y ^ w.y);
    }
}
template <class F> float med(F f)
{
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    std::vector<float> t;
    for (int r = 0; r < 35; r++) {
        cudaEventRecord(a);
        f();
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms;
        cudaEventElapsedTime(&ms, a, b);
        if (r >= 5) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}
int main()
{
    uint8_t *sm, *st, *out, *cp;
    cudaMalloc(&sm, N);
    cudaMalloc(&st, N / 2);
    cudaMalloc(&out, 2 * N);
    cudaMalloc(&cp, 2 * N);
    cudaMemset(sm, 1, N);
    cudaMemset(st, 2, N / 2);
    double traffic = N + N / 3.0 + 2.0 * N;
    float tc = med([&] { cudaMemcpyAsync(cp, out, 2 * N, cudaMemcpyDeviceToDevice); });
    double copy = 2.0 * 2 * N / tc / 1e6;
    printf("copy %.0f GB/s (%.4f ms for %lu B)\n", copy, tc, 2 * N);
    auto rep = [&](const char *name, float t) {
        printf("%-44s %.4f ms = %5.0f GB/s = %5.1f%% of copy\n", name, t, traffic / t / 1e6,
               100 * traffic / t / 1e6 / copy);
    };
    rep("coalesced grid-stride", med([&] {
            coalesced<<<132 * 8, 256>>>((const uint2 *)sm, (const uint2 *)st, (uint4 *)out);
        }));

    const uint4 *S = (const uint4 *)st;
    uint4 *O = (uint4 *)out;
    for (int W : { 26, 13 }) {
        int ctas = (int)((NC + W - 1) / W);
        char name[64];
        snprintf(name, sizeof name, "chunked W=%d", W);
        rep(name, med([&] {
                roof<CHUNKED, false><<<ctas, 32 * W>>>(sm, (const uint4 *)st, (uint4 *)out);
            }));
        snprintf(name, sizeof name, "interleaved per CTA W=%d", W);
        rep(name, med([&] {
                roof<CTA_IL, false><<<ctas, 32 * W>>>(sm, (const uint4 *)st, (uint4 *)out);
            }));
        snprintf(name, sizeof name, "interleaved across the tensor W=%d", W);
        rep(name, med([&] {
                roof<FULL_IL, false><<<ctas, 32 * W>>>(sm, (const uint4 *)st, (uint4 *)out);
            }));
    }
    rep("chunked W=26, stream none, st.cs",
        med([&] { roofs<0, true, false><<<128, 832>>>(sm, S, O); }));
    rep("chunked W=26, stream 32B/12 steps, st.cs",
        med([&] { roofs<2, true, false><<<128, 832>>>(sm, S, O); }));
    rep("chunked W=26, stream 64B/24 steps, st.cs",
        med([&] { roofs<3, true, false><<<128, 832>>>(sm, S, O); }));
    rep("chunked stream 16B/6 cs (base)",
        med([&] { roofs<1, true, false><<<128, 832>>>(sm, S, O); }));
    rep("chunked stream warp-coalesced cs",
        med([&] { roofs<4, true, false><<<128, 832>>>(sm, S, O); }));
    rep("pf none", med([&] { roofp<0, false><<<128, 832>>>(sm, S, O); }));
    rep("pf L2::64B", med([&] { roofp<64, false><<<128, 832>>>(sm, S, O); }));
    rep("pf L2::128B", med([&] { roofp<128, false><<<128, 832>>>(sm, S, O); }));
    rep("pf L2::256B", med([&] { roofp<256, false><<<128, 832>>>(sm, S, O); }));
    rep("pf none, sm ld.cs", med([&] { roofp<0, true><<<128, 832>>>(sm, S, O); }));
    rep("pf L2::128B, sm ld.cs", med([&] { roofp<128, true><<<128, 832>>>(sm, S, O); }));
    rep("pf L2::256B, sm ld.cs", med([&] { roofp<256, true><<<128, 832>>>(sm, S, O); }));
    printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
}
