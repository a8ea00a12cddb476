/* Backend URLs: tables of must-parse and must-not-parse inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"

struct good_url {
    const char *url;
    enum store_kind kind;
    size_t n_nodes;
    const char *host0;
    uint16_t port0;
    const char *host_last;
    uint16_t port_last;
    uint32_t timeout_ms;
};

#define MC STORE_KIND_MEMCACHED
static const struct good_url good[] = {
    {"memory:", STORE_KIND_MEMORY, 0, NULL, 0, NULL, 0, 1000},
    {"memcached://127.0.0.1:11211", MC, 1, "127.0.0.1", 11211, "127.0.0.1", 11211, 1000},
    {"memcached://localhost:1", MC, 1, "localhost", 1, "localhost", 1, 1000},
    {"memcached://a:1,b:2,c:65535", MC, 3, "a", 1, "c", 65535, 1000},
    {"memcached://[::1]:11211", MC, 1, "::1", 11211, "::1", 11211, 1000},
    {"memcached://[fe80::1:2]:1,10.0.0.1:2", MC, 2, "fe80::1:2", 1, "10.0.0.1", 2, 1000},
    {"memcached://[::ffff:10.0.0.1]:5", MC, 1, "::ffff:10.0.0.1", 5, "::ffff:10.0.0.1", 5,
     1000},
    {"memcached://cache-1.example.com:11211?timeout_ms=250", MC, 1, "cache-1.example.com", 11211,
     "cache-1.example.com", 11211, 250},
    {"memcached://h:1?timeout_ms=10", MC, 1, "h", 1, "h", 1, 10},
    {"memcached://h:1?timeout_ms=60000", MC, 1, "h", 1, "h", 1, 60000},
    /* same host, other port; same port, other host: distinct nodes */
    {"memcached://h:1,h:2,g:1", MC, 3, "h", 1, "g", 1, 1000},
};
#undef MC

static void test_good_urls(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct store_url *u = malloc(sizeof(*u));
        char err[256] = "";
        assert_non_null(u);
        if (!store_url_parse(good[i].url, u, err, sizeof(err)))
            fail_msg("%s: %s", good[i].url, err);
        assert_int_equal(u->kind, good[i].kind);
        assert_int_equal(u->n_nodes, good[i].n_nodes);
        assert_int_equal(u->timeout_ms, good[i].timeout_ms);
        if (good[i].n_nodes > 0) {
            assert_string_equal(u->nodes[0].host, good[i].host0);
            assert_int_equal(u->nodes[0].port, good[i].port0);
            assert_string_equal(u->nodes[u->n_nodes - 1].host, good[i].host_last);
            assert_int_equal(u->nodes[u->n_nodes - 1].port, good[i].port_last);
        }
        assert_true(store_url_check(good[i].url, err, sizeof(err)));
        free(u);
    }
}

struct bad_url {
    const char *url;
    const char *message_part; /* the one-line error names the problem */
};

static const struct bad_url bad[] = {
    {"", "empty"},
    {"memory", "unknown scheme"},
    {"memory:x", "takes no host"},
    {"memory://", "takes no host"},
    {"redis://", "no HOST:PORT"},
    {"redis://h", "missing ':PORT'"},
    {"redis-cluster://", "no HOST:PORT"},
    {"redis-cluster://h:1,h:1", "listed twice"},
    {"rediss://h:1", "unknown scheme 'rediss'"},
    /* replicas */
    {"memcached://h:1,g:2?replicas=0", "replicas must be an integer in 1..64"},
    {"memcached://h:1,g:2?replicas=3", "replicas=3 needs at least 3 nodes, 2 given"},
    {"redis://h:1?replicas=2", "replicas=2 needs at least 2 nodes, 1 given"},
    {"redis://h:1,g:1?replicas=65", "1..64"},
    {"redis://h:1,g:1?replicas=-1", "1..64"},
    {"memcached://h:1,g:2?replicas=2&replicas=2", "given twice"},
    {"memory:?replicas=2", "memory: takes no host or options"},
    {"redis-cluster://h:1,g:2?replicas=2", "replicas is not supported on redis-cluster://"},
    {"redis-cluster://h:1?hint_keys=10", "hint_keys is not supported on redis-cluster://"},
    {"memcached://h:1?hint_keys=1000001", "hint_keys must be an integer in 0..1000000"},
    {"memcached://h:1?hint_keys=", "0..1000000"},
    {"memcached://h:1?replica_lag_ms=60001", "replica_lag_ms must be an integer in 0..60000"},
    {"redis://h:1?replica_lag_ms=-1", "0..60000"},
    {"redis://h:1?replica_lag_ms=", "0..60000"},
    {"memcached://h:1,g:1?replica_lag_ms=5&replica_lag_ms=5", "given twice"},
    {"redis-cluster://h:1?replica_lag_ms=10",
     "replica_lag_ms is not supported on redis-cluster://"},
    {"ftp://x:1", "unknown scheme 'ftp'"},
    {"memcached:/h:1", "unknown scheme"},
    {"memcached://", "no HOST:PORT"},
    {"memcached://?timeout_ms=5", "no HOST:PORT"},
    {"memcached://:11211", "node 1: empty host"},
    {"memcached://h", "node 1: missing ':PORT'"},
    {"memcached://h:", "node 1: empty port"},
    {"memcached://h:0", "not in 1..65535"},
    {"memcached://h:65536", "not in 1..65535"},
    {"memcached://h:-1", "not in 1..65535"},
    {"memcached://h:+1", "not in 1..65535"},
    {"memcached://h:1x", "not in 1..65535"},
    {"memcached://h:99999999999", "1..65535"},
    {"memcached://h:1,", "node 2 is empty"},
    {"memcached://,h:1", "node 1 is empty"},
    {"memcached://h:1,,g:2", "node 2 is empty"},
    {"memcached://h:1,h:1", "node 2 (h:1) is listed twice"},
    {"memcached://H:1,h:1", "listed twice"},
    {"memcached://[::1]:1,[::1]:1", "listed twice"},
    {"memcached://::1:11211", "IPv6 address must be written in brackets"},
    {"memcached://[::1:11211", "missing ']'"},
    {"memcached://[]:1", "empty host"},
    {"memcached://[nothex]:1", "bad IPv6 address"},
    {"memcached://[::1]11211", "missing ':PORT'"},
    {"memcached://h st:1", "bad character"},
    {"memcached://user@h:1", "bad character"},
    {"memcached://h/path:1", "bad character"},
    {"memcached://h:1?", "empty query"},
    {"memcached://h:1?timeout_ms", "needs '=VALUE'"},
    {"memcached://h:1?timeout_ms=", "timeout_ms must be an integer in 10..60000"},
    {"memcached://h:1?timeout_ms=9", "10..60000"},
    {"memcached://h:1?timeout_ms=60001", "10..60000"},
    {"memcached://h:1?timeout_ms=1e3", "10..60000"},
    {"memcached://h:1?timeout_ms=100&timeout_ms=200", "given twice"},
    {"memcached://h:1?timeout_ms=100&", "empty option"},
    {"memcached://h:1?&timeout_ms=100", "empty option"},
    {"memcached://h:1?replica=2", "unknown option 'replica'"},
    {"memcached://h:1?Timeout_ms=100", "unknown option"},
};

static void test_bad_urls(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct store_url *u = malloc(sizeof(*u));
        assert_non_null(u);
        memset(u, 0x5a, sizeof(*u));
        char err[256] = "";
        if (store_url_parse(bad[i].url, u, err, sizeof(err)))
            fail_msg("accepted: %s", bad[i].url);
        if (strstr(err, bad[i].message_part) == NULL)
            fail_msg("%s: message '%s' lacks '%s'", bad[i].url, err, bad[i].message_part);
        assert_null(strchr(err, '\n')); /* one line */
        assert_int_equal(u->n_nodes, 0x5a5a5a5a5a5a5a5aull); /* untouched on failure */
        assert_false(store_url_check(bad[i].url, err, sizeof(err)));
        assert_null(store_open(bad[i].url, err, sizeof(err)));
        free(u);
    }
}

static void test_node_count_limit(void **state)
{
    (void)state;
    char url[4096];
    char err[256];
    struct store_url *u = malloc(sizeof(*u));
    assert_non_null(u);
    size_t off = (size_t)snprintf(url, sizeof(url), "memcached://");
    for (int i = 0; i < STORE_MAX_NODES; i++)
        off += (size_t)snprintf(url + off, sizeof(url) - off, "%sn%d:%d", i ? "," : "", i,
                                1000 + i);
    assert_true(store_url_parse(url, u, err, sizeof(err)));
    assert_int_equal(u->n_nodes, STORE_MAX_NODES);
    assert_string_equal(u->nodes[63].host, "n63");
    snprintf(url + off, sizeof(url) - off, ",extra:1");
    assert_false(store_url_parse(url, u, err, sizeof(err)));
    assert_non_null(strstr(err, "more than 64 nodes"));
    free(u);
}

static void test_host_length_limit(void **state)
{
    (void)state;
    char url[600];
    char err[256];
    struct store_url *u = malloc(sizeof(*u));
    assert_non_null(u);
    char host[STORE_HOST_MAX + 2];
    memset(host, 'h', sizeof(host));
    host[STORE_HOST_MAX] = '\0';
    snprintf(url, sizeof(url), "memcached://%s:1", host);
    assert_true(store_url_parse(url, u, err, sizeof(err)));
    assert_int_equal(strlen(u->nodes[0].host), STORE_HOST_MAX);
    host[STORE_HOST_MAX] = 'h';
    host[STORE_HOST_MAX + 1] = '\0';
    snprintf(url, sizeof(url), "memcached://%s:1", host);
    assert_false(store_url_parse(url, u, err, sizeof(err)));
    assert_non_null(strstr(err, "longer than"));
    free(u);
}

static void test_open_memory_and_lazy_pool(void **state)
{
    (void)state;
    char err[256];
    struct store *s = store_open("memory:", err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(store_kind(s), "memory");
    assert_true(store_in_process(s));
    store_close(s);
    /* a pool opens without any node up (connects lazily) */
    s = store_open("memcached://127.0.0.1:1?timeout_ms=50", err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(store_kind(s), "memcached");
    assert_false(store_in_process(s));
    struct store_incr it = {.key = "k", .keylen = 1, .delta = 1};
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_UNAVAILABLE);
    assert_int_equal(it.status, STORE_UNAVAILABLE);
    store_close(s);
    store_close(NULL);
    /* a NULL or tiny error buffer is fine */
    assert_null(store_open("nope", NULL, 0));
    assert_null(store_open("nope", err, 1));
    assert_string_equal(err, "");
}

struct option_url {
    const char *url;
    enum store_kind kind;
    size_t n_nodes;
    uint32_t replicas;
    uint32_t hint_keys;
    uint32_t timeout_ms;
    uint32_t replica_lag_ms;
};

#define LAG STORE_REPLICA_LAG_MS_DEFAULT
static const struct option_url option_urls[] = {
    {"memcached://a:1", STORE_KIND_MEMCACHED, 1, 1, STORE_HINT_KEYS_DEFAULT, 1000, LAG},
    {"redis://127.0.0.1:6379", STORE_KIND_REDIS, 1, 1, STORE_HINT_KEYS_DEFAULT, 1000, LAG},
    {"redis://a:1,b:2,[::1]:3?timeout_ms=50", STORE_KIND_REDIS, 3, 1, STORE_HINT_KEYS_DEFAULT,
     50, LAG},
    {"redis-cluster://a:7000,b:7001", STORE_KIND_REDIS_CLUSTER, 2, 1, STORE_HINT_KEYS_DEFAULT,
     1000, LAG},
    {"redis-cluster://a:7000?timeout_ms=200", STORE_KIND_REDIS_CLUSTER, 1, 1,
     STORE_HINT_KEYS_DEFAULT, 200, LAG},
    {"memcached://a:1,b:1,c:1?replicas=2", STORE_KIND_MEMCACHED, 3, 2, STORE_HINT_KEYS_DEFAULT,
     1000, LAG},
    {"memcached://a:1,b:1,c:1?replicas=3&hint_keys=0", STORE_KIND_MEMCACHED, 3, 3, 0, 1000, LAG},
    {"redis://a:1,b:1?hint_keys=1000000&replicas=2&timeout_ms=10", STORE_KIND_REDIS, 2, 2,
     1000000, 10, LAG},
    {"redis://a:1,b:1?replicas=1", STORE_KIND_REDIS, 2, 1, STORE_HINT_KEYS_DEFAULT, 1000, LAG},
    {"memcached://a:1,b:1?replicas=2&replica_lag_ms=0", STORE_KIND_MEMCACHED, 2, 2,
     STORE_HINT_KEYS_DEFAULT, 1000, 0},
    {"redis://a:1,b:1?replica_lag_ms=60000&replicas=2", STORE_KIND_REDIS, 2, 2,
     STORE_HINT_KEYS_DEFAULT, 1000, 60000},
};

static void test_redis_and_replica_options(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(option_urls) / sizeof(option_urls[0]); i++) {
        const struct option_url *w = &option_urls[i];
        struct store_url *u = malloc(sizeof(*u));
        char err[256] = "";
        assert_non_null(u);
        if (!store_url_parse(w->url, u, err, sizeof(err)))
            fail_msg("%s: %s", w->url, err);
        assert_int_equal(u->kind, w->kind);
        assert_int_equal(u->n_nodes, w->n_nodes);
        assert_int_equal(u->replicas, w->replicas);
        assert_int_equal(u->hint_keys, w->hint_keys);
        assert_int_equal(u->timeout_ms, w->timeout_ms);
        assert_int_equal(u->replica_lag_ms, w->replica_lag_ms);
        free(u);
    }
    /* memory: has one replica, the defaults */
    struct store_url *u = malloc(sizeof(*u));
    char err[256];
    assert_non_null(u);
    assert_true(store_url_parse("memory:", u, err, sizeof(err)));
    assert_int_equal(u->replicas, 1);
    free(u);
    /* the most replicas a full pool allows */
    char url[4096];
    size_t off = (size_t)snprintf(url, sizeof(url), "redis://");
    for (int i = 0; i < STORE_MAX_NODES; i++)
        off += (size_t)snprintf(url + off, sizeof(url) - off, "%sn%d:%d", i ? "," : "", i,
                                1000 + i);
    snprintf(url + off, sizeof(url) - off, "?replicas=%d", STORE_MAX_NODES);
    u = malloc(sizeof(*u));
    assert_non_null(u);
    assert_true(store_url_parse(url, u, err, sizeof(err)));
    assert_int_equal(u->replicas, STORE_MAX_NODES);
    free(u);
}

/* The redis backends open without a server (connect lazily) and refuse
 * what they cannot reach; kinds are reported. */
static void test_open_redis_lazily(void **state)
{
    (void)state;
    char err[256];
    struct store *s = store_open("redis://127.0.0.1:1,127.0.0.1:2?timeout_ms=50&replicas=2",
                                 err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(store_kind(s), "redis");
    struct store_incr it = {.key = "k", .keylen = 1, .delta = 1};
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_UNAVAILABLE);
    assert_int_equal(it.status, STORE_UNAVAILABLE);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.hints_queued, 0); /* nothing landed: nothing to hint */
    struct store *c = store_clone(s);
    assert_non_null(c);
    assert_string_equal(store_kind(c), "redis");
    store_close(c);
    store_close(s);
    s = store_open("redis-cluster://127.0.0.1:1?timeout_ms=50", err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(store_kind(s), "redis-cluster");
    assert_int_equal(store_incr_batch(s, &it, 1, 0), STORE_UNAVAILABLE);
    uint64_t v = 9;
    const char *keys[] = {"k"};
    size_t lens[] = {1};
    assert_int_equal(store_mget_u64(s, keys, lens, 1, &v, NULL), STORE_UNAVAILABLE);
    assert_int_equal(v, 0);
    char *val = NULL;
    size_t len;
    assert_int_equal(store_get(s, "k", 1, &val, &len), STORE_UNAVAILABLE);
    assert_int_equal(store_incr_batch(s, NULL, 0, 0), STORE_OK);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_urls),
        cmocka_unit_test(test_redis_and_replica_options),
        cmocka_unit_test(test_open_redis_lazily),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_node_count_limit),
        cmocka_unit_test(test_host_length_limit),
        cmocka_unit_test(test_open_memory_and_lazy_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
