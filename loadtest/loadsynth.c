#include "loadsynth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define FRAGMENT_MAX 96 /* {"question":1000000,"answer":15,"age":130,"country":"unknown" */
#define AGE_LOW 13
#define AGE_SPAN 68 /* 13..80 */
#define RIGHT_RATIO_MIN 0.30
#define RIGHT_RATIO_SPAN 0.60
#define USER_SUFFIX_MAX (sizeof(",\"user\":\"\"") - 1 + LOADSYNTH_PREFIX_MAX + 20)

/* The country field as sent (NULL: no field) and its weight in 1/1000. The
 * spellings exercise the ingest's normalisation; the tally keys follow it. */
struct country_weight {
    const char *sent;
    double weight;
};

static const struct country_weight big_countries[] = {
    {"us", 400}, {"gb", 140}, {"GB", 20}, {"uk", 30}, {"UK", 10},
    {NULL, 60}, {"zz", 20}, {"unknown", 10}, {"aa", 10},
};

static const char *const tail_countries[] = {
    "de", "fr", "ie", "nl", "es", "it", "ca", "au", "se", "no", "dk", "be", "pl", "pt", "br",
    "mx", "jp", "in", "za", "nz", "ch", "at", "fi", "ar", "cz", "gr", "hu", "ro", "sg", "kr",
};
#define TAIL_SHARE 300.0

static double uniform(struct util_rng *rng)
{
    return (double)(util_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

static const char *pick_country(struct util_rng *rng, const double *tail_w, double tail_sum)
{
    double u = uniform(rng) * 1000.0;
    for (size_t i = 0; i < LT_ARRAY_LEN(big_countries); i++) {
        if (u < big_countries[i].weight)
            return big_countries[i].sent;
        u -= big_countries[i].weight;
    }
    u = u / TAIL_SHARE * tail_sum;
    for (size_t i = 0; i < LT_ARRAY_LEN(tail_countries); i++) {
        if (u < tail_w[i])
            return tail_countries[i];
        u -= tail_w[i];
    }
    return tail_countries[LT_ARRAY_LEN(tail_countries) - 1];
}

/* A wrong option: the other options in a per-question order, Zipf weights. */
static uint32_t pick_wrong(struct util_rng *rng, const struct event_question *q,
                           const uint32_t *order)
{
    uint32_t n = q->n_options - 1;
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += 1.0 / (i + 1);
    double u = uniform(rng) * sum;
    for (uint32_t i = 0; i < n; i++) {
        double w = 1.0 / (i + 1);
        if (u < w)
            return order[i];
        u -= w;
    }
    return order[n - 1];
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static bool prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > LOADSYNTH_PREFIX_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

bool loadsynth_init(struct loadsynth *s, const struct eventfile *ef, const uint32_t *qidx,
                    uint32_t n_slots, uint64_t users, const char *prefix, uint64_t seed, char *err,
                    size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->ef = ef;
    if (prefix == NULL)
        prefix = "fan-";
    if (!prefix_ok(prefix))
        return util_fail(err, errlen, "--user-prefix: must be 1..%d of [A-Za-z0-9_.:-]",
                         LOADSYNTH_PREFIX_MAX);
    if (users > LOADSYNTH_USERS_MAX)
        return util_fail(err, errlen, "--users: at most %llu", (unsigned long long)LOADSYNTH_USERS_MAX);
    if (n_slots == 0 || n_slots > ef->n_questions)
        return util_fail(err, errlen, "no question to answer");
    snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
    s->users = users;
    s->pool_size = LOADSYNTH_POOL_MAX;
    while (s->pool_size > LOADSYNTH_POOL_MIN &&
           (uint64_t)s->pool_size * n_slots > LOADSYNTH_VARIANTS_MAX)
        s->pool_size >>= 1;

    size_t nvar = (size_t)s->pool_size * n_slots;
    s->qidx = calloc(n_slots, sizeof(*s->qidx));
    s->right_ratio = calloc(n_slots, sizeof(*s->right_ratio));
    s->perm_a = calloc(n_slots, sizeof(*s->perm_a));
    s->perm_b = calloc(n_slots, sizeof(*s->perm_b));
    s->pool = calloc(nvar, sizeof(*s->pool));
    s->text = malloc(nvar * FRAGMENT_MAX);
    if (!s->qidx || !s->right_ratio || !s->perm_a || !s->perm_b || !s->pool || !s->text) {
        loadsynth_free(s);
        return util_fail(err, errlen, "out of memory for %zu answer variants", nvar);
    }
    s->n_slots = n_slots;

    double tail_w[LT_ARRAY_LEN(tail_countries)];
    double tail_sum = 0;
    for (size_t i = 0; i < LT_ARRAY_LEN(tail_countries); i++) {
        tail_w[i] = 1.0 / (double)(i + 1);
        tail_sum += tail_w[i];
    }

    struct util_rng rng;
    util_rng_seed(&rng, seed);
    size_t off = 0;
    for (uint32_t slot = 0; slot < n_slots; slot++) {
        if (qidx[slot] >= ef->n_questions) {
            loadsynth_free(s);
            return util_fail(err, errlen, "question index %u out of range", qidx[slot]);
        }
        for (uint32_t j = 0; j < slot; j++) {
            if (s->qidx[j] == qidx[slot]) {
                loadsynth_free(s);
                return util_fail(err, errlen, "question %u listed twice",
                                 ef->questions[qidx[slot]].id);
            }
        }
        s->qidx[slot] = qidx[slot];
        const struct event_question *q = &ef->questions[qidx[slot]];
        double ratio = q->n_options < 2 ? 1.0 : RIGHT_RATIO_MIN + RIGHT_RATIO_SPAN * uniform(&rng);
        s->right_ratio[slot] = ratio;

        /* The wrong options in a random order: the first is the favourite. */
        uint32_t order[EVENT_MAX_OPTIONS];
        uint32_t nw = 0;
        for (uint32_t o = 0; o < q->n_options; o++) {
            if (o != q->correct)
                order[nw++] = o;
        }
        for (uint32_t i = nw; i > 1; i--) {
            uint32_t j = util_rng_below(&rng, i);
            uint32_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }

        if (users > 0) {
            uint64_t a = 1;
            if (users > 2) {
                do {
                    a = 1 + util_rng_next(&rng) % (users - 1);
                } while (gcd64(a, users) != 1);
            }
            s->perm_a[slot] = a;
            s->perm_b[slot] = util_rng_next(&rng) % users;
        }

        for (uint32_t v = 0; v < s->pool_size; v++) {
            struct loadsynth_variant *var = &s->pool[(size_t)slot * s->pool_size + v];
            bool right = uniform(&rng) < ratio;
            uint32_t option = right ? q->correct : pick_wrong(&rng, q, order);
            double u1 = uniform(&rng);
            double u2 = uniform(&rng);
            uint32_t age = AGE_LOW + (uint32_t)(u1 * u2 * AGE_SPAN);
            const char *country = pick_country(&rng, tail_w, tail_sum);
            char *dst = s->text + off;
            int n;
            if (country != NULL)
                n = snprintf(dst, FRAGMENT_MAX, "{\"question\":%u,\"answer\":%u,\"age\":%u,\"country\":\"%s\"",
                             q->id, option, age, country);
            else
                n = snprintf(dst, FRAGMENT_MAX, "{\"question\":%u,\"answer\":%u,\"age\":%u", q->id,
                             option, age);
            if (n <= 0 || n >= FRAGMENT_MAX) {
                loadsynth_free(s);
                return util_fail(err, errlen, "answer body too long");
            }
            loadtally_key_for(ef, q->id, option, age, country,
                              country == NULL ? 0 : strlen(country), &var->key);
            var->off = (uint32_t)off;
            var->len = (uint32_t)n;
            off += (size_t)n;
            if ((size_t)n > s->max_fragment)
                s->max_fragment = (size_t)n;
        }
    }
    return true;
}

void loadsynth_free(struct loadsynth *s)
{
    free(s->qidx);
    free(s->right_ratio);
    free(s->perm_a);
    free(s->perm_b);
    free(s->pool);
    free(s->text);
    memset(s, 0, sizeof(*s));
}

size_t loadsynth_max_body(const struct loadsynth *s)
{
    return s->max_fragment + (s->users > 0 ? USER_SUFFIX_MAX : 0) + 1;
}

bool loadsynth_user(const struct loadsynth *s, uint32_t slot, uint64_t k, uint64_t *user)
{
    if (k >= s->users)
        return false;
    unsigned __int128 x = (unsigned __int128)s->perm_a[slot] * k + s->perm_b[slot];
    *user = (uint64_t)(x % s->users);
    return true;
}



size_t loadsynth_body(const struct loadsynth *s, uint32_t slot, uint64_t k, uint64_t pick,
                      char *buf, size_t cap, struct loadtally_key *key)
{
    if (cap < loadsynth_max_body(s) || slot >= s->n_slots)
        return 0;
    const struct loadsynth_variant *v =
        &s->pool[(size_t)slot * s->pool_size + (pick & (s->pool_size - 1))];
    memcpy(buf, s->text + v->off, v->len);
    size_t n = v->len;
    uint64_t user;
    if (loadsynth_user(s, slot, k, &user)) {
        static const char field[] = ",\"user\":\"";
        memcpy(buf + n, field, sizeof(field) - 1);
        n += sizeof(field) - 1;
        size_t pl = strlen(s->prefix);
        memcpy(buf + n, s->prefix, pl);
        n += pl;
        n += util_format_u64(buf + n, user + 1);
        buf[n++] = '"';
    }
    buf[n++] = '}';
    *key = v->key;
    return n;
}
