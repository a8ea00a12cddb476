/* The load tester's flags: argument vectors that must parse (with the
 * values they must give) and those that must be refused with exit 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "loadopts.h"
#include "util.h"

#define MAX_ARGS 32

/* Parses a NULL-terminated list of arguments after the program name, in a
 * child process: getopt keeps state between calls, and the error lines go
 * to /dev/null there instead of the test log. The parsed options come back
 * through a pipe (the strings they point to are at the same addresses). */
static enum cli_result parse(struct loadopts *o, const char *const *args)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = (char *)"livetally-loadtest";
    for (size_t i = 0; args[i] != NULL && argc <= MAX_ARGS; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        struct loadopts parsed;
        enum cli_result r = loadopts_parse(argc, argv, &parsed);
        ssize_t w = write(fds[1], &parsed, sizeof(parsed));
        _exit(w == (ssize_t)sizeof(parsed) ? (int)r : 99);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < sizeof(*o)) {
        ssize_t n = read(fds[0], (char *)o + got, sizeof(*o) - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(got, sizeof(*o));
    return (enum cli_result)WEXITSTATUS(status);
}

static void test_defaults_and_values(void **state)
{
    (void)state;
    struct loadopts o;
    const char *a[] = {"--event", "e.json", "--duration", "10s", NULL};
    assert_int_equal(parse(&o, a), CLI_CONTINUE);
    assert_string_equal(o.target, LOADOPTS_DEFAULT_TARGET);
    assert_string_equal(o.event_path, "e.json");
    assert_int_equal(o.profile, LOADPROFILE_STEADY);
    assert_true(o.rate == 1000);
    assert_int_equal(o.duration_us, 10000000);
    assert_int_equal(o.connections, 32);
    assert_int_equal(o.pipeline, 1);
    assert_int_equal(o.threads, 0);
    assert_int_equal(o.timeout_us, 10000000);

    const char *b[] = {"--event=e.json", "--profile", "concert", "--rate", "20k",
                       "--period", "2m", "--window", "30s", "--speedup", "60x",
                       "--questions", "1,3-5", "--users", "200k", "--user-prefix", "u:",
                       "--admin-token-file", "t", "--connections", "64", "--threads", "2",
                       "--pipeline", "4", NULL};
    assert_int_equal(parse(&o, b), CLI_CONTINUE);
    assert_int_equal(o.profile, LOADPROFILE_CONCERT);
    assert_true(o.rate == 20000);
    assert_int_equal(o.period_us, 120000000);
    assert_int_equal(o.window_us, 30000000);
    assert_true(o.speedup == 60);
    assert_int_equal(o.n_question_ids, 4);
    assert_int_equal(o.question_ids[0], 1);
    assert_int_equal(o.question_ids[3], 5);
    assert_int_equal(o.users, 200000);
    assert_string_equal(o.user_prefix, "u:");
    assert_int_equal(o.connections, 64);
    assert_int_equal(o.threads, 2);
    assert_int_equal(o.pipeline, 4);

    const char *c[] = {"--replay", "r.jsonl", "--speedup", "2", "--record", "x", NULL};
    assert_int_equal(parse(&o, c), CLI_CONTINUE);
    assert_null(o.event_path);

    const char *d[] = {"--event", "e", "--max", "--requests", "1M", "--seed", "7", NULL};
    assert_int_equal(parse(&o, d), CLI_CONTINUE);
    assert_true(o.closed_loop);
    assert_int_equal(o.requests, 1000000);
    assert_true(o.seed_set);
    assert_int_equal(o.seed, 7);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const cases[][MAX_ARGS] = {
        {"--bogus", NULL},
        {"--event", NULL},                                   /* missing value */
        {"--event", "e", "--duration", "10x", NULL},         /* bad unit */
        {"--event", "e", "--rate", "-5", "--duration", "1s", NULL},
        {"--event", "e", "--rate", "0", "--duration", "1s", NULL},
        {"--event", "e", "--connections", "0", "--duration", "1s", NULL},
        {"--event", "e", "--pipeline", "257", "--duration", "1s", NULL},
        {"--event", "e", "--profile", "wave", "--duration", "1s", NULL},
        {"--event", "e", NULL},                              /* steady without a bound */
        {"--event", "e", "--profile", "burst", NULL},        /* burst without a bound */
        {"--duration", "1s", NULL},                          /* no event */
        {"--event", "e", "--profile", "concert", NULL},      /* no admin token */
        {"--event", "e", "--profile", "burst", "--duration", "1m", "--window", "20m", NULL},
        {"--event", "e", "--duration", "1s", "--speedup", "2", NULL},
        {"--event", "e", "--duration", "1s", "--window", "2s", NULL},
        {"--event", "e", "--max", "--rate", "5", "--duration", "1s", NULL},
        {"--event", "e", "--max", "--profile", "burst", "--duration", "1s", NULL},
        {"--replay", "r", "--profile", "steady", NULL},
        {"--replay", "r", "--rate", "5", NULL},
        {"--replay", "r", "--duration", "5s", NULL},
        {"--replay", "r", "--users", "5", NULL},
        {"--replay", "r", "--verify", "http://127.0.0.1:1", NULL}, /* verify needs the event */
        {"--event", "e", "--duration", "1s", "--threads", "9", "--connections", "8", NULL},
        {"--event", "e", "--duration", "1s", "--questions", "1,,2", NULL},
        {"--event", "e", "--duration", "1s", "--questions", "3-1", NULL},
        {"--event", "e", "--duration", "1s", "--questions", "1,1", NULL},
        {"--event", "e", "--duration", "1s", "--questions", "0", NULL},
        {"--event", "e", "--duration", "1s", "--log-level", "loud", NULL},
        {"--event", "e", "--duration", "1s", "--seed", "-1", NULL},
        {"--event", "e", "--duration", "1s", "stray", NULL},
        {"--event", "e", "--duration", "1s", "--verify-delta", NULL}, /* delta of no verify */
        /* two of --json, --results, --report on stdout */
        {"--event", "e", "--duration", "1s", "--json", "-", "--report", "-", NULL},
        {"--event", "e", "--duration", "1s", "--results", "-", "--report", "-", NULL},
        {"--event", "e", "--duration", "1s", "--json", "-", "--results", "-", NULL},
    };
    for (size_t i = 0; i < LT_ARRAY_LEN(cases); i++) {
        struct loadopts o;
        enum cli_result r = parse(&o, cases[i]);
        if (r != CLI_EXIT_USAGE) {
            print_error("case %zu was not refused (%d)\n", i, r);
            fail();
        }
    }
}

static void test_question_lists(void **state)
{
    (void)state;
    uint32_t ids[EVENT_MAX_QUESTIONS];
    uint32_t n = 0;
    char err[128];
    assert_true(loadopts_parse_questions("7", ids, &n, err, sizeof(err)));
    assert_int_equal(n, 1);
    assert_true(loadopts_parse_questions("5-7,1", ids, &n, err, sizeof(err)));
    assert_int_equal(n, 4);
    assert_int_equal(ids[2], 7);
    assert_int_equal(ids[3], 1);
    assert_false(loadopts_parse_questions("1-1001", ids, &n, err, sizeof(err))); /* > 1000 */
    assert_false(loadopts_parse_questions("1,", ids, &n, err, sizeof(err)));
    assert_false(loadopts_parse_questions("", ids, &n, err, sizeof(err)));
    assert_false(loadopts_parse_questions("a", ids, &n, err, sizeof(err)));
    assert_false(loadopts_parse_questions("1-", ids, &n, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_values),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_question_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
