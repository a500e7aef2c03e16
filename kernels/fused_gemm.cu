/* The fused matmul on fixed-code tensors for batches from DF11_FUSED_GEMM_MIN_BATCH (25) on
 * (kernels/fused_matmul.cu sends them here): y = x·Wᵀ, W decoded from its compressed
 * payload in registers and multiplied straight from there by Hopper's warpgroup MMA (wgmma
 * with A in registers, sm_90a code only); W is never stored, to shared or global memory.
 *
 * Work units are (row block of 128 rows = 8 strips of 16, batch tile of 64 or 128 rows = 64
 * NB); a CTA (384 threads, one an SM) takes an equal range of the units' tiles: a split of
 * one unit's tiles (split-K) where such a grid keeps the SMs busy, else a range over parts of
 * units, cut anywhere (stream-K over one CTA an SM; grid_ctas), one segment a unit it touches:
 *   consumers two warpgroups; warp w of warpgroup g walks strip 4 g + w of each segment
 *             (walk_strips: the mma.sync kernel's walk, the segments chained), and a step's
 *             32 decoded weights a lane are the A fragments of wgmma m64n64k16 as they are
 *             of mma.sync (a warpgroup's 4 warps are its 64 rows); per step the warpgroup
 *             waits for the step's x stage, issues its wgmma with x from shared memory and
 *             decodes the next step while they run; once the step before's MMAs are done,
 *             each warp arrives on that step's empty barrier;
 *   producer  one warpgroup: per step it loads x's 64 columns of the unit's rows (zero past
 *             K and past the batch) a few steps ahead into registers, and stores them into the
 *             step's stage in the 128-byte swizzle, with each half's columns in the order the
 *             decode hands them to the lanes (store_x_half), then arrives on its full barrier.
 * Every shared byte has one writer at a time: x stages are rewritten by the producer only after
 * every consumer warp's arrival for the step before in them, and by the consumers (a split
 * summed in clusters) only once every consumer warp's MMAs are done and the producer's stores
 * all consumed; each consumer warp has its own ring.
 * Each W element is decoded once per batch tile, so batches past 128 run several tiles (the op
 * takes decode + cuBLAS there by default: bench/RESULTS.md).
 *
 * Split sums: where each unit is split among the same 2..8 CTAs and their clusters all fit at
 * once, the launch is in clusters, a unit a cluster, its partials summed in the CTAs' shared
 * memory (cluster_sum); elsewhere (stream-K) a unit cut between CTAs is summed by the last of
 * them (by index), which waits for the others' per-CTA fp32 partials in the workspace at the
 * end of its range. Either way in CTA order: deterministic for a given grid, i.e. device.
 * Launched programmatically where the caller asks (as kernels/fused_matmul.cu's kernel).
 * Accuracy as the mma.sync kernel's (kernels/matmul.h).
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>

#include "kernels/device_cache.cuh"
#include "kernels/fused_gemm.h"
#include "kernels/fused_matmul_strip.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90.cuh"
#include "kernels/split_count.cuh"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

/* The PTX (sm_75, sm_80, sm_90) and sm_90 (not 90a) code hold an empty kernel, so its helpers
 * go unused. */
#pragma nv_diag_suppress 177

namespace {

using namespace df11i_sm90;

using namespace df11i_fused;

/* A CTA: two consumer warpgroups, each 4 warps on the 4 strips (16 rows each) of its 64
 * rows, both over the same tiles, so that one x stage serves 128 rows of W; and one producer
 * warpgroup that brings x's stages in. */
constexpr int kRows = 128;    /* W rows a CTA */
constexpr int kConsumers = 8; /* warps: 2 warpgroups */
constexpr int kThreads = 32 * kConsumers + 128;
constexpr int kXStages = 4;
constexpr int kMaxCluster = 8; /* CTAs a cluster, the portable most */
/* Steps a consumer warp's sm copies run ahead of its decode (walk_strips' AHEAD): 2, 3 and 4
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
           (size_t)kConsumers * (RING_BYTES + CORR_BYTES) + 8 * (2 * kXStages);
}
static_assert(smem_bytes<2>() <= kMaxSmem, "one CTA an SM");

struct GemmArgs {
    Mat W[DF11_FUSED_MAX_PARTS]; /* g0: the part's first row block in the launch */
    const uint16_t *x;           /* B x K BF16, 16-byte aligned rows, K % 8 == 0 */
    void *y;                     /* B x ldy, F32 or (y_bf16) BF16 */
    float *ws;                   /* partials: 2 G slots of kRows x kBatchRows NB */
    unsigned *sem;               /* G words, zero between launches */
    unsigned *err;
    int n_parts, B, K, ldy, y_bf16, nbt, tiles;
    int NU, G;     /* (unit, tile) work items, CTAs */
    double inv_nu; /* 1.0 / NU (df11i_cta_of) */
    double inv_g;  /* 1.0 / G (df11i_range_start) */
    int cluster;   /* CTAs a cluster, each unit's splits summed in shared memory; 0: none */
};

/* The part holding row block rb of the launch (parts in order of g0, part 0 at 0). */
__device__ __forceinline__ int part_of(const GemmArgs &a, int rb)
{
    return part_index<DF11_FUSED_MAX_PARTS>(a.n_parts, rb, [&](int i) { return a.W[i].g0; });
}

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

/* The accumulators stay where the asynchronous MMAs write them: the compiler may not move
 * them across this point. */
template <int R> __device__ __forceinline__ void fence_acc(float *d)
{
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* Registers a thread, moved between the warpgroups at the kernel's start (the launch gives
 * every thread 168): the consumers hold the A registers of two steps while a step's MMAs run
 * beside the next step's decode, and their walk's segments; the producer gives them up (at
 * 88 / 208, the consumers spilled at NB = 2). A warpgroup's increase waits until the CTA's
 * pool has the registers, so the sum stays within the launch's. */
constexpr int kProducerRegs = 72, kConsumerRegs = 216;
static_assert(128 * kProducerRegs + 32 * kConsumers * kConsumerRegs <=
                  kThreads * (65536 / kThreads / 8 * 8),
              "setmaxnreg within the registers the launch gives the CTA");
/* The generic address of p's place in the shared memory of the cluster's CTA of this rank. */
__device__ __forceinline__ const float *cluster_peer(const float *p, uint32_t rank)
{
    const float *q;
    asm("mapa.u64 %0, %1, %2;" : "=l"(q) : "l"(p), "r"(rank));
    return q;
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

template <int NB, bool REC>
__global__ void __launch_bounds__(kThreads, 1) fused_gemm_kernel(GemmArgs a)
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

    /* this CTA's range [p0, p1) of the launch's (unit, tile) work, unit u = rb nbt + bt */
    const int p0 = (int)df11i_range_start(blockIdx.x, a.NU, a.G, a.inv_g),
              p1 = (int)df11i_range_start(blockIdx.x + 1, a.NU, a.G, a.inv_g);
    const int tiles = a.tiles;
    /* steps a tile (every part has the same K) */
    auto steps_of = [&](int t) { return t == tiles - 1 ? a.W[0].last_steps : kTileSteps; };

    if (tid == 0) {
        for (int i = 0; i < kXStages; i++) {
            mbar_init(xfull + i, 4);           /* the 4 producer warps */
            mbar_init(xempty + i, kConsumers); /* every consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    /* Programmatic dependent launch: the next launch on the stream may start now, its CTAs
     * taking SMs as ours leave, and prefetch its weights (as kernels/fused_matmul.cu's). Only
     * weights are read before griddepcontrol.wait: the producer's before its first x load,
     * each consumer warp's in its walk once its first codes and steps are in flight; every
     * write to y, the workspace or the error word follows the consumer's. A no-op where the
     * launches are not programmatic. */
    asm volatile("griddepcontrol.launch_dependents;");

    if ((int)warp >= kConsumers) {
        /* producer: each step of the range (over all its segments) brings its tile's 64
         * columns of the unit's N rows of x into stage g (g: the step in its tile),
         * transposed (store_x_half), zero past K and past the batch; each thread's loads
         * run kDepth steps ahead of its stores (with each step's MMAs waited for, one step
         * ahead made B = 128 5% slower than 3; with them in flight, one step ahead at
         * NB = 2 took as long as the waited kernel 3 ahead, bench/RESULTS.md) */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegs));
        const uint32_t ptid = tid - 32 * kConsumers;
        constexpr int kTasks = 2 * N / 128; /* (row, half) pairs a thread */
        /* steps of x in a thread's registers: as many as kProducerRegs holds without spills */
        constexpr int kDepth = NB == 1 ? 2 : 1;
        XHalf v[kDepth][kTasks];
        /* a step of the range, counted without divisions (64-bit ones a step made the
         * producer's warps the CTA's busiest: 12% slower at B = 64, bench/RESULTS.md) */
        struct Step {
            int p;     /* (unit, tile) work item: unit p / tiles, tile t */
            int t, bt; /* its tile and the unit's batch tile */
            int gs;    /* the step in the tile */
        };
        auto start = [&](int p) {
            const int u = p / tiles;
            return Step{ p, p - u * tiles, u % a.nbt, 0 };
        };
        auto advance = [&](Step &c) {
            if (++c.gs < steps_of(c.t)) return;
            c.gs = 0;
            c.p++;
            if (++c.t == tiles) c.t = 0, c.bt = c.bt + 1 == a.nbt ? 0 : c.bt + 1;
        };
        auto load = [&](const Step &c, XHalf *to) {
            const int bt = c.bt;
            const int col0 = 256 * c.t + 64 * c.gs;
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
        Step ld = start(p0), sd = ld; /* the next step to load, to store */
        asm volatile("griddepcontrol.wait;" ::: "memory");
#pragma unroll
        for (int d = 0; d < kDepth; d++)
            if (ld.p < p1) load(ld, v[d]), advance(ld);
        /* bit st: stage st has been filled before; the parity of its fills so far */
        uint32_t used = 0, fills = 0;
        while (sd.p < p1) {
#pragma unroll
            for (int d = 0; d < kDepth; d++) { /* v[d] holds step sd */
                if (sd.p >= p1) break;
                const int st = sd.gs; /* a tile's step g in stage g */
                if ((used >> st) & 1) /* the consumers' release of its fill before */
                    mbar_wait(xempty + st, ((fills >> st) & 1) ^ 1);
                used |= 1u << st;
                fills ^= 1u << st;
                uint8_t *stage = xs + st * kXBytes;
#pragma unroll
                for (int i = 0; i < kTasks; i++) {
                    const uint32_t task = ptid + 128 * i;
                    store_x_half(stage, task >> 1, task & 1, v[d][i]);
                }
                fence_proxy_async(); /* for wgmma's reads */
                __syncwarp();
                if (lane == 0) mbar_arrive(xfull + st);
                advance(sd);
                if (ld.p < p1) load(ld, v[d]), advance(ld);
            }
        }
        if (a.cluster) { /* the consumers' cluster sum (cluster_sum) */
            cluster_sync();
            cluster_sync();
        }
        return;
    }

    /* consumer warp: strip w of warpgroup g's 64 rows of each unit in the range */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegs));
    const int g = (int)warp >> 2, w = (int)warp & 3;
    constexpr int kCT = 32 * kConsumers; /* consumer threads */
    uint4 *corr4 = reinterpret_cast<uint4 *>(corrs + warp * CORR_BYTES + lane * 64);
#pragma unroll
    for (int i = 0; i < 4; i++) corr4[i] = make_uint4(0, 0, 0, 0);
    float acc[R];
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.f;
    fence_acc<R>(acc);
    /* the range's segments: tiles [t0, t1) of unit u = grp; a warp past its tensor's strips
     * walks the last one (its bytes hit in cache), and its rows are not stored */
    int p = p0;
    auto next = [&](Seg &o) {
        if (p >= p1) return false;
        const int u = p / tiles, t0 = p - u * tiles, t1 = min(tiles, t0 + (p1 - p));
        p += t1 - t0;
        const int rb = u / a.nbt, part = part_of(a, rb);
        const int s = (rb - a.W[part].g0) * 8 + 4 * g + w;
        o = Seg{ part, s < a.W[part].n_strips ? s : a.W[part].n_strips - 1, t0, t1, u };
        return true;
    };
    /* A tile's step g runs in x stage g, so that a stage's address and descriptor are
     * constants of the unrolled step (no register-to-uniform move before the wgmma); a
     * segment's short last tile (K rounded up to 64 not a multiple of 256) leaves its stages
     * past it unfilled, so each stage keeps its own parity. */
    static_assert(kXStages == 4, "a stage a step of a tile");
    uint32_t fills = 0;   /* bit st: the parity of stage st's fills so far */
    bool pending = false; /* the step before's MMAs may still run (its x stage not released) */
    /* A unit cut between CTAs cf < ... < cl (its first tiles at the end of cf's range, its
     * last at the start of cl's) is summed by cl at the end of its range: each other CTA
     * writes its partial there (slot 2 c + 1) and counts it on the unit's semaphore word (cf's:
     * unique among cut units) with a release, without waiting; cl writes its own where the
     * unit ends (slot 2 cl) and goes on, and once its range is walked and its own end partial
     * counted, waits for the count to reach cl - cf and sums the partials in CTA order (the
     * sum does not depend on timing). A CTA waits only for CTAs before it, which never wait
     * before they count: no cycle, as long as a CTA is not resident before those of lower
     * index, which the hardware launches first. Against the last CTA to count doing the sum
     * (an acquire-release count and two barriers at every cut, mid-range too), a fixed
     * summing CTA made the 8B block 3-4% faster at B = 33..128 (docs/KERNELS.md). */
    const int self = (int)blockIdx.x;
    auto partial = [&](int c, bool first) {
        return a.ws + (long long)(2 * c + (first ? 0 : 1)) * (kRows * N);
    };
    /* acc[32 n + 4 i + e]: row 64 g + 16 w + nrow + 8 (e >> 1), batch row
     * bt N + 64 n + 8 i + 2 q + (e & 1) */
    /* where this thread's outputs of unit u start: its first row in W's part, its first
     * batch row; once a unit, not once an output (ptxas had left the division by nbt in each
     * unrolled store: 12-16% of the kernel's SASS, and the 8B block 1.6-4% slower at B =
     * 33..128 on the launches' last path; bench/RESULTS.md) */
    struct YAt {
        int r0, b0;
    };
    auto y_at = [&](int part, int u) {
        const int bt = u % a.nbt, rb = u / a.nbt;
        return YAt{ (rb - a.W[part].g0) * kRows + 64 * g + 16 * w + (int)nrow,
                    bt * N + 2 * (int)q };
    };
    auto store_at = [&](int part, YAt at0, int i, float v) {
        const Mat &W = a.W[part];
        const int e = i & 3;
        const int r = at0.r0 + 8 * (e >> 1);
        const int b = at0.b0 + 64 * (i >> 5) + 8 * ((i >> 2) & 7) + (e & 1);
        if (b < a.B && r < W.rows) {
            const long long at = (long long)b * a.ldy + W.y_col + r;
            if (a.y_bf16)
                static_cast<__nv_bfloat16 *>(a.y)[at] = __float2bfloat16_rn(v);
            else
                static_cast<float *>(a.y)[at] = v;
        }
    };
    /* Where all of this thread's outputs lie inside y (every unit but those of a part's last
     * row block or the last batch tile), they go with no checks: from one base, a batch row's
     * offset once for its two W rows (the second an immediate), ~2 instructions an output
     * against ~16 through store_at. */
    auto store_y = [&](int part, int u) {
        const YAt at0 = y_at(part, u);
        const Mat &W = a.W[part];
        if (at0.b0 + N - 7 < a.B && at0.r0 + 8 < W.rows) { /* its last batch row, W row */
            const long long base = (long long)at0.b0 * a.ldy + W.y_col + at0.r0;
            auto put = [&](auto *y, auto conv) {
                auto *const p = y + base;
#pragma unroll
                for (int i = 0; i < R; i++)
                    p[(long long)(64 * (i >> 5) + 8 * ((i >> 2) & 7) + (i & 1)) * a.ldy +
                      8 * ((i & 3) >> 1)] = conv(acc[i]);
            };
            if (a.y_bf16)
                put(static_cast<__nv_bfloat16 *>(a.y),
                    [](float v) { return __float2bfloat16_rn(v); });
            else
                put(static_cast<float *>(a.y), [](float v) { return v; });
            return;
        }
#pragma unroll
        for (int i = 0; i < R; i++) store_at(part, at0, i, acc[i]);
    };
    /* A launch in clusters (a.cluster) splits each unit among one cluster's CTAs, in rank
     * order, each range the whole of its split: each CTA writes its partial to its own x
     * stages (free once every consumer warp's MMAs are done: cluster_partial), and at the end
     * of its range, after the cluster's barrier, sums its share of the accumulators over the
     * cluster's partials in rank order (the order of sum_first, so the same y), read from its
     * peers' shared memory (cluster_sum); the second barrier keeps every CTA's shared memory
     * until its peers have read it. No partial goes through the L2, nothing waits for a CTA
     * that may not be resident (a cluster's CTAs run together), and the sum is spread over
     * the cluster. */
    float *const mine = reinterpret_cast<float *>(xs) + tid;
    auto cluster_partial = [&]() {
        static_assert(R * kCT * 4 <= kXStages * kXBytes, "a partial in the x stages");
        asm volatile("bar.sync 1, %0;" ::"n"(kCT) : "memory");
#pragma unroll
        for (int i = 0; i < R; i++) mine[i * kCT] = acc[i];
    };
    /* after the walk (inlined in it, the sum made ptxas spill at NB = 2) */
    auto cluster_sum = [&]() {
        const int u = p0 / tiles, part = part_of(a, u / a.nbt);
        const YAt at0 = y_at(part, u);
        cluster_sync();
        const int n = a.cluster, rank = (int)cluster_rank();
        /* kChunk outputs' loads before their stores, which may alias them for all the
         * compiler knows */
        constexpr int kChunk = 4;
        for (int i0 = rank * R / n, i1 = (rank + 1) * R / n; i0 < i1; i0 += kChunk) {
            float v[kChunk][kMaxCluster];
#pragma unroll
            for (int k = 0; k < kChunk; k++)
#pragma unroll
                for (int c = 0; c < kMaxCluster; c++)
                    if (c < n && i0 + k < i1) v[k][c] = *cluster_peer(mine + (i0 + k) * kCT, c);
#pragma unroll
            for (int k = 0; k < kChunk; k++) {
                float sum = v[k][0];
#pragma unroll
                for (int c = 1; c < kMaxCluster; c++)
                    if (c < n) sum += v[k][c];
                if (i0 + k < i1) store_at(part, at0, i0 + k, sum);
            }
        }
        cluster_sync();
    };
    /* the CTAs that hold unit u's first and last work items */
    struct Cut {
        int cf, cl;
    };
    auto cut_of = [&](int u) {
        const long long w0 = (long long)u * tiles; /* the unit's first work item */
        return Cut{ df11i_cta_of(w0, a.NU, a.G, a.inv_nu),
                    df11i_cta_of(w0 + tiles - 1, a.NU, a.G, a.inv_nu) };
    };
    /* a segment's product: to y where it is the whole unit, else a partial */
    auto emit = [&](const Seg &d) {
        const auto [cf, cl] = cut_of(d.grp);
        if (cf == cl) {
            store_y(d.part, d.grp);
            return;
        }
        if (a.cluster) {
            cluster_partial();
            return;
        }
        float *mine = partial(self, self == cl) + tid;
#pragma unroll
        for (int i = 0; i < R; i++) __stcg(mine + i * kCT, acc[i]);
        if (self == cl) return; /* summed at the end of the range (sum_first) */
        /* the consumers' partials before thread 0's release (kernels/split_count.cuh) */
        asm volatile("bar.sync 1, %0;" ::"n"(kCT) : "memory");
        if (tid == 0) split_signal(a.sem + cf);
    };
    /* the end of the range: the sum of the unit it began in where that began before it (and
     * ends in it: else this CTA is not its last) */
    auto sum_first = [&]() {
        const int u = p0 / tiles;
        const auto [cf, cl] = cut_of(u);
        if (cf == self || cl != self) return;
        if (tid == 0) split_wait(a.sem + cf, (unsigned)(cl - cf));
        asm volatile("bar.sync 1, %0;" ::"n"(kCT) : "memory");
        /* kSumChunk values of kAtOnce CTAs loaded at once: this is the launch's last work, and
         * each round trip of it is on the launch's longest chain */
        constexpr int kSumChunk = 32, kAtOnce = 2;
        for (int cb = cf; cb <= cl; cb += kAtOnce) {
#pragma unroll
            for (int c0 = 0; c0 < R; c0 += kSumChunk) {
                float v[kAtOnce][kSumChunk];
#pragma unroll
                for (int k = 0; k < kAtOnce; k++) {
                    if (cb + k > cl) break; /* the same for every thread: no divergence */
                    const float *pk = partial(cb + k, cb + k == cl) + tid;
#pragma unroll
                    for (int i = 0; i < kSumChunk; i++) v[k][i] = __ldcg(pk + (c0 + i) * kCT);
                }
#pragma unroll
                for (int k = 0; k < kAtOnce; k++)
                    if (cb + k <= cl)
#pragma unroll
                        for (int i = 0; i < kSumChunk; i++)
                            acc[c0 + i] = cb + k == cf ? v[k][i] : acc[c0 + i] + v[k][i];
            }
        }
        store_y(part_of(a, u / a.nbt), u);
        /* every count of the unit is in: the word is zero again for the next launch */
        if (tid == 0) a.sem[cf] = 0u;
    };
    auto use = [&](int, int st, const uint32_t o[16]) {
        mbar_wait(xfull + st, (fills >> st) & 1);
        fills ^= 1u << st;
        /* the stage's descriptor once a step, and each MMA's as an offset from it: the start
         * address is its low 14 bits, and no offset carries out of them */
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
        /* the step's MMAs run while the next step decodes: wait for the step before's, whose
         * x stage is then free (B = 33..96 4-5% faster than waiting for these here,
         * bench/RESULTS.md) */
        wgmma_wait<1>();
        __syncwarp();
        /* the step before: this tile's, or the tile before's last (whole: a short tile ends
         * its segment, whose last stage done releases) */
        if (pending && lane == 0) mbar_arrive(xempty + (st + kXStages - 1) % kXStages);
        pending = true;
    };
    auto done = [&](const Seg &d) {
        /* the segment's last MMAs, its last x stage released */
        wgmma_wait<0>();
        fence_acc<R>(acc);
        __syncwarp();
        if (lane == 0) mbar_arrive(xempty + ((d.t1 == tiles ? a.W[0].last_steps : 4) - 1));
        pending = false;
        emit(d);
#pragma unroll
        for (int i = 0; i < R; i++) acc[i] = 0.f;
        fence_acc<R>(acc);
    };
    /* the segments walked as one (walk_strips): the next one's codes and first steps are
     * copied during this one's last tile, and its split partial (done) is written between
     * them */
    Seg sg;
    while (next(sg))
        walk_strips<true, 1, kAhead, REC>([&](int i) -> const Mat & { return a.W[i]; }, sg, next,
                                          lane, rings + warp * RING_BYTES, corr4, a.err,
                                          [](int, int) {}, use, done);
    if (a.cluster)
        cluster_sum();
    else
        sum_first();
#endif
}

/* The kernel of a batch tile's width (NB) and code (REC), as gemm_geom lists them. */
constexpr int kKernels = 4;
constexpr int kernel_index(int NB, bool rec) { return (NB - 1) + 2 * rec; }

/* Per device: SMs and CTAs an SM (0: the path is unavailable); clusters of c CTAs of kernel k
 * that can run at once (cudaOccupancyMaxActiveClusters; 0 where they cannot launch). */
struct GemmGeom {
    int sms, occ;
    int clusters[kKernels][kMaxCluster + 1];
};
PerDevice<GemmGeom> g_geom;

using GemmKernel = void (*)(GemmArgs);
GemmKernel gemm_kernel(int k)
{
    static const GemmKernel kernels[kKernels] = { fused_gemm_kernel<1, false>,
                                                  fused_gemm_kernel<2, false>,
                                                  fused_gemm_kernel<1, true>,
                                                  fused_gemm_kernel<2, true> };
    return kernels[k];
}
size_t gemm_smem(int k) { return k % 2 ? smem_bytes<2>() : smem_bytes<1>(); }

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
        /* both widths of both layouts; the splits assume the smallest occupancy */
        g->occ = INT32_MAX;
        for (int i = 0; i < kKernels && e == cudaSuccess; i++) {
            const size_t smem = gemm_smem(i);
            int occ = 0;
            e = cudaFuncSetAttribute(gemm_kernel(i), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)smem);
            if (e == cudaSuccess)
                e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gemm_kernel(i), kThreads,
                                                                  smem);
            if (occ < g->occ) g->occ = occ;
            for (int c = 2; c <= kMaxCluster && e == cudaSuccess; c++) {
                cudaLaunchAttribute at = cluster_attribute((unsigned)c);
                cudaLaunchConfig_t cfg = {};
                cfg.gridDim = dim3((unsigned)c);
                cfg.blockDim = dim3(kThreads);
                cfg.dynamicSmemBytes = smem;
                cfg.attrs = &at;
                cfg.numAttrs = 1;
                /* a size the device cannot run is no error of the library's: no clusters */
                if (cudaOccupancyMaxActiveClusters(&g->clusters[i][c], gemm_kernel(i), &cfg) !=
                    cudaSuccess) {
                    g->clusters[i][c] = 0;
                    (void)cudaGetLastError();
                }
            }
        }
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

/* Batch tiles: one wgmma's rows up to a batch of that many, twice that past it. */
int batch_nb(uint32_t batch) { return batch <= kBatchRows ? 1 : 2; }

/* Splits of K a unit, as many as fill the SMs where the units leave some idle, at most 8 and
 * with at least 2 tiles (512 columns) each (against at most 4 of at least 4 tiles: 4-5% faster
 * on the 8B block at B = 33..64, where k and v have 8 row blocks each): a shorter split would
 * be mostly its pipeline's fill. */
int splits(long long units, int tiles, int full)
{
    if (units >= full) return 1;
    long long s = full / units;
    if (s > 8) s = 8;
    if (s > tiles / 2) s = tiles / 2;
    return s < 1 ? 1 : (int)s;
}

/* CTAs of a launch of `units` (row block, batch tile) units of `tiles` tiles; each takes an
 * equal range of the units' tiles. units x splits CTAs where their waves keep 90% of the SMs
 * busy: the ranges are then the splits, and none crosses from one unit into the next. Else
 * (gate and up's 112 row blocks on the 8B block left 20 of 132 SMs idle) one CTA an SM, or
 * fewer where a range would be under 2 tiles: ranges then cut units anywhere (stream-K),
 * and a range may span several units or lie within one. */
int grid_ctas(long long units, int tiles, int full)
{
    const long long g = units * splits(units, tiles, full), waves = (g + full - 1) / full;
    if (10 * g >= 9 * waves * full) return (int)g;
    const long long half = units * tiles / 2;
    long long c = units > half ? units : half;
    if (c > full) c = full;
    return c < 1 ? 1 : (int)c;
}

/* Workspace of a launch of G CTAs with batch tiles of kBatchRows NB rows: a semaphore word a
 * CTA at its start, two kRows x kBatchRows NB fp32 partials a CTA (the units its range starts
 * and ends in) at its end. */
struct SplitBytes {
    uint64_t sem, part;
};
SplitBytes split_bytes(int G, int NB)
{
    return SplitBytes{ (4 * (uint64_t)G + 255) / 256 * 256,
                       2ull * G * kRows * kBatchRows * NB * 4 };
}

std::atomic<uint32_t> g_test_grid{ 0 };        /* df11i_fused_gemm_test_grid */
std::atomic<int> g_clusters_off{ 0 };          /* df11i_fused_gemm_test_clusters */
std::atomic<uint64_t> g_cluster_launches{ 0 }; /* df11i_fused_gemm_cluster_launches */

} // namespace

extern "C" uint32_t df11i_fused_gemm_test_grid(uint32_t ctas) { return g_test_grid.exchange(ctas); }

extern "C" int df11i_fused_gemm_test_clusters(int on) { return !g_clusters_off.exchange(!on); }

extern "C" uint64_t df11i_fused_gemm_cluster_launches(void) { return g_cluster_launches.load(); }

extern "C" int df11i_fused_gemm_supported(void)
{
    GemmGeom g;
    return gemm_geom(&g) == DF11_OK && g.sms > 0;
}

extern "C" df11_status df11i_fused_gemm_workspace(const df11i_fixed_geom *geom, uint64_t *bytes)
{
    GemmGeom g;
    df11_status s = gemm_geom(&g);
    *bytes = 0;
    if (s != DF11_OK || !g.sms) return s;
    /* a range cuts a unit only where units have 2 tiles or more; then any batch may fill the
     * grid, so the size is the full grid's at the larger batch tile */
    if (geom[0].tiles < 2) return DF11_OK;
    const SplitBytes b = split_bytes(g.sms * g.occ, 2);
    /* twice the larger: every launch's semaphores (this kernel's and the mma.sync kernel's)
     * and the mma.sync kernel's polled slots lie in the first half and its partials in the
     * second, whichever launch set the size */
    *bytes = df11i_split_ws(b.sem, b.part);
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
                                        uint64_t ws_size, uint32_t *d_error, int pdl, void *stream)
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
    if (units * tiles > INT32_MAX)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused gemm: %lld units of %d tiles", units, tiles);
    const int full = gg.sms * gg.occ;
    const long long forced = g_test_grid.load();
    const int G = forced ? (int)std::min(std::min(forced, (long long)full), units * tiles)
                         : grid_ctas(units, tiles, full);
    const int kernel = kernel_index(NB, parts[0].d->codec == DF11_CODEC_EXP_FIXED8);
    /* each unit split among 2..8 CTAs, whose clusters all run at once: summed in the
     * clusters' shared memory (the kernel's cluster_sum); a forced grid tests the L2 path */
    const long long split = G % units ? 0 : G / units;
    const int cluster = !forced && !g_clusters_off.load() && split > 1 && split <= kMaxCluster &&
                                (long long)gg.clusters[kernel][split] * split >= G
                            ? (int)split
                            : 0;
    /* the L2 path's workspace: a unit a CTA (or 1 tile a unit) writes no partials; a launch in
     * clusters needs none */
    const SplitBytes need = G != units && tiles > 1 ? split_bytes(G, NB) : SplitBytes{ 0, 0 };
    /* semaphores in the zero first half, partials in the second (kernels/matmul.h) */
    const uint64_t need2 = df11i_split_ws(need.sem, need.part);
    const bool fits = need2 <= ws_size;
    if (!cluster && !fits)
        return df11i_fail(DF11_ERR_STATE, "fused gemm: workspace %llu bytes, needs %llu",
                          (unsigned long long)ws_size, (unsigned long long)need2);
    a.x = static_cast<const uint16_t *>(x);
    a.y = y;
    a.ws =
        fits ? reinterpret_cast<float *>(static_cast<uint8_t *>(ws) + (ws_size - need.part) / 4 * 4)
             : nullptr;
    a.sem = static_cast<unsigned *>(ws);
    a.err = d_error;
    a.n_parts = (int)n_parts;
    a.B = (int)batch;
    a.K = (int)geom[0].cols;
    a.ldy = (int)ldy;
    a.y_bf16 = y_bf16 != 0;
    a.nbt = (int)nbt;
    a.tiles = tiles;
    a.NU = (int)(units * tiles);
    a.G = G;
    a.inv_nu = 1.0 / a.NU;
    a.inv_g = 1.0 / a.G;
    auto launch = [&](int c) {
        a.cluster = c;
        return launch_clustered(gemm_kernel(kernel), (unsigned)G, c ? (unsigned)c : 1u, kThreads,
                                gemm_smem(kernel), stream, pdl != 0, a);
    };
    cudaError_t e = launch(cluster);
    if (e != cudaSuccess && cluster && fits) {
        /* clusters the occupancy query let through and the launch refused (the device shared
         * with other processes since, say): the same product, summed through the L2 */
        (void)cudaGetLastError();
        e = launch(0);
    }
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fused gemm launch (%d CTAs, clusters of %d): %s", G,
                          a.cluster, cudaGetErrorString(e));
    if (a.cluster) g_cluster_launches.fetch_add(1, std::memory_order_relaxed);

    return DF11_OK;
}
