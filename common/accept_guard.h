/*
 * A listener that runs out of file descriptors (accept: EMFILE, ENFILE, or
 * no memory) stays readable: libevent retries at once and logs every
 * failure, a busy loop that burns a CPU and floods the log while the
 * connections that hold the descriptors get no time. The guard pauses the
 * listener for ACCEPT_GUARD_PAUSE_MS instead (nginx does the same), logs at
 * most one line a second, and counts the pauses. Pending connections wait
 * in the kernel's backlog meanwhile.
 */
#ifndef LT_ACCEPT_GUARD_H
#define LT_ACCEPT_GUARD_H

#include <stdint.h>

#define ACCEPT_GUARD_PAUSE_MS 100

struct event_base;
struct evconnlistener;
struct accept_guard;

/* For l; what names it in the log. NULL: out of memory. */
struct accept_guard *accept_guard_new(struct event_base *base, struct evconnlistener *l,
                                      const char *what);
/* From l's error callback (evconnlistener_set_error_cb; its argument is
 * the listener's own), with the socket error of the failed accept still
 * set. NULL is a no-op. */
void accept_guard_failed(struct accept_guard *g);
/* Pauses taken so far. */
uint64_t accept_guard_pauses(const struct accept_guard *g);
/* Before the listener is freed. NULL is a no-op. */
void accept_guard_free(struct accept_guard *g);

#endif
