/* algos.c: the algorithm table (algos.h). */
#include "coordinator/algos.h"

#include "common/err.h"
#include "common/roles.h"
#include "coordinator/run_impl.h"

#define A   (1u << ROLE_ACTOR)
#define C   (1u << ROLE_CRITIC)
#define W   (1u << ROLE_REWARD)
#define REF (1u << ROLE_REFERENCE)

static unsigned actor_only(const RunConfig *c) { return A; }
static unsigned reward_only(const RunConfig *c) { return W; }
static unsigned actor_ref(const RunConfig *c) { return A | REF; }
static unsigned grpo_roles(const RunConfig *c) { return A | W | (c->kl_coef != 0 ? REF : 0); }
static unsigned ppo_roles(const RunConfig *c) { return A | W | C | (c->kl_coef != 0 ? REF : 0); }

/* The evals: generation on data.eval for a policy, and the choice on
 * data.eval_pref by the policy (preference algorithms) or the reward
 * model. */
static int eval_policy(Run *r) { return r->eval.n > 0 ? eval_generate(r) : 0; }

static int eval_policy_pref(Run *r) {
    PL_TRY(eval_policy(r));
    return r->eval_pref.n > 0 ? eval_pref_policy(r) : 0;
}

static int eval_rm(Run *r) { return r->eval_pref.n > 0 ? eval_pref_rm(r) : 0; }

/* In the order of config.c's ALGO_CHOICES. Units: what the trainer's
 * minibatches cut (a sequence; a pair for the pairwise losses); kto trains
 * on two examples per pair. */
/* Every row starts from the common defaults; a row overrides those its
 * algorithm changes (hence the warning is off here). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
#define ROW(a, ...) {.algo = a, .kl_estimator = "k3", .beta = 0.1f, .group_size = 1, __VA_ARGS__}
static const AlgoDesc TABLE[] = {
    ROW(ALGO_SFT, .summary = "supervised fine-tuning on prompt/response pairs",
        .roles = actor_only, .trained = A, .data = DS_SFT, .units_per_record = 1,
        .step = step_sft, .eval = eval_policy),
    ROW(ALGO_RM, .summary = "a Bradley-Terry reward model on preference pairs",
        .roles = reward_only, .trained = W, .data = DS_PREF, .units_per_record = 1,
        .step = step_rm, .eval = eval_rm),
    ROW(ALGO_DPO, .summary = "direct preference optimization against the reference",
        .roles = actor_ref, .trained = A, .data = DS_PREF, .units_per_record = 1,
        .step = step_dpo, .eval = eval_policy_pref),
    ROW(ALGO_ORPO, .summary = "odds-ratio preference optimization (no reference)",
        .roles = actor_only, .trained = A, .data = DS_PREF, .units_per_record = 1,
        .step = step_orpo, .eval = eval_policy_pref),
    ROW(ALGO_SIMPO, .summary = "SimPO: length-normalized, reference-free preference optimization",
        .roles = actor_only, .trained = A, .data = DS_PREF, .units_per_record = 1, .beta = 2.0f,
        .step = step_simpo, .eval = eval_policy_pref),
    ROW(ALGO_KTO, .summary = "KTO: each pair's chosen as desirable, its rejected as undesirable",
        .roles = actor_ref, .trained = A, .data = DS_PREF, .units_per_record = 2,
        .step = step_kto, .eval = eval_policy_pref),
    ROW(ALGO_GRPO, .summary = "group-relative policy optimization on rollouts",
        .roles = grpo_roles, .trained = A, .data = DS_PROMPT, .group_size = 8, .kl_coef = 0.04f,
        .step = step_grpo, .eval = eval_policy),
    ROW(ALGO_PPO, .summary = "PPO with a critic and GAE on rollouts", .roles = ppo_roles,
        .trained = A | C, .data = DS_PROMPT, .kl_coef = 0.05f, .kl_estimator = "k1",
        .step = step_ppo, .eval = eval_policy),
};
#pragma GCC diagnostic pop

#define NROWS ((int)(sizeof TABLE / sizeof TABLE[0]))

const AlgoDesc *algos_find(AlgoName a) {
    for (int i = 0; i < NROWS; i++)
        if (TABLE[i].algo == a) return &TABLE[i];
    return NULL;
}
