#include "qstate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

const char *qstate_kind_str(enum qstate_kind k)
{
    switch (k) {
    case QSTATE_OPEN:
        return "open";
    case QSTATE_CLOSED:
        return "closed";
    case QSTATE_NOT_OPEN:
        break;
    }
    return "not_open";
}

/* Returns the length written, or 0 when the state has no stored form
 * (QSTATE_NOT_OPEN is the absence of the key) or buf is too small. */
size_t qstate_format(const struct qstate *st, char *buf, size_t len)
{
    int n;
    if (buf == NULL || len == 0)
        return 0;
    buf[0] = '\0';
    switch (st->kind) {
    case QSTATE_OPEN:
        n = snprintf(buf, len, "open %" PRIu64, st->open_ms);
        break;
    case QSTATE_CLOSED:
        n = snprintf(buf, len, "closed %" PRIu64 " %" PRIu64, st->open_ms, st->close_ms);
        break;
    default:
        return 0;
    }
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

/* One decimal number, digits only, ending at the end of the value or at a
 * single space; advances *p past it. */
static bool take_u64(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (s == end || *s < '0' || *s > '9')
        return false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *p = s;
    return true;
}

/*
 *   "open <open_ms>"
 *   "closed <open_ms> <close_ms>"
 * Exactly these: one space, digits only, nothing after. close_ms is not
 * required to follow open_ms: the two may come from nodes whose wall clocks
 * differ, and refusing the value would leave the question unreadable.
 */
bool qstate_parse(const char *val, size_t len, struct qstate *out)
{
    if (val == NULL || len == 0 || len > QSTATE_VALUE_MAX)
        return false;
    const char *end = val + len;
    const char *p = val;
    struct qstate st = {0};
    if (len > 5 && memcmp(p, "open ", 5) == 0) {
        p += 5;
        st.kind = QSTATE_OPEN;
        if (!take_u64(&p, end, &st.open_ms))
            return false;
    } else if (len > 7 && memcmp(p, "closed ", 7) == 0) {
        p += 7;
        st.kind = QSTATE_CLOSED;
        if (!take_u64(&p, end, &st.open_ms) || p == end || *p != ' ')
            return false;
        p++;
        if (!take_u64(&p, end, &st.close_ms))
            return false;
    } else {
        return false;
    }
    if (p != end)
        return false;
    *out = st;
    return true;
}

/* One get per question: a few dozen questions at most in practice, read
 * about once a second per node, so batching is not worth a second API. */
enum store_status qstate_fetch_all(struct store *s, const struct eventfile *ef, struct qstate *out)
{
    char key[KEY_MAX];
    for (uint32_t i = 0; i < ef->n_questions; i++) {
        size_t klen = key_state(key, ef->name, ef->questions[i].id);
        char *val = NULL;
        size_t vlen = 0;
        enum store_status st = store_get(s, key, klen, &val, &vlen);
        if (st == STORE_NOTFOUND) {
            out[i] = (struct qstate){.kind = QSTATE_NOT_OPEN};
            continue;
        }
        if (st != STORE_OK)
            return st;
        /* A value this code did not write: refuse to guess the state. */
        bool ok = qstate_parse(val, vlen, &out[i]);
        free(val);
        if (!ok)
            return STORE_ERROR;
    }
    return STORE_OK;
}

enum store_status qstate_init_open(struct store *s, const struct eventfile *ef, uint64_t now_ms)
{
    char key[KEY_MAX];
    char val[QSTATE_VALUE_MAX];
    struct qstate st = {.kind = QSTATE_OPEN, .open_ms = now_ms};
    size_t vlen = qstate_format(&st, val, sizeof(val));
    for (uint32_t i = 0; i < ef->n_questions; i++) {
        if (!ef->questions[i].open)
            continue;
        size_t klen = key_state(key, ef->name, ef->questions[i].id);
        enum store_status r = store_add(s, key, klen, val, vlen, ef->ttl_s);
        if (r != STORE_OK && r != STORE_EXISTS)
            return r;
    }
    return STORE_OK;
}

/* QSTATE_NOT_OPEN deletes the key (no key means not opened); an unknown
 * question id is STORE_NOTFOUND and writes nothing. */
enum store_status qstate_write(struct store *s, const struct eventfile *ef, uint32_t question_id,
                               const struct qstate *st)
{
    if (eventfile_question(ef, question_id) == NULL)
        return STORE_NOTFOUND;
    char key[KEY_MAX];
    size_t klen = key_state(key, ef->name, question_id);
    if (st->kind == QSTATE_NOT_OPEN) {
        enum store_status r = store_delete(s, key, klen);
        return r == STORE_NOTFOUND ? STORE_OK : r;
    }
    char val[QSTATE_VALUE_MAX];
    size_t vlen = qstate_format(st, val, sizeof(val));
    if (vlen == 0)
        return STORE_ERROR;
    return store_set(s, key, klen, val, vlen, ef->ttl_s);
}
