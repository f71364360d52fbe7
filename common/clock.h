/* clock.h: the one clock of the project: monotonic seconds, for timeouts,
 * heartbeats and the perf metrics (never for anything that must repeat
 * from run to run). */
#ifndef PLUMB_CLOCK_H
#define PLUMB_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double pl_now_s(void);

#endif
