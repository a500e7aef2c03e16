/* The fixed-width exponent code ("fixed", issue 11): a 3-bit code per BF16 weight with an
 * exception list, laid out in the order a fused GEMV/GEMM kernel built on mma.m16n8k16
 * consumes it, so that a warp decodes its A fragments in registers right after the load.
 * Pure C on arrays; knows nothing of files or devices (bench/probes/fused_gemv.cu is the
 * GPU consumer). Bit-exact both ways, any input (NaN, Inf, all 256 exponents, odd shapes).
 *
 * What is stored, for W (rows x cols, row-major BF16 as HF stores it):
 *   - base[rows_pad]: per row, b such that [b, b+6] holds the most of the row's exponents.
 *   - sm: one sign|mantissa byte per weight (sign at bit 7), in kernel order (below).
 *   - codes: per weight c = e - b if that is 0..6, else 7 (escape), packed 3 bits a weight.
 *   - exc_off[n_tiles + 1] (u32) and exc: the escaped exponents, a byte each, tile by tile.
 * Per weight 8 + 3 bits, plus 8 bits per escape; on trained-like weights 2.4% escape.
 *
 * Geometry. Rows are padded to strips of 16, columns to steps of 64 (pad weights decode to
 * finite values with zero sign|mantissa; a kernel multiplies them by zero activations). A
 * STEP is what one warp consumes at once: 16 rows x 64 columns = 1024 weights, 32 per
 * lane. A TILE is up to 4 consecutive steps of one strip (the last tile of a strip may be
 * shorter); exceptions are indexed per tile.
 *
 * Kernel order of the sm bytes. Step g of strip s is two 512-byte halves h = 0, 1 (columns
 * 64g + 32h ...); lane l reads the 16 bytes at ((s*steps + g)*2 + h)*512 + 16 l, and byte
 * j of them is W[16 s + l/4 + 8 (j >= 8)][64 g + 32 h + 8 (l%4) + (j%8)]: 8 consecutive
 * weights of row l/4 and the same 8 of row l/4 + 8, which are exactly the A fragments of
 * two m16n8k16 MMAs once k is relabelled (a0a1/a4a5 = row l/4, a2a3/a6a7 = row l/4 + 8;
 * the activation fragment is then x[n][the same 8 columns], one 16-byte load).
 *
 * Pairs. The 32 weights of a lane in a step form 16 pairs p = 8 h + 2 w + u: the bytes
 * 4 w + 2 u and 4 w + 2 u + 1 of half h (a bf16x2 register: low, high). Pairs with
 * (p >> 2) & 1 == 0 are of row l/4, the others of row l/4 + 8.
 *
 * Codes of a step, three 32-bit words A, B, C per lane: pair p < 15 lives in word p % 3
 * (A, B, C), field i = p / 3, its low weight's code at bits 3i..3i+2 and its high weight's
 * at bits 16+3i..16+3i+2, so (word >> 3i) & 0x00070007 is the pair's code pair, in place
 * for a bf16x2. Pair 15's codes are spread over the spare bits: bit k of its low code is
 * bit 15 of word k (A, B, C), bit k of its high code bit 31 of word k. The words of a tile's steps
 * follow each other per lane (A0 B0 C0 A1 B1 C1 ...) and are stored as 16-byte vectors,
 * vector i of lane l at tile_code_base + (32 i + l) * 16: one coalesced load per vector.
 *
 * Escape order. In a step a lane's escapes are taken from the highest set bit of its mask
 * M = t(A) | t(B) << 1 | t(C) << 2 | (A & B & C & 0x80008000), t(X) = X & X>>1 & X>>2 &
 * 0x12491249, down (one FLO each on the GPU): bit f of M is the low (f < 16) or high
 * weight of pair f & 15 (the field layout above is chosen so that no table is needed). A
 * tile's exception list holds lane 0's escapes (steps in order), then lane 1's, and so on,
 * so a lane finds its first exception with one warp prefix sum of its counts.
 *
 * Two layouts share the geometry, the sm bytes and the code words (df11i_fixed_layout):
 *   - ESCAPES (codec 2): as above, a window of 7 (codes 0..6, b <= 249) and the escape code 7.
 *   - RECORDS (codec 3): a window of 8, c = e - b for every code 0..7 (b <= 247, so that a pad
 *     weight's exponent b + c stays below 255 and decodes finite, whatever its code), no
 *     escape code. A weight outside its row's window has code 0 and a RECORD in its tile's
 *     list: 12 bits of position, pos = l << 7 | k << 5 | f (lane l, step k of the tile, f as
 *     a bit of M above: pair f & 15, high weight if f >= 16), and its 8-bit exponent e. A
 *     tile's records are in increasing pos (so each lane's are together, steps in order,
 *     and none is repeated); none is at a pad weight. A kernel adds (e - b) at the weight
 *     (the code 0 contributed nothing) with one shared-memory atomic a record, without
 *     looking at any code. The list is stored as n_exc u16 words, pos | (e & 15) << 12,
 *     then, from the next 16-byte boundary (df11i_fixed_rec_hi_offset), n_exc 4-bit
 *     nibbles e >> 4, record j's in byte j / 2 (low nibble first for even j): 20 bits a
 *     record. Trained-like weights put ~1.4% of weights outside an 8-exponent window,
 *     against ~2.4% outside a 7-exponent one.
 */
#ifndef DF11_CODEC_FIXED_H
#define DF11_CODEC_FIXED_H

#include <stddef.h>
#include <stdint.h>

#include "df11/file.h"
#include "df11/status.h"

/* The inline helpers below are the GPU kernels' too (kernels/decode_fixed.cu,
 * kernels/fused_matmul_decode.cuh): under nvcc they are host and device functions. */
#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define DF11I_FIXED_INLINE static inline __host__ __device__
#else
#define DF11I_FIXED_INLINE static inline
#endif

#define DF11_FIXED_STRIP_ROWS 16
#define DF11_FIXED_STEP_COLS 64
#define DF11_FIXED_TILE_STEPS 4
#define DF11_FIXED_ESCAPE 7
#define DF11_FIXED_WINDOW 7                /* ESCAPES: exponents a base covers, b .. b+6 */
#define DF11_FIXED_MAX_BASE 249            /* ESCAPES: so that b + 6 <= 255 */
#define DF11_FIXED_REC_WINDOW 8            /* RECORDS: b .. b+7 */
#define DF11_FIXED_REC_MAX_BASE 247        /* RECORDS: so that b + 7 <= 254 (pad weights finite) */
#define DF11_FIXED_MAX_RECORDS 0x7fffffffu /* RECORDS: n_exc at most (2 n_exc fits 32 bits) */

typedef enum df11i_fixed_layout {
    DF11I_FIXED_ESCAPES = 0, /* codec 2: escape code, exponent bytes in escape order */
    DF11I_FIXED_RECORDS = 1, /* codec 3: 8-exponent window, 20-bit records per tile */
} df11i_fixed_layout;

typedef struct df11i_fixed_geom {
    uint64_t rows, cols;         /* the tensor */
    uint64_t rows_pad, cols_pad; /* multiples of 16 and 64 */
    uint64_t n_strips;           /* rows_pad / 16 */
    uint64_t steps;              /* per strip: cols_pad / 64 */
    uint64_t tiles;              /* per strip: ceil(steps / 4) */
    uint64_t last_steps;         /* steps of a strip's last tile, 1..4 (0 if cols == 0) */
    uint64_t n_tiles;            /* n_strips * tiles */
    uint64_t sm_bytes;           /* rows_pad * cols_pad */
    uint64_t strip_code_bytes;   /* a strip's code vectors */
    uint64_t code_bytes;         /* n_strips * strip_code_bytes */
} df11i_fixed_geom;

/* Fills `g` for a rows x cols tensor. DF11_ERR_INVALID_ARG for a NULL g, DF11_ERR_OVERFLOW
 * when a size would not fit 64 bits or a tile index 32 bits. */
df11_status df11i_fixed_geometry(uint64_t rows, uint64_t cols, df11i_fixed_geom *g);
/* DF11_ERR_CORRUPT unless `g` is exactly df11i_fixed_geometry(g->rows, g->cols) (a
 * geometry read from outside, or one a caller filled in by hand). */
df11_status df11i_fixed_geometry_check(const df11i_fixed_geom *g);

/* 16-byte code vectors of a tile of n_steps steps, per lane. */
DF11I_FIXED_INLINE uint32_t df11i_fixed_tile_vecs(uint64_t n_steps)
{
    return (uint32_t)((3 * n_steps + 3) / 4);
}

/* Byte offset, within the codes section, of the 16-byte vector `vec` of lane l of tile t
 * (0-based in its strip) of strip s (the layout in codec/fixed.h). */
DF11I_FIXED_INLINE uint64_t df11i_fixed_code_vec_offset(const df11i_fixed_geom *g, uint64_t s,
                                                        uint64_t t, uint32_t vec, uint32_t l)
{
    return s * g->strip_code_bytes +
           t * (uint64_t)df11i_fixed_tile_vecs(DF11_FIXED_TILE_STEPS) * 512 +
           ((uint64_t)vec * 32 + l) * 16;
}

/* A coded tensor. Owns its buffers when made by df11i_fixed_encode (df11i_fixed_free). */
typedef struct df11i_fixed {
    df11i_fixed_geom g;
    df11i_fixed_layout layout;
    uint8_t *base;     /* rows_pad bytes */
    uint8_t *sm;       /* sm_bytes */
    uint32_t *codes;   /* code_bytes / 4 words */
    uint32_t *exc_off; /* n_tiles + 1 entries, exc_off[0] = 0, exc_off[n_tiles] = n_exc */
    /* ESCAPES: n_exc exponent bytes; RECORDS: the record words and nibbles (above). Either
     * way df11i_fixed_exc_section bytes, zero past the list's. */
    uint8_t *exc;
    uint64_t n_exc; /* escapes or records */
} df11i_fixed;

/* Whether a file's codec is a fixed code, and its layout (EXP_FIXED: ESCAPES, EXP_FIXED8:
 * RECORDS). */
DF11I_FIXED_INLINE int df11i_codec_is_fixed(int codec)
{
    return codec == DF11_CODEC_EXP_FIXED || codec == DF11_CODEC_EXP_FIXED8;
}
DF11I_FIXED_INLINE df11i_fixed_layout df11i_fixed_layout_of(int codec)
{
    return codec == DF11_CODEC_EXP_FIXED8 ? DF11I_FIXED_RECORDS : DF11I_FIXED_ESCAPES;
}

DF11I_FIXED_INLINE uint32_t df11i_fixed_window(df11i_fixed_layout layout)
{
    return layout == DF11I_FIXED_RECORDS ? DF11_FIXED_REC_WINDOW : DF11_FIXED_WINDOW;
}
DF11I_FIXED_INLINE uint32_t df11i_fixed_max_base(df11i_fixed_layout layout)
{
    return layout == DF11I_FIXED_RECORDS ? DF11_FIXED_REC_MAX_BASE : DF11_FIXED_MAX_BASE;
}

/* Byte j (0..15) of half h <-> pair p = 8 h + 2 (j / 4) + (j % 4) / 2, its high weight if
 * j is odd. */
DF11I_FIXED_INLINE uint32_t df11i_fixed_pair_of_byte(uint32_t h, uint32_t j)
{
    return 8 * h + 2 * (j / 4) + (j % 4) / 2;
}

/* Where weight f (a bit of M: pair f & 15, high if f >= 16) of a lane's step sits in its
 * two halves: half *h, byte *j of the lane's 16 (the inverse of the pairs' numbering). */
DF11I_FIXED_INLINE void df11i_fixed_pair_byte(uint32_t f, uint32_t *h, uint32_t *j)
{
    const uint32_t p = f & 15;
    *h = p >> 3;
    *j = 4 * ((p >> 1) & 3) + 2 * (p & 1) + (f >> 4);
}

/* The code of pair p's low (hi = 0) or high weight in a lane's step words abc (A, B, C). */
DF11I_FIXED_INLINE uint32_t df11i_fixed_code(const uint32_t abc[3], uint32_t p, uint32_t hi)
{
    if (p < 15) return abc[p % 3] >> (3 * (p / 3) + 16 * hi) & 7u;
    uint32_t c = 0;
    for (uint32_t k = 0; k < 3; k++) c |= (abc[k] >> (15 + 16 * hi) & 1u) << k;
    return c;
}

/* RECORDS: where the nibbles start in the exception section of n records. */
DF11I_FIXED_INLINE uint64_t df11i_fixed_rec_hi_offset(uint64_t n) { return (2 * n + 15) / 16 * 16; }

/* Bytes of the exception list proper, and of its section: padded to 16 bytes and followed
 * by 16 zero bytes, so that a kernel may load it 16 bytes at a time from any 16-aligned
 * index below its end (RECORDS: the nibbles start on their own 16-byte boundary). */
DF11I_FIXED_INLINE uint64_t df11i_fixed_exc_bytes(df11i_fixed_layout layout, uint64_t n)
{
    return layout == DF11I_FIXED_RECORDS ? 2 * n + (n + 1) / 2 : n;
}
DF11I_FIXED_INLINE uint64_t df11i_fixed_exc_section(df11i_fixed_layout layout, uint64_t n)
{
    return layout == DF11I_FIXED_RECORDS
               ? df11i_fixed_rec_hi_offset(n) + ((n + 1) / 2 + 15) / 16 * 16 + 16
               : (n + 15) / 16 * 16 + 16;
}

/* The sections of a coded tensor as a .df11 file holds them, in its order (docs/FORMAT.md):
 * bases, exception offsets, code vectors, exceptions (df11i_fixed_exc_section), sm bytes. */
#define DF11I_FIXED_SECTIONS 5
DF11I_FIXED_INLINE void df11i_fixed_section_sizes(const df11i_fixed_geom *g,
                                                  df11i_fixed_layout layout, uint64_t n_exc,
                                                  uint64_t len[DF11I_FIXED_SECTIONS])
{
    len[0] = g->rows_pad;
    len[1] = 4 * (g->n_tiles + 1);
    len[2] = g->code_bytes;
    len[3] = df11i_fixed_exc_section(layout, n_exc);
    len[4] = g->sm_bytes;
}

/* Bytes those sections store, their padding left out. */
DF11I_FIXED_INLINE uint64_t df11i_fixed_stored_size(const df11i_fixed_geom *g,
                                                    df11i_fixed_layout layout, uint64_t n_exc)
{
    return g->rows_pad + 4 * (g->n_tiles + 1) + g->code_bytes +
           df11i_fixed_exc_bytes(layout, n_exc) + g->sm_bytes;
}

/* A record from its u16 word w and its nibble byte (record j's nibble is byte j / 2's low
 * half for even j): pos in bits 0..11, exponent in 12..19. */
DF11I_FIXED_INLINE uint32_t df11i_fixed_record_join(uint32_t w, uint32_t nib_byte, uint64_t j)
{
    const uint32_t hi = nib_byte >> (4 * (j & 1)) & 15u;
    return (w & 0xfffu) | ((w >> 12) | hi << 4) << 12;
}

/* Record j of a RECORDS list `exc` of n records (df11i_fixed_record_join's form). */
DF11I_FIXED_INLINE uint32_t df11i_fixed_record(const uint8_t *exc, uint64_t n, uint64_t j)
{
    return df11i_fixed_record_join((uint32_t)exc[2 * j] | (uint32_t)exc[2 * j + 1] << 8,
                                   exc[df11i_fixed_rec_hi_offset(n) + j / 2], j);
}

/* Encodes a rows x cols BF16 matrix in `layout` on n_threads threads (0 = all cores). More
 * than 2^32 - 1 escapes (RECORDS: 2^31 - 1 records, DF11_FIXED_MAX_RECORDS: the kernels
 * index the record words' bytes in 32 bits) fail with DF11_ERR_OVERFLOW. */
df11_status df11i_fixed_encode(const uint16_t *w, uint64_t rows, uint64_t cols,
                               df11i_fixed_layout layout, int n_threads, df11i_fixed *out);
void df11i_fixed_free(df11i_fixed *f);

/* Decodes into `out` (rows x cols, row-major). Checks exc_off (monotonic, ends at n_exc)
 * and that every tile holds exactly as many escapes as its codes say (RECORDS: that its
 * records are in increasing position, each at a weight of the tile, not a pad one, whose
 * code is 0): DF11_ERR_CORRUPT otherwise, without reading outside the buffers the geometry,
 * layout and n_exc describe. */
df11_status df11i_fixed_decode(const df11i_fixed *f, uint16_t *out, int n_threads);

/* Decodes rows [r0, r1) into `out` ((r1 - r0) x cols, row-major), single-threaded: only
 * the strips holding them are read, with their bases (at most df11i_fixed_max_base), and of
 * the exception offsets only those strips' (checked in order and within n_exc; each tile's
 * count against its codes as it is decoded) and the two ends (0 and n_exc), so a tensor no
 * one validated whole is still read only inside its buffers, and decoded by a caller that
 * reads every strip only where df11i_fixed_validate would pass it. */
df11_status df11i_fixed_decode_rows(const df11i_fixed *f, uint64_t r0, uint64_t r1, uint16_t *out);

/* Bytes a coded tensor stores: bases, sm, codes, offsets and exceptions (unpadded). */
uint64_t df11i_fixed_stored_bytes(const df11i_fixed *f);

/* Where sm byte j of lane l in half h of global step g of strip s comes from. */
DF11I_FIXED_INLINE void df11i_fixed_weight_pos(uint64_t s, uint64_t g, uint32_t h, uint32_t l,
                                               uint32_t j, uint64_t *row, uint64_t *col)
{
    *row = 16 * s + l / 4 + 8 * (j >= 8);
    *col = 64 * g + 32 * h + 8 * (l % 4) + (j % 8);
}

/* RECORDS: whether a record at `pos` may follow one at `prev` (-1: the tile's first) in tile
 * t of strip s, of n_steps steps: in increasing position, in one of those steps, at a weight
 * of the tensor (not a pad one) whose code in its lane's step words abc is 0. The check the
 * CPU decoder and df11i_fixed_validate both make, so that they refuse the same lists. */
DF11I_FIXED_INLINE int df11i_fixed_record_fits(const df11i_fixed_geom *g, uint64_t s, uint64_t t,
                                               uint32_t n_steps, const uint32_t abc[3],
                                               uint32_t pos, int32_t prev)
{
    const uint32_t l = pos >> 7, k = (pos >> 5) & 3, f = pos & 31;
    uint32_t h, j;
    uint64_t row, col;
    if ((int32_t)pos <= prev || k >= n_steps) return 0;
    df11i_fixed_pair_byte(f, &h, &j);
    df11i_fixed_weight_pos(s, t * DF11_FIXED_TILE_STEPS + k, h, l, j, &row, &col);
    return row < g->rows && col < g->cols && df11i_fixed_code(abc, f & 15, f >> 4) == 0;
}

/* The escape mask M of a step from its code words (see the file comment). */
DF11I_FIXED_INLINE uint32_t df11i_fixed_escape_mask(uint32_t a, uint32_t b, uint32_t c)
{
    const uint32_t lsb = 0x12491249u;
    uint32_t ta = a & a >> 1 & a >> 2 & lsb, tb = b & b >> 1 & b >> 2 & lsb;
    uint32_t tc = c & c >> 1 & c >> 2 & lsb;
    return ta | tb << 1 | tc << 2 | (a & b & c & 0x80008000u);
}

#ifdef __cplusplus
}
#endif
#endif
