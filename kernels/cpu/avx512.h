/* avx512.h: what the CPU kernels' AVX-512 paths share. Private to
 * kernels/cpu/; include only under __AVX512F__. */
#ifndef PLUMB_KERNELS_CPU_AVX512_H
#define PLUMB_KERNELS_CPU_AVX512_H

#include <immintrin.h>

/* The lanes of the 16 elements from i that lie below n: all 16, or the
 * tail's (masked loads read zeros, or the fill, past n). */
static inline __mmask16 avx512_lanes(int n, int i) {
    return n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
}

#endif
