#include "fans.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

bool fans_user_ok(const char *s, size_t len)
{
    if (len < 1 || len > FANS_USER_MAX)
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

int fans_cmp(const struct fans_entry *a, const struct fans_entry *b)
{
    if (a->right != b->right)
        return a->right > b->right ? -1 : 1;
    if (a->total_ms != b->total_ms)
        return a->total_ms < b->total_ms ? -1 : 1;
    return strcmp(a->user, b->user);
}

bool fans_newer(const struct fans_entry *a, const struct fans_entry *b)
{
    if (a->right != b->right)
        return a->right > b->right;
    return a->total_ms > b->total_ms;
}

void fans_topk_init(struct fans_topk *t)
{
    memset(t, 0, sizeof(*t));
}

/* Where e goes in the sorted list (binary search on the ranking order). */
static size_t insert_pos(const struct fans_topk *t, const struct fans_entry *e)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (fans_cmp(&t->e[mid], e) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool fans_topk_update(struct fans_topk *t, const char *user, uint64_t right, uint64_t total_ms)
{
    struct fans_entry e = {.right = right, .total_ms = total_ms};
    size_t ulen = strnlen(user, FANS_USER_MAX + 1);
    if (ulen == 0 || ulen > FANS_USER_MAX)
        return false;
    memcpy(e.user, user, ulen);
    e.user[ulen] = '\0';
    /* A user's newer entry ranks above the older one (more right answers),
     * so when the new one cannot enter a full list, the old one is not in
     * it either: nothing to look up. */
    if (t->n == FANS_TOPK && fans_cmp(&e, &t->e[t->n - 1]) >= 0)
        return false;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->e[i].user, e.user) != 0)
            continue;
        if (!fans_newer(&e, &t->e[i]))
            return false;
        memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof(t->e[0]));
        t->n--;
        break;
    }
    size_t pos = insert_pos(t, &e);
    if (pos >= FANS_TOPK)
        return false;
    size_t keep = t->n < FANS_TOPK ? t->n : FANS_TOPK - 1;
    memmove(&t->e[pos + 1], &t->e[pos], (keep - pos) * sizeof(t->e[0]));
    t->e[pos] = e;
    t->n = keep + 1;
    t->dirty = true;
    return true;
}

#define OWNER_FMT "{\"owner\":\"%016" PRIx64 "\","

bool fans_owned_by(const char *json, size_t len, uint64_t owner)
{
    char head[48];
    int n = snprintf(head, sizeof(head), OWNER_FMT, owner);
    return n > 0 && (size_t)n <= len && memcmp(json, head, (size_t)n) == 0;
}

size_t fans_encode(uint64_t owner, const struct fans_entry *e, size_t n, char *buf, size_t cap)
{
    /* User ids need no JSON escaping: [A-Za-z0-9_.:-] only. */
    size_t off = 0;
    int w = snprintf(buf, cap, OWNER_FMT "\"fans\":[", owner);
    if (w < 0 || (size_t)w >= cap)
        return 0;
    off = (size_t)w;
    for (size_t i = 0; i < n; i++) {
        w = snprintf(buf + off, cap - off, "%s[\"%s\",%" PRIu64 ",%" PRIu64 "]", i ? "," : "",
                     e[i].user, e[i].right, e[i].total_ms);
        if (w < 0 || (size_t)w >= cap - off)
            return 0;
        off += (size_t)w;
    }
    w = snprintf(buf + off, cap - off, "]}");
    if (w < 0 || (size_t)w >= cap - off)
        return 0;
    return off + (size_t)w;
}

static bool count_of(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

bool fans_decode(const char *json, size_t len, struct fans_entry *out, size_t max, size_t *n)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    bool ok = false;
    const json_t *arr = json_object_get(root, "fans");
    if (!json_is_array(arr) || json_array_size(arr) > max)
        goto done;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *t = json_array_get(arr, i);
        const json_t *u = json_array_get(t, 0);
        struct fans_entry *e = &out[i];
        if (!json_is_array(t) || json_array_size(t) != 3 || !json_is_string(u) ||
            !fans_user_ok(json_string_value(u), json_string_length(u)) ||
            !count_of(json_array_get(t, 1), &e->right) ||
            !count_of(json_array_get(t, 2), &e->total_ms))
            goto done;
        memcpy(e->user, json_string_value(u), json_string_length(u) + 1);
    }
    *n = json_array_size(arr);
    ok = true;
done:
    json_decref(root);
    return ok;
}

/* User asc, the newest entry of each user first. */
static int cmp_user_newest(const void *pa, const void *pb)
{
    const struct fans_entry *a = pa, *b = pb;
    int c = strcmp(a->user, b->user);
    if (c != 0)
        return c;
    if (fans_newer(a, b))
        return -1;
    return fans_newer(b, a) ? 1 : 0;
}

static int cmp_rank(const void *pa, const void *pb)
{
    return fans_cmp(pa, pb);
}

size_t fans_merge(struct fans_entry *e, size_t n)
{
    if (n == 0)
        return 0;
    qsort(e, n, sizeof(*e), cmp_user_newest);
    size_t m = 1;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(e[i].user, e[m - 1].user) == 0)
            continue; /* an older entry of the same user */
        if (m != i)
            e[m] = e[i];
        m++;
    }
    qsort(e, m, sizeof(*e), cmp_rank);
    return m;
}

void fans_select(const struct fans_entry *ranked, size_t n, uint64_t min_right, size_t max_checks,
                 fans_verify_fn verify, void *ctx, struct fans_entry *out, size_t max_out,
                 struct fans_selection *sel)
{
    memset(sel, 0, sizeof(*sel));
    if (min_right == 0)
        return;
    for (size_t i = 0; i < n && sel->n < max_out; i++) {
        if (ranked[i].right < min_right || sel->checks >= max_checks)
            break;
        sel->checks++;
        int v = verify(ctx, &ranked[i]);
        if (v < 0) {
            sel->failed = true;
            return;
        }
        if (v > 0)
            out[sel->n++] = ranked[i];
    }
}

bool fans_marker_parse(const char *val, size_t len, bool *right, uint64_t *ms)
{
    /* "R 1234" | "W 1234": a letter, one space, 1..20 digits. */
    if (len < 3 || len > 22 || (val[0] != 'R' && val[0] != 'W') || val[1] != ' ')
        return false;
    uint64_t v = 0;
    for (size_t i = 2; i < len; i++) {
        if (val[i] < '0' || val[i] > '9')
            return false;
        uint64_t d = (uint64_t)(val[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *right = val[0] == 'R';
    *ms = v;
    return true;
}

size_t fans_marker_format(char *buf, size_t cap, bool right, uint64_t ms)
{
    int n = snprintf(buf, cap, "%c %" PRIu64, right ? 'R' : 'W', ms);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}
