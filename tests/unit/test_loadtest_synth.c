/* Synthetic answers: the bodies are valid and their tally keys follow the
 * ingest's rules, the mixes are the documented ones, users never repeat. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eventfile.h"
#include "loadsynth.h"
#include "util.h"

static const char event_json[] =
    "{\"event\":\"synth\",\"questions\":["
    "{\"id\":1,\"text\":\"a\",\"options\":[\"x\",\"y\",\"z\",\"w\"],\"correct\":2},"
    "{\"id\":7,\"text\":\"b\",\"options\":[\"x\",\"y\"],\"correct\":0},"
    "{\"id\":9,\"text\":\"c\",\"options\":[\"x\",\"y\",\"z\"],\"correct\":1}]}";

static int setup(void **state)
{
    struct eventfile *ef = calloc(1, sizeof(*ef));
    char err[256];
    if (ef == NULL || !eventfile_parse(event_json, strlen(event_json), ef, err, sizeof(err))) {
        free(ef);
        return -1;
    }
    *state = ef;
    return 0;
}

static int teardown(void **state)
{
    eventfile_free(*state);
    free(*state);
    return 0;
}

/* Parses a body and works out its key independently of the pool. */
static void check_body(const struct eventfile *ef, const char *body, size_t len,
                       const struct loadtally_key *key, char *user, size_t userlen)
{
    json_error_t jerr;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(o);
    const json_t *c = json_object_get(o, "country");
    struct loadtally_key want;
    assert_true(loadtally_key_for(ef, json_integer_value(json_object_get(o, "question")),
                                  json_integer_value(json_object_get(o, "answer")),
                                  json_integer_value(json_object_get(o, "age")),
                                  c ? json_string_value(c) : NULL, c ? json_string_length(c) : 0,
                                  &want));
    assert_memory_equal(&want, key, sizeof(want));
    json_int_t age = json_integer_value(json_object_get(o, "age"));
    assert_true(age >= 13 && age <= 80);
    const json_t *u = json_object_get(o, "user");
    user[0] = '\0';
    if (u != NULL)
        snprintf(user, userlen, "%s", json_string_value(u));
    json_decref(o);
}

static void test_bodies_and_mix(void **state)
{
    const struct eventfile *ef = *state;
    struct loadsynth s;
    char err[256];
    uint32_t qidx[] = {0, 1, 2};
    assert_true(loadsynth_init(&s, ef, qidx, 3, 0, NULL, 12345, err, sizeof(err)));
    assert_int_equal(s.pool_size, LOADSYNTH_POOL_MAX);
    char body[512];
    struct util_rng rng;
    util_rng_seed(&rng, 1);
    const int n = 60000;
    int us = 0, gb = 0, unknown = 0, right[3] = {0}, total[3] = {0}, young = 0;
    int option_count[4] = {0};
    for (int i = 0; i < n; i++) {
        uint32_t slot = (uint32_t)(i % 3);
        struct loadtally_key k;
        size_t len = loadsynth_body(&s, slot, (uint64_t)i, util_rng_next(&rng), body,
                                    sizeof(body), &k);
        assert_true(len > 0 && len <= loadsynth_max_body(&s));
        char user[80];
        check_body(ef, body, len, &k, user, sizeof(user));
        assert_string_equal(user, ""); /* no population: no user */
        assert_true(k.valid);
        assert_int_equal(k.qidx, qidx[slot]);
        us += k.country == country_lookup("us", 2);
        gb += k.country == country_lookup("gb", 2);
        unknown += k.country == COUNTRY_UNKNOWN;
        right[slot] += k.right;
        total[slot]++;
        young += k.bucket == 0; /* 13..17 */
        if (slot == 0)
            option_count[k.option]++;
    }
    /* 40 % us, 20 % gb (uk, UK and GB included), 10 % unknown, +-1.5 points */
    assert_true(abs(us * 1000 / n - 400) <= 15);
    assert_true(abs(gb * 1000 / n - 200) <= 15);
    assert_true(abs(unknown * 1000 / n - 100) <= 15);
    assert_true(young > n / 20); /* skewed young: plenty under 18 */
    for (int q = 0; q < 3; q++) {
        double ratio = (double)right[q] / total[q];
        assert_true(ratio > 0.27 && ratio < 0.93);
        assert_true(fabs(ratio - s.right_ratio[q]) < 0.03);
    }
    assert_true(right[2] > 0 && right[2] < total[2]);
    /* the wrong answers are spread over every other option */
    for (int o = 0; o < 4; o++)
        assert_true(option_count[o] > 0);

    /* the same seed gives the same answers */
    struct loadsynth s2;
    assert_true(loadsynth_init(&s2, ef, qidx, 3, 0, NULL, 12345, err, sizeof(err)));
    assert_memory_equal(s.text, s2.text, s.pool[3 * s.pool_size - 1].off);
    loadsynth_free(&s2);
    /* a buffer too small is refused, not overrun */
    struct loadtally_key k;
    assert_int_equal(loadsynth_body(&s, 0, 0, 0, body, 10, &k), 0);
    loadsynth_free(&s);
}

static void test_users_answer_once(void **state)
{
    const struct eventfile *ef = *state;
    struct loadsynth s;
    char err[256];
    uint32_t qidx[] = {1, 0};
    const uint64_t users = 1000;
    assert_true(loadsynth_init(&s, ef, qidx, 2, users, "fan-", 99, err, sizeof(err)));
    for (uint32_t slot = 0; slot < 2; slot++) {
        bool *seen = calloc(users, sizeof(bool));
        assert_non_null(seen);
        char body[512];
        for (uint64_t k = 0; k < users; k++) {
            struct loadtally_key key;
            size_t len = loadsynth_body(&s, slot, k, k * 31, body, sizeof(body), &key);
            char user[80];
            check_body(ef, body, len, &key, user, sizeof(user));
            assert_true(strncmp(user, "fan-", 4) == 0);
            uint64_t id = strtoull(user + 4, NULL, 10);
            assert_true(id >= 1 && id <= users);
            assert_false(seen[id - 1]); /* at most once per question */
            seen[id - 1] = true;
        }
        free(seen);
        /* past the population: anonymous */
        struct loadtally_key key;
        size_t len = loadsynth_body(&s, slot, users, 5, body, sizeof(body), &key);
        char user[80];
        check_body(ef, body, len, &key, user, sizeof(user));
        assert_string_equal(user, "");
    }
    /* the order of users differs per question */
    uint64_t u0, u1;
    int same = 0;
    for (uint64_t k = 0; k < 50; k++) {
        assert_true(loadsynth_user(&s, 0, k, &u0));
        assert_true(loadsynth_user(&s, 1, k, &u1));
        same += u0 == u1;
    }
    assert_true(same < 10);
    loadsynth_free(&s);
}

static void test_refusals(void **state)
{
    const struct eventfile *ef = *state;
    struct loadsynth s;
    char err[256];
    uint32_t twice[] = {0, 0};
    assert_false(loadsynth_init(&s, ef, twice, 2, 0, NULL, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "twice"));
    uint32_t out_of_range[] = {5};
    assert_false(loadsynth_init(&s, ef, out_of_range, 1, 0, NULL, 1, err, sizeof(err)));
    uint32_t one[] = {0};
    assert_false(loadsynth_init(&s, ef, one, 1, 10, "bad prefix", 1, err, sizeof(err)));
    assert_false(loadsynth_init(&s, ef, one, 1, 10, "", 1, err, sizeof(err)));
    assert_false(loadsynth_init(&s, ef, one, 0, 0, NULL, 1, err, sizeof(err)));
    assert_false(loadsynth_init(&s, ef, one, 1, LOADSYNTH_USERS_MAX + 1, NULL, 1, err,
                                sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies_and_mix),
        cmocka_unit_test(test_users_answer_once),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
