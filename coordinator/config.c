/* config.c: the run configuration.
 *
 * One table (KEYS below) names every key with its type, the RunConfig field
 * it fills, its default as YAML text, its range or allowed names and a line
 * of help. Defaults, YAML loading, overrides, writing, validation of ranges
 * and the help listing all walk that table; only the cross-key checks of
 * runcfg_validate are written out by hand, in config_check.c. The YAML
 * reader is config_yaml.c. */
#include "coordinator/config_impl.h"
#include "model/chat.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


#include "common/err.h"

/* ================================================================= table */

static const char *const TYPE_NAMES[] = {"int", "u64", "float", "bool", "string", "path", "enum",
                                         "enum"};

/* Offset and size of a field, with a compile-time check that its C type is
 * T (a mismatch is a negative array size). Char buffers decay to char *. */
#define FIELD(f, T)                                                                              \
    offsetof(RunConfig, f) + 0 * sizeof(char[_Generic(((RunConfig *)0)->f, T: 1, default: -1)]), \
        sizeof(((RunConfig *)0)->f)

#define INT(k, f, d, r, h) {k, K_INT, FIELD(f, int), d, r, NULL, h}
#define U64(k, f, d, h) {k, K_U64, FIELD(f, uint64_t), d, NULL, NULL, h}
#define FLT(k, f, d, r, h) {k, K_FLOAT, FIELD(f, float), d, r, NULL, h}
#define BOOL(k, f, d, h) {k, K_BOOL, FIELD(f, int), d, NULL, NULL, h}
#define STR(k, f, d, h) {k, K_STR, FIELD(f, char *), d, NULL, NULL, h}
#define PATH(k, f, d, h) {k, K_PATH, FIELD(f, char *), d, NULL, NULL, h}
#define ENUM(k, f, d, ch, h) {k, K_ENUM, FIELD(f, char *), d, NULL, ch, h}


static const Key KEYS[] = {
    /* run */
    PATH("run.dir", run_dir, "runs/run", "folder for metrics, checkpoints and exports"),
    U64("run.seed", seed, "1", "seed of every random stream of the run"),
    INT("run.steps", steps, "100", "[1,)", "coordinator steps (one batch each)"),
    INT("run.log_every", log_every, "1", "[1,)", "print a progress line every N steps"),

    /* algo */
    {"algo.name", K_ALGO, FIELD(algo, Algo), "", NULL, ALGO_CHOICES,
     "training algorithm (required)"},
    INT("algo.group_size", group_size, "auto", "[1,)",
        "samples per prompt (auto: 8 for grpo, 1 for ppo)"),
    ENUM("algo.advantage", advantage, "group", "group|none|rloo|batch|reinforce_pp",
         "grpo advantage: group mean/std, mean only, leave-one-out, batch std, REINFORCE++"),
    FLT("algo.clip_low", clip_low, "0.2", "[0,)", "policy ratio clip below 1 (1 - clip_low)"),
    FLT("algo.clip_high", clip_high, "0.2", "[0,)", "policy ratio clip above 1 (1 + clip_high)"),
    FLT("algo.dual_clip", dual_clip, "0", "[0,)",
        "dual-clip constant c > 1 capping the loss at -c*A for A < 0 (0: off)"),
    ENUM("algo.loss_agg", loss_agg, "token_mean",
         "token_mean|seq_mean_token_mean|seq_mean_token_sum_norm",
         "how per-token losses are averaged over a batch"),
    FLT("algo.kl_coef", kl_coef, "auto", "[0,)",
        "weight of the KL to the reference (auto: 0.04 grpo, 0.05 ppo, 0 otherwise)"),
    ENUM("algo.kl_estimator", kl_estimator, "auto", "auto|k1|k2|k3",
         "KL estimator (auto: k3 grpo, k1 ppo)"),
    ENUM("algo.ratio_level", ratio_level, "token", "token|sequence",
         "grpo, ppo: importance ratio per token, or per sequence (GSPO: the length-normalised "
         "sequence ratio, clipped per sequence)"),
    INT("algo.overlong_buffer", overlong_buffer, "0", "[0,)",
        "grpo, ppo: DAPO's soft overlong penalty over the last N tokens of "
        "rollout.max_new_tokens (0: off)"),
    FLT("algo.overlong_penalty", overlong_penalty, "1", "[0,)",
        "the score a response of rollout.max_new_tokens tokens loses (DAPO's penalty factor)"),
    BOOL("algo.filter_groups", filter_groups, "false",
         "grpo: DAPO's dynamic sampling, groups whose scores are all equal dropped and "
         "refilled from further prompts"),
    INT("algo.filter_max_rounds", filter_max_rounds, "10", "[1,)",
        "grpo, filter_groups: most rollout rounds per step (then the batch is completed with "
        "dropped groups)"),
    INT("algo.max_staleness", max_staleness, "0", "[0,16]",
        "grpo, ppo: step s trains on rollouts made by step max(0, s - K)'s policy, generated "
        "beside the updates (0: synchronous)"),
    FLT("algo.entropy_coef", entropy_coef, "0", NULL, "weight of the entropy bonus"),
    FLT("algo.gamma", gamma, "1", "[0,1]", "ppo: GAE discount"),
    FLT("algo.lambda", lambda, "0.95", "[0,1]", "ppo: GAE lambda"),
    FLT("algo.value_clip", value_clip, "0.2", "[0,)", "ppo: value clip around the old values"),
    FLT("algo.kl_target", kl_target, "0", "[0,)", "ppo: adaptive KL target (0: fixed kl_coef)"),
    FLT("algo.kl_horizon", kl_horizon, "10000", "(0,)", "ppo: adaptive KL horizon"),
    FLT("algo.reward_clip", reward_clip, "10", "(0,)", "ppo: scores clipped to +-reward_clip"),
    BOOL("algo.whiten_advantages", whiten_advantages, "true",
         "ppo: whiten advantages over the batch"),
    FLT("algo.beta", beta, "auto", "(0,)",
        "dpo, simpo, kto: inverse temperature of the implicit reward (auto: 2 simpo, 0.1 "
        "otherwise)"),
    ENUM("algo.loss_type", loss_type, "sigmoid", "sigmoid|ipo|hinge", "dpo: loss form"),
    FLT("algo.label_smoothing", label_smoothing, "0", "[0,0.5]",
        "dpo, simpo: probability that a preference label is flipped"),
    FLT("algo.simpo_gamma", simpo_gamma, "0.5", "[0,)",
        "simpo: target reward margin gamma (TRL's simpo_gamma)"),
    FLT("algo.desirable_weight", desirable_weight, "1", "[0,)",
        "kto: weight of the desirable (chosen) examples' losses"),
    FLT("algo.undesirable_weight", undesirable_weight, "1", "[0,)",
        "kto: weight of the undesirable (rejected) examples' losses"),
    FLT("algo.orpo_lambda", orpo_lambda, "0.1", "[0,)", "orpo: weight of the odds-ratio term"),
    FLT("algo.center_coef", center_coef, "0", "[0,)",
        "rm: weight of the mean((r_c + r_r)^2) centering term"),

    /* model */
    PATH("model.path", model_path, "",
         "HF folder or llama2.c .bin (empty: a random model of model.init.*)"),
    PATH("model.tokenizer", tokenizer, "",
         "folder with tokenizer.json (empty: model.path's folder)"),
    INT("model.init.dim", init_dim, "64", "[1,)", "random model: channels"),
    INT("model.init.hidden", init_hidden, "176", "[1,)", "random model: MLP hidden size"),
    INT("model.init.layers", init_layers, "2", "[1,)", "random model: layers"),
    INT("model.init.heads", init_heads, "4", "[1,)", "random model: attention heads"),
    INT("model.init.kv_heads", init_kv_heads, "2", "[1,)", "random model: key/value heads"),
    INT("model.init.max_seq", init_max_seq, "64", "[1,)", "random model: context length"),
    FLT("model.init.rope_theta", init_rope_theta, "10000", "(0,)", "random model: RoPE base"),
    FLT("model.init.std", init_std, "0.02", "[0,)", "random model: init standard deviation"),

    /* adapters and roles */
    INT("lora.rank", lora_rank, "8", "[0,)", "LoRA rank (0: no adapter)"),
    FLT("lora.alpha", lora_alpha, "16", "(0,)", "LoRA alpha (scale alpha / rank)"),
    STR("lora.targets", lora_targets, "q,k,v,o,gate,up,down",
        "LoRA target modules, comma-separated, or all"),
    BOOL("actor.full_finetune", full_finetune, "false", "train all base weights of the actor"),
    FLT("critic.lr", critic_lr, "0", "[0,)", "critic learning rate (0: optim.lr)"),
    ENUM("reward.type", reward_type, "exact_match",
         "exact_match|numeric_match|regex|length|model|http|exec",
         "reward of a response: a rule, a trained reward model, a web service or a program"),
    STR("reward.arg", reward_arg, "", "the rule's argument"),
    PATH("reward.model", reward_model, "",
         "reward.type model: an rm run's checkpoint folder (its model may be of another size)"),
    STR("reward.url", reward_url, "",
        "reward.type http: the URL that batches of {prompt, response, answer} are POSTed to"),
    STR("reward.command", reward_command, "",
        "reward.type exec: the program (run by /bin/sh -c) that scores JSON lines"),
    FLT("reward.timeout_s", reward_timeout_s, "30", "(0,)",
        "http, exec: seconds one POST, or one batch of lines, may take"),
    INT("reward.retries", reward_retries, "3", "[0,)",
        "http: attempts after a failed one (connection error, timeout, 429, 5xx)"),
    INT("reward.backoff_ms", reward_backoff_ms, "500", "[0,)",
        "http: wait before the first retry, doubled for each further one"),
    INT("reward.concurrency", reward_concurrency, "4", "[1,)", "http: POSTs in flight at once"),
    INT("reward.batch_size", reward_batch_size, "64", "[1,)",
        "http, exec: items per POST, or per batch of lines"),
    PATH("critic.model", critic_model, "",
         "ppo: a model folder the critic starts from instead of model.path (same vocabulary)"),
    PATH("reference.model", reference_model, "",
         "the KL and DPO reference's model folder instead of model.path (same vocabulary)"),
    BOOL("reward.full_finetune", reward_full_finetune, "false",
         "rm: train all base weights of the reward model, not an adapter"),

    /* data */
    PATH("data.train", train_path, "",
         "training data: a JSONL file, or redis://[[user]:password@]host[:port][/db] with "
         "data.stream"),
    STR("data.stream", data_stream, "", "the Redis stream (of plumb ingest) to train from"),
    STR("data.group", data_group, "", "the run's consumer group (empty: the run dir's name)"),
    BOOL("data.follow", follow, "false",
         "stream: train on records as they arrive (false: epochs over what it holds at the start)"),
    INT("data.shuffle_window", shuffle_window, "0", "[0,)",
        "stream: records shuffled together (0: 8 x train.batch_size when following, else all)"),
    PATH("data.eval", eval_path, "", "eval prompts with answers (JSONL; empty: no eval)"),
    PATH("data.eval_pref", eval_pref_path, "", "held-out preference pairs (JSONL)"),
    INT("data.max_prompt_len", max_prompt_len, "0", "[0,)", "prompt tokens kept (0: no limit)"),
    INT("data.max_response_len", max_response_len, "0", "[0,)",
        "response tokens kept (0: no limit)"),
    BOOL("data.shuffle", shuffle, "true", "shuffle the training data each epoch"),
    STR("data.chat", chat, "auto",
        "chat format of conversational records: auto (from the tokenizer's chat_template), "
        "chatml, qwen3, qwen3-nothink, llama3, llama31, llama2, mistral, zephyr or plain"),
    STR("data.chat_date", chat_date, "",
        "llama31: the \"Today Date\" its system header writes (empty: the template's own, "
        CHAT_LLAMA31_DATE ")"),

    /* batches */
    INT("train.batch_size", batch_size, "16", "[1,)", "prompts, pairs or sequences per step"),
    INT("train.epochs", epochs, "1", "[1,)", "passes over one rollout batch"),
    INT("train.minibatches", minibatches, "1", "[1,)", "optimizer steps per pass over a batch"),
    INT("train.replicas", train_replicas, "0", "[0,)",
        "actor workers that train (0: every one); the others only generate"),
    INT("train.micro_batch", micro_batch, "0", "[0,)",
        "sequences per forward/backward (0: all at once)"),

    /* optimizer */
    FLT("optim.lr", lr, "1e-4", "(0,)", "AdamW learning rate"),
    FLT("optim.weight_decay", weight_decay, "0", "[0,)", "AdamW decoupled weight decay"),
    FLT("optim.grad_clip", grad_clip, "1.0", "[0,)", "global gradient-norm clip (0: off)"),
    ENUM("optim.schedule", schedule, "constant", "constant|linear|cosine",
         "learning-rate schedule after warmup"),
    INT("optim.warmup_steps", warmup_steps, "0", "[0,)", "optimizer steps of linear warmup"),
    FLT("optim.min_lr_ratio", min_lr_ratio, "0", "[0,1]",
        "final learning rate as a fraction of optim.lr"),
    FLT("optim.beta1", beta1, "0.9", "[0,1)", "AdamW beta1"),
    FLT("optim.beta2", beta2, "0.999", "[0,1)", "AdamW beta2"),
    FLT("optim.eps", eps, "1e-8", "(0,)", "AdamW epsilon"),

    /* rollout */
    FLT("rollout.temperature", temperature, "1.0", "[0,)", "sampling temperature"),
    INT("rollout.top_k", top_k, "0", "[0,)", "sample from the k likeliest tokens (0: off)"),
    FLT("rollout.top_p", top_p, "1.0", "(0,1]", "nucleus sampling mass (1: off)"),
    INT("rollout.max_new_tokens", max_new_tokens, "16", "[1,)", "tokens generated per response"),

    /* eval */
    INT("eval.every", eval_every, "0", "[0,)", "eval period in steps (0: at the start and the end)"),
    INT("eval.n", eval_n, "0", "[0,)", "eval examples (0: all)"),
    INT("eval.samples", eval_samples, "4", "[0,)", "eval generations kept per eval (samples.jsonl)"),
    INT("eval.max_new_tokens", eval_max_new_tokens, "0", "[0,)",
        "tokens generated per eval answer (0: rollout.max_new_tokens)"),

    /* checkpoints */
    INT("checkpoint.every", save_every, "0", "[0,)", "checkpoint period in steps (0: at the end)"),
    INT("checkpoint.keep", keep, "0", "[0,)", "newest checkpoints kept (0: all)"),

    /* metrics */
    STR("metrics.redis", redis_url, "",
        "redis://[:pass@]host:port[/db] to stream metrics to (empty: file only)"),
    STR("metrics.stream", redis_stream, "",
        "Redis stream name (empty: plumb:metrics:<run dir name>)"),

    /* transport */
    STR("transport.endpoint", endpoint, "tcp://127.0.0.1:*", "ZeroMQ endpoint the coordinator binds"),
    PATH("transport.secret_key", secret_key, "", "coordinator CURVE key file (empty: no CURVE)"),
    PATH("transport.authorized_keys", authorized_keys, "", "public keys of accepted workers"),
    PATH("transport.client_key", client_key, "", "key file the launched workers use"),
    INT("transport.max_message_mb", max_message_mb, "256", "[1,)", "largest message accepted, MiB"),
    INT("transport.heartbeat_ms", heartbeat_ms, "500", "[1,)", "heartbeat period"),
    INT("transport.dead_after_ms", dead_after_ms, "3000", "[1,)",
        "a worker silent this long is dead"),
    INT("transport.request_timeout_s", request_timeout_s, "1800", "[1,)",
        "longest wait for one request's reply"),
    INT("transport.startup_timeout_s", startup_timeout_s, "60", "[1,)",
        "longest wait for the workers to connect"),
    INT("transport.min_workers", min_workers, "0", "[0,64]",
        "workers to wait for before the first step (0: one per needed role; plumb train: "
        "all it starts)"),

    /* launch (plumb train) */
    STR("launch.workers", workers, "auto",
        "auto (a process per role), colocated (every role on every GPU of launch.devices), or "
        "processes separated by spaces, roles by commas, GPUs after an @ (actor@0-5 "
        "critic,reward@6-7)"),
    INT("launch.threads", threads, "0", "[0,)", "threads per worker (0: cores / workers)"),
    INT("launch.max_restarts", max_restarts, "3", "[0,)", "plumb train: times a dead worker is restarted"),
    BOOL("launch.keep_state", keep_state, "true",
         "trainers save their state with each update (RUN_DIR/.live) to replace dead workers"),
    STR("launch.device", device, "cpu",
        "where plumb train's workers compute: cpu, cuda (= cuda:0) or cuda:N (cpu-staged: the "
        "CPU behind the device path, a check)"),
    STR("launch.devices", devices, "",
        "the GPUs of this host plumb train's workers use, as 0-7 or 0,2,4-5 (empty: "
        "launch.device says where)"),
};

#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

int runcfg_key_count(void) { return NKEYS; }

int runcfg_key_index(const Key *k) { return (int)(k - KEYS); }

const char *runcfg_key_name(int i) { return i >= 0 && i < NKEYS ? KEYS[i].key : NULL; }

const Key *runcfg_find_key(const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (!strcmp(KEYS[i].key, name)) return &KEYS[i];
    return NULL;
}

/* Whether some key starts with "prefix." (a section such as "model.init"). */
int runcfg_is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < NKEYS; i++)
        if (!strncmp(KEYS[i].key, prefix, n) && KEYS[i].key[n] == '.') return 1;
    return 0;
}

static int is_auto(const Key *k) { return !strcmp(k->def, "auto"); }

/* ------------------------------------------------------ unknown-key hints */

static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 127 || m > 127) return INT_MAX;
    int row[128], prev[128];
    for (size_t j = 0; j <= m; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, row, (m + 1) * sizeof *row);
    }
    return prev[m];
}

/* " (did you mean 'x'?)" for the closest key within edit distance 2, else
 * the keys whose last part is `name` ("lr": critic.lr, optim.lr); "" when
 * there is none. */
void runcfg_suggest(const char *name, char *buf, size_t n) {
    buf[0] = '\0';
    int best = 3;
    const char *hit = NULL;
    for (int i = 0; i < NKEYS; i++) {
        int d = edit_distance(name, KEYS[i].key);
        if (d < best) best = d, hit = KEYS[i].key;
    }
    if (hit) {
        snprintf(buf, n, " (did you mean '%s'?)", hit);
        return;
    }
    size_t ln = strlen(name), used = 0;
    for (int i = 0; i < NKEYS && used + 8 < n; i++) {
        size_t lk = strlen(KEYS[i].key);
        if (lk > ln && KEYS[i].key[lk - ln - 1] == '.' && !strcmp(KEYS[i].key + lk - ln, name))
            used += (size_t)snprintf(buf + used, n - used, "%s'%s'",
                                     used ? " or " : " (did you mean ", KEYS[i].key);
    }
    if (used && used + 3 < n) strcat(buf, "?)");
}

/* ================================================================ values */

/* A value quoted for a message, cut to 60 bytes. */
static const char *shown(const char *v, char buf[80]) {
    size_t n = strlen(v);
    if (n <= 60) snprintf(buf, 80, "'%s'", v);
    else snprintf(buf, 80, "'%.57s...'", v);
    return buf;
}

/* Parses a range "[lo,hi]", "(lo,hi)", "[lo,)" ...; returns whether v is in it. */
static int in_range(const char *spec, double v) {
    if (!spec) return 1;
    char *e;
    int lo_open = spec[0] == '(';
    double lo = strtod(spec + 1, &e);
    if (lo_open ? !(v > lo) : !(v >= lo)) return 0;
    if (e[1] == ')' || e[1] == ']') return 1; /* no upper bound: "[lo,)" */
    double hi = strtod(e + 1, &e);
    return *e == ')' ? v < hi : v <= hi;
}

/* The range for messages: "[0,1]" as "in [0, 1]", "[1,)" as ">= 1". */
static const char *range_text(const char *spec, char *buf, size_t n) {
    const char *comma = strchr(spec, ',');
    int lo_len = (int)(comma - spec - 1);
    if (comma[1] == ')' || comma[1] == ']')
        snprintf(buf, n, "%s %.*s", spec[0] == '(' ? ">" : ">=", lo_len, spec + 1);
    else
        snprintf(buf, n, "in %c%.*s, %s", spec[0], lo_len, spec + 1, comma + 1);
    return buf;
}

static int enum_index(const char *choices, const char *v) {
    size_t n = strlen(v);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return i;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

/* Copy of v without leading and trailing white space. */
static void trimmed(const char *v, char *buf, size_t n) {
    while (isspace((unsigned char)*v)) v++;
    size_t len = strlen(v);
    while (len && isspace((unsigned char)v[len - 1])) len--;
    if (len >= n) len = n - 1;
    memcpy(buf, v, len);
    buf[len] = '\0';
}

/* Parses text as key k's value into the field at dst. `null` is 1 for a YAML
 * null (an empty or ~ plain scalar): empty for strings, an error otherwise.
 * On error returns a PL_E* code with the reason (without location) in why. */
/* An int or float key's value: -1 for "auto" where the key allows it,
 * else a number (an integer for K_INT) inside the key's range. */
static int parse_number(const Key *k, const char *v, double *x, char *why, size_t wn) {
    if (is_auto(k) && !strcmp(v, "auto")) {
        *x = -1;
        return PL_OK;
    }
    char sh[80], *end;
    const char *shown_x = v; /* as the range error names it */
    char ix[32];
    errno = 0;
    if (k->type == K_INT) {
        long l = strtol(v, &end, 10);
        if (!v[0] || *end || end == v) {
            snprintf(why, wn, "%s is not an integer", shown(v, sh));
            return PL_EINVAL;
        }
        if (errno == ERANGE || l < INT_MIN || l > INT_MAX) {
            snprintf(why, wn, "%s is out of range for an integer", shown(v, sh));
            return PL_ERANGE;
        }
        *x = (double)l;
        snprintf(ix, sizeof ix, "%ld", l);
        shown_x = ix;
    } else {
        *x = strtod(v, &end);
        /* digits and YAML's float forms only: no inf/nan, no hex */
        if (!v[0] || *end || end == v || strpbrk(v, "xXnN")) {
            snprintf(why, wn, "%s is not a number", shown(v, sh));
            return PL_EINVAL;
        }
        if (!isfinite(*x) || fabs(*x) > FLT_MAX) {
            snprintf(why, wn, "%s is out of range for a float", shown(v, sh));
            return PL_ERANGE;
        }
        *x = (float)*x; /* the range holds for the value that is stored */
    }
    char rt[64];
    if (!(is_auto(k) && *x == -1) && !in_range(k->range, *x)) {
        snprintf(why, wn, "%s must be %s", shown_x, range_text(k->range, rt, sizeof rt));
        return PL_ERANGE;
    }
    return PL_OK;
}

int runcfg_parse_value(const Key *k, const char *text, int null, void *dst, char *why, size_t wn) {
    char v[128], sh[80];
    if (k->type == K_STR || k->type == K_PATH) {
        const char *s = null ? "" : text;
        size_t len = strlen(s);
        if (len >= k->size) {
            snprintf(why, wn, "value is %zu bytes, longer than the %zu allowed", len, k->size - 1);
            return PL_ERANGE;
        }
        memset(dst, 0, k->size); /* zero tail: equal configs are equal bytes */
        memcpy(dst, s, len);
        return PL_OK;
    }
    if (k->type == K_ALGO && (null || !text[0])) { /* unset: validate asks for it */
        *(Algo *)dst = RUNCFG_ALGO_UNSET;
        return PL_OK;
    }
    if (null) {
        snprintf(why, wn, "a value is required");
        return PL_EINVAL;
    }
    if (strlen(text) >= sizeof v) {
        snprintf(why, wn, "%s is not a valid %s", shown(text, sh), TYPE_NAMES[k->type]);
        return PL_EINVAL;
    }
    trimmed(text, v, sizeof v);
    char *end;
    switch (k->type) {
    case K_INT:
    case K_FLOAT: {
        double x;
        PL_TRY(parse_number(k, v, &x, why, wn));
        if (k->type == K_INT)
            *(int *)dst = (int)x;
        else
            *(float *)dst = (float)x;
        return PL_OK;
    }
    case K_U64: {
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (!v[0] || *end || end == v || v[0] == '-' || v[0] == '+') {
            snprintf(why, wn, "%s is not a non-negative integer", shown(v, sh));
            return PL_EINVAL;
        }
        if (errno == ERANGE || x > UINT64_MAX) {
            snprintf(why, wn, "%s is out of range for a 64-bit integer", shown(v, sh));
            return PL_ERANGE;
        }
        *(uint64_t *)dst = (uint64_t)x;
        return PL_OK;
    }
    case K_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                      "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(v, yes[i])) return *(int *)dst = 1, PL_OK;
            if (!strcasecmp(v, no[i])) return *(int *)dst = 0, PL_OK;
        }
        snprintf(why, wn, "%s is not a boolean (true/false, yes/no, on/off, 1/0)", shown(v, sh));
        return PL_EINVAL;
    }
    case K_ALGO: {
        AlgoName a;
        if (algo_name_parse(v, &a) < 0) {
            snprintf(why, wn, "%s is not one of %s", shown(v, sh), k->choices);
            return PL_EINVAL;
        }
        *(Algo *)dst = a;
        return PL_OK;
    }
    case K_ENUM: {
        if (enum_index(k->choices, v) < 0) {
            snprintf(why, wn, "%s is not one of %s", shown(v, sh), k->choices);
            return PL_EINVAL;
        }
        memset(dst, 0, k->size); /* choices are shorter than CFG_STR */
        memcpy(dst, v, strlen(v));
        return PL_OK;
    }
    default: break;
    }
    snprintf(why, wn, "bad key type");
    return PL_EINVAL;
}

void *runcfg_field(RunConfig *c, const Key *k) { return (char *)c + k->off; }
static const void *cfield_of(const RunConfig *c, const Key *k) { return (const char *)c + k->off; }

/* ============================================================== defaults */

void runcfg_defaults(RunConfig *c) {
    memset(c, 0, sizeof *c);
    char why[256];
    for (int i = 0; i < NKEYS; i++) {
        /* the table's defaults are parsed like any value; a bad one would be a
         * bug that test_config catches, so the status is not propagated */
        int rc = runcfg_parse_value(&KEYS[i], KEYS[i].def, 0, runcfg_field(c, &KEYS[i]), why, sizeof why);
        (void)rc;
    }
}

/* ============================================================= overrides */

int runcfg_set(RunConfig *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq) return pl_fail(PL_EINVAL, "override '%s': expected key=value", assignment);
    char name[256];
    size_t kn = (size_t)(eq - assignment);
    if (kn >= sizeof name) return pl_fail(PL_EINVAL, "override '%s': unknown key", assignment);
    memcpy(name, assignment, kn);
    name[kn] = '\0';
    char key[256];
    trimmed(name, key, sizeof key);
    const Key *k = runcfg_find_key(key);
    if (!k) {
        char hint[300];
        runcfg_suggest(key, hint, sizeof hint);
        return pl_fail(PL_EINVAL, "override '%s': unknown key%s", assignment, hint);
    }
    /* parse into a scratch field so that c is unchanged on error */
    union {
        char s[CFG_PATH];
        int i;
        float f;
        uint64_t u;
        Algo a;
    } tmp;
    char why[256];
    int rc = runcfg_parse_value(k, eq + 1, 0, &tmp, why, sizeof why);
    if (rc < 0) return pl_fail(rc, "override '%s': %s", assignment, why);
    memcpy(runcfg_field(c, k), &tmp, k->size);
    return PL_OK;
}

/* ================================================================ writing */

/* YAML double-quoted string: escapes \, ", control bytes and DEL. Other
 * bytes, UTF-8 included, are written as they are. */
static void write_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* The shortest %g form (at most 9 digits, enough for any float) that reads
 * back as the same float. */
static void format_float(float x, char *buf, size_t n) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)x);
        if ((float)strtod(buf, NULL) == x) return;
    }
}

static void write_value(FILE *f, const Key *k, const RunConfig *c) {
    const void *p = cfield_of(c, k);
    char buf[64];
    switch (k->type) {
    case K_INT:
        if (is_auto(k) && *(const int *)p == -1) fputs("auto", f);
        else fprintf(f, "%d", *(const int *)p);
        break;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)p); break;
    case K_FLOAT:
        if (is_auto(k) && *(const float *)p < 0) {
            fputs("auto", f);
        } else {
            format_float(*(const float *)p, buf, sizeof buf);
            fputs(buf, f);
        }
        break;
    case K_BOOL: fputs(*(const int *)p ? "true" : "false", f); break;
    case K_STR:
    case K_PATH: write_quoted(f, p); break;
    case K_ENUM: fputs(p, f); break;
    case K_ALGO: {
        Algo a = *(const Algo *)p;
        if (a == RUNCFG_ALGO_UNSET) fputs("\"\"", f);
        else fputs(algo_name_str(a), f);
        break;
    }
    }
}

static size_t section_len(const char *key) {
    const char *dot = strchr(key, '.');
    return dot ? (size_t)(dot - key) : strlen(key);
}

int runcfg_write(const RunConfig *c, FILE *f) {
    fputs("# plumb run configuration: every key, flat (configs/README.md documents them).\n", f);
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &KEYS[i];
        if (i > 0 && (section_len(k->key) != section_len(KEYS[i - 1].key) ||
                      strncmp(k->key, KEYS[i - 1].key, section_len(k->key))))
            fputc('\n', f);
        fprintf(f, "%s: ", k->key);
        write_value(f, k, c);
        fputc('\n', f);
    }
    if (fflush(f) || ferror(f)) return pl_fail(PL_EIO, "writing the run configuration: %s",
                                                strerror(errno));
    return PL_OK;
}

/* =================================================================== help */

void runcfg_help(FILE *f) {
    fputs("Run configuration keys: nested or flat (optim.lr: 1e-4) in the YAML file,\n"
          "key=value on the command line (applied after the file).\n\n",
          f);
    fprintf(f, "  %-28s %-7s %-24s %s\n", "key", "type", "default", "meaning");
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &KEYS[i];
        size_t sl = section_len(k->key);
        if (i == 0 || sl != section_len(KEYS[i - 1].key) || strncmp(k->key, KEYS[i - 1].key, sl))
            fprintf(f, "\n%.*s\n", (int)sl, k->key);
        char def[64], rt[64];
        if (k->type == K_STR || k->type == K_PATH || !k->def[0])
            snprintf(def, sizeof def, "\"%s\"", k->def);
        else
            snprintf(def, sizeof def, "%s", k->def);
        fprintf(f, "  %-28s %-7s %-24s %s", k->key, TYPE_NAMES[k->type], def, k->help);
        if (k->choices) fprintf(f, "; one of %s", k->choices);
        if (k->range) fprintf(f, "; %s", range_text(k->range, rt, sizeof rt));
        fputc('\n', f);
    }
}

/* ============================================================ validation */

/* Every field against its table entry: ranges, enum names, terminated strings. */
int runcfg_check_fields(const RunConfig *c) {
    char rt[64];
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &KEYS[i];
        const void *p = cfield_of(c, k);
        switch (k->type) {
        case K_INT: {
            int x = *(const int *)p;
            if (!in_range(k->range, x))
                return pl_fail(PL_ERANGE, "%s (%d) must be %s", k->key, x,
                               range_text(k->range, rt, sizeof rt));
            break;
        }
        case K_FLOAT: {
            float x = *(const float *)p;
            if (!isfinite(x) || !in_range(k->range, x))
                return pl_fail(PL_ERANGE, "%s (%g) must be %s", k->key, (double)x,
                               k->range ? range_text(k->range, rt, sizeof rt) : "finite");
            break;
        }
        case K_STR:
        case K_PATH:
        case K_ENUM:
            if (!memchr(p, '\0', k->size))
                return pl_fail(PL_EINVAL, "%s is not terminated", k->key);
            if (k->type == K_ENUM && enum_index(k->choices, p) < 0)
                return pl_fail(PL_EINVAL, "%s: '%s' is not one of %s", k->key, (const char *)p,
                               k->choices);
            break;
        default: break;
        }
    }
    return PL_OK;
}
