/* Pending increments of logical counters: coalescing, first-touch order,
 * merging, clearing and reuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "counts.h"

#define N 5000

static int setup(void **state)
{
    struct counts *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_true(counts_init(c, N));
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    counts_free(*state);
    free(*state);
    return 0;
}

/* touched lists exactly the ids with a delta, each once. */
static void check_touched(const struct counts *c)
{
    uint32_t nonzero = 0;
    for (uint32_t id = 0; id < c->n; id++)
        nonzero += c->delta[id] != 0;
    assert_int_equal(c->ntouched, nonzero);
    bool *seen = calloc(c->n ? c->n : 1, sizeof(*seen));
    assert_non_null(seen);
    for (uint32_t i = 0; i < c->ntouched; i++) {
        assert_true(c->touched[i] < c->n);
        assert_true(c->delta[c->touched[i]] != 0);
        assert_false(seen[c->touched[i]]);
        seen[c->touched[i]] = true;
    }
    free(seen);
}

static void test_init_zeroed(void **state)
{
    struct counts *c = *state;
    assert_int_equal(c->n, N);
    assert_int_equal(c->ntouched, 0);
    for (uint32_t id = 0; id < N; id++)
        assert_int_equal(c->delta[id], 0);

    struct counts empty;
    assert_true(counts_init(&empty, 0));
    assert_int_equal(empty.n, 0);
    assert_int_equal(empty.ntouched, 0);
    counts_free(&empty);
    assert_null(empty.delta);
    assert_null(empty.touched);
}

static void test_same_id_adds_up(void **state)
{
    struct counts *c = *state;
    counts_add(c, 7, 1);
    counts_add(c, 3, 5);
    counts_add(c, 7, 1);
    counts_add(c, 7, 40);
    assert_int_equal(c->ntouched, 2);
    assert_int_equal(c->touched[0], 7); /* first-touch order */
    assert_int_equal(c->touched[1], 3);
    assert_int_equal(c->delta[7], 42);
    assert_int_equal(c->delta[3], 5);
    check_touched(c);
}

/* A zero delta is not a touch: a batch never writes "+0". */
static void test_zero_delta_ignored(void **state)
{
    struct counts *c = *state;
    counts_add(c, 9, 0);
    assert_int_equal(c->ntouched, 0);
    counts_add(c, 9, 2);
    counts_add(c, 9, 0);
    assert_int_equal(c->ntouched, 1);
    assert_int_equal(c->delta[9], 2);
}

/* Every id, first and last included, many times over. */
static void test_every_id(void **state)
{
    struct counts *c = *state;
    for (int round = 1; round <= 3; round++)
        for (uint32_t id = 0; id < N; id++)
            counts_add(c, N - 1 - id, id + 1);
    assert_int_equal(c->ntouched, N);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(c->touched[i], N - 1 - i);
        assert_int_equal(c->delta[N - 1 - i], 3 * (uint64_t)(i + 1));
    }
    check_touched(c);
}

static void test_merge(void **state)
{
    struct counts *dst = *state;
    struct counts src;
    assert_true(counts_init(&src, N));
    counts_add(dst, 1, 10);
    counts_add(dst, 2, 20);
    counts_add(&src, 2, 2);
    counts_add(&src, 4999, 7);
    counts_add(&src, 0, 1);
    counts_merge(dst, &src);
    assert_int_equal(dst->ntouched, 4);
    assert_int_equal(dst->delta[1], 10);
    assert_int_equal(dst->delta[2], 22);
    assert_int_equal(dst->delta[4999], 7);
    assert_int_equal(dst->delta[0], 1);
    assert_int_equal(dst->touched[2], 4999); /* src's order after dst's own */
    assert_int_equal(dst->touched[3], 0);
    check_touched(dst);
    /* The source is left as it was. */
    assert_int_equal(src.ntouched, 3);
    assert_int_equal(src.delta[2], 2);

    /* Merging an empty table changes nothing. */
    counts_clear(&src);
    counts_merge(dst, &src);
    assert_int_equal(dst->ntouched, 4);
    counts_free(&src);
}

static void test_clear_then_reuse(void **state)
{
    struct counts *c = *state;
    for (uint32_t id = 0; id < 100; id++)
        counts_add(c, id * 37 % N, 7);
    counts_clear(c);
    assert_int_equal(c->ntouched, 0);
    for (uint32_t id = 0; id < N; id++)
        assert_int_equal(c->delta[id], 0);

    counts_add(c, 50 * 37 % N, 1);
    counts_add(c, 1, 2);
    assert_int_equal(c->ntouched, 2);
    assert_int_equal(c->touched[0], 50 * 37 % N);
    assert_int_equal(c->delta[50 * 37 % N], 1);
    check_touched(c);

    for (int round = 0; round < 50; round++) {
        counts_clear(c);
        for (uint32_t i = 0; i < 40; i++)
            counts_add(c, (i * 7 + (uint32_t)round) % 40, 1);
        assert_int_equal(c->ntouched, 40);
        check_touched(c);
    }
    counts_clear(c);
    counts_clear(c);
    assert_int_equal(c->ntouched, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_zeroed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_id_adds_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_delta_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_then_reuse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
