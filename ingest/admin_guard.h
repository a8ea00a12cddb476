/*
 * Slows admin token guessing per client address. The admin API opens and
 * closes questions for the whole fleet, so a guessed token is a stolen
 * show; a 401 alone lets a client try as fast as it can send. Each address
 * gets ADMIN_GUARD_FREE_FAILURES wrong tokens; every further one locks the
 * address out for ADMIN_GUARD_FIRST_LOCK_MS, doubling up to
 * ADMIN_GUARD_MAX_LOCK_MS. While locked out, every admin request from it,
 * the right token too, is refused without looking at the token (429 with
 * Retry-After): otherwise the lock would not slow the guessing. The right
 * token outside a lock forgets the address's failures; so do
 * ADMIN_GUARD_FORGET_MS without one.
 *
 * One table per process, shared by its event loop threads (a guesser's
 * connections land on every thread), behind a mutex: only admin requests
 * touch it. It is bounded (ADMIN_GUARD_SLOTS, open addressing with a short
 * probe): when a probe window is full the entry failed longest ago goes, so
 * a flood of addresses costs memory it already has. Why not a library: the
 * rule is ten lines and the table a hundred; nothing in Debian does
 * exactly this inside a process.
 *
 * Times are the caller's (monotonic ms), so the rules are tested without
 * waiting.
 */
#ifndef LT_ADMIN_GUARD_H
#define LT_ADMIN_GUARD_H

#include <stdint.h>

#define ADMIN_GUARD_FREE_FAILURES 5u
#define ADMIN_GUARD_FIRST_LOCK_MS 1000u
#define ADMIN_GUARD_MAX_LOCK_MS 60000u
#define ADMIN_GUARD_FORGET_MS (10u * 60u * 1000u)
#define ADMIN_GUARD_SLOTS 1024u
#define ADMIN_GUARD_ADDR_MAX 64u /* an address longer than this is cut (it still keys) */

struct admin_guard;

/* NULL when out of memory. */
struct admin_guard *admin_guard_new(void);
void admin_guard_free(struct admin_guard *g);

/* 0 when client may try a token now; else how many more seconds it is
 * locked out (rounded up, at least 1), for Retry-After. */
uint32_t admin_guard_wait_s(struct admin_guard *g, const char *client, uint64_t now_ms);

/* client sent a wrong token (or none). Returns the lock it now has, in ms
 * (0: still among its free failures). */
uint32_t admin_guard_failed(struct admin_guard *g, const char *client, uint64_t now_ms);

/* client sent the right token while not locked out: its failures are
 * forgotten. */
void admin_guard_succeeded(struct admin_guard *g, const char *client);

#endif
