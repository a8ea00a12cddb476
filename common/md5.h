/*
 * MD5 (RFC 1321). Only for ketama's continuum, where it must match what
 * every other memcached client computes; never for anything secret.
 */
#ifndef LT_MD5_H
#define LT_MD5_H

#include <stddef.h>
#include <stdint.h>

#define MD5_DIGEST_LEN 16

struct md5_ctx {
    uint32_t state[4];
    uint64_t nbytes;      /* message length so far */
    unsigned char buf[64]; /* pending partial block */
};

void md5_init(struct md5_ctx *ctx);
void md5_update(struct md5_ctx *ctx, const void *data, size_t len);
void md5_final(struct md5_ctx *ctx, unsigned char out[MD5_DIGEST_LEN]);

/* One-shot digest of len bytes. */
void md5_digest(const void *data, size_t len, unsigned char out[MD5_DIGEST_LEN]);

#endif
