/* api.c: dash_get, every GET the dashboard answers (dash.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "dash/dash_impl.h"

#define CHART_JS "/usr/share/javascript/chart.js/chart.min.js"
#define MAX_KEYS 256

int dash_new(Dash **out, const DashOptions *o) {
    *out = NULL;
    struct stat st;
    if (!o->redis_url && (!o->runs_dir || stat(o->runs_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return pl_fail(PL_EIO, "--runs %s: not a folder", o->runs_dir ? o->runs_dir : "(none)");
    Dash *d = calloc(1, sizeof *d);
    PL_CHECK_ALLOC(d);
    snprintf(d->chart_js, sizeof d->chart_js, "%s", o->chart_js ? o->chart_js : CHART_JS);
    if (o->redis_url) {
        int rc = redis_runs_open(d, o->redis_url);
        if (rc < 0) {
            free(d);
            return rc;
        }
        d->src = &dash_redis;
    } else {
        snprintf(d->runs_dir, sizeof d->runs_dir, "%s", o->runs_dir);
        d->src = &dash_folders;
    }
    *out = d;
    return 0;
}

void dash_free(Dash **d) {
    if (!d || !*d) return;
    if ((*d)->src->free) (*d)->src->free(*d);
    free(*d);
    *d = NULL;
}

int dash_source(Dash *d, char *buf, size_t cap) {
    json_t *h = d->src->health(d);
    const char *err = json_string_value(json_object_get(h, "error"));
    int ok = !strcmp(json_string_value(json_object_get(h, "state")) ?: "", "ok");
    snprintf(buf, cap, "%s", ok || !err ? json_string_value(json_object_get(h, "where")) ?: "" : err);
    json_decref(h);
    return ok ? 0 : PL_EPEER;
}

void dash_reply_free(DashReply *r) {
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* out = a copy of body (len bytes) with status and type. */
static int reply(DashReply *out, int status, const char *type, const void *body, size_t len) {
    memset(out, 0, sizeof *out);
    out->status = status, out->type = type;
    out->body = malloc(len ? len : 1);
    PL_CHECK_ALLOC(out->body);
    memcpy(out->body, body, len);
    out->len = len;
    return 0;
}

/* out = j as JSON (j is taken). */
static int reply_json(DashReply *out, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return pl_fail(PL_ENOMEM, "dashboard reply");
    memset(out, 0, sizeof *out);
    out->status = status, out->type = "application/json";
    out->body = s, out->len = strlen(s);
    return 0;
}

static int reply_error(DashReply *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int reply_error(DashReply *out, int status, const char *fmt, ...) {
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return reply_json(out, status, json_pack("{s:s}", "error", m));
}

/* The source's failure rc as a reply: a run that is not there is a 404,
 * a source that cannot be reached a 503. */
static int reply_source(DashReply *out, int rc) {
    if (rc == PL_ENOMEM) return rc;
    return reply_error(out, rc == PL_EIO ? 404 : rc == PL_EPEER ? 503 : 500, "%s", pl_error());
}

static const char *arg(const DashQuery *q, const char *key) {
    return q && q->get ? q->get(q->ctx, key) : NULL;
}

/* Query parameter key as a step (>= 0) into *v (def when absent); 0, or 1
 * after a 400 went into out. */
static int step_arg(const DashQuery *q, const char *key, long def, long *v, DashReply *out) {
    const char *s = arg(q, key);
    *v = def;
    if (!s) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < 0) {
        reply_error(out, 400, "%s=%.64s: not a step (an integer >= 0)", key, s);
        return 1;
    }
    *v = x;
    return 0;
}

/* The rows of lines keeping only "step", "perf/time" and keys[0..nk). */
static void keep_keys(json_t *rows, char **keys, int nk) {
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        const char *k;
        json_t *v, *tmp;
        json_object_foreach_safe(row, tmp, k, v) {
            int keep = !strcmp(k, "step") || !strcmp(k, "perf/time");
            for (int j = 0; j < nk && !keep; j++) keep = !strcmp(k, keys[j]);
            if (!keep) json_object_del(row, k);
        }
    }
}

static int api_metrics(Dash *d, const char *name, const DashQuery *q, DashReply *out) {
    long from, to;
    if (step_arg(q, "from", 0, &from, out) || step_arg(q, "to", -1, &to, out)) return 0;
    if (to >= 0 && to < from) return reply_error(out, 400, "to=%ld is before from=%ld", to, from);
    char *keys[MAX_KEYS], buf[8192] = "";
    int nk = 0;
    const char *ks = arg(q, "keys");
    if (ks) {
        if (strlen(ks) >= sizeof buf) return reply_error(out, 400, "keys: over %zu bytes", sizeof buf - 1);
        snprintf(buf, sizeof buf, "%s", ks);
        char *save = NULL;
        for (char *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
            if (nk == MAX_KEYS) return reply_error(out, 400, "keys: over %d keys", MAX_KEYS);
            keys[nk++] = k;
        }
        if (nk == 0) return reply_error(out, 400, "keys: empty");
    }
    json_t *rows;
    int rc = d->src->rows(d, name, 0, from, to, &rows);
    if (rc < 0) return reply_source(out, rc);
    if (ks) keep_keys(rows, keys, nk);
    return reply_json(out, 200, json_pack("{s:s, s:o}", "name", name, "rows", rows));
}

static int api_samples(Dash *d, const char *name, const DashQuery *q, DashReply *out) {
    long step;
    if (step_arg(q, "step", -1, &step, out)) return 0;
    json_t *rows;
    int rc = d->src->rows(d, name, 1, step < 0 ? 0 : step, step, &rows);
    if (rc < 0) return reply_source(out, rc);
    return reply_json(out, 200, rows);
}

/* The union of the keys of rows, in the order they first appear. */
static json_t *all_keys(json_t *rows) {
    json_t *keys = json_array(), *seen = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        const char *k;
        json_t *v;
        json_object_foreach(row, k, v) {
            if (json_object_get(seen, k)) continue;
            json_object_set_new(seen, k, json_true());
            json_array_append_new(keys, json_string(k));
        }
    }
    json_decref(seen);
    return keys;
}

/* rows as CSV: a header of every key, then one line a row (empty cells
 * for keys a row lacks). */
static void write_csv(FILE *f, json_t *rows) {
    json_t *keys = all_keys(rows), *row, *k;
    size_t i, j;
    json_array_foreach(keys, j, k) fprintf(f, "%s%s", j ? "," : "", json_string_value(k));
    fputc('\n', f);
    json_array_foreach(rows, i, row) {
        json_array_foreach(keys, j, k) {
            json_t *v = json_object_get(row, json_string_value(k));
            if (j) fputc(',', f);
            if (json_is_integer(v)) fprintf(f, "%lld", (long long)json_integer_value(v));
            else if (json_is_number(v)) fprintf(f, "%.17g", json_number_value(v));
        }
        fputc('\n', f);
    }
    json_decref(keys);
}

static int api_export(Dash *d, const char *name, const DashQuery *q, DashReply *out) {
    const char *fmt = arg(q, "format");
    if (!fmt) fmt = "csv";
    int csv = !strcmp(fmt, "csv");
    if (!csv && strcmp(fmt, "jsonl") != 0)
        return reply_error(out, 400, "format=%.32s: csv or jsonl", fmt);
    json_t *rows;
    int rc = d->src->rows(d, name, 0, 0, -1, &rows);
    if (rc < 0) return reply_source(out, rc);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        json_decref(rows);
        return pl_fail(PL_ENOMEM, "export of %s", name);
    }
    if (csv) write_csv(f, rows);
    else runs_dump_rows(f, rows, "", "\n");
    fclose(f);
    json_decref(rows);
    if (!text) return pl_fail(PL_ENOMEM, "export of %s", name);
    memset(out, 0, sizeof *out);
    out->status = 200, out->type = csv ? "text/csv" : "application/x-ndjson";
    out->body = text, out->len = len;
    snprintf(out->filename, sizeof out->filename, "%s.%s", name, fmt);
    return 0;
}

/* text with the password of every URL in it ("://user:password@")
 * shown as ***, as a JSON string (a config's metrics.redis or data.train
 * may carry one); NULL when it is not UTF-8. */
static json_t *redacted(const char *text) {
    char *o = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&o, &len);
    if (!f) return NULL;
    const char *p = text;
    for (const char *u; (u = strstr(p, "://"));) {
        u += 3;
        size_t n = strcspn(u, " \t\n\"'/@");
        const char *colon = u[n] == '@' ? memchr(u, ':', n) : NULL;
        if (colon && colon + 1 < u + n) {
            fwrite(p, 1, (size_t)(colon + 1 - p), f);
            fputs("***", f);
            p = u + n;
        } else {
            fwrite(p, 1, (size_t)(u - p), f);
            p = u;
        }
    }
    fputs(p, f);
    fclose(f);
    json_t *j = o ? json_stringn(o, len) : NULL;
    free(o);
    return j;
}

static int api_run(Dash *d, const RunInfo *info, DashReply *out) {
    const char *name = info->name;
    json_t *rows;
    int rc = d->src->rows(d, name, 0, 0, -1, &rows);
    if (rc < 0) return reply_source(out, rc);
    char *config = NULL;
    if ((rc = d->src->config(d, name, &config)) < 0) {
        json_decref(rows);
        return reply_source(out, rc);
    }
    json_t *j = runs_info_json(info);
    if (!j) {
        json_decref(rows), free(config);
        return pl_fail(PL_ENOMEM, "run %s", name);
    }
    json_object_set_new(j, "keys", all_keys(rows));
    json_decref(rows);
    json_t *cj = config ? redacted(config) : NULL;
    if (cj) json_object_set_new(j, "config", cj);
    free(config);
    return reply_json(out, 200, j);
}

static int api_runs(Dash *d, DashReply *out) {
    RunInfo *runs;
    int n;
    int rc = d->src->list(d, &runs, &n);
    if (rc < 0) return reply_source(out, rc);
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, runs_info_json(&runs[i]));
    free(runs);
    return reply_json(out, 200, a);
}

static int static_file(Dash *d, const char *name, DashReply *out) {
    if (!strcmp(name, "chart.js")) {
        FILE *f = fopen(d->chart_js, "rb");
        if (!f) return reply_error(out, 404, "chart.js: %s is missing (the libjs-chart.js package)",
                                   d->chart_js);
        char *text = NULL;
        size_t len = 0, n;
        FILE *m = open_memstream(&text, &len);
        char buf[65536];
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, m);
        fclose(f);
        fclose(m);
        memset(out, 0, sizeof *out);
        out->status = 200, out->type = "text/javascript", out->body = text, out->len = len;
        return text ? 0 : pl_fail(PL_ENOMEM, "chart.js");
    }
    for (int i = 0; i < dash_n_files; i++)
        if (!strcmp(dash_files[i].name, name))
            return reply(out, 200, dash_files[i].type, dash_files[i].data, dash_files[i].len);
    return reply_error(out, 404, "no static file %.64s", name);
}

int dash_get(Dash *d, const char *path, const DashQuery *q, DashReply *out) {
    memset(out, 0, sizeof *out);
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) return static_file(d, "index.html", out);
    if (!strncmp(path, "/static/", 8)) return static_file(d, path + 8, out);
    if (!strcmp(path, "/api/runs") || !strcmp(path, "/api/runs/")) return api_runs(d, out);
    if (!strcmp(path, "/api/source")) return reply_json(out, 200, d->src->health(d));
    if (strncmp(path, "/api/runs/", 10) != 0) return reply_error(out, 404, "no page %.200s", path);
    char name[256];
    const char *p = path + 10, *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n >= sizeof name) return reply_error(out, 400, "a run name is at most 200 characters");
    memcpy(name, p, n);
    name[n] = '\0';
    if (!runs_valid_name(name))
        return reply_error(out, 400, "run name \"%.200s\": letters, digits, '.', '_' and '-' only",
                           name);
    RunInfo info;
    int rc = d->src->info(d, name, &info);
    if (rc < 0) return reply_source(out, rc);
    const char *what = slash ? slash + 1 : "";
    if (!*what) return api_run(d, &info, out);
    if (!strcmp(what, "metrics")) return api_metrics(d, name, q, out);
    if (!strcmp(what, "samples")) return api_samples(d, name, q, out);
    if (!strcmp(what, "export")) return api_export(d, name, q, out);
    return reply_error(out, 404, "no page %.200s", path);
}
