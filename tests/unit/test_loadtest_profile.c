/* Arrival curves: the count in every window matches the curve's integral
 * (+-1), bursts have their shape, bounds end the schedule, bad settings are
 * refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loadprofile.h"
#include "util.h"

#define S 1000000ull

/* Counts arrivals per window of width w_us, over [0, horizon_us). */
static uint64_t *count_windows(const struct loadprofile *p, uint64_t w_us, uint64_t horizon_us,
                               size_t *nwin, uint64_t *total)
{
    *nwin = (size_t)((horizon_us + w_us - 1) / w_us);
    uint64_t *c = calloc(*nwin, sizeof(*c));
    assert_non_null(c);
    struct loadprofile_arrival a;
    uint64_t prev = 0;
    *total = 0;
    for (uint64_t m = 0; loadprofile_arrival(p, m, &a); m++) {
        assert_true(a.t_us >= prev); /* non-decreasing */
        prev = a.t_us;
        if (a.t_us < horizon_us)
            c[a.t_us / w_us]++;
        (*total)++;
    }
    return c;
}

/* The integral of the rate over [t0, t1), numerically (midpoint rule). */
static double integral(const struct loadprofile *p, double t0, double t1)
{
    const int steps = 2000;
    double h = (t1 - t0) / steps;
    double sum = 0;
    for (int i = 0; i < steps; i++)
        sum += loadprofile_rate_at(p, t0 + (i + 0.5) * h);
    return sum * h / 1e6;
}

static void test_steady_counts(void **state)
{
    (void)state;
    struct loadprofile p;
    char err[128];
    struct loadprofile_params pp = {.kind = LOADPROFILE_STEADY, .rate = 1000, .duration_us = 10 * S,
                                    .speedup = 1};
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    size_t nwin;
    uint64_t total;
    uint64_t *c = count_windows(&p, S / 10, 10 * S, &nwin, &total);
    assert_int_equal(total, 10000);
    for (size_t i = 0; i < nwin; i++)
        assert_true(c[i] >= 99 && c[i] <= 101); /* 100 per 100 ms, +-1 */
    free(c);
    assert_true(fabs(loadprofile_end_us(&p) - 10e6) < 1);

    /* --requests ends it first */
    pp.requests = 2500;
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    c = count_windows(&p, S, 10 * S, &nwin, &total);
    assert_int_equal(total, 2500);
    assert_int_equal(c[0], 1000);
    assert_int_equal(c[2], 500);
    free(c);
    assert_true(loadprofile_end_us(&p) < 2.5e6 + 1);

    /* a fractional rate */
    pp = (struct loadprofile_params){.kind = LOADPROFILE_STEADY, .rate = 2.5, .duration_us = 4 * S,
                                     .speedup = 1};
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    c = count_windows(&p, 2 * S, 4 * S, &nwin, &total);
    assert_int_equal(total, 10);
    assert_int_equal(c[0], 5);
    free(c);
}

static void test_burst_shape(void **state)
{
    (void)state;
    struct loadprofile p;
    char err[128];
    /* 60 s window every 600 s at a peak of 2000/s, three bursts */
    struct loadprofile_params pp = {.kind = LOADPROFILE_BURST, .rate = 2000,
                                    .duration_us = 1800 * S, .period_us = 600 * S,
                                    .window_us = 60 * S, .speedup = 1};
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_true(fabs(p.ramp_us - 2e6) < 1);
    /* area: ramp/2 + tau (1 - e^-3), tau = 58/3 s */
    double area = 1.0 + (58.0 / 3.0) * (1 - exp(-3.0));
    assert_true(fabs(p.area_s - area) < 1e-9);
    assert_int_equal(p.per_burst, (uint64_t)floor(2000 * area + 0.5));

    size_t nwin;
    uint64_t total;
    uint64_t *c = count_windows(&p, S, 1800 * S, &nwin, &total);
    assert_int_equal(total, 3 * p.per_burst);
    for (size_t i = 0; i < nwin; i++) {
        double want = integral(&p, (double)i * 1e6, (double)(i + 1) * 1e6);
        if (fabs((double)c[i] - want) > 1.0 + want * 1e-3) {
            print_error("window %zu: %llu arrivals, curve says %.2f\n", i,
                        (unsigned long long)c[i], want);
            fail();
        }
    }
    /* the peak is right after the ramp, the tail is ~5 % of it, idle after */
    assert_true(c[2] > 1900 && c[2] <= 2000);
    assert_true(c[1] > 1000 && c[1] < 2000);
    assert_true(c[59] > 80 && c[59] < 130);
    for (size_t i = 60; i < 600; i++)
        assert_int_equal(c[i], 0);
    /* the second burst is the first one again */
    for (size_t i = 0; i < 60; i++)
        assert_true(llabs((long long)c[600 + i] - (long long)c[i]) <= 1);
    free(c);

    /* burst index and position within it */
    struct loadprofile_arrival a;
    assert_true(loadprofile_arrival(&p, p.per_burst, &a));
    assert_int_equal(a.burst, 1);
    assert_int_equal(a.k, 0);
    assert_true(a.t_us >= 600 * S && a.t_us < 601 * S);
}

static void test_concert_speedup(void **state)
{
    (void)state;
    struct loadprofile p;
    char err[128];
    /* 3 questions, 600 s / 60 s compressed 60x: 10 s periods, 1 s windows */
    struct loadprofile_params pp = {.kind = LOADPROFILE_CONCERT, .rate = 3000,
                                    .period_us = 600 * S, .window_us = 60 * S, .speedup = 60,
                                    .bursts = 3};
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_true(fabs(p.period_us - 10e6) < 1);
    assert_true(fabs(p.window_us - 1e6) < 1);
    assert_true(fabs(p.lead_us - 1e6) < 1); /* 1 s: every ingest node sees the open */
    size_t nwin;
    uint64_t total;
    uint64_t *c = count_windows(&p, S / 10, 40 * S, &nwin, &total);
    assert_int_equal(total, 3 * p.per_burst);
    for (size_t i = 0; i < nwin; i++) {
        double want = integral(&p, (double)i * 1e5, (double)(i + 1) * 1e5);
        assert_true(fabs((double)c[i] - want) <= 1.0 + want * 1e-3);
    }
    free(c);
    /* every answer of question b falls in its window */
    struct loadprofile_arrival a;
    for (uint64_t m = 0; loadprofile_arrival(&p, m, &a); m++) {
        assert_true(a.burst < 3);
        assert_true((double)a.t_us >= loadprofile_burst_start_us(&p, a.burst) - 1);
        assert_true((double)a.t_us <= loadprofile_burst_end_us(&p, a.burst));
    }
    assert_false(loadprofile_arrival(&p, 3 * p.per_burst, &a));
    assert_true(fabs(loadprofile_end_us(&p) - (1e6 + 20e6 + 1e6)) < 1);
    /* a short idle time bounds the lead to half of it */
    pp.period_us = 2 * S;
    pp.window_us = S;
    pp.speedup = 1;
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_true(fabs(p.lead_us - 0.5e6) < 1);
}

static void test_bad_settings(void **state)
{
    (void)state;
    struct loadprofile p;
    char err[160];
    struct loadprofile_params steady = {.kind = LOADPROFILE_STEADY, .rate = 10, .speedup = 1};
    assert_false(loadprofile_init(&p, &steady, err, sizeof(err))); /* unbounded */
    assert_non_null(strstr(err, "--duration"));
    steady.duration_us = S;
    steady.rate = 0;
    assert_false(loadprofile_init(&p, &steady, err, sizeof(err)));
    steady.rate = NAN;
    assert_false(loadprofile_init(&p, &steady, err, sizeof(err)));

    struct loadprofile_params burst = {.kind = LOADPROFILE_BURST, .rate = 10, .duration_us = S,
                                       .period_us = S, .window_us = 2 * S, .speedup = 1};
    assert_false(loadprofile_init(&p, &burst, err, sizeof(err))); /* window > period */
    burst.window_us = S;
    burst.rate = 0.01; /* not one answer per burst */
    assert_false(loadprofile_init(&p, &burst, err, sizeof(err)));
    assert_non_null(strstr(err, "too low"));
    burst.rate = 10;
    burst.speedup = 0.5;
    assert_false(loadprofile_init(&p, &burst, err, sizeof(err)));
    burst.speedup = 1000; /* 1 ms windows */
    assert_false(loadprofile_init(&p, &burst, err, sizeof(err)));

    struct loadprofile_params concert = {.kind = LOADPROFILE_CONCERT, .rate = 10,
                                         .period_us = S, .window_us = S, .speedup = 1};
    assert_false(loadprofile_init(&p, &concert, err, sizeof(err))); /* no question */
    concert.bursts = 1;
    assert_true(loadprofile_init(&p, &concert, err, sizeof(err)));
    assert_true(p.lead_us == 0); /* no idle time: no lead */
}

/* Threads take m = i, i + T, ...: together they are the one schedule. */
static void test_thread_split_is_the_schedule(void **state)
{
    (void)state;
    struct loadprofile p;
    char err[128];
    struct loadprofile_params pp = {.kind = LOADPROFILE_BURST, .rate = 500, .requests = 1234,
                                    .period_us = 5 * S, .window_us = 2 * S, .speedup = 1};
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    const uint32_t T = 3;
    uint64_t seen = 0;
    for (uint32_t t = 0; t < T; t++) {
        struct loadprofile_arrival a;
        for (uint64_t m = t; loadprofile_arrival(&p, m, &a); m += T)
            seen++;
    }
    assert_int_equal(seen, 1234);
}

static void test_stages_parse(void **state)
{
    (void)state;
    struct loadprofile_stage st[LOADPROFILE_STAGES_MAX];
    uint32_t n = 0;
    char err[200];
    assert_true(loadprofile_parse_stages("10s:1k,30s:20k,1m:20k,10s:0", st, &n, err, sizeof(err)));
    assert_int_equal(n, 4);
    assert_int_equal(st[0].duration_us, 10000000);
    assert_true(st[0].rate == 1000);
    assert_true(st[1].rate == 20000);
    assert_int_equal(st[2].duration_us, 60000000);
    assert_true(st[3].rate == 0);
    assert_true(loadprofile_parse_stages("500ms:2.5k/s", st, &n, err, sizeof(err)));
    assert_int_equal(n, 1);
    assert_int_equal(st[0].duration_us, 500000);
    static const char *const bad[] = {
        "", ",", "10s", "10s:", ":1k", "10s:1k,", ",10s:1k", "10s:1k,,5s:0", "0s:1k",
        "10s:-1", "10s:1k:2k", "10x:1k", "10s:1kk", "25h:1k", "10s:20M",
        /* 33 stages */
        ("1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,"
         "1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1,1s:1"),
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        if (loadprofile_parse_stages(bad[i], st, &n, err, sizeof(err)))
            fail_msg("'%s' parsed", bad[i]);
        assert_true(strlen(err) > 0);
    }
}

static void test_stages_schedule(void **state)
{
    (void)state;
    struct loadprofile_params pp = {.kind = LOADPROFILE_STEADY, .rate = 1, .speedup = 1};
    char err[200];
    /* ramp to 1000/s over 2 s (1000), hold 3 s (3000), down to 0 over 1 s (500) */
    assert_true(loadprofile_parse_stages("2s:1k,3s:1k,1s:0", pp.stages, &pp.n_stages, err,
                                         sizeof(err)));
    struct loadprofile p;
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_int_equal(p.p.requests, 4500);
    assert_int_equal(p.p.duration_us, 6000000);
    uint64_t per_s[6] = {0}, n = 0, prev = 0;
    struct loadprofile_arrival a;
    for (uint64_t m = 0; loadprofile_arrival(&p, m, &a); m++) {
        assert_true(a.t_us >= prev); /* in order */
        prev = a.t_us;
        assert_true(a.t_us < 6000000);
        per_s[a.t_us / 1000000]++;
        n++;
    }
    assert_int_equal(n, 4500);
    /* each second gets the curve's integral over it, +- 1 */
    static const uint64_t want[6] = {250, 750, 1000, 1000, 1000, 500};
    for (int i = 0; i < 6; i++)
        if (llabs((long long)per_s[i] - (long long)want[i]) > 1)
            fail_msg("second %d: %llu arrivals, want %llu", i, (unsigned long long)per_s[i],
                     (unsigned long long)want[i]);
    assert_true(fabs(loadprofile_rate_at(&p, 1e6) - 500) < 1e-6);
    assert_true(fabs(loadprofile_rate_at(&p, 3e6) - 1000) < 1e-6);
    assert_true(fabs(loadprofile_rate_at(&p, 5.5e6) - 500) < 1e-6);
    assert_true(loadprofile_rate_at(&p, 6e6) == 0);
    assert_true(loadprofile_end_us(&p) <= 6e6);
    /* --requests still bounds it */
    pp.requests = 100;
    assert_true(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_int_equal(p.p.requests, 100);
    /* stages that come to no request */
    assert_true(loadprofile_parse_stages("1s:0,1s:0", pp.stages, &pp.n_stages, err, sizeof(err)));
    assert_false(loadprofile_init(&p, &pp, err, sizeof(err)));
    assert_non_null(strstr(err, "--stages"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_counts),
        cmocka_unit_test(test_burst_shape),
        cmocka_unit_test(test_concert_speedup),
        cmocka_unit_test(test_bad_settings),
        cmocka_unit_test(test_thread_split_is_the_schedule),
        cmocka_unit_test(test_stages_parse),
        cmocka_unit_test(test_stages_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
