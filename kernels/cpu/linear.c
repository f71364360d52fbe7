/* Linear layers and embeddings on CPU: the forward by our own kernels,
 * in one order of summation for every batch; backward GEMMs through
 * OpenBLAS (cblas). */
#include "../kernels.h"
#include "kernels/cpu/scratch.h"

#include <cblas.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

/* Every output out[n][o] = w_o . x_n is summed in one order, whatever N,
 * the row's place in the batch and the thread: one multiply-add per i,
 * i = 0, 1, ..., IC - 1, into a sum that starts at 0 (fused where the CPU
 * has FMA: fmaf rounds as the instruction does, so the plain-C path gives
 * AVX-512's bits; without FMA a product and a sum). So a row's result does
 * not depend on the batch it comes in: the decode of one token gives the
 * bits that the training forward of thousands gives, and the log-probs
 * generation returns are the trainer's. (OpenBLAS's sgemm sums in an order
 * that depends on the shape, so the forward does not use it; backward,
 * whose numbers no rollout compares, still does.)
 *
 * Many outputs are summed at once instead, as a GEMM does: the inputs are
 * packed transposed in panels of NR rows (xt[i][l] = x[n0 + l][i]), and a
 * tile of MR weight rows times NR input rows keeps MR x NR sums in
 * registers, each i one broadcast weight per row against one load of the
 * panel. Rows past N are zeros in the panel, weight rows past OC read a
 * row of zeros, and neither is stored. */

enum { NR = 32, MR = 12, NR1 = 16, MR1 = 24 }; /* tiles: many rows; one panel of 16 */
enum { PANEL_BLOCK = 512 * 1024 };

static inline void put(float *dst, float v, int accumulate) { *dst = accumulate ? *dst + v : v; }

/* xt (panels of nr columns, IC rows) from x rows [0, N); columns past N 0. */
static void pack(float *xt, const float *x, int N, int IC, int nr) {
    int np = (N + nr - 1) / nr;
#pragma omp parallel for schedule(static) if ((size_t)N * IC > 65536)
    for (int p = 0; p < np; p++) {
        float *dst = xt + (size_t)p * IC * nr;
        for (int l = 0; l < nr; l++) {
            int n = p * nr + l;
            const float *src = x + (size_t)n * IC;
            if (n < N)
                for (int i = 0; i < IC; i++) dst[(size_t)i * nr + l] = src[i];
            else
                for (int i = 0; i < IC; i++) dst[(size_t)i * nr + l] = 0.0f;
        }
    }
}

#if defined(__AVX512F__)
#include "kernels/cpu/avx512.h"

/* The MR (or MR1) weight rows of a tile from o0: rows past OC read zrow. */
static inline void rows_of(const float **wr, int mr, const float *w, int o0, int IC, int OC,
                           const float *zrow) {
    for (int j = 0; j < mr; j++) wr[j] = o0 + j < OC ? w + (size_t)(o0 + j) * IC : zrow;
}

/* out rows [n0, n0 + nn) (nn <= NR), columns [o0, o0 + MR) below OC. */
static void tile(float *out, const float *xt, const float *w, int n0, int nn, int o0, int IC,
                 int OC, int accumulate, const float *zrow, int prefetch) {
    __m512 acc[MR][2];
    for (int j = 0; j < MR; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    const float *wr[MR];
    rows_of(wr, MR, w, o0, IC, OC, zrow);
    /* the next tile's rows, a line of each per 16 inputs: at a few panels
     * per tile (batched decode) its weights come from DRAM */
    const float *pf = prefetch && o0 + MR < OC ? w + (size_t)(o0 + MR) * IC : NULL;
    for (int i = 0; i < IC; i++) {
        if (pf && !(i & 15))
            for (int j = 0; j < MR; j++) _mm_prefetch((const char *)(pf + (size_t)j * IC + i), _MM_HINT_T0);
        __m512 x0 = _mm512_loadu_ps(xt + (size_t)i * NR), x1 = _mm512_loadu_ps(xt + (size_t)i * NR + 16);
        for (int j = 0; j < MR; j++) {
            __m512 wb = _mm512_set1_ps(wr[j][i]);
            acc[j][0] = _mm512_fmadd_ps(wb, x0, acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(wb, x1, acc[j][1]);
        }
    }
    float t[MR][NR];
    for (int j = 0; j < MR; j++) _mm512_storeu_ps(t[j], acc[j][0]), _mm512_storeu_ps(t[j] + 16, acc[j][1]);
    const int rows = OC - o0 < MR ? OC - o0 : MR;
    for (int l = 0; l < nn; l++)
        for (int j = 0; j < rows; j++) put(out + (size_t)(n0 + l) * OC + o0 + j, t[j][l], accumulate);
}

/* One panel of NR1 rows (nn <= 16), MR1 weight rows. */
static void tile1(float *out, const float *xt, const float *w, int nn, int o0, int IC, int OC,
                  int accumulate, const float *zrow) {
    __m512 acc[MR1];
    for (int j = 0; j < MR1; j++) acc[j] = _mm512_setzero_ps();
    const float *wr[MR1];
    rows_of(wr, MR1, w, o0, IC, OC, zrow);
    for (int i = 0; i < IC; i++) {
        __m512 x0 = _mm512_loadu_ps(xt + (size_t)i * NR1);
        for (int j = 0; j < MR1; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(wr[j][i]), x0, acc[j]);
    }
    float t[MR1][NR1];
    for (int j = 0; j < MR1; j++) _mm512_storeu_ps(t[j], acc[j]);
    const int rows = OC - o0 < MR1 ? OC - o0 : MR1;
    for (int l = 0; l < nn; l++)
        for (int j = 0; j < rows; j++) put(out + (size_t)l * OC + o0 + j, t[j][l], accumulate);
}
/* a[k] becomes column k of the 16 x 16 block whose rows a[0..15] were. */
static inline void transpose16(__m512 a[16]) {
    __m512 t[16];
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_ps(a[k], a[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(a[k], a[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) {
        a[k] = _mm512_shuffle_ps(t[k], t[k + 2], 0x44);
        a[k + 1] = _mm512_shuffle_ps(t[k], t[k + 2], 0xEE);
        a[k + 2] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        a[k + 3] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int k = 0; k < 4; k++) {
            t[h + k] = _mm512_shuffle_f32x4(a[h + k], a[h + k + 4], 0x88);
            t[h + k + 4] = _mm512_shuffle_f32x4(a[h + k], a[h + k + 4], 0xDD);
        }
    for (int k = 0; k < 8; k++) {
        a[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
        a[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
    }
}

enum { NT = 8 }; /* at most this many input rows for tile_t */

/* Few input rows (decoding a few sequences): 16 weight rows [o0, o0 + 16)
 * against NN <= NT input rows, the sums a vector over the 16 outputs. Each
 * 16 x 16 block of weights is transposed in registers, so that column i
 * meets input value i by one FMA, in order of i: the same order as the
 * tiles above, with every lane of every FMA put to use. Rows past OC are
 * zeros and not stored. One function per NN, so that the block and the
 * sums stay in registers. */
#define TILE_T(NN)                                                                                 \
    static void tile_t##NN(float *out, const float *inp, const float *w, int o0, int IC, int OC,   \
                           int accumulate) {                                                       \
        __m512 acc[NN];                                                                            \
        for (int n = 0; n < NN; n++) acc[n] = _mm512_setzero_ps();                                 \
        const int rows = OC - o0 < 16 ? OC - o0 : 16;                                              \
        const float *pf = o0 + 16 < OC ? w + (size_t)(o0 + 16) * IC : NULL;                        \
        for (int i0 = 0; i0 < IC; i0 += 16) {                                                      \
            const __mmask16 m = avx512_lanes(IC, i0);                                              \
            if (pf) /* the next block's rows, one block ahead */                                  \
                _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)                              \
                    _mm_prefetch((const char *)(pf + (size_t)r * IC + i0), _MM_HINT_T0);           \
            __m512 a[16];                                                                          \
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) a[r] =                            \
                r < rows ? _mm512_maskz_loadu_ps(m, w + (size_t)(o0 + r) * IC + i0)                \
                         : _mm512_setzero_ps();                                                    \
            transpose16(a);                                                                        \
            if (IC - i0 >= 16) {                                                                   \
                _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++)                              \
                    _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n] = _mm512_fmadd_ps( \
                        a[k], _mm512_set1_ps(inp[(size_t)n * IC + i0 + k]), acc[n]);               \
            } else { /* the tail: only the columns that exist, through memory */                  \
                float col[16][16];                                                                 \
                _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) _mm512_storeu_ps(col[k], a[k]); \
                for (int k = 0; k < IC - i0; k++)                                                  \
                    for (int n = 0; n < NN; n++)                                                   \
                        acc[n] = _mm512_fmadd_ps(_mm512_loadu_ps(col[k]),                          \
                                                 _mm512_set1_ps(inp[(size_t)n * IC + i0 + k]), acc[n]); \
            }                                                                                      \
        }                                                                                          \
        for (int n = 0; n < NN; n++) {                                                             \
            float t[16];                                                                           \
            _mm512_storeu_ps(t, acc[n]);                                                           \
            for (int r = 0; r < rows; r++) put(out + (size_t)n * OC + o0 + r, t[r], accumulate);   \
        }                                                                                          \
    }
/* X(1) ... X(NT): one kernel per row count, and their tables */
#define EACH_NT(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)
_Static_assert(NT == 8, "EACH_NT lists the row counts 1 to NT");
#define TABLE_ENTRY_T(NN) tile_t##NN,
#define TABLE_ENTRY_P(NN) tile_p##NN,
EACH_NT(TILE_T)
#undef TILE_T

typedef void (*TileT)(float *, const float *, const float *, int, int, int, int);
static const TileT TILE_TS[NT + 1] = {NULL, EACH_NT(TABLE_ENTRY_T)};

/* tile_t's sums from the packed weights wp (matmul_pack), block of rows
 * [o0, o0 + 16): column i is one load, met by input value i in order of
 * i, as tile_t meets it after its transpose; so the bits are tile_t's. */
#define TILE_P(NN)                                                                                 \
    static void tile_p##NN(float *out, const float *inp, const float *wp, int o0, int IC, int OC,  \
                           int accumulate) {                                                       \
        const float *blk = wp + (size_t)o0 * IC;                                                   \
        __m512 acc[NN];                                                                            \
        for (int n = 0; n < NN; n++) acc[n] = _mm512_setzero_ps();                                 \
        for (int i = 0; i < IC; i++) {                                                             \
            const __m512 col = _mm512_loadu_ps(blk + (size_t)i * 16);                              \
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n] =                           \
                _mm512_fmadd_ps(col, _mm512_set1_ps(inp[(size_t)n * IC + i]), acc[n]);             \
        }                                                                                          \
        const int rows = OC - o0 < 16 ? OC - o0 : 16;                                              \
        for (int n = 0; n < NN; n++) {                                                             \
            float t[16];                                                                           \
            _mm512_storeu_ps(t, acc[n]);                                                           \
            for (int r = 0; r < rows; r++) put(out + (size_t)n * OC + o0 + r, t[r], accumulate);   \
        }                                                                                          \
    }
EACH_NT(TILE_P)
#undef TILE_P

static const TileT TILE_PS[NT + 1] = {NULL, EACH_NT(TABLE_ENTRY_P)};
#define HAVE_TILE_T 1
#else
/* The same sums in plain C (the compiler vectorizes over l: each lane is
 * its own sum, so the order stays). fmaf without the instruction would be
 * a call per product. */
#if defined(__FMA__)
#define MADD(w, x, acc) fmaf(w, x, acc)
#else
#define MADD(w, x, acc) ((acc) + (w) * (x))
#endif
static void tile(float *out, const float *xt, const float *w, int n0, int nn, int o0, int IC,
                 int OC, int accumulate, const float *zrow, int prefetch) {
    (void)zrow, (void)prefetch;
    const int rows = OC - o0 < MR ? OC - o0 : MR;
    float acc[MR][NR] = {{0}};
    for (int i = 0; i < IC; i++)
        for (int j = 0; j < rows; j++) {
            const float wv = w[(size_t)(o0 + j) * IC + i], *x = xt + (size_t)i * NR;
            for (int l = 0; l < NR; l++) acc[j][l] = MADD(wv, x[l], acc[j][l]);
        }
    for (int l = 0; l < nn; l++)
        for (int j = 0; j < rows; j++) put(out + (size_t)(n0 + l) * OC + o0 + j, acc[j][l], accumulate);
}

static void tile1(float *out, const float *xt, const float *w, int nn, int o0, int IC, int OC,
                  int accumulate, const float *zrow) {
    (void)zrow;
    const int rows = OC - o0 < MR1 ? OC - o0 : MR1;
    float acc[MR1][NR1] = {{0}};
    for (int i = 0; i < IC; i++)
        for (int j = 0; j < rows; j++) {
            const float wv = w[(size_t)(o0 + j) * IC + i], *x = xt + (size_t)i * NR1;
            for (int l = 0; l < NR1; l++) acc[j][l] = MADD(wv, x[l], acc[j][l]);
        }
    for (int l = 0; l < nn; l++)
        for (int j = 0; j < rows; j++) put(out + (size_t)l * OC + o0 + j, acc[j][l], accumulate);
}
#endif

/* out (N, OC) += bias on every row (bias may be NULL). */
static void add_bias(float *out, const float *bias, int N, int OC) {
    if (!bias) return;
#pragma omp parallel for if (N > 64)
    for (int i = 0; i < N; i++) {
        float *o = out + (size_t)i * OC;
        for (int j = 0; j < OC; j++) o[j] += bias[j];
    }
}

#ifdef HAVE_TILE_T
/* 1 <= N <= NT rows: the kernel for N of table (tile_t's, or tile_p's on
 * packed weights) on each block of 16 weight rows. */
static void few_rows(const TileT *table, float *out, const float *inp, const float *w, int N,
                     int IC, int OC, int accumulate) {
    const int nb = (OC + 15) / 16;
#pragma omp parallel for schedule(static) if ((size_t)OC * IC > 16384)
    for (int b = 0; b < nb; b++) table[N](out, inp, w, b * 16, IC, OC, accumulate);
}
#endif

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IC, int OC, int accumulate) {
#ifdef HAVE_TILE_T
    if (N >= 1 && N <= NT) {
        few_rows(TILE_TS, out, inp, w, N, IC, OC, accumulate);
        add_bias(out, bias, N, OC);
        return;
    }
#endif
    const int small = N <= NR1, nr = small ? NR1 : NR, mr = small ? MR1 : MR;
    const int np = (N + nr - 1) / nr, nt = (OC + mr - 1) / mr;
    float *xt = cpu_scratch(SCRATCH_PANEL, (size_t)np * nr * IC + (size_t)IC);
    float *zrow = xt + (size_t)np * nr * IC; /* the weights of rows past OC */
    memset(zrow, 0, sizeof(float) * (size_t)IC);
    pack(xt, inp, N, IC, nr);
    const int par = (size_t)N * OC * IC > 65536;
    /* Panels in blocks of about PANEL_BLOCK bytes, which stay in each
     * core's L2 while every weight tile passes over them; within a block,
     * weight tiles outermost: a tile's rows stay in L1 over its panels. */
    int bp = (int)(PANEL_BLOCK / ((size_t)nr * IC * sizeof(float)));
    if (bp < 1) bp = 1;
#pragma omp parallel if (par)
    for (int p0 = 0; p0 < np; p0 += bp) {
        const int p1 = p0 + bp < np ? p0 + bp : np;
#pragma omp for schedule(static)
        for (int t = 0; t < nt; t++)
            for (int p = p0; p < p1; p++) {
                int n0 = p * nr, nn = N - n0 < nr ? N - n0 : nr;
                const float *x = xt + (size_t)p * nr * IC;
                if (small) tile1(out, x, w, nn, t * mr, IC, OC, accumulate, zrow);
                else tile(out, x, w, n0, nn, t * mr, IC, OC, accumulate, zrow, p == p0);
            }
    }
    add_bias(out, bias, N, OC);
}

size_t matmul_packed_floats(int IC, int OC) { return (size_t)((OC + 15) / 16) * 16 * IC; }

void matmul_pack(float *wp, const float *w, int IC, int OC) {
    const int nb = (OC + 15) / 16;
#pragma omp parallel for schedule(static) if ((size_t)OC * IC > 65536)
    for (int b = 0; b < nb; b++) {
        float *dst = wp + (size_t)b * 16 * IC;
        for (int r = 0; r < 16; r++) {
            const int o = b * 16 + r;
            for (int i = 0; i < IC; i++) dst[(size_t)i * 16 + r] = o < OC ? w[(size_t)o * IC + i] : 0.0f;
        }
    }
}

void matmul_forward_packed(float *out, const float *inp, const float *wp, const float *w,
                           const float *bias, int N, int IC, int OC, int accumulate) {
#ifdef HAVE_TILE_T
    _Static_assert(NT == MATMUL_PACKED_ROWS, "the packed path serves tile_t's rows");
    if (N >= 1 && N <= NT) {
        few_rows(TILE_PS, out, inp, wp, N, IC, OC, accumulate);
        add_bias(out, bias, N, OC);
        return;
    }
#endif
    (void)wp;
    matmul_forward(out, inp, w, bias, N, IC, OC, accumulate);
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
