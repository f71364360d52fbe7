/* test_metrics.c: the metrics sink (coordinator/metrics.h).
 *
 * Proves: each logged step is one JSON line with exactly the given names
 * and values, in order, non-finite values as null; the run dir is created;
 * metrics_truncate_after makes a resumed run's file equal to an
 * uninterrupted run's, also after a crash tore the last line; the progress
 * line has the documented form. Against a real redis-server (started on a
 * free localhost port, stopped in teardown) the stream holds the same lines
 * (with AUTH and SELECT too), and a server killed mid-run or never reachable
 * does not make metrics_log fail: the file keeps growing, the missed lines
 * are counted, and the sink reconnects when the server is back. SIGPIPE is
 * left at its default here, so a write to the dead server would kill the
 * test if the sink did not guard against it. The Redis tests skip when
 * redis-server is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "testutil.h"

#include "common/err.h"
#include "coordinator/metrics.h"

/* ------------------------------------------------------------ the server */

static int g_have_redis;

static int setup(void **state) {
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    if (!g_have_redis) return 0; /* the test skips */
    return s && tu_redis_start(s) == 0 ? 0 : -1;
}

static int setup_auth(void **state) {
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    if (!s) return -1;
    strcpy(s->password, "s3cret");
    if (!g_have_redis) return 0;
    return tu_redis_start(s) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    TuRedis *s = *state;
    tu_redis_stop(s, SIGTERM);
    free(s);
    return 0;
}

/* A plain connection for checking what reached the server. */
static redisContext *client(const TuRedis *s, int db) {
    redisContext *c = redisConnect("127.0.0.1", s->port);
    assert_true(c && !c->err);
    if (s->password[0]) freeReplyObject(redisCommand(c, "AUTH %s", s->password));
    if (db) freeReplyObject(redisCommand(c, "SELECT %d", db));
    return c;
}

/* --------------------------------------------------------------- helpers */

/* A fresh run dir under the scratch dir (not created). */
static const char *run_dir(const char *name) {
    static char dirs[16][600]; /* outlives tu_path's rotating buffers */
    static int next;
    char *d = dirs[next++ & 15];
    snprintf(d, sizeof dirs[0], "%s/%s", tu_tmp_dir(), name);
    return d;
}

static char *read_metrics(const char *dir) {
    char *t = tu_read_file(tu_path("%s/metrics.jsonl", dir), NULL);
    if (!t) fail_msg("cannot read %s/metrics.jsonl", dir);
    return t;
}

/* Splits text into at most max lines (in place); returns the count. */
static int split_lines(char *text, char **lines, int max) {
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < max;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    return n;
}

static void log3(Metrics *m, long step, double a, double b, double c) {
    const char *names[] = {"reward", "kl", "loss"};
    const double v[] = {a, b, c};
    if (metrics_log(m, step, names, v, 3) < 0) fail_msg("metrics_log: %s", pl_error());
}

/* ----------------------------------------------------------- the file */

/* Lines are exact, parse back to the values logged (bit for bit), keep the
 * order of the names, and the run dir (two levels) is created. */
static void test_jsonl_lines(void **state) {
    const char *dir = run_dir("a/b");
    Metrics *m = NULL;
    if (metrics_open(&m, dir, NULL, NULL) < 0) fail_msg("%s", pl_error());
    const double third = 1.0 / 3.0;
    log3(m, 1, 0.5, 0.25, 2);
    log3(m, 2, third, -1e-300, 1e20);
    const char *names[] = {"tokens/s", "say \"hi\"\n"};
    const double v[] = {1534.25, 7};
    assert_int_equal(metrics_log(m, 3, names, v, 2), 0);
    assert_int_equal(metrics_log(m, 4, NULL, NULL, 0), 0);
    assert_int_equal(metrics_redis_errors(m), 0);
    metrics_close(&m);
    assert_null(m);
    metrics_close(&m); /* NULL is fine */

    char *text = read_metrics(dir), *lines[8];
    assert_int_equal(split_lines(text, lines, 8), 4);
    assert_string_equal(lines[0], "{\"step\": 1, \"reward\": 0.5, \"kl\": 0.25, \"loss\": 2}");
    assert_string_equal(lines[2], "{\"step\": 3, \"tokens/s\": 1534.25, \"say \\\"hi\\\"\\n\": 7}");
    assert_string_equal(lines[3], "{\"step\": 4}");

    json_error_t err;
    json_t *j = json_loads(lines[1], 0, &err);
    if (!j) fail_msg("line 2 is not JSON: %s", err.text);
    assert_int_equal(json_integer_value(json_object_get(j, "step")), 2);
    assert_true(json_real_value(json_object_get(j, "reward")) == third);
    assert_true(json_real_value(json_object_get(j, "kl")) == -1e-300);
    assert_true(json_number_value(json_object_get(j, "loss")) == 1e20);
    const char *order[] = {"step", "reward", "kl", "loss"};
    int i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val) assert_string_equal(key, order[i++]);
    json_decref(j);
    j = json_loads(lines[2], 0, &err);
    assert_non_null(json_object_get(j, "say \"hi\"\n"));
    json_decref(j);
    free(text);
}

/* NaN and infinities are written as null; the line stays valid JSON. */
static void test_nonfinite_is_null(void **state) {
    const char *dir = run_dir("nan");
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, dir, "", ""), 0);
    log3(m, 7, NAN, INFINITY, -INFINITY);
    metrics_close(&m);
    char *text = read_metrics(dir);
    assert_string_equal(text, "{\"step\": 7, \"reward\": null, \"kl\": null, \"loss\": null}\n");
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "reward")));
    json_decref(j);
    free(text);
}

/* A NULL, empty or "step" name is refused before anything is written. */
/* Samples: one JSON line each; bytes that are not UTF-8 become U+FFFD and
 * markup stays text; no answer, no key; a resume cuts them back as it cuts
 * the metrics. */
static void test_samples(void **state) {
    (void)state;
    const char *dir = run_dir("samples");
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, dir, "", ""), 0);
    assert_int_equal(metrics_sample(m, 0, "2+2=", "<script>x\xff\xc3</script>", 0, "4"), 0);
    assert_int_equal(metrics_sample(m, 5, "q\n", "caf\xc3\xa9", NAN, NULL), 0);
    metrics_close(&m);
    char *text = tu_read_file(tu_path("%s/samples.jsonl", dir), NULL);
    assert_string_equal(text,
                        "{\"step\": 0, \"prompt\": \"2+2=\", \"response\": "
                        "\"<script>x\\ufffd\\ufffd</script>\", \"reward\": 0, \"answer\": \"4\"}\n"
                        "{\"step\": 5, \"prompt\": \"q\\n\", \"response\": \"caf\xc3\xa9\", "
                        "\"reward\": null}\n");
    free(text);
    assert_int_equal(metrics_truncate_after(dir, 3), 0);
    text = tu_read_file(tu_path("%s/samples.jsonl", dir), NULL);
    assert_non_null(strstr(text, "\"step\": 0"));
    assert_null(strstr(text, "\"step\": 5"));
    free(text);
}

static void test_bad_names(void **state) {
    const char *dir = run_dir("names");
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, dir, NULL, NULL), 0);
    const double v[] = {1, 2};
    const char *a[] = {"ok", "step"}, *b[] = {"ok", ""}, *c[] = {NULL, "ok"};
    assert_int_equal(metrics_log(m, 1, a, v, 2), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "reserved"));
    assert_int_equal(metrics_log(m, 1, b, v, 2), PL_EINVAL);
    assert_int_equal(metrics_log(m, 1, c, v, 2), PL_EINVAL);
    metrics_close(&m);
    char *text = read_metrics(dir);
    assert_string_equal(text, "");
    free(text);
    /* a run dir that is a file cannot be opened */
    const char *file = run_dir("plainfile");
    assert_int_equal(tu_write_file(file, "x", 1), 0);
    assert_true(metrics_open(&m, file, NULL, NULL) < 0);
    assert_null(m);
}

/* A run interrupted after step 5 (with a torn line from the crash), cut
 * back to its checkpoint at step 3 and resumed, leaves the same file as a
 * run that was never interrupted. */
static void test_truncate_resume(void **state) {
    const char *full = run_dir("full"), *resumed = run_dir("resumed");
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, full, NULL, NULL), 0);
    for (int s = 1; s <= 6; s++) log3(m, s, s * 0.1, s * 0.01, s);
    metrics_close(&m);

    assert_int_equal(metrics_open(&m, resumed, NULL, NULL), 0);
    for (int s = 1; s <= 5; s++) log3(m, s, s * 0.1, s * 0.01, s);
    metrics_close(&m);
    FILE *f = fopen(tu_path("%s/metrics.jsonl", resumed), "a");
    fputs("{\"step\": 6, \"rew", f); /* the crash */
    fclose(f);

    assert_int_equal(metrics_truncate_after(resumed, 3), 0);
    char *cut = read_metrics(resumed), *lines[8];
    assert_int_equal(split_lines(cut, lines, 8), 3);
    free(cut);
    assert_int_equal(access(tu_path("%s/metrics.jsonl.tmp", resumed), F_OK), -1);

    assert_int_equal(metrics_open(&m, resumed, NULL, NULL), 0);
    for (int s = 4; s <= 6; s++) log3(m, s, s * 0.1, s * 0.01, s);
    metrics_close(&m);
    char *a = read_metrics(full), *b = read_metrics(resumed);
    assert_string_equal(a, b);
    free(a), free(b);

    /* cutting at or past the end keeps everything; before the start, nothing */
    assert_int_equal(metrics_truncate_after(full, 6), 0);
    a = read_metrics(full);
    assert_int_equal(split_lines(a, lines, 8), 6);
    free(a);
    assert_int_equal(metrics_truncate_after(full, 0), 0);
    a = read_metrics(full);
    assert_string_equal(a, "");
    free(a);
    /* no file yet: nothing to do */
    assert_int_equal(metrics_truncate_after(run_dir("never"), 3), 0);
}

/* A torn last line left by a crash is ended before new lines are appended
 * (even without metrics_truncate_after), so each new line parses. */
static void test_open_ends_torn_line(void **state) {
    const char *dir = run_dir("torn");
    mkdir(dir, 0755);
    assert_int_equal(tu_write_file(tu_path("%s/metrics.jsonl", dir), "{\"step\": 1}\n{\"st", 16), 0);
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, dir, NULL, NULL), 0);
    log3(m, 2, 1, 2, 3);
    metrics_close(&m);
    char *text = read_metrics(dir), *lines[8];
    assert_int_equal(split_lines(text, lines, 8), 3);
    json_t *j = json_loads(lines[2], 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "step")), 2);
    json_decref(j);
    free(text);
}

/* The progress line: every field, then NaN fields (and no restarts) left out. */
static void test_progress(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    metrics_progress(f, 12, 100, 0.41234, 0.0031, 1534.4, 30.0, 0); /* eta 88 * 2.5 s */
    metrics_progress(f, 12, 100, NAN, NAN, NAN, NAN, 0);
    metrics_progress(f, 50, 100, 1.0, NAN, 10, 3 * 3600.0, 2);
    metrics_progress(f, 3, 0, -0.5, 0.25, NAN, 1.0, 1);
    fclose(f);
    assert_string_equal(buf, "step 12/100  reward 0.412  kl 0.0031  1534 tok/s  eta 3m40s\n"
                             "step 12/100\n"
                             "step 50/100  reward 1.000  10 tok/s  eta 3h00m  restarts 2\n"
                             "step 3  reward -0.500  kl 0.25  restarts 1\n");
    free(buf);
}

/* ------------------------------------------------------------- Redis */

#define SKIP_WITHOUT_REDIS()                                                                   \
    do {                                                                                       \
        if (!g_have_redis) skip();                                                             \
    } while (0)

/* The stream holds every line, as field "json" with field "step"; a
 * malformed URL is refused. */
static void test_redis_stream(void **state) {
    SKIP_WITHOUT_REDIS();
    TuRedis *s = *state;
    const char *dir = run_dir("stream");
    Metrics *m = NULL;
    assert_true(metrics_open(&m, dir, "http://nope", NULL) < 0);
    assert_null(m);
    if (metrics_open(&m, dir, tu_path("redis://127.0.0.1:%d/0", s->port), "plumb:metrics:t") < 0)
        fail_msg("%s", pl_error());
    for (int i = 1; i <= 3; i++) log3(m, i, i, NAN, -i);
    assert_int_equal(metrics_redis_errors(m), 0);
    assert_string_equal(metrics_redis_last_error(m), "");
    metrics_close(&m);

    char *text = read_metrics(dir), *lines[8];
    assert_int_equal(split_lines(text, lines, 8), 3);
    redisContext *c = client(s, 0);
    redisReply *r = redisCommand(c, "XRANGE plumb:metrics:t - +");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 3);
    for (size_t i = 0; i < 3; i++) {
        redisReply *fields = r->element[i]->element[1];
        assert_int_equal(fields->elements, 4);
        assert_string_equal(fields->element[0]->str, "step");
        assert_string_equal(fields->element[1]->str, tu_path("%zu", i + 1));
        assert_string_equal(fields->element[2]->str, "json");
        assert_string_equal(fields->element[3]->str, lines[i]);
    }
    freeReplyObject(r);
    redisFree(c);
    free(text);
}

/* A hash field of the registry ("" when missing). */
static char *hget(redisContext *c, const char *key, const char *field) {
    static char out[4][256];
    static int next;
    char *o = out[next++ & 3];
    redisReply *r = redisCommand(c, "HGET %s %s", key, field);
    snprintf(o, 256, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return o;
}

static long long int_reply(redisContext *c, const char *fmt, const char *arg) {
    redisReply *r = redisCommand(c, fmt, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return v;
}

/* The registry: a run is listed under its folder's name with its state,
 * algo, config, streams and last step, has a heartbeat while it runs and
 * none after; a resume cuts its streams back to the checkpoint's step, a
 * fresh start empties them. */
static void test_redis_registry(void **state) {
    SKIP_WITHOUT_REDIS();
    TuRedis *s = *state;
    const char *dir = run_dir("runs/exp7");
    Metrics *m = NULL;
    if (metrics_open(&m, dir, tu_path("redis://127.0.0.1:%d", s->port), NULL) < 0)
        fail_msg("%s", pl_error());
    MetricsRun run = {.state = "running", .algo = "grpo", .host = "h1", .config = "algo: grpo\n",
                      .pid = 4242, .steps = 9, .started = 1764779000.5};
    metrics_run(m, &run);
    for (int i = 1; i <= 4; i++) log3(m, i, i, 0, 0);
    metrics_sample(m, 2, "1+1=", "2", 1, "2");
    metrics_sample(m, 4, "2+2=", "<script>", 0, NULL);
    assert_int_equal(metrics_redis_errors(m), 0);

    redisContext *c = client(s, 0);
    const char *key = "plumb:run:exp7";
    assert_string_equal(hget(c, key, "name"), "exp7");
    assert_string_equal(hget(c, key, "state"), "running");
    assert_string_equal(hget(c, key, "algo"), "grpo");
    assert_string_equal(hget(c, key, "host"), "h1");
    assert_string_equal(hget(c, key, "pid"), "4242");
    assert_string_equal(hget(c, key, "steps"), "9");
    assert_string_equal(hget(c, key, "step"), "4");
    assert_string_equal(hget(c, key, "config"), "algo: grpo\n");
    assert_string_equal(hget(c, key, "stream"), "plumb:metrics:exp7");
    assert_string_equal(hget(c, key, "samples"), "plumb:metrics:exp7:samples");
    assert_true(atof(hget(c, key, "started")) == 1764779000.5);
    redisReply *r = redisCommand(c, "ZSCORE plumb:runs exp7");
    assert_true(r && r->type == REDIS_REPLY_STRING && atof(r->str) == 1764779000.5);
    freeReplyObject(r);
    long long ttl = int_reply(c, "PTTL %s", "plumb:run:exp7:alive");
    assert_true(ttl > 20000 && ttl <= 30000);

    /* a resume from step 2: the streams keep steps 1..2 */
    metrics_restart(m, 2);
    assert_int_equal(metrics_redis_errors(m), 0);
    assert_int_equal(int_reply(c, "XLEN %s", "plumb:metrics:exp7"), 2);
    assert_int_equal(int_reply(c, "XLEN %s", "plumb:metrics:exp7:samples"), 1);
    assert_string_equal(hget(c, key, "step"), "2");
    log3(m, 3, 30, 0, 0);
    r = redisCommand(c, "XRANGE plumb:metrics:exp7 - +");
    assert_int_equal(r->elements, 3);
    assert_string_equal(r->element[2]->element[1]->element[1]->str, "3");
    freeReplyObject(r);

    run.state = "failed", run.error = "actor died";
    metrics_run(m, &run);
    assert_string_equal(hget(c, key, "state"), "failed");
    assert_string_equal(hget(c, key, "error"), "actor died");
    assert_int_equal(int_reply(c, "EXISTS %s", "plumb:run:exp7:alive"), 0);
    metrics_restart(m, -1); /* a fresh start */
    assert_int_equal(int_reply(c, "EXISTS %s", "plumb:metrics:exp7"), 0);
    assert_int_equal(int_reply(c, "EXISTS %s", "plumb:metrics:exp7:samples"), 0);
    assert_string_equal(hget(c, key, "step"), "");
    assert_int_equal(metrics_redis_errors(m), 0);
    metrics_close(&m);
    redisFree(c);
}

/* A password and a db in the URL are used; an empty stream name becomes
 * plumb:metrics:<run dir name>; messages never show the password. */
static void test_redis_auth_default_stream(void **state) {
    SKIP_WITHOUT_REDIS();
    TuRedis *s = *state;
    const char *dir = run_dir("exp42/");
    Metrics *m = NULL;
    if (metrics_open(&m, dir, tu_path("redis://:s3cret@127.0.0.1:%d/3", s->port), "") < 0)
        fail_msg("%s", pl_error());
    log3(m, 1, 1, 2, 3);
    assert_int_equal(metrics_redis_errors(m), 0);
    metrics_close(&m);
    redisContext *c = client(s, 3);
    redisReply *r = redisCommand(c, "XLEN plumb:metrics:exp42");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    redisFree(c);

    /* a wrong password fails quietly and is redacted in the message */
    assert_int_equal(metrics_open(&m, dir, tu_path("redis://:wrongpw@127.0.0.1:%d", s->port), "x"),
                     0);
    log3(m, 2, 1, 2, 3);
    assert_int_equal(metrics_redis_errors(m), 1);
    const char *e = metrics_redis_last_error(m);
    assert_non_null(strstr(e, "AUTH"));
    assert_null(strstr(e, "wrongpw"));
    metrics_close(&m);
}

/* Killing the server mid-run: metrics_log keeps succeeding and the file
 * keeps growing; the missed lines are counted; once the server is back the
 * sink reconnects and the stream gets new lines again. */
static void test_redis_killed(void **state) {
    SKIP_WITHOUT_REDIS();
    TuRedis *s = *state;
    const char *dir = run_dir("killed");
    Metrics *m = NULL;
    assert_int_equal(metrics_open(&m, dir, tu_path("redis://127.0.0.1:%d", s->port), "k"), 0);
    log3(m, 1, 1, 1, 1);
    assert_int_equal(metrics_redis_errors(m), 0);

    tu_redis_stop(s, SIGKILL);
    for (int i = 2; i <= 5; i++) log3(m, i, i, i, i); /* fails in log3 on error */
    assert_int_equal(metrics_redis_errors(m), 4);
    assert_true(strlen(metrics_redis_last_error(m)) > 0);
    char *text = read_metrics(dir), *lines[8];
    assert_int_equal(split_lines(text, lines, 8), 5);
    free(text);

    /* back on the same port; retry at once instead of after 10 s */
    assert_int_equal(tu_redis_start(s), 0);
    metrics_set_retry_s(m, 0);
    log3(m, 6, 6, 6, 6);
    assert_int_equal(metrics_redis_errors(m), 4);
    metrics_close(&m);
    redisContext *c = client(s, 0);
    redisReply *r = redisCommand(c, "XRANGE k - +");
    assert_int_equal(r->elements, 1); /* the fresh server saw only step 6 */
    assert_string_equal(r->element[0]->element[1]->element[1]->str, "6");
    freeReplyObject(r);
    redisFree(c);
}

/* No server at all: open succeeds, lines go to the file, each is counted. */
static void test_redis_unreachable(void **state) {
    SKIP_WITHOUT_REDIS();
    const char *dir = run_dir("unreachable");
    Metrics *m = NULL;
    int port = tu_free_port();
    assert_int_equal(metrics_open(&m, dir, tu_path("redis://127.0.0.1:%d", port), "u"), 0);
    for (int i = 1; i <= 3; i++) log3(m, i, i, i, i);
    assert_int_equal(metrics_redis_errors(m), 3);
    assert_non_null(strstr(metrics_redis_last_error(m), "connect"));
    metrics_close(&m);
    char *text = read_metrics(dir), *lines[8];
    assert_int_equal(split_lines(text, lines, 8), 3);
    free(text);
}

int main(void) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    g_have_redis = system("command -v redis-server >/dev/null 2>&1") == 0;
    if (!g_have_redis) fprintf(stderr, "test_metrics: redis-server not installed, skipping its tests\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_lines),
        cmocka_unit_test(test_nonfinite_is_null),
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_truncate_resume),
        cmocka_unit_test(test_open_ends_torn_line),
        cmocka_unit_test(test_progress),
        cmocka_unit_test_setup_teardown(test_redis_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_auth_default_stream, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_redis_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_unreachable, NULL, NULL),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
