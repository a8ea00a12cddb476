/* libFuzzer: the memcached reply parser (common/mc_reply.h) on any bytes.
 * Byte 0 picks the batch kind, byte 1 where the input is cut in two reads;
 * the rest is what the node sent. Besides the sanitizers' checks: a call
 * never takes more than it was given, and a result is one of the three. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mc_reply.h"

#define NOPS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum mc_kind kind = (enum mc_kind)(data[0] % 4);
    size_t cut = data[1];
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    struct store_op ops[NOPS];
    unsigned char seen[NOPS] = {0};
    memset(ops, 0, sizeof(ops));
    for (size_t i = 0; i < NOPS; i++) {
        ops[i] = (struct store_op){.key = "k", .keylen = 1, .node = (uint32_t)(i % 2),
                                   .status = STORE_UNAVAILABLE};
        ops[i].want_value = kind == MC_INCR && i % 4 == 0;
        ops[i].want_blob = kind == MC_MGET && i % 4 == 2;
    }
    struct mc_reply x = {.kind = kind, .ops = ops, .n = NOPS, .seen = seen, .node = 0};
    size_t first = cut < len ? cut : len;
    size_t used = 0;
    enum mc_reply_result r = mc_reply_parse(&x, buf, first, &used);
    if (used > first)
        abort();
    if (r == MC_REPLY_MORE) {
        size_t used2 = 0;
        r = mc_reply_parse(&x, buf + used, len - used, &used2);
        if (used2 > len - used)
            abort();
    }
    if (r != MC_REPLY_MORE && r != MC_REPLY_DONE && r != MC_REPLY_BAD)
        abort();
    for (size_t i = 0; i < NOPS; i++)
        free(ops[i].blob);
    return 0;
}
