/* pool/pool.c over a plain host-memory allocator (the pool knows no backends): alignment,
 * chunking, per-use accounting, the limit, high-water, and that destroy gives every chunk
 * back to its allocator. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "pool/pool.h"
#include "tests/testutil.h"

/* Chunks from aligned_alloc; the counter shows every chunk goes back. */
static int live_chunks;

static df11_status test_alloc(void *ctx, size_t size, void **ptr)
{
    *ptr = aligned_alloc(4096, size);
    if (!*ptr) return DF11_ERR_NO_MEMORY;
    live_chunks++;
    return DF11_OK;
}

static void test_free(void *ctx, void *ptr)
{
    free(ptr);
    live_chunks--;
}

static const df11i_pool_allocator mem = { .alloc = test_alloc, .free = test_free };

static void setup(void) { live_chunks = 0; }
static void teardown(void) { ck_assert_int_eq(live_chunks, 0); }

START_TEST(test_alloc_align_accounting)
{
    df11i_pool *p;
    ck_assert_int_eq(df11i_pool_create(&mem, 0, &p), DF11_OK);
    ck_assert_int_eq(df11i_pool_reserve(p, 1 << 20), DF11_OK);
    void *a, *b, *c;
    ck_assert_int_eq(df11i_pool_alloc(p, 100, 256, DF11_POOL_USE_COMPRESSED, &a), DF11_OK);
    ck_assert_int_eq(df11i_pool_alloc(p, 10, 4096, DF11_POOL_USE_ARENA, &b), DF11_OK);
    ck_assert_int_eq(df11i_pool_alloc(p, 1, 0, DF11_POOL_USE_METADATA, &c), DF11_OK);
    ck_assert_uint_eq((uintptr_t)a % 256, 0);
    ck_assert_uint_eq((uintptr_t)b % 4096, 0);
    ck_assert_uint_eq((uintptr_t)c % 256, 0);
    ck_assert((char *)b >= (char *)a + 100);
    ck_assert((char *)c >= (char *)b + 10);
    memset(a, 1, 100);
    memset(b, 2, 10);
    df11i_pool_stats st;
    df11i_pool_stats_get(p, &st);
    ck_assert_uint_eq(st.n_chunks, 1);
    ck_assert_uint_eq(st.reserved, 1 << 20);
    ck_assert_uint_eq(st.used[DF11_POOL_USE_COMPRESSED], 100);
    ck_assert_uint_eq(st.used[DF11_POOL_USE_ARENA], 4096 - 100 + 10);
    ck_assert_uint_eq(st.used_total, st.used[0] + st.used[1] + st.used[DF11_POOL_USE_METADATA]);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 1 << 20);
    ck_assert_int_eq(df11i_pool_alloc(p, 1, 3, DF11_POOL_USE_ARENA, &a), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_pool_alloc(p, 1, 8192, DF11_POOL_USE_ARENA, &a), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_pool_alloc(p, 1, 0, DF11_POOL_USE_COUNT_, &a), DF11_ERR_INVALID_ARG);
    df11i_pool_destroy(p);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
    ck_assert_str_eq(df11i_pool_use_name(DF11_POOL_USE_STAGING), "staging");
}
END_TEST

START_TEST(test_chunks_and_high_water)
{
    df11i_pool *p;
    ck_assert_int_eq(df11i_pool_create(&mem, 0, &p), DF11_OK);
    df11i_pool_set_chunk_min(p, 64 << 10);
    void *x[40];
    for (int i = 0; i < 40; i++) {
        ck_assert_int_eq(df11i_pool_alloc(p, 10000, 256, DF11_POOL_USE_STAGING, &x[i]), DF11_OK);
        memset(x[i], i, 10000);
    }
    for (int i = 0; i < 40; i++)
        for (int j = 0; j < 10000; j += 997) ck_assert_int_eq(((unsigned char *)x[i])[j], i);
    df11i_pool_stats st;
    df11i_pool_stats_get(p, &st);
    ck_assert_uint_gt(st.n_chunks, 1);
    ck_assert_uint_eq(st.high_water, st.reserved);
    ck_assert_uint_ge(st.reserved, 400000);
    /* A request larger than chunk_min gets a chunk of its own size. */
    void *big;
    ck_assert_int_eq(df11i_pool_alloc(p, 1 << 20, 4096, DF11_POOL_USE_STAGING, &big), DF11_OK);
    df11i_pool_stats_get(p, &st);
    ck_assert_uint_ge(st.reserved, 400000 + (1 << 20));
    /* Small pieces still fit into earlier chunks' tails. */
    uint64_t before = st.reserved;
    ck_assert_int_eq(df11i_pool_alloc(p, 16, 16, DF11_POOL_USE_METADATA, &big), DF11_OK);
    df11i_pool_stats_get(p, &st);
    ck_assert_uint_eq(st.reserved, before);
    df11i_pool_destroy(p);
    ck_assert_uint_eq(df11i_pool_live_bytes(), 0);
}
END_TEST

START_TEST(test_limit)
{
    df11i_pool *p;
    ck_assert_int_eq(df11i_pool_create(&mem, 1 << 20, &p), DF11_OK);
    ck_assert_int_eq(df11i_pool_reserve(p, 2 << 20), DF11_ERR_DEVICE_MEMORY);
    ck_assert(strstr(df11_last_error_detail(), "short by 1048576") != NULL);
    void *a;
    /* chunk_min (64 MiB) is over the limit: the pool falls back to the request's size. */
    ck_assert_int_eq(df11i_pool_alloc(p, 512 << 10, 0, DF11_POOL_USE_ARENA, &a), DF11_OK);
    ck_assert_int_eq(df11i_pool_alloc(p, 512 << 10, 0, DF11_POOL_USE_ARENA, &a), DF11_OK);
    ck_assert_int_eq(df11i_pool_alloc(p, 1, 0, DF11_POOL_USE_ARENA, &a), DF11_ERR_DEVICE_MEMORY);
    df11i_pool_stats st;
    df11i_pool_stats_get(p, &st);
    ck_assert_uint_eq(st.reserved, 1 << 20);
    ck_assert_uint_eq(st.limit, 1 << 20);
    df11i_pool_destroy(p);
    df11i_pool_destroy(NULL);
    ck_assert_int_eq(df11i_pool_create(NULL, 0, &p), DF11_ERR_INVALID_ARG);
    df11i_pool_allocator no_free = { .alloc = test_alloc };
    ck_assert_int_eq(df11i_pool_create(&no_free, 0, &p), DF11_ERR_INVALID_ARG);
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_alloc_align_accounting);
    tcase_add_test(tc, test_chunks_and_high_water);
    tcase_add_test(tc, test_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return df11_test_run(pool_suite()); }
