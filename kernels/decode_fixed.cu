/* The GPU decoder of fixed-code tensors (codec/fixed.h, both layouts; docs/FORMAT.md
 * "Fixed-code tensors") into the arena: row-major BF16, as the CPU reference
 * df11i_fixed_decode writes it, near copy bandwidth (docs/KERNELS.md, "The fixed-code arena decoder"); and the
 * fixed-code row decode of kernels/gather.h (the same tile decoder, keeping only the rows
 * asked for). The decode is the fused matmul's (kernels/fused_matmul_decode.cuh: 16 bf16x2
 * registers per lane and step, escapes added as shared-memory corrections); here the
 * registers are written out as 16-byte row segments instead of being fed to MMAs. One
 * arena launch decodes up to kMaxParts tensors. Host code here only launches; the plan
 * (kernels/plan.c) validated every section.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/decode.h"
#include "kernels/fused_matmul_decode.cuh"
#include "kernels/gather.h"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

namespace {

using namespace df11i_fused;

constexpr int kWarps = 4;     /* warps a CTA, one tile each */
constexpr int kMinBlocks = 5; /* CTAs an SM the registers must allow (20 warps) */
constexpr int kMaxParts = 16; /* tensors a launch (the kernel parameters: 1.6 KB) */
/* The lean decoder's CTA: kLeanWarps warps, and few enough registers that kLeanMinBlocks
 * such CTAs fit an SM (65536 / (64 * 10): 96 a thread, the plain kernel's; fewer spill;
 * docs/RUNTIME.md, "Co-resident decode", says what to measure with ncu). */
constexpr int kLeanWarps = DF11_GPU_LEAN_WARPS;
constexpr int kLeanMinBlocks = 10;
/* tiles a launch, so that its CTA count fits a grid */
constexpr uint64_t kMaxLaunchTiles = (uint64_t)kWarps << 30;

/* One tensor of a launch: its sections, output and geometry (codec/fixed.h); its tiles are
 * the launch's [first, the next part's first). */
struct Part {
    const uint8_t *sm, *codes, *exc, *base;
    const uint8_t *exc_hi; /* RECORDS: the record nibbles (exc: their words) */
    const uint32_t *exc_off;
    uint8_t *out;
    uint64_t rows, cols, first, strip_code_bytes, steps;
    uint32_t tiles, last_steps;
    uint32_t vec;     /* cols % 8 == 0 and out 16-byte aligned: 16-byte row segments */
    uint32_t records; /* the RECORDS layout (EXP_FIXED8) */
};

struct Args {
    Part p[kMaxParts];
    uint64_t n_tiles; /* of the launch */
    uint32_t *err;
    int n_parts;
    uint32_t records; /* every part's layout (a launch is of one) */
};

/* The part holding tile u of the launch (parts in order of first, part 0 at 0). */
__device__ __forceinline__ int part_of(const Args &a, uint64_t u)
{
    return part_index<kMaxParts>(a.n_parts, u, [&](int i) { return a.p[i].first; });
}

/* Where a decoded tile goes: put8(row, col, v) takes the 8 BF16 of W row `row` from
 * column col (col % 8 == 0), padding rows and columns included (the sink drops them). */

/* The arena: W row-major at out. VEC (cols % 8 == 0, out 16-byte aligned): a segment is
 * all inside W or all outside, one 16-byte store. */
template <bool VEC> struct dense_sink {
    uint8_t *out;
    uint64_t rows, cols;
    __device__ __forceinline__ void put8(uint64_t row, uint64_t col, uint4 v) const
    {
        if (row >= rows || col >= cols) return;
        uint8_t *p = out + 2 * (row * cols + col);
        if constexpr (VEC) {
            *reinterpret_cast<uint4 *>(p) = v;
        } else {
            const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
            for (uint32_t i = 0; i < 8; i++)
                if (col + i < cols)
                    reinterpret_cast<uint16_t *>(p)[i] = (uint16_t)(w[i / 2] >> 16 * (i % 2));
        }
    }
};

/* The row decode: only W rows [lo, hi), W row r to out row r - lo + dst: a segment as one
 * 16-byte store where vec, else one value at a time (BF16, or F32 where f32). The 16-byte
 * stores took the op's 8B block in 16 MiB row slices (decode + cuBLAS a slice) from 2.38 to
 * 1.17 ms at B = 256 (bench/RESULTS.md, twenty-seventh session). */
struct rows_sink {
    void *out;
    uint64_t lo, hi, dst, cols;
    uint32_t f32;
    uint32_t vec; /* BF16 out, cols % 8 == 0, out 16-byte aligned */
    __device__ __forceinline__ void put8(uint64_t row, uint64_t col, uint4 v) const
    {
        if (row < lo || row >= hi) return;
        const uint64_t at = (row - lo + dst) * cols + col;
        if (vec) {
            if (col < cols) *reinterpret_cast<uint4 *>(static_cast<uint16_t *>(out) + at) = v;
            return;
        }
        const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
        for (uint32_t i = 0; i < 8; i++) {
            if (col + i >= cols) break;
            const uint32_t b = w[i / 2] >> 16 * (i % 2) & 0xffffu;
            if (f32)
                static_cast<float *>(out)[at + i] = __uint_as_float(b << 16);
            else
                static_cast<uint16_t *>(out)[at + i] = (uint16_t)b;
        }
    }
};

/* What one warp does: decode one tile (up to 4 steps of 16 rows x 64 columns) of its part.
 * A lane loads all of its bytes of the tile at once (8 x 16 sm bytes, up to 3 code
 * vectors: 5.6 KiB a warp in flight, coalesced), finds its escapes (masks, one warp prefix
 * sum, an 8-byte exception window), and per step decodes its 32 weights as 16 bf16x2
 * (decode_step: pairs 8h..8h+3 are row l/4, columns 8 (l%4) .. +7 of half h, and
 * 8h+4..8h+7 the same of row l/4 + 8) and hands them to the sink as four 8-weight row
 * segments; the arena's 16-byte stores make a warp's store 8 rows x 64 contiguous bytes.
 * Bytes: ~1.4 read, 2 written a weight. Every lane of the warp must take part; corr4 is the
 * lane's 4 zeroed correction vectors in shared memory. */
template <bool REC, class Sink>
__device__ __forceinline__ void decode_tile(const Part &P, uint32_t tile, uint32_t lane,
                                            uint4 *corr4, uint32_t *err, const Sink &sink)
{
    const uint32_t s = tile / P.tiles, t = tile % P.tiles;
    const uint32_t n_steps = t + 1 == P.tiles ? P.last_steps : kTileSteps;
    const uint32_t nv = df11i_fixed_tile_vecs(n_steps);
    /* every load first, all read once: evict-first, so that the decoded tensor stays in L2
     * for its consumer. */
    const uint8_t *cp = P.codes + tile_codes_offset<uint64_t>(P.strip_code_bytes, s, t) + lane * 16;
    uint4 cw[3];
#pragma unroll
    for (uint32_t i = 0; i < 3; i++)
        cw[i] =
            i < nv ? __ldcs(reinterpret_cast<const uint4 *>(cp + 512 * i)) : make_uint4(0, 0, 0, 0);
    const uint8_t *sp = P.sm + tile_sm_offset<uint64_t>(P.steps, s, t) + lane * 16;
    uint4 sv[8];
#pragma unroll
    for (uint32_t i = 0; i < 8; i++)
        sv[i] = i < 2 * n_steps ? __ldcs(reinterpret_cast<const uint4 *>(sp + 512 * i))
                                : make_uint4(0, 0, 0, 0);
    const uint32_t off0 = __ldg(P.exc_off + tile), off1 = __ldg(P.exc_off + tile + 1);
    /* RECORDS: other lanes add into this lane's correction words; its own zeroing (at the
     * kernel's start, or the last step's) must be ordered before them (a shuffle is not) */
    if constexpr (REC) __syncwarp();
    const uint64_t r0 = 16ull * s + lane / 4;
    const uint32_t b0 = __ldg(P.base + r0), b8 = __ldg(P.base + r0 + 8);

    const uint32_t words[12] = { cw[0].x, cw[0].y, cw[0].z, cw[0].w, cw[1].x, cw[1].y,
                                 cw[1].z, cw[1].w, cw[2].x, cw[2].y, cw[2].z, cw[2].w };
    uint32_t M[4] = {}, cnt = 0, before = 0;
    const uint32_t swz = corr_swz(lane), sw = swz >> 2;
    uint32_t *corr = reinterpret_cast<uint32_t *>(corr4);
    /* RECORDS: up to 96 held as REDs (from global memory: a tile is read once), more read
     * again at each step (not in trained weights) */
    const uint32_t n_rec = REC ? off1 - off0 : 0, bpack = b0 | b8 << 16;
    const uint32_t corr_s = (uint32_t)__cvta_generic_to_shared(corr4) - lane * 64;
    RecordRed rr[kRecRegs];
    if constexpr (REC) {
        if (n_rec && n_rec <= kRecRegs * 32)
            tile_records(
                n_rec, lane, bpack, corr_s,
                [&](uint32_t j) { return record_of(P.exc, P.exc_hi, off0 + min(j, n_rec - 1)); },
                rr);
    } else if (tile_escapes(words, n_steps, lane, M, cnt, before) != off1 - off0) {
        /* codes and offsets disagree (the plan checked them): no exception is read */
        if (lane == 0 && err) atomicOr(err, 1u);
        M[0] = M[1] = M[2] = M[3] = cnt = 0;
    }
    ExcCursor ec = exc_start(P.exc, off0 + before, cnt);
    /* through a shuffle, so that ptxas keeps them as values and the decode adds them in its
     * IADD3 (as in the fused kernel) */
    const uint32_t X0 = __shfl_sync(~0u, b0 * 0x00800080u, (int)lane),
                   X8 = __shfl_sync(~0u, b8 * 0x00800080u, (int)lane);
    const uint64_t col = 256ull * t + 8 * (lane & 3);
#pragma unroll
    for (uint32_t k = 0; k < kTileSteps; k++) {
        if (k >= n_steps) break;
        uint32_t c[16], o[16];
        if constexpr (!REC) {
            apply_escapes(M[k], ec, b0 + 7, b8 + 7, swz, corr);
            take_corrections(corr4, sw, M[k], c);
        } else if (n_rec) {
            step_records(n_rec, rr, P.exc, P.exc_hi, off0, lane, bpack, corr_s, k, corr4, sw, c);
        } else {
#pragma unroll
            for (uint32_t i = 0; i < 16; i++) c[i] = 0;
        }
        decode_step(sv[2 * k], sv[2 * k + 1], words[3 * k], words[3 * k + 1], words[3 * k + 2], X0,
                    X8, c, o);
#pragma unroll
        for (uint32_t h = 0; h < 2; h++) {
            const uint64_t c8 = col + 64 * k + 32 * h;
            sink.put8(r0, c8, make_uint4(o[8 * h], o[8 * h + 1], o[8 * h + 2], o[8 * h + 3]));
            sink.put8(r0 + 8, c8,
                      make_uint4(o[8 * h + 4], o[8 * h + 5], o[8 * h + 6], o[8 * h + 7]));
        }
    }
}

/* A warp's 16 correction words a lane (fused_matmul_decode.cuh, corr_swz), zeroed. */
__device__ __forceinline__ uint4 *warp_corrections(uint4 *all, uint32_t lane, uint32_t warp)
{
    uint4 *c = all + (warp * 32 + lane) * 4;
#pragma unroll
    for (int v = 0; v < 4; v++) c[v] = make_uint4(0, 0, 0, 0);
    return c;
}

/* Tile u of an arena launch, by one whole warp (decode_tile); the warp of a part's tile 0
 * also zeroes the part's padding to its 256-byte-aligned end. */
template <bool REC>
__device__ __forceinline__ void arena_tile(const Args &a, uint64_t u, uint32_t lane, uint4 *corr4)
{
    const Part &P = a.p[part_of(a, u)];
    const uint32_t tile = (uint32_t)(u - P.first);
    if (tile == 0) {
        const uint64_t nbytes = 2 * P.rows * P.cols, end = (nbytes + 255) / 256 * 256;
        for (uint64_t i = nbytes + lane; i < end; i += 32) P.out[i] = 0;
    }
    if (P.vec)
        decode_tile<REC>(P, tile, lane, corr4, a.err, dense_sink<true>{ P.out, P.rows, P.cols });
    else
        decode_tile<REC>(P, tile, lane, corr4, a.err, dense_sink<false>{ P.out, P.rows, P.cols });
}

/* The arena decode: warp u of the launch decodes tile u of the launch. */
template <bool REC>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks) df11i_fixed_kernel(Args a)
{
    __shared__ __align__(16) uint4 corr_all[kWarps * 32 * 4];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint64_t u = (uint64_t)blockIdx.x * kWarps + warp;
    if (u >= a.n_tiles) return; /* whole warps */
    arena_tile<REC>(a, u, lane, warp_corrections(corr_all, lane, warp));
}

/* The lean arena decode (docs/RUNTIME.md, "Co-resident decode"): the same tiles as
 * df11i_fixed_kernel, each decoded by decode_tile exactly as there, but by a persistent grid
 * of few CTAs of kLeanWarps warps, sized to fit beside a GEMM's CTA on an SM: warp w of the
 * grid's W warps takes tiles w, w + W, w + 2W, ... A warp's corrections are zero again
 * after every tile (take_corrections clears what apply_escapes wrote), so one zeroing
 * serves all its tiles. */
template <bool REC>
__global__ void __launch_bounds__(32 * kLeanWarps, kLeanMinBlocks) df11i_fixed_lean_kernel(Args a)
{
    __shared__ __align__(16) uint4 corr_all[kLeanWarps * 32 * 4];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint4 *corr4 = warp_corrections(corr_all, lane, warp);
    const uint64_t stride = (uint64_t)gridDim.x * kLeanWarps;
    for (uint64_t u = (uint64_t)blockIdx.x * kLeanWarps + warp; u < a.n_tiles; u += stride)
        arena_tile<REC>(a, u, lane, corr4);
}

/* The row decode (kernels/gather.h): warp w decodes one tile of a strip holding wanted
 * rows and keeps only those rows' weights. By id: out row i = w / tiles is W row r.id[i],
 * from tile w % tiles of its strip (15 of a strip's 16 rows are decoded for nothing: the
 * price of reading a row alone). A range: the strips holding rows first .. first + n - 1,
 * tile by tile, out row = W row - first. */
template <bool REC>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    df11i_fixed_rows_kernel(Part P, df11i_gpu_rows r, void *__restrict__ out)
{
    __shared__ __align__(16) uint4 corr_all[kWarps * 32 * 4];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint64_t w = (uint64_t)blockIdx.x * kWarps + warp;
    uint64_t tile, lo, hi, dst; /* W rows [lo, hi) to out rows dst.. */
    if (r.by_id) {
        const uint64_t i = w / P.tiles;
        if (i >= r.n) return; /* whole warps */
        lo = r.id[i];
        hi = lo + 1;
        dst = i;
        tile = lo / 16 * P.tiles + w % P.tiles;
    } else {
        lo = r.first;
        hi = lo + r.n;
        dst = 0;
        tile = lo / 16 * P.tiles + w;
        if (tile >= (hi + 15) / 16 * P.tiles) return;
    }
    uint4 *corr4 = warp_corrections(corr_all, lane, warp);
    decode_tile<REC>(P, (uint32_t)tile, lane, corr4, nullptr,
                     rows_sink{ out, lo, hi, dst, P.cols, r.out_f32,
                                !r.out_f32 && P.cols % 8 == 0 && ((uintptr_t)out & 15) == 0 });
}

/* The plain launch (a warp a tile), or with lean_ctas > 0 the lean one: that many CTAs,
 * none without a tile. */
df11_status launch(const Args &a, uint32_t lean_ctas, cudaStream_t stream)
{
    uint64_t blocks = (a.n_tiles + kWarps - 1) / kWarps;
    if (lean_ctas) {
        blocks = (a.n_tiles + kLeanWarps - 1) / kLeanWarps;
        if (blocks > lean_ctas) blocks = lean_ctas;
        if (a.records)
            df11i_fixed_lean_kernel<true><<<(unsigned)blocks, 32 * kLeanWarps, 0, stream>>>(a);
        else
            df11i_fixed_lean_kernel<false><<<(unsigned)blocks, 32 * kLeanWarps, 0, stream>>>(a);
    } else if (a.records) {
        df11i_fixed_kernel<true><<<(unsigned)blocks, 32 * kWarps, 0, stream>>>(a);
    } else {
        df11i_fixed_kernel<false><<<(unsigned)blocks, 32 * kWarps, 0, stream>>>(a);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fixed decode launch (%llu CTAs): %s",
                          (unsigned long long)blocks, cudaGetErrorString(e));
    return DF11_OK;
}

/* A tensor's part (its output at out, its tiles from `first` of the launch); *tiles its
 * tile count. DF11_ERR_CORRUPT where the descriptor's tile count is not its shape's. */
df11_status part_of_desc(const df11i_gpu_tensor_desc *d, const uint8_t *pay, uint8_t *out,
                         uint64_t first, Part *p, uint64_t *tiles)
{
    df11i_fixed_geom g;
    df11_status s = df11i_fixed_geometry(d->rows, d->cols, &g);
    if (s != DF11_OK) return s;
    if (g.n_tiles != d->n_chunks)
        return df11i_fail(DF11_ERR_CORRUPT, "fixed decode: %llu x %llu with %u tiles",
                          (unsigned long long)d->rows, (unsigned long long)d->cols, d->n_chunks);
    *p = Part{ pay + d->data_off,
               pay + d->stream_off,
               pay + d->lanes_off,
               pay + d->base_off,
               pay + d->rec_hi_off,
               reinterpret_cast<const uint32_t *>(pay + d->chunks_off),
               out,
               g.rows,
               g.cols,
               first,
               g.strip_code_bytes,
               g.steps,
               (uint32_t)g.tiles,
               (uint32_t)g.last_steps,
               g.cols % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
               d->codec == DF11_CODEC_EXP_FIXED8 };
    *tiles = g.n_tiles;
    return DF11_OK;
}

/* The arena launches of the tensors of one fixed code among ds. */
df11_status decode_fixed_codec(const df11i_gpu_tensor_desc *ds, uint32_t n, uint32_t codec,
                               const uint8_t *pay, void *d_out, uint32_t lean_ctas,
                               uint32_t *d_error, cudaStream_t st)
{
    Args a = {};
    a.err = d_error;
    a.records = codec == DF11_CODEC_EXP_FIXED8;
    for (uint32_t i = 0; i < n; i++) {
        const df11i_gpu_tensor_desc *d = &ds[i];
        if (d->codec != codec || d->n_chunks == 0) continue; /* empty: no bytes */
        Part p;
        uint64_t tiles;
        df11_status s =
            part_of_desc(d, pay, static_cast<uint8_t *>(d_out) + d->out_off, a.n_tiles, &p, &tiles);
        if (s != DF11_OK) return s;
        if (a.n_parts == kMaxParts || a.n_tiles + tiles > kMaxLaunchTiles) {
            if ((s = launch(a, lean_ctas, st)) != DF11_OK) return s;
            a.n_parts = 0;
            a.n_tiles = 0;
            p.first = 0;
        }
        a.p[a.n_parts++] = p;
        a.n_tiles += tiles;
    }
    return a.n_parts ? launch(a, lean_ctas, st) : DF11_OK;
}

} // namespace

extern "C" df11_status df11i_gpu_decode_fixed(const df11i_gpu_tensor_desc *ds, uint32_t n,
                                              const void *d_payload, void *d_out,
                                              uint32_t lean_ctas, uint32_t *d_error, void *stream)
{
    if ((!ds && n) || !d_payload || !d_out)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_decode_fixed: NULL argument");
    const uint8_t *pay = static_cast<const uint8_t *>(d_payload);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    /* a launch per layout: the tensors of each fixed code in their order */
    for (uint32_t codec = DF11_CODEC_EXP_FIXED; codec <= DF11_CODEC_EXP_FIXED8; codec++) {
        df11_status s = decode_fixed_codec(ds, n, codec, pay, d_out, lean_ctas, d_error, st);
        if (s != DF11_OK) return s;
    }
    return DF11_OK;
}

extern "C" df11_status df11i_gpu_rows_fixed(const df11i_gpu_tensor_desc *d, const void *d_payload,
                                            const df11i_gpu_rows *r, void *out, void *stream)
{
    if (!d || !d_payload || !r || !out || !df11i_codec_is_fixed(d->codec) || !d->cols)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_gpu_rows_fixed: bad argument");
    if (r->n == 0) return DF11_OK;
    Part p;
    uint64_t n_tiles;
    df11_status s =
        part_of_desc(d, static_cast<const uint8_t *>(d_payload), nullptr, 0, &p, &n_tiles);
    if (s != DF11_OK) return s;
    const uint64_t warps = r->by_id
                               ? (uint64_t)r->n * p.tiles
                               : (((uint64_t)r->first + r->n + 15) / 16 - r->first / 16) * p.tiles;
    const uint64_t blocks = (warps + kWarps - 1) / kWarps;
    if (blocks > INT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "fixed rows decode: %llu CTAs",
                          (unsigned long long)blocks);
    if (p.records)
        df11i_fixed_rows_kernel<true>
            <<<(unsigned)blocks, 32 * kWarps, 0, static_cast<cudaStream_t>(stream)>>>(p, *r, out);
    else
        df11i_fixed_rows_kernel<false>
            <<<(unsigned)blocks, 32 * kWarps, 0, static_cast<cudaStream_t>(stream)>>>(p, *r, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return df11i_fail(DF11_ERR_DEVICE, "fixed rows decode launch (%llu CTAs): %s",
                          (unsigned long long)blocks, cudaGetErrorString(e));
    return DF11_OK;
}
