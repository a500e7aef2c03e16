/* Fuzz target: the codec alone, a df11i_coded built straight from the input (codec/codec.h):
 * df11i_codebook_read, df11i_coded_validate, then df11i_decode_host. It reaches the decoder's
 * tables and streams with none of a container's framing in the way.
 *
 * Input, little-endian: a 16-byte head
 *     u8 max_len, u8 codebook bytes, u16 lane_symbols, u32 n_elements (<= 2^20),
 *     u32 n_chunks, u32 stream_bytes (<= 2^24)
 * then the sections in this order: codebook, chunk table (n_chunks u32), lane table
 * (df11i_n_lane_entries u16, only when lane_symbols and n_chunks are consistent), stream,
 * sign|mantissa (n_elements bytes). Bytes past the end of the input read as zero. Each
 * section gets a buffer of exactly its size, which is the contract codec.h states.
 *
 * Asserts, besides "no crash, leak or undefined behaviour" (the sanitizers):
 *  - df11i_coded_validate rejects a bad lane_symbols, max_len or chunk count without
 *    touching the tables (they are NULL then);
 *  - df11i_decode_host gives the same verdict as df11i_coded_validate when that fails, and
 *    otherwise DF11_OK or DF11_ERR_CORRUPT (with a detail);
 *  - a decode that succeeds yields, for each element, an exponent the codebook has a code
 *    for and the element's sign|mantissa byte. */
#include <string.h>

#include "codec/codec.h"
#include "common/util.h"
#include "fuzz.h"

#define MAX_ELEMENTS (1u << 20)
#define MAX_STREAM (1u << 24)

FUZZ_NO_COVERAGE
static void check_decoded(const df11i_coded *c, const uint16_t *out)
{
    for (uint64_t i = 0; i < c->n_elements; i++) {
        const uint8_t e = df11i_bf16_exp(out[i]);
        FUZZ_CHECK(c->code.single_symbol == e || (c->code.single_symbol < 0 && c->code.len[e]),
                   "element %llu: exponent %u is no symbol", (unsigned long long)i, e);
        FUZZ_CHECK(df11i_bf16_sm(out[i]) == c->sm[i], "element %llu: sign|mantissa",
                   (unsigned long long)i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16) return 0;
    df11i_coded c;
    memset(&c, 0, sizeof c);
    c.max_len = data[0];
    const uint32_t cb_bytes = data[1];
    c.lane_symbols = df11i_ld16(data + 2);
    c.n_elements = df11i_ld32(data + 4);
    c.n_chunks = df11i_ld32(data + 8);
    c.stream_bytes = df11i_ld32(data + 12);
    if (c.n_elements > MAX_ELEMENTS || c.stream_bytes > MAX_STREAM || c.n_chunks > MAX_ELEMENTS)
        return 0;
    fuzz_reader r = { data, size, 16 };

    uint8_t *cb = fuzz_take(&r, cb_bytes);
    if (!cb) return 0;
    df11_status st = df11i_codebook_read(cb, cb_bytes, c.max_len, &c.code);
    free(cb);
    FUZZ_CHECK_STATUS(st);
    if (st != DF11_OK) return 0;

    const int shape_ok = c.lane_symbols >= DF11_GROUP && c.lane_symbols % DF11_GROUP == 0 &&
                         c.lane_symbols <= DF11_MAX_LANE_SYMBOLS &&
                         c.n_chunks == df11i_n_chunks(c.n_elements, c.lane_symbols);
    if (!shape_ok) { /* no table is valid for this shape: validation must stop first */
        st = df11i_coded_validate(&c);
        FUZZ_CHECK(st == DF11_ERR_CORRUPT, "bad shape S=%u chunks=%llu accepted: %s",
                   c.lane_symbols, (unsigned long long)c.n_chunks, df11_strerror(st));
        return 0;
    }
    uint32_t *chunks = fuzz_take(&r, c.n_chunks * 4);
    uint16_t *lanes = fuzz_take(&r, df11i_n_lane_entries(c.n_elements, c.lane_symbols) * 2);
    uint32_t *stream = fuzz_take(&r, c.stream_bytes);
    uint8_t *sm = fuzz_take(&r, c.n_elements);
    uint16_t *out = malloc(c.n_elements ? c.n_elements * 2 : 1);
    if (chunks && lanes && stream && sm && out) {
        c.chunks = chunks;
        c.lanes = lanes;
        c.stream = stream;
        c.sm = sm;
        df11_status valid = df11i_coded_validate(&c);
        FUZZ_CHECK_STATUS(valid);
        st = df11i_decode_host(&c, out, 1);
        FUZZ_CHECK_STATUS(st);
        if (valid != DF11_OK)
            FUZZ_CHECK(st == valid, "validate says %s, decode %s", df11_strerror(valid),
                       df11_strerror(st));
        else
            FUZZ_CHECK(st == DF11_OK || st == DF11_ERR_CORRUPT, "decode: %s", df11_strerror(st));
        if (st == DF11_OK) check_decoded(&c, out);
    }
    free(chunks);
    free(lanes);
    free(stream);
    free(sm);
    free(out);
    return 0;
}
