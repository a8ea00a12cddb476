/* The redis:// pool backend against two real redis-server processes: the
 * cases of test_store_memcached.c, Redis' own rules (signed counters, TTL
 * commands), and the placement shared with the memcached pool. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ketama.h"
#include "servers.h"
#include "snapstore.h"
#include "store.h"
#include "store_contract.h"
#include "store_impl.h"
#include "util.h"

struct fixture {
    struct server rd[2];
    struct store *s;
    char url[256];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_true(server_start(&f->rd[0], SERVER_REDIS, 0));
    assert_true(server_start(&f->rd[1], SERVER_REDIS, 0));
    const struct server *svs[] = {&f->rd[0], &f->rd[1]};
    server_url(svs, 2, NULL, f->url, sizeof(f->url));
    char err[256];
    f->s = store_open(f->url, err, sizeof(err));
    assert_non_null(f->s);
    assert_string_equal(store_kind(f->s), "redis");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    server_stop(&f->rd[0]);
    server_stop(&f->rd[1]);
    free(f);
    return 0;
}

/* ":<n>\r\n" of an integer reply (inline command), or -100 on failure. */
static long raw_int(const struct server *sv, const char *cmd)
{
    char req[512], reply[256];
    snprintf(req, sizeof(req), "%s\r\n", cmd);
    if (server_raw(sv, req, "\r\n", reply, sizeof(reply)) <= 0 || reply[0] != ':')
        return -100;
    return strtol(reply + 1, NULL, 10);
}

#define NKEYS 10000

struct keyset {
    char (*buf)[48];
    const char **keys;
    size_t *lens;
    struct store_incr *items;
    uint64_t *vals;
    bool *present;
};

static void keyset_init(struct keyset *k, size_t n, const char *fmt)
{
    k->buf = calloc(n, sizeof(*k->buf));
    k->keys = calloc(n, sizeof(*k->keys));
    k->lens = calloc(n, sizeof(*k->lens));
    k->items = calloc(n, sizeof(*k->items));
    k->vals = calloc(n, sizeof(*k->vals));
    k->present = calloc(n, sizeof(*k->present));
    assert_non_null(k->present);
    for (size_t i = 0; i < n; i++) {
        k->lens[i] = (size_t)snprintf(k->buf[i], sizeof(k->buf[i]), fmt, i);
        k->keys[i] = k->buf[i];
    }
}

static void keyset_free(struct keyset *k)
{
    free(k->buf);
    free(k->keys);
    free(k->lens);
    free(k->items);
    free(k->vals);
    free(k->present);
}

static void fill_items(struct keyset *k, size_t n, uint64_t mult, bool want)
{
    for (size_t i = 0; i < n; i++)
        k->items[i] = (struct store_incr){.key = k->keys[i], .keylen = k->lens[i],
                                          .delta = (i % 7 + 1) * mult, .want_value = want};
}

static void test_incr_batch_across_nodes_then_mget(void **state)
{
    struct fixture *f = *state;
    struct keyset k;
    keyset_init(&k, NKEYS, "1d-live:q1right%05zu");

    fill_items(&k, NKEYS, 1, false);
    assert_int_equal(store_incr_batch(f->s, k.items, NKEYS, 3600), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++)
        assert_int_equal(k.items[i].status, STORE_OK);
    long a = raw_int(&f->rd[0], "DBSIZE"), b = raw_int(&f->rd[1], "DBSIZE");
    assert_int_equal(a + b, NKEYS);
    assert_true(a > NKEYS / 4 && b > NKEYS / 4);

    fill_items(&k, NKEYS, 10, true);
    assert_int_equal(store_incr_batch(f->s, k.items, NKEYS, 3600), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_int_equal(k.items[i].status, STORE_OK);
        assert_int_equal(k.items[i].value, (i % 7 + 1) * 11);
    }
    /* 10000 keys: several MGETs per node */
    assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, NKEYS, k.vals, k.present), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_true(k.present[i]);
        assert_int_equal(k.vals[i], (i % 7 + 1) * 11);
    }
    const char *mixed[] = {k.keys[0], "1d-live:never-written", k.keys[1]};
    size_t mlens[] = {k.lens[0], strlen(mixed[1]), k.lens[1]};
    uint64_t mv[3] = {9, 9, 9};
    bool mp[3] = {false, true, false};
    assert_int_equal(store_mget_u64(f->s, mixed, mlens, 3, mv, mp), STORE_OK);
    assert_int_equal(mv[0], 11);
    assert_int_equal(mv[1], 0);
    assert_int_equal(mv[2], 22);
    assert_true(mp[0]);
    assert_false(mp[1]);
    assert_true(mp[2]);
    keyset_free(&k);
}

/* Keys go where the memcached pool of the same list puts them: the same
 * continuum, checked on the handles and on the servers themselves. */
static void test_placement_matches_memcached(void **state)
{
    struct fixture *f = *state;
    char mcurl[256];
    snprintf(mcurl, sizeof(mcurl), "memcached://127.0.0.1:%u,127.0.0.1:%u",
             (unsigned)f->rd[0].port, (unsigned)f->rd[1].port);
    char err[256];
    struct store *mc = store_open(mcurl, err, sizeof(err));
    assert_non_null(mc);
    struct ketama_node kn[2] = {{"127.0.0.1", f->rd[0].port}, {"127.0.0.1", f->rd[1].port}};
    struct ketama *k = ketama_create(kn, 2);
    assert_non_null(k);
    size_t on[2] = {0, 0};
    for (int i = 0; i < 2000; i++) {
        char key[48];
        size_t len = (size_t)snprintf(key, sizeof(key), "1d-live:q%dage%dwrong%02d", i % 40,
                                      i % 3 + 1, i % 100 + 1);
        uint32_t a[2], b[2];
        assert_int_equal(store_placement(f->s, key, len, a, 2), 1);
        assert_int_equal(store_placement(mc, key, len, b, 2), 1);
        assert_int_equal(a[0], b[0]);
        assert_int_equal(a[0], ketama_lookup(k, key, len));
        on[a[0]]++;
        if (i % 40 == 0) {
            struct store_incr it = {.key = key, .keylen = len, .delta = 1};
            assert_int_equal(store_incr_batch(f->s, &it, 1, 60), STORE_OK);
            char cmd[80];
            snprintf(cmd, sizeof(cmd), "EXISTS %s", key);
            assert_int_equal(raw_int(&f->rd[a[0]], cmd), 1);
            assert_int_equal(raw_int(&f->rd[1 - a[0]], cmd), 0);
        }
    }
    assert_true(on[0] > 500 && on[1] > 500);
    ketama_free(k);
    store_close(mc);
}

static void test_want_value_and_autovivify(void **state)
{
    struct fixture *f = *state;
    struct store_incr it[3] = {
        {.key = "wv:a", .keylen = 4, .delta = 5, .want_value = true},
        {.key = "wv:b", .keylen = 4, .delta = 7, .want_value = false},
        {.key = "wv:a", .keylen = 4, .delta = 2, .want_value = true},
    };
    assert_int_equal(store_incr_batch(f->s, it, 3, 60), STORE_OK);
    assert_int_equal(it[0].value, 5);
    assert_int_equal(it[1].value, 0);
    assert_int_equal(it[2].value, 7);
    it[1].want_value = true;
    assert_int_equal(store_incr_batch(f->s, &it[1], 1, 60), STORE_OK);
    assert_int_equal(it[1].value, 14);
}

/* Redis integers are signed: past 2^63 - 1 an increment is refused and the
 * counter keeps its value (memcached wraps at 2^64 instead). */
static void test_signed_limit(void **state)
{
    struct fixture *f = *state;
    const char *max = "9223372036854775807";
    assert_int_equal(store_set(f->s, "lim", 3, max, strlen(max), 0), STORE_OK);
    struct store_incr it = {.key = "lim", .keylen = 3, .delta = 1, .want_value = true};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 0), STORE_ERROR);
    assert_int_equal(it.status, STORE_ERROR);
    const char *keys[] = {"lim"};
    size_t lens[] = {3};
    uint64_t v = 0;
    assert_int_equal(store_mget_u64(f->s, keys, lens, 1, &v, NULL), STORE_OK);
    assert_int_equal(v, INT64_MAX);
    /* a delta Redis cannot take is refused without being sent */
    struct store_incr two[2] = {
        {.key = "lim:big", .keylen = 7, .delta = (uint64_t)INT64_MAX + 1},
        {.key = "lim:ok", .keylen = 6, .delta = 2, .want_value = true},
    };
    assert_int_equal(store_incr_batch(f->s, two, 2, 0), STORE_ERROR);
    assert_int_equal(two[0].status, STORE_ERROR);
    assert_int_equal(two[1].status, STORE_OK);
    assert_int_equal(two[1].value, 2);
    char *val = NULL;
    size_t len;
    assert_int_equal(store_get(f->s, "lim:big", 7, &val, &len), STORE_NOTFOUND);
}

static void test_non_numeric_value(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_set(f->s, "nn:blob", 7, "open 1", 6, 0), STORE_OK);
    char big[200];
    memset(big, 'z', sizeof(big));
    assert_int_equal(store_set(f->s, "nn:bigblob", 10, big, sizeof(big), 0), STORE_OK);
    /* Redis answers each command: only the blob's item fails */
    char keys40[40][16];
    struct store_incr batch[42];
    batch[0] = (struct store_incr){.key = "nn:blob", .keylen = 7, .delta = 1};
    for (int i = 0; i < 40; i++) {
        int len = snprintf(keys40[i], sizeof(keys40[i]), "nn:m%02d", i);
        batch[i + 1] = (struct store_incr){.key = keys40[i], .keylen = (size_t)len, .delta = 1};
    }
    batch[41] = (struct store_incr){.key = "bad key", .keylen = 7, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, batch, 42, 60), STORE_ERROR);
    assert_int_equal(batch[0].status, STORE_ERROR);
    assert_int_equal(batch[41].status, STORE_ERROR);
    for (int i = 1; i <= 40; i++)
        assert_int_equal(batch[i].status, STORE_OK);
    struct store_incr ok = {.key = "nn:ok", .keylen = 5, .delta = 3, .want_value = true};
    assert_int_equal(store_incr_batch(f->s, &ok, 1, 0), STORE_OK);
    assert_int_equal(ok.value, 3);

    const char *keys[] = {"nn:blob", "nn:ok", "nn:bigblob", "nn:ok"};
    size_t lens[] = {7, 5, 10, 5};
    uint64_t v[4];
    bool p[4];
    assert_int_equal(store_mget_u64(f->s, keys, lens, 4, v, p), STORE_ERROR);
    assert_int_equal(v[1], 3);
    assert_int_equal(v[3], 3);
    assert_false(p[0]);
    assert_false(p[2]);
    assert_int_equal(store_mget_u64(f->s, &keys[1], &lens[1], 1, v, p), STORE_OK);
    assert_int_equal(v[0], 3);

    /* A hash at a counter key: WRONGTYPE for INCRBY and GET, per item. */
    char reply[64];
    assert_true(server_raw(&f->rd[0], "HSET nn:hash f v\r\n", "\r\n", reply, sizeof(reply)) > 0);
    assert_true(server_raw(&f->rd[1], "HSET nn:hash f v\r\n", "\r\n", reply, sizeof(reply)) > 0);
    struct store_incr h = {.key = "nn:hash", .keylen = 7, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, &h, 1, 60), STORE_ERROR);
    char *val = NULL;
    size_t len;
    assert_int_equal(store_get(f->s, "nn:hash", 7, &val, &len), STORE_ERROR);
    assert_null(val);
}

/* A value far over STORE_MAX_VALUE written by another client: the reply is
 * refused unread (bounded memory), the node is not taken for down. */
static void test_reply_too_large(void **state)
{
    struct fixture *f = *state;
    size_t n = STORE_MAX_VALUE + 200u * 1024u;
    char *req = malloc(n + 64);
    assert_non_null(req);
    int off = snprintf(req, 64, "*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$%zu\r\n", n);
    memset(req + off, 'h', n);
    memcpy(req + off + n, "\r\n", 3);
    char reply[64];
    for (int i = 0; i < 2; i++)
        assert_true(server_raw(&f->rd[i], req, "\r\n", reply, sizeof(reply)) > 0);
    free(req);
    char *val = NULL;
    size_t len;
    assert_int_equal(store_get(f->s, "huge", 4, &val, &len), STORE_ERROR);
    assert_null(val);
    const char *keys[] = {"huge"};
    size_t lens[] = {4};
    uint64_t v = 7;
    assert_int_not_equal(store_mget_u64(f->s, keys, lens, 1, &v, NULL), STORE_OK);
    assert_int_equal(v, 0);
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_int_equal(st.node_failures, 0);
    /* the next operations work at once: no backoff */
    struct store_incr it = {.key = "after:huge", .keylen = 10, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 60), STORE_OK);
    assert_int_equal(store_set(f->s, "huge", 4, "small", 5, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "huge", 4, &val, &len), STORE_OK);
    assert_string_equal(val, "small");
    free(val);
}

static long raw_ttl(const struct fixture *f, const char *key)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "TTL %s", key);
    for (int i = 0; i < 2; i++) {
        long t = raw_int(&f->rd[i], cmd);
        if (t != -2 && t != -100)
            return t;
    }
    return -2;
}

static void test_ttl_is_set_and_refreshed(void **state)
{
    struct fixture *f = *state;
    struct store_incr it = {.key = "ttl:c", .keylen = 5, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 100), STORE_OK);
    long t = raw_ttl(f, "ttl:c");
    assert_true(t >= 98 && t <= 100);
    assert_int_equal(store_incr_batch(f->s, &it, 1, 500), STORE_OK);
    t = raw_ttl(f, "ttl:c");
    assert_true(t >= 498 && t <= 500);
    /* Redis takes any relative TTL (no 30-day rule) */
    uint32_t forty_days = 40u * 86400u;
    assert_int_equal(store_incr_batch(f->s, &it, 1, forty_days), STORE_OK);
    t = raw_ttl(f, "ttl:c");
    assert_true(t >= (long)forty_days - 2 && t <= (long)forty_days);
    /* ttl 0: no expiry, as memcached */
    assert_int_equal(store_incr_batch(f->s, &it, 1, 0), STORE_OK);
    assert_int_equal(raw_ttl(f, "ttl:c"), -1);
    assert_int_equal(store_set(f->s, "ttl:blob", 8, "x", 1, 200), STORE_OK);
    t = raw_ttl(f, "ttl:blob");
    assert_true(t >= 198 && t <= 200);
    assert_int_equal(store_set(f->s, "ttl:never", 9, "x", 1, 0), STORE_OK);
    assert_int_equal(raw_ttl(f, "ttl:never"), -1);

    it.key = "ttl:short";
    it.keylen = 9;
    assert_int_equal(store_incr_batch(f->s, &it, 1, 1), STORE_OK);
    util_sleep_ms(1100);
    const char *keys[] = {"ttl:short"};
    size_t lens[] = {9};
    uint64_t v = 5;
    bool p = true;
    assert_int_equal(store_mget_u64(f->s, keys, lens, 1, &v, &p), STORE_OK);
    assert_false(p);
    assert_int_equal(v, 0);
}

static void test_add_get_set_delete(void **state)
{
    struct fixture *f = *state;
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(f->s, "b:none", 6, &val, &len), STORE_NOTFOUND);
    assert_int_equal(store_add(f->s, "b:st", 4, "open 1", 6, 60), STORE_OK);
    assert_int_equal(store_add(f->s, "b:st", 4, "open 2", 6, 60), STORE_EXISTS);
    assert_int_equal(store_get(f->s, "b:st", 4, &val, &len), STORE_OK);
    assert_int_equal(len, 6);
    assert_string_equal(val, "open 1");
    free(val);
    assert_int_equal(store_set(f->s, "b:st", 4, "closed 1 2", 10, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "b:st", 4, &val, &len), STORE_OK);
    assert_string_equal(val, "closed 1 2");
    free(val);
    assert_int_equal(store_set(f->s, "b:bin", 5, "a\r\nb\0c", 6, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "b:bin", 5, &val, &len), STORE_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(val, "a\r\nb\0c", 6);
    free(val);
    assert_int_equal(store_set(f->s, "b:empty", 7, "", 0, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "b:empty", 7, &val, &len), STORE_OK);
    assert_int_equal(len, 0);
    free(val);
    assert_int_equal(store_delete(f->s, "b:st", 4), STORE_OK);
    assert_int_equal(store_delete(f->s, "b:st", 4), STORE_NOTFOUND);
    assert_int_equal(store_get(f->s, "b:st", 4, &val, &len), STORE_NOTFOUND);
    assert_int_equal(store_set(f->s, "bad key", 7, "x", 1, 0), STORE_ERROR);
}

static void test_big_values(void **state)
{
    struct fixture *f = *state;
    size_t n = 900u * 1024u;
    char *big = malloc(STORE_MAX_VALUE + 1);
    assert_non_null(big);
    for (size_t i = 0; i < STORE_MAX_VALUE + 1; i++)
        big[i] = (char)('a' + i % 23);
    assert_int_equal(store_set(f->s, "big:900k", 8, big, n, 60), STORE_OK);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(f->s, "big:900k", 8, &val, &len), STORE_OK);
    assert_int_equal(len, n);
    assert_memory_equal(val, big, n);
    free(val);
    assert_int_equal(store_set(f->s, "big:max", 7, big, STORE_MAX_VALUE, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "big:max", 7, &val, &len), STORE_OK);
    assert_int_equal(len, STORE_MAX_VALUE);
    assert_memory_equal(val, big, STORE_MAX_VALUE);
    free(val);
    assert_int_equal(store_set(f->s, "big:over", 8, big, STORE_MAX_VALUE + 1, 60), STORE_ERROR);
    free(big);
}

static void test_snapstore_round_trip(void **state)
{
    struct fixture *f = *state;
    size_t n = 1300u * 1024u;
    char *json = malloc(n);
    assert_non_null(json);
    for (size_t i = 0; i < n; i++)
        json[i] = (char)('A' + i % 26);
    uint64_t gen = 0;
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(snapstore_fetch(f->s, "snapev", &gen, &out, &len), STORE_NOTFOUND);
    assert_int_equal(snapstore_publish(f->s, "snapev", 60, 7, json, n), STORE_OK);
    assert_int_equal(snapstore_fetch(f->s, "snapev", &gen, &out, &len), STORE_OK);
    assert_int_equal(gen, 7);
    assert_int_equal(len, n);
    assert_memory_equal(out, json, n);
    free(out);
    assert_int_equal(snapstore_publish(f->s, "snapev", 60, 8, json, 100), STORE_OK);
    assert_int_equal(snapstore_generation(f->s, "snapev", &gen), STORE_OK);
    assert_int_equal(gen, 8);
    free(json);
}

struct worker_arg {
    struct store *s;
    int failures;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    char keys[100][32];
    struct store_incr items[1000];
    for (int k = 0; k < 100; k++)
        snprintf(keys[k], sizeof(keys[k]), "thr:k%02d", k);
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 1000; i++)
            items[i] = (struct store_incr){.key = keys[i % 100], .keylen = strlen(keys[i % 100]),
                                           .delta = 1};
        if (store_incr_batch(a->s, items, 1000, 600) != STORE_OK)
            a->failures++;
    }
    return NULL;
}

static void test_clones_in_threads(void **state)
{
    struct fixture *f = *state;
    pthread_t t[3];
    struct worker_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct worker_arg){.s = store_clone(f->s)};
        assert_non_null(args[i].s);
        assert_string_equal(store_kind(args[i].s), "redis");
        assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
        store_close(args[i].s);
    }
    char keys[100][32];
    const char *kp[100];
    size_t lens[100];
    uint64_t v[100];
    for (int k = 0; k < 100; k++) {
        lens[k] = (size_t)snprintf(keys[k], sizeof(keys[k]), "thr:k%02d", k);
        kp[k] = keys[k];
    }
    assert_int_equal(store_mget_u64(f->s, kp, lens, 100, v, NULL), STORE_OK);
    for (int k = 0; k < 100; k++)
        assert_int_equal(v[k], 3 * 20 * 10);
}

static void test_node_down_and_back(void **state)
{
    struct fixture *f = *state;
    char url[300];
    const struct server *svs[] = {&f->rd[0], &f->rd[1]};
    server_url(svs, 2, "timeout_ms=300", url, sizeof(url));
    char err[256];
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    struct keyset k;
    keyset_init(&k, 2000, "down:q1wrong%04zu");
    fill_items(&k, 2000, 1, false);
    assert_int_equal(store_incr_batch(s, k.items, 2000, 600), STORE_OK);

    uint16_t port1 = f->rd[1].port;
    server_kill(&f->rd[1]);

    fill_items(&k, 2000, 1, false);
    uint64_t t0 = util_mono_us();
    assert_int_equal(store_incr_batch(s, k.items, 2000, 600), STORE_UNAVAILABLE);
    uint64_t took = util_mono_us() - t0;
    size_t ok = 0, unavailable = 0;
    for (size_t i = 0; i < 2000; i++) {
        if (k.items[i].status == STORE_OK)
            ok++;
        else if (k.items[i].status == STORE_UNAVAILABLE)
            unavailable++;
    }
    /* the dead node's connection was idle: found closed before sending, so
     * its items are "not applied", never "unknown" */
    assert_int_equal(ok + unavailable, 2000);
    assert_true(ok > 500 && unavailable > 500);
    print_message("node down: first batch %llu us, ok=%zu unavailable=%zu\n",
                  (unsigned long long)took, ok, unavailable);

    /* During the backoff the dead node is not tried again (each try would
     * record a failure): checked by the store's counters, not a clock. */
    struct store_stats before, st;
    store_get_stats(s, &before);
    for (int round = 0; round < 20; round++) {
        fill_items(&k, 2000, 1, false);
        assert_int_equal(store_incr_batch(s, k.items, 2000, 600), STORE_UNAVAILABLE);
    }
    store_get_stats(s, &st);
    assert_true(st.node_failures >= 1);
    assert_true(st.node_failures - before.node_failures <= 3);
    assert_true(st.unavailable_items >= 2 * unavailable);
    assert_int_equal(store_mget_u64(s, k.keys, k.lens, 2000, k.vals, k.present),
                     STORE_UNAVAILABLE);
    char *val = NULL;
    size_t len;
    for (size_t i = 0; i < 2000; i++)
        if (k.items[i].status == STORE_UNAVAILABLE) {
            assert_int_equal(store_get(s, k.keys[i], k.lens[i], &val, &len), STORE_UNAVAILABLE);
            assert_int_equal(store_set(s, k.keys[i], k.lens[i], "x", 1, 60), STORE_UNAVAILABLE);
            break;
        }

    assert_true(server_start(&f->rd[1], SERVER_REDIS, port1));
    bool recovered = false;
    uint64_t start = util_mono_us();
    while (util_mono_us() - start < 5u * 1000u * 1000u) {
        fill_items(&k, 2000, 1, false);
        if (store_incr_batch(s, k.items, 2000, 600) == STORE_OK) {
            recovered = true;
            break;
        }
        util_sleep_ms(50);
    }
    assert_true(recovered);
    assert_int_equal(store_mget_u64(s, k.keys, k.lens, 2000, k.vals, k.present), STORE_OK);
    keyset_free(&k);
    store_close(s);
}

static void test_silent_node_times_out_once(void **state)
{
    struct fixture *f = *state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    char url[300];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%u,127.0.0.1:%u?timeout_ms=200",
             (unsigned)f->rd[0].port, (unsigned)ntohs(a.sin_port));
    char err[256];
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    struct keyset k;
    keyset_init(&k, 500, "silent:q2right%03zu");
    fill_items(&k, 500, 1, false);
    struct store_stats st0, st1;
    store_get_stats(s, &st0);
    assert_int_not_equal(store_incr_batch(s, k.items, 500, 60), STORE_OK);
    store_get_stats(s, &st1);
    /* one timeout, one failure, whatever the number of items */
    assert_int_equal(st1.node_failures, st0.node_failures + 1);
    size_t ok = 0, unknown = 0;
    for (size_t i = 0; i < 500; i++) {
        if (k.items[i].status == STORE_OK)
            ok++;
        else if (k.items[i].status == STORE_ERROR)
            unknown++;
    }
    assert_int_equal(ok + unknown, 500);
    assert_true(ok > 0 && unknown > 0);
    for (int round = 0; round < 20; round++) {
        fill_items(&k, 500, 1, false);
        assert_int_not_equal(store_incr_batch(s, k.items, 500, 60), STORE_OK);
    }
    store_get_stats(s, &st0);
    assert_true(st0.node_failures - st1.node_failures <= 3);
    keyset_free(&k);
    store_close(s);
    close(lfd);
}

static void test_throughput(void **state)
{
    struct fixture *f = *state;
    enum { BIG = 100000 };
    struct keyset k;
    keyset_init(&k, BIG, "tp:q1c%06zuright");
    fill_items(&k, BIG, 1, false);
    assert_int_equal(store_incr_batch(f->s, k.items, BIG, 600), STORE_OK);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        fill_items(&k, BIG, 1, false);
        uint64_t t0 = util_mono_us();
        assert_int_equal(store_incr_batch(f->s, k.items, BIG, 600), STORE_OK);
        double rate = BIG / ((double)(util_mono_us() - t0) / 1e6);
        if (rate > best)
            best = rate;
    }
    print_message("throughput: 100k-item batches, 100k distinct keys: %.0f items/s\n", best);
    fill_items(&k, 1000, 1, false);
    uint64_t t0 = util_mono_us();
    for (int rep = 0; rep < 100; rep++)
        assert_int_equal(store_incr_batch(f->s, k.items, 1000, 600), STORE_OK);
    print_message("throughput: 1000-item batches of distinct keys: %.0f items/s\n",
                  100 * 1000 / ((double)(util_mono_us() - t0) / 1e6));
    best = 0;
    for (int rep = 0; rep < 3; rep++) {
        t0 = util_mono_us();
        assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, BIG, k.vals, NULL), STORE_OK);
        double rate = BIG / ((double)(util_mono_us() - t0) / 1e6);
        if (rate > best)
            best = rate;
    }
    print_message("throughput: mget of 100k keys: %.0f keys/s\n", best);
    for (size_t i = 0; i < BIG; i++)
        assert_int_equal(k.vals[i], (i % 7 + 1) * (i < 1000 ? 104 : 4));
    keyset_free(&k);
}

static void test_store_contract(void **state)
{
    struct fixture *f = *state;
    store_contract_add_batch(f->s, "rd");
    store_contract_get_each_many(f->s, "rd", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incr_batch_across_nodes_then_mget),
        cmocka_unit_test(test_store_contract),
        cmocka_unit_test(test_placement_matches_memcached),
        cmocka_unit_test(test_want_value_and_autovivify),
        cmocka_unit_test(test_signed_limit),
        cmocka_unit_test(test_non_numeric_value),
        cmocka_unit_test(test_reply_too_large),
        cmocka_unit_test(test_ttl_is_set_and_refreshed),
        cmocka_unit_test(test_add_get_set_delete),
        cmocka_unit_test(test_big_values),
        cmocka_unit_test(test_snapstore_round_trip),
        cmocka_unit_test(test_clones_in_threads),
        cmocka_unit_test(test_silent_node_times_out_once),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_node_down_and_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
