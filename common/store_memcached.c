/*
 * The memcached pool backend (memcached://HOST:PORT,...), speaking the meta
 * text protocol of memcached >= 1.6 directly over one TCP connection per
 * node per handle.
 *
 * Why not libmemcached (1.1): it sends every increment as its own request
 * (BUFFER_REQUESTS does not batch increments), NOREPLY makes them fast but
 * loses the confirmation that group commit needs, and incr cannot refresh a
 * TTL nor create a missing counter in the text protocol. One meta command
 * does all of it:
 *
 *   ma <key> N<ttl> J<delta> D<delta> T<ttl> q O<i>\r\n
 *      N: create a missing counter (TTL ttl) at J = delta, D not applied;
 *      T: refresh the TTL of an existing one; q: success is silent
 *      (except "HD O<i>" when N created the counter: 1.6.18 ignores q on
 *      that path); O<i>: the item's index comes back with any reply for
 *      it. An item that wants the new value sends v instead of q (q would
 *      silence the VA too) and gets "VA <len> O<i>" + the number.
 *   mn\r\n  ->  MN\r\n   ends a pipeline: everything before it was processed.
 *
 * So a batch is, per node, one stream of ma commands and one mn, written
 * while replies are read (poll on both directions: a big batch can never
 * deadlock on two full socket buffers), and MN confirms every silent item.
 * Keys are placed by ketama (ketama.h), the same placement as libmemcached's,
 * and replicated by the pool layer (store_pool.h): this file is the engine
 * that runs commands on the nodes the pool chose.
 *
 * Failure handling: a node that fails (connect, write, read, timeout,
 * garbled reply) is marked down for a backoff (100 ms doubling to 2 s,
 * shared by every clone of the handle) so a dead node costs one timeout, not
 * one per key or per thread. Commands for a down node get STORE_UNAVAILABLE
 * without being sent; commands that may have reached a node that then
 * failed before MN get STORE_ERROR (outcome unknown).
 *
 * A connection closed or reset by the peer in a run marks the node down
 * like any failure: reconnecting at once without a backoff lost an
 * acknowledged answer under load in test_store_reset.py (README), so that
 * shortcut was taken out; an idle connection the server closed is found
 * before a run (conn_stale) and only reopened. With replicas >= 2, a
 * replica still outstanding replica_lag_ms after every item of an
 * increment batch was confirmed is
 * given up on for the batch (store_pool.h, "lag"): a slow node costs the
 * batch replica_lag_ms, then a backoff keeps it out, instead of setting
 * the pace of every batch.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ketama.h"
#include "log.h"
#include "mc_reply.h"
#include "store_drain.h"
#include "store_impl.h"
#include "store_pool.h"
#include "util.h"

#define MC_RBUF_SIZE 65536u        /* read buffer per connection */
#define MC_WBUF_SIZE 65536u        /* a batch is formatted this much at a time */
#define MC_CMD_MAX 512u            /* longest command we format: key <= 250 */
/* memcached reads an exptime above 30 days as an absolute unix time. */
#define MC_RELATIVE_TTL_MAX 2592000u

struct mc_conn {
    int fd;          /* -1: not connected */
    uint32_t epoch;  /* health epoch seen at connect */
    char *rbuf;      /* MC_RBUF_SIZE; unparsed bytes in [rpos, rend) */
    size_t rpos, rend;
    char *wbuf;      /* MC_WBUF_SIZE + MC_CMD_MAX; unsent bytes in [wpos, wend) */
    size_t wpos, wend;
    /* A handle on an event loop (store_incr_start): a read event that stays
     * on the connection while it is open, so a run costs no epoll change;
     * between runs it notices a server that closes. */
    struct event *rev; /* owned by the handle's mc_async; NULL before */
    bool rev_on;       /* added for fd */
};

/* One node's part of the batch being run. */
struct mc_run {
    size_t first, count; /* its ops: order[first .. first + count) */
    size_t next;         /* ops formatted so far */
    size_t buf_first;    /* first op in the current write buffer */
    bool mn_queued;
    bool active;         /* still waiting for MN */
    bool unattributed;   /* an error reply without O: which op is unknown */
    uint64_t deadline;   /* ms: no progress by then is a failure */
    uint64_t start;      /* ms: when it began (a lagging node is readmitted when fast) */
    size_t skip;         /* bytes of a large value block still to discard */
};

/* The batch being run (on the handle: no allocation per batch). Op i's
 * replies carry O<i>. */
struct mc_batch {
    enum mc_kind kind;
    size_t n;
    struct store_op *ops;     /* (ref) the pool's */
    uint32_t ttl_s;           /* MC_INCR, MC_ADD: the exptime last formatted, */
    char ttl[24];             /* and its text */
    size_t ttllen;
};

/* Where a node's event finds its run. */
struct mc_node_ref {
    struct mc_store *h;
    size_t node;
};

/* A batch run from an event loop (store_incr_start, store_add_start): an
 * increment batch is one run; an add batch one run per replica rank, each
 * started from the end of the one before. */
struct mc_async {
    struct event_base *base;  /* (ref) the loop the events below belong to */
    struct event **ev;        /* owned, n_nodes: each node's writability, added
                               * only while output waits (the read events are
                               * the connections') */
    struct mc_node_ref *refs; /* owned, n_nodes */
    struct event *finish;     /* owned: ends a run that had no node to wait for */
    struct event *lag;        /* owned: replica_lag_ms after an increment run
                               * on replicas was confirmed */
    bool running;
    bool lag_on;              /* this run gives up on replicas that lag */
    size_t active;            /* nodes still waiting */
    struct pool_loop_batch plan; /* the batch and the order of its runs */
    store_done_fn done;
    void *arg;
};

struct mc_store {
    struct store base;
    struct pool_nodes *pool;     /* shared */
    struct pool placement;    /* this handle's: replicas, hints */
    struct mc_conn *conns;    /* n_nodes, this handle's own */
    struct mc_run *runs;      /* n_nodes */
    /* Scratch grown to the largest batch seen. */
    size_t *order;            /* op indexes grouped by node */
    unsigned char *seen;      /* op i got an explicit reply */
    size_t scratch_cap;
    struct mc_batch batch;
    bool numeric_hosts;       /* every node is an address: connects never block */
    struct mc_async async;
    struct store_drain drain; /* connections given up on (replica_lag_ms) */
};

static const struct store_ops mc_ops;
static const struct pool_engine mc_engine;

static struct mc_store *mc_of(struct store *s)
{
    return (struct mc_store *)s;
}

/* ---- pool and handles ---- */

static void conns_free(struct mc_conn *c, size_t n)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (c[i].fd >= 0)
            close(c[i].fd);
        free(c[i].rbuf);
        free(c[i].wbuf);
    }
    free(c);
}

static void async_free(struct mc_store *h)
{
    struct mc_async *a = &h->async;
    for (size_t k = 0; k < h->pool->n_nodes && h->conns != NULL; k++) {
        struct mc_conn *c = &h->conns[k];
        if (c->rev != NULL)
            event_free(c->rev);
        c->rev = NULL;
        c->rev_on = false;
    }
    if (a->ev != NULL)
        for (size_t k = 0; k < h->pool->n_nodes; k++)
            if (a->ev[k] != NULL)
                event_free(a->ev[k]);
    if (a->finish != NULL)
        event_free(a->finish);
    if (a->lag != NULL)
        event_free(a->lag);
    free(a->ev);
    free(a->refs);
}

static void mc_close(struct store *s)
{
    struct mc_store *h = mc_of(s);
    async_free(h);
    pool_fini(&h->placement, s);
    store_drain_fini(&h->drain);
    conns_free(h->conns, h->pool->n_nodes);
    free(h->runs);
    free(h->order);
    free(h->seen);
    pool_nodes_unref(h->pool);
    free(h);
}

/* A handle on pool (takes one reference on success). */
static struct store *handle_new(struct pool_nodes *pool)
{
    struct mc_store *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base.ops = &mc_ops;
    h->pool = pool;
    store_drain_init(&h->drain);
    h->conns = calloc(pool->n_nodes, sizeof(*h->conns));
    h->runs = calloc(pool->n_nodes, sizeof(*h->runs));
    if (h->conns == NULL || h->runs == NULL ||
        !pool_init(&h->placement, &mc_engine, pool->ketama, &pool->rings, pool->nodes,
                   pool->n_nodes,
                   pool->replicas, pool->hint_keys))
        goto err;
    h->numeric_hosts = true;
    for (size_t i = 0; i < pool->n_nodes; i++) {
        h->conns[i].fd = -1;
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

struct store *store_memcached_open(const struct store_url *url, char *err, size_t errlen)
{
    struct pool_nodes *p = pool_nodes_new(url);
    struct store *s = p ? handle_new(p) : NULL;
    pool_nodes_unref(p); /* the handle holds its own reference */
    if (s == NULL && err != NULL && errlen > 0)
        snprintf(err, errlen, "memcached backend: out of memory");
    return s;
}

static struct store *mc_clone(struct store *s)
{
    return handle_new(mc_of(s)->pool);
}

/* ---- node health ---- */

static bool node_down(const struct pool_nodes *p, size_t node, uint64_t now)
{
    return node_health_down(&p->health[node], now);
}

/* The pool's view (hint replays, single operations): a lagging node is
 * left to the increment runs that probe it. */
static bool mc_up(struct store *s, uint32_t node)
{
    const struct pool_nodes *p = mc_of(s)->pool;
    return !node_down(p, node, util_mono_ms()) && !node_health_lagging(&p->health[node]);
}

static bool mc_probe(struct store *s, uint32_t node)
{
    return !node_down(mc_of(s)->pool, node, util_mono_ms());
}

static void conn_drop(struct mc_conn *c)
{
    if (c->rev_on) {
        event_del(c->rev); /* before the descriptor goes: its number is reused */
        c->rev_on = false;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rpos = c->rend = 0;
    c->wpos = c->wend = 0;
}

/* The node failed: close our connection and keep every handle away from
 * it for the backoff. */
static void node_fail(struct mc_store *h, size_t node)
{
    pool_nodes_down(h->pool, node);
    conn_drop(&h->conns[node]);
    h->base.stats.node_failures++;
}

static void node_ok(struct mc_store *h, size_t node)
{
    node_health_ok(&h->pool->health[node]);
}

/* Why a node's part of a run failed. */
enum mc_fail {
    MC_FAIL_DOWN, /* connect, timeout, garbled or out-of-step reply */
    MC_FAIL_CUT,  /* the peer closed or reset the connection */
    MC_FAIL_LAG,  /* replica_lag_ms behind the replicas that confirmed */
};

/* Marks node after a failed run: down for the backoff (a cut too: see the
 * opening comment); a replica given up on for lag is also marked lagging,
 * and its connection drained. */
static void node_fail_why(struct mc_store *h, size_t node, enum mc_fail why)
{
    struct mc_conn *c = &h->conns[node];
    if (why == MC_FAIL_LAG) {
        pool_nodes_lagging(h->pool, node);
        /* Drained, not closed: what it was sent gets no hint, so it must
         * reach the node (store_drain.h). */
        if (c->rev_on) {
            event_del(c->rev);
            c->rev_on = false;
        }
        store_drain_add(&h->drain, c->fd, c->wbuf + c->wpos, c->wend - c->wpos, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
        c->fd = -1;
        conn_drop(c);
        h->base.stats.node_failures++;
        return;
    }
    node_fail(h, node);
}

/* ---- connections ---- */

static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = util_mono_ms();
        if (now >= deadline)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r;
        return pfd.revents;
    }
}

/* A connect in progress has completed, successfully, by the deadline. */
static bool connect_done(int fd, uint64_t deadline)
{
    if (wait_fd(fd, POLLOUT, deadline) <= 0)
        return false;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0;
}

/* wait: until connected (or the deadline); otherwise the connection may
 * still be in progress: the first send waits for it (EAGAIN, then POLLOUT)
 * and a refusal shows as an error there. */
static int connect_addr(const struct addrinfo *ai, uint64_t deadline, bool wait)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS)
            goto err;
        if (wait && !connect_done(fd, deadline))
            goto err;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
err:
    close(fd);
    return -1;
}

/* wait: see connect_addr; without it the host must be numeric. */
static bool conn_open(struct mc_store *h, size_t node, bool wait)
{
    struct mc_conn *c = &h->conns[node];
    const struct store_node *n = &h->pool->nodes[node];
    if (c->rbuf == NULL)
        c->rbuf = malloc(MC_RBUF_SIZE);
    if (c->wbuf == NULL)
        c->wbuf = malloc(MC_WBUF_SIZE + MC_CMD_MAX);
    if (c->rbuf == NULL || c->wbuf == NULL)
        return false;

    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)n->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (wait ? 0 : AI_NUMERICHOST)};
    struct addrinfo *res = NULL;
    if (getaddrinfo(n->host, port, &hints, &res) != 0)
        return false;
    uint64_t deadline = util_mono_ms() + h->pool->timeout_ms;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai, deadline, wait);
    freeaddrinfo(res);
    if (fd < 0)
        return false;
    c->fd = fd;
    c->epoch = node_health_epoch(&h->pool->health[node]);
    c->rpos = c->rend = 0;
    c->wpos = c->wend = 0;
    h->base.stats.connects++;
    return true;
}

/* An idle connection the server has closed (restart, idle timeout) shows
 * as readable: checking before a batch avoids sending into a dead socket
 * and turning a clean "not applied" into "outcome unknown". */
static bool conn_stale(const struct mc_conn *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    int r = poll(&pfd, 1, 0);
    return r != 0;
}

/* Ready to send to node: false when it is down or cannot be reached (then
 * it is marked down). connect_wait: see conn_open. */
static bool conn_ready(struct mc_store *h, size_t node, uint64_t now, bool connect_wait)
{
    struct mc_conn *c = &h->conns[node];
    if (node_down(h->pool, node, now))
        return false;
    if (c->fd >= 0 &&
        (c->epoch != node_health_epoch(&h->pool->health[node]) ||
         conn_stale(c)))
        conn_drop(c);
    if (c->fd >= 0)
        return true;
    if (conn_open(h, node, connect_wait))
        return true;
    node_fail(h, node);
    return false;
}

/* ---- scratch ---- */

static bool scratch_reserve(struct mc_store *h, size_t n)
{
    if (n <= h->scratch_cap)
        return true;
    size_t cap = h->scratch_cap ? h->scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    size_t *order = realloc(h->order, cap * sizeof(*order));
    if (order != NULL)
        h->order = order;
    unsigned char *seen = realloc(h->seen, cap);
    if (seen != NULL)
        h->seen = seen;
    if (order == NULL || seen == NULL)
        return false;
    h->scratch_cap = cap;
    return true;
}

/* ---- formatting ---- */

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    return p + util_format_u64(p, v);
}

static size_t format_ttl(char *buf, uint32_t ttl_s)
{
    uint64_t v = ttl_s;
    if (ttl_s > MC_RELATIVE_TTL_MAX)
        v = (uint64_t)time(NULL) + ttl_s;
    return util_format_u64(buf, v);
}

/* The longest item format_item writes: it must fit the write buffer's
 * slack. */
_Static_assert(3 + STORE_MAX_KEY + 1 + 20 + 2 + 20 + 7 + 20 + 2 + STORE_ADD_BATCH_VALUE_MAX +
                       2 <= MC_CMD_MAX,
               "an ms item with its value must fit MC_CMD_MAX");

/*
 *   ma <key> N<ttl> J<delta> D<delta> T<ttl> q O<i>\r\n     (v instead of q: want_value)
 *   mg <key> v q O<i>\r\n
 *   ms <key> <len> T<ttl> ME O<i>\r\n<value>\r\n          (ME: add: HD added, NS exists)
 *   md <key> O<i>\r\n                                      (HD deleted, NF not there)
 */
static char *format_item(struct mc_batch *b, size_t i, char *p)
{
    const struct store_op *op = &b->ops[i];
    if (b->kind == MC_DEL) {
        /* Not quiet, as ms: every delete says how it went. */
        p = put(p, "md ", 3);
        p = put(p, op->key, op->keylen);
        p = put(p, " O", 2);
        p = put_u64(p, i);
        return put(p, "\r\n", 2);
    }
    if (b->kind != MC_MGET && (op->ttl_s != b->ttl_s || b->ttllen == 0)) {
        b->ttl_s = op->ttl_s; /* ops of a batch share one TTL: formatted once */
        b->ttllen = format_ttl(b->ttl, op->ttl_s);
    }
    if (b->kind == MC_ADD) {
        p = put(p, "ms ", 3);
        p = put(p, op->key, op->keylen);
        p = put(p, " ", 1);
        p = put_u64(p, op->vallen);
        p = put(p, " T", 2);
        p = put(p, b->ttl, b->ttllen);
        /* Not quiet: an error reply without O<i> (SERVER_ERROR out of
         * memory) must not leave every silent success in doubt. */
        p = put(p, " ME O", 5);
        p = put_u64(p, i);
        p = put(p, "\r\n", 2);
        p = put(p, op->val, op->vallen);
    } else if (b->kind == MC_INCR) {
        p = put(p, "ma ", 3);
        p = put(p, op->key, op->keylen);
        p = put(p, " N", 2);
        p = put(p, b->ttl, b->ttllen);
        p = put(p, " J", 2);
        p = put_u64(p, op->delta);
        p = put(p, " D", 2);
        p = put_u64(p, op->delta);
        p = put(p, " T", 2);
        p = put(p, b->ttl, b->ttllen);
        /* q also silences the VA of a successful ma v (memcached 1.6.18):
         * an op that wants its value is sent without q. */
        p = put(p, op->want_value ? " v O" : " q O", 4);
        p = put_u64(p, i);
    } else {
        p = put(p, "mg ", 3);
        p = put(p, op->key, op->keylen);
        p = put(p, " v q O", 6);
        p = put_u64(p, i);
    }
    return put(p, "\r\n", 2);
}

/* Refills an empty write buffer with the node's next items (and the final
 * mn). Only an empty buffer is refilled, so on failure "the items of the
 * current buffer" is exactly what may have been sent partially. */
static void refill(struct mc_store *h, size_t node)
{
    struct mc_conn *c = &h->conns[node];
    struct mc_run *r = &h->runs[node];
    if (c->wpos < c->wend || r->mn_queued)
        return;
    c->wpos = c->wend = 0;
    r->buf_first = r->next;
    char *p = c->wbuf;
    char *limit = c->wbuf + MC_WBUF_SIZE;
    while (r->next < r->count && p < limit)
        p = format_item(&h->batch, h->order[r->first + r->next++], p);
    if (r->next == r->count) {
        p = put(p, "mn\r\n", 4);
        r->mn_queued = true;
    }
    c->wend = (size_t)(p - c->wbuf);
}

/* ---- reply handling ---- */

/* Marks the outcome of every op of node that got no explicit reply.
 * drained: what the write buffer holds will still be written (a node
 * given up on for lag), so every op formatted may reach the server. */
static void settle_node(struct mc_store *h, size_t node, bool confirmed, bool drained)
{
    struct mc_run *r = &h->runs[node];
    struct mc_batch *b = &h->batch;
    struct mc_conn *c = &h->conns[node];
    /* Ops [0, sent_upto) may have reached the server. */
    size_t sent_upto = confirmed ? r->count : (c->wpos > 0 || drained ? r->next : r->buf_first);
    for (size_t k = 0; k < r->count; k++) {
        size_t i = h->order[r->first + k];
        struct store_op *op = &b->ops[i];
        if (b->kind == MC_MGET) {
            if (!confirmed) {
                op->status = STORE_UNAVAILABLE;
                op->value = 0;
                op->present = false;
            } else if (!h->seen[i]) {
                /* Misses are silent (q); after an error reply without an
                 * opaque, a silent op may be that error instead. */
                op->status = r->unattributed ? STORE_ERROR : STORE_OK;
            }
            continue;
        }
        if (h->seen[i])
            continue;
        /* A silent op succeeded, unless an error reply without an opaque
         * may be its; an add or a delete is never silent. */
        if (confirmed && !r->unattributed && !op->want_value && b->kind != MC_ADD &&
            b->kind != MC_DEL)
            op->status = STORE_OK;
        else if (k < sent_upto) {
            op->status = STORE_ERROR; /* no value came, or outcome unknown */
            op->node_failed = !confirmed;
        } else
            op->status = STORE_UNAVAILABLE;
    }
}

/* The complete replies in the node's read buffer (mc_reply.h). */
static enum mc_reply_result parse_replies(struct mc_store *h, size_t node)
{
    struct mc_conn *c = &h->conns[node];
    struct mc_run *r = &h->runs[node];
    struct mc_reply x = {.kind = h->batch.kind,
                         .ops = h->batch.ops,
                         .n = h->batch.n,
                         .seen = h->seen,
                         .node = (uint32_t)node,
                         .skip = r->skip,
                         .unattributed = r->unattributed};
    size_t used = 0;
    enum mc_reply_result res = mc_reply_parse(&x, c->rbuf + c->rpos, c->rend - c->rpos, &used);
    c->rpos += used;
    r->skip = x.skip;
    r->unattributed = x.unattributed;
    return res;
}

/* ---- the batch engine ---- */

/* Groups ops by node (counting sort into order[]) and prepares runs. */
static void route_batch(struct mc_store *h)
{
    struct mc_batch *b = &h->batch;
    size_t nn = h->pool->n_nodes;
    for (size_t k = 0; k < nn; k++)
        h->runs[k] = (struct mc_run){0};
    for (size_t i = 0; i < b->n; i++) {
        h->seen[i] = 0;
        h->runs[b->ops[i].node].count++;
    }
    size_t off = 0;
    for (size_t k = 0; k < nn; k++) {
        h->runs[k].first = off;
        off += h->runs[k].count;
        h->runs[k].count = 0;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct mc_run *r = &h->runs[b->ops[i].node];
        h->order[r->first + r->count++] = i;
    }
}

static void run_fail(struct mc_store *h, size_t node, enum mc_fail why)
{
    settle_node(h, node, false, why == MC_FAIL_LAG);
    h->runs[node].active = false;
    node_fail_why(h, node, why);
}

/* Reads what the socket has; false on EOF or error. */
static bool conn_read(struct mc_conn *c)
{
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
        c->rend -= c->rpos;
        c->rpos = 0;
    }
    if (c->rend == MC_RBUF_SIZE)
        return false; /* a reply line longer than the buffer */
    ssize_t r = recv(c->fd, c->rbuf + c->rend, MC_RBUF_SIZE - c->rend, 0);
    if (r > 0) {
        c->rend += (size_t)r;
        return true;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;
    return false;
}

/* Writes what the socket takes; false on error. */
static bool conn_write(struct mc_conn *c)
{
    while (c->wpos < c->wend) {
        ssize_t w = send(c->fd, c->wbuf + c->wpos, c->wend - c->wpos, MSG_NOSIGNAL);
        if (w > 0) {
            c->wpos += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (w < 0 && errno == EINTR)
            continue;
        return false;
    }
    return true;
}

/* ---- one node's part of a run: shared by the poll and the event loop ---- */

/* Makes node k's part of h->batch active, or settles it as not sent when
 * the node is down or unreachable. connect_wait: block up to the timeout on
 * a new connection (false: it completes while the run waits for POLLOUT). */
static bool node_begin(struct mc_store *h, size_t k, uint64_t now, bool connect_wait)
{
    struct mc_run *r = &h->runs[k];
    if (!conn_ready(h, k, now, connect_wait)) {
        settle_node(h, k, false, false);
        return false;
    }
    r->active = true;
    r->start = now;
    r->deadline = now + h->pool->timeout_ms;
    return true;
}

/* Formats and writes what the socket takes now (it is usually writable).
 * false: the node failed (settled, marked down). */
static bool node_pump(struct mc_store *h, size_t k)
{
    struct mc_run *r = &h->runs[k];
    struct mc_conn *c = &h->conns[k];
    refill(h, k);
    size_t before = c->wpos;
    if (c->wpos < c->wend && !conn_write(c)) {
        run_fail(h, k, MC_FAIL_CUT);
        return false;
    }
    if (c->wpos != before)
        r->deadline = util_mono_ms() + h->pool->timeout_ms;
    refill(h, k);
    return true;
}

static bool node_wants_write(const struct mc_store *h, size_t k)
{
    const struct mc_conn *c = &h->conns[k];
    return c->wpos < c->wend;
}

/* Handles readiness (POLLIN/POLLOUT/POLLHUP/POLLERR, 0 for a timeout) of
 * an active node. false when its part of the run ended (settled). */
static bool node_io(struct mc_store *h, size_t k, short rev, uint64_t now)
{
    struct mc_run *r = &h->runs[k];
    struct mc_conn *c = &h->conns[k];
    bool ok = true;
    enum mc_fail why = MC_FAIL_CUT; /* a write or read that fails */
    if (rev & POLLOUT) {
        size_t before = c->wpos;
        ok = conn_write(c);
        if (c->wpos != before)
            r->deadline = now + h->pool->timeout_ms;
    }
    if (ok && (rev & (POLLIN | POLLHUP | POLLERR))) {
        size_t before = c->rend - c->rpos;
        ok = conn_read(c);
        if (ok && c->rend - c->rpos != before)
            r->deadline = now + h->pool->timeout_ms;
        else if (ok && (rev & (POLLHUP | POLLERR)))
            ok = false;
        if (ok) {
            enum mc_reply_result res = parse_replies(h, k);
            why = MC_FAIL_DOWN;
            if (res == MC_REPLY_DONE) {
                if (!r->mn_queued || c->wpos < c->wend || c->rpos != c->rend) {
                    ok = false; /* MN before we sent ours: out of sync */
                } else {
                    settle_node(h, k, true, false);
                    r->active = false;
                    if (h->placement.replicas >= 2 && h->pool->replica_lag_ms > 0 &&
                        now - r->start > h->pool->replica_lag_ms)
                        node_health_ok_slow(&h->pool->health[k]); /* still lagging */
                    else
                        node_ok(h, k);
                    return false;
                }
            } else if (res == MC_REPLY_BAD) {
                ok = false;
            }
        }
    }
    if (ok && now >= r->deadline) {
        ok = false; /* no progress within the timeout */
        why = MC_FAIL_DOWN;
    }
    if (!ok) {
        run_fail(h, k, why);
        return false;
    }
    return true;
}

/* Drives the active nodes of h->batch to their end by poll: write and read
 * interleaved. An increment batch on replicas >= 2 gives up on the nodes
 * still outstanding replica_lag_ms after every item got a confirmation
 * (store_pool.h, "lag"); checked when a node's part ends, the only moment
 * silent items get confirmed. */
static void run_poll(struct mc_store *h)
{
    size_t nn = h->pool->n_nodes;
    struct pollfd pfds[STORE_MAX_NODES];
    size_t pnode[STORE_MAX_NODES];
    uint64_t now;
    size_t active = 0;
    bool lag_on = h->batch.kind == MC_INCR && h->placement.run_replicated &&
                  h->pool->replica_lag_ms > 0;
    uint64_t lag_deadline = UINT64_MAX;
    for (size_t k = 0; k < nn; k++)
        if (h->runs[k].active)
            active++;
    size_t checked = active; /* active when confirmations were last counted */

    while (active > 0) {
        size_t np = 0;
        uint64_t first_deadline = lag_deadline;
        for (size_t k = 0; k < nn; k++) {
            struct mc_run *r = &h->runs[k];
            if (!r->active)
                continue;
            if (!node_pump(h, k)) {
                active--;
                continue;
            }
            pfds[np] = (struct pollfd){.fd = h->conns[k].fd, .events = POLLIN};
            if (node_wants_write(h, k))
                pfds[np].events |= POLLOUT;
            pnode[np++] = k;
            if (r->deadline < first_deadline)
                first_deadline = r->deadline;
        }
        if (np == 0)
            break;
        now = util_mono_ms();
        int timeout = first_deadline > now ? (int)(first_deadline - now) : 0;
        int pr = poll(pfds, np, timeout);
        if (pr < 0 && errno != EINTR)
            pr = 0; /* treat as a timeout round: deadlines decide */
        now = util_mono_ms();
        for (size_t j = 0; j < np; j++)
            if (!node_io(h, pnode[j], pr > 0 ? pfds[j].revents : 0, now))
                active--;
        if (lag_on && active < checked && active > 0 && lag_deadline == UINT64_MAX) {
            checked = active;
            if (pool_incr_confirmed(&h->placement, h->batch.ops, h->batch.n))
                lag_deadline = now + h->pool->replica_lag_ms;
        }
        if (now >= lag_deadline)
            for (size_t k = 0; k < nn; k++)
                if (h->runs[k].active) {
                    run_fail(h, k, MC_FAIL_LAG);
                    active--;
                }
    }
}

/* Makes ops (each on its node) h->batch, grouped by node; every op is
 * STORE_UNAVAILABLE until its run says otherwise. false: no memory for
 * the scratch, nothing can be sent. */
static bool batch_setup(struct mc_store *h, enum mc_kind kind, struct store_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ops[i].status = STORE_UNAVAILABLE;
        ops[i].value = 0;
        ops[i].present = false;
        ops[i].node_failed = false;
    }
    if (!scratch_reserve(h, n))
        return false;
    h->batch = (struct mc_batch){.kind = kind, .n = n, .ops = ops};
    route_batch(h);
    return true;
}

/* Engine: runs ops in one pipelined batch, on every node at once. Every op
 * ends with a status (and a value). */
static void run_ops(struct store *s, enum mc_kind kind, struct store_op *ops, size_t n)
{
    struct mc_store *h = mc_of(s);
    if (h->drain.n > 0) {
        store_drain_pump(&h->drain, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
    }
    if (n == 0 || !batch_setup(h, kind, ops, n))
        return; /* nothing was sent */
    uint64_t now = util_mono_ms();
    for (size_t k = 0; k < h->pool->n_nodes; k++)
        if (h->runs[k].count > 0)
            node_begin(h, k, now, true);
    run_poll(h);
}

static void mc_engine_incr(struct store *s, struct store_op *ops, size_t n)
{
    run_ops(s, MC_INCR, ops, n);
}

static void mc_engine_mget(struct store *s, struct store_op *ops, size_t n)
{
    run_ops(s, MC_MGET, ops, n);
}

static void mc_engine_add(struct store *s, struct store_op *ops, size_t n)
{
    run_ops(s, MC_ADD, ops, n);
}

static void mc_engine_del(struct store *s, struct store_op *ops, size_t n)
{
    run_ops(s, MC_DEL, ops, n);
}

/* ---- the batch engine on an event loop (store_incr_start, store_add_start) ---- */

static bool async_begin(struct mc_store *h, enum mc_kind kind, size_t nops);

/* Runs the pool's ops[0 .. nops): from the loop (true: its end calls
 * async_finish), or by poll for a stop (false: it ran to its end). false
 * also when it could not begin (every op UNAVAILABLE). */
static bool async_run(struct mc_store *h, enum mc_kind kind, size_t nops, bool blocking)
{
    if (!blocking)
        return async_begin(h, kind, nops);
    run_ops(&h->base, kind, h->placement.ops, nops);
    return false;
}

static const enum mc_kind mc_kind_of[] = {
    [POOL_RUN_INCR] = MC_INCR, [POOL_RUN_ADD] = MC_ADD, [POOL_RUN_DEL] = MC_DEL};

/* A run ended, every node's part settled: the batch's next run goes
 * (pool_loop_next), or the batch is done. From the loop (blocking false),
 * or for a stop by poll. */
static void async_finish(struct mc_store *h, bool blocking)
{
    struct mc_async *a = &h->async;
    event_del(a->lag);
    enum pool_run_kind kind;
    size_t nops;
    while ((nops = pool_loop_next(&h->placement, &h->base, &a->plan, &kind)) > 0)
        if (async_run(h, mc_kind_of[kind], nops, blocking))
            return; /* its end comes back here */
    a->running = false;
    a->done(a->arg); /* may start the next run */
}

static void on_async_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_finish(arg, false);
}

static void on_async_node(evutil_socket_t fd, short what, void *arg);

/* Waits for the node's next readiness, or its deadline (the read event's
 * timeout). false: the events could not be armed (the node is settled as
 * failed). */
static bool async_arm(struct mc_store *h, size_t k)
{
    struct mc_async *a = &h->async;
    struct mc_conn *c = &h->conns[k];
    uint64_t now = util_mono_ms();
    uint64_t left = h->runs[k].deadline > now ? h->runs[k].deadline - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    bool ok = true;
    if (!c->rev_on) {
        ok = event_assign(c->rev, a->base, c->fd, EV_READ | EV_PERSIST, on_async_node,
                          &a->refs[k]) == 0;
        c->rev_on = ok;
    }
    /* On an added event this only moves its timeout: no epoll change. */
    ok = ok && event_add(c->rev, &tv) == 0;
    if (ok && node_wants_write(h, k) && !event_pending(a->ev[k], EV_WRITE, NULL))
        ok = event_assign(a->ev[k], a->base, c->fd, EV_WRITE, on_async_node, &a->refs[k]) == 0 &&
             event_add(a->ev[k], NULL) == 0;
    if (!ok) {
        run_fail(h, k, MC_FAIL_DOWN);
        return false;
    }
    return true;
}

/* The node's part of the run ended: its connection (if still open) waits
 * with no timeout. */
static void async_node_end(struct mc_store *h, size_t k)
{
    struct mc_conn *c = &h->conns[k];
    event_del(h->async.ev[k]);
    if (c->rev_on)
        event_remove_timer(c->rev);
}

/* A node's part ended and others still wait: as run_poll does, once every
 * item is confirmed the rest get replica_lag_ms. */
static void async_node_done(struct mc_store *h)
{
    struct mc_async *a = &h->async;
    if (--a->active == 0) {
        async_finish(h, false);
        return;
    }
    if (a->lag_on && !evtimer_pending(a->lag, NULL) &&
        pool_incr_confirmed(&h->placement, h->batch.ops, h->batch.n)) {
        uint32_t ms = h->pool->replica_lag_ms;
        struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                             .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        if (evtimer_add(a->lag, &tv) != 0)
            a->lag_on = false; /* the nodes' own timeouts still end the run */
    }
}

static void on_async_lag(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct mc_store *h = arg;
    for (size_t k = 0; k < h->pool->n_nodes; k++) {
        if (!h->runs[k].active)
            continue;
        run_fail(h, k, MC_FAIL_LAG);
        async_node_end(h, k);
    }
    h->async.active = 0;
    async_finish(h, false);
}

static void on_async_node(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct mc_node_ref *ref = arg;
    struct mc_store *h = ref->h;
    size_t k = ref->node;
    if (!h->async.running || !h->runs[k].active) {
        /* Between runs nothing is due from the server: it closed, or it
         * is out of step. Either way the next run starts afresh. */
        conn_drop(&h->conns[k]);
        return;
    }
    short rev = (short)(((what & EV_READ) ? POLLIN : 0) | ((what & EV_WRITE) ? POLLOUT : 0));
    if (!node_io(h, k, rev, util_mono_ms()) || !node_pump(h, k) || !async_arm(h, k)) {
        async_node_end(h, k);
        async_node_done(h);
    }
}

/* The events are made once, for the first loop that runs a batch. */
static bool async_init(struct mc_store *h, struct event_base *base)
{
    struct mc_async *a = &h->async;
    if (a->base != NULL)
        return a->base == base;
    size_t nn = h->pool->n_nodes;
    a->ev = calloc(nn, sizeof(*a->ev));
    a->refs = calloc(nn, sizeof(*a->refs));
    a->finish = event_new(base, -1, 0, on_async_finish, h);
    a->lag = evtimer_new(base, on_async_lag, h);
    if (a->ev == NULL || a->refs == NULL || a->finish == NULL || a->lag == NULL)
        goto err;
    for (size_t k = 0; k < nn; k++) {
        a->refs[k] = (struct mc_node_ref){.h = h, .node = k};
        if ((a->ev[k] = event_new(base, -1, 0, on_async_node, &a->refs[k])) == NULL ||
            (h->conns[k].rev = event_new(base, -1, 0, on_async_node, &a->refs[k])) == NULL)
            goto err;
    }
    a->base = base;
    return true;
err:
    async_free(h);
    *a = (struct mc_async){0};
    return false;
}

/* Starts a run of the pool's ops[0 .. nops) from the loop. false: no
 * memory for the scratch (every op UNAVAILABLE, nothing sent). A run with
 * no node to wait for ends on the loop's next turn. */
static bool async_begin(struct mc_store *h, enum mc_kind kind, size_t nops)
{
    struct mc_async *a = &h->async;
    if (!batch_setup(h, kind, h->placement.ops, nops))
        return false;
    a->active = 0;
    a->lag_on = kind == MC_INCR && h->placement.run_replicated && h->pool->replica_lag_ms > 0;
    uint64_t now = util_mono_ms();
    for (size_t k = 0; k < h->pool->n_nodes; k++) {
        if (h->runs[k].count == 0 || !node_begin(h, k, now, false))
            continue;
        if (node_pump(h, k) && async_arm(h, k))
            a->active++;
        else
            async_node_end(h, k);
    }
    if (a->active == 0)
        event_active(a->finish, EV_TIMEOUT, 0); /* done runs after this call returns */
    return true;
}

/* Starts a batch from the loop: the stale deletes due first, if any (a
 * run of their own), then the batch's runs. false: nothing was sent. */
static bool async_start(struct mc_store *h, struct event_base *base, enum mc_kind kind,
                        struct store_incr *items, struct store_add_item *adds, size_t n,
                        uint32_t ttl_s, store_done_fn done, void *arg)
{
    struct mc_async *a = &h->async;
    if (a->running || !h->numeric_hosts || !async_init(h, base))
        return false;
    if (h->drain.n > 0) {
        store_drain_pump(&h->drain, util_mono_ms());
        h->base.stats.drains_pending = h->drain.n;
    }
    a->plan = (struct pool_loop_batch){
        .add = kind == MC_ADD, .items = items, .adds = adds, .n = n, .ttl_s = ttl_s};
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
    if (!async_begin(h, mc_kind_of[first], nops)) {
        a->running = false; /* hints planned into it stay queued: nothing was sent */
        return false;
    }
    return true;
}

static bool mc_incr_start(struct store *s, struct event_base *base, struct store_incr *items,
                          size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    return async_start(mc_of(s), base, MC_INCR, items, NULL, n, ttl_s, done, arg);
}

static bool mc_add_start(struct store *s, struct event_base *base, struct store_add_item *items,
                         size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    return async_start(mc_of(s), base, MC_ADD, NULL, items, n, ttl_s, done, arg);
}

static void mc_run_wait(struct store *s)
{
    struct mc_store *h = mc_of(s);
    if (!h->async.running)
        return;
    for (size_t k = 0; k < h->pool->n_nodes; k++)
        if (h->runs[k].active)
            async_node_end(h, k);
    run_poll(h);
    event_del(h->async.finish); /* a run with no node to wait for was due there */
    async_finish(h, true);
}

static void mc_add_batch(struct store *s, struct store_add_item *items, size_t n, uint32_t ttl_s)
{
    pool_add_batch(&mc_of(s)->placement, s, items, n, ttl_s);
}

static enum store_status mc_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                       uint32_t ttl_s)
{
    return pool_incr_batch(&mc_of(s)->placement, s, items, n, ttl_s);
}

static enum store_status mc_mget_u64(struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n, uint64_t *values,
                                     bool *present)
{
    return pool_mget_u64(&mc_of(s)->placement, s, keys, keylens, n, values, present);
}

/* ---- single operations (blocking with the I/O timeout) ---- */

static bool send_all(struct mc_store *h, size_t node, const char *p, size_t len, bool more,
                     size_t *sent)
{
    struct mc_conn *c = &h->conns[node];
    uint64_t deadline = util_mono_ms() + h->pool->timeout_ms;
    while (len > 0) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            *sent += (size_t)w;
            deadline = util_mono_ms() + h->pool->timeout_ms;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rev = wait_fd(c->fd, POLLOUT, deadline);
            if (rev <= 0 || (rev & (POLLERR | POLLHUP)))
                return false;
            continue;
        }
        return false;
    }
    return true;
}

/* Makes at least want bytes available in the read buffer. */
static bool recv_at_least(struct mc_store *h, size_t node, size_t want)
{
    struct mc_conn *c = &h->conns[node];
    uint64_t deadline = util_mono_ms() + h->pool->timeout_ms;
    while (c->rend - c->rpos < want) {
        int rev = wait_fd(c->fd, POLLIN, deadline);
        if (rev <= 0)
            return false;
        size_t before = c->rend - c->rpos;
        if (!conn_read(c) || c->rend - c->rpos == before) {
            if (c->rend - c->rpos == before && !(rev & (POLLHUP | POLLERR)))
                continue; /* spurious wake-up */
            return false;
        }
        deadline = util_mono_ms() + h->pool->timeout_ms;
    }
    return true;
}

/* Reads one reply line into line (NUL-terminated, without CRLF). */
static bool recv_line(struct mc_store *h, size_t node, char *line, size_t linecap)
{
    struct mc_conn *c = &h->conns[node];
    for (;;) {
        const char *start = c->rbuf + c->rpos;
        size_t avail = c->rend - c->rpos;
        const char *nl = memchr(start, '\n', avail);
        if (nl != NULL) {
            size_t len = (size_t)(nl - start);
            if (len == 0 || start[len - 1] != '\r' || len - 1 >= linecap)
                return false;
            memcpy(line, start, len - 1);
            line[len - 1] = '\0';
            c->rpos += len + 1;
            return true;
        }
        if (avail >= MC_REPLY_LINE_MAX || !recv_at_least(h, node, avail + 1))
            return false;
    }
}

/* Copies a value block of len bytes plus CRLF into dst (len bytes). */
static bool recv_block(struct mc_store *h, size_t node, char *dst, size_t len)
{
    struct mc_conn *c = &h->conns[node];
    size_t got = 0;
    while (got < len + 2) {
        if (c->rpos == c->rend) {
            c->rpos = c->rend = 0;
            if (!recv_at_least(h, node, 1))
                return false;
        }
        size_t avail = c->rend - c->rpos;
        size_t take = len + 2 - got < avail ? len + 2 - got : avail;
        for (size_t i = 0; i < take; i++) {
            size_t pos = got + i;
            char ch = c->rbuf[c->rpos + i];
            if (pos < len)
                dst[pos] = ch;
            else if ((pos == len && ch != '\r') || (pos == len + 1 && ch != '\n'))
                return false;
        }
        c->rpos += take;
        got += take;
    }
    return true;
}

/* Prepares node for a single operation (the pool layer counts the
 * operation's outcome in the stats). A read leaves a lagging node alone; a
 * write does not: a blob set that skipped it would live on the other
 * replicas only, and another reader could find the old value there. */
static enum store_status single_begin(struct mc_store *h, size_t node, bool writes)
{
    if ((!writes && node_health_lagging(&h->pool->health[node])) ||
        !conn_ready(h, node, util_mono_ms(), true))
        return STORE_UNAVAILABLE;
    return STORE_OK;
}

/* A failed exchange: UNAVAILABLE when nothing was sent (or the operation
 * only reads), ERROR when a write may have been applied. */
static enum store_status single_fail(struct mc_store *h, size_t node, size_t sent, bool writes)
{
    node_fail(h, node);
    if (sent == 0 || !writes)
        return STORE_UNAVAILABLE;
    return STORE_ERROR;
}

/* A reply that is not the expected one. SERVER_ERROR (out of memory, too
 * large) is the server refusing: the connection is still in step.
 * CLIENT_ERROR may leave the server skipping input: reconnect. Anything
 * else is a node that does not speak the protocol: mark it down. */
static enum store_status reply_error(struct mc_store *h, size_t node, const char *line,
                                     size_t sent, bool writes)
{
    if (strncmp(line, "SERVER_ERROR", 12) == 0 || strncmp(line, "CLIENT_ERROR", 12) == 0) {
        if (line[0] == 'C')
            conn_drop(&h->conns[node]);
        return STORE_ERROR;
    }
    return single_fail(h, node, sent, writes);
}

/*
 *   mg <key> v\r\n  ->  VA <len>\r\n<data>\r\n  |  EN\r\n
 */
static enum store_status mc_node_get(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, char **val, size_t *vallen)
{
    struct mc_store *h = mc_of(s);
    size_t sent = 0;
    enum store_status rc = single_begin(h, node, false);
    if (rc != STORE_OK)
        return rc;
    char cmd[MC_CMD_MAX];
    char *p = cmd;
    p = put(p, "mg ", 3);
    p = put(p, key, keylen);
    p = put(p, " v\r\n", 4);
    char line[MC_REPLY_LINE_MAX];
    if (!send_all(h, node, cmd, (size_t)(p - cmd), false, &sent) ||
        !recv_line(h, node, line, sizeof(line)))
        return single_fail(h, node, sent, false);
    if (strcmp(line, "EN") == 0)
        return STORE_NOTFOUND;
    if (strncmp(line, "VA ", 3) != 0)
        return reply_error(h, node, line, sent, false);
    uint64_t len;
    if (!store_parse_counter(line + 3, strcspn(line + 3, " "), &len))
        return reply_error(h, node, line, sent, false);
    if (len > STORE_MAX_VALUE) {
        /* Stored by another client with a larger limit: not ours to read.
         * The block stays unread, so start a new connection. */
        conn_drop(&h->conns[node]);
        return STORE_ERROR;
    }
    char *buf = malloc((size_t)len + 1);
    if (buf == NULL) {
        conn_drop(&h->conns[node]); /* the block stays unread: resynchronise */
        return STORE_NOMEM;
    }
    if (!recv_block(h, node, buf, (size_t)len)) {
        free(buf);
        return single_fail(h, node, sent, false);
    }
    buf[len] = '\0';
    node_ok(h, node);
    *val = buf;
    *vallen = (size_t)len;
    return STORE_OK;
}

/*
 *   ms <key> <len> T<ttl>[ ME]\r\n<data>\r\n  ->  HD | NS | SERVER_ERROR ...
 */
static enum store_status mc_node_put(struct store *s, uint32_t node, const char *key,
                                     size_t keylen, const char *val, size_t vallen,
                                     uint32_t ttl_s, bool add)
{
    struct mc_store *h = mc_of(s);
    size_t sent = 0;
    enum store_status rc = single_begin(h, node, true);
    if (rc != STORE_OK)
        return rc;
    char cmd[MC_CMD_MAX];
    char *p = cmd;
    p = put(p, "ms ", 3);
    p = put(p, key, keylen);
    p = put(p, " ", 1);
    p = put_u64(p, vallen);
    p = put(p, " T", 2);
    p += format_ttl(p, ttl_s);
    if (add)
        p = put(p, " ME", 3);
    p = put(p, "\r\n", 2);
    char line[MC_REPLY_LINE_MAX];
    if (!send_all(h, node, cmd, (size_t)(p - cmd), true, &sent) ||
        !send_all(h, node, val, vallen, true, &sent) ||
        !send_all(h, node, "\r\n", 2, false, &sent) || !recv_line(h, node, line, sizeof(line)))
        return single_fail(h, node, sent, true);
    node_ok(h, node);
    if (strcmp(line, "HD") == 0)
        return STORE_OK;
    if (strcmp(line, "NS") == 0 && add)
        return STORE_EXISTS;
    if (strcmp(line, "NS") == 0)
        return STORE_ERROR;
    return reply_error(h, node, line, sent, true);
}


/*
 *   md <key>\r\n  ->  HD | NF
 */
static enum store_status mc_node_del(struct store *s, uint32_t node, const char *key,
                                     size_t keylen)
{
    struct mc_store *h = mc_of(s);
    size_t sent = 0;
    enum store_status rc = single_begin(h, node, true);
    if (rc != STORE_OK)
        return rc;
    char cmd[MC_CMD_MAX];
    char *p = cmd;
    p = put(p, "md ", 3);
    p = put(p, key, keylen);
    p = put(p, "\r\n", 2);
    char line[MC_REPLY_LINE_MAX];
    if (!send_all(h, node, cmd, (size_t)(p - cmd), false, &sent) ||
        !recv_line(h, node, line, sizeof(line)))
        return single_fail(h, node, sent, true);
    node_ok(h, node);
    if (strcmp(line, "HD") == 0)
        return STORE_OK;
    if (strcmp(line, "NF") == 0)
        return STORE_NOTFOUND;
    return reply_error(h, node, line, sent, true);
}

static enum store_status mc_get(struct store *s, const char *key, size_t keylen, char **val,
                                size_t *vallen)
{
    return pool_get(&mc_of(s)->placement, s, key, keylen, val, vallen);
}

static enum store_status mc_set(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return pool_put(&mc_of(s)->placement, s, key, keylen, val, vallen, ttl_s, false);
}

static enum store_status mc_add(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return pool_put(&mc_of(s)->placement, s, key, keylen, val, vallen, ttl_s, true);
}

static enum store_status mc_del(struct store *s, const char *key, size_t keylen)
{
    return pool_del(&mc_of(s)->placement, s, key, keylen);
}

static struct pool *mc_pool(struct store *s)
{
    return &mc_of(s)->placement;
}

static const struct pool_engine mc_engine = {
    .incr = mc_engine_incr,
    .mget = mc_engine_mget,
    .add = mc_engine_add,
    .del_batch = mc_engine_del,
    .get = mc_node_get,
    .put = mc_node_put,
    .del = mc_node_del,
    .up = mc_up,
    .probe = mc_probe,
};

static const struct store_ops mc_ops = {
    .kind = "memcached",
    .clone = mc_clone,
    .close = mc_close,
    .incr_batch = mc_incr_batch,
    .mget_u64 = mc_mget_u64,
    .get = mc_get,
    .set = mc_set,
    .add = mc_add,
    .del = mc_del,
    .add_batch = mc_add_batch,
    .incr_start = mc_incr_start,
    .add_start = mc_add_start,
    .run_wait = mc_run_wait,
    .pool = mc_pool,
};
