#include "runner.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "store.h"
#include "util.h"
#include "worker.h"

struct agg_runner {
    struct aggregator *agg;     /* owned; touched only by the worker thread while running */
    struct worker *worker;
    struct event *timer;
    bool running;
    enum store_status last;     /* written by the pass, read in pass_done */
    struct aggregator_stats pass_stats; /* written by the worker thread */
    struct aggregator_stats stats;      /* loop thread's copy, for metrics */
    void (*final_done)(void *arg);
    void *final_arg;
};

static void pass_run(struct store *s, void *arg)
{
    struct agg_runner *r = arg;
    r->last = aggregator_pass(r->agg, s, util_wall_ms());
    aggregator_get_stats(r->agg, &r->pass_stats);
}

static void pass_done(void *arg)
{
    struct agg_runner *r = arg;
    r->running = false;
    r->stats = r->pass_stats;
    if (r->last != STORE_OK)
        log_warn("aggregation pass failed status=%s", store_status_str(r->last));
    if (r->final_done) {
        void (*fn)(void *) = r->final_done;
        r->final_done = NULL;
        fn(r->final_arg);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct agg_runner *r = arg;
    if (!r->running && worker_submit(r->worker, pass_run, pass_done, r))
        r->running = true;
}

struct agg_runner *agg_runner_start(struct event_base *base, const struct eventfile *ef,
                                    struct store *store, uint32_t interval_ms)
{
    struct agg_runner *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        store_close(store);
        return NULL;
    }
    r->agg = aggregator_create(ef);
    r->worker = worker_start("aggregate-store", store, base, 4);
    r->timer = event_new(base, -1, EV_PERSIST, on_timer, r);
    struct timeval tv = {.tv_sec = interval_ms / 1000,
                         .tv_usec = (suseconds_t)(interval_ms % 1000) * 1000};
    if (r->agg == NULL || r->worker == NULL || r->timer == NULL || event_add(r->timer, &tv) != 0) {
        agg_runner_stop(r);
        return NULL;
    }
    on_timer(-1, 0, r);
    return r;
}

void agg_runner_final_pass(struct agg_runner *r, void (*done)(void *arg), void *arg)
{
    r->final_done = done;
    r->final_arg = arg;
    if (r->running)
        return; /* the running pass may predate the last answers: run one more */
    if (worker_submit(r->worker, pass_run, pass_done, r))
        r->running = true;
    else
        done(arg);
}

void agg_runner_write_metrics(struct agg_runner *r, struct evbuffer *out)
{
    const struct aggregator_stats *s = &r->stats;
    evbuffer_add_printf(
        out,
        "# HELP livetally_aggregate_generation Generation of the last published snapshot\n"
        "# TYPE livetally_aggregate_generation gauge\n"
        "livetally_aggregate_generation %" PRIu64 "\n"
        "# HELP livetally_aggregate_passes_total Aggregation passes\n"
        "# TYPE livetally_aggregate_passes_total counter\n"
        "livetally_aggregate_passes_total %" PRIu64 "\n"
        "# HELP livetally_aggregate_failed_passes_total Passes that published nothing\n"
        "# TYPE livetally_aggregate_failed_passes_total counter\n"
        "livetally_aggregate_failed_passes_total %" PRIu64 "\n"
        "# HELP livetally_aggregate_keys_read Counter keys read in the last pass\n"
        "# TYPE livetally_aggregate_keys_read gauge\n"
        "livetally_aggregate_keys_read %" PRIu64 "\n"
        "# HELP livetally_aggregate_pass_seconds Duration of the last pass\n"
        "# TYPE livetally_aggregate_pass_seconds gauge\n"
        "livetally_aggregate_pass_seconds %.6f\n"
        "# HELP livetally_aggregate_backwards_total Counters seen going backwards (store data loss)\n"
        "# TYPE livetally_aggregate_backwards_total counter\n"
        "livetally_aggregate_backwards_total %" PRIu64 "\n"
        "# HELP livetally_aggregate_check_failures_total Passes whose breakdowns did not add up\n"
        "# TYPE livetally_aggregate_check_failures_total counter\n"
        "livetally_aggregate_check_failures_total %" PRIu64 "\n",
        s->generation, s->passes, s->failed_passes, s->keys_read, (double)s->pass_us / 1e6,
        s->warnings, s->check_failures);
}

void agg_runner_stop(struct agg_runner *r)
{
    if (r == NULL)
        return;
    if (r->timer)
        event_free(r->timer);
    worker_stop(r->worker);
    aggregator_free(r->agg);
    free(r);
}
