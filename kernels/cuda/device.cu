/* Device discovery and host<->device copies for the CUDA kernels and tests. */
#include "common.cuh"

#include <stdlib.h>

extern "C" int cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear, so later calls do not see it */
        return 0;
    }
    return n > 0;
}

/* The first failure on this thread since cuda_take_error. */
static thread_local char g_err[512];

extern "C" void cuda_note_error(const char *cuda_msg, const char *what, const char *file,
                                int line) {
    if (g_err[0]) return;
    snprintf(g_err, sizeof g_err, "%s: %s (%s:%d)", what, cuda_msg, file, line);
}

extern "C" int cuda_take_error(char *msg, size_t cap) {
    if (!g_err[0]) return 0;
    if (cap) snprintf(msg, cap, "%s", g_err);
    g_err[0] = '\0';
    return -1;
}

static thread_local CudaCtx *g_ctx;

extern "C" CudaCtx *cuda_ctx_new(int device) {
    CudaCtx *c = (CudaCtx *)calloc(1, sizeof *c);
    if (!c) {
        cuda_note_error("out of memory", "cuda_ctx_new", __FILE__, __LINE__);
        return NULL;
    }
    c->device = device;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cuda_note_error(cudaGetErrorString(e), "cuda_ctx_new: stream", __FILE__, __LINE__);
        free(c);
        return NULL;
    }
    cublasStatus_t st = cublasCreate(&c->blas);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(c->blas, c->stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cuda_note_error(cublasGetStatusString(st), "cuda_ctx_new: cublasCreate", __FILE__,
                        __LINE__);
        if (c->blas) cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return NULL;
    }
    return c;
}

extern "C" void cuda_ctx_free(CudaCtx *c) {
    if (!c) return;
    if (g_ctx == c) g_ctx = NULL;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    cudaGetLastError(); /* nothing to report while freeing: leave no stale error */
    free(c);
}

extern "C" void cuda_ctx_use(CudaCtx *c) {
    /* every time: another context's creation or freeing may have changed
     * the current device since (cudaSetDevice to the current one is cheap) */
    if (c) cudaSetDevice(c->device);
    g_ctx = c;
}

extern "C" CudaCtx *cuda_ctx_current(void) { return g_ctx; }

extern "C" int cuda_sync(void) {
    cudaError_t e = g_ctx ? cudaStreamSynchronize(g_ctx->stream) : cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        cuda_note_error(cudaGetErrorString(e), "sync", __FILE__, __LINE__);
        return -1;
    }
    return 0;
}

static void *alloc_bytes(size_t bytes, const void *src) {
    if (bytes == 0) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess)
        e = src ? cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice) : cudaMemset(p, 0, bytes);
    /* done before a kernel on a non-blocking stream may read it: the legacy
     * stream's copy and fill are not ordered with such a stream */
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "alloc/upload of %zu bytes", bytes);
        cuda_note_error(cudaGetErrorString(e), what, __FILE__, __LINE__);
        if (p) cudaFree(p);
        return NULL;
    }
    return p;
}

extern "C" float *cuda_alloc(size_t n) { return (float *)alloc_bytes(n * sizeof(float), NULL); }
extern "C" int *cuda_alloc_int(size_t n) { return (int *)alloc_bytes(n * sizeof(int), NULL); }

extern "C" float *cuda_upload(const float *x, size_t n) {
    return (float *)alloc_bytes(n * sizeof(float), x);
}

extern "C" int *cuda_upload_int(const int *x, size_t n) {
    return (int *)alloc_bytes(n * sizeof(int), x);
}

static void download_bytes(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    /* the legacy stream does not wait for a non-blocking one */
    if (g_ctx) CUDA_TRY(cudaStreamSynchronize(g_ctx->stream));
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void cuda_download(float *dst, const float *src, size_t n) {
    download_bytes(dst, src, n * sizeof(float));
}

extern "C" void cuda_download_int(int *dst, const int *src, size_t n) {
    download_bytes(dst, src, n * sizeof(int));
}

extern "C" void cuda_free(void *p) {
    if (p) cudaFree(p);
}
