#include "agg_stats.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util.h"

#define COUNT_MAX ((uint64_t)INT64_MAX)

uint64_t agg_sat_add(uint64_t a, uint64_t b)
{
    if (a >= COUNT_MAX || b >= COUNT_MAX - a)
        return COUNT_MAX;
    return a + b;
}

void agg_stats_grow_only(uint64_t *kept, const uint64_t *read, size_t first, size_t n,
                         struct agg_drops *drops)
{
    for (size_t i = first; i < first + n; i++) {
        if (read[i] >= kept[i]) {
            kept[i] = read[i];
            continue;
        }
        if (drops->listed < AGG_MAX_WARNINGS) {
            drops->list[drops->listed++] =
                (struct agg_drop){.key = i, .old_value = kept[i], .new_value = read[i]};
        }
        drops->total++;
    }
}

static void add_mismatch(struct agg_checks *out, uint32_t qid, const char *check, uint64_t expected,
                         uint64_t actual, size_t *found)
{
    if (expected == actual)
        return;
    if (out->listed < AGG_MAX_MISMATCHES) {
        out->list[out->listed++] = (struct agg_mismatch){
            .question = qid, .check = check, .expected = expected, .actual = actual};
    }
    out->total++;
    (*found)++;
}

size_t agg_stats_check(const struct eventfile *ef, uint32_t qi, const struct agg_counts *c,
                       struct agg_checks *out)
{
    const struct event_question *q = &ef->questions[qi];
    uint64_t age_r = 0, age_w = 0, ctry_r = 0, ctry_w = 0, opts = 0;
    for (uint32_t b = 0; b < ef->n_age_buckets; b++) {
        age_r = agg_sat_add(age_r, c->age_right[b]);
        age_w = agg_sat_add(age_w, c->age_wrong[b]);
    }
    for (int i = 0; i < COUNTRY_COUNT; i++) {
        ctry_r = agg_sat_add(ctry_r, c->country_right[i]);
        ctry_w = agg_sat_add(ctry_w, c->country_wrong[i]);
    }
    for (uint32_t k = 0; k < q->n_options; k++)
        opts = agg_sat_add(opts, c->by_answer[k]);
    uint64_t answers = agg_sat_add(c->right, c->wrong);

    /* The names never carry the correct option's index: the checks are
     * published while the question is still open. */
    size_t found = 0;
    add_mismatch(out, q->id, "by_age.right", c->right, age_r, &found);
    add_mismatch(out, q->id, "by_age.wrong", c->wrong, age_w, &found);
    add_mismatch(out, q->id, "by_country.right", c->right, ctry_r, &found);
    add_mismatch(out, q->id, "by_country.wrong", c->wrong, ctry_w, &found);
    add_mismatch(out, q->id, "by_answer", answers, opts, &found);
    add_mismatch(out, q->id, "by_answer.correct", c->right, c->by_answer[q->correct], &found);
    return found;
}

int agg_stats_ratio_cmp(uint64_t r1, uint64_t a1, uint64_t r2, uint64_t a2)
{
    /* r1/a1 vs r2/a2 by cross-multiplication, exact: doubles would call two
     * different ratios of large counts equal. */
#ifdef __SIZEOF_INT128__
    unsigned __int128 x = (unsigned __int128)r1 * a2;
    unsigned __int128 y = (unsigned __int128)r2 * a1;
#else
    long double x = (long double)r1 * (long double)a2;
    long double y = (long double)r2 * (long double)a1;
#endif
    return x < y ? -1 : x > y ? 1 : 0;
}

double agg_stats_ratio(uint64_t right, uint64_t answers)
{
    if (answers == 0)
        return 0.0;
    return round((double)right / (double)answers * 10000.0) / 10000.0;
}

/* ---- JSON ---------------------------------------------------------------- */

/* Builders that remember a failure instead of checking every call: jansson
 * returns NULL or -1 only when memory runs out, and one check at the end
 * then drops the whole snapshot. Both take v over (also on failure) and
 * return it, or NULL when it was not attached (and is freed), so a NULL
 * parent passed on is safe. */
struct jb {
    bool ok;
};

static json_t *put(struct jb *b, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL || obj == NULL) {
        json_decref(v);
        b->ok = false;
        return NULL;
    }
    /* Keys are ASCII literals: skip jansson's UTF-8 check of each. */
    if (json_object_set_new_nocheck(obj, key, v) != 0) { /* frees v */
        b->ok = false;
        return NULL;
    }
    return v;
}

static json_t *push(struct jb *b, json_t *arr, json_t *v)
{
    if (v == NULL || arr == NULL) {
        json_decref(v);
        b->ok = false;
        return NULL;
    }
    if (json_array_append_new(arr, v) != 0) { /* frees v */
        b->ok = false;
        return NULL;
    }
    return v;
}

static json_t *jcount(uint64_t v)
{
    return json_integer((json_int_t)(v > COUNT_MAX ? COUNT_MAX : v));
}

static json_t *jtime(uint64_t wall_ms)
{
    char buf[40];
    util_format_iso8601(wall_ms, buf, sizeof(buf));
    return json_string(buf);
}

/* One country's figures, for sorting. */
struct ctry {
    int country;
    uint64_t answers;
    uint64_t right;
    uint64_t wrong;
};

static int code_cmp(int a, int b)
{
    return strcmp(country_code(a), country_code(b));
}

/* by_country order: answers desc, then code asc. */
static int cmp_by_answers(const void *pa, const void *pb)
{
    const struct ctry *a = pa, *b = pb;
    if (a->answers != b->answers)
        return a->answers > b->answers ? -1 : 1;
    return code_cmp(a->country, b->country);
}

/* Ranking order: right ratio desc, answers desc, code asc. */
static int cmp_rank(const void *pa, const void *pb)
{
    const struct ctry *a = pa, *b = pb;
    int r = agg_stats_ratio_cmp(a->right, a->answers, b->right, b->answers);
    if (r != 0)
        return -r;
    if (a->answers != b->answers)
        return a->answers > b->answers ? -1 : 1;
    return code_cmp(a->country, b->country);
}

/* A country may be ranked: enough answers, and a real country. */
static bool rankable(const struct eventfile *ef, const struct ctry *c)
{
    return c->country != COUNTRY_UNKNOWN && c->answers > 0 &&
           c->answers >= ef->min_country_answers;
}

static json_t *country_obj(struct jb *b, const struct ctry *c, bool with_wrong)
{
    json_t *o = json_object();
    put(b, o, "country", json_string_nocheck(country_code(c->country)));
    put(b, o, "answers", jcount(c->answers));
    put(b, o, "right", jcount(c->right));
    if (with_wrong)
        put(b, o, "wrong", jcount(c->wrong));
    put(b, o, "right_ratio", json_real(agg_stats_ratio(c->right, c->answers)));
    return o;
}

static json_t *question_json(struct jb *b, const struct eventfile *ef, uint32_t qi,
                             const struct agg_counts *c, const struct qstate *st,
                             struct ctry *scratch)
{
    const struct event_question *q = &ef->questions[qi];
    json_t *o = json_object();
    put(b, o, "id", json_integer(q->id));
    put(b, o, "text", json_string(q->text));
    json_t *opts = put(b, o, "options", json_array());
    for (uint32_t k = 0; k < q->n_options; k++)
        push(b, opts, json_string(q->options[k]));
    put(b, o, "state", json_string(qstate_kind_str(st->kind)));
    /* Which option is right stays secret until the question closes. */
    if (st->kind == QSTATE_CLOSED)
        put(b, o, "correct", json_integer(q->correct));
    if (st->kind != QSTATE_NOT_OPEN && st->open_ms > 0)
        put(b, o, "opened_at", jtime(st->open_ms));
    if (st->kind == QSTATE_CLOSED && st->close_ms > 0)
        put(b, o, "closed_at", jtime(st->close_ms));

    uint64_t answers = agg_sat_add(c->right, c->wrong);
    put(b, o, "answers", jcount(answers));
    put(b, o, "right", jcount(c->right));
    put(b, o, "wrong", jcount(c->wrong));
    put(b, o, "right_ratio", json_real(agg_stats_ratio(c->right, answers)));

    json_t *by_answer = put(b, o, "by_answer", json_array());
    for (uint32_t k = 0; k < q->n_options; k++)
        push(b, by_answer, jcount(c->by_answer[k]));

    json_t *by_age = put(b, o, "by_age", json_array());
    for (uint32_t a = 0; a < ef->n_age_buckets; a++) {
        json_t *e = push(b, by_age, json_object());
        put(b, e, "bucket", json_integer(a + 1));
        put(b, e, "label", json_string(ef->age_buckets[a].label));
        put(b, e, "answers", jcount(agg_sat_add(c->age_right[a], c->age_wrong[a])));
        put(b, e, "right", jcount(c->age_right[a]));
        put(b, e, "wrong", jcount(c->age_wrong[a]));
    }

    size_t n = 0;
    for (int i = 0; i < COUNTRY_COUNT; i++) {
        uint64_t ans = agg_sat_add(c->country_right[i], c->country_wrong[i]);
        if (ans == 0)
            continue;
        scratch[n++] = (struct ctry){.country = i,
                                     .answers = ans,
                                     .right = c->country_right[i],
                                     .wrong = c->country_wrong[i]};
    }
    qsort(scratch, n, sizeof(*scratch), cmp_by_answers);
    json_t *by_country = put(b, o, "by_country", json_array());
    const struct ctry *best = NULL;
    for (size_t i = 0; i < n; i++) {
        push(b, by_country, country_obj(b, &scratch[i], true));
        if (rankable(ef, &scratch[i]) && (best == NULL || cmp_rank(&scratch[i], best) < 0))
            best = &scratch[i];
    }
    if (best != NULL) {
        json_t *e = put(b, o, "best_country", json_object());
        put(b, e, "country", json_string_nocheck(country_code(best->country)));
        put(b, e, "answers", jcount(best->answers));
        put(b, e, "right_ratio", json_real(agg_stats_ratio(best->right, best->answers)));
    } else {
        put(b, o, "best_country", json_null());
    }
    return o;
}

static json_t *warnings_json(struct jb *b, const struct agg_snapshot_in *in)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < in->n_notes; i++)
        push(b, arr, json_string(in->notes[i]));
    const struct agg_drops *d = in->drops;
    if (d == NULL || in->keys == NULL)
        return arr;
    char msg[256];
    for (size_t i = 0; i < d->listed; i++) {
        const struct agg_drop *e = &d->list[i];
        snprintf(msg, sizeof(msg),
                 "counter %s went backwards (%" PRIu64 " -> %" PRIu64
                 "): the store lost data; keeping %" PRIu64,
                 in->keys[e->key], e->old_value, e->new_value, e->old_value);
        push(b, arr, json_string(msg));
    }
    if (d->total > d->listed) {
        snprintf(msg, sizeof(msg), "... and %zu more counters went backwards",
                 d->total - d->listed);
        push(b, arr, json_string(msg));
    }
    return arr;
}

static json_t *checks_json(struct jb *b, const struct agg_checks *ch)
{
    json_t *o = json_object();
    size_t total = ch != NULL ? ch->total : 0;
    put(b, o, "ok", json_boolean(total == 0));
    put(b, o, "mismatch_count", json_integer((json_int_t)total));
    json_t *arr = put(b, o, "mismatches", json_array());
    for (size_t i = 0; ch != NULL && i < ch->listed; i++) {
        const struct agg_mismatch *m = &ch->list[i];
        json_t *e = push(b, arr, json_object());
        put(b, e, "question", json_integer(m->question));
        put(b, e, "check", json_string(m->check));
        put(b, e, "expected", jcount(m->expected));
        put(b, e, "actual", jcount(m->actual));
    }
    return o;
}

char *agg_stats_build_json(const struct agg_snapshot_in *in, size_t *len)
{
    const struct eventfile *ef = in->ef;
    struct jb b = {.ok = true};
    char *out = NULL;
    struct ctry *scratch = calloc(COUNTRY_COUNT, sizeof(*scratch));
    uint64_t *all_right = calloc(COUNTRY_COUNT, sizeof(*all_right));
    uint64_t *all_wrong = calloc(COUNTRY_COUNT, sizeof(*all_wrong));
    json_t *root = json_object();
    if (scratch == NULL || all_right == NULL || all_wrong == NULL || root == NULL)
        goto done;

    char now[40];
    util_format_iso8601(in->now_ms, now, sizeof(now));
    put(&b, root, "event", json_string(ef->name));
    put(&b, root, "generation", jcount(in->generation));
    put(&b, root, "generated_at", json_string(now));

    uint64_t right = 0, wrong = 0;
    json_t *questions = json_array();
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        const struct agg_counts *c = &in->counts[qi];
        right = agg_sat_add(right, c->right);
        wrong = agg_sat_add(wrong, c->wrong);
        for (int i = 0; i < COUNTRY_COUNT; i++) {
            all_right[i] = agg_sat_add(all_right[i], c->country_right[i]);
            all_wrong[i] = agg_sat_add(all_wrong[i], c->country_wrong[i]);
        }
        push(&b, questions, question_json(&b, ef, qi, c, &in->states[qi], scratch));
    }
    json_t *totals = put(&b, root, "totals", json_object());
    put(&b, totals, "answers", jcount(agg_sat_add(right, wrong)));
    put(&b, totals, "right", jcount(right));
    put(&b, totals, "wrong", jcount(wrong));
    put(&b, root, "questions", questions);

    size_t n = 0;
    for (int i = 0; i < COUNTRY_COUNT; i++) {
        struct ctry c = {.country = i,
                         .answers = agg_sat_add(all_right[i], all_wrong[i]),
                         .right = all_right[i],
                         .wrong = all_wrong[i]};
        if (rankable(ef, &c))
            scratch[n++] = c;
    }
    qsort(scratch, n, sizeof(*scratch), cmp_rank);
    json_t *countries = put(&b, root, "countries", json_array());
    for (size_t i = 0; i < n; i++)
        push(&b, countries, country_obj(&b, &scratch[i], true));

    /* Always there, empty until a question has closed, so readers need no
     * special case. */
    json_t *fans = put(&b, root, "ultimate_fans", json_array());
    for (size_t i = 0; in->fans != NULL && i < in->n_fans && i < FANS_SHOWN; i++) {
        json_t *e = push(&b, fans, json_object());
        put(&b, e, "rank", json_integer((json_int_t)i + 1));
        put(&b, e, "user", json_string(in->fans[i].user));
        put(&b, e, "right", jcount(in->fans[i].right));
        put(&b, e, "total_ms", jcount(in->fans[i].total_ms));
    }
    put(&b, root, "warnings", warnings_json(&b, in));
    put(&b, root, "checks", checks_json(&b, in->checks));
    if (!b.ok)
        goto done;

    /* Ratios are rounded to 4 decimals, so 4 significant digits print them
     * exactly ("0.7", not "0.69999999999999996"); integers are unaffected. */
    out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(4));
    if (out != NULL)
        *len = strlen(out);

done:
    json_decref(root);
    free(all_wrong);
    free(all_right);
    free(scratch);
    return out;
}
