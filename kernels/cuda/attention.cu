/* Causal grouped-query attention on CUDA over a packed batch (fp32).
 *
 * Correctness first: one thread block per (query row, head) in forward and
 * decode, and in backward one block per (query row, head) for dq and one per
 * (key row, kv head) for dk and dv, so every output row has a single writer
 * and no atomics are needed. Keys (or queries) are walked in tiles of
 * blockDim rows: each thread scores one row of the tile into shared memory,
 * then the threads sweep the head dimension. As on CPU, forward keeps only
 * the log-sum-exp and backward recomputes the probabilities from it.
 *
 * Shared memory per block is a few rows of HS floats plus one tile. */
#include "common.cuh"

#define ATT_THREADS 128

__device__ __forceinline__ float dot_hs(const float *a, const float *b, int HS) {
    float s = 0.0f;
    for (int d = 0; d < HS; d++) s += a[d] * b[d];
    return s;
}

/* Softmax attention of one query (already in shared qs) over nkeys rows of
 * kb/vb (row stride kd); writes the output row and, if lse, its log-sum-exp.
 * sm: 2*HS + blockDim floats of shared memory. */
__device__ void attend_one(float *orow, float *lse, const float *qrow, const float *kb,
                           const float *vb, int kd, int nkeys, int HS, float scale,
                           float *sm) {
    float *qs = sm, *os = sm + HS, *ps = sm + 2 * HS;
    int tid = threadIdx.x, nt = blockDim.x;
    for (int d = tid; d < HS; d += nt) {
        qs[d] = qrow[d];
        os[d] = 0.0f;
    }
    __syncthreads();
    /* pass 1: per-thread online max and sum, then combined over the block */
    float m = -INFINITY, l = 0.0f;
    for (int u = tid; u < nkeys; u += nt) {
        float s = dot_hs(qs, kb + (size_t)u * kd, HS) * scale;
        if (s > m) {
            l = l * expf(m - s) + 1.0f;
            m = s;
        } else {
            l += expf(s - m);
        }
    }
    float M = block_max(m);
    l = (m == -INFINITY) ? 0.0f : l * expf(m - M);
    float L = block_sum(l);
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    /* pass 2: probabilities tile by tile, accumulated into os */
    for (int u0 = 0; u0 < nkeys; u0 += nt) {
        int u = u0 + tid;
        ps[tid] = u < nkeys ? expf(dot_hs(qs, kb + (size_t)u * kd, HS) * scale - M) * inv
                            : 0.0f;
        __syncthreads();
        int n = min(nt, nkeys - u0);
        for (int d = tid; d < HS; d += nt) {
            float acc = os[d];
            for (int j = 0; j < n; j++) acc += ps[j] * vb[(size_t)(u0 + j) * kd + d];
            os[d] = acc;
        }
        __syncthreads();
    }
    for (int d = tid; d < HS; d += nt) orow[d] = os[d];
    if (lse && tid == 0) *lse = nkeys > 0 ? M + logf(L) : -INFINITY;
}

/* grid (N, NH): query row i = blockIdx.x, head h = blockIdx.y. */
__global__ void attention_forward_kernel(float *out, float *lse, const float *q,
                                         const float *k, const float *v, const int *cu,
                                         int B, int NH, int NKV, int HS, float scale) {
    extern __shared__ float sm[];
    int i = blockIdx.x, h = blockIdx.y;
    int s0 = cu[seq_of_row(cu, B, i)];
    int hk = h / (NH / NKV), qd = NH * HS, kd = NKV * HS;
    size_t qi = (size_t)i * qd + (size_t)h * HS;
    const float *kb = k + (size_t)s0 * kd + (size_t)hk * HS;
    const float *vb = v + (size_t)s0 * kd + (size_t)hk * HS;
    attend_one(out + qi, lse ? lse + (size_t)i * NH + h : NULL, q + qi, kb, vb, kd,
               i - s0 + 1, HS, scale, sm);
}

/* grid (B, NH): the new query of sequence b against its lens[b] cached rows. */
__global__ void attention_decode_kernel(float *out, const float *q, const float *kc,
                                        const float *vc, const int *slots, const int *lens,
                                        int NH, int NKV, int HS, int maxT, float scale) {
    extern __shared__ float sm[];
    int b = blockIdx.x, h = blockIdx.y;
    int hk = h / (NH / NKV), qd = NH * HS, kd = NKV * HS;
    size_t qi = (size_t)b * qd + (size_t)h * HS;
    size_t slot = (size_t)(slots ? slots[b] : b);
    size_t ci = slot * maxT * kd + (size_t)hk * HS;
    attend_one(out + qi, NULL, q + qi, kc + ci, vc + ci, kd, lens[b], HS, scale, sm);
}

/* dQ_t = scale sum_u P_tu (dO_t . V_u - D_t) K_u with D_t = dO_t . O_t.
 * grid (N, NH); overwrites the dq row. */
__global__ void attention_backward_dq_kernel(float *dq, const float *dout, const float *out,
                                             const float *lse, const float *q,
                                             const float *k, const float *v, const int *cu,
                                             int B, int NH, int NKV, int HS, float scale) {
    extern __shared__ float sm[];
    float *qs = sm, *dos = sm + HS, *dqs = sm + 2 * HS, *ds = sm + 3 * HS;
    int tid = threadIdx.x, nt = blockDim.x;
    int i = blockIdx.x, h = blockIdx.y;
    int s0 = cu[seq_of_row(cu, B, i)], nkeys = i - s0 + 1;
    int hk = h / (NH / NKV), qd = NH * HS, kd = NKV * HS;
    size_t qi = (size_t)i * qd + (size_t)h * HS;
    const float *kb = k + (size_t)s0 * kd + (size_t)hk * HS;
    const float *vb = v + (size_t)s0 * kd + (size_t)hk * HS;
    float D = 0.0f;
    for (int d = tid; d < HS; d += nt) {
        qs[d] = q[qi + d];
        dos[d] = dout[qi + d];
        dqs[d] = 0.0f;
        D += dout[qi + d] * out[qi + d];
    }
    D = block_sum(D); /* its barriers also publish qs and dos */
    float L = lse[(size_t)i * NH + h];
    for (int u0 = 0; u0 < nkeys; u0 += nt) {
        int u = u0 + tid;
        float g = 0.0f;
        if (u < nkeys) {
            const float *ku = kb + (size_t)u * kd, *vu = vb + (size_t)u * kd;
            float p = expf(dot_hs(qs, ku, HS) * scale - L);
            g = p * (dot_hs(dos, vu, HS) - D) * scale;
        }
        ds[tid] = g;
        __syncthreads();
        int n = min(nt, nkeys - u0);
        for (int d = tid; d < HS; d += nt) {
            float acc = dqs[d];
            for (int j = 0; j < n; j++) acc += ds[j] * kb[(size_t)(u0 + j) * kd + d];
            dqs[d] = acc;
        }
        __syncthreads();
    }
    for (int d = tid; d < HS; d += nt) dq[qi + d] = dqs[d];
}

/* dV_u = sum_t P_tu dO_t, dK_u = scale sum_t P_tu (dO_t . V_u - D_t) Q_t over
 * the queries t >= u of the same sequence and all query heads of kv head hk.
 * grid (N, NKV); overwrites the dk and dv rows. */
__global__ void attention_backward_dkv_kernel(float *dk, float *dv, const float *dout,
                                              const float *out, const float *lse,
                                              const float *q, const float *k,
                                              const float *v, const int *cu, int B, int NH,
                                              int NKV, int HS, float scale) {
    extern __shared__ float sm[];
    int tid = threadIdx.x, nt = blockDim.x;
    float *ks = sm, *vs = sm + HS, *dks = sm + 2 * HS, *dvs = sm + 3 * HS;
    float *ps = sm + 4 * HS, *ds = ps + nt;
    int i = blockIdx.x, hk = blockIdx.y;
    int b = seq_of_row(cu, B, i), end = cu[b + 1]; /* queries i .. end-1 see key i */
    int group = NH / NKV, qd = NH * HS, kd = NKV * HS;
    size_t ki = (size_t)i * kd + (size_t)hk * HS;
    for (int d = tid; d < HS; d += nt) {
        ks[d] = k[ki + d];
        vs[d] = v[ki + d];
        dks[d] = 0.0f;
        dvs[d] = 0.0f;
    }
    __syncthreads();
    int nq = end - i;
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        for (int t0 = 0; t0 < nq; t0 += nt) {
            int t = t0 + tid;
            float p = 0.0f, g = 0.0f;
            if (t < nq) {
                size_t qi = (size_t)(i + t) * qd + (size_t)h * HS;
                const float *qt = q + qi, *dot = dout + qi, *ot = out + qi;
                float L = lse[(size_t)(i + t) * NH + h];
                p = expf(dot_hs(qt, ks, HS) * scale - L);
                g = p * (dot_hs(dot, vs, HS) - dot_hs(dot, ot, HS)) * scale;
            }
            ps[tid] = p;
            ds[tid] = g;
            __syncthreads();
            int n = min(nt, nq - t0);
            for (int d = tid; d < HS; d += nt) {
                float ak = dks[d], av = dvs[d];
                for (int j = 0; j < n; j++) {
                    size_t qi = (size_t)(i + t0 + j) * qd + (size_t)h * HS + d;
                    av += ps[j] * dout[qi];
                    ak += ds[j] * q[qi];
                }
                dks[d] = ak;
                dvs[d] = av;
            }
            __syncthreads();
        }
    }
    for (int d = tid; d < HS; d += nt) {
        dk[ki + d] = dks[d];
        dv[ki + d] = dvs[d];
    }
}

extern "C" void attention_forward_cuda(float *out, float *lse, const float *q, const float *k,
                                       const float *v, const int *cu_seqlens, int B, int N,
                                       int NH, int NKV, int HS) {
    NEED_CTX(ctx);
    if (B <= 0 || N <= 0) return;
    size_t smem = sizeof(float) * (2 * (size_t)HS + ATT_THREADS);
    attention_forward_kernel<<<dim3(N, NH), ATT_THREADS, smem, ctx->stream>>>(
        out, lse, q, k, v, cu_seqlens, B, NH, NKV, HS, 1.0f / sqrtf((float)HS));
    CUDA_LAUNCHED("attention_forward_kernel");
}

extern "C" void attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout,
                                        const float *out, const float *lse, const float *q,
                                        const float *k, const float *v,
                                        const int *cu_seqlens, int B, int N, int NH,
                                        int NKV, int HS) {
    NEED_CTX(ctx);
    if (B <= 0 || N <= 0) return;
    float scale = 1.0f / sqrtf((float)HS);
    size_t smem_q = sizeof(float) * (3 * (size_t)HS + ATT_THREADS);
    attention_backward_dq_kernel<<<dim3(N, NH), ATT_THREADS, smem_q, ctx->stream>>>(
        dq, dout, out, lse, q, k, v, cu_seqlens, B, NH, NKV, HS, scale);
    CUDA_LAUNCHED("attention_backward_dq_kernel");
    size_t smem_kv = sizeof(float) * (4 * (size_t)HS + 2 * ATT_THREADS);
    attention_backward_dkv_kernel<<<dim3(N, NKV), ATT_THREADS, smem_kv, ctx->stream>>>(
        dk, dv, dout, out, lse, q, k, v, cu_seqlens, B, NH, NKV, HS, scale);
    CUDA_LAUNCHED("attention_backward_dkv_kernel");
}

extern "C" void attention_decode_cuda(float *out, const float *q, const float *kc,
                                      const float *vc, const int *slots, const int *lens,
                                      int B, int NH, int NKV, int HS, int maxT) {
    NEED_CTX(ctx);
    if (B <= 0) return;
    size_t smem = sizeof(float) * (2 * (size_t)HS + ATT_THREADS);
    attention_decode_kernel<<<dim3(B, NH), ATT_THREADS, smem, ctx->stream>>>(
        out, q, kc, vc, slots, lens, NH, NKV, HS, maxT, 1.0f / sqrtf((float)HS));
    CUDA_LAUNCHED("attention_decode_kernel");
}
