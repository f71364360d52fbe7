/* step_rl.c: one GRPO or PPO step (algos.h): rollouts from the actor
 * replicas; their scores, the reference's log-probs and (PPO) the critic's
 * values, asked at once; advantages (group-relative, or KL-shaped rewards
 * and GAE); the actor's update and (PPO) the critic's; the adaptive KL
 * controller; the adapter sync. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "algo/grpo.h"
#include "algo/ppo.h"
#include "common/err.h"
#include "common/rng.h"
#include "coordinator/run_impl.h"

/* One step's rollouts and what is computed from them; N, B of ro.seqs. */
typedef struct {
    int ppo, G;
    int kl_in_rewards;       /* ppo, reinforce_pp: the KL is in the rewards    */
    Rollout ro;
    AlgoSeqs as;      /* ro.seqs for algo/                             */
    float *maskf;     /* (N)                                           */
    float *scores;    /* (B) the reward's                              */
    float *lp_ref;    /* (N) the reference's, or NULL (no KL term)     */
    float *values;    /* (N) the critic's (PPO)                        */
    float *adv, *ret; /* (N) advantages; returns (PPO)                 */
} RlBatch;

static void rl_free(RlBatch *b) {
    rollout_free(&b->ro);
    free(b->maskf), free(b->scores), free(b->lp_ref), free(b->values), free(b->adv), free(b->ret);
    memset(b, 0, sizeof *b);
}

/* Rollouts of records which[0..n), then score + reference + values in
 * parallel. */
static int rl_collect(Run *r, const long *which, int n, RlBatch *b) {
    const RunConfig *c = r->cfg;
    PL_TRY(rollout_sync_adapters(r));
    PL_TRY(rollout_generate(r, &r->train, which, n, b->G, c->temperature, c->max_new_tokens,
                            rng_mix3(c->seed, TAG_GEN, r->step), &b->ro));
    const Packed *p = &b->ro.seqs;
    size_t nn = (size_t)(p->N ? p->N : 1);
    b->as = (AlgoSeqs){.B = p->B, .N = p->N, .offsets = p->offsets};
    b->maskf = malloc(sizeof(float) * nn);
    b->adv = calloc(nn, sizeof(float));
    b->ret = calloc(nn, sizeof(float));
    if (!b->maskf || !b->adv || !b->ret) return pl_fail(PL_ENOMEM, "rollout arrays");
    for (int t = 0; t < p->N; t++)
        b->maskf[t] = p->mask[t];
    b->as.mask = b->maskf;

    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall calls[3];
    memset(calls, 0, sizeof calls);
    int nc = 0, i_ref = -1, i_val = -1;
    int rc = req_score(r, a, &r->train, which, b->G, p, &calls[nc++]);
    if (rc == 0 && c->kl_coef != 0 && (rc = calls[nc].worker = req_first(r, ROLE_REFERENCE)) >= 0) {
        calls[nc].req = req_logprobs(a, ROLE_REFERENCE, p, c->temperature);
        i_ref = nc++;
        rc = 0;
    }
    if (rc == 0 && b->ppo && (rc = calls[nc].worker = req_first(r, ROLE_CRITIC)) >= 0) {
        calls[nc].req = req_values(a, ROLE_CRITIC, p);
        i_val = nc++;
        rc = 0;
    }
    if (rc == 0) rc = req_call(r, calls, nc);
    if (rc == 0) rc = req_expect(r, &calls[0], PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
    if (rc == 0)
        rc = req_f32(r, &calls[0], calls[0].rep->score_rep->scores, p->B, "score.scores",
                     &b->scores);
    if (rc == 0 && i_ref >= 0) {
        PoolCall *x = &calls[i_ref];
        rc = req_expect(r, x, PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "reference logprobs");
        if (rc == 0)
            rc = req_f32(r, x, x->rep->logprobs_rep->logprobs, p->N, "logprobs", &b->lp_ref);
    }
    if (rc == 0 && i_val >= 0) {
        PoolCall *x = &calls[i_val];
        rc = req_expect(r, x, PLUMB__ENVELOPE__BODY_VALUES_REP, "values");
        if (rc == 0) rc = req_f32(r, x, x->rep->values_rep->values, p->N, "values", &b->values);
    }
    pool_calls_free(calls, nc);
    wire_arena_free(&a);
    if (rc == 0) rollout_metrics(r, p, b->scores);
    return rc;
}

/* Per-token rewards: the score at each sequence's end, the KL to the
 * reference (at coefficient kl_coef) on every token. */
static int rl_rewards(Run *r, const RlBatch *b, float kl_coef, float *rewards) {
    KlEstimator ke;
    PL_TRY(kl_estimator_parse(r->cfg->kl_estimator, &ke));
    return algo_ppo_rewards(&b->as, b->ro.lp, b->lp_ref, b->scores, kl_coef, ke,
                            r->cfg->reward_clip, rewards);
}

/* GRPO: group-relative advantages over each prompt's G samples, or with
 * reinforce_pp REINFORCE++'s whitened discounted returns of the per-token
 * rewards (the KL then in the rewards, not the loss). PPO: per-token
 * rewards, GAE over the critic's values, optional whitening. */
static int rl_advantages(Run *r, RlBatch *b) {
    const RunConfig *c = r->cfg;
    const Packed *p = &b->ro.seqs;
    AdvEstimator est = ADV_GROUP;
    if (!b->ppo) PL_TRY(adv_estimator_parse(c->advantage, &est));
    if (!b->ppo && est == ADV_REINFORCE_PP) {
        float *rewards = calloc((size_t)(p->N ? p->N : 1), sizeof(float));
        PL_CHECK_ALLOC(rewards);
        int rc = rl_rewards(r, b, c->kl_coef, rewards);
        if (rc == 0) rc = algo_reinforce_pp(&b->as, rewards, c->gamma, b->adv, NULL);
        free(rewards);
        PL_TRY(rc);
    } else if (!b->ppo) {
        float *seq_adv = calloc((size_t)(p->B ? p->B : 1), sizeof(float));
        PL_CHECK_ALLOC(seq_adv);
        int rc = algo_group_advantages(b->scores, p->B, b->G, est, seq_adv);
        if (rc == 0) rc = algo_broadcast_seq(&b->as, seq_adv, b->adv);
        free(seq_adv);
        PL_TRY(rc);
    } else {
        float *rewards = calloc((size_t)(p->N ? p->N : 1), sizeof(float));
        PL_CHECK_ALLOC(rewards);
        int rc = rl_rewards(r, b, (float)r->kl.kl_coef, rewards);
        if (rc == 0) rc = algo_gae(&b->as, rewards, b->values, c->gamma, c->lambda, b->adv, b->ret);
        if (rc == 0 && c->whiten_advantages)
            rc = algo_masked_whiten(b->adv, b->adv, b->maskf, p->N, 1);
        free(rewards);
        PL_TRY(rc);
        double vm;
        algo_masked_mean(b->values, b->maskf, p->N, &vm);
        stats_put(&r->stats, "rollout/value_mean", vm);
        stats_put(&r->stats, "rollout/kl_coef", r->kl.kl_coef);
    }
    if (b->lp_ref) {
        /* sequence KL of the rollout: mean over sequences of sum (lp - lp_ref) */
        double kl = 0;
        for (int t = 0; t < p->N; t++)
            kl += b->maskf[t] * (b->ro.lp[t] - b->lp_ref[t]);
        stats_put(&r->stats, "rollout/kl", kl / (p->B ? p->B : 1));
    }
    return 0;
}

/* The actor's replicas' update and (PPO) the critic's, all at once. */
static int rl_update(Run *r, RlBatch *b) {
    const RunConfig *c = r->cfg;
    const Packed *p = &b->ro.seqs;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall up[2 * POOL_MAX_WORKERS];
    memset(up, 0, sizeof up);
    int nu = 0, na = 0;
    Plumb__Envelope *e = req_train(a, ROLE_ACTOR, r, rng_mix3(c->seed, TAG_TRAIN, r->step));
    Plumb__PolicyBody *pb = wire_alloc(a, sizeof *pb);
    plumb__policy_body__init(pb);
    pb->seqs = req_packed(a, p);
    pb->old_logprobs = wire_f32(a, b->ro.lp, p->N);
    pb->advantages = wire_f32(a, b->adv, p->N);
    if (b->lp_ref && !b->kl_in_rewards) pb->ref_logprobs = wire_f32(a, b->lp_ref, p->N);
    pb->clip_low = c->clip_low, pb->clip_high = c->clip_high, pb->dual_clip = c->dual_clip;
    pb->loss_agg = (char *)c->loss_agg;
    pb->max_new_tokens = c->max_new_tokens;
    pb->kl_coef = b->kl_in_rewards ? 0 : c->kl_coef;
    pb->kl_estimator = (char *)c->kl_estimator;
    pb->ratio_level = (char *)c->ratio_level;
    pb->temperature = c->temperature;
    pb->entropy_coef = c->entropy_coef;
    e->train->body_case = b->ppo ? PLUMB__TRAIN_REQ__BODY_PPO : PLUMB__TRAIN_REQ__BODY_GRPO;
    if (b->ppo)
        e->train->ppo = pb;
    else
        e->train->grpo = pb;
    int rc = na = req_train_add(r, a, ROLE_ACTOR, e, up, POOL_MAX_WORKERS);
    if (rc > 0) nu = na, rc = 0;
    if (rc == 0 && b->ppo) {
        Plumb__Envelope *v =
            req_train(a, ROLE_CRITIC, r, rng_mix3(c->seed, TAG_CRITIC_TRAIN, r->step));
        Plumb__ValueBody *vb = wire_alloc(a, sizeof *vb);
        plumb__value_body__init(vb);
        vb->seqs = pb->seqs;
        vb->old_values = wire_f32(a, b->values, p->N);
        vb->returns = wire_f32(a, b->ret, p->N);
        vb->clip_range = c->value_clip;
        vb->loss_agg = (char *)c->loss_agg;
        vb->max_new_tokens = c->max_new_tokens;
        v->train->body_case = PLUMB__TRAIN_REQ__BODY_VALUE;
        v->train->value = vb;
        rc = req_train_add(r, a, ROLE_CRITIC, v, up + na, POOL_MAX_WORKERS);
        if (rc > 0) nu += rc, rc = 0;
    }
    if (rc == 0) rc = req_train_run(r, up, nu);
    if (rc == 0) rc = req_train_done(r, ROLE_ACTOR, up, na, "train/");
    if (rc == 0 && nu > na) rc = req_train_done(r, ROLE_CRITIC, up + na, nu - na, "critic/");
    pool_calls_free(up, nu);
    wire_arena_free(&a);
    return rc;
}

static int step_rl(Run *r, const long *which, int n, int ppo) {
    RlBatch b = {.ppo = ppo, .G = r->cfg->group_size,
                 .kl_in_rewards = ppo || !strcmp(r->cfg->advantage, "reinforce_pp")};
    int rc = rl_collect(r, which, n, &b);
    if (rc == 0) rc = rl_advantages(r, &b);
    if (rc == 0) rc = rl_update(r, &b);
    if (rc == 0 && ppo && r->cfg->kl_target > 0) {
        double kl = stats_get(&r->stats, "rollout/kl");
        rc = algo_kl_ctl_update(&r->kl, isfinite(kl) ? kl : 0, b.ro.seqs.B);
    }
    if (rc == 0) rc = rollout_sync_adapters(r);
    rl_free(&b);
    return rc;
}

int step_grpo(Run *r, const long *which, int n) { return step_rl(r, which, n, 0); }
int step_ppo(Run *r, const long *which, int n) { return step_rl(r, which, n, 1); }
