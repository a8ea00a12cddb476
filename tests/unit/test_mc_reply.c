/* The memcached reply parser over buffers (common/mc_reply.h): each kind of
 * batch with good replies, replies cut anywhere (the rest comes later),
 * and garbled or out-of-step ones, which must end the connection (BAD)
 * rather than be taken for another op's outcome. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mc_reply.h"
#include "store.h"

#define NOPS 4

struct fx {
    struct store_op ops[NOPS];
    unsigned char seen[NOPS];
    struct mc_reply x;
};

/* ops 0, 1 and 3 on node 0, op 2 on node 1; op 0 wants its value, op 3 is
 * a blob read. */
static void fx_init(struct fx *f, enum mc_kind kind)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < NOPS; i++)
        f->ops[i] = (struct store_op){.key = "k", .keylen = 1, .node = i == 2 ? 1 : 0,
                                      .status = STORE_UNAVAILABLE};
    f->ops[0].want_value = kind == MC_INCR;
    f->ops[3].want_blob = kind == MC_MGET;
    f->x = (struct mc_reply){.kind = kind, .ops = f->ops, .n = NOPS, .seen = f->seen, .node = 0};
}

static enum mc_reply_result parse(struct fx *f, const char *text, size_t *used)
{
    return mc_reply_parse(&f->x, text, strlen(text), used);
}

static void free_blobs(struct fx *f)
{
    for (size_t i = 0; i < NOPS; i++)
        free(f->ops[i].blob);
}

static void test_incr_good(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, MC_INCR);
    const char *in = "VA 2 O0\r\n42\r\nNF O1\r\nMN\r\n";
    size_t used = 0;
    assert_int_equal(parse(&f, in, &used), MC_REPLY_DONE);
    assert_int_equal(used, strlen(in));
    assert_int_equal(f.ops[0].status, STORE_OK);
    assert_int_equal(f.ops[0].value, 42);
    assert_int_equal(f.ops[1].status, STORE_ERROR); /* a refusal under q */
    assert_true(f.seen[0] && f.seen[1] && !f.seen[3]);
    assert_false(f.x.unattributed);
}

static void test_incr_value_that_is_not_a_counter(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, MC_INCR);
    size_t used = 0;
    assert_int_equal(parse(&f, "VA 2 O0\r\nx1\r\nMN\r\n", &used), MC_REPLY_DONE);
    assert_int_equal(f.ops[0].status, STORE_ERROR);
    /* an incr never meets a long value: out of step */
    fx_init(&f, MC_INCR);
    char big[128];
    snprintf(big, sizeof(big), "VA 40 O0\r\n%040d\r\nMN\r\n", 0);
    assert_int_equal(parse(&f, big, &used), MC_REPLY_BAD);
}

/* Cut at every byte: nothing before the cut is lost, nothing after it is
 * guessed; fed the rest, the outcome is the same as in one piece. */
static void test_truncated_anywhere(void **state)
{
    (void)state;
    const char *in = "VA 2 O0\r\n42\r\nSERVER_ERROR out of memory\r\nHD O1\r\nMN\r\n";
    size_t len = strlen(in);
    for (size_t cut = 0; cut < len; cut++) {
        struct fx f;
        fx_init(&f, MC_INCR);
        size_t used = 0;
        assert_int_equal(mc_reply_parse(&f.x, in, cut, &used), MC_REPLY_MORE);
        assert_true(used <= cut);
        size_t used2 = 0;
        assert_int_equal(mc_reply_parse(&f.x, in + used, len - used, &used2), MC_REPLY_DONE);
        assert_int_equal(used + used2, len);
        assert_int_equal(f.ops[0].status, STORE_OK);
        assert_int_equal(f.ops[0].value, 42);
        assert_true(f.x.unattributed);
        assert_int_equal(f.ops[1].status, STORE_OK); /* HD: applied */
    }
}

static void test_add_and_delete(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, MC_ADD);
    size_t used = 0;
    assert_int_equal(parse(&f, "HD O0\r\nNS O1\r\nEX O3\r\nMN\r\n", &used), MC_REPLY_DONE);
    assert_int_equal(f.ops[0].status, STORE_OK);
    assert_int_equal(f.ops[1].status, STORE_EXISTS);
    assert_int_equal(f.ops[3].status, STORE_ERROR);
    fx_init(&f, MC_ADD);
    assert_int_equal(parse(&f, "VA 1 O0\r\n1\r\n", &used), MC_REPLY_BAD); /* ms sends no value */
    fx_init(&f, MC_DEL);
    assert_int_equal(parse(&f, "HD O0\r\nNF O1\r\nMN\r\n", &used), MC_REPLY_DONE);
    assert_int_equal(f.ops[0].status, STORE_OK);
    assert_int_equal(f.ops[1].status, STORE_NOTFOUND);
}

static void test_mget_values_blobs_and_misses(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, MC_MGET);
    size_t used = 0;
    assert_int_equal(parse(&f, "EN O0\r\nVA 3 O1\r\n123\r\nVA 5 O3\r\nhello\r\nMN\r\n", &used),
                     MC_REPLY_DONE);
    assert_int_equal(f.ops[0].status, STORE_OK);
    assert_false(f.ops[0].present);
    assert_int_equal(f.ops[1].value, 123);
    assert_true(f.ops[1].present);
    assert_string_equal(f.ops[3].blob, "hello");
    assert_int_equal(f.ops[3].bloblen, 5);
    free_blobs(&f);
}

/* A long value where a counter was asked for is skipped over, across
 * calls, and read as "not a counter". */
static void test_mget_oversized_value_skipped(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, MC_MGET);
    char in[256];
    int n = snprintf(in, sizeof(in), "VA 40 O1\r\n%040d\r\nMN\r\n", 7);
    size_t used = 0;
    size_t head = strlen("VA 40 O1\r\n") + 10;
    assert_int_equal(mc_reply_parse(&f.x, in, head, &used), MC_REPLY_MORE);
    assert_int_equal(used, head); /* taken: the rest of the block is skipped */
    assert_int_equal(f.x.skip, 32);
    size_t used2 = 0;
    assert_int_equal(mc_reply_parse(&f.x, in + used, (size_t)n - used, &used2), MC_REPLY_DONE);
    assert_int_equal(f.ops[1].status, STORE_ERROR);
    assert_int_equal(f.x.skip, 0);
}

static void test_garbled(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "XX O0\r\n",            /* unknown reply */
        "MN\n",                 /* bare LF */
        "\r\n",                 /* empty line */
        "HD\r\n",               /* no opaque */
        "HD O2\r\n",            /* another node's op */
        "HD O9\r\n",            /* no such op */
        "HD Ox\r\n",            /* opaque not a number */
        "VA x O0\r\n1\r\n",     /* length not a number */
        "VA 1 O0\r\n12\r\n",    /* block longer than its length */
        "VA 99999999999999999999 O0\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fx f;
        fx_init(&f, MC_INCR);
        size_t used = 0;
        assert_int_equal(parse(&f, bad[i], &used), MC_REPLY_BAD);
        for (size_t k = 0; k < NOPS; k++)
            assert_int_equal(f.ops[k].status, STORE_UNAVAILABLE); /* nothing guessed */
    }
    /* a line that never ends */
    struct fx f;
    fx_init(&f, MC_INCR);
    char *line = malloc(MC_REPLY_LINE_MAX + 1);
    assert_non_null(line);
    memset(line, 'H', MC_REPLY_LINE_MAX);
    line[MC_REPLY_LINE_MAX] = '\0';
    size_t used = 0;
    assert_int_equal(parse(&f, line, &used), MC_REPLY_BAD);
    assert_int_equal(mc_reply_parse(&f.x, line, MC_REPLY_LINE_MAX - 1, &used), MC_REPLY_MORE);
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incr_good),
        cmocka_unit_test(test_incr_value_that_is_not_a_counter),
        cmocka_unit_test(test_truncated_anywhere),
        cmocka_unit_test(test_add_and_delete),
        cmocka_unit_test(test_mget_values_blobs_and_misses),
        cmocka_unit_test(test_mget_oversized_value_skipped),
        cmocka_unit_test(test_garbled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
