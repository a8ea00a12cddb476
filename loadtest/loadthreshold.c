#include "loadthreshold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadunits.h"
#include "util.h"

static const struct {
    const char *name;
    enum loadthreshold_metric metric;
    double percentile;
} NAMES[] = {
    {"p50", LOADTHRESHOLD_PERCENTILE, 50},    {"p75", LOADTHRESHOLD_PERCENTILE, 75},
    {"p90", LOADTHRESHOLD_PERCENTILE, 90},    {"p95", LOADTHRESHOLD_PERCENTILE, 95},
    {"p99", LOADTHRESHOLD_PERCENTILE, 99},    {"p999", LOADTHRESHOLD_PERCENTILE, 99.9},
    {"max", LOADTHRESHOLD_MAX_LATENCY, 0},    {"mean", LOADTHRESHOLD_MEAN, 0},
    {"errors", LOADTHRESHOLD_ERRORS, 0},      {"acknowledged", LOADTHRESHOLD_ACKED, 0},
};

static bool is_latency(enum loadthreshold_metric m)
{
    return m != LOADTHRESHOLD_ERRORS && m != LOADTHRESHOLD_ACKED;
}

/* "0.1%": digits with at most one point, then %, 0..100. */
static bool parse_percent(const char *s, double *out)
{
    size_t n = strlen(s);
    if (n < 2 || s[n - 1] != '%')
        return false;
    size_t digits = 0, points = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else if (s[i] == '.')
            points++;
        else
            return false;
    }
    if (digits == 0 || points > 1 || s[n - 2] == '.' || digits > 12)
        return false;
    double v = strtod(s, NULL);
    if (v < 0 || v > 100)
        return false;
    *out = v;
    return true;
}

bool loadthreshold_parse(const char *s, struct loadthreshold *out, char *err, size_t errlen)
{
    if (s == NULL || *s == '\0')
        return util_fail(err, errlen, "%s", "empty (e.g. 'p99<5ms', 'errors<0.1%')");
    if (strlen(s) >= LOADTHRESHOLD_TEXT_MAX)
        return util_fail(err, errlen, "%s", "too long");
    size_t name_len = strcspn(s, "<>");
    if (s[name_len] == '\0')
        return util_fail(err, errlen, "%s", "no comparison: NAME<VALUE, NAME<=VALUE, NAME>VALUE or "
                                    "NAME>=VALUE");
    struct loadthreshold t = {0};
    bool found = false;
    for (size_t i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]) && !found; i++) {
        if (strlen(NAMES[i].name) == name_len && strncmp(s, NAMES[i].name, name_len) == 0) {
            t.metric = NAMES[i].metric;
            t.percentile = NAMES[i].percentile;
            found = true;
        }
    }
    if (!found)
        return util_fail(err, errlen, "%s", "unknown measure: p50, p75, p90, p95, p99, p999, max, mean "
                                    "(a latency), errors or acknowledged (a percentage)");
    const char *p = s + name_len;
    t.less = *p == '<';
    p++;
    if (*p == '=') {
        t.or_equal = true;
        p++;
    }
    if (*p == '\0')
        return util_fail(err, errlen, "%s", "no value after the comparison");
    if (is_latency(t.metric)) {
        uint64_t us = 0;
        size_t n = strlen(p);
        /* a unit is required: a bare "5" would read as 5 s (loadunits) */
        if (n == 0 || p[n - 1] < 'a' || p[n - 1] > 'z' ||
            !loadunits_duration_us(p, 0, LOADHIST_HIGHEST_US, &us))
            return util_fail(err, errlen, "%s", "a latency needs a duration with its unit, up to 60s "
                                        "(250us, 5ms, 1.5s)");
        t.value = (double)us;
    } else if (!parse_percent(p, &t.value)) {
        return util_fail(err, errlen, "%s", "errors and acknowledged take a percentage, 0% to 100% "
                                    "(0.1%)");
    }
    snprintf(t.text, sizeof(t.text), "%s", s);
    *out = t;
    return true;
}

bool loadthreshold_eval(const struct loadthreshold *t, const struct loadthreshold_input *in,
                        double *actual, bool *measured)
{
    double v = 0;
    bool have;
    switch (t->metric) {
    case LOADTHRESHOLD_PERCENTILE:
        have = in->latency != NULL && in->latency->total > 0;
        if (have)
            v = (double)loadhist_percentile(in->latency, t->percentile);
        break;
    case LOADTHRESHOLD_MAX_LATENCY:
        have = in->latency != NULL && in->latency->total > 0;
        if (have)
            v = (double)in->latency->max;
        break;
    case LOADTHRESHOLD_MEAN:
        have = in->latency != NULL && in->latency->total > 0;
        if (have)
            v = loadhist_mean(in->latency);
        break;
    case LOADTHRESHOLD_ERRORS:
        have = in->due > 0;
        if (have)
            v = 100.0 * (double)in->errors / (double)in->due;
        break;
    default:
        have = in->due > 0;
        if (have)
            v = 100.0 * (double)in->acked / (double)in->due;
        break;
    }
    *actual = v;
    *measured = have;
    if (!have)
        return false;
    if (t->less)
        return t->or_equal ? v <= t->value : v < t->value;
    return t->or_equal ? v >= t->value : v > t->value;
}

void loadthreshold_format(const struct loadthreshold *t, double value, char *buf, size_t len)
{
    if (!is_latency(t->metric))
        snprintf(buf, len, "%.4g%%", value);
    else if (value >= 1e6)
        snprintf(buf, len, "%.3gs", value / 1e6);
    else if (value >= 1e3)
        snprintf(buf, len, "%.3gms", value / 1e3);
    else
        snprintf(buf, len, "%.0fus", value);
}
