/*
 * The ultimate fans' pure parts (fans.h) and their keys (keys.h): the
 * ranking order, an instance's bounded top list, the published text, the
 * merge of several instances' lists with stale entries, and the walk that
 * checks candidates. The exactness test spreads a population's answers over
 * several instances the way ingest nodes see them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fans.h"
#include "keys.h"
#include "store.h"
#include "util.h"

static struct fans_entry ent(const char *user, uint64_t right, uint64_t ms)
{
    struct fans_entry e = {.right = right, .total_ms = ms};
    snprintf(e.user, sizeof(e.user), "%s", user);
    return e;
}

/* ---- keys ---- */

static void test_user_keys(void **state)
{
    (void)state;
    char buf[KEY_USER_MAX];
    assert_int_equal(key_user_marker(buf, "ev", "fan-1", 3), strlen("ev:u:fan-1:q3"));
    assert_string_equal(buf, "ev:u:fan-1:q3");
    key_user_right(buf, "ev", "fan-1");
    assert_string_equal(buf, "ev:u:fan-1:right");
    key_user_ms(buf, "ev", "fan-1");
    assert_string_equal(buf, "ev:u:fan-1:ms");
    key_fans_seq(buf, "ev");
    assert_string_equal(buf, "ev:fans:seq");
    key_fans_list(buf, "ev", 42);
    assert_string_equal(buf, "ev:fans:42");

    /* The longest: a 32-byte event, a 64-byte user, the largest question id.
     * It fits the buffer and memcached's key rule. */
    char event[33], user[65];
    memset(event, 'e', 32);
    event[32] = '\0';
    memset(user, 'U', 64);
    user[64] = '\0';
    size_t n = key_user_marker(buf, event, user, 1000000);
    assert_int_equal(n, 32 + 3 + 64 + 9);
    assert_int_equal(strlen(buf), n);
    assert_true(n < KEY_USER_MAX);
    assert_true(store_key_valid(buf, n));
    n = key_user_right(buf, event, user);
    assert_true(store_key_valid(buf, n));
}

/* A user id may hold ':' and digits, yet no marker equals another user's
 * marker or counter. */
static void test_user_keys_distinct(void **state)
{
    (void)state;
    char a[KEY_USER_MAX], b[KEY_USER_MAX];
    key_user_marker(a, "ev", "x:q1", 2);  /* ev:u:x:q1:q2 */
    key_user_marker(b, "ev", "x", 12);    /* ev:u:x:q12 */
    assert_string_not_equal(a, b);
    key_user_right(a, "ev", "x:q1");      /* ev:u:x:q1:right */
    key_user_marker(b, "ev", "x", 1);     /* ev:u:x:q1 */
    assert_string_not_equal(a, b);
    key_user_ms(a, "ev", "a:right");      /* ev:u:a:right:ms */
    key_user_right(b, "ev", "a");         /* ev:u:a:right */
    assert_string_not_equal(a, b);
}

/* ---- order ---- */

static void test_rank_order(void **state)
{
    (void)state;
    /* right desc, then total_ms asc, then user asc */
    struct fans_entry e[] = {
        ent("b", 3, 500), ent("a", 3, 500), ent("c", 4, 9000), ent("d", 3, 100),
        ent("e", 2, 1),
    };
    size_t n = fans_merge(e, LT_ARRAY_LEN(e));
    assert_int_equal(n, 5);
    assert_string_equal(e[0].user, "c");
    assert_string_equal(e[1].user, "d");
    assert_string_equal(e[2].user, "a");
    assert_string_equal(e[3].user, "b");
    assert_string_equal(e[4].user, "e");
    struct fans_entry x = ent("a", 1, 1), y = ent("a", 1, 1);
    assert_int_equal(fans_cmp(&x, &y), 0);
}

static void test_newer(void **state)
{
    (void)state;
    struct fans_entry old = ent("u", 2, 100), cur = ent("u", 3, 900);
    assert_true(fans_newer(&cur, &old));
    assert_false(fans_newer(&old, &cur));
    /* A tie on right (the store lost data): the slower reading wins. */
    struct fans_entry slow = ent("u", 3, 950);
    assert_true(fans_newer(&slow, &cur));
    assert_false(fans_newer(&cur, &cur));
}

/* ---- an instance's top list ---- */

static void check_sorted(const struct fans_topk *t)
{
    for (size_t i = 1; i < t->n; i++)
        assert_true(fans_cmp(&t->e[i - 1], &t->e[i]) < 0);
}

static void test_topk_update(void **state)
{
    (void)state;
    struct fans_topk t;
    fans_topk_init(&t);
    assert_true(fans_topk_update(&t, "a", 1, 500));
    assert_true(fans_topk_update(&t, "b", 1, 200));
    assert_true(t.dirty);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.e[0].user, "b");
    /* a's newer entry replaces the old one, no second entry */
    assert_true(fans_topk_update(&t, "a", 2, 900));
    assert_int_equal(t.n, 2);
    assert_string_equal(t.e[0].user, "a");
    assert_int_equal(t.e[0].right, 2);
    assert_int_equal(t.e[0].total_ms, 900);
    /* an older entry (a reply that arrived late) changes nothing */
    t.dirty = false;
    assert_false(fans_topk_update(&t, "a", 1, 500));
    assert_false(t.dirty);
    assert_int_equal(t.e[0].right, 2);
    /* bad user ids are ignored */
    char longuser[80];
    memset(longuser, 'x', sizeof(longuser) - 1);
    longuser[sizeof(longuser) - 1] = '\0';
    assert_false(fans_topk_update(&t, longuser, 9, 1));
    assert_false(fans_topk_update(&t, "", 9, 1));
    check_sorted(&t);
}

/* Full: the worst entry goes; an entry that cannot enter changes nothing;
 * the list stays sorted and bounded. */
static void test_topk_bounded(void **state)
{
    (void)state;
    struct fans_topk t;
    fans_topk_init(&t);
    char user[16];
    for (int i = 0; i < FANS_TOPK; i++) {
        snprintf(user, sizeof(user), "u%03d", i);
        assert_true(fans_topk_update(&t, user, 5, 1000 + (uint64_t)i));
    }
    assert_int_equal(t.n, FANS_TOPK);
    assert_false(fans_topk_update(&t, "late", 5, 5000)); /* slower than all */
    assert_false(fans_topk_update(&t, "low", 4, 1));     /* fewer right */
    assert_true(fans_topk_update(&t, "fast", 5, 1));     /* the best */
    assert_int_equal(t.n, FANS_TOPK);
    assert_string_equal(t.e[0].user, "fast");
    snprintf(user, sizeof(user), "u%03d", FANS_TOPK - 2);
    assert_string_equal(t.e[FANS_TOPK - 1].user, user); /* u099 dropped */
    /* a listed user's newer entry moves it up without growing the list */
    assert_true(fans_topk_update(&t, "u050", 6, 3000));
    assert_int_equal(t.n, FANS_TOPK);
    assert_string_equal(t.e[0].user, "u050");
    check_sorted(&t);
    for (size_t i = 0; i < t.n; i++)
        for (size_t j = i + 1; j < t.n; j++)
            assert_string_not_equal(t.e[i].user, t.e[j].user);
}

/* ---- the published text ---- */

static void test_encode_decode(void **state)
{
    (void)state;
    struct fans_topk t;
    fans_topk_init(&t);
    char user[FANS_USER_MAX + 1];
    for (int i = 0; i < FANS_TOPK; i++) {
        /* the longest users and counts: the text still fits FANS_JSON_MAX */
        memset(user, 'a' + i % 26, FANS_USER_MAX);
        snprintf(user + FANS_USER_MAX - 4, 5, "%04d", i);
        fans_topk_update(&t, user, UINT64_MAX / 2 - (uint64_t)i, UINT64_MAX / 2);
    }
    char buf[FANS_JSON_MAX];
    size_t len = fans_encode(7, t.e, t.n, buf, sizeof(buf));
    assert_true(len > 0 && len < sizeof(buf));
    struct fans_entry out[FANS_TOPK];
    size_t n = 0;
    assert_true(fans_decode(buf, len, out, FANS_TOPK, &n));
    assert_int_equal(n, FANS_TOPK);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(out[i].user, t.e[i].user);
        assert_true(out[i].right == t.e[i].right);
        assert_true(out[i].total_ms == t.e[i].total_ms);
    }
    /* too small a buffer: 0, never a cut text */
    assert_int_equal(fans_encode(7, t.e, t.n, buf, 100), 0);

    struct fans_entry one = ent("fan-8812", 7, 10432);
    len = fans_encode(0xc0ffee, &one, 1, buf, sizeof(buf));
    assert_string_equal(buf, "{\"owner\":\"0000000000c0ffee\",\"fans\":[[\"fan-8812\",7,10432]]}");
    assert_true(fans_owned_by(buf, len, 0xc0ffee));
    assert_false(fans_owned_by(buf, len, 0xc0ffef));
    assert_false(fans_owned_by(buf, 10, 0xc0ffee));
    len = fans_encode(UINT64_MAX, NULL, 0, buf, sizeof(buf));
    assert_string_equal(buf, "{\"owner\":\"ffffffffffffffff\",\"fans\":[]}");
    assert_true(fans_decode(buf, len, out, FANS_TOPK, &n));
    assert_int_equal(n, 0);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "[]",
        "{\"fans\":{}}",
        "{\"fans\":[[\"a\",1]]}",
        "{\"fans\":[[\"a\",1,2,3]]}",
        "{\"fans\":[[\"a b\",1,2]]}",
        "{\"fans\":[[\"\",1,2]]}",
        "{\"fans\":[[\"a\",-1,2]]}",
        "{\"fans\":[[\"a\",1,2.5]]}",
        "{\"fans\":[[\"a\",\"1\",2]]}",
        "{\"fans\":[[1,1,2]]}",
        "{\"fans\":[[\"a\",1,2],[\"b\",1,2],[\"c\",1,2]]}", /* more than max (2) */
        "{\"fans\":[[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",1,2]]}",
    };
    struct fans_entry out[2];
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++) {
        size_t n = 99;
        if (fans_decode(bad[i], strlen(bad[i]), out, 2, &n))
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(n, 99);
    }
}

/* ---- merge ---- */

/* Three instances' lists with stale entries: each user keeps its newest
 * entry (largest right), whatever list it came from. */
static void test_merge_stale_entries(void **state)
{
    (void)state;
    struct fans_entry e[] = {
        /* node 1 */
        ent("ann", 2, 3000), ent("bob", 3, 4000), ent("cid", 1, 100),
        /* node 2: bob's and ann's later answers went here */
        ent("bob", 4, 4500), ent("ann", 3, 3900), ent("dee", 3, 2000),
        /* node 3: stale ann, cid's newer */
        ent("ann", 1, 1500), ent("cid", 3, 600),
    };
    size_t n = fans_merge(e, LT_ARRAY_LEN(e));
    assert_int_equal(n, 4);
    assert_string_equal(e[0].user, "bob");
    assert_int_equal(e[0].right, 4);
    assert_int_equal(e[0].total_ms, 4500);
    assert_string_equal(e[1].user, "cid");
    assert_int_equal(e[1].right, 3);
    assert_string_equal(e[2].user, "dee");
    assert_string_equal(e[3].user, "ann");
    assert_int_equal(e[3].right, 3);
    assert_int_equal(e[3].total_ms, 3900);
    assert_int_equal(fans_merge(e, 0), 0);
}

/* ---- select ---- */

struct fake_markers {
    const char *const *wrong; /* users who got a closed question wrong */
    size_t n_wrong;
    const char *fail_on;      /* checking this user fails (store down) */
    int calls;
};

static int fake_verify(void *ctx, const struct fans_entry *e)
{
    struct fake_markers *f = ctx;
    f->calls++;
    if (f->fail_on && strcmp(e->user, f->fail_on) == 0)
        return -1;
    for (size_t i = 0; i < f->n_wrong; i++)
        if (strcmp(f->wrong[i], e->user) == 0)
            return 0;
    return 1;
}

static void test_select_skips_wrong(void **state)
{
    (void)state;
    struct fans_entry e[] = {
        ent("a", 4, 100), ent("b", 3, 50), ent("c", 3, 60), ent("d", 3, 70), ent("e", 2, 10),
    };
    size_t n = fans_merge(e, LT_ARRAY_LEN(e));
    static const char *const wrong[] = {"a", "c"};
    struct fake_markers f = {.wrong = wrong, .n_wrong = 2};
    struct fans_entry out[FANS_SHOWN];
    struct fans_selection sel;
    /* 3 closed questions: "e" (2 right) cannot qualify and is never checked */
    fans_select(e, n, 3, 1000, fake_verify, &f, out, FANS_SHOWN, &sel);
    assert_false(sel.failed);
    assert_int_equal(sel.n, 2);
    assert_string_equal(out[0].user, "b");
    assert_string_equal(out[1].user, "d");
    assert_int_equal(sel.checks, 4);
    assert_int_equal(f.calls, 4);

    /* stops at max_out */
    f.calls = 0;
    fans_select(e, n, 3, 1000, fake_verify, &f, out, 1, &sel);
    assert_int_equal(sel.n, 1);
    assert_int_equal(f.calls, 2);
    /* and at max_checks */
    fans_select(e, n, 3, 1, fake_verify, &f, out, FANS_SHOWN, &sel);
    assert_int_equal(sel.n, 0);
    assert_int_equal(sel.checks, 1);
    /* no closed question: nobody, nothing checked */
    f.calls = 0;
    fans_select(e, n, 0, 1000, fake_verify, &f, out, FANS_SHOWN, &sel);
    assert_int_equal(sel.n, 0);
    assert_int_equal(f.calls, 0);
    /* a failed check ends the walk as failed */
    f.fail_on = "d";
    fans_select(e, n, 3, 1000, fake_verify, &f, out, FANS_SHOWN, &sel);
    assert_true(sel.failed);
}

/* ---- markers ---- */

static void test_marker_text(void **state)
{
    (void)state;
    char buf[24];
    bool right = false;
    uint64_t ms = 0;
    size_t n = fans_marker_format(buf, sizeof(buf), true, 1234);
    assert_string_equal(buf, "R 1234");
    assert_true(fans_marker_parse(buf, n, &right, &ms));
    assert_true(right);
    assert_int_equal(ms, 1234);
    n = fans_marker_format(buf, sizeof(buf), false, UINT64_MAX);
    assert_string_equal(buf, "W 18446744073709551615");
    assert_true(fans_marker_parse(buf, n, &right, &ms));
    assert_false(right);
    assert_true(ms == UINT64_MAX);
    static const char *const bad[] = {"", "R", "R ", "X 1", "R1", "R  1", "R -1", "R 1x",
                                      "R 18446744073709551616", "r 1"};
    for (size_t i = 0; i < LT_ARRAY_LEN(bad); i++)
        assert_false(fans_marker_parse(bad[i], strlen(bad[i]), &right, &ms));
}

/* ---- exactness over several instances ---- */

#define POP 3000
#define NODES 4
#define QUESTIONS 5

/*
 * A population answers 5 questions; each answer goes to a random one of 4
 * instances, which sees the user's totals as the store returns them, in
 * order, and keeps its top list. At the end (every question closed) the
 * merge of the 4 lists, ranked and checked, must equal the top 10 computed
 * from the population itself. The fastest users are made fully right, and
 * many users with one wrong answer rank high by time, so stale and
 * disqualified entries crowd the lists.
 */
static void test_merge_exact_across_nodes(void **state)
{
    (void)state;
    struct util_rng rng;
    util_rng_seed(&rng, 42);
    static bool right[POP][QUESTIONS];
    static uint64_t ms[POP][QUESTIONS];
    static uint64_t tot_right[POP], tot_ms[POP];
    static struct fans_topk node[NODES];
    for (int n = 0; n < NODES; n++)
        fans_topk_init(&node[n]);
    for (int u = 0; u < POP; u++) {
        for (int q = 0; q < QUESTIONS; q++) {
            right[u][q] = u % 7 == 0 ? true : util_rng_below(&rng, 10) < 8;
            ms[u][q] = 100 + util_rng_below(&rng, 20000);
        }
    }
    /* question by question, users in a random order each time */
    static int order[POP];
    for (int q = 0; q < QUESTIONS; q++) {
        for (int u = 0; u < POP; u++)
            order[u] = u;
        for (int i = POP - 1; i > 0; i--) {
            int j = (int)util_rng_below(&rng, (uint32_t)i + 1);
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < POP; i++) {
            int u = order[i];
            if (!right[u][q])
                continue;
            tot_right[u]++;
            tot_ms[u] += ms[u][q];
            char user[16];
            snprintf(user, sizeof(user), "fan-%d", u);
            fans_topk_update(&node[util_rng_below(&rng, NODES)], user, tot_right[u], tot_ms[u]);
        }
    }
    /* expected: fully right users by (total_ms asc, id asc) */
    static struct fans_entry want[POP];
    size_t nw = 0;
    for (int u = 0; u < POP; u++) {
        if (tot_right[u] != QUESTIONS)
            continue;
        char user[16];
        snprintf(user, sizeof(user), "fan-%d", u);
        want[nw++] = ent(user, tot_right[u], tot_ms[u]);
    }
    nw = fans_merge(want, nw);
    assert_true(nw > FANS_SHOWN);

    static struct fans_entry all[NODES * FANS_TOPK];
    size_t n = 0;
    for (int k = 0; k < NODES; k++) {
        /* through the published text, as the aggregator reads it */
        char buf[FANS_JSON_MAX];
        size_t len = fans_encode((uint64_t)k, node[k].e, node[k].n, buf, sizeof(buf));
        size_t got = 0;
        assert_true(fans_decode(buf, len, all + n, FANS_TOPK, &got));
        n += got;
    }
    n = fans_merge(all, n);
    struct fake_markers none = {0};
    struct fans_entry out[FANS_SHOWN];
    struct fans_selection sel;
    fans_select(all, n, QUESTIONS, 1000, fake_verify, &none, out, FANS_SHOWN, &sel);
    assert_int_equal(sel.n, FANS_SHOWN);
    for (size_t i = 0; i < FANS_SHOWN; i++) {
        assert_string_equal(out[i].user, want[i].user);
        assert_true(out[i].right == want[i].right);
        assert_true(out[i].total_ms == want[i].total_ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_keys),
        cmocka_unit_test(test_user_keys_distinct),
        cmocka_unit_test(test_rank_order),
        cmocka_unit_test(test_newer),
        cmocka_unit_test(test_topk_update),
        cmocka_unit_test(test_topk_bounded),
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_merge_stale_entries),
        cmocka_unit_test(test_select_skips_wrong),
        cmocka_unit_test(test_marker_text),
        cmocka_unit_test(test_merge_exact_across_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
