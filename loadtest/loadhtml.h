/*
 * The run as one self-contained HTML file (--report FILE): the summary,
 * and plots drawn as inline SVG from the per-second series and the latency
 * histogram: answers and errors per second, latency percentiles per
 * second, the latency distribution. No script, style sheet, font or image
 * from elsewhere: the file opens as it is from a CI artifact or a mail.
 */
#ifndef LT_LOADHTML_H
#define LT_LOADHTML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "loadreport.h"

/* Writes the report to out; false when a write failed. */
bool loadhtml_fprint(FILE *out, const struct loadreport *rep);

/* To path (written aside, then renamed), or stdout for "-". */
bool loadhtml_write(const char *path, const struct loadreport *rep, char *err, size_t errlen);

#endif
