/* What the committer's integration tests share: a one-question event (its
 * name given, so two tests never read each other's keys) and a tally of
 * the replies the committer gave. */
#ifndef LT_TEST_COMMIT_SUPPORT_H
#define LT_TEST_COMMIT_SUPPORT_H

#include "commit.h"

#define COMMIT_TEST_EVENT_JSON(name)                                                           \
    "{\"event\": \"" name "\", \"shards\": 3, \"country_shards\": 2,"                          \
    " \"hot_countries\": {\"gb\": 4, \"unknown\": 4},"                                         \
    " \"age_buckets\": [{\"label\": \"a\", \"max\": 17}, {\"label\": \"b\", \"max\": 40},"     \
    "                   {\"label\": \"c\", \"max\": 130}],"                                    \
    " \"questions\": ["                                                                        \
    "  {\"id\": 1, \"text\": \"a\", \"options\": [\"p\", \"q\", \"r\"], \"correct\": 2}"       \
    " ]}"

struct replies {
    int ok, unavailable, duplicate;
};

/* A commit_done_fn; arg is a struct replies. */
static inline void on_done(void *arg, enum commit_result r)
{
    struct replies *rp = arg;
    if (r == COMMIT_OK)
        rp->ok++;
    else if (r == COMMIT_UNAVAILABLE)
        rp->unavailable++;
    else
        rp->duplicate++;
}

#endif
