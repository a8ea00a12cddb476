/*
 * The load tester's flags: a table (common/cli.h) with one setter per value
 * and unit (loadunits.h), then the rules between flags, checked apart so a
 * test can feed it argument vectors.
 */
#ifndef LT_LOADOPTS_H
#define LT_LOADOPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"
#include "eventfile.h"
#include "log.h"
#include "loadprofile.h"
#include "loadthreshold.h"

#define LOADOPTS_DEFAULT_TARGET "http://127.0.0.1:8080"

enum loadopts_progress { LOADOPTS_PROGRESS_AUTO, LOADOPTS_PROGRESS_ON, LOADOPTS_PROGRESS_OFF };

struct loadopts {
    /* strings point into argv (ref) */
    const char *target;
    const char *event_path;
    const char *replay_path;
    const char *record_path;
    const char *verify_url;
    const char *admin_token_path;
    const char *json_path;
    const char *results_path;
    const char *report_path;  /* --report: the HTML report */
    const char *user_prefix;

    enum loadprofile_kind profile;
    bool profile_set;
    double rate; /* per second */
    bool rate_set;
    uint64_t duration_us; /* 0: not given */
    uint64_t requests;    /* 0: not given */
    uint32_t connections;
    uint32_t threads; /* 0: automatic */
    uint32_t pipeline;
    bool closed_loop; /* --max */
    uint64_t period_us, window_us;
    bool period_set, window_set;
    double speedup;
    bool speedup_set;
    uint32_t question_ids[EVENT_MAX_QUESTIONS];
    uint32_t n_question_ids;
    uint64_t users;
    uint64_t seed;
    bool seed_set;
    uint64_t timeout_us;
    bool retry;                 /* --retry */
    uint64_t retry_deadline_us; /* --retry-deadline */
    bool retry_deadline_set;
    uint64_t verify_timeout_us;
    bool verify_delta; /* compare the change since the start, not the totals */
    bool allow_remote;
    enum loadopts_progress progress;
    enum log_level log_level;
    struct loadthreshold thresholds[LOADTHRESHOLD_MAX]; /* --threshold, in order */
    struct loadprofile_stage stages[LOADPROFILE_STAGES_MAX]; /* --stages */
    uint32_t n_stages;
    const char *stages_text; /* as given (ref) */
    uint32_t n_thresholds;
};

void loadopts_defaults(struct loadopts *o);

/* "1,2,5-7": ids 1..EVENT_MAX_QUESTION_ID, at most EVENT_MAX_QUESTIONS, no repeats. */
bool loadopts_parse_questions(const char *s, uint32_t *ids, uint32_t *n, char *err, size_t errlen);

/* The rules between flags (a profile needs a bound, --replay excludes
 * --profile, ...). false with the reason. */
bool loadopts_check(const struct loadopts *o, char *err, size_t errlen);

/* Defaults, flags, rules. Prints --help/--version (CLI_EXIT_OK) or one error
 * line to stderr (CLI_EXIT_USAGE). */
enum cli_result loadopts_parse(int argc, char **argv, struct loadopts *o);

const char *loadopts_profile_name(enum loadprofile_kind k);

#endif
