/* The memcached backend against two real memcached servers. */
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
#include <event2/event.h>

#include "ketama.h"
#include "servers.h"
#include "snapstore.h"
#include "store.h"
#include "store_contract.h"
#include "store_impl.h"
#include "store_pool.h"
#include "util.h"

struct fixture {
    struct server mc[2];
    struct store *s;
    char url[256];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_true(server_start(&f->mc[0], SERVER_MEMCACHED, 0));
    assert_true(server_start(&f->mc[1], SERVER_MEMCACHED, 0));
    const struct server *svs[] = {&f->mc[0], &f->mc[1]};
    server_url(svs, 2, NULL, f->url, sizeof(f->url));
    char err[256];
    f->s = store_open(f->url, err, sizeof(err));
    assert_non_null(f->s);
    assert_string_equal(store_kind(f->s), "memcached");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    server_stop(&f->mc[0]);
    server_stop(&f->mc[1]);
    free(f);
    return 0;
}

/* curr_items of one server, from "stats". */
static long server_items(const struct server *sv)
{
    char reply[8192];
    if (server_raw(sv, "stats\r\n", "END\r\n", reply, sizeof(reply)) <= 0)
        return -1;
    const char *p = strstr(reply, "STAT curr_items ");
    return p != NULL ? strtol(p + 16, NULL, 10) : -1;
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
    /* both nodes hold a fair share (ketama: about half each) */
    long a = server_items(&f->mc[0]), b = server_items(&f->mc[1]);
    assert_int_equal(a + b, NKEYS);
    assert_true(a > NKEYS / 4 && b > NKEYS / 4);

    /* second pass: existing counters add, and report the sum */
    fill_items(&k, NKEYS, 10, true);
    assert_int_equal(store_incr_batch(f->s, k.items, NKEYS, 3600), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_int_equal(k.items[i].status, STORE_OK);
        assert_int_equal(k.items[i].value, (i % 7 + 1) * 11);
    }
    assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, NKEYS, k.vals, k.present), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_true(k.present[i]);
        assert_int_equal(k.vals[i], (i % 7 + 1) * 11);
    }
    /* missing keys read as absent zeros, mixed with present ones */
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

static void test_want_value_and_autovivify(void **state)
{
    struct fixture *f = *state;
    /* The first ma creates the counter at delta (J), not delta + delta. */
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

/* memcached's incr wraps at 2^64 (and pads the shorter number with spaces
 * in place: the reader must accept that). */
static void test_wrap_like_memcached(void **state)
{
    struct fixture *f = *state;
    const char *max = "18446744073709551615";
    assert_int_equal(store_set(f->s, "wrap", 4, max, strlen(max), 0), STORE_OK);
    struct store_incr it = {.key = "wrap", .keylen = 4, .delta = 1, .want_value = true};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 0), STORE_OK);
    assert_int_equal(it.value, 0);
    const char *keys[] = {"wrap"};
    size_t lens[] = {4};
    uint64_t v = 9;
    assert_int_equal(store_mget_u64(f->s, keys, lens, 1, &v, NULL), STORE_OK);
    assert_int_equal(v, 0);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(f->s, "wrap", 4, &val, &len), STORE_OK);
    assert_int_equal(len, 20); /* "0" and 19 spaces */
    assert_int_equal(val[0], '0');
    free(val);
}

static void test_non_numeric_value(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_set(f->s, "nn:blob", 7, "open 1", 6, 0), STORE_OK);
    char big[200];
    memset(big, 'z', sizeof(big));
    assert_int_equal(store_set(f->s, "nn:bigblob", 10, big, sizeof(big), 0), STORE_OK);
    struct store_incr it = {.key = "nn:blob", .keylen = 7, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 0), STORE_ERROR);
    assert_int_equal(it.status, STORE_ERROR);
    /* the handle is still in step with the server */
    struct store_incr ok = {.key = "nn:ok", .keylen = 5, .delta = 3, .want_value = true};
    assert_int_equal(store_incr_batch(f->s, &ok, 1, 0), STORE_OK);
    assert_int_equal(ok.value, 3);
    /* In a batch, an error reply carries no opaque (memcached 1.6): the
     * items of that node without a reply of their own (existing counters,
     * silent under q) are "outcome unknown"; the other node's items are
     * confirmed. */
    struct ketama_node kn[2] = {{"127.0.0.1", f->mc[0].port}, {"127.0.0.1", f->mc[1].port}};
    struct ketama *k = ketama_create(kn, 2);
    assert_non_null(k);
    uint32_t blob_node = ketama_lookup(k, "nn:blob", 7);
    char keys40[40][16];
    struct store_incr batch[41];
    batch[0] = (struct store_incr){.key = "nn:blob", .keylen = 7, .delta = 1};
    for (int i = 0; i < 40; i++) {
        int len = snprintf(keys40[i], sizeof(keys40[i]), "nn:m%02d", i);
        batch[i + 1] = (struct store_incr){.key = keys40[i], .keylen = (size_t)len, .delta = 1};
    }
    /* created first: a create is answered even under q ("HD O<i>") */
    assert_int_equal(store_incr_batch(f->s, &batch[1], 39, 60), STORE_OK);
    batch[40].key = "bad key"; /* never sent */
    batch[40].keylen = 7;
    assert_int_equal(store_incr_batch(f->s, batch, 41, 60), STORE_ERROR);
    assert_int_equal(batch[0].status, STORE_ERROR);
    assert_int_equal(batch[40].status, STORE_ERROR);
    size_t other_ok = 0;
    for (int i = 1; i < 40; i++) {
        uint32_t node = ketama_lookup(k, batch[i].key, batch[i].keylen);
        assert_int_equal(batch[i].status, node == blob_node ? STORE_ERROR : STORE_OK);
        other_ok += node != blob_node;
    }
    assert_true(other_ok > 0);
    ketama_free(k);

    /* mget: a blob (small or large) at a counter key is an error, the
     * other values are still read */
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
}

static long raw_ttl(const struct fixture *f, const char *key)
{
    char req[128], reply[256];
    snprintf(req, sizeof(req), "mg %s t\r\n", key);
    for (int i = 0; i < 2; i++) {
        if (server_raw(&f->mc[i], req, "\r\n", reply, sizeof(reply)) <= 0)
            continue;
        const char *t = strstr(reply, " t");
        if (strncmp(reply, "HD", 2) == 0 && t != NULL)
            return strtol(t + 2, NULL, 10);
    }
    return -2;
}

static void test_ttl_is_set_and_refreshed(void **state)
{
    struct fixture *f = *state;
    struct store_incr it = {.key = "ttl:c", .keylen = 5, .delta = 1};
    assert_int_equal(store_incr_batch(f->s, &it, 1, 100), STORE_OK); /* created */
    long t = raw_ttl(f, "ttl:c");
    assert_true(t >= 98 && t <= 100);
    assert_int_equal(store_incr_batch(f->s, &it, 1, 500), STORE_OK); /* refreshed */
    t = raw_ttl(f, "ttl:c");
    assert_true(t >= 498 && t <= 500);
    /* > 30 days: sent as an absolute time, so it does not expire at once */
    uint32_t forty_days = 40u * 86400u;
    assert_int_equal(store_incr_batch(f->s, &it, 1, forty_days), STORE_OK);
    t = raw_ttl(f, "ttl:c");
    /* memcached's clock ticks apart from the wall clock by a few seconds */
    if (t < (long)forty_days - 30 || t > (long)forty_days + 30)
        fail_msg("TTL of 40 days read back as %ld s", t);
    assert_int_equal(store_set(f->s, "ttl:blob", 8, "x", 1, 200), STORE_OK);
    t = raw_ttl(f, "ttl:blob");
    assert_true(t >= 198 && t <= 200);
    assert_int_equal(store_set(f->s, "ttl:never", 9, "x", 1, 0), STORE_OK);
    assert_int_equal(raw_ttl(f, "ttl:never"), -1);

    /* and it does expire */
    it.key = "ttl:short";
    it.keylen = 9;
    assert_int_equal(store_incr_batch(f->s, &it, 1, 1), STORE_OK);
    util_sleep_ms(2100);
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
    /* binary-safe */
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
    /* the largest value the API allows fits in memcached's 1 MiB item */
    assert_int_equal(store_set(f->s, "big:max", 7, big, STORE_MAX_VALUE, 60), STORE_OK);
    assert_int_equal(store_get(f->s, "big:max", 7, &val, &len), STORE_OK);
    assert_int_equal(len, STORE_MAX_VALUE);
    free(val);
    assert_int_equal(store_set(f->s, "big:over", 8, big, STORE_MAX_VALUE + 1, 60), STORE_ERROR);
    free(big);
}

static void test_snapstore_round_trip(void **state)
{
    struct fixture *f = *state;
    size_t n = 1300u * 1024u; /* 3 chunks */
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
    json[0] = '{';
    assert_int_equal(snapstore_publish(f->s, "snapev", 60, 8, json, 100), STORE_OK);
    assert_int_equal(snapstore_generation(f->s, "snapev", &gen), STORE_OK);
    assert_int_equal(gen, 8);
    assert_int_equal(snapstore_fetch(f->s, "snapev", &gen, &out, &len), STORE_OK);
    assert_int_equal(len, 100);
    assert_memory_equal(out, json, 100);
    free(out);
    free(json);
}

/* Clones from several threads: each has its own connections. */
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

/* One node dies: its items are refused fast, the other node's land; it
 * comes back on the same port and is used again after the backoff. */
static void test_node_down_and_back(void **state)
{
    struct fixture *f = *state;
    char url[300];
    const struct server *svs[] = {&f->mc[0], &f->mc[1]};
    server_url(svs, 2, "timeout_ms=300", url, sizeof(url));
    char err[256];
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    struct keyset k;
    keyset_init(&k, 2000, "down:q1wrong%04zu");
    fill_items(&k, 2000, 1, false);
    assert_int_equal(store_incr_batch(s, k.items, 2000, 600), STORE_OK);

    uint16_t port1 = f->mc[1].port;
    server_kill(&f->mc[1]);

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
    assert_int_equal(ok + unavailable, 2000);
    assert_true(ok > 500 && unavailable > 500);
    print_message("node down: first batch %llu us, ok=%zu unavailable=%zu\n",
                  (unsigned long long)took, ok, unavailable);

    /* During the backoff the dead node is not tried again: no new failure is
     * recorded (each try would be one), its items are refused as unavailable.
     * Checked by the store's own counters, not by a clock. */
    struct store_stats before, st;
    store_get_stats(s, &before);
    for (int round = 0; round < 20; round++) {
        fill_items(&k, 2000, 1, false);
        assert_int_equal(store_incr_batch(s, k.items, 2000, 600), STORE_UNAVAILABLE);
    }
    store_get_stats(s, &st);
    assert_true(st.node_failures >= 1);
    /* Twenty calls in a row: a store without backoff would fail twenty
     * times; with it, at most a few backoff periods end meanwhile. */
    assert_true(st.node_failures - before.node_failures <= 3);
    assert_true(st.unavailable_items >= 2 * unavailable);

    /* reads of the dead node's keys are unavailable too */
    assert_int_equal(store_mget_u64(s, k.keys, k.lens, 2000, k.vals, k.present),
                     STORE_UNAVAILABLE);

    assert_true(server_start(&f->mc[1], SERVER_MEMCACHED, port1));
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
    print_message("node back: recovered after %llu ms\n",
                  (unsigned long long)(util_mono_us() - start) / 1000);
    assert_int_equal(store_mget_u64(s, k.keys, k.lens, 2000, k.vals, k.present), STORE_OK);
    keyset_free(&k);
    store_close(s);
}

/* A pool of a real node and one that accepts connections and never
 * answers (the kernel completes the connects; nobody accepts); returns the
 * listening socket, for the caller to close. */
static int silent_pool(const struct fixture *f, char *url, size_t len)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, len, "memcached://127.0.0.1:%u,127.0.0.1:%u?timeout_ms=200",
             (unsigned)f->mc[0].port, (unsigned)ntohs(a.sin_port));
    return lfd;
}

/* A node that accepts connections and never answers: one timeout, outcome
 * unknown for what was sent; then refused at once during the backoff. */
static void test_silent_node_times_out_once(void **state)
{
    struct fixture *f = *state;
    char url[300];
    int lfd = silent_pool(f, url, sizeof(url));
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
            unknown++; /* sent, never confirmed */
    }
    assert_int_equal(ok + unknown, 500);
    assert_true(ok > 0 && unknown > 0);
    for (int round = 0; round < 20; round++) {
        fill_items(&k, 500, 1, false);
        assert_int_not_equal(store_incr_batch(s, k.items, 500, 60), STORE_OK);
    }
    store_get_stats(s, &st0);
    /* not tried again during the backoff: a few periods end at most */
    assert_true(st0.node_failures - st1.node_failures <= 3);
    char *val = NULL;
    size_t len;
    /* a get on a key of the silent node is refused too */
    for (size_t i = 0; i < 500; i++)
        if (k.items[i].status == STORE_UNAVAILABLE) {
            assert_int_equal(store_get(s, k.keys[i], k.lens[i], &val, &len), STORE_UNAVAILABLE);
            break;
        }
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

    /* 100k items, 100k distinct keys */
    fill_items(&k, BIG, 1, false);
    assert_int_equal(store_incr_batch(f->s, k.items, BIG, 600), STORE_OK); /* create */
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        fill_items(&k, BIG, 1, false);
        uint64_t t0 = util_mono_us();
        assert_int_equal(store_incr_batch(f->s, k.items, BIG, 600), STORE_OK);
        double rate = BIG / ((double)(util_mono_us() - t0) / 1e6);
        if (rate > best)
            best = rate;
    }
    print_message("throughput: 100k-item batches, 100k distinct keys: %.0f items/s\n", best);

    /* 100k items over 1000 distinct keys (each key 100 times) */
    for (size_t i = 0; i < BIG; i++)
        k.items[i] = (struct store_incr){.key = k.keys[i % 1000], .keylen = k.lens[i % 1000],
                                         .delta = 1};
    best = 0;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = util_mono_us();
        assert_int_equal(store_incr_batch(f->s, k.items, BIG, 600), STORE_OK);
        double rate = BIG / ((double)(util_mono_us() - t0) / 1e6);
        if (rate > best)
            best = rate;
    }
    print_message("throughput: 100k-item batches, 1000 distinct keys: %.0f items/s\n", best);

    /* 1000-item batches of distinct keys, back to back */
    fill_items(&k, 1000, 1, false);
    uint64_t t0 = util_mono_us();
    for (int rep = 0; rep < 200; rep++)
        assert_int_equal(store_incr_batch(f->s, k.items, 1000, 600), STORE_OK);
    print_message("throughput: 1000-item batches of distinct keys: %.0f items/s\n",
                  200 * 1000 / ((double)(util_mono_us() - t0) / 1e6));

    /* mget of 100k keys */
    t0 = util_mono_us();
    assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, BIG, k.vals, NULL), STORE_OK);
    print_message("throughput: mget of 100k keys: %.0f keys/s\n",
                  BIG / ((double)(util_mono_us() - t0) / 1e6));
    keyset_free(&k);
}

/* ---- store_incr_start: the same batch from an event loop ---- */

struct async_wait {
    struct event_base *base;
    int done;
};

static void on_async_done(void *arg)
{
    struct async_wait *w = arg;
    w->done++;
}

/* Runs one store_incr_start to its end on base; false when it did not
 * start. */
static bool run_async(struct store *s, struct event_base *base, struct store_incr *items,
                      size_t n)
{
    struct async_wait w = {.base = base};
    if (!store_incr_start(s, base, items, n, 600, on_async_done, &w))
        return false;
    assert_int_equal(w.done, 0); /* never from inside the call */
    while (w.done == 0)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    assert_int_equal(w.done, 1);
    return true;
}

static struct store *open_url(const char *url)
{
    char err[256];
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    return s;
}

static void test_incr_start_exact(void **state)
{
    struct fixture *f = *state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct store *s = open_url(f->url);
    struct keyset k;
    keyset_init(&k, 3000, "async:q1right%05zu");

    fill_items(&k, 3000, 1, false);
    assert_true(run_async(s, base, k.items, 3000));
    for (size_t i = 0; i < 3000; i++)
        assert_int_equal(k.items[i].status, STORE_OK);
    fill_items(&k, 3000, 2, true);
    assert_true(run_async(s, base, k.items, 3000));
    for (size_t i = 0; i < 3000; i++) {
        assert_int_equal(k.items[i].status, STORE_OK);
        assert_int_equal(k.items[i].value, 3 * (i % 7 + 1));
    }
    /* what a synchronous reader sees */
    assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, 3000, k.vals, k.present), STORE_OK);
    for (size_t i = 0; i < 3000; i++)
        assert_int_equal(k.vals[i], 3 * (i % 7 + 1));

    /* one batch at a time per handle, and never an empty one */
    struct async_wait w = {.base = base};
    fill_items(&k, 3000, 1, false);
    assert_true(store_incr_start(s, base, k.items, 1500, 600, on_async_done, &w));
    assert_false(store_incr_start(s, base, k.items + 1500, 1500, 600, on_async_done, &w));
    while (w.done == 0)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    assert_false(store_incr_start(s, base, k.items, 0, 600, on_async_done, &w));
    store_close(s);

    /* a handle that cannot: a host name to look up */
    char url[300];
    snprintf(url, sizeof(url), "memcached://localhost:%u", (unsigned)f->mc[0].port);
    s = open_url(url);
    assert_false(store_incr_start(s, base, k.items, 10, 600, on_async_done, &w));
    keyset_free(&k);
    store_close(s);
    event_base_free(base);
}

/* A node killed between two batches: its items are not applied (safe to
 * resend), the other node's are. */
static void test_incr_start_node_killed(void **state)
{
    struct fixture *f = *state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct store *s = open_url(f->url);
    struct keyset k;
    keyset_init(&k, 2000, "async-kill:q1wrong%04zu");
    fill_items(&k, 2000, 1, false);
    assert_true(run_async(s, base, k.items, 2000)); /* both connections open */

    uint16_t port1 = f->mc[1].port;
    server_kill(&f->mc[1]);
    fill_items(&k, 2000, 1, false);
    assert_true(run_async(s, base, k.items, 2000));
    size_t on_dead = 0;
    for (size_t i = 0; i < 2000; i++) {
        uint32_t node;
        assert_int_equal(store_placement(s, k.keys[i], k.lens[i], &node, 1), 1);
        if (node == 1) {
            on_dead++;
            assert_int_equal(k.items[i].status, STORE_UNAVAILABLE);
        } else {
            assert_int_equal(k.items[i].status, STORE_OK);
        }
    }
    assert_true(on_dead > 0 && on_dead < 2000);
    keyset_free(&k);
    store_close(s);
    event_base_free(base);
    assert_true(server_start(&f->mc[1], SERVER_MEMCACHED, port1));
}

/* A node that accepts but never answers: the loop's timer ends the run
 * after the timeout; what was sent there is outcome unknown. */
static void test_incr_start_silent_node(void **state)
{
    struct fixture *f = *state;
    char url[300];
    int lfd = silent_pool(f, url, sizeof(url));
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct store *s = open_url(url);
    struct keyset k;
    keyset_init(&k, 500, "async-silent:q2right%03zu");
    fill_items(&k, 500, 1, false);
    struct store_stats st0, st1;
    store_get_stats(s, &st0);
    assert_true(run_async(s, base, k.items, 500));
    store_get_stats(s, &st1);
    assert_int_equal(st1.node_failures, st0.node_failures + 1);
    size_t silent = 0;
    for (size_t i = 0; i < 500; i++) {
        uint32_t node;
        assert_int_equal(store_placement(s, k.keys[i], k.lens[i], &node, 1), 1);
        if (node == 1) {
            silent++;
            assert_int_equal(k.items[i].status, STORE_ERROR); /* sent, never confirmed */
        } else {
            assert_int_equal(k.items[i].status, STORE_OK);
        }
    }
    assert_true(silent > 0 && silent < 500);
    keyset_free(&k);
    store_close(s);
    event_base_free(base);
    close(lfd);
}

static void test_store_contract(void **state)
{
    struct fixture *f = *state;
    store_contract_add_batch(f->s, "mc");
    store_contract_get_each_many(f->s, "mc", 1);
}

/* A node killed: its markers are not applied (safe to resend) and, once it
 * is back, resending them adds them. */
static void test_add_batch_node_down(void **state)
{
    struct fixture *f = *state;
    uint16_t port1 = f->mc[1].port;
    server_kill(&f->mc[1]);
    int on_down = store_contract_add_batch_node_down(f->s, "mcdown", 1);
    assert_true(server_start(&f->mc[1], SERVER_MEMCACHED, port1));
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100); /* out of any backoff */
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_true(st.unavailable_items >= (uint64_t)on_down);
    store_contract_add_batch(f->s, "mcdown-back");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incr_batch_across_nodes_then_mget),
        cmocka_unit_test(test_store_contract),
        cmocka_unit_test(test_incr_start_exact),
        cmocka_unit_test(test_incr_start_node_killed),
        cmocka_unit_test(test_incr_start_silent_node),
        cmocka_unit_test(test_add_batch_node_down),
        cmocka_unit_test(test_want_value_and_autovivify),
        cmocka_unit_test(test_wrap_like_memcached),
        cmocka_unit_test(test_non_numeric_value),
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
