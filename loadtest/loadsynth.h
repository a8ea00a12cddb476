/*
 * Synthetic answers that look like a real audience:
 *   - countries: us 40 %, gb 20 % (some sent as "uk", "GB", "UK"), unknown
 *     10 % (no field, an unassigned code, "unknown"), and a long tail of 30
 *     countries sharing the remaining 30 % with Zipf weights;
 *   - ages 13..80, skewed young (the product of two uniforms: median ~ 26);
 *   - a right ratio per question between 0.3 and 0.9, drawn from the seed;
 *     wrong answers spread over the other options with Zipf weights;
 *   - optionally a fixed population of users ("<prefix><n>", n = 1..users):
 *     the k-th answer to a question comes from user perm_q(k), a bijection of
 *     0..users-1 that differs per question, so no user answers a question
 *     twice and every thread can work out its users alone. Answers past the
 *     population carry no user.
 *
 * Bodies are rendered once into a pool per question (up to 4096 variants
 * each, with their tally keys); making a request is picking a variant and
 * appending the user. No allocation per request.
 */
#ifndef LT_LOADSYNTH_H
#define LT_LOADSYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "loadtally.h"

/* Variants per question (powers of two): 4096, fewer when there are so many
 * questions that the pools would pass 256k variants (~20 MB). */
#define LOADSYNTH_POOL_MAX 4096
#define LOADSYNTH_POOL_MIN 256
#define LOADSYNTH_VARIANTS_MAX (256u * 1024u)
#define LOADSYNTH_PREFIX_MAX 32
#define LOADSYNTH_USERS_MAX 1000000000000ull

struct loadsynth_variant {
    struct loadtally_key key;
    uint32_t off; /* into text: the body without its closing brace */
    uint32_t len;
};

struct loadsynth {
    const struct eventfile *ef; /* ref */
    uint32_t n_slots;
    uint32_t *qidx;             /* owned: slot -> index into ef->questions */
    double *right_ratio;        /* owned, per slot */
    uint32_t pool_size;         /* variants per slot, a power of two */
    struct loadsynth_variant *pool; /* owned, n_slots * pool_size */
    char *text;                 /* owned */
    size_t max_fragment;
    uint64_t users;
    char prefix[LOADSYNTH_PREFIX_MAX + 1];
    uint64_t *perm_a, *perm_b;  /* owned, per slot: user = (a * k + b) mod users */
};

/*
 * qidx lists the questions answers go to (indexes into ef->questions, each
 * at most once); ef must outlive s. users 0 = anonymous answers. prefix may
 * be NULL ("fan-"); it must be 1..32 of [A-Za-z0-9_.:-].
 */
bool loadsynth_init(struct loadsynth *s, const struct eventfile *ef, const uint32_t *qidx,
                    uint32_t n_slots, uint64_t users, const char *prefix, uint64_t seed, char *err,
                    size_t errlen);
void loadsynth_free(struct loadsynth *s);

/* The largest body loadsynth_body can write. */
size_t loadsynth_max_body(const struct loadsynth *s);

/* The user index (0-based) of the k-th answer to slot, or false when the
 * answer has no user. */
bool loadsynth_user(const struct loadsynth *s, uint32_t slot, uint64_t k, uint64_t *user);

/* Writes the body of the k-th answer to slot, variant chosen by pick (any
 * random number), into buf. Returns its length, or 0 when cap is too small. */
size_t loadsynth_body(const struct loadsynth *s, uint32_t slot, uint64_t k, uint64_t pick,
                      char *buf, size_t cap, struct loadtally_key *key);

#endif
