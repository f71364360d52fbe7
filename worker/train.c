/* train.c: the train loop every role shares (train.h): minibatches,
 * epochs, micro-batches, the data-parallel share and sums, clipping and
 * AdamW over the trainable buffers. The losses are the bodies'. */
#include "worker/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "proto/plumb.pb-c.h"
#include "worker/infer.h"

/* ------------------------------------------------------------- job */

const char *train_what(const TrainJob *j) {
    static _Thread_local char buf[64];
    snprintf(buf, sizeof buf, "train.%s", wire_train_body_name(j->body->body));
    return buf;
}

int train_get_seqs(const Role *r, const Plumb__Seqs *seqs, TrainJob *j) {
    char name[80];
    snprintf(name, sizeof name, "%s.seqs", train_what(j));
    PL_TRY(wire_get_seqs(seqs, &r->limits, name, &j->s[0]));
    j->U = j->s[0].B;
    return 0;
}

int train_get_pair(const Role *r, const Plumb__Seqs *c, const Plumb__Seqs *rj, TrainJob *j) {
    const char *what = train_what(j);
    char name[80];
    snprintf(name, sizeof name, "%s.chosen", what);
    PL_TRY(wire_get_seqs(c, &r->limits, name, &j->s[0]));
    snprintf(name, sizeof name, "%s.rejected", what);
    PL_TRY(wire_get_seqs(rj, &r->limits, name, &j->s[1]));
    if (j->s[0].B != j->s[1].B)
        return pl_fail(PL_EPROTO, "%s: %d chosen and %d rejected sequences", what, j->s[0].B,
                       j->s[1].B);
    j->pairs = 1;
    j->U = j->s[0].B;
    return 0;
}

int train_get_tok(const Plumb__Tensor *t, TrainJob *j, int k, int x, const char *field) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", train_what(j), field);
    return wire_get_f32(t, j->s[k].N, 1, name, &j->in[k][x]);
}

int train_get_unit(const Plumb__Tensor *t, TrainJob *j, int x, const char *field) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", train_what(j), field);
    return wire_get_f32(t, j->U, 1, name, &j->uin[x]);
}

int train_get_agg(const char *s, const TrainJob *j, LossAgg *agg) {
    *agg = LOSS_AGG_TOKEN_MEAN;
    if (s && *s && loss_agg_parse(s, agg) < 0) return pl_wrap(PL_EPROTO, "%s.loss_agg", train_what(j));
    return 0;
}

static void job_free(TrainJob *j) {
    for (int k = 0; k < 2; k++) {
        wire_seqs_free(&j->s[k]);
        for (int i = 0; i < 3; i++) free(j->in[k][i]);
        free(j->uin[k]);
    }
    free(j->opts);
}

/* ------------------------------------------------------------ parts */

static void part_free(TrainPart *p) {
    free(p->tokens);
    free(p->offsets);
    free(p->targets);
    free(p->maskf);
    for (int i = 0; i < 3; i++) free(p->in[i]);
    for (int i = 0; i < 2; i++) free(p->uin[i]);
    free(p->offsets_r);
    memset(p, 0, sizeof *p);
}

/* Packs units[0..u) of j into p (chosen halves first for pairs). */
static int part_build(const TrainJob *j, const int *units, int u, TrainPart *p) {
    memset(p, 0, sizeof *p);
    int ns = j->pairs ? 2 : 1;
    long N = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < u; i++) N += j->s[k].offsets[units[i] + 1] - j->s[k].offsets[units[i]];
    p->S = u * ns;
    p->N = (int)N;
    p->P = j->pairs ? u : 0;
    p->U = u;
    size_t nn = (size_t)(N ? N : 1);
    p->tokens = malloc(sizeof(int) * nn);
    p->targets = malloc(sizeof(int) * nn);
    p->offsets = malloc(sizeof(int) * (p->S + 1));
    p->maskf = malloc(sizeof(float) * nn);
    int bad = !p->tokens || !p->targets || !p->offsets || !p->maskf;
    for (int x = 0; x < 3; x++)
        if (j->in[0][x]) bad |= !(p->in[x] = malloc(sizeof(float) * nn));
    for (int x = 0; x < 2; x++)
        if (j->uin[x]) bad |= !(p->uin[x] = malloc(sizeof(float) * (u ? u : 1)));
    if (j->pairs) bad |= !(p->offsets_r = malloc(sizeof(int) * (u + 1)));
    if (bad) {
        part_free(p);
        return pl_fail(PL_ENOMEM, "train: out of memory for a minibatch of %ld tokens", N);
    }
    int pos = 0, si = 0;
    p->offsets[0] = 0;
    for (int k = 0; k < ns; k++) {
        const WireSeqs *s = &j->s[k];
        for (int i = 0; i < u; i++) {
            int a = s->offsets[units[i]], e = s->offsets[units[i] + 1], n = e - a;
            memcpy(p->tokens + pos, s->tokens + a, sizeof(int) * n);
            memcpy(p->maskf + pos, s->maskf + a, sizeof(float) * n);
            for (int x = 0; x < 3; x++)
                if (p->in[x]) memcpy(p->in[x] + pos, j->in[k][x] + a, sizeof(float) * n);
            pos += n;
            p->offsets[++si] = pos;
        }
        if (k == 0) p->Nc = pos;
    }
    for (int i = 0; j->pairs && i <= u; i++) p->offsets_r[i] = p->offsets[u + i] - p->Nc;
    for (int x = 0; x < 2; x++)
        for (int i = 0; p->uin[x] && i < u; i++) p->uin[x][i] = j->uin[x][units[i]];
    infer_targets(p->tokens, p->offsets, p->S, p->targets);
    return 0;
}

/* ------------------------------------------------------------- work */

/* Work arrays of one step, sized for the largest part. */
typedef struct {
    float *mlp, *ment, *mval;    /* model outputs (N)                     */
    float *lp, *ent, *val;       /* wire convention (N)                   */
    float *dlp, *dent, *dval;    /* d loss / d wire arrays (N)            */
    float *dmlp, *dment, *dmval; /* d loss / d model outputs (N)          */
    float *last, *dlast;         /* (S) head value at each last token     */
    int *cu;                     /* (S+1)                                 */
} Work;

#define WORK_ARRAYS(w)                                                                          \
    {&(w)->mlp, &(w)->ment, &(w)->mval, &(w)->lp, &(w)->ent, &(w)->val, &(w)->dlp, &(w)->dent,  \
     &(w)->dval, &(w)->dmlp, &(w)->dment, &(w)->dmval}

static void work_free(Work *w) {
    float **f[] = WORK_ARRAYS(w);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    free(w->last), free(w->dlast), free(w->cu);
    w->last = w->dlast = NULL, w->cu = NULL;
}

static int work_alloc(Work *w, long N, int S) {
    float **f[] = WORK_ARRAYS(w);
    int bad = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        bad |= !(*f[i] = calloc((size_t)(N ? N : 1), sizeof(float)));
    bad |= !(w->last = calloc((size_t)S + 1, sizeof(float)));
    bad |= !(w->dlast = calloc((size_t)S + 1, sizeof(float)));
    bad |= !(w->cu = calloc((size_t)S + 2, sizeof(int)));
    if (bad) {
        work_free(w);
        return pl_fail(PL_ENOMEM, "train: out of memory for %ld tokens", N);
    }
    return 0;
}

/* ------------------------------------------------------------- step */

/* The sequences of part p that this replica runs, as up to two ranges
 * [s0[g], s1[g]): all of them alone; with data parallelism its share of
 * the units (for pairs, in both the chosen and the rejected half). */
typedef struct {
    int n, s0[2], s1[2];
} Share;

static Share share_of(const TrainJob *j, const TrainPart *p) {
    Share sh = {.n = 1, .s0 = {0}, .s1 = {p->S}};
    if (!j->dp || j->dp->size <= 1) return sh;
    int U = p->P ? p->P : p->S, rk = j->dp->rank, sz = j->dp->size;
    int u0 = (int)((long)U * rk / sz), u1 = (int)((long)U * (rk + 1) / sz);
    sh.s0[0] = u0, sh.s1[0] = u1;
    if (p->P) sh.n = 2, sh.s0[1] = p->P + u0, sh.s1[1] = p->P + u1;
    return sh;
}

/* Sums the n arrays x[i] (sizes[i] floats each) element-wise over the
 * replicas, in place, through one all-reduce of their concatenation. */
static int dp_sum(Role *r, const TrainJob *j, float **x, const size_t *sizes, int n,
                  const char *what) {
    size_t total = 0, at = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    float *buf = malloc(sizeof(float) * (total ? total : 1));
    if (!buf) return pl_fail(PL_ENOMEM, "train: out of memory for %zu %s", total, what);
    for (int i = 0; i < n; i++) memcpy(buf + at, x[i], sizeof(float) * sizes[i]), at += sizes[i];
    CollGroup g = {.group = j->dp->group, .rank = j->dp->rank, .size = j->dp->size,
                   .request = j->request};
    int rc = coll_allreduce_sum(r->coll, &g, buf, total);
    at = 0;
    for (int i = 0; rc == 0 && i < n; i++) memcpy(x[i], buf + at, sizeof(float) * sizes[i]), at += sizes[i];
    free(buf);
    return rc < 0 ? pl_wrap(rc, "train: summing the replicas' %s", what) : 0;
}

/* The part's outputs from the model convention to the wire's, the body's
 * loss, and its gradients back to the model convention. */
static int part_loss(const TrainJob *j, const TrainPart *p, Work *w, float *ment, float *mval,
                     double *m) {
    int S = p->S, vals = j->need_val || j->need_last;
    size_t nb = sizeof(float) * (size_t)p->N;
    shift_in(p->offsets, S, w->mlp, w->lp);
    if (ment) shift_in(p->offsets, S, ment, w->ent);
    if (j->need_val) shift_in(p->offsets, S, mval, w->val);
    for (int s = 0; j->need_last && s < S; s++) w->last[s] = mval[p->offsets[s + 1] - 1];
    memset(w->dlp, 0, nb);
    memset(w->dent, 0, nb);
    memset(w->dval, 0, nb);
    memset(w->dlast, 0, sizeof(float) * (size_t)S);
    TrainOut o = {.lp = w->lp, .ent = w->ent, .val = w->val, .last = w->last, .dlp = w->dlp,
                  .dent = w->dent, .dval = w->dval, .dlast = w->dlast};
    PL_TRY(j->body->loss(j, p, &o, &m[0], m + 3));
    shift_back(p->offsets, S, w->dlp, w->dmlp);
    if (ment) shift_back(p->offsets, S, w->dent, w->dment);
    if (vals) {
        if (j->need_val) shift_back(p->offsets, S, w->dval, w->dmval);
        else memset(w->dmval, 0, nb);
        for (int s = 0; j->need_last && s < S; s++) w->dmval[p->offsets[s + 1] - 1] += w->dlast[s];
    }
    return 0;
}

/* One optimizer step on part p: forward (per micro-batch) of this
 * replica's share, the replicas' outputs summed, loss over the whole part,
 * backward of the share (after a second forward of each micro-batch unless
 * there was only one), the replicas' gradients summed, clip, AdamW. m gets
 * loss, grad_norm, lr and the body's metrics. */
static int train_step(Role *r, const TrainJob *j, const TrainPart *p, Work *w, double *m) {
    Model *md = r->model;
    int S = p->S, N = p->N, mb = infer_chunk(r, S);
    int vals = j->need_val || j->need_last, dp = j->dp && j->dp->size > 1;
    float *ment = j->need_ent ? w->ment : NULL, *mval = vals ? w->mval : NULL;
    Share sh = share_of(j, p);
    size_t nb = sizeof(float) * (size_t)N;
    if (dp) {
        memset(w->mlp, 0, nb);
        if (ment) memset(ment, 0, nb);
        if (mval) memset(mval, 0, nb);
    }
    model_zero_grad(md);
    int chunks = 0;
    for (int g = 0; g < sh.n; g++)
        for (int s0 = sh.s0[g]; s0 < sh.s1[g]; s0 += mb, chunks++) {
            int s1 = s0 + mb < sh.s1[g] ? s0 + mb : sh.s1[g];
            PL_TRY(infer_forward(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu,
                                 w->mlp, ment, mval));
        }
    if (dp) { /* each replica wrote only its share; the rest is 0 */
        float *x[3] = {w->mlp};
        size_t sz[3] = {(size_t)N, (size_t)N, (size_t)N};
        int nx = 1;
        if (ment) x[nx++] = ment;
        if (mval) x[nx++] = mval;
        PL_TRY(dp_sum(r, j, x, sz, nx, "outputs"));
    }
    PL_TRY(part_loss(j, p, w, ment, mval, m));
    const float *dment = ment ? w->dment : NULL, *dmval = vals ? w->dmval : NULL;
    /* the model keeps the activations of its last forward only */
    for (int g = 0; g < sh.n; g++)
        for (int s0 = sh.s0[g]; s0 < sh.s1[g]; s0 += mb) {
            int s1 = s0 + mb < sh.s1[g] ? s0 + mb : sh.s1[g];
            if (chunks > 1)
                PL_TRY(infer_forward(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu,
                                     w->mlp, ment, mval));
            PL_TRY(infer_backward(md, p->tokens, p->targets, p->offsets, s0, s1, j->T, w->cu,
                                  w->dmlp, dment, dmval));
        }
    float *params[3], *grads[3];
    size_t sizes[3];
    int n = model_trainable(md, params, grads, sizes);
    if (dp) PL_TRY(dp_sum(r, j, grads, sizes, n, "gradients"));
    m[1] = grad_clip(grads, sizes, n, r->optim.grad_clip);
    m[2] = lr_at(&r->optim, r->opt_step);
    for (int i = 0; i < n && i < r->n_opt; i++) adamw_step(&r->opt[i], params[i], grads[i]);
    r->opt_step++;
    r->adapter_version++;
    return 0;
}

/* FNV-1a over the 32-bit words of the role's trainable parameters. */
static uint64_t params_hash(const Role *r) {
    float *params[3], *grads[3];
    size_t sizes[3];
    int n = model_trainable(r->model, params, grads, sizes);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < n; i++) {
        const uint32_t *x = (const uint32_t *)params[i];
        for (size_t k = 0; k < sizes[i]; k++) h = (h ^ x[k]) * 0x100000001b3ULL;
    }
    return h;
}

/* ------------------------------------------------- a replica's state */

#define STATE_COUNTERS 8     /* adapter_version, opt_step: 4 x 16 bits each  */
#define SNAPSHOT_MAX (256UL << 20) /* floats a failed call can be undone over */

/* Floats in the role's trainable state: parameters, AdamW moments, and the
 * counters in 16-bit pieces (which floats hold exactly). */
static size_t state_len(Role *r) {
    float *params[3], *grads[3];
    size_t sizes[3], n = STATE_COUNTERS;
    int nb = model_trainable(r->model, params, grads, sizes);
    for (int i = 0; i < nb; i++) n += sizes[i];
    for (int i = 0; i < r->n_opt; i++) n += 2 * r->opt[i].n;
    return n;
}

/* The state into buf (out), or from it. */
static void state_io(Role *r, float *buf, int out) {
    float *params[3], *grads[3];
    size_t sizes[3], at = 0;
    int nb = model_trainable(r->model, params, grads, sizes);
#define IO(x, n)                                                              \
    do {                                                                      \
        if (out) memcpy(buf + at, (x), sizeof(float) * (n));                  \
        else memcpy((x), buf + at, sizeof(float) * (n));                      \
        at += (n);                                                            \
    } while (0)
    for (int i = 0; i < nb; i++) IO(params[i], sizes[i]);
    for (int i = 0; i < r->n_opt; i++) {
        IO(r->opt[i].m, r->opt[i].n);
        IO(r->opt[i].v, r->opt[i].n);
    }
#undef IO
    uint64_t c[2] = {r->adapter_version, (uint64_t)r->opt_step};
    for (int k = 0; k < 2; k++)
        for (int q = 0; q < 4; q++) {
            if (out) buf[at] = (float)((c[k] >> (16 * q)) & 0xffff);
            else c[k] = (q ? c[k] : 0) | ((uint64_t)buf[at] << (16 * q));
            at++;
        }
    if (!out) {
        r->adapter_version = c[0];
        r->opt_step = (long)c[1];
        for (int i = 0; i < r->n_opt; i++) r->opt[i].step = r->opt_step;
    }
}

/* dp->sync_from: every rank takes the state of rank sync_from - 1, a
 * replica that lived through the failure of the call before, for the new
 * replica that took a dead one's rank. */
static int state_sync(Role *r, const TrainJob *j) {
    int root = j->dp->sync_from - 1;
    if (root < 0 || root >= j->dp->size)
        return pl_fail(PL_EPROTO, "train.dp: sync_from rank %d of %d", root, j->dp->size);
    if (root == j->dp->rank && r->dp_dirty)
        return pl_fail(PL_EPEER, "train.dp: this replica cannot be the source of the others' "
                                 "state: a call failed after some of its updates, with no "
                                 "snapshot to undo them");
    size_t n = state_len(r);
    float *buf = malloc(sizeof(float) * n);
    if (!buf) return pl_fail(PL_ENOMEM, "train.dp: out of memory for %zu floats of state", n);
    if (root == j->dp->rank) state_io(r, buf, 1);
    CollGroup g = {.group = j->dp->group, .rank = j->dp->rank, .size = j->dp->size,
                   .request = j->request};
    int rc = coll_broadcast(r->coll, &g, root, buf, n);
    if (rc == 0 && root != j->dp->rank) state_io(r, buf, 0);
    if (rc == 0) r->dp_dirty = 0;
    free(buf);
    return rc < 0 ? pl_wrap(rc, "train.dp: taking rank %d's state", root) : 0;
}

/* ------------------------------------------------------------- call */

/* Decodes q with the body and checks the data-parallel settings. */
static int job_prepare(Role *r, const TrainBody *b, const Plumb__Envelope *e, int M, TrainJob *j) {
    const Plumb__TrainReq *q = e->train;
    j->body = b;
    j->T = 1.0f;
    j->request = e->id;
    j->opts = calloc(1, b->opts_size ? b->opts_size : 1);
    PL_CHECK_ALLOC(j->opts);
    PL_TRY(b->prepare(r, q, j));
    const char *units = j->pairs ? "pairs" : "sequences";
    if (j->U < 1 || M > j->U) return pl_fail(PL_EPROTO, "train: %d minibatches of %d %s", M, j->U, units);
    if (q->dp && q->dp->size > 1) {
        const Plumb__DataParallel *dp = q->dp;
        if (dp->rank < 0 || dp->rank >= dp->size)
            return pl_fail(PL_EPROTO, "train.dp: rank %d of %d replicas", dp->rank, dp->size);
        if (!r->coll)
            return pl_fail(PL_EPROTO, "train.dp: %d replicas, but this role cannot reach its peers",
                           dp->size);
        if (j->U / M < dp->size)
            return pl_fail(PL_EPROTO, "train.dp: minibatches of %d %s for %d replicas (each needs "
                                      "at least one)", j->U / M, units, dp->size);
        j->dp = dp;
    }
    return 0;
}

/* The reply: the metrics' means over the steps, versions, and for data
 * parallelism the parameters' hash. */
static int reply(Role *r, const TrainJob *j, const double *sum, int steps, WireArena *a,
                 Plumb__Envelope *rep) {
    static const char *const common[3] = {"loss", "grad_norm", "lr"};
    int n = 3 + j->body->n_metrics;
    Plumb__TrainRep *tr = wire_alloc(a, sizeof *tr);
    Plumb__Metric **ms = wire_alloc(a, sizeof(*ms) * (size_t)n);
    if (!tr || !ms) return pl_fail(PL_ENOMEM, "train: out of memory for the reply");
    plumb__train_rep__init(tr);
    for (int i = 0; i < n; i++) {
        ms[i] = wire_alloc(a, sizeof **ms);
        if (!ms[i]) return pl_fail(PL_ENOMEM, "train: out of memory for the reply");
        plumb__metric__init(ms[i]);
        ms[i]->name = wire_strdup(a, i < 3 ? common[i] : j->body->metrics[i - 3]);
        ms[i]->value = sum[i] / steps;
    }
    tr->n_metrics = (size_t)n;
    tr->metrics = ms;
    tr->adapter_version = r->adapter_version;
    tr->optimizer_step = r->opt_step;
    if (j->dp) tr->params_hash = params_hash(r); /* replicas compare it */
    rep->body_case = PLUMB__ENVELOPE__BODY_TRAIN_REP;
    rep->train_rep = tr;
    return 0;
}

int role_train(Role *r, const TrainBody *b, const Plumb__Envelope *e, WireArena *a,
               Plumb__Envelope *rep) {
    const Plumb__TrainReq *q = e->train;
    if (r->n_opt == 0) return pl_fail(PL_EPROTO, "role %s has nothing to train", role_kind_name(r->kind));
    if (q->epochs < 0 || q->minibatches < 0)
        return pl_fail(PL_EPROTO, "train: epochs %d and minibatches %d must be >= 0 (0: 1)",
                       q->epochs, q->minibatches);
    if (3 + b->n_metrics > TRAIN_MAX_METRICS)
        return pl_fail(PL_EINVAL, "train.%s: %d metrics, at most %d", wire_train_body_name(b->body),
                       b->n_metrics, TRAIN_MAX_METRICS - 3);
    int epochs = q->epochs > 0 ? q->epochs : 1, M = q->minibatches > 0 ? q->minibatches : 1;
    TrainJob j;
    memset(&j, 0, sizeof j);
    TrainPart *parts = NULL;
    int steps_done = 0;
    int *order = NULL, np = 0;
    Work w = {0};
    float *snap = NULL; /* a data-parallel call that fails is undone */
    int rc = job_prepare(r, b, e, M, &j);
    if (rc == 0 && j.dp && j.dp->sync_from > 0) rc = state_sync(r, &j);
    if (rc < 0) goto done;
    if (j.dp && state_len(r) <= SNAPSHOT_MAX && (snap = malloc(sizeof(float) * state_len(r))))
        state_io(r, snap, 1);
    /* the order: identity for one minibatch, else shuffled from seed */
    order = malloc(sizeof(int) * j.U);
    parts = calloc((size_t)M, sizeof *parts);
    if (!order || !parts) {
        rc = pl_fail(PL_ENOMEM, "train: out of memory");
        goto done;
    }
    for (int i = 0; i < j.U; i++) order[i] = i;
    if (M > 1) {
        Rng rng;
        rng_seed(&rng, q->seed);
        for (int i = j.U - 1; i > 0; i--) {
            int k = (int)(rng_u64(&rng) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[k];
            order[k] = t;
        }
    }
    long maxN = 0;
    int maxS = 0;
    for (; np < M; np++) {
        int u0 = (int)((long)np * j.U / M), u1 = (int)((long)(np + 1) * j.U / M);
        if ((rc = part_build(&j, order + u0, u1 - u0, &parts[np])) < 0) goto done;
        if (parts[np].N > maxN) maxN = parts[np].N;
        if (parts[np].S > maxS) maxS = parts[np].S;
    }
    if ((rc = work_alloc(&w, maxN, maxS)) < 0) goto done;
    double sum[TRAIN_MAX_METRICS] = {0}, first[TRAIN_MAX_METRICS] = {0};
    int steps = 0;
    for (int ep = 0; ep < epochs; ep++)
        for (int k = 0; k < M; k++) {
            double m[TRAIN_MAX_METRICS] = {0};
            j.step = steps;
            if ((rc = train_step(r, &j, &parts[k], &w, m)) < 0) {
                rc = pl_wrap(rc, "train: epoch %d minibatch %d (after %d optimizer steps of this call)",
                             ep, k, steps);
                goto done;
            }
            for (int i = 0; i < 3 + b->n_metrics; i++) sum[i] += m[i];
            if (steps == 0) memcpy(first, m, sizeof first);
            steps_done = ++steps;
        }
    for (int i = 0; i < b->n_metrics; i++)
        if (b->first_step_metrics >> i & 1u) sum[3 + i] = first[3 + i] * steps;
    /* the copy of the state goes before the reply: a reply means it is on
     * disk, and a worker that dies before it has its request done again */
    if (q->keep_dir && *q->keep_dir && (rc = role_save(r, q->keep_dir)) < 0) goto done;
    rc = reply(r, &j, sum, steps, a, rep);
done:
    /* a replica died, or the group was given up: back to the state before
     * the call, which the other replicas also return to, so that any of
     * them can be the source of a new replica's */
    if (rc < 0 && j.dp && snap) state_io(r, snap, 0);
    else if (rc < 0 && j.dp && steps_done > 0) r->dp_dirty = 1;
    free(snap);
    for (int i = 0; i < np; i++) part_free(&parts[i]);
    free(parts);
    free(order);
    work_free(&w);
    job_free(&j);
    return rc;
}
