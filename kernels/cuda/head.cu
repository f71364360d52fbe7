/* head.cu: scale and the scalar head (the critic's value, the reward) on
 * CUDA, the twins of the CPU backend's loops (kernels/cpu/backend_cpu.c). */
#include "common.cuh"

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

/* One warp per row: out[i] = x_i . w + w[C]. */
__global__ void head_forward_kernel(float *out, const float *x, const float *w, int N, int C) {
    int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (i >= N) return; /* whole warps leave together: warp_sum sees full masks */
    const float *xi = x + (size_t)i * C;
    float s = 0.0f;
    for (int j = lane; j < C; j += 32) s += xi[j] * w[j];
    s = warp_sum(s);
    if (lane == 0) out[i] = s + w[C];
}

/* dx (N,C) += dout[i] w[j], one thread per element. */
__global__ void head_backward_dx_kernel(float *dx, const float *dout, const float *w, int N,
                                        int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * C) return;
    float g = dout[idx / C];
    if (g != 0.0f) dx[idx] += g * w[idx % C];
}

/* dw[j] += sum_i dout[i] x[i][j] (j < C), dw[C] += sum_i dout[i]: one
 * thread per column, rows in order, as the CPU sums them. */
__global__ void head_backward_dw_kernel(float *dw, const float *dout, const float *x, int N,
                                        int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j > C) return;
    float acc = dw[j];
    for (int i = 0; i < N; i++) {
        float g = dout[i];
        if (g != 0.0f) acc += j < C ? g * x[(size_t)i * C + j] : g;
    }
    dw[j] = acc;
}

extern "C" void scale_cuda(float *x, size_t n, float s) {
    NEED_CTX(ctx);
    if (n == 0) return;
    unsigned b = ceil_div(n, 256);
    scale_kernel<<<b > 65535u ? 65535u : b, 256, 0, ctx->stream>>>(x, n, s);
    CUDA_LAUNCHED("scale_kernel");
}

extern "C" void head_forward_cuda(float *out, const float *x, const float *w, int N, int C) {
    NEED_CTX(ctx);
    if (N <= 0) return;
    head_forward_kernel<<<ceil_div((size_t)N, 8), 256, 0, ctx->stream>>>(out, x, w, N, C);
    CUDA_LAUNCHED("head_forward_kernel");
}

extern "C" void head_backward_cuda(float *dx, float *dw, const float *dout, const float *x,
                                   const float *w, int N, int C) {
    NEED_CTX(ctx);
    if (N <= 0) return;
    head_backward_dx_kernel<<<ceil_div((size_t)N * C, 256), 256, 0, ctx->stream>>>(dx, dout, w, N, C);
    CUDA_LAUNCHED("head_backward_dx_kernel");
    head_backward_dw_kernel<<<ceil_div((size_t)C + 1, 128), 128, 0, ctx->stream>>>(dw, dout, x, N, C);
    CUDA_LAUNCHED("head_backward_dw_kernel");
}
