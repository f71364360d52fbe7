/* policy.c: the actor's token-level train bodies: sft (the masked NLL)
 * and ppo / grpo (the clipped policy loss of algo/ppo.h, with the KL to
 * the reference in the loss for grpo and an optional entropy bonus).
 *
 * Dimension letters: N tokens of a part. */
#include <math.h>

#include "actor/bodies.h"
#include "algo/grpo.h"
#include "algo/ppo.h"
#include "common/err.h"

/* ------------------------------------------------------------------ sft */

static int sft_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    PL_TRY(train_get_seqs(r, q->sft->seqs, j));
    long masked = 0;
    for (int t = 0; t < j->s[0].N; t++) masked += j->s[0].mask[t];
    if (j->U > 0 && masked == 0)
        return pl_fail(PL_EPROTO, "%s: no mask-1 (response) tokens", train_what(j));
    return 0;
}

/* The token mean of -lp over the response tokens. */
static int sft_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    double msum = 0, nll = 0;
    for (int t = 0; t < p->N; t++) {
        msum += p->maskf[t];
        nll -= (double)p->maskf[t] * o->lp[t];
    }
    if (msum > 0) {
        nll /= msum;
        for (int t = 0; t < p->N; t++) o->dlp[t] = (float)(-p->maskf[t] / msum);
    }
    *loss = nll, m[0] = nll, m[1] = msum;
    return 0;
}

static const char *const sft_metrics[] = {"nll", "tokens"};

const TrainBody actor_sft = {.body = PLUMB__TRAIN_REQ__BODY_SFT, .metrics = sft_metrics,
                             .n_metrics = 2, .prepare = sft_prepare, .loss = sft_loss};

/* ------------------------------------------------------------ ppo, grpo */

typedef struct {
    PolicyLossOpts po;
    float entropy_coef;
} PolicyOpts;

static int policy_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    int grpo = q->body_case == PLUMB__TRAIN_REQ__BODY_GRPO;
    const Plumb__PolicyBody *b = grpo ? q->grpo : q->ppo;
    const char *w = train_what(j);
    PolicyOpts *o = j->opts;
    PL_TRY(train_get_seqs(r, b->seqs, j));
    PL_TRY(train_get_tok(b->old_logprobs, j, 0, 0, "old_logprobs"));
    PL_TRY(train_get_tok(b->advantages, j, 0, 1, "advantages"));
    if (b->kl_coef != 0.0f || b->ref_logprobs) PL_TRY(train_get_tok(b->ref_logprobs, j, 0, 2, "ref_logprobs"));
    if (grpo) algo_grpo_policy_defaults(&o->po);
    else algo_ppo_policy_defaults(&o->po);
    o->po.clip_low = b->clip_low;
    o->po.clip_high = b->clip_high;
    o->po.dual_clip = b->dual_clip;
    o->po.max_new_tokens = b->max_new_tokens;
    o->po.kl_coef = b->kl_coef;
    PL_TRY(train_get_agg(b->loss_agg, j, &o->po.agg));
    if (b->kl_estimator && *b->kl_estimator && kl_estimator_parse(b->kl_estimator, &o->po.kl_est) < 0)
        return pl_wrap(PL_EPROTO, "%s.kl_estimator", w);
    if (b->ratio_level && *b->ratio_level && ratio_level_parse(b->ratio_level, &o->po.ratio) < 0)
        return pl_wrap(PL_EPROTO, "%s.ratio_level", w);
    if (!(b->clip_low >= 0) || !(b->clip_high >= 0) || !isfinite(b->clip_low) ||
        !isfinite(b->clip_high) || !(b->dual_clip == 0 || b->dual_clip > 1) ||
        !isfinite(b->kl_coef) || !isfinite(b->entropy_coef) || !isfinite(b->temperature))
        return pl_fail(PL_EPROTO, "%s: clip_low %g clip_high %g dual_clip %g kl_coef %g "
                       "entropy_coef %g temperature %g: out of range", w, b->clip_low,
                       b->clip_high, b->dual_clip, b->kl_coef, b->entropy_coef, b->temperature);
    if (o->po.agg == LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM && b->max_new_tokens <= 0)
        return pl_fail(PL_EPROTO, "%s: loss_agg seq_mean_token_sum_norm needs max_new_tokens > 0", w);
    o->entropy_coef = b->entropy_coef;
    j->T = b->temperature > 0 ? b->temperature : 1.0f;
    j->need_ent = 1;
    return 0;
}

/* in[0] old log-probs, in[1] advantages, in[2] reference log-probs. */
static int policy_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss,
                       double *m) {
    const PolicyOpts *po = j->opts;
    AlgoSeqs s = {.B = p->S, .N = p->N, .offsets = p->offsets, .mask = p->maskf};
    PolicyLossOut out;
    PL_TRY(algo_policy_loss(&s, o->lp, p->in[0], p->in[1], p->in[2], o->ent, &po->po, &out, o->dlp));
    *loss = out.loss;
    if (po->entropy_coef != 0.0f) {
        double msum = 0;
        for (int t = 0; t < p->N; t++) msum += p->maskf[t];
        if (msum > 0) {
            *loss -= po->entropy_coef * out.entropy;
            for (int t = 0; t < p->N; t++) o->dent[t] = (float)(-po->entropy_coef * p->maskf[t] / msum);
        }
    }
    m[0] = out.pg_loss, m[1] = out.kl_loss, m[2] = out.clipfrac, m[3] = out.approx_kl;
    m[4] = out.entropy;
    /* before the first update the parameters are the ones that generated
     * the rollout, so lp is the trainer's view of the very tokens whose
     * sampling log-probs are in[0]: the two are the same bits (the kernels
     * sum in one order for any batch), and this says so every step */
    double dmax = 0;
    for (int t = 0; j->step == 0 && t < p->N; t++)
        if (p->maskf[t] != 0.0f && fabs((double)o->lp[t] - p->in[0][t]) > dmax)
            dmax = fabs((double)o->lp[t] - p->in[0][t]);
    m[5] = dmax;
    return 0;
}

/* a metric named rollout/... is the rollout's: the coordinator logs it as is */
static const char *const policy_metrics[] = {"pg_loss",  "kl",      "clipfrac",
                                             "approx_kl", "entropy", "rollout/logprob_diff_max"};

const TrainBody actor_ppo = {.body = PLUMB__TRAIN_REQ__BODY_PPO, .metrics = policy_metrics,
                             .n_metrics = 6, .first_step_metrics = 1u << 5,
                             .opts_size = sizeof(PolicyOpts), .prepare = policy_prepare,
                             .loss = policy_loss};
const TrainBody actor_grpo = {.body = PLUMB__TRAIN_REQ__BODY_GRPO, .metrics = policy_metrics,
                              .n_metrics = 6, .first_step_metrics = 1u << 5,
                              .opts_size = sizeof(PolicyOpts), .prepare = policy_prepare,
                              .loss = policy_loss};
