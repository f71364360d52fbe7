/* kernelutil.c: the CPU kernel tests' buffers and checks (kernelutil.h). */
#include "kernelutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

float *ku_randn_new(size_t n, Rng *rng, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    tu_randn(x, n, rng, scale);
    return x;
}

/* A buffer full of NaN: an output that must be overwritten starts this way,
 * so any element a kernel forgets to write (or reads) shows up. */
float *ku_nan_new(size_t n) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

float *ku_copy_new(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

double *ku_dzeros_new(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* sum r_i x_i in double: the random linear functional. */
double ku_dot_r(const float *r, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * x[i];
    return s;
}

/* |got - want| <= tol + rel * |want| for every element, else fails with the
 * first bad index. */
void ku_assert_close_d(const float *got, const double *want, size_t n, double tol, double rel,
                       const char *what) {
    for (size_t i = 0; i < n; i++) {
        double lim = tol + rel * fabs(want[i]);
        if (!(fabs((double)got[i] - want[i]) <= lim))
            fail_msg("%s: index %zu: got %.9g want %.9g (limit %.3g)", what, i, got[i],
                     want[i], lim);
    }
}

/* after - before: what a kernel added to an accumulating buffer. */
float *ku_delta_new(const float *after, const float *before, size_t n) {
    float *d = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = after[i] - before[i];
    return d;
}

/* Central differences of f w.r.t. every element of x (perturbed in place
 * and restored), compared with grad. The step actually taken in float is
 * used as the denominator. */
void ku_check_fd(KuFunctional f, void *ctx, float *x, size_t n, const float *grad, float eps,
                 const char *what) {
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i], xp = x0 + eps, xm = x0 - eps;
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = x0;
        double num = (fp - fm) / ((double)xp - (double)xm);
        double lim = FD_TOL + FD_REL * fabs(num);
        if (!(fabs((double)grad[i] - num) <= lim))
            fail_msg("%s: FD index %zu: analytic %.7g numerical %.7g (limit %.3g)", what,
                     i, grad[i], num, lim);
    }
}
