#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"
#include "util.h"

#define TEST_METRICS(X)                                                                            \
    X(TM_REQUESTS, "lt_test_requests_total", COUNTER, "Requests by code")                         \
    X(TM_AGE, "lt_test_age_seconds", GAUGE, "Age with a \\ backslash\nand a newline")             \
    X(TM_LATENCY, "lt_test_latency_seconds", HISTOGRAM, "Latency")

enum test_metric { TEST_METRICS(METRIC_ENUM) TM_COUNT };
static const struct metric_def test_defs[] = {TEST_METRICS(METRIC_DEF)};

/* The evbuffer's text, NUL-terminated, malloc'd. */
static char *text_of(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_xmacro_table(void **state)
{
    (void)state;
    assert_int_equal(TM_COUNT, 3);
    assert_int_equal(LT_ARRAY_LEN(test_defs), TM_COUNT);
    assert_string_equal(test_defs[TM_REQUESTS].name, "lt_test_requests_total");
    assert_int_equal(test_defs[TM_REQUESTS].type, METRIC_COUNTER);
    assert_int_equal(test_defs[TM_AGE].type, METRIC_GAUGE);
    assert_int_equal(test_defs[TM_LATENCY].type, METRIC_HISTOGRAM);
    assert_string_equal(metrics_type_name(METRIC_COUNTER), "counter");
    assert_string_equal(metrics_type_name(METRIC_GAUGE), "gauge");
    assert_string_equal(metrics_type_name(METRIC_HISTOGRAM), "histogram");
}

static void test_describe(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    metrics_describe(f, test_defs, 1);
    metrics_describe(f, &test_defs[TM_LATENCY], 1);
    fclose(f);
    assert_string_equal(buf, "lt_test_requests_total\tcounter\tRequests by code\n"
                             "lt_test_latency_seconds\thistogram\tLatency\n");
    free(buf);
}

static void test_hist_buckets(void **state)
{
    (void)state;
    struct metrics_hist h = {0};
    /* Bounds are inclusive upper bounds (Prometheus "le"). */
    metrics_hist_add(&h, 0);        /* bucket 0 (<= 10 us) */
    metrics_hist_add(&h, 10);       /* bucket 0 */
    metrics_hist_add(&h, 11);       /* bucket 1 (<= 25 us) */
    metrics_hist_add(&h, 1000);     /* <= 1 ms: index 6 */
    metrics_hist_add(&h, 10000000); /* <= 10 s: last bound */
    metrics_hist_add(&h, 10000001); /* +Inf */
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[6], 1);
    assert_int_equal(h.counts[METRICS_HIST_BOUNDS - 1], 1);
    assert_int_equal(h.counts[METRICS_HIST_BOUNDS], 1);
    assert_int_equal(h.count, 6);
    assert_int_equal(h.sum_us, 0 + 10 + 11 + 1000 + 10000000 + 10000001);
    assert_int_equal(metrics_hist_bound_us(0), 10);
    assert_int_equal(metrics_hist_bound_us(6), 1000);
    assert_int_equal(metrics_hist_bound_us(METRICS_HIST_BOUNDS - 1), 10000000);
    assert_true(metrics_hist_bound_us(METRICS_HIST_BOUNDS) == UINT64_MAX);
    /* Strictly increasing bounds. */
    for (size_t i = 1; i < METRICS_HIST_BOUNDS; i++)
        assert_true(metrics_hist_bound_us(i) > metrics_hist_bound_us(i - 1));
}

static void test_hist_sum_saturates(void **state)
{
    (void)state;
    struct metrics_hist h = {0};
    metrics_hist_add(&h, UINT64_MAX - 5);
    metrics_hist_add(&h, 10);
    assert_true(h.sum_us == UINT64_MAX); /* pinned: saturates, never wraps */
    assert_int_equal(h.count, 2);
    struct metrics_hist g = {0};
    metrics_hist_add(&g, 7);
    metrics_hist_merge(&g, &h);
    assert_true(g.sum_us == UINT64_MAX);
    assert_int_equal(g.count, 3);
}

static void test_hist_merge_and_quantile(void **state)
{
    (void)state;
    struct metrics_hist a = {0}, b = {0}, empty = {0};
    assert_int_equal(metrics_hist_quantile_us(&empty, 0.99), 0);
    for (int i = 0; i < 90; i++)
        metrics_hist_add(&a, 80); /* <= 100 us */
    for (int i = 0; i < 9; i++)
        metrics_hist_add(&b, 3000); /* <= 5 ms */
    metrics_hist_add(&b, 20000000); /* +Inf */
    metrics_hist_merge(&a, &b);
    assert_int_equal(a.count, 100);
    assert_int_equal(a.counts[3], 90);
    assert_int_equal(a.counts[8], 9);
    assert_int_equal(a.counts[METRICS_HIST_BOUNDS], 1);
    assert_int_equal(metrics_hist_quantile_us(&a, 0.5), 100);
    assert_int_equal(metrics_hist_quantile_us(&a, 0.9), 100);
    assert_int_equal(metrics_hist_quantile_us(&a, 0.91), 5000);
    assert_int_equal(metrics_hist_quantile_us(&a, 0.99), 5000);
    assert_true(metrics_hist_quantile_us(&a, 1.0) == UINT64_MAX);
    assert_int_equal(metrics_hist_quantile_us(&a, 0.0), 100);
}

static void test_write_head_escapes_help(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    metrics_write_head(b, &test_defs[TM_AGE]);
    char *s = text_of(b);
    assert_string_equal(s, "# HELP lt_test_age_seconds Age with a \\\\ backslash\\nand a newline\n"
                           "# TYPE lt_test_age_seconds gauge\n");
    free(s);
    evbuffer_free(b);
}

static void test_write_samples(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    metrics_emit_u64(b, &test_defs[TM_REQUESTS], UINT64_MAX);
    metrics_write_u64(b, &test_defs[TM_REQUESTS], "code=\"200\"", 7);
    metrics_write_u64(b, &test_defs[TM_REQUESTS], "", 8);
    metrics_write_f64(b, &test_defs[TM_AGE], NULL, 0.001678);
    metrics_write_f64(b, &test_defs[TM_AGE], NULL, -1);
    metrics_write_f64(b, &test_defs[TM_AGE], NULL, 0.1 + 0.2); /* needs 17 digits */
    metrics_write_f64(b, &test_defs[TM_AGE], NULL, INFINITY);
    metrics_write_f64(b, &test_defs[TM_AGE], NULL, -INFINITY);
    metrics_write_f64(b, &test_defs[TM_AGE], "a=\"b\"", NAN);
    char *s = text_of(b);
    assert_string_equal(s, "# HELP lt_test_requests_total Requests by code\n"
                           "# TYPE lt_test_requests_total counter\n"
                           "lt_test_requests_total 18446744073709551615\n"
                           "lt_test_requests_total{code=\"200\"} 7\n"
                           "lt_test_requests_total 8\n"
                           "lt_test_age_seconds 0.001678\n"
                           "lt_test_age_seconds -1\n"
                           "lt_test_age_seconds 0.30000000000000004\n"
                           "lt_test_age_seconds +Inf\n"
                           "lt_test_age_seconds -Inf\n"
                           "lt_test_age_seconds{a=\"b\"} NaN\n");
    free(s);
    evbuffer_free(b);
}

static void test_write_hist(void **state)
{
    (void)state;
    struct metrics_hist h = {0};
    metrics_hist_add(&h, 5);       /* <= 0.00001 s */
    metrics_hist_add(&h, 700);     /* <= 0.001 s */
    metrics_hist_add(&h, 1500000); /* <= 2.5 s */
    metrics_hist_add(&h, 30000000); /* +Inf */
    struct evbuffer *b = evbuffer_new();
    metrics_write_hist(b, &test_defs[TM_LATENCY], "route=\"/x\"", &h);
    char *s = text_of(b);
    const char *want =
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.00001\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.000025\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.00005\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.0001\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.00025\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.0005\"} 1\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.001\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.0025\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.005\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.01\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.025\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.05\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.1\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"2.5\"} 3\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"5\"} 3\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"10\"} 3\n"
        "lt_test_latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
        "lt_test_latency_seconds_sum{route=\"/x\"} 31.500705\n"
        "lt_test_latency_seconds_count{route=\"/x\"} 4\n";
    assert_string_equal(s, want);
    free(s);

    /* Unlabelled, empty: zero buckets, and the le labels match the bounds. */
    evbuffer_drain(b, evbuffer_get_length(b));
    struct metrics_hist empty = {0};
    metrics_emit_hist(b, &test_defs[TM_LATENCY], &empty);
    s = text_of(b);
    assert_non_null(strstr(s, "# TYPE lt_test_latency_seconds histogram\n"));
    assert_non_null(strstr(s, "lt_test_latency_seconds_bucket{le=\"0.00001\"} 0\n"));
    assert_non_null(strstr(s, "lt_test_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(s, "lt_test_latency_seconds_sum 0.000000\n"));
    assert_non_null(strstr(s, "lt_test_latency_seconds_count 0\n"));
    for (size_t i = 0; i < METRICS_HIST_BOUNDS; i++) {
        /* The i-th le label reads back as the i-th bound in seconds. */
        const char *p = s;
        size_t found = 0;
        while ((p = strstr(p, "le=\"")) != NULL) {
            p += 4;
            if (strncmp(p, "+Inf", 4) != 0 && found++ == i) {
                double le = strtod(p, NULL);
                double want_le = (double)metrics_hist_bound_us(i) / 1e6;
                assert_true(le > want_le * 0.999999 && le < want_le * 1.000001);
                break;
            }
        }
        assert_non_null(p);
    }
    free(s);
    evbuffer_free(b);
}

/* The process families: one head and one sample each, the build's
 * version in the labels, figures /proc gives for this very process. */
static void test_process(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    metrics_write_process(b, "test-metrics");
    char *s = text_of(b);
    assert_non_null(strstr(s, "# TYPE livetally_build_info gauge\n"
                              "livetally_build_info{version=\"" LIVETALLY_VERSION
                              "\",binary=\"test-metrics\"} 1\n"));
    static const char *const families[] = {
        "process_cpu_seconds_total",    "process_resident_memory_bytes",
        "process_virtual_memory_bytes", "process_open_fds",
        "process_max_fds",              "process_start_time_seconds"};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        char head[96], line[96];
        snprintf(head, sizeof(head), "# TYPE %s ", families[i]);
        snprintf(line, sizeof(line), "\n%s ", families[i]);
        const char *h = strstr(s, head);
        assert_non_null(h);
        assert_null(strstr(h + 1, head)); /* once */
        const char *v = strstr(s, line);
        assert_non_null(v);
        assert_true(strtod(v + strlen(line), NULL) >= 0);
    }
    double rss = strtod(strstr(s, "\nprocess_resident_memory_bytes ") + 31, NULL);
    assert_true(rss > 100 * 1024);
    double start = strtod(strstr(s, "\nprocess_start_time_seconds ") + 28, NULL);
    double now = (double)util_wall_ms() / 1000.0;
    assert_true(start <= now + 1 && start > now - 3600);
    double fds = strtod(strstr(s, "\nprocess_open_fds ") + 18, NULL);
    assert_true(fds >= 3); /* stdin, stdout, stderr at least */
    free(s);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xmacro_table),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_hist_buckets),
        cmocka_unit_test(test_hist_sum_saturates),
        cmocka_unit_test(test_hist_merge_and_quantile),
        cmocka_unit_test(test_write_head_escapes_help),
        cmocka_unit_test(test_write_samples),
        cmocka_unit_test(test_write_hist),
        cmocka_unit_test(test_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
