/* Answer parsing (API.md section 3): tables of must-accept and must-refuse
 * bodies against a small event, the counters of an answer, Content-Type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "answer.h"
#include "country.h"
#include "eventfile.h"
#include "keys.h"

/* Question 1 has three options (correct 2), question 7 two (correct 0); the
 * age buckets end at 17, 40 and 130. */
static const char EVENT_JSON[] =
    "{\"event\": \"t-answer\","
    " \"age_buckets\": [{\"label\": \"young\", \"max\": 17}, {\"label\": \"mid\", \"max\": 40},"
    "                   {\"label\": \"old\", \"max\": 130}],"
    " \"questions\": ["
    "  {\"id\": 7, \"text\": \"b\", \"options\": [\"x\", \"y\"], \"correct\": 0},"
    "  {\"id\": 1, \"text\": \"a\", \"options\": [\"p\", \"q\", \"r\"], \"correct\": 2}"
    " ]}";

static int setup(void **state)
{
    struct eventfile *ef = calloc(1, sizeof(*ef));
    char err[256] = "";
    assert_non_null(ef);
    if (!eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), ef, err, sizeof(err)))
        fail_msg("event: %s", err);
    *state = ef;
    return 0;
}

static int teardown(void **state)
{
    eventfile_free(*state);
    free(*state);
    return 0;
}

/* Inputs are written with single quotes; sq() makes them JSON. */
static char *sq(const char *s)
{
    char *out = strdup(s);
    assert_non_null(out);
    for (char *p = out; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return out;
}

static int cc(const char *code)
{
    int i = country_lookup_strict(code, strlen(code));
    assert_true(i >= 0);
    return i;
}

/* Parses exactly len bytes from a buffer of that size, with no NUL after
 * it, so a read past the body shows under valgrind and ASan. */
static bool parse_exact(const struct eventfile *ef, const char *body, size_t len,
                        struct answer *out, struct answer_error *err)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, body, len);
    bool ok = answer_parse(ef, copy, len, out, err);
    free(copy);
    return ok;
}

/* ---- must accept ---- */

struct accept_case {
    const char *body; /* single-quoted */
    uint32_t question;
    uint32_t option;
    uint32_t age;
    const char *country; /* NULL: unknown */
    const char *user;    /* NULL: absent */
};

static const char USER64[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.";

static void test_accept_table(void **state)
{
    const struct eventfile *ef = *state;
    char user64_body[256];
    snprintf(user64_body, sizeof(user64_body),
             "{'question': 1, 'answer': 0, 'age': 27, 'user': '%s'}", USER64);
    assert_int_equal(strlen(USER64), ANSWER_USER_MAX);

    const struct accept_case cases[] = {
        {"{'question': 1, 'answer': 0, 'age': 27}", 1, 0, 27, NULL, NULL},
        {"{'question':7,'answer':1,'age':1}", 7, 1, 1, NULL, NULL},
        {"{'question': 1, 'answer': 2, 'age': 130}", 1, 2, 130, NULL, NULL},
        {"  \n\t{'age': 45, 'answer': 1, 'question': 1}\r\n ", 1, 1, 45, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'us'}", 1, 0, 27, "us", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'Us'}", 1, 0, 27, "us", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'UK'}", 1, 0, 27, "gb", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'uk'}", 1, 0, 27, "gb", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'GB'}", 1, 0, 27, "gb", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'ie'}", 1, 0, 27, "ie", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': null}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'zz'}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': ''}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'usa'}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'u'}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'unknown'}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': '\\u00e9s'}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'fan-8812'}", 1, 0, 27, NULL, "fan-8812"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'a'}", 1, 0, 27, NULL, "a"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'A_b.c:d-9'}", 1, 0, 27, NULL,
         "A_b.c:d-9"},
        {user64_body, 1, 0, 27, NULL, USER64},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': null}", 1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'extra': [1, {'a': null}], 'ts': 1.5,"
         " 'Question': 'x'}",
         1, 0, 27, NULL, NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 'fr', 'user': 'u1', 'v': true}", 1,
         0, 27, "fr", "u1"},
        /* -0 is an integer in JSON; it is the first option. */
        {"{'question': 7, 'answer': -0, 'age': 18}", 7, 0, 18, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = sq(cases[i].body);
        struct answer a;
        struct answer_error e = {0};
        memset(&a, 0x5a, sizeof(a));
        if (!parse_exact(ef, body, strlen(body), &a, &e))
            fail_msg("case %zu refused (%d %s %s): %s", i, e.status, e.error,
                     e.field ? e.field : "-", body);
        assert_int_equal(a.question, cases[i].question);
        assert_int_equal(ef->questions[a.question_index].id, cases[i].question);
        assert_int_equal(a.option, cases[i].option);
        assert_int_equal(a.age, cases[i].age);
        assert_int_equal(a.country, cases[i].country ? cc(cases[i].country) : COUNTRY_UNKNOWN);
        if (cases[i].user) {
            assert_true(a.has_user);
            assert_string_equal(a.user, cases[i].user);
        } else {
            assert_false(a.has_user);
        }
        free(body);
    }
}

/* The length is the body's end: bytes after it are not read. */
static void test_length_bounds_the_body(void **state)
{
    const char *body = "{\"question\": 1, \"answer\": 0, \"age\": 27}garbage";
    size_t len = strlen("{\"question\": 1, \"answer\": 0, \"age\": 27}");
    struct answer a;
    struct answer_error e;
    assert_true(answer_parse(*state, body, len, &a, &e));
    assert_int_equal(a.age, 27);
    assert_false(answer_parse(*state, body, strlen(body), &a, &e));
    assert_string_equal(e.error, "invalid_json");
    /* A body cut short is malformed. */
    assert_false(answer_parse(*state, body, len - 1, &a, &e));
    assert_int_equal(e.status, 400);
    assert_string_equal(e.error, "invalid_json");
}

/* ---- must refuse ---- */

struct refuse_case {
    const char *body; /* single-quoted */
    int status;
    const char *error;
    const char *field; /* NULL when the API sends none */
};

static void check_refusal(const struct eventfile *ef, const char *body, size_t len, size_t i,
                          const struct refuse_case *want)
{
    struct answer a, before;
    memset(&a, 0x5a, sizeof(a));
    before = a;
    struct answer_error e = {.status = -1, .error = "unset", .field = "unset"};
    if (parse_exact(ef, body, len, &a, &e))
        fail_msg("case %zu accepted: %s", i, body);
    if (e.status != want->status || strcmp(e.error, want->error) != 0 ||
        (want->field == NULL) != (e.field == NULL) ||
        (want->field && strcmp(want->field, e.field) != 0))
        fail_msg("case %zu: got %d %s %s, want %d %s %s: %s", i, e.status, e.error,
                 e.field ? e.field : "-", want->status, want->error,
                 want->field ? want->field : "-", body);
    /* The out-parameter is written only on success. */
    assert_memory_equal(&a, &before, sizeof(a));
}

static void test_refuse_table(void **state)
{
    const struct eventfile *ef = *state;
    char user65_body[256];
    snprintf(user65_body, sizeof(user65_body),
             "{'question': 1, 'answer': 0, 'age': 27, 'user': '%sx'}", USER64);

    const struct refuse_case cases[] = {
        /* not a JSON object */
        {"", 400, "invalid_json", NULL},
        {"   ", 400, "invalid_json", NULL},
        {"[]", 400, "invalid_json", NULL},
        {"[{'question': 1, 'answer': 0, 'age': 27}]", 400, "invalid_json", NULL},
        {"1", 400, "invalid_json", NULL},
        {"'question'", 400, "invalid_json", NULL},
        {"null", 400, "invalid_json", NULL},
        {"true", 400, "invalid_json", NULL},
        {"{", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27,}", 400, "invalid_json", NULL},
        {"{question: 1, answer: 0, age: 27}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27} x", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27}{}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27} /* c */", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 0x1b}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 027}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': +27}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': NaN}", 400, "invalid_json", NULL},
        /* duplicate keys: which one counts would be a guess */
        {"{'question': 1, 'answer': 0, 'age': 27, 'age': 28}", 400, "invalid_json", NULL},
        {"{'question': 1, 'question': 1, 'answer': 0, 'age': 27}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'x': 1, 'x': 2}", 400, "invalid_json", NULL},
        /* bad escapes and lone surrogates */
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': '\\x41'}", 400, "invalid_json", NULL},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': '\\ud800'}", 400, "invalid_json", NULL},
        /* jansson refuses \u0000 inside strings */
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'a\\u0000b'}", 400, "invalid_json",
         NULL},
        /* question: an integer, then a known id */
        {"{}", 400, "invalid_field", "question"},
        {"{'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': null, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': '1', 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': 1.0, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': 1e0, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': true, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': [1], 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': {'id': 1}, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'Question': 1, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': -1, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': 2147483648, 'answer': 0, 'age': 27}", 400, "invalid_field", "question"},
        {"{'question': 2, 'answer': 0, 'age': 27}", 404, "unknown_question", NULL},
        {"{'question': 0, 'answer': 0, 'age': 27}", 404, "unknown_question", NULL},
        {"{'question': 8, 'answer': 0, 'age': 27}", 404, "unknown_question", NULL},
        {"{'question': 1000000, 'answer': 0, 'age': 27}", 404, "unknown_question", NULL},
        /* the question is checked before the rest */
        {"{'question': 2, 'answer': 'x', 'age': 0}", 404, "unknown_question", NULL},
        /* answer: 0 <= answer < options of that question */
        {"{'question': 1, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': 3, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 7, 'answer': 2, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': -1, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': 4294967296, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': 0.0, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': '0', 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': false, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': null, 'age': 27}", 400, "invalid_field", "answer"},
        {"{'question': 1, 'answer': 9, 'age': 999}", 400, "invalid_field", "answer"},
        /* age: 1..130 */
        {"{'question': 1, 'answer': 0}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 0}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 131}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': -5}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 27.5}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 27.0}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 2.7e1}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': '27'}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': true}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': null}", 400, "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 4294967323}", 400, "invalid_field", "age"},
        /* country: a string or null */
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': 1}", 400, "invalid_field", "country"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': true}", 400, "invalid_field",
         "country"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': ['us']}", 400, "invalid_field",
         "country"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'country': {}}", 400, "invalid_field",
         "country"},
        /* user: 1..64 of [A-Za-z0-9_.:-], or null */
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': ''}", 400, "invalid_field", "user"},
        {user65_body, 400, "invalid_field", "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'a b'}", 400, "invalid_field", "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'a/b'}", 400, "invalid_field", "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'fan@x'}", 400, "invalid_field",
         "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'caf\\u00e9'}", 400, "invalid_field",
         "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 'a\\nb'}", 400, "invalid_field",
         "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': 12}", 400, "invalid_field", "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': true}", 400, "invalid_field", "user"},
        {"{'question': 1, 'answer': 0, 'age': 27, 'user': ['a']}", 400, "invalid_field",
         "user"},
        /* the first bad field in question, answer, age, country, user order */
        {"{'question': 1, 'answer': 0, 'age': 0, 'country': 1, 'user': ''}", 400,
         "invalid_field", "age"},
        {"{'question': 1, 'answer': 0, 'age': 1, 'country': 1, 'user': ''}", 400,
         "invalid_field", "country"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = sq(cases[i].body);
        check_refusal(ef, body, strlen(body), i, &cases[i]);
        free(body);
    }
}

/* Raw bytes that single-quote tables cannot carry. */
static void test_refuse_raw_bytes(void **state)
{
    static const struct refuse_case bad_json = {NULL, 400, "invalid_json", NULL};
#define RAW(s) {s, sizeof(s) - 1}
    static const struct {
        const char *body;
        size_t len;
    } cases[] = {
        /* not UTF-8: a lone continuation byte, an overlong '/', a truncated sequence */
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"\x80\"}"),
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"\xc0\xaf\"}"),
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27, \"country\": \"\xe2\x82\"}"),
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27, \"\xff\": 1}"),
        /* a raw control character inside a string */
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"a\tb\"}"),
        /* a NUL byte inside and after the object */
        RAW("{\"question\": 1, \"answer\": 0,\0 \"age\": 27}"),
        RAW("{\"question\": 1, \"answer\": 0, \"age\": 27}\0"),
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_refusal(*state, cases[i].body, cases[i].len, i, &bad_json);
    }
#undef RAW
}

static void test_null_body_with_zero_length(void **state)
{
    struct answer a;
    struct answer_error e;
    assert_false(answer_parse(*state, "", 0, &a, &e));
    assert_int_equal(e.status, 400);
    assert_string_equal(e.error, "invalid_json");
    assert_null(e.field);
}

/* jansson's integers are 64-bit; a longer number is refused outright. This
 * pins that such a body is never accepted, whatever the error name. */
static void test_huge_integer_refused(void **state)
{
    char *body = sq("{'question': 1, 'answer': 0, 'age': 123456789012345678901234567890}");
    struct answer a;
    struct answer_error e;
    assert_false(answer_parse(*state, body, strlen(body), &a, &e));
    assert_int_equal(e.status, 400);
    free(body);
}

/* ---- counters ---- */

static void counters_of(const struct eventfile *ef, const char *json,
                        struct answer_counters *out)
{
    char *body = sq(json);
    struct answer a;
    struct answer_error e;
    if (!answer_parse(ef, body, strlen(body), &a, &e))
        fail_msg("refused %s: %s", e.error, body);
    memset(out, 0x5a, sizeof(*out));
    answer_counters(ef, &a, out);
    free(body);
}

static void test_counters(void **state)
{
    const struct eventfile *ef = *state;
    static const struct {
        const char *body;
        uint32_t question;
        enum key_outcome outcome;
        uint32_t bucket;
        const char *country; /* NULL: unknown */
        uint32_t option;
    } cases[] = {
        {"{'question': 1, 'answer': 2, 'age': 1}", 1, KEY_RIGHT, 0, NULL, 2},
        {"{'question': 1, 'answer': 0, 'age': 17}", 1, KEY_WRONG, 0, NULL, 0},
        {"{'question': 1, 'answer': 1, 'age': 18, 'country': 'uk'}", 1, KEY_WRONG, 1, "gb", 1},
        {"{'question': 1, 'answer': 2, 'age': 40, 'country': 'US'}", 1, KEY_RIGHT, 1, "us", 2},
        {"{'question': 1, 'answer': 2, 'age': 41}", 1, KEY_RIGHT, 2, NULL, 2},
        {"{'question': 7, 'answer': 0, 'age': 130, 'country': 'ie'}", 7, KEY_RIGHT, 2, "ie", 0},
        {"{'question': 7, 'answer': 1, 'age': 99}", 7, KEY_WRONG, 2, NULL, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct answer_counters c;
        counters_of(ef, cases[i].body, &c);
        if (c.question != cases[i].question || c.outcome != cases[i].outcome ||
            c.age_bucket != cases[i].bucket || c.option != cases[i].option ||
            c.country != (cases[i].country ? cc(cases[i].country) : COUNTRY_UNKNOWN))
            fail_msg("case %zu: q=%u outcome=%d bucket=%u country=%d option=%u", i, c.question,
                     (int)c.outcome, c.age_bucket, c.country, c.option);
    }
}

/* The client cannot say it was right: a 'correct' or 'right' field is ignored. */
static void test_client_cannot_claim_right(void **state)
{
    struct answer_counters c;
    counters_of(*state, "{'question': 1, 'answer': 0, 'age': 30, 'correct': true, 'right': 1}",
                &c);
    assert_int_equal(c.outcome, KEY_WRONG);
}

/* ---- Content-Type ---- */

/* ---- the fast reader and jansson agree ---- */

static void assert_same(const struct eventfile *ef, const char *body, size_t len)
{
    struct answer a1, a2;
    struct answer_error e1 = {0}, e2 = {0};
    memset(&a1, 0, sizeof(a1));
    memset(&a2, 0, sizeof(a2));
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, body, len);
    bool ok1 = answer_parse(ef, copy, len, &a1, &e1);
    bool ok2 = answer_parse_jansson(ef, copy, len, &a2, &e2);
    if (ok1 != ok2)
        fail_msg("fast %d, jansson %d for body [%.*s]", ok1, ok2, (int)len, body);
    if (ok1) {
        assert_int_equal(a1.question, a2.question);
        assert_int_equal(a1.question_index, a2.question_index);
        assert_int_equal(a1.option, a2.option);
        assert_int_equal(a1.age, a2.age);
        assert_int_equal(a1.country, a2.country);
        assert_int_equal(a1.has_user, a2.has_user);
        assert_string_equal(a1.user, a2.user);
    } else {
        assert_int_equal(e1.status, e2.status);
        assert_string_equal(e1.error, e2.error);
        if (e1.field != NULL || e2.field != NULL) {
            assert_non_null(e1.field);
            assert_non_null(e2.field);
            assert_string_equal(e1.field, e2.field);
        }
    }
    free(copy);
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Bodies near the ones phones send, mutated at random (deterministic seed):
 * whatever the fast reader takes must read as jansson reads it, and what it
 * leaves to jansson must not change the outcome. */
static void test_fast_reader_agrees_with_jansson(void **state)
{
    static const char *const seeds[] = {
        "{'question':1,'answer':2,'age':27,'country':'us','user':'fan-8812'}",
        "{'question':7,'answer':0,'age':40}",
        " { 'age' : 130 , 'answer' : 1 , 'question' : 1 , 'country' : null } ",
        "{'question':1,'answer':0,'age':8,'country':'uk','user':null}",
        "{'question':1,'answer':3,'age':-1,'country':'ZZ'}",
        "{'question':2,'answer':0,'age':20,'user':'a.b:c_d-e'}",
        "{}",
        "{'question':1e0,'answer':0.0,'age':0020}",
        "{'question':1,'answer':0,'age':30,'country':'\\u0075s'}",
        "{'question':1,'answer':1,'age':30,'extra':[1,{'x':2}]}",
        "{'question':1,'question':1,'answer':1,'age':30}",
        "{'question':-0,'answer':1,'age':30}",
        "{'question':123456789012345678901,'answer':1,'age':30}",
        "{'question':true,'answer':1,'age':30}",
    };
    static const char alphabet[] = "{}[]\",:0123456789-.eE +tfnul\\\t\r\nqusioawergcy_x";
    uint64_t rng = 0x9e3779b97f4a7c15u;
    char body[256];
    for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
        char *seed = sq(seeds[si]);
        size_t slen = strlen(seed);
        assert_same(*state, seed, slen);
        for (int round = 0; round < 8000; round++) {
            memcpy(body, seed, slen);
            size_t len = slen;
            int edits = 1 + (int)(xorshift(&rng) % 3);
            for (int e = 0; e < edits; e++) {
                size_t at = len ? (size_t)(xorshift(&rng) % len) : 0;
                char ch = alphabet[xorshift(&rng) % (sizeof(alphabet) - 1)];
                switch (xorshift(&rng) % 3) {
                case 0: /* replace */
                    if (len > 0)
                        body[at] = ch;
                    break;
                case 1: /* insert */
                    if (len + 1 < sizeof(body)) {
                        memmove(body + at + 1, body + at, len - at);
                        body[at] = ch;
                        len++;
                    }
                    break;
                default: /* delete */
                    if (len > 0) {
                        memmove(body + at, body + at + 1, len - at - 1);
                        len--;
                    }
                }
            }
            assert_same(*state, body, len);
        }
        free(seed);
    }
}

static void test_content_type(void **state)
{
    (void)state;
    static const struct {
        const char *ct;
        bool ok;
    } cases[] = {
        {"application/json", true},
        {"Application/JSON", true},
        {"APPLICATION/JSON", true},
        {"application/json; charset=utf-8", true},
        {"application/json;charset=UTF-8", true},
        {"application/json;", true},
        {"application/json ", true},
        {"  application/json", true},
        {NULL, false},
        {"", false},
        {" ", false},
        {"application/jso", false},
        {"application/jsonx", false},
        {"application/json-patch+json", false},
        {"application/json5", false},
        {"application/x-www-form-urlencoded", false},
        {"text/json", false},
        {"text/plain", false},
        {"multipart/form-data; boundary=x", false},
        {"json", false},
        {"application /json", false},
        {"xapplication/json", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (answer_content_type_ok(cases[i].ct) != cases[i].ok)
            fail_msg("case %zu '%s': want %s", i, cases[i].ct ? cases[i].ct : "(null)",
                     cases[i].ok ? "accepted" : "refused");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accept_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_bounds_the_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_raw_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_body_with_zero_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_integer_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_cannot_claim_right, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_reader_agrees_with_jansson, setup, teardown),
        cmocka_unit_test(test_content_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
