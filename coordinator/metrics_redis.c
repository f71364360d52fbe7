/* metrics_redis.c: a run's metrics and samples in Redis, and the registry
 * of runs that dashboards list (metrics.h). Best effort throughout: a
 * failure is counted and kept as a message, never returned, and the
 * connection is tried again at most every retry_s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/sigpipe.h"
#include "coordinator/metrics_impl.h"

#define STREAM_MAXLEN "100000"
#define REDIS_TIMEOUT_MS 1000 /* connect and per command: a slow Redis must not stall training */
#define ALIVE_TTL_MS "30000"  /* the heartbeat outlives three refreshes      */
#define ALIVE_EVERY_S 10.0

static void redis_failed(Metrics *m, const char *what, const char *detail) {
    snprintf(m->last_error, sizeof m->last_error, "redis %s (%s): %s", what, m->url_shown,
             detail);
    if (m->ctx) redisFree(m->ctx);
    m->ctx = NULL;
    m->next_try = pl_now_s() + m->retry_s;
}

/* One command expecting +OK; 0 or -1 (after redis_failed). */
static int redis_ok(Metrics *m, int argc, const char **argv, const char *what) {
    redisReply *r = redisCommandArgv(m->ctx, argc, argv, NULL);
    if (!r) {
        redis_failed(m, what, m->ctx->errstr[0] ? m->ctx->errstr : "no reply");
        return -1;
    }
    int ok = r->type == REDIS_REPLY_STATUS;
    if (!ok) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        redis_failed(m, what, msg);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Connects, authenticates and selects the db; 0 or -1 (after redis_failed). */
static int redis_connect(Metrics *m) {
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    m->ctx = redisConnectWithTimeout(m->url.host, m->url.port, tv);
    if (!m->ctx || m->ctx->err) {
        redis_failed(m, "connect", m->ctx ? m->ctx->errstr : "out of memory");
        return -1;
    }
    redisSetTimeout(m->ctx, tv);
    if (m->url.password[0]) {
        const char *argv[] = {"AUTH", m->url.user, m->url.password};
        int argc = 3;
        if (!m->url.user[0]) argv[1] = m->url.password, argc = 2;
        if (redis_ok(m, argc, argv, "AUTH") < 0) return -1;
    }
    if (m->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", m->url.db);
        const char *argv[] = {"SELECT", db};
        if (redis_ok(m, 2, argv, "SELECT") < 0) return -1;
    }
    return 0;
}

/* hiredis writes with write(): a server that went away raises SIGPIPE
 * (common/sigpipe.h), so every Redis call runs with it blocked. */
static void put_run(Metrics *m);

/* A connection, made now unless the last try was too recent; 0 or -1. A
 * new one first puts the registry's entry again. */
static int ready(Metrics *m) {
    if (m->ctx) return 0;
    if (pl_now_s() < m->next_try || redis_connect(m) < 0) return -1;
    if (m->have_run) put_run(m);
    return m->ctx ? 0 : -1;
}

/* A batch of commands sent in one round trip. */
#define MAX_CMDS 8
#define MAX_ARGS 32
typedef struct {
    int n;
    int argc[MAX_CMDS];
    const char *argv[MAX_CMDS][MAX_ARGS];
    size_t lens[MAX_CMDS][MAX_ARGS];
    const char *what[MAX_CMDS];
} Batch;

/* Adds a command of argc strings (lens[i] 0: strlen). */
static void batch_add(Batch *b, const char *what, int argc, const char **argv, const size_t *lens) {
    if (b->n == MAX_CMDS || argc > MAX_ARGS) return;
    int k = b->n++;
    b->argc[k] = argc, b->what[k] = what;
    for (int i = 0; i < argc; i++) {
        b->argv[k][i] = argv[i];
        b->lens[k][i] = lens && lens[i] ? lens[i] : strlen(argv[i]);
    }
}

/* Runs b; 0, or -1 after counting the failure (the first error reply is
 * the message; a lost connection is closed). */
static int batch_run(Metrics *m, Batch *b) {
    if (ready(m) < 0) {
        m->errors++;
        return -1;
    }
    for (int k = 0; k < b->n; k++)
        if (redisAppendCommandArgv(m->ctx, b->argc[k], b->argv[k], b->lens[k]) != REDIS_OK) {
            redis_failed(m, b->what[k], "out of memory");
            m->errors++;
            return -1;
        }
    int bad = 0;
    for (int k = 0; k < b->n; k++) {
        redisReply *r = NULL;
        if (redisGetReply(m->ctx, (void **)&r) != REDIS_OK || !r) {
            redis_failed(m, b->what[k], m->ctx->errstr[0] ? m->ctx->errstr : "no reply");
            m->errors++;
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR && !bad) {
            /* the server answered (e.g. WRONGTYPE): keep the connection */
            snprintf(m->last_error, sizeof m->last_error, "redis %s (%s): %s", b->what[k],
                     m->url_shown, r->str);
            bad = 1;
        }
        freeReplyObject(r);
    }
    if (bad) m->errors++;
    return bad ? -1 : 0;
}

static void add_alive(Metrics *m, Batch *b) {
    const char *argv[] = {"SET", m->alive_key, "1", "PX", ALIVE_TTL_MS};
    batch_add(b, "SET", 5, argv, NULL);
    m->alive_at = pl_now_s();
}

/* ----------------------------------------------------------- metrics.c's */

int mredis_init(Metrics *m, const char *run_dir, const char *stream) {
    if (stream && stream[0]) snprintf(m->stream, sizeof m->stream, "%s", stream);
    else PL_TRY(metrics_default_stream(run_dir, m->stream, sizeof m->stream));
    snprintf(m->samples_stream, sizeof m->samples_stream, "%s:samples", m->stream);
    size_t n = strlen(run_dir);
    while (n > 1 && run_dir[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && run_dir[s - 1] != '/') s--;
    if (n - s >= sizeof m->name)
        return pl_fail(PL_EINVAL, "the run name of %s is over %zu bytes", run_dir, sizeof m->name - 1);
    snprintf(m->name, sizeof m->name, "%.*s", (int)(n - s), run_dir + s);
    snprintf(m->run_key, sizeof m->run_key, METRICS_RUN_KEY "%s", m->name);
    snprintf(m->alive_key, sizeof m->alive_key, "%s:alive", m->run_key);
    return PL_OK;
}

void mredis_connect(Metrics *m) {
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    redis_connect(m);
    pl_sigpipe_restore(&g);
}

void mredis_send(Metrics *m, const char *stream, long step, const char *line, size_t len) {
    char stepbuf[32], now[40];
    snprintf(stepbuf, sizeof stepbuf, "%ld", step);
    snprintf(now, sizeof now, "%.3f", pl_wall_s());
    Batch b = {0};
    const char *xadd[] = {"XADD", stream, "MAXLEN", "~", STREAM_MAXLEN, "*",
                          "step", stepbuf, "json", line};
    size_t lens[10] = {0};
    lens[9] = len;
    batch_add(&b, "XADD", 10, xadd, lens);
    if (stream == m->stream) {
        const char *hset[] = {"HSET", m->run_key, "step", stepbuf, "updated", now};
        batch_add(&b, "HSET", 6, hset, NULL);
        add_alive(m, &b);
    }
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    batch_run(m, &b);
    pl_sigpipe_restore(&g);
}

void mredis_close(Metrics *m) {
    if (m->ctx) redisFree(m->ctx);
    m->ctx = NULL;
    free(m->run_config);
    m->run_config = NULL;
}

/* ------------------------------------------------------------- the registry */

/* Sends the registry's entry as metrics_run last set it. */
static void put_run(Metrics *m) {
    char pid[24], started[40], now[40], steps[24];
    snprintf(pid, sizeof pid, "%d", m->run_pid);
    snprintf(started, sizeof started, "%.3f", m->run_started);
    snprintf(now, sizeof now, "%.3f", pl_wall_s());
    snprintf(steps, sizeof steps, "%ld", m->run_steps);
    const char *hset[] = {"HSET",    m->run_key,   "name",    m->name,
                          "state",   m->run_state, "algo",    m->run_algo,
                          "host",    m->run_host,  "pid",     pid,
                          "started", started,      "updated", now,
                          "steps",   steps,        "stream",  m->stream,
                          "samples", m->samples_stream,
                          "config",  m->run_config ? m->run_config : "",
                          "error",   m->run_error};
    Batch b = {0};
    batch_add(&b, "HSET", (int)(sizeof hset / sizeof *hset), hset, NULL);
    const char *zadd[] = {"ZADD", METRICS_RUNS_KEY, started, m->name};
    batch_add(&b, "ZADD", 4, zadd, NULL);
    if (!strcmp(m->run_state, "running")) add_alive(m, &b);
    else {
        const char *del[] = {"DEL", m->alive_key};
        batch_add(&b, "DEL", 2, del, NULL);
    }
    batch_run(m, &b);
}

void metrics_run(Metrics *m, const MetricsRun *run) {
    if (!m || !m->use_redis) return;
#define KEEP(dst, src) snprintf(dst, sizeof dst, "%s", (src) ? (src) : "")
    KEEP(m->run_state, run->state);
    KEEP(m->run_algo, run->algo);
    KEEP(m->run_host, run->host);
    KEEP(m->run_error, run->error);
#undef KEEP
    free(m->run_config);
    m->run_config = run->config ? strdup(run->config) : NULL;
    m->run_pid = run->pid, m->run_steps = run->steps, m->run_started = run->started;
    m->have_run = 1;
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    if (m->ctx) put_run(m);
    else if (ready(m) < 0) m->errors++; /* a new connection puts it */
    pl_sigpipe_restore(&g);
}

void metrics_alive(Metrics *m) {
    if (!m || !m->use_redis || pl_now_s() - m->alive_at < ALIVE_EVERY_S) return;
    Batch b = {0};
    add_alive(m, &b);
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    batch_run(m, &b);
    pl_sigpipe_restore(&g);
}

/* The entries of stream past step, newest first, are deleted: a stream
 * whose steps rise (as every cut leaves it) is then cut back to step. */
static int cut_stream(Metrics *m, const char *stream, long step) {
    char end[64] = "+";
    for (;;) {
        const char *argv[] = {"XREVRANGE", stream, end, "-", "COUNT", "256"};
        redisReply *r = redisCommandArgv(m->ctx, 6, argv, NULL);
        if (!r) {
            redis_failed(m, "XREVRANGE", m->ctx->errstr[0] ? m->ctx->errstr : "no reply");
            return -1;
        }
        int done = r->type != REDIS_REPLY_ARRAY || r->elements == 0, ok = 1;
        for (size_t i = 0; !done && i < r->elements; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
            redisReply *id = e->element[0], *f = e->element[1];
            long s = -1;
            for (size_t k = 0; k + 1 < f->elements; k += 2)
                if (!strcmp(f->element[k]->str, "step")) s = atol(f->element[k + 1]->str);
            if (s >= 0 && s <= step) {
                done = 1;
                break;
            }
            const char *del[] = {"XDEL", stream, id->str};
            redisReply *d = redisCommandArgv(m->ctx, 3, del, NULL);
            if (!d) {
                redis_failed(m, "XDEL", m->ctx->errstr[0] ? m->ctx->errstr : "no reply");
                ok = 0;
                break;
            }
            freeReplyObject(d);
            snprintf(end, sizeof end, "(%s", id->str);
        }
        freeReplyObject(r);
        if (!ok) return -1;
        if (done) return 0;
    }
}

void metrics_restart(Metrics *m, long step) {
    if (!m || !m->use_redis) return;
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    char at[32];
    snprintf(at, sizeof at, "%ld", step);
    Batch b = {0};
    const char *hset[] = {"HSET", m->run_key, "step", at}, *hdel[] = {"HDEL", m->run_key, "step"};
    if (step < 0) batch_add(&b, "HDEL", 3, hdel, NULL); /* the registry's last step */
    else batch_add(&b, "HSET", 4, hset, NULL);
    if (ready(m) < 0) m->errors++;
    else if (step < 0) {
        const char *del[] = {"DEL", m->stream, m->samples_stream};
        batch_add(&b, "DEL", 3, del, NULL);
        batch_run(m, &b);
    } else if (cut_stream(m, m->stream, step) < 0 || cut_stream(m, m->samples_stream, step) < 0)
        m->errors++;
    else
        batch_run(m, &b);
    pl_sigpipe_restore(&g);
}
