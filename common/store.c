/*
 * store.h entry points: URL parsing, argument checks, dispatch to the
 * backend's vtable.
 */
#include "store.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_impl.h"
#include "store_pool.h"
#include "util.h"

const char *store_status_str(enum store_status st)
{
    switch (st) {
    case STORE_OK:
        return "ok";
    case STORE_NOTFOUND:
        return "not_found";
    case STORE_EXISTS:
        return "exists";
    case STORE_UNAVAILABLE:
        return "unavailable";
    case STORE_ERROR:
        return "error";
    case STORE_NOMEM:
        return "no_memory";
    }
    return "unknown";
}

/* Longest URL accepted: 64 nodes of a long name and port, and options. */
#define STORE_URL_MAX (STORE_MAX_NODES * (STORE_HOST_MAX + 8) + 256)

/* Characters allowed in a host name or IPv4 literal: no white space, no
 * control characters, nothing that delimits URL parts. */
static bool host_char_ok(unsigned char c)
{
    return c > ' ' && c < 0x7f && strchr("[]/@?#,:&=%\\\"'", c) == NULL;
}

/*
 *   node  = host ":" port | "[" ipv6 "]" ":" port
 * seg/seglen is one comma-separated piece; idx is 1-based for messages.
 */
static bool parse_node(const char *seg, size_t seglen, size_t idx, struct store_node *out,
                       char *err, size_t errlen)
{
    const char *host;
    size_t hostlen;
    const char *rest; /* after the host: must be ":port" */
    const char *end = seg + seglen;

    if (seglen == 0)
        return util_fail(err, errlen, "backend URL: node %zu is empty", idx);
    if (seg[0] == '[') {
        const char *close = memchr(seg, ']', seglen);
        if (close == NULL)
            return util_fail(err, errlen, "backend URL: node %zu: missing ']' after IPv6 address",
                             idx);
        host = seg + 1;
        hostlen = (size_t)(close - host);
        rest = close + 1;
        char tmp[INET6_ADDRSTRLEN + 1];
        unsigned char addr[16];
        if (hostlen == 0)
            return util_fail(err, errlen, "backend URL: node %zu: empty host", idx);
        if (hostlen >= sizeof(tmp))
            return util_fail(err, errlen, "backend URL: node %zu: bad IPv6 address", idx);
        memcpy(tmp, host, hostlen);
        tmp[hostlen] = '\0';
        if (inet_pton(AF_INET6, tmp, addr) != 1)
            return util_fail(err, errlen, "backend URL: node %zu: bad IPv6 address '%s'", idx, tmp);
    } else {
        const char *colon = memchr(seg, ':', seglen);
        host = seg;
        hostlen = colon != NULL ? (size_t)(colon - seg) : seglen;
        rest = host + hostlen;
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
            return util_fail(err, errlen,
                             "backend URL: node %zu: an IPv6 address must be written in brackets, "
                             "e.g. [::1]:11211",
                             idx);
        if (hostlen == 0)
            return util_fail(err, errlen, "backend URL: node %zu: empty host", idx);
        for (size_t i = 0; i < hostlen; i++)
            if (!host_char_ok((unsigned char)host[i]))
                return util_fail(err, errlen, "backend URL: node %zu: bad character in host", idx);
    }
    if (hostlen > STORE_HOST_MAX)
        return util_fail(err, errlen, "backend URL: node %zu: host longer than %d bytes", idx,
                         STORE_HOST_MAX);
    if (rest >= end || *rest != ':')
        return util_fail(err, errlen, "backend URL: node %zu: missing ':PORT'", idx);
    rest++;
    size_t portlen = (size_t)(end - rest);
    char portstr[8];
    uint32_t port;
    if (portlen == 0)
        return util_fail(err, errlen, "backend URL: node %zu: empty port", idx);
    if (portlen >= sizeof(portstr))
        return util_fail(err, errlen, "backend URL: node %zu: port out of range 1..65535", idx);
    memcpy(portstr, rest, portlen);
    portstr[portlen] = '\0';
    if (!util_parse_u32(portstr, 1, 65535, &port))
        return util_fail(err, errlen, "backend URL: node %zu: port '%s' is not in 1..65535", idx,
                         portstr);
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    out->port = (uint16_t)port;
    return true;
}

/* Query options, one row each: a new option is one more row. */
struct url_option {
    const char *name;
    uint32_t min, max;
    size_t offset; /* of a uint32_t in struct store_url */
};

enum { OPT_TIMEOUT_MS, OPT_REPLICAS, OPT_HINT_KEYS, OPT_REPLICA_LAG_MS };
static const struct url_option url_options[] = {
    [OPT_TIMEOUT_MS] = {"timeout_ms", STORE_TIMEOUT_MS_MIN, STORE_TIMEOUT_MS_MAX,
                        offsetof(struct store_url, timeout_ms)},
    [OPT_REPLICAS] = {"replicas", 1, STORE_MAX_NODES, offsetof(struct store_url, replicas)},
    [OPT_HINT_KEYS] = {"hint_keys", 0, STORE_HINT_KEYS_MAX,
                       offsetof(struct store_url, hint_keys)},
    [OPT_REPLICA_LAG_MS] = {"replica_lag_ms", 0, STORE_REPLICA_LAG_MS_MAX,
                            offsetof(struct store_url, replica_lag_ms)},
};

/*
 *   query = name "=" value *( "&" name "=" value )
 * seen[] tells the caller which options were given.
 */
static bool parse_query(const char *q, struct store_url *u, bool *seen, char *err,
                        size_t errlen)
{
    if (*q == '\0')
        return util_fail(err, errlen, "backend URL: empty query after '?'");
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        size_t len = amp != NULL ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        if (len == 0)
            return util_fail(err, errlen, "backend URL: empty option in query");
        if (eq == NULL)
            return util_fail(err, errlen, "backend URL: option '%.*s' needs '=VALUE'", (int)len, q);
        size_t namelen = (size_t)(eq - q);
        size_t i;
        for (i = 0; i < LT_ARRAY_LEN(url_options); i++)
            if (strlen(url_options[i].name) == namelen &&
                memcmp(url_options[i].name, q, namelen) == 0)
                break;
        if (i == LT_ARRAY_LEN(url_options))
            return util_fail(err, errlen, "backend URL: unknown option '%.*s'", (int)namelen, q);
        if (seen[i])
            return util_fail(err, errlen, "backend URL: option '%s' given twice", url_options[i].name);
        seen[i] = true;
        char val[24];
        size_t vlen = len - namelen - 1;
        uint32_t v;
        if (vlen == 0 || vlen >= sizeof(val))
            goto bad_value;
        memcpy(val, eq + 1, vlen);
        val[vlen] = '\0';
        if (!util_parse_u32(val, url_options[i].min, url_options[i].max, &v))
            goto bad_value;
        memcpy((char *)u + url_options[i].offset, &v, sizeof(v));
        q += len;
        if (*q == '&') {
            q++;
            if (*q == '\0')
                return util_fail(err, errlen, "backend URL: empty option in query");
        }
        continue;
    bad_value:
        return util_fail(err, errlen, "backend URL: %s must be an integer in %u..%u",
                         url_options[i].name, url_options[i].min, url_options[i].max);
    }
    return true;
}

static bool parse_pool(const char *p, struct store_url *u, char *err, size_t errlen)
{
    bool seen[LT_ARRAY_LEN(url_options)] = {false};
    const char *query = strchr(p, '?');
    size_t listlen = query != NULL ? (size_t)(query - p) : strlen(p);
    if (listlen == 0)
        return util_fail(err, errlen, "backend URL: no HOST:PORT after '//'");
    const char *seg = p;
    const char *end = p + listlen;
    while (seg <= end) {
        const char *comma = memchr(seg, ',', (size_t)(end - seg));
        const char *segend = comma != NULL ? comma : end;
        if (u->n_nodes == STORE_MAX_NODES)
            return util_fail(err, errlen, "backend URL: more than %d nodes", STORE_MAX_NODES);
        struct store_node *node = &u->nodes[u->n_nodes];
        if (!parse_node(seg, (size_t)(segend - seg), u->n_nodes + 1, node, err, errlen))
            return false;
        for (size_t i = 0; i < u->n_nodes; i++)
            if (u->nodes[i].port == node->port && strcasecmp(u->nodes[i].host, node->host) == 0)
                return util_fail(err, errlen, "backend URL: node %zu (%s:%u) is listed twice",
                                 u->n_nodes + 1, node->host, (unsigned)node->port);
        u->n_nodes++;
        if (comma == NULL)
            break;
        seg = comma + 1;
    }
    if (query != NULL && !parse_query(query + 1, u, seen, err, errlen))
        return false;
    if (u->kind == STORE_KIND_REDIS_CLUSTER &&
        (seen[OPT_REPLICAS] || seen[OPT_HINT_KEYS] || seen[OPT_REPLICA_LAG_MS]))
        /* A cluster replicates each master to its own replicas (and fails
         * over): copies of our own on other masters would fight its slot
         * placement. */
        return util_fail(err, errlen,
                         "backend URL: %s is not supported on redis-cluster:// (the cluster "
                         "replicates its masters itself: give them replicas, cluster-replicas)",
                         seen[OPT_REPLICAS]    ? "replicas"
                         : seen[OPT_HINT_KEYS] ? "hint_keys"
                                          : "replica_lag_ms");
    if (u->replicas > u->n_nodes)
        return util_fail(err, errlen, "backend URL: replicas=%u needs at least %u nodes, %zu given",
                         u->replicas, u->replicas, u->n_nodes);
    return true;
}

bool store_url_parse(const char *url, struct store_url *out, char *err, size_t errlen)
{
    if (url == NULL || *url == '\0')
        return util_fail(err, errlen,
                         "backend URL is empty (expected memory: or memcached://HOST:PORT)");
    if (strlen(url) > STORE_URL_MAX)
        return util_fail(err, errlen, "backend URL is longer than %d bytes", STORE_URL_MAX);

    struct store_url *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return util_fail(err, errlen, "out of memory");
    u->timeout_ms = STORE_TIMEOUT_MS_DEFAULT;
    u->replicas = STORE_REPLICAS_DEFAULT;
    u->hint_keys = STORE_HINT_KEYS_DEFAULT;
    u->replica_lag_ms = STORE_REPLICA_LAG_MS_DEFAULT;
    bool ok = false;

    if (strcmp(url, "memory:") == 0) {
        u->kind = STORE_KIND_MEMORY;
        ok = true;
    } else if (strncmp(url, "memory:", 7) == 0) {
        util_fail(err, errlen, "backend URL: memory: takes no host or options (replicas need a pool)");
    } else if (strncmp(url, "memcached://", 12) == 0) {
        u->kind = STORE_KIND_MEMCACHED;
        ok = parse_pool(url + 12, u, err, errlen);
    } else if (strncmp(url, "redis://", 8) == 0) {
        u->kind = STORE_KIND_REDIS;
        ok = parse_pool(url + 8, u, err, errlen);
    } else if (strncmp(url, "redis-cluster://", 16) == 0) {
        u->kind = STORE_KIND_REDIS_CLUSTER;
        ok = parse_pool(url + 16, u, err, errlen);
    } else {
        const char *colon = strchr(url, ':');
        int n = colon != NULL ? (int)(colon - url) : (int)strlen(url);
        if (n > 32)
            n = 32;
        util_fail(err, errlen,
                  "backend URL: unknown scheme '%.*s' (expected memory:, memcached://, redis:// or "
                  "redis-cluster://)",
                  n,
                  url);
    }
    if (ok)
        memcpy(out, u, sizeof(*u));
    free(u);
    return ok;
}

bool store_url_check(const char *url, char *err, size_t errlen)
{
    struct store_url *u = malloc(sizeof(*u));
    if (u == NULL)
        return util_fail(err, errlen, "out of memory");
    bool ok = store_url_parse(url, u, err, errlen);
    free(u);
    return ok;
}

struct store *store_open(const char *url, char *err, size_t errlen)
{
    struct store *s = NULL;
    struct store_url *u = malloc(sizeof(*u));
    if (u == NULL) {
        util_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (!store_url_parse(url, u, err, errlen))
        goto done;
    switch (u->kind) {
    case STORE_KIND_MEMORY:
        s = store_memory_open();
        if (s == NULL)
            util_fail(err, errlen, "out of memory");
        break;
    case STORE_KIND_MEMCACHED:
        s = store_memcached_open(u, err, errlen);
        break;
    case STORE_KIND_REDIS:
        s = store_redis_open(u, err, errlen);
        break;
    case STORE_KIND_REDIS_CLUSTER:
        s = store_rediscluster_open(u, err, errlen);
        break;
    }
done:
    free(u);
    return s;
}

struct store *store_clone(struct store *s)
{
    if (s == NULL)
        return NULL;
    return s->ops->clone(s);
}

void store_close(struct store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

const char *store_kind(const struct store *s)
{
    return s != NULL ? s->ops->kind : "none";
}

bool store_in_process(const struct store *s)
{
    return s != NULL && s->ops->in_process;
}

void store_get_stats(const struct store *s, struct store_stats *out)
{
    if (s == NULL)
        memset(out, 0, sizeof(*out));
    else
        *out = s->stats;
}

size_t store_placement(struct store *s, const char *key, size_t keylen, uint32_t *nodes,
                       size_t max)
{
    if (s == NULL || s->ops->pool == NULL || !store_key_valid(key, keylen))
        return 0;
    return pool_placement(s->ops->pool(s), key, keylen, nodes, max);
}

static struct pool *pool_of(const struct store *s)
{
    return s != NULL && s->ops->pool != NULL ? s->ops->pool((struct store *)s) : NULL;
}

size_t store_node_count(const struct store *s)
{
    const struct pool *p = pool_of(s);
    return p != NULL ? p->n_nodes : 0;
}

size_t store_nodes_down(const struct store *s)
{
    struct pool *p = pool_of(s);
    size_t n = 0;
    for (uint32_t k = 0; p != NULL && k < p->n_nodes; k++)
        if (!p->eng->up((struct store *)s, k))
            n++;
    return n;
}

const struct store_node *store_node_at(const struct store *s, size_t k)
{
    const struct pool *p = pool_of(s);
    return p != NULL && k < p->n_nodes ? &p->nodes[k] : NULL;
}

bool store_set_rings(struct store *s, const struct store_epoch_ring *rings, size_t n)
{
    struct pool *p = pool_of(s);
    if (p == NULL || p->rings == NULL)
        return false;
    return pool_rings_set(p->rings, rings, n, p->nodes, p->n_nodes);
}

uint32_t store_replicas(const struct store *s)
{
    const struct pool *p = pool_of(s);
    return p != NULL ? p->replicas : 1;
}

enum store_status store_mget_replicas(struct store *s, const char *const *keys,
                                      const size_t *keylens, size_t n,
                                      struct store_replica_value *out)
{
    struct pool *p = pool_of(s);
    if (p == NULL || (n > 0 && (keys == NULL || keylens == NULL || out == NULL)))
        return STORE_ERROR;
    return pool_mget_replicas(p, s, keys, keylens, n, out);
}

void store_node_incr(struct store *s, struct store_node_write *items, size_t n, uint32_t ttl_s)
{
    struct pool *p = pool_of(s);
    if (p == NULL) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_ERROR;
        return;
    }
    pool_node_write(p, s, items, n, ttl_s, false);
}

void store_node_add(struct store *s, struct store_node_write *items, size_t n, uint32_t ttl_s)
{
    struct pool *p = pool_of(s);
    if (p == NULL) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_ERROR;
        return;
    }
    pool_node_write(p, s, items, n, ttl_s, true);
}

enum store_status store_node_get(struct store *s, uint32_t node, const char *key, size_t keylen,
                                 char **val, size_t *vallen)
{
    struct pool *p = pool_of(s);
    *val = NULL;
    *vallen = 0;
    if (p == NULL || node >= p->n_nodes || !store_key_valid(key, keylen))
        return STORE_ERROR;
    return pool_node_get(p, s, node, key, keylen, val, vallen);
}

bool store_key_valid(const char *key, size_t keylen)
{
    if (key == NULL || keylen == 0 || keylen > STORE_MAX_KEY)
        return false;
    for (size_t i = 0; i < keylen; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= ' ' || c == 0x7f)
            return false;
    }
    return true;
}

bool store_parse_counter(const char *s, size_t len, uint64_t *out)
{
    size_t i = 0;
    uint64_t v = 0;
    if (len == 0 || s[0] < '0' || s[0] > '9')
        return false;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    for (; i < len; i++)
        if (s[i] != ' ')
            return false;
    *out = v;
    return true;
}

enum store_status store_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                   uint32_t ttl_s)
{
    if (s == NULL || (items == NULL && n > 0))
        return STORE_ERROR;
    /* n == 0 reaches the backend too: a replicated pool replays its hints. */
    return s->ops->incr_batch(s, items, n, ttl_s);
}

void store_stats_add(struct store_stats *into, const struct store_stats *from)
{
    into->node_failures += from->node_failures;
    into->unavailable_items += from->unavailable_items;
    into->error_items += from->error_items;
    into->connects += from->connects;
    into->hints_queued += from->hints_queued;
    into->hints_replayed += from->hints_replayed;
    into->hints_dropped += from->hints_dropped;
    into->hints_pending += from->hints_pending;
    into->drains_pending += from->drains_pending;
    into->redirects += from->redirects;
    into->map_refreshes += from->map_refreshes;
}

bool store_incr_start(struct store *s, struct event_base *base, struct store_incr *items,
                      size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    if (s == NULL || base == NULL || (items == NULL && n > 0) || done == NULL ||
        s->ops->incr_start == NULL)
        return false;
    return s->ops->incr_start(s, base, items, n, ttl_s, done, arg);
}

void store_run_wait(struct store *s)
{
    if (s != NULL && s->ops->run_wait != NULL)
        s->ops->run_wait(s);
}

enum store_status store_mget_u64(struct store *s, const char *const *keys, const size_t *keylens,
                                 size_t n, uint64_t *values, bool *present)
{
    if (s == NULL || (n > 0 && (keys == NULL || keylens == NULL || values == NULL)))
        return STORE_ERROR;
    if (n == 0)
        return STORE_OK;
    return s->ops->mget_u64(s, keys, keylens, n, values, present);
}

enum store_status store_get(struct store *s, const char *key, size_t keylen, char **val,
                            size_t *vallen)
{
    if (s == NULL || val == NULL || vallen == NULL)
        return STORE_ERROR;
    *val = NULL;
    *vallen = 0;
    if (!store_key_valid(key, keylen))
        return STORE_ERROR;
    return s->ops->get(s, key, keylen, val, vallen);
}

enum store_status store_get_each(struct store *s, const char *key, size_t keylen,
                                 store_copy_fn fn, void *arg, size_t *missed)
{
    if (missed != NULL)
        *missed = 0;
    if (s == NULL || fn == NULL || !store_key_valid(key, keylen))
        return STORE_ERROR;
    struct pool *p = pool_of(s);
    if (p != NULL)
        return pool_get_each(p, s, key, keylen, fn, arg, missed);
    char *val = NULL;
    size_t vallen = 0;
    enum store_status st = s->ops->get(s, key, keylen, &val, &vallen);
    if (st == STORE_OK)
        fn(arg, val, vallen);
    else if (st != STORE_NOTFOUND && missed != NULL)
        *missed = 1;
    free(val);
    return st;
}

struct one_of_many {
    store_copies_fn fn;
    void *arg;
    size_t i;
    bool passed; /* a copy short enough went to fn */
};

static void on_copy_of_many(void *arg, const char *val, size_t vallen)
{
    struct one_of_many *o = arg;
    if (vallen <= STORE_GET_MANY_VALUE_MAX) {
        o->fn(o->arg, o->i, val, vallen);
        o->passed = true;
    }
}

enum store_status store_get_each_many(struct store *s, const char *const *keys,
                                      const size_t *keylens, size_t n, store_copies_fn fn,
                                      void *arg, enum store_status *status, size_t *missed)
{
    if (s == NULL || fn == NULL || status == NULL || (n > 0 && (keys == NULL || keylens == NULL)))
        return STORE_ERROR;
    struct pool *p = pool_of(s);
    if (p != NULL)
        return pool_get_each_many(p, s, keys, keylens, n, fn, arg, status, missed);
    /* One key at a time: the embedded store answers at once, and a Redis
     * Cluster spreads the keys over slots (its batch engine is the
     * increments'). */
    enum store_status first = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        struct one_of_many o = {.fn = fn, .arg = arg, .i = i};
        status[i] = store_get_each(s, keys[i], keylens[i], on_copy_of_many, &o,
                                   missed != NULL ? &missed[i] : NULL);
        if (status[i] == STORE_OK && !o.passed)
            status[i] = STORE_ERROR; /* only copies too long for this call */
        if (first == STORE_OK && status[i] != STORE_OK && status[i] != STORE_NOTFOUND)
            first = status[i];
    }
    return first;
}

enum store_status store_set(struct store *s, const char *key, size_t keylen, const char *val,
                            size_t vallen, uint32_t ttl_s)
{
    if (s == NULL || !store_key_valid(key, keylen) || (val == NULL && vallen > 0) ||
        vallen > STORE_MAX_VALUE)
        return STORE_ERROR;
    return s->ops->set(s, key, keylen, val != NULL ? val : "", vallen, ttl_s);
}

enum store_status store_add(struct store *s, const char *key, size_t keylen, const char *val,
                            size_t vallen, uint32_t ttl_s)
{
    if (s == NULL || !store_key_valid(key, keylen) || (val == NULL && vallen > 0) ||
        vallen > STORE_MAX_VALUE)
        return STORE_ERROR;
    return s->ops->add(s, key, keylen, val != NULL ? val : "", vallen, ttl_s);
}

enum store_status store_add_batch(struct store *s, struct store_add_item *items, size_t n,
                                  uint32_t ttl_s)
{
    if (s == NULL || (items == NULL && n > 0))
        return STORE_ERROR;
    for (size_t i = 0; i < n; i++) {
        struct store_add_item *it = &items[i];
        bool ok = store_key_valid(it->key, it->keylen) && (it->val != NULL || it->vallen == 0) &&
                  it->vallen <= STORE_ADD_BATCH_VALUE_MAX;
        it->status = ok ? STORE_UNAVAILABLE : STORE_ERROR;
    }
    if (s->ops->add_batch != NULL) {
        s->ops->add_batch(s, items, n, ttl_s);
    } else {
        for (size_t i = 0; i < n; i++)
            if (items[i].status == STORE_UNAVAILABLE)
                items[i].status = store_add(s, items[i].key, items[i].keylen, items[i].val,
                                            items[i].vallen, ttl_s);
    }
    for (size_t i = 0; i < n; i++)
        if (items[i].status != STORE_OK && items[i].status != STORE_EXISTS)
            return items[i].status;
    return STORE_OK;
}

bool store_add_start(struct store *s, struct event_base *base, struct store_add_item *items,
                     size_t n, uint32_t ttl_s, store_done_fn done, void *arg)
{
    if (s == NULL || base == NULL || items == NULL || n == 0 || done == NULL ||
        s->ops->add_start == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        struct store_add_item *it = &items[i];
        bool ok = store_key_valid(it->key, it->keylen) && (it->val != NULL || it->vallen == 0) &&
                  it->vallen <= STORE_ADD_BATCH_VALUE_MAX;
        it->status = ok ? STORE_UNAVAILABLE : STORE_ERROR;
    }
    return s->ops->add_start(s, base, items, n, ttl_s, done, arg);
}

enum store_status store_delete(struct store *s, const char *key, size_t keylen)
{
    if (s == NULL || !store_key_valid(key, keylen))
        return STORE_ERROR;
    return s->ops->del(s, key, keylen);
}
