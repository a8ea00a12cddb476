/*
 * The Redis pool backend (redis://HOST:PORT,...): independent Redis
 * servers, keys placed by the same ketama continuum as the memcached pool
 * (ketama.h) and replicated by the pool layer (store_pool.h). This file is
 * the engine that runs commands on the nodes the pool chose, over one
 * hiredis connection per node per handle (store_resp.h).
 *
 * A counter write is two pipelined commands:
 *
 *   INCRBY <key> <delta>     -> :<new value>     the reply confirms the increment
 *   EXPIRE <key> <ttl>       -> :1               (PERSIST <key> for ttl 0)
 *
 * Measured against the alternative, one EVALSHA of a script doing both
 * (redis-benchmark -P 64 over 100k keys, one server, this machine): INCRBY
 * ~500k/s and EXPIRE ~460k/s alone, so ~240k pairs/s, against ~210k/s for
 * the script. The pair is no slower, needs no script loaded on every node
 * (NOSCRIPT after a restart), and the INCRBY reply alone decides the item.
 * The cost: the EXPIRE also runs when INCRBY is refused (a blob at a
 * counter's key gets its TTL refreshed).
 *
 * Reads: MGET of at most 1000 keys per command, every node's commands
 * written before any reply is read. Per node a batch goes in chunks (1024
 * writes or 4 MGETs, at most 64 KiB of commands): write the chunk to every
 * node, then read every node's replies, so the nodes work in parallel.
 *
 * Failure handling is the memcached backend's: a node that fails is marked
 * down for a backoff shared by every clone; commands for a down node are
 * STORE_UNAVAILABLE without being sent; a command that may have reached a
 * node before it failed is STORE_ERROR (outcome unknown). A cut (the peer
 * closed or reset the connection in a batch) marks the node down too (see
 * store_memcached.c). With replicas >= 2 an increment batch gives up on the
 * replicas still outstanding replica_lag_ms after every item was
 * confirmed (store_pool.h, "lag"): then the replies are read in the order
 * the nodes answer, not node by node.
 *
 * From an event loop (store_incr_start, store_add_start: the ingest's
 * answer threads) the same commands go without blocking, node by node a
 * small state machine on the loop (below, "the batch engine on an event
 * loop"), as the memcached backend does: no store thread on the path of an
 * answer.
 *
 * Counters are Redis integers, signed 64-bit: a delta above 2^63 - 1 is
 * refused without being sent, and an increment past 2^63 - 1 is refused by
 * Redis ("increment or decrement would overflow"); both STORE_ERROR.
 */
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "ketama.h"
#include "log.h"
#include "store_drain.h"
#include "store_impl.h"
#include "store_pool.h"
#include "store_resp.h"
#include "util.h"

#define RD_CHUNK_OPS 1024u          /* counter writes per node per round trip */
#define RD_MGET_KEYS 1000u          /* keys per MGET */
#define RD_CHUNK_MGETS 4u           /* MGETs per node per round trip */
#define RD_CHUNK_BYTES (64u * 1024u) /* formatting stops past this */
/* The largest command we format: MGET of RD_MGET_KEYS keys of the longest
 * size, or one INCRBY + EXPIRE pair. */
#define RD_CMD_MAX (RD_MGET_KEYS * (STORE_MAX_KEY + RESP_ARG_COST) + 64u)
#define RD_WBUF_SIZE (RD_CHUNK_BYTES + RD_CMD_MAX)
/* The longest write command (an INCRBY + EXPIRE pair, a SET NX, a DEL),
 * and a node's chunk of writes from an event loop. */
#define RD_WRITE_CMD_MAX (2 * (STORE_MAX_KEY + 3 * RESP_ARG_COST) + STORE_ADD_BATCH_VALUE_MAX + 64)
#define RD_ASYNC_WBUF_SIZE (RD_CHUNK_BYTES + RD_WRITE_CMD_MAX)

/* One node's part of the batch being run. */
struct rd_run {
    size_t first, count; /* its ops: order[first .. first + count) */
    size_t next;         /* ops written so far */
    size_t chunk_first;  /* the chunk in flight: ops [chunk_first, next) */
    size_t read_next;    /* the chunk's first op whose reply is not read yet */
    bool expire_next;    /* RD_INCR: read_next's INCRBY reply is read, its EXPIRE's next */
    bool active;
    bool in_flight;      /* its chunk is written, the replies not read yet */
    /* from an event loop (store_incr_start, store_add_start): */
    bool connecting;     /* the connect is in progress (async.connect_fd) */
    size_t wlen, woff;   /* the chunk in async.wbufs[node]: bytes, bytes written */
    uint64_t start;      /* ms: when the node's part began */
    uint64_t deadline;   /* ms: no progress by then is a failure */
};

enum rd_kind { RD_INCR, RD_MGET, RD_ADD, RD_DEL };

struct rd_store;

/* Where a node's events find its run. */
struct rd_node_ref {
    struct rd_store *h;
    size_t node;
};

/* A batch run from an event loop (store_incr_start, store_add_start), as
 * the memcached backend runs one: an increment batch is one run, an add
 * batch one run per replica rank, each started from the end of the one
 * before; the stale deletes due go first, in a run of their own. */
struct rd_async {
    struct event_base *base;  /* (ref) the loop the events below belong to */
    struct event **rev;       /* owned, n_nodes: readability of the node's connection,
                               * added while it is open, between runs too (a server
                               * that closes is noticed), with the run's deadline */
    uint64_t *rev_gen;        /* owned, n_nodes: the connection (resp_conn.gen) rev
                               * watches; 0: none */
    struct event **wev;       /* owned, n_nodes: writability while output waits, or
                               * while a connect completes */
    int *connect_fd;          /* owned, n_nodes: a connect in progress, -1: none */
    char **wbufs;             /* owned, n_nodes: the chunk being written (RD_ASYNC_WBUF_SIZE) */
    struct rd_node_ref *refs; /* owned, n_nodes */
    struct event *finish;     /* owned: ends a run that had no node to wait for */
    struct event *lag;        /* owned: replica_lag_ms after an increment run on
                               * replicas was confirmed */
    bool running;
    bool lag_on;              /* this run gives up on replicas that lag */
    size_t active;            /* nodes still waiting */
    struct pool_loop_batch plan; /* the batch and the order of its runs */
    store_done_fn done;
    void *arg;
};

struct rd_store {
    struct store base;
    struct pool_nodes *pool;    /* shared */
    struct pool placement;   /* this handle's: replicas, hints */
    struct resp_conn *conns; /* n_nodes, this handle's own */
    struct rd_run *runs;     /* n_nodes */
    char *wbuf;              /* RD_WBUF_SIZE, allocated at the first batch */
    /* Scratch grown to the largest batch seen. */
    size_t *order;           /* op indexes grouped by node */
    size_t scratch_cap;
    /* The batch being run. */
    enum rd_kind kind;
    struct store_op *ops;    /* (ref) the pool's */
    size_t mget_base;        /* MGET being read: its first op in order[] */
    size_t mget_count;
    size_t placement_nops;   /* the ops of the run begun from a loop (pool_incr_confirmed) */
    struct store_drain drain; /* connections given up on (replica_lag_ms) */
    bool numeric_hosts;      /* every node is an address: connects never block */
    struct rd_async async;
};

static const struct store_ops rd_ops;
static const struct pool_engine rd_engine;

static struct rd_store *rd_of(struct store *s)
{
    return (struct rd_store *)s;
}

/* ---- pool and handles ---- */

static void async_free(struct rd_store *h);

static void rd_close(struct store *s)
{
    struct rd_store *h = rd_of(s);
    async_free(h);
    pool_fini(&h->placement, s);
    store_drain_fini(&h->drain);
    for (size_t i = 0; i < h->pool->n_nodes; i++)
        resp_close(&h->conns[i]);
    free(h->conns);
    free(h->runs);
    free(h->wbuf);
    free(h->order);
    pool_nodes_unref(h->pool);
    free(h);
}

static struct store *handle_new(struct pool_nodes *pool)
{
    struct rd_store *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base.ops = &rd_ops;
    h->pool = pool;
    store_drain_init(&h->drain);
    h->conns = calloc(pool->n_nodes, sizeof(*h->conns));
    h->runs = calloc(pool->n_nodes, sizeof(*h->runs));
    if (h->conns == NULL || h->runs == NULL ||
        !pool_init(&h->placement, &rd_engine, pool->ketama, &pool->rings, pool->nodes,
                   pool->n_nodes,
                   pool->replicas, pool->hint_keys))
        goto err;
    h->numeric_hosts = true;
    for (size_t i = 0; i < pool->n_nodes; i++) {
        if (!store_host_numeric(pool->nodes[i].host))
            h->numeric_hosts = false;
    }
    atomic_fetch_add(&pool->refs, 1);
    return &h->base;
err:
    pool_fini(&h->placement, &h->base);
    free(h->conns);
    free(h->runs);
    free(h);
    return NULL;
}

struct store *store_redis_open(const struct store_url *url, char *err, size_t errlen)
{
    struct pool_nodes *p = pool_nodes_new(url);
    struct store *s = p ? handle_new(p) : NULL;
    pool_nodes_unref(p); /* the handle holds its own reference */
    if (s == NULL && err != NULL && errlen > 0)
        snprintf(err, errlen, "redis backend: out of memory");
    return s;
}

static struct store *rd_clone(struct store *s)
{
    return handle_new(rd_of(s)->pool);
}

/* ---- node health and connections ---- */

/* The pool's view (hint replays, single operations): a lagging node is
 * left to the increment runs that probe it. */
static bool rd_up(struct store *s, uint32_t node)
{
    const struct node_health *hl = &rd_of(s)->pool->health[node];
    return !node_health_down(hl, util_mono_ms()) && !node_health_lagging(hl);
}

static bool rd_probe(struct store *s, uint32_t node)
{
    return !node_health_down(&rd_of(s)->pool->health[node], util_mono_ms());
}

/* Takes node k's events off its connection: before the connection closes,
 * or once it has, so that no event stays on a descriptor number another
 * connection may get. */
static void async_unwatch(struct rd_store *h, size_t k)
{
    struct rd_async *a = &h->async;
    if (a->rev == NULL)
        return;
    if (a->rev_gen[k] != 0)
        event_del(a->rev[k]);
    a->rev_gen[k] = 0;
    event_del(a->wev[k]);
    if (a->connect_fd[k] >= 0)
        close(a->connect_fd[k]);
    a->connect_fd[k] = -1;
}

static void conn_close(struct rd_store *h, size_t node)
{
    async_unwatch(h, node);
    resp_close(&h->conns[node]);
}

/* The blocking calls close a connection that fails (store_resp.h): after
 * one of them on a handle that also runs from a loop, the read event of a
 * connection that is gone goes too. */
static void async_sweep(struct rd_store *h)
{
    struct rd_async *a = &h->async;
    if (a->rev == NULL)
        return;
    for (size_t k = 0; k < h->pool->n_nodes; k++)
        if (a->rev_gen[k] != 0 &&
            (!resp_connected(&h->conns[k]) || h->conns[k].gen != a->rev_gen[k])) {
            event_del(a->rev[k]);
            a->rev_gen[k] = 0;
        }
}

static void node_fail(struct rd_store *h, size_t node)
{
    pool_nodes_down(h->pool, node);
    conn_close(h, node);
    h->base.stats.node_failures++;
}

/* Ready to send to node: false when it is down or cannot be reached (then
 * it is marked down). */
static bool conn_ready(struct rd_store *h, size_t node)
{
    struct resp_conn *c = &h->conns[node];
    const struct node_health *hl = &h->pool->health[node];
    if (node_health_down(hl, util_mono_ms()))
        return false;
    if (resp_connected(c) && (c->epoch != node_health_epoch(hl) || resp_stale(c)))
        conn_close(h, node);
    if (resp_connected(c))
        return true;
    const struct store_node *n = &h->pool->nodes[node];
    if (resp_connect(c, n->host, n->port, h->pool->timeout_ms)) {
        c->epoch = node_health_epoch(hl);
        h->base.stats.connects++;
        return true;
    }
    node_fail(h, node);
    return false;
}

/* A single read leaves a lagging node alone (store_pool.h, "lag"); a
 * write does not: a blob set that skipped it would live on the other
 * replicas only, and another reader could find the old value there. */
static bool single_ready(struct rd_store *h, size_t node, bool writes)
{
    return (writes || !node_health_lagging(&h->pool->health[node])) && conn_ready(h, node);
}

/* Why a node's part of a batch ended early. */
enum rd_fail {
    RD_FAIL_CONN, /* the connection is unusable (a reply not ours), the node is fine */
    RD_FAIL_NODE, /* resp failed: the connection was cut, or the node is down */
    RD_FAIL_LAG,  /* replica_lag_ms behind the replicas that confirmed */
};

static void node_fail_why(struct rd_store *h, size_t node, enum rd_fail why)
{
    struct resp_conn *c = &h->conns[node];
    if (why == RD_FAIL_CONN) {
        conn_close(h, node);
        return;
    }
    if (why == RD_FAIL_LAG) {
        async_unwatch(h, node);
        pool_nodes_lagging(h->pool, node);
        /* Drained, not closed: what it was sent gets no hint, so it must
         * reach the node (store_drain.h). */
        store_drain_add(&h->drain, resp_release(c), NULL, 0, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
        h->base.stats.node_failures++;
        return;
    }
    node_fail(h, node);
}

/* ---- the batch engine ---- */

static bool scratch_reserve(struct rd_store *h, size_t n)
{
    if (h->wbuf == NULL && (h->wbuf = malloc(RD_WBUF_SIZE)) == NULL)
        return false;
    if (n <= h->scratch_cap)
        return true;
    size_t cap = h->scratch_cap ? h->scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    size_t *order = realloc(h->order, cap * sizeof(*order));
    if (order == NULL)
        return false;
    h->order = order;
    h->scratch_cap = cap;
    return true;
}

/* Redis counters are signed. */
static bool delta_ok(const struct store_op *op)
{
    return op->delta <= (uint64_t)INT64_MAX;
}

static void route(struct rd_store *h, size_t n)
{
    size_t nn = h->pool->n_nodes;
    for (size_t k = 0; k < nn; k++)
        h->runs[k] = (struct rd_run){0};
    for (size_t i = 0; i < n; i++)
        h->runs[h->ops[i].node].count++;
    size_t off = 0;
    for (size_t k = 0; k < nn; k++) {
        h->runs[k].first = off;
        off += h->runs[k].count;
        h->runs[k].count = 0;
    }
    for (size_t i = 0; i < n; i++) {
        struct rd_run *r = &h->runs[h->ops[i].node];
        h->order[r->first + r->count++] = i;
    }
}

/*
 *   *3 $6 INCRBY $<n> <key> $<n> <delta>   *3 $6 EXPIRE $<n> <key> $<n> <ttl>
 *   (*2 $7 PERSIST $<n> <key> for ttl 0)
 */
static char *format_incr(char *p, const struct store_op *op)
{
    p = resp_put_cmd(p, 3);
    p = resp_put_arg(p, "INCRBY", 6);
    p = resp_put_arg(p, op->key, op->keylen);
    char num[24];
    size_t nlen = util_format_u64(num, op->delta);
    p = resp_put_arg(p, num, nlen);
    if (op->ttl_s == 0) {
        p = resp_put_cmd(p, 2);
        p = resp_put_arg(p, "PERSIST", 7);
        return resp_put_arg(p, op->key, op->keylen);
    }
    p = resp_put_cmd(p, 3);
    p = resp_put_arg(p, "EXPIRE", 6);
    p = resp_put_arg(p, op->key, op->keylen);
    nlen = util_format_u64(num, op->ttl_s);
    return resp_put_arg(p, num, nlen);
}

/*
 *   *6 $3 SET $<n> <key> $<n> <value> $2 EX $<n> <ttl> $2 NX   (no EX for ttl 0)
 */
static char *format_add(char *p, const struct store_op *op)
{
    p = resp_put_cmd(p, op->ttl_s > 0 ? 6 : 4);
    p = resp_put_arg(p, "SET", 3);
    p = resp_put_arg(p, op->key, op->keylen);
    p = resp_put_arg(p, op->val, op->vallen);
    if (op->ttl_s > 0) {
        char num[24];
        p = resp_put_arg(p, "EX", 2);
        p = resp_put_arg(p, num, util_format_u64(num, op->ttl_s));
    }
    return resp_put_arg(p, "NX", 2);
}

/* A write op's commands (an INCRBY with a delta Redis cannot hold has
 * none). */
static char *format_write(const struct rd_store *h, char *p, const struct store_op *op)
{
    if (h->kind == RD_ADD)
        return format_add(p, op);
    if (h->kind == RD_DEL) {
        p = resp_put_cmd(p, 2);
        p = resp_put_arg(p, "DEL", 3);
        return resp_put_arg(p, op->key, op->keylen);
    }
    return delta_ok(op) ? format_incr(p, op) : p;
}

/* Formats the node's next chunk into buf (RD_WBUF_SIZE, or RD_ASYNC_WBUF_SIZE
 * for writes); returns its length. */
static size_t format_chunk(struct rd_store *h, struct rd_run *r, char *buf)
{
    char *p = buf;
    char *limit = buf + RD_CHUNK_BYTES;
    r->chunk_first = r->read_next = r->next;
    r->expire_next = false;
    if (h->kind != RD_MGET) {
        while (r->next < r->count && r->next - r->chunk_first < RD_CHUNK_OPS && p < limit)
            p = format_write(h, p, &h->ops[h->order[r->first + r->next++]]);
        return (size_t)(p - buf);
    }
    for (unsigned m = 0; m < RD_CHUNK_MGETS && r->next < r->count && p < limit; m++) {
        /* MGET of up to RD_MGET_KEYS keys, the argument count first. */
        size_t take = 0, bytes = 0;
        while (r->next + take < r->count && take < RD_MGET_KEYS &&
               bytes < RD_CHUNK_BYTES) {
            bytes += h->ops[h->order[r->first + r->next + take]].keylen + RESP_ARG_COST;
            take++;
        }
        p = resp_put_cmd(p, (unsigned)take + 1);
        p = resp_put_arg(p, "MGET", 4);
        for (size_t i = 0; i < take; i++) {
            const struct store_op *op = &h->ops[h->order[r->first + r->next++]];
            p = resp_put_arg(p, op->key, op->keylen);
        }
    }
    return (size_t)(p - buf);
}

/* The node failed with ops [chunk_first, next) in flight, of which those
 * formatted before byte `sent` may have reached it. Everything not settled
 * gets its status; the node is marked down. */
static void run_fail(struct rd_store *h, size_t node, size_t settled, size_t sent,
                     enum rd_fail why)
{
    struct rd_run *r = &h->runs[node];
    size_t off = 0; /* byte offset of the op in the chunk, recomputed */
    char scratch[2 * (STORE_MAX_KEY + 3 * RESP_ARG_COST) + STORE_ADD_BATCH_VALUE_MAX + 64];
    for (size_t k = r->chunk_first; k < r->count; k++) {
        struct store_op *op = &h->ops[h->order[r->first + k]];
        if (k < settled)
            continue;
        if (h->kind == RD_MGET) {
            op->status = STORE_UNAVAILABLE; /* a read: never "maybe applied" */
            continue;
        }
        bool maybe_sent = k < r->next && off < sent;
        if (k < r->next)
            off += (size_t)(format_write(h, scratch, op) - scratch);
        if (h->kind == RD_INCR && !delta_ok(op)) {
            op->status = STORE_ERROR;
        } else {
            op->status = maybe_sent ? STORE_ERROR : STORE_UNAVAILABLE;
            op->node_failed = maybe_sent && why != RD_FAIL_CONN;
        }
    }
    r->active = false;
    r->in_flight = false;
    node_fail_why(h, node, why);
}

/* MGET elements: element i of the MGET being read is op order[base + i]. */
static void on_mget_elem(void *arg, const int *path, int depth, enum resp_type type,
                         const char *s, size_t len, long long v)
{
    struct rd_store *h = arg;
    (void)v;
    if (depth != 1 || path[0] < 0 || (size_t)path[0] >= h->mget_count)
        return;
    struct store_op *op = &h->ops[h->order[h->mget_base + (size_t)path[0]]];
    if (type == RESP_NIL) {
        op->status = STORE_OK;
        op->present = false;
        op->value = 0;
    } else if (op->want_blob) {
        bool fits = type == RESP_STRING && len <= STORE_GET_MANY_VALUE_MAX;
        free(op->blob);
        op->blob = fits ? malloc(len + 1) : NULL;
        op->bloblen = op->blob != NULL ? len : 0;
        if (op->blob != NULL) {
            memcpy(op->blob, s, len);
            op->blob[len] = '\0';
        }
        op->status = op->blob != NULL ? STORE_OK : fits ? STORE_NOMEM : STORE_ERROR;
        op->present = op->blob != NULL;
    } else if (type == RESP_STRING && store_parse_counter(s, len, &op->value)) {
        op->status = STORE_OK;
        op->present = true;
    } else {
        op->status = STORE_ERROR; /* not a counter */
        op->value = 0;
        op->present = false;
    }
}

/* The status an add (SET NX: OK added, nil there) or a delete (DEL: 1 or 0)
 * ends with; an error reply is a refusal (out of memory, ...). false: not a
 * reply either command gives. */
static bool write_status(enum rd_kind kind, const struct resp_reply *r, enum store_status *st)
{
    if (r->type == RESP_ERROR)
        *st = STORE_ERROR;
    else if (kind == RD_ADD && r->type == RESP_STATUS && strcmp(r->text, "OK") == 0)
        *st = STORE_OK;
    else if (kind == RD_ADD && r->type == RESP_NIL)
        *st = STORE_EXISTS;
    else if (kind == RD_DEL && r->type == RESP_INTEGER)
        *st = r->integer > 0 ? STORE_OK : STORE_NOTFOUND;
    else {
        *st = STORE_ERROR;
        return false;
    }
    return true;
}

/* The next reply: waited for (blocking), or only if it is buffered whole
 * (RESP_PARTIAL otherwise). */
static enum resp_result next_reply(struct resp_conn *c, bool blocking)
{
    return blocking ? resp_read(c) : resp_take(c);
}

enum read_result { READ_DONE, READ_MORE, READ_FAILED };

/* Reads the replies of the node's chunk in flight, from r->read_next on.
 * Blocking: until all are read. Not blocking (writes only): those
 * buffered; READ_MORE when the rest has not arrived (read_next says where
 * to go on). READ_FAILED when the node failed or the connection had to be
 * closed: then every op of the node has its status. */
static enum read_result read_chunk(struct rd_store *h, size_t node, bool blocking)
{
    struct rd_run *r = &h->runs[node];
    struct resp_conn *c = &h->conns[node];
    size_t k = r->read_next;
    enum resp_result res = RESP_FAILED;
    if (h->kind == RD_ADD || h->kind == RD_DEL) {
        for (; k < r->next; k++) {
            struct store_op *op = &h->ops[h->order[r->first + k]];
            if ((res = next_reply(c, blocking)) == RESP_PARTIAL)
                goto more;
            if (res != RESP_OK)
                goto fail;
            if (!write_status(h->kind, &c->reply, &op->status)) {
                k++;
                res = RESP_FAILED;
                goto fail; /* not Redis speaking: out of step */
            }
        }
        return READ_DONE;
    }
    if (h->kind == RD_INCR) {
        for (; k < r->next; k++) {
            struct store_op *op = &h->ops[h->order[r->first + k]];
            if (!delta_ok(op)) {
                op->status = STORE_ERROR;
                continue;
            }
            if (!r->expire_next) {
                if ((res = next_reply(c, blocking)) == RESP_PARTIAL)
                    goto more;
                if (res != RESP_OK)
                    goto fail;
                if (c->reply.type == RESP_INTEGER) {
                    op->status = STORE_OK;
                    op->value = c->reply.integer > 0 ? (uint64_t)c->reply.integer : 0;
                } else if (c->reply.type == RESP_ERROR) {
                    op->status = STORE_ERROR; /* not an integer, or would overflow */
                } else {
                    op->status = STORE_ERROR;
                    k++;
                    res = RESP_FAILED;
                    goto fail; /* not Redis speaking: out of step */
                }
                r->expire_next = true;
            }
            /* The EXPIRE's reply: the increment is already confirmed, so a
             * failure here costs the TTL refresh only. */
            if ((res = next_reply(c, blocking)) == RESP_PARTIAL)
                goto more;
            r->expire_next = false;
            if (res != RESP_OK) {
                k++;
                goto fail;
            }
        }
        return READ_DONE;
    }
    c->elem = on_mget_elem;
    c->elem_arg = h;
    while (k < r->next) {
        size_t take = 0, bytes = 0;
        while (k + take < r->next && take < RD_MGET_KEYS && bytes < RD_CHUNK_BYTES) {
            bytes += h->ops[h->order[r->first + k + take]].keylen + RESP_ARG_COST;
            take++;
        }
        h->mget_base = r->first + k;
        h->mget_count = take;
        for (size_t i = 0; i < take; i++)
            h->ops[h->order[r->first + k + i]].status = STORE_UNAVAILABLE;
        if ((res = resp_read(c)) != RESP_OK) {
            c->elem = NULL;
            if (res == RESP_TOO_BIG) {
                /* A value far larger than a counter (another client's):
                 * its MGET reads as an error, the node is fine. */
                for (size_t i = 0; i < take; i++)
                    h->ops[h->order[r->first + k + i]].status = STORE_ERROR;
                k += take;
            }
            goto fail;
        }
        if (c->reply.type != RESP_ARRAY || c->reply.integer != (long long)take) {
            for (size_t i = 0; i < take; i++)
                h->ops[h->order[r->first + k + i]].status = STORE_ERROR;
            if (c->reply.type != RESP_ERROR) {
                c->elem = NULL;
                k += take;
                res = RESP_FAILED;
                goto fail;
            }
        }
        k += take;
    }
    c->elem = NULL;
    return READ_DONE;
more:
    r->read_next = k;
    return READ_MORE;
fail:
    run_fail(h, node, k, SIZE_MAX, res == RESP_FAILED ? RD_FAIL_NODE : RD_FAIL_CONN);
    return READ_FAILED;
}

/* Waits for the first of the nodes with a chunk in flight to answer, until
 * deadline (or the I/O timeout when it is later). Returns the node, or
 * SIZE_MAX when none did in time. */
static size_t wait_any(struct rd_store *h, uint64_t deadline)
{
    size_t nn = h->pool->n_nodes;
    struct pollfd pfds[STORE_MAX_NODES];
    size_t pnode[STORE_MAX_NODES];
    size_t np = 0;
    for (size_t k = 0; k < nn; k++) {
        if (!h->runs[k].in_flight)
            continue;
        if (resp_buffered(&h->conns[k]))
            return k;
        pfds[np] = (struct pollfd){.fd = resp_fd(&h->conns[k]), .events = POLLIN};
        pnode[np++] = k;
    }
    uint64_t now = util_mono_ms();
    uint64_t io_deadline = now + h->pool->timeout_ms;
    if (deadline > io_deadline)
        deadline = io_deadline;
    int pr;
    do {
        pr = poll(pfds, np, deadline > now ? (int)(deadline - now) : 0);
        now = util_mono_ms();
    } while (pr < 0 && now < deadline);
    for (size_t j = 0; pr > 0 && j < np; j++)
        if (pfds[j].revents != 0)
            return pnode[j];
    return SIZE_MAX;
}

/* Every active node writes a chunk, then the replies are read, until each
 * node's part is done. Without a lag budget the nodes are read one after
 * the other (each blocks up to the I/O timeout); with one (increments,
 * replicas >= 2) in the order they answer, so that once every item is
 * confirmed the nodes still outstanding can be given up on at the
 * budget's end. A node whose chunk is read writes its next one at once. */
/* Makes ops (each on its node) the batch being run, grouped by node; every
 * op is STORE_UNAVAILABLE until its run says otherwise. false: nothing to
 * send, or no memory for the scratch. */
static bool batch_setup(struct rd_store *h, enum rd_kind kind, struct store_op *ops, size_t n)
{
    if (h->drain.n > 0) {
        store_drain_pump(&h->drain, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
    }
    for (size_t i = 0; i < n; i++) {
        ops[i].status = STORE_UNAVAILABLE; /* not sent unless said otherwise */
        ops[i].value = 0;
        ops[i].present = false;
        ops[i].node_failed = false;
    }
    if (n == 0 || !scratch_reserve(h, n))
        return false;
    h->kind = kind;
    h->ops = ops;
    route(h, n);
    return true;
}

static void run_batch(struct rd_store *h, enum rd_kind kind, struct store_op *ops, size_t n)
{
    size_t nn = h->pool->n_nodes;
    if (!batch_setup(h, kind, ops, n))
        return;
    bool lag_on = kind == RD_INCR && h->placement.run_replicated && h->pool->replica_lag_ms > 0;
    uint64_t lag_deadline = UINT64_MAX;
    uint64_t start = util_mono_ms();
    for (size_t k = 0; k < nn; k++)
        h->runs[k].active = h->runs[k].count > 0 && conn_ready(h, k);
    for (;;) {
        size_t in_flight = 0;
        bool ended = false, again = false;
        for (size_t k = 0; k < nn; k++) {
            struct rd_run *r = &h->runs[k];
            if (!r->active)
                continue;
            if (r->in_flight) {
                in_flight++;
                continue;
            }
            if (r->next == r->count) {
                r->active = false;
                if (h->placement.replicas >= 2 && h->pool->replica_lag_ms > 0 &&
                    util_mono_ms() - start > h->pool->replica_lag_ms)
                    node_health_ok_slow(&h->pool->health[k]); /* a lagging node stays so */
                else
                    node_health_ok(&h->pool->health[k]);
                ended = true;
                continue;
            }
            size_t len = format_chunk(h, r, h->wbuf);
            size_t sent = 0;
            if (len == 0) { /* only deltas Redis cannot hold: no reply to wait for */
                read_chunk(h, k, true);
                again = true;
                continue;
            }
            if (!resp_send(&h->conns[k], h->wbuf, len, &sent)) {
                run_fail(h, k, r->chunk_first, sent, RD_FAIL_NODE);
                ended = true;
                continue;
            }
            r->in_flight = true;
            in_flight++;
        }
        if (in_flight == 0 && again)
            continue;
        if (in_flight == 0)
            break;
        if (!lag_on) {
            for (size_t k = 0; k < nn; k++)
                if (h->runs[k].in_flight) {
                    h->runs[k].in_flight = false;
                    read_chunk(h, k, true);
                }
            continue;
        }
        if (ended && lag_deadline == UINT64_MAX &&
            pool_incr_confirmed(&h->placement, h->ops, n))
            lag_deadline = util_mono_ms() + h->pool->replica_lag_ms;
        size_t k = wait_any(h, lag_deadline);
        if (k == SIZE_MAX && util_mono_ms() >= lag_deadline) {
            for (k = 0; k < nn; k++)
                if (h->runs[k].in_flight)
                    run_fail(h, k, h->runs[k].chunk_first, SIZE_MAX, RD_FAIL_LAG);
            break;
        }
        if (k == SIZE_MAX) /* silent for the I/O timeout: the first read fails */
            for (k = 0; k < nn && !h->runs[k].in_flight; k++)
                ;
        h->runs[k].in_flight = false;
        read_chunk(h, k, true);
    }
}

static void rd_engine_incr(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_INCR, ops, n);
    async_sweep(rd_of(s));
}

static void rd_engine_mget(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_MGET, ops, n);
    async_sweep(rd_of(s));
}

static void rd_engine_add(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_ADD, ops, n);
    async_sweep(rd_of(s));
}

static void rd_engine_del(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_DEL, ops, n);
    async_sweep(rd_of(s));
}

/* ---- the batch engine on an event loop (store_incr_start, store_add_start) ----
 *
 * The same commands and replies as run_batch, per node a small state
 * machine on the loop: connect (numeric hosts only: no lookup blocks),
 * write the chunk as the socket takes it, read its replies as they come
 * (read_chunk, not blocking), then the next chunk. The connections stay
 * blocking ones for the calls above (MSG_DONTWAIT here). Writes only: the
 * loop never reads counters. */

static void async_free(struct rd_store *h)
{
    struct rd_async *a = &h->async;
    size_t nn = h->pool->n_nodes;
    for (size_t k = 0; a->rev != NULL && k < nn; k++)
        async_unwatch(h, k);
    for (size_t k = 0; k < nn; k++) {
        if (a->rev != NULL && a->rev[k] != NULL)
            event_free(a->rev[k]);
        if (a->wev != NULL && a->wev[k] != NULL)
            event_free(a->wev[k]);
        if (a->wbufs != NULL)
            free(a->wbufs[k]);
    }
    if (a->finish != NULL)
        event_free(a->finish);
    if (a->lag != NULL)
        event_free(a->lag);
    free(a->rev);
    free(a->rev_gen);
    free(a->wev);
    free(a->connect_fd);
    free(a->wbufs);
    free(a->refs);
    *a = (struct rd_async){0};
}

static void on_async_node(evutil_socket_t fd, short what, void *arg);
static void on_async_finish(evutil_socket_t fd, short what, void *arg);
static void on_async_lag(evutil_socket_t fd, short what, void *arg);

/* The events and buffers are made once, for the first loop that runs a
 * batch; a handle serves one loop. */
static bool async_init(struct rd_store *h, struct event_base *base)
{
    struct rd_async *a = &h->async;
    if (a->base != NULL)
        return a->base == base;
    size_t nn = h->pool->n_nodes;
    a->rev = calloc(nn, sizeof(*a->rev));
    a->rev_gen = calloc(nn, sizeof(*a->rev_gen));
    a->wev = calloc(nn, sizeof(*a->wev));
    a->connect_fd = calloc(nn, sizeof(*a->connect_fd));
    a->wbufs = calloc(nn, sizeof(*a->wbufs));
    a->refs = calloc(nn, sizeof(*a->refs));
    a->finish = event_new(base, -1, 0, on_async_finish, h);
    a->lag = evtimer_new(base, on_async_lag, h);
    if (!a->rev || !a->rev_gen || !a->wev || !a->connect_fd || !a->wbufs || !a->refs ||
        !a->finish || !a->lag)
        goto err;
    for (size_t k = 0; k < nn; k++)
        a->connect_fd[k] = -1;
    for (size_t k = 0; k < nn; k++) {
        a->refs[k] = (struct rd_node_ref){.h = h, .node = k};
        if ((a->rev[k] = event_new(base, -1, 0, on_async_node, &a->refs[k])) == NULL ||
            (a->wev[k] = event_new(base, -1, 0, on_async_node, &a->refs[k])) == NULL ||
            (a->wbufs[k] = malloc(RD_ASYNC_WBUF_SIZE)) == NULL)
            goto err;
    }
    a->base = base;
    return true;
err:
    async_free(h);
    return false;
}

/* Node k's part of the run begins: false when it is settled at once (down:
 * its ops stay UNAVAILABLE, nothing sent). A node without a connection
 * starts one. */
static bool async_node_begin(struct rd_store *h, size_t k, uint64_t now)
{
    struct rd_run *r = &h->runs[k];
    struct resp_conn *c = &h->conns[k];
    const struct node_health *hl = &h->pool->health[k];
    if (node_health_down(hl, now))
        return false;
    /* A connection the read event does not watch may have been closed by
     * the server unseen: look, as conn_ready does. */
    if (resp_connected(c) &&
        (c->epoch != node_health_epoch(hl) ||
         (h->async.rev_gen[k] != c->gen && resp_stale(c))))
        conn_close(h, k);
    r->active = true;
    r->start = now;
    r->deadline = now + h->pool->timeout_ms;
    if (!resp_connected(c)) {
        const struct store_node *n = &h->pool->nodes[k];
        int fd = resp_connect_start(n->host, n->port);
        if (fd < 0) {
            r->active = false;
            node_fail(h, k);
            return false;
        }
        h->async.connect_fd[k] = fd;
        r->connecting = true;
        h->base.stats.connects++;
    }
    return true;
}

/* The connect of node k ended (writable, or its deadline): false when it
 * failed (settled: nothing was sent). */
static bool async_connected(struct rd_store *h, size_t k, bool writable)
{
    struct rd_async *a = &h->async;
    struct rd_run *r = &h->runs[k];
    int fd = a->connect_fd[k];
    event_del(a->wev[k]);
    a->connect_fd[k] = -1;
    r->connecting = false;
    if (!writable) {
        close(fd);
    } else if (resp_connect_finish(&h->conns[k], fd, h->pool->timeout_ms)) {
        h->conns[k].epoch = node_health_epoch(&h->pool->health[k]);
        r->deadline = util_mono_ms() + h->pool->timeout_ms;
        return true;
    }
    r->active = false;
    node_fail(h, k);
    return false;
}

/* Moves node k's part on as far as it goes without waiting: writes what
 * the socket takes, reads the replies buffered, formats the next chunk
 * once one is read. 1: it waits for the socket; 0: its part is done;
 * -1: it failed (settled). */
static int async_pump(struct rd_store *h, size_t k, uint64_t now)
{
    struct rd_run *r = &h->runs[k];
    struct resp_conn *c = &h->conns[k];
    char *buf = h->async.wbufs[k];
    for (;;) {
        if (!r->in_flight) {
            if (r->next == r->count)
                return 0;
            r->wlen = format_chunk(h, r, buf);
            r->woff = 0;
            if (r->wlen == 0) { /* only deltas Redis cannot hold: no reply to wait for */
                read_chunk(h, k, false);
                continue;
            }
            r->in_flight = true;
        }
        if (r->woff < r->wlen) {
            long n = resp_write_some(c, buf + r->woff, r->wlen - r->woff);
            if (n < 0) {
                run_fail(h, k, r->chunk_first, r->woff, RD_FAIL_NODE);
                return -1;
            }
            if (n > 0) {
                r->woff += (size_t)n;
                r->deadline = now + h->pool->timeout_ms;
            }
            if (r->woff < r->wlen)
                return 1;
        }
        enum read_result rr = read_chunk(h, k, false);
        if (rr == READ_FAILED)
            return -1;
        if (rr == READ_MORE)
            return 1;
        r->in_flight = false;
    }
}

/* Node k's part ended well. */
static void async_node_ok(struct rd_store *h, size_t k, uint64_t now)
{
    struct rd_run *r = &h->runs[k];
    r->active = false;
    if (h->placement.replicas >= 2 && h->pool->replica_lag_ms > 0 &&
        now - r->start > h->pool->replica_lag_ms)
        node_health_ok_slow(&h->pool->health[k]); /* a lagging node stays so */
    else
        node_health_ok(&h->pool->health[k]);
}

/* Waits for node k's next readiness, or its deadline. false: the events
 * could not be armed (the node is settled as failed). */
static bool async_arm(struct rd_store *h, size_t k, uint64_t now)
{
    struct rd_async *a = &h->async;
    struct rd_run *r = &h->runs[k];
    struct resp_conn *c = &h->conns[k];
    uint64_t left = r->deadline > now ? r->deadline - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    bool ok;
    if (r->connecting) {
        ok = (event_pending(a->wev[k], EV_WRITE, NULL) ||
              event_assign(a->wev[k], a->base, a->connect_fd[k], EV_WRITE, on_async_node,
                           &a->refs[k]) == 0) &&
             event_add(a->wev[k], &tv) == 0;
        if (!ok) {
            async_connected(h, k, false);
            return false;
        }
        return true;
    }
    ok = true;
    if (a->rev_gen[k] != c->gen) {
        if (a->rev_gen[k] != 0)
            event_del(a->rev[k]);
        a->rev_gen[k] = 0;
        ok = event_assign(a->rev[k], a->base, resp_fd(c), EV_READ | EV_PERSIST, on_async_node,
                          &a->refs[k]) == 0;
        if (ok)
            a->rev_gen[k] = c->gen;
    }
    /* On an added event this only moves its timeout: no epoll change. */
    ok = ok && event_add(a->rev[k], &tv) == 0;
    if (ok && r->woff < r->wlen && !event_pending(a->wev[k], EV_WRITE, NULL))
        ok = event_assign(a->wev[k], a->base, resp_fd(c), EV_WRITE, on_async_node,
                          &a->refs[k]) == 0 &&
             event_add(a->wev[k], NULL) == 0;
    if (!ok) {
        run_fail(h, k, r->read_next + (r->expire_next ? 1 : 0), r->in_flight ? r->woff : 0,
                 RD_FAIL_NODE);
        return false;
    }
    return true;
}

/* The node's part of the run ended: its connection (if still open) is
 * watched with no timeout. */
static void async_node_end(struct rd_store *h, size_t k)
{
    struct rd_async *a = &h->async;
    event_del(a->wev[k]);
    if (a->rev_gen[k] != 0)
        event_remove_timer(a->rev[k]);
}

static void async_finish(struct rd_store *h, bool blocking);

/* A node's part ended and others still wait: as run_batch does, once every
 * item is confirmed the rest get replica_lag_ms. */
static void async_node_done(struct rd_store *h)
{
    struct rd_async *a = &h->async;
    if (--a->active == 0) {
        async_finish(h, false);
        return;
    }
    if (a->lag_on && !evtimer_pending(a->lag, NULL) &&
        pool_incr_confirmed(&h->placement, h->ops, h->placement_nops)) {
        uint32_t ms = h->pool->replica_lag_ms;
        struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                             .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        if (evtimer_add(a->lag, &tv) != 0)
            a->lag_on = false; /* the nodes' own deadlines still end the run */
    }
}

static void on_async_lag(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rd_store *h = arg;
    for (size_t k = 0; k < h->pool->n_nodes; k++) {
        struct rd_run *r = &h->runs[k];
        if (!r->active)
            continue;
        async_node_end(h, k);
        if (r->connecting) {
            async_connected(h, k, false); /* nothing was sent to it */
            continue;
        }
        run_fail(h, k, r->read_next + (r->expire_next ? 1 : 0), r->in_flight ? r->woff : 0,
                 RD_FAIL_LAG);
    }
    h->async.active = 0;
    async_finish(h, false);
}

static void on_async_node(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct rd_node_ref *ref = arg;
    struct rd_store *h = ref->h;
    size_t k = ref->node;
    struct rd_run *r = &h->runs[k];
    if (!h->async.running || !r->active) {
        /* Between runs nothing is due from the server: it closed, or it
         * is out of step. Either way the next run starts afresh. */
        conn_close(h, k);
        return;
    }
    uint64_t now = util_mono_ms();
    int st = 1;
    if (r->connecting) {
        if (!async_connected(h, k, (what & EV_WRITE) != 0))
            st = -1;
    } else if (what & EV_READ) {
        int got = resp_fill(&h->conns[k]);
        if (got < 0) {
            run_fail(h, k, r->read_next + (r->expire_next ? 1 : 0),
                     r->in_flight ? r->woff : 0, RD_FAIL_NODE);
            st = -1;
        } else if (got > 0) {
            r->deadline = now + h->pool->timeout_ms;
        }
    }
    if (st == 1)
        st = async_pump(h, k, now);
    if (st == 1 && now >= r->deadline) {
        /* No progress within the timeout. */
        run_fail(h, k, r->read_next + (r->expire_next ? 1 : 0), r->in_flight ? r->woff : 0,
                 RD_FAIL_NODE);
        st = -1;
    }
    if (st == 1 && async_arm(h, k, now))
        return;
    if (st == 0)
        async_node_ok(h, k, now);
    async_node_end(h, k);
    async_node_done(h);
}

/* Starts a run of the pool's ops[0 .. nops) from the loop. false: no
 * memory for the scratch (every op UNAVAILABLE, nothing sent). A run with
 * no node to wait for ends on the loop's next turn. */
static bool async_begin(struct rd_store *h, enum rd_kind kind, size_t nops)
{
    struct rd_async *a = &h->async;
    if (!batch_setup(h, kind, h->placement.ops, nops))
        return nops == 0 ? (event_active(a->finish, EV_TIMEOUT, 0), true) : false;
    h->placement_nops = nops;
    a->active = 0;
    a->lag_on = kind == RD_INCR && h->placement.run_replicated && h->pool->replica_lag_ms > 0;
    uint64_t now = util_mono_ms();
    for (size_t k = 0; k < h->pool->n_nodes; k++) {
        if (h->runs[k].count == 0 || !async_node_begin(h, k, now))
            continue;
        int st = h->runs[k].connecting ? 1 : async_pump(h, k, now);
        if (st == 1 && async_arm(h, k, now)) {
            a->active++;
            continue;
        }
        if (st == 0)
            async_node_ok(h, k, now);
        async_node_end(h, k);
    }
    if (a->active == 0)
        event_active(a->finish, EV_TIMEOUT, 0); /* done runs after this call returns */
    return true;
}

/* Node k's part of a run begun from the loop, driven to its end without
 * it (a stop): the rest of its chunk, its replies, the chunks after. */
static void async_node_wait(struct rd_store *h, size_t k)
{
    struct rd_async *a = &h->async;
    struct rd_run *r = &h->runs[k];
    struct resp_conn *c = &h->conns[k];
    char *buf = a->wbufs[k];
    async_node_end(h, k);
    if (r->connecting) {
        struct pollfd pfd = {.fd = a->connect_fd[k], .events = POLLOUT};
        int pr = poll(&pfd, 1, (int)h->pool->timeout_ms);
        if (!async_connected(h, k, pr > 0))
            return;
    }
    for (;;) {
        if (r->in_flight) {
            if (r->woff < r->wlen) {
                size_t sent = 0;
                if (!resp_send(c, buf + r->woff, r->wlen - r->woff, &sent)) {
                    run_fail(h, k, r->chunk_first, r->woff + sent, RD_FAIL_NODE);
                    return;
                }
                r->woff = r->wlen;
            }
            if (read_chunk(h, k, true) == READ_FAILED)
                return;
            r->in_flight = false;
        }
        if (r->next == r->count) {
            async_node_ok(h, k, util_mono_ms());
            return;
        }
        r->wlen = format_chunk(h, r, buf);
        r->woff = 0;
        if (r->wlen == 0) {
            read_chunk(h, k, true);
            continue;
        }
        r->in_flight = true;
    }
}

/* Runs the pool's ops[0 .. nops): from the loop (true: its end calls
 * async_finish), or blocking for a stop (false: it ran to its end). false
 * also when it could not begin (every op UNAVAILABLE). */
static bool async_run(struct rd_store *h, enum rd_kind kind, size_t nops, bool blocking)
{
    if (!blocking)
        return async_begin(h, kind, nops);
    run_batch(h, kind, h->placement.ops, nops);
    async_sweep(h);
    return false;
}

static const enum rd_kind rd_kind_of[] = {
    [POOL_RUN_INCR] = RD_INCR, [POOL_RUN_ADD] = RD_ADD, [POOL_RUN_DEL] = RD_DEL};

/* A run ended, every node's part settled: the batch's next run goes
 * (pool_loop_next), or the batch is done. From the loop (blocking false),
 * or for a stop. */
static void async_finish(struct rd_store *h, bool blocking)
{
    struct rd_async *a = &h->async;
    event_del(a->lag);
    enum pool_run_kind kind;
    size_t nops;
    while ((nops = pool_loop_next(&h->placement, &h->base, &a->plan, &kind)) > 0)
        if (async_run(h, rd_kind_of[kind], nops, blocking))
            return; /* its end comes back here */
    async_sweep(h); /* the adds' repairs are blocking calls */
    a->running = false;
    a->done(a->arg); /* may start the next run */
}

static void on_async_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_finish(arg, false);
}

/* Starts a batch from the loop: the stale deletes due first, if any (a
 * run of their own), then the batch's runs. false: nothing was sent. */
static bool async_start(struct rd_store *h, struct event_base *base, enum rd_kind kind,
                        struct store_incr *items, struct store_add_item *adds, size_t n,
                        uint32_t ttl_s, store_done_fn done, void *arg)
{
    struct rd_async *a = &h->async;
    if (a->running || !h->numeric_hosts || !async_init(h, base))
        return false;
    if (h->drain.n > 0) {
        store_drain_pump(&h->drain, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
    }
    a->plan = (struct pool_loop_batch){
        .add = kind == RD_ADD, .items = items, .adds = adds, .n = n, .ttl_s = ttl_s};
    enum pool_run_kind first;
    size_t nops = pool_loop_begin(&h->placement, &h->base, &a->plan, &first);
    if (nops == SIZE_MAX)
        return false; /* out of memory, or no hint due */
    a->running = true;
    a->done = done;
    a->arg = arg;
    if (nops == 0) {
        event_active(a->finish, EV_TIMEOUT, 0); /* every item refused before sending */
        return true;
    }
    if (!async_begin(h, rd_kind_of[first], nops)) {
        a->running = false; /* hints planned into it stay queued: nothing was sent */
        return false;
    }
    return true;
}

static bool rd_incr_start(struct store *s, struct event_base *base, struct store_incr *items,
                          size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    return async_start(rd_of(s), base, RD_INCR, items, NULL, n, ttl_s, done, arg);
}

static bool rd_add_start(struct store *s, struct event_base *base, struct store_add_item *items,
                         size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    return async_start(rd_of(s), base, RD_ADD, NULL, items, n, ttl_s, done, arg);
}

static void rd_run_wait(struct store *s)
{
    struct rd_store *h = rd_of(s);
    if (!h->async.running)
        return;
    event_del(h->async.lag);
    for (size_t k = 0; k < h->pool->n_nodes; k++)
        if (h->runs[k].active)
            async_node_wait(h, k);
    event_del(h->async.finish); /* a run with no node to wait for was due there */
    async_finish(h, true);
}

/* ---- single operations ---- */

/* A failed exchange. RESP_FAILED: the node failed; UNAVAILABLE when
 * nothing was sent (or the command only reads), ERROR when a write may have
 * been applied. A reply too large is ERROR (the node is fine). */
static enum store_status single_result(struct rd_store *h, size_t node, enum resp_result res,
                                       size_t sent, bool writes)
{
    if (res == RESP_NOMEM)
        return sent == 0 || !writes ? STORE_NOMEM : STORE_ERROR;
    if (res == RESP_TOO_BIG)
        return STORE_ERROR;
    node_fail(h, node);
    return sent == 0 || !writes ? STORE_UNAVAILABLE : STORE_ERROR;
}

static enum store_status node_get_once(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, char **val, size_t *vallen)
{
    struct rd_store *h = rd_of(s);
    struct resp_conn *c = &h->conns[node];
    if (!single_ready(h, node, false))
        return STORE_UNAVAILABLE;
    const char *argv[] = {"GET", key};
    size_t argvlen[] = {3, keylen};
    size_t sent;
    c->keep_blob = true;
    enum resp_result res = resp_call(c, 2, argv, argvlen, &sent);
    c->keep_blob = false;
    if (res != RESP_OK)
        return single_result(h, node, res, sent, false);
    node_health_ok(&h->pool->health[node]);
    if (c->reply.type == RESP_NIL)
        return STORE_NOTFOUND;
    if (c->reply.type != RESP_STRING || c->reply.too_big)
        return STORE_ERROR; /* WRONGTYPE, or a value over STORE_MAX_VALUE */
    *val = c->reply.blob;
    *vallen = c->reply.len;
    c->reply.blob = NULL;
    return STORE_OK;
}

/*
 *   SET <key> <value> [EX <ttl>] [NX]  ->  +OK | $-1 (NX: exists)
 */
static enum store_status node_put_once(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, const char *val, size_t vallen,
                                     uint32_t ttl_s, bool add)
{
    struct rd_store *h = rd_of(s);
    struct resp_conn *c = &h->conns[node];
    if (!single_ready(h, node, true))
        return STORE_UNAVAILABLE;
    char ttl[24];
    const char *argv[6] = {"SET", key, val};
    size_t argvlen[6] = {3, keylen, vallen};
    int argc = 3;
    if (ttl_s > 0) {
        argv[argc] = "EX";
        argvlen[argc++] = 2;
        argvlen[argc] = util_format_u64(ttl, ttl_s);
        argv[argc++] = ttl;
    }
    if (add) {
        argv[argc] = "NX";
        argvlen[argc++] = 2;
    }
    size_t sent;
    enum resp_result res = resp_call(c, argc, argv, argvlen, &sent);
    if (res != RESP_OK)
        return single_result(h, node, res, sent, true);
    node_health_ok(&h->pool->health[node]);
    if (c->reply.type == RESP_STATUS && strcmp(c->reply.text, "OK") == 0)
        return STORE_OK;
    if (c->reply.type == RESP_NIL && add)
        return STORE_EXISTS;
    return STORE_ERROR;
}

/*
 *   DEL <key>  ->  :1 | :0
 */
static enum store_status node_del_once(struct store *s, uint32_t node, const char *key,
                                     size_t keylen)
{
    struct rd_store *h = rd_of(s);
    struct resp_conn *c = &h->conns[node];
    if (!single_ready(h, node, true))
        return STORE_UNAVAILABLE;
    const char *argv[] = {"DEL", key};
    size_t argvlen[] = {3, keylen};
    size_t sent;
    enum resp_result res = resp_call(c, 2, argv, argvlen, &sent);
    if (res != RESP_OK)
        return single_result(h, node, res, sent, true);
    node_health_ok(&h->pool->health[node]);
    if (c->reply.type != RESP_INTEGER)
        return STORE_ERROR;
    return c->reply.integer > 0 ? STORE_OK : STORE_NOTFOUND;
}

/* ---- store.h entry points ---- */

static void rd_add_batch(struct store *s, struct store_add_item *items, size_t n, uint32_t ttl_s)
{
    pool_add_batch(&rd_of(s)->placement, s, items, n, ttl_s);
}

static enum store_status rd_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                       uint32_t ttl_s)
{
    return pool_incr_batch(&rd_of(s)->placement, s, items, n, ttl_s);
}

static enum store_status rd_mget_u64(struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n, uint64_t *values,
                                     bool *present)
{
    return pool_mget_u64(&rd_of(s)->placement, s, keys, keylens, n, values, present);
}

static enum store_status rd_get(struct store *s, const char *key, size_t keylen, char **val,
                                size_t *vallen)
{
    return pool_get(&rd_of(s)->placement, s, key, keylen, val, vallen);
}

static enum store_status rd_set(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return pool_put(&rd_of(s)->placement, s, key, keylen, val, vallen, ttl_s, false);
}

static enum store_status rd_add(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return pool_put(&rd_of(s)->placement, s, key, keylen, val, vallen, ttl_s, true);
}

static enum store_status rd_del(struct store *s, const char *key, size_t keylen)
{
    return pool_del(&rd_of(s)->placement, s, key, keylen);
}

/* The single operations, then the sweep of what they closed. */
static enum store_status rd_node_get(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, char **val, size_t *vallen)
{
    enum store_status st = node_get_once(s, node, key, keylen, val, vallen);
    async_sweep(rd_of(s));
    return st;
}

static enum store_status rd_node_put(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, const char *val, size_t vallen,
                                     uint32_t ttl_s, bool add)
{
    enum store_status st = node_put_once(s, node, key, keylen, val, vallen, ttl_s, add);
    async_sweep(rd_of(s));
    return st;
}

static enum store_status rd_node_del(struct store *s, uint32_t node, const char *key,
                                     size_t keylen)
{
    enum store_status st = node_del_once(s, node, key, keylen);
    async_sweep(rd_of(s));
    return st;
}

static struct pool *rd_pool(struct store *s)
{
    return &rd_of(s)->placement;
}

static const struct pool_engine rd_engine = {
    .incr = rd_engine_incr,
    .mget = rd_engine_mget,
    .add = rd_engine_add,
    .del_batch = rd_engine_del,
    .get = rd_node_get,
    .put = rd_node_put,
    .del = rd_node_del,
    .up = rd_up,
    .probe = rd_probe,
};

static const struct store_ops rd_ops = {
    .kind = "redis",
    .clone = rd_clone,
    .close = rd_close,
    .incr_batch = rd_incr_batch,
    .mget_u64 = rd_mget_u64,
    .get = rd_get,
    .set = rd_set,
    .add = rd_add,
    .del = rd_del,
    .add_batch = rd_add_batch,
    .incr_start = rd_incr_start,
    .add_start = rd_add_start,
    .run_wait = rd_run_wait,
    .pool = rd_pool,
};
