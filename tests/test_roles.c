/* test_roles.c: the worker roles (worker/role.h) answering real requests.
 *
 * Every request is built with wire.h's builders, packed and unpacked as on
 * the wire, handled by role_handle, and its reply packed and unpacked again.
 * A tiny random model (vocabulary 259: the arith byte tokenizer, EOS 257)
 * stands behind every role.
 *
 * Proves: generate's shapes, masks, sampled log-probs, determinism and
 * split invariance; the per-token shift of logprobs, entropy and values
 * against model_forward; reference == a fresh actor; every reward rule and
 * the model score at the last token; each train body moves the model the
 * way its loss says (sft lowers the NLL, a positive advantage raises a
 * sequence's log-prob, zero advantages change nothing, dpo widens the
 * margin; orpo and bt report finite metrics); minibatches x epochs
 * optimizer steps; micro-batches give the same gradients as one forward;
 * adapter get / set; save + resume continues bit for bit; the Hugging Face
 * export equals the actor; bad requests fail with a message and leave the
 * role unchanged. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/wire.h"
#include "data/arith.h"
#include "algo/grpo.h"
#include "algo/ppo.h"
#include "algo/pref.h"
#include "algo/rules.h"
#include "testutil.h"
#include "actor/actor.h"
#include "critic/critic.h"
#include "worker/bases.h"
#include "reference/reference.h"
#include "reward/reward.h"
#include "worker/role.h"

#define EOS ARITH_EOS

static Base *base;
static Tokenizer *tok;
static char tokdir[600];

static int setup(void **state) {
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
    snprintf(tokdir, sizeof tokdir, "%s/tok", tu_tmp_dir());
    mkdir(tokdir, 0755);
    if (base_new_random(&base, &c, 21, 0.3f) < 0 || arith_write_tokenizer(tokdir) < 0 ||
        tok_load(&tok, tokdir) < 0) {
        fprintf(stderr, "setup: %s\n", pl_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    tok_free(&tok);
    base_free(&base);
    return 0;
}

/* ------------------------------------------------------------ helpers */

typedef struct {
    const char *role;
    int rank, head, micro, train_base, warmup;
    const char *rule, *arg, *resume;
    float lr, clip;                /* clip 0: 1.0; < 0: no clipping */
    unsigned long long seed;
} Spec;

/* The role folders' descriptors, as the worker program's table has them. */
static const RoleDesc *desc_of(const char *role) {
    static const RoleDesc *const all[ROLE_NKINDS] = {&actor_role, &critic_role, &reward_role,
                                                     &reference_role};
    RoleKind k;
    if (role_kind_parse(role, &k) < 0) fail_msg("%s", pl_error());
    return all[k];
}

static int mk(Role **out, Spec s) {
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
    return role_new(out, desc_of(s.role), &c, base, NULL, tok, tokdir, NULL, NULL);
}

static Role *mk_ok(Spec s) {
    Role *r = NULL;
    int rc = mk(&r, s);
    if (rc < 0) fail_msg("role_new %s: %s", s.role, pl_error());
    return r;
}

/* Gives r's adapter random values so that every LoRA matrix matters. */
static void randomize_adapter(Role *r, unsigned long long seed) {
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
static Plumb__Envelope *call(Role *r, const Plumb__Envelope *q, int *rc) {
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

static Plumb__Envelope *call_ok(Role *r, const Plumb__Envelope *q) {
    int rc;
    Plumb__Envelope *rep = call(r, q, &rc);
    if (!rep) fail_msg("%s request failed: %s", q->role, pl_error());
    return rep;
}

/* A packed batch: prompt bytes (mask 0), response bytes (mask 1), and an
 * optional EOS (mask 1). */
typedef struct {
    int B, N;
    int tok[1024];
    int off[65];
    unsigned char mask[1024];
} Pk;

static void pk_add_ids(Pk *p, const int *ids, int n, int n_prompt) {
    if (p->B == 0) p->off[0] = 0;
    for (int i = 0; i < n; i++) {
        p->tok[p->N] = ids[i];
        p->mask[p->N++] = i >= n_prompt;
    }
    p->off[++p->B] = p->N;
}

static void pk_add(Pk *p, const char *prompt, const char *resp, int eos) {
    int ids[256], n = 0, np = (int)strlen(prompt);
    for (const char *c = prompt; *c; c++) ids[n++] = (unsigned char)*c;
    for (const char *c = resp; *c; c++) ids[n++] = (unsigned char)*c;
    if (eos) ids[n++] = EOS;
    pk_add_ids(p, ids, n, np);
}

static Plumb__Seqs *pk_seqs(WireArena *a, const Pk *p) {
    return wire_seqs(a, p->tok, p->off, p->mask, p->B);
}

/* A malloc'ed copy of a reply tensor of n floats. */
static float *f32(const Plumb__Tensor *t, long n) {
    float *x = NULL;
    if (wire_get_f32(t, n, 0, "reply", &x) < 0) fail_msg("%s", pl_error());
    return x;
}

static double metric(const Plumb__Envelope *rep, const char *name) {
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_TRAIN_REP);
    for (size_t i = 0; i < rep->train_rep->n_metrics; i++)
        if (!strcmp(rep->train_rep->metrics[i]->name, name)) return rep->train_rep->metrics[i]->value;
    fail_msg("no metric '%s'", name);
    return NAN;
}

static Plumb__Envelope *req_logprobs(WireArena *a, const char *role, const Pk *p, float T, int ent) {
    Plumb__Envelope *e = wire_envelope(a, 1, role);
    Plumb__LogprobsReq *q = wire_alloc(a, sizeof *q);
    plumb__logprobs_req__init(q);
    q->seqs = pk_seqs(a, p);
    q->temperature = T;
    q->entropy = ent;
    e->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS;
    e->logprobs = q;
    return e;
}

/* Log-probs (wire convention) of p from role r, malloc'ed (N). */
static float *get_lp(Role *r, const Pk *p, float T) {
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_logprobs(a, role_kind_name(r->kind), p, T, 0));
    float *lp = f32(rep->logprobs_rep->logprobs, p->N);
    wire_free(&rep);
    wire_arena_free(&a);
    return lp;
}

static Plumb__Envelope *req_train(WireArena *a, const char *role, int epochs, int minibatches,
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

static Plumb__Envelope *req_sft(WireArena *a, const Pk *p, int epochs, int minibatches) {
    Plumb__Envelope *e = req_train(a, "actor", epochs, minibatches, 3);
    Plumb__SftBody *b = wire_alloc(a, sizeof *b);
    plumb__sft_body__init(b);
    b->seqs = pk_seqs(a, p);
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_SFT;
    e->train->sft = b;
    return e;
}

static Plumb__Envelope *req_policy(WireArena *a, const Pk *p, int grpo, const float *old,
                                   const float *adv, const float *ref, float kl_coef,
                                   float entropy_coef) {
    Plumb__Envelope *e = req_train(a, "actor", 1, 1, 0);
    Plumb__PolicyBody *b = wire_alloc(a, sizeof *b);
    plumb__policy_body__init(b);
    b->seqs = pk_seqs(a, p);
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

static Plumb__Envelope *req_dpo(WireArena *a, const Pk *c, const Pk *rj, const float *refc,
                                const float *refr) {
    Plumb__Envelope *e = req_train(a, "actor", 1, 1, 0);
    Plumb__DpoBody *b = wire_alloc(a, sizeof *b);
    plumb__dpo_body__init(b);
    b->chosen = pk_seqs(a, c);
    b->rejected = pk_seqs(a, rj);
    b->ref_chosen = wire_f32(a, refc, c->N);
    b->ref_rejected = wire_f32(a, refr, rj->N);
    b->loss_type = "sigmoid";
    b->beta = 0.5f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_DPO;
    e->train->dpo = b;
    return e;
}

static Plumb__Envelope *req_simpo(WireArena *a, const Pk *c, const Pk *rj) {
    Plumb__Envelope *e = req_train(a, "actor", 1, 1, 0);
    Plumb__SimpoBody *b = wire_alloc(a, sizeof *b);
    plumb__simpo_body__init(b);
    b->chosen = pk_seqs(a, c);
    b->rejected = pk_seqs(a, rj);
    b->beta = 2.0f;
    b->gamma = 0.5f;
    b->label_smoothing = 0.1f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_SIMPO;
    e->train->simpo = b;
    return e;
}

/* KTO over the sequences of p, desirable where des[b] (0/1, or anything
 * for the validation test), with reference log-probs ref. */
static Plumb__Envelope *req_kto(WireArena *a, const Pk *p, const float *ref, const float *des,
                                float kl) {
    Plumb__Envelope *e = req_train(a, "actor", 1, 1, 0);
    Plumb__KtoBody *b = wire_alloc(a, sizeof *b);
    plumb__kto_body__init(b);
    b->seqs = pk_seqs(a, p);
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

static Plumb__Envelope *req_bt(WireArena *a, const Pk *c, const Pk *rj, int micro_seed) {
    Plumb__Envelope *e = req_train(a, "reward", 1, 1, (uint64_t)micro_seed);
    Plumb__BtBody *b = wire_alloc(a, sizeof *b);
    plumb__bt_body__init(b);
    b->chosen = pk_seqs(a, c);
    b->rejected = pk_seqs(a, rj);
    b->center_coef = 0.01f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_BT;
    e->train->bt = b;
    return e;
}

static Plumb__Envelope *req_value(WireArena *a, const Pk *p, const float *old, const float *ret) {
    Plumb__Envelope *e = req_train(a, "critic", 1, 1, 0);
    Plumb__ValueBody *b = wire_alloc(a, sizeof *b);
    plumb__value_body__init(b);
    b->seqs = pk_seqs(a, p);
    b->old_values = wire_f32(a, old, p->N);
    b->returns = wire_f32(a, ret, p->N);
    b->clip_range = 0.2f;
    b->loss_agg = "token_mean";
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_VALUE;
    e->train->value = b;
    return e;
}

static void fixed_batch(Pk *p) {
    memset(p, 0, sizeof *p);
    pk_add(p, "12+30=", "42", 1);
    pk_add(p, "7+8=", "15", 1);
    pk_add(p, "1+1=", "2", 1);
    pk_add(p, "40+9=", "49", 1);
}

/* -------------------------------------------------------------- generate */

static Plumb__Envelope *req_generate(WireArena *a, const Pk *prompts, int n, int64_t first) {
    Plumb__Envelope *e = wire_envelope(a, 1, "actor");
    Plumb__GenerateReq *g = wire_alloc(a, sizeof *g);
    plumb__generate_req__init(g);
    g->prompts = pk_seqs(a, prompts);
    g->n = n;
    g->temperature = 0.9f;
    g->top_k = 0;
    g->top_p = 1.0f;
    g->seed = 11;
    g->max_new_tokens = 6;
    g->first_index = first;
    e->body_case = PLUMB__ENVELOPE__BODY_GENERATE;
    e->generate = g;
    return e;
}

/* Roles with a base of their own (critic.model, reference.model, a
 * reward model): a model of another size than the worker's, loaded once
 * per folder for every role of the worker that names it, freed with the
 * last of them; one of another vocabulary is refused naming both. */
static void test_own_bases_shared(void **state) {
    (void)state;
    ModelConfig c = base->cfg;
    c.dim = 16, c.hidden_dim = 24, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1;
    Base *other;
    assert_int_equal(base_new_random(&other, &c, 3, 0.3f), 0);
    const char *dir = tu_path("%s/other-base", tu_tmp_dir());
    assert_int_equal(base_save_hf(other, dir), 0);
    base_free(&other);
    char path[600];
    snprintf(path, sizeof path, "%s", dir);
    Bases *bs;
    assert_int_equal(bases_new(&bs), 0);
    Plumb__Optim o = PLUMB__OPTIM__INIT;
    o.lr = 1e-2f, o.grad_clip = 1.0f, o.schedule = "constant";
    Plumb__RoleConfig rc = PLUMB__ROLE_CONFIG__INIT;
    rc.optim = &o, rc.seed = 5, rc.base_path = path;
    Role *critic, *ref;
    rc.role = "critic", rc.lora_rank = 2, rc.lora_alpha = 4, rc.head = 1;
    if (role_new(&critic, desc_of("critic"), &rc, base, NULL, tok, tokdir, NULL, bs) < 0)
        fail_msg("%s", pl_error());
    rc.role = "reference", rc.lora_rank = 0, rc.head = 0;
    if (role_new(&ref, desc_of("reference"), &rc, base, NULL, tok, tokdir, NULL, bs) < 0)
        fail_msg("%s", pl_error());
    assert_ptr_equal(critic->base, ref->base); /* one copy */
    assert_true(critic->base != base);
    assert_int_equal(critic->base->cfg.dim, 16);
    assert_int_equal(critic->model->base->cfg.n_layers, 1);
    role_free(&critic); /* the reference still computes on it */
    float lp[3];
    const int ids[4] = {ARITH_BOS, 5, 6, 7}, tg[4] = {5, 6, 7, -1}, cu[2] = {0, 4};
    Batch b = {.tokens = ids, .targets = tg, .cu_seqlens = cu, .B = 1};
    float lp4[4];
    assert_int_equal(model_forward(ref->model, &b, lp4, NULL, NULL, NULL), 0);
    (void)lp;
    role_free(&ref);

    /* another vocabulary: refused, naming both */
    c.vocab_size = base->cfg.vocab_size + 1;
    assert_int_equal(base_new_random(&other, &c, 3, 0.3f), 0);
    const char *dir2 = tu_path("%s/other-vocab", tu_tmp_dir());
    assert_int_equal(base_save_hf(other, dir2), 0);
    base_free(&other);
    snprintf(path, sizeof path, "%s", dir2);
    rc.role = "reference";
    assert_true(role_new(&ref, desc_of("reference"), &rc, base, NULL, tok, tokdir, NULL, bs) < 0);
    assert_non_null(strstr(pl_error(), "vocabulary of"));
    assert_null(ref);

    /* the coordinator's fingerprint of the folder: the same model is
     * accepted, another one (a host with another checkpoint at that path)
     * refused naming the role and the folder, shared or not */
    snprintf(path, sizeof path, "%s", dir);
    Base *loaded;
    char fp[33];
    assert_int_equal(base_load(&loaded, dir), 0);
    assert_int_equal(wire_fingerprint(loaded, fp), 0);
    base_free(&loaded);
    rc.base_fingerprint = fp;
    if (role_new(&ref, desc_of("reference"), &rc, base, NULL, tok, tokdir, NULL, bs) < 0)
        fail_msg("%s", pl_error());
    role_free(&ref);
    char wrong[33];
    snprintf(wrong, sizeof wrong, "%s", fp);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    rc.base_fingerprint = wrong;
    for (int shared = 0; shared < 2; shared++) {
        assert_true(role_new(&ref, desc_of("reference"), &rc, base, NULL, tok, tokdir, NULL,
                             shared ? bs : NULL) < 0);
        assert_non_null(strstr(pl_error(), "reference: its model"));
        assert_non_null(strstr(pl_error(), dir));
        assert_null(ref);
    }
    bases_free(&bs);
}

/* B * n sequences, prompt-major, each its prompt then generated ids with
 * mask 1 and their sampled log-probs; the same request gives the same
 * tokens; prompt 1 alone with first_index n gives prompt 1's samples; the
 * sampled log-probs equal a logprobs request at the sampling temperature. */
static void test_generate(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    randomize_adapter(r, 3);
    Pk pr = {0}, p1 = {0};
    pk_add(&pr, "12+30=", "", 0);
    pk_add(&pr, "7+8=", "", 0);
    pk_add(&p1, "7+8=", "", 0);
    const int n = 3;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_generate(a, &pr, n, 0));
    Plumb__Envelope *rep2 = call_ok(r, req_generate(a, &pr, n, 0));
    Plumb__Envelope *rep3 = call_ok(r, req_generate(a, &p1, n, n));
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_GENERATED);
    WireLimits lim = {.vocab = ARITH_VOCAB, .max_seq = 48};
    WireSeqs s, s2, s3;
    assert_int_equal(wire_get_seqs(rep->generated->seqs, &lim, "g", &s), 0);
    assert_int_equal(wire_get_seqs(rep2->generated->seqs, &lim, "g2", &s2), 0);
    assert_int_equal(wire_get_seqs(rep3->generated->seqs, &lim, "g3", &s3), 0);
    assert_int_equal(s.B, 2 * n);
    assert_int_equal(s3.B, n);
    float *lp = f32(rep->generated->logprobs, s.N);
    unsigned char *eos = NULL;
    assert_non_null(rep->generated->eos);
    assert_int_equal(rep->generated->eos->data.len, 2 * n);
    eos = rep->generated->eos->data.data;
    assert_int_equal(rep->generated->adapter_version, 0);
    for (int b = 0; b < s.B; b++) {
        int i = b / n, plen = pr.off[i + 1] - pr.off[i], len = s.offsets[b + 1] - s.offsets[b];
        assert_true(len > plen && len <= plen + 6);
        assert_memory_equal(s.tokens + s.offsets[b], pr.tok + pr.off[i], sizeof(int) * plen);
        for (int t = 0; t < len; t++) {
            int k = s.offsets[b] + t;
            assert_int_equal(s.mask[k], t >= plen);
            if (t < plen) assert_true(lp[k] == 0.0f);
            else assert_true(lp[k] <= 0.0f && isfinite(lp[k]));
            if (t >= plen && t + 1 < len) assert_int_not_equal(s.tokens[k], EOS);
        }
        assert_int_equal(eos[b], s.tokens[s.offsets[b + 1] - 1] == EOS);
    }
    /* deterministic */
    assert_int_equal(s.N, s2.N);
    assert_memory_equal(s.tokens, s2.tokens, sizeof(int) * s.N);
    /* split invariance: prompt 1 alone at first_index n */
    int o1 = s.offsets[n];
    assert_int_equal(s3.N, s.N - o1);
    assert_memory_equal(s3.tokens, s.tokens + o1, sizeof(int) * s3.N);
    /* sampled log-probs = recomputed at T 0.9 on the response tokens */
    Pk g = {0};
    for (int b = 0; b < s.B; b++) {
        int len = s.offsets[b + 1] - s.offsets[b];
        pk_add_ids(&g, s.tokens + s.offsets[b], len, 0);
    }
    float *re = get_lp(r, &g, 0.9f);
    for (int t = 0; t < s.N; t++)
        if (s.mask[t]) assert_true(fabsf(re[t] - lp[t]) < 1e-4f);
    free(re);
    free(lp);
    wire_seqs_free(&s);
    wire_seqs_free(&s2);
    wire_seqs_free(&s3);
    wire_free(&rep);
    wire_free(&rep2);
    wire_free(&rep3);
    wire_arena_free(&a);
    role_free(&r);
    assert_null(r);
}

/* -------------------------------------------------- logprobs and values */

/* The model's outputs at t - 1 in a two-sequence batch, by hand. */
static void model_outputs(Model *m, const Pk *p, float T, float *lp, float *ent, float *val) {
    int tg[1024];
    for (int b = 0; b < p->B; b++)
        for (int t = p->off[b]; t < p->off[b + 1]; t++) tg[t] = t + 1 < p->off[b + 1] ? p->tok[t + 1] : -1;
    Batch bt = {.tokens = p->tok, .targets = tg, .cu_seqlens = p->off, .B = p->B, .temperature = T};
    assert_int_equal(model_forward(m, &bt, lp, ent, val, NULL), 0);
}

/* logprobs[t] = model lp at t - 1 (0 at each first token), entropy too,
 * at the request temperature; the reference equals a fresh actor. */
static void test_logprobs_shift(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    /* the reference takes no adapter, head or resume state from a shared config */
    Role *ref = mk_ok((Spec){.role = "reference", .rank = 2, .head = 1, .resume = "/nonexistent"});
    assert_null(ref->model->lora);
    assert_null(ref->model->head);
    assert_int_equal(ref->n_opt, 0);
    randomize_adapter(r, 4);
    Pk p = {0};
    pk_add(&p, "3+4=", "7", 1);
    pk_add(&p, "25+25=", "50", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_logprobs(a, "actor", &p, 0.7f, 1));
    float *lp = f32(rep->logprobs_rep->logprobs, p.N), *ent = f32(rep->logprobs_rep->entropy, p.N);
    float mlp[64], ment[64];
    model_outputs(r->model, &p, 0.7f, mlp, ment, NULL);
    for (int b = 0; b < p.B; b++) {
        assert_true(lp[p.off[b]] == 0.0f && ent[p.off[b]] == 0.0f);
        for (int t = p.off[b] + 1; t < p.off[b + 1]; t++) {
            assert_true(fabsf(lp[t] - mlp[t - 1]) < 1e-6f);
            assert_true(fabsf(ent[t] - ment[t - 1]) < 1e-6f);
        }
    }
    /* the reference (no adapter) equals an actor with a fresh adapter (B = 0) */
    Role *fresh = mk_ok((Spec){.role = "actor", .rank = 2});
    float *l1 = get_lp(fresh, &p, 1.0f), *l2 = get_lp(ref, &p, 1.0f);
    tu_assert_close(l1, l2, p.N, 1e-6f, 1e-6f, "reference vs fresh actor");
    free(l1);
    free(l2);
    free(lp);
    free(ent);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&fresh);
    role_free(&ref);
    role_free(&r);
}

/* values[t] = head at t - 1, 0 at each first token. */
static void test_values_shift(void **state) {
    Role *c = mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    randomize_adapter(c, 5);
    Pk p = {0};
    pk_add(&p, "3+4=", "7", 1);
    pk_add(&p, "9=", "9", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = wire_envelope(a, 2, "critic");
    Plumb__ValuesReq *q = wire_alloc(a, sizeof *q);
    plumb__values_req__init(q);
    q->seqs = pk_seqs(a, &p);
    e->body_case = PLUMB__ENVELOPE__BODY_VALUES;
    e->values = q;
    Plumb__Envelope *rep = call_ok(c, e);
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_VALUES_REP);
    float *v = f32(rep->values_rep->values, p.N), mv[64], mlp[64];
    model_outputs(c->model, &p, 1.0f, mlp, NULL, mv);
    for (int b = 0; b < p.B; b++) {
        assert_true(v[p.off[b]] == 0.0f);
        for (int t = p.off[b] + 1; t < p.off[b + 1]; t++) assert_true(fabsf(v[t] - mv[t - 1]) < 1e-6f);
    }
    free(v);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&c);
}

/* ---------------------------------------------------------------- score */

static Plumb__Envelope *req_score(WireArena *a, const Pk *p, const char *const *answers, int n) {
    Plumb__Envelope *e = wire_envelope(a, 3, "reward");
    Plumb__ScoreReq *q = wire_alloc(a, sizeof *q);
    plumb__score_req__init(q);
    q->seqs = pk_seqs(a, p);
    q->n_answers = (size_t)n;
    q->answers = (char **)answers;
    e->body_case = PLUMB__ENVELOPE__BODY_SCORE;
    e->score = q;
    return e;
}

/* Scores of p by a reward role with rule/arg (n answers). */
static void scores(const char *rule, const char *arg, const Pk *p, const char *const *ans, int n,
                   const float *want) {
    Role *r = mk_ok((Spec){.role = "reward", .rule = rule, .arg = arg});
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_score(a, p, ans, n));
    float *s = f32(rep->score_rep->scores, p->B);
    for (int b = 0; b < p->B; b++)
        if (fabsf(s[b] - want[b]) > 1e-6f) fail_msg("%s: sequence %d scores %g, want %g", rule, b, s[b], want[b]);
    free(s);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&r);
}

/* The pure rules, then each rule through a reward role (the response is
 * the mask-1 tokens less a trailing EOS); missing answers and bad
 * arguments are errors that name the problem. */
static void test_rules(void **state) {
    RewardRule rr;
    void *st = NULL;
    assert_int_equal(reward_rule_parse("exact_match", &rr), 0);
    assert_int_equal(rr, RULE_EXACT_MATCH);
    assert_true(reward_rule_parse("fuzzy", &rr) < 0);
    assert_non_null(strstr(pl_error(), "fuzzy"));
    assert_int_equal(reward_rule_prepare(RULE_EXACT_MATCH, "", &st), 0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, " 42\n", 3, "42 ") == 1.0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, "420", 3, "42") == 0.0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, "42", 2, NULL) == 0.0);
    reward_rule_free(&st);
    assert_null(st);
    assert_int_equal(reward_rule_prepare(RULE_NUMERIC_MATCH, NULL, &st), 0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, " 12.0", 4, "12") == 1.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "1e1", 3, "10.0000001") == 1.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "12 apples", 9, "12") == 0.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "", 0, "0") == 0.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "12.01", 5, "12") == 0.0);
    reward_rule_free(&st);
    assert_int_equal(reward_rule_prepare(RULE_REGEX, "^\\d+$", &st), 0);
    assert_true(reward_rule_score(RULE_REGEX, st, "123", 3, NULL) == 1.0);
    assert_true(reward_rule_score(RULE_REGEX, st, "12a", 3, NULL) == 0.0);
    reward_rule_free(&st);
    assert_true(reward_rule_prepare(RULE_REGEX, "([a-z", &st) < 0);
    assert_non_null(strstr(pl_error(), "([a-z"));
    assert_true(reward_rule_prepare(RULE_LENGTH, "0", &st) < 0);
    assert_true(reward_rule_prepare(RULE_LENGTH, "4x", &st) < 0);
    assert_int_equal(reward_rule_prepare(RULE_LENGTH, "4", &st), 0);
    assert_true(fabs(reward_rule_score(RULE_LENGTH, st, "", 2, NULL) - 0.5) < 1e-12);
    assert_true(reward_rule_score(RULE_LENGTH, st, "", 9, NULL) == 1.0);
    reward_rule_free(&st);

    Pk p = {0};
    pk_add(&p, "40+2=", "42", 1);
    pk_add(&p, "7+8=", " 15 ", 0);
    pk_add(&p, "1+1=", "3", 1);
    pk_add(&p, "2+2=", "4.0", 1);
    const char *ans[] = {"42", "15", "2", "4"};
    scores("exact_match", NULL, &p, ans, 4, (float[]){1, 1, 0, 0});
    scores("numeric_match", NULL, &p, ans, 4, (float[]){1, 1, 0, 1});
    scores("regex", "^\\s*\\d+\\s*$", &p, NULL, 0, (float[]){1, 1, 1, 0});
    scores("length", "4", &p, NULL, 0, (float[]){0.5f, 1.0f, 0.25f, 0.75f});

    /* exact_match without answers; a bad regex at role_new */
    Role *r = mk_ok((Spec){.role = "reward", .rule = "exact_match"});
    WireArena *a = wire_arena_new();
    int rc;
    assert_null(call(r, req_score(a, &p, NULL, 0), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "sequence 0"));
    assert_null(call(r, req_score(a, &p, ans, 3), &rc));
    assert_non_null(strstr(pl_error(), "3 answers for 4 sequences"));
    role_free(&r);
    assert_true(mk(&r, (Spec){.role = "reward", .rule = "regex", .arg = "(unclosed"}) < 0);
    assert_null(r);
    assert_non_null(strstr(pl_error(), "(unclosed"));
    assert_non_null(strstr(pl_error(), "reward"));
    wire_arena_free(&a);
}

/* Without a rule the reward model scores each sequence by its head at the
 * sequence's last token. */
static void test_score_model(void **state) {
    Role *r = mk_ok((Spec){.role = "reward", .rank = 2, .head = 1});
    randomize_adapter(r, 6);
    Pk p = {0};
    pk_add(&p, "3+4=", "7", 1);
    pk_add(&p, "9=", "99", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_score(a, &p, NULL, 0));
    float *s = f32(rep->score_rep->scores, p.B), mv[64];
    model_outputs(r->model, &p, 1.0f, NULL, NULL, mv);
    for (int b = 0; b < p.B; b++) assert_true(fabsf(s[b] - mv[p.off[b + 1] - 1]) < 1e-6f);
    free(s);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&r);
}

/* ---------------------------------------------------------------- train */

/* Repeated sft calls on one batch lower its NLL; the metrics are the
 * documented ones and the version and step count advance by one per call. */
static void test_sft(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    Pk p;
    fixed_batch(&p);
    WireArena *a = wire_arena_new();
    double first = 0, last = 0;
    for (int i = 0; i < 8; i++) {
        Plumb__Envelope *rep = call_ok(r, req_sft(a, &p, 1, 1));
        double nll = metric(rep, "nll");
        assert_true(fabs(metric(rep, "loss") - nll) < 1e-12);
        assert_true(metric(rep, "tokens") == 11.0);
        assert_true(metric(rep, "grad_norm") > 0 && fabs(metric(rep, "lr") - 2e-2) < 1e-9);
        assert_int_equal(rep->train_rep->adapter_version, i + 1);
        assert_int_equal(rep->train_rep->optimizer_step, i + 1);
        if (i == 0) first = nll;
        last = nll;
        wire_free(&rep);
    }
    assert_true(last < first - 0.1);
    wire_arena_free(&a);
    role_free(&r);
}

/* GRPO: a positive advantage on one sequence raises its response
 * log-prob, a negative one lowers another's; PPO with zero advantages and
 * no KL or entropy term has zero gradient and changes nothing. */
static void test_policy(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 1e-2f});
    randomize_adapter(r, 7);
    Pk p;
    fixed_batch(&p);
    float *old = get_lp(r, &p, 1.0f), adv[1024] = {0}, zero[1024] = {0};
    for (int t = p.off[0]; t < p.off[1]; t++) adv[t] = p.mask[t] ? 1.0f : 0.0f;
    for (int t = p.off[1]; t < p.off[2]; t++) adv[t] = p.mask[t] ? -1.0f : 0.0f;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_policy(a, &p, 1, old, adv, old, 0.04f, 0.01f));
    const char *names[] = {"loss", "grad_norm", "lr", "pg_loss", "kl", "clipfrac", "approx_kl", "entropy"};
    for (int i = 0; i < 8; i++) assert_true(isfinite(metric(rep, names[i])));
    assert_true(metric(rep, "entropy") > 0);
    assert_true(fabs(metric(rep, "approx_kl")) < 1e-6); /* lp == lp_old at the first step */
    wire_free(&rep);
    float *now = get_lp(r, &p, 1.0f);
    double d0 = 0, d1 = 0;
    for (int t = p.off[0]; t < p.off[1]; t++) d0 += p.mask[t] * (now[t] - old[t]);
    for (int t = p.off[1]; t < p.off[2]; t++) d1 += p.mask[t] * (now[t] - old[t]);
    assert_true(d0 > 0);
    assert_true(d1 < 0);

    float before[4096];
    size_t n = r->model->lora->n;
    assert_true(n <= 4096);
    Role *z = mk_ok((Spec){.role = "actor", .rank = 4});
    randomize_adapter(z, 7);
    memcpy(before, z->model->lora->mem, sizeof(float) * n);
    float *zo = get_lp(z, &p, 1.0f);
    rep = call_ok(z, req_policy(a, &p, 0, zo, zero, NULL, 0.0f, 0.0f));
    assert_true(metric(rep, "loss") == 0.0 && metric(rep, "grad_norm") == 0.0);
    assert_memory_equal(before, z->model->lora->mem, sizeof(float) * n);
    assert_int_equal(rep->train_rep->optimizer_step, 1);
    wire_free(&rep);
    free(zo);
    free(old);
    free(now);
    wire_arena_free(&a);
    role_free(&z);
    role_free(&r);
}

/* ratio_level "sequence" reaches the loss: against old log-probs that differ
 * from the current ones token by token, the actor's pg_loss and clipfrac
 * are algo_policy_loss's at RATIO_SEQUENCE (one forward, so lp is the
 * model's before the step), not its token-level ones; a bad name is a
 * protocol error naming the field. */
static void test_policy_gspo(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 1e-2f});
    randomize_adapter(r, 7);
    Pk p;
    fixed_batch(&p);
    float *lp = get_lp(r, &p, 1.0f), old[1024], adv[1024], m[1024];
    for (int b = 0; b < p.B; b++)
        for (int t = p.off[b]; t < p.off[b + 1]; t++) {
            m[t] = p.mask[t];
            old[t] = lp[t] + 0.3f * sinf(1.7f * (float)t);
            adv[t] = b % 2 ? -1.0f : 1.0f;
        }
    AlgoSeqs s = {p.B, p.N, p.off, m};
    PolicyLossOpts o;
    algo_grpo_policy_defaults(&o);
    o.kl_coef = 0.0f;
    PolicyLossOut tok, seq;
    assert_int_equal(algo_policy_loss(&s, lp, old, adv, NULL, NULL, &o, &tok, NULL), 0);
    o.ratio = RATIO_SEQUENCE;
    assert_int_equal(algo_policy_loss(&s, lp, old, adv, NULL, NULL, &o, &seq, NULL), 0);
    assert_true(fabs(seq.pg_loss - tok.pg_loss) > 1e-3);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *q = req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->ratio_level = "sequence";
    Plumb__Envelope *rep = call_ok(r, q);
    assert_true(fabs(metric(rep, "pg_loss") - seq.pg_loss) < 1e-5);
    assert_true(fabs(metric(rep, "clipfrac") - seq.clipfrac) < 1e-9);
    wire_free(&rep);
    int rc;
    q = req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->ratio_level = "sentence";
    assert_null(call(r, q, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "grpo.ratio_level"));
    free(lp);
    wire_arena_free(&a);
    role_free(&r);
}

/* Sum of the masked wire log-probs of sequence b. */
static double seq_lp(const float *lp, const Pk *p, int b) {
    double s = 0;
    for (int t = p->off[b]; t < p->off[b + 1]; t++) s += p->mask[t] * lp[t];
    return s;
}

static void pref_pairs(Pk *c, Pk *rj) {
    memset(c, 0, sizeof *c);
    memset(rj, 0, sizeof *rj);
    pk_add(c, "12+30=", "42", 1);
    pk_add(rj, "12+30=", "43", 1);
    pk_add(c, "7+8=", "15", 1);
    pk_add(rj, "7+8=", "51", 1);
    pk_add(c, "5+5=", "10", 1);
    pk_add(rj, "5+5=", "11", 1);
}

/* DPO against the reference widens chosen-minus-rejected; ORPO reports
 * finite metrics including nll and log_odds. */
static void test_dpo_orpo(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    Role *ref = mk_ok((Spec){.role = "reference"});
    Pk c, rj;
    pref_pairs(&c, &rj);
    float *refc = get_lp(ref, &c, 1.0f), *refr = get_lp(ref, &rj, 1.0f);
    WireArena *a = wire_arena_new();
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = call_ok(r, req_dpo(a, &c, &rj, refc, refr));
        if (i == 0) {
            m0 = metric(rep, "margin");
            assert_true(fabs(m0) < 1e-4); /* policy == reference at the start */
            assert_true(fabs(metric(rep, "loss") - log(2.0)) < 1e-4);
        }
        m1 = metric(rep, "margin");
        assert_true(isfinite(metric(rep, "accuracy")) && isfinite(metric(rep, "reward_chosen")) &&
                    isfinite(metric(rep, "reward_rejected")));
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    float *lc = get_lp(r, &c, 1.0f), *lr = get_lp(r, &rj, 1.0f);
    double dm = 0;
    for (int b = 0; b < c.B; b++)
        dm += (seq_lp(lc, &c, b) - seq_lp(refc, &c, b)) - (seq_lp(lr, &rj, b) - seq_lp(refr, &rj, b));
    assert_true(dm > 0);

    Plumb__Envelope *e = req_train(a, "actor", 1, 1, 0);
    Plumb__OrpoBody *ob = wire_alloc(a, sizeof *ob);
    plumb__orpo_body__init(ob);
    ob->chosen = pk_seqs(a, &c);
    ob->rejected = pk_seqs(a, &rj);
    ob->lambda = 0.1f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_ORPO;
    e->train->orpo = ob;
    Plumb__Envelope *rep = call_ok(r, e);
    const char *names[] = {"loss", "grad_norm", "lr", "reward_chosen", "reward_rejected",
                           "margin", "accuracy", "nll", "log_odds"};
    for (int i = 0; i < 9; i++) assert_true(isfinite(metric(rep, names[i])));
    assert_true(metric(rep, "nll") > 0);
    wire_free(&rep);
    free(lc);
    free(lr);
    free(refc);
    free(refr);
    wire_arena_free(&a);
    role_free(&ref);
    role_free(&r);
}

/* An AlgoSeqs over the masks of p (as floats in mf). */
static AlgoSeqs seqs_of(const Pk *p, float *mf) {
    for (int t = 0; t < p->N; t++) mf[t] = p->mask[t];
    return (AlgoSeqs){.B = p->B, .N = p->N, .offsets = p->off, .mask = mf};
}

/* SimPO's first step reports algo_simpo of the policy's own log-probs and
 * widens the mean-log-prob margin; KTO's reports algo_kto of the policy
 * against the reference with the sent reference point, raises the
 * desirable examples' log-ratio over the undesirable ones', and refuses a
 * label that is not 0 or 1. */
static void test_simpo_kto(void **state) {
    Pk c, rj;
    pref_pairs(&c, &rj);
    WireArena *a = wire_arena_new();
    float mc[256], mr[256];
    AlgoSeqs sc = seqs_of(&c, mc), sr = seqs_of(&rj, mr);

    Role *r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    randomize_adapter(r, 9);
    float *lc = get_lp(r, &c, 1.0f), *lr = get_lp(r, &rj, 1.0f);
    SimpoOpts so = {.beta = 2.0f, .gamma = 0.5f, .label_smoothing = 0.1f};
    PrefOut want;
    assert_int_equal(algo_simpo(&sc, lc, &sr, lr, &so, &want, NULL, NULL), 0);
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = call_ok(r, req_simpo(a, &c, &rj));
        if (i == 0) {
            assert_true(fabs(metric(rep, "loss") - want.loss) < 1e-5);
            assert_true(fabs(metric(rep, "margin") - want.margin) < 1e-5);
            m0 = metric(rep, "margin");
        }
        m1 = metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    free(lc), free(lr);
    role_free(&r);

    /* KTO: the chosen desirable, the rejected undesirable, one batch */
    Pk p = {0};
    for (int b = 0; b < c.B; b++) pk_add_ids(&p, c.tok + c.off[b], c.off[b + 1] - c.off[b], 0);
    for (int b = 0; b < rj.B; b++) pk_add_ids(&p, rj.tok + rj.off[b], rj.off[b + 1] - rj.off[b], 0);
    for (int t = 0; t < p.N; t++) p.mask[t] = t < c.N ? c.mask[t] : rj.mask[t - c.N];
    float des[16], mp[512];
    for (int b = 0; b < p.B; b++) des[b] = b < c.B;
    r = mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    randomize_adapter(r, 10);
    Role *ref = mk_ok((Spec){.role = "reference"});
    float *lp = get_lp(r, &p, 1.0f), *lref = get_lp(ref, &p, 1.0f);
    AlgoSeqs sp = seqs_of(&p, mp);
    int di[16];
    for (int b = 0; b < p.B; b++) di[b] = (int)des[b];
    KtoOpts ko = {.beta = 0.5f, .desirable_weight = 1.0f, .undesirable_weight = 1.5f};
    assert_int_equal(algo_kto(&sp, lp, lref, di, 0.05f, &ko, &want, NULL), 0);
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = call_ok(r, req_kto(a, &p, lref, des, 0.05f));
        if (i == 0) {
            assert_true(fabs(metric(rep, "loss") - want.loss) < 1e-5);
            assert_true(fabs(metric(rep, "reward_chosen") - want.reward_chosen) < 1e-5);
            assert_true(metric(rep, "kl") == 0.05f);
            m0 = metric(rep, "margin");
        }
        m1 = metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    des[1] = 2.0f;
    int rc;
    assert_null(call(r, req_kto(a, &p, lref, des, 0.05f), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "train.kto.desirable[1]"));
    des[1] = 1.0f;
    assert_null(call(r, req_kto(a, &p, lref, des, -1.0f), &rc));
    assert_non_null(strstr(pl_error(), "kl -1"));
    free(lp), free(lref);
    role_free(&ref);
    role_free(&r);
    wire_arena_free(&a);
}

/* BT on the reward head raises chosen over rejected; the critic's value
 * loss falls toward fixed returns. */
static void test_bt_value(void **state) {
    Role *r = mk_ok((Spec){.role = "reward", .rank = 2, .head = 1, .lr = 2e-2f});
    Pk c, rj;
    pref_pairs(&c, &rj);
    WireArena *a = wire_arena_new();
    double first = 0, last = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = call_ok(r, req_bt(a, &c, &rj, 0));
        const char *names[] = {"loss", "grad_norm", "lr", "accuracy", "margin", "reward_chosen",
                               "reward_rejected"};
        for (int k = 0; k < 7; k++) assert_true(isfinite(metric(rep, names[k])));
        if (i == 0) first = metric(rep, "margin");
        last = metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(last > first);

    Role *cr = mk_ok((Spec){.role = "critic", .rank = 2, .head = 1, .lr = 2e-2f});
    Pk p;
    fixed_batch(&p);
    float ret[1024], old[1024] = {0};
    for (int t = 0; t < p.N; t++) ret[t] = p.mask[t] ? 0.5f : 0.0f;
    first = last = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = call_ok(cr, req_value(a, &p, old, ret));
        assert_true(isfinite(metric(rep, "value_clipfrac")) && isfinite(metric(rep, "value_mean")));
        if (i == 0) first = metric(rep, "value_loss");
        last = metric(rep, "value_loss");
        wire_free(&rep);
    }
    assert_true(last < first);
    wire_arena_free(&a);
    role_free(&cr);
    role_free(&r);
}

/* minibatches 2 x epochs 2 = 4 optimizer steps in one call. */
static void test_minibatches(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    fixed_batch(&p);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = call_ok(r, req_sft(a, &p, 2, 2));
    /* each step sees half the batch: every sequence lands in one part */
    assert_true(metric(rep, "tokens") == 11.0 / 2);
    assert_int_equal(rep->train_rep->optimizer_step, 4);
    assert_int_equal(rep->train_rep->adapter_version, 4);
    assert_int_equal(r->opt_step, 4);
    wire_free(&rep);
    int rc;
    assert_null(call(r, req_sft(a, &p, 1, 5), &rc)); /* more parts than sequences */
    assert_int_equal(rc, PL_EPROTO);
    assert_int_equal(r->opt_step, 4);
    wire_arena_free(&a);
    role_free(&r);
}

/* Micro-batches of one sequence accumulate the gradients of one forward
 * over the whole part (lr 0 keeps both models equal; the gradients stay in
 * the model after the call), for sft, grpo with entropy, value and bt. */
static void test_micro_batch(void **state) {
    Pk p, c, rj;
    fixed_batch(&p);
    pref_pairs(&c, &rj);
    float adv[1024], ret[1024], zero[1024] = {0};
    for (int t = 0; t < p.N; t++) {
        adv[t] = p.mask[t] ? (t % 3) - 1.0f : 0.0f;
        ret[t] = p.mask[t] ? 0.3f * (t % 2) : 0.0f;
    }
    for (int body = 0; body < 4; body++) {
        const char *role = body < 2 ? "actor" : body == 2 ? "critic" : "reward";
        int head = body >= 2;
        Role *r0 = mk_ok((Spec){.role = role, .rank = 2, .head = head, .lr = 1e-30f});
        Role *r1 = mk_ok((Spec){.role = role, .rank = 2, .head = head, .micro = 1, .lr = 1e-30f});
        randomize_adapter(r0, 9);
        randomize_adapter(r1, 9);
        WireArena *a = wire_arena_new();
        float *old = body == 1 ? get_lp(r0, &p, 1.0f) : NULL;
        Plumb__Envelope *q = body == 0 ? req_sft(a, &p, 1, 1)
                             : body == 1 ? req_policy(a, &p, 1, old, adv, old, 0.1f, 0.05f)
                             : body == 2 ? req_value(a, &p, zero, ret)
                                         : req_bt(a, &c, &rj, 0);
        Plumb__Envelope *e0 = call_ok(r0, q), *e1 = call_ok(r1, q);
        assert_true(fabs(metric(e0, "loss") - metric(e1, "loss")) < 1e-5);
        float *p0[3], *g0[3], *p1[3], *g1[3];
        size_t n0[3], n1[3];
        int k0 = model_trainable(r0->model, p0, g0, n0), k1 = model_trainable(r1->model, p1, g1, n1);
        assert_int_equal(k0, k1);
        for (int i = 0; i < k0; i++) tu_assert_close(g1[i], g0[i], n0[i], 1e-5f, 1e-4f, role);
        wire_free(&e0);
        wire_free(&e1);
        free(old);
        wire_arena_free(&a);
        role_free(&r0);
        role_free(&r1);
    }
}

static Plumb__Envelope *req_body(WireArena *a, int body, const Pk *p, const Pk *c, const Pk *rj,
                                  const float *old, const float *adv, const float *ret,
                                  const float *refc, const float *refr) {
    switch (body) {
    case 0: return req_sft(a, p, 1, 1);
    case 1: return req_policy(a, p, 1, old, adv, old, 0.1f, 0.05f);
    case 2: return req_value(a, p, adv, ret);
    case 3: return req_bt(a, c, rj, 0);
    case 4: return req_dpo(a, c, rj, refc, refr);
    case 5: return req_simpo(a, c, rj);
    default: {
        static const float des[8] = {1, 0, 1, 1, 0, 1, 0, 1};
        return req_kto(a, p, old, des, 0.02f);
    }
    }
}

static double loss_of(Role *r, const Plumb__Envelope *q) {
    Plumb__Envelope *rep = call_ok(r, q);
    double l = metric(rep, "loss");
    wire_free(&rep);
    return l;
}

/* The gradient a train call leaves in the model is the derivative of the
 * loss it reports: central differences along a random direction of the
 * adapter and head, for sft, grpo (KL and entropy terms), value, bt, dpo,
 * simpo and kto. This pins the per-token shift of lp, entropy and values on the way
 * back. */
static void test_train_gradients(void **state) {
    Pk p, c, rj;
    fixed_batch(&p);
    pref_pairs(&c, &rj);
    float adv[1024], ret[1024];
    for (int t = 0; t < p.N; t++) {
        adv[t] = p.mask[t] ? 0.5f * ((t % 3) - 1.0f) : 0.0f;
        ret[t] = p.mask[t] ? 0.3f * (t % 2) : 0.0f;
    }
    for (int body = 0; body < 7; body++) {
        const char *role = body == 2 ? "critic" : body == 3 ? "reward" : "actor";
        Role *r = mk_ok((Spec){.role = role, .rank = 2, .head = body == 2 || body == 3,
                               .lr = 1e-30f, .clip = -1.0f});
        randomize_adapter(r, 20 + body);
        int actor = !strcmp(role, "actor");
        float *old = actor ? get_lp(r, &p, 1.0f) : calloc(p.N, sizeof(float));
        float *refc = actor ? get_lp(r, &c, 1.0f) : calloc(c.N, sizeof(float));
        float *refr = actor ? get_lp(r, &rj, 1.0f) : calloc(rj.N, sizeof(float));
        for (int t = 0; t < c.N; t++) refc[t] -= 0.05f * (t % 3);
        WireArena *a = wire_arena_new();
        const Plumb__Envelope *q = req_body(a, body, &p, &c, &rj, old, adv, ret, refc, refr);
        loss_of(r, q);
        float *par[3], *gr[3];
        size_t n[3];
        int k = model_trainable(r->model, par, gr, n);
        Rng g;
        rng_seed(&g, 77 + body);
        float *dir[3];
        double norm = 0, an = 0;
        for (int i = 0; i < k; i++) {
            dir[i] = malloc(sizeof(float) * n[i]);
            tu_randn(dir[i], n[i], &g, 1.0f);
            for (size_t j = 0; j < n[i]; j++) norm += (double)dir[i][j] * dir[i][j];
        }
        const double h = 1e-2;
        norm = sqrt(norm);
        for (int i = 0; i < k; i++)
            for (size_t j = 0; j < n[i]; j++) {
                dir[i][j] = (float)(dir[i][j] / norm);
                an += (double)gr[i][j] * dir[i][j];
            }
        double l[2];
        for (int side = 0; side < 2; side++) {
            float *save[3];
            for (int i = 0; i < k; i++) {
                save[i] = malloc(sizeof(float) * n[i]);
                memcpy(save[i], par[i], sizeof(float) * n[i]);
                for (size_t j = 0; j < n[i]; j++) par[i][j] += (float)((side ? -h : h) * dir[i][j]);
            }
            l[side] = loss_of(r, q);
            for (int i = 0; i < k; i++) {
                memcpy(par[i], save[i], sizeof(float) * n[i]);
                free(save[i]);
            }
        }
        double fd = (l[0] - l[1]) / (2 * h);
        if (fabs(fd - an) > 2e-2 * fabs(an) + 2e-4)
            fail_msg("%s body %d: finite difference %.6g, gradient %.6g", role, body, fd, an);
        for (int i = 0; i < k; i++) free(dir[i]);
        free(old);
        free(refc);
        free(refr);
        wire_arena_free(&a);
        role_free(&r);
    }
}

/* ----------------------------------------------------- adapter, resume */

static Plumb__Envelope *req_adapter(WireArena *a, const char *role, int get, uint64_t version,
                                    const float *data, int n) {
    Plumb__Envelope *e = wire_envelope(a, 4, role);
    Plumb__AdapterMsg *m = wire_alloc(a, sizeof *m);
    plumb__adapter_msg__init(m);
    m->get = get;
    m->version = version;
    m->data = data ? wire_f32(a, data, n) : NULL;
    e->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
    e->adapter = m;
    return e;
}

/* get returns the flat adapter and version; set installs it at a version
 * (a rollout replica then samples as the trainer); a wrong size fails and
 * changes nothing; the critic has no adapter sync. */
static void test_adapter(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    Role *src = mk_ok((Spec){.role = "actor", .rank = 2});
    randomize_adapter(src, 12);
    src->adapter_version = 9;
    int n = (int)src->model->lora->n;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *g = call_ok(src, req_adapter(a, "actor", 1, 0, NULL, 0));
    assert_int_equal(g->body_case, PLUMB__ENVELOPE__BODY_ADAPTER);
    assert_int_equal(g->adapter->version, 9);
    float *data = f32(g->adapter->data, n);
    assert_memory_equal(data, src->model->lora->mem, sizeof(float) * n);
    Plumb__Envelope *ok = call_ok(r, req_adapter(a, "actor", 0, 9, data, n));
    assert_int_equal(ok->body_case, PLUMB__ENVELOPE__BODY_OK);
    assert_int_equal(r->adapter_version, 9);
    assert_memory_equal(r->model->lora->mem, src->model->lora->mem, sizeof(float) * n);
    Pk p;
    fixed_batch(&p);
    float *l1 = get_lp(r, &p, 1.0f), *l2 = get_lp(src, &p, 1.0f);
    assert_memory_equal(l1, l2, sizeof(float) * p.N);
    int rc;
    assert_null(call(r, req_adapter(a, "actor", 0, 10, data, n - 1), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_int_equal(r->adapter_version, 9);
    Role *c = mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    assert_null(call(c, req_adapter(a, "critic", 1, 0, NULL, 0), &rc));
    assert_non_null(strstr(pl_error(), "role 'critic' does not answer 'adapter'"));
    free(l1);
    free(l2);
    free(data);
    wire_free(&g);
    wire_free(&ok);
    wire_arena_free(&a);
    role_free(&c);
    role_free(&src);
    role_free(&r);
}

static Plumb__Envelope *req_checkpoint(WireArena *a, const char *role, const char *dir, int hf) {
    Plumb__Envelope *e = wire_envelope(a, 5, role);
    Plumb__CheckpointReq *c = wire_alloc(a, sizeof *c);
    plumb__checkpoint_req__init(c);
    c->dir = (char *)dir;
    c->export_hf = hf;
    e->body_case = PLUMB__ENVELOPE__BODY_CHECKPOINT;
    e->checkpoint = c;
    return e;
}

/* A role saved after two train calls and rebuilt with resume_dir answers
 * the next train call with the same metrics and ends in the same state as
 * the role that went on (adapter, head, moments, step, version), for a
 * LoRA actor (warmup schedule), a reward head, and full fine-tuning. */
static void test_resume(void **state) {
    for (int kind = 0; kind < 3; kind++) {
        Spec s = kind == 0   ? (Spec){.role = "actor", .rank = 2, .micro = 2, .warmup = 3}
                 : kind == 1 ? (Spec){.role = "reward", .rank = 2, .head = 1}
                             : (Spec){.role = "actor", .train_base = 1, .lr = 1e-3f};
        Role *r = mk_ok(s);
        Pk p, c, rj;
        fixed_batch(&p);
        pref_pairs(&c, &rj);
        WireArena *a = wire_arena_new();
        for (int i = 0; i < 2; i++) {
            Plumb__Envelope *q = kind == 1 ? req_bt(a, &c, &rj, i) : req_sft(a, &p, 1, 2);
            wire_free((Plumb__Envelope *[]){call_ok(r, q)});
        }
        const char *dir = tu_path("%s/ckpt%d", tu_tmp_dir(), kind);
        Plumb__Envelope *ok = call_ok(r, req_checkpoint(a, s.role, dir, 0));
        assert_int_equal(ok->body_case, PLUMB__ENVELOPE__BODY_OK);
        wire_free(&ok);
        struct stat st;
        assert_int_equal(stat(tu_path("%s/%s/state.json", dir, s.role), &st), 0);
        Spec s2 = s;
        s2.resume = dir;
        s2.seed = 999; /* the saved state, not the init seed, decides */
        Role *q2 = mk_ok(s2);
        assert_int_equal(q2->opt_step, r->opt_step);
        assert_int_equal(q2->adapter_version, r->adapter_version);
        Plumb__Envelope *q = kind == 1 ? req_bt(a, &c, &rj, 5) : req_sft(a, &p, 2, 2);
        Plumb__Envelope *e1 = call_ok(r, q), *e2 = call_ok(q2, q);
        for (size_t i = 0; i < e1->train_rep->n_metrics; i++)
            assert_true(e1->train_rep->metrics[i]->value == e2->train_rep->metrics[i]->value);
        assert_int_equal(e1->train_rep->optimizer_step, e2->train_rep->optimizer_step);
        float *p1[3], *g1[3], *p2[3], *g2[3];
        size_t n1[3], n2[3];
        int k = model_trainable(r->model, p1, g1, n1);
        assert_int_equal(model_trainable(q2->model, p2, g2, n2), k);
        for (int i = 0; i < k; i++) {
            assert_memory_equal(p1[i], p2[i], sizeof(float) * n1[i]);
            assert_memory_equal(r->opt[i].m, q2->opt[i].m, sizeof(float) * n1[i]);
            assert_memory_equal(r->opt[i].v, q2->opt[i].v, sizeof(float) * n1[i]);
        }
        wire_free(&e1);
        wire_free(&e2);
        wire_arena_free(&a);
        role_free(&q2);
        role_free(&r);
    }
}

/* checkpoint with export_hf writes a merged Hugging Face model that,
 * loaded as a plain base, scores like the actor with its adapter; the
 * tokenizer and the PEFT adapter come along. */
static void test_export(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    randomize_adapter(r, 13);
    const char *dir = tu_path("%s/export", tu_tmp_dir());
    char d[600];
    snprintf(d, sizeof d, "%s", dir);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *ok = call_ok(r, req_checkpoint(a, "actor", d, 1));
    wire_free(&ok);
    struct stat st;
    const char *files[] = {"hf/config.json", "hf/model.safetensors", "hf/tokenizer.json",
                           "hf/tokenizer_config.json", "hf/adapter/adapter_config.json",
                           "actor/adapter/adapter_model.safetensors", "actor/optimizer.safetensors"};
    for (int i = 0; i < 7; i++)
        if (stat(tu_path("%s/%s", d, files[i]), &st) != 0) fail_msg("missing %s", files[i]);
    Base *merged = NULL;
    assert_int_equal(base_load(&merged, tu_path("%s/hf", d)), 0);
    ModelOptions mo = {0};
    Model *m = NULL;
    assert_int_equal(model_new(&m, merged, &mo), 0);
    Pk p;
    fixed_batch(&p);
    float want[1024], got[1024];
    model_outputs(m, &p, 1.0f, want, NULL, NULL);
    model_outputs(r->model, &p, 1.0f, got, NULL, NULL);
    tu_assert_close(got, want, p.N, 1e-4f, 1e-4f, "merged export vs actor");
    model_free(&m);
    base_free(&merged);
    wire_arena_free(&a);
    role_free(&r);
}

/* ----------------------------------------------------------- bad input */

/* A lying shape, a token outside the vocabulary, a sequence over the
 * context, a bad option: each fails with a message naming the field, and
 * the role (adapter, moments, step, version) is unchanged. */
static void test_validation(void **state) {
    Role *r = mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    fixed_batch(&p);
    WireArena *a = wire_arena_new();
    wire_free((Plumb__Envelope *[]){call_ok(r, req_sft(a, &p, 1, 1))});
    size_t n = r->model->lora->n;
    float *mem = malloc(sizeof(float) * n), *mm = malloc(sizeof(float) * n);
    memcpy(mem, r->model->lora->mem, sizeof(float) * n);
    memcpy(mm, r->opt[0].m, sizeof(float) * n);
    float *old = get_lp(r, &p, 1.0f), adv[1024] = {0};
    int rc;
    /* old_logprobs one short */
    Plumb__Envelope *q = req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->old_logprobs = wire_f32(a, old, p.N - 1);
    assert_null(call(r, q, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "train.grpo.old_logprobs"));
    /* kl_coef without reference log-probs */
    assert_null(call(r, req_policy(a, &p, 1, old, adv, NULL, 0.1f, 0.0f), &rc));
    assert_non_null(strstr(pl_error(), "ref_logprobs"));
    /* a non-finite advantage */
    adv[3] = NAN;
    assert_null(call(r, req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f), &rc));
    assert_non_null(strstr(pl_error(), "advantages"));
    adv[3] = 0;
    /* a bad loss_agg */
    q = req_policy(a, &p, 0, old, adv, NULL, 0.0f, 0.0f);
    q->train->ppo->loss_agg = "median";
    assert_null(call(r, q, &rc));
    assert_non_null(strstr(pl_error(), "median"));
    /* a token id over the vocabulary, in train and in logprobs */
    Pk bad = p;
    bad.tok[2] = ARITH_VOCAB;
    assert_null(call(r, req_sft(a, &bad, 1, 1), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "vocabulary"));
    assert_null(call(r, req_logprobs(a, "actor", &bad, 1.0f, 0), &rc));
    assert_non_null(strstr(pl_error(), "logprobs.seqs"));
    /* a sequence longer than the context */
    Pk lng = {0};
    int ids[60];
    for (int i = 0; i < 60; i++) ids[i] = 40 + i % 10;
    pk_add_ids(&lng, ids, 60, 50);
    assert_null(call(r, req_sft(a, &lng, 1, 1), &rc));
    assert_non_null(strstr(pl_error(), "context"));
    /* sft with no response tokens */
    Pk nom = p;
    memset(nom.mask, 0, sizeof nom.mask);
    assert_null(call(r, req_sft(a, &nom, 1, 1), &rc));
    assert_non_null(strstr(pl_error(), "mask"));
    /* dpo pairs that do not pair */
    Pk c, rj;
    pref_pairs(&c, &rj);
    Pk rj2 = {0};
    pk_add(&rj2, "1=", "1", 1);
    float *rc_lp = get_lp(r, &c, 1.0f), *rr_lp = get_lp(r, &rj2, 1.0f);
    assert_null(call(r, req_dpo(a, &c, &rj2, rc_lp, rr_lp), &rc));
    assert_non_null(strstr(pl_error(), "3 chosen and 1 rejected"));
    /* nothing changed */
    assert_memory_equal(mem, r->model->lora->mem, sizeof(float) * n);
    assert_memory_equal(mm, r->opt[0].m, sizeof(float) * n);
    assert_int_equal(r->opt_step, 1);
    assert_int_equal(r->adapter_version, 1);
    free(rc_lp);
    free(rr_lp);
    free(old);
    free(mem);
    free(mm);
    wire_arena_free(&a);
    role_free(&r);
}

/* Requests a role does not answer, and requests addressed to another
 * role, fail with PL_EPROTO naming both. */
static void test_wrong_role(void **state) {
    Role *c = mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    Role *ref = mk_ok((Spec){.role = "reference"});
    Role *act = mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    fixed_batch(&p);
    WireArena *a = wire_arena_new();
    int rc;
    Plumb__Envelope *g = req_generate(a, &p, 1, 0);
    g->role = "critic";
    assert_null(call(c, g, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_string_equal(pl_error(), "role 'critic' does not answer 'generate'");
    Plumb__Envelope *s = req_sft(a, &p, 1, 1);
    s->role = "critic";
    assert_null(call(c, s, &rc));
    assert_string_equal(pl_error(), "role 'critic' does not answer 'train.sft'");
    s->role = "reference";
    assert_null(call(ref, s, &rc));
    assert_non_null(strstr(pl_error(), "role 'reference' does not answer 'train.sft'"));
    static const float zeros[1024];
    assert_null(call(act, req_value(a, &p, zeros, zeros), &rc));
    assert_non_null(strstr(pl_error(), "'critic'"));
    assert_non_null(strstr(pl_error(), "reached role 'actor'"));
    Plumb__Envelope *v = req_value(a, &p, zeros, zeros);
    v->role = "actor";
    assert_null(call(act, v, &rc));
    assert_string_equal(pl_error(), "role 'actor' does not answer 'train.value'");
    wire_arena_free(&a);
    role_free(&act);
    role_free(&ref);
    role_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_bases_shared),
        cmocka_unit_test(test_generate),    cmocka_unit_test(test_logprobs_shift),
        cmocka_unit_test(test_values_shift), cmocka_unit_test(test_rules),
        cmocka_unit_test(test_score_model), cmocka_unit_test(test_sft),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_policy_gspo),      cmocka_unit_test(test_dpo_orpo),
        cmocka_unit_test(test_simpo_kto),
        cmocka_unit_test(test_bt_value),    cmocka_unit_test(test_minibatches),
        cmocka_unit_test(test_micro_batch), cmocka_unit_test(test_train_gradients),
        cmocka_unit_test(test_adapter),
        cmocka_unit_test(test_resume),      cmocka_unit_test(test_export),
        cmocka_unit_test(test_validation),  cmocka_unit_test(test_wrong_role),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
