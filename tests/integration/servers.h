/*
 * Real servers for C integration tests: memcached, redis-server and Redis
 * Cluster nodes on 127.0.0.1 and a free port, stopped by PID. Every server
 * started is also stopped from an atexit handler, so a failing test (cmocka
 * exits from an assertion) leaves nothing running. A cluster node keeps its
 * nodes.conf in a temporary directory of its own, removed when it stops.
 */
#ifndef LT_TEST_SERVERS_H
#define LT_TEST_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum server_kind { SERVER_MEMCACHED, SERVER_REDIS, SERVER_REDIS_CLUSTER };

struct server {
    enum server_kind kind;
    pid_t pid;     /* 0: not running */
    uint16_t port;
    char dir[64];  /* SERVER_REDIS_CLUSTER: its directory ("" otherwise) */
};

/* Starts a server on a free port (port 0) or on the given port (restart on
 * the same port), waits until it accepts connections (5 s at most). */
bool server_start(struct server *sv, enum server_kind kind, uint16_t port);

/* SIGTERM, then SIGKILL after 2 s; waits for the process. Idempotent. */
void server_stop(struct server *sv);

/* SIGKILL at once (a crash), waits for the process. */
void server_kill(struct server *sv);

/* SIGSTOP, then waits (2 s at most) until every thread of the server is
 * stopped: kill() returns before a running thread has stopped, and such a
 * thread could still answer the next request. A stopped server keeps its
 * sockets, so clients can still connect and send: nothing answers. */
bool server_pause(const struct server *sv);

/* SIGCONT. */
bool server_resume(const struct server *sv);

/* "memcached://127.0.0.1:P1,127.0.0.1:P2" for n servers ("redis://",
 * "redis-cluster://" after the first one's kind); buf >= 64 * n. */
void server_url(const struct server *const *svs, int n, const char *query, char *buf,
                size_t len);

/* Sends raw protocol text to the server and reads the reply until it ends
 * with `until` (or 2 s pass). Returns the reply length, -1 on error. */
int server_raw(const struct server *sv, const char *req, const char *until, char *reply,
               size_t len);

/* Makes a cluster of the n SERVER_REDIS_CLUSTER servers, all masters, the
 * slots split evenly (redis-cli --cluster create), and waits until every
 * node reports cluster_state:ok (20 s at most). */
bool server_cluster_create(const struct server *const *svs, int n);

/* Runs a command and waits for it (stdout and stderr to /dev/null unless
 * out is given: then up to outlen - 1 bytes of both, NUL-terminated).
 * Returns the exit status, -1 when it could not run. */
int server_run(const char *const *argv, char *out, size_t outlen);

#endif
