/* The admin guard's rules on a clock of the test's own: free failures,
 * locks that double to the cap, the right token forgetting, addresses
 * apart, forgetting after a quiet spell, and a table full of addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "admin_guard.h"
#include "ingest.h"

static int setup(void **state)
{
    *state = admin_guard_new();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    admin_guard_free(*state);
    return 0;
}

static void test_free_failures_then_doubling_locks(void **state)
{
    struct admin_guard *g = *state;
    uint64_t now = 1000000;
    for (unsigned i = 0; i < ADMIN_GUARD_FREE_FAILURES; i++) {
        assert_int_equal(admin_guard_wait_s(g, "10.0.0.1", now), 0);
        assert_int_equal(admin_guard_failed(g, "10.0.0.1", now), 0);
    }
    uint32_t want = ADMIN_GUARD_FIRST_LOCK_MS;
    for (int i = 0; i < 12; i++) {
        assert_int_equal(admin_guard_wait_s(g, "10.0.0.1", now), 0);
        uint32_t lock = admin_guard_failed(g, "10.0.0.1", now);
        assert_int_equal(lock, want);
        /* Locked: the wait rounds up to whole seconds. */
        assert_int_equal(admin_guard_wait_s(g, "10.0.0.1", now), (want + 999) / 1000);
        assert_int_equal(admin_guard_wait_s(g, "10.0.0.1", now + want - 1), 1);
        now += want;
        want = want * 2 > ADMIN_GUARD_MAX_LOCK_MS ? ADMIN_GUARD_MAX_LOCK_MS : want * 2;
    }
    assert_int_equal(want, ADMIN_GUARD_MAX_LOCK_MS);
}

static void test_success_forgets_and_addresses_are_apart(void **state)
{
    struct admin_guard *g = *state;
    uint64_t now = 5000;
    for (unsigned i = 0; i <= ADMIN_GUARD_FREE_FAILURES; i++)
        admin_guard_failed(g, "192.0.2.7", now);
    assert_int_equal(admin_guard_wait_s(g, "192.0.2.7", now), 1);
    assert_int_equal(admin_guard_wait_s(g, "192.0.2.8", now), 0);
    assert_int_equal(admin_guard_wait_s(g, "2001:db8::7", now), 0);
    now += ADMIN_GUARD_FIRST_LOCK_MS;
    assert_int_equal(admin_guard_wait_s(g, "192.0.2.7", now), 0);
    admin_guard_succeeded(g, "192.0.2.7");
    /* Forgotten: the free failures again. */
    for (unsigned i = 0; i < ADMIN_GUARD_FREE_FAILURES; i++)
        assert_int_equal(admin_guard_failed(g, "192.0.2.7", now), 0);
    assert_int_equal(admin_guard_failed(g, "192.0.2.7", now), ADMIN_GUARD_FIRST_LOCK_MS);
}

static void test_quiet_spell_forgets(void **state)
{
    struct admin_guard *g = *state;
    uint64_t now = 0;
    for (unsigned i = 0; i < ADMIN_GUARD_FREE_FAILURES; i++)
        admin_guard_failed(g, "198.51.100.1", now);
    now += ADMIN_GUARD_FORGET_MS - 1;
    assert_int_equal(admin_guard_failed(g, "198.51.100.1", now), ADMIN_GUARD_FIRST_LOCK_MS);
    now += ADMIN_GUARD_FIRST_LOCK_MS + ADMIN_GUARD_FORGET_MS;
    assert_int_equal(admin_guard_wait_s(g, "198.51.100.1", now), 0);
    assert_int_equal(admin_guard_failed(g, "198.51.100.1", now), 0);
}

/* More addresses than slots: the table stays bounded, a locked address
 * that failed last is still locked, and nothing crashes. */
static void test_full_table(void **state)
{
    struct admin_guard *g = *state;
    char addr[32];
    uint64_t now = 100;
    for (unsigned i = 0; i < 4 * ADMIN_GUARD_SLOTS; i++) {
        snprintf(addr, sizeof(addr), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        admin_guard_failed(g, addr, now++);
    }
    for (unsigned i = 0; i <= ADMIN_GUARD_FREE_FAILURES; i++)
        admin_guard_failed(g, "203.0.113.9", now);
    assert_int_equal(admin_guard_wait_s(g, "203.0.113.9", now), 1);
    /* An address longer than a slot keys by its first bytes. */
    char longer[ADMIN_GUARD_ADDR_MAX * 2];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(admin_guard_failed(g, longer, now), 0);
}

static void test_trusted_proxy_list(void **state)
{
    (void)state;
    struct ingest_config ic;
    char err[128];
    memset(&ic, 0, sizeof(ic));
    assert_true(ingest_parse_trusted_proxies("127.0.0.1,::1,10.1.2.3", &ic, err, sizeof(err)));
    assert_int_equal(ic.n_trusted_proxies, 3);
    assert_string_equal(ic.trusted_proxies[0], "127.0.0.1");
    assert_string_equal(ic.trusted_proxies[1], "::1");
    static const char *const bad[] = {"", "localhost", "1.2.3", "127.0.0.1,", ",127.0.0.1",
                                      "10.0.0.1 ", "::g", "1.2.3.4/24"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&ic, 0, sizeof(ic));
        err[0] = '\0';
        assert_false(ingest_parse_trusted_proxies(bad[i], &ic, err, sizeof(err)));
        assert_true(err[0] != '\0');
    }
    memset(&ic, 0, sizeof(ic));
    for (int i = 0; i < INGEST_MAX_TRUSTED_PROXIES; i++)
        assert_true(ingest_parse_trusted_proxies("10.0.0.1", &ic, err, sizeof(err)));
    assert_false(ingest_parse_trusted_proxies("10.0.0.2", &ic, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_free_failures_then_doubling_locks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_forgets_and_addresses_are_apart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quiet_spell_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_table, setup, teardown),
        cmocka_unit_test(test_trusted_proxy_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
