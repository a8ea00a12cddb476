/*
 * Snapshot publication (layout in snapstore.h). The writer puts every chunk
 * first and the head last, so a head always names chunks that are complete;
 * generation g uses slot g % 2, so writing g + 1 never touches the chunks a
 * reader of g is fetching. Only a reader slower than two whole publications
 * can meet a chunk of g + 2 in its slot: the generation line at the start of
 * every chunk shows it, and the fetch starts over from the head.
 */
#include "snapstore.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_impl.h"
#include "util.h"

/* A reader retries this many times before calling the snapshot unreadable:
 * each retry means a whole publication happened meanwhile (two, in fact), so
 * more than a few only happens when chunks vanish (evicted, expired). */
#define SNAPSTORE_FETCH_ATTEMPTS 4

/* "<generation>\n" before the chunk bytes: at most 20 digits and the newline. */
#define SNAPSTORE_GEN_MAX 21

#define SNAPSTORE_HEAD_MAX 64

/* Longest event name accepted here: the keys must stay memcached keys. */
#define SNAPSTORE_EVENT_MAX 64

static bool event_ok(const char *event)
{
    if (event == NULL)
        return false;
    size_t n = strnlen(event, SNAPSTORE_EVENT_MAX + 1);
    return n > 0 && n <= SNAPSTORE_EVENT_MAX && store_key_valid(event, n);
}

static size_t head_key(char *buf, size_t len, const char *event)
{
    int n = snprintf(buf, len, "%s:snap", event);
    return n > 0 ? (size_t)n : 0;
}

static size_t chunk_key(char *buf, size_t len, const char *event, uint64_t generation, size_t i)
{
    int n = snprintf(buf, len, "%s:snap:%u:%zu", event, (unsigned)(generation % 2), i);
    return n > 0 ? (size_t)n : 0;
}

static size_t chunks_for(size_t len)
{
    return (len + SNAPSTORE_CHUNK - 1) / SNAPSTORE_CHUNK;
}

enum store_status snapstore_publish(struct store *s, const char *event, uint32_t ttl_s,
                                    uint64_t generation, const char *json, size_t len)
{
    char key[SNAPSTORE_EVENT_MAX + 48];
    char head[SNAPSTORE_HEAD_MAX];
    enum store_status rc = STORE_OK;

    if (s == NULL || !event_ok(event) || (json == NULL && len > 0) || len > SNAPSTORE_MAX_BYTES)
        return STORE_ERROR;
    size_t nchunks = chunks_for(len);
    char *buf = malloc(SNAPSTORE_GEN_MAX + SNAPSTORE_CHUNK);
    if (buf == NULL)
        return STORE_NOMEM;
    size_t prefix = util_format_u64(buf, generation);
    buf[prefix++] = '\n';

    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * SNAPSTORE_CHUNK;
        size_t clen = len - off < SNAPSTORE_CHUNK ? len - off : SNAPSTORE_CHUNK;
        memcpy(buf + prefix, json + off, clen);
        size_t klen = chunk_key(key, sizeof(key), event, generation, i);
        rc = store_set(s, key, klen, buf, prefix + clen, ttl_s);
        if (rc != STORE_OK)
            goto done;
    }
    int hlen = snprintf(head, sizeof(head), "%llu %zu %zu", (unsigned long long)generation,
                        nchunks, len);
    size_t klen = head_key(key, sizeof(key), event);
    rc = store_set(s, key, klen, head, (size_t)hlen, ttl_s);
done:
    free(buf);
    return rc;
}

/*
 *   head = generation " " nchunks " " total_len     (decimal, no padding)
 */
static bool parse_head(const char *val, size_t len, uint64_t *generation, size_t *nchunks,
                       size_t *total)
{
    char tmp[SNAPSTORE_HEAD_MAX];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, val, len);
    tmp[len] = '\0';
    char *sp1 = strchr(tmp, ' ');
    char *sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
    if (sp2 == NULL)
        return false;
    *sp1 = '\0';
    *sp2 = '\0';
    uint64_t g, n, t;
    /* util_parse_u64: digits only, no sign, no space, no overflow. */
    if (!util_parse_u64(tmp, 0, UINT64_MAX, &g) ||
        !util_parse_u64(sp1 + 1, 0, SNAPSTORE_MAX_BYTES, &n) ||
        !util_parse_u64(sp2 + 1, 0, SNAPSTORE_MAX_BYTES, &t))
        return false;
    if (n != chunks_for((size_t)t))
        return false;
    *generation = g;
    *nchunks = (size_t)n;
    *total = (size_t)t;
    return true;
}

/* The newest head among the copies: a replica that missed the last
 * publish still holds an older generation. */
struct head_copies {
    uint64_t generation;
    size_t nchunks, total;
    bool parsed;
};

static void on_head_copy(void *arg, const char *val, size_t vallen)
{
    struct head_copies *c = arg;
    uint64_t g;
    size_t n, t;
    if (parse_head(val, vallen, &g, &n, &t) && (!c->parsed || g > c->generation)) {
        *c = (struct head_copies){.generation = g, .nchunks = n, .total = t, .parsed = true};
    }
}

static enum store_status read_head(struct store *s, const char *event, uint64_t *generation,
                                   size_t *nchunks, size_t *total)
{
    char key[SNAPSTORE_EVENT_MAX + 48];
    size_t klen = head_key(key, sizeof(key), event);
    struct head_copies c = {0};
    enum store_status rc = store_get_each(s, key, klen, on_head_copy, &c, NULL);
    if (rc == STORE_OK && !c.parsed)
        return STORE_ERROR;
    if (rc == STORE_OK) {
        *generation = c.generation;
        *nchunks = c.nchunks;
        *total = c.total;
    }
    return rc;
}

/* Outcome of reading one chunk. */
enum chunk_result { CHUNK_OK, CHUNK_TORN, CHUNK_FAILED };

/* The copy of a chunk slot that holds the generation wanted: a replica
 * that missed the last publish still holds an older one there. */
struct chunk_copies {
    uint64_t generation;
    char *out;
    size_t want;
    bool found;
};

static void on_chunk_copy(void *arg, const char *val, size_t vlen)
{
    struct chunk_copies *c = arg;
    if (c->found)
        return;
    const char *nl = memchr(val, '\n', vlen < SNAPSTORE_GEN_MAX ? vlen : SNAPSTORE_GEN_MAX);
    uint64_t g;
    if (nl == NULL || nl == val || !store_parse_counter(val, (size_t)(nl - val), &g) ||
        val[nl - val - 1] == ' ')
        return;
    size_t prefix = (size_t)(nl - val) + 1;
    if (g != c->generation || vlen - prefix != c->want)
        return;
    memcpy(c->out, val + prefix, c->want);
    c->found = true;
}

/* Copies chunk i of generation into out (exactly want bytes); CHUNK_TORN
 * when no copy of the slot holds that generation at that size. */
static enum chunk_result read_chunk(struct store *s, const char *event, uint64_t generation,
                                    size_t i, char *out, size_t want, enum store_status *rc)
{
    char key[SNAPSTORE_EVENT_MAX + 48];
    size_t klen = chunk_key(key, sizeof(key), event, generation, i);
    struct chunk_copies c = {.generation = generation, .out = out, .want = want};
    *rc = store_get_each(s, key, klen, on_chunk_copy, &c, NULL);
    if (c.found)
        return CHUNK_OK;
    if (*rc == STORE_OK || *rc == STORE_NOTFOUND)
        return CHUNK_TORN;
    return CHUNK_FAILED;
}

enum store_status snapstore_fetch(struct store *s, const char *event, uint64_t *generation,
                                  char **json, size_t *len)
{
    if (s == NULL || !event_ok(event) || generation == NULL || json == NULL || len == NULL)
        return STORE_ERROR;
    *json = NULL;
    *len = 0;

    for (int attempt = 0; attempt < SNAPSTORE_FETCH_ATTEMPTS; attempt++) {
        uint64_t gen;
        size_t nchunks, total;
        enum store_status rc = read_head(s, event, &gen, &nchunks, &total);
        if (rc != STORE_OK)
            return rc;
        char *buf = malloc(total + 1);
        if (buf == NULL)
            return STORE_NOMEM;
        enum chunk_result res = CHUNK_OK;
        for (size_t i = 0; i < nchunks && res == CHUNK_OK; i++) {
            size_t off = i * SNAPSTORE_CHUNK;
            size_t want = total - off < SNAPSTORE_CHUNK ? total - off : SNAPSTORE_CHUNK;
            res = read_chunk(s, event, gen, i, buf + off, want, &rc);
        }
        if (res == CHUNK_OK) {
            buf[total] = '\0';
            *json = buf;
            *len = total;
            *generation = gen;
            return STORE_OK;
        }
        free(buf);
        if (res == CHUNK_FAILED)
            return rc;
    }
    return STORE_ERROR;
}

enum store_status snapstore_generation(struct store *s, const char *event, uint64_t *generation)
{
    if (s == NULL || !event_ok(event) || generation == NULL)
        return STORE_ERROR;
    size_t nchunks, total;
    return read_head(s, event, generation, &nchunks, &total);
}
