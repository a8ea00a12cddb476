/* CRC16 (XMODEM) and Redis Cluster key slots: the spec's vector, a bitwise
 * reference, and slots read back from a real cluster node
 * (CLUSTER KEYSLOT, redis 7.0) including the hash tag rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crc16.h"
#include "keys.h"

static void test_spec_vector(void **state)
{
    (void)state;
    assert_int_equal(crc16_xmodem("123456789", 9), 0x31C3);
    assert_int_equal(crc16_xmodem("", 0), 0);
}

/* The definition, one bit at a time: the table must agree. */
static uint16_t crc16_bitwise(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void test_table_matches_bitwise(void **state)
{
    (void)state;
    unsigned char buf[512];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t len = 0; len <= sizeof(buf); len += 7)
        assert_int_equal(crc16_xmodem(buf, len), crc16_bitwise(buf, len));
    for (int c = 0; c < 256; c++) {
        unsigned char b = (unsigned char)c;
        assert_int_equal(crc16_xmodem(&b, 1), crc16_bitwise(&b, 1));
    }
}

struct slot_case {
    const char *key;
    uint16_t slot;
};

/* From CLUSTER KEYSLOT on a redis-server 7.0 cluster node. */
static const struct slot_case slots[] = {
    {"foo", 12182},
    {"bar", 5061},
    {"123456789", 12739},             /* 0x31C3 mod 16384 */
    {"{user1000}.following", 3443},   /* the tag only */
    {"{user1000}.followers", 3443},
    {"user1000", 3443},
    {"foo{}{bar}", 8363},             /* empty first tag: the whole key */
    {"foo{{bar}}zap", 4015},          /* tag is "{bar" */
    {"{bar", 4015},
    {"foo{bar}{zap}", 5061},          /* the first tag only: "bar" */
    {"a{b}", 3300},
    {"a{b", 13340},                   /* no closing brace: the whole key */
    {"{", 4092},
    {"}", 12090},
    {"{}", 15257},
    {"1d-live:q1right01", 2275},
    {"1d-live:q1right02", 14464},
};

static void test_key_slots(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        uint16_t got = crc16_key_slot(slots[i].key, strlen(slots[i].key));
        if (got != slots[i].slot)
            fail_msg("%s: slot %u, want %u", slots[i].key, got, slots[i].slot);
    }
}

/* The shards of one counter, as the key scheme writes them, land on many
 * slots: no hash tag pins them together. */
static void count_slot(bool *seen, const char *key, size_t len, size_t *distinct)
{
    assert_null(memchr(key, '{', len));
    uint16_t s = crc16_key_slot(key, len);
    *distinct += !seen[s];
    seen[s] = true;
}

static void test_shards_spread(void **state)
{
    (void)state;
    static bool seen[CRC16_SLOTS];
    size_t distinct = 0;
    char buf[KEY_MAX];
    for (uint32_t shard = 1; shard <= 100; shard++) {
        count_slot(seen, buf, key_question(buf, "1d-live", 3, KEY_RIGHT, shard), &distinct);
        count_slot(seen, buf, key_age(buf, "1d-live", 3, 2, KEY_WRONG, shard), &distinct);
        count_slot(seen, buf, key_country(buf, "1d-live", 3, "gb", KEY_RIGHT, shard), &distinct);
    }
    /* 300 keys over 16384 slots: a few collide by chance, no more */
    assert_true(distinct >= 290);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vector),
        cmocka_unit_test(test_table_matches_bitwise),
        cmocka_unit_test(test_key_slots),
        cmocka_unit_test(test_shards_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
