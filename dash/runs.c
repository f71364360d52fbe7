/* runs.c: the folder source (dash_folders), the run folders under --runs
 * DIR (dash_impl.h). A run is a folder with a metrics.jsonl or a
 * status.json. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "dash/dash_impl.h"

int runs_valid_name(const char *name) {
    if (!name || !*name || name[0] == '.' || strlen(name) > 200) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

static void runs_path(const Dash *d, const char *name, const char *file, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s/%s/%s", d->runs_dir, name, file);
    if (n < 0 || (size_t)n >= cap) out[0] = '\0'; /* opens nothing */
}

/* The whole {"step": N, ...} lines of f with from <= N <= to (to < 0: no
 * bound) appended to rows (NULL: only the last step is wanted); returns
 * the last such line's step, or -1. A line that does not parse is
 * skipped; a last line without its newline (torn by a crash, or being
 * written by a live run) ends the reading. */
static long read_lines(FILE *f, long from, long to, json_t *rows) {
    long last = -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') break;
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        json_t *s = json_object_get(j, "step");
        long step = json_is_integer(s) ? (long)json_integer_value(s) : -1;
        if (step >= 0) last = step;
        if (rows && step >= 0 && step >= from && (to < 0 || step <= to))
            json_array_append_new(rows, j);
        else
            json_decref(j);
    }
    free(line);
    return last;
}

json_t *runs_lines(const char *path, long from, long to) {
    json_t *rows = json_array();
    FILE *f = fopen(path, "r");
    if (f && rows) read_lines(f, from, to, rows);
    if (f) fclose(f);
    return rows;
}

long runs_dump_rows(FILE *f, json_t *rows, const char *before, const char *end) {
    long last = -1;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        char *s = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s) fprintf(f, "%s%s%s", before, s, end);
        free(s);
        last = (long)json_integer_value(json_object_get(row, "step"));
    }
    return last;
}

/* The "step" of the last whole line of path, or -1. */
static long last_step(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    /* the tail holds the last lines; metrics lines are a few KB at most */
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        fseek(f, size > 65536 ? size - 65536 : 0, SEEK_SET);
    }
    long step = read_lines(f, 0, -1, NULL);
    fclose(f);
    return step;
}

static int dir_info(Dash *d, const char *name, RunInfo *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    char mpath[4096], spath[4096];
    runs_path(d, name, "metrics.jsonl", mpath, sizeof mpath);
    runs_path(d, name, "status.json", spath, sizeof spath);
    struct stat ms, ss;
    int have_m = stat(mpath, &ms) == 0, have_s = stat(spath, &ss) == 0;
    if (!have_m && !have_s) return pl_fail(PL_EIO, "no run %s under %s", name, d->runs_dir);
    out->step = last_step(mpath);
    out->updated = have_m ? (double)ms.st_mtime : 0;
    snprintf(out->state, sizeof out->state, "unknown");
    json_t *st = have_s ? json_load_file(spath, 0, NULL) : NULL;
    if (st) {
        const char *s = json_string_value(json_object_get(st, "state"));
        const char *a = json_string_value(json_object_get(st, "algo"));
        const char *h = json_string_value(json_object_get(st, "host"));
        const char *e = json_string_value(json_object_get(st, "error"));
        if (s) snprintf(out->state, sizeof out->state, "%s", s);
        if (a) snprintf(out->algo, sizeof out->algo, "%s", a);
        if (h) snprintf(out->host, sizeof out->host, "%s", h);
        if (e) snprintf(out->error, sizeof out->error, "%s", e);
        out->steps = (long)json_integer_value(json_object_get(st, "steps"));
        out->started = json_number_value(json_object_get(st, "started"));
        double up = json_number_value(json_object_get(st, "updated"));
        if (up > out->updated) out->updated = up;
        int pid = (int)json_integer_value(json_object_get(st, "pid"));
        char me[128] = "";
        gethostname(me, sizeof me - 1);
        /* a running run whose coordinator on this host is gone died
         * without saying so */
        if (!strcmp(out->state, "running") && pid > 0 && !strcmp(out->host, me) &&
            kill(pid, 0) != 0 && errno == ESRCH)
            snprintf(out->state, sizeof out->state, "stalled");
        json_decref(st);
    }
    return 0;
}

json_t *runs_info_json(const RunInfo *i) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:s}", "name", i->name, "algo",
                          i->algo, "state", i->state, "step", (json_int_t)i->step, "steps",
                          (json_int_t)i->steps, "started", i->started, "updated", i->updated,
                          "host", i->host);
    if (j && i->error[0]) json_object_set_new(j, "error", json_string(i->error));
    return j;
}

int runs_by_name(const void *a, const void *b) {
    return strcmp(((const RunInfo *)a)->name, ((const RunInfo *)b)->name);
}

static int dir_list(Dash *d, RunInfo **out, int *n) {
    *out = NULL, *n = 0;
    DIR *dir = opendir(d->runs_dir);
    if (!dir) return pl_fail(PL_EIO, "open %s: %s", d->runs_dir, strerror(errno));
    int cap = 0, rc = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (!runs_valid_name(e->d_name)) continue;
        RunInfo info;
        if (dir_info(d, e->d_name, &info) < 0) continue; /* not a run */
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            RunInfo *g = realloc(*out, sizeof **out * (size_t)cap);
            if (!g) {
                rc = pl_fail(PL_ENOMEM, "listing %s", d->runs_dir);
                break;
            }
            *out = g;
        }
        (*out)[(*n)++] = info;
    }
    closedir(dir);
    if (*n > 1) qsort(*out, (size_t)*n, sizeof **out, runs_by_name);
    return rc;
}

static int dir_rows(Dash *d, const char *name, int samples, long from, long to, json_t **out) {
    char path[4096];
    runs_path(d, name, samples ? "samples.jsonl" : "metrics.jsonl", path, sizeof path);
    *out = runs_lines(path, from, to);
    return *out ? 0 : pl_fail(PL_ENOMEM, "the lines of %s", path);
}

static int dir_config(Dash *d, const char *name, char **out) {
    char path[4096];
    runs_path(d, name, "config.yaml", path, sizeof path);
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char *text = malloc(CONFIG_MAX + 1);
    size_t n = text ? fread(text, 1, CONFIG_MAX, f) : 0;
    fclose(f);
    PL_CHECK_ALLOC(text);
    text[n] = '\0';
    *out = text;
    return 0;
}

static json_t *dir_health(Dash *d) {
    return json_pack("{s:s, s:s, s:s}", "kind", "folders", "where", d->runs_dir, "state", "ok");
}

const DashSource dash_folders = {"folders", dir_list, dir_info, dir_rows, dir_config, dir_health,
                                 NULL};
