/*
 * A log-linear latency histogram in the HdrHistogram layout: values from 0
 * up to `highest` are kept with `digits` significant decimal digits: the
 * bucket holding a value is at most 1/1024 of it wide for 3 digits (< 0.1%),
 * and values below 2048 are exact.
 *
 * Memory is fixed at init (17408 counters for 1 us .. 60 s at 3 digits,
 * 136 KiB); recording is two shifts and an increment, so it can sit on the
 * response path. A histogram belongs to one thread; threads' histograms are
 * summed with loadhist_merge after join (wrk style).
 */
#ifndef LT_LOADHIST_H
#define LT_LOADHIST_H

#include <stdbool.h>
#include <stdint.h>

/* The load tester's latency range: 1 us resolution up to 60 s. */
#define LOADHIST_HIGHEST_US 60000000ull
#define LOADHIST_DIGITS 3

struct loadhist {
    uint64_t *counts;      /* owned, counts_len entries */
    uint32_t counts_len;
    uint32_t sub_half_mag; /* log2 of half the sub-bucket count */
    uint64_t sub_mask;     /* sub-bucket count - 1 */
    uint64_t highest;      /* larger values are recorded as `highest` */
    uint64_t total;        /* values recorded */
    uint64_t min, max;     /* exact, before clamping (min is UINT64_MAX when empty) */
    uint64_t clamped;      /* values that were above `highest` */
    double sum;            /* for the mean */
};

/* digits 1..5, highest >= 2. false on a bad argument or out of memory. */
bool loadhist_init(struct loadhist *h, uint64_t highest, unsigned digits);
void loadhist_free(struct loadhist *h);
void loadhist_reset(struct loadhist *h);

void loadhist_record(struct loadhist *h, uint64_t value);
void loadhist_record_n(struct loadhist *h, uint64_t value, uint64_t n);

/* dst += src. false when the two were made with different parameters. */
bool loadhist_merge(struct loadhist *dst, const struct loadhist *src);

/* The value at a percentile (0..100]: the highest value that is equivalent
 * (same bucket) to the recorded one below which `percentile` % of the values
 * fall, capped by the exact max. 0 when empty. */
uint64_t loadhist_percentile(const struct loadhist *h, double percentile);
double loadhist_mean(const struct loadhist *h);

/* Bucket helpers, exposed for the tests: the index a value lands in, and the
 * lowest and highest values of that index. */
uint32_t loadhist_index(const struct loadhist *h, uint64_t value);
uint64_t loadhist_lowest_at(const struct loadhist *h, uint32_t index);
uint64_t loadhist_highest_at(const struct loadhist *h, uint32_t index);

#endif
