/*
 * Connections a pool backend gave up on without the node having failed (a
 * replica past replica_lag_ms, store_pool.h): half-closed and read until the
 * node closes them, never just closed.
 *
 * Why: the commands already handed over are what the engine counted as
 * sent, so they get no hint. close() would drop the ones still in the
 * engine's buffer, and with replies not yet read the kernel resets the
 * connection and drops what it had not delivered either: a replica that
 * was only slow would silently miss increments, and the next failure of its
 * peer would lose them. Here the rest of the buffer is written, then
 * shutdown(SHUT_WR) sends a FIN after it; the node processes every command
 * in order, answers, and closes; reading its replies (and dropping them)
 * keeps its send buffer from filling up, which would stall it.
 *
 * One per handle (no locking); pumped, without blocking, at the start of
 * each of the handle's runs.
 */
#ifndef LT_STORE_DRAIN_H
#define LT_STORE_DRAIN_H

#include <stddef.h>
#include <stdint.h>

#define STORE_DRAIN_MAX 16        /* connections drained at once per handle */
#define STORE_DRAIN_MAX_MS 30000u /* then closed anyway (logged) */

struct store_drain {
    int fd[STORE_DRAIN_MAX];
    uint64_t until_ms[STORE_DRAIN_MAX];
    char *out[STORE_DRAIN_MAX]; /* owned: bytes still to write (NULL: written, half-closed) */
    size_t out_len[STORE_DRAIN_MAX];
    size_t out_pos[STORE_DRAIN_MAX];
    size_t n;
};

void store_drain_init(struct store_drain *d);
/* Takes fd over (it must not be used or closed by the caller again), with
 * the len bytes at pending still to be written to it (copied). */
void store_drain_add(struct store_drain *d, int fd, const char *pending, size_t len,
                     uint64_t now_ms);
/* Writes what is left, reads what arrived, closes those the node closed,
 * that failed or whose time is up. Never blocks. */
void store_drain_pump(struct store_drain *d, uint64_t now_ms);
/* Closes them all (the handle goes away). */
void store_drain_fini(struct store_drain *d);

#endif
