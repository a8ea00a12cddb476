/*
 * Prometheus metrics shared by every binary: the definition convention, a
 * fixed-bucket latency histogram and the text-format writers (exposition
 * format 0.0.4).
 *
 * Each metric is defined once, in a module's X-macro list of
 * X(ID, "name", TYPE, "help") with TYPE one of COUNTER, GAUGE, HISTOGRAM:
 *
 *   #define FOO_METRICS(X)                                                   \
 *       X(FOO_REQUESTS, "livetally_foo_requests_total", COUNTER, "Requests") \
 *       X(FOO_LATENCY, "livetally_foo_latency_seconds", HISTOGRAM, "Latency")
 *   enum foo_metric { FOO_METRICS(METRIC_ENUM) FOO_METRIC_COUNT };
 *   static const struct metric_def foo_metrics[] = {FOO_METRICS(METRIC_DEF)};
 *
 * The enum indexes the table, the table feeds the writers below (so a name
 * or help text is never typed twice) and metrics_describe() prints it for
 * --describe-metrics.
 *
 * Writers take the module's own values: counters belong to one thread
 * (merge per-thread histograms with metrics_hist_merge before writing).
 */
#ifndef LT_METRICS_H
#define LT_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct evbuffer;

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_def {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in _total */
    enum metric_type type;
    const char *help; /* one line */
};

#define METRIC_ENUM(id, name, type, help) id,
#define METRIC_DEF(id, name, type, help) {name, METRIC_##type, help},

/* "counter", "gauge", "histogram". */
const char *metrics_type_name(enum metric_type type);

/* --describe-metrics: one "name<TAB>type<TAB>help" line per metric. */
void metrics_describe(FILE *out, const struct metric_def *defs, size_t n);

/* ---- latency histogram ---------------------------------------------------
 * Fixed bounds on a 1-2.5-5 series from 10 us to 10 s: fine enough for a
 * p99 read-out at every scale this service has (a cached reply, a store
 * round trip, an aggregation pass), and fixed so that histograms of
 * different threads and processes add up. Values are microseconds; the
 * output is in seconds, as Prometheus expects. */
#define METRICS_HIST_BOUNDS 19

struct metrics_hist {
    uint64_t counts[METRICS_HIST_BOUNDS + 1]; /* per bucket, not cumulative; last: +Inf */
    uint64_t count;
    uint64_t sum_us; /* saturates at UINT64_MAX instead of wrapping */
};

/* Upper bound of bucket i in microseconds (i < METRICS_HIST_BOUNDS). */
uint64_t metrics_hist_bound_us(size_t i);

void metrics_hist_add(struct metrics_hist *h, uint64_t usec);

/* dst += src (for totals over threads). */
void metrics_hist_merge(struct metrics_hist *dst, const struct metrics_hist *src);

/* Upper bound in microseconds of the bucket holding quantile q (0..1);
 * UINT64_MAX when it falls in +Inf, 0 when the histogram is empty. */
uint64_t metrics_hist_quantile_us(const struct metrics_hist *h, double q);

/* ---- text-format writers ------------------------------------------------
 * labels is the inside of the braces, e.g. "route=\"/v1/stats\",code=\"200\"",
 * or NULL for none; label values are the caller's constants (not escaped). */

/* # HELP and # TYPE lines of one metric family (once per family). */
void metrics_write_head(struct evbuffer *out, const struct metric_def *def);

/* One sample line. Doubles print exactly enough to round-trip; NaN and
 * infinities as Prometheus spells them. */
void metrics_write_u64(struct evbuffer *out, const struct metric_def *def, const char *labels,
                       uint64_t value);
void metrics_write_f64(struct evbuffer *out, const struct metric_def *def, const char *labels,
                       double value);

/* A histogram's _bucket (cumulative, le in seconds, +Inf last), _sum
 * (seconds) and _count lines. */
void metrics_write_hist(struct evbuffer *out, const struct metric_def *def, const char *labels,
                        const struct metrics_hist *h);

/* Head plus one unlabelled sample: the common case of a single series. */
void metrics_emit_u64(struct evbuffer *out, const struct metric_def *def, uint64_t value);
void metrics_emit_f64(struct evbuffer *out, const struct metric_def *def, double value);
void metrics_emit_hist(struct evbuffer *out, const struct metric_def *def,
                       const struct metrics_hist *h);

/* ---- the process -----------------------------------------------------------
 * Every binary's /metrics ends with livetally_build_info{version,binary} 1
 * and the process_* families that the Prometheus client libraries export
 * (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds), read from /proc/self as they read them, so
 * the usual dashboards and alerts work unchanged. A figure /proc does not
 * give is left out. */
void metrics_write_process(struct evbuffer *out, const char *binary);
void metrics_describe_process(FILE *out);

#endif
