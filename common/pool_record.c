/* The pool an event's counters are placed on (pool_record.h). */
#include "pool_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"
#include "md5.h"

size_t pool_record_format(const struct store *s, char buf[POOL_RECORD_MAX])
{
    /* The ring's input exactly: each host as written, its port, in order.
     * One node takes every key whatever its name: nothing to digest. */
    size_t n = store_node_count(s);
    if (n == 1)
        return (size_t)snprintf(buf, POOL_RECORD_MAX, "replicas=%u nodes=1", store_replicas(s));
    struct md5_ctx ctx;
    md5_init(&ctx);
    for (size_t k = 0; k < n; k++) {
        const struct store_node *node = store_node_at(s, k);
        char port[8];
        int len = snprintf(port, sizeof(port), ":%u,", (unsigned)node->port);
        md5_update(&ctx, node->host, strlen(node->host));
        md5_update(&ctx, port, (size_t)len);
    }
    unsigned char d[MD5_DIGEST_LEN];
    md5_final(&ctx, d);
    int len = snprintf(buf, POOL_RECORD_MAX, "replicas=%u nodes=%zu md5=", store_replicas(s), n);
    for (size_t i = 0; i < MD5_DIGEST_LEN; i++)
        len += snprintf(buf + len, POOL_RECORD_MAX - (size_t)len, "%02x", d[i]);
    return (size_t)len;
}

bool pool_record_check(struct store *s, const char *event, uint32_t ttl_s, char *err,
                       size_t errlen)
{
    size_t n = store_node_count(s);
    if (n == 0)
        return true;
    char ours[POOL_RECORD_MAX], key[KEY_NODE_MAX];
    size_t ourlen = pool_record_format(s, ours);
    size_t keylen = key_pool_record(key, event);
    struct store_node_write *adds = calloc(n, sizeof(*adds));
    if (adds == NULL) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    /* Read first, so that a refused list writes nothing anywhere. */
    size_t missing = 0, answered = 0, other = 0;
    char theirs[POOL_RECORD_MAX] = "";
    for (size_t k = 0; k < n; k++) {
        char *val = NULL;
        size_t len = 0;
        enum store_status st = store_node_get(s, (uint32_t)k, key, keylen, &val, &len);
        if (st == STORE_OK) {
            answered++;
            if (len != ourlen || memcmp(val, ours, len) != 0) {
                if (other++ == 0)
                    snprintf(theirs, sizeof(theirs), "%.*s", (int)(len < 80 ? len : 80), val);
            }
        } else if (st == STORE_NOTFOUND) {
            answered++;
            adds[missing++] = (struct store_node_write){
                .key = key, .keylen = keylen, .val = ours, .vallen = ourlen, .node = (uint32_t)k};
        }
        free(val);
    }
    if (other == 0 && missing > 0) {
        store_node_add(s, adds, missing, ttl_s);
        /* Another binary, started at the same moment, may have added its own. */
        for (size_t i = 0; i < missing && other == 0; i++) {
            if (adds[i].status != STORE_EXISTS)
                continue;
            char *val = NULL;
            size_t len = 0;
            if (store_node_get(s, adds[i].node, key, keylen, &val, &len) == STORE_OK &&
                (len != ourlen || memcmp(val, ours, len) != 0)) {
                other++;
                snprintf(theirs, sizeof(theirs), "%.*s", (int)(len < 80 ? len : 80), val);
            }
            free(val);
        }
    }
    free(adds);
    if (answered == 0)
        log_warn("store: no node answered: the pool of event %s is not checked", event);
    if (other == 0)
        return true;
    snprintf(err, errlen,
             "the counters of event %s are placed on another pool (%zu of %zu nodes record "
             "\"%s\", this --backend is \"%s\"): changing it loses the counts of moved keys; "
             "use the event's list (hosts as written, same order and replicas) or a new event "
             "(README, \"Changing the pool\"; two lists started at once: delete %s)",
             event, other, answered, theirs, ours, key);
    return false;
}
