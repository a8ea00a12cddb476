/*
 * Numbers with units, parsed once for every flag of the load tester (wrk
 * units.c style). Parsers are pure, return true on success and write the
 * out-parameter only then.
 *
 *   duration  "250us" "500ms" "10s" "2m" "1h" "1.5s"; a bare number is seconds
 *   count     "5000" "20k" "1.5M" "2G" (the result must be a whole number)
 *   rate      a count that may be fractional and may end in "/s": "20k" "2.5/s"
 *   factor    "60" "1.5" "60x"
 *
 * Only plain decimal digits with an optional fraction are read: no sign, no
 * exponent, no hex, no "inf"/"nan", no white space (strtod accepts all of them).
 */
#ifndef LT_LOADUNITS_H
#define LT_LOADUNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOADUNITS_US_PER_S 1000000ull

bool loadunits_duration_us(const char *s, uint64_t min_us, uint64_t max_us, uint64_t *out);
bool loadunits_count(const char *s, uint64_t min, uint64_t max, uint64_t *out);
bool loadunits_rate(const char *s, double min, double max, double *out);
bool loadunits_factor(const char *s, double min, double max, double *out);

/* A duration for people: "250us", "1.5ms", "12.3s", "2m05s", "1h02m". */
void loadunits_format_duration(uint64_t us, char *buf, size_t len);

#endif
