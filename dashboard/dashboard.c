#include "dashboard.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "page.h"
#include "snapshot.h"
#include "snapstore.h"
#include "sse.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define QUESTION_PREFIX "/v1/stats/questions/"

#define DASHBOARD_METRICS(X)                                                                       \
    X(DM_REQUESTS, "livetally_dashboard_requests_total", COUNTER,                                  \
      "Dashboard HTTP replies by path and status")                                                 \
    X(DM_DURATION, "livetally_dashboard_request_duration_seconds", HISTOGRAM,                      \
      "Time to handle a dashboard request until its reply is queued, by path")                     \
    X(DM_GENERATION, "livetally_dashboard_snapshot_generation", GAUGE,                             \
      "Generation of the snapshot being served (0: none yet)")                                     \
    X(DM_AGE, "livetally_dashboard_snapshot_age_seconds", GAUGE,                                   \
      "Now minus the served snapshot's generated_at (-1: none yet)")                               \
    X(DM_UNCHANGED, "livetally_dashboard_snapshot_unchanged_seconds", GAUGE,                       \
      "Since a new generation last arrived (-1: none yet)")                                        \
    X(DM_POLLS, "livetally_dashboard_polls_total", COUNTER, "Snapshot reads from the store")      \
    X(DM_STORE_ERRORS, "livetally_dashboard_store_errors_total", COUNTER,                          \
      "Snapshot reads that failed: store errors or a snapshot that does not parse")                \
    X(DM_STREAMS, "livetally_dashboard_streams", GAUGE, "Connected Server-Sent Events clients")    \
    X(DM_STREAMS_ACCEPTED, "livetally_dashboard_streams_accepted_total", COUNTER,                  \
      "Server-Sent Events streams started")                                                        \
    X(DM_STREAMS_REJECTED, "livetally_dashboard_streams_rejected_total", COUNTER,                  \
      "Streams refused with 503 because --max-streams were connected")                             \
    X(DM_STREAMS_DROPPED, "livetally_dashboard_streams_dropped_total", COUNTER,                    \
      "Streams dropped because the client did not read (unsent bytes past the bound)")             \
    X(DM_STREAMS_CLOSED, "livetally_dashboard_streams_closed_total", COUNTER,                      \
      "Streams closed by the client or by a write timeout")                                        \
    X(DM_STREAM_EVENTS, "livetally_dashboard_stream_events_total", COUNTER,                        \
      "Snapshot events queued to stream clients, summed over clients")

enum dashboard_metric { DASHBOARD_METRICS(METRIC_ENUM) DM_COUNT };
static const struct metric_def metric_defs[] = {DASHBOARD_METRICS(METRIC_DEF)};

/* The path label: a fixed set, so a scan of random URLs cannot grow it. */
enum route {
    R_PAGE, R_APP_JS, R_STYLE_CSS, R_FAVICON, R_STATS, R_QUESTION, R_STREAM, R_CSV, R_CONFIG, R_HEALTHZ,
    R_METRICS, R_OTHER, R_COUNT
};
static const char *const route_names[R_COUNT] = {
    "/", "/app.js", "/style.css", "/favicon.svg", "/v1/stats", "/v1/stats/questions/{id}", "/v1/stats/stream",
    "/v1/stats.csv", "/v1/dashboard/config", "/healthz", "/metrics", "other",
};

static const int status_codes[] = {200, 304, 404, 405, 500, 503};
#define N_STATUS LT_ARRAY_LEN(status_codes)
#define STATUS_OTHER N_STATUS /* any other code */

/* A head older than the snapshot held is a replica that missed the last
 * writes, and is ignored; one that stays older this many polls is a store
 * that really started over, and is taken. */
#define OLDER_HEAD_POLLS 8

struct poll_job {
    struct dashboard *d;
    uint64_t known_generation;
    bool accept_older;
    bool older;             /* the head was older than known_generation */
    uint64_t bad_generation;
    enum store_status status;
    bool invalid;           /* read, but not a snapshot */
    struct snapshot *fresh; /* owned by the job until done takes it */
};

struct dashboard {
    struct event_base *base;    /* (ref) */
    const struct eventfile *ef; /* (ref) */
    struct dashboard_config cfg;
    struct worker *worker;
    struct event *poll_timer;
    bool poll_running;
    bool poll_again;            /* asked for while a poll ran */
    struct snapshot *current;   /* one reference; NULL before the first */
    uint64_t bad_generation;    /* published but unreadable: not fetched again */
    uint64_t current_mono_ms;   /* when current arrived */
    struct sse_hub *hub;
    uint64_t requests[R_COUNT][N_STATUS + 1];
    struct metrics_hist duration[R_COUNT];
    uint64_t polls;
    uint32_t older_polls;       /* consecutive polls that saw an older head */
    uint64_t store_errors;
};

/* ---- accounting ---------------------------------------------------------- */

static void account(struct dashboard *d, enum route r, int code, uint64_t start_us)
{
    size_t k = STATUS_OTHER;
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_codes[i] == code)
            k = i;
    d->requests[r][k]++;
    uint64_t now = util_mono_us();
    metrics_hist_add(&d->duration[r], now > start_us ? now - start_us : 0);
}

static enum route route_of(const char *path)
{
    for (int r = 0; r < R_OTHER; r++)
        if (strcmp(route_names[r], path) == 0)
            return (enum route)r;
    if (strncmp(path, QUESTION_PREFIX, strlen(QUESTION_PREFIX)) == 0)
        return R_QUESTION;
    return R_OTHER;
}

void dashboard_account(struct dashboard *d, const char *path, int code, uint64_t start_us)
{
    account(d, route_of(path), code, start_us);
}

/* ---- polling ------------------------------------------------------------- */

static void poll_run(struct store *st, void *arg)
{
    struct poll_job *j = arg;
    const char *event = j->d->ef->name;
    uint64_t gen;
    j->status = snapstore_generation(st, event, &gen);
    if (j->status != STORE_OK || gen == j->known_generation || gen == j->bad_generation)
        return;
    if (gen < j->known_generation && !j->accept_older) {
        j->older = true;
        return;
    }
    char *json;
    size_t len;
    j->status = snapstore_fetch(st, event, &gen, &json, &len);
    if (j->status != STORE_OK)
        return;
    j->fresh = snapshot_build(gen, json, len);
    j->invalid = j->fresh == NULL;
    if (j->invalid)
        j->bad_generation = gen;
}

static void start_poll(struct dashboard *d);

static void poll_done(void *arg)
{
    struct poll_job *j = arg;
    struct dashboard *d = j->d;
    d->poll_running = false;
    d->polls++;
    d->older_polls = j->older ? d->older_polls + 1 : 0;
    if (j->status == STORE_OK && j->fresh) {
        snapshot_unref(d->current);
        d->current = j->fresh;
        d->current_mono_ms = util_mono_ms();
        sse_hub_push(d->hub, d->current);
    } else if (j->invalid || (j->status != STORE_OK && j->status != STORE_NOTFOUND)) {
        d->store_errors++;
        if (j->invalid)
            d->bad_generation = j->bad_generation;
        log_warn("snapshot poll failed status=%s", j->invalid ? "invalid_snapshot"
                                                              : store_status_str(j->status));
    }
    free(j);
    if (d->poll_again) {
        d->poll_again = false;
        start_poll(d);
    }
}

static void start_poll(struct dashboard *d)
{
    if (d->poll_running) {
        d->poll_again = true;
        return;
    }
    struct poll_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->d = d;
    j->known_generation = d->current ? d->current->generation : 0;
    j->accept_older = d->older_polls >= OLDER_HEAD_POLLS;
    j->bad_generation = d->bad_generation;
    if (worker_submit(d->worker, poll_run, poll_done, j))
        d->poll_running = true;
    else
        free(j);
}

static void on_poll_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dashboard *d = arg;
    if (!d->poll_running)
        start_poll(d);
}

void dashboard_poll_now(struct dashboard *d)
{
    start_poll(d);
}

/* ---- replies ------------------------------------------------------------- */

/* Every dashboard reply goes out here (http_send: HEAD gets no body). */
static void send_reply(struct dashboard *d, struct evhttp_request *req, enum route r,
                       uint64_t t0, int code, const char *type, struct evbuffer *body)
{
    if (type != NULL)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    http_send(req, code, body);
    account(d, r, code, t0);
}

/* The error shape of API.md: {"error":"<error>"}; 503 says when to retry. */
static void reply_error(struct dashboard *d, struct evhttp_request *req, enum route r,
                        uint64_t t0, int code, const char *error)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (code == 503 && evhttp_find_header(h, "Retry-After") == NULL)
        evhttp_add_header(h, "Retry-After", "1");
    struct evbuffer *body = evbuffer_new();
    if (body != NULL)
        evbuffer_add_printf(body, "{\"error\":\"%s\"}", error);
    send_reply(d, req, r, t0, code, "application/json", body);
    if (body != NULL)
        evbuffer_free(body);
}

static bool get_only(struct dashboard *d, struct evhttp_request *req, enum route r, uint64_t t0)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
        return true;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply_error(d, req, r, t0, 405, "method_not_allowed");
    return false;
}

/* Accept-Encoding takes gzip: named with q > 0, or, when not named, * with
 * q > 0 (RFC 9110: the explicit coding beats the wildcard). */
static bool accepts_gzip(const char *ae)
{
    double gzip_q = -1, star_q = -1;
    for (const char *p = ae; p != NULL && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t n = (size_t)(p - tok);
        const char *end = strchr(p, ',');
        double q = 1;
        for (const char *x = p; *x && (end == NULL || x < end); x++) {
            if ((*x == 'q' || *x == 'Q') && x[1] == '=' && (x == p || x[-1] == ';' || x[-1] == ' ')) {
                q = strtod(x + 2, NULL);
                break;
            }
        }
        if ((n == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
            (n == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
            gzip_q = q;
        else if (n == 1 && *tok == '*')
            star_q = q;
        p = end;
    }
    return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

/* If-None-Match lists etag (the weak comparison RFC 9110 asks for), or is *. */
static bool none_match(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    for (const char *p = inm; p != NULL && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, el) == 0 && (p[el] == '\0' || p[el] == ',' || p[el] == ' '))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

/* 200 with a body of the current snapshot, sent by reference, gzip'd when
 * the client takes it; 304 when it holds the same representation. Shared
 * caches may keep it about one aggregation interval (and serve it stale
 * while they revalidate), so a CDN or nginx in front takes the audience. */
static void reply_snapshot(struct dashboard *d, struct evhttp_request *req, enum route r,
                           uint64_t t0, const char *type, const struct snapshot_body *b)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    bool gz = b->gz != NULL && accepts_gzip(evhttp_find_header(in, "Accept-Encoding"));
    char etag[sizeof(d->current->etag) + 4];
    size_t el = strlen(d->current->etag);
    memcpy(etag, d->current->etag, el + 1);
    if (gz) /* another representation: another strong ETag */
        snprintf(etag + el - 1, sizeof(etag) - (el - 1), "-gz\"");
    unsigned max_age = d->cfg.interval_ms >= 2000 ? d->cfg.interval_ms / 1000 : 1;
    char cc[96], gen[32];
    snprintf(cc, sizeof(cc), "public, max-age=%u, stale-while-revalidate=%u", max_age, max_age);
    snprintf(gen, sizeof(gen), "%" PRIu64, d->current->generation);
    evhttp_add_header(h, "Cache-Control", cc);
    evhttp_add_header(h, "ETag", etag);
    evhttp_add_header(h, "Vary", "Accept-Encoding");
    evhttp_add_header(h, "X-Livetally-Generation", gen);
    const char *inm = evhttp_find_header(in, "If-None-Match");
    if (inm != NULL && none_match(inm, etag)) {
        send_reply(d, req, r, t0, 304, NULL, NULL);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || !snapshot_add_to(d->current, body, gz ? b->gz : b->data,
                                         gz ? b->gz_len : b->len)) {
        if (body)
            evbuffer_free(body);
        evhttp_clear_headers(h);
        reply_error(d, req, r, t0, 500, "internal_error");
        return;
    }
    if (gz)
        evhttp_add_header(h, "Content-Encoding", "gzip");
    send_reply(d, req, r, t0, 200, type, body);
    evbuffer_free(body);
}

static void reply_stats(struct dashboard *d, struct evhttp_request *req, enum route r, uint64_t t0)
{
    struct snapshot_body b = {.data = d->current->json, .len = d->current->len,
                              .gz = d->current->json_gz, .gz_len = d->current->json_gz_len};
    reply_snapshot(d, req, r, t0, "application/json", &b);
}

static void handle_question(struct dashboard *d, struct evhttp_request *req, uint64_t t0,
                            const char *idtext)
{
    uint32_t id;
    if (!util_parse_u32(idtext, 0, UINT32_MAX, &id) || eventfile_question(d->ef, id) == NULL) {
        reply_error(d, req, R_QUESTION, t0, 404, "unknown_question");
        return;
    }
    if (d->current == NULL) {
        reply_error(d, req, R_QUESTION, t0, 503, "no_snapshot_yet");
        return;
    }
    struct snapshot_body b;
    if (!snapshot_question_body(d->current, id, &b)) {
        /* The event file knows it but the snapshot was built from another one. */
        reply_error(d, req, R_QUESTION, t0, 404, "unknown_question");
        return;
    }
    reply_snapshot(d, req, R_QUESTION, t0, "application/json", &b);
}

static void handle_csv(struct dashboard *d, struct evhttp_request *req, uint64_t t0)
{
    if (d->current == NULL) {
        reply_error(d, req, R_CSV, t0, 503, "no_snapshot_yet");
        return;
    }
    char disp[128];
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s-stats-%" PRIu64 ".csv\"", d->ef->name,
             d->current->generation);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Disposition", disp);
    struct snapshot_body b = {.data = d->current->csv, .len = d->current->csv_len,
                              .gz = d->current->csv_gz, .gz_len = d->current->csv_gz_len};
    reply_snapshot(d, req, R_CSV, t0, "text/csv; charset=utf-8; header=present", &b);
}

static uint64_t stale_after_ms(const struct dashboard *d)
{
    return (uint64_t)d->cfg.interval_ms * 3;
}

int dashboard_health(const struct dashboard *d, char *body, size_t len)
{
    if (d->current == NULL) {
        snprintf(body, len, "{\"status\":\"no_snapshot\"}");
        return 503;
    }
    uint64_t unchanged = util_mono_ms() - d->current_mono_ms;
    if (unchanged > stale_after_ms(d)) {
        snprintf(body, len,
                 "{\"status\":\"stale\",\"unchanged_ms\":%" PRIu64 ",\"stale_after_ms\":%" PRIu64
                 "}",
                 unchanged, stale_after_ms(d));
        return 503;
    }
    snprintf(body, len, "{\"status\":\"ok\"}");
    return 200;
}

/* What the page cannot learn from a snapshot: how often one should arrive
 * (for its freshness warning) and the server's clock (to age generated_at
 * without trusting the screen's clock). */
static void handle_config(struct dashboard *d, struct evhttp_request *req, uint64_t t0)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "{\"event\":\"%s\",\"interval_ms\":%u,\"stale_after_ms\":%" PRIu64
                     ",\"heartbeat_ms\":%u,\"server_time_ms\":%" PRIu64
                     ",\"stream\":\"v1/stats/stream\",\"stats\":\"v1/stats\","
                     "\"csv\":\"v1/stats.csv\"}",
                     d->ef->name, d->cfg.interval_ms, stale_after_ms(d),
                     d->cfg.heartbeat_ms, util_wall_ms());
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || evbuffer_add(body, buf, (size_t)n < sizeof(buf) ? (size_t)n : 0) != 0) {
        if (body)
            evbuffer_free(body);
        reply_error(d, req, R_CONFIG, t0, 500, "internal_error");
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    send_reply(d, req, R_CONFIG, t0, 200, "application/json", body);
    evbuffer_free(body);
}

static void handle_stream(struct dashboard *d, struct evhttp_request *req, uint64_t t0)
{
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        send_reply(d, req, R_STREAM, t0, 200, "text/event-stream", NULL);
        return;
    }
    const char *last =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
    bool gz = accepts_gzip(evhttp_find_header(evhttp_request_get_input_headers(req),
                                              "Accept-Encoding"));
    if (!sse_hub_join(d->hub, req, d->current, last, gz)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        reply_error(d, req, R_STREAM, t0, 503, "too_many_streams");
        return;
    }
    account(d, R_STREAM, 200, t0);
}

static void handle_asset(struct dashboard *d, struct evhttp_request *req, uint64_t t0,
                         enum route r, const struct page_asset *a)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    /* Revalidated on every load (a new build is picked up at once), but an
     * unchanged page costs a 304. */
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "ETag", a->etag);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    if (r == R_PAGE) {
        /* The page is self-contained: nothing may load from elsewhere. */
        evhttp_add_header(h, "Content-Security-Policy",
                          "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                          "form-action 'none'");
        evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    }
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    if (inm != NULL && strcmp(inm, a->etag) == 0) {
        send_reply(d, req, r, t0, 304, NULL, NULL);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || evbuffer_add_reference(body, a->data, a->len, NULL, NULL) != 0) {
        if (body)
            evbuffer_free(body);
        reply_error(d, req, r, t0, 500, "internal_error");
        return;
    }
    send_reply(d, req, r, t0, 200, a->content_type, body);
    evbuffer_free(body);
}

bool dashboard_handle(struct dashboard *d, struct evhttp_request *req, const char *path)
{
    uint64_t t0 = util_mono_us();
    enum route r = route_of(path);
    const struct page_asset *asset = NULL;
    if (r == R_OTHER && strcmp(path, "/index.html") == 0)
        r = R_PAGE;
    switch (r) {
    case R_PAGE:
    case R_APP_JS:
    case R_STYLE_CSS:
    case R_FAVICON:
        asset = page_find(path);
        if (asset == NULL)
            return false;
        if (get_only(d, req, r, t0))
            handle_asset(d, req, t0, r, asset);
        return true;
    case R_STATS:
        if (!get_only(d, req, r, t0))
            return true;
        if (d->current == NULL)
            reply_error(d, req, r, t0, 503, "no_snapshot_yet");
        else
            reply_stats(d, req, r, t0);
        return true;
    case R_QUESTION:
        if (get_only(d, req, r, t0))
            handle_question(d, req, t0, path + strlen(QUESTION_PREFIX));
        return true;
    case R_STREAM:
        if (get_only(d, req, r, t0))
            handle_stream(d, req, t0);
        return true;
    case R_CSV:
        if (get_only(d, req, r, t0))
            handle_csv(d, req, t0);
        return true;
    case R_CONFIG:
        if (get_only(d, req, r, t0))
            handle_config(d, req, t0);
        return true;
    case R_HEALTHZ:
    case R_METRICS:
    case R_OTHER:
    case R_COUNT:
        break;
    }
    return false;
}

uint64_t dashboard_generation(const struct dashboard *d)
{
    return d->current ? d->current->generation : 0;
}

/* ---- metrics ------------------------------------------------------------- */

void dashboard_describe_metrics(FILE *out)
{
    metrics_describe(out, metric_defs, DM_COUNT);
}

void dashboard_write_metrics(struct dashboard *d, struct evbuffer *out)
{
    char labels[128];
    const struct metric_def *m = metric_defs;
    metrics_write_head(out, &m[DM_REQUESTS]);
    for (size_t r = 0; r < R_COUNT; r++) {
        for (size_t k = 0; k <= N_STATUS; k++) {
            if (d->requests[r][k] == 0)
                continue;
            char code[16];
            if (k == STATUS_OTHER)
                snprintf(code, sizeof(code), "other");
            else
                snprintf(code, sizeof(code), "%d", status_codes[k]);
            snprintf(labels, sizeof(labels), "path=\"%s\",code=\"%s\"", route_names[r], code);
            metrics_write_u64(out, &m[DM_REQUESTS], labels, d->requests[r][k]);
        }
    }
    metrics_write_head(out, &m[DM_DURATION]);
    for (size_t r = 0; r < R_COUNT; r++) {
        if (d->duration[r].count == 0)
            continue;
        snprintf(labels, sizeof(labels), "path=\"%s\"", route_names[r]);
        metrics_write_hist(out, &m[DM_DURATION], labels, &d->duration[r]);
    }
    double age = -1, unchanged = -1;
    if (d->current != NULL) {
        uint64_t now = util_wall_ms();
        uint64_t at = d->current->generated_ms;
        age = at == 0 ? -1 : (double)(now > at ? now - at : 0) / 1000.0;
        unchanged = (double)(util_mono_ms() - d->current_mono_ms) / 1000.0;
    }
    metrics_emit_u64(out, &m[DM_GENERATION], dashboard_generation(d));
    metrics_emit_f64(out, &m[DM_AGE], age);
    metrics_emit_f64(out, &m[DM_UNCHANGED], unchanged);
    metrics_emit_u64(out, &m[DM_POLLS], d->polls);
    metrics_emit_u64(out, &m[DM_STORE_ERRORS], d->store_errors);
    struct sse_stats ss;
    sse_hub_get_stats(d->hub, &ss);
    metrics_emit_u64(out, &m[DM_STREAMS], ss.clients);
    metrics_emit_u64(out, &m[DM_STREAMS_ACCEPTED], ss.accepted);
    metrics_emit_u64(out, &m[DM_STREAMS_REJECTED], ss.rejected);
    metrics_emit_u64(out, &m[DM_STREAMS_DROPPED], ss.dropped);
    metrics_emit_u64(out, &m[DM_STREAMS_CLOSED], ss.closed);
    metrics_emit_u64(out, &m[DM_STREAM_EVENTS], ss.events);
}

/* ---- life cycle ---------------------------------------------------------- */

struct dashboard *dashboard_create(struct event_base *base, const struct eventfile *ef,
                                   struct store *store, const struct dashboard_config *cfg,
                                   char *err, size_t errlen)
{
    struct dashboard *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        store_close(store);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base = base;
    d->ef = ef;
    d->cfg = *cfg;
    if (d->cfg.poll_ms == 0)
        d->cfg.poll_ms = 250;
    if (d->cfg.interval_ms == 0)
        d->cfg.interval_ms = 1000;
    if (d->cfg.heartbeat_ms == 0)
        d->cfg.heartbeat_ms = 15000;
    struct sse_config sc = {.heartbeat_ms = d->cfg.heartbeat_ms,
                            .max_clients = d->cfg.max_streams,
                            .max_pending = d->cfg.max_stream_pending,
                            .write_timeout_s = d->cfg.stream_timeout_s,
                            .retry_ms = d->cfg.interval_ms < 1000 ? 1000 : d->cfg.interval_ms};
    d->hub = sse_hub_create(base, &sc);
    d->worker = worker_start("dashboard-store", store, base, 4);
    d->poll_timer = event_new(base, -1, EV_PERSIST, on_poll_timer, d);
    struct timeval tv = {.tv_sec = d->cfg.poll_ms / 1000,
                         .tv_usec = (suseconds_t)(d->cfg.poll_ms % 1000) * 1000};
    if (d->hub == NULL || d->worker == NULL || d->poll_timer == NULL ||
        event_add(d->poll_timer, &tv) != 0) {
        snprintf(err, errlen, "cannot start the snapshot poller");
        dashboard_free(d);
        return NULL;
    }
    start_poll(d); /* the first look right away */
    return d;
}

void dashboard_free(struct dashboard *d)
{
    if (d == NULL)
        return;
    if (d->poll_timer)
        event_free(d->poll_timer);
    worker_stop(d->worker); /* runs poll_done of a poll still out */
    d->poll_again = false;
    sse_hub_free(d->hub);
    d->hub = NULL;
    snapshot_unref(d->current);
    free(d);
}
