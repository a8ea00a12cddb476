/*
 * The counter store: one small synchronous, batched interface over several
 * backends. A handle belongs to one thread; store_clone() gives another
 * thread its own handle on the same store. Callers that must not block (the
 * event loops) run store calls on a worker thread (worker.h).
 *
 * URLs (API.md section 1):
 *   memory:                                   embedded, in-process
 *   memcached://HOST:PORT[,HOST:PORT...]      pool, ketama consistent hashing
 *   redis://HOST:PORT[,HOST:PORT...]          pool, the same ketama placement
 *   redis-cluster://HOST:PORT[,HOST:PORT...]  a Redis Cluster: seed nodes, the
 *                                             slot map is discovered
 * Query options (an unknown one is an error):
 *   timeout_ms=N   connect and I/O timeout, 10..60000, default 1000
 *   replicas=R     pools only: every counter goes to R distinct nodes
 *                  (1..nodes, default 1); reads take the maximum of the
 *                  replicas (store_pool.h)
 *   hint_keys=N    pools only: per node and handle, at most N keys of
 *                  increments kept for a replica that was down, replayed
 *                  when it answers again (0..1000000, default 65536)
 *   replica_lag_ms=N  pools with replicas >= 2 only: once every item of an
 *                  increment batch is confirmed by a replica, the replicas
 *                  still outstanding get at most N ms more; then they are
 *                  treated as failed for the batch (store_pool.h, "lag").
 *                  0..60000, 0: wait for them (up to timeout_ms); default
 *                  20. Reads and blob writes always wait (the maximum of
 *                  the replicas needs every one).
 */
#ifndef LT_STORE_H
#define LT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_status {
    STORE_OK = 0,
    STORE_NOTFOUND,    /* get/delete: no such key */
    STORE_EXISTS,      /* add: key already present */
    STORE_UNAVAILABLE, /* a node could not be reached: the operation was not applied */
    STORE_ERROR,       /* protocol or server error, outcome may be unknown */
    STORE_NOMEM,
};

const char *store_status_str(enum store_status st);

struct store;

/* Parses the URL and connects lazily: a pool whose nodes are down still
 * opens, its operations then fail with STORE_UNAVAILABLE. Returns NULL and a
 * one-line message in err for a malformed URL. */
struct store *store_open(const char *url, char *err, size_t errlen);

/* Only checks the URL (for flag validation before anything starts). */
bool store_url_check(const char *url, char *err, size_t errlen);

#define STORE_MAX_NODES 64
#define STORE_HOST_MAX 255 /* a DNS name; IPv6 literals are kept without brackets */
#define STORE_TIMEOUT_MS_DEFAULT 1000u
#define STORE_TIMEOUT_MS_MIN 10u
#define STORE_TIMEOUT_MS_MAX 60000u

#define STORE_REPLICAS_DEFAULT 1u
#define STORE_HINT_KEYS_DEFAULT 65536u
#define STORE_HINT_KEYS_MAX 1000000u
/* 20 ms: far above a healthy LAN replica's lag behind its peers (a batch
 * takes ~1 ms there, so peers finish within a millisecond or two of each
 * other), and small next to the few ms a batch takes: a replica 20 ms
 * behind its peers would otherwise set the pace of the whole pool. A fixed
 * value, not a multiple of a measured median: the median of a pool whose
 * nodes are all far away is large too, so "20 ms behind the others" is
 * already relative (the budget starts when every item has a confirmation). */
#define STORE_REPLICA_LAG_MS_DEFAULT 20u
#define STORE_REPLICA_LAG_MS_MAX 60000u

enum store_kind {
    STORE_KIND_MEMORY = 0,
    STORE_KIND_MEMCACHED,
    STORE_KIND_REDIS,
    STORE_KIND_REDIS_CLUSTER,
};

struct store_node {
    char host[STORE_HOST_MAX + 1];
    uint16_t port;
};

/* A parsed backend URL (about 16 KiB: keep it off small stacks). */
struct store_url {
    enum store_kind kind;
    size_t n_nodes;                          /* 0 for memory: */
    struct store_node nodes[STORE_MAX_NODES]; /* in URL order: ketama depends on it */
    uint32_t timeout_ms;
    uint32_t replicas;  /* 1..n_nodes; 1 for memory: and redis-cluster:// */
    uint32_t hint_keys; /* per node and handle */
    uint32_t replica_lag_ms; /* 0: off; used with replicas >= 2 */
};

/* Pure parser behind store_open/store_url_check; writes *out only on success. */
bool store_url_parse(const char *url, struct store_url *out, char *err, size_t errlen);

/* memcached's key rule, applied by every backend so that code tested on
 * memory: behaves the same on a pool: 1..250 bytes, no space or control
 * character. An item with a bad key gets STORE_ERROR and is not sent. */
#define STORE_MAX_KEY 250
bool store_key_valid(const char *key, size_t keylen);

/* Another handle on the same store for another thread: same nodes, and for
 * memory: the same table (shared, reference counted). */
struct store *store_clone(struct store *s);

/* NULL is a no-op. */
void store_close(struct store *s);

/* "memory", "memcached", "redis", "redis-cluster": for people (logs). */
const char *store_kind(const struct store *s);
/* The data lives in this process (memory:): an operation costs no I/O and
 * never blocks, so it may run on an event loop itself. */
bool store_in_process(const struct store *s);

struct store_incr {
    const char *key;   /* (ref) */
    size_t keylen;
    uint64_t delta;
    bool want_value;   /* fill value with the counter's new value */
    /* out */
    enum store_status status;
    uint64_t value;
};

/* Adds delta to every counter, creating a missing one at delta, and sets its
 * TTL to ttl_s (every key expires ttl_s after its last write; 0: never).
 * n == 0 is allowed: with replicas it replays pending hints. Returns
 * STORE_OK when every item's status is STORE_OK; otherwise the status of the
 * first failed item. Items are independent: on failure some may have
 * landed; each item's status says which:
 *   STORE_OK           applied (confirmed by the node)
 *   STORE_UNAVAILABLE  not applied (its node is down or was not reached):
 *                      safe to send again
 *   STORE_ERROR        refused (bad key, value not a number), or sent and
 *                      never confirmed (the node failed mid-batch): it MAY
 *                      have been applied, so sending it again may count twice
 * With replicas=R, STORE_OK means every replica that is up confirmed the
 * item and at least one did (the others get it replayed later: hints);
 * STORE_UNAVAILABLE means no replica can have applied it.
 * Counters wrap at 2^64 like memcached's (a test pins it). On Redis they
 * are signed 64-bit: a delta or a total above 2^63 - 1 is STORE_ERROR
 * (refused, not applied). */
enum store_status store_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                   uint32_t ttl_s);

/* store_incr_batch from an event loop, without blocking it: writes the
 * batch from base's loop and returns at once; done(arg) runs later on that
 * loop (never from inside this call) once every item has its status and
 * value exactly as store_incr_batch gives them. Until then the items, their
 * keys and s must stay, and s must not be used otherwise. Returns false,
 * having sent nothing, when this handle cannot: a backend without it
 * (memcached://, redis:// and redis-cluster:// have it), a node given by a
 * name (connecting would need a lookup that blocks; on a cluster: a master
 * of the map, or every seed while no map is read yet), n == 0 on a cluster
 * (it keeps no hints), a run already going, or (replicas >= 2)
 * blobs a node missed that must be deleted there first (a blocking run:
 * the next blocking operation does it): use store_incr_batch, on a worker
 * thread (worker.h). With replicas >= 2 the hints due are replayed in the
 * run and replica_lag_ms applies, as in store_incr_batch; n == 0 replays
 * only them (false when none is due: a node still in its backoff is not
 * asked). */
struct event_base;
typedef void (*store_done_fn)(void *arg);
bool store_incr_start(struct store *s, struct event_base *base, struct store_incr *items,
                      size_t n, uint32_t ttl_s, store_done_fn done, void *arg);
/* Ends the run store_incr_start or store_add_start began without the loop
 * (which may be gone): drives it by poll, up to the I/O timeout per run,
 * and runs done before returning. For a stop: the commands already sent
 * are applied whatever happens, so their outcome must still be read.
 * No-op when nothing runs. */
void store_run_wait(struct store *s);

/* Reads n counters; values[i] is 0 for a missing key. present may be NULL.
 * With replicas, every replica is read and the maximum taken (counters only
 * grow); STORE_OK when each key was read from at least one replica.
 * A value that is not a decimal number is STORE_ERROR (that key reads 0,
 * absent; the others are still read). STORE_UNAVAILABLE when a node was
 * down or failed: its keys read 0, absent. STORE_OK only when every value
 * is known. */
enum store_status store_mget_u64(struct store *s, const char *const *keys, const size_t *keylens,
                                 size_t n, uint64_t *values, bool *present);

/* Blob operations (question state, snapshot chunks, per-user markers).
 * Values are at most STORE_MAX_VALUE bytes. *val is malloc'd, owned by the
 * caller, NUL-terminated (the NUL not counted in vallen).
 * With replicas: set and delete go to every replica; add asks the replicas
 * in placement order and the first that answers decides (STORE_EXISTS
 * there is STORE_EXISTS); get returns the first replica, in placement
 * order, that has the key. A replica that missed a set or delete gets the
 * key deleted when it answers that writer again; until then another
 * reader may find the old value there first (the writer's view of a node,
 * down or lagging, is not the reader's): a value that changes over time
 * is read with store_get_each. */
#define STORE_MAX_VALUE (1000u * 1024u)
/* Every copy of a blob: fn(arg, val, vallen) once per replica holding the
 * key (once on a backend without replicas), val NUL-terminated and valid
 * during the call. The caller keeps the newest by what the value says (a
 * question's state only moves forward, a snapshot head has its generation,
 * a fans list merges). STORE_OK when some copy was found; otherwise as
 * store_get: NOTFOUND when a replica answered it has none and no other
 * failed in another way. missed (NULL: not wanted): the replicas that did
 * not answer, which may hold a copy (a NOTFOUND with missed > 0 is "not
 * on the replicas that answered"). */
typedef void (*store_copy_fn)(void *arg, const char *val, size_t vallen);
enum store_status store_get_each(struct store *s, const char *key, size_t keylen,
                                 store_copy_fn fn, void *arg, size_t *missed);
/* store_get_each for n small blobs at once (the question states): on
 * memcached:// and redis:// pools one pipelined read per node, every node
 * at once, so n keys cost one round trip, not n x replicas. fn gets the
 * key's index. status[i] and missed[i] (missed NULL: not wanted) are
 * store_get_each's for keys[i]; a copy longer than STORE_GET_MANY_VALUE_MAX
 * bytes is not passed (it counts as ERROR for its key unless another copy
 * is found). Returns STORE_OK, or the first status[i] that is neither OK
 * nor NOTFOUND. A replica marked down or lagging is not read (missed), as
 * in store_get_each. */
#define STORE_GET_MANY_VALUE_MAX 1024u
typedef void (*store_copies_fn)(void *arg, size_t i, const char *val, size_t vallen);
enum store_status store_get_each_many(struct store *s, const char *const *keys,
                                      const size_t *keylens, size_t n, store_copies_fn fn,
                                      void *arg, enum store_status *status, size_t *missed);
enum store_status store_get(struct store *s, const char *key, size_t keylen, char **val,
                            size_t *vallen);
enum store_status store_set(struct store *s, const char *key, size_t keylen, const char *val,
                            size_t vallen, uint32_t ttl_s);
/* Set only if absent; STORE_EXISTS otherwise. */
enum store_status store_add(struct store *s, const char *key, size_t keylen, const char *val,
                            size_t vallen, uint32_t ttl_s);
enum store_status store_delete(struct store *s, const char *key, size_t keylen);

/* Many adds in one go (a batch's per-user markers): pipelined per node on
 * memcached:// and redis:// pools, so n markers cost one round trip, not n.
 * Values at most STORE_ADD_BATCH_VALUE_MAX bytes. Of two items with one key
 * the first in order is added, the second is STORE_EXISTS. Each item ends
 * with its status:
 *   STORE_OK           added (confirmed by the node)
 *   STORE_EXISTS       the key was there: nothing written
 *   STORE_UNAVAILABLE  not applied (node down or not reached): safe to resend
 *   STORE_ERROR        refused (bad key, value too long), or sent and never
 *                      confirmed: it MAY have been added
 * Returns STORE_OK when every item is STORE_OK or STORE_EXISTS; otherwise
 * the status of the first item that is neither. With replicas=R, store_add's
 * semantics item by item, in R pipelined runs: every item's first replica,
 * then the second replica of those still undecided, and so on. */
#define STORE_ADD_BATCH_VALUE_MAX 128u
struct store_add_item {
    const char *key;   /* (ref) */
    size_t keylen;
    const char *val;   /* (ref) */
    size_t vallen;
    /* out */
    enum store_status status;
};
enum store_status store_add_batch(struct store *s, struct store_add_item *items, size_t n,
                                  uint32_t ttl_s);
/* store_add_batch from an event loop, without blocking it, as
 * store_incr_start (the same handles can; false: nothing was sent, and
 * store_add_batch does it instead): done(arg) runs on base's loop once every item has its status
 * as store_add_batch gives it. With replicas >= 2 the ranks run one after
 * the other from the loop; only where replicas disagree (an EXISTS after a
 * replica took ours) does the end block, copying the old value back. */
bool store_add_start(struct store *s, struct event_base *base, struct store_add_item *items,
                     size_t n, uint32_t ttl_s, store_done_fn done, void *arg);

/* ---- the nodes of a pool one by one ----
 * For the aggregator, which must tell a node that came back empty from one
 * that is only behind, and write a node back up (aggregate/agg_repair.h).
 * Only memcached:// and redis:// pools have nodes to address; memory: (one
 * process, nothing to lose to a restart) and redis-cluster:// (the cluster
 * replicates and fails over by itself) have none. Nothing here replicates,
 * places or hints: each operation goes to exactly the node it names, and a
 * node in its backoff gets STORE_UNAVAILABLE without being asked. */

/* The nodes that can be addressed (URL order): 0 for memory: and
 * redis-cluster://. */
size_t store_node_count(const struct store *s);
/* Nodes in their backoff now (failed, or left out for lag): what any
 * handle of the pool knows, without asking them. 0 without nodes. */
size_t store_nodes_down(const struct store *s);
/* Node k (k < store_node_count), borrowed from s. */
const struct store_node *store_node_at(const struct store *s, size_t k);
/* A pool's epochs (pool_record.h): ring e is the ketama ring of these
 * nodes (indexes into the URL's, in the order the epoch recorded them);
 * a key written in epoch e >= 1 carries "~e" before its first ':' and is
 * placed by ring e, every other key by ring 0. Call once at startup, before
 * a clone is used on another thread; false (the URL's ring places every key
 * again) for a
 * backend without nodes, more than 8 rings or a bad index. */
struct store_epoch_ring {
    size_t n_nodes;
    uint32_t node[STORE_MAX_NODES];
};
bool store_set_rings(struct store *s, const struct store_epoch_ring *rings, size_t n);
/* R of replicas=R; 1 for backends without nodes. */
uint32_t store_replicas(const struct store *s);

/* One replica's reading of a counter. */
struct store_replica_value {
    uint32_t node;            /* URL order */
    enum store_status status; /* OK: read (present says whether the key
                               * exists); UNAVAILABLE: node down or failed;
                               * ERROR: the value is not a counter */
    bool present;
    uint64_t value;           /* 0 unless present */
};

/* Reads n counters from every replica: key i's replicas, in placement
 * order, are out[i * R .. i * R + R) (R = store_replicas). A bad key gets
 * status ERROR on each of its entries. Returns STORE_OK when every entry
 * is OK, else the first other status; every entry is filled either way.
 * 0 nodes: STORE_ERROR, nothing read (use store_mget_u64). */
enum store_status store_mget_replicas(struct store *s, const char *const *keys,
                                      const size_t *keylens, size_t n,
                                      struct store_replica_value *out);

/* Increments and adds on named nodes, pipelined per node (one round trip
 * per node for the whole array). Each item ends with store_incr_batch's or
 * store_add_batch's statuses (add: STORE_OK added, STORE_EXISTS there). */
struct store_node_write {
    const char *key;  /* (ref) */
    size_t keylen;
    const char *val;  /* add (ref); at most STORE_ADD_BATCH_VALUE_MAX bytes */
    size_t vallen;
    uint64_t delta;   /* incr */
    uint32_t node;
    /* out */
    enum store_status status;
};
void store_node_incr(struct store *s, struct store_node_write *items, size_t n, uint32_t ttl_s);
void store_node_add(struct store *s, struct store_node_write *items, size_t n, uint32_t ttl_s);
/* The value of key on node, as store_get. */
enum store_status store_node_get(struct store *s, uint32_t node, const char *key, size_t keylen,
                                 char **val, size_t *vallen);

/* Per-handle counters (a handle belongs to one thread: sum them across
 * handles for a process total). */
struct store_stats {
    uint64_t node_failures;     /* connects, writes or reads that failed, replicas given
                                 * up on for lag: node marked down */
    uint64_t unavailable_items; /* items/keys refused because their node was down */
    uint64_t error_items;       /* items with STORE_ERROR (server error or outcome unknown) */
    uint64_t connects;          /* successful (re)connections */
    /* replicas >= 2: hinted handoff (store_pool.h), counted in replica
     * writes (queued = replayed + dropped + those still pending) */
    uint64_t hints_queued;      /* replica writes kept for a node that was down */
    uint64_t hints_replayed;    /* of those, written once the node answered */
    uint64_t hints_dropped;     /* lost: table full, outcome unknown, or handle closed */
    uint64_t hints_pending;     /* keys waiting now, all nodes (a gauge) */
    uint64_t drains_pending;    /* connections given up on for lag whose commands are
                                 * still being written out (a gauge, store_drain.h) */
    /* redis-cluster:// */
    uint64_t redirects;         /* MOVED and ASK replies followed */
    uint64_t map_refreshes;     /* slot maps read (CLUSTER SLOTS) */
};
void store_get_stats(const struct store *s, struct store_stats *out);
/* into += from, field by field (totals over handles). */
void store_stats_add(struct store_stats *into, const struct store_stats *from);

#endif
