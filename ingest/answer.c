#include "answer.h"

#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "country.h"

static bool fail(struct answer_error *err, int status, const char *error, const char *field)
{
    err->status = status;
    err->error = error;
    err->field = field;
    return false;
}

/* ---- the members an answer reads, whichever parser found them ---- */

enum member_kind { M_ABSENT = 0, M_INT, M_STRING, M_NULL, M_OTHER };

struct member {
    enum member_kind kind;
    long long i;        /* M_INT */
    const char *s;      /* M_STRING, not NUL-terminated */
    size_t len;
};

enum { F_QUESTION, F_ANSWER, F_AGE, F_COUNTRY, F_USER, N_FIELDS };
static const char *const field_names[N_FIELDS] = {"question", "answer", "age", "country",
                                                  "user"};

/* A JSON integer within [min, max]; 3.0, "3" and true are not integers. */
static bool int_field(const struct member *m, long long min, long long max, uint32_t *out)
{
    if (m->kind != M_INT || m->i < min || m->i > max)
        return false;
    *out = (uint32_t)m->i;
    return true;
}

static bool validate(const struct eventfile *ef, const struct member f[N_FIELDS],
                     struct answer *out, struct answer_error *err)
{
    struct answer a;
    memset(&a, 0, sizeof(a));
    if (!int_field(&f[F_QUESTION], 0, INT32_MAX, &a.question))
        return fail(err, 400, "invalid_field", "question");
    a.question_index = eventfile_question_index(ef, a.question);
    if (a.question_index < 0)
        return fail(err, 404, "unknown_question", NULL);
    const struct event_question *q = &ef->questions[a.question_index];
    if (!int_field(&f[F_ANSWER], 0, (long long)q->n_options - 1, &a.option))
        return fail(err, 400, "invalid_field", "answer");
    if (!int_field(&f[F_AGE], AGE_MIN, AGE_MAX, &a.age))
        return fail(err, 400, "invalid_field", "age");

    /* A missing, null or unassigned country is counted as "unknown"; only a
     * value that cannot be a code at all is refused. */
    const struct member *c = &f[F_COUNTRY];
    if (c->kind == M_ABSENT || c->kind == M_NULL)
        a.country = COUNTRY_UNKNOWN;
    else if (c->kind == M_STRING)
        a.country = country_lookup(c->s, c->len);
    else
        return fail(err, 400, "invalid_field", "country");

    const struct member *u = &f[F_USER];
    if (u->kind != M_ABSENT && u->kind != M_NULL) {
        if (u->kind != M_STRING || !fans_user_ok(u->s, u->len))
            return fail(err, 400, "invalid_field", "user");
        a.has_user = true;
        memcpy(a.user, u->s, u->len);
        a.user[u->len] = '\0';
    }
    *out = a;
    return true;
}

/* ---- the fast reader ---- */

/* The bodies phones send are flat objects of the known members with plain
 * values. They are read here without building a tree (jansson allocates per
 * member); anything else (an escape, a byte outside printable ASCII, nesting,
 * true/false, an unknown or repeated member, a number with a fraction, an
 * exponent, a leading zero or more than 18 digits) is left to jansson, so
 * both paths take and refuse exactly the same bodies. false: ask jansson. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string without escapes: [p, *send) after the opening quote. */
static const char *plain_string(const char *p, const char *end, const char **s, size_t *len)
{
    const char *start = p;
    while (p < end && *p != '"') {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return NULL;
        p++;
    }
    if (p == end)
        return NULL;
    *s = start;
    *len = (size_t)(p - start);
    return p + 1;
}

static bool fast_read(const char *p, const char *end, struct member f[N_FIELDS])
{
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return false;
    p = skip_ws(p, end);
    if (p < end && *p == '}')
        return skip_ws(p + 1, end) == end;
    for (;;) {
        const char *name;
        size_t nlen;
        if (p == end || *p != '"' || (p = plain_string(p + 1, end, &name, &nlen)) == NULL)
            return false;
        int k = 0;
        while (k < N_FIELDS &&
               (strlen(field_names[k]) != nlen || memcmp(field_names[k], name, nlen) != 0))
            k++;
        if (k == N_FIELDS || f[k].kind != M_ABSENT)
            return false;
        p = skip_ws(p, end);
        if (p == end || *p++ != ':')
            return false;
        p = skip_ws(p, end);
        if (p == end)
            return false;
        struct member *m = &f[k];
        if (*p == '"') {
            if ((p = plain_string(p + 1, end, &m->s, &m->len)) == NULL)
                return false;
            m->kind = M_STRING;
        } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            p += 4;
            m->kind = M_NULL;
        } else {
            bool neg = *p == '-';
            if (neg)
                p++;
            const char *digits = p;
            long long v = 0;
            while (p < end && *p >= '0' && *p <= '9' && p - digits < 18)
                v = v * 10 + (*p++ - '0');
            size_t nd = (size_t)(p - digits);
            if (nd == 0 || (digits[0] == '0' && (nd > 1 || neg)))
                return false;
            if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
                return false;
            m->kind = M_INT;
            m->i = neg ? -v : v;
        }
        p = skip_ws(p, end);
        if (p == end)
            return false;
        if (*p == '}')
            return skip_ws(p + 1, end) == end;
        if (*p++ != ',')
            return false;
        p = skip_ws(p, end);
    }
}

/* ---- jansson: every other body ---- */

static void json_member(json_t *root, const char *name, struct member *m)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        m->kind = M_ABSENT;
    } else if (json_is_integer(v)) {
        m->kind = M_INT;
        m->i = (long long)json_integer_value(v);
    } else if (json_is_string(v)) {
        m->kind = M_STRING;
        m->s = json_string_value(v);
        m->len = json_string_length(v);
    } else if (json_is_null(v)) {
        m->kind = M_NULL;
    } else {
        m->kind = M_OTHER;
    }
}

static bool parse(const struct eventfile *ef, const char *body, size_t len, struct answer *out,
                  struct answer_error *err, bool fast)
{
    /* jansson stops quietly at a NUL after a number: a body holding one is
     * not the JSON it seems to be. */
    if (memchr(body, '\0', len) != NULL)
        return fail(err, 400, "invalid_json", NULL);
    struct member f[N_FIELDS];
    memset(f, 0, sizeof(f));
    if (fast && fast_read(body, body + len, f))
        return validate(ef, f, out, err);

    memset(f, 0, sizeof(f));
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(err, 400, "invalid_json", NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(err, 400, "invalid_json", NULL);
    }
    for (int k = 0; k < N_FIELDS; k++)
        json_member(root, field_names[k], &f[k]);
    bool ok = validate(ef, f, out, err); /* before the tree (and its strings) goes */
    json_decref(root);
    return ok;
}

bool answer_parse(const struct eventfile *ef, const char *body, size_t len, struct answer *out,
                  struct answer_error *err)
{
    return parse(ef, body, len, out, err, true);
}

bool answer_parse_jansson(const struct eventfile *ef, const char *body, size_t len,
                          struct answer *out, struct answer_error *err)
{
    return parse(ef, body, len, out, err, false);
}

void answer_counters(const struct eventfile *ef, const struct answer *a,
                     struct answer_counters *out)
{
    const struct event_question *q = &ef->questions[a->question_index];
    out->question = a->question;
    out->outcome = a->option == q->correct ? KEY_RIGHT : KEY_WRONG;
    out->age_bucket = eventfile_age_bucket(ef, a->age);
    out->country = a->country;
    out->option = a->option;
}

bool answer_content_type_ok(const char *ct)
{
    static const char json[] = "application/json";
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, json, sizeof(json) - 1) != 0)
        return false;
    char next = ct[sizeof(json) - 1];
    return next == '\0' || next == ';' || next == ' ';
}
