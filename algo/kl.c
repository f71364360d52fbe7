/* KL estimators k1, k2, k3 with the clamps of ALGORITHMS.md. */
#include "kl.h"

#include <math.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"

PL_ENUM_DEFINE(KlEstimator, kl_estimator, "kl_estimator", "k1", "k2", "k3")

double algo_kl_token(KlEstimator e, double lp, double lp_ref, double *dd) {
    double d = lp - lp_ref, g = 1.0;
    if (d > 20.0) d = 20.0, g = 0.0;
    if (d < -20.0) d = -20.0, g = 0.0;
    double k, dk;
    switch (e) {
    case KL_K1: k = d, dk = 1.0; break;
    case KL_K2: k = 0.5 * d * d, dk = d; break;
    default:
        /* exp(-d) - 1 + d = expm1(-d) + d: no cancellation for small d. */
        k = expm1(-d) + d, dk = -expm1(-d);
        if (k > 10.0) k = 10.0, dk = 0.0;
        if (k < -10.0) k = -10.0, dk = 0.0;
        break;
    }
    if (dd) *dd = g * dk;
    return k;
}

int algo_kl(KlEstimator e, const float *lp, const float *lp_ref, int N, float *kl, float *dkl) {
    if ((unsigned)e > KL_K3) return pl_fail(PL_EINVAL, "algo_kl: bad estimator %d", (int)e);
    if (N < 0) return pl_fail(PL_EINVAL, "algo_kl: negative length %d", N);
    if (N && (!lp || !lp_ref || !kl)) return pl_fail(PL_EINVAL, "algo_kl: NULL array");
    for (int t = 0; t < N; t++) {
        double g;
        kl[t] = (float)algo_kl_token(e, lp[t], lp_ref[t], &g);
        if (dkl) dkl[t] = (float)g;
    }
    return 0;
}
