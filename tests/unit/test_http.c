/* Shared HTTP code: the admin token file, the bearer check and the reply shapes
 * of API.md, over a real evhttp round trip on a free loopback port. */
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http.h"
#include "util.h"

/* ---- http_load_token ---- */

struct tmpdir {
    char path[64];
};

static int setup_dir(void **state)
{
    struct tmpdir *d = calloc(1, sizeof(*d));
    assert_non_null(d);
    snprintf(d->path, sizeof(d->path), "/tmp/lt-test-http-XXXXXX");
    assert_non_null(mkdtemp(d->path));
    *state = d;
    return 0;
}

static int teardown_dir(void **state)
{
    struct tmpdir *d = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->path);
    assert_int_equal(system(cmd), 0);
    free(d);
    return 0;
}

/* Writes len bytes to DIR/name; the full path goes to path. */
static void write_file(const struct tmpdir *d, const char *name, const char *data, size_t len,
                       char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", d->path, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_token_accepted(void **state)
{
    const struct tmpdir *d = *state;
    char tok256[257];
    memset(tok256, 'T', 256);
    tok256[256] = '\0';
    char tok256_file[300];
    snprintf(tok256_file, sizeof(tok256_file), "%s\n", tok256);

    static const struct {
        const char *text;
        const char *want;
    } fixed[] = {
        {"s3cret", "s3cret"},
        {"s3cret\n", "s3cret"},
        {"  s3cret \n", "s3cret"},
        {"\t s3cret\t\r\n", "s3cret"},
        {"s3cret\r\nsecond line\n", "s3cret"},
        {"\n\n  first-token\nsecond\n", "first-token"},
        {"a", "a"},
        {"!#$%&'()*+,-./:;<=>?@[]^_`{|}~", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"},
    };
    char path[128], err[256];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        write_file(d, "token", fixed[i].text, strlen(fixed[i].text), path, sizeof(path));
        err[0] = '\0';
        char *t = http_load_token(path, err, sizeof(err));
        if (t == NULL)
            fail_msg("case %zu refused: %s", i, err);
        assert_string_equal(t, fixed[i].want);
        free(t);
    }
    write_file(d, "token", tok256_file, strlen(tok256_file), path, sizeof(path));
    char *t = http_load_token(path, err, sizeof(err));
    assert_non_null(t);
    assert_string_equal(t, tok256);
    free(t);
}

static void expect_refused(const char *path, const char *want_err)
{
    char err[512] = "";
    char *t = http_load_token(path, err, sizeof(err));
    if (t != NULL)
        fail_msg("%s accepted as '%s'", path, t);
    char want[512];
    snprintf(want, sizeof(want), "--admin-token-file %s: %s", path, want_err);
    assert_string_equal(err, want);
}

static void test_token_refused(void **state)
{
    const struct tmpdir *d = *state;
    static const char *const LEN_MSG = "the token must be 1..256 characters on the first line";
    static const char *const CHAR_MSG = "the token must not contain spaces or control characters";
    char path[128];

    write_file(d, "empty", "", 0, path, sizeof(path));
    expect_refused(path, LEN_MSG);
    write_file(d, "blank", "  \n\t\r\n\n", 7, path, sizeof(path));
    expect_refused(path, LEN_MSG);

    char long_tok[300];
    memset(long_tok, 'L', 257);
    long_tok[257] = '\n';
    write_file(d, "long", long_tok, 258, path, sizeof(path));
    expect_refused(path, LEN_MSG);

    write_file(d, "space", "abc def\n", 8, path, sizeof(path));
    expect_refused(path, CHAR_MSG);
    write_file(d, "tab", "abc\tdef", 7, path, sizeof(path));
    expect_refused(path, CHAR_MSG);
    write_file(d, "ctrl", "abc\x01" "def", 7, path, sizeof(path));
    expect_refused(path, CHAR_MSG);
    write_file(d, "del", "abc\x7f", 4, path, sizeof(path));
    expect_refused(path, CHAR_MSG);
    write_file(d, "utf8", "caf\xc3\xa9", 5, path, sizeof(path));
    expect_refused(path, CHAR_MSG);

    snprintf(path, sizeof(path), "%s/missing", d->path);
    expect_refused(path, "No such file or directory");
    expect_refused(d->path, "Is a directory");

    /* Bigger than a token file can sensibly be: refused before reading it. */
    char *big = malloc(8192);
    assert_non_null(big);
    memset(big, 'B', 8192);
    big[10] = '\n';
    write_file(d, "big", big, 8192, path, sizeof(path));
    free(big);
    expect_refused(path, "File too large");
}

/* Regression: a NUL inside the token's line is refused, not a silent cut. */
static void test_token_with_nul_refused(void **state)
{
    const struct tmpdir *d = *state;
    char path[128];
    write_file(d, "nul", "ab\0cd\n", 6, path, sizeof(path));
    expect_refused(path, "the token must not contain spaces or control characters");
    /* the token's line after blank ones: the same */
    write_file(d, "nul2", "\n \nab\0cd\n", 9, path, sizeof(path));
    expect_refused(path, "the token must not contain spaces or control characters");
}

/* ---- the bearer check on the raw header value ---- */

static void test_bearer_match_table(void **state)
{
    (void)state;
    static const struct {
        const char *auth;  /* NULL: no header */
        const char *token; /* NULL: admin API off */
        bool ok;
    } cases[] = {
        {"Bearer s3cret-Tok", "s3cret-Tok", true},
        {"bearer s3cret-Tok", "s3cret-Tok", true},
        {"BeArEr s3cret-Tok", "s3cret-Tok", true},
        {"Bearer     s3cret-Tok", "s3cret-Tok", true},
        {"Bearer x", "x", true},
        {NULL, "s3cret-Tok", false},
        {"Bearer s3cret-Tok", NULL, false},
        {NULL, NULL, false},
        {"", "s3cret-Tok", false},
        {"Bearer", "s3cret-Tok", false},
        {"Bearer ", "s3cret-Tok", false},
        {"Bearer s3cret-tok", "s3cret-Tok", false},
        {"Bearer s3cret-To", "s3cret-Tok", false},
        {"Bearer s3cret-TokX", "s3cret-Tok", false},
        {"Bearer s3cret-Tok ", "s3cret-Tok", true},   /* trailing OWS is not the value's */
        {"Bearer s3cret-Tok \t ", "s3cret-Tok", true},
        {"Bearer s3cret-Tok extra", "s3cret-Tok", false},
        {"Bearer\ts3cret-Tok", "s3cret-Tok", false},
        {"Bearers3cret-Tok", "s3cret-Tok", false},
        {"Basic s3cret-Tok", "s3cret-Tok", false},
        {"s3cret-Tok", "s3cret-Tok", false},
        {"Bearer Bearer s3cret-Tok", "s3cret-Tok", false},
        {"Bearer s3cret-Tok", "", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (http_bearer_match(cases[i].auth, cases[i].token) != cases[i].ok)
            fail_msg("case %zu '%s' vs '%s': want %s", i, cases[i].auth ? cases[i].auth : "(null)",
                     cases[i].token ? cases[i].token : "(null)", cases[i].ok ? "ok" : "refused");
    }
}

/* ---- a real evhttp round trip ---- */

struct server {
    struct event_base *base;
    struct evhttp *http;
    uint16_t port;
    const char *token; /* (ref) what the admin routes check against */
    int bearer_seen;   /* -1 before a check, else the last result */
};

struct response {
    bool done;
    int code;
    char body[512];
    char content_type[64];
    char retry_after[16];
    char www_auth[32];
};

static void copy_header(struct evkeyvalq *h, const char *name, char *out, size_t len)
{
    const char *v = evhttp_find_header(h, name);
    snprintf(out, len, "%s", v ? v : "");
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    char path[128];
    if (!http_path(req, path, sizeof(path))) {
        http_reply_error(req, 400, "path_too_long", NULL, 0);
        return;
    }
    if (strcmp(path, "/admin") == 0) {
        srv->bearer_seen = http_bearer_ok(req, srv->token);
        if (srv->bearer_seen)
            http_reply_empty(req, 204);
        else
            http_reply_error(req, 401, "unauthorized", NULL, 0);
    } else if (strcmp(path, "/overloaded") == 0) {
        http_reply_error(req, 503, "overloaded", NULL, 0);
    } else if (strcmp(path, "/unavailable") == 0) {
        http_reply_error(req, 503, "backend_unavailable", NULL, 5);
    } else if (strcmp(path, "/field") == 0) {
        http_reply_error(req, 400, "invalid_field", "age", 0);
    } else if (strcmp(path, "/healthz") == 0) {
        http_reply_health(req, true);
    } else if (strcmp(path, "/draining") == 0) {
        http_reply_health(req, false);
    } else if (strcmp(path, "/metrics") == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "lt_up 1\n");
        http_reply_buffer(req, 200, HTTP_PROMETHEUS_TYPE, b);
        evbuffer_free(b);
    } else {
        http_reply_error(req, 404, "not_found", NULL, 0);
    }
}

static int setup_server(void **state)
{
    struct server *srv = calloc(1, sizeof(*srv));
    assert_non_null(srv);
    srv->base = event_base_new();
    assert_non_null(srv->base);
    srv->http = evhttp_new(srv->base);
    assert_non_null(srv->http);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(srv->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &slen),
                     0);
    srv->port = ntohs(sin.sin_port);
    evhttp_set_gencb(srv->http, on_request, srv);
    srv->token = "s3cret-Tok";
    *state = srv;
    return 0;
}

static int teardown_server(void **state)
{
    struct server *srv = *state;
    evhttp_free(srv->http);
    event_base_free(srv->base);
    free(srv);
    return 0;
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct response *r = arg;
    r->done = true;
    if (req == NULL) {
        r->code = -1;
        return;
    }
    r->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(r->body))
        n = sizeof(r->body) - 1;
    evbuffer_remove(in, r->body, n);
    r->body[n] = '\0';
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    copy_header(h, "Content-Type", r->content_type, sizeof(r->content_type));
    copy_header(h, "Retry-After", r->retry_after, sizeof(r->retry_after));
    copy_header(h, "WWW-Authenticate", r->www_auth, sizeof(r->www_auth));
}

/* One request on a fresh connection; auth NULL sends no Authorization. */
static void request(struct server *srv, const char *path, const char *auth, struct response *r)
{
    memset(r, 0, sizeof(*r));
    struct evhttp_connection *conn =
        evhttp_connection_base_new(srv->base, NULL, "127.0.0.1", srv->port);
    assert_non_null(conn);
    evhttp_connection_set_timeout(conn, 5);
    struct evhttp_request *req = evhttp_request_new(on_response, r);
    assert_non_null(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", "127.0.0.1");
    if (auth)
        evhttp_add_header(h, "Authorization", auth);
    assert_int_equal(evhttp_make_request(conn, req, EVHTTP_REQ_POST, path), 0);
    uint64_t deadline = util_mono_ms() + 10000;
    while (!r->done && util_mono_ms() < deadline)
        event_base_loop(srv->base, EVLOOP_ONCE);
    evhttp_connection_free(conn);
    assert_true(r->done);
}

static void test_bearer_table(void **state)
{
    struct server *srv = *state;
    static const struct {
        const char *auth;
        bool ok;
    } cases[] = {
        {"Bearer s3cret-Tok", true},
        {"bearer s3cret-Tok", true},
        {"BEARER s3cret-Tok", true},
        {"Bearer    s3cret-Tok", true},
        {NULL, false},
        {"", false},
        {"Bearer", false},
        {"Bearer ", false},
        {"Bearer s3cret-tok", false},
        {"Bearer s3cret-To", false},
        {"Bearer s3cret-TokX", false},
        {"Bearer s3cret-Tok extra", false},
        {"Bearer xxxxxxxxxx", false},
        {"Bearers3cret-Tok", false},
        {"Basic s3cret-Tok", false},
        {"s3cret-Tok", false},
        {"Token s3cret-Tok", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct response r;
        srv->bearer_seen = -1;
        request(srv, "/admin", cases[i].auth, &r);
        if (srv->bearer_seen != (int)cases[i].ok)
            fail_msg("case %zu '%s': bearer check %d, want %d", i,
                     cases[i].auth ? cases[i].auth : "(none)", srv->bearer_seen, cases[i].ok);
        if (cases[i].ok) {
            assert_int_equal(r.code, 204);
        } else {
            assert_int_equal(r.code, 401);
            assert_string_equal(r.body, "{\"error\":\"unauthorized\"}");
            assert_string_equal(r.www_auth, "Bearer");
        }
    }
}

/* With no token configured the admin API is closed to everyone. */
static void test_bearer_without_token(void **state)
{
    struct server *srv = *state;
    srv->token = NULL;
    static const char *const auths[] = {"Bearer s3cret-Tok", "Bearer ", "Bearer (null)"};
    for (size_t i = 0; i < sizeof(auths) / sizeof(auths[0]); i++) {
        struct response r;
        srv->bearer_seen = -1;
        request(srv, "/admin", auths[i], &r);
        assert_int_equal(srv->bearer_seen, 0);
        assert_int_equal(r.code, 401);
    }
}

static void test_reply_shapes(void **state)
{
    struct server *srv = *state;
    struct response r;

    request(srv, "/field", NULL, &r);
    assert_int_equal(r.code, 400);
    assert_string_equal(r.content_type, "application/json");
    assert_string_equal(r.body, "{\"error\":\"invalid_field\",\"field\":\"age\"}");
    assert_string_equal(r.retry_after, "");

    /* Every 503 carries Retry-After, 1 s unless told. */
    request(srv, "/overloaded", NULL, &r);
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "{\"error\":\"overloaded\"}");
    assert_string_equal(r.retry_after, "1");
    request(srv, "/unavailable", NULL, &r);
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "{\"error\":\"backend_unavailable\"}");
    assert_string_equal(r.retry_after, "5");

    request(srv, "/healthz?probe=1", NULL, &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    request(srv, "/draining", NULL, &r);
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "{\"status\":\"draining\"}");

    request(srv, "/metrics", NULL, &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.content_type, HTTP_PROMETHEUS_TYPE);
    assert_string_equal(r.body, "lt_up 1\n");

    request(srv, "/nowhere", NULL, &r);
    assert_int_equal(r.code, 404);
    assert_string_equal(r.body, "{\"error\":\"not_found\"}");
}

/* http_listen refuses what it cannot bind or parse, with the flag named. */
static void test_listen_errors(void **state)
{
    struct server *srv = *state;
    char err[256] = "";
    assert_null(http_listen(srv->base, "127.0.0.1", 5, err, sizeof(err)));
    assert_string_equal(err, "--listen 127.0.0.1: expected HOST:PORT");

    char busy[64];
    snprintf(busy, sizeof(busy), "127.0.0.1:%u", srv->port);
    err[0] = '\0';
    assert_null(http_listen(srv->base, busy, 5, err, sizeof(err)));
    char want[128];
    snprintf(want, sizeof(want), "--listen %s: cannot listen: ", busy);
    assert_memory_equal(err, want, strlen(want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_token_accepted, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_token_refused, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_token_with_nul_refused, setup_dir, teardown_dir),
        cmocka_unit_test(test_bearer_match_table),
        cmocka_unit_test_setup_teardown(test_bearer_table, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_bearer_without_token, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_reply_shapes, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_listen_errors, setup_server, teardown_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
