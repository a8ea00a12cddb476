#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "country.h"
#include "util.h"

static void test_table_size_and_order(void **state)
{
    (void)state;
    /* 249 assigned ISO 3166-1 alpha-2 codes + "unknown". */
    assert_int_equal(COUNTRY_COUNT, 250);
    assert_int_equal(COUNTRY_UNKNOWN, 249);
    for (int i = 0; i < COUNTRY_UNKNOWN; i++) {
        const char *c = country_code(i);
        assert_non_null(c);
        assert_int_equal(strlen(c), 2);
        assert_true(c[0] >= 'a' && c[0] <= 'z' && c[1] >= 'a' && c[1] <= 'z');
        if (i > 0 && strcmp(country_code(i - 1), c) >= 0)
            fail_msg("not sorted at %d: %s >= %s", i, country_code(i - 1), c);
    }
    assert_string_equal(country_code(0), "ad");
    assert_string_equal(country_code(COUNTRY_UNKNOWN - 1), "zw");
    assert_string_equal(country_code(COUNTRY_UNKNOWN), "unknown");
    assert_null(country_code(-1));
    assert_null(country_code(COUNTRY_COUNT));
}

static void test_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < COUNTRY_COUNT; i++) {
        const char *c = country_code(i);
        assert_int_equal(country_lookup(c, strlen(c)), i);
        assert_int_equal(country_lookup_strict(c, strlen(c)), i);
        char upper[8];
        size_t n = strlen(c);
        for (size_t k = 0; k <= n; k++)
            upper[k] = (c[k] >= 'a' && c[k] <= 'z') ? (char)(c[k] - 32) : c[k];
        assert_int_equal(country_lookup(upper, n), i);
    }
}

static int idx(const char *code)
{
    int i = country_lookup_strict(code, strlen(code));
    assert_true(i >= 0);
    return i;
}

struct lookup_case {
    const char *code;
    size_t len;          /* SIZE_MAX: strlen */
    const char *want;    /* code of the expected index; NULL: unknown / -1 */
};

static const struct lookup_case lookup_cases[] = {
    {"gb", SIZE_MAX, "gb"},
    {"GB", SIZE_MAX, "gb"},
    {"gB", SIZE_MAX, "gb"},
    {"uk", SIZE_MAX, "gb"},
    {"UK", SIZE_MAX, "gb"},
    {"us", SIZE_MAX, "us"},
    {"ie", SIZE_MAX, "ie"},
    {"ss", SIZE_MAX, "ss"}, /* South Sudan, 2011 */
    {"bq", SIZE_MAX, "bq"},
    {"cw", SIZE_MAX, "cw"},
    {"sx", SIZE_MAX, "sx"},
    {"ax", SIZE_MAX, "ax"},
    {"ad", SIZE_MAX, "ad"},
    {"zw", SIZE_MAX, "zw"},
    {"unknown", SIZE_MAX, "unknown"},
    {"Unknown", SIZE_MAX, "unknown"},
    {"usa", 2, "us"},   /* the length bounds the code, not a NUL */
    {"gbx", 2, "gb"},
    /* not assigned */
    {NULL, 0, NULL},
    {"", SIZE_MAX, NULL},
    {"zz", SIZE_MAX, NULL},
    {"usa", SIZE_MAX, NULL},
    {"u", SIZE_MAX, NULL},
    {"xk", SIZE_MAX, NULL}, /* user-assigned, not ISO */
    {"an", SIZE_MAX, NULL}, /* withdrawn */
    {"eu", SIZE_MAX, NULL}, /* exceptionally reserved */
    {"aa", SIZE_MAX, NULL},
    {"g1", SIZE_MAX, NULL},
    {"1g", SIZE_MAX, NULL},
    {"g ", SIZE_MAX, NULL},
    {" g", SIZE_MAX, NULL},
    {"gb ", SIZE_MAX, NULL},
    {"unknow", SIZE_MAX, NULL},
    {"unknowns", SIZE_MAX, NULL},
    {"gb", 0, NULL},
    {"gb", 1, NULL},
    {"\xc3\xa9s", SIZE_MAX, NULL},
};

static void test_lookup_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(lookup_cases); i++) {
        const struct lookup_case *c = &lookup_cases[i];
        size_t len = c->len == SIZE_MAX ? strlen(c->code) : c->len;
        int want = c->want ? idx(c->want) : COUNTRY_UNKNOWN;
        int want_strict = c->want ? idx(c->want) : -1;
        int got = country_lookup(c->code, len);
        int got_strict = country_lookup_strict(c->code, len);
        if (got != want || got_strict != want_strict)
            fail_msg("case %zu \"%s\": lookup %d (want %d), strict %d (want %d)", i,
                     c->code ? c->code : "(null)", got, want, got_strict, want_strict);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_size_and_order),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_lookup_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
