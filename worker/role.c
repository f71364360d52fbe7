/* role.c: what every role shares (role.h): building a role from its
 * RoleConfig, saving and resuming its state, the request dispatch, forwards
 * in the wire's per-token convention, and the train loop (minibatches,
 * epochs, micro-batches, clipping, AdamW over the trainable buffers).
 *
 * Dimension letters: B sequences, N packed tokens, S sequences of one
 * minibatch ("part"), P preference pairs, C channels. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "algo/grpo.h"
#include "algo/ppo.h"
#include "algo/pref.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/rng.h"
#include "model/safetensors.h"
#include "algo/rules.h"
#include "worker/role_impl.h"

#define ROLE_PATH 4352

/* ------------------------------------------------------------ files */

static int join(char *buf, const char *dir, const char *name) {
    int n = snprintf(buf, ROLE_PATH, "%s/%s", dir, name);
    if (n < 0 || n >= ROLE_PATH) return pl_fail(PL_EINVAL, "path too long: %s/%s", dir, name);
    return 0;
}


static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Copies src to dst through dst.tmp and a rename. */
static int copy_file(const char *src, const char *dst) {
    char tmp[ROLE_PATH + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *in = fopen(src, "rb");
    if (!in) return pl_fail(PL_EIO, "open %s: %s", src, strerror(errno));
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        fclose(in);
        return pl_fail(PL_EIO, "open %s: %s", tmp, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while (!bad && (n = fread(buf, 1, sizeof buf, in)) > 0) bad = fwrite(buf, 1, n, out) != n;
    bad |= ferror(in);
    fclose(in);
    bad |= fclose(out) != 0;
    if (bad || rename(tmp, dst) != 0) {
        unlink(tmp);
        return pl_fail(PL_EIO, "copying %s to %s failed", src, dst);
    }
    return 0;
}

/* ------------------------------------------------------- base, head, opt */

/* A private flat copy of any base (mapped or flat). */
static int base_copy_flat(const Base *src, Base **out) {
    PL_TRY(base_new_random(out, &src->cfg, 0, 0.0f));
    Weights *w = (Weights *)&src->w; /* weights_slot only reads through it here */
    for (int i = 0; i < src->table.n; i++) {
        const Param *p = &src->table.p[i];
        memcpy((*out)->flat + p->offset, *weights_slot(w, p), p->numel * sizeof(float));
    }
    return 0;
}

static int head_save(const Model *m, const char *path) {
    int C = m->base->cfg.dim;
    StWrite ws[2] = {{.name = "weight", .data = m->head, .ndim = 1, .shape = {C}},
                     {.name = "bias", .data = m->head + C, .ndim = 1, .shape = {1}}};
    return st_write(path, ws, 2, ST_F32, NULL);
}

/* Reads tensor name of exactly n floats from f into dst. */
static int st_get(const StFile *f, const char *name, size_t n, float *dst) {
    const StTensor *t = st_find(f, name);
    if (!t) return pl_fail(PL_EFORMAT, "%s: no tensor '%s'", f->path, name);
    if (t->numel != n)
        return pl_fail(PL_EFORMAT, "%s: tensor '%s' has %zu elements, expected %zu", f->path, name,
                       t->numel, n);
    return st_copy_f32(f, t, dst);
}

static int head_load(Model *m, const char *path) {
    StFile f;
    PL_TRY(st_open(&f, path));
    int C = m->base->cfg.dim;
    int rc = st_get(&f, "weight", (size_t)C, m->head);
    if (rc == 0) rc = st_get(&f, "bias", 1, m->head + C);
    st_close(&f);
    return rc;
}

static int optim_save(const Role *r, const char *path) {
    StWrite ws[6];
    char names[6][16];
    for (int i = 0; i < r->n_opt; i++) {
        snprintf(names[2 * i], 16, "m_%d", i);
        snprintf(names[2 * i + 1], 16, "v_%d", i);
        ws[2 * i] = (StWrite){.name = names[2 * i], .data = r->opt[i].m, .ndim = 1,
                              .shape = {(int64_t)r->opt[i].n}};
        ws[2 * i + 1] = (StWrite){.name = names[2 * i + 1], .data = r->opt[i].v, .ndim = 1,
                                  .shape = {(int64_t)r->opt[i].n}};
    }
    return st_write(path, ws, 2 * r->n_opt, ST_F32, NULL);
}

static int optim_load(Role *r, const char *path) {
    StFile f;
    PL_TRY(st_open(&f, path));
    int rc = 0;
    for (int i = 0; rc == 0 && i < r->n_opt; i++) {
        char name[16];
        snprintf(name, sizeof name, "m_%d", i);
        rc = st_get(&f, name, r->opt[i].n, r->opt[i].m);
        snprintf(name, sizeof name, "v_%d", i);
        if (rc == 0) rc = st_get(&f, name, r->opt[i].n, r->opt[i].v);
    }
    if (rc == 0 && st_find(&f, "m_0") && r->n_opt == 0)
        rc = pl_fail(PL_EFORMAT, "%s: optimizer state for a role that trains nothing", path);
    st_close(&f);
    return rc;
}

static int state_save(const Role *r, const char *path) {
    json_t *o = json_object();
    PL_CHECK_ALLOC(o);
    json_object_set_new(o, "role", json_string(role_kind_name(r->kind)));
    json_object_set_new(o, "adapter_version", json_integer((json_int_t)r->adapter_version));
    json_object_set_new(o, "opt_step", json_integer((json_int_t)r->opt_step));
    char tmp[ROLE_PATH + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = json_dump_file(o, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (rc != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return pl_fail(PL_EIO, "writing %s failed", path);
    }
    return 0;
}

static int state_load(Role *r, const char *path) {
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    json_t *v = json_object_get(o, "adapter_version"), *s = json_object_get(o, "opt_step");
    int rc = 0;
    if (!json_is_integer(v) || !json_is_integer(s) || json_integer_value(v) < 0 ||
        json_integer_value(s) < 0)
        rc = pl_fail(PL_EFORMAT, "%s: needs non-negative integers adapter_version and opt_step",
                     path);
    else {
        r->adapter_version = (uint64_t)json_integer_value(v);
        r->opt_step = (long)json_integer_value(s);
    }
    json_decref(o);
    return rc;
}

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

/* ---------------------------------------------------------- new / free */

/* The reference is the frozen base (plus init_adapter when given): it
 * takes no adapter, head, full fine-tuning or resume state from cfg, so one
 * run-wide configuration can be sent to every role. A role with nothing to
 * train and no adapter or head (a rule-based reward) has no state to
 * resume either. */
static int role_build(Role *r, const Plumb__RoleConfig *cfg_in, const char *base_path) {
    const char *name = role_kind_name(r->kind);
    Plumb__RoleConfig ref_cfg;
    const Plumb__RoleConfig *cfg = cfg_in;
    if (r->kind == ROLE_REFERENCE) {
        ref_cfg = *cfg_in;
        ref_cfg.lora_rank = 0;
        ref_cfg.head = 0;
        ref_cfg.train_base = 0;
        ref_cfg.head_path = NULL;
        ref_cfg.base_path = NULL;
        ref_cfg.resume_dir = NULL;
        cfg = &ref_cfg;
    }
    int stateless = !cfg->lora_rank && !cfg->head && !cfg->train_base &&
                    !(cfg->init_adapter && *cfg->init_adapter);
    const char *resume = cfg->resume_dir && *cfg->resume_dir && !stateless ? cfg->resume_dir : NULL;
    const char *init_adapter = cfg->init_adapter && *cfg->init_adapter ? cfg->init_adapter : NULL;
    const char *head_path = cfg->head_path && *cfg->head_path ? cfg->head_path : NULL;
    char rdir[ROLE_PATH] = "", path[ROLE_PATH];
    if (resume) PL_TRY(join(rdir, resume, name));
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

    /* an own model: a full fine-tuning role's (its checkpoint's on resume,
     * else base_path's, else a flat copy of the shared base) */
    const char *own_path = cfg->base_path && *cfg->base_path ? cfg->base_path : NULL;
    if (cfg->train_base && resume) {
        PL_TRY(join(path, rdir, "model"));
        own_path = path;
    }
    if (cfg->train_base || own_path) {
        Base *own = NULL;
        if (own_path) {
            PL_TRY(base_load(&own, own_path));
            int rc = cfg->train_base ? base_make_flat(own) : 0;
            if (rc == 0 && (own->cfg.vocab_size != r->base->cfg.vocab_size ||
                            own->cfg.dim != r->base->cfg.dim ||
                            own->cfg.n_layers != r->base->cfg.n_layers))
                rc = pl_fail(PL_EFORMAT, "%s: a model of another shape than the base", own_path);
            if (rc < 0) {
                base_free(&own);
                return rc;
            }
        } else {
            PL_TRY(base_copy_flat(r->base, &own));
        }
        r->base = own;
        r->own_base = 1;
    }
    ModelOptions mo = {.lora_rank = cfg->lora_rank, .lora_alpha = cfg->lora_alpha,
                       .lora_targets = targets, .head = cfg->head, .train_base = cfg->train_base,
                       .seed = cfg->seed};
    PL_TRY(model_new(&r->model, r->base, &mo));
    Model *m = r->model;
    const ModelConfig *mc = &r->base->cfg;

    /* adapter: the saved one on resume, else init_adapter */
    const char *adir = NULL;
    if (resume && (cfg->lora_rank > 0 || init_adapter)) {
        PL_TRY(join(path, rdir, "adapter"));
        adir = path;
    } else if (init_adapter) {
        adir = init_adapter;
    }
    if (adir) {
        Lora *l = NULL;
        PL_TRY(lora_load_peft(&l, mc, adir));
        if (cfg->lora_rank > 0 && (l->cfg.rank != cfg->lora_rank || (targets && l->cfg.targets != targets))) {
            int got = l->cfg.rank;
            lora_free(&l);
            return pl_fail(PL_EFORMAT, "adapter %s: rank %d or its targets differ from lora_rank %d "
                           "and lora_targets '%s'", adir, got, cfg->lora_rank, cfg->lora_targets);
        }
        int rc = model_set_lora(m, l);
        if (rc < 0) {
            lora_free(&l);
            return rc;
        }
    }
    /* head */
    if (cfg->head && resume) {
        PL_TRY(join(path, rdir, "head.safetensors"));
        PL_TRY(head_load(m, path));
    } else if (head_path) {
        PL_TRY(head_load(m, head_path));
    }
    /* optimizer: one AdamW per trainable buffer (reference trains nothing) */
    PL_TRY(optim_from_msg(cfg->optim, &r->optim));
    if (r->kind != ROLE_REFERENCE) {
        float *params[3], *grads[3];
        size_t sizes[3];
        int nb = model_trainable(m, params, grads, sizes);
        for (int i = 0; i < nb; i++) {
            PL_TRY(adamw_init(&r->opt[i], sizes[i], &r->optim));
            r->n_opt = i + 1;
        }
    }
    if (resume) {
        PL_TRY(join(path, rdir, "state.json"));
        PL_TRY(state_load(r, path));
        if (r->n_opt) {
            PL_TRY(join(path, rdir, "optimizer.safetensors"));
            PL_TRY(optim_load(r, path));
        }
        for (int i = 0; i < r->n_opt; i++) r->opt[i].step = r->opt_step;
    }
    /* reward rule */
    const char *rule = cfg->rule && *cfg->rule && strcmp(cfg->rule, "model") ? cfg->rule : NULL;
    if (rule) {
        if (r->kind != ROLE_REWARD) return pl_fail(PL_EINVAL, "rule '%s' set on a %s", rule, name);
        RewardRule rr;
        PL_TRY(reward_rule_parse(rule, &rr));
        if (reward_rule_needs_text(rr) && !r->tok)
            return pl_fail(PL_EINVAL, "rule %s needs a tokenizer to decode responses", rule);
        snprintf(r->rule, sizeof r->rule, "%s", rule);
        snprintf(r->rule_arg, sizeof r->rule_arg, "%s", cfg->rule_arg ? cfg->rule_arg : "");
        r->rule_id = (int)rr;
        PL_TRY(reward_rule_prepare(rr, r->rule_arg, &r->rule_state));
    }
    r->limits = (WireLimits){.vocab = mc->vocab_size, .max_seq = mc->max_seq_len, .max_tokens = 0};
    return 0;
}

int role_new(Role **out, const Plumb__RoleConfig *cfg, Base *base, const char *base_path,
             const Tokenizer *tok, const char *tok_dir) {
    *out = NULL;
    if (!cfg || !base) return pl_fail(PL_EINVAL, "role_new: no config or no base");
    RoleKind kind = ROLE_ACTOR;
    PL_TRY(role_kind_parse(cfg->role, &kind));
    Role *r = calloc(1, sizeof *r);
    PL_CHECK_ALLOC(r);
    r->kind = kind;
    r->base = base;
    r->tok = tok;
    r->rule_id = -1;
    snprintf(r->tok_dir, sizeof r->tok_dir, "%s", tok_dir ? tok_dir : "");
    int rc = role_build(r, cfg, base_path);
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
    model_free(&r->model);
    for (int i = 0; i < r->n_opt; i++) adamw_free(&r->opt[i]);
    reward_rule_free(&r->rule_state);
    if (r->own_base) base_free(&r->base);
    free(r);
    *pr = NULL;
}

/* ------------------------------------------------------ save / export */

int role_save(const Role *r, const char *dir) {
    const char *name = role_kind_name(r->kind);
    char rdir[ROLE_PATH], path[ROLE_PATH];
    int rc = join(rdir, dir, name);
    if (rc == 0) rc = pl_mkdirs(rdir);
    const Model *m = r->model;
    if (rc == 0 && m->lora && (rc = join(path, rdir, "adapter")) == 0)
        rc = lora_save_peft(m->lora, &r->base->cfg, path, r->base_path[0] ? r->base_path : NULL);
    if (rc == 0 && m->head && (rc = join(path, rdir, "head.safetensors")) == 0)
        rc = head_save(m, path);
    if (rc == 0 && r->n_opt && (rc = join(path, rdir, "optimizer.safetensors")) == 0)
        rc = optim_save(r, path);
    if (rc == 0 && r->own_base && (rc = join(path, rdir, "model")) == 0)
        rc = base_save_hf(r->base, path);
    /* state.json last: its presence marks a complete save */
    if (rc == 0 && (rc = join(path, rdir, "state.json")) == 0) rc = state_save(r, path);
    return rc < 0 ? pl_wrap(rc, "saving role %s into %s", name, dir) : 0;
}

int role_export_hf(const Role *r, const char *dir) {
    Base *copy = NULL;
    Lora *l = NULL;
    const Lora *src = r->model->lora;
    const ModelConfig *mc = &r->base->cfg;
    char path[ROLE_PATH], from[ROLE_PATH];
    int rc = pl_mkdirs(dir);
    if (rc == 0) rc = base_copy_flat(r->base, &copy);
    if (rc == 0 && src) {
        rc = lora_new(&l, mc, &src->cfg, 0);
        if (rc == 0) {
            memcpy(l->mem, src->mem, src->n * sizeof(float));
            rc = lora_merge(l, copy);
        }
    }
    if (rc == 0) rc = base_save_hf(copy, dir);
    static const char *const tok_files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; rc == 0 && r->tok_dir[0] && i < 2; i++) {
        if ((rc = join(from, r->tok_dir, tok_files[i])) < 0) break;
        if (!exists(from)) continue;
        if ((rc = join(path, dir, tok_files[i])) == 0) rc = copy_file(from, path);
    }
    if (rc == 0 && src && (rc = join(path, dir, "adapter")) == 0)
        rc = lora_save_peft(src, mc, path, r->base_path[0] ? r->base_path : NULL);
    lora_free(&l);
    base_free(&copy);
    return rc < 0 ? pl_wrap(rc, "exporting role %s into %s", role_kind_name(r->kind), dir) : 0;
}

/* ------------------------------------------------------------ forwards */

/* targets (N): the next token within its sequence, -1 at each last token. */
static void make_targets(const int *tokens, const int *offsets, int B, int *targets) {
    for (int b = 0; b < B; b++)
        for (int t = offsets[b]; t < offsets[b + 1]; t++)
            targets[t] = t + 1 < offsets[b + 1] ? tokens[t + 1] : -1;
}

/* Model outputs (model convention) of sequences [s0, s1), written at their
 * token positions; cu (s1 - s0 + 1) is scratch. */
static int fwd_range(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                     int s1, float T, int *cu, float *lp, float *ent, float *val) {
    int t0 = offsets[s0];
    for (int i = 0; i <= s1 - s0; i++) cu[i] = offsets[s0 + i] - t0;
    Batch b = {.tokens = tokens + t0, .targets = targets + t0, .cu_seqlens = cu, .B = s1 - s0,
               .temperature = T};
    return model_forward(m, &b, lp ? lp + t0 : NULL, ent ? ent + t0 : NULL, val ? val + t0 : NULL,
                         NULL);
}

static int bwd_range(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                     int s1, float T, int *cu, const float *dlp, const float *dent,
                     const float *dval) {
    int t0 = offsets[s0];
    for (int i = 0; i <= s1 - s0; i++) cu[i] = offsets[s0 + i] - t0;
    Batch b = {.tokens = tokens + t0, .targets = targets + t0, .cu_seqlens = cu, .B = s1 - s0,
               .temperature = T};
    return model_backward(m, &b, dlp ? dlp + t0 : NULL, dent ? dent + t0 : NULL,
                          dval ? dval + t0 : NULL);
}

/* wire[t] = model[t - 1] within each sequence, 0 at its first token. */
static void shift_in(const int *offsets, int B, const float *model, float *wire) {
    for (int b = 0; b < B; b++) {
        int s = offsets[b], e = offsets[b + 1];
        wire[s] = 0.0f;
        for (int t = s + 1; t < e; t++) wire[t] = model[t - 1];
    }
}

/* The gradient's way back: dmodel[t - 1] = dwire[t], 0 at each last token
 * (the wire's first token has no model position). */
static void shift_back(const int *offsets, int B, const float *dwire, float *dmodel) {
    for (int b = 0; b < B; b++) {
        int s = offsets[b], e = offsets[b + 1];
        for (int t = s; t + 1 < e; t++) dmodel[t] = dwire[t + 1];
        dmodel[e - 1] = 0.0f;
    }
}

static int chunk(const Role *r, int S) {
    return r->micro_batch > 0 && r->micro_batch < S ? r->micro_batch : (S > 0 ? S : 1);
}

int role_infer(Role *r, const int *tokens, const int *offsets, int B, float T, float *lp,
               float *ent, float *values, float *last) {
    if (B <= 0) return 0;
    if ((values || last) && !r->model->head)
        return pl_fail(PL_EINVAL, "role %s has no value head", role_kind_name(r->kind));
    int N = offsets[B], mb = chunk(r, B), rc = 0;
    int *targets = malloc(sizeof(int) * N), *cu = malloc(sizeof(int) * (mb + 1));
    float *mlp = lp ? malloc(sizeof(float) * N) : NULL;
    float *ment = ent ? malloc(sizeof(float) * N) : NULL;
    float *mval = values || last ? malloc(sizeof(float) * N) : NULL;
    if (!targets || !cu || (lp && !mlp) || (ent && !ment) || ((values || last) && !mval)) {
        rc = pl_fail(PL_ENOMEM, "role %s: out of memory for %d tokens", role_kind_name(r->kind), N);
        goto done;
    }
    make_targets(tokens, offsets, B, targets);
    for (int s0 = 0; rc == 0 && s0 < B; s0 += mb) {
        int s1 = s0 + mb < B ? s0 + mb : B;
        rc = fwd_range(r->model, tokens, targets, offsets, s0, s1, T, cu, mlp, ment, mval);
    }
    if (rc < 0) goto done;
    if (lp) shift_in(offsets, B, mlp, lp);
    if (ent) shift_in(offsets, B, ment, ent);
    if (values) shift_in(offsets, B, mval, values);
    if (last)
        for (int b = 0; b < B; b++) last[b] = mval[offsets[b + 1] - 1];
done:
    free(targets);
    free(cu);
    free(mlp);
    free(ment);
    free(mval);
    return rc;
}

/* ------------------------------------------------------------ dispatch */

static const char *body_name(const Plumb__Envelope *q) {
    switch (q->body_case) {
    case PLUMB__ENVELOPE__BODY_REGISTER: return "register";
    case PLUMB__ENVELOPE__BODY_WELCOME: return "welcome";
    case PLUMB__ENVELOPE__BODY_HEARTBEAT: return "heartbeat";
    case PLUMB__ENVELOPE__BODY_GENERATE: return "generate";
    case PLUMB__ENVELOPE__BODY_GENERATED: return "generated";
    case PLUMB__ENVELOPE__BODY_LOGPROBS: return "logprobs";
    case PLUMB__ENVELOPE__BODY_LOGPROBS_REP: return "logprobs_rep";
    case PLUMB__ENVELOPE__BODY_VALUES: return "values";
    case PLUMB__ENVELOPE__BODY_VALUES_REP: return "values_rep";
    case PLUMB__ENVELOPE__BODY_SCORE: return "score";
    case PLUMB__ENVELOPE__BODY_SCORE_REP: return "score_rep";
    case PLUMB__ENVELOPE__BODY_TRAIN:
        switch (q->train ? q->train->body_case : PLUMB__TRAIN_REQ__BODY__NOT_SET) {
        case PLUMB__TRAIN_REQ__BODY_SFT: return "train.sft";
        case PLUMB__TRAIN_REQ__BODY_PPO: return "train.ppo";
        case PLUMB__TRAIN_REQ__BODY_GRPO: return "train.grpo";
        case PLUMB__TRAIN_REQ__BODY_DPO: return "train.dpo";
        case PLUMB__TRAIN_REQ__BODY_ORPO: return "train.orpo";
        case PLUMB__TRAIN_REQ__BODY_VALUE: return "train.value";
        case PLUMB__TRAIN_REQ__BODY_BT: return "train.bt";
        default: return "train without a body";
        }
    case PLUMB__ENVELOPE__BODY_TRAIN_REP: return "train_rep";
    case PLUMB__ENVELOPE__BODY_ADAPTER: return "adapter";
    case PLUMB__ENVELOPE__BODY_CHECKPOINT: return "checkpoint";
    case PLUMB__ENVELOPE__BODY_SHUTDOWN: return "shutdown";
    case PLUMB__ENVELOPE__BODY_OK: return "ok";
    case PLUMB__ENVELOPE__BODY_ERROR: return "error";
    default: return "an empty message";
    }
}

int role_unsupported(const Role *r, const Plumb__Envelope *q) {
    return pl_fail(PL_EPROTO, "role '%s' does not answer '%s'", role_kind_name(r->kind), body_name(q));
}

int role_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    if (!r || !q || !a || !rep) return pl_fail(PL_EINVAL, "role_handle: NULL argument");
    const char *name = role_kind_name(r->kind);
    if (q->role && *q->role && strcmp(q->role, name))
        return pl_fail(PL_EPROTO, "a request for role '%s' ('%s') reached role '%s'", q->role,
                       body_name(q), name);
    pl_clear_error();
    switch (r->kind) {
    case ROLE_ACTOR: return actor_handle(r, q, a, rep);
    case ROLE_CRITIC: return critic_handle(r, q, a, rep);
    case ROLE_REWARD: return reward_handle(r, q, a, rep);
    case ROLE_REFERENCE: return reference_handle(r, q, a, rep);
    default: return role_unsupported(r, q);
    }
}

int role_reply_ok(WireArena *a, Plumb__Envelope *rep) {
    Plumb__Ok *ok = wire_alloc(a, sizeof *ok);
    PL_CHECK_ALLOC(ok);
    plumb__ok__init(ok);
    rep->body_case = PLUMB__ENVELOPE__BODY_OK;
    rep->ok = ok;
    return 0;
}

int role_logprobs(Role *r, const Plumb__LogprobsReq *q, WireArena *a, Plumb__Envelope *rep) {
    WireSeqs s;
    PL_TRY(wire_get_seqs(q->seqs, &r->limits, "logprobs.seqs", &s));
    float T = q->temperature > 0 && isfinite(q->temperature) ? q->temperature : 1.0f;
    size_t n = (size_t)(s.N ? s.N : 1);
    float *lp = wire_alloc(a, sizeof(float) * n);
    float *ent = q->entropy ? wire_alloc(a, sizeof(float) * n) : NULL;
    Plumb__LogprobsRep *m = wire_alloc(a, sizeof *m);
    int rc = !lp || !m || (q->entropy && !ent) ? pl_fail(PL_ENOMEM, "logprobs: out of memory") : 0;
    if (rc == 0) rc = role_infer(r, s.tokens, s.offsets, s.B, T, lp, ent, NULL, NULL);
    if (rc == 0) {
        plumb__logprobs_rep__init(m);
        m->logprobs = wire_f32(a, lp, s.N);
        m->entropy = ent ? wire_f32(a, ent, s.N) : NULL;
        m->adapter_version = r->adapter_version;
        rep->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS_REP;
        rep->logprobs_rep = m;
    }
    wire_seqs_free(&s);
    return rc;
}

int role_checkpoint(Role *r, const Plumb__CheckpointReq *q, int allow_export, WireArena *a,
                    Plumb__Envelope *rep) {
    if (!q->dir || !*q->dir) return pl_fail(PL_EPROTO, "checkpoint: no dir");
    PL_TRY(role_save(r, q->dir));
    if (q->export_hf && allow_export) {
        char path[ROLE_PATH];
        PL_TRY(join(path, q->dir, "hf"));
        PL_TRY(role_export_hf(r, path));
    }
    return role_reply_ok(a, rep);
}

/* --------------------------------------------------------------- train */

#define MAX_METRICS 10

static const char *const m_sft[] = {"loss", "grad_norm", "lr", "nll", "tokens"};
static const char *const m_policy[] = {"loss",     "grad_norm", "lr",      "pg_loss",
                                       "kl",       "clipfrac",  "approx_kl", "entropy"};
static const char *const m_value[] = {"loss", "grad_norm", "lr", "value_loss", "value_clipfrac",
                                      "value_mean"};
static const char *const m_dpo[] = {"loss",         "grad_norm", "lr",      "reward_chosen",
                                    "reward_rejected", "margin", "accuracy"};
static const char *const m_orpo[] = {"loss",   "grad_norm", "lr",  "reward_chosen", "reward_rejected",
                                     "margin", "accuracy",  "nll", "log_odds"};
static const char *const m_bt[] = {"loss", "grad_norm", "lr", "accuracy", "margin",
                                   "reward_chosen", "reward_rejected"};

/* One decoded, validated train request. */
typedef struct {
    Plumb__TrainReq__BodyCase body;
    int pairs;                /* units are pairs: s[0] chosen, s[1] rejected */
    WireSeqs s[2];
    float *in[2][3];          /* per-token inputs of s[k], (N of s[k]) each  */
    float *margin;            /* bt: (P) or NULL                             */
    int U;                    /* units: sequences, or pairs                  */
    float T;                  /* log-prob temperature                        */
    int need_ent, need_val, need_last;
    PolicyLossOpts po;
    float entropy_coef;
    float clip_range;
    LossAgg agg;
    int max_new;
    DpoOpts dpo;
    float lambda, center_coef;
    const char *const *names; /* metric names                                */
    int n_metrics;
    const Plumb__DataParallel *dp; /* NULL: alone                            */
} Job;

/* One minibatch, packed: for pairs the P chosen sequences, then the P
 * rejected ones. */
typedef struct {
    int S, N;                 /* sequences, tokens                           */
    int P, Nc;                /* pairs; tokens of the chosen half            */
    int *tokens, *offsets, *targets; /* (N), (S+1), (N)                      */
    float *maskf;             /* (N)                                         */
    float *in[3];             /* (N) gathered per-token inputs, or NULL      */
    float *margin;            /* (P) or NULL                                 */
    int *offsets_r;           /* (P+1) the rejected half's offsets from 0    */
} Part;

static void job_free(Job *j) {
    for (int k = 0; k < 2; k++) {
        wire_seqs_free(&j->s[k]);
        for (int i = 0; i < 3; i++) free(j->in[k][i]);
    }
    free(j->margin);
}

static void part_free(Part *p) {
    free(p->tokens);
    free(p->offsets);
    free(p->targets);
    free(p->maskf);
    for (int i = 0; i < 3; i++) free(p->in[i]);
    free(p->margin);
    free(p->offsets_r);
    memset(p, 0, sizeof *p);
}

static int get_pair(Role *r, const Plumb__Seqs *c, const Plumb__Seqs *rj, const char *what, Job *j) {
    char name[64];
    snprintf(name, sizeof name, "%s.chosen", what);
    PL_TRY(wire_get_seqs(c, &r->limits, name, &j->s[0]));
    snprintf(name, sizeof name, "%s.rejected", what);
    PL_TRY(wire_get_seqs(rj, &r->limits, name, &j->s[1]));
    if (j->s[0].B != j->s[1].B)
        return pl_fail(PL_EPROTO, "%s: %d chosen and %d rejected sequences", what, j->s[0].B,
                       j->s[1].B);
    j->pairs = 1;
    j->U = j->s[0].B;
    return 0;
}

static int get_tok(const Plumb__Tensor *t, const WireSeqs *s, const char *what, const char *field,
                   float **out) {
    char name[64];
    snprintf(name, sizeof name, "%s.%s", what, field);
    return wire_get_f32(t, s->N, 1, name, out);
}

static int parse_agg(const char *s, const char *what, LossAgg *agg) {
    *agg = LOSS_AGG_TOKEN_MEAN;
    if (s && *s && loss_agg_parse(s, agg) < 0) return pl_wrap(PL_EPROTO, "%s.loss_agg", what);
    return 0;
}

/* Decodes and checks everything of q before the model is touched. */
static int job_prepare(Role *r, const Plumb__TrainReq *q, Job *j) {
    j->body = q->body_case;
    j->T = 1.0f;
    const Model *m = r->model;
    switch (q->body_case) {
    case PLUMB__TRAIN_REQ__BODY_SFT: {
        const char *w = "train.sft";
        j->names = m_sft, j->n_metrics = 5;
        PL_TRY(wire_get_seqs(q->sft->seqs, &r->limits, "train.sft.seqs", &j->s[0]));
        j->U = j->s[0].B;
        long masked = 0;
        for (int t = 0; t < j->s[0].N; t++) masked += j->s[0].mask[t];
        if (j->U > 0 && masked == 0) return pl_fail(PL_EPROTO, "%s: no mask-1 (response) tokens", w);
        break;
    }
    case PLUMB__TRAIN_REQ__BODY_PPO:
    case PLUMB__TRAIN_REQ__BODY_GRPO: {
        int grpo = q->body_case == PLUMB__TRAIN_REQ__BODY_GRPO;
        const char *w = grpo ? "train.grpo" : "train.ppo";
        const Plumb__PolicyBody *b = grpo ? q->grpo : q->ppo;
        j->names = m_policy, j->n_metrics = 8;
        char name[64];
        snprintf(name, sizeof name, "%s.seqs", w);
        PL_TRY(wire_get_seqs(b->seqs, &r->limits, name, &j->s[0]));
        j->U = j->s[0].B;
        PL_TRY(get_tok(b->old_logprobs, &j->s[0], w, "old_logprobs", &j->in[0][0]));
        PL_TRY(get_tok(b->advantages, &j->s[0], w, "advantages", &j->in[0][1]));
        if (b->kl_coef != 0.0f || b->ref_logprobs)
            PL_TRY(get_tok(b->ref_logprobs, &j->s[0], w, "ref_logprobs", &j->in[0][2]));
        if (grpo) algo_grpo_policy_defaults(&j->po);
        else algo_ppo_policy_defaults(&j->po);
        j->po.clip_low = b->clip_low;
        j->po.clip_high = b->clip_high;
        j->po.dual_clip = b->dual_clip;
        j->po.max_new_tokens = b->max_new_tokens;
        j->po.kl_coef = b->kl_coef;
        PL_TRY(parse_agg(b->loss_agg, w, &j->po.agg));
        if (b->kl_estimator && *b->kl_estimator && kl_estimator_parse(b->kl_estimator, &j->po.kl_est) < 0)
            return pl_wrap(PL_EPROTO, "%s.kl_estimator", w);
        if (!(b->clip_low >= 0) || !(b->clip_high >= 0) || !isfinite(b->clip_low) ||
            !isfinite(b->clip_high) || !(b->dual_clip == 0 || b->dual_clip > 1) ||
            !isfinite(b->kl_coef) || !isfinite(b->entropy_coef) || !isfinite(b->temperature))
            return pl_fail(PL_EPROTO, "%s: clip_low %g clip_high %g dual_clip %g kl_coef %g "
                           "entropy_coef %g temperature %g: out of range", w, b->clip_low,
                           b->clip_high, b->dual_clip, b->kl_coef, b->entropy_coef, b->temperature);
        if (j->po.agg == LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM && b->max_new_tokens <= 0)
            return pl_fail(PL_EPROTO, "%s: loss_agg seq_mean_token_sum_norm needs max_new_tokens > 0", w);
        j->entropy_coef = b->entropy_coef;
        j->T = b->temperature > 0 ? b->temperature : 1.0f;
        j->need_ent = 1;
        break;
    }
    case PLUMB__TRAIN_REQ__BODY_VALUE: {
        const char *w = "train.value";
        const Plumb__ValueBody *b = q->value;
        j->names = m_value, j->n_metrics = 6;
        if (!m->head) return pl_fail(PL_EPROTO, "%s: role %s has no value head", w, role_kind_name(r->kind));
        PL_TRY(wire_get_seqs(b->seqs, &r->limits, "train.value.seqs", &j->s[0]));
        j->U = j->s[0].B;
        PL_TRY(get_tok(b->old_values, &j->s[0], w, "old_values", &j->in[0][0]));
        PL_TRY(get_tok(b->returns, &j->s[0], w, "returns", &j->in[0][1]));
        PL_TRY(parse_agg(b->loss_agg, w, &j->agg));
        if (!isfinite(b->clip_range))
            return pl_fail(PL_EPROTO, "%s: clip_range %g is not finite", w, b->clip_range);
        if (j->agg == LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM && b->max_new_tokens <= 0)
            return pl_fail(PL_EPROTO, "%s: loss_agg seq_mean_token_sum_norm needs max_new_tokens > 0", w);
        j->clip_range = b->clip_range;
        j->max_new = b->max_new_tokens;
        j->need_val = 1;
        break;
    }
    case PLUMB__TRAIN_REQ__BODY_DPO: {
        const char *w = "train.dpo";
        const Plumb__DpoBody *b = q->dpo;
        j->names = m_dpo, j->n_metrics = 7;
        PL_TRY(get_pair(r, b->chosen, b->rejected, w, j));
        PL_TRY(get_tok(b->ref_chosen, &j->s[0], w, "ref_chosen", &j->in[0][0]));
        PL_TRY(get_tok(b->ref_rejected, &j->s[1], w, "ref_rejected", &j->in[1][0]));
        algo_dpo_defaults(&j->dpo);
        if (b->loss_type && *b->loss_type && dpo_loss_parse(b->loss_type, &j->dpo.loss_type) < 0)
            return pl_wrap(PL_EPROTO, "%s.loss_type", w);
        if (!(b->beta > 0) || !isfinite(b->beta) || !(b->label_smoothing >= 0) ||
            !(b->label_smoothing <= 0.5f))
            return pl_fail(PL_EPROTO, "%s: beta %g must be > 0 and label_smoothing %g in [0, 0.5]",
                           w, b->beta, b->label_smoothing);
        j->dpo.beta = b->beta;
        j->dpo.label_smoothing = b->label_smoothing;
        break;
    }
    case PLUMB__TRAIN_REQ__BODY_ORPO: {
        const char *w = "train.orpo";
        j->names = m_orpo, j->n_metrics = 9;
        PL_TRY(get_pair(r, q->orpo->chosen, q->orpo->rejected, w, j));
        if (!(q->orpo->lambda >= 0) || !isfinite(q->orpo->lambda))
            return pl_fail(PL_EPROTO, "%s: lambda %g must be >= 0", w, q->orpo->lambda);
        j->lambda = q->orpo->lambda;
        break;
    }
    case PLUMB__TRAIN_REQ__BODY_BT: {
        const char *w = "train.bt";
        const Plumb__BtBody *b = q->bt;
        j->names = m_bt, j->n_metrics = 7;
        if (!m->head) return pl_fail(PL_EPROTO, "%s: role %s has no score head", w, role_kind_name(r->kind));
        PL_TRY(get_pair(r, b->chosen, b->rejected, w, j));
        if (b->margin) PL_TRY(wire_get_f32(b->margin, j->U, 1, "train.bt.margin", &j->margin));
        if (!(b->center_coef >= 0) || !isfinite(b->center_coef))
            return pl_fail(PL_EPROTO, "%s: center_coef %g must be >= 0", w, b->center_coef);
        j->center_coef = b->center_coef;
        j->need_last = 1;
        break;
    }
    default:
        return pl_fail(PL_EPROTO, "train: no body");
    }
    return 0;
}

/* Packs units[0..u) of j into p (chosen halves first for pairs). */
static int part_build(const Job *j, const int *units, int u, Part *p) {
    memset(p, 0, sizeof *p);
    int ns = j->pairs ? 2 : 1;
    long N = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < u; i++) N += j->s[k].offsets[units[i] + 1] - j->s[k].offsets[units[i]];
    p->S = u * ns;
    p->N = (int)N;
    p->P = j->pairs ? u : 0;
    size_t nn = (size_t)(N ? N : 1);
    p->tokens = malloc(sizeof(int) * nn);
    p->targets = malloc(sizeof(int) * nn);
    p->offsets = malloc(sizeof(int) * (p->S + 1));
    p->maskf = malloc(sizeof(float) * nn);
    int bad = !p->tokens || !p->targets || !p->offsets || !p->maskf;
    for (int x = 0; x < 3; x++)
        if (j->in[0][x]) bad |= !(p->in[x] = malloc(sizeof(float) * nn));
    if (j->margin) bad |= !(p->margin = malloc(sizeof(float) * (u ? u : 1)));
    if (j->pairs) bad |= !(p->offsets_r = malloc(sizeof(int) * (u + 1)));
    if (bad) {
        part_free(p);
        return pl_fail(PL_ENOMEM, "train: out of memory for a minibatch of %ld tokens", N);
    }
    int pos = 0, si = 0;
    p->offsets[0] = 0;
    for (int k = 0; k < ns; k++) {
        const WireSeqs *s = &j->s[k];
        for (int i = 0; i < u; i++) {
            int a = s->offsets[units[i]], e = s->offsets[units[i] + 1], n = e - a;
            memcpy(p->tokens + pos, s->tokens + a, sizeof(int) * n);
            memcpy(p->maskf + pos, s->maskf + a, sizeof(float) * n);
            for (int x = 0; x < 3; x++)
                if (p->in[x]) memcpy(p->in[x] + pos, j->in[k][x] + a, sizeof(float) * n);
            pos += n;
            p->offsets[++si] = pos;
        }
        if (k == 0) p->Nc = pos;
    }
    for (int i = 0; j->pairs && i <= u; i++) p->offsets_r[i] = p->offsets[u + i] - p->Nc;
    for (int i = 0; p->margin && i < u; i++) p->margin[i] = j->margin[units[i]];
    make_targets(p->tokens, p->offsets, p->S, p->targets);
    return 0;
}

/* Work arrays of one step, sized for the largest part. */
typedef struct {
    float *mlp, *ment, *mval;    /* model outputs (N)                     */
    float *lp, *ent, *val;       /* wire convention (N)                   */
    float *dlp, *dent, *dval;    /* d loss / d wire arrays (N)            */
    float *dmlp, *dment, *dmval; /* d loss / d model outputs (N)          */
    float *last, *dlast;         /* (S) head value at each last token     */
    int *cu;                     /* (S+1)                                 */
} Work;

static void work_free(Work *w) {
    float **f[] = {&w->mlp, &w->ment, &w->mval, &w->lp, &w->ent, &w->val, &w->dlp, &w->dent,
                   &w->dval, &w->dmlp, &w->dment, &w->dmval, &w->last, &w->dlast};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    free(w->cu);
    w->cu = NULL;
}

static int work_alloc(Work *w, long N, int S) {
    float **f[] = {&w->mlp, &w->ment, &w->mval, &w->lp, &w->ent, &w->val, &w->dlp, &w->dent,
                   &w->dval, &w->dmlp, &w->dment, &w->dmval};
    int bad = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        bad |= !(*f[i] = calloc((size_t)(N ? N : 1), sizeof(float)));
    bad |= !(w->last = calloc((size_t)S + 1, sizeof(float)));
    bad |= !(w->dlast = calloc((size_t)S + 1, sizeof(float)));
    bad |= !(w->cu = calloc((size_t)S + 2, sizeof(int)));
    if (bad) {
        work_free(w);
        return pl_fail(PL_ENOMEM, "train: out of memory for %ld tokens", N);
    }
    return 0;
}

/* The loss of one part from its wire-convention outputs: metrics m (the
 * job's names; grad_norm and lr are filled by the caller) and the
 * gradients w->dlp, dent, dval, dlast (zeroed before). */
static int part_loss(const Job *j, const Part *p, Work *w, double *m) {
    AlgoSeqs s = {.B = p->S, .N = p->N, .offsets = p->offsets, .mask = p->maskf};
    AlgoSeqs sc = {.B = p->P, .N = p->Nc, .offsets = p->offsets, .mask = p->maskf};
    AlgoSeqs sr = {.B = p->P, .N = p->N - p->Nc, .offsets = p->offsets_r, .mask = p->maskf + p->Nc};
    int Nc = p->Nc;
    switch (j->body) {
    case PLUMB__TRAIN_REQ__BODY_SFT: {
        double msum = 0, nll = 0;
        for (int t = 0; t < p->N; t++) {
            msum += p->maskf[t];
            nll -= (double)p->maskf[t] * w->lp[t];
        }
        if (msum > 0) {
            nll /= msum;
            for (int t = 0; t < p->N; t++) w->dlp[t] = (float)(-p->maskf[t] / msum);
        }
        m[0] = nll, m[3] = nll, m[4] = msum;
        return 0;
    }
    case PLUMB__TRAIN_REQ__BODY_PPO:
    case PLUMB__TRAIN_REQ__BODY_GRPO: {
        PolicyLossOut o;
        PL_TRY(algo_policy_loss(&s, w->lp, p->in[0], p->in[1], p->in[2], w->ent, &j->po, &o, w->dlp));
        double loss = o.loss;
        if (j->entropy_coef != 0.0f) {
            double msum = 0;
            for (int t = 0; t < p->N; t++) msum += p->maskf[t];
            if (msum > 0) {
                loss -= j->entropy_coef * o.entropy;
                for (int t = 0; t < p->N; t++)
                    w->dent[t] = (float)(-j->entropy_coef * p->maskf[t] / msum);
            }
        }
        m[0] = loss, m[3] = o.pg_loss, m[4] = o.kl_loss, m[5] = o.clipfrac, m[6] = o.approx_kl;
        m[7] = o.entropy;
        return 0;
    }
    case PLUMB__TRAIN_REQ__BODY_VALUE: {
        ValueLossOut o;
        PL_TRY(algo_value_loss(&s, w->val, p->in[0], p->in[1], j->clip_range, j->agg, j->max_new,
                               &o, w->dval));
        m[0] = o.loss, m[3] = o.loss, m[4] = o.clipfrac, m[5] = o.value_mean;
        return 0;
    }
    case PLUMB__TRAIN_REQ__BODY_DPO:
    case PLUMB__TRAIN_REQ__BODY_ORPO:
    case PLUMB__TRAIN_REQ__BODY_BT: {
        PrefOut o;
        if (j->body == PLUMB__TRAIN_REQ__BODY_DPO)
            PL_TRY(algo_dpo(&sc, w->lp, p->in[0], &sr, w->lp + Nc, p->in[0] + Nc, &j->dpo, &o,
                            w->dlp, w->dlp + Nc));
        else if (j->body == PLUMB__TRAIN_REQ__BODY_ORPO)
            PL_TRY(algo_orpo(&sc, w->lp, &sr, w->lp + Nc, j->lambda, &o, w->dlp, w->dlp + Nc));
        else
            PL_TRY(algo_bt_loss(w->last, w->last + p->P, p->margin, p->P, j->center_coef, &o,
                                w->dlast, w->dlast + p->P));
        m[0] = o.loss;
        if (j->body == PLUMB__TRAIN_REQ__BODY_BT) {
            m[3] = o.accuracy, m[4] = o.margin, m[5] = o.reward_chosen, m[6] = o.reward_rejected;
        } else {
            m[3] = o.reward_chosen, m[4] = o.reward_rejected, m[5] = o.margin, m[6] = o.accuracy;
            if (j->body == PLUMB__TRAIN_REQ__BODY_ORPO) m[7] = o.nll, m[8] = o.log_odds;
        }
        return 0;
    }
    default:
        return pl_fail(PL_EPROTO, "train: no body");
    }
}

/* The sequences of part p that this replica runs, as up to two ranges
 * [s0[g], s1[g]): all of them alone; with data parallelism its share of
 * the units (for pairs, in both the chosen and the rejected half). */
typedef struct {
    int n, s0[2], s1[2];
} Share;

static Share share_of(const Job *j, const Part *p) {
    Share sh = {.n = 1, .s0 = {0}, .s1 = {p->S}};
    if (!j->dp || j->dp->size <= 1) return sh;
    int U = p->P ? p->P : p->S, rk = j->dp->rank, sz = j->dp->size;
    int u0 = (int)((long)U * rk / sz), u1 = (int)((long)U * (rk + 1) / sz);
    sh.s0[0] = u0, sh.s1[0] = u1;
    if (p->P) sh.n = 2, sh.s0[1] = p->P + u0, sh.s1[1] = p->P + u1;
    return sh;
}

/* Sums the n arrays x[i] (sizes[i] floats each) element-wise over the
 * replicas, in place, through one r->allreduce of their concatenation. */
static int dp_sum(Role *r, const Job *j, float **x, const size_t *sizes, int n, const char *what) {
    size_t total = 0, at = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    float *buf = malloc(sizeof(float) * (total ? total : 1));
    if (!buf) return pl_fail(PL_ENOMEM, "train: out of memory for %zu %s", total, what);
    for (int i = 0; i < n; i++) memcpy(buf + at, x[i], sizeof(float) * sizes[i]), at += sizes[i];
    int rc = r->allreduce(r->allreduce_ctx, j->dp, buf, total);
    at = 0;
    for (int i = 0; rc == 0 && i < n; i++) memcpy(x[i], buf + at, sizeof(float) * sizes[i]), at += sizes[i];
    free(buf);
    return rc < 0 ? pl_wrap(rc, "train: summing the replicas' %s", what) : 0;
}

/* One optimizer step on part p: forward (per micro-batch) of this
 * replica's share, the replicas' outputs summed, loss over the whole part,
 * backward of the share (after a second forward of each micro-batch unless
 * there was only one), the replicas' gradients summed, clip, AdamW. */
static int train_step(Role *r, const Job *j, const Part *p, Work *w, double *m) {
    Model *md = r->model;
    int S = p->S, N = p->N, mb = chunk(r, S);
    int vals = j->need_val || j->need_last, dp = j->dp && j->dp->size > 1;
    float *ment = j->need_ent ? w->ment : NULL, *mval = vals ? w->mval : NULL;
    Share sh = share_of(j, p);
    size_t nb = sizeof(float) * (size_t)N;
    if (dp) {
        memset(w->mlp, 0, nb);
        if (ment) memset(ment, 0, nb);
        if (mval) memset(mval, 0, nb);
    }
    model_zero_grad(md);
    int chunks = 0;
    for (int g = 0; g < sh.n; g++)
        for (int s0 = sh.s0[g]; s0 < sh.s1[g]; s0 += mb, chunks++) {
            int s1 = s0 + mb < sh.s1[g] ? s0 + mb : sh.s1[g];
            PL_TRY(fwd_range(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu, w->mlp,
                             ment, mval));
        }
    if (dp) { /* each replica wrote only its share; the rest is 0 */
        float *x[3] = {w->mlp};
        size_t sz[3] = {(size_t)N, (size_t)N, (size_t)N};
        int nx = 1;
        if (ment) x[nx++] = ment;
        if (mval) x[nx++] = mval;
        PL_TRY(dp_sum(r, j, x, sz, nx, "outputs"));
    }
    shift_in(p->offsets, S, w->mlp, w->lp);
    if (ment) shift_in(p->offsets, S, ment, w->ent);
    if (j->need_val) shift_in(p->offsets, S, mval, w->val);
    for (int s = 0; j->need_last && s < S; s++) w->last[s] = mval[p->offsets[s + 1] - 1];
    memset(w->dlp, 0, nb);
    memset(w->dent, 0, nb);
    memset(w->dval, 0, nb);
    memset(w->dlast, 0, sizeof(float) * (size_t)S);
    PL_TRY(part_loss(j, p, w, m));
    shift_back(p->offsets, S, w->dlp, w->dmlp);
    if (ment) shift_back(p->offsets, S, w->dent, w->dment);
    if (vals) {
        if (j->need_val) shift_back(p->offsets, S, w->dval, w->dmval);
        else memset(w->dmval, 0, nb);
        for (int s = 0; j->need_last && s < S; s++) w->dmval[p->offsets[s + 1] - 1] += w->dlast[s];
    }
    const float *dment = ment ? w->dment : NULL, *dmval = vals ? w->dmval : NULL;
    /* the model keeps the activations of its last forward only */
    for (int g = 0; g < sh.n; g++)
        for (int s0 = sh.s0[g]; s0 < sh.s1[g]; s0 += mb) {
            int s1 = s0 + mb < sh.s1[g] ? s0 + mb : sh.s1[g];
            if (chunks > 1)
                PL_TRY(fwd_range(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu,
                                 w->mlp, ment, mval));
            PL_TRY(bwd_range(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu, w->dmlp,
                             dment, dmval));
        }
    float *params[3], *grads[3];
    size_t sizes[3];
    int n = model_trainable(md, params, grads, sizes);
    if (dp) PL_TRY(dp_sum(r, j, grads, sizes, n, "gradients"));
    m[1] = grad_clip(grads, sizes, n, r->optim.grad_clip);
    m[2] = lr_at(&r->optim, r->opt_step);
    for (int i = 0; i < n && i < r->n_opt; i++) adamw_step(&r->opt[i], params[i], grads[i]);
    r->opt_step++;
    r->adapter_version++;
    return 0;
}

/* FNV-1a over the 32-bit words of the role's trainable parameters. */
static uint64_t params_hash(const Role *r) {
    float *params[3], *grads[3];
    size_t sizes[3];
    int n = model_trainable(r->model, params, grads, sizes);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < n; i++) {
        const uint32_t *x = (const uint32_t *)params[i];
        for (size_t k = 0; k < sizes[i]; k++) h = (h ^ x[k]) * 0x100000001b3ULL;
    }
    return h;
}

int role_train(Role *r, const Plumb__TrainReq *q, WireArena *a, Plumb__Envelope *rep) {
    if (r->n_opt == 0) return pl_fail(PL_EPROTO, "role %s has nothing to train", role_kind_name(r->kind));
    if (q->epochs < 0 || q->minibatches < 0)
        return pl_fail(PL_EPROTO, "train: epochs %d and minibatches %d must be >= 0 (0: 1)",
                       q->epochs, q->minibatches);
    int epochs = q->epochs > 0 ? q->epochs : 1, M = q->minibatches > 0 ? q->minibatches : 1;
    Job j;
    memset(&j, 0, sizeof j);
    Part *parts = NULL;
    int *order = NULL, np = 0;
    Work w = {0};
    int rc = job_prepare(r, q, &j);
    if (rc == 0 && (j.U < 1 || M > j.U))
        rc = pl_fail(PL_EPROTO, "train: %d minibatches of %d %s", M, j.U,
                     j.pairs ? "pairs" : "sequences");
    if (rc == 0 && q->dp && q->dp->size > 1) {
        const Plumb__DataParallel *dp = q->dp;
        if (dp->rank < 0 || dp->rank >= dp->size)
            rc = pl_fail(PL_EPROTO, "train.dp: rank %d of %d replicas", dp->rank, dp->size);
        else if (!r->allreduce)
            rc = pl_fail(PL_EPROTO, "train.dp: %d replicas, but this role cannot reach its peers",
                         dp->size);
        else if (j.U / M < dp->size)
            rc = pl_fail(PL_EPROTO, "train.dp: minibatches of %d %s for %d replicas (each needs "
                                    "at least one)",
                         j.U / M, j.pairs ? "pairs" : "sequences", dp->size);
        j.dp = dp;
    }
    if (rc < 0) goto done;
    /* the order: identity for one minibatch, else shuffled from seed */
    order = malloc(sizeof(int) * j.U);
    parts = calloc((size_t)M, sizeof *parts);
    if (!order || !parts) {
        rc = pl_fail(PL_ENOMEM, "train: out of memory");
        goto done;
    }
    for (int i = 0; i < j.U; i++) order[i] = i;
    if (M > 1) {
        Rng rng;
        rng_seed(&rng, q->seed);
        for (int i = j.U - 1; i > 0; i--) {
            int k = (int)(rng_u64(&rng) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[k];
            order[k] = t;
        }
    }
    long maxN = 0;
    int maxS = 0;
    for (; np < M; np++) {
        int u0 = (int)((long)np * j.U / M), u1 = (int)((long)(np + 1) * j.U / M);
        if ((rc = part_build(&j, order + u0, u1 - u0, &parts[np])) < 0) goto done;
        if (parts[np].N > maxN) maxN = parts[np].N;
        if (parts[np].S > maxS) maxS = parts[np].S;
    }
    if ((rc = work_alloc(&w, maxN, maxS)) < 0) goto done;
    Plumb__TrainRep *tr = wire_alloc(a, sizeof *tr);
    Plumb__Metric **ms = wire_alloc(a, sizeof(*ms) * MAX_METRICS);
    if (!tr || !ms) {
        rc = pl_fail(PL_ENOMEM, "train: out of memory for the reply");
        goto done;
    }
    double sum[MAX_METRICS] = {0};
    int steps = 0;
    for (int e = 0; e < epochs; e++)
        for (int k = 0; k < M; k++) {
            double m[MAX_METRICS] = {0};
            if ((rc = train_step(r, &j, &parts[k], &w, m)) < 0) {
                rc = pl_wrap(rc, "train: epoch %d minibatch %d (after %d optimizer steps of this call)",
                             e, k, steps);
                goto done;
            }
            for (int i = 0; i < j.n_metrics; i++) sum[i] += m[i];
            steps++;
        }
    plumb__train_rep__init(tr);
    for (int i = 0; i < j.n_metrics; i++) {
        ms[i] = wire_alloc(a, sizeof **ms);
        if (!ms[i]) {
            rc = pl_fail(PL_ENOMEM, "train: out of memory for the reply");
            goto done;
        }
        plumb__metric__init(ms[i]);
        ms[i]->name = wire_strdup(a, j.names[i]);
        ms[i]->value = sum[i] / steps;
    }
    tr->n_metrics = (size_t)j.n_metrics;
    tr->metrics = ms;
    tr->adapter_version = r->adapter_version;
    tr->optimizer_step = r->opt_step;
    if (j.dp) tr->params_hash = params_hash(r); /* replicas compare it */
    rep->body_case = PLUMB__ENVELOPE__BODY_TRAIN_REP;
    rep->train_rep = tr;
done:
    for (int i = 0; i < np; i++) part_free(&parts[i]);
    free(parts);
    free(order);
    work_free(&w);
    job_free(&j);
    return rc;
}
