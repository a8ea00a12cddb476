/*
 * Pending increments of logical counters (keys.h): a dense array of deltas
 * indexed by counter id plus the list of ids touched, so adding an answer is
 * four array increments and building a batch walks only what was touched.
 * Owned by one thread at a time; no locking.
 */
#ifndef LT_COUNTS_H
#define LT_COUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct counts {
    uint64_t *delta;   /* owned, n entries */
    uint32_t *touched; /* owned, ids with delta != 0, in first-touch order */
    uint32_t ntouched;
    uint32_t n;
};

bool counts_init(struct counts *c, uint32_t n);
void counts_free(struct counts *c);

static inline void counts_add(struct counts *c, uint32_t id, uint64_t d)
{
    if (d == 0)
        return;
    if (c->delta[id] == 0)
        c->touched[c->ntouched++] = id;
    c->delta[id] += d;
}

/* Takes back d of id's delta (d <= delta[id]), as for an answer refused after
 * it was added. An id whose delta reaches 0 stays listed in touched: whoever
 * walks touched skips zero deltas. */
static inline void counts_sub(struct counts *c, uint32_t id, uint64_t d)
{
    c->delta[id] -= d;
}

/* Adds every delta of src into dst. */
void counts_merge(struct counts *dst, const struct counts *src);
void counts_clear(struct counts *c);

#endif
