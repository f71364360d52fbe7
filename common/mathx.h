/* mathx.h: small numeric helpers shared by the kernels and samplers. */
#ifndef PLUMB_MATHX_H
#define PLUMB_MATHX_H

#include <math.h>

/* exp(x) for x <= 0 as in a softmax, with results below FLT_MIN returned as
 * exact zeros. glibc's expf takes a slow path (errno, subnormal result) when
 * it underflows, which a peaked softmax over a large vocabulary hits for
 * most entries; the skipped terms are below 1.2e-38 and change no sum. */
static inline float exp_neg(float x) { return x < -87.0f ? 0.0f : expf(x); }

#endif
