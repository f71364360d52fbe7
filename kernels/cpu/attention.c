/* Causal grouped-query attention on CPU over a packed batch.
 *
 * Forward keeps only the log-sum-exp of each query row; backward recomputes
 * the probabilities from it (as flash attention does), so memory stays
 * O(N * NH) instead of O(sum T^2 * NH). Work is split over (sequence, head)
 * pairs with OpenMP; each pair touches disjoint rows of out and lse, and in
 * backward each (sequence, kv-head) pair owns its rows of dk and dv. */
#include "../kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int *cu_seqlens, int B, int NH, int NKV,
                       int HS) {
    int group = NH / NKV;
    int qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int maxT = 0;
    for (int b = 0; b < B; b++)
        if (cu_seqlens[b + 1] - cu_seqlens[b] > maxT) maxT = cu_seqlens[b + 1] - cu_seqlens[b];
#pragma omp parallel
    {
        float *att = malloc(sizeof(float) * (size_t)(maxT > 0 ? maxT : 1));
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                int s0 = cu_seqlens[b], T = cu_seqlens[b + 1] - s0;
                int hk = h / group;
                for (int t = 0; t < T; t++) {
                    const float *qt = q + (size_t)(s0 + t) * qd + (size_t)h * HS;
                    float mx = -INFINITY;
                    for (int u = 0; u <= t; u++) {
                        const float *ku = k + (size_t)(s0 + u) * kd + (size_t)hk * HS;
                        float s = 0.0f;
#pragma omp simd reduction(+ : s)
                        for (int d = 0; d < HS; d++) s += qt[d] * ku[d];
                        s *= scale;
                        att[u] = s;
                        if (s > mx) mx = s;
                    }
                    float sum = 0.0f;
                    for (int u = 0; u <= t; u++) {
                        att[u] = expf(att[u] - mx);
                        sum += att[u];
                    }
                    float inv = 1.0f / sum;
                    float *ot = out + (size_t)(s0 + t) * qd + (size_t)h * HS;
                    memset(ot, 0, sizeof(float) * (size_t)HS);
                    for (int u = 0; u <= t; u++) {
                        const float *vu = v + (size_t)(s0 + u) * kd + (size_t)hk * HS;
                        float p = att[u] * inv;
                        for (int d = 0; d < HS; d++) ot[d] += p * vu[d];
                    }
                    if (lse) lse[(size_t)(s0 + t) * NH + h] = mx + logf(sum);
                }
            }
        }
        free(att);
    }
}

/* With P = exp(S - lse), Dq = sum_d dout*out:
 *   dV_u += P_tu dO_t,  dP_tu = dO_t . V_u,  dS_tu = P_tu (dP_tu - Dq_t),
 *   dQ_t += scale dS_tu K_u,  dK_u += scale dS_tu Q_t.
 * Parallel over (sequence, kv head): all query heads of the group write the
 * same dk/dv rows, so they are handled by one thread. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *out, const float *lse, const float *q,
                        const float *k, const float *v, const int *cu_seqlens, int B,
                        int NH, int NKV, int HS) {
    int group = NH / NKV;
    int qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int N = cu_seqlens[B];
    memset(dq, 0, sizeof(float) * (size_t)N * qd);
    memset(dk, 0, sizeof(float) * (size_t)N * kd);
    memset(dv, 0, sizeof(float) * (size_t)N * kd);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int hk = 0; hk < NKV; hk++) {
            int s0 = cu_seqlens[b], T = cu_seqlens[b + 1] - s0;
            for (int h = hk * group; h < (hk + 1) * group; h++) {
                for (int t = 0; t < T; t++) {
                    size_t qi = (size_t)(s0 + t) * qd + (size_t)h * HS;
                    const float *qt = q + qi, *dot = dout + qi, *ot = out + qi;
                    float *dqt = dq + qi;
                    float L = lse[(size_t)(s0 + t) * NH + h];
                    float Dq = 0.0f;
                    for (int d = 0; d < HS; d++) Dq += dot[d] * ot[d];
                    for (int u = 0; u <= t; u++) {
                        size_t ki = (size_t)(s0 + u) * kd + (size_t)hk * HS;
                        const float *ku = k + ki, *vu = v + ki;
                        float s = 0.0f, dp = 0.0f;
#pragma omp simd reduction(+ : s, dp)
                        for (int d = 0; d < HS; d++) {
                            s += qt[d] * ku[d];
                            dp += dot[d] * vu[d];
                        }
                        float p = expf(s * scale - L);
                        float ds = p * (dp - Dq) * scale;
                        float *dku = dk + ki, *dvu = dv + ki;
                        for (int d = 0; d < HS; d++) {
                            dvu[d] += p * dot[d];
                            dqt[d] += ds * ku[d];
                            dku[d] += ds * qt[d];
                        }
                    }
                }
            }
        }
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
                float mx = -INFINITY;
                for (int u = 0; u < T; u++) {
                    const float *ku = kb + (size_t)u * kd;
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int d = 0; d < HS; d++) s += qt[d] * ku[d];
                    s *= scale;
                    att[u] = s;
                    if (s > mx) mx = s;
                }
                float sum = 0.0f;
                for (int u = 0; u < T; u++) {
                    att[u] = expf(att[u] - mx);
                    sum += att[u];
                }
                float inv = 1.0f / sum;
                memset(ot, 0, sizeof(float) * (size_t)HS);
                for (int u = 0; u < T; u++) {
                    const float *vu = vb + (size_t)u * kd;
                    float p = att[u] * inv;
                    for (int d = 0; d < HS; d++) ot[d] += p * vu[d];
                }
            }
        }
        free(att);
    }
}
