/* MD5 against the test suite of RFC 1321 (appendix A.5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "md5.h"

static void hex(const unsigned char d[MD5_DIGEST_LEN], char out[33])
{
    for (int i = 0; i < MD5_DIGEST_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static const struct {
    const char *msg;
    const char *digest;
} rfc1321[] = {
    {"", "d41d8cd98f00b204e9800998ecf8427e"},
    {"a", "0cc175b9c0f1b6a831c399e269772661"},
    {"abc", "900150983cd24fb0d6963f7d28e17f72"},
    {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
    {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "d174ab98d277d9f5a5611c2c9f419d9f"},
    {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
     "57edf4a22be3c955ac49da2e2107b67a"},
};

static void test_rfc1321_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc1321) / sizeof(rfc1321[0]); i++) {
        unsigned char d[MD5_DIGEST_LEN];
        char h[33];
        md5_digest(rfc1321[i].msg, strlen(rfc1321[i].msg), d);
        hex(d, h);
        assert_string_equal(h, rfc1321[i].digest);
    }
}

/* Feeding the message in pieces of every size gives the same digest:
 * covers the partial-block paths and padding at 55/56/63/64 bytes. */
static void test_incremental_equals_one_shot(void **state)
{
    (void)state;
    unsigned char msg[300];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(msg); len++) {
        unsigned char one[MD5_DIGEST_LEN];
        md5_digest(msg, len, one);
        for (size_t piece = 1; piece <= 70; piece += 23) {
            struct md5_ctx ctx;
            unsigned char inc[MD5_DIGEST_LEN];
            md5_init(&ctx);
            for (size_t off = 0; off < len; off += piece)
                md5_update(&ctx, msg + off, len - off < piece ? len - off : piece);
            md5_final(&ctx, inc);
            assert_memory_equal(one, inc, MD5_DIGEST_LEN);
        }
    }
}

/* Lengths around the padding boundary, digests from a reference MD5. */
static void test_padding_boundaries(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        const char *digest;
    } cases[] = {
        {55, "ef1772b6dff9a122358552954ad0df65"},
        {56, "3b0c8ac703f828b04c6c197006d17218"},
        {63, "b06521f39153d618550606be297466d5"},
        {64, "014842d480b571495a4a0363793f7367"},
    };
    char buf[64];
    memset(buf, 'a', sizeof(buf));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char d[MD5_DIGEST_LEN];
        char h[33];
        md5_digest(buf, cases[i].len, d);
        hex(d, h);
        assert_string_equal(h, cases[i].digest);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc1321_vectors),
        cmocka_unit_test(test_incremental_equals_one_shot),
        cmocka_unit_test(test_padding_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
