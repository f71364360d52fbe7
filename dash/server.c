/* server.c: dash_serve, the dashboard behind libmicrohttpd, and the
 * server-sent events of a live run (dash.h). One thread per connection:
 * an event stream blocks its own thread only. */
#define _GNU_SOURCE
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "common/clock.h"
#include "common/err.h"
#include "dash/dash_impl.h"

int dash_events(Dash *d, const char *name, DashCursor *c, char **buf, size_t *len) {
    RunInfo info;
    json_t *rows = NULL;
    int rc = runs_valid_name(name) ? d->src->info(d, name, &info) : pl_fail(PL_EIO, "no run %s", name);
    if (rc == 0) rc = d->src->rows(d, name, 0, c->after + 1, -1, &rows);
    if (rc < 0 && rc != PL_EPEER) return rc;
    FILE *f = open_memstream(buf, len);
    if (!f) {
        json_decref(rows);
        return pl_fail(PL_ENOMEM, "events");
    }
    if (rc == PL_EPEER || c->down) { /* the source went away, or came back */
        json_t *j = rc == PL_EPEER ? json_pack("{s:s, s:s}", "state", "reconnecting", "error", pl_error())
                                   : json_pack("{s:s}", "state", "ok");
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s && (rc == PL_EPEER) != c->down) fprintf(f, "event: source\ndata: %s\n\n", s);
        free(s), json_decref(j);
        c->down = rc == PL_EPEER;
    }
    if (rc == 0) {
        /* one event a line; an event ends at a blank line */
        long step = runs_dump_rows(f, rows, "event: metrics\ndata: ", "\n\n");
        if (step > c->after) c->after = step;
        if (strcmp(c->state, info.state) != 0) {
            snprintf(c->state, sizeof c->state, "%s", info.state);
            fprintf(f, "event: state\ndata: {\"state\": \"%s\"}\n\n", info.state);
        }
    }
    json_decref(rows);
    fclose(f);
    return 0;
}

/* ------------------------------------------------------------ the server */

typedef struct {
    Dash *d;
    char name[256];
    DashCursor cur;
    char *pending;           /* events not yet sent                          */
    size_t n, off;
    double last;             /* when the file was last looked at            */
} Events;

/* MHD content reader: the events, as they come (a look every 0.5 s, a
 * comment every 15 s so that proxies keep the stream open). */
static ssize_t events_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    Events *e = cls;
    for (int waited = 0;; waited++) {
        if (e->off < e->n) {
            size_t k = e->n - e->off < max ? e->n - e->off : max;
            memcpy(out, e->pending + e->off, k);
            e->off += k;
            return (ssize_t)k;
        }
        free(e->pending);
        e->pending = NULL, e->n = e->off = 0;
        if (waited) usleep(500 * 1000);
        if (dash_events(e->d, e->name, &e->cur, &e->pending, &e->n) < 0)
            return MHD_CONTENT_READER_END_OF_STREAM; /* the run folder went away */
        if (e->n == 0 && pl_now_s() - e->last > 15) {
            free(e->pending);
            e->pending = strdup(": still here\n\n");
            e->n = e->pending ? strlen(e->pending) : 0;
        }
        if (e->n) e->last = pl_now_s();
    }
}

static void events_free(void *cls) {
    Events *e = cls;
    free(e->pending);
    free(e);
}

static const char *query_get(void *ctx, const char *key) {
    return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result queue(struct MHD_Connection *c, struct MHD_Response *r, int status) {
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls) {
    (void)version, (void)upload, (void)upload_len;
    Dash *d = cls;
    if (!*con_cls) { /* the headers: answer once the request is whole */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        const char *m = "{\"error\": \"the dashboard is read-only: GET only\"}";
        return queue(c, MHD_create_response_from_buffer(strlen(m), (void *)m, MHD_RESPMEM_PERSISTENT),
                     405);
    }
    size_t n = strlen(url);
    if (n > 8 && !strcmp(url + n - 7, "/events") && !strncmp(url, "/api/runs/", 10)) {
        Events *e = calloc(1, sizeof *e);
        if (!e) return MHD_NO;
        e->d = d;
        snprintf(e->name, sizeof e->name, "%.*s", (int)(n - 17), url + 10);
        const char *a = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
        e->cur.after = a ? atol(a) : -1;
        e->last = pl_now_s();
        RunInfo info;
        int rc = runs_valid_name(e->name) ? d->src->info(d, e->name, &info) : PL_EIO;
        if (rc == PL_EIO) { /* unknown; an unreachable source is retried in the stream */
            free(e);
            const char *m = "{\"error\": \"no such run\"}";
            return queue(c, MHD_create_response_from_buffer(strlen(m), (void *)m,
                                                            MHD_RESPMEM_PERSISTENT), 404);
        }
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, events_read, e, events_free);
        if (!r) {
            free(e);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        return queue(c, r, 200);
    }
    DashQuery q = {query_get, c};
    DashReply rep;
    if (dash_get(d, url, &q, &rep) < 0) return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(rep.len, rep.body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        dash_reply_free(&rep);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", rep.type);
    if (rep.filename[0]) {
        char disp[400];
        snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", rep.filename);
        MHD_add_response_header(r, "Content-Disposition", disp);
    }
    return queue(c, r, rep.status);
}

int dash_serve(Dash *d, const char *bind, int port, volatile int *stop) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &sa.sin_addr) != 1)
        return pl_fail(PL_EINVAL, "--bind %s: not an IPv4 address", bind);
    struct MHD_Daemon *daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, handle, d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
    if (!daemon) return pl_fail(PL_EIO, "cannot listen on %s:%d (in use?)", bind, port);
    while (!*stop) usleep(100 * 1000);
    MHD_stop_daemon(daemon);
    return 0;
}
