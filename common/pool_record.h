/*
 * The pool an event's counters are placed on, recorded in the pool itself,
 * as a history of epochs: a memcached:// or redis:// pool can grow during
 * an event.
 *
 * A pool places each key by the ketama ring of its node list. A list that
 * grows mid-event moves part of the keys to the new nodes, and the counts
 * already on their old owners would be read no more (3 memcached, 3,000
 * answers, a 4th node added by a rolling restart, 3,000 more: the dashboard
 * showed about 5,140 of 6,000). So each list an event has run on is an
 * epoch: epoch 0 is the first list, each longer list the next epoch.
 * Counters written in epoch e >= 1 carry "~e" after the event name
 * (keys.h) and are placed by epoch e's ring; every other key (question
 * states, users, snapshots, fans) by epoch 0's ring, so growing never
 * moves them. A writer writes in the newest epoch it knows; the aggregator
 * reads every epoch's counters and adds them (the maximum of the replicas
 * inside an epoch, as always). An ingest still on an older list keeps
 * writing in its epoch until it is restarted: nothing is lost meanwhile.
 *
 * The record, on every node (so no single node holds it):
 *   {event}:pool, {event}:pool:{e}   "replicas=R nodes=N md5=<digest of the
 *                                    list>" ("replicas=R nodes=1": one node)
 *   {event}:pool:{e}:h{i}            host i of the epoch, "host:port"
 * added where absent (a new event, a new epoch, a node back empty), with the
 * event's TTL, hosts before the header. A binary started on a list:
 *   - the newest epoch's hosts (in any order): joins it;
 *   - those and more, same replicas: records the next epoch and writes in it;
 *   - those and hosts a newer epoch dropped (retired): joins the newest;
 *   - anything else (a host dropped that was not retired and folded, an
 *     older epoch's list, another replicas=, a host written another way):
 *     refused in one line (README, "Changing the pool").
 * Getting smaller: retiring a node added during the event records an
 * epoch without it (pool_record_retire); once no ingest writes in an
 * earlier epoch, the aggregator's fold sums the counters of every epoch
 * before it into carry counters of that epoch ("{event}~{e}:f:q...", set,
 * not incremented, so a fold run twice or cut halfway and run again
 * writes the same values), then marks {event}:pool:{e}:folded on every
 * node: from then on the aggregator reads the carry and the epochs from
 * e on, and the retired node may go.
 * Nodes that do not answer are not asked again: with none answering there
 * is nothing to compare, and the binary starts on its own list as epoch 0
 * would (its writes get 503s until the store is back). memory: and
 * redis-cluster:// (which moves its slots' keys itself) have no list.
 */
#ifndef LT_POOL_RECORD_H
#define LT_POOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The header of s's own list (at most STORE_ADD_BATCH_VALUE_MAX bytes)
 * into buf; its length. */
#define POOL_RECORD_MAX 96
size_t pool_record_format(const struct store *s, char buf[POOL_RECORD_MAX]);

/* Where a binary stands in the pool's history. */
struct pool_view {
    uint32_t epoch;  /* the newest epoch: counters are written in it */
    uint32_t folded; /* 0, or the epoch the counters of every epoch before it
                      * were folded into (its carry counters hold them) */
};

/* Joins s to event's epochs as above and sets s's rings; view says where
 * it stands. A host of ours that a newer epoch dropped (retiring, or
 * retired) is joined with, and takes no new counters. An epoch whose
 * host this list lacks is refused unless it was folded. */
bool pool_record_join(struct store *s, const char *event, uint32_t ttl_s, struct pool_view *view,
                      char *err, size_t errlen);

/* Retiring a node (getting smaller), step one: records the next epoch, the
 * newest one's hosts without host (nothing when an earlier run did);
 * *retire_epoch is that epoch. Refused with the line to print: a host of
 * epoch 0 (the event's question states, users and snapshots are placed on
 * it, and a fold moves only counters), one never in the pool, a node not
 * answering, fewer nodes than replicas left. Step two is the fold
 * (aggregate/agg_retire.h), then pool_record_mark_folded. */
bool pool_record_retire(struct store *s, const char *event, uint32_t ttl_s,
                        const struct store_node *host, uint32_t *retire_epoch, char *err,
                        size_t errlen);
/* Records on every node that the epochs before `epoch` are folded into its
 * carry counters; true when every node holds the marker. */
bool pool_record_mark_folded(struct store *s, const char *event, uint32_t ttl_s, uint32_t epoch);

/* The newest epoch <= newest with a fold marker on some node; 0: none. */
uint32_t pool_record_folded(struct store *s, const char *event, uint32_t newest);

/* Each ingest sets {event}:pool:{e}:writing (keys.h) for the epoch e it
 * writes in, every POOL_WRITING_EVERY_MS, living POOL_WRITING_TTL_S: a
 * fold waits until no epoch it folds has one. */
#define POOL_WRITING_EVERY_MS 5000u
#define POOL_WRITING_TTL_S 15u

/* pool_record_join's epoch only. */
bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, uint32_t *epoch,
                       char *err, size_t errlen);


/* True when a node of s records an epoch after `epoch` (the pool grew
 * under a running binary); *newest gets it. For the aggregator's passes. */
bool pool_record_newer(struct store *s, const char *event, uint32_t epoch, uint32_t *newest);

#endif
