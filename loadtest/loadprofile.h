/*
 * Arrival processes: when each request of an open-loop run is meant to be
 * sent. The schedule is a pure function of the arrival number m, so threads
 * share nothing: thread i of T sends m = i, i + T, i + 2T, ... and the union
 * is exactly the one schedule, whatever T is.
 *
 *   steady   m / rate
 *   stages   steady with a piecewise-linear rate (--stages 10s:1k,30s:20k,
 *            1m:20k,10s:0): each stage goes from the rate the previous one
 *            ended at (0 for the first) to its own, linearly, over its
 *            duration, k6 style; the j-th arrival where the cumulative
 *            curve reaches j + 0.5 (a quadratic per stage, inverted)
 *   burst    a question opens at the start of every period; answers ramp up
 *            linearly to the peak rate over the first tenth of the window
 *            (2 s at most), then decay exponentially (to 5 % of the peak at the
 *            end of the window), then nothing until the next period:
 *
 *              rate
 *              peak |  /\
 *                   | /  `-._
 *                   |/        `--..__ |
 *                   +-----------------+------------------- t
 *                   0  ramp        window               period
 *
 *   concert  the burst, once per question, lead_us (1 s, or half the idle
 *            time if shorter) after the question is opened: the admin call
 *            happens at the period start.
 *
 * Within a burst the j-th of K answers is sent at the time where the
 * cumulative curve reaches (j + 0.5) / K of the burst's area: deterministic
 * inversion, so every window of the curve gets its integral +- 1. --speedup
 * divides period, window and ramp; the peak rate stays.
 */
#ifndef LT_LOADPROFILE_H
#define LT_LOADPROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum loadprofile_kind { LOADPROFILE_STEADY, LOADPROFILE_BURST, LOADPROFILE_CONCERT };

#define LOADPROFILE_STAGES_MAX 32

/* A stage: to `rate` (per second) over duration_us, from the rate before. */
struct loadprofile_stage {
    uint64_t duration_us;
    double rate;
};

/* "10s:1k,30s:20k,1m:20k,10s:0": durations as --duration takes them (at
 * least 1ms), rates as --rate (0 allowed), at most LOADPROFILE_STAGES_MAX;
 * false with the reason. */
bool loadprofile_parse_stages(const char *s, struct loadprofile_stage *out, uint32_t *n,
                              char *err, size_t errlen);

struct loadprofile_params {
    enum loadprofile_kind kind;
    double rate;          /* per second: constant (steady) or peak (burst, concert) */
    uint64_t duration_us; /* 0: no time bound */
    uint64_t requests;    /* 0: no count bound */
    uint64_t period_us;   /* burst, concert: before speedup */
    uint64_t window_us;   /* burst, concert: before speedup, <= period */
    double speedup;       /* >= 1 */
    uint32_t bursts;      /* concert: one per question; burst: 0 = until a bound */
    /* steady with stages (rate and duration_us then ignored: the stages set
     * both); copied by loadprofile_init */
    struct loadprofile_stage stages[LOADPROFILE_STAGES_MAX];
    uint32_t n_stages;
};

struct loadprofile {
    struct loadprofile_params p;
    /* derived, in microseconds after speedup */
    double period_us, window_us, ramp_us, tau_us;
    double lead_us;   /* concert: from the open call to the first answer */
    double area_s;    /* integral of one burst at a peak of 1/s */
    uint64_t per_burst; /* answers in one burst */
    /* stages: where each ends (us) and the arrivals due by then */
    double stage_end_us[LOADPROFILE_STAGES_MAX];
    double stage_count[LOADPROFILE_STAGES_MAX];
};

struct loadprofile_arrival {
    uint64_t t_us;  /* intended send time from the start of the run */
    uint32_t burst; /* burst (= question slot for burst/concert); 0 for steady */
    uint64_t k;     /* index of the arrival within its burst (steady: m) */
};

/* Validates and derives; err names the flag at fault. */
bool loadprofile_init(struct loadprofile *p, const struct loadprofile_params *params, char *err,
                      size_t errlen);

/* Arrival m; false when m is past the end of the schedule. */
bool loadprofile_arrival(const struct loadprofile *p, uint64_t m, struct loadprofile_arrival *a);

/* Instantaneous rate (per second) of the curve the arrivals follow. */
double loadprofile_rate_at(const struct loadprofile *p, double t_us);

/* Start of burst b (the answers), and its end (start + window). */
double loadprofile_burst_start_us(const struct loadprofile *p, uint32_t b);
double loadprofile_burst_end_us(const struct loadprofile *p, uint32_t b);

/* When the schedule ends: the duration, or the end of the last burst, or the
 * time of the last arrival of a count-bounded steady run. */
double loadprofile_end_us(const struct loadprofile *p);

#endif
