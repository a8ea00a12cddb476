/*
 * The aggregator: every interval, read every counter of the event (the key
 * scheme enumerates them: no key listing needed), sum the shards, check that
 * the breakdowns add up, build the snapshot JSON of API.md section 4 and
 * publish it (snapstore.h).
 *
 * Grow-only rule: a counter that reads lower than it did in an earlier pass
 * (the store lost data) keeps its earlier value, and the snapshot carries a
 * "warnings" entry; totals never go backwards. On a pool, a node that came
 * back empty is restored and copies behind their replicas are repaired
 * (agg_repair.h).
 */
#ifndef LT_AGGREGATE_H
#define LT_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "store.h"

struct aggregator;

/* Keys are read in multi-gets of this many (the store pipelines them). */
#define AGGREGATE_BATCH 1000u

/* A question closed this long ago gets one last read, then its sums are
 * cached and its keys are read only every AGGREGATE_SETTLED_REREAD_MS:
 * answers still in flight at close time (acknowledged before it, or
 * pending retries) have had time to land. Not all of them: an increment a
 * slow replica gets late (a hint replay, a drained connection) is on its
 * partner already, but when that partner came back empty and was restored
 * to what the aggregators last read, the late copy is the only full one;
 * the re-read finds it (measured: Redis nights of the rehearsal short by
 * up to 7% of a closed question's breakdowns without it). */
#define AGGREGATE_DEFAULT_GRACE_MS 10000u
#define AGGREGATE_SETTLED_REREAD_MS 5000u

/* The ultimate fans (fans.h): at most this many ingest lists are read per
 * pass ({event}:fans:1..N, N from {event}:fans:seq; one store get each),
 * and at most this many candidates are checked against their markers (one
 * get per closed question each). A slot past the cap is ignored (logged):
 * with one slot per ingest thread that is 4096 threads. */
#define AGGREGATE_FANS_MAX_SLOTS 4096u
#define AGGREGATE_FANS_MAX_CHECKS 1000u

/* ef is borrowed and must outlive the aggregator. Builds the key list of
 * every question once (they never change). NULL when memory runs out or the
 * event has more counters than the aggregator handles (logged). */
struct aggregator *aggregator_create(const struct eventfile *ef);
/* The same for a pool whose newest epoch is pool_epoch (pool_record.h):
 * every pass reads and adds the counters of epochs 0 .. pool_epoch, and
 * now and then asks the pool whether it grew past it (a snapshot note and
 * a log line say so: the counters of a newer epoch are not read until the
 * aggregator is restarted with its list). */
struct aggregator *aggregator_create_epochs(const struct eventfile *ef, uint32_t pool_epoch);
/* The same where pool->folded may be set: the fold's carry counters stand
 * for the epochs before it (pool_record.h). A fold made while it runs is
 * said in the snapshot's warnings: it goes on reading the folded epochs,
 * right while their nodes are up, until restarted. */
struct pool_view;
struct aggregator *aggregator_create_pool(const struct eventfile *ef, const struct pool_view *pool);
void aggregator_free(struct aggregator *a);

/* Changes the settle period of closed questions (default above). */
void aggregator_set_grace_ms(struct aggregator *a, uint64_t grace_ms);

/* One pass at wall time now_ms: read, sum, build, publish. Either the whole
 * snapshot is published or nothing is: a failed read or publish returns its
 * status and counts a failed pass. The ultimate fans are the exception: when
 * their reads fail the snapshot keeps the previous pass's list (logged,
 * counted in fans_failures) rather than holding back the counts. The generation continues from the one in
 * the store (a restarted aggregator, or a second one, never reuses one).
 * Not thread-safe: one thread per aggregator. */
enum store_status aggregator_pass(struct aggregator *a, struct store *s, uint64_t now_ms);

struct aggregator_stats {
    uint64_t generation;     /* of the last published snapshot */
    uint64_t passes;         /* attempted, failed ones included */
    uint64_t failed_passes;
    uint64_t keys_read;      /* in the last pass */
    uint64_t pass_us;        /* duration of the last pass */
    uint64_t warnings;       /* counter reads lower than before, summed over all passes */
    uint64_t check_failures; /* passes whose breakdowns did not add up */
    uint64_t keys_total;     /* counter keys of the event */
    uint64_t questions_settled; /* closed questions whose sums are cached */
    uint64_t fans_lists;     /* ingest top lists read in the last pass */
    uint64_t fans_checks;    /* candidates checked against their markers, last pass */
    uint64_t fans_failures;  /* passes that kept the previous ultimate fans */
    /* pools only (agg_repair.h) */
    uint64_t node_resets;    /* store nodes found back empty */
    uint64_t keys_restored;  /* counters written back after a reset (replicas=1) */
    uint64_t counts_restored;
    uint64_t restores_lost;  /* restores whose outcome is unknown (not resent) */
    uint64_t keys_repaired;  /* copies raised by read repair (replicas>=2) */
    uint64_t repair_backlog; /* copies behind their replicas after the last pass */
    uint64_t copies_behind;  /* the same, with the copies no repair is due for */
    uint64_t nodes_down;     /* store nodes unreadable in the last pass */
};
void aggregator_get_stats(const struct aggregator *a, struct aggregator_stats *out);

#endif
