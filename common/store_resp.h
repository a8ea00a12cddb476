/*
 * One Redis connection for the redis:// and redis-cluster:// backends, on
 * hiredis' blocking API: connect with the timeout, write a pipeline of
 * commands we format ourselves, read the replies one by one. The I/O
 * timeout is set on the socket, so a node that stops answering costs one
 * timeout and the call fails. Only store_*.c and tests include this.
 *
 * Why the blocking API and not hiredis' libevent adapter: the store runs on
 * threads of their own (worker.h), where blocking stalls nothing, and a
 * batch is one write of every command to every node followed by one read of
 * every reply, which needs no event loop to be pipelined. Redis buffers its
 * replies in memory while it reads a pipeline, so writing a whole chunk
 * before reading cannot deadlock. The one caller on an event loop, the
 * redis:// backend's store_incr_start and store_add_start, drives the same
 * connections with the calls below that never wait (MSG_DONTWAIT, the
 * reader fed by hand); hiredis' adapter would have meant a second,
 * callback-per-reply engine beside the batch one.
 *
 * Replies are parsed by hiredis' reader with callbacks that allocate
 * nothing: a top-level scalar goes into struct resp_reply, the elements of
 * an array go to the connection's element callback (MGET values straight
 * into the caller's ops, CLUSTER SLOTS into the slot map). A reply, or the
 * part of one waiting in the read buffer, is bounded by RESP_READ_MAX: a
 * larger one closes the connection.
 */
#ifndef LT_STORE_RESP_H
#define LT_STORE_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A reply in flight may hold one value of up to STORE_MAX_VALUE bytes. */
#define RESP_READ_MAX (STORE_MAX_VALUE + 64u * 1024u)
#define RESP_TEXT_MAX 160u

/* The reply types hiredis reports (REDIS_REPLY_*), without its header. */
enum resp_type {
    RESP_NONE = 0,
    RESP_STRING = 1,
    RESP_ARRAY = 2,
    RESP_INTEGER = 3,
    RESP_NIL = 4,
    RESP_STATUS = 5,
    RESP_ERROR = 6,
};

/* The top-level part of the last reply read. */
struct resp_reply {
    enum resp_type type;
    long long integer;        /* RESP_INTEGER; RESP_ARRAY: its element count */
    char text[RESP_TEXT_MAX]; /* status, error or bulk string, truncated, NUL-terminated */
    size_t len;               /* its whole length */
    char *blob;               /* a bulk string, kept when keep_blob: malloc'd, NUL-terminated,
                               * owned by the caller once read */
    bool too_big;             /* a bulk string over STORE_MAX_VALUE (not kept) */
};

/* An element of an array reply: path[0] is its index in the top-level
 * array, path[1] in the array under it, and so on (depth entries). */
typedef void (*resp_elem_fn)(void *arg, const int *path, int depth, enum resp_type type,
                             const char *s, size_t len, long long v);

#define RESP_DEPTH_MAX 4

struct resp_conn {
    struct redisContext *ctx; /* NULL: not connected */
    uint32_t epoch;           /* the node's health epoch at connect */
    struct resp_reply reply;
    /* How the next reply is read (set before resp_read): */
    bool keep_blob;
    resp_elem_fn elem;        /* NULL: array elements are ignored */
    void *elem_arg;
    /* The last failure closed it because the peer closed or reset it (not
     * a timeout, nor a protocol error); cleared by resp_connect. */
    bool cut;
    uint64_t gen;             /* bumped by every connect: tells a new connection from an old
                               * one that had the same descriptor number */
};

/* Connects (TCP_NODELAY, I/O timeout timeout_ms); false when the node
 * cannot be reached in time. */
bool resp_connect(struct resp_conn *c, const char *host, uint16_t port, uint32_t timeout_ms);
void resp_close(struct resp_conn *c);
/* Closes the connection's context but hands its socket over (-1 if none):
 * for store_drain.h. */
int resp_release(struct resp_conn *c);
static inline bool resp_connected(const struct resp_conn *c)
{
    return c->ctx != NULL;
}

/* An idle connection that shows readable was closed by the server
 * (restart, idle timeout): better reconnect than send into it. */
bool resp_stale(const struct resp_conn *c);

/* For waiting on several connections at once: the socket, and whether a
 * reply (or part of one) is already buffered, so that poll would not show
 * it. */
int resp_fd(const struct resp_conn *c);
bool resp_buffered(const struct resp_conn *c);

/* Writes len bytes of formatted commands; *sent says how many reached the
 * kernel even on failure (commands past it certainly did not reach the
 * server). On failure the connection is closed. */
bool resp_send(struct resp_conn *c, const char *buf, size_t len, size_t *sent);

enum resp_result {
    RESP_OK = 0,
    RESP_FAILED,  /* EOF, timeout, error, protocol error: the node failed */
    RESP_TOO_BIG, /* a reply over RESP_READ_MAX: the node is fine, the reply is not ours */
    RESP_NOMEM,
    RESP_PARTIAL, /* resp_take only: no whole reply buffered yet */
};

/* Reads one complete reply into c->reply (array elements through c->elem).
 * Unless RESP_OK the connection is closed. */
enum resp_result resp_read(struct resp_conn *c);

/* ---- without blocking, for an engine on an event loop ----
 * The connection stays a blocking one (the calls above work on it as
 * ever); these pass MSG_DONTWAIT. None closes the connection: on failure
 * the caller does, after taking its events off the descriptor. */

/* A connect to a numeric host begun without waiting: the socket (wait for
 * it to be writable, then resp_connect_finish), or -1. */
int resp_connect_start(const char *host, uint16_t port);
/* The connect of fd (resp_connect_start's) completed: c becomes connected
 * on it, as resp_connect leaves it. false (fd closed) when it failed. */
bool resp_connect_finish(struct resp_conn *c, int fd, uint32_t timeout_ms);
/* Writes what the socket takes now: the bytes written (0: none fit), or -1
 * when the connection failed (c->cut: by the peer). */
long resp_write_some(struct resp_conn *c, const char *buf, size_t len);
/* Reads what the socket has into the reader: 1 something, 0 nothing yet,
 * -1 the connection ended or failed (c->cut: by the peer). */
int resp_fill(struct resp_conn *c);
/* The next reply if it is buffered whole (into c->reply, array elements
 * through c->elem): RESP_OK; RESP_PARTIAL when it is not; else as
 * resp_read, but the connection stays open. */
enum resp_result resp_take(struct resp_conn *c);

/* Sends one command (argv) and reads its reply; *sent as resp_send's.
 * RESP_NOMEM with the connection still open when the command could not be
 * formatted (nothing sent). */
enum resp_result resp_call(struct resp_conn *c, int argc, const char **argv,
                           const size_t *argvlen, size_t *sent);

/* RESP formatting without allocation: "*<argc>\r\n", then each argument
 * as "$<len>\r\n<bytes>\r\n". An argument costs len + RESP_ARG_COST bytes. */
#define RESP_ARG_COST 16u
char *resp_put_cmd(char *p, unsigned argc);
char *resp_put_arg(char *p, const char *s, size_t len);
char *resp_put_u64(char *p, uint64_t v);

/* "MOVED <slot> <host>:<port>" / "ASK ..." error text: true with the slot
 * and the address (host without brackets, NUL-terminated). */
bool resp_parse_redirect(const char *text, const char *kind, uint16_t *slot, char *host,
                         size_t hostcap, uint16_t *port);

#endif
