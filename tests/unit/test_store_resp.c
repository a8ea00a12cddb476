/* The Redis connection's calls that never wait (store_resp.h), over a
 * socketpair standing in for a server: a reply that arrives in pieces is
 * taken whole once its last piece is in, an array's elements each once and
 * its top-level type kept (CLUSTER SLOTS is read this way from an event
 * loop, and past 16 KiB it always comes in pieces). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_resp.h"

struct peer {
    struct resp_conn c;
    int server; /* our end of the pair: what the "server" writes */
};

static void peer_open(struct peer *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    memset(&p->c, 0, sizeof(p->c));
    assert_true(resp_connect_finish(&p->c, sv[0], 1000));
    p->server = sv[1];
}

static void peer_close(struct peer *p)
{
    resp_close(&p->c);
    close(p->server);
}

static void serve(struct peer *p, const char *bytes)
{
    size_t len = strlen(bytes);
    assert_int_equal(write(p->server, bytes, len), (ssize_t)len);
}

struct seen {
    int n;
    long long sum;
    int max_depth;
};

static void on_elem(void *arg, const int *path, int depth, enum resp_type type, const char *s,
                    size_t len, long long v)
{
    (void)path;
    (void)s;
    (void)len;
    struct seen *sn = arg;
    if (type == RESP_INTEGER) {
        sn->n++;
        sn->sum += v;
    }
    if (depth > sn->max_depth)
        sn->max_depth = depth;
}

static void test_array_in_pieces(void **state)
{
    (void)state;
    struct peer p;
    peer_open(&p);
    struct seen sn = {0};
    p.c.elem = on_elem;
    p.c.elem_arg = &sn;
    const char *pieces[] = {"*3\r\n:1\r\n", "*2\r\n:2\r", "\n:3\r\n", ":4\r\n"};
    for (size_t i = 0; i < 4; i++) {
        serve(&p, pieces[i]);
        assert_int_equal(resp_fill(&p.c), 1);
        enum resp_result res = resp_take(&p.c);
        if (i < 3) {
            assert_int_equal(res, RESP_PARTIAL);
            continue;
        }
        assert_int_equal(res, RESP_OK);
        assert_int_equal(p.c.reply.type, RESP_ARRAY);
        assert_int_equal(p.c.reply.integer, 3);
    }
    assert_int_equal(sn.n, 4);
    assert_int_equal(sn.sum, 10);
    assert_int_equal(sn.max_depth, 2);
    /* nothing more buffered; the next reply starts afresh */
    assert_int_equal(resp_take(&p.c), RESP_PARTIAL);
    serve(&p, "+OK\r\n");
    assert_int_equal(resp_fill(&p.c), 1);
    assert_int_equal(resp_take(&p.c), RESP_OK);
    assert_int_equal(p.c.reply.type, RESP_STATUS);
    assert_string_equal(p.c.reply.text, "OK");
    peer_close(&p);
}

static void test_scalars_in_pieces_and_the_end(void **state)
{
    (void)state;
    struct peer p;
    peer_open(&p);
    assert_int_equal(resp_fill(&p.c), 0); /* nothing yet */
    serve(&p, ":12");
    assert_int_equal(resp_fill(&p.c), 1);
    assert_int_equal(resp_take(&p.c), RESP_PARTIAL);
    serve(&p, "34\r\n$-1\r\n-MOVED 12 127.0.0.1:7001\r\n");
    assert_int_equal(resp_fill(&p.c), 1);
    assert_int_equal(resp_take(&p.c), RESP_OK);
    assert_int_equal(p.c.reply.type, RESP_INTEGER);
    assert_int_equal(p.c.reply.integer, 1234);
    assert_int_equal(resp_take(&p.c), RESP_OK);
    assert_int_equal(p.c.reply.type, RESP_NIL);
    assert_int_equal(resp_take(&p.c), RESP_OK);
    assert_int_equal(p.c.reply.type, RESP_ERROR);
    assert_string_equal(p.c.reply.text, "MOVED 12 127.0.0.1:7001");
    /* the server closes: the end is told, marked as a cut */
    close(p.server);
    p.server = -1;
    assert_int_equal(resp_fill(&p.c), -1);
    assert_true(p.c.cut);
    resp_close(&p.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_in_pieces),
        cmocka_unit_test(test_scalars_in_pieces_and_the_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
