/* The group commit of answers with users on 3 real memcached, and on 3
 * real Redis, replicas=2, written from the loop's own handle
 * (store_add_start, store_incr_start), as an ingest node does on a live
 * night. Every reply must say what the
 * store holds: a 202's answer is counted whole, a 503's not at all, and a
 * user's second answer is a 409, also when it reaches another node. A node
 * killed or stopped mid-batch changes none of that. The same fans go
 * through a 3-master Redis Cluster from the loop too (a cluster without
 * replicas loses a dead master's keys: test_store_cluster.c kills one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "commit.h"
#include "commit_support.h"
#include "country.h"
#include "eventfile.h"
#include "keys.h"
#include "servers.h"
#include "store.h"
#include "util.h"
#include "worker.h"

static const char EVENT_JSON[] = COMMIT_TEST_EVENT_JSON("tcr");

#define NODES 3

struct fixture {
    enum server_kind kind;
    struct server mc[NODES];
    char url[512];
    struct eventfile ef;
};

/* One ingest node: its loop, its worker and handles, its committer. */
struct node {
    struct event_base *base;
    struct store *worker_store; /* (the worker's) */
    struct store *loop_store;
    struct worker *w;
    struct committer *c;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    char err[256];
    assert_true(eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), &f->ef, err, sizeof(err)));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

/* Fresh servers for every test: a killed node must not leak into the next. */
static int servers_up(void **state)
{
    struct fixture *f = *state;
    const struct server *svs[NODES];
    for (int i = 0; i < NODES; i++) {
        assert_true(server_start(&f->mc[i], f->kind, 0));
        svs[i] = &f->mc[i];
    }
    /* A lag budget above a busy machine's stalls: a second node given up on
     * while the victim is down would turn answers into 503s (allowed, and
     * checked, but not the point here). */
    if (f->kind == SERVER_REDIS_CLUSTER) {
        assert_true(server_cluster_create(svs, NODES));
        server_url(svs, NODES, "timeout_ms=1000", f->url, sizeof(f->url));
        return 0;
    }
    server_url(svs, NODES, "replicas=2&timeout_ms=1000&replica_lag_ms=200", f->url,
               sizeof(f->url));
    return 0;
}

static int memcached_up(void **state)
{
    ((struct fixture *)*state)->kind = SERVER_MEMCACHED;
    return servers_up(state);
}

static int redis_up(void **state)
{
    ((struct fixture *)*state)->kind = SERVER_REDIS;
    return servers_up(state);
}

static int cluster_up(void **state)
{
    ((struct fixture *)*state)->kind = SERVER_REDIS_CLUSTER;
    return servers_up(state);
}

static int servers_down(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < NODES; i++)
        server_stop(&f->mc[i]);
    return 0;
}

static void node_start(struct node *n, const struct fixture *f)
{
    char err[256];
    n->base = event_base_new();
    assert_non_null(n->base);
    n->worker_store = store_open(f->url, err, sizeof(err));
    assert_non_null(n->worker_store);
    n->loop_store = store_clone(n->worker_store);
    assert_non_null(n->loop_store);
    n->w = worker_start("test-store", n->worker_store, n->base, 64);
    assert_non_null(n->w);
    struct commit_config cfg = {.flush_ms = 1, .deadline_ms = 3000, .max_batch_answers = 16384,
                                .max_waiting = 65536, .ttl_s = 3600};
    n->c = committer_create(n->base, n->w, NULL, n->loop_store, &f->ef, &cfg);
    assert_non_null(n->c);
}

/* Turns the loop until the committer has nothing open, out or carried. */
static void node_settle(struct node *n)
{
    uint64_t until = util_mono_ms() + 15000;
    while (!committer_idle(n->c) && util_mono_ms() < until)
        assert_true(event_base_loop(n->base, EVLOOP_ONCE) >= 0);
    assert_true(committer_idle(n->c));
}

static void node_stop(struct node *n)
{
    committer_stop(n->c);
    worker_stop(n->w);
    committer_free(n->c);
    store_close(n->loop_store);
    event_base_free(n->base);
}

static void answer_ids(const struct eventfile *ef, int i, uint32_t ids[KEYS_PER_ANSWER])
{
    const struct event_question *q = &ef->questions[0];
    struct answer_counters a = {.question = q->id,
                                .option = (uint32_t)i % q->n_options,
                                .age_bucket = 1,
                                .country = country_lookup("gb", 2)};
    a.outcome = a.option == q->correct ? KEY_RIGHT : KEY_WRONG;
    keys_counters_for_answer(ef, 0, &a, ids);
}

static void submit(struct node *n, const struct eventfile *ef, int i, const char *user,
                   struct replies *rp)
{
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(ef, i, ids);
    struct commit_user u = {.user = user, .question = 1, .right = i % 3 == 2, .ms = 100};
    assert_int_equal(committer_submit(n->c, ids, &u, on_done, rp), COMMIT_ACCEPTED);
}

/* Every increment of the event (all counters and shards), the maximum
 * across replicas as the aggregator reads it. */
static uint64_t store_total(const struct fixture *f)
{
    char err[256];
    struct store *s = store_open(f->url, err, sizeof(err));
    assert_non_null(s);
    uint64_t sum = 0;
    uint32_t n = keys_counter_count(&f->ef);
    for (uint32_t id = 0; id < n; id++) {
        for (uint32_t sh = 1; sh <= keys_counter_shards(&f->ef, id); sh++) {
            char key[KEY_MAX];
            size_t len = keys_counter_key(&f->ef, id, sh, key);
            const char *kp = key;
            uint64_t v = 0;
            assert_int_equal(store_mget_u64(s, &kp, &len, 1, &v, NULL), STORE_OK);
            sum += v;
        }
    }
    store_close(s);
    return sum;
}

/* The worker's handle never connected: every batch went from the loop. */
static uint64_t worker_connects(struct node *n)
{
    struct store_stats st;
    worker_store_stats(n->w, &st);
    return st.connects;
}

static void test_users_from_the_loop_two_nodes(void **state)
{
    struct fixture *f = *state;
    struct node a, b;
    node_start(&a, f);
    node_start(&b, f);
    struct replies ra = {0}, rb = {0};
    char user[32];
    const int fans = 3000;
    for (int i = 0; i < fans; i++) {
        snprintf(user, sizeof(user), "fan-%d", i);
        submit(&a, &f->ef, i, user, &ra);
        if (i % 1000 == 999)
            node_settle(&a);
    }
    node_settle(&a);
    /* the same fans again, through the other node: all duplicates */
    for (int i = 0; i < fans; i += 10) {
        snprintf(user, sizeof(user), "fan-%d", i);
        submit(&b, &f->ef, i, user, &rb);
    }
    /* and twice in one batch: the first counts */
    submit(&b, &f->ef, 0, "fan-new", &rb);
    submit(&b, &f->ef, 1, "fan-new", &rb);
    node_settle(&b);
    assert_int_equal(ra.ok, fans);
    assert_int_equal(ra.unavailable + ra.duplicate, 0);
    assert_int_equal(rb.ok, 1);
    assert_int_equal(rb.duplicate, fans / 10 + 1);
    assert_int_equal(rb.unavailable, 0);
    assert_int_equal(store_total(f), (uint64_t)(fans + 1) * KEYS_PER_ANSWER);
    assert_int_equal(worker_connects(&a), 0);
    assert_int_equal(worker_connects(&b), 0);
    node_stop(&a);
    node_stop(&b);
}

/* Answers submitted in rounds; after `turns` loop turns of the first round
 * (its markers or its increments on the wire) the victim is killed -9, or
 * stopped (a replica that lags) and resumed after the rounds. */
static void node_fails_mid_batch(struct fixture *f, int turns, bool pause)
{
    struct node a;
    node_start(&a, f);
    struct replies rp = {0};
    char user[32];
    const int per_round = 800, rounds = 4;
    int i = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < per_round; k++, i++) {
            snprintf(user, sizeof(user), "u%d", i);
            submit(&a, &f->ef, i, user, &rp);
        }
        if (r == 0) {
            struct timespec ts = {0, 2 * 1000000L};
            nanosleep(&ts, NULL);
            for (int t = 0; t < turns; t++)
                assert_true(event_base_loop(a.base, EVLOOP_ONCE | EVLOOP_NONBLOCK) >= 0);
            if (pause)
                assert_true(server_pause(&f->mc[1]));
            else
                server_kill(&f->mc[1]);
        }
        node_settle(&a);
    }
    if (pause)
        assert_true(server_resume(&f->mc[1]));
    node_settle(&a);
    struct store_stats st;
    store_get_stats(a.loop_store, &st);
    print_message("%s after %d turns: 202=%d 503=%d 409=%d; loop handle: node_failures=%llu "
                  "error_items=%llu hints_queued=%llu; worker handle connects=%llu\n",
                  pause ? "stopped" : "killed", turns, rp.ok, rp.unavailable, rp.duplicate,
                  (unsigned long long)st.node_failures, (unsigned long long)st.error_items,
                  (unsigned long long)st.hints_queued, (unsigned long long)worker_connects(&a));
    assert_true(st.node_failures >= 1); /* the loop's handle met the failure */
    assert_true(st.hints_queued > 0);
    assert_int_equal(rp.ok + rp.unavailable + rp.duplicate, per_round * rounds);
    assert_int_equal(rp.duplicate, 0); /* every user answered once */
    /* one replica of every key stayed up: (nearly) nothing was refused, and
     * what was is not counted at all */
    assert_true(rp.unavailable * 10 < per_round * rounds);
    assert_int_equal(store_total(f), (uint64_t)rp.ok * KEYS_PER_ANSWER);
    node_stop(&a);
}

static void test_node_killed_while_markers_go(void **state)
{
    node_fails_mid_batch(*state, 1, false);
}

static void test_node_killed_while_increments_go(void **state)
{
    node_fails_mid_batch(*state, 3, false);
}

static void test_replica_stopped_mid_batch(void **state)
{
    node_fails_mid_batch(*state, 1, true);
}

#define BOTH(name, fn)                                                                 \
    {name " (memcached)", fn, memcached_up, servers_down, NULL},                               \
    {                                                                                          \
        name " (redis)", fn, redis_up, servers_down, NULL                                      \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH("users from the loop, two nodes", test_users_from_the_loop_two_nodes),
        {"users from the loop, two nodes (redis-cluster)", test_users_from_the_loop_two_nodes,
         cluster_up, servers_down, NULL},
        BOTH("node killed while markers go", test_node_killed_while_markers_go),
        BOTH("node killed while increments go", test_node_killed_while_increments_go),
        BOTH("replica stopped mid-batch", test_replica_stopped_mid_batch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
