/* test_algo_ref.c: every loss and estimator of algo/ against an
 * independent torch implementation of ALGORITHMS.md on random inputs.
 *
 * tests/data/algo/ref.json is written by tests/ref/algo_ref.py (float64
 * torch, autograd gradients, inputs rounded to float32 so both sides read
 * the same numbers). The batch has prompt-masked sequences, a masked hole,
 * a fully masked sequence, a single-token response and two log-ratios of
 * +-50. Tolerances are float32 round-off: 2e-6 absolute + 1e-5 relative. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "testutil.h"

#include "algo/algo.h"
#include "algo/grpo.h"
#include "algo/kl.h"
#include "algo/logprob.h"
#include "algo/ppo.h"
#include "algo/pref.h"
#include "common/err.h"

enum { MAXN = 64 };

static json_t *root;

static int setup(void **state) {
    json_error_t e;
    root = json_load_file(tu_path("%s/algo/ref.json", tu_data_dir()), 0, &e);
    if (!root) {
        fprintf(stderr, "ref.json: %s (line %d)\n", e.text, e.line);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    json_decref(root);
    return 0;
}

static json_t *get(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!v) fail_msg("ref.json: missing '%s'", key);
    return v;
}

static double num(json_t *o, const char *key) { return json_number_value(get(o, key)); }

/* Reads an array of numbers into x (at most MAXN*MAXN), returns its length. */
static int arr(json_t *o, const char *key, float *x) {
    json_t *a = get(o, key);
    size_t n = json_array_size(a);
    assert_true(n <= MAXN * MAXN);
    for (size_t i = 0; i < n; i++) x[i] = (float)json_number_value(json_array_get(a, i));
    return (int)n;
}

static int iarr(json_t *o, const char *key, int *x) {
    json_t *a = get(o, key);
    size_t n = json_array_size(a);
    assert_true(n <= MAXN);
    for (size_t i = 0; i < n; i++) x[i] = (int)json_integer_value(json_array_get(a, i));
    return (int)n;
}

static void near(double got, double want, const char *what) {
    if (!(fabs(got - want) <= 2e-6 + 1e-5 * fabs(want)))
        fail_msg("%s: got %.10g want %.10g", what, got, want);
}

static void close_arr(const float *got, json_t *o, const char *key, int n, const char *what) {
    float want[MAXN * MAXN];
    assert_int_equal(arr(o, key, want), n);
    tu_assert_close(got, want, n, 2e-6f, 1e-5f, what);
}

/* The shared packed batch. */
static int off[MAXN];
static float mask[MAXN], lp[MAXN], old[MAXN], ref[MAXN], adv[MAXN], ent[MAXN], val[MAXN],
    vold[MAXN], ret[MAXN], scores[MAXN], rtok[MAXN];
static AlgoSeqs S;

static void load_batch(void) {
    int nb = iarr(root, "offsets", off);
    int N = arr(root, "mask", mask);
    S = (AlgoSeqs){nb - 1, N, off, mask};
    arr(root, "lp", lp), arr(root, "lp_old", old), arr(root, "lp_ref", ref);
    arr(root, "adv", adv), arr(root, "ent", ent), arr(root, "values", val);
    arr(root, "values_old", vold), arr(root, "returns", ret), arr(root, "scores", scores);
    arr(root, "rewards_tok", rtok);
    assert_int_equal(algo_seqs_check(&S, "ref batch"), 0);
}

static void test_kl_agg_whiten(void **state) {
    load_batch();
    float k[MAXN], g[MAXN];
    const char *names[] = {"k1", "k2", "k3"};
    for (int e = 0; e < 3; e++) {
        json_t *o = get(get(root, "kl"), names[e]);
        assert_int_equal(algo_kl((KlEstimator)e, lp, ref, S.N, k, g), 0);
        close_arr(k, o, "kl", S.N, names[e]);
        close_arr(g, o, "grad", S.N, names[e]);
    }
    for (int a = 0; a < 3; a++) {
        json_t *o = get(get(root, "agg"), loss_agg_name((LossAgg)a));
        double v;
        assert_int_equal(algo_agg(&S, adv, (LossAgg)a, (int)num(root, "max_new_tokens"), &v, g), 0);
        near(v, num(o, "value"), loss_agg_name((LossAgg)a));
        close_arr(g, o, "grad", S.N, "agg grad");
    }
    assert_int_equal(algo_masked_whiten(k, adv, mask, S.N, 1), 0);
    close_arr(k, root, "whiten", S.N, "whiten");
}

static void test_rewards_gae(void **state) {
    load_batch();
    float r[MAXN], a[MAXN], R[MAXN];
    json_t *o = get(root, "ppo_rewards");
    assert_int_equal(algo_ppo_rewards(&S, lp, ref, scores, (float)num(o, "kl_coef"), KL_K1,
                                      (float)num(o, "reward_clip"), r), 0);
    close_arr(r, o, "rewards", S.N, "ppo rewards");
    o = get(root, "gae");
    assert_int_equal(algo_gae(&S, rtok, val, (float)num(o, "gamma"), (float)num(o, "lambda"), a, R), 0);
    close_arr(a, o, "adv", S.N, "gae adv");
    close_arr(R, o, "ret", S.N, "gae ret");
    o = get(root, "reinforce_pp");
    assert_int_equal(algo_reinforce_pp(&S, rtok, (float)num(o, "gamma"), a, NULL), 0);
    close_arr(a, o, "adv", S.N, "reinforce++");
}

static void test_policy_value(void **state) {
    load_batch();
    float g[MAXN];
    json_t *cases = get(root, "policy");
    assert_true(json_array_size(cases) == 9);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        PolicyLossOpts o;
        algo_ppo_policy_defaults(&o);
        assert_int_equal(loss_agg_parse(json_string_value(get(c, "agg")), &o.agg), 0);
        o.max_new_tokens = (int)num(root, "max_new_tokens");
        o.clip_low = (float)num(c, "clip_low"), o.clip_high = (float)num(c, "clip_high");
        o.dual_clip = (float)num(c, "dual_clip"), o.kl_coef = (float)num(c, "kl_coef");
        PolicyLossOut out;
        assert_int_equal(algo_policy_loss(&S, lp, old, adv, ref, ent, &o, &out, g), 0);
        char what[80];
        snprintf(what, sizeof what, "policy case %zu (%s)", i, loss_agg_name(o.agg));
        near(out.loss, num(c, "loss"), what);
        close_arr(g, c, "grad", S.N, what);
        near(out.clipfrac, num(c, "clipfrac"), "clipfrac");
        near(out.approx_kl, num(c, "approx_kl"), "approx_kl");
        near(out.entropy, num(c, "entropy"), "entropy");
    }
    cases = get(root, "value");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        LossAgg a;
        assert_int_equal(loss_agg_parse(json_string_value(get(c, "agg")), &a), 0);
        ValueLossOut out;
        assert_int_equal(algo_value_loss(&S, val, vold, ret, (float)num(c, "clip"), a,
                                         (int)num(root, "max_new_tokens"), &out, g), 0);
        near(out.loss, num(c, "loss"), "value loss");
        close_arr(g, c, "grad", S.N, "value grad");
        near(out.clipfrac, num(c, "clipfrac"), "value clipfrac");
    }
}

static void test_group_adv(void **state) {
    json_t *o = get(root, "group_adv");
    float s[MAXN], a[MAXN];
    int B = arr(o, "scores", s), G = (int)num(o, "group_size");
    const char *names[] = {"group", "none", "rloo", "batch"};
    for (int e = 0; e < 4; e++) {
        AdvEstimator est;
        assert_int_equal(adv_estimator_parse(names[e], &est), 0);
        assert_int_equal(algo_group_advantages(s, B, G, est, a), 0);
        close_arr(a, o, names[e], B, names[e]);
    }
}

/* The preference batch: P chosen and P rejected sequences. */
static int offc[8], offr[8];
static float mc[MAXN], mr[MAXN], lc[MAXN], rc[MAXN], lr[MAXN], rr[MAXN];
static AlgoSeqs SC, SR;

static void load_pref(void) {
    json_t *p = get(root, "pref");
    int nb = iarr(p, "offsets_c", offc);
    int nc = arr(p, "mask_c", mc);
    SC = (AlgoSeqs){nb - 1, nc, offc, mc};
    nb = iarr(p, "offsets_r", offr);
    int nr = arr(p, "mask_r", mr);
    SR = (AlgoSeqs){nb - 1, nr, offr, mr};
    arr(p, "lp_c", lc), arr(p, "ref_c", rc), arr(p, "lp_r", lr), arr(p, "ref_r", rr);
}

static void check_pref(const PrefOut *out, const float *gc, const float *gr, json_t *c,
                       const char *what) {
    near(out->loss, num(c, "loss"), what);
    close_arr(gc, c, "grad_c", SC.N, what);
    if (gr) close_arr(gr, c, "grad_r", SR.N, what);
    near(out->reward_chosen, num(c, "reward_chosen"), "reward_chosen");
    near(out->reward_rejected, num(c, "reward_rejected"), "reward_rejected");
    if (json_object_get(c, "margin")) near(out->margin, num(c, "margin"), "margin");
    if (json_object_get(c, "accuracy")) near(out->accuracy, num(c, "accuracy"), "accuracy");
}

static void test_pref(void **state) {
    load_pref();
    float gc[MAXN], gr[MAXN];
    PrefOut out;
    json_t *cases = get(root, "dpo");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        DpoOpts o;
        assert_int_equal(dpo_loss_parse(json_string_value(get(c, "loss_type")), &o.loss_type), 0);
        o.beta = (float)num(c, "beta"), o.label_smoothing = (float)num(c, "label_smoothing");
        assert_int_equal(algo_dpo(&SC, lc, rc, &SR, lr, rr, &o, &out, gc, gr), 0);
        check_pref(&out, gc, gr, c, dpo_loss_name(o.loss_type));
    }
    json_t *c = get(root, "simpo");
    SimpoOpts so = {(float)num(c, "beta"), (float)num(c, "gamma"), (float)num(c, "label_smoothing")};
    assert_int_equal(algo_simpo(&SC, lc, &SR, lr, &so, &out, gc, gr), 0);
    check_pref(&out, gc, gr, c, "simpo");

    c = get(root, "orpo");
    assert_int_equal(algo_orpo(&SC, lc, &SR, lr, (float)num(c, "lambda"), &out, gc, gr), 0);
    check_pref(&out, gc, gr, c, "orpo");
    near(out.nll, num(c, "nll"), "orpo nll");
    near(out.log_odds, num(c, "log_odds"), "orpo log_odds");

    c = get(root, "kto");
    int des[8];
    iarr(c, "desirable", des);
    KtoOpts ko = {(float)num(c, "beta"), (float)num(c, "desirable_weight"),
                  (float)num(c, "undesirable_weight")};
    assert_int_equal(algo_kto(&SC, lc, rc, des, (float)num(c, "kl"), &ko, &out, gc), 0);
    near(out.loss, num(c, "loss"), "kto");
    close_arr(gc, c, "grad", SC.N, "kto grad");
    near(out.reward_chosen, num(c, "reward_chosen"), "kto reward_chosen");
    near(out.reward_rejected, num(c, "reward_rejected"), "kto reward_rejected");

    c = get(root, "bt");
    float a[MAXN], b[MAXN], m[MAXN];
    int P = arr(c, "r_c", a);
    arr(c, "r_r", b), arr(c, "margin", m);
    assert_int_equal(algo_bt_loss(a, b, m, P, (float)num(c, "center_coef"), &out, gc, gr), 0);
    near(out.loss, num(c, "loss"), "bt");
    close_arr(gc, c, "grad_c", P, "bt grad_c");
    close_arr(gr, c, "grad_r", P, "bt grad_r");
    near(out.accuracy, num(c, "accuracy"), "bt accuracy");
}

static void test_logprobs(void **state) {
    json_t *o = get(root, "logprobs");
    static float logits[MAXN * MAXN], dl[MAXN * MAXN];
    float wl[MAXN], we[MAXN], lpv[MAXN], ev[MAXN], lse[MAXN];
    int y[MAXN];
    int V = (int)num(o, "V"), N = iarr(o, "targets", y);
    float Tt = (float)num(o, "temperature");
    assert_int_equal(arr(o, "logits", logits), N * V);
    arr(o, "wlp", wl), arr(o, "went", we);
    assert_int_equal(algo_logprobs(lpv, ev, lse, logits, y, N, V, Tt), 0);
    close_arr(lpv, o, "lp", N, "lp");
    close_arr(ev, o, "ent", N, "entropy");
    assert_int_equal(algo_logprobs_backward(dl, wl, we, logits, lse, ev, y, N, V, Tt), 0);
    close_arr(dl, o, "grad", N * V, "dlogits");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_agg_whiten), cmocka_unit_test(test_rewards_gae),
        cmocka_unit_test(test_policy_value),  cmocka_unit_test(test_group_adv),
        cmocka_unit_test(test_pref),          cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
