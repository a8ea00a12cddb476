#include "eventfile.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define DEFAULT_SHARDS 100
#define DEFAULT_COUNTRY_SHARDS 3
#define DEFAULT_HOT_SHARDS 15
#define DEFAULT_TTL_S 86400
#define DEFAULT_MIN_COUNTRY_ANSWERS 100
#define LABEL_MAX_BYTES 64
#define TEXT_MAX_BYTES 1024
#define OPTION_MAX_BYTES 256
#define PATH_MAX_LEN 96
/* json_int_t is long long wherever jansson has it (2.x on Linux). */
#define JSON_INT_MAX LLONG_MAX
_Static_assert(sizeof(json_int_t) == sizeof(long long), "json_int_t is long long");

/* JSON integers only: jansson reads 1.5 and 1e3 as reals, "3" is a string,
 * true a boolean; all of them are rejected here, not converted. */
static bool check_int(const json_t *v, const char *path, json_int_t min, json_int_t max,
                      json_int_t *out, char *err, size_t errlen)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i >= min && i <= max) {
            *out = i;
            return true;
        }
    }
    if (max == JSON_INT_MAX)
        return util_fail(err, errlen, "%s: must be an integer >= %lld", path, (long long)min);
    return util_fail(err, errlen, "%s: must be an integer %lld..%lld", path, (long long)min,
                     (long long)max);
}

/* An optional integer field of obj: def when absent. */
static bool opt_int(const json_t *obj, const char *field, json_int_t min, json_int_t max,
                    json_int_t def, json_int_t *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        *out = def;
        return true;
    }
    return check_int(v, field, min, max, out, err, errlen);
}

/* A required non-empty string of at most maxbytes bytes, copied (owned by
 * the caller). jansson has already rejected invalid UTF-8 and "\u0000". */
static bool check_string(const json_t *v, const char *path, size_t maxbytes, char **out,
                         char *err, size_t errlen)
{
    if (v == NULL)
        return util_fail(err, errlen, "%s: required", path);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > maxbytes)
        return util_fail(err, errlen, "%s: must be a non-empty string of at most %zu bytes", path,
                         maxbytes);
    *out = strdup(json_string_value(v));
    if (*out == NULL)
        return util_fail(err, errlen, "%s: out of memory", path);
    return true;
}

/* A user-supplied object key, shortened and made printable for a message. */
static void printable_key(const char *key, char *buf, size_t len)
{
    size_t i = 0;
    for (; key[i] != '\0' && i + 1 < len; i++) {
        unsigned char c = (unsigned char)key[i];
        buf[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    buf[i] = '\0';
}

static bool parse_name(const json_t *root, struct eventfile *ef, char *err, size_t errlen)
{
    const json_t *v = json_object_get(root, "event");
    if (v == NULL)
        return util_fail(err, errlen, "event: required, must match [a-z0-9-]{1,%d}", EVENT_NAME_MAX);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    bool ok = json_is_string(v) && n >= 1 && n <= EVENT_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = s[i];
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    }
    if (!ok)
        return util_fail(err, errlen, "event: must match [a-z0-9-]{1,%d}", EVENT_NAME_MAX);
    memcpy(ef->name, s, n);
    ef->name[n] = '\0';
    return true;
}

static bool parse_sharding(const json_t *root, struct eventfile *ef, char *err, size_t errlen)
{
    json_int_t shards = 0, country_shards = 0;
    if (!opt_int(root, "shards", 1, EVENT_MAX_SHARDS, DEFAULT_SHARDS, &shards, err, errlen) ||
        !opt_int(root, "country_shards", 1, EVENT_MAX_SHARDS, DEFAULT_COUNTRY_SHARDS,
                 &country_shards, err, errlen))
        return false;
    ef->shards = (uint32_t)shards;
    ef->country_shards = (uint32_t)country_shards;
    for (int i = 0; i < COUNTRY_COUNT; i++)
        ef->country_shard_count[i] = (uint16_t)country_shards;

    json_t *hot = json_object_get(root, "hot_countries");
    if (hot == NULL) {
        static const char *const defaults[] = {"gb", "us", "unknown"};
        for (size_t i = 0; i < LT_ARRAY_LEN(defaults); i++)
            ef->country_shard_count[country_lookup_strict(defaults[i], strlen(defaults[i]))] =
                DEFAULT_HOT_SHARDS;
        return true;
    }
    if (!json_is_object(hot))
        return util_fail(err, errlen, "hot_countries: must be an object of country code -> shards");

    /* Given, it replaces the default list entirely: a show in one country
     * may want no other hot country. */
    bool seen[COUNTRY_COUNT] = {false};
    const char *key;
    json_t *val;
    char shown[20];
    char path[PATH_MAX_LEN];
    json_object_foreach(hot, key, val) {
        printable_key(key, shown, sizeof(shown));
        snprintf(path, sizeof(path), "hot_countries.%s", shown);
        int idx = country_lookup_strict(key, strlen(key));
        if (idx < 0)
            return util_fail(err, errlen, "%s: not an ISO 3166-1 alpha-2 code", path);
        if (seen[idx])
            return util_fail(err, errlen, "%s: the same country as another key (%s)", path,
                             country_code(idx));
        seen[idx] = true;
        json_int_t n = 0;
        if (!check_int(val, path, 1, EVENT_MAX_SHARDS, &n, err, errlen))
            return false;
        ef->country_shard_count[idx] = (uint16_t)n;
    }
    return true;
}

static bool default_age_buckets(struct eventfile *ef, char *err, size_t errlen)
{
    static const struct {
        const char *label;
        uint32_t max;
    } defaults[] = {{"under 18", 17}, {"18-24", 24}, {"25+", AGE_MAX}};
    ef->age_buckets = calloc(LT_ARRAY_LEN(defaults), sizeof(*ef->age_buckets));
    if (ef->age_buckets == NULL)
        return util_fail(err, errlen, "age_buckets: out of memory");
    ef->n_age_buckets = LT_ARRAY_LEN(defaults);
    for (size_t i = 0; i < LT_ARRAY_LEN(defaults); i++) {
        ef->age_buckets[i].label = strdup(defaults[i].label);
        if (ef->age_buckets[i].label == NULL)
            return util_fail(err, errlen, "age_buckets: out of memory");
        ef->age_buckets[i].max = defaults[i].max;
    }
    return true;
}

/* Buckets partition AGE_MIN..AGE_MAX: maxima strictly increase, only the
 * last reaches AGE_MAX (a bucket after it could never be chosen), and the
 * last must reach it (an age without a bucket could not be counted). */
static bool parse_age_buckets(const json_t *root, struct eventfile *ef, char *err, size_t errlen)
{
    const json_t *v = json_object_get(root, "age_buckets");
    if (v == NULL)
        return default_age_buckets(ef, err, errlen);
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n == 0 || n > EVENT_MAX_AGE_BUCKETS)
        return util_fail(err, errlen, "age_buckets: must be an array of 1..%d buckets",
                         EVENT_MAX_AGE_BUCKETS);
    ef->age_buckets = calloc(n, sizeof(*ef->age_buckets));
    if (ef->age_buckets == NULL)
        return util_fail(err, errlen, "age_buckets: out of memory");
    ef->n_age_buckets = (uint32_t)n;

    char path[PATH_MAX_LEN];
    for (size_t i = 0; i < n; i++) {
        struct event_age_bucket *b = &ef->age_buckets[i];
        const json_t *o = json_array_get(v, i);
        if (!json_is_object(o))
            return util_fail(err, errlen, "age_buckets[%zu]: must be an object {\"label\", \"max\"}", i);

        snprintf(path, sizeof(path), "age_buckets[%zu].label", i);
        if (!check_string(json_object_get(o, "label"), path, LABEL_MAX_BYTES, &b->label, err,
                          errlen))
            return false;

        snprintf(path, sizeof(path), "age_buckets[%zu].max", i);
        const json_t *m = json_object_get(o, "max");
        if (m == NULL)
            return util_fail(err, errlen, "%s: required", path);
        json_int_t max = 0;
        if (!check_int(m, path, AGE_MIN, UINT32_MAX, &max, err, errlen))
            return false;
        b->max = (uint32_t)max;
        if (i > 0 && b->max <= ef->age_buckets[i - 1].max)
            return util_fail(err, errlen, "%s: must be greater than age_buckets[%zu].max (%u)", path,
                             i - 1, ef->age_buckets[i - 1].max);
        if (i + 1 < n && b->max >= AGE_MAX)
            return util_fail(err, errlen,
                             "%s: only the last bucket may reach %d (the buckets after it would "
                             "never be used)",
                             path, AGE_MAX);
        if (i + 1 == n && b->max < AGE_MAX)
            return util_fail(err, errlen, "%s: the last bucket must reach %d so every age has a bucket",
                             path, AGE_MAX);
    }
    return true;
}

static bool parse_question(const json_t *o, size_t i, struct event_question *q, char *err,
                           size_t errlen)
{
    char path[PATH_MAX_LEN];
    if (!json_is_object(o))
        return util_fail(err, errlen, "questions[%zu]: must be an object", i);

    snprintf(path, sizeof(path), "questions[%zu].id", i);
    const json_t *v = json_object_get(o, "id");
    if (v == NULL)
        return util_fail(err, errlen, "%s: required", path);
    json_int_t id = 0;
    if (!check_int(v, path, 1, EVENT_MAX_QUESTION_ID, &id, err, errlen))
        return false;
    q->id = (uint32_t)id;

    snprintf(path, sizeof(path), "questions[%zu].text", i);
    if (!check_string(json_object_get(o, "text"), path, TEXT_MAX_BYTES, &q->text, err, errlen))
        return false;

    snprintf(path, sizeof(path), "questions[%zu].options", i);
    v = json_object_get(o, "options");
    if (v == NULL)
        return util_fail(err, errlen, "%s: required", path);
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n < 2 || n > EVENT_MAX_OPTIONS)
        return util_fail(err, errlen, "%s: must be an array of 2..%d strings", path, EVENT_MAX_OPTIONS);
    q->options = calloc(n, sizeof(*q->options));
    if (q->options == NULL)
        return util_fail(err, errlen, "%s: out of memory", path);
    q->n_options = (uint32_t)n;
    for (size_t j = 0; j < n; j++) {
        snprintf(path, sizeof(path), "questions[%zu].options[%zu]", i, j);
        if (!check_string(json_array_get(v, j), path, OPTION_MAX_BYTES, &q->options[j], err,
                          errlen))
            return false;
    }

    snprintf(path, sizeof(path), "questions[%zu].correct", i);
    v = json_object_get(o, "correct");
    if (v == NULL || !json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) >= (json_int_t)n)
        return util_fail(err, errlen, "%s: %s an index into options (0..%zu)", path,
                         v == NULL ? "required," : "must be", n - 1);
    q->correct = (uint32_t)json_integer_value(v);

    v = json_object_get(o, "open");
    if (v != NULL && !json_is_boolean(v))
        return util_fail(err, errlen, "questions[%zu].open: must be true or false", i);
    q->open = json_is_true(v);
    return true;
}

struct id_pos {
    uint32_t id;
    size_t pos; /* index in the file, for the message */
};

static int cmp_id_pos(const void *a, const void *b)
{
    const struct id_pos *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

static int cmp_question(const void *a, const void *b)
{
    const struct event_question *x = a, *y = b;
    return x->id < y->id ? -1 : (x->id > y->id);
}

/* Ids are unique; messages name positions in the file, so duplicates are
 * found on a sorted copy of (id, position) before the questions are sorted. */
static bool check_unique_ids(const struct eventfile *ef, char *err, size_t errlen)
{
    struct id_pos *ids = malloc(ef->n_questions * sizeof(*ids));
    if (ids == NULL)
        return util_fail(err, errlen, "questions: out of memory");
    for (size_t i = 0; i < ef->n_questions; i++) {
        ids[i].id = ef->questions[i].id;
        ids[i].pos = i;
    }
    qsort(ids, ef->n_questions, sizeof(*ids), cmp_id_pos);
    bool ok = true;
    for (size_t i = 1; i < ef->n_questions && ok; i++) {
        if (ids[i].id == ids[i - 1].id)
            ok = util_fail(err, errlen, "questions[%zu].id: duplicate id %u (also questions[%zu])",
                           ids[i].pos, ids[i].id, ids[i - 1].pos);
    }
    free(ids);
    return ok;
}

static bool parse_questions(const json_t *root, struct eventfile *ef, char *err, size_t errlen)
{
    const json_t *v = json_object_get(root, "questions");
    if (v == NULL)
        return util_fail(err, errlen, "questions: required");
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n == 0 || n > EVENT_MAX_QUESTIONS)
        return util_fail(err, errlen, "questions: must be a non-empty array of at most %d questions",
                         EVENT_MAX_QUESTIONS);
    ef->questions = calloc(n, sizeof(*ef->questions));
    if (ef->questions == NULL)
        return util_fail(err, errlen, "questions: out of memory");
    ef->n_questions = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        if (!parse_question(json_array_get(v, i), i, &ef->questions[i], err, errlen))
            return false;
    }
    if (!check_unique_ids(ef, err, errlen))
        return false;
    qsort(ef->questions, n, sizeof(*ef->questions), cmp_question);
    return true;
}

bool eventfile_parse(const char *json, size_t len, struct eventfile *ef, char *err, size_t errlen)
{
    json_t *root = NULL;
    bool ok = false;

    memset(ef, 0, sizeof(*ef));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (json == NULL) {
        util_fail(err, errlen, "event file: no input");
        goto done;
    }
    if (len > EVENT_MAX_FILE_BYTES) {
        util_fail(err, errlen, "event file: larger than %u bytes", EVENT_MAX_FILE_BYTES);
        goto done;
    }
    /* Duplicate keys are rejected rather than silently last-one-wins. */
    json_error_t jerr;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        util_fail(err, errlen, "invalid JSON at line %d:%d: %s", jerr.line, jerr.column, jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        util_fail(err, errlen, "event file: must be a JSON object");
        goto done;
    }

    json_int_t ttl = 0, min_answers = 0;
    if (!parse_name(root, ef, err, errlen) || !parse_sharding(root, ef, err, errlen) ||
        !parse_age_buckets(root, ef, err, errlen) ||
        !opt_int(root, "ttl_s", 1, EVENT_MAX_TTL_S, DEFAULT_TTL_S, &ttl, err, errlen) ||
        !opt_int(root, "min_country_answers", 0, JSON_INT_MAX, DEFAULT_MIN_COUNTRY_ANSWERS,
                 &min_answers, err, errlen) ||
        !parse_questions(root, ef, err, errlen))
        goto done;
    ef->ttl_s = (uint32_t)ttl;
    ef->min_country_answers = (uint64_t)min_answers;
    ok = true;

done:
    json_decref(root);
    if (!ok)
        eventfile_free(ef);
    return ok;
}

bool eventfile_load(const char *path, struct eventfile *ef, char *err, size_t errlen)
{
    memset(ef, 0, sizeof(*ef));
    if (path == NULL)
        return util_fail(err, errlen, "event file: no path");
    size_t len;
    char *buf = util_read_file(path, EVENT_MAX_FILE_BYTES, &len);
    if (buf == NULL) {
        if (errno == EFBIG)
            return util_fail(err, errlen, "%s: larger than %u bytes", path, EVENT_MAX_FILE_BYTES);
        char eb[128];
        return util_fail(err, errlen, "%s: %s", path, strerror_r(errno, eb, sizeof(eb)));
    }
    char inner[512];
    bool ok = eventfile_parse(buf, len, ef, inner, sizeof(inner));
    free(buf);
    if (!ok)
        return util_fail(err, errlen, "%s: %s", path, inner);
    return true;
}

void eventfile_free(struct eventfile *ef)
{
    if (ef == NULL)
        return;
    if (ef->age_buckets != NULL) {
        for (uint32_t i = 0; i < ef->n_age_buckets; i++)
            free(ef->age_buckets[i].label);
        free(ef->age_buckets);
    }
    if (ef->questions != NULL) {
        for (uint32_t i = 0; i < ef->n_questions; i++) {
            struct event_question *q = &ef->questions[i];
            free(q->text);
            if (q->options != NULL) {
                for (uint32_t j = 0; j < q->n_options; j++)
                    free(q->options[j]);
                free(q->options);
            }
        }
        free(ef->questions);
    }
    memset(ef, 0, sizeof(*ef));
}

int eventfile_question_index(const struct eventfile *ef, uint32_t id)
{
    size_t lo = 0, hi = ef->n_questions;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t m = ef->questions[mid].id;
        if (m == id)
            return (int)mid;
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const struct event_question *eventfile_question(const struct eventfile *ef, uint32_t id)
{
    int i = eventfile_question_index(ef, id);
    return i < 0 ? NULL : &ef->questions[i];
}

/* At most EVENT_MAX_AGE_BUCKETS (16) buckets: a linear scan is as fast as
 * bisecting them. Ages outside AGE_MIN..AGE_MAX are clamped to the first or
 * last bucket rather than read out of bounds. */
uint32_t eventfile_age_bucket(const struct eventfile *ef, uint32_t age)
{
    if (ef->n_age_buckets == 0)
        return 0;
    for (uint32_t i = 0; i < ef->n_age_buckets; i++) {
        if (age <= ef->age_buckets[i].max)
            return i;
    }
    return ef->n_age_buckets - 1;
}
