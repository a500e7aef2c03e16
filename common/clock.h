/* The one clock for durations inside df11 (open time, decode time) and its internal users
 * (tests, benchmarks: through df11_internal). Monotonic, so a wall-clock step never makes
 * a duration negative. Header-only: a call is one clock_gettime. Programs that use only
 * the public API (examples/) keep their own. */
#ifndef DF11_COMMON_CLOCK_H
#define DF11_COMMON_CLOCK_H

#include <time.h>

/* Milliseconds since an arbitrary fixed point: only differences mean anything. */
static inline double df11i_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#endif
