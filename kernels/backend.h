/* backend.h: one device's memory and math, as a table of functions.
 *
 * model/ reaches every kernel and every buffer it computes in through a
 * Backend, as ggml's backends do: the CPU backend wraps kernels/cpu/, the
 * CUDA backend kernels/cuda/. A pointer a backend allocates or takes is
 * memory of its device; only upload and download cross to the host.
 *
 *   Device *d;
 *   if (dev_open(&d, "cuda:0") < 0) ...          // "no CUDA device", ...
 *   float *x = d->be->alloc(d, bytes);
 *   d->be->upload(d, x, host, bytes);
 *   d->be->rmsnorm_forward(d, out, rstd, x, w, N, C, eps);
 *   if (dev_sync(d) < 0) ...                       // the first failure, named
 *
 * Errors are sticky: the first failure of any call (an allocation, a
 * launch, a library call, an asynchronous fault found later) is kept in
 * the device with its message, later calls do nothing, and dev_sync
 * reports it (pl_error) and clears it. Nothing prints.
 *
 * The kernels have the signatures and the semantics of kernels/kernels.h
 * (shapes, layouts, which outputs accumulate), plus the device first, and
 * these differences:
 *   - attention takes N (= cu_seqlens[B]) and max_seqlen from the host, so
 *     that no kernel reads a device value back;
 *   - every int array (ids, targets, pos, cu_seqlens, slots, lens) is
 *     device memory too; RoPE's frequency table is host memory (by value). */
#ifndef PLUMB_KERNELS_BACKEND_H
#define PLUMB_KERNELS_BACKEND_H

#include <stddef.h>

#include "kernels/kernels.h" /* RopeFreq */

typedef struct Backend Backend;

typedef struct Device {
    const Backend *be;
    char name[32]; /* "cpu", "cuda:0"                                   */
    int id;        /* the CUDA ordinal; 0 on the CPU                    */
    int err;       /* sticky: the first failure since dev_sync (< 0)    */
    char msg[256]; /* its message                                       */
    int lost;      /* the device cannot compute again (a fault that
                      corrupts a GPU context): every call fails, and
                      dev_sync reports it each time                      */
    void *impl;    /* the backend's own: stream, library handles, ...   */
} Device;

struct Backend {
    const char *name; /* "cpu", "cuda" */
    int host_memory;  /* its pointers are host pointers                 */

    /* device lifetime: open fills d->impl; on failure it returns < 0 with
     * the reason in d->msg */
    int (*open)(Device *d);
    void (*close)(Device *d);
    /* waits for queued work; records a failure found there */
    void (*sync)(Device *d);

    /* memory, in bytes. alloc returns zeroed memory, or NULL with the
     * sticky error set (and NULL for 0 bytes, without error). download
     * waits for the work queued before it. */
    void *(*alloc)(Device *d, size_t bytes);
    void (*free)(Device *d, void *p);
    void (*upload)(Device *d, void *dst, const void *src, size_t bytes);
    void (*download)(Device *d, void *dst, const void *src, size_t bytes);
    void (*copy)(Device *d, void *dst, const void *src, size_t bytes); /* no overlap */
    void (*zero)(Device *d, void *dst, size_t bytes);

    /* kernels (kernels.h) */
    void (*matmul_forward)(Device *d, float *out, const float *inp, const float *w,
                           const float *bias, int N, int IC, int OC, int accumulate);
    void (*matmul_backward)(Device *d, float *dinp, float *dw, float *dbias, const float *dout,
                            const float *inp, const float *w, int N, int IC, int OC);
    /* the few-row layout (kernels.h); NULL in a backend without it */
    void (*matmul_pack)(Device *d, float *wp, const float *w, int IC, int OC);
    void (*matmul_forward_packed)(Device *d, float *out, const float *inp, const float *wp,
                                  const float *w, const float *bias, int N, int IC, int OC,
                                  int accumulate);
    void (*rmsnorm_forward)(Device *d, float *out, float *rstd, const float *inp, const float *w,
                            int N, int C, float eps);
    void (*rmsnorm_backward)(Device *d, float *dinp, float *dw, const float *dout,
                             const float *inp, const float *w, const float *rstd, int N, int C);
    void (*rope_forward)(Device *d, float *x, const int *pos, int N, int NHX, int HS, RopeFreq f,
                         int interleaved);
    void (*rope_backward)(Device *d, float *dx, const int *pos, int N, int NHX, int HS, RopeFreq f,
                          int interleaved);
    void (*swiglu_forward)(Device *d, float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(Device *d, float *dgate, float *dup, const float *dout,
                            const float *gate, const float *up, size_t n);
    void (*attention_forward)(Device *d, float *out, float *lse, const float *q, const float *k,
                              const float *v, const int *cu_seqlens, int B, int N, int max_seqlen,
                              int NH, int NKV, int HS);
    void (*attention_backward)(Device *d, float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const int *cu_seqlens, int B, int N,
                               int max_seqlen, int NH, int NKV, int HS);
    void (*attention_decode)(Device *d, float *out, const float *q, const float *kc,
                             const float *vc, const int *slots, const int *lens, int B, int NH,
                             int NKV, int HS, int maxT);
    void (*logprob_forward)(Device *d, float *lp, float *ent, float *lse, const float *logits,
                            const int *targets, int N, int V, float inv_temp);
    void (*logprob_backward)(Device *d, float *dlogits, const float *dlp, const float *dent,
                             const float *logits, const float *lse, const float *ent,
                             const int *targets, int N, int V, float inv_temp);
    void (*embedding_forward)(Device *d, float *out, const int *ids, const float *table, int N,
                              int C);
    void (*embedding_backward)(Device *d, float *dtable, const float *dout, const int *ids, int N,
                               int C);

    /* x (n) *= s */
    void (*scale)(Device *d, float *x, size_t n, float s);
    /* A scalar head, w (C + 1) = weight then bias:
     * forward  out (N) = x (N,C) . w[0..C) + w[C];
     * backward dx (N,C) += dout[i] w[0..C), dw[0..C) += sum_i dout[i] x_i,
     *          dw[C] += sum_i dout[i]; rows with dout[i] == 0 add nothing. */
    void (*head_forward)(Device *d, float *out, const float *x, const float *w, int N, int C);
    void (*head_backward)(Device *d, float *dx, float *dw, const float *dout, const float *x,
                          const float *w, int N, int C);
};

/* Opens the device that spec names: "cpu", "cuda" (= "cuda:0"), "cuda:N",
 * or "cpu-staged" (the CPU kernels behind a device boundary, which checks
 * every pointer a kernel gets: backend_staged.c). Fails (< 0, pl_error) on an unknown name, on a build without
 * CUDA, and where the device cannot be used (none present, N out of
 * range), saying which. */
int dev_open(Device **out, const char *spec);
void dev_close(Device **d);

/* Waits for the device and returns its sticky error (0 when none), which
 * it also puts into pl_error ("cuda:0: ...") and clears; unless the device
 * is lost, whose error stays. */
int dev_sync(Device *d);

/* Records a failure (status code, printf message) unless one is already
 * recorded; for backends. */
void dev_fail(Device *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The backends this build has. */
extern const Backend backend_cpu;
extern const Backend backend_staged;
#ifdef PLUMB_HAVE_CUDA
extern const Backend backend_cuda;
#endif

#endif
