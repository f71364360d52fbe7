/* Row-wise and element-wise kernels on CUDA: RMSNorm, RoPE, SwiGLU.
 * Same formulas as kernels/cpu/pointwise.c, fp32 throughout. */
#include "common.cuh"

#define ROW_THREADS 256

/* One block per row: block reduction of sum x^2. */
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                       const float *w, int C, float eps) {
    size_t i = blockIdx.x;
    const float *x = inp + i * C;
    float *o = out + i * C;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) ss += x[j] * x[j];
    ss = block_sum(ss);
    float r = rsqrtf(ss / C + eps);
    for (int j = threadIdx.x; j < C; j += blockDim.x) o[j] = x[j] * r * w[j];
    if (rstd && threadIdx.x == 0) rstd[i] = r;
}

/* dx_k += r w_k g_k - r^3 x_k / C * sum_j g_j w_j x_j, one block per row. */
__global__ void rmsnorm_backward_dinp_kernel(float *dinp, const float *dout,
                                             const float *inp, const float *w,
                                             const float *rstd, int C) {
    size_t i = blockIdx.x;
    const float *x = inp + i * C, *g = dout + i * C;
    float *dx = dinp + i * C;
    float r = rstd[i];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) dot += g[j] * w[j] * x[j];
    dot = block_sum(dot);
    float c = dot / C * r * r * r;
    for (int j = threadIdx.x; j < C; j += blockDim.x) dx[j] += r * w[j] * g[j] - c * x[j];
}

/* dw_j += sum_i g_ij x_ij r_i: one thread per column, fixed order. */
__global__ void rmsnorm_backward_dw_kernel(float *dw, const float *dout, const float *inp,
                                           const float *rstd, int N, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float s = 0.0f;
    for (int i = 0; i < N; i++) s += dout[(size_t)i * C + j] * inp[(size_t)i * C + j] * rstd[i];
    dw[j] += s;
}

extern "C" void rmsnorm_forward_cuda(float *out, float *rstd, const float *inp,
                                     const float *w, int N, int C, float eps) {
    NEED_CTX(ctx);
    if (N <= 0) return;
    rmsnorm_forward_kernel<<<N, ROW_THREADS, 0, ctx->stream>>>(out, rstd, inp, w, C, eps);
    CUDA_LAUNCHED("rmsnorm_forward_kernel");
}

extern "C" void rmsnorm_backward_cuda(float *dinp, float *dw, const float *dout,
                                      const float *inp, const float *w, const float *rstd,
                                      int N, int C) {
    NEED_CTX(ctx);
    if (N <= 0 || C <= 0) return;
    if (dinp) {
        rmsnorm_backward_dinp_kernel<<<N, ROW_THREADS, 0, ctx->stream>>>(dinp, dout, inp, w, rstd, C);
        CUDA_LAUNCHED("rmsnorm_backward_dinp_kernel");
    }
    if (dw) {
        rmsnorm_backward_dw_kernel<<<ceil_div(C, 128), 128, 0, ctx->stream>>>(dw, dout, inp, rstd, N, C);
        CUDA_LAUNCHED("rmsnorm_backward_dw_kernel");
    }
}

/* The frequencies, from the host's table (kernels.h RopeFreq) by value: no
 * copy, nothing to wait for, and the angles are the CPU's bit for bit (the
 * device's powf is a few ulp off glibc's, and at position 4000 that would
 * move an angle by 1e-4 rad). */
#define ROPE_MAX_HALF 256
typedef struct {
    float f[ROPE_MAX_HALF];
} InvFreq;

/* One thread per (row, head, pair); sign -1 rotates backwards. */
__global__ void rope_kernel(float *x, const int *pos, int N, int NHX, int HS, InvFreq inv,
                            float scale, int interleaved, float sign) {
    int half = HS / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * NHX * half) return;
    int j = (int)(idx % half);
    size_t ih = idx / half; /* row * NHX + head */
    size_t i = ih / NHX;
    float ang = (float)pos[i] * inv.f[j];
    float c = cosf(ang) * scale, s = sign * (sinf(ang) * scale);
    float *v = x + ih * HS;
    int a = interleaved ? 2 * j : j;
    int b = interleaved ? 2 * j + 1 : j + half;
    float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
}

static void rope_launch(float *x, const int *pos, int N, int NHX, int HS, const float *inv_freq,
                        float scale, int interleaved, float sign) {
    NEED_CTX(ctx);
    size_t n = (size_t)N * NHX * (HS / 2);
    if (n == 0) return;
    if (HS / 2 > ROPE_MAX_HALF) {
        cuda_note_error("head size above 512", "rope", __FILE__, __LINE__);
        return;
    }
    InvFreq inv;
    for (int j = 0; j < HS / 2; j++) inv.f[j] = inv_freq[j];
    rope_kernel<<<ceil_div(n, 256), 256, 0, ctx->stream>>>(x, pos, N, NHX, HS, inv, scale,
                                                           interleaved, sign);
    CUDA_LAUNCHED("rope_kernel");
}

extern "C" void rope_forward_cuda(float *x, const int *pos, int N, int NHX, int HS,
                                  const float *inv_freq, float scale, int interleaved) {
    rope_launch(x, pos, N, NHX, HS, inv_freq, scale, interleaved, 1.0f);
}

extern "C" void rope_backward_cuda(float *dx, const int *pos, int N, int NHX, int HS,
                                   const float *inv_freq, float scale, int interleaved) {
    rope_launch(dx, pos, N, NHX, HS, inv_freq, scale, interleaved, -1.0f);
}

__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up,
                                      size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* d/dg [g s(g)] = s(g) (1 + g (1 - s(g))). */
__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout,
                                       const float *gate, const float *up, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] = dout[i] * g * s;
    }
}

/* Grid-stride loops: enough blocks to fill the device, capped for huge n. */
static unsigned elementwise_blocks(size_t n) {
    unsigned b = ceil_div(n, 256);
    return b > 65535u ? 65535u : b;
}

extern "C" void swiglu_forward_cuda(float *out, const float *gate, const float *up,
                                    size_t n) {
    NEED_CTX(ctx);
    if (n == 0) return;
    swiglu_forward_kernel<<<elementwise_blocks(n), 256, 0, ctx->stream>>>(out, gate, up, n);
    CUDA_LAUNCHED("swiglu_forward_kernel");
}

extern "C" void swiglu_backward_cuda(float *dgate, float *dup, const float *dout,
                                     const float *gate, const float *up, size_t n) {
    NEED_CTX(ctx);
    if (n == 0) return;
    swiglu_backward_kernel<<<elementwise_blocks(n), 256, 0, ctx->stream>>>(dgate, dup, dout, gate, up, n);
    CUDA_LAUNCHED("swiglu_backward_kernel");
}
