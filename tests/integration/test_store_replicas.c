/* replicas=2 on 3 memcached and on 3 redis servers: a node killed with
 * kill -9 in the middle of a loop of batches and restarted empty loses no
 * count (every batch acknowledged, the maximum across replicas exact), the
 * increments it missed are replayed to it (hinted handoff), and blobs never
 * come back stale from a replica that missed a write. A replica that stops
 * answering (SIGSTOP) costs a batch replica_lag_ms, not the I/O timeout,
 * and is never counted twice once it resumes. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "eventfile.h"
#include "qstate.h"
#include "servers.h"
#include "store.h"
#include "store_contract.h"
#include "store_impl.h"
#include "store_pool.h"
#include "util.h"

#define NNODES 3

struct fixture {
    enum server_kind kind;
    struct server node[NNODES];
    char url[300];
};

static int setup(void **state, enum server_kind kind)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f;
    f->kind = kind;
    const struct server *svs[NNODES];
    for (int i = 0; i < NNODES; i++) {
        assert_true(server_start(&f->node[i], kind, 0));
        svs[i] = &f->node[i];
    }
    server_url(svs, NNODES, "replicas=2&timeout_ms=300", f->url, sizeof(f->url));
    return 0;
}

static int setup_memcached(void **state)
{
    return setup(state, SERVER_MEMCACHED);
}

static int setup_redis(void **state)
{
    return setup(state, SERVER_REDIS);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        return 0;
    for (int i = 0; i < NNODES; i++)
        server_stop(&f->node[i]);
    free(f);
    return 0;
}

/* A store on one node alone: what that replica holds. */
static struct store *open_node(const struct fixture *f, int i)
{
    const struct server *one[] = {&f->node[i]};
    char url[128], err[256];
    server_url(one, 1, "timeout_ms=300", url, sizeof(url));
    struct store *s = store_open(url, err, sizeof(err));
    assert_non_null(s);
    return s;
}

static void restart_empty(struct fixture *f, int i)
{
    uint16_t port = f->node[i].port;
    assert_true(server_start(&f->node[i], f->kind, port));
}

#define NKEYS 3000

struct loader {
    struct store *s;
    char (*buf)[40];
    const char **keys;
    size_t *lens;
    struct store_incr *items;
    uint64_t *expect;     /* acknowledged increments per key */
    uint64_t *after_fail; /* of those, in batches begun after the node was dead */
    uint64_t *in_fail;    /* of those, in batches the kill overlapped */
    atomic_bool stop;
    /* Anchored on the kill, not on the first node failure the handle
     * sees: a replica given up on for lag (a busy machine) is a failure
     * too, and what the victim held before the kill is wiped anyway. */
    atomic_int kill_phase; /* 0 alive, 1 being killed, 2 dead (reaped) */
    uint64_t batches, unavailable, not_ok, failing_batches;
};

static void *load(void *arg)
{
    struct loader *l = arg;
    uint64_t round = 0;
    while (!atomic_load(&l->stop)) {
        for (size_t i = 0; i < NKEYS; i++)
            l->items[i] = (struct store_incr){.key = l->keys[i], .keylen = l->lens[i],
                                              .delta = (i + round) % 4 + 1};
        struct store_stats before, after;
        int phase_begun = atomic_load(&l->kill_phase);
        store_get_stats(l->s, &before);
        store_incr_batch(l->s, l->items, NKEYS, 600);
        store_get_stats(l->s, &after);
        int phase_ended = atomic_load(&l->kill_phase);
        if (phase_ended > 0 && after.node_failures > before.node_failures)
            l->failing_batches++;
        for (size_t i = 0; i < NKEYS; i++) {
            const struct store_incr *it = &l->items[i];
            if (it->status == STORE_UNAVAILABLE) {
                l->unavailable++; /* applied nowhere: safe, and not expected */
                continue;
            }
            if (it->status != STORE_OK) {
                l->not_ok++;
                continue;
            }
            l->expect[i] += it->delta;
            if (phase_begun == 2)
                l->after_fail[i] += it->delta;
            else if (phase_ended > 0)
                l->in_fail[i] += it->delta;
        }
        l->batches++;
        round++;
        util_sleep_ms(2); /* about ingest's flush period */
    }
    return NULL;
}

static void test_kill_one_node_mid_load(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct loader l = {0};
    /* A lag budget a busy machine's stalls stay under: a second node given
     * up on for lag while the victim is down would leave keys with no
     * replica up (UNAVAILABLE: counted, allowed, but not the point). */
    char url[512];
    const struct server *svs[NNODES];
    for (int i = 0; i < NNODES; i++)
        svs[i] = &f->node[i];
    server_url(svs, NNODES, "replicas=2&timeout_ms=1000&replica_lag_ms=200", url, sizeof(url));
    l.s = store_open(url, err, sizeof(err));
    assert_non_null(l.s);
    l.buf = calloc(NKEYS, sizeof(*l.buf));
    l.keys = calloc(NKEYS, sizeof(*l.keys));
    l.lens = calloc(NKEYS, sizeof(*l.lens));
    l.items = calloc(NKEYS, sizeof(*l.items));
    l.expect = calloc(NKEYS, sizeof(*l.expect));
    l.after_fail = calloc(NKEYS, sizeof(*l.after_fail));
    l.in_fail = calloc(NKEYS, sizeof(*l.in_fail));
    assert_non_null(l.in_fail);
    for (size_t i = 0; i < NKEYS; i++) {
        l.lens[i] = (size_t)snprintf(l.buf[i], sizeof(l.buf[i]), "1d-live:q4c%04zuright", i);
        l.keys[i] = l.buf[i];
    }
    atomic_init(&l.stop, false);
    atomic_init(&l.kill_phase, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, load, &l), 0);
    const uint32_t victim = 1;
    /* First a replica given up on for lag (stopped for 400 ms, past the
     * 200 ms budget), then killed: the drained commands die with it. */
    util_sleep_ms(300);
    assert_true(server_pause(&f->node[victim]));
    util_sleep_ms(400);
    assert_true(server_resume(&f->node[victim]));
    util_sleep_ms(200);
    atomic_store(&l.kill_phase, 1);
    server_kill(&f->node[victim]); /* kill -9, mid-load, reaped */
    atomic_store(&l.kill_phase, 2);
    util_sleep_ms(2000);
    restart_empty(f, victim);
    util_sleep_ms(1500); /* the loop goes on: the hints go in front of its batches */
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    /* An empty batch replays what is left once the node is out of its
     * backoff (at most NODE_BACKOFF_MAX_MS). */
    struct store_stats st;
    uint64_t until = util_mono_ms() + 3 * NODE_BACKOFF_MAX_MS;
    do {
        assert_int_equal(store_incr_batch(l.s, NULL, 0, 600), STORE_OK);
        store_get_stats(l.s, &st);
        if (st.hints_pending > 0)
            util_sleep_ms(50);
    } while (st.hints_pending > 0 && util_mono_ms() < until);
    print_message("%s: %llu batches, unavailable=%llu other not ok=%llu, node_failures=%llu "
                  "hints queued=%llu replayed=%llu dropped=%llu pending=%llu\n",
                  f->kind == SERVER_MEMCACHED ? "memcached" : "redis",
                  (unsigned long long)l.batches, (unsigned long long)l.unavailable,
                  (unsigned long long)l.not_ok,
                  (unsigned long long)st.node_failures, (unsigned long long)st.hints_queued,
                  (unsigned long long)st.hints_replayed, (unsigned long long)st.hints_dropped,
                  (unsigned long long)st.hints_pending);
    /* one replica was always up: nothing failed in a way that may have
     * counted (STORE_ERROR), and almost everything was acknowledged */
    assert_int_equal(l.not_ok, 0);
    assert_true(l.unavailable * 100 < l.batches * NKEYS);
    assert_true(l.failing_batches >= 1); /* the handle saw the kill */
    assert_true(st.node_failures >= 1);
    assert_true(st.hints_queued > 0);
    assert_int_equal(st.hints_replayed, st.hints_queued);
    assert_int_equal(st.hints_dropped, 0);
    assert_int_equal(st.hints_pending, 0);

    /* the maximum across replicas is exact, for every key */
    uint64_t *vals = calloc(NKEYS, sizeof(*vals));
    assert_non_null(vals);
    struct store *reader = store_open(f->url, err, sizeof(err));
    assert_non_null(reader);
    assert_int_equal(store_mget_u64(reader, l.keys, l.lens, NKEYS, vals, NULL), STORE_OK);
    for (size_t i = 0; i < NKEYS; i++)
        if (vals[i] != l.expect[i])
            fail_msg("%s reads %llu, acknowledged %llu", l.keys[i],
                     (unsigned long long)vals[i], (unsigned long long)l.expect[i]);

    /* the restarted node holds what it missed (replayed) and what came
     * after; what the kill overlapped may or may not have reached it */
    struct store *one = open_node(f, victim);
    assert_int_equal(store_mget_u64(one, l.keys, l.lens, NKEYS, vals, NULL), STORE_OK);
    size_t on_victim = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        uint32_t nodes[2];
        assert_int_equal(store_placement(l.s, l.keys[i], l.lens[i], nodes, 2), 2);
        assert_int_not_equal(nodes[0], nodes[1]);
        if (nodes[0] != victim && nodes[1] != victim) {
            assert_int_equal(vals[i], 0);
            continue;
        }
        on_victim++;
        if (vals[i] < l.after_fail[i] || vals[i] > l.after_fail[i] + l.in_fail[i])
            fail_msg("%s on the restarted node: %llu, expected %llu..%llu", l.keys[i],
                     (unsigned long long)vals[i], (unsigned long long)l.after_fail[i],
                     (unsigned long long)(l.after_fail[i] + l.in_fail[i]));
    }
    assert_true(on_victim > NKEYS / 3);
    store_close(one);
    store_close(reader);
    store_close(l.s);
    free(vals);
    free(l.buf);
    free(l.keys);
    free(l.lens);
    free(l.items);
    free(l.expect);
    free(l.after_fail);
    free(l.in_fail);
}

/* The first replica of a key (placement order). */
static int primary_of(struct store *s, const char *key)
{
    uint32_t nodes[2];
    assert_int_equal(store_placement(s, key, strlen(key), nodes, 2), 2);
    return (int)nodes[0];
}

/* Blobs: a replica that missed a set must not serve its old value first;
 * a primary that restarted empty must not make add succeed twice. */
/* The per-node calls behind the aggregator's repair: a copy read on each
 * replica, an increment and an add on one named node only, and a node down
 * answering UNAVAILABLE for its copies while its replica still reads. */
struct copies {
    int n;
    char seen[4][32];
};

static void on_copy(void *arg, const char *val, size_t vallen)
{
    struct copies *c = arg;
    if (c->n < 4)
        snprintf(c->seen[c->n++], sizeof(c->seen[0]), "%.*s", (int)vallen, val);
}

static void on_copy_of(void *arg, size_t i, const char *val, size_t vallen)
{
    assert_int_equal(i, 0); /* key 1 is nowhere */
    on_copy(arg, val, vallen);
}

static void test_blobs_with_a_replica_down(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store *s = store_open(f->url, err, sizeof(err));
    assert_non_null(s);
    const char *key = "1d-live:q2:state";
    size_t klen = strlen(key);
    int p = primary_of(s, key);
    char *val = NULL;
    size_t len;

    assert_int_equal(store_set(s, key, klen, "open 100", 8, 600), STORE_OK);
    /* the primary stops answering, keeping its data */
    assert_true(server_pause(&f->node[p]));
    assert_int_equal(store_get(s, key, klen, &val, &len), STORE_OK); /* times out, then replica 2 */
    assert_string_equal(val, "open 100");
    free(val);
    /* within the backoff the primary is skipped: the set reaches replica 2 only */
    assert_int_equal(store_set(s, key, klen, "closed 100 200", 14, 600), STORE_OK);
    struct store_stats st;
    store_get_stats(s, &st);
    /* Hinted, unless the machine was so slow that the backoff ended first
     * and the set was sent to the stopped node itself (which applies it
     * once continued): both are right, the checks below follow the case. */
    assert_true(st.hints_pending <= 1);
    bool hinted = st.hints_pending == 1;
    if (hinted) {
        /* many keys at once skip the node in its backoff too, and say so */
        const char *keys[] = {key};
        enum store_status sts[1];
        size_t missed[1];
        struct copies c = {0};
        assert_int_equal(store_get_each_many(s, keys, &klen, 1, on_copy_of, &c, sts, missed),
                         STORE_OK);
        assert_int_equal(sts[0], STORE_OK);
        assert_int_equal(missed[0], 1);
        assert_int_equal(c.n, 1);
        assert_string_equal(c.seen[0], "closed 100 200");
    }
    assert_true(server_resume(&f->node[p]));
    struct store *prim = open_node(f, p);
    assert_int_equal(store_get(prim, key, klen, &val, &len), STORE_OK);
    /* stale there ("open 100"), unless the machine was so slow that the
     * backoff ended first and the set was sent to the stopped node, which
     * has just applied it */
    if (strcmp(val, "open 100") != 0)
        assert_string_equal(val, "closed 100 200");
    free(val);
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
    /* the next operation deletes the stale copy first */
    assert_int_equal(store_get(s, key, klen, &val, &len), STORE_OK);
    assert_string_equal(val, "closed 100 200");
    free(val);
    store_get_stats(s, &st);
    assert_int_equal(st.hints_pending, 0);
    if (hinted) {
        assert_int_equal(store_get(prim, key, klen, &val, &len), STORE_NOTFOUND);
    } else {
        assert_int_equal(store_get(prim, key, klen, &val, &len), STORE_OK);
        assert_string_equal(val, "closed 100 200");
        free(val);
    }
    /* a reader without the hint reads the fresh value too */
    struct store *other = store_open(f->url, err, sizeof(err));
    assert_non_null(other);
    assert_int_equal(store_get(other, key, klen, &val, &len), STORE_OK);
    assert_string_equal(val, "closed 100 200");
    free(val);
    store_close(prim);

    /* add: the primary restarts empty; the key still exists on replica 2 */
    const char *ukey = "1d-live:u:fan-7:q2";
    size_t ulen = strlen(ukey);
    int up = primary_of(s, ukey);
    assert_int_equal(store_add(s, ukey, ulen, "1", 1, 600), STORE_OK);
    assert_int_equal(store_add(s, ukey, ulen, "2", 1, 600), STORE_EXISTS);
    server_kill(&f->node[up]);
    restart_empty(f, up);
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
    assert_int_equal(store_add(other, ukey, ulen, "3", 1, 600), STORE_EXISTS);
    /* and the primary got the old value back */
    prim = open_node(f, up);
    assert_int_equal(store_get(prim, ukey, ulen, &val, &len), STORE_OK);
    assert_string_equal(val, "1");
    free(val);
    assert_int_equal(store_add(s, ukey, ulen, "4", 1, 600), STORE_EXISTS);
    /* delete reaches both */
    assert_int_equal(store_delete(s, ukey, ulen), STORE_OK);
    assert_int_equal(store_get(s, ukey, ulen, &val, &len), STORE_NOTFOUND);
    assert_int_equal(store_delete(s, ukey, ulen), STORE_NOTFOUND);
    store_close(prim);

    /* counters: a primary restarted empty cannot pull a total down */
    struct store_incr it = {.key = "1d-live:q3right07", .keylen = 17, .delta = 40};
    assert_int_equal(store_incr_batch(s, &it, 1, 600), STORE_OK);
    int cp = primary_of(s, it.key);
    server_kill(&f->node[cp]);
    restart_empty(f, cp);
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
    it.delta = 2;
    it.want_value = true;
    assert_int_equal(store_incr_batch(other, &it, 1, 600), STORE_OK);
    assert_int_equal(it.value, 42); /* the largest replica's */
    uint64_t v = 0;
    const char *keys[] = {it.key};
    size_t lens[] = {it.keylen};
    assert_int_equal(store_mget_u64(other, keys, lens, 1, &v, NULL), STORE_OK);
    assert_int_equal(v, 42);
    store_close(other);
    store_close(s);
}

#define SLOW_KEYS 300

static enum store_status slow_batch(struct store *s, char (*keys)[40], struct store_incr *items,
                                    uint64_t *expect, uint64_t *elapsed_ms)
{
    for (size_t i = 0; i < SLOW_KEYS; i++)
        items[i] = (struct store_incr){.key = keys[i], .keylen = strlen(keys[i]), .delta = 1};
    uint64_t t0 = util_mono_ms();
    enum store_status st = store_incr_batch(s, items, SLOW_KEYS, 600);
    *elapsed_ms = util_mono_ms() - t0;
    for (size_t i = 0; i < SLOW_KEYS; i++)
        if (items[i].status == STORE_OK)
            expect[i]++;
    return st;
}

/* A replica that stops answering mid-show (SIGSTOP: its socket still takes
 * the commands) is given up on replica_lag_ms after the others confirmed:
 * the batch is acknowledged, what the silent node was sent gets no hint, the
 * next batches skip it (hinted) until it answers fast again. Once it
 * resumes it may apply what it was sent: never twice, never more than was
 * acknowledged. Without a budget (replica_lag_ms=0) the batch waits for
 * the I/O timeout, as before. */
static void test_silent_replica_is_given_up_on(void **state)
{
    struct fixture *f = *state;
    const struct server *svs[NNODES];
    for (int i = 0; i < NNODES; i++)
        svs[i] = &f->node[i];
    char url[300], url0[300], err[256];
    server_url(svs, NNODES, "replicas=2&timeout_ms=2000&replica_lag_ms=20", url, sizeof(url));
    server_url(svs, NNODES, "replicas=2&timeout_ms=400&replica_lag_ms=0", url0, sizeof(url0));
    struct store *s = store_open(url, err, sizeof(err));
    struct store *s0 = store_open(url0, err, sizeof(err));
    assert_non_null(s);
    assert_non_null(s0);
    char(*keys)[40] = calloc(SLOW_KEYS, sizeof(*keys));
    struct store_incr *items = calloc(SLOW_KEYS, sizeof(*items));
    uint64_t *expect = calloc(SLOW_KEYS, sizeof(*expect));
    uint64_t *before = calloc(SLOW_KEYS, sizeof(*before));
    uint64_t *vals = calloc(SLOW_KEYS, sizeof(*vals));
    assert_non_null(vals);
    for (size_t i = 0; i < SLOW_KEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "1d-live:q5c%04zuwrong", i);
    uint64_t ms;
    assert_int_equal(slow_batch(s, keys, items, expect, &ms), STORE_OK); /* connections up */
    assert_int_equal(slow_batch(s0, keys, items, expect, &ms), STORE_OK);

    const int victim = 2;
    struct store_stats st0, st1;
    store_get_stats(s, &st0);
    memcpy(before, expect, SLOW_KEYS * sizeof(*before));
    assert_true(server_pause(&f->node[victim]));
    uint64_t ms_lag, ms_skip, ms_wait;
    enum store_status lag = slow_batch(s, keys, items, expect, &ms_lag);
    uint64_t *after_lag = calloc(SLOW_KEYS, sizeof(*after_lag));
    assert_non_null(after_lag);
    memcpy(after_lag, expect, SLOW_KEYS * sizeof(*after_lag));
    enum store_status skip = slow_batch(s, keys, items, expect, &ms_skip);
    store_get_stats(s, &st1);
    enum store_status wait = slow_batch(s0, keys, items, expect, &ms_wait);
    assert_true(server_resume(&f->node[victim]));
    print_message("%s: silent replica: batch given up on it in %llu ms, next batch %llu ms, "
                  "without a budget %llu ms (timeout_ms=400); hints queued %llu\n",
                  f->kind == SERVER_MEMCACHED ? "memcached" : "redis",
                  (unsigned long long)ms_lag, (unsigned long long)ms_skip,
                  (unsigned long long)ms_wait,
                  (unsigned long long)(st1.hints_queued - st0.hints_queued));
    assert_int_equal(lag, STORE_OK);
    assert_int_equal(skip, STORE_OK);
    assert_int_equal(wait, STORE_OK);      /* the other replicas confirmed */
    assert_true(ms_lag < 1000);            /* not the 2000 ms I/O timeout */
    assert_true(ms_skip < 1000);
    assert_true(ms_wait >= 350);           /* replica_lag_ms=0 waits for the timeout */
    assert_true(st1.node_failures > st0.node_failures);
    assert_true(st1.hints_queued > st0.hints_queued); /* the skipped batch */

    /* Back: the hints go to it once a batch finds it fast again. */
    uint64_t until = util_mono_ms() + 4 * NODE_BACKOFF_MAX_MS;
    struct store_stats st;
    do {
        util_sleep_ms(50);
        assert_int_equal(store_incr_batch(s, NULL, 0, 600), STORE_OK);
        assert_int_equal(store_incr_batch(s0, NULL, 0, 600), STORE_OK);
        store_get_stats(s, &st);
        struct store_stats st_0;
        store_get_stats(s0, &st_0);
        st.hints_pending += st_0.hints_pending;
    } while (st.hints_pending > 0 && util_mono_ms() < until);
    assert_int_equal(st.hints_pending, 0);

    struct store *reader = store_open(f->url, err, sizeof(err));
    assert_non_null(reader);
    const char *kp[SLOW_KEYS];
    size_t kl[SLOW_KEYS];
    for (size_t i = 0; i < SLOW_KEYS; i++) {
        kp[i] = keys[i];
        kl[i] = strlen(keys[i]);
    }
    assert_int_equal(store_mget_u64(reader, kp, kl, SLOW_KEYS, vals, NULL), STORE_OK);
    for (size_t i = 0; i < SLOW_KEYS; i++)
        if (vals[i] != expect[i])
            fail_msg("%s reads %llu, acknowledged %llu", keys[i], (unsigned long long)vals[i],
                     (unsigned long long)expect[i]);
    /* The silent node holds at most what was acknowledged: the batch it was
     * given up on may have landed there (no hint: never twice) or not. */
    struct store *one = open_node(f, victim);
    assert_int_equal(store_mget_u64(one, kp, kl, SLOW_KEYS, vals, NULL), STORE_OK);
    size_t on_victim = 0;
    for (size_t i = 0; i < SLOW_KEYS; i++) {
        uint32_t nodes[2];
        assert_int_equal(store_placement(s, keys[i], kl[i], nodes, 2), 2);
        if (nodes[0] != (uint32_t)victim && nodes[1] != (uint32_t)victim)
            continue;
        on_victim++;
        uint64_t unknown = after_lag[i] - before[i];
        if (vals[i] > expect[i] || vals[i] + unknown < expect[i])
            fail_msg("%s on the silent node: %llu, expected %llu..%llu", keys[i],
                     (unsigned long long)vals[i], (unsigned long long)(expect[i] - unknown),
                     (unsigned long long)expect[i]);
    }
    assert_true(on_victim > SLOW_KEYS / 3);
    store_close(one);
    store_close(reader);
    store_close(s0);
    store_close(s);
    free(keys);
    free(items);
    free(expect);
    free(before);
    free(after_lag);
    free(vals);
}

static void test_store_contract(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store *s = store_open(f->url, err, sizeof(err));
    assert_non_null(s);
    store_contract_add_batch(s, "rep");
    store_contract_get_each_many(s, "rep", 2);
    store_close(s);
}

/* store_add_batch on replicas: one run per replica rank, with store_add's
 * rules item by item. A primary back empty must not let a marker in twice
 * (the batch says EXISTS and the primary gets the old value back); a
 * replica down takes nothing, the other decides, and the one down gets the
 * key deleted when it answers (it cannot serve a stale marker first): all
 * of its deletes in one pipelined run. */
static void test_add_batch_replicas(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store *s = store_open(f->url, err, sizeof(err));
    assert_non_null(s);
    enum { N = 200 };
    static char keys[N][48];
    struct store_add_item it[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "1d-live:u:batch-%d:q1", i);
        it[i] = (struct store_add_item){.key = keys[i], .keylen = strlen(keys[i]), .val = "R 5",
                                        .vallen = 3};
    }
    assert_int_equal(store_add_batch(s, it, N, 600), STORE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(it[i].status, STORE_OK);

    /* Node 0 back empty: every key it was primary for still EXISTS. */
    server_kill(&f->node[0]);
    restart_empty(f, 0);
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
    struct store *other = store_open(f->url, err, sizeof(err));
    assert_non_null(other);
    for (int i = 0; i < N; i++)
        it[i].val = "W 9";
    assert_int_equal(store_add_batch(other, it, N, 600), STORE_OK);
    struct store *n0 = open_node(f, 0);
    int on0 = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(it[i].status, STORE_EXISTS);
        if (primary_of(s, keys[i]) != 0)
            continue;
        on0++;
        char *val = NULL;
        size_t len = 0;
        assert_int_equal(store_get(n0, keys[i], strlen(keys[i]), &val, &len), STORE_OK);
        assert_string_equal(val, "R 5"); /* the old value, copied back */
        free(val);
    }
    assert_true(on0 > 0);
    store_close(n0);

    /* Node 1 down: new keys land on their other replica, OK. */
    server_kill(&f->node[1]);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "1d-live:u:down-%d:q1", i);
        it[i] = (struct store_add_item){.key = keys[i], .keylen = strlen(keys[i]), .val = "R 1",
                                        .vallen = 3};
    }
    assert_int_equal(store_add_batch(other, it, N, 600), STORE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(it[i].status, STORE_OK);
    struct store_stats st;
    store_get_stats(other, &st);
    assert_true(st.hints_pending > 0); /* stale hints for node 1 */
    assert_int_equal(store_add_batch(other, it, N, 600), STORE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(it[i].status, STORE_EXISTS);

    /* Back, holding an older marker for each of them (as a node that only
     * missed the adds would): the next operation deletes them all there, in
     * one pipelined run, and the hints are gone. */
    restart_empty(f, 1);
    struct store *n1 = open_node(f, 1);
    int on1 = 0;
    for (int i = 0; i < N; i++) {
        uint32_t where[2];
        assert_int_equal(store_placement(other, keys[i], strlen(keys[i]), where, 2), 2);
        if (where[0] != 1 && where[1] != 1)
            continue;
        on1++;
        assert_int_equal(store_set(n1, keys[i], strlen(keys[i]), "R 0", 3, 600), STORE_OK);
    }
    assert_true(on1 > 0);
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
    struct store_stats before_flush, after_flush;
    store_get_stats(other, &before_flush);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_get(other, keys[0], strlen(keys[0]), &val, &len), STORE_OK);
    assert_string_equal(val, "R 1");
    free(val);
    store_get_stats(other, &after_flush);
    assert_int_equal(after_flush.hints_pending, 0);
    assert_int_equal(after_flush.hints_replayed - before_flush.hints_replayed, (uint64_t)on1);
    for (int i = 0; i < N; i++) {
        uint32_t where[2];
        store_placement(other, keys[i], strlen(keys[i]), where, 2);
        if (where[0] != 1 && where[1] != 1)
            continue;
        assert_int_equal(store_get(n1, keys[i], strlen(keys[i]), &val, &len), STORE_NOTFOUND);
    }
    store_close(n1);
    store_close(other);
    store_close(s);
}

/* A reader whose view of the nodes is not the writer's: the writer gave up
 * on a stopped primary and keeps the stale delete for it, the reader finds
 * the primary answering with the old value first. store_get then returns
 * the old state (a question still open after its close, on every ingest
 * that reads it so); store_get_each gives every copy and qstate_read picks
 * the one written last. */
static void test_another_reader_sees_the_newest(void **state)
{
    struct fixture *f = *state;
    char err[256];
    const char *key = "1d-live:q3:state";
    size_t klen = strlen(key);
    struct store *w = store_open(f->url, err, sizeof(err));
    assert_non_null(w);
    int p = primary_of(w, key);
    assert_int_equal(store_set(w, key, klen, "open 100", 8, 600), STORE_OK);
    assert_true(server_pause(&f->node[p]));
    char *val = NULL;
    size_t len;
    assert_int_equal(store_get(w, key, klen, &val, &len), STORE_OK); /* the writer gives up on it */
    free(val);
    assert_int_equal(store_set(w, key, klen, "closed 100 200", 14, 600), STORE_OK);
    struct store_stats st;
    store_get_stats(w, &st);
    bool hinted = st.hints_pending == 1; /* else a slow machine sent it to the stopped node */
    assert_true(server_resume(&f->node[p]));

    struct store *r = store_open(f->url, err, sizeof(err)); /* its own view: all up */
    assert_non_null(r);
    assert_int_equal(store_get(r, key, klen, &val, &len), STORE_OK);
    if (hinted)
        assert_string_equal(val, "open 100"); /* the hazard store_get_each is for */
    free(val);
    struct copies c = {0};
    assert_int_equal(store_get_each(r, key, klen, on_copy, &c, NULL), STORE_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.seen[1], "closed 100 200");
    assert_string_equal(c.seen[0], hinted ? "open 100" : "closed 100 200");
    /* the same copies when many keys are read at once (the state refresh) */
    const char *keys[] = {key, "1d-live:q9:state"};
    size_t klens[] = {klen, strlen(keys[1])};
    enum store_status sts[2];
    size_t missed[2];
    struct copies many = {0};
    assert_int_equal(store_get_each_many(r, keys, klens, 2, on_copy_of, &many, sts, missed),
                     STORE_OK);
    assert_int_equal(sts[0], STORE_OK);
    assert_int_equal(sts[1], STORE_NOTFOUND);
    assert_int_equal(missed[0] + missed[1], 0);
    assert_int_equal(many.n, 2);
    assert_true(strcmp(many.seen[0], "closed 100 200") == 0 ||
                strcmp(many.seen[1], "closed 100 200") == 0);
    struct eventfile ef = {.name = "1d-live"};
    struct qstate q;
    assert_int_equal(qstate_read(r, &ef, 3, &q), STORE_OK);
    assert_int_equal(q.kind, QSTATE_CLOSED);
    assert_int_equal(q.close_ms, 200);
    /* open again after the close: the later write wins over the close */
    assert_int_equal(store_set(w, key, klen, "open 300", 8, 600), STORE_OK);
    assert_int_equal(qstate_read(r, &ef, 3, &q), STORE_OK);
    assert_true(q.kind == QSTATE_OPEN || (hinted && q.kind == QSTATE_CLOSED));
    /* nothing anywhere: not open */
    assert_int_equal(qstate_read(r, &ef, 9, &q), STORE_NOTFOUND);
    assert_int_equal(q.kind, QSTATE_NOT_OPEN);
    store_close(r);
    store_close(w);
}

static void test_node_calls(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store *s = store_open(f->url, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_node_count(s), NNODES);
    assert_int_equal(store_replicas(s), 2);
    const char *key = "nodecalls:k";
    size_t klen = strlen(key);
    uint32_t where[2];
    assert_int_equal(store_placement(s, key, klen, where, 2), 2);

    /* Only the second replica gets the increment. */
    struct store_node_write w = {.key = key, .keylen = klen, .delta = 5, .node = where[1]};
    store_node_incr(s, &w, 1, 60);
    assert_int_equal(w.status, STORE_OK);
    struct store_replica_value v[2];
    const char *keys[] = {key};
    assert_int_equal(store_mget_replicas(s, keys, &klen, 1, v), STORE_OK);
    assert_int_equal(v[0].node, where[0]);
    assert_false(v[0].present);
    assert_int_equal(v[0].value, 0);
    assert_int_equal(v[1].node, where[1]);
    assert_true(v[1].present);
    assert_int_equal(v[1].value, 5);

    /* An add on one node: EXISTS there the second time, and not on the
     * other replica. */
    const char *ck = "nodecalls:claim";
    struct store_node_write a = {.key = ck, .keylen = strlen(ck), .val = "1", .vallen = 1,
                                 .node = where[0]};
    store_node_add(s, &a, 1, 60);
    assert_int_equal(a.status, STORE_OK);
    store_node_add(s, &a, 1, 60);
    assert_int_equal(a.status, STORE_EXISTS);
    char *val = NULL;
    size_t vlen = 0;
    assert_int_equal(store_node_get(s, where[0], ck, strlen(ck), &val, &vlen), STORE_OK);
    assert_int_equal(vlen, 1);
    free(val);
    assert_int_equal(store_node_get(s, where[1], ck, strlen(ck), &val, &vlen), STORE_NOTFOUND);

    /* The first replica down: its copy is UNAVAILABLE, the other still read. */
    server_kill(&f->node[where[0]]);
    assert_int_not_equal(store_mget_replicas(s, keys, &klen, 1, v), STORE_OK);
    assert_int_equal(v[0].status, STORE_UNAVAILABLE);
    assert_int_equal(v[1].status, STORE_OK);
    assert_int_equal(v[1].value, 5);
    w.node = where[0];
    store_node_incr(s, &w, 1, 60);
    assert_int_not_equal(w.status, STORE_OK);
    assert_true(server_start(&f->node[where[0]], f->kind, f->node[where[0]].port));

    /* A bad key and a node out of range are refused, not sent. */
    struct store_node_write bad[2] = {{.key = "has space", .keylen = 9, .delta = 1},
                                      {.key = key, .keylen = klen, .delta = 1, .node = NNODES}};
    store_node_incr(s, bad, 2, 60);
    assert_int_equal(bad[0].status, STORE_ERROR);
    assert_int_equal(bad[1].status, STORE_ERROR);
    store_close(s);

    /* memory: has no nodes to address. */
    struct store *m = store_open("memory:", err, sizeof(err));
    assert_non_null(m);
    assert_int_equal(store_node_count(m), 0);
    assert_int_equal(store_replicas(m), 1);
    assert_int_equal(store_mget_replicas(m, keys, &klen, 1, v), STORE_ERROR);
    store_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_contract),
        cmocka_unit_test(test_kill_one_node_mid_load),
        cmocka_unit_test(test_blobs_with_a_replica_down),
        cmocka_unit_test(test_another_reader_sees_the_newest),
        cmocka_unit_test(test_node_calls),
        cmocka_unit_test(test_add_batch_replicas),
        cmocka_unit_test(test_silent_replica_is_given_up_on),
    };
    int failed = cmocka_run_group_tests_name("memcached", tests, setup_memcached, teardown);
    failed += cmocka_run_group_tests_name("redis", tests, setup_redis, teardown);
    return failed;
}
