/* Checks on a fixed-code tensor (codec/fixed.h) whose buffers come from outside, e.g. a
 * .df11 payload: after df11i_fixed_validate succeeds, a decoder (the CPU reference or a
 * GPU kernel) reading only what the geometry and n_exc describe stays inside the buffers
 * and finds exactly the exceptions the codes ask for. Kept apart from codec/fixed.c (the
 * codec proper) so that the file format's needs do not change the codec's own code.
 */
#ifndef DF11_CODEC_FIXED_VIEW_H
#define DF11_CODEC_FIXED_VIEW_H

#include <stdint.h>

#include "codec/fixed.h"
#include "df11/status.h"

/* DF11_ERR_CORRUPT (detail: what and where) unless all of these hold: the geometry is
 * df11i_fixed_geometry(rows, cols); every base is at most DF11_FIXED_MAX_BASE; exc_off
 * starts at 0, never goes back and ends at n_exc; and every tile's codes escape exactly
 * as many weights as its exception list holds. Reads base, codes and exc_off only. */
df11_status df11i_fixed_validate(const df11i_fixed *f);

/* Byte offset, within the codes section, of the 16-byte vector `vec` of lane l of tile t
 * (0-based in its strip) of strip s (the layout in codec/fixed.h). */
static inline uint64_t df11i_fixed_code_vec_offset(const df11i_fixed_geom *g, uint64_t s,
                                                   uint64_t t, uint32_t vec, uint32_t l)
{
    return s * g->strip_code_bytes +
           t * (uint64_t)df11i_fixed_tile_vecs(DF11_FIXED_TILE_STEPS) * 512 +
           ((uint64_t)vec * 32 + l) * 16;
}

#endif
