/* The exponent-Huffman codec: code construction, codebooks, and encode/decode round trips
 * on random data of awkward sizes and shapes. */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "tests/testutil.h"

static uint64_t rng;

static void roundtrip(const uint16_t *x, uint64_t n, uint32_t L, uint32_t S, int threads)
{
    uint8_t *sm = malloc(n + 1);
    uint16_t *y = malloc(n * 2 + 2);
    df11_encoded enc;
    ck_assert_int_eq(df11_encode(x, n, L, S, threads, sm, &enc), DF11_OK);
    enc.coded.sm = sm;
    memset(y, 0xa5, n * 2 + 2); /* poison, incl. one element past the end */
    ck_assert_int_eq(df11_decode_host(&enc.coded, y, threads), DF11_OK);
    for (uint64_t i = 0; i < n; i++)
        ck_assert_msg(x[i] == y[i], "n=%llu L=%u S=%u: element %llu: %04x != %04x",
                      (unsigned long long)n, L, S, (unsigned long long)i, x[i], y[i]);
    ck_assert_uint_eq(y[n], 0xa5a5);
    /* a chunk's lanes never hold more than the bound the format promises */
    for (uint64_t k = 0; k < df11_n_lane_entries(n, S); k++)
        ck_assert_uint_le(enc.lanes[k], (S + 8) * L);
    df11_encoded_free(&enc);
    free(sm);
    free(y);
}

START_TEST(test_roundtrip_sizes)
{
    static const uint64_t sizes[] = {0, 1, 2, 7, 8, 9, 15, 17, 255, 256, 257, 4095, 4096, 4097,
                                     65535, 65536, 65537, 100003, 262144 + 13};
    static const uint32_t lanes[] = {8, 16, 256, 2048, 4096};
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
    for (uint64_t i = 0; i < n; i++) x[i] = (uint16_t)((0x7c << 7) | (df11_test_rand(&rng) & 0x807f));
    df11_encoded enc;
    uint8_t *sm = malloc(n);
    ck_assert_int_eq(df11_encode(x, n, 12, 2048, 1, sm, &enc), DF11_OK);
    ck_assert_int_eq(enc.coded.code.single_symbol, 0x7c);
    ck_assert_uint_eq(enc.exponent_bits, 0);
    uint8_t cb[4];
    ck_assert_uint_eq(df11_codebook_size(&enc.coded.code), 3);
    df11_codebook_write(&enc.coded.code, cb);
    df11_code back;
    ck_assert_int_eq(df11_codebook_read(cb, 3, 12, &back), DF11_OK);
    ck_assert_int_eq(back.single_symbol, 0x7c);
    df11_encoded_free(&enc);
    free(sm);
    roundtrip(x, n, 12, 2048, 2);
    free(x);
}
END_TEST

START_TEST(test_code_properties)
{
    for (int trial = 0; trial < 200; trial++) {
        uint64_t hist[256] = {0};
        int used = 1 + (int)(df11_test_rand(&rng) % 256);
        for (int i = 0; i < used; i++)
            hist[df11_test_rand(&rng) % 256] += 1 + (df11_test_rand(&rng) % (1ull << (df11_test_rand(&rng) % 40)));
        int distinct = 0;
        for (int s = 0; s < 256; s++) distinct += hist[s] != 0;
        uint32_t L = 8 + (uint32_t)(df11_test_rand(&rng) % 8);
        df11_code code;
        ck_assert_int_eq(df11_code_build(hist, L, &code), DF11_OK);
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
        size_t size = df11_codebook_size(&code);
        df11_codebook_write(&code, cb);
        df11_code back;
        ck_assert_int_eq(df11_codebook_read(cb, size, L, &back), DF11_OK);
        ck_assert_mem_eq(back.len, code.len, 256);
        uint16_t *lut = malloc(sizeof(uint16_t) << L), codes[256];
        df11_lut_build(&code, lut);
        df11_code_canonical(&code, codes);
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
    uint64_t hist[256] = {0};
    for (uint64_t i = 0; i < n; i++) hist[df11_bf16_exp(x[i])]++;
    double bits[2];
    uint32_t Ls[2] = {12, 15};
    for (int k = 0; k < 2; k++) {
        df11_code code;
        ck_assert_int_eq(df11_code_build(hist, Ls[k], &code), DF11_OK);
        double b = 0;
        for (int s = 0; s < 256; s++) b += (double)hist[s] * code.len[s];
        bits[k] = b / (double)n;
    }
    double h = df11_entropy(hist);
    ck_assert_double_ge(bits[1], h);
    ck_assert_double_lt(bits[0] - bits[1], 0.01);
    ck_assert_double_lt(bits[1] - h, 0.05);
    free(x);
}
END_TEST

START_TEST(test_corrupt_streams_fail)
{
    uint64_t n = 50000;
    uint16_t *x = malloc(n * 2), *y = malloc(n * 2);
    uint8_t *sm = malloc(n);
    df11_test_fill_weights(x, n, 64, &rng);
    df11_encoded enc;
    ck_assert_int_eq(df11_encode(x, n, 12, 256, 1, sm, &enc), DF11_OK);
    enc.coded.sm = sm;
    /* a lane length that lies */
    enc.lanes[3] += 1;
    ck_assert_int_eq(df11_decode_host(&enc.coded, y, 1), DF11_ERR_CORRUPT);
    enc.lanes[3] -= 1;
    /* chunk offsets past the stream */
    uint32_t saved = enc.chunks[1];
    enc.chunks[1] = 0x7fffffff;
    ck_assert_int_eq(df11_decode_host(&enc.coded, y, 1), DF11_ERR_CORRUPT);
    enc.chunks[1] = saved;
    /* flipped stream bits: detected, or decoded to other values, never a crash (in a
     * container the payload's xxh3 catches the flip before any decoder runs) */
    for (int i = 0; i < 50; i++) {
        uint64_t w = df11_test_rand(&rng) % (enc.coded.stream_bytes / 4 - 2);
        enc.stream[w] ^= 1u << (df11_test_rand(&rng) % 32);
        df11_status st = df11_decode_host(&enc.coded, y, 1);
        ck_assert(st == DF11_OK || st == DF11_ERR_CORRUPT);
    }
    df11_encoded_free(&enc);
    free(x);
    free(y);
    free(sm);
}
END_TEST

START_TEST(test_bad_arguments)
{
    uint16_t x[16] = {0};
    uint8_t sm[16];
    df11_encoded enc;
    ck_assert_int_eq(df11_encode(x, 16, 12, 12, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_encode(x, 16, 16, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_encode(x, 16, 0, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_encode(NULL, 16, 12, 8, 1, sm, &enc), DF11_ERR_INVALID_ARG);
    uint8_t cb[4] = {250, 9, 0x11, 0x11};
    df11_code code;
    ck_assert_int_eq(df11_codebook_read(cb, 4, 12, &code), DF11_ERR_CORRUPT);  /* past 255 */
    uint8_t kraft[4] = {0, 2, 0x11, 0x01};                                      /* 3 codes of length 1 */
    ck_assert_int_eq(df11_codebook_read(kraft, 4, 12, &code), DF11_ERR_CORRUPT);
    uint8_t longer[3] = {0, 1, 0xdd};                                           /* length 13 > 12 */
    ck_assert_int_eq(df11_codebook_read(longer, 3, 12, &code), DF11_ERR_CORRUPT);
    ck_assert_int_eq(df11_codebook_read(longer, 1, 12, &code), DF11_ERR_CORRUPT);
}
END_TEST

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
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
