/* The embedded store (memory:): memcached's semantics, TTL, sharing, threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "store_contract.h"
#include "store_impl.h"

struct fake_clock {
    uint64_t now_ms;
};

static uint64_t fake_now(void *arg)
{
    return ((struct fake_clock *)arg)->now_ms;
}

static int setup(void **state)
{
    char err[256];
    struct store *s = store_open("memory:", err, sizeof(err));
    assert_non_null(s);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    store_close(*state);
    return 0;
}

static struct store_incr incr_item(const char *key, uint64_t delta, bool want)
{
    return (struct store_incr){
        .key = key, .keylen = strlen(key), .delta = delta, .want_value = want};
}

static uint64_t get_u64(struct store *s, const char *key, bool *present)
{
    uint64_t v = 12345;
    size_t len = strlen(key);
    const char *keys[] = {key};
    assert_int_equal(store_mget_u64(s, keys, &len, 1, &v, present), STORE_OK);
    return v;
}

static void test_kind_and_status_strings(void **state)
{
    assert_string_equal(store_kind(*state), "memory");
    assert_string_equal(store_status_str(STORE_OK), "ok");
    assert_string_equal(store_status_str(STORE_UNAVAILABLE), "unavailable");
    assert_string_equal(store_status_str((enum store_status)99), "unknown");
}

static void test_incr_creates_then_adds(void **state)
{
    struct store *s = *state;
    struct store_incr it[3] = {incr_item("ev:q1right01", 5, true),
                               incr_item("ev:q1wrong01", 1, true),
                               incr_item("ev:q1right01", 2, true)};
    assert_int_equal(store_incr_batch(s, it, 3, 60), STORE_OK);
    assert_int_equal(it[0].status, STORE_OK);
    assert_int_equal(it[0].value, 5); /* created at delta, not 2 * delta */
    assert_int_equal(it[1].value, 1);
    assert_int_equal(it[2].value, 7); /* items apply in order */
    bool present = false;
    assert_int_equal(get_u64(s, "ev:q1right01", &present), 7);
    assert_true(present);
}

static void test_want_value_false_leaves_zero(void **state)
{
    struct store *s = *state;
    struct store_incr it = incr_item("k", 41, false);
    it.value = 999;
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 0);
    it = incr_item("k", 1, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 42);
}

/* Pinned like memcached's t/incrdecr.t: 2^64 - 1 + 1 wraps to 0. */
static void test_incr_wraps_at_2_64(void **state)
{
    struct store *s = *state;
    const char *max = "18446744073709551615";
    assert_int_equal(store_set(s, "w", 1, max, strlen(max), 0), STORE_OK);
    struct store_incr it = incr_item("w", 1, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 0);
    it = incr_item("w", UINT64_MAX, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_true(it.value == UINT64_MAX);
    it = incr_item("w", 3, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 2);
}

static void test_get_of_counter_is_decimal_text(void **state)
{
    struct store *s = *state;
    struct store_incr it = incr_item("c", 1234567, false);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, "c", 1, &val, &len), STORE_OK);
    assert_int_equal(len, 7);
    assert_string_equal(val, "1234567");
    free(val);
}

static void test_incr_of_decimal_text_and_padding(void **state)
{
    struct store *s = *state;
    /* A value set as text is a counter when it is decimal; memcached pads
     * shrunk counters with spaces, which must still parse. */
    assert_int_equal(store_set(s, "t", 1, "10", 2, 0), STORE_OK);
    assert_int_equal(store_set(s, "p", 1, "7   ", 4, 0), STORE_OK);
    struct store_incr it[2] = {incr_item("t", 5, true), incr_item("p", 1, true)};
    assert_int_equal(store_incr_batch(s, it, 2, 0), STORE_OK);
    assert_int_equal(it[0].value, 15);
    assert_int_equal(it[1].value, 8);
}

static void test_incr_non_numeric_is_error(void **state)
{
    struct store *s = *state;
    assert_int_equal(store_set(s, "blob", 4, "open 123", 8, 0), STORE_OK);
    assert_int_equal(store_set(s, "neg", 3, "-1", 2, 0), STORE_OK);
    assert_int_equal(store_set(s, "big", 3, "18446744073709551616", 20, 0), STORE_OK);
    struct store_incr it[4] = {incr_item("ok", 1, true), incr_item("blob", 1, true),
                               incr_item("neg", 1, false), incr_item("big", 1, false)};
    assert_int_equal(store_incr_batch(s, it, 4, 0), STORE_ERROR); /* first failure */
    assert_int_equal(it[0].status, STORE_OK);
    assert_int_equal(it[0].value, 1);
    assert_int_equal(it[1].status, STORE_ERROR);
    assert_int_equal(it[2].status, STORE_ERROR);
    assert_int_equal(it[3].status, STORE_ERROR);
    /* The value is untouched. */
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, "blob", 4, &val, &len), STORE_OK);
    assert_string_equal(val, "open 123");
    free(val);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.error_items, 3);
}

static void test_bad_keys_rejected(void **state)
{
    struct store *s = *state;
    char longkey[STORE_MAX_KEY + 2];
    memset(longkey, 'a', sizeof(longkey));
    longkey[STORE_MAX_KEY + 1] = '\0';
    struct store_incr it[4] = {incr_item("has space", 1, false), incr_item(longkey, 1, false),
                               incr_item("", 1, false), incr_item("fine", 1, false)};
    assert_int_equal(store_incr_batch(s, it, 4, 0), STORE_ERROR);
    assert_int_equal(it[0].status, STORE_ERROR);
    assert_int_equal(it[1].status, STORE_ERROR);
    assert_int_equal(it[2].status, STORE_ERROR);
    assert_int_equal(it[3].status, STORE_OK);
    /* exactly 250 bytes is a valid key */
    longkey[STORE_MAX_KEY] = '\0';
    assert_int_equal(store_set(s, longkey, STORE_MAX_KEY, "x", 1, 0), STORE_OK);
    assert_int_equal(store_set(s, "tab\tkey", 7, "x", 1, 0), STORE_ERROR);
    assert_int_equal(store_delete(s, "nl\nkey", 6), STORE_ERROR);
    assert_false(store_key_valid(NULL, 3));
    assert_false(store_key_valid("a\x7f", 2));
    assert_true(store_key_valid("1d-live:q1right42", 17));
}

static void test_get_set_delete(void **state)
{
    struct store *s = *state;
    char *val = (char *)1;
    size_t len = 99;
    assert_int_equal(store_get(s, "nope", 4, &val, &len), STORE_NOTFOUND);
    assert_null(val);
    assert_int_equal(len, 0);
    assert_int_equal(store_set(s, "k", 1, "hello", 5, 0), STORE_OK);
    assert_int_equal(store_set(s, "k", 1, "hi", 2, 0), STORE_OK); /* overwrite */
    assert_int_equal(store_get(s, "k", 1, &val, &len), STORE_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(val, "hi", 3); /* NUL-terminated */
    free(val);
    /* binary-safe and empty values */
    assert_int_equal(store_set(s, "bin", 3, "a\0b\r\n", 5, 0), STORE_OK);
    assert_int_equal(store_get(s, "bin", 3, &val, &len), STORE_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(val, "a\0b\r\n", 5);
    free(val);
    assert_int_equal(store_set(s, "empty", 5, NULL, 0, 0), STORE_OK);
    assert_int_equal(store_get(s, "empty", 5, &val, &len), STORE_OK);
    assert_int_equal(len, 0);
    assert_string_equal(val, "");
    free(val);
    assert_int_equal(store_delete(s, "k", 1), STORE_OK);
    assert_int_equal(store_delete(s, "k", 1), STORE_NOTFOUND);
    assert_int_equal(store_get(s, "k", 1, &val, &len), STORE_NOTFOUND);
}

static void test_add_exists(void **state)
{
    struct store *s = *state;
    assert_int_equal(store_add(s, "a", 1, "first", 5, 0), STORE_OK);
    assert_int_equal(store_add(s, "a", 1, "second", 6, 0), STORE_EXISTS);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, "a", 1, &val, &len), STORE_OK);
    assert_string_equal(val, "first");
    free(val);
    /* a counter is a value too */
    struct store_incr it = incr_item("cnt", 1, false);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    assert_int_equal(store_add(s, "cnt", 3, "x", 1, 0), STORE_EXISTS);
}

static void test_value_size_limit(void **state)
{
    struct store *s = *state;
    char *big = calloc(1, STORE_MAX_VALUE + 1);
    assert_non_null(big);
    memset(big, 'v', STORE_MAX_VALUE + 1);
    assert_int_equal(store_set(s, "big", 3, big, STORE_MAX_VALUE + 1, 0), STORE_ERROR);
    assert_int_equal(store_add(s, "big", 3, big, STORE_MAX_VALUE + 1, 0), STORE_ERROR);
    assert_int_equal(store_set(s, "big", 3, big, STORE_MAX_VALUE, 0), STORE_OK);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, "big", 3, &val, &len), STORE_OK);
    assert_int_equal(len, STORE_MAX_VALUE);
    assert_memory_equal(val, big, STORE_MAX_VALUE);
    free(val);
    free(big);
}

static void test_mget_present_flags(void **state)
{
    struct store *s = *state;
    struct store_incr it[2] = {incr_item("m1", 3, false), incr_item("m3", 9, false)};
    assert_int_equal(store_incr_batch(s, it, 2, 0), STORE_OK);
    assert_int_equal(store_set(s, "m4", 2, "12", 2, 0), STORE_OK);
    const char *keys[] = {"m1", "m2", "m3", "m4"};
    size_t lens[] = {2, 2, 2, 2};
    uint64_t vals[4] = {7, 7, 7, 7};
    bool present[4] = {false, true, false, false};
    assert_int_equal(store_mget_u64(s, keys, lens, 4, vals, present), STORE_OK);
    assert_int_equal(vals[0], 3);
    assert_int_equal(vals[1], 0);
    assert_int_equal(vals[2], 9);
    assert_int_equal(vals[3], 12);
    assert_true(present[0]);
    assert_false(present[1]);
    assert_true(present[2]);
    assert_true(present[3]);
    /* present may be NULL */
    assert_int_equal(store_mget_u64(s, keys, lens, 4, vals, NULL), STORE_OK);
    assert_int_equal(vals[2], 9);
}

static void test_mget_non_decimal_is_error(void **state)
{
    struct store *s = *state;
    assert_int_equal(store_set(s, "txt", 3, "abc", 3, 0), STORE_OK);
    struct store_incr it = incr_item("n", 4, false);
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    const char *keys[] = {"txt", "n"};
    size_t lens[] = {3, 1};
    uint64_t vals[2] = {1, 1};
    bool present[2] = {true, false};
    assert_int_equal(store_mget_u64(s, keys, lens, 2, vals, present), STORE_ERROR);
    assert_int_equal(vals[0], 0);
    assert_false(present[0]);
    assert_int_equal(vals[1], 4); /* the other keys are still read */
    assert_true(present[1]);
}

static void test_ttl_expiry_with_injected_clock(void **state)
{
    struct store *s = *state;
    struct fake_clock clk = {.now_ms = 1000000};
    store_memory_set_clock(s, fake_now, &clk);

    struct store_incr it = incr_item("ttl", 1, false);
    assert_int_equal(store_incr_batch(s, &it, 1, 2), STORE_OK);
    assert_int_equal(store_set(s, "blob", 4, "x", 1, 2), STORE_OK);
    assert_int_equal(store_set(s, "forever", 7, "y", 1, 0), STORE_OK);

    clk.now_ms += 1999;
    bool present = false;
    assert_int_equal(get_u64(s, "ttl", &present), 1);
    assert_true(present);
    /* each write refreshes the TTL */
    it = incr_item("ttl", 1, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 2), STORE_OK);
    assert_int_equal(it.value, 2);

    clk.now_ms += 1999;
    assert_int_equal(get_u64(s, "ttl", &present), 2);
    assert_true(present);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, "blob", 4, &val, &len), STORE_NOTFOUND); /* 3998 ms > 2 s */

    clk.now_ms += 1;
    assert_int_equal(get_u64(s, "ttl", &present), 0); /* exactly at expiry: gone */
    assert_false(present);
    /* an expired counter restarts at delta */
    it = incr_item("ttl", 5, true);
    assert_int_equal(store_incr_batch(s, &it, 1, 2), STORE_OK);
    assert_int_equal(it.value, 5);
    /* add over an expired key succeeds */
    assert_int_equal(store_add(s, "blob", 4, "new", 3, 2), STORE_OK);

    clk.now_ms += 1000u * 86400u * 365u;
    assert_int_equal(store_get(s, "forever", 7, &val, &len), STORE_OK); /* TTL 0 never expires */
    free(val);
    store_memory_set_clock(s, NULL, NULL);
}

/* Dead keys do not accumulate: operations sweep a few buckets each. */
static void test_sweep_reclaims_expired_entries(void **state)
{
    struct store *s = *state;
    struct fake_clock clk = {.now_ms = 5000};
    store_memory_set_clock(s, fake_now, &clk);
    char key[32];
    struct store_incr it;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "dead%d", i);
        it = incr_item(key, 1, false);
        assert_int_equal(store_incr_batch(s, &it, 1, 1), STORE_OK);
    }
    assert_int_equal(store_memory_entries(s), 20000);
    clk.now_ms += 1000;
    /* A stream of writes to other keys, far fewer than the dead ones per
     * bucket: the sweep alone must reclaim every dead entry. */
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "live%d", i % 100);
        it = incr_item(key, 1, false);
        assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_OK);
    }
    assert_int_equal(store_memory_entries(s), 100);
    store_memory_set_clock(s, NULL, NULL);
}

static void test_clones_share_the_table(void **state)
{
    struct store *s = *state;
    struct store *c = store_clone(s);
    assert_non_null(c);
    assert_ptr_not_equal(c, s);
    struct store_incr it = incr_item("shared", 10, false);
    assert_int_equal(store_incr_batch(c, &it, 1, 0), STORE_OK);
    bool present = false;
    assert_int_equal(get_u64(s, "shared", &present), 10);
    /* the table outlives the first handle */
    struct store *c2 = store_clone(c);
    store_close(c);
    it = incr_item("shared", 1, true);
    assert_int_equal(store_incr_batch(c2, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 11);
    store_close(c2);
    assert_int_equal(get_u64(s, "shared", &present), 11);
    store_close(NULL); /* NULL-safe */
    assert_null(store_clone(NULL));
}

#define THREADS 4
#define PER_THREAD 100000
#define HOT_KEYS 10
#define BATCH 50

struct thread_arg {
    struct store *s;
    unsigned id;
    int failures;
};

static void *hammer(void *p)
{
    struct thread_arg *a = p;
    static const char *const keys[HOT_KEYS] = {"h0", "h1", "h2", "h3", "h4",
                                               "h5", "h6", "h7", "h8", "h9"};
    struct store_incr batch[BATCH];
    unsigned done = 0;
    while (done < PER_THREAD) {
        for (unsigned i = 0; i < BATCH; i++) {
            unsigned k = (done + i + a->id) % HOT_KEYS;
            batch[i] = (struct store_incr){.key = keys[k], .keylen = 2, .delta = 1 + k};
        }
        if (store_incr_batch(a->s, batch, BATCH, 0) != STORE_OK)
            a->failures++;
        done += BATCH;
    }
    return NULL;
}

static void test_threads_exact_totals(void **state)
{
    struct store *s = *state;
    pthread_t tid[THREADS];
    struct thread_arg args[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){.s = store_clone(s), .id = i};
        assert_non_null(args[i].s);
        assert_int_equal(pthread_create(&tid[i], NULL, hammer, &args[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(args[i].failures, 0);
        store_close(args[i].s);
    }
    const char *keys[HOT_KEYS] = {"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"};
    size_t lens[HOT_KEYS];
    uint64_t vals[HOT_KEYS];
    for (unsigned k = 0; k < HOT_KEYS; k++)
        lens[k] = 2;
    assert_int_equal(store_mget_u64(s, keys, lens, HOT_KEYS, vals, NULL), STORE_OK);
    uint64_t total = 0;
    for (unsigned k = 0; k < HOT_KEYS; k++) {
        /* every thread hits each key PER_THREAD / HOT_KEYS times */
        assert_int_equal(vals[k], (uint64_t)THREADS * (PER_THREAD / HOT_KEYS) * (1 + k));
        total += vals[k] / (1 + k);
    }
    assert_int_equal(total, (uint64_t)THREADS * PER_THREAD);
}

static void test_store_contract(void **state)
{
    store_contract_add_batch(*state, "mem");
    store_contract_get_each_many(*state, "mem", 1);
}

static void test_null_arguments(void **state)
{
    struct store *s = *state;
    assert_int_equal(store_incr_batch(NULL, NULL, 0, 0), STORE_ERROR);
    assert_int_equal(store_incr_batch(s, NULL, 0, 0), STORE_OK);
    assert_int_equal(store_incr_batch(s, NULL, 1, 0), STORE_ERROR);
    assert_int_equal(store_mget_u64(s, NULL, NULL, 1, NULL, NULL), STORE_ERROR);
    assert_int_equal(store_set(s, "k", 1, NULL, 1, 0), STORE_ERROR);
    assert_int_equal(store_get(s, "k", 1, NULL, NULL), STORE_ERROR);
    struct store_stats st;
    store_get_stats(NULL, &st);
    assert_int_equal(st.error_items, 0);
    assert_string_equal(store_kind(NULL), "none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kind_and_status_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr_creates_then_adds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_want_value_false_leaves_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr_wraps_at_2_64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_of_counter_is_decimal_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr_of_decimal_text_and_padding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr_non_numeric_is_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_set_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_exists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mget_present_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mget_non_decimal_is_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry_with_injected_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_reclaims_expired_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clones_share_the_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_exact_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_contract, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
