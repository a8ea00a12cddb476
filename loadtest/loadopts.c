#include "loadopts.h"

#include <stdio.h>
#include <string.h>

#include "loadunits.h"
#include "util.h"

#define PROG "livetally-loadtest"
#define MAX_RATE 10e6
#define MAX_DURATION_US (30ull * 24 * 3600 * 1000000)
#define MAX_REQUESTS 1000000000000ull

enum {
    OPT_TARGET, OPT_EVENT, OPT_PROFILE, OPT_RATE, OPT_DURATION, OPT_REQUESTS, OPT_CONNECTIONS,
    OPT_THREADS, OPT_PIPELINE, OPT_MAX, OPT_PERIOD, OPT_WINDOW, OPT_SPEEDUP, OPT_QUESTIONS,
    OPT_USERS, OPT_USER_PREFIX, OPT_SEED, OPT_REPLAY, OPT_RECORD, OPT_VERIFY, OPT_VERIFY_DELTA, OPT_VERIFY_TIMEOUT,
    OPT_ADMIN_TOKEN_FILE, OPT_JSON, OPT_RESULTS, OPT_REPORT, OPT_TIMEOUT, OPT_ALLOW_REMOTE, OPT_PROGRESS, OPT_NO_PROGRESS,
    OPT_LOG_LEVEL, OPT_THRESHOLD, OPT_STAGES, OPT_RETRY, OPT_RETRY_DEADLINE,
};

static const struct cli_opt options[] = {
    {"target", "URL", "ingest (or livetally) base URL; default " LOADOPTS_DEFAULT_TARGET, OPT_TARGET},
    {"event", "FILE", "the event file: questions, options, correct answers, age buckets", OPT_EVENT},
    {"profile", "NAME", "steady | burst | concert; default steady", OPT_PROFILE},
    {"stages", "LIST", "ramps and holds: 10s:1k,30s:20k,1m:20k,10s:0 (see Stages)", OPT_STAGES},
    {"rate", "N", "requests/s: constant (steady) or peak of each burst; 20k, 2.5k/s; default 1000",
     OPT_RATE},
    {"duration", "D", "stop after D (500ms, 10s, 2m, 1h); steady/burst need it or --requests",
     OPT_DURATION},
    {"requests", "N", "stop after N requests (20k, 1M)", OPT_REQUESTS},
    {"connections", "N", "keep-alive connections; default 32", OPT_CONNECTIONS},
    {"threads", "N", "sending threads, each with its own event loop; default: half the CPUs",
     OPT_THREADS},
    {"pipeline", "N", "requests in flight per connection; default 1", OPT_PIPELINE},
    {"max", NULL, "closed loop: refill every slot as replies come, as fast as the target goes",
     OPT_MAX},
    {"period", "D", "burst/concert: time between questions; default 600s", OPT_PERIOD},
    {"window", "D", "burst/concert: answer window of a question; default 60s", OPT_WINDOW},
    {"speedup", "X", "divide period and window (burst, concert) or replay times by X; default 1",
     OPT_SPEEDUP},
    {"questions", "LIST", "question ids to answer, e.g. 1,2,5-7; default: the open ones (concert: all)",
     OPT_QUESTIONS},
    {"users", "N", "answer as a fixed population of N users, each at most once per question",
     OPT_USERS},
    {"user-prefix", "S", "user ids are S1..SN; default fan-", OPT_USER_PREFIX},
    {"seed", "N", "seed of the synthetic answers; default: from the clock (printed)", OPT_SEED},
    {"replay", "FILE", "send a recorded file with its original timing (see --speedup); its question"
     " opens and closes need --admin-token-file", OPT_REPLAY},
    {"record", "FILE", "write every request sent (time offset and body), and the questions a concert"
     " opens and closes, one JSON per line; - is stdout (the summary then goes to stderr)", OPT_RECORD},
    {"verify", "URL", "after the run, compare the dashboard's /v1/stats with the 202s; exit 1 on any difference",
     OPT_VERIFY},
    {"verify-delta", NULL, "verify the change since the start (the event already had answers)",
     OPT_VERIFY_DELTA},
    {"verify-timeout", "D", "how long to wait for fresh snapshots; default 30s", OPT_VERIFY_TIMEOUT},
    {"admin-token-file", "FILE", "admin bearer token; the concert opens and closes questions with it",
     OPT_ADMIN_TOKEN_FILE},
    {"json", "FILE", "write every figure as JSON (summary, errors, latency, verify, per-second series);"
     " - is stdout (the summary then goes to stderr)",
     OPT_JSON},
    {"results", "FILE", "one CSV line per request sent: intended send time (us after the start),"
     " latency (us), status (0: no reply), error code, reply bytes; - is stdout (the summary then goes"
     " to stderr)", OPT_RESULTS},
    {"report", "FILE", "write an HTML report: the summary, answers and errors per second, latency"
     " percentiles per second and the latency distribution as inline SVG, nothing loaded from"
     " elsewhere; - is stdout (the summary then goes to stderr)", OPT_REPORT},
    {"timeout", "D", "give up on a request (and its connection) after D; default 10s", OPT_TIMEOUT},
    {"retry", NULL, "resend like the app: after a 503 (its Retry-After, up to 5s) and, for answers"
     " with a user, a 502/504 or a lost connection, the same body after a jittered backoff (see"
     " Retries)", OPT_RETRY},
    {"retry-deadline", "D", "with --retry: give an answer up D after its first try was due;"
     " default 30s", OPT_RETRY_DEADLINE},
    {"allow-remote", NULL, "allow targets that are not loopback addresses", OPT_ALLOW_REMOTE},
    {"progress", NULL, "live progress line on stderr even when it is not a terminal", OPT_PROGRESS},
    {"no-progress", NULL, "no progress line, even on a terminal", OPT_NO_PROGRESS},
    {"threshold", "EXPR", "exit 1 unless EXPR holds: p99<5ms, errors<0.1%, acknowledged>=99.9%"
     " (see Thresholds); repeatable", OPT_THRESHOLD},
    {"log-level", "LEVEL", "error | warn | info | debug; default warn", OPT_LOG_LEVEL},
};

static const char synopsis[] =
    "--event FILE [--target URL] [--profile steady|burst|concert] [--rate N] [--duration D]\n"
    "       [--requests N] [--connections N] [--replay FILE] [--record FILE]\n"
    "       [--verify DASHBOARD_URL] [--admin-token-file FILE] [--json FILE] ...";

static const char about[] =
    "Sends synthetic quiz answers (or a recording) to POST /v1/answers, open loop: every\n"
    "request has an intended send time and its latency is measured from it, so a slow\n"
    "target shows in the percentiles instead of slowing the load down.\n"
    "\n"
    "Profiles:\n"
    "  steady   a constant --rate over the questions that are open\n"
    "  burst    every --period a burst over --window: a ramp to the peak --rate in the\n"
    "           first seconds, then an exponential decay\n"
    "  concert  the show: for every question in turn, open it (admin API), run its\n"
    "           burst, close it; --speedup 60 turns a 10-minute period into 10 s\n"
    "\n"
    "Stages (--stages, instead of --rate and --duration, up to 32, k6 style):\n"
    "  DURATION:RATE,...  each stage goes linearly from the rate the one before ended at\n"
    "                     (0 for the first) to RATE over DURATION: 10s:1k ramps to 1000/s\n"
    "                     in 10 s, then 30s:1k holds it, 5s:0 ramps down\n"
    "\n"
    "Thresholds (--threshold, up to 16; the summary says which held):\n"
    "  p50|p75|p90|p95|p99|p999|max|mean OP DURATION   latency of the replies (unit required)\n"
    "  errors|acknowledged OP PERCENT                  of the requests due (never sent too)\n"
    "  OP is <, <=, > or >=; with no reply (or nothing due) a threshold does not hold.\n"
    "\n"
    "Retries (--retry): backoff 50ms doubling to 2s, each drawn in [b/2, b]; a 409\n"
    "duplicate_answer on a retry means an earlier try was counted (\"counted earlier\"\n"
    "in the summary, and in what --verify expects). An answer without a user is not\n"
    "resent after a lost connection, a 502/504 or a 503 unconfirmed: it may have been\n"
    "counted, and a resend could count it twice (a 503 backend_unavailable sent\n"
    "nothing: it is resent). Give every answer a user (--users) to rehearse faults\n"
    "exactly.\n"
    "\n"
    "Exit status: 0 done (and verified, with --verify; every --threshold held); 1 a\n"
    "verify difference, a threshold that did not hold, more than half the replies\n"
    "409 question_not_open or question_closed, the target or the admin API failed,\n"
    "or a verified run was interrupted; 2 bad usage.\n"
    "\n"
    "Examples:\n"
    "  rehearse a live night compressed 60x, and prove nothing was lost:\n"
    "    " PROG " --event examples/1d-live.json --profile concert --rate 5k \\\n"
    "      --speedup 60 --users 200000 --admin-token-file admin.token \\\n"
    "      --verify http://127.0.0.1:8080 --json rehearsal.json\n"
    "  (--verify compares the dashboard's totals with what this run sent, for a fresh\n"
    "  event, and with --users the ultimate fans with the users' acknowledged right\n"
    "  answers; add --verify-delta to compare only the change since the run started)\n"
    "  a burst that must stay fast and lose nothing (exit 1 otherwise):\n"
    "    " PROG " --event ev.json --profile burst --rate 10k --duration 1m \\\n"
    "      --threshold 'p99<5ms' --threshold 'acknowledged>=99.9%'\n"
    "  a minute at 20k answers/s over the open questions, with 64 connections:\n"
    "    " PROG " --event examples/1d-live.json --rate 20k --duration 1m --connections 64\n"
    "  record a run, then replay it twice as fast:\n"
    "    " PROG " --event ev.json --rate 2k --duration 30s --record run.jsonl\n"
    "    " PROG " --event ev.json --replay run.jsonl --speedup 2\n";

void loadopts_defaults(struct loadopts *o)
{
    memset(o, 0, sizeof(*o));
    o->target = LOADOPTS_DEFAULT_TARGET;
    o->profile = LOADPROFILE_STEADY;
    o->rate = 1000;
    o->connections = 32;
    o->pipeline = 1;
    o->period_us = 600ull * 1000000;
    o->window_us = 60ull * 1000000;
    o->speedup = 1;
    o->timeout_us = 10ull * 1000000;
    o->retry_deadline_us = 30ull * 1000000;
    o->verify_timeout_us = 30ull * 1000000;
    o->progress = LOADOPTS_PROGRESS_AUTO;
    o->log_level = LOG_WARN;
}

const char *loadopts_profile_name(enum loadprofile_kind k)
{
    switch (k) {
    case LOADPROFILE_STEADY: return "steady";
    case LOADPROFILE_BURST: return "burst";
    case LOADPROFILE_CONCERT: return "concert";
    }
    return "?";
}

bool loadopts_parse_questions(const char *s, uint32_t *ids, uint32_t *n, char *err, size_t errlen)
{
    uint32_t count = 0;
    const char *p = s;
    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "expected question ids, e.g. 1,2,5-7");
        return false;
    }
    while (*p != '\0') {
        char item[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof(item)) {
            snprintf(err, errlen, "expected question ids, e.g. 1,2,5-7");
            return false;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p += len;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                snprintf(err, errlen, "trailing comma");
                return false;
            }
        }
        uint32_t lo, hi;
        char *dash = strchr(item, '-');
        if (dash != NULL) {
            *dash = '\0';
            if (!util_parse_u32(item, 1, EVENT_MAX_QUESTION_ID, &lo) ||
                !util_parse_u32(dash + 1, 1, EVENT_MAX_QUESTION_ID, &hi) || hi < lo) {
                snprintf(err, errlen, "bad range; expected LOW-HIGH with 1 <= LOW <= HIGH <= %u",
                         EVENT_MAX_QUESTION_ID);
                return false;
            }
        } else {
            if (!util_parse_u32(item, 1, EVENT_MAX_QUESTION_ID, &lo)) {
                snprintf(err, errlen, "'%s' is not a question id (1..%u)", item,
                         EVENT_MAX_QUESTION_ID);
                return false;
            }
            hi = lo;
        }
        for (uint64_t id = lo; id <= hi; id++) {
            if (count == EVENT_MAX_QUESTIONS) {
                snprintf(err, errlen, "more than %d questions", EVENT_MAX_QUESTIONS);
                return false;
            }
            for (uint32_t i = 0; i < count; i++) {
                if (ids[i] == id) {
                    snprintf(err, errlen, "question %u listed twice", (unsigned)id);
                    return false;
                }
            }
            ids[count++] = (uint32_t)id;
        }
    }
    *n = count;
    return true;
}

static bool set_duration(const char *val, uint64_t min, uint64_t *out, char *err, size_t errlen)
{
    if (loadunits_duration_us(val, min, MAX_DURATION_US, out))
        return true;
    snprintf(err, errlen, "expected a duration such as 500ms, 10s, 2m or 1h (at least %lluus, at most 30 days)",
             (unsigned long long)min);
    return false;
}

static bool set_option(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct loadopts *o = ctx;
    switch (id) {
    case OPT_TARGET: o->target = val; return true;
    case OPT_EVENT: o->event_path = val; return true;
    case OPT_PROFILE:
        if (strcmp(val, "steady") == 0)
            o->profile = LOADPROFILE_STEADY;
        else if (strcmp(val, "burst") == 0)
            o->profile = LOADPROFILE_BURST;
        else if (strcmp(val, "concert") == 0)
            o->profile = LOADPROFILE_CONCERT;
        else {
            snprintf(err, errlen, "expected steady, burst or concert");
            return false;
        }
        o->profile_set = true;
        return true;
    case OPT_RATE:
        if (!loadunits_rate(val, 0.001, MAX_RATE, &o->rate)) {
            snprintf(err, errlen, "expected requests per second such as 500, 20k or 2.5k/s (at most 10M)");
            return false;
        }
        o->rate_set = true;
        return true;
    case OPT_DURATION: return set_duration(val, 1000, &o->duration_us, err, errlen);
    case OPT_REQUESTS:
        if (!loadunits_count(val, 1, MAX_REQUESTS, &o->requests)) {
            snprintf(err, errlen, "expected a count such as 5000, 20k or 1M");
            return false;
        }
        return true;
    case OPT_CONNECTIONS: return cli_u32(val, 1, 10000, &o->connections, err, errlen);
    case OPT_THREADS: return cli_u32(val, 1, 64, &o->threads, err, errlen);
    case OPT_PIPELINE: return cli_u32(val, 1, 256, &o->pipeline, err, errlen);
    case OPT_MAX: o->closed_loop = true; return true;
    case OPT_PERIOD:
        o->period_set = true;
        return set_duration(val, 1000, &o->period_us, err, errlen);
    case OPT_WINDOW:
        o->window_set = true;
        return set_duration(val, 1000, &o->window_us, err, errlen);
    case OPT_SPEEDUP:
        if (!loadunits_factor(val, 1, 1e6, &o->speedup)) {
            snprintf(err, errlen, "expected a factor from 1 to 1000000, e.g. 60 or 1.5");
            return false;
        }
        o->speedup_set = true;
        return true;
    case OPT_QUESTIONS:
        return loadopts_parse_questions(val, o->question_ids, &o->n_question_ids, err, errlen);
    case OPT_USERS:
        if (!loadunits_count(val, 1, 1000000000000ull, &o->users)) {
            snprintf(err, errlen, "expected a count from 1 to 1T, e.g. 200k");
            return false;
        }
        return true;
    case OPT_USER_PREFIX: o->user_prefix = val; return true;
    case OPT_SEED:
        if (!util_parse_u64(val, 0, UINT64_MAX, &o->seed)) {
            snprintf(err, errlen, "expected a whole number");
            return false;
        }
        o->seed_set = true;
        return true;
    case OPT_REPLAY: o->replay_path = val; return true;
    case OPT_RECORD: o->record_path = val; return true;
    case OPT_VERIFY: o->verify_url = val; return true;
    case OPT_VERIFY_DELTA: o->verify_delta = true; return true;
    case OPT_VERIFY_TIMEOUT: return set_duration(val, 100000, &o->verify_timeout_us, err, errlen);
    case OPT_ADMIN_TOKEN_FILE: o->admin_token_path = val; return true;
    case OPT_JSON: o->json_path = val; return true;
    case OPT_RESULTS: o->results_path = val; return true;
    case OPT_REPORT: o->report_path = val; return true;
    case OPT_TIMEOUT: return set_duration(val, 1000, &o->timeout_us, err, errlen);
    case OPT_RETRY: o->retry = true; return true;
    case OPT_RETRY_DEADLINE:
        o->retry_deadline_set = true;
        return set_duration(val, 1000, &o->retry_deadline_us, err, errlen);
    case OPT_ALLOW_REMOTE: o->allow_remote = true; return true;
    case OPT_PROGRESS: o->progress = LOADOPTS_PROGRESS_ON; return true;
    case OPT_NO_PROGRESS: o->progress = LOADOPTS_PROGRESS_OFF; return true;
    case OPT_STAGES:
        if (!loadprofile_parse_stages(val, o->stages, &o->n_stages, err, errlen))
            return false;
        o->stages_text = val;
        return true;
    case OPT_THRESHOLD:
        if (o->n_thresholds == LOADTHRESHOLD_MAX) {
            snprintf(err, errlen, "at most %d thresholds", LOADTHRESHOLD_MAX);
            return false;
        }
        if (!loadthreshold_parse(val, &o->thresholds[o->n_thresholds], err, errlen))
            return false;
        o->n_thresholds++;
        return true;
    case OPT_LOG_LEVEL:
        if (!log_parse_level(val, &o->log_level)) {
            snprintf(err, errlen, "expected error, warn, info or debug");
            return false;
        }
        return true;
    }
    snprintf(err, errlen, "unhandled option");
    return false;
}

static bool bad(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return false;
}

bool loadopts_check(const struct loadopts *o, char *err, size_t errlen)
{
    bool bounded = o->duration_us != 0 || o->requests != 0;
    int to_stdout = (o->json_path != NULL && strcmp(o->json_path, "-") == 0) +
                    (o->results_path != NULL && strcmp(o->results_path, "-") == 0) +
                    (o->report_path != NULL && strcmp(o->report_path, "-") == 0) +
                    (o->record_path != NULL && strcmp(o->record_path, "-") == 0);
    if (to_stdout > 1)
        return bad(err, errlen,
                   "--json -, --results -, --report - and --record - would share stdout; give all "
                   "but one a file");
    if (o->verify_delta && o->verify_url == NULL)
        return bad(err, errlen, "--verify-delta needs --verify URL");
    if (o->retry_deadline_set && !o->retry)
        return bad(err, errlen, "--retry-deadline needs --retry");
    if (o->replay_path != NULL) {
        if (o->profile_set)
            return bad(err, errlen, "--replay sends the recorded timing; it cannot be combined with --profile");
        if (o->closed_loop)
            return bad(err, errlen, "--replay and --max cannot be combined");
        if (o->n_stages > 0)
            return bad(err, errlen, "--replay keeps the recorded timing; --stages does not apply");
        if (o->rate_set)
            return bad(err, errlen, "--replay keeps the recorded rate; use --speedup to change it");
        if (bounded)
            return bad(err, errlen, "--replay sends the whole file; --duration and --requests do not apply");
        if (o->users != 0 || o->n_question_ids != 0 || o->user_prefix != NULL)
            return bad(err, errlen, "--replay sends the recorded bodies; --users, --user-prefix and --questions do not apply");
        if (o->period_set || o->window_set)
            return bad(err, errlen, "--period and --window apply to the burst and concert profiles");
        if (o->verify_url != NULL && o->event_path == NULL)
            return bad(err, errlen, "--verify needs --event to know the questions");
        return true;
    }
    if (o->event_path == NULL)
        return bad(err, errlen, "--event FILE is required (or --replay FILE)");
    if (o->closed_loop) {
        if (o->profile != LOADPROFILE_STEADY)
            return bad(err, errlen, "--max is a closed loop; it has no burst or concert shape");
        if (o->rate_set)
            return bad(err, errlen, "--max sends as fast as replies come; drop --rate");
    }
    if (o->n_stages > 0) {
        if (o->profile != LOADPROFILE_STEADY || o->closed_loop)
            return bad(err, errlen, "--stages is a rate shape of its own: drop --profile and --max");
        if (o->rate_set || o->duration_us != 0)
            return bad(err, errlen, "--stages sets the rate and the duration: drop --rate and --duration");
        bounded = true;
    }
    if (o->profile == LOADPROFILE_STEADY) {
        if (!bounded)
            return bad(err, errlen, "the steady profile needs --duration and/or --requests");
        if (o->period_set || o->window_set)
            return bad(err, errlen, "--period and --window apply to the burst and concert profiles");
        if (o->speedup_set)
            return bad(err, errlen, "--speedup applies to burst, concert and --replay");
    } else {
        if (o->profile == LOADPROFILE_BURST && !bounded)
            return bad(err, errlen, "the burst profile needs --duration and/or --requests");
        if (o->window_us > o->period_us)
            return bad(err, errlen, "--window must not be longer than --period");
        if (o->profile == LOADPROFILE_CONCERT && o->admin_token_path == NULL)
            return bad(err, errlen, "the concert opens and closes questions: --admin-token-file FILE is required");
    }
    if (o->threads != 0 && o->threads > o->connections)
        return bad(err, errlen, "--threads must not exceed --connections");
    return true;
}

enum cli_result loadopts_parse(int argc, char **argv, struct loadopts *o)
{
    loadopts_defaults(o);
    enum cli_result r = cli_parse(argc, argv, PROG, synopsis, about, options, LT_ARRAY_LEN(options),
                                  set_option, o);
    if (r != CLI_CONTINUE)
        return r;
    char err[256];
    if (!loadopts_check(o, err, sizeof(err)))
        return cli_usage_error(PROG, "%s", err);
    return CLI_CONTINUE;
}
