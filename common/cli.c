#include "cli.h"
#include "util.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS 64
/* Not -1: getopt_long returns -1 at the end of the options. */
#define ID_HELP -3
#define ID_VERSION -2

static void print_help(const char *prog, const char *synopsis, const char *about,
                       const struct cli_opt *opts, size_t n)
{
    printf("Usage: %s %s\n\nOptions:\n", prog, synopsis);
    for (size_t i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        printf("  %-28s %s\n", left, opts[i].help);
    }
    printf("  %-28s %s\n", "--help", "print this help and exit");
    printf("  %-28s %s\n", "--version", "print the version and exit");
    if (about && *about)
        printf("\n%s", about);
}

enum cli_result cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    return CLI_EXIT_USAGE;
}

enum cli_result cli_parse(int argc, char **argv, const char *prog, const char *synopsis,
                          const char *about, const struct cli_opt *opts, size_t nopts,
                          cli_set_fn set, void *ctx)
{
    struct option longopts[MAX_OPTS + 3];
    if (nopts > MAX_OPTS)
        return cli_usage_error(prog, "internal error: too many options");
    size_t k = 0;
    for (size_t i = 0; i < nopts; i++)
        longopts[k++] = (struct option){opts[i].name, opts[i].arg ? required_argument : no_argument,
                                        NULL, 1000 + (int)i};
    longopts[k++] = (struct option){"help", no_argument, NULL, ID_HELP};
    longopts[k++] = (struct option){"version", no_argument, NULL, ID_VERSION};
    longopts[k] = (struct option){NULL, 0, NULL, 0};

    opterr = 0; /* our own one-line messages */
    optind = 0; /* 0, not 1: glibc then resets all of getopt's state */
    for (;;) {
        int prev = optind ? optind : 1;
        int c = getopt_long(argc, argv, ":", longopts, NULL);
        if (c == -1)
            break;
        if (c == ID_HELP) {
            print_help(prog, synopsis, about, opts, nopts);
            return CLI_EXIT_OK;
        }
        if (c == ID_VERSION) {
            printf("%s %s\n", prog, LIVETALLY_VERSION);
            return CLI_EXIT_OK;
        }
        if (c == '?')
            return cli_usage_error(prog, "unknown flag '%s'", argv[prev]);
        if (c == ':')
            return cli_usage_error(prog, "flag '%s' needs a value", argv[prev]);
        const struct cli_opt *o = &opts[c - 1000];
        char err[256] = "";
        if (!set(ctx, o->id, optarg, err, sizeof(err)))
            return cli_usage_error(prog, "--%s %s: %s", o->name, optarg ? optarg : "", err);
    }
    if (optind < argc)
        return cli_usage_error(prog, "unexpected argument '%s'", argv[optind]);
    return CLI_CONTINUE;
}

bool cli_u32(const char *val, uint32_t min, uint32_t max, uint32_t *out, char *err, size_t errlen)
{
    if (util_parse_u32(val, min, max, out))
        return true;
    snprintf(err, errlen, "expected a whole number from %u to %u", min, max);
    return false;
}

bool cli_hostport(const char *val, char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    if (util_parse_hostport(val, host, sizeof(host), &port))
        return true;
    snprintf(err, errlen, "expected HOST:PORT, e.g. 127.0.0.1:8080");
    return false;
}
