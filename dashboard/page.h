/* The web page served at GET / (self-contained: no external fetch). */
#ifndef LT_PAGE_H
#define LT_PAGE_H

#include <stddef.h>

extern const char page_html[];
extern const size_t page_html_len;

#endif
