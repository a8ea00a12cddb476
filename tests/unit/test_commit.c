/*
 * Group commit on a real worker thread: every answer answered once, counts
 * exact in the store, coalescing, overload, drain, and the failure rules of
 * DESIGN.md guarantee 7 (dropped when nothing landed, carried until it lands
 * when part did).
 *
 * Most tests run on memory:. The failure tests wrap it in a scripted store
 * (store_impl.h's vtable) that can hold the worker inside a call, fail
 * chosen keys, or fail whole calls; one test uses a memcached:// pool on a
 * closed port, the failure a deployment really meets.
 *
 * Answers with a user: one per user and question (duplicates in one batch
 * and across batches), the totals the store returns, and the marker rules:
 * rolled back when nothing of the batch landed, kept when part did, no
 * count when the marker itself could not be added.
 */
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
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "commit.h"
#include "country.h"
#include "eventfile.h"
#include "fans.h"
#include "keys.h"
#include "store.h"
#include "store_impl.h"
#include "util.h"
#include "worker.h"

/* ---- a scripted store around memory: ---- */

struct fake {
    struct store base; /* first: the vtable dispatch casts */
    struct store *inner;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* guarded by lock; set by the test thread, read by the worker */
    bool gate_closed;        /* incr_batch waits while set */
    bool gate_entered;       /* an incr_batch is waiting at the gate */
    int fail_calls;          /* fail every item of the next N calls */
    char down[32];           /* fail items whose key contains this ("" = none) */
    enum store_status fail_status;
    bool apply_failed;       /* a failed item still lands (its reply was lost) */
    int calls;
    int add_fail_calls;      /* the next N adds fail with add_status, not applied */
    enum store_status add_status;
    enum store_status del_status; /* != STORE_OK: every delete fails so, not applied */
    int adds, dels;
};

static enum store_status fake_incr(struct store *s, struct store_incr *items, size_t n,
                                   uint32_t ttl_s)
{
    struct fake *f = (struct fake *)s;
    pthread_mutex_lock(&f->lock);
    f->calls++;
    if (f->gate_closed) {
        f->gate_entered = true;
        pthread_cond_broadcast(&f->cond);
        while (f->gate_closed)
            pthread_cond_wait(&f->cond, &f->lock);
    }
    bool fail_all = f->fail_calls > 0;
    if (fail_all)
        f->fail_calls--;
    char down[sizeof(f->down)];
    memcpy(down, f->down, sizeof(down));
    enum store_status fail_status = f->fail_status;
    bool apply = f->apply_failed;
    pthread_mutex_unlock(&f->lock);

    enum store_status ret = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        bool fail = fail_all ||
                    (down[0] && memmem(items[i].key, items[i].keylen, down, strlen(down)));
        if (!fail || apply)
            store_incr_batch(f->inner, &items[i], 1, ttl_s);
        if (fail)
            items[i].status = fail_status;
        if (items[i].status != STORE_OK && ret == STORE_OK)
            ret = items[i].status;
    }
    return ret;
}

static struct store *fake_clone(struct store *s)
{
    (void)s;
    return NULL; /* the worker never clones */
}

static void fake_close(struct store *s)
{
    struct fake *f = (struct fake *)s;
    store_close(f->inner);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static enum store_status fake_mget(struct store *s, const char *const *keys,
                                   const size_t *keylens, size_t n, uint64_t *values,
                                   bool *present)
{
    return store_mget_u64(((struct fake *)s)->inner, keys, keylens, n, values, present);
}

static enum store_status fake_get(struct store *s, const char *key, size_t keylen, char **val,
                                  size_t *vallen)
{
    return store_get(((struct fake *)s)->inner, key, keylen, val, vallen);
}

static enum store_status fake_set(struct store *s, const char *key, size_t keylen,
                                  const char *val, size_t vallen, uint32_t ttl_s)
{
    return store_set(((struct fake *)s)->inner, key, keylen, val, vallen, ttl_s);
}

static enum store_status fake_add(struct store *s, const char *key, size_t keylen,
                                  const char *val, size_t vallen, uint32_t ttl_s)
{
    struct fake *f = (struct fake *)s;
    pthread_mutex_lock(&f->lock);
    f->adds++;
    enum store_status fail = STORE_OK;
    if (f->add_fail_calls > 0) {
        f->add_fail_calls--;
        fail = f->add_status;
    }
    pthread_mutex_unlock(&f->lock);
    if (fail != STORE_OK)
        return fail;
    return store_add(f->inner, key, keylen, val, vallen, ttl_s);
}

static enum store_status fake_del(struct store *s, const char *key, size_t keylen)
{
    struct fake *f = (struct fake *)s;
    pthread_mutex_lock(&f->lock);
    f->dels++;
    enum store_status fail = f->del_status;
    pthread_mutex_unlock(&f->lock);
    if (fail != STORE_OK)
        return fail;
    return store_delete(f->inner, key, keylen);
}

static const struct store_ops FAKE_OPS = {
    .kind = "fake",
    .clone = fake_clone,
    .close = fake_close,
    .incr_batch = fake_incr,
    .mget_u64 = fake_mget,
    .get = fake_get,
    .set = fake_set,
    .add = fake_add,
    .del = fake_del,
};

static struct fake *fake_new(struct store *inner)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base.ops = &FAKE_OPS;
    f->inner = inner;
    f->fail_status = STORE_UNAVAILABLE;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    return f;
}

/* ---- fixture ---- */

#define MAX_ANSWERS 2000

/* Question 1 (index 0): three options, correct 2; question 7 (index 1): two
 * options, correct 0. Few shards, so every shard key can be read back. */
static const char EVENT_JSON[] =
    "{\"event\": \"tc\", \"shards\": 3, \"country_shards\": 2,"
    " \"hot_countries\": {\"gb\": 4, \"unknown\": 4},"
    " \"age_buckets\": [{\"label\": \"a\", \"max\": 17}, {\"label\": \"b\", \"max\": 40},"
    "                   {\"label\": \"c\", \"max\": 130}],"
    " \"questions\": ["
    "  {\"id\": 1, \"text\": \"a\", \"options\": [\"p\", \"q\", \"r\"], \"correct\": 2},"
    "  {\"id\": 7, \"text\": \"b\", \"options\": [\"x\", \"y\"], \"correct\": 0}"
    " ]}";

struct fx;

struct waiter {
    struct fx *fx;
    int calls;
    enum commit_result result;
};

struct fx {
    struct eventfile ef;
    uint32_t ncounters;
    uint64_t *expected; /* per counter id: what acknowledged answers added */
    struct event_base *base;
    struct worker *worker;
    struct committer *c;
    struct store *reader; /* a clone of the inner memory store, for this thread */
    struct fake *fake;    /* (ref) owned by the worker; NULL when not used */
    struct waiter w[MAX_ANSWERS];
    int dones;
    int want_dones;
    int drained_calls;
    int dones_when_drained;
    int chain_left; /* answers still to submit from done callbacks */
    int chain_next;
    /* on_user_totals calls, in order */
    int n_totals;
    char tot_user[16][FANS_USER_MAX + 1];
    uint64_t tot_right[16], tot_ms[16];
};

static struct commit_config default_cfg(void)
{
    return (struct commit_config){.flush_ms = 2, .deadline_ms = 2000, .max_batch_answers = 16384,
                                  .max_waiting = 65536, .ttl_s = 3600};
}

/* store: NULL for memory:; with_fake wraps memory: in the scripted store;
 * inline_mode gives the committer the loop's own memory: handle, as ingest
 * does for an in-process store, so batches do not go through the worker. */
static void fx_start_ex(struct fx *fx, const struct commit_config *cfg, struct store *store,
                        bool with_fake, size_t max_jobs, bool inline_mode)
{
    memset(fx, 0, sizeof(*fx));
    char err[256] = "";
    if (!eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), &fx->ef, err, sizeof(err)))
        fail_msg("event: %s", err);
    fx->ncounters = keys_counter_count(&fx->ef);
    fx->expected = calloc(fx->ncounters, sizeof(*fx->expected));
    assert_non_null(fx->expected);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    if (store == NULL) {
        store = store_open("memory:", err, sizeof(err));
        assert_non_null(store);
        fx->reader = store_clone(store);
        assert_non_null(fx->reader);
        if (with_fake) {
            fx->fake = fake_new(store);
            store = &fx->fake->base;
        }
    }
    fx->worker = worker_start("commit-test", store, fx->base, max_jobs);
    assert_non_null(fx->worker);
    fx->c = committer_create(fx->base, fx->worker, inline_mode ? fx->reader : NULL, NULL, &fx->ef,
                             cfg);
    assert_non_null(fx->c);
}

static void fx_start(struct fx *fx, const struct commit_config *cfg, struct store *store,
                     bool with_fake, size_t max_jobs)
{
    fx_start_ex(fx, cfg, store, with_fake, max_jobs, false);
}

static void fx_stop(struct fx *fx)
{
    worker_stop(fx->worker);
    committer_free(fx->c);
    store_close(fx->reader);
    event_base_free(fx->base);
    free(fx->expected);
    eventfile_free(&fx->ef);
}

/* Answer i, spread over both questions, every option, the three age
 * buckets and four countries (two hot, one cold, unknown). Answer 4 is
 * question 1 from "ie". */
static void answer_ids(const struct fx *fx, int i, uint32_t ids[KEYS_PER_ANSWER])
{
    static const char *const countries[] = {"gb", "us", "ie", "unknown"};
    uint32_t qi = (uint32_t)i % 2;
    const struct event_question *q = &fx->ef.questions[qi];
    const char *cc = countries[(i / 2) % 4];
    struct answer_counters a = {
        .question = q->id,
        .option = (uint32_t)i % q->n_options,
        .age_bucket = (uint32_t)i % 3,
        .country = country_lookup(cc, strlen(cc)),
    };
    a.outcome = a.option == q->correct ? KEY_RIGHT : KEY_WRONG;
    keys_counters_for_answer(&fx->ef, qi, &a, ids);
    for (int k = 0; k < KEYS_PER_ANSWER; k++)
        assert_true(ids[k] < fx->ncounters);
}

/* Records that answer i must be in the store exactly once. */
static void expect_answer(struct fx *fx, int i)
{
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, i, ids);
    for (int k = 0; k < KEYS_PER_ANSWER; k++)
        fx->expected[ids[k]]++;
}

static void expect_range(struct fx *fx, int from, int to)
{
    for (int i = from; i < to; i++)
        expect_answer(fx, i);
}

static void on_done(void *arg, enum commit_result r)
{
    struct waiter *w = arg;
    w->calls++;
    w->result = r;
    w->fx->dones++;
}

static enum commit_refusal submit(struct fx *fx, int i)
{
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, i, ids);
    fx->w[i].fx = fx;
    return committer_submit(fx->c, ids, NULL, on_done, &fx->w[i]);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until pred(fx) or the timeout; a short tick keeps
 * EVLOOP_ONCE from blocking past the deadline. */
static bool run_until(struct fx *fx, bool (*pred)(struct fx *), uint64_t timeout_ms)
{
    struct event *t = event_new(fx->base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 5000};
    assert_non_null(t);
    event_add(t, &tv);
    uint64_t deadline = util_mono_ms() + timeout_ms;
    while (!pred(fx) && util_mono_ms() < deadline)
        event_base_loop(fx->base, EVLOOP_ONCE);
    event_free(t);
    return pred(fx);
}

/* Runs the loop for ms milliseconds (the worker's notify event keeps it
 * from ever running out of events). */
static void run_for(struct fx *fx, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(fx->base, &tv);
    event_base_dispatch(fx->base);
}

static bool dones_reached(struct fx *fx)
{
    return fx->dones >= fx->want_dones;
}

static bool until_dones(struct fx *fx, int n)
{
    fx->want_dones = n;
    return run_until(fx, dones_reached, 20000);
}

static bool is_idle(struct fx *fx)
{
    return committer_idle(fx->c);
}

static bool gate_entered(struct fx *fx)
{
    pthread_mutex_lock(&fx->fake->lock);
    bool in = fx->fake->gate_entered;
    pthread_mutex_unlock(&fx->fake->lock);
    return in;
}

static void fake_set_gate(struct fake *f, bool closed)
{
    pthread_mutex_lock(&f->lock);
    f->gate_closed = closed;
    if (!closed)
        f->gate_entered = false;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static void fake_set_down(struct fake *f, const char *match, enum store_status st, bool apply)
{
    pthread_mutex_lock(&f->lock);
    snprintf(f->down, sizeof(f->down), "%s", match);
    f->fail_status = st;
    f->apply_failed = apply;
    pthread_mutex_unlock(&f->lock);
}

static void fake_fail_calls(struct fake *f, int calls, enum store_status st)
{
    pthread_mutex_lock(&f->lock);
    f->fail_calls = calls;
    f->fail_status = st;
    pthread_mutex_unlock(&f->lock);
}

/* Every shard key of every counter, and the value of each. */
struct readback {
    size_t n;
    char (*keys)[KEY_MAX];
    const char **keyp;
    size_t *lens;
    uint32_t *id;
    uint64_t *values;
    bool *present;
};

static void read_all(struct fx *fx, struct readback *rb)
{
    size_t cap = 0;
    for (uint32_t id = 0; id < fx->ncounters; id++)
        cap += keys_counter_shards(&fx->ef, id);
    memset(rb, 0, sizeof(*rb));
    rb->keys = calloc(cap, sizeof(*rb->keys));
    rb->keyp = calloc(cap, sizeof(*rb->keyp));
    rb->lens = calloc(cap, sizeof(*rb->lens));
    rb->id = calloc(cap, sizeof(*rb->id));
    rb->values = calloc(cap, sizeof(*rb->values));
    rb->present = calloc(cap, sizeof(*rb->present));
    assert_true(rb->keys && rb->keyp && rb->lens && rb->id && rb->values && rb->present);
    for (uint32_t id = 0; id < fx->ncounters; id++) {
        for (uint32_t s = 1; s <= keys_counter_shards(&fx->ef, id); s++) {
            size_t i = rb->n++;
            rb->lens[i] = keys_counter_key(&fx->ef, id, s, rb->keys[i]);
            rb->keyp[i] = rb->keys[i];
            rb->id[i] = id;
        }
    }
    assert_int_equal(store_mget_u64(fx->reader, rb->keyp, rb->lens, rb->n, rb->values,
                                     rb->present),
                     STORE_OK);
}

static void readback_free(struct readback *rb)
{
    free(rb->keys);
    free(rb->keyp);
    free(rb->lens);
    free(rb->id);
    free(rb->values);
    free(rb->present);
}

/* The store holds exactly what fx->expected says, summed over shards. */
static void check_store(struct fx *fx)
{
    struct readback rb;
    read_all(fx, &rb);
    uint64_t *sum = calloc(fx->ncounters, sizeof(*sum));
    assert_non_null(sum);
    for (size_t i = 0; i < rb.n; i++)
        sum[rb.id[i]] += rb.values[i];
    for (uint32_t id = 0; id < fx->ncounters; id++) {
        if (sum[id] != fx->expected[id]) {
            char key[KEY_MAX];
            keys_counter_key(&fx->ef, id, 1, key);
            fail_msg("counter %u (%s...): store %llu, expected %llu", id, key,
                     (unsigned long long)sum[id], (unsigned long long)fx->expected[id]);
        }
    }
    free(sum);
    readback_free(&rb);
}

/* How many shards of counter id hold something. */
static uint32_t shards_used(struct fx *fx, uint32_t id)
{
    struct readback rb;
    read_all(fx, &rb);
    uint32_t used = 0;
    for (size_t i = 0; i < rb.n; i++)
        used += rb.id[i] == id && rb.present[i];
    readback_free(&rb);
    return used;
}

static uint32_t distinct_expected(const struct fx *fx)
{
    uint32_t n = 0;
    for (uint32_t id = 0; id < fx->ncounters; id++)
        n += fx->expected[id] != 0;
    return n;
}

static bool store_empty(struct fx *fx)
{
    struct readback rb;
    read_all(fx, &rb);
    bool empty = true;
    for (size_t i = 0; i < rb.n; i++)
        empty = empty && !rb.present[i];
    readback_free(&rb);
    return empty;
}

/* ---- tests ---- */

/* A burst in one loop turn: every answer is answered once, OK, after its
 * increments are in the store; they share one store round trip and each
 * counter is written once (coalescing). */
static void test_burst_one_batch(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, false, 4);

    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    /* Never answered from inside submit. */
    assert_int_equal(fx->dones, 0);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.waiting, N);
    assert_int_equal(st.open_answers, N);
    assert_false(committer_idle(fx->c));

    assert_true(until_dones(fx, N));
    for (int i = 0; i < N; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    }
    expect_range(fx, 0, N);
    check_store(fx);

    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.batch_keys, distinct_expected(fx));
    assert_true(st.batch_keys < 4 * N / 10);
    assert_int_equal(st.increments, 4 * N);
    assert_int_equal(st.acked, N);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.store_retries, 0);
    assert_int_equal(st.carried_keys, 0);
    assert_int_equal(st.uncertain, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.carry, 0);
    assert_int_equal(st.open_answers, 0);
    assert_true(committer_idle(fx->c));

    /* Nothing more happens afterwards: no second answer to anyone. */
    run_for(fx, 20);
    assert_int_equal(fx->dones, N);
    fx_stop(fx);
    free(fx);
}

/* no_coalesce: every answer's increments are written as they came, each on
 * its own shard draw; the counts are as exact. */
static void test_no_coalescing(void **state)
{
    (void)state;
    enum { N = 200 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.no_coalesce = true;
    fx_start(fx, &cfg, NULL, false, 4);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_int_equal(fx->dones, 0);
    assert_true(until_dones(fx, N));
    for (int i = 0; i < N; i++)
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    expect_range(fx, 0, N);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batch_keys, 4 * N);
    assert_int_equal(st.acked, N);
    /* Answer 0's question counter got N/6 separate writes over 3 shards. */
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, 0, ids);
    assert_int_equal(shards_used(fx, ids[0]), 3);
    fx_stop(fx);
    free(fx);
}

/* flush_ms 0: the batch goes on the loop's next turn, still coalescing
 * what arrived in this one. */
static void test_flush_zero_next_turn(void **state)
{
    (void)state;
    enum { N = 100 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.flush_ms = 0;
    fx_start(fx, &cfg, NULL, false, 4);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_int_equal(fx->dones, 0);
    assert_true(until_dones(fx, N));
    expect_range(fx, 0, N);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.batch_keys, distinct_expected(fx));
    fx_stop(fx);
    free(fx);
}

/* Answers arriving while a batch is out wait for it, then go together. */
static void test_answers_during_flight_share_next_batch(void **state)
{
    (void)state;
    enum { LATE = 300 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, true, 4);

    fake_set_gate(fx->fake, true);
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_true(run_until(fx, gate_entered, 10000));
    for (int i = 1; i <= LATE; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.waiting, LATE + 1);
    assert_int_equal(st.open_answers, LATE);
    assert_int_equal(st.batches, 0);
    run_for(fx, 30); /* more than flush_ms: still one batch at a time */
    assert_int_equal(fx->dones, 0);

    fake_set_gate(fx->fake, false);
    assert_true(until_dones(fx, LATE + 1));
    for (int i = 0; i <= LATE; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    }
    expect_range(fx, 0, LATE + 1);
    check_store(fx);
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.acked, LATE + 1);
    assert_true(committer_idle(fx->c));
    fx_stop(fx);
    free(fx);
}

static void chain_done(void *arg, enum commit_result r)
{
    on_done(arg, r);
    struct fx *fx = ((struct waiter *)arg)->fx;
    if (fx->chain_left > 0) {
        fx->chain_left--;
        int i = fx->chain_next++;
        uint32_t ids[KEYS_PER_ANSWER];
        answer_ids(fx, i, ids);
        fx->w[i].fx = fx;
        assert_int_equal(committer_submit(fx->c, ids, NULL, chain_done, &fx->w[i]), COMMIT_ACCEPTED);
    }
}

/* A done callback may submit the next answer: each one gets its own round
 * trip, nothing stalls, and the separate writes of one counter spread over
 * its shards. */
static void test_submit_from_done_callback(void **state)
{
    (void)state;
    enum { CHAIN = 30 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, false, 4);
    fx->chain_left = CHAIN - 1;
    fx->chain_next = 1;
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, 0, ids);
    fx->w[0].fx = fx;
    assert_int_equal(committer_submit(fx->c, ids, NULL, chain_done, &fx->w[0]), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, CHAIN));
    for (int i = 0; i < CHAIN; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    }
    expect_range(fx, 0, CHAIN);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, CHAIN);
    assert_true(run_until(fx, is_idle, 5000));
    /* 15 writes of question 1's counter over 3 shards: all on one shard
     * would mean the shard is not drawn per write (odds 3^-14). */
    assert_true(shards_used(fx, ids[0]) >= 2);
    fx_stop(fx);
    free(fx);
}

/* max_waiting bounds the answers waiting; the refused one counts nowhere
 * and is never answered through the callback. */
static void test_overloaded_max_waiting(void **state)
{
    (void)state;
    enum { MAX = 5 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.max_waiting = MAX;
    fx_start(fx, &cfg, NULL, false, 4);

    for (int i = 0; i < MAX; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_int_equal(submit(fx, MAX), COMMIT_OVERLOADED);
    assert_int_equal(submit(fx, MAX + 1), COMMIT_OVERLOADED);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.waiting, MAX);
    assert_int_equal(st.increments, 4 * MAX);

    assert_true(until_dones(fx, MAX));
    assert_true(run_until(fx, is_idle, 5000));
    assert_int_equal(fx->w[MAX].calls, 0);
    assert_int_equal(fx->w[MAX + 1].calls, 0);
    expect_range(fx, 0, MAX);
    check_store(fx);

    /* Room again once they are answered. */
    assert_int_equal(submit(fx, MAX + 2), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, MAX + 1));
    assert_int_equal(fx->w[MAX + 2].result, COMMIT_OK);
    expect_answer(fx, MAX + 2);
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* max_batch_answers bounds the batch being filled; a full batch goes at
 * once instead of waiting for flush_ms. */
static void test_overloaded_batch_answers(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.max_batch_answers = 2;
    cfg.flush_ms = 1000;
    fx_start(fx, &cfg, NULL, false, 4);

    uint64_t start = util_mono_ms();
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_int_equal(submit(fx, 1), COMMIT_ACCEPTED);
    assert_int_equal(submit(fx, 2), COMMIT_OVERLOADED);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.open_answers, 2);
    assert_int_equal(st.waiting, 2);

    assert_true(until_dones(fx, 2));
    assert_true(util_mono_ms() - start < 900);
    assert_int_equal(fx->w[2].calls, 0);
    expect_range(fx, 0, 2);
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* A max_batch_answers of 0 is taken as 1. */
static void test_zero_batch_answers_means_one(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.max_batch_answers = 0;
    cfg.flush_ms = 50;
    fx_start(fx, &cfg, NULL, false, 4);
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_int_equal(submit(fx, 1), COMMIT_OVERLOADED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[0].result, COMMIT_OK);
    fx_stop(fx);
    free(fx);
}

static void on_drained(void *arg)
{
    struct fx *fx = arg;
    fx->drained_calls++;
    fx->dones_when_drained = fx->dones;
}

static bool drained(struct fx *fx)
{
    return fx->drained_calls > 0;
}

/* Drain: new answers are refused, everything accepted is confirmed, then
 * drained is called once. */
static void test_drain(void **state)
{
    (void)state;
    enum { N = 500 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.flush_ms = 1000; /* drain must not wait for the flush timer */
    fx_start(fx, &cfg, NULL, false, 4);

    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    uint64_t start = util_mono_ms();
    committer_drain(fx->c, on_drained, fx);
    assert_int_equal(fx->drained_calls, 0);
    assert_int_equal(submit(fx, N), COMMIT_DRAINING);

    assert_true(run_until(fx, drained, 20000));
    assert_true(util_mono_ms() - start < 900);
    assert_int_equal(fx->dones_when_drained, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    }
    assert_int_equal(fx->w[N].calls, 0);
    expect_range(fx, 0, N);
    check_store(fx);
    assert_true(committer_idle(fx->c));
    assert_int_equal(submit(fx, N + 1), COMMIT_DRAINING);

    /* drained is not called again. */
    run_for(fx, 20);
    assert_int_equal(fx->drained_calls, 1);
    fx_stop(fx);
    free(fx);
}

/* --batch-interval-us: after a batch the next one waits out the interval
 * (here a minute, so only what the test does can end the wait), while the
 * first answer after a quiet spell, a full batch and a drain never wait. */
static void test_batch_interval(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.flush_ms = 0;
    cfg.batch_interval_us = 60u * 1000u * 1000u;
    cfg.max_batch_answers = 3;
    fx_start(fx, &cfg, NULL, false, 4);
    struct commit_stats st;

    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1)); /* nothing went before: at once */

    assert_int_equal(submit(fx, 1), COMMIT_ACCEPTED);
    run_for(fx, 50);
    assert_int_equal(fx->dones, 1); /* held by the interval */
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.open_answers, 1);

    /* the batch fills up: it goes without waiting */
    assert_int_equal(submit(fx, 2), COMMIT_ACCEPTED);
    assert_int_equal(submit(fx, 3), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 4));
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 2);

    /* and a drain does not wait either */
    assert_int_equal(submit(fx, 4), COMMIT_ACCEPTED);
    run_for(fx, 50);
    assert_int_equal(fx->dones, 4);
    committer_drain(fx->c, on_drained, fx);
    assert_true(run_until(fx, drained, 20000));
    assert_int_equal(fx->dones, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    expect_range(fx, 0, 5);
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* Draining an idle committer reports drained at once. */
static void test_drain_idle(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, false, 4);
    assert_true(committer_idle(fx->c));
    committer_drain(fx->c, on_drained, fx);
    assert_int_equal(fx->drained_calls, 1);
    assert_int_equal(submit(fx, 0), COMMIT_DRAINING);
    fx_stop(fx);
    free(fx);
}

/* Drain while a batch is in flight and more wait behind it. */
static void test_drain_with_batch_in_flight(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, true, 4);
    fake_set_gate(fx->fake, true);
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_true(run_until(fx, gate_entered, 10000));
    for (int i = 1; i < 50; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    committer_drain(fx->c, on_drained, fx);
    assert_int_equal(submit(fx, 50), COMMIT_DRAINING);
    fake_set_gate(fx->fake, false);
    assert_true(run_until(fx, drained, 20000));
    assert_int_equal(fx->dones_when_drained, 50);
    assert_int_equal(fx->drained_calls, 1);
    expect_range(fx, 0, 50);
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* An outage shorter than the deadline is retried inside the batch: the
 * client sees OK and every count is exact. */
static void test_transient_unavailable_retried(void **state)
{
    (void)state;
    enum { N = 20 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, true, 4);
    fake_fail_calls(fx->fake, 2, STORE_UNAVAILABLE);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, N));
    for (int i = 0; i < N; i++)
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    expect_range(fx, 0, N);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.store_retries, 2);
    assert_int_equal(st.acked, N);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.uncertain, 0);
    fx_stop(fx);
    free(fx);
}

/* Nothing landed (every item unavailable): 503 to everyone after the
 * deadline, nothing counted, nothing carried; the clients' retries are
 * then exact. */
static void test_nothing_landed_dropped(void **state)
{
    (void)state;
    enum { N = 10 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 60;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_fail_calls(fx->fake, 1000000, STORE_UNAVAILABLE);
    uint64_t start = util_mono_ms();
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, N));
    assert_true(util_mono_ms() - start >= cfg.deadline_ms);
    for (int i = 0; i < N; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_UNAVAILABLE);
    }
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.failed, N);
    assert_int_equal(st.acked, 0);
    assert_int_equal(st.carry, 0);
    assert_int_equal(st.carried_keys, 0);
    assert_int_equal(st.uncertain, 0);
    assert_true(st.store_retries > 0);
    assert_true(committer_idle(fx->c));
    assert_true(store_empty(fx));

    /* The store returns; the clients' retries count once each. */
    fake_fail_calls(fx->fake, 0, STORE_UNAVAILABLE);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 2 * N));
    for (int i = 0; i < N; i++)
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    expect_range(fx, 0, N);
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* Part of an answer landed: the client gets COMMIT_UNCONFIRMED (503
 * unconfirmed: it may be counted, not "nothing sent"), and the rest is carried
 * and retried until it lands, so the breakdowns sum to the total. An
 * answer whose own counters land meanwhile is OK although the carry riding
 * along still fails. Drain waits for the carry. */
static void test_partial_failure_carried_until_it_lands(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    /* Answer 4 is question 1 from "ie": its country counter's node is down. */
    fake_set_down(fx->fake, ":q1cie", STORE_UNAVAILABLE, false);

    assert_int_equal(submit(fx, 4), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[4].result, COMMIT_UNCONFIRMED);
    struct commit_stats cst;
    committer_get_stats(fx->c, &cst);
    assert_int_equal(cst.failed, 1);
    assert_int_equal(cst.maybe_counted, 1);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.carried_keys, 1);
    assert_int_equal(st.uncertain, 0);
    assert_false(committer_idle(fx->c));
    /* Three of its counters are in, the fourth is not yet. */
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, 4, ids);
    for (int k = 0; k < KEYS_PER_ANSWER; k++)
        if (k != 2)
            fx->expected[ids[k]]++;
    check_store(fx);

    /* Answer 0 (question 1 from "gb") avoids the down node. */
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 2));
    assert_int_equal(fx->w[0].result, COMMIT_OK);
    expect_answer(fx, 0);
    check_store(fx);
    assert_false(committer_idle(fx->c));

    committer_drain(fx->c, on_drained, fx);
    run_for(fx, 100);
    assert_int_equal(fx->drained_calls, 0);

    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    assert_true(run_until(fx, drained, 10000));
    assert_true(committer_idle(fx->c));
    fx->expected[ids[2]]++;
    check_store(fx);
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.carry, 0);
    assert_int_equal(st.acked, 1);
    assert_int_equal(st.failed, 1);
    assert_int_equal(fx->w[4].calls, 1);
    assert_int_equal(fx->w[0].calls, 1);
    fx_stop(fx);
    free(fx);
}

/* Regression: the carry gauge counts the remainder while it sits in the
 * batch in flight (a node that stays down keeps it there). */
static void test_carry_gauge_counts_pending_remainder(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_set_down(fx->fake, ":q1cie", STORE_UNAVAILABLE, false);
    assert_int_equal(submit(fx, 4), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    run_for(fx, 100);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_false(committer_idle(fx->c));
    assert_int_equal(st.carry, 1);
    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    assert_true(run_until(fx, is_idle, 10000));
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.carry, 0);
    fx_stop(fx);
    free(fx);
}

/* A lost reply (STORE_ERROR: maybe applied) is neither resent nor carried,
 * so it can never count twice; it shows in the uncertain metric and the
 * client gets COMMIT_UNCONFIRMED (it may be counted) without waiting for
 * the deadline. */
static void test_lost_reply_never_resent(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 5000;
    fx_start(fx, &cfg, NULL, true, 4);
    /* The increments land but every reply is lost. */
    fake_set_down(fx->fake, "tc:", STORE_ERROR, true);
    uint64_t start = util_mono_ms();
    assert_int_equal(submit(fx, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_true(util_mono_ms() - start < 2000);
    assert_int_equal(fx->w[0].result, COMMIT_UNCONFIRMED);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.uncertain, 4);
    assert_int_equal(st.carry, 0);
    assert_int_equal(st.carried_keys, 0);
    assert_int_equal(st.store_retries, 0);
    assert_true(committer_idle(fx->c));

    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    run_for(fx, 50);
    expect_answer(fx, 0); /* once, not twice */
    check_store(fx);
    fx_stop(fx);
    free(fx);
}

/* A lost reply on part of an answer and an outage on another part: the
 * unavailable part is carried (something may have landed), the uncertain
 * part is not. */
static void test_lost_reply_and_outage(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_set_down(fx->fake, ":q1cie", STORE_UNAVAILABLE, false);
    assert_int_equal(submit(fx, 4), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    assert_true(run_until(fx, is_idle, 10000));
    expect_answer(fx, 4);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.carried_keys, 1);
    assert_int_equal(st.uncertain, 0);
    fx_stop(fx);
    free(fx);
}

/* A worker that refuses the batch (stopping, or a zero queue): the
 * waiters get 503 and nothing was sent. */
static void test_worker_refuses_batch(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start(fx, &cfg, NULL, false, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 3));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_UNAVAILABLE);
    }
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.batches, 0);
    assert_true(committer_idle(fx->c));
    assert_true(store_empty(fx));
    fx_stop(fx);
    free(fx);
}

/* Regression: committer_free answers the clients still in the open batch
 * (503) instead of dropping them without a reply. */
static void test_free_after_stop_answers_open_batch(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.flush_ms = 1000;
    fx_start(fx, &cfg, NULL, false, 4);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    worker_stop(fx->worker);
    committer_free(fx->c);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->w[i].calls, 1);
    store_close(fx->reader);
    event_base_free(fx->base);
    free(fx->expected);
    eventfile_free(&fx->ef);
    free(fx);
}

/* The inline path (an in-process store written from the loop): the same
 * contract, answered on a later loop turn, never inside submit. */
static void test_inline_burst(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start_ex(fx, &cfg, NULL, false, 4, true);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_int_equal(fx->dones, 0);
    assert_true(until_dones(fx, N));
    for (int i = 0; i < N; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    }
    expect_range(fx, 0, N);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.acked, N);
    assert_int_equal(st.batch_keys, distinct_expected(fx));
    assert_true(committer_idle(fx->c));
    /* The worker was never used. */
    assert_int_equal(worker_pending(fx->worker), 0);
    run_for(fx, 20);
    assert_int_equal(fx->dones, N);
    fx_stop(fx);
    free(fx);
}

static void test_inline_chain_and_drain(void **state)
{
    (void)state;
    enum { CHAIN = 30 };
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    fx_start_ex(fx, &cfg, NULL, false, 4, true);
    fx->chain_left = CHAIN - 1;
    fx->chain_next = 1;
    uint32_t ids[KEYS_PER_ANSWER];
    answer_ids(fx, 0, ids);
    fx->w[0].fx = fx;
    assert_int_equal(committer_submit(fx->c, ids, NULL, chain_done, &fx->w[0]), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, CHAIN));
    expect_range(fx, 0, CHAIN);
    check_store(fx);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, CHAIN);

    /* Drain with answers waiting: drained once, after all of them. */
    for (int i = CHAIN; i < CHAIN + 100; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    committer_drain(fx->c, on_drained, fx);
    assert_int_equal(fx->drained_calls, 0);
    assert_int_equal(fx->dones, CHAIN); /* not inside drain either */
    assert_int_equal(submit(fx, CHAIN + 100), COMMIT_DRAINING);
    assert_true(run_until(fx, drained, 10000));
    assert_int_equal(fx->dones_when_drained, CHAIN + 100);
    expect_range(fx, CHAIN, CHAIN + 100);
    check_store(fx);
    run_for(fx, 20);
    assert_int_equal(fx->drained_calls, 1);
    fx_stop(fx);
    free(fx);
}


/* ---- answers with a user ---- */

static void record_totals(void *arg, const char *user, uint64_t right, uint64_t total_ms)
{
    struct fx *fx = arg;
    assert_true(fx->n_totals < 16);
    snprintf(fx->tot_user[fx->n_totals], sizeof(fx->tot_user[0]), "%s", user);
    fx->tot_right[fx->n_totals] = right;
    fx->tot_ms[fx->n_totals++] = total_ms;
}

static struct commit_config user_cfg(struct fx *fx)
{
    struct commit_config cfg = default_cfg();
    cfg.on_user_totals = record_totals;
    cfg.totals_arg = fx;
    return cfg;
}

/* The counters of an answer to question index qi with this option, from
 * "us", age bucket 2. Question 1 (index 0) is right with option 2,
 * question 7 (index 1) with option 0. */
static void custom_ids(const struct fx *fx, uint32_t qi, uint32_t option,
                       uint32_t ids[KEYS_PER_ANSWER])
{
    const struct event_question *q = &fx->ef.questions[qi];
    struct answer_counters a = {.question = q->id, .option = option, .age_bucket = 1,
                                .country = country_lookup("us", 2)};
    a.outcome = option == q->correct ? KEY_RIGHT : KEY_WRONG;
    keys_counters_for_answer(&fx->ef, qi, &a, ids);
}

/* Waiter slot answers question index qi; user NULL: an anonymous answer. */
static enum commit_refusal submit_as(struct fx *fx, int slot, uint32_t qi, uint32_t option,
                                     const char *user, uint64_t ms)
{
    uint32_t ids[KEYS_PER_ANSWER];
    custom_ids(fx, qi, option, ids);
    const struct event_question *q = &fx->ef.questions[qi];
    struct commit_user cu = {.user = user, .question = q->id, .right = option == q->correct,
                             .ms = ms};
    fx->w[slot].fx = fx;
    return committer_submit(fx->c, ids, user ? &cu : NULL, on_done, &fx->w[slot]);
}

static void expect_as(struct fx *fx, uint32_t qi, uint32_t option)
{
    uint32_t ids[KEYS_PER_ANSWER];
    custom_ids(fx, qi, option, ids);
    for (int k = 0; k < KEYS_PER_ANSWER; k++)
        fx->expected[ids[k]]++;
}

/* The marker of user for question id, "" when absent. */
static const char *marker(struct fx *fx, const char *user, uint32_t qid)
{
    static char out[32];
    char key[KEY_USER_MAX];
    size_t klen = key_user_marker(key, fx->ef.name, user, qid);
    char *val = NULL;
    size_t vlen = 0;
    out[0] = '\0';
    enum store_status st = store_get(fx->reader, key, klen, &val, &vlen);
    if (st == STORE_OK)
        snprintf(out, sizeof(out), "%.*s", (int)vlen, val);
    else
        assert_int_equal(st, STORE_NOTFOUND);
    free(val);
    return out;
}

/* The user's :right (ms false) or :ms counter. */
static uint64_t user_counter(struct fx *fx, const char *user, bool ms)
{
    char key[KEY_USER_MAX];
    size_t klen = ms ? key_user_ms(key, fx->ef.name, user) : key_user_right(key, fx->ef.name, user);
    const char *keys[] = {key};
    uint64_t v = 0;
    assert_int_equal(store_mget_u64(fx->reader, keys, &klen, 1, &v, NULL), STORE_OK);
    return v;
}

/* Two answers of one user to one question in the same batch: the first
 * counts, the second is a duplicate and changes nothing; the user's other
 * question and another user are fine. The store's totals reach the hook. */
static void test_user_duplicates_in_one_batch(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    fx_start(fx, &cfg, NULL, false, 4);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED); /* right */
    assert_int_equal(submit_as(fx, 1, 0, 0, "u1", 200), COMMIT_ACCEPTED); /* same question */
    assert_int_equal(submit_as(fx, 2, 1, 0, "u1", 300), COMMIT_ACCEPTED); /* right */
    assert_int_equal(submit_as(fx, 3, 0, 2, "u2", 50), COMMIT_ACCEPTED);  /* right */
    assert_int_equal(submit_as(fx, 4, 0, 1, NULL, 0), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 5, 1, 1, "u2", 70), COMMIT_ACCEPTED);  /* wrong */
    assert_true(until_dones(fx, 6));
    assert_int_equal(fx->w[0].result, COMMIT_OK);
    assert_int_equal(fx->w[1].result, COMMIT_DUPLICATE);
    assert_int_equal(fx->w[2].result, COMMIT_OK);
    assert_int_equal(fx->w[3].result, COMMIT_OK);
    assert_int_equal(fx->w[4].result, COMMIT_OK);
    assert_int_equal(fx->w[5].result, COMMIT_OK);
    expect_as(fx, 0, 2);
    expect_as(fx, 1, 0);
    expect_as(fx, 0, 2);
    expect_as(fx, 0, 1);
    expect_as(fx, 1, 1);
    check_store(fx);

    assert_string_equal(marker(fx, "u1", 1), "R 100");
    assert_string_equal(marker(fx, "u1", 7), "R 300");
    assert_string_equal(marker(fx, "u2", 1), "R 50");
    assert_string_equal(marker(fx, "u2", 7), "W 70");
    assert_int_equal(user_counter(fx, "u1", false), 2);
    assert_int_equal(user_counter(fx, "u1", true), 400);
    assert_int_equal(user_counter(fx, "u2", false), 1);
    assert_int_equal(user_counter(fx, "u2", true), 50);

    /* Each right answer's own totals, in order. */
    assert_int_equal(fx->n_totals, 3);
    assert_string_equal(fx->tot_user[0], "u1");
    assert_int_equal(fx->tot_right[0], 1);
    assert_int_equal(fx->tot_ms[0], 100);
    assert_string_equal(fx->tot_user[1], "u1");
    assert_int_equal(fx->tot_right[1], 2);
    assert_int_equal(fx->tot_ms[1], 400);
    assert_string_equal(fx->tot_user[2], "u2");
    assert_int_equal(fx->tot_right[2], 1);
    assert_int_equal(fx->tot_ms[2], 50);

    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.acked, 5);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.markers_added, 4);
    fx_stop(fx);
    free(fx);
}

/* A user answers again in a later batch: 409, nothing counted. */
static void cross_batches(struct fx *fx)
{
    assert_int_equal(submit_as(fx, 0, 0, 2, "fan-7", 10), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[0].result, COMMIT_OK);
    expect_as(fx, 0, 2);
    check_store(fx);

    assert_int_equal(submit_as(fx, 1, 0, 1, "fan-7", 20), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 2, 0, 1, "fan-8", 30), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 3, 0, 0, "fan-7", 40), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 4));
    assert_int_equal(fx->w[1].result, COMMIT_DUPLICATE);
    assert_int_equal(fx->w[2].result, COMMIT_OK);
    assert_int_equal(fx->w[3].result, COMMIT_DUPLICATE);
    expect_as(fx, 0, 1);
    check_store(fx);
    assert_string_equal(marker(fx, "fan-7", 1), "R 10");
    assert_int_equal(user_counter(fx, "fan-7", false), 1);
    assert_int_equal(user_counter(fx, "fan-7", true), 10);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.duplicates, 2);
    assert_int_equal(st.acked, 2);
    assert_true(committer_idle(fx->c));
}

static void test_user_duplicate_across_batches(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    fx_start(fx, &cfg, NULL, false, 4);
    cross_batches(fx);
    fx_stop(fx);
    free(fx);
}

/* The same without coalescing and on the inline path. */
static void test_user_duplicate_no_coalesce(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.no_coalesce = true;
    fx_start(fx, &cfg, NULL, false, 4);
    cross_batches(fx);
    fx_stop(fx);
    free(fx);
}

static void test_user_duplicate_inline(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    fx_start_ex(fx, &cfg, NULL, false, 4, true);
    cross_batches(fx);
    fx_stop(fx);
    free(fx);
}

/* Nothing of the batch landed: its waiters get 503 and the markers it
 * added are deleted again, so the clients' retries count (not 409). */
static void test_user_rollback_when_nothing_landed(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.deadline_ms = 60;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_fail_calls(fx->fake, 1000000, STORE_UNAVAILABLE);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 1, 1, 1, "u2", 200), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 2, 0, 0, NULL, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 3));
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->w[i].result, COMMIT_UNAVAILABLE);
    assert_string_equal(marker(fx, "u1", 1), "");
    assert_string_equal(marker(fx, "u2", 7), "");
    assert_true(store_empty(fx));
    assert_int_equal(user_counter(fx, "u1", false), 0);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.markers_added, 2);
    assert_int_equal(st.rolled_back, 2);
    assert_int_equal(st.rollback_failures, 0);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.carry, 0);
    assert_true(committer_idle(fx->c));
    assert_int_equal(fx->n_totals, 0);

    /* The store is back: the retries are counted, once. */
    fake_fail_calls(fx->fake, 0, STORE_UNAVAILABLE);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 150), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 1, 1, 1, "u2", 250), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 2, 0, 0, NULL, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 6));
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->w[i].result, COMMIT_OK);
    expect_as(fx, 0, 2);
    expect_as(fx, 1, 1);
    expect_as(fx, 0, 0);
    check_store(fx);
    assert_string_equal(marker(fx, "u1", 1), "R 150");
    assert_string_equal(marker(fx, "u2", 7), "W 250");
    assert_int_equal(user_counter(fx, "u1", false), 1);
    assert_int_equal(user_counter(fx, "u1", true), 150);
    assert_int_equal(fx->n_totals, 1);
    fx_stop(fx);
    free(fx);
}

/* The delete of the rollback fails too (the marker's node went down): the
 * marker stays and the retry is refused as a duplicate: the answer is
 * lost, which the README states and the metric counts. */
static void test_user_rollback_delete_fails(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_fail_calls(fx->fake, 1000000, STORE_UNAVAILABLE);
    pthread_mutex_lock(&fx->fake->lock);
    fx->fake->del_status = STORE_UNAVAILABLE;
    pthread_mutex_unlock(&fx->fake->lock);
    uint64_t start = util_mono_ms();
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    /* the deadline, then the bounded retry of the delete */
    assert_true(util_mono_ms() - start < 5000);
    assert_int_equal(fx->w[0].result, COMMIT_UNAVAILABLE);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.rolled_back, 0);
    assert_int_equal(st.rollback_failures, 1);
    assert_string_equal(marker(fx, "u1", 1), "R 100");
    assert_true(store_empty(fx));
    pthread_mutex_lock(&fx->fake->lock);
    assert_true(fx->fake->dels > 1); /* retried while its node was down */
    fx->fake->del_status = STORE_OK;
    pthread_mutex_unlock(&fx->fake->lock);

    fake_fail_calls(fx->fake, 0, STORE_UNAVAILABLE);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 2));
    assert_int_equal(fx->w[0].result, COMMIT_DUPLICATE);
    assert_true(store_empty(fx));
    fx_stop(fx);
    free(fx);
}

/* Part of the batch landed: the rest is carried and will land, so the
 * marker stays; the client got 503 and its retry is a duplicate. When the
 * node returns the answer is complete: counted exactly once. */
static void test_user_marker_kept_on_partial_failure(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    /* the question-1 country counter of "us" is on a node that is down */
    fake_set_down(fx->fake, ":q1cus", STORE_UNAVAILABLE, false);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[0].result, COMMIT_UNCONFIRMED);
    assert_string_equal(marker(fx, "u1", 1), "R 100");
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.rolled_back, 0);
    assert_int_equal(st.carried_keys, 1);
    assert_false(committer_idle(fx->c));
    /* the user's own counters landed with the rest */
    assert_int_equal(user_counter(fx, "u1", false), 1);
    assert_int_equal(fx->n_totals, 1);

    assert_int_equal(submit_as(fx, 1, 0, 2, "u1", 500), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 2));
    assert_int_equal(fx->w[1].result, COMMIT_DUPLICATE);

    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    committer_drain(fx->c, on_drained, fx);
    assert_true(run_until(fx, drained, 10000));
    expect_as(fx, 0, 2);
    check_store(fx);
    assert_int_equal(user_counter(fx, "u1", false), 1);
    assert_int_equal(user_counter(fx, "u1", true), 100);
    fx_stop(fx);
    free(fx);
}

/* The user's own counters are on the down node: they are carried like the
 * others and land later; the totals of that answer are not reported (its
 * two counters were not confirmed together). */
static void test_user_counters_carried(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.deadline_ms = 40;
    fx_start(fx, &cfg, NULL, true, 4);
    fake_set_down(fx->fake, ":u:u1:ms", STORE_UNAVAILABLE, false);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 123), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[0].result, COMMIT_UNCONFIRMED);
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.carry, 1);
    assert_int_equal(fx->n_totals, 0);
    assert_int_equal(user_counter(fx, "u1", false), 1);
    assert_int_equal(user_counter(fx, "u1", true), 0);
    fake_set_down(fx->fake, "", STORE_UNAVAILABLE, false);
    committer_drain(fx->c, on_drained, fx);
    assert_true(run_until(fx, drained, 10000));
    assert_int_equal(user_counter(fx, "u1", true), 123);
    expect_as(fx, 0, 2);
    check_store(fx);
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.carry, 0);
    fx_stop(fx);
    free(fx);
}

/* The marker cannot be added: a short outage is retried inside the batch
 * (OK); one that outlasts the deadline is 503 for that answer only, and
 * nothing of it is counted, so the retry counts once. An add whose outcome
 * is unknown (STORE_ERROR) is refused at once. */
static void test_user_marker_add_fails(void **state)
{
    (void)state;
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = user_cfg(fx);
    cfg.deadline_ms = 60;
    fx_start(fx, &cfg, NULL, true, 4);

    pthread_mutex_lock(&fx->fake->lock);
    fx->fake->add_fail_calls = 2;
    fx->fake->add_status = STORE_UNAVAILABLE;
    pthread_mutex_unlock(&fx->fake->lock);
    assert_int_equal(submit_as(fx, 0, 0, 2, "u1", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 1));
    assert_int_equal(fx->w[0].result, COMMIT_OK);
    expect_as(fx, 0, 2);
    check_store(fx);

    pthread_mutex_lock(&fx->fake->lock);
    fx->fake->add_fail_calls = 1000000;
    pthread_mutex_unlock(&fx->fake->lock);
    uint64_t start = util_mono_ms();
    assert_int_equal(submit_as(fx, 1, 1, 0, "u2", 100), COMMIT_ACCEPTED);
    assert_int_equal(submit_as(fx, 2, 1, 1, NULL, 0), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 3));
    assert_true(util_mono_ms() - start >= cfg.deadline_ms);
    assert_int_equal(fx->w[1].result, COMMIT_UNAVAILABLE);
    assert_int_equal(fx->w[2].result, COMMIT_OK);
    expect_as(fx, 1, 1);
    check_store(fx);
    assert_string_equal(marker(fx, "u2", 7), "");
    assert_int_equal(user_counter(fx, "u2", false), 0);

    pthread_mutex_lock(&fx->fake->lock);
    fx->fake->add_status = STORE_ERROR;
    pthread_mutex_unlock(&fx->fake->lock);
    start = util_mono_ms();
    assert_int_equal(submit_as(fx, 3, 1, 0, "u3", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 4));
    assert_int_equal(fx->w[3].result, COMMIT_UNAVAILABLE);
    check_store(fx);

    pthread_mutex_lock(&fx->fake->lock);
    fx->fake->add_fail_calls = 0;
    pthread_mutex_unlock(&fx->fake->lock);
    assert_int_equal(submit_as(fx, 1, 1, 0, "u2", 100), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, 5));
    assert_int_equal(fx->w[1].result, COMMIT_OK);
    expect_as(fx, 1, 0);
    check_store(fx);
    assert_string_equal(marker(fx, "u2", 7), "R 100");
    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.rolled_back, 0);
    fx_stop(fx);
    free(fx);
}

/* A port nothing listens on: bind to port 0 for a free one, then close. */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* A memcached pool that is down: every waiter gets COMMIT_UNAVAILABLE after
 * the deadline, and since nothing landed nothing is carried. */
static void test_memcached_down(void **state)
{
    (void)state;
    enum { N = 25 };
    char url[128], err[256] = "";
    snprintf(url, sizeof(url), "memcached://127.0.0.1:%u?timeout_ms=50", closed_port());
    struct store *s = store_open(url, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s: %s", url, err);
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    struct commit_config cfg = default_cfg();
    cfg.deadline_ms = 200;
    fx_start(fx, &cfg, s, false, 4);

    uint64_t start = util_mono_ms();
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(fx, i), COMMIT_ACCEPTED);
    assert_true(until_dones(fx, N));
    uint64_t took = util_mono_ms() - start;
    for (int i = 0; i < N; i++) {
        assert_int_equal(fx->w[i].calls, 1);
        assert_int_equal(fx->w[i].result, COMMIT_UNAVAILABLE);
    }
    /* Retried until the deadline, not much longer. */
    assert_true(took >= cfg.deadline_ms);
    assert_true(took < 5000);

    struct commit_stats st;
    committer_get_stats(fx->c, &st);
    assert_int_equal(st.failed, N);
    assert_int_equal(st.acked, 0);
    assert_int_equal(st.carry, 0);
    assert_int_equal(st.carried_keys, 0);
    assert_int_equal(st.uncertain, 0);
    assert_int_equal(st.waiting, 0);
    assert_true(st.store_retries > 0);
    assert_true(committer_idle(fx->c));

    /* A drain after the failure completes at once: nothing is pending. */
    committer_drain(fx->c, on_drained, fx);
    assert_int_equal(fx->drained_calls, 1);
    fx_stop(fx);
    free(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_one_batch),
        cmocka_unit_test(test_no_coalescing),
        cmocka_unit_test(test_flush_zero_next_turn),
        cmocka_unit_test(test_answers_during_flight_share_next_batch),
        cmocka_unit_test(test_submit_from_done_callback),
        cmocka_unit_test(test_overloaded_max_waiting),
        cmocka_unit_test(test_overloaded_batch_answers),
        cmocka_unit_test(test_zero_batch_answers_means_one),
        cmocka_unit_test(test_batch_interval),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_idle),
        cmocka_unit_test(test_drain_with_batch_in_flight),
        cmocka_unit_test(test_transient_unavailable_retried),
        cmocka_unit_test(test_nothing_landed_dropped),
        cmocka_unit_test(test_partial_failure_carried_until_it_lands),
        cmocka_unit_test(test_carry_gauge_counts_pending_remainder),
        cmocka_unit_test(test_lost_reply_never_resent),
        cmocka_unit_test(test_lost_reply_and_outage),
        cmocka_unit_test(test_worker_refuses_batch),
        cmocka_unit_test(test_free_after_stop_answers_open_batch),
        cmocka_unit_test(test_inline_burst),
        cmocka_unit_test(test_inline_chain_and_drain),
        cmocka_unit_test(test_memcached_down),
        cmocka_unit_test(test_user_duplicates_in_one_batch),
        cmocka_unit_test(test_user_duplicate_across_batches),
        cmocka_unit_test(test_user_duplicate_no_coalesce),
        cmocka_unit_test(test_user_duplicate_inline),
        cmocka_unit_test(test_user_rollback_when_nothing_landed),
        cmocka_unit_test(test_user_rollback_delete_fails),
        cmocka_unit_test(test_user_marker_kept_on_partial_failure),
        cmocka_unit_test(test_user_counters_carried),
        cmocka_unit_test(test_user_marker_add_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
