/*
 * Verification: the dashboard's counts (GET /v1/stats, API.md section 4)
 * against what the target acknowledged.
 *
 *   expected = baseline (the snapshot before the run) + tally of the 202s
 *
 * and every count is compared: per question answers/right/wrong, by_answer,
 * by_age[].answers/right/wrong, by_country[].answers/right/wrong, and the
 * totals. Malformed or unexpected entries of the snapshot (an unknown
 * question or country, a bucket out of range, a duplicate, a missing field)
 * are differences too. Parsing and comparing are pure, so the tests feed
 * them JSON text.
 */
#ifndef LT_LOADVERIFY_H
#define LT_LOADVERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "loadtally.h"

/* Lines kept for printing; the count goes on past it. */
#define LOADVERIFY_DIFFS_KEPT 1000
#define LOADVERIFY_DIFF_MAX 200

struct loadverify_diffs {
    char **lines;   /* owned, n of them */
    size_t n;
    uint64_t total; /* differences found, kept or not */
};

void loadverify_diff_add(struct loadverify_diffs *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void loadverify_diffs_free(struct loadverify_diffs *d);

struct loadverify_stats {
    bool has_generation;
    uint64_t generation;
    bool has_totals;
    struct loadtally tally; /* the dashboard's counts, by the event's questions */
    bool *present;          /* owned: question listed by the dashboard, per question */
};

/*
 * Parses a /v1/stats body. false (with err) only when it is not a JSON
 * object; anything wrong inside is added to d (NULL: ignored, to read just
 * the generation while polling).
 */
bool loadverify_stats_parse(const char *json, size_t len, const struct eventfile *ef,
                            struct loadverify_stats *st, struct loadverify_diffs *d, char *err,
                            size_t errlen);
void loadverify_stats_free(struct loadverify_stats *st);

/* Compares actual with base + sent (base may be NULL: nothing before) and
 * adds every difference to d. Returns the number of counts compared. */
uint64_t loadverify_compare(const struct eventfile *ef, const struct loadtally *base,
                            const struct loadtally *sent, const struct loadverify_stats *actual,
                            struct loadverify_diffs *d);

#endif
