/*
 * Hinted handoff: the writes one replica missed while it was down, kept by
 * the handle that missed them and replayed when the node answers again
 * (store_pool.h). One table per node per handle, so no locking.
 *
 *   HINT_INCR   increments of a counter that missed the node, summed; the
 *               TTL is the latest write's
 *   HINT_STALE  a blob whose set or delete missed the node: delete it there
 *               on return, so the node cannot serve the old value
 *
 * Bounded: at most max_keys entries (an increment to a key already held is
 * merged into its entry and costs nothing). Memory is 32 bytes and the key
 * per entry, plus 8 to 16 bytes of index (kept at most half full), grown on
 * demand and released when the table empties.
 */
#ifndef LT_STORE_HINTS_H
#define LT_STORE_HINTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum hint_kind { HINT_INCR = 0, HINT_STALE = 1 };

struct hint_entry {
    const char *key; /* (ref) valid until the next hints_add or hints_remove */
    size_t keylen;
    enum hint_kind kind;
    uint64_t delta;  /* HINT_INCR */
    uint32_t ttl_s;  /* HINT_INCR */
    uint32_t writes; /* how many missed writes the entry stands for (saturates) */
};

struct store_hints;

/* An empty table of at most max_keys entries; NULL when out of memory. */
struct store_hints *hints_new(size_t max_keys);
void hints_free(struct store_hints *h); /* NULL is a no-op */

size_t hints_count(const struct store_hints *h);
size_t hints_count_kind(const struct store_hints *h, enum hint_kind kind);

/* Adds delta to the key's HINT_INCR entry (created at delta, the sum wraps
 * at 2^64 like the counter) and sets its TTL; for HINT_STALE, delta and
 * ttl_s are ignored. false when the table is full or out of memory: then
 * nothing changed. keylen is 1..250. */
bool hints_add(struct store_hints *h, enum hint_kind kind, const char *key, size_t keylen,
               uint64_t delta, uint32_t ttl_s);

/* Entry i, 0 <= i < hints_count(h), in insertion order. */
void hints_get(const struct store_hints *h, size_t i, struct hint_entry *out);

/* Removes every entry i with drop[i] (drop has hints_count(h) elements);
 * the others keep their order. */
void hints_remove(struct store_hints *h, const bool *drop);

#endif
