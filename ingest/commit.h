/*
 * Group commit of answer increments. Accepted answers add their keys to the
 * open batch's delta table and wait; one batch at a time is written to the
 * store by the loop's worker thread; when the store has confirmed it, every
 * waiter of the batch is answered at once. While a batch is in flight the
 * next one fills, so the batch size adapts to the load: one answer alone
 * waits one store round trip, a burst shares each round trip among thousands.
 *
 * Failure (DESIGN.md guarantee 7): the increments a node certainly did not
 * apply (STORE_UNAVAILABLE) are retried with backoff until deadline_ms; past
 * it, waiters get COMMIT_UNAVAILABLE. If nothing of the batch's fresh
 * increments may have landed, they are dropped (the client's retry is then
 * exact); otherwise the unapplied remainder is carried into later batches
 * until it lands, so no answer stays counted in part. An increment whose
 * reply was lost (STORE_ERROR: maybe applied) is never resent, since that
 * could count it twice; it is counted in the uncertain metric instead.
 */
#ifndef LT_COMMIT_H
#define LT_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

struct event_base;
struct worker;

enum commit_result {
    COMMIT_OK = 0,      /* every increment confirmed by the store */
    COMMIT_UNAVAILABLE, /* the store did not confirm before the deadline */
};

/* Submission refused: nothing was counted. */
enum commit_refusal {
    COMMIT_ACCEPTED = 0,
    COMMIT_OVERLOADED, /* too many answers waiting */
    COMMIT_DRAINING,   /* shutting down */
};

typedef void (*commit_done_fn)(void *arg, enum commit_result r);

struct commit_config {
    uint32_t flush_ms;        /* longest an answer waits before its batch is sent */
    uint32_t deadline_ms;     /* retry a batch this long before answering 503 */
    size_t max_batch_keys;    /* distinct keys per batch */
    size_t max_waiting;       /* answers waiting for a confirmation, all batches */
    uint32_t ttl_s;           /* TTL of every counter */
};

struct commit_stats {
    uint64_t batches;
    uint64_t batch_keys;      /* distinct keys written, summed over batches */
    uint64_t increments;      /* answer increments folded into batches */
    uint64_t acked;
    uint64_t failed;          /* answered COMMIT_UNAVAILABLE */
    uint64_t store_retries;
    uint64_t carried_keys;    /* keys carried to a later batch, ever */
    uint64_t uncertain;       /* increments whose reply was lost: maybe applied, never resent */
    uint64_t last_flush_us;
    size_t waiting;           /* gauge */
    size_t carry;             /* gauge: keys waiting to be retried */
    size_t open_keys;         /* gauge: keys in the open batch */
};

struct committer;

/* worker is borrowed: the committer submits its flushes there. */
struct committer *committer_create(struct event_base *base, struct worker *worker,
                                   const struct commit_config *cfg);

/* Queues the answer's increments; done is called exactly once, later, on the
 * loop's thread (never from inside this call) unless a refusal is returned. */
enum commit_refusal committer_submit(struct committer *c, const struct answer_keys *keys,
                                     commit_done_fn done, void *arg);

/* Stops taking answers, flushes everything, calls drained once nothing is
 * pending (open, in flight or carried). */
void committer_drain(struct committer *c, void (*drained)(void *arg), void *arg);

/* Nothing open, in flight or carried. */
bool committer_idle(const struct committer *c);

void committer_get_stats(const struct committer *c, struct commit_stats *out);

/* Call only when idle or after worker_stop (waiters are then dropped). */
void committer_free(struct committer *c);

#endif
