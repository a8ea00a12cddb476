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

/* When the state was written (wall ms): an open at its open time, a close
 * QSTATE_CLOSE_DELAY_MS before its close time, and never before the open
 * it closes. */
static uint64_t written_ms(const struct qstate *st)
{
    if (st->kind != QSTATE_CLOSED)
        return st->open_ms;
    uint64_t asked = st->close_ms > QSTATE_CLOSE_DELAY_MS ? st->close_ms - QSTATE_CLOSE_DELAY_MS : 0;
    return asked > st->open_ms ? asked : st->open_ms;
}

/* b was written after a: the later write wins (a close after its open, an
 * open again after a close); at the same millisecond the further kind,
 * then the earlier times, so every reader picks the same copy. */
static bool qstate_further(const struct qstate *a, const struct qstate *b)
{
    if (written_ms(a) != written_ms(b))
        return written_ms(b) > written_ms(a);
    if (a->kind != b->kind)
        return b->kind > a->kind;
    if (a->close_ms != b->close_ms)
        return b->close_ms < a->close_ms;
    return b->open_ms < a->open_ms;
}

struct qstate_copies {
    struct qstate best;
    bool parsed;   /* some copy parsed */
    bool garbled;  /* some copy did not */
};

static void on_qstate_copy(void *arg, const char *val, size_t vallen)
{
    struct qstate_copies *c = arg;
    struct qstate st;
    if (!qstate_parse(val, vallen, &st)) {
        c->garbled = true;
        return;
    }
    if (!c->parsed || qstate_further(&c->best, &st))
        c->best = st;
    c->parsed = true;
}

static enum store_status read_copies(struct store *s, const struct eventfile *ef,
                                     uint32_t question_id, struct qstate *out, size_t *missed)
{
    char key[KEY_MAX];
    size_t klen = key_state(key, ef->name, question_id);
    struct qstate_copies c = {.best = {.kind = QSTATE_NOT_OPEN}};
    enum store_status st = store_get_each(s, key, klen, on_qstate_copy, &c, missed);
    *out = c.parsed ? c.best : (struct qstate){.kind = QSTATE_NOT_OPEN};
    if (st == STORE_OK && !c.parsed)
        return STORE_ERROR; /* a value this code did not write: no guess */
    return st;
}

enum store_status qstate_read(struct store *s, const struct eventfile *ef, uint32_t question_id,
                              struct qstate *out)
{
    return read_copies(s, ef, question_id, out, NULL);
}

static void on_qstate_copy_of(void *arg, size_t i, const char *val, size_t vallen)
{
    struct qstate_copies *copies = arg;
    on_qstate_copy(&copies[i], val, vallen);
}

/* Every question's state in one read of every copy (store_get_each_many):
 * one round trip per node, not one per question and replica, so a 42-question
 * event on a replica 10 ms away reads in ~10 ms, well within the
 * QSTATE_CLOSE_DELAY_MS an answer is taken on (ingest.c, states_fresh). */
enum store_status qstate_fetch_unsure(struct store *s, const struct eventfile *ef,
                                      struct qstate *out, bool *unsure)
{
    size_t n = ef->n_questions;
    if (n == 0)
        return STORE_OK;
    char (*keys)[KEY_MAX] = malloc(n * sizeof(*keys));
    const char **kp = malloc(n * sizeof(*kp));
    size_t *klens = malloc(n * sizeof(*klens));
    size_t *missed = malloc(n * sizeof(*missed));
    enum store_status *status = malloc(n * sizeof(*status));
    struct qstate_copies *copies = calloc(n, sizeof(*copies));
    enum store_status st = STORE_NOMEM;
    if (keys == NULL || kp == NULL || klens == NULL || missed == NULL || status == NULL ||
        copies == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        klens[i] = key_state(keys[i], ef->name, ef->questions[i].id);
        kp[i] = keys[i];
        copies[i].best = (struct qstate){.kind = QSTATE_NOT_OPEN};
    }
    st = store_get_each_many(s, kp, klens, n, on_qstate_copy_of, copies, status, missed);
    for (size_t i = 0; i < n; i++) {
        out[i] = copies[i].parsed ? copies[i].best : (struct qstate){.kind = QSTATE_NOT_OPEN};
        if (unsure != NULL)
            unsure[i] = status[i] == STORE_NOTFOUND && missed[i] > 0;
        if (status[i] == STORE_OK && !copies[i].parsed && st == STORE_OK)
            st = STORE_ERROR; /* a value this code did not write: no guess */
    }
out:
    free(keys);
    free(kp);
    free(klens);
    free(missed);
    free(status);
    free(copies);
    return st;
}

enum store_status qstate_fetch_all(struct store *s, const struct eventfile *ef, struct qstate *out)
{
    return qstate_fetch_unsure(s, ef, out, NULL);
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
