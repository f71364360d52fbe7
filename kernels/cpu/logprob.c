/* Log-probabilities and entropies from logits, row by row on CPU.
 *
 * With z = logits * inv_temp and p = softmax(z):
 *   lp = z[y] - lse(z),  H = lse(z) - sum p z,
 *   dlp/dz = onehot(y) - p,  dH/dz_j = -p_j (z_j - sum p z),
 * and sum p z = lse - H, so backward needs only lse and H from forward.
 * Each row is two passes over V; the softmax is never stored. The entropy
 * is log S - T / S with S = sum e, T = sum e (z - max), e = exp(z - max):
 * lse - (sum e z) / S would subtract two numbers near lse, and lose a
 * peaked row's small entropy to rounding. */
#include "../kernels.h"

#include <float.h>
#include <math.h>

#include "common/mathx.h"

#if defined(__AVX512F__)
#include "kernels/cpu/avx512.h"

/* logprob_row on 16 lanes: the sums in double, lane by lane, then the
 * lanes in a fixed order. */
float logprob_row(const float *z, int V, int target, float inv_temp, float *lse, float *ent) {
    const __m512 it = _mm512_set1_ps(inv_temp), ninf = _mm512_set1_ps(-INFINITY);
    __m512 vmx = ninf;
    for (int j = 0; j < V; j += 16) {
        __m512 zj = _mm512_mask_loadu_ps(ninf, avx512_lanes(V, j), z + j);
        vmx = _mm512_max_ps(vmx, _mm512_mul_ps(zj, it));
    }
    const float mx = _mm512_reduce_max_ps(vmx);
    const __m512 vm = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, t0 = s0, t1 = s0;
    for (int j = 0; j < V; j += 16) {
        __m512 zj = _mm512_mul_ps(_mm512_mask_loadu_ps(ninf, avx512_lanes(V, j), z + j), it);
        /* masked logits (and the lanes past V): p = 0, and 0 * -inf is NaN */
        const __mmask16 live = _mm512_cmp_ps_mask(zj, ninf, _CMP_NEQ_OQ);
        __m512 d = _mm512_maskz_sub_ps(live, zj, vm), e = _mm512_maskz_mov_ps(live, vexp(d));
        __m512d e0 = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
        __m512d e1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
        __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
        __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
        s0 = _mm512_add_pd(s0, e0), s1 = _mm512_add_pd(s1, e1);
        t0 = _mm512_fmadd_pd(e0, d0, t0), t1 = _mm512_fmadd_pd(e1, d1, t1);
    }
    double sa[8], sb[8], ta[8], tb[8], sum = 0.0, t = 0.0;
    _mm512_storeu_pd(sa, s0), _mm512_storeu_pd(sb, s1), _mm512_storeu_pd(ta, t0), _mm512_storeu_pd(tb, t1);
    for (int l = 0; l < 8; l++) sum += sa[l] + sb[l], t += ta[l] + tb[l];
    float l = mx + (float)log(sum);
    if (lse) *lse = l;
    if (ent) *ent = (float)(log(sum) - t / sum);
    return target >= 0 ? z[target] * inv_temp - l : 0.0f;
}
#else
float logprob_row(const float *z, int V, int target, float inv_temp, float *lse, float *ent) {
    float mx = -INFINITY;
    for (int j = 0; j < V; j++)
        if (z[j] * inv_temp > mx) mx = z[j] * inv_temp;
    double sum = 0.0, t = 0.0;
    for (int j = 0; j < V; j++) {
        float zj = z[j] * inv_temp;
        if (zj == -INFINITY) continue; /* masked: p = 0, and 0 * -inf is NaN */
        double e = exp_neg(zj - mx);
        sum += e;
        t += e * ((double)zj - mx);
    }
    float l = mx + (float)log(sum);
    if (lse) *lse = l;
    if (ent) *ent = (float)(log(sum) - t / sum);
    return target >= 0 ? z[target] * inv_temp - l : 0.0f;
}
#endif

void logprob_forward(float *lp, float *ent, float *lse, const float *logits,
                     const int *targets, int N, int V, float inv_temp) {
#pragma omp parallel for if (N > 4)
    for (int i = 0; i < N; i++)
        lp[i] = logprob_row(logits + (size_t)i * V, V, targets[i], inv_temp, &lse[i],
                            ent ? &ent[i] : NULL);
}

void logprob_backward(float *dlogits, const float *dlp, const float *dent,
                      const float *logits, const float *lse, const float *ent,
                      const int *targets, int N, int V, float inv_temp) {
#pragma omp parallel for if (N > 4)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float *dz = dlogits + (size_t)i * V;
        float a = dlp ? dlp[i] : 0.0f;
        float e = dent ? dent[i] : 0.0f;
        if (targets[i] < 0) a = 0.0f;
        float l = lse[i];
        /* sum p z = lse - H */
        if (!ent) e = 0.0f; /* the entropy gradient needs ent (kernels.h) */
        float mean_z = ent ? l - ent[i] : 0.0f;
#if defined(__AVX512F__)
        const __m512 it = _mm512_set1_ps(inv_temp), vl = _mm512_set1_ps(l), ninf = _mm512_set1_ps(-INFINITY);
        const __m512 va = _mm512_set1_ps(-a), ve = _mm512_set1_ps(-e), vmz = _mm512_set1_ps(mean_z);
        const __m512 tiny = _mm512_set1_ps(FLT_MIN);
        for (int j = 0; j < V; j += 16) {
            const __mmask16 m = avx512_lanes(V, j);
            __m512 zj = _mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m, z + j), it);
            const __mmask16 live = _mm512_cmp_ps_mask(zj, ninf, _CMP_NEQ_OQ);
            __m512 p = _mm512_maskz_mov_ps(live, vexp(_mm512_maskz_sub_ps(live, zj, vl)));
            __m512 g = _mm512_mul_ps(va, p);
            if (e != 0.0f) g = _mm512_fmadd_ps(_mm512_mul_ps(ve, p), _mm512_maskz_sub_ps(live, zj, vmz), g);
            g = _mm512_mul_ps(g, it);
            /* no subnormals into the GEMM */
            const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(g), tiny, _CMP_GE_OQ);
            _mm512_mask_storeu_ps(dz + j, m, _mm512_maskz_mov_ps(big, g));
        }
#else
        for (int j = 0; j < V; j++) {
            float zj = z[j] * inv_temp;
            float p = exp_neg(zj - l);
            float g = 0.0f;
            if (p > 0.0f) {
                g = -a * p;
                if (e != 0.0f) g += -e * p * (zj - mean_z);
            }
            g *= inv_temp;
            dz[j] = fabsf(g) < FLT_MIN ? 0.0f : g; /* no subnormals into the GEMM */
        }
#endif
        if (targets[i] >= 0) dz[targets[i]] += a * inv_temp;
    }
}
