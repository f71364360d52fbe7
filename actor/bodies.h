/* bodies.h: the actor's train bodies (worker/train.h), private to actor/. */
#ifndef PLUMB_ACTOR_BODIES_H
#define PLUMB_ACTOR_BODIES_H

#include "worker/train.h"

extern const TrainBody actor_sft, actor_ppo, actor_grpo;                 /* policy.c */
extern const TrainBody actor_dpo, actor_orpo, actor_simpo, actor_kto;    /* pref.c   */

#endif
