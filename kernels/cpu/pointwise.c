/* Row-wise and element-wise kernels on CPU: RMSNorm, RoPE, SwiGLU. */
#include "../kernels.h"

#include <math.h>

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                     int N, int C, float eps) {
#pragma omp parallel for if (N > 16)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        double ss = 0.0;
        for (int j = 0; j < C; j++) ss += (double)x[j] * x[j];
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        for (int j = 0; j < C; j++) o[j] = x[j] * r * w[j];
        if (rstd) rstd[i] = r;
    }
}

/* y_j = x_j r w_j, r = (mean x^2 + eps)^-1/2, dr/dx_k = -r^3 x_k / C, so
 * dx_k = r w_k g_k - r^3 x_k / C * sum_j g_j w_j x_j. */
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C) {
    if (dinp) {
#pragma omp parallel for if (N > 16)
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float *dx = dinp + (size_t)i * C;
            float r = rstd[i];
            double dot = 0.0;
            for (int j = 0; j < C; j++) dot += (double)g[j] * w[j] * x[j];
            float c = (float)(dot / C) * r * r * r;
            for (int j = 0; j < C; j++) dx[j] += r * w[j] * g[j] - c * x[j];
        }
    }
    if (dw) {
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float r = rstd[i];
            for (int j = 0; j < C; j++) dw[j] += g[j] * x[j] * r;
        }
    }
}

void rope_freq_plain(float *inv_freq, int HS, float theta) {
    /* HF: 1 / theta ** (arange(0, HS, 2) / HS), in fp32 */
    for (int j = 0; j < HS / 2; j++)
        inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)HS);
}

static void rope_rotate(float *x, const int *pos, int N, int NHX, int HS, RopeFreq f,
                        int interleaved, float sign) {
    int half = HS / 2;
#pragma omp parallel for if (N > 16)
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < half; j++) {
            float ang = (float)pos[i] * f.inv_freq[j];
            float c = cosf(ang) * f.scale, s = sign * (sinf(ang) * f.scale);
            for (int h = 0; h < NHX; h++) {
                float *v = x + (size_t)i * NHX * HS + (size_t)h * HS;
                int a = interleaved ? 2 * j : j;
                int b = interleaved ? 2 * j + 1 : j + half;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

void rope_forward(float *x, const int *pos, int N, int NHX, int HS, RopeFreq f, int interleaved) {
    rope_rotate(x, pos, N, NHX, HS, f, interleaved, 1.0f);
}

void rope_backward(float *dx, const int *pos, int N, int NHX, int HS, RopeFreq f,
                   int interleaved) {
    rope_rotate(dx, pos, N, NHX, HS, f, interleaved, -1.0f);
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* d/dg [g s(g)] = s(g) (1 + g (1 - s(g))). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        float silu = g * s;
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] = dout[i] * silu;
    }
}
