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
#include "loadverify.h"

struct loadreport_second {
    uint32_t t;             /* seconds since the start, the end of the second */
    uint64_t sent, acked, errors; /* during that second */
    uint64_t replies;       /* latencies recorded during that second */
    uint64_t p99_us;
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
};

/* "  12s  sent 12000  ok 11990  err 10  now 1000/s  p99 1.23ms  left 48s" */
void loadreport_progress_line(char *buf, size_t len, double elapsed_s, double left_s,
                              const struct loadengine_progress *p, double rate,
                              uint64_t p99_us);

void loadreport_summary(FILE *out, const struct loadreport *rep);

/* Writes the JSON file (replaced atomically: written aside, then renamed). */
bool loadreport_json(const char *path, const struct loadreport *rep, char *err, size_t errlen);

/* The highest replies/s of any second of the series. */
uint64_t loadreport_peak(const struct loadreport *rep);

#endif
