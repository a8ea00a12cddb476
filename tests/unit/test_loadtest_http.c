/* The load tester's HTTP client side: URLs, the loopback rule, the response
 * parser (whole, split at every byte, chunked, malformed) and error codes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loadhttp.h"
#include "util.h"

static void test_urls(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host, *base, *hostport;
        uint16_t port;
    } good[] = {
        {"http://127.0.0.1:8080", "127.0.0.1", "", "127.0.0.1:8080", 8080},
        {"http://127.0.0.1:8080/", "127.0.0.1", "", "127.0.0.1:8080", 8080},
        {"http://localhost", "localhost", "", "localhost:80", 80},
        {"HTTP://localhost:1/quiz/", "localhost", "/quiz", "localhost:1", 1},
        {"http://[::1]:9000/a/b", "::1", "/a/b", "[::1]:9000", 9000},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(good); i++) {
        struct loadurl u;
        char err[128];
        assert_true(loadhttp_parse_url(good[i].in, &u, err, sizeof(err)));
        assert_string_equal(u.host, good[i].host);
        assert_string_equal(u.base, good[i].base);
        assert_string_equal(u.hostport, good[i].hostport);
        assert_int_equal(u.port, good[i].port);
    }
    static const char *const bad[] = {
        "", "127.0.0.1:8080", "https://127.0.0.1", "ftp://x", "http://", "http://:80",
        "http://h:0", "http://h:65536", "http://h:8o", "http://u@h", "http://h/?q=1",
        "http://h/#f", "http://[::1", "http://[1.2.3.4]:80", "http://h x", "http://h:80:90",
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        struct loadurl u;
        char err[128] = "";
        assert_false(loadhttp_parse_url(bad[i], &u, err, sizeof(err)));
        assert_true(err[0] != '\0'); /* every refusal says why */
    }

    struct loadurl u;
    char err[160];
    char buf[64];
    assert_true(loadhttp_parse_url("http://127.0.0.1:80/quiz", &u, err, sizeof(err)));
    assert_true(loadhttp_path(&u, "/v1/stats", buf, sizeof(buf)));
    assert_string_equal(buf, "/quiz/v1/stats");
    assert_false(loadhttp_path(&u, "/v1/stats", buf, 8));
}

static void test_loopback_rule(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.3.4.5", &in.sin_addr);
    assert_true(loadhttp_is_loopback((struct sockaddr *)&in));
    inet_pton(AF_INET, "10.0.0.1", &in.sin_addr);
    assert_false(loadhttp_is_loopback((struct sockaddr *)&in));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    assert_true(loadhttp_is_loopback((struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    assert_true(loadhttp_is_loopback((struct sockaddr *)&in6));
    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    assert_false(loadhttp_is_loopback((struct sockaddr *)&in6));

    struct loadurl u;
    char err[200];
    assert_true(loadhttp_parse_url("http://127.0.0.1:9", &u, err, sizeof(err)));
    assert_true(loadhttp_resolve(&u, false, err, sizeof(err)));
    assert_true(loadhttp_parse_url("http://localhost:9", &u, err, sizeof(err)));
    assert_true(loadhttp_resolve(&u, false, err, sizeof(err)));
    assert_int_equal(u.addr.ss_family, AF_INET); /* IPv4 preferred */
    assert_true(loadhttp_parse_url("http://192.0.2.7:9", &u, err, sizeof(err)));
    assert_false(loadhttp_resolve(&u, false, err, sizeof(err)));
    assert_non_null(strstr(err, "--allow-remote"));
    assert_true(loadhttp_resolve(&u, true, err, sizeof(err)));
}

static const char reply_202[] = "HTTP/1.1 202 Accepted\r\n"
                                "Content-Type: application/json\r\n"
                                "Content-Length: 21\r\n"
                                "\r\n"
                                "{\"status\":\"accepted\"}";

static void test_parse_whole_and_split(void **state)
{
    (void)state;
    size_t n = strlen(reply_202);
    struct loadhttp_resp r;
    assert_int_equal(loadhttp_parse_response(reply_202, n, false, &r), LOADHTTP_PARSE_OK);
    assert_int_equal(r.status, 202);
    assert_int_equal(r.total_len, n);
    assert_int_equal(r.body_len, 21);
    assert_memory_equal(r.body, "{\"status\":\"accepted\"}", 21);
    assert_false(r.close);
    /* every prefix is incomplete, never malformed */
    for (size_t k = 0; k < n; k++)
        assert_int_equal(loadhttp_parse_response(reply_202, k, false, &r), LOADHTTP_PARSE_PARTIAL);

    /* two pipelined replies: the first is parsed alone */
    char two[512];
    snprintf(two, sizeof(two), "%s%s", reply_202, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_int_equal(loadhttp_parse_response(two, strlen(two), false, &r), LOADHTTP_PARSE_OK);
    assert_int_equal(r.total_len, n);
    assert_int_equal(loadhttp_parse_response(two + n, strlen(two) - n, false, &r),
                     LOADHTTP_PARSE_OK);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
}

static void test_parse_variants(void **state)
{
    (void)state;
    struct loadhttp_resp r;
    const char *s = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_int_equal(loadhttp_parse_response(s, strlen(s), false, &r), LOADHTTP_PARSE_OK);
    assert_true(r.close); /* HTTP/1.0 closes by default */
    s = "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok";
    assert_int_equal(loadhttp_parse_response(s, strlen(s), false, &r), LOADHTTP_PARSE_OK);
    assert_false(r.close);
    s = "HTTP/1.1 503 Service Unavailable\r\nconnection: keep-alive, Close\r\n"
        "content-length: 24\r\nRetry-After: 1\r\n\r\n{\"error\":\"overloaded\"}\r\n";
    assert_int_equal(loadhttp_parse_response(s, strlen(s), false, &r), LOADHTTP_PARSE_OK);
    assert_int_equal(r.status, 503);
    assert_true(r.close);

    /* no framing: the body runs to the close */
    s = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
    assert_int_equal(loadhttp_parse_response(s, strlen(s), false, &r), LOADHTTP_PARSE_PARTIAL);
    assert_int_equal(loadhttp_parse_response(s, strlen(s), true, &r), LOADHTTP_PARSE_OK);
    assert_int_equal(r.body_len, 7);

    /* chunked, with an extension and a trailer */
    char c[256];
    snprintf(c, sizeof(c), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "4;x=y\r\n{\"a\"\r\n3\r\n:12\r\n1\r\n}\r\n0\r\nX-T: 1\r\n\r\nNEXT");
    size_t n = strlen(c);
    assert_int_equal(loadhttp_parse_response(c, n, false, &r), LOADHTTP_PARSE_OK);
    assert_true(r.chunked);
    assert_int_equal(r.total_len, n - 4);
    for (size_t k = 0; k < n - 4; k++)
        assert_int_equal(loadhttp_parse_response(c, k, false, &r), LOADHTTP_PARSE_PARTIAL);
    assert_int_equal(loadhttp_parse_response(c, n, false, &r), LOADHTTP_PARSE_OK);
    char body[64];
    memcpy(body, r.body, r.body_len);
    long d = loadhttp_dechunk(body, r.body_len);
    assert_int_equal(d, 8);
    assert_memory_equal(body, "{\"a\":12}", 8);
}

/* Retry-After in seconds, as --retry honours it; a date or garbage is 0. */
static void test_retry_after(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        uint32_t want;
    } cases[] = {{"1", 1}, {"0", 0}, {" 30 ", 30}, {"86400", 86400}, {"999999999", 86400},
                 {"Wed, 21 Oct 2026 07:28:00 GMT", 0}, {"-1", 0}, {"2x", 0}, {"", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[256];
        snprintf(buf, sizeof(buf), "HTTP/1.1 503 Service Unavailable\r\nRetry-After: %s\r\n"
                                   "Content-Length: 2\r\n\r\n{}", cases[i].value);
        struct loadhttp_resp r;
        assert_int_equal(loadhttp_parse_response(buf, strlen(buf), false, &r), LOADHTTP_PARSE_OK);
        if (r.retry_after_s != cases[i].want) {
            print_error("Retry-After: \"%s\": got %u, want %u\n", cases[i].value,
                        r.retry_after_s, cases[i].want);
            fail();
        }
    }
    const char *none = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    struct loadhttp_resp r;
    assert_int_equal(loadhttp_parse_response(none, strlen(none), false, &r), LOADHTTP_PARSE_OK);
    assert_int_equal(r.retry_after_s, 0);
}

static void test_parse_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 99 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "garbage",
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        struct loadhttp_resp r;
        enum loadhttp_parse p = loadhttp_parse_response(bad[i], strlen(bad[i]), false, &r);
        if (p != LOADHTTP_PARSE_BAD) {
            print_error("case %zu parsed as %d: %s\n", i, p, bad[i]);
            fail();
        }
    }
    /* a head that never ends within the bound */
    size_t big = LOADHTTP_MAX_HEAD + 10;
    char *h = malloc(big);
    assert_non_null(h);
    memcpy(h, "HTTP/1.1 200 OK\r\n", 17);
    memset(h + 17, 'a', big - 17);
    struct loadhttp_resp r;
    assert_int_equal(loadhttp_parse_response(h, big, false, &r), LOADHTTP_PARSE_BAD);
    free(h);
    /* a body cut by the close */
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    assert_int_equal(loadhttp_parse_response(s, strlen(s), true, &r), LOADHTTP_PARSE_BAD);
}

static void test_error_codes(void **state)
{
    (void)state;
    static const struct {
        const char *body, *code;
    } cases[] = {
        {"{\"error\":\"overloaded\"}", "overloaded"},
        {"{\"error\": \"invalid_field\", \"field\": \"age\"}", "invalid_field"},
        {"{\"field\":\"x\",\n \"error\" :\n\"question_closed\"}", "question_closed"},
        {"{\"status\":\"accepted\"}", ""},
        {"{\"error\":5}", ""},
        {"not json", ""},
        {"{\"error\":\"a\\\"b\"}", "a"},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        char code[LOADHTTP_ERROR_MAX];
        loadhttp_error_code(cases[i].body, strlen(cases[i].body), code, sizeof(code));
        assert_string_equal(code, cases[i].code);
    }
    char small[5];
    loadhttp_error_code("{\"error\":\"overloaded\"}", 22, small, sizeof(small));
    assert_string_equal(small, "over");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_loopback_rule),
        cmocka_unit_test(test_parse_whole_and_split),
        cmocka_unit_test(test_parse_variants),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_error_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
