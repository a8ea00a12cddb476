/*
 * The web page's files (dashboard/web), embedded in the binary at build time
 * by embed.cmake: the page is static bytes, served without a file system.
 */
#ifndef LT_PAGE_H
#define LT_PAGE_H

#include <stddef.h>

struct page_asset {
    const char *path;         /* URL path: "/" for index.html, "/app.js", ... */
    const char *content_type;
    const char *etag;         /* quoted, from the file's MD5 */
    const unsigned char *data;
    size_t len;
};

/* Generated (page_assets.c in the build directory). */
extern const struct page_asset page_assets[];
extern const size_t page_assets_count;

/* The asset served at this URL path ("/index.html" is "/"); NULL if none. */
const struct page_asset *page_find(const char *path);

#endif
