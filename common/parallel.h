/* A minimal parallel-for over pthreads: the work is cut into n_items independent items. */
#ifndef DF11_COMMON_PARALLEL_H
#define DF11_COMMON_PARALLEL_H

#include <stdint.h>

#include "df11/status.h"

/* Calls fn(ctx, item) for every item in [0, n_items) on up to n_threads threads (0 = all
 * cores); items are handed out dynamically. Returns the first failure any call returned
 * (the others still run to completion). */
typedef df11_status (*df11i_item_fn)(void *ctx, uint64_t item);
df11_status df11i_parallel_for(uint64_t n_items, int n_threads, df11i_item_fn fn, void *ctx);

int df11i_cpu_count(void);

#endif
