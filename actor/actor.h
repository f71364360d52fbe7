/* actor.h: the actor role: the policy that generates and is trained.
 *
 *   generate           B prompts x n samples (actor.c)
 *   logprobs           of the policy (worker/infer.h)
 *   train              sft, ppo, grpo (policy.c); dpo, orpo, simpo, kto
 *                      (pref.c)
 *   adapter            get / set its LoRA adapter at a version (actor.c)
 *   checkpoint         its state, and the Hugging Face export */
#ifndef PLUMB_ACTOR_H
#define PLUMB_ACTOR_H

#include "worker/role.h"

extern const RoleDesc actor_role;

#endif
