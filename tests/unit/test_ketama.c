/*
 * ketama pinned against libmemcached itself: a memcached_st with the same
 * server list and MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED (no server needs to
 * run: memcached_generate_hash only computes), and the same key scheme.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libmemcached/memcached.h>

#include "ketama.h"

static const struct ketama_node pool5[] = {
    {"127.0.0.1", 11211}, /* the default port: its labels leave the port out */
    {"127.0.0.1", 11212},
    {"10.0.0.7", 21211},
    {"cache-b.example", 11211},
    {"::1", 11300},
};

static memcached_st *libmemcached_pool(const struct ketama_node *nodes, size_t n)
{
    memcached_st *memc = memcached_create(NULL);
    assert_non_null(memc);
    assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1),
                     MEMCACHED_SUCCESS);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(memcached_server_add(memc, nodes[i].host, nodes[i].port),
                         MEMCACHED_SUCCESS);
    assert_int_equal(memcached_server_count(memc), n);
    return memc;
}

/* Keys of livetally's scheme (keys.h), all four counter kinds. */
static size_t scheme_key(char *buf, size_t len, unsigned i)
{
    unsigned q = 1 + i % 12, shard = 1 + (i / 12) % 100;
    const char *o = (i / 1200) % 2 ? "right" : "wrong";
    static const char *const cc[] = {"gb", "us", "unknown", "ie", "fr"};
    int r;
    switch ((i / 2400) % 4) {
    case 0:
        r = snprintf(buf, len, "1d-live:q%u%s%02u", q, o, shard);
        break;
    case 1:
        r = snprintf(buf, len, "1d-live:q%uage%u%s%02u", q, 1 + i % 3, o, shard);
        break;
    case 2:
        r = snprintf(buf, len, "1d-live:q%uc%s%s%02u", q, cc[i % 5], o, 1 + shard % 15);
        break;
    default:
        r = snprintf(buf, len, "1d-live:q%uopt%un%02u", q, i % 4, shard);
        break;
    }
    return (size_t)r;
}

static void check_agreement(const struct ketama_node *nodes, size_t n, unsigned nkeys)
{
    memcached_st *memc = libmemcached_pool(nodes, n);
    struct ketama *k = ketama_create(nodes, n);
    assert_non_null(k);
    assert_int_equal(ketama_node_count(k), n);
    unsigned *hits = calloc(n, sizeof(*hits));
    assert_non_null(hits);
    for (unsigned i = 0; i < nkeys; i++) {
        char key[64];
        size_t len = scheme_key(key, sizeof(key), i);
        uint32_t ours = ketama_lookup(k, key, len);
        uint32_t theirs = memcached_generate_hash(memc, key, len);
        if (ours != theirs)
            fail_msg("pool of %zu: key %s -> %u here, %u in libmemcached", n, key, ours, theirs);
        hits[ours]++;
    }
    /* and the spread is sane: every node gets a share (where the sample is
     * large enough to say so) */
    for (size_t i = 0; i < n && nkeys / n >= 200; i++)
        assert_true(hits[i] > nkeys / (4 * n));
    free(hits);
    ketama_free(k);
    memcached_free(memc);
}

static void test_agrees_with_libmemcached_1_2_3_5(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 3, 5};
    for (size_t i = 0; i < 4; i++)
        check_agreement(pool5, sizes[i], 10000);
}

/* Up to the URL's 64 nodes: pins libmemcached's float arithmetic for the
 * points per node as well. */
static void test_agrees_with_libmemcached_up_to_64(void **state)
{
    (void)state;
    struct ketama_node nodes[64];
    char hosts[64][32];
    for (size_t i = 0; i < 64; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "10.1.%zu.%zu", i / 8, 10 + i);
        nodes[i] = (struct ketama_node){hosts[i], (uint16_t)(11211 + (i % 3))};
    }
    for (size_t n = 1; n <= 64; n++)
        check_agreement(nodes, n, n <= 8 ? 2000 : 600);
}

/* Known placements (from libmemcached 1.1.4), independent of the library installed. */
static void test_known_placements(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        const char *key;
        uint32_t node;
    } known[] = {
        {2, "1d-live:q1right42", 1},
        {2, "1d-live:q1age2wrong66", 0},
        {2, "1d-live:q3cgbright07", 0},
        {2, "1d-live:q2opt3n99", 0},
        {2, "1d-live:q12cunknownwrong15", 1},
        {2, "1d-live:snap", 0},
        {3, "1d-live:q1right42", 1},
        {3, "1d-live:q1age2wrong66", 0},
        {3, "1d-live:q3cgbright07", 0},
        {3, "1d-live:q2opt3n99", 2},
        {3, "1d-live:q12cunknownwrong15", 1},
        {3, "1d-live:snap", 0},
        {5, "1d-live:q1right42", 3},
        {5, "1d-live:q1age2wrong66", 0},
        {5, "1d-live:q3cgbright07", 0},
        {5, "1d-live:q2opt3n99", 3},
        {5, "1d-live:q12cunknownwrong15", 1},
        {5, "1d-live:snap", 0},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        struct ketama *k = ketama_create(pool5, known[i].n);
        assert_non_null(k);
        uint32_t got = ketama_lookup(k, known[i].key, strlen(known[i].key));
        if (got != known[i].node)
            fail_msg("pool of %zu: %s -> %u, expected %u", known[i].n, known[i].key, got,
                     known[i].node);
        ketama_free(k);
    }
}

static void test_lookup_n_distinct_and_stable(void **state)
{
    (void)state;
    struct ketama *k = ketama_create(pool5, 5);
    assert_non_null(k);
    for (unsigned i = 0; i < 2000; i++) {
        char key[64];
        size_t len = scheme_key(key, sizeof(key), i);
        uint32_t out[8];
        size_t got = ketama_lookup_n(k, key, len, out, 3);
        assert_int_equal(got, 3);
        assert_int_equal(out[0], ketama_lookup(k, key, len));
        assert_true(out[0] != out[1] && out[0] != out[2] && out[1] != out[2]);
        for (size_t j = 0; j < 3; j++)
            assert_true(out[j] < 5);
        /* a prefix of the longer list */
        uint32_t all[8];
        assert_int_equal(ketama_lookup_n(k, key, len, all, 8), 5); /* r > nodes: clipped */
        assert_memory_equal(all, out, 3 * sizeof(uint32_t));
        assert_int_equal(ketama_lookup_n(k, key, len, all, 0), 0);
    }
    ketama_free(k);

    k = ketama_create(pool5, 1);
    uint32_t one[2] = {7, 7};
    assert_int_equal(ketama_lookup_n(k, "x", 1, one, 2), 1);
    assert_int_equal(one[0], 0);
    ketama_free(k);
}

/* Removing a node moves only that node's keys (the point of ketama). */
static void test_removing_a_node_moves_only_its_keys(void **state)
{
    (void)state;
    struct ketama *k5 = ketama_create(pool5, 5);
    struct ketama *k4 = ketama_create(pool5, 4); /* the last node removed */
    assert_non_null(k5);
    assert_non_null(k4);
    for (unsigned i = 0; i < 5000; i++) {
        char key[64];
        size_t len = scheme_key(key, sizeof(key), i);
        uint32_t a = ketama_lookup(k5, key, len);
        if (a != 4)
            assert_int_equal(ketama_lookup(k4, key, len), a);
    }
    ketama_free(k5);
    ketama_free(k4);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(ketama_create(NULL, 1));
    assert_null(ketama_create(pool5, 0));
    char longhost[KETAMA_HOST_MAX + 2];
    memset(longhost, 'h', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = '\0';
    struct ketama_node bad[] = {{longhost, 1}};
    assert_null(ketama_create(bad, 1));
    struct ketama_node nullhost[] = {{NULL, 1}};
    assert_null(ketama_create(nullhost, 1));
    ketama_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_libmemcached_1_2_3_5),
        cmocka_unit_test(test_agrees_with_libmemcached_up_to_64),
        cmocka_unit_test(test_known_placements),
        cmocka_unit_test(test_lookup_n_distinct_and_stable),
        cmocka_unit_test(test_removing_a_node_moves_only_its_keys),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
