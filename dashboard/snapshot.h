/*
 * A published snapshot, ready to serve: the JSON as published, each
 * question's entry, the Server-Sent Events frame carrying it and the CSV
 * report, all rendered once when the snapshot arrives.
 *
 * Reference-counted, so replies send its bytes without copying them
 * (evbuffer_add_reference): the dashboard holds one reference to the
 * snapshot it serves, and every reply or stream still sending its bytes
 * holds one more. Built on any thread; after that used on the event loop's
 * thread only (the count is not atomic).
 */
#ifndef LT_SNAPSHOT_H
#define LT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

struct snapshot {
    unsigned refs;
    uint64_t generation;
    uint64_t generated_ms; /* its generated_at, ms since the epoch (0: unreadable) */
    char *json;       /* owned: as published, NUL-terminated */
    size_t len;
    char *frame;      /* owned: "event: stats\nid: <generation>\ndata: <json>\n\n" */
    size_t frame_len;
    char *frame_z;    /* owned: frame as a deflate fragment (snapshot_deflate_fragment), or NULL */
    size_t frame_z_len;
    char *csv;        /* owned: stats_csv.h's report */
    size_t csv_len;
    size_t n;         /* questions */
    uint32_t *qids;   /* owned */
    char **qjson;     /* owned, n strings */
    size_t *qlen;     /* owned */
    /* Rendered once per snapshot for every reader: a strong ETag of the
     * bytes as published ("g<generation>-<64-bit FNV-1a, hex>"), and each
     * body gzip'd (NULL where compressing failed). */
    char etag[48];
    char *json_gz;    /* owned */
    size_t json_gz_len;
    char *csv_gz;     /* owned */
    size_t csv_gz_len;
    char **qgz;       /* owned, n (entries may be NULL) */
    size_t *qgz_len;  /* owned */
};

/* One body of a snapshot in both representations (pointers into it). */
struct snapshot_body {
    const char *data, *gz; /* gz NULL: only as is */
    size_t len, gz_len;
};

/* Takes json over (freed on failure too). The result holds one reference.
 * NULL when json is not a snapshot (no questions array) or memory runs out. */
struct snapshot *snapshot_build(uint64_t generation, char *json, size_t len);

/* len bytes as a piece of a raw deflate stream that any stream of such
 * pieces can take next: compressed from a fresh state (nothing refers to
 * earlier bytes) and ended by a full flush (byte-aligned, no final block).
 * So every stream of a gzip'd Server-Sent Events response is the gzip
 * header and then these pieces, the same bytes for every client: one
 * compression per event, not one per stream. malloc'd; NULL on failure. */
char *snapshot_deflate_fragment(const char *data, size_t len, size_t *out_len);

void snapshot_ref(struct snapshot *s);
/* Frees the snapshot with its last reference. NULL is ignored. */
void snapshot_unref(struct snapshot *s);

/* Appends len bytes at data (inside s) to out without copying; s keeps a
 * reference until out has let go of them. false when memory runs out. */
bool snapshot_add_to(struct snapshot *s, struct evbuffer *out, const char *data, size_t len);

/* The question's entry (JSON object), or NULL when the snapshot has none. */
const char *snapshot_question(const struct snapshot *s, uint32_t id, size_t *len);
/* The same with its gzip'd form; false when the snapshot has no such question. */
bool snapshot_question_body(const struct snapshot *s, uint32_t id, struct snapshot_body *out);

#endif
