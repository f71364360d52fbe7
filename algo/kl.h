/* kl.h: per-token KL estimators between the policy and the reference
 * (ALGORITHMS.md, `kl_estimator: k1 | k2 | k3`).
 *
 * d = clamp(lp - lp_ref, -20, 20); k1 = d; k2 = d^2/2;
 * k3 = exp(-d) + d - 1 clamped to [-10, 10] (k3 >= 0, so only the upper
 * bound bites: d below about -2.61 or above 11). Where a clamp is active
 * the gradient is 0, as autograd through torch.clamp gives. */
#ifndef PLUMB_ALGO_KL_H
#define PLUMB_ALGO_KL_H

typedef enum { KL_K1 = 0, KL_K2, KL_K3 } KlEstimator;

/* "k1" | "k2" | "k3". Returns 0 or PL_EINVAL naming the string. */
int kl_estimator_parse(const char *name, KlEstimator *out);
const char *kl_estimator_name(KlEstimator e);

/* One token: the estimate, and in *dd (when not NULL) its derivative with
 * respect to lp (the derivative w.r.t. lp_ref is its negative). */
double algo_kl_token(KlEstimator e, double lp, double lp_ref, double *dd);

/* kl (N) per token, and dkl (N, or NULL) = d kl / d lp. Unmasked tokens
 * are computed like any other (mask them when reducing). Fails with
 * PL_EINVAL on a bad estimator, N < 0 or NULL arrays. */
int algo_kl(KlEstimator e, const float *lp, const float *lp_ref, int N, float *kl, float *dkl);

#endif
