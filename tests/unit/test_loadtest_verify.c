/* The tally and its comparison with /v1/stats: equal passes; every kind of
 * difference (each count, each breakdown, malformed entries) is found and
 * named. The ultimate fans against the population's acknowledged right
 * answers. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eventfile.h"
#include "loadtally.h"
#include "loadverify.h"
#include "util.h"

static const char event_json[] =
    "{\"event\":\"verify\",\"questions\":["
    "{\"id\":1,\"text\":\"a\",\"options\":[\"x\",\"y\",\"z\",\"w\"],\"correct\":2},"
    "{\"id\":2,\"text\":\"b\",\"options\":[\"x\",\"y\"],\"correct\":0},"
    "{\"id\":3,\"text\":\"c\",\"options\":[\"x\",\"y\",\"z\"],\"correct\":1}]}";

struct fixture {
    struct eventfile ef;
    struct loadtally sent;
};

static void add(struct fixture *f, uint32_t q, uint32_t answer, uint32_t age, const char *country,
                int times)
{
    struct loadtally_key k;
    assert_true(loadtally_key_for(&f->ef, q, answer, age, country,
                                  country ? strlen(country) : 0, &k));
    for (int i = 0; i < times; i++)
        loadtally_add(&f->sent, &k);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    if (f == NULL || !eventfile_parse(event_json, strlen(event_json), &f->ef, err, sizeof(err)) ||
        !loadtally_init(&f->sent, f->ef.n_questions))
        return -1;
    /* questions 1 and 2 answered, 3 not at all */
    add(f, 1, 2, 16, "us", 5);
    add(f, 1, 0, 30, "uk", 3);
    add(f, 1, 3, 22, NULL, 2);
    add(f, 1, 2, 70, "IE", 1);
    add(f, 2, 0, 20, "us", 4);
    add(f, 2, 1, 40, "gb", 6);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    loadtally_free(&f->sent);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

static json_t *counts(const struct loadtally_count *c)
{
    return json_pack("{s:I,s:I,s:I}", "answers", (json_int_t)c->answers, "right",
                     (json_int_t)c->right, "wrong", (json_int_t)c->wrong);
}

/* The stats a correct dashboard shows for this tally (API.md section 4). */
static json_t *render(const struct eventfile *ef, const struct loadtally *t, uint64_t generation)
{
    json_t *qs = json_array();
    for (uint32_t i = 0; i < ef->n_questions; i++) {
        const struct loadtally_question *q = &t->q[i];
        json_t *jq = counts(&q->total);
        json_object_set_new(jq, "id", json_integer(ef->questions[i].id));
        json_object_set_new(jq, "state", json_string("closed"));
        json_t *ba = json_array();
        for (uint32_t o = 0; o < ef->questions[i].n_options; o++)
            json_array_append_new(ba, json_integer((json_int_t)q->by_answer[o]));
        json_object_set_new(jq, "by_answer", ba);
        json_t *bg = json_array();
        for (uint32_t b = 0; b < ef->n_age_buckets; b++) {
            json_t *e = counts(&q->by_age[b]);
            json_object_set_new(e, "bucket", json_integer(b + 1));
            json_object_set_new(e, "label", json_string(ef->age_buckets[b].label));
            json_array_append_new(bg, e);
        }
        json_object_set_new(jq, "by_age", bg);
        json_t *bc = json_array();
        for (int c = 0; c < COUNTRY_COUNT; c++) {
            if (q->by_country[c].answers == 0)
                continue;
            json_t *e = counts(&q->by_country[c]);
            json_object_set_new(e, "country", json_string(country_code(c)));
            json_array_append_new(bc, e);
        }
        json_object_set_new(jq, "by_country", bc);
        json_array_append_new(qs, jq);
    }
    return json_pack("{s:s,s:I,s:o,s:o}", "event", "verify", "generation", (json_int_t)generation,
                     "totals", counts(&t->totals), "questions", qs);
}

/* Parses the rendered stats and compares; returns the number of differences. */
static uint64_t check(struct fixture *f, json_t *stats, const struct loadtally *base,
                      const char *expect_substring)
{
    char *text = json_dumps(stats, JSON_COMPACT);
    assert_non_null(text);
    struct loadverify_stats st;
    struct loadverify_diffs d = {0};
    char err[256];
    assert_true(loadverify_stats_parse(text, strlen(text), &f->ef, &st, &d, err, sizeof(err)));
    uint64_t compared = loadverify_compare(&f->ef, base, &f->sent, &st, &d);
    assert_true(compared > 0);
    uint64_t n = d.total;
    if (expect_substring != NULL) {
        bool found = false;
        for (size_t i = 0; i < d.n; i++)
            found |= strstr(d.lines[i], expect_substring) != NULL;
        if (!found) {
            print_error("no difference mentions \"%s\"; got %llu:\n", expect_substring,
                        (unsigned long long)n);
            for (size_t i = 0; i < d.n; i++)
                print_error("  %s\n", d.lines[i]);
            fail();
        }
    }
    loadverify_diffs_free(&d);
    loadverify_stats_free(&st);
    free(text);
    return n;
}

static void test_tally_counts(void **state)
{
    struct fixture *f = *state;
    const struct loadtally_question *q1 = &f->sent.q[0];
    assert_int_equal(q1->total.answers, 11);
    assert_int_equal(q1->total.right, 6);
    assert_int_equal(q1->total.wrong, 5);
    assert_int_equal(q1->by_answer[2], 6);
    assert_int_equal(q1->by_answer[0], 3);
    assert_int_equal(q1->by_age[0].right, 5);               /* 16: under 18 */
    assert_int_equal(q1->by_age[1].wrong, 2);               /* 22: 18-24 */
    assert_int_equal(q1->by_country[country_lookup("gb", 2)].wrong, 3); /* uk */
    assert_int_equal(q1->by_country[COUNTRY_UNKNOWN].answers, 2);
    assert_int_equal(q1->by_country[country_lookup("ie", 2)].right, 1);
    assert_int_equal(f->sent.totals.answers, 21);

    /* merge is addition; different shapes refuse */
    struct loadtally t;
    assert_true(loadtally_init(&t, f->ef.n_questions));
    assert_true(loadtally_merge(&t, &f->sent));
    assert_true(loadtally_merge(&t, &f->sent));
    assert_int_equal(t.q[1].by_country[country_lookup("us", 2)].right, 8);
    assert_int_equal(t.totals.wrong, 2 * f->sent.totals.wrong);
    struct loadtally other;
    assert_true(loadtally_init(&other, 1));
    assert_false(loadtally_merge(&t, &other));
    loadtally_free(&other);
    loadtally_free(&t);

    /* keys the ingest would refuse */
    struct loadtally_key k;
    assert_false(loadtally_key_for(&f->ef, 4, 0, 20, NULL, 0, &k));
    assert_false(loadtally_key_for(&f->ef, 2, 2, 20, NULL, 0, &k));
    assert_false(loadtally_key_for(&f->ef, 2, -1, 20, NULL, 0, &k));
    assert_false(loadtally_key_for(&f->ef, 2, 0, 0, NULL, 0, &k));
    assert_false(loadtally_key_for(&f->ef, 2, 0, 131, NULL, 0, &k));
    assert_false(k.valid);
    assert_true(loadtally_key_for(&f->ef, 2, 0, 130, "UK", 2, &k));
    assert_int_equal(k.country, country_lookup("gb", 2));
}

static void test_equal_passes(void **state)
{
    struct fixture *f = *state;
    json_t *s = render(&f->ef, &f->sent, 7);
    assert_int_equal(check(f, s, NULL, NULL), 0);
    json_decref(s);
}

/* Answers maybe counted (a try lost with its connection): each count may
 * be above the expected one by at most theirs, never below. */
static void bounded(struct fixture *f, const struct loadtally *shown, const struct loadtally *maybe,
                    uint64_t *diffs, uint64_t *within)
{
    json_t *js = render(&f->ef, shown, 7);
    char *text = json_dumps(js, JSON_COMPACT);
    assert_non_null(text);
    struct loadverify_stats st;
    struct loadverify_diffs d = {0};
    char err[256];
    assert_true(loadverify_stats_parse(text, strlen(text), &f->ef, &st, &d, err, sizeof(err)));
    assert_true(loadverify_compare_bounded(&f->ef, NULL, &f->sent, maybe, &st, &d) > 0);
    *diffs = d.total;
    *within = d.within_bound;
    loadverify_diffs_free(&d);
    loadverify_stats_free(&st);
    free(text);
    json_decref(js);
}

static void test_maybe_counted_bound(void **state)
{
    struct fixture *f = *state;
    struct loadtally_key k;
    assert_true(loadtally_key_for(&f->ef, 1, 2, 16, "gb", 2, &k));
    struct loadtally maybe, shown;
    assert_true(loadtally_init(&maybe, f->ef.n_questions));
    assert_true(loadtally_init(&shown, f->ef.n_questions));
    loadtally_add(&maybe, &k);
    loadtally_add(&maybe, &k);
    uint64_t diffs, within;

    /* none of them counted: exact */
    bounded(f, &f->sent, &maybe, &diffs, &within);
    assert_int_equal(diffs, 0);
    assert_int_equal(within, 0);
    /* one counted, two counted: within the bound */
    assert_true(loadtally_merge(&shown, &f->sent));
    loadtally_add(&shown, &k);
    bounded(f, &shown, &maybe, &diffs, &within);
    assert_int_equal(diffs, 0);
    assert_true(within > 0);
    loadtally_add(&shown, &k);
    bounded(f, &shown, &maybe, &diffs, &within);
    assert_int_equal(diffs, 0);
    /* three: past it */
    loadtally_add(&shown, &k);
    bounded(f, &shown, &maybe, &diffs, &within);
    assert_true(diffs > 0);
    /* an answer of another kind counted: no bound for it */
    struct loadtally other;
    assert_true(loadtally_init(&other, f->ef.n_questions));
    assert_true(loadtally_merge(&other, &f->sent));
    struct loadtally_key k2;
    assert_true(loadtally_key_for(&f->ef, 1, 0, 40, "us", 2, &k2));
    loadtally_add(&other, &k2);
    bounded(f, &other, &maybe, &diffs, &within);
    assert_true(diffs > 0);
    /* below the acknowledged ones: never within a bound */
    struct loadtally less;
    assert_true(loadtally_init(&less, f->ef.n_questions));
    bounded(f, &less, &maybe, &diffs, &within);
    assert_true(diffs > 0);
    loadtally_free(&less);
    loadtally_free(&other);
    loadtally_free(&shown);
    loadtally_free(&maybe);
}

/* One altered count, one difference naming it. */
static void test_each_count_is_compared(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *path[6]; /* object keys / array indexes as text */
        const char *expect;
    } cases[] = {
        {{"questions", "0", "answers"}, "question 1.answers: dashboard 12, expected 11"},
        {{"questions", "0", "right"}, "question 1.right"},
        {{"questions", "1", "wrong"}, "question 2.wrong"},
        {{"questions", "0", "by_answer", "3"}, "question 1 by_answer[3]"},
        {{"questions", "0", "by_age", "0", "right"}, "question 1 by_age[bucket 1].right"},
        {{"questions", "1", "by_age", "2", "wrong"}, "question 2 by_age[bucket 3].wrong"},
        {{"questions", "0", "by_age", "1", "answers"}, "question 1 by_age[bucket 2].answers"},
        {{"questions", "0", "by_country", "0", "wrong"}, "by_country["},
        {{"questions", "1", "by_country", "1", "right"}, "question 2 by_country["},
        {{"totals", "answers"}, "totals.answers: dashboard 22, expected 21"},
        {{"totals", "wrong"}, "totals.wrong"},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        json_t *s = render(&f->ef, &f->sent, 7);
        json_t *v = s;
        size_t depth = 0;
        while (depth < 6 && cases[i].path[depth] != NULL) {
            const char *key = cases[i].path[depth];
            v = json_is_array(v) ? json_array_get(v, (size_t)atoi(key)) : json_object_get(v, key);
            assert_non_null(v);
            depth++;
        }
        assert_true(json_is_integer(v));
        json_integer_set(v, json_integer_value(v) + 1);
        uint64_t n = check(f, s, NULL, cases[i].expect);
        if (n != 1) {
            print_error("case %zu: %llu differences\n", i, (unsigned long long)n);
            fail();
        }
        json_decref(s);
    }
}

static void test_malformed_entries(void **state)
{
    struct fixture *f = *state;
    json_t *s, *q, *e;

    /* a question missing from the dashboard: one line, not one per count */
    s = render(&f->ef, &f->sent, 7);
    json_array_remove(json_object_get(s, "questions"), 1);
    assert_int_equal(check(f, s, NULL, "question 2: missing from the dashboard (expected 10"), 1);
    json_decref(s);

    /* an unanswered question may be absent */
    s = render(&f->ef, &f->sent, 7);
    json_array_remove(json_object_get(s, "questions"), 2);
    assert_int_equal(check(f, s, NULL, NULL), 0);
    json_decref(s);

    /* a question the event does not have */
    s = render(&f->ef, &f->sent, 7);
    q = json_deep_copy(json_array_get(json_object_get(s, "questions"), 2));
    json_object_set_new(q, "id", json_integer(99));
    json_array_append_new(json_object_get(s, "questions"), q);
    assert_int_equal(check(f, s, NULL, "question 99: not in the event file"), 1);
    json_decref(s);

    /* a question listed twice */
    s = render(&f->ef, &f->sent, 7);
    q = json_deep_copy(json_array_get(json_object_get(s, "questions"), 2));
    json_array_append_new(json_object_get(s, "questions"), q);
    assert_int_equal(check(f, s, NULL, "question 3: listed twice"), 1);
    json_decref(s);

    /* an extra country the tally never saw */
    s = render(&f->ef, &f->sent, 7);
    q = json_array_get(json_object_get(s, "questions"), 1);
    json_array_append_new(json_object_get(q, "by_country"),
                          json_pack("{s:s,s:i,s:i,s:i}", "country", "fr", "answers", 1, "right",
                                    1, "wrong", 0));
    assert_int_equal(check(f, s, NULL, "question 2 by_country[fr].answers: dashboard 1, expected 0"),
                     2); /* answers and right */
    json_decref(s);

    /* not a country code; a country twice; "uk" is not what the dashboard says */
    s = render(&f->ef, &f->sent, 7);
    q = json_array_get(json_object_get(s, "questions"), 1);
    e = json_array_get(json_object_get(q, "by_country"), 0);
    json_object_set_new(e, "country", json_string("xx"));
    assert_true(check(f, s, NULL, "\"xx\" is not a country code") >= 1);
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    q = json_array_get(json_object_get(s, "questions"), 1);
    json_array_append_new(json_object_get(q, "by_country"),
                          json_deep_copy(json_array_get(json_object_get(q, "by_country"), 0)));
    assert_int_equal(check(f, s, NULL, "listed twice"), 1);
    json_decref(s);

    /* an age bucket out of range, a count that is not a count, a missing field */
    s = render(&f->ef, &f->sent, 7);
    q = json_array_get(json_object_get(s, "questions"), 0);
    json_object_set_new(json_array_get(json_object_get(q, "by_age"), 2), "bucket",
                        json_integer(4));
    assert_true(check(f, s, NULL, "bucket must be 1..3") >= 1);
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    q = json_array_get(json_object_get(s, "questions"), 0);
    json_object_set_new(q, "wrong", json_string("5"));
    assert_true(check(f, s, NULL, "question 1.wrong: not a count") >= 1);
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    json_object_del(json_array_get(json_object_get(s, "questions"), 0), "by_answer");
    assert_int_equal(check(f, s, NULL, "by_answer: missing"), 1 + 3); /* 3 non-zero options */
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    json_array_append_new(
        json_object_get(json_array_get(json_object_get(s, "questions"), 1), "by_answer"),
        json_integer(0));
    assert_int_equal(check(f, s, NULL, "3 entries for 2 options"), 1);
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    json_object_del(s, "generation");
    assert_int_equal(check(f, s, NULL, "generation"), 1);
    json_decref(s);
    s = render(&f->ef, &f->sent, 7);
    json_object_del(s, "totals");
    assert_int_equal(check(f, s, NULL, "totals: missing"), 1);
    json_decref(s);

    /* not JSON at all */
    struct loadverify_stats st;
    char err[256];
    assert_false(loadverify_stats_parse("<html>", 6, &f->ef, &st, NULL, err, sizeof(err)));
    assert_false(loadverify_stats_parse("[1]", 3, &f->ef, &st, NULL, err, sizeof(err)));
}

static void test_baseline_and_invalid(void **state)
{
    struct fixture *f = *state;
    /* the dashboard had counts before the run: expected = before + sent */
    struct loadtally base, both;
    assert_true(loadtally_init(&base, f->ef.n_questions));
    assert_true(loadtally_init(&both, f->ef.n_questions));
    struct loadtally_key k;
    assert_true(loadtally_key_for(&f->ef, 3, 1, 50, "de", 2, &k));
    loadtally_add(&base, &k);
    assert_true(loadtally_key_for(&f->ef, 1, 2, 16, "us", 2, &k));
    loadtally_add(&base, &k);
    assert_true(loadtally_merge(&both, &base));
    assert_true(loadtally_merge(&both, &f->sent));
    json_t *s = render(&f->ef, &both, 9);
    assert_int_equal(check(f, s, &base, NULL), 0);
    /* compared without the baseline, the earlier answers are differences */
    assert_true(check(f, s, NULL, "question 3.answers: dashboard 1, expected 0") > 0);
    json_decref(s);
    /* a lost increment with a baseline says both parts */
    s = render(&f->ef, &f->sent, 9);
    assert_true(check(f, s, &base, "before the run + ") > 0);
    json_decref(s);

    /* an acknowledged answer the ingest should have refused */
    struct loadtally_key bad = {.valid = false};
    loadtally_add(&f->sent, &bad);
    s = render(&f->ef, &f->sent, 9);
    assert_int_equal(check(f, s, NULL, "not valid for the event file"), 1);
    json_decref(s);
    f->sent.invalid = 0;
    loadtally_free(&base);
    loadtally_free(&both);
}

static void test_diff_list_is_bounded(void **state)
{
    (void)state;
    struct loadverify_diffs d = {0};
    for (int i = 0; i < LOADVERIFY_DIFFS_KEPT + 50; i++)
        loadverify_diff_add(&d, "difference %d", i);
    assert_int_equal(d.n, LOADVERIFY_DIFFS_KEPT);
    assert_int_equal(d.total, LOADVERIFY_DIFFS_KEPT + 50);
    assert_string_equal(d.lines[3], "difference 3");
    loadverify_diffs_free(&d);
    loadverify_diff_add(NULL, "ignored");
}


/* ---- the ultimate fans ---- */

struct fans_case {
    struct loadtally_fans acked;
    uint32_t qidx[3];
    struct loadverify_population pop;
};

/* 20 users answered the three questions (slots = question indexes).
 * fan-1 right on all three, fan-2 and fan-4 on questions 1 and 2, fan-3
 * on question 1 only. */
static void fans_case_init(struct fans_case *c)
{
    assert_true(loadtally_fans_init(&c->acked, 20, 3));
    for (uint32_t s = 0; s < 3; s++)
        c->qidx[s] = s;
    loadtally_fans_mark(&c->acked, 0, 0);
    loadtally_fans_mark(&c->acked, 0, 1);
    loadtally_fans_mark(&c->acked, 0, 2);
    loadtally_fans_mark(&c->acked, 1, 0);
    loadtally_fans_mark(&c->acked, 1, 1);
    loadtally_fans_mark(&c->acked, 2, 0);
    loadtally_fans_mark(&c->acked, 3, 1);
    loadtally_fans_mark(&c->acked, 3, 0);
    loadtally_fans_mark(&c->acked, 99, 0); /* out of range: ignored */
    c->pop = (struct loadverify_population){
        .prefix = "fan-", .qidx = c->qidx, .n_slots = 3, .acked = &c->acked};
}

/* Stats with questions 1 and 2 closed, 3 open, and this fans list
 * ("user:right:ms,..."; ranks 1..n unless rank_shift). */
static json_t *fans_stats(struct fixture *f, const char *list, int rank_shift)
{
    json_t *s = render(&f->ef, &f->sent, 7);
    json_object_set_new(json_array_get(json_object_get(s, "questions"), 2), "state",
                        json_string("open"));
    json_t *arr = json_array();
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", list);
    int rank = 1 + rank_shift;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char user[64];
        long long right, ms;
        assert_int_equal(sscanf(tok, "%63[^:]:%lld:%lld", user, &right, &ms), 3);
        json_array_append_new(arr, json_pack("{s:i,s:s,s:I,s:I}", "rank", rank++, "user", user,
                                             "right", (json_int_t)right, "total_ms",
                                             (json_int_t)ms));
    }
    json_object_set_new(s, "ultimate_fans", arr);
    return s;
}

/* Differences of the fans check alone; expect (if not NULL) must be in one. */
static uint64_t check_fans(struct fixture *f, struct fans_case *c, json_t *stats,
                           const char *expect)
{
    char *text = json_dumps(stats, JSON_COMPACT);
    assert_non_null(text);
    struct loadverify_stats st;
    struct loadverify_diffs d = {0};
    char err[256];
    assert_true(loadverify_stats_parse(text, strlen(text), &f->ef, &st, &d, err, sizeof(err)));
    assert_int_equal(d.total, 0);
    assert_true(loadverify_fans(&f->ef, &c->pop, &st, &d) > 0);
    uint64_t n = d.total;
    bool found = expect == NULL;
    for (size_t i = 0; i < d.n; i++)
        found |= expect != NULL && strstr(d.lines[i], expect) != NULL;
    if (!found) {
        print_error("no difference mentions \"%s\"; got %llu:\n", expect, (unsigned long long)n);
        for (size_t i = 0; i < d.n; i++)
            print_error("  %s\n", d.lines[i]);
        fail();
    }
    loadverify_diffs_free(&d);
    loadverify_stats_free(&st);
    free(text);
    json_decref(stats);
    return n;
}

static void test_fans_checked(void **state)
{
    struct fixture *f = *state;
    struct fans_case c;
    fans_case_init(&c);
    assert_true(loadtally_fans_right(&c.acked, 3, 1));
    assert_false(loadtally_fans_right(&c.acked, 3, 2));
    assert_false(loadtally_fans_right(&c.acked, 20, 0));

    /* right: fan-1, fan-2, fan-4 qualify (questions 1 and 2 closed) */
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100,fan-4:2:300", 0),
                                NULL),
                     0);
    /* equal times: by user id */
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100,fan-4:2:100", 0),
                                NULL),
                     0);
    /* one missing */
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100", 0),
                                "2 listed, expected 3"),
                     1);
    /* one who got question 2 wrong (or had no 202 for it) */
    assert_true(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100,fan-4:2:300,fan-3:2:400",
                                             0),
                           "fan-3 listed, but no right answer of it to closed question 2") >= 1);
    /* out of order, by right and by time */
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-2:2:100,fan-1:3:900,fan-4:2:300", 0),
                                "not by right desc"),
                     1);
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-4:2:300,fan-2:2:100", 0),
                                "fan-2 (2 right, 100 ms) ranked after fan-4"),
                     1);
    /* a right count that is not what was acknowledged */
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:4:900,fan-2:2:100,fan-4:2:300", 0),
                                "fan-1 has 4 right, 3 of its right answers"),
                     1);
    /* users this run never sent, a duplicate, ranks off by one */
    assert_true(check_fans(f, &c, fans_stats(f, "fan-1:3:900,bob:2:1,fan-4:2:300", 0),
                           "bob is not a user this run sent") >= 1);
    assert_true(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-0:2:1,fan-4:2:300", 0),
                           "fan-0 is not a user") >= 1);
    assert_true(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-21:2:1,fan-4:2:300", 0),
                           "fan-21 is not a user") >= 1);
    assert_true(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100,fan-2:2:100", 0),
                           "fan-2 listed twice") >= 1);
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:900,fan-2:2:100,fan-4:2:300", 1),
                                "rank 2, expected 1"),
                     3);

    /* no closed question: nobody may be listed */
    json_t *s = fans_stats(f, "", 0);
    for (size_t i = 0; i < 3; i++)
        json_object_set_new(json_array_get(json_object_get(s, "questions"), i), "state",
                            json_string("open"));
    assert_int_equal(check_fans(f, &c, s, NULL), 0);
    s = fans_stats(f, "fan-1:3:900", 0);
    for (size_t i = 0; i < 3; i++)
        json_object_set_new(json_array_get(json_object_get(s, "questions"), i), "state",
                            json_string("open"));
    assert_true(check_fans(f, &c, s, "1 listed, expected 0") >= 1);

    /* the list missing altogether */
    s = fans_stats(f, "", 0);
    json_object_del(s, "ultimate_fans");
    assert_int_equal(check_fans(f, &c, s, "ultimate_fans: missing"), 1);
    loadtally_fans_free(&c.acked);

    /* a population too large to record */
    struct loadtally_fans big;
    assert_false(loadtally_fans_init(&big, LOADTALLY_FANS_MAX_BITS / 3 + 1, 3));
    assert_true(loadtally_fans_init(&big, 0, 3));
    assert_false(loadtally_fans_right(&big, 0, 0));
    loadtally_fans_free(&big);
}

/* More than ten users qualify: the list must hold exactly ten. */
static void test_fans_at_most_ten(void **state)
{
    struct fixture *f = *state;
    struct fans_case c;
    fans_case_init(&c);
    for (uint64_t u = 4; u < 20; u++) {
        loadtally_fans_mark(&c.acked, u, 0);
        loadtally_fans_mark(&c.acked, u, 1);
    }
    char list[256] = "";
    size_t off = 0;
    for (int u = 1; u <= 10; u++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%sfan-%d:%d:%d", u > 1 ? "," : "",
                                u == 3 ? 11 : u, u == 1 ? 3 : 2, u == 1 ? 5 : 100 + u);
    assert_int_equal(check_fans(f, &c, fans_stats(f, list, 0), NULL), 0);
    assert_int_equal(check_fans(f, &c, fans_stats(f, "fan-1:3:5,fan-2:2:10", 0),
                                "2 listed, expected 10"),
                     1);
    loadtally_fans_free(&c.acked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tally_counts),
        cmocka_unit_test(test_equal_passes),
        cmocka_unit_test(test_maybe_counted_bound),
        cmocka_unit_test(test_each_count_is_compared),
        cmocka_unit_test(test_malformed_entries),
        cmocka_unit_test(test_baseline_and_invalid),
        cmocka_unit_test(test_diff_list_is_bounded),
        cmocka_unit_test_setup_teardown(test_fans_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fans_at_most_ten, setup, teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
