/*
 * The hint table (store_hints.h): records in insertion order, their keys in
 * one byte arena, and an open-addressing index (linear probing) from
 * (kind, key) to record. Removal rebuilds all three compactly: it happens
 * once per replay, and a replay touches every entry anyway.
 */
#include "store_hints.h"

#include <stdlib.h>
#include <string.h>

#define HINT_KEY_MAX 250u

struct hrec {
    uint64_t delta;
    uint32_t key_off; /* in arena */
    uint32_t ttl_s;
    uint32_t hash;
    uint32_t writes;
    uint8_t keylen;   /* <= 250 */
    uint8_t kind;
};

struct store_hints {
    size_t max_keys;
    struct hrec *recs;  /* n used of cap */
    size_t n, cap;
    char *arena;        /* arena_len used of arena_cap */
    size_t arena_len, arena_cap;
    uint32_t *slots;    /* record index + 1; 0: empty. nslots is 0 or a power of two */
    size_t nslots;
    size_t n_kind[2];
};

/* FNV-1a, with the kind folded in so a counter and a blob never collide. */
static uint32_t key_hash(enum hint_kind kind, const char *key, size_t len)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

struct store_hints *hints_new(size_t max_keys)
{
    struct store_hints *h = calloc(1, sizeof(*h));
    if (h != NULL)
        h->max_keys = max_keys;
    return h;
}

static void release(struct store_hints *h)
{
    free(h->recs);
    free(h->arena);
    free(h->slots);
    h->recs = NULL;
    h->arena = NULL;
    h->slots = NULL;
    h->n = h->cap = h->arena_len = h->arena_cap = h->nslots = 0;
    h->n_kind[0] = h->n_kind[1] = 0;
}

void hints_free(struct store_hints *h)
{
    if (h == NULL)
        return;
    release(h);
    free(h);
}

size_t hints_count(const struct store_hints *h)
{
    return h != NULL ? h->n : 0;
}

size_t hints_count_kind(const struct store_hints *h, enum hint_kind kind)
{
    return h != NULL ? h->n_kind[kind] : 0;
}

static void index_insert(uint32_t *slots, size_t nslots, uint32_t hash, size_t rec)
{
    size_t mask = nslots - 1;
    size_t i = hash & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = (uint32_t)(rec + 1);
}

/* Keeps the index at most half full. */
static bool index_reserve(struct store_hints *h, size_t n)
{
    if (n * 2 <= h->nslots)
        return true;
    size_t ns = h->nslots ? h->nslots : 64;
    while (n * 2 > ns)
        ns *= 2;
    uint32_t *slots = calloc(ns, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (size_t r = 0; r < h->n; r++)
        index_insert(slots, ns, h->recs[r].hash, r);
    free(h->slots);
    h->slots = slots;
    h->nslots = ns;
    return true;
}

static bool grow(void **buf, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    void *p = realloc(*buf, c * elem);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = c;
    return true;
}

bool hints_add(struct store_hints *h, enum hint_kind kind, const char *key, size_t keylen,
               uint64_t delta, uint32_t ttl_s)
{
    if (h == NULL || keylen == 0 || keylen > HINT_KEY_MAX)
        return false;
    uint32_t hash = key_hash(kind, key, keylen);
    if (h->nslots > 0) {
        size_t mask = h->nslots - 1;
        for (size_t i = hash & mask; h->slots[i] != 0; i = (i + 1) & mask) {
            struct hrec *r = &h->recs[h->slots[i] - 1];
            if (r->hash == hash && r->kind == kind && r->keylen == keylen &&
                memcmp(h->arena + r->key_off, key, keylen) == 0) {
                if (kind == HINT_INCR) {
                    r->delta += delta;
                    r->ttl_s = ttl_s;
                }
                if (r->writes < UINT32_MAX)
                    r->writes++;
                return true;
            }
        }
    }
    if (h->n >= h->max_keys)
        return false;
    if (!index_reserve(h, h->n + 1) ||
        !grow((void **)&h->recs, &h->cap, h->n + 1, sizeof(*h->recs), 64) ||
        !grow((void **)&h->arena, &h->arena_cap, h->arena_len + keylen, 1, 4096))
        return false;
    struct hrec *r = &h->recs[h->n];
    *r = (struct hrec){.delta = kind == HINT_INCR ? delta : 0,
                       .key_off = (uint32_t)h->arena_len,
                       .ttl_s = kind == HINT_INCR ? ttl_s : 0,
                       .hash = hash,
                       .writes = 1,
                       .keylen = (uint8_t)keylen,
                       .kind = (uint8_t)kind};
    memcpy(h->arena + h->arena_len, key, keylen);
    h->arena_len += keylen;
    index_insert(h->slots, h->nslots, hash, h->n);
    h->n++;
    h->n_kind[kind]++;
    return true;
}

void hints_get(const struct store_hints *h, size_t i, struct hint_entry *out)
{
    const struct hrec *r = &h->recs[i];
    *out = (struct hint_entry){.key = h->arena + r->key_off,
                               .keylen = r->keylen,
                               .kind = (enum hint_kind)r->kind,
                               .delta = r->delta,
                               .ttl_s = r->ttl_s,
                               .writes = r->writes};
}

void hints_remove(struct store_hints *h, const bool *drop)
{
    if (h == NULL || h->n == 0)
        return;
    size_t kept = 0, arena = 0;
    for (size_t r = 0; r < h->n; r++) {
        if (drop[r]) {
            h->n_kind[h->recs[r].kind]--;
            continue;
        }
        struct hrec rec = h->recs[r];
        /* Keys move only towards the front: memmove in place is safe. */
        memmove(h->arena + arena, h->arena + rec.key_off, rec.keylen);
        rec.key_off = (uint32_t)arena;
        arena += rec.keylen;
        h->recs[kept++] = rec;
    }
    if (kept == 0) {
        release(h); /* a replay emptied it: give the memory back */
        return;
    }
    h->n = kept;
    h->arena_len = arena;
    memset(h->slots, 0, h->nslots * sizeof(*h->slots));
    for (size_t r = 0; r < h->n; r++)
        index_insert(h->slots, h->nslots, h->recs[r].hash, r);
}
