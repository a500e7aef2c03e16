/* Validation of a fixed-code tensor from untrusted buffers (codec/fixed_view.h). One pass
 * over the codes (3/8 byte per weight; RECORDS: over the records, reading the code of each),
 * cheap next to a decode, and what lets the GPU kernels trust every exception without
 * checking it per weight. */
#include <string.h>

#include "codec/fixed_view.h"
#include "common/error.h"

/* Word w (0..11) of lane l's code words in tile t of strip s. */
static uint32_t code_word(const df11i_fixed *f, uint64_t s, uint64_t t, uint32_t l, uint32_t w)
{
    uint32_t v;
    memcpy(&v,
           (const uint8_t *)f->codes + df11i_fixed_code_vec_offset(&f->g, s, t, w / 4, l) +
               4 * (w % 4),
           4);
    return v;
}

/* Lane l's code words A, B, C of step k of tile t of strip s. */
static void step_words(const df11i_fixed *f, uint64_t s, uint64_t t, uint32_t l, uint32_t k,
                       uint32_t abc[3])
{
    for (uint32_t x = 0; x < 3; x++) abc[x] = code_word(f, s, t, l, 3 * k + x);
}

/* Every pad weight (row >= rows or column >= cols) has code 0 and sign|mantissa 0, as the
 * encoder writes them: a fused kernel multiplies a pad column by a zero activation, which
 * must not meet an Inf or NaN (ESCAPES: a base of 249 and a code of 6 would be 255). Pad
 * columns lie in a strip's last step only, pad rows in the last strip. */
static df11_status pad_check(const df11i_fixed *f)
{
    const df11i_fixed_geom *g = &f->g;
    for (uint64_t s = 0; s < g->n_strips; s++) {
        const int pad_rows = 16 * (s + 1) > g->rows;
        if (!pad_rows && g->cols_pad == g->cols) continue;
        for (uint64_t step = pad_rows ? 0 : g->steps - 1; step < g->steps; step++)
            for (uint32_t l = 0; l < 32; l++) {
                uint32_t abc[3];
                step_words(f, s, step / DF11_FIXED_TILE_STEPS, l,
                           (uint32_t)(step % DF11_FIXED_TILE_STEPS), abc);
                for (uint32_t h = 0; h < 2; h++)
                    for (uint32_t j = 0; j < 16; j++) {
                        uint64_t row, col;
                        df11i_fixed_weight_pos(s, step, h, l, j, &row, &col);
                        if (row < g->rows && col < g->cols) continue;
                        if (f->sm[((s * g->steps + step) * 2 + h) * 512 + 16 * l + j] ||
                            df11i_fixed_code(abc, df11i_fixed_pair_of_byte(h, j), j % 2))
                            return df11i_fail(DF11_ERR_CORRUPT,
                                              "fixed code: pad weight (%llu, %llu) has a code or "
                                              "sign|mantissa",
                                              (unsigned long long)row, (unsigned long long)col);
                    }
            }
    }
    return DF11_OK;
}

/* RECORDS: tile t of strip s's records are in increasing position, each in one of the
 * tile's steps, at a weight of the tensor whose code is 0. */
static df11_status tile_records_check(const df11i_fixed *f, uint64_t s, uint64_t t, uint32_t steps)
{
    const df11i_fixed_geom *g = &f->g;
    const uint64_t tile = s * g->tiles + t;
    int32_t prev = -1;
    for (uint64_t i = f->exc_off[tile]; i < f->exc_off[tile + 1]; i++) {
        const uint32_t pos = df11i_fixed_record(f->exc, f->n_exc, i) & 0xfff, k = (pos >> 5) & 3;
        uint32_t abc[3] = { 0, 0, 0 }; /* a step past the tile's has no words to read */
        if (k < steps) step_words(f, s, t, pos >> 7, k, abc);
        if (!df11i_fixed_record_fits(g, s, t, steps, abc, pos, prev))
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: tile %llu's record %llu (position %u) is out of "
                              "order, outside the tile, at a pad weight or at a nonzero code",
                              (unsigned long long)tile, (unsigned long long)(i - f->exc_off[tile]),
                              pos);
        prev = (int32_t)pos;
    }
    return DF11_OK;
}

df11_status df11i_fixed_validate(const df11i_fixed *f)
{
    if (!f) return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_validate: NULL view");
    const df11i_fixed_geom *g = &f->g;
    df11_status st = df11i_fixed_geometry_check(g);
    if (st != DF11_OK) return st;
    if (!g->n_tiles)
        return f->n_exc == 0 ? DF11_OK
                             : df11i_fail(DF11_ERR_CORRUPT, "fixed code: %llu exceptions, no tile",
                                          (unsigned long long)f->n_exc);
    if (!f->base || !f->codes || !f->exc_off || !f->sm || (f->n_exc && !f->exc))
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_validate: NULL section");
    if (f->layout != DF11I_FIXED_ESCAPES && f->layout != DF11I_FIXED_RECORDS)
        return df11i_fail(DF11_ERR_INVALID_ARG, "df11i_fixed_validate: layout %d", (int)f->layout);
    if (f->layout == DF11I_FIXED_RECORDS && f->n_exc > DF11_FIXED_MAX_RECORDS)
        return df11i_fail(DF11_ERR_CORRUPT, "fixed code: %llu records, at most %u",
                          (unsigned long long)f->n_exc, DF11_FIXED_MAX_RECORDS);
    if ((st = pad_check(f)) != DF11_OK) return st;
    const uint32_t max_base = df11i_fixed_max_base(f->layout);
    for (uint64_t r = 0; r < g->rows_pad; r++)
        if (f->base[r] > max_base)
            return df11i_fail(DF11_ERR_CORRUPT, "fixed code: row %llu has base %u > %u",
                              (unsigned long long)r, f->base[r], max_base);
    if (f->exc_off[0] != 0 || f->exc_off[g->n_tiles] != f->n_exc)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "fixed code: exception offsets run %u..%u, want 0..%llu", f->exc_off[0],
                          f->exc_off[g->n_tiles], (unsigned long long)f->n_exc);
    /* every offset first: with the ends checked, monotonic offsets all lie in 0..n_exc, so
     * that a tile's list is inside the section before its records are read */
    for (uint64_t tile = 0; tile < g->n_tiles; tile++)
        if (f->exc_off[tile + 1] < f->exc_off[tile])
            return df11i_fail(DF11_ERR_CORRUPT,
                              "fixed code: exception offset of tile %llu goes back",
                              (unsigned long long)(tile + 1));
    for (uint64_t s = 0; s < g->n_strips; s++)
        for (uint64_t t = 0; t < g->tiles; t++) {
            const uint64_t tile = s * g->tiles + t;
            const uint32_t steps =
                (uint32_t)(t + 1 == g->tiles ? g->last_steps : DF11_FIXED_TILE_STEPS);
            if (f->layout == DF11I_FIXED_RECORDS) {
                if ((st = tile_records_check(f, s, t, steps)) != DF11_OK) return st;
                continue;
            }
            uint64_t n = 0;
            for (uint32_t l = 0; l < 32; l++)
                for (uint32_t k = 0; k < steps; k++) {
                    uint32_t w[3];
                    step_words(f, s, t, l, k, w);
                    n += (uint64_t)__builtin_popcount(df11i_fixed_escape_mask(w[0], w[1], w[2]));
                }
            if (n != (uint64_t)(f->exc_off[tile + 1] - f->exc_off[tile]))
                return df11i_fail(DF11_ERR_CORRUPT,
                                  "fixed code: tile %llu escapes %llu weights, its list holds %u",
                                  (unsigned long long)tile, (unsigned long long)n,
                                  f->exc_off[tile + 1] - f->exc_off[tile]);
        }
    return DF11_OK;
}
