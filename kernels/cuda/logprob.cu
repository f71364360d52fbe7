/* Log-probabilities and entropies from logits on CUDA, one block per row.
 *
 * With z = logits * inv_temp and p = softmax(z) (see kernels/cpu/logprob.c):
 *   lp = z[y] - lse(z),  H = lse(z) - sum p z,
 *   dlp/dz = onehot(y) - p,  dH/dz_j = -p_j (z_j - sum p z).
 * Forward is one pass over the row: each thread keeps an online max m, the
 * sum s of e = exp(z - m) and T = sum e (z - m) over its strided columns,
 * rescaled when the max grows (T <- f (T - s (m' - m)), f = exp(m - m')),
 * then the block combines them the same way. H = log S - T / S: unlike
 * lse - (sum e z) / S it subtracts nothing near lse, so a peaked row keeps
 * its small entropy in fp32 (the CPU twin uses double). Logits of -inf
 * (masked tokens) get p = 0 and no gradient instead of NaN. */
#include "common.cuh"

#define LP_THREADS 256

__global__ void logprob_forward_kernel(float *lp, float *ent, float *lse,
                                       const float *logits, const int *targets, int V,
                                       float inv_temp) {
    size_t i = blockIdx.x;
    const float *z = logits + i * V;
    float m = -INFINITY, s = 0.0f, t = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float zj = z[j] * inv_temp;
        if (zj == -INFINITY) continue; /* masked logit: p = 0, p * z -> 0 */
        if (zj > m) {
            if (s > 0.0f) { /* rescale to the new max; the new term adds e = 1, z - m = 0 */
                float f = expf(m - zj);
                t = f * (t - s * (zj - m));
                s = s * f;
            }
            s += 1.0f;
            m = zj;
        } else {
            float e = expf(zj - m);
            s += e;
            t += e * (zj - m);
        }
    }
    float M = block_max(m);
    float f = m == -INFINITY ? 0.0f : expf(m - M);
    float S = block_sum(s * f);
    float T = block_sum(m == -INFINITY ? 0.0f : f * (t - s * (M - m)));
    if (threadIdx.x == 0) {
        float l = M + logf(S);
        lse[i] = l;
        if (ent) ent[i] = logf(S) - T / S;
        int y = targets[i];
        lp[i] = y >= 0 ? z[y] * inv_temp - l : 0.0f;
    }
}

__global__ void logprob_backward_kernel(float *dlogits, const float *dlp, const float *dent,
                                        const float *logits, const float *lse,
                                        const float *ent, const int *targets, int V,
                                        float inv_temp) {
    size_t i = blockIdx.x;
    const float *z = logits + i * V;
    float *dz = dlogits + i * V;
    int y = targets[i];
    float a = (dlp && y >= 0) ? dlp[i] : 0.0f;
    /* the entropy gradient needs ent (kernels.h): without it, none, as on the CPU */
    float e = dent && ent ? dent[i] : 0.0f;
    float l = lse[i];
    float mean_z = ent ? l - ent[i] : 0.0f; /* sum p z = lse - H */
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float zj = z[j] * inv_temp;
        float p = expf(zj - l);
        float g = 0.0f;
        if (p > 0.0f) { /* p = 0 (a masked -inf logit) contributes nothing */
            g = -a * p;
            if (e != 0.0f) g += -e * p * (zj - mean_z);
        }
        if (j == y) g += a;
        dz[j] = g * inv_temp;
    }
}

extern "C" void logprob_forward_cuda(float *lp, float *ent, float *lse, const float *logits,
                                     const int *targets, int N, int V, float inv_temp) {
    NEED_CTX(ctx);
    if (N <= 0) return;
    logprob_forward_kernel<<<N, LP_THREADS, 0, ctx->stream>>>(lp, ent, lse, logits, targets, V, inv_temp);
    CUDA_LAUNCHED("logprob_forward_kernel");
}

extern "C" void logprob_backward_cuda(float *dlogits, const float *dlp, const float *dent,
                                      const float *logits, const float *lse, const float *ent,
                                      const int *targets, int N, int V, float inv_temp) {
    NEED_CTX(ctx);
    if (N <= 0) return;
    logprob_backward_kernel<<<N, LP_THREADS, 0, ctx->stream>>>(dlogits, dlp, dent, logits, lse, ent, targets,
                                               V, inv_temp);
    CUDA_LAUNCHED("logprob_backward_kernel");
}
