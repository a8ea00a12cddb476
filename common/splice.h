/*
 * Joins an accepted connection to another local socket and copies bytes
 * both ways until either side closes: how an httpd thread passes a
 * connection it does not serve (the dashboard, admin) to the evhttp server
 * of the main thread, which listens on a private unix socket. libevent 2.1
 * has no public call to give evhttp an already accepted socket.
 */
#ifndef LT_SPLICE_H
#define LT_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

/* The splices of one event loop, so that shutting down frees those still
 * open. request_timeout_ms (0: none): once the client has sent bytes, the
 * target must answer with some within this long, or the splice closes; so
 * a client that dribbles a request a byte at a time, which the target's
 * own per-read timeout never catches, is held to the same deadline as on
 * the fast path. A long reply (an SSE stream) is unaffected: each byte of
 * it answers. */
struct splice_set;
struct splice_set *splice_set_new(struct event_base *base, uint32_t request_timeout_ms);
/* Splices open (each holds a client connection). */
size_t splice_set_count(const struct splice_set *set);
/* Closes and frees every splice still open, then the set. */
void splice_set_free(struct splice_set *set);

/* Takes ownership of client_fd; prefix (copied) is sent to the target
 * before anything else. false (and client_fd closed) when the target cannot
 * be reached. The target is a unix socket; client (the client's address,
 * may be NULL) goes in the name of the socket that reaches it, so the
 * target can tell whom it serves (splice_client_address). */
bool splice_start(struct splice_set *set, int client_fd, const struct sockaddr *client,
                  socklen_t client_len, const struct sockaddr *target, socklen_t target_len,
                  const char *prefix, size_t prefix_len);

/* On the target's side of a splice's connection (fd): the client's
 * address splice_start gave. false when the peer is no splice's, or had
 * no address. */
bool splice_client_address(int fd, struct sockaddr_storage *out, socklen_t *out_len);

#endif
