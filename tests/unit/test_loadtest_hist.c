/* The latency histogram: layout, percentiles within 0.1 % on known
 * distributions, merge, clamping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loadhist.h"
#include "util.h"

static void assert_within(uint64_t got, double want, double rel)
{
    double err = fabs((double)got - want);
    if (err > want * rel + 1e-9) {
        print_error("got %llu, want %.3f (+-%.4f%%)\n", (unsigned long long)got, want, rel * 100);
        fail();
    }
}

static void test_layout(void **state)
{
    (void)state;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, 3));
    /* 1 us .. 60 s at 3 digits: 16 ranges of 1024 plus the first half. */
    assert_int_equal(h.counts_len, 17408);
    /* exact below 2048 */
    for (uint64_t v = 0; v < 2048; v++) {
        uint32_t i = loadhist_index(&h, v);
        assert_int_equal(loadhist_lowest_at(&h, i), v);
        assert_int_equal(loadhist_highest_at(&h, i), v);
    }
    /* every value lies in its bucket, and the bucket is at most 1/1024 of it wide */
    struct util_rng rng;
    util_rng_seed(&rng, 42);
    uint32_t prev_index = 0;
    for (uint64_t v = 2048; v <= LOADHIST_HIGHEST_US; v += 1 + v / 1500) {
        uint32_t i = loadhist_index(&h, v);
        assert_true(i >= prev_index); /* monotonic */
        prev_index = i;
        assert_true(i < h.counts_len);
        uint64_t lo = loadhist_lowest_at(&h, i);
        uint64_t hi = loadhist_highest_at(&h, i);
        assert_true(lo <= v && v <= hi);
        assert_true((double)(hi - lo + 1) <= (double)v / 1024.0 + 1e-9);
    }
    loadhist_free(&h);

    assert_false(loadhist_init(&h, 1, 3));
    assert_false(loadhist_init(&h, 1000, 0));
    assert_false(loadhist_init(&h, 1000, 6));
}

/* Uniform 1..N, each once: the p-th percentile is p/100 * N. */
static void test_uniform_percentiles(void **state)
{
    (void)state;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, 3));
    const uint64_t n = 1000000;
    for (uint64_t v = 1; v <= n; v++)
        loadhist_record(&h, v);
    assert_int_equal(h.total, n);
    const double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99};
    for (size_t i = 0; i < LT_ARRAY_LEN(ps); i++)
        assert_within(loadhist_percentile(&h, ps[i]), ps[i] / 100.0 * (double)n, 0.001);
    assert_int_equal(loadhist_percentile(&h, 100), n); /* the exact max */
    assert_int_equal(h.min, 1);
    assert_true(fabs(loadhist_mean(&h) - 500000.5) < 1e-6);
    loadhist_free(&h);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Exponential latencies (mean 2 ms) plus a heavy tail: compare with the
 * exact percentiles of the sorted samples. */
static void test_exponential_against_sorted(void **state)
{
    (void)state;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, 3));
    const size_t n = 200000;
    uint64_t *v = malloc(n * sizeof(*v));
    assert_non_null(v);
    struct util_rng rng;
    util_rng_seed(&rng, 7);
    for (size_t i = 0; i < n; i++) {
        double u = ((double)(util_rng_next(&rng) >> 11) + 0.5) / 9007199254740992.0;
        double x = -log(u) * 2000.0;
        if (i % 1000 == 0)
            x *= 500; /* a tail of slow requests, up to seconds */
        v[i] = (uint64_t)x + 1;
        loadhist_record(&h, v[i]);
    }
    qsort(v, n, sizeof(*v), cmp_u64);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < LT_ARRAY_LEN(ps); i++) {
        size_t rank = (size_t)(ps[i] / 100.0 * (double)n + 0.5);
        uint64_t exact = v[rank - 1];
        assert_within(loadhist_percentile(&h, ps[i]), (double)exact, 0.001);
        assert_true(loadhist_percentile(&h, ps[i]) >= exact); /* never below */
    }
    assert_int_equal(loadhist_percentile(&h, 100), v[n - 1]);
    free(v);
    loadhist_free(&h);
}

static void test_merge_equals_single(void **state)
{
    (void)state;
    struct loadhist a, b, all;
    assert_true(loadhist_init(&a, LOADHIST_HIGHEST_US, 3));
    assert_true(loadhist_init(&b, LOADHIST_HIGHEST_US, 3));
    assert_true(loadhist_init(&all, LOADHIST_HIGHEST_US, 3));
    for (uint64_t v = 1; v < 300000; v += 7) {
        loadhist_record(v % 2 ? &a : &b, v);
        loadhist_record(&all, v);
    }
    assert_true(loadhist_merge(&a, &b));
    assert_int_equal(a.total, all.total);
    assert_int_equal(a.min, all.min);
    assert_int_equal(a.max, all.max);
    assert_memory_equal(a.counts, all.counts, all.counts_len * sizeof(uint64_t));
    assert_int_equal(loadhist_percentile(&a, 99), loadhist_percentile(&all, 99));

    /* different layouts do not merge */
    struct loadhist other;
    assert_true(loadhist_init(&other, 1000, 2));
    assert_false(loadhist_merge(&a, &other));
    loadhist_free(&other);

    loadhist_reset(&a);
    assert_int_equal(a.total, 0);
    assert_int_equal(loadhist_percentile(&a, 50), 0);
    loadhist_free(&a);
    loadhist_free(&b);
    loadhist_free(&all);
}

static void test_clamp_and_edges(void **state)
{
    (void)state;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, 3));
    assert_int_equal(loadhist_percentile(&h, 99), 0); /* empty */
    loadhist_record(&h, 0);
    loadhist_record(&h, 120000000); /* two minutes: above the range */
    assert_int_equal(h.clamped, 1);
    assert_int_equal(h.max, 120000000);
    assert_int_equal(loadhist_percentile(&h, 50), 0);
    /* the clamped value reports at most the top of the range, never more than max */
    uint64_t top = loadhist_percentile(&h, 100);
    assert_true(top >= LOADHIST_HIGHEST_US && top <= 120000000);
    loadhist_record_n(&h, 5, 1000);
    assert_int_equal(h.total, 1002);
    assert_int_equal(loadhist_percentile(&h, 50), 5);
    /* out-of-range percentiles are clamped */
    assert_int_equal(loadhist_percentile(&h, -3), 0);
    loadhist_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_uniform_percentiles),
        cmocka_unit_test(test_exponential_against_sorted),
        cmocka_unit_test(test_merge_equals_single),
        cmocka_unit_test(test_clamp_and_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
