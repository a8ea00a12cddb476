/*
 * The aggregator's watch over the nodes of a pool: a node that came back
 * empty gets its counts back, a copy of a counter that fell behind its
 * replicas is written back up. Only for memcached:// and redis:// pools
 * (store_node_count > 0); memory: and redis-cluster:// skip all of it.
 *
 * Why the aggregator: it reads every copy of every counter every pass, so it
 * is the one place that knew what a node held a moment before it was lost.
 *
 * Incarnations. Each node holds {event}:node, a random id that the first
 * aggregator to find it missing adds (it never expires: an id that expired
 * while the counters live would look like a restart). A restart (or a
 * flush) loses it: a new id is a reset (counters lower than before confirm
 * it in the log, but are no condition: the hints an ingest replays to a node
 * back empty can lift all of its counters past their old values). An id
 * evicted alone would pass for a reset too: a pool must not evict. A reset
 * is counted, logged and listed in the
 * snapshot's warnings for AGG_REPAIR_WARN_MS, and every question, settled
 * ones too, is read again the next pass (so is every question when a node
 * answers again after a failure).
 *
 * Restores (every replicas). One aggregator that knew the old incarnation
 * wins the add of {event}:node:claim:{new id} on the node (its value is the
 * aggregator's own id, so an add whose reply was lost is read back), and
 * adds to each counter copy on the node the value it read before the
 * reset (replicas=1 the aggregator's count, whose only copy that was;
 * replicas>=2 that copy's last read in a pass that began and ended on
 * the node's old id, read again after every pass's reads: a node can
 * restart between the two, get its hints replayed, and read higher than
 * before without a drop): the node then holds the old count
 * plus what came since, the same for every reader (a second aggregator,
 * one restarted later). With replicas>=2 the other replicas may not hold
 * it all: a copy that missed increments whose outcome was unknown (a cut
 * link: no hint) or whose hints died with a killed ingest is behind for
 * good, and a node back empty raised only to its replicas would take
 * those counts with it; the aggregators' last read is the third copy.
 * Every counter of the node, not only those that read lower: one written
 * again since the restart may read higher than its old value, and lost it
 * all the same
 * (the price: a node that evicts the id but was not restarted gets its
 * live counters counted twice; a pool must not evict).
 * The amounts are fixed when the reset is confirmed, and each chunk of
 * restores is sent only after the node was seen to still hold the claimed
 * incarnation. What reached the node after that aggregator's last read and
 * before the reset (at most one interval of writes) is lost with
 * replicas=1, and the warning says so; with replicas>=2 the other replicas
 * hold it. An aggregator that loses the claim keeps its grow-only
 * maximum until the restore lands. A node that restarts while no
 * aggregator runs is not restored: nobody saw its counts. A question with a
 * restore due does not settle.
 *
 * replicas>=2: then read repair of the nodes that came back empty (what
 * reached the node after the last read and before the reset, and what it
 * missed since). The restorer adds {event}:node:restored:{id} to the node
 * once every restore is sent; no aggregator repairs the node's copies
 * before it is there (a raise to a replica's value before the restore
 * landed would count the restored amount twice), or, should the restorer
 * die before, AGG_REPAIR_TAKEOVER_MS after the reset. A copy on such
 * a node lower than the largest copy of its counter is raised by the
 * difference, with one increment on its node, when
 * every copy of the counter has read the same for AGG_REPAIR_UP_MS (nothing
 * in flight, so the difference is exactly what that copy missed) and its
 * node has answered every read for as long (an ingest replays its hints for
 * a node within its backoff, 2 s at most, plus its 1 s replay timer of the
 * node answering again; a hint landing after a repair would count twice on
 * that copy, and the read takes the maximum). A node behind without having
 * lost its data (down a while, a flaky link) is not repaired: the hints an
 * ingest holds for it may land any time, and the maximum of the replicas
 * covers what it misses. Two aggregators that see the
 * same copy meet on the add of {event}:rr:{id}:{value}:{counter} on its
 * node: it is raised once; a raise whose claim is ours but that was not
 * sent is sent again while the copy still reads that value. During a burst
 * the hot counters are never stable; their copies are repaired in the
 * quiet after it, at most AGG_REPAIR_MAX a pass, and a question with a copy
 * behind or unread does not settle. Until then the other replicas hold the
 * count.
 */
#ifndef LT_AGG_REPAIR_H
#define LT_AGG_REPAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg_keys.h"
#include "eventfile.h"
#include "store.h"

#define AGG_REPAIR_UP_MS 5000u      /* copies and their node stable this long before a repair */
#define AGG_REPAIR_MAX 20000u       /* copies repaired per pass */
#define AGG_REPAIR_TAKEOVER_MS 30000u /* another aggregator's restore waited for at most */
#define AGG_REPAIR_WARN_MS 600000u  /* a reset stays in the warnings this long */
#define AGG_REPAIR_WARNING_MAX 640u /* bytes of one warning line, NUL included */

struct agg_repair;

/* For the nodes and replicas of s (store_node_count > 0). ef and keys are
 * borrowed and must outlive it. NULL when memory runs out. */
struct agg_repair *agg_repair_create(const struct eventfile *ef, const struct agg_keys *keys,
                                     const struct store *s);
void agg_repair_free(struct agg_repair *r);

/* Pass step 1, before any counter is read: reads each node's incarnation.
 * true when a node shows a new one: the caller then reads every question. */
bool agg_repair_check_nodes(struct agg_repair *r, struct store *s, uint64_t mono_ms);

/* Pass step 2: reads keys first..first+n-1 from every replica, keeps each
 * copy, and writes each key's largest copy to read[first..]. STORE_OK when
 * every key had a copy read (a node down is not an error while a replica
 * answers); STORE_UNAVAILABLE when one had none; STORE_ERROR when a copy is
 * not a counter. */
enum store_status agg_repair_read(struct agg_repair *r, struct store *s, size_t first, size_t n,
                                  uint64_t *read);

/* Pass step 3, once every read of the pass succeeded (reading: per
 * question, read this pass): confirms resets, restores (replicas=1) and
 * repairs (replicas>=2). kept: the aggregator's values before this pass;
 * what a restore added is added to read as well. lagging (per question) is
 * set for a question with a copy still behind. */
void agg_repair_settle(struct agg_repair *r, struct store *s, const bool *reading,
                       const uint64_t *kept, uint64_t *read, bool *lagging, uint64_t wall_ms,
                       uint64_t mono_ms);

/* The warning lines for the snapshot (resets of the last AGG_REPAIR_WARN_MS,
 * nodes unreadable this pass), at most max. */
size_t agg_repair_warnings(const struct agg_repair *r, char (*out)[AGG_REPAIR_WARNING_MAX],
                           size_t max, uint64_t wall_ms);

struct agg_repair_stats {
    uint64_t node_resets;     /* nodes found back empty */
    uint64_t keys_restored;   /* counters written back after a reset (replicas=1) */
    uint64_t counts_restored; /* the counts those carried */
    uint64_t restore_lost;    /* restores whose outcome is unknown (not resent) */
    uint64_t keys_repaired;   /* copies raised by read repair (replicas>=2) */
    uint64_t repair_backlog;  /* copies behind their replicas after the last pass */
    uint64_t copies_behind;   /* those and the copies behind on live nodes (not repaired) */
    uint64_t nodes_down;      /* nodes unreadable in the last pass */
};
void agg_repair_get_stats(const struct agg_repair *r, struct agg_repair_stats *out);

#endif
