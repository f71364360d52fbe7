/* backend_cpu.c: the CPU backend (backend.h), over kernels/cpu/.
 *
 * Device memory is host memory, the kernels are those of kernels.h, and
 * nothing is queued: sync has nothing to wait for. Only an allocation can
 * fail. */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "kernels/kernels.h"

static int cpu_open(Device *d) {
    (void)d;
    return 0;
}

static void cpu_close(Device *d) { (void)d; }
static void cpu_sync(Device *d) { (void)d; }

static void *cpu_alloc(Device *d, size_t bytes) {
    if (d->err || !bytes) return NULL;
    void *p = calloc(1, bytes);
    if (!p) dev_fail(d, PL_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

static void cpu_free(Device *d, void *p) {
    (void)d;
    free(p);
}

static void cpu_copy(Device *d, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src && !d->err) memmove(dst, src, bytes);
}

static void cpu_zero(Device *d, void *dst, size_t bytes) {
    if (bytes && !d->err) memset(dst, 0, bytes);
}

/* The kernels: kernels.h with the device in front. A sticky error stops
 * them as it stops a GPU's queue, so that no kernel reads what a failed
 * allocation left unset. */
#define GUARD                                                                                      \
    if (d->err) return

static void cpu_matmul_forward(Device *d, float *out, const float *inp, const float *w,
                               const float *bias, int N, int IC, int OC, int accumulate) {
    GUARD;
    matmul_forward(out, inp, w, bias, N, IC, OC, accumulate);
}

static void cpu_matmul_pack(Device *d, float *wp, const float *w, int IC, int OC) {
    GUARD;
    matmul_pack(wp, w, IC, OC);
}

static void cpu_matmul_forward_packed(Device *d, float *out, const float *inp, const float *wp,
                                      const float *w, const float *bias, int N, int IC, int OC,
                                      int accumulate) {
    GUARD;
    matmul_forward_packed(out, inp, wp, w, bias, N, IC, OC, accumulate);
}

static void cpu_matmul_backward(Device *d, float *dinp, float *dw, float *dbias,
                                const float *dout, const float *inp, const float *w, int N, int IC,
                                int OC) {
    GUARD;
    matmul_backward(dinp, dw, dbias, dout, inp, w, N, IC, OC);
}

static void cpu_rmsnorm_forward(Device *d, float *out, float *rstd, const float *inp,
                                const float *w, int N, int C, float eps) {
    GUARD;
    rmsnorm_forward(out, rstd, inp, w, N, C, eps);
}

static void cpu_rmsnorm_backward(Device *d, float *dinp, float *dw, const float *dout,
                                 const float *inp, const float *w, const float *rstd, int N,
                                 int C) {
    GUARD;
    rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
}

static void cpu_rope_forward(Device *d, float *x, const int *pos, int N, int NHX, int HS,
                             RopeFreq f, int interleaved) {
    GUARD;
    rope_forward(x, pos, N, NHX, HS, f, interleaved);
}

static void cpu_rope_backward(Device *d, float *dx, const int *pos, int N, int NHX, int HS,
                              RopeFreq f, int interleaved) {
    GUARD;
    rope_backward(dx, pos, N, NHX, HS, f, interleaved);
}

static void cpu_swiglu_forward(Device *d, float *out, const float *gate, const float *up,
                               size_t n) {
    GUARD;
    swiglu_forward(out, gate, up, n);
}

static void cpu_swiglu_backward(Device *d, float *dgate, float *dup, const float *dout,
                                const float *gate, const float *up, size_t n) {
    GUARD;
    swiglu_backward(dgate, dup, dout, gate, up, n);
}

static void cpu_attention_forward(Device *d, float *out, float *lse, const float *q,
                                  const float *k, const float *v, const int *cu, int B, int N,
                                  int max_seqlen, int NH, int NKV, int HS) {
    GUARD;
    (void)N, (void)max_seqlen; /* the CPU kernel reads them from cu */
    attention_forward(out, lse, q, k, v, cu, B, NH, NKV, HS);
}

static void cpu_attention_backward(Device *d, float *dq, float *dk, float *dv, const float *dout,
                                   const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, const int *cu, int B, int N,
                                   int max_seqlen, int NH, int NKV, int HS) {
    GUARD;
    (void)N, (void)max_seqlen;
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, cu, B, NH, NKV, HS);
}

static void cpu_attention_decode(Device *d, float *out, const float *q, const float *kc,
                                 const float *vc, const int *slots, const int *lens, int B, int NH,
                                 int NKV, int HS, int maxT) {
    GUARD;
    attention_decode(out, q, kc, vc, slots, lens, B, NH, NKV, HS, maxT);
}

static void cpu_logprob_forward(Device *d, float *lp, float *ent, float *lse, const float *logits,
                                const int *targets, int N, int V, float inv_temp) {
    GUARD;
    logprob_forward(lp, ent, lse, logits, targets, N, V, inv_temp);
}

static void cpu_logprob_backward(Device *d, float *dlogits, const float *dlp, const float *dent,
                                 const float *logits, const float *lse, const float *ent,
                                 const int *targets, int N, int V, float inv_temp) {
    GUARD;
    logprob_backward(dlogits, dlp, dent, logits, lse, ent, targets, N, V, inv_temp);
}

static void cpu_embedding_forward(Device *d, float *out, const int *ids, const float *table, int N,
                                  int C) {
    GUARD;
    embedding_forward(out, ids, table, N, C);
}

static void cpu_embedding_backward(Device *d, float *dtable, const float *dout, const int *ids,
                                   int N, int C) {
    GUARD;
    embedding_backward(dtable, dout, ids, N, C);
}

static void cpu_scale(Device *d, float *x, size_t n, float s) {
    GUARD;
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

static void cpu_head_forward(Device *d, float *out, const float *x, const float *w, int N, int C) {
    GUARD;
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float s = w[C];
        for (int j = 0; j < C; j++)
            s += xi[j] * w[j];
        out[i] = s;
    }
}

static void cpu_head_backward(Device *d, float *dx, float *dw, const float *dout, const float *x,
                              const float *w, int N, int C) {
    GUARD;
    for (int i = 0; i < N; i++) {
        float g = dout[i];
        if (g == 0.0f) continue;
        const float *xi = x + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        for (int j = 0; j < C; j++) {
            dw[j] += g * xi[j];
            dxi[j] += g * w[j];
        }
        dw[C] += g;
    }
}

#undef GUARD

const Backend backend_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .open = cpu_open,
    .close = cpu_close,
    .sync = cpu_sync,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .matmul_pack = cpu_matmul_pack,
    .matmul_forward_packed = cpu_matmul_forward_packed,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_decode = cpu_attention_decode,
    .logprob_forward = cpu_logprob_forward,
    .logprob_backward = cpu_logprob_backward,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .scale = cpu_scale,
    .head_forward = cpu_head_forward,
    .head_backward = cpu_head_backward,
};
