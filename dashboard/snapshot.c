#include "snapshot.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <zlib.h>

#include "log.h"
#include "stats_csv.h"

static void snapshot_destroy(struct snapshot *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->qjson[i]);
    free(s->qjson);
    free(s->qlen);
    for (size_t i = 0; s->qgz != NULL && i < s->n; i++)
        free(s->qgz[i]);
    free(s->qgz);
    free(s->qgz_len);
    free(s->json_gz);
    free(s->csv_gz);
    free(s->qids);
    free(s->csv);
    free(s->frame);
    free(s->frame_z);
    free(s->json);
    free(s);
}

/* len bytes through one deflate call: window_bits 15 + 16 and Z_FINISH
 * make a gzip member, -15 and Z_FULL_FLUSH a raw fragment. NULL on failure.
 * Level 6, zlib's default: on a 42-question snapshot nearly the ratio of 9
 * at a fraction of its time, and once per snapshot, not per reader. */
static char *deflate_once(const char *data, size_t len, int window_bits, int flush,
                          size_t *out_len)
{
    z_stream z = {0};
    if (len > UINT_MAX / 2 ||
        deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL; /* zlib counts in uInt: a larger body is served as is */
    /* deflateBound counts a finished stream; a full flush adds its empty
     * stored block (5 bytes) and at most one more block header. */
    uLong cap = deflateBound(&z, (uLong)len) + 16;
    char *out = malloc(cap);
    if (out != NULL) {
        z.next_in = (Bytef *)(uintptr_t)data;
        z.avail_in = (uInt)len;
        z.next_out = (Bytef *)out;
        z.avail_out = (uInt)cap;
        int rc = deflate(&z, flush);
        if ((flush == Z_FINISH ? rc == Z_STREAM_END : rc == Z_OK && z.avail_out > 0) &&
            z.avail_in == 0) {
            *out_len = (size_t)z.total_out;
        } else {
            free(out);
            out = NULL;
        }
    }
    deflateEnd(&z);
    return out;
}

/* len bytes gzip'd (RFC 1952, what Content-Encoding: gzip means), or NULL. */
static char *gzip_bytes(const char *data, size_t len, size_t *out_len)
{
    return deflate_once(data, len, 15 + 16, Z_FINISH, out_len);
}

char *snapshot_deflate_fragment(const char *data, size_t len, size_t *out_len)
{
    return deflate_once(data, len, -15, Z_FULL_FLUSH, out_len);
}

static uint64_t fnv1a64(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
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
    /* Both the generation and the bytes: a store that restarted its
     * generations must not make an old ETag match new contents. */
    snprintf(s->etag, sizeof(s->etag), "\"g%" PRIu64 "-%016" PRIx64 "\"", generation,
             fnv1a64(s->json, s->len));
    s->json_gz = gzip_bytes(s->json, s->len, &s->json_gz_len);
    s->frame_z = snapshot_deflate_fragment(s->frame, s->frame_len, &s->frame_z_len);
    s->csv_gz = gzip_bytes(s->csv, s->csv_len, &s->csv_gz_len);
    s->qgz = calloc(n ? n : 1, sizeof(*s->qgz));
    s->qgz_len = calloc(n ? n : 1, sizeof(*s->qgz_len));
    if (!s->qgz || !s->qgz_len)
        goto err;
    for (size_t i = 0; i < s->n; i++)
        s->qgz[i] = gzip_bytes(s->qjson[i], s->qlen[i], &s->qgz_len[i]);
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

bool snapshot_question_body(const struct snapshot *s, uint32_t id, struct snapshot_body *out)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->qids[i] == id) {
            *out = (struct snapshot_body){.data = s->qjson[i], .len = s->qlen[i],
                                          .gz = s->qgz[i], .gz_len = s->qgz_len[i]};
            return true;
        }
    }
    return false;
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
