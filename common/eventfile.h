/*
 * The event file (API.md section 2): what the show asks and how its counters
 * are sharded. Loaded once at start-up and read-only afterwards, so every
 * thread may share one.
 */
#ifndef LT_EVENTFILE_H
#define LT_EVENTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "country.h"

#define EVENT_NAME_MAX 32
#define EVENT_MAX_QUESTIONS 1000
#define EVENT_MAX_OPTIONS 16
#define EVENT_MAX_AGE_BUCKETS 16
#define EVENT_MAX_SHARDS 1000
#define EVENT_MAX_QUESTION_ID 1000000u
#define EVENT_MAX_TTL_S 2592000u /* memcached reads larger TTLs as absolute times */
#define EVENT_MAX_FILE_BYTES (4u << 20)
#define AGE_MIN 1
#define AGE_MAX 130

struct event_age_bucket {
    char *label; /* owned */
    uint32_t max; /* inclusive upper bound; strictly increasing across buckets */
};

struct event_question {
    uint32_t id;
    char *text;      /* owned */
    char **options;  /* owned, n_options strings */
    uint32_t n_options;
    uint32_t correct; /* index into options */
    bool open;        /* accepts answers from start-up */
};

struct eventfile {
    char name[EVENT_NAME_MAX + 1];
    uint32_t shards;
    uint32_t country_shards;
    uint16_t country_shard_count[COUNTRY_COUNT]; /* per country index, hot or default */
    struct event_age_bucket *age_buckets; /* owned */
    uint32_t n_age_buckets;
    uint32_t ttl_s;
    uint64_t min_country_answers;
    struct event_question *questions; /* owned, sorted by id */
    uint32_t n_questions;
};

/* Parses and validates the JSON text of an event file. On failure returns
 * false and writes one line naming the offending field into err, e.g.
 * "questions[2].correct: must be an index into options (0..3)". */
bool eventfile_parse(const char *json, size_t len, struct eventfile *ef, char *err, size_t errlen);

/* Reads and parses a file; the error names the path too. */
bool eventfile_load(const char *path, struct eventfile *ef, char *err, size_t errlen);

void eventfile_free(struct eventfile *ef);

/* The question with this id, or NULL. O(log n). */
const struct event_question *eventfile_question(const struct eventfile *ef, uint32_t id);

/* Index of the question in ef->questions (questions are sorted by id), or -1. */
int eventfile_question_index(const struct eventfile *ef, uint32_t id);

/* 0-based age bucket index for an age in AGE_MIN..AGE_MAX. */
uint32_t eventfile_age_bucket(const struct eventfile *ef, uint32_t age);

#endif
