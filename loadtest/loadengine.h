/*
 * The request engine: T threads, each with its own event_base
 * (EVENT_BASE_FLAG_NOLOCK | PRECISE_TIMER) and its share of N keep-alive
 * connections, sending POST /v1/answers with an optional pipeline depth.
 *
 * Open loop (the default): arrival m has an intended send time from the
 * profile or the replay file; thread i sends m = i, i+T, ...; latency is
 * measured from the intended time, so when the target (or the generator)
 * falls behind, the wait shows in the latency rather than vanishing
 * (no coordinated omission). The backlog is implicit: an arrival that is due
 * waits for a free connection slot without taking memory.
 *
 * Closed loop (--max): every slot is refilled as soon as its reply arrives;
 * latency is then from the actual send. For comparing with wrk.
 *
 * --retry, as the phone app does: a try that ends in 503 (after its
 * Retry-After, at most LOADENGINE_RETRY_AFTER_MAX_US), or, for an answer
 * with a user, in 502/504 (a load balancer) or with its connection, is
 * sent again with the same body after a jittered exponential backoff, up
 * to the deadline; a 409 duplicate_answer on such a retry means an earlier
 * try was counted (the user's marker is there). An answer without a user
 * is not resent after a lost connection or a 503 unconfirmed (DESIGN.md
 * guarantee 7: it may have been counted, and a resend could count it
 * twice); both are "maybe counted" for --verify. A 503 backend_unavailable
 * sent nothing and is resent. Latency is from the first try's intended time.
 *
 * Each thread owns its counters, histograms and tally; the control thread
 * reads published counters and swaps the per-interval histogram under a
 * mutex once a second; the rest is merged after join.
 */
#ifndef LT_LOADENGINE_H
#define LT_LOADENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loadhist.h"
#include "loadhttp.h"
#include "loadprofile.h"
#include "loadreplay.h"
#include "loadsynth.h"
#include "loadtally.h"

#define LOADENGINE_MAX_THREADS 64
#define LOADENGINE_MAX_CONNECTIONS 10000
#define LOADENGINE_MAX_PIPELINE 256
#define LOADENGINE_ERR_KINDS 32
#define LOADENGINE_RETRY_MIN_US 50000u       /* first backoff; doubles per try */
#define LOADENGINE_RETRY_MAX_US 2000000u     /* backoff cap */
#define LOADENGINE_RETRY_AFTER_MAX_US 5000000u /* Retry-After honoured up to this */

struct loadengine_config {
    const struct loadurl *target;     /* ref, resolved */
    uint32_t threads;                 /* 1..LOADENGINE_MAX_THREADS, <= connections */
    uint32_t connections;
    uint32_t pipeline;                /* requests in flight per connection */
    uint64_t timeout_us;              /* per request, from its send */
    /* exactly one source of arrivals: */
    const struct loadprofile *profile; /* open loop, bodies from synth */
    const struct loadreplay *replay;   /* open loop, recorded bodies and times */
    bool closed_loop;                  /* --max, bodies from synth */
    uint64_t duration_us, requests;    /* closed loop bounds (0 = none) */
    double replay_speedup;             /* >= 1 */
    const struct loadsynth *synth;     /* ref, for profile and closed loop */
    bool gate;                         /* burst b waits for loadengine_allow(> b) */
    const char *record_path;           /* NULL: no recording */
    uint32_t n_questions;              /* the event's, for the tally (0 without event) */
    struct loadtally_fans *fans;       /* ref, may be NULL: users' acknowledged right answers */
    FILE *results;                     /* ref, may be NULL: a CSV line per request sent
                                        * (loadengine_results_header) */
    bool retry;                        /* --retry: resend like the app (below) */
    uint64_t retry_deadline_us;        /* from the first try's intended time */
    uint64_t seed;
};

/* Failures by HTTP status and "error" code; status 0 is the client side:
 * connection_closed, timeout, bad_response, interrupted, connect_failed
 * (the requests a connection had in flight when it ended). */
struct loadengine_err {
    int status;
    char code[LOADHTTP_ERROR_MAX];
    uint64_t count;
};

struct loadengine_errs {
    struct loadengine_err e[LOADENGINE_ERR_KINDS];
    uint32_t n;
    uint64_t other; /* kinds past the table */
};

void loadengine_errs_add(struct loadengine_errs *t, int status, const char *code, uint64_t n);

struct loadengine_progress {
    uint64_t sent, acked, errors;
};

struct loadengine_result {
    uint64_t sent;          /* requests written (or queued to write) */
    uint64_t completed;     /* responses received */
    uint64_t acked;         /* 202 */
    uint64_t errors;        /* every other response, and requests lost with a connection */
    uint64_t indeterminate; /* of those: a try in flight when a connection died (may have counted) */
    uint64_t counted_earlier; /* --retry: 409 duplicate_answer on a retry (in tally, not in acked) */
    uint64_t retries;       /* --retry: tries sent again */
    struct loadengine_errs retried; /* --retry: what the tries that were sent again ended in */
    uint64_t unsent;        /* due but never sent: the run was stopped or the target gone */
    uint64_t first_send_us, last_reply_us; /* monotonic; 0 when none */
    uint64_t connects;      /* connections opened, reconnects included */
    uint64_t connect_failures;
    struct loadhist latency; /* every response, us */
    struct loadtally tally;   /* the answers counted for sure: 202s, and retries' 409
                               * duplicate_answer after 503s only */
    struct loadtally maybe;   /* the answers maybe counted: a try lost with its
                               * connection, then no 202 (a 409 on a retry, or none) */
    uint64_t maybe_counted;   /* how many */
    struct loadengine_errs errs;
};
void loadengine_result_free(struct loadengine_result *r);

/* The first line of a results file. Each request's line follows, written
 * by its thread when the request ends (a reply, or its connection lost),
 * so lines come in completion order per thread, not sorted. */
#define LOADENGINE_RESULTS_HEADER "intended_us,latency_us,status,error,bytes\n"

struct loadengine;

/* Connects (at least one connection must succeed), starts the threads and
 * returns once every thread is ready; the schedule starts a few ms later. */
struct loadengine *loadengine_start(const struct loadengine_config *cfg, char *err,
                                    size_t errlen);

/* Monotonic time (us) of arrival time 0. */
uint64_t loadengine_start_us(const struct loadengine *e);

/* Lets bursts 0..n-1 be sent (the gate of a concert). */
void loadengine_allow(struct loadengine *e, uint32_t n);

/* Stops sending; requests in flight get a short grace to finish. */
void loadengine_stop(struct loadengine *e);

/* Every thread has finished its schedule and its requests in flight. */
bool loadengine_finished(const struct loadengine *e);
/* With --record: an admin event into the recording, at its intended time
 * (us from arrival time 0). The control thread's; no worker writes it. */
void loadengine_record_admin(struct loadengine *e, uint64_t t_us, uint32_t question, bool open);

/* Counters so far, and the latencies since the previous call merged into
 * interval (then cleared on the threads' side). */
void loadengine_progress(struct loadengine *e, struct loadengine_progress *p,
                         struct loadhist *interval);

/* Waits for the threads, merges their results into r (owned by the caller,
 * loadengine_result_free) and frees the engine. false: out of memory, or the
 * recording could not be written (err says). r is filled either way. */
bool loadengine_finish(struct loadengine *e, struct loadengine_result *r, char *err,
                       size_t errlen);

#endif
