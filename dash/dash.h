/* dash.h: the experiment dashboard (prefix dash_), `plumb dash`.
 *
 * A Dash answers GET requests from what runs write, from one of two
 * sources. Under a folder of run folders (--runs DIR): each run's
 * metrics.jsonl, samples.jsonl, status.json and config.yaml. In Redis
 * (--redis URL): the registry of runs every coordinator with
 * metrics.redis keeps (coordinator/metrics.h) and their streams. It never
 * writes anything. While Redis cannot be reached, every request for run
 * data is a 503 saying so and the next one tries again.
 *
 *   /                               the page (dash/static/, built in)
 *   /static/NAME                    its script and style, and chart.js,
 *                                   read from the Debian package's folder
 *   /api/source                     {kind, where, state: ok | reconnecting}
 *   /api/runs                       [{name, algo, state, step, steps, ...}]
 *   /api/runs/NAME                  one run: the same, its metric keys, config
 *   /api/runs/NAME/metrics          {"name", "rows": [{"step": N, key: v}]}
 *        ?keys=a,b                  only these keys (and step, perf/time)
 *        &from=N&to=M               only steps N..M
 *   /api/runs/NAME/samples?step=N   [{step, prompt, response, reward, answer}]
 *   /api/runs/NAME/export?format=csv|jsonl   every metric, as a download
 *   /api/runs/NAME/events?after=N   server-sent events: one "metrics" event a
 *                                   new line, "state" when the state changes,
 *                                   "source" when the source goes or comes back
 *
 * A bad parameter is a 400, an unknown run or path a 404 and an
 * unreachable source a 503, each with a
 * JSON {"error": "..."} naming it. A run's name is its folder's name
 * ([A-Za-z0-9._-], not starting with a dot). A metrics line that does not
 * parse (a line torn by a crash, the last one of a live run) is skipped.
 *
 * The handlers are plain functions of a path and its query, so tests call
 * them without a server; dash_serve puts them behind libmicrohttpd. */
#ifndef PLUMB_DASH_H
#define PLUMB_DASH_H

#include <stddef.h>

typedef struct Dash Dash;

typedef struct {
    const char *redis_url;   /* the registry in Redis (NULL: runs_dir)        */
    const char *runs_dir;    /* the folder of run folders                    */
    const char *chart_js;    /* chart.js's file (NULL: the Debian package's)  */
} DashOptions;

/* A request's query: value of key, or NULL when absent. */
typedef struct {
    const char *(*get)(void *ctx, const char *key);
    void *ctx;
} DashQuery;

typedef struct {
    int status;              /* 200, 400, 404, 500                           */
    const char *type;        /* its content type                             */
    char *body;              /* (len) malloc'ed                              */
    size_t len;
    char filename[300];      /* not "": a download, under this name          */
} DashReply;

/* PL_EIO when runs_dir is not a readable folder. */
int dash_new(Dash **out, const DashOptions *o);
void dash_free(Dash **d);

/* Where d's runs come from (the Redis URL, password hidden, or the
 * folder) into buf, and whether it answers now: 0, or PL_EPEER with buf
 * saying why not. */
int dash_source(Dash *d, char *buf, size_t cap);

/* Answers GET path (no query string) with its query q into out. Returns 0
 * with out filled for every request, good or bad; < 0 only when out of
 * memory. /events is not answered here (dash_events). */
int dash_get(Dash *d, const char *path, const DashQuery *q, DashReply *out);
void dash_reply_free(DashReply *r);

/* Where a run's event stream is: what it has sent so far. */
typedef struct {
    long after;              /* the last step sent (-1: none)                 */
    char state[16];          /* the last state sent ("": none)                */
    int down;                /* the source was unreachable at the last look   */
} DashCursor;

/* The events of run `name` since c: the metric lines logged after
 * c->after (event "metrics", one JSON line each), an event "state" when
 * the run's state differs from c->state, and an event "source"
 * ({"state": "reconnecting", "error": ...} or {"state": "ok"}) when the
 * source went away or came back; c moves on. Appends them to *buf
 * (malloc'ed, *len bytes). 0, or for a run that is not there PL_EIO with
 * pl_error naming it. */
int dash_events(Dash *d, const char *name, DashCursor *c, char **buf, size_t *len);

/* Serves d on bind:port until *stop becomes non-zero (checked every 100 ms).
 * PL_EIO when the address cannot be bound. */
int dash_serve(Dash *d, const char *bind, int port, volatile int *stop);

#endif
