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
 * node before it failed is STORE_ERROR (outcome unknown). So are its two
 * cheaper cases: a cut (the peer closed or reset a connection that had
 * completed a batch) only closes the connection, the next batch
 * reconnects; and with replicas >= 2 an increment batch gives up on the
 * replicas still outstanding replica_lag_ms after every item was
 * confirmed (store_pool.h, "lag"): then the replies are read in the order
 * the nodes answer, not node by node.
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

/* One node's part of the batch being run. */
struct rd_run {
    size_t first, count; /* its ops: order[first .. first + count) */
    size_t next;         /* ops written so far */
    size_t chunk_first;  /* the chunk in flight: ops [chunk_first, next) */
    bool active;
    bool in_flight;      /* its chunk is written, the replies not read yet */
};

enum rd_kind { RD_INCR, RD_MGET, RD_ADD, RD_DEL };

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
    struct store_drain drain; /* connections given up on (replica_lag_ms) */
};

static const struct store_ops rd_ops;
static const struct pool_engine rd_engine;

static struct rd_store *rd_of(struct store *s)
{
    return (struct rd_store *)s;
}

/* ---- pool and handles ---- */

static void rd_close(struct store *s)
{
    struct rd_store *h = rd_of(s);
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
        !pool_init(&h->placement, &rd_engine, pool->ketama, pool->nodes, pool->n_nodes,
                   pool->replicas, pool->hint_keys))
        goto err;
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
    return !node_health_down(hl, store_now_ms()) && !node_health_lagging(hl);
}

static bool rd_probe(struct store *s, uint32_t node)
{
    return !node_health_down(&rd_of(s)->pool->health[node], store_now_ms());
}

static void node_fail(struct rd_store *h, size_t node)
{
    node_health_fail(&h->pool->health[node]);
    resp_close(&h->conns[node]);
    h->base.stats.node_failures++;
}

/* Ready to send to node: false when it is down or cannot be reached (then
 * it is marked down). */
static bool conn_ready(struct rd_store *h, size_t node)
{
    struct resp_conn *c = &h->conns[node];
    const struct node_health *hl = &h->pool->health[node];
    if (node_health_down(hl, store_now_ms()))
        return false;
    if (resp_connected(c) && (c->epoch != node_health_epoch(hl) || resp_stale(c)))
        resp_close(c);
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
        resp_close(c);
        return;
    }
    if (why == RD_FAIL_LAG) {
        pool_nodes_lagging(h->pool, node);
        /* Drained, not closed: what it was sent gets no hint, so it must
         * reach the node (store_drain.h). */
        store_drain_add(&h->drain, resp_release(c), NULL, 0, store_now_ms());
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

/* Formats the node's next chunk into wbuf; returns its length. */
static size_t format_chunk(struct rd_store *h, struct rd_run *r)
{
    char *p = h->wbuf;
    char *limit = h->wbuf + RD_CHUNK_BYTES;
    r->chunk_first = r->next;
    if (h->kind != RD_MGET) {
        while (r->next < r->count && r->next - r->chunk_first < RD_CHUNK_OPS && p < limit)
            p = format_write(h, p, &h->ops[h->order[r->first + r->next++]]);
        return (size_t)(p - h->wbuf);
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
    return (size_t)(p - h->wbuf);
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

/* Reads the replies of the node's chunk in flight; false when the node
 * failed or the connection had to be closed (then every op of the node has
 * its status). */
static bool read_chunk(struct rd_store *h, size_t node)
{
    struct rd_run *r = &h->runs[node];
    struct resp_conn *c = &h->conns[node];
    size_t k = r->chunk_first;
    enum resp_result res = RESP_FAILED;
    if (h->kind == RD_ADD || h->kind == RD_DEL) {
        for (; k < r->next; k++) {
            struct store_op *op = &h->ops[h->order[r->first + k]];
            if ((res = resp_read(c)) != RESP_OK)
                goto fail;
            if (!write_status(h->kind, &c->reply, &op->status)) {
                k++;
                res = RESP_FAILED;
                goto fail; /* not Redis speaking: out of step */
            }
        }
        return true;
    }
    if (h->kind == RD_INCR) {
        for (; k < r->next; k++) {
            struct store_op *op = &h->ops[h->order[r->first + k]];
            if (!delta_ok(op)) {
                op->status = STORE_ERROR;
                continue;
            }
            if ((res = resp_read(c)) != RESP_OK)
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
            /* The EXPIRE's reply: the increment is already confirmed, so a
             * failure here costs the TTL refresh only. */
            if ((res = resp_read(c)) != RESP_OK) {
                k++;
                goto fail;
            }
        }
        return true;
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
    return true;
fail:
    run_fail(h, node, k, SIZE_MAX, res == RESP_FAILED ? RD_FAIL_NODE : RD_FAIL_CONN);
    return false;
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
    uint64_t now = store_now_ms();
    uint64_t io_deadline = now + h->pool->timeout_ms;
    if (deadline > io_deadline)
        deadline = io_deadline;
    int pr;
    do {
        pr = poll(pfds, np, deadline > now ? (int)(deadline - now) : 0);
        now = store_now_ms();
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
static void run_batch(struct rd_store *h, enum rd_kind kind, struct store_op *ops, size_t n)
{
    size_t nn = h->pool->n_nodes;
    if (h->drain.n > 0) {
        store_drain_pump(&h->drain, store_now_ms());
        h->base.stats.drains_pending = h->drain.n;
    }
    for (size_t i = 0; i < n; i++) {
        ops[i].status = STORE_UNAVAILABLE; /* not sent unless said otherwise */
        ops[i].value = 0;
        ops[i].present = false;
        ops[i].node_failed = false;
    }
    if (n == 0 || !scratch_reserve(h, n))
        return;
    h->kind = kind;
    h->ops = ops;
    route(h, n);
    bool lag_on = kind == RD_INCR && h->placement.run_replicated && h->pool->replica_lag_ms > 0;
    uint64_t lag_deadline = UINT64_MAX;
    uint64_t start = store_now_ms();
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
                h->conns[k].proven = true;
                if (h->placement.replicas >= 2 && h->pool->replica_lag_ms > 0 &&
                    store_now_ms() - start > h->pool->replica_lag_ms)
                    node_health_ok_slow(&h->pool->health[k]); /* a lagging node stays so */
                else
                    node_health_ok(&h->pool->health[k]);
                ended = true;
                continue;
            }
            size_t len = format_chunk(h, r);
            size_t sent = 0;
            if (len == 0) { /* only deltas Redis cannot hold: no reply to wait for */
                read_chunk(h, k);
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
                    read_chunk(h, k);
                }
            continue;
        }
        if (ended && lag_deadline == UINT64_MAX &&
            pool_incr_confirmed(&h->placement, h->ops, n))
            lag_deadline = store_now_ms() + h->pool->replica_lag_ms;
        size_t k = wait_any(h, lag_deadline);
        if (k == SIZE_MAX && store_now_ms() >= lag_deadline) {
            for (k = 0; k < nn; k++)
                if (h->runs[k].in_flight)
                    run_fail(h, k, h->runs[k].chunk_first, SIZE_MAX, RD_FAIL_LAG);
            break;
        }
        if (k == SIZE_MAX) /* silent for the I/O timeout: the first read fails */
            for (k = 0; k < nn && !h->runs[k].in_flight; k++)
                ;
        h->runs[k].in_flight = false;
        read_chunk(h, k);
    }
}

static void rd_engine_incr(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_INCR, ops, n);
}

static void rd_engine_mget(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_MGET, ops, n);
}

static void rd_engine_add(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_ADD, ops, n);
}

static void rd_engine_del(struct store *s, struct store_op *ops, size_t n)
{
    run_batch(rd_of(s), RD_DEL, ops, n);
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

static enum store_status rd_node_get(struct store *s, uint32_t node, const char *key,
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
static enum store_status rd_node_put(struct store *s, uint32_t node, const char *key,
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
static enum store_status rd_node_del(struct store *s, uint32_t node, const char *key,
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
    .pool = rd_pool,
};
