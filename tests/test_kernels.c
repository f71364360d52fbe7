/* test_kernels.c: every CPU kernel of kernels/kernels.h against an independent
 * reference written here.
 *
 * Forward kernels are compared with naive double-precision loops that follow
 * the math literally (no shared code with kernels/cpu/). Backward kernels are
 * compared with central finite differences of a random linear functional
 * f = sum(r * out), whose gradient w.r.t. out is r: so dout = r, and the
 * numerical derivative of f w.r.t. each input element must match the
 * analytic gradient within FD_TOL + FD_REL * |numerical|. The step FD_EPS
 * is 1e-2 rather than 1e-3: the forward kernels round in fp32, and that
 * noise divided by a 1e-3 step uses up to half of the tolerance, while the
 * O(eps^2) truncation error at 1e-2 stays below a tenth of it.
 *
 * Dimension letters as in kernels.h. Sizes are small so that finite
 * differences over every element stay fast. All inputs come from fixed seeds. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define FD_EPS 1e-2f
#define FD_TOL 1e-3
#define FD_REL 1e-2

/* ---------------------------------------------------------------- helpers */

static float *randn_new(size_t n, Rng *rng, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    tu_randn(x, n, rng, scale);
    return x;
}

/* A buffer full of NaN: an output that must be overwritten starts this way,
 * so any element a kernel forgets to write (or reads) shows up. */
static float *nan_new(size_t n) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static float *copy_new(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static double *dzeros_new(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* sum r_i x_i in double: the random linear functional. */
static double dot_r(const float *r, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * x[i];
    return s;
}

/* |got - want| <= tol + rel * |want| for every element, else fails with the
 * first bad index. */
static void assert_close_d(const float *got, const double *want, size_t n, double tol,
                           double rel, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double lim = tol + rel * fabs(want[i]);
        if (!(fabs((double)got[i] - want[i]) <= lim))
            fail_msg("%s: index %zu: got %.9g want %.9g (limit %.3g)", what, i, got[i],
                     want[i], lim);
    }
}

/* after - before: what a kernel added to an accumulating buffer. */
static float *delta_new(const float *after, const float *before, size_t n) {
    float *d = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = after[i] - before[i];
    return d;
}

/* The functional f(ctx) re-runs a forward kernel on the current inputs. */
typedef double (*Functional)(void *ctx);

/* Central differences of f w.r.t. every element of x (perturbed in place
 * and restored), compared with grad. The step actually taken in float is
 * used as the denominator. */
static void check_fd(Functional f, void *ctx, float *x, size_t n, const float *grad,
                     float eps, const char *what) {
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i], xp = x0 + eps, xm = x0 - eps;
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = x0;
        double num = (fp - fm) / ((double)xp - (double)xm);
        double lim = FD_TOL + FD_REL * fabs(num);
        if (!(fabs((double)grad[i] - num) <= lim))
            fail_msg("%s: FD index %zu: analytic %.7g numerical %.7g (limit %.3g)", what,
                     i, grad[i], num, lim);
    }
}

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
        float *inp = randn_new((size_t)N * IC, &rng, 1.0f);
        float *w = randn_new((size_t)OC * IC, &rng, 0.5f);
        float *bias = randn_new(OC, &rng, 1.0f);
        double *want = dzeros_new((size_t)N * OC);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bb = with_bias ? bias : NULL;
            naive_matmul(want, inp, w, bb, N, IC, OC);

            float *out = nan_new((size_t)N * OC);
            matmul_forward(out, inp, w, bb, N, IC, OC, 0);
            assert_close_d(out, want, (size_t)N * OC, 1e-5, 1e-5, "matmul overwrite");

            float *prev = randn_new((size_t)N * OC, &rng, 1.0f);
            float *acc = copy_new(prev, (size_t)N * OC);
            matmul_forward(acc, inp, w, bb, N, IC, OC, 1);
            double *want_acc = dzeros_new((size_t)N * OC);
            for (int i = 0; i < N * OC; i++) want_acc[i] = prev[i] + want[i];
            assert_close_d(acc, want_acc, (size_t)N * OC, 1e-5, 1e-5, "matmul accumulate");
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
    return dot_r(c->r, c->out, (size_t)c->N * c->OC);
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
        MatmulCtx c = {randn_new(ni_, &rng, 1.0f), randn_new(nw, &rng, 1.0f),
                       randn_new(OC, &rng, 1.0f), nan_new(no), NULL, N, IC, OC};
        float *r = randn_new(no, &rng, 1.0f);
        c.r = r;
        float *dinp0 = randn_new(ni_, &rng, 1.0f), *dw0 = randn_new(nw, &rng, 1.0f);
        float *db0 = randn_new(OC, &rng, 1.0f);
        float *dinp = copy_new(dinp0, ni_), *dw = copy_new(dw0, nw), *db = copy_new(db0, OC);
        matmul_backward(dinp, dw, db, r, c.inp, c.w, N, IC, OC);
        float *gi = delta_new(dinp, dinp0, ni_), *gw = delta_new(dw, dw0, nw);
        float *gb = delta_new(db, db0, OC);
        check_fd(matmul_f, &c, c.inp, ni_, gi, FD_EPS, "matmul dinp");
        check_fd(matmul_f, &c, c.w, nw, gw, FD_EPS, "matmul dw");
        check_fd(matmul_f, &c, c.bias, OC, gb, FD_EPS, "matmul dbias");

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
    float *x = randn_new((size_t)N * C, &rng, 2.0f), *w = randn_new(C, &rng, 1.0f);
    float *out = nan_new((size_t)N * C), *rstd = nan_new(N);
    rmsnorm_forward(out, rstd, x, w, N, C, eps);
    double *want = dzeros_new((size_t)N * C), *want_r = dzeros_new(N);
    for (int i = 0; i < N; i++) {
        double ms = 0.0;
        for (int j = 0; j < C; j++) ms += (double)x[i * C + j] * x[i * C + j];
        ms /= C;
        want_r[i] = 1.0 / sqrt(ms + eps);
        for (int j = 0; j < C; j++) want[i * C + j] = x[i * C + j] * want_r[i] * w[j];
    }
    assert_close_d(out, want, (size_t)N * C, 1e-6, 1e-5, "rmsnorm out");
    assert_close_d(rstd, want_r, N, 0.0, 1e-5, "rmsnorm rstd");
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
    return dot_r(c->r, c->out, (size_t)c->N * c->C);
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
    RmsCtx c = {randn_new(n, &rng, 1.0f), randn_new(C, &rng, 1.0f), nan_new(n),
                nan_new(N), NULL, N, C, 1e-5f};
    float *r = randn_new(n, &rng, 1.0f);
    c.r = r;
    rmsnorm_f(&c); /* fills rstd for the analytic pass */
    float *dx0 = randn_new(n, &rng, 1.0f), *dw0 = randn_new(C, &rng, 1.0f);
    float *dx = copy_new(dx0, n), *dw = copy_new(dw0, C);
    rmsnorm_backward(dx, dw, r, c.x, c.w, c.rstd, N, C);
    float *gx = delta_new(dx, dx0, n), *gw = delta_new(dw, dw0, C);
    check_fd(rmsnorm_f, &c, c.x, n, gx, FD_EPS, "rmsnorm dinp");
    check_fd(rmsnorm_f, &c, c.w, C, gw, FD_EPS, "rmsnorm dw");

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
    float *x = randn_new(n, &rng, 1.0f);
    double *want = dzeros_new(n);
    for (int ti = 0; ti < 2; ti++)
        for (int il = 0; il < 2; il++) {
            float *y = copy_new(x, n), inv[HS / 2];
            rope_freq_plain(inv, HS, thetas[ti]);
            rope_forward(y, pos, N, NHX, HS, (RopeFreq){inv, 1.0f}, il);
            if (il) naive_rope_interleaved(want, x, pos, N, NHX, HS, thetas[ti]);
            else naive_rope_hf(want, x, pos, N, NHX, HS, thetas[ti]);
            assert_close_d(y, want, n, 5e-4, 1e-4, il ? "rope interleaved" : "rope hf");
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
    return dot_r(c->r, c->y, n);
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
            float *x = randn_new(n, &rng, 1.0f), *r = randn_new(n, &rng, 1.0f);
            float *y = copy_new(x, n), *want = copy_new(x, n);
            for (size_t i = 0; i < n; i++) want[i] *= scales[si] * scales[si];
            rope_forward(y, pos, N, NHX, HS, f, il);
            rope_backward(y, pos, N, NHX, HS, f, il);
            tu_assert_close(y, want, n, 1e-5f, 1e-5f, "rope backward(forward(x)) == scale^2 x");

            float *g = copy_new(r, n);
            rope_backward(g, pos, N, NHX, HS, f, il);
            RopeCtx c = {x, y, r, pos, N, NHX, HS, il, f};
            check_fd(rope_f, &c, x, n, g, FD_EPS, il ? "rope interleaved dx" : "rope hf dx");
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
    float *g = randn_new(n, &rng, 3.0f), *u = randn_new(n, &rng, 1.0f);
    g[0] = 30.0f, g[1] = -30.0f, g[2] = 0.0f, g[3] = -100.0f;
    float *out = nan_new(n);
    swiglu_forward(out, g, u, n);
    double *want = dzeros_new(n);
    for (size_t i = 0; i < n; i++) want[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    assert_close_d(out, want, n, 1e-6, 1e-5, "swiglu out");
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
    return dot_r(c->r, c->out, c->n);
}

/* Proves swiglu_backward's dgate and dup are the gradients of
 * sum(r * swiglu(g, u)) (finite differences) and overwrite their buffers. */
static void test_swiglu_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 402);
    const size_t n = 30;
    SwigluCtx c = {randn_new(n, &rng, 2.0f), randn_new(n, &rng, 1.0f), nan_new(n), NULL, n};
    float *r = randn_new(n, &rng, 1.0f);
    c.r = r;
    float *dg = nan_new(n), *du = nan_new(n);
    swiglu_backward(dg, du, r, c.g, c.u, n);
    check_fd(swiglu_f, &c, c.g, n, dg, FD_EPS, "swiglu dgate");
    check_fd(swiglu_f, &c, c.u, n, du, FD_EPS, "swiglu dup");
    free(c.g), free(c.u), free(c.out), free(r), free(dg), free(du);
}

/* ------------------------------------------------------------- attention */

/* The packed batch used by the attention tests: B=3 sequences of lengths
 * 1, 3, 5 (N=9), grouped-query heads NH=4 over NKV=2, HS=8. */
enum { AB = 3, AN = 9, ANH = 4, ANKV = 2, AHS = 8 };
static const int a_cu[AB + 1] = {0, 1, 4, 9};

/* Full causal softmax attention per sequence and head, in double: scores of
 * query t against keys u <= t of its own sequence, query head h reading kv
 * head h / (NH/NKV); lse = log sum exp of the scaled scores. */
static void naive_attention(double *out, double *lse, const float *q, const float *k,
                            const float *v, const int *cu, int B, int NH, int NKV, int HS) {
    int group = NH / NKV;
    double scale = 1.0 / sqrt((double)HS);
    double s[512];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = cu[b]; t < cu[b + 1]; t++) {
                const float *qt = q + (size_t)t * NH * HS + h * HS;
                int nk = t - cu[b] + 1;
                double mx = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    const float *ku = k + (size_t)(cu[b] + j) * NKV * HS + (h / group) * HS;
                    double d = 0.0;
                    for (int e = 0; e < HS; e++) d += (double)qt[e] * ku[e];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double z = 0.0;
                for (int j = 0; j < nk; j++) z += exp(s[j] - mx);
                double *ot = out + (size_t)t * NH * HS + h * HS;
                for (int e = 0; e < HS; e++) {
                    double acc = 0.0;
                    for (int j = 0; j < nk; j++) {
                        const float *vu =
                            v + (size_t)(cu[b] + j) * NKV * HS + (h / group) * HS;
                        acc += exp(s[j] - mx) / z * vu[e];
                    }
                    ot[e] = acc;
                }
                lse[(size_t)t * NH + h] = mx + log(z);
            }
}

/* Proves attention_forward matches full-softmax causal GQA attention computed
 * per packed sequence (no attention across sequence boundaries, a length-1
 * sequence attends only to itself) and that lse is each row's log-sum-exp. */
static void test_attention_forward(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 501);
    size_t nq = (size_t)AN * ANH * AHS, nk = (size_t)AN * ANKV * AHS;
    float *q = randn_new(nq, &rng, 1.0f), *k = randn_new(nk, &rng, 1.0f);
    float *v = randn_new(nk, &rng, 1.0f);
    float *out = nan_new(nq), *lse = nan_new((size_t)AN * ANH);
    attention_forward(out, lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);
    double *want = dzeros_new(nq), *want_lse = dzeros_new((size_t)AN * ANH);
    naive_attention(want, want_lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);
    assert_close_d(out, want, nq, 1e-5, 1e-4, "attention out");
    assert_close_d(lse, want_lse, (size_t)AN * ANH, 1e-5, 1e-5, "attention lse");
    /* the length-1 sequence: output is exactly its own value row */
    for (int h = 0; h < ANH; h++)
        for (int e = 0; e < AHS; e++)
            assert_float_equal(out[h * AHS + e], v[(h / (ANH / ANKV)) * AHS + e], 1e-6);
    free(q), free(k), free(v), free(out), free(lse), free(want), free(want_lse);
}

typedef struct {
    float *q, *k, *v, *out, *lse;
    const float *r;
} AttCtx;

static double attention_f(void *p) {
    AttCtx *c = p;
    attention_forward(c->out, c->lse, c->q, c->k, c->v, a_cu, AB, ANH, ANKV, AHS);
    return dot_r(c->r, c->out, (size_t)AN * ANH * AHS);
}

/* Proves attention_backward's dq, dk, dv are the gradients of sum(r * out)
 * (finite differences) with GQA (two query heads share each kv head, so dk
 * and dv sum over both) over packed sequences of lengths 1, 3, 5, and that
 * all three buffers are overwritten. */
static void test_attention_backward_fd(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 502);
    size_t nq = (size_t)AN * ANH * AHS, nk = (size_t)AN * ANKV * AHS;
    AttCtx c = {randn_new(nq, &rng, 1.0f), randn_new(nk, &rng, 1.0f),
                randn_new(nk, &rng, 1.0f), nan_new(nq), nan_new((size_t)AN * ANH), NULL};
    float *r = randn_new(nq, &rng, 1.0f);
    c.r = r;
    attention_f(&c);
    float *dq = nan_new(nq), *dk = nan_new(nk), *dv = nan_new(nk);
    attention_backward(dq, dk, dv, r, c.out, c.lse, c.q, c.k, c.v, a_cu, AB, ANH, ANKV, AHS);
    check_fd(attention_f, &c, c.q, nq, dq, FD_EPS, "attention dq");
    check_fd(attention_f, &c, c.k, nk, dk, FD_EPS, "attention dk");
    check_fd(attention_f, &c, c.v, nk, dv, FD_EPS, "attention dv");
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(r);
    free(dq), free(dk), free(dv);
}

/* The analytic attention gradient in double, straight from the definition:
 * P_tu = softmax, dV_u += P_tu dO_t, dS_tu = P_tu (dO_t.V_u - dO_t.O_t),
 * dQ_t += scale dS_tu K_u, dK_u += scale dS_tu Q_t. out is the double
 * forward output. */
static void naive_attention_backward(double *dq, double *dk, double *dv, const float *dout,
                                     const double *out, const double *lse, const float *q,
                                     const float *k, const float *v, const int *cu, int B,
                                     int NH, int NKV, int HS) {
    int group = NH / NKV;
    double scale = 1.0 / sqrt((double)HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = cu[b]; t < cu[b + 1]; t++) {
                size_t qi = (size_t)t * NH * HS + h * HS;
                double D = 0.0;
                for (int e = 0; e < HS; e++) D += (double)dout[qi + e] * out[qi + e];
                for (int u = cu[b]; u <= t; u++) {
                    size_t ki = (size_t)u * NKV * HS + (h / group) * HS;
                    double sc = 0.0, dp = 0.0;
                    for (int e = 0; e < HS; e++) {
                        sc += (double)q[qi + e] * k[ki + e];
                        dp += (double)dout[qi + e] * v[ki + e];
                    }
                    double p = exp(sc * scale - lse[(size_t)t * NH + h]);
                    double ds = p * (dp - D) * scale;
                    for (int e = 0; e < HS; e++) {
                        dv[ki + e] += p * dout[qi + e];
                        dq[qi + e] += ds * k[ki + e];
                        dk[ki + e] += ds * q[qi + e];
                    }
                }
            }
}

/* Proves forward and backward on sequences longer than one query tile
 * (lengths 130 and 300 against tiles of 128 rows) against the double
 * definitions: tiles meet without gaps or overlaps, and the causal mask
 * holds inside a tile and across tiles. */
static void test_attention_long_tiles(void **state) {
    (void)state;
    enum { LB = 2, LN = 430 };
    static const int cu[LB + 1] = {0, 130, 430};
    Rng rng;
    rng_seed(&rng, 510);
    size_t nq = (size_t)LN * ANH * AHS, nk = (size_t)LN * ANKV * AHS;
    float *q = randn_new(nq, &rng, 1.0f), *k = randn_new(nk, &rng, 1.0f);
    float *v = randn_new(nk, &rng, 1.0f), *g = randn_new(nq, &rng, 1.0f);
    float *out = nan_new(nq), *lse = nan_new((size_t)LN * ANH);
    attention_forward(out, lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    double *want = dzeros_new(nq), *want_lse = dzeros_new((size_t)LN * ANH);
    naive_attention(want, want_lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    assert_close_d(out, want, nq, 1e-5, 1e-4, "long attention out");
    assert_close_d(lse, want_lse, (size_t)LN * ANH, 1e-5, 1e-5, "long attention lse");
    float *dq = nan_new(nq), *dk = nan_new(nk), *dv = nan_new(nk);
    attention_backward(dq, dk, dv, g, out, lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    double *wq = dzeros_new(nq), *wk = dzeros_new(nk), *wv = dzeros_new(nk);
    naive_attention_backward(wq, wk, wv, g, want, want_lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    assert_close_d(dq, wq, nq, 1e-4, 1e-3, "long attention dq");
    assert_close_d(dk, wk, nk, 1e-4, 1e-3, "long attention dk");
    assert_close_d(dv, wv, nk, 1e-4, 1e-3, "long attention dv");
    free(q), free(k), free(v), free(g), free(out), free(lse), free(want), free(want_lse);
    free(dq), free(dk), free(dv), free(wq), free(wk), free(wv);
}

/* Proves attention_decode of the last token of each sequence against a KV
 * cache (B, maxT, NKV*HS) holding that sequence's keys/values equals the
 * last row of attention_forward over the packed sequence, and that cache
 * slots beyond lens[b] are never read (they hold NaN). */
static void test_attention_decode(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 503);
    const int maxT = 7, qd = ANH * AHS, kd = ANKV * AHS;
    size_t nq = (size_t)AN * qd, nk = (size_t)AN * kd;
    float *q = randn_new(nq, &rng, 1.0f), *k = randn_new(nk, &rng, 1.0f);
    float *v = randn_new(nk, &rng, 1.0f);
    float *out = nan_new(nq), *lse = nan_new((size_t)AN * ANH);
    attention_forward(out, lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);

    float *kc = nan_new((size_t)AB * maxT * kd), *vc = nan_new((size_t)AB * maxT * kd);
    float *qdec = nan_new((size_t)AB * qd), *odec = nan_new((size_t)AB * qd);
    float *want = nan_new((size_t)AB * qd);
    int lens[AB];
    for (int b = 0; b < AB; b++) {
        int s0 = a_cu[b], T = a_cu[b + 1] - s0, last = s0 + T - 1;
        lens[b] = T;
        memcpy(kc + (size_t)b * maxT * kd, k + (size_t)s0 * kd, sizeof(float) * T * kd);
        memcpy(vc + (size_t)b * maxT * kd, v + (size_t)s0 * kd, sizeof(float) * T * kd);
        memcpy(qdec + (size_t)b * qd, q + (size_t)last * qd, sizeof(float) * qd);
        memcpy(want + (size_t)b * qd, out + (size_t)last * qd, sizeof(float) * qd);
    }
    attention_decode(odec, qdec, kc, vc, NULL, lens, AB, ANH, ANKV, AHS, maxT);
    tu_assert_close(odec, want, (size_t)AB * qd, 1e-6f, 1e-5f, "decode vs forward last row");

    /* the same caches stored in reversed slots, read through slots[] */
    float *kr = nan_new((size_t)AB * maxT * kd), *vr = nan_new((size_t)AB * maxT * kd);
    int slots[AB];
    for (int b = 0; b < AB; b++) {
        slots[b] = AB - 1 - b;
        memcpy(kr + (size_t)slots[b] * maxT * kd, kc + (size_t)b * maxT * kd, sizeof(float) * maxT * kd);
        memcpy(vr + (size_t)slots[b] * maxT * kd, vc + (size_t)b * maxT * kd, sizeof(float) * maxT * kd);
    }
    float *oslot = nan_new((size_t)AB * qd);
    attention_decode(oslot, qdec, kr, vr, slots, lens, AB, ANH, ANKV, AHS, maxT);
    tu_assert_close(oslot, odec, (size_t)AB * qd, 0.0f, 0.0f, "decode through slots");
    /* an empty row gives zeros, not NaN */
    lens[0] = 0;
    attention_decode(oslot, qdec, kc, vc, NULL, lens, AB, ANH, ANKV, AHS, maxT);
    for (int i = 0; i < qd; i++) assert_true(oslot[i] == 0.0f);
    free(kr), free(vr), free(oslot);
    free(q), free(k), free(v), free(out), free(lse), free(kc), free(vc);
    free(qdec), free(odec), free(want);
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
    float *logits = randn_new((size_t)LN * LV, &rng, 3.0f);
    for (int ti = 0; ti < 2; ti++) {
        float it = l_inv_temps[ti];
        float *lp = nan_new(LN), *ent = nan_new(LN), *lse = nan_new(LN);
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
        assert_close_d(lse, want_lse, LN, 1e-5, 1e-5, "logprob lse");
        assert_close_d(ent, want_ent, LN, 1e-5, 1e-5, "logprob ent");
        assert_close_d(lp, want_lp, LN, 1e-5, 1e-5, "logprob lp");
        for (int i = 0; i < LN; i++)
            if (l_targets[i] < 0) assert_true(lp[i] == 0.0f);

        float *lp2 = nan_new(LN), *lse2 = nan_new(LN);
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
    if (c->a) f += dot_r(c->a, c->lp, LN);
    if (c->e) f += dot_r(c->e, c->ent, LN);
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
        float *a = randn_new(LN, &rng, 1.0f), *e = randn_new(LN, &rng, 1.0f);
        LogprobCtx c = {randn_new(n, &rng, 2.0f), nan_new(LN), nan_new(LN), nan_new(LN),
                        a, e, it};
        logprob_f(&c);
        float *g = nan_new(n), *g_ent = nan_new(n), *g_lp = nan_new(n);
        logprob_backward(g, a, e, c.logits, c.lse, c.ent, l_targets, LN, LV, it);
        logprob_backward(g_ent, NULL, e, c.logits, c.lse, c.ent, l_targets, LN, LV, it);
        logprob_backward(g_lp, a, NULL, c.logits, c.lse, c.ent, l_targets, LN, LV, it);

        check_fd(logprob_f, &c, c.logits, n, g, FD_EPS, "logprob dlogits (lp + ent)");
        c.a = NULL;
        check_fd(logprob_f, &c, c.logits, n, g_ent, FD_EPS, "logprob dlogits (ent only)");
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
    return dot_r(c->r, c->out, (size_t)EN * EC);
}

/* Proves embedding_forward copies table rows by id (repeated ids included),
 * and embedding_backward adds every dout row into its id's row (+=, so a
 * repeated id sums all its rows and an unused id keeps its old gradient),
 * which is the finite-difference gradient of sum(r * out). */
static void test_embedding(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 701);
    EmbCtx c = {randn_new((size_t)EV * EC, &rng, 1.0f), nan_new((size_t)EN * EC), NULL};
    float *r = randn_new((size_t)EN * EC, &rng, 1.0f);
    c.r = r;
    embedding_forward(c.out, e_ids, c.table, EN, EC);
    for (int i = 0; i < EN; i++)
        assert_memory_equal(c.out + i * EC, c.table + e_ids[i] * EC, sizeof(float) * EC);

    float *d0 = randn_new((size_t)EV * EC, &rng, 1.0f);
    float *d = copy_new(d0, (size_t)EV * EC);
    embedding_backward(d, r, e_ids, EN, EC);
    double want[EV * EC];
    for (int i = 0; i < EV * EC; i++) want[i] = d0[i];
    for (int i = 0; i < EN; i++)
        for (int j = 0; j < EC; j++) want[e_ids[i] * EC + j] += r[i * EC + j];
    assert_close_d(d, want, (size_t)EV * EC, 1e-6, 1e-6, "embedding backward");

    float *g = delta_new(d, d0, (size_t)EV * EC);
    check_fd(embedding_f, &c, c.table, (size_t)EV * EC, g, FD_EPS, "embedding dtable");
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
        cmocka_unit_test(test_attention_forward),
        cmocka_unit_test(test_attention_backward_fd),
        cmocka_unit_test(test_attention_long_tiles),
        cmocka_unit_test(test_attention_decode),
        cmocka_unit_test(test_logprob_forward),
        cmocka_unit_test(test_logprob_backward_fd),
        cmocka_unit_test(test_embedding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
