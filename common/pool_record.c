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

bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, uint32_t *epoch,
                       char *err, size_t errlen)
{
    *epoch = 0;
    size_t n = store_node_count(s);
    if (n == 0)
        return true;
    bool ok = false;
    struct epoch_rec *ep = calloc(POOL_EPOCHS_MAX + 1, sizeof(*ep));
    struct store_node *ours = calloc(n, sizeof(*ours));
    struct store_epoch_ring *rings = calloc(POOL_EPOCHS_MAX, sizeof(*rings));
    bool answered[STORE_MAX_NODES] = {0};
    char key[KEY_NODE_MAX], theirs[POOL_RECORD_MAX] = "", newest_list[160] = "";
    if (ep == NULL || ours == NULL || rings == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    our_hosts(s, ours, n);
    uint32_t replicas = store_replicas(s);
    struct epoch_rec *mine = &ep[POOL_EPOCHS_MAX];
    mine->replicas = replicas;
    mine->n_nodes = n;
    memcpy(mine->hosts, ours, n * sizeof(*ours));
    mine->hosts_known = true;
    mine->hlen = format_header(replicas, ours, n, mine->header);

    /* Read first, so that a refused list writes nothing anywhere. */
    size_t n_ep = 0, n_answered = 0, disagree = 0;
    for (uint32_t e = 0; e < POOL_EPOCHS_MAX; e++) {
        size_t klen = key_pool_epoch(key, event, e);
        struct epoch_rec *r = &ep[e];
        bool found = false;
        for (size_t k = 0; k < n; k++) {
            if (e > 0 && !answered[k])
                continue;
            char *val = NULL;
            size_t len = 0;
            enum store_status st = store_node_get(s, (uint32_t)k, key, klen, &val, &len);
            if (st == STORE_OK && !found) {
                found = true;
                r->hlen = len < POOL_RECORD_MAX ? len : POOL_RECORD_MAX - 1;
                memcpy(r->header, val, r->hlen);
            } else if (st == STORE_OK && (len != r->hlen || memcmp(val, r->header, len) != 0)) {
                if (disagree++ == 0)
                    snprintf(theirs, sizeof(theirs), "%.*s", (int)(len < 80 ? len : 80), val);
            } else if (st == STORE_NOTFOUND) {
                r->missing[k] = true;
            }
            if (e == 0 && (st == STORE_OK || st == STORE_NOTFOUND))
                answered[k] = true, n_answered++;
            free(val);
        }
        if (!found)
            break;
        n_ep = e + 1;
        read_hosts(s, event, e, r, n);
        if (!r->hosts_known && r->hlen == mine->hlen &&
            memcmp(r->header, mine->header, r->hlen) == 0) {
            /* recorded before epochs kept their hosts: ours digest to it */
            memcpy(r->hosts, ours, n * sizeof(*ours));
            r->n_nodes = n;
            r->replicas = replicas;
            r->hosts_known = true;
        }
    }
    if (n_answered == 0) {
        log_warn("store: no node answered: the pool of event %s is not checked", event);
        ok = true;
        goto done;
    }
    key_pool_epoch(key, event, n_ep > 0 ? (uint32_t)n_ep - 1 : 0);
    const char *why = NULL;
    size_t next = n_ep; /* the epoch we write in */
    if (disagree > 0) {
        why = "the nodes record two pools";
    } else if (n_ep > 0) {
        struct epoch_rec *last = &ep[n_ep - 1];
        snprintf(theirs, sizeof(theirs), "%.*s", (int)last->hlen, last->header);
        if (!last->hosts_known) {
            why = "its hosts are not recorded";
        } else {
            list_text(last->hosts, last->n_nodes, newest_list, sizeof(newest_list));
            size_t have = 0;
            for (size_t i = 0; i < last->n_nodes; i++)
                have += find_host(ours, n, &last->hosts[i]) >= 0;
            /* One node takes every key whatever its name (a proxy in
             * front of it, another spelling): the same pool. */
            bool one = last->n_nodes == 1 && n == 1;
            if (last->replicas != replicas)
                why = "another replicas=";
            else if (one)
                next = n_ep - 1;
            else if (have < last->n_nodes)
                why = "this --backend lacks a host of it (a pool cannot shrink during an "
                      "event yet)";
            else if (n > last->n_nodes && n_ep >= POOL_EPOCHS_MAX)
                why = "it has grown as many times as it can";
            else if (n == last->n_nodes)
                next = n_ep - 1; /* its hosts, maybe in another order: its ring */
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
        if (!write_epoch(s, event, ttl_s, e, &ep[e], n, answered, fresh, theirs)) {
            snprintf(err, errlen,
                     "the counters of event %s are placed on another pool (epoch %" PRIu32
                     " was recorded as \"%s\" at the same moment; this --backend is \"%s\"): "
                     "use that list (README, \"Changing the pool\"; two lists started at "
                     "once: delete %s)",
                     event, e, theirs, mine->header, key);
            goto done;
        }
        rings[e].n_nodes = ep[e].n_nodes;
        for (size_t i = 0; i < ep[e].n_nodes; i++) {
            int k = ep[e].n_nodes == 1 && n == 1 ? 0 : find_host(ours, n, &ep[e].hosts[i]);
            if (k < 0) {
                snprintf(err, errlen,
                         "the counters of event %s are placed on another pool (epoch %" PRIu32
                         " holds %s:%u, which this --backend lacks) (README, \"Changing the "
                         "pool\")",
                         event, e, ep[e].hosts[i].host, (unsigned)ep[e].hosts[i].port);
                goto done;
            }
            rings[e].node[i] = (uint32_t)k;
        }
    }
    if (!store_set_rings(s, rings, total)) {
        snprintf(err, errlen, "the rings of event %s's pool could not be made", event);
        goto done;
    }
    if (next > 0 && next == n_ep)
        log_info("store: the pool of event %s grew: epoch %zu, %zu nodes (counters written "
                 "from now on are placed on it; every earlier epoch is still read)",
                 event, next, n);
    *epoch = (uint32_t)next;
    ok = true;
done:
    free(rings);
    free(ours);
    free(ep);
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
