/* step_rl.c: one GRPO or PPO step (algos.h): rollouts from the actor
 * replicas (with DAPO's dynamic sampling, rounds of them until the groups
 * carry a signal); their scores (DAPO's overlong penalty on them), the
 * reference's log-probs and (PPO) the critic's values, asked at once; advantages (group-relative, or KL-shaped rewards
 * and GAE); the actor's update and (PPO) the critic's; the adaptive KL
 * controller; the adapter sync. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "algo/dapo.h"
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

/* Asks at once: the reward for the scores of p's sequences (scores given;
 * sequence b answers record which[b / G]), the reference for their
 * log-probs (lp_ref given) and the critic for their values (values given). */
static int rl_ask(Run *r, const Packed *p, const long *which, int G, float **scores,
                  float **lp_ref, float **values) {
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall calls[3];
    memset(calls, 0, sizeof calls);
    int nc = 0, i_sc = -1, i_ref = -1, i_val = -1, rc = 0;
    if (scores) {
        i_sc = nc;
        rc = req_score(r, a, &r->train, which, G, p, &calls[nc++]);
    }
    if (rc == 0 && lp_ref && (rc = calls[nc].worker = req_first(r, ROLE_REFERENCE)) >= 0) {
        calls[nc].req = req_logprobs(a, ROLE_REFERENCE, p, r->cfg->temperature);
        i_ref = nc++;
        rc = 0;
    }
    if (rc == 0 && values && (rc = calls[nc].worker = req_first(r, ROLE_CRITIC)) >= 0) {
        calls[nc].req = req_values(a, ROLE_CRITIC, p);
        i_val = nc++;
        rc = 0;
    }
    if (rc == 0 && nc) rc = req_call(r, calls, nc);
    if (rc == 0 && i_sc >= 0) {
        PoolCall *x = &calls[i_sc];
        rc = req_expect(r, x, PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
        if (rc == 0) rc = req_f32(r, x, x->rep->score_rep->scores, p->B, "score.scores", scores);
    }
    if (rc == 0 && i_ref >= 0) {
        PoolCall *x = &calls[i_ref];
        rc = req_expect(r, x, PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "reference logprobs");
        if (rc == 0)
            rc = req_f32(r, x, x->rep->logprobs_rep->logprobs, p->N, "logprobs", lp_ref);
    }
    if (rc == 0 && i_val >= 0) {
        PoolCall *x = &calls[i_val];
        rc = req_expect(r, x, PLUMB__ENVELOPE__BODY_VALUES_REP, "values");
        if (rc == 0) rc = req_f32(r, x, x->rep->values_rep->values, p->N, "values", values);
    }
    pool_calls_free(calls, nc);
    wire_arena_free(&a);
    return rc;
}

/* DAPO's overlong penalty on the scores of p's sequences, each one's term
 * into pen (B), when algo.overlong_buffer is on (else pen is 0). */
static int rl_overlong(Run *r, const Packed *p, float *scores, float *pen) {
    const RunConfig *c = r->cfg;
    memset(pen, 0, sizeof(float) * (size_t)p->B);
    if (c->overlong_buffer <= 0) return 0;
    float *m = malloc(sizeof(float) * (size_t)(p->N ? p->N : 1));
    PL_CHECK_ALLOC(m);
    for (int t = 0; t < p->N; t++)
        m[t] = p->mask[t];
    AlgoSeqs as = {.B = p->B, .N = p->N, .offsets = p->offsets, .mask = m};
    int rc = algo_overlong_penalty(&as, c->max_new_tokens, c->overlong_buffer,
                                   c->overlong_penalty, scores, pen);
    free(m);
    return rc;
}

/* DAPO's dynamic sampling: rounds of G samples for n records (the step's,
 * then n drawn from data.train by the seed and the step) until n groups
 * whose scores are not all equal are found, or algo.filter_max_rounds;
 * groups found beyond n are not used, and a batch still short is completed
 * with the last round's equal-score groups (no advantage, so no policy
 * gradient), so that every step trains on n groups. Fixed by the seed and
 * the step alone: a resumed run draws the same. The kept rollouts go to
 * b->ro, their shaped scores and penalties to b->scores and pen. */
static int rl_filtered(Run *r, const long *which, int n, RlBatch *b, float **pen) {
    const RunConfig *c = r->cfg;
    const int G = b->G;
    Rng rng;
    rng_seed(&rng, rng_mix3(c->seed, TAG_FILTER, (uint64_t)r->step));
    long *draw = malloc(sizeof(long) * (size_t)n);
    float *ksc = malloc(sizeof(float) * (size_t)n * G), *kpen = malloc(sizeof(float) * (size_t)n * G);
    unsigned char *used = malloc((size_t)n);
    Rollout last = {0};
    float *lsc = NULL, *lpen = NULL;
    int rc = draw && ksc && kpen && used ? 0 : pl_fail(PL_ENOMEM, "filter_groups");
    int nk = 0, rounds = 0, uniform = 0;
    while (rc == 0 && nk < n && rounds < c->filter_max_rounds) {
        const long *w = which;
        if (rounds > 0) {
            for (int i = 0; i < n; i++)
                draw[i] = (long)(rng_u64(&rng) % (uint64_t)r->train.n);
            w = draw;
        }
        uint64_t gseed = rng_mix3(c->seed, TAG_GEN, (uint64_t)r->step);
        if (rounds > 0) gseed = rng_mix3(gseed, TAG_FILTER, (uint64_t)rounds);
        rollout_free(&last);
        free(lsc), free(lpen);
        lsc = NULL;
        lpen = malloc(sizeof(float) * (size_t)n * G);
        if (!lpen) rc = pl_fail(PL_ENOMEM, "filter_groups");
        if (rc == 0)
            rc = rollout_generate(r, &r->train, w, n, G, c->temperature, c->max_new_tokens, gseed,
                                  &last);
        if (rc == 0) rc = rl_ask(r, &last.seqs, w, G, &lsc, NULL, NULL);
        if (rc == 0) rc = rl_overlong(r, &last.seqs, lsc, lpen);
        rounds++;
        for (int g = 0; rc == 0 && g < n; g++) {
            used[g] = 0;
            if (!algo_group_informative(lsc + g * G, G)) {
                uniform++;
                continue;
            }
            if (nk == n) continue; /* a surplus group */
            rc = rollout_append(&b->ro, &last, g * G, G);
            memcpy(ksc + nk * G, lsc + g * G, sizeof(float) * G);
            memcpy(kpen + nk * G, lpen + g * G, sizeof(float) * G);
            used[g] = 1, nk++;
        }
    }
    const int informative = nk;
    for (int g = 0; rc == 0 && g < n && nk < n; g++) {
        if (used[g]) continue;
        rc = rollout_append(&b->ro, &last, g * G, G);
        memcpy(ksc + nk * G, lsc + g * G, sizeof(float) * G);
        memcpy(kpen + nk * G, lpen + g * G, sizeof(float) * G);
        nk++;
    }
    rollout_free(&last);
    free(lsc), free(lpen), free(draw), free(used);
    b->ro.n_prompts = n;
    b->scores = ksc, *pen = kpen;
    if (rc == 0) {
        stats_put(&r->stats, "rollout/filter_rounds", rounds);
        stats_put(&r->stats, "rollout/groups_uniform", uniform);
        stats_put(&r->stats, "rollout/groups_informative_frac", (double)informative / n);
    }
    return rc;
}

/* ------------------------------------------------- algo.max_staleness */

/* Step t's rollout from the current policy into the queue (made_at: now). */
static int rl_ahead_make(Run *r, long t, int n, int G) {
    const RunConfig *c = r->cfg;
    long *w = malloc(sizeof(long) * (size_t)n);
    PL_CHECK_ALLOC(w);
    order_step(&r->order, t, n, w);
    Rollout ro;
    int rc = rollout_generate(r, &r->train, w, n, G, c->temperature, c->max_new_tokens,
                              rng_mix3(c->seed, TAG_GEN, (uint64_t)t), &ro);
    if (rc == 0) rc = pending_push(r, &ro, w, n, t, r->step);
    rollout_free(&ro);
    free(w);
    return rc;
}

/* Asynchronous RL with staleness K: step s trains on the rollout that the
 * policy of step max(0, s - K) made, which was generated beside step
 * s - K's update (rl_update) or, for the first K steps, at the start; it
 * comes from the queue into b. A queue without step s (the first step, or
 * a checkpoint written without algo.max_staleness) is filled from the
 * policy at hand. */
static int rl_ahead_take(Run *r, const long *which, int n, RlBatch *b) {
    const RunConfig *c = r->cfg;
    const long s = r->step;
    if (r->n_pending == 0 || r->pending[0].step != s) {
        if (s > 0 && !r->hooks->quiet)
            fprintf(stderr, "plumb coordinator: step %ld: no rollouts made ahead; making steps "
                            "%ld..%ld with the policy at hand\n", s + 1, s + 1,
                    s + c->max_staleness);
        pending_free_all(r);
        for (long t = s; t < s + c->max_staleness && t < c->steps; t++)
            PL_TRY(rl_ahead_make(r, t, n, b->G));
    }
    Pending p;
    PL_TRY(pending_pop(r, s, &p));
    int rc = p.n == n && !memcmp(p.which, which, sizeof(long) * (size_t)n)
                 ? 0
                 : pl_fail(PL_EINVAL, "the rollout made ahead for step %ld has other records than "
                                      "the step", s + 1);
    if (rc == 0) {
        b->ro = p.ro;
        memset(&p.ro, 0, sizeof p.ro);
        r->rollout_stale = p.made_at != s;
        stats_put(&r->stats, "rollout/staleness", (double)(s - p.made_at));
    }
    pending_release(&p);
    return rc;
}

/* Rollouts of records which[0..n) (filtered, with algo.filter_groups), then
 * score, reference and values in parallel. */
static int rl_collect(Run *r, const long *which, int n, RlBatch *b) {
    const RunConfig *c = r->cfg;
    PL_TRY(rollout_sync_adapters(r));
    float *pen = NULL;
    int rc = 0;
    if (c->max_staleness > 0)
        rc = rl_ahead_take(r, which, n, b);
    else if (c->filter_groups)
        rc = rl_filtered(r, which, n, b, &pen);
    else
        rc = rollout_generate(r, &r->train, which, n, b->G, c->temperature, c->max_new_tokens,
                              rng_mix3(c->seed, TAG_GEN, r->step), &b->ro);
    const Packed *p = &b->ro.seqs;
    size_t nn = (size_t)(p->N ? p->N : 1);
    b->as = (AlgoSeqs){.B = p->B, .N = p->N, .offsets = p->offsets};
    b->maskf = malloc(sizeof(float) * nn);
    b->adv = calloc(nn, sizeof(float));
    b->ret = calloc(nn, sizeof(float));
    if (!pen) pen = malloc(sizeof(float) * (size_t)(p->B ? p->B : 1));
    if (rc == 0 && (!b->maskf || !b->adv || !b->ret || !pen))
        rc = pl_fail(PL_ENOMEM, "rollout arrays");
    for (int t = 0; rc == 0 && t < p->N; t++)
        b->maskf[t] = p->mask[t];
    b->as.mask = b->maskf;
    if (rc == 0)
        rc = rl_ask(r, p, which, b->G, c->filter_groups ? NULL : &b->scores,
                    c->kl_coef != 0 ? &b->lp_ref : NULL, b->ppo ? &b->values : NULL);
    if (rc == 0 && !c->filter_groups) rc = rl_overlong(r, p, b->scores, pen);
    if (rc == 0 && c->overlong_buffer > 0) {
        double sum = 0;
        int over = 0;
        for (int i = 0; i < p->B; i++)
            sum += pen[i], over += pen[i] < 0;
        stats_put(&r->stats, "rollout/overlong_penalty", p->B ? sum / p->B : 0);
        stats_put(&r->stats, "rollout/overlong_frac", p->B ? (double)over / p->B : 0);
    }
    free(pen);
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
    PoolCall up[3 * POOL_MAX_WORKERS];
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
    /* algo.max_staleness: step s + K's rollout, made by this policy beside
     * its update; the requests go first, so a replica that also trains
     * generates before it updates */
    GenCalls g = {0};
    long ahead = r->step + c->max_staleness;
    int ng = 0, rc = 0;
    long *w = NULL;
    if (c->max_staleness > 0 && ahead < c->steps) {
        w = malloc(sizeof(long) * (size_t)b->ro.n_prompts);
        if (!w) rc = pl_fail(PL_ENOMEM, "the records of step %ld", ahead + 1);
        if (rc == 0) order_step(&r->order, ahead, b->ro.n_prompts, w);
        if (rc == 0)
            rc = rollout_prepare(r, &r->train, w, b->ro.n_prompts, b->G, c->temperature,
                                 c->max_new_tokens, rng_mix3(c->seed, TAG_GEN, (uint64_t)ahead), 1,
                                 &g);
        if (rc == 0) memcpy(up, g.calls, sizeof(PoolCall) * (size_t)g.nw), ng = g.nw;
    }
    PoolCall *tr = up + ng; /* the train calls */
    if (rc == 0) rc = na = req_train_add(r, a, ROLE_ACTOR, e, tr, POOL_MAX_WORKERS);
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
        rc = req_train_add(r, a, ROLE_CRITIC, v, tr + na, POOL_MAX_WORKERS);
        if (rc > 0) nu += rc, rc = 0;
    }
    if (rc == 0) rc = req_train_run(r, up, ng + nu);
    if (ng) {
        /* the replies are g's to read and free */
        memcpy(g.calls, up, sizeof(PoolCall) * (size_t)ng);
        Rollout ro = {0};
        if (rc == 0) rc = rollout_collect(r, &g, &ro);
        else gen_calls_free(&g);
        if (rc == 0) rc = pending_push(r, &ro, w, b->ro.n_prompts, ahead, r->step);
        rollout_free(&ro);
    }
    free(w);
    if (rc == 0) rc = req_train_done(r, ROLE_ACTOR, tr, na, "train/");
    if (rc == 0 && nu > na) rc = req_train_done(r, ROLE_CRITIC, tr + na, nu - na, "critic/");
    pool_calls_free(tr, nu);
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
