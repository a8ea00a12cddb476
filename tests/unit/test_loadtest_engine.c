/* The request engine against a small in-process HTTP server on a free
 * loopback port: every request is counted once, the tally is what the
 * server received, and closes, refusals, silence and stops are accounted. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "eventfile.h"
#include "loadengine.h"
#include "loadreplay.h"
#include "util.h"

#define MAX_CLIENTS 64
#define CBUF 65536

enum server_mode {
    SERVE_OK,          /* 202 to everything */
    SERVE_CLOSE_EVERY, /* 202, and "Connection: close" on every `every`-th reply */
    SERVE_REFUSE_EVERY,/* 503 overloaded on every `every`-th request */
    SERVE_MUTE_AFTER,  /* no reply after `every` requests */
    SERVE_UNCONFIRMED_EVERY, /* 503 unconfirmed on every `every`-th new body (it "landed":
                              * tallied), 409 duplicate_answer when that body comes again */
};

#define MAX_BODIES 512
#define BODY_MAX 256

struct server {
    int lfd;
    uint16_t port;
    enum server_mode mode;
    int every;
    pthread_t thread;
    atomic_bool stop;
    /* written by the server thread, read after join */
    uint64_t requests, accepted, refused, connections;
    struct loadtally tally; /* of the 202s, keyed from the bodies received */
    const struct eventfile *ef;
    char (*unconfirmed)[BODY_MAX]; /* SERVE_UNCONFIRMED_EVERY: the bodies answered so */
    size_t n_unconfirmed;
    uint64_t duplicates;
};

struct client {
    int fd;
    char buf[CBUF];
    size_t len;
};

static const char reply_202[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                "Content-Length: 21\r\n\r\n{\"status\":\"accepted\"}";
static const char reply_202_close[] = "HTTP/1.1 202 Accepted\r\nConnection: close\r\n"
                                      "Content-Length: 21\r\n\r\n{\"status\":\"accepted\"}";
static const char reply_503[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                "Content-Length: 22\r\n\r\n{\"error\":\"overloaded\"}";
static const char reply_503_unconfirmed[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\n"
                                            "Content-Length: 23\r\n\r\n{\"error\":\"unconfirmed\"}";
static const char reply_409_duplicate[] = "HTTP/1.1 409 Conflict\r\n"
                                          "Content-Length: 28\r\n\r\n{\"error\":\"duplicate_answer\"}";

/* SERVE_UNCONFIRMED_EVERY: was this body answered 503 unconfirmed before? */
static bool seen_unconfirmed(const struct server *s, const char *body, size_t len)
{
    for (size_t i = 0; i < s->n_unconfirmed; i++)
        if (strlen(s->unconfirmed[i]) == len && memcmp(s->unconfirmed[i], body, len) == 0)
            return true;
    return false;
}

static void tally_body(struct server *s, const char *body, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(body, len, 0, &jerr);
    if (o == NULL)
        return;
    const json_t *c = json_object_get(o, "country");
    struct loadtally_key k;
    if (loadtally_key_for(s->ef, json_integer_value(json_object_get(o, "question")),
                          json_integer_value(json_object_get(o, "answer")),
                          json_integer_value(json_object_get(o, "age")),
                          c ? json_string_value(c) : NULL, c ? json_string_length(c) : 0, &k))
        loadtally_add(&s->tally, &k);
    json_decref(o);
}

/* Serves the whole requests in c->buf; false when the connection must close. */
static bool serve(struct server *s, struct client *c)
{
    size_t pos = 0;
    bool keep = true;
    while (keep) {
        char *end = memmem(c->buf + pos, c->len - pos, "\r\n\r\n", 4);
        if (end == NULL)
            break;
        size_t head = (size_t)(end - (c->buf + pos)) + 4;
        const char *cl = memmem(c->buf + pos, head, "Content-Length: ", 16);
        size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
        if (c->len - pos < head + blen)
            break;
        const char *body = c->buf + pos + head;
        pos += head + blen;
        s->requests++;
        const char *reply = reply_202;
        if (s->mode == SERVE_MUTE_AFTER && s->requests > (uint64_t)s->every)
            continue;
        /* only a body with a user is one answer (anonymous ones repeat) */
        if (s->mode == SERVE_UNCONFIRMED_EVERY && memmem(body, blen, "\"user\"", 6) != NULL &&
            seen_unconfirmed(s, body, blen)) {
            reply = reply_409_duplicate;
            s->duplicates++;
        } else if (s->mode == SERVE_UNCONFIRMED_EVERY && s->requests % (uint64_t)s->every == 0 &&
                   s->n_unconfirmed < MAX_BODIES && blen < BODY_MAX) {
            reply = reply_503_unconfirmed;
            memcpy(s->unconfirmed[s->n_unconfirmed], body, blen);
            s->unconfirmed[s->n_unconfirmed++][blen] = '\0';
            s->refused++;
            tally_body(s, body, blen); /* it landed: only its reply was 503 */
        } else if (s->mode == SERVE_REFUSE_EVERY && s->requests % (uint64_t)s->every == 0) {
            reply = reply_503;
            s->refused++;
        } else {
            s->accepted++;
            tally_body(s, body, blen);
            if (s->mode == SERVE_CLOSE_EVERY && s->accepted % (uint64_t)s->every == 0) {
                reply = reply_202_close;
                keep = false;
            }
        }
        size_t n = strlen(reply);
        if (send(c->fd, reply, n, MSG_NOSIGNAL) != (ssize_t)n)
            return false;
    }
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
    return keep;
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    struct client *cl = calloc(MAX_CLIENTS, sizeof(*cl));
    struct pollfd pfd[MAX_CLIENTS + 1];
    for (int i = 0; i < MAX_CLIENTS; i++)
        cl[i].fd = -1;
    while (!atomic_load(&s->stop)) {
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (int i = 0; i < MAX_CLIENTS; i++)
            pfd[n++] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, 20) <= 0)
            continue;
        if (pfd[0].revents & POLLIN) {
            int fd = accept(s->lfd, NULL, NULL);
            for (int i = 0; fd >= 0 && i < MAX_CLIENTS; i++) {
                if (cl[i].fd < 0) {
                    cl[i].fd = fd;
                    cl[i].len = 0;
                    fd = -1;
                    s->connections++;
                }
            }
            if (fd >= 0)
                close(fd);
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (cl[i].fd < 0 || !(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(cl[i].fd, cl[i].buf + cl[i].len, CBUF - cl[i].len, 0);
            if (r <= 0 || (cl[i].len += (size_t)r, !serve(s, &cl[i]))) {
                close(cl[i].fd);
                cl[i].fd = -1;
            }
        }
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (cl[i].fd >= 0)
            close(cl[i].fd);
    }
    free(cl);
    return NULL;
}

static void server_start(struct server *s, const struct eventfile *ef, enum server_mode mode,
                         int every)
{
    memset(s, 0, sizeof(*s));
    s->ef = ef;
    s->mode = mode;
    s->every = every;
    assert_true(loadtally_init(&s->tally, ef->n_questions));
    s->unconfirmed = calloc(MAX_BODIES, sizeof(*s->unconfirmed));
    assert_non_null(s->unconfirmed);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 128), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

/* Stops the thread; the counts stay readable until server_free. */
static void server_stop(struct server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->lfd);
}

static void server_free(struct server *s)
{
    loadtally_free(&s->tally);
    free(s->unconfirmed);
}

static const char event_json[] =
    "{\"event\":\"engine\",\"questions\":["
    "{\"id\":1,\"text\":\"a\",\"options\":[\"x\",\"y\",\"z\"],\"correct\":1},"
    "{\"id\":2,\"text\":\"b\",\"options\":[\"x\",\"y\"],\"correct\":0}]}";

struct fixture {
    struct eventfile ef;
    struct loadsynth synth;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    uint32_t qidx[] = {0, 1};
    if (f == NULL || !eventfile_parse(event_json, strlen(event_json), &f->ef, err, sizeof(err)) ||
        !loadsynth_init(&f->synth, &f->ef, qidx, 2, 0, NULL, 5, err, sizeof(err)))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    loadsynth_free(&f->synth);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

static void target_of(const struct server *s, struct loadurl *u)
{
    char url[64], err[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s->port);
    assert_true(loadhttp_parse_url(url, u, err, sizeof(err)));
    assert_true(loadhttp_resolve(u, false, err, sizeof(err)));
}

static void steady(struct loadprofile *p, double rate, uint64_t requests)
{
    char err[128];
    struct loadprofile_params pp = {.kind = LOADPROFILE_STEADY, .rate = rate,
                                    .requests = requests, .speedup = 1};
    assert_true(loadprofile_init(p, &pp, err, sizeof(err)));
}

static void run(const struct loadengine_config *cfg, struct loadengine_result *r)
{
    char err[256];
    struct loadengine *e = loadengine_start(cfg, err, sizeof(err));
    if (e == NULL) {
        print_error("%s\n", err);
        fail();
    }
    uint64_t deadline = util_mono_ms() + 20000;
    while (!loadengine_finished(e) && util_mono_ms() < deadline)
        usleep(5000);
    assert_true(loadengine_finished(e));
    assert_true(loadengine_finish(e, r, err, sizeof(err)));
}

static uint64_t errs_of(const struct loadengine_result *r, int status, const char *code)
{
    for (uint32_t i = 0; i < r->errs.n; i++) {
        if (r->errs.e[i].status == status && strcmp(r->errs.e[i].code, code) == 0)
            return r->errs.e[i].count;
    }
    return 0;
}

static void assert_tally_equal(const struct loadtally *a, const struct loadtally *b)
{
    assert_int_equal(a->n_questions, b->n_questions);
    assert_memory_equal(a->q, b->q, a->n_questions * sizeof(*a->q));
    assert_memory_equal(&a->totals, &b->totals, sizeof(a->totals));
}

static void test_open_loop_counts_every_request(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_OK, 0);
    struct loadurl u;
    target_of(&s, &u);
    struct loadprofile p;
    steady(&p, 4000, 2000); /* half a second */
    struct loadengine_config cfg = {.target = &u, .threads = 2, .connections = 6, .pipeline = 3,
                                    .timeout_us = 5000000, .profile = &p, .synth = &f->synth,
                                    .n_questions = f->ef.n_questions, .seed = 1};
    struct loadengine_result r;
    uint64_t t0 = util_mono_us();
    run(&cfg, &r);
    uint64_t took = util_mono_us() - t0;
    server_stop(&s);
    assert_int_equal(r.sent, 2000);
    assert_int_equal(r.completed, 2000);
    assert_int_equal(r.acked, 2000);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.unsent, 0);
    assert_int_equal(s.requests, 2000);
    assert_int_equal(r.latency.total, 2000);
    assert_int_equal(r.connects, 6);
    /* open loop: the schedule, not the server, sets the pace */
    assert_true(took >= 450000 && took < 3000000);
    /* what the engine tallied is what the server received */
    assert_tally_equal(&r.tally, &s.tally);
    assert_int_equal(r.tally.q[0].total.answers + r.tally.q[1].total.answers, 2000);
    assert_int_equal(r.tally.q[0].total.answers, 1000); /* steady alternates the questions */
    loadengine_result_free(&r);
    server_free(&s);
}

static void test_server_closes(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_CLOSE_EVERY, 7);
    struct loadurl u;
    target_of(&s, &u);
    struct loadprofile p;
    steady(&p, 2000, 500);
    struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 4, .pipeline = 1,
                                    .timeout_us = 5000000, .profile = &p, .synth = &f->synth,
                                    .n_questions = f->ef.n_questions, .seed = 2};
    struct loadengine_result r;
    run(&cfg, &r);
    server_stop(&s);
    /* one request in flight per connection: a close after a reply loses nothing */
    assert_int_equal(r.sent, 500);
    assert_int_equal(r.acked, 500);
    assert_int_equal(r.errors, 0);
    assert_true(r.connects >= 4 + 500 / 7 - 4);
    assert_int_equal(s.connections, r.connects);
    assert_tally_equal(&r.tally, &s.tally);
    loadengine_result_free(&r);
    server_free(&s);
}

static void test_refusals_are_counted_not_tallied(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_REFUSE_EVERY, 4);
    struct loadurl u;
    target_of(&s, &u);
    struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 2, .pipeline = 4,
                                    .timeout_us = 5000000, .closed_loop = true, .requests = 400,
                                    .synth = &f->synth, .n_questions = f->ef.n_questions,
                                    .seed = 3};
    struct loadengine_result r;
    run(&cfg, &r);
    server_stop(&s);
    assert_int_equal(r.sent, 400);
    assert_int_equal(r.completed, 400);
    assert_int_equal(r.acked, 300);
    assert_int_equal(r.errors, 100);
    assert_int_equal(errs_of(&r, 503, "overloaded"), 100);
    assert_int_equal(r.indeterminate, 0);
    assert_int_equal(r.tally.totals.answers, 300);
    assert_tally_equal(&r.tally, &s.tally);
    loadengine_result_free(&r);
    server_free(&s);
}

/* --retry: every refused try is sent again after its Retry-After, with the
 * same body, until a 202: each answer acknowledged once, none in error. */
static void test_retry_resends_refusals(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_REFUSE_EVERY, 4);
    struct loadurl u;
    target_of(&s, &u);
    struct loadprofile p;
    steady(&p, 1000, 400);
    struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 4, .pipeline = 2,
                                    .timeout_us = 5000000, .profile = &p, .synth = &f->synth,
                                    .n_questions = f->ef.n_questions, .seed = 4, .retry = true,
                                    .retry_deadline_us = 15000000};
    struct loadengine_result r;
    run(&cfg, &r);
    server_stop(&s);
    assert_int_equal(r.acked, 400);
    assert_int_equal(r.errors, 0);
    assert_true(r.retries > 0);
    assert_int_equal(r.retries, s.refused);
    assert_int_equal(r.sent, 400 + r.retries);
    assert_int_equal(s.requests, r.sent);
    assert_int_equal(r.counted_earlier, 0);
    assert_int_equal(r.maybe_counted, 0);
    /* the bodies resent are the ones refused: the tallies agree */
    assert_tally_equal(&r.tally, &s.tally);
    loadengine_result_free(&r);
    server_free(&s);
}

/* --retry and 503 unconfirmed (the answer may have been counted): with a
 * user it is resent, and the 409 duplicate_answer that meets the retry says
 * it was counted, maybe (the acknowledged tally plus the maybe counted one
 * is what the server counted); without a user it is not resent (a resend
 * could count it twice) and is maybe counted. */
static void test_retry_after_unconfirmed(void **state)
{
    struct fixture *f = *state;
    struct loadsynth named;
    char err[256];
    uint32_t qidx[] = {0, 1};
    assert_true(loadsynth_init(&named, &f->ef, qidx, 2, 100000, "fan-", 5, err, sizeof(err)));
    for (int with_users = 1; with_users >= 0; with_users--) {
        struct server s;
        server_start(&s, &f->ef, SERVE_UNCONFIRMED_EVERY, 4);
        struct loadurl u;
        target_of(&s, &u);
        struct loadprofile p;
        steady(&p, 1000, 400);
        struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 2,
                                        .pipeline = 1, .timeout_us = 5000000, .profile = &p,
                                        .synth = with_users ? &named : &f->synth,
                                        .n_questions = f->ef.n_questions, .seed = 4,
                                        .retry = true, .retry_deadline_us = 15000000};
        struct loadengine_result r;
        run(&cfg, &r);
        server_stop(&s);
        assert_true(s.refused > 0);
        assert_int_equal(r.acked, 400 - s.refused);
        assert_int_equal(r.maybe_counted, s.refused);
        if (with_users) {
            assert_int_equal(r.retries, s.refused);
            assert_int_equal(s.duplicates, s.refused);
            assert_int_equal(r.counted_earlier, s.refused);
            assert_int_equal(r.errors, 0);
        } else {
            assert_int_equal(r.retries, 0);
            assert_int_equal(s.duplicates, 0);
            assert_int_equal(r.errors, s.refused);
            assert_int_equal(errs_of(&r, 503, "unconfirmed"), s.refused);
        }
        assert_true(loadtally_merge(&r.tally, &r.maybe));
        assert_tally_equal(&r.tally, &s.tally);
        loadengine_result_free(&r);
        server_free(&s);
    }
    loadsynth_free(&named);
}

static void test_silence_times_out(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_MUTE_AFTER, 10);
    struct loadurl u;
    target_of(&s, &u);
    struct loadprofile p;
    steady(&p, 200, 40);
    struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 2, .pipeline = 1,
                                    .timeout_us = 150000, .profile = &p, .synth = &f->synth,
                                    .n_questions = f->ef.n_questions, .seed = 4};
    struct loadengine_result r;
    uint64_t t0 = util_mono_ms();
    run(&cfg, &r);
    server_stop(&s);
    assert_true(util_mono_ms() - t0 < 5000); /* it ends */
    assert_int_equal(r.acked, 10);
    assert_true(errs_of(&r, 0, "timeout") >= 1);
    assert_int_equal(r.errors, r.indeterminate);
    /* every arrival is accounted: answered, lost in flight, or never sent */
    assert_int_equal(r.acked + r.indeterminate + r.unsent, 40);
    assert_int_equal(r.sent, r.acked + r.indeterminate);
    loadengine_result_free(&r);
    server_free(&s);
}

static void test_record_and_stop(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_OK, 0);
    struct loadurl u;
    target_of(&s, &u);
    char dir[] = "/tmp/lt-engine-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/rec.jsonl", dir);
    struct loadprofile p;
    steady(&p, 1000, 1000000); /* would take 1000 s */
    struct loadengine_config cfg = {.target = &u, .threads = 2, .connections = 2, .pipeline = 1,
                                    .timeout_us = 5000000, .profile = &p, .synth = &f->synth,
                                    .record_path = path, .n_questions = f->ef.n_questions,
                                    .seed = 6};
    char err[256];
    struct loadengine *e = loadengine_start(&cfg, err, sizeof(err));
    assert_non_null(e);
    usleep(300000);
    struct loadengine_progress pr;
    struct loadhist h;
    assert_true(loadhist_init(&h, LOADHIST_HIGHEST_US, LOADHIST_DIGITS));
    loadengine_progress(e, &pr, &h);
    assert_true(pr.sent > 100 && pr.sent < 600);
    assert_true(h.total > 0);
    loadengine_stop(e);
    uint64_t deadline = util_mono_ms() + 5000;
    while (!loadengine_finished(e) && util_mono_ms() < deadline)
        usleep(5000);
    assert_true(loadengine_finished(e));
    struct loadengine_result r;
    assert_true(loadengine_finish(e, &r, err, sizeof(err)));
    server_stop(&s);
    assert_true(r.sent >= pr.sent && r.sent < 1000);
    assert_int_equal(r.acked, r.sent);
    /* the recording holds what was sent, in time order */
    struct loadreplay rp;
    assert_true(loadreplay_load(path, &f->ef, &rp, err, sizeof(err)));
    assert_int_equal(rp.n, r.sent);
    for (uint64_t i = 1; i < rp.n; i++)
        assert_true(rp.e[i].t_us >= rp.e[i - 1].t_us);
    assert_true(rp.e[rp.n - 1].t_us < 1000000);
    assert_true(rp.e[0].key.valid);
    loadreplay_free(&rp);
    loadhist_free(&h);
    loadengine_result_free(&r);
    server_free(&s);
    unlink(path);
    rmdir(dir);
}

static void test_no_target(void **state)
{
    struct fixture *f = *state;
    struct server s;
    server_start(&s, &f->ef, SERVE_OK, 0);
    struct loadurl u;
    target_of(&s, &u);
    server_stop(&s); /* the port is free again: nothing listens */
    server_free(&s);
    struct loadprofile p;
    steady(&p, 100, 10);
    struct loadengine_config cfg = {.target = &u, .threads = 1, .connections = 1, .pipeline = 1,
                                    .timeout_us = 1000000, .profile = &p, .synth = &f->synth,
                                    .n_questions = f->ef.n_questions};
    char err[256];
    assert_null(loadengine_start(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot connect"));
    /* settings the engine refuses */
    cfg.threads = 2; /* more threads than connections */
    assert_null(loadengine_start(&cfg, err, sizeof(err)));
    cfg.threads = 1;
    cfg.closed_loop = true; /* two sources */
    assert_null(loadengine_start(&cfg, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_loop_counts_every_request),
        cmocka_unit_test(test_server_closes),
        cmocka_unit_test(test_refusals_are_counted_not_tallied),
        cmocka_unit_test(test_retry_resends_refusals),
        cmocka_unit_test(test_retry_after_unconfirmed),
        cmocka_unit_test(test_silence_times_out),
        cmocka_unit_test(test_record_and_stop),
        cmocka_unit_test(test_no_target),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
