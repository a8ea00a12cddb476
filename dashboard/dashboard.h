/*
 * The dashboard (API.md section 4): serves the latest published snapshot.
 * A worker thread polls the store for a newer generation and pre-renders what
 * the handlers send, so a request never waits for the store.
 */
#ifndef LT_DASHBOARD_H
#define LT_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"

struct event_base;
struct evhttp_request;
struct evbuffer;
struct store;

struct dashboard_config {
    uint32_t poll_ms; /* how often to look for a new snapshot */
};

struct dashboard;

/* ef is borrowed; store is owned from here on. */
struct dashboard *dashboard_create(struct event_base *base, const struct eventfile *ef,
                                   struct store *store, const struct dashboard_config *cfg,
                                   char *err, size_t errlen);

/* Serves the request if the path is the dashboard's; false otherwise. */
bool dashboard_handle(struct dashboard *d, struct evhttp_request *req, const char *path);

/* Generation of the snapshot being served (0: none yet). */
uint64_t dashboard_generation(const struct dashboard *d);

void dashboard_write_metrics(struct dashboard *d, struct evbuffer *out);

void dashboard_free(struct dashboard *d);

#endif
