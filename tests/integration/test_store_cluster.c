/* The redis-cluster:// backend against a real 3-master Redis Cluster made
 * by redis-cli --cluster create: placement by slot, exact counts through a
 * resharding (MOVED and ASK followed, for increments and for pipelined
 * adds), blobs, clones, a dead master; each of them both blocking and from
 * an event loop (store_incr_start, store_add_start: how an ingest answer
 * thread writes). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "crc16.h"
#include "servers.h"
#include "snapstore.h"
#include "store.h"
#include "store_contract.h"
#include "util.h"

#define NMASTERS 3

struct fixture {
    struct server node[NMASTERS];
    struct store *s;
    char url[256];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f; /* teardown stops what started, also when setup fails */
    const struct server *svs[NMASTERS];
    for (int i = 0; i < NMASTERS; i++) {
        assert_true(server_start(&f->node[i], SERVER_REDIS_CLUSTER, 0));
        svs[i] = &f->node[i];
    }
    assert_true(server_cluster_create(svs, NMASTERS));
    server_url(svs, NMASTERS, NULL, f->url, sizeof(f->url));
    assert_non_null(strstr(f->url, "redis-cluster://"));
    char err[256];
    f->s = store_open(f->url, err, sizeof(err));
    assert_non_null(f->s);
    assert_string_equal(store_kind(f->s), "redis-cluster");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        return 0;
    store_close(f->s);
    for (int i = 0; i < NMASTERS; i++)
        server_stop(&f->node[i]);
    free(f);
    return 0;
}

/* Keys held by one node (DBSIZE). */
static long dbsize(const struct server *sv)
{
    char reply[64];
    if (server_raw(sv, "DBSIZE\r\n", "\r\n", reply, sizeof(reply)) <= 0 || reply[0] != ':')
        return -1;
    return strtol(reply + 1, NULL, 10);
}

#define NKEYS 6000

/* ---- batches from an event loop ---- */

static void on_run_done(void *arg)
{
    *(bool *)arg = true;
}

/* Runs the batch from base's loop when the handle starts it there (true),
 * else blocking (false: store_incr_start sent nothing). */
static bool loop_incr(struct store *s, struct event_base *base, struct store_incr *items,
                      size_t n, uint32_t ttl_s)
{
    bool done = false;
    if (base == NULL || !store_incr_start(s, base, items, n, ttl_s, on_run_done, &done)) {
        store_incr_batch(s, items, n, ttl_s);
        return false;
    }
    assert_false(done); /* never from inside the start */
    while (!done)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    return true;
}

static bool loop_add(struct store *s, struct event_base *base, struct store_add_item *items,
                     size_t n, uint32_t ttl_s)
{
    bool done = false;
    if (base == NULL || !store_add_start(s, base, items, n, ttl_s, on_run_done, &done)) {
        store_add_batch(s, items, n, ttl_s);
        return false;
    }
    assert_false(done);
    while (!done)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    return true;
}

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

static void test_incr_and_mget_exact(void **state)
{
    struct fixture *f = *state;
    struct keyset k;
    keyset_init(&k, NKEYS, "1d-live:q1c%04zuwrong07");
    for (int pass = 1; pass <= 2; pass++) {
        for (size_t i = 0; i < NKEYS; i++)
            k.items[i] = (struct store_incr){.key = k.keys[i], .keylen = k.lens[i],
                                             .delta = i % 5 + 1, .want_value = pass == 2};
        assert_int_equal(store_incr_batch(f->s, k.items, NKEYS, 600), STORE_OK);
        for (size_t i = 0; i < NKEYS; i++) {
            assert_int_equal(k.items[i].status, STORE_OK);
            if (pass == 2)
                assert_int_equal(k.items[i].value, 2 * (i % 5 + 1));
        }
    }
    /* every master holds a share */
    long total = 0;
    for (int i = 0; i < NMASTERS; i++) {
        long n = dbsize(&f->node[i]);
        assert_true(n > NKEYS / 6);
        total += n;
    }
    assert_int_equal(total, NKEYS);
    assert_int_equal(store_mget_u64(f->s, k.keys, k.lens, NKEYS, k.vals, k.present), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_true(k.present[i]);
        assert_int_equal(k.vals[i], 2 * (i % 5 + 1));
    }
    const char *miss[] = {"1d-live:nothing", k.keys[3]};
    size_t mlens[] = {15, k.lens[3]};
    uint64_t mv[2];
    bool mp[2];
    assert_int_equal(store_mget_u64(f->s, miss, mlens, 2, mv, mp), STORE_OK);
    assert_false(mp[0]);
    assert_int_equal(mv[0], 0);
    assert_int_equal(mv[1], 8);
    keyset_free(&k);
}

/* From an event loop: a handle that never read the map reads it there,
 * counts are exact and values returned, a blob at a counter's key is
 * refused alone, adds say OK then EXISTS; blocking calls on the same handle
 * between runs (they may close and open connections) leave the loop's
 * events right. */
static void test_loop_batches(void **state)
{
    struct fixture *f = *state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct store *s = store_clone(f->s);
    assert_non_null(s);
    struct keyset k;
    keyset_init(&k, NKEYS, "lp:q2c%04zuright");
    for (uint64_t pass = 1; pass <= 3; pass++) {
        for (size_t i = 0; i < NKEYS; i++)
            k.items[i] = (struct store_incr){.key = k.keys[i], .keylen = k.lens[i],
                                             .delta = i % 3 + 1, .want_value = true};
        assert_true(loop_incr(s, base, k.items, NKEYS, 600));
        for (size_t i = 0; i < NKEYS; i++) {
            assert_int_equal(k.items[i].status, STORE_OK);
            assert_int_equal(k.items[i].value, pass * (i % 3 + 1));
        }
        if (pass == 2) {
            assert_int_equal(store_mget_u64(s, k.keys, k.lens, NKEYS, k.vals, NULL), STORE_OK);
            for (size_t i = 0; i < NKEYS; i++)
                assert_int_equal(k.vals[i], 2 * (i % 3 + 1));
        }
    }
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.map_refreshes, 1);
    assert_int_equal(st.redirects, 0);

    assert_int_equal(store_set(f->s, "lp:blob", 7, "text", 4, 60), STORE_OK);
    struct store_incr it[2] = {{.key = "lp:blob", .keylen = 7, .delta = 1},
                               {.key = "lp:cnt", .keylen = 6, .delta = 1}};
    assert_true(loop_incr(s, base, it, 2, 60));
    assert_int_equal(it[0].status, STORE_ERROR);
    assert_int_equal(it[1].status, STORE_OK);

    enum { NADDS = 300 };
    static char ak[NADDS][32];
    struct store_add_item adds[NADDS];
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = 0; j < NADDS; j++) {
            snprintf(ak[j], sizeof(ak[j]), j == 7 ? "lp:u bad %03zu" : "lp:u:%03zu:q2", j);
            adds[j] = (struct store_add_item){.key = ak[j], .keylen = strlen(ak[j]),
                                              .val = ak[j] + 5, .vallen = 3};
        }
        assert_true(loop_add(s, base, adds, NADDS, 600));
        for (size_t j = 0; j < NADDS; j++)
            assert_int_equal(adds[j].status,
                             j == 7 ? STORE_ERROR : pass == 0 ? STORE_OK : STORE_EXISTS);
    }
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(f->s, ak[5], strlen(ak[5]), &val, &len), STORE_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(val, "005", 3);
    free(val);
    /* nothing to send at all: done still comes, from the loop */
    assert_true(loop_add(s, base, &adds[7], 1, 600));
    assert_int_equal(adds[7].status, STORE_ERROR);

    keyset_free(&k);
    store_close(s);
    event_base_free(base);
}

/* The 100 shards of one counter land on many slots and on every master:
 * no hash tag pins them together. */
static void test_shards_spread_over_slots(void **state)
{
    struct fixture *f = *state;
    bool seen[CRC16_SLOTS] = {false};
    size_t slots = 0;
    struct store_incr items[100];
    char keys[100][32];
    for (int s = 1; s <= 100; s++) {
        size_t len = (size_t)snprintf(keys[s - 1], sizeof(keys[0]), "1d-live:q7right%02d", s);
        uint16_t slot = crc16_key_slot(keys[s - 1], len);
        slots += !seen[slot];
        seen[slot] = true;
        items[s - 1] = (struct store_incr){.key = keys[s - 1], .keylen = len, .delta = 1};
    }
    assert_true(slots >= 95);
    long before[NMASTERS];
    for (int i = 0; i < NMASTERS; i++)
        before[i] = dbsize(&f->node[i]);
    assert_int_equal(store_incr_batch(f->s, items, 100, 60), STORE_OK);
    for (int i = 0; i < NMASTERS; i++)
        assert_true(dbsize(&f->node[i]) - before[i] >= 15);
}

static void test_blobs(void **state)
{
    struct fixture *f = *state;
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(f->s, "b:none", 6, &val, &len), STORE_NOTFOUND);
    assert_int_equal(store_add(f->s, "b:st", 4, "open 1", 6, 60), STORE_OK);
    assert_int_equal(store_add(f->s, "b:st", 4, "open 2", 6, 60), STORE_EXISTS);
    assert_int_equal(store_get(f->s, "b:st", 4, &val, &len), STORE_OK);
    assert_string_equal(val, "open 1");
    free(val);
    assert_int_equal(store_set(f->s, "b:st", 4, "closed 1 2", 10, 0), STORE_OK);
    assert_int_equal(store_get(f->s, "b:st", 4, &val, &len), STORE_OK);
    assert_int_equal(len, 10);
    free(val);
    assert_int_equal(store_delete(f->s, "b:st", 4), STORE_OK);
    assert_int_equal(store_delete(f->s, "b:st", 4), STORE_NOTFOUND);
    size_t n = 1100u * 1024u; /* 3 chunks on 3 slots */
    char *json = malloc(n);
    assert_non_null(json);
    for (size_t i = 0; i < n; i++)
        json[i] = (char)('a' + i % 26);
    uint64_t gen = 0;
    char *out = NULL;
    assert_int_equal(snapstore_publish(f->s, "clev", 60, 3, json, n), STORE_OK);
    assert_int_equal(snapstore_fetch(f->s, "clev", &gen, &out, &len), STORE_OK);
    assert_int_equal(gen, 3);
    assert_int_equal(len, n);
    assert_memory_equal(out, json, n);
    free(out);
    free(json);
    /* a blob at a counter key: that item fails, the others land */
    assert_int_equal(store_set(f->s, "b:blob", 6, "text", 4, 60), STORE_OK);
    struct store_incr it[2] = {{.key = "b:blob", .keylen = 6, .delta = 1},
                               {.key = "b:cnt", .keylen = 5, .delta = 1}};
    assert_int_equal(store_incr_batch(f->s, it, 2, 60), STORE_ERROR);
    assert_int_equal(it[0].status, STORE_ERROR);
    assert_int_equal(it[1].status, STORE_OK);
}

/* A clone starts without a map; a dead first seed is skipped. */
static void test_clone_and_seeds(void **state)
{
    struct fixture *f = *state;
    struct store *c = store_clone(f->s);
    assert_non_null(c);
    struct store_incr it = {.key = "cl:x", .keylen = 4, .delta = 4, .want_value = true};
    assert_int_equal(store_incr_batch(c, &it, 1, 60), STORE_OK);
    assert_int_equal(it.value, 4);
    store_close(c);
    char url[128], err[256];
    snprintf(url, sizeof(url), "redis-cluster://127.0.0.1:1,127.0.0.1:%u?timeout_ms=200",
             (unsigned)f->node[2].port);
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_incr_batch(s, &it, 1, 60), STORE_OK);
    assert_int_equal(it.value, 8);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.map_refreshes, 1);
    store_close(s);
    /* no seed answers: refused, not applied */
    s = store_open("redis-cluster://127.0.0.1:1?timeout_ms=100", err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_incr_batch(s, &it, 1, 60), STORE_UNAVAILABLE);
    assert_int_equal(it.status, STORE_UNAVAILABLE);
    store_close(s);
}

/* ---- resharding under load ---- */

#define RKEYS 3000

struct loader {
    struct store *s;
    bool loop;           /* batches from an event loop of the thread's own */
    uint64_t from_loop;  /* batches that started there */
    struct keyset k;
    uint64_t *expect;    /* confirmed increments per key */
    uint64_t *maybe;     /* STORE_ERROR: may have landed */
    atomic_bool stop;
    uint64_t batches, unavailable, errors;
};

static void *load(void *arg)
{
    struct loader *l = arg;
    struct event_base *base = l->loop ? event_base_new() : NULL;
    assert_true(base != NULL || !l->loop);
    uint64_t round = 0;
    while (!atomic_load(&l->stop)) {
        for (size_t i = 0; i < RKEYS; i++)
            l->k.items[i] = (struct store_incr){.key = l->k.keys[i], .keylen = l->k.lens[i],
                                                .delta = (i + round) % 3 + 1};
        l->from_loop += loop_incr(l->s, base, l->k.items, RKEYS, 600);
        for (size_t i = 0; i < RKEYS; i++) {
            const struct store_incr *it = &l->k.items[i];
            if (it->status == STORE_OK)
                l->expect[i] += it->delta;
            else if (it->status == STORE_ERROR)
                l->maybe[i] += it->delta, l->errors++;
            else
                l->unavailable++;
        }
        l->batches++;
        round++;
    }
    if (base != NULL)
        event_base_free(base);
    return NULL;
}

/* Markers added in batches of fresh keys, beside the increments. */
#define ADDS_MAX 40000u
#define ADDS_BATCH 200u
struct adder {
    struct store *s;
    bool loop;
    uint64_t from_loop;
    const char *fmt;           /* the keys, from their number */
    char (*keys)[40];          /* ADDS_MAX */
    uint8_t *status;           /* per key: the enum store_status its add got */
    size_t used;
    atomic_bool stop;
    uint64_t batches, exists;
};

static void *add_load(void *arg)
{
    struct adder *a = arg;
    struct store_add_item it[ADDS_BATCH];
    struct event_base *base = a->loop ? event_base_new() : NULL;
    assert_true(base != NULL || !a->loop);
    while (!atomic_load(&a->stop) && a->used + ADDS_BATCH <= ADDS_MAX) {
        for (size_t j = 0; j < ADDS_BATCH; j++) {
            size_t i = a->used + j;
            snprintf(a->keys[i], sizeof(a->keys[i]), a->fmt, i);
            it[j] = (struct store_add_item){.key = a->keys[i], .keylen = strlen(a->keys[i]),
                                            .val = a->keys[i] + 8, .vallen = 8};
        }
        a->from_loop += loop_add(a->s, base, it, ADDS_BATCH, 600);
        for (size_t j = 0; j < ADDS_BATCH; j++) {
            a->status[a->used + j] = (uint8_t)it[j].status;
            if (it[j].status == STORE_EXISTS)
                a->exists++; /* a fresh key: an add that ran twice */
        }
        a->used += ADDS_BATCH;
        a->batches++;
    }
    if (base != NULL)
        event_base_free(base);
    return NULL;
}

static void node_id(const struct server *sv, char *id, size_t len)
{
    char reply[128];
    assert_true(server_raw(sv, "CLUSTER MYID\r\n", "\r\n", reply, sizeof(reply)) > 0);
    /* $40\r\n<id>\r\n */
    char *p = strstr(reply, "\r\n");
    assert_non_null(p);
    snprintf(id, len, "%.40s", p + 2);
    assert_int_equal(strlen(id), 40);
}

/* 600 slots move from node `from` to node `to` while increments and adds
 * flow, blocking or from event loops. */
static void reshard_under_load(struct fixture *f, bool loop, int from_node, int to_node,
                               const char *keyfmt, const char *addfmt)
{
    struct loader l = {.s = store_clone(f->s), .loop = loop};
    assert_non_null(l.s);
    keyset_init(&l.k, RKEYS, keyfmt);
    l.expect = calloc(RKEYS, sizeof(*l.expect));
    l.maybe = calloc(RKEYS, sizeof(*l.maybe));
    assert_non_null(l.maybe);
    atomic_init(&l.stop, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, load, &l), 0);
    struct adder ad = {.s = store_clone(f->s), .loop = loop, .fmt = addfmt};
    assert_non_null(ad.s);
    ad.keys = calloc(ADDS_MAX, sizeof(*ad.keys));
    ad.status = calloc(ADDS_MAX, sizeof(*ad.status));
    assert_non_null(ad.status);
    atomic_init(&ad.stop, false);
    pthread_t ta;
    assert_int_equal(pthread_create(&ta, NULL, add_load, &ad), 0);

    char from[48], to[48], addr[32], slots[] = "600";
    node_id(&f->node[from_node], from, sizeof(from));
    node_id(&f->node[to_node], to, sizeof(to));
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)f->node[from_node].port);
    const char *argv[] = {"redis-cli", "--cluster", "reshard", addr, "--cluster-from", from,
                          "--cluster-to", to, "--cluster-slots", slots, "--cluster-yes",
                          "--cluster-pipeline", "5", NULL};
    uint64_t t0 = util_mono_ms();
    int rc = server_run(argv, NULL, 0);
    uint64_t took = util_mono_ms() - t0;
    atomic_store(&l.stop, true);
    atomic_store(&ad.stop, true);
    pthread_join(t, NULL);
    pthread_join(ta, NULL);
    assert_int_equal(rc, 0);

    struct store_stats st;
    store_get_stats(l.s, &st);
    print_message("reshard of %s slots took %llu ms under %llu batches (%llu from a loop): "
                  "redirects=%llu map_refreshes=%llu unavailable=%llu errors=%llu\n",
                  slots, (unsigned long long)took, (unsigned long long)l.batches,
                  (unsigned long long)l.from_loop,
                  (unsigned long long)st.redirects, (unsigned long long)st.map_refreshes,
                  (unsigned long long)l.unavailable, (unsigned long long)l.errors);
    assert_true(l.batches >= 3);
    assert_true(st.redirects > 0);
    assert_int_equal(l.errors, 0);
    assert_int_equal(l.from_loop, loop ? l.batches : 0);
    assert_int_equal(ad.from_loop, loop ? ad.batches : 0);

    /* read through another handle, whose map predates nothing */
    assert_int_equal(store_mget_u64(f->s, l.k.keys, l.k.lens, RKEYS, l.k.vals, NULL), STORE_OK);
    for (size_t i = 0; i < RKEYS; i++)
        if (l.k.vals[i] < l.expect[i] || l.k.vals[i] > l.expect[i] + l.maybe[i])
            fail_msg("%s reads %llu, confirmed %llu", l.k.keys[i],
                     (unsigned long long)l.k.vals[i], (unsigned long long)l.expect[i]);
    /* the target now owns keys */
    assert_true(dbsize(&f->node[to_node]) > 0);

    /* Every add that said OK is there with its value, once: added again
     * (one batch, through the handle that saw the moves) each says EXISTS. */
    struct store_stats ast;
    store_get_stats(ad.s, &ast);
    print_message("adds through the reshard: %llu batches of %u, redirects=%llu\n",
                  (unsigned long long)ad.batches, ADDS_BATCH,
                  (unsigned long long)ast.redirects);
    assert_true(ad.batches >= 1);
    assert_int_equal(ad.exists, 0);
    struct store_add_item *again = calloc(ad.used, sizeof(*again));
    assert_non_null(again);
    size_t n_ok = 0;
    for (size_t i = 0; i < ad.used; i++) {
        if (ad.status[i] != STORE_OK)
            continue;
        again[n_ok++] = (struct store_add_item){.key = ad.keys[i], .keylen = strlen(ad.keys[i]),
                                                .val = "x", .vallen = 1};
        char *val = NULL;
        size_t len = 0;
        assert_int_equal(store_get(f->s, ad.keys[i], strlen(ad.keys[i]), &val, &len), STORE_OK);
        assert_int_equal(len, 8);
        assert_memory_equal(val, ad.keys[i] + 8, 8);
        free(val);
    }
    assert_true(n_ok > 0);
    assert_int_equal(store_add_batch(ad.s, again, n_ok, 600), STORE_OK);
    for (size_t i = 0; i < n_ok; i++)
        assert_int_equal(again[i].status, STORE_EXISTS);
    free(again);
    free(ad.keys);
    free(ad.status);
    store_close(ad.s);
    keyset_free(&l.k);
    free(l.expect);
    free(l.maybe);
    store_close(l.s);
}

static void test_exact_through_resharding(void **state)
{
    reshard_under_load(*state, false, 0, 1, "1d-live:q9age2right%04zu", "1d-live:u:rs-%05zu:q1");
}

static void test_exact_through_resharding_loop(void **state)
{
    reshard_under_load(*state, true, 1, 2, "1d-live:q8age3wrong%04zu", "1d-live:u:rl-%05zu:q1");
}

/* A master dies (no replica to fail over to): its keys are refused at once,
 * the other masters' keys still land. */
static void test_dead_master(void **state)
{
    struct fixture *f = *state;
    char url[256], err[256];
    const struct server *svs[] = {&f->node[0], &f->node[1], &f->node[2]};
    server_url(svs, NMASTERS, "timeout_ms=300", url, sizeof(url));
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    struct keyset k;
    keyset_init(&k, 900, "dm:q1right%03zu");
    for (size_t i = 0; i < 900; i++)
        k.items[i] = (struct store_incr){.key = k.keys[i], .keylen = k.lens[i], .delta = 1};
    assert_int_equal(store_incr_batch(s, k.items, 900, 60), STORE_OK);
    server_kill(&f->node[2]);
    for (size_t i = 0; i < 900; i++)
        k.items[i] = (struct store_incr){.key = k.keys[i], .keylen = k.lens[i], .delta = 1};
    uint64_t t0 = util_mono_ms();
    assert_int_equal(store_incr_batch(s, k.items, 900, 60), STORE_UNAVAILABLE);
    uint64_t took = util_mono_ms() - t0;
    size_t ok = 0, unav = 0;
    for (size_t i = 0; i < 900; i++) {
        ok += k.items[i].status == STORE_OK;
        unav += k.items[i].status == STORE_UNAVAILABLE;
    }
    print_message("dead master: %llu ms, ok=%zu unavailable=%zu\n", (unsigned long long)took,
                  ok, unav);
    assert_int_equal(ok + unav, 900);
    assert_true(ok > 300 && unav > 100);
    /* refused without waiting for the dead node again and again: one
     * failure recorded, a few at most (map refreshes try it too) */
    struct store_stats st;
    store_get_stats(s, &st);
    assert_true(st.node_failures >= 1 && st.node_failures <= 3);
    assert_int_equal(store_mget_u64(s, k.keys, k.lens, 900, k.vals, NULL), STORE_UNAVAILABLE);

    /* From an event loop, on a handle that never read the map: the same
     * split, and the dead node is not waited for again and again. */
    struct store *sl = store_open(url, err, sizeof(err));
    assert_non_null(sl);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < 900; i++)
            k.items[i] = (struct store_incr){.key = k.keys[i], .keylen = k.lens[i], .delta = 1};
        t0 = util_mono_ms();
        assert_true(loop_incr(sl, base, k.items, 900, 60));
        took = util_mono_ms() - t0;
        size_t lok = 0, lunav = 0;
        for (size_t i = 0; i < 900; i++) {
            lok += k.items[i].status == STORE_OK;
            lunav += k.items[i].status == STORE_UNAVAILABLE;
        }
        print_message("dead master, from a loop: %llu ms, ok=%zu unavailable=%zu\n",
                      (unsigned long long)took, lok, lunav);
        assert_int_equal(lok, ok);
        assert_int_equal(lunav, unav);
    }
    store_get_stats(sl, &st);
    assert_true(st.node_failures >= 1 && st.node_failures <= 3);
    event_base_free(base);
    store_close(sl);
    keyset_free(&k);
    store_close(s);
}

static void test_store_contract(void **state)
{
    struct fixture *f = *state;
    store_contract_add_batch(f->s, "cl");
    store_contract_get_each_many(f->s, "cl", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incr_and_mget_exact),
        cmocka_unit_test(test_store_contract),
        cmocka_unit_test(test_shards_spread_over_slots),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_clone_and_seeds),
        cmocka_unit_test(test_loop_batches),
        cmocka_unit_test(test_exact_through_resharding),
        cmocka_unit_test(test_exact_through_resharding_loop),
        cmocka_unit_test(test_dead_master),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
