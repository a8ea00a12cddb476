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
 *
 * The ultimate fans (loadverify_fans) are checked against the population's
 * own record: every listed user must have had a right answer to every
 * closed question acknowledged, the right counts must be what was
 * acknowledged, the list must hold min(10, users who qualify) entries in
 * the ranking order (right desc, total_ms asc, user asc). The answer times
 * are the servers' (receive time minus open time), unknown here: only that
 * the order is consistent with the times shown is checked, not the times.
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
    uint64_t within_bound; /* counts above the expected one, within the maybe-counted bound */
};

void loadverify_diff_add(struct loadverify_diffs *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void loadverify_diffs_free(struct loadverify_diffs *d);

/* Entries of ultimate_fans kept (the API lists at most 10). */
#define LOADVERIFY_FANS_MAX 32
#define LOADVERIFY_USER_MAX 64

struct loadverify_fan {
    char user[LOADVERIFY_USER_MAX + 1];
    uint64_t rank, right, total_ms;
};

struct loadverify_stats {
    bool has_generation;
    uint64_t generation;
    bool has_totals;
    struct loadtally tally; /* the dashboard's counts, by the event's questions */
    bool *present;          /* owned: question listed by the dashboard, per question */
    bool *closed;           /* owned: its state is "closed", per question */
    bool has_fans;          /* ultimate_fans is an array */
    struct loadverify_fan fans[LOADVERIFY_FANS_MAX];
    size_t n_fans;          /* entries kept */
    size_t fans_listed;     /* entries in the snapshot */
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

/* The same where the answers of maybe (a try lost with its connection,
 * never confirmed) may or may not have been counted: a count passes from
 * base + sent up to base + sent + maybe (counted in d->within_bound when
 * above). */
uint64_t loadverify_compare_bounded(const struct eventfile *ef, const struct loadtally *base,
                                    const struct loadtally *sent, const struct loadtally *maybe,
                                    const struct loadverify_stats *actual,
                                    struct loadverify_diffs *d);

/* What the run sent, for the fans check: users "<prefix><n>", n = 1..users,
 * answered the questions qidx[0..n_slots) (indexes into ef->questions). */
struct loadverify_population {
    const char *prefix;
    const uint32_t *qidx;
    uint32_t n_slots;
    const struct loadtally_fans *acked; /* users x slots acknowledged right */
};

/* Checks actual's ultimate_fans against the population (above); adds every
 * difference to d and returns the number of checks made. */
uint64_t loadverify_fans(const struct eventfile *ef, const struct loadverify_population *pop,
                         const struct loadverify_stats *actual, struct loadverify_diffs *d);

#endif
