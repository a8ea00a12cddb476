/*
 * Retiring a node from a memcached:// or redis:// pool during an event
 * (getting smaller; pool_record.h has the records). livetally-aggregate
 * --retire HOST:PORT, run with a --backend that still holds the node:
 *
 *   1. records the next epoch, the newest one's hosts without the node
 *      (once: a rerun finds it);
 *   2. waits until no ingest writes in an earlier epoch: each ingest sets
 *      {event}:pool:{e}:writing every few seconds, so an ingest started
 *      before step 1 (it writes in the old epoch, node included) holds the
 *      fold back until it is restarted and joins the new epoch;
 *   3. folds: every counter of the epochs before the new one (or of the
 *      last fold's carry and the epochs after it), read as the aggregator
 *      reads it (the maximum of the replicas), summed over those epochs
 *      and SET as the new epoch's carry counter. A set, not an increment:
 *      the epochs folded no longer change, so a second run, or a run after
 *      one cut halfway (kill -9), writes the same values;
 *   4. reads the folded epochs again (a change: something still wrote, no
 *      marker) and marks {event}:pool:{e}:folded on every node.
 * From the marker on, an aggregator started reads the carry and the
 * epochs from the new one on, not the folded ones: the node can go.
 *
 * Only a node added during the event can be retired: epoch 0's nodes hold
 * the question states, users and snapshots, which are not counters.
 */
#ifndef LT_AGG_RETIRE_H
#define LT_AGG_RETIRE_H

#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "store.h"

enum agg_retire_result {
    AGG_RETIRE_DONE = 0,   /* folded and marked: the node may be stopped */
    AGG_RETIRE_FAILED = 1, /* refused or a store error: msg says which */
    AGG_RETIRE_WAIT = 3,   /* an ingest still writes a folded epoch: restart it, run again */
};

struct agg_retire_config {
    const char *node;      /* HOST:PORT, spelled as in --backend */
    uint32_t settle_ms;    /* between the two looks for writers */
    uint32_t pause_ms;     /* after every AGG_RETIRE_CHUNK carry writes; 0 in
                            * production (a test kills the fold in the middle) */
};
#define AGG_RETIRE_CHUNK 64u

/* The whole retirement on s (already joined to the pool); msg gets the
 * line to print. */
enum agg_retire_result agg_retire(const struct eventfile *ef, struct store *s,
                                  const struct agg_retire_config *cfg, char *msg, size_t msglen);

#endif
