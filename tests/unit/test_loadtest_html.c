/* The HTML report (loadhtml.h) from a hand-made run: three plots, one
 * point per second in each line, bars adding up to the replies, the
 * summary's figures, and every text from outside (target, error codes)
 * escaped, never markup. The same file in a real browser:
 * tests/integration/test_loadtest_report.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loadhtml.h"

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static char *render(const struct loadreport *rep)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_true(loadhtml_fprint(f, rep));
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_report(void **state)
{
    (void)state;
    struct loadengine_result r;
    memset(&r, 0, sizeof(r));
    assert_true(loadhist_init(&r.latency, 60000000, 3));
    for (uint64_t us = 50; us < 20000; us += 7)
        loadhist_record(&r.latency, us);
    r.sent = r.completed = 3000;
    r.acked = 2990;
    r.errors = 10;
    loadengine_errs_add(&r.errs, 409, "<b>question_not_open</b>", 10);
    struct loadreport_second series[5];
    for (uint32_t i = 0; i < 5; i++)
        series[i] = (struct loadreport_second){.t = i + 1, .sent = 600, .acked = 598,
                                               .errors = 2, .replies = 600, .p50_us = 100,
                                               .p90_us = 300, .p99_us = 900, .p999_us = 2000};
    struct loadreport rep = {.mode = "steady",
                             .target = "http://127.0.0.1:1/<script>alert(1)</script>",
                             .elapsed_s = 5.0,
                             .r = &r,
                             .series = series,
                             .n_series = 5};
    snprintf(rep.shape, sizeof(rep.shape), "steady 600/s for 5s");
    char *html = render(&rep);
    assert_int_equal(strncmp(html, "<!DOCTYPE html>", 15), 0);
    assert_int_equal(count(html, "<svg"), 3);
    assert_int_equal(count(html, "</svg>"), 3);
    assert_int_equal(count(html, "<polyline"), 6);
    assert_true(count(html, "class=\"bar\"") > 5);
    /* nothing from elsewhere, nothing run */
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, " src="));
    assert_null(strstr(html, "<link"));
    assert_non_null(strstr(html, "http://127.0.0.1:1/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_non_null(strstr(html, "&lt;b&gt;question_not_open&lt;/b&gt;"));
    assert_non_null(strstr(html, "<th>acknowledged (202)</th><td>2990</td>"));
    /* one point per second: 5 pairs in each polyline */
    const char *p = strstr(html, "points=\"");
    assert_non_null(p);
    const char *end = strchr(p + 8, '"');
    size_t commas = 0;
    for (const char *q = p + 8; q < end; q++)
        commas += *q == ',';
    assert_int_equal(commas, 5);
    /* the bars' counts add up to the replies */
    uint64_t sum = 0;
    for (const char *q = html; (q = strstr(q, "class=\"bar\"")) != NULL; q++) {
        const char *t = strstr(q, " ms: ");
        assert_non_null(t);
        sum += strtoull(t + 5, NULL, 10);
    }
    assert_int_equal(sum, r.latency.total);
    free(html);

    /* a run with no second and no reply still makes a document */
    struct loadengine_result empty;
    memset(&empty, 0, sizeof(empty));
    assert_true(loadhist_init(&empty.latency, 60000000, 3));
    struct loadreport none = {.mode = "steady", .target = "http://127.0.0.1:1", .r = &empty};
    html = render(&none);
    assert_int_equal(count(html, "<svg"), 3);
    assert_int_equal(count(html, "class=\"bar\""), 0);
    assert_non_null(strstr(html, "</html>"));
    free(html);
    loadhist_free(&empty.latency);
    loadhist_free(&r.latency);
}

static void test_write_errors(void **state)
{
    (void)state;
    struct loadengine_result r;
    memset(&r, 0, sizeof(r));
    assert_true(loadhist_init(&r.latency, 60000000, 3));
    struct loadreport rep = {.mode = "steady", .target = "t", .r = &r};
    char err[256];
    assert_false(loadhtml_write("/nonexistent-dir/r.html", &rep, err, sizeof(err)));
    assert_non_null(strstr(err, "--report /nonexistent-dir/r.html"));
    char path[] = "/tmp/lt-html-XXXXXX";
    assert_non_null(mkdtemp(path));
    char file[64];
    snprintf(file, sizeof(file), "%s/r.html", path);
    assert_true(loadhtml_write(file, &rep, err, sizeof(err)));
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    char head[16] = {0};
    assert_int_equal(fread(head, 1, 15, f), 15);
    fclose(f);
    assert_string_equal(head, "<!DOCTYPE html>");
    remove(file);
    remove(path);
    loadhist_free(&r.latency);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
