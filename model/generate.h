/* generate.h: batched sampling with a KV cache.
 *
 * Each prompt is prefilled through the packed forward, then all live
 * sequences decode together, one token each per step. Sequence i draws from
 * its own Rng seeded with rng_seed2(seed, i), so a prompt gives the same
 * tokens whether it is generated alone (with index i) or in a batch.
 * A sequence stops at EOS, at max_new_tokens, or when prompt + output
 * fill the context (so the whole sequence can be scored again later). */
#ifndef PLUMB_GENERATE_H
#define PLUMB_GENERATE_H

#include "model.h"
#include "sampler.h"

typedef struct {
    int max_new_tokens;
    SamplerParams sampler;
    unsigned long long seed;
    int ignore_eos;          /* keep going past EOS                              */
    int first_index;         /* Rng stream of prompt 0 (prompt i uses first+i)   */
} GenParams;

typedef struct {
    int *ids;                /* (n) generated ids only                           */
    float *logprobs;         /* (n) their log-probs (see sampler.h)              */
    int n;
    int stopped_on_eos;      /* the last id is an EOS                            */
} GenResult;

/* Generates for n_prompts prompts (prompts[i] has prompt_lens[i] ids).
 * results (n_prompts) are filled; free them with gen_result_free.
 * Errors: empty prompt, ids outside the vocabulary, a prompt that leaves no
 * room in the context. */
int gen_generate(Model *m, const int *const *prompts, const int *prompt_lens,
                 int n_prompts, const GenParams *p, GenResult *results);

void gen_result_free(GenResult *r);

#endif
