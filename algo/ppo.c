/* PPO: reward shaping, adaptive KL, GAE, clipped policy and value losses.
 * Every loop is one or two passes over the tokens with no allocation. */
#include "ppo.h"

#include <math.h>

#include "common/enum.h"
#include "common/err.h"

PL_ENUM_DEFINE(RatioLevel, ratio_level, "ratio_level", "token", "sequence")

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* ------------------------------------------------------ reward shaping */

int algo_ppo_rewards(const AlgoSeqs *s, const float *lp, const float *lp_ref, const float *score,
                     float kl_coef, KlEstimator est, float reward_clip, float *rewards) {
    PL_TRY(algo_seqs_check(s, "algo_ppo_rewards"));
    if ((unsigned)est > KL_K3) return pl_fail(PL_EINVAL, "algo_ppo_rewards: bad estimator %d", (int)est);
    if ((s->B && !score) || (s->N && !rewards) ||
        (s->N && kl_coef != 0.0f && (!lp || !lp_ref)))
        return pl_fail(PL_EINVAL, "algo_ppo_rewards: NULL array");
    for (int b = 0; b < s->B; b++) {
        int last = -1;
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) {
            double r = 0.0;
            if (algo_m(s, t) != 0.0f) {
                if (kl_coef != 0.0f) r = -(double)kl_coef * algo_kl_token(est, lp[t], lp_ref[t], NULL);
                last = t;
            }
            rewards[t] = (float)r;
        }
        if (last >= 0) {
            double sc = score[b];
            if (reward_clip > 0.0f) sc = clampd(sc, -reward_clip, reward_clip);
            rewards[last] = (float)((double)rewards[last] + sc);
        }
    }
    return 0;
}

/* ------------------------------------------------------- adaptive KL */

int algo_kl_ctl_update(KlController *c, double kl, int n_samples) {
    if (!c) return pl_fail(PL_EINVAL, "algo_kl_ctl_update: NULL controller");
    if (c->target <= 0.0) return 0;
    if (!(c->horizon > 0.0)) return pl_fail(PL_EINVAL, "kl controller: kl_horizon %g must be > 0", c->horizon);
    if (n_samples < 0 || !isfinite(kl))
        return pl_fail(PL_EINVAL, "kl controller: bad update (kl %g, n %d)", kl, n_samples);
    double e = clampd(kl / c->target - 1.0, -0.2, 0.2);
    c->kl_coef *= 1.0 + e * n_samples / c->horizon;
    return 0;
}

/* ---------------------------------------------------------------- GAE */

int algo_gae(const AlgoSeqs *s, const float *rewards, const float *values, float gamma,
             float lambda, float *adv, float *ret) {
    PL_TRY(algo_seqs_check(s, "algo_gae"));
    if (s->N && (!rewards || !values || !adv || !ret)) return pl_fail(PL_EINVAL, "algo_gae: NULL array");
    if (!(gamma >= 0.0f && gamma <= 1.0f) || !(lambda >= 0.0f && lambda <= 1.0f))
        return pl_fail(PL_EINVAL, "algo_gae: gamma %g and lambda %g must lie in [0, 1]", gamma, lambda);
    const double gl = (double)gamma * lambda;
    for (int b = 0; b < s->B; b++) {
        double v_next = 0.0, a_next = 0.0;
        for (int t = s->offsets[b + 1] - 1; t >= s->offsets[b]; t--) {
            if (algo_m(s, t) == 0.0f) {
                adv[t] = ret[t] = 0.0f;
                continue;
            }
            double v = values[t];
            double delta = rewards[t] + gamma * v_next - v;
            double a = delta + gl * a_next;
            adv[t] = (float)a;
            ret[t] = (float)(a + v);
            a_next = a;
            v_next = v;
        }
    }
    return 0;
}

/* ------------------------------------------------------- policy loss */

void algo_ppo_policy_defaults(PolicyLossOpts *o) {
    o->clip_low = 0.2f;
    o->clip_high = 0.2f;
    o->dual_clip = 0.0f;
    o->agg = LOSS_AGG_TOKEN_MEAN;
    o->max_new_tokens = 0;
    o->kl_coef = 0.0f;
    o->kl_est = KL_K3;
    o->ratio = RATIO_TOKEN;
}

int algo_policy_loss(const AlgoSeqs *s, const float *lp, const float *lp_old, const float *adv,
                     const float *lp_ref, const float *ent, const PolicyLossOpts *o,
                     PolicyLossOut *out, float *dlp) {
    PL_TRY(algo_seqs_check(s, "algo_policy_loss"));
    if (!o || !out) return pl_fail(PL_EINVAL, "algo_policy_loss: NULL options or output");
    if (s->N && (!lp || !lp_old || !adv)) return pl_fail(PL_EINVAL, "algo_policy_loss: NULL array");
    if (s->N && o->kl_coef != 0.0f && !lp_ref)
        return pl_fail(PL_EINVAL, "algo_policy_loss: kl_coef %g needs reference log-probs", o->kl_coef);
    if (!(o->clip_low >= 0.0f && o->clip_low < 1.0f) || !(o->clip_high >= 0.0f))
        return pl_fail(PL_EINVAL, "algo_policy_loss: clip eps low %g (in [0,1)) high %g (>= 0)",
                       o->clip_low, o->clip_high);
    if (o->dual_clip != 0.0f && !(o->dual_clip > 1.0f))
        return pl_fail(PL_EINVAL, "algo_policy_loss: dual_clip %g must be > 1 (or 0: off)", o->dual_clip);
    if ((unsigned)o->kl_est > KL_K3) return pl_fail(PL_EINVAL, "algo_policy_loss: bad estimator");
    if ((unsigned)o->ratio > RATIO_SEQUENCE) return pl_fail(PL_EINVAL, "algo_policy_loss: bad ratio level");
    AlgoAgg ag;
    PL_TRY(algo_agg_init(&ag, s, o->agg, o->max_new_tokens));

    const double lo = 1.0 - o->clip_low, hi = 1.0 + o->clip_high, c = o->dual_clip;
    const double klc = o->kl_coef;
    PolicyLossOut r = {0};
    double clipped = 0, dual = 0, akl = 0, ents = 0, ratio = 0;
    for (int b = 0; b < s->B; b++) {
        const int t0 = s->offsets[b], t1 = s->offsets[b + 1];
        double n = 0.0;
        for (int t = t0; t < t1; t++) n += algo_m(s, t);
        const double w = algo_agg_scale(&ag, n);
        /* GSPO: the sequence's mean log-ratio stands in for every token's */
        double d_seq = 0.0;
        if (o->ratio == RATIO_SEQUENCE && n > 0.0) {
            for (int t = t0; t < t1; t++)
                if (algo_m(s, t) != 0.0f) d_seq += (double)lp[t] - lp_old[t];
            d_seq /= n;
        }
        double pg_sum = 0.0, kl_sum = 0.0;
        for (int t = t0; t < t1; t++) {
            if (algo_m(s, t) == 0.0f) {
                if (dlp) dlp[t] = 0.0f;
                continue;
            }
            const double A = adv[t], d_tok = (double)lp[t] - lp_old[t];
            const double d = o->ratio == RATIO_SEQUENCE ? d_seq : d_tok;
            const double dc = clampd(d, -20.0, 20.0);
            const double rho = exp(dc);
            const double l1 = -A * rho, l2 = -A * clampd(rho, lo, hi);
            /* max(l1, l2): only the unclipped branch depends on lp; on a tie
             * (rho inside the range) both are that branch. Written as
             * selects: which branch wins is data-dependent and unpredictable. */
            const int clip = l2 > l1;
            double l = clip ? l2 : l1;
            double g = (clip || d != dc) ? 0.0 : -A * rho;
            clipped += clip;
            if (c > 0.0 && A < 0.0 && l > -c * A) l = -c * A, g = 0.0, dual += 1;
            pg_sum += l;
            if (klc != 0.0) {
                double dk;
                double k = algo_kl_token(o->kl_est, lp[t], lp_ref[t], &dk);
                kl_sum += k;
                g += klc * dk;
            }
            if (dlp) dlp[t] = (float)(w * g);
            akl += -d_tok;
            ratio += rho;
            if (ent) ents += ent[t];
        }
        r.pg_loss += w * pg_sum;
        r.kl_loss += w * kl_sum;
    }
    r.loss = r.pg_loss + klc * r.kl_loss;
    if (ag.tokens > 0) {
        r.clipfrac = clipped / ag.tokens;
        r.dual_clipfrac = dual / ag.tokens;
        r.approx_kl = akl / ag.tokens;
        r.entropy = ents / ag.tokens;
        r.ratio_mean = ratio / ag.tokens;
    }
    *out = r;
    return 0;
}

/* --------------------------------------------------------- value loss */

int algo_value_loss(const AlgoSeqs *s, const float *v, const float *v_old, const float *ret,
                    float clip_range, LossAgg agg, int max_new_tokens, ValueLossOut *out,
                    float *dv) {
    PL_TRY(algo_seqs_check(s, "algo_value_loss"));
    if (!out) return pl_fail(PL_EINVAL, "algo_value_loss: NULL output");
    if (s->N && (!v || !ret || (clip_range > 0.0f && !v_old)))
        return pl_fail(PL_EINVAL, "algo_value_loss: NULL array");
    AlgoAgg ag;
    PL_TRY(algo_agg_init(&ag, s, agg, max_new_tokens));
    ValueLossOut r = {0};
    double clipped = 0, vs = 0;
    for (int b = 0; b < s->B; b++) {
        const int t0 = s->offsets[b], t1 = s->offsets[b + 1];
        double n = 0.0;
        for (int t = t0; t < t1; t++) n += algo_m(s, t);
        const double w = algo_agg_scale(&ag, n);
        double sum = 0.0;
        for (int t = t0; t < t1; t++) {
            if (algo_m(s, t) == 0.0f) {
                if (dv) dv[t] = 0.0f;
                continue;
            }
            const double x = v[t], R = ret[t];
            double e1 = x - R, l = e1 * e1, g = e1;
            if (clip_range > 0.0f) {
                const double lo = (double)v_old[t] - clip_range, hi = (double)v_old[t] + clip_range;
                const double xc = clampd(x, lo, hi), e2 = xc - R;
                if (e2 * e2 > l) l = e2 * e2, g = (x > lo && x < hi) ? e2 : 0.0, clipped += 1;
            }
            sum += 0.5 * l;
            if (dv) dv[t] = (float)(w * g);
            vs += x;
        }
        r.loss += w * sum;
    }
    if (ag.tokens > 0) {
        r.clipfrac = clipped / ag.tokens;
        r.value_mean = vs / ag.tokens;
    }
    *out = r;
    return 0;
}
