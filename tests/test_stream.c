/* test_stream.c: runs that train from a Redis stream, against a real
 * redis-server and the real plumb binary.
 *
 * - Epochs over a stream give the numbers of the same data from a file.
 * - Following a stream that `plumb ingest` keeps filling, with the
 *   coordinator SIGKILLed three times and resumed: every valid record is
 *   trained exactly once (consumed.jsonl against the stream), the bad ones
 *   are dead letters, nothing is left pending, and the metrics equal an
 *   uninterrupted run's over the same stream.
 * - redis-server SIGKILLed mid-run and restarted from its AOF: the run
 *   waits, reconnects, and loses and repeats nothing.
 * - A stream of another tokenizer is refused, naming both; a record of
 *   another tokenizer inside a stream is a dead letter.
 * Skipped (77) when redis-server is not installed. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "testutil.h"

static const char *dir;  /* scratch folder of this program          */
static char data[512];   /* the arithmetic task (and its tokenizer) */

#define B 4         /* train.batch_size                            */
#define W 8         /* data.shuffle_window                         */
#define N_VALID 200 /* pairs of pairs.jsonl                        */
#define N_BAD 2     /* lines of pairs.jsonl a DPO run cannot use   */

/* ------------------------------------------------------------ helpers */

/* DIR/NAME.yaml: a tiny DPO run (run.dir DIR/NAME) reading stream on the
 * server at port, plus extra lines; the path goes to out. */
static void config(char *out, size_t cap, const char *name, int port, const char *stream,
                   const char *extra) {
    char text[8192];
    snprintf(text, sizeof text,
             "run.dir: %s/%s\nrun.seed: 7\nrun.steps: %d\n"
             "algo.name: dpo\nmodel.path:\nmodel.tokenizer: %s\n"
             "model.init.dim: 32\nmodel.init.hidden: 64\nmodel.init.layers: 1\n"
             "model.init.heads: 2\nmodel.init.kv_heads: 1\nmodel.init.max_seq: 24\n"
             "lora.rank: 4\nlora.alpha: 8\ntrain.batch_size: %d\n"
             "data.train: redis://127.0.0.1:%d/0\ndata.stream: %s\n"
             "data.shuffle_window: %d\ndata.eval_pref: %s/eval_pref.jsonl\n"
             "launch.threads: 1\n%s",
             dir, name, N_VALID / B, data, B, port, stream, W, data, extra);
    snprintf(out, cap, "%s/%s.yaml", dir, name);
    assert_int_equal(tu_write_file(out, text, strlen(text)), 0);
}

/* plumb ingest FILE into stream on port (with tokenizer tok); fails
 * unless it exits 0. */
static void ingest(const char *file, int port, const char *stream, const char *tok) {
    char *out;
    int rc = tu_plumb(&out, "ingest %s --tokenizer %s --to redis://127.0.0.1:%d/0 --stream %s",
                      file, tok, port, stream);
    if (rc != 0) fail_msg("plumb ingest %s: exit %d\n%s", file, rc, out);
    free(out);
}

static redisContext *redis_at(int port) {
    redisContext *c = redisConnect("127.0.0.1", port);
    assert_true(c && !c->err);
    return c;
}

static long long integer(redisContext *c, const char *fmt, const char *a, const char *b) {
    redisReply *r = redisCommand(c, fmt, a, b);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer
                  : r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->type ==
                                                                      REDIS_REPLY_INTEGER
                      ? r->element[0]->integer
                      : -1;
    freeReplyObject(r);
    return v;
}

/* The ids of stream's entries that are not dead letters, sorted as the
 * stream is (ids[n], malloc'ed strings). */
static char **valid_ids(redisContext *c, const char *stream, int *n) {
    redisReply *dead = redisCommand(c, "XRANGE %s:dead - +", stream);
    redisReply *all = redisCommand(c, "XRANGE %s - +", stream);
    assert_true(dead && all && dead->type == REDIS_REPLY_ARRAY && all->type == REDIS_REPLY_ARRAY);
    char **ids = calloc(all->elements + 1, sizeof *ids);
    *n = 0;
    for (size_t i = 0; i < all->elements; i++) {
        const char *id = all->element[i]->element[0]->str;
        int is_dead = 0;
        for (size_t d = 0; d < dead->elements; d++) {
            redisReply *f = dead->element[d]->element[1];
            if (f->elements >= 2 && !strcmp(f->element[0]->str, "entry") &&
                !strcmp(f->element[1]->str, id))
                is_dead = 1;
        }
        if (!is_dead) ids[(*n)++] = strdup(id);
    }
    freeReplyObject(dead);
    freeReplyObject(all);
    return ids;
}

/* RUN/consumed.jsonl must have one line per step 1..steps of B ids, and
 * hold every id of want[0..n) exactly once and nothing else. */
static void assert_exactly_once(const char *run, int steps, char **want, int n) {
    char *t = tu_read_file(tu_path("%s/consumed.jsonl", run), NULL);
    if (!t) fail_msg("%s/consumed.jsonl missing", run);
    int *seen = calloc((size_t)n, sizeof *seen);
    long line = 0, total = 0;
    char *save = NULL;
    for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(l, 0, NULL);
        line++;
        if (json_integer_value(json_object_get(j, "step")) != line)
            fail_msg("%s/consumed.jsonl line %ld is not step %ld: %s", run, line, line, l);
        json_t *ids = json_object_get(j, "ids");
        if (json_array_size(ids) != B) fail_msg("step %ld consumed %zu ids", line, json_array_size(ids));
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v) {
            int k = 0;
            while (k < n && strcmp(want[k], json_string_value(v))) k++;
            if (k == n) fail_msg("step %ld trained %s, not a valid entry", line, json_string_value(v));
            if (seen[k]++) fail_msg("entry %s trained twice (again at step %ld)", want[k], line);
            total++;
        }
        json_decref(j);
    }
    if (line != steps) fail_msg("%s/consumed.jsonl has %ld steps, expected %d", run, line, steps);
    if (total != n) fail_msg("%ld records trained, the stream holds %d valid ones", total, n);
    free(seen);
    free(t);
}

/* The metrics of runs a and b agree at every step (perf/ aside). */
static void assert_same_runs(const char *a, const char *b, int steps) {
    json_t *ma = tu_metrics_load(a), *mb = tu_metrics_load(b);
    tu_assert_steps(ma, 0, steps, a);
    tu_assert_steps(mb, 0, steps, b);
    for (long s = 0; s <= steps; s++) tu_assert_same_step(ma, mb, s, "same stream, same numbers");
    json_decref(ma);
    json_decref(mb);
}

static void free_ids(char **ids, int n) {
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

/* --------------------------------------------------------------- fixtures */

/* The task's tokenizer and eval pairs, and pairs.jsonl: N_VALID distinct
 * pairs, with N_BAD SFT examples among them (a DPO run's dead letters),
 * cut into chunk0.jsonl..chunk9.jsonl for a feed that keeps coming. */
static int group_setup(void **state) {
    (void)state;
    if (system("command -v redis-server > /dev/null") != 0) return 0;
    dir = tu_tmp_dir();
    snprintf(data, sizeof data, "%s/arith", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s data arith --out %s --n-train 40 --n-eval 16 --max-operand 20 "
             "--seed 3 > /dev/null", tu_plumb_bin(), data);
    if (system(cmd) != 0) return -1;
    FILE *all = fopen(tu_path("%s/pairs.jsonl", dir), "w");
    FILE *chunk = NULL;
    for (int i = 0; i < N_VALID + N_BAD; i++) {
        if (i % ((N_VALID + N_BAD) / 10 + 1) == 0) {
            if (chunk) fclose(chunk);
            chunk = fopen(tu_path("%s/chunk%d.jsonl", dir, i / ((N_VALID + N_BAD) / 10 + 1)), "w");
        }
        char line[128];
        int a = i / 10, b = i % 10;
        if (i == 37 || i == 151)
            snprintf(line, sizeof line, "{\"prompt\": \"%d*%d=\", \"completion\": \"%d\"}\n", a, b,
                     a * b);
        else
            snprintf(line, sizeof line, "{\"prompt\": \"%d+%d=\", \"chosen\": \"%d\", "
                     "\"rejected\": \"%d\"}\n", a, b, a + b, a + b + 1);
        fputs(line, all), fputs(line, chunk);
    }
    fclose(chunk);
    fclose(all);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int setup(void **state) {
    if (system("command -v redis-server > /dev/null") != 0) skip();
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    return s && tu_redis_start(s) == 0 ? 0 : -1;
}

static int setup_persist(void **state) {
    if (system("command -v redis-server > /dev/null") != 0) skip();
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    s->persist = 1;
    return s && tu_redis_start(s) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    TuRedis *s = *state;
    if (s) tu_redis_stop(s, SIGTERM);
    free(s);
    return 0;
}

/* ------------------------------------------------------------------ tests */

/* Epochs over a stream (data.follow false) are epochs over a file: the
 * stream holds pref.jsonl in its order, so every metric is the file run's,
 * and consumed.jsonl names each step's entries. */
static void test_epochs_like_file(void **state) {
    TuRedis *s = *state;
    ingest(tu_path("%s/pref.jsonl", data), s->port, "pref", data);
    char cfg[1024], *out;
    config(cfg, sizeof cfg, "epochs", s->port, "pref", "");
    int rc = tu_plumb(&out, "train %s --quiet run.steps=12 data.shuffle_window=0", cfg);
    if (rc != 0) fail_msg("stream run: exit %d\n%s", rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.steps=12 run.dir=%s/file data.train=%s/pref.jsonl "
                  "data.stream=", cfg, dir, data);
    if (rc != 0) fail_msg("file run: exit %d\n%s", rc, out);
    free(out);
    json_t *ms = tu_metrics_load(tu_path("%s/epochs", dir));
    json_t *mf = tu_metrics_load(tu_path("%s/file", dir));
    for (long st = 1; st <= 12; st++) { /* the stream run's own key, then the rest */
        json_t *l = tu_metrics_step(ms, st);
        assert_true(json_is_number(json_object_get(l, "data/dead")) &&
                    json_number_value(json_object_get(l, "data/dead")) == 0);
        json_object_del(l, "data/dead");
    }
    for (long st = 0; st <= 12; st++) tu_assert_same_step(ms, mf, st, "stream vs file");
    json_decref(ms);
    json_decref(mf);
    /* 40 pairs, 12 steps of 4: the second epoch's ids are the first's */
    assert_int_equal(tu_count_lines(tu_path("%s/epochs/consumed.jsonl", dir)), 12);
}

/* Every algorithm reads its kind of record from a stream: SFT examples,
 * preference pairs, prompts with answers. Epochs over each stream give
 * the file run's numbers. */
static void test_every_algorithm(void **state) {
    TuRedis *s = *state;
    static const struct {
        const char *algo, *file, *extra;
    } runs[] = {
        {"sft", "sft", ""},
        {"rm", "pref", ""},
        {"orpo", "pref", ""},
        {"simpo", "pref", ""},
        {"kto", "pref", ""},
        {"grpo", "prompts", "algo.group_size=2 rollout.max_new_tokens=4"},
        {"ppo", "prompts", "algo.group_size=2 rollout.max_new_tokens=4"},
    };
    const char *files[] = {"sft", "pref", "prompts"};
    for (int i = 0; i < 3; i++)
        ingest(tu_path("%s/%s.jsonl", data, files[i]), s->port, files[i], data);
    char cfg[1024];
    config(cfg, sizeof cfg, "every", s->port, "x", "");
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char *out;
        char common[1024];
        snprintf(common, sizeof common, "--quiet run.steps=3 data.shuffle_window=0 "
                 "data.eval=%s/eval.jsonl eval.n=4", data);
        int rc = tu_plumb(&out, "train %s %s algo.name=%s %s run.dir=%s/every-%s-stream "
                          "data.stream=%s", cfg, common, runs[i].algo, runs[i].extra, dir,
                          runs[i].algo, runs[i].file);
        if (rc != 0) fail_msg("%s from a stream: exit %d\n%s", runs[i].algo, rc, out);
        free(out);
        rc = tu_plumb(&out, "train %s %s algo.name=%s %s run.dir=%s/every-%s-file data.stream= "
                      "data.train=%s/%s.jsonl", cfg, common, runs[i].algo, runs[i].extra, dir,
                      runs[i].algo, data, runs[i].file);
        if (rc != 0) fail_msg("%s from a file: exit %d\n%s", runs[i].algo, rc, out);
        free(out);
        json_t *ms = tu_metrics_load(tu_path("%s/every-%s-stream", dir, runs[i].algo));
        json_t *mf = tu_metrics_load(tu_path("%s/every-%s-file", dir, runs[i].algo));
        for (long st = 1; st <= 3; st++) {
            json_t *l = tu_metrics_step(ms, st);
            assert_true(json_number_value(json_object_get(l, "data/dead")) == 0);
            json_object_del(l, "data/dead");
        }
        for (long st = 0; st <= 3; st++) tu_assert_same_step(ms, mf, st, runs[i].algo);
        json_decref(ms);
        json_decref(mf);
    }
}

/* A shell loop that ingests chunk0..chunk9 into stream, one every 0.25 s. */
static pid_t feed(int port, const char *stream) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "for i in 0 1 2 3 4 5 6 7 8 9; do %s ingest %s/chunk$i.jsonl --tokenizer %s "
             "--to redis://127.0.0.1:%d/0 --stream %s > /dev/null || exit 1; sleep 0.25; done",
             tu_plumb_bin(), dir, data, port, stream);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(tu_path("%s/feed.log", dir), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2), close(fd);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

/* Starts (or resumes) the follow run of cfg in the background. */
static pid_t follow_run(const char *cfg, const char *run, int resume, int n) {
    return tu_spawn(tu_path("%s/follow-%d.log", dir, n), "train %s checkpoint.every=3 "
                    "data.follow=true%s%s", cfg, resume ? " --resume " : "", resume ? run : "");
}

/* Ingestion keeps adding pairs while a DPO run follows the stream; the run
 * (coordinator and the workers it started) is SIGKILLed three times at
 * random steps after a checkpoint, and resumed. */
static void test_follow_killed(void **state) {
    TuRedis *s = *state;
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    char cfg[1024];
    config(cfg, sizeof cfg, "follow", s->port, "live", "");
    const char *run = strdup(tu_path("%s/follow", dir));
    const int steps = N_VALID / B;
    pid_t feeder = feed(s->port, "live");
    pid_t p = follow_run(cfg, run, 0, 0);
    long done_lines = 1;
    for (int kill_no = 1; kill_no <= 3; kill_no++) {
        /* a checkpoint first (resume needs one), then a random number of steps */
        long at = done_lines + 1 + rand() % 6;
        if (at > steps - 2) at = steps - 2;
        int ok = tu_wait_lines(tu_path("%s/metrics.jsonl", run), at, 60);
        for (int t = 0; ok && t < 600; t++) {
            struct stat st;
            if (stat(tu_path("%s/checkpoints", run), &st) == 0 &&
                system(tu_path("ls %s/checkpoints | grep -q '^step-'", run)) == 0)
                break;
            tu_sleep_ms(10);
        }
        if (!ok) {
            tu_stop(p), tu_stop(feeder);
            fail_msg("(seed %u) kill %d: the run did not reach step %ld:\n%s", seed, kill_no,
                     at - 1, tu_read_file(tu_path("%s/follow-%d.log", dir, kill_no - 1), NULL));
        }
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
        tu_sleep_ms(300); /* its workers notice (SIGTERM on the parent's death) */
        done_lines = tu_count_lines(tu_path("%s/metrics.jsonl", run));
        p = follow_run(cfg, run, 1, kill_no);
    }
    int st = 0;
    int ended = tu_wait_exit(p, 120, &st);
    int fed = 0;
    tu_wait_exit(feeder, 30, &fed);
    if (!ended || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        tu_stop(p);
        fail_msg("(seed %u) the last resumed run: %s\n%s", seed, ended ? "failed" : "hangs",
                 tu_read_file(tu_path("%s/follow-3.log", dir), NULL));
    }
    assert_true(WIFEXITED(fed) && WEXITSTATUS(fed) == 0);

    redisContext *c = redis_at(s->port);
    int n;
    char **ids = valid_ids(c, "live", &n);
    assert_int_equal(n, N_VALID);
    assert_int_equal(integer(c, "XLEN %s%s", "live", ":dead"), N_BAD); /* once each */
    assert_exactly_once(run, steps, ids, n);
    assert_int_equal(integer(c, "XPENDING %s %s", "live", "follow"), 0);

    /* an uninterrupted run over the same stream, through its own group */
    char *out;
    int rc = tu_plumb(&out, "train %s --quiet data.follow=true run.dir=%s/follow-ref "
                      "checkpoint.every=3", cfg, dir);
    if (rc != 0) fail_msg("the uninterrupted run: exit %d\n%s", rc, out);
    free(out);
    assert_exactly_once(tu_path("%s/follow-ref", dir), steps, ids, n);
    assert_same_runs(tu_path("%s/follow-ref", dir), run, steps);
    free_ids(ids, n);
    redisFree(c);
    free((void *)run);
}

/* redis-server is SIGKILLed while a run follows its stream, and started
 * again on its AOF: the run waits it out, says so, and trains every record
 * once. */
static void test_redis_killed(void **state) {
    TuRedis *s = *state;
    ingest(tu_path("%s/pairs.jsonl", dir), s->port, "aof", data);
    char cfg[1024];
    config(cfg, sizeof cfg, "aof", s->port, "aof", "");
    const char *run = strdup(tu_path("%s/aof", dir));
    pid_t p = tu_spawn(tu_path("%s/aof.log", dir), "train %s checkpoint.every=5 data.follow=true",
                       cfg);
    if (!tu_wait_lines(tu_path("%s/metrics.jsonl", run), 8, 60)) {
        tu_stop(p);
        fail_msg("no steps:\n%s", tu_read_file(tu_path("%s/aof.log", dir), NULL));
    }
    tu_redis_stop(s, SIGKILL);
    tu_sleep_ms(1500);
    assert_int_equal(tu_redis_start(s), 0);
    int st = 0;
    int ended = tu_wait_exit(p, 120, &st);
    char *log = tu_read_file(tu_path("%s/aof.log", dir), NULL);
    if (!ended || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        tu_stop(p);
        fail_msg("the run %s after Redis came back:\n%s", ended ? "failed" : "hangs", log);
    }
    if (!strstr(log, "Redis lost") || !strstr(log, "Redis back"))
        fail_msg("the run does not say that Redis went away and came back:\n%s", log);
    free(log);
    json_t *m = tu_metrics_load(run);
    json_t *last = tu_metrics_step(m, N_VALID / B);
    assert_true(json_number_value(json_object_get(last, "perf/redis_reconnects")) >= 1);
    json_decref(m);
    redisContext *c = redis_at(s->port);
    int n;
    char **ids = valid_ids(c, "aof", &n);
    assert_int_equal(n, N_VALID);
    assert_exactly_once(run, N_VALID / B, ids, n);
    assert_int_equal(integer(c, "XPENDING %s %s", "aof", "aof"), 0);
    free_ids(ids, n);
    redisFree(c);
    free((void *)run);
}

/* The tokenizer a stream was made with must be the run's: a stream of
 * another is refused naming both, ingesting with another into it is
 * refused, and records of another inside it are dead letters. */
static void test_tokenizer(void **state) {
    TuRedis *s = *state;
    /* the same vocabulary, another tokenizer_config.json: another tokenizer */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf %s/tok2 && mkdir %s/tok2 && cp %s/tokenizer.json %s/tok2/ && "
             "sed 's/{/{\"model_max_length\": 64, /' %s/tokenizer_config.json > "
             "%s/tok2/tokenizer_config.json", dir, dir, data, dir, data, dir);
    assert_int_equal(system(cmd), 0);
    const char *tok2 = strdup(tu_path("%s/tok2", dir));
    ingest(tu_path("%s/pref.jsonl", data), s->port, "tok", data);
    char *out;
    int rc = tu_plumb(&out, "ingest %s/pref.jsonl --tokenizer %s --to redis://127.0.0.1:%d/0 "
                      "--stream tok", data, tok2, s->port);
    if (rc == 0 || !strstr(out, "holds records of tokenizer") || !strstr(out, tok2))
        fail_msg("ingesting with another tokenizer: exit %d\n%s", rc, out);
    free(out);
    char cfg[1024];
    config(cfg, sizeof cfg, "tok", s->port, "tok", "");
    rc = tu_plumb(&out, "train %s --quiet run.steps=2 model.tokenizer=%s", cfg, tok2);
    if (rc == 0 || !strstr(out, "data.stream tok was ingested with tokenizer") ||
        !strstr(out, tok2) || !strstr(out, data))
        fail_msg("a run with another tokenizer: exit %d\n%s", rc, out);
    free(out);

    /* records of tok2 slipped in (the stream's tie to its tokenizer removed) */
    redisContext *c = redis_at(s->port);
    freeReplyObject(redisCommand(c, "DEL tok:tokenizer"));
    ingest(tu_path("%s/chunk0.jsonl", dir), s->port, "tok", tok2);
    freeReplyObject(redisCommand(c, "DEL tok:tokenizer"));
    long long extra = integer(c, "XLEN %s%s", "tok", "");
    rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
    if (rc != 0) fail_msg("a run over a stream with foreign records: exit %d\n%s", rc, out);
    free(out);
    json_t *m = tu_metrics_load(tu_path("%s/tok", dir));
    assert_int_equal((long long)json_number_value(json_object_get(tu_metrics_step(m, 1),
                                                                  "data/dead")),
                     extra - 40);
    json_decref(m);
    redisReply *r = redisCommand(c, "XRANGE tok:dead - + COUNT 1");
    assert_true(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    redisReply *f = r->element[0]->element[1];
    assert_string_equal(f->element[0]->str, "entry");
    assert_non_null(strstr(f->element[3]->str, "tokenizer: made by tokenizer"));
    freeReplyObject(r);
    redisFree(c);
    free((void *)tok2);
}

/* Config keys that do not go together are refused, naming them. */
static void test_config_errors(void **state) {
    TuRedis *s = *state;
    char cfg[1024], *out;
    config(cfg, sizeof cfg, "bad", s->port, "x", "");
    struct {
        const char *args, *says;
    } cases[] = {
        {"data.stream=", "data.stream names the stream"},
        {"data.train=/nonexistent.jsonl", "data.stream and data.follow need data.train redis://"},
        {"data.follow=true data.shuffle_window=6", "multiple of train.batch_size"},
        {"data.train=redis://127.0.0.1:1/0", "data.train"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = tu_plumb(&out, "train %s --quiet %s", cfg, cases[i].args);
        if (rc == 0 || !strstr(out, cases[i].says))
            fail_msg("%s: exit %d, expected a message with \"%s\":\n%s", cases[i].args, rc,
                     cases[i].says, out);
        free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_epochs_like_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_algorithm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_killed, setup_persist, teardown),
        cmocka_unit_test_setup_teardown(test_tokenizer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
