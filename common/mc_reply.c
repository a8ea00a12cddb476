#include "mc_reply.h"

#include <stdlib.h>
#include <string.h>

#include "store_impl.h"

/* Finds the O<i> flag among the reply's flags; true with *idx set. */
static bool reply_opaque(const char *flags, const char *end, size_t *idx)
{
    const char *p = flags;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        const char *tok = p;
        while (p < end && *p != ' ')
            p++;
        if (p - tok >= 2 && tok[0] == 'O') {
            uint64_t v;
            if (!store_parse_counter(tok + 1, (size_t)(p - tok - 1), &v) || p[-1] == ' ')
                return false;
            *idx = (size_t)v;
            return true;
        }
    }
    return false;
}

static void item_value(struct mc_reply *x, size_t i, const char *data, size_t len)
{
    struct store_op *op = &x->ops[i];
    x->seen[i] = 1;
    if (op->want_blob) {
        free(op->blob);
        op->blob = malloc(len + 1);
        op->bloblen = op->blob != NULL ? len : 0;
        if (op->blob != NULL) {
            memcpy(op->blob, data, len);
            op->blob[len] = '\0';
        }
        op->status = op->blob != NULL ? STORE_OK : STORE_NOMEM;
        op->present = op->blob != NULL;
        return;
    }
    uint64_t v = 0;
    bool ok = store_parse_counter(data, len, &v);
    op->status = ok ? STORE_OK : STORE_ERROR;
    op->value = ok ? v : 0;
    op->present = ok;
}

/* An opaque that names an op of this batch and node. */
static bool our_op(const struct mc_reply *x, size_t idx)
{
    return idx < x->n && x->ops[idx].node == x->node;
}

enum mc_reply_result mc_reply_parse(struct mc_reply *x, const char *buf, size_t len, size_t *used)
{
    size_t pos = 0;
    enum mc_reply_result res = MC_REPLY_BAD;
    for (;;) {
        if (x->skip > 0) {
            size_t take = len - pos < x->skip ? len - pos : x->skip;
            pos += take;
            x->skip -= take;
            if (x->skip > 0) {
                res = MC_REPLY_MORE;
                break;
            }
        }
        const char *start = buf + pos;
        size_t avail = len - pos;
        const char *nl = memchr(start, '\n', avail);
        if (nl == NULL) {
            res = avail >= MC_REPLY_LINE_MAX ? MC_REPLY_BAD : MC_REPLY_MORE;
            break;
        }
        if (nl == start || nl[-1] != '\r')
            break;
        const char *end = nl - 1; /* line is [start, end) */
        size_t linelen = (size_t)(end - start);
        size_t consumed = (size_t)(nl + 1 - start);

        if (linelen == 2 && memcmp(start, "MN", 2) == 0) {
            pos += consumed;
            res = MC_REPLY_DONE;
            break;
        }
        if (linelen >= 2 && memcmp(start, "VA", 2) == 0 && (linelen == 2 || start[2] == ' ')) {
            const char *p = start + 3;
            const char *lenend = p;
            while (lenend < end && *lenend != ' ')
                lenend++;
            uint64_t dlen;
            size_t idx;
            if (linelen < 4 || !store_parse_counter(p, (size_t)(lenend - p), &dlen) ||
                lenend[-1] == ' ' || dlen > STORE_MAX_VALUE || !reply_opaque(lenend, end, &idx) ||
                !our_op(x, idx))
                break;
            if (x->kind == MC_ADD || x->kind == MC_DEL)
                break; /* ms and md send no value back */
            bool whole = x->ops[idx].want_blob && dlen <= STORE_GET_MANY_VALUE_MAX;
            if (dlen > MC_REPLY_SMALL_VALUE && !whole) {
                /* Not a counter: only mg can meet one (a blob at a counter's
                 * key, or a blob longer than asked for). */
                if (x->kind == MC_INCR)
                    break;
                if (x->ops[idx].want_blob) {
                    x->seen[idx] = 1;
                    x->ops[idx].status = STORE_ERROR;
                    x->ops[idx].present = false;
                } else
                    item_value(x, idx, "x", 1);
                pos += consumed;
                x->skip = (size_t)dlen + 2;
                continue;
            }
            if (avail < consumed + dlen + 2) {
                res = MC_REPLY_MORE; /* wait for the whole block */
                break;
            }
            const char *data = nl + 1;
            if (data[dlen] != '\r' || data[dlen + 1] != '\n')
                break;
            item_value(x, idx, data, (size_t)dlen);
            pos += consumed + (size_t)dlen + 2;
            continue;
        }
        size_t idx;
        if (linelen >= 2 && (linelen == 2 || start[2] == ' ') &&
            (memcmp(start, "HD", 2) == 0 || memcmp(start, "NS", 2) == 0 ||
             memcmp(start, "NF", 2) == 0 || memcmp(start, "EX", 2) == 0 ||
             memcmp(start, "EN", 2) == 0)) {
            if (!reply_opaque(start + 2, end, &idx) || !our_op(x, idx))
                break;
            x->seen[idx] = 1;
            struct store_op *op = &x->ops[idx];
            if (x->kind == MC_ADD) {
                op->status = memcmp(start, "HD", 2) == 0   ? STORE_OK
                             : memcmp(start, "NS", 2) == 0 ? STORE_EXISTS
                                                           : STORE_ERROR;
            } else if (x->kind == MC_DEL) {
                op->status = memcmp(start, "HD", 2) == 0   ? STORE_OK
                             : memcmp(start, "NF", 2) == 0 ? STORE_NOTFOUND
                                                           : STORE_ERROR;
            } else if (x->kind == MC_INCR) {
                op->status = memcmp(start, "HD", 2) == 0 && !op->want_value ? STORE_OK
                                                                            : STORE_ERROR;
            } else {
                op->status = STORE_OK; /* EN: a miss */
                op->value = 0;
                op->present = false;
            }
            pos += consumed;
            continue;
        }
        if ((linelen >= 12 && memcmp(start, "CLIENT_ERROR", 12) == 0) ||
            (linelen >= 12 && memcmp(start, "SERVER_ERROR", 12) == 0) ||
            (linelen == 5 && memcmp(start, "ERROR", 5) == 0)) {
            x->unattributed = true;
            pos += consumed;
            continue;
        }
        break; /* an unknown reply */
    }
    *used = pos;
    return res;
}
