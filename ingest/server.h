/*
 * The ingest process's threads. Every fast thread has its own event loop,
 * its own listening socket on the shared port (SO_REUSEPORT: the kernel
 * spreads the connections), its own httpd, ingest instance and store
 * thread: nothing is locked on the request path. The main thread runs an
 * evhttp server that the fast threads hand every connection whose first
 * request is not an answer (admin, health, metrics, and in livetally the
 * dashboard); it serves the whole API as well, only slower.
 *
 *   client -> fast thread: "POST /v1/answers" ? httpd + ingest : hand over -> main: evhttp
 */
#ifndef LT_SERVER_H
#define LT_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "eventfile.h"
#include "httpd.h"
#include "ingest.h"
#include "pool_record.h"

struct event_base;
struct evhttp_request;
struct evbuffer;
struct store;

struct ingest_server_config {
    const char *listen;         /* HOST:PORT */
    uint32_t threads;           /* fast threads */
    struct ingest_config ic;
    struct httpd_config hc;
    uint32_t http_timeout_s;    /* the evhttp side */
    const char *binary;         /* livetally_build_info's binary label */
    struct pool_view pool;      /* set by the option parser's store check */
};

/* Requests the ingest API does not serve (livetally: the dashboard). */
struct ingest_server_extra {
    bool (*route)(struct evhttp_request *req, const char *path, void *arg);
    void (*metrics)(struct evbuffer *out, void *arg);
    void *arg;
};

struct ingest_server;

/* The defaults of API.md and the README (threads: the number of cores). */
void ingest_server_defaults(struct ingest_server_config *sc);

/* Starts the threads. store is a template: each thread gets a clone; it is
 * owned from here on and used by the main thread's instance. */
struct ingest_server *ingest_server_start(struct event_base *main_base,
                                          const struct eventfile *ef, struct store *store,
                                          const struct ingest_server_config *cfg,
                                          const struct ingest_server_extra *extra, char *err,
                                          size_t errlen);

/* SIGTERM: healthz 503, answers 503 draining, every thread writes what is
 * pending; drained(arg) runs on the main thread once all have. */
void ingest_server_drain(struct ingest_server *s, void (*drained)(void *arg), void *arg);
bool ingest_server_draining(const struct ingest_server *s);
/* Before a drain: /healthz answers 503 draining while answers are still
 * taken, so a load balancer's checks take the node out before its listener
 * closes. */
void ingest_server_leave(struct ingest_server *s);

/* Stops the threads (answering what still waits) and frees. */
void ingest_server_free(struct ingest_server *s);

/* What a serving binary does before start: load the event file and the admin
 * token, open the store, finish sc (TTL, token, HTTP deadlines). On failure
 * prints one line prefixed with prog and returns false (exit 2). *token and
 * *store are the caller's to free. */
bool ingest_server_load(const char *prog, const char *event_path, const char *token_path,
                        const char *backend, struct ingest_server_config *sc,
                        struct eventfile *ef, char **token, struct store **store);

/* Called once everything is drained; calls finish(finish_arg) when its own
 * last work (livetally: a final snapshot) is done. */
typedef void (*ingest_after_drain_fn)(void *arg, void (*finish)(void *), void *finish_arg);

/* Holds SIGTERM and SIGINT back until ingest_server_run can take them: call
 * first thing, before any thread exists (threads inherit the mask), so a
 * signal during start-up waits instead of killing the process undrained. */
void ingest_server_hold_signals(void);

/* Runs the main loop until SIGTERM/SIGINT has drained everything (0), or a
 * second signal during the drain or the drain deadline (drain_timeout_s
 * from the drain's start) stops it first (1). The first signal makes
 * /healthz 503 for drain_delay_ms (ingest_server_leave) before the drain
 * begins; a second one during that delay begins it at once. */
int ingest_server_run(struct ingest_server *s, struct event_base *base, uint32_t drain_delay_ms,
                      uint32_t drain_timeout_s, ingest_after_drain_fn after_drain, void *arg);

#endif
