/*
 * A pool of nodes with client-side placement (ketama.h) and optional
 * replication: the part of the memcached and redis pool backends that does
 * not depend on the protocol. A backend supplies an engine that runs
 * commands on given nodes; this layer decides the nodes, merges the
 * replicas' outcomes and keeps the hints. Only store_*.c and tests include
 * this.
 *
 * replicas=R: a key lives on the R distinct nodes ketama_lookup_n gives,
 * the first being ketama_lookup's (R = 1 is the plain pool, unchanged).
 *
 *   incr   every replica gets the increment in the same pipelined run. The
 *          item's status, from its replicas' outcomes:
 *            UNAVAILABLE  no replica can have applied it (all were down):
 *                         the caller may resend it, no hint is kept
 *            OK           at least one replica confirmed it and every other
 *                         one was down, or failed with its node
 *            ERROR        a node that is up refused it, or none confirmed
 *                         it while one may have applied it
 *          Unless the item is UNAVAILABLE, each replica that was down gets
 *          a hint: the caller will not resend, so the hint is how that
 *          replica catches up. A replica whose node failed after the
 *          command went out gets none: it may have applied it, and an
 *          increment counted twice on one replica would be read back as
 *          the maximum, while one missing is hidden by the maximum.
 *          want_value: the largest value a replica confirmed.
 *   lag    replica_lag_ms (store.h), replicas >= 2, increments only: once
 *          every item of a run has a confirmation, a node still
 *          outstanding gets replica_lag_ms more, then the engine gives up
 *          on it as on a node that failed: what it was sent is ERROR with
 *          node_failed (no hint: it may still apply it), what it was not
 *          sent yet is UNAVAILABLE (hinted), its connection is closed and
 *          it is marked down for the backoff and "lagging". A lagging
 *          node is left out of single reads and of hint and stale replays
 *          (up() is false; blob sets and deletes still go to it, waiting
 *          for it: a copy it missed would be another reader's stale one)
 *          until an increment run, which
 *          still goes to it after each backoff (the probe), finds it
 *          answering within replica_lag_ms of the run's start again (one
 *          that answers later, because an item needed it, stays lagging).
 *          An empty run (n == 0: nothing waits for it) replays its hints
 *          to a lagging node out of its backoff too (engine probe()).
 *          Reads (mget) always wait: the maximum of the replicas needs
 *          every one.
 *   mget   every replica is read; a key's value is the largest any replica
 *          returned (grow-only counters: a node that restarted empty cannot
 *          pull it down). STORE_UNAVAILABLE only for a key no replica could
 *          be read for.
 *   hints  per node, a bounded table in the handle (store_hints.h). The
 *          increments go in front of the next batch (store_incr_batch,
 *          also with n == 0) once the node is out of its backoff: OK
 *          removes them, UNAVAILABLE keeps them, ERROR (outcome unknown)
 *          drops them, for the reason above. A full table drops the
 *          increment (stats hints_dropped, logged); so does closing the
 *          handle with hints pending.
 *   blobs  set and delete go to every replica; a replica that was down
 *          gets a HINT_STALE: the key is deleted there when it answers, so
 *          it cannot serve the old value first. get asks the replicas in
 *          placement order and returns the first that has the key: the
 *          primary unless it is down or restarted empty. add asks them in
 *          placement order too, so concurrent adds meet on the first
 *          replica that answers; the first answer decides, and when a later
 *          replica already had the key (the primary restarted empty), its
 *          value is copied back over ours and the add is STORE_EXISTS.
 *          Stale hints are replayed at the start of every operation.
 *   adds   store_add_batch: with R = 1 every item goes to its node in one
 *          pipelined run (the engine's add); with R > 1 one such run per
 *          replica rank (every item's first replica, then the second of
 *          those not EXISTS yet, ...), each item as add above.
 */
#ifndef LT_STORE_POOL_H
#define LT_STORE_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct ketama;
struct store_hints;

/* ---- node health, shared by every clone of a backend (atomics) ---- */

#define NODE_BACKOFF_MIN_MS 100u
#define NODE_BACKOFF_MAX_MS 2000u

struct node_health {
    _Atomic uint64_t down_until_ms; /* monotonic; 0 or past: usable */
    _Atomic uint32_t backoff_ms;    /* the next backoff; 0 while healthy */
    _Atomic uint32_t epoch;         /* bumped at each failure */
    _Atomic bool lagging;           /* given up on for lag (store_pool.h "lag"); cleared by ok */
};

/* A numeric address (IPv4 or IPv6): connecting to it needs no name lookup,
 * which would block an event loop. */
bool store_host_numeric(const char *host);
void node_health_init(struct node_health *h);
bool node_health_down(const struct node_health *h, uint64_t now_ms);
/* The node failed: keep every handle away from it for the backoff (100 ms
 * doubling to 2 s while it keeps failing). */
void node_health_fail(struct node_health *h);
/* The same for a node given up on for lag: also marks it lagging. */
void node_health_fail_lag(struct node_health *h);
bool node_health_lagging(const struct node_health *h);
void node_health_ok(struct node_health *h);
/* It answered, but later than the lag budget: a lagging node stays lagging
 * and keeps its backoff (the next probe after it, 100 ms doubling to 2 s
 * while it stays slow); any other node gets its backoff reset. */
void node_health_ok_slow(struct node_health *h);
uint32_t node_health_epoch(const struct node_health *h);

/* The pool's epochs (pool_record.h): ring e places the keys written in
 * epoch e, ring 0 every other key too. A key is of epoch e >= 1 when its
 * part before the first ':' ends in "~e" (keys.h; event names hold no '~').
 * n == 0: the URL's own ring places every key. Set once at startup
 * (store_set_rings), before any handle is used on another thread. */
#define POOL_EPOCHS_MAX 8u
struct pool_rings {
    size_t n;
    struct ketama *ring[POOL_EPOCHS_MAX]; /* owned */
    uint32_t *map[POOL_EPOCHS_MAX];       /* owned: ring's node index -> the URL's */
};

/* The epoch a key is placed by (0 for untagged keys). */
uint32_t pool_key_epoch(const char *key, size_t keylen);
/* Replaces rg's rings (store_set_rings); false, with none left, on a bad
 * ring or no memory. */
bool pool_rings_set(struct pool_rings *rg, const struct store_epoch_ring *rings, size_t n,
                    const struct store_node *nodes, size_t n_nodes);
void pool_rings_clear(struct pool_rings *rg);

/* The nodes of a pool URL as every handle of a backend shares them:
 * immutable after creation but the health and, at startup, the rings;
 * reference counted. */
struct pool_nodes {
    atomic_size_t refs;
    uint32_t timeout_ms;
    uint32_t replicas;
    uint32_t hint_keys;
    uint32_t replica_lag_ms;    /* 0: off; only with replicas >= 2 */
    size_t n_nodes;
    struct store_node *nodes;   /* owned, n_nodes */
    struct node_health *health; /* owned, n_nodes, shared by every clone */
    struct ketama *ketama;      /* owned */
    struct pool_rings rings;    /* none until store_set_rings */
};

/* A node that failed (connect, timeout, garbled reply, a cut): marked down
 * (node_health_fail), logged on its first failure since it last answered. */
void pool_nodes_down(struct pool_nodes *p, size_t node);

/* A replica replica_lag_ms behind its peers: marked down and lagging
 * (node_health_fail_lag), logged when it was not lagging yet. */
void pool_nodes_lagging(struct pool_nodes *p, size_t node);

/* Returns with one reference, the caller's. NULL when out of memory or the
 * URL has no nodes. */
struct pool_nodes *pool_nodes_new(const struct store_url *url);
/* Drops a reference; the last one frees. NULL-safe. */
void pool_nodes_unref(struct pool_nodes *p);

/* ---- the engine interface ---- */

/* One command for one node. */
struct store_op {
    const char *key;    /* (ref) a valid key (store_key_valid) */
    size_t keylen;
    const char *val;    /* add (ref) */
    size_t vallen;      /* add: at most STORE_ADD_BATCH_VALUE_MAX */
    uint64_t delta;     /* incr */
    uint32_t ttl_s;     /* incr, add */
    uint32_t node;
    bool want_value;    /* incr */
    bool want_blob;     /* mget: the value as it is (blob), not as a counter; at most
                         * STORE_GET_MANY_VALUE_MAX bytes, a longer one is ERROR */
    /* out */
    char *blob;         /* mget with want_blob, present: a malloc'd copy, NUL-terminated,
                         * the caller's to free whatever the status (NULL: none) */
    size_t bloblen;
    bool present;       /* mget: the key exists */
    enum store_status status; /* OK, UNAVAILABLE (not sent), ERROR (refused or unknown),
                               * EXISTS (add) */
    uint64_t value;     /* incr with want_value, mget */
    bool node_failed;   /* with ERROR: the node failed (or lagged) after it was sent,
                         * not a refusal: merged as a replica that is down */
};

struct pool_engine {
    /* Run every op on its node, pipelined per node; each op ends with a
     * status (and value). n may be 0. */
    void (*incr)(struct store *s, struct store_op *ops, size_t n);
    void (*mget)(struct store *s, struct store_op *ops, size_t n);
    /* Add-if-absent, pipelined the same way; NULL: one put(add) per op. */
    void (*add)(struct store *s, struct store_op *ops, size_t n);
    /* Deletes, pipelined the same way (status OK deleted, NOTFOUND not
     * there); NULL: one del per op. */
    void (*del_batch)(struct store *s, struct store_op *ops, size_t n);
    /* Single operations on one node, with store.h's statuses. */
    enum store_status (*get)(struct store *s, uint32_t node, const char *key, size_t keylen,
                             char **val, size_t *vallen);
    enum store_status (*put)(struct store *s, uint32_t node, const char *key, size_t keylen,
                             const char *val, size_t vallen, uint32_t ttl_s, bool add);
    enum store_status (*del)(struct store *s, uint32_t node, const char *key, size_t keylen);
    /* false while the node is in its backoff after a failure, or lagging */
    bool (*up)(struct store *s, uint32_t node);
    /* NULL, or true when the node is out of its backoff, lagging or not:
     * an empty increment run (only hint replays) may go to it */
    bool (*probe)(struct store *s, uint32_t node);
};

/* Part of a pool backend's handle (one per handle: no locking). */
struct pool {
    const struct pool_engine *eng;  /* (ref) */
    const struct ketama *ketama;    /* (ref) the backend's, shared by its clones */
    struct pool_rings *rings;       /* (ref) the backend's epochs, shared by its clones */
    const struct store_node *nodes; /* (ref) n_nodes, for log lines */
    size_t n_nodes;
    uint32_t replicas;
    uint32_t hint_keys;
    struct store_hints **hints;     /* owned, n_nodes; an entry is NULL until needed */
    struct store_op *ops;           /* owned scratch, grown to the largest run */
    size_t ops_cap;
    bool *drop;                     /* owned scratch for hint removal */
    size_t drop_cap;
    uint64_t *lost;                 /* owned, n_nodes: writes lost, not logged yet */
    const char **lost_why;          /* owned, n_nodes: the last reason (static text) */
    uint64_t lost_log_ms;           /* when the last such line was logged */
    /* the increment run between pool_incr_prepare and pool_incr_finish */
    uint32_t run_hnodes[STORE_MAX_NODES]; /* nodes whose hints it replays */
    size_t run_nhn;
    size_t run_hint_end;            /* ops[0 .. run_hint_end) are those hints */
    /* the add run between pool_add_prepare and pool_add_finish */
    uint8_t *add_rank_st;           /* owned, per item and rank: status, or not asked */
    uint8_t *add_rank_node;         /* owned, per item and rank: the node */
    size_t add_cap;
    size_t add_rank;                /* the rank whose ops are in p->ops */
    bool stale_up[STORE_MAX_NODES]; /* the nodes pool_stale_prepare's ops go to */
    bool run_replicated;            /* the engine's increment run is pool_incr_prepare's
                                     * (replicas >= 2), so replica_lag_ms applies; not for
                                     * pool_node_write's, whose ops are not replica groups */
};

bool pool_init(struct pool *p, const struct pool_engine *eng, const struct ketama *ketama,
               struct pool_rings *rings, const struct store_node *nodes, size_t n_nodes,
               uint32_t replicas, uint32_t hint_keys);
/* Frees what pool_init and the operations allocated; hints still pending
 * are counted in s's stats as dropped and logged. */
void pool_fini(struct pool *p, struct store *s);

/* store.h's operations; s is the handle p belongs to (its stats). */
enum store_status pool_incr_batch(struct pool *p, struct store *s, struct store_incr *items,
                                  size_t n, uint32_t ttl_s);
/* pool_incr_batch in two halves around the engine's run, for an engine that
 * runs without blocking: prepare puts the ops in p->ops and returns their
 * count (SIZE_MAX: out of memory, nothing done); the engine runs them;
 * finish merges their outcomes into the items and returns as
 * pool_incr_batch. Neither touches the network: the stale deletes due
 * (pool_stale_due) are the engine's to run first. */
size_t pool_incr_prepare(struct pool *p, struct store *s, struct store_incr *items, size_t n,
                         uint32_t ttl_s);
enum store_status pool_incr_finish(struct pool *p, struct store *s, struct store_incr *items,
                                   size_t n, uint32_t ttl_s);
/* For an engine running ops = p->ops[0 .. nops) of pool_incr_prepare: true
 * when every item has a replica op with status OK (hint replays are not
 * items and are not counted). Ops not settled yet must not read OK. */
bool pool_incr_confirmed(const struct pool *p, const struct store_op *ops, size_t nops);
enum store_status pool_mget_u64(struct pool *p, struct store *s, const char *const *keys,
                                const size_t *keylens, size_t n, uint64_t *values,
                                bool *present);
enum store_status pool_get_each(struct pool *p, struct store *s, const char *key, size_t keylen,
                                store_copy_fn fn, void *arg, size_t *missed);
/* store_get_each_many: one engine mget (want_blob) of every copy on the
 * nodes that are up. */
enum store_status pool_get_each_many(struct pool *p, struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n, store_copies_fn fn,
                                     void *arg, enum store_status *status, size_t *missed);
enum store_status pool_get(struct pool *p, struct store *s, const char *key, size_t keylen,
                           char **val, size_t *vallen);
enum store_status pool_put(struct pool *p, struct store *s, const char *key, size_t keylen,
                           const char *val, size_t vallen, uint32_t ttl_s, bool add);
enum store_status pool_del(struct pool *p, struct store *s, const char *key, size_t keylen);
/* store_add_batch's backend part (items come checked, store_impl.h). With
 * replicas=1 one pipelined run on the primaries; with more, one run per
 * replica rank, with pool_put(add)'s semantics item by item. */
void pool_add_batch(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                    uint32_t ttl_s);
/* pool_add_batch in steps around the engine's runs, for an engine that runs
 * without blocking: prepare puts the first rank's ops in p->ops and returns
 * their count (SIZE_MAX: out of memory, the items say so); once the engine
 * ran them, next takes their outcomes and puts the next rank's ops there
 * (0: no more runs); finish gives every item its status. finish blocks only
 * where replicas disagree (an EXISTS after a replica took ours: the old
 * value is copied back, one get and one put with the I/O timeout). The
 * caller runs the stale deletes first (pool_stale_due). */
size_t pool_add_prepare(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                        uint32_t ttl_s);
size_t pool_add_next(struct pool *p, struct store_add_item *items, size_t n, uint32_t ttl_s);
void pool_add_finish(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                     uint32_t ttl_s);
/* true when the next operation first deletes blobs a node missed (stale
 * hints on a node that is up): a run of its own before the operation's.
 * An engine that runs without blocking runs it itself: prepare puts the
 * deletes in p->ops and returns their count (0: none), the engine runs
 * them (its del_batch), finish takes their outcomes. idle: nothing waits
 * for the run (an empty increment run), so a lagging node out of its
 * backoff gets its deletes too, as it gets its increment hints. */
bool pool_stale_due(const struct pool *p, struct store *s, bool idle);
size_t pool_stale_prepare(struct pool *p, struct store *s, bool idle);
void pool_stale_finish(struct pool *p, struct store *s);

/* ---- a batch from an event loop (store_incr_start, store_add_start) ----
 * The order of an engine's runs that do not block: the stale deletes due
 * first (a run of their own), then the batch's first run, then, for adds,
 * one run per further replica rank; the items get their statuses at the
 * end. The engine runs each run pool_loop_begin and pool_loop_next hand it
 * (its ops in p->ops), from the loop or, for a stop, blocking. */
enum pool_run_kind { POOL_RUN_INCR, POOL_RUN_ADD, POOL_RUN_DEL };

struct pool_loop_batch {
    bool add;                    /* adds (else increments) */
    struct store_incr *items;    /* increments: (ref) the caller's */
    struct store_add_item *adds; /* adds: (ref) the caller's */
    size_t n;
    uint32_t ttl_s;
    /* pool_loop_begin's and pool_loop_next's */
    bool stale;                  /* the run out is the stale deletes */
    bool nomem;                  /* the batch could not be planned: its items say so */
};

/* The first run of b (add, items or adds, n, ttl_s set): its op count and
 * *kind; 0: none, the batch ends (pool_loop_next) without one; SIZE_MAX:
 * nothing can be sent (out of memory, or increments with n == 0 and no
 * hint due), and the engine says so (false). */
size_t pool_loop_begin(struct pool *p, struct store *s, struct pool_loop_batch *b,
                       enum pool_run_kind *kind);
/* The run out ended: the next one (op count, *kind), or 0: the batch is
 * done and every item has its status. */
size_t pool_loop_next(struct pool *p, struct store *s, struct pool_loop_batch *b,
                      enum pool_run_kind *kind);

/* store.h's store_mget_replicas, store_node_incr/add (add: true) and
 * store_node_get: straight to the named nodes, no replicas, no hints. */
enum store_status pool_mget_replicas(struct pool *p, struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n,
                                     struct store_replica_value *out);
void pool_node_write(struct pool *p, struct store *s, struct store_node_write *items, size_t n,
                     uint32_t ttl_s, bool add);
enum store_status pool_node_get(struct pool *p, struct store *s, uint32_t node, const char *key,
                                size_t keylen, char **val, size_t *vallen);

/* The nodes (URL order) that hold key, replicas in placement order. */
size_t pool_placement(const struct pool *p, const char *key, size_t keylen, uint32_t *nodes,
                      size_t max);

#endif
