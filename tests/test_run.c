/* test_run.c: whole runs with real processes on loopback.
 *
 * Every test starts the built plumb program (plumb train, or plumb
 * coordinator plus plumb worker processes) on a tiny random model and the
 * synthetic arithmetic task (runutil.h), and checks what the design
 * promises: every algorithm runs, placement of roles into processes does
 * not change a number, data-parallel replicas agree, a resumed run repeats
 * the original exactly, metrics reach a real redis-server, and CURVE keys
 * work end to end. Runs that lose a process are test_recovery's; hostile
 * peers and bad input, test_hostile's. */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runutil.h"
#include "testutil.h"

/* key is present in line and a finite number. */
static void assert_finite(json_t *line, const char *key, const char *what) {
    json_t *v = json_object_get(line, key);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        fail_msg("%s step %lld: \"%s\" missing or not a finite number", what,
                 json_integer_value(json_object_get(line, "step")), key);
}

/* ---------------------------------------------------- every algorithm */

/* Runs algo for 3 steps through plumb train and checks the metric lines:
 * one per step 0..3 (step 0 the eval of the start), with the keys of the
 * algorithm, and RUN/final for the algorithms with an actor. */
static void run_algo(const char *algo, const char *const *each_step, const char *const *evals) {
    char body[8192], cfg[2048], run[1024];
    ru_algo_body(body, sizeof body, algo);
    snprintf(run, sizeof run, "algo-%s", algo);
    ru_config(cfg, sizeof cfg, run, body);
    snprintf(run, sizeof run, "%s/algo-%s", ru_dir, algo);
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
    json_t *m = tu_metrics_load(tu_path("%s/algo-reinforce_pp", ru_dir));
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
    char *src = tu_read_file(tu_path("%s/eval_pref.jsonl", ru_data), NULL);
    assert_non_null(src);
    char big[1024];
    snprintf(big, sizeof big, "%s/eval_pref_big.jsonl", ru_dir);
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
             ru_data, big);
    ru_config(cfg, sizeof cfg, "dpo-many", body);
    snprintf(run, sizeof run, "%s/dpo-many", ru_dir);
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

/* The log-probs the rollout sampled with are, to the bit, those the
 * actor's training forward computes before its first update: the largest
 * difference, logged every step, is exactly 0. */
static void assert_no_mismatch(const char *algo) {
    json_t *m = tu_metrics_load(tu_path("%s/algo-%s", ru_dir, algo));
    for (long s = 1; s <= 3; s++) {
        json_t *v = json_object_get(tu_metrics_step(m, s), "rollout/logprob_diff_max");
        if (!json_is_number(v) || json_number_value(v) != 0.0)
            fail_msg("%s step %ld: rollout/logprob_diff_max is %g, not 0", algo, s,
                     json_number_value(v));
    }
    json_decref(m);
}

/* GRPO: rollout reward and KL to the reference, policy loss. */
static void test_algo_grpo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "rollout/reward_mean", "rollout/kl", NULL};
    const char *ev[] = {"eval/accuracy", NULL};
    run_algo("grpo", step, ev);
    assert_no_mismatch("grpo");
}

/* PPO: rollout reward, values, policy and critic losses. */
static void test_algo_ppo(void **state) {
    (void)state;
    const char *step[] = {"train/loss", "rollout/reward_mean", "rollout/value_mean",
                          "critic/value_loss", NULL};
    const char *ev[] = {"eval/accuracy", NULL};
    run_algo("ppo", step, ev);
    assert_no_mismatch("ppo");
}

/* -------------------------------------------------- placement of roles */

/* PPO with one process per role and with all four roles in one process
 * gives the same numbers: every non-perf value of every line is equal. */
static void test_placement_same_numbers(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    ru_algo_body(body, sizeof body, "ppo");
    ru_config(cfg, sizeof cfg, "place", body);
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s/place-auto launch.workers=auto", cfg, ru_dir);
    if (rc != 0) fail_msg("auto: exit %d\n%s", rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s/place-one launch.workers=actor,critic,reward,reference",
               cfg, ru_dir);
    if (rc != 0) fail_msg("one process: exit %d\n%s", rc, out);
    free(out);
    json_t *a = tu_metrics_load(tu_path("%s/place-auto", ru_dir));
    json_t *b = tu_metrics_load(tu_path("%s/place-one", ru_dir));
    tu_assert_steps(a, 0, 3, "auto");
    tu_assert_steps(b, 0, 3, "one process");
    for (long s = 0; s <= 3; s++) tu_assert_same_step(a, b, s, "auto vs one process");
    json_decref(a);
    json_decref(b);
}

/* Roles placed on GPUs (launch.workers with @GPUS) where none can be used:
 * each process is started on its own cuda:N, says so, and the run stops
 * with the worker's reason instead of computing elsewhere. */
static void test_placement_gpus(void **state) {
    (void)state;
    char body[8192], cfg[2048], *out;
    ru_algo_body(body, sizeof body, "ppo");
    ru_config(cfg, sizeof cfg, "place-gpus", body);
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s/place-gpus launch.device=cuda "
                            "launch.max_restarts=0 'launch.workers=actor,critic@2 reward,reference@5'",
                      cfg, ru_dir);
    if (rc != 1 || !strstr(out, "(actor,critic) pid") || !strstr(out, "on cuda:2,") ||
        !strstr(out, "(reward,reference) pid") || !strstr(out, "on cuda:5,") ||
        !strstr(out, "--device: "))
        fail_msg("exit %d\n%s", rc, out);
    free(out);
}

/* The same runs with launch.device cpu-staged, where every role's model
 * keeps device twins of its weights, adapter, head and gradients and moves
 * them across a device boundary as on a GPU: the same numbers, to the bit.
 * PPO has all four roles (an adapter, a value head, a reward model, a
 * reference); DPO adds the reference's log-prob cache. */
static void staged_same(const char *algo) {
    char body[8192], cfg[2048], name[64], *out;
    ru_algo_body(body, sizeof body, algo);
    snprintf(name, sizeof name, "staged-%s", algo);
    ru_config(cfg, sizeof cfg, name, body);
    char *a = strdup(tu_path("%s/staged-%s-cpu", ru_dir, algo));
    char *b = strdup(tu_path("%s/staged-%s-dev", ru_dir, algo));
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
    ru_algo_body(body, sizeof body, algo);
    snprintf(name, sizeof name, "dp-%s", algo);
    ru_config(cfg, sizeof cfg, name, body);
    char *a = strdup(tu_path("%s/dp-%s-one", ru_dir, algo)), *b = strdup(tu_path("%s/dp-%s-dp", ru_dir, algo));
    int rc = tu_plumb(&out, "train %s --quiet run.dir=%s 'launch.workers=%s'", cfg, a, one);
    if (rc != 0) fail_msg("%s with %s: exit %d\n%s", algo, one, rc, out);
    free(out);
    rc = tu_plumb(&out, "train %s --quiet run.dir=%s 'launch.workers=%s'", cfg, b, dp);
    if (rc != 0) fail_msg("%s with %s: exit %d\n%s", algo, dp, rc, out);
    free(out);
    json_t *ma = tu_metrics_load(a), *mb = tu_metrics_load(b);
    tu_assert_steps(mb, 0, 3, dp);
    for (long s = 1; s <= last_same; s++) assert_close_step(ma, mb, s, s == 1 ? 1e-6 : 1e-3, algo);
    for (long s = 1; s <= 3; s++) {
        /* the replicas' sums are counted: bytes (two replicas' floats) and
         * time; a run of one has none */
        double bytes = json_number_value(json_object_get(tu_metrics_step(mb, s), "perf/sync_bytes"));
        json_t *t = json_object_get(tu_metrics_step(mb, s), "perf/sync_s");
        if (!(bytes > 0) || fmod(bytes, 8.0) != 0 || !json_is_number(t) || json_number_value(t) < 0)
            fail_msg("%s step %ld: perf/sync_bytes %g, perf/sync_s %s", algo, s, bytes,
                     t ? "present" : "missing");
        if (json_object_get(tu_metrics_step(ma, s), "perf/sync_bytes"))
            fail_msg("%s step %ld: one replica reports perf/sync_bytes", algo, s);
    }
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
    ru_algo_body(body, sizeof body, "rm");
    strncat(body, "train.minibatches: 4\n", sizeof body - strlen(body) - 1);
    ru_config(cfg, sizeof cfg, "dp-small", body);
    int rc = tu_plumb(&out, "train %s --quiet 'launch.workers=reward reward'", cfg);
    if (rc == 0) fail_msg("minibatches of one pair for two replicas: exit 0\n%s", out);
    if (!strstr(out, "minibatches of 1 pairs for 2 replicas"))
        fail_msg("the error does not say why:\n%s", out);
    free(out);
}

/* -------------------------------------------------------------- resume */

/* GRPO (generation, reference, the actor's adapter and optimizer). */
static void test_resume_grpo(void **state) {
    (void)state;
    ru_resume_same("grpo", "grpo", "", 0);
}

/* SFT with full fine-tuning (the base weights themselves are the state),
 * resumed from the run folder, its metrics file cut back to the checkpoint. */
static void test_resume_sft(void **state) {
    (void)state;
    ru_resume_same("sft", "sft", "actor.full_finetune: true\n", 1);
}

/* A fully fine-tuned reward model (its weights are the state). */
static void test_resume_rm_full(void **state) {
    (void)state;
    ru_resume_same("rm", "rm", "reward.full_finetune: true\n", 0);
}

/* ------------------------------------------------ a trained reward model */

/* Run NAME (config body) for 2 steps: it must succeed, and key be a finite
 * number at step 2. */
static void run_two_steps(const char *name, const char *body, const char *key) {
    char cfg[2048], *out;
    ru_config(cfg, sizeof cfg, name, body);
    int rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
    if (rc != 0) fail_msg("%s: exit %d\n%s", name, rc, out);
    free(out);
    json_t *m = tu_metrics_load(tu_path("%s/%s", ru_dir, name));
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
        const char *rm = strdup(tu_path("%s/rm-%s", ru_dir, full ? "full" : "lora"));
        ru_algo_body(body, sizeof body, "rm");
        if (full) strncat(body, "reward.full_finetune: true\n", sizeof body - strlen(body) - 1);
        ru_config(cfg, sizeof cfg, full ? "rm-full" : "rm-lora", body);
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
                 "reward.type: model\nreward.model: %s\ndata.train: %s/prompts.jsonl\n", ck, ru_data);
        ru_config(cfg, sizeof cfg, full ? "grpo-rm-full" : "grpo-rm-lora", body);
        rc = tu_plumb(&out, "train %s --quiet run.steps=2", cfg);
        if (rc != 0) fail_msg("grpo with rm (full %d): exit %d\n%s", full, rc, out);
        free(out);
        json_t *m = tu_metrics_load(tu_path("%s/grpo-rm-%s", ru_dir, full ? "full" : "lora"));
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
            const char *rm2 = strdup(tu_path("%s/rm-other", ru_dir));
            char b2[8192], c2[2048];
            ru_algo_body(b2, sizeof b2, "rm");
            strncat(b2, "reward.full_finetune: true\n", sizeof b2 - strlen(b2) - 1);
            ru_config(c2, sizeof c2, "rm-other", b2);
            rc = tu_plumb(&out, "train %s --quiet run.dir=%s model.init.dim=48 model.init.hidden=96 "
                             "model.init.layers=2 model.init.heads=4 model.init.kv_heads=2", c2, rm2);
            if (rc != 0) fail_msg("rm of another size: exit %d\n%s", rc, out);
            free(out);
            snprintf(b2, sizeof b2, "algo.name: grpo\nalgo.group_size: 2\nalgo.kl_coef: 0\n"
                     "reward.type: model\nreward.model: %s/checkpoints/step-000003\n"
                     "data.train: %s/prompts.jsonl\n", rm2, ru_data);
            run_two_steps("grpo-rm-other", b2, "rollout/reward_mean");
            /* PPO whose critic and reference start from that model too
             * (critic.model, reference.model), the three in one worker */
            snprintf(b2, sizeof b2, "algo.name: ppo\nalgo.group_size: 2\nalgo.kl_coef: 0.05\n"
                     "reward.type: model\nreward.model: %s/checkpoints/step-000003\n"
                     "critic.model: %s/checkpoints/step-000003/reward/model\n"
                     "reference.model: %s/checkpoints/step-000003/reward/model\n"
                     "launch.workers: actor critic,reward,reference\n"
                     "data.train: %s/prompts.jsonl\n", rm2, rm2, rm2, ru_data);
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
             port, ru_dir, ru_dir, port);
    assert_int_equal(system(cmd), 0);
    char body[8192], cfg[2048], *out;
    ru_algo_body(body, sizeof body, "sft");
    ru_config(cfg, sizeof cfg, "redis", body);
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
    char *lines = tu_read_file(tu_path("%s/redis/metrics.jsonl", ru_dir), NULL);
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
    assert_int_equal(tu_plumb(&out, "keygen %s/server", ru_dir), 0);
    free(out);
    assert_int_equal(tu_plumb(&out, "keygen %s/client", ru_dir), 0);
    free(out);
    assert_int_equal(tu_plumb(&out, "keygen %s/stranger", ru_dir), 0);
    free(out);
    char *pub = tu_read_file(tu_path("%s/client.pub", ru_dir), NULL);
    assert_non_null(pub);
    char auth[4096];
    snprintf(auth, sizeof auth, "# workers allowed to join\n%s", pub);
    free(pub);
    assert_int_equal(tu_write_file(tu_path("%s/authorized_keys", ru_dir), auth, strlen(auth)), 0);
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "ppo");
    ru_config(cfg, sizeof cfg, "curve", body);
    int rc = tu_plumb(&out, "train %s --quiet run.steps=2 transport.secret_key=%s/server.key "
                         "transport.authorized_keys=%s/authorized_keys transport.client_key=%s/client.key",
                   cfg, ru_dir, ru_dir, ru_dir);
    if (rc != 0) fail_msg("CURVE run: exit %d\n%s", rc, out);
    free(out);
    json_t *m = tu_metrics_load(tu_path("%s/curve", ru_dir));
    tu_assert_steps(m, 0, 2, "CURVE run");
    json_decref(m);
    rc = tu_plumb(&out, "train %s --quiet run.steps=2 run.dir=%s/curve-stranger "
                     "transport.startup_timeout_s=2 transport.secret_key=%s/server.key "
                     "transport.authorized_keys=%s/authorized_keys "
                     "transport.client_key=%s/stranger.key",
               cfg, ru_dir, ru_dir, ru_dir, ru_dir);
    /* both sides say what happened, and the run stops at once */
    if (rc == 0 || !strstr(out, "is not in the coordinator's transport.authorized_keys") ||
        !strstr(out, "whose CURVE key is not in transport.authorized_keys"))
        fail_msg("workers with an unlisted key: exit %d\n%s", rc, out);
    free(out);
}

int main(int argc, char **argv) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    if (argc > 1) cmocka_set_test_filter(argv[1]); /* test_run test_x */
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
        cmocka_unit_test(test_placement_same_numbers), cmocka_unit_test(test_placement_gpus),
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
        cmocka_unit_test(test_metrics_redis),
        cmocka_unit_test(test_curve),
    };
    return cmocka_run_group_tests(tests, ru_setup, NULL);
}
