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
#include <sys/socket.h>

struct event_base;

/* Takes ownership of client_fd. false (and client_fd closed) when the
 * target cannot be reached. */
bool splice_start(struct event_base *base, int client_fd, const struct sockaddr *target,
                  socklen_t target_len);

#endif
