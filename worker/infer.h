/* infer.h: the hosted model's forwards, in the wire's per-token convention
 * (role.h), for every role.
 *
 * The model scores token t + 1 at position t (model.h); the wire indexes a
 * value by the token it describes. shift_in and shift_back convert between
 * the two, here and nowhere else.
 *
 * Dimension letters: B sequences, N packed tokens. */
#ifndef PLUMB_INFER_H
#define PLUMB_INFER_H

#include "worker/role.h"

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

/* The logprobs request: the role's model at the request's temperature
 * (with entropies when asked). A RoleHandler. */
int role_on_logprobs(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

/* ------------------------------------------ pieces the train loop shares */

/* Sequences per forward for a batch of S: r->micro_batch, or all. */
int infer_chunk(const Role *r, int S);

/* targets (N): the next token within its sequence, -1 at each last token. */
void infer_targets(const int *tokens, const int *offsets, int B, int *targets);

/* Model outputs (model convention) of sequences [s0, s1), written at their
 * token positions (lp, ent, val may be NULL); cu (s1 - s0 + 1) is scratch. */
int infer_forward(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                  int s1, float T, int *cu, float *lp, float *ent, float *val);

/* The backward of infer_forward's last call over the same sequences, from
 * the gradients of its outputs (model convention; any may be NULL). */
int infer_backward(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                   int s1, float T, int *cu, const float *dlp, const float *dent,
                   const float *dval);

/* wire[t] = model[t - 1] within each sequence, 0 at its first token. */
void shift_in(const int *offsets, int B, const float *model, float *wire);

/* The gradient's way back: dmodel[t - 1] = dwire[t], 0 at each last token
 * (the wire's first token has no model position). */
void shift_back(const int *offsets, int B, const float *dwire, float *dmodel);

#endif
