/* role_impl.h: what the per-role request handlers share (worker/role.c).
 * Private to worker/, actor/, critic/, reward/ and reference/.
 *
 * Dimension letters: B sequences, N packed tokens. Arrays called "wire"
 * follow role.h's per-token convention (indexed by the token they
 * describe); "model" arrays follow model.h's (position t scores t + 1). */
#ifndef PLUMB_ROLE_IMPL_H
#define PLUMB_ROLE_IMPL_H

#include "worker/role.h"

/* ------------------------------------------------------- per-role entry */

/* Each answers the requests its role serves (role.h) and fails with
 * role_unsupported for the others. q->role has been checked. */
int actor_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);
int critic_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);
int reward_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);
int reference_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

/* PL_EPROTO "role 'critic' does not answer 'generate'" (train requests are
 * named with their body: 'train.sft'). */
int role_unsupported(const Role *r, const Plumb__Envelope *q);

/* ------------------------------------------------------- shared handlers */

/* logprobs: the role's model at the request temperature. */
int role_logprobs(Role *r, const Plumb__LogprobsReq *q, WireArena *a, Plumb__Envelope *rep);

/* train: any body; the caller has checked that its role takes it. */
int role_train(Role *r, const Plumb__TrainReq *q, WireArena *a, Plumb__Envelope *rep);

/* checkpoint: role_save into q->dir, and with export_hf (when allowed)
 * role_export_hf into q->dir/hf. Answers Ok. */
int role_checkpoint(Role *r, const Plumb__CheckpointReq *q, int allow_export, WireArena *a,
                    Plumb__Envelope *rep);

/* Sets rep's body to Ok. */
int role_reply_ok(WireArena *a, Plumb__Envelope *rep);

/* ------------------------------------------------------------ forwards */

/* Runs the model over B packed sequences (tokens (N), offsets (B+1)) at
 * temperature T (<= 0: 1), r->micro_batch sequences per forward, and
 * writes in the wire convention: lp (N) and ent (N) of each token given
 * the ones before it (0 at a sequence's first token), values (N) = the
 * head's value at the previous position (0 at the first), last (B) = the
 * head's value at each sequence's last token. Any output may be NULL;
 * values and last need a head. The inputs must have passed wire_get_seqs
 * against r->limits. */
int role_infer(Role *r, const int *tokens, const int *offsets, int B, float T, float *lp,
               float *ent, float *values, float *last);

#endif
