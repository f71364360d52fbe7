/* role.h: one role hosted by a worker process (actor, critic, reward,
 * reference), and the table that says what a role answers.
 *
 * A Role is a Model on a Base plus what the role owns: its LoRA adapter,
 * its scalar head, its AdamW state, its adapter version, and whatever its
 * own folder keeps (priv: the reward's rule). Roles of one process share one
 * read-only Base; a role that trains the base itself (train_base, full
 * fine-tuning) loads its own flat copy.
 *
 * worker/ hosts roles without knowing them: each role's folder (actor/,
 * critic/, reward/, reference/) defines a RoleDesc, the requests it answers
 * and the train bodies it takes, and the program above both (tools/) hands
 * the worker a table of them. worker/ gives the roles what they share: the
 * hosted model and its forwards in the wire's convention (infer.h), the
 * train loop (train.h), state save / resume / export (role_save,
 * role_export_hf) and the dispatch (role_handle).
 *
 * Per-token arrays on the wire are indexed by the token they describe:
 * logprobs[t] = log p(tokens[t] | tokens before t in its sequence), 0 at the
 * first token of each sequence; values[t] = the critic's value of the state
 * before token t (read at position t - 1); masks are 1 on response tokens.
 * The model's own outputs (model.h: position t scores token t + 1) are
 * shifted into this convention in one place (infer.h). */
#ifndef PLUMB_ROLE_H
#define PLUMB_ROLE_H

#include <stdint.h>

#include "common/collective.h"
#include "common/roles.h"
#include "common/wire.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/tokenizer.h"

typedef struct Role Role;
typedef struct TrainBody TrainBody; /* worker/train.h */

/* Answers request q (its body case is the handler's) into rep, an envelope
 * the caller made with wire_envelope(a, q->id, role); reply tensors live in
 * a. On failure returns < 0 with pl_error() saying why (the caller answers
 * with an Error); a request that fails validation leaves the role as it
 * was. */
typedef int (*RoleHandler)(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

typedef struct {
    Plumb__Envelope__BodyCase body; /* the request kind                          */
    RoleHandler fn;
} RoleRequest;

/* What a role is: its requests, its train bodies and the hooks of its own
 * state. Defined by the role's folder; static and read-only. */
typedef struct {
    RoleKind kind;
    const RoleRequest *requests;    /* requests other than train                 */
    int n_requests;
    const TrainBody *const *bodies; /* the train bodies it takes (none: it never */
    int n_bodies;                   /* trains, and has no optimizer state)       */
    /* Adjusts the run-wide RoleConfig before the role is built (the
     * reference drops adapter, head and resume settings); may be NULL. */
    void (*configure)(Plumb__RoleConfig *cfg);
    /* Builds the role's own state from cfg once the model is ready (into
     * r->priv); may be NULL. Fails naming the bad setting. */
    int (*init)(Role *r, const Plumb__RoleConfig *cfg);
    void (*free)(Role *r);          /* frees r->priv; may be NULL                */
} RoleDesc;

struct Role {
    const RoleDesc *desc;
    RoleKind kind;
    Base *base;              /* shared unless own_base                         */
    Device *dev;             /* where the model computes (NULL: the CPU)       */
    struct Bases *bases;     /* the worker's shared bases by path (or NULL)    */
    int own_base;            /* 1: loaded for this role (train_base); 2: from
                                bases, shared with roles naming the same path */
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
    WireLimits limits;       /* what requests are checked against              */
    void *priv;              /* the role folder's own state (desc->init)       */
    /* The replicas' collective for data-parallel train requests (set by
     * the worker, not owned); NULL: a train request with dp.size > 1
     * fails. */
    Collective *coll;
    /* A data-parallel train request failed after some of its updates, with
     * no snapshot to go back to: this replica's state is none the others
     * hold, so it cannot be the source of a new replica's (sync_from). */
    int dp_dirty;
};

/* Builds a role of kind d->kind from cfg on base (shared, not owned;
 * base_path is where it came from, named in saved adapter configs). cfg->role
 * must name d's kind. tok and tok_dir are the tokenizer (rules decode
 * responses; exports copy its files). The adapter starts from
 * cfg->init_adapter when given, the head from cfg->head_path. With
 * cfg->resume_dir the adapter, head, optimizer moments, opt_step,
 * adapter_version and (train_base) the weights are loaded from
 * resume_dir/<role>/ (role_save's layout), so training continues bit for
 * bit. A train_base role works on its own flat copy of base. With
 * cfg->base_path the role uses that model folder (a fully fine-tuned
 * reward model's, of base's vocabulary and shape) instead of base. A role
 * with no adapter, head or base to train (a rule-based reward) ignores
 * resume_dir. cfg->optim fields beta1, beta2 and eps left 0 take
 * optim_defaults; an empty schedule is constant. Fails with a message
 * naming the role and the bad setting or file. */
int role_new(Role **out, const RoleDesc *d, const Plumb__RoleConfig *cfg, Base *base,
             const char *base_path, const Tokenizer *tok, const char *tok_dir, Device *dev,
             struct Bases *bases);
void role_free(Role **r);

/* Handles request q (q->role names this role, or is empty) with the
 * handler r->desc names for it (see RoleHandler); a train request goes to
 * role_train (train.h) with the body's descriptor. A request the role does
 * not answer fails with PL_EPROTO naming both. */
int role_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

/* PL_EPROTO "role 'critic' does not answer 'train.sft'". */
int role_unsupported(const Role *r, const Plumb__Envelope *q);

/* Sets rep's body to Ok. */
int role_reply_ok(WireArena *a, Plumb__Envelope *rep);

/* ------------------------------------------------------------ state */

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

/* Loads what role_save wrote into rdir (= dir/<role>/; the adapter and
 * the full model are loaded while the role is built): head, optimizer
 * moments, opt_step and adapter_version. */
int role_resume(Role *r, const char *rdir);

/* Loads a head.safetensors ("weight" (C), "bias" (1)) into r's head. */
int role_head_load(Role *r, const char *path);

/* Handlers of the checkpoint request: role_save into q->dir, and with
 * export_hf (role_on_checkpoint_hf only) role_export_hf into q->dir/hf. */
int role_on_checkpoint(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);
int role_on_checkpoint_hf(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep);

#endif
