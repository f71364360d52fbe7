/* logprob.h: per-token log-probs and entropies from logits at a
 * temperature (ALGORITHMS.md, "Log-probs and entropy").
 *
 * z = logits / T, lp_t = z[y_t] - logsumexp(z), H_t = logsumexp(z) -
 * sum softmax(z) z. The work is done row by row by the kernels
 * (kernels/cpu/logprob.c: two passes over V, the softmax never stored);
 * these wrappers add the argument checks and the temperature convention.
 * Logits at position t score token t+1, so targets[t] is the next token
 * (-1: no target, lp = 0 and no gradient). N tokens, V vocabulary. */
#ifndef PLUMB_ALGO_LOGPROB_H
#define PLUMB_ALGO_LOGPROB_H

/* lp (N), ent (N, or NULL), lse (N, kept for the backward) from logits
 * (N, V) and targets (N) at temperature T > 0. Fails with PL_EINVAL on
 * N < 0, V < 1, T <= 0 or non-finite, NULL arrays, or a target outside
 * [-1, V). */
int algo_logprobs(float *lp, float *ent, float *lse, const float *logits, const int *targets,
                  int N, int V, float temperature);

/* dlogits (N, V) = d(sum dlp*lp + dent*ent)/dlogits, overwritten. dlp or
 * dent may be NULL (zero); ent is needed when dent is given. Same checks
 * as algo_logprobs. */
int algo_logprobs_backward(float *dlogits, const float *dlp, const float *dent,
                           const float *logits, const float *lse, const float *ent,
                           const int *targets, int N, int V, float temperature);

#endif
