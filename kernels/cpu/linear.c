/* Linear layers and embeddings on CPU: GEMMs through OpenBLAS (cblas). */
#include "../kernels.h"

#include <cblas.h>
#include <string.h>

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IC, int OC, int accumulate) {
    float beta = accumulate ? 1.0f : 0.0f;
    if (N == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IC, 1.0f, w, IC, inp, 1, beta, out, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w,
                    IC, beta, out, OC);
    }
    if (bias) {
#pragma omp parallel for if (N > 64)
        for (int i = 0; i < N; i++) {
            float *o = out + (size_t)i * OC;
            for (int j = 0; j < OC; j++) o[j] += bias[j];
        }
    }
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, int N, int IC, int OC) {
    if (dinp) /* (N,OC) @ (OC,IC) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, w,
                    IC, 1.0f, dinp, IC);
    if (dw) /* (OC,N) @ (N,IC) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp,
                    IC, 1.0f, dw, IC);
    if (dbias) {
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * OC;
            for (int j = 0; j < OC; j++) dbias[j] += d[j];
        }
    }
}

void embedding_forward(float *out, const int *ids, const float *table, int N, int C) {
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * C, table + (size_t)ids[i] * C, sizeof(float) * (size_t)C);
}

void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    for (int i = 0; i < N; i++) {
        float *d = dtable + (size_t)ids[i] * C;
        const float *g = dout + (size_t)i * C;
        for (int j = 0; j < C; j++) d[j] += g[j];
    }
}
