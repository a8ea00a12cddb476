/*
 * livetally-aggregate: sums the shards every interval and publishes the
 * snapshot. Stateless and idempotent: running two is safe. See --help.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "agg_retire.h"
#include "aggregate.h"
#include "cli.h"
#include "eventfile.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pool_record.h"
#include "runner.h"
#include "store.h"
#include "util.h"

#define PROG "livetally-aggregate"

struct options {
    const char *event_path;
    const char *backend;
    const char *listen;         /* NULL: no HTTP */
    uint32_t interval_ms;
    bool once;
    bool describe_metrics;
    enum log_level log_level;
    const char *retire;         /* HOST:PORT, NULL: aggregate */
    uint32_t wait_s;
};

enum { OPT_EVENT, OPT_BACKEND, OPT_INTERVAL, OPT_LISTEN, OPT_ONCE, OPT_DESCRIBE_METRICS,
       OPT_LOG_LEVEL, OPT_RETIRE, OPT_WAIT };

static const struct cli_opt cli_opts[] = {
    {"event", "FILE", "the event file (required)", OPT_EVENT},
    {"backend", "URL", "counter store: memcached://H:P[,H:P...] (required)", OPT_BACKEND},
    {"interval", "MS", "aggregation period (default 1000)", OPT_INTERVAL},
    {"listen", "HOST:PORT", "serve GET /healthz and /metrics there (default: no HTTP)", OPT_LISTEN},
    {"once", NULL, "run one pass, publish, exit (0: published, 1: failed)", OPT_ONCE},
    {"describe-metrics", NULL, "list the aggregator's metrics (name, type, help) and exit", OPT_DESCRIBE_METRICS},
    {"log-level", "LEVEL", "error|warn|info|debug (default info)", OPT_LOG_LEVEL},
    {"retire", "HOST:PORT", "retire that node of the pool (it must be in --backend), fold its "
                            "counters, exit: 0 retired, 1 refused or failed, 3 an ingest still "
                            "writes an old epoch (restart it, run again)", OPT_RETIRE},
    {"wait", "SECONDS", "with --retire: look again for that long while exit 3 stands "
                        "(default 0)", OPT_WAIT},
};

static const char about[] =
    "Every interval: reads every counter of the event, sums the shards, checks\n"
    "that the breakdowns add up, and publishes the snapshot that\n"
    "livetally-dashboard serves. Counters are grow-only: one that reads lower\n"
    "than before is reported in the snapshot's \"warnings\" and kept.\n\n"
    "Getting smaller (README, \"Changing the pool\"): --retire HOST:PORT records an\n"
    "epoch without that node (only one added during the event), waits until no\n"
    "ingest writes in an earlier epoch, sums every counter of the earlier epochs\n"
    "into the new epoch's carry counters (set, not added: safe to rerun, safe to\n"
    "kill), and marks the fold. Then restart the aggregator and stop the node.\n\n"
    "Examples:\n"
    "  livetally-aggregate --event show.json --backend memcached://10.0.0.5:11211 --interval 1000\n"
    "  livetally-aggregate --event show.json --backend memcached://a:11211,b:11211,c:11211 \\\n"
    "      --retire c:11211 --wait 120\n";

static bool set_opt(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct options *o = ctx;
    switch (id) {
    case OPT_EVENT: o->event_path = val; return true;
    case OPT_BACKEND: return (o->backend = val, store_url_check(val, err, errlen));
    case OPT_INTERVAL: return cli_u32(val, 50, 3600000, &o->interval_ms, err, errlen);
    case OPT_LISTEN: return (o->listen = val, cli_hostport(val, err, errlen));
    case OPT_ONCE: o->once = true; return true;
    case OPT_RETIRE: return (o->retire = val, cli_hostport(val, err, errlen));
    case OPT_WAIT: return cli_u32(val, 0, 86400, &o->wait_s, err, errlen);
    case OPT_DESCRIBE_METRICS: o->describe_metrics = true; return true;
    case OPT_LOG_LEVEL:
        return log_parse_level(val, &o->log_level) ||
               (snprintf(err, errlen, "expected error, warn, info or debug"), false);
    }
    return false;
}

static int run_once(const struct eventfile *ef, struct store *store, const struct pool_view *pool)
{
    struct aggregator *agg = aggregator_create_pool(ef, pool);
    if (agg == NULL)
        return 1;
    enum store_status st = aggregator_pass(agg, store, util_wall_ms());
    struct aggregator_stats s;
    aggregator_get_stats(agg, &s);
    aggregator_free(agg);
    if (st != STORE_OK) {
        fprintf(stderr, PROG ": pass failed: %s\n", store_status_str(st));
        return 1;
    }
    log_info("published generation=%llu keys=%llu", (unsigned long long)s.generation,
             (unsigned long long)s.keys_read);
    return 0;
}

/* --retire (agg_retire.h). LIVETALLY_RETIRE_PAUSE_MS (tests only) pauses
 * the fold every AGG_RETIRE_CHUNK writes, so a test can kill it halfway. */
static int run_retire(const struct eventfile *ef, struct store *store, const struct options *o)
{
    struct agg_retire_config rc = {.node = o->retire, .settle_ms = POOL_WRITING_EVERY_MS + 1000};
    const char *pause = getenv("LIVETALLY_RETIRE_PAUSE_MS");
    if (pause != NULL)
        rc.pause_ms = (uint32_t)strtoul(pause, NULL, 10);
    char msg[1024];
    uint64_t until = util_mono_ms() + (uint64_t)o->wait_s * 1000;
    enum agg_retire_result r;
    for (;;) {
        r = agg_retire(ef, store, &rc, msg, sizeof(msg));
        if (r != AGG_RETIRE_WAIT || util_mono_ms() >= until)
            break;
        log_info("retire: %s (looking again)", msg);
        util_sleep_ms(2000);
    }
    fprintf(r == AGG_RETIRE_DONE ? stdout : stderr, PROG ": %s\n", msg);
    return (int)r;
}

struct app {
    struct event_base *base;
    struct agg_runner *runner;
    struct evhttp *http;     /* --listen, else NULL */
    bool stopping;           /* the last pass is running: /healthz 503 */
};

/* The aggregator's own health and metrics, for a monitor: /healthz turns 503
 * once it is stopping. */
static void on_http(struct evhttp_request *req, void *arg)
{
    struct app *app = arg;
    char path[64];
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (http_refuse_transfer_coding(req))
        return;
    if (!http_path(req, path, sizeof(path)) ||
        (strcmp(path, "/healthz") != 0 && strcmp(path, "/metrics") != 0)) {
        http_reply_error(req, 404, "not_found", NULL, 0);
        return;
    }
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        http_reply_error(req, 405, "method_not_allowed", NULL, 0);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        http_reply_health(req, !app->stopping);
        return;
    }
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        http_reply_error(req, 500, "internal_error", NULL, 0);
        return;
    }
    agg_runner_write_metrics(app->runner, out);
    metrics_write_process(out, "livetally-aggregate");
    http_reply_buffer(req, 200, HTTP_PROMETHEUS_TYPE, out);
    evbuffer_free(out);
}

static void on_final(void *arg)
{
    struct app *app = arg;
    event_base_loopexit(app->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    log_info("signal %d: one last pass, then exit", (int)sig);
    app->stopping = true;
    agg_runner_final_pass(app->runner, on_final, app);
}

int main(int argc, char **argv)
{
    struct options o = {.interval_ms = 1000, .log_level = LOG_INFO};
    enum cli_result r = cli_parse(argc, argv, PROG, "--event FILE --backend URL [options]", about,
                                  cli_opts, LT_ARRAY_LEN(cli_opts), set_opt, &o);
    if (r != CLI_CONTINUE)
        return r == CLI_EXIT_OK ? 0 : 2;
    if (o.describe_metrics) {
        /* The same metrics livetally serves for its in-process aggregator. */
        agg_runner_describe_metrics(stdout);
        metrics_describe_process(stdout);
        return 0;
    }
    if (o.event_path == NULL)
        return cli_usage_error(PROG, "--event FILE is required"), 2;
    if (o.backend == NULL)
        return cli_usage_error(PROG, "--backend URL is required"), 2;
    log_init("aggregate", o.log_level);
    signal(SIGPIPE, SIG_IGN);

    int rc = 2;
    char err[512];
    struct eventfile ef;
    memset(&ef, 0, sizeof(ef));
    struct store *store = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    struct app app = {0};

    if (!eventfile_load(o.event_path, &ef, err, sizeof(err))) {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }
    if ((store = store_open(o.backend, err, sizeof(err))) == NULL) {
        fprintf(stderr, PROG ": --backend %s: %s\n", o.backend, err);
        goto done;
    }
    if (o.retire != NULL) {
        rc = run_retire(&ef, store, &o);
        goto done;
    }
    struct pool_view pool;
    if (!pool_record_join(store, ef.name, ef.ttl_s, &pool, err, sizeof(err))) {
        fprintf(stderr, PROG ": --backend %s: %s\n", o.backend, err);
        goto done;
    }
    if (o.once) {
        rc = run_once(&ef, store, &pool);
        goto done;
    }
    rc = 1;
    if ((app.base = event_base_new()) == NULL)
        goto done;
    app.runner = agg_runner_start(app.base, &ef, store, &pool, o.interval_ms);
    store = NULL;
    if (app.runner == NULL)
        goto done;
    sigterm = evsignal_new(app.base, SIGTERM, on_signal, &app);
    sigint = evsignal_new(app.base, SIGINT, on_signal, &app);
    if (!sigterm || !sigint || event_add(sigterm, NULL) || event_add(sigint, NULL))
        goto done;
    if (o.listen != NULL) {
        if ((app.http = http_listen(app.base, o.listen, 10, err, sizeof(err))) == NULL) {
            fprintf(stderr, PROG ": %s\n", err);
            goto done;
        }
        evhttp_set_gencb(app.http, on_http, &app);
    }
    log_info("aggregating event=%s backend=%s interval_ms=%u", ef.name, o.backend, o.interval_ms);
    event_base_dispatch(app.base);
    rc = 0;

done:
    if (app.http)
        evhttp_free(app.http);
    agg_runner_stop(app.runner);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (app.base)
        event_base_free(app.base);
    store_close(store);
    eventfile_free(&ef);
    return rc;
}
