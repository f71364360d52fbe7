/* test_kernels_cuda.c: every CUDA twin (kernels/cuda/kernels_cuda.h) against
 * its CPU kernel (kernels/kernels.h) on the same seeded random inputs,
 * compared element-wise with tol + |cpu| * eps. The CPU kernels are checked
 * against naive references and finite differences in test_kernels.c and
 * test_kernels_attention.c, so agreement here makes the CUDA kernels
 * correct too.
 *
 * Sizes are chosen to cross the kernels' internal tile and block boundaries
 * (rows longer than one thread block, V not a multiple of the block size).
 * Without a GPU every test is skipped and the program exits 0. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/kernels_cuda.h"
#include "kernels/kernels.h"

static int g_gpu;       /* set once by the group setup */
static CudaCtx *g_ctx; /* device 0's stream and cuBLAS handle */

static int group_setup(void **state) {
    (void)state;
    g_gpu = cuda_available();
    if (!g_gpu) {
        printf("no GPU: skipping CUDA kernel tests\n");
        return 0;
    }
    char msg[512];
    g_ctx = cuda_ctx_new(0);
    if (!g_ctx) {
        cuda_take_error(msg, sizeof msg);
        printf("no CUDA context on device 0: %s\n", msg);
        return -1;
    }
    cuda_ctx_use(g_ctx);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    cuda_ctx_free(g_ctx);
    return 0;
}

#define NEED_GPU()                                                            \
    do {                                                                      \
        if (!g_gpu) skip();                                                   \
    } while (0)

/* ---------------------------------------------------------------- helpers */

static float *randn_new(size_t n, Rng *rng, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    tu_randn(x, n, rng, scale);
    return x;
}

static float *copy_new(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static float *nan_new(size_t n) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

/* A device buffer of n NaNs: an output the kernel fails to write stays
 * NaN and fails the comparison (a zeroed one could pass where the expected
 * value is 0). */
static float *cuda_nan(size_t n) {
    float *h = nan_new(n), *d = cuda_upload(h, n);
    free(h);
    return d;
}

/* Downloads device d (n) and compares it with the CPU result ref. */
static void assert_device_close(const float *d, const float *ref, size_t n, float tol,
                                float eps, const char *what) {
    char msg[512];
    if (cuda_sync() < 0 || cuda_take_error(msg, sizeof msg) < 0) fail_msg("%s: %s", what, msg);
    float *h = malloc(sizeof(float) * (n ? n : 1));
    cuda_download(h, d, n);
    if (cuda_take_error(msg, sizeof msg) < 0) fail_msg("%s: download: %s", what, msg);
    tu_assert_close(h, ref, n, tol, eps, what);
    free(h);
}

/* ---------------------------------------------------------------- linear */

/* Proves matmul_forward_cuda (cuBLAS) equals the CPU GEMM and GEMV paths,
 * with and without bias, overwriting or accumulating. */
static void test_matmul_forward_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1101);
    const int IC = 70, OC = 45, Ns[2] = {33, 1};
    for (int ni = 0; ni < 2; ni++) {
        int N = Ns[ni];
        size_t no = (size_t)N * OC;
        float *inp = randn_new((size_t)N * IC, &rng, 1.0f);
        float *w = randn_new((size_t)OC * IC, &rng, 0.2f), *bias = randn_new(OC, &rng, 1.0f);
        float *prev = randn_new(no, &rng, 1.0f);
        float *d_inp = cuda_upload(inp, (size_t)N * IC), *d_w = cuda_upload(w, (size_t)OC * IC);
        float *d_bias = cuda_upload(bias, OC);
        for (int variant = 0; variant < 4; variant++) {
            int with_bias = variant & 1, acc = variant >> 1;
            float *out = acc ? copy_new(prev, no) : nan_new(no);
            float *d_out = cuda_upload(out, no);
            matmul_forward(out, inp, w, with_bias ? bias : NULL, N, IC, OC, acc);
            matmul_forward_cuda(d_out, d_inp, d_w, with_bias ? d_bias : NULL, N, IC, OC, acc);
            assert_device_close(d_out, out, no, 1e-4f, 1e-4f, "matmul_forward_cuda");
            cuda_free(d_out);
            free(out);
        }
        cuda_free(d_inp), cuda_free(d_w), cuda_free(d_bias);
        free(inp), free(w), free(bias), free(prev);
    }
}

/* Proves matmul_backward_cuda accumulates the same dinp, dw, dbias as the
 * CPU kernel, and leaves out NULL gradients. */
static void test_matmul_backward_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1102);
    const int N = 37, IC = 50, OC = 29;
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *inp = randn_new(ni, &rng, 1.0f), *w = randn_new(nw, &rng, 0.3f);
    float *dout = randn_new(no, &rng, 1.0f);
    float *dinp = randn_new(ni, &rng, 1.0f), *dw = randn_new(nw, &rng, 1.0f);
    float *db = randn_new(OC, &rng, 1.0f);
    float *d_inp = cuda_upload(inp, ni), *d_w = cuda_upload(w, nw), *d_dout = cuda_upload(dout, no);
    float *d_dinp = cuda_upload(dinp, ni), *d_dw = cuda_upload(dw, nw), *d_db = cuda_upload(db, OC);
    matmul_backward(dinp, dw, db, dout, inp, w, N, IC, OC);
    matmul_backward_cuda(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, IC, OC);
    assert_device_close(d_dinp, dinp, ni, 1e-4f, 1e-4f, "matmul_backward_cuda dinp");
    assert_device_close(d_dw, dw, nw, 1e-4f, 1e-4f, "matmul_backward_cuda dw");
    assert_device_close(d_db, db, OC, 1e-4f, 1e-4f, "matmul_backward_cuda dbias");

    matmul_backward(NULL, dw, NULL, dout, inp, w, N, IC, OC);
    matmul_backward_cuda(NULL, d_dw, NULL, d_dout, d_inp, d_w, N, IC, OC);
    assert_device_close(d_dw, dw, nw, 1e-4f, 1e-4f, "matmul_backward_cuda dw alone");

    cuda_free(d_inp), cuda_free(d_w), cuda_free(d_dout);
    cuda_free(d_dinp), cuda_free(d_dw), cuda_free(d_db);
    free(inp), free(w), free(dout), free(dinp), free(dw), free(db);
}

/* Proves embedding_forward_cuda gathers the same rows and
 * embedding_backward_cuda (atomics) accumulates the same sums for repeated
 * ids as the CPU kernels. */
static void test_embedding_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1103);
    const int V = 50, C = 96, N = 40;
    int ids[40];
    for (int i = 0; i < N; i++) ids[i] = (int)(rng_u64(&rng) % 7) * 7; /* many repeats */
    float *table = randn_new((size_t)V * C, &rng, 1.0f), *dout = randn_new((size_t)N * C, &rng, 1.0f);
    float *dtab = randn_new((size_t)V * C, &rng, 1.0f), *out = nan_new((size_t)N * C);
    int *d_ids = cuda_upload_int(ids, N);
    float *d_table = cuda_upload(table, (size_t)V * C), *d_out = cuda_nan((size_t)N * C);
    float *d_dout = cuda_upload(dout, (size_t)N * C), *d_dtab = cuda_upload(dtab, (size_t)V * C);
    embedding_forward(out, ids, table, N, C);
    embedding_forward_cuda(d_out, d_ids, d_table, N, C);
    assert_device_close(d_out, out, (size_t)N * C, 0.0f, 0.0f, "embedding_forward_cuda");
    embedding_backward(dtab, dout, ids, N, C);
    embedding_backward_cuda(d_dtab, d_dout, d_ids, N, C);
    assert_device_close(d_dtab, dtab, (size_t)V * C, 1e-5f, 1e-5f, "embedding_backward_cuda");
    cuda_free(d_ids), cuda_free(d_table), cuda_free(d_out), cuda_free(d_dout), cuda_free(d_dtab);
    free(table), free(dout), free(dtab), free(out);
}

/* ------------------------------------------------- rmsnorm, rope, swiglu */

/* Proves rmsnorm_forward_cuda (out, rstd) and rmsnorm_backward_cuda (dinp
 * and dw, both accumulating) match the CPU kernels for rows wider than a
 * block. */
static void test_rmsnorm_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1201);
    const int N = 7, C = 300;
    size_t n = (size_t)N * C;
    float *x = randn_new(n, &rng, 2.0f), *w = randn_new(C, &rng, 1.0f);
    float *dout = randn_new(n, &rng, 1.0f);
    float *dx = randn_new(n, &rng, 1.0f), *dw = randn_new(C, &rng, 1.0f);
    float *out = nan_new(n), *rstd = nan_new(N);
    float *d_x = cuda_upload(x, n), *d_w = cuda_upload(w, C), *d_dout = cuda_upload(dout, n);
    float *d_dx = cuda_upload(dx, n), *d_dw = cuda_upload(dw, C);
    float *d_out = cuda_nan(n), *d_rstd = cuda_nan(N);
    rmsnorm_forward(out, rstd, x, w, N, C, 1e-6f);
    rmsnorm_forward_cuda(d_out, d_rstd, d_x, d_w, N, C, 1e-6f);
    assert_device_close(d_out, out, n, 1e-5f, 1e-5f, "rmsnorm_forward_cuda out");
    assert_device_close(d_rstd, rstd, N, 0.0f, 1e-5f, "rmsnorm_forward_cuda rstd");
    rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
    rmsnorm_backward_cuda(d_dx, d_dw, d_dout, d_x, d_w, d_rstd, N, C);
    assert_device_close(d_dx, dx, n, 1e-5f, 1e-4f, "rmsnorm_backward_cuda dinp");
    assert_device_close(d_dw, dw, C, 1e-5f, 1e-4f, "rmsnorm_backward_cuda dw");
    cuda_free(d_x), cuda_free(d_w), cuda_free(d_dout), cuda_free(d_dx), cuda_free(d_dw);
    cuda_free(d_out), cuda_free(d_rstd);
    free(x), free(w), free(dout), free(dx), free(dw), free(out), free(rstd);
}

/* Proves rope_forward_cuda and rope_backward_cuda rotate like the CPU
 * kernels in both conventions, at positions up to 4000 (fp32 angles; the
 * device's powf/sinf may differ by an ulp, hence tol 1e-3). */
static void test_rope_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1202);
    const int N = 9, NHX = 3, HS = 64;
    const int pos[9] = {0, 1, 2, 3, 100, 511, 1000, 2047, 4000};
    size_t n = (size_t)N * NHX * HS;
    int *d_pos = cuda_upload_int(pos, N);
    for (int il = 0; il < 2; il++) {
        float *x = randn_new(n, &rng, 1.0f), *g = randn_new(n, &rng, 1.0f);
        float *d_x = cuda_upload(x, n), *d_g = cuda_upload(g, n);
        /* the same table on both: the angles agree to the bit */
        float inv_a[HS / 2], inv_b[HS / 2];
        rope_freq_plain(inv_a, HS, 500000.0f);
        rope_freq_plain(inv_b, HS, 10000.0f);
        rope_forward(x, pos, N, NHX, HS, (RopeFreq){inv_a, 1.0f}, il);
        rope_forward_cuda(d_x, d_pos, N, NHX, HS, inv_a, 1.0f, il);
        assert_device_close(d_x, x, n, 1e-5f, 1e-5f, "rope_forward_cuda");
        rope_backward(g, pos, N, NHX, HS, (RopeFreq){inv_b, 1.25f}, il);
        rope_backward_cuda(d_g, d_pos, N, NHX, HS, inv_b, 1.25f, il);
        assert_device_close(d_g, g, n, 1e-5f, 1e-5f, "rope_backward_cuda (scaled)");
        cuda_free(d_x), cuda_free(d_g);
        free(x), free(g);
    }
    cuda_free(d_pos);
}

/* Proves swiglu_forward_cuda and swiglu_backward_cuda match the CPU
 * kernels elementwise, saturated gates included. */
static void test_swiglu_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1203);
    const size_t n = 10007;
    float *g = randn_new(n, &rng, 4.0f), *u = randn_new(n, &rng, 1.0f);
    float *dout = randn_new(n, &rng, 1.0f);
    g[0] = 90.0f, g[1] = -90.0f;
    float *out = nan_new(n), *dg = nan_new(n), *du = nan_new(n);
    float *d_g = cuda_upload(g, n), *d_u = cuda_upload(u, n), *d_dout = cuda_upload(dout, n);
    float *d_out = cuda_nan(n), *d_dg = cuda_nan(n), *d_du = cuda_nan(n);
    swiglu_forward(out, g, u, n);
    swiglu_forward_cuda(d_out, d_g, d_u, n);
    assert_device_close(d_out, out, n, 1e-6f, 1e-5f, "swiglu_forward_cuda");
    swiglu_backward(dg, du, dout, g, u, n);
    swiglu_backward_cuda(d_dg, d_du, d_dout, d_g, d_u, n);
    assert_device_close(d_dg, dg, n, 1e-6f, 1e-5f, "swiglu_backward_cuda dgate");
    assert_device_close(d_du, du, n, 1e-6f, 1e-5f, "swiglu_backward_cuda dup");
    cuda_free(d_g), cuda_free(d_u), cuda_free(d_dout);
    cuda_free(d_out), cuda_free(d_dg), cuda_free(d_du);
    free(g), free(u), free(dout), free(out), free(dg), free(du);
}

/* ------------------------------------------------------------- attention */

/* attention_forward_cuda (out, lse) and attention_backward_cuda (dq, dk,
 * dv) against the CPU kernels on a packed batch with boundaries cu (B+1)
 * and random q, k, v; backward starts from the CPU forward's out and lse,
 * so that only backward differs. */
static void check_attention(Rng *rng, const int *cu, int B, int NH, int NKV, int HS,
                            const char *what) {
    const int N = cu[B];
    size_t nq = (size_t)N * NH * HS, nk = (size_t)N * NKV * HS, nl = (size_t)N * NH;
    float *q = randn_new(nq, rng, 1.0f), *k = randn_new(nk, rng, 1.0f);
    float *v = randn_new(nk, rng, 1.0f), *dout = randn_new(nq, rng, 1.0f);
    float *out = nan_new(nq), *lse = nan_new(nl);
    float *dq = nan_new(nq), *dk = nan_new(nk), *dv = nan_new(nk);
    int *d_cu = cuda_upload_int(cu, B + 1);
    float *d_q = cuda_upload(q, nq), *d_k = cuda_upload(k, nk), *d_v = cuda_upload(v, nk);
    float *d_dout = cuda_upload(dout, nq), *d_out = cuda_nan(nq), *d_lse = cuda_nan(nl);
    float *d_dq = cuda_nan(nq), *d_dk = cuda_nan(nk), *d_dv = cuda_nan(nk);
    char msg[160];

    attention_forward(out, lse, q, k, v, cu, B, NH, NKV, HS);
    attention_forward_cuda(d_out, d_lse, d_q, d_k, d_v, d_cu, B, N, NH, NKV, HS);
    snprintf(msg, sizeof msg, "attention_forward_cuda out (%s)", what);
    assert_device_close(d_out, out, nq, 1e-5f, 1e-4f, msg);
    snprintf(msg, sizeof msg, "attention_forward_cuda lse (%s)", what);
    assert_device_close(d_lse, lse, nl, 1e-5f, 1e-5f, msg);

    float *d_out_cpu = cuda_upload(out, nq), *d_lse_cpu = cuda_upload(lse, nl);
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, cu, B, NH, NKV, HS);
    attention_backward_cuda(d_dq, d_dk, d_dv, d_dout, d_out_cpu, d_lse_cpu, d_q, d_k, d_v,
                            d_cu, B, N, NH, NKV, HS);
    snprintf(msg, sizeof msg, "attention_backward_cuda dq (%s)", what);
    assert_device_close(d_dq, dq, nq, 1e-4f, 1e-3f, msg);
    snprintf(msg, sizeof msg, "attention_backward_cuda dk (%s)", what);
    assert_device_close(d_dk, dk, nk, 1e-4f, 1e-3f, msg);
    snprintf(msg, sizeof msg, "attention_backward_cuda dv (%s)", what);
    assert_device_close(d_dv, dv, nk, 1e-4f, 1e-3f, msg);

    cuda_free(d_cu), cuda_free(d_q), cuda_free(d_k), cuda_free(d_v), cuda_free(d_dout);
    cuda_free(d_out), cuda_free(d_lse), cuda_free(d_dq), cuda_free(d_dk), cuda_free(d_dv);
    cuda_free(d_out_cpu), cuda_free(d_lse_cpu);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
}

/* attention_decode_cuda against the CPU decode: B query rows, row b
 * reading cache slot slots[b] (slots NULL: slot b) of S slots of maxT
 * positions, lens[b] of them valid; the positions past lens[b] hold NaN,
 * so reading them would show. */
static void check_decode(Rng *rng, const int *slots, const int *lens, int B, int S, int NH,
                         int NKV, int HS, int maxT, const char *what) {
    const int kd = NKV * HS;
    size_t nq = (size_t)B * NH * HS, nc = (size_t)S * maxT * kd;
    float *q = randn_new(nq, rng, 1.0f), *kc = nan_new(nc), *vc = nan_new(nc);
    for (int b = 0; b < B; b++) {
        int slot = slots ? slots[b] : b;
        tu_randn(kc + (size_t)slot * maxT * kd, (size_t)lens[b] * kd, rng, 1.0f);
        tu_randn(vc + (size_t)slot * maxT * kd, (size_t)lens[b] * kd, rng, 1.0f);
    }
    float *out = nan_new(nq);
    int *d_lens = cuda_upload_int(lens, B), *d_slots = slots ? cuda_upload_int(slots, B) : NULL;
    float *d_q = cuda_upload(q, nq), *d_kc = cuda_upload(kc, nc), *d_vc = cuda_upload(vc, nc);
    float *d_out = cuda_nan(nq);
    attention_decode(out, q, kc, vc, slots, lens, B, NH, NKV, HS, maxT);
    attention_decode_cuda(d_out, d_q, d_kc, d_vc, d_slots, d_lens, B, NH, NKV, HS, maxT);
    char msg[160];
    snprintf(msg, sizeof msg, "attention_decode_cuda (%s)", what);
    assert_device_close(d_out, out, nq, 1e-5f, 1e-4f, msg);
    cuda_free(d_lens), cuda_free(d_slots), cuda_free(d_q), cuda_free(d_kc), cuda_free(d_vc);
    cuda_free(d_out);
    free(q), free(kc), free(vc), free(out);
}

/* A packed GQA batch (NH=4, NKV=2) whose sequences of lengths 1, 7, 150,
 * 200 are shorter and longer than the kernels' 128-row tiles. */
static void test_attention_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1301);
    const int cu[5] = {0, 1, 8, 158, 358};
    check_attention(&rng, cu, 4, 4, 2, 32, "HS 32");
}

/* Caches with 1, 5 and 140 valid rows, one slot per row. */
static void test_attention_decode_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1302);
    const int lens[3] = {1, 5, 140};
    check_decode(&rng, NULL, lens, 3, 3, 4, 2, 32, 160, "HS 32");
}

/* ---------------------------------------------------- log-probs, entropy */

/* Proves logprob_forward_cuda (lp, ent, lse; ent NULL allowed) and
 * logprob_backward_cuda (with dlp or dent NULL too) match the CPU kernels at
 * temperatures 1 and 0.7, for V not a multiple of the block size and
 * ignored targets (-1). */
static void test_logprob_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1401);
    const int N = 5, V = 1003;
    const int targets[5] = {0, -1, 1002, 517, 3};
    const float temps[2] = {1.0f, 1.0f / 0.7f};
    size_t n = (size_t)N * V;
    float *logits = randn_new(n, &rng, 3.0f);
    float *a = randn_new(N, &rng, 1.0f), *e = randn_new(N, &rng, 1.0f);
    int *d_t = cuda_upload_int(targets, N);
    float *d_logits = cuda_upload(logits, n), *d_a = cuda_upload(a, N), *d_e = cuda_upload(e, N);
    float *d_lp = cuda_nan(N), *d_ent = cuda_nan(N), *d_lse = cuda_nan(N);
    float *d_dz = cuda_nan(n);
    float lp[5], ent[5], lse[5];
    float *dz = nan_new(n);
    for (int ti = 0; ti < 2; ti++) {
        float it = temps[ti];
        logprob_forward(lp, ent, lse, logits, targets, N, V, it);
        logprob_forward_cuda(d_lp, d_ent, d_lse, d_logits, d_t, N, V, it);
        assert_device_close(d_lp, lp, N, 1e-5f, 1e-5f, "logprob_forward_cuda lp");
        assert_device_close(d_ent, ent, N, 1e-4f, 1e-5f, "logprob_forward_cuda ent");
        assert_device_close(d_lse, lse, N, 1e-5f, 1e-5f, "logprob_forward_cuda lse");
        logprob_forward_cuda(d_lp, NULL, d_lse, d_logits, d_t, N, V, it);
        assert_device_close(d_lp, lp, N, 1e-5f, 1e-5f, "logprob_forward_cuda lp, ent NULL");

        /* backward from the CPU forward's lse/ent, so only backward differs */
        float *d_lse_cpu = cuda_upload(lse, N), *d_ent_cpu = cuda_upload(ent, N);
        for (int variant = 0; variant < 3; variant++) {
            const float *ha = variant == 1 ? NULL : a, *he = variant == 2 ? NULL : e;
            const float *da = variant == 1 ? NULL : d_a, *de = variant == 2 ? NULL : d_e;
            logprob_backward(dz, ha, he, logits, lse, ent, targets, N, V, it);
            logprob_backward_cuda(d_dz, da, de, d_logits, d_lse_cpu, d_ent_cpu, d_t, N, V, it);
            assert_device_close(d_dz, dz, n, 1e-6f, 1e-4f, "logprob_backward_cuda");
        }
        cuda_free(d_lse_cpu), cuda_free(d_ent_cpu);
    }
    cuda_free(d_t), cuda_free(d_logits), cuda_free(d_a), cuda_free(d_e);
    cuda_free(d_lp), cuda_free(d_ent), cuda_free(d_lse), cuda_free(d_dz);
    free(logits), free(a), free(e), free(dz);
}

/* ------------------------------------------------------------ real sizes */

/* The shapes real models have, which the small cases above do not reach:
 * head size 128, GQA groups of 8 (attention) and 4 (decode), a sequence of
 * 4096 beside one of a single token, decode through slots with lengths
 * across several 128-key tiles, and a 152k vocabulary (Qwen's). */
static void test_real_dims_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1901);
    const int cu[4] = {0, 1, 301, 4397};
    check_attention(&rng, cu, 3, 16, 2, 128, "4k tokens, HS 128, GQA 8");
    /* 4 rows read slots 5, 0, 2, 7 of 8, holding 1, 129, 1000 and 300 keys */
    const int slots[4] = {5, 0, 2, 7}, lens[4] = {1, 129, 1000, 300};
    check_decode(&rng, slots, lens, 4, 8, 32, 8, 128, 1024, "slots, HS 128, GQA 4");
    {
        const int N = 16, V = 152064;
        int targets[16];
        for (int i = 0; i < N; i++) targets[i] = i == 3 ? -1 : (int)(rng_u64(&rng) % V);
        size_t n = (size_t)N * V;
        float *logits = randn_new(n, &rng, 4.0f), *a = randn_new(N, &rng, 1.0f);
        float *e = randn_new(N, &rng, 1.0f), *dz = nan_new(n);
        logits[7 * (size_t)V + 11] = 40.0f; /* a peaked row: a small entropy */
        float lp[16], ent[16], lse[16];
        int *d_t = cuda_upload_int(targets, N);
        float *d_logits = cuda_upload(logits, n), *d_a = cuda_upload(a, N), *d_e = cuda_upload(e, N);
        float *d_lp = cuda_nan(N), *d_ent = cuda_nan(N), *d_lse = cuda_nan(N), *d_dz = cuda_nan(n);
        logprob_forward(lp, ent, lse, logits, targets, N, V, 1.0f);
        logprob_forward_cuda(d_lp, d_ent, d_lse, d_logits, d_t, N, V, 1.0f);
        assert_device_close(d_lp, lp, N, 1e-4f, 1e-5f, "logprob_forward_cuda lp (V 152k)");
        assert_device_close(d_ent, ent, N, 1e-4f, 1e-4f, "logprob_forward_cuda ent (V 152k)");
        assert_device_close(d_lse, lse, N, 1e-4f, 1e-5f, "logprob_forward_cuda lse (V 152k)");
        float *d_lse_cpu = cuda_upload(lse, N), *d_ent_cpu = cuda_upload(ent, N);
        logprob_backward(dz, a, e, logits, lse, ent, targets, N, V, 1.0f);
        logprob_backward_cuda(d_dz, d_a, d_e, d_logits, d_lse_cpu, d_ent_cpu, d_t, N, V, 1.0f);
        assert_device_close(d_dz, dz, n, 1e-6f, 1e-4f, "logprob_backward_cuda (V 152k)");
        cuda_free(d_t), cuda_free(d_logits), cuda_free(d_a), cuda_free(d_e), cuda_free(d_lp);
        cuda_free(d_ent), cuda_free(d_lse), cuda_free(d_dz), cuda_free(d_lse_cpu);
        cuda_free(d_ent_cpu);
        free(logits), free(a), free(e), free(dz);
    }
}

/* ---------------------------------------------------- scale, scalar head */

/* Proves scale_cuda, head_forward_cuda and head_backward_cuda equal the CPU
 * backend's loops (C above a warp's 32 lanes, rows with dout 0 skipped). */
static void test_head_cuda(void **state) {
    (void)state;
    NEED_GPU();
    Rng rng;
    rng_seed(&rng, 1701);
    const int N = 37, C = 300;
    size_t nx = (size_t)N * C;
    float *x = randn_new(nx, &rng, 1.0f), *w = randn_new(C + 1, &rng, 1.0f);
    float *dout = randn_new(N, &rng, 1.0f), *dx = randn_new(nx, &rng, 1.0f);
    float *dw = randn_new(C + 1, &rng, 1.0f);
    for (int i = 0; i < N; i += 3) dout[i] = 0.0f;
    float *d_x = cuda_upload(x, nx), *d_w = cuda_upload(w, C + 1), *d_dout = cuda_upload(dout, N);
    float *d_dx = cuda_upload(dx, nx), *d_dw = cuda_upload(dw, C + 1);
    float *out = nan_new(N), *d_out = cuda_upload(out, N);
    Device *cpu;
    assert_int_equal(dev_open(&cpu, "cpu"), 0);
    cpu->be->head_forward(cpu, out, x, w, N, C);
    head_forward_cuda(d_out, d_x, d_w, N, C);
    assert_device_close(d_out, out, N, 1e-5f, 1e-5f, "head_forward_cuda");
    cpu->be->head_backward(cpu, dx, dw, dout, x, w, N, C);
    head_backward_cuda(d_dx, d_dw, d_dout, d_x, d_w, N, C);
    assert_device_close(d_dx, dx, nx, 1e-6f, 1e-6f, "head_backward_cuda dx");
    assert_device_close(d_dw, dw, C + 1, 1e-5f, 1e-5f, "head_backward_cuda dw");
    cpu->be->scale(cpu, x, nx, 0.37f);
    scale_cuda(d_x, nx, 0.37f);
    assert_device_close(d_x, x, nx, 0.0f, 0.0f, "scale_cuda");
    dev_close(&cpu);
    cuda_free(d_x), cuda_free(d_w), cuda_free(d_dout), cuda_free(d_dx), cuda_free(d_dw);
    cuda_free(d_out);
    free(x), free(w), free(dout), free(dx), free(dw), free(out);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_forward_cuda),
        cmocka_unit_test(test_matmul_backward_cuda),
        cmocka_unit_test(test_embedding_cuda),
        cmocka_unit_test(test_rmsnorm_cuda),
        cmocka_unit_test(test_rope_cuda),
        cmocka_unit_test(test_swiglu_cuda),
        cmocka_unit_test(test_attention_cuda),
        cmocka_unit_test(test_attention_decode_cuda),
        cmocka_unit_test(test_logprob_cuda),
        cmocka_unit_test(test_head_cuda),
        cmocka_unit_test(test_real_dims_cuda),
    };
    /* one test per process (scripts/gpu-check.sh): a sticky device fault in
     * one kernel must not fail the others */
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    if (!cuda_available()) {
        printf("no GPU: skipping CUDA kernel tests\n");
        return 77; /* ctest SKIP_RETURN_CODE: reported as skipped, not passed */
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
