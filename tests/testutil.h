/* testutil.h: helpers shared by the cmocka tests. */
#ifndef PLUMB_TESTUTIL_H
#define PLUMB_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <sys/types.h>

#include "common/rng.h"

/* Directory of committed test data (tests/data). */
const char *tu_data_dir(void);

/* A fresh, empty scratch directory for this test program (under build/). */
const char *tu_tmp_dir(void);

/* Path of the built plumb program. */
const char *tu_plumb_bin(void);

/* snprintf into a static rotating buffer: tu_path("%s/x", dir). */
const char *tu_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fills x (n) with normal(0,1) * scale from rng. */
void tu_randn(float *x, size_t n, Rng *rng, float scale);

/* max_i |a_i - b_i| / (tol + |b_i| * rel) <= 1 or fails with the index. */
void tu_assert_close(const float *a, const float *b, size_t n, float tol, float rel,
                     const char *what);

/* Central differences of f over every entry of x (n) against the analytic
 * gradient g: fails naming `what` and the index when
 * |fd - g| > tol + 1e-3 |fd|. The step actually taken (x +- h rounded to
 * float) is used in the quotient. f reads x through ctx. */
typedef double (*TuLossFn)(void *ctx);
void tu_fd_check(float *x, int n, const float *g, TuLossFn f, void *ctx, float h, double tol,
                 const char *what);

/* Runs a shell command, capturing stdout into a malloc'ed string; returns
 * the exit status (or -1). */
int tu_run(const char *cmd, char **out);

/* Reads a whole file into a malloc'ed NUL-terminated buffer (NULL on error). */
char *tu_read_file(const char *path, size_t *len);

/* Writes len bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);

/* A free TCP port on 127.0.0.1 (bound, read back, released), or -1. */
int tu_free_port(void);

/* A real redis-server for tests that need one. */
typedef struct {
    int pid;           /* 0 when not running                          */
    int port;          /* picked by tu_redis_start when 0             */
    char dir[512];     /* its --dir (a fresh folder under tu_tmp_dir when empty) */
    char password[64]; /* --requirepass when set                      */
    int persist;       /* appendonly yes, fsync always                */
} TuRedis;

/* Starts redis-server on s->port and waits up to 5 s until it answers PING
 * (or NOAUTH). A server not yet stopped is killed at exit. Returns 0 or -1. */
int tu_redis_start(TuRedis *s);

/* Sends sig (SIGTERM, or SIGKILL to simulate a crash) and reaps it. */
void tu_redis_stop(TuRedis *s, int sig);

/* ------------------------------------------------ processes and runs */

double tu_now_s(void);   /* monotonic seconds */
void tu_sleep_ms(int ms);

/* Runs "plumb ARGS 2>&1"; returns the exit status, *out (may be NULL) the
 * output (malloc'ed). */
int tu_plumb(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts "plumb ARGS" in the background with stdout and stderr going to
 * log; returns its pid (the shell execs plumb, so the pid is plumb's). */
pid_t tu_spawn(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts the shell command FMT... in the background (exec'ed, so the pid
 * is the command's) with stdout and stderr going to log. */
pid_t tu_spawn_sh(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Waits up to timeout_s until 127.0.0.1:port accepts a connection: 1, or 0. */
int tu_wait_port(int port, double timeout_s);

/* Waits up to timeout_s for pid to exit: 1 with *status (may be NULL)
 * set, 0 on timeout. */
int tu_wait_exit(pid_t pid, double timeout_s, int *status);
/* Kills pid (one of ours) if it still runs, and reaps it. */
void tu_stop(pid_t pid);
/* 1 while pid names a live process (a zombie counts as gone). */
int tu_process_alive(pid_t pid);

/* Waits up to timeout_s for file path to contain needle: 1, or 0. */
int tu_wait_text(const char *path, const char *needle, double timeout_s);
long tu_count_lines(const char *path);
/* Waits up to timeout_s for path to have at least n lines: 1, or 0. */
int tu_wait_lines(const char *path, long n, double timeout_s);

/* RUN/metrics.jsonl as an array of objects (fails on a line that is not a
 * JSON object with an integer "step"). */
json_t *tu_metrics_load(const char *run);
/* The line of step s, or NULL. */
json_t *tu_metrics_step(json_t *m, long s);
/* Steps of m, in order, must be exactly first..last. */
void tu_assert_steps(json_t *m, long first, long last, const char *what);
/* Every key not under perf/ of step s is the same value in a and b, and
 * both have the same such keys. */
void tu_assert_same_step(json_t *a, json_t *b, long s, const char *what);

#endif
