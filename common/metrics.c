#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>

static const uint64_t bounds_us[METRICS_HIST_BOUNDS] = {
    10,     25,     50,      100,     250,     500,     1000,    2500,    5000,    10000,
    25000,  50000,  100000,  250000,  500000,  1000000, 2500000, 5000000, 10000000,
};

/* The same bounds as le labels, in seconds, written out once so that every
 * scrape prints identical label values (Prometheus matches them as text). */
static const char *const bounds_le[METRICS_HIST_BOUNDS] = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001",
    "0.0025",  "0.005",    "0.01",    "0.025",  "0.05",    "0.1",    "0.25",
    "0.5",     "1",        "2.5",     "5",      "10",
};

const char *metrics_type_name(enum metric_type type)
{
    switch (type) {
    case METRIC_COUNTER: return "counter";
    case METRIC_GAUGE: return "gauge";
    case METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

void metrics_describe(FILE *out, const struct metric_def *defs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s\t%s\t%s\n", defs[i].name, metrics_type_name(defs[i].type), defs[i].help);
}

uint64_t metrics_hist_bound_us(size_t i)
{
    return i < METRICS_HIST_BOUNDS ? bounds_us[i] : UINT64_MAX;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

void metrics_hist_add(struct metrics_hist *h, uint64_t usec)
{
    /* 19 bounds: a linear scan is as fast as a binary search here. */
    size_t i = 0;
    while (i < METRICS_HIST_BOUNDS && usec > bounds_us[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum_us = sat_add(h->sum_us, usec);
}

void metrics_hist_merge(struct metrics_hist *dst, const struct metrics_hist *src)
{
    for (size_t i = 0; i <= METRICS_HIST_BOUNDS; i++)
        dst->counts[i] = sat_add(dst->counts[i], src->counts[i]);
    dst->count = sat_add(dst->count, src->count);
    dst->sum_us = sat_add(dst->sum_us, src->sum_us);
}

uint64_t metrics_hist_quantile_us(const struct metrics_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (!(q > 0.0))
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    /* The smallest bucket whose cumulative count reaches ceil(q * count). */
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank == 0)
        rank = 1;
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_HIST_BOUNDS; i++) {
        cum += h->counts[i];
        if (cum >= rank)
            return bounds_us[i];
    }
    return UINT64_MAX;
}

/* HELP text escaping of the exposition format: backslash and newline. */
static void add_escaped_help(struct evbuffer *out, const char *s)
{
    for (;;) {
        size_t n = strcspn(s, "\\\n");
        evbuffer_add(out, s, n);
        s += n;
        if (*s == '\0')
            return;
        evbuffer_add(out, *s == '\\' ? "\\\\" : "\\n", 2);
        s++;
    }
}

void metrics_write_head(struct evbuffer *out, const struct metric_def *def)
{
    evbuffer_add_printf(out, "# HELP %s ", def->name);
    add_escaped_help(out, def->help);
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", def->name, metrics_type_name(def->type));
}

/* name[suffix]{labels[,extra]} */
static void add_series(struct evbuffer *out, const char *name, const char *suffix,
                       const char *labels, const char *extra)
{
    bool has_labels = labels != NULL && *labels != '\0';
    evbuffer_add_printf(out, "%s%s", name, suffix);
    if (has_labels || extra != NULL)
        evbuffer_add_printf(out, "{%s%s%s}", has_labels ? labels : "",
                            has_labels && extra != NULL ? "," : "", extra ? extra : "");
}

void metrics_write_u64(struct evbuffer *out, const struct metric_def *def, const char *labels,
                       uint64_t value)
{
    add_series(out, def->name, "", labels, NULL);
    evbuffer_add_printf(out, " %" PRIu64 "\n", value);
}

static void add_f64(struct evbuffer *out, double v)
{
    if (isnan(v))
        evbuffer_add_printf(out, " NaN\n");
    else if (isinf(v))
        evbuffer_add_printf(out, " %sInf\n", v > 0 ? "+" : "-");
    else {
        /* The shortest of 15 or 17 digits that reads back as the same
         * double: "0.001678", not "0.0016779999999999999". */
        char buf[40];
        snprintf(buf, sizeof(buf), "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof(buf), "%.17g", v);
        evbuffer_add_printf(out, " %s\n", buf);
    }
}

void metrics_write_f64(struct evbuffer *out, const struct metric_def *def, const char *labels,
                       double value)
{
    add_series(out, def->name, "", labels, NULL);
    add_f64(out, value);
}

void metrics_write_hist(struct evbuffer *out, const struct metric_def *def, const char *labels,
                        const struct metrics_hist *h)
{
    char le[32];
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_HIST_BOUNDS; i++) {
        cum += h->counts[i];
        snprintf(le, sizeof(le), "le=\"%s\"", bounds_le[i]);
        add_series(out, def->name, "_bucket", labels, le);
        evbuffer_add_printf(out, " %" PRIu64 "\n", cum);
    }
    /* +Inf is the total by definition: written from count, so a bucket
     * can never disagree with _count even if the sum of counts saturated. */
    add_series(out, def->name, "_bucket", labels, "le=\"+Inf\"");
    evbuffer_add_printf(out, " %" PRIu64 "\n", h->count);
    add_series(out, def->name, "_sum", labels, NULL);
    /* Whole and fractional seconds from integers: exact, no rounding. */
    evbuffer_add_printf(out, " %" PRIu64 ".%06" PRIu64 "\n", h->sum_us / 1000000u,
                        h->sum_us % 1000000u);
    add_series(out, def->name, "_count", labels, NULL);
    evbuffer_add_printf(out, " %" PRIu64 "\n", h->count);
}

void metrics_emit_u64(struct evbuffer *out, const struct metric_def *def, uint64_t value)
{
    metrics_write_head(out, def);
    metrics_write_u64(out, def, NULL, value);
}

void metrics_emit_f64(struct evbuffer *out, const struct metric_def *def, double value)
{
    metrics_write_head(out, def);
    metrics_write_f64(out, def, NULL, value);
}

void metrics_emit_hist(struct evbuffer *out, const struct metric_def *def,
                       const struct metrics_hist *h)
{
    metrics_write_head(out, def);
    metrics_write_hist(out, def, NULL, h);
}

/* ---- the process ---------------------------------------------------------- */

#define PROCESS_METRICS(X)                                                                      \
    X(PM_BUILD_INFO, "livetally_build_info", GAUGE,                                             \
      "Always 1: the version and the binary, as labels")                                        \
    X(PM_CPU, "process_cpu_seconds_total", COUNTER, "User and system CPU time spent")           \
    X(PM_RSS, "process_resident_memory_bytes", GAUGE, "Resident memory size")                   \
    X(PM_VSIZE, "process_virtual_memory_bytes", GAUGE, "Virtual memory size")                   \
    X(PM_OPEN_FDS, "process_open_fds", GAUGE, "Open file descriptors")                          \
    X(PM_MAX_FDS, "process_max_fds", GAUGE, "The limit of open file descriptors (RLIMIT_NOFILE)") \
    X(PM_START, "process_start_time_seconds", GAUGE, "Start time, seconds since the Unix epoch")

enum process_metric { PROCESS_METRICS(METRIC_ENUM) PM_COUNT };
static const struct metric_def process_metrics[] = {PROCESS_METRICS(METRIC_DEF)};

void metrics_describe_process(FILE *out)
{
    metrics_describe(out, process_metrics, PM_COUNT);
}

/* The fields of /proc/self/stat after the command name (which may hold
 * spaces and parentheses: the last ')' ends it); field 3 is fields[0]. */
static size_t proc_stat_fields(unsigned long long *fields, size_t max)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return 0;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p++;
    size_t n = 0;
    while (n < max) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '\n')
            break;
        char *end;
        fields[n++] = strtoull(p, &end, 10); /* the state letter reads as 0 */
        p = end;
        while (*p != ' ' && *p != '\0')
            p++;
    }
    return n;
}

/* Seconds since the epoch at boot (/proc/stat's btime); 0 when unknown. */
static unsigned long long boot_time_s(void)
{
    char line[256];
    unsigned long long btime = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    return btime;
}

static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

void metrics_write_process(struct evbuffer *out, const char *binary)
{
    const struct metric_def *m = process_metrics;
    char labels[128];
    snprintf(labels, sizeof(labels), "version=\"%s\",binary=\"%s\"", LIVETALLY_VERSION, binary);
    metrics_write_head(out, &m[PM_BUILD_INFO]);
    metrics_write_u64(out, &m[PM_BUILD_INFO], labels, 1);

    /* fields[i] is field i + 3 of proc(5): utime 14, stime 15, starttime
     * 22, vsize 23, rss 24 */
    unsigned long long fields[24];
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (proc_stat_fields(fields, 24) >= 22 && tick > 0 && page > 0) {
        metrics_emit_f64(out, &m[PM_CPU], (double)(fields[11] + fields[12]) / (double)tick);
        metrics_emit_u64(out, &m[PM_RSS], fields[21] * (unsigned long long)page);
        metrics_emit_u64(out, &m[PM_VSIZE], fields[20]);
        unsigned long long btime = boot_time_s();
        if (btime > 0)
            metrics_emit_f64(out, &m[PM_START], (double)btime + (double)fields[19] / (double)tick);
    }
    long fds = count_open_fds();
    if (fds >= 0)
        metrics_emit_u64(out, &m[PM_OPEN_FDS], (uint64_t)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        metrics_emit_u64(out, &m[PM_MAX_FDS], (uint64_t)rl.rlim_cur);
}
