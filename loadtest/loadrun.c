#include "loadrun.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "loadengine.h"
#include "loadhtml.h"
#include "loadhttp.h"
#include "loadreport.h"
#include "loadunits.h"
#include "loadverify.h"
#include "log.h"
#include "util.h"

#define PROG "livetally-loadtest"
#define SECOND_US 1000000ull
#define CONTROL_SLEEP_MAX_US 50000ull
#define ADMIN_TIMEOUT_MS 5000
#define STATS_TIMEOUT_MS 5000
#define STATS_MAX_BYTES (64u << 20)
#define STATS_POLL_US 100000ull
/* A snapshot is fresh when it was started after the moment of interest:
 * the one in progress at that moment may have read the counters before it,
 * so the one after it is the first that certainly saw them. */
#define FRESH_GENERATIONS 2
#define CLOSE_GRACE_MAX_US 1e6
/* Each ingest instance writes its top list of users a second after it
 * changes (FANS_PUBLISH_MS): a snapshot must start after that to show the
 * last answers' fans. */
#define FANS_SETTLE_US 1500000ull

/* The one writable global, as the style allows: set by the handler. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

struct admin_action {
    double at_us; /* from arrival time 0 */
    uint32_t slot;
    bool open;
};

struct run {
    const struct loadopts *o;
    FILE *results;        /* --results (stdout for -); NULL: none */
    /* --record -: the threads' parts are merged into a file of a private
     * directory, then copied to stdout */
    char record_dir[64];
    char record_file[96];
    struct eventfile ef;
    bool have_ef;
    struct loadurl target;
    struct loadurl dash;
    char *token;
    uint32_t qidx[EVENT_MAX_QUESTIONS];
    uint32_t qids[EVENT_MAX_QUESTIONS];
    uint32_t n_slots;
    struct loadsynth synth;
    bool have_synth;
    struct loadprofile profile;
    bool have_profile;
    struct loadreplay replay;
    bool have_replay;
    uint64_t seed;
    uint32_t threads;
    const char *mode;
    char shape[320];

    struct admin_action *actions;
    size_t n_actions, next_action;
    bool opened[EVENT_MAX_QUESTIONS];
    bool closed[EVENT_MAX_QUESTIONS];
    uint64_t admin_errors;

    bool progress;
    bool progress_shown;
    struct loadreport_second *series;
    size_t n_series, cap_series;
    struct loadhist interval;
    struct loadhist so_far;
    struct loadengine_progress prev;
    bool interrupted;

    struct loadverify_stats baseline;
    bool have_baseline;
    struct loadtally_fans fans; /* the users' acknowledged right answers */
    bool have_fans;
};

static int usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", PROG);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

static void sleep_until_us(uint64_t mono_us)
{
    struct timespec ts = {.tv_sec = (time_t)(mono_us / SECOND_US),
                          .tv_nsec = (long)(mono_us % SECOND_US) * 1000};
    /* EINTR (a signal) simply ends the sleep early: the loop looks at it. */
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* ---- set-up ------------------------------------------------------------- */

static int choose_questions(struct run *run)
{
    const struct loadopts *o = run->o;
    const struct eventfile *ef = &run->ef;
    run->n_slots = 0;
    if (o->n_question_ids > 0) {
        for (uint32_t i = 0; i < o->n_question_ids; i++) {
            int qi = eventfile_question_index(ef, o->question_ids[i]);
            if (qi < 0)
                return usage_fail("--questions: question %u is not in the event file %s",
                                  o->question_ids[i], o->event_path);
            run->qidx[run->n_slots] = (uint32_t)qi;
            run->qids[run->n_slots++] = o->question_ids[i];
        }
        return 0;
    }
    for (uint32_t i = 0; i < ef->n_questions; i++) {
        if (o->profile == LOADPROFILE_CONCERT || ef->questions[i].open) {
            run->qidx[run->n_slots] = i;
            run->qids[run->n_slots++] = ef->questions[i].id;
        }
    }
    if (run->n_slots == 0)
        return usage_fail("no question of %s is open from the start: open some through the admin "
                          "API and name them with --questions, or use --profile concert",
                          o->event_path);
    return 0;
}

static void describe(struct run *run)
{
    const struct loadopts *o = run->o;
    char d[24], w[24], p[24];
    if (run->have_replay) {
        snprintf(run->shape, sizeof(run->shape),
                 "replay of %s (%" PRIu64 " requests, %zu admin events, speedup %g)",
                 o->replay_path, run->replay.n, run->replay.n_admin, o->speedup);
        return;
    }
    char bound[64] = "";
    if (o->duration_us) {
        loadunits_format_duration(o->duration_us, d, sizeof(d));
        snprintf(bound, sizeof(bound), " for %s", d);
    }
    if (o->requests) {
        size_t n = strlen(bound);
        snprintf(bound + n, sizeof(bound) - n, "%s%" PRIu64 " requests",
                 o->duration_us ? " or " : " for ", o->requests);
    }
    if (o->closed_loop) {
        snprintf(run->shape, sizeof(run->shape), "closed loop (--max)%s", bound);
        return;
    }
    if (o->n_stages > 0 && run->have_profile) {
        /* what the stages come to (the profile derived them) */
        loadunits_format_duration(run->profile.p.duration_us, d, sizeof(d));
        snprintf(run->shape, sizeof(run->shape), "stages %.200s: %" PRIu64 " requests over %s",
                 o->stages_text, run->profile.p.requests, d);
        return;
    }
    if (o->profile == LOADPROFILE_STEADY) {
        snprintf(run->shape, sizeof(run->shape), "steady %g/s%s", o->rate, bound);
        return;
    }
    /* the times as they run; the show's own beside them when sped up */
    loadunits_format_duration((uint64_t)((double)o->window_us / o->speedup), w, sizeof(w));
    loadunits_format_duration((uint64_t)((double)o->period_us / o->speedup), p, sizeof(p));
    char shown[128] = "";
    if (o->speedup != 1) {
        char sw[32], sp[32];
        loadunits_format_duration(o->window_us, sw, sizeof(sw));
        loadunits_format_duration(o->period_us, sp, sizeof(sp));
        snprintf(shown, sizeof(shown), " (%s every %s at speedup %g)", sw, sp, o->speedup);
    }
    if (o->profile == LOADPROFILE_BURST)
        snprintf(run->shape, sizeof(run->shape), "bursts of %s every %s%s, peak %g/s%s", w, p,
                 shown, o->rate, bound);
    else
        snprintf(run->shape, sizeof(run->shape),
                 "concert of %u question%s, window %s every %s%s, peak %g/s%s", run->n_slots,
                 run->n_slots == 1 ? "" : "s", w, p, shown, o->rate, bound);
}

/* More than half the replies were 409 question_not_open or question_closed:
 * the run measured a target that counted nothing (a recording replayed
 * without its questions opened, questions closed since), whatever its
 * latency says. */
static bool mostly_not_open(const struct loadengine_result *r)
{
    uint64_t refused = 0;
    for (uint32_t i = 0; i < r->errs.n; i++)
        if (r->errs.e[i].status == 409 &&
            (strcmp(r->errs.e[i].code, "question_not_open") == 0 ||
             strcmp(r->errs.e[i].code, "question_closed") == 0))
            refused += r->errs.e[i].count;
    if (r->completed == 0 || refused * 2 <= r->completed)
        return false;
    fprintf(stderr,
            "%s: %" PRIu64 " of %" PRIu64 " replies were 409 question_not_open or "
            "question_closed: the target "
            "counted almost nothing (open the questions first: the admin API, or --profile "
            "concert with --admin-token-file, which opens them itself)\n",
            PROG, refused, r->completed);
    return true;
}

static int plan_concert(struct run *run)
{
    const struct loadprofile *p = &run->profile;
    run->n_actions = (size_t)run->n_slots * 2;
    run->actions = calloc(run->n_actions, sizeof(*run->actions));
    if (run->actions == NULL)
        return usage_fail("out of memory");
    double idle = p->period_us - p->window_us;
    double grace = (idle - p->lead_us) / 2;
    if (grace > CLOSE_GRACE_MAX_US)
        grace = CLOSE_GRACE_MAX_US;
    if (grace < 0)
        grace = 0;
    for (uint32_t b = 0; b < run->n_slots; b++) {
        /* open at the period start, the answers come lead_us later; close
         * a little after the window, before the next open */
        run->actions[2 * b] = (struct admin_action){
            .at_us = loadprofile_burst_start_us(p, b) - p->lead_us, .slot = b, .open = true};
        run->actions[2 * b + 1] = (struct admin_action){
            .at_us = loadprofile_burst_end_us(p, b) + grace, .slot = b, .open = false};
    }
    return 0;
}

/* A recording's admin events become the run's actions, at their times
 * divided by the speedup, issued with the token as a concert issues its
 * own. */
static int plan_replay_admin(struct run *run)
{
    const struct loadreplay *r = &run->replay;
    if (r->n_admin == 0)
        return 0;
    if (run->token == NULL)
        return usage_fail("--replay %s: the recording opens and closes questions (%zu admin "
                          "events): give --admin-token-file, or the answers meet closed questions",
                          run->o->replay_path, r->n_admin);
    run->actions = calloc(r->n_admin, sizeof(*run->actions));
    if (run->actions == NULL)
        return usage_fail("out of memory");
    for (size_t i = 0; i < r->n_admin; i++) {
        const struct loadreplay_admin *a = &r->admin[i];
        uint32_t s = 0;
        while (s < run->n_slots && run->qids[s] != a->question)
            s++;
        if (s == run->n_slots) {
            if (run->n_slots == EVENT_MAX_QUESTIONS)
                return usage_fail("--replay %s: admin events for more than %d questions",
                                  run->o->replay_path, EVENT_MAX_QUESTIONS);
            run->qids[run->n_slots++] = a->question;
        }
        run->actions[run->n_actions++] = (struct admin_action){
            .at_us = (double)a->t_us / run->o->speedup, .slot = s, .open = a->open};
    }
    return 0;
}

/* Whether path can be written: the file, or else its directory (which the
 * report is renamed into). */
static bool writable(const char *path)
{
    if (access(path, W_OK) == 0)
        return true;
    if (errno != ENOENT)
        return false;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    return access(dir, W_OK | X_OK) == 0;
}

static int setup(struct run *run)
{
    const struct loadopts *o = run->o;
    char err[512];

    if (!loadhttp_parse_url(o->target, &run->target, err, sizeof(err)) ||
        !loadhttp_resolve(&run->target, o->allow_remote, err, sizeof(err)))
        return usage_fail("--target %s: %s", o->target, err);
    if (o->verify_url != NULL &&
        (!loadhttp_parse_url(o->verify_url, &run->dash, err, sizeof(err)) ||
         !loadhttp_resolve(&run->dash, o->allow_remote, err, sizeof(err))))
        return usage_fail("--verify %s: %s", o->verify_url, err);

    if (o->event_path != NULL) {
        if (!eventfile_load(o->event_path, &run->ef, err, sizeof(err)))
            return usage_fail("--event %s", err);
        run->have_ef = true;
    }
    if (o->admin_token_path != NULL) {
        run->token = http_load_token(o->admin_token_path, err, sizeof(err));
        if (run->token == NULL)
            return usage_fail("%s", err);
    }
    run->seed = o->seed_set ? o->seed : (util_wall_ms() * 1000003ull) ^ ((uint64_t)getpid() << 32);

    if (o->replay_path != NULL) {
        if (!loadreplay_load(o->replay_path, run->have_ef ? &run->ef : NULL, &run->replay, err,
                             sizeof(err)))
            return usage_fail("%s", err);
        run->have_replay = true;
        run->mode = "replay";
        int rc = plan_replay_admin(run);
        if (rc != 0)
            return rc;
    } else {
        int rc = choose_questions(run);
        if (rc != 0)
            return rc;
        if (!loadsynth_init(&run->synth, &run->ef, run->qidx, run->n_slots, o->users,
                            o->user_prefix, run->seed, err, sizeof(err)))
            return usage_fail("%s", err);
        run->have_synth = true;
        /* The ultimate fans are checked on a fresh event only: answers from
         * before the run (--verify-delta) are not in this run's record. */
        if (o->verify_url != NULL && !o->verify_delta) {
            if (loadtally_fans_init(&run->fans, o->users, run->n_slots))
                run->have_fans = true;
            else
                fprintf(stderr,
                        "%s: warning: --users %llu x %u questions is too many to record: the "
                        "ultimate fans will not be verified\n",
                        PROG, (unsigned long long)o->users, run->n_slots);
        }
        if (o->closed_loop) {
            run->mode = "max";
        } else {
            struct loadprofile_params pp = {
                .kind = o->profile,
                .rate = o->rate,
                .duration_us = o->duration_us,
                .requests = o->requests,
                .period_us = o->period_us,
                .window_us = o->window_us,
                .speedup = o->speedup,
                .bursts = o->profile == LOADPROFILE_CONCERT ? run->n_slots : 0,
                .n_stages = o->n_stages,
            };
            memcpy(pp.stages, o->stages, sizeof(pp.stages));
            if (!loadprofile_init(&run->profile, &pp, err, sizeof(err)))
                return usage_fail("%s", err);
            run->have_profile = true;
            run->mode = loadopts_profile_name(o->profile);
            if (o->profile == LOADPROFILE_CONCERT) {
                int rc2 = plan_concert(run);
                if (rc2 != 0)
                    return rc2;
            }
        }
    }

    if (o->threads != 0) {
        run->threads = o->threads;
    } else {
        /* Half the CPUs: the target usually runs on the same machine. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        run->threads = ncpu > 1 ? (uint32_t)(ncpu / 2) : 1;
        if (run->threads > LOADENGINE_MAX_THREADS)
            run->threads = LOADENGINE_MAX_THREADS;
        if (run->threads > o->connections)
            run->threads = o->connections;
    }
    /* Every connection is a descriptor; the default soft limit (1024) is
     * below what --connections allows. Raise it as far as the hard limit. */
    struct rlimit rl;
    rlim_t need = (rlim_t)o->connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < need)
            return usage_fail("--connections %u: the descriptor limit is %llu (ulimit -n)",
                              o->connections, (unsigned long long)rl.rlim_cur);
    }
    if (o->record_path != NULL && strcmp(o->record_path, "-") == 0) {
        snprintf(run->record_dir, sizeof(run->record_dir), "%s/livetally-record-XXXXXX",
                 getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR") : "/tmp");
        if (mkdtemp(run->record_dir) == NULL) {
            run->record_dir[0] = '\0';
            return usage_fail("--record -: a directory for the threads' parts: %s",
                              strerror(errno));
        }
        snprintf(run->record_file, sizeof(run->record_file), "%s/record.jsonl", run->record_dir);
    }
    /* A report that cannot be written should fail now, not after the run. */
    if (o->json_path != NULL && strcmp(o->json_path, "-") != 0 && !writable(o->json_path))
        return usage_fail("--json %s: %s", o->json_path, strerror(errno));
    if (o->report_path != NULL && strcmp(o->report_path, "-") != 0 && !writable(o->report_path))
        return usage_fail("--report %s: %s", o->report_path, strerror(errno));
    if (o->results_path != NULL) {
        run->results = strcmp(o->results_path, "-") == 0 ? stdout : fopen(o->results_path, "w");
        if (run->results == NULL)
            return usage_fail("--results %s: %s", o->results_path, strerror(errno));
        fputs(LOADENGINE_RESULTS_HEADER, run->results);
    }
    if (!loadhist_init(&run->interval, LOADHIST_HIGHEST_US, LOADHIST_DIGITS) ||
        !loadhist_init(&run->so_far, LOADHIST_HIGHEST_US, LOADHIST_DIGITS))
        return usage_fail("out of memory");
    run->progress = o->progress == LOADOPTS_PROGRESS_ON ||
                    (o->progress == LOADOPTS_PROGRESS_AUTO && isatty(STDERR_FILENO));
    describe(run);
    return 0;
}

/* --record -: the merged recording to stdout, then its directory goes. */
static bool record_to_stdout(struct run *run)
{
    bool ok = run->record_file[0] != '\0';
    FILE *f = ok ? fopen(run->record_file, "re") : NULL;
    char buf[1 << 16];
    size_t n;
    ok = f != NULL;
    while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = fwrite(buf, 1, n, stdout) == n;
    if (f != NULL) {
        ok &= ferror(f) == 0;
        fclose(f);
    }
    ok &= fflush(stdout) == 0;
    return ok;
}

static void record_dir_remove(struct run *run)
{
    if (run->record_dir[0] == '\0')
        return;
    unlink(run->record_file);
    rmdir(run->record_dir);
    run->record_dir[0] = '\0';
}

static void teardown(struct run *run)
{
    record_dir_remove(run);
    if (run->results != NULL && run->results != stdout)
        fclose(run->results); /* the run ended early: its lines so far */
    if (run->have_synth)
        loadsynth_free(&run->synth);
    if (run->have_replay)
        loadreplay_free(&run->replay);
    if (run->have_ef)
        eventfile_free(&run->ef);
    if (run->have_baseline)
        loadverify_stats_free(&run->baseline);
    if (run->have_fans)
        loadtally_fans_free(&run->fans);
    loadhist_free(&run->interval);
    loadhist_free(&run->so_far);
    free(run->token);
    free(run->actions);
    free(run->series);
}

/* ---- dashboard ---------------------------------------------------------- */

static bool fetch_stats(struct run *run, struct loadverify_stats *st, struct loadverify_diffs *d,
                        char *err, size_t errlen)
{
    struct loadhttp_reply reply;
    if (!loadhttp_fetch(&run->dash, "GET", "/v1/stats", NULL, NULL, 0, STATS_TIMEOUT_MS,
                        STATS_MAX_BYTES, &reply, err, errlen))
        return false;
    bool ok = false;
    if (reply.status != 200) {
        char code[LOADHTTP_ERROR_MAX];
        loadhttp_error_code(reply.body, reply.body_len, code, sizeof(code));
        snprintf(err, errlen, "GET /v1/stats: status %d%s%s", reply.status, code[0] ? " " : "",
                 code);
    } else {
        ok = loadverify_stats_parse(reply.body, reply.body_len, &run->ef, st, d, err, errlen);
    }
    loadhttp_reply_free(&reply);
    return ok;
}

/* Polls until a snapshot `generations` newer than the first one seen (0:
 * the first one); its counts go to out and what is malformed in it to d. */
static bool wait_fresh(struct run *run, uint64_t generations, struct loadverify_stats *out,
                       struct loadverify_diffs *d, char *err, size_t errlen)
{
    uint64_t deadline = util_mono_us() + run->o->verify_timeout_us;
    bool have_first = false;
    uint64_t first = 0;
    char last[256] = "no answer";
    for (;;) {
        struct loadverify_stats st;
        struct loadverify_diffs sd = {0};
        if (fetch_stats(run, &st, &sd, last, sizeof(last))) {
            if (!st.has_generation) {
                loadverify_stats_free(&st);
                loadverify_diffs_free(&sd);
                snprintf(err, errlen, "the dashboard's stats have no \"generation\"");
                return false;
            }
            if (!have_first || st.generation < first) {
                /* a restarted dashboard counts again from its start */
                have_first = true;
                first = st.generation;
            }
            if (st.generation >= first + generations) {
                *out = st;
                if (d != NULL) {
                    for (size_t i = 0; i < sd.n; i++)
                        loadverify_diff_add(d, "%s", sd.lines[i]);
                    d->total += sd.total - sd.n;
                }
                loadverify_diffs_free(&sd);
                return true;
            }
            loadverify_stats_free(&st);
        }
        loadverify_diffs_free(&sd);
        if (stop_signal) {
            snprintf(err, errlen, "interrupted while waiting for the dashboard");
            return false;
        }
        uint64_t now = util_mono_us();
        if (now >= deadline)
            break;
        sleep_until_us(now + STATS_POLL_US < deadline ? now + STATS_POLL_US : deadline);
    }
    if (have_first)
        snprintf(err, errlen, "no snapshot newer than generation %" PRIu64 " within %gs", first + 1,
                 (double)run->o->verify_timeout_us / 1e6);
    else
        snprintf(err, errlen, "no snapshot within %gs: %s",
                 (double)run->o->verify_timeout_us / 1e6, last);
    return false;
}

/* ---- admin -------------------------------------------------------------- */

static bool admin_call(struct run *run, uint32_t slot, bool open)
{
    char path[96];
    char err[256];
    uint32_t id = run->qids[slot];
    snprintf(path, sizeof(path), "/v1/admin/questions/%u/%s", id, open ? "open" : "close");
    struct loadhttp_reply reply;
    if (!loadhttp_fetch(&run->target, "POST", path, run->token, NULL, 0, ADMIN_TIMEOUT_MS, 65536,
                        &reply, err, sizeof(err))) {
        log_error("admin call failed question=%u action=%s reason=\"%s\"", id,
                  open ? "open" : "close", err);
        run->admin_errors++;
        return false;
    }
    bool ok = reply.status >= 200 && reply.status < 300;
    if (!ok) {
        char code[LOADHTTP_ERROR_MAX];
        loadhttp_error_code(reply.body, reply.body_len, code, sizeof(code));
        log_error("admin call refused question=%u action=%s status=%d error=%s", id,
                  open ? "open" : "close", reply.status, code[0] ? code : "-");
        run->admin_errors++;
    } else {
        log_info("question %s id=%u", open ? "opened" : "closed", id);
    }
    loadhttp_reply_free(&reply);
    return ok;
}

/* A stop: every question the run opened is closed, and so recorded (a
 * replay of the recording leaves none open either). */
static void close_open_questions(struct run *run, struct loadengine *e, uint64_t rel_us)
{
    for (uint32_t s = 0; s < run->n_slots; s++) {
        if (run->opened[s] && !run->closed[s]) {
            admin_call(run, s, false);
            run->closed[s] = true;
            loadengine_record_admin(e, rel_us, run->qids[s], false);
        }
    }
}

/* Runs the due admin actions; false when an open failed (the run stops). */
static bool run_admin(struct run *run, struct loadengine *e, double rel_us)
{
    while (run->next_action < run->n_actions && run->actions[run->next_action].at_us <= rel_us) {
        const struct admin_action *a = &run->actions[run->next_action++];
        if (a->open) {
            if (!admin_call(run, a->slot, true))
                return false;
            run->opened[a->slot] = true;
            run->closed[a->slot] = false; /* a replay may open a question again */
            loadengine_record_admin(e, (uint64_t)a->at_us, run->qids[a->slot], true);
            loadengine_allow(e, a->slot + 1);
        } else if (run->opened[a->slot] && !run->closed[a->slot]) {
            admin_call(run, a->slot, false);
            run->closed[a->slot] = true;
            loadengine_record_admin(e, (uint64_t)a->at_us, run->qids[a->slot], false);
        }
    }
    return true;
}

/* ---- control loop ------------------------------------------------------- */

static double schedule_end_s(const struct run *run)
{
    if (run->have_replay)
        return (double)run->replay.e[run->replay.n - 1].t_us / run->o->speedup / 1e6;
    if (run->have_profile)
        return loadprofile_end_us(&run->profile) / 1e6;
    return run->o->duration_us ? (double)run->o->duration_us / 1e6 : -1;
}

static void sample(struct run *run, struct loadengine *e, uint32_t t_s, double elapsed_s)
{
    struct loadengine_progress p;
    loadhist_reset(&run->interval);
    loadengine_progress(e, &p, &run->interval);
    loadhist_merge(&run->so_far, &run->interval);
    if (run->n_series == run->cap_series) {
        size_t nc = run->cap_series ? run->cap_series * 2 : 256;
        struct loadreport_second *ns = realloc(run->series, nc * sizeof(*ns));
        if (ns == NULL)
            return; /* the series stops growing; the run goes on */
        run->series = ns;
        run->cap_series = nc;
    }
    struct loadreport_second *s = &run->series[run->n_series++];
    s->t = t_s;
    s->sent = p.sent - run->prev.sent;
    s->acked = p.acked - run->prev.acked;
    s->errors = p.errors - run->prev.errors;
    s->replies = run->interval.total;
    s->p50_us = loadhist_percentile(&run->interval, 50);
    s->p90_us = loadhist_percentile(&run->interval, 90);
    s->p99_us = loadhist_percentile(&run->interval, 99);
    s->p999_us = loadhist_percentile(&run->interval, 99.9);
    run->prev = p;
    if (run->progress) {
        char line[256];
        double end = schedule_end_s(run);
        double left = end >= 0 && end < 1e9 ? end - elapsed_s : -1;
        if (left < 0 && end >= 0)
            left = 0;
        loadreport_progress_line(line, sizeof(line), elapsed_s, left, &p, (double)s->replies,
                                 loadhist_percentile(&run->so_far, 99));
        fprintf(stderr, "\r%s\033[K", line);
        fflush(stderr);
        run->progress_shown = true;
    }
}

static void control_loop(struct run *run, struct loadengine *e)
{
    uint64_t start = loadengine_start_us(e);
    uint64_t next_tick = start + SECOND_US;
    uint32_t t_s = 1;
    bool stopping = false;
    for (;;) {
        uint64_t now = util_mono_us();
        if (stop_signal && !stopping) {
            stopping = true;
            run->interrupted = true;
            loadengine_stop(e);
            close_open_questions(run, e, now > start ? now - start : 0);
        }
        if (!stopping && now >= start && !run_admin(run, e, (double)(now - start))) {
            stopping = true;
            loadengine_stop(e);
            close_open_questions(run, e, now - start);
        }
        if (now >= next_tick) {
            sample(run, e, t_s, (double)(now - start) / 1e6);
            /* Seconds the loop slept through (an admin call hung) are folded
             * into this one rather than reported as idle. */
            while (next_tick <= now) {
                next_tick += SECOND_US;
                t_s++;
            }
        }
        bool admin_left = !stopping && run->next_action < run->n_actions;
        if (loadengine_finished(e) && !admin_left)
            break;
        uint64_t wake = next_tick;
        if (admin_left) {
            uint64_t at = start + (uint64_t)run->actions[run->next_action].at_us;
            if (at < wake)
                wake = at;
        }
        if (wake > now + CONTROL_SLEEP_MAX_US)
            wake = now + CONTROL_SLEEP_MAX_US;
        sleep_until_us(wake);
    }
    /* the last, partial second, unless nothing happened in it */
    uint64_t now = util_mono_us();
    sample(run, e, t_s, (double)(now - start) / 1e6);
    if (run->n_series > 1) {
        const struct loadreport_second *last = &run->series[run->n_series - 1];
        if (last->sent == 0 && last->replies == 0 && last->errors == 0 && last->acked == 0)
            run->n_series--;
    }
    if (run->progress_shown)
        fputc('\n', stderr);
}

/* ---- the run ------------------------------------------------------------ */

/* Waits until the ingest has written its last top lists; false on a signal. */
static bool settle_fans(char *note, size_t len)
{
    sleep_until_us(util_mono_us() + FANS_SETTLE_US);
    if (stop_signal != 0)
        snprintf(note, len, "interrupted while waiting for the last fans lists");
    return stop_signal == 0;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int loadrun(const struct loadopts *o)
{
    struct run *run = calloc(1, sizeof(*run));
    struct loadengine *e = NULL;
    struct loadengine_result res;
    bool have_res = false;
    struct loadverify_diffs diffs = {0};
    struct loadverify_stats actual;
    bool have_actual = false;
    char err[512];
    char note[512] = "";
    int status = 1;
    memset(&res, 0, sizeof(res));
    if (run == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    run->o = o;
    log_init("loadtest", o->log_level);
    status = setup(run);
    if (status != 0)
        goto done;
    status = 1;
    install_signals();

    if (o->verify_url != NULL) {
        /* --verify-delta: what the dashboard shows before the run (a fresh
         * snapshot) is subtracted. Otherwise one snapshot proves the
         * dashboard answers before any load is sent. */
        if (!wait_fresh(run, o->verify_delta ? FRESH_GENERATIONS : 0, &run->baseline, NULL, err,
                        sizeof(err))) {
            fprintf(stderr, "%s: --verify %s: %s\n", PROG, o->verify_url, err);
            goto done;
        }
        run->have_baseline = true;
        if (!o->verify_delta && run->baseline.tally.totals.answers > 0)
            fprintf(stderr,
                    "%s: warning: the dashboard already shows %" PRIu64 " answers; --verify "
                    "compares totals, so add --verify-delta to check only this run's\n",
                    PROG, run->baseline.tally.totals.answers);
    }

    struct loadengine_config cfg = {
        .target = &run->target,
        .threads = run->threads,
        .connections = o->connections,
        .pipeline = o->pipeline,
        .timeout_us = o->timeout_us,
        .profile = run->have_profile ? &run->profile : NULL,
        .replay = run->have_replay ? &run->replay : NULL,
        .closed_loop = o->closed_loop,
        .duration_us = o->duration_us,
        .requests = o->requests,
        .replay_speedup = o->speedup,
        .synth = run->have_synth ? &run->synth : NULL,
        .gate = run->have_profile && o->profile == LOADPROFILE_CONCERT,
        .record_path = run->record_file[0] ? run->record_file : o->record_path,
        .n_questions = run->have_ef ? run->ef.n_questions : 0,
        .seed = run->seed,
        .fans = run->have_fans ? &run->fans : NULL,
        .results = run->results,
        .retry = o->retry,
        .retry_deadline_us = o->retry_deadline_us,
    };
    uint64_t started_wall = util_wall_ms();
    e = loadengine_start(&cfg, err, sizeof(err));
    if (e == NULL) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        goto done;
    }
    uint64_t start_us = loadengine_start_us(e);
    control_loop(run, e);
    bool engine_ok = loadengine_finish(e, &res, err, sizeof(err));
    e = NULL;
    have_res = true;
    if (!engine_ok)
        fprintf(stderr, "%s: %s\n", PROG, err);
    if (engine_ok && run->record_file[0] && !record_to_stdout(run)) {
        fprintf(stderr, "%s: --record -: writing the recording to stdout failed\n", PROG);
        engine_ok = false;
    }
    record_dir_remove(run);

    struct loadreport rep = {
        .mode = run->mode,
        .target = o->target,
        .connections = o->connections,
        .threads = run->threads,
        .pipeline = o->pipeline,
        .rate = run->have_profile && o->n_stages == 0 ? o->rate : 0,
        .duration_us = o->duration_us,
        .requests = o->requests,
        .period_us = run->have_profile && o->profile != LOADPROFILE_STEADY ? o->period_us : 0,
        .window_us = run->have_profile && o->profile != LOADPROFILE_STEADY ? o->window_us : 0,
        .users = o->users,
        .speedup = o->speedup,
        .seed = run->seed,
        .synthetic = run->have_synth,
        .question_ids = run->qids,
        .n_questions = run->n_slots,
        .started_wall_ms = started_wall,
        .interrupted = run->interrupted,
        .admin_errors = run->admin_errors,
        .r = &res,
        .series = run->series,
        .n_series = run->n_series,
        .verify = LOADREPORT_VERIFY_OFF,
        .verify_delta = o->verify_delta,
        .answers_before = run->have_baseline ? run->baseline.tally.totals.answers : 0,
    };
    snprintf(rep.shape, sizeof(rep.shape), "%s", run->shape);
    uint64_t end_us = res.last_reply_us > start_us ? res.last_reply_us : util_mono_us();
    rep.elapsed_s = end_us > start_us ? (double)(end_us - start_us) / 1e6 : 0;

    if (o->verify_url != NULL) {
        if (run->interrupted) {
            rep.verify = LOADREPORT_VERIFY_SKIPPED;
            rep.verify_note = "the run was interrupted";
        } else if ((run->have_fans && !settle_fans(note, sizeof(note))) ||
                   !wait_fresh(run, FRESH_GENERATIONS, &actual, &diffs, note, sizeof(note))) {
            rep.verify = stop_signal ? LOADREPORT_VERIFY_SKIPPED : LOADREPORT_VERIFY_FAILED;
            rep.verify_note = note;
        } else {
            have_actual = true;
            rep.compared = loadverify_compare_bounded(
                &run->ef, o->verify_delta ? &run->baseline.tally : NULL, &res.tally, &res.maybe,
                &actual, &diffs);
            if (run->have_fans) {
                struct loadverify_population pop = {
                    .prefix = run->synth.prefix,
                    .qidx = run->qidx,
                    .n_slots = run->n_slots,
                    .acked = &run->fans,
                };
                rep.compared += loadverify_fans(&run->ef, &pop, &actual, &diffs);
            }
            rep.generation = actual.generation;
            rep.verify = diffs.total == 0 ? LOADREPORT_VERIFY_PASSED : LOADREPORT_VERIFY_FAILED;
            rep.diffs = &diffs;
        }
    }

    struct loadreport_threshold held[LOADTHRESHOLD_MAX];
    size_t thresholds_failed =
        loadreport_thresholds(o->thresholds, o->n_thresholds, &res, held);
    rep.thresholds = held;
    rep.n_thresholds = o->n_thresholds;

    bool results_ok = true;
    if (run->results != NULL) {
        bool failed = ferror(run->results) != 0;
        failed |= run->results == stdout ? fflush(stdout) != 0 : fclose(run->results) != 0;
        run->results = NULL;
        if (failed) {
            fprintf(stderr, "%s: --results %s: a write failed\n", PROG, o->results_path);
            results_ok = false;
        }
    }
    /* --json - or --results -: stdout is theirs alone, so that it parses */
    FILE *summary = (o->json_path != NULL && strcmp(o->json_path, "-") == 0) ||
                            (o->results_path != NULL && strcmp(o->results_path, "-") == 0) ||
                            (o->report_path != NULL && strcmp(o->report_path, "-") == 0) ||
                            run->record_file[0] != '\0'
                        ? stderr
                        : stdout;
    loadreport_summary(summary, &rep);
    fflush(summary);
    bool outputs_ok = true;
    if (o->json_path != NULL && !loadreport_json(o->json_path, &rep, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        outputs_ok = false;
    }
    if (o->report_path != NULL && !loadhtml_write(o->report_path, &rep, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        outputs_ok = false;
    }
    status = 0;
    if (!engine_ok || !outputs_ok || !results_ok || run->admin_errors > 0)
        status = 1;
    if (o->verify_url != NULL && rep.verify != LOADREPORT_VERIFY_PASSED)
        status = 1;
    if (thresholds_failed > 0)
        status = 1;
    if (mostly_not_open(&res))
        status = 1;

done:
    if (e != NULL) {
        loadengine_stop(e);
        loadengine_finish(e, &res, err, sizeof(err));
        have_res = true;
    }
    if (have_res)
        loadengine_result_free(&res);
    if (have_actual)
        loadverify_stats_free(&actual);
    loadverify_diffs_free(&diffs);
    teardown(run);
    free(run);
    return status;
}
