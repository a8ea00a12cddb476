#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

/* ---- numbers ---------------------------------------------------------- */

struct u64_case {
    const char *in;
    uint64_t min, max;
    bool ok;
    uint64_t want;
};

static const struct u64_case u64_cases[] = {
    {"0", 0, UINT64_MAX, true, 0},
    {"1", 0, UINT64_MAX, true, 1},
    {"42", 0, 100, true, 42},
    {"007", 0, 100, true, 7},
    {"18446744073709551615", 0, UINT64_MAX, true, UINT64_MAX},
    {"100", 100, 100, true, 100},
    /* must not parse */
    {NULL, 0, UINT64_MAX, false, 0},
    {"", 0, UINT64_MAX, false, 0},
    {" 1", 0, UINT64_MAX, false, 0},
    {"1 ", 0, UINT64_MAX, false, 0},
    {"\t1", 0, UINT64_MAX, false, 0},
    {"1\n", 0, UINT64_MAX, false, 0},
    {"+1", 0, UINT64_MAX, false, 0},
    {"-1", 0, UINT64_MAX, false, 0},
    {"-0", 0, UINT64_MAX, false, 0},
    {"0x10", 0, UINT64_MAX, false, 0},
    {"1a", 0, UINT64_MAX, false, 0},
    {"1.0", 0, UINT64_MAX, false, 0},
    {"1e3", 0, UINT64_MAX, false, 0},
    {"18446744073709551616", 0, UINT64_MAX, false, 0},
    {"99999999999999999999999", 0, UINT64_MAX, false, 0},
    {"101", 0, 100, false, 0},
    {"0", 1, 100, false, 0},
    {"99", 100, 200, false, 0},
};

static void test_parse_u64_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(u64_cases); i++) {
        const struct u64_case *c = &u64_cases[i];
        uint64_t out = 12345;
        bool ok = util_parse_u64(c->in, c->min, c->max, &out);
        if (ok != c->ok)
            fail_msg("case %zu \"%s\": ok=%d, want %d", i, c->in ? c->in : "(null)", ok, c->ok);
        /* The out-parameter is written only on success. */
        assert_true(out == (c->ok ? c->want : 12345));
    }
}

static void test_parse_u32(void **state)
{
    (void)state;
    uint32_t v = 7;
    assert_true(util_parse_u32("4294967295", 0, UINT32_MAX, &v));
    assert_int_equal(v, UINT32_MAX);
    v = 7;
    assert_false(util_parse_u32("4294967296", 0, UINT32_MAX, &v));
    assert_false(util_parse_u32("18446744073709551617", 0, UINT32_MAX, &v));
    assert_false(util_parse_u32("65536", 1, 65535, &v));
    assert_false(util_parse_u32("0", 1, 65535, &v));
    assert_int_equal(v, 7);
    assert_true(util_parse_u32("65535", 1, 65535, &v));
    assert_int_equal(v, 65535);
}

struct hp_case {
    const char *in;
    bool ok;
    const char *host;
    uint16_t port;
};

static const struct hp_case hp_cases[] = {
    {"127.0.0.1:8080", true, "127.0.0.1", 8080},
    {"localhost:80", true, "localhost", 80},
    {"[::1]:8080", true, "::1", 8080},
    {"[fe80::1%eth0]:1", true, "fe80::1%eth0", 1},
    {"example.com:65535", true, "example.com", 65535},
    {"0.0.0.0:1", true, "0.0.0.0", 1},
    /* must not parse */
    {NULL, false, NULL, 0},
    {"", false, NULL, 0},
    {"127.0.0.1", false, NULL, 0},
    {"127.0.0.1:", false, NULL, 0},
    {":8080", false, NULL, 0},
    {"127.0.0.1:0", false, NULL, 0},
    {"127.0.0.1:65536", false, NULL, 0},
    {"127.0.0.1:99999999999", false, NULL, 0},
    {"127.0.0.1:-1", false, NULL, 0},
    {"127.0.0.1:+80", false, NULL, 0},
    {"127.0.0.1:80x", false, NULL, 0},
    {"127.0.0.1: 80", false, NULL, 0},
    {"127.0.0.1:80 ", false, NULL, 0},
    {"127.0.0.1:80:81", false, NULL, 0},
    {"::1:8080", false, NULL, 0},
    {"[::1]", false, NULL, 0},
    {"[::1]8080", false, NULL, 0},
    {"[::1]:", false, NULL, 0},
    {"[::1:8080", false, NULL, 0},
    {"[]:80", false, NULL, 0},
    {"[127.0.0.1]:80", false, NULL, 0},
    {"local host:80", false, NULL, 0},
    {"a/b:80", false, NULL, 0},
};

static void test_parse_hostport_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(hp_cases); i++) {
        const struct hp_case *c = &hp_cases[i];
        char host[64] = "untouched";
        uint16_t port = 7;
        bool ok = util_parse_hostport(c->in, host, sizeof(host), &port);
        if (ok != c->ok)
            fail_msg("case %zu \"%s\": ok=%d, want %d", i, c->in ? c->in : "(null)", ok, c->ok);
        if (c->ok) {
            assert_string_equal(host, c->host);
            assert_int_equal(port, c->port);
        } else {
            assert_string_equal(host, "untouched");
            assert_int_equal(port, 7);
        }
    }
}

static void test_parse_hostport_hostlen(void **state)
{
    (void)state;
    char host[10];
    uint16_t port;
    /* "127.0.0.1" needs 10 bytes with its NUL. */
    assert_true(util_parse_hostport("127.0.0.1:80", host, 10, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_false(util_parse_hostport("127.0.0.1:80", host, 9, &port));
    assert_false(util_parse_hostport("127.0.0.1:80", host, 0, &port));
}

/* ---- files ------------------------------------------------------------ */

static char *temp_file_with(const char *content, size_t len)
{
    char *path = strdup("/tmp/lt_test_util_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_read_file(void **state)
{
    (void)state;
    char *path = temp_file_with("hello\nworld", 11);
    size_t len = 0;

    char *buf = util_read_file(path, 11, &len);
    assert_non_null(buf);
    assert_int_equal(len, 11);
    assert_string_equal(buf, "hello\nworld");
    free(buf);

    buf = util_read_file(path, 1000, NULL);
    assert_non_null(buf);
    assert_string_equal(buf, "hello\nworld");
    free(buf);

    errno = 0;
    assert_null(util_read_file(path, 10, &len));
    assert_int_equal(errno, EFBIG);

    unlink(path);
    free(path);
}

static void test_read_file_empty(void **state)
{
    (void)state;
    char *path = temp_file_with("", 0);
    size_t len = 99;
    char *buf = util_read_file(path, 0, &len);
    assert_non_null(buf);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
    unlink(path);
    free(path);
}

static void test_read_file_errors(void **state)
{
    (void)state;
    size_t len;
    errno = 0;
    assert_null(util_read_file("/nonexistent/lt-no-such-file", 100, &len));
    assert_int_equal(errno, ENOENT);
    errno = 0;
    assert_null(util_read_file("/tmp", 100, &len));
    assert_int_equal(errno, EISDIR);
    /* Not a regular file, no size: the bound still holds while reading. */
    errno = 0;
    assert_null(util_read_file("/dev/zero", 10000, &len));
    assert_int_equal(errno, EFBIG);
}

/* ---- clocks ----------------------------------------------------------- */

static void test_clocks(void **state)
{
    (void)state;
    uint64_t a = util_mono_ms();
    uint64_t us = util_mono_us();
    uint64_t b = util_mono_ms();
    assert_true(b >= a);
    assert_true(us / 1000 >= a && us / 1000 <= b);
    usleep(20000);
    uint64_t c = util_mono_ms();
    assert_true(c - b >= 19);
    /* 2020-01-01T00:00:00Z in ms: a wall clock before that is broken. */
    assert_true(util_wall_ms() > 1577836800000ull);
}

static void test_iso8601(void **state)
{
    (void)state;
    char buf[32];
    util_format_iso8601(0, buf, sizeof(buf));
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    util_format_iso8601(1795378503120ull, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-22T20:15:03.120Z");
    util_format_iso8601(951868799999ull, buf, sizeof(buf));
    assert_string_equal(buf, "2000-02-29T23:59:59.999Z");

    char exact[25];
    util_format_iso8601(1795378503120ull, exact, sizeof(exact));
    assert_string_equal(exact, "2026-11-22T20:15:03.120Z");
    /* A short buffer is truncated, never overrun, and stays terminated. */
    char small[11];
    memset(small, 'x', sizeof(small));
    util_format_iso8601(1795378503120ull, small, sizeof(small));
    assert_string_equal(small, "2026-11-22");
}

/* ---- PRNG ------------------------------------------------------------- */

static void test_rng_pinned(void **state)
{
    (void)state;
    struct util_rng r;
    util_rng_seed(&r, 0);
    /* splitmix64's first output for seed 0 is a published reference value. */
    assert_true(r.s[0] == 0xe220a8397b1dcdafull);
    assert_true(util_rng_next(&r) == 0x509946a41cd733a3ull);
    assert_true(util_rng_next(&r) == 0xd805fcac6824536eull);
    assert_true(util_rng_next(&r) == 0xdadc02f3e3cf7be3ull);
    util_rng_seed(&r, 42);
    assert_true(util_rng_next(&r) == 0xe6c71559e2525f98ull);
    assert_true(util_rng_next(&r) == 0x13b69ac93ec06b57ull);
}

static void test_rng_reproducible(void **state)
{
    (void)state;
    struct util_rng a, b, c;
    util_rng_seed(&a, 7);
    util_rng_seed(&b, 7);
    util_rng_seed(&c, 8);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = util_rng_next(&a);
        assert_true(x == util_rng_next(&b));
        differ += x != util_rng_next(&c);
    }
    assert_true(differ > 95);
}

static void test_rng_below_range(void **state)
{
    (void)state;
    struct util_rng r;
    util_rng_seed(&r, 1);
    assert_int_equal(util_rng_below(&r, 0), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(util_rng_below(&r, 1), 0);
    static const uint32_t ns[] = {2, 3, 7, 100, 1000, 0x80000001u, UINT32_MAX};
    for (size_t k = 0; k < LT_ARRAY_LEN(ns); k++) {
        for (int i = 0; i < 10000; i++)
            assert_true(util_rng_below(&r, ns[k]) < ns[k]);
    }
}

/* With n = 3 * 2^30, a biased "x mod n" on 32 bits would put twice as many
 * draws below 2^30 as in any other quarter of the range. Uniform draws put
 * a third of them in each third of [0, n). */
static void test_rng_below_unbiased(void **state)
{
    (void)state;
    struct util_rng r;
    util_rng_seed(&r, 12345);
    const uint32_t n = 3u << 30;
    const int draws = 300000;
    int thirds[3] = {0, 0, 0};
    for (int i = 0; i < draws; i++)
        thirds[util_rng_below(&r, n) / (1u << 30)]++;
    for (int t = 0; t < 3; t++)
        assert_in_range(thirds[t], draws / 3 - 2000, draws / 3 + 2000);

    int counts[10] = {0};
    for (int i = 0; i < 100000; i++)
        counts[util_rng_below(&r, 10)]++;
    for (int k = 0; k < 10; k++)
        assert_in_range(counts[k], 9500, 10500);
}

static void test_format_u64(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        const char *text;
    } cases[] = {{0, "0"}, {9, "9"}, {10, "10"}, {4096, "4096"},
                 {UINT64_MAX, "18446744073709551615"}};
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        char buf[21];
        memset(buf, 'x', sizeof(buf));
        size_t n = util_format_u64(buf, cases[i].v);
        assert_int_equal(n, strlen(cases[i].text));
        assert_memory_equal(buf, cases[i].text, n);
        assert_int_equal(buf[n], 'x'); /* no NUL, nothing past the digits */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_u64_table),
        cmocka_unit_test(test_parse_u32),
        cmocka_unit_test(test_parse_hostport_table),
        cmocka_unit_test(test_format_u64),
        cmocka_unit_test(test_parse_hostport_hostlen),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_read_file_empty),
        cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_rng_pinned),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_rng_below_range),
        cmocka_unit_test(test_rng_below_unbiased),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
