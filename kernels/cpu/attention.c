/* Causal grouped-query attention on CPU over a packed batch.
 *
 * Forward keeps only the log-sum-exp of each query row; backward recomputes
 * the probabilities from it (as flash attention does), so memory stays
 * O(N * NH) plus one (QBLOCK, T) tile per thread, instead of O(sum T^2 NH).
 * The products run as GEMMs on tiles of QBLOCK queries. Work is split over
 * (sequence, head) pairs with OpenMP; each pair touches disjoint rows of out
 * and lse, and in backward each (sequence, kv-head) pair owns its rows of
 * dk and dv. */
#include "../kernels.h"

#include <cblas.h>
#include <math.h>

#include "common/mathx.h"
#include <stdlib.h>
#include <string.h>

#define QBLOCK 128 /* query rows per tile: the score tile is (QBLOCK, keys) */

static int max_seqlen(const int *cu_seqlens, int B) {
    int maxT = 1;
    for (int b = 0; b < B; b++)
        if (cu_seqlens[b + 1] - cu_seqlens[b] > maxT) maxT = cu_seqlens[b + 1] - cu_seqlens[b];
    return maxT;
}

/* S (tq, nk) = scale * Qblk Kblk^T for one head, Qblk = q rows [0, tq) and
 * Kblk = k rows [0, nk) (row strides qd, kd). Query row r sits at position
 * t0 + r and sees keys u <= t0 + r; the callers apply that mask. */
static void scores(float *S, const float *q, const float *k, int tq, int nk, int qd, int kd,
                   int HS, float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, nk, HS, scale, q, qd, k, kd, 0.0f,
                S, nk);
}

/* Per (sequence, head) and tile of QBLOCK queries: scores by GEMM, a row
 * softmax over the visible keys (keeping its log-sum-exp), then out = P V
 * by GEMM. BLAS calls inside the parallel region run single-threaded. */
void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int *cu_seqlens, int B, int NH, int NKV,
                       int HS) {
    int group = NH / NKV, qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int maxT = max_seqlen(cu_seqlens, B);
#pragma omp parallel
    {
        float *S = malloc(sizeof(float) * (size_t)QBLOCK * maxT);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                int s0 = cu_seqlens[b], T = cu_seqlens[b + 1] - s0, hk = h / group;
                const float *kb = k + (size_t)s0 * kd + (size_t)hk * HS;
                const float *vb = v + (size_t)s0 * kd + (size_t)hk * HS;
                for (int t0 = 0; t0 < T; t0 += QBLOCK) {
                    int tq = T - t0 < QBLOCK ? T - t0 : QBLOCK, nk = t0 + tq;
                    size_t qi = (size_t)(s0 + t0) * qd + (size_t)h * HS;
                    scores(S, q + qi, kb, tq, nk, qd, kd, HS, scale);
                    for (int r = 0; r < tq; r++) {
                        float *row = S + (size_t)r * nk;
                        int n = t0 + r + 1; /* visible keys */
                        float mx = -INFINITY, sum = 0.0f;
                        for (int u = 0; u < n; u++) mx = row[u] > mx ? row[u] : mx;
                        for (int u = 0; u < n; u++) {
                            row[u] = exp_neg(row[u] - mx);
                            sum += row[u];
                        }
                        float inv = 1.0f / sum;
                        for (int u = 0; u < n; u++) row[u] *= inv;
                        for (int u = n; u < nk; u++) row[u] = 0.0f;
                        if (lse) lse[(size_t)(s0 + t0 + r) * NH + h] = mx + logf(sum);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, HS, nk, 1.0f, S, nk,
                                vb, kd, 0.0f, out + qi, qd);
                }
            }
        }
        free(S);
    }
}

/* With P = exp(S - lse) (0 on masked keys) and D_t = dO_t . O_t, per tile:
 *   dP = dO V^T,  dS = P (dP - D) scale,
 *   dQ = dS K,  dK += dS^T Q,  dV += P^T dO   (all GEMMs).
 * Parallel over (sequence, kv head): all query heads of a group write the
 * same dk/dv rows, so one thread owns them. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *out, const float *lse, const float *q,
                        const float *k, const float *v, const int *cu_seqlens, int B,
                        int NH, int NKV, int HS) {
    int group = NH / NKV, qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int N = cu_seqlens[B], maxT = max_seqlen(cu_seqlens, B);
    memset(dk, 0, sizeof(float) * (size_t)N * kd);
    memset(dv, 0, sizeof(float) * (size_t)N * kd);
#pragma omp parallel
    {
        float *P = malloc(sizeof(float) * (size_t)QBLOCK * maxT);
        float *dP = malloc(sizeof(float) * (size_t)QBLOCK * maxT);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int hk = 0; hk < NKV; hk++) {
                int s0 = cu_seqlens[b], T = cu_seqlens[b + 1] - s0;
                size_t ki = (size_t)s0 * kd + (size_t)hk * HS;
                for (int h = hk * group; h < (hk + 1) * group; h++) {
                    for (int t0 = 0; t0 < T; t0 += QBLOCK) {
                        int tq = T - t0 < QBLOCK ? T - t0 : QBLOCK, nk = t0 + tq;
                        size_t qi = (size_t)(s0 + t0) * qd + (size_t)h * HS;
                        scores(P, q + qi, k + ki, tq, nk, qd, kd, HS, scale);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, nk, HS, 1.0f,
                                    dout + qi, qd, v + ki, kd, 0.0f, dP, nk);
                        for (int r = 0; r < tq; r++) {
                            const float *o = out + qi + (size_t)r * qd, *g = dout + qi + (size_t)r * qd;
                            float D = 0.0f;
                            for (int d = 0; d < HS; d++) D += g[d] * o[d];
                            float L = lse[(size_t)(s0 + t0 + r) * NH + h];
                            float *pr = P + (size_t)r * nk, *dpr = dP + (size_t)r * nk;
                            for (int u = 0; u < nk; u++) {
                                float p = u <= t0 + r ? exp_neg(pr[u] - L) : 0.0f;
                                pr[u] = p;
                                dpr[u] = p * (dpr[u] - D) * scale; /* dS */
                            }
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, HS, nk, 1.0f, dP,
                                    nk, k + ki, kd, 0.0f, dq + qi, qd);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, tq, 1.0f, dP, nk,
                                    q + qi, qd, 1.0f, dk + ki, kd);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, tq, 1.0f, P, nk,
                                    dout + qi, qd, 1.0f, dv + ki, kd);
                    }
                }
            }
        }
        free(P);
        free(dP);
    }
}

void attention_decode(float *out, const float *q, const float *kc, const float *vc,
                      const int *slots, const int *lens, int B, int NH, int NKV, int HS,
                      int maxT) {
    int group = NH / NKV;
    int qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        float *att = malloc(sizeof(float) * (size_t)maxT);
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                int T = lens[b], hk = h / group;
                float *ot = out + (size_t)b * qd + (size_t)h * HS;
                if (T <= 0) {
                    memset(ot, 0, sizeof(float) * (size_t)HS);
                    continue;
                }
                const float *qt = q + (size_t)b * qd + (size_t)h * HS;
                size_t slot = (size_t)(slots ? slots[b] : b);
                const float *kb = kc + slot * maxT * kd + (size_t)hk * HS;
                const float *vb = vc + slot * maxT * kd + (size_t)hk * HS;
                /* scores = scale * K q, softmax, out = V^T p: two GEMVs */
                cblas_sgemv(CblasRowMajor, CblasNoTrans, T, HS, scale, kb, kd, qt, 1, 0.0f, att, 1);
                float mx = -INFINITY;
                for (int u = 0; u < T; u++) mx = att[u] > mx ? att[u] : mx;
                float sum = 0.0f;
                for (int u = 0; u < T; u++) {
                    att[u] = exp_neg(att[u] - mx);
                    sum += att[u];
                }
                cblas_sgemv(CblasRowMajor, CblasTrans, T, HS, 1.0f / sum, vb, kd, att, 1, 0.0f, ot, 1);
            }
        }
        free(att);
    }
}
