/* ppo.h: PPO's reward shaping, adaptive KL, GAE, and the clipped policy and
 * value losses (ALGORITHMS.md, "PPO"). The policy loss is shared with the
 * GRPO family (grpo.h), which adds its KL term through the same options.
 *
 * Shapes: B sequences, N packed tokens (see algo.h). Per-token arrays are
 * (N); per-sequence arrays are (B). Only masked tokens take part; outputs
 * on unmasked tokens are 0. Shaped rewards, advantages and returns are
 * built from detached rollout data and are constants of the losses, so
 * those functions return values only; the losses return gradients. */
#ifndef PLUMB_ALGO_PPO_H
#define PLUMB_ALGO_PPO_H

#include "algo.h"
#include "kl.h"

/* ------------------------------------------------------ reward shaping */

/* rewards (N) = -kl_coef * kl_t on the masked tokens, with kl_t the
 * estimator `est` of lp against lp_ref (k1 in ALGORITHMS.md), plus the
 * sequence score, clipped to [-reward_clip, reward_clip] (reward_clip <= 0:
 * no clip; default 10), at the last masked token of each sequence (the EOS,
 * or the last generated token when truncated). A sequence with no masked
 * token gets nothing. lp_ref may be NULL when kl_coef = 0. Fails with
 * PL_EINVAL on a bad batch or NULL arrays. */
int algo_ppo_rewards(const AlgoSeqs *s, const float *lp, const float *lp_ref, const float *score,
                     float kl_coef, KlEstimator est, float reward_clip, float *rewards);

/* ------------------------------------------------------- adaptive KL */

typedef struct {
    double kl_coef;         /* current coefficient                               */
    double target;          /* kl_target; <= 0: fixed coefficient                */
    double horizon;         /* kl_horizon, in samples (> 0 when target > 0)       */
} KlController;

/* Adaptive KL (Ziegler et al.): e = clip(kl/target - 1, -0.2, 0.2);
 * kl_coef *= 1 + e * n_samples / horizon. A no-op for a fixed controller.
 * Fails with PL_EINVAL on horizon <= 0 with a target, n_samples < 0 or a
 * non-finite kl; the coefficient is then unchanged. */
int algo_kl_ctl_update(KlController *c, double kl, int n_samples);

/* ---------------------------------------------------------------- GAE */

/* Generalised advantage estimation per sequence, backwards over its
 * masked tokens (unmasked ones are skipped, as if absent) with V = 0 after
 * the last one: delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma
 * lambda A_next, returns = A + V (before any whitening). adv and ret (N)
 * are 0 on unmasked tokens. gamma, lambda in [0, 1] (defaults 1, 0.95).
 * Fails with PL_EINVAL on a bad batch, NULL arrays or gamma/lambda outside
 * [0, 1]. Linear in N, no allocation. */
int algo_gae(const AlgoSeqs *s, const float *rewards, const float *values, float gamma,
             float lambda, float *adv, float *ret);

/* ------------------------------------------------------- policy loss */

typedef enum {
    RATIO_TOKEN = 0,        /* rho_t = exp(lp_t - lp_old_t) (PPO, GRPO)           */
    RATIO_SEQUENCE,         /* GSPO: one rho per sequence, length-normalised      */
} RatioLevel;

/* "token" | "sequence". 0 or PL_EINVAL. */
int ratio_level_parse(const char *name, RatioLevel *out);
const char *ratio_level_name(RatioLevel r);

typedef struct {
    float clip_low;         /* eps_low: rho clipped below at 1 - clip_low (0.2)   */
    float clip_high;        /* eps_high: rho clipped above at 1 + clip_high (0.2) */
    float dual_clip;        /* c > 1 caps the loss at -c A where A < 0; 0: off    */
    LossAgg agg;            /* token_mean                                        */
    int max_new_tokens;     /* for seq_mean_token_sum_norm                       */
    float kl_coef;          /* KL in the loss (GRPO): + kl_coef * kl; 0: off      */
    KlEstimator kl_est;     /* estimator of that term (k3 for GRPO)               */
    RatioLevel ratio;       /* token (default) or sequence (GSPO)                 */
} PolicyLossOpts;

/* PPO defaults: eps 0.2 both sides, no dual clip, token_mean, no KL term. */
void algo_ppo_policy_defaults(PolicyLossOpts *o);

typedef struct {
    double loss;            /* agg(pg + kl_coef * kl)                            */
    double pg_loss;         /* agg(pg)                                           */
    double kl_loss;         /* agg(kl), before kl_coef; 0 without the KL term      */
    double clipfrac;        /* MM(clipped term > unclipped term)                 */
    double dual_clipfrac;   /* MM(dual clip active)                              */
    double approx_kl;       /* MM(lp_old - lp)                                   */
    double entropy;         /* MM(ent); 0 when no entropy is given               */
    double ratio_mean;      /* MM(rho)                                           */
} PolicyLossOut;

/* The clipped surrogate: rho = exp(clamp(lp - lp_old, -20, 20)),
 * pg_t = max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high)), with the dual
 * clip min(pg_t, -c A) where A < 0, plus kl_coef * kl(lp, lp_ref) when
 * kl_coef != 0, aggregated by o->agg over the masked tokens.
 *
 * With o->ratio = RATIO_SEQUENCE (GSPO) every masked token of sequence i
 * takes that sequence's ratio s_i = exp(clamp(mean over its masked tokens
 * of (lp - lp_old), -20, 20)), clipped the same way, and d pg_t / d lp_t =
 * -A_t s_i where unclipped: the "GSPO-token" form (s_i,t = sg(s_i)
 * exp(lp_t - sg(lp_t))), whose loss and gradient equal those of the
 * sequence objective -min(s_i A_i, clip(s_i) A_i) when A is constant over a
 * sequence, as it is in GRPO. approx_kl stays per token.
 * lp, lp_old, adv (N); lp_ref (N) needed only with a KL term; ent (N) is
 * optional and only feeds the entropy metric. dlp (N, or NULL) = d loss /
 * d lp (0 on unmasked tokens and where a clip or clamp is active).
 * Fails with PL_EINVAL on a bad batch, NULL arrays, negative eps, a dual
 * clip in (0, 1], or a bad agg; out is then untouched. */
int algo_policy_loss(const AlgoSeqs *s, const float *lp, const float *lp_old, const float *adv,
                     const float *lp_ref, const float *ent, const PolicyLossOpts *o,
                     PolicyLossOut *out, float *dlp);

/* --------------------------------------------------------- value loss */

typedef struct {
    double loss;            /* 0.5 * agg(max((v-R)^2, (v_clip-R)^2))             */
    double clipfrac;        /* MM((v_clip-R)^2 > (v-R)^2)                        */
    double value_mean;      /* MM(v)                                             */
} ValueLossOut;

/* The clipped value loss: v_clip = clip(v, v_old - c, v_old + c) (c =
 * clip_range, default 0.2; c <= 0 disables clipping), aggregated by agg.
 * v, v_old, ret (N); dv (N, or NULL) = d loss / d v. Fails with PL_EINVAL
 * on a bad batch, NULL arrays or a bad agg. */
int algo_value_loss(const AlgoSeqs *s, const float *v, const float *v_old, const float *ret,
                    float clip_range, LossAgg agg, int max_new_tokens, ValueLossOut *out,
                    float *dv);

#endif
