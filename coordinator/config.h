/* config.h: a run's configuration: YAML file, command-line overrides,
 * defaults, validation.
 *
 * Keys are dotted paths ("optim.lr"); in YAML they are nested mappings
 *     optim:
 *       lr: 1e-4
 * or written flat ("optim.lr: 1e-4"); on the command line they are
 * `key=value` overrides applied after the file. Every key lives in one
 * table in config.c (name, type, default, help), which is also what
 * `plumb train --help-config` prints and what configs/README.md documents.
 * Unknown keys, values of the wrong type, out-of-range numbers and unknown
 * enum names are errors naming the key and, for files, the line.
 *
 * Some defaults depend on the algorithm (group_size, kl_coef, kl_estimator):
 * the table holds "auto" (-1) and runcfg_validate resolves it. */
#ifndef PLUMB_RUN_CONFIG_H
#define PLUMB_RUN_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define CFG_PATH 4096
#define CFG_STR 256

#include "algo/algo.h"

/* algo.name: the AlgoName of algo/algo.h; validation accepts those the
 * coordinator drives (coordinator/algos.h). Use algo_name_parse and
 * algo_name_str. */
typedef AlgoName Algo;

/* algo.name before it is set (runcfg_defaults); runcfg_validate refuses it. */
#define RUNCFG_ALGO_UNSET ((Algo)-1)

typedef struct RunConfig {
    /* run */
    char run_dir[CFG_PATH];      /* run.dir: metrics, checkpoints, exports      */
    uint64_t seed;               /* run.seed (1)                                */
    int steps;                   /* run.steps: coordinator steps (100)          */
    int log_every;               /* run.log_every: progress line period (1)     */

    /* algo */
    Algo algo;                   /* algo.name (required)                        */
    int group_size;              /* algo.group_size: samples per prompt (auto:
                                    8 for grpo, 1 for ppo)                      */
    char advantage[CFG_STR];     /* algo.advantage: group|none|rloo|batch|reinforce_pp */
    float clip_low, clip_high;   /* algo.clip_low, algo.clip_high (0.2)         */
    float dual_clip;             /* algo.dual_clip (0: off)                     */
    char loss_agg[CFG_STR];      /* algo.loss_agg (token_mean)                  */
    float kl_coef;               /* algo.kl_coef (auto: 0.04 grpo, 0.05 ppo)    */
    char kl_estimator[CFG_STR];  /* algo.kl_estimator (auto: k3 grpo, k1 ppo)   */
    char ratio_level[CFG_STR];   /* algo.ratio_level (token; sequence: GSPO)    */
    int overlong_buffer;         /* algo.overlong_buffer (0: off; DAPO)         */
    float overlong_penalty;      /* algo.overlong_penalty (1)                   */
    int filter_groups;           /* algo.filter_groups (false; DAPO)            */
    int filter_max_rounds;       /* algo.filter_max_rounds (10)                 */
    int max_staleness;           /* algo.max_staleness (0: synchronous)         */
    float entropy_coef;          /* algo.entropy_coef (0)                       */
    float gamma, lambda;         /* algo.gamma (1), algo.lambda (0.95)          */
    float value_clip;            /* algo.value_clip (0.2)                       */
    float kl_target, kl_horizon; /* algo.kl_target (0: fixed), algo.kl_horizon (10000) */
    float reward_clip;           /* algo.reward_clip (10)                       */
    int whiten_advantages;       /* algo.whiten_advantages (true, ppo)          */
    float beta;                  /* algo.beta (0.1, dpo)                        */
    char loss_type[CFG_STR];     /* algo.loss_type: sigmoid|ipo|hinge           */
    float label_smoothing;       /* algo.label_smoothing (0, dpo and simpo)     */
    float simpo_gamma;           /* algo.simpo_gamma (0.5): SimPO's target margin */
    float desirable_weight;      /* algo.desirable_weight (1, kto)              */
    float undesirable_weight;    /* algo.undesirable_weight (1, kto)            */
    float orpo_lambda;           /* algo.orpo_lambda (0.1)                      */
    float center_coef;           /* algo.center_coef (0, rm)                    */

    /* model */
    char model_path[CFG_PATH];   /* model.path: HF folder or llama2.c .bin; empty:
                                    a random model of model.init.* is made       */
    char tokenizer[CFG_PATH];    /* model.tokenizer: folder with tokenizer.json
                                    (default: model.path's folder)              */
    int init_dim, init_hidden, init_layers, init_heads, init_kv_heads, init_max_seq;
                                 /* model.init.{dim,hidden,layers,heads,kv_heads,max_seq} */
    float init_rope_theta;       /* model.init.rope_theta (10000)               */
    float init_std;              /* model.init.std (0.02)                       */

    /* adapters and roles */
    int lora_rank;               /* lora.rank (8; 0: no adapter)                */
    float lora_alpha;            /* lora.alpha (16)                             */
    char lora_targets[CFG_STR];  /* lora.targets ("q,k,v,o,gate,up,down")       */
    int full_finetune;           /* actor.full_finetune: train all base weights  */
    float critic_lr;             /* critic.lr (0: optim.lr)                     */
    char reward_type[CFG_STR];   /* reward.type: exact_match|numeric_match|regex|
                                    length|model|http|exec                      */
    char reward_arg[CFG_STR];    /* reward.arg: the rule's argument             */
    char reward_model[CFG_PATH]; /* reward.model: an rm run's checkpoint folder  */
    char reward_url[CFG_PATH];   /* reward.url (http)                           */
    char reward_command[CFG_PATH]; /* reward.command (exec)                     */
    float reward_timeout_s;      /* reward.timeout_s (30)                       */
    int reward_retries;          /* reward.retries (3)                          */
    int reward_backoff_ms;       /* reward.backoff_ms (500)                     */
    int reward_concurrency;      /* reward.concurrency (4)                      */
    int reward_batch_size;       /* reward.batch_size (64)                      */
    char critic_model[CFG_PATH]; /* critic.model: the critic's own base          */
    char reference_model[CFG_PATH]; /* reference.model: the reference's own base */
    int reward_full_finetune;    /* reward.full_finetune: rm trains all weights  */

    /* data */
    char train_path[CFG_PATH];   /* data.train: JSONL, or redis://... (a stream) */
    char data_stream[CFG_STR];   /* data.stream: the stream of data.train redis:// */
    char data_group[CFG_STR];    /* data.group (the run dir's name)             */
    int follow;                  /* data.follow: train as records arrive (false) */
    int shuffle_window;          /* data.shuffle_window (0: see configs/README) */
    char eval_path[CFG_PATH];    /* data.eval: prompts with answers             */
    char eval_pref_path[CFG_PATH]; /* data.eval_pref: held-out preference pairs */
    int max_prompt_len;          /* data.max_prompt_len (0: no limit)           */
    int max_response_len;        /* data.max_response_len (0: no limit)         */
    int shuffle;                 /* data.shuffle (true)                         */
    char chat[CFG_STR];          /* data.chat: a chat format, or auto           */
    char chat_date[CFG_STR];     /* data.chat_date: llama31's Today Date ("")   */

    /* batches */
    int batch_size;              /* train.batch_size: prompts, pairs or sequences (16) */
    int epochs;                  /* train.epochs over one rollout batch (1)     */
    int train_replicas;          /* train.replicas (0: every actor worker)      */
    int minibatches;             /* train.minibatches per batch (1)             */
    int micro_batch;             /* train.micro_batch: sequences per forward (0: all) */

    /* optimizer */
    float lr;                    /* optim.lr (1e-4)                             */
    float weight_decay;          /* optim.weight_decay (0)                      */
    float grad_clip;             /* optim.grad_clip (1.0; 0: off)               */
    char schedule[CFG_STR];      /* optim.schedule: constant|linear|cosine      */
    int warmup_steps;            /* optim.warmup_steps (0)                      */
    float min_lr_ratio;          /* optim.min_lr_ratio (0)                      */
    float beta1, beta2, eps;     /* optim.beta1 (0.9), optim.beta2 (0.999), optim.eps (1e-8) */

    /* rollout */
    float temperature;           /* rollout.temperature (1.0)                   */
    int top_k;                   /* rollout.top_k (0: off)                      */
    float top_p;                 /* rollout.top_p (1.0)                         */
    int max_new_tokens;          /* rollout.max_new_tokens (16)                 */

    /* eval */
    int eval_every;              /* eval.every (0: at the start and the end only) */
    int eval_n;                  /* eval.n: examples (0: all)                   */
    int eval_samples;            /* eval.samples: generations kept per eval     */
    int eval_max_new_tokens;     /* eval.max_new_tokens (0: rollout's)          */

    /* checkpoints */
    int save_every;              /* checkpoint.every (0: at the end only)        */
    int keep;                    /* checkpoint.keep: newest kept (0: all)        */

    /* metrics */
    char redis_url[CFG_PATH];    /* metrics.redis: redis://[:pass@]host:port[/db] */
    char redis_stream[CFG_STR];  /* metrics.stream (plumb:metrics:<run dir name>) */

    /* transport */
    char endpoint[CFG_PATH];     /* transport.endpoint (tcp://127.0.0.1:*)       */
    char secret_key[CFG_PATH];   /* transport.secret_key: coordinator .key (CURVE) */
    char authorized_keys[CFG_PATH]; /* transport.authorized_keys: worker keys   */
    char client_key[CFG_PATH];   /* transport.client_key: .key the launched workers use */
    int max_message_mb;          /* transport.max_message_mb (256)              */
    int heartbeat_ms;            /* transport.heartbeat_ms (500)                */
    int dead_after_ms;           /* transport.dead_after_ms (3000)              */
    int request_timeout_s;       /* transport.request_timeout_s (1800)          */
    int startup_timeout_s;       /* transport.startup_timeout_s (60)            */
    int min_workers;             /* transport.min_workers (0)                   */

    /* launch (plumb train) */
    char workers[CFG_STR];       /* launch.workers: "auto" (one process per role),
                                    "colocated", or processes separated by spaces,
                                    roles of a process by commas, each on GPUs
                                    after an @: "actor@0-5 critic,reward@6-7"
                                    (coordinator/placement.h)                  */
    int threads;                 /* launch.threads per worker (0: cores / workers) */
    int max_restarts;            /* launch.max_restarts: a dead worker restarted (3) */
    int keep_state;              /* launch.keep_state: trained roles' state after each step */
    char device[CFG_STR];        /* launch.device (cpu)                         */
    char devices[CFG_STR];       /* launch.devices: GPUs of this host ("")      */
} RunConfig;

/* Fills every key's default: algo.name RUNCFG_ALGO_UNSET, the "auto" keys
 * -1 (algo.group_size, algo.kl_coef) or "auto" (algo.kl_estimator). */
void runcfg_defaults(RunConfig *c);

/* Reads a YAML file into c (on top of what c holds). Errors name the file,
 * line and key ("x.yaml:12: unknown key 'optim.lrr' (did you mean
 * 'optim.lr'?)"): unknown key, bad value, a key given twice, a sequence,
 * mapping or alias where a scalar belongs, malformed YAML. On error c is
 * unchanged. */
int runcfg_load(RunConfig *c, const char *path);

/* Applies one "key=value" override (the key dotted; the value is taken as
 * written, without YAML quoting). Errors quote the override ("override
 * 'optim.lr=x': 'x' is not a number"); on error c is unchanged. */
int runcfg_set(RunConfig *c, const char *assignment);

/* Resolves "auto" defaults (algo.group_size, algo.kl_coef,
 * algo.kl_estimator, and an empty metrics.stream to plumb:metrics:<run dir
 * name>) and checks the whole config: required keys for the algorithm
 * (algo.name, data.train, model.path or model.init), enum names, ranges,
 * optim.warmup_steps < total optimizer steps for linear/cosine. Calling it
 * again on its result changes nothing. On error returns PL_EINVAL,
 * PL_ERANGE or (simpo, kto) PL_ENOTSUP with a message naming the key. */
int runcfg_validate(RunConfig *c);

/* Writes c as flat YAML ("key: value" per line, every key, under a header
 * comment), which runcfg_load reads back to the same config. Strings are
 * double-quoted; metrics.redis is written as it is, password included. */
int runcfg_write(const RunConfig *c, FILE *f);

/* Prints every key with its type, default and help (plumb train --help-config). */
void runcfg_help(FILE *f);

/* Total optimizer steps of the run (steps * epochs * minibatches). */
long runcfg_total_optimizer_steps(const RunConfig *c);

/* The table of keys, for tools and for the test that keeps
 * configs/README.md complete: runcfg_key_name(i) for 0 <= i < count is
 * the dotted name ("optim.lr"); NULL outside that range. */
int runcfg_key_count(void);
const char *runcfg_key_name(int i);

#endif
