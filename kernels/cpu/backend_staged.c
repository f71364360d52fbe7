/* backend_staged.c: "cpu-staged", the CPU kernels behind a device boundary
 * (backend.h).
 *
 * It computes what the CPU backend computes, but says its memory is not
 * the host's: a model on it keeps device twins of its parameters and
 * gradients, uploads and downloads them, and puts the base weights on the
 * device, as it does on a GPU. And every pointer a kernel is given must lie
 * in memory this device allocated; one that does not (a host buffer passed
 * where a device buffer belongs) is a sticky error naming the kernel. So
 * the transfers of the GPU path are tested on machines without a GPU. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/backend.h"

typedef struct {
    uintptr_t *lo, *hi; /* allocations [lo, hi), unordered */
    int n, cap;
} Allocs;

static int st_open(Device *d) {
    d->impl = calloc(1, sizeof(Allocs));
    if (!d->impl) {
        snprintf(d->msg, sizeof d->msg, "out of memory");
        return PL_ENOMEM;
    }
    return 0;
}

static void st_close(Device *d) {
    Allocs *a = d->impl;
    if (!a) return;
    for (int i = 0; i < a->n; i++)
        free((void *)a->lo[i]);
    free(a->lo);
    free(a->hi);
    free(a);
    d->impl = NULL;
}

static void st_sync(Device *d) { (void)d; }

static void *st_alloc(Device *d, size_t bytes) {
    Allocs *a = d->impl;
    if (d->err || !bytes) return NULL;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        uintptr_t *lo = realloc(a->lo, sizeof *lo * cap);
        if (lo) a->lo = lo;
        uintptr_t *hi = lo ? realloc(a->hi, sizeof *hi * cap) : NULL;
        if (hi) a->hi = hi;
        if (!lo || !hi) {
            dev_fail(d, PL_ENOMEM, "out of memory");
            return NULL;
        }
        a->cap = cap;
    }
    void *p = calloc(1, bytes);
    if (!p) {
        dev_fail(d, PL_ENOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    a->lo[a->n] = (uintptr_t)p;
    a->hi[a->n++] = (uintptr_t)p + bytes;
    return p;
}

static void st_free(Device *d, void *p) {
    Allocs *a = d->impl;
    if (!p) return;
    for (int i = 0; i < a->n; i++) {
        if (a->lo[i] != (uintptr_t)p) continue;
        a->lo[i] = a->lo[a->n - 1];
        a->hi[i] = a->hi[--a->n];
        free(p);
        return;
    }
    dev_fail(d, PL_EINVAL, "free: %p is not memory of this device", p);
}

/* 1 when [p, p + bytes) lies in one allocation (NULL and empty ranges pass). */
static int on_device(const Device *d, const void *p, size_t bytes) {
    const Allocs *a = d->impl;
    uintptr_t x = (uintptr_t)p;
    if (!p || !bytes) return 1;
    for (int i = 0; i < a->n; i++)
        if (x >= a->lo[i] && x + bytes <= a->hi[i]) return 1;
    return 0;
}

static int need(Device *d, const char *what, const void *p, size_t bytes) {
    if (d->err) return 0;
    if (on_device(d, p, bytes)) return 1;
    dev_fail(d, PL_EINVAL, "%s: %p (%zu bytes) is not memory of this device", what, p, bytes);
    return 0;
}

static void st_upload(Device *d, void *dst, const void *src, size_t bytes) {
    if (need(d, "upload", dst, bytes)) memmove(dst, src, bytes);
}

static void st_download(Device *d, void *dst, const void *src, size_t bytes) {
    if (need(d, "download", src, bytes)) memmove(dst, src, bytes);
}

static void st_copy(Device *d, void *dst, const void *src, size_t bytes) {
    if (need(d, "copy", dst, bytes) && need(d, "copy", src, bytes)) memmove(dst, src, bytes);
}

static void st_zero(Device *d, void *dst, size_t bytes) {
    if (need(d, "zero", dst, bytes)) memset(dst, 0, bytes);
}

/* Each kernel checks the first element of every buffer it is given (their
 * extents follow from shapes the CPU kernels check in their own tests). */
#define F sizeof(float)
#define I sizeof(int)
#define CPU backend_cpu

static void st_matmul_forward(Device *d, float *out, const float *inp, const float *w,
                              const float *bias, int N, int IC, int OC, int acc) {
    if (need(d, "matmul_forward out", out, F) && need(d, "matmul_forward inp", inp, F) &&
        need(d, "matmul_forward w", w, F) && need(d, "matmul_forward bias", bias, F))
        CPU.matmul_forward(d, out, inp, w, bias, N, IC, OC, acc);
}

static void st_matmul_backward(Device *d, float *dinp, float *dw, float *dbias, const float *dout,
                               const float *inp, const float *w, int N, int IC, int OC) {
    if (need(d, "matmul_backward dinp", dinp, F) && need(d, "matmul_backward dw", dw, F) &&
        need(d, "matmul_backward dbias", dbias, F) && need(d, "matmul_backward dout", dout, F) &&
        need(d, "matmul_backward inp", inp, F) && need(d, "matmul_backward w", w, F))
        CPU.matmul_backward(d, dinp, dw, dbias, dout, inp, w, N, IC, OC);
}

static void st_rmsnorm_forward(Device *d, float *out, float *rstd, const float *inp,
                               const float *w, int N, int C, float eps) {
    if (need(d, "rmsnorm_forward out", out, F) && need(d, "rmsnorm_forward rstd", rstd, F) &&
        need(d, "rmsnorm_forward inp", inp, F) && need(d, "rmsnorm_forward w", w, F))
        CPU.rmsnorm_forward(d, out, rstd, inp, w, N, C, eps);
}

static void st_rmsnorm_backward(Device *d, float *dinp, float *dw, const float *dout,
                                const float *inp, const float *w, const float *rstd, int N,
                                int C) {
    if (need(d, "rmsnorm_backward dinp", dinp, F) && need(d, "rmsnorm_backward dw", dw, F) &&
        need(d, "rmsnorm_backward dout", dout, F) && need(d, "rmsnorm_backward inp", inp, F) &&
        need(d, "rmsnorm_backward w", w, F) && need(d, "rmsnorm_backward rstd", rstd, F))
        CPU.rmsnorm_backward(d, dinp, dw, dout, inp, w, rstd, N, C);
}

/* the frequency table is host memory by contract (backend.h) */
static void st_rope_forward(Device *d, float *x, const int *pos, int N, int NHX, int HS,
                            RopeFreq f, int il) {
    if (need(d, "rope_forward x", x, F) && need(d, "rope_forward pos", pos, I))
        CPU.rope_forward(d, x, pos, N, NHX, HS, f, il);
}

static void st_rope_backward(Device *d, float *dx, const int *pos, int N, int NHX, int HS,
                             RopeFreq f, int il) {
    if (need(d, "rope_backward dx", dx, F) && need(d, "rope_backward pos", pos, I))
        CPU.rope_backward(d, dx, pos, N, NHX, HS, f, il);
}

static void st_swiglu_forward(Device *d, float *out, const float *gate, const float *up,
                              size_t n) {
    if (need(d, "swiglu_forward out", out, F * n) && need(d, "swiglu_forward gate", gate, F * n) &&
        need(d, "swiglu_forward up", up, F * n))
        CPU.swiglu_forward(d, out, gate, up, n);
}

static void st_swiglu_backward(Device *d, float *dgate, float *dup, const float *dout,
                               const float *gate, const float *up, size_t n) {
    if (need(d, "swiglu_backward dgate", dgate, F * n) &&
        need(d, "swiglu_backward dup", dup, F * n) && need(d, "swiglu_backward dout", dout, F * n) &&
        need(d, "swiglu_backward gate", gate, F * n) && need(d, "swiglu_backward up", up, F * n))
        CPU.swiglu_backward(d, dgate, dup, dout, gate, up, n);
}

static void st_attention_forward(Device *d, float *out, float *lse, const float *q,
                                 const float *k, const float *v, const int *cu, int B, int N,
                                 int maxT, int NH, int NKV, int HS) {
    if (need(d, "attention_forward out", out, F) && need(d, "attention_forward lse", lse, F) &&
        need(d, "attention_forward q", q, F) && need(d, "attention_forward k", k, F) &&
        need(d, "attention_forward v", v, F) &&
        need(d, "attention_forward cu_seqlens", cu, I * (size_t)(B + 1)))
        CPU.attention_forward(d, out, lse, q, k, v, cu, B, N, maxT, NH, NKV, HS);
}

static void st_attention_backward(Device *d, float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int *cu, int B, int N,
                                  int maxT, int NH, int NKV, int HS) {
    if (need(d, "attention_backward dq", dq, F) && need(d, "attention_backward dk", dk, F) &&
        need(d, "attention_backward dv", dv, F) && need(d, "attention_backward dout", dout, F) &&
        need(d, "attention_backward out", out, F) && need(d, "attention_backward lse", lse, F) &&
        need(d, "attention_backward q", q, F) && need(d, "attention_backward k", k, F) &&
        need(d, "attention_backward v", v, F) &&
        need(d, "attention_backward cu_seqlens", cu, I * (size_t)(B + 1)))
        CPU.attention_backward(d, dq, dk, dv, dout, out, lse, q, k, v, cu, B, N, maxT, NH, NKV,
                               HS);
}

static void st_attention_decode(Device *d, float *out, const float *q, const float *kc,
                                const float *vc, const int *slots, const int *lens, int B, int NH,
                                int NKV, int HS, int maxT) {
    if (need(d, "attention_decode out", out, F) && need(d, "attention_decode q", q, F) &&
        need(d, "attention_decode kc", kc, F) && need(d, "attention_decode vc", vc, F) &&
        need(d, "attention_decode slots", slots, I * (size_t)B) &&
        need(d, "attention_decode lens", lens, I * (size_t)B))
        CPU.attention_decode(d, out, q, kc, vc, slots, lens, B, NH, NKV, HS, maxT);
}

static void st_logprob_forward(Device *d, float *lp, float *ent, float *lse, const float *logits,
                               const int *targets, int N, int V, float inv_temp) {
    if (need(d, "logprob_forward lp", lp, F * N) && need(d, "logprob_forward ent", ent, F * N) &&
        need(d, "logprob_forward lse", lse, F * N) &&
        need(d, "logprob_forward logits", logits, F * N * V) &&
        need(d, "logprob_forward targets", targets, I * N))
        CPU.logprob_forward(d, lp, ent, lse, logits, targets, N, V, inv_temp);
}

static void st_logprob_backward(Device *d, float *dlogits, const float *dlp, const float *dent,
                                const float *logits, const float *lse, const float *ent,
                                const int *targets, int N, int V, float inv_temp) {
    if (need(d, "logprob_backward dlogits", dlogits, F * N * V) &&
        need(d, "logprob_backward dlp", dlp, F * N) &&
        need(d, "logprob_backward dent", dent, F * N) &&
        need(d, "logprob_backward logits", logits, F * N * V) &&
        need(d, "logprob_backward lse", lse, F * N) &&
        need(d, "logprob_backward ent", ent, F * N) &&
        need(d, "logprob_backward targets", targets, I * N))
        CPU.logprob_backward(d, dlogits, dlp, dent, logits, lse, ent, targets, N, V, inv_temp);
}

static void st_embedding_forward(Device *d, float *out, const int *ids, const float *table, int N,
                                 int C) {
    if (need(d, "embedding_forward out", out, F * N * C) &&
        need(d, "embedding_forward ids", ids, I * N) && need(d, "embedding_forward table", table, F))
        CPU.embedding_forward(d, out, ids, table, N, C);
}

static void st_embedding_backward(Device *d, float *dtable, const float *dout, const int *ids,
                                  int N, int C) {
    if (need(d, "embedding_backward dtable", dtable, F) &&
        need(d, "embedding_backward dout", dout, F * N * C) &&
        need(d, "embedding_backward ids", ids, I * N))
        CPU.embedding_backward(d, dtable, dout, ids, N, C);
}

static void st_scale(Device *d, float *x, size_t n, float s) {
    if (need(d, "scale x", x, F * n)) CPU.scale(d, x, n, s);
}

static void st_head_forward(Device *d, float *out, const float *x, const float *w, int N, int C) {
    if (need(d, "head_forward out", out, F * N) && need(d, "head_forward x", x, F * N * C) &&
        need(d, "head_forward w", w, F * (C + 1)))
        CPU.head_forward(d, out, x, w, N, C);
}

static void st_head_backward(Device *d, float *dx, float *dw, const float *dout, const float *x,
                             const float *w, int N, int C) {
    if (need(d, "head_backward dx", dx, F * N * C) && need(d, "head_backward dw", dw, F * (C + 1)) &&
        need(d, "head_backward dout", dout, F * N) && need(d, "head_backward x", x, F * N * C) &&
        need(d, "head_backward w", w, F * (C + 1)))
        CPU.head_backward(d, dx, dw, dout, x, w, N, C);
}

#undef F
#undef I
#undef CPU

const Backend backend_staged = {
    .name = "cpu-staged",
    .host_memory = 0,
    .open = st_open,
    .close = st_close,
    .sync = st_sync,
    .alloc = st_alloc,
    .free = st_free,
    .upload = st_upload,
    .download = st_download,
    .copy = st_copy,
    .zero = st_zero,
    .matmul_forward = st_matmul_forward,
    .matmul_backward = st_matmul_backward,
    .rmsnorm_forward = st_rmsnorm_forward,
    .rmsnorm_backward = st_rmsnorm_backward,
    .rope_forward = st_rope_forward,
    .rope_backward = st_rope_backward,
    .swiglu_forward = st_swiglu_forward,
    .swiglu_backward = st_swiglu_backward,
    .attention_forward = st_attention_forward,
    .attention_backward = st_attention_backward,
    .attention_decode = st_attention_decode,
    .logprob_forward = st_logprob_forward,
    .logprob_backward = st_logprob_backward,
    .embedding_forward = st_embedding_forward,
    .embedding_backward = st_embedding_backward,
    .scale = st_scale,
    .head_forward = st_head_forward,
    .head_backward = st_head_backward,
};
