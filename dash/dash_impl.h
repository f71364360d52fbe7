/* dash_impl.h: what the dashboard's files share. Private to dash/.
 *
 *   runs.c     the run folders: names, state, metric and sample lines
 *   api.c      dash_get: the page, the static files and the JSON API
 *   server.c   dash_serve: libmicrohttpd, and the server-sent events
 *   static/    the page, built into the binary (dash_static.c, generated) */
#ifndef PLUMB_DASH_IMPL_H
#define PLUMB_DASH_IMPL_H

#include <jansson.h>
#include <stdio.h>

#include "dash/dash.h"

struct Dash {
    char runs_dir[4096];
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

/* A folder name the dashboard serves ([A-Za-z0-9._-], no leading dot). */
int runs_valid_name(const char *name);
/* DIR/name/file into out. */
void runs_path(const Dash *d, const char *name, const char *file, char *out, size_t cap);
/* The run name under d; PL_EIO when it is not a run. */
int runs_info(const Dash *d, const char *name, RunInfo *out);
json_t *runs_info_json(const RunInfo *i);
/* Every run under d, by name (*out malloc'ed). */
int runs_list(const Dash *d, RunInfo **out, int *n);
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
