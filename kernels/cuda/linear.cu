/* Linear layers and embeddings on CUDA: GEMMs through cuBLAS (fp32).
 *
 * cuBLAS is column-major, and a row-major (R,C) matrix read column-major is
 * its transpose (C,R). So row-major out (N,OC) = inp (N,IC) @ w^T is, column-
 * major, out (OC,N) = w(IC,OC)^T @ inp (IC,N): sgemm(T, N, OC, N, IC). */
#include "common.cuh"


#define CUBLAS_TRY(expr)                                                      \
    do {                                                                      \
        cublasStatus_t st_ = (expr);                                          \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                   \
            cuda_note_error(cublasGetStatusString(st_), #expr, __FILE__,      \
                            __LINE__);                                        \
            return;                                                           \
        }                                                                     \
    } while (0)

__global__ void add_bias_kernel(float *out, const float *bias, int N, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)N * OC) out[i] += bias[i % OC];
}

/* One thread per column: a fixed summation order, no atomics. */
__global__ void bias_grad_kernel(float *dbias, const float *dout, int N, int OC) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= OC) return;
    float s = 0.0f;
    for (int i = 0; i < N; i++) s += dout[(size_t)i * OC + j];
    dbias[j] += s;
}

extern "C" void matmul_forward_cuda(float *out, const float *inp, const float *w,
                                    const float *bias, int N, int IC, int OC,
                                    int accumulate) {
    NEED_CTX(ctx);
    cublasHandle_t h = ctx->blas;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    /* beta == 0: cuBLAS does not read out, so garbage (even NaN) is fine. */
    CUBLAS_TRY(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, w, IC, inp, IC,
                           &beta, out, OC));
    if (bias && (size_t)N * OC > 0) {
        size_t n = (size_t)N * OC;
        add_bias_kernel<<<ceil_div(n, 256), 256, 0, ctx->stream>>>(out, bias, N, OC);
        CUDA_LAUNCHED("add_bias_kernel");
    }
}

extern "C" void matmul_backward_cuda(float *dinp, float *dw, float *dbias, const float *dout,
                                     const float *inp, const float *w, int N, int IC,
                                     int OC) {
    NEED_CTX(ctx);
    const float one = 1.0f;
    if (dinp || dw) {
        cublasHandle_t h = ctx->blas;
        if (dinp) /* (IC,N) += (IC,OC) @ (OC,N), column-major */
            CUBLAS_TRY(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, w, IC, dout,
                                   OC, &one, dinp, IC));
        if (dw) /* (IC,OC) += (IC,N) @ (N,OC), column-major */
            CUBLAS_TRY(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, IC,
                                   dout, OC, &one, dw, IC));
    }
    if (dbias && OC > 0) {
        bias_grad_kernel<<<ceil_div(OC, 128), 128, 0, ctx->stream>>>(dbias, dout, N, OC);
        CUDA_LAUNCHED("bias_grad_kernel");
    }
}

__global__ void embedding_forward_kernel(float *out, const int *ids, const float *table,
                                         int N, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    size_t row = i / C, col = i % C;
    out[i] = table[(size_t)ids[row] * C + col];
}

/* One thread per column, the rows in order: every element sums in the CPU
 * twin's order, so full fine-tuning is bit-reproducible (atomics would add
 * a repeated id's rows in whatever order they land). Neighbouring threads
 * read neighbouring columns: the loads of a row coalesce. */
__global__ void embedding_backward_kernel(float *dtable, const float *dout, const int *ids,
                                          int N, int C) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= C) return;
    for (int i = 0; i < N; i++)
        dtable[(size_t)ids[i] * C + col] += dout[(size_t)i * C + col];
}

extern "C" void embedding_forward_cuda(float *out, const int *ids, const float *table, int N,
                                       int C) {
    NEED_CTX(ctx);
    size_t n = (size_t)N * C;
    if (n == 0) return;
    embedding_forward_kernel<<<ceil_div(n, 256), 256, 0, ctx->stream>>>(out, ids, table, N, C);
    CUDA_LAUNCHED("embedding_forward_kernel");
}

extern "C" void embedding_backward_cuda(float *dtable, const float *dout, const int *ids,
                                        int N, int C) {
    NEED_CTX(ctx);
    size_t n = (size_t)N * C;
    if (n == 0) return;
    embedding_backward_kernel<<<ceil_div((size_t)C, 128), 128, 0, ctx->stream>>>(dtable, dout, ids, N, C);
    CUDA_LAUNCHED("embedding_backward_kernel");
}
