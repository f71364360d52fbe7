/* grpo.h: the GRPO family's advantages (ALGORITHMS.md, "GRPO family").
 *
 * G samples per prompt (group_size) sit next to each other: sequences
 * [g*G, (g+1)*G) of a batch of B = (number of groups) * G share a prompt.
 * The sequence advantage is broadcast over the response tokens
 * (algo_broadcast_seq) and the loss is algo_policy_loss (ppo.h) with
 * algo_grpo_policy_defaults(): the PPO clipped loss plus kl_coef * k3. */
#ifndef PLUMB_ALGO_GRPO_H
#define PLUMB_ALGO_GRPO_H

#include "algo.h"
#include "ppo.h"

typedef enum {
    ADV_GROUP = 0,          /* (s - mean_g)/(std_g + 1e-6), unbiased std (default) */
    ADV_NONE,               /* s - mean_g (Dr. GRPO)                             */
    ADV_RLOO,               /* s - mean of the other G-1                         */
    ADV_BATCH,              /* (s - mean_g)/(std over the batch + 1e-6)           */
    ADV_REINFORCE_PP,       /* per token: discounted returns, batch-whitened      */
} AdvEstimator;

/* "group" | "none" | "rloo" | "batch" | "reinforce_pp". 0 or PL_EINVAL. */
int adv_estimator_parse(const char *name, AdvEstimator *out);
const char *adv_estimator_name(AdvEstimator e);

/* Group advantages of sequence scores: adv (B) from score (B) with groups
 * of group_size consecutive sequences, for ADV_GROUP, ADV_NONE, ADV_RLOO
 * and ADV_BATCH. A group of one gets A = 0; zero variance in a group gives
 * A = 0 under group (and under batch when the whole batch is constant).
 * Stds are unbiased (0 for fewer than 2 values). adv may be score. Fails
 * with PL_EINVAL on B < 0, group_size < 1, B not a multiple of group_size,
 * NULL arrays, or ADV_REINFORCE_PP (a per-token estimator, below). */
int algo_group_advantages(const float *score, int B, int group_size, AdvEstimator e, float *adv);

/* REINFORCE++: per sequence, discounted returns over the masked tokens,
 * G_t = r_t + gamma G_next (unmasked tokens skipped), then whitened over
 * all masked tokens of the batch (unbiased variance, mean subtracted;
 * algo_masked_whiten). rewards (N) as from algo_ppo_rewards; adv (N), 0 on
 * unmasked tokens; ret (N, or NULL) gets the un-whitened returns. Fails
 * with PL_EINVAL on a bad batch, NULL arrays or gamma outside [0, 1]. */
int algo_reinforce_pp(const AlgoSeqs *s, const float *rewards, float gamma, float *adv, float *ret);

/* GRPO's loss options: PPO defaults plus kl_coef 0.04 with the k3
 * estimator (kl_coef 0: no reference worker needed). */
void algo_grpo_policy_defaults(PolicyLossOpts *o);

#endif
