/* A warp's walk over the tiles of a 16-row strip of a fixed-code tensor (codec/fixed.h) and,
 * chained, the strips after it, shared by the two fused matmul kernels:
 * kernels/fused_matmul.cu (batch 1..24 on Hopper, 1..32 elsewhere: straight into mma.sync) and
 * kernels/fused_gemm.cu (larger batches, straight into wgmma from registers); both kernels'
 * walks go on from one strip into the next where the tensor's last tile is whole. The walk
 * copies each tile into the warp's stage by cp.async, its steps a few ahead
 * of the decode, decodes every step of 64 columns in registers
 * (kernels/fused_matmul_decode.cuh) and hands the step's 32 weights a lane to the kernel.
 * CUDA C++, device code (sm_80+: cp.async) and the host's Mat and geometry helpers;
 * everything is in namespace df11i_fused.
 */
#ifndef DF11_KERNELS_FUSED_MATMUL_STRIP_CUH
#define DF11_KERNELS_FUSED_MATMUL_STRIP_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/fused_matmul_decode.cuh"
#include "kernels/matmul.h"
extern "C" {
#include "codec/fixed.h"
#include "common/error.h"
}

namespace df11i_fused {

// One part of a launch: a tensor, its strips numbered from unit g0 of the launch (a unit
// is a kernel's group of strips: a CTA's strip pair in fused_matmul.cu, a row block of 8 in
// fused_gemm.cu), its outputs at y columns y_col ... y_col + rows - 1. The geometry fields
// past `rows` are the same in every part (one K).
struct Mat {
    const uint8_t *sm;
    const uint8_t *codes;
    const uint32_t *exc_off;
    const uint8_t *exc;    // escaped exponents, or (RECORDS) the record words
    const uint8_t *exc_hi; // RECORDS: the record nibbles
    const uint8_t *base;
    int rows, g0, y_col, cols_pad, n_strips, steps, tiles, last_steps;
    long long strip_code_bytes;
};

// A part's Mat: its payload's arrays, g (geom_of's), its first unit and y column.
inline Mat mat_of(const df11i_fused_part &p, const df11i_fixed_geom &g, int g0, int y_col)
{
    const df11i_gpu_tensor_desc *d = p.d;
    const uint8_t *b = static_cast<const uint8_t *>(p.payload);
    return Mat{ b + d->data_off,
                b + d->stream_off,
                reinterpret_cast<const uint32_t *>(b + d->chunks_off),
                b + d->lanes_off,
                b + d->rec_hi_off,
                b + d->base_off,
                (int)g.rows,
                g0,
                y_col,
                (int)g.cols_pad,
                (int)g.n_strips,
                (int)g.steps,
                (int)g.tiles,
                (int)g.last_steps,
                (long long)g.strip_code_bytes };
}

// A tensor's geometry, where the kernels can index it with ints.
inline df11_status geom_of(uint64_t rows, uint64_t cols, df11i_fixed_geom *g)
{
    df11_status s = df11i_fixed_geometry(rows, cols, g);
    if (s != DF11_OK) return s;
    if (!rows || !cols || g->rows_pad > INT32_MAX || g->cols_pad > INT32_MAX ||
        g->n_strips * g->tiles > INT32_MAX)
        return df11i_fail(DF11_ERR_UNSUPPORTED, "fused matmul: %llu x %llu is out of range",
                          (unsigned long long)rows, (unsigned long long)cols);
    return DF11_OK;
}

// L2::128B: a prefetch-size hint to the L2 for the 128-byte line a copy falls in. A warp's 512
// contiguous bytes ask for every sector of their 4 lines anyway, so what it changes is how
// the L2 fetches them from DRAM (not measured). Against no hint the block is 1.5-2% faster
// at B = 1..16 and 64 and 1% slower at 32; 256B gained nothing (bench/RESULTS.md).
__device__ __forceinline__ void cp16(void *smem, const void *g)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;" ::"r"(s), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ uint4 lds128(const uint8_t *p)
{
    return *reinterpret_cast<const uint4 *>(p);
}

// A warp's stage (8.5 KiB with its corrections, so that shared memory leaves L1 room for x):
// 4 sm slots of a step each, the code vectors, and two exception buffers (the tile in use
// and the next), each up to 512 bytes from the 16-byte boundary below the tile's first
// exception (more are read from global memory); RECORDS: up to 96 records, their words
// from the buffer's start and their nibbles from REC_NIB_AT (a tile with more is read from
// global memory). Every lane reads back only the sm and code bytes it copied itself; only
// the exceptions cross lanes.
constexpr int EXC_STAGE = 528;
constexpr int STAGE_CODES = kTileSmBytes;               // the code vectors, after 4 sm slots
constexpr int STAGE_EXC = STAGE_CODES + kTileCodeBytes; // the two exception buffers
constexpr int RING_BYTES = STAGE_EXC + 2 * EXC_STAGE;
constexpr int CORR_BYTES = 2048;
constexpr int REC_NIB_AT = 224; // 96 records' words from a 16-byte boundary: 13 vectors
static_assert(REC_NIB_AT + 64 <= EXC_STAGE && kRecRegs * 32 == 96, "the records' stage");

struct TileOff {
    uint32_t off0, off1, nsteps;
};

// The lane's word of strip s's exception offsets from tile t on: tile t + lane's (offsets of
// tiles t .. t + 31 across the warp; the entry past the last tile where they run beyond it).
__device__ __forceinline__ uint32_t exc_offsets(const Mat &W, int s, int t, uint32_t lane)
{
    return __ldg(W.exc_off + (long long)s * W.tiles + min(t + (int)lane, W.tiles));
}

// Tile (s, t)'s code vectors (codes: the tile's, at the lane's 16 bytes) into the stage and
// its exceptions into `excb` (RECORDS: where 96 or fewer); one group. offw / tw: the lane's
// window of exception offsets (tile tw + lane's), reloaded once t is 31 tiles on.
template <bool REC>
__device__ __forceinline__ TileOff issue_codes(const Mat &W, int s, int t, const uint8_t *codes,
                                               uint32_t lane, uint32_t &offw, int &tw,
                                               uint8_t *stage, uint8_t *excb)
{
    if (t - tw >= 31) {
        tw = t;
        offw = exc_offsets(W, s, t, lane);
    }
    TileOff o;
    o.off0 = __shfl_sync(~0u, offw, t - tw);
    o.off1 = __shfl_sync(~0u, offw, t - tw + 1);
    o.nsteps = t + 1 == W.tiles ? W.last_steps : kTileSteps;
    uint8_t *dst = stage + STAGE_CODES + lane * 16;
    const int nv = (3 * o.nsteps + 3) / 4;
#pragma unroll
    for (int i = 0; i < 3; i++)
        if (i < nv) cp16(dst + i * 512, codes + i * 512);
    if constexpr (REC) {
        // words [2 off0, 2 off1) and nibble bytes [off0 / 2, (off1 + 1) / 2), each from the
        // 16-byte boundary below: at most 13 and 4 vectors, inside the section (codec/fixed.h)
        const uint32_t n = o.off1 - o.off0;
        if (n && n <= kRecRegs * 32) {
            const uint32_t wa = (2 * o.off0) & ~15u, nw = (2 * o.off1 - wa + 15) >> 4;
            const uint32_t na = (o.off0 >> 1) & ~15u, nn = (((o.off1 + 1) >> 1) - na + 15) >> 4;
            if (lane < nw) cp16(excb + lane * 16, W.exc + wa + lane * 16);
            if (lane >= 16 && lane - 16 < nn)
                cp16(excb + REC_NIB_AT + (lane - 16) * 16, W.exc_hi + na + (lane - 16) * 16);
        }
    } else {
        const uint32_t a0 = o.off0 & ~15u, nvec = (o.off1 - a0 + 15) >> 4;
        if (nvec <= 33 && lane < nvec) cp16(excb + lane * 16, W.exc + a0 + lane * 16);
        if (nvec == 33 && lane == 0) cp16(excb + 512, W.exc + a0 + 512);
    }
    cp_commit();
    return o;
}
// Step g of a tile (sm: the tile's, at the lane's 16 bytes) into sm slot g (the lane's own 32
// bytes); one group, empty where !on.
__device__ __forceinline__ void issue_step(const uint8_t *sm, int g, bool on, uint32_t lane,
                                           uint8_t *stage)
{
    if (on) {
        cp16(stage + g * kStepSmBytes + lane * 16, sm + g * kStepSmBytes);
        cp16(stage + g * kStepSmBytes + 512 + lane * 16, sm + g * kStepSmBytes + 512);
    }
    cp_commit();
}

// Where tile t of strip s starts, at the lane's 16 bytes: its sm bytes and its code vectors.
__device__ __forceinline__ const uint8_t *tile_sm(const Mat &W, int s, int t, uint32_t lane)
{
    return W.sm + tile_sm_offset<long long>(W.steps, s, t) + lane * 16;
}
__device__ __forceinline__ const uint8_t *tile_codes(const Mat &W, int s, int t, uint32_t lane)
{
    return W.codes + tile_codes_offset<long long>(W.strip_code_bytes, s, t) + lane * 16;
}

// A segment of a warp's walk: tiles t0, t0 + TS, ... below t1 of strip s of part `part` (the
// caller's Mat); grp is the caller's (what its `done` needs to know).
struct Seg {
    int part, s, t0, t1, grp;
};

// Where a step's 32 weights a lane sit (decode_step's o[16]): o[8h + i] (i < 4) holds
// columns 32h + 8q + 2i, +1 of row nrow (q = lane & 3, nrow = lane >> 2), o[8h + 4 + i]
// the same columns of row nrow + 8. As mma.m16n8k16 A fragments: columns 64-wide step,
// k-chunk 2h + j is {o[8h + 2j], o[8h + 4 + 2j], o[8h + 2j + 1], o[8h + 5 + 2j]}.

// A warp's walk over segment sg and, chained, those next(Seg &) hands it after (TS > 1 where TS
// warps share a strip's tiles; 4 steps a tile, the tensor's last tile W.last_steps). Chained: the
// next segment's codes and first steps are copied during this one's last tile, as a tile of the
// same strip's would be, so that a range over two strips pays no second fill; done(seg) runs
// between the two (a split sum's round trips overlap those copies). Only where the tensors' last
// tiles are whole (K rounded up to 64 a multiple of 256), which keeps the copy groups a lane waits
// for in step; otherwise the walk returns after sg, and the caller starts the next segment cold.
// mat(part): the part's Mat. Per tile: escape masks, one warp prefix sum of escape counts, an
// 8-byte exception window per lane (REC: up to 3 records a lane, as the REDs they make). Per
// step: pre(t, g) (the caller's loads that must be issued before the step waits for its
// copies), the wait, step g + AHEAD copied into its slot (AHEAD 1..4, the kernel's choice),
// corrections (a RED a lane a round, in warp-uniform rounds; REC: 3 predicated REDs a lane,
// one a record slot, a slot past the list matching no step, two __syncwarp), 16 pairs decoded
// (PRMT, SHF, 2 LOP3, IADD3), then use(t, g, o). Bytes per tile: 4096 sm + 1536 codes + ~100
// exceptions, read once. corr4: the lane's 64 bytes of correction words in shared memory, zero
// on entry and on return. PDL_WAIT: griddepcontrol.wait once the first tile's codes and first AHEAD
// steps are in flight (fused_matmul.cu's programmatic launch). err: ORed with 1 where a tile's
// codes and exception offsets disagree (may be NULL; REC: nothing to compare, validated at
// load).
template <bool PDL_WAIT, int TS, int AHEAD, bool REC, class MatOf, class Next, class Pre, class Use,
          class Done>
__device__ __forceinline__ void walk_strips(MatOf &&mat, Seg sg, Next &&next, uint32_t lane,
                                            uint8_t *ring, uint4 *corr4, unsigned *err, Pre &&pre,
                                            Use &&use, Done &&done)
{
    uint32_t *corr = reinterpret_cast<uint32_t *>(corr4);
    const uint32_t swz = corr_swz(lane), sw = swz >> 2, nrow = lane >> 2;
    // the row bases through a shuffle, so that ptxas keeps them as values and the decode
    // adds them in its IADD3 instead of an IMAD per pair
    uint32_t b0 = mat(sg.part).base[16 * sg.s + nrow], b8 = mat(sg.part).base[16 * sg.s + nrow + 8];
    uint32_t X0 = __shfl_sync(~0u, b0 * 0x00800080u, (int)lane),
             X8 = __shfl_sync(~0u, b8 * 0x00800080u, (int)lane);
    uint32_t nb0 = 0, nb8 = 0; // the next segment's, where chained
    uint32_t offw = 0;
    int tw = -1000;
    // One cp.async group a tile head (the next tile's codes and exceptions) and one a step
    // (at step g, step g + AHEAD into slot (g + AHEAD) % 4, last read 4 - AHEAD steps
    // before), so that the group a lane waits for has a fixed number of younger groups: at a
    // head, the 4 steps' since the codes were issued a tile earlier (AHEAD at the first,
    // after the prologue's); at step g, the AHEAD - 1 steps' issued since its own, and one
    // head if g < AHEAD.
    static_assert(AHEAD >= 1 && AHEAD <= kTileSteps, "the ring has a slot a step of a tile");
    uint8_t *stage = ring;
    // the tile's sm bytes and code vectors at the lane's 16 bytes; the next tile's of the
    // same strip follow at once (tile_sm, tile_codes)
    const uint8_t *sm_t = tile_sm(mat(sg.part), sg.s, sg.t0, lane),
                  *codes_t = tile_codes(mat(sg.part), sg.s, sg.t0, lane);
    TileOff cur = issue_codes<REC>(mat(sg.part), sg.s, sg.t0, codes_t, lane, offw, tw, stage,
                                   ring + STAGE_EXC),
            nxt = cur;
    const uint32_t corr_s = (uint32_t)__cvta_generic_to_shared(corr4) - lane * 64;
#pragma unroll
    for (int g = 0; g < AHEAD; g++) issue_step(sm_t, g, g < (int)cur.nsteps, lane, stage);
#if __CUDA_ARCH__ >= 900
    if (PDL_WAIT) asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    bool first = true;
    for (int it = 0;;) { // a segment; it counts tiles (the exception buffers alternate)
        const Mat &W = mat(sg.part);
        Seg nx;
        const bool chain = W.last_steps == 4 && next(nx);
        // the next strip's row bases and exception offsets loaded now, so that its first
        // copies do not wait for them in this segment's last tile
        uint32_t nofw = 0;
        if (chain) {
            const Mat &N = mat(nx.part);
            nb0 = N.base[16 * nx.s + nrow];
            nb8 = N.base[16 * nx.s + nrow + 8];
            nofw = exc_offsets(N, nx.s, nx.t0, lane);
        }
        for (int t = sg.t0; t < sg.t1; t += TS, it++) {
            uint8_t *excb = ring + STAGE_EXC + (it & 1) * EXC_STAGE;
            if (first)
                cp_wait<AHEAD>();
            else
                cp_wait<kTileSteps>();
            first = false;
            __syncwarp(); // exceptions copied by other lanes; the other buffer free
            uint4 cw[3];
#pragma unroll
            for (int i = 0; i < 3; i++) cw[i] = lds128(stage + STAGE_CODES + i * 512 + lane * 16);
            // the next tile: this strip's, or the next segment's first
            const bool more = t + TS < sg.t1, on = more || chain;
            const uint8_t *sm_n = sm_t, *codes_n = codes_t;
            uint8_t *excn = ring + STAGE_EXC + ((it + 1) & 1) * EXC_STAGE;
            if (more) {
                sm_n = sm_t + kTileSmBytes * TS;
                codes_n = codes_t + kTileCodeBytes * TS;
                nxt = issue_codes<REC>(W, sg.s, t + TS, codes_n, lane, offw, tw, stage, excn);
            } else if (chain) {
                const Mat &N = mat(nx.part);
                sm_n = tile_sm(N, nx.s, nx.t0, lane);
                codes_n = tile_codes(N, nx.s, nx.t0, lane);
                offw = nofw;
                tw = nx.t0;
                nxt = issue_codes<REC>(N, nx.s, nx.t0, codes_n, lane, offw, tw, stage, excn);
            } else {
                cp_commit();
            }
            const uint32_t words[12] = { cw[0].x, cw[0].y, cw[0].z, cw[0].w, cw[1].x, cw[1].y,
                                         cw[1].z, cw[1].w, cw[2].x, cw[2].y, cw[2].z, cw[2].w };
            uint32_t M[4] = {}, cnt = 0, before = 0;
            ExcCursor ec{};
            RecordRed rr[kRecRegs];
            const uint32_t n_rec = cur.off1 - cur.off0, bpack = b0 | b8 << 16;
            if constexpr (REC) {
                if (n_rec <= kRecRegs * 32) { // staged by issue_codes
                    const uint32_t lw = (2 * cur.off0) & 15u, n0 = cur.off0 >> 1 & ~15u;
                    tile_records(
                        n_rec, lane, bpack, corr_s,
                        [&](uint32_t j) {
                            const uint32_t i = cur.off0 + j;
                            return df11i_fixed_record_join(
                                *reinterpret_cast<const uint16_t *>(excb + lw + 2 * j),
                                excb[REC_NIB_AT + (i >> 1) - n0], i);
                        },
                        rr);
                }
            } else {
                const uint32_t total = tile_escapes(words, cur.nsteps, lane, M, cnt, before);
                if (total != cur.off1 - cur.off0 && lane == 0 && err) atomicOr(err, 1u);
                const uint32_t lead = cur.off0 & 15u;
                if (lead + total <= EXC_STAGE) { // in the stage
                    ec.src = excb;
                    ec.pos = lead + before;
                } else {
                    ec.src = W.exc;
                    ec.pos = cur.off0 + before;
                }
                // the lane's first window loaded now, off the first escape's path (only where
                // the lane has escapes: a window reads up to 16 bytes past its first byte)
                ec.win = cnt ? exc_window(ec.src, ec.pos) : 0;
                ec.left = cnt ? 8 : 0;
            }
#pragma unroll
            for (int g = 0; g < kTileSteps; g++) {
                if (g >= (int)cur.nsteps) break;
                pre(t, g);
                if (g < AHEAD) // g is a constant once unrolled
                    cp_wait<AHEAD>();
                else
                    cp_wait<AHEAD - 1>();
                const uint4 s0 = lds128(stage + (2 * g) * 512 + lane * 16),
                            s1 = lds128(stage + (2 * g + 1) * 512 + lane * 16);
                // the slots are the lane's own: copy the step AHEAD on into its slot now
                if (g + AHEAD < kTileSteps)
                    issue_step(sm_t, g + AHEAD, g + AHEAD < (int)cur.nsteps, lane, stage);
                else
                    issue_step(sm_n, g + AHEAD - kTileSteps,
                               on && g + AHEAD - kTileSteps < (int)nxt.nsteps, lane, stage);
                uint32_t c[16], o[16];
                if constexpr (REC) {
                    step_records(n_rec, rr, W.exc, W.exc_hi, cur.off0, lane, bpack, corr_s,
                                 (uint32_t)g, corr4, sw, c);
                } else {
                    apply_escapes(M[g], ec, b0 + 7, b8 + 7, swz, corr);
                    take_corrections(corr4, sw, M[g], c);
                }
                decode_step(s0, s1, words[3 * g], words[3 * g + 1], words[3 * g + 2], X0, X8, c, o);
                use(t, g, o);
            }
            __syncwarp(); // every lane is done with this tile's exception buffer (refilled at
                          // the head after next; the head's __syncwarp orders it too)
            cur = nxt;
            sm_t = sm_n;
            codes_t = codes_n;
        }
        done(sg);
        if (!chain) return;
        sg = nx;
        b0 = nb0;
        b8 = nb8;
        X0 = __shfl_sync(~0u, b0 * 0x00800080u, (int)lane);
        X8 = __shfl_sync(~0u, b8 * 0x00800080u, (int)lane);
    }
}

} // namespace df11i_fused

#endif
