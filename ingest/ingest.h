/*
 * The answer front end (API.md section 3) on an evhttp server: validation,
 * question state, group commit, admin open/close, health and metrics.
 * One ingest per event loop thread.
 */
#ifndef LT_INGEST_H
#define LT_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "commit.h"
#include "eventfile.h"

struct event_base;
struct evhttp_request;
struct evbuffer;
struct store;

struct ingest_config {
    const char *admin_token;   /* (ref) NULL: admin API disabled */
    struct commit_config commit;
    uint32_t state_refresh_ms; /* how stale a question state may get */
};

struct ingest;

/* ef is borrowed; store is owned from here on (it goes to the worker
 * thread). NULL and a message in err on failure. */
struct ingest *ingest_create(struct event_base *base, const struct eventfile *ef,
                             struct store *store, const struct ingest_config *cfg, char *err,
                             size_t errlen);

/* Serves the request if its path is one of ingest's (answers, admin); false
 * otherwise, and then the request is untouched. */
bool ingest_handle(struct ingest *ig, struct evhttp_request *req, const char *path);

bool ingest_draining(const struct ingest *ig);

/* Appends the Prometheus text of ingest's metrics. */
void ingest_write_metrics(struct ingest *ig, struct evbuffer *out);

/* Refuses new answers from now on (503 draining), flushes everything, calls
 * drained once nothing is pending. */
void ingest_drain(struct ingest *ig, void (*drained)(void *arg), void *arg);

/* Stops the worker (running what is queued) and frees. */
void ingest_free(struct ingest *ig);

#endif
