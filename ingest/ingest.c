#include "ingest.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "admin_guard.h"
#include "answer.h"
#include "fans.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "pool_record.h"
#include "qstate.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define WORKER_MAX_JOBS 256
/* Answers held per thread while the store is asked whether their question
 * opened (the first second of a question: thousands); past it the thread's
 * own knowledge answers (409). */
#define INGEST_HELD_MAX 16384
/* A drain waits this long at most for the replicas to catch up (hints and
 * lagging connections written out) before the process ends. */
#define INGEST_DRAIN_REPLAY_MS 3000u
#define ADMIN_PREFIX "/v1/admin/questions/"
#define MAX_INSTANCES 256
/* The fans list goes to the store this often when it changed, and at least
 * every FANS_REFRESH_MS anyway (a store node restarted empty gets it back). */
#define FANS_PUBLISH_MS 1000
#define FANS_REFRESH_MS 30000

/* Status codes the ingest answers with, for requests_total{code=...}. */
static const int status_codes[] = {202, 204, 400, 401, 404, 405, 409, 413, 415, 429, 503};
#define N_STATUS LT_ARRAY_LEN(status_codes)

/* What one instance last published. */
struct ingest_figures {
    bool in_use;
    uint64_t requests[N_STATUS];
    uint64_t answers_received;
    uint64_t admin_refused;
    uint64_t admin_throttled;
    struct metrics_hist latency;
    struct commit_stats cs;
    struct httpd_stats hs;
    struct store_stats ss;           /* the instance's store handles, summed */
    uint64_t fans_publishes;
    uint64_t fans_failures;
    uint64_t answers_held;
};

struct ingest_shared {
    const struct eventfile *ef;      /* (ref) */
    pthread_mutex_t lock;
    struct qstate *states;           /* owned; guarded by lock */
    atomic_uint_fast64_t version;    /* bumped on every change of states */
    atomic_bool draining;
    atomic_bool leaving;             /* the drain delay: /healthz 503, answers taken */
    atomic_bool states_loaded;       /* the store has answered at least once */
    atomic_bool store_reachable;     /* the last question state refresh got its answer */
    atomic_uint_fast64_t state_read_ms; /* how long the last refresh's state read took */
    /* Wall ms when the newest state read that succeeded began: it saw every
     * close written before, so no close it missed is due before this plus
     * QSTATE_CLOSE_DELAY_MS (states_fresh). */
    atomic_uint_fast64_t states_read_ms;
    struct ingest_figures figures[MAX_INSTANCES]; /* guarded by lock */
    struct admin_guard *admin_guard; /* owned; locks itself */
};

struct ingest {
    struct event_base *base;         /* (ref) */
    const struct eventfile *ef;      /* (ref) */
    struct ingest_shared *sh;        /* (ref) */
    int slot;                        /* index in sh->figures */
    struct ingest_config cfg;
    struct worker *worker;
    struct store *loop_store;        /* owned: the loop's own handle on the store */
    struct committer *committer;
    struct qstate *states;           /* owned: this thread's copy of sh->states */
    uint64_t states_version;
    bool refresher;
    struct qstate *refresh_buf;      /* owned: the refresh job writes here */
    struct qstate *refresh_known;    /* owned: the states known when it started */
    bool refresh_running;
    enum store_status refresh_status;
    uint64_t refresh_read_ms;        /* wall ms: when the refresh job's read began */
    uint64_t writing_said_ms;        /* monotonic: the last {event}:pool:{e}:writing set */
    bool states_initialised;         /* "open": true questions added to the store */
    struct event *refresh_timer;
    /* Answers to a question this thread knows as not open, held while the
     * store is asked again: another node may have opened it since the last
     * refresh. */
    struct held_answer *held;        /* owned list, oldest first */
    struct held_answer **held_tail;
    size_t n_held;
    bool check_running;              /* a state read for them is out */
    bool check_abandoned;            /* ingest_free: its end only frees */
    struct qstate *check_buf;        /* owned: that read writes here */
    bool *check_unsure;              /* owned: not open only on the replicas that answered */
    uint64_t check_read_ms;          /* wall ms: when that read began */
    struct admin_job *closes;        /* owned: closes whose 204 waits for their time */
    enum store_status check_status;
    /* the ultimate fans: this instance's top list (fans.h), loop thread */
    struct fans_topk fans;
    struct event *fans_timer;
    bool fans_running;         /* a publish job is out */
    bool hints_running;        /* a hint replay job is out */
    uint64_t fans_slot;        /* {event}:fans:{slot}; 0 until the store gave one */
    uint64_t fans_owner;       /* random: marks the lists this instance writes */
    uint64_t fans_published_ms; /* monotonic, last successful publish */
    char fans_json[FANS_JSON_MAX]; /* the publish job's text; written on the loop */
    size_t fans_len;
    enum store_status fans_status;
    uint64_t fans_publishes;   /* successful */
    uint64_t fans_failures;
    void (*drained)(void *arg);
    void *drained_arg;
    struct event *drain_replay;      /* owned: while the drain replays hints */
    uint64_t drain_replay_until_ms;  /* monotonic */
    bool drain_fans;           /* the drain waits for the last fans publish */
    bool drain_final_sent;
    struct util_rng rng;
    uint64_t requests[N_STATUS];
    uint64_t answers_received;
    uint64_t admin_refused;          /* admin requests with a wrong or no token */
    uint64_t admin_throttled;        /* admin requests refused 429: their address locked out */
    uint64_t admin_refused_logged;
    uint64_t admin_refused_log_ms;   /* monotonic, the last such line */
    uint64_t answers_held;           /* hold_answer: waited for a state read */
    struct metrics_hist latency;     /* valid answer -> reply */
};

/* ---- shared ----------------------------------------------------------- */

struct ingest_shared *ingest_shared_create(const struct eventfile *ef)
{
    struct ingest_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    sh->ef = ef;
    sh->states = calloc(ef->n_questions ? ef->n_questions : 1, sizeof(*sh->states));
    if (sh->states == NULL) {
        free(sh);
        return NULL;
    }
    if ((sh->admin_guard = admin_guard_new()) == NULL) {
        free(sh->states);
        free(sh);
        return NULL;
    }
    pthread_mutex_init(&sh->lock, NULL);
    atomic_init(&sh->version, 1);
    atomic_init(&sh->draining, false);
    atomic_init(&sh->leaving, false);
    atomic_init(&sh->store_reachable, false);
    atomic_init(&sh->states_loaded, false);
    atomic_init(&sh->states_read_ms, 0);
    atomic_init(&sh->state_read_ms, 0);
    return sh;
}

void ingest_shared_free(struct ingest_shared *sh)
{
    if (sh == NULL)
        return;
    pthread_mutex_destroy(&sh->lock);
    admin_guard_free(sh->admin_guard);
    free(sh->states);
    free(sh);
}

void ingest_shared_set_draining(struct ingest_shared *sh)
{
    atomic_store(&sh->draining, true);
}

bool ingest_shared_draining(const struct ingest_shared *sh)
{
    return atomic_load(&((struct ingest_shared *)sh)->draining);
}

int ingest_health(struct ingest *ig, char *body, size_t len)
{
    bool healthy = ingest_shared_healthy(ig->sh);
    bool reachable = atomic_load(&ig->sh->store_reachable);
    size_t nodes = store_node_count(ig->loop_store);
    size_t down = store_nodes_down(ig->loop_store);
    int n = snprintf(body, len, "{\"status\":\"%s\",\"store\":\"%s\"",
                     healthy ? "ok" : "draining", reachable ? "reachable" : "unreachable");
    if (nodes > 0 && n > 0 && (size_t)n < len)
        n += snprintf(body + n, len - (size_t)n, ",\"store_nodes\":%zu,\"store_nodes_down\":%zu",
                      nodes, down);
    if (n > 0 && (size_t)n < len)
        snprintf(body + n, len - (size_t)n, "}");
    return healthy ? 200 : 503;
}

void ingest_shared_set_leaving(struct ingest_shared *sh)
{
    atomic_store(&sh->leaving, true);
}

bool ingest_shared_healthy(const struct ingest_shared *sh)
{
    struct ingest_shared *w = (struct ingest_shared *)sh;
    return !atomic_load(&w->leaving) && !atomic_load(&w->draining);
}

static void shared_publish_states(struct ingest_shared *sh, const struct qstate *states)
{
    atomic_store(&sh->states_loaded, true);
    pthread_mutex_lock(&sh->lock);
    /* Field by field: a struct's padding may hold anything. */
    bool changed = false;
    for (uint32_t i = 0; i < sh->ef->n_questions && !changed; i++)
        changed = sh->states[i].kind != states[i].kind ||
                  sh->states[i].open_ms != states[i].open_ms ||
                  sh->states[i].close_ms != states[i].close_ms;
    if (changed) {
        memcpy(sh->states, states, sh->ef->n_questions * sizeof(*states));
        atomic_fetch_add(&sh->version, 1);
    }
    pthread_mutex_unlock(&sh->lock);
}

/* A state read that began at read_ms succeeded. */
static void shared_note_read(struct ingest_shared *sh, uint64_t read_ms)
{
    uint_fast64_t cur = atomic_load(&sh->states_read_ms);
    while (cur < read_ms && !atomic_compare_exchange_weak(&sh->states_read_ms, &cur, read_ms))
        ;
}

/* Whether an answer received at now_ms may be taken on the states known
 * here: a close this node has not read yet was written after its last read
 * began, so it takes effect QSTATE_CLOSE_DELAY_MS after that at the
 * earliest. Past that the store is asked first (hold_answer). */
static bool states_fresh(const struct ingest_shared *sh, uint64_t now_ms)
{
    uint64_t read_ms = atomic_load(&((struct ingest_shared *)sh)->states_read_ms);
    return now_ms < read_ms + QSTATE_CLOSE_DELAY_MS;
}

/* The state would have an answer received at now_ms counted. */
static bool state_takes(const struct qstate *st, uint64_t now_ms)
{
    return st->kind == QSTATE_OPEN || (st->kind == QSTATE_CLOSED && now_ms < st->close_ms);
}

static void shared_publish_one(struct ingest_shared *sh, int qindex, const struct qstate *st)
{
    pthread_mutex_lock(&sh->lock);
    sh->states[qindex] = *st;
    atomic_fetch_add(&sh->version, 1);
    pthread_mutex_unlock(&sh->lock);
}

/* One relaxed load per request; the copy happens only after a change. */
static const struct qstate *current_states(struct ingest *ig)
{
    uint64_t v = atomic_load_explicit(&ig->sh->version, memory_order_acquire);
    if (v != ig->states_version) {
        pthread_mutex_lock(&ig->sh->lock);
        memcpy(ig->states, ig->sh->states, ig->ef->n_questions * sizeof(*ig->states));
        ig->states_version = atomic_load(&ig->sh->version);
        pthread_mutex_unlock(&ig->sh->lock);
    }
    return ig->states;
}

/* ---- replies ---------------------------------------------------------- */

static void count_status(struct ingest *ig, int code)
{
    for (size_t i = 0; i < N_STATUS; i++) {
        if (status_codes[i] == code) {
            ig->requests[i]++;
            return;
        }
    }
}

static void reply_error(struct ingest *ig, ingest_reply_fn reply, void *ctx, int code,
                        const char *error, const char *field)
{
    char buf[160];
    int n = field ? snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"field\":\"%s\"}", error, field)
                  : snprintf(buf, sizeof(buf), "{\"error\":\"%s\"}", error);
    count_status(ig, code);
    reply(ctx, code, buf, (size_t)n, code == 503 ? "Retry-After: 1\r\n" : NULL);
}

/* ---- answers ---------------------------------------------------------- */

struct pending_answer {
    struct ingest *ig;
    ingest_reply_fn reply;
    void *ctx;
    uint64_t start_us;
};

static void on_committed(void *arg, enum commit_result r)
{
    struct pending_answer *p = arg;
    metrics_hist_add(&p->ig->latency, util_mono_us() - p->start_us);
    if (r == COMMIT_OK) {
        static const char accepted[] = "{\"status\":\"accepted\"}";
        count_status(p->ig, 202);
        p->reply(p->ctx, 202, accepted, sizeof(accepted) - 1, NULL);
    } else if (r == COMMIT_DUPLICATE) {
        reply_error(p->ig, p->reply, p->ctx, 409, "duplicate_answer", NULL);
    } else if (r == COMMIT_UNCONFIRMED) {
        reply_error(p->ig, p->reply, p->ctx, 503, "unconfirmed", NULL);
    } else {
        reply_error(p->ig, p->reply, p->ctx, 503, "backend_unavailable", NULL);
    }
    free(p);
}

static void take_answer(struct ingest *ig, const struct answer *a, const struct qstate *st,
                        uint64_t now_ms, ingest_reply_fn reply, void *ctx);
static void hold_answer(struct ingest *ig, const struct answer *a, uint64_t now_ms,
                        ingest_reply_fn reply, void *ctx);

static void serve_answer(struct ingest *ig, const struct ingest_request *r, ingest_reply_fn reply,
                         void *ctx)
{
    if (r->method != HTTPD_POST) {
        reply_error(ig, reply, ctx, 405, "method_not_allowed", NULL);
        return;
    }
    ig->answers_received++;
    if (ingest_shared_draining(ig->sh)) {
        reply_error(ig, reply, ctx, 503, "draining", NULL);
        return;
    }
    if (!answer_content_type_ok(r->content_type)) {
        reply_error(ig, reply, ctx, 415, "unsupported_media_type", NULL);
        return;
    }
    if (r->too_large || r->body_len > HTTP_MAX_BODY) {
        reply_error(ig, reply, ctx, 413, "body_too_large", NULL);
        return;
    }
    struct answer a;
    struct answer_error aerr;
    if (!answer_parse(ig->ef, r->body, r->body_len, &a, &aerr)) {
        reply_error(ig, reply, ctx, aerr.status, aerr.error, aerr.field);
        return;
    }
    if (!atomic_load_explicit(&ig->sh->states_loaded, memory_order_acquire)) {
        /* No question state yet: the store has not answered since start-up.
         * Not the client's fault, so not a 409: retry later. */
        reply_error(ig, reply, ctx, 503, "backend_unavailable", NULL);
        return;
    }
    uint64_t now_ms = util_wall_ms();
    /* Freshness first: the states copied next are then at least those of
     * the read it vouches for (they are published before its time). */
    bool fresh = states_fresh(ig->sh, now_ms);
    const struct qstate *st = &current_states(ig)[a.question_index];
    if (st->kind == QSTATE_NOT_OPEN || (state_takes(st, now_ms) && !fresh)) {
        hold_answer(ig, &a, now_ms, reply, ctx);
        return;
    }
    take_answer(ig, &a, st, now_ms, reply, ctx);
}

/* An answer whose question's state is known: counted while it is open,
 * refused once it was closed at receive time (now_ms, wall clock). A close
 * takes effect QSTATE_CLOSE_DELAY_MS after it was asked, and a node takes
 * answers on its states only that long after its last read began
 * (states_fresh), so every node draws the line at the same instant. */
static void take_answer(struct ingest *ig, const struct answer *a, const struct qstate *st,
                        uint64_t now_ms, ingest_reply_fn reply, void *ctx)
{
    if (st->kind == QSTATE_NOT_OPEN) {
        reply_error(ig, reply, ctx, 409, "question_not_open", NULL);
        return;
    }
    if (st->kind == QSTATE_CLOSED && now_ms >= st->close_ms) {
        reply_error(ig, reply, ctx, 409, "question_closed", NULL);
        return;
    }

    struct answer_counters ac;
    uint32_t ids[KEYS_PER_ANSWER];
    answer_counters(ig->ef, a, &ac);
    keys_counters_for_answer(ig->ef, (uint32_t)a->question_index, &ac, ids);

    struct pending_answer *p = malloc(sizeof(*p));
    if (p == NULL) {
        reply_error(ig, reply, ctx, 503, "overloaded", NULL);
        return;
    }
    *p = (struct pending_answer){.ig = ig, .reply = reply, .ctx = ctx, .start_us = util_mono_us()};
    /* The answer time by the servers' clocks only: this receive time minus
     * the open time that the node opening the question wrote. */
    struct commit_user cu;
    if (a->has_user)
        cu = (struct commit_user){.user = a->user,
                                  .question = a->question,
                                  .right = ac.outcome == KEY_RIGHT,
                                  .ms = now_ms > st->open_ms ? now_ms - st->open_ms : 0};
    enum commit_refusal refusal =
        committer_submit(ig->committer, ids, a->has_user ? &cu : NULL, on_committed, p);
    if (refusal != COMMIT_ACCEPTED) {
        free(p);
        reply_error(ig, reply, ctx, 503, refusal == COMMIT_DRAINING ? "draining" : "overloaded",
                    NULL);
    }
}

/* ---- answers to a question not open here (yet) ------------------------ */

struct held_answer {
    struct held_answer *next;
    struct answer a;
    uint64_t recv_ms;        /* wall clock, when it arrived */
    ingest_reply_fn reply;
    void *ctx;
};

/* The held answers, oldest first; the list is empty after. */
static struct held_answer *held_take(struct ingest *ig)
{
    struct held_answer *h = ig->held;
    ig->held = NULL;
    ig->held_tail = &ig->held;
    ig->n_held = 0;
    return h;
}

static void check_run(struct store *s, void *arg)
{
    struct ingest *ig = arg;
    ig->check_read_ms = util_wall_ms();
    ig->check_status = qstate_fetch_unsure(s, ig->ef, ig->check_buf, ig->check_unsure);
}

/* What the store said about the questions: a state that is not "not open"
 * is news (a question never goes back to not open), published to every
 * thread; then each held answer is taken or refused by the state it now
 * has here. When the store did not answer, or the question reads as not
 * open only because a replica that may hold its state did not (its peer
 * back empty), the answer gets a 503 (not counted: its retry is exact): a
 * 409 question_not_open would end the fan's try for a question that may
 * well be open. */
static void check_done(void *arg)
{
    struct ingest *ig = arg;
    ig->check_running = false;
    if (ig->check_abandoned)
        return;
    if (ig->check_status == STORE_OK) {
        const struct qstate *cur = current_states(ig);
        for (uint32_t i = 0; i < ig->ef->n_questions; i++) {
            const struct qstate *got = &ig->check_buf[i];
            if (got->kind != QSTATE_NOT_OPEN &&
                (got->kind != cur[i].kind || got->open_ms != cur[i].open_ms ||
                 got->close_ms != cur[i].close_ms))
                shared_publish_one(ig->sh, (int)i, got);
        }
        shared_note_read(ig->sh, ig->check_read_ms);
    }
    struct held_answer *h = held_take(ig);
    while (h != NULL) {
        struct held_answer *next = h->next;
        bool fresh = states_fresh(ig->sh, h->recv_ms);
        const struct qstate *st = &current_states(ig)[h->a.question_index];
        bool unsure = st->kind == QSTATE_NOT_OPEN &&
                      (ig->check_status != STORE_OK || ig->check_unsure[h->a.question_index]);
        if ((state_takes(st, h->recv_ms) && !fresh) || unsure)
            reply_error(ig, h->reply, h->ctx, 503, "backend_unavailable", NULL);
        else
            take_answer(ig, &h->a, st, h->recv_ms, h->reply, h->ctx);
        free(h);
        h = next;
    }
}

static void hold_answer(struct ingest *ig, const struct answer *a, uint64_t now_ms,
                        ingest_reply_fn reply, void *ctx)
{
    struct held_answer *h = NULL;
    if (ig->n_held < INGEST_HELD_MAX && (h = malloc(sizeof(*h))) != NULL) {
        *h = (struct held_answer){.a = *a, .recv_ms = now_ms, .reply = reply, .ctx = ctx};
        if (!ig->check_running) {
            if (worker_submit(ig->worker, check_run, check_done, ig))
                ig->check_running = true;
            else {
                free(h);
                h = NULL;
            }
        }
    }
    if (h == NULL) { /* cannot ask: what this thread knows decides */
        if (current_states(ig)[a->question_index].kind == QSTATE_NOT_OPEN)
            reply_error(ig, reply, ctx, 409, "question_not_open", NULL);
        else
            reply_error(ig, reply, ctx, 503, "overloaded", NULL);
        return;
    }
    *ig->held_tail = h;
    ig->held_tail = &h->next;
    ig->n_held++;
    ig->answers_held++;
}

/* Held answers get 503 (never counted: a retry is exact). */
static void held_refuse(struct ingest *ig, const char *error)
{
    struct held_answer *h = held_take(ig);
    while (h != NULL) {
        struct held_answer *next = h->next;
        reply_error(ig, h->reply, h->ctx, 503, error, NULL);
        free(h);
        h = next;
    }
}

/* ---- admin ------------------------------------------------------------ */

enum admin_op { ADMIN_OPEN, ADMIN_CLOSE };

struct admin_job {
    struct ingest *ig;
    ingest_reply_fn reply;
    void *ctx;
    enum admin_op op;
    int qindex;
    uint64_t now_ms;
    /* results */
    uint64_t stored_ms;      /* wall ms: the store had the state by then */
    enum store_status status;
    bool conflict;           /* close of a question never opened */
    struct qstate result;
    /* a close's 204 waits for its close time (ig->closes) */
    struct event *due;
    struct admin_job *next_due;
};

static void admin_run(struct store *s, void *arg)
{
    struct admin_job *j = arg;
    const struct eventfile *ef = j->ig->ef;
    uint32_t qid = ef->questions[j->qindex].id;
    struct qstate cur;
    j->status = qstate_read(s, ef, qid, &cur);
    if (j->status == STORE_ERROR && cur.kind == QSTATE_NOT_OPEN) {
        log_warn("unparsable question state id=%" PRIu32 ": overwriting", qid);
    } else if (j->status != STORE_OK && j->status != STORE_NOTFOUND) {
        return;
    }
    j->status = STORE_OK;

    struct qstate next;
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
            j->stored_ms = util_wall_ms();
            return;
        }
        next = (struct qstate){.kind = QSTATE_CLOSED,
                               .open_ms = cur.open_ms,
                               .close_ms = j->now_ms + QSTATE_CLOSE_DELAY_MS};
    }
    j->status = qstate_write(s, ef, qid, &next);
    j->result = next;
    j->stored_ms = util_wall_ms();
}

static void admin_reply_done(struct admin_job *j)
{
    count_status(j->ig, 204);
    j->reply(j->ctx, 204, "", 0, NULL);
    free(j);
}

static void unlink_close(struct ingest *ig, struct admin_job *j)
{
    for (struct admin_job **p = &ig->closes; *p != NULL; p = &(*p)->next_due)
        if (*p == j) {
            *p = j->next_due;
            break;
        }
    event_free(j->due);
}

static void on_close_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin_job *j = arg;
    unlink_close(j->ig, j);
    admin_reply_done(j);
}

static void admin_done(void *arg)
{
    struct admin_job *j = arg;
    struct ingest *ig = j->ig;
    if (j->status != STORE_OK) {
        reply_error(ig, j->reply, j->ctx, 503, "backend_unavailable", NULL);
    } else if (j->conflict) {
        reply_error(ig, j->reply, j->ctx, 409, "question_not_open", NULL);
    } else {
        /* Every thread of this process sees it at once; other processes at
         * their next refresh. */
        shared_publish_one(ig->sh, j->qindex, &j->result);
        log_info("question %s id=%" PRIu32, qstate_kind_str(j->result.kind),
                 ig->ef->questions[j->qindex].id);
        /* A close is done at its close time, when every node applies it:
         * its 204 waits until then, and until QSTATE_CLOSE_DELAY_MS after
         * the store had it (a node whose last read began before that may
         * still take answers that long), so an answer sent after the 204
         * is refused whichever node it reaches. */
        uint64_t now = util_wall_ms();
        uint64_t due = j->result.close_ms;
        if (due < j->stored_ms + QSTATE_CLOSE_DELAY_MS)
            due = j->stored_ms + QSTATE_CLOSE_DELAY_MS;
        if (j->result.kind == QSTATE_CLOSED && due > now &&
            (j->due = evtimer_new(ig->base, on_close_due, j)) != NULL) {
            uint64_t ms = due - now;
            struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                                 .tv_usec = (suseconds_t)(ms % 1000) * 1000};
            if (evtimer_add(j->due, &tv) == 0) {
                j->next_due = ig->closes;
                ig->closes = j;
                return;
            }
            event_free(j->due);
        }
        admin_reply_done(j);
        return;
    }
    free(j);
}

/* The peer's numeric address, IPv4 for an IPv4-mapped one; "unknown"
 * without one. */
static void peer_address(const struct sockaddr *sa, char out[INGEST_ADDR_MAX])
{
    const void *addr = NULL;
    int af = AF_UNSPEC;
    if (sa != NULL && sa->sa_family == AF_INET) {
        af = AF_INET;
        addr = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        af = AF_INET6;
        addr = a6;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            af = AF_INET;
            addr = &a6->s6_addr[12];
        }
    }
    if (addr == NULL || inet_ntop(af, addr, out, INGEST_ADDR_MAX) == NULL)
        snprintf(out, INGEST_ADDR_MAX, "unknown");
}

/* Whom an admin request is slowed as: the peer, unless the peer is a
 * trusted proxy that said whom it forwards (the last X-Forwarded-For
 * element: what the proxy itself saw; earlier ones are the client's word). */
static void client_address(const struct ingest *ig, const struct ingest_request *r,
                           char out[INGEST_ADDR_MAX])
{
    peer_address(r->peer, out);
    if (r->forwarded_for == NULL)
        return;
    bool trusted = false;
    for (size_t i = 0; i < ig->cfg.n_trusted_proxies && !trusted; i++)
        trusted = strcmp(out, ig->cfg.trusted_proxies[i]) == 0;
    if (!trusted)
        return;
    const char *last = strrchr(r->forwarded_for, ',');
    last = last ? last + 1 : r->forwarded_for;
    last += strspn(last, " \t");
    size_t n = strcspn(last, " \t");
    if (n == 0)
        return;
    if (n >= INGEST_ADDR_MAX)
        n = INGEST_ADDR_MAX - 1;
    memcpy(out, last, n);
    out[n] = '\0';
}

bool ingest_parse_trusted_proxies(const char *list, struct ingest_config *ic, char *err,
                                  size_t errlen)
{
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        char one[INGEST_ADDR_MAX];
        unsigned char bin[sizeof(struct in6_addr)];
        int af = memchr(p, ':', n) ? AF_INET6 : AF_INET;
        if (n == 0 || n >= sizeof(one)) {
            snprintf(err, errlen, "expected numeric addresses separated by commas");
            return false;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        if (inet_pton(af, one, bin) != 1) {
            snprintf(err, errlen, "'%s' is not a numeric IPv4 or IPv6 address", one);
            return false;
        }
        if (ic->n_trusted_proxies == INGEST_MAX_TRUSTED_PROXIES) {
            snprintf(err, errlen, "at most %d trusted proxies", INGEST_MAX_TRUSTED_PROXIES);
            return false;
        }
        inet_ntop(af, bin, ic->trusted_proxies[ic->n_trusted_proxies++], INGEST_ADDR_MAX);
        if (p[n] == '\0')
            return true;
        p += n + 1;
    }
}

static void serve_admin(struct ingest *ig, const struct ingest_request *r, ingest_reply_fn reply,
                        void *ctx)
{
    const char *rest = r->path + strlen(ADMIN_PREFIX);
    size_t idlen = strcspn(rest, "/");
    const char *action = rest + idlen;
    enum admin_op op;
    if (strcmp(action, "/open") == 0) {
        op = ADMIN_OPEN;
    } else if (strcmp(action, "/close") == 0) {
        op = ADMIN_CLOSE;
    } else {
        reply_error(ig, reply, ctx, 404, "not_found", NULL);
        return;
    }
    if (r->method != HTTPD_POST) {
        reply_error(ig, reply, ctx, 405, "method_not_allowed", NULL);
        return;
    }
    if (ig->cfg.admin_token == NULL) {
        reply_error(ig, reply, ctx, 401, "admin_disabled", NULL);
        return;
    }
    /* The guard first, so a locked-out client learns nothing of its token. */
    char client[INGEST_ADDR_MAX];
    client_address(ig, r, client);
    uint64_t now = util_mono_ms();
    uint32_t wait_s = admin_guard_wait_s(ig->sh->admin_guard, client, now);
    if (wait_s > 0) {
        ig->admin_throttled++;
        char hdr[48];
        snprintf(hdr, sizeof(hdr), "Retry-After: %" PRIu32 "\r\n", wait_s);
        static const char body[] = "{\"error\":\"too_many_attempts\"}";
        count_status(ig, 429);
        reply(ctx, 429, body, sizeof(body) - 1, hdr);
        return;
    }
    if (!http_bearer_match(r->authorization, ig->cfg.admin_token)) {
        /* Counted and logged (never what was sent), a line a second at
         * most, so a guessing client shows without flooding the log. */
        ig->admin_refused++;
        uint32_t lock_ms = admin_guard_failed(ig->sh->admin_guard, client, now);
        if (ig->admin_refused_log_ms == 0 || now - ig->admin_refused_log_ms >= 1000) {
            log_warn("admin request refused: %s token path=%s client=%s locked_ms=%" PRIu32
                     " refused_since_last_line=%llu",
                     r->authorization ? "wrong" : "no", r->path, client, lock_ms,
                     (unsigned long long)(ig->admin_refused - ig->admin_refused_logged));
            ig->admin_refused_log_ms = now;
            ig->admin_refused_logged = ig->admin_refused;
        }
        reply_error(ig, reply, ctx, 401, "unauthorized", NULL);
        return;
    }
    admin_guard_succeeded(ig->sh->admin_guard, client);
    char idbuf[16];
    uint32_t qid;
    int qindex = -1;
    if (idlen > 0 && idlen < sizeof(idbuf)) {
        memcpy(idbuf, rest, idlen);
        idbuf[idlen] = '\0';
        if (util_parse_u32(idbuf, 0, UINT32_MAX, &qid))
            qindex = eventfile_question_index(ig->ef, qid);
    }
    if (qindex < 0) {
        reply_error(ig, reply, ctx, 404, "unknown_question", NULL);
        return;
    }
    struct admin_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        reply_error(ig, reply, ctx, 503, "overloaded", NULL);
        return;
    }
    *j = (struct admin_job){.ig = ig, .reply = reply, .ctx = ctx, .op = op, .qindex = qindex,
                            .now_ms = util_wall_ms()};
    if (!worker_submit(ig->worker, admin_run, admin_done, j)) {
        free(j);
        reply_error(ig, reply, ctx, 503, "overloaded", NULL);
    }
}

bool ingest_serve(struct ingest *ig, const struct ingest_request *r, ingest_reply_fn reply,
                  void *ctx)
{
    if (strcmp(r->path, "/v1/answers") == 0) {
        serve_answer(ig, r, reply, ctx);
        return true;
    }
    if (strncmp(r->path, ADMIN_PREFIX, strlen(ADMIN_PREFIX)) == 0) {
        serve_admin(ig, r, reply, ctx);
        return true;
    }
    return false;
}

/* ---- question state refresh ------------------------------------------- */

static void refresh_run(struct store *s, void *arg)
{
    struct ingest *ig = arg;
    if (!ig->states_initialised &&
        qstate_init_open(s, ig->ef, util_wall_ms()) != STORE_OK) {
        ig->refresh_status = STORE_UNAVAILABLE;
        return;
    }
    uint64_t mono = util_mono_ms();
    if (store_node_count(s) > 0 && mono - ig->writing_said_ms >= POOL_WRITING_EVERY_MS) {
        /* A fold (a node retired) must not sum an epoch an ingest still
         * writes in (pool_record.h). */
        char key[KEY_NODE_MAX];
        size_t klen = key_pool_writing(key, ig->ef->name, ig->cfg.commit.pool_epoch);
        if (store_set(s, key, klen, "writing", 7, POOL_WRITING_TTL_S) == STORE_OK)
            ig->writing_said_ms = mono;
    }
    ig->refresh_read_ms = util_wall_ms();
    ig->refresh_status = qstate_fetch_all(s, ig->ef, ig->refresh_buf);
    uint64_t took = util_wall_ms() - ig->refresh_read_ms;
    atomic_store(&ig->sh->state_read_ms, took < UINT64_MAX / 2 ? took : 0);
    if (ig->refresh_status != STORE_OK)
        return;
    /* A question never goes back to "not open": a state that vanished is a
     * store node that restarted empty. The state known here is written
     * back, so answers go on being taken (or refused) as before. */
    for (uint32_t i = 0; i < ig->ef->n_questions; i++) {
        if (ig->refresh_buf[i].kind == QSTATE_NOT_OPEN &&
            ig->refresh_known[i].kind != QSTATE_NOT_OPEN) {
            ig->refresh_buf[i] = ig->refresh_known[i];
            if (qstate_write(s, ig->ef, ig->ef->questions[i].id, &ig->refresh_known[i]) ==
                STORE_OK)
                log_warn("question state lost by the store, written back id=%" PRIu32 " state=%s",
                         ig->ef->questions[i].id, qstate_kind_str(ig->refresh_known[i].kind));
        }
    }
}

static void refresh_done(void *arg)
{
    struct ingest *ig = arg;
    ig->refresh_running = false;
    atomic_store(&ig->sh->store_reachable, ig->refresh_status == STORE_OK);
    if (ig->refresh_status == STORE_OK) {
        if (!ig->states_initialised)
            log_info("question states loaded questions=%" PRIu32, ig->ef->n_questions);
        ig->states_initialised = true;
        shared_publish_states(ig->sh, ig->refresh_buf);
        shared_note_read(ig->sh, ig->refresh_read_ms);
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
    if (ig->refresh_running)
        return;
    memcpy(ig->refresh_known, current_states(ig), ig->ef->n_questions * sizeof(*ig->refresh_known));
    if (worker_submit(ig->worker, refresh_run, refresh_done, ig))
        ig->refresh_running = true;
}

/* ---- the ultimate fans' list ------------------------------------------ */

static void on_user_totals(void *arg, const char *user, uint64_t right, uint64_t total_ms)
{
    struct ingest *ig = arg;
    fans_topk_update(&ig->fans, user, right, total_ms);
}

/* Worker thread: take a slot once (a counter every instance increments:
 * unique without any registry), then write the list under it. */
static void fans_publish_run(struct store *s, void *arg)
{
    struct ingest *ig = arg;
    const struct eventfile *ef = ig->ef;
    char key[KEY_USER_MAX];
    if (ig->fans_slot != 0) {
        /* A sequence below our slot: the store lost it (a node restarted
         * empty), and it will hand our number out again. Take a new one, so
         * no two instances ever write the same list. */
        size_t klen = key_fans_seq(key, ef->name);
        const char *keys[] = {key};
        uint64_t seq = 0;
        ig->fans_status = store_mget_u64(s, keys, &klen, 1, &seq, NULL);
        if (ig->fans_status != STORE_OK)
            return;
        if (seq < ig->fans_slot)
            ig->fans_slot = 0;
    }
    if (ig->fans_slot != 0) {
        /* Another instance writes under our number (it was handed out again
         * before we saw the sequence reset): we move. */
        size_t klen = key_fans_list(key, ef->name, ig->fans_slot);
        char *val = NULL;
        size_t vlen = 0;
        ig->fans_status = store_get(s, key, klen, &val, &vlen);
        bool theirs = ig->fans_status == STORE_OK && !fans_owned_by(val, vlen, ig->fans_owner);
        free(val);
        if (ig->fans_status != STORE_OK && ig->fans_status != STORE_NOTFOUND)
            return;
        if (theirs)
            ig->fans_slot = 0;
    }
    if (ig->fans_slot == 0) {
        struct store_incr it = {.delta = 1, .want_value = true};
        it.keylen = key_fans_seq(key, ef->name);
        it.key = key;
        ig->fans_status = store_incr_batch(s, &it, 1, ef->ttl_s);
        if (ig->fans_status != STORE_OK)
            return;
        ig->fans_slot = it.value;
    }
    size_t klen = key_fans_list(key, ef->name, ig->fans_slot);
    ig->fans_status = store_set(s, key, klen, ig->fans_json, ig->fans_len, ef->ttl_s);
}

static bool fans_publish(struct ingest *ig, bool force);
static void hints_replay(struct ingest *ig);

/* Hint keys and lagging connections this instance's handles still hold
 * (replicas >= 2): what a replica missed and only this process knows. */
static uint64_t replicas_behind(struct ingest *ig)
{
    struct store_stats a, b;
    store_get_stats(ig->loop_store, &a);
    worker_store_stats(ig->worker, &b);
    return a.hints_pending + a.drains_pending + b.hints_pending + b.drains_pending;
}

static void drain_done(struct ingest *ig)
{
    if (ig->drain_replay != NULL) {
        event_free(ig->drain_replay);
        ig->drain_replay = NULL;
    }
    void (*fn)(void *) = ig->drained;
    ig->drained = NULL;
    ig->drain_fans = false;
    if (fn != NULL)
        fn(ig->drained_arg);
}

static void on_drain_replay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ingest *ig = arg;
    uint64_t behind = replicas_behind(ig);
    if (behind > 0 && util_mono_ms() < ig->drain_replay_until_ms) {
        hints_replay(ig);
        return;
    }
    if (behind > 0)
        log_warn("drain: replicas still behind after %u ms, given up: hint keys and lagging "
                 "connections=%" PRIu64 " (those replicas stay behind; reads take the maximum)",
                 INGEST_DRAIN_REPLAY_MS, behind);
    drain_done(ig);
}

/* Everything acknowledged is in the store; what a replica missed while
 * down or lagging is known only here (hints, connections being written
 * out), so it goes out before the process ends: a rolling restart must not
 * leave a replica behind that the next failure of its peer would expose.
 * At most INGEST_DRAIN_REPLAY_MS: a replica still down stays behind. */
static void finish_drain(struct ingest *ig)
{
    if (replicas_behind(ig) > 0) {
        ig->drain_replay_until_ms = util_mono_ms() + INGEST_DRAIN_REPLAY_MS;
        ig->drain_replay = event_new(ig->base, -1, EV_PERSIST, on_drain_replay, ig);
        struct timeval tv = {0, 50 * 1000};
        if (ig->drain_replay != NULL && event_add(ig->drain_replay, &tv) == 0) {
            hints_replay(ig);
            return;
        }
    }
    drain_done(ig);
}

static void fans_publish_done(void *arg)
{
    struct ingest *ig = arg;
    ig->fans_running = false;
    if (ig->fans_status == STORE_OK) {
        ig->fans_publishes++;
        ig->fans_published_ms = util_mono_ms();
        if (ig->fans_publishes == 1)
            log_info("fans list published slot=%llu", (unsigned long long)ig->fans_slot);
    } else {
        ig->fans_failures++;
        ig->fans.dirty = true; /* try again at the next tick */
        log_warn("fans list not published slot=%llu status=%s",
                 (unsigned long long)ig->fans_slot, store_status_str(ig->fans_status));
    }
    if (ig->drain_fans) {
        /* The list this job wrote may predate the last totals. */
        if (!ig->drain_final_sent && fans_publish(ig, true)) {
            ig->drain_final_sent = true;
            return;
        }
        finish_drain(ig);
    }
}

/* Hands the list to the worker when it changed (or is due a refresh);
 * false when nothing was submitted. */
static bool fans_publish(struct ingest *ig, bool force)
{
    if (ig->fans_running || ig->fans.n == 0)
        return false;
    bool due = util_mono_ms() - ig->fans_published_ms >= FANS_REFRESH_MS;
    if (!ig->fans.dirty && !due && !force)
        return false;
    ig->fans_len = fans_encode(ig->fans_owner, ig->fans.e, ig->fans.n, ig->fans_json,
                               sizeof(ig->fans_json));
    if (ig->fans_len == 0 || !worker_submit(ig->worker, fans_publish_run, fans_publish_done, ig))
        return false;
    ig->fans.dirty = false;
    ig->fans_running = true;
    return true;
}

/* With replicas, the increments a replica missed while it was down are
 * replayed in front of the next batch, and the connections given up on for
 * lag are written out at the start of each run; between two questions there
 * may be no run for minutes, so the timer runs an empty one for both. */
static void hints_replay_run(struct store *s, void *arg)
{
    struct ingest *ig = arg;
    store_incr_batch(s, NULL, 0, ig->ef->ttl_s);
}

static void hints_replay_done(void *arg)
{
    struct ingest *ig = arg;
    ig->hints_running = false;
}

/* Each handle replays its own: the worker's, and the loop's (through the
 * committer, which owns that handle's runs). */
static void hints_replay(struct ingest *ig)
{
    struct store_stats st;
    store_get_stats(ig->loop_store, &st);
    if (st.hints_pending > 0 || st.drains_pending > 0)
        committer_replay_hints(ig->committer);
    if (ig->hints_running)
        return;
    worker_store_stats(ig->worker, &st);
    if ((st.hints_pending > 0 || st.drains_pending > 0) &&
        worker_submit(ig->worker, hints_replay_run, hints_replay_done, ig))
        ig->hints_running = true;
}

static void on_fans_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fans_publish(arg, false);
    hints_replay(arg);
}

/* ---- lifecycle -------------------------------------------------------- */

struct ingest *ingest_create(struct event_base *base, const struct eventfile *ef,
                             struct ingest_shared *sh, bool refresher, struct store *store,
                             const struct ingest_config *cfg, char *err, size_t errlen)
{
    struct ingest *ig = calloc(1, sizeof(*ig));
    if (ig == NULL) {
        snprintf(err, errlen, "out of memory");
        store_close(store);
        return NULL;
    }
    ig->base = base;
    ig->ef = ef;
    ig->sh = sh;
    ig->cfg = *cfg;
    ig->refresher = refresher;
    ig->slot = -1;
    ig->states = calloc(ef->n_questions, sizeof(*ig->states));
    ig->refresh_buf = calloc(ef->n_questions, sizeof(*ig->refresh_buf));
    ig->refresh_known = calloc(ef->n_questions, sizeof(*ig->refresh_known));
    ig->check_buf = calloc(ef->n_questions, sizeof(*ig->check_buf));
    ig->check_unsure = calloc(ef->n_questions, sizeof(*ig->check_unsure));
    ig->held_tail = &ig->held;
    if (ig->states == NULL || ig->refresh_buf == NULL || ig->refresh_known == NULL ||
        ig->check_buf == NULL || ig->check_unsure == NULL) {
        snprintf(err, errlen, "out of memory");
        store_close(store);
        goto err;
    }
    pthread_mutex_lock(&sh->lock);
    for (int i = 0; i < MAX_INSTANCES; i++) {
        if (!sh->figures[i].in_use) {
            sh->figures[i].in_use = true;
            ig->slot = i;
            break;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if (ig->slot < 0) {
        snprintf(err, errlen, "too many ingest threads (at most %d)", MAX_INSTANCES);
        store_close(store);
        goto err;
    }

    if (refresher) {
        /* The first state read happens before serving: answers must not be
         * refused as not open because the cache is still empty. A store that
         * is down now is not fatal: the refresh keeps trying. */
        uint64_t read_ms = util_wall_ms();
        if (qstate_init_open(store, ef, read_ms) == STORE_OK &&
            qstate_fetch_all(store, ef, ig->refresh_buf) == STORE_OK) {
            ig->states_initialised = true;
            shared_publish_states(sh, ig->refresh_buf);
            shared_note_read(sh, read_ms);
        } else {
            log_warn("store not reachable at start: question states will load when it is");
        }
    }

    /* The loop's own handle: the embedded store is written from the loop
     * itself (a batch costs less than waking a thread would), and a network
     * store's batches start from it when the handle can write without
     * blocking (store_incr_start): again no hand-off. */
    bool in_process = store_in_process(store);
    if ((ig->loop_store = store_clone(store)) == NULL) {
        snprintf(err, errlen, "out of memory");
        store_close(store);
        goto err;
    }
    ig->worker = worker_start("ingest-store", store, base, WORKER_MAX_JOBS);
    if (ig->worker == NULL) {
        snprintf(err, errlen, "cannot start the store thread");
        goto err;
    }
    struct commit_config cc = cfg->commit;
    cc.on_user_totals = on_user_totals;
    cc.totals_arg = ig;
    fans_topk_init(&ig->fans);
    ig->committer = committer_create(base, ig->worker, in_process ? ig->loop_store : NULL,
                                     in_process ? NULL : ig->loop_store, ef, &cc);
    if (ig->committer == NULL) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = util_mono_us() ^ (uint64_t)(uintptr_t)ig;
    util_rng_seed(&ig->rng, seed);
    ig->fans_owner = util_rng_next(&ig->rng);

    ig->fans_timer = event_new(base, -1, EV_PERSIST, on_fans_timer, ig);
    struct timeval ftv = {.tv_sec = FANS_PUBLISH_MS / 1000,
                          .tv_usec = (suseconds_t)(FANS_PUBLISH_MS % 1000) * 1000};
    if (ig->fans_timer == NULL || event_add(ig->fans_timer, &ftv) != 0) {
        snprintf(err, errlen, "cannot start the fans timer");
        goto err;
    }

    if (refresher) {
        ig->refresh_timer = event_new(base, -1, EV_PERSIST, on_refresh_timer, ig);
        uint32_t ms = cfg->state_refresh_ms ? cfg->state_refresh_ms : 50;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        if (ig->refresh_timer == NULL || event_add(ig->refresh_timer, &tv) != 0) {
            snprintf(err, errlen, "cannot start the state refresh timer");
            goto err;
        }
    }
    return ig;

err:
    ingest_free(ig);
    return NULL;
}

/* Every pending increment is written: the fans list then gets its last
 * totals out before the process goes (a list a second old would miss the
 * last answers for good). */
static void on_committer_drained(void *arg)
{
    struct ingest *ig = arg;
    ig->drain_fans = true;
    if (ig->fans_running)
        return; /* fans_publish_done publishes once more, then calls drained */
    if (fans_publish(ig, true)) {
        ig->drain_final_sent = true;
        return;
    }
    finish_drain(ig);
}

void ingest_drain(struct ingest *ig, void (*drained)(void *arg), void *arg)
{
    ingest_shared_set_draining(ig->sh);
    held_refuse(ig, "draining");
    ig->drained = drained;
    ig->drained_arg = arg;
    committer_drain(ig->committer, on_committer_drained, ig);
}

void ingest_free(struct ingest *ig)
{
    if (ig == NULL)
        return;
    if (ig->refresh_timer)
        event_free(ig->refresh_timer);
    if (ig->fans_timer)
        event_free(ig->fans_timer);
    if (ig->drain_replay)
        event_free(ig->drain_replay);
    /* Stopping the worker runs the queued jobs and their callbacks, which
     * answer every request still waiting; a batch the loop was writing is
     * finished first. */
    held_refuse(ig, "draining");
    ig->check_abandoned = true;
    while (ig->closes != NULL) { /* the close is in the store: it stands */
        struct admin_job *j = ig->closes;
        unlink_close(ig, j);
        admin_reply_done(j);
    }
    committer_stop(ig->committer);
    worker_stop(ig->worker);
    committer_free(ig->committer);
    store_close(ig->loop_store);
    if (ig->slot >= 0) {
        pthread_mutex_lock(&ig->sh->lock);
        /* Keep the figures counted (a process's totals must not drop), but
         * free the slot's gauges. */
        ig->sh->figures[ig->slot].cs.waiting = 0;
        ig->sh->figures[ig->slot].cs.carry = 0;
        ig->sh->figures[ig->slot].cs.open_answers = 0;
        pthread_mutex_unlock(&ig->sh->lock);
    }
    free(ig->states);
    free(ig->refresh_buf);
    free(ig->refresh_known);
    free(ig->check_buf);
    free(ig->check_unsure);
    free(ig);
}

/* ---- metrics ---------------------------------------------------------- */

/* Each metric once (common/metrics.h); the figure each reads is in
 * figure_value(). */
#define INGEST_METRICS(X)                                                                          \
    X(IM_REQUESTS, "livetally_ingest_requests_total", COUNTER,                                     \
      "Ingest API responses by status code")                                                       \
    X(IM_RECEIVED, "livetally_ingest_answers_received_total", COUNTER, "POST /v1/answers received") \
    X(IM_ADMIN_REFUSED, "livetally_ingest_admin_refused_total", COUNTER,                           \
      "admin requests refused for a wrong or missing token (401 unauthorized)")                     \
    X(IM_ADMIN_THROTTLED, "livetally_ingest_admin_throttled_total", COUNTER,                       \
      "admin requests refused unread: their client address is locked out after wrong tokens (429)") \
    X(IM_ACKED, "livetally_ingest_answers_acknowledged_total", COUNTER,                            \
      "Answers confirmed by the store (202)")                                                      \
    X(IM_UNCONFIRMED, "livetally_ingest_answers_unconfirmed_total", COUNTER,                       \
      "Answers the store did not confirm by the deadline (503 backend_unavailable or unconfirmed)") \
    X(IM_MAYBE_COUNTED, "livetally_ingest_answers_maybe_counted_total", COUNTER,                   \
      "Answers answered 503 unconfirmed: part of their batch may have landed, the rest is carried") \
    X(IM_DUPLICATES, "livetally_ingest_answers_duplicate_total", COUNTER,                          \
      "Answers refused 409 duplicate_answer: the user had answered the question")                  \
    X(IM_MARKERS, "livetally_ingest_user_markers_total", COUNTER,                                  \
      "Per-user answer markers added (one store add each)")                                        \
    X(IM_ROLLED_BACK, "livetally_ingest_markers_rolled_back_total", COUNTER,                       \
      "Markers deleted again because nothing of their batch reached the store")                    \
    X(IM_ROLLBACK_FAILED, "livetally_ingest_marker_rollback_failures_total", COUNTER,              \
      "Markers that could not be deleted: a retry of their answer is refused")                     \
    X(IM_USER_DROPPED, "livetally_ingest_user_increments_dropped_total", COUNTER,                  \
      "Per-user increments dropped because the carry was full (a user total falls short)")         \
    X(IM_FANS_PUBLISHED, "livetally_ingest_fans_publishes_total", COUNTER,                         \
      "Top lists of users written to the store")                                                   \
    X(IM_FANS_FAILED, "livetally_ingest_fans_publish_failures_total", COUNTER,                     \
      "Top lists the store did not take (retried a second later)")                                 \
    X(IM_LATENCY, "livetally_ingest_answer_latency_seconds", HISTOGRAM,                            \
      "From a valid answer's arrival to its reply (202 or 503): the group commit's wait")          \
    X(IM_BATCHES, "livetally_ingest_batches_total", COUNTER, "Batches written to the store")      \
    X(IM_BATCH_ANSWERS, "livetally_ingest_batch_answers_total", COUNTER,                           \
      "Answers in the batches written (divided by batches: the mean batch size)")                  \
    X(IM_BATCH_KEYS, "livetally_ingest_batch_keys_total", COUNTER,                                 \
      "Counter increments sent to the store, summed over batches")                                 \
    X(IM_INCREMENTS, "livetally_ingest_increments_total", COUNTER,                                 \
      "Answer increments folded into batches (4 per answer)")                                      \
    X(IM_FLUSH, "livetally_ingest_flush_seconds", HISTOGRAM,                                       \
      "Duration of a batch write, retries included")                                               \
    X(IM_RETRIES, "livetally_ingest_store_retries_total", COUNTER,                                 \
      "Batch retries after a store failure")                                                       \
    X(IM_CARRIED, "livetally_ingest_carried_keys_total", COUNTER,                                  \
      "Unapplied increments carried to a later batch")                                             \
    X(IM_UNCERTAIN, "livetally_ingest_uncertain_increments_total", COUNTER,                        \
      "Increments whose store reply was lost: maybe applied, never resent")                        \
    X(IM_WAITING, "livetally_ingest_waiting_answers", GAUGE, "Answers waiting for the store")     \
    X(IM_CARRY, "livetally_ingest_carry_keys", GAUGE,                                      \
      "Counters of partly applied answers still to be written")                                    \
    X(IM_OPEN, "livetally_ingest_open_batch_answers", GAUGE, "Answers in the batches being filled") \
    X(IM_ACCEPTED, "livetally_ingest_connections_accepted_total", COUNTER,                         \
      "Connections accepted by the answer threads")                                                \
    X(IM_REFUSED, "livetally_ingest_connections_refused_total", COUNTER,                           \
      "Connections refused over --max-conns")                                                      \
    X(IM_TIMEOUTS, "livetally_ingest_connections_timed_out_total", COUNTER,                        \
      "Connections dropped by a deadline (slow or idle clients)")                                  \
    X(IM_BAD, "livetally_ingest_bad_requests_total", COUNTER, "Unparsable HTTP requests")         \
    X(IM_CONNS, "livetally_ingest_open_connections", GAUGE,                                        \
      "Open connections of the answer threads")                                                    \
    X(IM_STORE_FAILURES, "livetally_ingest_store_node_failures_total", COUNTER,                    \
      "Store node failures (connect, write, read, timeout): the node is avoided for a backoff")    \
    X(IM_STORE_UNAVAILABLE, "livetally_ingest_store_unavailable_items_total", COUNTER,             \
      "Store operations not sent because their node was down (not applied)")                      \
    X(IM_STORE_ERRORS, "livetally_ingest_store_error_items_total", COUNTER,                        \
      "Store operations refused by a server, or whose outcome is unknown")                         \
    X(IM_STORE_CONNECTS, "livetally_ingest_store_connects_total", COUNTER,                         \
      "Connections opened to store nodes")                                                         \
    X(IM_HINTS_QUEUED, "livetally_ingest_store_hints_queued_total", COUNTER,                       \
      "replicas >= 2: writes kept for a replica that was down")                                    \
    X(IM_HINTS_REPLAYED, "livetally_ingest_store_hints_replayed_total", COUNTER,                   \
      "replicas >= 2: kept writes replayed once the replica answered")                             \
    X(IM_HINTS_DROPPED, "livetally_ingest_store_hints_dropped_total", COUNTER,                     \
      "replicas >= 2: kept writes lost (table full, outcome unknown)")                             \
    X(IM_HINTS_PENDING, "livetally_ingest_store_hints_pending", GAUGE,                             \
      "replicas >= 2: keys waiting for a replica")                                                 \
    X(IM_DRAINS_PENDING, "livetally_ingest_store_drains_pending", GAUGE,                           \
      "replicas >= 2: connections to a lagging replica still being written out")                   \
    X(IM_REDIRECTS, "livetally_ingest_store_redirects_total", COUNTER,                             \
      "redis-cluster: MOVED and ASK replies followed")                                             \
    X(IM_MAP_REFRESHES, "livetally_ingest_store_slot_map_refreshes_total", COUNTER,                \
      "redis-cluster: slot maps read")                                                             \
    X(IM_DRAINING, "livetally_ingest_draining", GAUGE, "1 from the stop signal on (/healthz 503): the drain delay, then the drain") \
    X(IM_STORE_REACHABLE, "livetally_ingest_store_reachable", GAUGE,                               \
      "1 when the last question state read (every 50 ms) got the store's answer")                  \
    X(IM_HELD, "livetally_ingest_answers_held_total", COUNTER,                                     \
      "Answers held for a question state read: their question not open here yet, or this node's states older than the close delay") \
    X(IM_STATE_READ_MS, "livetally_ingest_state_read_milliseconds", GAUGE,                         \
      "How long the last question state read took (every question, every replica); near 250 every answer is held")

enum ingest_metric { INGEST_METRICS(METRIC_ENUM) INGEST_METRIC_COUNT };
static const struct metric_def ingest_metrics[] = {INGEST_METRICS(METRIC_DEF)};

void ingest_describe_metrics(FILE *out)
{
    metrics_describe(out, ingest_metrics, INGEST_METRIC_COUNT);
}

void ingest_publish_stats(struct ingest *ig, const struct httpd_stats *hs)
{
    struct ingest_figures f = {.in_use = true};
    memcpy(f.requests, ig->requests, sizeof(f.requests));
    f.answers_received = ig->answers_received;
    f.admin_refused = ig->admin_refused;
    f.admin_throttled = ig->admin_throttled;
    f.latency = ig->latency;
    committer_get_stats(ig->committer, &f.cs);
    f.fans_publishes = ig->fans_publishes;
    f.fans_failures = ig->fans_failures;
    f.answers_held = ig->answers_held;
    if (hs)
        f.hs = *hs;
    /* The worker's handle is read through the worker (its thread writes
     * it); the loop's own handle is this thread's. */
    struct store_stats st;
    worker_store_stats(ig->worker, &f.ss);
    store_get_stats(ig->loop_store, &st);
    store_stats_add(&f.ss, &st);
    pthread_mutex_lock(&ig->sh->lock);
    ig->sh->figures[ig->slot] = f;
    pthread_mutex_unlock(&ig->sh->lock);
}

static uint64_t figure_value(const struct ingest_figures *f, enum ingest_metric m,
                             const struct ingest_shared *sh)
{
    switch (m) {
    case IM_RECEIVED: return f->answers_received;
    case IM_ADMIN_REFUSED: return f->admin_refused;
    case IM_ADMIN_THROTTLED: return f->admin_throttled;
    case IM_ACKED: return f->cs.acked;
    case IM_UNCONFIRMED: return f->cs.failed;
    case IM_MAYBE_COUNTED: return f->cs.maybe_counted;
    case IM_DUPLICATES: return f->cs.duplicates;
    case IM_MARKERS: return f->cs.markers_added;
    case IM_ROLLED_BACK: return f->cs.rolled_back;
    case IM_ROLLBACK_FAILED: return f->cs.rollback_failures;
    case IM_USER_DROPPED: return f->cs.user_carry_dropped;
    case IM_FANS_PUBLISHED: return f->fans_publishes;
    case IM_FANS_FAILED: return f->fans_failures;
    case IM_BATCHES: return f->cs.batches;
    case IM_BATCH_ANSWERS: return f->cs.batch_answers;
    case IM_BATCH_KEYS: return f->cs.batch_keys;
    case IM_INCREMENTS: return f->cs.increments;
    case IM_RETRIES: return f->cs.store_retries;
    case IM_CARRIED: return f->cs.carried_keys;
    case IM_UNCERTAIN: return f->cs.uncertain;
    case IM_WAITING: return f->cs.waiting;
    case IM_CARRY: return f->cs.carry;
    case IM_OPEN: return f->cs.open_answers;
    case IM_ACCEPTED: return f->hs.accepted;
    case IM_REFUSED: return f->hs.refused;
    case IM_TIMEOUTS: return f->hs.timeouts;
    case IM_BAD: return f->hs.bad_requests;
    case IM_CONNS: return f->hs.open_conns;
    case IM_STORE_FAILURES: return f->ss.node_failures;
    case IM_STORE_UNAVAILABLE: return f->ss.unavailable_items;
    case IM_STORE_ERRORS: return f->ss.error_items;
    case IM_STORE_CONNECTS: return f->ss.connects;
    case IM_HINTS_QUEUED: return f->ss.hints_queued;
    case IM_HINTS_REPLAYED: return f->ss.hints_replayed;
    case IM_HINTS_DROPPED: return f->ss.hints_dropped;
    case IM_HINTS_PENDING: return f->ss.hints_pending;
    case IM_DRAINS_PENDING: return f->ss.drains_pending;
    case IM_REDIRECTS: return f->ss.redirects;
    case IM_MAP_REFRESHES: return f->ss.map_refreshes;
    case IM_DRAINING: return ingest_shared_healthy(sh) ? 0 : 1;
    case IM_STORE_REACHABLE: return atomic_load(&((struct ingest_shared *)sh)->store_reachable);
    case IM_HELD: return f->answers_held;
    default: return 0;
    }
}

void ingest_shared_write_metrics(struct ingest_shared *sh, struct evbuffer *out)
{
    uint64_t sums[INGEST_METRIC_COUNT] = {0};
    uint64_t requests[N_STATUS] = {0};
    struct metrics_hist latency, flush;
    memset(&latency, 0, sizeof(latency));
    memset(&flush, 0, sizeof(flush));
    pthread_mutex_lock(&sh->lock);
    for (int i = 0; i < MAX_INSTANCES; i++) {
        const struct ingest_figures *f = &sh->figures[i];
        if (!f->in_use)
            continue;
        for (size_t k = 0; k < N_STATUS; k++)
            requests[k] += f->requests[k];
        for (int m = 0; m < INGEST_METRIC_COUNT; m++)
            sums[m] += figure_value(f, (enum ingest_metric)m, sh);
        metrics_hist_merge(&latency, &f->latency);
        metrics_hist_merge(&flush, &f->cs.flush_hist);
    }
    pthread_mutex_unlock(&sh->lock);
    sums[IM_DRAINING] = ingest_shared_healthy(sh) ? 0 : 1;
    sums[IM_STORE_REACHABLE] = atomic_load(&sh->store_reachable) ? 1 : 0;
    sums[IM_STATE_READ_MS] = atomic_load(&sh->state_read_ms);

    for (int m = 0; m < INGEST_METRIC_COUNT; m++) {
        const struct metric_def *def = &ingest_metrics[m];
        if (m == IM_REQUESTS) {
            metrics_write_head(out, def);
            for (size_t k = 0; k < N_STATUS; k++) {
                char label[24];
                snprintf(label, sizeof(label), "code=\"%d\"", status_codes[k]);
                metrics_write_u64(out, def, label, requests[k]);
            }
        } else if (m == IM_LATENCY) {
            metrics_emit_hist(out, def, &latency);
        } else if (m == IM_FLUSH) {
            metrics_emit_hist(out, def, &flush);
        } else {
            metrics_emit_u64(out, def, sums[m]);
        }
    }
}
