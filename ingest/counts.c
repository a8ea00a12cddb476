#include "counts.h"

#include <stdlib.h>
#include <string.h>

bool counts_init(struct counts *c, uint32_t n)
{
    memset(c, 0, sizeof(*c));
    c->delta = calloc(n ? n : 1, sizeof(*c->delta));
    c->touched = malloc((n ? n : 1) * sizeof(*c->touched));
    c->n = n;
    if (c->delta == NULL || c->touched == NULL) {
        counts_free(c);
        return false;
    }
    return true;
}

void counts_free(struct counts *c)
{
    free(c->delta);
    free(c->touched);
    memset(c, 0, sizeof(*c));
}

void counts_merge(struct counts *dst, const struct counts *src)
{
    for (uint32_t i = 0; i < src->ntouched; i++) {
        uint32_t id = src->touched[i];
        counts_add(dst, id, src->delta[id]);
    }
}

void counts_clear(struct counts *c)
{
    for (uint32_t i = 0; i < c->ntouched; i++)
        c->delta[c->touched[i]] = 0;
    c->ntouched = 0;
}
