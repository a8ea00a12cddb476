#include "util.h"

#include <sys/resource.h>

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

size_t util_format_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

bool util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    /* Digits only: strtoull would accept leading white space, a sign (and
     * negate "-1" into 2^64-1) and a "0x" prefix with base 0. */
    if (s == NULL || *s == '\0')
        return false;
    uint64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool util_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (!util_parse_u64(s, min, max, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* A host name or address literal: no white space, no control characters, no
 * characters that would make the string ambiguous in a URL or a log line. */
static bool host_chars_ok(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '/' || c == '@' || c == ',')
            return false;
    }
    return true;
}

/*
 *   host:port        "127.0.0.1:8080", "localhost:80"
 *   [v6-literal]:port "[::1]:8080"
 * An unbracketed host with a colon is rejected: "::1:80" is ambiguous.
 */
bool util_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    if (s == NULL || host == NULL || port == NULL || hostlen == 0)
        return false;
    const char *h;
    size_t hn;
    const char *portstr;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return false;
        h = s + 1;
        hn = (size_t)(close - h);
        portstr = close + 2;
        if (memchr(h, ':', hn) == NULL) /* brackets are only for IPv6 literals */
            return false;
    } else {
        const char *colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return false;
        h = s;
        hn = (size_t)(colon - s);
        portstr = colon + 1;
    }
    if (hn == 0 || hn >= hostlen || !host_chars_ok(h, hn))
        return false;
    uint32_t p;
    if (!util_parse_u32(portstr, 1, 65535, &p))
        return false;
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (uint16_t)p;
    return true;
}

char *util_read_file(const char *path, size_t maxlen, size_t *len)
{
    char *buf = NULL;
    int fd = -1;
    int saved;

    if (path == NULL || maxlen >= SIZE_MAX - 1) {
        errno = EINVAL;
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        goto err;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        goto err;
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > maxlen) {
        errno = EFBIG;
        goto err;
    }

    /* The size from fstat is only a hint (pipes report 0, files grow), so
     * read until EOF with room for one byte more than allowed: reading it
     * proves the file is too large. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 2 : 4096;
    if (cap > maxlen + 2)
        cap = maxlen + 2;
    size_t n = 0;
    buf = malloc(cap);
    if (buf == NULL)
        goto err;
    for (;;) {
        if (n + 1 == cap) {
            if (cap == maxlen + 2) {
                /* n == maxlen + 1: one byte too many. */
                errno = EFBIG;
                goto err;
            }
            size_t ncap = cap * 2 > maxlen + 2 ? maxlen + 2 : cap * 2;
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL)
                goto err;
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto err;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > maxlen) {
            errno = EFBIG;
            goto err;
        }
    }
    close(fd);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;

err:
    saved = errno;
    free(buf);
    if (fd >= 0)
        close(fd);
    errno = saved;
    return NULL;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t util_mono_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000u;
}

uint64_t util_mono_us(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000u;
}

bool util_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

void util_sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

uint64_t util_wall_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000u;
}

void util_format_iso8601(uint64_t wall_ms, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    buf[0] = '\0';
    time_t secs = (time_t)(wall_ms / 1000u);
    struct tm tm;
    if ((uint64_t)secs != wall_ms / 1000u || gmtime_r(&secs, &tm) == NULL)
        return;
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(wall_ms % 1000u));
}

/* splitmix64 (Steele, Lea, Flood): spreads any seed, even 0 or a counter,
 * over the whole state, which xoroshiro needs to start well. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void util_rng_seed(struct util_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    rng->s[0] = splitmix64(&x);
    rng->s[1] = splitmix64(&x);
    if (rng->s[0] == 0 && rng->s[1] == 0) /* the one state it never leaves */
        rng->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoroshiro128+ (Blackman, Vigna 2018 constants 24/16/37): two words of
 * state, a few cycles per draw. Its lowest bits are weak, so callers that
 * need fewer bits (util_rng_below) take the high ones. */
uint64_t util_rng_next(struct util_rng *rng)
{
    uint64_t s0 = rng->s[0];
    uint64_t s1 = rng->s[1];
    uint64_t result = s0 + s1;
    s1 ^= s0;
    rng->s[0] = rotl(s0, 24) ^ s1 ^ (s1 << 16);
    rng->s[1] = rotl(s1, 37);
    return result;
}

/* Lemire's multiply-and-reject ("Fast random integer generation in an
 * interval", 2019): the high half of x * n is uniform in [0, n) once the
 * 2^32 mod n low values that would over-represent some results are redrawn;
 * no division on the common path. */
uint32_t util_rng_below(struct util_rng *rng, uint32_t n)
{
    if (n == 0)
        return 0;
    uint64_t m = (util_rng_next(rng) >> 32) * (uint64_t)n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (util_rng_next(rng) >> 32) * (uint64_t)n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void util_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
