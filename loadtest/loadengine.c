#include "loadengine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "util.h"

#define RBUF_MIN 16384
#define RBUF_PER_SLOT 1024
#define TICK_US 10000                /* stop flag, gate, time-outs, reconnects */
#define STOP_GRACE_US 2000000        /* replies still awaited after a stop */
#define RECONNECT_MIN_US 10000
#define RECONNECT_MAX_US 1000000
#define START_DELAY_US 20000         /* threads are running before arrival 0 */
#define INITIAL_CONNECT_MS 2000
#define LENGTH_FIELD 24              /* Content-Length digits and the blank line */
#define UNSENT_COUNT_MAX 100000000ull /* bound on counting a backlog arrival by arrival */


enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_READY };

/* One answer: what makes its body again (a retry sends the same bytes). */
struct answer_ref {
    uint64_t m;           /* replay: the entry */
    uint64_t k, rnd;      /* synthetic: loadsynth_body's k and random word */
    uint32_t slot;
    struct loadtally_key key;
    bool has_user;        /* synthetic answers of the user population */
    uint64_t user;
    bool named;           /* the body carries a "user" (a retry after a lost try is safe) */
};

struct inflight {
    uint64_t intended_us; /* latency is measured from here (the first try's) */
    uint64_t sent_us;     /* the time-out is measured from here */
    uint64_t due_us;      /* in the retry queue: when to send again */
    struct answer_ref a;
    uint32_t attempt;     /* tries before this one */
    bool lost;            /* an earlier try ended with its connection */
};

struct worker;

struct conn {
    struct worker *w;
    uint32_t index;
    int fd;
    enum conn_state state;
    struct event *rev; /* EV_READ | EV_PERSIST while connected */
    struct event *wev; /* EV_WRITE | EV_PERSIST, added while a write is pending or connecting */
    char *wbuf;        /* owned: requests not yet written */
    size_t wlen, woff, wcap;
    char *rbuf;        /* owned: bytes of replies not yet parsed */
    size_t rlen, rcap;
    struct inflight *fl; /* owned ring of pipeline entries */
    uint32_t fl_head, fl_n;
    uint64_t connect_start_us;
    uint64_t retry_at_us;
    uint64_t backoff_us;
    bool in_ready, dirty, wpending;
};

struct worker {
    struct loadengine *e;
    uint32_t id;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct event *tick;
    struct event *sched;
    bool flush_pending; /* replies made room: send once this loop turn ends */
    bool done;
    bool sched_armed;
    uint64_t sched_at;

    struct conn *conns;
    uint32_t n_conns;
    uint32_t *ready; /* ring of connection indexes with a free slot, each at most once */
    uint32_t ready_head, ready_n;
    struct conn **dirty;
    uint32_t n_dirty;

    /* schedule: this thread sends arrivals m = id, id + T, ... */
    uint64_t m;
    bool have_next;
    uint64_t next_abs; /* monotonic intended time of arrival m */
    struct loadprofile_arrival next;
    bool sched_done;
    bool stopping;
    uint64_t stop_deadline_us;
    uint64_t last_ready_us;
    uint64_t inflight;

    struct util_rng rng;
    char *scratch;
    size_t scratch_cap;

    /* --retry: answers to send again, a min-heap by due_us */
    struct inflight *rq;
    uint32_t rq_n, rq_cap;

    /* owned by this thread until join */
    uint64_t sent, completed, acked, errors, indeterminate, unsent, connects, connect_failures;
    uint64_t counted_earlier, retries;
    struct loadengine_errs retried;
    uint64_t first_send_us, last_reply_us;
    struct loadhist total;
    struct loadtally tally;
    struct loadtally maybe; /* answers that may or may not have been counted */
    uint64_t n_maybe;
    struct loadengine_errs errs;
    struct loadrecord rec;
    bool recording;
    char *res_buf;      /* owned: results lines not yet written (cfg.results) */
    size_t res_len;

    /* read by the control thread */
    _Atomic uint64_t pub_sent, pub_acked, pub_errors;
    atomic_bool finished;
    pthread_mutex_t lock; /* guards interval */
    bool lock_init;
    struct loadhist interval;
};

struct loadengine {
    struct loadengine_config cfg;
    struct worker *w;
    uint32_t n_workers;
    uint64_t start_us;
    _Atomic uint32_t allowed;
    atomic_bool stop;
    /* --record: the control thread's admin events, a part after the workers' */
    struct loadrecord admin_rec;
    bool admin_recording;
    char prefix[LOADHTTP_PATH_MAX + LOADHTTP_HOST_MAX + 160];
    size_t prefix_len;
    size_t max_req;
};

void loadengine_errs_add(struct loadengine_errs *t, int status, const char *code, uint64_t n)
{
    for (uint32_t i = 0; i < t->n; i++) {
        if (t->e[i].status == status && strcmp(t->e[i].code, code) == 0) {
            t->e[i].count += n;
            return;
        }
    }
    if (t->n == LOADENGINE_ERR_KINDS) {
        t->other += n;
        return;
    }
    struct loadengine_err *e = &t->e[t->n++];
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    e->count = n;
}

void loadengine_result_free(struct loadengine_result *r)
{
    loadhist_free(&r->latency);
    loadtally_free(&r->tally);
    loadtally_free(&r->maybe);
    memset(r, 0, sizeof(*r));
}

/* ---- connections -------------------------------------------------------- */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void dispatch(struct worker *w);
struct inflight;
static void try_failed(struct worker *w, const struct inflight *f, int status, const char *code,
                       uint32_t retry_after_s, uint64_t now);

static uint32_t pipeline(const struct worker *w)
{
    return w->e->cfg.pipeline;
}

static void push_ready(struct worker *w, struct conn *c)
{
    if (c->in_ready || c->state != CONN_READY || c->fl_n >= pipeline(w))
        return;
    w->ready[(w->ready_head + w->ready_n) % w->n_conns] = c->index;
    w->ready_n++;
    c->in_ready = true;
}

static struct conn *pop_ready(struct worker *w)
{
    while (w->ready_n > 0) {
        struct conn *c = &w->conns[w->ready[w->ready_head]];
        w->ready_head = (w->ready_head + 1) % w->n_conns;
        w->ready_n--;
        c->in_ready = false;
        if (c->state == CONN_READY && c->fl_n < pipeline(w))
            return c;
    }
    return NULL;
}

/* ---- results file ------------------------------------------------------ */

#define RES_BUF_SIZE 65536u
#define RES_LINE_MAX (5 * 24 + LOADHTTP_ERROR_MAX)

/* One write per 64 KiB: the threads share the FILE (stdio locks it), and
 * a whole buffer of lines goes at once, so lines never interleave. */
static void results_flush(struct worker *w)
{
    if (w->res_len > 0)
        fwrite(w->res_buf, 1, w->res_len, w->e->cfg.results);
    w->res_len = 0;
}

static void result_line(struct worker *w, uint64_t intended, uint64_t now, int status,
                        const char *code, size_t bytes)
{
    if (w->res_buf == NULL)
        return;
    if (RES_BUF_SIZE - w->res_len < RES_LINE_MAX)
        results_flush(w);
    uint64_t t = intended > w->e->start_us ? intended - w->e->start_us : 0;
    uint64_t lat = now > intended ? now - intended : 0;
    int n = snprintf(w->res_buf + w->res_len, RES_BUF_SIZE - w->res_len,
                     "%llu,%llu,%d,%s,%zu\n", (unsigned long long)t, (unsigned long long)lat,
                     status, code, bytes);
    if (n > 0 && (size_t)n < RES_BUF_SIZE - w->res_len)
        w->res_len += (size_t)n;
}

static void close_conn(struct conn *c)
{
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    c->rev = c->wev = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_IDLE;
    c->w->inflight -= c->fl_n;
    c->fl_n = 0;
    c->fl_head = 0;
    c->wlen = c->woff = 0;
    c->rlen = 0;
    c->wpending = false;
}

/* Closes the connection; the requests in flight are lost (and may or may
 * not have been counted by the target). */
static void conn_fail(struct conn *c, const char *code, uint64_t now)
{
    struct worker *w = c->w;
    for (uint32_t i = 0; i < c->fl_n; i++) {
        const struct inflight *f = &c->fl[(c->fl_head + i) % pipeline(w)];
        if (w->res_buf != NULL)
            result_line(w, f->intended_us, now, 0, code, 0);
        try_failed(w, f, 0, code, 0, now);
    }
    close_conn(c);
    c->retry_at_us = now + c->backoff_us;
    c->backoff_us = c->backoff_us * 2 > RECONNECT_MAX_US ? RECONNECT_MAX_US : c->backoff_us * 2;
}

static bool attach_events(struct conn *c)
{
    c->rev = event_new(c->w->base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(c->w->base, c->fd, EV_WRITE | EV_PERSIST, on_write, c);
    return c->rev != NULL && c->wev != NULL;
}

static int new_socket(const struct loadurl *u)
{
    int fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* Requests are whole when written: Nagle would only delay them. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void conn_ready(struct conn *c, uint64_t now)
{
    c->state = CONN_READY;
    c->w->connects++;
    c->w->last_ready_us = now;
    event_add(c->rev, NULL);
    push_ready(c->w, c);
}

/* Starts a non-blocking connect from the event loop. */
static void start_connect(struct conn *c, uint64_t now)
{
    const struct loadurl *u = c->w->e->cfg.target;
    c->fd = new_socket(u);
    if (c->fd < 0 || !attach_events(c)) {
        c->w->connect_failures++;
        conn_fail(c, "connect_failed", now);
        return;
    }
    c->connect_start_us = now;
    if (connect(c->fd, (const struct sockaddr *)&u->addr, u->addrlen) == 0) {
        conn_ready(c, now);
        return;
    }
    if (errno != EINPROGRESS) {
        c->w->connect_failures++;
        conn_fail(c, "connect_failed", now);
        return;
    }
    c->state = CONN_CONNECTING;
    event_add(c->wev, NULL);
}

/* The first connect, before the threads run: blocking up to a deadline, so
 * a target that is not there is reported before the run starts. */
static bool initial_connect(struct conn *c, char *err, size_t errlen)
{
    const struct loadurl *u = c->w->e->cfg.target;
    c->fd = new_socket(u);
    if (c->fd < 0)
        return util_fail(err, errlen, "socket: %s", strerror(errno));
    if (connect(c->fd, (const struct sockaddr *)&u->addr, u->addrlen) != 0) {
        if (errno != EINPROGRESS)
            return util_fail(err, errlen, "connect %s: %s", u->hostport, strerror(errno));
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        int rc;
        do {
            rc = poll(&p, 1, INITIAL_CONNECT_MS);
        } while (rc < 0 && errno == EINTR);
        if (rc <= 0)
            return util_fail(err, errlen, "connect %s: timed out", u->hostport);
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
            return util_fail(err, errlen, "connect %s: %s", u->hostport,
                             strerror(soerr ? soerr : errno));
    }
    if (!attach_events(c))
        return util_fail(err, errlen, "out of memory");
    conn_ready(c, util_mono_us());
    return true;
}

static void do_write(struct conn *c, uint64_t now)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->wpending) {
                event_add(c->wev, NULL);
                c->wpending = true;
            }
            return;
        }
        conn_fail(c, "connection_closed", now);
        return;
    }
    c->woff = c->wlen = 0;
    if (c->wpending) {
        event_del(c->wev);
        c->wpending = false;
    }
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    uint64_t now = util_mono_us();
    if (c->state == CONN_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        event_del(c->wev);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            c->w->connect_failures++;
            conn_fail(c, "connect_failed", now);
            return;
        }
        conn_ready(c, now);
        dispatch(c->w);
        return;
    }
    do_write(c, now);
}

/* ---- replies ------------------------------------------------------------ */

static void on_reply(struct worker *w, struct conn *c, const struct loadhttp_resp *r, uint64_t now)
{
    struct inflight *f = &c->fl[c->fl_head];
    c->fl_head = (c->fl_head + 1) % pipeline(w);
    c->fl_n--;
    w->inflight--;
    uint64_t lat = now > f->intended_us ? now - f->intended_us : 0;
    loadhist_record(&w->total, lat);
    loadhist_record(&w->interval, lat);
    w->completed++;
    w->last_reply_us = now;
    char code[LOADHTTP_ERROR_MAX] = "";
    if (r->status != 202)
        loadhttp_error_code(r->body, r->body_len, code, sizeof(code));
    /* A retry refused as a duplicate: an earlier try of it was counted. */
    bool earlier = r->status == 409 && f->attempt > 0 && strcmp(code, "duplicate_answer") == 0;
    if (earlier && f->lost) {
        /* The lost try added the user's marker; whether its counts landed
         * too is not known here (the ingest may have died in between). */
        w->counted_earlier++;
        w->n_maybe++;
        loadtally_add(&w->maybe, &f->a.key);
        result_line(w, f->intended_us, now, r->status, code, r->total_len);
        return;
    }
    if (r->status == 202 || earlier) {
        if (earlier)
            w->counted_earlier++;
        else
            w->acked++;
        loadtally_add(&w->tally, &f->a.key);
        if (f->a.has_user && f->a.key.right && w->e->cfg.fans != NULL)
            loadtally_fans_mark(w->e->cfg.fans, f->a.user, f->a.slot);
        result_line(w, f->intended_us, now, r->status, code, r->total_len);
        return;
    }
    result_line(w, f->intended_us, now, r->status, code, r->total_len);
    struct inflight done = *f;
    try_failed(w, &done, r->status, code, r->retry_after_s, now);
}

/* The requests that replies made room for are sent when the loop turn
 * ends: a batch of replies becomes one batch of writes (as in wrk), rather
 * than waking the server once per reply. */
static void request_flush(struct worker *w)
{
    w->flush_pending = true;
}

static void publish(struct worker *w)
{
    atomic_store_explicit(&w->pub_sent, w->sent, memory_order_relaxed);
    atomic_store_explicit(&w->pub_acked, w->acked, memory_order_relaxed);
    atomic_store_explicit(&w->pub_errors, w->errors, memory_order_relaxed);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    struct worker *w = c->w;
    /* One read per wake-up: level-triggered epoll calls again if more is
     * there, and the read that would return EAGAIN is saved. */
    ssize_t n = recv(fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    uint64_t now = util_mono_us();
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(c, "connection_closed", now);
        request_flush(w);
        return;
    }
    bool eof = n == 0;
    c->rlen += (size_t)n;

    size_t pos = 0;
    bool close_after = false;
    const char *bad = NULL;
    pthread_mutex_lock(&w->lock);
    while (pos < c->rlen) {
        struct loadhttp_resp r;
        enum loadhttp_parse pr = loadhttp_parse_response(c->rbuf + pos, c->rlen - pos, eof, &r);
        if (pr == LOADHTTP_PARSE_PARTIAL)
            break;
        if (pr == LOADHTTP_PARSE_BAD) {
            bad = "bad_response";
            break;
        }
        pos += r.total_len;
        if (r.status < 200 && r.status != 101)
            continue; /* interim (100 Continue): the real reply follows */
        if (c->fl_n == 0) {
            bad = "bad_response"; /* a reply to nothing */
            break;
        }
        on_reply(w, c, &r, now);
        c->backoff_us = RECONNECT_MIN_US;
        if (r.close) {
            close_after = true;
            break;
        }
    }
    pthread_mutex_unlock(&w->lock);

    if (bad != NULL) {
        conn_fail(c, bad, now);
    } else if (close_after || eof) {
        /* The server ended the connection (Connection: close or idle
         * time-out): reconnect at once; what was in flight is lost. */
        conn_fail(c, "connection_closed", now);
        c->backoff_us = RECONNECT_MIN_US;
        if (!w->sched_done)
            start_connect(c, now);
    } else {
        if (pos > 0) {
            memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
            c->rlen -= pos;
        }
        if (c->rlen == c->rcap)
            conn_fail(c, "bad_response", now); /* one reply larger than the buffer */
        else
            push_ready(w, c);
    }
    request_flush(w);
}

/* ---- schedule ----------------------------------------------------------- */

static bool next_arrival(struct worker *w)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    if (cfg->replay != NULL) {
        if (w->m >= cfg->replay->n)
            return false;
        w->next_abs = w->e->start_us +
                      (uint64_t)((double)cfg->replay->e[w->m].t_us / cfg->replay_speedup);
    } else if (cfg->closed_loop) {
        if (cfg->requests != 0 && w->m >= cfg->requests)
            return false;
        w->next_abs = 0;
    } else {
        if (!loadprofile_arrival(cfg->profile, w->m, &w->next))
            return false;
        w->next_abs = w->e->start_us + w->next.t_us;
    }
    w->have_next = true;
    return true;
}

static void skip_arrival(struct worker *w)
{
    w->have_next = false;
    w->m += w->e->n_workers;
}

/* The body of an answer, again the same bytes for the same ref. */
static const char *answer_body(struct worker *w, const struct answer_ref *a, size_t *blen)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    if (cfg->replay != NULL) {
        const struct loadreplay_entry *e = &cfg->replay->e[a->m];
        *blen = e->len;
        return cfg->replay->text + e->off;
    }
    struct loadtally_key key;
    *blen = loadsynth_body(cfg->synth, a->slot, a->k, a->rnd, w->scratch, w->scratch_cap, &key);
    return w->scratch;
}

/* The answer of arrival m (the schedule's next), and its body. */
static const char *arrival_ref(struct worker *w, struct answer_ref *a, size_t *blen)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    memset(a, 0, sizeof(*a));
    if (cfg->replay != NULL) {
        const struct loadreplay_entry *e = &cfg->replay->e[w->m];
        a->m = w->m;
        a->key = e->key;
        a->named = memmem(cfg->replay->text + e->off, e->len, "\"user\"", 6) != NULL;
        *blen = e->len;
        return cfg->replay->text + e->off;
    }
    uint32_t n_slots = cfg->synth->n_slots;
    if (cfg->closed_loop || cfg->profile->p.kind == LOADPROFILE_STEADY) {
        a->slot = (uint32_t)(w->m % n_slots);
        a->k = w->m / n_slots;
    } else {
        a->slot = w->next.burst % n_slots;
        a->k = w->next.k;
    }
    a->rnd = util_rng_next(&w->rng);
    *blen = loadsynth_body(cfg->synth, a->slot, a->k, a->rnd, w->scratch, w->scratch_cap, &a->key);
    a->has_user = loadsynth_user(cfg->synth, a->slot, a->k, &a->user);
    a->named = a->has_user;
    return w->scratch;
}

/* Writes one try of answer a on c. */
static void send_try(struct worker *w, struct conn *c, uint64_t now, const struct answer_ref *a,
                     const char *body, size_t blen, uint64_t intended, uint32_t attempt,
                     bool lost)
{
    size_t need = w->e->prefix_len + LENGTH_FIELD + blen;
    if (c->wcap - c->wlen < need && c->woff > 0) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    /* wcap holds `pipeline` requests of the largest size, and at most that
     * many are unanswered, so this only fails on a bug. */
    if (c->wcap - c->wlen < need)
        abort();
    char *p = c->wbuf + c->wlen;
    memcpy(p, w->e->prefix, w->e->prefix_len);
    p += w->e->prefix_len;
    char digits[24];
    size_t nd = 0;
    size_t v = blen;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (nd > 0)
        *p++ = digits[--nd];
    memcpy(p, "\r\n\r\n", 4);
    p += 4;
    memcpy(p, body, blen);
    p += blen;
    c->wlen = (size_t)(p - c->wbuf);

    struct inflight *f = &c->fl[(c->fl_head + c->fl_n) % pipeline(w)];
    f->intended_us = intended;
    f->sent_us = now;
    f->a = *a;
    f->attempt = attempt;
    f->lost = lost;
    c->fl_n++;
    w->inflight++;
    if (w->recording && attempt == 0)
        loadrecord_write(&w->rec, intended - w->e->start_us, body, blen);
    if (w->sent == 0)
        w->first_send_us = now;
    w->sent++;
    if (!c->dirty) {
        c->dirty = true;
        w->dirty[w->n_dirty++] = c;
    }
}

static void send_request(struct worker *w, struct conn *c, uint64_t now)
{
    struct answer_ref a;
    size_t blen;
    const char *body = arrival_ref(w, &a, &blen);
    send_try(w, c, now, &a, body, blen, w->e->cfg.closed_loop ? now : w->next_abs, 0, false);
}

/* ---- retries (--retry) ---------------------------------------------------- */

static void rq_swap(struct inflight *q, uint32_t i, uint32_t j)
{
    struct inflight t = q[i];
    q[i] = q[j];
    q[j] = t;
}

static bool rq_push(struct worker *w, const struct inflight *f)
{
    if (w->rq_n == w->rq_cap) {
        uint32_t cap = w->rq_cap ? w->rq_cap * 2 : 256;
        struct inflight *q = realloc(w->rq, (size_t)cap * sizeof(*q));
        if (q == NULL)
            return false;
        w->rq = q;
        w->rq_cap = cap;
    }
    uint32_t i = w->rq_n++;
    w->rq[i] = *f;
    while (i > 0 && w->rq[(i - 1) / 2].due_us > w->rq[i].due_us) {
        rq_swap(w->rq, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return true;
}

static struct inflight rq_pop(struct worker *w)
{
    struct inflight top = w->rq[0];
    w->rq[0] = w->rq[--w->rq_n];
    for (uint32_t i = 0;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->rq_n && w->rq[l].due_us < w->rq[m].due_us)
            m = l;
        if (r < w->rq_n && w->rq[r].due_us < w->rq[m].due_us)
            m = r;
        if (m == i)
            break;
        rq_swap(w->rq, i, m);
        i = m;
    }
    return top;
}

/* May this try's outcome be sent again without counting the answer twice? */
static bool retryable(const struct inflight *f, int status, const char *code)
{
    if (status == 503)
        return f->a.named || strcmp(code, "unconfirmed") != 0;
    if (status == 502 || status == 504)
        return f->a.named;
    if (status == 0)
        return f->a.named && strcmp(code, "interrupted") != 0;
    return false;
}

/* A try that was not acknowledged: queued to be sent again, or the
 * answer's final error. */
static void try_failed(struct worker *w, const struct inflight *f, int status, const char *code,
                       uint32_t retry_after_s, uint64_t now)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    /* lost: this try, or an earlier one, may have been counted. */
    bool lost = f->lost || status == 0 || (status == 503 && strcmp(code, "unconfirmed") == 0);
    if (cfg->retry && !w->stopping && retryable(f, status, code)) {
        uint64_t back = (uint64_t)LOADENGINE_RETRY_MIN_US << (f->attempt < 10 ? f->attempt : 10);
        if (back > LOADENGINE_RETRY_MAX_US)
            back = LOADENGINE_RETRY_MAX_US;
        back = back / 2 + util_rng_next(&w->rng) % (back / 2 + 1); /* jitter: [back/2, back] */
        uint64_t after = (uint64_t)retry_after_s * 1000000u;
        if (after > LOADENGINE_RETRY_AFTER_MAX_US)
            after = LOADENGINE_RETRY_AFTER_MAX_US;
        if (after > back)
            back = after;
        struct inflight r = *f;
        r.due_us = now + back;
        r.attempt = f->attempt + 1;
        r.lost = lost;
        if (r.due_us < f->intended_us + cfg->retry_deadline_us && rq_push(w, &r)) {
            w->retries++;
            loadengine_errs_add(&w->retried, status, code, 1);
            return;
        }
    }
    loadengine_errs_add(&w->errs, status, code, 1);
    w->errors++;
    if (lost) {
        w->indeterminate++;
        w->n_maybe++;
        loadtally_add(&w->maybe, &f->a.key);
    }
}

/* Sends the retries that are due, while connections have room. */
static void send_retries(struct worker *w, uint64_t now)
{
    while (w->rq_n > 0 && w->rq[0].due_us <= now) {
        struct conn *c = pop_ready(w);
        if (c == NULL)
            return;
        struct inflight r = rq_pop(w);
        size_t blen;
        const char *body = answer_body(w, &r.a, &blen);
        send_try(w, c, now, &r.a, body, blen, r.intended_us, r.attempt, r.lost);
        push_ready(w, c);
    }
}

/* Retries past their deadline (no connection took them in time), and,
 * once the run stops, every one still waiting: final errors. */
static void expire_retries(struct worker *w, uint64_t now)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    while (w->rq_n > 0 && (w->stopping || (w->rq[0].due_us <= now &&
                                           now >= w->rq[0].intended_us + cfg->retry_deadline_us))) {
        struct inflight r = rq_pop(w);
        loadengine_errs_add(&w->errs, 0, w->stopping ? "interrupted" : "retry_deadline", 1);
        w->errors++;
        if (r.lost) {
            w->indeterminate++;
            w->n_maybe++;
            loadtally_add(&w->maybe, &r.a.key);
        }
    }
}

static void arm_sched(struct worker *w, uint64_t at, uint64_t now)
{
    if (w->sched_armed && w->sched_at == at)
        return;
    uint64_t d = at > now ? at - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(d / 1000000), .tv_usec = (suseconds_t)(d % 1000000)};
    event_add(w->sched, &tv);
    w->sched_armed = true;
    w->sched_at = at;
}

/* Ends the schedule; arrivals already due are counted as never sent. */
static void finish_schedule(struct worker *w, uint64_t now)
{
    if (w->sched_done)
        return;
    w->sched_done = true;
    if (w->e->cfg.closed_loop)
        return;
    for (uint64_t i = 0; i < UNSENT_COUNT_MAX; i++) {
        if (!w->have_next && !next_arrival(w))
            break;
        if (w->next_abs > now)
            break;
        w->unsent++;
        skip_arrival(w);
    }
}

static void flush_dirty(struct worker *w, uint64_t now)
{
    for (uint32_t i = 0; i < w->n_dirty; i++) {
        struct conn *c = w->dirty[i];
        c->dirty = false;
        if (c->state == CONN_READY && !c->wpending)
            do_write(c, now);
    }
    w->n_dirty = 0;
}

static void dispatch(struct worker *w)
{
    const struct loadengine_config *cfg = &w->e->cfg;
    uint64_t now = util_mono_us();
    if (w->rq_n > 0) {
        send_retries(w, now);
        if (w->rq_n > 0 && w->rq[0].due_us > now)
            arm_sched(w, w->rq[0].due_us, now); /* re-armed below for an earlier arrival */
    }
    while (!w->sched_done) {
        if (!w->have_next && !next_arrival(w)) {
            w->sched_done = true;
            break;
        }
        if (cfg->closed_loop) {
            if (cfg->duration_us != 0 && now >= w->e->start_us + cfg->duration_us) {
                w->sched_done = true;
                break;
            }
        } else if (w->next_abs > now) {
            now = util_mono_us();
            if (w->next_abs > now) {
                if (w->rq_n == 0 || w->rq[0].due_us > w->next_abs || !w->sched_armed)
                    arm_sched(w, w->next_abs, now);
                break;
            }
        }
        if (cfg->gate && w->next.burst >= atomic_load_explicit(&w->e->allowed, memory_order_acquire))
            break; /* the tick looks again */
        struct conn *c = pop_ready(w);
        if (c == NULL)
            break; /* a reply frees a slot and calls back here */
        send_request(w, c, now);
        skip_arrival(w);
        push_ready(w, c);
    }
    flush_dirty(w, now);
    publish(w);
}

static void on_sched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    w->sched_armed = false;
    dispatch(w);
}

static double schedule_end_us(const struct loadengine *e)
{
    const struct loadengine_config *cfg = &e->cfg;
    if (cfg->replay != NULL)
        return (double)cfg->replay->e[cfg->replay->n - 1].t_us / cfg->replay_speedup;
    if (cfg->closed_loop)
        return cfg->duration_us ? (double)cfg->duration_us : 1e300;
    return loadprofile_end_us(cfg->profile);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    const struct loadengine_config *cfg = &w->e->cfg;
    uint64_t now = util_mono_us();

    if (!w->stopping && atomic_load_explicit(&w->e->stop, memory_order_relaxed)) {
        w->stopping = true;
        uint64_t grace = cfg->timeout_us < STOP_GRACE_US ? cfg->timeout_us : STOP_GRACE_US;
        w->stop_deadline_us = now + grace;
        finish_schedule(w, now);
    }

    bool any_ready = false;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == CONN_READY) {
            any_ready = true;
            if (c->fl_n > 0 && now - c->fl[c->fl_head].sent_us > cfg->timeout_us)
                conn_fail(c, "timeout", now);
            else if (w->stopping && now >= w->stop_deadline_us && c->fl_n > 0)
                conn_fail(c, "interrupted", now);
        } else if (c->state == CONN_CONNECTING) {
            if (now - c->connect_start_us > cfg->timeout_us) {
                w->connect_failures++;
                conn_fail(c, "connect_failed", now);
            }
        } else if ((!w->sched_done || w->rq_n > 0) && now >= c->retry_at_us) {
            start_connect(c, now);
        }
    }
    if (any_ready)
        w->last_ready_us = now;

    if (!w->sched_done) {
        /* Give up on a target that is gone, or so far behind that the
         * schedule would never end: the rest is reported as unsent. */
        double end = (double)w->e->start_us + schedule_end_us(w->e) + (double)cfg->timeout_us;
        if ((!any_ready && now - w->last_ready_us > cfg->timeout_us) ||
            (!cfg->closed_loop && (double)now > end))
            finish_schedule(w, now);
    }

    expire_retries(w, now);
    dispatch(w);
    if (w->sched_done && w->inflight == 0 && w->rq_n == 0)
        w->done = true;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* One turn of the loop at a time (every ready reply read), then one
     * flush of the requests they made room for. */
    while (!w->done) {
        if (event_base_loop(w->base, EVLOOP_ONCE) < 0)
            break;
        if (w->flush_pending) {
            w->flush_pending = false;
            dispatch(w);
        }
    }
    uint64_t now = util_mono_us();
    /* Whatever is still unanswered (loop broken early) is lost. */
    for (uint32_t i = 0; i < w->n_conns; i++) {
        if (w->conns[i].state != CONN_IDLE)
            conn_fail(&w->conns[i], "interrupted", now);
    }
    if (w->res_buf != NULL)
        results_flush(w);
    publish(w);
    atomic_store_explicit(&w->finished, true, memory_order_release);
    return NULL;
}

/* ---- set-up and tear-down ----------------------------------------------- */

static void worker_free(struct worker *w)
{
    if (w->conns != NULL) {
        for (uint32_t i = 0; i < w->n_conns; i++) {
            struct conn *c = &w->conns[i];
            if (c->fd >= 0 || c->rev != NULL || c->wev != NULL)
                close_conn(c);
            free(c->wbuf);
            free(c->rbuf);
            free(c->fl);
        }
        free(w->conns);
    }
    free(w->ready);
    free(w->dirty);
    free(w->scratch);
    free(w->rq);
    free(w->res_buf);
    if (w->tick)
        event_free(w->tick);
    if (w->sched)
        event_free(w->sched);
    if (w->base)
        event_base_free(w->base);
    loadhist_free(&w->total);
    loadhist_free(&w->interval);
    loadtally_free(&w->tally);
    loadtally_free(&w->maybe);
    if (w->lock_init)
        pthread_mutex_destroy(&w->lock);
}

static bool worker_init(struct loadengine *e, struct worker *w, uint32_t id, uint32_t n_conns,
                        size_t max_body, char *err, size_t errlen)
{
    const struct loadengine_config *cfg = &e->cfg;
    w->e = e;
    w->id = id;
    w->m = id;
    w->n_conns = n_conns;
    util_rng_seed(&w->rng, cfg->seed ^ (0x9e3779b97f4a7c15ull * (id + 1)));

    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return util_fail(err, errlen, "out of memory");
    /* One loop per thread, never shared: no locks. Precise timers (timerfd)
     * for the open loop, whose arrivals are microseconds apart; they cost a
     * timerfd_settime per loop turn, which the closed loop does not need. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    if (!cfg->closed_loop)
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        return util_fail(err, errlen, "cannot create an event loop");
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    w->sched = event_new(w->base, -1, 0, on_sched, w);
    if (!w->tick || !w->sched)
        return util_fail(err, errlen, "out of memory");
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        return util_fail(err, errlen, "cannot create a mutex");
    w->lock_init = true;
    if (!loadhist_init(&w->total, LOADHIST_HIGHEST_US, LOADHIST_DIGITS) ||
        !loadhist_init(&w->interval, LOADHIST_HIGHEST_US, LOADHIST_DIGITS) ||
        !loadtally_init(&w->tally, cfg->n_questions) ||
        !loadtally_init(&w->maybe, cfg->n_questions))
        return util_fail(err, errlen, "out of memory");
    w->scratch_cap = max_body + 1;
    w->scratch = malloc(w->scratch_cap);
    w->conns = calloc(n_conns, sizeof(*w->conns));
    w->ready = calloc(n_conns, sizeof(*w->ready));
    w->dirty = calloc(n_conns, sizeof(*w->dirty));
    if (cfg->results != NULL && (w->res_buf = malloc(RES_BUF_SIZE)) == NULL)
        return util_fail(err, errlen, "out of memory");
    if (!w->scratch || !w->conns || !w->ready || !w->dirty)
        return util_fail(err, errlen, "out of memory");
    size_t rcap = (size_t)cfg->pipeline * RBUF_PER_SLOT;
    if (rcap < RBUF_MIN)
        rcap = RBUF_MIN;
    for (uint32_t i = 0; i < n_conns; i++) {
        struct conn *c = &w->conns[i];
        c->w = w;
        c->index = i;
        c->fd = -1;
        c->backoff_us = RECONNECT_MIN_US;
        c->wcap = e->max_req * cfg->pipeline;
        c->wbuf = malloc(c->wcap);
        c->rcap = rcap;
        c->rbuf = malloc(c->rcap);
        c->fl = calloc(cfg->pipeline, sizeof(*c->fl));
        if (!c->wbuf || !c->rbuf || !c->fl)
            return util_fail(err, errlen, "out of memory");
    }
    if (cfg->record_path != NULL) {
        if (!loadrecord_open(&w->rec, cfg->record_path, id, err, errlen))
            return false;
        w->recording = true;
    }
    return true;
}

static void engine_free(struct loadengine *e)
{
    if (e == NULL)
        return;
    if (e->w != NULL) {
        for (uint32_t i = 0; i < e->n_workers; i++) {
            struct worker *w = &e->w[i];
            if (w->recording) {
                loadrecord_close(&w->rec, NULL, 0);
                w->recording = false;
            }
            worker_free(w);
        }
        free(e->w);
    }
    if (e->admin_recording)
        loadrecord_close(&e->admin_rec, NULL, 0);
    free(e);
}

static bool config_ok(const struct loadengine_config *c, char *err, size_t errlen)
{
    int sources = (c->profile != NULL) + (c->replay != NULL) + (c->closed_loop ? 1 : 0);
    if (sources != 1)
        return util_fail(err, errlen, "exactly one of a profile, a replay and the closed loop");
    if (c->target == NULL || c->threads < 1 || c->threads > LOADENGINE_MAX_THREADS ||
        c->connections < c->threads || c->connections > LOADENGINE_MAX_CONNECTIONS ||
        c->pipeline < 1 || c->pipeline > LOADENGINE_MAX_PIPELINE || c->timeout_us == 0)
        return util_fail(err, errlen, "bad engine settings");
    if (c->replay == NULL && c->synth == NULL)
        return util_fail(err, errlen, "no answers to send");
    if (c->replay != NULL && (c->replay->n == 0 || !(c->replay_speedup >= 1)))
        return util_fail(err, errlen, "empty replay");
    if (c->closed_loop && c->duration_us == 0 && c->requests == 0)
        return util_fail(err, errlen, "the closed loop needs a duration or a request count");
    return true;
}

struct loadengine *loadengine_start(const struct loadengine_config *cfg, char *err, size_t errlen)
{
    if (!config_ok(cfg, err, errlen))
        return NULL;
    struct loadengine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        util_fail(err, errlen, "out of memory");
        return NULL;
    }
    e->cfg = *cfg;
    char path[LOADHTTP_PATH_MAX + 32];
    if (!loadhttp_path(cfg->target, "/v1/answers", path, sizeof(path))) {
        util_fail(err, errlen, "target path too long");
        goto err;
    }
    int n = snprintf(e->prefix, sizeof(e->prefix),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: ",
                     path, cfg->target->hostport);
    if (n <= 0 || (size_t)n >= sizeof(e->prefix)) {
        util_fail(err, errlen, "target too long");
        goto err;
    }
    e->prefix_len = (size_t)n;
    size_t max_body = cfg->replay ? cfg->replay->max_body : loadsynth_max_body(cfg->synth);
    e->max_req = e->prefix_len + LENGTH_FIELD + max_body;

    e->n_workers = cfg->threads;
    e->w = calloc(e->n_workers, sizeof(*e->w));
    if (e->w == NULL) {
        util_fail(err, errlen, "out of memory");
        goto err;
    }
    for (uint32_t i = 0; i < e->n_workers; i++) {
        uint32_t nc = cfg->connections / cfg->threads + (i < cfg->connections % cfg->threads);
        if (!worker_init(e, &e->w[i], i, nc, max_body, err, errlen))
            goto err;
    }
    if (cfg->record_path != NULL) {
        if (!loadrecord_open(&e->admin_rec, cfg->record_path, e->n_workers, err, errlen))
            goto err;
        e->admin_recording = true;
    }

    /* Connect everything now: an absent target is an error before the run,
     * and the first arrivals do not pay for the handshakes. */
    uint32_t connected = 0;
    char cerr[256] = "";
    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->w[i];
        for (uint32_t j = 0; j < w->n_conns; j++) {
            if (initial_connect(&w->conns[j], cerr, sizeof(cerr))) {
                connected++;
            } else {
                w->connect_failures++;
                close_conn(&w->conns[j]);
                w->conns[j].retry_at_us = util_mono_us() + RECONNECT_MIN_US;
            }
        }
    }
    if (connected == 0) {
        util_fail(err, errlen, "cannot connect to the target: %s", cerr);
        goto err;
    }

    e->start_us = util_mono_us() + START_DELAY_US;
    struct timeval tick = {.tv_sec = 0, .tv_usec = TICK_US};
    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->w[i];
        w->last_ready_us = e->start_us;
        event_add(w->tick, &tick);
        arm_sched(w, e->start_us, util_mono_us());
    }

    /* Signals go to the control thread only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (uint32_t i = 0; i < e->n_workers; i++) {
        if (pthread_create(&e->w[i].thread, NULL, worker_main, &e->w[i]) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            atomic_store(&e->stop, true);
            for (uint32_t j = 0; j < i; j++) {
                /* stop flag is seen at the next tick */
                pthread_join(e->w[j].thread, NULL);
            }
            util_fail(err, errlen, "cannot start thread %u", i);
            goto err;
        }
        e->w[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return e;

err:
    engine_free(e);
    if (cfg->record_path != NULL) /* the parts opened, the admin events' too */
        loadrecord_remove_parts(cfg->record_path, cfg->threads + 1);
    return NULL;
}

uint64_t loadengine_start_us(const struct loadengine *e)
{
    return e->start_us;
}

void loadengine_allow(struct loadengine *e, uint32_t n)
{
    atomic_store_explicit(&e->allowed, n, memory_order_release);
}

void loadengine_stop(struct loadengine *e)
{
    atomic_store_explicit(&e->stop, true, memory_order_relaxed);
}

void loadengine_record_admin(struct loadengine *e, uint64_t t_us, uint32_t question, bool open)
{
    if (e->admin_recording)
        loadrecord_write_admin(&e->admin_rec, t_us, question, open);
}

bool loadengine_finished(const struct loadengine *e)
{
    for (uint32_t i = 0; i < e->n_workers; i++) {
        if (!atomic_load_explicit(&e->w[i].finished, memory_order_acquire))
            return false;
    }
    return true;
}

void loadengine_progress(struct loadengine *e, struct loadengine_progress *p,
                         struct loadhist *interval)
{
    memset(p, 0, sizeof(*p));
    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->w[i];
        p->sent += atomic_load_explicit(&w->pub_sent, memory_order_relaxed);
        p->acked += atomic_load_explicit(&w->pub_acked, memory_order_relaxed);
        p->errors += atomic_load_explicit(&w->pub_errors, memory_order_relaxed);
        if (interval != NULL) {
            pthread_mutex_lock(&w->lock);
            loadhist_merge(interval, &w->interval);
            loadhist_reset(&w->interval);
            pthread_mutex_unlock(&w->lock);
        }
    }
}

bool loadengine_finish(struct loadengine *e, struct loadengine_result *r, char *err,
                       size_t errlen)
{
    bool ok = true;
    memset(r, 0, sizeof(*r));
    if (!loadhist_init(&r->latency, LOADHIST_HIGHEST_US, LOADHIST_DIGITS) ||
        !loadtally_init(&r->tally, e->cfg.n_questions) ||
        !loadtally_init(&r->maybe, e->cfg.n_questions)) {
        ok = util_fail(err, errlen, "out of memory");
    }
    for (uint32_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->w[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        w->started = false;
        r->sent += w->sent;
        r->completed += w->completed;
        r->acked += w->acked;
        r->errors += w->errors;
        r->indeterminate += w->indeterminate;
        r->counted_earlier += w->counted_earlier;
        r->retries += w->retries;
        for (uint32_t k = 0; k < w->retried.n; k++)
            loadengine_errs_add(&r->retried, w->retried.e[k].status, w->retried.e[k].code,
                                w->retried.e[k].count);
        r->retried.other += w->retried.other;
        r->unsent += w->unsent;
        r->connects += w->connects;
        r->connect_failures += w->connect_failures;
        if (w->first_send_us != 0 && (r->first_send_us == 0 || w->first_send_us < r->first_send_us))
            r->first_send_us = w->first_send_us;
        if (w->last_reply_us > r->last_reply_us)
            r->last_reply_us = w->last_reply_us;
        if (r->latency.counts != NULL)
            loadhist_merge(&r->latency, &w->total);
        if (r->tally.q != NULL || r->tally.n_questions == 0)
            loadtally_merge(&r->tally, &w->tally);
        if (r->maybe.q != NULL || r->maybe.n_questions == 0)
            loadtally_merge(&r->maybe, &w->maybe);
        r->maybe_counted += w->n_maybe;
        for (uint32_t k = 0; k < w->errs.n; k++)
            loadengine_errs_add(&r->errs, w->errs.e[k].status, w->errs.e[k].code,
                                w->errs.e[k].count);
        r->errs.other += w->errs.other;
        if (w->recording) {
            char rerr[256];
            if (!loadrecord_close(&w->rec, rerr, sizeof(rerr)) && ok)
                ok = util_fail(err, errlen, "%s", rerr);
            w->recording = false;
        }
    }
    if (e->admin_recording) {
        char rerr[256];
        if (!loadrecord_close(&e->admin_rec, rerr, sizeof(rerr)) && ok)
            ok = util_fail(err, errlen, "%s", rerr);
        e->admin_recording = false;
    }
    if (e->cfg.record_path != NULL) {
        /* the workers' parts, then the admin events' */
        if (ok)
            ok = loadrecord_merge(e->cfg.record_path, e->n_workers + 1, err, errlen);
        if (!ok)
            loadrecord_remove_parts(e->cfg.record_path, e->n_workers + 1);
    }
    engine_free(e);
    return ok;
}
