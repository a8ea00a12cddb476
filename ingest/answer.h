/*
 * Parsing and validation of one answer submission (API.md section 3). Pure:
 * no I/O, no state beyond the event file, so a table of inputs tests it.
 *
 *   {"question": 3, "answer": 2, "age": 27, "country": "us", "user": "fan-8812"}
 */
#ifndef LT_ANSWER_H
#define LT_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventfile.h"
#include "fans.h"
#include "keys.h"

#define ANSWER_USER_MAX FANS_USER_MAX /* fans_user_ok: the one rule */

struct answer {
    uint32_t question;   /* question id */
    int question_index;  /* index into ef->questions */
    uint32_t option;     /* the chosen option, 0-based */
    uint32_t age;
    int country;         /* country index, COUNTRY_UNKNOWN when missing or unknown */
    bool has_user;
    char user[ANSWER_USER_MAX + 1];
};

/* Why an answer was refused: the HTTP status and the API's error fields. */
struct answer_error {
    int status;          /* 400 or 404 */
    const char *error;   /* "invalid_json", "invalid_field", "unknown_question" */
    const char *field;   /* for invalid_field, else NULL */
};

/* true when the body is a valid answer for this event. */
bool answer_parse(const struct eventfile *ef, const char *body, size_t len, struct answer *out,
                  struct answer_error *err);

/* answer_parse with jansson alone, never the fast reader (tests: the two
 * must agree on every body). */
bool answer_parse_jansson(const struct eventfile *ef, const char *body, size_t len,
                          struct answer *out, struct answer_error *err);

/* The counters it increments; right or wrong is decided here, from the event
 * file, never from anything the client sent. */
void answer_counters(const struct eventfile *ef, const struct answer *a,
                     struct answer_counters *out);

/* "application/json", optionally with parameters ("; charset=utf-8"),
 * case-insensitive. NULL is not JSON. */
bool answer_content_type_ok(const char *content_type);

#endif
