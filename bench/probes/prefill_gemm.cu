// Probe for issue 14 (prefill): can a GEMM of df11's own match cuBLAS on the arena's BF16 at
// B >= 512? The co-resident decode that issue asks for needs room on every SM beside the
// GEMM, and cuBLAS's Hopper kernels leave none (384 threads x 168 registers, 188-213 KiB of
// shared memory, bench/RESULTS.md); a GEMM of our own could keep its producer warpgroup's
// idle warps and registers for a decode. This measures the GEMM alone first: y (B x N, BF16)
// = x (B x K) W^T (W N x K, as HF stores it), fp32 accumulation, a warp-specialised Hopper
// kernel (one producer warpgroup bringing x and W tiles in by TMA, 128-byte swizzle, STAGES
// deep, mbarriers; two consumer warpgroups, each 64 rows of x against BN rows of W by
// wgmma m64nBNk16 from shared memory, registers moved by setmaxnreg), persistent (a CTA an SM,
// output tiles x's row tiles first, so that a wave shares W's tiles). Four variants: clusters
// of one or two CTAs (two: the W tile multicast), and y stored between tiles or during the next
// tile's first steps. Against cublasGemmEx, all under a CUDA graph, on the Llama-3-8B block's
// matrices (each alone and as engines stack them) at B = 512, 1024, 4096; sampled outputs of
// every variant checked against a float64 reference, and none left unwritten. Then the next
// block's decode inside the GEMM: a stand-in with the fixed-code decoder's traffic, run by the
// producer warpgroup's three idle warps (unpaced, or paced by the GEMM's steps), against
// cuBLAS followed by the same decode over the whole GPU; its output checked against that
// decode's, y against cuBLAS's. Last, W decoded straight into the GEMM's stages by the
// producer warpgroup(s) (the same stand-in arithmetic; no arena): times only.
// --decode-only: the last two parts; --profile-fused: one launch of each fused variant on
// gate+up at B = 4096, for ncu; --wa (issue 11, batches 128 and 256): only the same decode
// into the stages with W as wgmma's A and the whole batch as its N, so that each weight is
// decoded once (wa_kernel): times only, against cuBLAS and against the decode then cuBLAS.
// Not part of the build (sm_90a; the driver's cuTensorMapEncodeTiled through the runtime):
//     nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I. -o prefill_gemm \
//         bench/probes/prefill_gemm.cu -lcublas
//     ./prefill_gemm [--reps N] [--decode-only] [--profile-fused]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "check.cuh"
#include "kernels/sm90.cuh"

namespace {

using namespace df11i_sm90;

constexpr int BM = 128, BK = 64, STAGES = 4, THREADS = 384;

__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void tma_2d(void *dst, const CUtensorMap *map, int c0, int c1,
                                       uint64_t *bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(smem_u32(dst)),
                 "l"(map), "r"(c0), "r"(c1), "r"(smem_u32(bar))
                 : "memory");
}
// the same, multicast: the box lands at dst's offset in every CTA of `mask`, each CTA's
// barrier at bar's offset counting its bytes
__device__ __forceinline__ void tma_2d_multicast(void *dst, const CUtensorMap *map, int c0, int c1,
                                                 uint64_t *bar, uint16_t mask)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(smem_u32(dst)),
                 "l"(map), "r"(c0), "r"(c1), "r"(smem_u32(bar)), "h"(mask)
                 : "memory");
}
// an arrival on the barrier at bar's offset in the cluster's CTA `rank`
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t *bar, uint32_t rank)
{
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                 : "=r"(remote)
                 : "r"(smem_u32(bar)), "r"(rank));
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}

// D(64 x 256, fp32) += A(64 x 16) B(256 x 16)^T, both K-major in shared memory (descriptors)
__device__ __forceinline__ void wgmma_m64n256_ss(float *d, uint64_t da, uint64_t db)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
          "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
          "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
          "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
          "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
          "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
          "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),
          "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),
          "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db));
}

// D(64 x 128) += A B^T, the same from shared memory with N = 128
__device__ __forceinline__ void wgmma_m64n128_ss(float *d, uint64_t da, uint64_t db)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63])
        : "l"(da), "l"(db));
}

// A consumer warpgroup's step, once its stage is full: D(64 x NN) += A Bᵀ over the stage's 4
// k16 slices, A (64 rows) and B (NN rows) K-major in shared memory, committed as one group;
// SPLIT: NN = 256 as two m64n128 a slice, B's rows 128.. from 16 KiB on (at 512 threads
// ptxas holds each instruction to 128 registers, and m64n256 needs 154).
template <int NN, bool SPLIT>
__device__ __forceinline__ void stage_mmas(float *d, uint64_t *full, uint32_t parity,
                                           const uint8_t *a, const uint8_t *b)
{
    mbar_wait(full, parity);
    const uint64_t da = sw128_desc(smem_u32(a)), db = sw128_desc(smem_u32(b));
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const uint64_t k16 = desc_offset(32 * kk); // the slice's 16 columns
        if constexpr (NN == 256 && SPLIT) {
            wgmma_m64n128_ss(d, da + k16, db + k16);
            wgmma_m64n128_ss(d + 64, da + k16, db + k16 + desc_offset(16384));
        } else if constexpr (NN == 256) {
            wgmma_m64n256_ss(d, da + k16, db + k16);
        } else {
            wgmma_m64n128_ss(d, da + k16, db + k16);
        }
    }
    wgmma_commit();
}

// ---- a stand-in for the next block's decode, run by the producer warpgroup's three idle
// warps: the fixed-code decoder's traffic (1.5 bytes read and 2 written a weight; the real
// code reads ~1.41), a few byte permutes a word instead of the decode itself. A unit is 1024
// weights; a warp copies its units' input kDecSlots ahead by cp.async into its own ring.
constexpr int kDecWarps = 3, kDecSlots = 4, kUnitIn = 1536, kUnitOut = 2048;
constexpr int kDecRing = kDecSlots * kUnitIn;

struct Dec {
    const uint8_t *in;
    uint8_t *out;
    long long units; // 0: no decode
    int pace;        // 1: spread over the GEMM (a unit's copy waits for its share of the steps)
};

__device__ __forceinline__ void cp16(void *smem, const void *g)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(smem)), "l"(g));
}
// 16 bytes of shared memory by an explicit ld.shared: through a generic pointer ptxas emitted
// LD.E.128, which waits on the L1TEX path (ncu, call 26)
__device__ __forceinline__ uint4 lds128(const uint8_t *p)
{
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(smem_u32(p)));
    return v;
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// unit u's output from its input, lane's share: 48 bytes in, 64 out
__host__ __device__ inline void standin(const uint4 v[3], uint4 o[4])
{
    uint32_t in[12], out[16];
    for (int i = 0; i < 3; i++)
        in[4 * i] = v[i].x, in[4 * i + 1] = v[i].y, in[4 * i + 2] = v[i].z, in[4 * i + 3] = v[i].w;
    for (int i = 0; i < 16; i++) {
        const uint32_t a = in[(3 * i) / 4], b = in[(3 * i + 1) / 4 % 12];
        out[i] = ((a >> (8 * (i & 3))) & 0xffu) | ((b & 0xffu) << 8) | ((a ^ b) & 0xffff0000u);
    }
    for (int i = 0; i < 4; i++)
        o[i] = make_uint4(out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
}

// progress: the steps this CTA's producer has issued, of steps (0: not paced)
__device__ void decode_standin(const Dec &d, uint8_t *ring, long long w0, long long ws,
                               uint32_t lane, const volatile int *progress, int steps)
{
    const long long mine = w0 < d.units ? (d.units - w0 + ws - 1) / ws : 0;
    // the copy of this warp's unit k waits until the GEMM is k / mine of the way, less a lead
    auto pace = [&](long long k) {
        if (!steps || !mine) return;
        const long long need = k * steps / mine - 8;
        while (*progress < need) __nanosleep(500);
    };
    for (int s = 0; s < kDecSlots; s++) {
        const long long u = w0 + s * ws;
        if (u < d.units)
            for (int i = 0; i < 3; i++)
                cp16(ring + s * kUnitIn + i * 512 + lane * 16,
                     d.in + u * kUnitIn + i * 512 + lane * 16);
        cp_commit();
    }
    for (long long k = 0;; k++) {
        const long long u = w0 + k * ws;
        if (u >= d.units) break;
        const int s = (int)(k % kDecSlots);
        cp_wait<kDecSlots - 1>();
        uint4 v[3], o[4];
        for (int i = 0; i < 3; i++) v[i] = lds128(ring + s * kUnitIn + i * 512 + lane * 16);
        standin(v, o);
        uint4 *dst = reinterpret_cast<uint4 *>(d.out + u * kUnitOut) + lane;
        for (int i = 0; i < 4; i++) dst[32 * i] = o[i];
        const long long un = w0 + (k + kDecSlots) * ws;
        if (un < d.units) {
            pace(k + kDecSlots);
            for (int i = 0; i < 3; i++)
                cp16(ring + s * kUnitIn + i * 512 + lane * 16,
                     d.in + un * kUnitIn + i * 512 + lane * 16);
        }
        cp_commit();
    }
    cp_wait<0>();
}

// the same over the whole GPU, one unit a warp at a time, for "decode, then cuBLAS"
__global__ void standin_plain(Dec d)
{
    const uint32_t lane = threadIdx.x % 32;
    const long long w0 = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32,
                    ws = (long long)gridDim.x * blockDim.x / 32;
    for (long long u = w0; u < d.units; u += ws) {
        uint4 v[3], o[4];
        for (int i = 0; i < 3; i++)
            v[i] = __ldcs(reinterpret_cast<const uint4 *>(d.in + u * kUnitIn + i * 512) + lane);
        standin(v, o);
        uint4 *dst = reinterpret_cast<uint4 *>(d.out + u * kUnitOut) + lane;
        for (int i = 0; i < 4; i++) dst[32 * i] = o[i];
    }
}

template <int BN, bool DEC> constexpr size_t smem_bytes()
{
    return 1024 + (size_t)STAGES * (BM + BN) * BK * 2 + 2 * STAGES * 8 + 128 +
           (DEC ? (size_t)kDecWarps * kDecRing : 0);
}

// A consumer warpgroup (c: 0 or 1, its 64 rows of x) over the CTA's tiles: each step's MMAs
// from stage it % ST once full, the stage released to the producer (every CTA of the cluster's)
// once read, y stored from registers (DEFER: during the next tile's first steps).
// SPLIT: BN = 256 as two m64n128 MMAs a slice (ptxas checks one instruction's registers
// against the launch's limit, 128 at 512 threads; m64n256 needs 154).
template <int BN, int CL, int ST, bool DEFER, bool SPLIT = false>
__device__ __forceinline__ void consume(uint8_t *sm, uint64_t *full, uint64_t *empty,
                                        __nv_bfloat16 *y, int N, int c, int tid, int first,
                                        int stride, int T, int MP, int KT, uint32_t rank)
{
    constexpr int XB = BM * BK * 2, SB = XB + BN * BK * 2;
    const int w = tid / 32, l = tid % 32;
    auto release = [&](int s) {
        if (tid != 0) return;
        if constexpr (CL > 1) {
            for (uint32_t r = 0; r < CL; r++) mbar_arrive_cluster(empty + s, r);
        } else {
            mbar_arrive(empty + s);
        }
    };
    // DEFER: a tile's y, packed to BF16, is stored during the next tile's first kChunks
    // steps, a chunk a step while that step's MMAs run, instead of between the tiles
    constexpr int kChunks = 8, kPer = BN / 8 / kChunks;
    uint32_t prev[DEFER ? BN / 4 : 1];
    size_t prow = 0;
    int pcol = 0;
    bool have = false;
    auto store_chunk = [&](int ch) {
#pragma unroll
        for (int cc = 0; cc < kChunks; cc++)
            if (cc == ch)
#pragma unroll
                for (int jj = 0; jj < kPer; jj++) {
                    const int j = cc * kPer + jj, col = pcol + 8 * j + 2 * (l % 4);
                    *reinterpret_cast<uint32_t *>(y + prow * N + col) = prev[2 * j];
                    *reinterpret_cast<uint32_t *>(y + (prow + 8) * N + col) = prev[2 * j + 1];
                }
    };
    int it = 0;
    for (int t = first; t < T; t += stride) {
        const int m0 = ((t % MP) * CL + (int)rank) * BM, n0 = (t / MP) * BN;
        float d[BN / 2];
#pragma unroll
        for (int i = 0; i < BN / 2; i++) d[i] = 0.f;
        for (int kt = 0; kt < KT; kt++, it++) {
            const int s = it % ST;
            stage_mmas<BN, SPLIT>(d, full + s, (it / ST) & 1, sm + s * SB + c * 64 * 128,
                                  sm + s * SB + XB);
            if constexpr (DEFER)
                if (have && kt < kChunks) store_chunk(kt);
            wgmma_wait<1>();
            if (kt > 0) release((it - 1) % ST);
        }
        wgmma_wait<0>();
        release((it - 1) % ST);
        const int row = m0 + 64 * c + 16 * w + l / 4;
        if constexpr (DEFER) {
            for (int ch = KT; have && ch < kChunks; ch++) store_chunk(ch);
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                const __nv_bfloat162 lo = __floats2bfloat162_rn(d[4 * j], d[4 * j + 1]),
                                     hi = __floats2bfloat162_rn(d[4 * j + 2], d[4 * j + 3]);
                prev[2 * j] = *reinterpret_cast<const uint32_t *>(&lo);
                prev[2 * j + 1] = *reinterpret_cast<const uint32_t *>(&hi);
            }
            prow = (size_t)row;
            pcol = n0;
            have = true;
        } else {
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                const int col = n0 + 8 * j + 2 * (l % 4);
                *reinterpret_cast<__nv_bfloat162 *>(y + (size_t)row * N + col) =
                    __floats2bfloat162_rn(d[4 * j], d[4 * j + 1]);
                *reinterpret_cast<__nv_bfloat162 *>(y + (size_t)(row + 8) * N + col) =
                    __floats2bfloat162_rn(d[4 * j + 2], d[4 * j + 3]);
            }
        }
    }
    if constexpr (DEFER)
        for (int ch = 0; have && ch < kChunks; ch++) store_chunk(ch);
}

// Persistent: CTA b takes output tiles b, b + G, ... (tile t: x rows 128 (t % MT) on, W rows
// BN (t / MT) on, so that a wave shares W's tiles); the producer's loads run on across tiles,
// so a tile's pipeline fills while the consumers store the one before. CL = 2: clusters of two
// CTAs on vertically adjacent tiles (the same W rows): each CTA loads half of the W tile and
// multicasts it to both, so a CTA reads 32 KiB a step from the L2 instead of 48; a stage is
// refilled once the consumers of both CTAs are done with it. Shapes are multiples of the tiles.
// DEC: warps 1-3 of the producer warpgroup run the decode stand-in on `dec` meanwhile (the
// warpgroups' registers then 56 / 224); gemm = 0 leaves the GEMM out (the decode alone).
template <int BN, int CL, bool DEFER, bool DEC>
__global__ void __launch_bounds__(THREADS, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tw,
                __nv_bfloat16 *y, int M, int N, int K, Dec dec, int gemm)
{
    constexpr int XB = BM * BK * 2, WB = BN * BK * 2, SB = XB + WB;
    extern __shared__ uint8_t raw[];
    uint8_t *sm =
        reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + STAGES * SB), *empty = full + STAGES;
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const uint32_t rank = CL > 1 ? cluster_rank() : 0;
    // tile pairs (CL = 2): pair p = rows 256 (p % MP) on, its CTA `rank` the half rank
    const int MP = M / (BM * CL), T = gemm ? MP * (N / BN) : 0, KT = K / BK;
    const int first = blockIdx.x / CL, stride = gridDim.x / CL;
    // the producer's steps issued so far (DEC with dec.pace: the decode keeps pace with them)
    volatile int *progress = reinterpret_cast<volatile int *>(empty + STAGES);
    const int my_tiles = first < T ? (T - first + stride - 1) / stride : 0;
    if (threadIdx.x == 0) {
        *progress = 0;
        for (int s = 0; s < STAGES; s++) {
            mbar_init(full + s, 1);
            mbar_init(empty + s, 2 * CL);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if constexpr (CL > 1)
        cluster_sync();
    else
        __syncthreads();
    if (wg == 0) {
        if constexpr (DEC)
            asm volatile("setmaxnreg.dec.sync.aligned.u32 56;");
        else
            asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if constexpr (DEC) {
            if (tid >= 32) {
                uint8_t *ring =
                    sm + ((STAGES * SB + 2 * STAGES * 8 + 127) & ~127) + (tid / 32 - 1) * kDecRing;
                decode_standin(dec, ring, (long long)blockIdx.x * kDecWarps + tid / 32 - 1,
                               (long long)gridDim.x * kDecWarps, tid % 32, progress,
                               dec.pace ? my_tiles * KT : 0);
            }
        }
        if (tid == 0) {
            int it = 0;
            for (int t = first; t < T; t += stride) {
                const int m0 = ((t % MP) * CL + (int)rank) * BM, n0 = (t / MP) * BN;
                for (int kt = 0; kt < KT; kt++, it++) {
                    const int s = it % STAGES;
                    if (it >= STAGES) mbar_wait(empty + s, ((it / STAGES) - 1) & 1);
                    mbar_expect_tx(full + s, SB);
                    tma_2d(sm + s * SB, &tx, kt * BK, m0, full + s);
                    if constexpr (CL > 1)
                        tma_2d_multicast(sm + s * SB + XB + rank * (WB / CL), &tw, kt * BK,
                                         n0 + (int)rank * (BN / CL), full + s, (1u << CL) - 1);
                    else
                        tma_2d(sm + s * SB + XB, &tw, kt * BK, n0, full + s);
                    if constexpr (DEC) *progress = it + 1;
                }
            }
        }
    } else {
        if constexpr (DEC) // the decode warps spill at 40 (16 bytes); 224 measured as fast
            asm volatile("setmaxnreg.inc.sync.aligned.u32 224;");
        else
            asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
        consume<BN, CL, STAGES, DEFER>(sm, full, empty, y, N, wg - 1, tid, first, stride, T, MP, KT,
                                       rank);
    }
    // no CTA leaves while its peer may still multicast into it or arrive on its barriers
    if constexpr (CL > 1) cluster_sync();
}

// ---- W decoded straight into the stages (the design an arena cannot match at B = 512): the
// producer warpgroup's four warps each turn 4 of a step's 16 strip units (16 rows x 64 columns
// of W, 1.5 bytes a weight of input, units in (W tile, step, strip) order) into the stage's
// swizzled W tile by the stand-in's arithmetic, the input copied kFDepth stages ahead by
// cp.async into a ring of their own; warp 0 also brings x in by TMA. 3 stages, so that the
// rings (48 KiB) leave the carveout at 196 KiB. Times only: W is the stand-in's bytes.
// DW = 2: two warpgroups of decoding warps (8, 2 units each; 512 threads): one warp a
// scheduler issued the stand-in at ~12 cycles an instruction (ncu), short of the MMAs' pace.
// Registers 64 / 192 then, so y is stored between tiles (DEFER needs ~210).
constexpr int kFST = 3, kFDepth = 2;
// PART 3: the input by ld.global into registers a stage ahead, no ring, so 4 stages fit
template <int PART> __host__ __device__ constexpr int fused_stages()
{
    return PART == 3 ? 4 : kFST;
}
template <int PART = 0> constexpr size_t fused_smem()
{
    constexpr int ST = fused_stages<PART>();
    return 1024 + (size_t)ST * (BM + 256) * BK * 2 + 2 * ST * 8 + 128 +
           (PART == 3 ? 0 : (size_t)kFDepth * 16 * kUnitIn); // kFDepth stages' units: 16 each
}

__device__ __forceinline__ void sts128(uint8_t *p, uint4 v)
{
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(smem_u32(p)), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
}

// A decoding warp's start of a stage's fill (fill: how many it has had before): once the
// consumers have released the fill before, thread 0 brings in x's box (c0, c1) by TMA.
__device__ __forceinline__ void take_stage(uint64_t *full, uint64_t *empty, int fill, void *dst,
                                           const CUtensorMap *tx, int c0, int c1, uint32_t bytes)
{
    if (fill > 0) mbar_wait(empty, (fill - 1) & 1);
    if (threadIdx.x == 0) {
        mbar_expect_tx(full, bytes);
        tma_2d(dst, tx, c0, c1, full);
    }
}

// Strip unit u's output into a stage's W tile (rows 16 u on, 128 bytes a row, 128-byte
// swizzle): the lane's 32 weights as the fused decode hands them, rows r0 and r0 + 8, 8
// columns from 8 (lane & 3) and from 32 + 8 (lane & 3).
__device__ __forceinline__ void store_unit(uint8_t *ws, int u, uint32_t lane, const uint4 o[4])
{
    const uint32_t r0 = 16 * u + (lane >> 2), qq = lane & 3;
    for (int h = 0; h < 4; h++) {
        const uint32_t r = r0 + 8 * (h >> 1), ch = qq + 4 * (h & 1);
        sts128(ws + r * 128 + ((ch ^ (r & 7)) << 4), o[h]);
    }
}

// PART (what each decoding warp does, for finding its cost): 0 all; 1 no input copies (the
// stand-in's words from the lane and step); 2 nothing but the barriers; 3 all, the input in
// registers a stage ahead and 4 stages.
template <int DW, int PART = 0>
__global__ void __launch_bounds__(128 * (2 + DW), 1)
    fused_kernel(const __grid_constant__ CUtensorMap tx, const uint8_t *__restrict__ comp,
                 __nv_bfloat16 *y, int M, int N, int K)
{
    constexpr int kDW = 4 * DW, kFUnits = 16 / kDW; // decoding warps, units a warp a stage
    constexpr int BN = 256, XB = BM * BK * 2, WB = BN * BK * 2, SB = XB + WB;
    constexpr int ST = fused_stages<PART>();
    extern __shared__ uint8_t raw[];
    uint8_t *sm =
        reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + ST * SB), *empty = full + ST;
    uint8_t *rings = sm + ((ST * SB + 2 * ST * 8 + 127) & ~127);
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int MP = M / BM, T = MP * (N / BN), KT = K / BK, first = blockIdx.x, stride = gridDim.x;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; s++) {
            mbar_init(full + s, 1 + kDW); // x's bytes, and the decoding warps
            mbar_init(empty + s, 2);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (wg < DW) {
        // 128 x 64 + 256 x 216 within the launch's 384 x 168: an increase the CTA's pool cannot
        // give waits forever (80 / 216 hung)
        asm volatile("setmaxnreg.dec.sync.aligned.u32 64;"); // DW = 2: 256 x 64 + 256 x 192
        const int w = (int)threadIdx.x / 32;
        const uint32_t lane = tid % 32;
        uint8_t *ring = rings + (size_t)w * kFDepth * kFUnits * kUnitIn;
        const int n_total = (first < T ? (T - first + stride - 1) / stride : 0) * KT;
        // stage j of this CTA's sequence: its units' copies into ring slot j % kFDepth
        auto issue = [&](int j) {
            if (PART == 0 && j < n_total) {
                const int t = first + (j / KT) * stride, kt = j % KT, nt = t / MP;
                for (int q = 0; q < kFUnits; q++) {
                    const uint8_t *src =
                        comp + ((size_t)(nt * KT + kt) * 16 + w + kDW * q) * kUnitIn + lane * 16;
                    uint8_t *dst = ring + ((j % kFDepth) * kFUnits + q) * kUnitIn + lane * 16;
                    for (int i = 0; i < 3; i++) cp16(dst + i * 512, src + i * 512);
                }
            }
            cp_commit();
        };
        // PART 3: stage j's input words, loaded a stage ahead
        uint4 nxt[kFUnits][3];
        auto load = [&](int j) {
            if (PART == 3 && j < n_total) {
                const int t = first + (j / KT) * stride, kt = j % KT, nt = t / MP;
                for (int q = 0; q < kFUnits; q++)
                    for (int i = 0; i < 3; i++)
                        nxt[q][i] = __ldg(reinterpret_cast<const uint4 *>(
                            comp + ((size_t)(nt * KT + kt) * 16 + w + kDW * q) * kUnitIn + i * 512 +
                            lane * 16));
            }
        };
        for (int j = 0; j < kFDepth; j++) issue(j);
        load(0);
        for (int it = 0; it < n_total; it++) {
            const int s = it % ST, t = first + (it / KT) * stride, kt = it % KT;
            uint4 cur[kFUnits][3];
            for (int q = 0; q < kFUnits; q++)
                for (int i = 0; i < 3; i++) cur[q][i] = nxt[q][i];
            load(it + 1);
            take_stage(full + s, empty + s, it / ST, sm + s * SB, &tx, kt * BK, (t % MP) * BM, XB);
            cp_wait<kFDepth - 1>();
            uint8_t *ws = sm + s * SB + XB;
            for (int q = 0; PART != 2 && q < kFUnits; q++) {
                uint4 v[3], o[4];
                for (int i = 0; i < 3; i++) {
                    v[i] = make_uint4(lane, it, q, i);
                    if constexpr (PART == 3) v[i] = cur[q][i];
                    if constexpr (PART == 0)
                        v[i] = lds128(ring + ((it % kFDepth) * kFUnits + q) * kUnitIn + i * 512 +
                                      lane * 16);
                }
                standin(v, o);
                store_unit(ws, w + kDW * q, lane, o);
            }
            issue(it + kFDepth);
            fence_proxy_async(); // the stage's stores, before the MMAs read it
            __syncwarp();
            if (lane == 0) mbar_arrive(full + s);
        }
        cp_wait<0>();
    } else {
        if constexpr (DW == 1) {
            asm volatile("setmaxnreg.inc.sync.aligned.u32 216;");
            consume<256, 1, ST, true>(sm, full, empty, y, N, wg - 1, tid, first, stride, T, MP, KT,
                                      0);
        } else {
            asm volatile("setmaxnreg.inc.sync.aligned.u32 192;");
            consume<256, 1, ST, false, true>(sm, full, empty, y, N, wg - DW, tid, first, stride, T,
                                             MP, KT, 0);
        }
    }
}

// ---- Issue 11 at B = 65..256: W as wgmma's A operand, the whole batch as its N. A CTA's tile
// is 128 W rows by the batch (XN = 128 or 256 rows of x), so each W weight is decoded once
// per product (the kernel above decodes it once per 128 rows of x). The decoding warps (DW
// warpgroups) turn a step's 8 strip units (16 rows x 64 columns, stand-in arithmetic) into the
// stage's swizzled W tile; thread 0 also brings x's 64
// columns in by TMA. The consumers' two warpgroups each take 64 W rows: wgmma m64nXNk16, A and
// B from shared memory. Stream-K: the grid's CTAs take equal ranges of the (W tile, step)
// sequence, and a CTA adds each tile's share into yT (N x XN, fp32) by float2 atomics (a
// stand-in for the split sums). Times only: W is the stand-in's bytes.
// PART, the decoding warps' input: 0 by ld.global into registers a stage ahead; 1 none (the
// words made from the lane and step: the compiler folds some of the arithmetic); 2 nothing but
// the barriers; 3 a step's input (8 units, 12 KiB, contiguous) by one bulk copy into a ring of
// kWaIn slots, kWaIn - 1 steps ahead (3 stages at XN = 256, so that it fits).
constexpr int kWaMinSteps = 16, kWaIn = 6, kWaStepIn = 8 * kUnitIn;
template <int XN, int PART> __host__ __device__ constexpr int wa_stages()
{
    return PART == 3 && XN == 256 ? 3 : 4;
}
template <int XN, int PART> constexpr size_t wa_smem()
{
    return 1024 + (size_t)wa_stages<XN, PART>() * (128 + XN) * BK * 2 +
           (PART == 3 ? (size_t)kWaIn * kWaStepIn : 0) + 2 * (4 + kWaIn) * 8;
}
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
template <int XN, int DW, int PART>
__global__ void __launch_bounds__(128 * (2 + DW), 1)
    wa_kernel(const __grid_constant__ CUtensorMap tx, const uint8_t *__restrict__ comp, float *yt,
              int N, int K)
{
    constexpr int kDW = 4 * DW, kU = 8 / kDW; // decoding warps, units a warp a stage
    constexpr int WB = 128 * BK * 2, XB = XN * BK * 2, SB = WB + XB, ST = wa_stages<XN, PART>();
    constexpr bool SPLIT = XN == 256 && DW == 2; // stage_mmas says why
    extern __shared__ uint8_t raw[];
    uint8_t *sm =
        reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));
    uint8_t *in = sm + ST * SB; // PART 3's input ring
    uint64_t *full = reinterpret_cast<uint64_t *>(in + (PART == 3 ? kWaIn * kWaStepIn : 0)),
             *empty = full + ST, *in_full = empty + ST, *in_empty = in_full + kWaIn;
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int KT = K / BK;
    const long long total = (long long)(N / 128) * KT;
    const int s0 = (int)(total * blockIdx.x / gridDim.x),
              n = (int)(total * (blockIdx.x + 1) / gridDim.x) - s0;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; s++) {
            mbar_init(full + s, 1 + kDW); // x's bytes, and the decoding warps
            mbar_init(empty + s, 2);
        }
        for (int s = 0; s < kWaIn; s++) {
            mbar_init(in_full + s, 1);    // the step's input bytes
            mbar_init(in_empty + s, kDW); // every decoding warp done reading them
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (wg < DW) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 64;");
        // PART 3, thread 0: step j's input into slot j % kWaIn, once every warp has read
        // step j - kWaIn's
        auto fetch = [&](int j) {
            if (PART != 3 || threadIdx.x != 0 || j >= n) return;
            const int sl = j % kWaIn;
            if (j >= kWaIn) mbar_wait(in_empty + sl, ((j / kWaIn) - 1) & 1);
            mbar_expect_tx(in_full + sl, kWaStepIn);
            bulk_g2s(in + sl * kWaStepIn, comp + (size_t)(s0 + j) * kWaStepIn, kWaStepIn,
                     in_full + sl);
        };
        for (int j = 0; j < kWaIn - 1; j++) fetch(j);
        const int w = (int)threadIdx.x / 32;
        const uint32_t lane = tid % 32;
        uint4 nxt[kU][3];
        auto load = [&](int it) {
            if (PART == 0 && it < n)
                for (int q = 0; q < kU; q++)
                    for (int i = 0; i < 3; i++)
                        nxt[q][i] = __ldg(reinterpret_cast<const uint4 *>(
                            comp + ((size_t)(s0 + it) * 8 + w + kDW * q) * kUnitIn + i * 512 +
                            lane * 16));
        };
        load(0);
        for (int it = 0; it < n; it++) {
            const int s = it % ST, kt = (s0 + it) % KT;
            uint4 cur[kU][3];
            for (int q = 0; q < kU; q++)
                for (int i = 0; i < 3; i++) cur[q][i] = nxt[q][i];
            load(it + 1);
            take_stage(full + s, empty + s, it / ST, sm + s * SB + WB, &tx, kt * BK, 0, XB);
            uint8_t *ws = sm + s * SB;
            const int sl = it % kWaIn;
            if (PART == 3) mbar_wait(in_full + sl, (it / kWaIn) & 1);
            for (int q = 0; PART != 2 && q < kU; q++) {
                uint4 v[3], o[4];
                for (int i = 0; i < 3; i++)
                    v[i] = PART == 0   ? cur[q][i]
                           : PART == 3 ? lds128(in + sl * kWaStepIn + (w + kDW * q) * kUnitIn +
                                                i * 512 + lane * 16)
                                       : make_uint4(lane, it, q, i);
                standin(v, o);
                store_unit(ws, w + kDW * q, lane, o);
            }
            fence_proxy_async(); // the stage's stores, before the MMAs read it
            __syncwarp();
            if (lane == 0) {
                mbar_arrive(full + s);
                if (PART == 3) mbar_arrive(in_empty + sl);
            }
            fetch(it + kWaIn - 1);
        }
    } else {
        // within the launch's pool (384 x 168 or 512 x 128): an increase past it waits forever
        if constexpr (DW == 1)
            asm volatile("setmaxnreg.inc.sync.aligned.u32 216;");
        else
            asm volatile("setmaxnreg.inc.sync.aligned.u32 192;");
        const int c = wg - DW, w = tid / 32, l = tid % 32;
        // a segment: the range's steps of one W tile, then its share into yT
        for (int it = 0; it < n;) {
            const int g0 = s0 + it, t = g0 / KT, end = min(n, it + (KT - g0 % KT));
            float d[XN / 2];
#pragma unroll
            for (int i = 0; i < XN / 2; i++) d[i] = 0.f;
            for (; it < end; it++) {
                const int s = it % ST;
                stage_mmas<XN, SPLIT>(d, full + s, (it / ST) & 1, sm + s * SB + c * 64 * 128,
                                      sm + s * SB + WB);
                wgmma_wait<1>();
                if (it > 0 && tid == 0) mbar_arrive(empty + (it - 1) % ST);
            }
            wgmma_wait<0>();
            const int row = t * 128 + 64 * c + 16 * w + l / 4;
#pragma unroll
            for (int j = 0; j < XN / 8; j++) {
                const int col = 8 * j + 2 * (l % 4);
                atomicAdd(reinterpret_cast<float2 *>(yt + (size_t)row * XN + col),
                          make_float2(d[4 * j], d[4 * j + 1]));
                atomicAdd(reinterpret_cast<float2 *>(yt + (size_t)(row + 8) * XN + col),
                          make_float2(d[4 * j + 2], d[4 * j + 3]));
            }
        }
    }
}

typedef CUresult (*EncodeTiled)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_fn()
{
    static EncodeTiled fn = nullptr;
    if (!fn) {
        cudaDriverEntryPointQueryResult q;
        CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&fn, 12000,
                                            cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || !fn) {
            fprintf(stderr, "cuTensorMapEncodeTiled: not found\n");
            exit(1);
        }
    }
    return fn;
}

// rows x K BF16, row-major; a box of box_rows rows x 64 columns, 128-byte swizzle
CUtensorMap tensor_map(const void *p, int rows, int K, int box_rows)
{
    CUtensorMap m;
    const cuuint64_t dim[2] = { (cuuint64_t)K, (cuuint64_t)rows },
                     stride[1] = { (cuuint64_t)K * 2 };
    const cuuint32_t box[2] = { (cuuint32_t)BK, (cuuint32_t)box_rows }, es[2] = { 1, 1 };
    const CUresult r =
        encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void *>(p), dim, stride,
                    box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", (int)r);
        exit(1);
    }
    return m;
}

struct Gemm {
    CUtensorMap tx, tw;
    int M, N, K, bn, cl, defer;
};

Gemm plan(const __nv_bfloat16 *x, const __nv_bfloat16 *W, int M, int N, int K, int cl, int defer)
{
    // BN 256 where that still gives every SM a tile, else 128
    const int bn = (M / BM) * (N / 256) >= 132 ? 256 : 128;
    return Gemm{ tensor_map(x, M, K, BM), tensor_map(W, N, K, bn / cl), M, N, K, bn, cl, defer };
}

int g_sms = 132;
size_t g_pad = 0; // bytes of dynamic shared memory asked for beyond the kernel's (a control)

template <int BN, int CL, bool DEFER, bool DEC>
void launch_as(const Gemm &g, __nv_bfloat16 *y, const Dec &dec, int gemm, cudaStream_t st)
{
    static bool ready = false;
    if (!ready) {
        CK(cudaFuncSetAttribute(gemm_kernel<BN, CL, DEFER, DEC>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
        ready = true;
    }
    const int tiles = (g.M / BM) * (g.N / BN), grid = std::min(tiles, g_sms) / CL * CL;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(THREADS);
    cfg.dynamicSmemBytes = smem_bytes<BN, DEC>() + g_pad;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = CL;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = CL > 1; // CL = 1: a plain launch
    CK(cudaLaunchKernelEx(&cfg, gemm_kernel<BN, CL, DEFER, DEC>, g.tx, g.tw, y, g.M, g.N, g.K, dec,
                          gemm));
}

template <int BN, bool DEC>
void launch_bn(const Gemm &g, __nv_bfloat16 *y, const Dec &dec, int gemm, cudaStream_t st)
{
    if (g.cl == 2)
        g.defer ? launch_as<BN, 2, true, DEC>(g, y, dec, gemm, st)
                : launch_as<BN, 2, false, DEC>(g, y, dec, gemm, st);
    else
        g.defer ? launch_as<BN, 1, true, DEC>(g, y, dec, gemm, st)
                : launch_as<BN, 1, false, DEC>(g, y, dec, gemm, st);
}

// y = x W^T; where dec.units, the decode stand-in in the same kernel; gemm = 0: that alone
void launch(const Gemm &g, __nv_bfloat16 *y, cudaStream_t st, const Dec &dec = Dec{}, int gemm = 1)
{
    if (dec.units)
        g.bn == 256 ? launch_bn<256, true>(g, y, dec, gemm, st)
                    : launch_bn<128, true>(g, y, dec, gemm, st);
    else
        g.bn == 256 ? launch_bn<256, false>(g, y, dec, gemm, st)
                    : launch_bn<128, false>(g, y, dec, gemm, st);
}

template <int DW, int PART = 0>
void launch_fused(const CUtensorMap &tx, const uint8_t *comp, __nv_bfloat16 *y, int M, int N, int K,
                  cudaStream_t st)
{
    static bool ready = false;
    if (!ready) {
        CK(cudaFuncSetAttribute(fused_kernel<DW, PART>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)fused_smem<PART>()));
        ready = true;
    }
    const int tiles = (M / BM) * (N / 256);
    fused_kernel<DW, PART>
        <<<std::min(tiles, g_sms), 128 * (2 + DW), fused_smem<PART>(), st>>>(tx, comp, y, M, N, K);
}

template <int XN, int DW, int PART = 0>
void launch_wa(const CUtensorMap &tx, const uint8_t *comp, float *yt, int N, int K, cudaStream_t st)
{
    static bool ready = false;
    if (!ready) {
        CK(cudaFuncSetAttribute(wa_kernel<XN, DW, PART>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)wa_smem<XN, PART>()));
        ready = true;
    }
    const long long steps = (long long)(N / 128) * (K / BK);
    const int grid = (int)std::max(1LL, std::min((long long)g_sms, steps / kWaMinSteps));
    wa_kernel<XN, DW, PART><<<grid, 128 * (2 + DW), wa_smem<XN, PART>(), st>>>(tx, comp, yt, N, K);
}

// The --wa table's columns past its two references, in order: 8 decoding warps with the input
// by bulk copy, by ld.global into registers, without input, barriers only; 4 by bulk copy.
template <int XN>
void launch_wa_variant(int which, const CUtensorMap &tx, const uint8_t *comp, float *yt, int N,
                       int K, cudaStream_t st)
{
    if (which == 0) launch_wa<XN, 2, 3>(tx, comp, yt, N, K, st);
    if (which == 1) launch_wa<XN, 2>(tx, comp, yt, N, K, st);
    if (which == 2) launch_wa<XN, 2, 1>(tx, comp, yt, N, K, st);
    if (which == 3) launch_wa<XN, 2, 2>(tx, comp, yt, N, K, st);
    if (which == 4) launch_wa<XN, 1, 3>(tx, comp, yt, N, K, st);
}

__global__ void fill_random(__nv_bfloat16 *p, size_t n, uint32_t seed, float scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        h *= 3266489917u;
        h ^= h >> 16;
        p[i] = __float2bfloat16(scale * ((float)(h & 0xffffff) / 8388608.f - 1.f));
    }
}

float median(std::vector<float> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// µs a launch: a graph of `per` launches, replayed `reps` times, the median
template <typename F> float time_graph(F body, cudaStream_t st, int per, int reps)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < per; i++) body();
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaStreamSynchronize(st));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(1000.f * ms / per);
    }
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return median(t);
}

float bf(__nv_bfloat16 v) { return __bfloat162float(v); }

} // namespace

int main(int argc, char **argv)
{
    setvbuf(stdout, nullptr, _IOLBF, 0); // a hung or killed run keeps what it printed
    int reps = 7;
    bool decode_only = false;   // only the second table (the decode inside the GEMM)
    bool profile_fused = false; // one launch of the fused stand-in (gate+up, B = 4096), for ncu
    bool wa_only = false;       // only the last table (W as A, B = 128 and 256)
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = std::max(1, atoi(argv[++i]));
        else if (!strcmp(argv[i], "--decode-only"))
            decode_only = true;
        else if (!strcmp(argv[i], "--profile-fused"))
            profile_fused = true;
        else if (!strcmp(argv[i], "--wa"))
            wa_only = decode_only = true;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    g_sms = prop.multiProcessorCount;
    {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(g_sms);
        cfg.blockDim = dim3(THREADS);
        cfg.dynamicSmemBytes = smem_bytes<256, false>();
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = 2;
        at[0].val.clusterDim.y = 1;
        at[0].val.clusterDim.z = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        int nc = 0;
        CK(cudaFuncSetAttribute(gemm_kernel<256, 2, false, false>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)smem_bytes<256, false>()));
        CK(cudaOccupancyMaxActiveClusters(&nc, gemm_kernel<256, 2, false, false>, &cfg));
        printf("clusters of 2 resident at once: %d (of %d SMs)\n", nc, g_sms);
    }
    printf("device: %s, %d SMs; graphs of 10 launches, median of %d replays\n", prop.name,
           prop.multiProcessorCount, reps);
    static const struct {
        const char *name;
        int N, K;
    } MATS[] = { { "q", 4096, 4096 },
                 { "k", 1024, 4096 },
                 { "v", 1024, 4096 },
                 { "o", 4096, 4096 },
                 { "gate", 14336, 4096 },
                 { "up", 14336, 4096 },
                 { "down", 4096, 14336 },
                 { "qkv (stacked)", 6144, 4096 },
                 { "gate+up (stacked)", 28672, 4096 } };
    const int n_mats = sizeof MATS / sizeof MATS[0], Ms[] = { 512, 1024, 4096 };
    const int maxM = 4096;
    size_t maxW = 0;
    for (const auto &m : MATS) maxW = std::max(maxW, (size_t)m.N * m.K);
    __nv_bfloat16 *x, *W, *y0, *y1;
    CK(cudaMalloc(&x, (size_t)maxM * 14336 * 2));
    CK(cudaMalloc(&W, maxW * 2));
    CK(cudaMalloc(&y0, (size_t)maxM * 28672 * 2));
    CK(cudaMalloc(&y1, (size_t)maxM * 28672 * 2));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cublasHandle_t h;
    CB(cublasCreate(&h));
    CB(cublasSetStream(h, st));
    bool all_ok = true;
    // the variants: (CL, DEFER)
    static const int VAR[4][2] = { { 1, 0 }, { 2, 0 }, { 1, 1 }, { 2, 1 } };
    printf(
        "| B | matrix | cublasGemmEx µs | CL = 1 (BN) | x | CL = 2 | x | CL = 1, y stored during "
        "the next tile | x | CL = 2, the same | x | check |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int M : Ms) {
        if (decode_only) break;
        double sum[2][5] = {}; // [7 matrices, stacked][cuBLAS, VAR 0..3]
        for (int mi = 0; mi < n_mats; mi++) {
            const int N = MATS[mi].N, K = MATS[mi].K;
            fill_random<<<1024, 256, 0, st>>>(x, (size_t)M * K, 17u + mi, 1.f);
            fill_random<<<1024, 256, 0, st>>>(W, (size_t)N * K, 91u + mi, 0.05f);
            CK(cudaGetLastError());
            const float one = 1.f, zero = 0.f;
            auto ref = [&]() {
                CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K, x,
                                CUDA_R_16BF, K, &zero, y0, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
            };
            std::vector<__nv_bfloat16> hx((size_t)M * K), hw((size_t)N * K), h1((size_t)M * N);
            CK(cudaMemcpy(hx.data(), x, hx.size() * 2, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(hw.data(), W, hw.size() * 2, cudaMemcpyDeviceToHost));
            float t[5];
            t[0] = time_graph(ref, st, 10, reps);
            bool ok = true;
            double worst = 0;
            int bn = 0;
            for (int v = 0; v < 4; v++) {
                const int cl = VAR[v][0];
                const Gemm g = plan(x, W, M, N, K, cl, VAR[v][1]);
                bn = g.bn;
                auto own = [&]() { launch(g, y1, st); };
                CK(cudaMemsetAsync(y1, 0xff, (size_t)M * N * 2, st)); // NaN where unwritten
                own();
                CK(cudaGetLastError());
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(h1.data(), y1, h1.size() * 2, cudaMemcpyDeviceToHost));
                // sampled outputs against float64; every output written
                uint64_t r = 88172645463325252ull;
                for (int sI = 0; sI < 2048 && ok; sI++) {
                    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                    const int i = (int)(r % (uint64_t)M), j = (int)((r >> 32) % (uint64_t)N);
                    double ref64 = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        const double p =
                            (double)bf(hx[(size_t)i * K + k]) * bf(hw[(size_t)j * K + k]);
                        ref64 += p;
                        mag += fabs(p);
                    }
                    // the output's BF16 rounding (half an ulp: 2^-9 relative) and the fp32 sum's
                    const double bound = fabs(ref64) / 256.0 + K * ldexp(mag, -24) + 1e-30;
                    const double e = fabs((double)bf(h1[(size_t)i * N + j]) - ref64);
                    worst = std::max(worst, e / bound);
                    if (!(e <= bound)) {
                        printf("MISMATCH B=%d %s variant %d y[%d][%d] = %g, float64 %g\n", M,
                               MATS[mi].name, v, i, j, bf(h1[(size_t)i * N + j]), ref64);
                        ok = false;
                    }
                }
                size_t nan = 0;
                for (size_t q = 0; q < h1.size(); q++) nan += !(bf(h1[q]) == bf(h1[q]));
                if (nan) {
                    printf("B=%d %s variant %d: %zu outputs not written\n", M, MATS[mi].name, v,
                           nan);
                    ok = false;
                }
                t[v + 1] = time_graph(own, st, 10, reps);
            }
            all_ok = all_ok && ok;
            // the 7 matrices; the stacked block is qkv, o, gate+up and down
            const bool in7 = mi < 7, stacked = mi >= 7 || mi == 3 || mi == 6;
            for (int v = 0; v < 5; v++) {
                if (in7) sum[0][v] += t[v];
                if (stacked) sum[1][v] += t[v];
            }
            printf(
                "| %d | %s | %.1f | %.1f (%d) | %.3f | %.1f | %.3f | %.1f | %.3f | %.1f | %.3f | %s, "
                "worst %.2f of the bound |\n",
                M, MATS[mi].name, t[0], t[1], bn, t[0] / t[1], t[2], t[0] / t[2], t[3], t[0] / t[3],
                t[4], t[0] / t[4], ok ? "ok" : "FAIL", worst);
        }
        for (int set = 0; set < 2; set++)
            printf(
                "| %d | block, %s | %.1f | %.1f | **%.3f** | %.1f | **%.3f** | %.1f | **%.3f** | %.1f "
                "| **%.3f** | |\n",
                M, set ? "stacked (qkv, o, gate+up, down)" : "7 matrices", sum[set][0], sum[set][1],
                sum[set][0] / sum[set][1], sum[set][2], sum[set][0] / sum[set][2], sum[set][3],
                sum[set][0] / sum[set][3], sum[set][4], sum[set][0] / sum[set][4]);
    }
    // The next block's decode inside the GEMM: per stacked matrix, the stand-in decode of the
    // same matrix's weights (the next block's) by the producer warpgroup's idle warps, against
    // cuBLAS followed by the same decode over the whole GPU (the pipeline's best case: no
    // overlap, nothing lost to it).
    const long long max_units = (long long)maxW / 1024;
    uint8_t *din, *dout, *dout2;
    CK(cudaMalloc(&din, (size_t)max_units * kUnitIn));
    CK(cudaMalloc(&dout, (size_t)max_units * kUnitOut));
    CK(cudaMalloc(&dout2, (size_t)max_units * kUnitOut));
    fill_random<<<1024, 256, 0, st>>>(reinterpret_cast<__nv_bfloat16 *>(din),
                                      (size_t)max_units * kUnitIn / 2, 5u, 1.f);
    if (wa_only) {
        // Issue 11: W as A, the batch as N (wa_kernel), against cuBLAS and against the op's
        // path there today (the decode over the whole GPU, then cuBLAS); times only
        float *yt;
        CK(cudaMalloc(&yt, (size_t)28672 * 256 * 4));
        printf(
            "\nW as A, the whole batch as N (stand-in decode, 1.5 B a weight read; split sums "
            "by float2 atomics); µs, x = cuBLAS / column\n"
            "| B | matrix | cuBLAS | decode, then cuBLAS (x) | 8 decoding warps, input by bulk copy "
            "(x) | 8, input in registers (x) | 8, no input loads (x) | 8, barriers only (x) | "
            "4, input by bulk copy (x) |\n"
            "|---|---|---|---|---|---|---|---|---|\n");
        for (int M : { 128, 256 }) {
            double tot[2][7] = {};
            for (int mi = 0; mi < n_mats; mi++) {
                const int N = MATS[mi].N, K = MATS[mi].K;
                fill_random<<<1024, 256, 0, st>>>(x, (size_t)M * K, 17u + mi, 1.f);
                fill_random<<<1024, 256, 0, st>>>(W, (size_t)N * K, 91u + mi, 0.05f);
                const float one = 1.f, zero = 0.f;
                auto ref = [&]() {
                    CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K,
                                    x, CUDA_R_16BF, K, &zero, y0, CUDA_R_16BF, N,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                };
                const Dec dec2{ din, dout2, (long long)N * K / 1024, 0 };
                auto arena = [&]() {
                    standin_plain<<<g_sms * 8, 256, 0, st>>>(dec2);
                    ref();
                };
                const CUtensorMap tx = tensor_map(x, M, K, M);
                auto v = [&](int which) {
                    if (M == 256)
                        launch_wa_variant<256>(which, tx, din, yt, N, K, st);
                    else
                        launch_wa_variant<128>(which, tx, din, yt, N, K, st);
                };
                for (int which = 0; which < 5; which++) v(which);
                CK(cudaGetLastError());
                CK(cudaStreamSynchronize(st));
                float t[7];
                t[0] = time_graph(ref, st, 10, reps);
                t[1] = time_graph(arena, st, 10, reps);
                for (int which = 0; which < 5; which++)
                    t[2 + which] = time_graph([&]() { v(which); }, st, 10, reps);
                const bool in7 = mi < 7, stacked = mi >= 7 || mi == 3 || mi == 6;
                for (int c = 0; c < 7; c++) {
                    if (in7) tot[0][c] += t[c];
                    if (stacked) tot[1][c] += t[c];
                }
                printf("| %d | %s | %.1f |", M, MATS[mi].name, t[0]);
                for (int c = 1; c < 7; c++) printf(" %.1f (%.3f) |", t[c], t[0] / t[c]);
                printf("\n");
            }
            for (int set = 0; set < 2; set++) {
                printf("| %d | **%s** | %.1f |", M, set ? "stacked block" : "7 matrices",
                       tot[set][0]);
                for (int c = 1; c < 7; c++)
                    printf(" %.1f (**%.3f**) |", tot[set][c], tot[set][0] / tot[set][c]);
                printf("\n");
            }
        }
        return 0;
    }
    printf(
        "\nThe next block's decode (stand-in: 1.5 B read, 2 B written a weight) inside the "
        "GEMM, stacked matrices; µs\n"
        "| B | matrix | cuBLAS | decode, whole GPU | cuBLAS then decode (x) | ours | ours + "
        "decode in 3 warps an SM (x) | the same, paced (x) | ours with the decode's shared memory, "
        "unused (x) "
        "| that decode alone | output |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const int STACKED[4] = { 7, 3, 8, 6 };
    for (int M : Ms) {
        if (profile_fused) break;
        double tot[8] = {};
        for (int q = 0; q < 4; q++) {
            const int mi = STACKED[q], N = MATS[mi].N, K = MATS[mi].K;
            fill_random<<<1024, 256, 0, st>>>(x, (size_t)M * K, 17u + mi, 1.f);
            fill_random<<<1024, 256, 0, st>>>(W, (size_t)N * K, 91u + mi, 0.05f);
            const float one = 1.f, zero = 0.f;
            auto ref = [&]() {
                CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K, x,
                                CUDA_R_16BF, K, &zero, y0, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
            };
            const Dec dec{ din, dout, (long long)N * K / 1024, 0 },
                dec2{ din, dout2, dec.units, 0 }, decp{ din, dout, dec.units, 1 };
            auto plain = [&]() { standin_plain<<<g_sms * 8, 256, 0, st>>>(dec2); };
            const Gemm g = plan(x, W, M, N, K, M >= 4096 ? 2 : 1, 1);
            auto own = [&]() { launch(g, y1, st); };
            auto own_dec = [&]() { launch(g, y1, st, dec); };
            auto dec_alone = [&]() { launch(g, y1, st, dec, 0); };
            auto own_decp = [&]() { launch(g, y1, st, decp); };
            // the decode build with one unit to decode: what its register split costs the GEMM

            // the decode in the GEMM writes what the plain one does, and y is still right
            CK(cudaMemsetAsync(dout, 0, (size_t)dec.units * kUnitOut, st));
            CK(cudaMemsetAsync(dout2, 0xff, (size_t)dec.units * kUnitOut, st));
            plain();
            own_decp();
            ref();
            CK(cudaGetLastError());
            CK(cudaStreamSynchronize(st));
            std::vector<uint8_t> a((size_t)dec.units * kUnitOut), b(a.size());
            CK(cudaMemcpy(a.data(), dout, a.size(), cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(b.data(), dout2, b.size(), cudaMemcpyDeviceToHost));
            std::vector<__nv_bfloat16> h0((size_t)M * N), h1((size_t)M * N);
            CK(cudaMemcpy(h0.data(), y0, h0.size() * 2, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(h1.data(), y1, h1.size() * 2, cudaMemcpyDeviceToHost));
            // ours against cuBLAS, both BF16 of fp32 sums: within 2 BF16 ulps
            size_t bad = 0;
            for (size_t t = 0; t < h0.size(); t++) {
                const float u = bf(h0[t]), v = bf(h1[t]);
                bad += !(fabsf(u - v) <= fabsf(u) / 64.f + 1e-3f);
            }
            const bool same = a == b && !bad;
            all_ok = all_ok && same;
            float t[8];
            t[0] = time_graph(ref, st, 10, reps);
            t[1] = time_graph(plain, st, 10, reps);
            t[2] = t[0] + t[1];
            t[3] = time_graph(own, st, 10, reps);
            t[4] = time_graph(own_dec, st, 10, reps);
            t[5] = time_graph(dec_alone, st, 10, reps);
            t[6] = time_graph(own_decp, st, 10, reps);
            g_pad = smem_bytes<256, true>() - smem_bytes<256, false>();
            t[7] = time_graph(own, st, 10, reps);
            g_pad = 0;
            for (int v = 0; v < 8; v++) tot[v] += t[v];
            printf(
                "| %d | %s | %.1f | %.1f | %.1f (%.3f) | %.1f | %.1f (%.3f) | %.1f (%.3f) | %.1f "
                "(%.3f) | %.1f | %s |\n",
                M, MATS[mi].name, t[0], t[1], t[2], t[0] / t[2], t[3], t[4], t[0] / t[4], t[6],
                t[0] / t[6], t[7], t[0] / t[7], t[5], same ? "same" : "DIFFERENT");
            if (bad)
                printf("B=%d %s: %zu outputs off cuBLAS's by more than 2 ulps\n", M, MATS[mi].name,
                       bad);
        }
        printf(
            "| %d | **stacked block** | %.1f | %.1f | %.1f (**%.3f**) | %.1f | %.1f (**%.3f**) | "
            "%.1f (**%.3f**) | %.1f (**%.3f**) | %.1f | |\n",
            M, tot[0], tot[1], tot[2], tot[0] / tot[2], tot[3], tot[4], tot[0] / tot[4], tot[6],
            tot[0] / tot[6], tot[7], tot[0] / tot[7], tot[5]);
    }
    if (profile_fused) {
        const Gemm g = plan(x, W, 4096, 28672, 4096, 1, 1);
        launch_fused<1>(g.tx, din, y1, 4096, 28672, 4096, st);
        launch_fused<2>(g.tx, din, y1, 4096, 28672, 4096, st);
        CK(cudaStreamSynchronize(st));
        return 0;
    }
    // W decoded into the GEMM's stages (stand-in; times only)
    printf("\nW decoded straight into the GEMM's stages (stand-in arithmetic, 1.5 B a weight "
           "read), stacked matrices; µs, x = cuBLAS / column\n"
           "| B | matrix | cuBLAS | ours, W by TMA (x) | W decoded into the stages, 4 warps (x) | "
           "8 warps (x) | 8, no input copies (x) | 8, barriers only (x) |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int M : Ms) {
        double tot[7] = {};
        for (int q = 0; q < 4; q++) {
            const int mi = STACKED[q], N = MATS[mi].N, K = MATS[mi].K;
            const float one = 1.f, zero = 0.f;
            auto ref = [&]() {
                CB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K, x,
                                CUDA_R_16BF, K, &zero, y0, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
            };
            const Gemm g = plan(x, W, M, N, K, 1, 1);
            auto own = [&]() { launch(g, y1, st); };
            auto fused = [&]() { launch_fused<1>(g.tx, din, y1, M, N, K, st); };
            auto fused8 = [&]() { launch_fused<2>(g.tx, din, y1, M, N, K, st); };
            auto fused8_noload = [&]() { launch_fused<2, 1>(g.tx, din, y1, M, N, K, st); };
            auto fused8_none = [&]() { launch_fused<2, 2>(g.tx, din, y1, M, N, K, st); };
            auto fused8_reg = [&]() { launch_fused<2, 3>(g.tx, din, y1, M, N, K, st); };
            fused();
            fused8();
            CK(cudaGetLastError());
            CK(cudaStreamSynchronize(st));
            float t[7] = {
                time_graph(ref, st, 10, reps),           time_graph(own, st, 10, reps),
                time_graph(fused, st, 10, reps),         time_graph(fused8, st, 10, reps),
                time_graph(fused8_noload, st, 10, reps), time_graph(fused8_none, st, 10, reps),
                time_graph(fused8_reg, st, 10, reps)
            };
            for (int v = 0; v < 7; v++) tot[v] += t[v];
            printf(
                "| %d | %s | %.1f | %.1f (%.3f) | %.1f (%.3f) | %.1f (%.3f) | %.1f (%.3f) | %.1f "
                "(%.3f) |\n",
                M, MATS[mi].name, t[0], t[1], t[0] / t[1], t[2], t[0] / t[2], t[3], t[0] / t[3],
                t[4], t[0] / t[4], t[5], t[0] / t[5]);
        }
        printf("| %d | **stacked block** | %.1f | %.1f (**%.3f**) | %.1f (**%.3f**) | %.1f "
               "(**%.3f**) |\n",
               M, tot[0], tot[1], tot[0] / tot[1], tot[2], tot[0] / tot[2], tot[3],
               tot[0] / tot[3]);
        printf("| %d | (the same, 8 warps: no input copies / barriers only / input in registers, 4 "
               "stages) | %.1f (**%.3f**) | %.1f (**%.3f**) | %.1f (**%.3f**) | | | |\n",
               M, tot[4], tot[0] / tot[4], tot[5], tot[0] / tot[5], tot[6], tot[0] / tot[6]);
    }
    printf(all_ok ? "ALL CHECKS PASS\n" : "CHECKS FAILED\n");
    return all_ok ? 0 : 1;
}
