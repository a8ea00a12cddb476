/*
 * The embedded store (memory:): one table shared by every clone of a handle,
 * for the single-process mode where ingest threads and the aggregator share
 * the counters.
 *
 * The table is 64 independent hash tables ("stripes") chosen by key hash,
 * each with its own mutex: threads writing different keys rarely meet, and
 * there is no global lock. Semantics follow memcached so that code tested on
 * memory: behaves the same on a pool: counters are unsigned 64-bit and wrap,
 * incr of a non-decimal value fails, a TTL of 0 never expires, a value is at
 * most STORE_MAX_VALUE bytes.
 *
 * Expiry is lazy (an expired entry found by a lookup is removed) plus an
 * incremental sweep: every operation on a stripe also scans the next
 * MEM_SWEEP_BUCKETS buckets of that stripe and drops what has expired, so
 * dead keys are reclaimed at a bounded cost per operation without a
 * background thread. A stripe that no live key hashes to would never be
 * swept that way, so every other operation of a handle also sweeps the
 * stripes in turn, with a trylock: it never waits for a busy stripe.
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_impl.h"
#include "util.h"

#define MEM_STRIPES 64u
#define MEM_INITIAL_BUCKETS 64u
#define MEM_MAX_BUCKETS (1u << 24) /* per stripe: 1G entries in all before chains grow */
#define MEM_SWEEP_BUCKETS 2u
#define MEM_ROVING_EVERY 2u   /* operations per roving sweep */
#define MEM_ROVING_BUCKETS 4u

struct mem_entry {
    struct mem_entry *next;
    uint64_t hash;
    uint64_t expire_ms; /* 0: never */
    uint64_t counter;   /* the value while is_counter */
    char *val;          /* owned; NULL while is_counter */
    size_t vallen;
    bool is_counter;
    size_t keylen;
    char key[];
};

struct mem_stripe {
    alignas(64) pthread_mutex_t lock; /* own cache line: stripes do not false-share */
    struct mem_entry **buckets;       /* nbuckets chains */
    size_t nbuckets;                  /* a power of two */
    size_t count;
    size_t sweep;                     /* next bucket the sweep looks at */
};

struct mem_table {
    atomic_size_t refs;
    /* Set by store_memory_set_clock before the table is shared (tests). */
    store_clock_fn clock;
    void *clock_arg;
    struct mem_stripe stripes[MEM_STRIPES];
};

struct mem_store {
    struct store base;
    struct mem_table *t; /* shared, reference counted */
    unsigned tick;       /* operations of this handle: drives the roving sweep */
};

static const struct store_ops mem_ops;

static uint64_t mono_ms(void *arg)
{
    (void)arg;
    return util_mono_ms();
}

static uint64_t table_now(const struct mem_table *t)
{
    return t->clock(t->clock_arg);
}

/* FNV-1a 64 with a final mix so the low bits (stripe) and the next bits
 * (bucket) are both well spread. */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static struct mem_stripe *stripe_of(struct mem_table *t, uint64_t hash)
{
    return &t->stripes[hash % MEM_STRIPES];
}

static size_t bucket_of(const struct mem_stripe *st, uint64_t hash)
{
    return (size_t)(hash / MEM_STRIPES) & (st->nbuckets - 1);
}

static uint64_t expiry(uint64_t now, uint32_t ttl_s)
{
    return ttl_s == 0 ? 0 : now + (uint64_t)ttl_s * 1000u;
}

static bool expired(const struct mem_entry *e, uint64_t now)
{
    return e->expire_ms != 0 && now >= e->expire_ms;
}

static void entry_free(struct mem_entry *e)
{
    free(e->val);
    free(e);
}

/* Drops expired entries from the next nbuckets buckets. Caller holds the
 * stripe lock. */
static void stripe_sweep_n(struct mem_stripe *st, uint64_t now, unsigned nbuckets)
{
    for (unsigned i = 0; i < nbuckets; i++) {
        struct mem_entry **pp = &st->buckets[st->sweep];
        while (*pp != NULL) {
            struct mem_entry *e = *pp;
            if (expired(e, now)) {
                *pp = e->next;
                entry_free(e);
                st->count--;
            } else {
                pp = &e->next;
            }
        }
        st->sweep = (st->sweep + 1) & (st->nbuckets - 1);
    }
}

static void stripe_sweep(struct mem_stripe *st, uint64_t now)
{
    stripe_sweep_n(st, now, MEM_SWEEP_BUCKETS);
}

/* Doubles the bucket array; on allocation failure the table just keeps
 * longer chains. */
static void stripe_grow(struct mem_stripe *st)
{
    if (st->nbuckets >= MEM_MAX_BUCKETS)
        return;
    size_t nb = st->nbuckets * 2;
    struct mem_entry **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < st->nbuckets; i++) {
        struct mem_entry *e = st->buckets[i];
        while (e != NULL) {
            struct mem_entry *next = e->next;
            size_t j = (size_t)(e->hash / MEM_STRIPES) & (nb - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = nb;
    st->sweep &= nb - 1;
}

/* Finds a live entry; an expired one found on the way is removed. Caller
 * holds the stripe lock. */
static struct mem_entry *stripe_find(struct mem_stripe *st, uint64_t hash, const char *key,
                                     size_t keylen, uint64_t now)
{
    struct mem_entry **pp = &st->buckets[bucket_of(st, hash)];
    while (*pp != NULL) {
        struct mem_entry *e = *pp;
        if (e->hash == hash && e->keylen == keylen && memcmp(e->key, key, keylen) == 0) {
            if (!expired(e, now))
                return e;
            *pp = e->next;
            entry_free(e);
            st->count--;
            return NULL;
        }
        pp = &e->next;
    }
    return NULL;
}

static void stripe_unlink(struct mem_stripe *st, struct mem_entry *target)
{
    struct mem_entry **pp = &st->buckets[bucket_of(st, target->hash)];
    while (*pp != target)
        pp = &(*pp)->next;
    *pp = target->next;
    st->count--;
}

/* A new entry, not yet linked; NULL when out of memory. */
static struct mem_entry *entry_new(uint64_t hash, const char *key, size_t keylen)
{
    struct mem_entry *e = calloc(1, sizeof(*e) + keylen);
    if (e == NULL)
        return NULL;
    e->hash = hash;
    e->keylen = keylen;
    memcpy(e->key, key, keylen);
    return e;
}

static void stripe_link(struct mem_stripe *st, struct mem_entry *e)
{
    if (st->count >= st->nbuckets)
        stripe_grow(st);
    size_t b = bucket_of(st, e->hash);
    e->next = st->buckets[b];
    st->buckets[b] = e;
    st->count++;
}

static struct mem_table *table_new(void)
{
    struct mem_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    atomic_init(&t->refs, 1);
    t->clock = mono_ms;
    size_t i;
    for (i = 0; i < MEM_STRIPES; i++) {
        struct mem_stripe *st = &t->stripes[i];
        st->buckets = calloc(MEM_INITIAL_BUCKETS, sizeof(*st->buckets));
        if (st->buckets == NULL)
            goto err;
        st->nbuckets = MEM_INITIAL_BUCKETS;
        if (pthread_mutex_init(&st->lock, NULL) != 0) {
            free(st->buckets);
            goto err;
        }
    }
    return t;

err:
    while (i-- > 0) {
        pthread_mutex_destroy(&t->stripes[i].lock);
        free(t->stripes[i].buckets);
    }
    free(t);
    return NULL;
}

static void table_free(struct mem_table *t)
{
    for (size_t i = 0; i < MEM_STRIPES; i++) {
        struct mem_stripe *st = &t->stripes[i];
        for (size_t b = 0; b < st->nbuckets; b++) {
            struct mem_entry *e = st->buckets[b];
            while (e != NULL) {
                struct mem_entry *next = e->next;
                entry_free(e);
                e = next;
            }
        }
        free(st->buckets);
        pthread_mutex_destroy(&st->lock);
    }
    free(t);
}

static struct store *handle_new(struct mem_table *t)
{
    struct mem_store *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->base.ops = &mem_ops;
    m->t = t;
    return &m->base;
}

struct store *store_memory_open(void)
{
    struct mem_table *t = table_new();
    if (t == NULL)
        return NULL;
    struct store *s = handle_new(t);
    if (s == NULL)
        table_free(t);
    return s;
}

static struct mem_table *table_of(struct store *s)
{
    return ((struct mem_store *)s)->t;
}

/* Called once per operation, outside any stripe lock. */
static void roving_sweep(struct store *s, uint64_t now)
{
    struct mem_store *m = (struct mem_store *)s;
    m->tick++;
    if (m->tick % MEM_ROVING_EVERY != 0)
        return;
    struct mem_stripe *st = &m->t->stripes[(m->tick / MEM_ROVING_EVERY) % MEM_STRIPES];
    if (pthread_mutex_trylock(&st->lock) != 0)
        return;
    stripe_sweep_n(st, now, MEM_ROVING_BUCKETS);
    pthread_mutex_unlock(&st->lock);
}

void store_memory_set_clock(struct store *s, store_clock_fn fn, void *arg)
{
    if (s == NULL || s->ops != &mem_ops)
        return;
    struct mem_table *t = table_of(s);
    t->clock = fn != NULL ? fn : mono_ms;
    t->clock_arg = fn != NULL ? arg : NULL;
}

size_t store_memory_entries(struct store *s)
{
    if (s == NULL || s->ops != &mem_ops)
        return 0;
    struct mem_table *t = table_of(s);
    size_t n = 0;
    for (size_t i = 0; i < MEM_STRIPES; i++) {
        pthread_mutex_lock(&t->stripes[i].lock);
        n += t->stripes[i].count;
        pthread_mutex_unlock(&t->stripes[i].lock);
    }
    return n;
}

static struct store *mem_clone(struct store *s)
{
    struct mem_table *t = table_of(s);
    atomic_fetch_add(&t->refs, 1);
    struct store *c = handle_new(t);
    if (c == NULL)
        atomic_fetch_sub(&t->refs, 1);
    return c;
}

static void mem_close(struct store *s)
{
    struct mem_table *t = table_of(s);
    if (atomic_fetch_sub(&t->refs, 1) == 1)
        table_free(t);
    free(s);
}

/* One increment under the stripe lock. */
static enum store_status incr_one(struct mem_stripe *st, uint64_t hash, struct store_incr *it,
                                  uint64_t now, uint32_t ttl_s)
{
    struct mem_entry *e = stripe_find(st, hash, it->key, it->keylen, now);
    if (e == NULL) {
        e = entry_new(hash, it->key, it->keylen);
        if (e == NULL)
            return STORE_NOMEM;
        e->is_counter = true;
        e->counter = it->delta;
        e->expire_ms = expiry(now, ttl_s);
        stripe_link(st, e);
        it->value = e->counter;
        return STORE_OK;
    }
    if (!e->is_counter) {
        uint64_t v;
        if (!store_parse_counter(e->val, e->vallen, &v))
            return STORE_ERROR;
        free(e->val);
        e->val = NULL;
        e->vallen = 0;
        e->is_counter = true;
        e->counter = v;
    }
    e->counter += it->delta; /* unsigned: wraps at 2^64 like memcached's incr */
    e->expire_ms = expiry(now, ttl_s);
    it->value = e->counter;
    return STORE_OK;
}

static enum store_status mem_incr_batch(struct store *s, struct store_incr *items, size_t n,
                                        uint32_t ttl_s)
{
    struct mem_table *t = table_of(s);
    uint64_t now = table_now(t);
    enum store_status first = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        struct store_incr *it = &items[i];
        it->value = 0;
        if (!store_key_valid(it->key, it->keylen)) {
            it->status = STORE_ERROR;
        } else {
            uint64_t h = key_hash(it->key, it->keylen);
            struct mem_stripe *st = stripe_of(t, h);
            pthread_mutex_lock(&st->lock);
            it->status = incr_one(st, h, it, now, ttl_s);
            stripe_sweep(st, now);
            pthread_mutex_unlock(&st->lock);
            roving_sweep(s, now);
        }
        if (!it->want_value)
            it->value = 0;
        if (it->status != STORE_OK) {
            s->stats.error_items++;
            if (first == STORE_OK)
                first = it->status;
        }
    }
    return first;
}

static enum store_status mem_mget_u64(struct store *s, const char *const *keys,
                                      const size_t *keylens, size_t n, uint64_t *values,
                                      bool *present)
{
    struct mem_table *t = table_of(s);
    uint64_t now = table_now(t);
    enum store_status rc = STORE_OK;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        bool bad = false;
        uint64_t v = 0;
        if (!store_key_valid(keys[i], keylens[i])) {
            bad = true;
        } else {
            uint64_t h = key_hash(keys[i], keylens[i]);
            struct mem_stripe *st = stripe_of(t, h);
            pthread_mutex_lock(&st->lock);
            struct mem_entry *e = stripe_find(st, h, keys[i], keylens[i], now);
            if (e != NULL && e->is_counter) {
                found = true;
                v = e->counter;
            } else if (e != NULL) {
                found = store_parse_counter(e->val, e->vallen, &v);
                bad = !found;
            }
            stripe_sweep(st, now);
            pthread_mutex_unlock(&st->lock);
            roving_sweep(s, now);
        }
        values[i] = found ? v : 0;
        if (present != NULL)
            present[i] = found;
        if (bad) {
            s->stats.error_items++;
            rc = STORE_ERROR;
        }
    }
    return rc;
}

static enum store_status mem_get(struct store *s, const char *key, size_t keylen, char **val,
                                 size_t *vallen)
{
    struct mem_table *t = table_of(s);
    uint64_t now = table_now(t);
    uint64_t h = key_hash(key, keylen);
    struct mem_stripe *st = stripe_of(t, h);
    enum store_status rc = STORE_NOTFOUND;

    pthread_mutex_lock(&st->lock);
    struct mem_entry *e = stripe_find(st, h, key, keylen, now);
    if (e != NULL) {
        char num[20];
        const char *src = e->val;
        size_t len = e->vallen;
        if (e->is_counter) {
            len = util_format_u64(num, e->counter);
            src = num;
        }
        char *copy = malloc(len + 1);
        if (copy == NULL) {
            rc = STORE_NOMEM;
        } else {
            if (len > 0)
                memcpy(copy, src, len);
            copy[len] = '\0';
            *val = copy;
            *vallen = len;
            rc = STORE_OK;
        }
    }
    stripe_sweep(st, now);
    pthread_mutex_unlock(&st->lock);
    roving_sweep(s, now);
    return rc;
}

/* set (only_if_absent false) or add (true). */
static enum store_status mem_store_value(struct store *s, const char *key, size_t keylen,
                                         const char *val, size_t vallen, uint32_t ttl_s,
                                         bool only_if_absent)
{
    struct mem_table *t = table_of(s);
    uint64_t now = table_now(t);
    uint64_t h = key_hash(key, keylen);
    struct mem_stripe *st = stripe_of(t, h);
    enum store_status rc = STORE_OK;

    /* Copy outside the lock: a value can be most of a megabyte. */
    char *copy = malloc(vallen > 0 ? vallen : 1);
    if (copy == NULL)
        return STORE_NOMEM;
    if (vallen > 0)
        memcpy(copy, val, vallen);

    pthread_mutex_lock(&st->lock);
    struct mem_entry *e = stripe_find(st, h, key, keylen, now);
    if (e != NULL && only_if_absent) {
        rc = STORE_EXISTS;
    } else {
        if (e == NULL) {
            e = entry_new(h, key, keylen);
            if (e == NULL) {
                rc = STORE_NOMEM;
                goto unlock;
            }
            stripe_link(st, e);
        }
        free(e->val);
        e->val = copy;
        copy = NULL;
        e->vallen = vallen;
        e->is_counter = false;
        e->counter = 0;
        e->expire_ms = expiry(now, ttl_s);
    }
unlock:
    stripe_sweep(st, now);
    pthread_mutex_unlock(&st->lock);
    roving_sweep(s, now);
    free(copy);
    return rc;
}

static enum store_status mem_set(struct store *s, const char *key, size_t keylen,
                                 const char *val, size_t vallen, uint32_t ttl_s)
{
    return mem_store_value(s, key, keylen, val, vallen, ttl_s, false);
}

static enum store_status mem_add(struct store *s, const char *key, size_t keylen,
                                 const char *val, size_t vallen, uint32_t ttl_s)
{
    return mem_store_value(s, key, keylen, val, vallen, ttl_s, true);
}

static enum store_status mem_del(struct store *s, const char *key, size_t keylen)
{
    struct mem_table *t = table_of(s);
    uint64_t now = table_now(t);
    uint64_t h = key_hash(key, keylen);
    struct mem_stripe *st = stripe_of(t, h);
    enum store_status rc = STORE_NOTFOUND;

    pthread_mutex_lock(&st->lock);
    struct mem_entry *e = stripe_find(st, h, key, keylen, now);
    if (e != NULL) {
        stripe_unlink(st, e);
        entry_free(e);
        rc = STORE_OK;
    }
    stripe_sweep(st, now);
    pthread_mutex_unlock(&st->lock);
    roving_sweep(s, now);
    return rc;
}

static const struct store_ops mem_ops = {
    .kind = "memory",
    .in_process = true,
    .clone = mem_clone,
    .close = mem_close,
    .incr_batch = mem_incr_batch,
    .mget_u64 = mem_mget_u64,
    .get = mem_get,
    .set = mem_set,
    .add = mem_add,
    .del = mem_del,
};
