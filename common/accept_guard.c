#include "accept_guard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "log.h"
#include "util.h"

struct accept_guard {
    struct evconnlistener *listener; /* (ref) */
    struct event *resume;
    const char *what;
    uint64_t pauses;
    uint64_t pauses_logged;
    uint64_t last_log_ms;
};

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct accept_guard *g = arg;
    evconnlistener_enable(g->listener);
}

void accept_guard_failed(struct accept_guard *g)
{
    if (g == NULL)
        return;
    struct evconnlistener *l = g->listener;
    int err = EVUTIL_SOCKET_ERROR();
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return; /* a connection that went away before accept: nothing to do */
    evconnlistener_disable(l);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_GUARD_PAUSE_MS * 1000};
    if (evtimer_add(g->resume, &tv) != 0)
        evconnlistener_enable(l); /* cannot pause: libevent's retry it is */
    g->pauses++;
    uint64_t now = util_mono_ms();
    if (g->last_log_ms == 0 || now - g->last_log_ms >= 1000) {
        log_warn("%s: accept failed (%s): not accepting for %d ms; pauses since the last line=%llu "
                 "(raise the file descriptor limit, or lower --max-conns)",
                 g->what, strerror(err), ACCEPT_GUARD_PAUSE_MS,
                 (unsigned long long)(g->pauses - g->pauses_logged));
        g->last_log_ms = now;
        g->pauses_logged = g->pauses;
    }
}

struct accept_guard *accept_guard_new(struct event_base *base, struct evconnlistener *l,
                                      const char *what)
{
    struct accept_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->listener = l;
    g->what = what;
    g->resume = evtimer_new(base, on_resume, g);
    if (g->resume == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

uint64_t accept_guard_pauses(const struct accept_guard *g)
{
    return g ? g->pauses : 0;
}

void accept_guard_free(struct accept_guard *g)
{
    if (g == NULL)
        return;
    event_free(g->resume);
    free(g);
}
