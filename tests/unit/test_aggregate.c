/*
 * The aggregator: the arithmetic from tables of counter values (agg_stats.h,
 * agg_keys.h), then whole passes over the embedded store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "agg_keys.h"
#include "agg_stats.h"
#include "aggregate.h"
#include "country.h"
#include "eventfile.h"
#include "fans.h"
#include "keys.h"
#include "log.h"
#include "qstate.h"
#include "snapstore.h"
#include "store.h"
#include "store_impl.h"
#include "util.h"

/* Small sharding so a pass is quick, but more keys than one multi-get batch:
 * per question 2*4 + 2*3*4 + 2*(248*2 + 2*3) + options*4 keys. */
static const char EVENT_JSON[] =
    "{\"event\": \"t\", \"shards\": 4, \"country_shards\": 2,"
    " \"hot_countries\": {\"gb\": 3, \"unknown\": 3},"
    " \"age_buckets\": [{\"label\": \"young\", \"max\": 17}, {\"label\": \"mid\", \"max\": 40},"
    "                   {\"label\": \"old\", \"max\": 130}],"
    " \"ttl_s\": 3600, \"min_country_answers\": 3,"
    " \"questions\": ["
    "  {\"id\": 1, \"text\": \"Q one\", \"options\": [\"a\", \"b\", \"c\"], \"correct\": 1},"
    "  {\"id\": 2, \"text\": \"Q two\", \"options\": [\"x\", \"y\"], \"correct\": 0,"
    "   \"open\": true},"
    "  {\"id\": 7, \"text\": \"Q seven\", \"options\": [\"p\", \"q\", \"r\", \"s\"],"
    "   \"correct\": 3}"
    " ]}";

#define Q1_KEYS (8u + 24u + 1004u + 12u)
#define Q2_KEYS (8u + 24u + 1004u + 8u)
#define Q7_KEYS (8u + 24u + 1004u + 16u)
#define ALL_KEYS (Q1_KEYS + Q2_KEYS + Q7_KEYS)

static const uint64_t T0 = 1795378503120u; /* 2026-11-22T20:15:03.120Z */

static void load_event(struct eventfile *ef, const char *json)
{
    char err[256] = "";
    memset(ef, 0, sizeof(*ef));
    bool ok = eventfile_parse(json, strlen(json), ef, err, sizeof(err));
    if (!ok)
        fail_msg("event file: %s", err);
}

static int ci(const char *code)
{
    int c = country_lookup_strict(code, strlen(code));
    assert_true(c >= 0);
    return c;
}

/* One row of a tally table: n answers of one kind. */
struct row {
    uint32_t qi; /* question index */
    const char *country;
    uint32_t bucket; /* 0-based */
    uint32_t option;
    uint64_t n;
};

/* Adds rows to counts the way the ingest counts them: consistent breakdowns. */
static void tally(const struct eventfile *ef, struct agg_counts *counts, const struct row *rows,
                  size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        struct agg_counts *c = &counts[r->qi];
        bool right = r->option == ef->questions[r->qi].correct;
        int cc = ci(r->country);
        if (right) {
            c->right += r->n;
            c->age_right[r->bucket] += r->n;
            c->country_right[cc] += r->n;
        } else {
            c->wrong += r->n;
            c->age_wrong[r->bucket] += r->n;
            c->country_wrong[cc] += r->n;
        }
        c->by_answer[r->option] += r->n;
    }
}

/* Builds a snapshot and parses it back. */
static json_t *build(const struct eventfile *ef, const struct agg_counts *counts,
                     const struct qstate *states, const struct agg_drops *drops,
                     const char *const *keys, const struct agg_checks *checks, char **text)
{
    struct agg_snapshot_in in = {.ef = ef,
                                 .counts = counts,
                                 .states = states,
                                 .generation = 5,
                                 .now_ms = T0,
                                 .drops = drops,
                                 .keys = keys,
                                 .checks = checks};
    size_t len = 0;
    char *json = agg_stats_build_json(&in, &len);
    assert_non_null(json);
    assert_int_equal(len, strlen(json));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL)
        fail_msg("snapshot is not JSON: %s: %s", jerr.text, json);
    if (text != NULL)
        *text = json;
    else
        free(json);
    return root;
}

static json_t *question(json_t *root, uint32_t id)
{
    json_t *qs = json_object_get(root, "questions");
    size_t i;
    json_t *q;
    json_array_foreach(qs, i, q)
    {
        if (json_integer_value(json_object_get(q, "id")) == (json_int_t)id)
            return q;
    }
    fail_msg("question %u not in the snapshot", id);
    return NULL;
}

static long long jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static double jreal(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        fail_msg("%s is not a number", key);
    return json_number_value(v);
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

/* ---- key list ------------------------------------------------------------ */

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_keys_layout(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    assert_int_equal(agg_keys_question_count(&ef, 0), Q1_KEYS);
    assert_int_equal(agg_keys_question_count(&ef, 1), Q2_KEYS);
    assert_int_equal(agg_keys_question_count(&ef, 2), Q7_KEYS);

    struct agg_keys k;
    assert_true(agg_keys_build(&ef, &k));
    assert_int_equal(k.n, ALL_KEYS);
    assert_int_equal(k.q_first[0], 0);
    assert_int_equal(k.q_first[1], Q1_KEYS);
    assert_int_equal(k.q_first[2], Q1_KEYS + Q2_KEYS);
    assert_int_equal(k.q_count[2], Q7_KEYS);
    assert_string_equal(k.key[0], "t:q1right01");
    assert_string_equal(k.key[4], "t:q1wrong01");
    assert_string_equal(k.key[8], "t:q1age1right01");
    assert_string_equal(k.key[Q1_KEYS - 1], "t:q1opt2n04");
    assert_string_equal(k.key[Q1_KEYS], "t:q2right01");
    assert_string_equal(k.key[ALL_KEYS - 1], "t:q7opt3n04");
    assert_string_equal(k.key[32], "t:q1cadright01"); /* first country: Andorra */

    /* Every key once, and each length is the string's. */
    const char **sorted = malloc(k.n * sizeof(*sorted));
    assert_non_null(sorted);
    for (size_t i = 0; i < k.n; i++) {
        assert_int_equal(k.len[i], strlen(k.key[i]));
        sorted[i] = k.key[i];
    }
    qsort(sorted, k.n, sizeof(*sorted), cmp_str_ptr);
    for (size_t i = 1; i < k.n; i++)
        assert_true(strcmp(sorted[i - 1], sorted[i]) < 0);
    free(sorted);
    agg_keys_free(&k);
    agg_keys_free(&k); /* idempotent */
    eventfile_free(&ef);
}

/* The key lists of a pool (agg_keys_build_pool): every epoch, or a fold's
 * carry and the epochs from the fold on; each question's layouts adjacent. */
static void test_keys_pool_epochs_and_fold(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_keys k;
    assert_true(agg_keys_build_pool(&ef, 2, 0, &k));
    assert_int_equal(k.epochs, 3);
    assert_int_equal(k.n, 3 * ALL_KEYS);
    assert_int_equal(k.max_q_count, Q1_KEYS > Q2_KEYS ? (Q1_KEYS > Q7_KEYS ? Q1_KEYS : Q7_KEYS)
                                                      : (Q2_KEYS > Q7_KEYS ? Q2_KEYS : Q7_KEYS));
    assert_string_equal(k.key[0], "t:q1right01");
    assert_string_equal(k.key[Q1_KEYS], "t~1:q1right01");
    assert_string_equal(k.key[2 * Q1_KEYS], "t~2:q1right01");
    assert_string_equal(k.key[3 * Q1_KEYS], "t:q2right01");
    agg_keys_free(&k);

    /* folded into 2: its carry, then epoch 2 */
    assert_true(agg_keys_build_pool(&ef, 2, 2, &k));
    assert_int_equal(k.epochs, 2);
    assert_int_equal(k.n, 2 * ALL_KEYS);
    assert_string_equal(k.key[0], "t~2:f:q1right01");
    assert_string_equal(k.key[Q1_KEYS - 1], "t~2:f:q1opt2n04");
    assert_string_equal(k.key[Q1_KEYS], "t~2:q1right01");
    assert_string_equal(k.key[2 * Q1_KEYS], "t~2:f:q2right01");
    agg_keys_free(&k);

    /* folded into 1 and grown to 3: carry, epochs 1, 2, 3 */
    assert_true(agg_keys_build_pool(&ef, 3, 1, &k));
    assert_int_equal(k.epochs, 4);
    assert_string_equal(k.key[0], "t~1:f:q1right01");
    assert_string_equal(k.key[Q1_KEYS], "t~1:q1right01");
    assert_string_equal(k.key[3 * Q1_KEYS], "t~3:q1right01");
    agg_keys_free(&k);

    /* a carry adds like an epoch */
    assert_true(agg_keys_build_pool(&ef, 2, 2, &k));
    uint64_t *kept = calloc(k.n, sizeof(*kept)), *scratch = calloc(k.max_q_count, sizeof(*scratch));
    assert_non_null(kept);
    assert_non_null(scratch);
    kept[0] = 5;           /* carry q1right01 */
    kept[Q1_KEYS + 1] = 2; /* epoch 2 q1right02 */
    struct agg_counts c;
    agg_keys_sum_epochs(&ef, &k, 0, kept, scratch, &c);
    assert_int_equal(c.right, 7);
    free(kept);
    free(scratch);
    agg_keys_free(&k);

    /* a fold past the newest epoch is the newest */
    assert_true(agg_keys_build_pool(&ef, 1, 5, &k));
    assert_int_equal(k.epochs, 2);
    assert_string_equal(k.key[0], "t~1:f:q1right01");
    agg_keys_free(&k);
    eventfile_free(&ef);
}

/* The default sharding of the design: about 2,800 keys per question. */
static void test_keys_default_sharding(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, "{\"event\": \"d\", \"questions\": [{\"id\": 1, \"text\": \"q\","
                    " \"options\": [\"a\", \"b\", \"c\", \"d\"], \"correct\": 0}]}");
    /* 2*100 + 3*2*100 + 2*(247*3 + 3*15) + 4*100 */
    assert_int_equal(agg_keys_question_count(&ef, 0), 2772);
    eventfile_free(&ef);
}

/* An event over AGG_MAX_KEYS is refused before anything is allocated. */
static void test_keys_too_many(void **state)
{
    (void)state;
    struct event_question qs[8];
    char *opts[EVENT_MAX_OPTIONS];
    memset(opts, 0, sizeof(opts));
    for (size_t i = 0; i < LT_ARRAY_LEN(qs); i++) {
        qs[i] = (struct event_question){
            .id = (uint32_t)i + 1, .text = "q", .options = opts, .n_options = EVENT_MAX_OPTIONS};
    }
    struct eventfile ef = {.name = "big",
                           .shards = EVENT_MAX_SHARDS,
                           .n_age_buckets = EVENT_MAX_AGE_BUCKETS,
                           .questions = qs,
                           .n_questions = LT_ARRAY_LEN(qs)};
    for (int c = 0; c < COUNTRY_COUNT; c++)
        ef.country_shard_count[c] = EVENT_MAX_SHARDS;
    /* 550,000 keys per question, 4.4 million in all. */
    assert_int_equal(agg_keys_question_count(&ef, 0), 550000);
    struct agg_keys k;
    assert_false(agg_keys_build(&ef, &k));
    assert_null(k.arena);
    assert_int_equal(k.n, 0);
    assert_null(aggregator_create(&ef));
}

/* Sorted (key, index) pairs to find where a key sits in the layout. */
struct key_index {
    const char *key;
    size_t index;
};

static int cmp_key_index(const void *a, const void *b)
{
    return strcmp(((const struct key_index *)a)->key, ((const struct key_index *)b)->key);
}

static struct key_index *index_keys(const struct agg_keys *k)
{
    struct key_index *ix = malloc(k->n * sizeof(*ix));
    assert_non_null(ix);
    for (size_t i = 0; i < k->n; i++)
        ix[i] = (struct key_index){.key = k->key[i], .index = i};
    qsort(ix, k->n, sizeof(*ix), cmp_key_index);
    return ix;
}

static size_t find_key(const struct key_index *ix, size_t n, const char *key)
{
    struct key_index probe = {.key = key};
    const struct key_index *hit = bsearch(&probe, ix, n, sizeof(*ix), cmp_key_index);
    if (hit == NULL)
        fail_msg("key %s is not in the key list", key);
    return hit->index;
}

/* Every key an answer increments is in the list, and summing the shards of
 * the layout gives back the tally. */
static void test_keys_sum_matches_answers(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_keys k;
    assert_true(agg_keys_build(&ef, &k));
    struct key_index *ix = index_keys(&k);
    uint64_t *values = calloc(k.n, sizeof(*values));
    struct agg_counts *expect = calloc(ef.n_questions, sizeof(*expect));
    struct agg_counts *got = calloc(1, sizeof(*got));
    assert_non_null(values);
    assert_non_null(expect);
    assert_non_null(got);

    struct util_rng rng;
    util_rng_seed(&rng, 42);
    static const char *const codes[] = {"gb", "us", "fr", "unknown", "zw", "ad"};
    for (int i = 0; i < 600; i++) {
        uint32_t qi = util_rng_below(&rng, ef.n_questions);
        const struct event_question *q = &ef.questions[qi];
        struct row r = {.qi = qi,
                        .country = codes[util_rng_below(&rng, LT_ARRAY_LEN(codes))],
                        .bucket = util_rng_below(&rng, ef.n_age_buckets),
                        .option = util_rng_below(&rng, q->n_options),
                        .n = 1};
        tally(&ef, expect, &r, 1);
        struct answer_counters ac = {.question = q->id,
                                     .outcome = r.option == q->correct ? KEY_RIGHT : KEY_WRONG,
                                     .age_bucket = r.bucket,
                                     .country = ci(r.country),
                                     .option = r.option};
        struct answer_keys ak;
        keys_for_answer(&ef, &ac, &rng, &ak);
        for (int j = 0; j < KEYS_PER_ANSWER; j++)
            values[find_key(ix, k.n, ak.key[j])]++;
    }
    for (uint32_t qi = 0; qi < ef.n_questions; qi++) {
        agg_keys_sum_question(&ef, qi, values + k.q_first[qi], got);
        assert_memory_equal(got, &expect[qi], sizeof(*got));
        assert_true(got->right + got->wrong > 0);
    }
    free(got);
    free(expect);
    free(values);
    free(ix);
    agg_keys_free(&k);
    eventfile_free(&ef);
}

/* ---- arithmetic ------------------------------------------------------------ */

static void test_sat_add_and_ratio(void **state)
{
    (void)state;
    assert_int_equal(agg_sat_add(2, 3), 5);
    assert_int_equal(agg_sat_add((uint64_t)INT64_MAX - 1, 1), INT64_MAX);
    assert_int_equal(agg_sat_add((uint64_t)INT64_MAX, 1), INT64_MAX);
    assert_int_equal(agg_sat_add(UINT64_MAX, UINT64_MAX), INT64_MAX);

    assert_true(agg_stats_ratio(0, 0) == 0.0);
    assert_true(agg_stats_ratio(2, 3) == 0.6667);
    assert_true(agg_stats_ratio(1, 3) == 0.3333);
    assert_true(agg_stats_ratio(7, 7) == 1.0);
    assert_true(agg_stats_ratio(1, 10000) == 0.0001);

    assert_true(agg_stats_ratio_cmp(1, 3, 333333, 1000000) > 0);
    assert_true(agg_stats_ratio_cmp(333333, 1000000, 1, 3) < 0);
    assert_int_equal(agg_stats_ratio_cmp(2, 4, 3, 6), 0);
    /* Counts whose products overflow 64 bits are still compared exactly. */
    uint64_t big = (uint64_t)1 << 62;
    assert_true(agg_stats_ratio_cmp(big - 1, big, big - 2, big) > 0);
    assert_int_equal(agg_stats_ratio_cmp(big, big, 1, 1), 0);
}

static void test_grow_only(void **state)
{
    (void)state;
    uint64_t kept[6] = {5, 3, 0, 9, 9, 1};
    const uint64_t read[6] = {4, 7, 0, 9, 0, 1};
    struct agg_drops drops = {0};
    /* Only keys 1..4 are in this run: key 0 dropped too but is not looked at. */
    agg_stats_grow_only(kept, read, 1, 4, &drops);
    const uint64_t expect[6] = {5, 7, 0, 9, 9, 1};
    assert_memory_equal(kept, expect, sizeof(kept));
    assert_int_equal(drops.total, 1);
    assert_int_equal(drops.listed, 1);
    assert_int_equal(drops.list[0].key, 4);
    assert_int_equal(drops.list[0].old_value, 9);
    assert_int_equal(drops.list[0].new_value, 0);

    /* More drops than are listed: all counted. */
    uint64_t k2[30], r2[30];
    for (size_t i = 0; i < 30; i++) {
        k2[i] = 10 + i;
        r2[i] = i;
    }
    struct agg_drops many = {0};
    agg_stats_grow_only(k2, r2, 0, 30, &many);
    assert_int_equal(many.total, 30);
    assert_int_equal(many.listed, AGG_MAX_WARNINGS);
    assert_int_equal(k2[29], 39);
}

static void test_warnings_in_snapshot(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    struct qstate states[3] = {{0}};
    static const char *const keys[] = {"t:q1right01", "t:q1wrong02"};
    struct agg_drops drops = {.listed = 2, .total = 25};
    drops.list[0] = (struct agg_drop){.key = 1, .old_value = 12, .new_value = 3};
    drops.list[1] = (struct agg_drop){.key = 0, .old_value = 7, .new_value = 0};
    json_t *root = build(&ef, counts, states, &drops, keys, NULL, NULL);
    json_t *w = json_object_get(root, "warnings");
    assert_int_equal(json_array_size(w), 3);
    assert_string_equal(json_string_value(json_array_get(w, 0)),
                        "counter t:q1wrong02 went backwards (12 -> 3): the store lost data; "
                        "keeping 12");
    assert_string_equal(json_string_value(json_array_get(w, 1)),
                        "counter t:q1right01 went backwards (7 -> 0): the store lost data; "
                        "keeping 7");
    assert_string_equal(json_string_value(json_array_get(w, 2)),
                        "... and 23 more counters went backwards");
    json_decref(root);

    /* No drops: an empty list, and checks that ran clean. */
    root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(root, "warnings")), 0);
    json_t *checks = json_object_get(root, "checks");
    assert_true(json_is_true(json_object_get(checks, "ok")));
    assert_int_equal(json_array_size(json_object_get(checks, "mismatches")), 0);
    json_decref(root);
    free(counts);
    eventfile_free(&ef);
}

/* The table used by the snapshot tests. Question 1: correct option 1. */
static const struct row TABLE[] = {
    {0, "gb", 0, 1, 10}, {0, "gb", 1, 0, 4}, {0, "us", 2, 1, 6}, {0, "us", 2, 2, 6},
    {0, "fr", 1, 1, 2},  {0, "unknown", 0, 1, 9}, {0, "ie", 2, 1, 5}, {0, "ie", 2, 0, 1},
    {1, "de", 0, 0, 3},  {1, "de", 1, 1, 1}, {1, "gb", 2, 0, 2},
};

static void test_snapshot_sums(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    tally(&ef, counts, TABLE, LT_ARRAY_LEN(TABLE));
    struct qstate states[3] = {{.kind = QSTATE_OPEN, .open_ms = T0 - 5000},
                               {.kind = QSTATE_OPEN, .open_ms = T0 - 100},
                               {0}};
    struct agg_checks checks = {0};
    for (uint32_t qi = 0; qi < ef.n_questions; qi++)
        assert_int_equal(agg_stats_check(&ef, qi, &counts[qi], &checks), 0);
    char *text = NULL;
    json_t *root = build(&ef, counts, states, NULL, NULL, &checks, &text);

    assert_string_equal(jstr(root, "event"), "t");
    assert_int_equal(jint(root, "generation"), 5);
    char iso[40];
    util_format_iso8601(T0, iso, sizeof(iso));
    assert_string_equal(jstr(root, "generated_at"), iso);

    json_t *totals = json_object_get(root, "totals");
    assert_int_equal(jint(totals, "answers"), 49);
    assert_int_equal(jint(totals, "right"), 37);
    assert_int_equal(jint(totals, "wrong"), 12);

    /* Event-file order, every question, also the one without answers. */
    json_t *qs = json_object_get(root, "questions");
    assert_int_equal(json_array_size(qs), 3);
    assert_int_equal(jint(json_array_get(qs, 0), "id"), 1);
    assert_int_equal(jint(json_array_get(qs, 2), "id"), 7);

    json_t *q1 = question(root, 1);
    assert_string_equal(jstr(q1, "text"), "Q one");
    assert_int_equal(json_array_size(json_object_get(q1, "options")), 3);
    assert_string_equal(json_string_value(json_array_get(json_object_get(q1, "options"), 2)), "c");
    assert_string_equal(jstr(q1, "state"), "open");
    assert_int_equal(jint(q1, "answers"), 43);
    assert_int_equal(jint(q1, "right"), 32);
    assert_int_equal(jint(q1, "wrong"), 11);
    assert_true(jreal(q1, "right_ratio") == 0.7442);
    assert_non_null(strstr(text, "\"right_ratio\":0.7442"));

    json_t *ba = json_object_get(q1, "by_answer");
    assert_int_equal(json_array_size(ba), 3);
    assert_int_equal(json_integer_value(json_array_get(ba, 0)), 5);
    assert_int_equal(json_integer_value(json_array_get(ba, 1)), 32);
    assert_int_equal(json_integer_value(json_array_get(ba, 2)), 6);

    json_t *age = json_object_get(q1, "by_age");
    assert_int_equal(json_array_size(age), 3);
    static const long long age_expect[3][3] = {{19, 19, 0}, {6, 2, 4}, {18, 11, 7}};
    static const char *const labels[3] = {"young", "mid", "old"};
    for (size_t b = 0; b < 3; b++) {
        json_t *e = json_array_get(age, b);
        assert_int_equal(jint(e, "bucket"), b + 1);
        assert_string_equal(jstr(e, "label"), labels[b]);
        assert_int_equal(jint(e, "answers"), age_expect[b][0]);
        assert_int_equal(jint(e, "right"), age_expect[b][1]);
        assert_int_equal(jint(e, "wrong"), age_expect[b][2]);
    }

    /* Answers desc, then code asc: gb 14, us 12, unknown 9, ie 6, fr 2. */
    json_t *bc = json_object_get(q1, "by_country");
    static const struct {
        const char *cc;
        long long answers, right, wrong;
        double ratio;
    } ctry[] = {{"gb", 14, 10, 4, 0.7143},
                {"us", 12, 6, 6, 0.5},
                {"unknown", 9, 9, 0, 1.0},
                {"ie", 6, 5, 1, 0.8333},
                {"fr", 2, 2, 0, 1.0}};
    assert_int_equal(json_array_size(bc), LT_ARRAY_LEN(ctry));
    for (size_t i = 0; i < LT_ARRAY_LEN(ctry); i++) {
        json_t *e = json_array_get(bc, i);
        assert_string_equal(jstr(e, "country"), ctry[i].cc);
        assert_int_equal(jint(e, "answers"), ctry[i].answers);
        assert_int_equal(jint(e, "right"), ctry[i].right);
        assert_int_equal(jint(e, "wrong"), ctry[i].wrong);
        assert_true(jreal(e, "right_ratio") == ctry[i].ratio);
    }
    /* fr (2 answers) is under the threshold of 3, unknown is never ranked:
     * ie's 0.8333 beats gb's 0.7143. */
    json_t *best = json_object_get(q1, "best_country");
    assert_string_equal(jstr(best, "country"), "ie");
    assert_int_equal(jint(best, "answers"), 6);
    assert_true(jreal(best, "right_ratio") == 0.8333);

    /* Question 7: no answers at all. */
    json_t *q7 = question(root, 7);
    assert_int_equal(jint(q7, "answers"), 0);
    assert_true(json_is_real(json_object_get(q7, "right_ratio")));
    assert_true(jreal(q7, "right_ratio") == 0.0);
    assert_int_equal(json_array_size(json_object_get(q7, "by_country")), 0);
    assert_true(json_is_null(json_object_get(q7, "best_country")));
    assert_int_equal(json_array_size(json_object_get(q7, "by_answer")), 4);
    assert_int_equal(json_array_size(json_object_get(q7, "by_age")), 3);
    assert_int_equal(jint(json_array_get(json_object_get(q7, "by_age"), 2), "answers"), 0);

    assert_true(json_is_array(json_object_get(root, "ultimate_fans")));
    assert_int_equal(json_array_size(json_object_get(root, "ultimate_fans")), 0);
    assert_true(json_is_true(json_object_get(json_object_get(root, "checks"), "ok")));

    json_decref(root);
    free(text);
    free(counts);
    eventfile_free(&ef);
}

static void test_correct_hidden_until_closed(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    tally(&ef, counts, TABLE, LT_ARRAY_LEN(TABLE));
    struct qstate states[3] = {
        {.kind = QSTATE_OPEN, .open_ms = T0 - 60000},
        {.kind = QSTATE_NOT_OPEN},
        {.kind = QSTATE_CLOSED, .open_ms = T0 - 120000, .close_ms = T0 - 60000},
    };
    json_t *root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    char iso[40];

    json_t *q1 = question(root, 1);
    assert_string_equal(jstr(q1, "state"), "open");
    assert_null(json_object_get(q1, "correct"));
    util_format_iso8601(T0 - 60000, iso, sizeof(iso));
    assert_string_equal(jstr(q1, "opened_at"), iso);
    assert_null(json_object_get(q1, "closed_at"));
    /* Live right/wrong are shown while open; only the right option is not. */
    assert_int_equal(jint(q1, "right"), 32);

    json_t *q2 = question(root, 2);
    assert_string_equal(jstr(q2, "state"), "not_open");
    assert_null(json_object_get(q2, "correct"));
    assert_null(json_object_get(q2, "opened_at"));

    json_t *q7 = question(root, 7);
    assert_string_equal(jstr(q7, "state"), "closed");
    assert_int_equal(jint(q7, "correct"), 3);
    util_format_iso8601(T0 - 120000, iso, sizeof(iso));
    assert_string_equal(jstr(q7, "opened_at"), iso);
    util_format_iso8601(T0 - 60000, iso, sizeof(iso));
    assert_string_equal(jstr(q7, "closed_at"), iso);
    json_decref(root);

    /* Closing question 1 reveals its answer. */
    states[0] = (struct qstate){.kind = QSTATE_CLOSED, .open_ms = T0 - 60000, .close_ms = T0};
    root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    assert_int_equal(jint(question(root, 1), "correct"), 1);
    json_decref(root);
    free(counts);
    eventfile_free(&ef);
}

static void test_consistency_check(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    tally(&ef, counts, TABLE, LT_ARRAY_LEN(TABLE));
    struct agg_checks checks = {0};
    assert_int_equal(agg_stats_check(&ef, 0, &counts[0], &checks), 0);
    assert_int_equal(checks.total, 0);

    /* One answer whose age increment was lost. */
    counts[0].age_right[1]--;
    assert_int_equal(agg_stats_check(&ef, 0, &counts[0], &checks), 1);
    assert_int_equal(checks.total, 1);
    assert_int_equal(checks.list[0].question, 1);
    assert_string_equal(checks.list[0].check, "by_age.right");
    assert_int_equal(checks.list[0].expected, 32);
    assert_int_equal(checks.list[0].actual, 31);
    counts[0].age_right[1]++;

    /* A wrong answer counted under a country but not in the total. */
    counts[1].country_wrong[ci("fr")] += 2;
    /* An option count that lands on the correct one without a right. */
    counts[1].by_answer[0]++;
    memset(&checks, 0, sizeof(checks));
    assert_int_equal(agg_stats_check(&ef, 1, &counts[1], &checks), 3);
    assert_string_equal(checks.list[0].check, "by_country.wrong");
    assert_int_equal(checks.list[0].expected, 1);
    assert_int_equal(checks.list[0].actual, 3);
    assert_string_equal(checks.list[1].check, "by_answer");
    assert_int_equal(checks.list[1].expected, 6);
    assert_int_equal(checks.list[1].actual, 7);
    assert_string_equal(checks.list[2].check, "by_answer.correct");
    assert_int_equal(checks.list[2].expected, 5);
    assert_int_equal(checks.list[2].actual, 6);

    /* The right total lost an increment its breakdowns have: every breakdown of
     * right disagrees. */
    counts[0].right--;
    assert_int_equal(agg_stats_check(&ef, 0, &counts[0], &checks), 4);
    assert_int_equal(checks.total, 7);

    struct qstate states[3] = {{0}};
    json_t *root = build(&ef, counts, states, NULL, NULL, &checks, NULL);
    json_t *ch = json_object_get(root, "checks");
    assert_true(json_is_false(json_object_get(ch, "ok")));
    assert_int_equal(jint(ch, "mismatch_count"), 7);
    json_t *m = json_object_get(ch, "mismatches");
    assert_int_equal(json_array_size(m), 7);
    assert_int_equal(jint(json_array_get(m, 0), "question"), 2);
    assert_string_equal(jstr(json_array_get(m, 0), "check"), "by_country.wrong");
    assert_int_equal(jint(json_array_get(m, 0), "expected"), 1);
    assert_int_equal(jint(json_array_get(m, 0), "actual"), 3);
    json_decref(root);

    /* The list is capped, the count is not. */
    memset(&checks, 0, sizeof(checks));
    for (int i = 0; i < 6; i++)
        agg_stats_check(&ef, 0, &counts[0], &checks);
    assert_int_equal(checks.total, 24);
    assert_int_equal(checks.listed, AGG_MAX_MISMATCHES);
    free(counts);
    eventfile_free(&ef);
}

static void test_best_country_rules(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    static const struct row rows[] = {
        /* q1 (correct 1): fr 2/2 under the threshold, unknown 5/5 excluded,
         * de 3/4 and ie 6/8 tie at 0.75: ie has more answers. */
        {0, "fr", 0, 1, 2}, {0, "unknown", 0, 1, 5}, {0, "de", 0, 1, 3}, {0, "de", 0, 0, 1},
        {0, "ie", 0, 1, 6}, {0, "ie", 0, 0, 2},
        /* q2 (correct 0): at and de tie on ratio and answers: at by code. */
        {1, "de", 1, 0, 3}, {1, "de", 1, 1, 1}, {1, "at", 1, 0, 3}, {1, "at", 1, 1, 1},
        /* q7 (correct 3): nobody reaches 3 answers except unknown. */
        {2, "gb", 2, 3, 2}, {2, "unknown", 2, 3, 50},
    };
    tally(&ef, counts, rows, LT_ARRAY_LEN(rows));
    struct qstate states[3] = {{0}};
    json_t *root = build(&ef, counts, states, NULL, NULL, NULL, NULL);

    json_t *b1 = json_object_get(question(root, 1), "best_country");
    assert_string_equal(jstr(b1, "country"), "ie");
    assert_int_equal(jint(b1, "answers"), 8);
    assert_true(jreal(b1, "right_ratio") == 0.75);
    json_t *b2 = json_object_get(question(root, 2), "best_country");
    assert_string_equal(jstr(b2, "country"), "at");
    assert_true(json_is_null(json_object_get(question(root, 7), "best_country")));
    /* by_country still lists everyone with an answer, unknown included. */
    json_t *bc7 = json_object_get(question(root, 7), "by_country");
    assert_int_equal(json_array_size(bc7), 2);
    assert_string_equal(jstr(json_array_get(bc7, 0), "country"), "unknown");
    json_decref(root);

    /* The exact ratio decides, not its rounding: both show 0.6667, but
     * 199999/300000 < 2/3, so be wins despite fewer answers. */
    memset(counts, 0, ef.n_questions * sizeof(*counts));
    static const struct row close_rows[] = {
        {0, "nl", 0, 1, 199999}, {0, "nl", 0, 0, 100001}, {0, "be", 0, 1, 4}, {0, "be", 0, 0, 2},
    };
    tally(&ef, counts, close_rows, LT_ARRAY_LEN(close_rows));
    root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    b1 = json_object_get(question(root, 1), "best_country");
    assert_string_equal(jstr(b1, "country"), "be");
    assert_true(jreal(b1, "right_ratio") == 0.6667);
    json_t *nl = json_array_get(json_object_get(question(root, 1), "by_country"), 0);
    assert_string_equal(jstr(nl, "country"), "nl");
    assert_true(jreal(nl, "right_ratio") == 0.6667);
    json_decref(root);
    free(counts);
    eventfile_free(&ef);
}

static void test_countries_ranking(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    /* Summed over questions: es 2/2 (under 3), unknown 9/9 (never ranked),
     * pt 3/3 = 1.0, se 6/8 = 0.75, no 3/4 = 0.75, dk 3/4 = 0.75, it 1/4. */
    static const struct row rows[] = {
        {0, "es", 0, 1, 1}, {1, "es", 0, 0, 1},  {0, "unknown", 0, 1, 9}, {0, "pt", 0, 1, 2},
        {2, "pt", 0, 3, 1}, {0, "se", 0, 1, 3},  {1, "se", 0, 0, 3},      {2, "se", 0, 0, 2},
        {0, "no", 0, 1, 3}, {0, "no", 0, 2, 1},  {1, "dk", 0, 0, 3},      {1, "dk", 0, 1, 1},
        {2, "it", 0, 3, 1}, {2, "it", 1, 2, 3},
    };
    tally(&ef, counts, rows, LT_ARRAY_LEN(rows));
    struct qstate states[3] = {{0}};
    json_t *root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    json_t *c = json_object_get(root, "countries");
    static const struct {
        const char *cc;
        long long answers, right;
        double ratio;
    } expect[] = {{"pt", 3, 3, 1.0}, {"se", 8, 6, 0.75}, {"dk", 4, 3, 0.75},
                  {"no", 4, 3, 0.75}, {"it", 4, 1, 0.25}};
    assert_int_equal(json_array_size(c), LT_ARRAY_LEN(expect));
    for (size_t i = 0; i < LT_ARRAY_LEN(expect); i++) {
        json_t *e = json_array_get(c, i);
        assert_string_equal(jstr(e, "country"), expect[i].cc);
        assert_int_equal(jint(e, "answers"), expect[i].answers);
        assert_int_equal(jint(e, "right"), expect[i].right);
        assert_int_equal(jint(e, "wrong"), expect[i].answers - expect[i].right);
        assert_true(jreal(e, "right_ratio") == expect[i].ratio);
    }
    json_decref(root);
    free(counts);
    eventfile_free(&ef);
}

/* Counts past INT64_MAX saturate instead of wrapping to a smaller total. */
static void test_snapshot_saturates(void **state)
{
    (void)state;
    struct eventfile ef;
    load_event(&ef, EVENT_JSON);
    struct agg_counts *counts = calloc(ef.n_questions, sizeof(*counts));
    counts[0].right = (uint64_t)INT64_MAX - 1;
    counts[1].right = 5;
    counts[1].wrong = UINT64_MAX;
    struct qstate states[3] = {{0}};
    json_t *root = build(&ef, counts, states, NULL, NULL, NULL, NULL);
    json_t *totals = json_object_get(root, "totals");
    assert_int_equal(jint(totals, "right"), INT64_MAX);
    assert_int_equal(jint(totals, "answers"), INT64_MAX);
    assert_int_equal(jint(question(root, 2), "wrong"), INT64_MAX);
    json_decref(root);
    free(counts);
    eventfile_free(&ef);
}

/* ---- whole passes over the embedded store ------------------------------- */

struct fixture {
    struct eventfile ef;
    struct store *s;
    struct aggregator *a;
    struct util_rng rng;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    load_event(&f->ef, EVENT_JSON);
    char err[256];
    f->s = store_open("memory:", err, sizeof(err));
    assert_non_null(f->s);
    f->a = aggregator_create(&f->ef);
    assert_non_null(f->a);
    util_rng_seed(&f->rng, 7);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    aggregator_free(f->a);
    store_close(f->s);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

/* Increments the four keys of n identical answers, as the ingest would. */
static void answer(struct fixture *f, uint32_t qid, const char *country, uint32_t age,
                   uint32_t option, uint64_t n)
{
    const struct event_question *q = eventfile_question(&f->ef, qid);
    assert_non_null(q);
    struct answer_counters ac = {.question = qid,
                                 .outcome = option == q->correct ? KEY_RIGHT : KEY_WRONG,
                                 .age_bucket = eventfile_age_bucket(&f->ef, age),
                                 .country = country_lookup(country, strlen(country)),
                                 .option = option};
    struct answer_keys ak;
    keys_for_answer(&f->ef, &ac, &f->rng, &ak);
    struct store_incr items[KEYS_PER_ANSWER];
    for (int i = 0; i < KEYS_PER_ANSWER; i++)
        items[i] = (struct store_incr){.key = ak.key[i], .keylen = ak.len[i], .delta = n};
    assert_int_equal(store_incr_batch(f->s, items, KEYS_PER_ANSWER, f->ef.ttl_s), STORE_OK);
}

static void incr_key(struct fixture *f, const char *key, uint64_t n)
{
    struct store_incr it = {.key = key, .keylen = strlen(key), .delta = n};
    assert_int_equal(store_incr_batch(f->s, &it, 1, f->ef.ttl_s), STORE_OK);
}

static void set_state(struct fixture *f, uint32_t qid, enum qstate_kind kind, uint64_t open_ms,
                      uint64_t close_ms)
{
    struct qstate st = {.kind = kind, .open_ms = open_ms, .close_ms = close_ms};
    assert_int_equal(qstate_write(f->s, &f->ef, qid, &st), STORE_OK);
}

/* Fetches and parses the published snapshot; checks its generation. */
static json_t *fetch(struct fixture *f, uint64_t want_generation)
{
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(f->s, "t", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, want_generation);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    free(json);
    assert_non_null(root);
    assert_int_equal(jint(root, "generation"), want_generation);
    return root;
}

static void test_pass_end_to_end(void **state)
{
    struct fixture *f = *state;
    set_state(f, 7, QSTATE_CLOSED, T0 - 90000, T0 - 30000);
    set_state(f, 1, QSTATE_OPEN, T0 - 20000, 0);
    answer(f, 1, "gb", 30, 1, 10); /* right */
    answer(f, 1, "uk", 12, 0, 3);  /* wrong, uk counts as gb */
    answer(f, 1, "US", 70, 2, 4);  /* wrong */
    answer(f, 1, "xx", 18, 1, 2);  /* right, unknown country */
    answer(f, 7, "ie", 25, 3, 5);  /* right */
    answer(f, 7, "ie", 25, 0, 1);  /* wrong */
    answer(f, 2, "fr", 99, 0, 1);  /* not opened yet, but counted all the same */

    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.generation, 1);
    assert_int_equal(st.passes, 1);
    assert_int_equal(st.failed_passes, 0);
    assert_int_equal(st.keys_read, ALL_KEYS);
    assert_int_equal(st.keys_total, ALL_KEYS);
    assert_int_equal(st.warnings, 0);
    assert_int_equal(st.check_failures, 0);
    /* Closed 30 s ago, past the 10 s grace: this read was its last. */
    assert_int_equal(st.questions_settled, 1);

    json_t *root = fetch(f, 1);
    json_t *totals = json_object_get(root, "totals");
    assert_int_equal(jint(totals, "answers"), 26);
    assert_int_equal(jint(totals, "right"), 18);
    assert_int_equal(jint(totals, "wrong"), 8);

    json_t *q1 = question(root, 1);
    assert_string_equal(jstr(q1, "state"), "open");
    assert_null(json_object_get(q1, "correct"));
    assert_int_equal(jint(q1, "answers"), 19);
    assert_int_equal(jint(q1, "right"), 12);
    assert_int_equal(jint(q1, "wrong"), 7);
    assert_true(jreal(q1, "right_ratio") == 0.6316);
    json_t *ba = json_object_get(q1, "by_answer");
    assert_int_equal(json_integer_value(json_array_get(ba, 0)), 3);
    assert_int_equal(json_integer_value(json_array_get(ba, 1)), 12);
    assert_int_equal(json_integer_value(json_array_get(ba, 2)), 4);
    json_t *age = json_object_get(q1, "by_age");
    assert_int_equal(jint(json_array_get(age, 0), "answers"), 3); /* 12 */
    assert_int_equal(jint(json_array_get(age, 0), "wrong"), 3);
    assert_int_equal(jint(json_array_get(age, 1), "answers"), 12); /* 18, 30 */
    assert_int_equal(jint(json_array_get(age, 1), "right"), 12);
    assert_int_equal(jint(json_array_get(age, 2), "answers"), 4); /* 70 */
    assert_int_equal(jint(json_array_get(age, 2), "wrong"), 4);
    json_t *bc = json_object_get(q1, "by_country");
    assert_int_equal(json_array_size(bc), 3);
    assert_string_equal(jstr(json_array_get(bc, 0), "country"), "gb");
    assert_int_equal(jint(json_array_get(bc, 0), "answers"), 13);
    assert_int_equal(jint(json_array_get(bc, 0), "right"), 10);
    assert_string_equal(jstr(json_array_get(bc, 1), "country"), "us");
    assert_string_equal(jstr(json_array_get(bc, 2), "country"), "unknown");
    assert_int_equal(jint(json_array_get(bc, 2), "answers"), 2);
    assert_string_equal(jstr(json_object_get(q1, "best_country"), "country"), "gb");

    json_t *q7 = question(root, 7);
    assert_string_equal(jstr(q7, "state"), "closed");
    assert_int_equal(jint(q7, "correct"), 3);
    assert_int_equal(jint(q7, "answers"), 6);
    assert_true(jreal(q7, "right_ratio") == 0.8333);
    assert_string_equal(jstr(json_object_get(q7, "best_country"), "country"), "ie");

    json_t *q2 = question(root, 2);
    assert_string_equal(jstr(q2, "state"), "not_open");
    assert_int_equal(jint(q2, "answers"), 1);
    assert_int_equal(jint(q2, "right"), 1);

    /* Overall: gb 13 (10 right), ie 6 (5), us 4 (0); fr has 1 answer. */
    json_t *c = json_object_get(root, "countries");
    assert_int_equal(json_array_size(c), 3);
    assert_string_equal(jstr(json_array_get(c, 0), "country"), "ie");
    assert_string_equal(jstr(json_array_get(c, 1), "country"), "gb");
    assert_string_equal(jstr(json_array_get(c, 2), "country"), "us");
    assert_true(json_is_true(json_object_get(json_object_get(root, "checks"), "ok")));
    assert_int_equal(json_array_size(json_object_get(root, "warnings")), 0);
    json_decref(root);

    /* The next pass skips the settled question's keys and keeps its sums,
     * even if a straggler lands after the grace. */
    answer(f, 7, "ie", 25, 3, 100);
    answer(f, 1, "gb", 30, 1, 1);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 1000), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS - Q7_KEYS);
    root = fetch(f, 2);
    assert_int_equal(jint(question(root, 7), "answers"), 6);
    assert_int_equal(jint(question(root, 1), "answers"), 20);
    json_decref(root);

    /* Every AGGREGATE_SETTLED_REREAD_MS the settled question is read again:
     * the straggler shows, and the question settles once more. */
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + AGGREGATE_SETTLED_REREAD_MS), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS);
    assert_int_equal(st.questions_settled, 1);
    root = fetch(f, 3);
    assert_int_equal(jint(question(root, 7), "answers"), 106); /* 6 and the 100 late */
    json_decref(root);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + AGGREGATE_SETTLED_REREAD_MS + 1000),
                     STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS - Q7_KEYS);
}

/* A question closed less than the grace ago is still read; once past the
 * grace it is read one last time, then cached; reopening it reads it again. */
static void test_closed_question_settles(void **state)
{
    struct fixture *f = *state;
    struct aggregator_stats st;
    set_state(f, 1, QSTATE_CLOSED, T0 - 60000, T0);
    answer(f, 1, "gb", 30, 1, 2);

    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 9999), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS);
    assert_int_equal(st.questions_settled, 0);

    answer(f, 1, "gb", 30, 1, 3); /* a late increment, still within the grace */
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 10000), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS);
    assert_int_equal(st.questions_settled, 1);
    json_t *root = fetch(f, 2);
    assert_int_equal(jint(question(root, 1), "answers"), 5);
    json_decref(root);

    answer(f, 1, "gb", 30, 1, 4);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 11000), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS - Q1_KEYS);
    root = fetch(f, 3);
    assert_int_equal(jint(question(root, 1), "answers"), 5);
    json_decref(root);

    /* Reopened: its keys are read again and the straggler shows. */
    set_state(f, 1, QSTATE_OPEN, T0 + 11500, 0);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 12000), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.keys_read, ALL_KEYS);
    assert_int_equal(st.questions_settled, 0);
    root = fetch(f, 4);
    assert_int_equal(jint(question(root, 1), "answers"), 9);
    json_decref(root);

    /* A shorter grace settles it at once after the next close. */
    aggregator_set_grace_ms(f->a, 0);
    set_state(f, 1, QSTATE_CLOSED, T0 + 11500, T0 + 12500);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 12500), STORE_OK);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.questions_settled, 1);
}

/* A counter that reads lower (a node restarted empty) keeps its value: the
 * totals do not go backwards, and the snapshot says why. */
static void test_pass_grow_only(void **state)
{
    struct fixture *f = *state;
    incr_key(f, "t:q2right03", 5);
    incr_key(f, "t:q2age1right01", 5);
    incr_key(f, "t:q2cunknownright02", 5);
    incr_key(f, "t:q2opt0n04", 5);
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    json_t *root = fetch(f, 1);
    assert_int_equal(jint(json_object_get(root, "totals"), "right"), 5);
    json_decref(root);

    assert_int_equal(store_delete(f->s, "t:q2right03", strlen("t:q2right03")), STORE_OK);
    incr_key(f, "t:q2opt0n04", 2); /* the breakdowns grew meanwhile */
    assert_int_equal(store_delete(f->s, "t:q2opt0n04", strlen("t:q2opt0n04")), STORE_OK);
    incr_key(f, "t:q2opt0n04", 1);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 1000), STORE_OK);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.warnings, 2);
    root = fetch(f, 2);
    json_t *q2 = question(root, 2);
    assert_int_equal(jint(q2, "right"), 5);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(q2, "by_answer"), 0)), 5);
    assert_int_equal(jint(json_object_get(root, "totals"), "answers"), 5);
    json_t *w = json_object_get(root, "warnings");
    assert_int_equal(json_array_size(w), 2);
    assert_string_equal(json_string_value(json_array_get(w, 0)),
                        "counter t:q2right03 went backwards (5 -> 0): the store lost data; "
                        "keeping 5");
    assert_string_equal(json_string_value(json_array_get(w, 1)),
                        "counter t:q2opt0n04 went backwards (5 -> 1): the store lost data; "
                        "keeping 5");
    json_decref(root);

    /* Once the counters pass their old values again, they count and the
     * warnings are gone. */
    incr_key(f, "t:q2right03", 7);
    incr_key(f, "t:q2opt0n04", 6);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 2000), STORE_OK);
    root = fetch(f, 3);
    assert_int_equal(jint(question(root, 2), "right"), 7);
    assert_int_equal(json_array_size(json_object_get(root, "warnings")), 0);
    json_decref(root);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.warnings, 2);
}

/* A breakdown that does not add up is reported, and the snapshot is still
 * published. */
static void test_pass_reports_mismatch(void **state)
{
    struct fixture *f = *state;
    answer(f, 1, "gb", 30, 1, 4);
    incr_key(f, "t:q1right02", 3); /* a total without its breakdowns */
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.check_failures, 1);
    assert_int_equal(st.generation, 1);
    json_t *root = fetch(f, 1);
    json_t *ch = json_object_get(root, "checks");
    assert_true(json_is_false(json_object_get(ch, "ok")));
    assert_int_equal(jint(ch, "mismatch_count"), 4);
    json_t *m0 = json_array_get(json_object_get(ch, "mismatches"), 0);
    assert_int_equal(jint(m0, "question"), 1);
    assert_string_equal(jstr(m0, "check"), "by_age.right");
    assert_int_equal(jint(m0, "expected"), 7);
    assert_int_equal(jint(m0, "actual"), 4);
    assert_int_equal(jint(question(root, 1), "right"), 7);
    json_decref(root);
}

static void test_generation_continues(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(snapstore_publish(f->s, "t", 3600, 41, "{}", 2), STORE_OK);
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    json_t *root = fetch(f, 42);
    json_decref(root);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 1000), STORE_OK);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.generation, 43);

    /* A restarted aggregator continues from the store. */
    struct aggregator *b = aggregator_create(&f->ef);
    assert_non_null(b);
    assert_int_equal(aggregator_pass(b, f->s, T0 + 2000), STORE_OK);
    root = fetch(f, 44);
    json_decref(root);
    /* And the first one never publishes below the store's head. */
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 3000), STORE_OK);
    root = fetch(f, 45);
    json_decref(root);
    aggregator_free(b);
}

/* 2,000 random answers through the key scheme come out exact. */
static void test_random_tally(void **state)
{
    struct fixture *f = *state;
    const struct eventfile *ef = &f->ef;
    struct agg_counts *expect = calloc(ef->n_questions, sizeof(*expect));
    assert_non_null(expect);
    static const char *const codes[] = {"gb", "us", "ie", "fr", "de", "jp", "unknown", "br"};
    struct util_rng rng;
    util_rng_seed(&rng, 2024);
    for (int i = 0; i < 2000; i++) {
        uint32_t qi = util_rng_below(&rng, ef->n_questions);
        const struct event_question *q = &ef->questions[qi];
        uint32_t age = AGE_MIN + util_rng_below(&rng, AGE_MAX - AGE_MIN + 1);
        /* Mostly right, so the ratios differ between countries. */
        uint32_t option = util_rng_below(&rng, 3) > 0 ? q->correct
                                                       : util_rng_below(&rng, q->n_options);
        const char *cc = codes[util_rng_below(&rng, LT_ARRAY_LEN(codes))];
        struct row r = {.qi = qi,
                        .country = cc,
                        .bucket = eventfile_age_bucket(ef, age),
                        .option = option,
                        .n = 1};
        tally(ef, expect, &r, 1);
        answer(f, q->id, cc, age, option, 1);
    }
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    json_t *root = fetch(f, 1);
    assert_true(json_is_true(json_object_get(json_object_get(root, "checks"), "ok")));

    uint64_t all = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        const struct event_question *q = &ef->questions[qi];
        const struct agg_counts *e = &expect[qi];
        json_t *jq = question(root, q->id);
        assert_int_equal(jint(jq, "right"), e->right);
        assert_int_equal(jint(jq, "wrong"), e->wrong);
        assert_int_equal(jint(jq, "answers"), e->right + e->wrong);
        all += e->right + e->wrong;
        json_t *ba = json_object_get(jq, "by_answer");
        for (uint32_t k = 0; k < q->n_options; k++)
            assert_int_equal(json_integer_value(json_array_get(ba, k)), e->by_answer[k]);
        json_t *age = json_object_get(jq, "by_age");
        for (uint32_t b = 0; b < ef->n_age_buckets; b++) {
            assert_int_equal(jint(json_array_get(age, b), "right"), e->age_right[b]);
            assert_int_equal(jint(json_array_get(age, b), "wrong"), e->age_wrong[b]);
        }
        json_t *bc = json_object_get(jq, "by_country");
        size_t listed = 0;
        for (int c = 0; c < COUNTRY_COUNT; c++) {
            if (e->country_right[c] + e->country_wrong[c] > 0)
                listed++;
        }
        assert_int_equal(json_array_size(bc), listed);
        size_t i;
        json_t *ent;
        long long prev = -1;
        json_array_foreach(bc, i, ent)
        {
            int c = ci(jstr(ent, "country"));
            assert_int_equal(jint(ent, "right"), e->country_right[c]);
            assert_int_equal(jint(ent, "wrong"), e->country_wrong[c]);
            if (prev >= 0)
                assert_true(jint(ent, "answers") <= prev);
            prev = jint(ent, "answers");
        }
    }
    assert_int_equal(all, 2000);
    assert_int_equal(jint(json_object_get(root, "totals"), "answers"), 2000);
    json_decref(root);
    free(expect);
}

/* ---- failures: a store that fails on demand ------------------------------ */

/* Wraps the memory store; fails chosen operations with STORE_UNAVAILABLE. */
struct flaky {
    struct store base;
    struct store *inner;
    int mget_ok;    /* multi-gets that succeed before they fail; <0: never fail */
    bool fail_get;  /* blob reads (question state, snapshot head) */
    bool fail_set;  /* blob writes (snapshot) */
    const char *fail_get_match; /* blob reads of keys holding this fail */
    int mget_calls;
};

static struct store *flaky_clone(struct store *s)
{
    (void)s;
    return NULL;
}

static void flaky_close(struct store *s)
{
    struct flaky *fl = (struct flaky *)s;
    free(fl);
}

static enum store_status flaky_incr(struct store *s, struct store_incr *items, size_t n,
                                    uint32_t ttl_s)
{
    return store_incr_batch(((struct flaky *)s)->inner, items, n, ttl_s);
}

static enum store_status flaky_mget(struct store *s, const char *const *keys, const size_t *lens,
                                    size_t n, uint64_t *values, bool *present)
{
    struct flaky *fl = (struct flaky *)s;
    assert_true(n <= AGGREGATE_BATCH);
    fl->mget_calls++;
    if (fl->mget_ok >= 0 && fl->mget_calls > fl->mget_ok)
        return STORE_UNAVAILABLE;
    return store_mget_u64(fl->inner, keys, lens, n, values, present);
}

static enum store_status flaky_get(struct store *s, const char *key, size_t keylen, char **val,
                                   size_t *vallen)
{
    struct flaky *fl = (struct flaky *)s;
    if (fl->fail_get ||
        (fl->fail_get_match && memmem(key, keylen, fl->fail_get_match, strlen(fl->fail_get_match))))
        return STORE_UNAVAILABLE;
    return store_get(fl->inner, key, keylen, val, vallen);
}

static enum store_status flaky_set(struct store *s, const char *key, size_t keylen,
                                   const char *val, size_t vallen, uint32_t ttl_s)
{
    struct flaky *fl = (struct flaky *)s;
    if (fl->fail_set)
        return STORE_UNAVAILABLE;
    return store_set(fl->inner, key, keylen, val, vallen, ttl_s);
}

static enum store_status flaky_add(struct store *s, const char *key, size_t keylen,
                                   const char *val, size_t vallen, uint32_t ttl_s)
{
    return store_add(((struct flaky *)s)->inner, key, keylen, val, vallen, ttl_s);
}

static enum store_status flaky_del(struct store *s, const char *key, size_t keylen)
{
    return store_delete(((struct flaky *)s)->inner, key, keylen);
}

static const struct store_ops flaky_ops = {
    .kind = "flaky",
    .clone = flaky_clone,
    .close = flaky_close,
    .incr_batch = flaky_incr,
    .mget_u64 = flaky_mget,
    .get = flaky_get,
    .set = flaky_set,
    .add = flaky_add,
    .del = flaky_del,
};

static void test_failed_pass_publishes_nothing(void **state)
{
    struct fixture *f = *state;
    struct flaky *fl = calloc(1, sizeof(*fl));
    assert_non_null(fl);
    fl->base.ops = &flaky_ops;
    fl->inner = f->s;
    fl->mget_ok = 2; /* the third batch of the pass fails */
    struct store *s = &fl->base;
    answer(f, 1, "gb", 30, 1, 4);

    assert_int_equal(aggregator_pass(f->a, s, T0), STORE_UNAVAILABLE);
    assert_int_equal(fl->mget_calls, 3);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.passes, 1);
    assert_int_equal(st.failed_passes, 1);
    assert_int_equal(st.generation, 0);
    uint64_t gen = 0;
    assert_int_equal(snapstore_generation(f->s, "t", &gen), STORE_NOTFOUND);

    /* State unreadable. */
    fl->mget_ok = -1;
    fl->fail_get = true;
    assert_int_equal(aggregator_pass(f->a, s, T0 + 1000), STORE_UNAVAILABLE);
    /* Publish refused. */
    fl->fail_get = false;
    fl->fail_set = true;
    assert_int_equal(aggregator_pass(f->a, s, T0 + 2000), STORE_UNAVAILABLE);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.failed_passes, 3);
    assert_int_equal(st.generation, 0);
    assert_int_equal(snapstore_generation(f->s, "t", &gen), STORE_NOTFOUND);

    /* Back to normal: the next pass publishes generation 1 with every answer. */
    fl->fail_set = false;
    fl->mget_calls = 0;
    assert_int_equal(aggregator_pass(f->a, s, T0 + 3000), STORE_OK);
    /* 3132 keys in batches of at most 1000, runs of questions sharing them. */
    assert_int_equal(fl->mget_calls, 4);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.passes, 4);
    assert_int_equal(st.failed_passes, 3);
    assert_int_equal(st.generation, 1);
    json_t *root = fetch(f, 1);
    assert_int_equal(jint(question(root, 1), "right"), 4);
    json_decref(root);
    store_close(s);
}


/* ---- the ultimate fans ---------------------------------------------------- */

/* One ingest instance's list, published under the next slot, as ingest does. */
static void publish_list(struct fixture *f, const struct fans_entry *e, size_t n)
{
    char key[KEY_USER_MAX];
    struct store_incr it = {.delta = 1, .want_value = true};
    it.keylen = key_fans_seq(key, "t");
    it.key = key;
    assert_int_equal(store_incr_batch(f->s, &it, 1, 3600), STORE_OK);
    char buf[FANS_JSON_MAX];
    size_t len = fans_encode(it.value, e, n, buf, sizeof(buf));
    assert_true(len > 0);
    size_t klen = key_fans_list(key, "t", it.value);
    assert_int_equal(store_set(f->s, key, klen, buf, len, 3600), STORE_OK);
}

static void put_marker(struct fixture *f, const char *user, uint32_t qid, bool right)
{
    char key[KEY_USER_MAX], val[24];
    size_t klen = key_user_marker(key, "t", user, qid);
    size_t vlen = fans_marker_format(val, sizeof(val), right, 100);
    assert_int_equal(store_add(f->s, key, klen, val, vlen, 3600), STORE_OK);
}

static struct fans_entry fan(const char *user, uint64_t right, uint64_t ms)
{
    struct fans_entry e = {.right = right, .total_ms = ms};
    snprintf(e.user, sizeof(e.user), "%s", user);
    return e;
}

/* The snapshot's ultimate_fans as "user:right:ms,..." */
static void fans_text(json_t *root, char *out, size_t cap)
{
    json_t *arr = json_object_get(root, "ultimate_fans");
    assert_true(json_is_array(arr));
    size_t i, off = 0;
    json_t *e;
    out[0] = '\0';
    json_array_foreach(arr, i, e)
    {
        assert_int_equal(jint(e, "rank"), (long long)i + 1);
        int n = snprintf(out + off, cap - off, "%s%s:%lld:%lld", i ? "," : "", jstr(e, "user"),
                         jint(e, "right"), jint(e, "total_ms"));
        assert_true(n > 0 && (size_t)n < cap - off);
        off += (size_t)n;
    }
}

/*
 * Three ingest lists with stale entries; questions 1 and 7 closed, 2 open.
 * Each user keeps its newest entry (largest right), the ranking is right
 * desc, total_ms asc, user asc, and a candidate whose marker of a closed
 * question is wrong or missing is skipped.
 */
static void test_pass_ultimate_fans(void **state)
{
    struct fixture *f = *state;
    set_state(f, 1, QSTATE_CLOSED, T0 - 90000, T0 - 60000);
    set_state(f, 7, QSTATE_CLOSED, T0 - 50000, T0 - 40000);
    set_state(f, 2, QSTATE_OPEN, T0 - 20000, 0);

    /* No list yet: an empty ranking. */
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    json_t *root = fetch(f, 1);
    assert_int_equal(json_array_size(json_object_get(root, "ultimate_fans")), 0);
    json_decref(root);

    struct fans_entry n1[] = {fan("ann", 3, 900), fan("bob", 2, 300), fan("cat", 2, 500),
                              fan("eve", 2, 100)};
    struct fans_entry n2[] = {fan("bob", 3, 800), fan("dan", 2, 500), fan("ann", 2, 400),
                              fan("fay", 1, 10)};
    struct fans_entry n3[] = {fan("cat", 1, 200), fan("gus", 2, 500), fan("hal", 3, 950)};
    publish_list(f, n1, 4);
    publish_list(f, n2, 4);
    publish_list(f, n3, 3);
    const char *all_right[] = {"ann", "bob", "cat", "dan", "gus", "fay"};
    for (size_t i = 0; i < LT_ARRAY_LEN(all_right); i++) {
        put_marker(f, all_right[i], 1, true);
        put_marker(f, all_right[i], 7, true);
    }
    put_marker(f, "eve", 1, true);
    put_marker(f, "eve", 7, false); /* eve got question 7 wrong */
    put_marker(f, "hal", 1, true);  /* hal never answered question 7 */
    put_marker(f, "ann", 2, true);
    put_marker(f, "bob", 2, true);

    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 1000), STORE_OK);
    root = fetch(f, 2);
    char text[512];
    fans_text(root, text, sizeof(text));
    /* bob 3/800 before ann 3/900; hal (3) skipped; cat's stale 1 loses to its
     * 2; gus and dan tie on 500: by id; eve skipped; fay (1 right) cannot
     * have answered both closed questions. */
    assert_string_equal(text, "bob:3:800,ann:3:900,cat:2:500,dan:2:500,gus:2:500");
    json_decref(root);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.fans_lists, 3);
    assert_int_equal(st.fans_checks, 7); /* bob ann hal cat dan gus eve */
    assert_int_equal(st.fans_failures, 0);

    /* No question closed (question 7 reopened, 1 too): nobody. */
    set_state(f, 1, QSTATE_OPEN, T0 + 1500, 0);
    set_state(f, 7, QSTATE_OPEN, T0 + 1500, 0);
    assert_int_equal(aggregator_pass(f->a, f->s, T0 + 2000), STORE_OK);
    root = fetch(f, 3);
    assert_int_equal(json_array_size(json_object_get(root, "ultimate_fans")), 0);
    json_decref(root);
}

/* At most FANS_SHOWN, in order, across many lists. */
static void test_pass_ultimate_fans_top10(void **state)
{
    struct fixture *f = *state;
    set_state(f, 1, QSTATE_CLOSED, T0 - 90000, T0 - 60000);
    struct fans_entry e[FANS_TOPK];
    for (int node = 0; node < 5; node++) {
        for (int i = 0; i < 20; i++) {
            char user[16];
            snprintf(user, sizeof(user), "u%d-%02d", node, i);
            e[i] = fan(user, 1, (uint64_t)(1000 + i * 5 + node));
            put_marker(f, user, 1, true);
        }
        publish_list(f, e, 20);
    }
    assert_int_equal(aggregator_pass(f->a, f->s, T0), STORE_OK);
    json_t *root = fetch(f, 1);
    char text[1024];
    fans_text(root, text, sizeof(text));
    assert_string_equal(text, "u0-00:1:1000,u1-00:1:1001,u2-00:1:1002,u3-00:1:1003,"
                              "u4-00:1:1004,u0-01:1:1005,u1-01:1:1006,u2-01:1:1007,"
                              "u3-01:1:1008,u4-01:1:1009");
    json_decref(root);
}

/* The fans reads fail: the counts are still published, with the previous
 * ranking; an unparsable list is skipped. */
static void test_pass_ultimate_fans_failure_keeps_previous(void **state)
{
    struct fixture *f = *state;
    struct flaky *fl = calloc(1, sizeof(*fl));
    assert_non_null(fl);
    fl->base.ops = &flaky_ops;
    fl->inner = f->s;
    fl->mget_ok = -1;
    struct store *s = &fl->base;
    set_state(f, 1, QSTATE_CLOSED, T0 - 90000, T0 - 1000); /* within the grace */
    struct fans_entry n1[] = {fan("ann", 1, 900)};
    publish_list(f, n1, 1);
    put_marker(f, "ann", 1, true);
    assert_int_equal(aggregator_pass(f->a, s, T0), STORE_OK);
    json_t *root = fetch(f, 1);
    char text[256];
    fans_text(root, text, sizeof(text));
    assert_string_equal(text, "ann:1:900");
    json_decref(root);

    struct fans_entry n2[] = {fan("bob", 1, 100)};
    publish_list(f, n2, 1);
    put_marker(f, "bob", 1, true);
    fl->fail_get_match = ":u:"; /* the markers' node is down */
    answer(f, 1, "gb", 30, 1, 3);
    assert_int_equal(aggregator_pass(f->a, s, T0 + 1000), STORE_OK);
    root = fetch(f, 2);
    fans_text(root, text, sizeof(text));
    assert_string_equal(text, "ann:1:900");
    assert_int_equal(jint(question(root, 1), "right"), 3);
    json_decref(root);
    fl->fail_get_match = ":fans:2"; /* a list's node */
    assert_int_equal(aggregator_pass(f->a, s, T0 + 2000), STORE_OK);
    root = fetch(f, 3);
    fans_text(root, text, sizeof(text));
    assert_string_equal(text, "ann:1:900");
    json_decref(root);
    struct aggregator_stats st;
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.fans_failures, 2);
    assert_int_equal(st.failed_passes, 0);

    fl->fail_get_match = NULL;
    assert_int_equal(store_set(f->s, "t:fans:1", 8, "not json", 8, 3600), STORE_OK);
    assert_int_equal(aggregator_pass(f->a, s, T0 + 3000), STORE_OK);
    root = fetch(f, 4);
    fans_text(root, text, sizeof(text));
    assert_string_equal(text, "bob:1:100");
    json_decref(root);
    aggregator_get_stats(f->a, &st);
    assert_int_equal(st.fans_lists, 1);
    store_close(s);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_layout),
        cmocka_unit_test(test_keys_default_sharding),
        cmocka_unit_test(test_keys_pool_epochs_and_fold),
        cmocka_unit_test(test_keys_too_many),
        cmocka_unit_test(test_keys_sum_matches_answers),
        cmocka_unit_test(test_sat_add_and_ratio),
        cmocka_unit_test(test_grow_only),
        cmocka_unit_test(test_warnings_in_snapshot),
        cmocka_unit_test(test_snapshot_sums),
        cmocka_unit_test(test_correct_hidden_until_closed),
        cmocka_unit_test(test_consistency_check),
        cmocka_unit_test(test_best_country_rules),
        cmocka_unit_test(test_countries_ranking),
        cmocka_unit_test(test_snapshot_saturates),
        cmocka_unit_test_setup_teardown(test_pass_end_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_question_settles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_grow_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_reports_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation_continues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_tally, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_pass_publishes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_ultimate_fans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_ultimate_fans_top10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_ultimate_fans_failure_keeps_previous, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
