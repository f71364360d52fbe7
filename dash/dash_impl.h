/* dash_impl.h: what the dashboard's files share. Private to dash/.
 *
 *   runs.c     the run folders: names, state, metric and sample lines
 *   redis_runs.c   the runs in Redis: the registry and the streams
 *   api.c      dash_get: the page, the static files and the JSON API
 *   server.c   dash_serve: libmicrohttpd, and the server-sent events
 *   static/    the page, built into the binary (dash_static.c, generated) */
#ifndef PLUMB_DASH_IMPL_H
#define PLUMB_DASH_IMPL_H

#include <jansson.h>
#include <stdio.h>

#include "dash/dash.h"

typedef struct DashSource DashSource;
struct RedisRuns;

struct Dash {
    const DashSource *src;   /* where the runs come from                      */
    char runs_dir[4096];     /* the folder source's                           */
    struct RedisRuns *redis; /* the Redis source's (redis_runs.c)             */
    char chart_js[4096];
};

/* A run, as the list shows it. */
typedef struct {
    char name[256];
    char algo[32];
    char state[16];          /* running, finished, failed, stalled, unknown  */
    char host[128];
    char error[512];
    long step;               /* the last logged step, -1: none yet            */
    long steps;              /* run.steps, 0: not known                       */
    double started, updated; /* wall-clock seconds, 0: not known              */
} RunInfo;

/* Where the runs come from, a table of functions: the run folders
 * (runs.c) or Redis's registry (redis_runs.c). Each returns 0, PL_EIO for
 * a run that is not there (a 404), or PL_EPEER while the source cannot be
 * reached (a 503; the next call tries again), with pl_error saying which. */
struct DashSource {
    const char *kind;        /* "folders", "redis"                            */
    int (*list)(Dash *d, RunInfo **out, int *n);      /* by name, malloc'ed  */
    int (*info)(Dash *d, const char *name, RunInfo *out);
    /* the {"step": N, ...} rows with from <= N <= to (to < 0: no bound) of
     * the run's metrics (samples 0) or samples (1), by step, one a step
     * for metrics (the last logged wins) */
    int (*rows)(Dash *d, const char *name, int samples, long from, long to, json_t **out);
    /* the resolved config's text, *out malloc'ed (NULL: none) */
    int (*config)(Dash *d, const char *name, char **out);
    /* {"kind", "where", "state": "ok" | "reconnecting", "error"} */
    json_t *(*health)(Dash *d);
    void (*free)(Dash *d);
};

extern const DashSource dash_folders;
/* url: redis://...; PL_EINVAL when it does not parse. A server that cannot
 * be reached is not an error: every call tries again. */
int redis_runs_open(Dash *d, const char *url);
extern const DashSource dash_redis;

/* A folder name the dashboard serves ([A-Za-z0-9._-], no leading dot). */
int runs_valid_name(const char *name);
json_t *runs_info_json(const RunInfo *i);
/* qsort's order of RunInfos, by name. */
int runs_by_name(const void *a, const void *b);
#define CONFIG_MAX 65536     /* bytes of a config the dashboard shows         */
/* The {"step": N, ...} lines of a JSONL file with from <= N <= to (to < 0:
 * no bound), as an array; lines that do not parse and a last line without
 * its newline are left out; a missing file is an empty array. NULL only
 * when out of memory. */
json_t *runs_lines(const char *path, long from, long to);
/* Writes each of rows as compact JSON, in its keys' order, between before
 * and end ("event: metrics\ndata: " and "\n\n" for events, "" and "\n"
 * for JSONL); the last row's step, or -1 for none. */
long runs_dump_rows(FILE *f, json_t *rows, const char *before, const char *end);

/* The built-in static files (dash_static.c). */
typedef struct {
    const char *name;        /* "index.html", "dash.js", "dash.css"          */
    const char *type;
    const unsigned char *data;
    size_t len;
} DashFile;
extern const DashFile dash_files[];
extern const int dash_n_files;

#endif
