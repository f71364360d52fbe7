/* GRPO family: group, Dr. GRPO, RLOO and batch advantages; REINFORCE++. */
#include "grpo.h"

#include <math.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"

PL_ENUM_DEFINE(AdvEstimator, adv_estimator, "advantage", "group", "none", "rloo", "batch",
               "reinforce_pp")

/* Unbiased std of x[0..n) around mu (0 for n < 2). */
static double ustd(const float *x, int n, double mu) {
    if (n < 2) return 0.0;
    double q = 0.0;
    for (int i = 0; i < n; i++) q += ((double)x[i] - mu) * ((double)x[i] - mu);
    return sqrt(q / (n - 1));
}

static double mean(const float *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    return n ? s / n : 0.0;
}

int algo_group_advantages(const float *score, int B, int group_size, AdvEstimator e, float *adv) {
    if (B < 0 || group_size < 1)
        return pl_fail(PL_EINVAL, "group advantages: B=%d, group_size=%d", B, group_size);
    if (B % group_size)
        return pl_fail(PL_EINVAL, "group advantages: B=%d sequences is not a multiple of group_size=%d",
                       B, group_size);
    if (B && (!score || !adv)) return pl_fail(PL_EINVAL, "group advantages: NULL array");
    if ((unsigned)e > ADV_BATCH)
        return pl_fail(PL_EINVAL, "group advantages: '%s' is not a sequence-level estimator",
                       adv_estimator_name(e));
    const int G = group_size;
    const double batch_std = e == ADV_BATCH ? ustd(score, B, mean(score, B)) : 0.0;
    for (int g0 = 0; g0 < B; g0 += G) {
        const double mu = mean(score + g0, G), sum = mu * G;
        const double sd = e == ADV_GROUP ? ustd(score + g0, G, mu) : batch_std;
        for (int i = g0; i < g0 + G; i++) {
            double s = score[i], a;
            if (G == 1) a = 0.0;
            else if (e == ADV_RLOO) a = s - (sum - s) / (G - 1);
            else if (e == ADV_NONE) a = s - mu;
            else a = (s - mu) / (sd + 1e-6);
            adv[i] = (float)a;
        }
    }
    return 0;
}

int algo_reinforce_pp(const AlgoSeqs *s, const float *rewards, float gamma, float *adv, float *ret) {
    PL_TRY(algo_seqs_check(s, "algo_reinforce_pp"));
    if (s->N && (!rewards || !adv)) return pl_fail(PL_EINVAL, "algo_reinforce_pp: NULL array");
    if (!(gamma >= 0.0f && gamma <= 1.0f))
        return pl_fail(PL_EINVAL, "algo_reinforce_pp: gamma %g outside [0, 1]", gamma);
    for (int b = 0; b < s->B; b++) {
        double g = 0.0;
        for (int t = s->offsets[b + 1] - 1; t >= s->offsets[b]; t--) {
            if (algo_m(s, t) == 0.0f) {
                adv[t] = 0.0f;
                continue;
            }
            g = rewards[t] + gamma * g;
            adv[t] = (float)g;
        }
    }
    if (ret)
        for (int t = 0; t < s->N; t++) ret[t] = adv[t];
    return algo_masked_whiten(adv, adv, s->mask, s->N, 1);
}

void algo_grpo_policy_defaults(PolicyLossOpts *o) {
    algo_ppo_policy_defaults(o);
    o->kl_coef = 0.04f;
    o->kl_est = KL_K3;
}
