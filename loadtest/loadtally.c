#include "loadtally.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

bool loadtally_init(struct loadtally *t, uint32_t n_questions)
{
    memset(t, 0, sizeof(*t));
    if (n_questions > EVENT_MAX_QUESTIONS)
        return false;
    if (n_questions > 0) {
        t->q = calloc(n_questions, sizeof(*t->q));
        if (t->q == NULL)
            return false;
    }
    t->n_questions = n_questions;
    return true;
}

void loadtally_free(struct loadtally *t)
{
    free(t->q);
    memset(t, 0, sizeof(*t));
}

static void count_add(struct loadtally_count *c, bool right)
{
    c->answers++;
    if (right)
        c->right++;
    else
        c->wrong++;
}

void loadtally_add(struct loadtally *t, const struct loadtally_key *k)
{
    if (!k->valid || k->qidx >= t->n_questions || k->option >= EVENT_MAX_OPTIONS ||
        k->bucket >= EVENT_MAX_AGE_BUCKETS || k->country >= COUNTRY_COUNT) {
        t->invalid++;
        return;
    }
    struct loadtally_question *q = &t->q[k->qidx];
    count_add(&q->total, k->right);
    q->by_answer[k->option]++;
    count_add(&q->by_age[k->bucket], k->right);
    count_add(&q->by_country[k->country], k->right);
    count_add(&t->totals, k->right);
}

static void count_merge(struct loadtally_count *d, const struct loadtally_count *s)
{
    d->answers += s->answers;
    d->right += s->right;
    d->wrong += s->wrong;
}

bool loadtally_merge(struct loadtally *dst, const struct loadtally *src)
{
    if (dst->n_questions != src->n_questions)
        return false;
    for (uint32_t i = 0; i < src->n_questions; i++) {
        struct loadtally_question *d = &dst->q[i];
        const struct loadtally_question *s = &src->q[i];
        if (s->total.answers == 0 && s->total.right == 0 && s->total.wrong == 0)
            continue; /* most questions of a short run are untouched */
        count_merge(&d->total, &s->total);
        for (size_t o = 0; o < EVENT_MAX_OPTIONS; o++)
            d->by_answer[o] += s->by_answer[o];
        for (size_t b = 0; b < EVENT_MAX_AGE_BUCKETS; b++)
            count_merge(&d->by_age[b], &s->by_age[b]);
        for (size_t c = 0; c < COUNTRY_COUNT; c++)
            count_merge(&d->by_country[c], &s->by_country[c]);
    }
    count_merge(&dst->totals, &src->totals);
    dst->invalid += src->invalid;
    return true;
}

bool loadtally_key_for(const struct eventfile *ef, int64_t question, int64_t answer, int64_t age,
                       const char *country, size_t country_len, struct loadtally_key *key)
{
    memset(key, 0, sizeof(*key));
    if (question < 1 || question > (int64_t)EVENT_MAX_QUESTION_ID)
        return false;
    int qi = eventfile_question_index(ef, (uint32_t)question);
    if (qi < 0)
        return false;
    const struct event_question *q = &ef->questions[qi];
    if (answer < 0 || answer >= (int64_t)q->n_options)
        return false;
    if (age < AGE_MIN || age > AGE_MAX)
        return false;
    key->qidx = (uint16_t)qi;
    key->option = (uint8_t)answer;
    key->bucket = (uint8_t)eventfile_age_bucket(ef, (uint32_t)age);
    key->country = (uint16_t)country_lookup(country, country == NULL ? 0 : country_len);
    key->right = (uint32_t)answer == q->correct;
    key->valid = true;
    return true;
}

bool loadtally_fans_init(struct loadtally_fans *f, uint64_t users, uint32_t n_slots)
{
    memset(f, 0, sizeof(*f));
    if (n_slots == 0 || users > LOADTALLY_FANS_MAX_BITS / n_slots)
        return false;
    uint64_t bits = users * n_slots;
    if (bits > 0) {
        f->bits = calloc((size_t)((bits + 63) / 64), sizeof(*f->bits));
        if (f->bits == NULL)
            return false;
    }
    f->users = users;
    f->n_slots = n_slots;
    return true;
}

void loadtally_fans_free(struct loadtally_fans *f)
{
    free((void *)f->bits);
    memset(f, 0, sizeof(*f));
}

void loadtally_fans_mark(struct loadtally_fans *f, uint64_t user, uint32_t slot)
{
    if (user >= f->users || slot >= f->n_slots)
        return;
    uint64_t bit = user * f->n_slots + slot;
    atomic_fetch_or_explicit(&f->bits[bit / 64], 1ull << (bit % 64), memory_order_relaxed);
}

bool loadtally_fans_right(const struct loadtally_fans *f, uint64_t user, uint32_t slot)
{
    if (user >= f->users || slot >= f->n_slots)
        return false;
    uint64_t bit = user * f->n_slots + slot;
    uint64_t w = atomic_load_explicit(&f->bits[bit / 64], memory_order_relaxed);
    return (w >> (bit % 64)) & 1u;
}
