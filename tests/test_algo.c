/* test_algo.c: token-level math, KL, PPO and the GRPO family (algo/).
 *
 * Each test checks values derived by hand (the derivation is in the
 * comment above it), the edge cases (all-masked, single-token, empty
 * batches, groups of one, zero variance, log-ratios of +-50) and that
 * malformed input is rejected with PL_EINVAL. Every gradient is checked
 * against central finite differences: the losses accumulate in double from
 * float inputs, so a float step h gives an exact-enough quotient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "algo/algo.h"
#include "algo/grpo.h"
#include "algo/kl.h"
#include "algo/logprob.h"
#include "algo/ppo.h"
#include "common/err.h"

static void near(double got, double want, double tol, const char *what) {
    if (!(fabs(got - want) <= tol)) fail_msg("%s: got %.10g want %.10g", what, got, want);
}

static void all_finite(const float *x, int n, const char *what) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) fail_msg("%s[%d] = %g is not finite", what, i, x[i]);
}


/* ----------------------------------------------------------- options */

/* Every named option of ALGORITHMS.md parses; near misses fail. */
static void test_parse(void **state) {
    LossAgg a;
    assert_int_equal(loss_agg_parse("token_mean", &a), 0);
    assert_int_equal(a, LOSS_AGG_TOKEN_MEAN);
    assert_int_equal(loss_agg_parse("seq_mean_token_mean", &a), 0);
    assert_int_equal(a, LOSS_AGG_SEQ_MEAN_TOKEN_MEAN);
    assert_int_equal(loss_agg_parse("seq_mean_token_sum_norm", &a), 0);
    assert_int_equal(a, LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM);
    assert_int_equal(loss_agg_parse("token-mean", &a), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "token-mean"));
    assert_int_equal(loss_agg_parse(NULL, &a), PL_EINVAL);
    KlEstimator k;
    const char *kn[] = {"k1", "k2", "k3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kl_estimator_parse(kn[i], &k), 0);
        assert_int_equal(k, i);
        assert_string_equal(kl_estimator_name(k), kn[i]);
    }
    assert_int_equal(kl_estimator_parse("k4", &k), PL_EINVAL);
    AlgoName an;
    const char *nn[] = {"sft", "rm", "ppo", "grpo", "dpo", "orpo", "simpo", "kto"};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(algo_name_parse(nn[i], &an), 0);
        assert_int_equal(an, i);
        assert_string_equal(algo_name_str(an), nn[i]);
    }
    assert_int_equal(algo_name_parse("PPO", &an), PL_EINVAL);
    assert_true(ALGO_DEFAULT_GAMMA == 1.0f && ALGO_DEFAULT_LAMBDA == 0.95f);
    assert_true(ALGO_DEFAULT_REWARD_CLIP == 10.0f && ALGO_DEFAULT_GROUP_SIZE == 8);
    AdvEstimator e;
    const char *en[] = {"group", "none", "rloo", "batch", "reinforce_pp"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(adv_estimator_parse(en[i], &e), 0);
        assert_int_equal(e, i);
        assert_string_equal(adv_estimator_name(e), en[i]);
    }
    assert_int_equal(adv_estimator_parse("grpo", &e), PL_EINVAL);
    PolicyLossOpts o;
    algo_ppo_policy_defaults(&o);
    assert_true(o.clip_low == 0.2f && o.clip_high == 0.2f && o.dual_clip == 0.0f);
    assert_true(o.kl_coef == 0.0f && o.agg == LOSS_AGG_TOKEN_MEAN);
    algo_grpo_policy_defaults(&o);
    assert_true(o.kl_coef == 0.04f && o.kl_est == KL_K3);
}

/* --------------------------------------------------- batch and reductions */

/* Offsets that disagree with N, decrease or do not start at 0, and masks
 * that are not 0/1, are rejected; B = 0, N = 0 is a valid empty batch. */
static void test_seqs_check(void **state) {
    int off[] = {0, 3, 5};
    float m[] = {1, 1, 0, 1, 1};
    AlgoSeqs s = {2, 5, off, m};
    assert_int_equal(algo_seqs_check(&s, "t"), 0);
    s.N = 6;
    assert_int_equal(algo_seqs_check(&s, "t"), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "N=6"));
    s.N = 5;
    int bad[] = {0, 4, 3};
    s.offsets = bad;
    assert_int_equal(algo_seqs_check(&s, "t"), PL_EINVAL);
    int bad0[] = {1, 3, 5};
    s.offsets = bad0;
    assert_int_equal(algo_seqs_check(&s, "t"), PL_EINVAL);
    s.offsets = off;
    m[2] = 0.5f;
    assert_int_equal(algo_seqs_check(&s, "t"), PL_EINVAL);
    AlgoSeqs e = {0, 0, NULL, NULL};
    assert_int_equal(algo_seqs_check(&e, "t"), 0);
    AlgoSeqs e2 = {0, 3, NULL, NULL};
    assert_int_equal(algo_seqs_check(&e2, "t"), PL_EINVAL);
    assert_int_equal(algo_seqs_check(NULL, "t"), PL_EINVAL);
}

/* x = [1 2 3 | 4 5], mask [1 0 0 | 1 1]:
 *   token_mean = (1+4+5)/3 = 10/3, weights 1/3 on masked tokens;
 *   seq_mean_token_mean = (1/1 + 9/2)/2 = 2.75, weights 1/2 and 1/4;
 *   seq_mean_token_sum_norm (max_new 4) = 10/(2*4) = 1.25, weights 1/8.
 * All masked: every mode gives 0 with zero weights. */
static void test_agg(void **state) {
    int off[] = {0, 3, 5};
    float m[] = {1, 0, 0, 1, 1}, x[] = {1, 2, 3, 4, 5}, dx[5];
    AlgoSeqs s = {2, 5, off, m};
    double v;
    assert_int_equal(algo_agg(&s, x, LOSS_AGG_TOKEN_MEAN, 0, &v, dx), 0);
    near(v, 10.0 / 3, 1e-12, "token_mean");
    float w1[] = {1.f / 3, 0, 0, 1.f / 3, 1.f / 3};
    tu_assert_close(dx, w1, 5, 1e-7f, 0, "token_mean weights");
    assert_int_equal(algo_agg(&s, x, LOSS_AGG_SEQ_MEAN_TOKEN_MEAN, 0, &v, dx), 0);
    near(v, 2.75, 1e-12, "seq_mean_token_mean");
    float w2[] = {0.5f, 0, 0, 0.25f, 0.25f};
    tu_assert_close(dx, w2, 5, 1e-7f, 0, "seq_mean_token_mean weights");
    assert_int_equal(algo_agg(&s, x, LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM, 4, &v, dx), 0);
    near(v, 1.25, 1e-12, "seq_mean_token_sum_norm");
    assert_int_equal(algo_agg(&s, x, LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM, 0, &v, dx), PL_EINVAL);
    assert_int_equal(algo_agg(&s, x, (LossAgg)7, 0, &v, dx), PL_EINVAL);
    float z[5] = {0};
    s.mask = z;
    for (int a = 0; a < 3; a++) {
        assert_int_equal(algo_agg(&s, x, (LossAgg)a, 4, &v, dx), 0);
        near(v, 0.0, 0.0, "all masked");
        for (int i = 0; i < 5; i++) near(dx[i], 0.0, 0.0, "all masked weight");
    }
}

/* x = [1 2 3 4], m = [1 1 1 0]: MM = 2, sum = 6, unbiased var = (1+0+1)/2
 * = 1, whitened = (x-2)/sqrt(1+1e-8) = [-1 0 1 | 0]; without the shift the
 * mean is added back: [1 2 3 | 0]. One masked token: var 0 and whitened 0. */
static void test_masked(void **state) {
    float x[] = {1, 2, 3, 4}, m[] = {1, 1, 1, 0}, y[4];
    double v;
    assert_int_equal(algo_masked_sum(x, m, 4, &v), 0);
    near(v, 6.0, 0, "sum");
    assert_int_equal(algo_masked_mean(x, m, 4, &v), 0);
    near(v, 2.0, 0, "mean");
    assert_int_equal(algo_masked_var(x, m, 4, &v), 0);
    near(v, 1.0, 1e-12, "var");
    assert_int_equal(algo_masked_whiten(y, x, m, 4, 1), 0);
    float w[] = {-1, 0, 1, 0};
    tu_assert_close(y, w, 4, 1e-6f, 0, "whiten");
    assert_int_equal(algo_masked_whiten(y, x, m, 4, 0), 0);
    float w2[] = {1, 2, 3, 0};
    tu_assert_close(y, w2, 4, 1e-6f, 0, "whiten keep mean");
    float m1[] = {0, 1, 0, 0};
    assert_int_equal(algo_masked_var(x, m1, 4, &v), 0);
    near(v, 0.0, 0, "single token var");
    assert_int_equal(algo_masked_whiten(y, x, m1, 4, 1), 0);
    for (int i = 0; i < 4; i++) near(y[i], 0.0, 0, "single token whiten");
    float m0[] = {0, 0, 0, 0};
    assert_int_equal(algo_masked_mean(x, m0, 4, &v), 0);
    near(v, 0.0, 0, "all masked mean");
    assert_int_equal(algo_masked_mean(NULL, NULL, 0, &v), 0);
    near(v, 0.0, 0, "empty mean");
    assert_int_equal(algo_masked_whiten(NULL, NULL, NULL, 0, 1), 0);
    assert_int_equal(algo_masked_mean(x, m, -1, &v), PL_EINVAL);
}

/* Sequence sums: lp = [1 2 3 | 4 5], mask [0 1 1 | 1 0] -> sums [5 4],
 * counts [2 1]; an empty sequence (offsets 5, 5) sums to 0. */
static void test_seq_sum(void **state) {
    int off[] = {0, 3, 5, 5};
    float lp[] = {1, 2, 3, 4, 5}, m[] = {0, 1, 1, 1, 0}, sum[3], cnt[3];
    AlgoSeqs s = {3, 5, off, m};
    assert_int_equal(algo_seq_sum(&s, lp, sum, cnt), 0);
    float ws[] = {5, 4, 0}, wc[] = {2, 1, 0};
    tu_assert_close(sum, ws, 3, 0, 0, "seq sums");
    tu_assert_close(cnt, wc, 3, 0, 0, "seq counts");
    s.N = 4;
    assert_int_equal(algo_seq_sum(&s, lp, sum, cnt), PL_EINVAL);
}

/* The scalar helpers stay finite at the extremes: logsig(-800) = -800,
 * logsig(800) = 0 (to the last bit, -e^-800 underflows), sigmoid(+-800) =
 * 1 and 0; log1mexp(-50) = log1p(-e^-50) = -1.9287e-22, log1mexp(-1e-6) =
 * log(1e-6 - 5e-13) and log1mexp(ln 0.5) = ln 0.5 on both sides of the
 * switch. */
static void test_helpers(void **state) {
    near(algo_logsig(-800), -800, 0, "logsig(-800)");
    near(algo_logsig(800), 0, 0, "logsig(800)");
    near(algo_logsig(0), -log(2.0), 1e-15, "logsig(0)");
    near(algo_sigmoid(800), 1, 0, "sigmoid(800)");
    near(algo_sigmoid(-800), 0, 0, "sigmoid(-800)");
    near(algo_sigmoid(-2), 1 / (1 + exp(2.0)), 1e-16, "sigmoid(-2)");
    near(algo_log1mexp(-50), -exp(-50.0), 1e-30, "log1mexp(-50)");
    near(algo_log1mexp(-1e-6), log(1e-6 - 5e-13), 1e-9, "log1mexp(-1e-6)");
    near(algo_log1mexp(log(0.5)), log(0.5), 1e-15, "log1mexp(ln .5)");
    near(algo_log1mexp(log(0.5) - 1e-12), log1p(-0.5 * exp(-1e-12)), 1e-12, "below the switch");
}

/* ------------------------------------------------------------ log-probs */

/* logits [0, ln 3], T = 1: p = [1/4, 3/4], lp(target 1) = ln(3/4), H =
 * -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351446. T = 2 halves z: p1 = sqrt3 /
 * (1 + sqrt3), lp = ln p1. Then dlogits against finite differences of
 * sum(a lp + e H) on random logits at T = 0.7. */
typedef struct {
    float *logits, *a, *e, *lp, *ent, *lse;
    int *y, N, V;
    float T;
} LpCtx;

static double lp_loss(void *p) {
    LpCtx *c = p;
    algo_logprobs(c->lp, c->ent, c->lse, c->logits, c->y, c->N, c->V, c->T);
    double s = 0;
    for (int i = 0; i < c->N; i++) s += (double)c->a[i] * c->lp[i] + (double)c->e[i] * c->ent[i];
    return s;
}

static void test_logprobs(void **state) {
    float z[] = {0.0f, logf(3.0f)}, lp, ent, lse;
    int y = 1;
    assert_int_equal(algo_logprobs(&lp, &ent, &lse, z, &y, 1, 2, 1.0f), 0);
    near(lp, log(0.75), 1e-6, "lp T=1");
    near(ent, 0.5623351446, 1e-6, "entropy T=1");
    assert_int_equal(algo_logprobs(&lp, &ent, &lse, z, &y, 1, 2, 2.0f), 0);
    near(lp, log(sqrt(3.0) / (1 + sqrt(3.0))), 1e-6, "lp T=2");
    assert_int_equal(algo_logprobs(&lp, &ent, &lse, z, &y, 1, 2, 0.0f), PL_EINVAL);
    y = 2;
    assert_int_equal(algo_logprobs(&lp, &ent, &lse, z, &y, 1, 2, 1.0f), PL_EINVAL);
    assert_int_equal(algo_logprobs(NULL, NULL, NULL, NULL, NULL, 0, 2, 1.0f), 0);

    enum { N = 3, V = 7 };
    Rng r;
    rng_seed(&r, 11);
    float logits[N * V], a[N], e[N], lps[N], ents[N], lses[N], dl[N * V];
    int ys[N] = {0, 4, -1};
    tu_randn(logits, N * V, &r, 2.0f);
    tu_randn(a, N, &r, 1.0f);
    tu_randn(e, N, &r, 1.0f);
    LpCtx c = {logits, a, e, lps, ents, lses, ys, N, V, 0.7f};
    lp_loss(&c);
    assert_int_equal(algo_logprobs_backward(dl, a, e, logits, lses, ents, ys, N, V, 0.7f), 0);
    tu_fd_check(logits, N * V, dl, lp_loss, &c, 1e-2f, 2e-4, "dlogits");
    assert_int_equal(algo_logprobs_backward(dl, a, e, logits, lses, NULL, ys, N, V, 0.7f), PL_EINVAL);
}

/* ------------------------------------------------------------------ KL */

/* d = ln 2: k1 = ln 2, k2 = ln^2 2 / 2, k3 = 1/2 + ln 2 - 1 = 0.1931471806
 * with dk3/dlp = 1 - e^-d = 1/2. d = +50 clamps to 20: k1 = 20, k2 = 200,
 * k3 = e^-20 + 19 -> clamped 10; d = -50: k1 = -20, k2 = 200, k3 = e^20 -
 * 21 -> 10; every gradient 0 under a clamp. d = -3 is inside the d clamp but
 * k3 = e^3 - 4 = 16.09 clamps to 10: k1 = -3 (grad 1), k2 = 4.5 (grad -3),
 * k3 = 10 (grad 0, not 1 - e^3). */
typedef struct {
    KlEstimator e;
    float *lp, *ref, *w, *kl;
    int n;
} KlCtx;

static double kl_loss(void *p) {
    KlCtx *c = p;
    algo_kl(c->e, c->lp, c->ref, c->n, c->kl, NULL);
    double s = 0;
    for (int i = 0; i < c->n; i++) s += (double)c->w[i] * c->kl[i];
    return s;
}

static void test_kl(void **state) {
    float lp[] = {0.0f, 50.0f, -50.0f, -3.0f}, ref[] = {-logf(2.0f), 0.0f, 0.0f, 0.0f}, kl[4], dk[4];
    const double l2 = log(2.0);
    double want[3][4] = {{l2, 20, -20, -3}, {l2 * l2 / 2, 200, 200, 4.5}, {0.1931471806, 10, 10, 10}};
    double wantg[3] = {1.0, l2, 0.5}, wantg3[3] = {1.0, -3.0, 0.0};
    for (int e = 0; e < 3; e++) {
        assert_int_equal(algo_kl((KlEstimator)e, lp, ref, 4, kl, dk), 0);
        for (int i = 0; i < 4; i++) near(kl[i], want[e][i], 1e-5, kl_estimator_name(e));
        near(dk[0], wantg[e], 1e-6, "dkl");
        near(dk[1], 0, 0, "clamped gradient");
        near(dk[2], 0, 0, "clamped gradient");
        near(dk[3], wantg3[e], 1e-6, "dkl at d = -3");
        all_finite(kl, 4, "kl");
    }
    assert_int_equal(algo_kl((KlEstimator)3, lp, ref, 3, kl, dk), PL_EINVAL);
    assert_int_equal(algo_kl(KL_K1, lp, ref, -1, kl, dk), PL_EINVAL);

    enum { N = 16 };
    Rng r;
    rng_seed(&r, 12);
    float a[N], b[N], w[N], k[N], g[N];
    tu_randn(a, N, &r, 1.0f);
    tu_randn(b, N, &r, 1.0f);
    tu_randn(w, N, &r, 1.0f);
    for (int e = 0; e < 3; e++) {
        KlCtx c = {(KlEstimator)e, a, b, w, k, N};
        algo_kl(c.e, a, b, N, k, g);
        for (int i = 0; i < N; i++) g[i] *= w[i];
        tu_fd_check(a, N, g, kl_loss, &c, 1e-3f, 1e-4, kl_estimator_name(e));
    }
}

/* ------------------------------------------------------ reward shaping */

/* Three sequences: [3 tokens, mask 1 1 0 (truncated: score on token 1)],
 * [2 tokens, mask 1 1], [1 token, mask 0]. lp - ref = [.5 1 9 | .2 -.4 |
 * 3], kl_coef 0.1, k1, scores [20 -3 7] with clip 10:
 *   seq 0: [-0.05, -0.1 + 10, 0]; seq 1: [-0.02, 0.04 - 3]; seq 2: [0]. */
static void test_ppo_rewards(void **state) {
    int off[] = {0, 3, 5, 6};
    float m[] = {1, 1, 0, 1, 1, 0};
    float lp[] = {0.5f, 1.0f, 9.0f, 0.2f, -0.4f, 3.0f}, ref[6] = {0}, score[] = {20, -3, 7}, rw[6];
    AlgoSeqs s = {3, 6, off, m};
    assert_int_equal(algo_ppo_rewards(&s, lp, ref, score, 0.1f, KL_K1, 10.0f, rw), 0);
    float want[] = {-0.05f, 9.9f, 0, -0.02f, -2.96f, 0};
    tu_assert_close(rw, want, 6, 1e-6f, 0, "rewards");
    /* no clip, no KL: the raw score lands on the last response token */
    assert_int_equal(algo_ppo_rewards(&s, NULL, NULL, score, 0.0f, KL_K1, 0.0f, rw), 0);
    float want2[] = {0, 20, 0, 0, -3, 0};
    tu_assert_close(rw, want2, 6, 0, 0, "rewards no clip");
    assert_int_equal(algo_ppo_rewards(&s, lp, NULL, score, 0.1f, KL_K1, 10.0f, rw), PL_EINVAL);
    s.N = 5;
    assert_int_equal(algo_ppo_rewards(&s, lp, ref, score, 0.1f, KL_K1, 10.0f, rw), PL_EINVAL);
}

/* target 6, horizon 10000, coef 0.2, n = 256: kl 9 -> e = clip(0.5) = 0.2,
 * coef = 0.2 (1 + 0.2 * 0.0256) = 0.201024; kl 3 -> e = -0.2, 0.198976. */
static void test_kl_controller(void **state) {
    KlController c = {0.2, 6.0, 10000.0};
    assert_int_equal(algo_kl_ctl_update(&c, 9.0, 256), 0);
    near(c.kl_coef, 0.201024, 1e-12, "kl up");
    c.kl_coef = 0.2;
    assert_int_equal(algo_kl_ctl_update(&c, 3.0, 256), 0);
    near(c.kl_coef, 0.198976, 1e-12, "kl down");
    c.kl_coef = 0.2;
    assert_int_equal(algo_kl_ctl_update(&c, 6.3, 100), 0); /* e = 0.05 */
    near(c.kl_coef, 0.2 * (1 + 0.05 * 0.01), 1e-12, "kl inside clip");
    KlController f = {0.05, 0.0, 0.0};
    assert_int_equal(algo_kl_ctl_update(&f, 100.0, 256), 0);
    near(f.kl_coef, 0.05, 0, "fixed");
    KlController bad = {0.05, 6.0, 0.0};
    assert_int_equal(algo_kl_ctl_update(&bad, 1.0, 256), PL_EINVAL);
    near(bad.kl_coef, 0.05, 0, "unchanged on error");
}

/* ---------------------------------------------------------------- GAE */

/* r = [0 0 1], V = [.5 .5 .5]:
 *  gamma 1, lambda .5: delta = [0 0 .5], A = [.125 .25 .5], R = A + V =
 *  [.625 .75 1];
 *  gamma .9, lambda 1: delta = [-.05 -.05 .5], A2 = .5, A1 = -.05 + .45 =
 *  .4, A0 = -.05 + .36 = .31; R = [.81 .9 1] = discounted returns.
 * A single token: r 2, V .5 -> A 1.5, R 2. A masked hole [1 0 1] is
 * skipped: the two ends behave as the two last tokens above (A .25, .5). */
static void test_gae(void **state) {
    int off[] = {0, 3};
    float r[] = {0, 0, 1}, v[] = {0.5f, 0.5f, 0.5f}, a[3], R[3];
    AlgoSeqs s = {1, 3, off, NULL};
    assert_int_equal(algo_gae(&s, r, v, 1.0f, 0.5f, a, R), 0);
    float wa[] = {0.125f, 0.25f, 0.5f}, wr[] = {0.625f, 0.75f, 1.0f};
    tu_assert_close(a, wa, 3, 1e-6f, 0, "gae A");
    tu_assert_close(R, wr, 3, 1e-6f, 0, "gae R");
    assert_int_equal(algo_gae(&s, r, v, 0.9f, 1.0f, a, R), 0);
    float wa2[] = {0.31f, 0.4f, 0.5f}, wr2[] = {0.81f, 0.9f, 1.0f};
    tu_assert_close(a, wa2, 3, 1e-6f, 0, "gae A gamma");
    tu_assert_close(R, wr2, 3, 1e-6f, 0, "gae R gamma");

    int off1[] = {0, 1};
    float r1 = 2, v1 = 0.5f;
    AlgoSeqs s1 = {1, 1, off1, NULL};
    assert_int_equal(algo_gae(&s1, &r1, &v1, 1.0f, 0.95f, a, R), 0);
    near(a[0], 1.5, 0, "single token A");
    near(R[0], 2.0, 0, "single token R");

    float m[] = {1, 0, 1}, rh[] = {0, 99, 1}, vh[] = {0.5f, 99, 0.5f};
    AlgoSeqs sh = {1, 3, off, m};
    assert_int_equal(algo_gae(&sh, rh, vh, 1.0f, 0.5f, a, R), 0);
    float wah[] = {0.25f, 0, 0.5f}, wrh[] = {0.75f, 0, 1.0f};
    tu_assert_close(a, wah, 3, 1e-6f, 0, "gae hole A");
    tu_assert_close(R, wrh, 3, 1e-6f, 0, "gae hole R");

    AlgoSeqs e = {0, 0, NULL, NULL};
    assert_int_equal(algo_gae(&e, NULL, NULL, 1.0f, 0.95f, NULL, NULL), 0);
    assert_int_equal(algo_gae(&s, r, v, 1.5f, 0.95f, a, R), PL_EINVAL);
    s.N = 4;
    assert_int_equal(algo_gae(&s, r, v, 1.0f, 0.95f, a, R), PL_EINVAL);
}

/* ------------------------------------------------------- policy loss */

/* Four tokens, eps 0.2, token_mean:
 *   rho 1.5, A  1: l1 = -1.5, l2 = -1.2 -> -1.2 (clipped, no gradient)
 *   rho 0.5, A  1: l1 = -0.5, l2 = -0.8 -> -0.5, dl/dlp = -A rho = -0.5
 *   rho 1.5, A -1: l1 =  1.5, l2 =  1.2 ->  1.5, dl/dlp = 1.5
 *   rho 0.5, A -1: l1 =  0.5, l2 =  0.8 ->  0.8 (clipped)
 * loss = 0.6/4 = 0.15, dlp = [0 -0.5 1.5 0]/4, clipfrac 2/4,
 * approx_kl = -(2 ln 1.5 + 2 ln 0.5)/4 = -ln(0.75)/2, ratio_mean 1.
 * Dual clip c = 3 leaves 1.5 < 3 alone but caps rho = e^2, A = -1 (loss
 * 7.389) at 3 with no gradient. eps_high 0.28 lets rho 1.25, A 1 through.
 * kl_coef 0.04 with k3 at d = ln 2 adds 0.04 * 0.19314718 and 0.04 * 0.5
 * to the gradient. */
static void test_policy_loss_hand(void **state) {
    int off[] = {0, 4};
    float lp[] = {logf(1.5f), logf(0.5f), logf(1.5f), logf(0.5f)}, old[4] = {0};
    float A[] = {1, 1, -1, -1}, ent[] = {1, 2, 3, 4}, d[4];
    AlgoSeqs s = {1, 4, off, NULL};
    PolicyLossOpts o;
    algo_ppo_policy_defaults(&o);
    PolicyLossOut out;
    assert_int_equal(algo_policy_loss(&s, lp, old, A, NULL, ent, &o, &out, d), 0);
    near(out.loss, 0.15, 1e-6, "loss");
    near(out.pg_loss, 0.15, 1e-6, "pg_loss");
    float wd[] = {0, -0.125f, 0.375f, 0};
    tu_assert_close(d, wd, 4, 1e-6f, 0, "dlp");
    near(out.clipfrac, 0.5, 0, "clipfrac");
    near(out.approx_kl, -0.5 * log(0.75), 1e-6, "approx_kl");
    near(out.entropy, 2.5, 1e-12, "entropy");
    near(out.ratio_mean, 1.0, 1e-6, "ratio_mean");

    /* dual clip */
    o.dual_clip = 3.0f;
    float lp2[] = {logf(1.5f), 2.0f}, A2[] = {-1, -1};
    int off2[] = {0, 2};
    AlgoSeqs s2 = {1, 2, off2, NULL};
    assert_int_equal(algo_policy_loss(&s2, lp2, old, A2, NULL, NULL, &o, &out, d), 0);
    near(out.loss, (1.5 + 3.0) / 2, 1e-6, "dual clip loss");
    near(d[0], 1.5 / 2, 1e-6, "dual clip grad kept");
    near(d[1], 0.0, 0, "dual clip grad capped");
    near(out.dual_clipfrac, 0.5, 0, "dual_clipfrac");
    o.dual_clip = 0.5f;
    assert_int_equal(algo_policy_loss(&s2, lp2, old, A2, NULL, NULL, &o, &out, d), PL_EINVAL);

    /* asymmetric clip */
    algo_ppo_policy_defaults(&o);
    float lp3 = logf(1.25f), A3 = 1.0f;
    int off1[] = {0, 1};
    AlgoSeqs s1 = {1, 1, off1, NULL};
    assert_int_equal(algo_policy_loss(&s1, &lp3, old, &A3, NULL, NULL, &o, &out, d), 0);
    near(out.loss, -1.2, 1e-6, "eps_high 0.2 clips");
    near(d[0], 0.0, 0, "clipped grad");
    o.clip_high = 0.28f;
    assert_int_equal(algo_policy_loss(&s1, &lp3, old, &A3, NULL, NULL, &o, &out, d), 0);
    near(out.loss, -1.25, 1e-6, "eps_high 0.28 passes");
    near(d[0], -1.25, 1e-6, "unclipped grad");

    /* KL in the loss (GRPO) */
    algo_grpo_policy_defaults(&o);
    float lp4 = 0.0f, ref4 = -logf(2.0f), A4 = 0.0f;
    assert_int_equal(algo_policy_loss(&s1, &lp4, old, &A4, &ref4, NULL, &o, &out, d), 0);
    near(out.loss, 0.04 * 0.1931471806, 1e-7, "kl term");
    near(out.kl_loss, 0.1931471806, 1e-6, "kl_loss");
    near(d[0], 0.04 * 0.5, 1e-7, "kl grad");
    assert_int_equal(algo_policy_loss(&s1, &lp4, old, &A4, NULL, NULL, &o, &out, d), PL_EINVAL);
}

/* Edge cases: log-ratios of +-50 clamp to +-20 (finite loss, zero
 * gradient); all-masked and empty batches give zeros; bad batches fail. */
static void test_policy_loss_edges(void **state) {
    int off[] = {0, 2};
    float lp[] = {50.0f, -50.0f}, old[2] = {0}, A[] = {-1, 1}, d[2];
    AlgoSeqs s = {1, 2, off, NULL};
    PolicyLossOpts o;
    algo_grpo_policy_defaults(&o);
    PolicyLossOut out;
    float ref[2] = {0};
    assert_int_equal(algo_policy_loss(&s, lp, old, A, ref, NULL, &o, &out, d), 0);
    /* token 0: rho = e^20, loss e^20; token 1: rho = e^-20, loss -e^-20;
     * k3 clamps at 10 on both. */
    near(out.pg_loss, (exp(20.0) - exp(-20.0)) / 2, 1e-3 * exp(20.0) * 1e-6, "extreme pg");
    near(out.kl_loss, 10.0, 1e-9, "extreme kl");
    assert_true(isfinite(out.loss) && isfinite(out.approx_kl));
    all_finite(d, 2, "extreme dlp");
    near(d[0], 0, 0, "clamped");
    near(d[1], 0, 0, "clamped");

    float m0[] = {0, 0};
    s.mask = m0;
    for (int a = 0; a < 3; a++) {
        o.agg = (LossAgg)a, o.max_new_tokens = 4;
        assert_int_equal(algo_policy_loss(&s, lp, old, A, ref, NULL, &o, &out, d), 0);
        near(out.loss, 0, 0, "all masked");
        near(out.clipfrac + out.approx_kl + out.entropy, 0, 0, "all masked metrics");
        near(fabs(d[0]) + fabs(d[1]), 0, 0, "all masked grad");
    }
    AlgoSeqs e = {0, 0, NULL, NULL};
    out.loss = 99;
    assert_int_equal(algo_policy_loss(&e, NULL, NULL, NULL, NULL, NULL, &o, &out, NULL), 0);
    near(out.loss, 0, 0, "empty");
    s.mask = NULL;
    s.N = 3;
    assert_int_equal(algo_policy_loss(&s, lp, old, A, ref, NULL, &o, &out, d), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "algo_policy_loss"));
}

/* Random batch of 3 sequences (one fully masked), rho within [0.6, 1.6] so
 * that some tokens clip; every aggregation, with and without dual clip and
 * the KL term: dlp against finite differences (kinks are measure zero and
 * the seed keeps the points away from them). */
typedef struct {
    const AlgoSeqs *s;
    float *lp, *old, *A, *ref;
    PolicyLossOpts *o;
} PlCtx;

static double pl_loss(void *p) {
    PlCtx *c = p;
    PolicyLossOut out;
    assert_int_equal(algo_policy_loss(c->s, c->lp, c->old, c->A, c->ref, NULL, c->o, &out, NULL), 0);
    return out.loss;
}

static void test_policy_loss_fd(void **state) {
    enum { N = 14 };
    int off[] = {0, 6, 9, 14};
    float m[N] = {0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0};
    float lp[N], old[N], A[N], ref[N], d[N];
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < N; i++) {
        old[i] = -1.0f - rng_uniform(&r);
        lp[i] = old[i] + logf(0.6f + rng_uniform(&r));
        A[i] = rng_normal(&r);
        ref[i] = lp[i] + 0.5f * rng_normal(&r);
    }
    AlgoSeqs s = {3, N, off, m};
    for (int a = 0; a < 3; a++)
        for (int variant = 0; variant < 3; variant++) {
            PolicyLossOpts o;
            algo_ppo_policy_defaults(&o);
            o.agg = (LossAgg)a, o.max_new_tokens = 6;
            if (variant == 1) o.dual_clip = 1.5f, o.clip_high = 0.28f;
            if (variant == 2) o.kl_coef = 0.3f, o.kl_est = (KlEstimator)a;
            PlCtx c = {&s, lp, old, A, ref, &o};
            PolicyLossOut out;
            assert_int_equal(algo_policy_loss(&s, lp, old, A, ref, NULL, &o, &out, d), 0);
            char what[64];
            snprintf(what, sizeof what, "policy %s v%d", loss_agg_name(o.agg), variant);
            tu_fd_check(lp, N, d, pl_loss, &c, 1e-4f, 1e-5, what);
        }
}

/* GSPO (ratio_level sequence). By hand, token_mean over two sequences:
 *   seq 0: log-ratios ln 1.5, ln 0.5: s = exp(ln(0.75)/2) = sqrt(0.75),
 *          inside [0.8, 1.2]; A = 1: loss -s on both tokens, dlp -s/4;
 *   seq 1: log-ratios ln 1.5 twice: s = 1.5, clipped at 1.2 for A = 1:
 *          loss -1.2 on both tokens, no gradient, clipfrac 2/4.
 * The per-token ratios would clip seq 0's first token and not its second.
 * A batch whose sequences each have one log-ratio on every token gives
 * the token-level numbers exactly, whatever the advantages. With one
 * advantage per sequence (GRPO), dlp against finite differences of the
 * loss: the token form's gradient is the sequence objective's. */
static void test_policy_loss_gspo(void **state) {
    RatioLevel rl;
    assert_int_equal(ratio_level_parse("sequence", &rl), 0);
    assert_int_equal(rl, RATIO_SEQUENCE);
    assert_int_equal(ratio_level_parse("seq", &rl), PL_EINVAL);
    assert_string_equal(ratio_level_name(RATIO_TOKEN), "token");

    int off[] = {0, 2, 4};
    float lp[] = {logf(1.5f), logf(0.5f), logf(1.5f), logf(1.5f)}, old[4] = {0};
    float A[] = {1, 1, 1, 1}, d[4];
    AlgoSeqs s = {2, 4, off, NULL};
    PolicyLossOpts o;
    algo_ppo_policy_defaults(&o);
    o.ratio = RATIO_SEQUENCE;
    PolicyLossOut out;
    assert_int_equal(algo_policy_loss(&s, lp, old, A, NULL, NULL, &o, &out, d), 0);
    const double sq = sqrt(0.75);
    near(out.loss, (-2 * sq - 2 * 1.2) / 4, 1e-6, "gspo loss");
    float wd[] = {(float)(-sq / 4), (float)(-sq / 4), 0, 0};
    tu_assert_close(d, wd, 4, 1e-6f, 0, "gspo dlp");
    near(out.clipfrac, 0.5, 0, "gspo clipfrac");
    near(out.approx_kl, -(3 * log(1.5) + log(0.5)) / 4, 1e-6, "gspo approx_kl per token");
    o.ratio = (RatioLevel)7;
    assert_int_equal(algo_policy_loss(&s, lp, old, A, NULL, NULL, &o, &out, d), PL_EINVAL);

    enum { N = 14 };
    int off3[] = {0, 6, 9, 14};
    float m[N] = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0};
    float lp3[N], old3[N], A3[N], ref[N], d3[N], dt[N];
    const float seq_lr[] = {0.15f, -0.4f, 0.05f};
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0, q = 0; i < N; i++) {
        if (i == off3[q + 1]) q++;
        old3[i] = -1.0f - rng_uniform(&r);
        lp3[i] = old3[i] + seq_lr[q];
        A3[i] = rng_normal(&r);
        ref[i] = lp3[i] + 0.5f * rng_normal(&r);
    }
    AlgoSeqs s3 = {3, N, off3, m};
    for (int a = 0; a < 3; a++) {
        PolicyLossOut ot, os;
        algo_grpo_policy_defaults(&o);
        o.agg = (LossAgg)a, o.max_new_tokens = 6;
        assert_int_equal(algo_policy_loss(&s3, lp3, old3, A3, ref, NULL, &o, &ot, dt), 0);
        o.ratio = RATIO_SEQUENCE;
        assert_int_equal(algo_policy_loss(&s3, lp3, old3, A3, ref, NULL, &o, &os, d3), 0);
        near(os.loss, ot.loss, 1e-6 * fabs(ot.loss), "one log-ratio per sequence: loss");
        tu_assert_close(d3, dt, N, 1e-6f, 1e-6f, "one log-ratio per sequence: dlp");
        near(os.clipfrac, ot.clipfrac, 0, "one log-ratio per sequence: clipfrac");
    }

    float sadv[] = {0.7f, -1.3f, 0.4f};
    rng_seed(&r, 5);
    for (int i = 0, q = 0; i < N; i++) {
        if (i == off3[q + 1]) q++;
        old3[i] = -1.0f - rng_uniform(&r);
        lp3[i] = old3[i] + logf(0.6f + rng_uniform(&r));
        A3[i] = sadv[q];
    }
    int clipped = 0;
    for (int a = 0; a < 3; a++)
        for (int variant = 0; variant < 3; variant++) {
            algo_ppo_policy_defaults(&o);
            o.ratio = RATIO_SEQUENCE;
            o.agg = (LossAgg)a, o.max_new_tokens = 6;
            if (variant == 1) o.dual_clip = 1.5f, o.clip_high = 0.28f;
            if (variant == 2) o.kl_coef = 0.3f, o.kl_est = (KlEstimator)a, o.clip_low = 0.05f;
            PlCtx c = {&s3, lp3, old3, A3, ref, &o};
            assert_int_equal(algo_policy_loss(&s3, lp3, old3, A3, ref, NULL, &o, &out, d3), 0);
            clipped += out.clipfrac > 0;
            char what[64];
            snprintf(what, sizeof what, "gspo %s v%d", loss_agg_name(o.agg), variant);
            tu_fd_check(lp3, N, d3, pl_loss, &c, 1e-4f, 1e-5, what);
        }
    assert_true(clipped > 0); /* the batch reaches the clip somewhere */
}

/* --------------------------------------------------------- value loss */

/* c = 0.2:
 *   v 1.0, v_old .5, R 2: v_clip .7, max(1, 1.69) = 1.69 (clipped, grad 0)
 *   v 0.6, v_old .5, R 0: v_clip = v, .36, grad v - R = .6
 *   v 1.0, v_old .5, R 0: max(1, .49) = 1, grad 1
 * loss = 0.5 (1.69 + .36 + 1)/3 = 0.5083333, dv = [0 .6 1]/3, clipfrac 1/3.
 * Then finite differences on a random batch for every aggregation. */
typedef struct {
    const AlgoSeqs *s;
    float *v, *old, *R;
    LossAgg agg;
} VCtx;

static double v_loss(void *p) {
    VCtx *c = p;
    ValueLossOut out;
    assert_int_equal(algo_value_loss(c->s, c->v, c->old, c->R, 0.2f, c->agg, 5, &out, NULL), 0);
    return out.loss;
}

static void test_value_loss(void **state) {
    int off[] = {0, 3};
    float v[] = {1.0f, 0.6f, 1.0f}, old[] = {0.5f, 0.5f, 0.5f}, R[] = {2, 0, 0}, dv[3];
    AlgoSeqs s = {1, 3, off, NULL};
    ValueLossOut out;
    assert_int_equal(algo_value_loss(&s, v, old, R, 0.2f, LOSS_AGG_TOKEN_MEAN, 0, &out, dv), 0);
    near(out.loss, 0.5 * (1.69 + 0.36 + 1.0) / 3, 1e-6, "value loss");
    float wd[] = {0, 0.2f, 1.0f / 3};
    tu_assert_close(dv, wd, 3, 1e-6f, 0, "dv");
    near(out.clipfrac, 1.0 / 3, 1e-12, "vf clipfrac");
    assert_int_equal(algo_value_loss(&s, v, NULL, R, 0.0f, LOSS_AGG_TOKEN_MEAN, 0, &out, dv), 0);
    near(out.loss, 0.5 * (1.0 + 0.36 + 1.0) / 3, 1e-6, "unclipped value loss");
    AlgoSeqs e = {0, 0, NULL, NULL};
    assert_int_equal(algo_value_loss(&e, NULL, NULL, NULL, 0.2f, LOSS_AGG_TOKEN_MEAN, 0, &out, NULL), 0);
    near(out.loss, 0, 0, "empty");
    s.N = 2;
    assert_int_equal(algo_value_loss(&s, v, old, R, 0.2f, LOSS_AGG_TOKEN_MEAN, 0, &out, dv), PL_EINVAL);

    enum { N = 9 };
    int off2[] = {0, 4, 5, 9};
    float m[N] = {1, 1, 1, 0, 1, 0, 1, 1, 1}, vv[N], vo[N], RR[N], d[N];
    Rng r;
    rng_seed(&r, 6);
    tu_randn(vv, N, &r, 1.0f);
    tu_randn(RR, N, &r, 1.0f);
    for (int i = 0; i < N; i++) vo[i] = vv[i] + 0.4f * rng_normal(&r);
    AlgoSeqs s2 = {3, N, off2, m};
    for (int a = 0; a < 3; a++) {
        VCtx c = {&s2, vv, vo, RR, (LossAgg)a};
        assert_int_equal(algo_value_loss(&s2, vv, vo, RR, 0.2f, c.agg, 5, &out, d), 0);
        tu_fd_check(vv, N, d, v_loss, &c, 1e-4f, 1e-5, loss_agg_name(c.agg));
    }
}

/* ---------------------------------------------------------------- GRPO */

/* scores [1 2 3 4 | 5 5 5 5], G = 4:
 *   group: mean 2.5, unbiased std sqrt(5/3) = 1.2909944, A = [-1.5 -.5 .5
 *   1.5]/(std + 1e-6); the constant group gives 0 (zero variance);
 *   none: [-1.5 -.5 .5 1.5 0 0 0 0];
 *   rloo: s - (10 - s)/3 = [-2 -2/3 2/3 2 0 0 0 0];
 *   batch: std of all 8 scores: mean 3.75, sum of squares 17.5, sqrt(17.5/7)
 *   = 1.5811388, A = (s - mean_g)/(1.5811388 + 1e-6).
 * G = 1: every estimator gives 0. B not a multiple of G fails. */
static void test_group_advantages(void **state) {
    float s[] = {1, 2, 3, 4, 5, 5, 5, 5}, a[8];
    const double sd = sqrt(5.0 / 3), bsd = sqrt(2.5);
    float wg[8] = {0}, wn[] = {-1.5f, -0.5f, 0.5f, 1.5f, 0, 0, 0, 0};
    float wr[] = {-2, -2.f / 3, 2.f / 3, 2, 0, 0, 0, 0}, wb[8] = {0};
    for (int i = 0; i < 4; i++) wg[i] = (float)(wn[i] / (sd + 1e-6)), wb[i] = (float)(wn[i] / (bsd + 1e-6));
    assert_int_equal(algo_group_advantages(s, 8, 4, ADV_GROUP, a), 0);
    tu_assert_close(a, wg, 8, 1e-6f, 0, "group");
    assert_int_equal(algo_group_advantages(s, 8, 4, ADV_NONE, a), 0);
    tu_assert_close(a, wn, 8, 1e-6f, 0, "none");
    assert_int_equal(algo_group_advantages(s, 8, 4, ADV_RLOO, a), 0);
    tu_assert_close(a, wr, 8, 1e-6f, 0, "rloo");
    assert_int_equal(algo_group_advantages(s, 8, 4, ADV_BATCH, a), 0);
    tu_assert_close(a, wb, 8, 1e-6f, 0, "batch");
    for (int e = 0; e < 4; e++) {
        assert_int_equal(algo_group_advantages(s, 8, 1, (AdvEstimator)e, a), 0);
        for (int i = 0; i < 8; i++) near(a[i], 0, 0, "group of one");
    }
    assert_int_equal(algo_group_advantages(s, 8, 3, ADV_GROUP, a), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "multiple"));
    assert_int_equal(algo_group_advantages(s, 8, 0, ADV_GROUP, a), PL_EINVAL);
    assert_int_equal(algo_group_advantages(s, 8, 4, ADV_REINFORCE_PP, a), PL_EINVAL);
    assert_int_equal(algo_group_advantages(NULL, 0, 4, ADV_GROUP, NULL), 0);

    /* broadcast over the response tokens */
    int off[] = {0, 2, 5};
    float m[] = {0, 1, 0, 1, 1}, ps[] = {3, -2}, t[5];
    AlgoSeqs bs = {2, 5, off, m};
    assert_int_equal(algo_broadcast_seq(&bs, ps, t), 0);
    float wt[] = {0, 3, 0, -2, -2};
    tu_assert_close(t, wt, 5, 0, 0, "broadcast");
}

/* REINFORCE++: rewards [0 1 | 2], gamma .5: returns [.5 1 | 2]; mean 7/6,
 * deviations [-2/3 -1/6 5/6], unbiased var 7/12, sd 0.7637626, whitened
 * [-0.8728716 -0.2182179 1.0910895]. */
static void test_reinforce_pp(void **state) {
    int off[] = {0, 2, 3};
    float r[] = {0, 1, 2}, a[3], ret[3];
    AlgoSeqs s = {2, 3, off, NULL};
    assert_int_equal(algo_reinforce_pp(&s, r, 0.5f, a, ret), 0);
    float wr[] = {0.5f, 1, 2}, wa[] = {-0.8728716f, -0.2182179f, 1.0910895f};
    tu_assert_close(ret, wr, 3, 1e-7f, 0, "returns");
    tu_assert_close(a, wa, 3, 1e-6f, 0, "whitened");
    float m[] = {0, 0, 0};
    s.mask = m;
    assert_int_equal(algo_reinforce_pp(&s, r, 0.5f, a, ret), 0);
    for (int i = 0; i < 3; i++) near(a[i], 0, 0, "all masked");
    assert_int_equal(algo_reinforce_pp(&s, r, 1.5f, a, ret), PL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_seqs_check),
        cmocka_unit_test(test_agg),
        cmocka_unit_test(test_masked),
        cmocka_unit_test(test_seq_sum),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_kl),
        cmocka_unit_test(test_ppo_rewards),
        cmocka_unit_test(test_kl_controller),
        cmocka_unit_test(test_gae),
        cmocka_unit_test(test_policy_loss_hand),
        cmocka_unit_test(test_policy_loss_edges),
        cmocka_unit_test(test_policy_loss_fd),
        cmocka_unit_test(test_policy_loss_gspo),
        cmocka_unit_test(test_value_loss),
        cmocka_unit_test(test_group_advantages),
        cmocka_unit_test(test_reinforce_pp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
