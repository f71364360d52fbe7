/* kernels_cuda.h: the CUDA twins of kernels/kernels.h, plus device memory helpers.
 *
 * Every `<name>_cuda` function has exactly the signature and semantics of the
 * CPU kernel `<name>` in kernels/kernels.h (see there for shapes, layouts and
 * the accumulate/overwrite rules), except that every pointer, including the
 * int arrays (cu_seqlens, pos, lens, targets, ids), is a device pointer.
 * Storage and accumulation are fp32 for now.
 *
 * Kernels and cuBLAS calls go to the stream of the calling thread's
 * current context (cuda_ctx_use): a device, a non-blocking stream and a
 * cuBLAS handle bound to it; there is no global handle and nothing runs on
 * the legacy default stream. They are asynchronous, and none reads a device
 * value back (attention takes the row count N from the host). A failed launch or library call is recorded, with the kernel's or
 * the call's name, for cuda_take_error; the function then returns without
 * further work. Nothing prints and nothing exits the process.
 *
 * This header is plain C and is included from C code: no CUDA types. */
#ifndef PLUMB_KERNELS_CUDA_H
#define PLUMB_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- device */

/* 1 if at least one CUDA device is usable, 0 otherwise (no driver, no
 * device, ...). Never aborts and leaves no sticky error behind. */
int cuda_available(void);

/* Waits for the current context's stream (the whole device without one);
 * 0 on success, -1 (recorded for cuda_take_error) if a kernel or copy
 * failed. */
int cuda_sync(void);

/* The first failure recorded on this thread since the last call: -1 with
 * its message in msg (cap bytes), and cleared; 0 when there was none. */
int cuda_take_error(char *msg, size_t cap);

/* Records a failure (what failed, the CUDA message, where) unless one is
 * already recorded; for the .cu files. */
void cuda_note_error(const char *cuda_msg, const char *what, const char *file, int line);

/* A context on device `device` (cudaSetDevice): a non-blocking stream and
 * a cuBLAS handle on it. NULL on failure (recorded for cuda_take_error). */
typedef struct CudaCtx CudaCtx;
CudaCtx *cuda_ctx_new(int device);
void cuda_ctx_free(CudaCtx *c);

/* Makes c the calling thread's current context (and its device current):
 * the kernels below and cuda_sync use it. A kernel called with no current
 * context records an error and does nothing. */
void cuda_ctx_use(CudaCtx *c);
CudaCtx *cuda_ctx_current(void);

/* A new zero-filled device buffer of n floats / ints; NULL on failure
 * (reported on stderr) or when n == 0. Free with cuda_free. */
float *cuda_alloc(size_t n);
int *cuda_alloc_int(size_t n);

/* A new device copy of host x (n); NULL on failure or when n == 0. */
float *cuda_upload(const float *x, size_t n);
int *cuda_upload_int(const int *x, size_t n);

/* Copies n values from device src to host dst, after the work queued on
 * the current context's stream. */
void cuda_download(float *dst, const float *src, size_t n);
void cuda_download_int(int *dst, const int *src, size_t n);

/* Frees a device buffer from the functions above; NULL is fine. */
void cuda_free(void *p);

/* ---------------------------------------------------------------- linear */

void matmul_forward_cuda(float *out, const float *inp, const float *w, const float *bias,
                         int N, int IC, int OC, int accumulate);

void matmul_backward_cuda(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int IC, int OC);

/* --------------------------------------------------------------- rmsnorm */

void rmsnorm_forward_cuda(float *out, float *rstd, const float *inp, const float *w,
                          int N, int C, float eps);

void rmsnorm_backward_cuda(float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, const float *rstd, int N, int C);

/* ------------------------------------------------------------------ rope */

/* inv_freq (HS/2) and scale as in kernels.h's RopeFreq: host memory,
 * passed to the kernel by value. */
void rope_forward_cuda(float *x, const int *pos, int N, int NHX, int HS, const float *inv_freq,
                       float scale, int interleaved);

void rope_backward_cuda(float *dx, const int *pos, int N, int NHX, int HS, const float *inv_freq,
                        float scale, int interleaved);

/* ---------------------------------------------------------------- swiglu */

void swiglu_forward_cuda(float *out, const float *gate, const float *up, size_t n);

void swiglu_backward_cuda(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, size_t n);

/* ------------------------------------------------------------- attention */

/* N = cu_seqlens[B], passed from the host so that nothing reads it back. */
void attention_forward_cuda(float *out, float *lse, const float *q, const float *k,
                            const float *v, const int *cu_seqlens, int B, int N, int NH,
                            int NKV, int HS);

void attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout,
                             const float *out, const float *lse, const float *q,
                             const float *k, const float *v, const int *cu_seqlens, int B,
                             int N, int NH, int NKV, int HS);

void attention_decode_cuda(float *out, const float *q, const float *kc, const float *vc,
                           const int *slots, const int *lens, int B, int NH, int NKV, int HS,
                           int maxT);

/* ---------------------------------------------------- log-probs, entropy */

void logprob_forward_cuda(float *lp, float *ent, float *lse, const float *logits,
                          const int *targets, int N, int V, float inv_temp);

void logprob_backward_cuda(float *dlogits, const float *dlp, const float *dent,
                           const float *logits, const float *lse, const float *ent,
                           const int *targets, int N, int V, float inv_temp);

/* ------------------------------------------------------------- embedding */

void embedding_forward_cuda(float *out, const int *ids, const float *table, int N, int C);

/* Deterministic: a repeated id's rows sum in row order, as on the CPU. */
void embedding_backward_cuda(float *dtable, const float *dout, const int *ids, int N,
                             int C);

/* ------------------------------------------------ scale, scalar head */

/* x (n) *= s */
void scale_cuda(float *x, size_t n, float s);

/* The scalar head of kernels/backend.h: out (N) = x (N,C) . w + w[C]; and
 * its backward, dx (N,C) += dout w, dw (C+1) += (dout^T x, sum dout). */
void head_forward_cuda(float *out, const float *x, const float *w, int N, int C);
void head_backward_cuda(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        int N, int C);

#ifdef __cplusplus
}
#endif

#endif
