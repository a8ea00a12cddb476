#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "country.h"
#include "eventfile.h"
#include "util.h"

/* Inputs are written with single quotes for readability; sq() turns them
 * into JSON's double quotes. The result is malloc'd. */
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

static bool parse_sq(const char *s, struct eventfile *ef, char *err, size_t errlen)
{
    char *json = sq(s);
    bool ok = eventfile_parse(json, strlen(json), ef, err, errlen);
    free(json);
    return ok;
}

static void assert_zeroed(const struct eventfile *ef)
{
    static const struct eventfile zero;
    assert_memory_equal(ef, &zero, sizeof(zero));
}

static int cidx(const char *code)
{
    return country_lookup_strict(code, strlen(code));
}

/* The source tree, from this file's path (CMake compiles with absolute paths). */
static void data_path(char *buf, size_t len, const char *rel)
{
    const char *file = __FILE__;
    const char *cut = strstr(file, "tests/unit/test_eventfile.c");
    assert_non_null(cut);
    snprintf(buf, len, "%.*s%s", (int)(cut - file), file, rel);
}

#define Q1 "{'id':1,'text':'t','options':['a','b'],'correct':0}"
#define WITH(fields) "{'event':'e'," fields ",'questions':[" Q1 "]}"
#define WITHQ(qs) "{'event':'e','questions':[" qs "]}"
#define EV(name) "{'event':" name ",'questions':[" Q1 "]}"
#define AB(buckets) WITH("'age_buckets':[" buckets "]")

struct fail_case {
    const char *json;
    const char *want; /* a prefix of the error message: the field path first */
};

static const struct fail_case fail_cases[] = {
    /* syntax and shape */
    {"", "invalid JSON at line 1:"},
    {"{", "invalid JSON at line 1:"},
    {"{'event':'e',}", "invalid JSON at line 1:"},
    {WITH("'shards':1") " x", "invalid JSON at line 1:"},
    {"[]", "event file: must be a JSON object"},
    {"3", "invalid JSON"},
    {WITH("'shards':1,'shards':2"), "invalid JSON"}, /* duplicate key */
    {WITH("'shards':99999999999999999999"), "invalid JSON"},
    {WITHQ("{'id':1,'text':'a\\u0000b','options':['a','b'],'correct':0}"), "invalid JSON"},
    /* event */
    {"{'questions':[" Q1 "]}", "event: required"},
    {EV("''"), "event: must match [a-z0-9-]{1,32}"},
    {EV("'A'"), "event: must match"},
    {EV("'a_b'"), "event: must match"},
    {EV("'a b'"), "event: must match"},
    {EV("'a:b'"), "event: must match"},
    {EV("'\\u00e9'"), "event: must match"},
    {EV("'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'"), "event: must match"}, /* 33 */
    {EV("5"), "event: must match"},
    {EV("null"), "event: must match"},
    /* shards */
    {WITH("'shards':0"), "shards: must be an integer 1..1000"},
    {WITH("'shards':1001"), "shards: must be an integer 1..1000"},
    {WITH("'shards':-1"), "shards:"},
    {WITH("'shards':1.5"), "shards:"},
    {WITH("'shards':10.0"), "shards:"},
    {WITH("'shards':1e2"), "shards:"},
    {WITH("'shards':'3'"), "shards:"},
    {WITH("'shards':true"), "shards:"},
    {WITH("'shards':null"), "shards:"},
    {WITH("'country_shards':0"), "country_shards: must be an integer 1..1000"},
    {WITH("'country_shards':1001"), "country_shards:"},
    {WITH("'country_shards':'3'"), "country_shards:"},
    /* hot_countries */
    {WITH("'hot_countries':[]"), "hot_countries: must be an object"},
    {WITH("'hot_countries':15"), "hot_countries: must be an object"},
    {WITH("'hot_countries':{'xx':3}"), "hot_countries.xx: not an ISO 3166-1 alpha-2 code"},
    {WITH("'hot_countries':{'usa':3}"), "hot_countries.usa: not an ISO"},
    {WITH("'hot_countries':{'':3}"), "hot_countries.: not an ISO"},
    {WITH("'hot_countries':{'gb':0}"), "hot_countries.gb: must be an integer 1..1000"},
    {WITH("'hot_countries':{'gb':1001}"), "hot_countries.gb: must be an integer 1..1000"},
    {WITH("'hot_countries':{'gb':1.5}"), "hot_countries.gb:"},
    {WITH("'hot_countries':{'gb':'15'}"), "hot_countries.gb:"},
    {WITH("'hot_countries':{'gb':15,'uk':3}"), "hot_countries.uk: the same country as another key (gb)"},
    {WITH("'hot_countries':{'gb':15,'GB':3}"), "hot_countries.GB: the same country"},
    {WITH("'hot_countries':{'us':1,'us':2}"), "invalid JSON"},
    /* age_buckets */
    {AB(""), "age_buckets: must be an array of 1..16 buckets"},
    {WITH("'age_buckets':{}"), "age_buckets: must be an array"},
    {AB("3"), "age_buckets[0]: must be an object"},
    {AB("{'max':130}"), "age_buckets[0].label: required"},
    {AB("{'label':'','max':130}"), "age_buckets[0].label: must be a non-empty string of at most 64 bytes"},
    {AB("{'label':5,'max':130}"), "age_buckets[0].label:"},
    {AB("{'label':'all'}"), "age_buckets[0].max: required"},
    {AB("{'label':'all','max':'130'}"), "age_buckets[0].max: must be an integer"},
    {AB("{'label':'all','max':130.0}"), "age_buckets[0].max: must be an integer"},
    {AB("{'label':'none','max':0},{'label':'all','max':130}"), "age_buckets[0].max: must be an integer 1.."},
    {AB("{'label':'a','max':17},{'label':'b','max':17},{'label':'c','max':130}"),
     "age_buckets[1].max: must be greater than age_buckets[0].max (17)"},
    {AB("{'label':'a','max':24},{'label':'b','max':17},{'label':'c','max':130}"),
     "age_buckets[1].max: must be greater"},
    {AB("{'label':'a','max':17},{'label':'b','max':129}"),
     "age_buckets[1].max: the last bucket must reach 130"},
    {AB("{'label':'a','max':17}"), "age_buckets[0].max: the last bucket must reach 130"},
    {AB("{'label':'a','max':130},{'label':'b','max':200}"),
     "age_buckets[0].max: only the last bucket may reach 130"},
    {AB("{'label':'a','max':4294967296}"), "age_buckets[0].max: must be an integer"},
    /* ttl_s, min_country_answers */
    {WITH("'ttl_s':0"), "ttl_s: must be an integer 1..2592000"},
    {WITH("'ttl_s':2592001"), "ttl_s: must be an integer 1..2592000"},
    {WITH("'ttl_s':'60'"), "ttl_s:"},
    {WITH("'min_country_answers':-1"), "min_country_answers: must be an integer >= 0"},
    {WITH("'min_country_answers':1.5"), "min_country_answers:"},
    {WITH("'min_country_answers':false"), "min_country_answers:"},
    /* questions */
    {"{'event':'e'}", "questions: required"},
    {"{'event':'e','questions':[]}", "questions: must be a non-empty array of at most 1000"},
    {"{'event':'e','questions':{}}", "questions: must be a non-empty array"},
    {"{'event':'e','questions':null}", "questions: must be a non-empty array"},
    {WITHQ("3"), "questions[0]: must be an object"},
    {WITHQ(Q1 ",[]"), "questions[1]: must be an object"},
    {WITHQ("{'text':'t','options':['a','b'],'correct':0}"), "questions[0].id: required"},
    {WITHQ("{'id':0,'text':'t','options':['a','b'],'correct':0}"), "questions[0].id: must be an integer 1..1000000"},
    {WITHQ("{'id':1000001,'text':'t','options':['a','b'],'correct':0}"), "questions[0].id: must be an integer 1..1000000"},
    {WITHQ("{'id':-3,'text':'t','options':['a','b'],'correct':0}"), "questions[0].id:"},
    {WITHQ("{'id':1.5,'text':'t','options':['a','b'],'correct':0}"), "questions[0].id:"},
    {WITHQ("{'id':'1','text':'t','options':['a','b'],'correct':0}"), "questions[0].id:"},
    {WITHQ(Q1 "," Q1), "questions[1].id: duplicate id 1 (also questions[0])"},
    {WITHQ("{'id':7,'text':'t','options':['a','b'],'correct':0}," Q1
           ",{'id':7,'text':'t','options':['a','b'],'correct':0}"),
     "questions[2].id: duplicate id 7 (also questions[0])"},
    {WITHQ("{'id':1,'options':['a','b'],'correct':0}"), "questions[0].text: required"},
    {WITHQ("{'id':1,'text':'','options':['a','b'],'correct':0}"),
     "questions[0].text: must be a non-empty string of at most 1024 bytes"},
    {WITHQ("{'id':1,'text':['t'],'options':['a','b'],'correct':0}"), "questions[0].text:"},
    {WITHQ("{'id':1,'text':'t','correct':0}"), "questions[0].options: required"},
    {WITHQ("{'id':1,'text':'t','options':['a'],'correct':0}"),
     "questions[0].options: must be an array of 2..16 strings"},
    {WITHQ("{'id':1,'text':'t','options':[],'correct':0}"), "questions[0].options: must be an array"},
    {WITHQ("{'id':1,'text':'t','options':'ab','correct':0}"), "questions[0].options: must be an array"},
    {WITHQ("{'id':1,'text':'t','options':['a',''],'correct':0}"),
     "questions[0].options[1]: must be a non-empty string of at most 256 bytes"},
    {WITHQ("{'id':1,'text':'t','options':['a',2],'correct':0}"), "questions[0].options[1]:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b']}"), "questions[0].correct: required, an index into options (0..1)"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':2}"),
     "questions[0].correct: must be an index into options (0..1)"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':-1}"), "questions[0].correct:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':0.0}"), "questions[0].correct:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':'0'}"), "questions[0].correct:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':true}"), "questions[0].correct:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':0,'open':'yes'}"),
     "questions[0].open: must be true or false"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':0,'open':1}"), "questions[0].open:"},
    {WITHQ("{'id':1,'text':'t','options':['a','b'],'correct':0,'open':null}"), "questions[0].open:"},
};

static void test_must_fail_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(fail_cases); i++) {
        const struct fail_case *c = &fail_cases[i];
        struct eventfile ef;
        memset(&ef, 0xa5, sizeof(ef));
        char err[256] = "";
        if (parse_sq(c->json, &ef, err, sizeof(err)))
            fail_msg("case %zu parsed but must fail: %s", i, c->json);
        if (strncmp(err, c->want, strlen(c->want)) != 0)
            fail_msg("case %zu: error \"%s\", want prefix \"%s\"", i, err, c->want);
        /* Nothing kept on failure (valgrind checks nothing leaked). */
        assert_zeroed(&ef);
        eventfile_free(&ef);
    }
}

/* The message the brief gives as the example, exactly. */
static void test_error_exact(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    assert_false(parse_sq(WITHQ(Q1 ",{'id':2,'text':'t','options':['a','b'],'correct':1},"
                                   "{'id':3,'text':'t','options':['a','b','c','d'],'correct':4}"),
                          &ef, err, sizeof(err)));
    assert_string_equal(err, "questions[2].correct: must be an index into options (0..3)");
    assert_false(parse_sq(WITH("'hot_countries':{'xx':1}"), &ef, err, sizeof(err)));
    assert_string_equal(err, "hot_countries.xx: not an ISO 3166-1 alpha-2 code");
    assert_false(parse_sq(EV("'A'"), &ef, err, sizeof(err)));
    assert_string_equal(err, "event: must match [a-z0-9-]{1,32}");
}

static void test_syntax_error_position(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    const char *json = "{\n  \"event\": \"e\",\n  \"shards\": 1\n  \"questions\": []\n}\n";
    assert_false(eventfile_parse(json, strlen(json), &ef, err, sizeof(err)));
    if (strncmp(err, "invalid JSON at line 4:", 23) != 0)
        fail_msg("error \"%s\"", err);
}

static void test_null_and_small_err(void **state)
{
    (void)state;
    struct eventfile ef;
    assert_false(eventfile_parse(NULL, 0, &ef, NULL, 0));
    char *json = sq(EV("'A'"));
    assert_false(eventfile_parse(json, strlen(json), &ef, NULL, 0));
    char err[8];
    assert_false(eventfile_parse(json, strlen(json), &ef, err, sizeof(err)));
    assert_string_equal(err, "event: ");
    /* The length bounds the input, not a NUL. */
    char *good = sq(WITH("'shards':7"));
    size_t n = strlen(good);
    assert_false(eventfile_parse(good, n - 1, &ef, err, sizeof(err)));
    assert_true(eventfile_parse(good, n, &ef, err, sizeof(err)));
    eventfile_free(&ef);
    free(good);
    free(json);
}

static void test_defaults(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    if (!parse_sq(WITHQ(Q1), &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_string_equal(ef.name, "e");
    assert_int_equal(ef.shards, 100);
    assert_int_equal(ef.country_shards, 3);
    for (int i = 0; i < COUNTRY_COUNT; i++) {
        const char *c = country_code(i);
        bool hot = !strcmp(c, "gb") || !strcmp(c, "us") || !strcmp(c, "unknown");
        assert_int_equal(ef.country_shard_count[i], hot ? 15 : 3);
    }
    assert_int_equal(ef.n_age_buckets, 3);
    assert_string_equal(ef.age_buckets[0].label, "under 18");
    assert_int_equal(ef.age_buckets[0].max, 17);
    assert_string_equal(ef.age_buckets[1].label, "18-24");
    assert_int_equal(ef.age_buckets[1].max, 24);
    assert_string_equal(ef.age_buckets[2].label, "25+");
    assert_int_equal(ef.age_buckets[2].max, 130);
    assert_int_equal(ef.ttl_s, 86400);
    assert_int_equal(ef.min_country_answers, 100);
    assert_int_equal(ef.n_questions, 1);
    assert_int_equal(ef.questions[0].id, 1);
    assert_string_equal(ef.questions[0].text, "t");
    assert_int_equal(ef.questions[0].n_options, 2);
    assert_string_equal(ef.questions[0].options[1], "b");
    assert_int_equal(ef.questions[0].correct, 0);
    assert_false(ef.questions[0].open);
    eventfile_free(&ef);
    assert_zeroed(&ef);
    eventfile_free(&ef); /* a second free is harmless */
}

static void test_all_fields(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    bool ok = parse_sq("{'event':'show-2026','shards':1000,'country_shards':1,"
                       "'hot_countries':{'fr':7,'UK':9,'unknown':1000},"
                       "'age_buckets':[{'label':'kids','max':12},{'label':'all','max':130}],"
                       "'ttl_s':2592000,'min_country_answers':0,'extra':{'x':[1,2]},"
                       "'questions':[{'id':1000000,'text':'Caf\\u00e9?','options':['y','n'],"
                       "'correct':1,'open':true,'hint':'ignored'}]}",
                       &ef, err, sizeof(err));
    if (!ok)
        fail_msg("%s", err);
    assert_string_equal(ef.name, "show-2026");
    assert_int_equal(ef.shards, 1000);
    assert_int_equal(ef.country_shards, 1);
    /* Given hot_countries replace the default list: us is no longer hot. */
    assert_int_equal(ef.country_shard_count[cidx("fr")], 7);
    assert_int_equal(ef.country_shard_count[cidx("gb")], 9);
    assert_int_equal(ef.country_shard_count[COUNTRY_UNKNOWN], 1000);
    assert_int_equal(ef.country_shard_count[cidx("us")], 1);
    assert_int_equal(ef.country_shard_count[cidx("de")], 1);
    assert_int_equal(ef.n_age_buckets, 2);
    assert_string_equal(ef.age_buckets[0].label, "kids");
    assert_int_equal(ef.ttl_s, 2592000);
    assert_int_equal(ef.min_country_answers, 0);
    assert_int_equal(ef.questions[0].id, 1000000);
    assert_string_equal(ef.questions[0].text, "Caf\xc3\xa9?");
    assert_int_equal(ef.questions[0].correct, 1);
    assert_true(ef.questions[0].open);
    eventfile_free(&ef);
}

static void test_hot_countries_empty(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    if (!parse_sq(WITH("'country_shards':4,'hot_countries':{}"), &ef, err, sizeof(err)))
        fail_msg("%s", err);
    for (int i = 0; i < COUNTRY_COUNT; i++)
        assert_int_equal(ef.country_shard_count[i], 4);
    eventfile_free(&ef);

    if (!parse_sq(WITH("'min_country_answers':9223372036854775807"), &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_true(ef.min_country_answers == 9223372036854775807ull);
    eventfile_free(&ef);
}

static void test_sorted_and_lookup(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    bool ok = parse_sq(WITHQ("{'id':30,'text':'c','options':['a','b'],'correct':1},"
                             "{'id':10,'text':'a','options':['a','b','c'],'correct':2},"
                             "{'id':20,'text':'b','options':['a','b'],'correct':0,'open':true}"),
                       &ef, err, sizeof(err));
    if (!ok)
        fail_msg("%s", err);
    assert_int_equal(ef.n_questions, 3);
    assert_int_equal(ef.questions[0].id, 10);
    assert_int_equal(ef.questions[1].id, 20);
    assert_int_equal(ef.questions[2].id, 30);
    /* Each question moved with its own fields. */
    assert_string_equal(ef.questions[0].text, "a");
    assert_int_equal(ef.questions[0].n_options, 3);
    assert_int_equal(ef.questions[0].correct, 2);
    assert_true(ef.questions[1].open);
    assert_false(ef.questions[2].open);

    assert_string_equal(eventfile_question(&ef, 20)->text, "b");
    assert_string_equal(eventfile_question(&ef, 10)->text, "a");
    assert_string_equal(eventfile_question(&ef, 30)->text, "c");
    static const uint32_t absent[] = {0, 1, 9, 11, 15, 25, 31, UINT32_MAX};
    for (size_t i = 0; i < LT_ARRAY_LEN(absent); i++) {
        assert_null(eventfile_question(&ef, absent[i]));
        assert_int_equal(eventfile_question_index(&ef, absent[i]), -1);
    }
    assert_int_equal(eventfile_question_index(&ef, 10), 0);
    assert_int_equal(eventfile_question_index(&ef, 20), 1);
    assert_int_equal(eventfile_question_index(&ef, 30), 2);
    eventfile_free(&ef);
}

static void test_age_bucket_boundaries(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[256];
    if (!parse_sq(WITHQ(Q1), &ef, err, sizeof(err)))
        fail_msg("%s", err);
    static const struct {
        uint32_t age, bucket;
    } cases[] = {{1, 0}, {17, 0}, {18, 1}, {24, 1}, {25, 2}, {130, 2}};
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++)
        assert_int_equal(eventfile_age_bucket(&ef, cases[i].age), cases[i].bucket);
    eventfile_free(&ef);

    /* One bucket for everyone; and a custom split at the edges. */
    if (!parse_sq(AB("{'label':'all','max':130}"), &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(eventfile_age_bucket(&ef, 1), 0);
    assert_int_equal(eventfile_age_bucket(&ef, 130), 0);
    eventfile_free(&ef);
    if (!parse_sq(AB("{'label':'1','max':1},{'label':'2-129','max':129},{'label':'old','max':1000}"),
                  &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(eventfile_age_bucket(&ef, 1), 0);
    assert_int_equal(eventfile_age_bucket(&ef, 2), 1);
    assert_int_equal(eventfile_age_bucket(&ef, 129), 1);
    assert_int_equal(eventfile_age_bucket(&ef, 130), 2);
    eventfile_free(&ef);
}

/* ---- bounds, generated ------------------------------------------------ */

struct sb {
    char *p;
    size_t n, cap;
};

static void sb_add(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    if (b->p == NULL) {
        b->cap = 4096;
        b->n = 0;
        b->p = malloc(b->cap);
        assert_non_null(b->p);
    }
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if (b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Parses and, on failure, returns the error (static buffer) or NULL. */
static const char *try_parse(struct sb *b)
{
    static char err[256];
    struct eventfile ef;
    bool ok = eventfile_parse(b->p, b->n, &ef, err, sizeof(err));
    free(b->p);
    memset(b, 0, sizeof(*b));
    if (!ok)
        return err;
    eventfile_free(&ef);
    return NULL;
}

static void expect_ok(struct sb *b)
{
    const char *e = try_parse(b);
    if (e != NULL)
        fail_msg("must parse: %s", e);
}

static void expect_fail(struct sb *b, const char *want)
{
    const char *e = try_parse(b);
    if (e == NULL)
        fail_msg("must fail with %s", want);
    if (strncmp(e, want, strlen(want)) != 0)
        fail_msg("error \"%s\", want prefix \"%s\"", e, want);
}

#define Q1_JSON "{\"id\":1,\"text\":\"t\",\"options\":[\"a\",\"b\"],\"correct\":0}"

static void test_string_bounds(void **state)
{
    (void)state;
    struct sb b = {0};
    char *s;

    s = repeat('a', 32);
    sb_add(&b, "{\"event\":\"%s\",\"questions\":[" Q1_JSON "]}", s);
    expect_ok(&b);
    free(s);
    s = repeat('a', 33);
    sb_add(&b, "{\"event\":\"%s\",\"questions\":[" Q1_JSON "]}", s);
    expect_fail(&b, "event:");
    free(s);

    for (size_t n = 1024; n <= 1025; n++) {
        s = repeat('t', n);
        sb_add(&b, "{\"event\":\"e\",\"questions\":[{\"id\":1,\"text\":\"%s\",\"options\":[\"a\",\"b\"],"
                   "\"correct\":0}]}", s);
        if (n == 1024)
            expect_ok(&b);
        else
            expect_fail(&b, "questions[0].text: must be a non-empty string of at most 1024 bytes");
        free(s);
    }
    /* Bytes, not characters: 512 two-byte characters fit, one more does not. */
    for (size_t n = 512; n <= 513; n++) {
        sb_add(&b, "{\"event\":\"e\",\"questions\":[{\"id\":1,\"text\":\"");
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "\xc3\xa9");
        sb_add(&b, "\",\"options\":[\"a\",\"b\"],\"correct\":0}]}");
        if (n == 512)
            expect_ok(&b);
        else
            expect_fail(&b, "questions[0].text:");
    }
    for (size_t n = 256; n <= 257; n++) {
        s = repeat('o', n);
        sb_add(&b, "{\"event\":\"e\",\"questions\":[{\"id\":1,\"text\":\"t\",\"options\":[\"a\",\"%s\"],"
                   "\"correct\":0}]}", s);
        if (n == 256)
            expect_ok(&b);
        else
            expect_fail(&b, "questions[0].options[1]: must be a non-empty string of at most 256 bytes");
        free(s);
    }
    for (size_t n = 64; n <= 65; n++) {
        s = repeat('l', n);
        sb_add(&b, "{\"event\":\"e\",\"age_buckets\":[{\"label\":\"%s\",\"max\":130}],"
                   "\"questions\":[" Q1_JSON "]}", s);
        if (n == 64)
            expect_ok(&b);
        else
            expect_fail(&b, "age_buckets[0].label: must be a non-empty string of at most 64 bytes");
        free(s);
    }
}

static void test_count_bounds(void **state)
{
    (void)state;
    struct sb b = {0};

    for (int n = 16; n <= 17; n++) {
        sb_add(&b, "{\"event\":\"e\",\"questions\":[{\"id\":1,\"text\":\"t\",\"options\":[");
        for (int i = 0; i < n; i++)
            sb_add(&b, "%s\"o%d\"", i ? "," : "", i);
        sb_add(&b, "],\"correct\":%d}]}", n - 1);
        if (n == 16)
            expect_ok(&b);
        else
            expect_fail(&b, "questions[0].options: must be an array of 2..16 strings");
    }
    for (int n = 16; n <= 17; n++) {
        sb_add(&b, "{\"event\":\"e\",\"age_buckets\":[");
        for (int i = 0; i < n; i++)
            sb_add(&b, "%s{\"label\":\"b%d\",\"max\":%d}", i ? "," : "", i, i + 1 == n ? 130 : i + 1);
        sb_add(&b, "],\"questions\":[" Q1_JSON "]}");
        if (n == 16)
            expect_ok(&b);
        else
            expect_fail(&b, "age_buckets: must be an array of 1..16 buckets");
    }
    for (int n = 1000; n <= 1001; n++) {
        sb_add(&b, "{\"event\":\"e\",\"questions\":[");
        for (int i = 0; i < n; i++)
            sb_add(&b, "%s{\"id\":%d,\"text\":\"t\",\"options\":[\"a\",\"b\"],\"correct\":1}",
                   i ? "," : "", n - i);
        sb_add(&b, "]}");
        if (n == 1000)
            expect_ok(&b);
        else
            expect_fail(&b, "questions: must be a non-empty array of at most 1000 questions");
    }
}

static void test_many_questions_sorted(void **state)
{
    (void)state;
    struct sb b = {0};
    sb_add(&b, "{\"event\":\"e\",\"questions\":[");
    /* 1000 ids in a scrambled order: 7 is coprime with 1000. */
    for (int i = 0; i < 1000; i++)
        sb_add(&b, "%s{\"id\":%d,\"text\":\"q%d\",\"options\":[\"a\",\"b\"],\"correct\":0}",
               i ? "," : "", (i * 7) % 1000 + 1, (i * 7) % 1000 + 1);
    sb_add(&b, "]}");
    struct eventfile ef;
    char err[256];
    bool ok = eventfile_parse(b.p, b.n, &ef, err, sizeof(err));
    free(b.p);
    if (!ok)
        fail_msg("%s", err);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(ef.questions[i].id, i + 1);
        char want[16];
        snprintf(want, sizeof(want), "q%u", i + 1);
        assert_string_equal(ef.questions[i].text, want);
        assert_int_equal(eventfile_question_index(&ef, i + 1), (int)i);
    }
    assert_int_equal(eventfile_question_index(&ef, 1001), -1);
    eventfile_free(&ef);
}

static void test_too_large(void **state)
{
    (void)state;
    struct eventfile ef;
    char err[128];
    /* The length is checked before anything is read. */
    const char tiny[] = "{}";
    assert_false(eventfile_parse(tiny, EVENT_MAX_FILE_BYTES + 1u, &ef, err, sizeof(err)));
    assert_string_equal(err, "event file: larger than 4194304 bytes");
}

/* ---- files ------------------------------------------------------------ */

static void test_load_example(void **state)
{
    (void)state;
    char path[1024];
    data_path(path, sizeof(path), "examples/1d-live.json");
    struct eventfile ef;
    char err[512];
    if (!eventfile_load(path, &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_string_equal(ef.name, "1d-live");
    assert_int_equal(ef.n_questions, 5);
    assert_true(ef.questions[0].open);
    for (uint32_t i = 0; i < ef.n_questions; i++) {
        assert_int_equal(ef.questions[i].id, i + 1);
        assert_in_range(ef.questions[i].n_options, 3, 4);
        if (i > 0)
            assert_false(ef.questions[i].open);
    }
    assert_int_equal(ef.country_shard_count[cidx("gb")], 15);
    assert_int_equal(ef.country_shard_count[cidx("ie")], 3);
    eventfile_free(&ef);

    data_path(path, sizeof(path), "tests/data/event-minimal.json");
    if (!eventfile_load(path, &ef, err, sizeof(err)))
        fail_msg("%s", err);
    assert_string_equal(ef.name, "minimal");
    eventfile_free(&ef);
}

struct file_case {
    const char *rel;
    const char *want; /* after "<path>: " */
};

static const struct file_case file_cases[] = {
    {"tests/data/event-bad-syntax.json", "invalid JSON at line 4:"},
    {"tests/data/event-bad-correct.json",
     "questions[2].correct: must be an index into options (0..3)"},
    {"tests/data/event-bad-hot-country.json", "hot_countries.xx: not an ISO 3166-1 alpha-2 code"},
    {"tests/data/no-such-file.json", "No such file or directory"},
    {"tests/data", "Is a directory"},
};

static void test_load_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(file_cases); i++) {
        char path[1024];
        data_path(path, sizeof(path), file_cases[i].rel);
        struct eventfile ef;
        char err[1024 + 256];
        assert_false(eventfile_load(path, &ef, err, sizeof(err)));
        char want[1024 + 256];
        snprintf(want, sizeof(want), "%s: %s", path, file_cases[i].want);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: \"%s\", want prefix \"%s\"", i, err, want);
        assert_zeroed(&ef);
    }
}

static void test_load_too_large(void **state)
{
    (void)state;
    char path[] = "/tmp/lt_test_eventfile_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, EVENT_MAX_FILE_BYTES + 1), 0);
    close(fd);
    struct eventfile ef;
    char err[256];
    assert_false(eventfile_load(path, &ef, err, sizeof(err)));
    char want[256];
    snprintf(want, sizeof(want), "%s: larger than 4194304 bytes", path);
    assert_string_equal(err, want);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_must_fail_table),
        cmocka_unit_test(test_error_exact),
        cmocka_unit_test(test_syntax_error_position),
        cmocka_unit_test(test_null_and_small_err),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_hot_countries_empty),
        cmocka_unit_test(test_sorted_and_lookup),
        cmocka_unit_test(test_age_bucket_boundaries),
        cmocka_unit_test(test_string_bounds),
        cmocka_unit_test(test_count_bounds),
        cmocka_unit_test(test_many_questions_sorted),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_load_example),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
