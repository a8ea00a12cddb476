/* Retiring a node: the fold of agg_retire.h. */
#include "agg_retire.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agg_keys.h"
#include "agg_stats.h"
#include "keys.h"
#include "log.h"
#include "pool_record.h"
#include "util.h"

static const struct store_node *find_node(const struct store *s, const char *name)
{
    for (size_t k = 0; k < store_node_count(s); k++) {
        const struct store_node *n = store_node_at(s, k);
        char buf[STORE_HOST_MAX + 8];
        snprintf(buf, sizeof(buf), "%s:%u", n->host, (unsigned)n->port);
        if (strcmp(buf, name) == 0)
            return n;
    }
    return NULL;
}

/* The epochs in [from, to) with an ingest writing in them now: a bit per
 * epoch. false when a look failed (a node away: it cannot be told). */
static bool writers(struct store *s, const char *event, uint32_t from, uint32_t to,
                    uint32_t *found)
{
    for (uint32_t e = from; e < to; e++) {
        char key[KEY_NODE_MAX], *val = NULL;
        size_t len = 0, klen = key_pool_writing(key, event, e);
        enum store_status st = store_get(s, key, klen, &val, &len);
        free(val);
        if (st == STORE_OK)
            *found |= 1u << e;
        else if (st != STORE_NOTFOUND)
            return false;
    }
    return true;
}

static void epochs_text(uint32_t bits, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (uint32_t e = 0; e < 32 && off + 1 < cap; e++)
        if (bits & (1u << e)) {
            int w = snprintf(buf + off, cap - off, "%s%u", off ? "," : "", e);
            if (w < 0)
                break;
            off += (size_t)w;
        }
}

/* The sums of the folded layouts, per key of dst's first layout. */
struct fold {
    struct agg_keys src;  /* [last carry] + the epochs folded */
    struct agg_keys dst;  /* the new carry, then the new epoch (not used) */
    uint64_t *sum;        /* per key of src's first layout, all questions */
    size_t *sum_first;    /* per question: its first index in sum */
    size_t n_sum;
};

static void fold_free(struct fold *f)
{
    agg_keys_free(&f->src);
    agg_keys_free(&f->dst);
    free(f->sum);
    free(f->sum_first);
}

/* Reads src and sums its layouts into out (n_sum values). */
static enum store_status read_sums(struct store *s, const struct eventfile *ef, struct fold *f,
                                   uint64_t *out)
{
    size_t max = f->src.max_q_count * f->src.epochs;
    uint64_t *vals = calloc(max > 0 ? max : 1, sizeof(*vals));
    if (vals == NULL)
        return STORE_NOMEM;
    enum store_status st = STORE_OK;
    for (uint32_t qi = 0; qi < ef->n_questions && st == STORE_OK; qi++) {
        size_t first = f->src.q_first[qi], n = f->src.q_count[qi];
        st = store_mget_u64(s, f->src.key + first, f->src.len + first, n, vals, NULL);
        size_t per = n / f->src.epochs;
        uint64_t *o = out + f->sum_first[qi];
        for (size_t i = 0; i < per; i++) {
            o[i] = 0;
            for (uint32_t e = 0; e < f->src.epochs; e++)
                o[i] = agg_sat_add(o[i], vals[e * per + i]);
        }
    }
    free(vals);
    return st;
}

enum agg_retire_result agg_retire(const struct eventfile *ef, struct store *s,
                                  const struct agg_retire_config *cfg, char *msg, size_t msglen)
{
    const char *event = ef->name;
    const struct store_node *node = find_node(s, cfg->node);
    if (store_node_count(s) == 0) {
        snprintf(msg, msglen, "--retire needs a memcached:// or redis:// pool (this backend "
                              "has no nodes to retire)");
        return AGG_RETIRE_FAILED;
    }
    if (node == NULL) {
        snprintf(msg, msglen, "--retire %s: not a node of --backend (spell it as --backend does)",
                 cfg->node);
        return AGG_RETIRE_FAILED;
    }
    char err[512];
    uint32_t retire_epoch = 0;
    if (!pool_record_retire(s, event, ef->ttl_s, node, &retire_epoch, err, sizeof(err))) {
        snprintf(msg, msglen, "--retire %s: %s", cfg->node, err);
        return AGG_RETIRE_FAILED;
    }
    struct pool_view v;
    if (!pool_record_join(s, event, ef->ttl_s, &v, err, sizeof(err))) {
        snprintf(msg, msglen, "--retire %s: %s", cfg->node, err);
        return AGG_RETIRE_FAILED;
    }
    uint32_t into = v.epoch; /* the newest: a growth after the retirement folds into it */
    if (v.folded == into) {
        bool marked = pool_record_mark_folded(s, event, ef->ttl_s, into);
        snprintf(msg, msglen,
                 "%s is retired from event %s's pool: the epochs before %" PRIu32
                 " were folded by an earlier run%s",
                 cfg->node, event, into,
                 marked ? "" : " (a node did not take the marker: run again)");
        return marked ? AGG_RETIRE_DONE : AGG_RETIRE_FAILED;
    }

    /* 2. Nobody may write what is about to be summed. Two looks, further
     * apart than an ingest's refresh, so a marker a node lost in between
     * (restarted empty) is set again before the second. */
    uint32_t busy = 0;
    for (int look = 0; look < 2; look++) {
        if (look == 1)
            util_sleep_ms(cfg->settle_ms);
        if (!writers(s, event, v.folded, into, &busy)) {
            snprintf(msg, msglen, "--retire %s: a node did not answer: nothing folded; run "
                                  "again when every node is up", cfg->node);
            return AGG_RETIRE_FAILED;
        }
        if (busy != 0)
            break;
    }
    if (busy != 0) {
        char ep[64];
        epochs_text(busy, ep, sizeof(ep));
        snprintf(msg, msglen,
                 "epoch %" PRIu32 " of event %s is recorded without %s, but an ingest still "
                 "writes in epoch(s) %s: restart livetally-aggregate and then each ingest "
                 "(same --backend, or without %s: they join epoch %" PRIu32 "), then run "
                 "--retire again. Nothing is lost meanwhile: every epoch is still read.",
                 into, event, cfg->node, ep, cfg->node, into);
        return AGG_RETIRE_WAIT;
    }

    /* 3. The fold. */
    struct fold f = {0};
    enum agg_retire_result res = AGG_RETIRE_FAILED;
    uint64_t *again = NULL;
    if (!agg_keys_build_pool(ef, into - 1, v.folded, &f.src) ||
        !agg_keys_build_pool(ef, into, into, &f.dst)) {
        snprintf(msg, msglen, "--retire %s: the key lists could not be built", cfg->node);
        goto done;
    }
    f.sum_first = calloc(ef->n_questions > 0 ? ef->n_questions : 1, sizeof(*f.sum_first));
    for (uint32_t qi = 0; qi < ef->n_questions && f.sum_first != NULL; qi++) {
        f.sum_first[qi] = f.n_sum;
        f.n_sum += f.dst.q_count[qi] / f.dst.epochs;
    }
    f.sum = calloc(f.n_sum > 0 ? f.n_sum : 1, sizeof(*f.sum));
    again = calloc(f.n_sum > 0 ? f.n_sum : 1, sizeof(*again));
    if (f.sum_first == NULL || f.sum == NULL || again == NULL) {
        snprintf(msg, msglen, "--retire %s: out of memory", cfg->node);
        goto done;
    }
    enum store_status st = read_sums(s, ef, &f, f.sum);
    if (st != STORE_OK) {
        snprintf(msg, msglen, "--retire %s: reading the epochs to fold failed (%s): nothing "
                              "marked; run again", cfg->node, store_status_str(st));
        goto done;
    }
    size_t written = 0, nonzero = 0;
    uint64_t answers = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        size_t per = f.dst.q_count[qi] / f.dst.epochs;
        for (size_t i = 0; i < per; i++) {
            uint64_t val = f.sum[f.sum_first[qi] + i];
            if (i < 2u * ef->shards)
                answers += val; /* the layout starts with right and wrong */
            if (val == 0)
                continue; /* absent reads 0; zeros are checked below */
            const char *key = f.dst.key[f.dst.q_first[qi] + i];
            size_t klen = f.dst.len[f.dst.q_first[qi] + i];
            char num[24];
            int nl = snprintf(num, sizeof(num), "%" PRIu64, val);
            st = store_set(s, key, klen, num, (size_t)nl, ef->ttl_s);
            if (st != STORE_OK) {
                snprintf(msg, msglen, "--retire %s: writing %s failed (%s): nothing marked; run "
                                      "again", cfg->node, key, store_status_str(st));
                goto done;
            }
            nonzero++;
            if (++written % AGG_RETIRE_CHUNK == 0 && cfg->pause_ms > 0) {
                log_info("retire: %zu carry counters written", written);
                util_sleep_ms(cfg->pause_ms);
            }
        }
    }

    /* 4. What was folded has not moved, and the carry reads as summed. */
    st = read_sums(s, ef, &f, again);
    if (st != STORE_OK || memcmp(again, f.sum, f.n_sum * sizeof(*again)) != 0) {
        snprintf(msg, msglen,
                 st != STORE_OK ? "--retire %s: reading the folded epochs again failed: "
                                  "nothing marked; run again"
                                : "--retire %s: the folded epochs changed during the fold (an "
                                  "ingest still wrote in them): nothing marked; run again",
                 cfg->node);
        res = st != STORE_OK ? AGG_RETIRE_FAILED : AGG_RETIRE_WAIT;
        goto done;
    }
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        size_t first = f.dst.q_first[qi], per = f.dst.q_count[qi] / f.dst.epochs;
        st = store_mget_u64(s, f.dst.key + first, f.dst.len + first, per,
                            again + f.sum_first[qi], NULL);
        if (st != STORE_OK)
            break;
    }
    if (st != STORE_OK || memcmp(again, f.sum, f.n_sum * sizeof(*again)) != 0) {
        snprintf(msg, msglen, "--retire %s: the carry counters do not read as written (%s): "
                              "nothing marked; run again", cfg->node, store_status_str(st));
        goto done;
    }
    if (!pool_record_mark_folded(s, event, ef->ttl_s, into)) {
        snprintf(msg, msglen, "--retire %s: a node did not take the fold's marker: run again",
                 cfg->node);
        goto done;
    }
    snprintf(msg, msglen,
             "%s is retired from event %s's pool: epochs %" PRIu32 "-%" PRIu32 "%s are folded "
             "into epoch %" PRIu32 " (%zu carry counters, %" PRIu64 " answers). Restart "
             "livetally-aggregate (it then reads %zu keys a pass, not %zu), then stop %s and "
             "drop it from every --backend.",
             cfg->node, event, v.folded, into - 1, v.folded > 0 ? " (with the last fold)" : "",
             into, nonzero, answers, f.dst.n, f.src.n + f.dst.n / f.dst.epochs, cfg->node);
    res = AGG_RETIRE_DONE;
done:
    free(again);
    fold_free(&f);
    return res;
}
