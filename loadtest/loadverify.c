#include "loadverify.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void loadverify_diff_add(struct loadverify_diffs *d, const char *fmt, ...)
{
    if (d == NULL)
        return;
    d->total++;
    if (d->n >= LOADVERIFY_DIFFS_KEPT)
        return;
    if (d->lines == NULL) {
        d->lines = calloc(LOADVERIFY_DIFFS_KEPT, sizeof(*d->lines));
        if (d->lines == NULL)
            return;
    }
    char *line = malloc(LOADVERIFY_DIFF_MAX);
    if (line == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, LOADVERIFY_DIFF_MAX, fmt, ap);
    va_end(ap);
    d->lines[d->n++] = line;
}

void loadverify_diffs_free(struct loadverify_diffs *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->lines[i]);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

void loadverify_stats_free(struct loadverify_stats *st)
{
    loadtally_free(&st->tally);
    free(st->present);
    free(st->closed);
    memset(st, 0, sizeof(*st));
}

/* A count field: a JSON integer >= 0. */
static bool get_count(const json_t *obj, const char *field, uint64_t *out, const char *where,
                      struct loadverify_diffs *d)
{
    const json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        loadverify_diff_add(d, "%s.%s: missing", where, field);
        return false;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        loadverify_diff_add(d, "%s.%s: not a count", where, field);
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static void get_counts(const json_t *obj, struct loadtally_count *c, const char *where,
                       struct loadverify_diffs *d)
{
    get_count(obj, "answers", &c->answers, where, d);
    get_count(obj, "right", &c->right, where, d);
    get_count(obj, "wrong", &c->wrong, where, d);
}

static void parse_question(const json_t *jq, size_t i, const struct eventfile *ef,
                           struct loadverify_stats *st, struct loadverify_diffs *d)
{
    char where[96];
    const json_t *jid = json_object_get(jq, "id");
    if (!json_is_object(jq) || !json_is_integer(jid)) {
        loadverify_diff_add(d, "questions[%zu]: not an object with an integer id", i);
        return;
    }
    json_int_t id = json_integer_value(jid);
    int qi = (id >= 1 && id <= (json_int_t)EVENT_MAX_QUESTION_ID)
                 ? eventfile_question_index(ef, (uint32_t)id)
                 : -1;
    if (qi < 0) {
        loadverify_diff_add(d, "question %lld: not in the event file", (long long)id);
        return;
    }
    if (st->present[qi]) {
        loadverify_diff_add(d, "question %lld: listed twice", (long long)id);
        return;
    }
    st->present[qi] = true;
    const json_t *state = json_object_get(jq, "state");
    st->closed[qi] = json_is_string(state) && strcmp(json_string_value(state), "closed") == 0;
    const struct event_question *eq = &ef->questions[qi];
    struct loadtally_question *q = &st->tally.q[qi];

    snprintf(where, sizeof(where), "question %u", eq->id);
    get_counts(jq, &q->total, where, d);

    const json_t *ba = json_object_get(jq, "by_answer");
    if (!json_is_array(ba)) {
        loadverify_diff_add(d, "question %u by_answer: missing or not an array", eq->id);
    } else {
        if (json_array_size(ba) != eq->n_options)
            loadverify_diff_add(d, "question %u by_answer: %zu entries for %u options", eq->id,
                                json_array_size(ba), eq->n_options);
        for (size_t o = 0; o < json_array_size(ba) && o < EVENT_MAX_OPTIONS; o++) {
            const json_t *v = json_array_get(ba, o);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                loadverify_diff_add(d, "question %u by_answer[%zu]: not a count", eq->id, o);
            else
                q->by_answer[o] = (uint64_t)json_integer_value(v);
        }
    }

    const json_t *bg = json_object_get(jq, "by_age");
    bool seen_bucket[EVENT_MAX_AGE_BUCKETS] = {false};
    if (!json_is_array(bg)) {
        loadverify_diff_add(d, "question %u by_age: missing or not an array", eq->id);
    } else {
        for (size_t k = 0; k < json_array_size(bg); k++) {
            const json_t *e = json_array_get(bg, k);
            const json_t *jb = json_object_get(e, "bucket");
            json_int_t b = json_is_integer(jb) ? json_integer_value(jb) : 0;
            if (b < 1 || b > (json_int_t)ef->n_age_buckets) {
                loadverify_diff_add(d, "question %u by_age[%zu]: bucket must be 1..%u", eq->id, k,
                                    ef->n_age_buckets);
                continue;
            }
            if (seen_bucket[b - 1]) {
                loadverify_diff_add(d, "question %u by_age: bucket %lld listed twice", eq->id,
                                    (long long)b);
                continue;
            }
            seen_bucket[b - 1] = true;
            snprintf(where, sizeof(where), "question %u by_age[bucket %lld]", eq->id,
                     (long long)b);
            get_counts(e, &q->by_age[b - 1], where, d);
        }
    }

    const json_t *bc = json_object_get(jq, "by_country");
    if (!json_is_array(bc)) {
        loadverify_diff_add(d, "question %u by_country: missing or not an array", eq->id);
        return;
    }
    bool *seen = calloc(COUNTRY_COUNT, sizeof(*seen));
    if (seen == NULL) {
        loadverify_diff_add(d, "out of memory");
        return;
    }
    for (size_t k = 0; k < json_array_size(bc); k++) {
        const json_t *e = json_array_get(bc, k);
        const json_t *jc = json_object_get(e, "country");
        int c = json_is_string(jc)
                    ? country_lookup_strict(json_string_value(jc), json_string_length(jc))
                    : -1;
        if (c < 0) {
            loadverify_diff_add(d, "question %u by_country[%zu]: \"%.16s\" is not a country code",
                                eq->id, k, json_is_string(jc) ? json_string_value(jc) : "");
            continue;
        }
        if (seen[c]) {
            loadverify_diff_add(d, "question %u by_country: %s listed twice", eq->id,
                                country_code(c));
            continue;
        }
        seen[c] = true;
        snprintf(where, sizeof(where), "question %u by_country[%s]", eq->id, country_code(c));
        get_counts(e, &q->by_country[c], where, d);
    }
    free(seen);
}

/* ultimate_fans: [{rank, user, right, total_ms}]; a malformed entry is a
 * difference and is not kept. */
static void parse_fans(const json_t *arr, struct loadverify_stats *st, struct loadverify_diffs *d)
{
    if (!json_is_array(arr))
        return; /* a difference only where the fans are checked */
    st->has_fans = true;
    st->fans_listed = json_array_size(arr);
    for (size_t i = 0; i < json_array_size(arr) && st->n_fans < LOADVERIFY_FANS_MAX; i++) {
        const json_t *e = json_array_get(arr, i);
        const json_t *u = json_object_get(e, "user");
        char where[48];
        snprintf(where, sizeof(where), "ultimate_fans[%zu]", i);
        struct loadverify_fan f;
        memset(&f, 0, sizeof(f));
        if (!json_is_object(e) || !json_is_string(u) || json_string_length(u) == 0 ||
            json_string_length(u) > LOADVERIFY_USER_MAX) {
            loadverify_diff_add(d, "%s: not an object with a user id of 1..%d characters", where,
                                LOADVERIFY_USER_MAX);
            continue;
        }
        if (!get_count(e, "rank", &f.rank, where, d) || !get_count(e, "right", &f.right, where, d) ||
            !get_count(e, "total_ms", &f.total_ms, where, d))
            continue;
        memcpy(f.user, json_string_value(u), json_string_length(u) + 1);
        st->fans[st->n_fans++] = f;
    }
}

bool loadverify_stats_parse(const char *json, size_t len, const struct eventfile *ef,
                            struct loadverify_stats *st, struct loadverify_diffs *d, char *err,
                            size_t errlen)
{
    memset(st, 0, sizeof(*st));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        snprintf(err, errlen, "the stats are not a JSON object%s%s", root ? "" : ": ",
                 root ? "" : jerr.text);
        json_decref(root);
        return false;
    }
    if (!loadtally_init(&st->tally, ef->n_questions) ||
        (st->present = calloc(ef->n_questions ? ef->n_questions : 1, sizeof(bool))) == NULL ||
        (st->closed = calloc(ef->n_questions ? ef->n_questions : 1, sizeof(bool))) == NULL) {
        snprintf(err, errlen, "out of memory");
        loadverify_stats_free(st);
        json_decref(root);
        return false;
    }

    const json_t *g = json_object_get(root, "generation");
    if (json_is_integer(g) && json_integer_value(g) >= 0) {
        st->has_generation = true;
        st->generation = (uint64_t)json_integer_value(g);
    } else {
        loadverify_diff_add(d, "generation: missing or not a count");
    }

    const json_t *t = json_object_get(root, "totals");
    if (json_is_object(t)) {
        st->has_totals = true;
        get_counts(t, &st->tally.totals, "totals", d);
    } else {
        loadverify_diff_add(d, "totals: missing or not an object");
    }

    const json_t *qs = json_object_get(root, "questions");
    if (!json_is_array(qs)) {
        loadverify_diff_add(d, "questions: missing or not an array");
    } else {
        for (size_t i = 0; i < json_array_size(qs); i++)
            parse_question(json_array_get(qs, i), i, ef, st, d);
    }
    parse_fans(json_object_get(root, "ultimate_fans"), st, d);
    json_decref(root);
    return true;
}

struct cmp {
    const struct eventfile *ef;
    struct loadverify_diffs *d;
    uint64_t compared;
};

/* A count may exceed the expected one by the answers that may have been
 * counted (maybe), never fall short of it. */

/* The name of a count, made only when it differs (a question has ~2000). */
struct cmp_name {
    uint32_t question; /* 0: the totals */
    const char *part;  /* "", "by_answer", "by_age", "by_country" */
    char index[24];    /* "[2]", "[bucket 1]", "[us]", or "" */
};

static void cmp_one(struct cmp *c, const struct cmp_name *n, const char *field, uint64_t base,
                    uint64_t sent, uint64_t maybe, uint64_t actual)
{
    c->compared++;
    uint64_t want = base + sent;
    if (want == actual)
        return;
    if (actual > want && actual - want <= maybe) {
        c->d->within_bound++;
        return;
    }
    char what[128];
    if (n->question == 0)
        snprintf(what, sizeof(what), "totals%s", field);
    else
        snprintf(what, sizeof(what), "question %u%s%s%s%s", n->question, n->part[0] ? " " : "",
                 n->part, n->index, field);
    char bound[64] = "";
    if (maybe > 0)
        snprintf(bound, sizeof(bound), " to %" PRIu64 " (%" PRIu64 " maybe counted)", want + maybe,
                 maybe);
    if (base != 0)
        loadverify_diff_add(c->d,
                            "%s: dashboard %" PRIu64 ", expected %" PRIu64 "%s (%" PRIu64
                            " before the run + %" PRIu64 " acknowledged)",
                            what, actual, want, bound, base, sent);
    else
        loadverify_diff_add(c->d, "%s: dashboard %" PRIu64 ", expected %" PRIu64 "%s", what,
                            actual, want, bound);
}

static void cmp_count(struct cmp *c, const struct cmp_name *n, const struct loadtally_count *base,
                      const struct loadtally_count *sent, const struct loadtally_count *maybe,
                      const struct loadtally_count *actual)
{
    static const struct loadtally_count zero;
    if (base == NULL)
        base = &zero;
    if (maybe == NULL)
        maybe = &zero;
    cmp_one(c, n, ".answers", base->answers, sent->answers, maybe->answers, actual->answers);
    cmp_one(c, n, ".right", base->right, sent->right, maybe->right, actual->right);
    cmp_one(c, n, ".wrong", base->wrong, sent->wrong, maybe->wrong, actual->wrong);
}

uint64_t loadverify_compare(const struct eventfile *ef, const struct loadtally *base,
                            const struct loadtally *sent, const struct loadverify_stats *actual,
                            struct loadverify_diffs *d)
{
    return loadverify_compare_bounded(ef, base, sent, NULL, actual, d);
}

uint64_t loadverify_compare_bounded(const struct eventfile *ef, const struct loadtally *base,
                                    const struct loadtally *sent, const struct loadtally *maybe,
                                    const struct loadverify_stats *actual,
                                    struct loadverify_diffs *d)
{
    struct cmp c = {.ef = ef, .d = d};
    if (sent->invalid > 0)
        loadverify_diff_add(d,
                            "%" PRIu64 " acknowledged answers are not valid for the event file "
                            "(the ingest should have refused them)",
                            sent->invalid);
    for (uint32_t i = 0; i < ef->n_questions && i < sent->n_questions; i++) {
        const struct event_question *eq = &ef->questions[i];
        const struct loadtally_question *b = base ? &base->q[i] : NULL;
        const struct loadtally_question *s = &sent->q[i];
        const struct loadtally_question *m =
            maybe != NULL && i < maybe->n_questions ? &maybe->q[i] : NULL;
        const struct loadtally_question *a = &actual->tally.q[i];
        uint64_t want = (b ? b->total.answers : 0) + s->total.answers;
        if (!actual->present[i]) {
            /* One line rather than one per count of a missing question. */
            c.compared++;
            if (want != 0)
                loadverify_diff_add(d, "question %u: missing from the dashboard (expected %" PRIu64
                                       " answers)",
                                    eq->id, want);
            continue;
        }
        struct cmp_name n = {.question = eq->id, .part = ""};
        cmp_count(&c, &n, b ? &b->total : NULL, &s->total, m ? &m->total : NULL, &a->total);
        n.part = "by_answer";
        for (uint32_t o = 0; o < eq->n_options; o++) {
            snprintf(n.index, sizeof(n.index), "[%u]", o);
            cmp_one(&c, &n, "", b ? b->by_answer[o] : 0, s->by_answer[o],
                    m ? m->by_answer[o] : 0, a->by_answer[o]);
        }
        n.part = "by_age";
        for (uint32_t k = 0; k < ef->n_age_buckets; k++) {
            snprintf(n.index, sizeof(n.index), "[bucket %u]", k + 1);
            cmp_count(&c, &n, b ? &b->by_age[k] : NULL, &s->by_age[k], m ? &m->by_age[k] : NULL,
                      &a->by_age[k]);
        }
        n.part = "by_country";
        for (int k = 0; k < COUNTRY_COUNT; k++) {
            snprintf(n.index, sizeof(n.index), "[%s]", country_code(k));
            cmp_count(&c, &n, b ? &b->by_country[k] : NULL, &s->by_country[k],
                      m ? &m->by_country[k] : NULL, &a->by_country[k]);
        }
    }
    if (actual->has_totals) {
        struct cmp_name n = {.question = 0, .part = ""};
        cmp_count(&c, &n, base ? &base->totals : NULL, &sent->totals,
                  maybe != NULL ? &maybe->totals : NULL, &actual->tally.totals);
    }
    return c.compared;
}

/* The population index of a user id "<prefix><n>", n = 1..users; false
 * for an id this run never sent. */
static bool population_index(const struct loadverify_population *pop, const char *user,
                             uint64_t *idx)
{
    size_t pl = strlen(pop->prefix);
    if (strncmp(user, pop->prefix, pl) != 0 || user[pl] < '1' || user[pl] > '9')
        return false;
    uint64_t n = 0;
    for (const char *p = user + pl; *p; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n > pop->acked->users)
        return false;
    *idx = n - 1;
    return true;
}

/* The slot of question index qi, or -1 when the run did not answer it. */
static int slot_of(const struct loadverify_population *pop, uint32_t qi)
{
    for (uint32_t s = 0; s < pop->n_slots; s++)
        if (pop->qidx[s] == qi)
            return (int)s;
    return -1;
}

/* The user was acknowledged right on every closed question. */
static bool qualifies(const struct eventfile *ef, const struct loadverify_population *pop,
                      const struct loadverify_stats *actual, uint64_t user, uint32_t *first_miss)
{
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        if (!actual->closed[qi])
            continue;
        int s = slot_of(pop, qi);
        if (s < 0 || !loadtally_fans_right(pop->acked, user, (uint32_t)s)) {
            if (first_miss != NULL)
                *first_miss = ef->questions[qi].id;
            return false;
        }
    }
    return true;
}

uint64_t loadverify_fans(const struct eventfile *ef, const struct loadverify_population *pop,
                         const struct loadverify_stats *actual, struct loadverify_diffs *d)
{
    uint64_t checks = 1;
    if (!actual->has_fans) {
        loadverify_diff_add(d, "ultimate_fans: missing or not an array");
        return checks;
    }
    uint32_t closed = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++)
        closed += actual->closed[qi];

    /* How many qualify, counted until the list would be full. */
    uint64_t qualified = 0;
    for (uint64_t u = 0; closed > 0 && u < pop->acked->users && qualified < 10; u++)
        qualified += qualifies(ef, pop, actual, u, NULL);
    if (actual->fans_listed != qualified)
        loadverify_diff_add(d,
                            "ultimate_fans: %zu listed, expected %" PRIu64
                            " (users acknowledged right on all %u closed questions, at most 10)",
                            actual->fans_listed, qualified, closed);

    for (size_t i = 0; i < actual->n_fans; i++) {
        const struct loadverify_fan *f = &actual->fans[i];
        checks++;
        if (f->rank != i + 1)
            loadverify_diff_add(d, "ultimate_fans[%zu] %s: rank %" PRIu64 ", expected %zu", i,
                                f->user, f->rank, i + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(actual->fans[j].user, f->user) == 0)
                loadverify_diff_add(d, "ultimate_fans: %s listed twice", f->user);
        if (i > 0) {
            const struct loadverify_fan *p = &actual->fans[i - 1];
            bool ordered = p->right > f->right ||
                           (p->right == f->right &&
                            (p->total_ms < f->total_ms ||
                             (p->total_ms == f->total_ms && strcmp(p->user, f->user) < 0)));
            if (!ordered)
                loadverify_diff_add(d,
                                    "ultimate_fans: %s (%" PRIu64 " right, %" PRIu64
                                    " ms) ranked after %s (%" PRIu64 " right, %" PRIu64
                                    " ms): not by right desc, total_ms asc, user",
                                    f->user, f->right, f->total_ms, p->user, p->right,
                                    p->total_ms);
        }
        uint64_t u;
        if (!population_index(pop, f->user, &u)) {
            loadverify_diff_add(d, "ultimate_fans: %s is not a user this run sent", f->user);
            continue;
        }
        uint32_t miss = 0;
        if (!qualifies(ef, pop, actual, u, &miss)) {
            loadverify_diff_add(d,
                                "ultimate_fans: %s listed, but no right answer of it to closed "
                                "question %u was acknowledged",
                                f->user, miss);
            continue;
        }
        uint64_t acked = 0;
        for (uint32_t s = 0; s < pop->n_slots; s++)
            acked += loadtally_fans_right(pop->acked, u, s);
        if (f->right != acked)
            loadverify_diff_add(d,
                                "ultimate_fans: %s has %" PRIu64 " right, %" PRIu64
                                " of its right answers were acknowledged",
                                f->user, f->right, acked);
    }
    return checks;
}
