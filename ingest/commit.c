#include "commit.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>

#include "counts.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 250

struct waiter {
    commit_done_fn fn;
    void *arg;
};

struct batch {
    struct committer *c;       /* (ref) */
    struct counts fresh;       /* increments of the batch's waiters */
    struct counts carry;       /* increments of earlier batches, retried */
    struct waiter *waiters;    /* owned */
    uint32_t (*answer_ids)[KEYS_PER_ANSWER]; /* owned, per waiter: for writes without coalescing */
    size_t n_waiters;
    size_t cap_waiters;
    /* written by the job: */
    struct store_incr *items;  /* owned, fresh ids then carry ids */
    uint32_t *item_ids;        /* owned, the counter id of each item */
    char (*keys)[KEY_MAX];     /* owned, the key of each item */
    struct store_incr *retry;  /* owned, scratch for retries */
    size_t *retry_idx;         /* owned */
    size_t cap_items;
    size_t n_items;
    size_t n_fresh_items;      /* items[0 .. n_fresh_items) are the waiters' */
    uint64_t retries;
    uint64_t flush_us;
    struct util_rng rng;       /* draws the shards; used only by the job */
};

struct committer {
    struct event_base *base;   /* (ref) */
    struct worker *worker;     /* (ref) */
    struct store *inline_store; /* (ref) NULL: batches go through the worker */
    struct event *inline_done; /* runs flush_done after an inline write */
    const struct eventfile *ef; /* (ref) */
    struct commit_config cfg;
    uint32_t ncounters;
    struct batch *open;        /* owned: filling */
    struct batch *inflight;    /* owned by the worker job while not NULL */
    struct batch *spare;       /* owned: reused to avoid reallocating */
    struct counts carry;       /* unapplied remainders waiting for the next batch */
    struct event *timer;
    bool timer_armed;
    bool draining;
    void (*drained)(void *arg);
    void *drained_arg;
    size_t waiting;
    struct commit_stats st;
};

static void batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    counts_free(&b->fresh);
    counts_free(&b->carry);
    free(b->waiters);
    free(b->answer_ids);
    free(b->items);
    free(b->item_ids);
    free(b->keys);
    free(b->retry);
    free(b->retry_idx);
    free(b);
}

static struct batch *batch_new(struct committer *c)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->c = c;
    if (!counts_init(&b->fresh, c->ncounters) || !counts_init(&b->carry, c->ncounters)) {
        batch_free(b);
        return NULL;
    }
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = util_mono_us() ^ (uint64_t)(uintptr_t)b;
    util_rng_seed(&b->rng, seed);
    return b;
}

static bool ensure_items(struct batch *b, size_t n)
{
    if (n <= b->cap_items)
        return true;
    size_t cap = b->cap_items ? b->cap_items : 64;
    while (cap < n)
        cap *= 2;
    void *p;
    if ((p = realloc(b->items, cap * sizeof(*b->items))) == NULL)
        return false;
    b->items = p;
    if ((p = realloc(b->item_ids, cap * sizeof(*b->item_ids))) == NULL)
        return false;
    b->item_ids = p;
    if ((p = realloc(b->keys, cap * sizeof(*b->keys))) == NULL)
        return false;
    b->keys = p;
    if ((p = realloc(b->retry, cap * sizeof(*b->retry))) == NULL)
        return false;
    b->retry = p;
    if ((p = realloc(b->retry_idx, cap * sizeof(*b->retry_idx))) == NULL)
        return false;
    b->retry_idx = p;
    b->cap_items = cap;
    return true;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static bool any_unavailable(const struct store_incr *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].status == STORE_UNAVAILABLE)
            return true;
    return false;
}

static void add_item(struct batch *b, uint32_t id, uint64_t delta)
{
    const struct eventfile *ef = b->c->ef;
    size_t i = b->n_items++;
    uint32_t shards = keys_counter_shards(ef, id);
    uint32_t shard = shards <= 1 ? 1 : util_rng_below(&b->rng, shards) + 1;
    size_t len = keys_counter_key(ef, id, shard, b->keys[i]);
    b->item_ids[i] = id;
    b->items[i] = (struct store_incr){.key = b->keys[i], .keylen = len, .delta = delta};
}

/* Worker thread: write the batch, retry what certainly did not land until
 * the deadline. */
static void flush_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    const struct commit_config *cfg = &b->c->cfg;
    b->n_items = 0;
    if (!cfg->no_coalesce) {
        for (uint32_t i = 0; i < b->fresh.ntouched; i++)
            add_item(b, b->fresh.touched[i], b->fresh.delta[b->fresh.touched[i]]);
    } else {
        /* Without coalescing every answer's increments go as they came. */
        for (size_t w = 0; w < b->n_waiters; w++)
            for (int k = 0; k < KEYS_PER_ANSWER; k++)
                add_item(b, b->answer_ids[w][k], 1);
    }
    b->n_fresh_items = b->n_items;
    for (uint32_t i = 0; i < b->carry.ntouched; i++)
        add_item(b, b->carry.touched[i], b->carry.delta[b->carry.touched[i]]);
    size_t n = b->n_items;

    uint64_t start_us = util_mono_us();
    uint64_t deadline_ms = util_mono_ms() + cfg->deadline_ms;
    b->retries = 0;
    store_incr_batch(s, b->items, n, cfg->ttl_s);
    uint64_t backoff = BACKOFF_FIRST_MS;
    while (any_unavailable(b->items, n)) {
        uint64_t now = util_mono_ms();
        if (now >= deadline_ms)
            break;
        sleep_ms(backoff < deadline_ms - now ? backoff : deadline_ms - now);
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
        /* Only what certainly did not land is sent again: an item whose reply
         * was lost (STORE_ERROR) may have been applied. */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (b->items[i].status == STORE_UNAVAILABLE) {
                b->retry[m] = b->items[i];
                b->retry_idx[m++] = i;
            }
        }
        b->retries++;
        store_incr_batch(s, b->retry, m, cfg->ttl_s);
        for (size_t i = 0; i < m; i++)
            b->items[b->retry_idx[i]].status = b->retry[i].status;
    }
    b->flush_us = util_mono_us() - start_us;
}

static void arm_timer(struct committer *c, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->timer_armed = true;
}

static void flush_done(void *arg);

static void maybe_drained(struct committer *c)
{
    if (c->draining && c->drained && committer_idle(c)) {
        void (*fn)(void *) = c->drained;
        c->drained = NULL;
        fn(c->drained_arg);
    }
}

static void fail_batch(struct committer *c, struct batch *b)
{
    /* Nothing of it was sent: the fresh increments are dropped and their
     * clients told; carried ones stay. */
    counts_merge(&c->carry, &b->carry);
    c->waiting -= b->n_waiters;
    c->st.failed += b->n_waiters;
    for (size_t i = 0; i < b->n_waiters; i++)
        b->waiters[i].fn(b->waiters[i].arg, COMMIT_UNAVAILABLE);
    batch_free(b);
}

static void dispatch(struct committer *c)
{
    if (c->inflight != NULL || (c->open->fresh.ntouched == 0 && c->carry.ntouched == 0))
        return;
    struct batch *next = c->spare ? c->spare : batch_new(c);
    struct batch *b = c->open;
    size_t fresh_items =
        c->cfg.no_coalesce ? b->n_waiters * KEYS_PER_ANSWER : b->fresh.ntouched;
    if (next == NULL || !ensure_items(b, fresh_items + c->carry.ntouched)) {
        if (next && next != c->spare)
            batch_free(next);
        arm_timer(c, 10); /* out of memory: try again shortly, keep everything */
        return;
    }
    c->spare = NULL;
    c->open = next;
    struct counts tmp = b->carry; /* empty */
    b->carry = c->carry;
    c->carry = tmp;

    c->inflight = b;
    if (c->inline_store) {
        /* Done on the next turn, so no callback runs inside a submit. */
        flush_job(c->inline_store, b);
        event_active(c->inline_done, EV_TIMEOUT, 0);
        return;
    }
    if (!worker_submit(c->worker, flush_job, flush_done, b)) {
        log_error("store worker refused a batch counters=%u",
                  b->fresh.ntouched + b->carry.ntouched);
        c->inflight = NULL;
        fail_batch(c, b);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct committer *c = arg;
    c->timer_armed = false;
    dispatch(c);
}

static void on_inline_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct committer *c = arg;
    flush_done(c->inflight);
}

static void flush_done(void *arg)
{
    struct batch *b = arg;
    struct committer *c = b->c;
    c->inflight = NULL;

    size_t nf = b->n_fresh_items;
    bool fresh_ok = true, fresh_maybe_landed = false;
    for (size_t i = 0; i < nf; i++) {
        enum store_status st = b->items[i].status;
        if (st != STORE_OK)
            fresh_ok = false;
        /* STORE_ERROR: the reply was lost, the increment may have landed. */
        if (st == STORE_OK || st == STORE_ERROR)
            fresh_maybe_landed = true;
    }
    /* Carried: what certainly did not land, of a batch part of which did.
     * Uncertain items (reply lost) are neither carried nor resent. */
    for (size_t i = 0; i < b->n_items; i++) {
        enum store_status st = b->items[i].status;
        bool is_fresh = i < nf;
        if (st == STORE_OK)
            continue;
        if (st != STORE_UNAVAILABLE) {
            c->st.uncertain++;
            continue;
        }
        if (is_fresh && !fresh_maybe_landed)
            continue; /* nothing of the batch landed: the clients' retries are exact */
        counts_add(&c->carry, b->item_ids[i], b->items[i].delta);
        if (is_fresh)
            c->st.carried_keys++;
    }
    if (!fresh_ok)
        log_warn("batch not confirmed counters=%zu answers=%zu carried=%u retries=%llu", nf,
                 b->n_waiters, c->carry.ntouched, (unsigned long long)b->retries);

    c->st.batches++;
    c->st.batch_keys += b->n_items;
    c->st.store_retries += b->retries;
    c->st.batch_answers += b->n_waiters;
    metrics_hist_add(&c->st.flush_hist, b->flush_us);
    if (fresh_ok)
        c->st.acked += b->n_waiters;
    else
        c->st.failed += b->n_waiters;
    c->waiting -= b->n_waiters;

    size_t n = b->n_waiters;
    b->n_waiters = 0;
    counts_clear(&b->fresh);
    counts_clear(&b->carry);
    for (size_t i = 0; i < n; i++)
        b->waiters[i].fn(b->waiters[i].arg, fresh_ok ? COMMIT_OK : COMMIT_UNAVAILABLE);

    if (c->spare == NULL)
        c->spare = b;
    else
        batch_free(b);

    /* What filled up while this batch was out goes now: it has waited a
     * whole round trip already. */
    dispatch(c);
    maybe_drained(c);
}

struct committer *committer_create(struct event_base *base, struct worker *worker,
                                   struct store *inline_store, const struct eventfile *ef,
                                   const struct commit_config *cfg)
{
    struct committer *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->worker = worker;
    c->inline_store = inline_store;
    c->ef = ef;
    c->cfg = *cfg;
    if (c->cfg.max_batch_answers == 0)
        c->cfg.max_batch_answers = 1;
    c->ncounters = keys_counter_count(ef);
    c->timer = evtimer_new(base, on_timer, c);
    c->inline_done = event_new(base, -1, 0, on_inline_done, c);
    if (c->timer == NULL || c->inline_done == NULL || !counts_init(&c->carry, c->ncounters) ||
        (c->open = batch_new(c)) == NULL) {
        committer_free(c);
        return NULL;
    }
    return c;
}

enum commit_refusal committer_submit(struct committer *c, const uint32_t ids[KEYS_PER_ANSWER],
                                     commit_done_fn done, void *arg)
{
    if (c->draining)
        return COMMIT_DRAINING;
    struct batch *b = c->open;
    if (c->waiting >= c->cfg.max_waiting || b->n_waiters >= c->cfg.max_batch_answers)
        return COMMIT_OVERLOADED;
    if (b->n_waiters == b->cap_waiters) {
        size_t cap = b->cap_waiters ? b->cap_waiters * 2 : 256;
        struct waiter *w = realloc(b->waiters, cap * sizeof(*w));
        if (w == NULL)
            return COMMIT_OVERLOADED;
        b->waiters = w;
        uint32_t(*ai)[KEYS_PER_ANSWER] = realloc(b->answer_ids, cap * sizeof(*ai));
        if (ai == NULL)
            return COMMIT_OVERLOADED;
        b->answer_ids = ai;
        b->cap_waiters = cap;
    }
    for (int i = 0; i < KEYS_PER_ANSWER; i++) {
        counts_add(&b->fresh, ids[i], 1);
        b->answer_ids[b->n_waiters][i] = ids[i];
    }
    b->waiters[b->n_waiters++] = (struct waiter){.fn = done, .arg = arg};
    c->waiting++;
    c->st.increments += KEYS_PER_ANSWER;

    if (c->inflight == NULL) {
        if (b->n_waiters >= c->cfg.max_batch_answers)
            arm_timer(c, 0);
        else if (!c->timer_armed)
            arm_timer(c, c->cfg.flush_ms);
    }
    return COMMIT_ACCEPTED;
}

void committer_drain(struct committer *c, void (*drained)(void *arg), void *arg)
{
    c->draining = true;
    c->drained = drained;
    c->drained_arg = arg;
    dispatch(c);
    maybe_drained(c);
}

bool committer_idle(const struct committer *c)
{
    return c->inflight == NULL && c->open->fresh.ntouched == 0 && c->carry.ntouched == 0;
}

void committer_get_stats(const struct committer *c, struct commit_stats *out)
{
    *out = c->st;
    out->waiting = c->waiting;
    /* The remainder is resent at once, so while a node stays down it sits
     * in the batch in flight: count it there too (the job only reads it). */
    out->carry = c->carry.ntouched + (c->inflight ? c->inflight->carry.ntouched : 0);
    out->open_answers = c->open ? c->open->n_waiters : 0;
}

/* Tells every client still waiting in b that its answer was not confirmed. */
static void answer_unconfirmed(struct committer *c, struct batch *b)
{
    if (b == NULL)
        return;
    size_t n = b->n_waiters;
    b->n_waiters = 0;
    c->waiting -= n;
    c->st.failed += n;
    for (size_t i = 0; i < n; i++)
        b->waiters[i].fn(b->waiters[i].arg, COMMIT_UNAVAILABLE);
}

void committer_free(struct committer *c)
{
    if (c == NULL)
        return;
    /* Without a drain (a forced stop), answers still open or written inline
     * but not yet reported get their 503 rather than no reply at all. */
    answer_unconfirmed(c, c->open);
    if (c->inflight && c->inline_store)
        answer_unconfirmed(c, c->inflight);
    if (c->timer)
        event_free(c->timer);
    if (c->inline_done)
        event_free(c->inline_done);
    if (c->inflight && c->inline_store)
        batch_free(c->inflight);
    batch_free(c->open);
    batch_free(c->spare);
    counts_free(&c->carry);
    free(c);
}
