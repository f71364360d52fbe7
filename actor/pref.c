/* pref.c: the actor's preference train bodies (algo/pref.h): dpo (against
 * the reference's log-probs the request carries), orpo and simpo
 * (reference-free, over pairs), and kto (unpaired examples, each
 * desirable or not, against the reference and a KL reference point the
 * coordinator estimates).
 *
 * Pairs come packed as the P chosen sequences, then the P rejected ones
 * (worker/train.h); Nc is the chosen half's token count. */
#include <math.h>
#include <stdlib.h>

#include "actor/bodies.h"
#include "algo/pref.h"
#include "common/err.h"

/* The chosen and rejected halves of a pairwise part. */
static void halves(const TrainPart *p, AlgoSeqs *sc, AlgoSeqs *sr) {
    *sc = (AlgoSeqs){.B = p->P, .N = p->Nc, .offsets = p->offsets, .mask = p->maskf};
    *sr = (AlgoSeqs){.B = p->P, .N = p->N - p->Nc, .offsets = p->offsets_r, .mask = p->maskf + p->Nc};
}

/* The metrics every pairwise body reports, in this order. */
static void pair_metrics(const PrefOut *o, double *m) {
    m[0] = o->reward_chosen, m[1] = o->reward_rejected, m[2] = o->margin, m[3] = o->accuracy;
}

static const char *const pair_names[] = {"reward_chosen", "reward_rejected", "margin", "accuracy",
                                         "nll", "log_odds"};

/* ------------------------------------------------------------------ dpo */

static int dpo_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    const Plumb__DpoBody *b = q->dpo;
    DpoOpts *o = j->opts;
    PL_TRY(train_get_pair(r, b->chosen, b->rejected, j));
    PL_TRY(train_get_tok(b->ref_chosen, j, 0, 0, "ref_chosen"));
    PL_TRY(train_get_tok(b->ref_rejected, j, 1, 0, "ref_rejected"));
    algo_dpo_defaults(o);
    if (b->loss_type && *b->loss_type && dpo_loss_parse(b->loss_type, &o->loss_type) < 0)
        return pl_wrap(PL_EPROTO, "%s.loss_type", train_what(j));
    if (!(b->beta > 0) || !isfinite(b->beta) || !(b->label_smoothing >= 0) ||
        !(b->label_smoothing <= 0.5f))
        return pl_fail(PL_EPROTO, "%s: beta %g must be > 0 and label_smoothing %g in [0, 0.5]",
                       train_what(j), b->beta, b->label_smoothing);
    o->beta = b->beta;
    o->label_smoothing = b->label_smoothing;
    return 0;
}

/* in[0] is the reference's log-probs of both halves. */
static int dpo_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    AlgoSeqs sc, sr;
    halves(p, &sc, &sr);
    int Nc = p->Nc;
    PrefOut out;
    PL_TRY(algo_dpo(&sc, o->lp, p->in[0], &sr, o->lp + Nc, p->in[0] + Nc, j->opts, &out, o->dlp,
                    o->dlp + Nc));
    *loss = out.loss;
    pair_metrics(&out, m);
    return 0;
}

const TrainBody actor_dpo = {.body = PLUMB__TRAIN_REQ__BODY_DPO, .metrics = pair_names,
                             .n_metrics = 4, .opts_size = sizeof(DpoOpts),
                             .prepare = dpo_prepare, .loss = dpo_loss};

/* ----------------------------------------------------------------- orpo */

static int orpo_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    PL_TRY(train_get_pair(r, q->orpo->chosen, q->orpo->rejected, j));
    if (!(q->orpo->lambda >= 0) || !isfinite(q->orpo->lambda))
        return pl_fail(PL_EPROTO, "%s: lambda %g must be >= 0", train_what(j), q->orpo->lambda);
    *(float *)j->opts = q->orpo->lambda;
    return 0;
}

static int orpo_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    AlgoSeqs sc, sr;
    halves(p, &sc, &sr);
    int Nc = p->Nc;
    PrefOut out;
    PL_TRY(algo_orpo(&sc, o->lp, &sr, o->lp + Nc, *(const float *)j->opts, &out, o->dlp,
                     o->dlp + Nc));
    *loss = out.loss;
    pair_metrics(&out, m);
    m[4] = out.nll, m[5] = out.log_odds;
    return 0;
}

const TrainBody actor_orpo = {.body = PLUMB__TRAIN_REQ__BODY_ORPO, .metrics = pair_names,
                              .n_metrics = 6, .opts_size = sizeof(float),
                              .prepare = orpo_prepare, .loss = orpo_loss};

/* ---------------------------------------------------------------- simpo */

static int simpo_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    const Plumb__SimpoBody *b = q->simpo;
    SimpoOpts *o = j->opts;
    PL_TRY(train_get_pair(r, b->chosen, b->rejected, j));
    if (!(b->beta > 0) || !isfinite(b->beta) || !isfinite(b->gamma) ||
        !(b->label_smoothing >= 0) || !(b->label_smoothing <= 0.5f))
        return pl_fail(PL_EPROTO, "%s: beta %g must be > 0, gamma %g finite and label_smoothing %g "
                       "in [0, 0.5]", train_what(j), b->beta, b->gamma, b->label_smoothing);
    o->beta = b->beta, o->gamma = b->gamma, o->label_smoothing = b->label_smoothing;
    return 0;
}

static int simpo_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    AlgoSeqs sc, sr;
    halves(p, &sc, &sr);
    int Nc = p->Nc;
    PrefOut out;
    PL_TRY(algo_simpo(&sc, o->lp, &sr, o->lp + Nc, j->opts, &out, o->dlp, o->dlp + Nc));
    *loss = out.loss;
    pair_metrics(&out, m);
    return 0;
}

const TrainBody actor_simpo = {.body = PLUMB__TRAIN_REQ__BODY_SIMPO, .metrics = pair_names,
                               .n_metrics = 4, .opts_size = sizeof(SimpoOpts),
                               .prepare = simpo_prepare, .loss = simpo_loss};

/* ------------------------------------------------------------------ kto */

typedef struct {
    KtoOpts ko;
    float kl;                /* the reference point z0 (>= 0)                 */
} KtoBodyOpts;

static int kto_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    const Plumb__KtoBody *b = q->kto;
    KtoBodyOpts *o = j->opts;
    PL_TRY(train_get_seqs(r, b->seqs, j));
    PL_TRY(train_get_tok(b->ref_logprobs, j, 0, 0, "ref_logprobs"));
    PL_TRY(train_get_unit(b->desirable, j, 0, "desirable"));
    for (int i = 0; i < j->U; i++)
        if (j->uin[0][i] != 0.0f && j->uin[0][i] != 1.0f)
            return pl_fail(PL_EPROTO, "%s.desirable[%d] is %g, not 0 or 1", train_what(j), i,
                           j->uin[0][i]);
    if (!(b->beta > 0) || !isfinite(b->beta) || !(b->desirable_weight >= 0) ||
        !isfinite(b->desirable_weight) || !(b->undesirable_weight >= 0) ||
        !isfinite(b->undesirable_weight) || !(b->kl >= 0) || !isfinite(b->kl))
        return pl_fail(PL_EPROTO, "%s: beta %g must be > 0, desirable_weight %g, "
                       "undesirable_weight %g and kl %g >= 0", train_what(j), b->beta,
                       b->desirable_weight, b->undesirable_weight, b->kl);
    o->ko = (KtoOpts){.beta = b->beta, .desirable_weight = b->desirable_weight,
                      .undesirable_weight = b->undesirable_weight};
    o->kl = b->kl;
    return 0;
}

/* in[0] reference log-probs, uin[0] the 0/1 labels. */
static int kto_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    const KtoBodyOpts *ko = j->opts;
    AlgoSeqs s = {.B = p->S, .N = p->N, .offsets = p->offsets, .mask = p->maskf};
    int *des = malloc(sizeof(int) * (size_t)(p->S ? p->S : 1));
    PL_CHECK_ALLOC(des);
    for (int i = 0; i < p->S; i++) des[i] = p->uin[0][i] != 0.0f;
    PrefOut out;
    int rc = algo_kto(&s, o->lp, p->in[0], des, ko->kl, &ko->ko, &out, o->dlp);
    free(des);
    PL_TRY(rc);
    *loss = out.loss;
    m[0] = out.reward_chosen, m[1] = out.reward_rejected, m[2] = out.margin, m[3] = ko->kl;
    return 0;
}

static const char *const kto_names[] = {"reward_chosen", "reward_rejected", "margin", "kl"};

const TrainBody actor_kto = {.body = PLUMB__TRAIN_REQ__BODY_KTO, .metrics = kto_names,
                             .n_metrics = 4, .opts_size = sizeof(KtoBodyOpts),
                             .prepare = kto_prepare, .loss = kto_loss};
