#include "httpd.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>

#include "accept_guard.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define READ_CHUNK 16384
#define OUT_BACKLOG_MAX (256u * 1024u) /* stop parsing while this much waits for the client */
#define FIELD_MAX 24
#define PEEK_MAX 64
#define HTTPD_PEEK_HEAD_MAX 16384

enum hdr_target {
    HDR_NONE = 0,
    HDR_CONTENT_TYPE,
    HDR_AUTHORIZATION,
    HDR_FORWARDED_FOR,
    HDR_TRANSFER_ENCODING
};
#define TE_MAX 16 /* "chunked" and some room: anything longer is refused anyway */
enum last_cb { CB_NONE = 0, CB_URL, CB_FIELD, CB_VALUE };
enum conn_state { CONN_PEEK, CONN_OPEN, CONN_DEAD };

struct slot {
    struct httpd_request req;
    char *buf;                  /* owned: url, header values and body, NUL-separated */
    size_t len;
    size_t cap;
    size_t url_off, ct_off, auth_off, xff_off, body_off;
    bool has_ct, has_auth, has_xff, has_body;
    bool keep_alive;
    bool replied;
    char *resp;                 /* owned: a reply that waits for earlier ones */
    size_t resp_len;
    size_t resp_cap;
};

struct conn {
    struct httpd *srv;          /* (ref) */
    int fd;
    enum conn_state state;
    struct event *rev;
    struct event *wev;
    struct event *timer;
    http_parser parser;

    char *in;                   /* owned */
    size_t in_len;
    size_t in_cap;
    size_t parsed;              /* in[0 .. parsed) went through the parser */
    size_t msg_start;           /* where the message being parsed starts in in[] */
    size_t handoff_from;        /* start of the request a handler passed on */
    bool want_handoff;
    char *out;                  /* owned */
    size_t out_len;
    size_t out_off;
    size_t out_cap;

    struct slot *slots;         /* owned ring of max_pipeline */
    uint32_t head;              /* oldest request not yet answered on the wire */
    uint32_t count;             /* dispatched, waiting for their turn on the wire */
    uint32_t pending;           /* dispatched and not yet replied by the handler */

    /* the request being parsed */
    struct slot *cur;
    enum last_cb last;
    enum hdr_target target;
    char field[FIELD_MAX];
    char te[TE_MAX];            /* this message's Transfer-Encoding, lower case */
    size_t te_len;              /* may exceed TE_MAX - 1: then refused */
    int te_headers;             /* how many Transfer-Encoding fields */
    bool bad_te;                /* a coding other than chunked alone: 501 */
    size_t field_len;
    size_t header_bytes;
    bool in_message;
    bool message_done;
    bool too_large;

    bool in_parse;              /* replies only render; flushing waits for the loop's end */
    bool close_after;           /* close once everything is written */
    bool read_paused;
    bool timer_is_request;      /* the timer runs the request deadline, not the idle one */
    struct sockaddr_storage sa;
    socklen_t salen;
};

struct httpd {
    struct event_base *base;    /* (ref) */
    struct evconnlistener *listener;
    struct accept_guard *accept_guard; /* pauses accepting at the fd limit */
    size_t (*passed_count)(const void *arg); /* connections handed off, still open */
    const void *passed_arg;
    struct httpd_config cfg;
    httpd_handler_fn handler;
    void *arg;
    httpd_classify_fn classify;
    httpd_handoff_fn handoff;
    void *classify_arg;
    const struct timeval *request_tv; /* libevent common timeouts: O(1) re-arming */
    const struct timeval *idle_tv;
    struct conn **conns;        /* owned; open connections, for httpd_free */
    size_t nconns;
    size_t cap_conns;
    struct httpd_stats st;
};

static const http_parser_settings parser_settings;

/* ---- buffers ---------------------------------------------------------- */

static bool reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

static bool slot_append(struct slot *s, const char *data, size_t len)
{
    if (!reserve(&s->buf, &s->cap, s->len + len + 1))
        return false;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return true;
}

static bool slot_terminate(struct slot *s)
{
    return slot_append(s, "", 1);
}

/* ---- connection lifetime ---------------------------------------------- */

static void conn_untrack(struct conn *c)
{
    struct httpd *h = c->srv;
    for (size_t i = 0; i < h->nconns; i++) {
        if (h->conns[i] == c) {
            h->conns[i] = h->conns[--h->nconns];
            return;
        }
    }
}

static void conn_free(struct conn *c)
{
    if (c->slots) {
        for (uint32_t i = 0; i < c->srv->cfg.max_pipeline; i++) {
            free(c->slots[i].buf);
            free(c->slots[i].resp);
        }
        free(c->slots);
    }
    free(c->in);
    free(c->out);
    free(c);
}

/* Closes the socket now; the struct lives on while handlers hold requests. */
static void conn_close(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->timer)
        event_free(c->timer);
    c->rev = c->wev = c->timer = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_DEAD;
    c->srv->st.open_conns--;
    conn_untrack(c);
    if (c->pending == 0)
        conn_free(c);
}

/* ---- output ----------------------------------------------------------- */

static void conn_flush(struct conn *c);

static void set_timer(struct conn *c, bool request)
{
    if (c->timer == NULL)
        return;
    c->timer_is_request = request;
    event_add(c->timer, request ? c->srv->request_tv : c->srv->idle_tv);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

static void conn_parse(struct conn *c);

static void conn_flush(struct conn *c)
{
    if (c->state == CONN_DEAD || c->in_parse)
        return;
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(c->wev, NULL);
            return;
        }
        conn_close(c);
        return;
    }
    c->out_off = c->out_len = 0;
    if (c->close_after && c->count == 0) {
        conn_close(c);
        return;
    }
    /* Parsing stopped while output piled up: go on now. */
    if (c->read_paused && c->count < c->srv->cfg.max_pipeline) {
        c->read_paused = false;
        event_add(c->rev, NULL);
        conn_parse(c);
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static char *put_bytes(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_uint(char *p, uint64_t v)
{
    return p + util_format_u64(p, v);
}

/* Renders a response at the end of (buf, len, cap). Every reply of the
 * answer path goes through here: plain copies, no format parsing. */
static bool render(char **buf, size_t *len, size_t *cap, int status, const char *ctype,
                   const char *body, size_t blen, const char *extra, bool keep_alive, bool head)
{
    static const char close_hdr[] = "Connection: close\r\n";
    if (status < 100 || status > 999)
        return false;
    const char *why = reason(status);
    if (ctype == NULL)
        ctype = "application/json";
    if (status == 204) /* no body, and so no body headers (RFC 9110 8.6) */
        blen = 0;
    size_t why_len = strlen(why), ctype_len = strlen(ctype);
    size_t extra_len = extra != NULL ? strlen(extra) : 0;
    /* "HTTP/1.1 NNN " why CRLF ["Content-Type: " ctype CRLF "Content-Length: " n CRLF]
     * [close] extra CRLF */
    size_t hdr_max = 13 + why_len + 2 + 14 + ctype_len + 2 + 16 + 20 + 2 +
                     (sizeof(close_hdr) - 1) + extra_len + 2;
    if (!reserve(buf, cap, *len + hdr_max + (head ? 0 : blen)))
        return false;
    char *p = *buf + *len;
    p = put_bytes(p, "HTTP/1.1 ", 9);
    p = put_uint(p, (uint64_t)status);
    *p++ = ' ';
    p = put_bytes(p, why, why_len);
    p = put_bytes(p, "\r\n", 2);
    if (status != 204) {
        p = put_bytes(p, "Content-Type: ", 14);
        p = put_bytes(p, ctype, ctype_len);
        p = put_bytes(p, "\r\nContent-Length: ", 18);
        p = put_uint(p, blen);
        p = put_bytes(p, "\r\n", 2);
    }
    if (!keep_alive)
        p = put_bytes(p, close_hdr, sizeof(close_hdr) - 1);
    if (extra_len > 0)
        p = put_bytes(p, extra, extra_len);
    p = put_bytes(p, "\r\n", 2);
    if (!head && blen > 0)
        p = put_bytes(p, body, blen);
    *len = (size_t)(p - *buf);
    return true;
}

/* Moves every reply that is next in line onto the connection's output. */
static void conn_advance(struct conn *c)
{
    uint32_t max = c->srv->cfg.max_pipeline;
    while (c->count > 0) {
        struct slot *s = &c->slots[c->head];
        if (!s->replied)
            break;
        if (s->resp_len) {
            if (!reserve(&c->out, &c->out_cap, c->out_len + s->resp_len)) {
                c->close_after = true;
                break;
            }
            memcpy(c->out + c->out_len, s->resp, s->resp_len);
            c->out_len += s->resp_len;
            s->resp_len = 0;
        }
        if (!s->keep_alive)
            c->close_after = true;
        s->replied = false;
        c->head = (c->head + 1) % max;
        c->count--;
    }
}

void httpd_reply(struct httpd_request *req, int status, const char *content_type,
                 const char *body, size_t len, const char *extra_headers)
{
    struct conn *c = req->conn;
    struct slot *s = (struct slot *)req; /* req is the slot's first member */
    c->pending--;
    if (c->state == CONN_DEAD) {
        if (c->pending == 0)
            conn_free(c);
        return;
    }
    bool head = req->method == HTTPD_HEAD;
    bool keep = s->keep_alive && !req->too_large;
    s->keep_alive = keep;
    s->resp_len = 0;
    if (!render(&s->resp, &s->resp_len, &s->resp_cap, status, content_type, body, len,
                extra_headers, keep, head)) {
        s->keep_alive = false;
        s->resp_len = 0;
    }
    s->replied = true;
    conn_advance(c);
    if (c->count == 0 && !c->in_message && !c->close_after && !c->in_parse)
        set_timer(c, false);
    conn_flush(c);
}

/* ---- parsing ---------------------------------------------------------- */

static struct conn *conn_of(http_parser *p)
{
    return p->data;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = conn_of(p);
    uint32_t max = c->srv->cfg.max_pipeline;
    struct slot *s = &c->slots[(c->head + c->count) % max];
    s->len = 0;
    s->has_ct = s->has_auth = s->has_xff = s->has_body = false;
    s->url_off = 0;
    s->keep_alive = true;
    s->replied = false;
    s->resp_len = 0;
    c->cur = s;
    c->last = CB_NONE;
    c->target = HDR_NONE;
    c->field_len = 0;
    c->header_bytes = 0;
    c->in_message = true;
    c->too_large = false;
    c->te_len = 0;
    c->te_headers = 0;
    c->bad_te = false;
    if (!c->timer_is_request)
        set_timer(c, true);
    return 0;
}

static int count_header(struct conn *c, size_t len)
{
    c->header_bytes += len;
    return c->header_bytes > c->srv->cfg.max_header_bytes ? -1 : 0;
}

static int end_value(struct conn *c)
{
    if (c->target == HDR_TRANSFER_ENCODING) {
        c->target = HDR_NONE;
        return 0;
    }
    if (c->last == CB_VALUE && c->target != HDR_NONE) {
        if (!slot_terminate(c->cur))
            return -1;
        c->target = HDR_NONE;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    if (count_header(c, len) || !slot_append(c->cur, at, len))
        return -1;
    c->last = CB_URL;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    if (count_header(c, len + 4))
        return -1;
    if (c->last == CB_URL) {
        if (!slot_terminate(c->cur))
            return -1;
    } else if (c->last == CB_VALUE) {
        if (end_value(c))
            return -1;
        c->field_len = 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (c->field_len < FIELD_MAX - 1)
            c->field[c->field_len] = (char)(at[i] | 0x20);
        c->field_len++;
    }
    c->last = CB_FIELD;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    if (count_header(c, len))
        return -1;
    struct slot *s = c->cur;
    if (c->last == CB_FIELD) {
        c->target = HDR_NONE;
        if (c->field_len == 12 && memcmp(c->field, "content-type", 12) == 0 && !s->has_ct) {
            c->target = HDR_CONTENT_TYPE;
            s->has_ct = true;
            s->ct_off = s->len;
        } else if (c->field_len == 13 && memcmp(c->field, "authorization", 13) == 0 &&
                   !s->has_auth) {
            c->target = HDR_AUTHORIZATION;
            s->has_auth = true;
            s->auth_off = s->len;
        } else if (c->field_len == 15 && memcmp(c->field, "x-forwarded-for", 15) == 0) {
            /* The last one: a proxy adds its own after any the client sent. */
            c->target = HDR_FORWARDED_FOR;
            s->has_xff = true;
            s->xff_off = s->len;
        } else if (c->field_len == 17 && memcmp(c->field, "transfer-encoding", 17) == 0) {
            c->target = HDR_TRANSFER_ENCODING;
            c->te_headers++;
        }
    }
    if (c->target == HDR_TRANSFER_ENCODING) {
        for (size_t i = 0; i < len; i++, c->te_len++)
            if (c->te_len < TE_MAX - 1)
                c->te[c->te_len] = (char)(at[i] | 0x20);
        c->last = CB_VALUE;
        return 0;
    }
    if (c->target != HDR_NONE && !slot_append(s, at, len))
        return -1;
    c->last = CB_VALUE;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = conn_of(p);
    if (c->last == CB_URL && !slot_terminate(c->cur))
        return -1;
    if (end_value(c))
        return -1;
    /* Only chunked is read (http-parser's); a body in any other coding
     * (gzip, chunked) must not be taken for the JSON it is not. */
    if (c->te_headers > 0 &&
        (c->te_headers > 1 || c->te_len >= TE_MAX - 1 || !http_te_supported(c->te, c->te_len))) {
        c->bad_te = true;
        return -1;
    }
    c->cur->body_off = c->cur->len;
    /* A declared body over the bound is refused before it is read
     * (content_length is only meaningful with the header: http-parser
     * leaves it at ULLONG_MAX without one). */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->cfg.max_body_bytes) {
        c->too_large = true;
        c->message_done = true;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    struct slot *s = c->cur;
    if (s->len - s->body_off + len > c->srv->cfg.max_body_bytes) {
        c->too_large = true;
        c->message_done = true;
        http_parser_pause(p, 1);
        return 0;
    }
    s->has_body = true;
    return slot_append(s, at, len) ? 0 : -1;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = conn_of(p);
    c->message_done = true;
    /* One request at a time leaves the parser, so the handler runs with the
     * parser in a known state. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static enum httpd_method method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET: return HTTPD_GET;
    case HTTP_HEAD: return HTTPD_HEAD;
    case HTTP_POST: return HTTPD_POST;
    default: return HTTPD_OTHER;
    }
}

static void dispatch(struct conn *c)
{
    struct slot *s = c->cur;
    struct httpd_request *r = &s->req;
    if (!slot_terminate(s)) { /* the body's NUL, so text parsers may rely on it */
        c->close_after = true;
        return;
    }
    char *url = s->buf + s->url_off;
    char *q = strchr(url, '?');
    if (q)
        *q = '\0';
    r->method = method_of(c->parser.method);
    r->path = url;
    r->content_type = s->has_ct ? s->buf + s->ct_off : NULL;
    r->authorization = s->has_auth ? s->buf + s->auth_off : NULL;
    r->forwarded_for = s->has_xff ? s->buf + s->xff_off : NULL;
    r->peer = (const struct sockaddr *)&c->sa;
    r->body = s->buf + s->body_off;
    r->body_len = c->too_large ? 0 : s->len - 1 - s->body_off;
    r->too_large = c->too_large;
    r->conn = c;
    s->keep_alive = !c->too_large && http_should_keep_alive(&c->parser);
    s->replied = false;
    c->count++;
    c->pending++;
    c->in_message = false;
    c->cur = NULL;
    c->srv->st.requests++;
    if (!s->keep_alive)
        c->close_after = true;
    c->srv->handler(r, c->srv->arg);
}

static void bad_request(struct conn *c, int status)
{
    c->srv->st.bad_requests++;
    static const char body[] = "{\"error\":\"invalid_request\"}";
    static const char big[] = "{\"error\":\"headers_too_large\"}";
    static const char coding[] = "{\"error\":\"unsupported_transfer_encoding\"}";
    if (c->bad_te)
        status = 501;
    const char *b = status == 431 ? big : status == 501 ? coding : body;
    size_t blen = status == 431   ? sizeof(big) - 1
                  : status == 501 ? sizeof(coding) - 1
                                  : sizeof(body) - 1;
    /* The reply goes after those already owed; nothing more is parsed. */
    if (c->count == 0)
        render(&c->out, &c->out_len, &c->out_cap, status, NULL, b, blen, NULL, false, false);
    c->close_after = true;
    c->in_message = false;
}

/* Gives the socket, and the bytes of the passed request and all after it,
 * to the handoff receiver. */
static void conn_handoff(struct conn *c)
{
    struct httpd *h = c->srv;
    size_t len = c->in_len - c->handoff_from;
    char *prefix = malloc(len ? len : 1);
    int fd = c->fd;
    if (prefix == NULL) {
        conn_close(c);
        return;
    }
    memcpy(prefix, c->in + c->handoff_from, len);
    struct sockaddr_storage sa = c->sa;
    socklen_t salen = c->salen;
    c->fd = -1; /* the receiver owns it now */
    h->st.handed_off++;
    conn_close(c);
    h->handoff(fd, (struct sockaddr *)&sa, salen, prefix, len, h->classify_arg);
    free(prefix);
}

bool httpd_handoff(struct httpd_request *req)
{
    struct conn *c = req->conn;
    /* Only a request alone on its connection can move: earlier replies
     * must not be overtaken, later requests go along with it. */
    if (c->srv->handoff == NULL || c->count != 1 || c->out_len > c->out_off || req->too_large ||
        c->state != CONN_OPEN || !c->in_parse)
        return false;
    c->want_handoff = true;
    c->count--;
    c->pending--;
    c->head = (c->head + 1) % c->srv->cfg.max_pipeline;
    return true;
}

static void conn_parse(struct conn *c)
{
    struct httpd *h = c->srv;
    size_t off = c->parsed;
    c->in_parse = true;
    while (off < c->in_len && !c->close_after && c->state != CONN_DEAD) {
        if (c->count >= h->cfg.max_pipeline || c->out_len - c->out_off > OUT_BACKLOG_MAX) {
            c->read_paused = true;
            event_del(c->rev);
            break;
        }
        /* The parser pauses at every message's end, so outside a message
         * this is where the next one starts. */
        if (!c->in_message)
            c->msg_start = off;
        c->message_done = false;
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in + off, c->in_len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->message_done) {
                c->handoff_from = c->msg_start;
                dispatch(c);
                if (c->want_handoff)
                    break;
            }
            if (c->too_large) {
                c->close_after = true; /* the rest of the body is never read */
                break;
            }
            continue;
        }
        if (e != HPE_OK) {
            bad_request(c, c->header_bytes > h->cfg.max_header_bytes ? 431 : 400);
            break;
        }
    }
    c->in_parse = false;
    if (c->state == CONN_DEAD)
        return;
    if (c->want_handoff) {
        conn_handoff(c);
        return;
    }
    /* Parsed bytes go, but those of a message still incomplete stay: a
     * handler may pass the whole request on to another server. */
    size_t discard = c->in_message ? c->msg_start : off;
    if (discard > 0) {
        memmove(c->in, c->in + discard, c->in_len - discard);
        c->in_len -= discard;
    }
    c->parsed = off - discard;
    c->msg_start = 0;
    if (c->close_after)
        c->in_len = c->parsed = 0;
    conn_advance(c);
    if (c->count == 0 && !c->in_message && !c->close_after)
        set_timer(c, false);
    conn_flush(c);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    struct httpd *h = c->srv;
    size_t limit = h->cfg.max_header_bytes + h->cfg.max_body_bytes + READ_CHUNK;
    if (c->in_len >= limit) {
        bad_request(c, 431);
        conn_flush(c);
        return;
    }
    if (!reserve(&c->in, &c->in_cap, c->in_len + READ_CHUNK)) {
        conn_close(c);
        return;
    }
    ssize_t n = read(fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0 && (c->count > 0 || c->out_len > c->out_off)) {
        /* Half-closed (shutdown(SHUT_WR)) with replies owed: a client may
         * send its last request and then its FIN. Those answers count, so
         * their replies go out; nothing more is read, and the connection
         * closes once they are written (an unfinished request is dropped). */
        c->close_after = true;
        c->in_message = false;
        c->cur = NULL;
        c->in_len = c->parsed = 0;
        event_del(c->rev);
        conn_flush(c);
        return;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        /* The client is gone (or half-closed with nothing owed): answers it
         * waits for cannot be read by anyone once we close, but the
         * handlers still finish. */
        conn_close(c);
        return;
    }
    if (n < 0)
        return;
    c->in_len += (size_t)n;
    conn_parse(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (c->state == CONN_OPEN && c->count > 0 && !c->in_message)
        return; /* waiting for our own handlers, not for the client */
    c->srv->st.timeouts++;
    conn_close(c);
}

/* ---- accepting -------------------------------------------------------- */

static void conn_start(struct conn *c)
{
    c->state = CONN_OPEN;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    set_timer(c, false);
}

/* true when the first request's head ("\r\n\r\n") has arrived, or when
 * more than max bytes did (the receiver refuses an oversized head). */
static bool head_complete(int fd, uint32_t max)
{
    char buf[HTTPD_PEEK_HEAD_MAX];
    size_t cap = max + 4 < sizeof(buf) ? max + 4 : sizeof(buf);
    ssize_t n = recv(fd, buf, cap, MSG_PEEK);
    if (n <= 0)
        return n == 0 || (errno != EAGAIN && errno != EINTR); /* EOF or error: let it go */
    if ((size_t)n >= cap)
        return true;
    return memmem(buf, (size_t)n, "\r\n\r\n", 4) != NULL;
}

static void on_peek(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct httpd *h = c->srv;
    char buf[PEEK_MAX];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    int verdict = n > 0 ? h->classify(buf, (size_t)n, h->classify_arg) : 1;
    (void)what;
    /* The peek event is edge-triggered: it fires again only when more bytes
     * come, so a client that stops mid-line costs nothing until its
     * deadline (a level-triggered event would spin on the same bytes). */
    if (verdict < 0 && (size_t)n < sizeof(buf))
        return;
    /* What is handed over has sent its whole first head in time: the
     * receiving server's timeout only counts silence, so a client dribbling
     * its headers is held to the request deadline here. */
    if (verdict == 0 && !head_complete(fd, h->cfg.max_header_bytes))
        return;
    if (verdict == 0) {
        int hfd = c->fd;
        c->fd = -1; /* the receiver owns it now */
        h->st.handed_off++;
        struct sockaddr_storage sa = c->sa;
        socklen_t salen = c->salen;
        conn_close(c);
        h->handoff(hfd, (struct sockaddr *)&sa, salen, NULL, 0, h->classify_arg);
        return;
    }
    event_free(c->rev);
    c->rev = event_new(h->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    if (c->rev == NULL || event_add(c->rev, NULL) != 0) {
        conn_close(c);
        return;
    }
    conn_start(c);
    on_readable(c->fd, EV_READ, c);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct httpd *h = arg;
    accept_guard_failed(h->accept_guard);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)l;
    struct httpd *h = arg;
    size_t passed = h->passed_count ? h->passed_count(h->passed_arg) : 0;
    if (h->st.open_conns + passed >= h->cfg.max_conns) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                   "application/json\r\nContent-Length: 22\r\nRetry-After: 1\r\n"
                                   "Connection: close\r\n\r\n{\"error\":\"overloaded\"}";
        ssize_t rc = write(fd, busy, sizeof(busy) - 1);
        (void)rc; /* best effort: the connection is refused either way */
        close(fd);
        h->st.refused++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    struct conn *c = calloc(1, sizeof(*c));
    if (c)
        c->slots = calloc(h->cfg.max_pipeline, sizeof(*c->slots));
    if (h->nconns == h->cap_conns) {
        size_t cap = h->cap_conns ? h->cap_conns * 2 : 64;
        struct conn **conns = realloc(h->conns, cap * sizeof(*conns));
        if (conns) {
            h->conns = conns;
            h->cap_conns = cap;
        }
    }
    if (c == NULL || c->slots == NULL || h->nconns == h->cap_conns) {
        if (c)
            conn_free(c);
        close(fd);
        return;
    }
    c->srv = h;
    c->fd = fd;
    c->state = CONN_PEEK;
    if (salen > 0 && (size_t)salen <= sizeof(c->sa)) {
        memcpy(&c->sa, sa, (size_t)salen);
        c->salen = (socklen_t)salen;
    }
    h->conns[h->nconns++] = c;
    h->st.accepted++;
    h->st.open_conns++;
    c->wev = event_new(h->base, fd, EV_WRITE, on_writable, c);
    c->timer = evtimer_new(h->base, on_timeout, c);
    if (h->classify)
        c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST | EV_ET, on_peek, c);
    else
        c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    if (c->wev == NULL || c->timer == NULL || c->rev == NULL || event_add(c->rev, NULL) != 0) {
        conn_close(c);
        return;
    }
    if (h->classify) {
        c->timer_is_request = true;
        event_add(c->timer, h->request_tv);
    } else {
        conn_start(c);
    }
}

struct httpd *httpd_create(struct event_base *base, int listen_fd, const struct httpd_config *cfg,
                           httpd_handler_fn handler, void *arg)
{
    struct httpd *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        close(listen_fd);
        return NULL;
    }
    h->base = base;
    h->cfg = *cfg;
    if (h->cfg.max_pipeline == 0)
        h->cfg.max_pipeline = 1;
    h->handler = handler;
    h->arg = arg;
    struct timeval rt = {.tv_sec = cfg->request_timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(cfg->request_timeout_ms % 1000) * 1000};
    struct timeval it = {.tv_sec = cfg->idle_timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(cfg->idle_timeout_ms % 1000) * 1000};
    h->request_tv = event_base_init_common_timeout(base, &rt);
    h->idle_tv = event_base_init_common_timeout(base, &it);
    h->listener = evconnlistener_new(base, on_accept, h, LEV_OPT_CLOSE_ON_FREE, -1, listen_fd);
    if (h->listener == NULL)
        close(listen_fd);
    else if ((h->accept_guard = accept_guard_new(base, h->listener, "answers listener")) != NULL)
        evconnlistener_set_error_cb(h->listener, on_accept_error);
    if (h->listener == NULL || h->accept_guard == NULL || h->request_tv == NULL ||
        h->idle_tv == NULL) {
        httpd_free(h);
        return NULL;
    }
    return h;
}

void httpd_set_classifier(struct httpd *h, httpd_classify_fn classify, httpd_handoff_fn handoff,
                          void *arg)
{
    h->classify = classify;
    h->handoff = handoff;
    h->classify_arg = arg;
}

void httpd_set_passed_conns(struct httpd *h, size_t (*count)(const void *arg), const void *arg)
{
    h->passed_count = count;
    h->passed_arg = arg;
}

void httpd_stop_accepting(struct httpd *h)
{
    if (h->listener) {
        evconnlistener_free(h->listener);
        h->listener = NULL;
        accept_guard_free(h->accept_guard);
        h->accept_guard = NULL;
    }
}

void httpd_get_stats(const struct httpd *h, struct httpd_stats *out)
{
    *out = h->st;
}

void httpd_free(struct httpd *h)
{
    if (h == NULL)
        return;
    httpd_stop_accepting(h);
    while (h->nconns > 0) {
        struct conn *c = h->conns[h->nconns - 1];
        c->pending = 0; /* handlers are gone: nobody will answer */
        conn_close(c);
    }
    free(h->conns);
    free(h);
}

int httpd_listen_socket(const char *hostport, char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    if (!util_parse_hostport(hostport, host, sizeof(host), &port)) {
        snprintf(err, errlen, "--listen %s: expected HOST:PORT", hostport);
        return -1;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                    .ai_flags = EVUTIL_AI_PASSIVE};
    struct evutil_addrinfo *ai = NULL;
    char portbuf[8];
    snprintf(portbuf, sizeof(portbuf), "%u", port);
    int rc = evutil_getaddrinfo(host, portbuf, &hints, &ai);
    if (rc != 0 || ai == NULL) {
        snprintf(err, errlen, "--listen %s: %s", hostport, evutil_gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "--listen %s: cannot listen: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    evutil_freeaddrinfo(ai);
    return fd;
}
