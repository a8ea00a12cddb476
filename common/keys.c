#include "keys.h"

#include <stdio.h>
#include <string.h>

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

static size_t clamp_user_len(int n)
{
    if (n < 0)
        return 0;
    return (size_t)n >= KEY_USER_MAX ? KEY_USER_MAX - 1 : (size_t)n;
}

size_t key_user_marker(char *buf, const char *event, const char *user, uint32_t q)
{
    return clamp_user_len(snprintf(buf, KEY_USER_MAX, "%s:u:%.64s:q%u", event, user, q));
}

size_t key_user_right(char *buf, const char *event, const char *user)
{
    return clamp_user_len(snprintf(buf, KEY_USER_MAX, "%s:u:%.64s:right", event, user));
}

size_t key_user_ms(char *buf, const char *event, const char *user)
{
    return clamp_user_len(snprintf(buf, KEY_USER_MAX, "%s:u:%.64s:ms", event, user));
}

size_t key_fans_seq(char *buf, const char *event)
{
    return clamp_user_len(snprintf(buf, KEY_USER_MAX, "%s:fans:seq", event));
}

size_t key_fans_list(char *buf, const char *event, uint64_t slot)
{
    return clamp_user_len(
        snprintf(buf, KEY_USER_MAX, "%s:fans:%llu", event, (unsigned long long)slot));
}

static size_t clamp_node_len(int n)
{
    return n < 0 ? 0 : (size_t)n >= KEY_NODE_MAX ? KEY_NODE_MAX - 1 : (size_t)n;
}

size_t key_node_incarnation(char *buf, const char *event)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:node", event));
}

size_t key_pool_record(char *buf, const char *event)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:pool", event));
}

size_t key_pool_epoch(char *buf, const char *event, uint32_t epoch)
{
    if (epoch == 0)
        return key_pool_record(buf, event);
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:pool:%u", event, epoch));
}

size_t key_pool_host(char *buf, const char *event, uint32_t epoch, uint32_t i)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:pool:%u:h%u", event, epoch, i));
}

size_t key_pool_folded(char *buf, const char *event, uint32_t epoch)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:pool:%u:folded", event, epoch));
}

size_t key_pool_writing(char *buf, const char *event, uint32_t epoch)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:pool:%u:writing", event, epoch));
}

size_t keys_fold_prefix(char buf[KEY_PREFIX_MAX], const char *event, uint32_t epoch)
{
    int n = snprintf(buf, KEY_PREFIX_MAX, "%s~%u:f", event, epoch);
    return n < 0 ? 0 : (size_t)n >= KEY_PREFIX_MAX ? KEY_PREFIX_MAX - 1 : (size_t)n;
}

size_t keys_epoch_prefix(char buf[KEY_PREFIX_MAX], const char *event, uint32_t epoch)
{
    int n = epoch == 0 ? snprintf(buf, KEY_PREFIX_MAX, "%s", event)
                       : snprintf(buf, KEY_PREFIX_MAX, "%s~%u", event, epoch);
    return n < 0 ? 0 : (size_t)n >= KEY_PREFIX_MAX ? KEY_PREFIX_MAX - 1 : (size_t)n;
}

size_t key_node_claim(char *buf, const char *event, const char *id)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:node:claim:%s", event, id));
}

size_t key_node_restored(char *buf, const char *event, const char *id)
{
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:node:restored:%s", event, id));
}

size_t key_repair_claim(char *buf, const char *event, const char *id, uint64_t value,
                        const char *counter_key)
{
    size_t pre = strlen(event);
    const char *rest = strncmp(counter_key, event, pre) == 0 && counter_key[pre] == ':'
                           ? counter_key + pre + 1
                           : counter_key;
    return clamp_node_len(snprintf(buf, KEY_NODE_MAX, "%s:rr:%s:%llu:%s", event, id,
                                   (unsigned long long)value, rest));
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

uint32_t keys_counter_count(const struct eventfile *ef)
{
    return ef->n_questions * KEYS_PER_QUESTION(ef);
}

void keys_counters_for_answer(const struct eventfile *ef, uint32_t question_index,
                              const struct answer_counters *a, uint32_t out[KEYS_PER_ANSWER])
{
    uint32_t base = question_index * KEYS_PER_QUESTION(ef);
    uint32_t o = a->outcome == KEY_RIGHT ? 1 : 0;
    uint32_t b = ef->n_age_buckets;
    uint32_t c = (a->country >= 0 && a->country < COUNTRY_COUNT) ? (uint32_t)a->country
                                                                 : COUNTRY_UNKNOWN;
    out[0] = base + o;
    out[1] = base + 2 + 2 * a->age_bucket + o;
    out[2] = base + 2 + 2 * b + 2 * c + o;
    out[3] = base + 2 + 2 * b + 2 * COUNTRY_COUNT + a->option;
}

/* Splits an id back into its question and position within the question. */
static void split_id(const struct eventfile *ef, uint32_t id, uint32_t *qi, uint32_t *pos)
{
    uint32_t per = KEYS_PER_QUESTION(ef);
    *qi = id / per;
    *pos = id % per;
}

uint32_t keys_counter_shards(const struct eventfile *ef, uint32_t id)
{
    uint32_t qi, pos, b = ef->n_age_buckets;
    split_id(ef, id, &qi, &pos);
    if (pos >= 2 + 2 * b && pos < 2 + 2 * b + 2 * COUNTRY_COUNT)
        return ef->country_shard_count[(pos - 2 - 2 * b) / 2];
    return ef->shards;
}

size_t keys_counter_key(const struct eventfile *ef, uint32_t id, uint32_t shard, char *buf)
{
    return keys_counter_key_in(ef, ef->name, id, shard, buf);
}

size_t keys_counter_key_in(const struct eventfile *ef, const char *prefix, uint32_t id,
                           uint32_t shard, char *buf)
{
    uint32_t qi, pos, b = ef->n_age_buckets;
    split_id(ef, id, &qi, &pos);
    uint32_t q = ef->questions[qi].id;
    if (pos < 2)
        return key_question(buf, prefix, q, pos ? KEY_RIGHT : KEY_WRONG, shard);
    pos -= 2;
    if (pos < 2 * b)
        return key_age(buf, prefix, q, pos / 2 + 1, pos % 2 ? KEY_RIGHT : KEY_WRONG, shard);
    pos -= 2 * b;
    if (pos < 2 * COUNTRY_COUNT)
        return key_country(buf, prefix, q, country_code((int)(pos / 2)),
                           pos % 2 ? KEY_RIGHT : KEY_WRONG, shard);
    pos -= 2 * COUNTRY_COUNT;
    return key_option(buf, prefix, q, pos, shard);
}
