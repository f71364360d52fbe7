/* common.cuh: private helpers shared by the .cu files in kernels/cuda (never included
 * from C): error reporting and warp/block reductions. */
#ifndef PLUMB_CUDA_COMMON_CUH
#define PLUMB_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

#include "kernels_cuda.h"

struct CudaCtx {
    int device;
    cudaStream_t stream; /* non-blocking: no implicit order with stream 0 */
    cublasHandle_t blas; /* bound to stream                               */
};

/* The calling thread's context for a kernel wrapper: records an error and
 * returns from the enclosing void function when there is none. */
#define NEED_CTX(ctx)                                                         \
    CudaCtx *ctx = cuda_ctx_current();                                        \
    do {                                                                      \
        if (!ctx) {                                                           \
            cuda_note_error("no current context (cuda_ctx_use)", __func__,    \
                            __FILE__, __LINE__);                              \
            return;                                                           \
        }                                                                     \
    } while (0)

/* Records the failure of a CUDA call (expr evaluates to cudaError_t), for
 * cuda_take_error, and returns from the enclosing void function. Nothing
 * prints: the caller (the CUDA backend, a test) reports it. */
#define CUDA_TRY(expr)                                                        \
    do {                                                                      \
        cudaError_t e_ = (expr);                                              \
        if (e_ != cudaSuccess) {                                              \
            cuda_note_error(cudaGetErrorString(e_), #expr, __FILE__, __LINE__); \
            return;                                                           \
        }                                                                     \
    } while (0)

/* After a launch: records a launch error (bad configuration, earlier sticky
 * error) with the kernel's name and returns from the enclosing function. */
#define CUDA_LAUNCHED(name)                                                   \
    do {                                                                      \
        cudaError_t e_ = cudaGetLastError();                                  \
        if (e_ != cudaSuccess) {                                              \
            cuda_note_error(cudaGetErrorString(e_), "launch " name, __FILE__, \
                            __LINE__);                                        \
            return;                                                           \
        }                                                                     \
    } while (0)

static inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* Sum / max of x over the whole block, returned to every thread. blockDim.x
 * must be a multiple of 32 (at most 1024) and every thread must call it. The
 * trailing barrier makes back-to-back calls safe. */
__device__ __forceinline__ float block_sum(float x) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_sum(x);
    if (lane == 0) part[warp] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : 0.0f;
    x = warp_sum(x);
    __syncthreads();
    return x;
}

__device__ __forceinline__ float block_max(float x) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_max(x);
    if (lane == 0) part[warp] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : -INFINITY;
    x = warp_max(x);
    __syncthreads();
    return x;
}

/* Index b of the packed sequence that owns row i: cu[b] <= i < cu[b+1]. */
__device__ __forceinline__ int seq_of_row(const int *cu, int B, int i) {
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

#endif
