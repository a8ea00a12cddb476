/*
 * The Redis Cluster backend (redis-cluster://SEED[,SEED...]).
 *
 * Placement is the cluster's: slot = CRC16(key) mod 16384 with hash tags
 * (crc16.h), and a slot map read with CLUSTER SLOTS from any node that
 * answers (the seeds first time, then the known masters). Our keys hold no
 * '{' (the event name is [a-z0-9-], shard numbers, option and bucket numbers,
 * country codes, user ids of [A-Za-z0-9_.:-]), so the shards of one counter
 * spread over many slots and nodes, which is the point of sharding them.
 *
 * A batch runs in rounds. Each round groups the pending commands by node,
 * pipelines them per node (every node's chunk written before any reply is
 * read, as the redis:// pool does) and sorts the replies:
 *   integer / value     done
 *   MOVED slot addr     the slot moved for good: note its new owner, read
 *                       the whole map again before the next round, resend
 *   ASK slot addr       the key is being migrated: resend to addr, preceded
 *                       by ASKING, once
 *   TRYAGAIN, CLUSTERDOWN, LOADING   resend after a backoff (10 ms doubling)
 *   another error       the item fails (STORE_ERROR: refused)
 * A refused command was not applied, so resending is exact. At most
 * RC_MAX_ROUNDS rounds: what is still refused then is STORE_UNAVAILABLE.
 * A node that fails mid-batch: what may have reached it is STORE_ERROR
 * (outcome unknown), the rest is resent after a map refresh (a failover
 * may have moved its slots).
 *
 * A counter write is INCRBY + EXPIRE as in the redis:// pool; the INCRBY
 * reply decides the item, an EXPIRE redirected on its own (the key migrated
 * between the two) is resent alone. Reads are pipelined GETs, one per key:
 * an MGET must not cross slots, and the keys of one aggregation batch fall
 * in nearly as many slots as there are keys.
 *
 * Replication belongs to the cluster (each master's replicas and their
 * failover): replicas= is refused on redis-cluster:// URLs. Note that the
 * cluster replicates asynchronously: a master that dies can take its last
 * acknowledged increments with it.
 *
 * Each handle keeps its own map and connections (clones start with an
 * empty map and read it at first use).
 *
 * From an event loop (store_incr_start, store_add_start: the ingest's
 * answer threads) the same rounds run without blocking, as the memcached://
 * and redis:// pools run theirs (below, "the batch engine on an event
 * loop"): the map read, every round's chunks and their replies, the backoff
 * of a TRYAGAIN, all on the loop; no store thread on the path of an answer.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "crc16.h"
#include "log.h"
#include "store_impl.h"
#include "store_pool.h"
#include "store_resp.h"
#include "util.h"

#define RC_MAX_NODES 1024u           /* nodes (seeds and masters) a handle knows */
#define RC_MAX_ROUNDS 8u             /* redirect/retry rounds per operation */
#define RC_BACKOFF_FIRST_MS 10u      /* TRYAGAIN / CLUSTERDOWN */
#define RC_BACKOFF_MAX_MS 200u
#define RC_CHUNK_OPS 1024u           /* commands' items per node per round trip */
#define RC_CHUNK_BYTES (64u * 1024u)
/* Longest item: ASKING INCRBY ASKING EXPIRE on the longest key. */
#define RC_ITEM_MAX (2u * (STORE_MAX_KEY + 4u * RESP_ARG_COST + 40u))
/* ASKING SET key value EX ttl NX, the value at its add batch maximum */
_Static_assert(STORE_MAX_KEY + STORE_ADD_BATCH_VALUE_MAX + 8u * RESP_ARG_COST + 40u <=
                   RC_ITEM_MAX,
               "an add must fit RC_ITEM_MAX");
#define RC_WBUF_SIZE (RC_CHUNK_BYTES + RC_ITEM_MAX)

/* What an item still needs (and what its last chunk sent). */
enum {
    RC_INCR = 1,   /* INCRBY */
    RC_TTL = 2,    /* EXPIRE / PERSIST */
    RC_GET = 4,    /* GET (counter read) */
    RC_ASKING = 8, /* sent: each command was preceded by ASKING */
    RC_ADD = 16,   /* SET NX (store_add_batch) */
};

struct rc_shared {
    atomic_size_t refs;
    uint32_t timeout_ms;
    size_t n_seeds;
    struct store_node *seeds; /* n_seeds */
};

struct rc_store;

struct rc_node {
    struct store_node addr;
    struct resp_conn conn;     /* its address is stable: the reader points to it */
    struct node_health health; /* this handle's */
    struct rc_store *h;        /* the handle, and the node's index in it: for events */
    size_t index;
    /* the batch being run */
    size_t first, count, next, chunk_first;
    /* where the replies of the chunk are read up to: item, command, ASKING read */
    size_t read_k;
    uint8_t read_x;
    bool read_asked;
    bool active;
    /* Its part of a run from the loop (a round's chunks, or the map read). */
    struct event *rev, *wev;   /* made at its first part */
    uint64_t rev_gen;          /* the conn.gen rev watches; 0: none */
    int connect_fd;            /* a connect under way, or -1 */
    char *abuf;                /* RC_WBUF_SIZE: the chunk being written */
    size_t wlen, woff;
    uint64_t deadline;
    bool connecting, in_flight, map_read, map_done;
    bool numeric;              /* an address: the loop can connect without a lookup */
};

/* Per item of the batch being run. */
struct rc_item {
    uint16_t slot;
    uint16_t ask;  /* node index + 1 to resend to with ASKING; 0: none */
    uint8_t todo;
    uint8_t sent;
};

enum rc_kind { RCK_INCR, RCK_GET, RCK_ADD };

/* CLUSTER SLOTS, element by element:
 *   [ [start, end, [host, port, id, ...], [replica...]...], ... ] */
struct slots_parse {
    struct rc_store *h;
    size_t asked;        /* the node answering: its host stands for "" */
    uint16_t *map;       /* being built */
    long long start, end;
    char host[STORE_HOST_MAX + 1];
    bool bad;
    size_t ranges;
};

/* A batch run from an event loop. */
struct rc_async {
    struct event_base *base;     /* the loop the handle serves (its first) */
    struct event *finish;        /* the run's end, on the loop's next turn */
    struct event *backoff;       /* TRYAGAIN / CLUSTERDOWN between rounds */
    uint16_t *map;               /* CRC16_SLOTS: a map being read */
    struct slots_parse sp;
    bool running, map_reading;
    enum rc_kind kind;           /* RCK_INCR or RCK_ADD */
    struct store_incr *items;    /* the caller's, RCK_INCR */
    struct store_add_item *adds; /* RCK_ADD */
    size_t n_in;
    unsigned round;
    uint32_t backoff_ms;
    size_t active;               /* nodes whose part of the round still runs */
    size_t map_try, map_known;   /* the next node to ask for the map, of those known */
    store_done_fn done;
    void *arg;
};

struct rc_store {
    struct store base;
    struct rc_shared *sh;       /* shared */
    struct rc_node **nodes;     /* n_nodes, each owned; seeds first */
    size_t n_nodes, cap_nodes;
    uint16_t *slot_node;        /* RC_SLOTS: node index + 1; 0: no owner known */
    bool map_ok;
    bool map_names;             /* the map names a master by a host name */
    char *wbuf;                 /* RC_WBUF_SIZE */
    /* Scratch grown to the largest batch seen. */
    struct store_op *ops;
    struct rc_item *items;
    size_t *order;
    size_t scratch_cap;
    /* The batch being run. */
    size_t n;
    bool refresh;               /* read the map again before the next round */
    bool retry_later;           /* TRYAGAIN / CLUSTERDOWN seen */
    struct rc_async async;
};

static const struct store_ops rc_ops;

static struct rc_store *rc_of(struct store *s)
{
    return (struct rc_store *)s;
}

/* ---- nodes ---- */

static void node_free(struct rc_node *n)
{
    if (n == NULL)
        return;
    if (n->rev != NULL)
        event_free(n->rev);
    if (n->wev != NULL)
        event_free(n->wev);
    if (n->connect_fd >= 0)
        close(n->connect_fd);
    free(n->abuf);
    resp_close(&n->conn);
    free(n);
}

/* The node of an address, added when new; SIZE_MAX when the table is full
 * or out of memory. */
static size_t node_of(struct rc_store *h, const char *host, uint16_t port)
{
    for (size_t i = 0; i < h->n_nodes; i++)
        if (h->nodes[i]->addr.port == port && strcmp(h->nodes[i]->addr.host, host) == 0)
            return i;
    size_t hl = strlen(host);
    if (h->n_nodes >= RC_MAX_NODES || hl == 0 || hl > STORE_HOST_MAX)
        return SIZE_MAX;
    if (h->n_nodes == h->cap_nodes) {
        size_t cap = h->cap_nodes ? h->cap_nodes * 2 : 8;
        struct rc_node **nodes = realloc(h->nodes, cap * sizeof(*nodes));
        if (nodes == NULL)
            return SIZE_MAX;
        h->nodes = nodes;
        h->cap_nodes = cap;
    }
    struct rc_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return SIZE_MAX;
    memcpy(n->addr.host, host, hl + 1);
    n->addr.port = port;
    node_health_init(&n->health);
    n->h = h;
    n->index = h->n_nodes;
    n->connect_fd = -1;
    n->numeric = store_host_numeric(host);
    h->nodes[h->n_nodes] = n;
    return h->n_nodes++;
}

/* Every close goes here: the loop's read event leaves the descriptor
 * before its number can be another connection's. */
static void conn_close(struct rc_store *h, size_t node)
{
    struct rc_node *n = h->nodes[node];
    if (n->rev_gen != 0) {
        event_del(n->rev);
        n->rev_gen = 0;
    }
    if (n->wev != NULL)
        event_del(n->wev);
    resp_close(&n->conn);
}

static void node_fail(struct rc_store *h, size_t node)
{
    node_health_fail(&h->nodes[node]->health);
    conn_close(h, node);
    h->base.stats.node_failures++;
}

static bool conn_ready(struct rc_store *h, size_t node)
{
    struct rc_node *n = h->nodes[node];
    if (node_health_down(&n->health, util_mono_ms()))
        return false;
    if (resp_connected(&n->conn) && resp_stale(&n->conn))
        conn_close(h, node);
    if (resp_connected(&n->conn))
        return true;
    if (resp_connect(&n->conn, n->addr.host, n->addr.port, h->sh->timeout_ms)) {
        h->base.stats.connects++;
        return true;
    }
    node_fail(h, node);
    return false;
}

/* ---- the slot map ---- */

static void on_slots_elem(void *arg, const int *path, int depth, enum resp_type type,
                          const char *s, size_t len, long long v)
{
    struct slots_parse *sp = arg;
    if (depth == 2 && path[1] == 0) {
        sp->start = type == RESP_INTEGER ? v : -1;
        sp->end = -1;
        sp->host[0] = '\0';
    } else if (depth == 2 && path[1] == 1) {
        sp->end = type == RESP_INTEGER ? v : -1;
    } else if (depth == 3 && path[1] == 2 && path[2] == 0) {
        if (type != RESP_STRING || len > STORE_HOST_MAX) {
            sp->bad = true;
            return;
        }
        /* "" (or "?": unknown endpoint) means the host we asked. */
        if (len == 0 || (len == 1 && s[0] == '?')) {
            snprintf(sp->host, sizeof(sp->host), "%s", sp->h->nodes[sp->asked]->addr.host);
        } else {
            memcpy(sp->host, s, len);
            sp->host[len] = '\0';
        }
    } else if (depth == 3 && path[1] == 2 && path[2] == 1) {
        if (type != RESP_INTEGER || v < 1 || v > 65535 || sp->host[0] == '\0' ||
            sp->start < 0 || sp->end < sp->start || sp->end >= (long long)CRC16_SLOTS) {
            sp->bad = true;
            return;
        }
        size_t node = node_of(sp->h, sp->host, (uint16_t)v);
        if (node == SIZE_MAX) {
            sp->bad = true;
            return;
        }
        for (long long slot = sp->start; slot <= sp->end; slot++)
            sp->map[slot] = (uint16_t)(node + 1);
        sp->ranges++;
    }
}

/* Node i's reply to CLUSTER SLOTS has been read (res), its ranges into
 * sp->map: true when it is the map now. */
static bool map_take(struct rc_store *h, size_t i, enum resp_result res, struct slots_parse *sp)
{
    struct resp_conn *c = &h->nodes[i]->conn;
    if (res == RESP_FAILED) {
        node_fail(h, i);
        return false;
    }
    if (res != RESP_OK || c->reply.type != RESP_ARRAY || sp->bad || sp->ranges == 0) {
        if (res == RESP_OK && c->reply.type == RESP_ERROR)
            log_warn("store: redis-cluster node=%s:%u refused CLUSTER SLOTS: %s",
                     h->nodes[i]->addr.host, (unsigned)h->nodes[i]->addr.port, c->reply.text);
        memset(sp->map, 0, CRC16_SLOTS * sizeof(*sp->map));
        return false;
    }
    memcpy(h->slot_node, sp->map, CRC16_SLOTS * sizeof(*sp->map));
    h->map_ok = true;
    h->map_names = false;
    for (size_t slot = 0; slot < CRC16_SLOTS && !h->map_names; slot++)
        h->map_names = sp->map[slot] != 0 && !h->nodes[sp->map[slot] - 1]->numeric;
    h->base.stats.map_refreshes++;
    return true;
}

/* Reads the map from the first node that answers. */
static bool refresh_map(struct rc_store *h)
{
    uint16_t *map = calloc(CRC16_SLOTS, sizeof(*map));
    if (map == NULL)
        return false;
    bool ok = false;
    /* node_of may add nodes while parsing: iterate over those known now */
    size_t known = h->n_nodes;
    for (size_t i = 0; i < known && !ok; i++) {
        if (!conn_ready(h, i))
            continue;
        struct resp_conn *c = &h->nodes[i]->conn;
        struct slots_parse sp = {.h = h, .asked = i, .map = map, .start = -1, .end = -1};
        const char *argv[] = {"CLUSTER", "SLOTS"};
        size_t argvlen[] = {7, 5};
        size_t sent;
        c->elem = on_slots_elem;
        c->elem_arg = &sp;
        enum resp_result res = resp_call(c, 2, argv, argvlen, &sent);
        c->elem = NULL;
        ok = map_take(h, i, res, &sp);
    }
    free(map);
    return ok;
}

/* Follows a MOVED/ASK error reply; false when it is neither. */
static bool redirect(struct rc_store *h, const char *text, struct rc_item *it)
{
    char host[STORE_HOST_MAX + 1];
    uint16_t slot, port;
    bool moved = resp_parse_redirect(text, "MOVED", &slot, host, sizeof(host), &port);
    if (!moved && !resp_parse_redirect(text, "ASK", &slot, host, sizeof(host), &port))
        return false;
    size_t node = node_of(h, host, port);
    h->base.stats.redirects++;
    if (node == SIZE_MAX) {
        h->refresh = true;
        return true;
    }
    if (moved) {
        h->slot_node[slot] = (uint16_t)(node + 1);
        h->refresh = true; /* more slots may have moved with it */
        if (it != NULL)
            it->ask = 0;
    } else if (it != NULL) {
        it->ask = (uint16_t)(node + 1);
    }
    return true;
}

static bool retryable(const char *text)
{
    return strncmp(text, "TRYAGAIN", 8) == 0 || strncmp(text, "CLUSTERDOWN", 11) == 0 ||
           strncmp(text, "LOADING", 7) == 0;
}

/* ---- handles ---- */

static void shared_unref(struct rc_shared *sh)
{
    if (sh == NULL || atomic_fetch_sub(&sh->refs, 1) != 1)
        return;
    free(sh->seeds);
    free(sh);
}

static void async_free(struct rc_store *h);

static void rc_close(struct store *s)
{
    struct rc_store *h = rc_of(s);
    for (size_t i = 0; i < h->n_nodes; i++)
        node_free(h->nodes[i]);
    free(h->nodes);
    free(h->slot_node);
    free(h->wbuf);
    free(h->ops);
    free(h->items);
    free(h->order);
    async_free(h);
    shared_unref(h->sh);
    free(h);
}

static struct store *handle_new(struct rc_shared *sh)
{
    struct rc_store *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base.ops = &rc_ops;
    h->sh = sh;
    atomic_fetch_add(&sh->refs, 1);
    h->slot_node = calloc(CRC16_SLOTS, sizeof(*h->slot_node));
    if (h->slot_node == NULL)
        goto err;
    for (size_t i = 0; i < sh->n_seeds; i++)
        if (node_of(h, sh->seeds[i].host, sh->seeds[i].port) == SIZE_MAX)
            goto err;
    return &h->base;
err:
    rc_close(&h->base);
    return NULL;
}

struct store *store_rediscluster_open(const struct store_url *url, char *err, size_t errlen)
{
    struct rc_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL || url->n_nodes == 0)
        goto err;
    sh->timeout_ms = url->timeout_ms;
    sh->n_seeds = url->n_nodes;
    sh->seeds = calloc(url->n_nodes, sizeof(*sh->seeds));
    if (sh->seeds == NULL)
        goto err;
    memcpy(sh->seeds, url->nodes, url->n_nodes * sizeof(*sh->seeds));
    atomic_init(&sh->refs, 1);
    struct store *s = handle_new(sh);
    shared_unref(sh); /* the handle holds it now */
    if (s == NULL)
        goto fail;
    return s;
err:
    if (sh != NULL) {
        free(sh->seeds);
        free(sh);
    }
fail:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "redis-cluster backend: out of memory");
    return NULL;
}

static struct store *rc_clone(struct store *s)
{
    return handle_new(rc_of(s)->sh);
}

/* ---- the batch engine ---- */

static bool scratch_reserve(struct rc_store *h, size_t n)
{
    if (h->wbuf == NULL && (h->wbuf = malloc(RC_WBUF_SIZE)) == NULL)
        return false;
    if (n <= h->scratch_cap)
        return true;
    size_t cap = h->scratch_cap ? h->scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    struct store_op *ops = realloc(h->ops, cap * sizeof(*ops));
    if (ops != NULL)
        h->ops = ops;
    struct rc_item *items = realloc(h->items, cap * sizeof(*items));
    if (items != NULL)
        h->items = items;
    size_t *order = realloc(h->order, cap * sizeof(*order));
    if (order != NULL)
        h->order = order;
    if (ops == NULL || items == NULL || order == NULL)
        return false;
    h->scratch_cap = cap;
    return true;
}

static char *put_asking(char *p, bool asking)
{
    if (!asking)
        return p;
    p = resp_put_cmd(p, 1);
    return resp_put_arg(p, "ASKING", 6);
}

static char *format_item(struct rc_store *h, size_t i, char *p)
{
    const struct store_op *op = &h->ops[i];
    struct rc_item *it = &h->items[i];
    bool asking = it->ask != 0;
    char num[24];
    it->sent = (uint8_t)(it->todo | (asking ? RC_ASKING : 0));
    if (it->todo & RC_ADD) {
        p = put_asking(p, asking);
        p = resp_put_cmd(p, op->ttl_s > 0 ? 6 : 4);
        p = resp_put_arg(p, "SET", 3);
        p = resp_put_arg(p, op->key, op->keylen);
        p = resp_put_arg(p, op->val, op->vallen);
        if (op->ttl_s > 0) {
            p = resp_put_arg(p, "EX", 2);
            p = resp_put_arg(p, num, util_format_u64(num, op->ttl_s));
        }
        return resp_put_arg(p, "NX", 2);
    }
    if (it->todo & RC_GET) {
        p = put_asking(p, asking);
        p = resp_put_cmd(p, 2);
        p = resp_put_arg(p, "GET", 3);
        return resp_put_arg(p, op->key, op->keylen);
    }
    if (it->todo & RC_INCR) {
        p = put_asking(p, asking);
        p = resp_put_cmd(p, 3);
        p = resp_put_arg(p, "INCRBY", 6);
        p = resp_put_arg(p, op->key, op->keylen);
        p = resp_put_arg(p, num, util_format_u64(num, op->delta));
    }
    if (it->todo & RC_TTL) {
        p = put_asking(p, asking);
        if (op->ttl_s == 0) {
            p = resp_put_cmd(p, 2);
            p = resp_put_arg(p, "PERSIST", 7);
            return resp_put_arg(p, op->key, op->keylen);
        }
        p = resp_put_cmd(p, 3);
        p = resp_put_arg(p, "EXPIRE", 6);
        p = resp_put_arg(p, op->key, op->keylen);
        p = resp_put_arg(p, num, util_format_u64(num, op->ttl_s));
    }
    return p;
}

/* Node n's next chunk into buf (RC_WBUF_SIZE); its replies are read from
 * its first item on. */
static size_t format_chunk(struct rc_store *h, struct rc_node *n, char *buf)
{
    char *p = buf;
    char *limit = buf + RC_CHUNK_BYTES;
    n->chunk_first = n->read_k = n->next;
    n->read_x = 0;
    n->read_asked = false;
    while (n->next < n->count && n->next - n->chunk_first < RC_CHUNK_OPS && p < limit)
        p = format_item(h, h->order[n->first + n->next++], p);
    return (size_t)(p - buf);
}

/* One command's reply for item i (what: RC_INCR, RC_TTL, RC_GET or RC_ADD). */
static void on_reply(struct rc_store *h, size_t i, int what, const struct resp_reply *r)
{
    struct store_op *op = &h->ops[i];
    struct rc_item *it = &h->items[i];
    if (r->type == RESP_ERROR) {
        if (redirect(h, r->text, it))
            return; /* stays to do: resent next round */
        if (retryable(r->text)) {
            h->retry_later = true;
            return;
        }
        if (what == RC_TTL) {
            it->todo &= (uint8_t)~RC_TTL; /* the increment stands; the TTL is lost */
            return;
        }
        op->status = STORE_ERROR; /* refused: WRONGTYPE, not an integer, overflow */
        it->todo = 0;
        return;
    }
    it->ask = 0; /* anything but a redirect ends the one-shot ASK */
    if (what == RC_ADD) {
        op->status = r->type == RESP_STATUS && strcmp(r->text, "OK") == 0 ? STORE_OK
                     : r->type == RESP_NIL                                 ? STORE_EXISTS
                                                                           : STORE_ERROR;
        it->todo = 0;
    } else if (what == RC_INCR) {
        if (r->type == RESP_INTEGER) {
            op->status = STORE_OK;
            op->value = r->integer > 0 ? (uint64_t)r->integer : 0;
            it->todo &= (uint8_t)~RC_INCR;
        } else {
            op->status = STORE_ERROR;
            it->todo = 0;
        }
    } else if (what == RC_TTL) {
        it->todo &= (uint8_t)~RC_TTL;
    } else {
        op->present = false;
        op->value = 0;
        if (r->type == RESP_NIL) {
            op->status = STORE_OK;
        } else if (r->type == RESP_STRING && r->len < RESP_TEXT_MAX &&
                   store_parse_counter(r->text, r->len, &op->value)) {
            op->status = STORE_OK;
            op->present = true;
        } else {
            op->status = STORE_ERROR; /* not a counter */
            op->value = 0;
        }
        it->todo = 0;
    }
}

/* The connection ended with the node's chunk in flight; items from k on
 * are unsettled. An INCRBY or an add that may have reached the node is
 * STORE_ERROR (outcome unknown, never resent: an add sent again would find
 * its own key and say EXISTS); everything else stays to do and goes again
 * next round (a GET or an EXPIRE can be repeated). sent_bytes: how
 * much of the chunk was written (SIZE_MAX: all of it). */
static void chunk_fail(struct rc_store *h, size_t node, size_t k, size_t sent_bytes,
                       bool node_failed)
{
    struct rc_node *n = h->nodes[node];
    size_t off = 0;
    char *scratch = h->wbuf; /* free now: recompute the offsets */
    for (; k < n->next; k++) {
        size_t i = h->order[n->first + k];
        struct rc_item *it = &h->items[i];
        bool maybe = true;
        if (sent_bytes != SIZE_MAX) {
            /* nothing of this chunk was read: todo is still what was sent */
            size_t start = off;
            off += (size_t)(format_item(h, i, scratch) - scratch);
            maybe = start < sent_bytes;
        }
        if (maybe && (it->sent & (RC_INCR | RC_ADD)) && (it->todo & (RC_INCR | RC_ADD))) {
            h->ops[i].status = STORE_ERROR;
            it->todo = 0;
        }
    }
    n->active = false;
    n->in_flight = false;
    if (node_failed) {
        node_fail(h, node);
        h->refresh = true; /* a failover may move its slots */
    } else {
        conn_close(h, node);
    }
}

/* Reads the replies of node's chunk from where the last call stopped
 * (n->read_k ...), blocking, or only those buffered (resp_take).
 * 1: all read; 0: the rest has not arrived; -1: the connection ended
 * (chunk_fail done). */
static int read_chunk(struct rc_store *h, size_t node, bool blocking)
{
    struct rc_node *n = h->nodes[node];
    struct resp_conn *c = &n->conn;
    static const int order_of[] = {RC_ADD, RC_GET, RC_INCR, RC_TTL};
    for (; n->read_k < n->next; n->read_k++, n->read_x = 0) {
        size_t i = h->order[n->first + n->read_k];
        uint8_t sent = h->items[i].sent;
        for (; n->read_x < 4; n->read_x++, n->read_asked = false) {
            int what = order_of[n->read_x];
            if (!(sent & what))
                continue;
            enum resp_result res = RESP_OK;
            if ((sent & RC_ASKING) && !n->read_asked) {
                res = blocking ? resp_read(c) : resp_take(c);
                n->read_asked = res == RESP_OK;
            }
            if (res == RESP_OK)
                res = blocking ? resp_read(c) : resp_take(c);
            if (res == RESP_PARTIAL)
                return 0;
            size_t k = n->read_k;
            if (res == RESP_TOO_BIG && what == RC_GET) {
                /* a value far larger than a counter (another client's) */
                h->ops[i].status = STORE_ERROR;
                h->items[i].todo = 0;
                k++;
            }
            if (res != RESP_OK) {
                chunk_fail(h, node, k, SIZE_MAX, res == RESP_FAILED);
                return -1;
            }
            on_reply(h, i, what, &c->reply);
        }
    }
    return 1;
}

/* Groups the items still to do by target node; false when none is left. */
static bool route(struct rc_store *h)
{
    size_t nn = h->n_nodes;
    bool any = false;
    for (size_t k = 0; k < nn; k++) {
        struct rc_node *n = h->nodes[k];
        n->first = n->count = n->next = n->chunk_first = 0;
        n->active = false;
    }
    for (size_t i = 0; i < h->n; i++) {
        struct rc_item *it = &h->items[i];
        if (it->todo == 0)
            continue;
        any = true;
        uint16_t t = it->ask ? it->ask : h->slot_node[it->slot];
        if (t == 0) {
            h->refresh = true; /* a slot without an owner we know */
            continue;
        }
        h->nodes[t - 1]->count++;
    }
    size_t off = 0;
    for (size_t k = 0; k < nn; k++) {
        h->nodes[k]->first = off;
        off += h->nodes[k]->count;
        h->nodes[k]->count = 0;
    }
    for (size_t i = 0; i < h->n; i++) {
        struct rc_item *it = &h->items[i];
        uint16_t t = it->todo ? (it->ask ? it->ask : h->slot_node[it->slot]) : 0;
        if (t != 0) {
            struct rc_node *n = h->nodes[t - 1];
            h->order[n->first + n->count++] = i;
        }
    }
    return any;
}

/* Runs h->ops[0..n) (their items prepared) to completion or to the round
 * limit (rounds: RC_MAX_ROUNDS, less what a run from the loop used). */
static void run_rounds(struct rc_store *h, unsigned rounds)
{
    uint32_t backoff = RC_BACKOFF_FIRST_MS;
    for (unsigned round = 0; round < rounds; round++) {
        if (!h->map_ok || h->refresh) {
            h->refresh = false;
            if (!refresh_map(h) && !h->map_ok)
                return; /* no node answers: everything stays undone */
        }
        h->retry_later = false;
        if (!route(h))
            return;
        size_t nn = h->n_nodes;
        for (size_t k = 0; k < nn; k++) {
            struct rc_node *n = h->nodes[k];
            if (n->count == 0)
                continue;
            n->active = conn_ready(h, k);
            if (!n->active)
                h->refresh = true; /* a failover may have moved its slots */
        }
        for (;;) {
            bool any = false;
            for (size_t k = 0; k < nn; k++) {
                struct rc_node *n = h->nodes[k];
                if (!n->active)
                    continue;
                if (n->next == n->count) {
                    n->active = false;
                    node_health_ok(&n->health);
                    continue;
                }
                size_t len = format_chunk(h, n, h->wbuf);
                size_t sent = 0;
                if (!resp_send(&n->conn, h->wbuf, len, &sent)) {
                    chunk_fail(h, k, n->chunk_first, sent, true);
                    continue;
                }
                any = true;
            }
            if (!any)
                break;
            for (size_t k = 0; k < nn; k++)
                if (h->nodes[k]->active)
                    read_chunk(h, k, true);
        }
        if (h->retry_later) {
            util_sleep_ms(backoff);
            backoff = backoff * 2 < RC_BACKOFF_MAX_MS ? backoff * 2 : RC_BACKOFF_MAX_MS;
        }
    }
}

/* Prepares h->ops[0..n) (key, delta, ttl set by the caller) to run. */
static void batch_prepare(struct rc_store *h, enum rc_kind kind, size_t n)
{
    h->n = n;
    h->refresh = false;
    for (size_t i = 0; i < n; i++) {
        struct store_op *op = &h->ops[i];
        struct rc_item *it = &h->items[i];
        op->status = STORE_UNAVAILABLE;
        op->value = 0;
        op->present = false;
        *it = (struct rc_item){.slot = crc16_key_slot(op->key, op->keylen)};
        if (!store_key_valid(op->key, op->keylen) ||
            (kind == RCK_INCR && op->delta > (uint64_t)INT64_MAX)) {
            op->status = STORE_ERROR; /* not sent */
            continue;
        }
        it->todo = kind == RCK_INCR ? RC_INCR | RC_TTL : kind == RCK_ADD ? RC_ADD : RC_GET;
    }
}

/* Still to do after the last round: refused every time or never sent. */
static void batch_settle(struct rc_store *h)
{
    for (size_t i = 0; i < h->n; i++) {
        struct rc_item *it = &h->items[i];
        if (it->todo & (RC_INCR | RC_GET | RC_ADD))
            h->ops[i].status = STORE_UNAVAILABLE;
    }
}

static void async_sweep(struct rc_store *h);

/* Runs h->ops[0..n) blocking. Afterwards each op's status: OK, ERROR, or
 * UNAVAILABLE (never applied). */
static void run_batch(struct rc_store *h, enum rc_kind kind, size_t n)
{
    batch_prepare(h, kind, n);
    run_rounds(h, RC_MAX_ROUNDS);
    batch_settle(h);
    async_sweep(h);
}

static void incr_ops(struct rc_store *h, const struct store_incr *items, size_t n,
                     uint32_t ttl_s)
{
    for (size_t i = 0; i < n; i++)
        h->ops[i] = (struct store_op){.key = items[i].key, .keylen = items[i].keylen,
                                      .delta = items[i].delta, .ttl_s = ttl_s};
}

/* The ops' outcomes into the caller's items; the first that is not OK. */
static enum store_status incr_results(struct rc_store *h, struct store_incr *items, size_t n)
{
    struct store *s = &h->base;
    enum store_status first = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        struct store_incr *it = &items[i];
        it->status = h->ops[i].status;
        it->value = it->status == STORE_OK && it->want_value ? h->ops[i].value : 0;
        if (it->status == STORE_OK)
            continue;
        if (it->status == STORE_UNAVAILABLE)
            s->stats.unavailable_items++;
        else
            s->stats.error_items++;
        if (first == STORE_OK)
            first = it->status;
    }
    return first;
}

static enum store_status rc_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                       uint32_t ttl_s)
{
    struct rc_store *h = rc_of(s);
    if (n == 0)
        return STORE_OK;
    if (!scratch_reserve(h, n)) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_NOMEM;
        s->stats.error_items += n;
        return STORE_NOMEM;
    }
    incr_ops(h, items, n, ttl_s);
    run_batch(h, RCK_INCR, n);
    return incr_results(h, items, n);
}

static enum store_status rc_mget_u64(struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n, uint64_t *values,
                                     bool *present)
{
    struct rc_store *h = rc_of(s);
    for (size_t i = 0; i < n; i++) {
        values[i] = 0;
        if (present != NULL)
            present[i] = false;
    }
    if (!scratch_reserve(h, n))
        return STORE_NOMEM;
    for (size_t i = 0; i < n; i++)
        h->ops[i] = (struct store_op){.key = keys[i], .keylen = keylens[i]};
    run_batch(h, RCK_GET, n);
    size_t unavailable = 0;
    bool error = false;
    for (size_t i = 0; i < n; i++) {
        const struct store_op *op = &h->ops[i];
        if (op->status == STORE_OK) {
            values[i] = op->value;
            if (present != NULL)
                present[i] = op->present;
        } else if (op->status == STORE_UNAVAILABLE) {
            unavailable++;
        } else {
            error = true;
        }
    }
    if (unavailable > 0) {
        s->stats.unavailable_items += unavailable;
        return STORE_UNAVAILABLE;
    }
    if (error) {
        s->stats.error_items++;
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* ---- single operations ---- */

/* Sends one command for key, following redirects. STORE_OK: the reply is
 * in (*conn)->reply. Otherwise UNAVAILABLE (not applied), ERROR (a write
 * that may have reached a node that then failed, or a reply too large) or
 * NOMEM. */
static enum store_status single_rounds(struct rc_store *h, const char *key, size_t keylen,
                                       int argc, const char **argv, const size_t *argvlen,
                                       bool keep_blob, struct resp_conn **conn, bool writes)
{
    uint16_t slot = crc16_key_slot(key, keylen);
    uint16_t ask = 0;
    uint32_t backoff = RC_BACKOFF_FIRST_MS;
    h->refresh = false;
    for (unsigned round = 0; round < RC_MAX_ROUNDS; round++) {
        if ((!h->map_ok || h->refresh) && ask == 0) {
            h->refresh = false;
            if (!refresh_map(h) && !h->map_ok)
                return STORE_UNAVAILABLE;
        }
        uint16_t t = ask ? ask : h->slot_node[slot];
        if (t == 0) {
            h->refresh = true;
            continue;
        }
        size_t node = t - 1u;
        if (!conn_ready(h, node)) {
            h->refresh = true;
            ask = 0;
            continue;
        }
        struct resp_conn *c = &h->nodes[node]->conn;
        size_t sent = 0;
        if (ask != 0) {
            const char *av[] = {"ASKING"};
            size_t al[] = {6};
            if (resp_call(c, 1, av, al, &sent) != RESP_OK) {
                node_fail(h, node);
                ask = 0;
                h->refresh = true;
                continue;
            }
        }
        c->keep_blob = keep_blob;
        enum resp_result res = resp_call(c, argc, argv, argvlen, &sent);
        c->keep_blob = false;
        if (res == RESP_NOMEM)
            return sent == 0 || !writes ? STORE_NOMEM : STORE_ERROR;
        if (res == RESP_TOO_BIG)
            return STORE_ERROR;
        if (res != RESP_OK) {
            node_fail(h, node);
            if (sent > 0 && writes)
                return STORE_ERROR; /* may have been applied */
            h->refresh = true;
            ask = 0;
            continue;
        }
        node_health_ok(&h->nodes[node]->health);
        if (c->reply.type == RESP_ERROR) {
            struct rc_item it = {.slot = slot, .ask = ask};
            if (redirect(h, c->reply.text, &it)) {
                ask = it.ask;
                continue;
            }
            if (retryable(c->reply.text)) {
                util_sleep_ms(backoff);
                backoff = backoff * 2 < RC_BACKOFF_MAX_MS ? backoff * 2 : RC_BACKOFF_MAX_MS;
                continue;
            }
        }
        *conn = c;
        return STORE_OK;
    }
    return STORE_UNAVAILABLE; /* refused every time: not applied */
}

static enum store_status single(struct rc_store *h, const char *key, size_t keylen, int argc,
                                const char **argv, const size_t *argvlen, bool keep_blob,
                                struct resp_conn **conn, bool writes)
{
    enum store_status st =
        single_rounds(h, key, keylen, argc, argv, argvlen, keep_blob, conn, writes);
    async_sweep(h);
    return st;
}

static void count(struct store *s, enum store_status st)
{
    if (st == STORE_UNAVAILABLE)
        s->stats.unavailable_items++;
    else if (st == STORE_ERROR || st == STORE_NOMEM)
        s->stats.error_items++;
}

/* The adds to do (checked: UNAVAILABLE) as ops; how many. */
static size_t add_ops(struct rc_store *h, const struct store_add_item *items, size_t n,
                      uint32_t ttl_s)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].status == STORE_UNAVAILABLE)
            h->ops[m++] = (struct store_op){.key = items[i].key, .keylen = items[i].keylen,
                                            .val = items[i].val, .vallen = items[i].vallen,
                                            .ttl_s = ttl_s};
    return m;
}

static void add_results(struct rc_store *h, struct store_add_item *items, size_t n)
{
    struct store *s = &h->base;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].status != STORE_UNAVAILABLE)
            continue;
        enum store_status st = h->ops[m++].status;
        items[i].status = st;
        count(s, st);
    }
}

/* store_add_batch: every add pipelined to its slot's owner, redirects
 * followed as for increments (items come checked: UNAVAILABLE to do). */
static void rc_add_batch(struct store *s, struct store_add_item *items, size_t n,
                         uint32_t ttl_s)
{
    struct rc_store *h = rc_of(s);
    if (n == 0)
        return;
    if (!scratch_reserve(h, n)) {
        for (size_t i = 0; i < n; i++)
            if (items[i].status == STORE_UNAVAILABLE)
                items[i].status = STORE_NOMEM;
        return;
    }
    run_batch(h, RCK_ADD, add_ops(h, items, n, ttl_s));
    add_results(h, items, n);
}


static enum store_status rc_get(struct store *s, const char *key, size_t keylen, char **val,
                                size_t *vallen)
{
    struct rc_store *h = rc_of(s);
    const char *argv[] = {"GET", key};
    size_t argvlen[] = {3, keylen};
    struct resp_conn *c = NULL;
    enum store_status st = single(h, key, keylen, 2, argv, argvlen, true, &c, false);
    if (st == STORE_OK) {
        if (c->reply.type == RESP_NIL) {
            st = STORE_NOTFOUND;
        } else if (c->reply.type != RESP_STRING || c->reply.too_big) {
            st = STORE_ERROR;
        } else {
            *val = c->reply.blob;
            *vallen = c->reply.len;
            c->reply.blob = NULL;
        }
    }
    count(s, st);
    return st;
}

static enum store_status put(struct store *s, const char *key, size_t keylen, const char *val,
                             size_t vallen, uint32_t ttl_s, bool add)
{
    struct rc_store *h = rc_of(s);
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
    struct resp_conn *c = NULL;
    enum store_status st = single(h, key, keylen, argc, argv, argvlen, false, &c, true);
    if (st == STORE_OK) {
        if (c->reply.type == RESP_STATUS && strcmp(c->reply.text, "OK") == 0)
            st = STORE_OK;
        else if (c->reply.type == RESP_NIL && add)
            st = STORE_EXISTS;
        else
            st = STORE_ERROR;
    }
    count(s, st);
    return st;
}

static enum store_status rc_set(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return put(s, key, keylen, val, vallen, ttl_s, false);
}

static enum store_status rc_add(struct store *s, const char *key, size_t keylen,
                                const char *val, size_t vallen, uint32_t ttl_s)
{
    return put(s, key, keylen, val, vallen, ttl_s, true);
}

static enum store_status rc_del(struct store *s, const char *key, size_t keylen)
{
    struct rc_store *h = rc_of(s);
    const char *argv[] = {"DEL", key};
    size_t argvlen[] = {3, keylen};
    struct resp_conn *c = NULL;
    enum store_status st = single(h, key, keylen, 2, argv, argvlen, false, &c, true);
    if (st == STORE_OK) {
        if (c->reply.type != RESP_INTEGER)
            st = STORE_ERROR;
        else if (c->reply.integer == 0)
            st = STORE_NOTFOUND;
    }
    count(s, st);
    return st;
}

/* ---- the batch engine on an event loop (store_incr_start, store_add_start) ----
 *
 * run_rounds without blocking: a round routes the items still to do, then
 * per node a small state machine on the loop connects (to an address: a
 * name would need a lookup, which blocks; such a node is not ready, as a
 * node that is down, and its items end UNAVAILABLE for the caller to retry
 * elsewhere), writes each chunk as the socket takes it and reads its
 * replies as they come (read_chunk, not blocking); the round ends when
 * every node's part has. A map to read first is CLUSTER SLOTS to one node
 * the same way, the next node when it fails; a TRYAGAIN waits on a timer.
 * The replies are sorted by on_reply as in the blocking rounds, so the
 * outcomes are theirs. The connections stay the blocking ones of the calls
 * above (store_resp.h: MSG_DONTWAIT here), and between runs a persistent
 * read event stays on each open one: what it shows then is a close. */

static void on_async_node(evutil_socket_t fd, short what, void *arg);
static void on_async_finish(evutil_socket_t fd, short what, void *arg);
static void on_async_backoff(evutil_socket_t fd, short what, void *arg);
static void async_step(struct rc_store *h);

/* A blocking call closed connections: their read events go before the
 * descriptor numbers come back. */
static void async_sweep(struct rc_store *h)
{
    for (size_t k = 0; h->async.base != NULL && k < h->n_nodes; k++) {
        struct rc_node *n = h->nodes[k];
        if (n->rev_gen != 0 && (!resp_connected(&n->conn) || n->rev_gen != n->conn.gen)) {
            event_del(n->rev);
            n->rev_gen = 0;
        }
    }
}

static void async_free(struct rc_store *h)
{
    struct rc_async *a = &h->async;
    if (a->finish != NULL)
        event_free(a->finish);
    if (a->backoff != NULL)
        event_free(a->backoff);
    free(a->map);
    *a = (struct rc_async){0};
}

/* The events and the map buffer are made for the first loop that runs a
 * batch; a handle serves one loop. */
static bool async_init(struct rc_store *h, struct event_base *base)
{
    struct rc_async *a = &h->async;
    if (a->base != NULL)
        return a->base == base;
    a->finish = event_new(base, -1, 0, on_async_finish, h);
    a->backoff = evtimer_new(base, on_async_backoff, h);
    a->map = malloc(CRC16_SLOTS * sizeof(*a->map));
    if (a->finish == NULL || a->backoff == NULL || a->map == NULL) {
        async_free(h);
        return false;
    }
    a->base = base;
    return true;
}

/* Node k's part begins (a round's chunks, or the map read): false when it
 * cannot (down, a name not connected, no memory): nothing was sent. */
static bool async_node_begin(struct rc_store *h, size_t k, uint64_t now)
{
    struct rc_async *a = &h->async;
    struct rc_node *n = h->nodes[k];
    if (node_health_down(&n->health, now))
        return false;
    if ((n->rev == NULL && (n->rev = event_new(a->base, -1, 0, on_async_node, n)) == NULL) ||
        (n->wev == NULL && (n->wev = event_new(a->base, -1, 0, on_async_node, n)) == NULL) ||
        (n->abuf == NULL && (n->abuf = malloc(RC_WBUF_SIZE)) == NULL))
        return false;
    /* A connection no read event watches may have been closed unseen. */
    if (resp_connected(&n->conn) && n->rev_gen != n->conn.gen && resp_stale(&n->conn))
        conn_close(h, k);
    n->in_flight = n->connecting = n->map_read = n->map_done = false;
    n->wlen = n->woff = 0;
    n->deadline = now + h->sh->timeout_ms;
    if (!resp_connected(&n->conn)) {
        if (!n->numeric)
            return false;
        int fd = resp_connect_start(n->addr.host, n->addr.port);
        if (fd < 0) {
            node_fail(h, k);
            return false;
        }
        n->connect_fd = fd;
        n->connecting = true;
        h->base.stats.connects++;
    }
    n->active = true;
    return true;
}

/* The connect of node k ended (writable, or its deadline): false when it
 * failed (nothing was sent). */
static bool async_connected(struct rc_store *h, size_t k, bool writable)
{
    struct rc_node *n = h->nodes[k];
    int fd = n->connect_fd;
    event_del(n->wev);
    n->connect_fd = -1;
    n->connecting = false;
    if (!writable)
        close(fd);
    else if (resp_connect_finish(&n->conn, fd, h->sh->timeout_ms))
        return n->deadline = util_mono_ms() + h->sh->timeout_ms, true;
    n->active = false;
    node_fail(h, k);
    return false;
}

/* Node k's part failed where it stands (an error, its deadline): what was
 * sent is settled as chunk_fail says; a map read just ends. */
static void async_node_fail(struct rc_store *h, size_t k)
{
    struct rc_node *n = h->nodes[k];
    if (n->connecting) {
        async_connected(h, k, false);
    } else if (n->map_read || !n->in_flight) {
        n->active = false;
        node_fail(h, k);
    } else if (n->woff < n->wlen) {
        chunk_fail(h, k, n->chunk_first, n->woff, true); /* no reply read yet */
    } else {
        chunk_fail(h, k, n->read_k, SIZE_MAX, true);
    }
    if (!n->map_read)
        h->refresh = true; /* a failover may move its slots */
}

/* Moves node k's part on as far as it goes without waiting. 1: it waits
 * for the socket; 0: its part is done; -1: it failed (settled). */
static int async_pump(struct rc_store *h, size_t k, uint64_t now)
{
    struct rc_node *n = h->nodes[k];
    struct resp_conn *c = &n->conn;
    for (;;) {
        if (!n->in_flight) {
            if (n->map_read) {
                if (n->map_done)
                    return 0;
                char *p = resp_put_cmd(n->abuf, 2);
                p = resp_put_arg(p, "CLUSTER", 7);
                p = resp_put_arg(p, "SLOTS", 5);
                n->wlen = (size_t)(p - n->abuf);
            } else {
                if (n->next == n->count)
                    return 0;
                n->wlen = format_chunk(h, n, n->abuf);
            }
            n->woff = 0;
            n->in_flight = true;
        }
        if (n->woff < n->wlen) {
            long w = resp_write_some(c, n->abuf + n->woff, n->wlen - n->woff);
            if (w < 0) {
                async_node_fail(h, k);
                return -1;
            }
            if (w > 0) {
                n->woff += (size_t)w;
                n->deadline = now + h->sh->timeout_ms;
            }
            if (n->woff < n->wlen)
                return 1;
        }
        if (n->map_read) {
            struct rc_async *a = &h->async;
            c->elem = on_slots_elem;
            c->elem_arg = &a->sp;
            enum resp_result res = resp_take(c);
            c->elem = NULL;
            if (res == RESP_PARTIAL)
                return 1;
            a->map_reading = !map_take(h, k, res, &a->sp); /* the next node, or done */
            if (!a->map_reading)
                h->refresh = false;
            n->in_flight = false;
            n->map_done = true;
            if (res == RESP_OK)
                continue;
            if (res != RESP_FAILED)
                conn_close(h, k); /* out of step with the server */
            return -1;
        }
        int rr = read_chunk(h, k, false);
        if (rr < 0)
            return -1;
        if (rr == 0)
            return 1;
        n->in_flight = false;
    }
}

/* Waits for node k's next readiness, or its deadline. false: the events
 * could not be armed (the part is settled as failed). */
static bool async_arm(struct rc_store *h, size_t k, uint64_t now)
{
    struct rc_async *a = &h->async;
    struct rc_node *n = h->nodes[k];
    struct resp_conn *c = &n->conn;
    uint64_t left = n->deadline > now ? n->deadline - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    bool ok;
    if (n->connecting) {
        ok = (event_pending(n->wev, EV_WRITE, NULL) ||
              event_assign(n->wev, a->base, n->connect_fd, EV_WRITE, on_async_node, n) == 0) &&
             event_add(n->wev, &tv) == 0;
    } else {
        ok = true;
        if (n->rev_gen != c->gen) {
            if (n->rev_gen != 0)
                event_del(n->rev);
            n->rev_gen = 0;
            ok = event_assign(n->rev, a->base, resp_fd(c), EV_READ | EV_PERSIST, on_async_node,
                              n) == 0;
            if (ok)
                n->rev_gen = c->gen;
        }
        /* On an added event this only moves its timeout: no epoll change. */
        ok = ok && event_add(n->rev, &tv) == 0;
        if (ok && n->woff < n->wlen && !event_pending(n->wev, EV_WRITE, NULL))
            ok = event_assign(n->wev, a->base, resp_fd(c), EV_WRITE, on_async_node, n) == 0 &&
                 event_add(n->wev, NULL) == 0;
    }
    if (!ok)
        async_node_fail(h, k);
    return ok;
}

/* Node k's part ended (ok: well): its connection, if open, stays watched
 * with no timeout. */
static void async_node_end(struct rc_store *h, size_t k, bool ok)
{
    struct rc_node *n = h->nodes[k];
    event_del(n->wev);
    if (n->rev_gen != 0)
        event_remove_timer(n->rev);
    n->active = false;
    n->in_flight = false;
    if (ok)
        node_health_ok(&n->health);
}

/* A round ended: true when the next waits for the backoff of a TRYAGAIN
 * (its timer steps the run on). */
static bool async_round_over(struct rc_store *h)
{
    struct rc_async *a = &h->async;
    a->round++;
    if (!h->retry_later || a->round >= RC_MAX_ROUNDS)
        return false;
    uint32_t ms = a->backoff_ms;
    a->backoff_ms = ms * 2 < RC_BACKOFF_MAX_MS ? ms * 2 : RC_BACKOFF_MAX_MS;
    struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)ms * 1000};
    return evtimer_add(a->backoff, &tv) == 0;
}

static void on_async_node(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct rc_node *n = arg;
    struct rc_store *h = n->h;
    struct rc_async *a = &h->async;
    size_t k = n->index;
    if (!a->running || !n->active) {
        /* Between parts nothing is due from the server: it closed, or it
         * is out of step. Either way the next part starts afresh. */
        conn_close(h, k);
        return;
    }
    uint64_t now = util_mono_ms();
    int st = 1;
    if (n->connecting) {
        if (!async_connected(h, k, (what & EV_WRITE) != 0))
            st = -1;
    } else if (what & EV_READ) {
        int got = resp_fill(&n->conn);
        if (got < 0) {
            async_node_fail(h, k);
            st = -1;
        } else if (got > 0) {
            n->deadline = now + h->sh->timeout_ms;
        }
    }
    if (st == 1)
        st = async_pump(h, k, now);
    if (st == 1 && now >= n->deadline) {
        async_node_fail(h, k); /* no progress within the timeout */
        st = -1;
    }
    if (st == 1 && async_arm(h, k, now))
        return;
    bool map_read = n->map_read;
    async_node_end(h, k, st == 0);
    if (map_read)
        async_step(h); /* the map is read, or the next node is asked */
    else if (--a->active == 0 && !async_round_over(h))
        async_step(h);
}

static void on_async_backoff(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_step(arg);
}

/* Starts node k's map read: false when it cannot (the next is asked). */
static bool async_map_begin(struct rc_store *h, size_t k, uint64_t now)
{
    struct rc_async *a = &h->async;
    if (!async_node_begin(h, k, now))
        return false;
    struct rc_node *n = h->nodes[k];
    n->map_read = true;
    memset(a->map, 0, CRC16_SLOTS * sizeof(*a->map));
    a->sp = (struct slots_parse){.h = h, .asked = k, .map = a->map, .start = -1, .end = -1};
    int st = n->connecting ? 1 : async_pump(h, k, now);
    if (st == 1 && async_arm(h, k, now))
        return true;
    async_node_end(h, k, st == 0);
    return false; /* ended at once: read nothing, so the next node */
}

/* Starts the round's parts; false when none waits (the round is over). */
static bool async_round_begin(struct rc_store *h, uint64_t now)
{
    struct rc_async *a = &h->async;
    a->active = 0;
    for (size_t k = 0; k < h->n_nodes; k++) {
        struct rc_node *n = h->nodes[k];
        if (n->count == 0)
            continue;
        if (!async_node_begin(h, k, now)) {
            h->refresh = true; /* a failover may have moved its slots */
            continue;
        }
        int st = n->connecting ? 1 : async_pump(h, k, now);
        if (st == 1 && async_arm(h, k, now)) {
            a->active++;
            continue;
        }
        async_node_end(h, k, st == 0);
    }
    return a->active > 0;
}

/* The run goes on from where it stands: a map to read, a round to run, or
 * its end (on the loop's next turn). */
static void async_step(struct rc_store *h)
{
    struct rc_async *a = &h->async;
    uint64_t now = util_mono_ms();
    while (a->round < RC_MAX_ROUNDS) {
        if (!h->map_ok || h->refresh) {
            if (!a->map_reading) {
                a->map_reading = true;
                a->map_try = 0;
                a->map_known = h->n_nodes; /* the read may add nodes */
            }
            while (a->map_reading && a->map_try < a->map_known)
                if (async_map_begin(h, a->map_try++, now))
                    return; /* its end steps again */
            /* read, or no node answered: the map stays as it was */
            a->map_reading = false;
            h->refresh = false;
            if (!h->map_ok || h->map_names)
                break; /* names: the rest goes to the caller's thread (async_can) */
        }
        h->retry_later = false;
        if (!route(h))
            break;
        if (async_round_begin(h, now) || async_round_over(h))
            return; /* the end of its last part, or the backoff, steps again */
    }
    event_active(a->finish, EV_TIMEOUT, 0);
}

/* The caller gets the outcomes. */
static void async_deliver(struct rc_store *h)
{
    struct rc_async *a = &h->async;
    batch_settle(h);
    if (a->kind == RCK_INCR)
        incr_results(h, a->items, a->n_in);
    else
        add_results(h, a->adds, a->n_in);
    a->running = false;
    a->done(a->arg); /* may start the next run */
}

static void on_async_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rc_store *h = arg;
    if (h->async.running)
        async_deliver(h);
}

/* A run can start from base's loop: none going, the events made, the
 * scratch for n ops, a map whose masters are all addresses (a name needs a
 * lookup, which blocks: those batches go to the store thread), or, with no
 * map yet, a node to read it from without a lookup. */
static bool async_can(struct rc_store *h, struct event_base *base, size_t n)
{
    if (h->async.running || !async_init(h, base) || !scratch_reserve(h, n))
        return false;
    if (h->map_ok)
        return !h->map_names;
    for (size_t k = 0; k < h->n_nodes; k++)
        if (resp_connected(&h->nodes[k]->conn) || h->nodes[k]->numeric)
            return true;
    return false;
}

static void async_begin(struct rc_store *h, enum rc_kind kind, size_t nops, store_done_fn done,
                        void *arg)
{
    struct rc_async *a = &h->async;
    async_sweep(h);
    a->running = true;
    a->kind = kind;
    a->done = done;
    a->arg = arg;
    a->round = 0;
    a->backoff_ms = RC_BACKOFF_FIRST_MS;
    a->map_reading = false;
    batch_prepare(h, kind, nops);
    async_step(h);
}

static bool rc_incr_start(struct store *s, struct event_base *base, struct store_incr *items,
                          size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    struct rc_store *h = rc_of(s);
    if (n == 0 || !async_can(h, base, n))
        return false; /* n == 0: hints only, and a cluster keeps none */
    incr_ops(h, items, n, ttl_s);
    h->async.items = items;
    h->async.adds = NULL;
    h->async.n_in = n;
    async_begin(h, RCK_INCR, n, done, arg);
    return true;
}

static bool rc_add_start(struct store *s, struct event_base *base, struct store_add_item *items,
                         size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    struct rc_store *h = rc_of(s);
    if (!async_can(h, base, n))
        return false;
    size_t m = add_ops(h, items, n, ttl_s);
    h->async.items = NULL;
    h->async.adds = items;
    h->async.n_in = n;
    async_begin(h, RCK_ADD, m, done, arg);
    return true;
}

/* A stop: the chunks in flight are finished blocking (their commands are
 * applied whatever happens, so their replies are read), then the rounds
 * left run blocking, and done runs. */
static void rc_run_wait(struct store *s)
{
    struct rc_store *h = rc_of(s);
    struct rc_async *a = &h->async;
    if (!a->running)
        return;
    event_del(a->backoff);
    event_del(a->finish);
    for (size_t k = 0; k < h->n_nodes; k++) {
        struct rc_node *n = h->nodes[k];
        if (!n->active)
            continue;
        event_del(n->wev);
        if (n->rev_gen != 0)
            event_remove_timer(n->rev);
        if (n->connecting) {
            close(n->connect_fd);
            n->connect_fd = -1;
            n->connecting = false;
        } else if (n->map_read) {
            conn_close(h, k); /* a read half done: nothing to keep */
        } else if (n->in_flight) {
            size_t sent = 0;
            if (n->woff < n->wlen &&
                !resp_send(&n->conn, n->abuf + n->woff, n->wlen - n->woff, &sent))
                chunk_fail(h, k, n->chunk_first, n->woff + sent, true);
            else
                read_chunk(h, k, true);
        }
        n->active = n->in_flight = n->map_read = false;
    }
    a->active = 0;
    a->map_reading = false;
    if (a->round < RC_MAX_ROUNDS)
        run_rounds(h, RC_MAX_ROUNDS - a->round);
    async_sweep(h);
    async_deliver(h);
}

static const struct store_ops rc_ops = {
    .kind = "redis-cluster",
    .clone = rc_clone,
    .close = rc_close,
    .incr_batch = rc_incr_batch,
    .mget_u64 = rc_mget_u64,
    .get = rc_get,
    .set = rc_set,
    .add = rc_add,
    .add_batch = rc_add_batch,
    .del = rc_del,
    .incr_start = rc_incr_start,
    .add_start = rc_add_start,
    .run_wait = rc_run_wait,
    .pool = NULL,
};
