#include "loadreport.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loadunits.h"
#include "util.h"

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

/* Latency in ms with 3 significant digits: "0.214", "1.23", "12.5", "1234". */
static void fmt_ms(char *buf, size_t len, uint64_t us)
{
    double v = ms(us);
    if (v < 10)
        snprintf(buf, len, "%.3g", v);
    else if (v < 1000)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.0f", v);
}

void loadreport_progress_line(char *buf, size_t len, double elapsed_s, double left_s,
                              const struct loadengine_progress *p, double rate, uint64_t p99_us)
{
    char p99[32];
    char left[32] = "";
    fmt_ms(p99, sizeof(p99), p99_us);
    if (left_s >= 0 && left_s < 1e9) {
        char d[24];
        loadunits_format_duration((uint64_t)(left_s * 1e6), d, sizeof(d));
        snprintf(left, sizeof(left), "  left %s", d);
    }
    snprintf(buf, len,
             "%6.0fs  sent %" PRIu64 "  ok %" PRIu64 "  err %" PRIu64 "  now %.0f/s  p99 %sms%s",
             elapsed_s, p->sent, p->acked, p->errors, rate, p99, left);
}

uint64_t loadreport_peak(const struct loadreport *rep)
{
    uint64_t peak = 0;
    for (size_t i = 0; i < rep->n_series; i++) {
        if (rep->series[i].replies > peak)
            peak = rep->series[i].replies;
    }
    return peak;
}

static double achieved_rps(const struct loadreport *rep)
{
    return rep->elapsed_s > 0 ? (double)rep->r->completed / rep->elapsed_s : 0;
}

/* The seconds of the series in which replies came, and the replies/s over
 * them: a concert is mostly idle gaps, which the whole-run average hides. */
static double active_rps(const struct loadreport *rep, uint64_t *seconds)
{
    uint64_t n = 0, replies = 0;
    for (size_t i = 0; i < rep->n_series; i++) {
        if (rep->series[i].replies == 0)
            continue;
        n++;
        replies += rep->series[i].replies;
    }
    *seconds = n;
    return n > 0 ? (double)replies / (double)n : 0;
}

static void print_kinds(FILE *out, const struct loadengine_errs *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        const struct loadengine_err *e = &t->e[i];
        if (e->status == 0)
            fprintf(out, "%s %s %" PRIu64, i ? "," : ":", e->code, e->count);
        else
            fprintf(out, "%s %d %s %" PRIu64, i ? "," : ":", e->status,
                    e->code[0] ? e->code : "(no error code)", e->count);
    }
    if (t->other)
        fprintf(out, ", other %" PRIu64, t->other);
}

static void print_errors(FILE *out, const struct loadengine_result *r)
{
    fprintf(out, "  errors         %" PRIu64, r->errors);
    print_kinds(out, &r->errs);
    if (r->indeterminate)
        fprintf(out, " (%" PRIu64 " lost with their connection: maybe counted)", r->indeterminate);
    fputc('\n', out);
}

void loadreport_summary(FILE *out, const struct loadreport *rep)
{
    const struct loadengine_result *r = rep->r;
    fprintf(out, "livetally-loadtest %s: %s against %s\n", LIVETALLY_VERSION, rep->shape,
            rep->target);
    fprintf(out, "  connections    %u on %u thread%s, pipeline %u\n", rep->connections,
            rep->threads, rep->threads == 1 ? "" : "s", rep->pipeline);
    if (rep->synthetic)
        fprintf(out, "  seed           %" PRIu64 "\n", rep->seed);
    fprintf(out, "  sent           %" PRIu64 " in %.1fs%s\n", r->sent, rep->elapsed_s,
            rep->interrupted ? " (interrupted)" : "");
    fprintf(out, "  acknowledged   %" PRIu64 " (202)\n", r->acked);
    if (r->retries > 0 || r->counted_earlier > 0) {
        fprintf(out, "  retried        %" PRIu64 " tries sent again", r->retries);
        print_kinds(out, &r->retried);
        fprintf(out, "\n  counted earlier %" PRIu64 " (409 duplicate_answer on a retry: an earlier "
                     "try added the user's marker)\n", r->counted_earlier);
    }
    print_errors(out, r);
    if (r->unsent)
        fprintf(out, "  never sent     %" PRIu64 " (due, but the run ended first)\n", r->unsent);
    if (r->connect_failures)
        fprintf(out, "  connect fails  %" PRIu64 "\n", r->connect_failures);
    uint64_t active_s = 0;
    double active = active_rps(rep, &active_s);
    fprintf(out, "  achieved       %.1f replies/s (peak second %" PRIu64 ")", achieved_rps(rep),
            loadreport_peak(rep));
    if (active_s > 0 && (double)active_s + 1 < rep->elapsed_s)
        fprintf(out, "; %.1f/s over the %" PRIu64 " s with replies", active, active_s);
    fputc('\n', out);
    if (r->latency.total > 0) {
        char p50[16], p75[16], p90[16], p95[16], p99[16], p999[16], mx[16];
        fmt_ms(p50, sizeof(p50), loadhist_percentile(&r->latency, 50));
        fmt_ms(p75, sizeof(p75), loadhist_percentile(&r->latency, 75));
        fmt_ms(p90, sizeof(p90), loadhist_percentile(&r->latency, 90));
        fmt_ms(p95, sizeof(p95), loadhist_percentile(&r->latency, 95));
        fmt_ms(p99, sizeof(p99), loadhist_percentile(&r->latency, 99));
        fmt_ms(p999, sizeof(p999), loadhist_percentile(&r->latency, 99.9));
        fmt_ms(mx, sizeof(mx), r->latency.max);
        fprintf(out, "  latency ms     p50 %s  p75 %s  p90 %s  p95 %s  p99 %s  p99.9 %s  max %s\n"
                     "                 (%s)\n",
                p50, p75, p90, p95, p99, p999, mx,
                strcmp(rep->mode, "max") == 0 ? "from the send" : "from the intended send time");
    }
    if (rep->admin_errors)
        fprintf(out, "  admin          %" PRIu64 " failed call%s (see the log above)\n",
                rep->admin_errors, rep->admin_errors == 1 ? "" : "s");
    switch (rep->verify) {
    case LOADREPORT_VERIFY_OFF:
        break;
    case LOADREPORT_VERIFY_PASSED:
        fprintf(out, "  verify         passed: %" PRIu64 " counts match the dashboard%s (generation %" PRIu64 ")\n",
                rep->compared, rep->verify_delta ? " (change since the start)" : "",
                rep->generation);
        if (r->maybe_counted > 0)
            fprintf(out, "                 exactly for the %" PRIu64 " answers acknowledged%s; "
                         "%" PRIu64 " maybe counted (a try lost with its connection, then no "
                         "202): %" PRIu64 " count%s within that bound\n",
                    r->acked + r->counted_earlier - (r->maybe_counted - r->indeterminate),
                    r->counted_earlier > 0 ? " or counted earlier" : "", r->maybe_counted,
                    rep->diffs != NULL ? rep->diffs->within_bound : 0,
                    rep->diffs != NULL && rep->diffs->within_bound == 1 ? "" : "s");
        break;
    case LOADREPORT_VERIFY_SKIPPED:
        fprintf(out, "  verify         skipped: %s\n", rep->verify_note ? rep->verify_note : "");
        break;
    case LOADREPORT_VERIFY_FAILED:
        if (rep->diffs != NULL && rep->diffs->total > 0) {
            fprintf(out, "  verify         FAILED: %" PRIu64 " difference%s (generation %" PRIu64 ")\n",
                    rep->diffs->total, rep->diffs->total == 1 ? "" : "s", rep->generation);
            for (size_t i = 0; i < rep->diffs->n; i++)
                fprintf(out, "    %s\n", rep->diffs->lines[i]);
            if (rep->diffs->total > rep->diffs->n)
                fprintf(out, "    ... and %" PRIu64 " more\n", rep->diffs->total - rep->diffs->n);
        } else {
            fprintf(out, "  verify         FAILED: %s\n", rep->verify_note ? rep->verify_note : "");
        }
        if (r->maybe_counted)
            fprintf(out, "    note: %" PRIu64 " answers were lost with their connection and may "
                         "have been counted (each count is allowed that much above)\n",
                    r->maybe_counted);
        if (!rep->verify_delta && rep->answers_before > 0)
            fprintf(out, "    note: the dashboard showed %" PRIu64 " answers before the run; "
                         "--verify-delta checks only the change\n",
                    rep->answers_before);
        break;
    }
    if (rep->n_thresholds > 0) {
        size_t held = 0;
        for (size_t i = 0; i < rep->n_thresholds; i++)
            held += rep->thresholds[i].held;
        fprintf(out, "  thresholds     %zu of %zu held\n", held, rep->n_thresholds);
        for (size_t i = 0; i < rep->n_thresholds; i++) {
            const struct loadreport_threshold *x = &rep->thresholds[i];
            char v[32];
            if (x->measured)
                loadthreshold_format(x->t, x->actual, v, sizeof(v));
            else
                snprintf(v, sizeof(v), "nothing to measure");
            fprintf(out, "    %-24s %-6s (%s)\n", x->t->text, x->held ? "held" : "FAILED", v);
        }
    }
}

size_t loadreport_thresholds(const struct loadthreshold *t, size_t n,
                             const struct loadengine_result *r, struct loadreport_threshold *out)
{
    struct loadthreshold_input in = {.latency = &r->latency,
                                     /* answers, not tries: a retry is the same one */
                                     .due = r->sent - r->retries + r->unsent,
                                     .acked = r->acked + r->counted_earlier,
                                     .errors = r->errors};
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        out[i].t = &t[i];
        out[i].held = loadthreshold_eval(&t[i], &in, &out[i].actual, &out[i].measured);
        failed += !out[i].held;
    }
    return failed;
}

static int set_new(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v ? v : json_null());
}

static json_t *latency_json(const struct loadhist *h)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    set_new(o, "p50", json_real(ms(loadhist_percentile(h, 50))));
    set_new(o, "p75", json_real(ms(loadhist_percentile(h, 75))));
    set_new(o, "p90", json_real(ms(loadhist_percentile(h, 90))));
    set_new(o, "p95", json_real(ms(loadhist_percentile(h, 95))));
    set_new(o, "p99", json_real(ms(loadhist_percentile(h, 99))));
    set_new(o, "p999", json_real(ms(loadhist_percentile(h, 99.9))));
    set_new(o, "max", json_real(ms(h->total ? h->max : 0)));
    set_new(o, "min", json_real(ms(h->total ? h->min : 0)));
    set_new(o, "mean", json_real(loadhist_mean(h) / 1000.0));
    set_new(o, "count", json_integer((json_int_t)h->total));
    return o;
}

static json_t *errors_json(const struct loadengine_result *r)
{
    json_t *o = json_object();
    json_t *by_status = json_object();
    json_t *by_code = json_array();
    if (o == NULL || by_status == NULL || by_code == NULL) {
        json_decref(o);
        json_decref(by_status);
        json_decref(by_code);
        return NULL;
    }
    for (uint32_t i = 0; i < r->errs.n; i++) {
        const struct loadengine_err *e = &r->errs.e[i];
        char status[16];
        snprintf(status, sizeof(status), "%d", e->status);
        json_int_t prev = json_integer_value(json_object_get(by_status, status));
        set_new(by_status, status, json_integer(prev + (json_int_t)e->count));
        json_t *c = json_object();
        if (c != NULL) {
            set_new(c, "status", json_integer(e->status));
            set_new(c, "error", json_string(e->code));
            set_new(c, "count", json_integer((json_int_t)e->count));
            json_array_append_new(by_code, c);
        }
    }
    set_new(o, "total", json_integer((json_int_t)r->errors));
    set_new(o, "indeterminate", json_integer((json_int_t)r->indeterminate));
    set_new(o, "other", json_integer((json_int_t)r->errs.other));
    set_new(o, "by_status", by_status);
    set_new(o, "by_code", by_code);
    return o;
}

static const char *verify_status(enum loadreport_verify v)
{
    switch (v) {
    case LOADREPORT_VERIFY_OFF: return "off";
    case LOADREPORT_VERIFY_PASSED: return "passed";
    case LOADREPORT_VERIFY_FAILED: return "failed";
    case LOADREPORT_VERIFY_SKIPPED: return "skipped";
    }
    return "?";
}

static json_t *verify_json(const struct loadreport *rep)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    set_new(o, "requested", json_boolean(rep->verify != LOADREPORT_VERIFY_OFF));
    set_new(o, "status", json_string(verify_status(rep->verify)));
    set_new(o, "mode", json_string(rep->verify_delta ? "delta" : "totals"));
    set_new(o, "answers_before", json_integer((json_int_t)rep->answers_before));
    if (rep->verify == LOADREPORT_VERIFY_PASSED || rep->verify == LOADREPORT_VERIFY_FAILED)
        set_new(o, "passed", json_boolean(rep->verify == LOADREPORT_VERIFY_PASSED));
    else
        set_new(o, "passed", json_null());
    if (rep->verify_note != NULL)
        set_new(o, "reason", json_string(rep->verify_note));
    set_new(o, "compared", json_integer((json_int_t)rep->compared));
    set_new(o, "maybe_counted", json_integer((json_int_t)rep->r->maybe_counted));
    set_new(o, "within_bound",
            json_integer((json_int_t)(rep->diffs != NULL ? rep->diffs->within_bound : 0)));
    set_new(o, "generation", json_integer((json_int_t)rep->generation));
    json_t *d = json_array();
    uint64_t total = 0;
    if (rep->diffs != NULL) {
        total = rep->diffs->total;
        for (size_t i = 0; d != NULL && i < rep->diffs->n; i++)
            json_array_append_new(d, json_string(rep->diffs->lines[i]));
    }
    set_new(o, "difference_count", json_integer((json_int_t)total));
    set_new(o, "differences", d);
    return o;
}

static json_t *settings_json(const struct loadreport *rep)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    set_new(o, "connections", json_integer(rep->connections));
    set_new(o, "threads", json_integer(rep->threads));
    set_new(o, "pipeline", json_integer(rep->pipeline));
    set_new(o, "rate", rep->rate > 0 ? json_real(rep->rate) : json_null());
    set_new(o, "duration_s", rep->duration_us ? json_real((double)rep->duration_us / 1e6) : json_null());
    set_new(o, "requests", rep->requests ? json_integer((json_int_t)rep->requests) : json_null());
    set_new(o, "period_s", rep->period_us ? json_real((double)rep->period_us / 1e6) : json_null());
    set_new(o, "window_s", rep->window_us ? json_real((double)rep->window_us / 1e6) : json_null());
    set_new(o, "speedup", json_real(rep->speedup));
    set_new(o, "users", json_integer((json_int_t)rep->users));
    if (rep->synthetic) {
        /* As a string: JSON readers lose integers above 2^53. */
        char seed[24];
        snprintf(seed, sizeof(seed), "%" PRIu64, rep->seed);
        set_new(o, "seed", json_string(seed));
        json_t *q = json_array();
        for (uint32_t i = 0; q != NULL && i < rep->n_questions; i++)
            json_array_append_new(q, json_integer(rep->question_ids[i]));
        set_new(o, "questions", q);
    }
    return o;
}

static json_t *series_json(const struct loadreport *rep)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < rep->n_series; i++) {
        const struct loadreport_second *s = &rep->series[i];
        json_t *o = json_object();
        if (o == NULL)
            continue;
        set_new(o, "t", json_integer(s->t));
        set_new(o, "sent", json_integer((json_int_t)s->sent));
        set_new(o, "acknowledged", json_integer((json_int_t)s->acked));
        set_new(o, "errors", json_integer((json_int_t)s->errors));
        set_new(o, "replies", json_integer((json_int_t)s->replies));
        set_new(o, "p50_ms", s->replies ? json_real(ms(s->p50_us)) : json_null());
        set_new(o, "p90_ms", s->replies ? json_real(ms(s->p90_us)) : json_null());
        set_new(o, "p99_ms", s->replies ? json_real(ms(s->p99_us)) : json_null());
        set_new(o, "p999_ms", s->replies ? json_real(ms(s->p999_us)) : json_null());
        json_array_append_new(a, o);
    }
    return a;
}

bool loadreport_json(const char *path, const struct loadreport *rep, char *err, size_t errlen)
{
    const struct loadengine_result *r = rep->r;
    json_t *root = json_object();
    char *tmp = NULL;
    bool ok = false;
    if (root == NULL) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    char started[32];
    util_format_iso8601(rep->started_wall_ms, started, sizeof(started));
    set_new(root, "tool", json_string("livetally-loadtest"));
    set_new(root, "version", json_string(LIVETALLY_VERSION));
    set_new(root, "mode", json_string(rep->mode));
    set_new(root, "target", json_string(rep->target));
    set_new(root, "started_at", json_string(started));
    set_new(root, "elapsed_s", json_real(rep->elapsed_s));
    set_new(root, "interrupted", json_boolean(rep->interrupted));
    set_new(root, "settings", settings_json(rep));
    set_new(root, "sent", json_integer((json_int_t)r->sent));
    set_new(root, "completed", json_integer((json_int_t)r->completed));
    set_new(root, "acknowledged", json_integer((json_int_t)r->acked));
    set_new(root, "counted_earlier", json_integer((json_int_t)r->counted_earlier));
    set_new(root, "retries", json_integer((json_int_t)r->retries));
    set_new(root, "unsent", json_integer((json_int_t)r->unsent));
    set_new(root, "errors", errors_json(r));
    set_new(root, "connections_opened", json_integer((json_int_t)r->connects));
    set_new(root, "connect_failures", json_integer((json_int_t)r->connect_failures));
    set_new(root, "admin_errors", json_integer((json_int_t)rep->admin_errors));
    set_new(root, "achieved_rps", json_real(achieved_rps(rep)));
    uint64_t active_s = 0;
    double active = active_rps(rep, &active_s);
    set_new(root, "active_rps", json_real(active));
    set_new(root, "active_seconds", json_integer((json_int_t)active_s));
    set_new(root, "peak_rps", json_integer((json_int_t)loadreport_peak(rep)));
    set_new(root, "latency_ms", latency_json(&r->latency));
    set_new(root, "verify", verify_json(rep));
    json_t *th = json_array();
    for (size_t i = 0; th != NULL && i < rep->n_thresholds; i++) {
        const struct loadreport_threshold *x = &rep->thresholds[i];
        json_t *o = json_object();
        if (o == NULL)
            break;
        set_new(o, "threshold", json_string(x->t->text));
        set_new(o, "held", json_boolean(x->held));
        set_new(o, "value", x->measured ? json_real(x->t->metric == LOADTHRESHOLD_ERRORS ||
                                                            x->t->metric == LOADTHRESHOLD_ACKED
                                                        ? x->actual
                                                        : x->actual / 1000.0)
                                        : json_null());
        set_new(o, "unit", json_string(x->t->metric == LOADTHRESHOLD_ERRORS ||
                                               x->t->metric == LOADTHRESHOLD_ACKED
                                           ? "percent"
                                           : "ms"));
        json_array_append_new(th, o);
    }
    set_new(root, "thresholds", th);
    set_new(root, "series", series_json(rep));

    if (strcmp(path, "-") == 0) {
        ok = json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER |
                                          JSON_REAL_PRECISION(9)) == 0 &&
             fputc('\n', stdout) != EOF && fflush(stdout) == 0;
        if (!ok)
            snprintf(err, errlen, "--json -: cannot write to stdout: %s", strerror(errno));
        goto done;
    }
    size_t n = strlen(path) + 8;
    tmp = malloc(n);
    if (tmp == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    snprintf(tmp, n, "%s.tmp", path);
    if (json_dump_file(root, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) != 0) {
        snprintf(err, errlen, "--json %s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "--json %s: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    ok = true;

done:
    free(tmp);
    json_decref(root);
    return ok;
}
