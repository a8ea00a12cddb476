/* Snapshot publication on the embedded store: chunks, slots, torn reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "snapstore.h"
#include "store.h"
#include "store_impl.h"

static int setup(void **state)
{
    char err[128];
    *state = store_open("memory:", err, sizeof(err));
    assert_non_null(*state);
    return 0;
}

static int teardown(void **state)
{
    store_close(*state);
    return 0;
}

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 31 + seed) % 26);
    p[n] = '\0';
    return p;
}

static char *get_str(struct store *s, const char *key)
{
    char *val = NULL;
    size_t len = 0;
    if (store_get(s, key, strlen(key), &val, &len) != STORE_OK)
        return NULL;
    return val;
}

static void test_nothing_published(void **state)
{
    struct store *s = *state;
    uint64_t gen = 77;
    char *json = (char *)1;
    size_t len = 5;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_NOTFOUND);
    assert_null(json);
    assert_int_equal(len, 0);
    assert_int_equal(snapstore_generation(s, "ev", &gen), STORE_NOTFOUND);
}

static void test_small_round_trip(void **state)
{
    struct store *s = *state;
    const char *doc = "{\"event\":\"ev\",\"generation\":1}";
    assert_int_equal(snapstore_publish(s, "ev", 60, 1, doc, strlen(doc)), STORE_OK);
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 1);
    assert_int_equal(len, strlen(doc));
    assert_string_equal(json, doc); /* NUL-terminated */
    free(json);
    char *head = get_str(s, "ev:snap");
    assert_string_equal(head, "1 1 29");
    free(head);
    assert_int_equal(snapstore_generation(s, "ev", &gen), STORE_OK);
    assert_int_equal(gen, 1);
}

static void test_empty_snapshot(void **state)
{
    struct store *s = *state;
    assert_int_equal(snapstore_publish(s, "ev", 60, 4, NULL, 0), STORE_OK);
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 9;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 4);
    assert_int_equal(len, 0);
    assert_string_equal(json, "");
    free(json);
}

static void test_big_round_trip_three_chunks(void **state)
{
    struct store *s = *state;
    size_t n = 2 * SNAPSTORE_CHUNK + 12345; /* > 1 MiB: 3 chunks */
    char *doc = pattern(n, 3);
    assert_int_equal(snapstore_publish(s, "ev", 60, 9, doc, n), STORE_OK);
    char *head = get_str(s, "ev:snap");
    char want[64];
    snprintf(want, sizeof(want), "9 3 %zu", n);
    assert_string_equal(head, want);
    free(head);
    /* generation 9 lives in slot 1, each chunk names it */
    char *c2 = get_str(s, "ev:snap:1:2");
    assert_non_null(c2);
    assert_memory_equal(c2, "9\n", 2);
    assert_int_equal(strlen(c2), 2 + 12345);
    free(c2);
    assert_null(get_str(s, "ev:snap:1:3"));

    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 9);
    assert_int_equal(len, n);
    assert_memory_equal(json, doc, n);
    free(json);
    free(doc);
}

static void test_generations_alternate_slots(void **state)
{
    struct store *s = *state;
    char *a = pattern(SNAPSTORE_CHUNK + 10, 1);
    char *b = pattern(SNAPSTORE_CHUNK + 20, 2);
    assert_int_equal(snapstore_publish(s, "ev", 60, 10, a, SNAPSTORE_CHUNK + 10), STORE_OK);
    assert_int_equal(snapstore_publish(s, "ev", 60, 11, b, SNAPSTORE_CHUNK + 20), STORE_OK);
    /* 11 went to slot 1 and left slot 0 (generation 10) whole */
    char *c = get_str(s, "ev:snap:0:1");
    assert_non_null(c);
    assert_memory_equal(c, "10\n", 3);
    free(c);
    c = get_str(s, "ev:snap:1:1");
    assert_memory_equal(c, "11\n", 3);
    free(c);
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 11);
    assert_memory_equal(json, b, SNAPSTORE_CHUNK + 20);
    free(json);
    free(a);
    free(b);
}

/* A chunk of another generation under the head's slot: a torn read that
 * does not heal (the head still names the old generation) is refused. */
static void test_torn_chunk_refused(void **state)
{
    struct store *s = *state;
    char *doc = pattern(SNAPSTORE_CHUNK * 2, 5);
    assert_int_equal(snapstore_publish(s, "ev", 60, 5, doc, SNAPSTORE_CHUNK * 2), STORE_OK);
    /* a writer of generation 7 overwrote chunk 1 of slot 1, then died */
    char *other = malloc(SNAPSTORE_CHUNK + 2);
    memcpy(other, "7\n", 2);
    memcpy(other + 2, doc, SNAPSTORE_CHUNK);
    assert_int_equal(store_set(s, "ev:snap:1:1", 11, other, SNAPSTORE_CHUNK + 2, 60), STORE_OK);
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_ERROR);
    assert_null(json);

    /* right generation, wrong size: refused too */
    memcpy(other, "5\n", 2);
    assert_int_equal(store_set(s, "ev:snap:1:1", 11, other, 100, 60), STORE_OK);
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_ERROR);
    /* a missing chunk (evicted) */
    assert_int_equal(store_delete(s, "ev:snap:1:1", 11), STORE_OK);
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_ERROR);
    /* a garbled generation line */
    memcpy(other, "x\n", 2);
    assert_int_equal(store_set(s, "ev:snap:1:1", 11, other, SNAPSTORE_CHUNK + 2, 60), STORE_OK);
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_ERROR);
    /* publishing again heals it */
    assert_int_equal(snapstore_publish(s, "ev", 60, 6, doc, 50), STORE_OK);
    assert_int_equal(snapstore_fetch(s, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 6);
    free(json);
    free(other);
    free(doc);
}

/*
 * A store wrapper that publishes generation + 2 in the middle of a fetch
 * (after the reader has the head and one chunk): the reader meets a chunk of
 * the newer generation in its slot, starts over, and returns the newer one.
 */
struct racing_store {
    struct store base;
    struct store *inner;
    int chunk_gets;
    int race_at;      /* publish when chunk_gets reaches this */
    char *newer;      /* the document of the racing writer */
    size_t newer_len;
    uint64_t newer_gen;
};

static enum store_status race_get(struct store *s, const char *key, size_t keylen, char **val,
                                  size_t *vallen)
{
    struct racing_store *r = (struct racing_store *)s;
    if (keylen > 8 && memmem(key, keylen, ":snap:", 6) != NULL && ++r->chunk_gets == r->race_at)
        assert_int_equal(
            snapstore_publish(r->inner, "ev", 60, r->newer_gen, r->newer, r->newer_len),
            STORE_OK);
    return store_get(r->inner, key, keylen, val, vallen);
}

static enum store_status race_set(struct store *s, const char *key, size_t keylen,
                                  const char *val, size_t vallen, uint32_t ttl_s)
{
    return store_set(((struct racing_store *)s)->inner, key, keylen, val, vallen, ttl_s);
}

static void race_close(struct store *s)
{
    (void)s;
}

static const struct store_ops race_ops = {
    .kind = "racing",
    .close = race_close,
    .get = race_get,
    .set = race_set,
};

static void test_torn_read_retried(void **state)
{
    struct store *s = *state;
    size_t n = SNAPSTORE_CHUNK * 2 + 7;
    char *old = pattern(n, 8);
    char *newer = pattern(n + 3, 9);
    assert_int_equal(snapstore_publish(s, "ev", 60, 20, old, n), STORE_OK);
    struct racing_store r = {.base = {.ops = &race_ops}, .inner = s, .race_at = 2,
                             .newer = newer, .newer_len = n + 3, .newer_gen = 22};
    uint64_t gen = 0;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(&r.base, "ev", &gen, &json, &len), STORE_OK);
    assert_int_equal(gen, 22);
    assert_int_equal(len, n + 3);
    assert_memory_equal(json, newer, n + 3);
    assert_true(r.chunk_gets > 3); /* it did start over */
    free(json);
    free(old);
    free(newer);
}

static void test_bad_heads(void **state)
{
    struct store *s = *state;
    static const char *const heads[] = {
        "", "abc", "5", "5 1", "5 1 10 9", "5 2 10", "5 0 10", "-5 1 10", "5 1 99999999999",
        "5 1 1e3", " 5 1 10", "5  1 10", "99999999999999999999 1 10",
    };
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        assert_int_equal(store_set(s, "ev:snap", 7, heads[i], strlen(heads[i]), 60), STORE_OK);
        uint64_t gen;
        char *json = NULL;
        size_t len;
        if (snapstore_fetch(s, "ev", &gen, &json, &len) != STORE_ERROR)
            fail_msg("head '%s' accepted", heads[i]);
        assert_int_equal(snapstore_generation(s, "ev", &gen), STORE_ERROR);
    }
}

static void test_bad_arguments(void **state)
{
    struct store *s = *state;
    uint64_t gen;
    char *json;
    size_t len;
    assert_int_equal(snapstore_publish(NULL, "ev", 60, 1, "x", 1), STORE_ERROR);
    assert_int_equal(snapstore_publish(s, NULL, 60, 1, "x", 1), STORE_ERROR);
    assert_int_equal(snapstore_publish(s, "", 60, 1, "x", 1), STORE_ERROR);
    assert_int_equal(snapstore_publish(s, "has space", 60, 1, "x", 1), STORE_ERROR);
    assert_int_equal(snapstore_publish(s, "ev", 60, 1, NULL, 1), STORE_ERROR);
    /* over the bound: refused before anything is read or written */
    assert_int_equal(snapstore_publish(s, "ev", 60, 1, "x", SNAPSTORE_MAX_BYTES + 1), STORE_ERROR);
    assert_int_equal(snapstore_generation(s, "ev", &gen), STORE_NOTFOUND);
    assert_int_equal(snapstore_fetch(s, NULL, &gen, &json, &len), STORE_ERROR);
    assert_int_equal(snapstore_fetch(s, "ev", NULL, &json, &len), STORE_ERROR);
    char longev[80];
    memset(longev, 'e', sizeof(longev) - 1);
    longev[sizeof(longev) - 1] = '\0';
    assert_int_equal(snapstore_generation(s, longev, &gen), STORE_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nothing_published, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_round_trip_three_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generations_alternate_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_chunk_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_read_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_heads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
