/*
 * Backend vtable behind store.h; only store*.c (and their tests) include this.
 */
#ifndef LT_STORE_IMPL_H
#define LT_STORE_IMPL_H

#include "store.h"

struct pool;

struct store_ops {
    const char *kind;
    bool in_process;  /* store_in_process */
    struct store *(*clone)(struct store *s);
    void (*close)(struct store *s);
    enum store_status (*incr_batch)(struct store *s, struct store_incr *items, size_t n,
                                    uint32_t ttl_s);
    enum store_status (*mget_u64)(struct store *s, const char *const *keys, const size_t *keylens,
                                  size_t n, uint64_t *values, bool *present);
    enum store_status (*get)(struct store *s, const char *key, size_t keylen, char **val,
                             size_t *vallen);
    enum store_status (*set)(struct store *s, const char *key, size_t keylen, const char *val,
                             size_t vallen, uint32_t ttl_s);
    enum store_status (*add)(struct store *s, const char *key, size_t keylen, const char *val,
                             size_t vallen, uint32_t ttl_s);
    enum store_status (*del)(struct store *s, const char *key, size_t keylen);
    /* NULL: store_add_batch calls add for each item. Items come checked:
     * a valid one has status STORE_UNAVAILABLE (not sent yet), an invalid
     * one (bad key, value too long) STORE_ERROR, to be left alone. */
    void (*add_batch)(struct store *s, struct store_add_item *items, size_t n, uint32_t ttl_s);
    /* NULL: store_incr_start returns false. n == 0: hints only. */
    bool (*incr_start)(struct store *s, struct event_base *base, struct store_incr *items,
                       size_t n, uint32_t ttl_s, store_done_fn done, void *arg);
    /* NULL: store_add_start returns false. Items come checked, as for
     * add_batch. */
    bool (*add_start)(struct store *s, struct event_base *base, struct store_add_item *items,
                      size_t n, uint32_t ttl_s, store_done_fn done, void *arg);
    void (*run_wait)(struct store *s); /* with incr_start, add_start */
    /* Pools: the handle's placement and replication part (store_pool.h),
     * behind store_placement and the store_node_* calls; NULL for backends
     * without client-side placement. */
    struct pool *(*pool)(struct store *s);
};

/* Every backend's handle starts with this. */
struct store {
    const struct store_ops *ops;
    struct store_stats stats; /* written by the owning thread only */
};

/* Backends (store_memory.c, store_memcached.c, store_redis.c,
 * store_rediscluster.c). A new handle has zeroed stats. */
struct store *store_memory_open(void);
struct store *store_memcached_open(const struct store_url *url, char *err, size_t errlen);
struct store *store_redis_open(const struct store_url *url, char *err, size_t errlen);
struct store *store_rediscluster_open(const struct store_url *url, char *err, size_t errlen);

/* Test hook: the nodes (URL order) a pool puts key on, replicas in
 * placement order; 0 for backends without client-side placement. */
size_t store_placement(struct store *s, const char *key, size_t keylen, uint32_t *nodes,
                       size_t max);

/* Parses memcached's decimal counter text: digits, then only spaces (incr
 * pads a value that got shorter in place with spaces). */
bool store_parse_counter(const char *s, size_t len, uint64_t *out);

/* Test hook for the memory store: a clock in milliseconds for TTLs (the
 * table's, so every clone sees it). NULL restores CLOCK_MONOTONIC. */
typedef uint64_t (*store_clock_fn)(void *arg);
void store_memory_set_clock(struct store *s, store_clock_fn fn, void *arg);
/* Entries held, expired ones not yet reclaimed included (tests). */
size_t store_memory_entries(struct store *s);

#endif
