#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>
#include <event2/buffer.h>

#include "snapshot.h"

static struct snapshot *build(uint64_t gen, const char *text)
{
    char *json = strdup(text);
    assert_non_null(json);
    return snapshot_build(gen, json, strlen(json));
}

static const char sample[] =
    "{\"event\":\"e\",\"generation\":9,\"generated_at\":\"2026-11-22T20:15:03.120Z\","
    "\"totals\":{\"answers\":3},"
    "\"questions\":[{\"id\":1,\"state\":\"open\",\"right_ratio\":0.6667,\"answers\":3},"
    "{\"id\":42,\"state\":\"not_open\",\"answers\":0}]}";

static void test_build_splits_questions(void **state)
{
    (void)state;
    struct snapshot *s = build(9, sample);
    assert_non_null(s);
    assert_int_equal(s->refs, 1);
    assert_int_equal(s->generation, 9);
    assert_int_equal(s->len, strlen(sample));
    assert_string_equal(s->json, sample);
    assert_int_equal(s->n, 2);
    size_t len = 0;
    const char *q = snapshot_question(s, 1, &len);
    assert_non_null(q);
    /* Re-serialised compactly, ratios at the aggregator's 4 digits. */
    assert_string_equal(q, "{\"id\":1,\"state\":\"open\",\"right_ratio\":0.6667,\"answers\":3}");
    assert_int_equal(len, strlen(q));
    assert_non_null(snapshot_question(s, 42, &len));
    assert_null(snapshot_question(s, 2, &len));
    /* 2026-11-22T20:15:03.120Z */
    assert_true(s->generated_ms == 1795378503120ull);
    assert_non_null(s->csv);
    assert_true(strncmp(s->csv, "question,", 9) == 0);
    snapshot_unref(s);
}

static void test_frame(void **state)
{
    (void)state;
    struct snapshot *s = build(12345, sample);
    assert_non_null(s);
    char *want = NULL;
    assert_true(asprintf(&want, "event: stats\nid: 12345\ndata: %s\n\n", sample) > 0);
    assert_int_equal(s->frame_len, strlen(want));
    assert_memory_equal(s->frame, want, s->frame_len);
    free(want);
    snapshot_unref(s);

    /* A pretty-printed snapshot still makes one data line: its line breaks
     * are between tokens, where a space means the same. */
    s = build(1, "{\n  \"questions\": [],\r\n  \"x\": \"a\\nb\"\n}");
    assert_non_null(s);
    const char *data = strstr(s->frame, "data: ");
    assert_non_null(data);
    const char *end = strchr(data, '\n');
    assert_int_equal((size_t)(end - s->frame), s->frame_len - 2);
    assert_string_equal(data, "data: {   \"questions\": [],    \"x\": \"a\\nb\" }\n\n");
    snapshot_unref(s);
}

static void test_invalid(void **state)
{
    (void)state;
    /* Freed on failure too (valgrind checks it). */
    assert_null(build(1, "not json"));
    assert_null(build(1, "{\"questions\":{}}"));
    assert_null(build(1, "[]"));
    struct snapshot *s = build(1, "{\"questions\":[],\"generated_at\":\"yesterday\"}");
    assert_non_null(s);
    assert_int_equal(s->generated_ms, 0);
    snapshot_unref(s);
    s = build(1, "{\"questions\":[],\"generated_at\":\"2026-11-22T20:15:03.120Zjunk\"}");
    assert_non_null(s);
    assert_int_equal(s->generated_ms, 0);
    snapshot_unref(s);
}

static void test_refcount_outlives_holder(void **state)
{
    (void)state;
    struct snapshot *s = build(3, sample);
    assert_non_null(s);
    struct evbuffer *a = evbuffer_new();
    struct evbuffer *b = evbuffer_new();
    assert_true(snapshot_add_to(s, a, s->frame, s->frame_len));
    assert_true(snapshot_add_to(s, b, s->json, s->len));
    assert_int_equal(s->refs, 3);
    /* The bytes are not copied: the buffer points into the snapshot. */
    assert_ptr_equal(evbuffer_pullup(b, -1), s->json);
    /* The holder lets go first; the buffers keep it alive. */
    snapshot_unref(s);
    assert_int_equal(s->refs, 2);
    assert_int_equal(evbuffer_get_length(a), s->frame_len);
    char head[13];
    evbuffer_copyout(a, head, 12);
    head[12] = '\0';
    assert_string_equal(head, "event: stats");
    evbuffer_free(a);
    assert_int_equal(s->refs, 1);
    evbuffer_free(b); /* the last reference: freed here (valgrind checks it) */
}

/* Every body gzip'd once at build (what Accept-Encoding: gzip gets), and an
 * ETag of the generation and the bytes. */
static char *gunzip(const char *gz, size_t len, size_t *out_len)
{
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    assert_non_null(out);
    z.next_in = (Bytef *)(uintptr_t)gz;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = z.total_out;
    inflateEnd(&z);
    return out;
}

/* A gzip'd stream is the gzip header, then fragments made one by one:
 * decoded as a whole it is the texts in order, each one whole as soon as
 * its fragment arrived (the full flush), with no trailer. */
static void test_deflate_fragments_stream(void **state)
{
    (void)state;
    static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    const char *texts[] = {"retry: 1000\n\n", "event: stats\nid: 1\ndata: {\"a\":1}\n\n",
                           ": heartbeat\n\n", "event: stats\nid: 2\ndata: {\"a\":2}\n\n"};
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 16 + 15), Z_OK);
    char out[512];
    size_t have = 0, want = 0;
    z.next_in = (Bytef *)(uintptr_t)header;
    z.avail_in = sizeof(header);
    z.next_out = (Bytef *)out;
    z.avail_out = sizeof(out);
    assert_int_equal(inflate(&z, Z_SYNC_FLUSH), Z_OK);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t zl = 0;
        char *frag = snapshot_deflate_fragment(texts[i], strlen(texts[i]), &zl);
        assert_non_null(frag);
        assert_true(zl > 0);
        z.next_in = (Bytef *)frag;
        z.avail_in = (uInt)zl;
        int rc = inflate(&z, Z_SYNC_FLUSH);
        assert_true(rc == Z_OK);
        assert_int_equal(z.avail_in, 0);
        want += strlen(texts[i]);
        have = sizeof(out) - z.avail_out;
        assert_int_equal(have, want); /* the whole text is out already */
        assert_memory_equal(out + have - strlen(texts[i]), texts[i], strlen(texts[i]));
        free(frag);
    }
    inflateEnd(&z);
}

static void test_gzip_and_etag(void **state)
{
    (void)state;
    struct snapshot *a = build(7, "{\"questions\":[{\"id\":1,\"answers\":5},{\"id\":2}]}");
    struct snapshot *b = build(7, "{\"questions\":[{\"id\":1,\"answers\":6},{\"id\":2}]}");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(strncmp(a->etag, "\"g7-", 4), 0);
    assert_int_equal(strlen(a->etag), 4 + 16 + 1);
    assert_string_not_equal(a->etag, b->etag); /* same generation, other bytes */
    size_t n = 0;
    char *plain = gunzip(a->json_gz, a->json_gz_len, &n);
    assert_int_equal(n, a->len);
    assert_memory_equal(plain, a->json, n);
    free(plain);
    plain = gunzip(a->csv_gz, a->csv_gz_len, &n);
    assert_int_equal(n, a->csv_len);
    assert_memory_equal(plain, a->csv, n);
    free(plain);
    struct snapshot_body q;
    assert_true(snapshot_question_body(a, 1, &q));
    plain = gunzip(q.gz, q.gz_len, &n);
    assert_int_equal(n, q.len);
    assert_memory_equal(plain, q.data, n);
    free(plain);
    assert_false(snapshot_question_body(a, 3, &q));
    snapshot_unref(a);
    snapshot_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_splits_questions),
        cmocka_unit_test(test_frame),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_refcount_outlives_holder),
        cmocka_unit_test(test_gzip_and_etag),
        cmocka_unit_test(test_deflate_fragments_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
