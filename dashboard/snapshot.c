#include "snapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "log.h"
#include "stats_csv.h"

static void snapshot_destroy(struct snapshot *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->qjson[i]);
    free(s->qjson);
    free(s->qlen);
    free(s->qids);
    free(s->csv);
    free(s->frame);
    free(s->json);
    free(s);
}

/* One SSE event holding the whole JSON on a single data line. Compact JSON
 * has no line breaks; a pretty-printed one could only have them between
 * tokens (inside strings they are escaped), where a space means the same. */
static bool build_frame(struct snapshot *s)
{
    char head[64];
    int hn = snprintf(head, sizeof(head), "event: stats\nid: %" PRIu64 "\ndata: ", s->generation);
    size_t n = (size_t)hn + s->len + 2;
    s->frame = malloc(n + 1);
    if (s->frame == NULL)
        return false;
    memcpy(s->frame, head, (size_t)hn);
    char *p = s->frame + hn;
    for (size_t i = 0; i < s->len; i++)
        p[i] = (s->json[i] == '\n' || s->json[i] == '\r') ? ' ' : s->json[i];
    memcpy(p + s->len, "\n\n", 3);
    s->frame_len = n;
    return true;
}

/* "2026-11-22T20:15:03.120Z" (util_format_iso8601's form) to ms since the
 * epoch; 0 for anything else. */
static uint64_t parse_iso8601_ms(const char *s)
{
    struct tm tm;
    int ms = 0, used = 0;
    memset(&tm, 0, sizeof(tm));
    if (s == NULL ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7 ||
        used == 0 || s[used] != '\0' || ms < 0 || ms > 999 || tm.tm_year < 1970 ||
        tm.tm_mon < 1 || tm.tm_mon > 12)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t < 0)
        return 0;
    return (uint64_t)t * 1000u + (uint64_t)ms;
}

struct snapshot *snapshot_build(uint64_t generation, char *json, size_t len)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    json_error_t jerr;
    json_t *root = NULL;
    if (s == NULL)
        goto err;
    s->refs = 1;
    s->generation = generation;
    s->json = json;
    s->len = len;
    json = NULL;
    root = json_loadb(s->json, s->len, 0, &jerr);
    json_t *qs = root ? json_object_get(root, "questions") : NULL;
    if (!json_is_array(qs)) {
        log_warn("snapshot generation=%" PRIu64 " is not valid: %s", generation,
                 root ? "no questions array" : jerr.text);
        goto err;
    }
    s->generated_ms = parse_iso8601_ms(json_string_value(json_object_get(root, "generated_at")));
    size_t n = json_array_size(qs);
    s->qids = calloc(n ? n : 1, sizeof(*s->qids));
    s->qjson = calloc(n ? n : 1, sizeof(*s->qjson));
    s->qlen = calloc(n ? n : 1, sizeof(*s->qlen));
    if (!s->qids || !s->qjson || !s->qlen)
        goto err;
    for (size_t i = 0; i < n; i++) {
        json_t *q = json_array_get(qs, i);
        json_t *id = json_object_get(q, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > UINT32_MAX)
            continue;
        char *text = json_dumps(q, JSON_COMPACT | JSON_REAL_PRECISION(4));
        if (text == NULL)
            goto err;
        s->qids[s->n] = (uint32_t)json_integer_value(id);
        s->qjson[s->n] = text;
        s->qlen[s->n] = strlen(text);
        s->n++;
    }
    if (!build_frame(s) || (s->csv = stats_csv_build(root, &s->csv_len)) == NULL)
        goto err;
    json_decref(root);
    return s;
err:
    json_decref(root);
    free(json);
    if (s)
        snapshot_destroy(s);
    return NULL;
}

void snapshot_ref(struct snapshot *s)
{
    s->refs++;
}

void snapshot_unref(struct snapshot *s)
{
    if (s != NULL && --s->refs == 0)
        snapshot_destroy(s);
}

static void unref_cb(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    snapshot_unref(arg);
}

bool snapshot_add_to(struct snapshot *s, struct evbuffer *out, const char *data, size_t len)
{
    snapshot_ref(s);
    if (evbuffer_add_reference(out, data, len, unref_cb, s) != 0) {
        /* libevent did not take the reference: the cleanup will not run. */
        snapshot_unref(s);
        return false;
    }
    return true;
}

const char *snapshot_question(const struct snapshot *s, uint32_t id, size_t *len)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->qids[i] == id) {
            *len = s->qlen[i];
            return s->qjson[i];
        }
    }
    return NULL;
}
