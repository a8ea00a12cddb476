/*
 * Runs aggregator passes every interval on a worker thread, driven by a timer
 * of an event loop (the all-in-one and livetally-aggregate both use it).
 * A pass that is still running when the next is due is not doubled: the
 * next one starts when it ends.
 */
#ifndef LT_RUNNER_H
#define LT_RUNNER_H

#include <stdint.h>
#include <stdio.h>

#include "aggregate.h"

struct event_base;
struct evbuffer;
struct store;

struct agg_runner;

/* ef borrowed; store owned from here on; pool: where the pool stands
 * (pool_record_join). NULL on failure. */
struct pool_view;
struct agg_runner *agg_runner_start(struct event_base *base, const struct eventfile *ef,
                                    struct store *store, const struct pool_view *pool,
                                    uint32_t interval_ms);

/* One more pass now (e.g. after the ingest drained), then done(arg) on the
 * loop thread. */
void agg_runner_final_pass(struct agg_runner *r, void (*done)(void *arg), void *arg);

/* Calls fn(arg) on the loop thread after every pass that published a
 * snapshot (a dashboard in the same process looks for it at once instead of
 * at its next poll). One hook; NULL removes it. */
void agg_runner_on_publish(struct agg_runner *r, void (*fn)(void *arg), void *arg);

void agg_runner_write_metrics(struct agg_runner *r, struct evbuffer *out);

/* --describe-metrics: the runner's metric definitions. */
void agg_runner_describe_metrics(FILE *out);

/* Stops the timer and the worker (a running pass finishes first). */
void agg_runner_stop(struct agg_runner *r);

#endif
