/* Two aggregators' repair steps in lockstep on real servers (the pass
 * interleaving that a timed end-to-end test only meets by chance):
 *   replicas=1 (2 memcached): both see a node come back empty in the same
 *     pass; exactly one wins the claim and restores it, and the store then
 *     holds every count once (old plus new), not twice;
 *   replicas=2 (3 memcached): both see a node come back empty; one restores
 *     its copies to what they held; both then see the same stable copy
 *     behind (writes it missed since); it is raised once, not twice;
 *   replicas=2: a node that held the only full copy of some counts (its
 *     partners missed increments on a cut link) comes back empty: it gets
 *     back what the aggregators read on it, not its partners' lower values;
 *   replicas=2: a node that restarts empty between a pass's read of its id
 *     and its reads of the counters, with its missed increments replayed
 *     first, is restored to what it held before, not to those reads;
 *   replicas=2: a write that lands on one replica between the pass's read
 *     of the other and its own (an ingest's increment in flight) is not a
 *     copy behind: the pass that first sees the change raises nothing, and
 *     once the write lands on both, both copies hold it once.
 * The steps are agg_repair.h's, driven as aggregator_pass drives them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "agg_keys.h"
#include "agg_repair.h"
#include "eventfile.h"
#include "servers.h"
#include "store.h"
#include "store_pool.h"
#include "util.h"

static const char EVENT_JSON[] =
    "{\"event\":\"rep\",\"shards\":4,\"country_shards\":1,\"hot_countries\":{},"
    "\"questions\":[{\"id\":1,\"text\":\"a\",\"options\":[\"x\",\"y\"],\"correct\":0,"
    "\"open\":true}]}";

struct agg {
    struct store *s;
    struct agg_repair *r;
    uint64_t *kept;
    uint64_t *read;
    bool lagging[1];
};

static void agg_open(struct agg *a, const char *url, const struct eventfile *ef,
                     const struct agg_keys *k)
{
    char err[256];
    a->s = store_open(url, err, sizeof(err));
    assert_non_null(a->s);
    a->r = agg_repair_create(ef, k, a->s);
    assert_non_null(a->r);
    a->kept = calloc(k->n, sizeof(*a->kept));
    a->read = calloc(k->n, sizeof(*a->read));
    assert_non_null(a->kept);
    assert_non_null(a->read);
}

static void agg_close(struct agg *a)
{
    agg_repair_free(a->r);
    store_close(a->s);
    free(a->kept);
    free(a->read);
}

static const bool READING[1] = {true};

static void step_check(struct agg *a)
{
    agg_repair_check_nodes(a->r, a->s, util_mono_ms());
}

static void step_read(struct agg *a, const struct agg_keys *k)
{
    assert_int_equal(agg_repair_read(a->r, a->s, 0, k->n, a->read), STORE_OK);
}

/* settle, then the grow-only rule as aggregate.c applies it */
static void step_settle(struct agg *a, const struct agg_keys *k)
{
    a->lagging[0] = false;
    agg_repair_settle(a->r, a->s, READING, a->kept, a->read, a->lagging, 0, util_mono_ms());
    for (size_t i = 0; i < k->n; i++)
        if (a->read[i] > a->kept[i])
            a->kept[i] = a->read[i];
}

static void pass(struct agg *a, const struct agg_keys *k)
{
    step_check(a);
    step_read(a, k);
    step_settle(a, k);
}

/* Adds delta to every key, through the pool (replicated as the ingest does). */
static void incr_all(struct store *s, const struct agg_keys *k, uint64_t delta)
{
    struct store_incr *it = calloc(k->n, sizeof(*it));
    assert_non_null(it);
    for (size_t i = 0; i < k->n; i++)
        it[i] = (struct store_incr){.key = k->key[i], .keylen = k->len[i], .delta = delta};
    assert_int_equal(store_incr_batch(s, it, k->n, 600), STORE_OK);
    free(it);
}

static void expect_all(struct store *s, const struct agg_keys *k, uint64_t want)
{
    uint64_t *v = calloc(k->n, sizeof(*v));
    assert_non_null(v);
    assert_int_equal(store_mget_u64(s, k->key, k->len, k->n, v, NULL), STORE_OK);
    for (size_t i = 0; i < k->n; i++) {
        if (v[i] != want)
            fail_msg("key %s reads %llu, want %llu", k->key[i], (unsigned long long)v[i],
                     (unsigned long long)want);
    }
    free(v);
}

static void load(struct eventfile *ef, struct agg_keys *k)
{
    char err[256];
    assert_true(eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), ef, err, sizeof(err)));
    assert_true(agg_keys_build(ef, k));
}

/* Two aggregators on n fresh memcached servers, counters at 5 seen by both. */
struct rig {
    struct eventfile ef;
    struct agg_keys k;
    struct server sv[3];
    size_t n;
    char url[300];
    struct agg a, b;
};

static void rig_open(struct rig *g, size_t n, const char *options)
{
    load(&g->ef, &g->k);
    g->n = n;
    const struct server *svs[3];
    for (size_t i = 0; i < n; i++) {
        assert_true(server_start(&g->sv[i], SERVER_MEMCACHED, 0));
        svs[i] = &g->sv[i];
    }
    server_url(svs, n, options, g->url, sizeof(g->url));
    agg_open(&g->a, g->url, &g->ef, &g->k);
    agg_open(&g->b, g->url, &g->ef, &g->k);
    incr_all(g->a.s, &g->k, 5);
    pass(&g->a, &g->k);
    pass(&g->b, &g->k);
}

static void rig_restart_empty(struct rig *g, size_t i)
{
    server_kill(&g->sv[i]);
    assert_true(server_start(&g->sv[i], SERVER_MEMCACHED, g->sv[i].port));
    util_sleep_ms(NODE_BACKOFF_MAX_MS + 100);
}

/* One pass of each, step by step: both read before either settles. */
static void rig_lockstep(struct rig *g)
{
    step_check(&g->a);
    step_check(&g->b);
    step_read(&g->a, &g->k);
    step_read(&g->b, &g->k);
    step_settle(&g->a, &g->k);
    step_settle(&g->b, &g->k);
}

static void rig_close(struct rig *g)
{
    agg_close(&g->a);
    agg_close(&g->b);
    for (size_t i = 0; i < g->n; i++)
        server_stop(&g->sv[i]);
    agg_keys_free(&g->k);
    eventfile_free(&g->ef);
}

/* Both aggregators saw the node reset once, and exactly one restored it. */
static void expect_one_restorer(struct rig *g)
{
    struct agg_repair_stats sa, sb;
    agg_repair_get_stats(g->a.r, &sa);
    agg_repair_get_stats(g->b.r, &sb);
    assert_int_equal(sa.node_resets, 1);
    assert_int_equal(sb.node_resets, 1);
    assert_true((sa.keys_restored > 0) != (sb.keys_restored > 0));
}

static void test_two_restorers(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g, 2, "timeout_ms=300");
    rig_restart_empty(&g, 0);
    incr_all(g.a.s, &g.k, 2);

    /* Both see the reset in the same pass, before either restores. */
    rig_lockstep(&g);
    expect_one_restorer(&g);
    expect_all(g.a.s, &g.k, 7); /* 5 before, 2 since: once */
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    expect_all(g.a.s, &g.k, 7);
    rig_close(&g);
}

/* Adds delta to the copies of every key that has one on node `on`:
 * to that copy (on_it) or to its replica (!on_it). */
static void incr_copies(struct rig *g, uint32_t on, bool on_it, uint64_t delta)
{
    size_t n = g->k.n;
    struct store_replica_value *v = calloc(n * 2, sizeof(*v));
    struct store_node_write *w = calloc(n, sizeof(*w));
    assert_non_null(v);
    assert_non_null(w);
    assert_int_equal(store_mget_replicas(g->a.s, g->k.key, g->k.len, n, v), STORE_OK);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t x = 0; x < 2; x++) {
            if (v[i * 2 + x].node != on)
                continue;
            uint32_t node = on_it ? on : v[i * 2 + (1 - x)].node;
            w[m++] = (struct store_node_write){.key = g->k.key[i], .keylen = g->k.len[i],
                                               .delta = delta, .node = node};
        }
    }
    assert_true(m > 0);
    store_node_incr(g->a.s, w, m, 600);
    for (size_t j = 0; j < m; j++)
        assert_int_equal(w[j].status, STORE_OK);
    free(w);
    free(v);
}

/* Both copies of a key with one on node `on` read want_on, the others want. */
static void expect_copies(struct rig *g, uint32_t on, uint64_t want_on, uint64_t want_other)
{
    struct store_replica_value *v = calloc(g->k.n * 2, sizeof(*v));
    assert_non_null(v);
    assert_int_equal(store_mget_replicas(g->a.s, g->k.key, g->k.len, g->k.n, v), STORE_OK);
    for (size_t i = 0; i < g->k.n * 2; i++) {
        size_t c = i & ~(size_t)1;
        uint64_t want = v[c].node == on || v[c + 1].node == on ? want_on : want_other;
        if (v[i].value != want)
            fail_msg("copy %zu of %s on node %u reads %llu, want %llu", i % 2, g->k.key[i / 2],
                     (unsigned)v[i].node, (unsigned long long)v[i].value,
                     (unsigned long long)want);
    }
    free(v);
}

static void test_two_repairers(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g, 3, "replicas=2&timeout_ms=300");
    rig_restart_empty(&g, 1);

    /* Both see the reset; one restores node 1's copies to what they held. */
    rig_lockstep(&g);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    expect_one_restorer(&g);
    expect_copies(&g, 1, 5, 5);
    struct agg_repair_stats sa, sb;

    /* Increments node 1 missed after the reset (a link cut before they
     * reached it): nothing is repaired before the copies have been stable
     * for AGG_REPAIR_UP_MS. */
    incr_copies(&g, 1, false, 2);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    agg_repair_get_stats(g.a.r, &sa);
    agg_repair_get_stats(g.b.r, &sb);
    assert_int_equal(sa.keys_repaired + sb.keys_repaired, 0);
    assert_true(sa.repair_backlog > 0);
    util_sleep_ms(AGG_REPAIR_UP_MS + 300);
    /* The same pass for both: each sees every copy on node 1 stable and
     * behind; the claims make it one raise. */
    rig_lockstep(&g);
    agg_repair_get_stats(g.a.r, &sa);
    agg_repair_get_stats(g.b.r, &sb);
    assert_true(sa.keys_repaired + sb.keys_repaired > 0);

    /* Every copy of a key on node 1 holds 7 now, node 1's included. */
    expect_copies(&g, 1, 7, 5);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    agg_repair_get_stats(g.a.r, &sa);
    assert_int_equal(sa.repair_backlog, 0);
    assert_int_equal(sa.copies_behind, 0);
    rig_close(&g);
}

static void test_write_between_two_reads(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g, 3, "replicas=2&timeout_ms=300");
    rig_restart_empty(&g, 1);
    /* node 1 repaired, then every copy stable at 5 */
    pass(&g.a, &g.k);
    util_sleep_ms(AGG_REPAIR_UP_MS + 300);
    pass(&g.a, &g.k);
    expect_copies(&g, 1, 5, 5);
    pass(&g.a, &g.k);
    util_sleep_ms(AGG_REPAIR_UP_MS + 300);
    pass(&g.a, &g.k);
    struct agg_repair_stats before, after;
    agg_repair_get_stats(g.a.r, &before);

    /* An increment has reached node 1's partners, not node 1 yet. */
    incr_copies(&g, 1, false, 2);
    pass(&g.a, &g.k);
    agg_repair_get_stats(g.a.r, &after);
    assert_int_equal(after.keys_repaired, before.keys_repaired);
    /* It lands: each copy holds it once. */
    incr_copies(&g, 1, true, 2);
    pass(&g.a, &g.k);
    pass(&g.a, &g.k);
    expect_copies(&g, 1, 7, 5);
    rig_close(&g);
}

/* The count read by a new aggregator: the largest copy of every key. */
static void expect_read(struct rig *g, uint32_t on, uint64_t want_on, uint64_t want_other)
{
    struct agg c;
    agg_open(&c, g->url, &g->ef, &g->k);
    pass(&c, &g->k);
    struct store_replica_value *v = calloc(g->k.n * 2, sizeof(*v));
    assert_non_null(v);
    assert_int_equal(store_mget_replicas(g->a.s, g->k.key, g->k.len, g->k.n, v), STORE_OK);
    for (size_t i = 0; i < g->k.n; i++) {
        uint64_t want = v[2 * i].node == on || v[2 * i + 1].node == on ? want_on : want_other;
        if (c.read[i] != want)
            fail_msg("%s reads %llu, want %llu", g->k.key[i], (unsigned long long)c.read[i],
                     (unsigned long long)want);
    }
    free(v);
    agg_close(&c);
}

static void test_partner_behind(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g, 3, "replicas=2&timeout_ms=300");
    /* 3 increments reached node 1 but not its partners (their link was cut
     * with the outcome unknown, so nobody holds a hint), and both
     * aggregators have read them there: node 1 holds the only full copy. */
    incr_copies(&g, 1, true, 3);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    struct agg_repair_stats sa, sb;
    agg_repair_get_stats(g.a.r, &sa);
    assert_true(sa.copies_behind > 0); /* the partners' copies */
    assert_int_equal(sa.repair_backlog, 0); /* none on a node back empty */
    rig_restart_empty(&g, 1);
    incr_all(g.a.s, &g.k, 2);

    /* Node 1 gets back what the aggregators saw on it (5 + 3), once. */
    rig_lockstep(&g);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    util_sleep_ms(AGG_REPAIR_UP_MS + 300);
    pass(&g.a, &g.k);
    pass(&g.b, &g.k);
    expect_read(&g, 1, 10, 7);
    agg_repair_get_stats(g.a.r, &sa);
    agg_repair_get_stats(g.b.r, &sb);
    assert_true((sa.keys_restored > 0) != (sb.keys_restored > 0));
    assert_int_equal(sa.keys_repaired + sb.keys_repaired, 0); /* nothing raised it lower */
    rig_close(&g);
}

static void test_restart_within_a_pass(void **state)
{
    (void)state;
    struct rig g;
    rig_open(&g, 3, "replicas=2&timeout_ms=300");
    /* The pass reads node 1's id, then node 1 restarts empty and gets the 7
     * increments it missed while it was down (hints) before the pass reads
     * its counters: they read 7, higher than the 5 it held, no drop. */
    step_check(&g.a);
    rig_restart_empty(&g, 1);
    incr_copies(&g, 1, true, 7);
    incr_copies(&g, 1, false, 7);
    step_read(&g.a, &g.k);
    step_settle(&g.a, &g.k);
    pass(&g.a, &g.k);
    pass(&g.a, &g.k);
    /* 5 restored under the 7, once: not the 7 read after the restart */
    expect_copies(&g, 1, 12, 5);
    struct agg_repair_stats sa;
    agg_repair_get_stats(g.a.r, &sa);
    assert_int_equal(sa.node_resets, 1);
    rig_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_restorers),
        cmocka_unit_test(test_two_repairers),
        cmocka_unit_test(test_write_between_two_reads),
        cmocka_unit_test(test_partner_behind),
        cmocka_unit_test(test_restart_within_a_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
