/* kernelutil.h: what the CPU kernel tests (test_kernels,
 * test_kernels_attention) share: fresh buffers filled from a seed or with
 * NaN, the random linear functional, and the checks against a double
 * reference and against central finite differences. */
#ifndef PLUMB_TESTS_KERNELUTIL_H
#define PLUMB_TESTS_KERNELUTIL_H

#include <stddef.h>

#include "common/rng.h"

/* The finite-difference step, and the check's limit FD_TOL + FD_REL *
 * |numerical| (see test_kernels.c for why the step is 1e-2). */
#define FD_EPS 1e-2f
#define FD_TOL 1e-3
#define FD_REL 1e-2

/* Fresh malloc'ed buffers of n (at least one element): normal(0,1) *
 * scale from rng; all NaN (an output that must be overwritten starts this
 * way, so any element a kernel forgets to write, or reads, shows up); a
 * copy of x; doubles, all zero (calloc'ed). */
float *ku_randn_new(size_t n, Rng *rng, float scale);
float *ku_nan_new(size_t n);
float *ku_copy_new(const float *x, size_t n);
double *ku_dzeros_new(size_t n);
/* after - before: what a kernel added to an accumulating buffer. */
float *ku_delta_new(const float *after, const float *before, size_t n);

/* sum r_i x_i in double: the random linear functional. */
double ku_dot_r(const float *r, const float *x, size_t n);

/* |got - want| <= tol + rel * |want| for every element, else fails with the
 * first bad index. */
void ku_assert_close_d(const float *got, const double *want, size_t n, double tol, double rel,
                       const char *what);

/* The functional f(ctx) re-runs a forward kernel on the current inputs. */
typedef double (*KuFunctional)(void *ctx);

/* Central differences of f w.r.t. every element of x (perturbed in place
 * and restored), compared with grad within FD_TOL + FD_REL * |numerical|.
 * The step actually taken in float is used as the denominator. */
void ku_check_fd(KuFunctional f, void *ctx, float *x, size_t n, const float *grad, float eps,
                 const char *what);

#endif
