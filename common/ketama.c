#include "ketama.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "md5.h"

/* libmemcached's MEMCACHED_POINTS_PER_SERVER_KETAMA and the port it leaves
 * out of the label. */
#define KETAMA_POINTS_PER_NODE 160u
#define KETAMA_POINTS_PER_HASH 4u
#define KETAMA_DEFAULT_PORT 11211u

struct ketama_point {
    uint32_t value;
    uint32_t node;
};

struct ketama {
    size_t n_nodes;
    size_t n_points;
    struct ketama_point points[]; /* sorted by (value, node) */
};

static int point_cmp(const void *a, const void *b)
{
    const struct ketama_point *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    return 0;
}

static uint32_t digest_word(const unsigned char d[MD5_DIGEST_LEN], unsigned j)
{
    return (uint32_t)d[4 * j] | (uint32_t)d[4 * j + 1] << 8 | (uint32_t)d[4 * j + 2] << 16 |
           (uint32_t)d[4 * j + 3] << 24;
}

/* Points per node as libmemcached computes them in single-precision float,
 * reproduced operation for operation: with equal weights it is 160 for the
 * pool sizes tested, but the float rounding is what defines it. */
static uint32_t points_for_node(size_t n_nodes)
{
    float pct = 1.0f / (float)n_nodes;
    float per4 = pct * (float)KETAMA_POINTS_PER_NODE / 4.0f * (float)n_nodes + 0.0000000001f;
    return (uint32_t)floorf(per4) * 4u;
}

struct ketama *ketama_create(const struct ketama_node *nodes, size_t n)
{
    if (nodes == NULL || n == 0 || n > KETAMA_MAX_NODES)
        return NULL;
    uint32_t per_node = points_for_node(n);
    size_t max_points = n * per_node;
    struct ketama *k = malloc(sizeof(*k) + max_points * sizeof(struct ketama_point));
    if (k == NULL)
        return NULL;
    k->n_nodes = n;
    k->n_points = 0;

    for (size_t i = 0; i < n; i++) {
        if (nodes[i].host == NULL || strlen(nodes[i].host) > KETAMA_HOST_MAX)
            goto err;
        for (uint32_t h = 0; h < per_node / KETAMA_POINTS_PER_HASH; h++) {
            char label[KETAMA_HOST_MAX + 32];
            int len;
            if (nodes[i].port == KETAMA_DEFAULT_PORT)
                len = snprintf(label, sizeof(label), "%s-%u", nodes[i].host, h);
            else
                len = snprintf(label, sizeof(label), "%s:%u-%u", nodes[i].host,
                               (unsigned)nodes[i].port, h);
            if (len < 0 || (size_t)len >= sizeof(label))
                goto err;
            unsigned char d[MD5_DIGEST_LEN];
            md5_digest(label, (size_t)len, d);
            for (unsigned j = 0; j < KETAMA_POINTS_PER_HASH; j++) {
                k->points[k->n_points].value = digest_word(d, j);
                k->points[k->n_points].node = (uint32_t)i;
                k->n_points++;
            }
        }
    }
    qsort(k->points, k->n_points, sizeof(k->points[0]), point_cmp);
    return k;

err:
    free(k);
    return NULL;
}

void ketama_free(struct ketama *k)
{
    free(k);
}

size_t ketama_node_count(const struct ketama *k)
{
    return k->n_nodes;
}

/* Index of the first point >= hash, wrapping to 0 past the end. */
static size_t first_point(const struct ketama *k, uint32_t hash)
{
    size_t lo = 0, hi = k->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k->points[mid].value < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == k->n_points ? 0 : lo;
}

static uint32_t key_hash(const char *key, size_t len)
{
    unsigned char d[MD5_DIGEST_LEN];
    md5_digest(key, len, d);
    return digest_word(d, 0);
}

uint32_t ketama_lookup(const struct ketama *k, const char *key, size_t len)
{
    if (k->n_nodes == 1)
        return 0;
    return k->points[first_point(k, key_hash(key, len))].node;
}

size_t ketama_lookup_n(const struct ketama *k, const char *key, size_t len, uint32_t *out,
                       size_t r)
{
    if (r > k->n_nodes)
        r = k->n_nodes;
    if (r == 0)
        return 0;
    if (k->n_nodes == 1) {
        out[0] = 0;
        return 1;
    }
    size_t found = 0;
    size_t p = first_point(k, key_hash(key, len));
    /* At most one lap: every node owns at least one point. */
    for (size_t steps = 0; steps < k->n_points && found < r; steps++) {
        uint32_t node = k->points[p].node;
        bool seen = false;
        for (size_t i = 0; i < found; i++)
            if (out[i] == node) {
                seen = true;
                break;
            }
        if (!seen)
            out[found++] = node;
        p = (p + 1 == k->n_points) ? 0 : p + 1;
    }
    return found;
}
