/* The dtype conversions: every one of the 65536 BF16 values through df11_bf16_to_f32
 * (bit-exact) and df11_bf16_to_f16 (against a nearest-value search over all F16 values),
 * df11_f32_to_bf16 on every BF16 value and on random and edge F32 values (against the
 * nearer of its two neighbours), and df11_convert on the backend under test giving the host
 * functions' bits, and its argument checks.
 * tests/test_gpu_convert.c includes this file with RT_TEST_CUDA defined to run df11_convert
 * on the CUDA backend. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "df11/runtime.h"
#include "tests/backend_under_test.h"
#include "tests/testutil.h"

#define N_ALL 65536

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* F16 → double, exactly, written from the format's definition. */
static double f16_value(uint16_t h)
{
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

/* The F16 nearest to finite x (ties to the even pattern); ±Inf past the largest's
 * rounding boundary. Positive finite F16 patterns 0..0x7BFF increase with their value. */
static uint16_t f16_nearest(double x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs(x);
    if (a >= 65520.0) return sign | 0x7C00; /* 65504 + half its ulp (16), a tie to Inf */
    uint32_t lo = 0, hi = 0x7BFF;
    while (lo < hi) { /* the largest pattern whose value is <= a */
        const uint32_t mid = (lo + hi + 1) / 2;
        if (f16_value((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == 0x7BFF) return sign | 0x7BFF;
    const double d_lo = a - f16_value((uint16_t)lo), d_hi = f16_value((uint16_t)(lo + 1)) - a;
    const uint32_t r = d_lo < d_hi ? lo : d_hi < d_lo ? lo + 1 : (lo & 1) ? lo + 1 : lo;
    return (uint16_t)(sign | r);
}

/* The BF16 nearest to finite x (F32 bits u), ties to even, Inf past the boundary. */
static uint16_t bf16_nearest(uint32_t u)
{
    const uint16_t lo = (uint16_t)(u >> 16);
    if ((u & 0xFFFF) == 0) return lo;
    const uint16_t hi = (uint16_t)(lo + 1); /* next away from zero: may be ±Inf */
    const double x = fabs((double)f32_of(u));
    const double v_lo = fabs((double)f32_of((uint32_t)lo << 16));
    const double v_hi =
        (hi & 0x7FFF) == 0x7F80 ? ldexp(1.0, 128) : fabs((double)f32_of((uint32_t)hi << 16));
    const double d_lo = x - v_lo, d_hi = v_hi - x;
    return d_lo < d_hi ? lo : d_hi < d_lo ? hi : (lo & 1) ? hi : lo;
}

static int bf16_is_nan(uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x7F); }
static int f16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }

static uint16_t *all_bf16(void)
{
    uint16_t *b = malloc(N_ALL * 2);
    ck_assert_ptr_nonnull(b);
    for (uint32_t i = 0; i < N_ALL; i++) b[i] = (uint16_t)i;
    return b;
}

/* df11_convert on the backend under test: n values of `src` (host memory) to `dst`. */
static void convert_on_backend(const void *src, df11_dtype sdt, void *dst, df11_dtype ddt, size_t n)
{
    const size_t ss = df11_dtype_size(sdt), ds = df11_dtype_size(ddt);
    void *d_src = dev_alloc(n * ss), *d_dst = dev_alloc(n * ds);
    dev_upload(d_src, src, n * ss);
    df11_status s = df11_convert(RT_BACKEND, d_src, sdt, d_dst, ddt, n, NULL);
    ck_assert_msg(s == DF11_OK, "df11_convert: %s %s", df11_strerror(s), df11_last_error_detail());
    read_back(dst, d_dst, n * ds); /* cudaMemcpy waits for the legacy default stream */
    dev_free(d_src);
    dev_free(d_dst);
}

START_TEST(bf16_to_f32_all)
{
    uint16_t *b = all_bf16();
    float *f = malloc(N_ALL * 4), *g = malloc(N_ALL * 4);
    ck_assert_int_eq(df11_bf16_to_f32(b, f, N_ALL), DF11_OK);
    for (uint32_t i = 0; i < N_ALL; i++)
        ck_assert_msg(bits_of(f[i]) == i << 16, "bf16 0x%04x -> 0x%08x", i, bits_of(f[i]));
    convert_on_backend(b, DF11_DTYPE_BF16, g, DF11_DTYPE_F32, N_ALL);
    ck_assert(!memcmp(f, g, N_ALL * 4));
    free(b);
    free(f);
    free(g);
}
END_TEST

START_TEST(bf16_to_f16_all)
{
    uint16_t *b = all_bf16(), *h = malloc(N_ALL * 2), *g = malloc(N_ALL * 2);
    ck_assert_int_eq(df11_bf16_to_f16(b, h, N_ALL), DF11_OK);
    for (uint32_t i = 0; i < N_ALL; i++) {
        const uint16_t sign = (uint16_t)(i & 0x8000);
        if (bf16_is_nan(b[i])) {
            ck_assert_msg(f16_is_nan(h[i]) && (h[i] & 0x8000) == sign, "NaN 0x%04x -> 0x%04x", i,
                          h[i]);
            continue;
        }
        const double x = f32_of((uint32_t)i << 16);
        const uint16_t want = isinf(x) ? (uint16_t)(sign | 0x7C00) : f16_nearest(x);
        ck_assert_msg(h[i] == want, "bf16 0x%04x (%g) -> f16 0x%04x, nearest 0x%04x", i, x, h[i],
                      want);
    }
    convert_on_backend(b, DF11_DTYPE_BF16, g, DF11_DTYPE_F16, N_ALL);
    ck_assert(!memcmp(h, g, N_ALL * 2));
    free(b);
    free(h);
    free(g);
}
END_TEST

static void check_f32_to_bf16(const uint32_t *u, size_t n)
{
    float *f = malloc(n * 4);
    uint16_t *b = malloc(n * 2), *g = malloc(n * 2);
    memcpy(f, u, n * 4);
    ck_assert_int_eq(df11_f32_to_bf16(f, b, n), DF11_OK);
    for (size_t i = 0; i < n; i++) {
        if (isnan(f[i])) {
            ck_assert_msg(bf16_is_nan(b[i]) && (b[i] >> 15) == (u[i] >> 31), "NaN 0x%08x -> 0x%04x",
                          u[i], b[i]);
            continue;
        }
        const uint16_t want = isinf(f[i]) ? (uint16_t)(u[i] >> 16) : bf16_nearest(u[i]);
        ck_assert_msg(b[i] == want, "f32 0x%08x -> bf16 0x%04x, nearest 0x%04x", u[i], b[i], want);
    }
    convert_on_backend(f, DF11_DTYPE_F32, g, DF11_DTYPE_BF16, n);
    ck_assert(!memcmp(b, g, n * 2));
    free(f);
    free(b);
    free(g);
}

START_TEST(f32_to_bf16_values)
{
    /* Every BF16 value as an F32 comes back as itself (a NaN as a NaN of its sign). */
    uint32_t *u = malloc(N_ALL * 4);
    for (uint32_t i = 0; i < N_ALL; i++) u[i] = i << 16;
    check_f32_to_bf16(u, N_ALL);
    /* Random bit patterns, and the edges: ties both ways, the largest finite values that
     * round down and up to Inf, subnormals. */
    uint64_t rng = df11_test_seed();
    for (uint32_t i = 0; i < N_ALL; i++) u[i] = (uint32_t)df11_test_rand(&rng);
    static const uint32_t edges[] = { 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x7F7F7FFF,
                                      0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00008000, 0x00018000,
                                      0x007FFFFF, 0x80000001, 0x7F800001, 0xFFC00000 };
    memcpy(u, edges, sizeof edges);
    check_f32_to_bf16(u, N_ALL);
    free(u);
}
END_TEST

START_TEST(convert_args)
{
    uint16_t b[4] = { 0 };
    float f[4];
    ck_assert_int_eq(df11_bf16_to_f32(NULL, f, 4), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_bf16_to_f16(b, NULL, 4), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_f32_to_bf16(NULL, NULL, 0), DF11_OK);
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_HOST, b, DF11_DTYPE_BF16, f, DF11_DTYPE_F64, 4, NULL),
        DF11_ERR_UNSUPPORTED);
    ck_assert_int_eq(df11_convert(DF11_BACKEND_HOST, f, DF11_DTYPE_F32, b, DF11_DTYPE_F16, 4, NULL),
                     DF11_ERR_UNSUPPORTED);
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_AUTO, b, DF11_DTYPE_BF16, f, DF11_DTYPE_F32, 4, NULL),
        DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_HOST, b, DF11_DTYPE_BF16, f, DF11_DTYPE_F32, 4, (df11_stream)b),
        DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11_convert(RT_BACKEND, NULL, DF11_DTYPE_BF16, f, DF11_DTYPE_F32, 4, NULL),
                     DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(
        df11_convert(DF11_BACKEND_HOST, b, DF11_DTYPE_BF16, f, DF11_DTYPE_F32, 4, NULL), DF11_OK);
}
END_TEST

int main(void)
{
    if (rt_skip_without_gpu()) return 77;
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("convert");
    tcase_add_test(tc, bf16_to_f32_all);
    tcase_add_test(tc, bf16_to_f16_all);
    tcase_add_test(tc, f32_to_bf16_values);
    tcase_add_test(tc, convert_args);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
