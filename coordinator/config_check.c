/* config_check.c: runcfg_validate, the cross-key checks of a run
 * configuration and the "auto" defaults it resolves (the per-key ranges
 * and names are checked from the table, runcfg_check_fields in config.c). */
#include "coordinator/config_impl.h"

#include <ctype.h>
#include <string.h>

#include "common/err.h"
#include "common/roles.h"
#include "coordinator/algos.h"
#include "coordinator/metrics.h"
#include "model/chat.h"
#include "model/lora.h"

long runcfg_total_optimizer_steps(const RunConfig *c) {
    return (long)c->steps * c->epochs * c->minibatches;
}

/* "cpu", "cuda", "cuda:N" or "cpu-staged" (kernels/backend.h). */
static int device_ok(const char *d) {
    if (!strcmp(d, "cpu") || !strcmp(d, "cuda") || !strcmp(d, "cpu-staged")) return 1;
    if (strncmp(d, "cuda:", 5) || !isdigit((unsigned char)d[5])) return 0;
    for (const char *p = d + 5; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    return 1;
}

/* data.train redis:// and the stream keys that go with it. */
static int check_stream(RunConfig *c) {
    int redis = !strncmp(c->train_path, "redis://", 8);
    if (!redis && (c->data_stream[0] || c->follow))
        return pl_fail(PL_EINVAL, "data.stream and data.follow need data.train redis://...");
    if (!redis) return PL_OK;
    if (!c->data_stream[0])
        return pl_fail(PL_EINVAL, "data.train %.8s... is a Redis server: data.stream names the stream",
                       c->train_path);
    if (!c->data_group[0]) {
        size_t n = strlen(c->run_dir);
        while (n > 1 && c->run_dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && c->run_dir[b - 1] != '/') b--;
        if (n - b >= CFG_STR) return pl_fail(PL_EINVAL, "data.group: the run dir's name is too long");
        memcpy(c->data_group, c->run_dir + b, n - b);
        c->data_group[n - b] = '\0';
    }
    if (c->follow && c->shuffle_window == 0) c->shuffle_window = 8 * c->batch_size;
    if (c->follow && c->shuffle_window % c->batch_size)
        return pl_fail(PL_EINVAL,
                       "data.shuffle_window (%d) must be a multiple of train.batch_size (%d) with "
                       "data.follow: a step's records come from one window",
                       c->shuffle_window, c->batch_size);
    return PL_OK;
}

int runcfg_validate(RunConfig *c) {
    if (c->algo == RUNCFG_ALGO_UNSET)
        return pl_fail(PL_EINVAL, "algo.name is required (one of " ALGO_CHOICES ")");
    const AlgoDesc *d = algos_find(c->algo);
    if (!d)
        return pl_fail(PL_ENOTSUP, "algo.name %s is not driven by the coordinator (one of "
                       ALGO_CHOICES ")", algo_name_str(c->algo));
    const int grpo = c->algo == ALGO_GRPO;

    /* the algorithm's defaults of the "auto" keys */
    if (c->group_size == -1) c->group_size = d->group_size;
    if (c->kl_coef < 0) c->kl_coef = d->kl_coef;
    if (!strcmp(c->kl_estimator, "auto")) strcpy(c->kl_estimator, d->kl_estimator);
    if (c->beta < 0) c->beta = d->beta;
    if (!c->redis_stream[0] && metrics_default_stream(c->run_dir, c->redis_stream, CFG_STR) < 0)
        return pl_fail(PL_EINVAL, "metrics.stream: the run dir's name is too long to name "
                                  "the stream; set metrics.stream");

    PL_TRY(runcfg_check_fields(c));

    if (grpo && c->group_size < 2 &&
        (!strcmp(c->advantage, "group") || !strcmp(c->advantage, "rloo") ||
         !strcmp(c->advantage, "batch")))
        return pl_fail(PL_EINVAL,
                       "algo.group_size (%d) must be at least 2 for grpo with algo.advantage %s",
                       c->group_size, c->advantage);
    if (strcmp(c->ratio_level, "token") && c->algo != ALGO_GRPO && c->algo != ALGO_PPO)
        return pl_fail(PL_EINVAL, "algo.ratio_level %s is for grpo and ppo, not %s",
                       c->ratio_level, algo_name_str(c->algo));
    if (c->overlong_buffer > 0 && c->algo != ALGO_GRPO && c->algo != ALGO_PPO)
        return pl_fail(PL_EINVAL, "algo.overlong_buffer shapes rollout scores: grpo and ppo, "
                       "not %s", algo_name_str(c->algo));
    if (c->overlong_buffer > c->max_new_tokens)
        return pl_fail(PL_EINVAL, "algo.overlong_buffer (%d) must be at most "
                       "rollout.max_new_tokens (%d)", c->overlong_buffer, c->max_new_tokens);
    if (c->filter_groups) {
        if (!grpo || c->group_size < 2)
            return pl_fail(PL_EINVAL, "algo.filter_groups drops groups of equal scores: grpo "
                           "with algo.group_size >= 2, not %s with %d", algo_name_str(c->algo),
                           c->group_size);
        if (!strcmp(c->advantage, "reinforce_pp"))
            return pl_fail(PL_EINVAL, "algo.filter_groups needs a group advantage "
                           "(group, none, rloo, batch), not reinforce_pp, under which a group "
                           "of equal scores still has advantages");
        if (!strncmp(c->train_path, "redis://", 8))
            return pl_fail(PL_EINVAL, "algo.filter_groups draws its refills from the records "
                           "of data.train, which must be a file, not a Redis stream");
    }
    if (c->max_staleness > 0) {
        if (c->algo != ALGO_GRPO && c->algo != ALGO_PPO)
            return pl_fail(PL_EINVAL, "algo.max_staleness is for grpo and ppo, not %s",
                           algo_name_str(c->algo));
        if (c->filter_groups)
            return pl_fail(PL_EINVAL, "algo.max_staleness and algo.filter_groups do not go "
                           "together (a refill round would wait for the policy it runs ahead of)");
        if (!strncmp(c->train_path, "redis://", 8))
            return pl_fail(PL_EINVAL, "algo.max_staleness needs data.train to be a file: the "
                           "records of steps ahead must be known");
    }
    if (c->dual_clip != 0 && !(c->dual_clip > 1))
        return pl_fail(PL_ERANGE, "algo.dual_clip (%g) must be 0 (off) or above 1",
                       (double)c->dual_clip);
    long units = (long)c->batch_size * (d->units_per_record ? d->units_per_record : c->group_size);
    if (c->minibatches > units)
        return pl_fail(PL_EINVAL,
                       "train.minibatches (%d) must be at most the %ld units (sequences, or "
                       "pairs) a step of %s trains on (train.batch_size x %s)",
                       c->minibatches, units, algo_name_str(c->algo),
                       d->units_per_record ? "the units of a record" : "algo.group_size");
    if (!c->train_path[0]) return pl_fail(PL_EINVAL, "data.train is required");
    PL_TRY(check_stream(c));
    if (!c->model_path[0]) {
        if (c->init_dim % c->init_heads)
            return pl_fail(PL_EINVAL, "model.init.heads (%d) must divide model.init.dim (%d)",
                           c->init_heads, c->init_dim);
        if (c->init_heads % c->init_kv_heads)
            return pl_fail(PL_EINVAL,
                           "model.init.kv_heads (%d) must divide model.init.heads (%d)",
                           c->init_kv_heads, c->init_heads);
        if ((c->init_dim / c->init_heads) % 2)
            return pl_fail(PL_EINVAL,
                           "model.init.dim / model.init.heads (%d) must be even for RoPE",
                           c->init_dim / c->init_heads);
    }
    long total = runcfg_total_optimizer_steps(c);
    if ((!strcmp(c->schedule, "linear") || !strcmp(c->schedule, "cosine")) &&
        c->warmup_steps >= total)
        return pl_fail(PL_EINVAL, "optim.warmup_steps (%d) must be below the run's %ld optimizer "
                                  "steps (run.steps x train.epochs x train.minibatches)",
                       c->warmup_steps, total);
    unsigned scored = d->roles(c) & ~d->trained & (1u << ROLE_REWARD); /* a reward it only asks */
    if (scored && !strcmp(c->reward_type, "model") && !c->reward_model[0])
        return pl_fail(PL_EINVAL, "reward.type model needs reward.model (an rm run's checkpoint)");
    if (scored && !strcmp(c->reward_type, "http") &&
        strncmp(c->reward_url, "http://", 7) && strncmp(c->reward_url, "https://", 8))
        return pl_fail(PL_EINVAL, "reward.type http needs reward.url, an http:// or https:// URL%s%s",
                       c->reward_url[0] ? ", not " : "", c->reward_url);
    if (scored && !strcmp(c->reward_type, "exec") && !c->reward_command[0])
        return pl_fail(PL_EINVAL, "reward.type exec needs reward.command, the program to run");
    if (c->heartbeat_ms >= c->dead_after_ms)
        return pl_fail(PL_EINVAL,
                       "transport.heartbeat_ms (%d) must be below transport.dead_after_ms (%d)",
                       c->heartbeat_ms, c->dead_after_ms);
    unsigned mask;
    if (lora_parse_targets(c->lora_targets, &mask) < 0)
        return pl_wrap(PL_EINVAL, "lora.targets");
    ChatFormat chat;
    if (strcmp(c->chat, "auto") && chat_format_parse(c->chat, &chat) < 0)
        return pl_wrap(PL_EINVAL, "data.chat");
    if (c->chat_date[0] && strcmp(c->chat, "auto") && strcmp(c->chat, "llama31"))
        return pl_fail(PL_EINVAL, "data.chat_date is the date of llama31's system header, and "
                                  "data.chat is %s", c->chat);
    if (!device_ok(c->device))
        return pl_fail(PL_EINVAL, "launch.device '%s' is not cpu, cuda, cuda:N or cpu-staged",
                       c->device);
    return PL_OK;
}
