/*
 * Every counter key of an event, enumerated from the event file (keys.h):
 * the store is never asked to list keys. Built once, since the event file
 * never changes, and kept flat: one arena of key bytes and two arrays the
 * multi-get takes as they are.
 *
 * The keys of one question are contiguous, in this order ("the layout"),
 * with S = ef->shards, shards numbered from 1:
 *   q{Q}right{1..S}, q{Q}wrong{1..S}
 *   per age bucket b (1-based):    q{Q}age{b}right{1..S}, q{Q}age{b}wrong{1..S}
 *   per country index c (0..COUNTRY_COUNT-1, "unknown" last):
 *                                  q{Q}c{cc}right{1..n_c}, q{Q}c{cc}wrong{1..n_c}
 *                                  with n_c = ef->country_shard_count[c]
 *   per option k (0-based):        q{Q}opt{k}n{1..S}
 * agg_keys_sum_question reads values in the same order. With pool epochs
 * (pool_record.h), a question's keys are that layout once per epoch, epoch
 * 0's first ("{event}:"), then "{event}~1:", ...: q_count is epochs times
 * agg_keys_question_count, and agg_keys_sum_epochs adds the epochs up. After
 * a fold into epoch F the first of those layouts is the fold's carry
 * ("{event}~F:f:") and the epochs before F are not read.
 */
#ifndef LT_AGG_KEYS_H
#define LT_AGG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg_stats.h"
#include "eventfile.h"

/* A bound on the key list (about 60 bytes of memory per key across the
 * aggregator's arrays): 1000 questions with the default sharding fit. */
#define AGG_MAX_KEYS 4000000u

struct agg_keys {
    char *arena;       /* owned: every key, NUL-terminated, back to back */
    const char **key;  /* owned: n pointers into arena */
    size_t *len;       /* owned: n lengths, NUL excluded */
    size_t n;
    size_t *q_first;   /* owned, per question: index of its first key */
    size_t *q_count;   /* owned, per question: how many keys it has */
    uint32_t epochs;   /* >= 1 */
    size_t max_q_count; /* the largest agg_keys_question_count */
};

/* Number of counter keys of question qi (0 if it would exceed AGG_MAX_KEYS). */
size_t agg_keys_question_count(const struct eventfile *ef, uint32_t qi);

/* Builds the key list of every question. false when the list would exceed
 * AGG_MAX_KEYS or memory runs out; out is then empty (agg_keys_free is safe). */
bool agg_keys_build(const struct eventfile *ef, struct agg_keys *out);
/* The same with the keys of pool epochs 0 .. epochs - 1. */
bool agg_keys_build_epochs(const struct eventfile *ef, uint32_t epochs, struct agg_keys *out);
/* The keys a pool's reader reads (pool_record.h): with folded = 0 epochs
 * 0 .. newest; else the fold's carry counters ("{event}~{folded}:f:"),
 * then epochs folded .. newest. */
#define AGG_MAX_EPOCHS 9u
bool agg_keys_build_pool(const struct eventfile *ef, uint32_t newest, uint32_t folded,
                         struct agg_keys *out);
void agg_keys_free(struct agg_keys *k);

/* Sums the shards of question qi. values holds agg_keys_question_count()
 * counters in the layout order (values[0] is the question's first key). */
void agg_keys_sum_question(const struct eventfile *ef, uint32_t qi, const uint64_t *values,
                           struct agg_counts *out);

/* Sums question qi from kept (every key's value, indexed as k's) over its
 * epochs; scratch holds k->max_q_count values. */
void agg_keys_sum_epochs(const struct eventfile *ef, const struct agg_keys *k, uint32_t qi,
                         const uint64_t *kept, uint64_t *scratch, struct agg_counts *out);

#endif
