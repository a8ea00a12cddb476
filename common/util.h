/*
 * Small shared helpers: bounded number parsing, clocks, a per-thread PRNG.
 *
 * Parsers return true on success and write through the out-parameter only
 * then (memcached safe_strtoull style); they never accept trailing garbage,
 * signs where none belong, or values outside [min, max].
 */
#ifndef LT_UTIL_H
#define LT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

bool util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Writes the decimal form of v (no NUL, at most 20 bytes) and returns its
 * length: on the hot paths snprintf costs more than what it formats. */
size_t util_format_u64(char *buf, uint64_t v);
bool util_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

/* "HOST:PORT" (HOST may be a bracketed IPv6 literal). host is NUL-terminated. */
bool util_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

/* Reads a whole small file (at most maxlen bytes) into a malloc'd NUL-terminated
 * buffer owned by the caller. Returns NULL and sets errno on failure. */
char *util_read_file(const char *path, size_t maxlen, size_t *len);

/* Milliseconds on CLOCK_MONOTONIC: for deadlines and intervals. */
uint64_t util_mono_ms(void);
/* Microseconds on CLOCK_MONOTONIC. */
uint64_t util_mono_us(void);
/* Writes the message into err (when err is not NULL and errlen > 0) and
 * returns false: the error path of a function that reports in (err, errlen). */
bool util_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sleeps ms milliseconds, a signal notwithstanding. */
void util_sleep_ms(uint64_t ms);
/* Milliseconds since the epoch: only for timestamps shown to people or shared
 * between processes (question open times). */
uint64_t util_wall_ms(void);
/* ISO 8601 UTC with milliseconds, "2026-11-22T20:15:03.120Z"; buf >= 25 bytes. */
void util_format_iso8601(uint64_t wall_ms, char *buf, size_t len);

/* Raises the open-files soft limit to the hard limit: a server holding
 * thousands of connections needs more than the usual 1024. Best effort. */
void util_raise_nofile(void);

/* xoshiro-style PRNG; one per thread, never shared. */
struct util_rng {
    uint64_t s[2];
};
void util_rng_seed(struct util_rng *rng, uint64_t seed);
uint64_t util_rng_next(struct util_rng *rng);
/* Uniform in [0, n), n > 0, without modulo bias. */
uint32_t util_rng_below(struct util_rng *rng, uint32_t n);

#endif
