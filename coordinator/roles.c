/* roles.c: what the coordinator tells each role (its RoleConfig, from the
 * run's config), and the random starting model when there is no
 * model.path (run.h, run_impl.h). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"
#include "common/rng.h"
#include "coordinator/run_impl.h"
#include "model/weights.h"

int coord_prepare_model(RunConfig *c) {
    if (!c->model_path[0]) {
        char dir[CFG_PATH + 16];
        PL_TRY(pl_path_join(dir, sizeof dir, c->run_dir, "init"));
        if (!c->tokenizer[0])
            return pl_fail(PL_EINVAL, "model.init needs model.tokenizer (a folder with "
                                      "tokenizer.json) since there is no model.path");
        char cfgpath[CFG_PATH + 32];
        PL_TRY(pl_path_fmt(cfgpath, sizeof cfgpath, "%s/model.safetensors", dir));
        if (access(cfgpath, R_OK) != 0) {
            Tokenizer *tok = NULL;
            int rc = tok_load(&tok, c->tokenizer);
            if (rc < 0) return pl_wrap(rc, "model.tokenizer %s", c->tokenizer);
            ModelConfig mc;
            config_defaults(&mc);
            mc.vocab_size = tok_vocab_size(tok);
            mc.dim = c->init_dim, mc.hidden_dim = c->init_hidden, mc.n_layers = c->init_layers;
            mc.n_heads = c->init_heads, mc.n_kv_heads = c->init_kv_heads;
            mc.head_dim = c->init_dim / c->init_heads, mc.max_seq_len = c->init_max_seq;
            mc.rope_theta = c->init_rope_theta;
            mc.bos_id = tok_bos(tok);
            if (tok_eos(tok) >= 0) mc.eos_ids[0] = tok_eos(tok), mc.n_eos = 1;
            tok_free(&tok);
            PL_TRY(config_validate(&mc));
            Base *b = NULL;
            PL_TRY(base_new_random(&b, &mc, rng_mix3(c->seed, 99, 0), c->init_std));
            rc = pl_mkdirs(dir);
            if (rc == 0) rc = base_save_hf(b, dir);
            base_free(&b);
            PL_TRY(rc);
        }
        const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
        for (int i = 0; i < 2; i++) {
            char from[CFG_PATH + 64], to[CFG_PATH + 64];
            PL_TRY(pl_path_join(from, sizeof from, c->tokenizer, files[i]));
            PL_TRY(pl_path_join(to, sizeof to, dir, files[i]));
            if (pl_exists(from)) PL_TRY(pl_copy_file(from, to));
        }
        PL_TRY(pl_path_fmt(c->model_path, sizeof c->model_path, "%s", dir));
    }
    if (!c->tokenizer[0]) {
        struct stat st;
        snprintf(c->tokenizer, sizeof c->tokenizer, "%s", c->model_path);
        if (stat(c->model_path, &st) == 0 && !S_ISDIR(st.st_mode)) {
            char *slash = strrchr(c->tokenizer, '/');
            if (slash)
                *slash = '\0';
            else
                strcpy(c->tokenizer, ".");
        }
    }
    return 0;
}

/* rm_dir/reward/name in a, or NULL when optional and not readable (or
 * out of memory). */
static char *rm_file(WireArena *a, const char *rm_dir, const char *name, int optional) {
    char p[CFG_PATH + 64];
    snprintf(p, sizeof p, "%s/reward/%s", rm_dir, name);
    return optional && access(p, R_OK) != 0 ? NULL : wire_strdup(a, p);
}

/* The folder of role k's own model (one it does not train) into out, or
 * NULL when it computes on the shared base. */
static const char *own_model(const Run *r, RoleKind k, char *out, size_t cap) {
    const RunConfig *c = r->cfg;
    const char *p = NULL;
    if (k == ROLE_CRITIC && c->critic_model[0]) p = c->critic_model;
    if (k == ROLE_REFERENCE && c->reference_model[0]) p = c->reference_model;
    if (k == ROLE_REWARD && !(r->algo->trained & (1u << ROLE_REWARD)) &&
        !strcmp(c->reward_type, "model")) {
        snprintf(out, cap, "%s/reward/model", c->reward_model);
        return access(out, R_OK) == 0 ? out : NULL;
    }
    if (p) snprintf(out, cap, "%s", p);
    return p ? out : NULL;
}

int roles_fingerprints(Run *r) {
    unsigned need = coord_needed_roles(r->cfg);
    for (int k = 0; k < ROLE_NKINDS; k++) {
        char path[CFG_PATH + 64];
        r->role_fp[k][0] = '\0';
        if (!(need & (1u << k)) || !own_model(r, (RoleKind)k, path, sizeof path)) continue;
        Base *b = NULL;
        int rc = base_load(&b, path);
        if (rc == 0) rc = wire_fingerprint(b, r->role_fp[k]);
        base_free(&b);
        if (rc < 0) return pl_wrap(rc, "the %s's model %s", role_kind_name((RoleKind)k), path);
    }
    return 0;
}

Plumb__RoleConfig *roles_config(void *ctx, RoleKind k, WireArena *a) {
    Run *r = ctx;
    const RunConfig *c = r->cfg;
    Plumb__RoleConfig *rc = wire_alloc(a, sizeof *rc);
    Plumb__Optim *o = wire_alloc(a, sizeof *o);
    if (!rc || !o) return NULL;
    plumb__role_config__init(rc);
    plumb__optim__init(o);
    rc->role = (char *)role_kind_name(k);
    o->lr = c->lr, o->beta1 = c->beta1, o->beta2 = c->beta2, o->eps = c->eps;
    o->weight_decay = c->weight_decay, o->grad_clip = c->grad_clip;
    o->schedule = (char *)c->schedule;
    o->warmup_steps = c->warmup_steps;
    o->total_steps = (int)runcfg_total_optimizer_steps(c);
    o->min_lr_ratio = c->min_lr_ratio;
    rc->optim = o;
    rc->micro_batch = c->micro_batch;
    rc->lora_alpha = c->lora_alpha;
    rc->lora_targets = (char *)c->lora_targets;
    switch (k) {
    case ROLE_ACTOR:
        if (c->full_finetune)
            rc->train_base = 1;
        else
            rc->lora_rank = c->lora_rank;
        rc->seed = rng_mix3(c->seed, TAG_ACTOR, 0);
        break;
    case ROLE_CRITIC:
        rc->lora_rank = c->lora_rank;
        rc->head = 1;
        if (c->critic_model[0]) rc->base_path = (char *)c->critic_model;
        if (c->critic_model[0]) rc->base_fingerprint = r->role_fp[k];
        rc->seed = rng_mix3(c->seed, TAG_CRITIC, 0);
        if (c->critic_lr > 0) o->lr = c->critic_lr;
        break;
    case ROLE_REWARD:
        rc->seed = rng_mix3(c->seed, TAG_REWARD, 0);
        if (r->algo->trained & (1u << ROLE_REWARD)) {
            if (c->reward_full_finetune)
                rc->train_base = 1;
            else
                rc->lora_rank = c->lora_rank;
            rc->head = 1;
        } else if (!strcmp(c->reward_type, "model")) {
            rc->head = 1;
            rc->init_adapter = rm_file(a, c->reward_model, "adapter", 1);
            rc->lora_rank = rc->init_adapter ? c->lora_rank : 0;
            rc->base_path = rm_file(a, c->reward_model, "model", 1); /* a fully fine-tuned rm */
            if (rc->base_path) rc->base_fingerprint = r->role_fp[k];
            rc->head_path = rm_file(a, c->reward_model, "head.safetensors", 0);
        } else {
            rc->rule = (char *)c->reward_type;
            rc->rule_arg = (char *)c->reward_arg;
            if (!strcmp(c->reward_type, "http") || !strcmp(c->reward_type, "exec")) {
                Plumb__RemoteReward *m = wire_alloc(a, sizeof *m);
                if (!m) return NULL;
                plumb__remote_reward__init(m);
                m->url = (char *)c->reward_url, m->command = (char *)c->reward_command;
                m->timeout_s = c->reward_timeout_s, m->retries = c->reward_retries;
                m->backoff_ms = c->reward_backoff_ms, m->concurrency = c->reward_concurrency;
                m->batch_size = c->reward_batch_size;
                rc->remote = m;
            }
        }
        break;
    case ROLE_REFERENCE:
        if (c->reference_model[0]) rc->base_path = (char *)c->reference_model;
        if (c->reference_model[0]) rc->base_fingerprint = r->role_fp[k];
        break;
    default:
        break;
    }
    /* a worker taking a dead one's place starts from the live copy of the
     * state; one at the start of a resumed run, from its checkpoint */
    const char *from = k < ROLE_NKINDS && r->live_dir[k][0] ? r->live_dir[k] : r->resume_from;
    if (from[0] && k != ROLE_REFERENCE) {
        char p[CFG_PATH + 128];
        snprintf(p, sizeof p, "%s/%s", from, role_kind_name(k));
        if (access(p, R_OK) == 0) rc->resume_dir = wire_strdup(a, from);
    }
    return rc;
}
