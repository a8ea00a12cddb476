/*
 * Pass/fail criteria of a run, k6 style: `--threshold 'p99<5ms'` sets the
 * exit status, so a rehearsal in a script or CI fails by itself when the
 * target got slow or dropped answers.
 *
 *   p50|p75|p90|p95|p99|p999|max|mean  OP  DURATION   latency of the replies
 *   errors                             OP  PERCENT    errors / requests due
 *   acknowledged                       OP  PERCENT    202s / requests due
 *
 * OP is <, <=, > or >=; DURATION has a unit (250us, 5ms, 1.5s); PERCENT
 * ends with % (0.1%). "Requests due" counts those never sent too (the run
 * stopped, the target gone). With no reply (or nothing due) a threshold
 * does not hold: an empty run proves nothing.
 */
#ifndef LT_LOADTHRESHOLD_H
#define LT_LOADTHRESHOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loadhist.h"

#define LOADTHRESHOLD_MAX 16
#define LOADTHRESHOLD_TEXT_MAX 64

enum loadthreshold_metric {
    LOADTHRESHOLD_PERCENTILE, /* percentile */
    LOADTHRESHOLD_MAX_LATENCY,
    LOADTHRESHOLD_MEAN,
    LOADTHRESHOLD_ERRORS,
    LOADTHRESHOLD_ACKED,
};

struct loadthreshold {
    enum loadthreshold_metric metric;
    double percentile;   /* LOADTHRESHOLD_PERCENTILE: 50 .. 99.9 */
    bool less;           /* < or <= (else > or >=) */
    bool or_equal;
    double value;        /* microseconds, or percent */
    char text[LOADTHRESHOLD_TEXT_MAX]; /* as given */
};

/* What a run measured, for loadthreshold_eval. */
struct loadthreshold_input {
    const struct loadhist *latency; /* every reply, us */
    uint64_t due;                   /* sent + never sent */
    uint64_t acked, errors;
};

/* false with a one-line reason in err for anything but the grammar above. */
bool loadthreshold_parse(const char *s, struct loadthreshold *out, char *err, size_t errlen);

/* Whether t holds; *actual gets the measured value (us or percent), and
 * *measured whether there was anything to measure. */
bool loadthreshold_eval(const struct loadthreshold *t, const struct loadthreshold_input *in,
                        double *actual, bool *measured);

/* "3.21ms" or "0.35%": the value in t's unit. */
void loadthreshold_format(const struct loadthreshold *t, double value, char *buf, size_t len);

#endif
