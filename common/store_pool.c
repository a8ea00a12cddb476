/*
 * Placement, replication and hinted handoff for the pool backends (the
 * rules are in store_pool.h). Everything here runs on the handle's thread;
 * only node health is shared between clones.
 */
#include "store_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ketama.h"
#include "log.h"
#include "store_hints.h"
#include "store_impl.h"
#include "util.h"

/* ---- node health ---- */

bool store_host_numeric(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

void node_health_init(struct node_health *h)
{
    atomic_init(&h->down_until_ms, 0);
    atomic_init(&h->backoff_ms, 0);
    atomic_init(&h->epoch, 0);
    atomic_init(&h->lagging, false);
}

bool node_health_down(const struct node_health *h, uint64_t now_ms)
{
    return atomic_load_explicit(&h->down_until_ms, memory_order_relaxed) > now_ms;
}

void node_health_fail(struct node_health *h)
{
    uint32_t b = atomic_load_explicit(&h->backoff_ms, memory_order_relaxed);
    uint32_t next = b == 0 ? NODE_BACKOFF_MIN_MS : b * 2;
    if (next > NODE_BACKOFF_MAX_MS)
        next = NODE_BACKOFF_MAX_MS;
    atomic_store_explicit(&h->backoff_ms, next, memory_order_relaxed);
    atomic_store_explicit(&h->down_until_ms, util_mono_ms() + next, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->epoch, 1, memory_order_relaxed);
}

void node_health_fail_lag(struct node_health *h)
{
    atomic_store_explicit(&h->lagging, true, memory_order_relaxed);
    node_health_fail(h);
}

bool node_health_lagging(const struct node_health *h)
{
    return atomic_load_explicit(&h->lagging, memory_order_relaxed);
}

void node_health_ok(struct node_health *h)
{
    if (atomic_load_explicit(&h->lagging, memory_order_relaxed))
        atomic_store_explicit(&h->lagging, false, memory_order_relaxed);
    if (atomic_load_explicit(&h->backoff_ms, memory_order_relaxed) != 0)
        atomic_store_explicit(&h->backoff_ms, 0, memory_order_relaxed);
}

void node_health_ok_slow(struct node_health *h)
{
    /* A lagging node keeps its backoff, so the probes of a node that stays
     * slow come further apart (each costs a run the lag budget). */
    if (atomic_load_explicit(&h->lagging, memory_order_relaxed))
        return;
    if (atomic_load_explicit(&h->backoff_ms, memory_order_relaxed) != 0)
        atomic_store_explicit(&h->backoff_ms, 0, memory_order_relaxed);
}

uint32_t node_health_epoch(const struct node_health *h)
{
    return atomic_load_explicit(&h->epoch, memory_order_relaxed);
}

/* ---- set-up ---- */

#define LOST_LOG_EVERY_MS 1000u

/* Logs the replica writes lost since the last line, at most once a second
 * (a batch every few milliseconds would flood the log otherwise). */
static void flush_lost_log(struct pool *p, bool now_anyway)
{
    uint64_t now = util_mono_ms();
    if (!now_anyway && now < p->lost_log_ms + LOST_LOG_EVERY_MS)
        return;
    for (size_t k = 0; k < p->n_nodes; k++) {
        if (p->lost[k] == 0)
            continue;
        log_error("store: replica writes lost node=%s:%u count=%llu reason=%s hint_keys=%u "
                  "(that replica stays behind; reads take the maximum of the replicas)",
                  p->nodes[k].host, (unsigned)p->nodes[k].port,
                  (unsigned long long)p->lost[k], p->lost_why[k], p->hint_keys);
        p->lost[k] = 0;
    }
    p->lost_log_ms = now;
}

static void log_lost(struct pool *p, uint32_t node, size_t lost, const char *why)
{
    p->lost[node] += lost;
    p->lost_why[node] = why;
    flush_lost_log(p, false);
}


/* Missed writes a table stands for. */
static uint64_t hint_writes(const struct store_hints *h)
{
    uint64_t w = 0;
    size_t n = hints_count(h);
    for (size_t i = 0; i < n; i++) {
        struct hint_entry e;
        hints_get(h, i, &e);
        w += e.writes;
    }
    return w;
}


bool pool_init(struct pool *p, const struct pool_engine *eng, const struct ketama *ketama,
               struct pool_rings *rings, const struct store_node *nodes, size_t n_nodes,
               uint32_t replicas, uint32_t hint_keys)
{
    *p = (struct pool){.eng = eng,
                       .ketama = ketama,
                       .rings = rings,
                       .nodes = nodes,
                       .n_nodes = n_nodes,
                       .replicas = replicas == 0 ? 1 : replicas,
                       .hint_keys = hint_keys};
    if (p->replicas > n_nodes)
        p->replicas = (uint32_t)n_nodes;
    p->hints = calloc(n_nodes, sizeof(*p->hints));
    p->lost = calloc(n_nodes, sizeof(*p->lost));
    p->lost_why = calloc(n_nodes, sizeof(*p->lost_why));
    return p->hints != NULL && p->lost != NULL && p->lost_why != NULL;
}

void pool_fini(struct pool *p, struct store *s)
{
    if (p->lost != NULL && p->lost_why != NULL)
        flush_lost_log(p, true);
    if (p->hints != NULL) {
        for (size_t k = 0; k < p->n_nodes; k++) {
            size_t n = hints_count(p->hints[k]);
            if (n > 0) {
                uint64_t w = hint_writes(p->hints[k]);
                log_error("store: closing with hints not replayed node=%s:%u keys=%zu "
                          "writes=%llu (that replica stays behind; reads take the maximum of "
                          "the replicas)",
                          p->nodes[k].host, (unsigned)p->nodes[k].port, n,
                          (unsigned long long)w);
                s->stats.hints_dropped += w;
            }
            hints_free(p->hints[k]);
        }
        s->stats.hints_pending = 0;
    }
    free(p->hints);
    free(p->lost);
    free(p->lost_why);
    free(p->ops);
    free(p->drop);
    p->lost = NULL;
    p->lost_why = NULL;
    p->hints = NULL;
    p->ops = NULL;
    p->drop = NULL;
    free(p->add_rank_st);
    free(p->add_rank_node);
    p->add_rank_st = p->add_rank_node = NULL;
}

static bool ops_reserve(struct pool *p, size_t n)
{
    if (n <= p->ops_cap)
        return true;
    size_t cap = p->ops_cap ? p->ops_cap : 256;
    while (cap < n)
        cap *= 2;
    struct store_op *ops = realloc(p->ops, cap * sizeof(*ops));
    if (ops == NULL)
        return false;
    p->ops = ops;
    p->ops_cap = cap;
    return true;
}

static bool drop_reserve(struct pool *p, size_t n)
{
    if (n <= p->drop_cap)
        return true;
    size_t cap = p->drop_cap ? p->drop_cap : 256;
    while (cap < n)
        cap *= 2;
    bool *d = realloc(p->drop, cap * sizeof(*d));
    if (d == NULL)
        return false;
    p->drop = d;
    p->drop_cap = cap;
    return true;
}

uint32_t pool_key_epoch(const char *key, size_t keylen)
{
    /* "{event}~{e}:..." with event of [a-z0-9-]: the tag is the last thing
     * before the first ':'. */
    size_t colon = 0;
    while (colon < keylen && colon < 48 && key[colon] != ':')
        colon++;
    if (colon >= keylen || key[colon] != ':')
        return 0;
    size_t i = colon;
    while (i > 0 && key[i - 1] >= '0' && key[i - 1] <= '9')
        i--;
    if (i == colon || i < 2 || key[i - 1] != '~' || colon - i > 3)
        return 0;
    uint32_t e = 0;
    for (size_t j = i; j < colon; j++)
        e = e * 10 + (uint32_t)(key[j] - '0');
    return e;
}

size_t pool_placement(const struct pool *p, const char *key, size_t keylen, uint32_t *nodes,
                      size_t max)
{
    size_t r = p->replicas < max ? p->replicas : max;
    if (r == 0)
        return 0;
    const struct pool_rings *rg = p->rings;
    if (rg == NULL || rg->n == 0) {
        if (r == 1) {
            nodes[0] = ketama_lookup(p->ketama, key, keylen);
            return 1;
        }
        return ketama_lookup_n(p->ketama, key, keylen, nodes, r);
    }
    /* An epoch newer than this handle knows cannot be written by it; were
     * one read, the newest ring is the best guess. */
    uint32_t e = pool_key_epoch(key, keylen);
    if (e >= rg->n)
        e = (uint32_t)rg->n - 1;
    size_t got = ketama_lookup_n(rg->ring[e], key, keylen, nodes, r);
    for (size_t i = 0; i < got; i++)
        nodes[i] = rg->map[e][nodes[i]];
    return got;
}

void pool_rings_clear(struct pool_rings *rg)
{
    for (size_t e = 0; e < rg->n; e++) {
        ketama_free(rg->ring[e]);
        free(rg->map[e]);
    }
    *rg = (struct pool_rings){0};
}

bool pool_rings_set(struct pool_rings *rg, const struct store_epoch_ring *rings, size_t n,
                    const struct store_node *nodes, size_t n_nodes)
{
    pool_rings_clear(rg);
    if (n > POOL_EPOCHS_MAX)
        return false;
    for (size_t e = 0; e < n; e++) {
        struct ketama_node kn[STORE_MAX_NODES];
        const struct store_epoch_ring *er = &rings[e];
        if (er->n_nodes == 0 || er->n_nodes > STORE_MAX_NODES)
            goto err;
        rg->map[e] = calloc(er->n_nodes, sizeof(*rg->map[e]));
        rg->n = e + 1; /* from here pool_rings_clear frees it */
        if (rg->map[e] == NULL)
            goto err;
        for (size_t i = 0; i < er->n_nodes; i++) {
            if (er->node[i] >= n_nodes)
                goto err;
            rg->map[e][i] = er->node[i];
            kn[i].host = nodes[er->node[i]].host;
            kn[i].port = nodes[er->node[i]].port;
        }
        if ((rg->ring[e] = ketama_create(kn, er->n_nodes)) == NULL)
            goto err;
    }
    return true;
err:
    pool_rings_clear(rg);
    return false;
}

/* ---- hints ---- */

static void update_pending(struct pool *p, struct store *s)
{
    uint64_t n = 0;
    for (size_t k = 0; k < p->n_nodes; k++)
        n += hints_count(p->hints[k]);
    s->stats.hints_pending = n;
}

/* Keeps a write node missed; false when it is lost (the table is full or
 * disabled, or no memory): counted, and the caller logs. */
static bool hint(struct pool *p, struct store *s, uint32_t node, enum hint_kind kind,
                 const char *key, size_t keylen, uint64_t delta, uint32_t ttl_s)
{
    if (p->hint_keys > 0 && p->hints[node] == NULL)
        p->hints[node] = hints_new(p->hint_keys);
    if (p->hints[node] == NULL || !hints_add(p->hints[node], kind, key, keylen, delta, ttl_s)) {
        s->stats.hints_dropped++;
        return false;
    }
    s->stats.hints_queued++;
    return true;
}

static bool any_hints(const struct pool *p, enum hint_kind kind)
{
    if (p->replicas < 2)
        return false;
    for (size_t k = 0; k < p->n_nodes; k++)
        if (hints_count_kind(p->hints[k], kind) > 0)
            return true;
    return false;
}

/* The node may get hint replays now (store_pool.h, "lag"): idle, a
 * lagging one out of its backoff too. */
static bool hint_target(const struct pool *p, struct store *s, uint32_t k, bool idle)
{
    return p->eng->up(s, k) || (idle && p->eng->probe != NULL && p->eng->probe(s, k));
}

size_t pool_stale_prepare(struct pool *p, struct store *s, bool idle)
{
    if (!any_hints(p, HINT_STALE))
        return 0;
    bool *up = p->stale_up;
    size_t total = 0, widest = 0;
    for (uint32_t k = 0; k < p->n_nodes; k++) {
        up[k] = false;
        size_t stale = hints_count_kind(p->hints[k], HINT_STALE);
        if (stale == 0 || !hint_target(p, s, k, idle))
            continue;
        up[k] = true;
        total += stale;
        if (hints_count(p->hints[k]) > widest)
            widest = hints_count(p->hints[k]);
    }
    if (total == 0 || !ops_reserve(p, total) || !drop_reserve(p, widest))
        return 0;
    size_t j = 0;
    for (uint32_t k = 0; k < p->n_nodes; k++) {
        if (!up[k])
            continue;
        size_t n = hints_count(p->hints[k]);
        for (size_t i = 0; i < n; i++) {
            struct hint_entry e;
            hints_get(p->hints[k], i, &e);
            if (e.kind == HINT_STALE)
                p->ops[j++] = (struct store_op){.key = e.key, .keylen = e.keylen, .node = k};
        }
    }
    return j;
}

void pool_stale_finish(struct pool *p, struct store *s)
{
    const bool *up = p->stale_up;
    size_t j = 0;
    for (uint32_t k = 0; k < p->n_nodes; k++) {
        if (!up[k])
            continue;
        struct store_hints *h = p->hints[k];
        size_t n = hints_count(h);
        memset(p->drop, 0, n * sizeof(*p->drop));
        size_t lost = 0;
        for (size_t i = 0; i < n; i++) {
            struct hint_entry e;
            hints_get(h, i, &e);
            if (e.kind != HINT_STALE)
                continue;
            const struct store_op *op = &p->ops[j++];
            if (op->status == STORE_UNAVAILABLE ||
                (op->status == STORE_ERROR && op->node_failed))
                continue; /* not sent, or unknown: sent again later */
            p->drop[i] = true;
            if (op->status == STORE_OK || op->status == STORE_NOTFOUND) {
                s->stats.hints_replayed += e.writes;
            } else {
                s->stats.hints_dropped += e.writes;
                lost += e.writes;
            }
        }
        hints_remove(h, p->drop);
        if (lost > 0)
            log_lost(p, k, lost, "stale_delete_failed");
    }
    update_pending(p, s);
}

/* Deletes, on every node that answers again, the blobs it missed a write
 * of: one pipelined run for all of them (a slow node costs one round trip,
 * not one per key). A delete is idempotent, so one whose outcome is unknown
 * (the node failed after it was sent) stays hinted and is sent again.
 * Runs before every operation: cheap when there is nothing. */
static void flush_stale(struct pool *p, struct store *s, bool idle)
{
    size_t j = pool_stale_prepare(p, s, idle);
    if (j == 0)
        return;
    if (p->eng->del_batch != NULL) {
        p->eng->del_batch(s, p->ops, j);
    } else {
        bool down[STORE_MAX_NODES] = {false};
        for (size_t i = 0; i < j; i++) {
            struct store_op *op = &p->ops[i];
            op->node_failed = false;
            op->status = down[op->node] ? STORE_UNAVAILABLE
                                        : p->eng->del(s, op->node, op->key, op->keylen);
            if (op->status == STORE_UNAVAILABLE)
                down[op->node] = true; /* down again: keep the rest */
        }
    }
    pool_stale_finish(p, s);
}

/* Status of one write from its replicas' outcomes (store_pool.h). */
static enum store_status merge_write(size_t ok, size_t err_up, size_t err_down)
{
    if (ok == 0 && err_up == 0 && err_down == 0)
        return STORE_UNAVAILABLE;
    if (ok > 0 && err_up == 0)
        return STORE_OK;
    return STORE_ERROR;
}

static void count_status(struct store *s, enum store_status st)
{
    if (st == STORE_UNAVAILABLE)
        s->stats.unavailable_items++;
    else if (st == STORE_ERROR || st == STORE_NOMEM)
        s->stats.error_items++;
}

/* ---- counters ---- */

/* Hint ops of the nodes in up (out of their backoff when the ops were
 * counted: asking again could find one more and overrun them), at
 * ops[0..); which nodes are in hnodes (their entries' order). Returns the op
 * count. */
static size_t plan_hint_ops(struct pool *p, const bool *up, uint32_t *hnodes, size_t *nhn)
{
    size_t j = 0;
    *nhn = 0;
    for (uint32_t k = 0; k < p->n_nodes; k++) {
        struct store_hints *h = p->hints[k];
        if (hints_count_kind(h, HINT_INCR) == 0 || !up[k])
            continue;
        hnodes[(*nhn)++] = k;
        size_t n = hints_count(h);
        for (size_t i = 0; i < n; i++) {
            struct hint_entry e;
            hints_get(h, i, &e);
            if (e.kind != HINT_INCR)
                continue;
            p->ops[j++] = (struct store_op){.key = e.key, .keylen = e.keylen, .delta = e.delta,
                                            .ttl_s = e.ttl_s, .node = k};
        }
    }
    return j;
}

static void settle_hint_ops(struct pool *p, struct store *s, const uint32_t *hnodes, size_t nhn)
{
    size_t j = 0;
    for (size_t x = 0; x < nhn; x++) {
        uint32_t k = hnodes[x];
        struct store_hints *h = p->hints[k];
        size_t n = hints_count(h);
        if (!drop_reserve(p, n)) {
            /* Cannot remove the replayed ones: drop them all rather than
             * replay an increment twice. */
            uint64_t w = hint_writes(h);
            hints_free(h);
            p->hints[k] = NULL;
            s->stats.hints_dropped += w;
            log_lost(p, k, (size_t)w, "no_memory");
            continue;
        }
        size_t lost = 0;
        for (size_t i = 0; i < n; i++) {
            struct hint_entry e;
            hints_get(h, i, &e);
            p->drop[i] = false;
            if (e.kind != HINT_INCR)
                continue;
            enum store_status st = p->ops[j++].status;
            if (st == STORE_OK) {
                p->drop[i] = true;
                s->stats.hints_replayed += e.writes;
            } else if (st != STORE_UNAVAILABLE) {
                p->drop[i] = true; /* maybe applied: never twice */
                s->stats.hints_dropped += e.writes;
                lost += e.writes;
            }
        }
        hints_remove(h, p->drop);
        if (lost > 0)
            log_lost(p, k, lost, "replay_outcome_unknown");
    }
}

size_t pool_incr_prepare(struct pool *p, struct store *s, struct store_incr *items, size_t n,
                         uint32_t ttl_s)
{
    size_t rn = p->replicas;
    uint32_t *hnodes = p->run_hnodes;
    size_t nhn = 0, nh = 0;
    bool up[STORE_MAX_NODES] = {false};

    if (any_hints(p, HINT_INCR))
        for (uint32_t k = 0; k < p->n_nodes; k++)
            if ((up[k] = hint_target(p, s, k, n == 0)))
                nh += hints_count_kind(p->hints[k], HINT_INCR);
    if (!ops_reserve(p, nh + n * rn))
        return SIZE_MAX;
    size_t j = nh > 0 ? plan_hint_ops(p, up, hnodes, &nhn) : 0;
    size_t hint_end = j;
    for (size_t i = 0; i < n; i++) {
        struct store_incr *it = &items[i];
        it->value = 0;
        if (!store_key_valid(it->key, it->keylen)) {
            it->status = STORE_ERROR;
            continue;
        }
        uint32_t nodes[STORE_MAX_NODES];
        size_t r = pool_placement(p, it->key, it->keylen, nodes, rn);
        for (size_t x = 0; x < r; x++)
            p->ops[j++] = (struct store_op){.key = it->key, .keylen = it->keylen,
                                            .delta = it->delta, .ttl_s = ttl_s,
                                            .node = nodes[x], .want_value = it->want_value};
    }
    p->run_nhn = nhn;
    p->run_hint_end = hint_end;
    p->run_replicated = rn >= 2;
    return j;
}

enum store_status pool_incr_finish(struct pool *p, struct store *s, struct store_incr *items,
                                   size_t n, uint32_t ttl_s)
{
    size_t rn = p->replicas;
    size_t j = p->run_hint_end;
    if (p->run_nhn > 0)
        settle_hint_ops(p, s, p->run_hnodes, p->run_nhn);

    size_t lost[STORE_MAX_NODES] = {0};
    bool any_lost = false;
    enum store_status first = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        struct store_incr *it = &items[i];
        if (it->status == STORE_ERROR && !store_key_valid(it->key, it->keylen)) {
            count_status(s, STORE_ERROR);
            if (first == STORE_OK)
                first = STORE_ERROR;
            continue;
        }
        const struct store_op *op = &p->ops[j];
        size_t r = rn; /* pool_placement gives rn: rn <= n_nodes */
        j += r;
        size_t ok = 0, err_up = 0, err_down = 0;
        uint64_t value = 0;
        for (size_t x = 0; x < r; x++) {
            if (op[x].status == STORE_OK) {
                ok++;
                if (op[x].value > value)
                    value = op[x].value;
            } else if (op[x].status != STORE_UNAVAILABLE) {
                if (!op[x].node_failed && p->eng->up(s, op[x].node))
                    err_up++;
                else
                    err_down++;
            }
        }
        it->status = merge_write(ok, err_up, err_down);
        it->value = it->status == STORE_OK && it->want_value ? value : 0;
        if (r > 1 && it->status != STORE_UNAVAILABLE)
            for (size_t x = 0; x < r; x++)
                if (op[x].status == STORE_UNAVAILABLE &&
                    !hint(p, s, op[x].node, HINT_INCR, it->key, it->keylen, it->delta, ttl_s)) {
                    lost[op[x].node]++;
                    any_lost = true;
                }
        if (it->status != STORE_OK) {
            count_status(s, it->status);
            if (first == STORE_OK)
                first = it->status;
        }
    }
    if (any_lost)
        for (uint32_t k = 0; k < p->n_nodes; k++)
            if (lost[k] > 0)
                log_lost(p, k, lost[k],
                         p->hint_keys == 0 ? "hints_disabled" : "hint_table_full");
    if (rn > 1)
        update_pending(p, s);
    return first;
}

bool pool_incr_confirmed(const struct pool *p, const struct store_op *ops, size_t nops)
{
    size_t rn = p->replicas;
    for (size_t j = p->run_hint_end; j + rn <= nops; j += rn) {
        bool ok = false;
        for (size_t x = 0; x < rn && !ok; x++)
            ok = ops[j + x].status == STORE_OK;
        if (!ok)
            return false;
    }
    return true;
}

enum store_status pool_incr_batch(struct pool *p, struct store *s, struct store_incr *items,
                                  size_t n, uint32_t ttl_s)
{
    flush_stale(p, s, n == 0);
    size_t nops = pool_incr_prepare(p, s, items, n, ttl_s);
    if (nops == SIZE_MAX) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_NOMEM;
        s->stats.error_items += n;
        return n > 0 ? STORE_NOMEM : STORE_OK;
    }
    p->eng->incr(s, p->ops, nops);
    return pool_incr_finish(p, s, items, n, ttl_s);
}

enum store_status pool_mget_u64(struct pool *p, struct store *s, const char *const *keys,
                                const size_t *keylens, size_t n, uint64_t *values,
                                bool *present)
{
    size_t rn = p->replicas;
    bool bad_key = false;
    for (size_t i = 0; i < n; i++) {
        values[i] = 0;
        if (present != NULL)
            present[i] = false;
    }
    if (!ops_reserve(p, n * rn))
        return STORE_NOMEM;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (!store_key_valid(keys[i], keylens[i])) {
            bad_key = true;
            continue;
        }
        uint32_t nodes[STORE_MAX_NODES];
        size_t r = pool_placement(p, keys[i], keylens[i], nodes, rn);
        for (size_t x = 0; x < r; x++)
            p->ops[j++] = (struct store_op){.key = keys[i], .keylen = keylens[i],
                                            .node = nodes[x]};
    }
    p->eng->mget(s, p->ops, j);
    size_t unreadable = 0;
    bool error = bad_key;
    j = 0;
    for (size_t i = 0; i < n; i++) {
        if (!store_key_valid(keys[i], keylens[i]))
            continue;
        bool read = false;
        for (size_t x = 0; x < rn; x++, j++) {
            const struct store_op *op = &p->ops[j];
            if (op->status == STORE_OK) {
                read = true;
                if (op->present) {
                    if (present != NULL)
                        present[i] = true;
                    if (op->value > values[i])
                        values[i] = op->value;
                }
            } else if (op->status != STORE_UNAVAILABLE) {
                read = true; /* answered, with a value that is not a counter */
                error = true;
            }
        }
        if (!read)
            unreadable++;
    }
    if (unreadable > 0) {
        s->stats.unavailable_items += unreadable;
        return STORE_UNAVAILABLE;
    }
    if (error) {
        s->stats.error_items++;
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* ---- the nodes one by one ---- */

enum store_status pool_mget_replicas(struct pool *p, struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n,
                                     struct store_replica_value *out)
{
    size_t rn = p->replicas;
    if (!ops_reserve(p, n * rn)) {
        for (size_t i = 0; i < n * rn; i++)
            out[i] = (struct store_replica_value){.status = STORE_NOMEM};
        s->stats.error_items++;
        return STORE_NOMEM;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_replica_value *o = out + i * rn;
        if (!store_key_valid(keys[i], keylens[i])) {
            for (size_t x = 0; x < rn; x++)
                o[x] = (struct store_replica_value){.status = STORE_ERROR};
            continue;
        }
        uint32_t nodes[STORE_MAX_NODES];
        pool_placement(p, keys[i], keylens[i], nodes, rn);
        for (size_t x = 0; x < rn; x++) {
            o[x] = (struct store_replica_value){.node = nodes[x]};
            p->ops[j++] = (struct store_op){.key = keys[i], .keylen = keylens[i],
                                            .node = nodes[x]};
        }
    }
    p->eng->mget(s, p->ops, j);
    /* Counted per key, as pool_mget_u64 does: a key no copy was read of is
     * unavailable, one with a copy that is not a counter an error. */
    enum store_status first = STORE_OK;
    size_t unreadable = 0, bad = 0;
    j = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_replica_value *o = out + i * rn;
        bool valid = o[0].status != STORE_ERROR, any = false, err = !valid;
        for (size_t x = 0; valid && x < rn; x++, j++) {
            const struct store_op *op = &p->ops[j];
            o[x].status = op->status;
            o[x].present = op->status == STORE_OK && op->present;
            o[x].value = o[x].present ? op->value : 0;
            any = any || op->status == STORE_OK;
            err = err || (op->status != STORE_OK && op->status != STORE_UNAVAILABLE);
        }
        for (size_t x = 0; x < rn; x++)
            if (o[x].status != STORE_OK && first == STORE_OK)
                first = o[x].status;
        if (err)
            bad++;
        else if (!any)
            unreadable++;
    }
    s->stats.unavailable_items += unreadable;
    s->stats.error_items += bad;
    return first;
}

void pool_node_write(struct pool *p, struct store *s, struct store_node_write *items, size_t n,
                     uint32_t ttl_s, bool add)
{
    if (!ops_reserve(p, n)) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_NOMEM;
        s->stats.error_items += n;
        return;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_node_write *it = &items[i];
        it->status = STORE_UNAVAILABLE;
        if (it->node >= p->n_nodes || !store_key_valid(it->key, it->keylen) ||
            (add && it->vallen > STORE_ADD_BATCH_VALUE_MAX)) {
            it->status = STORE_ERROR;
            continue;
        }
        p->ops[j++] = (struct store_op){.key = it->key, .keylen = it->keylen, .val = it->val,
                                        .vallen = it->vallen, .delta = it->delta,
                                        .ttl_s = ttl_s, .node = it->node};
    }
    p->run_replicated = false;
    if (!add)
        p->eng->incr(s, p->ops, j);
    else if (p->eng->add != NULL)
        p->eng->add(s, p->ops, j);
    else
        for (size_t x = 0; x < j; x++)
            p->ops[x].status = p->eng->put(s, p->ops[x].node, p->ops[x].key, p->ops[x].keylen,
                                           p->ops[x].val, p->ops[x].vallen, ttl_s, true);
    j = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].status == STORE_UNAVAILABLE)
            items[i].status = p->ops[j++].status;
        if (items[i].status != STORE_EXISTS)
            count_status(s, items[i].status);
    }
}

enum store_status pool_node_get(struct pool *p, struct store *s, uint32_t node, const char *key,
                                size_t keylen, char **val, size_t *vallen)
{
    enum store_status st = p->eng->get(s, node, key, keylen, val, vallen);
    count_status(s, st);
    return st;
}

/* ---- blobs ---- */

enum store_status pool_get(struct pool *p, struct store *s, const char *key, size_t keylen,
                           char **val, size_t *vallen)
{
    uint32_t nodes[STORE_MAX_NODES];
    flush_stale(p, s, false);
    size_t r = pool_placement(p, key, keylen, nodes, STORE_MAX_NODES);
    bool notfound = false, error = false;
    for (size_t x = 0; x < r; x++) {
        enum store_status st = p->eng->get(s, nodes[x], key, keylen, val, vallen);
        if (st == STORE_OK || st == STORE_NOMEM) {
            count_status(s, st);
            return st;
        }
        if (st == STORE_NOTFOUND)
            notfound = true;
        else if (st != STORE_UNAVAILABLE)
            error = true;
    }
    enum store_status st =
        error ? STORE_ERROR : notfound ? STORE_NOTFOUND : STORE_UNAVAILABLE;
    count_status(s, st);
    return st;
}

/* A key's status from what its replicas said: a copy found wins, then
 * out of memory, a refusal, "not there"; none answered: unavailable. */
static enum store_status copies_status(bool found, bool nomem, bool error, bool notfound)
{
    return found      ? STORE_OK
           : nomem    ? STORE_NOMEM
           : error    ? STORE_ERROR
           : notfound ? STORE_NOTFOUND
                      : STORE_UNAVAILABLE;
}

enum store_status pool_get_each(struct pool *p, struct store *s, const char *key, size_t keylen,
                                store_copy_fn fn, void *arg, size_t *missed)
{
    size_t unanswered = 0;
    uint32_t nodes[STORE_MAX_NODES];
    flush_stale(p, s, false);
    size_t r = pool_placement(p, key, keylen, nodes, STORE_MAX_NODES);
    bool found = false, notfound = false, error = false, nomem = false;
    for (size_t x = 0; x < r; x++) {
        char *val = NULL;
        size_t vallen = 0;
        enum store_status st = p->eng->get(s, nodes[x], key, keylen, &val, &vallen);
        if (st == STORE_OK) {
            fn(arg, val, vallen);
            found = true;
        } else if (st == STORE_NOTFOUND) {
            notfound = true;
        } else if (st == STORE_NOMEM) {
            nomem = true;
            unanswered++;
        } else {
            error = error || st != STORE_UNAVAILABLE;
            unanswered++;
        }
        free(val);
    }
    if (missed != NULL)
        *missed = unanswered;
    enum store_status st = copies_status(found, nomem, error, notfound);
    count_status(s, st);
    return st;
}

enum store_status pool_get_each_many(struct pool *p, struct store *s, const char *const *keys,
                                     const size_t *keylens, size_t n, store_copies_fn fn,
                                     void *arg, enum store_status *status, size_t *missed)
{
    flush_stale(p, s, false);
    if (!ops_reserve(p, n * p->replicas)) {
        for (size_t i = 0; i < n; i++)
            status[i] = STORE_NOMEM;
        return n > 0 ? STORE_NOMEM : STORE_OK;
    }
    /* A node down or lagging is not asked, as pool_get_each's single gets
     * skip it (store_pool.h, "lag"): a state read every 50 ms must not wait
     * for the replica the increments gave up on. */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (missed != NULL)
            missed[i] = 0;
        if (!store_key_valid(keys[i], keylens[i]))
            continue;
        uint32_t nodes[STORE_MAX_NODES];
        size_t r = pool_placement(p, keys[i], keylens[i], nodes, STORE_MAX_NODES);
        for (size_t x = 0; x < r; x++) {
            if (!p->eng->up(s, nodes[x])) {
                if (missed != NULL)
                    missed[i]++;
                continue;
            }
            /* delta, which a read does not use, carries the key's index */
            p->ops[j++] = (struct store_op){.key = keys[i], .keylen = keylens[i], .delta = i,
                                            .node = nodes[x], .want_blob = true};
        }
    }
    p->eng->mget(s, p->ops, j);
    enum store_status first = STORE_OK;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool found = false, notfound = false, error = false, nomem = false;
        if (!store_key_valid(keys[i], keylens[i]))
            error = true;
        for (; k < j && p->ops[k].delta == i; k++) {
            struct store_op *op = &p->ops[k];
            if (op->status == STORE_OK && op->present) {
                fn(arg, i, op->blob, op->bloblen);
                found = true;
            } else if (op->status == STORE_OK) {
                notfound = true;
            } else {
                nomem = nomem || op->status == STORE_NOMEM;
                error = error || (op->status != STORE_UNAVAILABLE && op->status != STORE_NOMEM);
                if (missed != NULL)
                    missed[i]++;
            }
            free(op->blob);
            op->blob = NULL;
        }
        status[i] = copies_status(found, nomem, error, notfound);
        count_status(s, status[i]);
        if (first == STORE_OK && status[i] != STORE_OK && status[i] != STORE_NOTFOUND)
            first = status[i];
    }
    return first;
}

/* Stale hints for the replicas in miss[0..nmiss) that may hold an older
 * value than the one the others now have. */
static void hint_stale(struct pool *p, struct store *s, const uint32_t *miss, size_t nmiss,
                       const char *key, size_t keylen)
{
    for (size_t x = 0; x < nmiss; x++)
        if (!hint(p, s, miss[x], HINT_STALE, key, keylen, 0, 0))
            log_lost(p, miss[x], 1,
                     p->hint_keys == 0 ? "hints_disabled" : "hint_table_full");
    update_pending(p, s);
}

/* add found the key on a later replica: copy its value over ours on the
 * replicas that took ours (best effort: a failure leaves a stale hint). */
static void add_repair(struct pool *p, struct store *s, uint32_t from, const uint32_t *took,
                       size_t ntook, const char *key, size_t keylen, uint32_t ttl_s)
{
    char *old = NULL;
    size_t oldlen = 0;
    enum store_status st = p->eng->get(s, from, key, keylen, &old, &oldlen);
    for (size_t x = 0; x < ntook; x++) {
        enum store_status w = STORE_ERROR;
        if (st == STORE_OK)
            w = p->eng->put(s, took[x], key, keylen, old, oldlen, ttl_s, false);
        else if (st == STORE_NOTFOUND)
            w = p->eng->del(s, took[x], key, keylen);
        if (w != STORE_OK && w != STORE_NOTFOUND)
            hint_stale(p, s, &took[x], 1, key, keylen);
    }
    free(old);
}

enum store_status pool_put(struct pool *p, struct store *s, const char *key, size_t keylen,
                           const char *val, size_t vallen, uint32_t ttl_s, bool add)
{
    uint32_t nodes[STORE_MAX_NODES], took[STORE_MAX_NODES], miss[STORE_MAX_NODES];
    size_t ntook = 0, nmiss = 0, err_up = 0, err_down = 0;
    flush_stale(p, s, false);
    size_t r = pool_placement(p, key, keylen, nodes, STORE_MAX_NODES);
    if (r == 1) {
        enum store_status st = p->eng->put(s, nodes[0], key, keylen, val, vallen, ttl_s, add);
        count_status(s, st);
        return st;
    }
    for (size_t x = 0; x < r; x++) {
        enum store_status st = p->eng->put(s, nodes[x], key, keylen, val, vallen, ttl_s, add);
        if (st == STORE_OK) {
            took[ntook++] = nodes[x];
        } else if (st == STORE_EXISTS) {
            /* The first answer decides; a later one means the replicas
             * before it lost the key: give them the old value back. */
            if (ntook > 0)
                add_repair(p, s, nodes[x], took, ntook, key, keylen, ttl_s);
            return STORE_EXISTS;
        } else {
            miss[nmiss++] = nodes[x];
            if (st != STORE_UNAVAILABLE) {
                if (p->eng->up(s, nodes[x]))
                    err_up++;
                else
                    err_down++;
            }
        }
    }
    enum store_status st = merge_write(ntook, err_up, err_down);
    if (st != STORE_UNAVAILABLE && nmiss > 0)
        hint_stale(p, s, miss, nmiss, key, keylen);
    count_status(s, st);
    return st;
}

#define RANK_NOT_ASKED 0xffu

/* The add of item on node. */
static struct store_op add_op(const struct store_add_item *item, uint32_t ttl_s, uint32_t node)
{
    return (struct store_op){.key = item->key,
                             .keylen = item->keylen,
                             .val = item->val,
                             .vallen = item->vallen,
                             .ttl_s = ttl_s,
                             .node = node};
}

/* Item i is asked of its replica of rank x: it is valid (not refused
 * before being sent), and the rank before asked it without an EXISTS. */
static bool asked_at_rank(const struct store_add_item *items, const uint8_t *rank_st, size_t rn,
                          size_t i, size_t x)
{
    if (items[i].status != STORE_UNAVAILABLE)
        return false;
    if (x == 0)
        return true;
    uint8_t before = rank_st[i * rn + x - 1];
    return before != STORE_EXISTS && before != RANK_NOT_ASKED;
}

static bool add_scratch_reserve(struct pool *p, size_t n)
{
    size_t need = n * p->replicas;
    if (need > p->add_cap) {
        size_t cap = p->add_cap ? p->add_cap : 256;
        while (cap < need)
            cap *= 2;
        uint8_t *st = realloc(p->add_rank_st, cap);
        if (st == NULL)
            return false;
        p->add_rank_st = st;
        uint8_t *nd = realloc(p->add_rank_node, cap);
        if (nd == NULL)
            return false;
        p->add_rank_node = nd;
        p->add_cap = cap;
    }
    return ops_reserve(p, n);
}

/* The ops of rank p->add_rank into p->ops; their count. */
static size_t add_rank_ops(struct pool *p, const struct store_add_item *items, size_t n,
                           uint32_t ttl_s)
{
    size_t rn = p->replicas, x = p->add_rank, j = 0;
    for (size_t i = 0; i < n; i++)
        if (asked_at_rank(items, p->add_rank_st, rn, i, x))
            p->ops[j++] = add_op(&items[i], ttl_s, p->add_rank_node[i * rn + x]);
    return j;
}

/* The adds, one pipelined run per replica rank: every item's first replica,
 * then every item's second one still undecided, and so on. n markers cost
 * R round trips, not n x R, with pool_put(add)'s rules item by item, since
 * each item still meets its replicas in placement order: an EXISTS ends it
 * (later replicas are not asked, and those that took ours get the old value
 * back), and the replicas it missed get stale hints. The order is what
 * makes two ingest nodes adding one key at once agree: the first replica
 * that answers decides, so exactly one of them adds it. */
size_t pool_add_prepare(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                        uint32_t ttl_s)
{
    size_t rn = p->replicas;
    if (!add_scratch_reserve(p, n)) {
        for (size_t i = 0; i < n; i++)
            if (items[i].status == STORE_UNAVAILABLE) {
                items[i].status = STORE_NOMEM;
                count_status(s, STORE_NOMEM);
            }
        return SIZE_MAX;
    }
    memset(p->add_rank_st, RANK_NOT_ASKED, n * rn);
    for (size_t i = 0; i < n; i++) {
        if (items[i].status != STORE_UNAVAILABLE)
            continue;
        uint32_t nodes[STORE_MAX_NODES];
        pool_placement(p, items[i].key, items[i].keylen, nodes, rn);
        for (size_t x = 0; x < rn; x++)
            p->add_rank_node[i * rn + x] = (uint8_t)nodes[x];
    }
    p->add_rank = 0;
    return add_rank_ops(p, items, n, ttl_s);
}

size_t pool_add_next(struct pool *p, struct store_add_item *items, size_t n, uint32_t ttl_s)
{
    size_t rn = p->replicas, x = p->add_rank, j = 0;
    for (size_t i = 0; i < n; i++)
        if (asked_at_rank(items, p->add_rank_st, rn, i, x))
            p->add_rank_st[i * rn + x] = (uint8_t)p->ops[j++].status;
    if (j == 0 || ++p->add_rank == rn)
        return 0; /* a rank nobody was asked at ends it: the next one asks nobody either */
    return add_rank_ops(p, items, n, ttl_s);
}

void pool_add_finish(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                     uint32_t ttl_s)
{
    size_t rn = p->replicas;
    for (size_t i = 0; i < n; i++) {
        if (items[i].status != STORE_UNAVAILABLE)
            continue;
        if (rn == 1) {
            enum store_status r = (enum store_status)p->add_rank_st[i];
            items[i].status = r == RANK_NOT_ASKED ? STORE_UNAVAILABLE : r;
            count_status(s, items[i].status);
            continue;
        }
        uint32_t took[STORE_MAX_NODES], miss[STORE_MAX_NODES];
        size_t ntook = 0, nmiss = 0, err_up = 0, err_down = 0;
        enum store_status st = STORE_OK;
        bool exists = false;
        for (size_t x = 0; x < rn && p->add_rank_st[i * rn + x] != RANK_NOT_ASKED; x++) {
            uint32_t node = p->add_rank_node[i * rn + x];
            enum store_status r = (enum store_status)p->add_rank_st[i * rn + x];
            if (r == STORE_OK) {
                took[ntook++] = node;
            } else if (r == STORE_EXISTS) {
                if (ntook > 0)
                    add_repair(p, s, node, took, ntook, items[i].key, items[i].keylen, ttl_s);
                exists = true;
                break;
            } else {
                miss[nmiss++] = node;
                if (r != STORE_UNAVAILABLE) {
                    if (p->eng->up(s, node))
                        err_up++;
                    else
                        err_down++;
                }
            }
        }
        if (exists) {
            st = STORE_EXISTS;
        } else {
            st = merge_write(ntook, err_up, err_down);
            if (st != STORE_UNAVAILABLE && nmiss > 0)
                hint_stale(p, s, miss, nmiss, items[i].key, items[i].keylen);
        }
        count_status(s, st);
        items[i].status = st;
    }
}

bool pool_stale_due(const struct pool *p, struct store *s, bool idle)
{
    if (!any_hints(p, HINT_STALE))
        return false;
    for (uint32_t k = 0; k < p->n_nodes; k++)
        if (hints_count_kind(p->hints[k], HINT_STALE) > 0 && hint_target(p, s, k, idle))
            return true;
    return false;
}

void pool_add_batch(struct pool *p, struct store *s, struct store_add_item *items, size_t n,
                    uint32_t ttl_s)
{
    if (p->replicas > 1)
        flush_stale(p, s, false);
    size_t nops = pool_add_prepare(p, s, items, n, ttl_s);
    if (nops == SIZE_MAX)
        return;
    while (nops > 0) {
        if (p->eng->add != NULL)
            p->eng->add(s, p->ops, nops);
        else
            for (size_t k = 0; k < nops; k++)
                p->ops[k].status = p->eng->put(s, p->ops[k].node, p->ops[k].key,
                                               p->ops[k].keylen, p->ops[k].val,
                                               p->ops[k].vallen, ttl_s, true);
        nops = pool_add_next(p, items, n, ttl_s);
    }
    pool_add_finish(p, s, items, n, ttl_s);
}

enum store_status pool_del(struct pool *p, struct store *s, const char *key, size_t keylen)
{
    uint32_t nodes[STORE_MAX_NODES], miss[STORE_MAX_NODES];
    size_t ok = 0, notfound = 0, nmiss = 0, err_up = 0, err_down = 0;
    flush_stale(p, s, false);
    size_t r = pool_placement(p, key, keylen, nodes, STORE_MAX_NODES);
    if (r == 1) {
        enum store_status st = p->eng->del(s, nodes[0], key, keylen);
        count_status(s, st);
        return st;
    }
    for (size_t x = 0; x < r; x++) {
        enum store_status st = p->eng->del(s, nodes[x], key, keylen);
        if (st == STORE_OK) {
            ok++;
        } else if (st == STORE_NOTFOUND) {
            notfound++;
        } else {
            miss[nmiss++] = nodes[x];
            if (st != STORE_UNAVAILABLE) {
                if (p->eng->up(s, nodes[x]))
                    err_up++;
                else
                    err_down++;
            }
        }
    }
    /* NOTFOUND is as good as a confirmed delete. */
    enum store_status st = merge_write(ok + notfound, err_up, err_down);
    if (st != STORE_UNAVAILABLE && nmiss > 0)
        hint_stale(p, s, miss, nmiss, key, keylen);
    if (st == STORE_OK && ok == 0)
        st = STORE_NOTFOUND;
    count_status(s, st);
    return st;
}

struct pool_nodes *pool_nodes_new(const struct store_url *url)
{
    struct ketama_node kn[STORE_MAX_NODES];
    if (url->n_nodes == 0 || url->n_nodes > STORE_MAX_NODES)
        return NULL;
    struct pool_nodes *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->timeout_ms = url->timeout_ms;
    p->replicas = url->replicas;
    p->hint_keys = url->hint_keys;
    p->replica_lag_ms = url->replica_lag_ms;
    p->n_nodes = url->n_nodes;
    p->nodes = calloc(url->n_nodes, sizeof(*p->nodes));
    p->health = calloc(url->n_nodes, sizeof(*p->health));
    if (p->nodes == NULL || p->health == NULL)
        goto err;
    for (size_t i = 0; i < url->n_nodes; i++) {
        p->nodes[i] = url->nodes[i];
        kn[i].host = p->nodes[i].host;
        kn[i].port = p->nodes[i].port;
        node_health_init(&p->health[i]);
    }
    if ((p->ketama = ketama_create(kn, url->n_nodes)) == NULL)
        goto err;
    atomic_init(&p->refs, 1);
    return p;
err:
    free(p->health);
    free(p->nodes);
    free(p);
    return NULL;
}

void pool_nodes_down(struct pool_nodes *p, size_t node)
{
    struct node_health *hl = &p->health[node];
    if (atomic_load_explicit(&hl->backoff_ms, memory_order_relaxed) == 0 &&
        !node_health_lagging(hl))
        log_warn("store: node down, kept out for a backoff node=%s:%u (its replicas take the "
                 "writes; a write it may have applied is not resent)",
                 p->nodes[node].host, (unsigned)p->nodes[node].port);
    node_health_fail(hl);
}

void pool_nodes_lagging(struct pool_nodes *p, size_t node)
{
    struct node_health *hl = &p->health[node];
    if (!node_health_lagging(hl))
        log_warn("store: replica lagging, left out for a backoff node=%s:%u replica_lag_ms=%u "
                 "(what it was sent gets no hint, the rest does)",
                 p->nodes[node].host, (unsigned)p->nodes[node].port, p->replica_lag_ms);
    node_health_fail_lag(hl);
}

void pool_nodes_unref(struct pool_nodes *p)
{
    if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    pool_rings_clear(&p->rings);
    ketama_free(p->ketama);
    free(p->health);
    free(p->nodes);
    free(p);
}

size_t pool_loop_begin(struct pool *p, struct store *s, struct pool_loop_batch *b,
                       enum pool_run_kind *kind)
{
    bool idle = !b->add && b->n == 0;
    b->stale = pool_stale_due(p, s, idle);
    b->nomem = false;
    size_t nops;
    if (b->stale)
        nops = pool_stale_prepare(p, s, idle);
    else if (b->add)
        nops = pool_add_prepare(p, s, b->adds, b->n, b->ttl_s);
    else
        nops = pool_incr_prepare(p, s, b->items, b->n, b->ttl_s);
    if (nops == SIZE_MAX || (!b->stale && idle && nops == 0))
        return SIZE_MAX; /* out of memory, or no hint due */
    *kind = b->stale ? POOL_RUN_DEL : b->add ? POOL_RUN_ADD : POOL_RUN_INCR;
    return nops;
}

size_t pool_loop_next(struct pool *p, struct store *s, struct pool_loop_batch *b,
                      enum pool_run_kind *kind)
{
    size_t nops;
    if (b->stale) {
        /* The deletes are done: the batch's own first run. */
        pool_stale_finish(p, s);
        b->stale = false;
        nops = b->add ? pool_add_prepare(p, s, b->adds, b->n, b->ttl_s)
                      : pool_incr_prepare(p, s, b->items, b->n, b->ttl_s);
        if (nops == SIZE_MAX) {
            b->nomem = true;
            if (!b->add) {
                for (size_t i = 0; i < b->n; i++)
                    b->items[i].status = STORE_NOMEM;
                s->stats.error_items += b->n;
            }
            return 0;
        }
        if (nops > 0) {
            *kind = b->add ? POOL_RUN_ADD : POOL_RUN_INCR;
            return nops;
        }
        /* nothing to send: every add refused before sending, or no hint due */
    } else if (b->add && (nops = pool_add_next(p, b->adds, b->n, b->ttl_s)) > 0) {
        *kind = POOL_RUN_ADD;
        return nops;
    }
    if (b->add)
        pool_add_finish(p, s, b->adds, b->n, b->ttl_s);
    else
        pool_incr_finish(p, s, b->items, b->n, b->ttl_s);
    return 0;
}
