/* runutil.c: the whole-run tests' shared fixtures (runutil.h). */
#define _GNU_SOURCE
#include "runutil.h"

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
