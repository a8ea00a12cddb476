/*
 * evhttp helpers shared by the HTTP servers: JSON replies, the error shape
 * of API.md, bearer-token checks, listening.
 *
 * Every handler ends in exactly one reply; these helpers are that reply.
 */
#ifndef LT_HTTP_H
#define LT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evhttp;
struct evhttp_request;
struct evbuffer;

/* Body bound: API.md section 3 (413 above it). evhttp itself buffers up to
 * HTTP_MAX_READ_BODY so that the handler can answer the API's JSON 413; past
 * that evhttp refuses the body with its own 413 before reading it. */
#define HTTP_MAX_BODY 4096
#define HTTP_MAX_READ_BODY (64 * 1024)
#define HTTP_MAX_HEADERS 8192
#define HTTP_PROMETHEUS_TYPE "text/plain; version=0.0.4"

/* Sends the reply (body may be NULL); for HEAD, only the body's length
 * (Content-Length) goes, never the body. Every reply helper below uses it. */
void http_send(struct evhttp_request *req, int code, struct evbuffer *body);

/* Replies with a JSON body (copied) and Content-Type: application/json. */
void http_reply_json(struct evhttp_request *req, int code, const char *json, size_t len);

/* {"error":"<error>"} or {"error":"<error>","field":"<field>"} when field is
 * not NULL; for 503, adds Retry-After: retry_after_s. */
void http_reply_error(struct evhttp_request *req, int code, const char *error, const char *field,
                      unsigned retry_after_s);

/* GET /healthz: 200 {"status":"ok"} while serving, else 503 {"status":"draining"}. */
void http_reply_health(struct evhttp_request *req, bool serving);

/* Sends body (drained) with this content type. */
void http_reply_buffer(struct evhttp_request *req, int code, const char *content_type,
                       struct evbuffer *body);

/* 204 No Content. */
void http_reply_empty(struct evhttp_request *req, int code);

/* The one transfer coding a request body may have: "chunked" alone (either
 * case, OWS around it). Anything else (gzip, "gzip, chunked") is a body
 * that must not be read as the JSON it is not: 501
 * unsupported_transfer_encoding, on the fast path and on evhttp alike. */
bool http_te_supported(const char *value, size_t len);
/* Every evhttp server's first check: when the request's Transfer-Encoding
 * headers (there may be several) are not one http_te_supported accepts,
 * replies 501 unsupported_transfer_encoding with Connection: close (what
 * follows cannot be framed) and returns true. */
bool http_refuse_transfer_coding(struct evhttp_request *req);

/* True when the request carries "Authorization: Bearer <token>" with this
 * token (constant-time comparison). A NULL token means the admin API is off. */
bool http_bearer_ok(struct evhttp_request *req, const char *token);
/* The same check on the raw header value (NULL: absent). */
bool http_bearer_match(const char *authorization, const char *token);

/* Reads a token file: first line, surrounding white space removed; 1..256
 * bytes. Malloc'd. NULL and a message in err on failure. */
char *http_load_token(const char *path, char *err, size_t errlen);

/* Creates an evhttp bound to "HOST:PORT" with the body and header bounds and
 * a read/write timeout. NULL and a message in err on failure. */
struct evhttp *http_listen(struct event_base *base, const char *hostport, int timeout_s,
                           char *err, size_t errlen);

/* An evhttp with the same bounds but no socket: connections are handed to
 * it with evhttp_get_request. */
struct evhttp *http_server_new(struct event_base *base, int timeout_s);

/* Path of the request without the query string, NUL-terminated in buf. */
bool http_path(struct evhttp_request *req, char *buf, size_t len);

#endif
