/*
 * livetally-ingest: the answer front end. Stateless; run N behind a load
 * balancer. See --help.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "cli.h"
#include "eventfile.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "store.h"
#include "util.h"

#define PROG "livetally-ingest"

struct options {
    const char *event_path;
    const char *backend;
    const char *token_path;
    uint32_t drain_delay_s;
    uint32_t drain_timeout_s;
    bool describe_metrics;
    enum log_level log_level;
    struct ingest_server_config sc;
};

enum { OPT_EVENT, OPT_BACKEND, OPT_LISTEN, OPT_TOKEN, OPT_THREADS, OPT_FLUSH_MS, OPT_BATCH_INTERVAL, OPT_NO_COALESCE, OPT_DEADLINE_MS,
       OPT_MAX_WAITING, OPT_MAX_BATCH, OPT_MAX_CONNS, OPT_DRAIN_DELAY, OPT_DRAIN_TIMEOUT, OPT_HTTP_TIMEOUT,
       OPT_LOG_LEVEL, OPT_DESCRIBE_METRICS, OPT_TRUSTED_PROXY };

static const struct cli_opt cli_opts[] = {
    {"event", "FILE", "the event file (required)", OPT_EVENT},
    {"backend", "URL", "counter store: memcached://H:P[,H:P...] (required)", OPT_BACKEND},
    {"listen", "HOST:PORT", "HTTP listen address (default 127.0.0.1:8080)", OPT_LISTEN},
    {"admin-token-file", "FILE", "bearer token for the admin API (admin disabled without)", OPT_TOKEN},
    {"trusted-proxy", "ADDR[,ADDR]", "load balancers whose last X-Forwarded-For header names the client: admin token guesses are slowed per that client, not per the proxy (numeric addresses; default none)", OPT_TRUSTED_PROXY},
    {"threads", "N", "event loop threads taking answers (default: the number of cores)", OPT_THREADS},
    {"flush-ms", "MS", "how long a batch gathers answers while the store is idle (default 0: at once)", OPT_FLUSH_MS},
    {"batch-interval-us", "US", "under load, at least this long between two batches of a thread: bigger batches, fewer store operations (default 1000; 0: none)", OPT_BATCH_INTERVAL},
    {"no-coalesce", NULL, "write every answer's increments as they came (benchmarks only)", OPT_NO_COALESCE},
    {"deadline-ms", "MS", "retry an unconfirmed batch this long before 503 (default 2000)", OPT_DEADLINE_MS},
    {"max-waiting", "N", "answers waiting for the store per thread before 503 (default 65536)", OPT_MAX_WAITING},
    {"max-batch", "N", "answers per batch (default 65536)", OPT_MAX_BATCH},
    {"max-conns", "N", "open connections per thread; more are refused (default 20000)", OPT_MAX_CONNS},
    {"drain-delay", "S", "on SIGTERM, answer /healthz 503 this long while still taking answers, so the load balancer takes the node out first; above its check interval x fall count (default 2; 0: drain at once)", OPT_DRAIN_DELAY},
    {"drain-timeout", "S", "then wait at most this long for the store (default 30)", OPT_DRAIN_TIMEOUT},
    {"http-timeout", "S", "drop a client that is idle, or slow to send a request, this long (default 10)", OPT_HTTP_TIMEOUT},
    {"log-level", "LEVEL", "error|warn|info|debug (default info)", OPT_LOG_LEVEL},
    {"describe-metrics", NULL, "list the /metrics metrics (name, type, help) and exit", OPT_DESCRIBE_METRICS},
};

static const char about[] =
    "Takes answers on POST /v1/answers, counts them in the store and answers 202\n"
    "once the store has confirmed the increments. Admin: POST\n"
    "/v1/admin/questions/{id}/open|close with Authorization: Bearer TOKEN.\n"
    "GET /healthz (503 while draining), GET /metrics (Prometheus text).\n"
    "SIGTERM/SIGINT: /healthz turns 503 at once while answers are still taken for\n"
    "--drain-delay; then stop taking answers, write everything pending, exit 0\n"
    "(1 if the store did not confirm within --drain-timeout). A second signal\n"
    "during the delay drains at once; one during the drain exits at once (1).\n\n"
    "Example:\n"
    "  livetally-ingest --event show.json --backend memcached://10.0.0.5:11211,10.0.0.6:11211 \\\n"
    "      --listen 0.0.0.0:8080 --admin-token-file /etc/livetally/admin.token\n";

static bool set_opt(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct options *o = ctx;
    struct ingest_server_config *sc = &o->sc;
    uint32_t n;
    switch (id) {
    case OPT_EVENT: o->event_path = val; return true;
    case OPT_BACKEND: return (o->backend = val, store_url_check(val, err, errlen));
    case OPT_LISTEN: return (sc->listen = val, cli_hostport(val, err, errlen));
    case OPT_TOKEN: o->token_path = val; return true;
    case OPT_TRUSTED_PROXY: return ingest_parse_trusted_proxies(val, &sc->ic, err, errlen);
    case OPT_THREADS: return cli_u32(val, 1, 64, &sc->threads, err, errlen);
    case OPT_FLUSH_MS: return cli_u32(val, 0, 1000, &sc->ic.commit.flush_ms, err, errlen);
    case OPT_BATCH_INTERVAL:
        return cli_u32(val, 0, 1000000, &sc->ic.commit.batch_interval_us, err, errlen);
    case OPT_NO_COALESCE: sc->ic.commit.no_coalesce = true; return true;
    case OPT_DEADLINE_MS: return cli_u32(val, 10, 600000, &sc->ic.commit.deadline_ms, err, errlen);
    case OPT_MAX_WAITING:
        return cli_u32(val, 1, 10000000, &n, err, errlen) && (sc->ic.commit.max_waiting = n, true);
    case OPT_MAX_BATCH:
        return cli_u32(val, 1, 10000000, &n, err, errlen) &&
               (sc->ic.commit.max_batch_answers = n, true);
    case OPT_MAX_CONNS: return cli_u32(val, 1, 1000000, &sc->hc.max_conns, err, errlen);
    case OPT_DRAIN_DELAY: return cli_u32(val, 0, 600, &o->drain_delay_s, err, errlen);
    case OPT_DRAIN_TIMEOUT: return cli_u32(val, 1, 3600, &o->drain_timeout_s, err, errlen);
    case OPT_HTTP_TIMEOUT: return cli_u32(val, 1, 3600, &sc->http_timeout_s, err, errlen);
    case OPT_DESCRIBE_METRICS: o->describe_metrics = true; return true;
    case OPT_LOG_LEVEL:
        return log_parse_level(val, &o->log_level) ||
               (snprintf(err, errlen, "expected error, warn, info or debug"), false);
    }
    return false;
}

int main(int argc, char **argv)
{
    struct options o = {.drain_delay_s = 2, .drain_timeout_s = 30, .log_level = LOG_INFO};
    ingest_server_defaults(&o.sc);
    enum cli_result r = cli_parse(argc, argv, PROG, "--event FILE --backend URL [options]", about,
                                  cli_opts, LT_ARRAY_LEN(cli_opts), set_opt, &o);
    if (r != CLI_CONTINUE)
        return r == CLI_EXIT_OK ? 0 : 2;
    if (o.describe_metrics) {
        ingest_describe_metrics(stdout);
        metrics_describe_process(stdout);
        return 0;
    }
    if (o.event_path == NULL)
        return cli_usage_error(PROG, "--event FILE is required"), 2;
    if (o.backend == NULL)
        return cli_usage_error(PROG, "--backend URL is required"), 2;
    log_init("ingest", o.log_level);
    ingest_server_hold_signals();
    signal(SIGPIPE, SIG_IGN);
    util_raise_nofile();

    int rc = 2;
    char err[512];
    struct eventfile ef;
    memset(&ef, 0, sizeof(ef));
    char *token = NULL;
    struct store *store = NULL;
    struct event_base *base = NULL;
    struct ingest_server *server = NULL;

    if (!ingest_server_load(PROG, o.event_path, o.token_path, o.backend, &o.sc, &ef, &token,
                            &store))
        goto done;
    rc = 1;
    if ((base = event_base_new()) == NULL)
        goto done;
    server = ingest_server_start(base, &ef, store, &o.sc, NULL, err, sizeof(err));
    store = NULL; /* owned by the server now */
    if (server == NULL) {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }
    log_info("listening addr=%s threads=%u event=%s backend=%s admin=%s", o.sc.listen,
             o.sc.threads, ef.name, o.backend, token ? "on" : "off");
    rc = ingest_server_run(server, base, o.drain_delay_s * 1000, o.drain_timeout_s, NULL, NULL);

done:
    ingest_server_free(server);
    if (base)
        event_base_free(base);
    store_close(store);
    free(token);
    eventfile_free(&ef);
    return rc;
}
