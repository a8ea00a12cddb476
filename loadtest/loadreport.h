/*
 * What a run tells people and machines: the live progress line (stderr, on a
 * terminal), the final summary (stdout) and the --json file with every
 * figure, including a per-second series for plots.
 */
#ifndef LT_LOADREPORT_H
#define LT_LOADREPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loadengine.h"
#include "loadthreshold.h"
#include "loadverify.h"

struct loadreport_second {
    uint32_t t;             /* seconds since the start, the end of the second */
    uint64_t sent, acked, errors; /* during that second */
    uint64_t replies;       /* latencies recorded during that second */
    uint64_t p50_us, p90_us, p99_us, p999_us;
};

/* A --threshold and what the run measured for it. */
struct loadreport_threshold {
    const struct loadthreshold *t; /* ref */
    bool held;
    bool measured; /* there was a reply (or a request due) to judge by */
    double actual; /* us or percent */
};

enum loadreport_verify {
    LOADREPORT_VERIFY_OFF,
    LOADREPORT_VERIFY_PASSED,
    LOADREPORT_VERIFY_FAILED,
    LOADREPORT_VERIFY_SKIPPED, /* interrupted, or the dashboard never answered */
};

struct loadreport {
    /* what ran */
    const char *mode;   /* steady, burst, concert, replay, max */
    const char *target; /* the URL as given */
    char shape[320];    /* one line: rate, duration, period... */
    uint32_t connections, threads, pipeline;
    double rate;
    uint64_t duration_us, requests, period_us, window_us, users;
    double speedup;
    uint64_t seed;
    bool synthetic;     /* seed and questions apply */
    const uint32_t *question_ids; /* ref */
    uint32_t n_questions;
    uint64_t started_wall_ms;
    double elapsed_s;   /* from arrival time 0 to the last reply (or the stop) */
    bool interrupted;
    uint64_t admin_errors;

    const struct loadengine_result *r; /* ref */
    const struct loadreport_second *series; /* ref */
    size_t n_series;

    enum loadreport_verify verify;
    bool verify_delta;       /* the change since the start, not the totals */
    uint64_t answers_before; /* the dashboard's total before the run */
    const char *verify_note;               /* why skipped, or an error */
    const struct loadverify_diffs *diffs;  /* ref, may be NULL */
    uint64_t compared;
    uint64_t generation;

    const struct loadreport_threshold *thresholds; /* ref */
    size_t n_thresholds;
};

/* Evaluates the thresholds against the run's result (out[i] for t[i]);
 * the count that did not hold. */
size_t loadreport_thresholds(const struct loadthreshold *t, size_t n,
                             const struct loadengine_result *r, struct loadreport_threshold *out);

/* "  12s  sent 12000  ok 11990  err 10  now 1000/s  p99 1.23ms  left 48s" */
void loadreport_progress_line(char *buf, size_t len, double elapsed_s, double left_s,
                              const struct loadengine_progress *p, double rate,
                              uint64_t p99_us);

void loadreport_summary(FILE *out, const struct loadreport *rep);

/* Writes the JSON file (replaced atomically: written aside, then renamed);
 * "-": to stdout. */
bool loadreport_json(const char *path, const struct loadreport *rep, char *err, size_t errlen);

/* The highest replies/s of any second of the series. */
uint64_t loadreport_peak(const struct loadreport *rep);

#endif
