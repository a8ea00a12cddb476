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

/* A JSON integer within [min, max]; 3.0, "3" and true are not integers. */
static bool int_field(json_t *root, const char *name, json_int_t min, json_int_t max,
                      uint32_t *out)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL || !json_is_integer(v))
        return false;
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return false;
    *out = (uint32_t)n;
    return true;
}

static bool user_ok(const char *s, size_t len)
{
    if (len < 1 || len > ANSWER_USER_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool answer_parse(const struct eventfile *ef, const char *body, size_t len, struct answer *out,
                  struct answer_error *err)
{
    /* jansson stops quietly at a NUL after a number: a body holding one is
     * not the JSON it seems to be. */
    if (memchr(body, '\0', len) != NULL)
        return fail(err, 400, "invalid_json", NULL);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(err, 400, "invalid_json", NULL);
    bool ok = false;
    if (!json_is_object(root)) {
        fail(err, 400, "invalid_json", NULL);
        goto done;
    }

    struct answer a;
    memset(&a, 0, sizeof(a));

    if (!int_field(root, "question", 0, INT32_MAX, &a.question)) {
        fail(err, 400, "invalid_field", "question");
        goto done;
    }
    a.question_index = eventfile_question_index(ef, a.question);
    if (a.question_index < 0) {
        fail(err, 404, "unknown_question", NULL);
        goto done;
    }
    const struct event_question *q = &ef->questions[a.question_index];
    if (!int_field(root, "answer", 0, (json_int_t)q->n_options - 1, &a.option)) {
        fail(err, 400, "invalid_field", "answer");
        goto done;
    }
    if (!int_field(root, "age", AGE_MIN, AGE_MAX, &a.age)) {
        fail(err, 400, "invalid_field", "age");
        goto done;
    }

    /* A missing, null or unassigned country is counted as "unknown"; only a
     * value that cannot be a code at all is refused. */
    json_t *c = json_object_get(root, "country");
    if (c == NULL || json_is_null(c)) {
        a.country = COUNTRY_UNKNOWN;
    } else if (json_is_string(c)) {
        a.country = country_lookup(json_string_value(c), json_string_length(c));
    } else {
        fail(err, 400, "invalid_field", "country");
        goto done;
    }

    json_t *u = json_object_get(root, "user");
    if (u != NULL && !json_is_null(u)) {
        if (!json_is_string(u) || !user_ok(json_string_value(u), json_string_length(u))) {
            fail(err, 400, "invalid_field", "user");
            goto done;
        }
        a.has_user = true;
        memcpy(a.user, json_string_value(u), json_string_length(u) + 1);
    }

    *out = a;
    ok = true;
done:
    json_decref(root);
    return ok;
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
