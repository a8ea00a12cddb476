/* Units of the load tester's flags: tables of must-parse and must-not-parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "loadunits.h"
#include "util.h"

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t us;
    } good[] = {
        {"10s", 10000000}, {"10", 10000000}, {"500ms", 500000}, {"250us", 250},
        {"2m", 120000000}, {"1h", 3600000000ull}, {"1.5s", 1500000}, {".5s", 500000},
        {"0.001s", 1000}, {"1.0005ms", 1001}, {"1.0004ms", 1000}, {"0", 0},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(good); i++) {
        uint64_t v = 12345;
        assert_true(loadunits_duration_us(good[i].in, 0, UINT64_MAX / 2, &v));
        assert_int_equal(v, good[i].us);
    }
    static const char *const bad[] = {
        "", "s", "10x", "10 s", " 10s", "-1s", "+1s", "1e3", "0x10", "inf", "nan", "1.", ".",
        "1..2s", "10S", "10ms5", "1,5s", "99999999999999999999s", "1234567890123456789us",
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        uint64_t v = 777;
        assert_false(loadunits_duration_us(bad[i], 0, UINT64_MAX, &v));
        assert_int_equal(v, 777); /* untouched on failure */
    }
    uint64_t v;
    assert_false(loadunits_duration_us(NULL, 0, 10, &v));
    /* bounds are inclusive */
    assert_true(loadunits_duration_us("1ms", 1000, 1000, &v));
    assert_false(loadunits_duration_us("999us", 1000, 2000, &v));
    assert_false(loadunits_duration_us("3ms", 1000, 2000, &v));
    /* overflow of mantissa * unit is refused, not wrapped */
    assert_false(loadunits_duration_us("999999999999999999h", 0, UINT64_MAX, &v));
}

static void test_counts(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t v;
    } good[] = {
        {"5000", 5000}, {"20k", 20000}, {"20K", 20000}, {"1.5M", 1500000}, {"2G", 2000000000ull},
        {"0.5k", 500}, {"1", 1},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(good); i++) {
        uint64_t v = 0;
        assert_true(loadunits_count(good[i].in, 0, UINT64_MAX, &v));
        assert_int_equal(v, good[i].v);
    }
    static const char *const bad[] = {"", "k", "1.5", "1.2345k", "20m", "20kk", "-5", "5/s", "1e6"};
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        uint64_t v = 9;
        assert_false(loadunits_count(bad[i], 0, UINT64_MAX, &v));
        assert_int_equal(v, 9);
    }
    uint64_t v;
    assert_false(loadunits_count("0", 1, 10, &v));
    assert_false(loadunits_count("11", 1, 10, &v));
}

static void test_rates_and_factors(void **state)
{
    (void)state;
    double r = 0;
    assert_true(loadunits_rate("20k", 0.001, 1e7, &r));
    assert_true(r == 20000.0);
    assert_true(loadunits_rate("2.5k/s", 0.001, 1e7, &r));
    assert_true(r == 2500.0);
    assert_true(loadunits_rate("0.5", 0.001, 1e7, &r));
    assert_true(r == 0.5);
    assert_true(loadunits_rate("10M", 0.001, 1e7, &r));
    assert_false(loadunits_rate("11M", 0.001, 1e7, &r));
    assert_false(loadunits_rate("0", 0.001, 1e7, &r));
    assert_false(loadunits_rate("5/m", 0.001, 1e7, &r));
    assert_false(loadunits_rate("5/", 0.001, 1e7, &r));
    assert_false(loadunits_rate("abc", 0.001, 1e7, &r));

    double f = 0;
    assert_true(loadunits_factor("60", 1, 1e6, &f));
    assert_true(f == 60.0);
    assert_true(loadunits_factor("1.5x", 1, 1e6, &f));
    assert_true(f == 1.5);
    assert_false(loadunits_factor("0.5", 1, 1e6, &f));
    assert_false(loadunits_factor("2y", 1, 1e6, &f));
}

static void test_format_duration(void **state)
{
    (void)state;
    char b[32];
    loadunits_format_duration(250, b, sizeof(b));
    assert_string_equal(b, "250us");
    loadunits_format_duration(1500, b, sizeof(b));
    assert_string_equal(b, "1.5ms");
    loadunits_format_duration(12300000, b, sizeof(b));
    assert_string_equal(b, "12.3s");
    loadunits_format_duration(125000000, b, sizeof(b));
    assert_string_equal(b, "2m05s");
    loadunits_format_duration(3720000000ull, b, sizeof(b));
    assert_string_equal(b, "1h02m");
    /* where a unit's rounding reaches the next (the progress line's "left") */
    static const struct {
        uint64_t us;
        const char *want;
    } edges[] = {
        {999, "999us"},         {1000, "1ms"},          {999499, "999ms"},
        {999500, "1s"},         {999999, "1s"},         {1000000, "1s"},
        {59999999, "60s"},      {60000000, "1m00s"},    {3599499999ull, "59m59s"},
        {3599500000ull, "1h00m"}, {3600000000ull, "1h00m"},
    };
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        loadunits_format_duration(edges[i].us, b, sizeof(b));
        if (strcmp(b, edges[i].want) != 0)
            fail_msg("%llu us: \"%s\", want \"%s\"", (unsigned long long)edges[i].us, b,
                     edges[i].want);
        assert_null(strchr(b, 'e'));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_rates_and_factors),
        cmocka_unit_test(test_format_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
