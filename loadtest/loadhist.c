#include "loadhist.h"

#include <stdlib.h>
#include <string.h>

/*
 * Layout (HdrHistogram with a unit magnitude of 0): index 0..2047 holds the
 * values 0..2047 exactly; after that every power-of-two range [1024*2^k,
 * 2048*2^k) gets 1024 sub-buckets 2^k wide. Only the upper half of each
 * range needs storing, hence (buckets + 1) * 1024 counters.
 */

static unsigned clz64(uint64_t v)
{
    return (unsigned)__builtin_clzll(v);
}

bool loadhist_init(struct loadhist *h, uint64_t highest, unsigned digits)
{
    memset(h, 0, sizeof(*h));
    if (digits < 1 || digits > 5 || highest < 2 || highest > (UINT64_MAX >> 2))
        return false;

    uint64_t largest_single = 2;
    for (unsigned i = 0; i < digits; i++)
        largest_single *= 10;
    /* Sub-buckets per range: the power of two that can resolve 1 in 10^digits. */
    unsigned sub_mag = 64 - clz64(largest_single - 1);
    uint64_t sub_count = 1ull << sub_mag;
    uint64_t half_count = sub_count >> 1;

    uint32_t buckets = 1;
    uint64_t untrackable = sub_count;
    while (untrackable <= highest) {
        untrackable <<= 1;
        buckets++;
    }
    uint64_t len = (uint64_t)(buckets + 1) * half_count;
    h->counts = calloc((size_t)len, sizeof(*h->counts));
    if (h->counts == NULL)
        return false;
    h->counts_len = (uint32_t)len;
    h->sub_half_mag = sub_mag - 1;
    h->sub_mask = sub_count - 1;
    h->highest = highest;
    h->min = UINT64_MAX;
    return true;
}

void loadhist_free(struct loadhist *h)
{
    free(h->counts);
    memset(h, 0, sizeof(*h));
}

void loadhist_reset(struct loadhist *h)
{
    if (h->counts != NULL)
        memset(h->counts, 0, (size_t)h->counts_len * sizeof(*h->counts));
    h->total = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->clamped = 0;
    h->sum = 0;
}

uint32_t loadhist_index(const struct loadhist *h, uint64_t value)
{
    unsigned pow2ceil = 64 - clz64(value | h->sub_mask);
    unsigned bucket = pow2ceil - (h->sub_half_mag + 1);
    uint64_t sub = value >> bucket;
    uint64_t half = 1ull << h->sub_half_mag;
    return (uint32_t)(((uint64_t)(bucket + 1) << h->sub_half_mag) + (sub - half));
}

static void index_range(const struct loadhist *h, uint32_t index, uint64_t *lo, uint64_t *width)
{
    uint64_t half = 1ull << h->sub_half_mag;
    int64_t bucket = (int64_t)(index >> h->sub_half_mag) - 1;
    uint64_t sub = (index & (half - 1)) + half;
    if (bucket < 0) {
        bucket = 0;
        sub -= half;
    }
    *lo = sub << bucket;
    *width = 1ull << bucket;
}

uint64_t loadhist_lowest_at(const struct loadhist *h, uint32_t index)
{
    uint64_t lo, width;
    index_range(h, index, &lo, &width);
    return lo;
}

uint64_t loadhist_highest_at(const struct loadhist *h, uint32_t index)
{
    uint64_t lo, width;
    index_range(h, index, &lo, &width);
    return lo + width - 1;
}

void loadhist_record_n(struct loadhist *h, uint64_t value, uint64_t n)
{
    if (n == 0)
        return;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    h->sum += (double)value * (double)n;
    h->total += n;
    if (value > h->highest) {
        h->clamped += n;
        value = h->highest;
    }
    h->counts[loadhist_index(h, value)] += n;
}

void loadhist_record(struct loadhist *h, uint64_t value)
{
    loadhist_record_n(h, value, 1);
}

bool loadhist_merge(struct loadhist *dst, const struct loadhist *src)
{
    if (dst->counts_len != src->counts_len || dst->sub_mask != src->sub_mask ||
        dst->highest != src->highest)
        return false;
    if (src->total == 0)
        return true;
    for (uint32_t i = 0; i < src->counts_len; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->clamped += src->clamped;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    return true;
}

uint64_t loadhist_percentile(const struct loadhist *h, double percentile)
{
    if (h->total == 0)
        return 0;
    if (percentile > 100.0)
        percentile = 100.0;
    if (percentile < 0.0)
        percentile = 0.0;
    /* Rounded to the nearest rank, as HdrHistogram does: ceil() would turn
     * 99.9% of 1000 into 1000 through a rounding error in the product. */
    uint64_t want = (uint64_t)(percentile / 100.0 * (double)h->total + 0.5);
    if (want < 1)
        want = 1;
    if (want > h->total)
        want = h->total;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < h->counts_len; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t v = loadhist_highest_at(h, i);
            /* The exact extremes are known: never report past them. */
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double loadhist_mean(const struct loadhist *h)
{
    return h->total == 0 ? 0.0 : h->sum / (double)h->total;
}
