/* metrics.h: a run's metrics (prefix metrics_).
 *
 * Every logged step is one JSON object on one line of <run dir>/metrics.jsonl
 *     {"step": 12, "reward": 0.41, "kl": 0.0031}
 * flushed as it is written, and, when a Redis URL is given, the same line is
 * appended to a Redis stream (XADD <stream> MAXLEN ~ 100000 * step 12 json
 * <line>) for dashboards. The file is the record of the run; the stream is
 * best effort: a Redis failure never fails metrics_log, it is counted, its
 * message kept, and a reconnection is tried at most every 10 s. Lines logged
 * while Redis is away are not sent later.
 *
 * On resume, metrics_truncate_after(run_dir, step) first cuts the file back
 * to the checkpointed step, so that the resumed run's file equals the file
 * of an uninterrupted run; metrics_restart does the same to the streams
 * (and empties them for a fresh start).
 *
 * The registry. With Redis, every run is also listed where `plumb dash
 * --redis` finds it, under its name (the last part of its run folder, so
 * runs that share a Redis need folders of different names):
 *   plumb:runs               sorted set of run names, scored by start time
 *   plumb:run:NAME           hash: name, state (running, finished, failed),
 *                            algo, host, pid, started, updated (wall-clock
 *                            seconds), step (the last logged), steps,
 *                            stream, samples (the two streams' names),
 *                            config (the resolved YAML), error
 *   plumb:run:NAME:alive     set while the coordinator lives: refreshed
 *                            every 10 s with a 30 s expiry, deleted at the
 *                            end; a "running" run without it has stalled
 *
 * A Metrics is used by one thread at a time. */
#ifndef PLUMB_METRICS_H
#define PLUMB_METRICS_H

#include <stdio.h>

typedef struct Metrics Metrics;

/* Creates run_dir (and its parents) when missing and opens
 * run_dir/metrics.jsonl for appending. redis_url (NULL or "": none) is
 * redis://[[user]:password@]host[:port][/db]; stream (NULL or "": the
 * default plumb:metrics:<run dir name>) is the stream appended to. A
 * malformed URL is an error (PL_EINVAL); a server that cannot be reached is
 * not: it is counted like any Redis failure and retried later. On error
 * *out is NULL. */
int metrics_open(Metrics **out, const char *run_dir, const char *redis_url, const char *stream);

/* The default stream name, plumb:metrics:<last part of run_dir> (trailing
 * slashes ignored), into out[cap]; PL_EINVAL (out "") when it does not fit. */
int metrics_default_stream(const char *run_dir, char *out, size_t cap);

/* Writes {"step": step, names[0]: values[0], ...} (n pairs, in order) as
 * one line and flushes it; values that are not finite are written as null.
 * Then sends the line to the stream if there is one. Fails (PL_EIO) only
 * when the file cannot be written, and (PL_EINVAL) for a NULL, empty or
 * "step" name; Redis failures are counted instead. */
int metrics_log(Metrics *m, long step, const char *const *names, const double *values, int n);

/* Appends one generation of the eval at step to run_dir/samples.jsonl,
 *     {"step": 10, "prompt": "...", "response": "...", "reward": 1, "answer": "7"}
 * (answer left out when NULL; a reward that is not finite is null), and to
 * the stream <stream>:samples when there is one. PL_EIO when the file
 * cannot be written. */
int metrics_sample(Metrics *m, long step, const char *prompt, const char *response, double reward,
                   const char *answer);

#define METRICS_RUNS_KEY "plumb:runs"
#define METRICS_RUN_KEY "plumb:run:" /* + NAME */

/* What the registry says of a run (strings may be NULL: empty). */
typedef struct {
    const char *state;       /* "running", "finished", "failed"              */
    const char *algo, *host, *error;
    const char *config;      /* the resolved YAML                             */
    int pid;
    long steps;
    double started;          /* wall-clock seconds                            */
} MetricsRun;

/* Puts the run into the registry and, while it runs, its heartbeat; with
 * Redis only (nothing without). Failures are counted like a line's. */
void metrics_run(Metrics *m, const MetricsRun *run);
/* Refreshes the heartbeat when it is 10 s old; cheap to call often. */
void metrics_alive(Metrics *m);
/* At a run's start: step < 0 (a fresh run) empties its two streams, else
 * (a resume) deletes their entries past step. Call after metrics_open. */
void metrics_restart(Metrics *m, long step);

/* Lines that did not reach the Redis stream (failed XADDs, and lines logged
 * while disconnected); 0 without Redis. */
long long metrics_redis_errors(const Metrics *m);

/* The message of the latest Redis failure ("" when none), password redacted. */
const char *metrics_redis_last_error(const Metrics *m);

/* Seconds between reconnection attempts (default 10; tests use 0). */
void metrics_set_retry_s(Metrics *m, double seconds);

/* Flushes and closes the file and the connection; *m becomes NULL. NULL is fine. */
void metrics_close(Metrics **m);

/* Rewrites run_dir/metrics.jsonl and samples.jsonl keeping only the lines
 * whose "step" is <= step, in order; lines that are not JSON objects with an integer "step"
 * (a line torn by a crash) are dropped. Written to a temporary file, synced
 * and renamed over the old one, so a crash leaves the old or the new file.
 * A missing file is fine (nothing to cut). Call before metrics_open. */
int metrics_truncate_after(const char *run_dir, long step);
/* The same for any file of {"step": N, ...} lines (consumed.jsonl). */
int jsonl_truncate_after(const char *path, long step);

/* Prints one progress line to f and flushes it:
 *     step 12/100  reward 0.412  kl 0.0031  1534 tok/s  eta 2m14s  restarts 2
 * reward, kl and tokens_per_s are left out when NaN; the eta (from
 * elapsed_s over `step` steps) when elapsed_s is NaN, step <= 0 or total <= 0;
 * restarts (the run's recoveries so far, run/restarts) when 0. */
void metrics_progress(FILE *f, long step, long total, double reward, double kl,
                      double tokens_per_s, double elapsed_s, long restarts);

#endif
