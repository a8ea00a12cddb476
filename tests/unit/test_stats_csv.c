#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "stats_csv.h"

static json_t *load(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (j == NULL)
        fail_msg("bad test JSON: %s", err.text);
    return j;
}

static char *build(const char *snapshot_json, size_t *len)
{
    json_t *j = load(snapshot_json);
    char *csv = stats_csv_build(j, len);
    json_decref(j);
    return csv;
}

static void test_closed_question_rows(void **state)
{
    (void)state;
    size_t len = 0;
    char *csv = build(
        "{\"questions\":[{\"id\":7,\"state\":\"closed\",\"text\":\"Which city?\","
        "\"options\":[\"London\",\"Dublin\",\"Paris\"],\"correct\":1,"
        "\"answers\":10,\"right\":6,\"wrong\":4,\"right_ratio\":0.6,\"by_answer\":[3,6,1],"
        "\"by_age\":[{\"bucket\":1,\"label\":\"under 18\",\"answers\":4,\"right\":1,\"wrong\":3},"
        "{\"bucket\":2,\"label\":\"18+\",\"answers\":6,\"right\":5,\"wrong\":1}],"
        "\"by_country\":[{\"country\":\"us\",\"answers\":7,\"right\":4,\"wrong\":3},"
        "{\"country\":\"unknown\",\"answers\":3,\"right\":2,\"wrong\":1}]}]}",
        &len);
    assert_non_null(csv);
    const char *want = STATS_CSV_HEADER
        "7,closed,total,,Which city?,10,6,4\r\n"
        "7,closed,age,1,under 18,4,1,3\r\n"
        "7,closed,age,2,18+,6,5,1\r\n"
        "7,closed,country,us,,7,4,3\r\n"
        "7,closed,country,unknown,,3,2,1\r\n"
        "7,closed,option,0,London,3,0,3\r\n"
        "7,closed,option,1,Dublin,6,6,0\r\n"
        "7,closed,option,2,Paris,1,0,1\r\n";
    assert_string_equal(csv, want);
    assert_int_equal(len, strlen(want));
    free(csv);
}

static void test_open_question_hides_option_split(void **state)
{
    (void)state;
    size_t len = 0;
    /* No "correct" while open: which option is right stays secret. */
    char *csv = build("{\"questions\":[{\"id\":2,\"state\":\"open\",\"text\":\"Q\","
                      "\"options\":[\"a\",\"b\"],\"answers\":5,\"right\":2,\"wrong\":3,"
                      "\"by_answer\":[2,3],\"by_age\":[],\"by_country\":[]}]}",
                      &len);
    assert_non_null(csv);
    assert_string_equal(csv, STATS_CSV_HEADER "2,open,total,,Q,5,2,3\r\n"
                                              "2,open,option,0,a,2,,\r\n"
                                              "2,open,option,1,b,3,,\r\n");
    free(csv);
}

static void test_quoting(void **state)
{
    (void)state;
    size_t len = 0;
    char *csv = build("{\"questions\":[{\"id\":1,\"state\":\"closed\","
                      "\"text\":\"Say \\\"hi\\\", then\\nleave\",\"correct\":0,"
                      "\"options\":[\"a,b\",\"plain\",\"cr\\rhere\",\"\\\"\"],"
                      "\"answers\":0,\"right\":0,\"wrong\":0,\"by_answer\":[0,0,0,0]}]}",
                      &len);
    assert_non_null(csv);
    assert_string_equal(csv, STATS_CSV_HEADER
                        "1,closed,total,,\"Say \"\"hi\"\", then\nleave\",0,0,0\r\n"
                        "1,closed,option,0,\"a,b\",0,0,0\r\n"
                        "1,closed,option,1,plain,0,0,0\r\n"
                        "1,closed,option,2,\"cr\rhere\",0,0,0\r\n"
                        "1,closed,option,3,\"\"\"\",0,0,0\r\n");
    free(csv);
}

static void test_missing_entries(void **state)
{
    (void)state;
    size_t len = 0;
    /* Entries without an integer id are skipped; missing counts stay empty. */
    char *csv = build("{\"questions\":[{\"id\":\"x\"},{\"id\":3}]}", &len);
    assert_non_null(csv);
    assert_string_equal(csv, STATS_CSV_HEADER "3,,total,,,,,\r\n");
    free(csv);

    csv = build("{\"questions\":[]}", &len);
    assert_non_null(csv);
    assert_string_equal(csv, STATS_CSV_HEADER);
    free(csv);

    json_t *j = load("{\"totals\":{}}");
    assert_null(stats_csv_build(j, &len));
    json_decref(j);
    j = load("[1,2]");
    assert_null(stats_csv_build(j, &len));
    json_decref(j);
}

static void test_large_report_grows(void **state)
{
    (void)state;
    /* Past the first 4 KiB allocation: the buffer grows and stays exact. */
    json_t *root = json_object();
    json_t *qs = json_array();
    json_object_set_new(root, "questions", qs);
    for (int i = 1; i <= 300; i++) {
        json_t *q = json_object();
        json_object_set_new(q, "id", json_integer(i));
        json_object_set_new(q, "state", json_string("not_open"));
        json_object_set_new(q, "answers", json_integer(1000000 + i));
        json_array_append_new(qs, q);
    }
    size_t len = 0;
    char *csv = stats_csv_build(root, &len);
    assert_non_null(csv);
    assert_int_equal(strlen(csv), len);
    assert_non_null(strstr(csv, "\r\n300,not_open,total,,,1000300,,\r\n"));
    size_t lines = 0;
    for (const char *p = csv; (p = strstr(p, "\r\n")) != NULL; p += 2)
        lines++;
    assert_int_equal(lines, 301);
    free(csv);
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_question_rows),
        cmocka_unit_test(test_open_question_hides_option_split),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_missing_entries),
        cmocka_unit_test(test_large_report_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
