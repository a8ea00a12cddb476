#include "agg_repair.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "keys.h"
#include "log.h"
#include "util.h"

#define INC_LEN 16 /* hex digits of an incarnation id */
#define RESETS_KEPT 8
#define WRITE_CHUNK 1000u

struct node_watch {
    char inc[INC_LEN + 1];  /* the incarnation known; "" before the first read */
    char seen[INC_LEN + 1]; /* the one read this pass */
    bool readable;          /* this pass */
    bool suspect;           /* seen differs from inc: a reset if the counters agree */
    uint64_t up_since_ms;   /* monotonic; 0 while unreadable */
    uint64_t down_since_wall_ms;
    size_t dropped;         /* copies on it read lower than the pass before */
    bool restoring;         /* replicas=1: this aggregator restores it (claim won) */
    size_t checked;         /* copies on it read this pass that had been read before */
    char name[STORE_HOST_MAX + 8]; /* host:port, for logs and warnings */
};

struct reset_note {
    uint32_t node;
    uint64_t at_wall_ms;
    bool restorer;    /* this aggregator restores it (replicas=1) */
    uint64_t keys;    /* restored by us, or repaired since */
    uint64_t counts;
};

struct agg_repair {
    const struct eventfile *ef;  /* (ref) */
    const struct agg_keys *keys; /* (ref) */
    size_t n_nodes;
    uint32_t replicas;
    struct node_watch *nodes;    /* owned, n_nodes */
    /* per copy (key i, replica x at i * replicas + x), owned */
    uint64_t *cur;
    uint64_t *prev;              /* the last value read, however long ago */
    uint8_t *node_of;            /* the copy's node; valid once read */
    uint8_t *cur_ok;             /* read this pass */
    uint8_t *prev_known;         /* prev holds a value */
    uint8_t *prev_fresh;         /* and it was read the pass before */
    uint64_t *restore_due;       /* per key, replicas=1: amount still to add back */
    struct store_replica_value *scratch; /* owned: one read run */
    size_t scratch_cap;
    struct store_node_write *writes;     /* owned: claims, restores, repairs */
    char (*claim_keys)[KEY_NODE_MAX];    /* owned, WRITE_CHUNK */
    size_t *write_copy;                  /* owned, WRITE_CHUNK: the copy each write is for */
    struct reset_note resets[RESETS_KEPT];
    size_t n_resets;             /* ever; resets[n % RESETS_KEPT] is the next slot */
    struct agg_repair_stats stats;
};

struct agg_repair *agg_repair_create(const struct eventfile *ef, const struct agg_keys *keys,
                                     const struct store *s)
{
    size_t n_nodes = store_node_count(s);
    uint32_t replicas = store_replicas(s);
    struct agg_repair *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->ef = ef;
    r->keys = keys;
    r->n_nodes = n_nodes;
    r->replicas = replicas == 0 ? 1 : replicas;
    size_t copies = (keys->n > 0 ? keys->n : 1) * r->replicas;
    r->nodes = calloc(n_nodes > 0 ? n_nodes : 1, sizeof(*r->nodes));
    r->cur = calloc(copies, sizeof(*r->cur));
    r->prev = calloc(copies, sizeof(*r->prev));
    r->node_of = calloc(copies, sizeof(*r->node_of));
    r->cur_ok = calloc(copies, sizeof(*r->cur_ok));
    r->prev_known = calloc(copies, sizeof(*r->prev_known));
    r->prev_fresh = calloc(copies, sizeof(*r->prev_fresh));
    r->restore_due = calloc(keys->n > 0 ? keys->n : 1, sizeof(*r->restore_due));
    r->writes = calloc(WRITE_CHUNK, sizeof(*r->writes));
    r->claim_keys = calloc(WRITE_CHUNK, sizeof(*r->claim_keys));
    r->write_copy = calloc(WRITE_CHUNK, sizeof(*r->write_copy));
    if (r->nodes == NULL || r->cur == NULL || r->prev == NULL || r->node_of == NULL ||
        r->cur_ok == NULL || r->prev_known == NULL || r->prev_fresh == NULL ||
        r->restore_due == NULL ||
        r->writes == NULL || r->claim_keys == NULL || r->write_copy == NULL) {
        agg_repair_free(r);
        return NULL;
    }
    for (size_t k = 0; k < n_nodes; k++) {
        const struct store_node *sn = store_node_at(s, k);
        snprintf(r->nodes[k].name, sizeof(r->nodes[k].name), "%s:%u", sn->host,
                 (unsigned)sn->port);
    }
    return r;
}

void agg_repair_free(struct agg_repair *r)
{
    if (r == NULL)
        return;
    free(r->write_copy);
    free(r->claim_keys);
    free(r->writes);
    free(r->scratch);
    free(r->restore_due);
    free(r->prev_fresh);
    free(r->prev_known);
    free(r->cur_ok);
    free(r->node_of);
    free(r->prev);
    free(r->cur);
    free(r->nodes);
    free(r);
}

void agg_repair_get_stats(const struct agg_repair *r, struct agg_repair_stats *out)
{
    *out = r->stats;
}

/* ---- incarnations ---- */

static bool parse_inc(const char *val, size_t len, char *out)
{
    if (len != INC_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = val[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    memcpy(out, val, INC_LEN);
    out[INC_LEN] = '\0';
    return true;
}

static void new_inc(char *out)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof(x), 0) != (ssize_t)sizeof(x))
        x = util_mono_us() ^ ((uint64_t)util_wall_ms() << 20);
    snprintf(out, INC_LEN + 1, "%016" PRIx64, x);
}

/* The id node k holds now, adding one when it has none; false when the
 * node could not be read. */
static bool read_inc(struct agg_repair *r, struct store *s, uint32_t k, char *out)
{
    char key[KEY_NODE_MAX];
    size_t klen = key_node_incarnation(key, r->ef->name);
    for (int attempt = 0; attempt < 2; attempt++) {
        char *val = NULL;
        size_t vlen = 0;
        enum store_status st = store_node_get(s, k, key, klen, &val, &vlen);
        if (st == STORE_OK) {
            bool ok = parse_inc(val, vlen, out);
            free(val);
            if (!ok)
                log_warn("store node incarnation is not ours, node not watched event=%s",
                         r->ef->name);
            return ok;
        }
        if (st != STORE_NOTFOUND)
            return false;
        /* Missing: add a new one. Two aggregators meet on the add; the
         * loser reads the winner's. It carries the event's TTL like every
         * key: an id that expired while the counters live reads as a new
         * incarnation, which the counters (none lower) tell from a reset. */
        char id[INC_LEN + 1];
        new_inc(id);
        struct store_node_write w = {.key = key, .keylen = klen, .val = id, .vallen = INC_LEN,
                                     .node = k};
        store_node_add(s, &w, 1, r->ef->ttl_s);
        if (w.status == STORE_OK) {
            memcpy(out, id, INC_LEN + 1);
            return true;
        }
        if (w.status != STORE_EXISTS)
            return false;
    }
    return false;
}

bool agg_repair_check_nodes(struct agg_repair *r, struct store *s, uint64_t mono_ms)
{
    bool any_new = false;
    r->stats.nodes_down = 0;
    for (uint32_t k = 0; k < r->n_nodes; k++) {
        struct node_watch *w = &r->nodes[k];
        w->dropped = 0;
        w->checked = 0;
        w->readable = read_inc(r, s, k, w->seen);
        if (!w->readable) {
            if (w->up_since_ms != 0 || w->down_since_wall_ms == 0)
                w->down_since_wall_ms = util_wall_ms();
            w->up_since_ms = 0;
            r->stats.nodes_down++;
            continue;
        }
        if (w->up_since_ms == 0)
            w->up_since_ms = mono_ms;
        w->down_since_wall_ms = 0;
        if (w->inc[0] == '\0') {
            memcpy(w->inc, w->seen, sizeof(w->inc));
        } else if (strcmp(w->inc, w->seen) != 0) {
            w->suspect = true;
            any_new = true;
        }
    }
    return any_new;
}

/* ---- reads ---- */

enum store_status agg_repair_read(struct agg_repair *r, struct store *s, size_t first, size_t n,
                                  uint64_t *read)
{
    size_t rn = r->replicas;
    if (n * rn > r->scratch_cap) {
        struct store_replica_value *p = realloc(r->scratch, n * rn * sizeof(*p));
        if (p == NULL)
            return STORE_NOMEM;
        r->scratch = p;
        r->scratch_cap = n * rn;
    }
    store_mget_replicas(s, r->keys->key + first, r->keys->len + first, n, r->scratch);
    enum store_status status = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        const struct store_replica_value *v = r->scratch + i * rn;
        size_t c = (first + i) * rn;
        bool any = false;
        uint64_t max = 0;
        for (size_t x = 0; x < rn; x++) {
            r->node_of[c + x] = (uint8_t)v[x].node;
            r->cur_ok[c + x] = v[x].status == STORE_OK;
            r->cur[c + x] = v[x].value;
            if (v[x].status == STORE_OK) {
                any = true;
                if (v[x].value > max)
                    max = v[x].value;
            } else if (v[x].status != STORE_UNAVAILABLE && status == STORE_OK) {
                status = v[x].status; /* answered, with a value that is not a counter */
            }
        }
        read[first + i] = max;
        if (!any && status == STORE_OK)
            status = STORE_UNAVAILABLE;
    }
    return status;
}

/* ---- after the reads ---- */

static void note_reset(struct agg_repair *r, uint32_t k, uint64_t wall_ms, bool restorer)
{
    struct reset_note *n = &r->resets[r->n_resets % RESETS_KEPT];
    *n = (struct reset_note){.node = k, .at_wall_ms = wall_ms, .restorer = restorer};
    r->n_resets++;
}

static struct reset_note *last_reset(struct agg_repair *r, uint32_t k)
{
    size_t kept = r->n_resets < RESETS_KEPT ? r->n_resets : RESETS_KEPT;
    for (size_t i = 1; i <= kept; i++) {
        struct reset_note *n = &r->resets[(r->n_resets - i) % RESETS_KEPT];
        if (n->node == k)
            return n;
    }
    return NULL;
}

/* Counts, per node, the copies read this pass that had a value before, and
 * those of them lower than it (the evidence of a reset). */
static void count_drops(struct agg_repair *r, const bool *reading)
{
    size_t rn = r->replicas;
    for (uint32_t qi = 0; qi < r->ef->n_questions; qi++) {
        if (!reading[qi])
            continue;
        size_t end = (r->keys->q_first[qi] + r->keys->q_count[qi]) * rn;
        for (size_t c = r->keys->q_first[qi] * rn; c < end; c++) {
            if (!r->cur_ok[c] || !r->prev_known[c] || r->node_of[c] >= r->n_nodes)
                continue;
            struct node_watch *w = &r->nodes[r->node_of[c]];
            w->checked++;
            if (r->cur[c] < r->prev[c])
                w->dropped++;
        }
    }
}

/* replicas=1: claims the restore of node k; on success fixes every amount. */
static void claim_restore(struct agg_repair *r, struct store *s, uint32_t k, const uint64_t *kept)
{
    char key[KEY_NODE_MAX];
    size_t klen = key_node_claim(key, r->ef->name, r->nodes[k].seen);
    struct store_node_write w = {.key = key, .keylen = klen, .val = "1", .vallen = 1, .node = k};
    store_node_add(s, &w, 1, r->ef->ttl_s);
    if (w.status == STORE_EXISTS) {
        log_warn("store node reset, restored by another aggregator node=%s event=%s",
                 r->nodes[k].name, r->ef->name);
        return;
    }
    if (w.status != STORE_OK) {
        /* Unreadable again: the next pass finds it as it is then. */
        r->nodes[k].suspect = true;
        return;
    }
    size_t due = 0;
    for (size_t i = 0; i < r->keys->n; i++) {
        if (r->node_of[i] == k && kept[i] > 0) {
            r->restore_due[i] = kept[i];
            due++;
        } else if (r->node_of[i] == k) {
            r->restore_due[i] = 0;
        }
    }
    r->nodes[k].restoring = true;
    log_warn("store node reset, restoring its counters node=%s counters=%zu event=%s",
             r->nodes[k].name, due, r->ef->name);
}

/* Sends the restores still due on the nodes this aggregator restores. */
static void run_restores(struct agg_repair *r, struct store *s, const bool *reading,
                         uint64_t *read)
{
    bool any = false;
    for (uint32_t k = 0; k < r->n_nodes; k++)
        any = any || r->nodes[k].restoring;
    if (!any)
        return;
    size_t n = 0;
    for (size_t i = 0; i <= r->keys->n; i++) {
        bool flush = n == WRITE_CHUNK || (i == r->keys->n && n > 0);
        if (flush) {
            store_node_incr(s, r->writes, n, r->ef->ttl_s);
            for (size_t j = 0; j < n; j++) {
                size_t key = r->write_copy[j];
                struct store_node_write *w = &r->writes[j];
                if (w->status == STORE_UNAVAILABLE)
                    continue; /* not sent: again next pass */
                if (w->status == STORE_OK) {
                    r->stats.keys_restored++;
                    r->stats.counts_restored += w->delta;
                    r->cur[key] += w->delta;
                    struct reset_note *note = last_reset(r, w->node);
                    if (note != NULL) {
                        note->keys++;
                        note->counts += w->delta;
                    }
                    uint32_t qi = 0;
                    while (qi + 1 < r->ef->n_questions && r->keys->q_first[qi + 1] <= key)
                        qi++;
                    if (reading[qi])
                        read[key] += w->delta;
                } else {
                    r->stats.restore_lost++;
                    log_error("store node restore outcome unknown, not resent key=%s "
                              "amount=%" PRIu64 " event=%s",
                              r->keys->key[key], w->delta, r->ef->name);
                }
                r->restore_due[key] = 0;
            }
            n = 0;
        }
        if (i == r->keys->n)
            break;
        uint32_t k = r->node_of[i];
        if (r->restore_due[i] == 0 || k >= r->n_nodes || !r->nodes[k].restoring ||
            !r->nodes[k].readable)
            continue;
        r->writes[n] = (struct store_node_write){.key = r->keys->key[i],
                                                 .keylen = r->keys->len[i],
                                                 .delta = r->restore_due[i],
                                                 .node = k};
        r->write_copy[n] = i;
        n++;
    }
    for (uint32_t k = 0; k < r->n_nodes; k++) {
        if (!r->nodes[k].restoring)
            continue;
        bool left = false;
        for (size_t i = 0; i < r->keys->n && !left; i++)
            left = r->node_of[i] == k && r->restore_due[i] > 0;
        r->nodes[k].restoring = left;
    }
}

/* replicas>=2: raises the quiet copies that are behind; marks the
 * questions that keep one behind. */
static void run_repairs(struct agg_repair *r, struct store *s, const bool *reading,
                        bool *lagging, uint64_t mono_ms)
{
    size_t rn = r->replicas;
    size_t n = 0, repaired_budget = AGG_REPAIR_MAX;
    uint64_t backlog = 0;
    for (uint32_t qi = 0; qi < r->ef->n_questions; qi++) {
        if (!reading[qi])
            continue;
        size_t first = r->keys->q_first[qi], end = first + r->keys->q_count[qi];
        for (size_t i = first; i <= end; i++) {
            bool flush = n == WRITE_CHUNK || (i == end && n > 0);
            if (flush) {
                /* Claims first: the copy is raised only by the aggregator
                 * whose add landed. */
                store_node_add(s, r->writes, n, r->ef->ttl_s);
                size_t m = 0;
                for (size_t j = 0; j < n; j++) {
                    struct store_node_write *w = &r->writes[j];
                    if (w->status != STORE_OK) {
                        if (w->status != STORE_EXISTS)
                            backlog++;
                        continue;
                    }
                    r->writes[m] = (struct store_node_write){
                        .key = r->keys->key[r->write_copy[j] / rn],
                        .keylen = r->keys->len[r->write_copy[j] / rn],
                        .delta = w->delta,
                        .node = w->node};
                    r->write_copy[m++] = r->write_copy[j];
                }
                store_node_incr(s, r->writes, m, r->ef->ttl_s);
                for (size_t j = 0; j < m; j++) {
                    struct store_node_write *w = &r->writes[j];
                    if (w->status == STORE_OK) {
                        r->stats.keys_repaired++;
                        struct reset_note *note = last_reset(r, w->node);
                        if (note != NULL) {
                            note->keys++;
                            note->counts += w->delta;
                        }
                    } else {
                        backlog++;
                        log_warn("read repair failed status=%s key=%s event=%s",
                                 store_status_str(w->status),
                                 r->keys->key[r->write_copy[j] / rn], r->ef->name);
                    }
                }
                n = 0;
            }
            if (i == end)
                break;
            size_t c = i * rn;
            uint64_t max = 0;
            bool quiet = true;
            for (size_t x = 0; x < rn; x++) {
                if (!r->cur_ok[c + x]) {
                    quiet = false;
                    continue;
                }
                if (r->cur[c + x] > max)
                    max = r->cur[c + x];
                if (!r->prev_fresh[c + x] || r->prev[c + x] != r->cur[c + x])
                    quiet = false;
            }
            for (size_t x = 0; x < rn; x++) {
                if (!r->cur_ok[c + x] || r->cur[c + x] >= max)
                    continue;
                lagging[qi] = true;
                uint32_t k = r->node_of[c + x];
                const struct node_watch *w = &r->nodes[k];
                if (!quiet || repaired_budget == 0 || !w->readable || w->suspect ||
                    mono_ms < w->up_since_ms + AGG_REPAIR_UP_MS) {
                    backlog++;
                    continue;
                }
                repaired_budget--;
                size_t klen = key_repair_claim(r->claim_keys[n], r->ef->name, w->inc,
                                               r->cur[c + x], r->keys->key[i]);
                r->writes[n] = (struct store_node_write){.key = r->claim_keys[n],
                                                         .keylen = klen,
                                                         .val = "1",
                                                         .vallen = 1,
                                                         .delta = max - r->cur[c + x],
                                                         .node = k};
                r->write_copy[n++] = c + x;
            }
        }
    }
    r->stats.repair_backlog = backlog;
}

void agg_repair_settle(struct agg_repair *r, struct store *s, const bool *reading,
                       const uint64_t *kept, uint64_t *read, bool *lagging, uint64_t wall_ms,
                       uint64_t mono_ms)
{
    count_drops(r, reading);
    for (uint32_t k = 0; k < r->n_nodes; k++) {
        struct node_watch *w = &r->nodes[k];
        if (!w->readable)
            continue;
        if (!w->suspect && w->dropped > 0) {
            /* Lower without a new id yet: the restart may have come during
             * this pass's reads. Look again now rather than next pass, when
             * the drop would be history. */
            char again[INC_LEN + 1];
            if (read_inc(r, s, k, again) && strcmp(again, w->inc) != 0) {
                memcpy(w->seen, again, sizeof(w->seen));
                w->suspect = true;
            }
        }
        if (!w->suspect || w->checked == 0)
            continue; /* nothing read on it to tell: decide next pass */
        w->suspect = false;
        memcpy(w->inc, w->seen, sizeof(w->inc));
        if (w->dropped == 0) {
            log_info("store node incarnation renewed, counters intact node=%s checked=%zu "
                     "event=%s",
                     r->nodes[k].name, w->checked, r->ef->name);
            continue;
        }
        r->stats.node_resets++;
        w->up_since_ms = mono_ms;
        log_warn("store node came back empty node=%s counters_lower=%zu replicas=%u event=%s",
                 r->nodes[k].name, w->dropped, (unsigned)r->replicas,
                 r->ef->name);
        note_reset(r, k, wall_ms, false);
        if (r->replicas == 1) {
            claim_restore(r, s, k, kept);
            r->resets[(r->n_resets - 1) % RESETS_KEPT].restorer = w->restoring;
        }
    }
    if (r->replicas == 1)
        run_restores(r, s, reading, read);
    else
        run_repairs(r, s, reading, lagging, mono_ms);

    size_t rn = r->replicas;
    for (uint32_t qi = 0; qi < r->ef->n_questions; qi++) {
        if (!reading[qi])
            continue;
        size_t from = r->keys->q_first[qi] * rn;
        size_t count = r->keys->q_count[qi] * rn;
        for (size_t c = from; c < from + count; c++) {
            r->prev_fresh[c] = r->cur_ok[c];
            if (r->cur_ok[c]) {
                r->prev[c] = r->cur[c];
                r->prev_known[c] = 1;
            }
        }
    }
}

size_t agg_repair_warnings(const struct agg_repair *r, char (*out)[AGG_REPAIR_WARNING_MAX],
                           size_t max, uint64_t wall_ms)
{
    size_t n = 0;
    char at[40];
    size_t kept = r->n_resets < RESETS_KEPT ? r->n_resets : RESETS_KEPT;
    for (size_t i = 1; i <= kept && n < max; i++) {
        const struct reset_note *note = &r->resets[(r->n_resets - i) % RESETS_KEPT];
        if (wall_ms > note->at_wall_ms + AGG_REPAIR_WARN_MS)
            continue;
        util_format_iso8601(note->at_wall_ms, at, sizeof(at));
        const char *name = r->nodes[note->node].name;
        if (r->replicas == 1 && note->restorer)
            snprintf(out[n++], AGG_REPAIR_WARNING_MAX,
                     "store node %s was reset (it came back empty) at %s: %" PRIu64
                     " counters (%" PRIu64 " counts) restored to their values of the pass "
                     "before; increments it took after that pass are lost",
                     name, at, note->keys, note->counts);
        else if (r->replicas == 1)
            snprintf(out[n++], AGG_REPAIR_WARNING_MAX,
                     "store node %s was reset (it came back empty) at %s: another aggregator "
                     "restores its counters",
                     name, at);
        else
            snprintf(out[n++], AGG_REPAIR_WARNING_MAX,
                     "store node %s was reset (it came back empty) at %s: its copies are "
                     "rewritten from the other replicas (%" PRIu64 " repaired so far, %" PRIu64
                     " copies behind in all)",
                     name, at, note->keys, r->stats.repair_backlog);
    }
    for (uint32_t k = 0; k < r->n_nodes && n < max; k++) {
        if (r->nodes[k].readable || r->nodes[k].down_since_wall_ms == 0)
            continue;
        util_format_iso8601(r->nodes[k].down_since_wall_ms, at, sizeof(at));
        snprintf(out[n++], AGG_REPAIR_WARNING_MAX,
                 r->replicas > 1 ? "store node %s unreachable since %s: its replicas hold the "
                                   "counts"
                                 : "store node %s unreachable since %s: its counters are not "
                                   "read, totals hold their last values",
                 r->nodes[k].name, at);
    }
    return n;
}
