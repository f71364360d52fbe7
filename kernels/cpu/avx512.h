/* avx512.h: what the CPU kernels' AVX-512 paths share. Private to
 * kernels/cpu/; include only under __AVX512F__. */
#ifndef PLUMB_KERNELS_CPU_AVX512_H
#define PLUMB_KERNELS_CPU_AVX512_H

#include <immintrin.h>

/* The lanes of the 16 elements from i that lie below n: all 16, the
 * tail's, or none when i >= n (masked loads read zeros, or the fill, past
 * n). */
static inline __mmask16 avx512_lanes(int n, int i) {
    return n - i >= 16 ? (__mmask16)0xFFFF
           : n <= i    ? (__mmask16)0
                       : (__mmask16)((1u << (n - i)) - 1);
}

/* exp(x) on 16 lanes, 0 below -87 (as exp_neg): x = n ln 2 + r with
 * |r| <= ln 2 / 2, e^r by Cephes's degree-6 polynomial (about 1 ulp),
 * times 2^n. The log-probs (and through them the sampler) and attention
 * take their exponentials from it. */
static inline __m512 vexp(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

#endif
