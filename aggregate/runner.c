#include "runner.h"

#include "pool_record.h"

#include <stdbool.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define RUNNER_METRICS(X)                                                                          \
    X(RM_GENERATION, "livetally_aggregate_generation", GAUGE,                                      \
      "Generation of the last published snapshot")                                                 \
    X(RM_PASSES, "livetally_aggregate_passes_total", COUNTER, "Aggregation passes")               \
    X(RM_FAILED, "livetally_aggregate_failed_passes_total", COUNTER,                               \
      "Passes that published nothing (a store read or write failed)")                              \
    X(RM_PASS_DURATION, "livetally_aggregate_pass_duration_seconds", HISTOGRAM,                    \
      "Duration of the aggregation passes")                                                        \
    X(RM_PASS_SECONDS, "livetally_aggregate_pass_seconds", GAUGE, "Duration of the last pass")    \
    X(RM_KEYS_READ, "livetally_aggregate_keys_read", GAUGE, "Counter keys read in the last pass") \
    X(RM_KEYS_READ_TOTAL, "livetally_aggregate_keys_read_total", COUNTER,                          \
      "Counter keys read, summed over passes")                                                     \
    X(RM_KEYS, "livetally_aggregate_keys", GAUGE, "Counter keys of the event")                    \
    X(RM_SETTLED, "livetally_aggregate_questions_settled", GAUGE,                                  \
      "Closed questions whose sums are cached (their keys are not read any more)")                 \
    X(RM_BACKWARDS, "livetally_aggregate_backwards_total", COUNTER,                                \
      "Counters seen going backwards (store data loss)")                                           \
    X(RM_CHECK_FAILURES, "livetally_aggregate_check_failures_total", COUNTER,                      \
      "Passes whose breakdowns did not add up")                                                    \
    X(RM_NODE_RESETS, "livetally_aggregate_node_resets_total", COUNTER,                            \
      "Store nodes found back empty (a new incarnation and counters lower than before)")           \
    X(RM_KEYS_RESTORED, "livetally_aggregate_keys_restored_total", COUNTER,                        \
      "Counters written back to a node back empty by this aggregator (replicas=1)")                \
    X(RM_COUNTS_RESTORED, "livetally_aggregate_counts_restored_total", COUNTER,                    \
      "Counts those restores carried")                                                             \
    X(RM_RESTORES_LOST, "livetally_aggregate_restores_lost_total", COUNTER,                        \
      "Restores whose outcome is unknown, not sent again (those counts may be missing)")           \
    X(RM_KEYS_REPAIRED, "livetally_aggregate_keys_repaired_total", COUNTER,                        \
      "Counter copies raised to their replicas by read repair (replicas>=2)")                      \
    X(RM_REPAIR_BACKLOG, "livetally_aggregate_repair_backlog", GAUGE,                              \
      "Counter copies lower than their replicas after the last pass")                              \
    X(RM_COPIES_BEHIND, "livetally_aggregate_copies_behind", GAUGE,                                \
      "Copies lower than their counter's largest, on any node, in the last pass's questions")     \
    X(RM_NODES_DOWN, "livetally_aggregate_store_nodes_down", GAUGE,                                \
      "Store nodes the last pass could not read")

enum runner_metric { RUNNER_METRICS(METRIC_ENUM) RM_COUNT };
static const struct metric_def metric_defs[] = {RUNNER_METRICS(METRIC_DEF)};

struct agg_runner {
    struct aggregator *agg;     /* owned; touched only by the worker thread while running */
    struct worker *worker;
    struct event *timer;
    bool running;
    enum store_status last;     /* written by the pass, read in pass_done */
    struct aggregator_stats pass_stats; /* written by the worker thread */
    struct aggregator_stats stats;      /* loop thread's copy, for metrics */
    struct metrics_hist pass_hist;      /* loop thread */
    uint64_t keys_read_total;           /* loop thread */
    void (*final_done)(void *arg);
    void *final_arg;
    void (*on_publish)(void *arg);
    void *publish_arg;
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
    metrics_hist_add(&r->pass_hist, r->stats.pass_us);
    r->keys_read_total += r->stats.keys_read;
    if (r->last != STORE_OK)
        log_warn("aggregation pass failed status=%s", store_status_str(r->last));
    else if (r->on_publish)
        r->on_publish(r->publish_arg);
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
                                    struct store *store, const struct pool_view *pool,
                                    uint32_t interval_ms)
{
    struct agg_runner *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        store_close(store);
        return NULL;
    }
    r->agg = aggregator_create_pool(ef, pool);
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

void agg_runner_on_publish(struct agg_runner *r, void (*fn)(void *arg), void *arg)
{
    r->on_publish = fn;
    r->publish_arg = arg;
}

void agg_runner_describe_metrics(FILE *out)
{
    metrics_describe(out, metric_defs, RM_COUNT);
}

void agg_runner_write_metrics(struct agg_runner *r, struct evbuffer *out)
{
    const struct aggregator_stats *s = &r->stats;
    const struct metric_def *m = metric_defs;
    metrics_emit_u64(out, &m[RM_GENERATION], s->generation);
    metrics_emit_u64(out, &m[RM_PASSES], s->passes);
    metrics_emit_u64(out, &m[RM_FAILED], s->failed_passes);
    metrics_emit_hist(out, &m[RM_PASS_DURATION], &r->pass_hist);
    metrics_emit_f64(out, &m[RM_PASS_SECONDS], (double)s->pass_us / 1e6);
    metrics_emit_u64(out, &m[RM_KEYS_READ], s->keys_read);
    metrics_emit_u64(out, &m[RM_KEYS_READ_TOTAL], r->keys_read_total);
    metrics_emit_u64(out, &m[RM_KEYS], s->keys_total);
    metrics_emit_u64(out, &m[RM_SETTLED], s->questions_settled);
    metrics_emit_u64(out, &m[RM_BACKWARDS], s->warnings);
    metrics_emit_u64(out, &m[RM_CHECK_FAILURES], s->check_failures);
    metrics_emit_u64(out, &m[RM_NODE_RESETS], s->node_resets);
    metrics_emit_u64(out, &m[RM_KEYS_RESTORED], s->keys_restored);
    metrics_emit_u64(out, &m[RM_COUNTS_RESTORED], s->counts_restored);
    metrics_emit_u64(out, &m[RM_RESTORES_LOST], s->restores_lost);
    metrics_emit_u64(out, &m[RM_KEYS_REPAIRED], s->keys_repaired);
    metrics_emit_u64(out, &m[RM_REPAIR_BACKLOG], s->repair_backlog);
    metrics_emit_u64(out, &m[RM_COPIES_BEHIND], s->copies_behind);
    metrics_emit_u64(out, &m[RM_NODES_DOWN], s->nodes_down);
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
