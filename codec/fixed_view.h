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
 * df11i_fixed_geometry(rows, cols); every pad weight has code 0 and sign|mantissa 0; every
 * base is at most the layout's maximum; exc_off starts at 0, never goes back and ends at
 * n_exc; and ESCAPES: every tile's codes escape exactly as many weights as its exception
 * list holds; RECORDS: every tile's records are in increasing position, in its steps, at
 * weights of the tensor whose code is 0. Reads base, codes, exc_off and the pad weights'
 * sm bytes (RECORDS: and the records) only. */
df11_status df11i_fixed_validate(const df11i_fixed *f);

#endif
