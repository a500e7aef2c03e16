/* The exponent-Huffman codec: code construction, codebooks, and encode/decode round trips
 * on random data of awkward sizes and shapes; in CUDA builds also the GPU plan's size,
 * which the host computes from the codec's sections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "df11/compress.h"
#include "df11/file.h"
#include "tests/testutil.h"
#ifdef DF11_HAVE_CUDA
#include "kernels/decode.h"
#endif

static uint64_t rng;

static void roundtrip(const uint16_t *x, uint64_t n, uint32_t L, uint32_t S, int threads)
{
    uint8_t *sm = malloc(n + 1);
    uint16_t *y = malloc(n * 2 + 2);
    df11i_encoded enc;
    ck_assert_int_eq(df11i_encode(x, n, L, S, threads, sm, &enc), DF11_OK);
    enc.coded.sm = sm;
    memset(y, 0xa5, n * 2 + 2); /* poison, incl. one element past the end */
    ck_assert_int_eq(df11i_decode_host(&enc.coded, y, threads), DF11_OK);
    /* (plain ifs in the loops: Check records every passing assertion, which is slow) */
    for (uint64_t i = 0; i < n; i++)
        if (x[i] != y[i])
            ck_abort_msg("n=%llu L=%u S=%u: element %llu: %04x != %04x", (unsigned long long)n, L,
                         S, (unsigned long long)i, x[i], y[i]);
    ck_assert_uint_eq(y[n], 0xa5a5);
    /* a chunk's lanes never hold more than the bound the format promises */
    for (uint64_t k = 0; k < df11i_n_lane_entries(n, S); k++)
        if (enc.lanes[k] > (S + 8) * L)
            ck_abort_msg("n=%llu L=%u S=%u: lane %llu holds %u bits", (unsigned long long)n, L, S,
                         (unsigned long long)k, enc.lanes[k]);
    df11i_encoded_free(&enc);
    free(sm);
    free(y);
}

START_TEST(test_roundtrip_sizes)
{
    static const uint64_t sizes[] = { 0,     1,     2,     7,      8,          9,    15,
                                      17,    255,   256,   257,    4095,       4096, 4097,
                                      65535, 65536, 65537, 100003, 262144 + 13 };
    static const uint32_t lanes[] = { 8, 16, 256, 2048, 4096 };
    uint16_t *x = malloc(sizeof(uint16_t) * 300000);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        df11_test_fill_weights(x, sizes[s], 97, &rng);
        for (size_t l = 0; l < sizeof lanes / sizeof *lanes; l++) {
            roundtrip(x, sizes[s], 12, lanes[l], 2);
            if (l == 3) roundtrip(x, sizes[s], 15, lanes[l], 1);
        }
    }
    free(x);
}
END_TEST

START_TEST(test_roundtrip_any_bits)
{
    /* Uniformly random u16: every exponent, NaNs, infinities, denormals, and code lengths
     * pressed against L = 8 (256 symbols need at least 8 bits). */
    uint64_t n = 70001;
    uint16_t *x = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) x[i] = (uint16_t)df11_test_rand(&rng);
    roundtrip(x, n, 8, 64, 2);
    roundtrip(x, n, 15, 2048, 2);
    /* skewed: a geometric exponent distribution forces the length limiter to work */
    for (uint64_t i = 0; i < n; i++) {
        int e = 0;
        while (e < 200 && (df11_test_rand(&rng) & 1)) e++;
        x[i] = (uint16_t)((e << 7) | (df11_test_rand(&rng) & 0x807f));
    }
    for (uint32_t L = 9; L <= 15; L++) roundtrip(x, n, L, 512, 2);
    free(x);
}
END_TEST

START_TEST(test_all_equal_exponents)
{
    uint64_t n = 100000;
    uint16_t *x = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++)
        x[i] = (uint16_t)((0x7c << 7) | (df11_test_rand(&rng) & 0x807f));
    df11i_encoded enc;
    uint8_t *sm = malloc(n);
    ck_assert_int_eq(df11i_encode(x, n, 12, 2048, 1, sm, &enc), DF11_OK);
    ck_assert_int_eq(enc.coded.code.single_symbol, 0x7c);
    ck_assert_uint_eq(enc.exponent_bits, 0);
    uint8_t cb[4];
    ck_assert_uint_eq(df11i_codebook_size(&enc.coded.code), 3);
    df11i_codebook_write(&enc.coded.code, cb);
    df11i_code back;
    ck_assert_int_eq(df11i_codebook_read(cb, 3, 12, &back), DF11_OK);
    ck_assert_int_eq(back.single_symbol, 0x7c);
    df11i_encoded_free(&enc);
    free(sm);
    roundtrip(x, n, 12, 2048, 2);
    free(x);
}
END_TEST

START_TEST(test_code_properties)
{
    for (int trial = 0; trial < 200; trial++) {
        uint64_t hist[256] = { 0 };
        int used = 1 + (int)(df11_test_rand(&rng) % 256);
        for (int i = 0; i < used; i++)
            hist[df11_test_rand(&rng) % 256] +=
                1 + (df11_test_rand(&rng) % (1ull << (df11_test_rand(&rng) % 40)));
        int distinct = 0;
        for (int s = 0; s < 256; s++) distinct += hist[s] != 0;
        uint32_t L = 8 + (uint32_t)(df11_test_rand(&rng) % 8);
        df11i_code code;
        ck_assert_int_eq(df11i_code_build(hist, L, &code), DF11_OK);
        if (distinct == 1) {
            ck_assert_int_ge(code.single_symbol, 0);
            continue;
        }
        uint64_t kraft = 0;
        for (int s = 0; s < 256; s++) {
            ck_assert_msg((hist[s] != 0) == (code.len[s] != 0), "symbol %d presence", s);
            ck_assert_uint_le(code.len[s], L);
            if (code.len[s]) kraft += 1ull << (L - code.len[s]);
        }
        ck_assert_uint_le(kraft, 1ull << L);
        /* the codebook round-trips and the table decodes every code to its symbol */
        uint8_t cb[140];
        size_t size = df11i_codebook_size(&code);
        df11i_codebook_write(&code, cb);
        df11i_code back;
        ck_assert_int_eq(df11i_codebook_read(cb, size, L, &back), DF11_OK);
        ck_assert_mem_eq(back.len, code.len, 256);
        uint16_t *lut = malloc(sizeof(uint16_t) << L), codes[256];
        df11i_lut_build(&code, lut);
        df11i_code_canonical(&code, codes);
        for (int s = 0; s < 256; s++)
            if (code.len[s]) {
                uint16_t e = lut[(uint32_t)codes[s] << (L - code.len[s])];
                ck_assert_uint_eq(e & 0xff, (unsigned)s);
                ck_assert_uint_eq(e >> 8, code.len[s]);
            }
        free(lut);
    }
}
END_TEST

START_TEST(test_length_limit_cost)
{
    /* On trained-like weights a 12-bit limit costs under 0.01 bit/weight against the
     * entropy-optimal... Huffman code (L = 15 is effectively unlimited here). */
    uint64_t n = 1 << 20;
    uint16_t *x = malloc(n * 2);
    df11_test_fill_weights(x, n, 4096, &rng);
    uint64_t hist[256] = { 0 };
    for (uint64_t i = 0; i < n; i++) hist[df11i_bf16_exp(x[i])]++;
    double bits[2];
    uint32_t Ls[2] = { 12, 15 };
    for (int k = 0; k < 2; k++) {
        df11i_code code;
        ck_assert_int_eq(df11i_code_build(hist, Ls[k], &code), DF11_OK);
        double b = 0;
        for (int s = 0; s < 256; s++) b += (double)hist[s] * code.len[s];
        bits[k] = b / (double)n;
    }
    double h = df11i_entropy(hist);
    ck_assert_double_ge(bits[1], h);
    ck_assert_double_lt(bits[0] - bits[1], 0.01);
    ck_assert_double_lt(bits[1] - h, 0.05);
    free(x);
}
END_TEST

/* n random weights encoded at L = 12 with S symbols per lane on one thread, with the
 * buffers a decode needs (y: output). Free x, y and sm, and the encoding. */
typedef struct {
    uint16_t *x, *y;
    uint8_t *sm;
    df11i_encoded enc;
} encoded_random;

static void encode_random(uint64_t n, uint32_t S, encoded_random *e)
{
    e->x = malloc(n * 2);
    e->y = malloc(n * 2);
    e->sm = malloc(n);
    df11_test_fill_weights(e->x, n, 64, &rng);
    ck_assert_int_eq(df11i_encode(e->x, n, 12, S, 1, e->sm, &e->enc), DF11_OK);
    e->enc.coded.sm = e->sm;
}

static void encoded_random_free(encoded_random *e)
{
    df11i_encoded_free(&e->enc);
    free(e->x);
    free(e->y);
    free(e->sm);
}

START_TEST(test_corrupt_streams_fail)
{
    encoded_random e;
    encode_random(50000, 256, &e);
    df11i_encoded *enc = &e.enc;
    uint16_t *y = e.y;
    /* a lane length that lies */
    enc->lanes[3] += 1;
    ck_assert_int_eq(df11i_decode_host(&enc->coded, y, 1), DF11_ERR_CORRUPT);
    enc->lanes[3] -= 1;
    /* chunk offsets past the stream */
    uint32_t saved = enc->chunks[1];
    enc->chunks[1] = 0x7fffffff;
    ck_assert_int_eq(df11i_decode_host(&enc->coded, y, 1), DF11_ERR_CORRUPT);
    enc->chunks[1] = saved;
    /* flipped stream bits: detected, or decoded to other values, never a crash (in a
     * container the payload's xxh3 catches the flip before any decoder runs) */
    for (int i = 0; i < 50; i++) {
        uint64_t w = df11_test_rand(&rng) % (enc->coded.stream_bytes / 4 - 2);
        enc->stream[w] ^= 1u << (df11_test_rand(&rng) % 32);
        df11_status st = df11i_decode_host(&enc->coded, y, 1);
        ck_assert(st == DF11_OK || st == DF11_ERR_CORRUPT);
    }
    encoded_random_free(&e);
}
END_TEST

/* docs/FORMAT.md's chunk streams, written independently of the encoder and as plainly as
 * possible: bits one byte each, the refill schedule one lane-step at a time. Fills
 * `words` (zeroed by the caller), the chunk and lane tables; returns the stream's words
 * without the padding. */
#define SPEC_MAX_S 64
static void spec_put_bits(uint32_t *words, uint64_t *at, const uint8_t *bits, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++, (*at)++)
        words[*at / 32] |= (uint32_t)bits[i] << (31 - *at % 32);
}

static uint64_t spec_stream(const uint16_t *x, uint64_t n, uint32_t S, const df11i_code *code,
                            uint32_t *words, uint32_t *chunks, uint16_t *lane_bits)
{
    static uint8_t sym[DF11_LANES][SPEC_MAX_S], bits[DF11_LANES][SPEC_MAX_S * DF11_MAX_CODE_LEN];
    uint16_t codes[256];
    df11i_code_canonical(code, codes);
    uint64_t at = 0; /* the stream's bit position */
    ck_assert_uint_le(S, SPEC_MAX_S);
    for (uint64_t c = 0; c * 32 * S < n; c++) {
        const uint64_t start = c * 32 * S, n_chunk = n - start < 32 * S ? n - start : 32 * S;
        const uint32_t m = (uint32_t)((n_chunk + S - 1) / S < 32 ? (n_chunk + S - 1) / S : 32);
        uint32_t n_sym[DF11_LANES] = { 0 }, B[DF11_LANES] = { 0 };
        for (uint64_t e = 0; e < n_chunk; e++) { /* group e/8 belongs to lane (e/8) mod m */
            const uint32_t l = (uint32_t)(e / 8 % m);
            sym[l][n_sym[l]++] = (uint8_t)(x[start + e] >> 7);
        }
        for (uint32_t l = 0; l < m; l++) {
            for (uint32_t i = 0; i < n_sym[l]; i++)
                for (int b = code->len[sym[l][i]] - 1; b >= 0; b--)
                    bits[l][B[l]++] = codes[sym[l][i]] >> b & 1;
            lane_bits[c * 32 + l] = (uint16_t)B[l];
        }
        ck_assert_uint_eq(at % 32, 0);
        chunks[c] = (uint32_t)(at / 32);
        int avail[DF11_LANES] = { 0 }, tail_taken[DF11_LANES] = { 0 };
        uint32_t taken[DF11_LANES] = { 0 };
        for (uint32_t j = 0; j < S; j += 2)
            for (uint32_t l = 0; l < m; l++) {
                if (j >= n_sym[l]) continue;
                if (avail[l] < 32) {
                    if (taken[l] < B[l] / 32) {
                        spec_put_bits(words, &at, bits[l] + 32 * taken[l]++, 32);
                        avail[l] += 32;
                    } else if (!tail_taken[l]) {
                        tail_taken[l] = 1;
                        avail[l] += (int)(B[l] % 32);
                    }
                }
                avail[l] -= code->len[sym[l][j]];
                if (j + 1 < n_sym[l]) avail[l] -= code->len[sym[l][j + 1]];
            }
        for (uint32_t l = 0; l < m; l++) {
            ck_assert_uint_eq(taken[l], B[l] / 32); /* the schedule takes every full word */
            spec_put_bits(words, &at, bits[l] + B[l] / 32 * 32, B[l] % 32);
        }
        at = (at + 31) / 32 * 32;
    }
    return at / 32;
}

/* Encodes x and compares every table and stream word with spec_stream, then round-trips. */
static void check_against_spec(const uint16_t *x, uint64_t n, uint32_t L, uint32_t S,
                               df11i_encoded *enc)
{
    uint8_t *sm = malloc(n + 1);
    ck_assert_int_eq(df11i_encode(x, n, L, S, 1, sm, enc), DF11_OK);
    const uint64_t n_chunks = df11i_n_chunks(n, S);
    uint32_t *words = calloc(n * DF11_MAX_CODE_LEN / 32 + 64, 4), *chunks = calloc(n_chunks + 1, 4);
    uint16_t *lane_bits = calloc(n_chunks * 32 + 32, 2);
    const uint64_t n_words = spec_stream(x, n, S, &enc->coded.code, words, chunks, lane_bits);
    ck_assert_uint_eq(enc->coded.n_chunks, n_chunks);
    ck_assert_uint_eq(enc->coded.stream_bytes, (n_words + 2) * 4);
    for (uint64_t c = 0; c < n_chunks; c++) ck_assert_uint_eq(enc->chunks[c], chunks[c]);
    for (uint64_t k = 0; k < df11i_n_lane_entries(n, S); k++)
        ck_assert_uint_eq(enc->lanes[k], lane_bits[k]);
    for (uint64_t w = 0; w < n_words + 2; w++)
        ck_assert_msg(enc->stream[w] == words[w], "n=%llu S=%u: word %llu: %08x, spec %08x",
                      (unsigned long long)n, S, (unsigned long long)w, enc->stream[w], words[w]);
    uint16_t *y = malloc(n * 2 + 2);
    enc->coded.sm = sm;
    ck_assert_int_eq(df11i_decode_host(&enc->coded, y, 1), DF11_OK);
    ck_assert_mem_eq(x, y, n * 2);
    enc->coded.sm = NULL;
    free(y);
    free(words);
    free(chunks);
    free(lane_bits);
    free(sm);
}

static uint16_t bf16_with_exp(uint32_t exp, uint64_t *r)
{
    return (uint16_t)(exp << 7 | (df11_test_rand(r) & 0x807f));
}

START_TEST(test_stream_matches_spec)
{
    /* 192 weights, S = 64: 3 lanes of 64 symbols. Exponent counts 96, 48, .., 2, 1 give
     * the code lengths 1..7, 7, whose canonical codes are 0, 10, 110, .., 1111110, 1111111. */
    static const uint32_t count[8] = { 96, 48, 24, 12, 6, 3, 2, 1 };
    static const uint16_t want_code[8] = { 0x0, 0x2, 0x6, 0xe, 0x1e, 0x3e, 0x7e, 0x7f };
    uint16_t x[192];
    uint64_t r = 7;
    /* longest codes first: lane 0 (groups 0, 3, 6, ..) gets them all, front-loaded, and
     * takes its words faster than lanes 1, 2; lanes 1, 2 end on word boundaries (T = 0) */
    for (uint32_t s = 8, e = 0; s-- > 0;)
        for (uint32_t i = 0; i < count[s]; i++, e++) {
            const uint32_t group = e / 64 + 3 * (e % 64 / 8), elem = group * 8 + e % 8;
            x[elem] = bf16_with_exp(100 + s, &r);
        }
    df11i_encoded enc;
    check_against_spec(x, 192, 12, 64, &enc);
    uint16_t codes[256];
    df11i_code_canonical(&enc.coded.code, codes);
    for (uint32_t s = 0; s < 8; s++) {
        ck_assert_uint_eq(enc.coded.code.len[100 + s], s < 7 ? s + 1 : 7);
        ck_assert_uint_eq(codes[100 + s], want_code[s]);
    }
    ck_assert_uint_eq(enc.lanes[0],
                      3 * 7 + 3 * 6 + 6 * 5 + 12 * 4 + 24 * 3 + 16 * 2); /* 221: F 6, T 29 */
    ck_assert_uint_eq(enc.lanes[1], 32 * 2 + 32 * 1);                    /* 96: F 3, T 0 */
    ck_assert_uint_eq(enc.lanes[2], 64);                                 /* F 2, T 0 */
    df11i_encoded_free(&enc);

    /* the same symbols shuffled; then the last group short (5 weights: lane 2 ends on a
     * pair of one symbol) */
    for (uint32_t i = 191; i > 0; i--) {
        uint32_t k = (uint32_t)(df11_test_rand(&r) % (i + 1));
        uint16_t t = x[i];
        x[i] = x[k];
        x[k] = t;
    }
    check_against_spec(x, 192, 12, 64, &enc);
    df11i_encoded_free(&enc);
    check_against_spec(x, 189, 12, 64, &enc);
    ck_assert_uint_eq(df11i_lane_symbols(189, 3, 2), 61);
    df11i_encoded_free(&enc);

    /* a full chunk of 32 lanes and a short one, codes up to the limit L = 9 */
    const uint64_t n = 32 * 16 + 45;
    uint16_t *big = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t e = 0;
        while (e < 40 && (df11_test_rand(&r) & 1)) e++;
        big[i] = bf16_with_exp(90 + e, &r);
    }
    for (uint32_t L = 9; L <= 15; L += 6) {
        check_against_spec(big, n, L, 16, &enc);
        df11i_encoded_free(&enc);
    }
    free(big);
    /* trained-like weights, ~5 words a lane: some lane meets avail = 32 exactly with words
     * left (and must not take one), another takes one before it next does */
    const uint64_t n2 = 2 * 32 * 64 + 100;
    big = malloc(n2 * 2);
    df11_test_fill_weights(big, n2, 64, &r);
    check_against_spec(big, n2, 12, 64, &enc);
    df11i_encoded_free(&enc);
    free(big);
}
END_TEST

START_TEST(test_stream_word_boundaries)
{
    /* 16 exponents twice each: every code 4 bits, the codes 0..15 in exponent order. 4
     * lanes of 8 symbols hold 32 bits each: one full word, no tail. */
    uint16_t x[32];
    uint64_t r = 11;
    for (int i = 0; i < 32; i++) x[i] = bf16_with_exp(100 + (uint32_t)(i % 16), &r);
    df11i_encoded enc;
    check_against_spec(x, 32, 12, 8, &enc);
    static const uint32_t want[4] = { 0x01234567, 0x89abcdef, 0x01234567, 0x89abcdef };
    ck_assert_uint_eq(enc.coded.stream_bytes, (4 + 2) * 4);
    ck_assert_mem_eq(enc.stream, want, sizeof want);
    df11i_encoded_free(&enc);

    /* all exponents equal: codes of length 0, B = 0, no words at all */
    for (int i = 0; i < 32; i++) x[i] = bf16_with_exp(0x7c, &r);
    check_against_spec(x, 32, 12, 8, &enc);
    ck_assert_uint_eq(enc.coded.stream_bytes, 8);
    for (int l = 0; l < 4; l++) ck_assert_uint_eq(enc.lanes[l], 0);
    df11i_encoded_free(&enc);
}
END_TEST

START_TEST(test_chunk_size_must_match_lanes)
{
    encoded_random e;
    encode_random(20000, 128, &e); /* 5 chunks */
    df11i_encoded *enc = &e.enc;
    uint16_t *y = e.y;
    ck_assert_int_eq(df11i_coded_validate(&enc->coded), DF11_OK);
    /* chunk 0 one word longer, chunk 1 one shorter: the bits would still fit chunk 0 */
    enc->chunks[1] += 1;
    ck_assert_int_eq(df11i_coded_validate(&enc->coded), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11i_decode_host(&enc->coded, y, 1), DF11_ERR_CORRUPT);
    enc->chunks[1] -= 1;
    /* the last chunk one word longer (the stream claims a word more) */
    enc->coded.stream_bytes += 4;
    ck_assert_int_eq(df11i_coded_validate(&enc->coded), DF11_ERR_CORRUPT);
    enc->coded.stream_bytes -= 4;
    /* lane lengths traded within a chunk so Σ F and Σ T hold: validation passes, the
     * decoder finds the lanes consuming other lengths than recorded */
    uint16_t *lanes = enc->lanes + 32;
    uint32_t l = 0;
    while (lanes[l] % 32 == 31 || lanes[l + 1] % 32 == 0) l++;
    lanes[l]++;
    lanes[l + 1]--;
    ck_assert_int_eq(df11i_coded_validate(&enc->coded), DF11_OK);
    ck_assert_int_eq(df11i_decode_host(&enc->coded, y, 1), DF11_ERR_CORRUPT);
    char want[64];
    snprintf(want, sizeof want, "chunk 1 lane %u", l);
    ck_assert_msg(strstr(df11_last_error_detail(), want) != NULL, "%s", df11_last_error_detail());
    encoded_random_free(&e);
}
END_TEST

START_TEST(test_bad_arguments)
{
    uint16_t x[16] = { 0 };
    uint8_t sm[16];
    df11i_encoded enc;
    ck_assert_int_eq(df11i_encode(x, 16, 12, 12, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_encode(x, 16, 16, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_encode(x, 16, 0, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_encode(NULL, 16, 12, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    uint8_t cb[4] = { 250, 9, 0x11, 0x11 };
    df11i_code code;
    ck_assert_int_eq(df11i_codebook_read(cb, 4, 12, &code), DF11_ERR_CORRUPT); /* past 255 */
    uint8_t kraft[4] = { 0, 2, 0x11, 0x01 }; /* 3 codes of length 1 */
    ck_assert_int_eq(df11i_codebook_read(kraft, 4, 12, &code), DF11_ERR_CORRUPT);
    uint8_t longer[3] = { 0, 1, 0xdd }; /* length 13 > 12 */
    ck_assert_int_eq(df11i_codebook_read(longer, 3, 12, &code), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11i_codebook_read(longer, 1, 12, &code), DF11_ERR_CORRUPT);
}
END_TEST

/* BF16 values whose exponents are `d` distinct values (100, 101, ...), exponent i taking
 * about 2^-(i+1) of the elements (the rarest at least once): skewed enough that plain
 * Huffman codes would pass most length limits. */
static void fill_distinct(uint16_t *x, uint64_t n, uint32_t d, uint64_t *r)
{
    for (uint64_t i = 0; i < n; i++) {
        uint32_t e = i < d ? (uint32_t)i : 0;
        while (i >= d && e + 1 < d && (df11_test_rand(r) & 1)) e++;
        x[i] = bf16_with_exp(100 + e, r);
    }
}

START_TEST(test_too_many_exponents_for_L)
{
    /* 40 distinct exponents need 6 bits: L = 5 has only 32 codes. The builder refused
     * nothing before and the limiter ran off its array. */
    const uint64_t n = 5000;
    uint16_t *x = malloc(n * 2);
    uint8_t *sm = malloc(n);
    fill_distinct(x, n, 40, &rng);
    df11i_encoded enc;
    ck_assert_int_eq(df11i_encode(x, n, 5, 256, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    const char *why = df11_last_error_detail();
    ck_assert_msg(strstr(why, "40 distinct") && strstr(why, "at least 6"), "%s", why);
    ck_assert_ptr_null(enc.stream); /* nothing half-built handed back */
    uint64_t hist[256] = { 0 };
    for (uint64_t i = 0; i < n; i++) hist[df11i_bf16_exp(x[i])]++;
    ck_assert_uint_eq(df11i_code_min_len(hist), 6);
    roundtrip(x, n, 6, 256, 1);
    free(x);
    free(sm);

    /* every count of distinct exponents against every L: accepted iff it fits 2^L */
    for (int d = 1; d <= 256; d++) {
        uint64_t h[256] = { 0 };
        for (int s = 0; s < d; s++) h[(s * 7 + 3) % 256] = 1 + (uint64_t)s * s;
        for (uint32_t L = 1; L <= DF11_MAX_CODE_LEN; L++) {
            df11i_code code;
            df11_status st = df11i_code_build(h, L, &code);
            if ((st == DF11_OK) != (d <= (1 << L)) || (st != DF11_OK && L >= df11i_code_min_len(h)))
                ck_abort_msg("d=%d L=%u: %s (min L %u)", d, L, df11_strerror(st),
                             df11i_code_min_len(h));
        }
    }
}
END_TEST

/* Checks that `code` (for `hist` at limit L) is complete, prefix-free and within L. */
static void check_code(const uint64_t hist[256], const df11i_code *code, uint32_t L,
                       const char *what)
{
    int distinct = 0;
    for (int s = 0; s < 256; s++) distinct += hist[s] != 0;
    if (distinct <= 1) {
        ck_assert_msg(code->single_symbol >= 0, "%s: single symbol", what);
        return;
    }
    ck_assert_int_eq(code->single_symbol, -1);
    uint64_t kraft = 0;
    for (int s = 0; s < 256; s++) {
        if ((hist[s] != 0) != (code->len[s] != 0)) ck_abort_msg("%s: symbol %d presence", what, s);
        if (code->len[s] > L) ck_abort_msg("%s: symbol %d length %u", what, s, code->len[s]);
        if (code->len[s]) kraft += 1ull << (L - code->len[s]);
    }
    ck_assert_msg(kraft == 1ull << L, "%s: Kraft sum %llu/%llu", what, (unsigned long long)kraft,
                  1ull << L);
    uint16_t codes[256];
    df11i_code_canonical(code, codes);
    /* (plain ifs: Check records every passing assertion, 65536 of them would be slow) */
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            if (a == b || !code->len[a] || !code->len[b] || code->len[a] > code->len[b]) continue;
            if (codes[b] >> (code->len[b] - code->len[a]) == codes[a])
                ck_abort_msg("%s: code of %d is a prefix of %d's", what, a, b);
        }
}

START_TEST(test_code_properties_every_L)
{
    /* Random histograms (wild weights, up to the saturating sum past 2^64) at every L:
     * the limiter never fails where the code can exist and always yields a complete,
     * prefix-free code within L. The seed is printed by the suite runner. */
    const uint64_t seed = rng;
    for (int trial = 0; trial < 150; trial++) {
        uint64_t hist[256] = { 0 };
        const int kind = trial % 3;
        int used = 1 + (int)(df11_test_rand(&rng) % 256);
        for (int i = 0; i < used; i++) {
            uint64_t w = kind == 0
                             ? 1 + df11_test_rand(&rng) % (1ull << (df11_test_rand(&rng) % 40))
                         : kind == 1 ? 1ull << (df11_test_rand(&rng) % 63)
                                     : UINT64_MAX - df11_test_rand(&rng) % 1000;
            hist[df11_test_rand(&rng) % 256] = w;
        }
        for (uint32_t L = 1; L <= DF11_MAX_CODE_LEN; L++) {
            df11i_code code;
            char what[96];
            snprintf(what, sizeof what, "seed %llu trial %d L=%u", (unsigned long long)seed, trial,
                     L);
            df11_status st = df11i_code_build(hist, L, &code);
            if (L < df11i_code_min_len(hist)) {
                ck_assert_msg(st == DF11_ERR_INVALID_ARG, "%s: %s", what, df11_strerror(st));
                continue;
            }
            ck_assert_msg(st == DF11_OK, "%s: %s", what, df11_last_error_detail());
            check_code(hist, &code, L, what);
        }
    }
    /* Encode -> decode at every accepted L, on data with 1..256 distinct exponents. */
    const uint64_t n = 3000;
    uint16_t *x = malloc(n * 2);
    for (int trial = 0; trial < 24; trial++) {
        const uint32_t d = trial < 8 ? 1u << trial : 1 + (uint32_t)(df11_test_rand(&rng) % 256);
        fill_distinct(x, n, d, &rng);
        uint64_t hist[256] = { 0 };
        for (uint64_t i = 0; i < n; i++) hist[df11i_bf16_exp(x[i])]++;
        for (uint32_t L = df11i_code_min_len(hist); L <= DF11_MAX_CODE_LEN; L++) {
            df11i_code code;
            ck_assert_int_eq(df11i_code_build(hist, L, &code), DF11_OK);
            char what[96];
            snprintf(what, sizeof what, "seed %llu data trial %d d=%u L=%u",
                     (unsigned long long)seed, trial, d, L);
            check_code(hist, &code, L, what);
            roundtrip(x, n, L, 64, 1);
        }
    }
    free(x);
}
END_TEST

START_TEST(test_validate_code_and_sizes)
{
    /* df11i_coded_validate is the gate that lets decoders trust a coded tensor: each of
     * these passed it before and sent df11i_decode_host outside its buffers (a table built
     * for another L, or from lengths past L or Kraft, is written past its end) or had it
     * report success without writing the output. */
    encoded_random e;
    encode_random(3000, 64, &e);
    df11i_coded *c = &e.enc.coded;
    ck_assert_int_eq(df11i_coded_validate(c), DF11_OK);
    const df11i_code good = c->code;

    c->code.max_len = 15; /* the table would be 2^15 entries, the decoder allocates 2^12 */
    ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11i_decode_host(c, e.y, 1), DF11_ERR_CORRUPT);
    c->code = good;
    int s0 = 0;
    while (!c->code.len[s0]) s0++;
    c->code.len[s0] = 1; /* with the others unchanged: Kraft sum past 1 */
    c->code.len[s0 + 1 < 256 && c->code.len[s0 + 1] ? s0 + 1 : s0] = 1;
    for (int s = 0; s < 256; s++)
        if (c->code.len[s] && s != s0) {
            c->code.len[s] = 1;
            break;
        }
    int ones = 0;
    for (int s = 0; s < 256; s++) ones += c->code.len[s] == 1;
    ck_assert_int_ge(ones, 2);
    ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11i_decode_host(c, e.y, 1), DF11_ERR_CORRUPT);
    c->code = good;
    c->code.len[s0] = 13; /* past L = 12 */
    ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    c->code.len[s0] = 200; /* would index past canonical_codes' counts */
    ck_assert_int_eq(df11i_decode_host(c, e.y, 1), DF11_ERR_CORRUPT);
    c->code = good;
    c->code.single_symbol = 300;
    ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    c->code = good;
    memset(c->code.len, 0, sizeof c->code.len);
    ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    c->code = good;

    /* a lane claiming more bits than its symbols can have at L (traded against a
     * neighbour so that the chunk's word count still holds) */
    ck_assert_int_eq(df11i_coded_validate(c), DF11_OK);
    const uint16_t l0 = e.enc.lanes[0], l1 = e.enc.lanes[1];
    e.enc.lanes[0] = (uint16_t)(df11i_lane_symbols(3000, 32, 0) * 12 + 32);
    e.enc.lanes[1] = (uint16_t)(l0 + l1 - e.enc.lanes[0]);
    if (l0 + l1 > e.enc.lanes[0]) /* only where the trade is possible */
        ck_assert_int_eq(df11i_coded_validate(c), DF11_ERR_CORRUPT);
    e.enc.lanes[0] = l0;
    e.enc.lanes[1] = l1;
    ck_assert_int_eq(df11i_coded_validate(c), DF11_OK);

    /* element counts whose chunk count wrapped to 0: "decoded" without writing anything */
    df11i_coded huge = *c;
    huge.n_elements = UINT64_MAX;
    huge.n_chunks = 0;
    ck_assert_int_eq(df11i_coded_validate(&huge), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11i_decode_host(&huge, e.y, 1), DF11_ERR_CORRUPT);
    huge.n_chunks = df11i_n_chunks(UINT64_MAX, 64);
    ck_assert_uint_eq(huge.n_chunks, UINT64_MAX / 2048 + 1);
    /* tables missing */
    df11i_coded bare = *c;
    bare.chunks = NULL;
    ck_assert_int_eq(df11i_coded_validate(&bare), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_coded_validate(NULL), DF11_ERR_INVALID_ARG);
    encoded_random_free(&e);
}
END_TEST

/* Copies `n` bytes into a buffer of exactly that size (so that ASan sees every overrun). */
static void *exact_copy(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (n) memcpy(q, p, n);
    return q;
}

START_TEST(test_mutated_tables_never_overrun)
{
    /* A small fuzz of the df11i_file_tensor_coded -> df11i_decode_host path: every section
     * of a coded tensor (codebook bytes, chunk and lane tables, stream) in a buffer of its
     * exact size, random bytes overwritten, the codebook parsed again as a reader would.
     * Whatever passes df11i_coded_validate must decode to OK or DF11_ERR_CORRUPT without
     * touching memory outside the buffers (run under ASan to see a stray byte). */
    const uint64_t seed = rng;
    static const uint64_t sizes[] = { 1, 77, 2048, 2048 + 513, 3 * 2048 };
    for (int trial = 0; trial < 2000; trial++) {
        const uint64_t n = sizes[trial % 5];
        const uint32_t S = 64, L = 5 + (uint32_t)(df11_test_rand(&rng) % 11);
        uint16_t *x = malloc(n * 2);
        if (trial % 7 == 3)
            for (uint64_t i = 0; i < n; i++) x[i] = bf16_with_exp(0x7c, &rng);
        else
            df11_test_fill_weights(x, n, 64, &rng);
        uint8_t *sm = malloc(n);
        df11i_encoded enc;
        ck_assert_int_eq(df11i_encode(x, n, L, S, 1, sm, &enc), DF11_OK);
        const size_t cb_size = df11i_codebook_size(&enc.coded.code);
        uint8_t cb[140];
        df11i_codebook_write(&enc.coded.code, cb);
        const size_t chunks_b = enc.coded.n_chunks * 4, lanes_b = df11i_n_lane_entries(n, S) * 2;
        uint8_t *sec[4] = { exact_copy(cb, cb_size), exact_copy(enc.chunks, chunks_b),
                            exact_copy(enc.lanes, lanes_b),
                            exact_copy(enc.stream, enc.coded.stream_bytes) };
        const size_t sec_size[4] = { cb_size, chunks_b, lanes_b, enc.coded.stream_bytes };
        const int flips = 1 + (int)(df11_test_rand(&rng) % 4);
        for (int f = 0; f < flips; f++) {
            const int which = (int)(df11_test_rand(&rng) % 4);
            if (!sec_size[which]) continue;
            const uint64_t r = df11_test_rand(&rng);
            uint8_t *b = sec[which] + r % sec_size[which];
            *b = r >> 32 & 1 ? (uint8_t)(r >> 40) : *b ^ (uint8_t)(1u << (r >> 40 & 7));
        }
        df11i_coded c = enc.coded;
        df11_status st = df11i_codebook_read(sec[0], cb_size, L, &c.code);
        if (st == DF11_OK) {
            c.chunks = (const uint32_t *)sec[1];
            c.lanes = (const uint16_t *)sec[2];
            c.stream = (const uint32_t *)sec[3];
            c.sm = sm;
            uint16_t *y = malloc(n * 2);
            st = df11i_decode_host(&c, y, 1 + trial % 2);
            ck_assert_msg(st == DF11_OK || st == DF11_ERR_CORRUPT, "seed %llu trial %d: %s",
                          (unsigned long long)seed, trial, df11_strerror(st));
            free(y);
        } else {
            ck_assert_int_eq(st, DF11_ERR_CORRUPT);
        }
        for (int i = 0; i < 4; i++) free(sec[i]);
        df11i_encoded_free(&enc);
        free(sm);
        free(x);
    }
}
END_TEST

#ifdef DF11_HAVE_CUDA
/* The GPU plan's size is known before its payload is read (df11i_gpu_plan_size, which the
 * runtime's memory-limit check reserves through the CUDA backend) and must be exactly the
 * size of the plan built later. The runtime once estimated 64 bytes a tensor descriptor
 * against the kernel's 80. Pure host code: the builder runs here without a device. */
START_TEST(test_gpu_plan_size_matches_build)
{
    enum { N = 11 };
    static uint16_t w[N][3000];
    static float raw[100];
    df11_tensor_source src[N + 1];
    char names[N + 1][48];
    for (int i = 0; i < N; i++) {
        const uint64_t n = 1 + (uint64_t)i * 271;
        if (i == 3)
            for (uint64_t k = 0; k < n; k++) w[i][k] = bf16_with_exp(0x7c, &rng); /* one symbol */
        else
            df11_test_fill_weights(w[i], n, 31, &rng);
        snprintf(names[i], sizeof names[i], "model.layers.%d.t%d", i % 2, i);
        src[i] = (df11_tensor_source){
            .name = names[i], .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { n }, .data = w[i]
        };
    }
    snprintf(names[N], sizeof names[N], "model.layers.1.raw");
    src[N] = (df11_tensor_source){
        .name = names[N], .dtype = DF11_DTYPE_F32, .ndim = 1, .shape = { 100 }, .data = raw
    };
    static const uint32_t Ls[] = { 8, 12, 15 };
    for (size_t k = 0; k < sizeof Ls / sizeof *Ls; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/plan%u.df11", df11_test_tmpdir(), Ls[k]);
        df11_compress_options o = { .n_threads = 1, .max_code_len = Ls[k], .lane_symbols = 64 };
        ck_assert_int_eq(df11_compress_tensors(path, src, N + 1, NULL, 0, &o, NULL), DF11_OK);
        df11_file *f;
        ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
        ck_assert_uint_eq(df11_file_n_groups(f), 2);
        for (uint32_t g = 0; g < df11_file_n_groups(f); g++) {
            const df11_group_info *gi = df11_file_group(f, g);
            size_t want = 0, size = 0;
            ck_assert_int_eq(df11i_gpu_plan_size(f, g, &want), DF11_OK);
            void *payload = malloc(gi->payload_size), *blob = NULL;
            ck_assert_int_eq(df11_file_read_group(f, g, payload), DF11_OK);
            df11_status st = df11i_gpu_plan_build(f, g, payload, &blob, &size);
            ck_assert_msg(st == DF11_OK, "%s", df11_last_error_detail());
            ck_assert_msg(size == want, "L=%u group %u: plan %zu bytes, size said %zu", Ls[k], g,
                          size, want);
            ck_assert_uint_ge(size, sizeof(df11i_gpu_plan_header) +
                                        gi->n_tensors * sizeof(df11i_gpu_tensor_desc));
            free(blob);
            free(payload);
        }
        ck_assert_int_eq(df11i_gpu_plan_size(f, 2, &(size_t){ 0 }), DF11_ERR_NOT_FOUND);
        df11_file_close(f);
    }
}
END_TEST

/* A group of many tiny Huffman tensors at L = 15 needs a 64 KiB decode table for each 16
 * bytes of weights: 65,537 of them wrapped the descriptors' 32-bit table offsets onto
 * another tensor's table, and a 17 MB file asked for 4 GiB of plan. Past the group's
 * weights plus 64 MiB of tables the plan is refused, before anything is allocated; 1000
 * tables (62.5 MiB) still plan. */
START_TEST(test_gpu_plan_tables_bounded)
{
    enum { N = 1100 };
    static uint16_t w[N][8];
    static char names[N][32];
    static df11_tensor_source src[N];
    for (int i = 0; i < N; i++) {
        df11_test_fill_weights(w[i], 8, 8, &rng);
        snprintf(names[i], sizeof names[i], "model.layers.0.t%04d", i);
        src[i] = (df11_tensor_source){
            .name = names[i], .dtype = DF11_DTYPE_BF16, .ndim = 1, .shape = { 8 }, .data = w[i]
        };
    }
    df11_compress_options o = { .n_threads = 1, .max_code_len = 15, .lane_symbols = 8 };
    static const int counts[] = { 1000, N };
    for (int k = 0; k < 2; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/tables%d.df11", df11_test_tmpdir(), counts[k]);
        ck_assert_int_eq(df11_compress_tensors(path, src, (size_t)counts[k], NULL, 0, &o, NULL),
                         DF11_OK);
        df11_file *f;
        ck_assert_int_eq(df11_file_open(path, &f), DF11_OK);
        ck_assert_uint_eq(df11_file_n_groups(f), 1);
        size_t size = 0;
        const df11_status want = k ? DF11_ERR_UNSUPPORTED : DF11_OK;
        ck_assert_int_eq(df11i_gpu_plan_size(f, 0, &size), want);
        void *payload = malloc(df11_file_group(f, 0)->payload_size), *blob = NULL;
        ck_assert_int_eq(df11_file_read_group(f, 0, payload), DF11_OK);
        ck_assert_int_eq(df11i_gpu_plan_build(f, 0, payload, &blob, &size), want);
        if (k) {
            ck_assert_ptr_null(blob);
            ck_assert_ptr_nonnull(strstr(df11_last_error_detail(), "GPU decode tables"));
        }
        free(blob);
        free(payload);
        df11_file_close(f);
        unlink(path);
    }
}
END_TEST
#endif

int main(void)
{
    rng = df11_test_seed();
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_roundtrip_sizes);
    tcase_add_test(tc, test_roundtrip_any_bits);
    tcase_add_test(tc, test_all_equal_exponents);
    tcase_add_test(tc, test_code_properties);
    tcase_add_test(tc, test_length_limit_cost);
    tcase_add_test(tc, test_corrupt_streams_fail);
    tcase_add_test(tc, test_stream_matches_spec);
    tcase_add_test(tc, test_stream_word_boundaries);
    tcase_add_test(tc, test_chunk_size_must_match_lanes);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_too_many_exponents_for_L);
    tcase_add_test(tc, test_code_properties_every_L);
    tcase_add_test(tc, test_validate_code_and_sizes);
    tcase_add_test(tc, test_mutated_tables_never_overrun);
#ifdef DF11_HAVE_CUDA
    tcase_add_test(tc, test_gpu_plan_size_matches_build);
    tcase_add_test(tc, test_gpu_plan_tables_bounded);
#endif
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
