/* backend_cuda.cu: the CUDA backend (kernels/backend.h), over the twins
 * in kernels/cuda/.
 *
 * open selects the device (cudaSetDevice) and fails, saying why, where
 * there is no driver, no device or no such ordinal. Every call records
 * the first failure of a launch or a library call in the device's sticky
 * error, and sync adds what the device reports when its queue drains
 * (an illegal address, say). Each Device has its own context (a
 * non-blocking stream and a cuBLAS handle on it, d->impl): every kernel,
 * copy and fill of the device goes to that stream, in order. */
#include <string.h>

#include "common.cuh"
#include "common/err.h"
#include "kernels/backend.h"

/* Moves a failure the twins recorded into the device's sticky error. */
static void take(Device *d) {
    char msg[sizeof d->msg];
    if (cuda_take_error(msg, sizeof msg) < 0 && !d->err) {
        d->err = PL_EDEVICE;
        snprintf(d->msg, sizeof d->msg, "%s", msg);
    }
}

static void fail(Device *d, int code, const char *what, cudaError_t e) {
    if (d->err) return;
    d->err = code;
    snprintf(d->msg, sizeof d->msg, "%s: %s", what, cudaGetErrorString(e));
}

/* Says why the device cannot be opened, in d->msg. */
static int refuse(Device *d, int code, const char *msg) {
    d->err = code;
    snprintf(d->msg, sizeof d->msg, "%s", msg);
    return code;
}

static int cuda_open(Device *d) {
    char m[sizeof d->msg];
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(m, sizeof m, "no CUDA device can be used (%.200s)", cudaGetErrorString(e));
        return refuse(d, PL_ENOTSUP, m);
    }
    if (n == 0) return refuse(d, PL_ENOTSUP, "no CUDA device on this machine");
    if (d->id >= n) {
        snprintf(m, sizeof m, "no such device (this machine has %d: cuda:0..cuda:%d)", n, n - 1);
        return refuse(d, PL_EINVAL, m);
    }
    e = cudaSetDevice(d->id);
    if (e == cudaSuccess) e = cudaFree(0); /* creates the context now, not at the first kernel */
    if (e != cudaSuccess) {
        cudaGetLastError();
        return refuse(d, PL_EDEVICE, cudaGetErrorString(e));
    }
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, d->id);
    if (e != cudaSuccess) cudaGetLastError(); /* no stale error for the first kernel */
    if (e == cudaSuccess && p.major < 8) {
        snprintf(m, sizeof m, "%.128s is compute capability %d.%d; plumb needs 8.0 or later", p.name,
                 p.major, p.minor);
        return refuse(d, PL_ENOTSUP, m);
    }
    CudaCtx *c = cuda_ctx_new(d->id);
    if (!c) {
        cuda_take_error(m, sizeof m);
        return refuse(d, PL_EDEVICE, m);
    }
    d->impl = c;
    return 0;
}

static CudaCtx *ctx_of(Device *d) {
    CudaCtx *c = (CudaCtx *)d->impl;
    cuda_ctx_use(c); /* the calling thread's current context and device */
    return c;
}

static void cuda_close(Device *d) {
    CudaCtx *c = (CudaCtx *)d->impl;
    if (cuda_ctx_current() == c) cuda_ctx_use(NULL);
    cuda_ctx_free(c);
    cudaGetLastError();
    d->impl = NULL;
}

/* Errors after which the context can compute nothing again. */
static int sticky(cudaError_t e) {
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
        return 1;
    default:
        return 0;
    }
}

static void cuda_sync_dev(Device *d) {
    cudaError_t e = cudaStreamSynchronize(ctx_of(d)->stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        if (sticky(e)) {
            d->err = 0; /* the fault is the error to report, not what it broke first */
            d->lost = 1;
        }
        fail(d, PL_EDEVICE, "a kernel or copy failed", e);
    }
    take(d);
}

static void *cuda_alloc_bytes(Device *d, size_t bytes) {
    if (d->err || !bytes) return NULL;
    CudaCtx *c = ctx_of(d);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(p, 0, bytes, c->stream);
    if (e != cudaSuccess) {
        if (p) cudaFree(p);
        cudaGetLastError();
        char what[80];
        snprintf(what, sizeof what, "allocating %zu bytes", bytes);
        fail(d, e == cudaErrorMemoryAllocation ? PL_ENOMEM : PL_EDEVICE, what, e);
        return NULL;
    }
    return p;
}

static void cuda_free_bytes(Device *d, void *p) {
    if (!p) return;
    /* cudaFree waits for the device, so nothing queued still uses p */
    ctx_of(d);
    if (cudaFree(p) != cudaSuccess) cudaGetLastError();
}

/* On the device's stream. From pageable host memory an upload returns once
 * the source is staged, so the caller may reuse it; a download waits for
 * the stream, and so for everything queued before it. */
static void memcpy_dev(Device *d, void *dst, const void *src, size_t bytes, const char *what,
                       int wait) {
    if (d->err || !bytes || dst == src) return;
    CudaCtx *c = ctx_of(d);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, c->stream);
    if (e == cudaSuccess && wait) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* recorded here, not blamed on the next kernel */
        fail(d, PL_EDEVICE, what, e);
    }
}

static void cuda_upload_bytes(Device *d, void *dst, const void *src, size_t bytes) {
    memcpy_dev(d, dst, src, bytes, "upload", 0);
}

static void cuda_download_bytes(Device *d, void *dst, const void *src, size_t bytes) {
    memcpy_dev(d, dst, src, bytes, "download", 1);
}

static void cuda_copy_bytes(Device *d, void *dst, const void *src, size_t bytes) {
    memcpy_dev(d, dst, src, bytes, "copy", 0);
}

static void cuda_zero_bytes(Device *d, void *dst, size_t bytes) {
    if (d->err || !bytes) return;
    cudaError_t e = cudaMemsetAsync(dst, 0, bytes, ctx_of(d)->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(d, PL_EDEVICE, "memset", e);
    }
}

/* A kernel: nothing after a failure, and its own failure recorded. The
 * current context and device are per host thread: set them, so that a
 * thread other than the one that opened the device launches where it
 * should. */
#define RUN(call)                                                                                  \
    do {                                                                                           \
        if (d->err) return;                                                                        \
        ctx_of(d);                                                                                 \
        call;                                                                                      \
        take(d);                                                                                   \
    } while (0)

static void k_matmul_forward(Device *d, float *out, const float *inp, const float *w,
                             const float *bias, int N, int IC, int OC, int acc) {
    RUN(matmul_forward_cuda(out, inp, w, bias, N, IC, OC, acc));
}

static void k_matmul_backward(Device *d, float *dinp, float *dw, float *dbias, const float *dout,
                              const float *inp, const float *w, int N, int IC, int OC) {
    RUN(matmul_backward_cuda(dinp, dw, dbias, dout, inp, w, N, IC, OC));
}

static void k_rmsnorm_forward(Device *d, float *out, float *rstd, const float *inp,
                              const float *w, int N, int C, float eps) {
    RUN(rmsnorm_forward_cuda(out, rstd, inp, w, N, C, eps));
}

static void k_rmsnorm_backward(Device *d, float *dinp, float *dw, const float *dout,
                               const float *inp, const float *w, const float *rstd, int N, int C) {
    RUN(rmsnorm_backward_cuda(dinp, dw, dout, inp, w, rstd, N, C));
}

static void k_rope_forward(Device *d, float *x, const int *pos, int N, int NHX, int HS,
                           RopeFreq f, int il) {
    RUN(rope_forward_cuda(x, pos, N, NHX, HS, f.inv_freq, f.scale, il));
}

static void k_rope_backward(Device *d, float *dx, const int *pos, int N, int NHX, int HS,
                            RopeFreq f, int il) {
    RUN(rope_backward_cuda(dx, pos, N, NHX, HS, f.inv_freq, f.scale, il));
}

static void k_swiglu_forward(Device *d, float *out, const float *gate, const float *up, size_t n) {
    RUN(swiglu_forward_cuda(out, gate, up, n));
}

static void k_swiglu_backward(Device *d, float *dgate, float *dup, const float *dout,
                              const float *gate, const float *up, size_t n) {
    RUN(swiglu_backward_cuda(dgate, dup, dout, gate, up, n));
}

static void k_attention_forward(Device *d, float *out, float *lse, const float *q,
                                const float *k, const float *v, const int *cu, int B, int N,
                                int max_seqlen, int NH, int NKV, int HS) {
    (void)max_seqlen; /* the scalar kernels need only N to size their grid */
    RUN(attention_forward_cuda(out, lse, q, k, v, cu, B, N, NH, NKV, HS));
}

static void k_attention_backward(Device *d, float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *cu, int B, int N,
                                 int max_seqlen, int NH, int NKV, int HS) {
    (void)max_seqlen;
    RUN(attention_backward_cuda(dq, dk, dv, dout, out, lse, q, k, v, cu, B, N, NH, NKV, HS));
}

static void k_attention_decode(Device *d, float *out, const float *q, const float *kc,
                               const float *vc, const int *slots, const int *lens, int B, int NH,
                               int NKV, int HS, int maxT) {
    RUN(attention_decode_cuda(out, q, kc, vc, slots, lens, B, NH, NKV, HS, maxT));
}

static void k_logprob_forward(Device *d, float *lp, float *ent, float *lse, const float *logits,
                              const int *targets, int N, int V, float inv_temp) {
    RUN(logprob_forward_cuda(lp, ent, lse, logits, targets, N, V, inv_temp));
}

static void k_logprob_backward(Device *d, float *dlogits, const float *dlp, const float *dent,
                               const float *logits, const float *lse, const float *ent,
                               const int *targets, int N, int V, float inv_temp) {
    RUN(logprob_backward_cuda(dlogits, dlp, dent, logits, lse, ent, targets, N, V, inv_temp));
}

static void k_embedding_forward(Device *d, float *out, const int *ids, const float *table, int N,
                                int C) {
    RUN(embedding_forward_cuda(out, ids, table, N, C));
}

static void k_embedding_backward(Device *d, float *dtable, const float *dout, const int *ids,
                                 int N, int C) {
    RUN(embedding_backward_cuda(dtable, dout, ids, N, C));
}

static void k_scale(Device *d, float *x, size_t n, float s) { RUN(scale_cuda(x, n, s)); }

static void k_head_forward(Device *d, float *out, const float *x, const float *w, int N, int C) {
    RUN(head_forward_cuda(out, x, w, N, C));
}

static void k_head_backward(Device *d, float *dx, float *dw, const float *dout, const float *x,
                            const float *w, int N, int C) {
    RUN(head_backward_cuda(dx, dw, dout, x, w, N, C));
}

#undef RUN

static Backend make_backend(void) {
    Backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.host_memory = 0;
    b.open = cuda_open;
    b.close = cuda_close;
    b.sync = cuda_sync_dev;
    b.alloc = cuda_alloc_bytes;
    b.free = cuda_free_bytes;
    b.upload = cuda_upload_bytes;
    b.download = cuda_download_bytes;
    b.copy = cuda_copy_bytes;
    b.zero = cuda_zero_bytes;
    b.matmul_forward = k_matmul_forward;
    b.matmul_backward = k_matmul_backward;
    b.rmsnorm_forward = k_rmsnorm_forward;
    b.rmsnorm_backward = k_rmsnorm_backward;
    b.rope_forward = k_rope_forward;
    b.rope_backward = k_rope_backward;
    b.swiglu_forward = k_swiglu_forward;
    b.swiglu_backward = k_swiglu_backward;
    b.attention_forward = k_attention_forward;
    b.attention_backward = k_attention_backward;
    b.attention_decode = k_attention_decode;
    b.logprob_forward = k_logprob_forward;
    b.logprob_backward = k_logprob_backward;
    b.embedding_forward = k_embedding_forward;
    b.embedding_backward = k_embedding_backward;
    b.scale = k_scale;
    b.head_forward = k_head_forward;
    b.head_backward = k_head_backward;
    return b;
}

/* C++ has no designated initializers for a C struct before C++20: the
 * table is filled once, at load. */
extern "C" const Backend backend_cuda = make_backend();
