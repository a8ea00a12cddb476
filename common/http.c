#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "util.h"

#define TOKEN_MAX 256

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* evhttp (2.1) sends the body of a HEAD reply too, which a keep-alive client
 * then reads as the next response: for HEAD only the body's length goes. */
void http_send(struct evhttp_request *req, int code, struct evbuffer *body)
{
    if (body != NULL && evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char len[32];
        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len);
        body = NULL;
    }
    evhttp_send_reply(req, code, reason(code), body);
}

void http_reply_json(struct evhttp_request *req, int code, const char *json, size_t len)
{
    struct evbuffer *body = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (body == NULL || evbuffer_add(body, json, len) != 0)
        http_send(req, 500, NULL);
    else
        http_send(req, code, body);
    if (body)
        evbuffer_free(body);
}

void http_reply_error(struct evhttp_request *req, int code, const char *error, const char *field,
                      unsigned retry_after_s)
{
    char buf[256];
    int n;
    /* error and field are our own constant identifiers: no escaping needed. */
    if (field)
        n = snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"field\":\"%s\"}", error, field);
    else
        n = snprintf(buf, sizeof(buf), "{\"error\":\"%s\"}", error);
    if (code == 503 || retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", retry_after_s ? retry_after_s : 1);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
    }
    if (code == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    http_reply_json(req, code, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

void http_reply_health(struct evhttp_request *req, bool serving)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char draining[] = "{\"status\":\"draining\"}";
    if (serving)
        http_reply_json(req, 200, ok, sizeof(ok) - 1);
    else
        http_reply_json(req, 503, draining, sizeof(draining) - 1);
}

void http_reply_buffer(struct evhttp_request *req, int code, const char *content_type,
                       struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    http_send(req, code, body);
}

void http_reply_empty(struct evhttp_request *req, int code)
{
    http_send(req, code, NULL);
}

bool http_bearer_ok(struct evhttp_request *req, const char *token)
{
    return http_bearer_match(
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"), token);
}

bool http_te_supported(const char *value, size_t len)
{
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    size_t i = 0;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    return len - i == 7 && strncasecmp(value + i, "chunked", 7) == 0;
}

static bool request_te_ok(struct evhttp_request *req)
{
    const struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    size_t seen = 0;
    const struct evkeyval *h;
    for (h = in->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "Transfer-Encoding") != 0)
            continue;
        if (++seen > 1 || !http_te_supported(h->value, strlen(h->value)))
            return false;
    }
    return true;
}

bool http_refuse_transfer_coding(struct evhttp_request *req)
{
    if (request_te_ok(req))
        return false;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    http_reply_error(req, 501, "unsupported_transfer_encoding", NULL, 0);
    return true;
}

bool http_bearer_match(const char *auth, const char *token)
{
    if (token == NULL || auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *given = auth + 7;
    while (*given == ' ')
        given++;
    size_t glen = strlen(given), tlen = strlen(token);
    /* Whitespace after a field value is not part of it (RFC 9110 5.5):
     * evhttp drops it before the main thread's handlers see the header, so
     * every path must. */
    while (glen > 0 && (given[glen - 1] == ' ' || given[glen - 1] == '\t'))
        glen--;
    /* Constant time in the token's length, so timing does not reveal a prefix. */
    unsigned char diff = (unsigned char)(glen != tlen);
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)(token[i] ^ (i < glen ? given[i] : 0));
    return diff == 0;
}

char *http_load_token(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = util_read_file(path, 4096, &len);
    if (text == NULL) {
        snprintf(err, errlen, "--admin-token-file %s: %s", path, strerror(errno));
        return NULL;
    }
    /* A NUL would end the token early and silently: refuse it like any
     * other control character (the string functions below stop at one).
     * The token's line is the first that is not blank. */
    size_t first = 0;
    while (first < len && text[first] != '\0' && isspace((unsigned char)text[first]))
        first++;
    for (size_t i = first; i < len && text[i] != '\n' && text[i] != '\r'; i++) {
        if (text[i] == '\0') {
            snprintf(err, errlen,
                     "--admin-token-file %s: the token must not contain spaces or control characters",
                     path);
            free(text);
            return NULL;
        }
    }
    char *start = text;
    while (*start && isspace((unsigned char)*start))
        start++;
    size_t n = strcspn(start, "\r\n");
    while (n > 0 && isspace((unsigned char)start[n - 1]))
        n--;
    if (n == 0 || n > TOKEN_MAX) {
        snprintf(err, errlen, "--admin-token-file %s: the token must be 1..%d characters on the first line",
                 path, TOKEN_MAX);
        free(text);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isgraph((unsigned char)start[i])) {
            snprintf(err, errlen, "--admin-token-file %s: the token must not contain spaces or control characters",
                     path);
            free(text);
            return NULL;
        }
    }
    memmove(text, start, n);
    text[n] = '\0';
    return text;
}

struct evhttp *http_server_new(struct event_base *base, int timeout_s)
{
    struct evhttp *http = evhttp_new(base);
    if (http == NULL)
        return NULL;
    evhttp_set_max_body_size(http, HTTP_MAX_READ_BODY);
    evhttp_set_max_headers_size(http, HTTP_MAX_HEADERS);
    evhttp_set_timeout(http, timeout_s);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_PATCH);
    return http;
}

struct evhttp *http_listen(struct event_base *base, const char *hostport, int timeout_s, char *err,
                           size_t errlen)
{
    char host[256];
    uint16_t port;
    if (!util_parse_hostport(hostport, host, sizeof(host), &port)) {
        snprintf(err, errlen, "--listen %s: expected HOST:PORT", hostport);
        return NULL;
    }
    struct evhttp *http = http_server_new(base, timeout_s);
    if (http == NULL) {
        snprintf(err, errlen, "cannot create the HTTP server");
        return NULL;
    }
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, host, port);
    if (bound == NULL) {
        snprintf(err, errlen, "--listen %s: cannot listen: %s", hostport, strerror(errno));
        evhttp_free(http);
        return NULL;
    }
    /* evhttp writes a reply's headers and its body apart: with Nagle's
     * algorithm the body then waits for the client's delayed ACK, 40 ms a
     * reply (measured: 3,100 replies/s of a 140 KB snapshot, p99 49 ms).
     * Accepted sockets inherit the option on Linux. */
    int one = 1;
    setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return http;
}

bool http_path(struct evhttp_request *req, char *buf, size_t len)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL || *path == '\0')
        path = "/";
    size_t n = strlen(path);
    if (n >= len)
        return false;
    memcpy(buf, path, n + 1);
    return true;
}
