#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "country.h"
#include "eventfile.h"
#include "keys.h"
#include "util.h"

static void test_exact_keys(void **state)
{
    (void)state;
    char k[KEY_MAX];
    assert_int_equal(key_question(k, "1d-live", 1, KEY_RIGHT, 42), 17);
    assert_string_equal(k, "1d-live:q1right42");
    assert_int_equal(key_question(k, "1d-live", 12, KEY_WRONG, 5), 18);
    assert_string_equal(k, "1d-live:q12wrong05");
    assert_int_equal(key_age(k, "1d-live", 1, 2, KEY_WRONG, 66), 21);
    assert_string_equal(k, "1d-live:q1age2wrong66");
    assert_int_equal(key_country(k, "1d-live", 3, "gb", KEY_RIGHT, 7), 20);
    assert_string_equal(k, "1d-live:q3cgbright07");
    assert_int_equal(key_country(k, "1d-live", 3, "unknown", KEY_WRONG, 15), 25);
    assert_string_equal(k, "1d-live:q3cunknownwrong15");
    assert_int_equal(key_option(k, "1d-live", 2, 3, 100), 18);
    assert_string_equal(k, "1d-live:q2opt3n100");
    assert_int_equal(key_option(k, "1d-live", 2, 0, 1), 17);
    assert_string_equal(k, "1d-live:q2opt0n01");
    assert_int_equal(key_state(k, "1d-live", 4), 16);
    assert_string_equal(k, "1d-live:q4:state");
}

static void test_longest_key_fits(void **state)
{
    (void)state;
    char k[KEY_MAX];
    const char *ev = "abcdefghijklmnopqrstuvwxyz-01234"; /* EVENT_NAME_MAX */
    assert_int_equal(strlen(ev), EVENT_NAME_MAX);
    size_t n = key_country(k, ev, EVENT_MAX_QUESTION_ID, "unknown", KEY_WRONG, EVENT_MAX_SHARDS);
    assert_string_equal(k, "abcdefghijklmnopqrstuvwxyz-01234:q1000000cunknownwrong1000");
    assert_int_equal(n, strlen(k));
    assert_true(n < KEY_MAX);
    n = key_age(k, ev, EVENT_MAX_QUESTION_ID, EVENT_MAX_AGE_BUCKETS, KEY_RIGHT, EVENT_MAX_SHARDS);
    assert_string_equal(k, "abcdefghijklmnopqrstuvwxyz-01234:q1000000age16right1000");
    /* Misuse (an over-long name) truncates instead of overrunning. */
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    n = key_state(k, big, 1);
    assert_int_equal(n, KEY_MAX - 1);
    assert_int_equal(strlen(k), KEY_MAX - 1);
}

/* The aggregator's per-node keys: the longest repair claim (32-byte event,
 * 16-hex id, a 20-digit value, the longest counter) fits, and no space. */
static void test_node_keys(void **state)
{
    (void)state;
    char k[KEY_NODE_MAX], c[KEY_MAX];
    assert_int_equal(key_node_incarnation(k, "1d-live"), strlen("1d-live:node"));
    assert_string_equal(k, "1d-live:node");
    key_node_claim(k, "1d-live", "00ff00ff00ff00ff");
    assert_string_equal(k, "1d-live:node:claim:00ff00ff00ff00ff");
    key_question(c, "1d-live", 3, KEY_RIGHT, 42);
    key_repair_claim(k, "1d-live", "00ff00ff00ff00ff", 17, c);
    assert_string_equal(k, "1d-live:rr:00ff00ff00ff00ff:17:q3right42");
    const char *ev = "abcdefghijklmnopqrstuvwxyz-01234";
    key_country(c, ev, EVENT_MAX_QUESTION_ID, "unknown", KEY_WRONG, EVENT_MAX_SHARDS);
    size_t n = key_repair_claim(k, ev, "ffffffffffffffff", UINT64_MAX, c);
    assert_int_equal(n, strlen(k));
    assert_true(n < KEY_NODE_MAX && n <= 250);
    assert_null(strchr(k, ' '));
    assert_string_equal(k, "abcdefghijklmnopqrstuvwxyz-01234:rr:ffffffffffffffff:"
                           "18446744073709551615:q1000000cunknownwrong1000");
}

static void load(struct eventfile *ef, const char *json)
{
    char err[256];
    if (!eventfile_parse(json, strlen(json), ef, err, sizeof(err)))
        fail_msg("%s", err);
}

/* Checks the key is prefix + a shard of at least two digits; returns the shard. */
static uint32_t shard_of(const char *key, size_t len, const char *prefix)
{
    size_t p = strlen(prefix);
    assert_int_equal(len, strlen(key));
    if (strncmp(key, prefix, p) != 0)
        fail_msg("key %s does not start with %s", key, prefix);
    const char *digits = key + p;
    assert_true(strlen(digits) >= 2);
    uint32_t s;
    if (!util_parse_u32(digits, 0, UINT32_MAX, &s))
        fail_msg("key %s: bad shard", key);
    if (s < 100)
        assert_int_equal(strlen(digits), 2);
    return s;
}

static int cidx(const char *code)
{
    return country_lookup_strict(code, strlen(code));
}

/* Draws many answers' keys; checks the fixed part of each key and that the
 * shards cover exactly 1..n for each of the four counters. */
static void check_ranges(const struct eventfile *ef, const struct answer_counters *a,
                         const char *const prefix[KEYS_PER_ANSWER],
                         const uint32_t nshards[KEYS_PER_ANSWER], int draws)
{
    struct util_rng rng;
    util_rng_seed(&rng, 99);
    uint32_t *hits[KEYS_PER_ANSWER];
    for (int k = 0; k < KEYS_PER_ANSWER; k++) {
        hits[k] = calloc(nshards[k] + 2, sizeof(uint32_t));
        assert_non_null(hits[k]);
    }
    for (int i = 0; i < draws; i++) {
        struct answer_keys out;
        keys_for_answer(ef, a, &rng, &out);
        for (int k = 0; k < KEYS_PER_ANSWER; k++) {
            uint32_t s = shard_of(out.key[k], out.len[k], prefix[k]);
            if (s < 1 || s > nshards[k])
                fail_msg("key %s: shard out of 1..%u", out.key[k], nshards[k]);
            hits[k][s]++;
        }
    }
    for (int k = 0; k < KEYS_PER_ANSWER; k++) {
        assert_int_equal(hits[k][0], 0);
        assert_int_equal(hits[k][nshards[k] + 1], 0);
        uint32_t expect = (uint32_t)draws / nshards[k];
        for (uint32_t s = 1; s <= nshards[k]; s++) {
            if (hits[k][s] == 0)
                fail_msg("%s: shard %u never drawn", prefix[k], s);
            /* Uniform: every shard within 30% of its share (loose, seed fixed). */
            if (expect >= 100)
                assert_in_range(hits[k][s], expect * 7 / 10, expect * 13 / 10);
        }
        free(hits[k]);
    }
}

static const char *const small_event =
    "{\"event\":\"ev\",\"shards\":5,\"country_shards\":2,\"hot_countries\":{\"gb\":4},"
    "\"questions\":[{\"id\":7,\"text\":\"t\",\"options\":[\"a\",\"b\",\"c\"],\"correct\":1}]}";

static void test_answer_keys_hot_country(void **state)
{
    (void)state;
    struct eventfile ef;
    load(&ef, small_event);
    struct answer_counters a = {
        .question = 7, .outcome = KEY_RIGHT, .age_bucket = 2, .country = cidx("gb"), .option = 1};
    const char *const prefix[] = {"ev:q7right", "ev:q7age3right", "ev:q7cgbright", "ev:q7opt1n"};
    const uint32_t n[] = {5, 5, 4, 5};
    check_ranges(&ef, &a, prefix, n, 20000);
    eventfile_free(&ef);
}

static void test_answer_keys_default_country(void **state)
{
    (void)state;
    struct eventfile ef;
    load(&ef, small_event);
    /* hot_countries given: "unknown" and "us" are no longer hot. */
    struct answer_counters a = {
        .question = 7, .outcome = KEY_WRONG, .age_bucket = 0, .country = cidx("fr"), .option = 0};
    const char *const prefix[] = {"ev:q7wrong", "ev:q7age1wrong", "ev:q7cfrwrong", "ev:q7opt0n"};
    const uint32_t n[] = {5, 5, 2, 5};
    check_ranges(&ef, &a, prefix, n, 20000);

    a.country = COUNTRY_UNKNOWN;
    const char *const prefix_u[] = {"ev:q7wrong", "ev:q7age1wrong", "ev:q7cunknownwrong",
                                    "ev:q7opt0n"};
    check_ranges(&ef, &a, prefix_u, n, 2000);

    /* An index out of range is counted as unknown, not read out of bounds. */
    a.country = -5;
    check_ranges(&ef, &a, prefix_u, n, 200);
    a.country = COUNTRY_COUNT;
    check_ranges(&ef, &a, prefix_u, n, 200);
    eventfile_free(&ef);
}

static void test_answer_keys_defaults(void **state)
{
    (void)state;
    struct eventfile ef;
    load(&ef, "{\"event\":\"1d-live\",\"questions\":[{\"id\":3,\"text\":\"t\",\"options\":"
              "[\"a\",\"b\",\"c\",\"d\"],\"correct\":1}]}");
    /* Defaults: 100 shards (01..99, then 100), 15 for the hot countries, 3 otherwise. */
    struct answer_counters a = {
        .question = 3, .outcome = KEY_RIGHT, .age_bucket = 1, .country = cidx("us"), .option = 3};
    const char *const prefix[] = {"1d-live:q3right", "1d-live:q3age2right", "1d-live:q3cusright",
                                  "1d-live:q3opt3n"};
    const uint32_t n[] = {100, 100, 15, 100};
    check_ranges(&ef, &a, prefix, n, 30000);

    a.country = cidx("ie");
    const char *const prefix_ie[] = {"1d-live:q3right", "1d-live:q3age2right",
                                     "1d-live:q3cieright", "1d-live:q3opt3n"};
    const uint32_t n_ie[] = {100, 100, 3, 100};
    check_ranges(&ef, &a, prefix_ie, n_ie, 30000);
    eventfile_free(&ef);
}

static void test_answer_keys_one_shard(void **state)
{
    (void)state;
    struct eventfile ef;
    load(&ef, "{\"event\":\"e\",\"shards\":1,\"country_shards\":1,\"hot_countries\":{},"
              "\"questions\":[{\"id\":1,\"text\":\"t\",\"options\":[\"a\",\"b\"],\"correct\":1}]}");
    struct util_rng rng;
    util_rng_seed(&rng, 1);
    struct answer_counters a = {
        .question = 1, .outcome = KEY_WRONG, .age_bucket = 0, .country = cidx("gb"), .option = 0};
    struct answer_keys out;
    keys_for_answer(&ef, &a, &rng, &out);
    assert_string_equal(out.key[0], "e:q1wrong01");
    assert_string_equal(out.key[1], "e:q1age1wrong01");
    assert_string_equal(out.key[2], "e:q1cgbwrong01");
    assert_string_equal(out.key[3], "e:q1opt0n01");
    for (int k = 0; k < KEYS_PER_ANSWER; k++)
        assert_int_equal(out.len[k], strlen(out.key[k]));
    eventfile_free(&ef);
}


/* Every logical counter of an answer formats, with a given shard, to the
 * key keys_for_answer would build with that shard; ids are dense, distinct
 * per counter, and the shard counts follow the event file. */
static void test_logical_counters_match_keys(void **state)
{
    (void)state;
    struct eventfile ef;
    load(&ef, "{\"event\":\"ev\",\"shards\":5,\"country_shards\":2,\"hot_countries\":{\"gb\":4},"
              "\"questions\":[{\"id\":7,\"text\":\"t\",\"options\":[\"a\",\"b\",\"c\"],\"correct\":1},"
              "{\"id\":9,\"text\":\"u\",\"options\":[\"a\",\"b\"],\"correct\":0}]}");
    uint32_t n = keys_counter_count(&ef);
    assert_int_equal(n, 2 * KEYS_PER_QUESTION(&ef));
    unsigned char *seen = calloc(n, 1);
    assert_non_null(seen);
    for (uint32_t qi = 0; qi < ef.n_questions; qi++) {
        const struct event_question *q = &ef.questions[qi];
        for (uint32_t opt = 0; opt < q->n_options; opt++) {
            for (uint32_t b = 0; b < ef.n_age_buckets; b++) {
                for (int c = 0; c < COUNTRY_COUNT; c++) {
                    struct answer_counters a = {.question = q->id,
                                                .outcome = opt == q->correct ? KEY_RIGHT : KEY_WRONG,
                                                .age_bucket = b, .country = c, .option = opt};
                    uint32_t ids[KEYS_PER_ANSWER];
                    keys_counters_for_answer(&ef, qi, &a, ids);
                    char want[KEY_MAX], got[KEY_MAX];
                    uint32_t shard = 1;
                    key_question(want, ef.name, q->id, a.outcome, shard);
                    keys_counter_key(&ef, ids[0], shard, got);
                    assert_string_equal(got, want);
                    key_age(want, ef.name, q->id, b + 1, a.outcome, shard);
                    keys_counter_key(&ef, ids[1], shard, got);
                    assert_string_equal(got, want);
                    key_country(want, ef.name, q->id, country_code(c), a.outcome, shard);
                    keys_counter_key(&ef, ids[2], shard, got);
                    assert_string_equal(got, want);
                    key_option(want, ef.name, q->id, opt, shard);
                    keys_counter_key(&ef, ids[3], shard, got);
                    assert_string_equal(got, want);
                    assert_int_equal(keys_counter_shards(&ef, ids[0]), 5);
                    assert_int_equal(keys_counter_shards(&ef, ids[1]), 5);
                    assert_int_equal(keys_counter_shards(&ef, ids[2]), ef.country_shard_count[c]);
                    assert_int_equal(keys_counter_shards(&ef, ids[3]), 5);
                    for (int k = 0; k < KEYS_PER_ANSWER; k++) {
                        assert_true(ids[k] < n);
                        seen[ids[k]] = 1;
                    }
                }
            }
        }
    }
    /* gb is hot (4 shards), others 2, unknown keeps the default 15 of the
     * defaults only when hot_countries does not replace them: here 2. */
    struct answer_counters gb = {.question = 7, .outcome = KEY_RIGHT, .country = cidx("gb")};
    uint32_t ids[KEYS_PER_ANSWER];
    keys_counters_for_answer(&ef, 0, &gb, ids);
    assert_int_equal(keys_counter_shards(&ef, ids[2]), 4);
    /* Distinct counters never share an id: count the ids used. */
    uint32_t used = 0;
    for (uint32_t i = 0; i < n; i++)
        used += seen[i];
    uint32_t per_q_used_7 = 2 + 2 * ef.n_age_buckets + 2 * COUNTRY_COUNT + 3;
    uint32_t per_q_used_9 = 2 + 2 * ef.n_age_buckets + 2 * COUNTRY_COUNT + 2;
    assert_int_equal(used, per_q_used_7 + per_q_used_9);
    free(seen);
    eventfile_free(&ef);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_keys),
        cmocka_unit_test(test_longest_key_fits),
        cmocka_unit_test(test_node_keys),
        cmocka_unit_test(test_answer_keys_hot_country),
        cmocka_unit_test(test_answer_keys_default_country),
        cmocka_unit_test(test_answer_keys_defaults),
        cmocka_unit_test(test_answer_keys_one_shard),
        cmocka_unit_test(test_logical_counters_match_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
