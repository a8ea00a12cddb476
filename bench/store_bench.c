/*
 * store_bench: the store's two hot paths against a live backend, as ingest
 * and the aggregator drive them.
 *
 *   store_bench --backend URL [--keys N] [--batch N] [--mget-batch N]
 *               [--seconds S]
 *
 *   incr   store_incr_batch of --batch distinct keys (delta 1, TTL 1 day),
 *          cycling over --keys keys, back to back for --seconds
 *   mget   store_mget_u64 of --mget-batch keys (the aggregator's 1000) over
 *          the same keys, back to back for --seconds; every value checked
 *
 * Prints one line: backend=... incr_items_per_s=... mget_keys_per_s=...
 * Exit 0, or 1 when the store failed or a value read back was wrong.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "util.h"

struct opts {
    const char *backend;
    uint32_t keys;
    uint32_t batch;
    uint32_t mget_batch;
    uint32_t seconds;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: store_bench --backend URL [--keys N] [--batch N] [--mget-batch N] "
                 "[--seconds S]\n");
}

static bool parse(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"backend", required_argument, NULL, 'b'}, {"keys", required_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'n'},   {"mget-batch", required_argument, NULL, 'm'},
        {"seconds", required_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.keys = 100000, .batch = 4096, .mget_batch = 1000, .seconds = 5};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'b':
            o->backend = optarg;
            break;
        case 'k':
            ok = util_parse_u32(optarg, 1, 10000000, &o->keys);
            break;
        case 'n':
            ok = util_parse_u32(optarg, 1, 1000000, &o->batch);
            break;
        case 'm':
            ok = util_parse_u32(optarg, 1, 1000000, &o->mget_batch);
            break;
        case 's':
            ok = util_parse_u32(optarg, 1, 3600, &o->seconds);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "store_bench: bad value for an option\n");
            return false;
        }
    }
    if (o->backend == NULL || optind != argc) {
        usage(stderr);
        return false;
    }
    if (o->batch > o->keys)
        o->batch = o->keys;
    if (o->mget_batch > o->keys)
        o->mget_batch = o->keys;
    return true;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (!parse(argc, argv, &o))
        return 2;
    char err[256];
    int rc = 1;
    struct store *s = store_open(o.backend, err, sizeof(err));
    char (*keys)[32] = calloc(o.keys, sizeof(*keys));
    const char **kp = calloc(o.keys, sizeof(*kp));
    size_t *lens = calloc(o.keys, sizeof(*lens));
    uint64_t *expect = calloc(o.keys, sizeof(*expect));
    uint64_t *vals = calloc(o.mget_batch, sizeof(*vals));
    struct store_incr *items = calloc(o.batch, sizeof(*items));
    if (s == NULL) {
        fprintf(stderr, "store_bench: %s\n", err);
        goto done;
    }
    if (keys == NULL || kp == NULL || lens == NULL || expect == NULL || vals == NULL ||
        items == NULL) {
        fprintf(stderr, "store_bench: out of memory\n");
        goto done;
    }
    /* Keys shaped like the event's shard keys, under a prefix of this run
     * (the values read back are checked against what this run wrote). */
    unsigned run = (unsigned)time(NULL) % 100000u;
    for (uint32_t i = 0; i < o.keys; i++) {
        lens[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "b%u:q%uc%03uright%u", run,
                                   i / 3000 + 1, i % 250, i);
        kp[i] = keys[i];
    }

    /* incr */
    uint64_t items_done = 0;
    uint32_t next = 0;
    double t0 = now_s(), end = t0 + o.seconds;
    while (now_s() < end) {
        for (uint32_t j = 0; j < o.batch; j++) {
            uint32_t i = (next + j) % o.keys;
            items[j] = (struct store_incr){.key = kp[i], .keylen = lens[i], .delta = 1};
        }
        if (store_incr_batch(s, items, o.batch, 86400) != STORE_OK) {
            fprintf(stderr, "store_bench: incr batch failed\n");
            goto done;
        }
        for (uint32_t j = 0; j < o.batch; j++)
            expect[(next + j) % o.keys]++;
        next = (next + o.batch) % o.keys;
        items_done += o.batch;
    }
    double incr_rate = (double)items_done / (now_s() - t0);

    /* mget */
    uint64_t keys_done = 0;
    next = 0;
    t0 = now_s();
    end = t0 + o.seconds;
    while (now_s() < end) {
        uint32_t n = o.mget_batch;
        if (next + n > o.keys)
            next = 0;
        if (store_mget_u64(s, kp + next, lens + next, n, vals, NULL) != STORE_OK) {
            fprintf(stderr, "store_bench: mget failed\n");
            goto done;
        }
        for (uint32_t j = 0; j < n; j++)
            if (vals[j] != expect[next + j]) {
                fprintf(stderr, "store_bench: %s reads %llu, expected %llu\n", kp[next + j],
                        (unsigned long long)vals[j], (unsigned long long)expect[next + j]);
                goto done;
            }
        next += n;
        keys_done += n;
    }
    double mget_rate = (double)keys_done / (now_s() - t0);
    printf("backend=%s incr_items_per_s=%.0f mget_keys_per_s=%.0f\n", o.backend, incr_rate,
           mget_rate);
    rc = 0;
done:
    store_close(s);
    free(keys);
    free(kp);
    free(lens);
    free(expect);
    free(vals);
    free(items);
    return rc;
}
