#include "ingest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "answer.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "qstate.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define WORKER_MAX_JOBS 256
#define ADMIN_PREFIX "/v1/admin/questions/"

/* Status codes the ingest answers with, for requests_total{code=...}. */
static const int status_codes[] = {200, 202, 204, 400, 401, 404, 405, 409, 413, 415, 503};
#define N_STATUS LT_ARRAY_LEN(status_codes)

struct ingest {
    struct event_base *base;       /* (ref) */
    const struct eventfile *ef;    /* (ref) */
    struct ingest_config cfg;
    struct worker *worker;
    struct committer *committer;
    struct qstate *states;         /* owned, ef->n_questions; refreshed from the store */
    struct qstate *refresh_buf;    /* owned: the refresh job writes here */
    bool refresh_running;
    enum store_status refresh_status;
    bool states_initialised;       /* "open": true questions added to the store */
    struct event *refresh_timer;
    struct util_rng rng;
    bool draining;
    uint64_t requests[N_STATUS];
    uint64_t answers_received;
};

static void count_status(struct ingest *ig, int code)
{
    for (size_t i = 0; i < N_STATUS; i++) {
        if (status_codes[i] == code) {
            ig->requests[i]++;
            return;
        }
    }
}

static void reply_error(struct ingest *ig, struct evhttp_request *req, int code, const char *error,
                        const char *field)
{
    count_status(ig, code);
    http_reply_error(req, code, error, field, code == 503 ? 1 : 0);
}

/* ---- answers ---------------------------------------------------------- */

struct pending_answer {
    struct ingest *ig;
    struct evhttp_request *req;
};

static void on_committed(void *arg, enum commit_result r)
{
    struct pending_answer *p = arg;
    if (r == COMMIT_OK) {
        static const char accepted[] = "{\"status\":\"accepted\"}";
        count_status(p->ig, 202);
        http_reply_json(p->req, 202, accepted, sizeof(accepted) - 1);
    } else {
        reply_error(p->ig, p->req, 503, "backend_unavailable", NULL);
    }
    free(p);
}

static void handle_answer(struct ingest *ig, struct evhttp_request *req)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_error(ig, req, 405, "method_not_allowed", NULL);
        return;
    }
    ig->answers_received++;
    if (ig->draining) {
        reply_error(ig, req, 503, "draining", NULL);
        return;
    }
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!answer_content_type_ok(ct)) {
        reply_error(ig, req, 415, "unsupported_media_type", NULL);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > HTTP_MAX_BODY) {
        reply_error(ig, req, 413, "body_too_large", NULL);
        return;
    }
    const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    if (body == NULL)
        body = "";

    struct answer a;
    struct answer_error aerr;
    if (!answer_parse(ig->ef, body, len, &a, &aerr)) {
        reply_error(ig, req, aerr.status, aerr.error, aerr.field);
        return;
    }
    const struct qstate *st = &ig->states[a.question_index];
    if (st->kind == QSTATE_NOT_OPEN) {
        reply_error(ig, req, 409, "question_not_open", NULL);
        return;
    }
    if (st->kind == QSTATE_CLOSED) {
        reply_error(ig, req, 409, "question_closed", NULL);
        return;
    }

    struct answer_counters ac;
    struct answer_keys keys;
    answer_counters(ig->ef, &a, &ac);
    keys_for_answer(ig->ef, &ac, &ig->rng, &keys);

    struct pending_answer *p = malloc(sizeof(*p));
    if (p == NULL) {
        reply_error(ig, req, 503, "overloaded", NULL);
        return;
    }
    p->ig = ig;
    p->req = req;
    enum commit_refusal r = committer_submit(ig->committer, &keys, on_committed, p);
    if (r != COMMIT_ACCEPTED) {
        free(p);
        reply_error(ig, req, 503, r == COMMIT_DRAINING ? "draining" : "overloaded", NULL);
    }
}

/* ---- admin ------------------------------------------------------------ */

enum admin_op { ADMIN_OPEN, ADMIN_CLOSE };

struct admin_job {
    struct ingest *ig;
    struct evhttp_request *req;
    enum admin_op op;
    int qindex;
    uint64_t now_ms;
    /* results */
    enum store_status status;
    bool conflict;           /* close of a question never opened */
    struct qstate result;
};

static void admin_run(struct store *s, void *arg)
{
    struct admin_job *j = arg;
    const struct eventfile *ef = j->ig->ef;
    uint32_t qid = ef->questions[j->qindex].id;
    char key[KEY_MAX];
    size_t klen = key_state(key, ef->name, qid);

    struct qstate cur = {.kind = QSTATE_NOT_OPEN};
    char *val = NULL;
    size_t vlen;
    j->status = store_get(s, key, klen, &val, &vlen);
    if (j->status == STORE_OK) {
        if (!qstate_parse(val, vlen, &cur)) {
            log_warn("unparsable question state key=%s: overwriting", key);
            cur.kind = QSTATE_NOT_OPEN;
        }
    } else if (j->status != STORE_NOTFOUND) {
        free(val);
        return;
    }
    free(val);
    j->status = STORE_OK;

    struct qstate next = cur;
    if (j->op == ADMIN_OPEN) {
        if (cur.kind == QSTATE_OPEN) {
            j->result = cur;
            return;
        }
        next = (struct qstate){.kind = QSTATE_OPEN, .open_ms = j->now_ms};
    } else {
        if (cur.kind == QSTATE_NOT_OPEN) {
            j->conflict = true;
            return;
        }
        if (cur.kind == QSTATE_CLOSED) {
            j->result = cur;
            return;
        }
        next = (struct qstate){.kind = QSTATE_CLOSED, .open_ms = cur.open_ms, .close_ms = j->now_ms};
    }
    j->status = qstate_write(s, ef, qid, &next);
    j->result = next;
}

static void admin_done(void *arg)
{
    struct admin_job *j = arg;
    struct ingest *ig = j->ig;
    if (j->status != STORE_OK) {
        reply_error(ig, j->req, 503, "backend_unavailable", NULL);
    } else if (j->conflict) {
        reply_error(ig, j->req, 409, "question_not_open", NULL);
    } else {
        ig->states[j->qindex] = j->result;
        log_info("question %s id=%" PRIu32, qstate_kind_str(j->result.kind),
                 ig->ef->questions[j->qindex].id);
        count_status(ig, 204);
        http_reply_empty(j->req, 204);
    }
    free(j);
}

static void handle_admin(struct ingest *ig, struct evhttp_request *req, const char *path)
{
    const char *rest = path + strlen(ADMIN_PREFIX);
    char idbuf[16];
    size_t idlen = strcspn(rest, "/");
    const char *action = rest + idlen;
    enum admin_op op;
    if (strcmp(action, "/open") == 0) {
        op = ADMIN_OPEN;
    } else if (strcmp(action, "/close") == 0) {
        op = ADMIN_CLOSE;
    } else {
        reply_error(ig, req, 404, "not_found", NULL);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_error(ig, req, 405, "method_not_allowed", NULL);
        return;
    }
    if (ig->cfg.admin_token == NULL) {
        reply_error(ig, req, 401, "admin_disabled", NULL);
        return;
    }
    if (!http_bearer_ok(req, ig->cfg.admin_token)) {
        reply_error(ig, req, 401, "unauthorized", NULL);
        return;
    }
    uint32_t qid;
    if (idlen == 0 || idlen >= sizeof(idbuf)) {
        reply_error(ig, req, 404, "unknown_question", NULL);
        return;
    }
    memcpy(idbuf, rest, idlen);
    idbuf[idlen] = '\0';
    int qindex = -1;
    if (util_parse_u32(idbuf, 0, UINT32_MAX, &qid))
        qindex = eventfile_question_index(ig->ef, qid);
    if (qindex < 0) {
        reply_error(ig, req, 404, "unknown_question", NULL);
        return;
    }

    struct admin_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        reply_error(ig, req, 503, "overloaded", NULL);
        return;
    }
    *j = (struct admin_job){
        .ig = ig, .req = req, .op = op, .qindex = qindex, .now_ms = util_wall_ms()};
    if (!worker_submit(ig->worker, admin_run, admin_done, j)) {
        free(j);
        reply_error(ig, req, 503, "overloaded", NULL);
    }
}

bool ingest_handle(struct ingest *ig, struct evhttp_request *req, const char *path)
{
    if (strcmp(path, "/v1/answers") == 0) {
        handle_answer(ig, req);
        return true;
    }
    if (strncmp(path, ADMIN_PREFIX, strlen(ADMIN_PREFIX)) == 0) {
        handle_admin(ig, req, path);
        return true;
    }
    return false;
}

/* ---- question state refresh ------------------------------------------- */

static void refresh_run(struct store *s, void *arg)
{
    struct ingest *ig = arg;
    if (!ig->states_initialised) {
        if (qstate_init_open(s, ig->ef, util_wall_ms()) != STORE_OK) {
            ig->refresh_status = STORE_UNAVAILABLE;
            return;
        }
    }
    ig->refresh_status = qstate_fetch_all(s, ig->ef, ig->refresh_buf);
}

static void refresh_done(void *arg)
{
    struct ingest *ig = arg;
    ig->refresh_running = false;
    if (ig->refresh_status == STORE_OK) {
        if (!ig->states_initialised)
            log_info("question states loaded questions=%" PRIu32, ig->ef->n_questions);
        ig->states_initialised = true;
        memcpy(ig->states, ig->refresh_buf, ig->ef->n_questions * sizeof(*ig->states));
    } else {
        log_warn("question state refresh failed status=%s",
                 store_status_str(ig->refresh_status));
    }
}

static void on_refresh_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ingest *ig = arg;
    if (!ig->refresh_running && worker_submit(ig->worker, refresh_run, refresh_done, ig))
        ig->refresh_running = true;
}

/* ---- lifecycle -------------------------------------------------------- */

struct ingest *ingest_create(struct event_base *base, const struct eventfile *ef,
                             struct store *store, const struct ingest_config *cfg, char *err,
                             size_t errlen)
{
    struct ingest *ig = calloc(1, sizeof(*ig));
    if (ig == NULL) {
        snprintf(err, errlen, "out of memory");
        store_close(store);
        return NULL;
    }
    ig->base = base;
    ig->ef = ef;
    ig->cfg = *cfg;
    ig->states = calloc(ef->n_questions, sizeof(*ig->states));
    ig->refresh_buf = calloc(ef->n_questions, sizeof(*ig->refresh_buf));
    if (ig->states == NULL || ig->refresh_buf == NULL) {
        snprintf(err, errlen, "out of memory");
        store_close(store);
        goto err;
    }

    /* The first state read happens before serving: answers must not be
     * refused as not open just because the cache is still empty. A store
     * that is down now is not fatal: the refresh keeps trying. */
    if (qstate_init_open(store, ef, util_wall_ms()) == STORE_OK &&
        qstate_fetch_all(store, ef, ig->states) == STORE_OK) {
        ig->states_initialised = true;
    } else {
        log_warn("store not reachable at start: question states will load when it is");
    }

    ig->worker = worker_start("ingest-store", store, base, WORKER_MAX_JOBS);
    if (ig->worker == NULL) {
        snprintf(err, errlen, "cannot start the store thread");
        goto err;
    }
    ig->committer = committer_create(base, ig->worker, &cfg->commit);
    if (ig->committer == NULL) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = util_mono_us() ^ (uint64_t)(uintptr_t)ig;
    util_rng_seed(&ig->rng, seed);

    ig->refresh_timer = event_new(base, -1, EV_PERSIST, on_refresh_timer, ig);
    uint32_t ms = cfg->state_refresh_ms ? cfg->state_refresh_ms : 500;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (ig->refresh_timer == NULL || event_add(ig->refresh_timer, &tv) != 0) {
        snprintf(err, errlen, "cannot start the state refresh timer");
        goto err;
    }
    return ig;

err:
    ingest_free(ig);
    return NULL;
}

bool ingest_draining(const struct ingest *ig)
{
    return ig->draining;
}

void ingest_drain(struct ingest *ig, void (*drained)(void *arg), void *arg)
{
    ig->draining = true;
    committer_drain(ig->committer, drained, arg);
}

void ingest_free(struct ingest *ig)
{
    if (ig == NULL)
        return;
    if (ig->refresh_timer)
        event_free(ig->refresh_timer);
    /* Stopping the worker runs the queued jobs and their callbacks, which
     * answer every request still waiting. */
    worker_stop(ig->worker);
    committer_free(ig->committer);
    free(ig->states);
    free(ig->refresh_buf);
    free(ig);
}

/* ---- metrics ---------------------------------------------------------- */

/* Each metric once: name, type, help, how to read it. */
#define INGEST_METRICS(X)                                                                          \
    X(livetally_ingest_answers_received_total, counter, "POST /v1/answers received",              \
      ig->answers_received)                                                                        \
    X(livetally_ingest_answers_acknowledged_total, counter, "Answers confirmed by the store (202)", \
      cs.acked)                                                                                    \
    X(livetally_ingest_answers_unconfirmed_total, counter,                                         \
      "Answers answered 503 backend_unavailable after the store deadline", cs.failed)              \
    X(livetally_ingest_batches_total, counter, "Batches written to the store", cs.batches)        \
    X(livetally_ingest_batch_keys_total, counter, "Distinct keys written, summed over batches",   \
      cs.batch_keys)                                                                               \
    X(livetally_ingest_increments_total, counter, "Counter increments folded into batches",       \
      cs.increments)                                                                               \
    X(livetally_ingest_store_retries_total, counter, "Batch retries after a store failure",       \
      cs.store_retries)                                                                            \
    X(livetally_ingest_carried_keys_total, counter,                                                \
      "Unconfirmed increments carried to a later batch", cs.carried_keys)                         \
    X(livetally_ingest_uncertain_increments_total, counter,                                        \
      "Increments whose store reply was lost: maybe applied, never resent", cs.uncertain)          \
    X(livetally_ingest_last_flush_seconds, gauge, "Duration of the last batch write",             \
      (double)cs.last_flush_us / 1e6)                                                              \
    X(livetally_ingest_waiting_answers, gauge, "Answers waiting for the store", cs.waiting)       \
    X(livetally_ingest_carry_keys, gauge, "Increments pending a retry", cs.carry)                 \
    X(livetally_ingest_open_batch_keys, gauge, "Keys in the batch being filled", cs.open_keys)    \
    X(livetally_ingest_draining, gauge, "1 while draining", ig->draining ? 1 : 0)

void ingest_write_metrics(struct ingest *ig, struct evbuffer *out)
{
    struct commit_stats cs;
    committer_get_stats(ig->committer, &cs);
    evbuffer_add_printf(out,
                        "# HELP livetally_ingest_requests_total Ingest HTTP responses by status\n"
                        "# TYPE livetally_ingest_requests_total counter\n");
    for (size_t i = 0; i < N_STATUS; i++)
        evbuffer_add_printf(out, "livetally_ingest_requests_total{code=\"%d\"} %" PRIu64 "\n",
                            status_codes[i], ig->requests[i]);
#define X(name, type, help, value)                                                                 \
    evbuffer_add_printf(out, "# HELP " #name " " help "\n# TYPE " #name " " #type "\n" #name       \
                             " %.17g\n",                                                           \
                        (double)(value));
    INGEST_METRICS(X)
#undef X
}
