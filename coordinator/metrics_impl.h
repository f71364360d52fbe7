/* metrics_impl.h: what metrics.c (the files) and metrics_redis.c (the
 * streams and the run registry) share. Private to coordinator/. */
#ifndef PLUMB_METRICS_IMPL_H
#define PLUMB_METRICS_IMPL_H

#include <stdio.h>

#include <hiredis/hiredis.h>

#include "common/redis.h"
#include "coordinator/metrics.h"

struct Metrics {
    FILE *f;                  /* metrics.jsonl, appending                    */
    char path[4096];          /* its path, for messages                      */
    FILE *samples;            /* samples.jsonl, opened at the first sample    */
    char samples_path[4096];
    char *line;               /* (cap) the line being built                  */
    size_t cap;

    int use_redis;            /* a URL was given                             */
    RdsUrl url;               /* parsed, password included (reconnects)      */
    char url_shown[600];      /* redacted, for messages                      */
    char stream[512];
    char samples_stream[600]; /* <stream>:samples                            */
    char name[256];           /* the run's name in the registry               */
    char run_key[300];        /* plumb:run:<name>                             */
    char alive_key[320];      /* plumb:run:<name>:alive                       */
    double alive_at;          /* monotonic seconds of the last heartbeat      */
    /* the registry's entry (metrics_run), put again after a reconnection:
     * a Redis that restarted empty lists the run again */
    int have_run;
    char run_state[16], run_algo[32], run_host[128], run_error[512];
    char *run_config;
    int run_pid;
    long run_steps;
    double run_started;
    redisContext *ctx;        /* NULL while disconnected                     */
    double next_try;          /* monotonic seconds of the next connect try   */
    double retry_s;           /* between connection attempts                 */
    long long errors;         /* lines that did not reach the stream         */
    char last_error[1536];
};

/* Fills the Redis names of m from its stream and run_dir. */
int mredis_init(Metrics *m, const char *run_dir, const char *stream);
/* Connects (a failure is kept for the next try). */
void mredis_connect(Metrics *m);
/* XADDs line (len bytes) of step to stream; for the metrics stream the
 * registry's step and the heartbeat go in the same round trip. Counts a
 * failure. */
void mredis_send(Metrics *m, const char *stream, long step, const char *line, size_t len);
void mredis_close(Metrics *m);

#endif
