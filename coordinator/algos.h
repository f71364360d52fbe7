/* algos.h: the algorithms the coordinator drives, one table row each: the
 * roles a run needs, the shape of its data, its defaults, its step, its
 * eval, and the roles it trains (whose state a checkpoint saves).
 *
 * Adding an algorithm is a row here, its step (step_*.c), its keys in
 * config.c and, when it has a loss of its own, a train body in a role's
 * folder. */
#ifndef PLUMB_ALGOS_H
#define PLUMB_ALGOS_H

#include "algo/algo.h"
#include "data/dataset.h"

struct Run;
struct RunConfig;

typedef struct {
    AlgoName algo;
    const char *summary;     /* one line, for messages and --help-config       */
    /* The roles a run needs (bit 1u << RoleKind); some depend on the config
     * (the reference only with a KL term). */
    unsigned (*roles)(const struct RunConfig *c);
    unsigned trained;        /* roles it trains (bit 1u << RoleKind)           */
    DsFormat data;           /* the shape of data.train                        */
    int units_per_record;    /* the trainer's units (sequences, or pairs) per record
                                of data.train (0: algo.group_size)              */
    /* defaults of the "auto" keys */
    int group_size;
    float kl_coef;
    const char *kl_estimator;
    float beta;
    /* One step on records which[0..n) of data.train. */
    int (*step)(struct Run *r, const long *which, int n);
    /* The eval on data.eval and data.eval_pref (each when given). */
    int (*eval)(struct Run *r);
} AlgoDesc;

/* The row of a, or NULL when the coordinator does not drive a. */
const AlgoDesc *algos_find(AlgoName a);

#endif
