/* test_algo_trl.c: algo/ against TRL's own loss code on the same inputs.
 *
 * tests/data/algo/trl.json is written by tests/ref/trl_ref.py, which runs
 * TRL's real methods (DPOTrainer._compute_loss, GRPOTrainer._compute_loss,
 * ORPOTrainer.odds_ratio_loss, CPOTrainer.cpo_loss for SimPO,
 * KTOTrainer._compute_loss, RewardTrainer.compute_loss) on stand-in
 * trainer objects; see that script and tests/data/algo/README.md. No Python
 * runs here, so this is a unit test on committed data.
 *
 * Where conventions differ by design the test says so and compares the
 * documented relation instead of equality:
 * - GRPO group/batch advantages: TRL divides by std + 1e-4, plumb by
 *   std + 1e-6 (ALGORITHMS.md), so A_plumb (sd + 1e-6) = A_trl (sd + 1e-4).
 * - TRL's "grpo" loss counts a fully masked sequence as 0 in its mean over
 *   sequences; plumb's seq_mean_token_mean leaves it out (the data has none).
 * - TRL's GRPO clamps neither the ratio nor k3; plumb clamps at +-20 / 10
 *   (the data stays inside).
 * - TRL 1.x DPO sigmoid has no label smoothing (it moved to other loss
 *   types); compared at eps = 0.
 * - TRL's ORPO NLL covers prompt + completion; plumb's (ALGORITHMS.md) only
 *   the completion: the script feeds TRL the completion-only NLL, so only
 *   the odds-ratio part is TRL's code there. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "testutil.h"

#include "algo/algo.h"
#include "algo/grpo.h"
#include "algo/ppo.h"
#include "algo/pref.h"
#include "common/err.h"

enum { MAXN = 256 };
static json_t *trl, *ref;

static int setup(void **state) {
    json_error_t e;
    trl = json_load_file(tu_path("%s/algo/trl.json", tu_data_dir()), 0, &e);
    ref = json_load_file(tu_path("%s/algo/ref.json", tu_data_dir()), 0, &e);
    if (!trl || !ref) {
        fprintf(stderr, "algo json: %s\n", e.text);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    json_decref(trl);
    json_decref(ref);
    return 0;
}

static json_t *get(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!v) fail_msg("json: missing '%s'", k);
    return v;
}
static double num(json_t *o, const char *k) { return json_number_value(get(o, k)); }
static int arr(json_t *o, const char *k, float *x) {
    json_t *a = get(o, k);
    assert_true(json_array_size(a) <= MAXN);
    for (size_t i = 0; i < json_array_size(a); i++) x[i] = (float)json_number_value(json_array_get(a, i));
    return (int)json_array_size(a);
}
static int iarr(json_t *o, const char *k, int *x) {
    json_t *a = get(o, k);
    assert_true(json_array_size(a) <= MAXN);
    for (size_t i = 0; i < json_array_size(a); i++) x[i] = (int)json_integer_value(json_array_get(a, i));
    return (int)json_array_size(a);
}
static void near(double got, double want, const char *what) {
    if (!(fabs(got - want) <= 2e-6 + 1e-5 * fabs(want)))
        fail_msg("%s: got %.10g, TRL %.10g", what, got, want);
}
static void close_arr(const float *got, json_t *o, const char *k, int n, const char *what) {
    float want[MAXN];
    assert_int_equal(arr(o, k, want), n);
    tu_assert_close(got, want, n, 2e-6f, 1e-5f, what);
}

static int offc[8], offr[8];
static float mc[MAXN], mr[MAXN], lc[MAXN], rc[MAXN], lr[MAXN], rr[MAXN];
static AlgoSeqs SC, SR;

static void load_pref(void) {
    json_t *p = get(ref, "pref");
    int nb = iarr(p, "offsets_c", offc), n = arr(p, "mask_c", mc);
    SC = (AlgoSeqs){nb - 1, n, offc, mc};
    nb = iarr(p, "offsets_r", offr), n = arr(p, "mask_r", mr);
    SR = (AlgoSeqs){nb - 1, n, offr, mr};
    arr(p, "lp_c", lc), arr(p, "ref_c", rc), arr(p, "lp_r", lr), arr(p, "ref_r", rr);
}

/* DPO sigmoid, hinge, ipo: loss, token gradients and TRL's logged rewards,
 * margin and accuracy. */
static void test_dpo(void **state) {
    load_pref();
    json_t *cases = get(trl, "dpo");
    assert_int_equal(json_array_size(cases), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *c = json_array_get(cases, i);
        DpoOpts o;
        algo_dpo_defaults(&o);
        assert_int_equal(dpo_loss_parse(json_string_value(get(c, "loss_type")), &o.loss_type), 0);
        o.beta = (float)num(c, "beta");
        PrefOut out;
        float gc[MAXN], gr[MAXN];
        assert_int_equal(algo_dpo(&SC, lc, rc, &SR, lr, rr, &o, &out, gc, gr), 0);
        const char *w = dpo_loss_name(o.loss_type);
        near(out.loss, num(c, "loss"), w);
        close_arr(gc, c, "grad_c", SC.N, w);
        close_arr(gr, c, "grad_r", SR.N, w);
        near(out.reward_chosen, num(c, "reward_chosen"), "rewards/chosen");
        near(out.reward_rejected, num(c, "reward_rejected"), "rewards/rejected");
        near(out.margin, num(c, "margin"), "rewards/margins");
        near(out.accuracy, num(c, "accuracy"), "rewards/accuracies");
    }
}

/* ORPO: TRL's odds_ratio_loss (float32 inside TRL) plus the NLL. */
static void test_orpo(void **state) {
    load_pref();
    json_t *c = get(trl, "orpo");
    PrefOut out;
    float gc[MAXN], gr[MAXN];
    assert_int_equal(algo_orpo(&SC, lc, &SR, lr, (float)num(c, "lambda"), &out, gc, gr), 0);
    near(out.loss, num(c, "loss"), "orpo loss");
    near(out.nll, num(c, "nll"), "orpo nll");
    near(out.log_odds, num(c, "log_odds"), "orpo log_odds");
    near(out.reward_chosen, num(c, "reward_chosen"), "orpo chosen reward");
    near(out.reward_rejected, num(c, "reward_rejected"), "orpo rejected reward");
    close_arr(gc, c, "grad_c", SC.N, "orpo grad chosen");
    close_arr(gr, c, "grad_r", SR.N, "orpo grad rejected");
}

/* SimPO: CPOTrainer.cpo_loss with loss_type simpo (label smoothing 0.1). */
static void test_simpo(void **state) {
    load_pref();
    json_t *c = get(trl, "simpo");
    SimpoOpts o = {(float)num(c, "beta"), (float)num(c, "gamma"), (float)num(c, "label_smoothing")};
    PrefOut out;
    float gc[MAXN], gr[MAXN];
    assert_int_equal(algo_simpo(&SC, lc, &SR, lr, &o, &out, gc, gr), 0);
    near(out.loss, num(c, "loss"), "simpo loss");
    close_arr(gc, c, "grad_c", SC.N, "simpo grad chosen");
    close_arr(gr, c, "grad_r", SR.N, "simpo grad rejected");
    near(out.reward_chosen, num(c, "reward_chosen"), "simpo chosen reward");
    near(out.reward_rejected, num(c, "reward_rejected"), "simpo rejected reward");
}

/* KTO: KTOTrainer._compute_loss; TRL's logged kl is the reference point. */
static void test_kto(void **state) {
    load_pref();
    json_t *c = get(trl, "kto");
    int des[8];
    iarr(c, "desirable", des);
    KtoOpts o = {(float)num(c, "beta"), (float)num(c, "desirable_weight"),
                 (float)num(c, "undesirable_weight")};
    PrefOut out;
    float g[MAXN];
    assert_int_equal(algo_kto(&SC, lc, rc, des, (float)num(c, "kl"), &o, &out, g), 0);
    near(out.loss, num(c, "loss"), "kto loss");
    close_arr(g, c, "grad", SC.N, "kto grad");
    near(out.reward_chosen, num(c, "reward_chosen"), "kto rewards/chosen");
    near(out.reward_rejected, num(c, "reward_rejected"), "kto rewards/rejected");
}

/* Reward model: RewardTrainer.compute_loss with margins, without and with
 * center_rewards_coefficient. */
static void test_rm(void **state) {
    json_t *b = get(ref, "bt");
    float a[MAXN], r[MAXN], m[MAXN], gc[MAXN], gr[MAXN];
    int P = arr(b, "r_c", a);
    arr(b, "r_r", r), arr(b, "margin", m);
    json_t *cases = get(trl, "rm");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        PrefOut out;
        assert_int_equal(algo_bt_loss(a, r, m, P, (float)num(c, "center_coef"), &out, gc, gr), 0);
        near(out.loss, num(c, "loss"), "rm loss");
        close_arr(gc, c, "grad_c", P, "rm grad chosen");
        close_arr(gr, c, "grad_r", P, "rm grad rejected");
        near(out.accuracy, num(c, "accuracy"), "rm accuracy");
        near(out.margin, num(c, "margin"), "rm margin");
    }
}

/* GRPO loss: TRL's grpo / bnpo / dr_grpo are plumb's seq_mean_token_mean /
 * token_mean / seq_mean_token_sum_norm (max_new_tokens =
 * max_completion_length), with beta = kl_coef and k3; TRL's
 * importance_sampling_level token / sequence (GSPO) is plumb's
 * algo.ratio_level. */
static void test_grpo_loss(void **state) {
    json_t *g = get(trl, "grpo");
    int off[16];
    float m[MAXN], lp[MAXN], old[MAXN], rf[MAXN], sadv[16], adv[MAXN], d[MAXN];
    int nb = iarr(g, "offsets", off), N = arr(g, "mask", m);
    AlgoSeqs s = {nb - 1, N, off, m};
    arr(g, "lp", lp), arr(g, "lp_old", old), arr(g, "lp_ref", rf), arr(g, "seq_adv", sadv);
    assert_int_equal(algo_broadcast_seq(&s, sadv, adv), 0);
    const char *trl_names[] = {"grpo", "bnpo", "dr_grpo"};
    const LossAgg ours[] = {LOSS_AGG_SEQ_MEAN_TOKEN_MEAN, LOSS_AGG_TOKEN_MEAN,
                            LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM};
    json_t *cases = get(g, "cases");
    int seen[2] = {0, 0};
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *lt = json_string_value(get(c, "loss_type"));
        int k = 0;
        while (k < 3 && strcmp(lt, trl_names[k]) != 0) k++;
        assert_true(k < 3);
        PolicyLossOpts o;
        algo_grpo_policy_defaults(&o);
        assert_int_equal(ratio_level_parse(json_string_value(get(c, "importance_sampling_level")),
                                           &o.ratio), 0);
        seen[o.ratio]++;
        o.kl_coef = (float)num(c, "beta");
        o.clip_low = (float)num(c, "epsilon_low"), o.clip_high = (float)num(c, "epsilon_high");
        o.agg = ours[k], o.max_new_tokens = (int)num(g, "max_completion_length");
        PolicyLossOut out;
        assert_int_equal(algo_policy_loss(&s, lp, old, adv, rf, NULL, &o, &out, d), 0);
        char what[64];
        snprintf(what, sizeof what, "%s, %s ratio", lt, ratio_level_name(o.ratio));
        near(out.loss, num(c, "loss"), what);
        close_arr(d, c, "grad", N, what);
        if (ours[k] == LOSS_AGG_TOKEN_MEAN) near(out.kl_loss, num(c, "kl"), "kl metric");
    }
    assert_int_equal(seen[RATIO_TOKEN], 3);
    assert_int_equal(seen[RATIO_SEQUENCE], 3);
}

/* Group advantages: none equals TRL's; group and batch differ only by the
 * epsilon in the denominator. */
static void test_grpo_adv(void **state) {
    json_t *g = get(trl, "grpo_adv");
    float s[MAXN], a[MAXN], ta[MAXN], sd[MAXN];
    int B = arr(g, "scores", s), G = (int)num(g, "group_size");
    const char *names[] = {"group", "none", "batch"};
    const AdvEstimator ests[] = {ADV_GROUP, ADV_NONE, ADV_BATCH};
    for (int k = 0; k < 3; k++) {
        json_t *c = get(g, names[k]);
        arr(c, "adv", ta), arr(c, "std", sd);
        assert_int_equal(algo_group_advantages(s, B, G, ests[k], a), 0);
        for (int i = 0; i < B; i++) {
            double ours = a[i], theirs = ta[i];
            if (ests[k] != ADV_NONE) ours *= sd[i] + 1e-6, theirs *= sd[i] + 1e-4;
            near(ours, theirs, names[k]);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dpo),       cmocka_unit_test(test_orpo),
        cmocka_unit_test(test_simpo),     cmocka_unit_test(test_kto),
        cmocka_unit_test(test_rm),        cmocka_unit_test(test_grpo_loss),
        cmocka_unit_test(test_grpo_adv),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
