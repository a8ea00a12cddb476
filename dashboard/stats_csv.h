/*
 * The post-show report: GET /v1/stats.csv, built from the snapshot JSON.
 *
 *   question,state,dimension,key,label,answers,right,wrong
 *   1,closed,total,,In which city...,1500,1040,460
 *   1,closed,age,1,under 18,250,140,110
 *   1,closed,country,us,,450,300,150
 *   1,closed,option,0,London,159,0,159
 *
 * One row per question for its total, then one per age bucket, per country
 * with answers, and per option. An option's right/wrong split is known only
 * once the question is closed (before that the correct option is secret) and
 * is empty until then. The store keeps no country x age counter (the key
 * scheme has per-question age and per-question country counters only), so
 * the report has no cross product of the two: each is a breakdown of the
 * question's total on its own.
 *
 * Fields are quoted as RFC 4180 says: a field holding a comma, a quote, CR
 * or LF is put in quotes with its quotes doubled. Lines end in CRLF.
 */
#ifndef LT_STATS_CSV_H
#define LT_STATS_CSV_H

#include <stddef.h>

#include <jansson.h>

#define STATS_CSV_HEADER "question,state,dimension,key,label,answers,right,wrong\r\n"

/* The report of a parsed snapshot; malloc'd, NUL-terminated, owned by the
 * caller. Entries missing from the snapshot are skipped. NULL when memory
 * runs out or the snapshot has no questions array. */
char *stats_csv_build(const json_t *snapshot, size_t *len);

#endif
