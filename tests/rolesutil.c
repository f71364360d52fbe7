/* rolesutil.c: the worker-role tests' shared fixtures (rolesutil.h). */
#include "rolesutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "data/arith.h"
#include "testutil.h"
#include "actor/actor.h"
#include "critic/critic.h"
#include "reference/reference.h"
#include "reward/reward.h"

#define EOS ARITH_EOS

Base *rl_base;
Tokenizer *rl_tok;
char rl_tokdir[600];

int rl_setup(void **state) {
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = ARITH_VOCAB;
    c.dim = 32;
    c.hidden_dim = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.max_seq_len = 48;
    c.bos_id = ARITH_BOS;
    c.eos_ids[0] = EOS;
    c.n_eos = 1;
    snprintf(rl_tokdir, sizeof rl_tokdir, "%s/tok", tu_tmp_dir());
    mkdir(rl_tokdir, 0755);
    if (base_new_random(&rl_base, &c, 21, 0.3f) < 0 || arith_write_tokenizer(rl_tokdir) < 0 ||
        tok_load(&rl_tok, rl_tokdir) < 0) {
        fprintf(stderr, "setup: %s\n", pl_error());
        return -1;
    }
    return 0;
}

int rl_teardown(void **state) {
    tok_free(&rl_tok);
    base_free(&rl_base);
    return 0;
}

/* The role folders' descriptors, as the worker program's table has them. */
const RoleDesc *rl_desc_of(const char *role) {
    static const RoleDesc *const all[ROLE_NKINDS] = {&actor_role, &critic_role, &reward_role,
                                                     &reference_role};
    RoleKind k;
    if (role_kind_parse(role, &k) < 0) fail_msg("%s", pl_error());
    return all[k];
}

int rl_mk(Role **out, Spec s) {
    Plumb__Optim o = PLUMB__OPTIM__INIT;
    o.lr = s.lr > 0 ? s.lr : 1e-2f;
    o.grad_clip = s.clip != 0 ? s.clip : 1.0f;
    o.schedule = "constant";
    o.warmup_steps = s.warmup;
    Plumb__RoleConfig c = PLUMB__ROLE_CONFIG__INIT;
    c.role = (char *)s.role;
    c.lora_rank = s.rank;
    c.lora_alpha = 2.0f * s.rank;
    c.lora_targets = "q,k,v,o,gate,up,down";
    c.head = s.head;
    c.train_base = s.train_base;
    c.seed = s.seed ? s.seed : 5;
    c.optim = &o;
    c.micro_batch = s.micro;
    if (s.rule) c.rule = (char *)s.rule;
    if (s.arg) c.rule_arg = (char *)s.arg;
    if (s.resume) c.resume_dir = (char *)s.resume;
    return role_new(out, rl_desc_of(s.role), &c, rl_base, NULL, rl_tok, rl_tokdir, NULL, NULL);
}

Role *rl_mk_ok(Spec s) {
    Role *r = NULL;
    int rc = rl_mk(&r, s);
    if (rc < 0) fail_msg("role_new %s: %s", s.role, pl_error());
    return r;
}

/* Gives r's adapter random values so that every LoRA matrix matters. */
void rl_randomize_adapter(Role *r, unsigned long long seed) {
    Rng g;
    rng_seed(&g, seed);
    tu_randn(r->model->lora->mem, r->model->lora->n, &g, 0.2f);
}

static Plumb__Envelope *roundtrip(const Plumb__Envelope *e) {
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    Plumb__Envelope *o = NULL;
    if (wire_unpack(buf, len, WIRE_MAX_MESSAGE_DEFAULT, "test", &o) < 0) fail_msg("%s", pl_error());
    free(buf);
    return o;
}

/* Sends q to r through the wire; the unpacked reply (wire_free it), or
 * NULL with *rc < 0 when the role refused. */
Plumb__Envelope *rl_call(Role *r, const Plumb__Envelope *q, int *rc) {
    Plumb__Envelope *qq = roundtrip(q);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = wire_envelope(a, qq->id, qq->role);
    int x = role_handle(r, qq, a, rep);
    Plumb__Envelope *out = x == 0 ? roundtrip(rep) : NULL;
    wire_arena_free(&a);
    wire_free(&qq);
    if (rc) *rc = x;
    return out;
}

Plumb__Envelope *rl_call_ok(Role *r, const Plumb__Envelope *q) {
    int rc;
    Plumb__Envelope *rep = rl_call(r, q, &rc);
    if (!rep) fail_msg("%s request failed: %s", q->role, pl_error());
    return rep;
}

void rl_pk_add_ids(Pk *p, const int *ids, int n, int n_prompt) {
    if (p->B == 0) p->off[0] = 0;
    for (int i = 0; i < n; i++) {
        p->tok[p->N] = ids[i];
        p->mask[p->N++] = i >= n_prompt;
    }
    p->off[++p->B] = p->N;
}

void rl_pk_add(Pk *p, const char *prompt, const char *resp, int eos) {
    int ids[256], n = 0, np = (int)strlen(prompt);
    for (const char *c = prompt; *c; c++) ids[n++] = (unsigned char)*c;
    for (const char *c = resp; *c; c++) ids[n++] = (unsigned char)*c;
    if (eos) ids[n++] = EOS;
    rl_pk_add_ids(p, ids, n, np);
}

Plumb__Seqs *rl_pk_seqs(WireArena *a, const Pk *p) {
    return wire_seqs(a, p->tok, p->off, p->mask, p->B);
}

/* A malloc'ed copy of a reply tensor of n floats. */
float *rl_f32(const Plumb__Tensor *t, long n) {
    float *x = NULL;
    if (wire_get_f32(t, n, 0, "reply", &x) < 0) fail_msg("%s", pl_error());
    return x;
}

double rl_metric(const Plumb__Envelope *rep, const char *name) {
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_TRAIN_REP);
    for (size_t i = 0; i < rep->train_rep->n_metrics; i++)
        if (!strcmp(rep->train_rep->metrics[i]->name, name)) return rep->train_rep->metrics[i]->value;
    fail_msg("no metric '%s'", name);
    return NAN;
}

Plumb__Envelope *rl_req_logprobs(WireArena *a, const char *role, const Pk *p, float T, int ent) {
    Plumb__Envelope *e = wire_envelope(a, 1, role);
    Plumb__LogprobsReq *q = wire_alloc(a, sizeof *q);
    plumb__logprobs_req__init(q);
    q->seqs = rl_pk_seqs(a, p);
    q->temperature = T;
    q->entropy = ent;
    e->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS;
    e->logprobs = q;
    return e;
}

/* Log-probs (wire convention) of p from role r, malloc'ed (N). */
float *rl_get_lp(Role *r, const Pk *p, float T) {
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, rl_req_logprobs(a, role_kind_name(r->kind), p, T, 0));
    float *lp = rl_f32(rep->logprobs_rep->logprobs, p->N);
    wire_free(&rep);
    wire_arena_free(&a);
    return lp;
}

Plumb__Envelope *rl_req_train(WireArena *a, const char *role, int epochs, int minibatches,
                              uint64_t seed) {
    Plumb__Envelope *e = wire_envelope(a, 1, role);
    Plumb__TrainReq *t = wire_alloc(a, sizeof *t);
    plumb__train_req__init(t);
    t->epochs = epochs;
    t->minibatches = minibatches;
    t->seed = seed;
    e->body_case = PLUMB__ENVELOPE__BODY_TRAIN;
    e->train = t;
    return e;
}

Plumb__Envelope *rl_req_sft(WireArena *a, const Pk *p, int epochs, int minibatches) {
    Plumb__Envelope *e = rl_req_train(a, "actor", epochs, minibatches, 3);
    Plumb__SftBody *b = wire_alloc(a, sizeof *b);
    plumb__sft_body__init(b);
    b->seqs = rl_pk_seqs(a, p);
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_SFT;
    e->train->sft = b;
    return e;
}

Plumb__Envelope *rl_req_policy(WireArena *a, const Pk *p, int grpo, const float *old,
                               const float *adv, const float *ref, float kl_coef,
                               float entropy_coef) {
    Plumb__Envelope *e = rl_req_train(a, "actor", 1, 1, 0);
    Plumb__PolicyBody *b = wire_alloc(a, sizeof *b);
    plumb__policy_body__init(b);
    b->seqs = rl_pk_seqs(a, p);
    b->old_logprobs = wire_f32(a, old, p->N);
    b->advantages = wire_f32(a, adv, p->N);
    b->ref_logprobs = ref ? wire_f32(a, ref, p->N) : NULL;
    b->clip_low = b->clip_high = 0.2f;
    b->loss_agg = "token_mean";
    b->kl_coef = kl_coef;
    b->kl_estimator = "k3";
    b->temperature = 1.0f;
    b->entropy_coef = entropy_coef;
    e->train->body_case = grpo ? PLUMB__TRAIN_REQ__BODY_GRPO : PLUMB__TRAIN_REQ__BODY_PPO;
    if (grpo) e->train->grpo = b;
    else e->train->ppo = b;
    return e;
}

Plumb__Envelope *rl_req_dpo(WireArena *a, const Pk *c, const Pk *rj, const float *refc,
                            const float *refr) {
    Plumb__Envelope *e = rl_req_train(a, "actor", 1, 1, 0);
    Plumb__DpoBody *b = wire_alloc(a, sizeof *b);
    plumb__dpo_body__init(b);
    b->chosen = rl_pk_seqs(a, c);
    b->rejected = rl_pk_seqs(a, rj);
    b->ref_chosen = wire_f32(a, refc, c->N);
    b->ref_rejected = wire_f32(a, refr, rj->N);
    b->loss_type = "sigmoid";
    b->beta = 0.5f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_DPO;
    e->train->dpo = b;
    return e;
}

Plumb__Envelope *rl_req_simpo(WireArena *a, const Pk *c, const Pk *rj) {
    Plumb__Envelope *e = rl_req_train(a, "actor", 1, 1, 0);
    Plumb__SimpoBody *b = wire_alloc(a, sizeof *b);
    plumb__simpo_body__init(b);
    b->chosen = rl_pk_seqs(a, c);
    b->rejected = rl_pk_seqs(a, rj);
    b->beta = 2.0f;
    b->gamma = 0.5f;
    b->label_smoothing = 0.1f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_SIMPO;
    e->train->simpo = b;
    return e;
}

/* KTO over the sequences of p, desirable where des[b] (0/1, or anything
 * for the validation test), with reference log-probs ref. */
Plumb__Envelope *rl_req_kto(WireArena *a, const Pk *p, const float *ref, const float *des,
                            float kl) {
    Plumb__Envelope *e = rl_req_train(a, "actor", 1, 1, 0);
    Plumb__KtoBody *b = wire_alloc(a, sizeof *b);
    plumb__kto_body__init(b);
    b->seqs = rl_pk_seqs(a, p);
    b->ref_logprobs = wire_f32(a, ref, p->N);
    b->desirable = wire_f32(a, des, p->B);
    b->kl = kl;
    b->beta = 0.5f;
    b->desirable_weight = 1.0f;
    b->undesirable_weight = 1.5f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_KTO;
    e->train->kto = b;
    return e;
}

Plumb__Envelope *rl_req_bt(WireArena *a, const Pk *c, const Pk *rj, int micro_seed) {
    Plumb__Envelope *e = rl_req_train(a, "reward", 1, 1, (uint64_t)micro_seed);
    Plumb__BtBody *b = wire_alloc(a, sizeof *b);
    plumb__bt_body__init(b);
    b->chosen = rl_pk_seqs(a, c);
    b->rejected = rl_pk_seqs(a, rj);
    b->center_coef = 0.01f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_BT;
    e->train->bt = b;
    return e;
}

Plumb__Envelope *rl_req_value(WireArena *a, const Pk *p, const float *old, const float *ret) {
    Plumb__Envelope *e = rl_req_train(a, "critic", 1, 1, 0);
    Plumb__ValueBody *b = wire_alloc(a, sizeof *b);
    plumb__value_body__init(b);
    b->seqs = rl_pk_seqs(a, p);
    b->old_values = wire_f32(a, old, p->N);
    b->returns = wire_f32(a, ret, p->N);
    b->clip_range = 0.2f;
    b->loss_agg = "token_mean";
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_VALUE;
    e->train->value = b;
    return e;
}

void rl_fixed_batch(Pk *p) {
    memset(p, 0, sizeof *p);
    rl_pk_add(p, "12+30=", "42", 1);
    rl_pk_add(p, "7+8=", "15", 1);
    rl_pk_add(p, "1+1=", "2", 1);
    rl_pk_add(p, "40+9=", "49", 1);
}

void rl_pref_pairs(Pk *c, Pk *rj) {
    memset(c, 0, sizeof *c);
    memset(rj, 0, sizeof *rj);
    rl_pk_add(c, "12+30=", "42", 1);
    rl_pk_add(rj, "12+30=", "43", 1);
    rl_pk_add(c, "7+8=", "15", 1);
    rl_pk_add(rj, "7+8=", "51", 1);
    rl_pk_add(c, "5+5=", "10", 1);
    rl_pk_add(rj, "5+5=", "11", 1);
}

/* The model's outputs at t - 1 in a two-sequence batch, by hand. */
void rl_model_outputs(Model *m, const Pk *p, float T, float *lp, float *ent, float *val) {
    int tg[1024];
    for (int b = 0; b < p->B; b++)
        for (int t = p->off[b]; t < p->off[b + 1]; t++) tg[t] = t + 1 < p->off[b + 1] ? p->tok[t + 1] : -1;
    Batch bt = {.tokens = p->tok, .targets = tg, .cu_seqlens = p->off, .B = p->B, .temperature = T};
    assert_int_equal(model_forward(m, &bt, lp, ent, val, NULL), 0);
}
