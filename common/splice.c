#include "splice.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

/* Bytes buffered towards a side that does not read before the other side
 * is paused. */
#define SPLICE_HIGH_WATER (256 * 1024)

struct splice {
    struct bufferevent *a; /* the client */
    struct bufferevent *b; /* the target */
    struct event *deadline; /* the target's answer to the client's bytes is due */
    bool awaiting;         /* the client sent bytes the target has not answered */
    bool linked;           /* in set's list (counted in set->n) */
    bool closing;          /* one side is gone: free once the other has its bytes */
    struct splice_set *set; /* (ref) */
    struct splice *prev, *next;
};

struct splice_set {
    struct event_base *base; /* (ref) */
    struct splice *head;     /* owned, open splices */
    size_t n;
    struct timeval timeout;
    bool has_timeout;
};

struct splice_set *splice_set_new(struct event_base *base, uint32_t request_timeout_ms)
{
    struct splice_set *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return NULL;
    set->base = base;
    set->has_timeout = request_timeout_ms > 0;
    set->timeout = (struct timeval){.tv_sec = request_timeout_ms / 1000,
                                    .tv_usec = (suseconds_t)(request_timeout_ms % 1000) * 1000};
    return set;
}

size_t splice_set_count(const struct splice_set *set)
{
    return set ? set->n : 0;
}

static void splice_unlink(struct splice *s)
{
    if (!s->linked)
        return;
    s->linked = false;
    s->set->n--;
    if (s->prev)
        s->prev->next = s->next;
    else if (s->set)
        s->set->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void splice_free(struct splice *s)
{
    splice_unlink(s);
    bufferevent_free(s->a);
    bufferevent_free(s->b);
    if (s->deadline)
        event_free(s->deadline);
    free(s);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    splice_free(arg); /* the client's request never came whole, or never got an answer */
}

void splice_set_free(struct splice_set *set)
{
    if (set == NULL)
        return;
    while (set->head)
        splice_free(set->head);
    free(set);
}

static void on_read(struct bufferevent *from, void *arg)
{
    struct splice *s = arg;
    struct bufferevent *to = from == s->a ? s->b : s->a;
    if (s->deadline != NULL && evbuffer_get_length(bufferevent_get_input(from)) > 0) {
        if (from == s->a && !s->awaiting) {
            s->awaiting = true;
            evtimer_add(s->deadline, &s->set->timeout);
        } else if (from == s->b && s->awaiting) {
            s->awaiting = false;
            evtimer_del(s->deadline);
        }
    }
    evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(from));
    if (evbuffer_get_length(bufferevent_get_output(to)) >= SPLICE_HIGH_WATER) {
        bufferevent_disable(from, EV_READ);
        bufferevent_setwatermark(to, EV_WRITE, SPLICE_HIGH_WATER / 2, 0);
    }
}

static void on_write(struct bufferevent *to, void *arg)
{
    struct splice *s = arg;
    if (s->closing) {
        splice_free(s);
        return;
    }
    struct bufferevent *from = to == s->a ? s->b : s->a;
    /* Drained below the low mark: the other side may read again. */
    bufferevent_setwatermark(to, EV_WRITE, 0, 0);
    bufferevent_enable(from, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct splice *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    struct bufferevent *other = bev == s->a ? s->b : s->a;
    if (s->closing || (what & BEV_EVENT_ERROR && bev == s->a)) {
        splice_free(s);
        return;
    }
    /* The last reply (a "Connection: close" one) must still reach the
     * client: hand over what was read, free once it is written. */
    on_read(bev, s);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    bufferevent_disable(other, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(other)) == 0) {
        splice_free(s);
        return;
    }
    s->closing = true;
    bufferevent_setwatermark(other, EV_WRITE, 0, 0);
}

/* The abstract name a splice's socket binds: "\0ltsp", the pid and the fd
 * (unique among the live sockets of a network namespace), then the
 * client's sockaddr as it is. */
#define NAME_TAG "ltsp"
#define NAME_HEAD (1 + sizeof(NAME_TAG) - 1 + sizeof(int32_t) + sizeof(int32_t))

static int client_socket(const struct sockaddr *client, socklen_t client_len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || client == NULL || client_len == 0 ||
        NAME_HEAD + (size_t)client_len > sizeof(((struct sockaddr_un *)0)->sun_path))
        return fd;
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    char *p = un.sun_path + 1;
    int32_t pid = (int32_t)getpid(), self = fd;
    memcpy(p, NAME_TAG, sizeof(NAME_TAG) - 1);
    p += sizeof(NAME_TAG) - 1;
    memcpy(p, &pid, sizeof(pid));
    p += sizeof(pid);
    memcpy(p, &self, sizeof(self));
    p += sizeof(self);
    memcpy(p, client, (size_t)client_len);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + NAME_HEAD + client_len);
    /* Unnamed on failure: the target then does not know the client. */
    (void)bind(fd, (struct sockaddr *)&un, len);
    return fd;
}

bool splice_client_address(int fd, struct sockaddr_storage *out, socklen_t *out_len)
{
    struct sockaddr_un un;
    socklen_t len = sizeof(un);
    if (getpeername(fd, (struct sockaddr *)&un, &len) != 0 || un.sun_family != AF_UNIX)
        return false;
    size_t path = (size_t)len - offsetof(struct sockaddr_un, sun_path);
    if (len <= offsetof(struct sockaddr_un, sun_path) || path <= NAME_HEAD ||
        un.sun_path[0] != '\0' || memcmp(un.sun_path + 1, NAME_TAG, sizeof(NAME_TAG) - 1) != 0 ||
        path - NAME_HEAD > sizeof(*out))
        return false;
    memset(out, 0, sizeof(*out));
    memcpy(out, un.sun_path + NAME_HEAD, path - NAME_HEAD);
    *out_len = (socklen_t)(path - NAME_HEAD);
    return true;
}

bool splice_start(struct splice_set *set, int client_fd, const struct sockaddr *client,
                  socklen_t client_len, const struct sockaddr *target, socklen_t target_len,
                  const char *prefix, size_t prefix_len)
{
    struct event_base *base = set->base;
    struct splice *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(client_fd);
        return false;
    }
    s->set = set;
    s->next = set->head;
    if (set->head)
        set->head->prev = s;
    set->head = s;
    set->n++;
    s->linked = true;
    s->a = bufferevent_socket_new(base, client_fd, BEV_OPT_CLOSE_ON_FREE);
    int target_fd = client_socket(client, client_len);
    s->b = target_fd < 0 ? NULL : bufferevent_socket_new(base, target_fd, BEV_OPT_CLOSE_ON_FREE);
    if (s->a == NULL || s->b == NULL) {
        if (s->a == NULL)
            close(client_fd);
        if (s->b == NULL && target_fd >= 0)
            close(target_fd);
        struct bufferevent *a = s->a, *b = s->b;
        s->a = s->b = NULL;
        splice_unlink(s);
        if (a)
            bufferevent_free(a);
        if (b)
            bufferevent_free(b);
        free(s);
        return false;
    }
    if (set->has_timeout && (s->deadline = evtimer_new(base, on_deadline, s)) == NULL) {
        splice_free(s);
        return false;
    }
    bufferevent_setcb(s->a, on_read, on_write, on_event, s);
    bufferevent_setcb(s->b, on_read, on_write, on_event, s);
    if ((prefix_len > 0 && bufferevent_write(s->b, prefix, prefix_len) != 0) ||
        bufferevent_socket_connect(s->b, (struct sockaddr *)target, (int)target_len) != 0) {
        splice_free(s);
        return false;
    }
    if (s->deadline != NULL && prefix_len > 0) {
        s->awaiting = true; /* the request passed on is the client's */
        evtimer_add(s->deadline, &set->timeout);
    }
    bufferevent_enable(s->a, EV_READ);
    bufferevent_enable(s->b, EV_READ);
    return true;
}
