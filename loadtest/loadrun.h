/*
 * One run of the load tester, from parsed options to the exit status:
 * set-up (event file, target, answers or recording), the baseline snapshot
 * when verifying, the load with its control loop (per-second series, the
 * progress line, the concert's admin calls, SIGINT/SIGTERM), then
 * verification and the reports.
 */
#ifndef LT_LOADRUN_H
#define LT_LOADRUN_H

#include "loadopts.h"

/* Exit status: 0 done (and verified when asked); 1 the run or the
 * verification failed; 2 a bad input (event file, URL, question list). */
int loadrun(const struct loadopts *o);

#endif
