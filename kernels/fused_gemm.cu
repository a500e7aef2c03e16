/* The fused matmul on fixed-code tensors for batches past the mma.sync kernel's 32
 * (kernels/fused_matmul.cu sends them here): y = x·Wᵀ, W decoded from its compressed
 * payload in registers and multiplied straight from there by Hopper's warpgroup MMA (wgmma
 * with A in registers, sm_90a code only); W is never stored, to shared or global memory.
 *
 * A CTA (384 threads, one an SM) takes a row block of 128 rows (8 strips of 16), a tile of
 * 64 or 128 batch rows (64 NB) and a range of the strips' tiles (split-K):
 *   consumers two warpgroups; warp w of warpgroup g walks strip 4 g + w over the range
 *             (walk_strip: the mma.sync kernel's walk over one strip, unchained), and a step's
 *             32 decoded weights a lane are the A fragments of wgmma m64n64k16 as they are
 *             of mma.sync (a warpgroup's 4 warps are its 64 rows); per step the warpgroup
 *             waits for the step's x stage, issues its wgmma with x from shared memory and
 *             decodes the next step while they run; once the step before's MMAs are done,
 *             each warp arrives on that step's empty barrier;
 *   producer  one warpgroup: per step it loads x's 64 columns of the tile's rows (zero past
 *             K and past the batch) a few steps ahead into registers, and stores them into the
 *             step's stage in the 128-byte swizzle, with each half's columns in the order the
 *             decode hands them to the lanes (store_x_half), then arrives on its full barrier.
 * Every shared byte has one writer: x stages are rewritten by the producer only after every
 * consumer warp's arrival for the step before in them; each consumer warp has its own ring.
 * Each W element is decoded once per batch tile, so batches past 128 run several tiles (the op
 * takes decode + cuBLAS there by default: bench/RESULTS.md).
 *
 * Split-K: the host picks S splits so that the grid fills the GPU; each CTA writes its
 * 128 x 64 NB fp32 partial to the workspace and the last of a tile's S CTAs to finish sums
 * the S partials in split order: deterministic for a given grid, i.e. device. Accuracy as the
 * mma.sync kernel's (kernels/matmul.h).
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/device_cache.cuh"
#include "kernels/fused_gemm.h"
#include "kernels/fused_matmul_strip.cuh"
#include "kernels/split_count.cuh"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

/* The PTX (sm_75, sm_80, sm_90) and sm_90 (not 90a) code hold an empty kernel, so its helpers
 * go unused. */
#pragma nv_diag_suppress 177

namespace {

using namespace df11i_fused;

/* A CTA: two consumer warpgroups, each 4 warps on the 4 strips (16 rows each) of its 64
 * rows, both over the same tiles, so that one x stage serves 128 rows of W; and one producer
 * warpgroup that brings x's stages in. */
constexpr int kRows = 128;    /* W rows a CTA */
constexpr int kConsumers = 8; /* warps: 2 warpgroups */
constexpr int kThreads = 32 * kConsumers + 128;
constexpr int kXStages = 4;
/* Steps a consumer warp's sm copies run ahead of its decode (walk_strip's AHEAD): 2, 3 and 4
 * measured within 1% of each other at B = 33..128 (bench/RESULTS.md). */
constexpr int kAhead = 3;
constexpr size_t kMaxSmem = 227 * 1024; /* a CTA's dynamic shared memory on sm_90 */
/* A CTA's batch tile: NB x kBatchRows rows of x, the N of one wgmma (accumulators: NB x 32
 * registers a consumer thread). An x stage holds the tile's 64 columns of a step. */
constexpr int kBatchRows = 64;
template <int NB> __host__ __device__ constexpr uint32_t x_stage_bytes()
{
    return NB * kBatchRows * 128;
}
template <int NB> constexpr size_t smem_bytes()
{
    return 1024 /* alignment */ + (size_t)kXStages * x_stage_bytes<NB>() +
           (size_t)kConsumers * (RING_BYTES + CORR_BYTES) + 8 * (2 * kXStages) + 4 /* last */;
}
static_assert(smem_bytes<2>() <= kMaxSmem, "one CTA an SM");

struct GemmArgs {
    Mat W[DF11_FUSED_MAX_PARTS]; /* g0: the part's first row block in the launch */
    const uint16_t *x;           /* B x K BF16, 16-byte aligned rows, K % 8 == 0 */
    void *y;                     /* B x ldy, F32 or (y_bf16) BF16 */
    float *ws;                   /* partials: (row blocks x nbt) x S x kRows x kBatchRows NB */
    unsigned *sem;               /* a word per (row block, batch tile) when S > 1 */
    unsigned *err;
    int n_parts, B, K, ldy, y_bf16, nbt, S, tiles;
};

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

/* D(64 x 64, fp32) += A(64 x 16, a warp's 16 rows in a0..a3 as mma.m16n8k16's A fragment)
 * B(16 x 64)ᵀ, B in shared memory (descriptor). */
__device__ __forceinline__ void wgmma_m64n64_ra(float *d, uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint64_t db)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}

/* The same with N = 32. The NB = 1 tile runs as two of these a slice, each reading the A
 * registers again: issued as one m64n64k16 a slice, ptxas staged every slice's A through the
 * same 4 registers and serialised the MMAs (C7513), so they could not run while the next step
 * decodes. */
__device__ __forceinline__ void wgmma_m64n32_ra(float *d, uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint64_t db)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}

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
/* The accumulators stay where the asynchronous MMAs write them: the compiler may not move
 * them across this point. */
template <int R> __device__ __forceinline__ void fence_acc(float *d)
{
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* Registers a thread, moved between the warpgroups at the kernel's start (the launch gives
 * every thread 168): the consumers hold the A registers of two steps while a step's MMAs run
 * beside the next step's decode; the producer gives them up. 128 x 88 + 256 x 208 <= 65,536. */
constexpr int kProducerRegs = 88, kConsumerRegs = 208;
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

/* The decode hands a lane 8 consecutive columns of each 32-column half of a step (8q .. 8q + 7,
 * q = lane & 3), and uses them as the A fragments of the half's two k16 slices: lane q's pair
 * of logical columns 2q, 2q + 1 of slice j is its word 2j, and 2q + 8, 2q + 9 its word 2j + 1
 * (fused_matmul_strip.cuh). So x goes to shared memory with its columns in the same order: in
 * each half, logical 16-byte chunk m holds word m of the 4 physical chunks, a 4 x 4 transpose
 * of 32-bit words. */
struct XHalf {
    uint4 c[4];
};
__device__ __forceinline__ void store_x_half(uint8_t *stage, uint32_t r, uint32_t h, const XHalf &v)
{
    const uint32_t w[4][4] = { { v.c[0].x, v.c[0].y, v.c[0].z, v.c[0].w },
                               { v.c[1].x, v.c[1].y, v.c[1].z, v.c[1].w },
                               { v.c[2].x, v.c[2].y, v.c[2].z, v.c[2].w },
                               { v.c[3].x, v.c[3].y, v.c[3].z, v.c[3].w } };
#pragma unroll
    for (uint32_t m = 0; m < 4; m++) /* row r's chunk c at chunk c ^ (r & 7): the swizzle */
        *reinterpret_cast<uint4 *>(stage + r * 128 + (((4 * h + m) ^ (r & 7)) << 4)) =
            make_uint4(w[0][m], w[1][m], w[2][m], w[3][m]);
}

template <int NB> __global__ void __launch_bounds__(kThreads, 1) fused_gemm_kernel(GemmArgs a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int N = kBatchRows * NB; /* batch rows a CTA */
    constexpr int R = 32 * NB;         /* accumulators a consumer thread */
    constexpr uint32_t kXBytes = x_stage_bytes<NB>();
    extern __shared__ __align__(16) uint8_t dsm[];
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t q = lane & 3, nrow = lane >> 2;
    uint8_t *xs = dsm + ((1024 - (smem_u32(dsm) & 1023)) & 1023); /* 1024-aligned: the swizzle */
    uint8_t *rings = xs + kXStages * kXBytes;
    uint8_t *corrs = rings + kConsumers * RING_BYTES;
    uint64_t *xfull = reinterpret_cast<uint64_t *>(corrs + kConsumers * CORR_BYTES);
    uint64_t *xempty = xfull + kXStages;
    unsigned *last = reinterpret_cast<unsigned *>(xempty + kXStages);

    const int bt = (int)blockIdx.x % a.nbt, rest = (int)blockIdx.x / a.nbt;
    const int sp = rest % a.S, rb = rest / a.S, unit = rb * a.nbt + bt;
    const Mat &W =
        a.W[part_index<DF11_FUSED_MAX_PARTS>(a.n_parts, rb, [&](int i) { return a.W[i].g0; })];
    const int t0 = (int)((long long)sp * a.tiles / a.S),
              t1 = (int)((long long)(sp + 1) * a.tiles / a.S);
    const int n_steps = 4 * (t1 - t0 - 1) + (t1 == a.tiles ? W.last_steps : 4);

    if (tid == 0) {
        for (int i = 0; i < kXStages; i++) {
            mbar_init(xfull + i, 4);           /* the 4 producer warps */
            mbar_init(xempty + i, kConsumers); /* every consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if ((int)warp >= kConsumers) {
        /* producer: step j's 64 columns of the tile's N rows of x into stage j % kXStages,
         * transposed (store_x_half), zero past K and past the batch; each thread's loads run
         * kDepth steps ahead of its stores (with each step's MMAs waited for, one step ahead
         * made B = 128 5% slower than 3; with them in flight, one step ahead at NB = 2 took
         * as long as the waited kernel 3 ahead, bench/RESULTS.md) */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegs));
        const uint32_t ptid = tid - 32 * kConsumers;
        constexpr int kTasks = 2 * N / 128; /* (row, half) pairs a thread */
        /* steps of x in a thread's registers: as many as kProducerRegs holds without spills */
        constexpr int kDepth = NB == 1 ? 2 : 1;
        XHalf v[kDepth][kTasks];
        auto load = [&](int j, XHalf *to) {
            const int col0 = 256 * (t0 + j / 4) + 64 * (j % 4);
#pragma unroll
            for (int i = 0; i < kTasks; i++) {
                const uint32_t task = ptid + 128 * i, r = task >> 1, h = task & 1;
                const int b = bt * N + (int)r, col = col0 + 32 * (int)h;
                const uint16_t *src = a.x + (long long)b * a.K + col;
#pragma unroll
                for (int c = 0; c < 4; c++)
                    to[i].c[c] = b < a.B && col + 8 * c < a.K
                                     ? __ldg(reinterpret_cast<const uint4 *>(src + 8 * c))
                                     : make_uint4(0, 0, 0, 0);
            }
        };
#pragma unroll
        for (int d = 0; d < kDepth; d++)
            if (d < n_steps) load(d, v[d]);
        for (int j0 = 0; j0 < n_steps; j0 += kDepth) {
#pragma unroll
            for (int d = 0; d < kDepth; d++) { /* v[d] holds step j */
                const int j = j0 + d, st = j % kXStages, use = j / kXStages;
                if (j >= n_steps) break;
                if (use) mbar_wait(xempty + st, (uint32_t)(use - 1) & 1);
                uint8_t *stage = xs + st * kXBytes;
#pragma unroll
                for (int i = 0; i < kTasks; i++) {
                    const uint32_t task = ptid + 128 * i;
                    store_x_half(stage, task >> 1, task & 1, v[d][i]);
                }
                fence_proxy_async(); /* for wgmma's reads */
                __syncwarp();
                if (lane == 0) mbar_arrive(xfull + st);
                if (j + kDepth < n_steps) load(j + kDepth, v[d]);
            }
        }
        return;
    }

    /* consumer warp: strip w of warpgroup g's 64 rows */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegs));
    const int g = (int)warp >> 2, w = (int)warp & 3, s = (rb - W.g0) * 8 + 4 * g + w;
    uint4 *corr4 = reinterpret_cast<uint4 *>(corrs + warp * CORR_BYTES + lane * 64);
#pragma unroll
    for (int i = 0; i < 4; i++) corr4[i] = make_uint4(0, 0, 0, 0);
    float acc[R];
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.f;
    fence_acc<R>(acc);
    /* a warp past the tensor's strips walks the last one (its bytes hit in cache): its rows
     * are not stored */
    walk_strip<false, 1, kAhead>(
        W, s < W.n_strips ? s : W.n_strips - 1, t0, t1, lane, rings + warp * RING_BYTES, corr4,
        a.err, [](int, int) {},
        [&](int t, int gs, const uint32_t o[16]) {
            const int j = 4 * (t - t0) + gs, st = j % kXStages;
            mbar_wait(xfull + st, (uint32_t)(j / kXStages) & 1);
            /* the stage's descriptor once a step, and each MMA's as an offset from it: the
             * start address is its low 14 bits, and no offset carries out of them */
            const uint64_t xd = sw128_desc(smem_u32(xs + st * kXBytes));
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) { /* slice kk = 2h + j' of the step */
                const int h = kk >> 1, jj = kk & 1;
                const uint32_t a0 = o[8 * h + 2 * jj], a1 = o[8 * h + 4 + 2 * jj],
                               a2 = o[8 * h + 2 * jj + 1], a3 = o[8 * h + 5 + 2 * jj];
                if (NB == 1) { /* batch rows 0..31, then 32..63 (32 rows of 128 bytes on) */
                    wgmma_m64n32_ra(acc, a0, a1, a2, a3, xd + desc_offset(32 * kk));
                    wgmma_m64n32_ra(acc + 16, a0, a1, a2, a3, xd + desc_offset(32 * 128 + 32 * kk));
                } else {
#pragma unroll
                    for (int n = 0; n < NB; n++)
                        wgmma_m64n64_ra(acc + 32 * n, a0, a1, a2, a3,
                                        xd + desc_offset(n * x_stage_bytes<1>() + 32 * kk));
                }
            }
            wgmma_commit();
            /* the step's MMAs run while the next step decodes: wait for the step before's,
             * whose x stage is then free (B = 33..96 4-5% faster than waiting for these here,
             * bench/RESULTS.md) */
            wgmma_wait<1>();
            __syncwarp();
            if (j > 0 && lane == 0) mbar_arrive(xempty + (j - 1) % kXStages);
        });
    wgmma_wait<0>();
    fence_acc<R>(acc);

    /* acc[32 n + 4 i + e]: row 64 g + 16 w + nrow + 8 (e >> 1), batch row
     * bt N + 64 n + 8 i + 2 q + (e & 1) */
    auto store_y = [&](const float *v) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            const int e = i & 3, row = 64 * g + 16 * w + (int)nrow + 8 * (e >> 1);
            const int r = (rb - W.g0) * kRows + row;
            const int b = bt * N + 64 * (i >> 5) + 8 * ((i >> 2) & 7) + 2 * (int)q + (e & 1);
            if (b < a.B && r < W.rows) {
                const long long at = (long long)b * a.ldy + W.y_col + r;
                if (a.y_bf16)
                    static_cast<__nv_bfloat16 *>(a.y)[at] = __float2bfloat16_rn(v[i]);
                else
                    static_cast<float *>(a.y)[at] = v[i];
            }
        }
    };
    if (a.S == 1) {
        store_y(acc);
        return;
    }
    constexpr int kCT = 32 * kConsumers; /* consumer threads */
    float *part = a.ws + (long long)unit * a.S * (kRows * N);
#pragma unroll
    for (int i = 0; i < R; i++) part[(long long)sp * kRows * N + i * kCT + tid] = acc[i];
    /* the consumers' partials before thread 0's count, the others' reads after its acquire
     * (kernels/split_count.cuh) */
    asm volatile("bar.sync 1, %0;" ::"n"(kCT) : "memory");
    if (tid == 0) *last = split_count(a.sem + unit) == (unsigned)a.S - 1;
    asm volatile("bar.sync 1, %0;" ::"n"(kCT) : "memory");
    if (!*last) return;

    /* p_0 + p_1 + ... in split order (this CTA's own read back: it wrote it), kSumChunk
     * values a split loaded at once (this is the launch's last work; a round trip a value
     * was its longest chain) */
    constexpr int kSumChunk = 32;
#pragma unroll
    for (int c = 0; c < R; c += kSumChunk) {
        for (int k = 0; k < a.S; k++) {
            const float *pk = part + (long long)k * kRows * N + tid;
            float v[kSumChunk];
#pragma unroll
            for (int i = 0; i < kSumChunk; i++) v[i] = __ldcg(pk + (c + i) * kCT);
#pragma unroll
            for (int i = 0; i < kSumChunk; i++) acc[c + i] = k ? acc[c + i] + v[i] : v[i];
        }
    }
    store_y(acc);
    if (tid == 0) atomicExch(a.sem + unit, 0u);
#endif
}

/* Per device: SMs and CTAs an SM (0: the path is unavailable). */
struct GemmGeom {
    int sms, occ;
};
PerDevice<GemmGeom> g_geom;

df11_status gemm_geom(GemmGeom *out)
{
    *out = GemmGeom{};
#ifdef DF11_CUDA_SM90A
    return g_geom.get("fused gemm", out, [](int dev, GemmGeom *g, bool *usable) {
        int major = 0, minor = 0;
        cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (e == cudaSuccess)
            e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        if (e == cudaSuccess)
            e = cudaDeviceGetAttribute(&g->sms, cudaDevAttrMultiProcessorCount, dev);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused gemm: device attributes: %s",
                              cudaGetErrorString(e));
        /* sm_90a code runs on compute capability 9.0 only */
        if (major != 9 || minor != 0) return DF11_OK;
        int occ1 = 0;
        e = cudaFuncSetAttribute(fused_gemm_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem_bytes<1>());
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(fused_gemm_kernel<2>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)smem_bytes<2>());
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ1, fused_gemm_kernel<1>, kThreads,
                                                              smem_bytes<1>());
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&g->occ, fused_gemm_kernel<2>,
                                                              kThreads, smem_bytes<2>());
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused gemm: kernel attributes: %s",
                              cudaGetErrorString(e));
        if (occ1 < g->occ) g->occ = occ1; /* the splits assume the smaller */
        *usable = g->occ > 0;
        return DF11_OK;
    });
#else
    return DF11_OK;
#endif
}

/* x as the producers load it: 16-byte aligned rows of cols % 8 == 0 BF16. */
bool x_fits(const void *x, uint64_t cols)
{
    return reinterpret_cast<uintptr_t>(x) % 16 == 0 && cols % 8 == 0;
}

/* The row blocks (8 strips each) of a launch over these parts. */
long long row_blocks(uint32_t n_parts, const df11i_fixed_geom *geom)
{
    long long r = 0;
    for (uint32_t i = 0; i < n_parts; i++) r += ((long long)geom[i].n_strips + 7) / 8;
    return r;
}

/* Workspace of a launch of `units` (row block, batch tile) units in S splits, batch tiles of
 * kBatchRows NB rows: a semaphore word a unit at the start, a kRows x kBatchRows NB fp32
 * partial a CTA at the end. */
struct SplitBytes {
    uint64_t sem, part;
};
SplitBytes split_bytes(long long units, int S, int NB)
{
    if (S < 2) return SplitBytes{ 0, 0 };
    return SplitBytes{ (4 * (uint64_t)units + 255) / 256 * 256,
                       (uint64_t)units * S * kRows * kBatchRows * NB * 4 };
}

/* Batch tiles: one wgmma's rows up to a batch of that many, twice that past it. */
int batch_nb(uint32_t batch) { return batch <= kBatchRows ? 1 : 2; }

/* Splits of K: one unless the (row block, batch tile) units leave SMs idle, then as many as
 * fill them, at most 8 and with at least 2 tiles (512 columns) each, so units x splits <=
 * SMs x CTAs an SM (against at most 4 of at least 4 tiles: 4-5% faster on the 8B block at
 * B = 33..64, where k and v have 8 row blocks each). A shorter split would be mostly its
 * pipeline's fill, and small models (which never fill the GPU) would pay megabytes of
 * partials for nothing. */
int splits(long long units, int tiles, int full)
{
    if (units >= full) return 1;
    long long s = full / units;
    if (s > 8) s = 8;
    if (s > tiles / 2) s = tiles / 2;
    return s < 1 ? 1 : (int)s;
}

} // namespace

extern "C" int df11i_fused_gemm_supported(void)
{
    GemmGeom g;
    return gemm_geom(&g) == DF11_OK && g.sms > 0;
}

extern "C" df11_status df11i_fused_gemm_workspace(uint32_t n_parts, const df11i_fixed_geom *geom,
                                                  uint64_t *bytes)
{
    GemmGeom g;
    df11_status s = gemm_geom(&g);
    *bytes = 0;
    if (s != DF11_OK || !g.sms) return s;
    const long long rbs = row_blocks(n_parts, geom);
    const int tiles = (int)geom[0].tiles;
    uint64_t m = 0;
    /* split only where the units leave SMs idle: every batch tile count below that */
    const int full = g.sms * g.occ;
    for (long long u = rbs; u < full; u += rbs) {
        const SplitBytes b = split_bytes(u, splits(u, tiles, full), 2);
        if (b.sem > m) m = b.sem;
        if (b.part > m) m = b.part;
    }
    *bytes = 2 * m;
    return DF11_OK;
}

extern "C" int df11i_fused_gemm_takes_cols(uint64_t cols)
{
    return cols % 8 == 0 && df11i_fused_gemm_supported();
}

extern "C" int df11i_fused_gemm_takes(const void *x, uint64_t cols)
{
    return x_fits(x, cols) && df11i_fused_gemm_supported();
}

extern "C" df11_status df11i_fused_gemm(const df11i_fused_part *parts, uint32_t n_parts,
                                        const df11i_fixed_geom *geom, const void *x, uint32_t batch,
                                        void *y, uint32_t ldy, int y_bf16, void *ws,
                                        uint64_t ws_size, uint32_t *d_error, void *stream)
{
    GemmGeom gg;
    df11_status st = gemm_geom(&gg);
    if (st != DF11_OK) return st;
    if (!gg.sms || !x_fits(x, geom[0].cols))
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused gemm: not on this device or for this x");
    GemmArgs a = {};
    int y_col = 0;
    for (uint32_t i = 0; i < n_parts; i++) { /* part i's first row block: those before it */
        a.W[i] = mat_of(parts[i], geom[i], (int)row_blocks(i, geom), y_col);
        y_col += (int)geom[i].rows;
    }
    const long long rbs = row_blocks(n_parts, geom);
    const int NB = batch_nb(batch);
    const long long tile = (long long)kBatchRows * NB, nbt = (batch + tile - 1) / tile,
                    units = rbs * nbt;
    const int tiles = (int)geom[0].tiles;
    const int S = splits(units, tiles, gg.sms * gg.occ);
    const long long ctas = units * S;
    if (ctas > INT32_MAX) return df11i_fail(DF11_ERR_UNSUPPORTED, "fused gemm: %lld CTAs", ctas);
    const SplitBytes need = split_bytes(units, S, NB);
    if (need.sem + need.part > ws_size)
        return df11i_fail(DF11_ERR_STATE, "fused gemm: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)(need.sem + need.part));
    a.x = static_cast<const uint16_t *>(x);
    a.y = y;
    a.ws = reinterpret_cast<float *>(static_cast<uint8_t *>(ws) + (ws_size - need.part) / 4 * 4);
    a.sem = static_cast<unsigned *>(ws);
    a.err = d_error;
    a.n_parts = (int)n_parts;
    a.B = (int)batch;
    a.K = (int)geom[0].cols;
    a.ldy = (int)ldy;
    a.y_bf16 = y_bf16 != 0;
    a.nbt = (int)nbt;
    a.S = S;
    a.tiles = tiles;
    cudaStream_t cs = static_cast<cudaStream_t>(stream);
    if (NB == 1)
        fused_gemm_kernel<1><<<(unsigned)ctas, kThreads, smem_bytes<1>(), cs>>>(a);
    else
        fused_gemm_kernel<2><<<(unsigned)ctas, kThreads, smem_bytes<2>(), cs>>>(a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused gemm launch (%lld CTAs): %s", ctas,
                          cudaGetErrorString(e));
    return DF11_OK;
}
