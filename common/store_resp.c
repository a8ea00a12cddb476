/*
 * Redis connections on hiredis (store_resp.h).
 */
#include "store_resp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "util.h"

/* ---- the reader: no allocation per reply ---- */

/* Every callback returns the connection itself: hiredis needs a non-NULL
 * object per value and never looks inside it; freeObject does nothing. */

static void elem(const redisReadTask *t, enum resp_type type, const char *s, size_t len,
                 long long v)
{
    struct resp_conn *c = t->privdata;
    int path[RESP_DEPTH_MAX];
    int depth = 0;
    for (const redisReadTask *p = t; p->parent != NULL; p = p->parent)
        depth++;
    if (c->elem == NULL || depth > RESP_DEPTH_MAX)
        return;
    int d = depth;
    for (const redisReadTask *p = t; p->parent != NULL; p = p->parent)
        path[--d] = p->idx;
    c->elem(c->elem_arg, path, depth, type, s, len, v);
}

static void *on_string(const redisReadTask *t, char *s, size_t len)
{
    struct resp_conn *c = t->privdata;
    if (t->parent != NULL) {
        elem(t, (enum resp_type)t->type, s, len, 0);
        return c;
    }
    struct resp_reply *r = &c->reply;
    r->type = (enum resp_type)t->type;
    r->len = len;
    size_t n = len < RESP_TEXT_MAX - 1 ? len : RESP_TEXT_MAX - 1;
    memcpy(r->text, s, n);
    r->text[n] = '\0';
    if (t->type == RESP_STRING && c->keep_blob) {
        if (len > STORE_MAX_VALUE) {
            r->too_big = true;
        } else {
            r->blob = malloc(len + 1);
            if (r->blob == NULL)
                return NULL; /* the reader fails: out of memory */
            memcpy(r->blob, s, len);
            r->blob[len] = '\0';
        }
    }
    return c;
}

static void *on_array(const redisReadTask *t, int elements)
{
    struct resp_conn *c = t->privdata;
    if (t->parent != NULL) {
        elem(t, RESP_ARRAY, NULL, 0, elements);
        return c;
    }
    c->reply.type = RESP_ARRAY;
    c->reply.integer = elements;
    return c;
}

static void *on_integer(const redisReadTask *t, long long v)
{
    struct resp_conn *c = t->privdata;
    if (t->parent != NULL) {
        elem(t, RESP_INTEGER, NULL, 0, v);
        return c;
    }
    c->reply.type = RESP_INTEGER;
    c->reply.integer = v;
    return c;
}

static void *on_nil(const redisReadTask *t)
{
    struct resp_conn *c = t->privdata;
    if (t->parent != NULL) {
        elem(t, RESP_NIL, NULL, 0, 0);
        return c;
    }
    c->reply.type = RESP_NIL;
    return c;
}

static void on_free(void *obj)
{
    (void)obj;
}

/* Never written; not const only because hiredis' field is not. */
static redisReplyObjectFunctions reply_fns = {
    .createString = on_string,
    .createArray = on_array,
    .createInteger = on_integer,
    .createNil = on_nil,
    .freeObject = on_free,
};

/* ---- connection ---- */

/* A fresh blocking context becomes c's, with the I/O timeout and our
 * reader; false (ctx freed) when it failed. */
static bool adopt(struct resp_conn *c, redisContext *ctx, uint32_t timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    if (ctx->err != 0 || redisSetTimeout(ctx, tv) != REDIS_OK) {
        redisFree(ctx);
        return false;
    }
    /* hiredis 0.14 lets the reader's functions be swapped on a live
     * context: the reader holds no reply yet. */
    ctx->reader->fn = &reply_fns;
    ctx->reader->privdata = c;
    c->ctx = ctx;
    c->cut = false;
    c->gen++;
    return true;
}

bool resp_connect(struct resp_conn *c, const char *host, uint16_t port, uint32_t timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    resp_close(c);
    redisContext *ctx = redisConnectWithTimeout(host, port, tv);
    return ctx != NULL && adopt(c, ctx, timeout_ms);
}

int resp_connect_start(const char *host, uint16_t port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0 || ai == NULL)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

bool resp_connect_finish(struct resp_conn *c, int fd, uint32_t timeout_ms)
{
    int soerr = 0, one = 1;
    socklen_t len = sizeof(soerr);
    resp_close(c);
    int fl = fcntl(fd, F_GETFL);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0 || fl < 0 ||
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        close(fd);
        return false;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    redisContext *ctx = redisConnectFd(fd); /* blocking, as redisConnectWithTimeout's */
    if (ctx == NULL) {
        close(fd);
        return false;
    }
    return adopt(c, ctx, timeout_ms);
}

long resp_write_some(struct resp_conn *c, const char *buf, size_t len)
{
    ssize_t n = send(c->ctx->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0)
        return (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    c->cut = errno == ECONNRESET || errno == EPIPE;
    return -1;
}

int resp_fill(struct resp_conn *c)
{
    char buf[16 * 1024];
    ssize_t n = recv(c->ctx->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
        return redisReaderFeed(c->ctx->reader, buf, (size_t)n) == REDIS_OK ? 1 : -1;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    c->cut = n == 0 || errno == ECONNRESET || errno == EPIPE;
    return -1;
}

enum resp_result resp_take(struct resp_conn *c)
{
    redisReader *rd = c->ctx->reader;
    /* A reply half parsed by an earlier call keeps what it set: an array's
     * top level is reported once, when its header is read. */
    if (rd->ridx == -1) {
        free(c->reply.blob);
        c->reply = (struct resp_reply){.type = RESP_NONE};
    }
    void *obj = NULL;
    if (redisReaderGetReply(rd, &obj) != REDIS_OK)
        return rd->err == REDIS_ERR_OOM ? RESP_NOMEM : RESP_FAILED;
    if (obj != NULL)
        return RESP_OK;
    return rd->len - rd->pos > RESP_READ_MAX ? RESP_TOO_BIG : RESP_PARTIAL;
}

void resp_close(struct resp_conn *c)
{
    if (c->ctx != NULL)
        redisFree(c->ctx);
    c->ctx = NULL;
    free(c->reply.blob);
    c->reply.blob = NULL;
}

int resp_release(struct resp_conn *c)
{
    int fd = -1;
    if (c->ctx != NULL) {
        fd = c->ctx->fd;
        c->ctx->fd = -1; /* redisFree closes only a valid descriptor */
    }
    resp_close(c);
    return fd;
}

bool resp_stale(const struct resp_conn *c)
{
    struct pollfd pfd = {.fd = c->ctx->fd, .events = POLLIN | POLLRDHUP};
    return poll(&pfd, 1, 0) != 0;
}

int resp_fd(const struct resp_conn *c)
{
    return c->ctx->fd;
}

bool resp_buffered(const struct resp_conn *c)
{
    return c->ctx->reader->len > c->ctx->reader->pos;
}

/* The context failed in I/O: was it the peer closing or resetting? (A
 * timeout is EAGAIN on the blocking socket.) */
static bool failed_by_peer(const redisContext *ctx, int err)
{
    return ctx->err == REDIS_ERR_EOF ||
           (ctx->err == REDIS_ERR_IO && (err == ECONNRESET || err == EPIPE));
}

bool resp_send(struct resp_conn *c, const char *buf, size_t len, size_t *sent)
{
    redisContext *ctx = c->ctx;
    bool cut = false;
    *sent = 0;
    /* Our connections never keep unsent bytes between calls. */
    if (sdslen(ctx->obuf) != 0 || redisAppendFormattedCommand(ctx, buf, len) != REDIS_OK)
        goto fail;
    int done = 0;
    do {
        if (redisBufferWrite(ctx, &done) != REDIS_OK) {
            cut = failed_by_peer(ctx, errno);
            *sent = len - sdslen(ctx->obuf);
            goto fail;
        }
    } while (!done);
    *sent = len;
    return true;
fail:
    resp_close(c);
    c->cut = cut;
    return false;
}

enum resp_result resp_read(struct resp_conn *c)
{
    redisContext *ctx = c->ctx;
    enum resp_result res = RESP_FAILED;
    bool cut = false;
    free(c->reply.blob);
    c->reply = (struct resp_reply){.type = RESP_NONE};
    for (;;) {
        void *obj = NULL;
        if (redisReaderGetReply(ctx->reader, &obj) != REDIS_OK) {
            if (ctx->reader->err == REDIS_ERR_OOM)
                res = RESP_NOMEM;
            break; /* else a protocol error */
        }
        if (obj != NULL)
            return RESP_OK;
        /* What is buffered is one reply in progress: bound it. */
        if (ctx->reader->len - ctx->reader->pos > RESP_READ_MAX) {
            res = RESP_TOO_BIG;
            break;
        }
        if (redisBufferRead(ctx) != REDIS_OK) {
            cut = failed_by_peer(ctx, errno);
            break; /* EOF, error or the I/O timeout */
        }
    }
    resp_close(c);
    c->cut = cut;
    return res;
}

enum resp_result resp_call(struct resp_conn *c, int argc, const char **argv,
                           const size_t *argvlen, size_t *sent)
{
    char *cmd = NULL;
    *sent = 0;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return RESP_NOMEM; /* nothing sent, the connection is fine */
    bool ok = resp_send(c, cmd, (size_t)len, sent);
    redisFreeCommand(cmd);
    return ok ? resp_read(c) : RESP_FAILED;
}

/* ---- formatting ---- */

char *resp_put_u64(char *p, uint64_t v)
{
    return p + util_format_u64(p, v);
}

char *resp_put_cmd(char *p, unsigned argc)
{
    *p++ = '*';
    p = resp_put_u64(p, argc);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

char *resp_put_arg(char *p, const char *s, size_t len)
{
    *p++ = '$';
    p = resp_put_u64(p, len);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/*
 *   MOVED 3999 127.0.0.1:6381      ASK 3999 [::1]:6381
 */
bool resp_parse_redirect(const char *text, const char *kind, uint16_t *slot, char *host,
                         size_t hostcap, uint16_t *port)
{
    size_t klen = strlen(kind);
    if (strncmp(text, kind, klen) != 0 || text[klen] != ' ')
        return false;
    const char *p = text + klen + 1;
    const char *sp = strchr(p, ' ');
    if (sp == NULL || sp == p || sp - p > 5)
        return false;
    char num[8];
    memcpy(num, p, (size_t)(sp - p));
    num[sp - p] = '\0';
    uint32_t v;
    if (!util_parse_u32(num, 0, 16383, &v))
        return false;
    const char *addr = sp + 1;
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return false;
    const char *h = addr;
    size_t hlen = (size_t)(colon - addr);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    uint32_t pv;
    if (hlen == 0 || hlen >= hostcap || !util_parse_u32(colon + 1, 1, 65535, &pv))
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *slot = (uint16_t)v;
    *port = (uint16_t)pv;
    return true;
}
