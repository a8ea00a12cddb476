/*
 * A worker thread with its own store handle, running jobs in order and
 * handing each finished job back to an event loop (memcached thread.c style:
 * a locked queue and a notify fd). This is how event loops use the
 * synchronous store without ever blocking on it.
 */
#ifndef LT_WORKER_H
#define LT_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

struct event_base;

/* Runs on the worker thread; may block on the store. */
typedef void (*worker_job_fn)(struct store *store, void *arg);
/* Runs on the event loop's thread after the job. */
typedef void (*worker_done_fn)(void *arg);

struct worker;

/* store is owned by the worker from here on (closed by worker_stop). base is
 * the loop whose thread runs the done callbacks. At most max_jobs wait. */
struct worker *worker_start(const char *name, struct store *store, struct event_base *base,
                            size_t max_jobs);

/* false when the queue is full or the worker is stopping: the job will not
 * run and done will not be called. job may be NULL (done runs in order). */
bool worker_submit(struct worker *w, worker_job_fn job, worker_done_fn done, void *arg);

/* The worker store's counters (store.h) as they were after its last job:
 * read from any thread. */
void worker_store_stats(struct worker *w, struct store_stats *out);

/* Jobs queued or running. */
size_t worker_pending(struct worker *w);

/* Runs every queued job, then calls every pending done callback on the
 * caller's thread (which must be the loop's), joins and frees. */
void worker_stop(struct worker *w);

#endif
