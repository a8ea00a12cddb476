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

enum restore_state {
    RS_NONE = 0,
    RS_CLAIM, /* reset confirmed, the claim not decided yet */
    RS_OWNED, /* the claim is ours: restore what is due on this incarnation */
    RS_DONE,  /* ours, every restore sent, the node told (key_node_restored) */
};

struct node_watch {
    char inc[INC_LEN + 1];  /* the incarnation known; "" before the first read */
    char seen[INC_LEN + 1]; /* the one read this pass */
    bool readable;          /* this pass */
    bool read_failed;       /* a copy on it could not be read this pass */
    bool suspect;           /* seen differs from inc: a reset if the counters agree */
    bool validated;         /* its id read again after this pass's reads: unchanged */
    uint64_t up_since_ms;   /* monotonic; 0 while unreadable */
    uint64_t down_since_wall_ms;
    size_t dropped;         /* copies on it read lower than the last time */
    size_t checked;         /* copies on it read this pass that had been read before */
    enum restore_state rs;  /* replicas=1 */
    char claimed[INC_LEN + 1]; /* the incarnation rs is about */
    bool was_reset;         /* came back empty since this aggregator started:
                             * its copies are repaired (replicas >= 2) */
    bool restored;          /* replicas >= 2: its restore is done (ours, or the
                             * marker of the aggregator that won the claim) */
    uint64_t reset_mono_ms; /* when the last reset was confirmed */
    char name[STORE_HOST_MAX + 8]; /* host:port, for logs and warnings */
};

struct reset_note {
    uint32_t node;
    uint64_t at_wall_ms;
    bool restorer;    /* this aggregator restores it (replicas=1) */
    uint64_t keys;    /* restored by us, or repaired since */
    uint64_t counts;
};

/* A copy whose repair claim we won but whose increment was not sent: sent
 * again, without a new claim, while the copy still reads the claimed value. */
struct owed_repair {
    size_t copy;
    uint64_t value;
    uint64_t delta;
};

struct agg_repair {
    const struct eventfile *ef;  /* (ref) */
    const struct agg_keys *keys; /* (ref) */
    size_t n_nodes;
    uint32_t replicas;
    char self[INC_LEN + 1];      /* this aggregator's id: the value of its claims */
    struct node_watch *nodes;    /* owned, n_nodes */
    /* per copy (key i, replica x at i * replicas + x), owned */
    uint64_t *cur;
    uint64_t *prev;              /* the last value read, however long ago */
    uint64_t *stable_since;      /* monotonic ms since the copy last changed or failed */
    uint8_t *node_of;            /* the copy's node; valid once read */
    uint8_t *cur_ok;             /* read this pass */
    uint8_t *prev_known;         /* prev holds a value */
    uint8_t *prev_fresh;         /* and it was read the pass before */
    /* per copy, replicas>=2: its last value read in a pass that began and
     * ended on the same incarnation of its node (what a reset is restored
     * to: prev may hold a read of the node back empty taken before its new
     * id was seen, with hints already replayed to it) */
    uint64_t *base;
    uint8_t *base_known;
    uint32_t *key_q;             /* per key: its question's index */
    uint64_t *restore_due;       /* per copy: amount still to add back after a reset */
    uint8_t *due_fresh;          /* per copy: due since this pass, and read before the loss */
    struct store_replica_value *scratch; /* owned: one read run */
    size_t scratch_cap;
    struct store_node_write *writes;     /* owned, WRITE_CHUNK: claims, restores, repairs */
    char (*claim_keys)[KEY_NODE_MAX];    /* owned, WRITE_CHUNK */
    size_t *write_copy;                  /* owned, WRITE_CHUNK: the copy each write is for */
    struct owed_repair *owed;            /* owned, WRITE_CHUNK */
    size_t n_owed;
    bool full_read;              /* the next pass reads every question */
    struct reset_note resets[RESETS_KEPT];
    size_t n_resets;             /* ever; resets[n % RESETS_KEPT] is the next slot */
    struct agg_repair_stats stats;
};

static void new_inc(char *out);

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
    new_inc(r->self);
    size_t nk = keys->n > 0 ? keys->n : 1;
    size_t copies = nk * r->replicas;
    r->nodes = calloc(n_nodes > 0 ? n_nodes : 1, sizeof(*r->nodes));
    r->cur = calloc(copies, sizeof(*r->cur));
    r->prev = calloc(copies, sizeof(*r->prev));
    r->stable_since = calloc(copies, sizeof(*r->stable_since));
    r->node_of = calloc(copies, sizeof(*r->node_of));
    r->cur_ok = calloc(copies, sizeof(*r->cur_ok));
    r->prev_known = calloc(copies, sizeof(*r->prev_known));
    r->prev_fresh = calloc(copies, sizeof(*r->prev_fresh));
    r->base = calloc(copies, sizeof(*r->base));
    r->base_known = calloc(copies, sizeof(*r->base_known));
    r->key_q = calloc(nk, sizeof(*r->key_q));
    r->restore_due = calloc(copies, sizeof(*r->restore_due));
    r->due_fresh = calloc(copies, sizeof(*r->due_fresh));
    r->writes = calloc(WRITE_CHUNK, sizeof(*r->writes));
    r->claim_keys = calloc(WRITE_CHUNK, sizeof(*r->claim_keys));
    r->write_copy = calloc(WRITE_CHUNK, sizeof(*r->write_copy));
    r->owed = calloc(WRITE_CHUNK, sizeof(*r->owed));
    if (r->nodes == NULL || r->cur == NULL || r->prev == NULL || r->stable_since == NULL ||
        r->node_of == NULL || r->cur_ok == NULL || r->prev_known == NULL ||
        r->prev_fresh == NULL || r->base == NULL || r->base_known == NULL || r->key_q == NULL ||
        r->restore_due == NULL ||
        r->due_fresh == NULL ||
        r->writes == NULL || r->claim_keys == NULL || r->write_copy == NULL ||
        r->owed == NULL) {
        agg_repair_free(r);
        return NULL;
    }
    for (uint32_t qi = 0; qi < ef->n_questions; qi++)
        for (size_t i = keys->q_first[qi]; i < keys->q_first[qi] + keys->q_count[qi]; i++)
            r->key_q[i] = qi;
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
    free(r->owed);
    free(r->write_copy);
    free(r->claim_keys);
    free(r->writes);
    free(r->scratch);
    free(r->due_fresh);
    free(r->restore_due);
    free(r->key_q);
    free(r->prev_fresh);
    free(r->base);
    free(r->base_known);
    free(r->prev_known);
    free(r->cur_ok);
    free(r->node_of);
    free(r->stable_since);
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

/* The id node k holds now, adding one when it has none. false when the node
 * could not be read. A value that is not an id (not ours) reads as the id
 * known, so it neither raises a reset nor hides the node. */
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
            if (!ok) {
                log_warn("store node incarnation is not ours, node not watched node=%s event=%s",
                         r->nodes[k].name, r->ef->name);
                memcpy(out, r->nodes[k].inc, INC_LEN + 1);
            }
            return true;
        }
        if (st != STORE_NOTFOUND)
            return false;
        /* Missing: add a new one. Two aggregators meet on the add; the
         * loser reads the winner's. It never expires (the one key of ours
         * without the event's TTL, a few bytes per node): an id that expired
         * while counters live would look like a restart. It is read every
         * pass, so an LRU keeps it. */
        char id[INC_LEN + 1];
        new_inc(id);
        struct store_node_write w = {.key = key, .keylen = klen, .val = id, .vallen = INC_LEN,
                                     .node = k};
        store_node_add(s, &w, 1, 0);
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
    bool read_all = r->full_read;
    r->full_read = false;
    r->stats.nodes_down = 0;
    for (uint32_t k = 0; k < r->n_nodes; k++) {
        struct node_watch *w = &r->nodes[k];
        w->dropped = 0;
        w->validated = false;
        w->checked = 0;
        w->read_failed = false;
        w->readable = read_inc(r, s, k, w->seen);
        if (!w->readable) {
            if (w->up_since_ms != 0 || w->down_since_wall_ms == 0)
                w->down_since_wall_ms = util_wall_ms();
            w->up_since_ms = 0;
            r->stats.nodes_down++;
            continue;
        }
        if (w->up_since_ms == 0) {
            /* Back after a failure: it may have missed writes of questions
             * that settled meanwhile, so every question is read (and its
             * copies repaired) again. */
            w->up_since_ms = mono_ms;
            read_all = read_all || w->inc[0] != '\0';
        }
        w->down_since_wall_ms = 0;
        if (w->inc[0] == '\0') {
            memcpy(w->inc, w->seen, sizeof(w->inc));
        } else if (strcmp(w->inc, w->seen) != 0) {
            w->suspect = true;
            read_all = true;
        }
    }
    return read_all;
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
    enum store_status got =
        store_mget_replicas(s, r->keys->key + first, r->keys->len + first, n, r->scratch);
    if (got == STORE_NOMEM)
        return STORE_NOMEM;
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
                continue;
            }
            if (v[x].node < r->n_nodes)
                r->nodes[v[x].node].read_failed = true;
            if (v[x].status != STORE_UNAVAILABLE && status == STORE_OK)
                status = v[x].status; /* answered, with a value that is not a counter */
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

/* A copy read this pass lower than the last time it was read. */
static bool copy_dropped(const struct agg_repair *r, size_t c)
{
    return r->cur_ok[c] && r->prev_known[c] && r->cur[c] < r->prev[c];
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

/* Every copy on node k is due the value read before the reset (replicas=1
 * kept, the aggregator's count; replicas>=2 the copy's base),
 * fixed now: what later reads raise must not be added. All of them, not
 * only those that read lower: a copy written again since the restart may
 * already read higher than its old value, and lost it all the same. A copy
 * that did not read lower this pass may have been read before the loss:
 * this pass's figure is not raised for it (the next read has the restored
 * value). */
static void mark_due(struct agg_repair *r, uint32_t k, const uint64_t *kept)
{
    size_t rn = r->replicas;
    for (size_t c = 0; c < r->keys->n * rn; c++) {
        if (r->node_of[c] != k)
            continue;
        uint64_t was = rn == 1 ? kept[c] : r->base_known[c] ? r->base[c] : 0;
        if (was == 0)
            continue;
        r->restore_due[c] = was;
        r->due_fresh[c] = !copy_dropped(r, c);
    }
}

static void clear_due(struct agg_repair *r, uint32_t k)
{
    for (size_t c = 0; c < r->keys->n * r->replicas; c++)
        if (r->node_of[c] == k)
            r->restore_due[c] = 0;
}

static size_t count_due(const struct agg_repair *r, uint32_t k)
{
    size_t due = 0;
    for (size_t c = 0; c < r->keys->n * r->replicas; c++)
        due += r->node_of[c] == k && r->restore_due[c] > 0;
    return due;
}

/* Decides the claim of node k's restore. The claim's value is
 * this aggregator's id, so an add whose reply was lost is read back. */
static void claim_restore(struct agg_repair *r, struct store *s, uint32_t k)
{
    struct node_watch *w = &r->nodes[k];
    char key[KEY_NODE_MAX];
    size_t klen = key_node_claim(key, r->ef->name, w->claimed);
    struct store_node_write a = {.key = key, .keylen = klen, .val = r->self,
                                 .vallen = INC_LEN, .node = k};
    store_node_add(s, &a, 1, r->ef->ttl_s);
    bool ours = a.status == STORE_OK;
    if (a.status == STORE_EXISTS || a.status == STORE_ERROR) {
        char *val = NULL;
        size_t vlen = 0;
        enum store_status st = store_node_get(s, k, key, klen, &val, &vlen);
        if (st == STORE_OK)
            ours = vlen == INC_LEN && memcmp(val, r->self, INC_LEN) == 0;
        free(val);
        if (st != STORE_OK && st != STORE_NOTFOUND)
            return; /* undecided: again next pass */
        if (st == STORE_NOTFOUND)
            return; /* our add did not land: again next pass */
    } else if (!ours) {
        return; /* not reached: again next pass */
    }
    struct reset_note *note = last_reset(r, k);
    if (!ours) {
        w->rs = RS_NONE;
        clear_due(r, k);
        log_warn("store node reset, restored by another aggregator node=%s event=%s", w->name,
                 r->ef->name);
        return;
    }
    w->rs = RS_OWNED;
    if (note != NULL)
        note->restorer = true;
    size_t due = count_due(r, k);
    log_warn("store node reset, restoring its counters node=%s counters=%zu event=%s", w->name,
             due, r->ef->name);
}

/* The node still holds the incarnation the restore is for. */
static bool still_claimed(struct agg_repair *r, struct store *s, uint32_t k)
{
    char now[INC_LEN + 1];
    return read_inc(r, s, k, now) && strcmp(now, r->nodes[k].claimed) == 0;
}

/* Sends node k's restores that are due, a chunk at a time, each after
 * checking that the node is still the incarnation claimed (a restore sent
 * to a node that restarted again would be restored a second time). */
static void run_restores(struct agg_repair *r, struct store *s, uint32_t k, const bool *reading,
                         uint64_t *read)
{
    size_t n = 0, rn = r->replicas, copies = r->keys->n * rn;
    for (size_t i = 0; i <= copies; i++) {
        bool flush = n == WRITE_CHUNK || (i == copies && n > 0);
        if (flush) {
            if (!still_claimed(r, s, k))
                return; /* next pass: unreadable, or a new reset */
            store_node_incr(s, r->writes, n, r->ef->ttl_s);
            for (size_t j = 0; j < n; j++) {
                size_t c = r->write_copy[j], key = c / rn;
                struct store_node_write *w = &r->writes[j];
                if (w->status == STORE_UNAVAILABLE || w->status == STORE_NOMEM)
                    continue; /* not sent: again next pass */
                if (w->status == STORE_OK) {
                    r->stats.keys_restored++;
                    r->stats.counts_restored += w->delta;
                    struct reset_note *note = last_reset(r, k);
                    if (note != NULL) {
                        note->keys++;
                        note->counts += w->delta;
                    }
                    if (reading[r->key_q[key]] && !r->due_fresh[c]) {
                        /* read is the largest copy: this one's new value
                         * counts as much as it exceeds the others */
                        r->cur[c] += w->delta;
                        if (r->cur[c] > read[key])
                            read[key] = r->cur[c];
                    }
                } else {
                    r->stats.restore_lost++;
                    log_error("store node restore outcome unknown, not resent node=%s key=%s "
                              "amount=%" PRIu64 " event=%s",
                              r->nodes[k].name, r->keys->key[key], w->delta, r->ef->name);
                }
                r->restore_due[c] = 0;
            }
            n = 0;
        }
        if (i == copies)
            break;
        if (r->restore_due[i] == 0 || r->node_of[i] != k)
            continue;
        r->writes[n] = (struct store_node_write){.key = r->keys->key[i / rn],
                                                 .keylen = r->keys->len[i / rn],
                                                 .delta = r->restore_due[i],
                                                 .node = k};
        r->write_copy[n] = i;
        n++;
    }
}

/* replicas>=2: tells the node that its restore is done, so that the other
 * aggregators may repair its copies (a raise to a replica's value before
 * the restore landed would count the restored amount twice). */
static void finish_restore(struct agg_repair *r, struct store *s, uint32_t k)
{
    struct node_watch *w = &r->nodes[k];
    char key[KEY_NODE_MAX];
    size_t klen = key_node_restored(key, r->ef->name, w->claimed);
    struct store_node_write a = {.key = key, .keylen = klen, .val = r->self,
                                 .vallen = INC_LEN, .node = k};
    store_node_add(s, &a, 1, r->ef->ttl_s);
    if (a.status != STORE_OK && a.status != STORE_EXISTS)
        return; /* again next pass */
    w->rs = RS_DONE;
    w->restored = true;
}

/* replicas>=2, another aggregator restores node k: its copies wait for its
 * marker, or AGG_REPAIR_TAKEOVER_MS (that aggregator died mid-restore). */
static void await_restore(struct agg_repair *r, struct store *s, uint32_t k, uint64_t mono_ms)
{
    struct node_watch *w = &r->nodes[k];
    char key[KEY_NODE_MAX];
    size_t klen = key_node_restored(key, r->ef->name, w->inc);
    char *val = NULL;
    size_t vlen = 0;
    enum store_status st = store_node_get(s, k, key, klen, &val, &vlen);
    free(val);
    if (st == STORE_OK) {
        w->restored = true;
    } else if (mono_ms >= w->reset_mono_ms + AGG_REPAIR_TAKEOVER_MS) {
        w->restored = true;
        log_warn("store node restore by another aggregator not confirmed in %u ms, its copies "
                 "are repaired from their replicas now node=%s event=%s",
                 AGG_REPAIR_TAKEOVER_MS, w->name, r->ef->name);
    }
}

/* replicas>=2: the claims in writes[0..n) (delta: the raise each is for),
 * then the raises whose claim is ours. */
static uint64_t send_repairs(struct agg_repair *r, struct store *s, size_t n)
{
    size_t rn = r->replicas;
    uint64_t behind = 0;
    store_node_add(s, r->writes, n, r->ef->ttl_s);
    size_t m = 0;
    for (size_t j = 0; j < n; j++) {
        struct store_node_write *w = &r->writes[j];
        if (w->status != STORE_OK) {
            /* EXISTS: another aggregator raises it. Otherwise the claim may
             * or may not be there; the next quiet pass tells. */
            if (w->status != STORE_EXISTS)
                behind++;
            continue;
        }
        size_t c = r->write_copy[j];
        r->writes[m] = (struct store_node_write){.key = r->keys->key[c / rn],
                                                 .keylen = r->keys->len[c / rn],
                                                 .delta = w->delta,
                                                 .node = w->node};
        r->write_copy[m++] = c;
    }
    store_node_incr(s, r->writes, m, r->ef->ttl_s);
    for (size_t j = 0; j < m; j++) {
        struct store_node_write *w = &r->writes[j];
        size_t c = r->write_copy[j];
        if (w->status == STORE_OK) {
            r->stats.keys_repaired++;
            struct reset_note *note = last_reset(r, w->node);
            if (note != NULL) {
                note->keys++;
                note->counts += w->delta;
            }
            continue;
        }
        behind++;
        if ((w->status == STORE_UNAVAILABLE || w->status == STORE_NOMEM) &&
            r->n_owed < WRITE_CHUNK)
            r->owed[r->n_owed++] = (struct owed_repair){.copy = c, .value = r->cur[c],
                                                        .delta = w->delta};
        else
            log_warn("read repair outcome unknown, not resent status=%s key=%s event=%s",
                     store_status_str(w->status), r->keys->key[c / rn], r->ef->name);
    }
    return behind;
}

/* Raises sent again whose claim we won while their copy still reads the
 * claimed value (nothing else raised it meanwhile). */
static void resend_owed(struct agg_repair *r, struct store *s, const bool *reading)
{
    size_t rn = r->replicas, n = 0, keep = 0;
    struct owed_repair sent[WRITE_CHUNK];
    for (size_t j = 0; j < r->n_owed; j++) {
        const struct owed_repair o = r->owed[j];
        if (!reading[r->key_q[o.copy / rn]] || !r->cur_ok[o.copy]) {
            r->owed[keep++] = o; /* not read now: later */
            continue;
        }
        if (r->cur[o.copy] != o.value)
            continue; /* changed: the next stable read decides again */
        r->writes[n] = (struct store_node_write){.key = r->keys->key[o.copy / rn],
                                                 .keylen = r->keys->len[o.copy / rn],
                                                 .delta = o.delta,
                                                 .node = r->node_of[o.copy]};
        sent[n++] = o;
    }
    store_node_incr(s, r->writes, n, r->ef->ttl_s);
    for (size_t j = 0; j < n; j++) {
        if (r->writes[j].status == STORE_OK)
            r->stats.keys_repaired++;
        else if (r->writes[j].status == STORE_UNAVAILABLE || r->writes[j].status == STORE_NOMEM)
            r->owed[keep++] = sent[j];
    }
    r->n_owed = keep;
}

/* replicas>=2: raises the copies that are behind once they are stable;
 * marks the questions that keep one behind or unread. */
static void run_repairs(struct agg_repair *r, struct store *s, const bool *reading,
                        bool *lagging, uint64_t mono_ms)
{
    size_t rn = r->replicas;
    size_t n = 0, budget = AGG_REPAIR_MAX;
    uint64_t backlog = 0, behind = 0;
    if (r->n_owed > 0)
        resend_owed(r, s, reading);
    for (uint32_t qi = 0; qi < r->ef->n_questions; qi++) {
        if (!reading[qi])
            continue;
        size_t first = r->keys->q_first[qi], end = first + r->keys->q_count[qi];
        for (size_t i = first; i < end; i++) {
            if (n + rn > WRITE_CHUNK) {
                backlog += send_repairs(r, s, n);
                n = 0;
            }
            size_t c = i * rn;
            uint64_t max = 0;
            bool stable = true;
            for (size_t x = 0; x < rn; x++) {
                if (!r->cur_ok[c + x]) {
                    stable = false;
                    lagging[qi] = true; /* an unread copy may be behind */
                    continue;
                }
                if (r->cur[c + x] > max)
                    max = r->cur[c + x];
                /* stable_since is the history up to the pass before: a copy
                 * that changed in this pass's read is not stable either (an
                 * ingest's increment can land on one replica after the
                 * other was read). */
                if (mono_ms < r->stable_since[c + x] + AGG_REPAIR_UP_MS ||
                    !r->prev_fresh[c + x] || r->cur[c + x] != r->prev[c + x])
                    stable = false;
            }
            for (size_t x = 0; x < rn; x++) {
                if (!r->cur_ok[c + x] || r->cur[c + x] >= max)
                    continue;
                uint32_t k = r->node_of[c + x];
                const struct node_watch *w = &r->nodes[k];
                behind++;
                if (!w->was_reset) {
                    /* Behind without having lost its data (down a while, a
                     * cut link): the hints an ingest keeps for it may still
                     * land, and a raise before them would count them twice.
                     * The maximum of the replicas covers it. */
                    continue;
                }
                lagging[qi] = true;
                if (!stable || budget == 0 || !w->readable || w->read_failed || w->suspect ||
                    !w->restored || mono_ms < w->up_since_ms + AGG_REPAIR_UP_MS) {
                    backlog++;
                    continue;
                }
                budget--;
                size_t klen = key_repair_claim(r->claim_keys[n], r->ef->name, w->inc,
                                               r->cur[c + x], r->keys->key[i]);
                r->writes[n] = (struct store_node_write){.key = r->claim_keys[n],
                                                         .keylen = klen,
                                                         .val = r->self,
                                                         .vallen = INC_LEN,
                                                         .delta = max - r->cur[c + x],
                                                         .node = k};
                r->write_copy[n++] = c + x;
            }
        }
    }
    if (n > 0)
        backlog += send_repairs(r, s, n);
    r->stats.repair_backlog = backlog;
    r->stats.copies_behind = behind;
}

/* The copies' history for the next pass: the last value, whether it was
 * read this pass, and since when it has not changed. */
static void remember(struct agg_repair *r, const bool *reading, uint64_t mono_ms)
{
    size_t rn = r->replicas;
    for (uint32_t qi = 0; qi < r->ef->n_questions; qi++) {
        if (!reading[qi])
            continue;
        size_t from = r->keys->q_first[qi] * rn;
        size_t to = from + r->keys->q_count[qi] * rn;
        for (size_t c = from; c < to; c++) {
            bool same = r->cur_ok[c] && r->prev_fresh[c] && r->cur[c] == r->prev[c];
            if (r->cur_ok[c] && r->node_of[c] < r->n_nodes && r->nodes[r->node_of[c]].validated) {
                r->base[c] = r->cur[c];
                r->base_known[c] = 1;
            }
            if (!same)
                r->stable_since[c] = mono_ms;
            r->prev_fresh[c] = r->cur_ok[c];
            if (r->cur_ok[c]) {
                r->prev[c] = r->cur[c];
                r->prev_known[c] = 1;
            }
        }
    }
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
        if (w->read_failed)
            w->up_since_ms = mono_ms; /* it failed this pass: up again from now */
        if (!w->suspect && (w->dropped > 0 || r->replicas > 1)) {
            /* Lower without a new id yet: the restart may have come during
             * this pass's reads. Look again now rather than next pass, when
             * the drop would be history. With replicas, every pass: a node
             * back empty whose hints were replayed before this pass's reads
             * need not read lower, and its reads must not become a base. */
            char again[INC_LEN + 1];
            if (read_inc(r, s, k, again)) {
                if (strcmp(again, w->inc) != 0) {
                    memcpy(w->seen, again, sizeof(w->seen));
                    w->suspect = true;
                } else {
                    w->validated = !w->read_failed;
                }
            }
        }
        if (w->suspect && w->checked > 0) {
            /* The id never expires, so a new one means the node lost its
             * keys: restarted or flushed (or evicting, which a pool must
             * not). Counters lower than before confirm it, but are no
             * condition: the hints an ingest replays to a node back empty
             * can lift every counter it holds past its old value. */
            w->suspect = false;
            memcpy(w->inc, w->seen, sizeof(w->inc));
            r->stats.node_resets++;
            w->was_reset = true;
            r->full_read = true; /* settled questions too, next pass */
            w->up_since_ms = mono_ms;
            log_warn("store node came back empty node=%s counters_lower=%zu replicas=%u "
                     "event=%s",
                     w->name, w->dropped, (unsigned)r->replicas, r->ef->name);
            note_reset(r, k, wall_ms, false);
            clear_due(r, k);
            mark_due(r, k, kept);
            w->rs = RS_CLAIM;
            w->restored = false;
            w->reset_mono_ms = mono_ms;
            memcpy(w->claimed, w->inc, sizeof(w->claimed));
        }
        if (r->replicas > 1 && w->was_reset && !w->restored && w->rs == RS_NONE)
            await_restore(r, s, k, mono_ms);
        if (w->rs == RS_NONE || w->rs == RS_DONE || strcmp(w->inc, w->claimed) != 0)
            continue;
        if (w->rs == RS_CLAIM)
            claim_restore(r, s, k);
        if (w->rs == RS_OWNED)
            run_restores(r, s, k, reading, read);
        if (w->rs == RS_OWNED && r->replicas > 1 && count_due(r, k) == 0)
            finish_restore(r, s, k);
    }
    /* A question with a restore still due must not settle: its sums would
     * be cached without it. */
    for (size_t c = 0; c < r->keys->n * r->replicas; c++) {
        if (r->restore_due[c] > 0)
            lagging[r->key_q[c / r->replicas]] = true;
        r->due_fresh[c] = 0;
    }
    if (r->replicas > 1)
        run_repairs(r, s, reading, lagging, mono_ms);
    remember(r, reading, mono_ms);
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
                     "restored to the values of the pass before and rewritten from the other "
                     "replicas (%" PRIu64 " written so far, %" PRIu64 " copies behind in all)",
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
