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
 *   - anything else (a host dropped, an older epoch's list, another
 *     replicas=, a host written another way): refused in one line; a pool
 *     cannot shrink during an event yet (README, "Changing the pool").
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

/* Joins s to event's epochs as above and sets s's rings (store_set_rings).
 * *epoch: the newest epoch, the one this binary writes counters in (0 for
 * a backend without a list). false, with the line to print in err, when
 * the list is refused. */
bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, uint32_t *epoch,
                       char *err, size_t errlen);

/* True when a node of s records an epoch after `epoch` (the pool grew
 * under a running binary); *newest gets it. For the aggregator's passes. */
bool pool_record_newer(struct store *s, const char *event, uint32_t epoch, uint32_t *newest);

#endif
