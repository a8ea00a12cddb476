#include "store_drain.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

void store_drain_init(struct store_drain *d)
{
    d->n = 0;
}

static void drop(struct store_drain *d, size_t i)
{
    close(d->fd[i]);
    free(d->out[i]);
    d->n--;
    d->fd[i] = d->fd[d->n];
    d->until_ms[i] = d->until_ms[d->n];
    d->out[i] = d->out[d->n];
    d->out_len[i] = d->out_len[d->n];
    d->out_pos[i] = d->out_pos[d->n];
}

/* Writes what is left to write, then half-closes. false: it failed. */
static bool flush_out(struct store_drain *d, size_t i)
{
    if (d->out[i] == NULL)
        return true;
    while (d->out_pos[i] < d->out_len[i]) {
        ssize_t w = send(d->fd[i], d->out[i] + d->out_pos[i], d->out_len[i] - d->out_pos[i],
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            d->out_pos[i] += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return true; /* the rest next time */
        return false;
    }
    free(d->out[i]);
    d->out[i] = NULL;
    shutdown(d->fd[i], SHUT_WR);
    return true;
}

void store_drain_pump(struct store_drain *d, uint64_t now_ms)
{
    char buf[16384];
    for (size_t i = 0; i < d->n;) {
        bool done = !flush_out(d, i);
        for (int rounds = 0; !done && rounds < 64; rounds++) {
            ssize_t r = recv(d->fd[i], buf, sizeof(buf), MSG_DONTWAIT);
            if (r > 0)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                break;
            done = true; /* the node closed it (0), or it failed */
        }
        if (!done && now_ms >= d->until_ms[i]) {
            log_warn("store: a connection given up on was not closed by its node in %u ms, "
                     "closed (commands it had not read yet may be lost)",
                     STORE_DRAIN_MAX_MS);
            done = true;
        }
        if (done)
            drop(d, i);
        else
            i++;
    }
}

void store_drain_add(struct store_drain *d, int fd, const char *pending, size_t len,
                     uint64_t now_ms)
{
    if (fd < 0)
        return;
    if (d->n == STORE_DRAIN_MAX)
        store_drain_pump(d, now_ms);
    if (d->n == STORE_DRAIN_MAX) {
        log_warn("store: too many connections being drained, the oldest closed max=%d",
                 STORE_DRAIN_MAX);
        drop(d, 0);
    }
    size_t i = d->n++;
    d->fd[i] = fd;
    d->until_ms[i] = now_ms + STORE_DRAIN_MAX_MS;
    d->out_pos[i] = 0;
    d->out_len[i] = len;
    d->out[i] = malloc(len > 0 ? len : 1); /* an empty one still half-closes */
    if (d->out[i] == NULL) {
        log_warn("store: no memory to drain a connection, closed (commands not written yet "
                 "are lost) bytes=%zu",
                 len);
        drop(d, i);
        return;
    }
    if (len > 0)
        memcpy(d->out[i], pending, len);
    if (!flush_out(d, i))
        drop(d, i);
}

void store_drain_fini(struct store_drain *d)
{
    while (d->n > 0)
        drop(d, d->n - 1);
}
