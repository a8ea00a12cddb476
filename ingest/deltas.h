/*
 * A table of pending counter increments: key -> delta. Many answers hitting
 * the same shard key become one increment, which is what makes a burst cheap
 * for the store. Entries live in a dense array in insertion order (so a batch
 * is built by one linear walk) indexed by an open-addressing hash.
 * Owned by one thread at a time; no locking.
 */
#ifndef LT_DELTAS_H
#define LT_DELTAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

struct delta_entry {
    char key[KEY_MAX];
    uint32_t len;
    uint32_t slot; /* index slot, so clearing is O(entries) */
    uint64_t delta;
};

struct deltas {
    struct delta_entry *entries; /* owned, count used of cap */
    size_t count;
    size_t cap;
    uint32_t *slots;             /* owned; 0 = empty, else entry index + 1 */
    size_t nslots;               /* power of two, >= 2 * cap */
};

bool deltas_init(struct deltas *d, size_t initial_cap);
void deltas_free(struct deltas *d);
/* false only when memory runs out (the table is then unchanged). */
bool deltas_add(struct deltas *d, const char *key, size_t len, uint64_t delta);
void deltas_clear(struct deltas *d);

#endif
