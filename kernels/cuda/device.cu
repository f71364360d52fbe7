/* Device discovery and host<->device copies for the CUDA kernels and tests. */
#include "common.cuh"

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

extern "C" int cuda_sync(void) {
    cudaError_t e = cudaDeviceSynchronize();
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
