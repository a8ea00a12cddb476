/*
 * ISO 3166-1 alpha-2 country codes, plus "unknown".
 *
 * Countries are identified by a dense index so per-country arrays are cheap:
 * 0..COUNTRY_COUNT-2 are the ISO codes in alphabetical order, and
 * COUNTRY_UNKNOWN (the last index) is "unknown".
 */
#ifndef LT_COUNTRY_H
#define LT_COUNTRY_H

#include <stdbool.h>
#include <stddef.h>

#define COUNTRY_COUNT 250 /* 249 assigned ISO codes + "unknown" */
#define COUNTRY_UNKNOWN (COUNTRY_COUNT - 1)

/* Case-insensitive; "uk" is taken as "gb"; anything else that is not an
 * assigned code (including NULL or len 0) maps to COUNTRY_UNKNOWN. */
int country_lookup(const char *code, size_t len);

/* Like country_lookup, but returns -1 instead of COUNTRY_UNKNOWN for a code
 * that is not assigned; "unknown" itself is accepted. For validating config. */
int country_lookup_strict(const char *code, size_t len);

/* Lower-case code of an index ("gb", ..., "unknown"); NULL out of range. */
const char *country_code(int index);

#endif
