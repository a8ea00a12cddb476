#include "loadhttp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util.h"

/* Bodies of the hot path and of the control requests stay far below this;
 * a Content-Length above it is taken as a broken peer. */
#define MAX_CONTENT_LENGTH (1ull << 30)
#define CHUNK_LINE_MAX 64

static bool url_char_ok(char c)
{
    unsigned char u = (unsigned char)c;
    return u > ' ' && u < 0x7f && c != '?' && c != '#' && c != '@' && c != '\\';
}

bool loadhttp_parse_url(const char *s, struct loadurl *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (s == NULL || s[0] == '\0')
        return util_fail(err, errlen, "empty URL");
    if (strncasecmp(s, "https://", 8) == 0)
        return util_fail(err, errlen, "%s: https is not supported (use http:// to a local endpoint)", s);
    if (strncasecmp(s, "http://", 7) != 0)
        return util_fail(err, errlen, "%s: expected http://HOST[:PORT][/PATH]", s);
    const char *p = s + 7;
    for (const char *q = p; *q != '\0'; q++) {
        if (!url_char_ok(*q))
            return util_fail(err, errlen,
                             "%s: user info, query strings, fragments and spaces are not supported", s);
    }
    const char *slash = strchr(p, '/');
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    const char *h;
    size_t hn;
    const char *after;
    if (alen > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', alen);
        if (close == NULL)
            return util_fail(err, errlen, "%s: unterminated [IPv6] address", s);
        h = p + 1;
        hn = (size_t)(close - h);
        after = close + 1;
        if (memchr(h, ':', hn) == NULL)
            return util_fail(err, errlen, "%s: brackets are only for IPv6 addresses", s);
    } else {
        const char *colon = memchr(p, ':', alen);
        h = p;
        hn = colon ? (size_t)(colon - p) : alen;
        after = p + hn;
    }
    if (hn == 0 || hn > LOADHTTP_HOST_MAX)
        return util_fail(err, errlen, "%s: missing or too long host", s);
    memcpy(u->host, h, hn);
    u->host[hn] = '\0';

    const char *aend = p + alen;
    u->port = 80;
    if (after < aend) {
        if (*after != ':')
            return util_fail(err, errlen, "%s: unexpected characters after the host", s);
        char portbuf[8];
        size_t pn = (size_t)(aend - after - 1);
        uint32_t port;
        if (pn == 0 || pn >= sizeof(portbuf))
            return util_fail(err, errlen, "%s: bad port", s);
        memcpy(portbuf, after + 1, pn);
        portbuf[pn] = '\0';
        if (!util_parse_u32(portbuf, 1, 65535, &port))
            return util_fail(err, errlen, "%s: bad port (1..65535)", s);
        u->port = (uint16_t)port;
    }
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(u->hostport, sizeof(u->hostport), v6 ? "[%s]:%u" : "%s:%u", u->host,
             (unsigned)u->port);

    if (slash != NULL) {
        size_t pl = strlen(slash);
        while (pl > 0 && slash[pl - 1] == '/')
            pl--;
        if (pl > LOADHTTP_PATH_MAX - 32)
            return util_fail(err, errlen, "%s: path too long", s);
        memcpy(u->base, slash, pl);
        u->base[pl] = '\0';
    }
    return true;
}

bool loadhttp_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

bool loadhttp_resolve(struct loadurl *u, bool allow_remote, char *err, size_t errlen)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", (unsigned)u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0)
        return util_fail(err, errlen, "%s: cannot resolve: %s", u->host, gai_strerror(rc));

    const struct addrinfo *pick = NULL;
    bool ok = true;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (!allow_remote && !loadhttp_is_loopback(ai->ai_addr)) {
            ok = false;
            break;
        }
        /* Servers listen on 127.0.0.1 by default, and "localhost" often
         * resolves to ::1 first: prefer IPv4. */
        if (pick == NULL || (pick->ai_family != AF_INET && ai->ai_family == AF_INET))
            pick = ai;
    }
    if (ok && (pick == NULL || pick->ai_addrlen > sizeof(u->addr)))
        ok = util_fail(err, errlen, "%s: no usable address", u->host);
    else if (!ok)
        util_fail(err, errlen, "%s is not a loopback address; pass --allow-remote to load a remote host",
                  u->host);
    if (ok) {
        memcpy(&u->addr, pick->ai_addr, pick->ai_addrlen);
        u->addrlen = pick->ai_addrlen;
    }
    freeaddrinfo(res);
    return ok;
}

bool loadhttp_path(const struct loadurl *u, const char *path, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s%s", u->base, path);
    return n > 0 && (size_t)n < len;
}

/* ---- response parser ---------------------------------------------------- */

static bool header_is(const char *name, size_t nlen, const char *want)
{
    size_t wl = strlen(want);
    return nlen == wl && strncasecmp(name, want, wl) == 0;
}

/* Whether a comma-separated header value holds the token (case-insensitive). */
static bool has_token(const char *v, size_t vlen, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < vlen && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

/* Walks the chunk framing from body; the length of the whole framed body
 * (last chunk and trailers included) in *framed. */
static enum loadhttp_parse chunked_length(const char *body, size_t len, size_t *framed)
{
    size_t pos = 0;
    for (;;) {
        /* chunk-size [; ext] CRLF */
        const char *nl = memchr(body + pos, '\n', len - pos);
        if (nl == NULL)
            return len - pos > CHUNK_LINE_MAX ? LOADHTTP_PARSE_BAD : LOADHTTP_PARSE_PARTIAL;
        size_t line_end = (size_t)(nl - body);
        if (line_end - pos > CHUNK_LINE_MAX || line_end == pos || body[line_end - 1] != '\r')
            return LOADHTTP_PARSE_BAD;
        uint64_t size = 0;
        size_t i = pos;
        size_t digits = 0;
        for (; i < line_end - 1; i++, digits++) {
            char c = body[i];
            unsigned d;
            if (c >= '0' && c <= '9')
                d = (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                d = (unsigned)(c - 'A' + 10);
            else
                break;
            if (size > (MAX_CONTENT_LENGTH >> 4))
                return LOADHTTP_PARSE_BAD;
            size = size * 16 + d;
        }
        if (digits == 0 || (i < line_end - 1 && body[i] != ';' && body[i] != ' '))
            return LOADHTTP_PARSE_BAD;
        pos = line_end + 1;
        if (size == 0) {
            /* trailers until an empty line */
            for (;;) {
                const char *tl = memchr(body + pos, '\n', len - pos);
                if (tl == NULL)
                    return len - pos > LOADHTTP_MAX_HEAD ? LOADHTTP_PARSE_BAD
                                                         : LOADHTTP_PARSE_PARTIAL;
                size_t te = (size_t)(tl - body);
                bool empty = te == pos || (te == pos + 1 && body[pos] == '\r');
                pos = te + 1;
                if (empty) {
                    *framed = pos;
                    return LOADHTTP_PARSE_OK;
                }
            }
        }
        if (len - pos < size + 2)
            return LOADHTTP_PARSE_PARTIAL;
        if (body[pos + size] != '\r' || body[pos + size + 1] != '\n')
            return LOADHTTP_PARSE_BAD;
        pos += (size_t)size + 2;
    }
}

/*
 *   HTTP/1.1 202 Accepted\r\n
 *   Content-Type: application/json\r\n
 *   Content-Length: 23\r\n
 *   \r\n
 *   {"status":"accepted"}
 */
enum loadhttp_parse loadhttp_parse_response(const char *buf, size_t len, bool eof,
                                            struct loadhttp_resp *r)
{
    memset(r, 0, sizeof(*r));
    size_t scan = len < LOADHTTP_MAX_HEAD ? len : LOADHTTP_MAX_HEAD;
    const char *end = memmem(buf, scan, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len >= LOADHTTP_MAX_HEAD || eof)
            return LOADHTTP_PARSE_BAD;
        /* Only the start can be checked before the head is whole. */
        size_t n = len < 7 ? len : 7;
        return memcmp(buf, "HTTP/1.", n) == 0 ? LOADHTTP_PARSE_PARTIAL : LOADHTTP_PARSE_BAD;
    }
    size_t head_len = (size_t)(end - buf) + 4;

    /* Status line: "HTTP/1.x SSS[ reason]" */
    if (head_len < 16 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') ||
        buf[8] != ' ')
        return LOADHTTP_PARSE_BAD;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return LOADHTTP_PARSE_BAD;
        status = status * 10 + (buf[i] - '0');
    }
    if (status < 100 || status > 599 || (buf[12] != ' ' && buf[12] != '\r'))
        return LOADHTTP_PARSE_BAD;
    bool http10 = buf[7] == '0';
    bool close = http10;

    bool have_cl = false;
    uint64_t cl = 0;
    bool chunked = false;
    const char *line = memchr(buf, '\n', head_len) + 1;
    const char *hend = buf + head_len - 2; /* the final CRLF */
    while (line < hend) {
        const char *nl = memchr(line, '\n', (size_t)(hend + 2 - line));
        if (nl == NULL || nl == line || nl[-1] != '\r')
            return LOADHTTP_PARSE_BAD;
        const char *colon = memchr(line, ':', (size_t)(nl - line));
        if (colon == NULL || colon == line)
            return LOADHTTP_PARSE_BAD;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *vend = nl - 1;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        size_t vlen = (size_t)(vend - v);
        if (header_is(line, nlen, "content-length")) {
            uint64_t x = 0;
            if (vlen == 0 || vlen > 12)
                return LOADHTTP_PARSE_BAD;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return LOADHTTP_PARSE_BAD;
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            /* Two different lengths make the framing ambiguous (smuggling). */
            if (x > MAX_CONTENT_LENGTH || (have_cl && x != cl))
                return LOADHTTP_PARSE_BAD;
            have_cl = true;
            cl = x;
        } else if (header_is(line, nlen, "transfer-encoding")) {
            chunked = has_token(v, vlen, "chunked");
            if (!chunked && !has_token(v, vlen, "identity"))
                return LOADHTTP_PARSE_BAD;
        } else if (header_is(line, nlen, "retry-after")) {
            uint32_t s = 0;
            size_t i = 0;
            for (; i < vlen && i < 9 && v[i] >= '0' && v[i] <= '9'; i++)
                s = s * 10 + (uint32_t)(v[i] - '0');
            r->retry_after_s = i == vlen && s <= 86400 ? s : i == vlen ? 86400 : 0;
        } else if (header_is(line, nlen, "connection")) {
            if (has_token(v, vlen, "close"))
                close = true;
            else if (http10 && has_token(v, vlen, "keep-alive"))
                close = false;
        }
        line = nl + 1;
    }

    r->status = status;
    r->head_len = head_len;
    r->close = close;
    r->body = buf + head_len;
    size_t avail = len - head_len;
    if ((status >= 100 && status < 200) || status == 204 || status == 304) {
        r->total_len = head_len;
        return LOADHTTP_PARSE_OK;
    }
    if (chunked) {
        size_t framed;
        enum loadhttp_parse pr = chunked_length(r->body, avail, &framed);
        if (pr == LOADHTTP_PARSE_PARTIAL && eof)
            return LOADHTTP_PARSE_BAD;
        if (pr != LOADHTTP_PARSE_OK)
            return pr;
        r->chunked = true;
        r->body_len = framed;
        r->total_len = head_len + framed;
        return LOADHTTP_PARSE_OK;
    }
    if (have_cl) {
        if (avail < cl)
            return eof ? LOADHTTP_PARSE_BAD : LOADHTTP_PARSE_PARTIAL;
        r->body_len = (size_t)cl;
        r->total_len = head_len + (size_t)cl;
        return LOADHTTP_PARSE_OK;
    }
    /* No framing: the body runs to the end of the connection. */
    if (!eof)
        return LOADHTTP_PARSE_PARTIAL;
    r->close = true;
    r->body_len = avail;
    r->total_len = len;
    return LOADHTTP_PARSE_OK;
}

long loadhttp_dechunk(char *body, size_t len)
{
    size_t framed;
    if (chunked_length(body, len, &framed) != LOADHTTP_PARSE_OK)
        return -1;
    size_t in = 0;
    size_t out = 0;
    for (;;) {
        uint64_t size = 0;
        while (in < len) {
            char c = body[in];
            unsigned d;
            if (c >= '0' && c <= '9')
                d = (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                d = (unsigned)(c - 'A' + 10);
            else
                break;
            size = size * 16 + d;
            in++;
        }
        const char *nl = memchr(body + in, '\n', len - in);
        in = (size_t)(nl - body) + 1;
        if (size == 0)
            break;
        memmove(body + out, body + in, (size_t)size);
        out += (size_t)size;
        in += (size_t)size + 2;
    }
    return (long)out;
}

void loadhttp_error_code(const char *body, size_t len, char *code, size_t codelen)
{
    if (codelen == 0)
        return;
    code[0] = '\0';
    const char *p = memmem(body, len, "\"error\"", 7);
    if (p == NULL)
        return;
    const char *end = body + len;
    p += 7;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p == end || *p != ':')
        return;
    p++;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p == end || *p != '"')
        return;
    p++;
    size_t n = 0;
    /* Error codes are identifiers; anything else ends the copy. */
    while (p < end && n + 1 < codelen &&
           ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '_' || *p == '-' || *p == '.'))
        code[n++] = *p++;
    code[n] = '\0';
}

/* ---- blocking client ---------------------------------------------------- */

static int64_t ms_left(uint64_t deadline_ms)
{
    uint64_t now = util_mono_ms();
    return now >= deadline_ms ? 0 : (int64_t)(deadline_ms - now);
}

static bool wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        int64_t left = ms_left(deadline_ms);
        if (left == 0)
            return false;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, (int)left);
        if (rc > 0)
            return true;
        if (rc == 0)
            return false;
        if (errno != EINTR)
            return false;
    }
}

bool loadhttp_fetch(const struct loadurl *u, const char *method, const char *path,
                    const char *token, const char *body, size_t body_len, uint32_t timeout_ms,
                    size_t max_body, struct loadhttp_reply *out, char *err, size_t errlen)
{
    int fd = -1;
    char *req = NULL;
    char *buf = NULL;
    bool ok = false;
    uint64_t deadline = util_mono_ms() + timeout_ms;
    memset(out, 0, sizeof(*out));

    char fullpath[LOADHTTP_PATH_MAX + 64];
    if (!loadhttp_path(u, path, fullpath, sizeof(fullpath))) {
        util_fail(err, errlen, "path too long");
        goto done;
    }
    size_t reqcap = 1024 + body_len;
    req = malloc(reqcap);
    if (req == NULL) {
        util_fail(err, errlen, "out of memory");
        goto done;
    }
    int n = snprintf(req, reqcap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: livetally-loadtest/%s\r\n"
                     "Accept: application/json\r\nConnection: close\r\n%s%s%s"
                     "Content-Length: %zu\r\n%s\r\n",
                     method, fullpath, u->hostport, LIVETALLY_VERSION,
                     token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
                     body_len, body_len ? "Content-Type: application/json\r\n" : "");
    if (n < 0 || (size_t)n + body_len >= reqcap) {
        util_fail(err, errlen, "request too large");
        goto done;
    }
    if (body_len)
        memcpy(req + n, body, body_len);
    size_t reqlen = (size_t)n + body_len;

    fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        util_fail(err, errlen, "socket: %s", strerror(errno));
        goto done;
    }
    if (connect(fd, (const struct sockaddr *)&u->addr, u->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            util_fail(err, errlen, "connect %s: %s", u->hostport, strerror(errno));
            goto done;
        }
        if (!wait_fd(fd, POLLOUT, deadline)) {
            util_fail(err, errlen, "connect %s: timed out", u->hostport);
            goto done;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            util_fail(err, errlen, "connect %s: %s", u->hostport, strerror(soerr ? soerr : errno));
            goto done;
        }
    }
    size_t sent = 0;
    while (sent < reqlen) {
        ssize_t w = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline)) {
                util_fail(err, errlen, "%s: send timed out", u->hostport);
                goto done;
            }
        } else {
            util_fail(err, errlen, "%s: send: %s", u->hostport, strerror(errno));
            goto done;
        }
    }

    size_t cap = LOADHTTP_MAX_HEAD + max_body + 1;
    size_t len = 0;
    size_t bufcap = 16384 < cap ? 16384 : cap;
    buf = malloc(bufcap);
    if (buf == NULL) {
        util_fail(err, errlen, "out of memory");
        goto done;
    }
    bool eof = false;
    for (;;) {
        struct loadhttp_resp r;
        enum loadhttp_parse pr = loadhttp_parse_response(buf, len, eof, &r);
        if (pr == LOADHTTP_PARSE_OK && r.status >= 100 && r.status < 200) {
            /* an interim response: drop it and read on */
            memmove(buf, buf + r.total_len, len - r.total_len);
            len -= r.total_len;
            continue;
        }
        if (pr == LOADHTTP_PARSE_OK) {
            if (r.body_len > max_body && !r.chunked) {
                util_fail(err, errlen, "%s%s: response body over %zu bytes", u->hostport, fullpath,
                          max_body);
                goto done;
            }
            char *b = malloc(r.body_len + 1);
            if (b == NULL) {
                util_fail(err, errlen, "out of memory");
                goto done;
            }
            memcpy(b, r.body, r.body_len);
            size_t blen = r.body_len;
            if (r.chunked) {
                long d = loadhttp_dechunk(b, blen);
                if (d < 0 || (size_t)d > max_body) {
                    free(b);
                    util_fail(err, errlen, "%s%s: bad or oversized chunked body", u->hostport,
                              fullpath);
                    goto done;
                }
                blen = (size_t)d;
            }
            b[blen] = '\0';
            out->status = r.status;
            out->body = b;
            out->body_len = blen;
            ok = true;
            goto done;
        }
        if (pr == LOADHTTP_PARSE_BAD) {
            util_fail(err, errlen, "%s%s: malformed HTTP response", u->hostport, fullpath);
            goto done;
        }
        if (eof) {
            util_fail(err, errlen, "%s%s: connection closed before the response ended", u->hostport,
                      fullpath);
            goto done;
        }
        if (len + 1 >= bufcap) {
            if (bufcap >= cap) {
                util_fail(err, errlen, "%s%s: response over %zu bytes", u->hostport, fullpath, cap);
                goto done;
            }
            size_t nc = bufcap * 2 < cap ? bufcap * 2 : cap;
            char *nb = realloc(buf, nc);
            if (nb == NULL) {
                util_fail(err, errlen, "out of memory");
                goto done;
            }
            buf = nb;
            bufcap = nc;
        }
        ssize_t rd = recv(fd, buf + len, bufcap - 1 - len, 0);
        if (rd > 0) {
            len += (size_t)rd;
        } else if (rd == 0) {
            eof = true;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(fd, POLLIN, deadline)) {
                util_fail(err, errlen, "%s%s: no response within %u ms", u->hostport, fullpath,
                          timeout_ms);
                goto done;
            }
        } else {
            util_fail(err, errlen, "%s%s: recv: %s", u->hostport, fullpath, strerror(errno));
            goto done;
        }
    }

done:
    free(buf);
    free(req);
    if (fd >= 0)
        close(fd);
    return ok;
}

void loadhttp_reply_free(struct loadhttp_reply *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}
