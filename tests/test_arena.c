/* pool/arena.c: which slot a block gets, state transitions, BUSY instead of waiting. */
#include <check.h>

#include "pool/arena.h"
#include "tests/testutil.h"

START_TEST(test_claim_order)
{
    df11i_arena a;
    char mem[4 * 100];
    ck_assert_int_eq(df11i_arena_init(&a, 3, 100, mem), DF11_OK);
    ck_assert_ptr_eq(a.slots[2].data, mem + 200);
    int s0, s1, s2, s;
    int64_t ev;
    ck_assert_int_eq(df11i_arena_claim(&a, 10, 0, &s0, &ev), DF11_OK);
    ck_assert_int_eq(ev, -1);
    ck_assert_int_eq(df11i_arena_claim(&a, 11, 1, &s1, &ev), DF11_OK);
    ck_assert_int_eq(df11i_arena_claim(&a, 12, 1, &s2, &ev), DF11_OK);
    ck_assert(s0 != s1 && s1 != s2 && s0 != s2);
    ck_assert_int_eq(df11i_arena_find(&a, 11), s1);
    ck_assert_int_eq(df11i_arena_find(&a, 99), -1);
    ck_assert_int_eq(df11i_arena_claim(&a, 11, 0, &s, NULL), DF11_ERR_STATE);
    /* Slot of 10 is cached, not a pending prefetch: a prefetch may take it. */
    ck_assert_int_eq(df11i_arena_claim(&a, 13, 1, &s, &ev), DF11_OK);
    ck_assert_int_eq(s, s0);
    ck_assert_int_eq(ev, 10);
    /* Now all three hold pending prefetches: another prefetch is refused ... */
    ck_assert_int_eq(df11i_arena_claim(&a, 14, 1, &s, NULL), DF11_ERR_BUSY);
    /* ... a demand takes the oldest prefetch (11). */
    ck_assert_int_eq(df11i_arena_claim(&a, 14, 0, &s, &ev), DF11_OK);
    ck_assert_int_eq(s, s1);
    ck_assert_int_eq(ev, 11);
}
END_TEST

START_TEST(test_acquire_release)
{
    df11i_arena a;
    ck_assert_int_eq(df11i_arena_init(&a, 2, 64, NULL), DF11_OK);
    int s0, s1, s;
    ck_assert_int_eq(df11i_arena_acquire(&a, 0), DF11_ERR_STATE); /* empty */
    ck_assert_int_eq(df11i_arena_claim(&a, 0, 0, &s0, NULL), DF11_OK);
    ck_assert_int_eq(df11i_arena_acquire(&a, s0), DF11_OK);
    ck_assert_int_eq(df11i_arena_acquire(&a, s0), DF11_ERR_STATE);
    ck_assert_int_eq(df11i_arena_claim(&a, 1, 0, &s1, NULL), DF11_OK);
    ck_assert_int_eq(df11i_arena_acquire(&a, s1), DF11_OK);
    ck_assert_uint_eq(df11i_arena_n_acquired(&a), 2);
    ck_assert_int_eq(df11i_arena_claim(&a, 2, 0, &s, NULL), DF11_ERR_BUSY);
    ck_assert_int_eq(df11i_arena_ref(&a, s1), DF11_OK);
    int freed;
    ck_assert_int_eq(df11i_arena_release(&a, s1, &freed), DF11_OK);
    ck_assert_int_eq(freed, 0);
    ck_assert_int_eq(df11i_arena_release(&a, s1, &freed), DF11_OK);
    ck_assert_int_eq(freed, 1);
    ck_assert_int_eq(df11i_arena_release(&a, s1, &freed), DF11_ERR_STATE);
    ck_assert_int_eq(a.slots[s1].state, DF11_SLOT_CACHED);
    ck_assert_int_eq(df11i_arena_find(&a, 1), s1); /* still cached: re-acquire costs nothing */
    ck_assert_int_eq(df11i_arena_claim(&a, 2, 0, &s, NULL), DF11_OK);
    ck_assert_int_eq(s, s1);
    df11i_arena_drop(&a, s);
    ck_assert_int_eq(a.slots[s].state, DF11_SLOT_EMPTY);
    ck_assert_int_eq(df11i_arena_find(&a, 2), -1);
    ck_assert_int_eq(df11i_arena_release(&a, 7, NULL), DF11_ERR_STATE);
    ck_assert_int_eq(df11i_arena_init(&a, 0, 64, NULL), DF11_ERR_INVALID_ARG);
    ck_assert_int_eq(df11i_arena_init(&a, DF11_ARENA_MAX_SLOTS + 1, 64, NULL),
                     DF11_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_lru)
{
    /* Released slots are reused least recently used first. */
    df11i_arena a;
    df11i_arena_init(&a, 3, 1, NULL);
    int s[3], x;
    for (int i = 0; i < 3; i++) {
        df11i_arena_claim(&a, i, 0, &s[i], NULL);
        df11i_arena_acquire(&a, s[i]);
    }
    df11i_arena_release(&a, s[1], NULL);
    df11i_arena_release(&a, s[0], NULL);
    df11i_arena_release(&a, s[2], NULL);
    ck_assert_int_eq(df11i_arena_claim(&a, 5, 1, &x, NULL), DF11_OK);
    ck_assert_int_eq(x, s[1]);
    ck_assert_int_eq(df11i_arena_claim(&a, 6, 1, &x, NULL), DF11_OK);
    ck_assert_int_eq(x, s[0]);
}
END_TEST

static Suite *arena_suite(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("arena");
    tcase_add_test(tc, test_claim_order);
    tcase_add_test(tc, test_acquire_release);
    tcase_add_test(tc, test_lru);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return df11_test_run(arena_suite()); }
