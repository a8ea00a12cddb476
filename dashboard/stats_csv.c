#include "stats_csv.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing string that remembers a failed allocation, so rows are written
 * without a check per field and the result is dropped once at the end. */
struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool ok;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (!b->ok)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->ok = false;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->ok = false;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* RFC 4180: quote a field holding a separator, a quote or a line break. */
static void sb_field(struct sbuf *b, const char *s)
{
    if (s == NULL)
        s = "";
    if (strpbrk(s, ",\"\r\n") == NULL) {
        sb_add(b, s, strlen(s));
        return;
    }
    sb_add(b, "\"", 1);
    for (;;) {
        size_t n = strcspn(s, "\"");
        sb_add(b, s, n);
        s += n;
        if (*s == '\0')
            break;
        sb_add(b, "\"\"", 2);
        s++;
    }
    sb_add(b, "\"", 1);
}

/* A count as the snapshot has it; empty when missing (never invented). */
static void sb_count(struct sbuf *b, const json_t *v)
{
    char num[32];
    if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_add(b, num, strlen(num));
    }
}

struct row {
    const json_t *q;
    const char *state;
    const char *dimension;
    const char *key;
    const char *label;
    const json_t *answers;
    const json_t *right; /* NULL: empty, unless the _zero flag says 0 */
    const json_t *wrong;
    bool right_zero;
    bool wrong_zero;
};

static void sb_row(struct sbuf *b, const struct row *r)
{
    sb_count(b, json_object_get(r->q, "id"));
    sb_add(b, ",", 1);
    sb_field(b, r->state);
    sb_add(b, ",", 1);
    sb_field(b, r->dimension);
    sb_add(b, ",", 1);
    sb_field(b, r->key);
    sb_add(b, ",", 1);
    sb_field(b, r->label);
    sb_add(b, ",", 1);
    sb_count(b, r->answers);
    sb_add(b, ",", 1);
    if (r->right_zero)
        sb_add(b, "0", 1);
    else
        sb_count(b, r->right);
    sb_add(b, ",", 1);
    if (r->wrong_zero)
        sb_add(b, "0", 1);
    else
        sb_count(b, r->wrong);
    sb_add(b, "\r\n", 2);
}

static void question_rows(struct sbuf *b, const json_t *q)
{
    const char *state = json_string_value(json_object_get(q, "state"));
    struct row r = {.q = q, .state = state, .dimension = "total", .key = "",
                    .label = json_string_value(json_object_get(q, "text")),
                    .answers = json_object_get(q, "answers"),
                    .right = json_object_get(q, "right"),
                    .wrong = json_object_get(q, "wrong")};
    sb_row(b, &r);

    size_t i;
    json_t *e;
    char key[32];
    json_array_foreach(json_object_get(q, "by_age"), i, e) {
        snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(e, "bucket")));
        r = (struct row){.q = q, .state = state, .dimension = "age", .key = key,
                         .label = json_string_value(json_object_get(e, "label")),
                         .answers = json_object_get(e, "answers"),
                         .right = json_object_get(e, "right"),
                         .wrong = json_object_get(e, "wrong")};
        sb_row(b, &r);
    }
    json_array_foreach(json_object_get(q, "by_country"), i, e) {
        r = (struct row){.q = q, .state = state, .dimension = "country",
                         .key = json_string_value(json_object_get(e, "country")), .label = "",
                         .answers = json_object_get(e, "answers"),
                         .right = json_object_get(e, "right"),
                         .wrong = json_object_get(e, "wrong")};
        sb_row(b, &r);
    }
    /* Per option the split is the option itself: all right for the correct
     * one, all wrong for the others, and unknown while "correct" is secret. */
    const json_t *correct = json_object_get(q, "correct");
    const json_t *options = json_object_get(q, "options");
    json_array_foreach(json_object_get(q, "by_answer"), i, e) {
        snprintf(key, sizeof(key), "%zu", i);
        bool known = json_is_integer(correct);
        bool is_correct = known && json_integer_value(correct) == (json_int_t)i;
        r = (struct row){.q = q, .state = state, .dimension = "option", .key = key,
                         .label = json_string_value(json_array_get(options, i)),
                         .answers = e,
                         .right = known && is_correct ? e : NULL,
                         .wrong = known && !is_correct ? e : NULL,
                         .right_zero = known && !is_correct,
                         .wrong_zero = known && is_correct};
        sb_row(b, &r);
    }
}

char *stats_csv_build(const json_t *snapshot, size_t *len)
{
    const json_t *qs = json_object_get(snapshot, "questions");
    if (!json_is_array(qs))
        return NULL;
    struct sbuf b = {.ok = true};
    sb_add(&b, STATS_CSV_HEADER, strlen(STATS_CSV_HEADER));
    size_t i;
    const json_t *q;
    json_array_foreach(qs, i, q) {
        if (json_is_integer(json_object_get(q, "id")))
            question_rows(&b, q);
    }
    if (!b.ok) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
