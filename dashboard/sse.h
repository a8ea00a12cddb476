/*
 * Server-Sent Events fan-out (GET /v1/stats/stream): every stream client
 * gets each new snapshot as one `stats` event whose id is the generation,
 * and a comment line every heartbeat so that proxies keep the connection
 * open and a dead peer is noticed.
 *
 * A new snapshot costs one reference per client (snapshot_add_to), never a
 * copy. A client that accepts gzip gets the stream gzip'd: a header, then
 * each event as the snapshot's one deflate fragment (snapshot.h), shared
 * by every such client, so compressing costs once per event, not per
 * stream (a 42-question event is ~100 KB of JSON, ~1/9 of it gzip'd). A client that does not read is dropped once its unsent bytes pass
 * max_pending, or when a write makes no progress for write_timeout_s, so a
 * slow phone cannot hold memory or slow the other clients; EventSource
 * reconnects by itself and gets the latest snapshot at once.
 *
 * Loop thread only.
 */
#ifndef LT_SSE_H
#define LT_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evhttp_request;
struct snapshot;

struct sse_config {
    uint32_t heartbeat_ms;   /* comment line this often (0: 15000) */
    uint32_t max_clients;    /* streams at once (0: 1000) */
    size_t max_pending;      /* unsent bytes past which a client is dropped (0: 4 MiB) */
    uint32_t write_timeout_s; /* a write without progress this long drops it (0: 10) */
    uint32_t retry_ms;       /* the reconnection delay told to EventSource (0: 1000) */
};

struct sse_stats {
    uint64_t clients;  /* connected now */
    uint64_t accepted; /* since start */
    uint64_t rejected; /* refused: max_clients reached */
    uint64_t dropped;  /* too slow */
    uint64_t closed;   /* gone by themselves */
    uint64_t events;   /* snapshot events queued, summed over clients */
};

struct sse_hub;

struct sse_hub *sse_hub_create(struct event_base *base, const struct sse_config *cfg);

/* Turns req into a stream: replies 200 text/event-stream and sends current's
 * event (when current is not NULL and its generation differs from
 * last_event_id, the Last-Event-ID header; NULL when absent). false when the
 * hub is full or memory runs out: req is untouched and the caller replies. */
bool sse_hub_join(struct sse_hub *h, struct evhttp_request *req, struct snapshot *current,
                  const char *last_event_id, bool gzip);

/* Queues s's event on every stream (drops the slow ones first): the first
 * SSE_PUSH_SLICE_BYTES (sse.c) at once, the rest a slice per loop turn, so the
 * requests that arrive meanwhile are served in between. A push before the
 * last one reached every stream replaces it. */
void sse_hub_push(struct sse_hub *h, struct snapshot *s);

void sse_hub_get_stats(const struct sse_hub *h, struct sse_stats *out);

/* Closes every stream and frees the hub; before evhttp_free. */
void sse_hub_free(struct sse_hub *h);

#endif
