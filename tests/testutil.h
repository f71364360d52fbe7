/* testutil.h: helpers shared by the cmocka tests. */
#ifndef PLUMB_TESTUTIL_H
#define PLUMB_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

#endif
