/*
 * Command-line parsing shared by every binary: a table of long options, the
 * --help text generated from it, --version, and the API.md rule that an
 * unknown flag or a bad value prints one line to stderr and exits 2.
 */
#ifndef LT_CLI_H
#define LT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cli_opt {
    const char *name;  /* "event" for --event */
    const char *arg;   /* "FILE", or NULL for a flag without a value */
    const char *help;  /* one line; mention the default */
    int id;
};

/* Applies one option; on a bad value writes the reason into err (without the
 * program name) and returns false. val is NULL for flags without a value. */
typedef bool (*cli_set_fn)(void *ctx, int id, const char *val, char *err, size_t errlen);

enum cli_result {
    CLI_CONTINUE = 0, /* options applied, run */
    CLI_EXIT_OK,      /* --help or --version was printed: exit 0 */
    CLI_EXIT_USAGE,   /* an error line was printed: exit 2 */
};

/* synopsis: one line after the program name; about: paragraph(s) printed after
 * the options (examples, environment). --help and --version are added. */
enum cli_result cli_parse(int argc, char **argv, const char *prog, const char *synopsis,
                          const char *about, const struct cli_opt *opts, size_t nopts,
                          cli_set_fn set, void *ctx);

/* Value helpers for cli_set_fn implementations: parse, or explain in err. */
bool cli_u32(const char *val, uint32_t min, uint32_t max, uint32_t *out, char *err, size_t errlen);
bool cli_hostport(const char *val, char *err, size_t errlen);

/* For checks after parsing (a required flag missing): prints
 * "prog: message (see --help)" to stderr. Returns CLI_EXIT_USAGE. */
enum cli_result cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
