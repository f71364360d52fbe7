/* critic.c: the critic's requests and its value loss (critic.h). */
#include <math.h>
#include <stdlib.h>

#include "algo/ppo.h"
#include "common/err.h"
#include "critic/critic.h"
#include "worker/infer.h"
#include "worker/train.h"

static int values(Role *r, const Plumb__Envelope *e, WireArena *a, Plumb__Envelope *rep) {
    if (!r->model->head) return pl_fail(PL_EPROTO, "values: role critic has no value head");
    WireSeqs s;
    PL_TRY(wire_get_seqs(e->values->seqs, &r->limits, "values.seqs", &s));
    float *v = wire_alloc(a, sizeof(float) * (size_t)(s.N ? s.N : 1));
    Plumb__ValuesRep *m = wire_alloc(a, sizeof *m);
    int rc = !v || !m ? pl_fail(PL_ENOMEM, "values: out of memory") : 0;
    if (rc == 0) rc = role_infer(r, s.tokens, s.offsets, s.B, 1.0f, NULL, NULL, v, NULL);
    if (rc == 0) {
        plumb__values_rep__init(m);
        m->values = wire_f32(a, v, s.N);
        rep->body_case = PLUMB__ENVELOPE__BODY_VALUES_REP;
        rep->values_rep = m;
    }
    wire_seqs_free(&s);
    return rc;
}

/* ---------------------------------------------------------- value loss */

typedef struct {
    float clip_range;
    LossAgg agg;
    int max_new;
} ValueOpts;

static int value_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    const Plumb__ValueBody *b = q->value;
    ValueOpts *o = j->opts;
    const char *w = train_what(j);
    if (!r->model->head) return pl_fail(PL_EPROTO, "%s: role %s has no value head", w, role_kind_name(r->kind));
    PL_TRY(train_get_seqs(r, b->seqs, j));
    PL_TRY(train_get_tok(b->old_values, j, 0, 0, "old_values"));
    PL_TRY(train_get_tok(b->returns, j, 0, 1, "returns"));
    PL_TRY(train_get_agg(b->loss_agg, j, &o->agg));
    if (!isfinite(b->clip_range))
        return pl_fail(PL_EPROTO, "%s: clip_range %g is not finite", w, b->clip_range);
    if (o->agg == LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM && b->max_new_tokens <= 0)
        return pl_fail(PL_EPROTO, "%s: loss_agg seq_mean_token_sum_norm needs max_new_tokens > 0", w);
    o->clip_range = b->clip_range;
    o->max_new = b->max_new_tokens;
    j->need_val = 1;
    return 0;
}

/* in[0] old values, in[1] returns. */
static int value_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    const ValueOpts *vo = j->opts;
    AlgoSeqs s = {.B = p->S, .N = p->N, .offsets = p->offsets, .mask = p->maskf};
    ValueLossOut out;
    PL_TRY(algo_value_loss(&s, o->val, p->in[0], p->in[1], vo->clip_range, vo->agg, vo->max_new,
                           &out, o->dval));
    *loss = out.loss, m[0] = out.loss, m[1] = out.clipfrac, m[2] = out.value_mean;
    return 0;
}

static const char *const value_metrics[] = {"value_loss", "value_clipfrac", "value_mean"};

static const TrainBody critic_value = {.body = PLUMB__TRAIN_REQ__BODY_VALUE,
                                       .metrics = value_metrics, .n_metrics = 3,
                                       .opts_size = sizeof(ValueOpts), .prepare = value_prepare,
                                       .loss = value_loss};

/* ---------------------------------------------------------------- role */

static const RoleRequest requests[] = {
    {PLUMB__ENVELOPE__BODY_VALUES, values},
    {PLUMB__ENVELOPE__BODY_CHECKPOINT, role_on_checkpoint},
};
static const TrainBody *const bodies[] = {&critic_value};

const RoleDesc critic_role = {.kind = ROLE_CRITIC, .requests = requests, .n_requests = 2,
                              .bodies = bodies, .n_bodies = 1};
