#include "dashboard.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "http.h"
#include "log.h"
#include "page.h"
#include "snapstore.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define QUESTION_PREFIX "/v1/stats/questions/"
static const int status_codes[] = {200, 404, 405, 503};
#define N_STATUS LT_ARRAY_LEN(status_codes)

/* A snapshot ready to serve: the full JSON and each question's entry. */
struct snapshot {
    uint64_t generation;
    char *json;       /* owned */
    size_t len;
    size_t n;         /* questions */
    uint32_t *qids;   /* owned */
    char **qjson;     /* owned, n strings */
    size_t *qlen;     /* owned */
};

struct poll_job {
    struct dashboard *d;
    uint64_t known_generation;
    enum store_status status;
    struct snapshot *fresh; /* owned by the job until done takes it */
};

struct dashboard {
    struct event_base *base;    /* (ref) */
    const struct eventfile *ef; /* (ref) */
    struct dashboard_config cfg;
    struct worker *worker;
    struct event *poll_timer;
    bool poll_running;
    struct snapshot *current;   /* owned; NULL before the first */
    uint64_t current_mono_ms;   /* when current was installed */
    uint64_t requests[N_STATUS];
    uint64_t poll_failures;
};

static void snapshot_free(struct snapshot *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->qjson[i]);
    free(s->qjson);
    free(s->qlen);
    free(s->qids);
    free(s->json);
    free(s);
}

/* Splits out each question's entry so /v1/stats/questions/{id} costs no parse. */
static struct snapshot *snapshot_build(uint64_t gen, char *json, size_t len)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    json_error_t jerr;
    json_t *root = NULL;
    if (s == NULL)
        goto err;
    s->generation = gen;
    s->json = json;
    s->len = len;
    json = NULL;
    root = json_loadb(s->json, s->len, 0, &jerr);
    json_t *qs = root ? json_object_get(root, "questions") : NULL;
    if (!json_is_array(qs)) {
        log_warn("snapshot generation=%" PRIu64 " is not valid: %s", gen,
                 root ? "no questions array" : jerr.text);
        goto err;
    }
    size_t n = json_array_size(qs);
    s->qids = calloc(n ? n : 1, sizeof(*s->qids));
    s->qjson = calloc(n ? n : 1, sizeof(*s->qjson));
    s->qlen = calloc(n ? n : 1, sizeof(*s->qlen));
    if (!s->qids || !s->qjson || !s->qlen)
        goto err;
    for (size_t i = 0; i < n; i++) {
        json_t *q = json_array_get(qs, i);
        json_t *id = json_object_get(q, "id");
        if (!json_is_integer(id))
            continue;
        char *text = json_dumps(q, JSON_COMPACT);
        if (text == NULL)
            goto err;
        s->qids[s->n] = (uint32_t)json_integer_value(id);
        s->qjson[s->n] = text;
        s->qlen[s->n] = strlen(text);
        s->n++;
    }
    json_decref(root);
    return s;
err:
    json_decref(root);
    free(json);
    snapshot_free(s);
    return NULL;
}

static void poll_run(struct store *st, void *arg)
{
    struct poll_job *j = arg;
    const char *event = j->d->ef->name;
    uint64_t gen;
    j->status = snapstore_generation(st, event, &gen);
    if (j->status != STORE_OK || gen == j->known_generation)
        return;
    char *json;
    size_t len;
    j->status = snapstore_fetch(st, event, &gen, &json, &len);
    if (j->status != STORE_OK)
        return;
    j->fresh = snapshot_build(gen, json, len);
    if (j->fresh == NULL)
        j->status = STORE_ERROR;
}

static void poll_done(void *arg)
{
    struct poll_job *j = arg;
    struct dashboard *d = j->d;
    d->poll_running = false;
    if (j->status == STORE_OK && j->fresh) {
        snapshot_free(d->current);
        d->current = j->fresh;
        d->current_mono_ms = util_mono_ms();
    } else if (j->status != STORE_OK && j->status != STORE_NOTFOUND) {
        d->poll_failures++;
        log_warn("snapshot poll failed status=%s", store_status_str(j->status));
    }
    free(j);
}

static void on_poll_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dashboard *d = arg;
    if (d->poll_running)
        return;
    struct poll_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->d = d;
    j->known_generation = d->current ? d->current->generation : 0;
    if (worker_submit(d->worker, poll_run, poll_done, j))
        d->poll_running = true;
    else
        free(j);
}

static void count_status(struct dashboard *d, int code)
{
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_codes[i] == code)
            d->requests[i]++;
}

static void reply_error(struct dashboard *d, struct evhttp_request *req, int code,
                        const char *error)
{
    count_status(d, code);
    http_reply_error(req, code, error, NULL, code == 503 ? 1 : 0);
}

static bool get_only(struct dashboard *d, struct evhttp_request *req)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
        return true;
    reply_error(d, req, 405, "method_not_allowed");
    return false;
}

static void reply_json(struct dashboard *d, struct evhttp_request *req, const char *json,
                       size_t len)
{
    count_status(d, 200);
    http_reply_json(req, 200, json, len);
}

static void handle_question(struct dashboard *d, struct evhttp_request *req, const char *idtext)
{
    uint32_t id;
    if (!util_parse_u32(idtext, 0, UINT32_MAX, &id) || eventfile_question(d->ef, id) == NULL) {
        reply_error(d, req, 404, "unknown_question");
        return;
    }
    if (d->current == NULL) {
        reply_error(d, req, 503, "no_snapshot_yet");
        return;
    }
    for (size_t i = 0; i < d->current->n; i++) {
        if (d->current->qids[i] == id) {
            reply_json(d, req, d->current->qjson[i], d->current->qlen[i]);
            return;
        }
    }
    /* The event file knows it but the snapshot was built from another one. */
    reply_error(d, req, 404, "unknown_question");
}

bool dashboard_handle(struct dashboard *d, struct evhttp_request *req, const char *path)
{
    if (strcmp(path, "/v1/stats") == 0) {
        if (!get_only(d, req))
            return true;
        if (d->current == NULL)
            reply_error(d, req, 503, "no_snapshot_yet");
        else
            reply_json(d, req, d->current->json, d->current->len);
        return true;
    }
    if (strncmp(path, QUESTION_PREFIX, strlen(QUESTION_PREFIX)) == 0) {
        if (get_only(d, req))
            handle_question(d, req, path + strlen(QUESTION_PREFIX));
        return true;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        if (!get_only(d, req))
            return true;
        count_status(d, 200);
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            reply_error(d, req, 503, "overloaded");
            return true;
        }
        evbuffer_add_reference(out, page_html, page_html_len, NULL, NULL);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/html; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
        return true;
    }
    return false;
}

uint64_t dashboard_generation(const struct dashboard *d)
{
    return d->current ? d->current->generation : 0;
}

void dashboard_write_metrics(struct dashboard *d, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "# HELP livetally_dashboard_requests_total Dashboard HTTP responses by status\n"
                        "# TYPE livetally_dashboard_requests_total counter\n");
    for (size_t i = 0; i < N_STATUS; i++)
        evbuffer_add_printf(out, "livetally_dashboard_requests_total{code=\"%d\"} %" PRIu64 "\n",
                            status_codes[i], d->requests[i]);
    double age = d->current ? (double)(util_mono_ms() - d->current_mono_ms) / 1000.0 : -1;
    evbuffer_add_printf(out,
                        "# HELP livetally_dashboard_snapshot_generation Generation being served\n"
                        "# TYPE livetally_dashboard_snapshot_generation gauge\n"
                        "livetally_dashboard_snapshot_generation %" PRIu64 "\n"
                        "# HELP livetally_dashboard_snapshot_age_seconds Since the served snapshot arrived (-1: none)\n"
                        "# TYPE livetally_dashboard_snapshot_age_seconds gauge\n"
                        "livetally_dashboard_snapshot_age_seconds %.3f\n"
                        "# HELP livetally_dashboard_poll_failures_total Failed snapshot reads\n"
                        "# TYPE livetally_dashboard_poll_failures_total counter\n"
                        "livetally_dashboard_poll_failures_total %" PRIu64 "\n",
                        dashboard_generation(d), age, d->poll_failures);
}

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
    d->worker = worker_start("dashboard-store", store, base, 4);
    d->poll_timer = event_new(base, -1, EV_PERSIST, on_poll_timer, d);
    struct timeval tv = {.tv_sec = d->cfg.poll_ms / 1000,
                         .tv_usec = (suseconds_t)(d->cfg.poll_ms % 1000) * 1000};
    if (d->worker == NULL || d->poll_timer == NULL || event_add(d->poll_timer, &tv) != 0) {
        snprintf(err, errlen, "cannot start the snapshot poller");
        dashboard_free(d);
        return NULL;
    }
    on_poll_timer(-1, 0, d); /* the first look right away */
    return d;
}

void dashboard_free(struct dashboard *d)
{
    if (d == NULL)
        return;
    if (d->poll_timer)
        event_free(d->poll_timer);
    worker_stop(d->worker);
    snapshot_free(d->current);
    free(d);
}
