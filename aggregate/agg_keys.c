#include "agg_keys.h"

#include <stdlib.h>
#include <string.h>

#include "keys.h"

size_t agg_keys_question_count(const struct eventfile *ef, uint32_t qi)
{
    /* Every factor is bounded by eventfile.h (shards <= 1000, 16 buckets,
     * 16 options, 250 countries), so this cannot overflow 64 bits. */
    uint64_t s = ef->shards;
    uint64_t n = 2u * s + 2u * (uint64_t)ef->n_age_buckets * s +
                 (uint64_t)ef->questions[qi].n_options * s;
    for (int c = 0; c < COUNTRY_COUNT; c++)
        n += 2u * (uint64_t)ef->country_shard_count[c];
    return n > AGG_MAX_KEYS ? 0 : (size_t)n;
}

void agg_keys_free(struct agg_keys *k)
{
    free(k->arena);
    free(k->key);
    free(k->len);
    free(k->q_first);
    free(k->q_count);
    memset(k, 0, sizeof(*k));
}

/* The list is walked twice: once without an arena to size it exactly, once
 * to fill it. */
struct walk {
    struct agg_keys *k;
    size_t used;     /* arena bytes */
    size_t cap;      /* arena bytes available; unused while sizing */
    size_t keys_cap; /* key slots available; unused while sizing */
    bool overflow;   /* the filling walk wanted more than the sizing one */
    char (*prefix)[KEY_PREFIX_MAX]; /* k->epochs counter prefixes, in order */
};

/* Appends one key (NUL included). */
static void put_key(struct walk *w, const char *key, size_t len)
{
    struct agg_keys *k = w->k;
    if (k->arena != NULL) {
        if (w->used + len + 1 > w->cap || k->n >= w->keys_cap) {
            w->overflow = true;
            return;
        }
        memcpy(k->arena + w->used, key, len + 1);
        k->key[k->n] = k->arena + w->used;
        k->len[k->n] = len;
    }
    k->n++;
    w->used += len + 1;
}

/* Walks the layout of agg_keys.h. */
static void enumerate(const struct eventfile *ef, struct walk *w)
{
    struct agg_keys *out = w->k;
    const uint32_t S = ef->shards;
    char buf[KEY_MAX];
    out->n = 0;
    w->used = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        const struct event_question *q = &ef->questions[qi];
        if (out->q_first != NULL)
            out->q_first[qi] = out->n;
        for (uint32_t e = 0; e < out->epochs; e++) {
            const char *ev = w->prefix[e];
            for (int o = 0; o < 2; o++) {
                enum key_outcome oc = o == 0 ? KEY_RIGHT : KEY_WRONG;
                for (uint32_t sh = 1; sh <= S; sh++)
                    put_key(w, buf, key_question(buf, ev, q->id, oc, sh));
            }
            for (uint32_t b = 1; b <= ef->n_age_buckets; b++) {
                for (int o = 0; o < 2; o++) {
                    enum key_outcome oc = o == 0 ? KEY_RIGHT : KEY_WRONG;
                    for (uint32_t sh = 1; sh <= S; sh++)
                        put_key(w, buf, key_age(buf, ev, q->id, b, oc, sh));
                }
            }
            for (int c = 0; c < COUNTRY_COUNT; c++) {
                const char *cc = country_code(c);
                for (int o = 0; o < 2; o++) {
                    enum key_outcome oc = o == 0 ? KEY_RIGHT : KEY_WRONG;
                    for (uint32_t sh = 1; sh <= ef->country_shard_count[c]; sh++)
                        put_key(w, buf, key_country(buf, ev, q->id, cc, oc, sh));
                }
            }
            for (uint32_t k = 0; k < q->n_options; k++) {
                for (uint32_t sh = 1; sh <= S; sh++)
                    put_key(w, buf, key_option(buf, ev, q->id, k, sh));
            }
        }
        if (out->q_count != NULL)
            out->q_count[qi] = out->n - out->q_first[qi];
    }
}

bool agg_keys_build(const struct eventfile *ef, struct agg_keys *out)
{
    return agg_keys_build_epochs(ef, 1, out);
}

bool agg_keys_build_epochs(const struct eventfile *ef, uint32_t epochs, struct agg_keys *out)
{
    return agg_keys_build_pool(ef, epochs > 0 ? epochs - 1 : 0, 0, out);
}

bool agg_keys_build_pool(const struct eventfile *ef, uint32_t newest, uint32_t folded,
                         struct agg_keys *out)
{
    memset(out, 0, sizeof(*out));
    if (folded > newest)
        folded = newest;
    /* a fold's carry stands for every epoch before it */
    out->epochs = newest - folded + 1 + (folded > 0);
    if (out->epochs > AGG_MAX_EPOCHS)
        return false;
    char prefix[AGG_MAX_EPOCHS][KEY_PREFIX_MAX];
    uint32_t np = 0;
    if (folded > 0)
        keys_fold_prefix(prefix[np++], ef->name, folded);
    for (uint32_t e = folded; e <= newest; e++)
        keys_epoch_prefix(prefix[np++], ef->name, e);
    uint64_t total = 0;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++) {
        size_t n = agg_keys_question_count(ef, qi);
        total += (uint64_t)n * out->epochs;
        if (n == 0 || total > AGG_MAX_KEYS)
            goto err;
    }
    struct walk w = {.k = out, .prefix = prefix};
    enumerate(ef, &w); /* sizing walk: nothing allocated yet */
    size_t bytes = w.used;
    size_t nk = total > 0 ? (size_t)total : 1;
    size_t nq = ef->n_questions > 0 ? ef->n_questions : 1;
    out->arena = malloc(bytes > 0 ? bytes : 1);
    out->key = malloc(nk * sizeof(*out->key));
    out->len = malloc(nk * sizeof(*out->len));
    out->q_first = malloc(nq * sizeof(*out->q_first));
    out->q_count = malloc(nq * sizeof(*out->q_count));
    if (out->arena == NULL || out->key == NULL || out->len == NULL || out->q_first == NULL ||
        out->q_count == NULL)
        goto err;
    w = (struct walk){.k = out, .cap = bytes, .keys_cap = (size_t)total, .prefix = prefix};
    out->max_q_count = 0;
    enumerate(ef, &w);
    if (w.overflow || out->n != total)
        goto err;
    for (uint32_t qi = 0; qi < ef->n_questions; qi++)
        if (out->q_count[qi] / out->epochs > out->max_q_count)
            out->max_q_count = out->q_count[qi] / out->epochs;
    return true;

err:
    agg_keys_free(out);
    return false;
}

/* Sums n shards starting at *pos and moves *pos past them. */
static uint64_t sum_shards(const uint64_t *values, size_t *pos, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum = agg_sat_add(sum, values[*pos + i]);
    *pos += n;
    return sum;
}

void agg_keys_sum_question(const struct eventfile *ef, uint32_t qi, const uint64_t *values,
                           struct agg_counts *out)
{
    const struct event_question *q = &ef->questions[qi];
    const size_t S = ef->shards;
    size_t pos = 0;
    memset(out, 0, sizeof(*out));
    out->right = sum_shards(values, &pos, S);
    out->wrong = sum_shards(values, &pos, S);
    for (uint32_t b = 0; b < ef->n_age_buckets; b++) {
        out->age_right[b] = sum_shards(values, &pos, S);
        out->age_wrong[b] = sum_shards(values, &pos, S);
    }
    for (int c = 0; c < COUNTRY_COUNT; c++) {
        out->country_right[c] = sum_shards(values, &pos, ef->country_shard_count[c]);
        out->country_wrong[c] = sum_shards(values, &pos, ef->country_shard_count[c]);
    }
    for (uint32_t k = 0; k < q->n_options; k++)
        out->by_answer[k] = sum_shards(values, &pos, S);
}

void agg_keys_sum_epochs(const struct eventfile *ef, const struct agg_keys *k, uint32_t qi,
                         const uint64_t *kept, uint64_t *scratch, struct agg_counts *out)
{
    const uint64_t *values = kept + k->q_first[qi];
    if (k->epochs > 1) {
        /* An epoch's counters are its own keys: they add up. */
        size_t n = k->q_count[qi] / k->epochs;
        memcpy(scratch, values, n * sizeof(*scratch));
        for (uint32_t e = 1; e < k->epochs; e++)
            for (size_t i = 0; i < n; i++)
                scratch[i] = agg_sat_add(scratch[i], values[e * n + i]);
        values = scratch;
    }
    agg_keys_sum_question(ef, qi, values, out);
}
