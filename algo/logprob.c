/* Checked wrappers over the row-by-row log-prob kernels. */
#include "logprob.h"

#include <math.h>

#include "common/err.h"
#include "kernels/kernels.h"

static int check(const float *logits, const int *targets, int N, int V, float T, const char *who) {
    if (N < 0 || V < 1) return pl_fail(PL_EINVAL, "%s: bad shape N=%d V=%d", who, N, V);
    if (!(T > 0.0f) || !isfinite(T)) return pl_fail(PL_EINVAL, "%s: temperature %g must be > 0", who, T);
    if (N && (!logits || !targets)) return pl_fail(PL_EINVAL, "%s: NULL array", who);
    for (int i = 0; i < N; i++)
        if (targets[i] < -1 || targets[i] >= V)
            return pl_fail(PL_EINVAL, "%s: targets[%d]=%d outside [-1, %d)", who, i, targets[i], V);
    return 0;
}

int algo_logprobs(float *lp, float *ent, float *lse, const float *logits, const int *targets,
                  int N, int V, float temperature) {
    PL_TRY(check(logits, targets, N, V, temperature, "algo_logprobs"));
    if (N && (!lp || !lse)) return pl_fail(PL_EINVAL, "algo_logprobs: NULL output");
    if (N) logprob_forward(lp, ent, lse, logits, targets, N, V, 1.0f / temperature);
    return 0;
}

int algo_logprobs_backward(float *dlogits, const float *dlp, const float *dent,
                           const float *logits, const float *lse, const float *ent,
                           const int *targets, int N, int V, float temperature) {
    PL_TRY(check(logits, targets, N, V, temperature, "algo_logprobs_backward"));
    if (N && (!dlogits || !lse)) return pl_fail(PL_EINVAL, "algo_logprobs_backward: NULL array");
    if (dent && !ent) return pl_fail(PL_EINVAL, "algo_logprobs_backward: dent given without ent");
    if (N) logprob_backward(dlogits, dlp, dent, logits, lse, ent, targets, N, V, 1.0f / temperature);
    return 0;
}
