#include "loadreplay.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define USER_MAX 64

static char *part_path(const char *path, unsigned part)
{
    size_t n = strlen(path) + 32;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s.part%u", path, part);
    return p;
}

/* ---- recording ---------------------------------------------------------- */

bool loadrecord_open(struct loadrecord *r, const char *path, unsigned part, char *err,
                     size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->path = part_path(path, part);
    if (r->path == NULL)
        return util_fail(err, errlen, "out of memory");
    r->f = fopen(r->path, "we");
    if (r->f == NULL) {
        util_fail(err, errlen, "--record %s: %s", r->path, strerror(errno));
        free(r->path);
        r->path = NULL;
        return false;
    }
    /* A large buffer: one write(2) per ~2000 requests. */
    setvbuf(r->f, NULL, _IOFBF, 1 << 18);
    return true;
}

void loadrecord_write(struct loadrecord *r, uint64_t t_us, const char *body, size_t len)
{
    if (r->f == NULL || r->failed)
        return;
    if (fprintf(r->f, "{\"t_us\":%" PRIu64 ",\"body\":", t_us) < 0 ||
        fwrite(body, 1, len, r->f) != len || fputs("}\n", r->f) == EOF)
        r->failed = true;
    r->lines++;
}

void loadrecord_write_admin(struct loadrecord *r, uint64_t t_us, uint32_t question, bool open)
{
    if (r->f == NULL || r->failed)
        return;
    if (fprintf(r->f, "{\"t_us\":%" PRIu64 ",\"admin\":{\"question\":%u,\"action\":\"%s\"}}\n",
                t_us, question, open ? "open" : "close") < 0)
        r->failed = true;
    r->lines++;
}

bool loadrecord_close(struct loadrecord *r, char *err, size_t errlen)
{
    bool ok = !r->failed;
    if (r->f != NULL && fclose(r->f) != 0)
        ok = false;
    if (!ok)
        util_fail(err, errlen, "--record %s: write failed", r->path ? r->path : "?");
    free(r->path);
    memset(r, 0, sizeof(*r));
    return ok;
}

void loadrecord_remove_parts(const char *path, unsigned nparts)
{
    for (unsigned i = 0; i < nparts; i++) {
        char *p = part_path(path, i);
        if (p != NULL)
            unlink(p);
        free(p);
    }
}

/* The t_us of a line we wrote ourselves: {"t_us":N,... */
static bool line_time(const char *line, uint64_t *t)
{
    static const char head[] = "{\"t_us\":";
    if (strncmp(line, head, sizeof(head) - 1) != 0)
        return false;
    uint64_t v = 0;
    const char *p = line + sizeof(head) - 1;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > LOADREPLAY_MAX_T_US)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *t = v;
    return *p == ',';
}

struct merge_src {
    FILE *f;
    char *line; /* getline's buffer */
    size_t cap;
    ssize_t len; /* -1 at EOF */
    uint64_t t;
};

static bool merge_advance(struct merge_src *s, char *err, size_t errlen, const char *name)
{
    s->len = getline(&s->line, &s->cap, s->f);
    if (s->len < 0)
        return !ferror(s->f) || util_fail(err, errlen, "--record %s: read failed", name);
    if (!line_time(s->line, &s->t))
        return util_fail(err, errlen, "--record %s: unexpected line", name);
    return true;
}

bool loadrecord_merge(const char *path, unsigned nparts, char *err, size_t errlen)
{
    struct merge_src *src = calloc(nparts ? nparts : 1, sizeof(*src));
    FILE *out = NULL;
    bool ok = false;
    if (src == NULL) {
        util_fail(err, errlen, "out of memory");
        goto done;
    }
    for (unsigned i = 0; i < nparts; i++) {
        char *p = part_path(path, i);
        if (p == NULL) {
            util_fail(err, errlen, "out of memory");
            goto done;
        }
        src[i].f = fopen(p, "re");
        if (src[i].f == NULL) {
            util_fail(err, errlen, "--record %s: %s", p, strerror(errno));
            free(p);
            goto done;
        }
        bool adv = merge_advance(&src[i], err, errlen, p);
        free(p);
        if (!adv)
            goto done;
    }
    out = fopen(path, "we");
    if (out == NULL) {
        util_fail(err, errlen, "--record %s: %s", path, strerror(errno));
        goto done;
    }
    setvbuf(out, NULL, _IOFBF, 1 << 18);
    /* A linear scan for the smallest head: there are as many parts as threads. */
    for (;;) {
        struct merge_src *best = NULL;
        for (unsigned i = 0; i < nparts; i++) {
            if (src[i].len >= 0 && (best == NULL || src[i].t < best->t))
                best = &src[i];
        }
        if (best == NULL)
            break;
        if (fwrite(best->line, 1, (size_t)best->len, out) != (size_t)best->len) {
            util_fail(err, errlen, "--record %s: write failed", path);
            goto done;
        }
        if (!merge_advance(best, err, errlen, path))
            goto done;
    }
    if (fclose(out) != 0) {
        out = NULL;
        util_fail(err, errlen, "--record %s: write failed", path);
        goto done;
    }
    out = NULL;
    ok = true;

done:
    if (out != NULL)
        fclose(out);
    if (src != NULL) {
        for (unsigned i = 0; i < nparts; i++) {
            if (src[i].f != NULL)
                fclose(src[i].f);
            free(src[i].line);
        }
        free(src);
    }
    if (ok)
        loadrecord_remove_parts(path, nparts);
    return ok;
}

/* ---- replay ------------------------------------------------------------- */

static bool user_ok(const json_t *u)
{
    if (!json_is_string(u))
        return false;
    size_t n = json_string_length(u);
    const char *s = json_string_value(u);
    if (n == 0 || n > USER_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* The key of a body by the ingest's rules; key->valid stays false for a
 * body the ingest must refuse. */
static void key_from_body(const json_t *obj, const struct eventfile *ef, struct loadtally_key *key)
{
    memset(key, 0, sizeof(*key));
    if (!json_is_object(obj))
        return;
    const json_t *q = json_object_get(obj, "question");
    const json_t *a = json_object_get(obj, "answer");
    const json_t *age = json_object_get(obj, "age");
    const json_t *c = json_object_get(obj, "country");
    const json_t *u = json_object_get(obj, "user");
    if (!json_is_integer(q) || !json_is_integer(a) || !json_is_integer(age))
        return;
    if (c != NULL && !json_is_string(c))
        return;
    if (u != NULL && !user_ok(u))
        return;
    loadtally_key_for(ef, json_integer_value(q), json_integer_value(a), json_integer_value(age),
                      c ? json_string_value(c) : NULL, c ? json_string_length(c) : 0, key);
}

/* A line's "t_us", checked. */
static bool t_us_of(const json_t *root, uint64_t *t_us, char *err, size_t errlen)
{
    const json_t *t = json_object_get(root, "t_us");
    if (!json_is_integer(t) || json_integer_value(t) < 0 ||
        (uint64_t)json_integer_value(t) > LOADREPLAY_MAX_T_US)
        return util_fail(err, errlen, "t_us: must be an integer 0..%llu",
                         (unsigned long long)LOADREPLAY_MAX_T_US);
    *t_us = (uint64_t)json_integer_value(t);
    return true;
}

bool loadreplay_parse_line(const char *line, size_t len, const struct eventfile *ef,
                           uint64_t *t_us, char *body, size_t cap, size_t *body_len,
                           struct loadtally_key *key, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *parsed = NULL;
    char *dumped = NULL;
    bool ok = false;
    memset(key, 0, sizeof(*key));
    if (root == NULL) {
        util_fail(err, errlen, "not JSON: %s", jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        util_fail(err, errlen, "expected an object {\"t_us\":..., \"body\":{...}}");
        goto done;
    }
    uint64_t t;
    if (!t_us_of(root, &t, err, errlen))
        goto done;
    const json_t *b = json_object_get(root, "body");
    const json_t *raw = json_object_get(root, "raw");
    const char *src;
    size_t n;
    if (b != NULL && raw == NULL) {
        if (!json_is_object(b)) {
            util_fail(err, errlen, "body: must be a JSON object (use \"raw\" for anything else)");
            goto done;
        }
        dumped = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (dumped == NULL) {
            util_fail(err, errlen, "out of memory");
            goto done;
        }
        src = dumped;
        n = strlen(dumped);
        if (ef != NULL)
            key_from_body(b, ef, key);
    } else if (raw != NULL && b == NULL) {
        if (!json_is_string(raw)) {
            util_fail(err, errlen, "raw: must be a string");
            goto done;
        }
        src = json_string_value(raw);
        n = json_string_length(raw);
        if (ef != NULL) {
            parsed = json_loadb(src, n, JSON_REJECT_DUPLICATES, &jerr);
            if (parsed != NULL)
                key_from_body(parsed, ef, key);
        }
    } else {
        util_fail(err, errlen, "needs exactly one of \"body\" and \"raw\"");
        goto done;
    }
    if (n == 0 || n > cap || n > LOADREPLAY_BODY_MAX) {
        util_fail(err, errlen, "body: must be 1..%d bytes", LOADREPLAY_BODY_MAX);
        goto done;
    }
    memcpy(body, src, n);
    *body_len = n;
    *t_us = t;
    ok = true;

done:
    free(dumped);
    json_decref(parsed);
    json_decref(root);
    return ok;
}

int loadreplay_parse_admin(const char *line, size_t len, struct loadreplay_admin *a, char *err,
                           size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = 0;
    const json_t *adm = json_is_object(root) ? json_object_get(root, "admin") : NULL;
    if (adm == NULL)
        goto done; /* not an admin line: parse_line says what is wrong with it */
    rc = -1;
    uint64_t t;
    if (!t_us_of(root, &t, err, errlen))
        goto done;
    if (json_object_size(root) != 2) {
        util_fail(err, errlen, "an admin line holds only \"t_us\" and \"admin\"");
        goto done;
    }
    const json_t *q = json_object_get(adm, "question");
    const json_t *act = json_object_get(adm, "action");
    if (!json_is_object(adm) || !json_is_integer(q) || json_integer_value(q) < 1 ||
        json_integer_value(q) > UINT32_MAX || !json_is_string(act) ||
        (strcmp(json_string_value(act), "open") != 0 &&
         strcmp(json_string_value(act), "close") != 0)) {
        util_fail(err, errlen, "admin: expected {\"question\": N, \"action\": \"open\" or \"close\"}");
        goto done;
    }
    *a = (struct loadreplay_admin){.t_us = t,
                                   .question = (uint32_t)json_integer_value(q),
                                   .open = strcmp(json_string_value(act), "open") == 0};
    rc = 1;
done:
    json_decref(root);
    return rc;
}

static int admin_cmp(const void *a, const void *b)
{
    const struct loadreplay_admin *x = a;
    const struct loadreplay_admin *y = b;
    if (x->t_us != y->t_us)
        return x->t_us < y->t_us ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

static int entry_cmp(const void *a, const void *b)
{
    const struct loadreplay_entry *x = a;
    const struct loadreplay_entry *y = b;
    if (x->t_us != y->t_us)
        return x->t_us < y->t_us ? -1 : 1;
    /* Same time: keep the order of the file (off grows with the line). */
    return x->off < y->off ? -1 : (x->off > y->off);
}

bool loadreplay_load(const char *path, const struct eventfile *ef, struct loadreplay *r, char *err,
                     size_t errlen)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t linecap = 0;
    char *body = NULL;
    bool ok = false;
    size_t ecap = 0;
    size_t tcap = 0;
    memset(r, 0, sizeof(*r));

    f = fopen(path, "re");
    if (f == NULL) {
        util_fail(err, errlen, "--replay %s: %s", path, strerror(errno));
        goto done;
    }
    body = malloc(LOADREPLAY_BODY_MAX);
    if (body == NULL) {
        util_fail(err, errlen, "out of memory");
        goto done;
    }
    uint64_t lineno = 0;
    for (;;) {
        errno = 0;
        ssize_t len = getline(&line, &linecap, f);
        if (len < 0) {
            if (ferror(f)) {
                util_fail(err, errlen, "--replay %s: %s", path, strerror(errno ? errno : EIO));
                goto done;
            }
            break;
        }
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        if ((size_t)len > LOADREPLAY_LINE_MAX) {
            util_fail(err, errlen, "--replay %s:%llu: line longer than %d bytes", path,
                      (unsigned long long)lineno, LOADREPLAY_LINE_MAX);
            goto done;
        }
        if (r->n >= LOADREPLAY_MAX_ENTRIES) {
            util_fail(err, errlen, "--replay %s: more than %llu requests", path,
                      (unsigned long long)LOADREPLAY_MAX_ENTRIES);
            goto done;
        }
        struct loadreplay_entry e;
        size_t blen;
        char why[160];
        if (memmem(line, (size_t)len, "\"admin\"", 7) != NULL) {
            struct loadreplay_admin a;
            int rc = loadreplay_parse_admin(line, (size_t)len, &a, why, sizeof(why));
            if (rc < 0) {
                util_fail(err, errlen, "--replay %s:%llu: %s", path, (unsigned long long)lineno, why);
                goto done;
            }
            if (rc > 0) {
                if (r->n_admin >= LOADREPLAY_MAX_ADMIN) {
                    util_fail(err, errlen, "--replay %s: more than %d admin events", path,
                              LOADREPLAY_MAX_ADMIN);
                    goto done;
                }
                if (r->n_admin % 64 == 0) {
                    struct loadreplay_admin *na =
                        realloc(r->admin, (r->n_admin + 64) * sizeof(*na));
                    if (na == NULL) {
                        util_fail(err, errlen, "out of memory");
                        goto done;
                    }
                    r->admin = na;
                }
                a.seq = (uint32_t)r->n_admin;
                r->admin[r->n_admin++] = a;
                continue;
            }
        }
        if (!loadreplay_parse_line(line, (size_t)len, ef, &e.t_us, body, LOADREPLAY_BODY_MAX,
                                   &blen, &e.key, why, sizeof(why))) {
            util_fail(err, errlen, "--replay %s:%llu: %s", path, (unsigned long long)lineno, why);
            goto done;
        }
        if (r->n == ecap) {
            size_t nc = ecap ? ecap * 2 : 1024;
            struct loadreplay_entry *ne = realloc(r->e, nc * sizeof(*ne));
            if (ne == NULL) {
                util_fail(err, errlen, "out of memory");
                goto done;
            }
            r->e = ne;
            ecap = nc;
        }
        if (r->text_len + blen > tcap) {
            size_t nc = tcap ? tcap * 2 : 65536;
            while (nc < r->text_len + blen)
                nc *= 2;
            char *nt = realloc(r->text, nc);
            if (nt == NULL) {
                util_fail(err, errlen, "out of memory");
                goto done;
            }
            r->text = nt;
            tcap = nc;
        }
        memcpy(r->text + r->text_len, body, blen);
        e.off = r->text_len;
        e.len = (uint32_t)blen;
        r->text_len += blen;
        if (blen > r->max_body)
            r->max_body = blen;
        r->e[r->n++] = e;
    }
    if (r->n == 0) {
        util_fail(err, errlen, "--replay %s: no request in the file", path);
        goto done;
    }
    qsort(r->e, r->n, sizeof(*r->e), entry_cmp);
    if (r->n_admin > 1)
        qsort(r->admin, r->n_admin, sizeof(*r->admin), admin_cmp);
    ok = true;

done:
    if (f != NULL)
        fclose(f);
    free(line);
    free(body);
    if (!ok)
        loadreplay_free(r);
    return ok;
}

void loadreplay_free(struct loadreplay *r)
{
    free(r->e);
    free(r->text);
    free(r->admin);
    memset(r, 0, sizeof(*r));
}
