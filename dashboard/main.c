/*
 * livetally-dashboard: serves the latest statistics from the store. See --help.
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
#include "log.h"
#include "metrics.h"
#include "pool_record.h"
#include "store.h"
#include "util.h"

#define PROG "livetally-dashboard"

struct options {
    const char *event_path;
    const char *backend;
    const char *listen;
    uint32_t interval_ms;
    uint32_t http_timeout_s;
    uint32_t max_streams;
    uint32_t heartbeat_ms;
    bool describe_metrics;
    enum log_level log_level;
};

enum { OPT_EVENT, OPT_BACKEND, OPT_LISTEN, OPT_INTERVAL, OPT_HTTP_TIMEOUT, OPT_MAX_STREAMS,
       OPT_HEARTBEAT, OPT_DESCRIBE_METRICS, OPT_LOG_LEVEL };

static const struct cli_opt cli_opts[] = {
    {"event", "FILE", "the event file (required)", OPT_EVENT},
    {"backend", "URL", "counter store: memcached://H:P[,H:P...] (required)", OPT_BACKEND},
    {"listen", "HOST:PORT", "HTTP listen address (default 127.0.0.1:8081)", OPT_LISTEN},
    {"interval", "MS", "the aggregation period; the store is polled 4 times as often (default 1000)", OPT_INTERVAL},
    {"http-timeout", "S", "drop a client idle or slow for this long (default 10)", OPT_HTTP_TIMEOUT},
    {"max-streams", "N", "Server-Sent Events clients at once; past it 503 (default 20000, ~4.6 KiB each)", OPT_MAX_STREAMS},
    {"heartbeat-ms", "MS", "comment line on every stream this often (default 15000)", OPT_HEARTBEAT},
    {"describe-metrics", NULL, "list the /metrics metrics (name, type, help) and exit", OPT_DESCRIBE_METRICS},
    {"log-level", "LEVEL", "error|warn|info|debug (default info)", OPT_LOG_LEVEL},
};

static const char about[] =
    "GET /v1/stats                 the latest snapshot (503 no_snapshot_yet before the first)\n"
    "GET /v1/stats/questions/{id}  one question (404 unknown_question)\n"
    "GET /v1/stats/stream          Server-Sent Events: one `stats` event per new snapshot\n"
    "GET /v1/stats.csv             the report: per question, by age, country and option\n"
    "GET /v1/dashboard/config      what the page needs: interval_ms, stale_after_ms, server time\n"
    "GET /                         the live page (/?screen=1: big screen)\n"
    "GET /healthz, GET /metrics\n\n"
    "Example:\n"
    "  livetally-dashboard --event show.json --backend memcached://10.0.0.5:11211 --listen 0.0.0.0:8081\n";

static bool set_opt(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct options *o = ctx;
    switch (id) {
    case OPT_EVENT: o->event_path = val; return true;
    case OPT_BACKEND: return (o->backend = val, store_url_check(val, err, errlen));
    case OPT_LISTEN: return (o->listen = val, cli_hostport(val, err, errlen));
    case OPT_INTERVAL: return cli_u32(val, 50, 3600000, &o->interval_ms, err, errlen);
    case OPT_HTTP_TIMEOUT: return cli_u32(val, 1, 3600, &o->http_timeout_s, err, errlen);
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
    struct dashboard *dashboard;
};

static void on_request(struct evhttp_request *req, void *arg)
{
    struct app *app = arg;
    uint64_t t0 = util_mono_us();
    char path[512];
    if (http_refuse_transfer_coding(req)) {
        dashboard_account(app->dashboard, "", 501, t0);
        return;
    }
    if (!http_path(req, path, sizeof(path))) {
        http_reply_error(req, 404, "not_found", NULL, 0);
        dashboard_account(app->dashboard, "", 404, t0);
        return;
    }
    if (dashboard_handle(app->dashboard, req, path))
        return;
    if (strcmp(path, "/healthz") == 0) {
        char body[160];
        int code = dashboard_health(app->dashboard, body, sizeof(body));
        http_reply_json(req, code, body, strlen(body));
        dashboard_account(app->dashboard, path, code, t0);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            http_reply_error(req, 503, "overloaded", NULL, 1);
            dashboard_account(app->dashboard, path, 503, t0);
            return;
        }
        /* Counted before writing, so the scrape includes itself. */
        dashboard_account(app->dashboard, path, 200, t0);
        dashboard_write_metrics(app->dashboard, out);
        metrics_write_process(out, "livetally-dashboard");
        http_reply_buffer(req, 200, HTTP_PROMETHEUS_TYPE, out);
        evbuffer_free(out);
        return;
    }
    http_reply_error(req, 404, "not_found", NULL, 0);
    dashboard_account(app->dashboard, path, 404, t0);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    log_info("signal %d: exiting", (int)sig);
    event_base_loopexit(app->base, NULL);
}

int main(int argc, char **argv)
{
    struct options o = {.listen = "127.0.0.1:8081", .interval_ms = 1000, .http_timeout_s = 10,
                        .max_streams = 20000, .heartbeat_ms = 15000, .log_level = LOG_INFO};
    enum cli_result r = cli_parse(argc, argv, PROG, "--event FILE --backend URL [options]", about,
                                  cli_opts, LT_ARRAY_LEN(cli_opts), set_opt, &o);
    if (r != CLI_CONTINUE)
        return r == CLI_EXIT_OK ? 0 : 2;
    if (o.describe_metrics) {
        dashboard_describe_metrics(stdout);
        metrics_describe_process(stdout);
        return 0;
    }
    if (o.event_path == NULL)
        return cli_usage_error(PROG, "--event FILE is required"), 2;
    if (o.backend == NULL)
        return cli_usage_error(PROG, "--backend URL is required"), 2;
    log_init("dashboard", o.log_level);
    signal(SIGPIPE, SIG_IGN);

    int rc = 2;
    char err[512];
    struct eventfile ef;
    memset(&ef, 0, sizeof(ef));
    struct store *store = NULL;
    struct evhttp *http = NULL;
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
    /* The snapshot lives on the pool's first epoch (pool_record.h): a
     * dashboard on a grown list must place its keys by that ring too. */
    uint32_t pool_epoch = 0;
    if (!pool_record_check(store, ef.name, ef.ttl_s, &pool_epoch, err, sizeof(err))) {
        fprintf(stderr, PROG ": --backend %s: %s\n", o.backend, err);
        goto done;
    }
    rc = 1;
    if ((app.base = event_base_new()) == NULL)
        goto done;
    if ((http = http_listen(app.base, o.listen, (int)o.http_timeout_s, err, sizeof(err))) == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }
    struct dashboard_config dc = {.poll_ms = o.interval_ms / 4 ? o.interval_ms / 4 : 1,
                                  .interval_ms = o.interval_ms,
                                  .heartbeat_ms = o.heartbeat_ms,
                                  .max_streams = o.max_streams,
                                  .stream_timeout_s = o.http_timeout_s};
    app.dashboard = dashboard_create(app.base, &ef, store, &dc, err, sizeof(err));
    store = NULL;
    if (app.dashboard == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }
    evhttp_set_gencb(http, on_request, &app);
    sigterm = evsignal_new(app.base, SIGTERM, on_signal, &app);
    sigint = evsignal_new(app.base, SIGINT, on_signal, &app);
    if (!sigterm || !sigint || event_add(sigterm, NULL) || event_add(sigint, NULL))
        goto done;
    log_info("listening addr=%s event=%s backend=%s", o.listen, ef.name, o.backend);
    event_base_dispatch(app.base);
    rc = 0;

done:
    dashboard_free(app.dashboard);
    if (http)
        evhttp_free(http);
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
