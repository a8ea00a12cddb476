#include "commit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "deltas.h"
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
    struct deltas fresh;       /* increments of the batch's waiters */
    struct deltas carry;       /* increments of earlier batches, retried */
    struct waiter *waiters;    /* owned */
    size_t n_waiters;
    size_t cap_waiters;
    struct store_incr *items;  /* owned, fresh then carry; written by the job */
    struct store_incr *retry;  /* owned, scratch for the job's retries */
    size_t *retry_idx;         /* owned */
    size_t cap_items;
    uint64_t retries;          /* written by the job */
    uint64_t flush_us;         /* written by the job */
};

struct committer {
    struct event_base *base;   /* (ref) */
    struct worker *worker;     /* (ref) */
    struct commit_config cfg;
    struct batch *open;        /* owned: filling */
    struct batch *inflight;    /* owned by the worker job while not NULL */
    struct batch *spare;       /* owned: reused to avoid reallocating tables */
    struct deltas carry;       /* unconfirmed remainders waiting for the next batch */
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
    deltas_free(&b->fresh);
    deltas_free(&b->carry);
    free(b->waiters);
    free(b->items);
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
    if (!deltas_init(&b->fresh, c->cfg.max_batch_keys) || !deltas_init(&b->carry, 16)) {
        batch_free(b);
        return NULL;
    }
    return b;
}

static bool ensure_items(struct batch *b, size_t n)
{
    if (n <= b->cap_items)
        return true;
    size_t cap = b->cap_items ? b->cap_items : 64;
    while (cap < n)
        cap *= 2;
    struct store_incr *items = realloc(b->items, cap * sizeof(*items));
    if (items)
        b->items = items;
    struct store_incr *retry = realloc(b->retry, cap * sizeof(*retry));
    if (retry)
        b->retry = retry;
    size_t *idx = realloc(b->retry_idx, cap * sizeof(*idx));
    if (idx)
        b->retry_idx = idx;
    if (items == NULL || retry == NULL || idx == NULL)
        return false;
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

/* Worker thread: write the batch, retry what failed until the deadline. */
static void flush_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    const struct commit_config *cfg = &b->c->cfg;
    size_t n = 0;
    for (size_t i = 0; i < b->fresh.count; i++, n++) {
        struct delta_entry *e = &b->fresh.entries[i];
        b->items[n] = (struct store_incr){.key = e->key, .keylen = e->len, .delta = e->delta};
    }
    for (size_t i = 0; i < b->carry.count; i++, n++) {
        struct delta_entry *e = &b->carry.entries[i];
        b->items[n] = (struct store_incr){.key = e->key, .keylen = e->len, .delta = e->delta};
    }

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
         * was lost (STORE_ERROR) may have been applied, and resending it could
         * count it twice. */
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

static void dispatch(struct committer *c)
{
    if (c->inflight != NULL || (c->open->fresh.count == 0 && c->carry.count == 0))
        return;
    struct batch *next = c->spare ? c->spare : batch_new(c);
    if (next == NULL) {
        arm_timer(c, 10); /* out of memory: try again shortly, keep everything */
        return;
    }
    struct batch *b = c->open;
    if (!ensure_items(b, b->fresh.count + c->carry.count)) {
        if (next != c->spare)
            batch_free(next);
        arm_timer(c, 10);
        return;
    }
    c->spare = NULL;
    c->open = next;
    struct deltas tmp = b->carry; /* empty */
    b->carry = c->carry;
    c->carry = tmp;

    c->inflight = b;
    if (!worker_submit(c->worker, flush_job, flush_done, b)) {
        /* The worker is stopping: nothing was sent, so the fresh increments are
         * dropped and their clients told; carried ones stay. */
        log_error("store worker refused a batch keys=%zu", b->fresh.count + b->carry.count);
        c->inflight = NULL;
        for (size_t i = 0; i < b->carry.count; i++)
            deltas_add(&c->carry, b->carry.entries[i].key, b->carry.entries[i].len,
                       b->carry.entries[i].delta);
        for (size_t i = 0; i < b->n_waiters; i++)
            b->waiters[i].fn(b->waiters[i].arg, COMMIT_UNAVAILABLE);
        c->waiting -= b->n_waiters;
        c->st.failed += b->n_waiters;
        batch_free(b);
        return;
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

static void flush_done(void *arg)
{
    struct batch *b = arg;
    struct committer *c = b->c;
    c->inflight = NULL;

    size_t nf = b->fresh.count;
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
    for (size_t i = 0; i < nf + b->carry.count; i++) {
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
        struct delta_entry *e = is_fresh ? &b->fresh.entries[i] : &b->carry.entries[i - nf];
        deltas_add(&c->carry, e->key, e->len, e->delta);
        if (is_fresh)
            c->st.carried_keys++;
    }
    if (!fresh_ok)
        log_warn("batch not confirmed keys=%zu waiters=%zu carried=%zu retries=%llu", nf,
                 b->n_waiters, c->carry.count, (unsigned long long)b->retries);

    c->st.batches++;
    c->st.batch_keys += nf + b->carry.count;
    c->st.store_retries += b->retries;
    c->st.last_flush_us = b->flush_us;
    if (fresh_ok)
        c->st.acked += b->n_waiters;
    else
        c->st.failed += b->n_waiters;
    c->waiting -= b->n_waiters;

    size_t n = b->n_waiters;
    b->n_waiters = 0;
    deltas_clear(&b->fresh);
    deltas_clear(&b->carry);
    /* Answer the clients before reusing the batch: callbacks only reply. */
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
                                   const struct commit_config *cfg)
{
    struct committer *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->worker = worker;
    c->cfg = *cfg;
    if (c->cfg.max_batch_keys < KEYS_PER_ANSWER)
        c->cfg.max_batch_keys = KEYS_PER_ANSWER;
    c->open = batch_new(c);
    c->timer = evtimer_new(base, on_timer, c);
    if (c->open == NULL || c->timer == NULL || !deltas_init(&c->carry, 16)) {
        committer_free(c);
        return NULL;
    }
    return c;
}

enum commit_refusal committer_submit(struct committer *c, const struct answer_keys *keys,
                                     commit_done_fn done, void *arg)
{
    if (c->draining)
        return COMMIT_DRAINING;
    struct batch *b = c->open;
    if (c->waiting >= c->cfg.max_waiting ||
        b->fresh.count + KEYS_PER_ANSWER > c->cfg.max_batch_keys)
        return COMMIT_OVERLOADED;
    if (b->n_waiters == b->cap_waiters) {
        size_t cap = b->cap_waiters ? b->cap_waiters * 2 : 256;
        struct waiter *w = realloc(b->waiters, cap * sizeof(*w));
        if (w == NULL)
            return COMMIT_OVERLOADED;
        b->waiters = w;
        b->cap_waiters = cap;
    }
    /* The fresh table was sized for max_batch_keys, so these adds cannot
     * fail half-way and leave part of an answer behind. */
    for (int i = 0; i < KEYS_PER_ANSWER; i++)
        deltas_add(&b->fresh, keys->key[i], keys->len[i], 1);
    b->waiters[b->n_waiters++] = (struct waiter){.fn = done, .arg = arg};
    c->waiting++;
    c->st.increments += KEYS_PER_ANSWER;

    bool full = b->fresh.count + KEYS_PER_ANSWER > c->cfg.max_batch_keys;
    if (!c->timer_armed && c->inflight == NULL)
        arm_timer(c, full ? 0 : c->cfg.flush_ms);
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
    return c->inflight == NULL && c->open->fresh.count == 0 && c->carry.count == 0;
}

void committer_get_stats(const struct committer *c, struct commit_stats *out)
{
    *out = c->st;
    out->waiting = c->waiting;
    out->carry = c->carry.count;
    out->open_keys = c->open ? c->open->fresh.count : 0;
}

void committer_free(struct committer *c)
{
    if (c == NULL)
        return;
    if (c->timer)
        event_free(c->timer);
    batch_free(c->open);
    batch_free(c->spare);
    deltas_free(&c->carry);
    free(c);
}
