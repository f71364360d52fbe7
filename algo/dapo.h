/* dapo.h: DAPO's two additions to GRPO's rollouts (Yu et al. 2025), the
 * overlong reward shaping and the choice of groups that carry a signal.
 * Both act on sequence scores before the advantages (grpo.h); the
 * coordinator refills the groups it drops (coordinator/step_rl.c). */
#ifndef PLUMB_ALGO_DAPO_H
#define PLUMB_ALGO_DAPO_H

#include "algo.h"

/* Soft overlong punishment: a response of len tokens (its masked tokens,
 * the EOS included) within the last `buffer` of max_len loses
 *   min(-(len - (max_len - buffer)) / buffer * factor, 0)
 * from its score: 0 up to max_len - buffer, then linearly down to -factor
 * at max_len (DAPO eq. 13; verl's overlong_buffer, TRL's
 * soft_overlong_punishment at factor 1). scores (B) are updated in place;
 * penalty (B, or NULL) gets each sequence's term. Fails with PL_EINVAL on a
 * bad batch, buffer outside [1, max_len], a negative or non-finite factor,
 * or a response longer than max_len (none is generated). */
int algo_overlong_penalty(const AlgoSeqs *s, int max_len, int buffer, float factor,
                          float *scores, float *penalty);

/* Dynamic sampling's test: whether the group of G scores can teach
 * anything, i.e. not all of them are equal (a group of one always can, as
 * verl keeps it). Compared exactly, as the reward sent them. */
int algo_group_informative(const float *scores, int G);

#endif
