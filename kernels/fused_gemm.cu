/* The fused matmul on fixed-code tensors for batches past the mma.sync kernel's 32
 * (kernels/fused_matmul.cu sends them here): y = x·Wᵀ, W decoded from its compressed
 * payload in registers, written to shared memory and multiplied there by Hopper's
 * warpgroup MMA (wgmma, sm_90a code only); W is never written back to global memory.
 *
 * A CTA (512 threads, one an SM) takes a row block of 64 rows (4 strips of 16), a tile of 64
 * batch rows and a range of the strips' tiles (split-K). Its warps are specialised:
 *   decoders  3 phases of 4 warps, a strip each; phase p walks tiles t0 + p, t0 + p + 3, ...
 *             (walk_strip: the mma.sync kernel's walk over one strip, unchained) and
 *             stores each step's 16 x 64 weights into its own decoded-W stages (4 a
 *             phase) in the 128-byte swizzle wgmma reads, then arrives on the stage's full
 *             barrier;
 *   consumers one warpgroup, fp32 accumulators in registers: per step it waits for the
 *             stage and for its x slice (TMA, a tensor map over x, zero past K and past the
 *             batch), runs 4 wgmma m64n64k16 with both operands in shared memory and, once
 *             the step before has finished, arrives on that step's empty barrier.
 * Every shared byte has one writer: a decoder warp rewrites only the stages of its phase, the
 * step before its own in them, once that step's empty barrier has completed (a phase is at
 * most one use ahead of the consumers there, so the barrier's parity is enough); x stages
 * are rewritten by the consumers' TMA thread after the same barrier. Each W element is
 * decoded once per batch tile; batches past 64 run several tiles (the op takes decode +
 * cuBLAS there by default: bench/RESULTS.md).
 *
 * Split-K: the host picks S splits so that the grid fills the GPU; each CTA writes its
 * 64 x 64 fp32 partial to the workspace and the last of a tile's S CTAs to finish sums the S
 * partials in split order: deterministic for a given grid, i.e. device. Accuracy as the
 * mma.sync kernel's (kernels/matmul.h).
 */
#include <cuda.h> /* CUtensorMap and cuTensorMapEncodeTiled's types; the entry point comes
                     from the runtime (cudaGetDriverEntryPointByVersion), libcuda is not linked */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <mutex>

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

constexpr int kRows = 64;         /* W rows a CTA: a 16-row strip for each of 4 warps */
constexpr int kWBytes = 64 * 128; /* a decoded-W stage: 64 rows x 64 BF16, swizzled */

/* The roles: 3 phases of 4 decoder warps (a 16-row strip each) and one consumer warpgroup
 * of 64 batch rows (fp32 accumulators: 32 registers a thread); a phase's 4 decoded-W stages
 * hold one tile, so a stage has one writer; kXStages x stages. 512 threads, 128 registers a
 * thread: one CTA an SM. */
constexpr int kN = 64; /* batch rows a CTA */
constexpr int kPhases = 3, kDecoders = 4 * kPhases, kStages = 4 * kPhases, kXStages = 3;
/* Steps a decoder warp's sm copies run ahead of its decode (walk_strip's AHEAD): 2 against
 * a tile (4) made B = 33..64 1-2% faster (bench/RESULTS.md). */
constexpr int kAhead = 2;
constexpr int kThreads = 32 * kDecoders + 128;
constexpr uint32_t kXBytes = kN * 128;  /* an x stage: 64 batch rows x 64 BF16, swizzled */
constexpr size_t kMaxSmem = 227 * 1024; /* a CTA's dynamic shared memory on sm_90 */
constexpr size_t kSmem = 1024 /* alignment */ + (size_t)kXStages * kXBytes + kStages * kWBytes +
                         (size_t)kDecoders * (RING_BYTES + CORR_BYTES) +
                         8 * (2 * kStages + kXStages) + 4 /* last */;
static_assert(kThreads == 512 && kSmem <= kMaxSmem, "one CTA an SM");

struct GemmArgs {
    Mat W[DF11_FUSED_MAX_PARTS]; /* g0: the part's first row block in the launch */
    void *y;                     /* B x ldy, F32 or (y_bf16) BF16 */
    float *ws;                   /* partials: (row blocks x nbt) x S x 64 x 64 */
    unsigned *sem;               /* a word per (row block, batch tile) when S > 1 */
    unsigned *err;
    int n_parts, B, ldy, y_bf16, nbt, S, tiles;
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

/* D(64 x 64, fp32) += A(64 x 16) B(16 x 64)ᵀ, both operands in shared memory (descriptors). */
__device__ __forceinline__ void wgmma_m64n64(float *d, uint64_t da, uint64_t db)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db));
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
/* x[row0 .. row0 + N)[col0 .. col0 + 64) into dst (swizzled), completing on bar. */
__device__ __forceinline__ void tma_x(const CUtensorMap *map, void *dst, uint64_t *bar, int col0,
                                      int row0, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(smem_u32(dst)),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(col0), "r"(row0), "r"(smem_u32(bar))
                 : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

__global__ void __launch_bounds__(kThreads, 1)
    fused_gemm_kernel(const __grid_constant__ CUtensorMap xmap, GemmArgs a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int R = kN / 2; /* accumulators a consumer thread */
    extern __shared__ __align__(16) uint8_t dsm[];
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t q = lane & 3, nrow = lane >> 2;
    uint8_t *xs = dsm + ((1024 - (smem_u32(dsm) & 1023)) & 1023); /* 1024-aligned: the swizzle */
    uint8_t *wb = xs + kXStages * kXBytes;
    uint8_t *rings = wb + kStages * kWBytes;
    uint8_t *corrs = rings + kDecoders * RING_BYTES;
    uint64_t *full = reinterpret_cast<uint64_t *>(corrs + kDecoders * CORR_BYTES);
    uint64_t *empty = full + kStages, *xfull = empty + kStages;
    unsigned *last = reinterpret_cast<unsigned *>(xfull + kXStages);

    const int bt = (int)blockIdx.x % a.nbt, rest = (int)blockIdx.x / a.nbt;
    const int sp = rest % a.S, rb = rest / a.S, unit = rb * a.nbt + bt;
    const Mat &W =
        a.W[part_index<DF11_FUSED_MAX_PARTS>(a.n_parts, rb, [&](int i) { return a.W[i].g0; })];
    const int t0 = (int)((long long)sp * a.tiles / a.S),
              t1 = (int)((long long)(sp + 1) * a.tiles / a.S);
    const int n_steps = 4 * (t1 - t0 - 1) + (t1 == a.tiles ? W.last_steps : 4);

    /* the rows of a warp past the tensor's strips stay zero (its walk stores nothing) */
    for (int i = (int)tid; i < kStages * kWBytes / 16; i += kThreads)
        reinterpret_cast<uint4 *>(wb)[i] = make_uint4(0, 0, 0, 0);
    if (tid == 0) {
        for (int i = 0; i < kStages; i++) {
            mbar_init(full + i, 4);  /* the step's 4 decoder warps */
            mbar_init(empty + i, 4); /* the 4 consumer warps */
        }
        for (int i = 0; i < kXStages; i++) mbar_init(xfull + i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    fence_proxy_async();
    __syncthreads();

    if ((int)warp < kDecoders) {
        /* decoder warp: strip warp % 4, phase warp / 4; step j of the CTA (tile t0 + j / 4)
         * into stage j % kStages (a stage of this phase), once the consumers are done with
         * step j - kStages, the phase's own step before in that stage */
        const int w = (int)warp & 3, p = (int)warp >> 2, s = (rb - W.g0) * 4 + w;
        if (t0 + p >= t1) return;
        uint4 *corr4 = reinterpret_cast<uint4 *>(corrs + warp * CORR_BYTES + lane * 64);
#pragma unroll
        for (int v = 0; v < 4; v++) corr4[v] = make_uint4(0, 0, 0, 0);
        const bool active = s < W.n_strips;
        /* a warp past the tensor's strips walks the last one (its bytes hit in cache) and
         * stores nothing; it still marks its steps done, in order like the others */
        walk_strip<false, kPhases, kAhead>(
            W, active ? s : W.n_strips - 1, t0 + p, t1, lane, rings + warp * RING_BYTES, corr4,
            a.err, [](int, int) {},
            [&](int t, int g, const uint32_t o[16]) {
                const int j = 4 * (t - t0) + g, st = j % kStages, use = j / kStages;
                if (use) mbar_wait(empty + st, (uint32_t)(use - 1) & 1);
                uint8_t *buf = wb + st * kWBytes;
                const uint32_t r = 16 * w + nrow;
                if (active) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        /* row r's 16-byte chunk c at chunk c ^ (r & 7) (rows r, r + 8 alike) */
                        const uint32_t c = ((4 * h + q) ^ (r & 7)) << 4;
                        *reinterpret_cast<uint4 *>(buf + r * 128 + c) =
                            make_uint4(o[8 * h], o[8 * h + 1], o[8 * h + 2], o[8 * h + 3]);
                        *reinterpret_cast<uint4 *>(buf + (r + 8) * 128 + c) =
                            make_uint4(o[8 * h + 4], o[8 * h + 5], o[8 * h + 6], o[8 * h + 7]);
                    }
                    fence_proxy_async(); /* for wgmma's reads */
                }
                __syncwarp();
                if (lane == 0) mbar_arrive(full + st);
            });
        return;
    }

    /* the consumer warpgroup: batch rows bt kN .., x by its TMA stages */
    const int cw = (int)warp - kDecoders;
    const uint32_t ctid = tid - 32 * kDecoders; /* 0 .. 127 */
    const bool producer = ctid == 0;
    auto load_x = [&](int j) {
        const int t = t0 + j / 4, g = j % 4;
        tma_x(&xmap, xs + (j % kXStages) * kXBytes, xfull + j % kXStages, 256 * t + 64 * g, bt * kN,
              kXBytes);
    };
    if (producer)
        for (int j = 0; j < kXStages && j < n_steps; j++) load_x(j);
    float acc[R];
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.f;
    for (int j = 0; j < n_steps; j++) {
        const int st = j % kStages;
        mbar_wait(full + st, (uint32_t)(j / kStages) & 1);
        mbar_wait(xfull + j % kXStages, (uint32_t)(j / kXStages) & 1);
        const uint32_t wa = smem_u32(wb + st * kWBytes),
                       xa = smem_u32(xs + (j % kXStages) * kXBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wgmma_m64n64(acc, sw128_desc(wa + 32 * kk), sw128_desc(xa + 32 * kk));
        wgmma_commit();
        wgmma_wait<1>();
        /* this warp's MMAs of step j - 1 are done; once every warp's are, its W stage and x
         * stage are free */
        if (j > 0) {
            const int e = (j - 1) % kStages;
            if (lane == 0) mbar_arrive(empty + e);
            if (producer && j - 1 + kXStages < n_steps) {
                mbar_wait(empty + e, (uint32_t)((j - 1) / kStages) & 1);
                load_x(j - 1 + kXStages);
            }
        }
    }
    wgmma_wait<0>();
    fence_acc<R>(acc);

    /* acc[4 i + e]: row 16 cw + nrow + 8 (e >> 1), batch row bt kN + 8 i + 2 q + (e & 1) */
    auto store_y = [&](const float *v) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            const int e = i & 3, row = 16 * cw + (int)nrow + 8 * (e >> 1);
            const int r = (rb - W.g0) * kRows + row;
            const int b = bt * kN + 8 * (i >> 2) + 2 * (int)q + (e & 1);
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
    float *part = a.ws + (long long)unit * a.S * (kRows * kN);
#pragma unroll
    for (int i = 0; i < R; i++) part[(long long)sp * kRows * kN + i * 128 + ctid] = acc[i];
    /* the warpgroup's partials before thread 0's count, the others' reads after its
     * acquire (kernels/split_count.cuh) */
    asm volatile("bar.sync 1, 128;" ::: "memory");
    if (ctid == 0) *last = split_count(a.sem + unit) == (unsigned)a.S - 1;
    asm volatile("bar.sync 1, 128;" ::: "memory");
    if (!*last) return;

    /* p_0 + p_1 + ... in split order, this CTA's own p_sp from its registers; a split's R
     * values loaded at once (this is the launch's last work, and a round trip a value, R a
     * split, was its longest chain) */
    float sum[R];
#pragma unroll
    for (int i = 0; i < R; i++) sum[i] = 0.f;
    for (int k = 0; k < a.S; k++) {
        if (k == sp) {
#pragma unroll
            for (int i = 0; i < R; i++) sum[i] += acc[i];
            continue;
        }
        const float *pk = part + (long long)k * kRows * kN + ctid;
        float v[R];
#pragma unroll
        for (int i = 0; i < R; i++) v[i] = __ldcg(pk + i * 128);
#pragma unroll
        for (int i = 0; i < R; i++) sum[i] += v[i];
    }
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = sum[i];
    store_y(acc);
    if (ctid == 0) atomicExch(a.sem + unit, 0u);
#endif
}

/* cuTensorMapEncodeTiled from the driver, through the runtime (no libcuda link). */
typedef CUresult (*EncodeTiled)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_tiled()
{
    static std::once_flag once;
    static EncodeTiled fn;
    std::call_once(once, [] {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
        const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                               cudaEnableDefault, &q);
#else /* the versioned lookup is CUDA 12.5+ */
        const cudaError_t e =
            cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q);
#endif
        if (e == cudaSuccess && q == cudaDriverEntryPointSuccess)
            fn = reinterpret_cast<EncodeTiled>(p);
    });
    return fn;
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
        if (major != 9 || minor != 0 || !encode_tiled()) return DF11_OK;
        e = cudaFuncSetAttribute(fused_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)kSmem);
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&g->occ, fused_gemm_kernel, kThreads,
                                                              kSmem);
        if (e != cudaSuccess)
            return df11i_fail(DF11_ERR_DEVICE, "fused gemm: kernel attributes: %s",
                              cudaGetErrorString(e));
        *usable = g->occ > 0;
        return DF11_OK;
    });
#else
    return DF11_OK;
#endif
}

/* x as the tensor map can describe it: 16-byte aligned rows of cols % 8 == 0 BF16. */
bool x_fits(const void *x, uint64_t cols)
{
    return reinterpret_cast<uintptr_t>(x) % 16 == 0 && cols % 8 == 0;
}

/* The row blocks (4 strips each) of a launch over these parts. */
long long row_blocks(uint32_t n_parts, const df11i_fixed_geom *geom)
{
    long long r = 0;
    for (uint32_t i = 0; i < n_parts; i++) r += ((long long)geom[i].n_strips + 3) / 4;
    return r;
}

/* Workspace of a launch of `units` (row block, batch tile) units in S splits: a semaphore
 * word a unit at the start, a 64 x 64 fp32 partial a CTA at the end. */
struct SplitBytes {
    uint64_t sem, part;
};
SplitBytes split_bytes(long long units, int S)
{
    if (S < 2) return SplitBytes{ 0, 0 };
    return SplitBytes{ (4 * (uint64_t)units + 255) / 256 * 256,
                       (uint64_t)units * S * kRows * kN * 4 };
}

/* Splits of K: one unless the (row block, batch tile) units leave SMs idle, then as many as
 * fill them, at most 4 and with at least 4 tiles (1024 columns) each, so units x splits <=
 * SMs x CTAs an SM. A shorter split would be mostly its pipeline's fill, and small models
 * (which never fill the GPU) would pay megabytes of partials for nothing. */
int splits(long long units, int tiles, int full)
{
    if (units >= full) return 1;
    long long s = full / units;
    if (s > 4) s = 4;
    if (s > tiles / 4) s = tiles / 4;
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
        const SplitBytes b = split_bytes(u, splits(u, tiles, full));
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
    const long long nbt = ((long long)batch + kN - 1) / kN, units = rbs * nbt;
    const int tiles = (int)geom[0].tiles;
    const int S = splits(units, tiles, gg.sms * gg.occ);
    const long long ctas = units * S;
    if (ctas > INT32_MAX) return df11i_fail(DF11_ERR_UNSUPPORTED, "fused gemm: %lld CTAs", ctas);
    const SplitBytes need = split_bytes(units, S);
    if (need.sem + need.part > ws_size)
        return df11i_fail(DF11_ERR_STATE, "fused gemm: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)(need.sem + need.part));
    CUtensorMap map;
    const cuuint64_t dims[2] = { geom[0].cols, batch };
    const cuuint64_t strides[1] = { geom[0].cols * 2 };
    /* an x stage: 64 columns x the tile's batch rows */
    const cuuint32_t box[2] = { 64, kN }, estr[2] = { 1, 1 };
    CUresult ce = encode_tiled()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void *>(x),
                                 dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (ce != CUDA_SUCCESS)
        return df11i_fail(DF11_ERR_DEVICE, "fused gemm: cuTensorMapEncodeTiled: error %d", (int)ce);
    a.y = y;
    a.ws = reinterpret_cast<float *>(static_cast<uint8_t *>(ws) + (ws_size - need.part) / 4 * 4);
    a.sem = static_cast<unsigned *>(ws);
    a.err = d_error;
    a.n_parts = (int)n_parts;
    a.B = (int)batch;
    a.ldy = (int)ldy;
    a.y_bf16 = y_bf16 != 0;
    a.nbt = (int)nbt;
    a.S = S;
    a.tiles = tiles;
    fused_gemm_kernel<<<(unsigned)ctas, kThreads, kSmem, static_cast<cudaStream_t>(stream)>>>(map,
                                                                                              a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused gemm launch (%lld CTAs): %s", ctas,
                          cudaGetErrorString(e));
    return DF11_OK;
}
