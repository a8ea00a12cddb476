/*
 * Question state, kept in the store so every ingest node sees the same one:
 *   key   {event}:q{Q}:state
 *   value "open <open_ms>" | "closed <open_ms> <close_ms>"   (wall-clock ms)
 * No key means: not opened yet (or, for "open": true questions, open since
 * the first ingest start-up, which adds the key).
 */
#ifndef LT_QSTATE_H
#define LT_QSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "store.h"

enum qstate_kind { QSTATE_NOT_OPEN = 0, QSTATE_OPEN, QSTATE_CLOSED };

/* A close takes effect this long after it is asked (close_ms is then).
 * Every ingest node reads the states every 50 ms, and takes answers on what
 * it read only this long after that read began (a close it missed was
 * written later, so is due later): past it the node reads again first. So
 * all of them refuse exactly the answers received after the close time,
 * whichever node the close went through, even a node whose reads lag. */
#define QSTATE_CLOSE_DELAY_MS 250u

struct qstate {
    enum qstate_kind kind;
    uint64_t open_ms;
    uint64_t close_ms;
};

#define QSTATE_VALUE_MAX 64

const char *qstate_kind_str(enum qstate_kind k); /* "not_open", "open", "closed" */
size_t qstate_format(const struct qstate *st, char *buf, size_t len);
bool qstate_parse(const char *val, size_t len, struct qstate *out);

/* One question's state, from every copy of it (store_get_each): the copy
 * written last (an open's time, a close's), whatever a replica that missed
 * that write still holds.
 * STORE_NOTFOUND (out: not open) when no copy exists; STORE_ERROR when the
 * only copies are values this code did not write. */
enum store_status qstate_read(struct store *s, const struct eventfile *ef, uint32_t question_id,
                              struct qstate *out);

/* Reads every question's state (out has ef->n_questions entries, in the
 * order of ef->questions). */
enum store_status qstate_fetch_all(struct store *s, const struct eventfile *ef, struct qstate *out);
/* The same; unsure[i] (n_questions entries) says that question i reads as
 * not open only on the replicas that answered: one that did not may hold
 * its state (a replica back empty, its peer unreachable). */
enum store_status qstate_fetch_unsure(struct store *s, const struct eventfile *ef,
                                      struct qstate *out, bool *unsure);

/* For questions marked "open": true, adds the open state if no state exists
 * yet (add-if-absent, so every node agrees on the first open time). */
enum store_status qstate_init_open(struct store *s, const struct eventfile *ef, uint64_t now_ms);

enum store_status qstate_write(struct store *s, const struct eventfile *ef, uint32_t question_id,
                               const struct qstate *st);

#endif
