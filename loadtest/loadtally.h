/*
 * The tally of acknowledged answers: what the dashboard must show after the
 * run, counted the way API.md section 4 breaks it down (per question: right
 * and wrong, per chosen option, per age bucket, per country).
 *
 * A key is worked out once per answer when its body is made (or loaded for a
 * replay), with the same rules the ingest applies; adding it on a 202 is then
 * a few increments. Each sending thread owns one tally; they are merged after
 * join.
 */
#ifndef LT_LOADTALLY_H
#define LT_LOADTALLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"

/* What one answer counts towards. valid is false for a body the ingest
 * must refuse (an acknowledgement of it is itself a difference). */
struct loadtally_key {
    uint16_t qidx;    /* index into eventfile.questions */
    uint16_t country; /* country index, COUNTRY_UNKNOWN included */
    uint8_t option;
    uint8_t bucket;   /* 0-based age bucket */
    bool right;
    bool valid;
};

struct loadtally_count {
    uint64_t answers, right, wrong;
};

struct loadtally_question {
    struct loadtally_count total;
    uint64_t by_answer[EVENT_MAX_OPTIONS];
    struct loadtally_count by_age[EVENT_MAX_AGE_BUCKETS];
    struct loadtally_count by_country[COUNTRY_COUNT];
};

struct loadtally {
    uint32_t n_questions;
    struct loadtally_question *q; /* owned, indexed like eventfile.questions */
    struct loadtally_count totals;
    uint64_t invalid; /* acknowledged answers whose key was not valid */
};

bool loadtally_init(struct loadtally *t, uint32_t n_questions);
void loadtally_free(struct loadtally *t);
void loadtally_add(struct loadtally *t, const struct loadtally_key *k);
/* dst += src; false when they do not have the same questions. */
bool loadtally_merge(struct loadtally *dst, const struct loadtally *src);

/*
 * The key of an answer by the ingest's rules (API.md section 3): the question
 * must be in the event, 0 <= answer < options, age 1..130; the country is
 * case-insensitive, "uk" is "gb", missing (country == NULL) or unassigned
 * codes count as unknown. Returns false (and key->valid = false) when the
 * ingest would refuse the answer.
 */
bool loadtally_key_for(const struct eventfile *ef, int64_t question, int64_t answer, int64_t age,
                       const char *country, size_t country_len, struct loadtally_key *key);

/*
 * The user population's right answers that got a 202, for checking the
 * ultimate fans: one bit per (user, question slot), shared by the sending
 * threads (an atomic OR per acknowledged right answer, no lock). At most
 * LOADTALLY_FANS_MAX_BITS bits (32 MiB): a larger population x questions
 * is not checked.
 */
#define LOADTALLY_FANS_MAX_BITS (1ull << 28)

struct loadtally_fans {
    _Atomic uint64_t *bits; /* owned, users * n_slots bits; NULL when users is 0 */
    uint64_t users;
    uint32_t n_slots;
};

/* false when users * n_slots is past the bound or memory runs out. */
bool loadtally_fans_init(struct loadtally_fans *f, uint64_t users, uint32_t n_slots);
void loadtally_fans_free(struct loadtally_fans *f);
/* User index (0-based) answered slot right and got a 202. Any thread. */
void loadtally_fans_mark(struct loadtally_fans *f, uint64_t user, uint32_t slot);
bool loadtally_fans_right(const struct loadtally_fans *f, uint64_t user, uint32_t slot);

#endif
