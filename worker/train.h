/* train.h: the train loop every role shares, and the descriptor of a train
 * body (one per loss: sft, ppo, grpo, dpo, orpo, simpo, kto, value, bt),
 * which the role folders define.
 *
 * role_train cuts the request's units (sequences; pairs for the pairwise
 * bodies) into `minibatches` contiguous parts of one order (identity for
 * one minibatch, else shuffled by an Rng seeded with `seed`), and for each
 * of `epochs` epochs each part is one optimizer step: forward (micro_batch
 * sequences at a time), the body's loss over the whole part, backward (a
 * second forward per micro-batch), global-norm clipping, AdamW per
 * trainable buffer at lr_at(opt_step); opt_step and adapter_version +1 per
 * step. epochs and minibatches 0 mean 1; more minibatches than units
 * fails. The reply's metrics are means over the steps of the call: loss,
 * grad_norm (before clipping), lr, then the body's own. Every tensor and
 * option is checked (the body's prepare) before the model is touched.
 *
 * With dp.size > 1 the same request goes to dp.size replicas of the role.
 * Each cuts the minibatches as above, runs forward and backward on its
 * share of every minibatch (units [U*rank/size, U*(rank+1)/size) of the
 * minibatch's U), and sums through r->coll first the model outputs (so
 * that every replica computes the loss, its gradient and the metrics over
 * the whole minibatch, exactly as one replica would) and then the
 * parameter gradients; all replicas then clip and step alike. A minibatch
 * with fewer units than replicas fails. The reply's params_hash lets the
 * caller check that the replicas still hold the same parameters.
 *
 * Dimension letters: S sequences of a part, N its tokens, P pairs, U units. */
#ifndef PLUMB_TRAIN_H
#define PLUMB_TRAIN_H

#include "algo/algo.h"
#include "worker/role.h"

#define TRAIN_MAX_METRICS 16    /* loss, grad_norm, lr and a body's own      */

/* One decoded, validated train request (filled by the body's prepare). */
typedef struct {
    const TrainBody *body;
    int pairs;               /* units are pairs: s[0] chosen, s[1] rejected   */
    WireSeqs s[2];
    float *in[2][3];         /* per-token inputs of s[k] (its N) each, or NULL */
    float *uin[2];           /* per-unit inputs (U) each, or NULL             */
    int U;                   /* units: sequences, or pairs                    */
    float T;                 /* log-prob temperature (1)                      */
    int need_ent;            /* the loss reads entropies                      */
    int need_val;            /* ... the head's values per token               */
    int need_last;           /* ... the head at each sequence's last token    */
    void *opts;              /* the body's options (body->opts_size bytes, 0ed) */
    const Plumb__DataParallel *dp; /* NULL: alone                             */
    uint64_t request;        /* id of the request (names the collective group) */
    int step;                /* optimizer steps this call has made so far     */
} TrainJob;

/* One minibatch, packed: for pairs the P chosen sequences, then the P
 * rejected ones. */
typedef struct {
    int S, N;                /* sequences, tokens                             */
    int P, Nc;               /* pairs; tokens of the chosen half              */
    int U;                   /* units of the part                             */
    int *tokens, *offsets, *targets; /* (N), (S+1), (N)                       */
    float *maskf;            /* (N)                                           */
    float *in[3];            /* (N) gathered per-token inputs, or NULL        */
    float *uin[2];           /* (U) gathered per-unit inputs, or NULL         */
    int *offsets_r;          /* (P+1) the rejected half's offsets from 0      */
} TrainPart;

/* What a loss reads (the part's outputs in the wire convention) and
 * writes (their gradients, zeroed before the call; leave alone what the
 * loss does not depend on). */
typedef struct {
    const float *lp, *ent, *val; /* (N) log-probs, entropies, head values     */
    const float *last;       /* (S) the head at each sequence's last token    */
    float *dlp, *dent, *dval;/* (N) d loss / d each                           */
    float *dlast;            /* (S)                                           */
} TrainOut;

struct TrainBody {
    Plumb__TrainReq__BodyCase body;
    const char *const *metrics; /* names of the body's own metrics            */
    int n_metrics;
    size_t opts_size;        /* bytes of its options (TrainJob.opts)          */
    /* bit i: metric i is the value at the call's first optimizer step (the
     * parameters as the request found them), not the mean over steps */
    unsigned first_step_metrics;
    /* Decodes and checks the request's body into j (s, in, uin, U, pairs,
     * T, need_*, opts) with the train_get_* helpers; PL_EPROTO naming the
     * field on bad input. */
    int (*prepare)(const Role *r, const Plumb__TrainReq *q, TrainJob *j);
    /* The loss of part p: *loss, its metrics m[0..n_metrics) and the
     * gradients in o. */
    int (*loss)(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m);
};

/* Runs train request q (q->train's body is b's) on r: see above. */
int role_train(Role *r, const TrainBody *b, const Plumb__Envelope *q, WireArena *a,
               Plumb__Envelope *rep);

/* ----------------------------------------------- helpers for prepare */

/* "train.<body>" of j (for messages). */
const char *train_what(const TrainJob *j);

/* Sequences of one unit each: s[0] from seqs (field "train.<body>.seqs"). */
int train_get_seqs(const Role *r, const Plumb__Seqs *seqs, TrainJob *j);

/* Pairs: s[0] chosen, s[1] rejected, of equal counts. */
int train_get_pair(const Role *r, const Plumb__Seqs *chosen, const Plumb__Seqs *rejected,
                   TrainJob *j);

/* A per-token f32 input of s[k] ("train.<body>.<field>"), into in[k][x]. */
int train_get_tok(const Plumb__Tensor *t, TrainJob *j, int k, int x, const char *field);

/* A per-unit f32 input (U values) into uin[x]. */
int train_get_unit(const Plumb__Tensor *t, TrainJob *j, int x, const char *field);

/* LossAgg from the wire ("" is token_mean); PL_EPROTO naming the field. */
int train_get_agg(const char *s, const TrainJob *j, LossAgg *agg);

#endif
