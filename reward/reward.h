/* reward.h: the reward role: scores responses by a rule (algo/rules.h) or
 * by a reward model's scalar head at each sequence's last token.
 *
 *   score              one score per sequence
 *   train              bt (Bradley-Terry over chosen / rejected pairs)
 *   checkpoint         its state */
#ifndef PLUMB_REWARD_H
#define PLUMB_REWARD_H

#include "worker/role.h"

extern const RoleDesc reward_role;

#endif
