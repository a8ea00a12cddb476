#include "admin_guard.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PROBE 8u

struct guard_entry {
    char addr[ADMIN_GUARD_ADDR_MAX];
    bool used;
    uint32_t failures;       /* since the last success or forgetting */
    uint64_t last_fail_ms;
    uint64_t locked_until_ms;
};

struct admin_guard {
    pthread_mutex_t lock;
    struct guard_entry slots[ADMIN_GUARD_SLOTS];
};

struct admin_guard *admin_guard_new(void)
{
    struct admin_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        free(g);
        return NULL;
    }
    return g;
}

void admin_guard_free(struct admin_guard *g)
{
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static uint32_t hash_addr(const char *a)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 16777619u;
    return h;
}

/* The key as stored: cut to the slot's size. */
static void key_of(const char *client, char key[ADMIN_GUARD_ADDR_MAX])
{
    size_t n = strlen(client);
    if (n >= ADMIN_GUARD_ADDR_MAX)
        n = ADMIN_GUARD_ADDR_MAX - 1;
    memcpy(key, client, n);
    key[n] = '\0';
}

/* The entry of key, or NULL; with create, a new one (the window's free
 * slot, else the entry that failed longest ago). */
static struct guard_entry *find(struct admin_guard *g, const char *key, bool create)
{
    uint32_t h = hash_addr(key);
    struct guard_entry *free_slot = NULL, *oldest = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        struct guard_entry *e = &g->slots[(h + i) % ADMIN_GUARD_SLOTS];
        if (!e->used) {
            if (free_slot == NULL)
                free_slot = e;
            continue;
        }
        if (strcmp(e->addr, key) == 0)
            return e;
        if (oldest == NULL || e->last_fail_ms < oldest->last_fail_ms)
            oldest = e;
    }
    if (!create)
        return NULL;
    struct guard_entry *e = free_slot ? free_slot : oldest;
    memset(e, 0, sizeof(*e));
    e->used = true;
    memcpy(e->addr, key, strlen(key) + 1);
    return e;
}

/* Failures long past, with no lock running, are forgotten. */
static void maybe_forget(struct guard_entry *e, uint64_t now_ms)
{
    if (now_ms >= e->locked_until_ms && now_ms - e->last_fail_ms >= ADMIN_GUARD_FORGET_MS)
        e->used = false;
}

uint32_t admin_guard_wait_s(struct admin_guard *g, const char *client, uint64_t now_ms)
{
    char key[ADMIN_GUARD_ADDR_MAX];
    key_of(client, key);
    uint32_t wait_s = 0;
    pthread_mutex_lock(&g->lock);
    struct guard_entry *e = find(g, key, false);
    if (e != NULL) {
        if (now_ms < e->locked_until_ms)
            wait_s = (uint32_t)((e->locked_until_ms - now_ms + 999) / 1000);
        else
            maybe_forget(e, now_ms);
    }
    pthread_mutex_unlock(&g->lock);
    return wait_s;
}

uint32_t admin_guard_failed(struct admin_guard *g, const char *client, uint64_t now_ms)
{
    char key[ADMIN_GUARD_ADDR_MAX];
    key_of(client, key);
    pthread_mutex_lock(&g->lock);
    struct guard_entry *e = find(g, key, false);
    if (e != NULL)
        maybe_forget(e, now_ms);
    if (e == NULL || !e->used)
        e = find(g, key, true);
    e->failures++;
    e->last_fail_ms = now_ms;
    uint32_t lock_ms = 0;
    if (e->failures > ADMIN_GUARD_FREE_FAILURES) {
        uint32_t over = e->failures - ADMIN_GUARD_FREE_FAILURES - 1;
        lock_ms = ADMIN_GUARD_MAX_LOCK_MS;
        if (over < 16 && (ADMIN_GUARD_FIRST_LOCK_MS << over) < ADMIN_GUARD_MAX_LOCK_MS)
            lock_ms = ADMIN_GUARD_FIRST_LOCK_MS << over;
        e->locked_until_ms = now_ms + lock_ms;
    }
    pthread_mutex_unlock(&g->lock);
    return lock_ms;
}

void admin_guard_succeeded(struct admin_guard *g, const char *client)
{
    char key[ADMIN_GUARD_ADDR_MAX];
    key_of(client, key);
    pthread_mutex_lock(&g->lock);
    struct guard_entry *e = find(g, key, false);
    if (e != NULL)
        e->used = false;
    pthread_mutex_unlock(&g->lock);
}
