/*
 * The published snapshot in the store. memcached items are at most 1 MiB,
 * so the JSON is split into chunks written before the head that points to
 * them; chunks alternate between two slots so a reader never sees a chunk of
 * a half-written newer snapshot (each chunk also names its generation):
 *
 *   {event}:snap              "<generation> <nchunks> <total_len>"
 *   {event}:snap:<slot>:<i>   "<generation>\n" + bytes of chunk i
 */
#ifndef LT_SNAPSTORE_H
#define LT_SNAPSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define SNAPSTORE_CHUNK (512u * 1024u)
#define SNAPSTORE_MAX_BYTES (64u << 20)

enum store_status snapstore_publish(struct store *s, const char *event, uint32_t ttl_s,
                                    uint64_t generation, const char *json, size_t len);

/* STORE_NOTFOUND when nothing was published yet. *json is malloc'd and
 * NUL-terminated, owned by the caller. Retries internally when a chunk was
 * overwritten while reading. */
enum store_status snapstore_fetch(struct store *s, const char *event, uint64_t *generation,
                                  char **json, size_t *len);

/* Only the head's generation (cheap; to skip fetching an unchanged snapshot). */
enum store_status snapstore_generation(struct store *s, const char *event, uint64_t *generation);

#endif
