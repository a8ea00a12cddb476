/*
 * The ingest API through ingest.h, without an HTTP server: every reply of
 * API.md section 3 (status, body, Retry-After), the counts a 202 leaves in
 * the store and the none a refusal leaves, admin open/close, drain.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "country.h"
#include "eventfile.h"
#include "fans.h"
#include "http.h"
#include "ingest.h"
#include "keys.h"
#include "qstate.h"
#include "store.h"
#include "util.h"

/* Question 1 and 3 are open from the start, 2 and 4 are not. */
static const char EVENT_JSON[] =
    "{\"event\": \"ti\", \"shards\": 2, \"country_shards\": 2,"
    " \"hot_countries\": {\"gb\": 2},"
    " \"questions\": ["
    "  {\"id\": 1, \"text\": \"a\", \"options\": [\"p\", \"q\", \"r\"], \"correct\": 2, \"open\": true},"
    "  {\"id\": 2, \"text\": \"b\", \"options\": [\"x\", \"y\"], \"correct\": 0},"
    "  {\"id\": 3, \"text\": \"c\", \"options\": [\"x\", \"y\"], \"correct\": 1, \"open\": true},"
    "  {\"id\": 4, \"text\": \"d\", \"options\": [\"x\", \"y\"], \"correct\": 1}"
    " ]}";

#define TOKEN "adm1n-Tok"

struct reply {
    int calls;
    int status;
    char body[256];
    char headers[128];
};

struct fx {
    struct eventfile ef;
    struct event_base *base;
    struct ingest_shared *sh;
    struct ingest *ig;
    struct store *reader; /* a clone of the memory store, for this thread */
    int drained_calls;
};

static void on_reply(void *ctx, int status, const char *body, size_t len, const char *headers)
{
    struct reply *r = ctx;
    r->calls++;
    r->status = status;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)len, body ? body : "");
    snprintf(r->headers, sizeof(r->headers), "%s", headers ? headers : "");
}

static struct ingest_config default_cfg(const char *token)
{
    return (struct ingest_config){
        .admin_token = token,
        .commit = {.flush_ms = 2, .deadline_ms = 2000, .max_batch_answers = 4096,
                   .max_waiting = 65536, .ttl_s = 3600},
        .state_refresh_ms = 100,
    };
}

/* store NULL: memory: (and a reader clone of it). */
static void fx_start(struct fx *fx, const char *token, struct store *store)
{
    memset(fx, 0, sizeof(*fx));
    char err[256] = "";
    if (!eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), &fx->ef, err, sizeof(err)))
        fail_msg("event: %s", err);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->sh = ingest_shared_create(&fx->ef);
    assert_non_null(fx->sh);
    if (store == NULL) {
        store = store_open("memory:", err, sizeof(err));
        assert_non_null(store);
        fx->reader = store_clone(store);
    }
    struct ingest_config cfg = default_cfg(token);
    fx->ig = ingest_create(fx->base, &fx->ef, fx->sh, true, store, &cfg, err, sizeof(err));
    if (fx->ig == NULL)
        fail_msg("ingest_create: %s", err);
}

static void fx_stop(struct fx *fx)
{
    ingest_free(fx->ig);
    ingest_shared_free(fx->sh);
    store_close(fx->reader);
    event_base_free(fx->base);
    eventfile_free(&fx->ef);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until r has been answered (or the timeout). */
static bool run_until_replied(struct fx *fx, const struct reply *r, uint64_t timeout_ms)
{
    struct event *t = event_new(fx->base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 5000};
    assert_non_null(t);
    event_add(t, &tv);
    uint64_t deadline = util_mono_ms() + timeout_ms;
    while (r->calls == 0 && util_mono_ms() < deadline)
        event_base_loop(fx->base, EVLOOP_ONCE);
    event_free(t);
    return r->calls > 0;
}

static void run_for(struct fx *fx, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(fx->base, &tv);
    event_base_dispatch(fx->base);
}

/* Serves one request and waits for its reply. */
static void serve(struct fx *fx, enum httpd_method m, const char *path, const char *ctype,
                  const char *auth, const char *body, struct reply *r)
{
    memset(r, 0, sizeof(*r));
    struct ingest_request req = {.method = m, .path = path, .content_type = ctype,
                                 .authorization = auth, .body = body ? body : "",
                                 .body_len = body ? strlen(body) : 0};
    assert_true(ingest_serve(fx->ig, &req, on_reply, r));
    assert_true(run_until_replied(fx, r, 10000));
    run_for(fx, 5); /* a second reply would show here */
    assert_int_equal(r->calls, 1);
}

static void post_answer(struct fx *fx, const char *body, struct reply *r)
{
    serve(fx, HTTPD_POST, "/v1/answers", "application/json", NULL, body, r);
}

static void admin(struct fx *fx, const char *path, const char *auth, struct reply *r)
{
    serve(fx, HTTPD_POST, path, NULL, auth, NULL, r);
}

/* Sum over the shards of every counter of the event. */
static uint64_t store_total(struct fx *fx)
{
    uint64_t total = 0;
    uint32_t n = keys_counter_count(&fx->ef);
    for (uint32_t id = 0; id < n; id++) {
        for (uint32_t s = 1; s <= keys_counter_shards(&fx->ef, id); s++) {
            char key[KEY_MAX];
            size_t len = keys_counter_key(&fx->ef, id, s, key);
            const char *keys[] = {key};
            uint64_t v = 0;
            assert_int_equal(store_mget_u64(fx->reader, keys, &len, 1, &v, NULL), STORE_OK);
            total += v;
        }
    }
    return total;
}

/* The question-level counter (right or wrong) of question id, summed. */
static uint64_t question_count(struct fx *fx, uint32_t qid, enum key_outcome o)
{
    uint64_t total = 0;
    for (uint32_t s = 1; s <= fx->ef.shards; s++) {
        char key[KEY_MAX];
        size_t len = key_question(key, fx->ef.name, qid, o, s);
        const char *keys[] = {key};
        uint64_t v = 0;
        assert_int_equal(store_mget_u64(fx->reader, keys, &len, 1, &v, NULL), STORE_OK);
        total += v;
    }
    return total;
}

static void test_accepted_is_counted(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    memset(&r, 0, sizeof(r));
    static const char body[] = "{\"question\": 1, \"answer\": 2, \"age\": 27, \"country\": \"uk\"}";
    struct ingest_request req = {.method = HTTPD_POST, .path = "/v1/answers",
                                 .content_type = "application/json; charset=utf-8",
                                 .body = body, .body_len = sizeof(body) - 1};
    assert_true(ingest_serve(fx.ig, &req, on_reply, &r));
    /* A 202 waits for the store: never answered inside serve. */
    assert_int_equal(r.calls, 0);
    assert_true(run_until_replied(&fx, &r, 10000));
    assert_int_equal(r.status, 202);
    assert_string_equal(r.body, "{\"status\":\"accepted\"}");
    assert_string_equal(r.headers, "");
    /* Counted right (option 2 is correct), four counters. */
    assert_int_equal(question_count(&fx, 1, KEY_RIGHT), 1);
    assert_int_equal(question_count(&fx, 1, KEY_WRONG), 0);
    assert_int_equal(store_total(&fx), KEYS_PER_ANSWER);

    struct reply r2;
    post_answer(&fx, "{\"question\": 3, \"answer\": 0, \"age\": 70}", &r2);
    assert_int_equal(r2.status, 202);
    assert_int_equal(question_count(&fx, 3, KEY_WRONG), 1);
    assert_int_equal(store_total(&fx), 2 * KEYS_PER_ANSWER);
    fx_stop(&fx);
}

/* Every refusal: its status and exact body, and no counter touched. */
static void test_refusals_count_nothing(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    static const char ok_body[] = "{\"question\": 1, \"answer\": 0, \"age\": 27}";
    char big[HTTP_MAX_BODY + 2];
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, ok_body, sizeof(ok_body) - 1);

    static const struct {
        enum httpd_method method;
        const char *ctype;
        const char *body;
        int status;
        const char *want;
    } cases[] = {
        {HTTPD_GET, "application/json", ok_body, 405, "{\"error\":\"method_not_allowed\"}"},
        {HTTPD_HEAD, NULL, NULL, 405, "{\"error\":\"method_not_allowed\"}"},
        {HTTPD_OTHER, "application/json", ok_body, 405, "{\"error\":\"method_not_allowed\"}"},
        {HTTPD_POST, NULL, ok_body, 415, "{\"error\":\"unsupported_media_type\"}"},
        {HTTPD_POST, "text/plain", ok_body, 415, "{\"error\":\"unsupported_media_type\"}"},
        {HTTPD_POST, "application/x-www-form-urlencoded", ok_body, 415,
         "{\"error\":\"unsupported_media_type\"}"},
        {HTTPD_POST, "application/json", "", 400, "{\"error\":\"invalid_json\"}"},
        {HTTPD_POST, "application/json", "{\"question\": 1,", 400, "{\"error\":\"invalid_json\"}"},
        {HTTPD_POST, "application/json", "{\"question\": 1, \"answer\": 0, \"age\": 0}", 400,
         "{\"error\":\"invalid_field\",\"field\":\"age\"}"},
        {HTTPD_POST, "application/json", "{\"question\": 1, \"answer\": 3, \"age\": 9}", 400,
         "{\"error\":\"invalid_field\",\"field\":\"answer\"}"},
        {HTTPD_POST, "application/json", "{\"question\": 9, \"answer\": 0, \"age\": 9}", 404,
         "{\"error\":\"unknown_question\"}"},
        {HTTPD_POST, "application/json", "{\"question\": 2, \"answer\": 0, \"age\": 9}", 409,
         "{\"error\":\"question_not_open\"}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r;
        serve(&fx, cases[i].method, "/v1/answers", cases[i].ctype, NULL, cases[i].body, &r);
        if (r.status != cases[i].status || strcmp(r.body, cases[i].want) != 0)
            fail_msg("case %zu: %d %s, want %d %s", i, r.status, r.body, cases[i].status,
                     cases[i].want);
    }

    /* Over 4096 bytes, whether the server read it or not. */
    struct reply r;
    post_answer(&fx, big, &r);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body, "{\"error\":\"body_too_large\"}");
    memset(&r, 0, sizeof(r));
    struct ingest_request tl = {.method = HTTPD_POST, .path = "/v1/answers",
                                .content_type = "application/json", .body = "",
                                .too_large = true};
    assert_true(ingest_serve(fx.ig, &tl, on_reply, &r));
    assert_true(run_until_replied(&fx, &r, 1000));
    assert_int_equal(r.status, 413);

    run_for(&fx, 20);
    assert_int_equal(store_total(&fx), 0);
    fx_stop(&fx);
}

/* Paths that are not the ingest API's are left to the caller. */
static void test_other_paths_not_served(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    static const char *const paths[] = {"/", "/v1/stats", "/v1/answers/", "/v1/answer",
                                        "/healthz", "/v1/admin/other"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct reply r = {0};
        struct ingest_request req = {.method = HTTPD_POST, .path = paths[i], .body = ""};
        if (ingest_serve(fx.ig, &req, on_reply, &r))
            fail_msg("%s served", paths[i]);
        assert_int_equal(r.calls, 0);
    }
    fx_stop(&fx);
}

static void test_admin_auth_and_routes(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    static const struct {
        enum httpd_method method;
        const char *path;
        const char *auth;
        int status;
        const char *want;
    } cases[] = {
        {HTTPD_POST, "/v1/admin/questions/2/open", NULL, 401, "{\"error\":\"unauthorized\"}"},
        {HTTPD_POST, "/v1/admin/questions/2/open", "Bearer wrong", 401,
         "{\"error\":\"unauthorized\"}"},
        {HTTPD_POST, "/v1/admin/questions/2/open", TOKEN, 401, "{\"error\":\"unauthorized\"}"},
        {HTTPD_POST, "/v1/admin/questions/2/open", "Basic " TOKEN, 401,
         "{\"error\":\"unauthorized\"}"},
        {HTTPD_GET, "/v1/admin/questions/2/open", "Bearer " TOKEN, 405,
         "{\"error\":\"method_not_allowed\"}"},
        {HTTPD_POST, "/v1/admin/questions/9/open", "Bearer " TOKEN, 404,
         "{\"error\":\"unknown_question\"}"},
        {HTTPD_POST, "/v1/admin/questions/x/open", "Bearer " TOKEN, 404,
         "{\"error\":\"unknown_question\"}"},
        {HTTPD_POST, "/v1/admin/questions//open", "Bearer " TOKEN, 404,
         "{\"error\":\"unknown_question\"}"},
        {HTTPD_POST, "/v1/admin/questions/99999999999999999999/open", "Bearer " TOKEN, 404,
         "{\"error\":\"unknown_question\"}"},
        {HTTPD_POST, "/v1/admin/questions/2/reopen", "Bearer " TOKEN, 404,
         "{\"error\":\"not_found\"}"},
        {HTTPD_POST, "/v1/admin/questions/2", "Bearer " TOKEN, 404, "{\"error\":\"not_found\"}"},
        /* closing a question never opened */
        {HTTPD_POST, "/v1/admin/questions/4/close", "Bearer " TOKEN, 409,
         "{\"error\":\"question_not_open\"}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r;
        serve(&fx, cases[i].method, cases[i].path, NULL, cases[i].auth, NULL, &r);
        if (r.status != cases[i].status || strcmp(r.body, cases[i].want) != 0)
            fail_msg("case %zu: %d %s, want %d %s", i, r.status, r.body, cases[i].status,
                     cases[i].want);
    }
    /* Nothing of that opened question 2. */
    struct reply r;
    post_answer(&fx, "{\"question\": 2, \"answer\": 0, \"age\": 9}", &r);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"error\":\"question_not_open\"}");
    fx_stop(&fx);
}

/* open -> answers counted -> close -> answers refused; both idempotent. */
static void test_admin_open_close_cycle(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    admin(&fx, "/v1/admin/questions/2/open", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.body, "");
    post_answer(&fx, "{\"question\": 2, \"answer\": 0, \"age\": 9}", &r);
    assert_int_equal(r.status, 202);
    admin(&fx, "/v1/admin/questions/2/open", "bearer " TOKEN, &r);
    assert_int_equal(r.status, 204);
    post_answer(&fx, "{\"question\": 2, \"answer\": 1, \"age\": 9}", &r);
    assert_int_equal(r.status, 202);
    assert_int_equal(question_count(&fx, 2, KEY_RIGHT), 1);
    assert_int_equal(question_count(&fx, 2, KEY_WRONG), 1);

    /* A close takes effect QSTATE_CLOSE_DELAY_MS after it is asked, on
     * every node at once, and its 204 comes then: an answer after the 204
     * is refused. */
    uint64_t asked = util_mono_ms();
    admin(&fx, "/v1/admin/questions/2/close", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 204);
    assert_true(util_mono_ms() - asked + 5 >= QSTATE_CLOSE_DELAY_MS);
    post_answer(&fx, "{\"question\": 2, \"answer\": 0, \"age\": 9}", &r);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"error\":\"question_closed\"}");
    admin(&fx, "/v1/admin/questions/2/close", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(store_total(&fx), 2 * KEYS_PER_ANSWER);

    /* The state is in the store for every other node. */
    char key[KEY_MAX], *val = NULL;
    size_t klen = key_state(key, fx.ef.name, 2), vlen = 0;
    assert_int_equal(store_get(fx.reader, key, klen, &val, &vlen), STORE_OK);
    assert_memory_equal(val, "closed ", 7);
    free(val);
    fx_stop(&fx);
}

static void test_admin_disabled_without_token(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, NULL, NULL);
    struct reply r;
    admin(&fx, "/v1/admin/questions/2/open", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body, "{\"error\":\"admin_disabled\"}");
    admin(&fx, "/v1/admin/questions/2/open", "Bearer ", &r);
    assert_int_equal(r.status, 401);
    fx_stop(&fx);
}

static void on_drained(void *arg)
{
    ((struct fx *)arg)->drained_calls++;
}

/* Drain: what was accepted is still answered 202; anything new is 503
 * draining with Retry-After; drained fires once. */
static void test_drain(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply before = {0};
    static const char body[] = "{\"question\": 1, \"answer\": 0, \"age\": 27}";
    struct ingest_request req = {.method = HTTPD_POST, .path = "/v1/answers",
                                 .content_type = "application/json", .body = body,
                                 .body_len = sizeof(body) - 1};
    assert_true(ingest_serve(fx.ig, &req, on_reply, &before));
    ingest_drain(fx.ig, on_drained, &fx);
    assert_true(ingest_shared_draining(fx.sh));

    struct reply r;
    post_answer(&fx, body, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"error\":\"draining\"}");
    assert_string_equal(r.headers, "Retry-After: 1\r\n");

    assert_true(run_until_replied(&fx, &before, 10000));
    assert_int_equal(before.status, 202);
    run_for(&fx, 20);
    assert_int_equal(fx.drained_calls, 1);
    assert_int_equal(store_total(&fx), KEYS_PER_ANSWER);
    fx_stop(&fx);
}

/* The metrics text counts replies by status. */
static void test_metrics(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27}", &r);
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27}", &r);
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 0}", &r);
    ingest_publish_stats(fx.ig, NULL);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    ingest_shared_write_metrics(fx.sh, out);
    size_t n = evbuffer_get_length(out);
    char *text = malloc(n + 1);
    assert_non_null(text);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    assert_non_null(strstr(text, "livetally_ingest_requests_total{code=\"202\"} 2\n"));
    assert_non_null(strstr(text, "livetally_ingest_requests_total{code=\"400\"} 1\n"));
    assert_non_null(strstr(text, "livetally_ingest_answers_received_total 3\n"));
    assert_non_null(strstr(text, "livetally_ingest_answers_acknowledged_total 2\n"));
    assert_non_null(strstr(text, "livetally_ingest_draining 0\n"));
    free(text);
    fx_stop(&fx);
}

/* One answer per user per question (API.md section 3): the second answer of
 * a user to a question is 409 duplicate_answer and changes no count. */
static void test_duplicate_user_answer(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"fan-1\"}", &r);
    assert_int_equal(r.status, 202);
    post_answer(&fx, "{\"question\": 1, \"answer\": 2, \"age\": 27, \"user\": \"fan-1\"}", &r);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"error\":\"duplicate_answer\"}");
    /* Another question, or another user, is fine. */
    post_answer(&fx, "{\"question\": 3, \"answer\": 0, \"age\": 27, \"user\": \"fan-1\"}", &r);
    assert_int_equal(r.status, 202);
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"fan-2\"}", &r);
    assert_int_equal(r.status, 202);
    assert_int_equal(store_total(&fx), 3 * KEYS_PER_ANSWER);
    fx_stop(&fx);
}


/* A blob of the store ("" when absent). */
static void read_blob(struct fx *fx, const char *key, char *out, size_t cap)
{
    char *val = NULL;
    size_t vlen = 0;
    out[0] = '\0';
    enum store_status st = store_get(fx->reader, key, strlen(key), &val, &vlen);
    if (st == STORE_OK)
        snprintf(out, cap, "%.*s", (int)vlen, val);
    else
        assert_int_equal(st, STORE_NOTFOUND);
    free(val);
}

/* The answer time is the server's: receive time minus the open time, never
 * below 0 and never from the client. */
static void test_answer_time(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    admin(&fx, "/v1/admin/questions/2/open", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 204);
    uint64_t t0 = util_wall_ms();
    run_for(&fx, 120);
    post_answer(&fx, "{\"question\": 2, \"answer\": 0, \"age\": 27, \"user\": \"t-1\", \"ms\": 1}",
                &r);
    uint64_t t1 = util_wall_ms();
    assert_int_equal(r.status, 202);
    char val[64];
    read_blob(&fx, "ti:u:t-1:q2", val, sizeof(val));
    bool right = false;
    uint64_t ms = 0;
    assert_true(fans_marker_parse(val, strlen(val), &right, &ms));
    assert_true(right);
    assert_true(ms >= 120);
    assert_true(ms <= t1 - t0 + 50);
    post_answer(&fx, "{\"question\": 2, \"answer\": 1, \"age\": 27, \"user\": \"t-2\"}", &r);
    assert_int_equal(r.status, 202);
    read_blob(&fx, "ti:u:t-2:q2", val, sizeof(val));
    assert_true(fans_marker_parse(val, strlen(val), &right, &ms));
    assert_false(right);
    fx_stop(&fx);
}

/* The instance's top list reaches the store under a slot of its own within
 * about a second; the drain writes the last one before it reports drained. */
static void test_fans_list_published(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r;
    post_answer(&fx, "{\"question\": 1, \"answer\": 2, \"age\": 27, \"user\": \"fan-a\"}", &r);
    assert_int_equal(r.status, 202);
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27, \"user\": \"fan-b\"}", &r);
    assert_int_equal(r.status, 202); /* wrong: not in the list */
    char val[FANS_JSON_MAX];
    uint64_t deadline = util_mono_ms() + 5000;
    do {
        run_for(&fx, 50);
        read_blob(&fx, "ti:fans:1", val, sizeof(val));
    } while (val[0] == '\0' && util_mono_ms() < deadline);
    struct fans_entry e[FANS_TOPK];
    size_t n = 0;
    assert_true(fans_decode(val, strlen(val), e, FANS_TOPK, &n));
    assert_int_equal(n, 1);
    assert_string_equal(e[0].user, "fan-a");
    assert_int_equal(e[0].right, 1);

    /* Another instance writes under our number (the store lost the
     * sequence and handed it out again): the next publish moves to a new
     * slot instead of overwriting that list. */
    static const char theirs[] = "{\"owner\":\"0000000000000001\",\"fans\":[]}";
    assert_int_equal(store_set(fx.reader, "ti:fans:1", 9, theirs, sizeof(theirs) - 1, 60),
                     STORE_OK);
    post_answer(&fx, "{\"question\": 1, \"answer\": 2, \"age\": 27, \"user\": \"fan-c\"}", &r);
    assert_int_equal(r.status, 202);
    deadline = util_mono_ms() + 5000;
    do {
        run_for(&fx, 50);
        read_blob(&fx, "ti:fans:2", val, sizeof(val));
    } while (val[0] == '\0' && util_mono_ms() < deadline);
    assert_true(fans_decode(val, strlen(val), e, FANS_TOPK, &n));
    assert_int_equal(n, 2);
    read_blob(&fx, "ti:fans:1", val, sizeof(val));
    assert_string_equal(val, theirs);

    /* a second right answer, then a drain at once: the list has it */
    post_answer(&fx, "{\"question\": 3, \"answer\": 1, \"age\": 27, \"user\": \"fan-a\"}", &r);
    assert_int_equal(r.status, 202);
    ingest_drain(fx.ig, on_drained, &fx);
    deadline = util_mono_ms() + 5000;
    while (fx.drained_calls == 0 && util_mono_ms() < deadline)
        run_for(&fx, 10);
    assert_int_equal(fx.drained_calls, 1);
    read_blob(&fx, "ti:fans:2", val, sizeof(val));
    assert_true(fans_decode(val, strlen(val), e, FANS_TOPK, &n));
    assert_int_equal(n, 2);
    assert_string_equal(e[0].user, "fan-a");
    assert_int_equal(e[0].right, 2);
    read_blob(&fx, "ti:fans:3", val, sizeof(val));
    assert_string_equal(val, ""); /* no other slot taken */

    fx_stop(&fx);
}

/* Regression: ingest_free answers every waiting request, also those not yet
 * handed to the store thread. */
static void test_free_answers_waiting_requests(void **state)
{
    (void)state;
    struct fx fx;
    fx_start(&fx, TOKEN, NULL);
    struct reply r = {0};
    static const char body[] = "{\"question\": 1, \"answer\": 0, \"age\": 27}";
    struct ingest_request req = {.method = HTTPD_POST, .path = "/v1/answers",
                                 .content_type = "application/json", .body = body,
                                 .body_len = sizeof(body) - 1};
    assert_true(ingest_serve(fx.ig, &req, on_reply, &r));
    assert_int_equal(r.calls, 0);
    ingest_free(fx.ig);
    fx.ig = NULL;
    assert_int_equal(r.calls, 1);
    ingest_shared_free(fx.sh);
    store_close(fx.reader);
    event_base_free(fx.base);
    eventfile_free(&fx.ef);
}

/* A port nothing listens on: bind to port 0 for a free one, then close. */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* Regression: with the store down since start-up the question states are
 * unknown: 503 backend_unavailable (retry), not 409 question_not_open. */
static void test_store_down_at_start_is_503(void **state)
{
    (void)state;
    char url[128], err[256] = "";
    snprintf(url, sizeof(url), "memcached://127.0.0.1:%u?timeout_ms=50", closed_port());
    struct store *s = store_open(url, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s: %s", url, err);
    struct fx fx;
    fx_start(&fx, TOKEN, s);
    struct reply r;
    post_answer(&fx, "{\"question\": 1, \"answer\": 0, \"age\": 27}", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.headers, "Retry-After: 1\r\n");
    fx_stop(&fx);
}

/* With the store down, the admin API answers 503 with Retry-After. */
static void test_admin_store_down_is_503(void **state)
{
    (void)state;
    char url[128], err[256] = "";
    snprintf(url, sizeof(url), "memcached://127.0.0.1:%u?timeout_ms=50", closed_port());
    struct store *s = store_open(url, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s: %s", url, err);
    struct fx fx;
    fx_start(&fx, TOKEN, s);
    struct reply r;
    admin(&fx, "/v1/admin/questions/2/open", "Bearer " TOKEN, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"error\":\"backend_unavailable\"}");
    assert_string_equal(r.headers, "Retry-After: 1\r\n");
    fx_stop(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_is_counted),
        cmocka_unit_test(test_refusals_count_nothing),
        cmocka_unit_test(test_other_paths_not_served),
        cmocka_unit_test(test_admin_auth_and_routes),
        cmocka_unit_test(test_admin_open_close_cycle),
        cmocka_unit_test(test_admin_disabled_without_token),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_duplicate_user_answer),
        cmocka_unit_test(test_answer_time),
        cmocka_unit_test(test_fans_list_published),
        cmocka_unit_test(test_free_answers_waiting_requests),
        cmocka_unit_test(test_store_down_at_start_is_503),
        cmocka_unit_test(test_admin_store_down_is_503),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
