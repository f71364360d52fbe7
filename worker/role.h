/* role.h: one role of a worker process (actor, critic, reward, reference)
 * and its request handlers.
 *
 * A Role is a Model on a Base plus what the role owns: its LoRA adapter,
 * its scalar head, its AdamW state, its adapter version. Roles of one
 * process share one read-only Base; a role that trains the base itself
 * (train_base, full fine-tuning) loads its own flat copy.
 *
 * Per-token arrays on the wire are indexed by the token they describe:
 * logprobs[t] = log p(tokens[t] | tokens before t in its sequence), 0 at the
 * first token of each sequence; values[t] = the critic's value of the state
 * before token t (read at position t - 1); masks are 1 on response tokens.
 * The model's own outputs (model.h: position t scores token t + 1) are
 * shifted into this convention by the role.
 *
 * Handlers (one file per role: actor/actor.c, critic/critic.c,
 * reward/reward.c, reference/reference.c):
 *   actor      generate, logprobs, train (sft, ppo, grpo, dpo, orpo),
 *              adapter (get / set), checkpoint (state + Hugging Face export)
 *   critic     values, train (value), checkpoint
 *   reward     score (by rule, or by the model's head at the last token),
 *              train (bt), checkpoint
 *   reference  logprobs
 * A request a role does not answer fails with PL_EPROTO naming both. */
#ifndef PLUMB_ROLE_H
#define PLUMB_ROLE_H

#include <stdint.h>

#include "common/roles.h"
#include "common/wire.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/tokenizer.h"

typedef struct Role {
    RoleKind kind;
    Base *base;              /* shared unless own_base                         */
    int own_base;            /* 1: loaded for this role (train_base)           */
    Model *model;
    const Tokenizer *tok;    /* shared, not owned                              */
    char tok_dir[4096];      /* folder of tokenizer.json (copied on export)    */
    char base_path[4096];    /* where the base came from (adapter configs)     */
    AdamW opt[3];            /* one per trainable buffer (model_trainable)     */
    int n_opt;
    OptimConfig optim;
    uint64_t adapter_version;/* +1 per optimizer step or installed adapter     */
    long opt_step;           /* completed optimizer steps                      */
    int micro_batch;         /* sequences per forward (0: the whole batch)     */
    char rule[32];           /* reward: rule name, "" = model                  */
    char rule_arg[1024];
    int rule_id;             /* reward: RewardRule (algo/rules.h), -1 = model */
    void *rule_state;        /* reward: compiled regex etc.                    */
    WireLimits limits;       /* what requests are checked against              */
    /* Sums buf[0..n) element-wise over the replicas of data-parallel group
     * dp, in rank order, and writes the sum back into buf on every replica
     * (the worker relays it through the coordinator); NULL: no data
     * parallelism here, and a train request with dp.size > 1 fails. */
    int (*allreduce)(void *ctx, const Plumb__DataParallel *dp, float *buf, size_t n);
    void *allreduce_ctx;
} Role;

/* Builds a role from cfg on base (shared, not owned; base_path is where it
 * came from, named in saved adapter configs). tok and tok_dir are the
 * tokenizer (rules decode responses; exports copy its files). The adapter
 * starts from cfg->init_adapter when given, the head from cfg->head_path.
 * With cfg->resume_dir the adapter, head, optimizer moments, opt_step,
 * adapter_version and (train_base) the weights are loaded from
 * resume_dir/<role>/ (role_save's layout), so training continues bit for
 * bit. A train_base role works on its own flat copy of base. With
 * cfg->base_path the role uses that model folder (a fully fine-tuned
 * reward model's, of base's vocabulary and shape) instead of base. The
 * reference ignores lora_rank, head, train_base, base_path and resume_dir
 * (it is the frozen base, plus init_adapter when given); a role with no
 * adapter, head or base to train (a rule-based reward) ignores resume_dir. cfg->optim fields beta1,
 * beta2 and eps left 0 take optim_defaults; an empty schedule is constant.
 * Fails with a message naming the role and the bad setting or file. */
int role_new(Role **out, const Plumb__RoleConfig *cfg, Base *base, const char *base_path,
             const Tokenizer *tok, const char *tok_dir);
void role_free(Role **r);

/* Handles request q (q->role names this role, or is empty). The reply body
 * is set on rep (an envelope the caller made with wire_envelope(a, q->id,
 * role)); reply tensors live in a. On failure returns < 0 and pl_error()
 * says why (the caller answers with an Error); the role's state is
 * unchanged by a request that fails validation.
 *
 * train: the batch's units (sequences; pairs for dpo, orpo, bt) are cut
 * into `minibatches` contiguous parts of one order (identity for one
 * minibatch, else shuffled by an Rng seeded with `seed`), and for each of
 * `epochs` epochs each part is one optimizer step: forward (micro_batch
 * sequences at a time), the loss over the whole part, backward (a second
 * forward per micro-batch), global-norm clipping, AdamW per trainable
 * buffer at lr_at(opt_step); opt_step and adapter_version +1 per step.
 * epochs and minibatches 0 mean 1; more minibatches than units fails. The
 * reply's metrics are means over the steps of the call: loss, grad_norm
 * (before clipping), lr, and per body sft: nll, tokens; ppo/grpo: pg_loss,
 * kl, clipfrac, approx_kl, entropy; value: value_loss, value_clipfrac,
 * value_mean; dpo: reward_chosen, reward_rejected, margin, accuracy; orpo:
 * those and nll, log_odds; bt: accuracy, margin, reward_chosen,
 * reward_rejected. Every tensor and option is checked before the model is
 * touched.
 *
 * With dp.size > 1 the same request goes to dp.size replicas of the role.
 * Each cuts the minibatches as above, runs forward and backward on its
 * share of every minibatch (units [U*rank/size, U*(rank+1)/size) of the
 * minibatch's U), and sums through r->allreduce first the model outputs
 * (so that every replica computes the loss, its gradient and the metrics
 * over the whole minibatch, exactly as one replica would) and then the
 * parameter gradients; all replicas then clip and step alike. A minibatch
 * with fewer units than replicas fails. The reply's params_hash lets the
 * caller check that the replicas still hold the same parameters. */
int role_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

/* Writes the role's state into dir/<role>/: adapter/ (PEFT layout),
 * head.safetensors ("weight" (C), "bias" (1)), optimizer.safetensors
 * ("m_i", "v_i" per trainable buffer in model_trainable's order), for
 * train_base the full model under model/ (config.json + model.safetensors),
 * and last state.json {role, adapter_version, opt_step}, whose presence
 * marks a complete save (safetensors files and state.json go through a
 * temporary name and a rename). */
int role_save(const Role *r, const char *dir);

/* Writes a Hugging Face folder into dir: config.json, model.safetensors
 * (the base with the adapter merged), the tokenizer files, and the adapter
 * itself in PEFT layout under dir/adapter/ when there is one. */
int role_export_hf(const Role *r, const char *dir);

#endif
