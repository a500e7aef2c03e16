/* Timing helpers shared by the df11-bench subcommands. */
#include <stdlib.h>

#include "bench/bench.h"
#include "common/clock.h"

double bench_now_s(void) { return df11i_now_ms() / 1e3; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
