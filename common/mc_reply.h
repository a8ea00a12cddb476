/*
 * The memcached meta-protocol replies to one node's part of a batch, parsed
 * from a buffer. A pure function over bytes (no socket, no handle), so that
 * tests/unit/test_mc_reply.c can feed it good, garbled and truncated
 * replies; store_memcached.c reads into its buffer and calls it.
 *
 *   VA <len> <flags>\r\n<data>\r\n    a value (ma v, mg hit)
 *   HD|NS|NF|EX|EN <flags>\r\n        per-item outcome (errors under q)
 *   MN\r\n                            end of the batch
 *   CLIENT_ERROR ...|SERVER_ERROR ...|ERROR  no opaque: item unknown
 *
 * Op i's replies carry the flag O<i>; a reply naming an op of another node,
 * or none that exists, is garbled.
 */
#ifndef LT_MC_REPLY_H
#define LT_MC_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store_pool.h"

#define MC_REPLY_LINE_MAX 4096u  /* longest reply line accepted */
#define MC_REPLY_SMALL_VALUE 32u /* a counter's text: 20 digits (+ padding) */

enum mc_kind { MC_INCR, MC_MGET, MC_ADD, MC_DEL };

enum mc_reply_result {
    MC_REPLY_MORE, /* every complete reply taken; the rest needs more bytes */
    MC_REPLY_DONE, /* MN taken: the node's part is over */
    MC_REPLY_BAD,  /* garbled, or out of step: the connection is unusable */
};

struct mc_reply {
    enum mc_kind kind;
    struct store_op *ops;  /* (ref) the batch's ops: statuses, values and blobs written */
    size_t n;
    unsigned char *seen;   /* (ref) n flags: op i got a reply of its own */
    uint32_t node;         /* the node whose replies these are */
    size_t skip;           /* in and out: bytes of an oversized value still to discard */
    bool unattributed;     /* out: an error reply without an opaque came */
};

/* Takes the complete replies at the start of buf[0..len); *used is how many
 * bytes they were (the rest is kept for the next call, with more). */
enum mc_reply_result mc_reply_parse(struct mc_reply *x, const char *buf, size_t len, size_t *used);

#endif
