/* rng.h: a seeded random number generator passed around as a struct.
 *
 * xoshiro256** seeded through splitmix64: fast, 256 bits of state, and the
 * same stream on every platform. No hidden global state: every user holds
 * its own Rng, seeded from the run config. */
#ifndef PLUMB_RNG_H
#define PLUMB_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

/* Seeds the generator; the same seed always gives the same stream. */
void rng_seed(Rng *r, uint64_t seed);

/* Derives an independent stream for (seed, index), used so that sequence i
 * of a batch samples the same tokens whether run alone or batched. */
void rng_seed2(Rng *r, uint64_t seed, uint64_t index);

/* A seed for stream (tag, i) of a run seeded with seed: the run derives
 * every stream it needs (data order, generation per step, each role's
 * init) from its one seed, so that none depends on another's draws. */
uint64_t rng_mix3(uint64_t seed, uint64_t tag, uint64_t i);

uint64_t rng_u64(Rng *r);

/* Uniform in [0, 1), 24 random bits. */
float rng_uniform(Rng *r);

/* Standard normal (Box-Muller). */
float rng_normal(Rng *r);

#endif
