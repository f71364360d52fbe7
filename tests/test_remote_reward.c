/* test_remote_reward: reward.type http and exec (reward/remote.h) against a
 * real HTTP server (libmicrohttpd, in this process, on a free port) and
 * real programs (tests/data/reward/scorer.py under python3): scores in
 * order, batches and concurrency, retries with backoff, timeouts, and the
 * errors for garbage, too few or too many scores, a crash and a program
 * that is not there. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "common/clock.h"
#include "common/err.h"
#include "reward/remote.h"

/* ------------------------------------------------------------ the server */

static struct MHD_Daemon *daemon_;
static int port_;
/* requests per path (a batch aborted in one test may still reach the
 * server during the next, so each test counts its own path's) */
static const char *const PATHS[] = {"/ok", "/bare", "/few", "/garbage", "/string", "/always500",
                                    "/bad400", "/flaky", "/slow", NULL};
enum { P_OK, P_BARE, P_FEW, P_GARBAGE, P_STRING, P_500, P_400, P_FLAKY, P_SLOW, P_N };
static atomic_int hits[P_N + 1], inflight, max_inflight;

static int path_id(const char *url) {
    for (int i = 0; PATHS[i]; i++)
        if (!strcmp(url, PATHS[i])) return i;
    return P_N;
}

typedef struct {
    char *p;
    size_t n;
} Body;

static float want_score(const json_t *it) {
    const char *r = json_string_value(json_object_get(it, "response"));
    const char *a = json_string_value(json_object_get(it, "answer"));
    return (float)strlen(r) + (strcmp(r, a) == 0 ? 0.5f : 0.0f);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* /ok: {"scores": [...]}, 30 ms late (so that batches overlap); /bare: an
 * array; /few: one short; /garbage, /string: not scores; /flaky: 503 for
 * the first two requests; /always500; /bad400; /slow: 1.5 s late. */
static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **con) {
    (void)cls, (void)method, (void)version;
    Body *b = *con;
    if (!b) {
        *con = calloc(1, sizeof(Body));
        return MHD_YES;
    }
    if (*size) {
        b->p = realloc(b->p, b->n + *size + 1);
        memcpy(b->p + b->n, data, *size);
        b->n += *size;
        b->p[b->n] = '\0';
        *size = 0;
        return MHD_YES;
    }
    int k = atomic_fetch_add(&hits[path_id(url)], 1);
    int now = atomic_fetch_add(&inflight, 1) + 1;
    for (int m = atomic_load(&max_inflight); now > m && !atomic_compare_exchange_weak(&max_inflight, &m, now);)
        ;
    json_t *items = json_loadb(b->p ? b->p : "", b->n, 0, NULL);
    enum MHD_Result res;
    if (!strcmp(url, "/garbage")) res = reply(c, 200, "<html>oops</html>");
    else if (!strcmp(url, "/string")) res = reply(c, 200, "[\"1\"]");
    else if (!strcmp(url, "/always500")) res = reply(c, 500, "boom");
    else if (!strcmp(url, "/bad400")) res = reply(c, 400, "no");
    else if (!strcmp(url, "/flaky") && k < 2) res = reply(c, 503, "busy");
    else if (!json_is_array(items)) res = reply(c, 400, "not an array");
    else {
        if (!strcmp(url, "/ok")) usleep(30000);
        if (!strcmp(url, "/slow")) usleep(1500000);
        json_t *sc = json_array();
        size_t n = json_array_size(items) - !strcmp(url, "/few");
        for (size_t i = 0; i < n; i++)
            json_array_append_new(sc, json_real(want_score(json_array_get(items, i))));
        json_t *out = strcmp(url, "/bare") ? json_pack("{s:o}", "scores", sc) : sc;
        char *text = json_dumps(out, JSON_COMPACT);
        res = reply(c, 200, text);
        free(text);
        json_decref(out);
    }
    json_decref(items);
    atomic_fetch_sub(&inflight, 1);
    return res;
}

static void done(void *cls, struct MHD_Connection *c, void **con, enum MHD_RequestTerminationCode t) {
    (void)cls, (void)c, (void)t;
    Body *b = *con;
    if (b) free(b->p), free(b);
    *con = NULL;
}

static int setup(void **state) {
    (void)state;
    daemon_ = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
                               0, NULL, NULL, handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, done,
                               NULL, MHD_OPTION_END);
    if (!daemon_) return -1;
    port_ = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT)->port;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    MHD_stop_daemon(daemon_);
    return 0;
}

/* ---------------------------------------------------------------- items */

enum { MAXI = 2100 };
static RewardItem items[MAXI];
static char texts[MAXI][3][1100];

/* n items: prompt "p<i>=", response of 1 + i % 5 characters (the long ones
 * 1000), answer equal to the response on every third. */
static void make_items(int n, int long_ones) {
    for (int i = 0; i < n; i++) {
        snprintf(texts[i][0], sizeof texts[i][0], "p%d=", i);
        int len = long_ones ? 1000 : 1 + i % 5;
        memset(texts[i][1], '0' + i % 10, (size_t)len);
        texts[i][1][len] = '\0';
        strcpy(texts[i][2], i % 3 == 0 ? texts[i][1] : "x");
        items[i] = (RewardItem){texts[i][0], texts[i][1], texts[i][2]};
    }
}

static RemoteOpts http_opts(const char *path, char *url, size_t cap) {
    snprintf(url, cap, "http://127.0.0.1:%d%s", port_, path);
    return (RemoteOpts){.url = url, .timeout_s = 5, .retries = 0, .backoff_ms = 10,
                        .concurrency = 4, .batch_size = 64};
}

/* Opens a scorer, scores n items into out, closes it; the score's rc. */
static int score_with(const RemoteOps *ops, const RemoteOpts *o, int n, float *out) {
    void *st;
    assert_int_equal(ops->open(o, &st), 0);
    pl_clear_error();
    int rc = ops->score(st, items, n, out);
    ops->close(st);
    return rc;
}

static void expect_err(int rc, int code, ...) {
    if (rc >= 0) fail_msg("expected an error, got %d", rc);
    if (code) assert_int_equal(rc, code);
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(pl_error(), s)) fail_msg("message \"%s\" lacks \"%s\"", pl_error(), s);
    va_end(ap);
}

/* ----------------------------------------------------------------- http */

/* 150 items in batches of 16 with 3 in flight: every score in its place,
 * 10 POSTs, at most 3 (and more than 1) at once. */
static void test_http_batches(void **state) {
    (void)state;
    assert_ptr_equal(remote_find("http"), &remote_http);
    assert_ptr_equal(remote_find("exec"), &remote_exec);
    assert_null(remote_find("model"));
    make_items(150, 0);
    char url[128];
    RemoteOpts o = http_opts("/ok", url, sizeof url);
    o.batch_size = 16, o.concurrency = 3;
    atomic_store(&hits[P_OK], 0), atomic_store(&max_inflight, 0);
    float out[150];
    assert_int_equal(score_with(&remote_http, &o, 150, out), 0);
    for (int i = 0; i < 150; i++) {
        float w = (float)(1 + i % 5) + (i % 3 == 0 ? 0.5f : 0.0f);
        if (out[i] != w) fail_msg("item %d: %g, want %g", i, out[i], w);
    }
    assert_int_equal(atomic_load(&hits[P_OK]), 10);
    int m = atomic_load(&max_inflight);
    if (m < 2 || m > 3) fail_msg("%d POSTs at once (concurrency 3)", m);

    o = http_opts("/bare", url, sizeof url);
    assert_int_equal(score_with(&remote_http, &o, 7, out), 0);
    assert_true(out[6] == 2.5f && out[7] == 3.0f);
    assert_int_equal(score_with(&remote_http, &o, 0, out), 0);
}

/* Answers that are not n scores fail at once (no retry), naming the URL,
 * the batch and what was wrong. */
static void test_http_bad_answers(void **state) {
    (void)state;
    make_items(100, 0);
    char url[128];
    float out[100];
    RemoteOpts o = http_opts("/few", url, sizeof url);
    o.retries = 3, o.batch_size = 40;
    atomic_store(&hits[P_FEW], 0);
    expect_err(score_with(&remote_http, &o, 80, out), PL_EPROTO, url, "(items ", "39 scores for 40 items", NULL);
    assert_true(atomic_load(&hits[P_FEW]) <= 2); /* batches, not retries */
    o = http_opts("/garbage", url, sizeof url);
    o.retries = 3;
    atomic_store(&hits[P_GARBAGE], 0);
    expect_err(score_with(&remote_http, &o, 5, out), PL_EPROTO, url,
               "batch 1 of 1 (items 0..4)", "not JSON", "<html>oops</html>", NULL);
    assert_int_equal(atomic_load(&hits[P_GARBAGE]), 1);
    o = http_opts("/string", url, sizeof url);
    expect_err(score_with(&remote_http, &o, 1, out), PL_EPROTO, "score 0 is a string, not a number", NULL);
    o = http_opts("/bad400", url, sizeof url);
    o.retries = 3;
    atomic_store(&hits[P_400], 0);
    expect_err(score_with(&remote_http, &o, 1, out), PL_EPEER, "HTTP 400: 'no'", "after 1 attempt", NULL);
    assert_int_equal(atomic_load(&hits[P_400]), 1);

    /* not a URL */
    void *st;
    o.url = "ftp://x";
    assert_int_equal(remote_http.open(&o, &st), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "ftp://x"));
}

/* 503, 500, timeouts and a refused connection are tried again after a
 * growing wait; a server that recovers gives the scores. */
static void test_http_retries(void **state) {
    (void)state;
    make_items(3, 0);
    char url[128];
    float out[3];
    RemoteOpts o = http_opts("/flaky", url, sizeof url);
    o.retries = 3, o.backoff_ms = 50;
    atomic_store(&hits[P_FLAKY], 0);
    double t0 = pl_now_s();
    assert_int_equal(score_with(&remote_http, &o, 3, out), 0);
    assert_true(pl_now_s() - t0 >= 0.15 - 0.02); /* 50 + 100 ms */
    assert_int_equal(atomic_load(&hits[P_FLAKY]), 3);
    assert_true(out[0] == 1.5f);

    o = http_opts("/always500", url, sizeof url);
    o.retries = 2;
    atomic_store(&hits[P_500], 0);
    expect_err(score_with(&remote_http, &o, 3, out), PL_EPEER, "HTTP 500: 'boom'", "after 3 attempts", NULL);
    assert_int_equal(atomic_load(&hits[P_500]), 3);

    o = http_opts("/slow", url, sizeof url);
    o.timeout_s = 0.3, o.retries = 1;
    t0 = pl_now_s();
    expect_err(score_with(&remote_http, &o, 3, out), PL_ETIMEOUT, url, "after 2 attempts", NULL);
    double dt = pl_now_s() - t0;
    if (dt < 0.6 || dt > 2.5) fail_msg("two attempts of 0.3 s took %.2f s", dt);

    int free_port = tu_free_port();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/score", free_port);
    o = (RemoteOpts){.url = url, .timeout_s = 2, .retries = 2, .backoff_ms = 10, .concurrency = 1,
                     .batch_size = 8};
    expect_err(score_with(&remote_http, &o, 3, out), PL_EPEER, url, "after 3 attempts", NULL);
}

/* ----------------------------------------------------------------- exec */

static char cmd[1024];
static RemoteOpts exec_opts(const char *mode, const char *arg) {
    snprintf(cmd, sizeof cmd, "python3 %s/reward/scorer.py exec %s %s", tu_data_dir(), mode,
             arg ? arg : "");
    return (RemoteOpts){.command = cmd, .timeout_s = 10, .concurrency = 1, .batch_size = 64};
}

/* scorer.py's score: 1 for a digit 0-4 in the response. */
static float py_score(int i) { return strpbrk(items[i].response, "01234") ? 1.0f : 0.0f; }

/* Scores in order over several batches and several calls of one program,
 * bare numbers too; prompt and answer reach it as sent (UTF-8 included);
 * 2000 items of 1000 bytes (far over a pipe's buffer) do not block. */
static void test_exec_ok(void **state) {
    (void)state;
    make_items(2000, 0);
    float out[MAXI];
    RemoteOpts o = exec_opts("ok", NULL);
    o.batch_size = 300;
    void *st;
    assert_int_equal(remote_exec.open(&o, &st), 0);
    for (int call = 0; call < 2; call++) {
        assert_int_equal(remote_exec.score(st, items, 2000, out), 0);
        for (int i = 0; i < 2000; i++)
            if (out[i] != py_score(i)) fail_msg("call %d item %d: %g, want %g", call, i, out[i], py_score(i));
    }
    remote_exec.close(st);

    o = exec_opts("bare", NULL);
    assert_int_equal(score_with(&remote_exec, &o, 10, out), 0);
    for (int i = 0; i < 10; i++) assert_true(out[i] == py_score(i));

    items[0].prompt = "\xc3\xa9+1=", items[0].answer = "ab\"c\n";
    o = exec_opts("echo_item", NULL);
    assert_int_equal(score_with(&remote_exec, &o, 1, out), 0);
    assert_true(out[0] == 4.0f + 500.0f); /* 4 characters, 5 characters */

    make_items(2000, 1);
    o = exec_opts("ok", NULL);
    o.batch_size = 2000;
    assert_int_equal(score_with(&remote_exec, &o, 2000, out), 0);
    for (int i = 0; i < 2000; i++) assert_true(out[i] == py_score(i));
}

/* A crash, garbage, extra lines, a timeout and a missing program are
 * errors naming the command; the next batch starts the program again. */
static void test_exec_failures(void **state) {
    (void)state;
    make_items(10, 0);
    float out[10];
    RemoteOpts o = exec_opts("crash_after", "2");
    o.batch_size = 5;
    void *st;
    assert_int_equal(remote_exec.open(&o, &st), 0);
    expect_err(remote_exec.score(st, items, 5, out), PL_EPEER, cmd,
               "exited with status 3 after 2 of 5 scores of the batch (items 0..4)", NULL);
    /* started again: the new one answers its first two */
    assert_int_equal(remote_exec.score(st, items, 2, out), 0);
    assert_true(out[1] == py_score(1));
    remote_exec.close(st);

    o = exec_opts("garbage", NULL);
    expect_err(score_with(&remote_exec, &o, 3, out), PL_EPROTO, cmd,
               "line 1 of its answer (item 0) is not JSON: 'hello'", NULL);
    o = exec_opts("extra", NULL);
    expect_err(score_with(&remote_exec, &o, 1, out), PL_EPROTO, "more lines than the 1 items", NULL);

    o = exec_opts("slow", "3");
    o.timeout_s = 0.5;
    double t0 = pl_now_s();
    expect_err(score_with(&remote_exec, &o, 2, out), PL_ETIMEOUT, "0 of 2 scores after 0.5s", NULL);
    assert_true(pl_now_s() - t0 < 2.0); /* killed, not waited for */

    o = (RemoteOpts){.command = "plumb-no-such-scorer", .timeout_s = 5, .concurrency = 1,
                     .batch_size = 8};
    expect_err(score_with(&remote_exec, &o, 1, out), PL_EPEER, "plumb-no-such-scorer",
               "exited with status 127 after 0 of 1 scores", NULL);
    o.command = "";
    assert_int_equal(remote_exec.open(&o, &st), PL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_batches),  cmocka_unit_test(test_http_bad_answers),
        cmocka_unit_test(test_http_retries),  cmocka_unit_test(test_exec_ok),
        cmocka_unit_test(test_exec_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
