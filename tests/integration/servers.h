/*
 * Real servers for C integration tests: memcached (and later redis-server)
 * on 127.0.0.1 and a free port, stopped by PID. Every server started is also
 * stopped from an atexit handler, so a failing test (cmocka exits from an
 * assertion) leaves nothing running.
 */
#ifndef LT_TEST_SERVERS_H
#define LT_TEST_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum server_kind { SERVER_MEMCACHED, SERVER_REDIS };

struct server {
    enum server_kind kind;
    pid_t pid;     /* 0: not running */
    uint16_t port;
};

/* Starts a server on a free port (port 0) or on the given port (restart on
 * the same port), waits until it accepts connections (5 s at most). */
bool server_start(struct server *sv, enum server_kind kind, uint16_t port);

/* SIGTERM, then SIGKILL after 2 s; waits for the process. Idempotent. */
void server_stop(struct server *sv);

/* SIGKILL at once (a crash), waits for the process. */
void server_kill(struct server *sv);

/* "memcached://127.0.0.1:P1,127.0.0.1:P2" for n servers; buf >= 64 * n. */
void server_url(const struct server *const *svs, int n, const char *query, char *buf,
                size_t len);

/* Sends raw protocol text to the server and reads the reply until it ends
 * with `until` (or 2 s pass). Returns the reply length, -1 on error. */
int server_raw(const struct server *sv, const char *req, const char *until, char *reply,
               size_t len);

#endif
