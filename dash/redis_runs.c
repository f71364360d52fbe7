/* redis_runs.c: the Redis source (dash_redis), the registry of runs that
 * coordinators keep (coordinator/metrics.h) and their metric and sample
 * streams (dash_impl.h). Read-only: HGETALL, ZRANGE, EXISTS, XRANGE and
 * XREVRANGE only. One connection, shared by the server's threads under a
 * lock; when it is lost, the call that noticed says so (PL_EPEER) and
 * the next call connects again, so a Redis restart costs the page a few
 * 503s and nothing else. */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/redis.h"
#include "coordinator/metrics.h"
#include "dash/dash_impl.h"

#define TIMEOUT_MS 2000      /* connect and per command                       */
#define PAGE "1000"          /* stream entries read a command                 */

struct RedisRuns {
    pthread_mutex_t lock;
    RdsUrl url;              /* password included, for reconnecting           */
    char shown[600];         /* redacted                                      */
    redisContext *ctx;       /* NULL: not connected                           */
    char error[1024];        /* why the last connection was lost ("": none)   */
};

/* ------------------------------------------------------------ connection */

/* Called with the lock held: marks the connection lost (why). */
static int lost(struct RedisRuns *r, const char *what, const char *why) {
    snprintf(r->error, sizeof r->error, "redis %s: %s %s", r->shown, what, why);
    if (r->ctx) redisFree(r->ctx);
    r->ctx = NULL;
    return pl_fail(PL_EPEER, "%s (reconnecting)", r->error);
}

/* A command's reply, NULL after lost(). */
static redisReply *command(struct RedisRuns *r, int argc, const char **argv) {
    redisReply *rep = redisCommandArgv(r->ctx, argc, argv, NULL);
    if (!rep) lost(r, argv[0], r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
    return rep;
}

/* Connected, or PL_EPEER. */
static int connected(struct RedisRuns *r) {
    if (r->ctx) return 0;
    struct timeval tv = {TIMEOUT_MS / 1000, (TIMEOUT_MS % 1000) * 1000};
    r->ctx = redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!r->ctx) return lost(r, "connect", "out of memory");
    if (r->ctx->err) return lost(r, "connect", r->ctx->errstr);
    redisSetTimeout(r->ctx, tv);
    char db[16];
    snprintf(db, sizeof db, "%d", r->url.db);
    const char *auth[] = {"AUTH", r->url.user[0] ? r->url.user : r->url.password, r->url.password};
    const char *sel[] = {"SELECT", db};
    for (int k = 0; k < 2; k++) {
        if (k == 0 && !r->url.password[0]) continue;
        if (k == 1 && !r->url.db) continue;
        redisReply *rep = k ? command(r, 2, sel) : command(r, r->url.user[0] ? 3 : 2, auth);
        if (!rep) return PL_EPEER;
        int bad = rep->type == REDIS_REPLY_ERROR;
        char msg[256];
        snprintf(msg, sizeof msg, "%s", bad ? rep->str : "");
        freeReplyObject(rep);
        if (bad) return lost(r, k ? "SELECT" : "AUTH", msg);
    }
    r->error[0] = '\0';
    return 0;
}

/* ------------------------------------------------------------ the registry */

static const char *field(const redisReply *h, const char *key) {
    for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (h->element[i]->type == REDIS_REPLY_STRING && !strcmp(h->element[i]->str, key) &&
            h->element[i + 1]->type == REDIS_REPLY_STRING)
            return h->element[i + 1]->str;
    return NULL;
}

static void copy(char *dst, size_t cap, const char *s) { snprintf(dst, cap, "%s", s ? s : ""); }

/* The registry's hash of name (*h: NULL when it is not there), and
 * whether its heartbeat lives; lock held. */
static int fetch_run(struct RedisRuns *r, const char *name, redisReply **h, int *alive) {
    char key[300], akey[320];
    snprintf(key, sizeof key, METRICS_RUN_KEY "%s", name);
    snprintf(akey, sizeof akey, "%s:alive", key);
    const char *hget[] = {"HGETALL", key}, *ex[] = {"EXISTS", akey};
    *h = command(r, 2, hget);
    if (!*h) return PL_EPEER;
    redisReply *e = command(r, 2, ex);
    if (!e) {
        freeReplyObject(*h);
        *h = NULL;
        return PL_EPEER;
    }
    *alive = e->type == REDIS_REPLY_INTEGER && e->integer > 0;
    freeReplyObject(e);
    if ((*h)->type != REDIS_REPLY_ARRAY || (*h)->elements == 0) {
        freeReplyObject(*h);
        *h = NULL;
    }
    return 0;
}

static void to_info(const char *name, const redisReply *h, int alive, RunInfo *out) {
    memset(out, 0, sizeof *out);
    copy(out->name, sizeof out->name, name);
    copy(out->state, sizeof out->state, field(h, "state"));
    if (!out->state[0]) copy(out->state, sizeof out->state, "unknown");
    /* a running run whose coordinator stopped beating died without saying so */
    if (!strcmp(out->state, "running") && !alive) copy(out->state, sizeof out->state, "stalled");
    copy(out->algo, sizeof out->algo, field(h, "algo"));
    copy(out->host, sizeof out->host, field(h, "host"));
    copy(out->error, sizeof out->error, field(h, "error"));
    const char *s;
    out->step = (s = field(h, "step")) ? atol(s) : -1;
    out->steps = (s = field(h, "steps")) ? atol(s) : 0;
    out->started = (s = field(h, "started")) ? atof(s) : 0;
    out->updated = (s = field(h, "updated")) ? atof(s) : 0;
}

static int redis_info_locked(struct RedisRuns *r, const char *name, RunInfo *out) {
    redisReply *h;
    int alive;
    PL_TRY(connected(r));
    PL_TRY(fetch_run(r, name, &h, &alive));
    if (!h) return pl_fail(PL_EIO, "no run %s in the registry at %s", name, r->shown);
    to_info(name, h, alive, out);
    freeReplyObject(h);
    return 0;
}

static int redis_info(Dash *d, const char *name, RunInfo *out) {
    pthread_mutex_lock(&d->redis->lock);
    int rc = redis_info_locked(d->redis, name, out);
    pthread_mutex_unlock(&d->redis->lock);
    return rc;
}

static int redis_list_locked(struct RedisRuns *r, RunInfo **out, int *n) {
    PL_TRY(connected(r));
    const char *z[] = {"ZRANGE", METRICS_RUNS_KEY, "0", "-1"};
    redisReply *names = command(r, 4, z);
    if (!names) return PL_EPEER;
    int rc = 0;
    if (names->type == REDIS_REPLY_ARRAY && names->elements) {
        *out = calloc(names->elements, sizeof **out);
        if (!*out) rc = pl_fail(PL_ENOMEM, "the run list");
    }
    for (size_t i = 0; rc == 0 && *out && i < names->elements; i++) {
        const char *name = names->element[i]->str;
        /* a name the page could not ask for again is left out */
        if (names->element[i]->type != REDIS_REPLY_STRING || !runs_valid_name(name)) continue;
        redisReply *h;
        int alive;
        if ((rc = fetch_run(r, name, &h, &alive)) < 0) break;
        if (!h) continue; /* listed, its hash gone */
        to_info(name, h, alive, &(*out)[(*n)++]);
        freeReplyObject(h);
    }
    freeReplyObject(names);
    if (rc < 0) {
        free(*out);
        *out = NULL, *n = 0;
    } else if (*n > 1)
        qsort(*out, (size_t)*n, sizeof **out, runs_by_name);
    return rc;
}

static int redis_list(Dash *d, RunInfo **out, int *n) {
    *out = NULL, *n = 0;
    pthread_mutex_lock(&d->redis->lock);
    int rc = redis_list_locked(d->redis, out, n);
    pthread_mutex_unlock(&d->redis->lock);
    return rc;
}

/* ------------------------------------------------------------ the streams */

/* The "json" field of a stream entry, parsed (NULL when it does not). */
static json_t *entry_json(const redisReply *e, long *step) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) return NULL;
    const char *line = field(e->element[1], "json");
    json_t *j = line ? json_loads(line, 0, NULL) : NULL;
    json_t *s = json_object_get(j, "step");
    if (!json_is_integer(s)) {
        json_decref(j);
        return NULL;
    }
    *step = (long)json_integer_value(s);
    return j;
}

typedef struct {
    long step;
    size_t seq;              /* its place in the stream                       */
    json_t *row;
} Row;

static int by_step(const void *a, const void *b) {
    const Row *x = a, *y = b;
    if (x->step != y->step) return (x->step > y->step) - (x->step < y->step);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* The entries of stream with from <= step <= to appended to got. A cut
 * stream's steps rise (metrics_restart), so a read of the newest steps
 * (to < 0, from > 0) walks back from the end until it passes from;
 * anything else reads the whole stream, a page at a time. */
static int read_stream(struct RedisRuns *r, const char *stream, long from, long to, json_t *got) {
    int tail = to < 0 && from > 0;
    char at[64];
    snprintf(at, sizeof at, "%s", tail ? "+" : "-");
    for (;;) {
        const char *fwd[] = {"XRANGE", stream, at, "+", "COUNT", PAGE};
        const char *back[] = {"XREVRANGE", stream, at, "-", "COUNT", PAGE};
        redisReply *rep = command(r, 6, tail ? back : fwd);
        if (!rep) return PL_EPEER;
        if (rep->type == REDIS_REPLY_ERROR) {
            int rc = pl_fail(PL_EPROTO, "redis %s: XRANGE %s: %s", r->shown, stream, rep->str);
            freeReplyObject(rep);
            return rc;
        }
        int done = rep->type != REDIS_REPLY_ARRAY || rep->elements == 0;
        for (size_t i = 0; !done && i < rep->elements; i++) {
            redisReply *e = rep->element[i];
            long step = -1;
            json_t *j = entry_json(e, &step);
            if (tail && j && step < from) done = 1;
            if (j && step >= from && (to < 0 || step <= to)) json_array_append_new(got, j);
            else json_decref(j);
            if (e->type == REDIS_REPLY_ARRAY && e->elements && e->element[0]->type == REDIS_REPLY_STRING)
                snprintf(at, sizeof at, "(%s", e->element[0]->str);
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements < (size_t)atoi(PAGE)) done = 1;
        freeReplyObject(rep);
        if (done) return 0;
    }
}

static int redis_rows_locked(struct RedisRuns *r, const char *name, int samples, long from,
                             long to, json_t *rows) {
    redisReply *h;
    int alive;
    PL_TRY(connected(r));
    PL_TRY(fetch_run(r, name, &h, &alive));
    if (!h) return pl_fail(PL_EIO, "no run %s in the registry at %s", name, r->shown);
    char stream[600];
    copy(stream, sizeof stream, field(h, samples ? "samples" : "stream"));
    freeReplyObject(h);
    if (!stream[0]) return 0;
    json_t *got = json_array();
    if (!got) return pl_fail(PL_ENOMEM, "the rows of %s", name);
    int rc = read_stream(r, stream, from, to, got);
    size_t n = json_array_size(got);
    Row *v = rc == 0 ? malloc((n ? n : 1) * sizeof *v) : NULL;
    if (rc == 0 && !v) rc = pl_fail(PL_ENOMEM, "the rows of %s", name);
    if (v) {
        /* by step, and for metrics one a step: a stream that a resume could
         * not cut (Redis was away) holds a step twice, and the later wins */
        for (size_t i = 0; i < n; i++) {
            v[i].row = json_array_get(got, i), v[i].seq = i;
            v[i].step = (long)json_integer_value(json_object_get(v[i].row, "step"));
        }
        qsort(v, n, sizeof *v, by_step);
        for (size_t i = 0; i < n; i++)
            if (samples || i + 1 == n || v[i + 1].step != v[i].step) json_array_append(rows, v[i].row);
        free(v);
    }
    json_decref(got);
    return rc;
}

static int redis_rows(Dash *d, const char *name, int samples, long from, long to, json_t **out) {
    *out = json_array();
    if (!*out) return pl_fail(PL_ENOMEM, "the rows of %s", name);
    pthread_mutex_lock(&d->redis->lock);
    int rc = redis_rows_locked(d->redis, name, samples, from, to, *out);
    pthread_mutex_unlock(&d->redis->lock);
    if (rc < 0) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

static int redis_config(Dash *d, const char *name, char **out) {
    struct RedisRuns *r = d->redis;
    *out = NULL;
    pthread_mutex_lock(&r->lock);
    redisReply *h = NULL;
    int alive, rc = connected(r);
    if (rc == 0) rc = fetch_run(r, name, &h, &alive);
    const char *c = field(h, "config");
    if (rc == 0 && c && *c && !(*out = strndup(c, CONFIG_MAX))) rc = pl_fail(PL_ENOMEM, "config");
    if (h) freeReplyObject(h);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static json_t *redis_health(Dash *d) {
    struct RedisRuns *r = d->redis;
    pthread_mutex_lock(&r->lock);
    int rc = connected(r);
    if (rc == 0) { /* a connection that went quiet is only found by using it */
        const char *ping[] = {"PING"};
        redisReply *rep = command(r, 1, ping);
        rc = rep ? 0 : PL_EPEER;
        if (rep) freeReplyObject(rep);
    }
    json_t *j = json_pack("{s:s, s:s, s:s}", "kind", "redis", "where", r->shown, "state",
                          rc == 0 ? "ok" : "reconnecting");
    if (j && rc < 0) json_object_set_new(j, "error", json_string(r->error));
    pthread_mutex_unlock(&r->lock);
    return j;
}

static void redis_free(Dash *d) {
    struct RedisRuns *r = d->redis;
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    pthread_mutex_destroy(&r->lock);
    memset(&r->url, 0, sizeof r->url); /* the password */
    free(r);
    d->redis = NULL;
}

int redis_runs_open(Dash *d, const char *url) {
    struct RedisRuns *r = calloc(1, sizeof *r);
    PL_CHECK_ALLOC(r);
    int rc = rds_parse_url(url, &r->url);
    if (rc < 0) {
        free(r);
        return pl_wrap(rc, "--redis");
    }
    rds_url_redacted(&r->url, r->shown, sizeof r->shown);
    pthread_mutex_init(&r->lock, NULL);
    d->redis = r;
    return 0;
}

const DashSource dash_redis = {"redis", redis_list, redis_info, redis_rows, redis_config,
                               redis_health, redis_free};
