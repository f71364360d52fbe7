/* test_config.c: the run configuration (coordinator/config.h).
 *
 * Proves: the defaults are those documented; nested and flat YAML and
 * key=value overrides fill the same fields, with every accepted spelling of
 * booleans and floats; each kind of error (unknown key, bad value, out of
 * range, sequence, alias, duplicate, malformed YAML, over-long string) fails
 * with a message naming the file, line and key, leaving the config
 * unchanged; runcfg_validate resolves the algorithm-dependent defaults and
 * rejects inconsistent configs; runcfg_write output loads back to the same
 * config; and runcfg_help and configs/README.md mention every key. */
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "common/err.h"
#include "coordinator/algos.h"
#include "coordinator/config.h"

/* ---------------------------------------------------------------- helpers */

/* Writes text to a scratch YAML file and returns its path. */
static const char *yaml_file(const char *name, const char *text) {
    const char *p = tu_path("%s/%s", tu_tmp_dir(), name);
    if (tu_write_file(p, text, strlen(text)) != 0) fail_msg("cannot write %s", p);
    return p;
}

/* The error message contains every one of the NULL-terminated strings. */
static void expect_msg(int rc, ...) {
    if (rc >= 0) fail_msg("expected an error, got %d", rc);
    va_list ap;
    va_start(ap, rc);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(pl_error(), s)) fail_msg("message \"%s\" lacks \"%s\"", pl_error(), s);
    va_end(ap);
}

/* A config on the heap (RunConfig is ~50 KB) with its defaults. */
static RunConfig *new_cfg(void) {
    RunConfig *c = malloc(sizeof *c);
    assert_non_null(c);
    runcfg_defaults(c);
    return c;
}

/* runcfg_write into a malloc'ed string. */
static char *written(const RunConfig *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(runcfg_write(c, f), 0);
    fclose(f);
    return buf;
}

/* A config that validates: grpo on a train file. */
static RunConfig *valid_cfg(Algo a) {
    RunConfig *c = new_cfg();
    c->algo = a;
    strcpy(c->train_path, "data/train.jsonl");
    return c;
}

/* -------------------------------------------------------------- defaults */

/* Every default is the one the header and configs/README.md document. */
static void test_defaults(void **state) {
    RunConfig *c = new_cfg();
    assert_string_equal(c->run_dir, "runs/run");
    assert_true(c->seed == 1);
    assert_int_equal(c->steps, 100);
    assert_int_equal(c->log_every, 1);
    assert_int_equal(c->algo, RUNCFG_ALGO_UNSET); /* required: no default */
    assert_int_equal(c->group_size, -1);
    assert_string_equal(c->advantage, "group");
    assert_true(c->clip_low == 0.2f && c->clip_high == 0.2f && c->dual_clip == 0.0f);
    assert_string_equal(c->loss_agg, "token_mean");
    assert_true(c->kl_coef < 0);
    assert_string_equal(c->kl_estimator, "auto");
    assert_string_equal(c->ratio_level, "token");
    assert_true(c->entropy_coef == 0.0f && c->gamma == 1.0f && c->lambda == 0.95f);
    assert_true(c->value_clip == 0.2f && c->kl_target == 0.0f && c->kl_horizon == 10000.0f);
    assert_true(c->reward_clip == 10.0f && c->whiten_advantages == 1);
    assert_true(c->beta < 0 && c->label_smoothing == 0.0f && c->orpo_lambda == 0.1f);
    assert_true(c->simpo_gamma == 0.5f && c->desirable_weight == 1.0f && c->undesirable_weight == 1.0f);
    assert_string_equal(c->loss_type, "sigmoid");
    assert_true(c->center_coef == 0.0f);
    assert_string_equal(c->model_path, "");
    assert_string_equal(c->tokenizer, "");
    assert_int_equal(c->init_dim, 64);
    assert_int_equal(c->init_hidden, 176);
    assert_int_equal(c->init_layers, 2);
    assert_int_equal(c->init_heads, 4);
    assert_int_equal(c->init_kv_heads, 2);
    assert_int_equal(c->init_max_seq, 64);
    assert_true(c->init_rope_theta == 10000.0f && c->init_std == 0.02f);
    assert_int_equal(c->lora_rank, 8);
    assert_true(c->lora_alpha == 16.0f);
    assert_string_equal(c->lora_targets, "q,k,v,o,gate,up,down");
    assert_int_equal(c->full_finetune, 0);
    assert_true(c->critic_lr == 0.0f);
    assert_string_equal(c->reward_type, "exact_match");
    assert_string_equal(c->train_path, "");
    assert_int_equal(c->shuffle, 1);
    assert_int_equal(c->batch_size, 16);
    assert_int_equal(c->epochs, 1);
    assert_int_equal(c->minibatches, 1);
    assert_int_equal(c->micro_batch, 0);
    assert_true(c->lr == 1e-4f && c->weight_decay == 0.0f && c->grad_clip == 1.0f);
    assert_string_equal(c->schedule, "constant");
    assert_int_equal(c->warmup_steps, 0);
    assert_true(c->beta1 == 0.9f && c->beta2 == 0.999f && c->eps == 1e-8f);
    assert_true(c->temperature == 1.0f && c->top_p == 1.0f);
    assert_int_equal(c->top_k, 0);
    assert_int_equal(c->max_new_tokens, 16);
    assert_int_equal(c->eval_every, 0);
    assert_int_equal(c->save_every, 0);
    assert_string_equal(c->redis_url, "");
    assert_string_equal(c->endpoint, "tcp://127.0.0.1:*");
    assert_int_equal(c->max_message_mb, 256);
    assert_int_equal(c->heartbeat_ms, 500);
    assert_int_equal(c->dead_after_ms, 3000);
    assert_int_equal(c->request_timeout_s, 1800);
    assert_int_equal(c->startup_timeout_s, 60);
    assert_string_equal(c->workers, "auto");
    assert_int_equal(c->threads, 0);
    assert_string_equal(c->device, "cpu");
    free(c);
}

/* ------------------------------------------------------------ YAML forms */

/* Nested mappings, flat dotted keys and a mix of both fill the same fields;
 * YAML's float, boolean, quoting and comment forms are read. */
static void test_nested_and_flat(void **state) {
    RunConfig *c = new_cfg();
    const char *p = yaml_file("nested.yaml",
                              "# a run\n"
                              "run:\n"
                              "  dir: runs/nested   # trailing comment\n"
                              "  seed: 18446744073709551615\n"
                              "algo:\n"
                              "  name: grpo\n"
                              "  group_size: 4\n"
                              "  kl_coef: 3.0e-3\n"
                              "  whiten_advantages: off\n"
                              "model:\n"
                              "  init:\n"
                              "    dim: 32\n"
                              "    rope_theta: 5e5\n"
                              "  init.heads: 2\n"
                              "optim:\n"
                              "  lr: 1e-4\n"
                              "  schedule: cosine\n"
                              "data.train: \"data/a b.jsonl\"\n"
                              "data.shuffle: No\n"
                              "reward:\n"
                              "  arg: '#### (\\d+)'\n"
                              "eval:   # every entry commented out\n");
    assert_int_equal(runcfg_load(c, p), 0);
    assert_string_equal(c->run_dir, "runs/nested");
    assert_true(c->seed == UINT64_MAX);
    assert_int_equal(c->algo, ALGO_GRPO);
    assert_int_equal(c->group_size, 4);
    assert_true(c->kl_coef == 3.0e-3f);
    assert_int_equal(c->whiten_advantages, 0);
    assert_int_equal(c->init_dim, 32);
    assert_int_equal(c->init_heads, 2);
    assert_true(c->init_rope_theta == 5e5f);
    assert_true(c->lr == 1e-4f);
    assert_string_equal(c->schedule, "cosine");
    assert_string_equal(c->train_path, "data/a b.jsonl");
    assert_int_equal(c->shuffle, 0);
    assert_string_equal(c->reward_arg, "#### (\\d+)");
    assert_int_equal(c->batch_size, 16); /* untouched keys keep what c held */

    /* loading is on top of what c holds: a second file changes only its keys */
    const char *q = yaml_file("second.yaml", "optim.lr: 2\nmodel.path: ~\n");
    strcpy(c->model_path, "x");
    assert_int_equal(runcfg_load(c, q), 0);
    assert_true(c->lr == 2.0f);
    assert_string_equal(c->model_path, ""); /* YAML null: an empty string */
    assert_string_equal(c->run_dir, "runs/nested");

    /* an empty file (or only comments) changes nothing */
    assert_int_equal(runcfg_load(c, yaml_file("empty.yaml", "# nothing\n")), 0);
    assert_int_equal(runcfg_load(c, yaml_file("empty2.yaml", "")), 0);
    assert_true(c->lr == 2.0f);
    free(c);
}

/* Every boolean spelling, in files and overrides. */
static void test_bools(void **state) {
    RunConfig *c = new_cfg();
    const char *yes[] = {"true", "yes", "on", "1", "True", "YES"};
    const char *no[] = {"false", "no", "off", "0", "False", "OFF"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(runcfg_set(c, tu_path("data.shuffle=%s", no[i])), 0);
        assert_int_equal(c->shuffle, 0);
        assert_int_equal(runcfg_set(c, tu_path("data.shuffle=%s", yes[i])), 0);
        assert_int_equal(c->shuffle, 1);
    }
    expect_msg(runcfg_set(c, "data.shuffle=maybe"), "data.shuffle=maybe", "'maybe'",
               "not a boolean", NULL);
    free(c);
}

/* ------------------------------------------------------------- overrides */

/* Overrides set the same fields as the file, after it; numbers are parsed
 * as YAML would; auto can be written back. */
static void test_overrides(void **state) {
    RunConfig *c = new_cfg();
    assert_int_equal(runcfg_load(c, yaml_file("ov.yaml", "optim:\n  lr: 1e-3\nrun.steps: 5\n")), 0);
    assert_int_equal(runcfg_set(c, "optim.lr=3.0e-3"), 0);
    assert_true(c->lr == 3.0e-3f);
    assert_int_equal(c->steps, 5);
    assert_int_equal(runcfg_set(c, "algo.name=ppo"), 0);
    assert_int_equal(c->algo, ALGO_PPO);
    assert_int_equal(runcfg_set(c, " model.init.dim = 128"), 0);
    assert_int_equal(c->init_dim, 128);
    assert_int_equal(runcfg_set(c, "reward.arg=a=b"), 0); /* only the first '=' splits */
    assert_string_equal(c->reward_arg, "a=b");
    assert_int_equal(runcfg_set(c, "model.path="), 0);
    assert_string_equal(c->model_path, "");
    assert_int_equal(runcfg_set(c, "algo.group_size=3"), 0);
    assert_int_equal(runcfg_set(c, "algo.group_size=auto"), 0);
    assert_int_equal(c->group_size, -1);
    assert_int_equal(runcfg_set(c, "algo.kl_coef=0"), 0);
    assert_true(c->kl_coef == 0.0f);
    assert_int_equal(runcfg_set(c, "algo.kl_coef=auto"), 0);
    assert_true(c->kl_coef < 0);
    assert_int_equal(runcfg_set(c, "run.seed=42"), 0);
    assert_true(c->seed == 42);
    free(c);
}

/* Each override error quotes the override, and c is unchanged. */
static void test_override_errors(void **state) {
    RunConfig *c = new_cfg(), *before = new_cfg();
    expect_msg(runcfg_set(c, "optim.lrr=3"), "override 'optim.lrr=3': unknown key",
               "did you mean 'optim.lr'", NULL);
    expect_msg(runcfg_set(c, "lr=3"), "unknown key (did you mean 'critic.lr' or 'optim.lr'?)",
               NULL);
    expect_msg(runcfg_set(c, "optim.lr"), "override 'optim.lr'", "key=value", NULL);
    expect_msg(runcfg_set(c, "optim.lr=fast"), "optim.lr=fast", "'fast' is not a number", NULL);
    expect_msg(runcfg_set(c, "optim.lr=nan"), "not a number", NULL);
    expect_msg(runcfg_set(c, "optim.lr=inf"), "not a number", NULL);
    expect_msg(runcfg_set(c, "optim.lr=1e60"), "out of range", NULL);
    expect_msg(runcfg_set(c, "optim.lr=0"), "optim.lr=0", "> 0", NULL);
    expect_msg(runcfg_set(c, "run.steps=1.5"), "run.steps=1.5", "not an integer", NULL);
    expect_msg(runcfg_set(c, "run.steps=99999999999"), "out of range", NULL);
    expect_msg(runcfg_set(c, "run.steps=0"), "run.steps=0", ">= 1", NULL);
    expect_msg(runcfg_set(c, "run.seed=-1"), "run.seed=-1", "not a non-negative integer", NULL);
    expect_msg(runcfg_set(c, "algo.gamma=1.5"), "algo.gamma=1.5", "in [0, 1]", NULL);
    expect_msg(runcfg_set(c, "rollout.top_p=0"), "in (0, 1]", NULL);
    expect_msg(runcfg_set(c, "algo.group_size=-2"), ">= 1", NULL);
    expect_msg(runcfg_set(c, "algo.name=GRPO"), "'GRPO' is not one of sft|rm|dpo|orpo|simpo|kto|grpo|ppo",
               NULL);
    expect_msg(runcfg_set(c, "optim.schedule=step"), "'step' is not one of constant|linear|cosine",
               NULL);
    expect_msg(runcfg_set(c, "model.init.std=auto"), "'auto' is not a number", NULL);
    char big[CFG_STR + 32];
    int n = snprintf(big, sizeof big, "reward.arg=");
    memset(big + n, 'x', CFG_STR);
    big[n + CFG_STR] = '\0';
    expect_msg(runcfg_set(c, big), "256 bytes, longer than the 255 allowed", NULL);
    /* the longest string that fits is accepted */
    big[n + CFG_STR - 1] = '\0';
    assert_int_equal(runcfg_set(c, big), 0);
    assert_int_equal((int)strlen(c->reward_arg), CFG_STR - 1);
    assert_int_equal(runcfg_set(c, "reward.arg="), 0);
    assert_int_equal(memcmp(c, before, sizeof *c), 0);
    free(c), free(before);
}

/* ------------------------------------------------------------ file errors */

typedef struct {
    const char *yaml;
    const char *want[4]; /* substrings of the message, NULL-terminated */
} BadFile;

/* Each kind of error names the file, the line and the key, and leaves the
 * config as it was. */
static void test_file_errors(void **state) {
    const BadFile cases[] = {
        {"run:\n  steps: 3\noptim:\n  lrr: 1e-4\n", {":4: unknown key 'optim.lrr'", "did you mean 'optim.lr'"}},
        {"optim.lrr: 3\n", {":1: unknown key 'optim.lrr'", "did you mean 'optim.lr'"}},
        {"bogus:\n  x: 1\n", {":1: unknown key 'bogus'"}},
        {"optim:\n  lr: fast\n", {":2: optim.lr: 'fast' is not a number"}},
        {"run:\n  steps: 2.5\n", {":2: run.steps: '2.5' is not an integer"}},
        {"run:\n  steps: 3000000000\n", {":2: run.steps:", "out of range"}},
        {"algo:\n  gamma: 2\n", {":2: algo.gamma: 2 must be in [0, 1]"}},
        {"algo.name: grpo2\n", {":1: algo.name: 'grpo2' is not one of"}},
        {"lora:\n  targets: [q, k]\n", {":2: lora.targets: a sequence where a value belongs"}},
        {"lora:\n  targets:\n    - q\n", {":2: lora.targets: a sequence"}},
        {"optim:\n  lr: {a: 1}\n", {":2: optim.lr: a mapping where a value belongs"}},
        {"run.steps: &a 3\noptim:\n  lr: *a\n", {":3: optim.lr: aliases are not supported"}},
        {"optim:\n  lr: 1\n  lr: 2\n", {":3: duplicate key 'optim.lr' (first set on line 2)"}},
        {"optim:\n  lr: 1\noptim.lr: 2\n", {":3: duplicate key 'optim.lr'"}},
        {"optim:\n  lr: 1\n bad indent: 2\n", {":3:", "malformed YAML"}},
        {"optim:\n\tlr: 1\n", {":2: malformed YAML"}},
        {"run.dir: \"unterminated\n", {"malformed YAML"}},
        {"optim: 3\n", {":1: 'optim' is a section"}},
        {"- a\n- b\n", {":1: the top level must be a mapping"}},
        {"run.steps: 1\n---\nrun.steps: 2\n", {":2:", "second YAML document"}},
        {"data.shuffle: perhaps\n", {":1: data.shuffle: 'perhaps' is not a boolean"}},
        {"run.steps:\n", {":1: run.steps: a value is required"}},
    };
    RunConfig *c = new_cfg(), *before = new_cfg();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = yaml_file(tu_path("bad%zu.yaml", i), cases[i].yaml);
        pl_clear_error();
        int rc = runcfg_load(c, p);
        if (rc >= 0) fail_msg("case %zu: %s loaded", i, cases[i].yaml);
        if (!strstr(pl_error(), p)) fail_msg("case %zu: \"%s\" lacks the path", i, pl_error());
        for (int k = 0; k < 4 && cases[i].want[k]; k++)
            if (!strstr(pl_error(), cases[i].want[k]))
                fail_msg("case %zu: \"%s\" lacks \"%s\"", i, pl_error(), cases[i].want[k]);
        if (memcmp(c, before, sizeof *c)) fail_msg("case %zu changed the config", i);
    }

    /* a string longer than its buffer */
    char *yaml = malloc(CFG_PATH + 64);
    int n = sprintf(yaml, "run:\n  dir: ");
    memset(yaml + n, 'd', CFG_PATH);
    strcpy(yaml + n + CFG_PATH, "\n");
    expect_msg(runcfg_load(c, yaml_file("long.yaml", yaml)), ":2: run.dir:", "4096 bytes", NULL);
    free(yaml);

    expect_msg(runcfg_load(c, tu_path("%s/missing.yaml", tu_tmp_dir())), "missing.yaml", NULL);
    assert_int_equal(memcmp(c, before, sizeof *c), 0);
    free(c), free(before);
}

/* ------------------------------------------------------------ validation */

/* The algorithm-dependent defaults resolve per algorithm; explicit values
 * are kept; validating again changes nothing. */
static void test_auto_resolution(void **state) {
    RunConfig *c = valid_cfg(ALGO_GRPO);
    assert_int_equal(runcfg_validate(c), 0);
    assert_int_equal(c->group_size, 8);
    assert_true(c->kl_coef == 0.04f);
    assert_string_equal(c->kl_estimator, "k3");
    assert_string_equal(c->redis_stream, "plumb:metrics:run");
    RunConfig *again = malloc(sizeof *again);
    *again = *c;
    assert_int_equal(runcfg_validate(again), 0);
    assert_int_equal(memcmp(c, again, sizeof *c), 0);
    free(c);

    c = valid_cfg(ALGO_PPO);
    strcpy(c->run_dir, "runs/exp7//");
    assert_int_equal(runcfg_validate(c), 0);
    assert_int_equal(c->group_size, 1);
    assert_true(c->kl_coef == 0.05f);
    assert_string_equal(c->kl_estimator, "k1");
    assert_string_equal(c->redis_stream, "plumb:metrics:exp7");
    free(c);

    const Algo others[] = {ALGO_SFT, ALGO_RM, ALGO_DPO, ALGO_ORPO, ALGO_SIMPO, ALGO_KTO};
    for (int i = 0; i < 6; i++) {
        c = valid_cfg(others[i]);
        assert_int_equal(runcfg_validate(c), 0);
        assert_int_equal(c->group_size, 1);
        assert_true(c->kl_coef == 0.0f);
        /* beta: SimPO's scale of mean log-probs, DPO's and KTO's of sums */
        assert_true(c->beta == (others[i] == ALGO_SIMPO ? 2.0f : 0.1f));
        free(c);
    }

    c = valid_cfg(ALGO_GRPO);
    assert_int_equal(runcfg_set(c, "algo.group_size=4"), 0);
    assert_int_equal(runcfg_set(c, "algo.kl_coef=0"), 0);
    assert_int_equal(runcfg_set(c, "algo.kl_estimator=k2"), 0);
    assert_int_equal(runcfg_set(c, "algo.ratio_level=sequence"), 0);
    assert_int_equal(runcfg_set(c, "metrics.stream=mine"), 0);
    assert_int_equal(runcfg_validate(c), 0);
    assert_int_equal(c->group_size, 4);
    assert_true(c->kl_coef == 0.0f);
    assert_string_equal(c->kl_estimator, "k2");
    assert_string_equal(c->ratio_level, "sequence");
    assert_string_equal(c->redis_stream, "mine");
    expect_msg(runcfg_set(c, "algo.ratio_level=seq"), "'seq' is not one of token|sequence", NULL);
    free(c), free(again);
}

/* Each inconsistency fails with a message naming the keys involved. */
static void test_validation_failures(void **state) {
    RunConfig *c = new_cfg();
    strcpy(c->train_path, "t.jsonl");
    expect_msg(runcfg_validate(c), "algo.name is required", NULL);
    free(c);

    typedef struct {
        Algo algo;
        const char *set[3];
        const char *want;
    } Case;
    const Case cases[] = {
        {ALGO_SFT, {"data.train="}, "data.train is required"},
        {ALGO_GRPO, {"algo.group_size=1"}, "algo.group_size (1) must be at least 2 for grpo"},
        {ALGO_GRPO, {"algo.group_size=1", "algo.advantage=rloo"}, "algo.advantage rloo"},
        {ALGO_GRPO, {"train.batch_size=2", "algo.group_size=2", "train.minibatches=5"},
         "train.minibatches (5) must be at most the 4 units"},
        {ALGO_DPO, {"train.batch_size=2", "train.minibatches=3"}, "train.minibatches (3)"},
        {ALGO_KTO, {"train.batch_size=2", "train.minibatches=5"}, "at most the 4 units"},
        {ALGO_SFT, {"model.init.heads=3"}, "model.init.heads (3) must divide model.init.dim (64)"},
        {ALGO_SFT, {"model.init.kv_heads=3"}, "model.init.kv_heads (3) must divide"},
        {ALGO_SFT, {"model.init.dim=12", "model.init.heads=4", "model.init.kv_heads=1"},
         "must be even for RoPE"},
        {ALGO_SFT, {"optim.schedule=cosine", "optim.warmup_steps=300", "train.epochs=3"},
         "optim.warmup_steps (300) must be below the run's 300 optimizer steps"},
        {ALGO_SFT, {"optim.schedule=linear", "optim.warmup_steps=100"},
         "optim.warmup_steps (100) must be below the run's 100 optimizer steps"},
        {ALGO_PPO, {"reward.type=model"}, "reward.type model needs reward.model"},
        {ALGO_GRPO, {"reward.type=model"}, "reward.model"},
        {ALGO_GRPO, {"reward.type=http"}, "reward.type http needs reward.url, an http:// or https:// URL"},
        {ALGO_PPO, {"reward.type=http", "reward.url=localhost:8000"}, "URL, not localhost:8000"},
        {ALGO_GRPO, {"reward.type=exec"}, "reward.type exec needs reward.command"},
        {ALGO_SFT, {"transport.heartbeat_ms=3000"},
         "transport.heartbeat_ms (3000) must be below transport.dead_after_ms (3000)"},
        {ALGO_SFT, {"lora.targets=q,wq"}, "lora.targets"},
        {ALGO_DPO, {"algo.ratio_level=sequence"}, "algo.ratio_level sequence is for grpo and ppo, not dpo"},
        {ALGO_DPO, {"algo.overlong_buffer=2"}, "algo.overlong_buffer shapes rollout scores: grpo and ppo, not dpo"},
        {ALGO_GRPO, {"algo.overlong_buffer=17"}, "algo.overlong_buffer (17) must be at most rollout.max_new_tokens (16)"},
        {ALGO_PPO, {"algo.filter_groups=true"}, "algo.filter_groups drops groups of equal scores: grpo with algo.group_size >= 2, not ppo"},
        {ALGO_GRPO, {"algo.filter_groups=true", "algo.group_size=1", "algo.advantage=none"}, "not grpo with 1"},
        {ALGO_GRPO, {"algo.filter_groups=true", "algo.advantage=reinforce_pp"}, "not reinforce_pp"},
        {ALGO_GRPO, {"algo.filter_groups=true", "data.train=redis://localhost:6379", "data.stream=s"}, "must be a file, not a Redis stream"},
        {ALGO_DPO, {"algo.max_staleness=1"}, "algo.max_staleness is for grpo and ppo, not dpo"},
        {ALGO_GRPO, {"algo.max_staleness=2", "algo.filter_groups=true"}, "do not go together"},
        {ALGO_PPO, {"algo.max_staleness=1", "data.train=redis://localhost:6379", "data.stream=s"}, "records of steps ahead"},
        {ALGO_SFT, {"algo.dual_clip=0.5"}, "algo.dual_clip (0.5) must be 0 (off) or above 1"},
        {ALGO_SFT, {"data.chat=chatml3"}, "data.chat"},
        {ALGO_SFT, {"data.chat=llama3", "data.chat_date=01 Dec 2026"}, "data.chat_date is the date of llama31's system header, and data.chat is llama3"},
        {ALGO_SFT, {"launch.device=gpu"}, "launch.device 'gpu'"},
        {ALGO_SFT, {"launch.device=cuda:x"}, "launch.device 'cuda:x'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = valid_cfg(cases[i].algo);
        for (int k = 0; k < 3 && cases[i].set[k]; k++)
            if (runcfg_set(c, cases[i].set[k]) < 0)
                fail_msg("case %zu: %s: %s", i, cases[i].set[k], pl_error());
        pl_clear_error();
        if (runcfg_validate(c) >= 0) fail_msg("case %zu validated", i);
        if (!strstr(pl_error(), cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, pl_error(), cases[i].want);
        free(c);
    }

    /* ranges are checked again for values set in code */
    c = valid_cfg(ALGO_SFT);
    c->steps = 0;
    expect_msg(runcfg_validate(c), "run.steps (0) must be >= 1", NULL);
    c->steps = 1, c->batch_size = 0;
    expect_msg(runcfg_validate(c), "train.batch_size (0)", NULL);
    c->batch_size = 1, c->top_p = 0;
    expect_msg(runcfg_validate(c), "rollout.top_p (0) must be in (0, 1]", NULL);
    c->top_p = 1, c->temperature = -1;
    expect_msg(runcfg_validate(c), "rollout.temperature (-1) must be >= 0", NULL);
    c->temperature = 0, c->lambda = 1.5f;
    expect_msg(runcfg_validate(c), "algo.lambda (1.5)", NULL);
    c->lambda = 1, c->lr = NAN;
    expect_msg(runcfg_validate(c), "optim.lr", NULL);
    c->lr = 1e-3f;
    strcpy(c->schedule, "exp");
    expect_msg(runcfg_validate(c), "optim.schedule: 'exp' is not one of", NULL);
    strcpy(c->schedule, "constant");
    assert_int_equal(runcfg_validate(c), 0);
    free(c);

    /* accepted: eval.every without data.eval (eval is skipped), a model path
     * with an unusable model.init, cuda:N, a constant schedule with warmup,
     * dynamic sampling with an overlong buffer of all the new tokens */
    c = valid_cfg(ALGO_GRPO);
    assert_int_equal(runcfg_set(c, "eval.every=10"), 0);
    assert_int_equal(runcfg_set(c, "model.path=models/m"), 0);
    assert_int_equal(runcfg_set(c, "model.init.heads=3"), 0);
    assert_int_equal(runcfg_set(c, "launch.device=cuda:1"), 0);
    assert_int_equal(runcfg_set(c, "optim.warmup_steps=1000"), 0);
    assert_int_equal(runcfg_set(c, "reward.type=model"), 0);
    assert_int_equal(runcfg_set(c, "reward.model=runs/rm/ckpt"), 0);
    assert_int_equal(runcfg_set(c, "algo.filter_groups=true"), 0);
    assert_int_equal(runcfg_set(c, "algo.overlong_buffer=16"), 0);
    if (runcfg_validate(c) < 0) fail_msg("%s", pl_error());
    assert_int_equal(runcfg_total_optimizer_steps(c), 100);
    c->epochs = 2, c->minibatches = 4;
    assert_int_equal(runcfg_total_optimizer_steps(c), 800);
    free(c);
}

/* ---------------------------------------------------------- round trips */

/* Writes c, loads the text into fresh defaults, writes again: the two texts
 * are identical, so every field survived. Returns the first text. */
static char *round_trip(const RunConfig *c) {
    char *a = written(c);
    const char *p = yaml_file("rt.yaml", a);
    RunConfig *d = new_cfg();
    if (runcfg_load(d, p) < 0) fail_msg("reloading:\n%s\n%s", a, pl_error());
    char *b = written(d);
    if (strcmp(a, b)) fail_msg("round trip differs:\n%s\n---\n%s", a, b);
    free(b);
    free(d);
    return a;
}

/* Defaults, every non-default kind of value, awkward strings and resolved
 * autos survive runcfg_write + runcfg_load. */
static void test_write_round_trip(void **state) {
    RunConfig *c = new_cfg();
    char *text = round_trip(c); /* algo unset, autos unresolved */
    assert_non_null(strstr(text, "\nalgo.name: \"\"\n"));
    assert_non_null(strstr(text, "\nalgo.group_size: auto\n"));
    assert_non_null(strstr(text, "\noptim.lr: 0.0001\n"));
    assert_non_null(strstr(text, "\nrun.dir: \"runs/run\"\n"));
    assert_int_equal(text[0], '#');
    for (int i = 0; i < runcfg_key_count(); i++)
        if (!strstr(text, tu_path("\n%s: ", runcfg_key_name(i))))
            fail_msg("%s is not written", runcfg_key_name(i));
    free(text);

    const char *sets[] = {
        "algo.name=dpo", "run.seed=18446744073709551615", "optim.lr=3.3333e-7",
        "algo.kl_coef=0.123456789", "model.init.std=1e-30", "data.shuffle=off",
        "reward.arg=say \"hi\"\\ then\ttab: #not a comment", "run.dir=runs/ünïcode dir",
        "metrics.redis=redis://:p@ss@localhost:6379/2", "launch.workers=actor,reference reward",
        "algo.loss_type=ipo", "train.micro_batch=7", "optim.eps=1e-08",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (runcfg_set(c, sets[i]) < 0) fail_msg("%s: %s", sets[i], pl_error());
    strcpy(c->reward_arg, "line1\nline2\r\x01\x7f end");
    strcpy(c->train_path, "t.jsonl");
    text = round_trip(c);
    free(text);

    /* the reloaded struct has exactly the values that were set */
    RunConfig *d = new_cfg();
    text = written(c);
    assert_int_equal(runcfg_load(d, yaml_file("rt2.yaml", text)), 0);
    assert_string_equal(d->reward_arg, c->reward_arg);
    assert_string_equal(d->run_dir, "runs/ünïcode dir");
    assert_true(d->lr == c->lr && d->kl_coef == c->kl_coef && d->init_std == c->init_std);
    assert_true(d->seed == UINT64_MAX);
    assert_int_equal(d->algo, ALGO_DPO);
    free(text);

    /* a validated config round-trips with its resolved values */
    assert_int_equal(runcfg_validate(c), 0);
    text = round_trip(c);
    assert_non_null(strstr(text, "\nalgo.group_size: 1\n"));
    assert_non_null(strstr(text, "\nalgo.kl_estimator: k3\n"));
    free(text);
    free(c), free(d);
}

/* ------------------------------------------------------- documentation */

/* algo.name's choices are exactly the algorithms coordinator/algos.c has a
 * row for: each name in the help text validates, each other AlgoName is
 * refused as not driven. */
static void test_algos_agree(void **state) {
    char buf[1 << 16];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    runcfg_help(f);
    fclose(f);
    const char *choices = "sft|rm|dpo|orpo|simpo|kto|grpo|ppo";
    assert_non_null(strstr(buf, choices));
    for (int a = 0; a <= ALGO_KTO; a++) {
        const char *name = algo_name_str((AlgoName)a);
        char bar[32];
        snprintf(bar, sizeof bar, "|%s|", name);
        char wrapped[64];
        snprintf(wrapped, sizeof wrapped, "|%s|", choices);
        int listed = strstr(wrapped, bar) != NULL;
        assert_true(listed == (algos_find((AlgoName)a) != NULL));
        RunConfig *c = valid_cfg((AlgoName)a);
        if (listed) assert_int_equal(runcfg_validate(c), 0);
        else expect_msg(runcfg_validate(c), "is not driven by the coordinator", NULL);
        free(c);
    }
}

/* runcfg_help lists every key with its type and default. */
static void test_help_lists_every_key(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    runcfg_help(f);
    fclose(f);
    assert_true(runcfg_key_count() > 80);
    assert_null(runcfg_key_name(runcfg_key_count()));
    assert_null(runcfg_key_name(-1));
    for (int i = 0; i < runcfg_key_count(); i++)
        if (!strstr(buf, tu_path("  %s ", runcfg_key_name(i))))
            fail_msg("help lacks %s", runcfg_key_name(i));
    assert_non_null(strstr(buf, "sft|rm|dpo|orpo|simpo|kto|grpo|ppo"));
    assert_non_null(strstr(buf, "\"runs/run\""));
    free(buf);
}

/* Every config shipped in configs/ loads and passes validation as it is. */
static void test_shipped_configs(void **state) {
    (void)state;
    glob_t g;
    assert_int_equal(glob(tu_path("%s/../../configs/*.yaml", tu_data_dir()), 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 10);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        RunConfig *c = new_cfg();
        if (runcfg_load(c, g.gl_pathv[i]) < 0 || runcfg_validate(c) < 0)
            fail_msg("%s: %s", g.gl_pathv[i], pl_error());
        free(c);
    }
    globfree(&g);
}

/* configs/README.md documents every key (as `key`), so it cannot fall behind
 * the table. */
static void test_readme_documents_every_key(void **state) {
    const char *path = tu_path("%s/../../configs/README.md", tu_data_dir());
    char *doc = tu_read_file(path, NULL);
    if (!doc) fail_msg("cannot read %s", path);
    for (int i = 0; i < runcfg_key_count(); i++)
        if (!strstr(doc, tu_path("`%s`", runcfg_key_name(i))))
            fail_msg("configs/README.md does not document `%s`", runcfg_key_name(i));
    free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_nested_and_flat),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_override_errors),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_auto_resolution),
        cmocka_unit_test(test_validation_failures),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_help_lists_every_key),
        cmocka_unit_test(test_algos_agree),
        cmocka_unit_test(test_readme_documents_every_key),
        cmocka_unit_test(test_shipped_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
