#include "loadunits.h"

#include <stdio.h>
#include <string.h>

/* At most 18 digits fit a uint64_t whatever they are; more precision than
 * that is never meaningful for a flag. */
#define MAX_DIGITS 18

struct decimal {
    uint64_t mantissa; /* all digits, the point removed */
    unsigned frac;     /* digits after the point */
};

static const uint64_t pow10_table[] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull,
};

/*
 *   DIGITS [ "." DIGITS ]  |  "." DIGITS   followed by the unit suffix
 * Returns the suffix (possibly "") or NULL when there is no number.
 */
static const char *parse_decimal(const char *s, struct decimal *d)
{
    uint64_t m = 0;
    unsigned ndigits = 0;
    unsigned frac = 0;
    bool point = false;
    const char *p = s;
    for (;; p++) {
        if (*p >= '0' && *p <= '9') {
            if (ndigits == MAX_DIGITS)
                return NULL;
            m = m * 10 + (uint64_t)(*p - '0');
            ndigits++;
            if (point)
                frac++;
        } else if (*p == '.' && !point) {
            point = true;
        } else {
            break;
        }
    }
    /* "5." and "." are not numbers; ".5" is. */
    if (ndigits == 0 || (point && frac == 0))
        return NULL;
    d->mantissa = m;
    d->frac = frac;
    return p;
}

/* value * mult, exactly, as an integer; false when it overflows or is not
 * whole. */
static bool scale_exact(const struct decimal *d, uint64_t mult, uint64_t *out)
{
    if (d->mantissa != 0 && mult > UINT64_MAX / d->mantissa)
        return false;
    uint64_t v = d->mantissa * mult;
    uint64_t div = pow10_table[d->frac];
    if (v % div != 0)
        return false;
    *out = v / div;
    return true;
}

static double to_double(const struct decimal *d)
{
    return (double)d->mantissa / (double)pow10_table[d->frac];
}

static bool si_multiplier(const char *suffix, uint64_t *mult, const char **rest)
{
    *rest = suffix + 1;
    switch (suffix[0]) {
    case 'k':
    case 'K': *mult = 1000ull; return true;
    case 'M': *mult = 1000000ull; return true;
    case 'G': *mult = 1000000000ull; return true;
    default:
        *mult = 1;
        *rest = suffix;
        return true;
    }
}

bool loadunits_duration_us(const char *s, uint64_t min_us, uint64_t max_us, uint64_t *out)
{
    static const struct {
        const char *name;
        uint64_t us;
    } units[] = {
        {"us", 1ull}, {"ms", 1000ull}, {"s", 1000000ull}, {"", 1000000ull},
        {"m", 60000000ull}, {"h", 3600000000ull},
    };
    if (s == NULL)
        return false;
    struct decimal d;
    const char *suffix = parse_decimal(s, &d);
    if (suffix == NULL)
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(suffix, units[i].name) != 0)
            continue;
        /* A fraction of a microsecond is rounded to the nearest one: "1.0005ms". */
        if (d.mantissa != 0 && units[i].us > UINT64_MAX / d.mantissa)
            return false;
        uint64_t v = d.mantissa * units[i].us;
        uint64_t div = pow10_table[d.frac];
        uint64_t us = v / div + ((v % div) * 2 >= div ? 1 : 0);
        if (us < min_us || us > max_us)
            return false;
        *out = us;
        return true;
    }
    return false;
}

bool loadunits_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL)
        return false;
    struct decimal d;
    const char *suffix = parse_decimal(s, &d);
    if (suffix == NULL)
        return false;
    uint64_t mult;
    const char *rest;
    si_multiplier(suffix, &mult, &rest);
    if (*rest != '\0')
        return false;
    uint64_t v;
    if (!scale_exact(&d, mult, &v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool loadunits_rate(const char *s, double min, double max, double *out)
{
    if (s == NULL)
        return false;
    struct decimal d;
    const char *suffix = parse_decimal(s, &d);
    if (suffix == NULL)
        return false;
    uint64_t mult;
    const char *rest;
    si_multiplier(suffix, &mult, &rest);
    if (*rest != '\0' && strcmp(rest, "/s") != 0)
        return false;
    double v = to_double(&d) * (double)mult;
    if (!(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

bool loadunits_factor(const char *s, double min, double max, double *out)
{
    if (s == NULL)
        return false;
    struct decimal d;
    const char *suffix = parse_decimal(s, &d);
    if (suffix == NULL || (*suffix != '\0' && strcmp(suffix, "x") != 0))
        return false;
    double v = to_double(&d);
    if (!(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

void loadunits_format_duration(uint64_t us, char *buf, size_t len)
{
    if (len == 0)
        return;
    /* Each unit up to where its rounding would reach the next one: 999.6 ms
     * with 3 digits is "1e+03ms", and 59m59.6s would be "60m00s". */
    if (us < 1000) {
        snprintf(buf, len, "%lluus", (unsigned long long)us);
    } else if (us < 999500) {
        snprintf(buf, len, "%.3gms", (double)us / 1e3);
    } else if (us < 60000000) {
        snprintf(buf, len, "%.3gs", (double)us / 1e6);
    } else if (us < 3599500000ull) {
        uint64_t s = (us + 500000) / 1000000;
        snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    } else {
        uint64_t m = (us + 30000000) / 60000000;
        snprintf(buf, len, "%lluh%02llum", (unsigned long long)(m / 60),
                 (unsigned long long)(m % 60));
    }
}
