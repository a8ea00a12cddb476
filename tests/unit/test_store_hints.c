/* The hint table: merging, kinds, the bound, removal and compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_hints.h"

static struct hint_entry entry(const struct store_hints *h, size_t i)
{
    struct hint_entry e;
    hints_get(h, i, &e);
    return e;
}

static void test_merge_and_kinds(void **state)
{
    (void)state;
    struct store_hints *h = hints_new(100);
    assert_non_null(h);
    assert_int_equal(hints_count(h), 0);
    assert_true(hints_add(h, HINT_INCR, "ev:q1right01", 12, 3, 60));
    assert_true(hints_add(h, HINT_INCR, "ev:q1right02", 12, 1, 60));
    assert_true(hints_add(h, HINT_INCR, "ev:q1right01", 12, 4, 90));
    assert_int_equal(hints_count(h), 2);
    struct hint_entry e = entry(h, 0);
    assert_int_equal(e.keylen, 12);
    assert_memory_equal(e.key, "ev:q1right01", 12);
    assert_int_equal(e.kind, HINT_INCR);
    assert_int_equal(e.delta, 7);
    assert_int_equal(e.ttl_s, 90); /* the latest write's */
    assert_int_equal(e.writes, 2);
    /* a stale blob of the same name is another entry */
    assert_true(hints_add(h, HINT_STALE, "ev:q1right01", 12, 99, 99));
    assert_true(hints_add(h, HINT_STALE, "ev:q1right01", 12, 5, 5));
    assert_int_equal(hints_count(h), 3);
    assert_int_equal(hints_count_kind(h, HINT_INCR), 2);
    assert_int_equal(hints_count_kind(h, HINT_STALE), 1);
    e = entry(h, 2);
    assert_int_equal(e.kind, HINT_STALE);
    assert_int_equal(e.delta, 0);
    assert_int_equal(e.writes, 2);
    /* the sum wraps like the counter */
    assert_true(hints_add(h, HINT_INCR, "w", 1, UINT64_MAX, 1));
    assert_true(hints_add(h, HINT_INCR, "w", 1, 2, 1));
    assert_int_equal(entry(h, 3).delta, 1);
    hints_free(h);
    hints_free(NULL);
    assert_int_equal(hints_count(NULL), 0);
}

static void test_bounded(void **state)
{
    (void)state;
    struct store_hints *h = hints_new(3);
    assert_non_null(h);
    assert_true(hints_add(h, HINT_INCR, "a", 1, 1, 0));
    assert_true(hints_add(h, HINT_INCR, "b", 1, 1, 0));
    assert_true(hints_add(h, HINT_STALE, "c", 1, 0, 0));
    assert_false(hints_add(h, HINT_INCR, "d", 1, 1, 0)); /* full: unchanged */
    assert_int_equal(hints_count(h), 3);
    assert_true(hints_add(h, HINT_INCR, "a", 1, 5, 0)); /* a merge costs nothing */
    assert_int_equal(entry(h, 0).delta, 6);
    /* bad keys */
    assert_false(hints_add(h, HINT_INCR, "", 0, 1, 0));
    char long_key[251];
    memset(long_key, 'k', sizeof(long_key));
    bool drop[3] = {false, true, false};
    hints_remove(h, drop);
    assert_false(hints_add(h, HINT_INCR, long_key, 251, 1, 0));
    assert_true(hints_add(h, HINT_INCR, long_key, 250, 1, 0));
    hints_free(h);
    struct store_hints *none = hints_new(0);
    assert_false(hints_add(none, HINT_INCR, "a", 1, 1, 0));
    hints_free(none);
}

static void test_remove_compacts(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct store_hints *h = hints_new(N);
    assert_non_null(h);
    char key[32];
    for (int i = 0; i < N; i++) {
        int len = snprintf(key, sizeof(key), "ev:q%dc%03dwrong%02d", i % 7, i, i % 97);
        assert_true(hints_add(h, HINT_INCR, key, (size_t)len, (uint64_t)i, 60));
    }
    assert_int_equal(hints_count(h), N);
    bool *drop = calloc(N, sizeof(*drop));
    assert_non_null(drop);
    for (int i = 0; i < N; i++)
        drop[i] = i % 3 != 0;
    hints_remove(h, drop);
    assert_int_equal(hints_count(h), (N + 2) / 3);
    for (size_t j = 0; j < hints_count(h); j++) {
        int i = (int)j * 3;
        struct hint_entry e = entry(h, j);
        int len = snprintf(key, sizeof(key), "ev:q%dc%03dwrong%02d", i % 7, i, i % 97);
        assert_int_equal(e.keylen, (size_t)len);
        assert_memory_equal(e.key, key, (size_t)len);
        assert_int_equal(e.delta, (uint64_t)i);
    }
    /* the index still finds the kept keys (merge) and accepts new ones */
    int len = snprintf(key, sizeof(key), "ev:q%dc%03dwrong%02d", 3 % 7, 3, 3 % 97);
    assert_true(hints_add(h, HINT_INCR, key, (size_t)len, 10, 60));
    assert_int_equal(entry(h, 1).delta, 13);
    assert_int_equal(hints_count(h), (N + 2) / 3);
    len = snprintf(key, sizeof(key), "ev:q%dc%03dwrong%02d", 1 % 7, 1, 1 % 97);
    assert_true(hints_add(h, HINT_INCR, key, (size_t)len, 10, 60));
    assert_int_equal(hints_count(h), (N + 2) / 3 + 1);
    /* emptied: memory released, usable again */
    size_t n = hints_count(h);
    for (size_t i = 0; i < n; i++)
        drop[i] = true;
    hints_remove(h, drop);
    assert_int_equal(hints_count(h), 0);
    assert_int_equal(hints_count_kind(h, HINT_INCR), 0);
    assert_true(hints_add(h, HINT_STALE, "x", 1, 0, 0));
    assert_int_equal(hints_count(h), 1);
    free(drop);
    hints_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_and_kinds),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_remove_compacts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
