/*
 * livetally: ingest, aggregator and dashboard in one process, on the
 * embedded store by default. What a new user runs first. See --help.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "cli.h"
#include "dashboard.h"
#include "eventfile.h"
#include "http.h"
#include "server.h"
#include "log.h"
#include "metrics.h"
#include "runner.h"
#include "store.h"
#include "util.h"

#define PROG "livetally"

struct options {
    const char *event_path;
    const char *backend;
    const char *token_path;
    uint32_t interval_ms;
    uint32_t drain_delay_s;
    uint32_t drain_timeout_s;
    uint32_t max_streams;
    uint32_t heartbeat_ms;
    bool describe_metrics;
    enum log_level log_level;
    struct ingest_server_config sc;
};

enum { OPT_EVENT, OPT_BACKEND, OPT_LISTEN, OPT_TOKEN, OPT_INTERVAL, OPT_THREADS, OPT_FLUSH_MS, OPT_BATCH_INTERVAL, OPT_NO_COALESCE,
       OPT_DEADLINE_MS, OPT_DRAIN_DELAY, OPT_DRAIN_TIMEOUT, OPT_HTTP_TIMEOUT, OPT_MAX_STREAMS, OPT_HEARTBEAT,
       OPT_DESCRIBE_METRICS, OPT_LOG_LEVEL, OPT_TRUSTED_PROXY };

static const struct cli_opt cli_opts[] = {
    {"event", "FILE", "the event file (required)", OPT_EVENT},
    {"backend", "URL", "counter store: memory: (default), memcached://H:P[,H:P...]", OPT_BACKEND},
    {"listen", "HOST:PORT", "HTTP address for both APIs and the page (default 127.0.0.1:8080)", OPT_LISTEN},
    {"admin-token-file", "FILE", "bearer token for the admin API (admin disabled without)", OPT_TOKEN},
    {"trusted-proxy", "ADDR[,ADDR]", "load balancers whose last X-Forwarded-For header names the client: admin token guesses are slowed per that client, not per the proxy (numeric addresses; default none)", OPT_TRUSTED_PROXY},
    {"interval", "MS", "aggregation period (default 1000)", OPT_INTERVAL},
    {"threads", "N", "event loop threads taking answers (default: the number of cores)", OPT_THREADS},
    {"flush-ms", "MS", "how long a batch gathers answers while the store is idle (default 0: at once)", OPT_FLUSH_MS},
    {"batch-interval-us", "US", "under load, at least this long between two batches of a thread: bigger batches, fewer store operations (default 1000; 0: none)", OPT_BATCH_INTERVAL},
    {"no-coalesce", NULL, "write every answer's increments as they came (benchmarks only)", OPT_NO_COALESCE},
    {"deadline-ms", "MS", "retry an unconfirmed batch this long before 503 (default 2000)", OPT_DEADLINE_MS},
    {"drain-delay", "S", "on SIGTERM, answer /healthz 503 this long while still taking answers, so the load balancer takes the node out first; above its check interval x fall count (default 2; 0: drain at once)", OPT_DRAIN_DELAY},
    {"drain-timeout", "S", "then wait at most this long for the store (default 30)", OPT_DRAIN_TIMEOUT},
    {"http-timeout", "S", "drop a client that is idle, or slow to send a request, this long (default 10)", OPT_HTTP_TIMEOUT},
    {"max-streams", "N", "Server-Sent Events clients at once; past it 503 (default 20000, ~4.6 KiB each)", OPT_MAX_STREAMS},
    {"heartbeat-ms", "MS", "comment line on every stream this often (default 15000)", OPT_HEARTBEAT},
    {"describe-metrics", NULL, "list the /metrics metrics (name, type, help) and exit", OPT_DESCRIBE_METRICS},
    {"log-level", "LEVEL", "error|warn|info|debug (default info)", OPT_LOG_LEVEL},
};

static const char about[] =
    "Serves on one address:\n"
    "  POST /v1/answers                       answers (202 once counted)\n"
    "  POST /v1/admin/questions/{id}/open     admin (Authorization: Bearer TOKEN)\n"
    "  POST /v1/admin/questions/{id}/close\n"
    "  GET  /v1/stats, /v1/stats/questions/{id}   the latest statistics (JSON)\n"
    "  GET  /v1/stats/stream                  Server-Sent Events, one per new snapshot\n"
    "  GET  /v1/stats.csv                     the report (CSV)\n"
    "  GET  /                                 the live page (/?screen=1: big screen)\n"
    "  GET  /healthz, /metrics\n"
    "SIGTERM/SIGINT: /healthz turns 503 at once while answers are still taken for\n"
    "--drain-delay; then stop taking answers, write everything pending, publish a\n"
    "last snapshot, exit. A second signal during the delay drains at once.\n\n"
    "Example:\n"
    "  echo secret > admin.token\n"
    "  livetally --event examples/1d-live.json --admin-token-file admin.token\n";

static bool set_opt(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct options *o = ctx;
    switch (id) {
    case OPT_EVENT: o->event_path = val; return true;
    case OPT_BACKEND: return (o->backend = val, store_url_check(val, err, errlen));
    case OPT_LISTEN: return (o->sc.listen = val, cli_hostport(val, err, errlen));
    case OPT_TOKEN: o->token_path = val; return true;
    case OPT_TRUSTED_PROXY: return ingest_parse_trusted_proxies(val, &o->sc.ic, err, errlen);
    case OPT_INTERVAL: return cli_u32(val, 50, 3600000, &o->interval_ms, err, errlen);
    case OPT_THREADS: return cli_u32(val, 1, 64, &o->sc.threads, err, errlen);
    case OPT_FLUSH_MS: return cli_u32(val, 0, 1000, &o->sc.ic.commit.flush_ms, err, errlen);
    case OPT_BATCH_INTERVAL:
        return cli_u32(val, 0, 1000000, &o->sc.ic.commit.batch_interval_us, err, errlen);
    case OPT_NO_COALESCE: o->sc.ic.commit.no_coalesce = true; return true;
    case OPT_DEADLINE_MS:
        return cli_u32(val, 10, 600000, &o->sc.ic.commit.deadline_ms, err, errlen);
    case OPT_DRAIN_DELAY: return cli_u32(val, 0, 600, &o->drain_delay_s, err, errlen);
    case OPT_DRAIN_TIMEOUT: return cli_u32(val, 1, 3600, &o->drain_timeout_s, err, errlen);
    case OPT_HTTP_TIMEOUT: return cli_u32(val, 1, 3600, &o->sc.http_timeout_s, err, errlen);
    case OPT_MAX_STREAMS: return cli_u32(val, 1, 100000, &o->max_streams, err, errlen);
    case OPT_HEARTBEAT: return cli_u32(val, 100, 600000, &o->heartbeat_ms, err, errlen);
    case OPT_DESCRIBE_METRICS: o->describe_metrics = true; return true;
    case OPT_LOG_LEVEL:
        return log_parse_level(val, &o->log_level) ||
               (snprintf(err, errlen, "expected error, warn, info or debug"), false);
    }
    return false;
}

struct app {
    struct event_base *base;
    struct ingest_server *server;
    struct dashboard *dashboard;
    struct agg_runner *runner;
};

/* What the ingest server does not serve itself: the dashboard. */
static bool route_extra(struct evhttp_request *req, const char *path, void *arg)
{
    struct app *app = arg;
    return dashboard_handle(app->dashboard, req, path);
}

static void metrics_extra(struct evbuffer *out, void *arg)
{
    struct app *app = arg;
    dashboard_write_metrics(app->dashboard, out);
    agg_runner_write_metrics(app->runner, out);
}

/* The aggregator is in this process: streams hear of a snapshot as soon as
 * it is published, not at the dashboard's next poll. */
static void on_published(void *arg)
{
    struct app *app = arg;
    dashboard_poll_now(app->dashboard);
}

/* After the drain: one more aggregation pass, so the last snapshot counts
 * every acknowledged answer. */
static void final_snapshot(void *arg, void (*finish)(void *), void *finish_arg)
{
    struct app *app = arg;
    agg_runner_final_pass(app->runner, finish, finish_arg);
}

int main(int argc, char **argv)
{
    struct options o = {
        .backend = "memory:",
        .interval_ms = 1000,
        .drain_delay_s = 2, .drain_timeout_s = 30,
        .max_streams = 20000,
        .heartbeat_ms = 15000,
        .log_level = LOG_INFO,
    };
    ingest_server_defaults(&o.sc);
    o.sc.binary = "livetally";
    enum cli_result r = cli_parse(argc, argv, PROG, "--event FILE [options]", about, cli_opts,
                                  LT_ARRAY_LEN(cli_opts), set_opt, &o);
    if (r != CLI_CONTINUE)
        return r == CLI_EXIT_OK ? 0 : 2;
    if (o.describe_metrics) {
        ingest_describe_metrics(stdout);
        dashboard_describe_metrics(stdout);
        agg_runner_describe_metrics(stdout);
        metrics_describe_process(stdout);
        return 0;
    }
    if (o.event_path == NULL)
        return cli_usage_error(PROG, "--event FILE is required"), 2;
    log_init("livetally", o.log_level);
    ingest_server_hold_signals();
    signal(SIGPIPE, SIG_IGN);
    util_raise_nofile();

    int rc = 2;
    char err[512];
    struct eventfile ef;
    memset(&ef, 0, sizeof(ef));
    char *token = NULL;
    struct store *store = NULL;
    struct app app = {0};

    if (!ingest_server_load(PROG, o.event_path, o.token_path, o.backend, &o.sc, &ef, &token,
                            &store))
        goto done;
    rc = 1;
    if ((app.base = event_base_new()) == NULL)
        goto done;
    /* Each part gets its own handle: they run on their own threads, and on
     * memory: they share one table. */
    struct store *dash_store = store_clone(store);
    struct store *agg_store = store_clone(store);
    struct dashboard_config dc = {.poll_ms = o.interval_ms / 4 ? o.interval_ms / 4 : 1,
                                  .interval_ms = o.interval_ms,
                                  .heartbeat_ms = o.heartbeat_ms,
                                  .max_streams = o.max_streams,
                                  .stream_timeout_s = o.sc.http_timeout_s};
    app.runner = agg_runner_start(app.base, &ef, agg_store, &o.sc.pool, o.interval_ms);
    app.dashboard = dashboard_create(app.base, &ef, dash_store, &dc, err, sizeof(err));
    if (app.runner == NULL || app.dashboard == NULL) {
        fprintf(stderr, PROG ": %s\n", app.runner ? err : "cannot start the aggregator");
        goto done;
    }
    agg_runner_on_publish(app.runner, on_published, &app);
    struct ingest_server_extra extra = {.route = route_extra, .metrics = metrics_extra, .arg = &app};
    app.server = ingest_server_start(app.base, &ef, store, &o.sc, &extra, err, sizeof(err));
    store = NULL;
    if (app.server == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }
    log_info("listening addr=%s threads=%u event=%s backend=%s admin=%s page=http://%s/",
             o.sc.listen, o.sc.threads, ef.name, o.backend, token ? "on" : "off", o.sc.listen);
    rc = ingest_server_run(app.server, app.base, o.drain_delay_s * 1000, o.drain_timeout_s,
                           final_snapshot, &app);

done:
    /* The dashboard closes its streams before the server frees their
     * connections. Stopping the runner runs the end of a pass still out:
     * that must not tell the freed dashboard of its snapshot (told of
     * nothing more first), and a final pass's end may still call into the
     * server (stopped before it is freed). */
    if (app.runner)
        agg_runner_on_publish(app.runner, NULL, NULL);
    if (app.dashboard)
        dashboard_free(app.dashboard);
    if (app.runner)
        agg_runner_stop(app.runner);
    ingest_server_free(app.server);
    if (app.base)
        event_base_free(app.base);
    store_close(store);
    free(token);
    eventfile_free(&ef);
    return rc;
}
