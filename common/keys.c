#include "keys.h"

#include <stdio.h>

static const char *outcome_str(enum key_outcome o)
{
    return o == KEY_RIGHT ? "right" : "wrong";
}

/* snprintf's return is the length it wanted; with an event name within
 * EVENT_NAME_MAX every key fits, so the clamp only guards misuse. */
static size_t clamp_len(int n)
{
    if (n < 0)
        return 0;
    return (size_t)n >= KEY_MAX ? KEY_MAX - 1 : (size_t)n;
}

size_t key_question(char *buf, const char *event, uint32_t q, enum key_outcome o, uint32_t shard)
{
    return clamp_len(snprintf(buf, KEY_MAX, "%s:q%u%s%02u", event, q, outcome_str(o), shard));
}

size_t key_age(char *buf, const char *event, uint32_t q, uint32_t bucket1, enum key_outcome o,
               uint32_t shard)
{
    return clamp_len(
        snprintf(buf, KEY_MAX, "%s:q%uage%u%s%02u", event, q, bucket1, outcome_str(o), shard));
}

size_t key_country(char *buf, const char *event, uint32_t q, const char *cc, enum key_outcome o,
                   uint32_t shard)
{
    return clamp_len(
        snprintf(buf, KEY_MAX, "%s:q%uc%s%s%02u", event, q, cc, outcome_str(o), shard));
}

size_t key_option(char *buf, const char *event, uint32_t q, uint32_t option, uint32_t shard)
{
    return clamp_len(snprintf(buf, KEY_MAX, "%s:q%uopt%un%02u", event, q, option, shard));
}

size_t key_state(char *buf, const char *event, uint32_t q)
{
    return clamp_len(snprintf(buf, KEY_MAX, "%s:q%u:state", event, q));
}

/* 1..n; a zeroed count (an eventfile not built by eventfile_parse) is one shard. */
static uint32_t draw_shard(struct util_rng *rng, uint32_t n)
{
    return n <= 1 ? 1 : util_rng_below(rng, n) + 1;
}

/* Keys in the order of the table in keys.h: question, age, country, option. */
void keys_for_answer(const struct eventfile *ef, const struct answer_counters *a,
                     struct util_rng *rng, struct answer_keys *out)
{
    int country = (a->country >= 0 && a->country < COUNTRY_COUNT) ? a->country : COUNTRY_UNKNOWN;
    out->len[0] = key_question(out->key[0], ef->name, a->question, a->outcome,
                               draw_shard(rng, ef->shards));
    out->len[1] = key_age(out->key[1], ef->name, a->question, a->age_bucket + 1, a->outcome,
                          draw_shard(rng, ef->shards));
    out->len[2] = key_country(out->key[2], ef->name, a->question, country_code(country),
                              a->outcome, draw_shard(rng, ef->country_shard_count[country]));
    out->len[3] =
        key_option(out->key[3], ef->name, a->question, a->option, draw_shard(rng, ef->shards));
}
