/* test_kernels.c: every CPU kernel of kernels/kernels.h but attention
 * (test_kernels_attention.c's) against an independent reference written
 * here: matmul, rmsnorm, rope, swiglu, log-probs and entropy, embedding.
 *
 * Forward kernels are compared with naive double-precision loops that follow
 * the math literally (no shared code with kernels/cpu/). Backward kernels are
 * compared with central finite differences of a random linear functional
 * f = sum(r * out), whose gradient w.r.t. out is r: so dout = r, and the
 * numerical derivative of f w.r.t. each input element must match the
 * analytic gradient within FD_TOL + FD_REL * |numerical| (kernelutil.h).
 * The step FD_EPS is 1e-2 rather than 1e-3: the forward kernels round in
 * fp32, and that noise divided by a 1e-3 step uses up to half of the
 * tolerance, while the O(eps^2) truncation error at 1e-2 stays below a
 * tenth of it.
 *
 * Dimension letters as in kernels.h. Sizes are small so that finite
 * differences over every element stay fast. All inputs come from fixed seeds. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernelutil.h"

/* ---------------------------------------------------------------- matmul */

/* out (N,OC) = inp (N,IC) @ w^T + bias, literally. */
static void naive_matmul(double *out, const float *inp, const float *w, const float *bias,
                         int N, int IC, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int c = 0; c < IC; c++) s += (double)inp[i * IC + c] * w[o * IC + c];
            out[i * OC + o] = s;
        }
}

/* Proves matmul_forward computes inp @ w^T (+ bias) on every path: few rows
 * (N == 1 with 16-row weight blocks, N a multiple of 4 with 4-row blocks,
 * other N; IC not a multiple of the vector width; OC not a multiple of 4
 * or 16) and the tiled path for many rows (N > 32);
 * overwrites out when accumulate == 0 (out starts as NaN) and adds to it
 * when accumulate != 0. */
static void test_matmul_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 101);
    const int IC = 37, OC = 21, Ns[4] = {5, 1, 8, 40};
    for (int ni = 0; ni < 4; ni++) {
        int N = Ns[ni];
        float *inp = ku_randn_new((size_t)N * IC, &rng, 1.0f);
        float *w = ku_randn_new((size_t)OC * IC, &rng, 0.5f);
        float *bias = ku_randn_new(OC, &rng, 1.0f);
        double *want = ku_dzeros_new((size_t)N * OC);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bb = with_bias ? bias : NULL;
            naive_matmul(want, inp, w, bb, N, IC, OC);

            float *out = ku_nan_new((size_t)N * OC);
            matmul_forward(out, inp, w, bb, N, IC, OC, 0);
            ku_assert_close_d(out, want, (size_t)N * OC, 1e-5, 1e-5, "matmul overwrite");

            float *prev = ku_randn_new((size_t)N * OC, &rng, 1.0f);
            float *acc = ku_copy_new(prev, (size_t)N * OC);
            matmul_forward(acc, inp, w, bb, N, IC, OC, 1);
            double *want_acc = ku_dzeros_new((size_t)N * OC);
            for (int i = 0; i < N * OC; i++) want_acc[i] = prev[i] + want[i];
            ku_assert_close_d(acc, want_acc, (size_t)N * OC, 1e-5, 1e-5, "matmul accumulate");
            free(out), free(prev), free(acc), free(want_acc);
        }
        free(inp), free(w), free(bias), free(want);
    }
}

typedef struct {
    float *inp, *w, *bias, *out; /* (N,IC) (OC,IC) (OC) (N,OC) */
    const float *r;              /* (N,OC) */
    int N, IC, OC;
} MatmulCtx;

static double matmul_f(void *p) {
    MatmulCtx *c = p;
    matmul_forward(c->out, c->inp, c->w, c->bias, c->N, c->IC, c->OC, 0);
    return ku_dot_r(c->r, c->out, (size_t)c->N * c->OC);
}

/* Proves matmul_backward's dinp, dw and dbias are the gradients of
 * sum(r * (inp @ w^T + bias)) (finite differences, N>1 and N==1), that all
 * three accumulate (+=) into what was there, and that NULL gradients are
 * skipped without changing the others. */
static void test_matmul_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 102);
    const int IC = 5, OC = 4, Ns[2] = {3, 1};
    for (int ni = 0; ni < 2; ni++) {
        int N = Ns[ni];
        size_t ni_ = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
        MatmulCtx c = {ku_randn_new(ni_, &rng, 1.0f), ku_randn_new(nw, &rng, 1.0f),
                       ku_randn_new(OC, &rng, 1.0f), ku_nan_new(no), NULL, N, IC, OC};
        float *r = ku_randn_new(no, &rng, 1.0f);
        c.r = r;
        float *dinp0 = ku_randn_new(ni_, &rng, 1.0f), *dw0 = ku_randn_new(nw, &rng, 1.0f);
        float *db0 = ku_randn_new(OC, &rng, 1.0f);
        float *dinp = ku_copy_new(dinp0, ni_), *dw = ku_copy_new(dw0, nw),
              *db = ku_copy_new(db0, OC);
        matmul_backward(dinp, dw, db, r, c.inp, c.w, N, IC, OC);
        float *gi = ku_delta_new(dinp, dinp0, ni_), *gw = ku_delta_new(dw, dw0, nw);
        float *gb = ku_delta_new(db, db0, OC);
        ku_check_fd(matmul_f, &c, c.inp, ni_, gi, FD_EPS, "matmul dinp");
        ku_check_fd(matmul_f, &c, c.w, nw, gw, FD_EPS, "matmul dw");
        ku_check_fd(matmul_f, &c, c.bias, OC, gb, FD_EPS, "matmul dbias");

        /* dw alone, into zeros: same gradient, no crash on the NULLs */
        float *dw_only = calloc(nw, sizeof(float));
        matmul_backward(NULL, dw_only, NULL, r, c.inp, c.w, N, IC, OC);
        tu_assert_close(dw_only, gw, nw, 1e-5f, 1e-5f, "matmul dw alone");

        free(c.inp), free(c.w), free(c.bias), free(c.out), free(r);
        free(dinp0), free(dw0), free(db0), free(dinp), free(dw), free(db);
        free(gi), free(gw), free(gb), free(dw_only);
    }
}

/* --------------------------------------------------------------- rmsnorm */

/* Proves rmsnorm_forward computes x / sqrt(mean(x^2) + eps) * w per row and
 * stores rstd = 1/sqrt(mean(x^2) + eps). */
static void test_rmsnorm_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 201);
    const int N = 4, C = 16;
    const float eps = 1e-5f;
    float *x = ku_randn_new((size_t)N * C, &rng, 2.0f), *w = ku_randn_new(C, &rng, 1.0f);
    float *out = ku_nan_new((size_t)N * C), *rstd = ku_nan_new(N);
    rmsnorm_forward(out, rstd, x, w, N, C, eps);
    double *want = ku_dzeros_new((size_t)N * C), *want_r = ku_dzeros_new(N);
    for (int i = 0; i < N; i++) {
        double ms = 0.0;
        for (int j = 0; j < C; j++) ms += (double)x[i * C + j] * x[i * C + j];
        ms /= C;
        want_r[i] = 1.0 / sqrt(ms + eps);
        for (int j = 0; j < C; j++) want[i * C + j] = x[i * C + j] * want_r[i] * w[j];
    }
    ku_assert_close_d(out, want, (size_t)N * C, 1e-6, 1e-5, "rmsnorm out");
    ku_assert_close_d(rstd, want_r, N, 0.0, 1e-5, "rmsnorm rstd");
    free(x), free(w), free(out), free(rstd), free(want), free(want_r);
}

typedef struct {
    float *x, *w, *out, *rstd; /* (N,C) (C) (N,C) (N) */
    const float *r;
    int N, C;
    float eps;
} RmsCtx;

static double rmsnorm_f(void *p) {
    RmsCtx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, c->eps);
    return ku_dot_r(c->r, c->out, (size_t)c->N * c->C);
}

/* Proves rmsnorm_backward's dinp and dw are the gradients of sum(r * out)
 * (finite differences), that both accumulate (+=), and that dw = NULL still
 * gives the same dinp. */
static void test_rmsnorm_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 202);
    const int N = 3, C = 8;
    size_t n = (size_t)N * C;
    RmsCtx c = {ku_randn_new(n, &rng, 1.0f), ku_randn_new(C, &rng, 1.0f), ku_nan_new(n),
                ku_nan_new(N), NULL, N, C, 1e-5f};
    float *r = ku_randn_new(n, &rng, 1.0f);
    c.r = r;
    rmsnorm_f(&c); /* fills rstd for the analytic pass */
    float *dx0 = ku_randn_new(n, &rng, 1.0f), *dw0 = ku_randn_new(C, &rng, 1.0f);
    float *dx = ku_copy_new(dx0, n), *dw = ku_copy_new(dw0, C);
    rmsnorm_backward(dx, dw, r, c.x, c.w, c.rstd, N, C);
    float *gx = ku_delta_new(dx, dx0, n), *gw = ku_delta_new(dw, dw0, C);
    ku_check_fd(rmsnorm_f, &c, c.x, n, gx, FD_EPS, "rmsnorm dinp");
    ku_check_fd(rmsnorm_f, &c, c.w, C, gw, FD_EPS, "rmsnorm dw");

    rmsnorm_f(&c); /* restore rstd for the unperturbed inputs */
    float *dx_only = calloc(n, sizeof(float));
    rmsnorm_backward(dx_only, NULL, r, c.x, c.w, c.rstd, N, C);
    tu_assert_close(dx_only, gx, n, 1e-5f, 1e-5f, "rmsnorm dinp with dw NULL");

    free(c.x), free(c.w), free(c.out), free(c.rstd), free(r);
    free(dx0), free(dw0), free(dx), free(dw), free(gx), free(gw), free(dx_only);
}

/* ------------------------------------------------------------------ rope */

/* Hugging Face's formulation: out = x * cos + rotate_half(x) * sin, with
 * cos/sin of (HS) built by repeating the HS/2 frequencies twice and
 * rotate_half(x) = cat(-x[HS/2:], x[:HS/2]). */
static void naive_rope_hf(double *out, const float *x, const int *pos, int N, int NHX,
                          int HS, double theta) {
    int half = HS / 2;
    for (int i = 0; i < N; i++)
        for (int h = 0; h < NHX; h++) {
            const float *v = x + ((size_t)i * NHX + h) * HS;
            double *o = out + ((size_t)i * NHX + h) * HS;
            for (int d = 0; d < HS; d++) {
                double ang = pos[i] * pow(theta, -2.0 * (d % half) / HS);
                double rot = d < half ? -(double)v[d + half] : (double)v[d - half];
                o[d] = v[d] * cos(ang) + rot * sin(ang);
            }
        }
}

/* llama2.c / Meta: consecutive pairs (2j, 2j+1) as a complex number times
 * e^(i pos theta^(-2j/HS)). */
static void naive_rope_interleaved(double *out, const float *x, const int *pos, int N,
                                   int NHX, int HS, double theta) {
    for (int i = 0; i < N; i++)
        for (int h = 0; h < NHX; h++) {
            const float *v = x + ((size_t)i * NHX + h) * HS;
            double *o = out + ((size_t)i * NHX + h) * HS;
            for (int j = 0; j < HS / 2; j++) {
                double ang = pos[i] * pow(theta, -2.0 * j / HS);
                double re = v[2 * j], im = v[2 * j + 1];
                o[2 * j] = re * cos(ang) - im * sin(ang);
                o[2 * j + 1] = re * sin(ang) + im * cos(ang);
            }
        }
}

/* Proves rope_forward matches the HF half-rotation formula (interleaved = 0)
 * and the complex-pair formula (interleaved = 1), for several heads and
 * positions up to 1000 (fp32 angles, hence the 5e-4 tolerance), for two
 * bases. */
static void test_rope_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 301);
    const int N = 5, NHX = 3, HS = 8, pos[5] = {0, 1, 2, 7, 1000};
    const float thetas[2] = {10000.0f, 500000.0f};
    size_t n = (size_t)N * NHX * HS;
    float *x = ku_randn_new(n, &rng, 1.0f);
    double *want = ku_dzeros_new(n);
    for (int ti = 0; ti < 2; ti++)
        for (int il = 0; il < 2; il++) {
            float *y = ku_copy_new(x, n), inv[HS / 2];
            rope_freq_plain(inv, HS, thetas[ti]);
            rope_forward(y, pos, N, NHX, HS, (RopeFreq){inv, 1.0f}, il);
            if (il) naive_rope_interleaved(want, x, pos, N, NHX, HS, thetas[ti]);
            else naive_rope_hf(want, x, pos, N, NHX, HS, thetas[ti]);
            ku_assert_close_d(y, want, n, 5e-4, 1e-4, il ? "rope interleaved" : "rope hf");
            free(y);
        }
    free(x), free(want);
}

typedef struct {
    const float *x;
    float *y; /* scratch copy rotated in place */
    const float *r;
    const int *pos;
    int N, NHX, HS, interleaved;
    RopeFreq f;
} RopeCtx;

static double rope_f(void *p) {
    RopeCtx *c = p;
    size_t n = (size_t)c->N * c->NHX * c->HS;
    memcpy(c->y, c->x, sizeof(float) * n);
    rope_forward(c->y, c->pos, c->N, c->NHX, c->HS, c->f, c->interleaved);
    return ku_dot_r(c->r, c->y, n);
}

/* Proves rope_backward undoes rope_forward (rotation is orthogonal) and is
 * its gradient: rope_backward(r) equals the finite-difference gradient of
 * sum(r * rope(x)), in both conventions, and with a scale on cos and sin
 * (YaRN's), where backward(forward(x)) is scale^2 x. */
static void test_rope_backward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 302);
    const int N = 4, NHX = 2, HS = 6, pos[4] = {3, 0, 17, 250};
    size_t n = (size_t)N * NHX * HS;
    float inv[HS / 2];
    rope_freq_plain(inv, HS, 10000.0f);
    const float scales[2] = {1.0f, 1.25f};
    for (int si = 0; si < 2; si++)
        for (int il = 0; il < 2; il++) {
            RopeFreq f = {inv, scales[si]};
            float *x = ku_randn_new(n, &rng, 1.0f), *r = ku_randn_new(n, &rng, 1.0f);
            float *y = ku_copy_new(x, n), *want = ku_copy_new(x, n);
            for (size_t i = 0; i < n; i++) want[i] *= scales[si] * scales[si];
            rope_forward(y, pos, N, NHX, HS, f, il);
            rope_backward(y, pos, N, NHX, HS, f, il);
            tu_assert_close(y, want, n, 1e-5f, 1e-5f, "rope backward(forward(x)) == scale^2 x");

            float *g = ku_copy_new(r, n);
            rope_backward(g, pos, N, NHX, HS, f, il);
            RopeCtx c = {x, y, r, pos, N, NHX, HS, il, f};
            ku_check_fd(rope_f, &c, x, n, g, FD_EPS, il ? "rope interleaved dx" : "rope hf dx");
            free(x), free(r), free(y), free(g), free(want);
        }
}

/* ---------------------------------------------------------------- swiglu */

/* Proves swiglu_forward = g * sigmoid(g) * up, including saturated gates
 * (|g| = 30) where exp overflows in one direction. */
static void test_swiglu_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 401);
    const size_t n = 40;
    float *g = ku_randn_new(n, &rng, 3.0f), *u = ku_randn_new(n, &rng, 1.0f);
    g[0] = 30.0f, g[1] = -30.0f, g[2] = 0.0f, g[3] = -100.0f;
    float *out = ku_nan_new(n);
    swiglu_forward(out, g, u, n);
    double *want = ku_dzeros_new(n);
    for (size_t i = 0; i < n; i++) want[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    ku_assert_close_d(out, want, n, 1e-6, 1e-5, "swiglu out");
    free(g), free(u), free(out), free(want);
}

typedef struct {
    float *g, *u, *out;
    const float *r;
    size_t n;
} SwigluCtx;

static double swiglu_f(void *p) {
    SwigluCtx *c = p;
    swiglu_forward(c->out, c->g, c->u, c->n);
    return ku_dot_r(c->r, c->out, c->n);
}

/* Proves swiglu_backward's dgate and dup are the gradients of
 * sum(r * swiglu(g, u)) (finite differences) and overwrite their buffers. */
static void test_swiglu_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 402);
    const size_t n = 30;
    SwigluCtx c = {ku_randn_new(n, &rng, 2.0f), ku_randn_new(n, &rng, 1.0f), ku_nan_new(n), NULL,
                   n};
    float *r = ku_randn_new(n, &rng, 1.0f);
    c.r = r;
    float *dg = ku_nan_new(n), *du = ku_nan_new(n);
    swiglu_backward(dg, du, r, c.g, c.u, n);
    ku_check_fd(swiglu_f, &c, c.g, n, dg, FD_EPS, "swiglu dgate");
    ku_check_fd(swiglu_f, &c, c.u, n, du, FD_EPS, "swiglu dup");
    free(c.g), free(c.u), free(c.out), free(r), free(dg), free(du);
}

/* ---------------------------------------------------- log-probs, entropy */

enum { LN = 6, LV = 37 };
static const int l_targets[LN] = {3, -1, 0, 36, 10, -1};
static const float l_inv_temps[2] = {1.0f, 1.0f / 0.7f};

/* Proves logprob_forward's lse, entropy and log-prob of the target match the
 * softmax of logits * inv_temp computed naively in double, at temperatures 1
 * and 0.7; rows with target -1 get lp = 0 exactly; ent = NULL is allowed and
 * changes neither lp nor lse. */
static void test_logprob_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 601);
    float *logits = ku_randn_new((size_t)LN * LV, &rng, 3.0f);
    for (int ti = 0; ti < 2; ti++) {
        float it = l_inv_temps[ti];
        float *lp = ku_nan_new(LN), *ent = ku_nan_new(LN), *lse = ku_nan_new(LN);
        logprob_forward(lp, ent, lse, logits, l_targets, LN, LV, it);
        double want_lp[LN], want_ent[LN], want_lse[LN];
        for (int i = 0; i < LN; i++) {
            double z[LV], mx = -INFINITY, s = 0.0, ez = 0.0;
            for (int j = 0; j < LV; j++) {
                z[j] = (double)logits[i * LV + j] * it;
                if (z[j] > mx) mx = z[j];
            }
            for (int j = 0; j < LV; j++) s += exp(z[j] - mx);
            want_lse[i] = mx + log(s);
            for (int j = 0; j < LV; j++) ez += exp(z[j] - want_lse[i]) * z[j];
            want_ent[i] = want_lse[i] - ez;
            want_lp[i] = l_targets[i] >= 0 ? z[l_targets[i]] - want_lse[i] : 0.0;
        }
        ku_assert_close_d(lse, want_lse, LN, 1e-5, 1e-5, "logprob lse");
        ku_assert_close_d(ent, want_ent, LN, 1e-5, 1e-5, "logprob ent");
        ku_assert_close_d(lp, want_lp, LN, 1e-5, 1e-5, "logprob lp");
        for (int i = 0; i < LN; i++)
            if (l_targets[i] < 0) assert_true(lp[i] == 0.0f);

        float *lp2 = ku_nan_new(LN), *lse2 = ku_nan_new(LN);
        logprob_forward(lp2, NULL, lse2, logits, l_targets, LN, LV, it);
        tu_assert_close(lp2, lp, LN, 0.0f, 0.0f, "logprob lp with ent NULL");
        tu_assert_close(lse2, lse, LN, 0.0f, 0.0f, "logprob lse with ent NULL");
        free(lp), free(ent), free(lse), free(lp2), free(lse2);
    }
    free(logits);
}

typedef struct {
    float *logits, *lp, *ent, *lse;
    const float *a, *e; /* (N) weights of lp and ent; either may be NULL */
    float inv_temp;
} LogprobCtx;

static double logprob_f(void *p) {
    LogprobCtx *c = p;
    logprob_forward(c->lp, c->ent, c->lse, c->logits, l_targets, LN, LV, c->inv_temp);
    double f = 0.0;
    if (c->a) f += ku_dot_r(c->a, c->lp, LN);
    if (c->e) f += ku_dot_r(c->e, c->ent, LN);
    return f;
}

/* Proves logprob_backward gives d(sum a*lp + e*ent)/dlogits (finite
 * differences) at temperatures 1 and 0.7, with ignored targets (-1)
 * contributing no lp gradient; dlogits is overwritten; dlp = NULL is the
 * entropy-only gradient (FD-checked) and dent = NULL the lp-only one, and the
 * two add up to the full gradient. */
static void test_logprob_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 602);
    size_t n = (size_t)LN * LV;
    for (int ti = 0; ti < 2; ti++) {
        float it = l_inv_temps[ti];
        float *a = ku_randn_new(LN, &rng, 1.0f), *e = ku_randn_new(LN, &rng, 1.0f);
        LogprobCtx c = {ku_randn_new(n, &rng, 2.0f), ku_nan_new(LN), ku_nan_new(LN), ku_nan_new(LN),
                        a, e, it};
        logprob_f(&c);
        float *g = ku_nan_new(n), *g_ent = ku_nan_new(n), *g_lp = ku_nan_new(n);
        logprob_backward(g, a, e, c.logits, c.lse, c.ent, l_targets, LN, LV, it);
        logprob_backward(g_ent, NULL, e, c.logits, c.lse, c.ent, l_targets, LN, LV, it);
        logprob_backward(g_lp, a, NULL, c.logits, c.lse, c.ent, l_targets, LN, LV, it);

        ku_check_fd(logprob_f, &c, c.logits, n, g, FD_EPS, "logprob dlogits (lp + ent)");
        c.a = NULL;
        ku_check_fd(logprob_f, &c, c.logits, n, g_ent, FD_EPS, "logprob dlogits (ent only)");
        float *sum = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) sum[i] = g_ent[i] + g_lp[i];
        tu_assert_close(sum, g, n, 1e-6f, 1e-5f, "logprob NULL parts add up");
        for (int i = 0; i < LN; i++) /* rows with no target: lp part is zero */
            if (l_targets[i] < 0)
                for (int j = 0; j < LV; j++) assert_true(g_lp[i * LV + j] == 0.0f);

        free(a), free(e), free(c.logits), free(c.lp), free(c.ent), free(c.lse);
        free(g), free(g_ent), free(g_lp), free(sum);
    }
}

/* ------------------------------------------------------------- embedding */

enum { EV = 5, EC = 4, EN = 6 };
static const int e_ids[EN] = {2, 0, 2, 4, 2, 1}; /* id 2 three times, 3 never */

typedef struct {
    float *table, *out;
    const float *r;
} EmbCtx;

static double embedding_f(void *p) {
    EmbCtx *c = p;
    embedding_forward(c->out, e_ids, c->table, EN, EC);
    return ku_dot_r(c->r, c->out, (size_t)EN * EC);
}

/* Proves embedding_forward copies table rows by id (repeated ids included),
 * and embedding_backward adds every dout row into its id's row (+=, so a
 * repeated id sums all its rows and an unused id keeps its old gradient),
 * which is the finite-difference gradient of sum(r * out). */
static void test_embedding(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 701);
    EmbCtx c = {ku_randn_new((size_t)EV * EC, &rng, 1.0f), ku_nan_new((size_t)EN * EC), NULL};
    float *r = ku_randn_new((size_t)EN * EC, &rng, 1.0f);
    c.r = r;
    embedding_forward(c.out, e_ids, c.table, EN, EC);
    for (int i = 0; i < EN; i++)
        assert_memory_equal(c.out + i * EC, c.table + e_ids[i] * EC, sizeof(float) * EC);

    float *d0 = ku_randn_new((size_t)EV * EC, &rng, 1.0f);
    float *d = ku_copy_new(d0, (size_t)EV * EC);
    embedding_backward(d, r, e_ids, EN, EC);
    double want[EV * EC];
    for (int i = 0; i < EV * EC; i++) want[i] = d0[i];
    for (int i = 0; i < EN; i++)
        for (int j = 0; j < EC; j++) want[e_ids[i] * EC + j] += r[i * EC + j];
    ku_assert_close_d(d, want, (size_t)EV * EC, 1e-6, 1e-6, "embedding backward");

    float *g = ku_delta_new(d, d0, (size_t)EV * EC);
    ku_check_fd(embedding_f, &c, c.table, (size_t)EV * EC, g, FD_EPS, "embedding dtable");
    free(c.table), free(c.out), free(r), free(d0), free(d), free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_forward),
        cmocka_unit_test(test_matmul_backward_fd),
        cmocka_unit_test(test_rmsnorm_forward),
        cmocka_unit_test(test_rmsnorm_backward_fd),
        cmocka_unit_test(test_rope_forward),
        cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_swiglu_forward),
        cmocka_unit_test(test_swiglu_backward_fd),
        cmocka_unit_test(test_logprob_forward),
        cmocka_unit_test(test_logprob_backward_fd),
        cmocka_unit_test(test_embedding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
