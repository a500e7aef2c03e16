/* Parallel-for over pthreads. Threads are made per call: callers hand it coarse items
 * (chunks of tens of thousands of weights), so creation cost does not show. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/error.h"
#include "common/parallel.h"

typedef struct {
    df11i_item_fn fn;
    void *ctx;
    uint64_t n_items;
    atomic_uint_fast64_t next;
    atomic_int status;
    char detail[512];
    pthread_mutex_t lock;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    for (;;) {
        uint64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n_items) break;
        df11_status st = j->fn(j->ctx, i);
        if (st != DF11_OK) {
            int expected = DF11_OK;
            if (atomic_compare_exchange_strong(&j->status, &expected, st)) {
                pthread_mutex_lock(&j->lock);
                snprintf(j->detail, sizeof j->detail, "%s", df11_last_error_detail());
                pthread_mutex_unlock(&j->lock);
            }
        }
    }
    return NULL;
}

int df11i_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

df11_status df11i_parallel_for(uint64_t n_items, int n_threads, df11i_item_fn fn, void *ctx)
{
    if (n_threads <= 0) n_threads = df11i_cpu_count();
    if ((uint64_t)n_threads > n_items) n_threads = (int)n_items;
    job j = { .fn = fn, .ctx = ctx, .n_items = n_items, .detail = "" };
    atomic_init(&j.next, 0);
    atomic_init(&j.status, DF11_OK);
    pthread_mutex_init(&j.lock, NULL);

    pthread_t *threads = n_threads > 1 ? calloc((size_t)n_threads - 1, sizeof *threads) : NULL;
    int started = 0;
    for (int t = 0; threads && t < n_threads - 1; t++, started++)
        if (pthread_create(&threads[t], NULL, worker, &j) != 0) break;
    worker(&j); /* the caller works too; with no threads it does everything */
    for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
    free(threads);
    pthread_mutex_destroy(&j.lock);

    df11_status st = atomic_load(&j.status);
    if (st != DF11_OK) return df11i_fail(st, "%s", j.detail);
    return DF11_OK;
}
