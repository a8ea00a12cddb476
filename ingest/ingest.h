/*
 * The ingest API (API.md section 3) independent of the HTTP server that
 * carries it: validation, question state, group commit, admin open/close.
 * One ingest per event loop thread; the instances of a process share an
 * ingest_shared (question states, the draining flag, published metrics).
 */
#ifndef LT_INGEST_H
#define LT_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "commit.h"
#include "eventfile.h"
#include "httpd.h"

struct event_base;
struct evbuffer;
struct store;

#define INGEST_MAX_TRUSTED_PROXIES 16
#define INGEST_ADDR_MAX 46 /* INET6_ADDRSTRLEN */

struct ingest_config {
    const char *admin_token;   /* (ref) NULL: admin API disabled */
    struct commit_config commit;
    uint32_t state_refresh_ms; /* how stale a question state may get (one instance refreshes) */
    /* Peers whose X-Forwarded-For names the client (the load balancer):
     * admin guessing is slowed per that client, not per the proxy. Numeric
     * addresses as inet_ntop writes them. */
    char trusted_proxies[INGEST_MAX_TRUSTED_PROXIES][INGEST_ADDR_MAX];
    size_t n_trusted_proxies;
};

/* --trusted-proxy ADDR[,ADDR...]: numeric IPv4 or IPv6 addresses, added to
 * ic's list. false and a message when one is not an address or there are
 * more than INGEST_MAX_TRUSTED_PROXIES. */
bool ingest_parse_trusted_proxies(const char *list, struct ingest_config *ic, char *err,
                                  size_t errlen);

/* What every instance of a process shares. */
struct ingest_shared;
struct ingest_shared *ingest_shared_create(const struct eventfile *ef);
void ingest_shared_free(struct ingest_shared *sh);
void ingest_shared_set_draining(struct ingest_shared *sh);
bool ingest_shared_draining(const struct ingest_shared *sh);
/* Leaving: /healthz says draining, answers are still taken (the drain
 * delay). Healthy: neither leaving nor draining. */
void ingest_shared_set_leaving(struct ingest_shared *sh);
bool ingest_shared_healthy(const struct ingest_shared *sh);
/* Prometheus text of every instance's last published figures. */
void ingest_shared_write_metrics(struct ingest_shared *sh, struct evbuffer *out);

/* One request, whatever server carried it. Strings NUL-terminated. */
struct ingest_request {
    enum httpd_method method;
    const char *path;
    const char *content_type;
    const char *authorization;
    const char *body;
    size_t body_len;
    bool too_large;
    const struct sockaddr *peer; /* the connection's peer; NULL if unknown */
    const char *forwarded_for;   /* the last X-Forwarded-For header; NULL when absent */
};

/* Called exactly once per served request, maybe later, on the instance's
 * loop thread. body is JSON (or empty for 204); extra_headers are complete
 * header lines or NULL. */
typedef void (*ingest_reply_fn)(void *ctx, int status, const char *body, size_t len,
                                const char *extra_headers);

struct ingest;

/* GET /healthz: 200 while serving, 503 from the stop signal on; the body
 * says so and what the store looks like from here: "store" "reachable"
 * when the last question state read (every 50 ms) got its answer, and for
 * pools the nodes and those in their backoff. A store that fails does not
 * turn /healthz 503, on purpose: a load balancer would then take out every
 * node at once, and bring them back only after its rise checks, while the
 * nodes answer 503 backend_unavailable with Retry-After by themselves and
 * take answers again the moment the store does. Writes the body
 * (NUL-terminated) and returns the status. */
int ingest_health(struct ingest *ig, char *body, size_t len);

/* ef and shared are borrowed; store is owned from here on (it goes to the
 * instance's store thread). The first instance created with refresher=true
 * keeps the shared question states fresh. NULL and a message on failure. */
struct ingest *ingest_create(struct event_base *base, const struct eventfile *ef,
                             struct ingest_shared *shared, bool refresher, struct store *store,
                             const struct ingest_config *cfg, char *err, size_t errlen);

/* Serves the request if its path is the ingest API's (answers, admin); false
 * otherwise, and reply is not called. */
bool ingest_serve(struct ingest *ig, const struct ingest_request *r, ingest_reply_fn reply,
                  void *ctx);

/* Refuses new answers from now on (503 draining), writes everything pending,
 * calls drained once nothing is. */
void ingest_drain(struct ingest *ig, void (*drained)(void *arg), void *arg);

/* --describe-metrics: the ingest's metric definitions. */
void ingest_describe_metrics(FILE *out);

/* Copies this instance's figures where ingest_shared_write_metrics reads them. */
void ingest_publish_stats(struct ingest *ig, const struct httpd_stats *hs);

/* Stops the store thread (running what is queued: every waiting request is
 * answered) and frees. */
void ingest_free(struct ingest *ig);

#endif
