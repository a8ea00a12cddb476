#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

struct level_case {
    const char *in;
    bool ok;
    enum log_level want;
};

static const struct level_case level_cases[] = {
    {"error", true, LOG_ERROR}, {"warn", true, LOG_WARN},    {"info", true, LOG_INFO},
    {"debug", true, LOG_DEBUG}, {NULL, false, LOG_INFO},     {"", false, LOG_INFO},
    {"INFO", false, LOG_INFO},  {"warning", false, LOG_INFO}, {"info ", false, LOG_INFO},
    {"trace", false, LOG_INFO}, {"3", false, LOG_INFO},
};

static void test_parse_level_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < LT_ARRAY_LEN(level_cases); i++) {
        const struct level_case *c = &level_cases[i];
        enum log_level out = LOG_INFO;
        bool ok = log_parse_level(c->in, &out);
        if (ok != c->ok)
            fail_msg("case %zu \"%s\": ok=%d", i, c->in ? c->in : "(null)", ok);
        assert_int_equal(out, c->want);
    }
}

static int evaluated;

static int side_effect(void)
{
    evaluated++;
    return 1;
}

static void test_level_gates_arguments(void **state)
{
    (void)state;
    log_init("test", LOG_WARN);
    assert_int_equal(log_get_level(), LOG_WARN);
    evaluated = 0;
    log_debug("never %d", side_effect());
    log_info("never %d", side_effect());
    assert_int_equal(evaluated, 0);
    log_init("test", LOG_DEBUG);
    assert_int_equal(log_get_level(), LOG_DEBUG);
}

/* Runs fn with stderr redirected to a file and returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/lt_test_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fd);
    char *out = util_read_file(path, 1 << 20, NULL);
    unlink(path);
    assert_non_null(out);
    return out;
}

static void write_two_lines(void)
{
    log_init("ingest", LOG_INFO);
    log_info("listening addr=%s", "127.0.0.1:8080");
    log_error("store down node=%d", 3);
    log_debug("hidden");
}

/* "2026-11-22T20:15:03.120Z ingest INFO listening addr=127.0.0.1:8080" */
static void test_line_format(void **state)
{
    (void)state;
    char *out = capture_stderr(write_two_lines);
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    assert_int_equal(strlen(out), 24 + strlen(" ingest INFO listening addr=127.0.0.1:8080"));
    assert_string_equal(out + 24, " ingest INFO listening addr=127.0.0.1:8080");
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[23], 'Z');
    assert_string_equal(second + 24, " ingest ERROR store down node=3\n");
    free(out);
}

static void write_newline_and_long(void)
{
    log_init("agg", LOG_INFO);
    log_warn("value=%s", "a\nforged 2026 agg ERROR x");
    char big[5000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("big=%s", big);
}

static void test_one_line_per_message(void **state)
{
    (void)state;
    char *out = capture_stderr(write_newline_and_long);
    size_t lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2);
    char *second = strchr(out, '\n') + 1;
    *(second - 1) = '\0';
    assert_string_equal(out + 24, " agg WARN value=a forged 2026 agg ERROR x");
    /* The long message is cut and marked, still one line. */
    size_t n = strlen(second);
    assert_true(n < 4096);
    assert_memory_equal(second + n - 4, "...\n", 4);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_level_table),
        cmocka_unit_test(test_level_gates_arguments),
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_one_line_per_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
