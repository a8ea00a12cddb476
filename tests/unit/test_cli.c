/* Command-line parsing (API.md section 1): --help, --version, exit 2 with one
 * line for bad flags and values, and the value parsers for setters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"

enum { OPT_EVENT = 1, OPT_INTERVAL, OPT_LISTEN, OPT_VERBOSE };

static const struct cli_opt OPTS[] = {
    {"event", "FILE", "the event file (required)", OPT_EVENT},
    {"interval", "MS", "aggregation period (default 1000)", OPT_INTERVAL},
    {"listen", "HOST:PORT", "listen address (default 127.0.0.1:8080)", OPT_LISTEN},
    {"verbose", NULL, "log more", OPT_VERBOSE},
};

struct conf {
    const char *event;
    uint32_t interval;
    bool verbose;
    int calls;
    bool saw_null_val; /* a flag without a value gets NULL */
};

static bool set(void *ctx, int id, const char *val, char *err, size_t errlen)
{
    struct conf *c = ctx;
    c->calls++;
    switch (id) {
    case OPT_EVENT:
        if (val[0] == '\0') {
            snprintf(err, errlen, "must not be empty");
            return false;
        }
        c->event = val;
        return true;
    case OPT_INTERVAL:
        return cli_u32(val, 10, 60000, &c->interval, err, errlen);
    case OPT_LISTEN:
        return cli_hostport(val, err, errlen);
    case OPT_VERBOSE:
        c->saw_null_val = val == NULL;
        c->verbose = true;
        return true;
    }
    snprintf(err, errlen, "unexpected id %d", id);
    return false;
}

/* What cli_parse printed on each stream. */
struct out {
    char stdout_text[4096];
    char stderr_text[1024];
};

static void slurp(FILE *f, char *buf, size_t len)
{
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs cli_parse on a NULL-terminated argument list with stdout and stderr
 * captured in temporary files. */
static enum cli_result parse(struct conf *c, struct out *o, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"lt-test";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;

    FILE *fo = tmpfile(), *fe = tmpfile();
    assert_non_null(fo);
    assert_non_null(fe);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    enum cli_result r = cli_parse(argc, argv, "lt-test", "--event FILE [options]",
                                  "Example: lt-test --event show.json\n", OPTS,
                                  sizeof(OPTS) / sizeof(OPTS[0]), set, c);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    slurp(fo, o->stdout_text, sizeof(o->stdout_text));
    slurp(fe, o->stderr_text, sizeof(o->stderr_text));
    return r;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_options_applied(void **state)
{
    (void)state;
    struct conf c = {0};
    struct out o;
    const char *args[] = {"--event", "show.json", "--interval=250", "--verbose",
                          "--listen", "127.0.0.1:9000", NULL};
    assert_int_equal(parse(&c, &o, args), CLI_CONTINUE);
    assert_string_equal(c.event, "show.json");
    assert_int_equal(c.interval, 250);
    assert_true(c.verbose);
    assert_true(c.saw_null_val);
    assert_int_equal(c.calls, 4);
    assert_string_equal(o.stdout_text, "");
    assert_string_equal(o.stderr_text, "");

    /* No arguments at all is fine for the parser (required flags are checked later). */
    struct conf c2 = {0};
    const char *none[] = {NULL};
    assert_int_equal(parse(&c2, &o, none), CLI_CONTINUE);
    assert_int_equal(c2.calls, 0);

    /* The last of a repeated flag wins, as each is applied in turn. */
    struct conf c3 = {0};
    const char *twice[] = {"--event", "a.json", "--event", "b.json", NULL};
    assert_int_equal(parse(&c3, &o, twice), CLI_CONTINUE);
    assert_string_equal(c3.event, "b.json");
}

/* Regression: --help once had the value getopt_long returns at the end of
 * the options (-1), so it ended parsing silently and printed nothing. */
static void test_help(void **state)
{
    (void)state;
    struct conf c = {0};
    struct out o;
    const char *args[] = {"--help", NULL};
    assert_int_equal(parse(&c, &o, args), CLI_EXIT_OK);
    assert_string_equal(o.stderr_text, "");
    assert_non_null(strstr(o.stdout_text, "Usage: lt-test --event FILE [options]\n"));
    assert_non_null(strstr(o.stdout_text, "--event FILE"));
    assert_non_null(strstr(o.stdout_text, "the event file (required)"));
    assert_non_null(strstr(o.stdout_text, "--listen HOST:PORT"));
    assert_non_null(strstr(o.stdout_text, "--verbose"));
    assert_non_null(strstr(o.stdout_text, "--help"));
    assert_non_null(strstr(o.stdout_text, "--version"));
    assert_non_null(strstr(o.stdout_text, "Example: lt-test --event show.json\n"));
    assert_int_equal(c.calls, 0);

    /* --help wins over options after it, which are not applied. */
    struct conf c2 = {0};
    const char *args2[] = {"--help", "--event", "x.json", NULL};
    assert_int_equal(parse(&c2, &o, args2), CLI_EXIT_OK);
    assert_int_equal(c2.calls, 0);
}

static void test_version(void **state)
{
    (void)state;
    struct conf c = {0};
    struct out o;
    const char *args[] = {"--version", NULL};
    assert_int_equal(parse(&c, &o, args), CLI_EXIT_OK);
    assert_string_equal(o.stdout_text, "lt-test " LIVETALLY_VERSION "\n");
    assert_string_equal(o.stderr_text, "");
}

/* Every usage error: CLI_EXIT_USAGE, nothing on stdout, exactly one line on
 * stderr starting with the program name and containing the reason. */
static void test_usage_errors(void **state)
{
    (void)state;
    static const struct {
        const char *args[6];
        const char *want; /* a part of the one stderr line */
    } cases[] = {
        {{"--bogus", NULL}, "unknown flag '--bogus'"},
        {{"--event", "a.json", "--nope=1", NULL}, "unknown flag '--nope=1'"},
        {{"-x", NULL}, "unknown flag '-x'"},
        {{"--verbose=yes", NULL}, "--verbose"},
        {{"--event", NULL}, "flag '--event' needs a value"},
        {{"--event", "a.json", "--interval", NULL}, "flag '--interval' needs a value"},
        {{"--event", "", NULL}, "--event : must not be empty"},
        {{"--event=", NULL}, "--event : must not be empty"},
        {{"--interval", "5", NULL}, "--interval 5: expected a whole number from 10 to 60000"},
        {{"--interval", "60001", NULL}, "expected a whole number from 10 to 60000"},
        {{"--interval", "1k", NULL}, "expected a whole number from 10 to 60000"},
        {{"--interval", "-20", NULL}, "expected a whole number from 10 to 60000"},
        {{"--listen", "localhost", NULL}, "--listen localhost: expected HOST:PORT"},
        {{"--listen", "1.2.3.4:0", NULL}, "expected HOST:PORT"},
        {{"positional", NULL}, "unexpected argument 'positional'"},
        {{"--event", "a.json", "extra", NULL}, "unexpected argument 'extra'"},
        {{"extra", "--event", "a.json", NULL}, "unexpected argument 'extra'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c = {0};
        struct out o;
        enum cli_result r = parse(&c, &o, cases[i].args);
        if (r != CLI_EXIT_USAGE || o.stdout_text[0] != '\0' ||
            strncmp(o.stderr_text, "lt-test: ", 9) != 0 ||
            strstr(o.stderr_text, cases[i].want) == NULL || count_lines(o.stderr_text) != 1 ||
            strstr(o.stderr_text, "(see --help)\n") == NULL)
            fail_msg("case %zu: result %d, stdout '%s', stderr '%s', want '%s'", i, (int)r,
                     o.stdout_text, o.stderr_text, cases[i].want);
    }
}

/* The setter stops at the first bad value: later flags are not applied. */
static void test_stops_at_first_bad_value(void **state)
{
    (void)state;
    struct conf c = {0};
    struct out o;
    const char *args[] = {"--interval", "1", "--event", "a.json", NULL};
    assert_int_equal(parse(&c, &o, args), CLI_EXIT_USAGE);
    assert_int_equal(c.calls, 1);
    assert_null(c.event);
}

/* The state getopt keeps between calls does not leak from one parse into
 * the next (tests and binaries parse more than once). */
static void test_parses_repeatable(void **state)
{
    (void)state;
    struct out o;
    for (int i = 0; i < 3; i++) {
        struct conf bad = {0};
        const char *args_bad[] = {"--event", "a.json", "--bogus", "--verbose", NULL};
        assert_int_equal(parse(&bad, &o, args_bad), CLI_EXIT_USAGE);
        struct conf good = {0};
        const char *args_good[] = {"--verbose", "--event", "b.json", NULL};
        assert_int_equal(parse(&good, &o, args_good), CLI_CONTINUE);
        assert_string_equal(good.event, "b.json");
        assert_true(good.verbose);
    }
}

static void test_usage_error_line(void **state)
{
    (void)state;
    FILE *fe = tmpfile();
    assert_non_null(fe);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(fe), 2);
    enum cli_result r = cli_usage_error("lt-test", "--event is required (%d)", 7);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[256];
    slurp(fe, buf, sizeof(buf));
    assert_int_equal(r, CLI_EXIT_USAGE);
    assert_string_equal(buf, "lt-test: --event is required (7) (see --help)\n");
}

static void test_u32_table(void **state)
{
    (void)state;
    static const struct {
        const char *val;
        uint32_t min, max;
        bool ok;
        uint32_t want;
    } cases[] = {
        {"0", 0, 10, true, 0},
        {"10", 0, 10, true, 10},
        {"007", 0, 10, true, 7},
        {"4294967295", 0, UINT32_MAX, true, UINT32_MAX},
        {"4294967296", 0, UINT32_MAX, false, 0},
        {"18446744073709551616", 0, UINT32_MAX, false, 0},
        {"11", 0, 10, false, 0},
        {"4", 5, 10, false, 0},
        {"", 0, 10, false, 0},
        {"-1", 0, 10, false, 0},
        {"+1", 0, 10, false, 0},
        {" 1", 0, 10, false, 0},
        {"1 ", 0, 10, false, 0},
        {"1k", 0, 10000, false, 0},
        {"0x10", 0, 100, false, 0},
        {"1.0", 0, 10, false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t v = 12345;
        char err[128] = "";
        bool ok = cli_u32(cases[i].val, cases[i].min, cases[i].max, &v, err, sizeof(err));
        if (ok != cases[i].ok)
            fail_msg("case %zu '%s': want %s", i, cases[i].val, cases[i].ok ? "ok" : "refused");
        if (ok) {
            assert_int_equal(v, cases[i].want);
        } else {
            char want[128];
            snprintf(want, sizeof(want), "expected a whole number from %u to %u", cases[i].min,
                     cases[i].max);
            assert_string_equal(err, want);
            assert_int_equal(v, 12345); /* untouched */
        }
    }
}

static void test_hostport_table(void **state)
{
    (void)state;
    char longhost[300];
    memset(longhost, 'h', 260);
    strcpy(longhost + 260, ":80");
    static const struct {
        const char *val;
        bool ok;
    } cases[] = {
        {"127.0.0.1:8080", true},
        {"localhost:1", true},
        {"0.0.0.0:65535", true},
        {"[::1]:8080", true},
        {"[fe80::1]:80", true},
        {"127.0.0.1", false},
        {"127.0.0.1:", false},
        {":8080", false},
        {"127.0.0.1:0", false},
        {"127.0.0.1:65536", false},
        {"127.0.0.1:80x", false},
        {"127.0.0.1:-1", false},
        {"::1:80", false},
        {"[::1]", false},
        {"[::1]80", false},
        {"[]:80", false},
        {"[127.0.0.1]:80", false},
        {"a b:80", false},
        {"host/x:80", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[128] = "";
        bool ok = cli_hostport(cases[i].val, err, sizeof(err));
        if (ok != cases[i].ok)
            fail_msg("case %zu '%s': want %s", i, cases[i].val, cases[i].ok ? "ok" : "refused");
        if (!ok)
            assert_string_equal(err, "expected HOST:PORT, e.g. 127.0.0.1:8080");
    }
    char err[128];
    assert_false(cli_hostport(longhost, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_applied),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_stops_at_first_bad_value),
        cmocka_unit_test(test_parses_repeatable),
        cmocka_unit_test(test_usage_error_line),
        cmocka_unit_test(test_u32_table),
        cmocka_unit_test(test_hostport_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
