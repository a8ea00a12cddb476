#include "server.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pool_record.h"
#include "splice.h"
#include "store.h"
#include "util.h"

#define STATS_PUBLISH_MS 250
#define ANSWER_LINE "POST /v1/answers"

enum { CMD_DRAIN = 1, CMD_STOP = 2 };

struct fast_thread {
    struct ingest_server *srv;  /* (ref) */
    pthread_t tid;
    bool started;
    struct event_base *base;
    struct httpd *httpd;
    struct ingest *ingest;
    struct splice_set *splices;  /* connections passed to the main thread */
    int notify_fd;
    struct event *notify_ev;
    struct event *stats_ev;
    atomic_int cmd;
    atomic_bool drained;
};

struct ingest_server {
    struct event_base *base;    /* (ref) main thread */
    const struct eventfile *ef; /* (ref) */
    struct ingest_server_config cfg;
    struct ingest_server_extra extra;
    struct ingest_shared *shared;
    struct ingest *main_ingest;
    struct evhttp *http;
    struct event *stats_ev;
    struct fast_thread *threads;
    uint32_t nthreads;

    struct sockaddr_un inner;   /* the evhttp's private (abstract) unix socket */
    socklen_t inner_len;
    int main_fd;                /* wakes the main thread when a thread has drained */
    struct event *main_ev;

    bool draining;
    bool main_drained;
    void (*drained)(void *arg);
    void *drained_arg;
};

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t rc = write(fd, &one, sizeof(one));
    (void)rc; /* an eventfd write fails only on counter overflow */
}

/* ---- fast threads ----------------------------------------------------- */

static void fast_reply(void *ctx, int status, const char *body, size_t len, const char *extra)
{
    httpd_reply(ctx, status, "application/json", body, len, extra);
}

static void on_fast_request(struct httpd_request *req, void *arg)
{
    struct fast_thread *t = arg;
    struct ingest_request r = {
        .method = req->method,
        .path = req->path,
        .content_type = req->content_type,
        .authorization = req->authorization,
        .body = req->body,
        .body_len = req->body_len,
        .too_large = req->too_large,
        .peer = req->peer,
        .forwarded_for = req->forwarded_for,
    };
    if (ingest_serve(t->ingest, &r, fast_reply, req))
        return;
    if (strcmp(req->path, "/healthz") == 0) {
        char body[192];
        int code = ingest_health(t->ingest, body, sizeof(body));
        httpd_reply(req, code, NULL, body, strlen(body), NULL);
        return;
    }
    /* With more metrics than the ingest's (livetally), the main thread
     * writes them all. */
    if (strcmp(req->path, "/metrics") == 0 && t->srv->extra.metrics == NULL) {
        struct evbuffer *out = evbuffer_new();
        if (out) {
            ingest_shared_write_metrics(t->srv->shared, out);
            metrics_write_process(out, t->srv->cfg.binary);
            size_t len = evbuffer_get_length(out);
            httpd_reply(req, 200, HTTP_PROMETHEUS_TYPE, (const char *)evbuffer_pullup(out, -1),
                        len, NULL);
            evbuffer_free(out);
            return;
        }
    }
    /* Other paths live on the main thread: the connection moves there, with
     * this request (a client that posted answers and now reads the stats). */
    if (httpd_handoff(req))
        return;
    static const char nf[] = "{\"error\":\"not_found\"}";
    httpd_reply(req, 404, NULL, nf, sizeof(nf) - 1, NULL);
}

static int classify(const char *data, size_t len, void *arg)
{
    (void)arg;
    size_t n = len < sizeof(ANSWER_LINE) - 1 ? len : sizeof(ANSWER_LINE) - 1;
    if (memcmp(data, ANSWER_LINE, n) != 0)
        return 0;
    return n == sizeof(ANSWER_LINE) - 1 ? 1 : -1;
}

static size_t splice_count(const void *arg)
{
    return splice_set_count(arg);
}

/* Not an answer connection: the main thread's evhttp serves it, reached
 * through its private socket. */
static void handoff(int fd, const struct sockaddr *sa, socklen_t salen, const char *prefix,
                    size_t prefix_len, void *arg)
{
    struct fast_thread *t = arg;
    if (!splice_start(t->splices, fd, sa, salen, (const struct sockaddr *)&t->srv->inner,
                      t->srv->inner_len, prefix, prefix_len))
        log_warn("cannot pass a connection to the main thread");
}

static void on_thread_drained(void *arg)
{
    struct fast_thread *t = arg;
    atomic_store(&t->drained, true);
    wake(t->srv->main_fd);
}

static void on_fast_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fast_thread *t = arg;
    uint64_t n;
    ssize_t rc = read(fd, &n, sizeof(n));
    (void)rc;
    int cmd = atomic_exchange(&t->cmd, 0);
    if (cmd & CMD_DRAIN) {
        httpd_stop_accepting(t->httpd);
        ingest_drain(t->ingest, on_thread_drained, t);
    }
    if (cmd & CMD_STOP)
        event_base_loopexit(t->base, NULL);
}

static void on_fast_stats(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fast_thread *t = arg;
    struct httpd_stats hs;
    httpd_get_stats(t->httpd, &hs);
    ingest_publish_stats(t->ingest, &hs);
}

static void *fast_main(void *arg)
{
    struct fast_thread *t = arg;
    event_base_dispatch(t->base);
    return NULL;
}

static void send_cmd(struct fast_thread *t, int cmd)
{
    atomic_fetch_or(&t->cmd, cmd);
    wake(t->notify_fd);
}

/* ---- main thread ------------------------------------------------------ */

/* The ingest's extra header lines ("Name: value\r\n" ...) as evhttp headers. */
static void add_header_lines(struct evkeyvalq *out, const char *lines)
{
    while (lines != NULL && *lines != '\0') {
        const char *colon = strchr(lines, ':');
        const char *eol = strstr(lines, "\r\n");
        if (colon == NULL || eol == NULL || colon > eol)
            return;
        char name[64], value[128];
        size_t nlen = (size_t)(colon - lines);
        const char *v = colon + 1 + strspn(colon + 1, " ");
        size_t vlen = v < eol ? (size_t)(eol - v) : 0;
        if (nlen < sizeof(name) && vlen < sizeof(value)) {
            memcpy(name, lines, nlen);
            name[nlen] = '\0';
            memcpy(value, v, vlen);
            value[vlen] = '\0';
            evhttp_add_header(out, name, value);
        }
        lines = eol + 2;
    }
}

static void main_reply(void *ctx, int status, const char *body, size_t len, const char *extra)
{
    struct evhttp_request *req = ctx;
    add_header_lines(evhttp_request_get_output_headers(req), extra);
    if (status == 204)
        http_reply_empty(req, 204);
    else
        http_reply_json(req, status, body, len);
}

/* The client of a request that reached evhttp through a fast thread's
 * splice (every one does), or NULL. */
static const struct sockaddr *spliced_peer(struct evhttp_request *req,
                                           struct sockaddr_storage *sa, socklen_t *len)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0 || !splice_client_address(fd, sa, len))
        return NULL;
    return (const struct sockaddr *)sa;
}

/* The last X-Forwarded-For header (a proxy adds its own after the client's). */
static const char *last_forwarded_for(struct evkeyvalq *in)
{
    const char *last = NULL;
    for (struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next)
        if (evutil_ascii_strcasecmp(h->key, "X-Forwarded-For") == 0)
            last = h->value;
    return last;
}

static enum httpd_method evhttp_method(struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: return HTTPD_GET;
    case EVHTTP_REQ_HEAD: return HTTPD_HEAD;
    case EVHTTP_REQ_POST: return HTTPD_POST;
    default: return HTTPD_OTHER;
    }
}

static void on_main_request(struct evhttp_request *req, void *arg)
{
    struct ingest_server *s = arg;
    char path[512];
    if (!http_path(req, path, sizeof(path))) {
        http_reply_error(req, 404, "not_found", NULL, 0);
        return;
    }
    if (http_refuse_transfer_coding(req)) /* the fast path's rule */
        return;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    /* A NUL after the body, as the fast path gives its handlers. */
    evbuffer_add(body, "", 1);
    const char *data = (const char *)evbuffer_pullup(body, -1);
    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct ingest_request r = {
        .method = evhttp_method(req),
        .path = path,
        .content_type = evhttp_find_header(in, "Content-Type"),
        .authorization = evhttp_find_header(in, "Authorization"),
        .body = data ? data : "",
        .body_len = len,
        .too_large = len > HTTP_MAX_BODY,
        .peer = spliced_peer(req, &peer, &peer_len),
        .forwarded_for = last_forwarded_for(in),
    };
    if (ingest_serve(s->main_ingest, &r, main_reply, req))
        return;
    if (strcmp(path, "/healthz") == 0) {
        char health[192];
        int code = ingest_health(s->main_ingest, health, sizeof(health));
        http_reply_json(req, code, health, strlen(health));
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            http_reply_error(req, 503, "overloaded", NULL, 1);
            return;
        }
        ingest_shared_write_metrics(s->shared, out);
        if (s->extra.metrics)
            s->extra.metrics(out, s->extra.arg);
        metrics_write_process(out, s->cfg.binary);
        http_reply_buffer(req, 200, HTTP_PROMETHEUS_TYPE, out);
        evbuffer_free(out);
        return;
    }
    if (s->extra.route && s->extra.route(req, path, s->extra.arg))
        return;
    http_reply_error(req, 404, "not_found", NULL, 0);
}

static void check_drained(struct ingest_server *s)
{
    if (!s->draining || s->drained == NULL || !s->main_drained)
        return;
    for (uint32_t i = 0; i < s->nthreads; i++)
        if (!atomic_load(&s->threads[i].drained))
            return;
    void (*fn)(void *) = s->drained;
    s->drained = NULL;
    fn(s->drained_arg);
}

static void on_main_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct ingest_server *s = arg;
    uint64_t n;
    ssize_t rc = read(fd, &n, sizeof(n));
    (void)rc;
    check_drained(s);
}

static void on_main_stats(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ingest_server *s = arg;
    ingest_publish_stats(s->main_ingest, NULL);
}

static void on_main_drained(void *arg)
{
    struct ingest_server *s = arg;
    s->main_drained = true;
    check_drained(s);
}

void ingest_server_drain(struct ingest_server *s, void (*drained)(void *arg), void *arg)
{
    s->draining = true;
    s->drained = drained;
    s->drained_arg = arg;
    ingest_shared_set_draining(s->shared);
    for (uint32_t i = 0; i < s->nthreads; i++)
        send_cmd(&s->threads[i], CMD_DRAIN);
    ingest_drain(s->main_ingest, on_main_drained, s);
}

bool ingest_server_draining(const struct ingest_server *s)
{
    return s->draining;
}

void ingest_server_leave(struct ingest_server *s)
{
    ingest_shared_set_leaving(s->shared);
}

/* ---- lifecycle -------------------------------------------------------- */

void ingest_server_defaults(struct ingest_server_config *sc)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *sc = (struct ingest_server_config){
        .listen = "127.0.0.1:8080",
        .binary = "livetally-ingest",
        .threads = cores > 0 && cores <= 64 ? (uint32_t)cores : 1,
        .ic = {.commit = {.flush_ms = 0, .batch_interval_us = 1000, .deadline_ms = 2000,
                          .max_batch_answers = 65536, .max_waiting = 65536},
               .state_refresh_ms = 50},
        .hc = {.max_conns = 20000, .max_header_bytes = HTTP_MAX_HEADERS,
               .max_body_bytes = HTTP_MAX_BODY, .max_pipeline = 32,
               .request_timeout_ms = 10000, .idle_timeout_ms = 10000},
        .http_timeout_s = 10,
    };
}

/* The evhttp's socket: abstract (nothing in the file system to clean up),
 * named after the process so two servers never meet. */
static bool inner_listen(struct ingest_server *s)
{
    memset(&s->inner, 0, sizeof(s->inner));
    s->inner.sun_family = AF_UNIX;
    int n = snprintf(s->inner.sun_path + 1, sizeof(s->inner.sun_path) - 1, "livetally-%d-%p",
                     (int)getpid(), (void *)s);
    s->inner_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (bind(fd, (struct sockaddr *)&s->inner, s->inner_len) != 0 || listen(fd, 1024) != 0 ||
        evhttp_accept_socket_with_handle(s->http, fd) == NULL) {
        close(fd);
        return false;
    }
    return true;
}

static bool fast_start(struct ingest_server *s, struct fast_thread *t, struct store *store,
                       char *err, size_t errlen)
{
    t->srv = s;
    atomic_init(&t->cmd, 0);
    atomic_init(&t->drained, false);
    t->notify_fd = -1;
    struct event_config *ec = event_config_new();
    if (ec == NULL) {
        store_close(store);
        snprintf(err, errlen, "out of memory");
        return false;
    }
    /* One loop per thread, touched by that thread only; timers to the
     * microsecond (timerfd), or --batch-interval-us would be whole ms. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    t->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (t->base == NULL) {
        store_close(store);
        snprintf(err, errlen, "cannot create an event loop");
        return false;
    }
    int lfd = httpd_listen_socket(s->cfg.listen, err, errlen);
    if (lfd < 0) {
        store_close(store);
        return false;
    }
    t->ingest = ingest_create(t->base, s->ef, s->shared, false, store, &s->cfg.ic, err, errlen);
    if (t->ingest == NULL) {
        close(lfd);
        return false;
    }
    t->httpd = httpd_create(t->base, lfd, &s->cfg.hc, on_fast_request, t);
    if (t->httpd == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server");
        return false;
    }
    httpd_set_classifier(t->httpd, classify, handoff, t);
    if ((t->splices = splice_set_new(t->base, s->cfg.hc.request_timeout_ms)) == NULL)
        return snprintf(err, errlen, "out of memory"), false;
    httpd_set_passed_conns(t->httpd, splice_count, t->splices);
    t->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->notify_fd < 0)
        return snprintf(err, errlen, "eventfd failed"), false;
    t->notify_ev = event_new(t->base, t->notify_fd, EV_READ | EV_PERSIST, on_fast_notify, t);
    t->stats_ev = event_new(t->base, -1, EV_PERSIST, on_fast_stats, t);
    struct timeval tv = {.tv_sec = 0, .tv_usec = STATS_PUBLISH_MS * 1000};
    if (t->notify_ev == NULL || t->stats_ev == NULL || event_add(t->notify_ev, NULL) != 0 ||
        event_add(t->stats_ev, &tv) != 0) {
        snprintf(err, errlen, "cannot start the thread's events");
        return false;
    }
    if (pthread_create(&t->tid, NULL, fast_main, t) != 0) {
        snprintf(err, errlen, "cannot start a thread");
        return false;
    }
    t->started = true;
    return true;
}

static void fast_free(struct fast_thread *t)
{
    if (t->started) {
        send_cmd(t, CMD_STOP);
        pthread_join(t->tid, NULL);
    }
    /* The thread is gone: its loop is ours to tear down. The store thread's
     * last callbacks answer the requests still held, then the connections
     * close. */
    ingest_free(t->ingest);
    httpd_free(t->httpd);
    splice_set_free(t->splices);
    if (t->notify_ev)
        event_free(t->notify_ev);
    if (t->stats_ev)
        event_free(t->stats_ev);
    if (t->notify_fd >= 0)
        close(t->notify_fd);
    if (t->base)
        event_base_free(t->base);
}

struct ingest_server *ingest_server_start(struct event_base *main_base,
                                          const struct eventfile *ef, struct store *store,
                                          const struct ingest_server_config *cfg,
                                          const struct ingest_server_extra *extra, char *err,
                                          size_t errlen)
{
    struct ingest_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        store_close(store);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = main_base;
    s->ef = ef;
    s->cfg = *cfg;
    if (extra)
        s->extra = *extra;
    s->main_fd = -1;
    s->shared = ingest_shared_create(ef);
    s->threads = calloc(cfg->threads ? cfg->threads : 1, sizeof(*s->threads));
    if (s->shared == NULL || s->threads == NULL) {
        store_close(store);
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    /* Each thread's store handle, cloned before the main thread's instance
     * takes the template. */
    struct store **clones = calloc(cfg->threads ? cfg->threads : 1, sizeof(*clones));
    if (clones == NULL) {
        store_close(store);
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    for (uint32_t i = 0; i < cfg->threads; i++) {
        if ((clones[i] = store_clone(store)) == NULL) {
            for (uint32_t k = 0; k < i; k++)
                store_close(clones[k]);
            free(clones);
            store_close(store);
            snprintf(err, errlen, "cannot open the store for a thread");
            goto err;
        }
    }
    s->main_ingest = ingest_create(main_base, ef, s->shared, true, store, &cfg->ic, err, errlen);
    if (s->main_ingest == NULL) {
        for (uint32_t k = 0; k < cfg->threads; k++)
            store_close(clones[k]);
        free(clones);
        goto err;
    }
    s->http = http_server_new(main_base, (int)cfg->http_timeout_s);
    s->main_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->http == NULL || s->main_fd < 0 || !inner_listen(s)) {
        snprintf(err, errlen, "cannot create the HTTP server");
        goto err_clones;
    }
    evhttp_set_gencb(s->http, on_main_request, s);
    s->main_ev = event_new(main_base, s->main_fd, EV_READ | EV_PERSIST, on_main_notify, s);
    s->stats_ev = event_new(main_base, -1, EV_PERSIST, on_main_stats, s);
    struct timeval tv = {.tv_sec = 0, .tv_usec = STATS_PUBLISH_MS * 1000};
    if (s->main_ev == NULL || s->stats_ev == NULL || event_add(s->main_ev, NULL) != 0 ||
        event_add(s->stats_ev, &tv) != 0) {
        snprintf(err, errlen, "cannot start the main thread's events");
        goto err_clones;
    }
    for (uint32_t i = 0; i < cfg->threads; i++) {
        s->nthreads = i + 1;
        struct store *clone = clones[i];
        clones[i] = NULL;
        if (!fast_start(s, &s->threads[i], clone, err, errlen))
            goto err_clones;
    }
    free(clones);
    return s;
err_clones:
    for (uint32_t k = 0; k < cfg->threads; k++)
        store_close(clones[k]); /* those not handed to a thread yet */
    free(clones);
err:
    ingest_server_free(s);
    return NULL;
}

void ingest_server_free(struct ingest_server *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->nthreads; i++)
        fast_free(&s->threads[i]);
    free(s->threads);
    ingest_free(s->main_ingest);
    if (s->main_ev)
        event_free(s->main_ev);
    if (s->stats_ev)
        event_free(s->stats_ev);
    if (s->http)
        evhttp_free(s->http);
    if (s->main_fd >= 0)
        close(s->main_fd);
    ingest_shared_free(s->shared);
    free(s);
}

/* ---- the serving binaries' common start and stop ----------------------- */

bool ingest_server_load(const char *prog, const char *event_path, const char *token_path,
                        const char *backend, struct ingest_server_config *sc,
                        struct eventfile *ef, char **token, struct store **store)
{
    char err[512];
    *token = NULL;
    *store = NULL;
    if (!eventfile_load(event_path, ef, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return false;
    }
    if (token_path && (*token = http_load_token(token_path, err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return false;
    }
    if ((*store = store_open(backend, err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s: --backend %s: %s\n", prog, backend, err);
        return false;
    }
    if (!pool_record_join(*store, ef->name, ef->ttl_s, &sc->pool, err, sizeof(err))) {
        fprintf(stderr, "%s: --backend %s: %s\n", prog, backend, err);
        store_close(*store);
        *store = NULL;
        return false;
    }
    sc->ic.commit.pool_epoch = sc->pool.epoch;
    sc->ic.admin_token = *token;
    sc->ic.commit.ttl_s = ef->ttl_s;
    sc->hc.request_timeout_ms = sc->http_timeout_s * 1000;
    sc->hc.idle_timeout_ms = sc->http_timeout_s * 1000;
    return true;
}

struct run_ctx {
    struct ingest_server *server;
    struct event_base *base;
    uint32_t drain_delay_ms;
    uint32_t drain_timeout_s;
    bool leaving;        /* the first signal came: /healthz says draining */
    struct event *delay; /* ends the drain delay */
    ingest_after_drain_fn after_drain;
    void *arg;
    struct event *deadline;
    int exit_code;
};

static void run_finish(void *arg)
{
    struct run_ctx *r = arg;
    /* Let the last replies leave their socket buffers before the loop ends. */
    struct timeval grace = {.tv_sec = 0, .tv_usec = 200000};
    event_base_loopexit(r->base, &grace);
}

static void run_drained(void *arg)
{
    struct run_ctx *r = arg;
    log_info("drained: every acknowledged answer is in the store");
    if (r->after_drain)
        r->after_drain(r->arg, run_finish, r);
    else
        run_finish(r);
}

static void run_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct run_ctx *r = arg;
    log_error("drain timeout: increments still unconfirmed by the store; exiting");
    r->exit_code = 1;
    event_base_loopexit(r->base, NULL);
}

static void run_start_drain(struct run_ctx *r)
{
    evtimer_del(r->delay);
    struct timeval tv = {.tv_sec = r->drain_timeout_s, .tv_usec = 0};
    evtimer_add(r->deadline, &tv);
    ingest_server_drain(r->server, run_drained, r);
}

static void run_delay_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    log_info("drain delay over: listener closed, answers refused, writing what is pending");
    run_start_drain(arg);
}

/* The first signal: the load balancer is told first (/healthz 503 while
 * answers are still taken, --drain-delay), then the drain. A second one
 * during the delay drains at once; one during the drain exits. */
static void run_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct run_ctx *r = arg;
    if (ingest_server_draining(r->server)) {
        log_warn("second signal %d: exiting now", (int)sig);
        r->exit_code = 1;
        event_base_loopexit(r->base, NULL);
        return;
    }
    if (r->leaving) {
        log_info("signal %d again: draining now, before the end of the drain delay", (int)sig);
        run_start_drain(r);
        return;
    }
    r->leaving = true;
    if (r->drain_delay_ms == 0) {
        log_info("signal %d: draining", (int)sig);
        run_start_drain(r);
        return;
    }
    log_info("signal %d: /healthz answers 503 for %u ms so the load balancer takes this node out; "
             "answers are still taken meanwhile",
             (int)sig, r->drain_delay_ms);
    ingest_server_leave(r->server);
    struct timeval tv = {.tv_sec = r->drain_delay_ms / 1000,
                         .tv_usec = (suseconds_t)(r->drain_delay_ms % 1000) * 1000};
    evtimer_add(r->delay, &tv);
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void ingest_server_hold_signals(void)
{
    sigset_t set;
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int ingest_server_run(struct ingest_server *s, struct event_base *base, uint32_t drain_delay_ms,
                      uint32_t drain_timeout_s, ingest_after_drain_fn after_drain, void *arg)
{
    struct run_ctx r = {.server = s, .base = base, .drain_delay_ms = drain_delay_ms,
                        .drain_timeout_s = drain_timeout_s, .after_drain = after_drain,
                        .arg = arg, .exit_code = 0};
    struct event *term = evsignal_new(base, SIGTERM, run_signal, &r);
    struct event *intr = evsignal_new(base, SIGINT, run_signal, &r);
    r.deadline = evtimer_new(base, run_deadline, &r);
    r.delay = evtimer_new(base, run_delay_over, &r);
    if (term && intr && r.deadline && r.delay && event_add(term, NULL) == 0 &&
        event_add(intr, NULL) == 0) {
        /* Only this thread takes them now (the others were started with
         * them held), through libevent: one held meanwhile arrives now. */
        sigset_t set;
        stop_signals(&set);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        event_base_dispatch(base);
    } else {
        r.exit_code = 1;
    }
    if (term)
        event_free(term);
    if (intr)
        event_free(intr);
    if (r.deadline)
        event_free(r.deadline);
    if (r.delay)
        event_free(r.delay);
    return r.exit_code;
}
