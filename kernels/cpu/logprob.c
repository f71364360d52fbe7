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
        if (targets[i] >= 0) dz[targets[i]] += a * inv_temp;
    }
}
