/* The group commit on a real memcached, stopped without a drain (the
 * forced stop of ingest_free): every answer's reply must say what the store
 * holds. A batch written from the loop (store_incr_start) is finished, not
 * abandoned: its commands may already be applied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "commit.h"
#include "commit_support.h"
#include "country.h"
#include "eventfile.h"
#include "keys.h"
#include "servers.h"
#include "store.h"
#include "worker.h"
#include "util.h"

static const char EVENT_JSON[] = COMMIT_TEST_EVENT_JSON("tcm");

struct fixture {
    struct server mc;
    char url[128];
    struct eventfile ef;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    char err[256];
    assert_true(eventfile_parse(EVENT_JSON, strlen(EVENT_JSON), &f->ef, err, sizeof(err)));
    assert_true(server_start(&f->mc, SERVER_MEMCACHED, 0));
    snprintf(f->url, sizeof(f->url), "memcached://127.0.0.1:%u", (unsigned)f->mc.port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    server_stop(&f->mc);
    eventfile_free(&f->ef);
    free(f);
    return 0;
}

static void answer_ids(const struct eventfile *ef, int i, uint32_t ids[KEYS_PER_ANSWER])
{
    const struct event_question *q = &ef->questions[0];
    struct answer_counters a = {.question = q->id,
                                .option = (uint32_t)i % q->n_options,
                                .age_bucket = 1,
                                .country = country_lookup("gb", 2)};
    a.outcome = a.option == q->correct ? KEY_RIGHT : KEY_WRONG;
    keys_counters_for_answer(ef, 0, &a, ids);
}

/* Every increment of the event, all counters and shards. */
static uint64_t store_total(struct store *s, const struct eventfile *ef)
{
    uint64_t sum = 0;
    uint32_t n = keys_counter_count(ef);
    for (uint32_t id = 0; id < n; id++) {
        for (uint32_t sh = 1; sh <= keys_counter_shards(ef, id); sh++) {
            char key[KEY_MAX];
            size_t len = keys_counter_key(ef, id, sh, key);
            const char *kp = key;
            uint64_t v = 0;
            assert_int_equal(store_mget_u64(s, &kp, &len, 1, &v, NULL), STORE_OK);
            sum += v;
        }
    }
    return sum;
}

/* n answers (the first with a user when user_first), one loop turn to send
 * the batch out, then the stop ingest_free does. */
static void stop_mid_batch(struct fixture *f, bool user_first, struct replies *rp,
                           uint64_t *grew)
{
    char err[256];
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct store *store = store_open(f->url, err, sizeof(err));
    assert_non_null(store);
    struct store *reader = store_clone(store);
    struct store *loop_store = store_clone(store);
    uint64_t before = store_total(reader, &f->ef);
    struct worker *w = worker_start("test-store", store, base, 64);
    assert_non_null(w);
    struct commit_config cfg = {.flush_ms = 1, .deadline_ms = 2000, .max_batch_answers = 16384,
                                .max_waiting = 65536, .ttl_s = 3600};
    struct committer *c = committer_create(base, w, NULL, loop_store, &f->ef, &cfg);
    assert_non_null(c);
    uint32_t ids[KEYS_PER_ANSWER];
    const int n = 10;
    int i = 0;
    if (user_first) {
        /* The user's batch goes to the worker; the rest wait in the open one. */
        answer_ids(&f->ef, i++, ids);
        struct commit_user u = {.user = "fan-1", .question = 1, .right = false, .ms = 5};
        assert_int_equal(committer_submit(c, ids, &u, on_done, rp), COMMIT_ACCEPTED);
        util_sleep_ms(3);
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0); /* the flush timer */
    }
    for (; i < n; i++) {
        answer_ids(&f->ef, i, ids);
        assert_int_equal(committer_submit(c, ids, NULL, on_done, rp), COMMIT_ACCEPTED);
    }
    if (!user_first) {
        util_sleep_ms(3);
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0); /* written from the loop */
    }
    util_sleep_ms(50); /* the store has the commands; nobody read its replies */

    committer_stop(c);
    worker_stop(w);
    committer_free(c);
    store_close(loop_store);
    *grew = store_total(reader, &f->ef) - before;
    assert_int_equal(rp->ok + rp->unavailable + rp->duplicate, n);
    store_close(reader);
    event_base_free(base);
}

static void test_loop_batch_finished_at_stop(void **state)
{
    struct fixture *f = *state;
    struct replies rp = {0};
    uint64_t grew;
    stop_mid_batch(f, false, &rp, &grew);
    assert_int_equal(rp.ok, 10); /* they are in the store: 503 would invite a second count */
    assert_int_equal(grew, 10 * KEYS_PER_ANSWER);
}

static void test_no_loop_batch_after_stop(void **state)
{
    struct fixture *f = *state;
    struct replies rp = {0};
    uint64_t grew;
    stop_mid_batch(f, true, &rp, &grew);
    /* whatever went out was confirmed, whatever was refused never went */
    assert_int_equal(grew, (uint64_t)rp.ok * KEYS_PER_ANSWER);
    assert_int_equal(rp.duplicate, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_batch_finished_at_stop),
        cmocka_unit_test(test_no_loop_batch_after_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
