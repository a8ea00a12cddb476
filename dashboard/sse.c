#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "snapshot.h"
#include "util.h"

/* What a client may send on a stream connection before we stop reading it:
 * nothing is expected after the request, and an unread input buffer must not
 * grow without bound. */
#define SSE_MAX_INPUT 4096

static const char heartbeat[] = ": heartbeat\n\n";

/* Bytes of a new event queued per loop turn (at least one stream's). A push
 * to every stream in one callback made the loop write them all before it
 * read anything else: with 3,000 streams a /v1/stats poll arriving then
 * waited 135-206 ms gzip'd, 409-457 ms plain (p99, bench/streams.py); in
 * slices, the polls that came meanwhile are served between two of them.
 * Bytes, not streams: a plain event is ~8x a gzip'd one, and the writes
 * are what takes the time. */
#define SSE_PUSH_SLICE_BYTES (512u * 1024u)

struct sse_client {
    struct sse_hub *hub;            /* (ref) */
    struct evhttp_request *req;     /* (ref) owned by evhttp while the connection lives */
    struct evhttp_connection *conn; /* (ref) */
    struct sse_client *prev;
    struct sse_client *next;
    bool gzip;                      /* Content-Encoding: gzip (snapshot_deflate_fragment) */
};

struct sse_hub {
    struct sse_config cfg;
    struct event *heartbeat_timer;
    struct evbuffer *scratch;   /* reused to hand chunks to evhttp (left empty) */
    struct sse_client *clients; /* owned, doubly linked */
    struct sse_stats stats;
    char *heartbeat_z;          /* owned: the heartbeat as a deflate fragment */
    size_t heartbeat_z_len;
    struct snapshot *pushing;   /* one reference while a push goes on, else NULL */
    struct sse_client *cursor;  /* the next stream it reaches (newer ones got it on join) */
    struct event *push_timer;   /* the push's next slice, on the loop's next turn */
};

/* A gzip member header (RFC 1952) with no name and no time: what a gzip'd
 * stream starts with; the deflate fragments follow, and no trailer ever
 * does (the stream ends with its connection). */
static const unsigned char gzip_header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};

static void unlink_client(struct sse_hub *h, struct sse_client *c)
{
    if (h->cursor == c)
        h->cursor = c->next;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->stats.clients--;
    free(c);
}

/* The peer went away (EOF, error, write timeout): evhttp is freeing the
 * connection. On those paths it has detached the unfinished request from
 * it, so the request is ours to free; otherwise evhttp frees it. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    struct sse_client *c = arg;
    struct sse_hub *h = c->hub;
    struct evhttp_request *req = c->req;
    h->stats.closed++;
    unlink_client(h, c);
    if (evhttp_request_get_connection(req) == NULL)
        evhttp_request_free(req);
}

/* We end the stream: no close callback for us, evhttp frees the request
 * with its connection. */
static void close_client(struct sse_hub *h, struct sse_client *c)
{
    struct evhttp_connection *conn = c->conn;
    struct evhttp_request *req = c->req;
    unlink_client(h, c);
    if (evhttp_request_get_connection(req) == NULL) {
        /* Detached already (its connection failed without telling us). */
        evhttp_request_free(req);
        return;
    }
    evhttp_connection_set_closecb(conn, NULL, NULL);
    evhttp_connection_free(conn);
}

static size_t pending_bytes(const struct sse_client *c)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c->conn);
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/* Drops c when it is gone or cannot keep up; true when c is still there. */
static bool keep_client(struct sse_hub *h, struct sse_client *c)
{
    if (evhttp_request_get_connection(c->req) == NULL) {
        h->stats.closed++;
        close_client(h, c);
        return false;
    }
    if (pending_bytes(c) > h->cfg.max_pending) {
        log_info("stream client dropped: %zu bytes unsent", pending_bytes(c));
        h->stats.dropped++;
        close_client(h, c);
        return false;
    }
    return true;
}

static void send_snapshot(struct sse_hub *h, struct sse_client *c, struct snapshot *s)
{
    if (c->gzip && s->frame_z == NULL)
        return; /* not compressed (out of memory): this client misses one event */
    if (!snapshot_add_to(s, h->scratch, c->gzip ? s->frame_z : s->frame,
                         c->gzip ? s->frame_z_len : s->frame_len))
        return; /* out of memory: this client misses one event, not the stream */
    evhttp_send_reply_chunk(c->req, h->scratch);
    /* evhttp moves the chains; anything left (no connection) is dropped. */
    evbuffer_drain(h->scratch, evbuffer_get_length(h->scratch));
    h->stats.events++;
}

static void send_text(struct sse_hub *h, struct sse_client *c, const char *text, size_t len)
{
    if (c->gzip) {
        /* Short texts, once per client (the hello) or shared (below). */
        size_t zl = 0;
        char *z = snapshot_deflate_fragment(text, len, &zl);
        int rc = z != NULL ? evbuffer_add(h->scratch, z, zl) : -1;
        free(z);
        if (rc != 0)
            return;
    } else if (evbuffer_add(h->scratch, text, len) != 0) {
        return;
    }
    evhttp_send_reply_chunk(c->req, h->scratch);
    evbuffer_drain(h->scratch, evbuffer_get_length(h->scratch));
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sse_hub *h = arg;
    struct sse_client *next;
    for (struct sse_client *c = h->clients; c; c = next) {
        next = c->next;
        if (!keep_client(h, c))
            continue;
        if (c->gzip) {
            if (evbuffer_add_reference(h->scratch, h->heartbeat_z, h->heartbeat_z_len, NULL,
                                       NULL) == 0)
                evhttp_send_reply_chunk(c->req, h->scratch);
            evbuffer_drain(h->scratch, evbuffer_get_length(h->scratch));
        } else {
            send_text(h, c, heartbeat, sizeof(heartbeat) - 1);
        }
    }
}

static void on_push_timer(evutil_socket_t fd, short what, void *arg);

struct sse_hub *sse_hub_create(struct event_base *base, const struct sse_config *cfg)
{
    struct sse_hub *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->cfg = *cfg;
    if (h->cfg.heartbeat_ms == 0)
        h->cfg.heartbeat_ms = 15000;
    if (h->cfg.max_clients == 0)
        h->cfg.max_clients = 1000;
    if (h->cfg.max_pending == 0)
        h->cfg.max_pending = 4u << 20;
    if (h->cfg.write_timeout_s == 0)
        h->cfg.write_timeout_s = 10;
    if (h->cfg.retry_ms == 0)
        h->cfg.retry_ms = 1000;
    h->scratch = evbuffer_new();
    h->heartbeat_z = snapshot_deflate_fragment(heartbeat, sizeof(heartbeat) - 1,
                                               &h->heartbeat_z_len);
    h->heartbeat_timer = event_new(base, -1, EV_PERSIST, on_heartbeat, h);
    h->push_timer = evtimer_new(base, on_push_timer, h);
    struct timeval tv = {.tv_sec = h->cfg.heartbeat_ms / 1000,
                         .tv_usec = (suseconds_t)(h->cfg.heartbeat_ms % 1000) * 1000};
    if (h->scratch == NULL || h->heartbeat_timer == NULL || h->push_timer == NULL ||
        h->heartbeat_z == NULL ||
        event_add(h->heartbeat_timer, &tv) != 0) {
        sse_hub_free(h);
        return NULL;
    }
    return h;
}

bool sse_hub_join(struct sse_hub *h, struct evhttp_request *req, struct snapshot *current,
                  const char *last_event_id, bool gzip)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (h->stats.clients >= h->cfg.max_clients) {
        h->stats.rejected++;
        return false;
    }
    struct sse_client *c = calloc(1, sizeof(*c));
    if (c == NULL || bev == NULL) {
        free(c);
        return false;
    }
    c->hub = h;
    c->req = req;
    c->conn = conn;
    c->gzip = gzip;
    c->next = h->clients;
    if (h->clients)
        h->clients->prev = c;
    h->clients = c;
    h->stats.clients++;
    h->stats.accepted++;

    struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
    evhttp_add_header(hdr, "Content-Type", "text/event-stream");
    evhttp_add_header(hdr, "Cache-Control", "no-store");
    /* nginx buffers proxied responses unless told not to. */
    evhttp_add_header(hdr, "X-Accel-Buffering", "no");
    evhttp_add_header(hdr, "Vary", "Accept-Encoding");
    if (gzip)
        evhttp_add_header(hdr, "Content-Encoding", "gzip");
    evhttp_send_reply_start(req, 200, "OK");
    /* The server's idle timeout would end a stream the client has no reason
     * to talk on: no read timeout; a write that makes no progress still
     * times out (a client that stopped reading). */
    struct timeval wt = {.tv_sec = h->cfg.write_timeout_s, .tv_usec = 0};
    bufferevent_set_timeouts(bev, NULL, &wt);
    bufferevent_setwatermark(bev, EV_READ, 0, SSE_MAX_INPUT);
    evhttp_connection_set_closecb(conn, on_close, c);

    if (gzip && evbuffer_add(h->scratch, gzip_header, sizeof(gzip_header)) == 0) {
        evhttp_send_reply_chunk(req, h->scratch);
        evbuffer_drain(h->scratch, evbuffer_get_length(h->scratch));
    }
    char hello[64];
    int n = snprintf(hello, sizeof(hello), "retry: %u\n\n", h->cfg.retry_ms);
    send_text(h, c, hello, (size_t)n);
    uint64_t last;
    bool resumed = last_event_id != NULL &&
                   util_parse_u64(last_event_id, 0, UINT64_MAX, &last) && current != NULL &&
                   last == current->generation;
    if (current != NULL && !resumed)
        send_snapshot(h, c, current);
    return true;
}

/* Queues the pushed event on the next streams until budget bytes of it are
 * queued (at least one stream's). */
static void push_streams(struct sse_hub *h, size_t budget)
{
    size_t queued = 0;
    while (h->cursor != NULL && queued < budget) {
        struct sse_client *c = h->cursor;
        h->cursor = c->next;
        if (keep_client(h, c)) {
            send_snapshot(h, c, h->pushing);
            queued += c->gzip ? h->pushing->frame_z_len : h->pushing->frame_len;
        }
    }
}

/* One slice now, the next on the loop's next turn: a zero timer fires after
 * the loop has polled, so what became readable meanwhile runs first. */
static void push_slice(struct sse_hub *h)
{
    push_streams(h, SSE_PUSH_SLICE_BYTES);
    static const struct timeval next_turn = {0, 0};
    if (h->cursor != NULL && evtimer_add(h->push_timer, &next_turn) == 0)
        return;
    push_streams(h, SIZE_MAX); /* no timer: the rest now */
    snapshot_unref(h->pushing);
    h->pushing = NULL;
}

static void on_push_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    push_slice(arg);
}

void sse_hub_push(struct sse_hub *h, struct snapshot *s)
{
    /* A push still going on gives way: the streams it has not reached get
     * the newer event instead (each stream wants the latest state). */
    snapshot_ref(s);
    snapshot_unref(h->pushing);
    h->pushing = s;
    h->cursor = h->clients;
    evtimer_del(h->push_timer);
    push_slice(h);
}

void sse_hub_get_stats(const struct sse_hub *h, struct sse_stats *out)
{
    *out = h->stats;
}

void sse_hub_free(struct sse_hub *h)
{
    if (h == NULL)
        return;
    while (h->clients)
        close_client(h, h->clients);
    if (h->heartbeat_timer)
        event_free(h->heartbeat_timer);
    if (h->push_timer)
        event_free(h->push_timer);
    snapshot_unref(h->pushing);
    if (h->scratch)
        evbuffer_free(h->scratch);
    free(h->heartbeat_z);
    free(h);
}
