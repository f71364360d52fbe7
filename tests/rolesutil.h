/* rolesutil.h: what the worker-role tests (test_roles, test_roles_train,
 * test_roles_state) share: the tiny random model behind every role, roles
 * built from a short spec, requests sent through the wire, packed batches
 * and the request builders of the train bodies.
 *
 * Every request goes out as on the wire: packed and unpacked, handled by
 * role_handle, and its reply packed and unpacked again. The model has the
 * arith byte tokenizer's vocabulary (259, EOS 257), dim 32, 2 layers, GQA
 * (4 heads over 2), context 48. */
#ifndef PLUMB_TESTS_ROLESUTIL_H
#define PLUMB_TESTS_ROLESUTIL_H

#include <stdint.h>

#include "common/wire.h"
#include "worker/role.h"

extern Base *rl_base;       /* the worker's base, made by rl_setup */
extern Tokenizer *rl_tok;   /* the arith tokenizer               */
extern char rl_tokdir[600]; /* its folder                        */

/* cmocka group setup and teardown: the base (seed 21) and the tokenizer
 * in TMP/tok. */
int rl_setup(void **state);
int rl_teardown(void **state);

typedef struct {
    const char *role;
    int rank, head, micro, train_base, warmup;
    const char *rule, *arg, *resume;
    float lr, clip; /* clip 0: 1.0; < 0: no clipping */
    unsigned long long seed;
} Spec;

/* The role folders' descriptors, as the worker program's table has them. */
const RoleDesc *rl_desc_of(const char *role);
/* role_new of the spec on rl_base (lr 1e-2 and seed 5 unless set, a
 * constant schedule, LoRA alpha 2 * rank on all seven targets). */
int rl_mk(Role **out, Spec s);
/* rl_mk, failing the test when the role is refused. */
Role *rl_mk_ok(Spec s);
/* Gives r's adapter random values so that every LoRA matrix matters. */
void rl_randomize_adapter(Role *r, unsigned long long seed);

/* Sends q to r through the wire; the unpacked reply (wire_free it), or
 * NULL with *rc < 0 when the role refused. */
Plumb__Envelope *rl_call(Role *r, const Plumb__Envelope *q, int *rc);
/* rl_call, failing the test when the role refuses. */
Plumb__Envelope *rl_call_ok(Role *r, const Plumb__Envelope *q);

/* A packed batch: prompt bytes (mask 0), response bytes (mask 1), and an
 * optional EOS (mask 1). */
typedef struct {
    int B, N;
    int tok[1024];
    int off[65];
    unsigned char mask[1024];
} Pk;

/* Appends a sequence of n ids, the first n_prompt with mask 0. */
void rl_pk_add_ids(Pk *p, const int *ids, int n, int n_prompt);
/* Appends prompt's bytes, resp's and an EOS when eos. */
void rl_pk_add(Pk *p, const char *prompt, const char *resp, int eos);
Plumb__Seqs *rl_pk_seqs(WireArena *a, const Pk *p);
/* The four sums of the arith task, each answered and ended by EOS. */
void rl_fixed_batch(Pk *p);
/* Three preference pairs: each prompt's right sum chosen, a wrong one
 * rejected. */
void rl_pref_pairs(Pk *c, Pk *rj);

/* A malloc'ed copy of a reply tensor of n floats. */
float *rl_f32(const Plumb__Tensor *t, long n);
/* The train reply's metric of that name (fails when there is none). */
double rl_metric(const Plumb__Envelope *rep, const char *name);

Plumb__Envelope *rl_req_logprobs(WireArena *a, const char *role, const Pk *p, float T, int ent);
/* Log-probs (wire convention) of p from role r, malloc'ed (N). */
float *rl_get_lp(Role *r, const Pk *p, float T);
/* model_forward's log-probs, entropies and values over p, by hand (any
 * may be NULL): the wire's at t are these at t - 1. */
void rl_model_outputs(Model *m, const Pk *p, float T, float *lp, float *ent, float *val);

/* A train request with no body yet; the builders below fill one in. */
Plumb__Envelope *rl_req_train(WireArena *a, const char *role, int epochs, int minibatches,
                              uint64_t seed);
Plumb__Envelope *rl_req_sft(WireArena *a, const Pk *p, int epochs, int minibatches);
/* GRPO (grpo != 0) or PPO: clip 0.2, token_mean, the k3 estimator, T 1;
 * ref may be NULL. */
Plumb__Envelope *rl_req_policy(WireArena *a, const Pk *p, int grpo, const float *old,
                               const float *adv, const float *ref, float kl_coef,
                               float entropy_coef);
Plumb__Envelope *rl_req_dpo(WireArena *a, const Pk *c, const Pk *rj, const float *refc,
                            const float *refr);
Plumb__Envelope *rl_req_simpo(WireArena *a, const Pk *c, const Pk *rj);
/* KTO over the sequences of p, desirable where des[b] (0/1, or anything
 * for the validation test), with reference log-probs ref. */
Plumb__Envelope *rl_req_kto(WireArena *a, const Pk *p, const float *ref, const float *des,
                            float kl);
Plumb__Envelope *rl_req_bt(WireArena *a, const Pk *c, const Pk *rj, int micro_seed);
Plumb__Envelope *rl_req_value(WireArena *a, const Pk *p, const float *old, const float *ret);

#endif
