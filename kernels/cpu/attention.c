/* Causal grouped-query attention on CPU over a packed batch.
 *
 * Forward keeps only the log-sum-exp of each query row; backward recomputes
 * the probabilities from it (as flash attention does), so memory stays
 * O(N * NH) plus one (QBLOCK, T) tile per thread, instead of O(sum T^2 NH).
 *
 * The forward and the decode step compute each query row by one function
 * (attn_row), so that a token's attention output, and with it the
 * log-probs, are the same bits in the training forward as when it was
 * decoded over the KV cache. The backward's products run as GEMMs on tiles
 * of QBLOCK queries. Work is split over (sequence, head) pairs with OpenMP;
 * each pair touches disjoint rows of out and lse, and in backward each
 * (sequence, kv-head) pair owns its rows of dk and dv. */
#include "../kernels.h"

#include <cblas.h>
#include <math.h>

#include "common/mathx.h"
#include "kernels/cpu/scratch.h"
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

/* key_scores: s[u] = scale * q . k_u for keys u < n (row stride kd), each
 * summed in one order: lane l of a 16-lane sum takes d = l, l + 16, ... in
 * turn, then the lanes go by reduce16's tree. Sixteen keys at a time (the
 * sums of keys past n stay 0 and are not kept), so that a key's score does
 * not depend on how many keys there are. */
#if defined(__AVX512F__)
#include "kernels/cpu/avx512.h"

/* Lane 4p+q of the result is the sum of a[4q+p], by the same tree for each
 * of the 16 inputs. */
static inline __m512 reduce16(const __m512 a[16]) {
    __m512 b[8], c[4], d[2];
    for (int k = 0; k < 8; k++)
        b[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; k++)
        c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; k++)
        d[k] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
}

static void key_scores(float *s, const float *q, const float *k, int n, int kd, int HS, float scale) {
    for (int u0 = 0; u0 < n; u0 += 16) {
        const int nu = n - u0 < 16 ? n - u0 : 16;
        __m512 acc[16]; /* key 4p + q in acc[4q + p], lane 4p + q after reduce16 */
        for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
        for (int d = 0; d < HS; d += 16) {
            const __mmask16 m = avx512_lanes(HS, d);
            const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
            for (int u = 0; u < nu; u++) {
                const __m512 kv = _mm512_maskz_loadu_ps(m, k + (size_t)(u0 + u) * kd + d);
                acc[(u & 3) * 4 + (u >> 2)] = _mm512_fmadd_ps(qv, kv, acc[(u & 3) * 4 + (u >> 2)]);
            }
        }
        float t[16];
        _mm512_storeu_ps(t, reduce16(acc));
        for (int u = 0; u < nu; u++) s[u0 + u] = t[u] * scale;
    }
}
#else
/* Plain C: lane l of acc sums d = l, l + 16, ...; then the lanes pairwise,
 * 8 apart, 4, 2, 1. */
static void key_scores(float *s, const float *q, const float *k, int n, int kd, int HS, float scale) {
    for (int u = 0; u < n; u++) {
        const float *ku = k + (size_t)u * kd;
        float acc[16] = {0};
        int d = 0;
        for (; d + 16 <= HS; d += 16)
            for (int l = 0; l < 16; l++) acc[l] += q[d + l] * ku[d + l];
        for (int l = 0; d + l < HS; l++) acc[l] += q[d + l] * ku[d + l];
        for (int h = 8; h > 0; h >>= 1)
            for (int l = 0; l < h; l++) acc[l] += acc[l + h];
        s[u] = acc[0] * scale;
    }
}
#endif

#if defined(__AVX512F__)
/* key_scores for R <= 4 query rows at once (row r at q + r * qs, its
 * scores at s + r * ss), for the forward, where consecutive rows see
 * almost the same keys: each key's vectors are loaded once for all rows.
 * Keys go in groups of 4, and the 4 x 4 (row, key) sums of a group are
 * reduced by one reduce16. Every output lane of reduce16 is the same tree
 * over one input vector, whichever of the 16 it is, so a (row, key) score
 * has the bits key_scores gives it: the training forward's scores are the
 * decode's. Row slots past R repeat row 0 and are not kept. */
static void key_scores4(float *s, int ss, const float *q, int qs, int R, const float *k, int n,
                        int kd, int HS, float scale) {
    const float *qr[4];
    for (int r = 0; r < 4; r++) qr[r] = q + (size_t)(r < R ? r : 0) * qs;
    for (int u0 = 0; u0 < n; u0 += 4) {
        const int nu = n - u0 < 4 ? n - u0 : 4;
        const float *kr[4];
        for (int j = 0; j < 4; j++) kr[j] = k + (size_t)(u0 + (j < nu ? j : 0)) * kd;
        __m512 acc[16]; /* row r, key u0 + j in acc[4r + j], lane 4j + r after reduce16 */
        for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
        for (int d = 0; d < HS; d += 16) {
            const __mmask16 m = avx512_lanes(HS, d);
            __m512 kv[4];
            for (int j = 0; j < 4; j++) kv[j] = _mm512_maskz_loadu_ps(m, kr[j] + d);
            for (int r = 0; r < 4; r++) {
                const __m512 qv = _mm512_maskz_loadu_ps(m, qr[r] + d);
                for (int j = 0; j < 4; j++) acc[4 * r + j] = _mm512_fmadd_ps(qv, kv[j], acc[4 * r + j]);
            }
        }
        float t[16];
        _mm512_storeu_ps(t, reduce16(acc));
        for (int r = 0; r < R; r++)
            for (int j = 0; j < nu; j++) s[(size_t)r * ss + u0 + j] = t[4 * j + r] * scale;
    }
}

/* Scores s [0, n) to the exponentials e^(s - max) in place; their sum
 * (lane by lane, then the lanes by one fixed tree) and the max. */
static inline float softmax_exp(float *s, int n, float *mxp) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 vmx = ninf;
    for (int u = 0; u < n; u += 16)
        vmx = _mm512_max_ps(vmx, _mm512_mask_loadu_ps(ninf, avx512_lanes(n, u), s + u));
    const float mx = _mm512_reduce_max_ps(vmx);
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vs = _mm512_setzero_ps();
    for (int u = 0; u < n; u += 16) {
        const __mmask16 m = avx512_lanes(n, u);
        __m512 e = _mm512_maskz_mov_ps(m, vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + u), vm)));
        _mm512_mask_storeu_ps(s + u, m, e);
        vs = _mm512_add_ps(vs, e);
    }
    *mxp = mx;
    return _mm512_reduce_add_ps(vs);
}

enum { PV_VECS = 4 }; /* output vectors of 16 per row kept in registers over the keys */

/* R <= 4 consecutive query rows of one head, row r seeing keys
 * [0, n0 + r): out + r * os (HS) = softmax(scale q_r k^T) v, its
 * log-sum-exp into lse[r * ls] (lse may be NULL); s (4 rows of stride ss)
 * is scratch. Each output is summed over the keys in order, p_u * v_u, as
 * one chain of FMAs: with R = 1 this is the decode's row. Not inlined: the
 * forward and the decode step run these instructions. */
__attribute__((noinline)) static void attn_rows(float *out, int os, float *lse, int ls, float *s,
                                                int ss, const float *q, int qs, int R,
                                                const float *k, const float *v, int n0, int kd,
                                                int HS, float scale) {
    if (R == 1) key_scores(s, q, k, n0, kd, HS, scale);
    else key_scores4(s, ss, q, qs, R, k, n0 + R - 1, kd, HS, scale);
    float inv[4];
    for (int r = 0; r < R; r++) {
        float mx, sum = softmax_exp(s + (size_t)r * ss, n0 + r, &mx);
        inv[r] = 1.0f / sum;
        if (lse) lse[(size_t)r * ls] = mx + logf(sum);
    }
    for (int d0 = 0; d0 < HS; d0 += 16 * PV_VECS) {
        const int nv = (HS - d0 + 15) / 16 < PV_VECS ? (HS - d0 + 15) / 16 : PV_VECS;
        __m512 acc[4][PV_VECS];
        __mmask16 mk[PV_VECS];
        for (int c = 0; c < PV_VECS; c++) {
            mk[c] = c < nv ? avx512_lanes(HS, d0 + 16 * c) : 0;
            for (int r = 0; r < 4; r++) acc[r][c] = _mm512_setzero_ps();
        }
        /* the keys every row sees, then each row's last few */
        for (int u = 0; u < n0; u++) {
            const float *vu = v + (size_t)u * kd + d0;
            __m512 vv[PV_VECS];
            for (int c = 0; c < nv; c++) vv[c] = _mm512_maskz_loadu_ps(mk[c], vu + 16 * c);
            for (int r = 0; r < R; r++) {
                const __m512 p = _mm512_set1_ps(s[(size_t)r * ss + u] * inv[r]);
                for (int c = 0; c < nv; c++) acc[r][c] = _mm512_fmadd_ps(p, vv[c], acc[r][c]);
            }
        }
        for (int r = 1; r < R; r++)
            for (int u = n0; u < n0 + r; u++) {
                const float *vu = v + (size_t)u * kd + d0;
                const __m512 p = _mm512_set1_ps(s[(size_t)r * ss + u] * inv[r]);
                for (int c = 0; c < nv; c++)
                    acc[r][c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mk[c], vu + 16 * c), acc[r][c]);
            }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < nv; c++)
                _mm512_mask_storeu_ps(out + (size_t)r * os + d0 + 16 * c, mk[c], acc[r][c]);
    }
}

static void attn_row(float *out, float *lse, float *s, const float *q, const float *k,
                     const float *v, int n, int kd, int HS, float scale) {
    attn_rows(out, 0, lse, 0, s, 0, q, 0, 1, k, v, n, kd, HS, scale);
}
#else
__attribute__((noinline)) static void attn_row(float *out, float *lse, float *s, const float *q,
                                               const float *k, const float *v, int n, int kd,
                                               int HS, float scale) {
    key_scores(s, q, k, n, kd, HS, scale);
    float mx = -INFINITY;
    for (int u = 0; u < n; u++) mx = s[u] > mx ? s[u] : mx;
    float sum = 0.0f;
    for (int u = 0; u < n; u++) {
        s[u] = exp_neg(s[u] - mx);
        sum += s[u];
    }
    float inv = 1.0f / sum;
    for (int d = 0; d < HS; d++) out[d] = 0.0f;
    for (int u = 0; u < n; u++) {
        const float p = s[u] * inv, *vu = v + (size_t)u * kd;
        for (int d = 0; d < HS; d++) out[d] += p * vu[d];
    }
    if (lse) *lse = mx + logf(sum);
}

static void attn_rows(float *out, int os, float *lse, int ls, float *s, int ss, const float *q,
                      int qs, int R, const float *k, const float *v, int n0, int kd, int HS,
                      float scale) {
    (void)ss;
    for (int r = 0; r < R; r++)
        attn_row(out + (size_t)r * os, lse ? lse + (size_t)r * ls : NULL, s, q + (size_t)r * qs, k,
                 v, n0 + r, kd, HS, scale);
}
#endif

/* Per (sequence, head), each query over the keys it sees. */
void attention_forward(float *out, float *lse, const float *q, const float *k,
                       const float *v, const int *cu_seqlens, int B, int NH, int NKV,
                       int HS) {
    int group = NH / NKV, qd = NH * HS, kd = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int maxT = max_seqlen(cu_seqlens, B);
#pragma omp parallel
    {
        float *S = cpu_scratch(SCRATCH_SCORES, 4 * (size_t)maxT);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                int s0 = cu_seqlens[b], T = cu_seqlens[b + 1] - s0, hk = h / group;
                const float *kb = k + (size_t)s0 * kd + (size_t)hk * HS;
                const float *vb = v + (size_t)s0 * kd + (size_t)hk * HS;
                for (int t = 0; t < T; t += 4) {
                    size_t qi = (size_t)(s0 + t) * qd + (size_t)h * HS;
                    attn_rows(out + qi, qd, lse ? lse + (size_t)(s0 + t) * NH + h : NULL, NH, S,
                              maxT, q + qi, qd, T - t < 4 ? T - t : 4, kb, vb, t + 1, kd, HS, scale);
                }
            }
        }
    }
}

/* One row of a backward tile: p = exp(s - L) over the n keys the row sees
 * (0 past them, up to nk), and dS = p (dP - D) scale in place of dP. */
#if defined(__AVX512F__)
static void probs_grad(float *pr, float *dpr, int nk, int n, float L, float D, float scale) {
    const __m512 vl = _mm512_set1_ps(L), vd = _mm512_set1_ps(D), vsc = _mm512_set1_ps(scale);
    for (int u = 0; u < nk; u += 16) {
        const __mmask16 m = avx512_lanes(nk, u), live = m & avx512_lanes(n, u);
        __m512 p = _mm512_maskz_mov_ps(live, vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, pr + u), vl)));
        _mm512_mask_storeu_ps(pr + u, m, p);
        __m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dpr + u), vd);
        _mm512_mask_storeu_ps(dpr + u, m, _mm512_mul_ps(_mm512_mul_ps(p, g), vsc));
    }
}
#else
static void probs_grad(float *pr, float *dpr, int nk, int n, float L, float D, float scale) {
    for (int u = 0; u < nk; u++) {
        float p = u < n ? exp_neg(pr[u] - L) : 0.0f;
        pr[u] = p;
        dpr[u] = p * (dpr[u] - D) * scale;
    }
}
#endif

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
        float *P = cpu_scratch(SCRATCH_PROBS, (size_t)QBLOCK * maxT);
        float *dP = cpu_scratch(SCRATCH_DPROBS, (size_t)QBLOCK * maxT);
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
                            probs_grad(P + (size_t)r * nk, dP + (size_t)r * nk, nk, t0 + r + 1, L,
                                       D, scale);
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
        float *att = cpu_scratch(SCRATCH_SCORES, (size_t)maxT);
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                int T = lens[b], hk = h / group;
                float *ot = out + (size_t)b * qd + (size_t)h * HS;
                if (T <= 0) {
                    memset(ot, 0, sizeof(float) * (size_t)HS);
                    continue;
                }
                size_t slot = (size_t)(slots ? slots[b] : b);
                const float *kb = kc + slot * maxT * kd + (size_t)hk * HS;
                const float *vb = vc + slot * maxT * kd + (size_t)hk * HS;
                attn_row(ot, NULL, att, q + (size_t)b * qd + (size_t)h * HS, kb, vb, T, kd, HS,
                         scale);
            }
        }
    }
}
