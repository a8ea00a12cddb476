/* The replicated pool layer over a fake engine whose nodes can be down,
 * refuse, or fail mid-command: replica choice, the status of an item from
 * its replicas' outcomes, hints (queued, bounded, replayed, dropped), the
 * maximum on reads, and the blob rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ketama.h"
#include "store_impl.h"
#include "store_pool.h"
#include "util.h"

#define NODES 4
#define SLOTS 512

enum node_mode {
    MODE_UP = 0,
    MODE_DOWN,    /* nothing sent: UNAVAILABLE, in backoff */
    MODE_REFUSE,  /* answers ERROR, stays up (value not a number) */
    MODE_CRASH,   /* applies the write, then fails: ERROR, and down afterwards */
    MODE_CUT,     /* applies the write, then its connection is cut: ERROR with
                   * node_failed, and still up (the engine reconnects) */
    MODE_LAGGING, /* applies writes, but is left out of hint replays but for
                   * empty batches (up false, probe true) */
};

struct entry {
    char key[64];
    bool used, is_blob;
    uint64_t counter;
    char blob[64];
};

struct fake {
    struct store base;
    struct pool pool;
    struct ketama *k;
    struct pool_rings rings;
    struct store_node nodes[NODES];
    enum node_mode mode[NODES];
    struct entry data[NODES][SLOTS];
    unsigned dels[NODES]; /* deletes seen, per node */
};

static struct fake *fake_of(struct store *s)
{
    return (struct fake *)s;
}

static struct entry *find(struct fake *f, uint32_t node, const char *key, size_t len, bool make)
{
    struct entry *free_slot = NULL;
    for (int i = 0; i < SLOTS; i++) {
        struct entry *e = &f->data[node][i];
        if (e->used && strlen(e->key) == len && memcmp(e->key, key, len) == 0)
            return e;
        if (!e->used && free_slot == NULL)
            free_slot = e;
    }
    if (!make || free_slot == NULL)
        return NULL;
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->used = true;
    memcpy(free_slot->key, key, len);
    return free_slot;
}

/* false when the node is down; *crash_after when it applies the command
 * and then fails (every command of the batch sent to it). */
static bool node_does(struct fake *f, uint32_t node, bool *crash_after)
{
    *crash_after = false;
    if (f->mode[node] == MODE_DOWN)
        return false;
    if (f->mode[node] == MODE_CRASH)
        *crash_after = true;
    return true;
}

static void fake_incr(struct store *s, struct store_op *ops, size_t n)
{
    struct fake *f = fake_of(s);
    bool crashed[NODES] = {false};
    for (size_t i = 0; i < n; i++) {
        struct store_op *op = &ops[i];
        bool crash;
        op->value = 0;
        if (!node_does(f, op->node, &crash)) {
            op->status = STORE_UNAVAILABLE;
            continue;
        }
        if (f->mode[op->node] == MODE_REFUSE) {
            op->status = STORE_ERROR;
            continue;
        }
        struct entry *e = find(f, op->node, op->key, op->keylen, true);
        assert_non_null(e);
        e->counter += op->delta;
        if (f->mode[op->node] == MODE_CUT) {
            op->status = STORE_ERROR;
            op->node_failed = true;
            continue;
        }
        op->status = crash ? STORE_ERROR : STORE_OK;
        op->value = op->want_value && !crash ? e->counter : 0;
        crashed[op->node] |= crash;
    }
    for (int k = 0; k < NODES; k++)
        if (crashed[k])
            f->mode[k] = MODE_DOWN;
}

static void fake_mget(struct store *s, struct store_op *ops, size_t n)
{
    struct fake *f = fake_of(s);
    for (size_t i = 0; i < n; i++) {
        struct store_op *op = &ops[i];
        op->value = 0;
        op->present = false;
        if (f->mode[op->node] == MODE_DOWN || f->mode[op->node] == MODE_CRASH) {
            op->status = STORE_UNAVAILABLE;
            continue;
        }
        struct entry *e = find(f, op->node, op->key, op->keylen, false);
        op->status = e != NULL && e->is_blob ? STORE_ERROR : STORE_OK;
        if (e != NULL && !e->is_blob) {
            op->present = true;
            op->value = e->counter;
        }
    }
}

static enum store_status fake_get(struct store *s, uint32_t node, const char *key, size_t keylen,
                                  char **val, size_t *vallen)
{
    struct fake *f = fake_of(s);
    if (f->mode[node] != MODE_UP)
        return STORE_UNAVAILABLE;
    struct entry *e = find(f, node, key, keylen, false);
    if (e == NULL)
        return STORE_NOTFOUND;
    *val = strdup(e->blob);
    *vallen = strlen(e->blob);
    return STORE_OK;
}

static enum store_status fake_put(struct store *s, uint32_t node, const char *key,
                                  size_t keylen, const char *val, size_t vallen, uint32_t ttl_s,
                                  bool add)
{
    struct fake *f = fake_of(s);
    (void)ttl_s;
    if (f->mode[node] == MODE_DOWN)
        return STORE_UNAVAILABLE;
    if (f->mode[node] == MODE_REFUSE)
        return STORE_ERROR;
    struct entry *e = find(f, node, key, keylen, false);
    if (add && e != NULL)
        return STORE_EXISTS;
    e = find(f, node, key, keylen, true);
    e->is_blob = true;
    snprintf(e->blob, sizeof(e->blob), "%.*s", (int)vallen, val);
    if (f->mode[node] == MODE_CRASH) {
        f->mode[node] = MODE_DOWN;
        return STORE_ERROR;
    }
    return STORE_OK;
}

static enum store_status fake_del(struct store *s, uint32_t node, const char *key, size_t keylen)
{
    struct fake *f = fake_of(s);
    if (f->mode[node] != MODE_UP)
        return STORE_UNAVAILABLE;
    f->dels[node]++;
    struct entry *e = find(f, node, key, keylen, false);
    if (e == NULL)
        return STORE_NOTFOUND;
    e->used = false;
    return STORE_OK;
}

static bool fake_up(struct store *s, uint32_t node)
{
    return fake_of(s)->mode[node] != MODE_DOWN && fake_of(s)->mode[node] != MODE_LAGGING;
}

static bool fake_probe(struct store *s, uint32_t node)
{
    return fake_of(s)->mode[node] != MODE_DOWN;
}

static const struct pool_engine fake_engine = {
    .incr = fake_incr,
    .mget = fake_mget,
    .get = fake_get,
    .put = fake_put,
    .del = fake_del,
    .up = fake_up,
    .probe = fake_probe,
};

static struct fake *fake_new(uint32_t replicas, uint32_t hint_keys)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    struct ketama_node kn[NODES];
    for (int i = 0; i < NODES; i++) {
        snprintf(f->nodes[i].host, sizeof(f->nodes[i].host), "10.0.0.%d", i + 1);
        f->nodes[i].port = 6379;
        kn[i] = (struct ketama_node){f->nodes[i].host, 6379};
    }
    f->k = ketama_create(kn, NODES);
    assert_non_null(f->k);
    assert_true(pool_init(&f->pool, &fake_engine, f->k, &f->rings, f->nodes, NODES, replicas, hint_keys));
    return f;
}

static void fake_free(struct fake *f);

static void test_key_epoch(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        uint32_t epoch;
    } cases[] = {
        {"show:q1right01", 0},       {"show~1:q1right01", 1},   {"show~12:q1wrong07", 12},
        {"show~:q1right01", 0},      {"~1:q1", 0},              {"show~1234:q1", 0},
        {"show:u:a~1:q1", 0},        {"show~1", 0},             {"", 0},
        {"show~3:pool", 3},          {"a-b~7:q2opt1n03", 7},    {"show1:q1", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(pool_key_epoch(cases[i].key, strlen(cases[i].key)), cases[i].epoch);
}

/* Ring 0 (nodes 0-2) places every untagged key as a pool of those three
 * would; ring 1 (all four, in another order) the "~1" keys as a pool of
 * that list would; no key of either leaves its ring's nodes. */
static void test_epoch_rings_place_keys(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 0);
    struct store_epoch_ring rings[2] = {{.n_nodes = 3, .node = {0, 1, 2}},
                                        {.n_nodes = 4, .node = {3, 0, 1, 2}}};
    assert_true(pool_rings_set(&f->rings, rings, 2, f->nodes, NODES));
    struct ketama_node k3[3], k4[4];
    for (int i = 0; i < 3; i++)
        k3[i] = (struct ketama_node){f->nodes[i].host, f->nodes[i].port};
    for (int i = 0; i < 4; i++)
        k4[i] = (struct ketama_node){f->nodes[rings[1].node[i]].host, 6379};
    struct ketama *r3 = ketama_create(k3, 3), *r4 = ketama_create(k4, 4);
    unsigned on_new = 0;
    for (int i = 0; i < 400; i++) {
        char key[64];
        uint32_t got[2], want[2];
        int n = snprintf(key, sizeof(key), "show:q1right%02d", i);
        assert_int_equal(pool_placement(&f->pool, key, (size_t)n, got, 2), 2);
        assert_int_equal(ketama_lookup_n(r3, key, (size_t)n, want, 2), 2);
        assert_int_equal(got[0], want[0]);
        assert_int_equal(got[1], want[1]);
        n = snprintf(key, sizeof(key), "show~1:q1right%02d", i);
        assert_int_equal(pool_placement(&f->pool, key, (size_t)n, got, 2), 2);
        assert_int_equal(ketama_lookup_n(r4, key, (size_t)n, want, 2), 2);
        assert_int_equal(got[0], rings[1].node[want[0]]);
        assert_int_equal(got[1], rings[1].node[want[1]]);
        on_new += got[0] == 3 || got[1] == 3;
        /* an epoch no ring has: the newest ring */
        n = snprintf(key, sizeof(key), "show~5:q1right%02d", i);
        uint32_t g5[2];
        assert_int_equal(pool_placement(&f->pool, key, (size_t)n, g5, 2), 2);
        n = snprintf(key, sizeof(key), "show~5:q1right%02d", i);
        assert_int_equal(ketama_lookup_n(r4, key, (size_t)n, want, 2), 2);
        assert_int_equal(g5[0], rings[1].node[want[0]]);
    }
    assert_true(on_new > 100); /* the new node takes its share of epoch 1 */
    struct store_epoch_ring bad = {.n_nodes = 1, .node = {NODES}};
    assert_false(pool_rings_set(&f->rings, &bad, 1, f->nodes, NODES));
    assert_int_equal(f->rings.n, 0);
    ketama_free(r3);
    ketama_free(r4);
    fake_free(f);
}

static void fake_free(struct fake *f)
{
    pool_fini(&f->pool, &f->base);
    pool_rings_clear(&f->rings);
    ketama_free(f->k);
    free(f);
}

/* A key whose replicas (R=2) are the given nodes, in this order. */
static size_t key_on(struct fake *f, uint32_t a, uint32_t b, char *buf, size_t cap)
{
    for (int i = 0; i < 100000; i++) {
        size_t len = (size_t)snprintf(buf, cap, "ev:q1c%05dright", i);
        uint32_t nodes[2];
        if (pool_placement(&f->pool, buf, len, nodes, 2) == 2 && nodes[0] == a && nodes[1] == b)
            return len;
    }
    fail_msg("no key on %u,%u", a, b);
    return 0;
}

static uint64_t counter_on(struct fake *f, uint32_t node, const char *key, size_t len)
{
    struct entry *e = find(f, node, key, len, false);
    return e != NULL ? e->counter : 0;
}

static void test_replicas_distinct_and_stable(void **state)
{
    (void)state;
    for (uint32_t r = 1; r <= NODES; r++) {
        struct fake *f = fake_new(r, 100);
        size_t first[NODES] = {0};
        for (int i = 0; i < 2000; i++) {
            char key[32];
            size_t len = (size_t)snprintf(key, sizeof(key), "ev:q%dage%dwrong%02d", i % 9,
                                          i % 3 + 1, i % 100 + 1);
            uint32_t a[NODES], b[NODES];
            assert_int_equal(pool_placement(&f->pool, key, len, a, NODES), r);
            assert_int_equal(pool_placement(&f->pool, key, len, b, NODES), r);
            assert_memory_equal(a, b, r * sizeof(a[0]));
            assert_int_equal(a[0], ketama_lookup(f->k, key, len));
            for (uint32_t x = 0; x < r; x++)
                for (uint32_t y = x + 1; y < r; y++)
                    assert_int_not_equal(a[x], a[y]);
            first[a[0]]++;
        }
        for (int k = 0; k < NODES; k++)
            assert_true(first[k] > 200);
        fake_free(f);
    }
}

static void test_item_status_from_replicas(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char key[32];
    size_t len = key_on(f, 0, 1, key, sizeof(key));
    struct store_incr it = {.key = key, .keylen = len, .delta = 5, .want_value = true};

    /* both up */
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_OK);
    assert_int_equal(it.value, 5);
    /* one down: OK, and a hint for it */
    f->mode[1] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_OK);
    assert_int_equal(it.value, 10);
    assert_int_equal(f->base.stats.hints_queued, 1);
    assert_int_equal(f->base.stats.hints_pending, 1);
    /* both down: nothing can have landed, the caller resends; no hint */
    f->mode[0] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_UNAVAILABLE);
    assert_int_equal(it.value, 0);
    assert_int_equal(f->base.stats.hints_queued, 1);
    /* one refuses while up: ERROR */
    f->mode[0] = MODE_UP;
    f->mode[1] = MODE_REFUSE;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_ERROR);
    /* one fails after applying (node down now) and the other confirms: OK,
     * and no hint for the failed one (it may have applied it) */
    f->mode[1] = MODE_CRASH;
    uint64_t queued = f->base.stats.hints_queued;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_queued, queued);
    assert_int_equal(f->mode[1], MODE_DOWN);
    /* the only reachable one fails after applying: ERROR (maybe applied),
     * and the down one gets a hint since the caller will not resend */
    f->mode[0] = MODE_CRASH;
    f->mode[1] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_ERROR);
    assert_int_equal(f->base.stats.hints_queued, queued + 1);
    /* bad key: ERROR, nothing sent */
    struct store_incr bad = {.key = "bad key", .keylen = 7, .delta = 1};
    f->mode[0] = f->mode[1] = MODE_UP;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &bad, 1, 60), STORE_ERROR);
    fake_free(f);
}

/* A replica whose connection was cut (or that was given up on for lag)
 * after the command went out: ERROR with node_failed, the node still up. It
 * counts as down for the merge (the other confirmed: OK) and gets no hint:
 * it may have applied the increment. */
static void test_node_failed_after_send(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char key[32];
    size_t len = key_on(f, 0, 1, key, sizeof(key));
    struct store_incr it = {.key = key, .keylen = len, .delta = 3};
    f->mode[1] = MODE_CUT;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_queued, 0);
    assert_int_equal(counter_on(f, 0, key, len), 3);
    assert_int_equal(counter_on(f, 1, key, len), 3); /* applied once, never twice */
    /* both cut: nobody confirmed, it may have landed: ERROR, no hint */
    f->mode[0] = MODE_CUT;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_ERROR);
    assert_int_equal(f->base.stats.hints_queued, 0);
    fake_free(f);
}

/* pool_incr_confirmed: every item needs one OK among its replicas; hint
 * replays in front are not items. */
static void test_incr_confirmed(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char k1[32], k2[32];
    size_t l1 = key_on(f, 0, 1, k1, sizeof(k1));
    size_t l2 = key_on(f, 2, 3, k2, sizeof(k2));
    struct store_incr it[2] = {{.key = k1, .keylen = l1, .delta = 1},
                               {.key = k2, .keylen = l2, .delta = 1}};
    f->mode[3] = MODE_DOWN; /* a hint for node 3 */
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, it, 2, 60), STORE_OK);
    f->mode[3] = MODE_UP;
    size_t n = pool_incr_prepare(&f->pool, &f->base, it, 2, 60);
    assert_int_equal(n, 1 + 2 * 2);
    assert_int_equal(f->pool.run_hint_end, 1);
    struct store_op *ops = f->pool.ops;
    for (size_t i = 0; i < n; i++)
        ops[i].status = STORE_UNAVAILABLE;
    assert_false(pool_incr_confirmed(&f->pool, ops, n));
    ops[2].status = STORE_OK; /* k1 on its second replica */
    assert_false(pool_incr_confirmed(&f->pool, ops, n));
    ops[0].status = STORE_OK; /* the hint: not an item */
    assert_false(pool_incr_confirmed(&f->pool, ops, n));
    ops[3].status = STORE_OK; /* k2 on its first */
    assert_true(pool_incr_confirmed(&f->pool, ops, n));
    assert_int_equal(pool_incr_finish(&f->pool, &f->base, it, 2, 60), STORE_OK);
    fake_free(f);
}

/* A lagging node gets no hint replays in front of batches that something
 * waits for, only in empty ones (the idle replay), which are its probe. */
static void test_lagging_node_replayed_when_idle(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char key[32], other[32];
    size_t len = key_on(f, 0, 1, key, sizeof(key));
    size_t olen = key_on(f, 2, 3, other, sizeof(other));
    struct store_incr it = {.key = key, .keylen = len, .delta = 2};
    f->mode[1] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &it, 1, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_pending, 1);
    f->mode[1] = MODE_LAGGING;
    struct store_incr o = {.key = other, .keylen = olen, .delta = 1};
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, &o, 1, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_pending, 1); /* not in front of a real batch */
    assert_int_equal(counter_on(f, 1, key, len), 0);
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, NULL, 0, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_pending, 0);
    assert_int_equal(f->base.stats.hints_replayed, 1);
    assert_int_equal(counter_on(f, 1, key, len), 2);
    fake_free(f);
}

static void test_hints_replayed_when_back(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char k1[32], k2[32];
    size_t l1 = key_on(f, 0, 2, k1, sizeof(k1));
    size_t l2 = key_on(f, 2, 3, k2, sizeof(k2));
    struct store_incr it[2] = {{.key = k1, .keylen = l1, .delta = 3},
                               {.key = k2, .keylen = l2, .delta = 4}};
    f->mode[2] = MODE_DOWN;
    for (int i = 0; i < 5; i++)
        assert_int_equal(pool_incr_batch(&f->pool, &f->base, it, 2, 60), STORE_OK);
    assert_int_equal(counter_on(f, 0, k1, l1), 15);
    assert_int_equal(counter_on(f, 3, k2, l2), 20);
    assert_int_equal(counter_on(f, 2, k1, l1), 0);
    assert_int_equal(f->base.stats.hints_queued, 10);
    assert_int_equal(f->base.stats.hints_pending, 2); /* merged per key */
    /* still down: an empty batch replays nothing */
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, NULL, 0, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_pending, 2);
    /* back (empty): the next batch replays, in front of its own items */
    f->mode[2] = MODE_UP;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, it, 1, 60), STORE_OK);
    assert_int_equal(counter_on(f, 2, k1, l1), 18);
    assert_int_equal(counter_on(f, 2, k2, l2), 20);
    assert_int_equal(f->base.stats.hints_replayed, 10);
    assert_int_equal(f->base.stats.hints_pending, 0);
    /* a replay whose outcome is unknown is dropped, never repeated */
    f->mode[2] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, it, 2, 60), STORE_OK);
    f->mode[2] = MODE_CRASH;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, NULL, 0, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_dropped, 2);
    assert_int_equal(f->base.stats.hints_pending, 0);
    assert_int_equal(f->base.stats.hints_queued,
                     f->base.stats.hints_replayed + f->base.stats.hints_dropped);
    fake_free(f);
}

static void test_hint_table_bounded(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 10);
    f->mode[1] = MODE_DOWN;
    struct store_incr items[200];
    char keys[200][32];
    size_t on_down = 0;
    for (int i = 0; i < 200; i++) {
        size_t len = (size_t)snprintf(keys[i], sizeof(keys[i]), "ev:q2opt1n%03d", i);
        items[i] = (struct store_incr){.key = keys[i], .keylen = len, .delta = 1};
        uint32_t nodes[2];
        pool_placement(&f->pool, keys[i], len, nodes, 2);
        on_down += nodes[0] == 1 || nodes[1] == 1;
    }
    assert_true(on_down > 20);
    /* every item still lands on its other replica: OK; the table keeps 10
     * keys and counts the rest as dropped (and logs it) */
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, items, 200, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_queued, 10);
    assert_int_equal(f->base.stats.hints_dropped, on_down - 10);
    assert_int_equal(f->base.stats.hints_pending, 10);
    /* closing with hints pending counts them as dropped too */
    fake_free(f);
    f = fake_new(2, 0); /* hints disabled */
    f->mode[1] = MODE_DOWN;
    assert_int_equal(pool_incr_batch(&f->pool, &f->base, items, 200, 60), STORE_OK);
    assert_int_equal(f->base.stats.hints_queued, 0);
    assert_int_equal(f->base.stats.hints_dropped, on_down);
    fake_free(f);
}

static void test_reads_take_the_maximum(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char key[32];
    size_t len = key_on(f, 1, 3, key, sizeof(key));
    find(f, 1, key, len, true)->counter = 5;
    find(f, 3, key, len, true)->counter = 7;
    const char *keys[] = {key, "ev:none"};
    size_t lens[] = {len, 7};
    uint64_t v[2];
    bool p[2];
    assert_int_equal(pool_mget_u64(&f->pool, &f->base, keys, lens, 2, v, p), STORE_OK);
    assert_int_equal(v[0], 7);
    assert_true(p[0]);
    assert_int_equal(v[1], 0);
    assert_false(p[1]);
    /* the replica with more is down: the other's value, still OK */
    f->mode[3] = MODE_DOWN;
    assert_int_equal(pool_mget_u64(&f->pool, &f->base, keys, lens, 2, v, p), STORE_OK);
    assert_int_equal(v[0], 5);
    /* a replica restarted empty does not pull it down */
    f->mode[3] = MODE_UP;
    find(f, 1, key, len, false)->used = false;
    assert_int_equal(pool_mget_u64(&f->pool, &f->base, keys, lens, 1, v, p), STORE_OK);
    assert_int_equal(v[0], 7);
    /* no replica readable */
    f->mode[1] = f->mode[3] = MODE_DOWN;
    assert_int_equal(pool_mget_u64(&f->pool, &f->base, keys, lens, 1, v, p), STORE_UNAVAILABLE);
    assert_int_equal(v[0], 0);
    assert_false(p[0]);
    fake_free(f);
}

static void test_blob_rules(void **state)
{
    (void)state;
    struct fake *f = fake_new(2, 100);
    char key[32];
    size_t len = key_on(f, 0, 1, key, sizeof(key));
    char *val = NULL;
    size_t vlen;
    assert_int_equal(pool_put(&f->pool, &f->base, key, len, "v1", 2, 60, false), STORE_OK);
    /* the primary down: get reads the second replica */
    f->mode[0] = MODE_DOWN;
    assert_int_equal(pool_get(&f->pool, &f->base, key, len, &val, &vlen), STORE_OK);
    assert_string_equal(val, "v1");
    free(val);
    /* a set it misses leaves a stale hint: deleted there when it answers */
    assert_int_equal(pool_put(&f->pool, &f->base, key, len, "v2", 2, 60, false), STORE_OK);
    assert_int_equal(f->base.stats.hints_pending, 1);
    f->mode[0] = MODE_UP;
    assert_string_equal(find(f, 0, key, len, false)->blob, "v1");
    assert_int_equal(pool_get(&f->pool, &f->base, key, len, &val, &vlen), STORE_OK);
    assert_string_equal(val, "v2");
    free(val);
    assert_null(find(f, 0, key, len, false));
    assert_int_equal(f->base.stats.hints_pending, 0);
    /* every replica down: UNAVAILABLE, nothing kept */
    f->mode[0] = f->mode[1] = MODE_DOWN;
    assert_int_equal(pool_put(&f->pool, &f->base, key, len, "v3", 2, 60, false),
                     STORE_UNAVAILABLE);
    assert_int_equal(pool_get(&f->pool, &f->base, key, len, &val, &vlen), STORE_UNAVAILABLE);
    assert_int_equal(f->base.stats.hints_pending, 0);
    f->mode[0] = f->mode[1] = MODE_UP;

    /* add: the first replica decides */
    char ukey[32];
    size_t ulen = key_on(f, 2, 3, ukey, sizeof(ukey));
    assert_int_equal(pool_put(&f->pool, &f->base, ukey, ulen, "a", 1, 60, true), STORE_OK);
    assert_int_equal(pool_put(&f->pool, &f->base, ukey, ulen, "b", 1, 60, true), STORE_EXISTS);
    /* the primary lost it: the second replica still says EXISTS, and the
     * old value is copied back over ours */
    find(f, 2, ukey, ulen, false)->used = false;
    assert_int_equal(pool_put(&f->pool, &f->base, ukey, ulen, "c", 1, 60, true), STORE_EXISTS);
    assert_string_equal(find(f, 2, ukey, ulen, false)->blob, "a");
    /* delete: everywhere; NOTFOUND once gone */
    assert_int_equal(pool_del(&f->pool, &f->base, ukey, ulen), STORE_OK);
    assert_int_equal(pool_del(&f->pool, &f->base, ukey, ulen), STORE_NOTFOUND);
    /* a delete a replica misses: deleted there when it answers */
    assert_int_equal(pool_put(&f->pool, &f->base, ukey, ulen, "d", 1, 60, false), STORE_OK);
    f->mode[3] = MODE_DOWN;
    assert_int_equal(pool_del(&f->pool, &f->base, ukey, ulen), STORE_OK);
    f->mode[3] = MODE_UP;
    assert_int_equal(pool_get(&f->pool, &f->base, ukey, ulen, &val, &vlen), STORE_NOTFOUND);
    assert_null(find(f, 3, ukey, ulen, false));
    fake_free(f);
}

/* A node that stays slow is probed ever less often: answering late keeps
 * a lagging node's backoff, so the next lag doubles it (each probe costs a
 * batch the lag budget). A node that only answered late without lagging
 * starts its backoff afresh. */
static void test_slow_node_backoff_grows(void **state)
{
    (void)state;
    struct node_health h;
    node_health_init(&h);
    node_health_fail_lag(&h); /* 100 ms */
    node_health_ok_slow(&h);
    assert_true(node_health_lagging(&h));
    node_health_fail_lag(&h); /* 200 ms */
    uint64_t now = util_mono_ms();
    assert_true(node_health_down(&h, now + NODE_BACKOFF_MIN_MS + 50));
    node_health_ok(&h);
    assert_false(node_health_lagging(&h));

    struct node_health g;
    node_health_init(&g);
    node_health_fail(&g);
    node_health_ok_slow(&g);
    node_health_fail(&g); /* 100 ms again */
    now = util_mono_ms();
    assert_false(node_health_down(&g, now + NODE_BACKOFF_MIN_MS + 50));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicas_distinct_and_stable),
        cmocka_unit_test(test_item_status_from_replicas),
        cmocka_unit_test(test_node_failed_after_send),
        cmocka_unit_test(test_incr_confirmed),
        cmocka_unit_test(test_lagging_node_replayed_when_idle),
        cmocka_unit_test(test_hints_replayed_when_back),
        cmocka_unit_test(test_hint_table_bounded),
        cmocka_unit_test(test_reads_take_the_maximum),
        cmocka_unit_test(test_blob_rules),
        cmocka_unit_test(test_slow_node_backoff_grows),
        cmocka_unit_test(test_key_epoch),
        cmocka_unit_test(test_epoch_rings_place_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
