/* The worker thread: order, threads, the queue bound, stop. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "store.h"
#include "util.h"
#include "worker.h"

#define MAX_JOBS 256

/* What the jobs and callbacks saw. The worker's mutex orders the job's
 * writes before the done callback that reads them; the gate and the atomic
 * count are what the main thread polls while the loop is not running. */
struct rec {
    struct store *store_seen[MAX_JOBS];
    pthread_t job_thread[MAX_JOBS];
    pthread_t done_thread[MAX_JOBS];
    int job_order[MAX_JOBS];
    int done_order[MAX_JOBS];
    atomic_int jobs_run;
    int dones;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool gate_open; /* guarded by lock: jobs with gated set wait for it */
    bool gate_waiting; /* guarded by lock: a gated job has started */

    struct worker *w; /* for callbacks that submit */
    int resubmits_ok;
    int resubmits_refused;
};

struct item {
    struct rec *r;
    int id;
    bool gated;
    bool resubmit; /* the done callback submits another job */
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
}

static void rec_destroy(struct rec *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
}

static void open_gate(struct rec *r)
{
    pthread_mutex_lock(&r->lock);
    r->gate_open = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void wait_gated_job_started(struct rec *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->gate_waiting)
        pthread_cond_wait(&r->cond, &r->lock);
    pthread_mutex_unlock(&r->lock);
}

static void job(struct store *store, void *arg)
{
    struct item *it = arg;
    struct rec *r = it->r;
    if (it->gated) {
        pthread_mutex_lock(&r->lock);
        r->gate_waiting = true;
        pthread_cond_broadcast(&r->cond);
        while (!r->gate_open)
            pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
    }
    int n = atomic_load(&r->jobs_run);
    r->store_seen[it->id] = store;
    r->job_thread[it->id] = pthread_self();
    r->job_order[n] = it->id;
    atomic_store(&r->jobs_run, n + 1);
}

static void noop_done(void *arg)
{
    (void)arg;
}

static void done(void *arg)
{
    struct item *it = arg;
    struct rec *r = it->r;
    r->done_thread[it->id] = pthread_self();
    r->done_order[r->dones++] = it->id;
    if (it->resubmit) {
        if (worker_submit(r->w, NULL, noop_done, NULL))
            r->resubmits_ok++;
        else
            r->resubmits_refused++;
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until *count reaches want; false on timeout. A short tick
 * keeps EVLOOP_ONCE from blocking past the deadline. */
static bool run_until(struct event_base *base, const int *count, int want, uint64_t timeout_ms)
{
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 5000};
    assert_non_null(t);
    event_add(t, &tv);
    uint64_t deadline = util_mono_ms() + timeout_ms;
    while (*count < want && util_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return *count >= want;
}

static struct event_base *new_base(void)
{
    struct event_config *cfg = event_config_new();
    assert_non_null(cfg);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    assert_non_null(base);
    return base;
}

static struct store *memory_store(void)
{
    char err[128];
    struct store *s = store_open("memory:", err, sizeof(err));
    assert_non_null(s);
    return s;
}

static void test_jobs_in_order_on_another_thread(void **state)
{
    (void)state;
    enum { N = 200 };
    struct rec r;
    rec_init(&r);
    struct item items[N];
    struct event_base *base = new_base();
    struct store *s = memory_store();
    struct worker *w = worker_start("order", s, base, N);
    assert_non_null(w);

    for (int i = 0; i < N; i++) {
        items[i] = (struct item){.r = &r, .id = i};
        assert_true(worker_submit(w, job, done, &items[i]));
    }
    /* Done callbacks wait for the loop, whatever the worker has finished. */
    assert_int_equal(r.dones, 0);
    assert_true(run_until(base, &r.dones, N, 10000));
    assert_int_equal(atomic_load(&r.jobs_run), N);
    assert_int_equal(worker_pending(w), 0);

    pthread_t me = pthread_self();
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.job_order[i], i);
        assert_int_equal(r.done_order[i], i);
        assert_true(r.store_seen[i] == s);
        assert_false(pthread_equal(r.job_thread[i], me));
        assert_true(pthread_equal(r.job_thread[i], r.job_thread[0])); /* one thread */
        assert_true(pthread_equal(r.done_thread[i], me));
    }
    worker_stop(w);
    event_base_free(base);
    rec_destroy(&r);
}

/* A NULL job still has its done callback run, in order with the others. */
static void test_null_job_done_in_order(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct item items[6];
    struct event_base *base = new_base();
    struct worker *w = worker_start("nulljob", NULL, base, 16);
    assert_non_null(w);
    for (int i = 0; i < 6; i++) {
        items[i] = (struct item){.r = &r, .id = i};
        assert_true(worker_submit(w, i % 2 ? NULL : job, done, &items[i]));
    }
    /* A job without a done callback is fine too. */
    assert_true(worker_submit(w, NULL, NULL, NULL));
    assert_true(run_until(base, &r.dones, 6, 10000));
    for (int i = 0; i < 6; i++)
        assert_int_equal(r.done_order[i], i);
    assert_int_equal(atomic_load(&r.jobs_run), 3);
    worker_stop(w);
    event_base_free(base);
    rec_destroy(&r);
}

/* max_jobs bounds everything submitted whose done has not run: queued,
 * running, and finished but not yet handed back. */
static void test_max_jobs_bound(void **state)
{
    (void)state;
    enum { MAX = 4 };
    struct rec r;
    rec_init(&r);
    struct item items[MAX + 2];
    struct event_base *base = new_base();
    struct worker *w = worker_start("bound", NULL, base, MAX);
    assert_non_null(w);

    for (int i = 0; i < MAX + 2; i++)
        items[i] = (struct item){.r = &r, .id = i, .gated = i == 0};
    for (int i = 0; i < MAX; i++)
        assert_true(worker_submit(w, job, done, &items[i]));
    wait_gated_job_started(&r);
    assert_int_equal(worker_pending(w), MAX);
    assert_false(worker_submit(w, job, done, &items[MAX]));
    assert_int_equal(worker_pending(w), MAX);

    /* Let every job finish, without running the loop: still full. */
    open_gate(&r);
    uint64_t deadline = util_mono_ms() + 10000;
    while (atomic_load(&r.jobs_run) < MAX && util_mono_ms() < deadline)
        usleep(1000);
    assert_int_equal(atomic_load(&r.jobs_run), MAX);
    assert_false(worker_submit(w, job, done, &items[MAX]));
    assert_int_equal(worker_pending(w), MAX);

    assert_true(run_until(base, &r.dones, MAX, 10000));
    assert_int_equal(worker_pending(w), 0);
    /* Room again. */
    assert_true(worker_submit(w, job, done, &items[MAX + 1]));
    assert_true(run_until(base, &r.dones, MAX + 1, 10000));
    assert_int_equal(r.done_order[MAX], MAX + 1);
    assert_int_equal(atomic_load(&r.jobs_run), MAX + 1); /* the refused one never ran */
    worker_stop(w);
    event_base_free(base);
    rec_destroy(&r);
}

static void test_zero_max_jobs_refuses_all(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct worker *w = worker_start("zero", NULL, base, 0);
    assert_non_null(w);
    assert_false(worker_submit(w, NULL, noop_done, NULL));
    assert_int_equal(worker_pending(w), 0);
    worker_stop(w);
    event_base_free(base);
}

/* worker_stop runs what is queued and calls every done callback on the
 * caller's thread before returning; a submit from such a callback is
 * refused (the worker is stopping). */
static void test_stop_runs_queued_jobs_and_dones(void **state)
{
    (void)state;
    enum { N = 8 };
    struct rec r;
    rec_init(&r);
    struct item items[N];
    struct event_base *base = new_base();
    struct store *s = memory_store();
    struct worker *w = worker_start("stop", s, base, N);
    assert_non_null(w);
    r.w = w;
    for (int i = 0; i < N; i++) {
        items[i] = (struct item){.r = &r, .id = i, .gated = i == 0, .resubmit = i == N - 1};
        assert_true(worker_submit(w, job, done, &items[i]));
    }
    wait_gated_job_started(&r);
    assert_int_equal(atomic_load(&r.jobs_run), 0);
    open_gate(&r);
    worker_stop(w); /* the loop never ran */

    assert_int_equal(atomic_load(&r.jobs_run), N);
    assert_int_equal(r.dones, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.job_order[i], i);
        assert_int_equal(r.done_order[i], i);
        assert_true(pthread_equal(r.done_thread[i], pthread_self()));
    }
    assert_int_equal(r.resubmits_ok, 0);
    assert_int_equal(r.resubmits_refused, 1);
    event_base_free(base);
    rec_destroy(&r);
}

/* While running, a done callback may submit the next job. */
static void test_submit_from_done_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct item it = {.r = &r, .id = 0, .resubmit = true};
    struct event_base *base = new_base();
    struct worker *w = worker_start("chain", NULL, base, 4);
    assert_non_null(w);
    r.w = w;
    assert_true(worker_submit(w, job, done, &it));
    assert_true(run_until(base, &r.dones, 1, 10000));
    assert_int_equal(r.resubmits_ok, 1);
    assert_int_equal(worker_pending(w), 1);
    uint64_t deadline = util_mono_ms() + 10000;
    while (worker_pending(w) > 0 && util_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(worker_pending(w), 0);
    worker_stop(w);
    event_base_free(base);
    rec_destroy(&r);
}

static void test_stop_idle_and_null(void **state)
{
    (void)state;
    worker_stop(NULL);
    struct event_base *base = new_base();
    struct worker *w = worker_start("idle", memory_store(), base, 1);
    assert_non_null(w);
    assert_int_equal(worker_pending(w), 0);
    worker_stop(w);
    event_base_free(base);
}

/* With no file descriptor left the worker cannot start: NULL, and the store
 * it was given is closed (valgrind shows a leak otherwise). */
static void test_start_fails_without_descriptors(void **state)
{
    (void)state;
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);
    assert_true(probe >= 0);
    close(probe);

    struct event_base *base = new_base();
    struct store *s = memory_store();
    /* Every descriptor below probe is in use: a limit of probe leaves none. */
    struct rlimit tight = {.rlim_cur = (rlim_t)probe, .rlim_max = old.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &tight) != 0) {
        store_close(s);
        event_base_free(base);
        skip();
    }
    struct worker *w = worker_start("nofd", s, base, 4);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_null(w);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_in_order_on_another_thread),
        cmocka_unit_test(test_null_job_done_in_order),
        cmocka_unit_test(test_max_jobs_bound),
        cmocka_unit_test(test_zero_max_jobs_refuses_all),
        cmocka_unit_test(test_stop_runs_queued_jobs_and_dones),
        cmocka_unit_test(test_submit_from_done_callback),
        cmocka_unit_test(test_stop_idle_and_null),
        cmocka_unit_test(test_start_fails_without_descriptors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
