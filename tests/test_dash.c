/* test_dash.c: the dashboard's handlers called directly (dash_get,
 * dash_events) on run folders written here: the run list and a run's
 * state, metrics filtered by keys and steps, a truncated last line, the
 * samples, CSV and JSONL export, and every bad request answered with a
 * clear status (400, 404), never a crash; and the Redis source against a
 * real redis-server, through an outage (503) and back. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <signal.h>

#include "common/err.h"
#include "common/fs.h"
#include "coordinator/metrics.h"
#include "dash/dash.h"
#include "testutil.h"

static const char *root;

typedef struct {
    const char *k[4], *v[4];
} Args;

static const char *args_get(void *ctx, const char *key) {
    Args *a = ctx;
    for (int i = 0; i < 4 && a->k[i]; i++)
        if (!strcmp(a->k[i], key)) return a->v[i];
    return NULL;
}

static void put(const char *run, const char *file, const char *text) {
    char d[1024];
    snprintf(d, sizeof d, "%s/%s", root, run);
    assert_int_equal(pl_mkdirs(d), 0);
    assert_int_equal(tu_write_file(tu_path("%s/%s", d, file), text, strlen(text)), 0);
}

/* GET path with up to two query arguments; the reply's status must be
 * status; its body is returned parsed (JSON replies) or NULL. */
static json_t *get(Dash *d, const char *path, int status, const char *k1, const char *v1,
                   const char *k2, const char *v2, DashReply *keep) {
    Args a = {{k1, k2}, {v1, v2}};
    DashQuery q = {args_get, &a};
    DashReply r;
    assert_int_equal(dash_get(d, path, &q, &r), 0);
    if (r.status != status)
        fail_msg("GET %s: status %d, expected %d: %.*s", path, r.status, status, (int)r.len, r.body);
    json_t *j = !strcmp(r.type, "application/json") ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    if (keep) *keep = r;
    else dash_reply_free(&r);
    return j;
}

static int setup(void **state) {
    (void)state;
    root = strdup(tu_path("%s/runs", tu_tmp_dir()));
    /* a finished run, a run whose last line was torn, a running run whose
     * coordinator is gone, and a folder that is no run */
    put("alpha", "status.json",
        "{\"state\": \"finished\", \"algo\": \"grpo\", \"host\": \"h\", \"pid\": 1, \"steps\": 3}");
    put("alpha", "metrics.jsonl",
        "{\"step\": 0, \"eval/accuracy\": 0.25}\n{\"step\": 1, \"train/loss\": 2.5, \"perf/time\": 10}\n"
        "{\"step\": 2, \"train/loss\": 2.0, \"perf/time\": 11}\n"
        "{\"step\": 3, \"train/loss\": 1.5, \"eval/accuracy\": 0.5, \"perf/time\": 12}\n");
    put("alpha", "samples.jsonl",
        "{\"step\": 0, \"prompt\": \"2+2=\", \"response\": \"<script>alert(1)</script>\", "
        "\"reward\": 0, \"answer\": \"4\"}\n{\"step\": 3, \"prompt\": \"2+2=\", \"response\": "
        "\"4\", \"reward\": 1, \"answer\": \"4\"}\n");
    put("alpha", "config.yaml", "algo.name: grpo\n");
    put("torn", "metrics.jsonl", "{\"step\": 0, \"x/y\": 1}\nnot json\n{\"step\": 1, \"x/y\": 2}\n{\"step\": 2, \"x/");
    char me[128] = "";
    gethostname(me, sizeof me - 1);
    char st[512];
    snprintf(st, sizeof st, "{\"state\": \"running\", \"host\": \"%s\", \"pid\": 999999999}", me);
    put("gone", "status.json", st);
    put("other", "notes.txt", "hello\n");
    return 0;
}

static Dash *open_dash(void) {
    Dash *d = NULL;
    DashOptions o = {.runs_dir = root, .chart_js = "/nonexistent/chart.js"};
    assert_int_equal(dash_new(&d, &o), 0);
    return d;
}

static void test_runs(void **state) {
    (void)state;
    Dash *d = open_dash();
    json_t *j = get(d, "/api/runs", 200, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(json_array_size(j), 3); /* "other" is no run */
    json_t *a = json_array_get(j, 0), *g = json_array_get(j, 1), *t = json_array_get(j, 2);
    assert_string_equal(json_string_value(json_object_get(a, "name")), "alpha");
    assert_string_equal(json_string_value(json_object_get(a, "state")), "finished");
    assert_int_equal(json_integer_value(json_object_get(a, "step")), 3);
    assert_string_equal(json_string_value(json_object_get(g, "state")), "stalled");
    assert_int_equal(json_integer_value(json_object_get(t, "step")), 1);
    json_decref(j);
    j = get(d, "/api/runs/alpha", 200, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "keys")), 4); /* step, eval, train, perf */
    assert_string_equal(json_string_value(json_object_get(j, "config")), "algo.name: grpo\n");
    json_decref(j);
    dash_free(&d);
}

static void test_metrics(void **state) {
    (void)state;
    Dash *d = open_dash();
    json_t *j = get(d, "/api/runs/alpha/metrics", 200, "keys", "train/loss", "from", "2", NULL);
    json_t *rows = json_object_get(j, "rows");
    assert_int_equal(json_array_size(rows), 2);
    json_t *row = json_array_get(rows, 1);
    assert_int_equal(json_integer_value(json_object_get(row, "step")), 3);
    assert_true(json_number_value(json_object_get(row, "train/loss")) == 1.5);
    assert_null(json_object_get(row, "eval/accuracy"));
    assert_non_null(json_object_get(row, "perf/time"));
    json_decref(j);
    /* the torn run: the bad line and the unfinished last one are left out */
    j = get(d, "/api/runs/torn/metrics", 200, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "rows")), 2);
    json_decref(j);
    j = get(d, "/api/runs/alpha/samples", 200, "step", "0", NULL, NULL, NULL);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "response")),
                        "<script>alert(1)</script>");
    json_decref(j);
    DashReply r;
    get(d, "/api/runs/alpha/export", 200, "format", "csv", NULL, NULL, &r);
    assert_string_equal(r.type, "text/csv");
    assert_string_equal(r.filename, "alpha.csv");
    assert_true(r.len > 0 && !strncmp(r.body, "step,eval/accuracy,train/loss,perf/time\n0,0.25,,\n", 48));
    dash_reply_free(&r);
    get(d, "/api/runs/alpha/export", 200, "format", "jsonl", NULL, NULL, &r);
    int lines = 0;
    for (size_t i = 0; i < r.len; i++) lines += r.body[i] == '\n';
    assert_int_equal(lines, 4);
    dash_reply_free(&r);
    dash_free(&d);
}

static void test_bad_requests(void **state) {
    (void)state;
    Dash *d = open_dash();
    const struct {
        const char *path, *k, *v;
        int status;
        const char *says;
    } cases[] = {
        {"/api/runs/nope", NULL, NULL, 404, "no run nope"},
        {"/api/runs/other/metrics", NULL, NULL, 404, "no run other"},
        {"/api/runs/..%2Fetc", NULL, NULL, 400, "letters, digits"},
        {"/api/runs/.hidden", NULL, NULL, 400, "letters, digits"},
        {"/api/runs/alpha/metrics", "from", "-1", 400, "from=-1"},
        {"/api/runs/alpha/metrics", "to", "x", 400, "to=x"},
        {"/api/runs/alpha/metrics", "keys", ",", 400, "keys: empty"},
        {"/api/runs/alpha/samples", "step", "1e3", 400, "step=1e3"},
        {"/api/runs/alpha/export", "format", "xml", 400, "csv or jsonl"},
        {"/api/runs/alpha/nothing", NULL, NULL, 404, "no page"},
        {"/nothing", NULL, NULL, 404, "no page"},
        {"/static/chart.js", NULL, NULL, 404, "libjs-chart.js"},
        {"/static/../../etc/passwd", NULL, NULL, 404, "no static file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = get(d, cases[i].path, cases[i].status, cases[i].k, cases[i].v, NULL, NULL, NULL);
        const char *e = json_string_value(json_object_get(j, "error"));
        if (!e || !strstr(e, cases[i].says))
            fail_msg("GET %s: error \"%s\", expected it to say \"%s\"", cases[i].path, e ? e : "",
                     cases[i].says);
        json_decref(j);
    }
    json_t *j = get(d, "/api/runs/alpha/metrics", 400, "from", "3", "to", "1", NULL);
    json_decref(j);
    DashReply r;
    get(d, "/", 200, NULL, NULL, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "/static/dash.js"));
    dash_reply_free(&r);
    dash_free(&d);
    DashOptions o = {.runs_dir = "/nonexistent/runs"};
    assert_true(dash_new(&d, &o) < 0);
}

/* The events after step 1: steps 2 and 3, then the state; nothing more
 * until a line is added. */
static void test_events(void **state) {
    (void)state;
    Dash *d = open_dash();
    DashCursor c = {.after = 1};
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(dash_events(d, "alpha", &c, &buf, &len), 0);
    assert_int_equal(c.after, 3);
    assert_string_equal(c.state, "finished");
    assert_non_null(strstr(buf, "event: metrics\ndata: {\"step\":2"));
    assert_non_null(strstr(buf, "event: state\ndata: {\"state\": \"finished\"}"));
    free(buf);
    assert_int_equal(dash_events(d, "alpha", &c, &buf, &len), 0);
    assert_int_equal(len, 0);
    free(buf);
    assert_true(dash_events(d, "nope", &c, &buf, &len) < 0);
    dash_free(&d);
}

/* ------------------------------------------------------------- Redis */

static const char *state_of(json_t *runs, const char *name) {
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) if (!strcmp(json_string_value(json_object_get(r, "name")), name))
        return json_string_value(json_object_get(r, "state"));
    return NULL;
}

/* One metric line of a run (the coordinator's own writer). */
static void log_step(Metrics *m, long step, double reward) {
    const char *names[] = {"rollout/reward"};
    const double v[] = {reward};
    assert_int_equal(metrics_log(m, step, names, v, 1), 0);
}

/* The Redis source, against a real redis-server written to by the
 * coordinator's metrics: the registry lists a running run, its metrics,
 * samples, redacted config and events; a run whose heartbeat is gone is
 * stalled; a resumed run's stream holds each step once. Then Redis dies:
 * every request is a 503 naming it, the source says "reconnecting" and
 * the events stream says so; once Redis is back (empty), the run's next
 * line puts it in the registry again and everything answers as before. */
static void test_redis(void **state) {
    (void)state;
    TuRedis srv = {0};
    if (tu_redis_start(&srv) != 0) skip();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    Metrics *m = NULL;
    const char *rundir = tu_path("%s/rruns/live1", tu_tmp_dir());
    assert_int_equal(metrics_open(&m, rundir, url, NULL), 0);
    metrics_set_retry_s(m, 0);
    MetricsRun run = {.state = "running", .algo = "grpo", .host = "h",
                      .config = "metrics.redis: redis://:hunter2@db:6379\nrun.steps: 5\n",
                      .pid = 1, .steps = 5, .started = 100};
    metrics_run(m, &run);
    for (int i = 1; i <= 3; i++) log_step(m, i, 0.1 * i);
    metrics_sample(m, 2, "1+1=", "<script>alert(1)</script>", 0, "2");
    /* a second life of the run from step 1 that Redis could not cut: the
     * stream holds 1, 2, 3, 2 */
    log_step(m, 2, 0.9);

    /* a dead run: its coordinator stopped beating */
    redisContext *c = redisConnect("127.0.0.1", srv.port);
    assert_true(c && !c->err);
    freeReplyObject(redisCommand(c, "HSET plumb:run:dead1 name dead1 state running algo dpo"));
    freeReplyObject(redisCommand(c, "ZADD plumb:runs 50 dead1"));
    freeReplyObject(redisCommand(c, "ZADD plumb:runs 60 bad/name"));
    redisFree(c);

    Dash *d = NULL;
    DashOptions o = {.redis_url = url, .chart_js = "/nonexistent/chart.js"};
    assert_int_equal(dash_new(&d, &o), 0);
    char where[700];
    assert_int_equal(dash_source(d, where, sizeof where), 0);
    json_t *j = get(d, "/api/runs", 200, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(json_array_size(j), 2); /* "bad/name" is left out */
    assert_string_equal(state_of(j, "live1"), "running");
    assert_string_equal(state_of(j, "dead1"), "stalled");
    json_decref(j);
    j = get(d, "/api/runs/live1", 200, NULL, NULL, NULL, NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "algo")), "grpo");
    assert_int_equal(json_integer_value(json_object_get(j, "step")), 2);
    const char *cfg = json_string_value(json_object_get(j, "config"));
    assert_non_null(cfg);
    assert_null(strstr(cfg, "hunter2"));
    assert_non_null(strstr(cfg, "redis://:***@db:6379"));
    json_decref(j);
    j = get(d, "/api/runs/live1/metrics", 200, NULL, NULL, NULL, NULL, NULL);
    json_t *rows = json_object_get(j, "rows");
    assert_int_equal(json_array_size(rows), 3); /* steps 1, 2 (the later), 3 */
    assert_true(json_real_value(json_object_get(json_array_get(rows, 1), "rollout/reward")) == 0.9);
    json_decref(j);
    j = get(d, "/api/runs/live1/samples", 200, "step", "2", NULL, NULL, NULL);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "response")),
                        "<script>alert(1)</script>");
    json_decref(j);
    json_decref(get(d, "/api/runs/nope", 404, NULL, NULL, NULL, NULL, NULL));
    DashCursor cur = {.after = 1};
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(dash_events(d, "live1", &cur, &buf, &len), 0);
    assert_int_equal(cur.after, 3);
    assert_non_null(strstr(buf, "event: state\ndata: {\"state\": \"running\"}"));
    free(buf);

    /* Redis goes away */
    tu_redis_stop(&srv, SIGKILL);
    j = get(d, "/api/runs", 503, NULL, NULL, NULL, NULL, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    assert_non_null(strstr(e, url));
    assert_non_null(strstr(e, "reconnecting"));
    json_decref(j);
    json_decref(get(d, "/api/runs/live1/metrics", 503, NULL, NULL, NULL, NULL, NULL));
    j = get(d, "/api/source", 200, NULL, NULL, NULL, NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "reconnecting");
    json_decref(j);
    assert_true(dash_source(d, where, sizeof where) < 0);
    assert_int_equal(dash_events(d, "live1", &cur, &buf, &len), 0);
    assert_non_null(strstr(buf, "event: source\ndata: {\"state\":\"reconnecting\""));
    free(buf);
    log_step(m, 4, 0.4); /* lost; the run goes on */

    /* Redis is back, empty: the run's next line lists it again */
    assert_int_equal(tu_redis_start(&srv), 0);
    log_step(m, 5, 0.5);
    j = get(d, "/api/runs", 200, NULL, NULL, NULL, NULL, NULL);
    assert_string_equal(state_of(j, "live1"), "running");
    json_decref(j);
    assert_int_equal(dash_events(d, "live1", &cur, &buf, &len), 0);
    assert_non_null(strstr(buf, "event: source\ndata: {\"state\":\"ok\"}"));
    assert_non_null(strstr(buf, "event: metrics\ndata: {\"step\":5"));
    free(buf);
    run.state = "finished";
    metrics_run(m, &run);
    j = get(d, "/api/runs", 200, NULL, NULL, NULL, NULL, NULL);
    assert_string_equal(state_of(j, "live1"), "finished");
    json_decref(j);
    metrics_close(&m);
    dash_free(&d);
    tu_redis_stop(&srv, SIGTERM);
    /* a URL that does not parse */
    o.redis_url = "http://x";
    assert_true(dash_new(&d, &o) < 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_redis),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
