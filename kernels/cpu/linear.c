/* Linear layers and embeddings on CPU: GEMMs through OpenBLAS (cblas). */
#include "../kernels.h"

#include <cblas.h>
#include <string.h>

/* Few rows (decoding): sgemm would copy ("pack") the whole weight matrix
 * on every call, which costs more than the product itself. Instead each
 * weight row is read once and dotted with every input row while it sits in
 * cache, with four input rows sharing each load. */
#define SMALL_N 32

/* out[n][o] for one weight row o and all N input rows. */
static inline void dot_rows(float *s, const float *wr, const float *inp, int N, int IC) {
    int n = 0;
    for (; n + 4 <= N; n += 4) { /* four rows share each load of wr */
        const float *x0 = inp + (size_t)n * IC, *x1 = x0 + IC, *x2 = x1 + IC, *x3 = x2 + IC;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int i = 0; i < IC; i++) {
            s0 += wr[i] * x0[i];
            s1 += wr[i] * x1[i];
            s2 += wr[i] * x2[i];
            s3 += wr[i] * x3[i];
        }
        s[n] = s0, s[n + 1] = s1, s[n + 2] = s2, s[n + 3] = s3;
    }
    for (; n < N; n++) {
        const float *x = inp + (size_t)n * IC;
        float s0 = 0.0f;
#pragma omp simd reduction(+ : s0)
        for (int i = 0; i < IC; i++) s0 += wr[i] * x[i];
        s[n] = s0;
    }
}

/* Four weight rows against one input row: four independent sums, so the
 * FMAs do not wait on each other (one row alone is latency-bound). */
static inline void dot_4x1(float s[4], const float *w0, const float *x, int IC) {
    const float *w1 = w0 + IC, *w2 = w1 + IC, *w3 = w2 + IC;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int i = 0; i < IC; i++) {
        a0 += w0[i] * x[i];
        a1 += w1[i] * x[i];
        a2 += w2[i] * x[i];
        a3 += w3[i] * x[i];
    }
    s[0] = a0, s[1] = a1, s[2] = a2, s[3] = a3;
}

/* Four weight rows against four input rows: 8 loads feed 16 FMAs, and
 * s[r][k] = w_r . x_k. With AVX-512 the 16 vector sums are reduced
 * together by a shuffle tree (about 2 instructions per output instead of
 * 8 for separate horizontal sums). */
#if defined(__AVX512F__)
#include <immintrin.h>

/* Lane 4p+q of the result is the sum of a[4q+p]. */
static inline __m512 reduce16(const __m512 a[16]) {
    __m512 b[8], c[4], d[2];
    for (int k = 0; k < 8; k++) /* 256-bit halves */
        b[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; k++) /* 128-bit quarters */
        c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; k++) /* pairs inside each quarter */
        d[k] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
}

static inline void dot_4x4(float s[4][4], const float *w0, const float *x0, int IC) {
    __m512 acc[16]; /* acc[4k + r] = w_r . x_k, so lane 4r + k of the reduction */
    for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= IC; i += 16) {
        __m512 w[4], x[4];
        for (int r = 0; r < 4; r++) w[r] = _mm512_loadu_ps(w0 + (size_t)r * IC + i);
        for (int k = 0; k < 4; k++) x[k] = _mm512_loadu_ps(x0 + (size_t)k * IC + i);
        for (int k = 0; k < 4; k++)
            for (int r = 0; r < 4; r++) acc[4 * k + r] = _mm512_fmadd_ps(w[r], x[k], acc[4 * k + r]);
    }
    if (i < IC) { /* tail: masked loads read zeros past the end */
        __mmask16 m = (__mmask16)((1u << (IC - i)) - 1);
        __m512 w[4], x[4];
        for (int r = 0; r < 4; r++) w[r] = _mm512_maskz_loadu_ps(m, w0 + (size_t)r * IC + i);
        for (int k = 0; k < 4; k++) x[k] = _mm512_maskz_loadu_ps(m, x0 + (size_t)k * IC + i);
        for (int k = 0; k < 4; k++)
            for (int r = 0; r < 4; r++) acc[4 * k + r] = _mm512_fmadd_ps(w[r], x[k], acc[4 * k + r]);
    }
    _mm512_storeu_ps(&s[0][0], reduce16(acc));
}

/* Sixteen weight rows against one input row (decoding one sequence):
 * 16 independent sums, out[r] = w_r . x for r < 16. */
static inline void dot_16x1(float *out, const float *w0, const float *x, int IC) {
    __m512 acc[16]; /* row 4p + q lives in acc[4q + p], lane 4p + q after reduce16 */
    for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
    for (int i = 0; i < IC; i += 16) {
        __mmask16 m = IC - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (IC - i)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        for (int r = 0; r < 16; r++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, w0 + (size_t)r * IC + i);
            acc[(r & 3) * 4 + (r >> 2)] = _mm512_fmadd_ps(wv, xv, acc[(r & 3) * 4 + (r >> 2)]);
        }
    }
    _mm512_storeu_ps(out, reduce16(acc));
}
#define HAVE_DOT_16X1 1
#else
static inline void dot_4x4(float s[4][4], const float *w0, const float *x0, int IC) {
    for (int r = 0; r < 4; r++) dot_rows(s[r], w0 + (size_t)r * IC, x0, 4, IC);
}
#endif

static void matmul_small(float *out, const float *inp, const float *w, int N, int IC, int OC,
                         int accumulate) {
#ifdef HAVE_DOT_16X1
    if (N == 1) {
        int n16 = OC / 16;
#pragma omp parallel for schedule(static) if ((size_t)OC * IC > 16384)
        for (int blk = 0; blk < n16; blk++) {
            float s[16];
            dot_16x1(s, w + (size_t)blk * 16 * IC, inp, IC);
            float *dst = out + (size_t)blk * 16;
            for (int r = 0; r < 16; r++) dst[r] = accumulate ? dst[r] + s[r] : s[r];
        }
        for (int o = n16 * 16; o < OC; o++) {
            float s;
            dot_rows(&s, w + (size_t)o * IC, inp, 1, IC);
            out[o] = accumulate ? out[o] + s : s;
        }
        return;
    }
#endif
    int nblk = (OC + 3) / 4;
#pragma omp parallel for schedule(static) if ((size_t)OC * IC > 16384)
    for (int blk = 0; blk < nblk; blk++) {
        int o0 = 4 * blk, rows = OC - o0 < 4 ? OC - o0 : 4;
        const float *wb = w + (size_t)o0 * IC;
        float s[4][SMALL_N];
        if (N == 1 && rows == 4) {
            float t[4];
            dot_4x1(t, wb, inp, IC);
            for (int r = 0; r < 4; r++) s[r][0] = t[r];
        } else if (rows == 4 && N % 4 == 0) {
#ifdef HAVE_DOT_16X1
            if (blk + 1 < nblk) /* the next block's weights, while this one computes */
                for (size_t off = 0; off < (size_t)4 * IC; off += 16)
                    _mm_prefetch((const char *)(wb + 4 * (size_t)IC + off), _MM_HINT_T0);
#endif
            for (int n = 0; n < N; n += 4) {
                float t[4][4];
                dot_4x4(t, wb, inp + (size_t)n * IC, IC);
                for (int r = 0; r < 4; r++)
                    for (int k = 0; k < 4; k++) s[r][n + k] = t[r][k];
            }
        } else {
            for (int r = 0; r < rows; r++) dot_rows(s[r], wb + (size_t)r * IC, inp, N, IC);
        }
        for (int n = 0; n < N; n++) {
            float *dst = out + (size_t)n * OC + o0;
            for (int r = 0; r < rows; r++) dst[r] = accumulate ? dst[r] + s[r][n] : s[r][n];
        }
    }
}

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IC, int OC, int accumulate) {
    float beta = accumulate ? 1.0f : 0.0f;
    if (N <= SMALL_N) {
        matmul_small(out, inp, w, N, IC, OC, accumulate);
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
