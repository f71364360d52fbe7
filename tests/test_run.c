/* test_run.c: whole runs with real processes on loopback.
 *
 * Every test starts the built plumb program (plumb train, or plumb
 * coordinator plus plumb worker processes) on a tiny random model and the
 * synthetic arithmetic task, and checks what the design promises: every
 * algorithm runs, placement of roles into processes does not change a
 * number, a resumed run repeats the original exactly, a dead worker stops
 * the run within seconds and never hangs it, bad frames and bad workers are
 * refused while the run goes on, metrics reach a real redis-server, and
 * CURVE keys work end to end.
 *
 * Sizes: model dim 32, 1 layer, context 24; 200 training examples; 2-4
 * steps of 4 prompts; 4 new tokens per response. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "common/fs.h"
#include "common/wire.h"
#include "coordinator/pool.h"
#include "model/weights.h"
#include "proto/plumb.pb-c.h"
#include "testutil.h"

static const char *dir;      /* scratch folder of this program          */
static char data[512];       /* the arithmetic task (and its tokenizer) */

/* ------------------------------------------------------------ helpers */

/* Writes DIR/NAME.yaml: the tiny shared settings (run.dir DIR/NAME) plus
 * body; the path goes to out. */
static void config(char *out, size_t cap, const char *name, const char *body) {
    char text[16384];
    snprintf(text, sizeof text,
             "# %s: a tiny run of test_run\n"
             "run.dir: %s/%s\n"
             "run.seed: 7\n"
             "run.steps: 3\n"
             "model.path:\n"
             "model.tokenizer: %s\n"
             "model.init.dim: 32\n"
             "model.init.hidden: 64\n"
             "model.init.layers: 1\n"
             "model.init.heads: 2\n"
             "model.init.kv_heads: 1\n"
             "model.init.max_seq: 24\n"
             "lora.rank: 4\n"
             "lora.alpha: 8\n"
             "train.batch_size: 4\n"
             "rollout.max_new_tokens: 4\n"
             "eval.n: 8\n"
             "launch.threads: 1\n"
             "%s",
             name, dir, name, data, body);
    snprintf(out, cap, "%s/%s.yaml", dir, name);
    assert_int_equal(tu_write_file(out, text, strlen(text)), 0);
}

/* The body of each algorithm's config (data paths into the task). */
static void algo_body(char *out, size_t cap, const char *algo) {
    if (!strcmp(algo, "sft"))
        snprintf(out, cap, "algo.name: sft\ndata.train: %s/sft.jsonl\ndata.eval: %s/eval.jsonl\n",
                 data, data);
    else if (!strcmp(algo, "rm"))
        snprintf(out, cap, "algo.name: rm\ndata.train: %s/pref.jsonl\n"
                           "data.eval_pref: %s/eval_pref.jsonl\n", data, data);
    else if (!strcmp(algo, "dpo") || !strcmp(algo, "orpo") || !strcmp(algo, "simpo") ||
             !strcmp(algo, "kto"))
        snprintf(out, cap, "algo.name: %s\ndata.train: %s/pref.jsonl\ndata.eval: %s/eval.jsonl\n"
                           "data.eval_pref: %s/eval_pref.jsonl\n", algo, data, data, data);
    else if (!strcmp(algo, "grpo"))
        snprintf(out, cap, "algo.name: grpo\nalgo.group_size: 2\nalgo.kl_coef: 0.04\n"
                           "data.train: %s/prompts.jsonl\ndata.eval: %s/eval.jsonl\n", data, data);
    else if (!strcmp(algo, "reinforce_pp"))
        snprintf(out, cap, "algo.name: grpo\nalgo.advantage: reinforce_pp\nalgo.group_size: 2\n"
                           "algo.kl_coef: 0.04\ndata.train: %s/prompts.jsonl\n"
                           "data.eval: %s/eval.jsonl\n", data, data);
    else if (!strcmp(algo, "ppo"))
        snprintf(out, cap, "algo.name: ppo\nalgo.group_size: 2\nalgo.kl_coef: 0.05\n"
                           "data.train: %s/prompts.jsonl\ndata.eval: %s/eval.jsonl\n", data, data);
    else fail_msg("no config for %s", algo);
}

/* key is present in line and a finite number. */
static void assert_finite(json_t *line, const char *key, const char *what) {
    json_t *v = json_object_get(line, key);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        fail_msg("%s step %lld: \"%s\" missing or not a finite number", what,
                 json_integer_value(json_object_get(line, "step")), key);
}

/* ------------------------------------------------------------ fixtures */

/* The arithmetic task, made once: 200 training and 40 eval examples. */
static int group_setup(void **state) {
    (void)state;
    dir = tu_tmp_dir();
    snprintf(data, sizeof data, "%s/arith", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s data arith --out %s --n-train 200 --n-eval 40 --max-operand 20 "
             "--seed 3 > /dev/null", tu_plumb_bin(), data);
    signal(SIGPIPE, SIG_IGN);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---------------------------------------------------- every algorithm */

/* Runs algo for 3 steps through plumb train and checks the metric lines:
 * one per step 0..3 (step 0 the eval of the start), with the keys of the
 * algorithm, and RUN/final for the algorithms with an actor. */
static void run_algo(const char *algo, const char *const *each_step, const char *const *evals) {
    char body[8192], cfg[2048], run[1024];
    algo_body(body, sizeof body, algo);
    snprintf(run, sizeof run, "algo-%s", algo);
    config(cfg, sizeof cfg, run, body);
    snprintf(run, sizeof run, "%s/algo-%s", dir, algo);
    char *out;
    int rc = tu_plumb(&out, "train %s --quiet", cfg);
    if (rc != 0) fail_msg("plumb train (%s): exit %d\n%s", algo, rc, out);
    free(out);
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 3, algo);
    for (long s = 1; s <= 3; s++)
        for (int i = 0; each_step[i]; i++) assert_finite(tu_metrics_step(m, s), each_step[i], algo);
    for (int i = 0; evals[i]; i++) {
        assert_finite(tu_metrics_step(m, 0), evals[i], algo);
        assert_finite(tu_metrics_step(m, 3), evals[i], algo);
    }
    struct stat st;
    if (strcmp(algo, "rm") != 0) {
        if (stat(tu_path("%s/final/config.json", run), &st) != 0)
            fail_msg("%s: %s/final/config.json missing", algo, run);
    }
    if (stat(tu_path("%s/checkpoints/step-000003/coordinator.json", run), &st) != 0)
        fail_msg("%s: no final checkpoint", algo);
    json_decref(m);
}

/* SFT: loss every step, generation eval at the start and the end. */
static void test_algo_sft(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "train/grad_norm", NULL}, *ev[] = {"eval/accuracy", NULL};
    run_algo("sft", step, ev);
}

/* Reward model: Bradley-Terry loss, pair accuracy on held-out pairs. */
static void test_algo_rm(void **state) {
    (void)state;
    const char *step[] = {"train/loss", NULL}, *ev[] = {"eval/accuracy", NULL};
    run_algo("rm", step, ev);
}

/* DPO: loss, generation eval, preference and implicit-reward accuracy. */
static void test_algo_dpo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", NULL};
    const char *ev[] = {"eval/accuracy", "eval/pref_accuracy", "eval/reward_accuracy", NULL};
    run_algo("dpo", step, ev);
}

/* ORPO: loss, generation eval and preference accuracy. */
static void test_algo_orpo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", NULL}, *ev[] = {"eval/accuracy", "eval/pref_accuracy", NULL};
    run_algo("orpo", step, ev);
}

/* GRPO with REINFORCE++ advantages (the KL in the rewards, none in the
 * loss). */
static void test_algo_reinforce_pp(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "rollout/reward_mean", "rollout/kl", NULL};
    const char *ev[] = {"eval/accuracy", NULL};
    run_algo("reinforce_pp", step, ev);
    json_t *m = tu_metrics_load(tu_path("%s/algo-reinforce_pp", dir));
    if (json_number_value(json_object_get(tu_metrics_step(m, 2), "train/kl")) != 0)
        fail_msg("reinforce_pp: a KL term in the loss");
    json_decref(m);
}

/* SimPO: loss and margin, generation eval and preference accuracy. */
static void test_algo_simpo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "train/margin", NULL};
    const char *ev[] = {"eval/accuracy", "eval/pref_accuracy", NULL};
    run_algo("simpo", step, ev);
}

/* KTO: loss and its KL reference point, generation eval, preference and
 * implicit-reward accuracy (it has a reference). */
static void test_algo_kto(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "train/kl", "train/reward_chosen", NULL};
    const char *ev[] = {"eval/accuracy", "eval/pref_accuracy", "eval/reward_accuracy", NULL};
    run_algo("kto", step, ev);
}

/* DPO's eval on more held-out pairs than one reference request carries
 * (4096): every pair is scored (the reference cache used to stop at 4096
 * and leave the rest unset). */
static void test_dpo_many_eval_pairs(void **state) {
    (void)state;
    char *src = tu_read_file(tu_path("%s/eval_pref.jsonl", data), NULL);
    assert_non_null(src);
    char big[1024];
    snprintf(big, sizeof big, "%s/eval_pref_big.jsonl", dir);
    FILE *f = fopen(big, "w");
    assert_non_null(f);
    long lines = 0;
    while (lines < 4200) {
        for (const char *q = src; *q && lines < 4200; q++) {
            fputc(*q, f);
            lines += *q == '\n';
        }
    }
    fclose(f);
    free(src);
    char body[4096], cfg[2048], run[1024];
    snprintf(body, sizeof body, "algo.name: dpo\ndata.train: %s/pref.jsonl\ndata.eval_pref: %s\n",
             data, big);
    config(cfg, sizeof cfg, "dpo-many", body);
    snprintf(run, sizeof run, "%s/dpo-many", dir);
    char *out;
    int rc = tu_plumb(&out, "train %s --quiet run.steps=1 eval.n=0", cfg);
    if (rc != 0) fail_msg("plumb train: exit %d\n%s", rc, out);
    free(out);
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 1, "dpo-many");
    assert_finite(tu_metrics_step(m, 1), "eval/reward_accuracy", "dpo-many");
    assert_finite(tu_metrics_step(m, 1), "eval/pref_accuracy", "dpo-many");
    json_decref(m);
}

/* GRPO: rollout reward and KL to the reference, policy loss. */
static void test_algo_grpo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "rollout/reward_mean", "rollout/kl", NULL};
    const char *ev[] = {"eval/accuracy", NULL};
    run_algo("grpo", step, ev);
}

/* PPO: rollout reward, values, policy and critic losses. */
static void test_algo_ppo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "rollout/reward_mean", "rollout/value_mean",
                          "critic/value_loss", NULL};
    const char *ev[] = {"eval/accuracy", NULL};
    run_algo("ppo", step, ev);
}

/* -------------------------------------------------- placement of roles */

/* PPO with one process per role and with all four roles in one process
 * gives the same numbers: every non-perf value of every line is equal. */
static void test_placement_same_numbers(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    algo_body(body, sizeof body, "ppo");
    config(cfg, sizeof cfg, "place", body);
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s/place-auto launch.workers=auto", cfg, dir);
    if (rc != 0) fail_msg("auto: exit %d\n%s", rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/place-one launch.workers=actor,critic,reward,reference",
               cfg, dir);
    if (rc != 0) fail_msg("one process: exit %d\n%s", rc, out);
    free(out);
    json_t *a = tu_metrics_load(tu_path("%s/place-auto", dir));
    json_t *b = tu_metrics_load(tu_path("%s/place-one", dir));
    tu_assert_steps(a, 0, 3, "auto");
    tu_assert_steps(b, 0, 3, "one process");
    for (long s = 0; s <= 3; s++) tu_assert_same_step(a, b, s, "auto vs one process");
    json_decref(a);
    json_decref(b);
}

/* The same runs with launch.device cpu-staged, where every role's model
 * keeps device twins of its weights, adapter, head and gradients and moves
 * them across a device boundary as on a GPU: the same numbers, to the bit.
 * PPO has all four roles (an adapter, a value head, a reward model, a
 * reference); DPO adds the reference's log-prob cache. */
static void staged_same(const char *algo) {
    char body[8192], cfg[2048], name[64], *out;
    algo_body(body, sizeof body, algo);
    snprintf(name, sizeof name, "staged-%s", algo);
    config(cfg, sizeof cfg, name, body);
    char *a = strdup(tu_path("%s/staged-%s-cpu", dir, algo));
    char *b = strdup(tu_path("%s/staged-%s-dev", dir, algo));
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s", cfg, a);
    if (rc != 0) fail_msg("%s on cpu: exit %d\n%s", algo, rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s launch.device=cpu-staged", cfg, b);
    if (rc != 0) fail_msg("%s on cpu-staged: exit %d\n%s", algo, rc, out);
    free(out);
    json_t *ma = tu_metrics_load(a), *mb = tu_metrics_load(b);
    tu_assert_steps(mb, 0, 3, "cpu-staged");
    for (long s = 0; s <= 3; s++) tu_assert_same_step(ma, mb, s, "cpu vs cpu-staged");
    json_decref(ma);
    json_decref(mb);
    free(a);
    free(b);
}

static void test_staged_ppo(void **state) {
    (void)state;
    staged_same("ppo");
}

static void test_staged_dpo(void **state) {
    (void)state;
    staged_same("dpo");
}

/* ------------------------------------------------------ data parallel */

/* Every numeric key of step s not under perf/ (nor a replicas count) is
 * within rel (relative) of the same key in b, and both have the same keys. */
static void assert_close_step(json_t *a, json_t *b, long s, double rel, const char *what) {
    json_t *la = tu_metrics_step(a, s), *lb = tu_metrics_step(b, s);
    if (!la || !lb) fail_msg("%s: step %ld missing (%s)", what, s, la ? "second" : "first");
    const char *k;
    json_t *v;
    json_object_foreach(la, k, v) {
        if (!strncmp(k, "perf/", 5) || strstr(k, "/replicas")) continue;
        json_t *w = json_object_get(lb, k);
        if (!w) fail_msg("%s step %ld: \"%s\" only in the first run", what, s, k);
        double x = json_number_value(v), y = json_number_value(w);
        if (fabs(x - y) > rel * fmax(1.0, fmax(fabs(x), fabs(y))))
            fail_msg("%s step %ld: \"%s\" is %.9g vs %.9g", what, s, k, x, y);
    }
    json_object_foreach(lb, k, v) {
        if (strncmp(k, "perf/", 5) && !strstr(k, "/replicas") && !json_object_get(la, k))
            fail_msg("%s step %ld: \"%s\" only in the second run", what, s, k);
    }
}

/* algo run with launch.workers one (one replica per role) and dp (several
 * replicas of some): the metrics of steps 1..last_same agree (the replicas
 * split each minibatch and sum outputs and gradients, so only the order of
 * float additions differs): step 1, computed before any update, to 1e-6;
 * later steps to 1e-3, since AdamW's first steps move every parameter by
 * about lr whatever the size of its gradient, so that last-bit differences
 * of near-zero gradients grow to a few parts in 1e5 of a metric within a
 * step or two; each dp step reports `replicas` under
 * every prefix in prefixes; the run fails if the replicas' parameters ever
 * differ (the coordinator compares them after every update). */
static void dp_same(const char *algo, const char *one, const char *dp, long last_same,
                    const char *const *prefixes) {
    char body[8192], cfg[2048], name[64], *out;
    algo_body(body, sizeof body, algo);
    snprintf(name, sizeof name, "dp-%s", algo);
    config(cfg, sizeof cfg, name, body);
    char *a = strdup(tu_path("%s/dp-%s-one", dir, algo)), *b = strdup(tu_path("%s/dp-%s-dp", dir, algo));
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s 'launch.workers=%s'", cfg, a, one);
    if (rc != 0) fail_msg("%s with %s: exit %d\n%s", algo, one, rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s 'launch.workers=%s'", cfg, b, dp);
    if (rc != 0) fail_msg("%s with %s: exit %d\n%s", algo, dp, rc, out);
    free(out);
    json_t *ma = tu_metrics_load(a), *mb = tu_metrics_load(b);
    tu_assert_steps(mb, 0, 3, dp);
    for (long s = 1; s <= last_same; s++) assert_close_step(ma, mb, s, s == 1 ? 1e-6 : 1e-3, algo);
    for (long s = 1; s <= 3; s++)
        for (int i = 0; prefixes[i]; i++) {
            char key[64];
            snprintf(key, sizeof key, "%sreplicas", prefixes[i]);
            json_t *v = json_object_get(tu_metrics_step(mb, s), key);
            if (json_number_value(v) != 2)
                fail_msg("%s step %ld: \"%s\" is not 2", algo, s, key);
        }
    json_decref(ma);
    json_decref(mb);
    free(a);
    free(b);
}

/* Two actor replicas train SFT as one. */
static void test_dp_sft(void **state) {
    (void)state;
    const char *pre[] = {"train/", NULL};
    dp_same("sft", "actor", "actor actor", 3, pre);
}

/* Two reward replicas train a reward model (pairs split) as one. */
static void test_dp_rm(void **state) {
    (void)state;
    const char *pre[] = {"train/", NULL};
    dp_same("rm", "reward", "reward reward", 3, pre);
}

/* PPO with two actor and two critic replicas: the first update agrees with
 * one replica each (later steps sample from policies that differ in the
 * last bits, so only their replicas' agreement is checked). */
static void test_dp_ppo(void **state) {
    (void)state;
    const char *pre[] = {"train/", "critic/", NULL};
    dp_same("ppo", "actor critic reward reference", "actor actor,critic critic reward,reference",
            1, pre);
}

/* Minibatches smaller than the replicas: a clear error, no hang. */
static void test_dp_too_small(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    algo_body(body, sizeof body, "rm");
    strncat(body, "train.minibatches: 4\n", sizeof body - strlen(body) - 1);
    config(cfg, sizeof cfg, "dp-small", body);
    int rc = tu_plumb(&out, "train %s --quiet 'launch.workers=reward reward'", cfg);
    if (rc == 0) fail_msg("minibatches of one pair for two replicas: exit 0\n%s", out);
    if (!strstr(out, "minibatches of 1 pairs for 2 replicas"))
        fail_msg("the error does not say why:\n%s", out);
    free(out);
}

/* -------------------------------------------------------------- resume */

/* Run A does 4 steps with a checkpoint every 2; run B starts from a copy of
 * A's step-2 checkpoint with the same config and must log steps 3 and 4
 * exactly as A did. With whole_run, B also gets a copy of A's complete
 * metrics.jsonl and is resumed from its run folder (its newest
 * checkpoint): the lines after step 2 are dropped and written again, so B
 * ends with steps 0..4; otherwise B logs only steps 3 and 4. */
static void resume_same(const char *algo, const char *extra, int whole_run) {
    char body[8192], cfg[2048], name[64], *out;
    algo_body(body, sizeof body, algo);
    strncat(body, extra, sizeof body - strlen(body) - 1);
    snprintf(name, sizeof name, "resume-%s", algo);
    config(cfg, sizeof cfg, name, body);
    const char *a = strdup(tu_path("%s/%s-a", dir, algo));
    const char *b = strdup(tu_path("%s/%s-b", dir, algo));
    int rc = tu_plumb(&out, "train %s --quiet run.steps=4 checkpoint.every=2 checkpoint.keep=0 run.dir=%s",
                   cfg, a);
    if (rc != 0) fail_msg("%s run A: exit %d\n%s", algo, rc, out);
    free(out);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/checkpoints && "
             "cp -r %s/checkpoints/step-000002 %s/checkpoints/", b, b, a, b);
    if (whole_run) {
        size_t at = strlen(cmd);
        snprintf(cmd + at, sizeof cmd - at, " && cp %s/metrics.jsonl %s/", a, b);
    }
    assert_int_equal(system(cmd), 0);
    rc = tu_plumb(&out, "train %s --quiet run.steps=4 checkpoint.every=2 checkpoint.keep=0 run.dir=%s "
                     "--resume %s%s", cfg, b, b, whole_run ? "" : "/checkpoints/step-000002");
    if (rc != 0) fail_msg("%s run B (resumed): exit %d\n%s", algo, rc, out);
    free(out);
    json_t *ma = tu_metrics_load(a), *mb = tu_metrics_load(b);
    tu_assert_steps(ma, 0, 4, "run A");
    tu_assert_steps(mb, whole_run ? 0 : 3, 4, "resumed run B");
    for (long s = whole_run ? 0 : 3; s <= 4; s++) tu_assert_same_step(ma, mb, s, algo);
    json_decref(ma);
    json_decref(mb);
    free((void *)a);
    free((void *)b);
}

/* GRPO (generation, reference, the actor's adapter and optimizer). */
static void test_resume_grpo(void **state) {
    (void)state;
    resume_same("grpo", "", 0);
}

/* SFT with full fine-tuning (the base weights themselves are the state),
 * resumed from the run folder, its metrics file cut back to the checkpoint. */
static void test_resume_sft(void **state) {
    (void)state;
    resume_same("sft", "actor.full_finetune: true\n", 1);
}

/* A fully fine-tuned reward model (its weights are the state). */
static void test_resume_rm_full(void **state) {
    (void)state;
    resume_same("rm", "reward.full_finetune: true\n", 0);
}

/* ------------------------------------------------ a trained reward model */

/* Run NAME (config body) for 2 steps: it must succeed, and key be a finite
 * number at step 2. */
static void run_two_steps(const char *name, const char *body, const char *key) {
    char cfg[2048], *out;
    config(cfg, sizeof cfg, name, body);
    int rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
    if (rc != 0) fail_msg("%s: exit %d\n%s", name, rc, out);
    free(out);
    json_t *m = tu_metrics_load(tu_path("%s/%s", dir, name));
    assert_finite(tu_metrics_step(m, 2), key, name);
    json_decref(m);
}

/* An rm run's checkpoint scores GRPO's rollouts (reward.type model): with
 * a LoRA reward model (its adapter and head) and with a fully fine-tuned
 * one (its own model folder and head). The scores are the head's, not a
 * rule's 0/1; a full reward model whose weights are damaged stops the run
 * with an error naming its file, which shows they are the ones loaded. */
static void test_reward_model(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    for (int full = 0; full <= 1; full++) {
        const char *rm = strdup(tu_path("%s/rm-%s", dir, full ? "full" : "lora"));
        algo_body(body, sizeof body, "rm");
        if (full) strncat(body, "reward.full_finetune: true\n", sizeof body - strlen(body) - 1);
        config(cfg, sizeof cfg, full ? "rm-full" : "rm-lora", body);
        int rc = tu_plumb(&out, "train %s --quiet run.dir=%s", cfg, rm);
        if (rc != 0) fail_msg("rm (full %d): exit %d\n%s", full, rc, out);
        free(out);
        struct stat st;
        const char *ck = strdup(tu_path("%s/checkpoints/step-000003", rm));
        int has_model = stat(tu_path("%s/reward/model/model.safetensors", ck), &st) == 0;
        int has_adapter = stat(tu_path("%s/reward/adapter", ck), &st) == 0;
        if (has_model != full || has_adapter == full)
            fail_msg("rm (full %d): checkpoint has model %d, adapter %d", full, has_model,
                     has_adapter);

        snprintf(body, sizeof body, "algo.name: grpo\nalgo.group_size: 2\nalgo.kl_coef: 0\n"
                 "reward.type: model\nreward.model: %s\ndata.train: %s/prompts.jsonl\n", ck, data);
        config(cfg, sizeof cfg, full ? "grpo-rm-full" : "grpo-rm-lora", body);
        rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
        if (rc != 0) fail_msg("grpo with rm (full %d): exit %d\n%s", full, rc, out);
        free(out);
        json_t *m = tu_metrics_load(tu_path("%s/grpo-rm-%s", dir, full ? "full" : "lora"));
        for (long s = 1; s <= 2; s++) {
            json_t *line = tu_metrics_step(m, s);
            assert_finite(line, "rollout/reward_mean", "grpo with rm");
            double v = json_number_value(json_object_get(line, "rollout/reward_mean"));
            if (v == 0.0 || v == 1.0) fail_msg("grpo with rm (full %d): reward mean %g", full, v);
        }
        json_decref(m);
        if (full) {
            /* a reward model of its own size: 2 layers of width 48 scoring an
             * actor of 1 layer of width 32 */
            const char *rm2 = strdup(tu_path("%s/rm-other", dir));
            char b2[8192], c2[2048];
            algo_body(b2, sizeof b2, "rm");
            strncat(b2, "reward.full_finetune: true\n", sizeof b2 - strlen(b2) - 1);
            config(c2, sizeof c2, "rm-other", b2);
            rc = tu_plumb(&out, "train %s --quiet run.dir=%s model.init.dim=48 model.init.hidden=96 "
                             "model.init.layers=2 model.init.heads=4 model.init.kv_heads=2", c2, rm2);
            if (rc != 0) fail_msg("rm of another size: exit %d\n%s", rc, out);
            free(out);
            snprintf(b2, sizeof b2, "algo.name: grpo\nalgo.group_size: 2\nalgo.kl_coef: 0\n"
                     "reward.type: model\nreward.model: %s/checkpoints/step-000003\n"
                     "data.train: %s/prompts.jsonl\n", rm2, data);
            run_two_steps("grpo-rm-other", b2, "rollout/reward_mean");
            /* PPO whose critic and reference start from that model too
             * (critic.model, reference.model), the three in one worker */
            snprintf(b2, sizeof b2, "algo.name: ppo\nalgo.group_size: 2\nalgo.kl_coef: 0.05\n"
                     "reward.type: model\nreward.model: %s/checkpoints/step-000003\n"
                     "critic.model: %s/checkpoints/step-000003/reward/model\n"
                     "reference.model: %s/checkpoints/step-000003/reward/model\n"
                     "launch.workers: actor critic,reward,reference\n"
                     "data.train: %s/prompts.jsonl\n", rm2, rm2, rm2, data);
            run_two_steps("ppo-own-bases", b2, "critic/value_loss");
            free((void *)rm2);

            assert_int_equal(truncate(tu_path("%s/reward/model/model.safetensors", ck), 100), 0);
            rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
            if (rc == 0 || !strstr(out, "reward/model"))
                fail_msg("grpo with a damaged rm: exit %d\n%s", rc, out);
            free(out);
        }
        free((void *)ck);
        free((void *)rm);
    }
}

/* ------------------------------------------------------ a dying worker */

/* A config NAME for algo and its coordinator on a free port (*port),
 * run.steps 100000, no copy of trained state (a dead trainer sends the run
 * back to its last checkpoint),
 * waiting for min_workers workers, logging to *clog (malloc'ed); fails
 * unless it listens in 20 s. */
static pid_t coordinator_for(const char *algo, const char *name, int min_workers, int *port,
                             char **clog) {
    char body[8192], cfg[2048];
    algo_body(body, sizeof body, algo);
    config(cfg, sizeof cfg, name, body);
    *port = tu_free_port();
    assert_true(*port > 0);
    *clog = strdup(tu_path("%s/%s-coordinator.log", dir, name));
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
    return tu_spawn(tu_path("%s/%s-%s.log", dir, name, log),
                 "worker --role %s --connect tcp://127.0.0.1:%d --model %s/%s/init "
                 "--tokenizer %s --threads 1", roles, port, dir, name, data);
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
    const char *metrics = strdup(tu_path("%s/killed/metrics.jsonl", dir));
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
    const char *metrics = strdup(tu_path("%s/dpkill/metrics.jsonl", dir));
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
    const char *metrics = strdup(tu_path("%s/late/metrics.jsonl", dir));
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
    algo_body(body, sizeof body, algo);
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n",
            sizeof body - strlen(body) - 1);
    strncat(body, extra, sizeof body - strlen(body) - 1);
    snprintf(name, sizeof name, "replaced-%s-%s", algo, role);
    config(cfg, sizeof cfg, name, body);
    const char *run = strdup(tu_path("%s/%s", dir, name));
    const char *log = strdup(tu_path("%s/%s.log", dir, name));
    pid_t tr = tu_spawn(log, "train %s run.steps=%d --quiet", cfg, steps);
    if (!tu_wait_lines(tu_path("%s/metrics.jsonl", run), at, 30)) {
        tu_stop(tr);
        fail_msg("%s: no steps logged:\n%s", algo, tu_read_file(log, NULL));
    }
    pid_t victim = newest_worker(log, role);
    assert_true(victim > 0);
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
    const char *stale = strdup(tu_path("%s/replaced-ppo-actor/checkpoints/step-000050", dir));
    const char *json = "{\"step\": 50, \"seed\": 7, \"kl_coef\": 0.05, \"adapter_version\": 99}\n";
    assert_int_equal(pl_mkdirs(stale), 0);
    assert_int_equal(tu_write_file(tu_path("%s/coordinator.json", stale), json, strlen(json)), 0);
    char back[1024];
    snprintf(back, sizeof back, "going back to %s/replaced-ppo-actor/checkpoints/step-0000", dir);
    replaced_same("ppo", "actor", 20, "launch.keep_state: false\ncheckpoint.every: 5\n", 8, back);
    free((void *)stale);
    char body[8192], cfg[2048];
    algo_body(body, sizeof body, "dpo");
    config(cfg, sizeof cfg, "dying", body);
    const char *log = strdup(tu_path("%s/dying.log", dir));
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
    algo_body(body, sizeof body, "ppo");
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n"
            "checkpoint.every: 10\nlaunch.max_restarts: 12\n",
            sizeof body - strlen(body) - 1);
    config(cfg, sizeof cfg, "chaos", body);
    const char *run = strdup(tu_path("%s/chaos", dir));
    const char *log = strdup(tu_path("%s/chaos.log", dir));
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
        assert_true(p > 0);
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
    algo_body(body, sizeof body, "grpo");
    strncat(body, "checkpoint.every: 1\ncheckpoint.keep: 3\n", sizeof body - strlen(body) - 1);
    config(cfg, sizeof cfg, "ckcrash", body);
    const char *run = strdup(tu_path("%s/ckcrash", dir));
    const char *log = strdup(tu_path("%s/ckcrash.log", dir));
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
    algo_body(body, sizeof body, "ppo");
    strncat(body, "transport.heartbeat_ms: 300\ntransport.dead_after_ms: 1500\n"
            "train.minibatches: 2\nlaunch.keep_state: false\n"
            "launch.workers: \"actor actor,critic critic reward,reference\"\n",
            sizeof body - strlen(body) - 1);
    config(cfg, sizeof cfg, "dpreplaced", body);
    const char *run = strdup(tu_path("%s/dpreplaced", dir));
    const char *log = strdup(tu_path("%s/dpreplaced.log", dir));
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
        assert_true(p > 0);
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
    algo_body(body, sizeof body, "ppo");
    config(cfg, sizeof cfg, "trainkill", body);
    const char *run = strdup(tu_path("%s/trainkill", dir));
    const char *log = strdup(tu_path("%s/trainkill.log", dir));
    pid_t tr = tu_spawn(log, "train %s run.steps=100000 data.eval= --quiet launch.max_restarts=0",
                        cfg);
    if (!tu_wait_lines(tu_path("%s/metrics.jsonl", run), 3, 30)) {
        tu_stop(tr);
        fail_msg("no steps logged:\n%s", tu_read_file(log, NULL));
    }
    /* the worker pids from "plumb train: worker I (ROLES) pid P, log ..." */
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
    assert_true(victim >= 0);
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

/* ------------------------------------------------------- bad input */

/* A raw DEALER client that speaks (or mangles) the wire protocol. */
typedef struct {
    void *ctx, *sock;
} Raw;

static void raw_open(Raw *r, int port, const char *identity) {
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (identity) zmq_setsockopt(r->sock, ZMQ_ROUTING_ID, identity, strlen(identity));
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    assert_int_equal(zmq_connect(r->sock, ep), 0);
}

static void raw_close(Raw *r) {
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

static void raw_send(Raw *r, const void *buf, size_t len) {
    assert_int_equal(zmq_send(r->sock, buf, len, 0), (int)len);
}

static void raw_send_env(Raw *r, const Plumb__Envelope *e) {
    void *buf;
    size_t len;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    raw_send(r, buf, len);
    free(buf);
}

/* Receives one envelope within ms (NULL on timeout or when not one). */
static Plumb__Envelope *raw_recv(Raw *r, int ms) {
    zmq_pollitem_t it = {.socket = r->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, ms) <= 0) return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, r->sock, 0) < 0) return NULL;
    Plumb__Envelope *e = NULL;
    wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), WIRE_MAX_MESSAGE_DEFAULT, "the coordinator", &e);
    zmq_msg_close(&m);
    return e;
}

/* Sends a Register for worker id with one role, the base fingerprint fp
 * and base's dimensions (host "liar", pid 424242). */
static void raw_register(Raw *raw, WireArena *a, const char *id, const char *role,
                         const char *fp, const Base *base) {
    Plumb__Envelope *e = wire_envelope(a, 1, NULL);
    Plumb__Register *r = wire_alloc(a, sizeof *r);
    Plumb__ModelInfo *mi = wire_alloc(a, sizeof *mi);
    char **roles = wire_alloc(a, sizeof *roles);
    plumb__register__init(r);
    plumb__model_info__init(mi);
    roles[0] = wire_strdup(a, role);
    r->worker_id = wire_strdup(a, id);
    r->n_roles = 1, r->roles = roles;
    r->device = "cpu", r->host = "liar", r->pid = 424242;
    r->fingerprint = wire_strdup(a, fp);
    mi->vocab = base->cfg.vocab_size, mi->max_seq = base->cfg.max_seq_len;
    mi->dim = base->cfg.dim, mi->layers = base->cfg.n_layers;
    r->model = mi;
    e->body_case = PLUMB__ENVELOPE__BODY_REGISTER;
    e->register_ = r;
    raw_send_env(raw, e);
}

/* The next Error from the coordinator (other messages skipped), or fails. */
static void expect_error(Raw *r, const char *what, const char *needle) {
    double end = tu_now_s() + 5;
    while (tu_now_s() < end) {
        Plumb__Envelope *e = raw_recv(r, 200);
        if (!e) continue;
        int is_err = e->body_case == PLUMB__ENVELOPE__BODY_ERROR;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", is_err ? e->error->message : "");
        wire_free(&e);
        if (!is_err) continue;
        if (needle && !strstr(msg, needle))
            fail_msg("%s: the Error reply \"%s\" does not mention \"%s\"", what, msg, needle);
        return;
    }
    fail_msg("%s: no Error reply within 5 s", what);
}

/* Seqs whose tokens tensor claims shape (n_claim) but carries n ints. */
static Plumb__Seqs *lying_seqs(WireArena *a, const int *tok, int n, int n_claim) {
    static int offs[2];
    offs[0] = 0, offs[1] = n_claim;
    Plumb__Seqs *s = wire_seqs(a, tok, offs, NULL, 1);
    int64_t *shape = wire_alloc(a, sizeof *shape);
    shape[0] = n_claim;
    s->tokens->shape = shape;
    s->tokens->n_shape = 1;
    s->tokens->data.len = (size_t)n * sizeof(int);
    return s;
}

/* The coordinator of a DPO run (needs actor and reference) with a 1 MiB
 * message limit, waiting for its reference worker while one legitimate
 * actor worker is registered; raw frames then arrive: (a) another protocol
 * version, (b) garbage, (c) 2 MB, (d) a reply whose tensor shape disagrees
 * with its bytes, (e) an all-reduce nothing asked for; and (f) a worker
 * whose base model differs. Each is
 * refused with a message on the coordinator's stderr and (where the sender
 * is known) an Error reply; the other worker exits non-zero saying the base
 * model differs. Then the reference worker joins and the run completes all
 * its steps with exit 0, using the actor worker registered before. */
static void test_bad_frames(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    algo_body(body, sizeof body, "dpo");
    config(cfg, sizeof cfg, "bad", body);
    int port = tu_free_port();
    assert_true(port > 0);
    const char *run = strdup(tu_path("%s/bad", dir));
    const char *clog = strdup(tu_path("%s/bad-coordinator.log", dir));
    const char *alog = strdup(tu_path("%s/bad-actor.log", dir));
    const char *olog = strdup(tu_path("%s/bad-other.log", dir));
    const char *rlog = strdup(tu_path("%s/bad-reference.log", dir));
    char other[1024];
    snprintf(other, sizeof other, "%s/other-model", dir);
    char *out;
    int rc = tu_plumb(&out, "init --out %s --format hf --vocab 259 --dim 32 --hidden 64 --layers 1 "
                         "--heads 2 --kv-heads 1 --seq-len 24 --seed 99", other);
    if (rc != 0) fail_msg("plumb init: %s", out);
    free(out);

    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d "
                           "transport.max_message_mb=1 transport.startup_timeout_s=60", cfg, port);
    pid_t wa = -1, wo = -1, wr = -1;
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    wa = tu_spawn(alog, "worker --role actor --connect tcp://127.0.0.1:%d --model %s/init "
                     "--tokenizer %s --threads 1", port, run, data);
    if (!tu_wait_text(clog, "(actor, pid", 20)) {
        tu_stop(wa), tu_stop(co);
        fail_msg("the actor worker did not register:\n%s", tu_read_file(alog, NULL));
    }

    Raw raw;
    raw_open(&raw, port, "raw-client");
    WireArena *a = wire_arena_new();

    /* (a) another protocol version */
    Plumb__Envelope *e = wire_envelope(a, 1, NULL);
    Plumb__Heartbeat *hb = wire_alloc(a, sizeof *hb);
    plumb__heartbeat__init(hb);
    hb->worker_id = "raw-client";
    e->protocol = PLUMB_PROTOCOL + 41;
    e->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
    e->heartbeat = hb;
    raw_send_env(&raw, e);
    expect_error(&raw, "(a) protocol", "protocol");
    if (!tu_wait_text(clog, tu_path("protocol %d", PLUMB_PROTOCOL + 41), 5))
        fail_msg("(a): the coordinator's stderr does not mention protocol %d", PLUMB_PROTOCOL + 41);

    /* (b) garbage: no valid protobuf starts with a field of wire type 7 */
    unsigned char junk[64];
    memset(junk, 0xff, sizeof junk);
    raw_send(&raw, junk, sizeof junk);
    expect_error(&raw, "(b) garbage", "not a plumb Envelope");
    if (!tu_wait_text(clog, "not a plumb Envelope", 5))
        fail_msg("(b): the coordinator's stderr does not mention the garbage frame");

    /* (c) 2 MB against a 1 MiB limit */
    size_t big = 2u << 20;
    unsigned char *huge = calloc(1, big);
    raw_send(&raw, huge, big);
    free(huge);
    expect_error(&raw, "(c) oversized", "over the limit");
    if (!tu_wait_text(clog, "2097152-byte message is over the limit", 5))
        fail_msg("(c): the coordinator's stderr does not mention the 2 MB message");

    /* (d) a reply whose tokens claim 500 entries but carry 3 */
    int tok[3] = {1, 2, 3};
    e = wire_envelope(a, 77, "actor");
    Plumb__GenerateRep *g = wire_alloc(a, sizeof *g);
    plumb__generate_rep__init(g);
    g->seqs = lying_seqs(a, tok, 3, 500);
    e->body_case = PLUMB__ENVELOPE__BODY_GENERATED;
    e->generated = g;
    raw_send_env(&raw, e);
    expect_error(&raw, "(d) lying shape", "register");
    if (!tu_wait_text(clog, "refused a reply from peer", 5))
        fail_msg("(d): the coordinator's stderr does not mention the refused reply");

    /* (e) an all-reduce from a peer that serves no train request */
    float v[2] = {1.0f, 2.0f};
    e = wire_envelope(a, 78, NULL);
    Plumb__AllReduce *ar = wire_alloc(a, sizeof *ar);
    plumb__all_reduce__init(ar);
    ar->size = 2;
    ar->data = wire_f32(a, v, 2);
    e->body_case = PLUMB__ENVELOPE__BODY_ALL_REDUCE;
    e->all_reduce = ar;
    raw_send_env(&raw, e);
    expect_error(&raw, "(e) stray all-reduce", "register");
    if (!tu_wait_text(clog, "refused an all-reduce from peer", 5))
        fail_msg("(e): the coordinator's stderr does not mention the refused all-reduce");
    wire_arena_free(&a);
    raw_close(&raw);

    /* (f) a worker on another base model */
    wo = tu_spawn(olog, "worker --role reference --connect tcp://127.0.0.1:%d --model %s "
                     "--tokenizer %s --threads 1", port, other, data);
    int st = 0;
    if (!tu_wait_exit(wo, 30, &st)) {
        tu_stop(wa), tu_stop(wo), tu_stop(co);
        fail_msg("(f): the worker on another model still runs after 30 s");
    }
    char *olt = tu_read_file(olog, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 0 || !strstr(olt, "base model differs"))
        fail_msg("(f): the worker on another model ended with status 0x%x:\n%s", st, olt);
    /* the refusal does not tell the client which fingerprint is welcome */
    Base *base = NULL;
    char fp[33];
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    assert_int_equal(wire_fingerprint(base, fp), 0);
    base_free(&base);
    if (strstr(olt, fp))
        fail_msg("(f): the refused worker was told the run's fingerprint %s:\n%s", fp, olt);
    free(olt);
    if (!tu_wait_text(clog, "base model differs", 5))
        fail_msg("(f): the coordinator's stderr does not mention the refused worker");

    /* (g) a flood of 3000 garbage frames: a bounded number of log lines and
     * replies (20 at once, then 10 a second), and a line that counts the
     * rest */
    raw_open(&raw, port, "raw-flood");
    double t_flood = tu_now_s();
    for (int i = 0; i < 3000; i++) raw_send(&raw, junk, sizeof junk);
    int replies = 0;
    for (Plumb__Envelope *q; (q = raw_recv(&raw, 300));) replies++, wire_free(&q);
    double flood_s = tu_now_s() - t_flood;
    raw_close(&raw);
    if (!tu_wait_text(clog, "without a log line or a reply (rate limit", 10))
        fail_msg("(g): no line counts the refusals the rate limit kept quiet:\n%s",
                 tu_read_file(clog, NULL));
    char *cl = tu_read_file(clog, NULL);
    long lines = 0;
    for (char *q = cl; (q = strstr(q, "not a plumb Envelope")); q++) lines++;
    free(cl);
    long bound = 20 + (long)(10 * flood_s) + 10;
    if (replies > bound || lines > bound + 2)
        fail_msg("(g): 3000 bad frames in %.1f s got %d replies and %ld log lines (at most %ld)",
                 flood_s, replies, lines, bound);

    /* the legitimate run goes on */
    wr = tu_spawn(rlog, "worker --role reference --connect tcp://127.0.0.1:%d --model %s/init "
                     "--tokenizer %s --threads 1", port, run, data);
    int done = tu_wait_exit(co, 60, &st);
    tu_stop(co);
    char *log = tu_read_file(clog, NULL);
    int ok = done && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (ok) {
        /* the workers leave after the Shutdown */
        ok = tu_wait_exit(wa, 10, NULL) && tu_wait_exit(wr, 10, NULL);
    }
    tu_stop(wa), tu_stop(wr);
    if (!ok) fail_msg("the run did not complete after the bad input (status 0x%x):\n%s", st, log);
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 3, "run after bad input");
    json_decref(m);
    free(log);
    free((void *)run), free((void *)clog), free((void *)alog), free((void *)olog),
        free((void *)rlog);
}


/* Log-probs whose tensor claims the request's N tokens but carries 2. */
static Plumb__Envelope *lie_logprobs(WireArena *a, const Plumb__Envelope *q) {
    if (q->body_case != PLUMB__ENVELOPE__BODY_LOGPROBS) return NULL;
    long N = q->logprobs->seqs && q->logprobs->seqs->tokens
                 ? (long)(q->logprobs->seqs->tokens->data.len / sizeof(int)) : 1;
    static float two[2] = {-1.0f, -2.0f};
    Plumb__Envelope *rep = wire_envelope(a, q->id, "reference");
    Plumb__LogprobsRep *lr = wire_alloc(a, sizeof *lr);
    plumb__logprobs_rep__init(lr);
    int64_t shape = N;
    lr->logprobs = wire_tensor(a, PLUMB__DTYPE__DT_F32, two, 1, &shape);
    lr->logprobs->data.len = sizeof two;
    rep->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS_REP;
    rep->logprobs_rep = lr;
    return rep;
}

/* A well-formed rollout whose samples do not continue the prompts sent:
 * each prompt's first token changed, then two new tokens. */
static Plumb__Envelope *lie_generation(WireArena *a, const Plumb__Envelope *q) {
    if (q->body_case != PLUMB__ENVELOPE__BODY_GENERATE) return NULL;
    const Plumb__GenerateReq *g = q->generate;
    const int *pt = (const int *)g->prompts->tokens->data.data;
    const int *po = (const int *)g->prompts->offsets->data.data;
    int P = (int)(g->prompts->offsets->data.len / sizeof(int)) - 1, G = g->n, B = P * G;
    int N = 0;
    for (int p = 0; p < P; p++) N += G * (po[p + 1] - po[p] + 2);
    int *tok = wire_alloc(a, sizeof(int) * N), *off = wire_alloc(a, sizeof(int) * (B + 1));
    unsigned char *mask = wire_alloc(a, N);
    float *lp = wire_alloc(a, sizeof(float) * N);
    int at = 0;
    for (int b = 0; b < B; b++) {
        int p = b / G;
        off[b] = at;
        for (int t = po[p]; t < po[p + 1]; t++, at++)
            tok[at] = t == po[p] ? (pt[t] + 1) % 256 : pt[t], mask[at] = 0, lp[at] = 0;
        for (int k = 0; k < 2; k++, at++) tok[at] = 'x', mask[at] = 1, lp[at] = -1.0f;
    }
    off[B] = at;
    Plumb__Envelope *rep = wire_envelope(a, q->id, "actor");
    Plumb__GenerateRep *gr = wire_alloc(a, sizeof *gr);
    plumb__generate_rep__init(gr);
    gr->seqs = wire_seqs(a, tok, off, mask, B);
    gr->logprobs = wire_f32(a, lp, N);
    rep->body_case = PLUMB__ENVELOPE__BODY_GENERATED;
    rep->generated = gr;
    return rep;
}

/* A reply to request q that lies, in a (NULL: no answer). */
typedef Plumb__Envelope *(*LieFn)(WireArena *a, const Plumb__Envelope *q);

/* A run of algo whose role `raw_role` is served by a raw client (identity
 * NAME:1:0, pid 424242) that answers its requests with lie(), the other
 * roles by a real worker hosting real_roles. The coordinator must not
 * crash or hang: it stops naming field and the liar, or (unless
 * must_stop) finishes its steps. */
static void lying_worker_run(const char *name, const char *algo, const char *raw_role,
                             const char *real_roles, LieFn lie, const char *field, int must_stop) {
    char body[8192], cfg[2048], ident[64];
    algo_body(body, sizeof body, algo);
    config(cfg, sizeof cfg, name, body);
    snprintf(ident, sizeof ident, "%s:1:0", name);
    int port = tu_free_port();
    assert_true(port > 0);
    const char *run = strdup(tu_path("%s/%s", dir, name));
    const char *clog = strdup(tu_path("%s/%s-coordinator.log", dir, name));
    const char *wlog = strdup(tu_path("%s/%s-workers.log", dir, name));
    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d", cfg, port);
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    Base *base = NULL;
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    char fp[33];
    assert_int_equal(wire_fingerprint(base, fp), 0);

    Raw raw;
    raw_open(&raw, port, ident);
    WireArena *a = wire_arena_new();
    raw_register(&raw, a, ident, raw_role, fp, base);
    base_free(&base);
    Plumb__Envelope *w = raw_recv(&raw, 5000);
    if (!w || w->body_case != PLUMB__ENVELOPE__BODY_WELCOME) {
        tu_stop(co);
        fail_msg("the raw client was not welcomed (%s)",
                 w && w->body_case == PLUMB__ENVELOPE__BODY_ERROR ? w->error->message : "no reply");
    }
    wire_free(&w);
    pid_t wk = tu_spawn(wlog, "worker --role %s --connect tcp://127.0.0.1:%d "
                           "--model %s/init --tokenizer %s --threads 1", real_roles, port, run, data);
    /* answer every request with a lying tensor; beat while waiting */
    double end = tu_now_s() + 30, next_beat = 0;
    int lies = 0, st = 0, done = 0;
    while (tu_now_s() < end) {
        if (waitpid(co, &st, WNOHANG) == co) {
            done = 1;
            break;
        }
        if (tu_now_s() > next_beat) {
            Plumb__Envelope *h = wire_envelope(a, 0, NULL);
            Plumb__Heartbeat *hb = wire_alloc(a, sizeof *hb);
            plumb__heartbeat__init(hb);
            hb->worker_id = ident;
            h->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
            h->heartbeat = hb;
            raw_send_env(&raw, h);
            next_beat = tu_now_s() + 0.3;
        }
        Plumb__Envelope *q = raw_recv(&raw, 50);
        if (!q) continue;
        Plumb__Envelope *rep = q->body_case == PLUMB__ENVELOPE__BODY_SHUTDOWN ? NULL : lie(a, q);
        if (rep) {
            raw_send_env(&raw, rep);
            lies++;
        } else if (q->body_case == PLUMB__ENVELOPE__BODY_SHUTDOWN) {
            Plumb__Envelope *ok = wire_envelope(a, q->id, NULL);
            Plumb__Ok *o = wire_alloc(a, sizeof *o);
            plumb__ok__init(o);
            ok->body_case = PLUMB__ENVELOPE__BODY_OK;
            ok->ok = o;
            raw_send_env(&raw, ok);
        }
        wire_free(&q);
    }
    wire_arena_free(&a);
    raw_close(&raw);
    tu_stop(co);
    int wst = 0;
    if (!tu_wait_exit(wk, 10, &wst)) tu_stop(wk);
    char *log = tu_read_file(clog, NULL);
    if (!done) fail_msg("the coordinator still runs 30 s after a lying reply:\n%s", log);
    if (lies == 0) fail_msg("the raw %s was never asked (test setup):\n%s", raw_role, log);
    if (!WIFEXITED(st)) fail_msg("the coordinator crashed (status 0x%x):\n%s", st, log);
    if (WEXITSTATUS(st) != 0) {
        /* stopping is allowed, with the place named: a line about the bad
         * field must also name its sender */
        int named = 0, about = 0;
        char *copy = strdup(log), *save = NULL;
        for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (!strstr(l, field) || strstr(l, "registered")) continue;
            about = 1;
            named |= strstr(l, name) || strstr(l, "424242");
        }
        free(copy);
        if (!about || !named)
            fail_msg("the coordinator stopped on a lying reply without naming the field (%s) and "
                     "the worker (%s, pid 424242) that sent it:\n%s", field, ident, log);
    } else {
        if (must_stop) fail_msg("the coordinator took a lying %s and went on:\n%s", field, log);
        json_t *m = tu_metrics_load(run);
        tu_assert_steps(m, 0, 3, "run after a lying reply");
        json_decref(m);
    }
    free(log);
    free((void *)run), free((void *)clog), free((void *)wlog);
}

/* One client sends more registrations than the pool has slots, none of
 * them followed by a heartbeat: only POOL_MAX_PENDING wait at a time (the
 * oldest is dropped, and told), so the pool never fills, and a real worker
 * that registers right after them is accepted and the run completes. */
static void test_pool_slots(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    algo_body(body, sizeof body, "sft");
    config(cfg, sizeof cfg, "slots", body);
    int port = tu_free_port();
    const char *run = strdup(tu_path("%s/slots", dir));
    const char *clog = strdup(tu_path("%s/slots-coordinator.log", dir));
    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d "
                        "transport.heartbeat_ms=300 transport.dead_after_ms=1500 "
                        "transport.startup_timeout_s=60", cfg, port);
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    Base *base = NULL;
    char fp[33];
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    assert_int_equal(wire_fingerprint(base, fp), 0);
    Raw raw;
    raw_open(&raw, port, "squatter");
    WireArena *a = wire_arena_new();
    int welcomed = 0, dropped = 0, full = 0;
    for (int i = 0; i < POOL_MAX_WORKERS + 8; i++) {
        raw_register(&raw, a, tu_path("squatter:%d", i), "reference", fp, base);
        /* its Welcome, and (past the queue's size) the drop of the oldest */
        for (Plumb__Envelope *w; (w = raw_recv(&raw, 2000));) {
            int welcome = w->body_case == PLUMB__ENVELOPE__BODY_WELCOME;
            welcomed += welcome;
            if (w->body_case == PLUMB__ENVELOPE__BODY_ERROR) {
                full += strstr(w->error->message, "full") != NULL;
                dropped += strstr(w->error->message, "dropped") != NULL;
            }
            wire_free(&w);
            if (welcome) break;
        }
    }
    base_free(&base);
    wire_arena_free(&a);
    raw_close(&raw);
    if (welcomed != POOL_MAX_WORKERS + 8 || full ||
        !tu_wait_text(clog, "registrations wait for their first heartbeat", 5)) {
        tu_stop(co);
        fail_msg("%d of %d squatters welcomed, %d told the pool is full, %d told they were "
                 "dropped:\n%s", welcomed, POOL_MAX_WORKERS + 8, full, dropped,
                 tu_read_file(clog, NULL));
    }
    pid_t wk = tu_spawn(tu_path("%s/slots-worker.log", dir), "worker --role actor --connect "
                        "tcp://127.0.0.1:%d --model %s/init --tokenizer %s --threads 1", port,
                        run, data);
    int st = 0, done = tu_wait_exit(co, 60, &st);
    tu_stop(co);
    int wst = 0;
    if (!tu_wait_exit(wk, 10, &wst)) tu_stop(wk);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the run did not complete after the pool was filled (status 0x%x):\n%s\n%s", st,
                 tu_read_file(clog, NULL), tu_read_file(tu_path("%s/slots-worker.log", dir), NULL));
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 3, "run after the squatters");
    json_decref(m);
    free((void *)run), free((void *)clog);
}

/* A raw reference answers log-prob requests with a tensor that lies
 * about its length. */
static void test_bad_reply_shape(void **state) {
    (void)state;
    lying_worker_run("liar", "dpo", "reference", "actor,reference", lie_logprobs, "logprobs", 0);
}

/* A raw actor answers generate requests with well-formed samples that do
 * not continue the prompts it was sent: refused as a bad reply. */
static void test_bad_generation(void **state) {
    (void)state;
    lying_worker_run("liar-gen", "grpo", "actor", "reference,reward", lie_generation, "generate.seqs", 1);
}

/* (e) An unknown config key: plumb train exits 2 naming the key and its
 * file and line, and starts nothing. */
static void test_unknown_key(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    snprintf(body, sizeof body, "algo.name: sft\ndata.train: %s/sft.jsonl\noptim.lrr: 3\n", data);
    config(cfg, sizeof cfg, "badkey", body);
    char *text = tu_read_file(cfg, NULL), *at = strstr(text, "optim.lrr");
    int line = 1;
    for (char *p = text; p < at; p++) line += *p == '\n';
    free(text);
    char *out;
    int rc = tu_plumb(&out, "train %s", cfg);
    assert_int_equal(rc, 2);
    char want[2100];
    snprintf(want, sizeof want, "%s:%d:", cfg, line);
    if (!strstr(out, want) || !strstr(out, "optim.lrr"))
        fail_msg("expected a message naming %s and 'optim.lrr', got:\n%s", want, out);
    struct stat st;
    assert_int_not_equal(stat(tu_path("%s/badkey/logs", dir), &st), 0);
    free(out);
}

/* ----------------------------------------------------------- metrics */

/* SFT with metrics.redis: a real redis-server on a free port receives one
 * stream entry per logged step, each the same JSON text as the jsonl
 * line with the same step. */
static void test_metrics_redis(void **state) {
    (void)state;
    if (system("command -v redis-server > /dev/null") != 0) skip();
    int port = tu_free_port();
    assert_true(port > 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
             "--dir %s --logfile %s/redis.log > /dev/null && "
             "for i in $(seq 50); do redis-cli -p %d ping 2>/dev/null | grep -q PONG && exit 0; "
             "sleep 0.1; done; exit 1",
             port, dir, dir, port);
    assert_int_equal(system(cmd), 0);
    char body[8192], cfg[2048], *out;
    algo_body(body, sizeof body, "sft");
    config(cfg, sizeof cfg, "redis", body);
    int rc = tu_plumb(&out, "train %s --quiet metrics.redis=redis://127.0.0.1:%d/2 "
                         "metrics.stream=plumb:test:redis", cfg, port);
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *rep = NULL;
    if (c && !c->err) {
        redisReply *sel = redisCommand(c, "SELECT 2");
        if (sel) freeReplyObject(sel);
        rep = redisCommand(c, "XRANGE plumb:test:redis - +");
    }
    snprintf(cmd, sizeof cmd, "redis-cli -p %d shutdown nosave > /dev/null 2>&1", port);
    if (rc != 0) {
        system(cmd);
        fail_msg("plumb train with redis: exit %d\n%s", rc, out);
    }
    free(out);
    char *lines = tu_read_file(tu_path("%s/redis/metrics.jsonl", dir), NULL);
    assert_non_null(lines);
    int ok = rep && rep->type == REDIS_REPLY_ARRAY;
    size_t n = ok ? rep->elements : 0;
    char msg[4096] = "";
    char *save = NULL, *line = strtok_r(lines, "\n", &save);
    size_t i = 0;
    for (; ok && line; line = strtok_r(NULL, "\n", &save), i++) {
        if (i >= n) {
            snprintf(msg, sizeof msg, "the stream has %zu entries, the jsonl more", n);
            ok = 0;
            break;
        }
        redisReply *f = rep->element[i]->element[1];
        const char *step = NULL, *js = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (!strcmp(f->element[k]->str, "step")) step = f->element[k + 1]->str;
            if (!strcmp(f->element[k]->str, "json")) js = f->element[k + 1]->str;
        }
        json_t *j = json_loads(line, 0, NULL);
        char want[32];
        snprintf(want, sizeof want, "%lld", json_integer_value(json_object_get(j, "step")));
        json_decref(j);
        if (!step || strcmp(step, want) || !js || strcmp(js, line)) {
            snprintf(msg, sizeof msg, "entry %zu: step %s json %.500s\n  vs line %.500s", i,
                     step ? step : "(none)", js ? js : "(none)", line);
            ok = 0;
        }
    }
    if (ok && i != n) snprintf(msg, sizeof msg, "the stream has %zu entries, the jsonl %zu", n, i), ok = 0;
    if (ok && i != 4) snprintf(msg, sizeof msg, "%zu lines, expected steps 0..3", i), ok = 0;
    if (rep) freeReplyObject(rep);
    if (c) redisFree(c);
    free(lines);
    system(cmd);
    if (!ok) fail_msg("redis stream vs metrics.jsonl: %s", msg);
}

/* -------------------------------------------------------------- CURVE */

/* plumb keygen makes a server and a client key; a run whose coordinator
 * requires CURVE and lists the client key completes, and one whose workers
 * use a key not listed ends non-zero (no worker could register). */
static void test_curve(void **state) {
    (void)state;
    char *out;
    assert_int_equal(tu_plumb(&out, "keygen %s/server", dir), 0);
    free(out);
    assert_int_equal(tu_plumb(&out, "keygen %s/client", dir), 0);
    free(out);
    assert_int_equal(tu_plumb(&out, "keygen %s/stranger", dir), 0);
    free(out);
    char *pub = tu_read_file(tu_path("%s/client.pub", dir), NULL);
    assert_non_null(pub);
    char auth[4096];
    snprintf(auth, sizeof auth, "# workers allowed to join\n%s", pub);
    free(pub);
    assert_int_equal(tu_write_file(tu_path("%s/authorized_keys", dir), auth, strlen(auth)), 0);
    char body[8192], cfg[2048];
    algo_body(body, sizeof body, "ppo");
    config(cfg, sizeof cfg, "curve", body);
    int rc = tu_plumb(&out, "train %s --quiet run.steps=2 transport.secret_key=%s/server.key "
                         "transport.authorized_keys=%s/authorized_keys transport.client_key=%s/client.key",
                   cfg, dir, dir, dir);
    if (rc != 0) fail_msg("CURVE run: exit %d\n%s", rc, out);
    free(out);
    json_t *m = tu_metrics_load(tu_path("%s/curve", dir));
    tu_assert_steps(m, 0, 2, "CURVE run");
    json_decref(m);
    rc = tu_plumb(&out, "train %s --quiet run.steps=2 run.dir=%s/curve-stranger "
                     "transport.startup_timeout_s=2 transport.secret_key=%s/server.key "
                     "transport.authorized_keys=%s/authorized_keys "
                     "transport.client_key=%s/stranger.key",
               cfg, dir, dir, dir, dir);
    /* both sides say what happened, and the run stops at once */
    if (rc == 0 || !strstr(out, "is not in the coordinator's transport.authorized_keys") ||
        !strstr(out, "whose CURVE key is not in transport.authorized_keys"))
        fail_msg("workers with an unlisted key: exit %d\n%s", rc, out);
    free(out);
}

int main(int argc, char **argv) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    if (argc > 1) cmocka_set_test_filter(argv[1]); /* test_run test_chaos */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_algo_sft),
        cmocka_unit_test(test_algo_rm),
        cmocka_unit_test(test_algo_dpo),
        cmocka_unit_test(test_algo_orpo),
        cmocka_unit_test(test_algo_reinforce_pp),
        cmocka_unit_test(test_algo_simpo),
        cmocka_unit_test(test_algo_kto),
        cmocka_unit_test(test_dpo_many_eval_pairs),
        cmocka_unit_test(test_algo_grpo),
        cmocka_unit_test(test_algo_ppo),
        cmocka_unit_test(test_placement_same_numbers),
        cmocka_unit_test(test_staged_ppo),
        cmocka_unit_test(test_staged_dpo),
        cmocka_unit_test(test_dp_sft),
        cmocka_unit_test(test_dp_rm),
        cmocka_unit_test(test_dp_ppo),
        cmocka_unit_test(test_dp_too_small),
        cmocka_unit_test(test_resume_grpo),
        cmocka_unit_test(test_resume_sft),
        cmocka_unit_test(test_resume_rm_full),
        cmocka_unit_test(test_reward_model),
        cmocka_unit_test(test_coordinator_worker_killed),
        cmocka_unit_test(test_train_child_killed),
        cmocka_unit_test(test_train_worker_replaced),
        cmocka_unit_test(test_chaos),
        cmocka_unit_test(test_checkpoint_crash),
        cmocka_unit_test(test_dp_replica_replaced),
        cmocka_unit_test(test_dp_replica_killed),
        cmocka_unit_test(test_dp_late_replica),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_bad_reply_shape),
        cmocka_unit_test(test_bad_generation),
        cmocka_unit_test(test_pool_slots),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_metrics_redis),
        cmocka_unit_test(test_curve),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
