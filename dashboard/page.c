#include "page.h"

#include <string.h>

const struct page_asset *page_find(const char *path)
{
    if (strcmp(path, "/index.html") == 0)
        path = "/";
    for (size_t i = 0; i < page_assets_count; i++)
        if (strcmp(page_assets[i].path, path) == 0)
            return &page_assets[i];
    return NULL;
}
