#include "aggregate.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_keys.h"
#include "agg_repair.h"
#include "agg_stats.h"
#include "fans.h"
#include "keys.h"
#include "log.h"
#include "pool_record.h"
#include "qstate.h"
#include "snapstore.h"
#include "util.h"

#define AGG_NOTES_MAX 16 /* store node warnings in a snapshot */
#define AGGREGATE_POOL_CHECK_MS 5000u

/* Every array is sized once in aggregator_create and reused by every pass:
 * a pass allocates nothing per key (only the snapshot's JSON). */
struct aggregator {
    const struct eventfile *ef; /* (ref) */
    struct agg_keys keys;
    uint64_t *kept;             /* per key: highest value ever read (grow-only) */
    uint64_t *read;             /* per key: this pass's reads (scratch) */
    struct agg_counts *counts;  /* per question: sums of kept */
    struct qstate *states;      /* per question: this pass's state */
    bool *reading;              /* per question: read this pass */
    bool *settled;              /* per question: closed past the grace, sums cached */
    bool *lagging;              /* per question: a copy behind its replicas this pass */
    struct agg_repair *repair;  /* owned: pools only, made at the first pass */
    uint64_t *settled_close_ms; /* per question: the close time it settled on */
    struct agg_drops drops;     /* this pass's */
    struct agg_checks checks;   /* this pass's */
    struct fans_entry *fans_all; /* every published entry of the pass (scratch) */
    size_t fans_cap;
    struct fans_entry fans[FANS_SHOWN]; /* the ultimate fans of the last good read */
    size_t n_fans;
    bool fans_cap_logged;
    uint64_t grace_ms;
    uint64_t settled_reread_ms; /* wall: the next pass at or past it reads settled questions */
    uint32_t pool_epoch;        /* the newest epoch read */
    uint32_t pool_newer;        /* a newer epoch found in the pool, 0: none */
    uint32_t pool_folded;       /* the fold read (its carry), 0: none */
    uint32_t pool_folded_newer; /* a fold made under this aggregator, 0: none */
    uint64_t pool_check_ms;     /* monotonic: the next look for a newer epoch */
    uint64_t *epoch_sum;        /* scratch: one question's values summed over epochs */
    struct aggregator_stats stats;
};

struct aggregator *aggregator_create(const struct eventfile *ef)
{
    return aggregator_create_epochs(ef, 0);
}

struct aggregator *aggregator_create_epochs(const struct eventfile *ef, uint32_t pool_epoch)
{
    struct pool_view v = {.epoch = pool_epoch};
    return aggregator_create_pool(ef, &v);
}

struct aggregator *aggregator_create_pool(const struct eventfile *ef, const struct pool_view *pool)
{
    struct aggregator *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->ef = ef;
    a->grace_ms = AGGREGATE_DEFAULT_GRACE_MS;
    a->pool_epoch = pool->epoch;
    a->pool_folded = pool->folded;
    if (!agg_keys_build_pool(ef, pool->epoch, pool->folded, &a->keys)) {
        log_error("aggregator key list failed event=%s questions=%" PRIu32 " max_keys=%u",
                  ef->name, ef->n_questions, AGG_MAX_KEYS);
        goto err;
    }
    size_t nk = a->keys.n > 0 ? a->keys.n : 1;
    size_t nq = ef->n_questions > 0 ? ef->n_questions : 1;
    a->kept = calloc(nk, sizeof(*a->kept));
    a->read = calloc(nk, sizeof(*a->read));
    a->counts = calloc(nq, sizeof(*a->counts));
    a->states = calloc(nq, sizeof(*a->states));
    a->reading = calloc(nq, sizeof(*a->reading));
    a->settled = calloc(nq, sizeof(*a->settled));
    a->lagging = calloc(nq, sizeof(*a->lagging));
    a->settled_close_ms = calloc(nq, sizeof(*a->settled_close_ms));
    a->epoch_sum = calloc(a->keys.max_q_count > 0 ? a->keys.max_q_count : 1,
                          sizeof(*a->epoch_sum));
    if (a->epoch_sum == NULL || a->kept == NULL || a->read == NULL || a->counts == NULL || a->states == NULL ||
        a->reading == NULL || a->settled == NULL || a->lagging == NULL ||
        a->settled_close_ms == NULL)
        goto err;
    a->stats.keys_total = a->keys.n;
    return a;

err:
    aggregator_free(a);
    return NULL;
}

void aggregator_free(struct aggregator *a)
{
    if (a == NULL)
        return;
    agg_repair_free(a->repair);
    free(a->fans_all);
    free(a->epoch_sum);
    free(a->lagging);
    free(a->settled_close_ms);
    free(a->settled);
    free(a->reading);
    free(a->states);
    free(a->counts);
    free(a->read);
    free(a->kept);
    agg_keys_free(&a->keys);
    free(a);
}

void aggregator_set_grace_ms(struct aggregator *a, uint64_t grace_ms)
{
    a->grace_ms = grace_ms;
}

void aggregator_get_stats(const struct aggregator *a, struct aggregator_stats *out)
{
    *out = a->stats;
    if (a->repair != NULL) {
        struct agg_repair_stats rs;
        agg_repair_get_stats(a->repair, &rs);
        out->node_resets = rs.node_resets;
        out->keys_restored = rs.keys_restored;
        out->counts_restored = rs.counts_restored;
        out->restores_lost = rs.restore_lost;
        out->keys_repaired = rs.keys_repaired;
        out->repair_backlog = rs.repair_backlog;
        out->copies_behind = rs.copies_behind;
        out->nodes_down = rs.nodes_down;
    }
}

/* Closed long enough ago that nothing more can arrive for it. */
static bool past_grace(const struct aggregator *a, const struct qstate *st, uint64_t now_ms)
{
    return st->kind == QSTATE_CLOSED && now_ms >= st->close_ms &&
           now_ms - st->close_ms >= a->grace_ms;
}

/* Decides which questions this pass reads: all but the settled ones. A
 * settled question whose state changed since (reopened, closed again) is
 * read again. */
static void plan_reads(struct aggregator *a)
{
    for (uint32_t qi = 0; qi < a->ef->n_questions; qi++) {
        const struct qstate *st = &a->states[qi];
        if (a->settled[qi] &&
            (st->kind != QSTATE_CLOSED || st->close_ms != a->settled_close_ms[qi]))
            a->settled[qi] = false;
        a->reading[qi] = !a->settled[qi];
    }
}

/* Reads keys first..first+n-1 in batches. */
static enum store_status read_run(struct aggregator *a, struct store *s, size_t first, size_t n)
{
    for (size_t off = 0; off < n; off += AGGREGATE_BATCH) {
        size_t m = n - off < AGGREGATE_BATCH ? n - off : AGGREGATE_BATCH;
        size_t i = first + off;
        enum store_status st =
            a->repair != NULL
                ? agg_repair_read(a->repair, s, i, m, a->read)
                : store_mget_u64(s, a->keys.key + i, a->keys.len + i, m, a->read + i, NULL);
        if (st != STORE_OK)
            return st;
    }
    return STORE_OK;
}

/* Reads every key of the questions being read. The keys of consecutive
 * questions are contiguous, so runs of them share batches. Nothing is kept
 * until every read succeeded: a pass never mixes two states of the store
 * with a failure in between. */
static enum store_status read_all(struct aggregator *a, struct store *s, uint64_t now_ms)
{
    const struct agg_keys *k = &a->keys;
    uint32_t nq = a->ef->n_questions;
    for (uint32_t qi = 0; qi < nq;) {
        if (!a->reading[qi]) {
            qi++;
            continue;
        }
        uint32_t end = qi;
        while (end < nq && a->reading[end])
            end++;
        size_t first = k->q_first[qi];
        size_t n = k->q_first[end - 1] + k->q_count[end - 1] - first;
        enum store_status st = read_run(a, s, first, n);
        if (st != STORE_OK)
            return st;
        a->stats.keys_read += n;
        qi = end;
    }
    memset(a->lagging, 0, nq * sizeof(*a->lagging));
    if (a->repair != NULL)
        agg_repair_settle(a->repair, s, a->reading, a->kept, a->read, a->lagging, now_ms,
                          util_mono_ms());
    for (uint32_t qi = 0; qi < nq; qi++) {
        if (a->reading[qi])
            agg_stats_grow_only(a->kept, a->read, k->q_first[qi], k->q_count[qi], &a->drops);
    }
    return STORE_OK;
}

static void log_drops(const struct aggregator *a)
{
    for (size_t i = 0; i < a->drops.listed; i++) {
        const struct agg_drop *d = &a->drops.list[i];
        log_warn("counter went backwards, the store lost data key=%s old=%" PRIu64
                 " new=%" PRIu64 " event=%s",
                 a->keys.key[d->key], d->old_value, d->new_value, a->ef->name);
    }
    if (a->drops.total > a->drops.listed)
        log_warn("counters went backwards count=%zu listed=%zu event=%s", a->drops.total,
                 a->drops.listed, a->ef->name);
}

/* ---- the ultimate fans ---------------------------------------------- */

struct verify_ctx {
    struct aggregator *a;
    struct store *s;
    enum store_status status; /* of the read that failed */
};

/* A candidate is an ultimate fan when its marker of every closed question
 * says right. */
static int verify_fan(void *arg, const struct fans_entry *e)
{
    struct verify_ctx *v = arg;
    const struct eventfile *ef = v->a->ef;
    char key[KEY_USER_MAX];
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        if (v->a->states[qi].kind != QSTATE_CLOSED)
            continue;
        size_t klen = key_user_marker(key, ef->name, e->user, ef->questions[qi].id);
        char *val = NULL;
        size_t vlen = 0;
        enum store_status st = store_get(v->s, key, klen, &val, &vlen);
        bool right = false;
        uint64_t ms;
        bool parsed = st == STORE_OK && fans_marker_parse(val, vlen, &right, &ms);
        free(val);
        if (st == STORE_NOTFOUND || (st == STORE_OK && (!parsed || !right)))
            return 0;
        if (st != STORE_OK) {
            v->status = st;
            return -1;
        }
    }
    return 1;
}

/* Room for one more list in fans_all. */
static bool fans_room(struct aggregator *a, size_t used)
{
    if (used + FANS_TOPK <= a->fans_cap)
        return true;
    size_t cap = a->fans_cap ? a->fans_cap * 2 : 8 * FANS_TOPK;
    struct fans_entry *p = realloc(a->fans_all, cap * sizeof(*p));
    if (p == NULL)
        return false;
    a->fans_all = p;
    a->fans_cap = cap;
    return true;
}

/* The lists read so far. Every copy of a list counts: a replica that
 * missed the last write holds an older one, and merging it is harmless
 * (fans_merge keeps each user's largest right count). */
struct fans_copies {
    struct aggregator *a;
    const char *key;
    size_t used;
    bool nomem;
};

static void on_fans_copy(void *arg, const char *val, size_t vallen)
{
    struct fans_copies *c = arg;
    size_t n = 0;
    if (c->nomem || !fans_room(c->a, c->used)) {
        c->nomem = true;
        return;
    }
    if (fans_decode(val, vallen, c->a->fans_all + c->used, FANS_TOPK, &n)) {
        c->used += n;
        c->a->stats.fans_lists++;
    } else {
        log_warn("unparsable fans list ignored key=%s", c->key);
    }
}

/* Reads every ingest list, merges, ranks and checks the candidates; on
 * success replaces a->fans. Runs after the question states were read. */
static enum store_status read_fans(struct aggregator *a, struct store *s)
{
    const struct eventfile *ef = a->ef;
    uint64_t closed = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++)
        if (a->states[qi].kind == QSTATE_CLOSED)
            closed++;
    a->stats.fans_lists = 0;
    a->stats.fans_checks = 0;
    if (closed == 0) {
        a->n_fans = 0;
        return STORE_OK;
    }

    char key[KEY_USER_MAX];
    size_t klen = key_fans_seq(key, ef->name);
    const char *keys[] = {key};
    uint64_t slots = 0;
    enum store_status st = store_mget_u64(s, keys, &klen, 1, &slots, NULL);
    if (st != STORE_OK)
        return st;
    if (slots > AGGREGATE_FANS_MAX_SLOTS) {
        if (!a->fans_cap_logged)
            log_warn("fans lists past the cap ignored slots=%" PRIu64 " read=%u event=%s", slots,
                     AGGREGATE_FANS_MAX_SLOTS, ef->name);
        a->fans_cap_logged = true;
        slots = AGGREGATE_FANS_MAX_SLOTS;
    }
    struct fans_copies c = {.a = a, .key = key};
    for (uint64_t slot = 1; slot <= slots; slot++) {
        klen = key_fans_list(key, ef->name, slot);
        st = store_get_each(s, key, klen, on_fans_copy, &c, NULL);
        if (c.nomem)
            return STORE_NOMEM;
        if (st == STORE_NOTFOUND)
            continue; /* a slot taken but not written yet, or expired */
        if (st != STORE_OK)
            return st;
    }
    size_t m = fans_merge(a->fans_all, c.used);
    struct verify_ctx v = {.a = a, .s = s, .status = STORE_OK};
    struct fans_entry out[FANS_SHOWN];
    struct fans_selection sel;
    fans_select(a->fans_all, m, closed, AGGREGATE_FANS_MAX_CHECKS, verify_fan, &v, out, FANS_SHOWN,
                &sel);
    a->stats.fans_checks = sel.checks;
    if (sel.failed)
        return v.status;
    memcpy(a->fans, out, sel.n * sizeof(out[0]));
    a->n_fans = sel.n;
    return STORE_OK;
}

/* A pool that grew under a running aggregator: its newer epoch's counters
 * go unread, so say it, every pass, until a restart reads them. Asked every
 * AGGREGATE_POOL_CHECK_MS: one get per node. */
static void check_pool_grew(struct aggregator *a, struct store *s)
{
    uint64_t now = util_mono_ms();
    if (store_node_count(s) == 0 || now < a->pool_check_ms)
        return;
    a->pool_check_ms = now + AGGREGATE_POOL_CHECK_MS;
    uint32_t newest = 0;
    if (pool_record_newer(s, a->ef->name, a->pool_epoch, &newest) && newest != a->pool_newer) {
        a->pool_newer = newest;
        log_error("the pool of event %s changed to epoch %" PRIu32 " under this aggregator "
                  "(it reads epochs 0-%" PRIu32 "): restart it with that epoch's --backend, "
                  "or its counts stay out of the snapshots",
                  a->ef->name, newest, a->pool_epoch);
    }
    uint32_t folded = pool_record_folded(s, a->ef->name, a->pool_epoch);
    if (folded > a->pool_folded && folded != a->pool_folded_newer) {
        a->pool_folded_newer = folded;
        log_warn("the epochs before %" PRIu32 " of event %s were folded under this aggregator: "
                 "it goes on reading them (right while their nodes are up); restart it to "
                 "read the fold instead, before a retired node is stopped",
                 folded, a->ef->name);
    }
}

enum store_status aggregator_pass(struct aggregator *a, struct store *s, uint64_t now_ms)
{
    const struct eventfile *ef = a->ef;
    uint64_t t0 = util_mono_us();
    char *json = NULL;
    size_t len = 0;
    a->stats.passes++;
    a->stats.keys_read = 0;
    memset(&a->drops, 0, sizeof(a->drops));
    memset(&a->checks, 0, sizeof(a->checks));

    enum store_status st = qstate_fetch_all(s, ef, a->states);
    if (st != STORE_OK) {
        log_warn("aggregate pass failed step=state status=%s event=%s", store_status_str(st),
                 ef->name);
        goto done;
    }
    if (a->repair == NULL && store_node_count(s) > 0 &&
        (a->repair = agg_repair_create(ef, &a->keys, s)) == NULL) {
        st = STORE_NOMEM;
        goto done;
    }
    if (a->repair != NULL && agg_repair_check_nodes(a->repair, s, util_mono_ms()))
        memset(a->settled, 0, ef->n_questions * sizeof(*a->settled)); /* read them all */
    if (now_ms >= a->settled_reread_ms || a->settled_reread_ms - now_ms > AGGREGATE_SETTLED_REREAD_MS) {
        /* Settled ones too, now and then (AGGREGATE_SETTLED_REREAD_MS says why);
         * a clock stepped back does not postpone it. */
        memset(a->settled, 0, ef->n_questions * sizeof(*a->settled));
        a->settled_reread_ms = now_ms + AGGREGATE_SETTLED_REREAD_MS;
    }
    plan_reads(a);
    st = read_all(a, s, now_ms);
    if (st != STORE_OK) {
        log_warn("aggregate pass failed step=read status=%s event=%s", store_status_str(st),
                 ef->name);
        goto done;
    }
    if (a->drops.total > 0) {
        log_drops(a);
        a->stats.warnings += a->drops.total;
    }

    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        if (a->reading[qi])
            agg_keys_sum_epochs(ef, &a->keys, qi, a->kept, a->epoch_sum, &a->counts[qi]);
        agg_stats_check(ef, qi, &a->counts[qi], &a->checks);
    }

    enum store_status fst = read_fans(a, s);
    if (fst != STORE_OK) {
        a->stats.fans_failures++;
        log_warn("ultimate fans kept from the previous pass status=%s event=%s",
                 store_status_str(fst), ef->name);
    }

    /* The store's head, not only our own count: a restarted aggregator, or a
     * second one running, must publish a newer generation than any there. */
    uint64_t head = 0;
    st = snapstore_generation(s, ef->name, &head);
    if (st == STORE_NOTFOUND) {
        head = 0;
        st = STORE_OK;
    }
    if (st != STORE_OK) {
        log_warn("aggregate pass failed step=generation status=%s event=%s",
                 store_status_str(st), ef->name);
        goto done;
    }
    uint64_t gen = (head > a->stats.generation ? head : a->stats.generation) + 1;

    char notes[AGG_NOTES_MAX][AGG_REPAIR_WARNING_MAX];
    const char *note_ptr[AGG_NOTES_MAX];
    size_t n_notes =
        a->repair != NULL ? agg_repair_warnings(a->repair, notes, AGG_NOTES_MAX, now_ms) : 0;
    check_pool_grew(a, s);
    if (a->pool_folded_newer > 0 && n_notes < AGG_NOTES_MAX)
        snprintf(notes[n_notes++], sizeof(notes[0]),
                 "the epochs before %" PRIu32 " were folded under this aggregator, which "
                 "still reads them: restart livetally-aggregate before the retired node is "
                 "stopped (README, \"Changing the pool\")",
                 a->pool_folded_newer);
    if (a->pool_newer > 0 && n_notes < AGG_NOTES_MAX)
        snprintf(notes[n_notes++], sizeof(notes[0]),
                 "the pool changed to epoch %" PRIu32 " under this aggregator, which reads "
                 "epochs 0-%" PRIu32 ": the counts written in the new one are not in this "
                 "snapshot until livetally-aggregate is restarted with that epoch's "
                 "--backend (README, \"Changing the pool\")",
                 a->pool_newer, a->pool_epoch);
    for (size_t i = 0; i < n_notes; i++)
        note_ptr[i] = notes[i];
    struct agg_snapshot_in in = {.ef = ef,
                                 .notes = note_ptr,
                                 .n_notes = n_notes,
                                 .counts = a->counts,
                                 .states = a->states,
                                 .generation = gen,
                                 .now_ms = now_ms,
                                 .drops = &a->drops,
                                 .keys = a->keys.key,
                                 .checks = &a->checks,
                                 .fans = a->fans,
                                 .n_fans = a->n_fans};
    json = agg_stats_build_json(&in, &len);
    if (json == NULL) {
        st = STORE_NOMEM;
        log_warn("aggregate pass failed step=build status=%s event=%s", store_status_str(st),
                 ef->name);
        goto done;
    }
    st = snapstore_publish(s, ef->name, ef->ttl_s, gen, json, len);
    if (st != STORE_OK) {
        log_warn("aggregate pass failed step=publish status=%s event=%s generation=%" PRIu64,
                 store_status_str(st), ef->name, gen);
        goto done;
    }

    a->stats.generation = gen;
    if (a->checks.total > 0) {
        a->stats.check_failures++;
        const struct agg_mismatch *m = &a->checks.list[0];
        /* Expected now and then while answers flow (the reads are not one
         * atomic snapshot); a mismatch that persists is the problem. */
        log_info("breakdowns do not add up mismatches=%zu "
                 "question=%" PRIu32 " check=%s expected=%" PRIu64 " actual=%" PRIu64,
                 a->checks.total, m->question, m->check, m->expected, m->actual);
    }
    /* Settle only now: the read that follows the grace made it into a
     * published snapshot. */
    a->stats.questions_settled = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        if (a->reading[qi] && !a->lagging[qi] && past_grace(a, &a->states[qi], now_ms)) {
            a->settled[qi] = true;
            a->settled_close_ms[qi] = a->states[qi].close_ms;
        }
        if (a->settled[qi])
            a->stats.questions_settled++;
    }

done:
    if (st != STORE_OK)
        a->stats.failed_passes++;
    free(json);
    a->stats.pass_us = util_mono_us() - t0;
    return st;
}
