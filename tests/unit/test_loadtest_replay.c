/* Record and replay: parts merged by time, the file read back byte for
 * byte, lines checked with a reason, keys worked out from the bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "eventfile.h"
#include "loadreplay.h"
#include "util.h"

static const char event_json[] =
    "{\"event\":\"replay\",\"questions\":["
    "{\"id\":3,\"text\":\"a\",\"options\":[\"x\",\"y\",\"z\"],\"correct\":1}]}";

struct fixture {
    struct eventfile ef;
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    if (f == NULL || !eventfile_parse(event_json, strlen(event_json), &f->ef, err, sizeof(err)))
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/lt-replay-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/run.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    loadrecord_remove_parts(f->path, 4);
    rmdir(f->dir);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

static void test_record_merge_load_round_trip(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct loadrecord r0, r1;
    assert_true(loadrecord_open(&r0, f->path, 0, err, sizeof(err)));
    assert_true(loadrecord_open(&r1, f->path, 1, err, sizeof(err)));
    /* two threads, interleaved times, one tie */
    const char *b[] = {
        "{\"question\":3,\"answer\":1,\"age\":20,\"country\":\"uk\"}",
        "{\"question\":3,\"answer\":0,\"age\":70}",
        "{\"question\":3,\"answer\":2,\"age\":15,\"country\":\"zz\",\"user\":\"fan-1\"}",
        "{\"question\":4,\"answer\":0,\"age\":30}",
        "{\"question\":3,\"answer\":1,\"age\":131}",
    };
    loadrecord_write(&r0, 0, b[0], strlen(b[0]));
    loadrecord_write(&r1, 5, b[1], strlen(b[1]));
    loadrecord_write(&r0, 10, b[2], strlen(b[2]));
    loadrecord_write(&r1, 10, b[3], strlen(b[3]));
    loadrecord_write(&r0, 2000000, b[4], strlen(b[4]));
    assert_int_equal(r0.lines, 3);
    assert_true(loadrecord_close(&r0, err, sizeof(err)));
    assert_true(loadrecord_close(&r1, err, sizeof(err)));
    assert_true(loadrecord_merge(f->path, 2, err, sizeof(err)));
    /* the parts are gone */
    char part[160];
    snprintf(part, sizeof(part), "%s.part0", f->path);
    assert_int_not_equal(access(part, F_OK), 0);

    struct loadreplay rp;
    assert_true(loadreplay_load(f->path, &f->ef, &rp, err, sizeof(err)));
    assert_int_equal(rp.n, 5);
    const uint64_t times[] = {0, 5, 10, 10, 2000000};
    const char *order[] = {b[0], b[1], b[2], b[3], b[4]};
    for (uint64_t i = 0; i < rp.n; i++) {
        assert_int_equal(rp.e[i].t_us, times[i]);
        assert_int_equal(rp.e[i].len, strlen(order[i]));
        assert_memory_equal(rp.text + rp.e[i].off, order[i], rp.e[i].len);
    }
    /* keys by the ingest's rules */
    assert_true(rp.e[0].key.valid);
    assert_int_equal(rp.e[0].key.country, country_lookup("gb", 2)); /* uk is gb */
    assert_true(rp.e[0].key.right);
    assert_int_equal(rp.e[0].key.bucket, 1); /* 18-24 */
    assert_true(rp.e[1].key.valid);
    assert_int_equal(rp.e[1].key.country, COUNTRY_UNKNOWN); /* no field */
    assert_false(rp.e[1].key.right);
    assert_int_equal(rp.e[2].key.country, COUNTRY_UNKNOWN); /* unassigned code */
    assert_int_equal(rp.e[2].key.option, 2);
    assert_false(rp.e[3].key.valid); /* no question 4 */
    assert_false(rp.e[4].key.valid); /* age out of range */
    loadreplay_free(&rp);

    /* without an event file the bodies load, without keys */
    assert_true(loadreplay_load(f->path, NULL, &rp, err, sizeof(err)));
    assert_false(rp.e[0].key.valid);
    loadreplay_free(&rp);
}

static void test_parse_lines(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *line;
        bool ok;
        const char *body;
    } cases[] = {
        {"{\"t_us\":1,\"body\":{\"question\":3,\"answer\":1,\"age\":2}}", true,
         "{\"question\":3,\"answer\":1,\"age\":2}"},
        /* re-serialised compactly, key order kept */
        {"{ \"body\" : { \"age\" : 2 , \"question\" : 3 } , \"t_us\" : 7 }", true,
         "{\"age\":2,\"question\":3}"},
        {"{\"t_us\":0,\"raw\":\"{not json\"}", true, "{not json"},
        {"{\"t_us\":-1,\"body\":{}}", false, NULL},
        {"{\"t_us\":1.5,\"body\":{}}", false, NULL},
        {"{\"body\":{\"a\":1}}", false, NULL},
        {"{\"t_us\":1}", false, NULL},
        {"{\"t_us\":1,\"body\":[1]}", false, NULL},
        {"{\"t_us\":1,\"body\":{},\"raw\":\"x\"}", false, NULL},
        {"{\"t_us\":1,\"raw\":\"\"}", false, NULL},
        {"{\"t_us\":1,\"raw\":5}", false, NULL},
        {"[1,2]", false, NULL},
        {"{\"t_us\":1,\"t_us\":2,\"body\":{}}", false, NULL},
        {"not json", false, NULL},
        {"{\"t_us\":1125899906842625,\"body\":{\"a\":1}}", false, NULL},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        char body[256];
        size_t blen = 0;
        uint64_t t = 0;
        struct loadtally_key key;
        char err[160] = "";
        bool ok = loadreplay_parse_line(cases[i].line, strlen(cases[i].line), &f->ef, &t, body,
                                        sizeof(body), &blen, &key, err, sizeof(err));
        if (ok != cases[i].ok) {
            print_error("case %zu: %s -> %d (%s)\n", i, cases[i].line, ok, err);
            fail();
        }
        if (ok) {
            assert_int_equal(blen, strlen(cases[i].body));
            assert_memory_equal(body, cases[i].body, blen);
        } else {
            assert_true(err[0] != '\0');
        }
    }
    /* a body over the caller's buffer */
    char small[4];
    size_t blen;
    uint64_t t;
    struct loadtally_key key;
    char err[160];
    const char *line = "{\"t_us\":1,\"raw\":\"12345\"}";
    assert_false(loadreplay_parse_line(line, strlen(line), NULL, &t, small, sizeof(small), &blen,
                                       &key, err, sizeof(err)));
}

static void test_load_errors_name_the_line(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct loadreplay rp;
    write_file(f->path, "{\"t_us\":1,\"raw\":\"a\"}\n\n{\"t_us\":2,\"body\":5}\n");
    assert_false(loadreplay_load(f->path, NULL, &rp, err, sizeof(err)));
    assert_non_null(strstr(err, ":3:"));
    assert_null(rp.e);

    write_file(f->path, "\n\n");
    assert_false(loadreplay_load(f->path, NULL, &rp, err, sizeof(err)));
    assert_non_null(strstr(err, "no request"));

    assert_false(loadreplay_load("/nonexistent/run.jsonl", NULL, &rp, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/run.jsonl"));

    /* unsorted input is sorted, ties keep the file order; CRLF is accepted */
    write_file(f->path, "{\"t_us\":9,\"raw\":\"c\"}\r\n{\"t_us\":3,\"raw\":\"a\"}\n"
                        "{\"t_us\":9,\"raw\":\"d\"}\n{\"t_us\":3,\"raw\":\"b\"}\n");
    assert_true(loadreplay_load(f->path, NULL, &rp, err, sizeof(err)));
    assert_int_equal(rp.n, 4);
    const char want[] = "abcd";
    for (int i = 0; i < 4; i++)
        assert_int_equal(rp.text[rp.e[i].off], want[i]);
    assert_int_equal(rp.max_body, 1);
    loadreplay_free(&rp);
}

/* Admin events: recorded in a part of their own, merged by time with the
 * answers, loaded apart from them (sorted, ties in file order); a bad
 * admin line names its line, and a body with "admin" in it is a body. */
static void test_admin_events(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct loadrecord r0, ra;
    assert_true(loadrecord_open(&r0, f->path, 0, err, sizeof(err)));
    assert_true(loadrecord_open(&ra, f->path, 1, err, sizeof(err)));
    const char *b = "{\"question\":3,\"answer\":1,\"age\":20,\"user\":\"admin\"}";
    loadrecord_write_admin(&ra, 0, 3, true);
    loadrecord_write(&r0, 1000, b, strlen(b));
    loadrecord_write(&r0, 2000, b, strlen(b));
    loadrecord_write_admin(&ra, 3000, 3, false);
    loadrecord_write_admin(&ra, 3000, 7, true);
    assert_true(loadrecord_close(&r0, err, sizeof(err)));
    assert_true(loadrecord_close(&ra, err, sizeof(err)));
    assert_true(loadrecord_merge(f->path, 2, err, sizeof(err)));
    struct loadreplay rp;
    assert_true(loadreplay_load(f->path, &f->ef, &rp, err, sizeof(err)));
    assert_int_equal(rp.n, 2);
    assert_true(rp.e[0].key.valid);
    assert_int_equal(rp.n_admin, 3);
    assert_int_equal(rp.admin[0].t_us, 0);
    assert_int_equal(rp.admin[0].question, 3);
    assert_true(rp.admin[0].open);
    assert_int_equal(rp.admin[1].t_us, 3000);
    assert_false(rp.admin[1].open);
    assert_int_equal(rp.admin[2].question, 7);
    assert_true(rp.admin[2].open);
    loadreplay_free(&rp);

    static const char *const bad[] = {
        "{\"t_us\":1,\"admin\":{\"question\":3,\"action\":\"toggle\"}}",
        "{\"t_us\":1,\"admin\":{\"question\":0,\"action\":\"open\"}}",
        "{\"t_us\":1,\"admin\":{\"action\":\"open\"}}",
        "{\"t_us\":-1,\"admin\":{\"question\":3,\"action\":\"open\"}}",
        "{\"admin\":{\"question\":3,\"action\":\"open\"}}",
        "{\"t_us\":1,\"admin\":\"open 3\"}",
        "{\"t_us\":1,\"admin\":{\"question\":3,\"action\":\"open\"},\"body\":{}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[300];
        snprintf(text, sizeof(text), "{\"t_us\":0,\"raw\":\"x\"}\n%s\n", bad[i]);
        write_file(f->path, text);
        if (loadreplay_load(f->path, NULL, &rp, err, sizeof(err)) || strstr(err, ":2:") == NULL) {
            print_error("bad admin line %zu: %s\n", i, err);
            fail();
        }
    }
    struct loadreplay_admin a;
    const char *raw = "{\"t_us\":1,\"raw\":\"admin\"}";
    assert_int_equal(loadreplay_parse_admin(raw, strlen(raw), &a, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_merge_load_round_trip),
        cmocka_unit_test(test_parse_lines),
        cmocka_unit_test(test_load_errors_name_the_line),
        cmocka_unit_test(test_admin_events),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
