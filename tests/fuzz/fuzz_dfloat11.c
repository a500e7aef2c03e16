/* Fuzz target: the DFloat11 decoder alone, df11i_dfl_decode (loader/dfloat11.h) on one
 * module's streams built straight from the input, with none of a folder's framing.
 *
 * Input, little-endian: a 20-byte head
 *     u16 threads_per_block, u16 n_luts, u32 n_elements (<= 2^18),
 *     u32 encoded_bytes (<= 2^20), u32 positions_bytes (<= 2^16), u32 gaps_bytes (<= 2^16)
 * then the sections in this order: luts (n_luts x 256), encoded exponents, sign|mantissa
 * (n_elements), output positions, gaps. Bytes past the end of the input read as zero.
 * Each section gets a buffer of exactly its size, as the folder reader hands them over.
 * The committed seeds (corpus/dfloat11/) are modules the `dfloat11` package's encoder made.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - the status is DF11_OK or a listed code with a detail;
 *  - on DF11_OK every weight's exponent is below 240 (no table pointer) with a code
 *    length of 1..32 in the last table, and its sign|mantissa is the input's byte. */
#include <string.h>

#include "common/util.h"
#include "fuzz.h"
#include "loader/dfloat11.h"

FUZZ_NO_COVERAGE
static void check_decoded(const df11i_dfl_stream *s, const uint16_t *out)
{
    const uint8_t *lens = s->luts + s->luts_bytes - 256;
    for (uint64_t i = 0; i < s->n_elements; i++) {
        uint32_t e = (out[i] >> 7) & 0xff, sm = (out[i] >> 8 & 0x80) | (out[i] & 0x7f);
        FUZZ_CHECK(e < DF11I_DFL_FIRST_POINTER && lens[e] >= 1 && lens[e] <= 32,
                   "weight %llu: exponent %u, code length %u", (unsigned long long)i, e, lens[e]);
        FUZZ_CHECK(sm == s->sign_mantissa[i], "weight %llu: sign|mantissa", (unsigned long long)i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 20) return 0;
    df11i_dfl_stream s = { .threads_per_block = df11i_ld16(data) };
    const uint64_t n_luts = df11i_ld16(data + 2);
    s.n_elements = df11i_ld32(data + 4);
    s.encoded_bytes = df11i_ld32(data + 8);
    s.positions_bytes = df11i_ld32(data + 12);
    s.gaps_bytes = df11i_ld32(data + 16);
    if (n_luts > 64 || s.n_elements > (1u << 18) || s.encoded_bytes > (1u << 20) ||
        s.positions_bytes > (1u << 16) || s.gaps_bytes > (1u << 16))
        return 0;
    s.luts_bytes = 256 * n_luts;
    fuzz_reader r = { data, size, 20 };
    uint8_t *luts = fuzz_take(&r, s.luts_bytes), *enc = fuzz_take(&r, s.encoded_bytes);
    uint8_t *sm = fuzz_take(&r, s.n_elements), *pos = fuzz_take(&r, s.positions_bytes);
    uint8_t *gaps = fuzz_take(&r, s.gaps_bytes);
    uint16_t *out = malloc(s.n_elements ? 2 * s.n_elements : 1);
    if (luts && enc && sm && pos && gaps && out) {
        s.luts = luts;
        s.encoded = enc;
        s.sign_mantissa = sm;
        s.output_positions = pos;
        s.gaps = gaps;
        df11_status st = df11i_dfl_decode(&s, 1, out);
        FUZZ_CHECK_STATUS(st);
        if (st == DF11_OK) check_decoded(&s, out);
    }
    free(out);
    free(gaps);
    free(pos);
    free(sm);
    free(enc);
    free(luts);
    return 0;
}
