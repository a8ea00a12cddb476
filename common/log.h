/*
 * Level-gated logging to stderr in key=value style:
 *   2026-11-22T20:15:03.120Z ingest INFO listening addr=127.0.0.1:8080
 * Arguments are not evaluated when the level is off.
 */
#ifndef LT_LOG_H
#define LT_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Process-wide; set once at start-up before threads exist. */
void log_init(const char *component, enum log_level level);
bool log_parse_level(const char *s, enum log_level *out);
enum log_level log_get_level(void);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_get_level())                                                              \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)

#endif
