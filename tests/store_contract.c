#include "store_contract.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "store_impl.h"

#define ADD_N 3000

struct add_set {
    char keys[ADD_N][64];
    char vals[ADD_N][16];
    struct store_add_item items[ADD_N];
};

static void add_set_fill(struct add_set *a, const char *prefix, const char *tag)
{
    for (size_t i = 0; i < ADD_N; i++) {
        int kl = snprintf(a->keys[i], sizeof(a->keys[i]), "%s:add:%zu", prefix, i);
        int vl = snprintf(a->vals[i], sizeof(a->vals[i]), "%s%zu", tag, i);
        a->items[i] = (struct store_add_item){.key = a->keys[i],
                                              .keylen = (size_t)kl,
                                              .val = a->vals[i],
                                              .vallen = (size_t)vl,
                                              .status = STORE_NOMEM}; /* overwritten */
    }
}

void store_contract_add_batch(struct store *s, const char *prefix)
{
    struct add_set *a = malloc(sizeof(*a));
    assert_non_null(a);
    const uint32_t ttl_s = 600;

    add_set_fill(a, prefix, "first");
    assert_int_equal(store_add_batch(s, a->items, ADD_N, ttl_s), STORE_OK);
    for (size_t i = 0; i < ADD_N; i++)
        assert_int_equal(a->items[i].status, STORE_OK);

    add_set_fill(a, prefix, "second");
    assert_int_equal(store_add_batch(s, a->items, ADD_N, ttl_s), STORE_OK);
    for (size_t i = 0; i < ADD_N; i++)
        assert_int_equal(a->items[i].status, STORE_EXISTS);
    for (size_t i = 0; i < ADD_N; i += ADD_N / 7) {
        char *val = NULL;
        size_t len = 0;
        char want[16];
        snprintf(want, sizeof(want), "first%zu", i);
        assert_int_equal(store_get(s, a->keys[i], strlen(a->keys[i]), &val, &len), STORE_OK);
        assert_string_equal(val, want);
        free(val);
    }

    /* Two items, one key, in one batch: the first in order wins. Around
     * them, a bad key and a value too long fail alone. */
    char dup[64], fresh[64];
    int dl = snprintf(dup, sizeof(dup), "%s:add:dup", prefix);
    int fl = snprintf(fresh, sizeof(fresh), "%s:add:fresh", prefix);
    static char too_long[STORE_ADD_BATCH_VALUE_MAX + 1];
    memset(too_long, 'x', sizeof(too_long));
    struct store_add_item mix[] = {
        {.key = dup, .keylen = (size_t)dl, .val = "one", .vallen = 3},
        {.key = "bad key", .keylen = 7, .val = "v", .vallen = 1},
        {.key = dup, .keylen = (size_t)dl, .val = "two", .vallen = 3},
        {.key = fresh, .keylen = (size_t)fl, .val = too_long, .vallen = sizeof(too_long)},
        {.key = fresh, .keylen = (size_t)fl, .val = "", .vallen = 0},
    };
    assert_int_equal(store_add_batch(s, mix, 5, ttl_s), STORE_ERROR);
    assert_int_equal(mix[0].status, STORE_OK);
    assert_int_equal(mix[1].status, STORE_ERROR);
    assert_int_equal(mix[2].status, STORE_EXISTS);
    assert_int_equal(mix[3].status, STORE_ERROR);
    assert_int_equal(mix[4].status, STORE_OK);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(s, dup, (size_t)dl, &val, &len), STORE_OK);
    assert_string_equal(val, "one");
    free(val);
    assert_int_equal(store_get(s, fresh, (size_t)fl, &val, &len), STORE_OK);
    assert_int_equal(len, 0);
    free(val);

    /* An empty batch is a no-op. */
    assert_int_equal(store_add_batch(s, NULL, 0, ttl_s), STORE_OK);
    free(a);
}

int store_contract_add_batch_node_down(struct store *s, const char *prefix, unsigned down_node)
{
    struct add_set *a = malloc(sizeof(*a));
    assert_non_null(a);
    add_set_fill(a, prefix, "v");
    assert_int_equal(store_add_batch(s, a->items, ADD_N, 600), STORE_UNAVAILABLE);
    int on_down = 0;
    for (size_t i = 0; i < ADD_N; i++) {
        uint32_t node;
        assert_int_equal(store_placement(s, a->keys[i], a->items[i].keylen, &node, 1), 1);
        if (node == down_node) {
            on_down++;
            assert_int_equal(a->items[i].status, STORE_UNAVAILABLE);
        } else {
            assert_int_equal(a->items[i].status, STORE_OK);
        }
    }
    assert_true(on_down > 0 && on_down < ADD_N);
    free(a);
    return on_down;
}

#define MANY_N 300

struct many_seen {
    int copies[MANY_N];
    bool wrong[MANY_N]; /* a copy that is not what was set */
};

/* Key i's value: "state i" and padding, from 7 bytes up to the most
 * STORE_GET_MANY_VALUE_MAX allows (a reply line's value, then a block
 * longer than a counter's, then one near the limit). */
static size_t many_value(size_t i, char *buf)
{
    int n = snprintf(buf, 32, "state %zu", i);
    size_t len = (size_t)n + (i * 37) % (STORE_GET_MANY_VALUE_MAX - 40);
    if (i == 3)
        len = STORE_GET_MANY_VALUE_MAX;
    for (size_t k = (size_t)n; k < len; k++)
        buf[k] = (char)('a' + k % 26);
    buf[len] = '\0';
    return len;
}

static void on_many_copy(void *arg, size_t i, const char *val, size_t vallen)
{
    struct many_seen *m = arg;
    char want[STORE_GET_MANY_VALUE_MAX + 1];
    size_t wl = many_value(i, want);
    assert_true(i < MANY_N);
    m->copies[i]++;
    if (vallen != wl || memcmp(val, want, vallen) != 0 || val[vallen] != '\0')
        m->wrong[i] = true;
}

void store_contract_get_each_many(struct store *s, const char *prefix, int copies)
{
    static char keys[MANY_N][64];
    const char *kp[MANY_N];
    size_t kl[MANY_N];
    enum store_status status[MANY_N];
    size_t missed[MANY_N];
    char *big = malloc(STORE_GET_MANY_VALUE_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', STORE_GET_MANY_VALUE_MAX + 1);
    big[STORE_GET_MANY_VALUE_MAX + 1] = '\0';

    /* Key i: "state i" when i % 3 == 0, nothing when i % 3 == 1, a blob
     * one byte too long when i % 3 == 2; the last key is not a key. */
    for (size_t i = 0; i < MANY_N; i++) {
        kl[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "%s:many:%zu", prefix, i);
        kp[i] = keys[i];
        store_delete(s, keys[i], kl[i]);
        if (i % 3 == 0) {
            char val[STORE_GET_MANY_VALUE_MAX + 1];
            size_t vl = many_value(i, val);
            assert_int_equal(store_set(s, keys[i], kl[i], val, vl, 600), STORE_OK);
        } else if (i % 3 == 2) {
            assert_int_equal(store_set(s, keys[i], kl[i], big, STORE_GET_MANY_VALUE_MAX + 1, 600),
                             STORE_OK);
        }
    }
    kl[MANY_N - 1] = 0; /* not a valid key */
    struct many_seen *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    assert_int_equal(store_get_each_many(s, kp, kl, MANY_N, on_many_copy, m, status, missed),
                     STORE_ERROR);
    for (size_t i = 0; i + 1 < MANY_N; i++) {
        assert_false(m->wrong[i]);
        if (i % 3 != 2)
            assert_int_equal(missed[i], 0);
        if (i % 3 == 0) {
            assert_int_equal(status[i], STORE_OK);
            assert_int_equal(m->copies[i], copies);
        } else {
            assert_int_equal(status[i], i % 3 == 1 ? STORE_NOTFOUND : STORE_ERROR);
            assert_int_equal(m->copies[i], 0);
        }
    }
    assert_int_equal(status[MANY_N - 1], STORE_ERROR);
    assert_int_equal(m->copies[MANY_N - 1], 0);

    /* Without the bad ones: OK, and nothing at all is OK too. */
    memset(m, 0, sizeof(*m));
    size_t good = 0;
    for (size_t i = 0; i < MANY_N; i += 3) {
        kp[good] = keys[i];
        kl[good++] = strlen(keys[i]);
    }
    assert_int_equal(store_get_each_many(s, kp, kl, 1, on_many_copy, m, status, NULL), STORE_OK);
    assert_int_equal(m->copies[0], copies);
    assert_int_equal(store_get_each_many(s, kp, kl, 0, on_many_copy, m, status, missed),
                     STORE_OK);
    for (size_t i = 0; i < MANY_N; i++)
        store_delete(s, keys[i], strlen(keys[i]));
    free(m);
    free(big);
}
