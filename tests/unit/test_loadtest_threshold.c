/* --threshold: a table of expressions that must parse (and what they mean),
 * one of those that must not, and the verdicts on a measured run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "loadthreshold.h"
#include "util.h"

static void test_parse_good(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        enum loadthreshold_metric metric;
        double percentile;
        bool less, or_equal;
        double value;
    } good[] = {
        {"p99<5ms", LOADTHRESHOLD_PERCENTILE, 99, true, false, 5000},
        {"p50<=250us", LOADTHRESHOLD_PERCENTILE, 50, true, true, 250},
        {"p75<1s", LOADTHRESHOLD_PERCENTILE, 75, true, false, 1e6},
        {"p90>1ms", LOADTHRESHOLD_PERCENTILE, 90, false, false, 1000},
        {"p95>=1.5ms", LOADTHRESHOLD_PERCENTILE, 95, false, true, 1500},
        {"p999<60s", LOADTHRESHOLD_PERCENTILE, 99.9, true, false, 60e6},
        {"max<2s", LOADTHRESHOLD_MAX_LATENCY, 0, true, false, 2e6},
        {"mean<1ms", LOADTHRESHOLD_MEAN, 0, true, false, 1000},
        {"errors<0.1%", LOADTHRESHOLD_ERRORS, 0, true, false, 0.1},
        {"errors<=0%", LOADTHRESHOLD_ERRORS, 0, true, true, 0},
        {"acknowledged>99.9%", LOADTHRESHOLD_ACKED, 0, false, false, 99.9},
        {"acknowledged>=100%", LOADTHRESHOLD_ACKED, 0, false, true, 100},
        {"errors<.5%", LOADTHRESHOLD_ERRORS, 0, true, false, 0.5},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(good); i++) {
        struct loadthreshold t;
        char err[200] = "";
        if (!loadthreshold_parse(good[i].in, &t, err, sizeof(err)))
            fail_msg("%s: %s", good[i].in, err);
        assert_int_equal(t.metric, good[i].metric);
        assert_true(t.percentile == good[i].percentile);
        assert_int_equal(t.less, good[i].less);
        assert_int_equal(t.or_equal, good[i].or_equal);
        assert_true(t.value == good[i].value);
        assert_string_equal(t.text, good[i].in);
    }
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "p99", "p99<", "p99<5", "p99<5x", "p98<5ms", "P99<5ms", " p99<5ms", "p99 <5ms",
        "p99<5ms ", "p99<<5ms", "p99=5ms", "p99=<5ms", "p99<-1ms", "p99<61s", "p99<5%",
        "errors<5", "errors<5ms", "errors<101%", "errors<-1%", "errors<1.%", "errors<%",
        "errors<1..2%", "errors<1e2%", "acknowledged>99.9", "ack>99%", "latency<5ms",
        "errors<0x1%", "p99<5ms<6ms",
        "p99<1000000000000000000000000000000000000000000000000000000000000000ms",
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        struct loadthreshold t = {.value = 42};
        char err[200] = "";
        if (loadthreshold_parse(bad[i], &t, err, sizeof(err)))
            fail_msg("'%s' parsed", bad[i]);
        assert_true(strlen(err) > 0);        /* a reason for the one error line */
        assert_null(strstr(err, "\n"));
        assert_true(t.value == 42);          /* untouched on failure */
    }
    struct loadthreshold t;
    char err[200];
    assert_false(loadthreshold_parse(NULL, &t, err, sizeof(err)));
}

static struct loadthreshold parsed(const char *s)
{
    struct loadthreshold t;
    char err[200];
    assert_true(loadthreshold_parse(s, &t, err, sizeof(err)));
    return t;
}

static void test_eval(void **state)
{
    (void)state;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, LOADHIST_DIGITS));
    for (uint64_t v = 1; v <= 1000; v++)
        loadhist_record(&h, v * 10); /* 10 us .. 10 ms, p99 ~ 9.9 ms */
    struct loadthreshold_input in = {.latency = &h, .due = 1000, .acked = 999, .errors = 1};
    static const struct {
        const char *t;
        bool held;
    } cases[] = {
        {"p99<10ms", true},   {"p99<9ms", false},     {"p50<=5.01ms", true}, {"p50<4.9ms", false},  {"p50>6ms", false},
        {"max<=10ms", true},  {"max<10ms", false},    {"mean<6ms", true},  {"mean>6ms", false},
        {"errors<0.2%", true}, {"errors<0.1%", false}, {"errors<=0.1%", true},
        {"acknowledged>=99.9%", true}, {"acknowledged>99.9%", false},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        struct loadthreshold t = parsed(cases[i].t);
        double actual = -1;
        bool measured = false;
        bool held = loadthreshold_eval(&t, &in, &actual, &measured);
        if (held != cases[i].held)
            fail_msg("%s: %s (measured %g)", cases[i].t, held ? "held" : "did not hold", actual);
        assert_true(measured);
    }
    /* nothing to judge by: never held, whatever the comparison */
    struct loadhist empty;
    assert_true(loadhist_init(&empty, LOADHIST_HIGHEST_US, LOADHIST_DIGITS));
    struct loadthreshold_input none = {.latency = &empty, .due = 0};
    static const char *const vacuous[] = {"p99<10s", "max>=0us", "errors<=100%",
                                          "acknowledged>=0%"};
    for (size_t i = 0; i < LT_ARRAY_LEN(vacuous); i++) {
        struct loadthreshold t = parsed(vacuous[i]);
        double actual;
        bool measured = true;
        assert_false(loadthreshold_eval(&t, &none, &actual, &measured));
        assert_false(measured);
    }
    char buf[32];
    struct loadthreshold t = parsed("p99<5ms");
    loadthreshold_format(&t, 3210, buf, sizeof(buf));
    assert_string_equal(buf, "3.21ms");
    loadthreshold_format(&t, 250, buf, sizeof(buf));
    assert_string_equal(buf, "250us");
    t = parsed("errors<1%");
    loadthreshold_format(&t, 99.95, buf, sizeof(buf));
    assert_string_equal(buf, "99.95%");
    loadhist_free(&h);
    loadhist_free(&empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
