#include "commit.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>

#include "counts.h"
#include "fans.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define BACKOFF_FIRST_MS 5
#define BACKOFF_MAX_MS 250
/* How long a rollback retries deleting a marker whose node is down. */
#define ROLLBACK_RETRY_MS 250
/* Per-user increments kept for a later batch (about 128 bytes each). */
#define USER_CARRY_MAX 65536
/* item_ids of a per-user counter item (not a logical counter). */
#define USER_ITEM UINT32_MAX
#define NO_ITEM SIZE_MAX

enum waiter_refusal { REFUSED_NONE = 0, REFUSED_DUPLICATE, REFUSED_UNAVAILABLE };

struct waiter {
    commit_done_fn fn;
    void *arg;
    uint8_t refused;           /* enum waiter_refusal; written by the job */
};

enum rec_state { REC_PENDING = 0, REC_ADDED, REC_DUPLICATE, REC_FAILED };

/* An answer that carries a user. */
struct user_rec {
    char user[FANS_USER_MAX + 1];
    uint32_t question;         /* question id */
    uint32_t waiter;           /* index into the batch's waiters */
    bool right;
    uint64_t ms;
    /* written by the job: */
    uint8_t state;             /* enum rec_state */
    size_t item;               /* its :right item (:ms follows), NO_ITEM when none */
    char mkey[KEY_USER_MAX];   /* its marker's key and value */
    size_t mkeylen;
    char mval[24];
    size_t mvallen;
};

/* A per-user increment carried to a later batch. */
struct ucarry_item {
    char key[KEY_USER_MAX];
    size_t keylen;
    uint64_t delta;
};

struct ucarry {
    struct ucarry_item *v;     /* owned */
    size_t n, cap;
};

struct batch {
    struct committer *c;       /* (ref) */
    struct counts fresh;       /* increments of the batch's waiters */
    struct counts carry;       /* increments of earlier batches, retried */
    struct waiter *waiters;    /* owned */
    uint32_t (*answer_ids)[KEYS_PER_ANSWER]; /* owned, per waiter: for writes without coalescing */
    size_t n_waiters;
    size_t cap_waiters;
    struct user_rec *recs;     /* owned: the answers carrying a user */
    size_t n_recs, cap_recs;
    size_t n_user_items;       /* items the recs add: 2 per right answer */
    struct ucarry ucarry;      /* per-user increments of earlier batches, retried */
    /* written by the job: */
    struct store_incr *items;  /* owned, fresh ids then carry ids */
    uint32_t *item_ids;        /* owned, the counter id of each item */
    char (*keys)[KEY_MAX];     /* owned, the key of each item */
    struct store_incr *retry;  /* owned, scratch for retries */
    size_t *retry_idx;         /* owned */
    size_t cap_items;
    size_t n_items;
    size_t n_fresh_items;      /* items[0 .. n_fresh_items) are the waiters' */
    char (*ukeys)[KEY_USER_MAX]; /* owned, keys of the recs' counter items */
    size_t cap_ukeys;
    struct store_add_item *adds; /* owned, the pending markers of a round, in rec order */
    size_t cap_adds;
    bool fresh_ok;             /* every fresh item confirmed */
    bool fresh_maybe_landed;   /* some fresh item may have been applied */
    uint64_t markers_added, rolled_back, rollback_failures;
    uint64_t retries;
    uint64_t start_us;         /* the batch's first write */
    uint64_t deadline_ms;      /* its retries end then */
    uint64_t flush_us;
    struct util_rng rng;       /* draws the shards; used only by the job */
};

struct committer {
    struct event_base *base;   /* (ref) */
    struct worker *worker;     /* (ref) */
    struct store *inline_store; /* (ref) NULL: batches go through the worker */
    struct store *async_store; /* (ref) NULL: idem; else batches without users start here */
    bool inflight_async;       /* async_store is running: inflight, or a hint replay */
    bool replaying;            /* the run is committer_replay_hints' */
    bool stopping;             /* committer_stop: no more writes from the loop */
    uint64_t last_start_us;    /* monotonic: when the last batch went out */
    struct event *inline_done; /* runs flush_done after an inline write */
    const struct eventfile *ef; /* (ref) */
    struct commit_config cfg;
    char counter_prefix[KEY_PREFIX_MAX]; /* keys_epoch_prefix of cfg.pool_epoch */
    uint32_t ncounters;
    struct batch *open;        /* owned: filling */
    struct batch *inflight;    /* owned by the worker job while not NULL */
    struct batch *spare;       /* owned: reused to avoid reallocating */
    struct counts carry;       /* unapplied remainders waiting for the next batch */
    struct ucarry ucarry;      /* the same for per-user counters */
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
    free(b->recs);
    free(b->ucarry.v);
    free(b->ukeys);
    free(b->adds);
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

static bool ensure_items(struct batch *b, size_t n, size_t n_ukeys, size_t n_recs)
{
    if (n_recs > b->cap_adds) {
        size_t cap = b->cap_adds ? b->cap_adds : 64;
        while (cap < n_recs)
            cap *= 2;
        void *p = realloc(b->adds, cap * sizeof(*b->adds));
        if (p == NULL)
            return false;
        b->adds = p;
        b->cap_adds = cap;
    }
    if (n_ukeys > b->cap_ukeys) {
        size_t cap = b->cap_ukeys ? b->cap_ukeys : 64;
        while (cap < n_ukeys)
            cap *= 2;
        void *p = realloc(b->ukeys, cap * sizeof(*b->ukeys));
        if (p == NULL)
            return false;
        b->ukeys = p;
        b->cap_ukeys = cap;
    }
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
    size_t len = keys_counter_key_in(ef, b->c->counter_prefix, id, shard, b->keys[i]);
    b->item_ids[i] = id;
    b->items[i] = (struct store_incr){.key = b->keys[i], .keylen = len, .delta = delta};
}

/* key is (ref): it must stay valid until flush_done. */
static void add_user_item(struct batch *b, const char *key, size_t keylen, uint64_t delta,
                          bool want_value)
{
    size_t i = b->n_items++;
    b->item_ids[i] = USER_ITEM;
    b->items[i] = (struct store_incr){
        .key = key, .keylen = keylen, .delta = delta, .want_value = want_value};
}

static uint64_t next_backoff(uint64_t backoff)
{
    return backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
}

/* Sleeps the backoff, or until the deadline; false when it has passed. */
static bool backoff_wait(uint64_t deadline_ms, uint64_t *backoff)
{
    uint64_t now = util_mono_ms();
    if (now >= deadline_ms)
        return false;
    util_sleep_ms(*backoff < deadline_ms - now ? *backoff : deadline_ms - now);
    *backoff = next_backoff(*backoff);
    return true;
}

/* The markers' keys and values; every record pending. */
static void markers_prepare(struct batch *b)
{
    const struct eventfile *ef = b->c->ef;
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        r->state = REC_PENDING;
        r->item = NO_ITEM;
        r->mkeylen = key_user_marker(r->mkey, ef->name, r->user, r->question);
        r->mvallen = fans_marker_format(r->mval, sizeof(r->mval), r->right, r->ms);
    }
}

/* The pending records' markers into b->adds, in record order; how many. */
static size_t markers_pending(struct batch *b)
{
    size_t m = 0;
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        if (r->state != REC_PENDING)
            continue;
        b->adds[m++] = (struct store_add_item){
            .key = r->mkey, .keylen = r->mkeylen, .val = r->mval, .vallen = r->mvallen};
    }
    return m;
}

/* The outcomes of the adds markers_pending listed; true when some marker
 * certainly did not go in (its node is down) and may be sent again. */
static bool markers_take(struct batch *b)
{
    bool again = false;
    size_t j = 0;
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        if (r->state != REC_PENDING)
            continue;
        enum store_status st = b->adds[j++].status;
        if (st == STORE_OK) {
            r->state = REC_ADDED;
            b->markers_added++;
        } else if (st == STORE_EXISTS) {
            r->state = REC_DUPLICATE;
        } else if (st == STORE_UNAVAILABLE) {
            again = true; /* not applied: safe to send again */
        } else {
            r->state = REC_FAILED;
        }
    }
    return again;
}

/* What is still pending failed; the refused answers' counters leave the
 * batch before anything is written. */
static void markers_end(struct batch *b)
{
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        if (r->state == REC_PENDING)
            r->state = REC_FAILED;
        if (r->state == REC_ADDED)
            continue;
        b->waiters[r->waiter].refused =
            r->state == REC_DUPLICATE ? REFUSED_DUPLICATE : REFUSED_UNAVAILABLE;
        if (!b->c->cfg.no_coalesce)
            for (int k = 0; k < KEYS_PER_ANSWER; k++)
                counts_sub(&b->fresh, b->answer_ids[r->waiter][k], 1);
    }
}

/* Sends the pending markers again while some certainly did not go in,
 * until the deadline (sleeping the backoff first: they just failed). */
static void markers_retry(struct store *s, struct batch *b)
{
    uint64_t backoff = BACKOFF_FIRST_MS;
    size_t m;
    while (backoff_wait(b->deadline_ms, &backoff) && (m = markers_pending(b)) > 0) {
        b->retries++;
        store_add_batch(s, b->adds, m, b->c->cfg.ttl_s);
        if (!markers_take(b))
            break;
    }
}

/* Adds every record's marker, in submission order (of two answers of one
 * user to one question in this batch the first wins), all of them in one
 * pipelined store call. A marker whose node is down is retried until the
 * deadline; what then still failed, or got an unknown outcome, is refused
 * with 503 and counts nothing. */
static void add_markers(struct store *s, struct batch *b)
{
    markers_prepare(b);
    size_t m = markers_pending(b);
    if (m > 0) {
        store_add_batch(s, b->adds, m, b->c->cfg.ttl_s);
        if (markers_take(b))
            markers_retry(s, b);
    }
    markers_end(b);
}

/* Nothing of the batch's own increments can have landed: its waiters get
 * 503 and their retries must not be refused, so the markers it added go.
 * A delete whose node is down is retried briefly; one that still fails
 * leaves its marker (the retry of that answer will be refused). */
static void rollback_markers(struct store *s, struct batch *b)
{
    uint64_t deadline_ms = util_mono_ms() + ROLLBACK_RETRY_MS;
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        if (r->state != REC_ADDED)
            continue;
        uint64_t backoff = BACKOFF_FIRST_MS;
        enum store_status st;
        while ((st = store_delete(s, r->mkey, r->mkeylen)) == STORE_UNAVAILABLE &&
               backoff_wait(deadline_ms, &backoff))
            ;
        if (st == STORE_OK || st == STORE_NOTFOUND) {
            b->rolled_back++;
        } else {
            b->rollback_failures++;
            log_warn("marker not rolled back key=%s status=%s: a retry of this answer will be "
                     "refused as a duplicate",
                     r->mkey, store_status_str(st));
        }
    }
}

/* The batch's store items: its counters (coalesced or not), the users'
 * totals of the answers whose marker was added, then what earlier batches
 * carried. Only formats: nothing goes to the store. */
static void build_items(struct batch *b)
{
    const struct eventfile *ef = b->c->ef;
    b->n_items = 0;
    if (!b->c->cfg.no_coalesce) {
        for (uint32_t i = 0; i < b->fresh.ntouched; i++) {
            uint32_t id = b->fresh.touched[i];
            if (b->fresh.delta[id] != 0) /* 0: only refused answers touched it */
                add_item(b, id, b->fresh.delta[id]);
        }
    } else {
        /* Without coalescing every answer's increments go as they came. */
        for (size_t w = 0; w < b->n_waiters; w++)
            if (b->waiters[w].refused == REFUSED_NONE)
                for (int k = 0; k < KEYS_PER_ANSWER; k++)
                    add_item(b, b->answer_ids[w][k], 1);
    }
    /* The users' totals: one increment per right answer and counter, not
     * coalesced, so each returns the total its answer made. */
    size_t nk = 0;
    for (size_t i = 0; i < b->n_recs; i++) {
        struct user_rec *r = &b->recs[i];
        if (r->state != REC_ADDED || !r->right)
            continue;
        r->item = b->n_items;
        size_t len = key_user_right(b->ukeys[nk], ef->name, r->user);
        add_user_item(b, b->ukeys[nk++], len, 1, true);
        len = key_user_ms(b->ukeys[nk], ef->name, r->user);
        add_user_item(b, b->ukeys[nk++], len, r->ms, true);
    }
    b->n_fresh_items = b->n_items;
    for (uint32_t i = 0; i < b->carry.ntouched; i++)
        add_item(b, b->carry.touched[i], b->carry.delta[b->carry.touched[i]]);
    for (size_t i = 0; i < b->ucarry.n; i++)
        add_user_item(b, b->ucarry.v[i].key, b->ucarry.v[i].keylen, b->ucarry.v[i].delta, false);
}

/* Sends again, until the deadline, what certainly did not land: an item
 * whose reply was lost (STORE_ERROR) may have been applied. */
static void retry_unavailable(struct store *s, struct batch *b)
{
    size_t n = b->n_items;
    uint64_t backoff = BACKOFF_FIRST_MS;
    while (any_unavailable(b->items, n) && backoff_wait(b->deadline_ms, &backoff)) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (b->items[i].status == STORE_UNAVAILABLE) {
                b->retry[m] = b->items[i];
                b->retry_idx[m++] = i;
            }
        }
        b->retries++;
        store_incr_batch(s, b->retry, m, b->c->cfg.ttl_s);
        for (size_t i = 0; i < m; i++) {
            b->items[b->retry_idx[i]].status = b->retry[i].status;
            b->items[b->retry_idx[i]].value = b->retry[i].value;
        }
    }
}

/* The batch's outcome from its items'. With s (a worker's store), the
 * markers of a batch nothing of which landed are rolled back. */
static void settle(struct store *s, struct batch *b)
{
    b->fresh_ok = true;
    b->fresh_maybe_landed = false;
    for (size_t i = 0; i < b->n_fresh_items; i++) {
        enum store_status st = b->items[i].status;
        if (st != STORE_OK)
            b->fresh_ok = false;
        /* STORE_ERROR: the reply was lost, the increment may have landed. */
        if (st == STORE_OK || st == STORE_ERROR)
            b->fresh_maybe_landed = true;
    }
    if (s != NULL && !b->fresh_ok && !b->fresh_maybe_landed)
        rollback_markers(s, b);
    b->flush_us = util_mono_us() - b->start_us;
}

static void batch_start(struct batch *b)
{
    b->start_us = util_mono_us();
    b->deadline_ms = util_mono_ms() + b->c->cfg.deadline_ms;
    b->retries = 0;
    b->markers_added = b->rolled_back = b->rollback_failures = 0;
}

/* Worker thread: write the batch, retry what certainly did not land until
 * the deadline. */
static void flush_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    batch_start(b);
    add_markers(s, b);
    build_items(b);
    store_incr_batch(s, b->items, b->n_items, b->c->cfg.ttl_s);
    retry_unavailable(s, b);
    settle(s, b);
}

/* Worker thread: a batch whose items are built (its markers, if any, done
 * from the loop) and whose increments could not start from there. */
static void counts_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    store_incr_batch(s, b->items, b->n_items, b->c->cfg.ttl_s);
    retry_unavailable(s, b);
    settle(s, b);
}

/* Worker thread: a batch whose markers were first sent from the loop and
 * some of which met a node that was down: they are retried here, then the
 * increments go. */
static void markers_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    markers_retry(s, b);
    markers_end(b);
    build_items(b);
    counts_job(s, b);
}

/* Worker thread: a batch whose increments were first written from the
 * loop and left items to retry, or markers to roll back. */
static void retry_job(struct store *s, void *arg)
{
    struct batch *b = arg;
    retry_unavailable(s, b);
    settle(s, b);
}

static void arm_timer_us(struct committer *c, uint64_t us)
{
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000),
                         .tv_usec = (suseconds_t)(us % 1000000)};
    evtimer_add(c->timer, &tv);
    c->timer_armed = true;
}

static void arm_timer(struct committer *c, uint32_t ms)
{
    arm_timer_us(c, (uint64_t)ms * 1000);
}

/* How long the next batch must still wait for --batch-interval-us. */
static uint64_t interval_left_us(const struct committer *c)
{
    if (c->cfg.batch_interval_us == 0 || c->draining ||
        c->open->n_waiters >= c->cfg.max_batch_answers)
        return 0;
    uint64_t since = util_mono_us() - c->last_start_us;
    return since >= c->cfg.batch_interval_us ? 0 : c->cfg.batch_interval_us - since;
}

static void flush_done(void *arg);
static void on_async_written(void *arg);
static void on_markers_added(void *arg);

/* Something waits for a batch: answers, or increments to retry. */
static bool has_work(const struct committer *c)
{
    return c->open->fresh.ntouched > 0 || c->carry.ntouched > 0 || c->ucarry.n > 0;
}

static void maybe_drained(struct committer *c)
{
    if (c->draining && c->drained && committer_idle(c)) {
        void (*fn)(void *) = c->drained;
        c->drained = NULL;
        fn(c->drained_arg);
    }
}

/* Appends a per-user increment to the committer's carry; false when full
 * (the increment is dropped: a user total falls short, no answer count). */
static bool ucarry_push(struct committer *c, const char *key, size_t keylen, uint64_t delta)
{
    struct ucarry *u = &c->ucarry;
    if (delta == 0)
        return true;
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        if (cap > USER_CARRY_MAX)
            cap = USER_CARRY_MAX;
        if (u->n >= cap) {
            c->st.user_carry_dropped++;
            return false;
        }
        void *p = realloc(u->v, cap * sizeof(*u->v));
        if (p == NULL) {
            c->st.user_carry_dropped++;
            return false;
        }
        u->v = p;
        u->cap = cap;
    }
    struct ucarry_item *it = &u->v[u->n++];
    memcpy(it->key, key, keylen);
    it->keylen = keylen;
    it->delta = delta;
    return true;
}

static void fail_batch(struct committer *c, struct batch *b)
{
    /* Nothing of it was sent (no marker either): the fresh increments are
     * dropped and their clients told; carried ones stay. */
    counts_merge(&c->carry, &b->carry);
    for (size_t i = 0; i < b->ucarry.n; i++)
        ucarry_push(c, b->ucarry.v[i].key, b->ucarry.v[i].keylen, b->ucarry.v[i].delta);
    b->ucarry.n = 0;
    c->waiting -= b->n_waiters;
    c->st.failed += b->n_waiters;
    for (size_t i = 0; i < b->n_waiters; i++)
        b->waiters[i].fn(b->waiters[i].arg, COMMIT_UNAVAILABLE);
    batch_free(b);
}

/* The batch in flight goes on on the worker thread. Refused (the worker
 * is stopping): done here, blocking, on the loop's own handle if there is
 * one, else the batch fails as never sent (nothing of it was). */
static void to_worker(struct committer *c, struct batch *b, void (*job)(struct store *, void *))
{
    if (worker_submit(c->worker, job, flush_done, b))
        return;
    if (c->async_store != NULL) {
        job(c->async_store, b);
        flush_done(b);
        return;
    }
    log_error("store worker refused a batch counters=%u",
              b->fresh.ntouched + b->carry.ntouched);
    c->inflight = NULL;
    fail_batch(c, b);
}

static void dispatch(struct committer *c)
{
    /* A hint replay's end dispatches what came meanwhile. */
    if (c->inflight != NULL || c->replaying || !has_work(c))
        return;
    struct batch *next = c->spare ? c->spare : batch_new(c);
    struct batch *b = c->open;
    size_t fresh_items =
        c->cfg.no_coalesce ? b->n_waiters * KEYS_PER_ANSWER : b->fresh.ntouched;
    if (next == NULL ||
        !ensure_items(b, fresh_items + b->n_user_items + c->carry.ntouched + c->ucarry.n,
                      b->n_user_items, b->n_recs)) {
        if (next && next != c->spare)
            batch_free(next);
        arm_timer(c, 10); /* out of memory: try again shortly, keep everything */
        return;
    }
    c->spare = NULL;
    c->open = next;
    c->last_start_us = util_mono_us();
    struct counts tmp = b->carry; /* empty */
    b->carry = c->carry;
    c->carry = tmp;
    struct ucarry utmp = b->ucarry; /* empty */
    b->ucarry = c->ucarry;
    c->ucarry = utmp;

    c->inflight = b;
    if (c->inline_store) {
        /* Done on the next turn, so no callback runs inside a submit. */
        flush_job(c->inline_store, b);
        event_active(c->inline_done, EV_TIMEOUT, 0);
        return;
    }
    /* From the loop when the handle can (store_incr_start): the markers
     * first, then, from their end, the increments; the worker takes over
     * only for what sleeps (retries, rollbacks) or where the handle cannot
     * (its backend, a node named by a host name, stale blobs due). */
    if (c->async_store != NULL && !c->stopping) {
        batch_start(b);
        if (b->n_recs > 0) {
            markers_prepare(b);
            if (store_add_start(c->async_store, c->base, b->adds, markers_pending(b),
                                c->cfg.ttl_s, on_markers_added, b)) {
                c->inflight_async = true;
                return;
            }
        } else {
            build_items(b);
            if (store_incr_start(c->async_store, c->base, b->items, b->n_items, c->cfg.ttl_s,
                                 on_async_written, b)) {
                c->inflight_async = true;
                return;
            }
            to_worker(c, b, counts_job);
            return;
        }
    }
    to_worker(c, b, flush_job);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct committer *c = arg;
    c->timer_armed = false;
    dispatch(c);
}

/* The markers of a batch, sent from the loop, have their outcomes. Those
 * that met a node that was down are retried on the worker (retries sleep
 * between rounds); else the increments start from the loop too. */
static void on_markers_added(void *arg)
{
    struct batch *b = arg;
    struct committer *c = b->c;
    c->inflight_async = false;
    if (markers_take(b) && util_mono_ms() < b->deadline_ms) {
        to_worker(c, b, markers_job);
        return;
    }
    markers_end(b);
    build_items(b);
    if (!c->stopping && store_incr_start(c->async_store, c->base, b->items, b->n_items,
                                         c->cfg.ttl_s, on_async_written, b)) {
        c->inflight_async = true;
        return;
    }
    to_worker(c, b, counts_job);
}

/* The first write of a batch's increments, run on the loop, is done. What
 * did not land for certain is retried on the worker (retries sleep between
 * rounds), and so are the rollbacks of a batch nothing of which landed. */
static void on_async_written(void *arg)
{
    struct batch *b = arg;
    struct committer *c = b->c;
    c->inflight_async = false;
    if (any_unavailable(b->items, b->n_items) && util_mono_ms() < b->deadline_ms) {
        to_worker(c, b, retry_job);
        return;
    }
    settle(NULL, b);
    if (!b->fresh_ok && !b->fresh_maybe_landed && b->markers_added > 0) {
        to_worker(c, b, retry_job); /* settles again, with the markers' rollback */
        return;
    }
    flush_done(b);
}

static void on_hints_replayed(void *arg)
{
    struct committer *c = arg;
    c->inflight_async = false;
    c->replaying = false;
    dispatch(c);
    maybe_drained(c);
}

void committer_replay_hints(struct committer *c)
{
    if (c->async_store == NULL || c->stopping || c->inflight != NULL || c->inflight_async)
        return;
    if (store_incr_start(c->async_store, c->base, NULL, 0, c->cfg.ttl_s, on_hints_replayed, c))
        c->inflight_async = c->replaying = true;
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
    bool fresh_ok = b->fresh_ok, fresh_maybe_landed = b->fresh_maybe_landed;
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
        if (b->item_ids[i] == USER_ITEM)
            ucarry_push(c, b->items[i].key, b->items[i].keylen, b->items[i].delta);
        else
            counts_add(&c->carry, b->item_ids[i], b->items[i].delta);
        if (is_fresh)
            c->st.carried_keys++;
    }
    if (!fresh_ok)
        log_warn("batch not confirmed counters=%zu answers=%zu carried=%u retries=%llu", nf,
                 b->n_waiters, c->carry.ntouched, (unsigned long long)b->retries);

    /* The totals the store returned, for the fans lists: only where both
     * counters of the answer were confirmed together. */
    if (c->cfg.on_user_totals != NULL) {
        for (size_t i = 0; i < b->n_recs; i++) {
            const struct user_rec *r = &b->recs[i];
            if (r->item == NO_ITEM || b->items[r->item].status != STORE_OK ||
                b->items[r->item + 1].status != STORE_OK)
                continue;
            c->cfg.on_user_totals(c->cfg.totals_arg, r->user, b->items[r->item].value,
                                  b->items[r->item + 1].value);
        }
    }

    c->st.batches++;
    c->st.batch_keys += b->n_items;
    c->st.store_retries += b->retries;
    c->st.batch_answers += b->n_waiters;
    c->st.markers_added += b->markers_added;
    c->st.rolled_back += b->rolled_back;
    c->st.rollback_failures += b->rollback_failures;
    metrics_hist_add(&c->st.flush_hist, b->flush_us);
    c->waiting -= b->n_waiters;

    size_t n = b->n_waiters;
    b->n_waiters = 0;
    b->n_recs = 0;
    b->n_user_items = 0;
    b->ucarry.n = 0;
    counts_clear(&b->fresh);
    counts_clear(&b->carry);
    for (size_t i = 0; i < n; i++) {
        enum commit_result r = fresh_ok             ? COMMIT_OK
                               : fresh_maybe_landed ? COMMIT_UNCONFIRMED
                                                    : COMMIT_UNAVAILABLE;
        if (b->waiters[i].refused == REFUSED_DUPLICATE)
            r = COMMIT_DUPLICATE;
        else if (b->waiters[i].refused == REFUSED_UNAVAILABLE)
            r = COMMIT_UNAVAILABLE;
        if (r == COMMIT_OK)
            c->st.acked++;
        else if (r == COMMIT_DUPLICATE)
            c->st.duplicates++;
        else
            c->st.failed++;
        if (r == COMMIT_UNCONFIRMED)
            c->st.maybe_counted++;
        b->waiters[i].fn(b->waiters[i].arg, r);
    }

    if (c->spare == NULL)
        c->spare = b;
    else
        batch_free(b);

    /* What filled up while this batch was out goes now (it has waited a
     * whole round trip already), or once the batch interval is over. */
    uint64_t left = has_work(c) ? interval_left_us(c) : 0;
    if (left == 0)
        dispatch(c);
    else if (!c->timer_armed)
        arm_timer_us(c, left);
    maybe_drained(c);
}

struct committer *committer_create(struct event_base *base, struct worker *worker,
                                   struct store *inline_store, struct store *async_store,
                                   const struct eventfile *ef, const struct commit_config *cfg)
{
    struct committer *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->worker = worker;
    c->inline_store = inline_store;
    c->async_store = async_store;
    c->ef = ef;
    c->cfg = *cfg;
    keys_epoch_prefix(c->counter_prefix, ef->name, cfg->pool_epoch);
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
                                     const struct commit_user *user, commit_done_fn done,
                                     void *arg)
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
    if (user != NULL) {
        size_t ulen = strnlen(user->user, FANS_USER_MAX + 1);
        if (ulen == 0 || ulen > FANS_USER_MAX)
            return COMMIT_OVERLOADED; /* the parser never lets one through */
        if (b->n_recs == b->cap_recs) {
            size_t cap = b->cap_recs ? b->cap_recs * 2 : 64;
            struct user_rec *r = realloc(b->recs, cap * sizeof(*r));
            if (r == NULL)
                return COMMIT_OVERLOADED;
            b->recs = r;
            b->cap_recs = cap;
        }
        struct user_rec *r = &b->recs[b->n_recs++];
        memset(r, 0, sizeof(*r));
        memcpy(r->user, user->user, ulen);
        r->question = user->question;
        r->waiter = (uint32_t)b->n_waiters;
        r->right = user->right;
        r->ms = user->ms;
        r->item = NO_ITEM;
        if (user->right)
            b->n_user_items += 2;
    }
    for (int i = 0; i < KEYS_PER_ANSWER; i++) {
        counts_add(&b->fresh, ids[i], 1);
        b->answer_ids[b->n_waiters][i] = ids[i];
    }
    b->waiters[b->n_waiters++] = (struct waiter){.fn = done, .arg = arg};
    c->waiting++;
    c->st.increments += KEYS_PER_ANSWER;

    if (c->inflight == NULL) {
        if (b->n_waiters >= c->cfg.max_batch_answers) {
            arm_timer(c, 0);
        } else if (!c->timer_armed) {
            uint64_t left = interval_left_us(c);
            uint64_t flush_us = (uint64_t)c->cfg.flush_ms * 1000;
            arm_timer_us(c, left > flush_us ? left : flush_us);
        }
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
    return c->inflight == NULL && c->open->fresh.ntouched == 0 && c->carry.ntouched == 0 &&
           c->ucarry.n == 0;
}

void committer_get_stats(const struct committer *c, struct commit_stats *out)
{
    *out = c->st;
    out->waiting = c->waiting;
    /* The remainder is resent at once, so while a node stays down it sits
     * in the batch in flight: count it there too (the job only reads it). */
    out->carry = c->carry.ntouched + c->ucarry.n +
                 (c->inflight ? c->inflight->carry.ntouched + c->inflight->ucarry.n : 0);
    out->open_answers = c->open ? c->open->n_waiters : 0;
}

/* Tells every client still waiting in b that its answer was not confirmed:
 * r is COMMIT_UNAVAILABLE for a batch never sent, COMMIT_UNCONFIRMED for one
 * written but not reported. */
static void answer_unconfirmed(struct committer *c, struct batch *b, enum commit_result r)
{
    if (b == NULL)
        return;
    size_t n = b->n_waiters;
    b->n_waiters = 0;
    c->waiting -= n;
    c->st.failed += n;
    if (r == COMMIT_UNCONFIRMED)
        c->st.maybe_counted += n;
    for (size_t i = 0; i < n; i++)
        b->waiters[i].fn(b->waiters[i].arg, r);
}

void committer_stop(struct committer *c)
{
    if (c == NULL)
        return;
    c->stopping = true;
    if (c->inflight_async)
        store_run_wait(c->async_store); /* runs the run's done callback */
}

void committer_free(struct committer *c)
{
    if (c == NULL)
        return;
    /* Without a drain (a forced stop), answers still open or written inline
     * but not yet reported get their 503 rather than no reply at all. */
    answer_unconfirmed(c, c->open, COMMIT_UNAVAILABLE);
    bool inflight_ours = c->inflight && (c->inline_store || (c->inflight_async && !c->replaying));
    if (inflight_ours)
        answer_unconfirmed(c, c->inflight, COMMIT_UNCONFIRMED);
    if (c->timer)
        event_free(c->timer);
    if (c->inline_done)
        event_free(c->inline_done);
    if (inflight_ours)
        batch_free(c->inflight); /* an async write's events go with its store handle */
    batch_free(c->open);
    batch_free(c->spare);
    counts_free(&c->carry);
    free(c->ucarry.v);
    free(c);
}
