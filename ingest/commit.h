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
 * it, if nothing of the batch's fresh increments may have landed, they are
 * dropped and the waiters get COMMIT_UNAVAILABLE (the client's retry is then
 * exact); otherwise the waiters get COMMIT_UNCONFIRMED and the unapplied
 * remainder is carried into later batches until it lands, so no answer
 * stays counted in part. The two must differ: a client without a user can
 * only retry the first without counting twice. An increment whose
 * reply was lost (STORE_ERROR: maybe applied) is never resent, since that
 * could count it twice; it is counted in the uncertain metric instead.
 *
 * One answer per user (keys.h). An answer that carries a user travels with
 * its batch as a record; the batch's job first adds each record's marker
 * {event}:u:{user}:q{Q} (add-if-absent, one store call each, retried like
 * the increments while its node is down):
 *   - added: the answer is counted, and a right one also increments the
 *     user's :right and :ms counters, whose new values go to on_user_totals;
 *   - already there: COMMIT_DUPLICATE, its counters are taken out of the
 *     batch before anything is written;
 *   - not added (store down past the deadline): COMMIT_UNAVAILABLE, nothing
 *     of it is counted, so the client's retry is exact.
 * Rollback: when the batch's increments then fail so that nothing of them
 * can have landed (the batch is dropped, its waiters get 503), the markers
 * it added are deleted again, so the clients' retries are not refused as
 * duplicates. When part landed, the rest is carried and the answers will be
 * complete, so the markers stay: a retry is then a duplicate. A delete that
 * fails too (the marker's node is down as well) leaves the marker: that
 * retry is refused and the answer lost (counted: rollback_failures). The
 * marker and the increments are separate store calls, so a crash between
 * them leaves a marker without counts, with the same effect.
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
    COMMIT_UNAVAILABLE, /* not confirmed before the deadline, and nothing of it sent */
    COMMIT_DUPLICATE,   /* the user had answered this question: nothing counted */
    COMMIT_UNCONFIRMED, /* not confirmed before the deadline, but some of the batch
                         * may have landed: the rest is carried, so the answer may
                         * be counted (a retry without a user may count it twice) */
};

/* The user part of an answer. */
struct commit_user {
    const char *user;  /* (ref, copied by submit) 1..64 of [A-Za-z0-9_.:-] */
    uint32_t question; /* question id */
    bool right;
    uint64_t ms;       /* answer time: receive time - the question's open time */
};

/* The user's totals after a right answer, as the store returned them (loop
 * thread). Only answers whose two counters were confirmed in one batch. */
typedef void (*commit_totals_fn)(void *arg, const char *user, uint64_t right,
                                 uint64_t total_ms);

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
    uint32_t batch_interval_us; /* at least this long between the starts of two
                                 * batches: under load a batch gathers that long,
                                 * an answer after a quiet spell goes at once
                                 * (0: no minimum). A full batch or a drain does
                                 * not wait. Needs a loop with precise timers
                                 * (EVENT_BASE_FLAG_PRECISE_TIMER): epoll counts
                                 * whole milliseconds */
    bool no_coalesce;          /* every answer's increments written as they came
                                * (benchmarks: what coalescing buys) */
    uint32_t deadline_ms;      /* retry a batch this long before answering 503 */
    size_t max_batch_answers;  /* answers per batch */
    size_t max_waiting;        /* answers waiting for a confirmation, all batches */
    uint32_t ttl_s;            /* TTL of every counter and marker */
    uint32_t pool_epoch;       /* counters are written in this epoch of the pool
                                * (pool_record.h): "{event}~{e}:" keys from 1 on */
    commit_totals_fn on_user_totals; /* may be NULL */
    void *totals_arg;
};

struct commit_stats {
    uint64_t batches;
    uint64_t batch_keys;      /* keys written, summed over batches */
    uint64_t increments;      /* answer increments folded into batches */
    uint64_t acked;
    uint64_t failed;          /* answered COMMIT_UNAVAILABLE or COMMIT_UNCONFIRMED */
    uint64_t maybe_counted;   /* of those, COMMIT_UNCONFIRMED */
    uint64_t store_retries;
    uint64_t carried_keys;    /* counters carried to a later batch, ever */
    uint64_t uncertain;       /* increments whose reply was lost: maybe applied, never resent */
    uint64_t batch_answers;   /* answers in the batches written */
    uint64_t duplicates;      /* answered COMMIT_DUPLICATE */
    uint64_t markers_added;   /* per-user markers added */
    uint64_t rolled_back;     /* markers deleted again: nothing of their batch landed */
    uint64_t rollback_failures; /* markers that could not be deleted (their answers are lost) */
    uint64_t user_carry_dropped; /* per-user increments dropped: the carry was full */
    struct metrics_hist flush_hist; /* batch write durations */
    uint64_t waiting;         /* gauge */
    uint64_t carry;           /* gauge: counters waiting to be retried */
    uint64_t open_answers;    /* gauge: answers in the batch being filled */
};

struct committer;

/* ef and worker are borrowed: the committer submits its flushes to worker.
 * inline_store (borrowed, may be NULL) is an in-process store fast enough to
 * write to from the loop itself: no thread hand-off per batch.
 * async_store (borrowed, may be NULL) is the loop's own handle on a network
 * store: a batch without users is first written from the loop with
 * store_incr_start (no thread hand-off either) when the handle can; its
 * retries, and batches with users, go to the worker. */
struct committer *committer_create(struct event_base *base, struct worker *worker,
                                   struct store *inline_store, struct store *async_store,
                                   const struct eventfile *ef, const struct commit_config *cfg);

/* Queues an answer's counters (keys_counters_for_answer), with its user part
 * or NULL; done is called exactly once, later, on the loop's thread (never
 * from inside this call) unless a refusal is returned. */
enum commit_refusal committer_submit(struct committer *c, const uint32_t ids[KEYS_PER_ANSWER],
                                     const struct commit_user *user, commit_done_fn done,
                                     void *arg);

/* Stops taking answers, flushes everything, calls drained once nothing is
 * pending (open, in flight or carried). */
void committer_drain(struct committer *c, void (*drained)(void *arg), void *arg);

/* Nothing open, in flight or carried. */
bool committer_idle(const struct committer *c);

void committer_get_stats(const struct committer *c, struct commit_stats *out);

/* With replicas, the increments a replica missed are replayed in front of
 * the next batch written from the loop's handle; between two questions
 * there may be none for minutes, so the caller's timer calls this: when no
 * batch is out, the hints due go from the loop in a run of their own. */
void committer_replay_hints(struct committer *c);

/* Before worker_stop, with the loop no longer running: a batch being
 * written from the loop is driven to its end here (its commands may have
 * reached the store: its answers must get the truth), and no batch starts
 * from the loop any more, so worker_stop's callbacks finish everything on
 * the worker. NULL is a no-op. */
void committer_stop(struct committer *c);

/* Call when idle, or after committer_stop and worker_stop (whose callbacks
 * answered everyone). */
void committer_free(struct committer *c);

#endif
