#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eventfile.h"
#include "keys.h"
#include "qstate.h"
#include "store.h"
#include "util.h"

static void test_kind_str(void **state)
{
    (void)state;
    assert_string_equal(qstate_kind_str(QSTATE_NOT_OPEN), "not_open");
    assert_string_equal(qstate_kind_str(QSTATE_OPEN), "open");
    assert_string_equal(qstate_kind_str(QSTATE_CLOSED), "closed");
}

static void test_format(void **state)
{
    (void)state;
    char buf[QSTATE_VALUE_MAX];
    struct qstate open = {.kind = QSTATE_OPEN, .open_ms = 1795378503120ull};
    assert_int_equal(qstate_format(&open, buf, sizeof(buf)), 18);
    assert_string_equal(buf, "open 1795378503120");

    struct qstate closed = {.kind = QSTATE_CLOSED, .open_ms = 1, .close_ms = 2};
    assert_int_equal(qstate_format(&closed, buf, sizeof(buf)), 10);
    assert_string_equal(buf, "closed 1 2");

    struct qstate max = {.kind = QSTATE_CLOSED, .open_ms = UINT64_MAX, .close_ms = UINT64_MAX};
    size_t n = qstate_format(&max, buf, sizeof(buf));
    assert_string_equal(buf, "closed 18446744073709551615 18446744073709551615");
    assert_int_equal(n, strlen(buf));
    assert_true(n < QSTATE_VALUE_MAX);

    /* Not open has no stored form; a short buffer gets nothing, not a prefix. */
    struct qstate not_open = {.kind = QSTATE_NOT_OPEN};
    assert_int_equal(qstate_format(&not_open, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    char small[10];
    assert_int_equal(qstate_format(&closed, small, sizeof(small)), 0);
    assert_string_equal(small, "");
    char fits[11];
    assert_int_equal(qstate_format(&closed, fits, sizeof(fits)), 10);
    assert_string_equal(fits, "closed 1 2");
}

struct parse_case {
    const char *in;
    size_t len; /* SIZE_MAX: strlen */
    bool ok;
    struct qstate want;
};

#define OPEN(o) {QSTATE_OPEN, (o), 0}
#define CLOSED(o, c) {QSTATE_CLOSED, (o), (c)}
#define NONE {QSTATE_NOT_OPEN, 0, 0}

static const struct parse_case parse_cases[] = {
    {"open 0", SIZE_MAX, true, OPEN(0)},
    {"open 1795378503120", SIZE_MAX, true, OPEN(1795378503120ull)},
    {"open 18446744073709551615", SIZE_MAX, true, OPEN(UINT64_MAX)},
    {"closed 1 2", SIZE_MAX, true, CLOSED(1, 2)},
    {"closed 5 3", SIZE_MAX, true, CLOSED(5, 3)}, /* clocks of two nodes may differ */
    {"closed 1795378503120 1795378563120", SIZE_MAX, true,
     CLOSED(1795378503120ull, 1795378563120ull)},
    {"open 12", 6, true, OPEN(1)}, /* the length bounds the value */
    {"open 12\0junk", 7, true, OPEN(12)},
    /* must not parse */
    {NULL, 0, false, NONE},
    {"", SIZE_MAX, false, NONE},
    {"open", SIZE_MAX, false, NONE},
    {"open ", SIZE_MAX, false, NONE},
    {"open x", SIZE_MAX, false, NONE},
    {"open 1 ", SIZE_MAX, false, NONE},
    {"open 1\n", SIZE_MAX, false, NONE},
    {" open 1", SIZE_MAX, false, NONE},
    {"open  1", SIZE_MAX, false, NONE},
    {"open\t1", SIZE_MAX, false, NONE},
    {"open -1", SIZE_MAX, false, NONE},
    {"open +1", SIZE_MAX, false, NONE},
    {"open 1x", SIZE_MAX, false, NONE},
    {"open 1 2", SIZE_MAX, false, NONE},
    {"open 18446744073709551616", SIZE_MAX, false, NONE},
    {"OPEN 1", SIZE_MAX, false, NONE},
    {"opened 1", SIZE_MAX, false, NONE},
    {"closed", SIZE_MAX, false, NONE},
    {"closed 1", SIZE_MAX, false, NONE},
    {"closed 1 ", SIZE_MAX, false, NONE},
    {"closed 1  2", SIZE_MAX, false, NONE},
    {"closed  1 2", SIZE_MAX, false, NONE},
    {"closed 1 2 3", SIZE_MAX, false, NONE},
    {"closed 1 2 ", SIZE_MAX, false, NONE},
    {"closed 1 x", SIZE_MAX, false, NONE},
    {"closed 1 18446744073709551616", SIZE_MAX, false, NONE},
    {"not_open", SIZE_MAX, false, NONE},
    {"open 1", 0, false, NONE},
    {"open 12\0", 8, false, NONE},
    {"open 00000000000000000000000000000000000000000000000000000000000001", SIZE_MAX, false, NONE},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(parse_cases); i++) {
        const struct parse_case *c = &parse_cases[i];
        size_t len = c->len == SIZE_MAX ? strlen(c->in) : c->len;
        struct qstate out = {.kind = QSTATE_CLOSED, .open_ms = 777, .close_ms = 888};
        bool ok = qstate_parse(c->in, len, &out);
        if (ok != c->ok)
            fail_msg("case %zu \"%s\": ok=%d, want %d", i, c->in ? c->in : "(null)", ok, c->ok);
        if (c->ok) {
            assert_int_equal(out.kind, c->want.kind);
            assert_true(out.open_ms == c->want.open_ms);
            assert_true(out.close_ms == c->want.close_ms);
        } else {
            /* untouched on failure */
            assert_int_equal(out.kind, QSTATE_CLOSED);
            assert_true(out.open_ms == 777 && out.close_ms == 888);
        }
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    static const struct qstate states[] = {
        {QSTATE_OPEN, 0, 0}, {QSTATE_OPEN, 1795378503120ull, 0},
        {QSTATE_CLOSED, 1, 2}, {QSTATE_CLOSED, UINT64_MAX, 0},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(states); i++) {
        char buf[QSTATE_VALUE_MAX];
        size_t n = qstate_format(&states[i], buf, sizeof(buf));
        assert_true(n > 0);
        struct qstate back;
        assert_true(qstate_parse(buf, n, &back));
        assert_int_equal(back.kind, states[i].kind);
        assert_true(back.open_ms == states[i].open_ms);
        assert_true(back.close_ms == states[i].close_ms);
    }
}

/* ---- against the embedded store ---------------------------------------- */

struct fixture {
    struct eventfile ef;
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    static const char json[] =
        "{\"event\":\"qs\",\"ttl_s\":600,\"questions\":["
        "{\"id\":30,\"text\":\"c\",\"options\":[\"a\",\"b\"],\"correct\":0,\"open\":true},"
        "{\"id\":10,\"text\":\"a\",\"options\":[\"a\",\"b\"],\"correct\":1},"
        "{\"id\":20,\"text\":\"b\",\"options\":[\"a\",\"b\"],\"correct\":0,\"open\":true}]}";
    char err[256];
    if (!eventfile_parse(json, sizeof(json) - 1, &f->ef, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        free(f);
        return -1;
    }
    f->s = store_open("memory:", err, sizeof(err));
    if (f->s == NULL) {
        fprintf(stderr, "%s\n", err);
        eventfile_free(&f->ef);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

static void get_raw(struct store *s, const char *key, char *out, size_t outlen)
{
    char *val = NULL;
    size_t n = 0;
    assert_int_equal(store_get(s, key, strlen(key), &val, &n), STORE_OK);
    assert_true(n < outlen);
    memcpy(out, val, n + 1);
    free(val);
}

static void test_fetch_empty(void **state)
{
    struct fixture *f = *state;
    struct qstate st[3];
    memset(st, 0xff, sizeof(st));
    assert_int_equal(qstate_fetch_all(f->s, &f->ef, st), STORE_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(st[i].kind, QSTATE_NOT_OPEN);
}

static void test_init_open(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(qstate_init_open(f->s, &f->ef, 1000), STORE_OK);
    char raw[QSTATE_VALUE_MAX];
    get_raw(f->s, "qs:q20:state", raw, sizeof(raw));
    assert_string_equal(raw, "open 1000");
    get_raw(f->s, "qs:q30:state", raw, sizeof(raw));
    assert_string_equal(raw, "open 1000");
    char *val = NULL;
    size_t n;
    assert_int_equal(store_get(f->s, "qs:q10:state", 12, &val, &n), STORE_NOTFOUND);

    /* A second node starting later keeps the first open time (add, not set). */
    assert_int_equal(qstate_init_open(f->s, &f->ef, 5000), STORE_OK);
    get_raw(f->s, "qs:q20:state", raw, sizeof(raw));
    assert_string_equal(raw, "open 1000");

    struct qstate st[3];
    assert_int_equal(qstate_fetch_all(f->s, &f->ef, st), STORE_OK);
    /* In the order of ef->questions: 10, 20, 30. */
    assert_int_equal(st[0].kind, QSTATE_NOT_OPEN);
    assert_int_equal(st[1].kind, QSTATE_OPEN);
    assert_true(st[1].open_ms == 1000);
    assert_int_equal(st[2].kind, QSTATE_OPEN);
}

static void test_write_and_fetch(void **state)
{
    struct fixture *f = *state;
    struct qstate open = {.kind = QSTATE_OPEN, .open_ms = 1795378503120ull};
    struct qstate closed = {.kind = QSTATE_CLOSED, .open_ms = 1795378503120ull,
                            .close_ms = 1795378563120ull};
    assert_int_equal(qstate_write(f->s, &f->ef, 10, &open), STORE_OK);
    assert_int_equal(qstate_write(f->s, &f->ef, 30, &closed), STORE_OK);

    char raw[QSTATE_VALUE_MAX];
    get_raw(f->s, "qs:q30:state", raw, sizeof(raw));
    assert_string_equal(raw, "closed 1795378503120 1795378563120");

    struct qstate st[3];
    assert_int_equal(qstate_fetch_all(f->s, &f->ef, st), STORE_OK);
    assert_int_equal(st[0].kind, QSTATE_OPEN);
    assert_true(st[0].open_ms == 1795378503120ull);
    assert_int_equal(st[1].kind, QSTATE_NOT_OPEN);
    assert_int_equal(st[2].kind, QSTATE_CLOSED);
    assert_true(st[2].close_ms == 1795378563120ull);

    /* init_open does not reopen a closed question. */
    assert_int_equal(qstate_init_open(f->s, &f->ef, 1), STORE_OK);
    get_raw(f->s, "qs:q30:state", raw, sizeof(raw));
    assert_string_equal(raw, "closed 1795378503120 1795378563120");

    /* Writing "not open" removes the key; twice is fine. */
    struct qstate none = {.kind = QSTATE_NOT_OPEN};
    assert_int_equal(qstate_write(f->s, &f->ef, 10, &none), STORE_OK);
    assert_int_equal(qstate_write(f->s, &f->ef, 10, &none), STORE_OK);
    assert_int_equal(qstate_fetch_all(f->s, &f->ef, st), STORE_OK);
    assert_int_equal(st[0].kind, QSTATE_NOT_OPEN);

    /* Unknown question: nothing written. */
    assert_int_equal(qstate_write(f->s, &f->ef, 11, &open), STORE_NOTFOUND);
    char *val = NULL;
    size_t n;
    assert_int_equal(store_get(f->s, "qs:q11:state", 12, &val, &n), STORE_NOTFOUND);
}

static void test_fetch_garbage_is_error(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_set(f->s, "qs:q20:state", 12, "opne 5", 6, 600), STORE_OK);
    struct qstate st[3];
    assert_int_equal(qstate_fetch_all(f->s, &f->ef, st), STORE_ERROR);
}

/* A pool whose only node refuses connections: every call reports the
 * store's failure instead of inventing a state. */
static void test_store_down(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    static const char json[] =
        "{\"event\":\"qs\",\"questions\":[{\"id\":1,\"text\":\"t\",\"options\":[\"a\",\"b\"],"
        "\"correct\":0,\"open\":true}]}";
    if (!eventfile_parse(json, sizeof(json) - 1, &ef, err, sizeof(err)))
        fail_msg("%s", err);
    /* Port 1 on loopback: nothing listens there, the connection is refused at once. */
    struct store *s = store_open("memcached://127.0.0.1:1?timeout_ms=200", err, sizeof(err));
    if (s == NULL)
        fail_msg("%s", err);
    struct qstate st[1] = {{.kind = QSTATE_CLOSED}};
    enum store_status r = qstate_fetch_all(s, &ef, st);
    assert_int_equal(r, STORE_UNAVAILABLE);
    r = qstate_init_open(s, &ef, 1000);
    assert_int_equal(r, STORE_UNAVAILABLE);
    struct qstate open = {.kind = QSTATE_OPEN, .open_ms = 5};
    r = qstate_write(s, &ef, 1, &open);
    assert_int_equal(r, STORE_UNAVAILABLE);
    store_close(s);
    eventfile_free(&ef);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_str),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test_setup_teardown(test_fetch_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_and_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_garbage_is_error, setup, teardown),
        cmocka_unit_test(test_store_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
