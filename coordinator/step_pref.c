/* step_pref.c: the preference steps (algos.h): rm, dpo, orpo, simpo over
 * chosen / rejected pairs, and kto over the same pairs as desirable and
 * undesirable examples; the reference log-probs they need, computed once
 * per record. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "coordinator/run_impl.h"

/* Records per request of the reference's log-probs (a bound on the message
 * size however many records miss the cache at once). */
#define REF_CHUNK 4096

/* ------------------------------------------------------ reference cache */

void refcache_free(RefCache *c) {
    for (long i = 0; i < c->n && c->c; i++)
        free(c->c[i]);
    for (long i = 0; i < c->n && c->r; i++)
        free(c->r[i]);
    free(c->c);
    free(c->r);
    memset(c, 0, sizeof *c);
}

/* Asks the reference for records miss[0..nm) and keeps their log-probs. */
static int ref_fill(Run *r, const Records *recs, const long *miss, int nm, RefCache *cache) {
    Packed pc, pr;
    float *lp[2];
    int rc = req_pair(r, recs, miss, nm, ROLE_REFERENCE, &pc, &pr, lp);
    for (int s = 0; s < 2 && rc == 0; s++) {
        const Packed *p = s ? &pr : &pc;
        for (int i = 0; rc == 0 && i < nm; i++) {
            int len = p->offsets[i + 1] - p->offsets[i];
            float *x = malloc(sizeof(float) * (len ? len : 1));
            if (!x) {
                rc = pl_fail(PL_ENOMEM, "reference cache");
                break;
            }
            memcpy(x, lp[s] + p->offsets[i], sizeof(float) * len);
            (s ? cache->r : cache->c)[miss[i]] = x;
        }
    }
    free(lp[0]), free(lp[1]);
    packed_free(&pc);
    packed_free(&pr);
    return rc;
}

int refcache_get(Run *r, const Records *recs, const long *which, int n, RefCache *cache) {
    if (!cache->c) {
        cache->c = calloc((size_t)recs->n + 1, sizeof(float *));
        cache->r = calloc((size_t)recs->n + 1, sizeof(float *));
        cache->n = recs->n;
        if (!cache->c || !cache->r)
            return pl_fail(PL_ENOMEM, "reference cache of %ld records", recs->n);
    }
    /* the misses, each once, in the batch's order */
    long *miss = malloc(sizeof(long) * (n ? n : 1));
    unsigned char *seen = calloc((size_t)recs->n + 1, 1);
    int nm = 0, rc = 0;
    if (!miss || !seen) rc = pl_fail(PL_ENOMEM, "reference cache");
    for (int i = 0; rc == 0 && i < n; i++)
        if (!cache->c[which[i]] && !seen[which[i]]) seen[which[i]] = 1, miss[nm++] = which[i];
    for (int at = 0; rc == 0 && at < nm; at += REF_CHUNK)
        rc = ref_fill(r, recs, miss + at, nm - at < REF_CHUNK ? nm - at : REF_CHUNK, cache);
    free(miss);
    free(seen);
    return rc;
}

/* Cached per-record arrays of records which[0..n) in batch order, in a. */
static float *gather(WireArena *a, float **cache, const long *which, int n, const Packed *p) {
    float *x = wire_alloc(a, sizeof(float) * (p->N ? p->N : 1));
    for (int i = 0; x && i < n; i++)
        memcpy(x + p->offsets[i], cache[which[i]],
               sizeof(float) * (p->offsets[i + 1] - p->offsets[i]));
    return x;
}

/* --------------------------------------------------------------- pairs */

/* A step's pairs, packed and on the wire. */
typedef struct {
    const long *which;
    int n;
    Packed pc, pr; /* prompt + chosen, prompt + rejected            */
    Plumb__Seqs *sc, *sr;
} Pairs;

/* Sets the train request's body for pairs q (arrays in a). */
typedef int (*PairBody)(Run *r, WireArena *a, const Pairs *q, Plumb__TrainReq *t);

/* One pairwise step: pack, the body, the trainer of role k. */
static int pair_step(Run *r, const long *which, int n, RoleKind k, PairBody body) {
    Pairs q = {.which = which, .n = n};
    int rc = pack_records(&r->train, which, n, 0, &q.pc);
    if (rc == 0) rc = pack_records(&r->train, which, n, 1, &q.pr);
    WireArena *a = wire_arena_new();
    if (rc == 0 && !a) rc = pl_fail(PL_ENOMEM, "train request: out of memory");
    if (rc == 0) {
        Plumb__Envelope *e = req_train(a, k, r, rng_mix3(r->cfg->seed, TAG_TRAIN, r->step));
        q.sc = req_packed(a, &q.pc);
        q.sr = req_packed(a, &q.pr);
        rc = body(r, a, &q, e->train);
        r->tokens += q.pc.N + q.pr.N;
        if (rc == 0) rc = req_train_call(r, k, e, a, "train/");
    }
    wire_arena_free(&a);
    packed_free(&q.pc);
    packed_free(&q.pr);
    return rc;
}

static int rm_body(Run *r, WireArena *a, const Pairs *q, Plumb__TrainReq *t) {
    Plumb__BtBody *b = wire_alloc(a, sizeof *b);
    float *margin = wire_alloc(a, sizeof(float) * (q->n ? q->n : 1));
    if (!b || !margin) return pl_fail(PL_ENOMEM, "rm request: out of memory");
    plumb__bt_body__init(b);
    b->chosen = q->sc, b->rejected = q->sr;
    int any = 0;
    for (int i = 0; i < q->n; i++)
        if (r->train.r[q->which[i]].has_margin) margin[i] = r->train.r[q->which[i]].margin, any = 1;
    if (any) b->margin = wire_f32(a, margin, q->n);
    b->center_coef = r->cfg->center_coef;
    t->body_case = PLUMB__TRAIN_REQ__BODY_BT;
    t->bt = b;
    return 0;
}

static int dpo_body(Run *r, WireArena *a, const Pairs *q, Plumb__TrainReq *t) {
    const RunConfig *c = r->cfg;
    Plumb__DpoBody *b = wire_alloc(a, sizeof *b);
    float *ref_c = gather(a, r->ref.c, q->which, q->n, &q->pc);
    float *ref_r = gather(a, r->ref.r, q->which, q->n, &q->pr);
    if (!b || !ref_c || !ref_r) return pl_fail(PL_ENOMEM, "dpo request: out of memory");
    plumb__dpo_body__init(b);
    b->chosen = q->sc, b->rejected = q->sr;
    b->ref_chosen = wire_f32(a, ref_c, q->pc.N);
    b->ref_rejected = wire_f32(a, ref_r, q->pr.N);
    b->loss_type = (char *)c->loss_type;
    b->beta = c->beta;
    b->label_smoothing = c->label_smoothing;
    t->body_case = PLUMB__TRAIN_REQ__BODY_DPO;
    t->dpo = b;
    return 0;
}

static int orpo_body(Run *r, WireArena *a, const Pairs *q, Plumb__TrainReq *t) {
    Plumb__OrpoBody *b = wire_alloc(a, sizeof *b);
    if (!b) return pl_fail(PL_ENOMEM, "orpo request: out of memory");
    plumb__orpo_body__init(b);
    b->chosen = q->sc, b->rejected = q->sr;
    b->lambda = r->cfg->orpo_lambda;
    t->body_case = PLUMB__TRAIN_REQ__BODY_ORPO;
    t->orpo = b;
    return 0;
}

static int simpo_body(Run *r, WireArena *a, const Pairs *q, Plumb__TrainReq *t) {
    const RunConfig *c = r->cfg;
    Plumb__SimpoBody *b = wire_alloc(a, sizeof *b);
    if (!b) return pl_fail(PL_ENOMEM, "simpo request: out of memory");
    plumb__simpo_body__init(b);
    b->chosen = q->sc, b->rejected = q->sr;
    b->beta = c->beta;
    b->gamma = c->simpo_gamma;
    b->label_smoothing = c->label_smoothing;
    t->body_case = PLUMB__TRAIN_REQ__BODY_SIMPO;
    t->simpo = b;
    return 0;
}

int step_rm(Run *r, const long *which, int n) {
    return pair_step(r, which, n, ROLE_REWARD, rm_body);
}
int step_orpo(Run *r, const long *which, int n) {
    return pair_step(r, which, n, ROLE_ACTOR, orpo_body);
}
int step_simpo(Run *r, const long *which, int n) {
    return pair_step(r, which, n, ROLE_ACTOR, simpo_body);
}

int step_dpo(Run *r, const long *which, int n) {
    PL_TRY(refcache_get(r, &r->train, which, n, &r->ref));
    return pair_step(r, which, n, ROLE_ACTOR, dpo_body);
}

/* ----------------------------------------------------------------- kto */

/* The KTO examples of n pairs: the n chosen (desirable), then the n
 * rejected (undesirable), and the mismatched examples that estimate the
 * KL reference point: example i's prompt with the completion of example
 * i - 1 (cyclically), as TRL's KTOTrainer pairs them. */
static int kto_pack(const Records *recs, const long *which, int n, Packed *ex, Packed *kl) {
    memset(ex, 0, sizeof *ex);
    memset(kl, 0, sizeof *kl);
    for (int i = 0; i < 2 * n; i++) {
        const DsRecord *d = &recs->r[which[i % n]];
        PL_TRY(packed_add(ex, d->prompt, d->n_prompt, i < n ? d->chosen : d->rejected,
                          i < n ? d->n_chosen : d->n_rejected));
    }
    for (int i = 0; i < 2 * n; i++) {
        int j = (i + 2 * n - 1) % (2 * n);
        const DsRecord *d = &recs->r[which[i % n]], *e = &recs->r[which[j % n]];
        PL_TRY(packed_add(kl, d->prompt, d->n_prompt, j < n ? e->chosen : e->rejected,
                          j < n ? e->n_chosen : e->n_rejected));
    }
    return 0;
}

/* z0 = max(0, mean over the KL examples of sum (lp - ref)) over their
 * completion tokens: the policy (the actor as it is before this step's
 * update) and the reference, asked at once. */
static int kto_reference_point(Run *r, const Packed *kl, double *z0) {
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall cs[2];
    memset(cs, 0, sizeof cs);
    const RoleKind who[2] = {ROLE_ACTOR, ROLE_REFERENCE};
    float *lp[2] = {NULL, NULL};
    int rc = 0;
    for (int s = 0; rc == 0 && s < 2; s++) {
        rc = cs[s].worker = req_first(r, who[s]);
        if (rc >= 0) rc = 0, cs[s].req = req_logprobs(a, who[s], kl, 1.0f);
    }
    if (rc == 0) rc = req_call(r, cs, 2);
    for (int s = 0; rc == 0 && s < 2; s++) {
        rc = req_expect(r, &cs[s], PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "logprobs");
        if (rc == 0)
            rc = req_f32(r, &cs[s], cs[s].rep->logprobs_rep->logprobs, kl->N, "logprobs", &lp[s]);
    }
    if (rc == 0) {
        double d = 0;
        for (int t = 0; t < kl->N; t++)
            d += kl->mask[t] * ((double)lp[0][t] - lp[1][t]);
        d /= kl->B ? kl->B : 1;
        *z0 = d > 0 ? d : 0;
    }
    free(lp[0]), free(lp[1]);
    pool_calls_free(cs, 2);
    wire_arena_free(&a);
    return rc;
}

int step_kto(Run *r, const long *which, int n) {
    const RunConfig *c = r->cfg;
    Packed ex, kl;
    double z0 = 0;
    int rc = refcache_get(r, &r->train, which, n, &r->ref);
    if (rc == 0)
        rc = kto_pack(&r->train, which, n, &ex, &kl);
    else
        memset(&ex, 0, sizeof ex), memset(&kl, 0, sizeof kl);
    if (rc == 0) rc = kto_reference_point(r, &kl, &z0);
    WireArena *a = wire_arena_new();
    if (rc == 0 && !a) rc = pl_fail(PL_ENOMEM, "kto request: out of memory");
    if (rc == 0) {
        Plumb__Envelope *e = req_train(a, ROLE_ACTOR, r, rng_mix3(c->seed, TAG_TRAIN, r->step));
        Plumb__KtoBody *b = wire_alloc(a, sizeof *b);
        float *ref = wire_alloc(a, sizeof(float) * (ex.N ? ex.N : 1));
        float *des = wire_alloc(a, sizeof(float) * (ex.B ? ex.B : 1));
        if (!b || !ref || !des) rc = pl_fail(PL_ENOMEM, "kto request: out of memory");
        for (int i = 0; rc == 0 && i < ex.B; i++) {
            long k = which[i % n];
            const float *x = i < n ? r->ref.c[k] : r->ref.r[k];
            memcpy(ref + ex.offsets[i], x, sizeof(float) * (ex.offsets[i + 1] - ex.offsets[i]));
            des[i] = i < n;
        }
        if (rc == 0) {
            plumb__kto_body__init(b);
            b->seqs = req_packed(a, &ex);
            b->ref_logprobs = wire_f32(a, ref, ex.N);
            b->desirable = wire_f32(a, des, ex.B);
            b->kl = (float)z0;
            b->beta = c->beta;
            b->desirable_weight = c->desirable_weight;
            b->undesirable_weight = c->undesirable_weight;
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_KTO;
            e->train->kto = b;
            r->tokens += ex.N;
            rc = req_train_call(r, ROLE_ACTOR, e, a, "train/");
        }
    }
    wire_arena_free(&a);
    packed_free(&ex);
    packed_free(&kl);
    return rc;
}
