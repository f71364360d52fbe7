/* role.c: building a role from its RoleConfig and freeing it (role.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/fs.h"
#include "common/wire.h"
#include "worker/role.h"
#include "worker/bases.h"

/* OptimConfig from the message: absent fields (proto zeros) of beta1, beta2
 * and eps take optim_defaults; the others are taken as sent. */
static int optim_from_msg(const Plumb__Optim *m, OptimConfig *c) {
    optim_defaults(c);
    if (!m) return 0;
    c->lr = m->lr;
    if (m->beta1 != 0.0f) c->beta1 = m->beta1;
    if (m->beta2 != 0.0f) c->beta2 = m->beta2;
    if (m->eps != 0.0f) c->eps = m->eps;
    c->weight_decay = m->weight_decay;
    c->grad_clip = m->grad_clip;
    c->schedule = LR_CONSTANT;
    if (m->schedule && *m->schedule) PL_TRY(lr_schedule_parse(m->schedule, &c->schedule));
    c->warmup_steps = m->warmup_steps;
    c->total_steps = m->total_steps;
    c->min_lr_ratio = m->min_lr_ratio;
    if (!isfinite(c->lr) || c->lr < 0 || c->beta1 < 0 || c->beta1 >= 1 || c->beta2 < 0 ||
        c->beta2 >= 1 || !(c->eps > 0) || !isfinite(c->weight_decay) || c->warmup_steps < 0 ||
        c->total_steps < 0 || c->min_lr_ratio < 0 || c->min_lr_ratio > 1)
        return pl_fail(PL_EINVAL, "optim: lr %g beta1 %g beta2 %g eps %g weight_decay %g warmup %d "
                       "total %d min_lr_ratio %g out of range", c->lr, c->beta1, c->beta2, c->eps,
                       c->weight_decay, c->warmup_steps, c->total_steps, c->min_lr_ratio);
    return 0;
}

/* PL_EPROTO unless own (read from path) is the model the coordinator read
 * there, by its fingerprint want: a worker on another host may hold
 * another checkpoint under the same name. */
static int same_model(const Base *own, const char *path, const char *want, RoleKind k) {
    char fp[33];
    PL_TRY(wire_fingerprint(own, fp));
    if (strcmp(fp, want) != 0)
        return pl_fail(PL_EPROTO,
                       "%s: its model %s differs from the one the coordinator read there "
                       "(fingerprint %.32s, the run's %.32s): give every host the same checkpoint",
                       role_kind_name(k), path, fp, want);
    return 0;
}

/* The role's own model when it has one: a full fine-tuning role's (its
 * checkpoint's on resume, else cfg->base_path's, else a flat copy of the
 * shared base: a copy of its own), or cfg->base_path's for a role that does
 * not train its base (a reward model, a critic or a reference of its own),
 * shared through r->bases with the roles that name the same folder. */
static int own_base(Role *r, const Plumb__RoleConfig *cfg, const char *rdir) {
    char path[PL_PATH];
    const char *own_path = cfg->base_path && *cfg->base_path ? cfg->base_path : NULL;
    if (cfg->train_base && rdir) {
        PL_TRY(pl_path_join(path, sizeof path, rdir, "model"));
        own_path = path;
    }
    if (!cfg->train_base && !own_path) return 0;
    Base *own = NULL;
    const char *want = cfg->base_fingerprint && *cfg->base_fingerprint && !cfg->train_base
                           ? cfg->base_fingerprint : NULL;
    if (own_path && !cfg->train_base && r->bases) {
        PL_TRY(bases_get(r->bases, own_path, &own));
        int vocab = own->cfg.vocab_size;
        if (vocab != r->base->cfg.vocab_size) {
            bases_put(r->bases, own); /* may free it: read it before */
            return pl_fail(PL_EFORMAT, "%s: a vocabulary of %d tokens, the base's has %d",
                           own_path, vocab, r->base->cfg.vocab_size);
        }
        int rc = want ? same_model(own, own_path, want, r->kind) : 0;
        if (rc < 0) {
            bases_put(r->bases, own);
            return rc;
        }
        r->base = own;
        r->own_base = 2;
        return 0;
    }
    if (own_path) {
        PL_TRY(base_load(&own, own_path));
        int rc = cfg->train_base ? base_make_flat(own) : 0;
        /* any architecture and size: it reads the same token ids, so only
         * the vocabulary must be the base's */
        if (rc == 0 && own->cfg.vocab_size != r->base->cfg.vocab_size)
            rc = pl_fail(PL_EFORMAT, "%s: a vocabulary of %d tokens, the base's has %d", own_path,
                         own->cfg.vocab_size, r->base->cfg.vocab_size);
        if (rc == 0 && want) rc = same_model(own, own_path, want, r->kind);
        if (rc < 0) {
            base_free(&own);
            return rc;
        }
    } else {
        PL_TRY(base_clone_flat(r->base, &own));
    }
    r->base = own;
    r->own_base = 1;
    return 0;
}

/* The adapter: the saved one on resume, else init_adapter; checked against
 * the configured rank and targets. */
static int load_adapter(Role *r, const Plumb__RoleConfig *cfg, unsigned targets, const char *rdir) {
    const char *init = cfg->init_adapter && *cfg->init_adapter ? cfg->init_adapter : NULL;
    char path[PL_PATH];
    const char *adir = init;
    if (rdir && (cfg->lora_rank > 0 || init)) {
        PL_TRY(pl_path_join(path, sizeof path, rdir, "adapter"));
        adir = path;
    }
    if (!adir) return 0;
    Lora *l = NULL;
    PL_TRY(lora_load_peft(&l, &r->base->cfg, adir));
    if (cfg->lora_rank > 0 && (l->cfg.rank != cfg->lora_rank || (targets && l->cfg.targets != targets))) {
        int got = l->cfg.rank;
        lora_free(&l);
        return pl_fail(PL_EFORMAT, "adapter %s: rank %d or its targets differ from lora_rank %d "
                       "and lora_targets '%s'", adir, got, cfg->lora_rank, cfg->lora_targets);
    }
    int rc = model_set_lora(r->model, l);
    if (rc < 0) lora_free(&l);
    return rc;
}

/* A role with nothing to train and no adapter or head (a rule-based
 * reward, the reference) has no state to resume. */
static int role_build(Role *r, const Plumb__RoleConfig *cfg, const char *base_path) {
    const char *name = role_kind_name(r->kind);
    int stateless = !cfg->lora_rank && !cfg->head && !cfg->train_base &&
                    !(cfg->init_adapter && *cfg->init_adapter);
    const char *resume = cfg->resume_dir && *cfg->resume_dir && !stateless ? cfg->resume_dir : NULL;
    const char *head_path = cfg->head_path && *cfg->head_path ? cfg->head_path : NULL;
    char rdir[PL_PATH] = "";
    if (resume) PL_TRY(pl_path_join(rdir, sizeof rdir, resume, name));
    if (cfg->lora_rank < 0 || cfg->micro_batch < 0)
        return pl_fail(PL_EINVAL, "lora_rank %d and micro_batch %d must be >= 0", cfg->lora_rank,
                       cfg->micro_batch);
    if (head_path && !cfg->head)
        return pl_fail(PL_EINVAL, "head_path %s given for a role without a head", head_path);
    unsigned targets = 0;
    if (cfg->lora_targets && *cfg->lora_targets)
        PL_TRY(lora_parse_targets(cfg->lora_targets, &targets));
    r->micro_batch = cfg->micro_batch;
    snprintf(r->base_path, sizeof r->base_path, "%s", base_path ? base_path : "");
    PL_TRY(own_base(r, cfg, resume ? rdir : NULL));
    ModelOptions mo = {.lora_rank = cfg->lora_rank, .lora_alpha = cfg->lora_alpha,
                       .lora_targets = targets, .head = cfg->head, .train_base = cfg->train_base,
                       .seed = cfg->seed, .dev = r->dev};
    PL_TRY(model_new(&r->model, r->base, &mo));
    PL_TRY(load_adapter(r, cfg, targets, resume ? rdir : NULL));
    if (head_path && !resume) PL_TRY(role_head_load(r, head_path));
    /* optimizer: one AdamW per trainable buffer, for a role that trains */
    PL_TRY(optim_from_msg(cfg->optim, &r->optim));
    if (r->desc->n_bodies > 0) {
        float *params[3], *grads[3];
        size_t sizes[3];
        int nb = model_trainable(r->model, params, grads, sizes);
        for (int i = 0; i < nb; i++) {
            PL_TRY(adamw_init(&r->opt[i], sizes[i], &r->optim));
            r->n_opt = i + 1;
        }
    }
    if (resume) PL_TRY(role_resume(r, rdir));
    const ModelConfig *mc = &r->base->cfg;
    r->limits = (WireLimits){.vocab = mc->vocab_size, .max_seq = mc->max_seq_len, .max_tokens = 0};
    return r->desc->init ? r->desc->init(r, cfg) : 0;
}

int role_new(Role **out, const RoleDesc *d, const Plumb__RoleConfig *cfg_in, Base *base,
             const char *base_path, const Tokenizer *tok, const char *tok_dir, Device *dev,
             Bases *bases) {
    *out = NULL;
    if (!d || !cfg_in || !base) return pl_fail(PL_EINVAL, "role_new: no role, config or base");
    RoleKind kind = d->kind;
    if (cfg_in->role && *cfg_in->role) {
        PL_TRY(role_kind_parse(cfg_in->role, &kind));
        if (kind != d->kind)
            return pl_fail(PL_EINVAL, "role_new: a configuration of role %s for role %s",
                           cfg_in->role, role_kind_name(d->kind));
    }
    /* one run-wide configuration is sent to every role; a role takes from
     * it what it uses */
    Plumb__RoleConfig cfg = *cfg_in;
    if (d->configure) d->configure(&cfg);
    Role *r = calloc(1, sizeof *r);
    PL_CHECK_ALLOC(r);
    r->desc = d;
    r->kind = kind;
    r->base = base;
    r->dev = dev;
    r->bases = bases;
    r->tok = tok;
    snprintf(r->tok_dir, sizeof r->tok_dir, "%s", tok_dir ? tok_dir : "");
    int rc = role_build(r, &cfg, base_path);
    if (rc < 0) {
        rc = pl_wrap(rc, "role %s", role_kind_name(kind));
        role_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void role_free(Role **pr) {
    if (!pr || !*pr) return;
    Role *r = *pr;
    if (r->desc && r->desc->free) r->desc->free(r);
    model_free(&r->model);
    for (int i = 0; i < r->n_opt; i++) adamw_free(&r->opt[i]);
    if (r->own_base == 2) bases_put(r->bases, r->base);
    else if (r->own_base) base_free(&r->base);
    free(r);
    *pr = NULL;
}
