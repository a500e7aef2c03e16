/* The fused kernels' stream-K split (kernels/matmul.h): df11i_cta_of and df11i_range_start,
 * which the kernels take through an fp64 reciprocal instead of a 64-bit division, against the
 * exact integer quotient and against the ranges themselves, on edge and random splits up to
 * the largest a launch can make (2^31 - 1 units; up to 2^20 CTAs for the mma.sync kernel, up
 * to a CTA a unit for the wgmma one), and every split of a few units. Host code only. */
#include <check.h>
#include <stdint.h>

#include "kernels/matmul.h"
#include "tests/testutil.h"

/* CTA c's range of nu units over g CTAs: [c nu / g, (c + 1) nu / g). */
static long long range_begin(long long c, long long nu, long long g) { return c * nu / g; }

/* df11i_range_start(c) is the exact quotient c nu / g. */
static void check_start(long long c, long long nu, long long g)
{
    const long long s = df11i_range_start(c, (int)nu, (int)g, 1.0 / (double)g);
    if (s != range_begin(c, nu, g))
        ck_abort_msg("df11i_range_start(%lld, %lld, %lld) = %lld, want %lld", c, nu, g, s,
                     range_begin(c, nu, g));
}

/* df11i_cta_of(u) is the quotient, and the CTA it names holds u; the range starts around
 * it are exact. */
static void check_one(long long u, long long nu, long long g)
{
    const int c = df11i_cta_of(u, (int)nu, (int)g, 1.0 / (double)nu);
    const long long want = ((u + 1) * g - 1) / nu;
    if (c != want)
        ck_abort_msg("df11i_cta_of(%lld, %lld, %lld) = %d, want %lld", u, nu, g, c, want);
    if (range_begin(c, nu, g) > u || u >= range_begin(c + 1, nu, g))
        ck_abort_msg("unit %lld of %lld over %lld CTAs: not in CTA %d's range", u, nu, g, c);
    check_start(c, nu, g);
    check_start(c + 1, nu, g);
}

/* Every unit, the first and last of every range and its neighbours. */
static void check_split(long long nu, long long g)
{
    if (nu <= 4096) {
        for (long long u = 0; u < nu; u++) check_one(u, nu, g);
        return;
    }
    const long long step = g <= 4096 ? 1 : g / 4096;
    for (long long c = 0; c < g; c += step)
        for (long long d = -1; d <= 1; d++) {
            const long long u = range_begin(c, nu, g) + d;
            if (u >= 0 && u < nu) check_one(u, nu, g);
        }
    check_one(nu - 1, nu, g);
}

/* Every split of up to 128 units, every unit: among them the quotients the reciprocal's
 * product rounds below (49 units over 2 CTAs: 49 * fl(1/49) < 1), which the correction
 * takes back up. */
START_TEST(cta_of_small_all)
{
    for (long long nu = 1; nu <= 128; nu++)
        for (long long g = 1; g <= nu; g++)
            for (long long u = 0; u < nu; u++) check_one(u, nu, g);
}
END_TEST

START_TEST(cta_of_edges)
{
    static const long long nus[] = {
        1, 2, 3, 7, 64, 1000, 4095, 7168, 65536, 1LL << 30, INT32_MAX - 1, INT32_MAX
    };
    static const long long gs[] = { 1, 2, 3, 13, 132, 1056, 1057, 67584, 1 << 20 };
    /* past 2^20: the wgmma kernel's grid, which may reach nu (grid_ctas) */
    static const long long wide[] = { (1 << 20) + 1, 123456789, 1LL << 30, INT32_MAX - 1,
                                      INT32_MAX };
    for (size_t i = 0; i < sizeof nus / sizeof *nus; i++) {
        for (size_t j = 0; j < sizeof gs / sizeof *gs; j++)
            if (gs[j] <= nus[i]) check_split(nus[i], gs[j]); /* a grid has G <= NU */
        for (size_t j = 0; j < sizeof wide / sizeof *wide; j++)
            if (wide[j] <= nus[i]) check_split(nus[i], wide[j]);
    }
}
END_TEST

START_TEST(cta_of_random)
{
    uint64_t st = df11_test_seed() ^ 0x5b117c7aull;
    for (int i = 0; i < 200000; i++) {
        const long long nu = 1 + (long long)(df11_test_rand(&st) % INT32_MAX);
        /* half the splits as the mma.sync kernel makes them (g <= 2^20), half up to nu */
        const long long gmax = i & 1 ? nu : (nu < (1 << 20) ? nu : 1 << 20);
        const long long g = 1 + (long long)(df11_test_rand(&st) % (uint64_t)gmax);
        check_one((long long)(df11_test_rand(&st) % (uint64_t)nu), nu, g);
        check_one(range_begin((long long)(df11_test_rand(&st) % (uint64_t)g), nu, g), nu, g);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("matmul_split");
    TCase *tc = tcase_create("split");
    tcase_add_test(tc, cta_of_small_all);
    tcase_add_test(tc, cta_of_edges);
    tcase_add_test(tc, cta_of_random);
    suite_add_tcase(s, tc);
    return df11_test_run(s);
}
