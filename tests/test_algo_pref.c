/* test_algo_pref.c: DPO (sigmoid, ipo, hinge), SimPO, KTO, ORPO and the
 * Bradley-Terry reward-model loss (algo/pref.h).
 *
 * Hand-derived values (derivations above each test), edge cases (empty,
 * all-masked, single-token, log-ratios of +-50, mismatched batches) and
 * every token gradient against central finite differences. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#include "algo/pref.h"
#include "common/err.h"

static void near(double got, double want, double tol, const char *what) {
    if (!(fabs(got - want) <= tol)) fail_msg("%s: got %.10g want %.10g", what, got, want);
}

static void finite_out(const PrefOut *o) {
    const double v[] = {o->loss, o->reward_chosen, o->reward_rejected, o->margin, o->accuracy,
                        o->nll, o->log_odds};
    for (int i = 0; i < 7; i++)
        if (!isfinite(v[i])) fail_msg("PrefOut field %d not finite (%g)", i, v[i]);
}


/* The fixed pair used by the hand tests: chosen = 1 prompt token (masked)
 * + 2 completion tokens, rejected = 2 completion tokens.
 *   chosen sum lp = -1 - 2 = -3, ref -1.5 - 2.5 = -4 -> log-ratio xc = 1;
 *   rejected sum lp = -7, ref -6 -> xr = -1; D = 2. */
static int offc[] = {0, 3}, offr[] = {0, 2};
static float mc[] = {0, 1, 1};
static float lpc[] = {-9, -1, -2}, refc[] = {-9, -1.5f, -2.5f};
static float lpr[] = {-3, -4}, refr[] = {-3, -3};

/* Names and defaults. */
static void test_parse(void **state) {
    DpoLoss l;
    const char *n[] = {"sigmoid", "ipo", "hinge"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dpo_loss_parse(n[i], &l), 0);
        assert_int_equal(l, i);
        assert_string_equal(dpo_loss_name(l), n[i]);
    }
    assert_int_equal(dpo_loss_parse("robust", &l), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "robust"));
    DpoOpts o;
    algo_dpo_defaults(&o);
    assert_true(o.loss_type == DPO_SIGMOID && o.beta == 0.1f && o.label_smoothing == 0.0f);
}

/* D = 2, beta 0.1:
 *   sigmoid: -logsig(0.2) = log(1 + e^-0.2) = 0.5981388693; dL/dD =
 *   -beta sig(-0.2) = -0.04501660027, so each chosen completion token gets
 *   -0.0450166 and each rejected one +0.0450166; rewards 0.1 and -0.1,
 *   margin 0.2, accuracy 1.
 *   label smoothing 0.1: 0.9 * 0.5981388693 + 0.1 * (0.2 + 0.5981388693)
 *   = 0.6181388693.
 *   ipo: mean log-ratios 1/2 and -1/2, D' = 1, (1 - 1/(2*0.1))^2 = 16,
 *   dL/dD' = -8, per token -8/2 = -4 (chosen) and +4 (rejected); rewards
 *   stay beta (p - ref) on the sums: 0.1 / -0.1.
 *   hinge: relu(1 - 0.2) = 0.8, dL/dD = -0.1; beta 1: relu(1 - 2) = 0. */
static void test_dpo_hand(void **state) {
    AlgoSeqs sc = {1, 3, offc, mc}, sr = {1, 2, offr, NULL};
    DpoOpts o;
    algo_dpo_defaults(&o);
    PrefOut out;
    float dc[3], dr[2];
    assert_int_equal(algo_dpo(&sc, lpc, refc, &sr, lpr, refr, &o, &out, dc, dr), 0);
    near(out.loss, 0.5981388694, 1e-8, "sigmoid"); /* beta is 0.1f */
    near(dc[0], 0, 0, "prompt token");
    near(dc[1], -0.04501660027, 1e-8, "dchosen");
    near(dc[2], -0.04501660027, 1e-8, "dchosen");
    near(dr[0], 0.04501660027, 1e-8, "drejected");
    near(out.reward_chosen, 0.1, 1e-7, "reward chosen");
    near(out.reward_rejected, -0.1, 1e-7, "reward rejected");
    near(out.margin, 0.2, 1e-7, "margin");
    near(out.accuracy, 1.0, 0, "accuracy");
    o.label_smoothing = 0.1f;
    assert_int_equal(algo_dpo(&sc, lpc, refc, &sr, lpr, refr, &o, &out, dc, dr), 0);
    near(out.loss, 0.6181388693, 1e-7, "label smoothing");
    o.label_smoothing = 0.0f;
    o.loss_type = DPO_IPO;
    assert_int_equal(algo_dpo(&sc, lpc, refc, &sr, lpr, refr, &o, &out, dc, dr), 0);
    near(out.loss, 16.0, 1e-5, "ipo");
    near(dc[1], -4.0, 1e-5, "ipo dchosen");
    near(dr[1], 4.0, 1e-5, "ipo drejected");
    near(out.reward_chosen, 0.1, 1e-7, "ipo reward on sums");
    o.loss_type = DPO_HINGE;
    assert_int_equal(algo_dpo(&sc, lpc, refc, &sr, lpr, refr, &o, &out, dc, dr), 0);
    near(out.loss, 0.8, 1e-7, "hinge");
    near(dc[1], -0.1, 1e-7, "hinge grad");
    o.beta = 1.0f;
    assert_int_equal(algo_dpo(&sc, lpc, refc, &sr, lpr, refr, &o, &out, dc, dr), 0);
    near(out.loss, 0.0, 0, "hinge satisfied");
    near(dc[1], 0.0, 0, "hinge satisfied grad");
}

/* Extreme log-ratios: chosen +50, rejected -50 (D = 100) and the reverse,
 * beta 1: sigmoid loss log1p(e^-100) ~ 3.7e-44 and 100 with gradients 0 and
 * -1, no NaN or Inf anywhere. Empty batches give zeros, all-masked pairs
 * give D = 0 (sigmoid: ln 2), mismatched batches fail. */
static void test_dpo_edges(void **state) {
    int off[] = {0, 1};
    float a = 50, b = -50, z = 0, dc, dr;
    AlgoSeqs s = {1, 1, off, NULL};
    DpoOpts o;
    algo_dpo_defaults(&o);
    o.beta = 1.0f;
    PrefOut out;
    for (int t = 0; t < 3; t++) {
        o.loss_type = (DpoLoss)t;
        assert_int_equal(algo_dpo(&s, &a, &z, &s, &b, &z, &o, &out, &dc, &dr), 0);
        finite_out(&out);
        assert_true(isfinite(dc) && isfinite(dr));
        assert_int_equal(algo_dpo(&s, &b, &z, &s, &a, &z, &o, &out, &dc, &dr), 0);
        finite_out(&out);
        assert_true(isfinite(dc) && isfinite(dr));
        if (t == 0) near(out.loss, 100.0, 1e-9, "sigmoid -100"), near(dc, -1.0, 1e-7, "saturated grad");
    }
    o.loss_type = DPO_SIGMOID;
    AlgoSeqs e = {0, 0, NULL, NULL};
    out.loss = 5;
    assert_int_equal(algo_dpo(&e, NULL, NULL, &e, NULL, NULL, &o, &out, NULL, NULL), 0);
    near(out.loss + out.accuracy + out.margin, 0, 0, "empty");
    float m0 = 0;
    AlgoSeqs sm = {1, 1, off, &m0};
    assert_int_equal(algo_dpo(&sm, &a, &z, &sm, &b, &z, &o, &out, &dc, &dr), 0);
    near(out.loss, log(2.0), 1e-12, "all masked");
    near(dc, 0, 0, "all masked grad");
    AlgoSeqs sc = {1, 3, offc, mc};
    int off2[] = {0, 1, 2};
    AlgoSeqs s2 = {2, 2, off2, NULL};
    assert_int_equal(algo_dpo(&sc, lpc, refc, &s2, lpr, refr, &o, &out, NULL, NULL), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "rejected"));
    o.beta = 0;
    assert_int_equal(algo_dpo(&s, &a, &z, &s, &b, &z, &o, &out, &dc, &dr), PL_EINVAL);
}

/* Random pairs (3 pairs, prompt tokens masked, varied lengths): token
 * gradients of each DPO variant and label smoothing against finite
 * differences, for chosen and rejected. */
typedef struct {
    AlgoSeqs *sc, *sr;
    float *lc, *rc, *lr, *rr;
    DpoOpts *o;
} DpoCtx;

static double dpo_loss(void *p) {
    DpoCtx *c = p;
    PrefOut out;
    assert_int_equal(algo_dpo(c->sc, c->lc, c->rc, c->sr, c->lr, c->rr, c->o, &out, NULL, NULL), 0);
    return out.loss;
}

enum { NC = 10, NR = 9 };
static int ofc[] = {0, 3, 7, 10}, ofr[] = {0, 4, 5, 9};
static float mkc[NC] = {0, 1, 1, 0, 0, 1, 1, 1, 1, 1}, mkr[NR] = {0, 1, 1, 1, 1, 0, 0, 1, 1};

static void rand_pairs(float *lc, float *rc, float *lr, float *rr, unsigned seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < NC; i++) lc[i] = -0.2f - 2 * rng_uniform(&r), rc[i] = lc[i] + 0.5f * rng_normal(&r);
    for (int i = 0; i < NR; i++) lr[i] = -0.2f - 2 * rng_uniform(&r), rr[i] = lr[i] + 0.5f * rng_normal(&r);
}

static void test_dpo_fd(void **state) {
    float lc[NC], rc[NC], lr[NR], rr[NR], dc[NC], dr[NR];
    rand_pairs(lc, rc, lr, rr, 21);
    AlgoSeqs sc = {3, NC, ofc, mkc}, sr = {3, NR, ofr, mkr};
    for (int t = 0; t < 4; t++) {
        DpoOpts o;
        algo_dpo_defaults(&o);
        o.beta = 0.5f;
        o.loss_type = t == 3 ? DPO_SIGMOID : (DpoLoss)t;
        if (t == 3) o.label_smoothing = 0.2f;
        DpoCtx c = {&sc, &sr, lc, rc, lr, rr, &o};
        PrefOut out;
        assert_int_equal(algo_dpo(&sc, lc, rc, &sr, lr, rr, &o, &out, dc, dr), 0);
        tu_fd_check(lc, NC, dc, dpo_loss, &c, 1e-3f, 1e-6, "dpo chosen");
        tu_fd_check(lr, NR, dr, dpo_loss, &c, 1e-3f, 1e-6, "dpo rejected");
    }
}

/* SimPO: chosen mean lp -1.5 ([-1 -2]), rejected -4 ([-3 -5]), beta 2,
 * gamma 0.5: x = 2 * 2.5 - 0.5 = 4.5, loss = log1p(e^-4.5) =
 * 0.01104774485, dL/dx = -sig(-4.5) = -0.01098694263, per chosen token
 * -0.01098694263 * 2 / 2 = -0.01098694263, rejected +0.01098694263;
 * rewards -3 and -8. Then finite differences with label smoothing. */
typedef struct {
    AlgoSeqs *sc, *sr;
    float *lc, *lr;
    SimpoOpts *o;
} SimCtx;

static double simpo_loss(void *p) {
    SimCtx *c = p;
    PrefOut out;
    assert_int_equal(algo_simpo(c->sc, c->lc, c->sr, c->lr, c->o, &out, NULL, NULL), 0);
    return out.loss;
}

static void test_simpo(void **state) {
    int off[] = {0, 2};
    float c[] = {-1, -2}, r[] = {-3, -5}, dc[2], dr[2];
    AlgoSeqs s = {1, 2, off, NULL};
    SimpoOpts o;
    algo_simpo_defaults(&o);
    assert_true(o.beta == 2.0f && o.gamma == 0.5f);
    PrefOut out;
    assert_int_equal(algo_simpo(&s, c, &s, r, &o, &out, dc, dr), 0);
    near(out.loss, 0.01104774485, 1e-10, "simpo");
    near(dc[0], -0.01098694263, 1e-8, "simpo dchosen");
    near(dr[1], 0.01098694263, 1e-8, "simpo drejected");
    near(out.reward_chosen, -3, 1e-6, "simpo reward");
    near(out.accuracy, 1, 0, "simpo accuracy");
    float big = -50, zero = 0;
    int off1[] = {0, 1};
    AlgoSeqs s1 = {1, 1, off1, NULL};
    assert_int_equal(algo_simpo(&s1, &big, &s1, &zero, &o, &out, dc, dr), 0);
    finite_out(&out);
    near(out.loss, 100.5, 1e-9, "simpo extreme");

    float lc[NC], rc[NC], lr[NR], rr[NR], gc[NC], gr[NR];
    rand_pairs(lc, rc, lr, rr, 22);
    AlgoSeqs sc = {3, NC, ofc, mkc}, sr = {3, NR, ofr, mkr};
    o.label_smoothing = 0.1f;
    SimCtx cx = {&sc, &sr, lc, lr, &o};
    assert_int_equal(algo_simpo(&sc, lc, &sr, lr, &o, &out, gc, gr), 0);
    tu_fd_check(lc, NC, gc, simpo_loss, &cx, 1e-3f, 1e-6, "simpo chosen");
    tu_fd_check(lr, NR, gr, simpo_loss, &cx, 1e-3f, 1e-6, "simpo rejected");
    AlgoSeqs s2 = {2, NR, ofr, NULL};
    (void)s2;
    int of2[] = {0, 1, 2};
    AlgoSeqs t2 = {2, 2, of2, NULL};
    assert_int_equal(algo_simpo(&s, c, &t2, r, &o, &out, dc, dr), PL_EINVAL);
}

/* KTO, beta 1, z0 = 0.5: a desirable example with log-ratio 1 and an
 * undesirable one with -1:
 *   1 - sig(1 - 0.5) = 0.3775406688; 1 - sig(0.5 + 1) = 0.1824255238;
 *   loss = mean = 0.2799830963;
 *   d/dx: -sig(.5)(1 - sig(.5))/2 = -0.1175018561 and
 *   +sig(1.5)(1 - sig(1.5))/2 = 0.07457323; rewards 1 and -1.
 * A negative KL estimate clamps to z0 = 0. */
typedef struct {
    AlgoSeqs *s;
    float *lp, *ref;
    int *des;
    KtoOpts *o;
} KtoCtx;

static double kto_loss(void *p) {
    KtoCtx *c = p;
    PrefOut out;
    assert_int_equal(algo_kto(c->s, c->lp, c->ref, c->des, 0.3f, c->o, &out, NULL), 0);
    return out.loss;
}

static void test_kto(void **state) {
    int off[] = {0, 1, 2}, des[] = {1, 0};
    float lp[] = {1, -1}, ref[] = {0, 0}, d[2];
    AlgoSeqs s = {2, 2, off, NULL};
    KtoOpts o;
    algo_kto_defaults(&o);
    o.beta = 1.0f;
    PrefOut out;
    assert_int_equal(algo_kto(&s, lp, ref, des, 0.5f, &o, &out, d), 0);
    near(out.loss, 0.2799830963, 1e-9, "kto");
    near(d[0], -0.1175018561, 1e-8, "kto desirable grad");
    near(d[1], 0.0745732305, 1e-8, "kto undesirable grad");
    near(out.reward_chosen, 1, 0, "kto reward chosen");
    near(out.margin, 2, 0, "kto margin");
    assert_int_equal(algo_kto(&s, lp, ref, des, -3.0f, &o, &out, d), 0);
    near(out.loss, 0.5 * ((1 - 1 / (1 + exp(-1.0))) + (1 - 1 / (1 + exp(-1.0)))), 1e-9, "kto z0 0");
    float ex[] = {50, -50};
    assert_int_equal(algo_kto(&s, ex, ref, des, 0.0f, &o, &out, d), 0);
    finite_out(&out);
    int bad[] = {1, 2};
    assert_int_equal(algo_kto(&s, lp, ref, bad, 0.5f, &o, &out, d), PL_EINVAL);

    float lc[NC], rc[NC], lr[NR], rr[NR], g[NC];
    rand_pairs(lc, rc, lr, rr, 23);
    int d3[] = {1, 0, 1};
    AlgoSeqs sc = {3, NC, ofc, mkc};
    algo_kto_defaults(&o);
    o.desirable_weight = 1.3f;
    KtoCtx c = {&sc, lc, rc, d3, &o};
    assert_int_equal(algo_kto(&sc, lc, rc, d3, 0.3f, &o, &out, g), 0);
    tu_fd_check(lc, NC, g, kto_loss, &c, 1e-3f, 1e-7, "kto");
}

/* ORPO: chosen tokens [ln .5, ln .5] (c = ln .5, odds 1), rejected [ln .25]
 * (r = ln .25, odds 1/3): log_odds = ln 3 = 1.0986122887, logsig(ln 3) =
 * ln .75; lambda 0.1: 0.1 * 0.2876820725 = 0.02876820725; NLL = ln 2; loss
 * = 0.7219153878. dL/dlog_odds = -0.1 sig(-ln 3) = -0.025; dlog_odds/dc =
 * 1/(1 - .5) = 2, per chosen token -0.05/2 - 1/2 (NLL) = -0.525;
 * dlog_odds/dr = -1/(1 - .25), rejected token 0.0333333. */
typedef struct {
    AlgoSeqs *sc, *sr;
    float *lc, *lr;
} OrpoCtx;

static double orpo_loss(void *p) {
    OrpoCtx *c = p;
    PrefOut out;
    assert_int_equal(algo_orpo(c->sc, c->lc, c->sr, c->lr, 0.3f, &out, NULL, NULL), 0);
    return out.loss;
}

static void test_orpo(void **state) {
    int off2[] = {0, 2}, off1[] = {0, 1};
    float c[] = {logf(0.5f), logf(0.5f)}, r[] = {logf(0.25f)}, dc[2], dr[1];
    AlgoSeqs sc = {1, 2, off2, NULL}, sr = {1, 1, off1, NULL};
    PrefOut out;
    assert_int_equal(algo_orpo(&sc, c, &sr, r, 0.1f, &out, dc, dr), 0);
    near(out.log_odds, 1.0986122887, 1e-6, "log odds");
    near(out.nll, log(2.0), 1e-7, "nll");
    near(out.loss, 0.7219153878, 1e-6, "orpo");
    near(dc[0], -0.525, 1e-6, "orpo dchosen");
    near(dr[0], 0.0333333333, 1e-6, "orpo drejected");
    near(out.accuracy, 1, 0, "orpo accuracy");
    /* extreme: c = -50, r = 0 (clamped to -1e-6), and the reverse */
    float a = -50, z = 0;
    AlgoSeqs s1 = {1, 1, off1, NULL};
    assert_int_equal(algo_orpo(&s1, &a, &s1, &z, 0.1f, &out, dc, dr), 0);
    finite_out(&out);
    assert_true(isfinite(dc[0]) && isfinite(dr[0]));
    assert_int_equal(algo_orpo(&s1, &z, &s1, &a, 0.1f, &out, dc, dr), 0);
    finite_out(&out);
    assert_true(isfinite(dc[0]) && isfinite(dr[0]));
    AlgoSeqs e = {0, 0, NULL, NULL};
    assert_int_equal(algo_orpo(&e, NULL, &e, NULL, 0.1f, &out, NULL, NULL), 0);
    near(out.loss, 0, 0, "empty");
    assert_int_equal(algo_orpo(&sc, c, &e, NULL, 0.1f, &out, NULL, NULL), PL_EINVAL);

    float lc[NC], rc[NC], lr[NR], rr[NR], gc[NC], gr[NR];
    rand_pairs(lc, rc, lr, rr, 24);
    AlgoSeqs bc = {3, NC, ofc, mkc}, br = {3, NR, ofr, mkr};
    OrpoCtx cx = {&bc, &br, lc, lr};
    assert_int_equal(algo_orpo(&bc, lc, &br, lr, 0.3f, &out, gc, gr), 0);
    tu_fd_check(lc, NC, gc, orpo_loss, &cx, 1e-3f, 1e-6, "orpo chosen");
    tu_fd_check(lr, NR, gr, orpo_loss, &cx, 1e-3f, 1e-6, "orpo rejected");
}

/* Bradley-Terry: r_c 2, r_r 1, margin .5: -logsig(.5) = 0.4740769842;
 * center 0.01 adds 0.01 * 9 = 0.09 -> 0.5640769842. dL/dr_c = -sig(-.5) +
 * 0.02 * 3 = -0.3175406688, dL/dr_r = 0.3775406688 + 0.06 = 0.4375406688.
 * Extreme margins +-50 stay finite; then finite differences. */
typedef struct {
    float *c, *r, *m;
    int P;
} BtCtx;

static double bt_loss(void *p) {
    BtCtx *b = p;
    PrefOut out;
    assert_int_equal(algo_bt_loss(b->c, b->r, b->m, b->P, 0.05f, &out, NULL, NULL), 0);
    return out.loss;
}

static void test_bt(void **state) {
    float c = 2, r = 1, m = 0.5f, dc, dr;
    PrefOut out;
    assert_int_equal(algo_bt_loss(&c, &r, &m, 1, 0.01f, &out, &dc, &dr), 0);
    near(out.loss, 0.5640769842, 1e-8, "bt"); /* center 0.01f */
    near(dc, -0.3175406688, 1e-7, "bt dc");
    near(dr, 0.4375406688, 1e-7, "bt dr");
    near(out.accuracy, 1, 0, "bt accuracy");
    near(out.margin, 1, 0, "bt margin");
    float hi = 50, lo = -50;
    assert_int_equal(algo_bt_loss(&lo, &hi, NULL, 1, 0.0f, &out, &dc, &dr), 0);
    near(out.loss, 100, 1e-9, "bt extreme");
    assert_true(isfinite(dc) && isfinite(dr));
    assert_int_equal(algo_bt_loss(NULL, NULL, NULL, 0, 0.0f, &out, NULL, NULL), 0);
    near(out.loss, 0, 0, "bt empty");
    assert_int_equal(algo_bt_loss(&c, &r, NULL, -1, 0.0f, &out, NULL, NULL), PL_EINVAL);
    assert_int_equal(algo_bt_loss(&c, &r, NULL, 1, -1.0f, &out, NULL, NULL), PL_EINVAL);

    enum { P = 6 };
    float C[P], R[P], M[P], gc[P], gr[P];
    Rng rg;
    rng_seed(&rg, 25);
    tu_randn(C, P, &rg, 1.5f);
    tu_randn(R, P, &rg, 1.5f);
    tu_randn(M, P, &rg, 0.5f);
    BtCtx b = {C, R, M, P};
    assert_int_equal(algo_bt_loss(C, R, M, P, 0.05f, &out, gc, gr), 0);
    tu_fd_check(C, P, gc, bt_loss, &b, 1e-3f, 1e-7, "bt chosen");
    tu_fd_check(R, P, gr, bt_loss, &b, 1e-3f, 1e-7, "bt rejected");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),   cmocka_unit_test(test_dpo_hand),
        cmocka_unit_test(test_dpo_edges), cmocka_unit_test(test_dpo_fd),
        cmocka_unit_test(test_simpo),   cmocka_unit_test(test_kto),
        cmocka_unit_test(test_orpo),    cmocka_unit_test(test_bt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
