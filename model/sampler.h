/* sampler.h: picking the next token from a row of logits.
 *
 * temperature 0 is greedy (argmax, lowest id on ties). Otherwise the
 * logits are divided by the temperature, then top-k keeps the k most likely
 * ids (0 = off), then top-p keeps the smallest prefix of ids sorted by
 * probability whose mass reaches p (1 = off), and one id is drawn from the
 * renormalised rest with the caller's Rng.
 *
 * The log-prob reported for the chosen id is that of the untruncated
 * distribution softmax(logits / T) (T = 1 when greedy), which is what the
 * trainers recompute (ALGORITHMS.md); top-k/top-p only shape the draw. */
#ifndef PLUMB_SAMPLER_H
#define PLUMB_SAMPLER_H

#include <stddef.h>

#include "common/rng.h"

typedef struct {
    float temperature;  /* 0 = greedy                                   */
    int top_k;          /* 0 = off                                      */
    float top_p;        /* in (0, 1]; 1 = off                           */
} SamplerParams;

/* Bytes of scratch memory sampler_sample needs for a vocabulary of V. */
size_t sampler_scratch_size(int V);

/* Returns the chosen id in [0, V) and stores its log-prob in *lp (may be
 * NULL). scratch holds sampler_scratch_size(V) bytes. Consumes exactly one
 * rng_uniform draw when sampling, none when greedy. */
int sampler_sample(const float *logits, int V, const SamplerParams *p, Rng *rng,
                   float *lp, void *scratch);

/* Rejects a temperature < 0, top_k < 0, top_p outside (0, 1]. */
int sampler_validate(const SamplerParams *p);

#endif
