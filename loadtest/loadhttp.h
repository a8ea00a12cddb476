/*
 * The HTTP/1.1 client side of the load tester: target URLs (loopback unless
 * allowed otherwise), an incremental response parser for the hot path (no
 * allocation, no copy), and a small blocking client for the few control
 * requests (admin open/close, GET /v1/stats).
 *
 * evhttp's client is not used on the hot path: it allocates a request
 * object, a header list and buffers per request, which costs more CPU than
 * the servers under test spend.
 */
#ifndef LT_LOADHTTP_H
#define LT_LOADHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define LOADHTTP_HOST_MAX 255
#define LOADHTTP_PATH_MAX 255
/* A response head larger than this is refused as malformed. */
#define LOADHTTP_MAX_HEAD 8192
#define LOADHTTP_ERROR_MAX 32

struct loadurl {
    char host[LOADHTTP_HOST_MAX + 1]; /* without brackets for IPv6 */
    uint16_t port;
    char base[LOADHTTP_PATH_MAX + 1]; /* path prefix without the trailing '/', often "" */
    char hostport[LOADHTTP_HOST_MAX + 9]; /* for the Host header: "h:p" or "[v6]:p" */
    struct sockaddr_storage addr;         /* after loadhttp_resolve */
    socklen_t addrlen;
};

/*
 *   http://HOST[:PORT][/PATH]      HOST: name, IPv4, or [IPv6]; PORT default 80
 * PATH is a prefix the API paths are appended to ("/quiz" -> "/quiz/v1/...").
 * Query strings, fragments, user info and https are refused with a reason.
 */
bool loadhttp_parse_url(const char *s, struct loadurl *u, char *err, size_t errlen);

/* Resolves the host (numeric addresses without DNS) and keeps the first
 * address. Unless allow_remote, every address the name resolves to must be
 * loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104): a load test must not
 * hit a real service by a typo. */
bool loadhttp_resolve(struct loadurl *u, bool allow_remote, char *err, size_t errlen);

bool loadhttp_is_loopback(const struct sockaddr *sa);

/* "<base><path>" into buf; false when it does not fit. */
bool loadhttp_path(const struct loadurl *u, const char *path, char *buf, size_t len);

/* One parsed response, pointing into the caller's buffer. */
struct loadhttp_resp {
    int status;         /* 100..599 */
    size_t head_len;    /* status line and headers, with the blank line */
    size_t total_len;   /* head + body as it is on the wire (chunked framing included) */
    const char *body;   /* raw body (still chunk-framed when chunked) */
    size_t body_len;
    bool chunked;
    bool close;         /* "Connection: close", or HTTP/1.0 without keep-alive */
    uint32_t retry_after_s; /* Retry-After in seconds (an HTTP date is not
                             * read: 0); 0 when absent, at most 86400 */
};

enum loadhttp_parse {
    LOADHTTP_PARSE_OK,       /* one whole response, total_len bytes */
    LOADHTTP_PARSE_PARTIAL,  /* need more bytes */
    LOADHTTP_PARSE_BAD,      /* not HTTP, or a bound exceeded */
};

/*
 * Parses the first response in buf[0..len). eof says the peer closed the
 * connection, which ends a body that has neither Content-Length nor chunked
 * framing. head_request: the response has no body whatever it says.
 * 1xx responses other than 101 are reported as they are; the caller skips them.
 */
enum loadhttp_parse loadhttp_parse_response(const char *buf, size_t len, bool eof,
                                            struct loadhttp_resp *r);

/* Decodes a chunked body in place; returns the decoded length, or -1 if the
 * framing is malformed. */
long loadhttp_dechunk(char *body, size_t len);

/* The "error" string of a JSON error body ({"error":"overloaded",...}), by a
 * scan rather than a parse: this runs for every refused request. code gets
 * "" when there is none; codes longer than the buffer are cut. */
void loadhttp_error_code(const char *body, size_t len, char *code, size_t codelen);

/* Reply of the blocking client. body is owned, NUL-terminated, dechunked. */
struct loadhttp_reply {
    int status;
    char *body;
    size_t body_len;
};

/*
 * One request on a fresh connection (Connection: close), with one deadline
 * for connect, send and receive. token, when not NULL, goes in
 * "Authorization: Bearer". A body over max_body fails. On failure returns
 * false with the reason in err and nothing to free.
 */
bool loadhttp_fetch(const struct loadurl *u, const char *method, const char *path,
                    const char *token, const char *body, size_t body_len, uint32_t timeout_ms,
                    size_t max_body, struct loadhttp_reply *out, char *err, size_t errlen);
void loadhttp_reply_free(struct loadhttp_reply *r);

#endif
