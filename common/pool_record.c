/* The pool's epochs, recorded in the pool (pool_record.h). */
#include "pool_record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"
#include "md5.h"
#include "store_pool.h"

struct epoch_rec {
    char header[POOL_RECORD_MAX];
    size_t hlen;
    uint32_t replicas;
    size_t n_nodes;
    struct store_node hosts[STORE_MAX_NODES];
    bool hosts_known;
    bool missing[STORE_MAX_NODES]; /* per node of ours: answered without the header */
};

/* The ring's input exactly: each host as written, its port, in order. One
 * node takes every key whatever its name: nothing to digest. */
static size_t format_header(uint32_t replicas, const struct store_node *hosts, size_t n,
                            char buf[POOL_RECORD_MAX])
{
    if (n == 1)
        return (size_t)snprintf(buf, POOL_RECORD_MAX, "replicas=%u nodes=1", replicas);
    struct md5_ctx ctx;
    md5_init(&ctx);
    for (size_t k = 0; k < n; k++) {
        char port[8];
        int len = snprintf(port, sizeof(port), ":%u,", (unsigned)hosts[k].port);
        md5_update(&ctx, hosts[k].host, strlen(hosts[k].host));
        md5_update(&ctx, port, (size_t)len);
    }
    unsigned char d[MD5_DIGEST_LEN];
    md5_final(&ctx, d);
    int len = snprintf(buf, POOL_RECORD_MAX, "replicas=%u nodes=%zu md5=", replicas, n);
    for (size_t i = 0; i < MD5_DIGEST_LEN; i++)
        len += snprintf(buf + len, POOL_RECORD_MAX - (size_t)len, "%02x", d[i]);
    return (size_t)len;
}

static void our_hosts(const struct store *s, struct store_node *out, size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = *store_node_at(s, k);
}

size_t pool_record_format(const struct store *s, char buf[POOL_RECORD_MAX])
{
    size_t n = store_node_count(s);
    struct store_node *hosts = calloc(n > 0 ? n : 1, sizeof(*hosts));
    if (hosts == NULL)
        return 0;
    our_hosts(s, hosts, n);
    size_t len = format_header(store_replicas(s), hosts, n, buf);
    free(hosts);
    return len;
}

/* "host:port" (the host may be an IPv6 literal: the port follows the last ':'). */
static bool parse_host(const char *v, size_t len, struct store_node *out)
{
    size_t c = len;
    while (c > 0 && v[c - 1] != ':')
        c--;
    if (c < 2 || c - 1 > STORE_HOST_MAX || c == len || len - c > 5)
        return false;
    unsigned port = 0;
    for (size_t i = c; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        port = port * 10 + (unsigned)(v[i] - '0');
    }
    if (port == 0 || port > 65535)
        return false;
    memcpy(out->host, v, c - 1);
    out->host[c - 1] = '\0';
    out->port = (uint16_t)port;
    return true;
}

/* The epoch's hosts from the first node holding every one of them; known
 * only when they digest to the header. */
static void read_hosts(struct store *s, const char *event, uint32_t e, struct epoch_rec *r,
                       size_t n_ours)
{
    unsigned rep = 0;
    size_t nn = 0;
    if (sscanf(r->header, "replicas=%u nodes=%zu", &rep, &nn) != 2 || nn == 0 ||
        nn > STORE_MAX_NODES)
        return;
    r->replicas = rep;
    r->n_nodes = nn;
    for (size_t k = 0; k < n_ours && !r->hosts_known; k++) {
        if (r->missing[k])
            continue;
        bool all = true;
        for (uint32_t i = 0; i < nn && all; i++) {
            char key[KEY_NODE_MAX], *val = NULL;
            size_t len = 0, klen = key_pool_host(key, event, e, i);
            all = store_node_get(s, (uint32_t)k, key, klen, &val, &len) == STORE_OK &&
                  parse_host(val, len, &r->hosts[i]);
            free(val);
        }
        if (!all)
            continue;
        char h[POOL_RECORD_MAX];
        size_t hl = format_header(rep, r->hosts, nn, h);
        r->hosts_known = hl == r->hlen && memcmp(h, r->header, hl) == 0;
    }
}

/* Index of host in ours, or -1. */
static int find_host(const struct store_node *ours, size_t n, const struct store_node *h)
{
    for (size_t k = 0; k < n; k++)
        if (ours[k].port == h->port && strcmp(ours[k].host, h->host) == 0)
            return (int)k;
    return -1;
}

static void list_text(const struct store_node *h, size_t n, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 1 < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s%s:%u", i ? "," : "", h[i].host,
                         (unsigned)h[i].port);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* Adds the epoch's hosts on every node of ours that answered, then its
 * header where it was missing (or everywhere: a new epoch). false, with
 * the header found in theirs, when another one was there first. */
static bool write_epoch(struct store *s, const char *event, uint32_t ttl_s, uint32_t e,
                        struct epoch_rec *r, size_t n_ours, const bool *answered, bool fresh,
                        char theirs[POOL_RECORD_MAX])
{
    size_t cap = n_ours * (r->n_nodes + 1);
    struct store_node_write *w = calloc(cap, sizeof(*w));
    char(*hkeys)[KEY_NODE_MAX] = calloc(r->n_nodes, sizeof(*hkeys));
    char(*hvals)[STORE_HOST_MAX + 8] = calloc(r->n_nodes, sizeof(*hvals));
    bool ok = w != NULL && hkeys != NULL && hvals != NULL;
    size_t n = 0;
    size_t hklen[STORE_MAX_NODES], hvlen[STORE_MAX_NODES];
    for (uint32_t i = 0; ok && i < r->n_nodes; i++) {
        hklen[i] = key_pool_host(hkeys[i], event, e, i);
        int l = snprintf(hvals[i], sizeof(hvals[i]), "%s:%u", r->hosts[i].host,
                         (unsigned)r->hosts[i].port);
        hvlen[i] = (size_t)l;
        ok = l > 0 && (size_t)l <= STORE_ADD_BATCH_VALUE_MAX;
    }
    for (size_t k = 0; ok && k < n_ours; k++) {
        if (!answered[k])
            continue;
        for (uint32_t i = 0; i < r->n_nodes; i++)
            w[n++] = (struct store_node_write){.key = hkeys[i], .keylen = hklen[i],
                                               .val = hvals[i], .vallen = hvlen[i],
                                               .node = (uint32_t)k};
    }
    if (ok && n > 0)
        store_node_add(s, w, n, ttl_s);
    char hkey[KEY_NODE_MAX];
    size_t hklen0 = key_pool_epoch(hkey, event, e);
    n = 0;
    for (size_t k = 0; ok && k < n_ours; k++) {
        if (answered[k] && (fresh || r->missing[k]))
            w[n++] = (struct store_node_write){.key = hkey, .keylen = hklen0, .val = r->header,
                                               .vallen = r->hlen, .node = (uint32_t)k};
    }
    if (ok && n > 0)
        store_node_add(s, w, n, ttl_s);
    /* Another binary, started at the same moment, may have added its own. */
    bool mine = true;
    for (size_t i = 0; ok && i < n && mine; i++) {
        if (w[i].status != STORE_EXISTS)
            continue;
        char *val = NULL;
        size_t len = 0;
        if (store_node_get(s, w[i].node, hkey, hklen0, &val, &len) == STORE_OK &&
            (len != r->hlen || memcmp(val, r->header, len) != 0)) {
            mine = false;
            snprintf(theirs, POOL_RECORD_MAX, "%.*s", (int)(len < 80 ? len : 80), val);
        }
        free(val);
    }
    free(hvals);
    free(hkeys);
    free(w);
    if (!ok)
        log_warn("store: the pool record of event %s epoch %" PRIu32 " was not written "
                 "(a host longer than %u bytes, or no memory)",
                 event, e, STORE_ADD_BATCH_VALUE_MAX - 6);
    return mine;
}

/* What the nodes of ours record: the epochs, read before anything is
 * written, so that a refused list writes nothing anywhere. */
struct pool_seen {
    struct epoch_rec *ep;        /* POOL_EPOCHS_MAX + 1: the last one is ours */
    struct store_node *ours;
    size_t n;                    /* our nodes */
    size_t n_ep;                 /* epochs recorded */
    size_t n_answered, disagree;
    bool answered[STORE_MAX_NODES];
    bool folded_missing[POOL_EPOCHS_MAX][STORE_MAX_NODES];
    uint32_t folded;             /* the newest epoch with a fold marker, 0: none */
    char theirs[POOL_RECORD_MAX];
};

static void seen_free(struct pool_seen *v)
{
    free(v->ours);
    free(v->ep);
}

static bool read_epochs(struct store *s, const char *event, struct pool_seen *v)
{
    memset(v, 0, sizeof(*v));
    v->n = store_node_count(s);
    v->ep = calloc(POOL_EPOCHS_MAX + 1, sizeof(*v->ep));
    v->ours = calloc(v->n > 0 ? v->n : 1, sizeof(*v->ours));
    if (v->ep == NULL || v->ours == NULL)
        return false;
    our_hosts(s, v->ours, v->n);
    struct epoch_rec *mine = &v->ep[POOL_EPOCHS_MAX];
    mine->replicas = store_replicas(s);
    mine->n_nodes = v->n;
    memcpy(mine->hosts, v->ours, v->n * sizeof(*v->ours));
    mine->hosts_known = true;
    mine->hlen = format_header(mine->replicas, v->ours, v->n, mine->header);

    char key[KEY_NODE_MAX];
    for (uint32_t e = 0; e < POOL_EPOCHS_MAX; e++) {
        size_t klen = key_pool_epoch(key, event, e);
        struct epoch_rec *r = &v->ep[e];
        bool found = false;
        for (size_t k = 0; k < v->n; k++) {
            if (e > 0 && !v->answered[k])
                continue;
            char *val = NULL;
            size_t len = 0;
            enum store_status st = store_node_get(s, (uint32_t)k, key, klen, &val, &len);
            if (st == STORE_OK && !found) {
                found = true;
                r->hlen = len < POOL_RECORD_MAX ? len : POOL_RECORD_MAX - 1;
                memcpy(r->header, val, r->hlen);
            } else if (st == STORE_OK && (len != r->hlen || memcmp(val, r->header, len) != 0)) {
                if (v->disagree++ == 0)
                    snprintf(v->theirs, sizeof(v->theirs), "%.*s", (int)(len < 80 ? len : 80),
                             val);
            } else if (st == STORE_NOTFOUND) {
                r->missing[k] = true;
            }
            if (e == 0 && (st == STORE_OK || st == STORE_NOTFOUND))
                v->answered[k] = true, v->n_answered++;
            free(val);
        }
        if (!found)
            break;
        v->n_ep = e + 1;
        read_hosts(s, event, e, r, v->n);
        if (!r->hosts_known && r->hlen == mine->hlen &&
            memcmp(r->header, mine->header, r->hlen) == 0) {
            /* recorded before epochs kept their hosts: ours digest to it */
            memcpy(r->hosts, v->ours, v->n * sizeof(*v->ours));
            r->n_nodes = v->n;
            r->replicas = mine->replicas;
            r->hosts_known = true;
        }
    }
    /* Fold markers: one node holding it is enough (written last, after
     * every carry counter); the others get it back below. */
    for (uint32_t e = 1; e < v->n_ep; e++) {
        size_t klen = key_pool_folded(key, event, e);
        bool found = false;
        for (size_t k = 0; k < v->n; k++) {
            if (!v->answered[k])
                continue;
            char *val = NULL;
            size_t len = 0;
            enum store_status st = store_node_get(s, (uint32_t)k, key, klen, &val, &len);
            found |= st == STORE_OK;
            v->folded_missing[e][k] = st == STORE_NOTFOUND;
            free(val);
        }
        if (found)
            v->folded = e;
    }
    return true;
}

/* An epoch holds this host. */
static bool epoch_has(const struct epoch_rec *r, const struct store_node *h)
{
    return r->hosts_known && find_host(r->hosts, r->n_nodes, h) >= 0;
}

static void write_folded(struct store *s, const char *event, uint32_t ttl_s, uint32_t e,
                         const bool *to)
{
    char key[KEY_NODE_MAX], val[32];
    size_t klen = key_pool_folded(key, event, e);
    int vlen = snprintf(val, sizeof(val), "epochs 0-%u", e - 1);
    struct store_node_write w[STORE_MAX_NODES];
    size_t n = 0;
    for (size_t k = 0; k < store_node_count(s); k++)
        if (to[k])
            w[n++] = (struct store_node_write){.key = key, .keylen = klen, .val = val,
                                               .vallen = (size_t)vlen, .node = (uint32_t)k};
    if (n > 0)
        store_node_add(s, w, n, ttl_s);
}

bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, uint32_t *epoch,
                       char *err, size_t errlen)
{
    struct pool_view view;
    bool ok = pool_record_join(s, event, ttl_s, &view, err, errlen);
    *epoch = view.epoch;
    return ok;
}

bool pool_record_join(struct store *s, const char *event, uint32_t ttl_s, struct pool_view *view,
                      char *err, size_t errlen)
{
    *view = (struct pool_view){0};
    size_t n = store_node_count(s);
    if (n == 0)
        return true;
    bool ok = false;
    struct pool_seen seen;
    struct store_epoch_ring *rings = calloc(POOL_EPOCHS_MAX, sizeof(*rings));
    char key[KEY_NODE_MAX], newest_list[160] = "";
    char *theirs = seen.theirs;
    if (!read_epochs(s, event, &seen) || rings == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    struct epoch_rec *ep = seen.ep, *mine = &seen.ep[POOL_EPOCHS_MAX];
    const struct store_node *ours = seen.ours;
    size_t n_ep = seen.n_ep;
    uint32_t replicas = mine->replicas;
    if (seen.n_answered == 0) {
        log_warn("store: no node answered: the pool of event %s is not checked", event);
        ok = true;
        goto done;
    }
    key_pool_epoch(key, event, n_ep > 0 ? (uint32_t)n_ep - 1 : 0);
    const char *why = NULL;
    size_t next = n_ep; /* the epoch we write in */
    size_t retired = 0; /* our hosts a newer epoch dropped */
    if (seen.disagree > 0) {
        why = "the nodes record two pools";
    } else if (n_ep > 0) {
        struct epoch_rec *last = &ep[n_ep - 1];
        snprintf(theirs, POOL_RECORD_MAX, "%.*s", (int)last->hlen, last->header);
        if (!last->hosts_known) {
            why = "its hosts are not recorded";
        } else {
            list_text(last->hosts, last->n_nodes, newest_list, sizeof(newest_list));
            size_t have = 0;
            for (size_t i = 0; i < last->n_nodes; i++)
                have += find_host(ours, n, &last->hosts[i]) >= 0;
            /* Hosts of ours the newest epoch lacks but an earlier one held:
             * retiring or retired (a fold), never written in again. */
            size_t fresh = 0;
            for (size_t k = 0; k < n; k++) {
                if (find_host(last->hosts, last->n_nodes, &ours[k]) >= 0)
                    continue;
                bool earlier = false;
                for (size_t e = 0; e + 1 < n_ep && !earlier; e++)
                    earlier = epoch_has(&ep[e], &ours[k]);
                if (earlier)
                    retired++;
                else
                    fresh++;
            }
            /* One node takes every key whatever its name (a proxy in
             * front of it, another spelling): the same pool. */
            bool one = last->n_nodes == 1 && n == 1;
            if (last->replicas != replicas)
                why = "another replicas=";
            else if (one)
                next = n_ep - 1;
            else if (have < last->n_nodes)
                why = "this --backend lacks a host of it (retire a node with "
                      "livetally-aggregate --retire first)";
            else if (retired > 0 && fresh > 0)
                why = "it holds a retired node and new ones at once";
            else if (fresh > 0 && n_ep >= POOL_EPOCHS_MAX)
                why = "it has changed as many times as it can";
            else if (fresh == 0)
                next = n_ep - 1; /* its hosts (maybe in another order, maybe with
                                  * retired ones): its ring */
        }
    }
    if (why != NULL) {
        snprintf(err, errlen,
                 "the counters of event %s are placed on another pool (epoch %zu records "
                 "\"%s\"%s%s; this --backend is \"%s\": %s): a list may only add nodes to "
                 "that epoch's, with the same replicas; use its hosts, or them and more "
                 "(README, \"Changing the pool\"; two lists started at once: delete %s)",
                 event, n_ep > 0 ? n_ep - 1 : 0, theirs, newest_list[0] ? ", hosts " : "",
                 newest_list, mine->header, why, key);
        goto done;
    }
    if (next == n_ep)
        ep[next] = *mine; /* a new epoch: our list as written */
    size_t total = next + 1;
    for (uint32_t e = 0; e < total; e++) {
        bool fresh = e == n_ep;
        if (!write_epoch(s, event, ttl_s, e, &ep[e], n, seen.answered, fresh, theirs)) {
            snprintf(err, errlen,
                     "the counters of event %s are placed on another pool (epoch %" PRIu32
                     " was recorded as \"%s\" at the same moment; this --backend is \"%s\"): "
                     "use that list (README, \"Changing the pool\"; two lists started at "
                     "once: delete %s)",
                     event, e, theirs, mine->header, key);
            goto done;
        }
    }
    for (uint32_t e = (uint32_t)total; e-- > 0;) {
        rings[e].n_nodes = ep[e].n_nodes;
        for (size_t i = 0; i < ep[e].n_nodes; i++) {
            int k = ep[e].n_nodes == 1 && n == 1 ? 0 : find_host(ours, n, &ep[e].hosts[i]);
            if (k < 0 && e < seen.folded) {
                /* Folded: its counters are read from the fold's carry
                 * counters, never again from it, and nothing writes in it. */
                rings[e] = rings[total - 1];
                break;
            }
            if (k < 0) {
                snprintf(err, errlen,
                         "the counters of event %s are placed on another pool (epoch %" PRIu32
                         " holds %s:%u, which this --backend lacks, and its counters are not "
                         "folded: keep the host in --backend until livetally-aggregate "
                         "--retire has folded them) (README, \"Changing the pool\")",
                         event, e, ep[e].hosts[i].host, (unsigned)ep[e].hosts[i].port);
                goto done;
            }
            rings[e].node[i] = (uint32_t)k;
        }
    }
    if (seen.folded > 0) {
        /* a node back empty gets the newest fold's marker again */
        bool back[STORE_MAX_NODES];
        for (size_t k = 0; k < n; k++)
            back[k] = seen.answered[k] && seen.folded_missing[seen.folded][k];
        write_folded(s, event, ttl_s, seen.folded, back);
    }
    if (!store_set_rings(s, rings, total)) {
        snprintf(err, errlen, "the rings of event %s's pool could not be made", event);
        goto done;
    }
    if (next > 0 && next == n_ep)
        log_info("store: the pool of event %s grew: epoch %zu, %zu nodes (counters written "
                 "from now on are placed on it; every earlier epoch is still read)",
                 event, next, n);
    if (retired > 0)
        log_info("store: %zu host(s) of this --backend were dropped from event %s's pool at "
                 "a later epoch (retired or retiring): they take no new counters%s",
                 retired, event,
                 seen.folded + 1 == total ? "; their counters are folded: they may go"
                                          : "");
    view->epoch = (uint32_t)next;
    view->folded = seen.folded;
    ok = true;
done:
    free(rings);
    seen_free(&seen);
    return ok;
}

bool pool_record_retire(struct store *s, const char *event, uint32_t ttl_s,
                        const struct store_node *host, uint32_t *retire_epoch, char *err,
                        size_t errlen)
{
    bool ok = false;
    struct pool_seen seen;
    char theirs[POOL_RECORD_MAX] = "";
    if (!read_epochs(s, event, &seen)) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    struct epoch_rec *ep = seen.ep;
    size_t n_ep = seen.n_ep;
    if (seen.n_answered < seen.n) {
        snprintf(err, errlen, "a node of this --backend did not answer: the pool of event %s "
                              "is not changed while one is away", event);
        goto done;
    }
    if (n_ep == 0 || seen.disagree > 0 || !ep[n_ep - 1].hosts_known) {
        snprintf(err, errlen, "event %s has no pool record to retire a node from (start "
                              "the ingest once with this --backend)", event);
        goto done;
    }
    if (epoch_has(&ep[0], host)) {
        snprintf(err, errlen,
                 "%s:%u is in the first list of event %s's pool (epoch 0): it holds the "
                 "event's question states, users and snapshots, which a fold does not move; "
                 "only a node added while the event ran can be retired",
                 host->host, (unsigned)host->port, event);
        goto done;
    }
    struct epoch_rec *last = &ep[n_ep - 1];
    if (!epoch_has(last, host)) {
        bool earlier = false;
        for (size_t e = 0; e + 1 < n_ep && !earlier; e++)
            earlier = epoch_has(&ep[e], host);
        if (!earlier) {
            snprintf(err, errlen, "%s:%u was never in event %s's pool", host->host,
                     (unsigned)host->port, event);
            goto done;
        }
        *retire_epoch = (uint32_t)n_ep - 1; /* recorded by an earlier run */
        ok = true;
        goto done;
    }
    if (n_ep >= POOL_EPOCHS_MAX) {
        snprintf(err, errlen, "event %s's pool has changed as many times as it can (%u epochs)",
                 event, POOL_EPOCHS_MAX);
        goto done;
    }
    if (last->n_nodes - 1 < last->replicas) {
        snprintf(err, errlen, "retiring %s:%u would leave %zu node(s) for replicas=%u",
                 host->host, (unsigned)host->port, last->n_nodes - 1, last->replicas);
        goto done;
    }
    struct epoch_rec *next = &ep[n_ep];
    next->replicas = last->replicas;
    next->hosts_known = true;
    for (size_t i = 0; i < last->n_nodes; i++)
        if (last->hosts[i].port != host->port || strcmp(last->hosts[i].host, host->host) != 0)
            next->hosts[next->n_nodes++] = last->hosts[i];
    next->hlen = format_header(next->replicas, next->hosts, next->n_nodes, next->header);
    if (!write_epoch(s, event, ttl_s, (uint32_t)n_ep, next, seen.n, seen.answered, true,
                     theirs)) {
        snprintf(err, errlen, "epoch %zu of event %s was recorded as \"%s\" at the same moment",
                 n_ep, event, theirs);
        goto done;
    }
    log_info("store: epoch %zu of event %s recorded without %s:%u (%zu nodes): counters are "
             "written there by every binary started from now on",
             n_ep, event, host->host, (unsigned)host->port, next->n_nodes);
    *retire_epoch = (uint32_t)n_ep;
    ok = true;
done:
    seen_free(&seen);
    return ok;
}

bool pool_record_mark_folded(struct store *s, const char *event, uint32_t ttl_s, uint32_t epoch)
{
    bool all[STORE_MAX_NODES];
    for (size_t k = 0; k < store_node_count(s); k++)
        all[k] = true;
    write_folded(s, event, ttl_s, epoch, all);
    /* Written where it was missing; present everywhere it must be now. */
    char key[KEY_NODE_MAX];
    size_t klen = key_pool_folded(key, event, epoch);
    bool ok = true;
    for (size_t k = 0; k < store_node_count(s); k++) {
        char *val = NULL;
        size_t len = 0;
        ok &= store_node_get(s, (uint32_t)k, key, klen, &val, &len) == STORE_OK;
        free(val);
    }
    return ok;
}

bool pool_record_newer(struct store *s, const char *event, uint32_t epoch, uint32_t *newest)
{
    size_t n = store_node_count(s);
    bool newer = false;
    for (uint32_t e = epoch + 1; e < POOL_EPOCHS_MAX; e++) {
        char key[KEY_NODE_MAX];
        size_t klen = key_pool_epoch(key, event, e);
        bool found = false;
        for (size_t k = 0; k < n && !found; k++) {
            char *val = NULL;
            size_t len = 0;
            found = store_node_get(s, (uint32_t)k, key, klen, &val, &len) == STORE_OK;
            free(val);
        }
        if (!found)
            break;
        newer = true;
        *newest = e;
    }
    return newer;
}

uint32_t pool_record_folded(struct store *s, const char *event, uint32_t newest)
{
    for (uint32_t e = newest; e >= 1; e--) {
        char key[KEY_NODE_MAX];
        size_t klen = key_pool_folded(key, event, e);
        for (size_t k = 0; k < store_node_count(s); k++) {
            char *val = NULL;
            size_t len = 0;
            enum store_status st = store_node_get(s, (uint32_t)k, key, klen, &val, &len);
            free(val);
            if (st == STORE_OK)
                return e;
        }
    }
    return 0;
}
