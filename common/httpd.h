/*
 * A small HTTP/1.1 server for the hot path, on one event loop: keep-alive,
 * pipelining (responses leave in request order even when handlers answer
 * out of order), deferred replies (a handler keeps the request and answers
 * after the store confirmed), bounded headers and bodies, and deadlines
 * that drop slow clients. Requests are parsed with Debian's http-parser.
 *
 * Why not evhttp: it costs about twice nginx's CPU per request (evkeyvalq
 * header lists, several allocations and copies per request); this server
 * keeps one input and one output buffer per connection, copies only the
 * headers it needs, and writes each response with one write().
 *
 * One httpd per thread; several threads share a port through SO_REUSEPORT.
 */
#ifndef LT_HTTPD_H
#define LT_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

struct httpd_config {
    uint32_t max_conns;          /* open connections of this server; more are refused */
    uint32_t request_timeout_ms; /* a request must arrive whole within this */
    uint32_t idle_timeout_ms;    /* a keep-alive connection idle this long is closed */
    uint32_t max_header_bytes;   /* request line + headers; 431 past it */
    uint32_t max_body_bytes;     /* the handler sees too_large past it */
    uint32_t max_pipeline;       /* requests parsed ahead of their responses */
};

enum httpd_method { HTTPD_OTHER = 0, HTTPD_GET, HTTPD_HEAD, HTTPD_POST };

/* Valid from the handler call until httpd_reply; the strings are
 * NUL-terminated copies. */
struct httpd_request {
    enum httpd_method method;
    const char *path;          /* without the query string */
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    const char *forwarded_for; /* the last X-Forwarded-For header; NULL when absent */
    const struct sockaddr *peer; /* the client's address (the connection's peer) */
    const char *body;
    size_t body_len;
    bool too_large;            /* body over max_body_bytes: not read, connection closes after */
    void *conn;                /* (ref) internal */
};

typedef void (*httpd_handler_fn)(struct httpd_request *req, void *arg);

/* Decides from the first bytes of a connection whether this server takes
 * it: 1 yes, 0 no (it goes to handoff), -1 not enough bytes yet. */
typedef int (*httpd_classify_fn)(const char *data, size_t len, void *arg);
/* Receives a connection this server did not take, or no longer serves; the
 * fd is the receiver's. prefix holds bytes already read from it (a request
 * passed on with httpd_handoff, and what followed), to be processed first;
 * it is valid during the call only. */
typedef void (*httpd_handoff_fn)(int fd, const struct sockaddr *sa, socklen_t salen,
                                 const char *prefix, size_t prefix_len, void *arg);

struct httpd_stats {
    uint64_t accepted;
    uint64_t refused;          /* over max_conns */
    uint64_t requests;
    uint64_t timeouts;         /* connections dropped by a deadline */
    uint64_t bad_requests;     /* unparsable: 400 and closed */
    uint64_t handed_off;
    uint32_t open_conns;
};

struct httpd;

/* Serves on an already bound, listening socket (owned from here on). */
struct httpd *httpd_create(struct event_base *base, int listen_fd, const struct httpd_config *cfg,
                           httpd_handler_fn handler, void *arg);

void httpd_set_classifier(struct httpd *h, httpd_classify_fn classify, httpd_handoff_fn handoff,
                          void *arg);
/* Connections this server passed on but that still hold a client (their
 * handoff receiver's count): they count against max_conns too. */
void httpd_set_passed_conns(struct httpd *h, size_t (*count)(const void *arg), const void *arg);

/* Answers a request (exactly once). extra_headers: complete "Name: value\r\n"
 * lines, or NULL. The body is copied. */
void httpd_reply(struct httpd_request *req, int status, const char *content_type,
                 const char *body, size_t len, const char *extra_headers);

/* Passes the request, its connection and whatever the client sent after it
 * to the handoff receiver instead of answering it (a keep-alive client that
 * posted answers and now asks for the dashboard). Only from inside the
 * handler, and only for a request alone on its connection: false otherwise,
 * and the handler must reply as usual. */
bool httpd_handoff(struct httpd_request *req);

/* Stops accepting (the listener closes); open connections stay. */
void httpd_stop_accepting(struct httpd *h);

void httpd_get_stats(const struct httpd *h, struct httpd_stats *out);

/* Closes every connection; requests still held by handlers must have been
 * answered (or be answered before their owner is freed: a reply to a closed
 * connection is dropped). */
void httpd_free(struct httpd *h);

/* A TCP socket bound to "HOST:PORT" with SO_REUSEPORT, listening,
 * non-blocking. -1 and a message on failure. */
int httpd_listen_socket(const char *hostport, char *err, size_t errlen);

#endif
