/* clock.h: the clocks of the project: monotonic seconds, for timeouts,
 * heartbeats and the perf metrics, and the wall clock, for the times a
 * dashboard shows (never for anything that must repeat from run to run). */
#ifndef PLUMB_CLOCK_H
#define PLUMB_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double pl_now_s(void);
/* Seconds since the Unix epoch (CLOCK_REALTIME). */
double pl_wall_s(void);

#endif
