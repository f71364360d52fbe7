/* test_kernels_attention.c: the CPU attention kernels of kernels/kernels.h
 * (attention_forward, attention_backward, attention_decode) against an
 * independent reference written here: causal softmax attention with
 * grouped-query heads over packed sequences, as naive double-precision
 * loops (no shared code with kernels/cpu/), and central finite differences
 * of sum(r * out) as in test_kernels.c (kernelutil.h).
 *
 * Proves: the forward pass and its log-sum-exp per packed sequence (no
 * attention across sequence boundaries); dq, dk and dv as the gradients,
 * GQA's shared kv heads summing both query heads; query tiles that meet
 * without gaps or overlaps on sequences longer than one tile, forward and
 * backward; decode against a KV cache (through slots too) equal to the
 * forward's last row, never reading past a sequence's length (an empty
 * one gives zeros).
 *
 * Dimension letters as in kernels.h. All inputs come from fixed seeds. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernelutil.h"

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
    float *q = ku_randn_new(nq, &rng, 1.0f), *k = ku_randn_new(nk, &rng, 1.0f);
    float *v = ku_randn_new(nk, &rng, 1.0f);
    float *out = ku_nan_new(nq), *lse = ku_nan_new((size_t)AN * ANH);
    attention_forward(out, lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);
    double *want = ku_dzeros_new(nq), *want_lse = ku_dzeros_new((size_t)AN * ANH);
    naive_attention(want, want_lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);
    ku_assert_close_d(out, want, nq, 1e-5, 1e-4, "attention out");
    ku_assert_close_d(lse, want_lse, (size_t)AN * ANH, 1e-5, 1e-5, "attention lse");
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
    return ku_dot_r(c->r, c->out, (size_t)AN * ANH * AHS);
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
    AttCtx c = {ku_randn_new(nq, &rng, 1.0f), ku_randn_new(nk, &rng, 1.0f),
                ku_randn_new(nk, &rng, 1.0f), ku_nan_new(nq), ku_nan_new((size_t)AN * ANH), NULL};
    float *r = ku_randn_new(nq, &rng, 1.0f);
    c.r = r;
    attention_f(&c);
    float *dq = ku_nan_new(nq), *dk = ku_nan_new(nk), *dv = ku_nan_new(nk);
    attention_backward(dq, dk, dv, r, c.out, c.lse, c.q, c.k, c.v, a_cu, AB, ANH, ANKV, AHS);
    ku_check_fd(attention_f, &c, c.q, nq, dq, FD_EPS, "attention dq");
    ku_check_fd(attention_f, &c, c.k, nk, dk, FD_EPS, "attention dk");
    ku_check_fd(attention_f, &c, c.v, nk, dv, FD_EPS, "attention dv");
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
    float *q = ku_randn_new(nq, &rng, 1.0f), *k = ku_randn_new(nk, &rng, 1.0f);
    float *v = ku_randn_new(nk, &rng, 1.0f), *g = ku_randn_new(nq, &rng, 1.0f);
    float *out = ku_nan_new(nq), *lse = ku_nan_new((size_t)LN * ANH);
    attention_forward(out, lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    double *want = ku_dzeros_new(nq), *want_lse = ku_dzeros_new((size_t)LN * ANH);
    naive_attention(want, want_lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    ku_assert_close_d(out, want, nq, 1e-5, 1e-4, "long attention out");
    ku_assert_close_d(lse, want_lse, (size_t)LN * ANH, 1e-5, 1e-5, "long attention lse");
    float *dq = ku_nan_new(nq), *dk = ku_nan_new(nk), *dv = ku_nan_new(nk);
    attention_backward(dq, dk, dv, g, out, lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    double *wq = ku_dzeros_new(nq), *wk = ku_dzeros_new(nk), *wv = ku_dzeros_new(nk);
    naive_attention_backward(wq, wk, wv, g, want, want_lse, q, k, v, cu, LB, ANH, ANKV, AHS);
    ku_assert_close_d(dq, wq, nq, 1e-4, 1e-3, "long attention dq");
    ku_assert_close_d(dk, wk, nk, 1e-4, 1e-3, "long attention dk");
    ku_assert_close_d(dv, wv, nk, 1e-4, 1e-3, "long attention dv");
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
    float *q = ku_randn_new(nq, &rng, 1.0f), *k = ku_randn_new(nk, &rng, 1.0f);
    float *v = ku_randn_new(nk, &rng, 1.0f);
    float *out = ku_nan_new(nq), *lse = ku_nan_new((size_t)AN * ANH);
    attention_forward(out, lse, q, k, v, a_cu, AB, ANH, ANKV, AHS);

    float *kc = ku_nan_new((size_t)AB * maxT * kd), *vc = ku_nan_new((size_t)AB * maxT * kd);
    float *qdec = ku_nan_new((size_t)AB * qd), *odec = ku_nan_new((size_t)AB * qd);
    float *want = ku_nan_new((size_t)AB * qd);
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
    float *kr = ku_nan_new((size_t)AB * maxT * kd), *vr = ku_nan_new((size_t)AB * maxT * kd);
    int slots[AB];
    for (int b = 0; b < AB; b++) {
        slots[b] = AB - 1 - b;
        memcpy(kr + (size_t)slots[b] * maxT * kd, kc + (size_t)b * maxT * kd, sizeof(float) * maxT * kd);
        memcpy(vr + (size_t)slots[b] * maxT * kd, vc + (size_t)b * maxT * kd, sizeof(float) * maxT * kd);
    }
    float *oslot = ku_nan_new((size_t)AB * qd);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_forward),
        cmocka_unit_test(test_attention_backward_fd),
        cmocka_unit_test(test_attention_long_tiles),
        cmocka_unit_test(test_attention_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
