/*
 * Recorded traffic: one JSON object per line, the intended send time (us
 * from the start of the run) and the body as it was sent:
 *
 *   {"t_us":1234567,"body":{"question":3,"answer":2,"age":27,"country":"us"}}
 *
 * and the admin events of the run (a concert opens and closes its
 * questions), which a replay issues again at their times with the token:
 *
 *   {"t_us":1000,"admin":{"question":3,"action":"open"}}
 *
 * A hand-written file may use "raw" (a string sent byte for byte, for
 * bodies that are not valid JSON) instead of "body". Lines are sorted by
 * t_us when a file is loaded, so recorded parts can be concatenated.
 *
 * Recording: each sending thread writes its own part file (no lock on the
 * hot path), and the parts are merged by time into the final file when the
 * run ends.
 */
#ifndef LT_LOADREPLAY_H
#define LT_LOADREPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eventfile.h"
#include "loadtally.h"

#define LOADREPLAY_LINE_MAX 20000
#define LOADREPLAY_BODY_MAX 16384
#define LOADREPLAY_MAX_ENTRIES 50000000ull
#define LOADREPLAY_MAX_T_US (1ull << 50)

/* ---- recording ---- */

struct loadrecord {
    FILE *f;         /* owned */
    char *path;      /* owned: "<file>.part<N>" */
    uint64_t lines;
    bool failed;     /* a write failed; reported at close */
};

/* Opens the part file of one thread. */
bool loadrecord_open(struct loadrecord *r, const char *path, unsigned part, char *err,
                     size_t errlen);
/* body must be a JSON object as sent. Errors are remembered, not returned:
 * the load goes on, and close reports them. */
void loadrecord_write(struct loadrecord *r, uint64_t t_us, const char *body, size_t len);
/* An admin event: question opened (open) or closed. */
void loadrecord_write_admin(struct loadrecord *r, uint64_t t_us, uint32_t question, bool open);
/* Closes; false if any write or the close failed. The part file stays. */
bool loadrecord_close(struct loadrecord *r, char *err, size_t errlen);

/* Merges path.part0 .. path.part<nparts-1> by t_us into path and removes
 * the parts. */
bool loadrecord_merge(const char *path, unsigned nparts, char *err, size_t errlen);

/* Removes the part files (after a failure). */
void loadrecord_remove_parts(const char *path, unsigned nparts);

/* ---- replay ---- */

struct loadreplay_entry {
    uint64_t t_us;
    uint64_t off;   /* into text */
    uint32_t len;
    struct loadtally_key key; /* valid only with an event file and a body the ingest accepts */
};

struct loadreplay_admin {
    uint64_t t_us;
    uint32_t question;
    uint32_t seq; /* its place in the file: ties keep that order */
    bool open;
};

#define LOADREPLAY_MAX_ADMIN 4096

struct loadreplay {
    struct loadreplay_entry *e; /* owned, sorted by t_us, then by line */
    uint64_t n;
    struct loadreplay_admin *admin; /* owned, sorted by t_us, then by line */
    size_t n_admin;
    char *text;                 /* owned, the bodies */
    size_t text_len;
    size_t max_body;
};

/*
 * One line (without its newline) into t_us, the body to send (in body, up to
 * cap bytes) and, when ef is not NULL, its tally key. false with a reason.
 */
bool loadreplay_parse_line(const char *line, size_t len, const struct eventfile *ef,
                           uint64_t *t_us, char *body, size_t cap, size_t *body_len,
                           struct loadtally_key *key, char *err, size_t errlen);

/* An admin line: 1 (into *a), 0 when the line is not one (a request), -1
 * with a reason when it is one but wrong. */
int loadreplay_parse_admin(const char *line, size_t len, struct loadreplay_admin *a, char *err,
                           size_t errlen);

/* Loads a whole file; the error names file and line. Blank lines are skipped. */
bool loadreplay_load(const char *path, const struct eventfile *ef, struct loadreplay *r, char *err,
                     size_t errlen);
void loadreplay_free(struct loadreplay *r);

#endif
