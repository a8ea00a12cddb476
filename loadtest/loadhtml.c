/*
 * The HTML report (loadhtml.h). The plots are drawn here, a few polylines
 * and bars with axes: Debian's plotting tool (gnuplot) is a program, not a
 * library, and an SVG written by hand needs nothing at the reader's end.
 */
#include "loadhtml.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loadhist.h"
#include "util.h"

#define W 760.0  /* a plot's drawing area, in SVG units */
#define H 220.0
#define ML 64.0  /* margins: left (the y labels), right, top, bottom */
#define MR 16.0
#define MT 28.0
#define MB 36.0
#define HIST_BINS 40

static void esc(FILE *out, const char *s)
{
    for (; s != NULL && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&#39;", out); break;
        default: fputc(*s, out);
        }
    }
}

/* A round step for about 5 ticks up to max. */
static double nice_step(double max)
{
    if (max <= 0)
        return 1;
    double raw = max / 5.0, mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void fmt_num(char *buf, size_t len, double v)
{
    if (v >= 1e6)
        snprintf(buf, len, "%gM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, len, "%gk", v / 1e3);
    else
        snprintf(buf, len, "%g", v);
}

struct line {
    const char *name;
    const char *color;
    const double *y; /* n points */
};

/* The frame, the y grid up to ymax (rounded up to a tick) and the x ticks
 * of a plot whose x runs from 0 to xmax; returns the y scale's top. */
static double axes(FILE *out, const char *title, const char *xlabel, const char *ylabel,
                   double xmax, double ymax, bool x_is_log_ms)
{
    double step = nice_step(ymax);
    double top = ceil(ymax / step) * step;
    if (top <= 0)
        top = step;
    fprintf(out, "<svg class=\"plot\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                 "role=\"img\" aria-label=\"",
            ML + W + MR, MT + H + MB, ML + W + MR, MT + H + MB);
    esc(out, title);
    fputs("\">\n<title>", out);
    esc(out, title);
    fprintf(out, "</title>\n<text x=\"%.0f\" y=\"18\" class=\"t\">", ML);
    esc(out, title);
    fprintf(out, "</text>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
                 "fill=\"none\" stroke=\"#999\"/>\n",
            ML, MT, W, H);
    for (double v = 0; v <= top + step / 2; v += step) {
        double y = MT + H - v / top * H;
        char num[32];
        fmt_num(num, sizeof(num), v);
        fprintf(out, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                     "<text x=\"%.0f\" y=\"%.1f\" class=\"yl\">%s</text>\n",
                ML, ML + W, y, y, ML - 6, y + 4, num);
    }
    if (x_is_log_ms) {
        /* decades of milliseconds, xmax of them from 0.01 ms */
        static const char *const decade[] = {"0.01 ms", "0.1 ms", "1 ms", "10 ms",
                                             "100 ms", "1 s", "10 s"};
        for (int d = 0; d <= (int)xmax && d < 7; d++)
            fprintf(out, "<text x=\"%.1f\" y=\"%.0f\" class=\"xl\">%s</text>\n",
                    ML + (double)d / xmax * W - (d == 6 ? 12 : 0), MT + H + 16, decade[d]);
    } else {
        double xs = nice_step(xmax);
        for (double v = 0; v <= xmax + xs / 2; v += xs)
            fprintf(out, "<text x=\"%.1f\" y=\"%.0f\" class=\"xl\">%g</text>\n",
                    ML + (xmax > 0 ? v / xmax : 0) * W, MT + H + 16, v);
    }
    fprintf(out, "<text x=\"%.0f\" y=\"%.0f\" class=\"xl\">", ML + W / 2, MT + H + 32);
    esc(out, xlabel);
    fprintf(out, "</text><text x=\"12\" y=\"%.0f\" class=\"yl\" transform=\"rotate(-90 12 %.0f)\">",
            MT + H / 2, MT + H / 2);
    esc(out, ylabel);
    fputs("</text>\n", out);
    return top;
}

/* Lines over the seconds x[0..n). */
static void line_plot(FILE *out, const char *title, const char *ylabel, const double *x,
                      size_t n, const struct line *lines, size_t n_lines)
{
    double xmax = n > 0 ? x[n - 1] : 1, ymax = 0;
    for (size_t l = 0; l < n_lines; l++)
        for (size_t i = 0; i < n; i++)
            if (lines[l].y[i] > ymax)
                ymax = lines[l].y[i];
    if (xmax <= 0)
        xmax = 1;
    double top = axes(out, title, "seconds since the start", ylabel, xmax, ymax, false);
    for (size_t l = 0; l < n_lines; l++) {
        fprintf(out, "<polyline class=\"series\" data-name=\"%s\" fill=\"none\" stroke=\"%s\" "
                     "stroke-width=\"1.5\" points=\"",
                lines[l].name, lines[l].color);
        for (size_t i = 0; i < n; i++)
            fprintf(out, "%s%.1f,%.1f", i ? " " : "", ML + x[i] / xmax * W,
                    MT + H - lines[l].y[i] / top * H);
        fputs("\"/>\n", out);
    }
    /* the legend, right-aligned above the frame */
    double lx = ML + W;
    for (size_t l = n_lines; l-- > 0;) {
        fprintf(out, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\" class=\"lg\">%s</text>\n", lx,
                MT - 8, lines[l].color, lines[l].name);
        lx -= 8.0 * (double)strlen(lines[l].name) + 20;
    }
    fputs("</svg>\n", out);
}

/* The latency distribution: replies per bin of log-spaced latency. */
static void histogram_plot(FILE *out, const struct loadhist *h)
{
    uint64_t bins[HIST_BINS] = {0};
    /* 0.01 ms .. 10 s: 6 decades */
    const double decades = 6.0, lo_us = 10.0;
    for (uint32_t i = 0; i < h->counts_len; i++) {
        if (h->counts[i] == 0)
            continue;
        double v = (double)loadhist_highest_at(h, i);
        double pos = v <= lo_us ? 0 : log10(v / lo_us) / decades;
        size_t b = pos >= 1 ? HIST_BINS - 1 : (size_t)(pos * HIST_BINS);
        bins[b] += h->counts[i];
    }
    uint64_t most = 0;
    for (size_t b = 0; b < HIST_BINS; b++)
        if (bins[b] > most)
            most = bins[b];
    double top = axes(out, "Latency distribution", "latency (log scale)", "replies",
                      decades, (double)most, true);
    double bw = W / HIST_BINS;
    for (size_t b = 0; b < HIST_BINS; b++) {
        if (bins[b] == 0)
            continue;
        double bh = (double)bins[b] / top * H;
        double from = lo_us * pow(10.0, decades * (double)b / HIST_BINS) / 1000.0;
        double to = lo_us * pow(10.0, decades * (double)(b + 1) / HIST_BINS) / 1000.0;
        fprintf(out, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                     "fill=\"#4a7ab7\"><title>%.3g-%.3g ms: %" PRIu64 "</title></rect>\n",
                ML + (double)b * bw + 1, MT + H - bh, bw - 2, bh, from, to, bins[b]);
    }
    fputs("</svg>\n", out);
}

static void row(FILE *out, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void row(FILE *out, const char *name, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fputs("<tr><th>", out);
    esc(out, name);
    fputs("</th><td>", out);
    esc(out, buf);
    fputs("</td></tr>\n", out);
}

static const char *verify_text(enum loadreport_verify v)
{
    switch (v) {
    case LOADREPORT_VERIFY_PASSED: return "passed";
    case LOADREPORT_VERIFY_FAILED: return "FAILED";
    case LOADREPORT_VERIFY_SKIPPED: return "skipped";
    default: return "not asked (--verify)";
    }
}

static void summary(FILE *out, const struct loadreport *rep)
{
    const struct loadengine_result *r = rep->r;
    const struct loadhist *h = &r->latency;
    fputs("<table class=\"summary\">\n", out);
    row(out, "mode", "%s", rep->mode);
    row(out, "target", "%s", rep->target);
    row(out, "shape", "%s", rep->shape);
    row(out, "elapsed", "%.1f s%s", rep->elapsed_s, rep->interrupted ? " (interrupted)" : "");
    row(out, "sent", "%" PRIu64, r->sent);
    row(out, "acknowledged (202)", "%" PRIu64, r->acked);
    row(out, "errors", "%" PRIu64 " (%" PRIu64 " lost with their connection: maybe counted)",
        r->errors, r->indeterminate);
    row(out, "unsent", "%" PRIu64, r->unsent);
    row(out, "replies/s", "%.0f over the run", rep->elapsed_s > 0
                                                 ? (double)r->completed / rep->elapsed_s
                                                 : 0.0);
    row(out, "latency", "p50 %.2f  p75 %.2f  p90 %.2f  p95 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms",
        loadhist_percentile(h, 50) / 1000.0, loadhist_percentile(h, 75) / 1000.0,
        loadhist_percentile(h, 90) / 1000.0, loadhist_percentile(h, 95) / 1000.0,
        loadhist_percentile(h, 99) / 1000.0, loadhist_percentile(h, 99.9) / 1000.0,
        h->total ? (double)h->max / 1000.0 : 0.0);
    row(out, "verify", "%s", verify_text(rep->verify));
    for (size_t i = 0; i < rep->n_thresholds; i++)
        row(out, "threshold", "%s: %s", rep->thresholds[i].t->text,
            rep->thresholds[i].held ? "held" : "FAILED");
    fputs("</table>\n", out);
    if (r->errs.n > 0) {
        fputs("<table class=\"errors\"><tr><th>status</th><th>error</th><th>count</th></tr>\n", out);
        for (uint32_t i = 0; i < r->errs.n; i++) {
            const struct loadengine_err *e = &r->errs.e[i];
            fprintf(out, "<tr><td>%d</td><td>", e->status);
            esc(out, e->code[0] ? e->code : "(none)");
            fprintf(out, "</td><td>%" PRIu64 "</td></tr>\n", e->count);
        }
        fputs("</table>\n", out);
    }
}

bool loadhtml_fprint(FILE *out, const struct loadreport *rep)
{
    size_t n = rep->n_series;
    double *buf = calloc(n ? n * 7 : 1, sizeof(*buf));
    if (buf == NULL)
        return false;
    double *x = buf, *acked = buf + n, *errors = buf + 2 * n, *p50 = buf + 3 * n,
           *p90 = buf + 4 * n, *p99 = buf + 5 * n, *p999 = buf + 6 * n;
    for (size_t i = 0; i < n; i++) {
        const struct loadreport_second *s = &rep->series[i];
        x[i] = s->t;
        acked[i] = (double)s->acked;
        errors[i] = (double)s->errors;
        p50[i] = (double)s->p50_us / 1000.0;
        p90[i] = (double)s->p90_us / 1000.0;
        p99[i] = (double)s->p99_us / 1000.0;
        p999[i] = (double)s->p999_us / 1000.0;
    }
    char started[32];
    util_format_iso8601(rep->started_wall_ms, started, sizeof(started));
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<title>livetally-loadtest report</title>\n<style>\n"
          "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:860px}\n"
          "table{border-collapse:collapse;margin:12px 0}th,td{text-align:left;padding:2px 12px 2px 0}\n"
          "svg.plot{display:block;margin:18px 0;max-width:100%;height:auto}\n"
          ".t{font-weight:600}.yl{text-anchor:end;font-size:11px}.xl{text-anchor:middle;font-size:11px}\n"
          ".lg{font-size:12px;text-anchor:end}\n</style></head><body>\n<h1>livetally-loadtest report</h1>\n<p>",
          out);
    esc(out, started);
    fputs("</p>\n", out);
    summary(out, rep);
    struct line rate[] = {{"acknowledged", "#2a8a3e", acked}, {"errors", "#c0392b", errors}};
    line_plot(out, "Answers per second", "per second", x, n, rate, 2);
    struct line lat[] = {{"p50", "#4a7ab7", p50},
                         {"p90", "#8e6bb8", p90},
                         {"p99", "#e08a1e", p99},
                         {"p99.9", "#c0392b", p999}};
    line_plot(out, "Latency per second", "ms", x, n, lat, 4);
    histogram_plot(out, &rep->r->latency);
    fputs("</body></html>\n", out);
    free(buf);
    return !ferror(out);
}

bool loadhtml_write(const char *path, const struct loadreport *rep, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0) {
        if (!loadhtml_fprint(stdout, rep) || fflush(stdout) != 0) {
            snprintf(err, errlen, "--report -: cannot write to stdout: %s", strerror(errno));
            return false;
        }
        return true;
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "--report: path too long");
        return false;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errlen, "--report %s: %s", path, strerror(errno));
        return false;
    }
    bool ok = loadhtml_fprint(f, rep);
    if (fclose(f) != 0)
        ok = false;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "--report %s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return false;
    }
    return true;
}
