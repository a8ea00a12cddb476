/* libFuzzer: the answer body parser (ingest/answer.h) on any bytes, against
 * the example event. Its fast reader and the jansson reader must agree on
 * every body: the same verdict, the same answer or the same error. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "eventfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct eventfile ef;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    if (!eventfile_load(LIVETALLY_FUZZ_EVENT, &ef, err, sizeof(err))) {
        fprintf(stderr, "fuzz_answer: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct answer a, b;
    struct answer_error ea = {0}, eb = {0};
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    bool oka = answer_parse(&ef, (const char *)data, size, &a, &ea);
    bool okb = answer_parse_jansson(&ef, (const char *)data, size, &b, &eb);
    if (oka != okb)
        abort();
    if (oka && (a.question != b.question || a.question_index != b.question_index ||
                a.option != b.option || a.age != b.age || a.country != b.country ||
                a.has_user != b.has_user || (a.has_user && strcmp(a.user, b.user) != 0)))
        abort();
    if (!oka && (ea.status != eb.status || strcmp(ea.error, eb.error) != 0 ||
                 (ea.field == NULL) != (eb.field == NULL) ||
                 (ea.field != NULL && strcmp(ea.field, eb.field) != 0)))
        abort();
    return 0;
}
