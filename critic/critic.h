/* critic.h: the critic role: the base with its own adapter and a scalar
 * value head.
 *
 *   values             values[t] = the head at position t - 1 (role.h),
 *                      0 at each first token
 *   train              value (the clipped value loss of algo/ppo.h)
 *   checkpoint         its state */
#ifndef PLUMB_CRITIC_H
#define PLUMB_CRITIC_H

#include "worker/role.h"

extern const RoleDesc critic_role;

#endif
