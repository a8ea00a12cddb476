/*
 * The pool an event's counters are placed on, recorded in the pool itself.
 *
 * A memcached:// or redis:// pool places each key by the ketama ring of
 * the --backend list (its hosts as written, in their order). A list that
 * changes mid-event moves part of the keys to other nodes, and the counts
 * already on their old owners are read no more: 3 memcached, 3,000
 * answers, a 4th node added by a rolling restart, 3,000 more: the
 * dashboard showed about 5,140 of 6,000. Until a pool can change during an
 * event, a binary that would write or read the event's counters refuses to
 * start on a list other than the one they were placed with, in one line
 * that says what to do.
 *
 * The record is {event}:pool on every node (so no single node holds it):
 * "replicas=R nodes=N md5=<digest of the list>" ("replicas=R nodes=1" for
 * one node, which takes every key whatever its name), added where it is absent
 * (a new event, a node back empty), with the event's TTL. Nodes that do not
 * answer are not asked again: with none answering there is nothing to
 * compare, and the binary starts as it would (its writes get 503s until the
 * store is back). memory: and redis-cluster:// (which moves its slots' keys
 * itself) have no list to record.
 */
#ifndef LT_POOL_RECORD_H
#define LT_POOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The record of s's pool (at most STORE_ADD_BATCH_VALUE_MAX bytes) into
 * buf; its length. */
#define POOL_RECORD_MAX 96
size_t pool_record_format(const struct store *s, char buf[POOL_RECORD_MAX]);

/* false, with the line to print in err, when a node records another pool
 * for event; true otherwise (the record added where it was missing). */
bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, char *err,
                       size_t errlen);

#endif
