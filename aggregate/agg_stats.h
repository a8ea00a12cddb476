/*
 * The aggregator's arithmetic, kept apart from any I/O so tables can test it:
 * the grow-only merge of counter reads, the consistency checks between a
 * question's breakdowns, and the snapshot JSON of API.md section 4.
 *
 * Every count saturates at INT64_MAX (the largest JSON integer jansson
 * writes) instead of wrapping: a sum that overflowed would otherwise show up
 * as a total going backwards.
 */
#ifndef LT_AGG_STATS_H
#define LT_AGG_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "country.h"
#include "eventfile.h"
#include "fans.h"
#include "qstate.h"

/* How many counters going backwards, and how many failed checks, a snapshot
 * lists one by one; the rest are only counted ("... and N more"). */
#define AGG_MAX_WARNINGS 20
#define AGG_MAX_MISMATCHES 20

/* One question's counters, shards already summed. */
struct agg_counts {
    uint64_t right;
    uint64_t wrong;
    uint64_t by_answer[EVENT_MAX_OPTIONS];      /* per option index */
    uint64_t age_right[EVENT_MAX_AGE_BUCKETS];  /* per 0-based bucket */
    uint64_t age_wrong[EVENT_MAX_AGE_BUCKETS];
    uint64_t country_right[COUNTRY_COUNT];      /* per country index */
    uint64_t country_wrong[COUNTRY_COUNT];
};

/* a + b, stopping at INT64_MAX. */
uint64_t agg_sat_add(uint64_t a, uint64_t b);

/* One counter that read lower than an earlier pass saw it. */
struct agg_drop {
    size_t key;        /* index into the key list */
    uint64_t old_value; /* kept */
    uint64_t new_value; /* read, ignored */
};

struct agg_drops {
    struct agg_drop list[AGG_MAX_WARNINGS]; /* the first `listed` drops */
    size_t listed;
    size_t total;
};

/* The grow-only rule over keys first..first+n-1 of two arrays parallel to the
 * key list: kept[i] = max(kept[i], read[i]); every read lower than kept[i] is
 * recorded in drops (which the caller zeroes once per pass). */
void agg_stats_grow_only(uint64_t *kept, const uint64_t *read, size_t first, size_t n,
                         struct agg_drops *drops);

/* A breakdown that does not add up to its question's total. */
struct agg_mismatch {
    uint32_t question; /* question id */
    const char *check; /* static: "by_age.right", "by_country.wrong", "by_answer", ... */
    uint64_t expected; /* the question's own total */
    uint64_t actual;   /* the breakdown's sum */
};

struct agg_checks {
    struct agg_mismatch list[AGG_MAX_MISMATCHES];
    size_t listed;
    size_t total;
};

/* Checks question ef->questions[qi]: sums over age buckets and over
 * countries equal right and wrong, the sum over options equals answers, and
 * the count of the correct option equals right. Appends every mismatch to
 * out (zeroed by the caller once per pass); returns how many it found. */
size_t agg_stats_check(const struct eventfile *ef, uint32_t qi, const struct agg_counts *c,
                       struct agg_checks *out);

/* Exact comparison of right ratios r1/a1 and r2/a2 (a1, a2 > 0): <0, 0, >0. */
int agg_stats_ratio_cmp(uint64_t r1, uint64_t a1, uint64_t r2, uint64_t a2);

/* right / answers rounded to 4 decimals; 0 when answers is 0. */
double agg_stats_ratio(uint64_t right, uint64_t answers);

/* Everything a snapshot is made of; all (ref). */
struct agg_snapshot_in {
    const struct eventfile *ef;
    const struct agg_counts *counts; /* ef->n_questions, in ef->questions order */
    const struct qstate *states;     /* ef->n_questions */
    uint64_t generation;
    uint64_t now_ms;                 /* wall clock, for generated_at */
    const struct agg_drops *drops;   /* may be NULL */
    const char *const *keys;         /* key names for drops (the key list); NULL if drops is */
    const struct agg_checks *checks; /* may be NULL: no check ran, "checks" says ok */
    const char *const *notes;        /* more warning lines (store nodes); may be NULL */
    size_t n_notes;
    const struct fans_entry *fans;   /* the ultimate fans in rank order; may be NULL */
    size_t n_fans;                   /* at most FANS_SHOWN are listed */
};

/* The snapshot as compact JSON, NUL-terminated, malloc'd and owned by the
 * caller (free()); *len is its length. NULL when memory runs out. Linear in
 * questions x (options + age buckets + countries). */
char *agg_stats_build_json(const struct agg_snapshot_in *in, size_t *len);

#endif
