/* Validation of a fixed-code tensor from untrusted buffers (codec/fixed_view.h). One pass
 * over the codes (3/8 byte per weight): cheap next to a decode, and what lets the GPU
 * kernel trust every exception index without checking it per weight. */
#include <string.h>

#include "codec/fixed_view.h"
#include "common/error.h"

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
    for (uint64_t r = 0; r < g->rows_pad; r++)
        if (f->base[r] > DF11_FIXED_MAX_BASE)
            return df11i_fail(DF11_ERR_CORRUPT, "fixed code: row %llu has base %u > %d",
                              (unsigned long long)r, f->base[r], DF11_FIXED_MAX_BASE);
    if (f->exc_off[0] != 0 || f->exc_off[g->n_tiles] != f->n_exc)
        return df11i_fail(DF11_ERR_CORRUPT,
                          "fixed code: exception offsets run %u..%u, want 0..%llu", f->exc_off[0],
                          f->exc_off[g->n_tiles], (unsigned long long)f->n_exc);
    const uint8_t *codes = (const uint8_t *)f->codes;
    for (uint64_t s = 0; s < g->n_strips; s++)
        for (uint64_t t = 0; t < g->tiles; t++) {
            const uint64_t tile = s * g->tiles + t;
            if (f->exc_off[tile + 1] < f->exc_off[tile])
                return df11i_fail(DF11_ERR_CORRUPT,
                                  "fixed code: exception offset of tile %llu goes back",
                                  (unsigned long long)(tile + 1));
            const uint32_t steps =
                (uint32_t)(t + 1 == g->tiles ? g->last_steps : DF11_FIXED_TILE_STEPS);
            uint64_t n = 0;
            for (uint32_t l = 0; l < 32; l++)
                for (uint32_t k = 0; k < steps; k++) {
                    uint32_t w[3];
                    for (uint32_t x = 0; x < 3; x++) {
                        uint32_t i = 3 * k + x;
                        memcpy(&w[x],
                               codes + df11i_fixed_code_vec_offset(g, s, t, i / 4, l) + 4 * (i % 4),
                               4);
                    }
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
