/*
 * Consistent hashing of keys onto a pool of nodes, compatible with
 * libmemcached's weighted ketama (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED with
 * every weight 1), so livetally and any libmemcached client (php-memcached,
 * pylibmc, memcached tools) put a key on the same node of the same list:
 *
 *   each node: 40 labels "host:port-i" (or "host-i" on port 11211),
 *              i = 0..39, each MD5'd into 4 points (bytes 4j..4j+3, LE)
 *   continuum: the 160 * n points sorted by (value, node index)
 *   key:       first 4 bytes of MD5(key), LE; the node of the first point
 *              >= it, wrapping to the first point
 * A pool of one node maps every key to it without hashing (as libmemcached).
 * The node list order matters (it breaks ties and names indexes); host is
 * the string as configured, unbracketed for IPv6.
 */
#ifndef LT_KETAMA_H
#define LT_KETAMA_H

#include <stddef.h>
#include <stdint.h>

#define KETAMA_MAX_NODES 1024
#define KETAMA_HOST_MAX 255

struct ketama_node {
    const char *host; /* (ref) only read during ketama_create */
    uint16_t port;
};

struct ketama;

/* NULL for n == 0, n > KETAMA_MAX_NODES, a host longer than
 * KETAMA_HOST_MAX, or no memory. Free with ketama_free. */
struct ketama *ketama_create(const struct ketama_node *nodes, size_t n);
void ketama_free(struct ketama *k);

size_t ketama_node_count(const struct ketama *k);

/* The node index (0-based, in the order given to ketama_create) of a key. */
uint32_t ketama_lookup(const struct ketama *k, const char *key, size_t len);

/* The first min(r, nodes) distinct nodes met walking the continuum clockwise
 * from the key's point; out[0] == ketama_lookup(). Returns how many were
 * written. For replicas: the same key always gets the same ordered list. */
size_t ketama_lookup_n(const struct ketama *k, const char *key, size_t len, uint32_t *out,
                       size_t r);

#endif
