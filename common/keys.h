/*
 * The key scheme of DESIGN.md. All counters of a question:
 *
 *   {event}:q{Q}{right|wrong}{S}          S in 01..shards
 *   {event}:q{Q}age{B}{right|wrong}{S}    B = 1-based age bucket
 *   {event}:q{Q}c{CC}{right|wrong}{S}     S in 01..country_shard_count[CC]
 *   {event}:q{Q}opt{K}n{S}                K = 0-based option index
 *   {event}:q{Q}:state                    question state (qstate.h)
 *   {event}:snap...                       snapshot (snapstore.h)
 * Counters written in pool epoch e >= 1 (pool_record.h) carry the epoch after
 * the event, "{event}~{e}:q..." (the store places them by that epoch's ring;
 * '~' is in no event name); every other key stays "{event}:". A fold of the
 * epochs before e (retiring a node) writes their sums as carry counters
 * "{event}~{e}:f:q..." in the same layout.
 *
 * Per user (one answer per user per question, the ultimate fans), with
 * user = 1..64 of [A-Za-z0-9_.:-]:
 *   {event}:u:{user}:q{Q}                 marker "R <ms>" | "W <ms>": the user's answer
 *                                         to question Q was right/wrong, ms after the
 *                                         question opened (added only if absent)
 *   {event}:u:{user}:right                counter: the user's right answers
 *   {event}:u:{user}:ms                   counter: total answer time of those, ms
 *   {event}:fans:seq                      counter: slots handed out to ingest instances
 *   {event}:fans:{n}                      the top list published by slot n (fans.h)
 * A marker ends in ":q" and digits, a counter in ":right" or ":ms", and the
 * user holds no space: no two users, questions or kinds share a key. The
 * longest, 32 + 3 + 64 + 9 bytes, is far below memcached's 250.
 *
 * Shards are printed with at least two digits ("%02u"), as in the seed design
 * (q1right42, q1age2wrong66).
 */
#ifndef LT_KEYS_H
#define LT_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "util.h"

/* Longest key: 32 (event) + ":q1000000c" + "unknown" + "wrong" + "1000" + NUL. */
#define KEY_MAX 96

/* Longest per-user or fans key, NUL included: 32 (event) + ":u:" + 64 (user)
 * + ":q1000000" + NUL = 109. */
#define KEY_USER_MAX 112

/* The four counters an accepted answer increments. */
#define KEYS_PER_ANSWER 4

enum key_outcome { KEY_WRONG = 0, KEY_RIGHT = 1 };

/* Each writer returns the key length (excluding NUL), always < KEY_MAX. */
size_t key_question(char *buf, const char *event, uint32_t q, enum key_outcome o, uint32_t shard);
size_t key_age(char *buf, const char *event, uint32_t q, uint32_t bucket1, enum key_outcome o,
               uint32_t shard);
size_t key_country(char *buf, const char *event, uint32_t q, const char *cc, enum key_outcome o,
                   uint32_t shard);
size_t key_option(char *buf, const char *event, uint32_t q, uint32_t option, uint32_t shard);
size_t key_state(char *buf, const char *event, uint32_t q);

/* Per-user and fans keys; buf holds KEY_USER_MAX bytes. The user must
 * already be valid (answer.h); a longer one is cut to fit. */
size_t key_user_marker(char *buf, const char *event, const char *user, uint32_t q);
size_t key_user_right(char *buf, const char *event, const char *user);
size_t key_user_ms(char *buf, const char *event, const char *user);
size_t key_fans_seq(char *buf, const char *event);
size_t key_fans_list(char *buf, const char *event, uint64_t slot);

/* The aggregator's keys on each node of a pool, written and read on that
 * node only (aggregate/agg_repair.h); buf holds KEY_NODE_MAX bytes.
 *   {event}:node                       the node's incarnation (an id)
 *   {event}:node:claim:{id}            who restores a node back empty
 *   {event}:node:restored:{id}         that restore is done (replicas >= 2)
 *   {event}:rr:{id}:{value}:{counter}  who repairs that copy of a counter
 *                                      ({counter}: the key past "{event}:") */
#define KEY_NODE_MAX 160
size_t key_node_incarnation(char *buf, const char *event);
/* {event}:pool: the pool the event's counters are placed on
 * (pool_record.h), on every node. */
size_t key_pool_record(char *buf, const char *event);
/* {event}:pool (epoch 0) or {event}:pool:{e}: the epoch's header;
 * {event}:pool:{e}:h{i}: its host i as "host:port". */
size_t key_pool_epoch(char *buf, const char *event, uint32_t epoch);
size_t key_pool_host(char *buf, const char *event, uint32_t epoch, uint32_t i);
/* {event}:pool:{e}:folded: the counters of every epoch before e are folded
 * into e's carry counters (keys_fold_prefix), on every node.
 * {event}:pool:{e}:writing: an ingest wrote epoch e's counters within the
 * last POOL_WRITING_TTL_S seconds (set by each ingest, placed by ring 0). */
size_t key_pool_folded(char *buf, const char *event, uint32_t epoch);
size_t key_pool_writing(char *buf, const char *event, uint32_t epoch);
size_t key_node_claim(char *buf, const char *event, const char *id);
size_t key_node_restored(char *buf, const char *event, const char *id);
size_t key_repair_claim(char *buf, const char *event, const char *id, uint64_t value,
                        const char *counter_key);

/* One accepted answer, already validated against the event file. */
struct answer_counters {
    uint32_t question;    /* question id */
    enum key_outcome outcome;
    uint32_t age_bucket;  /* 0-based */
    int country;          /* country index */
    uint32_t option;      /* 0-based */
};

struct answer_keys {
    char key[KEYS_PER_ANSWER][KEY_MAX];
    size_t len[KEYS_PER_ANSWER];
};

/*
 * Logical counters: a counter before its shard is drawn, numbered densely so
 * the ingest can add an answer with four array increments and draw the
 * shard once per batch write (each write still lands on a uniformly random
 * shard, and a burst on one counter becomes one increment per batch).
 * Per question (index qi in ef->questions), ids run from qi * KEYS_PER_QUESTION:
 *   +0, +1                          question wrong, right
 *   +2 + 2*b + o                    age bucket b (0-based), outcome o
 *   +2 + 2*B + 2*c + o              country index c, outcome o
 *   +2 + 2*B + 2*COUNTRY_COUNT + k  option k
 */
#define KEYS_PER_QUESTION(ef)                                                                      \
    (2u + 2u * (ef)->n_age_buckets + 2u * COUNTRY_COUNT + EVENT_MAX_OPTIONS)

uint32_t keys_counter_count(const struct eventfile *ef);
void keys_counters_for_answer(const struct eventfile *ef, uint32_t question_index,
                              const struct answer_counters *a, uint32_t out[KEYS_PER_ANSWER]);
/* How many shards the counter is spread over. */
uint32_t keys_counter_shards(const struct eventfile *ef, uint32_t id);
/* Writes the key of a logical counter with this shard (1-based); returns its length. */
size_t keys_counter_key(const struct eventfile *ef, uint32_t id, uint32_t shard, char *buf);
/* The same under a counter prefix (keys_epoch_prefix) instead of the event's name. */
size_t keys_counter_key_in(const struct eventfile *ef, const char *prefix, uint32_t id,
                           uint32_t shard, char *buf);
/* The counter prefix of pool epoch e: "{event}" for 0, "{event}~{e}" after. */
#define KEY_PREFIX_MAX 48
size_t keys_epoch_prefix(char buf[KEY_PREFIX_MAX], const char *event, uint32_t epoch);
/* The carry counters of a fold into epoch e (pool_record.h): "{event}~{e}:f",
 * so that "{event}~{e}:f:q1right01" is placed by ring e and shares no key
 * with the epoch's own counters. */
size_t keys_fold_prefix(char buf[KEY_PREFIX_MAX], const char *event, uint32_t epoch);

/* Builds the four keys of an answer with shards drawn uniformly from rng,
 * in this order: question, age, country, option. */
void keys_for_answer(const struct eventfile *ef, const struct answer_counters *a,
                     struct util_rng *rng, struct answer_keys *out);

#endif
