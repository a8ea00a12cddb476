#include "deltas.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a: keys are short and this runs once per key per answer. */
static uint32_t key_hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

bool deltas_init(struct deltas *d, size_t initial_cap)
{
    memset(d, 0, sizeof(*d));
    d->cap = initial_cap < 16 ? 16 : initial_cap;
    d->nslots = pow2_at_least(d->cap * 2);
    d->entries = malloc(d->cap * sizeof(*d->entries));
    d->slots = calloc(d->nslots, sizeof(*d->slots));
    if (d->entries == NULL || d->slots == NULL) {
        deltas_free(d);
        return false;
    }
    return true;
}

void deltas_free(struct deltas *d)
{
    free(d->entries);
    free(d->slots);
    memset(d, 0, sizeof(*d));
}

static void place(struct deltas *d, size_t index, uint32_t h)
{
    size_t mask = d->nslots - 1;
    size_t s = h & mask;
    while (d->slots[s] != 0)
        s = (s + 1) & mask;
    d->slots[s] = (uint32_t)index + 1;
    d->entries[index].slot = (uint32_t)s;
}

static bool grow(struct deltas *d)
{
    size_t cap = d->cap * 2;
    size_t nslots = pow2_at_least(cap * 2);
    struct delta_entry *entries = realloc(d->entries, cap * sizeof(*entries));
    if (entries == NULL)
        return false;
    d->entries = entries;
    uint32_t *slots = calloc(nslots, sizeof(*slots));
    if (slots == NULL)
        return false; /* entries grew, which is harmless */
    free(d->slots);
    d->slots = slots;
    d->nslots = nslots;
    d->cap = cap;
    for (size_t i = 0; i < d->count; i++)
        place(d, i, key_hash(d->entries[i].key, d->entries[i].len));
    return true;
}

bool deltas_add(struct deltas *d, const char *key, size_t len, uint64_t delta)
{
    if (len >= KEY_MAX)
        return false;
    uint32_t h = key_hash(key, len);
    size_t mask = d->nslots - 1;
    for (size_t s = h & mask; d->slots[s] != 0; s = (s + 1) & mask) {
        struct delta_entry *e = &d->entries[d->slots[s] - 1];
        if (e->len == len && memcmp(e->key, key, len) == 0) {
            e->delta += delta;
            return true;
        }
    }
    if (d->count == d->cap && !grow(d))
        return false;
    struct delta_entry *e = &d->entries[d->count];
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->len = (uint32_t)len;
    e->delta = delta;
    place(d, d->count, h);
    d->count++;
    return true;
}

void deltas_clear(struct deltas *d)
{
    for (size_t i = 0; i < d->count; i++)
        d->slots[d->entries[i].slot] = 0;
    d->count = 0;
}
