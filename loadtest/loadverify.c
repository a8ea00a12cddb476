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
        (st->present = calloc(ef->n_questions ? ef->n_questions : 1, sizeof(bool))) == NULL) {
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
    json_decref(root);
    return true;
}

struct cmp {
    const struct eventfile *ef;
    struct loadverify_diffs *d;
    uint64_t compared;
};

/* The name of a count, made only when it differs (a question has ~2000). */
struct cmp_name {
    uint32_t question; /* 0: the totals */
    const char *part;  /* "", "by_answer", "by_age", "by_country" */
    char index[24];    /* "[2]", "[bucket 1]", "[us]", or "" */
};

static void cmp_one(struct cmp *c, const struct cmp_name *n, const char *field, uint64_t base,
                    uint64_t sent, uint64_t actual)
{
    c->compared++;
    uint64_t want = base + sent;
    if (want == actual)
        return;
    char what[128];
    if (n->question == 0)
        snprintf(what, sizeof(what), "totals%s", field);
    else
        snprintf(what, sizeof(what), "question %u%s%s%s%s", n->question, n->part[0] ? " " : "",
                 n->part, n->index, field);
    if (base != 0)
        loadverify_diff_add(c->d,
                            "%s: dashboard %" PRIu64 ", expected %" PRIu64 " (%" PRIu64
                            " before the run + %" PRIu64 " acknowledged)",
                            what, actual, want, base, sent);
    else
        loadverify_diff_add(c->d, "%s: dashboard %" PRIu64 ", expected %" PRIu64, what, actual,
                            want);
}

static void cmp_count(struct cmp *c, const struct cmp_name *n, const struct loadtally_count *base,
                      const struct loadtally_count *sent, const struct loadtally_count *actual)
{
    static const struct loadtally_count zero;
    if (base == NULL)
        base = &zero;
    cmp_one(c, n, ".answers", base->answers, sent->answers, actual->answers);
    cmp_one(c, n, ".right", base->right, sent->right, actual->right);
    cmp_one(c, n, ".wrong", base->wrong, sent->wrong, actual->wrong);
}

uint64_t loadverify_compare(const struct eventfile *ef, const struct loadtally *base,
                            const struct loadtally *sent, const struct loadverify_stats *actual,
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
        cmp_count(&c, &n, b ? &b->total : NULL, &s->total, &a->total);
        n.part = "by_answer";
        for (uint32_t o = 0; o < eq->n_options; o++) {
            snprintf(n.index, sizeof(n.index), "[%u]", o);
            cmp_one(&c, &n, "", b ? b->by_answer[o] : 0, s->by_answer[o], a->by_answer[o]);
        }
        n.part = "by_age";
        for (uint32_t k = 0; k < ef->n_age_buckets; k++) {
            snprintf(n.index, sizeof(n.index), "[bucket %u]", k + 1);
            cmp_count(&c, &n, b ? &b->by_age[k] : NULL, &s->by_age[k], &a->by_age[k]);
        }
        n.part = "by_country";
        for (int k = 0; k < COUNTRY_COUNT; k++) {
            snprintf(n.index, sizeof(n.index), "[%s]", country_code(k));
            cmp_count(&c, &n, b ? &b->by_country[k] : NULL, &s->by_country[k],
                      &a->by_country[k]);
        }
    }
    if (actual->has_totals) {
        struct cmp_name n = {.question = 0, .part = ""};
        cmp_count(&c, &n, base ? &base->totals : NULL, &sent->totals, &actual->tally.totals);
    }
    return c.compared;
}
