/* test_recovery.c: runs that lose a process, with real processes on
 * loopback (runutil.h): a dead worker is named within seconds and never
 * hangs the run; it is replaced, its role's state coming from nowhere (an
 * untrained role), the copy launch.keep_state keeps, a surviving
 * data-parallel replica, or the newest checkpoint and a replay; a killed
 * coordinator is started again; a crash inside a checkpoint's write; and
 * chaos, many failures in one run. Each recovered run ends with the
 * metrics of the same run uninterrupted. */
#define _GNU_SOURCE
#include <jansson.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fs.h"
#include "runutil.h"
#include "testutil.h"

/* ------------------------------------------------------ a dying worker */

/* A config NAME for algo and its coordinator on a free port (*port),
 * run.steps 100000, no copy of trained state (a dead trainer sends the run
 * back to its last checkpoint),
 * waiting for min_workers workers, logging to *clog (malloc'ed); fails
 * unless it listens in 20 s. */
static pid_t coordinator_for(const char *algo, const char *name, int min_workers, int *port,
                             char **clog) {
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, algo);
    ru_config(cfg, sizeof cfg, name, body);
    *port = tu_free_port();
    assert_true(*port > 0);
    *clog = strdup(tu_path("%s/%s-coordinator.log", ru_dir, name));
    pid_t co = tu_spawn(*clog, "coordinator %s run.steps=100000 launch.keep_state=false "
                        "transport.endpoint=tcp://127.0.0.1:%d "
                            "transport.min_workers=%d", cfg, *port, min_workers);
    if (!tu_wait_text(*clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(*clog, NULL));
    }
    return co;
}

/* A worker with roles for run NAME's model on port, logging to
 * NAME-LOG.log. */
static pid_t role_worker(const char *roles, const char *name, const char *log, int port) {
    return tu_spawn(tu_path("%s/%s-%s.log", ru_dir, name, log),
                 "worker --role %s --connect tcp://127.0.0.1:%d --model %s/%s/init "
                 "--tokenizer %s --threads 1", roles, port, ru_dir, name, ru_data);
}

/* plumb coordinator and one plumb worker, SFT with no copy of the actor's
 * state (launch.keep_state false): once steps are logged the worker is
 * SIGKILLed. The coordinator must notice it by heartbeats (dead after
 * 3 s), name the worker, its role and its pid within 8 s, say that it goes
 * back to the start of the run (no checkpoint yet), and wait; a new
 * `plumb worker` for the role takes the dead one's place, and the run goes
 * on past the step it had reached. */
static void test_coordinator_worker_killed(void **state) {
    (void)state;
    int port;
    char *clog;
    pid_t co = coordinator_for("sft", "killed", 0, &port, &clog);
    const char *metrics = strdup(tu_path("%s/killed/metrics.jsonl", ru_dir));
    pid_t wk = role_worker("actor", "killed", "worker", port);
    if (!tu_wait_lines(metrics, 3, 30)) {
        tu_stop(wk), tu_stop(co);
        fail_msg("no steps logged:\n%s", tu_read_file(clog, NULL));
    }
    kill(wk, SIGKILL);
    waitpid(wk, NULL, 0);
    long reached = tu_count_lines(metrics);
    double t0 = tu_now_s();
    int said = tu_wait_text(clog, "going back to the start of the run", 8);
    double dt = tu_now_s() - t0;
    char *log = tu_read_file(clog, NULL), pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)wk);
    if (!said || !strstr(log, "actor") || !strstr(log, pid) || !strstr(log, "died"))
        fail_msg("in %.1f s the coordinator did not name the dead actor worker (%s) and go back "
                 "to the start:\n%s", dt, pid, log);
    free(log);
    if (!tu_process_alive(co)) fail_msg("the coordinator stopped:\n%s", tu_read_file(clog, NULL));
    pid_t w2 = role_worker("actor", "killed", "worker2", port);
    int ok = tu_wait_lines(metrics, reached + 2, 60);
    int alive = tu_process_alive(co);
    tu_stop(w2), tu_stop(co);
    if (!ok || !alive)
        fail_msg("the run did not go on with the new worker past line %ld:\n%s", reached,
                 tu_read_file(clog, NULL));
    free(clog), free((void *)metrics);
}

/* SFT on two actor replicas (data parallel, so every step's replicas wait
 * on each other's sums) under plumb coordinator: SIGKILL one mid-run. The
 * coordinator waits for a new worker of the role; a new `plumb worker`
 * takes the dead one's rank with the survivor's state, and the run goes
 * on with two replicas. */
static void test_dp_replica_killed(void **state) {
    (void)state;
    int port;
    char *clog;
    pid_t co = coordinator_for("sft", "dpkill", 2, &port, &clog);
    const char *metrics = strdup(tu_path("%s/dpkill/metrics.jsonl", ru_dir));
    pid_t w1 = role_worker("actor", "dpkill", "1", port);
    if (!tu_wait_text(clog, "(actor, pid", 20)) {
        tu_stop(w1), tu_stop(co);
        fail_msg("the first replica did not register:\n%s", tu_read_file(clog, NULL));
    }
    tu_sleep_ms(500); /* the run waits for the second (transport.min_workers=2) */
    if (tu_count_lines(metrics) > 0) {
        tu_stop(w1), tu_stop(co);
        fail_msg("the run started before its second worker registered");
    }
    pid_t w2 = role_worker("actor", "dpkill", "2", port);
    if (!tu_wait_lines(metrics, 3, 30) || !tu_wait_text(metrics, "\"train/replicas\": 2", 5)) {
        tu_stop(w1), tu_stop(w2), tu_stop(co);
        fail_msg("no data-parallel step logged:\n%s", tu_read_file(clog, NULL));
    }
    kill(w2, SIGKILL);
    waitpid(w2, NULL, 0);
    if (!tu_wait_text(clog, "waiting up to", 10)) {
        tu_stop(w1), tu_stop(co);
        fail_msg("the coordinator does not wait for a new replica:\n%s", tu_read_file(clog, NULL));
    }
    long n = tu_count_lines(metrics);
    pid_t w3 = role_worker("actor", "dpkill", "3", port);
    int ok = tu_wait_text(clog, "with the state of rank 0", 20) && tu_wait_lines(metrics, n + 3, 30);
    char *log = tu_read_file(clog, NULL), *m = tu_read_file(metrics, NULL);
    int alive = waitpid(co, NULL, WNOHANG) == 0;
    tu_stop(w1), tu_stop(w3), tu_stop(co);
    if (!ok || !alive) fail_msg("the run did not go on with the new replica:\n%s", log);
    const char *last = strrchr(m, '{');
    if (!last || !strstr(last, "\"train/replicas\": 2"))
        fail_msg("the last step is not data parallel over two replicas:\n%s", m);
    free(log), free(m), free(clog), free((void *)metrics);
}

/* GRPO with one actor; a second actor registers mid-run. It holds neither
 * the updates nor the optimizer state, so it must not join the training
 * (no step logs train/replicas); it gets the trainer's adapter and shares
 * the generation, and the run goes on without a stale or diverged
 * replica. */
static void test_dp_late_replica(void **state) {
    (void)state;
    int port;
    char *clog;
    pid_t co = coordinator_for("grpo", "late", 0, &port, &clog);
    pid_t w1 = role_worker("actor,reward,reference", "late", "1", port);
    const char *metrics = strdup(tu_path("%s/late/metrics.jsonl", ru_dir));
    if (!tu_wait_lines(metrics, 3, 30)) {
        tu_stop(w1), tu_stop(co);
        fail_msg("no steps logged:\n%s", tu_read_file(clog, NULL));
    }
    pid_t w2 = role_worker("actor", "late", "2", port);
    if (!tu_wait_text(clog, "worker 1 (actor, pid", 20)) {
        tu_stop(w1), tu_stop(w2), tu_stop(co);
        fail_msg("the second actor did not register:\n%s", tu_read_file(clog, NULL));
    }
    long n = tu_count_lines(metrics);
    int ok = tu_wait_lines(metrics, n + 4, 30);
    char *log = tu_read_file(clog, NULL), *m = tu_read_file(metrics, NULL);
    int alive = waitpid(co, NULL, WNOHANG) == 0;
    tu_stop(w1), tu_stop(w2), tu_stop(co);
    if (!ok || !alive) fail_msg("the run did not go on after the second actor joined:\n%s", log);
    if (strstr(m, "replicas")) fail_msg("the late actor joined the training:\n%s", m);
    if (strstr(log, "stale") || strstr(log, "diverged")) fail_msg("%s", log);
    free(log), free(m), free(clog), free((void *)metrics);
}

/* The pid of the newest "plumb train: worker I (ROLES) pid P" line of log
 * whose roles are `roles`, or -1. */
static pid_t newest_worker(const char *log, const char *roles) {
    char *t = tu_read_file(log, NULL), *p = t;
    pid_t found = -1;
    while (p && (p = strstr(p, "plumb train: worker "))) {
        int i, pid;
        char r[64];
        if (sscanf(p, "plumb train: worker %d (%63[^)]) pid %d", &i, r, &pid) == 3 &&
            !strcmp(r, roles))
            found = pid;
        p++;
    }
    free(t);
    return found;
}

/* Runs cfg for steps steps (with the overrides extra) without a failure
 * into RUN-ref and asserts that run's metrics equal it on every key but
 * perf/ and run/restarts, which must count at least min_restarts at the
 * last step. */
static void same_as_uninterrupted(const char *cfg, int steps, const char *extra, const char *run,
                                  int min_restarts, const char *what) {
    char *out;
    int rc = tu_plumb(&out, "train %s run.steps=%d %s --quiet run.dir=%s-ref", cfg, steps, extra,
                      run);
    if (rc != 0) fail_msg("%s, the uninterrupted run: exit %d\n%s", what, rc, out);
    free(out);
    json_t *ma = tu_metrics_load(run), *mb = tu_metrics_load(tu_path("%s-ref", run));
    json_t *last = tu_metrics_step(ma, steps);
    if (!last || json_number_value(json_object_get(last, "run/restarts")) < min_restarts)
        fail_msg("%s: run/restarts counts fewer than %d restarts", what, min_restarts);
    for (long s2 = 0; s2 <= steps; s2++) {
        json_t *l = tu_metrics_step(ma, s2), *k = tu_metrics_step(mb, s2);
        if (l) json_object_del(l, "run/restarts");
        if (k) json_object_del(k, "run/restarts");
        tu_assert_same_step(ma, mb, s2, what);
    }
    json_decref(ma);
    json_decref(mb);
}

/* plumb train runs algo with one process per role; the worker of role is
 * SIGKILLed once `at` steps are logged. The launcher starts it again, the
 * new one loads the role's state (none, or the copy launch.keep_state
 * keeps after every step) and takes the dead one's requests, and the run
 * ends as an uninterrupted one does, every metric equal (but perf/ and the
 * restart count). extra is appended to the config; with says, the log
 * must say it. */
static void replaced_same(const char *algo, const char *role, int steps, const char *extra,
                          int at, const char *says) {
    char body[8192], cfg[2048], name[64];
    ru_algo_body(body, sizeof body, algo);
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n",
            sizeof body - strlen(body) - 1);
    strncat(body, extra, sizeof body - strlen(body) - 1);
    snprintf(name, sizeof name, "replaced-%s-%s", algo, role);
    ru_config(cfg, sizeof cfg, name, body);
    const char *run = strdup(tu_path("%s/%s", ru_dir, name));
    const char *log = strdup(tu_path("%s/%s.log", ru_dir, name));
    pid_t tr = tu_spawn(log, "train %s run.steps=%d --quiet", cfg, steps);
    if (!tu_wait_lines(tu_path("%s/metrics.jsonl", run), at, 30)) {
        tu_stop(tr);
        fail_msg("%s: no steps logged:\n%s", algo, tu_read_file(log, NULL));
    }
    pid_t victim = newest_worker(log, role);
    if (victim <= 0) {
        tu_stop(tr); /* no run is left behind by a failure */
        fail_msg("%s: no %s worker in the launcher's output:\n%s", algo, role, tu_read_file(log, NULL));
    }
    kill(victim, SIGKILL);
    int st = 0, done = tu_wait_exit(tr, 60, &st);
    tu_stop(tr);
    char *text = tu_read_file(log, NULL);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s with a replaced %s ended with status 0x%x:\n%s", algo, role, st, text);
    char restarted[128];
    snprintf(restarted, sizeof restarted, "(%s), restart 1 of 3", role);
    if (!strstr(text, restarted))
        fail_msg("plumb train does not say it restarted the %s:\n%s", role, text);
    if (says && !strstr(text, says))
        fail_msg("%s with a replaced %s: the log does not say \"%s\":\n%s", algo, role, says,
                 text);
    free(text);
    same_as_uninterrupted(cfg, steps, "", run, 1, algo);
    free((void *)run), free((void *)log);
}

/* The reference of DPO (no state), the actor of GRPO and the critic of PPO
 * (trained: the kept copy), each killed mid-run; the actor of PPO with no
 * kept copy (launch.keep_state false), killed after step 7: every role goes
 * back to the newest checkpoint of the run (one every 5 steps; not the one
 * of step 50 an earlier run left), and the steps since are run again. Then a
 * reference killed each time it comes back stops the run once
 * launch.max_restarts is spent, naming it. */
static void test_train_worker_replaced(void **state) {
    (void)state;
    replaced_same("dpo", "reference", 40, "", 3, NULL);
    replaced_same("grpo", "actor", 30, "", 3, NULL);
    replaced_same("ppo", "critic", 30, "", 3, NULL);
    /* a checkpoint an earlier run left in the run folder, newer than any
     * of this run's: going back never takes it */
    const char *stale = strdup(tu_path("%s/replaced-ppo-actor/checkpoints/step-000050", ru_dir));
    const char *json = "{\"step\": 50, \"seed\": 7, \"kl_coef\": 0.05, \"adapter_version\": 99}\n";
    assert_int_equal(pl_mkdirs(stale), 0);
    assert_int_equal(tu_write_file(tu_path("%s/coordinator.json", stale), json, strlen(json)), 0);
    char back[1024];
    snprintf(back, sizeof back, "going back to %s/replaced-ppo-actor/checkpoints/step-0000", ru_dir);
    replaced_same("ppo", "actor", 20, "launch.keep_state: false\ncheckpoint.every: 5\n", 8, back);
    free((void *)stale);
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "dpo");
    ru_config(cfg, sizeof cfg, "dying", body);
    const char *log = strdup(tu_path("%s/dying.log", ru_dir));
    int st = 0, done;
    pid_t tr;
    char *text;
    tr = tu_spawn(log, "train %s run.steps=100000 --quiet launch.max_restarts=2", cfg);
    pid_t last_pid = -1;
    double end = tu_now_s() + 60;
    while (tu_now_s() < end && tu_process_alive(tr)) {
        pid_t p = newest_worker(log, "reference");
        if (p > 0 && p != last_pid) kill(p, SIGKILL), last_pid = p;
        tu_sleep_ms(20);
    }
    done = tu_wait_exit(tr, 10, &st);
    tu_stop(tr);
    text = tu_read_file(log, NULL);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) == 0 ||
        !strstr(text, "worker 1 (reference) died 3 times: launch.max_restarts (2) is spent"))
        fail_msg("a reference that keeps dying: status 0x%x\n%s", st, text);
    free(text);
    free((void *)log);
}

/* How many times needle occurs in the file at path. */
static int count_text(const char *path, const char *needle) {
    char *t = tu_read_file(path, NULL), *p = t;
    int n = 0;
    while (p && (p = strstr(p, needle))) n++, p++;
    free(t);
    return n;
}

/* The pid of the newest "plumb train: coordinator pid P" line of log, or -1. */
static pid_t newest_coordinator(const char *log) {
    char *t = tu_read_file(log, NULL), *p = t;
    pid_t found = -1;
    int pid;
    while (p && (p = strstr(p, "plumb train: coordinator pid ")))
        if (sscanf(p++, "plumb train: coordinator pid %d", &pid) == 1) found = pid;
    free(t);
    return found;
}

/* Chaos, bounded: a 60-step PPO run with actor, critic, reward and
 * reference in four processes takes ten SIGKILLs and two SIGSTOPs at
 * workers drawn at random, and one SIGKILL of the coordinator, each a
 * random number of steps after the last one's recovery. A hung worker (no
 * heartbeats) is killed by plumb train and replaced; the coordinator is
 * started again from the newest checkpoint, and the workers register with
 * it. The run ends with exit 0 and the uninterrupted run's metrics on
 * every key but perf/ and run/restarts. PLUMB_CHAOS_SEED draws another
 * schedule. */
static void test_chaos(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "ppo");
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n"
            "checkpoint.every: 10\nlaunch.max_restarts: 12\n",
            sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "chaos", body);
    const char *run = strdup(tu_path("%s/chaos", ru_dir));
    const char *log = strdup(tu_path("%s/chaos.log", ru_dir));
    const char *metrics = strdup(tu_path("%s/metrics.jsonl", run));
    const int steps = 60;
    const char *roles[4] = {"actor", "critic", "reward", "reference"};
    /* the schedule: 13 hits, one of them the coordinator's, two SIGSTOPs */
    const char *env = getenv("PLUMB_CHAOS_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : 16u;
    srand(seed);
    int target[13], sig[13];
    for (int h = 0; h < 13; h++) target[h] = rand() % 4, sig[h] = SIGKILL;
    int co_hit = rand() % 13;
    target[co_hit] = -1;
    for (int stops = 0; stops < 2;) {
        int h = rand() % 13;
        if (h != co_hit && sig[h] == SIGKILL) sig[h] = SIGSTOP, stops++;
    }
    /* a model large enough that steps take a while (about 0.15 s here),
     * so that every hit lands inside the run */
    const char *big = "model.init.dim=256 model.init.hidden=768 model.init.layers=3 "
                      "train.batch_size=16";
    pid_t tr = tu_spawn(log, "train %s run.steps=%d %s --quiet", cfg, steps, big);
    char done_hits[512] = "";
    for (int h = 0; h < 13; h++) {
        /* 0 to 2 steps after the last recovery */
        long at = tu_count_lines(metrics) + rand() % 3;
        if (at < 2) at = 2; /* the run is under way */
        if (!tu_wait_lines(metrics, at, 60)) {
            tu_stop(tr);
            fail_msg("chaos (seed %u): line %ld not reached before hit %d; hits so far:%s\n%s",
                     seed, at, h, done_hits, tu_read_file(log, NULL));
        }
        const char *who = target[h] < 0 ? "coordinator" : roles[target[h]];
        pid_t p = target[h] < 0 ? newest_coordinator(log) : newest_worker(log, who);
        if (p <= 0) {
            tu_stop(tr);
            fail_msg("chaos (seed %u): no %s in the launcher's output:\n%s", seed, who,
                     tu_read_file(log, NULL));
        }
        int registered = count_text(log, "registered (rank");
        kill(p, sig[h]);
        snprintf(done_hits + strlen(done_hits), sizeof done_hits - strlen(done_hits), " %s%s@%ld",
                 sig[h] == SIGSTOP ? "stop " : "", who, at);
        /* recovered: a new process in its place */
        double end = tu_now_s() + 30;
        while (tu_now_s() < end && (target[h] < 0 ? newest_coordinator(log) : newest_worker(log, who)) == p)
            tu_sleep_ms(20);
        /* and registered (with a new coordinator: every worker); a process
         * that hangs before it registers is not known to the coordinator */
        while (tu_now_s() < end &&
               count_text(log, "registered (rank") < registered + (target[h] < 0 ? 4 : 1))
            tu_sleep_ms(20);
        if (tu_now_s() >= end) {
            tu_stop(tr);
            fail_msg("chaos (seed %u): the %s (pid %d) was not replaced; hits:%s\n%s", seed, who,
                     (int)p, done_hits, tu_read_file(log, NULL));
        }
    }
    int st = 0, done = tu_wait_exit(tr, 120, &st);
    tu_stop(tr);
    char *text = tu_read_file(log, NULL);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("chaos (seed %u): the run ended with status 0x%x; hits:%s\n%s", seed, st,
                 done_hits, text);
    if (!strstr(text, "stopped answering; killing it") ||
        !strstr(text, "restarting the coordinator from"))
        fail_msg("chaos (seed %u): no hung worker killed, or no coordinator restarted:\n%s", seed,
                 text);
    free(text);
    same_as_uninterrupted(cfg, steps, big, run, 1, "chaos");
    free((void *)run), free((void *)log), free((void *)metrics);
}

/* The step of a ".step-N.tmp" folder in dir (a checkpoint being
 * written), or -1. */
static long tmp_checkpoint(const char *dir_path) {
    DIR *d = opendir(dir_path);
    long found = -1, s;
    for (struct dirent *e; d && (e = readdir(d));)
        if (sscanf(e->d_name, ".step-%ld.tmp", &s) == 1) found = s;
    if (d) closedir(d);
    return found;
}

/* A coordinator killed while it writes a checkpoint: plumb train runs GRPO
 * with a checkpoint every step, and the test freezes the coordinator
 * (SIGSTOP) the moment a .step-N.tmp folder is there; if the folder is
 * still unfinished, it SIGKILLs it. The half-written checkpoint is never
 * taken: the launcher restarts the coordinator from step N-1, and the run
 * ends with the uninterrupted run's metrics. */
static void test_checkpoint_crash(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "grpo");
    strncat(body, "checkpoint.every: 1\ncheckpoint.keep: 3\n", sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "ckcrash", body);
    const char *run = strdup(tu_path("%s/ckcrash", ru_dir));
    const char *log = strdup(tu_path("%s/ckcrash.log", ru_dir));
    const char *ckpts = strdup(tu_path("%s/checkpoints", run));
    const int steps = 60;
    pid_t tr = tu_spawn(log, "train %s run.steps=%d --quiet", cfg, steps);
    long caught = -1;
    double end = tu_now_s() + 60;
    while (caught < 0 && tu_now_s() < end && tu_process_alive(tr)) {
        long n = tmp_checkpoint(ckpts);
        pid_t co = newest_coordinator(log);
        if (n < 2 || co <= 0) {
            usleep(200);
            continue;
        }
        kill(co, SIGSTOP);
        char whole[1024];
        snprintf(whole, sizeof whole, "%s/step-%06ld", ckpts, n);
        if (tmp_checkpoint(ckpts) == n && access(whole, F_OK) != 0) {
            kill(co, SIGKILL);
            caught = n;
        } else {
            kill(co, SIGCONT);
        }
    }
    if (caught < 0) {
        tu_stop(tr);
        fail_msg("no checkpoint caught while being written:\n%s", tu_read_file(log, NULL));
    }
    char from[128];
    snprintf(from, sizeof from, "restarting the coordinator from %s/step-%06ld,", ckpts, caught - 1);
    int st = 0, done = tu_wait_exit(tr, 60, &st);
    tu_stop(tr);
    char *text = tu_read_file(log, NULL);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(text, from))
        fail_msg("killed writing checkpoint %ld: status 0x%x, expected \"%s\":\n%s", caught, st,
                 from, text);
    free(text);
    same_as_uninterrupted(cfg, steps, "", run, 1, "checkpoint crash");
    free((void *)run), free((void *)log), free((void *)ckpts);
}

/* PPO with two actor and two critic replicas (data parallel, two
 * minibatches a step) and no kept copy of any state (launch.keep_state
 * false): one replica process, then the other, is SIGKILLed mid-run.
 * plumb train starts each again; the coordinator gives it the dead one's
 * rank and the call is done again, every rank taking a survivor's state
 * first (a failed call leaves each survivor as it was). The run ends with
 * the uninterrupted run's metrics. */
static void test_dp_replica_replaced(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "ppo");
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n"
            "train.minibatches: 2\nlaunch.keep_state: false\n"
            "launch.workers: \"actor actor,critic critic reward,reference\"\n",
            sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "dpreplaced", body);
    const char *run = strdup(tu_path("%s/dpreplaced", ru_dir));
    const char *log = strdup(tu_path("%s/dpreplaced.log", ru_dir));
    const char *metrics = strdup(tu_path("%s/metrics.jsonl", run));
    const int steps = 30;
    const char *big = "model.init.dim=256 model.init.hidden=768 model.init.layers=3 "
                      "train.batch_size=16";
    pid_t tr = tu_spawn(log, "train %s run.steps=%d %s --quiet", cfg, steps, big);
    const char *victims[3] = {"actor", "actor,critic", "actor"};
    for (int h = 0; h < 3; h++) {
        if (!tu_wait_lines(metrics, 4 + 8 * h, 60)) {
            tu_stop(tr);
            fail_msg("step %d not reached:\n%s", 3 + 8 * h, tu_read_file(log, NULL));
        }
        pid_t p = newest_worker(log, victims[h]);
        if (p <= 0) {
            tu_stop(tr);
            fail_msg("no %s worker in the launcher's output:\n%s", victims[h], tu_read_file(log, NULL));
        }
        int registered = count_text(log, "registered (rank");
        kill(p, SIGKILL);
        double end = tu_now_s() + 30;
        while (tu_now_s() < end && count_text(log, "registered (rank") < registered + 1)
            tu_sleep_ms(20);
    }
    int st = 0, done = tu_wait_exit(tr, 120, &st);
    tu_stop(tr);
    char *text = tu_read_file(log, NULL);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(text, "with the state of rank"))
        fail_msg("replicas replaced: status 0x%x, or no rank taken with a survivor's state:\n%s",
                 st, text);
    free(text);
    same_as_uninterrupted(cfg, steps, big, run, 1, "replicas replaced");
    free((void *)run), free((void *)log), free((void *)metrics);
}

/* plumb train with PPO in four processes and no restarts
 * (launch.max_restarts 0): SIGKILL the critic mid-run; the launcher stops
 * with a non-zero exit within 8 s, names the worker and its role, and
 * leaves none of the other workers running. */
static void test_train_child_killed(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "ppo");
    ru_config(cfg, sizeof cfg, "trainkill", body);
    const char *run = strdup(tu_path("%s/trainkill", ru_dir));
    const char *log = strdup(tu_path("%s/trainkill.log", ru_dir));
    pid_t tr = tu_spawn(log, "train %s run.steps=100000 data.eval= --quiet launch.max_restarts=0",
                        cfg);
    if (!tu_wait_lines(tu_path("%s/metrics.jsonl", run), 3, 30)) {
        tu_stop(tr);
        fail_msg("no steps logged:\n%s", tu_read_file(log, NULL));
    }
    /* the worker pids from "plumb train: worker I (ROLES) pid P on DEVICE, log ..." */
    pid_t kids[8];
    char roles[8][64];
    int n = 0;
    char *t = tu_read_file(log, NULL), *p = t;
    while (p && (p = strstr(p, "plumb train: worker ")) && n < 8) {
        int i, pid;
        char r[64];
        if (sscanf(p, "plumb train: worker %d (%63[^)]) pid %d", &i, r, &pid) == 3) {
            kids[n] = pid;
            snprintf(roles[n++], 64, "%s", r);
        }
        p++;
    }
    free(t);
    if (n != 4) {
        tu_stop(tr);
        fail_msg("expected 4 worker pids in the launcher's output, found %d", n);
    }
    int victim = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(roles[i], "critic")) victim = i;
    if (victim < 0) {
        tu_stop(tr);
        fail_msg("no critic worker in the launcher's output:\n%s", tu_read_file(log, NULL));
    }
    kill(kids[victim], SIGKILL);
    double t0 = tu_now_s();
    int st = 0, done = tu_wait_exit(tr, 30, &st);
    double dt = tu_now_s() - t0;
    tu_stop(tr);
    char *out = tu_read_file(log, NULL);
    if (!done) fail_msg("plumb train still runs 30 s after a worker died:\n%s", out);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 0)
        fail_msg("plumb train ended with status 0x%x, expected a non-zero exit:\n%s", st, out);
    if (dt >= 8) fail_msg("plumb train took %.1f s to stop (limit 8 s)", dt);
    if (!strstr(out, "critic") || !strstr(out, "signal 9"))
        fail_msg("plumb train's stderr does not say that the critic worker was killed:\n%s", out);
    free(out);
    for (int i = 0; i < n; i++) {
        double end = tu_now_s() + 2;
        while (tu_process_alive(kids[i]) && tu_now_s() < end) tu_sleep_ms(50);
        if (tu_process_alive(kids[i])) {
            kill(kids[i], SIGKILL);
            fail_msg("worker %d (%s, pid %d) is still running after plumb train exited", i,
                     roles[i], (int)kids[i]);
        }
    }
    free((void *)run), free((void *)log);
}

int main(int argc, char **argv) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    if (argc > 1) cmocka_set_test_filter(argv[1]); /* test_recovery test_x */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coordinator_worker_killed),
        cmocka_unit_test(test_train_child_killed),
        cmocka_unit_test(test_train_worker_replaced),
        cmocka_unit_test(test_chaos),
        cmocka_unit_test(test_checkpoint_crash),
        cmocka_unit_test(test_dp_replica_replaced),
        cmocka_unit_test(test_dp_replica_killed),
        cmocka_unit_test(test_dp_late_replica),
    };
    return cmocka_run_group_tests(tests, ru_setup, NULL);
}
