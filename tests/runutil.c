/* runutil.c: the whole-run tests' shared fixtures (runutil.h). */
#define _GNU_SOURCE
#include "runutil.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

const char *ru_dir;
char ru_data[512];

/* Writes DIR/NAME.yaml: the tiny shared settings (run.dir DIR/NAME) plus
 * body; the path goes to out. */
void ru_config(char *out, size_t cap, const char *name, const char *body) {
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
             name, ru_dir, name, ru_data, body);
    snprintf(out, cap, "%s/%s.yaml", ru_dir, name);
    assert_int_equal(tu_write_file(out, text, strlen(text)), 0);
}

/* The body of each algorithm's config (data paths into the task). */
void ru_algo_body(char *out, size_t cap, const char *algo) {
    if (!strcmp(algo, "sft"))
        snprintf(out, cap, "algo.name: sft\ndata.train: %s/sft.jsonl\ndata.eval: %s/eval.jsonl\n",
                 ru_data, ru_data);
    else if (!strcmp(algo, "rm"))
        snprintf(out, cap, "algo.name: rm\ndata.train: %s/pref.jsonl\n"
                           "data.eval_pref: %s/eval_pref.jsonl\n", ru_data, ru_data);
    else if (!strcmp(algo, "dpo") || !strcmp(algo, "orpo") || !strcmp(algo, "simpo") ||
             !strcmp(algo, "kto"))
        snprintf(out, cap, "algo.name: %s\ndata.train: %s/pref.jsonl\ndata.eval: %s/eval.jsonl\n"
                           "data.eval_pref: %s/eval_pref.jsonl\n", algo, ru_data, ru_data, ru_data);
    else if (!strcmp(algo, "grpo"))
        snprintf(out, cap, "algo.name: grpo\nalgo.group_size: 2\nalgo.kl_coef: 0.04\n"
                           "data.train: %s/prompts.jsonl\ndata.eval: %s/eval.jsonl\n", ru_data, ru_data);
    else if (!strcmp(algo, "reinforce_pp"))
        snprintf(out, cap, "algo.name: grpo\nalgo.advantage: reinforce_pp\nalgo.group_size: 2\n"
                           "algo.kl_coef: 0.04\ndata.train: %s/prompts.jsonl\n"
                           "data.eval: %s/eval.jsonl\n", ru_data, ru_data);
    else if (!strcmp(algo, "ppo"))
        snprintf(out, cap, "algo.name: ppo\nalgo.group_size: 2\nalgo.kl_coef: 0.05\n"
                           "data.train: %s/prompts.jsonl\ndata.eval: %s/eval.jsonl\n", ru_data, ru_data);
    else fail_msg("no config for %s", algo);
}

/* The arithmetic task, made once: 200 training and 40 eval examples. */
int ru_setup(void **state) {
    (void)state;
    ru_dir = tu_tmp_dir();
    snprintf(ru_data, sizeof ru_data, "%s/arith", ru_dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s data arith --out %s --n-train 200 --n-eval 40 --max-operand 20 "
             "--seed 3 > /dev/null", tu_plumb_bin(), ru_data);
    signal(SIGPIPE, SIG_IGN);
    return system(cmd) == 0 ? 0 : -1;
}

/* Run A does 4 steps with a checkpoint every 2; run B starts from a copy of
 * A's step-2 checkpoint with the same config and must log steps 3 and 4
 * exactly as A did. With whole_run, B also gets a copy of A's complete
 * metrics.jsonl and is resumed from its run folder (its newest
 * checkpoint): the lines after step 2 are dropped and written again, so B
 * ends with steps 0..4; otherwise B logs only steps 3 and 4. */
void ru_resume_same(const char *label, const char *algo, const char *extra, int whole_run) {
    char body[8192], cfg[2048], name[64], *out;
    ru_algo_body(body, sizeof body, algo);
    strncat(body, extra, sizeof body - strlen(body) - 1);
    snprintf(name, sizeof name, "resume-%s", label);
    ru_config(cfg, sizeof cfg, name, body);
    const char *a = strdup(tu_path("%s/%s-a", ru_dir, label));
    const char *b = strdup(tu_path("%s/%s-b", ru_dir, label));
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
