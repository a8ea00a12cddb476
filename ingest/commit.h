/*
 * Group commit of answer increments. Accepted answers add their four
 * logical counters (keys.h) to the open batch and wait; one batch at a time
 * is written to the store by the loop's worker thread, each counter with one
 * increment on a shard drawn for that write; when the store has confirmed
 * the batch, every waiter is answered at once. While a batch is in flight
 * the next one fills, so the batch size follows the load: one answer alone
 * waits one store round trip, a burst shares each round trip among
 * thousands, and the store sees one increment per counter per batch.
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

#include "eventfile.h"
#include "keys.h"
#include "metrics.h"

struct event_base;
struct worker;
struct store;

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
    uint32_t flush_ms;         /* how long a batch gathers answers when nothing is in
                                * flight (0: written on the loop's next turn); while a
                                * batch is out the next one gathers anyway */
    bool no_coalesce;          /* every answer's increments written as they came
                                * (benchmarks: what coalescing buys) */
    uint32_t deadline_ms;      /* retry a batch this long before answering 503 */
    size_t max_batch_answers;  /* answers per batch */
    size_t max_waiting;        /* answers waiting for a confirmation, all batches */
    uint32_t ttl_s;            /* TTL of every counter */
};

struct commit_stats {
    uint64_t batches;
    uint64_t batch_keys;      /* keys written, summed over batches */
    uint64_t increments;      /* answer increments folded into batches */
    uint64_t acked;
    uint64_t failed;          /* answered COMMIT_UNAVAILABLE */
    uint64_t store_retries;
    uint64_t carried_keys;    /* counters carried to a later batch, ever */
    uint64_t uncertain;       /* increments whose reply was lost: maybe applied, never resent */
    uint64_t batch_answers;   /* answers in the batches written */
    struct metrics_hist flush_hist; /* batch write durations */
    uint64_t waiting;         /* gauge */
    uint64_t carry;           /* gauge: counters waiting to be retried */
    uint64_t open_answers;    /* gauge: answers in the batch being filled */
};

struct committer;

/* ef and worker are borrowed: the committer submits its flushes to worker.
 * inline_store (borrowed, may be NULL) is an in-process store fast enough to
 * write to from the loop itself: no thread hand-off per batch. */
struct committer *committer_create(struct event_base *base, struct worker *worker,
                                   struct store *inline_store, const struct eventfile *ef,
                                   const struct commit_config *cfg);

/* Queues an answer's counters (keys_counters_for_answer); done is called
 * exactly once, later, on the loop's thread (never from inside this call)
 * unless a refusal is returned. */
enum commit_refusal committer_submit(struct committer *c, const uint32_t ids[KEYS_PER_ANSWER],
                                     commit_done_fn done, void *arg);

/* Stops taking answers, flushes everything, calls drained once nothing is
 * pending (open, in flight or carried). */
void committer_drain(struct committer *c, void (*drained)(void *arg), void *arg);

/* Nothing open, in flight or carried. */
bool committer_idle(const struct committer *c);

void committer_get_stats(const struct committer *c, struct commit_stats *out);

/* Call when idle, or after worker_stop (whose callbacks answered everyone). */
void committer_free(struct committer *c);

#endif
