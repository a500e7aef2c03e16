/* The fixed-width exponent code: CPU encoder and reference decoder of both layouts
 * (codec/fixed.h). Both walk the tensor in the kernel's order (strip, tile, lane, step,
 * pair), one strip per work item, so that the exception order is defined in one place:
 * lane_step_encode below. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/fixed.h"
#include "common/error.h"
#include "common/parallel.h"

df11_status df11i_fixed_geometry(uint64_t rows, uint64_t cols, df11i_fixed_geom *g)
{
    if (!g) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_geometry: NULL geometry");
    memset(g, 0, sizeof *g);
    if (rows > (UINT64_MAX >> 8) || cols > (UINT64_MAX >> 8))
        return df11i_fail(DF11_ERR_OVERFLOW, "fixed code: %llu x %llu is too large",
                          (unsigned long long)rows, (unsigned long long)cols);
    g->rows = rows;
    g->cols = cols;
    g->rows_pad = (rows + 15) / 16 * 16;
    g->cols_pad = (cols + 63) / 64 * 64;
    if (rows == 0 || cols == 0) g->rows_pad = g->cols_pad = 0;
    g->n_strips = g->rows_pad / 16;
    g->steps = g->cols_pad / 64;
    g->tiles = (g->steps + DF11_FIXED_TILE_STEPS - 1) / DF11_FIXED_TILE_STEPS;
    g->last_steps = g->steps ? g->steps - (g->tiles - 1) * DF11_FIXED_TILE_STEPS : 0;
    if (g->cols_pad && g->rows_pad > UINT64_MAX / g->cols_pad)
        return df11i_fail(DF11_ERR_OVERFLOW, "fixed code: %llu x %llu is too large",
                          (unsigned long long)rows, (unsigned long long)cols);
    g->sm_bytes = g->rows_pad * g->cols_pad;
    g->n_tiles = g->n_strips * g->tiles;
    if (g->n_tiles >= UINT32_MAX)
        return df11i_fail(DF11_ERR_OVERFLOW, "fixed code: %llu tiles",
                          (unsigned long long)g->n_tiles);
    g->strip_code_bytes = g->tiles
                              ? ((g->tiles - 1) * df11i_fixed_tile_vecs(DF11_FIXED_TILE_STEPS) +
                                 df11i_fixed_tile_vecs(g->last_steps)) *
                                    512
                              : 0;
    g->code_bytes = g->n_strips * g->strip_code_bytes; /* < sm_bytes, cannot overflow */
    return DF11_OK;
}

uint64_t df11i_fixed_stored_bytes(const df11i_fixed *f)
{
    return df11i_fixed_stored_size(&f->g, f->layout, f->n_exc);
}

void df11i_fixed_free(df11i_fixed *f)
{
    if (!f) return;
    free(f->base);
    free(f->sm);
    free(f->codes);
    free(f->exc_off);
    free(f->exc);
    memset(f, 0, sizeof *f);
}

/* ---- one lane's step: the unit both directions share ---- */

static inline uint32_t tile_steps(const df11i_fixed_geom *g, uint64_t t)
{
    return (uint32_t)(t + 1 == g->tiles ? g->last_steps : DF11_FIXED_TILE_STEPS);
}

/* Word w of lane l's code words in tile t of strip s. */
static inline uint64_t code_word_index(const df11i_fixed_geom *g, uint64_t s, uint64_t t,
                                       uint32_t l, uint32_t w)
{
    return df11i_fixed_code_vec_offset(g, s, t, w / 4, l) / 4 + w % 4;
}

static inline uint64_t sm_index(const df11i_fixed_geom *g, uint64_t s, uint64_t step, uint32_t h,
                                uint32_t l, uint32_t j)
{
    return ((s * g->steps + step) * 2 + h) * 512 + l * 16 + j;
}

static inline void put_code(uint32_t abc[3], uint32_t p, uint32_t hi, uint32_t c)
{
    if (p < 15) {
        abc[p % 3] |= c << (3 * (p / 3) + 16 * hi);
    } else {
        for (uint32_t k = 0; k < 3; k++) abc[k] |= ((c >> k) & 1u) << (15 + 16 * hi);
    }
}

/* ---- encoder ---- */

typedef struct {
    const uint16_t *w;
    df11i_fixed *f;
    uint8_t *rec_hi; /* RECORDS: each record's e >> 4, a byte each (packed afterwards: two
                      * strips' records may share a nibble byte) */
} enc_job;

/* Per row: the b in 0..max_base whose window [b, b + window - 1] holds the most exponents
 * (the smallest such b on ties). */
static df11_status base_item(void *ctx, uint64_t strip)
{
    enc_job *j = ctx;
    const df11i_fixed_geom *g = &j->f->g;
    for (uint64_t r = strip * 16; r < strip * 16 + 16; r++) {
        if (r >= g->rows) {
            j->f->base[r] = 0;
            continue;
        }
        uint32_t hist[256] = { 0 };
        const uint16_t *row = j->w + r * g->cols;
        for (uint64_t c = 0; c < g->cols; c++) hist[df11i_bf16_exp(row[c])]++;
        const uint32_t width = df11i_fixed_window(j->f->layout);
        uint64_t win = 0, best = 0;
        uint32_t bb = 0;
        for (uint32_t e = 0; e < width; e++) win += hist[e];
        best = win;
        for (uint32_t b = 1; b <= df11i_fixed_max_base(j->f->layout); b++) {
            win += hist[b + width - 1];
            win -= hist[b - 1];
            if (win > best) best = win, bb = b;
        }
        j->f->base[r] = (uint8_t)bb;
    }
    return DF11_OK;
}

/* Codes (and exceptions in list order) of lane l's step k of tile t of strip s. With
 * `count_only` only the number of exceptions is returned; else sm bytes and code words
 * are written and the exceptions go to the list from index `at` on. */
static uint32_t lane_step_encode(const enc_job *jb, uint64_t s, uint64_t t, uint32_t k, uint32_t l,
                                 bool count_only, uint32_t abc[3], uint64_t at)
{
    const df11i_fixed_geom *g = &jb->f->g;
    const bool records = jb->f->layout == DF11I_FIXED_RECORDS;
    const uint32_t width = df11i_fixed_window(jb->f->layout);
    const uint64_t step = t * DF11_FIXED_TILE_STEPS + k;
    uint8_t code[16][2], ex[16][2];
    bool out_of_window[16][2];
    uint32_t n = 0;
    for (uint32_t h = 0; h < 2; h++)
        for (uint32_t jj = 0; jj < 16; jj++) {
            uint64_t row, col;
            df11i_fixed_weight_pos(s, step, h, l, jj, &row, &col);
            uint32_t p = df11i_fixed_pair_of_byte(h, jj), hi = jj % 2;
            uint8_t smb = 0, c = 0, e = 0;
            if (row < g->rows && col < g->cols) {
                uint16_t v = jb->w[row * g->cols + col];
                e = df11i_bf16_exp(v);
                smb = df11i_bf16_sm(v);
                int d = (int)e - (int)jb->f->base[row];
                c = (d >= 0 && d < (int)width) ? (uint8_t)d : records ? 0 : DF11_FIXED_ESCAPE;
                out_of_window[p][hi] = d < 0 || d >= (int)width;
            } else {
                out_of_window[p][hi] = false;
            }
            code[p][hi] = c;
            ex[p][hi] = e;
            n += out_of_window[p][hi];
            if (!count_only) jb->f->sm[sm_index(g, s, step, h, l, jj)] = smb;
        }
    if (count_only) return n;
    abc[0] = abc[1] = abc[2] = 0;
    for (uint32_t p = 0; p < 16; p++)
        for (uint32_t hi = 0; hi < 2; hi++) put_code(abc, p, hi, code[p][hi]);
    n = 0;
    if (records) { /* increasing position */
        for (uint32_t f = 0; f < 32; f++) {
            uint32_t p = f & 15, hi = f >> 4;
            if (!out_of_window[p][hi]) continue;
            const uint32_t pos = l << 7 | k << 5 | f, e = ex[p][hi];
            jb->f->exc[2 * (at + n)] = (uint8_t)pos;
            jb->f->exc[2 * (at + n) + 1] = (uint8_t)(pos >> 8 | (e & 15) << 4);
            jb->rec_hi[at + n] = (uint8_t)(e >> 4);
            n++;
        }
    } else { /* escape order */
        for (uint32_t f = 32; f-- > 0;) {
            uint32_t p = f & 15, hi = f >> 4;
            if (out_of_window[p][hi]) jb->f->exc[at + n++] = ex[p][hi];
        }
    }
    return n;
}

static df11_status count_item(void *ctx, uint64_t s)
{
    enc_job *j = ctx;
    const df11i_fixed_geom *g = &j->f->g;
    for (uint64_t t = 0; t < g->tiles; t++) {
        uint32_t n = 0;
        for (uint32_t l = 0; l < 32; l++)
            for (uint32_t k = 0; k < tile_steps(g, t); k++)
                n += lane_step_encode(j, s, t, k, l, true, NULL, 0);
        j->f->exc_off[s * g->tiles + t + 1] = n; /* counts; prefix-summed afterwards */
    }
    return DF11_OK;
}

static df11_status write_item(void *ctx, uint64_t s)
{
    enc_job *j = ctx;
    const df11i_fixed_geom *g = &j->f->g;
    for (uint64_t t = 0; t < g->tiles; t++) {
        uint64_t at = j->f->exc_off[s * g->tiles + t];
        for (uint32_t l = 0; l < 32; l++)
            for (uint32_t k = 0; k < tile_steps(g, t); k++) {
                uint32_t abc[3];
                at += lane_step_encode(j, s, t, k, l, false, abc, at);
                for (uint32_t x = 0; x < 3; x++)
                    j->f->codes[code_word_index(g, s, t, l, 3 * k + x)] = abc[x];
            }
    }
    return DF11_OK;
}

df11_status df11i_fixed_encode(const uint16_t *w, uint64_t rows, uint64_t cols,
                               df11i_fixed_layout layout, int n_threads, df11i_fixed *out)
{
    if (!out) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_encode: NULL output");
    memset(out, 0, sizeof *out);
    if (!w && rows && cols)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_encode: NULL weights");
    if (layout != DF11I_FIXED_ESCAPES && layout != DF11I_FIXED_RECORDS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_encode: layout %d", (int)layout);
    out->layout = layout;
    df11_status st = df11i_fixed_geometry(rows, cols, &out->g);
    if (st != DF11_OK) return st;
    const df11i_fixed_geom *g = &out->g;
    out->base = malloc(g->rows_pad + 1);
    out->sm = malloc(g->sm_bytes + 1);
    /* the code vectors of a short last tile are padded with zero words */
    out->codes = calloc(g->code_bytes / 4 + 1, 4);
    out->exc_off = calloc(g->n_tiles + 1, 4);
    if (!out->base || !out->sm || !out->codes || !out->exc_off) {
        df11i_fixed_free(out);
        return df11i_fail(DF11_ERR_NO_MEMORY, "fixed code buffers for %llu x %llu",
                          (unsigned long long)rows, (unsigned long long)cols);
    }
    enc_job j = { .w = w, .f = out };
    if ((st = df11i_parallel_for(g->n_strips, n_threads, base_item, &j)) != DF11_OK ||
        (st = df11i_parallel_for(g->n_strips, n_threads, count_item, &j)) != DF11_OK) {
        df11i_fixed_free(out);
        return st;
    }
    uint64_t sum = 0;
    for (uint64_t t = 1; t <= g->n_tiles; t++) {
        sum += out->exc_off[t];
        if (sum > (layout == DF11I_FIXED_RECORDS ? DF11_FIXED_MAX_RECORDS : UINT32_MAX)) {
            df11i_fixed_free(out);
            return df11i_fail(DF11_ERR_OVERFLOW, "fixed code: over %llu exceptions",
                              (unsigned long long)(layout == DF11I_FIXED_RECORDS
                                                       ? DF11_FIXED_MAX_RECORDS
                                                       : UINT32_MAX));
        }
        out->exc_off[t] = (uint32_t)sum;
    }
    out->n_exc = sum;
    out->exc = calloc(df11i_fixed_exc_section(layout, sum), 1);
    if (layout == DF11I_FIXED_RECORDS) j.rec_hi = malloc(sum + 1);
    if (!out->exc || (layout == DF11I_FIXED_RECORDS && !j.rec_hi)) {
        df11i_fixed_free(out);
        return df11i_fail(DF11_ERR_NO_MEMORY, "fixed code: %llu exceptions",
                          (unsigned long long)sum);
    }
    if ((st = df11i_parallel_for(g->n_strips, n_threads, write_item, &j)) != DF11_OK) {
        df11i_fixed_free(out);
    } else if (layout == DF11I_FIXED_RECORDS) {
        uint8_t *nib = out->exc + df11i_fixed_rec_hi_offset(sum);
        for (uint64_t i = 0; i < sum; i++) nib[i / 2] |= (uint8_t)(j.rec_hi[i] << (4 * (i & 1)));
    }
    free(j.rec_hi);
    return st;
}

/* ---- decoder ---- */

typedef struct {
    const df11i_fixed *f;
    uint16_t *out;
    uint64_t row0, row1; /* rows written, row0 to out's first row */
} dec_job;

/* RECORDS: the records of lane l's step k of tile t of strip s (those at *at on whose
 * position is in that step), put into e, each fitting after *prev (the one before in the
 * tile; df11i_fixed_record_fits). A record the walk never reaches leaves the tile's count
 * short. */
static df11_status lane_step_records(const df11i_fixed *f, uint64_t s, uint64_t t, uint32_t l,
                                     uint32_t k, const uint32_t abc[3], uint64_t *at, uint64_t end,
                                     int32_t *prev, uint8_t e[16][2])
{
    const df11i_fixed_geom *g = &f->g;
    for (; *at < end; ++*at) {
        const uint32_t r = df11i_fixed_record(f->exc, f->n_exc, *at), pos = r & 0xfff;
        if (pos >> 5 != (l << 2 | k)) break;
        if (!df11i_fixed_record_fits(g, s, t, tile_steps(g, t), abc, pos, *prev))
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: tile %llu's record %llu (position %u) is out of "
                              "order, at a pad weight or at a nonzero code",
                              (unsigned long long)(s * g->tiles + t),
                              (unsigned long long)(*at - f->exc_off[s * g->tiles + t]), pos);
        e[pos & 15][(pos >> 4) & 1] = (uint8_t)(r >> 12);
        *prev = (int32_t)pos;
    }
    return DF11_OK;
}

/* ESCAPES: the escapes of a lane's step (words abc), from the tile's list at *at on, in
 * escape order, put into e; more than the list holds (up to end) is DF11_ERR_CORRUPT. */
static df11_status lane_step_escapes(const df11i_fixed *f, uint64_t tile, const uint32_t abc[3],
                                     uint64_t *at, uint64_t end, uint8_t e[16][2])
{
    for (uint32_t m = df11i_fixed_escape_mask(abc[0], abc[1], abc[2]); m;) {
        uint32_t b = 31 - (uint32_t)__builtin_clz(m);
        m ^= 1u << b;
        if (*at >= end)
            return df11i_fail(
                DF11_ERR_CORRUPT, "fixed code: tile %llu has more escapes than its %llu exceptions",
                (unsigned long long)tile, (unsigned long long)(end - f->exc_off[tile]));
        e[b & 15][b >> 4] = f->exc[(*at)++];
    }
    return DF11_OK;
}

/* 8 weights of a lane's step into W row `row`, columns col .. col + 7 (those past cols
 * dropped; nothing where the row is not written): exponent i is exp[i], sign|mantissa sm[i].
 * df11i_fixed_weight_pos puts bytes 0..7 of half h in row l / 4 and 8..15 in row l / 4 + 8,
 * and df11i_fixed_pair_of_byte maps each 8 to 4 consecutive pairs, low weight first: so a
 * row's 8 exponents lie in e[p][hi] one after the other, from the pair of byte 0 or 8. Stored
 * as a run of 8, the decoder takes 2.4x less time than stored one weight at a time through
 * both helpers (bench/RESULTS.md, twenty-seventh session). */
static inline void put_row8(const dec_job *j, uint64_t row, uint64_t col, const uint8_t *exp,
                            const uint8_t *sm)
{
    const df11i_fixed_geom *g = &j->f->g;
    if (row < j->row0 || row >= j->row1) return;
    uint16_t *o = j->out + (row - j->row0) * g->cols + col;
    if (col + 8 <= g->cols) {
        for (uint32_t i = 0; i < 8; i++) o[i] = df11i_bf16_join(exp[i], sm[i]);
        return;
    }
    for (uint32_t i = 0; col + i < g->cols; i++) o[i] = df11i_bf16_join(exp[i], sm[i]);
}

static df11_status decode_item(void *ctx, uint64_t s)
{
    dec_job *j = ctx;
    const df11i_fixed *f = j->f;
    const df11i_fixed_geom *g = &f->g;
    for (uint64_t t = 0; t < g->tiles; t++) {
        uint64_t at = f->exc_off[s * g->tiles + t], end = f->exc_off[s * g->tiles + t + 1];
        int32_t prev = -1; /* RECORDS: the position of the tile's record before at */
        for (uint32_t l = 0; l < 32; l++) {
            /* the lane's two rows: those of its bytes 0..7 and 8..15 */
            uint64_t row_lo, row_hi, col;
            df11i_fixed_weight_pos(s, 0, 0, l, 0, &row_lo, &col);
            df11i_fixed_weight_pos(s, 0, 0, l, 8, &row_hi, &col);
            const uint8_t base[2] = { f->base[row_lo], f->base[row_hi] };
            for (uint32_t k = 0; k < tile_steps(g, t); k++) {
                uint64_t step = t * DF11_FIXED_TILE_STEPS + k;
                uint32_t abc[3];
                for (uint32_t x = 0; x < 3; x++)
                    abc[x] = f->codes[code_word_index(g, s, t, l, 3 * k + x)];
                uint8_t e[16][2];
                for (uint32_t p = 0; p < 16; p++)
                    for (uint32_t hi = 0; hi < 2; hi++)
                        e[p][hi] = (uint8_t)(base[(p >> 2) & 1] + df11i_fixed_code(abc, p, hi));
                df11_status st = f->layout == DF11I_FIXED_RECORDS
                                     ? lane_step_records(f, s, t, l, k, abc, &at, end, &prev, e)
                                     : lane_step_escapes(f, s * g->tiles + t, abc, &at, end, e);
                if (st != DF11_OK) return st;
                for (uint32_t h = 0; h < 2; h++) {
                    uint64_t row;
                    df11i_fixed_weight_pos(s, step, h, l, 0, &row, &col);
                    const uint8_t *sm = f->sm + sm_index(g, s, step, h, l, 0);
                    put_row8(j, row_lo, col, e[df11i_fixed_pair_of_byte(h, 0)], sm);
                    put_row8(j, row_hi, col, e[df11i_fixed_pair_of_byte(h, 8)], sm + 8);
                }
            }
        }
        if (at != end) /* RECORDS: a record out of order, or at a step past the tile's */
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: tile %llu uses %llu of its %llu exceptions",
                              (unsigned long long)(s * g->tiles + t),
                              (unsigned long long)(at - f->exc_off[s * g->tiles + t]),
                              (unsigned long long)(end - f->exc_off[s * g->tiles + t]));
    }
    return DF11_OK;
}

/* The exception offsets start at 0 and end at n_exc. */
static df11_status offsets_ends_check(const df11i_fixed *f)
{
    if (f->exc_off[0] != 0 || f->exc_off[f->g.n_tiles] != f->n_exc)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "fixed code: exception offsets run %u..%u, want 0..%llu", f->exc_off[0],
                          f->exc_off[f->g.n_tiles], (unsigned long long)f->n_exc);
    return DF11_OK;
}

df11_status df11i_fixed_geometry_check(const df11i_fixed_geom *g)
{
    df11i_fixed_geom want;
    df11_status st = df11i_fixed_geometry(g->rows, g->cols, &want);
    if (st != DF11_OK) return st;
    if (memcmp(&want, g, sizeof want) != 0)
        return df11i_fail(DF11_ERR_CORRUPT, "fixed code: geometry does not match %llu x %llu",
                          (unsigned long long)g->rows, (unsigned long long)g->cols);
    return DF11_OK;
}

df11_status df11i_fixed_decode(const df11i_fixed *f, uint16_t *out, int n_threads)
{
    if (!f || (!out && f->g.rows && f->g.cols))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode: NULL argument");
    const df11i_fixed_geom *g = &f->g;
    if (g->n_tiles && (!f->base || !f->sm || !f->codes || !f->exc_off || (f->n_exc && !f->exc)))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode: NULL section");
    if (f->layout != DF11I_FIXED_ESCAPES && f->layout != DF11I_FIXED_RECORDS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode: layout %d", (int)f->layout);
    df11_status st = df11i_fixed_geometry_check(g);
    if (st != DF11_OK) return st;
    if (!g->n_tiles) return DF11_OK;
    if ((st = offsets_ends_check(f)) != DF11_OK) return st;
    for (uint64_t t = 0; t < g->n_tiles; t++)
        if (f->exc_off[t + 1] < f->exc_off[t])
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: exception offset of tile %llu goes back",
                              (unsigned long long)(t + 1));
    dec_job j = { .f = f, .out = out, .row0 = 0, .row1 = g->rows };
    return df11i_parallel_for(g->n_strips, n_threads, decode_item, &j);
}

df11_status df11i_fixed_decode_rows(const df11i_fixed *f, uint64_t r0, uint64_t r1, uint16_t *out)
{
    if (!f || !out || r0 >= r1 || r1 > f->g.rows)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode_rows: bad argument");
    const df11i_fixed_geom *g = &f->g;
    if (!f->base || !f->sm || !f->codes || !f->exc_off || (f->n_exc && !f->exc))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode_rows: NULL section");
    if (f->layout != DF11I_FIXED_ESCAPES && f->layout != DF11I_FIXED_RECORDS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_decode_rows: layout %d",
                          (int)f->layout);
    df11_status st = df11i_fixed_geometry_check(g);
    if (st != DF11_OK) return st;
    const uint64_t s0 = r0 / 16, s1 = (r1 + 15) / 16;
    /* The ends of the offsets, as df11i_fixed_decode checks them: with every tile's count
     * checked against its codes, a caller that reads every strip (the host matmul) has then
     * checked all that df11i_fixed_validate does. */
    if ((st = offsets_ends_check(f)) != DF11_OK) return st;
    /* these strips' bases (pad rows included): base + code must not wrap */
    for (uint64_t r = 16 * s0; r < 16 * s1; r++)
        if (f->base[r] > df11i_fixed_max_base(f->layout))
            return df11i_fail(DF11_ERR_CORRUPT, "fixed code: row %llu has base %u > %u",
                              (unsigned long long)r, f->base[r], df11i_fixed_max_base(f->layout));
    /* only these strips' offsets: the decoder checks each tile's count against them */
    for (uint64_t t = s0 * g->tiles; t < s1 * g->tiles; t++)
        if (f->exc_off[t + 1] < f->exc_off[t] || f->exc_off[t + 1] > f->n_exc)
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: exception offset of tile %llu out of order or range",
                              (unsigned long long)(t + 1));
    dec_job j = { .f = f, .out = out, .row0 = r0, .row1 = r1 };
    for (uint64_t s = s0; s < s1; s++)
        if ((st = decode_item(&j, s)) != DF11_OK) return st;
    return DF11_OK;
}
