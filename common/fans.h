/*
 * The ultimate fans: the users who answered every closed question right,
 * ranked by right answers (desc), then total answer time (asc), then user id
 * (asc). Pure: no I/O, so tables test it.
 *
 * How the ranking stays exact across N ingest instances without a hot key:
 *   - every right answer with a user increments {event}:u:{user}:right and
 *     :ms and the store returns the new totals (keys.h);
 *   - each ingest instance keeps the FANS_TOPK best (user, right, total_ms)
 *     it was returned (fans_topk), a user's newer entry replacing the older,
 *     and publishes it as JSON under {event}:fans:{slot};
 *   - the aggregator merges every slot's list, keeping each user's newest
 *     entry (fans_merge: the largest right count wins, since right only
 *     grows), ranks them, and walks the ranking checking each candidate's
 *     markers of the closed questions (fans_select) until FANS_SHOWN pass.
 * A user's newest entry is in the list of the instance that took the user's
 * last right answer, unless FANS_TOPK entries rank above it there; each of
 * those belongs to a user whose own newest entry ranks above it too (right
 * counts only grow). Once every answered question is closed, every user
 * ranked above a fully right user is fully right as well, so fewer than
 * FANS_SHOWN of them exist and the top FANS_SHOWN are exact. While a
 * question is open, users who answered it right but got an earlier one
 * wrong also rank high; past FANS_TOPK of them on one instance, a fully
 * right user of that instance can be missing until the question closes.
 */
#ifndef LT_FANS_H
#define LT_FANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FANS_TOPK 100       /* entries an ingest instance keeps and publishes */
#define FANS_SHOWN 10       /* ultimate fans in the snapshot */
#define FANS_USER_MAX 64    /* 1..64 of [A-Za-z0-9_.:-] (fans_user_ok) */
#define FANS_JSON_MAX 16384 /* a published list of FANS_TOPK entries fits */

struct fans_entry {
    char user[FANS_USER_MAX + 1];
    uint64_t right;    /* the user's right answers, as the store returned them */
    uint64_t total_ms; /* the user's total answer time of those */
};

/* 1..64 of [A-Za-z0-9_.:-]. */
bool fans_user_ok(const char *s, size_t len);

/* Ranking order: right desc, total_ms asc, user asc. <0 when a ranks first. */
int fans_cmp(const struct fans_entry *a, const struct fans_entry *b);

/* Of two entries of the same user, is a the newer? The larger right count
 * (right only grows); on a tie (only after the store lost data) the larger
 * total_ms, so a user is never ranked better than some reading showed. */
bool fans_newer(const struct fans_entry *a, const struct fans_entry *b);

/* An instance's bounded top list, kept in ranking order. One thread. */
struct fans_topk {
    struct fans_entry e[FANS_TOPK];
    size_t n;
    bool dirty; /* changed since fans_topk_clean */
};

void fans_topk_init(struct fans_topk *t);

/* Records the totals the store returned for user (a valid user id). A newer
 * entry replaces the user's older one; an older one is ignored. Returns
 * true when the list changed. O(1) for an entry that cannot enter a full
 * list, O(FANS_TOPK) otherwise. */
bool fans_topk_update(struct fans_topk *t, const char *user, uint64_t right, uint64_t total_ms);

/* The list as published, with the publishing instance's random id:
 *   {"owner":"00c0ffee12345678","fans":[["fan-8812",7,10432],...]}
 * (user, right, total_ms). Returns the length, or 0 when cap is too small
 * (FANS_JSON_MAX always fits FANS_TOPK entries). */
size_t fans_encode(uint64_t owner, const struct fans_entry *e, size_t n, char *buf, size_t cap);

/* The published text was written by owner (its first bytes say so). */
bool fans_owned_by(const char *json, size_t len, uint64_t owner);

/* Parses a published list into out (at most max entries). false when the
 * text is not such a list, has more than max entries, or an entry is
 * malformed (a bad user id, a count that is not a non-negative integer). */
bool fans_decode(const char *json, size_t len, struct fans_entry *out, size_t max, size_t *n);

/* Keeps each user's newest entry of e[0..n) and sorts the survivors in
 * ranking order, in place; returns how many remain. O(n log n). */
size_t fans_merge(struct fans_entry *e, size_t n);

/* Checks that the user answered every closed question right: 1 yes, 0 no,
 * -1 could not tell (the store failed). */
typedef int (*fans_verify_fn)(void *ctx, const struct fans_entry *e);

struct fans_selection {
    size_t n;      /* entries written to out */
    size_t checks; /* verify calls made */
    bool failed;   /* a verify call returned -1: out is incomplete */
};

/*
 * Walks ranked (fans_merge's order) and copies to out the first max_out
 * entries that verify accepts. Users with fewer than min_right right
 * answers cannot have answered min_right closed questions right: the walk
 * stops at the first of them (the ranking puts them last), and at
 * max_checks verify calls. min_right 0 (no closed question) selects nobody.
 */
void fans_select(const struct fans_entry *ranked, size_t n, uint64_t min_right, size_t max_checks,
                 fans_verify_fn verify, void *ctx, struct fans_entry *out, size_t max_out,
                 struct fans_selection *sel);

/* A marker value (keys.h): "R <ms>" or "W <ms>". Writes right and ms. */
bool fans_marker_parse(const char *val, size_t len, bool *right, uint64_t *ms);
/* Writes "R <ms>" or "W <ms>" (at most 23 bytes, NUL included); returns its length. */
size_t fans_marker_format(char *buf, size_t cap, bool right, uint64_t ms);

#endif
