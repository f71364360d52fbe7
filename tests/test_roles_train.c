/* test_roles_train.c: every train body of the worker roles (worker/role.h),
 * sent through the wire to a role on the tiny random model as in
 * test_roles.c (rolesutil.h).
 *
 * Proves: each train body moves the model the way its loss says (sft lowers
 * the NLL, a positive advantage raises a sequence's log-prob, zero
 * advantages change nothing, dpo and simpo widen the margin, kto raises the
 * desirable examples' log-ratio, bt raises chosen over rejected, the value
 * loss falls; orpo reports finite metrics); GSPO's sequence-level ratio
 * reaches the loss; SimPO and KTO report algo/'s losses on the role's own
 * log-probs; minibatches x epochs optimizer steps; micro-batches give the
 * same gradients as one forward; the gradient each body leaves is the
 * derivative of the loss it reports (finite differences). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/wire.h"
#include "algo/grpo.h"
#include "algo/ppo.h"
#include "algo/pref.h"
#include "testutil.h"
#include "worker/role.h"
#include "rolesutil.h"

/* ---------------------------------------------------------- sft, policy */

/* Repeated sft calls on one batch lower its NLL; the metrics are the
 * documented ones and the version and step count advance by one per call. */
static void test_sft(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    Pk p;
    rl_fixed_batch(&p);
    WireArena *a = wire_arena_new();
    double first = 0, last = 0;
    for (int i = 0; i < 8; i++) {
        Plumb__Envelope *rep = rl_call_ok(r, rl_req_sft(a, &p, 1, 1));
        double nll = rl_metric(rep, "nll");
        assert_true(fabs(rl_metric(rep, "loss") - nll) < 1e-12);
        assert_true(rl_metric(rep, "tokens") == 11.0);
        assert_true(rl_metric(rep, "grad_norm") > 0 && fabs(rl_metric(rep, "lr") - 2e-2) < 1e-9);
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
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 1e-2f});
    rl_randomize_adapter(r, 7);
    Pk p;
    rl_fixed_batch(&p);
    float *old = rl_get_lp(r, &p, 1.0f), adv[1024] = {0}, zero[1024] = {0};
    for (int t = p.off[0]; t < p.off[1]; t++) adv[t] = p.mask[t] ? 1.0f : 0.0f;
    for (int t = p.off[1]; t < p.off[2]; t++) adv[t] = p.mask[t] ? -1.0f : 0.0f;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, rl_req_policy(a, &p, 1, old, adv, old, 0.04f, 0.01f));
    const char *names[] = {"loss", "grad_norm", "lr", "pg_loss", "kl", "clipfrac", "approx_kl", "entropy"};
    for (int i = 0; i < 8; i++) assert_true(isfinite(rl_metric(rep, names[i])));
    assert_true(rl_metric(rep, "entropy") > 0);
    assert_true(fabs(rl_metric(rep, "approx_kl")) < 1e-6); /* lp == lp_old at the first step */
    wire_free(&rep);
    float *now = rl_get_lp(r, &p, 1.0f);
    double d0 = 0, d1 = 0;
    for (int t = p.off[0]; t < p.off[1]; t++) d0 += p.mask[t] * (now[t] - old[t]);
    for (int t = p.off[1]; t < p.off[2]; t++) d1 += p.mask[t] * (now[t] - old[t]);
    assert_true(d0 > 0);
    assert_true(d1 < 0);

    float before[4096];
    size_t n = r->model->lora->n;
    assert_true(n <= 4096);
    Role *z = rl_mk_ok((Spec){.role = "actor", .rank = 4});
    rl_randomize_adapter(z, 7);
    memcpy(before, z->model->lora->mem, sizeof(float) * n);
    float *zo = rl_get_lp(z, &p, 1.0f);
    rep = rl_call_ok(z, rl_req_policy(a, &p, 0, zo, zero, NULL, 0.0f, 0.0f));
    assert_true(rl_metric(rep, "loss") == 0.0 && rl_metric(rep, "grad_norm") == 0.0);
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
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 1e-2f});
    rl_randomize_adapter(r, 7);
    Pk p;
    rl_fixed_batch(&p);
    float *lp = rl_get_lp(r, &p, 1.0f), old[1024], adv[1024], m[1024];
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
    Plumb__Envelope *q = rl_req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->ratio_level = "sequence";
    Plumb__Envelope *rep = rl_call_ok(r, q);
    assert_true(fabs(rl_metric(rep, "pg_loss") - seq.pg_loss) < 1e-5);
    assert_true(fabs(rl_metric(rep, "clipfrac") - seq.clipfrac) < 1e-9);
    wire_free(&rep);
    int rc;
    q = rl_req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->ratio_level = "sentence";
    assert_null(rl_call(r, q, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "grpo.ratio_level"));
    free(lp);
    wire_arena_free(&a);
    role_free(&r);
}

/* ---------------------------------------------------------- preferences */

/* Sum of the masked wire log-probs of sequence b. */
static double seq_lp(const float *lp, const Pk *p, int b) {
    double s = 0;
    for (int t = p->off[b]; t < p->off[b + 1]; t++) s += p->mask[t] * lp[t];
    return s;
}

/* DPO against the reference widens chosen-minus-rejected; ORPO reports
 * finite metrics including nll and log_odds. */
static void test_dpo_orpo(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    Role *ref = rl_mk_ok((Spec){.role = "reference"});
    Pk c, rj;
    rl_pref_pairs(&c, &rj);
    float *refc = rl_get_lp(ref, &c, 1.0f), *refr = rl_get_lp(ref, &rj, 1.0f);
    WireArena *a = wire_arena_new();
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = rl_call_ok(r, rl_req_dpo(a, &c, &rj, refc, refr));
        if (i == 0) {
            m0 = rl_metric(rep, "margin");
            assert_true(fabs(m0) < 1e-4); /* policy == reference at the start */
            assert_true(fabs(rl_metric(rep, "loss") - log(2.0)) < 1e-4);
        }
        m1 = rl_metric(rep, "margin");
        assert_true(isfinite(rl_metric(rep, "accuracy")) &&
                    isfinite(rl_metric(rep, "reward_chosen")) &&
                    isfinite(rl_metric(rep, "reward_rejected")));
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    float *lc = rl_get_lp(r, &c, 1.0f), *lr = rl_get_lp(r, &rj, 1.0f);
    double dm = 0;
    for (int b = 0; b < c.B; b++)
        dm += (seq_lp(lc, &c, b) - seq_lp(refc, &c, b)) - (seq_lp(lr, &rj, b) - seq_lp(refr, &rj, b));
    assert_true(dm > 0);

    Plumb__Envelope *e = rl_req_train(a, "actor", 1, 1, 0);
    Plumb__OrpoBody *ob = wire_alloc(a, sizeof *ob);
    plumb__orpo_body__init(ob);
    ob->chosen = rl_pk_seqs(a, &c);
    ob->rejected = rl_pk_seqs(a, &rj);
    ob->lambda = 0.1f;
    e->train->body_case = PLUMB__TRAIN_REQ__BODY_ORPO;
    e->train->orpo = ob;
    Plumb__Envelope *rep = rl_call_ok(r, e);
    const char *names[] = {"loss", "grad_norm", "lr", "reward_chosen", "reward_rejected",
                           "margin", "accuracy", "nll", "log_odds"};
    for (int i = 0; i < 9; i++) assert_true(isfinite(rl_metric(rep, names[i])));
    assert_true(rl_metric(rep, "nll") > 0);
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
    rl_pref_pairs(&c, &rj);
    WireArena *a = wire_arena_new();
    float mc[256], mr[256];
    AlgoSeqs sc = seqs_of(&c, mc), sr = seqs_of(&rj, mr);

    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    rl_randomize_adapter(r, 9);
    float *lc = rl_get_lp(r, &c, 1.0f), *lr = rl_get_lp(r, &rj, 1.0f);
    SimpoOpts so = {.beta = 2.0f, .gamma = 0.5f, .label_smoothing = 0.1f};
    PrefOut want;
    assert_int_equal(algo_simpo(&sc, lc, &sr, lr, &so, &want, NULL, NULL), 0);
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = rl_call_ok(r, rl_req_simpo(a, &c, &rj));
        if (i == 0) {
            assert_true(fabs(rl_metric(rep, "loss") - want.loss) < 1e-5);
            assert_true(fabs(rl_metric(rep, "margin") - want.margin) < 1e-5);
            m0 = rl_metric(rep, "margin");
        }
        m1 = rl_metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    free(lc), free(lr);
    role_free(&r);

    /* KTO: the chosen desirable, the rejected undesirable, one batch */
    Pk p = {0};
    for (int b = 0; b < c.B; b++) rl_pk_add_ids(&p, c.tok + c.off[b], c.off[b + 1] - c.off[b], 0);
    for (int b = 0; b < rj.B; b++)
        rl_pk_add_ids(&p, rj.tok + rj.off[b], rj.off[b + 1] - rj.off[b], 0);
    for (int t = 0; t < p.N; t++) p.mask[t] = t < c.N ? c.mask[t] : rj.mask[t - c.N];
    float des[16], mp[512];
    for (int b = 0; b < p.B; b++) des[b] = b < c.B;
    r = rl_mk_ok((Spec){.role = "actor", .rank = 4, .lr = 2e-2f});
    rl_randomize_adapter(r, 10);
    Role *ref = rl_mk_ok((Spec){.role = "reference"});
    float *lp = rl_get_lp(r, &p, 1.0f), *lref = rl_get_lp(ref, &p, 1.0f);
    AlgoSeqs sp = seqs_of(&p, mp);
    int di[16];
    for (int b = 0; b < p.B; b++) di[b] = (int)des[b];
    KtoOpts ko = {.beta = 0.5f, .desirable_weight = 1.0f, .undesirable_weight = 1.5f};
    assert_int_equal(algo_kto(&sp, lp, lref, di, 0.05f, &ko, &want, NULL), 0);
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = rl_call_ok(r, rl_req_kto(a, &p, lref, des, 0.05f));
        if (i == 0) {
            assert_true(fabs(rl_metric(rep, "loss") - want.loss) < 1e-5);
            assert_true(fabs(rl_metric(rep, "reward_chosen") - want.reward_chosen) < 1e-5);
            assert_true(rl_metric(rep, "kl") == 0.05f);
            m0 = rl_metric(rep, "margin");
        }
        m1 = rl_metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(m1 > m0);
    des[1] = 2.0f;
    int rc;
    assert_null(rl_call(r, rl_req_kto(a, &p, lref, des, 0.05f), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "train.kto.desirable[1]"));
    des[1] = 1.0f;
    assert_null(rl_call(r, rl_req_kto(a, &p, lref, des, -1.0f), &rc));
    assert_non_null(strstr(pl_error(), "kl -1"));
    free(lp), free(lref);
    role_free(&ref);
    role_free(&r);
    wire_arena_free(&a);
}

/* ----------------------------------------------------- reward and value */

/* BT on the reward head raises chosen over rejected; the critic's value
 * loss falls toward fixed returns. */
static void test_bt_value(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "reward", .rank = 2, .head = 1, .lr = 2e-2f});
    Pk c, rj;
    rl_pref_pairs(&c, &rj);
    WireArena *a = wire_arena_new();
    double first = 0, last = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = rl_call_ok(r, rl_req_bt(a, &c, &rj, 0));
        const char *names[] = {"loss", "grad_norm", "lr", "accuracy", "margin", "reward_chosen",
                               "reward_rejected"};
        for (int k = 0; k < 7; k++) assert_true(isfinite(rl_metric(rep, names[k])));
        if (i == 0) first = rl_metric(rep, "margin");
        last = rl_metric(rep, "margin");
        wire_free(&rep);
    }
    assert_true(last > first);

    Role *cr = rl_mk_ok((Spec){.role = "critic", .rank = 2, .head = 1, .lr = 2e-2f});
    Pk p;
    rl_fixed_batch(&p);
    float ret[1024], old[1024] = {0};
    for (int t = 0; t < p.N; t++) ret[t] = p.mask[t] ? 0.5f : 0.0f;
    first = last = 0;
    for (int i = 0; i < 6; i++) {
        Plumb__Envelope *rep = rl_call_ok(cr, rl_req_value(a, &p, old, ret));
        assert_true(isfinite(rl_metric(rep, "value_clipfrac")) &&
                    isfinite(rl_metric(rep, "value_mean")));
        if (i == 0) first = rl_metric(rep, "value_loss");
        last = rl_metric(rep, "value_loss");
        wire_free(&rep);
    }
    assert_true(last < first);
    wire_arena_free(&a);
    role_free(&cr);
    role_free(&r);
}

/* -------------------------------- minibatches, micro-batches, gradients */

/* minibatches 2 x epochs 2 = 4 optimizer steps in one call. */
static void test_minibatches(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    rl_fixed_batch(&p);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, rl_req_sft(a, &p, 2, 2));
    /* each step sees half the batch: every sequence lands in one part */
    assert_true(rl_metric(rep, "tokens") == 11.0 / 2);
    assert_int_equal(rep->train_rep->optimizer_step, 4);
    assert_int_equal(rep->train_rep->adapter_version, 4);
    assert_int_equal(r->opt_step, 4);
    wire_free(&rep);
    int rc;
    assert_null(rl_call(r, rl_req_sft(a, &p, 1, 5), &rc)); /* more parts than sequences */
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
    rl_fixed_batch(&p);
    rl_pref_pairs(&c, &rj);
    float adv[1024], ret[1024], zero[1024] = {0};
    for (int t = 0; t < p.N; t++) {
        adv[t] = p.mask[t] ? (t % 3) - 1.0f : 0.0f;
        ret[t] = p.mask[t] ? 0.3f * (t % 2) : 0.0f;
    }
    for (int body = 0; body < 4; body++) {
        const char *role = body < 2 ? "actor" : body == 2 ? "critic" : "reward";
        int head = body >= 2;
        Role *r0 = rl_mk_ok((Spec){.role = role, .rank = 2, .head = head, .lr = 1e-30f});
        Role *r1 =
            rl_mk_ok((Spec){.role = role, .rank = 2, .head = head, .micro = 1, .lr = 1e-30f});
        rl_randomize_adapter(r0, 9);
        rl_randomize_adapter(r1, 9);
        WireArena *a = wire_arena_new();
        float *old = body == 1 ? rl_get_lp(r0, &p, 1.0f) : NULL;
        Plumb__Envelope *q = body == 0 ? rl_req_sft(a, &p, 1, 1)
                             : body == 1 ? rl_req_policy(a, &p, 1, old, adv, old, 0.1f, 0.05f)
                             : body == 2 ? rl_req_value(a, &p, zero, ret)
                                         : rl_req_bt(a, &c, &rj, 0);
        Plumb__Envelope *e0 = rl_call_ok(r0, q), *e1 = rl_call_ok(r1, q);
        assert_true(fabs(rl_metric(e0, "loss") - rl_metric(e1, "loss")) < 1e-5);
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
    case 0: return rl_req_sft(a, p, 1, 1);
    case 1: return rl_req_policy(a, p, 1, old, adv, old, 0.1f, 0.05f);
    case 2: return rl_req_value(a, p, adv, ret);
    case 3: return rl_req_bt(a, c, rj, 0);
    case 4: return rl_req_dpo(a, c, rj, refc, refr);
    case 5: return rl_req_simpo(a, c, rj);
    default: {
        static const float des[8] = {1, 0, 1, 1, 0, 1, 0, 1};
        return rl_req_kto(a, p, old, des, 0.02f);
    }
    }
}

static double loss_of(Role *r, const Plumb__Envelope *q) {
    Plumb__Envelope *rep = rl_call_ok(r, q);
    double l = rl_metric(rep, "loss");
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
    rl_fixed_batch(&p);
    rl_pref_pairs(&c, &rj);
    float adv[1024], ret[1024];
    for (int t = 0; t < p.N; t++) {
        adv[t] = p.mask[t] ? 0.5f * ((t % 3) - 1.0f) : 0.0f;
        ret[t] = p.mask[t] ? 0.3f * (t % 2) : 0.0f;
    }
    for (int body = 0; body < 7; body++) {
        const char *role = body == 2 ? "critic" : body == 3 ? "reward" : "actor";
        Role *r = rl_mk_ok((Spec){.role = role, .rank = 2, .head = body == 2 || body == 3,
                               .lr = 1e-30f, .clip = -1.0f});
        rl_randomize_adapter(r, 20 + body);
        int actor = !strcmp(role, "actor");
        float *old = actor ? rl_get_lp(r, &p, 1.0f) : calloc(p.N, sizeof(float));
        float *refc = actor ? rl_get_lp(r, &c, 1.0f) : calloc(c.N, sizeof(float));
        float *refr = actor ? rl_get_lp(r, &rj, 1.0f) : calloc(rj.N, sizeof(float));
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sft),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_policy_gspo),
        cmocka_unit_test(test_dpo_orpo),
        cmocka_unit_test(test_simpo_kto),
        cmocka_unit_test(test_bt_value),
        cmocka_unit_test(test_minibatches),
        cmocka_unit_test(test_micro_batch),
        cmocka_unit_test(test_train_gradients),
    };
    return cmocka_run_group_tests(tests, rl_setup, rl_teardown);
}
