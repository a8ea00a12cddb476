#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define LOG_COMPONENT_MAX 32
#define LOG_LINE_MAX 2048

/* The only process-wide state: written by log_init before any thread starts,
 * read by every thread afterwards. The level is atomic so a later change
 * (e.g. on a signal-driven reload) is still well defined. */
static _Atomic int log_level = LOG_INFO;
static char log_component[LOG_COMPONENT_MAX + 1] = "livetally";

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_init(const char *component, enum log_level level)
{
    if (component != NULL && component[0] != '\0') {
        size_t n = strlen(component);
        if (n > LOG_COMPONENT_MAX)
            n = LOG_COMPONENT_MAX;
        memcpy(log_component, component, n);
        log_component[n] = '\0';
    }
    if ((int)level < (int)LOG_ERROR)
        level = LOG_ERROR;
    if ((int)level > (int)LOG_DEBUG)
        level = LOG_DEBUG;
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

bool log_parse_level(const char *s, enum log_level *out)
{
    if (s == NULL)
        return false;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < LT_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if ((int)level < (int)LOG_ERROR || (int)level > (int)LOG_DEBUG)
        level = LOG_ERROR;
    char line[LOG_LINE_MAX];
    char ts[32];
    util_format_iso8601(util_wall_ms(), ts, sizeof(ts));
    int head = snprintf(line, sizeof(line), "%s %s %s ", ts, log_component, level_names[level]);
    if (head < 0)
        return;
    size_t n = (size_t)head;

    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (body < 0)
        body = 0;
    size_t end = n + (size_t)body;
    if (end > sizeof(line) - 2) {
        /* Truncated: mark it so a reader does not take it for the whole message. */
        end = sizeof(line) - 2;
        memcpy(line + end - 3, "...", 3);
    }
    /* One message, one line: a newline inside a value would forge a line. */
    for (size_t i = n; i < end; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[end++] = '\n';

    /* A single write(2) keeps lines of concurrent threads from interleaving
     * (stdio would split long lines across its buffer). */
    const char *p = line;
    while (end > 0) {
        ssize_t w = write(STDERR_FILENO, p, end);
        if (w <= 0)
            return;
        p += w;
        end -= (size_t)w;
    }
}
