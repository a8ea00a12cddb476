/*
 * The dashboard (API.md section 4): serves the latest published snapshot as
 * JSON, CSV and Server-Sent Events, and the web page.
 * A worker thread polls the store for a newer generation and pre-renders
 * what the handlers send, so a request never waits for the store and a
 * reply never copies the snapshot (snapshot.h).
 *
 * Routes: GET / (and /index.html, /app.js, /style.css: the page),
 * /v1/stats, /v1/stats/questions/{id}, /v1/stats/stream, /v1/stats.csv,
 * /v1/dashboard/config.
 */
#ifndef LT_DASHBOARD_H
#define LT_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eventfile.h"

struct event_base;
struct evhttp_request;
struct evbuffer;
struct store;

struct dashboard_config {
    uint32_t poll_ms;        /* how often to look for a new snapshot (0: 250) */
    uint32_t interval_ms;    /* the aggregation period, told to the page (0: 1000) */
    uint32_t heartbeat_ms;   /* SSE comment this often (0: 15000) */
    uint32_t max_streams;    /* SSE clients at once; past it 503 (0: 1000) */
    size_t max_stream_pending; /* unsent bytes past which a stream is dropped (0: 4 MiB) */
    uint32_t stream_timeout_s; /* a stream write without progress this long drops it (0: 10) */
};

struct dashboard;

/* ef is borrowed; store is owned from here on. */
struct dashboard *dashboard_create(struct event_base *base, const struct eventfile *ef,
                                   struct store *store, const struct dashboard_config *cfg,
                                   char *err, size_t errlen);

/* Serves the request if the path is the dashboard's; false otherwise. */
bool dashboard_handle(struct dashboard *d, struct evhttp_request *req, const char *path);

/* Counts a reply the binary sent itself (/healthz, /metrics, 404) in the
 * dashboard's request metrics: path as requested, the status sent, and
 * util_mono_us() when the request arrived. */
void dashboard_account(struct dashboard *d, const char *path, int code, uint64_t start_us);

/* Looks for a new snapshot now instead of at the next poll (the aggregator
 * of the same process has just published one). */
void dashboard_poll_now(struct dashboard *d);

/* /healthz: whether the statistics served are live. Healthy (200
 * {"status":"ok"}) while a new snapshot generation arrived within
 * stale_after_ms (3 aggregation intervals, what the page warns at: every
 * pass publishes one, questions open or not); else 503 with why:
 * {"status":"no_snapshot"} before the first, {"status":"stale",
 * "unchanged_ms":N,"stale_after_ms":M} once the aggregators stopped
 * publishing (none runs, or the store fails them). Writes the reply body
 * (NUL-terminated) to body and returns the status. */
int dashboard_health(const struct dashboard *d, char *body, size_t len);

/* Generation of the snapshot being served (0: none yet). */
uint64_t dashboard_generation(const struct dashboard *d);

void dashboard_write_metrics(struct dashboard *d, struct evbuffer *out);

/* --describe-metrics: the dashboard's metric definitions. */
void dashboard_describe_metrics(FILE *out);

/* Closes every stream; before evhttp_free. */
void dashboard_free(struct dashboard *d);

#endif
