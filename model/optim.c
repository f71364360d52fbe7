/* optim.c: AdamW, global-norm clipping and learning-rate schedules.
 *
 * n is the number of parameters; params, grads, m and v are all (n) in
 * the same flat layout. The update is written to match the single-tensor
 * path of torch.optim.AdamW operation for operation (scalars in double,
 * tensors in float), so tests/data/optim_ref.json agrees to float rounding.
 * The schedules are transformers' get_{constant,linear,cosine}_schedule_
 * with_warmup, with the min_lr_ratio floor of
 * get_cosine_with_min_lr_schedule_with_warmup. */
#include "model/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"

/* Below this many elements the OpenMP fork costs more than the loop. */
#define OPTIM_PAR_MIN 32768

void optim_defaults(OptimConfig *c) {
    memset(c, 0, sizeof *c);
    c->lr = 1e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.0f;
    c->grad_clip = 1.0f;
    c->schedule = LR_CONSTANT;
    c->warmup_steps = 0;
    c->total_steps = 0;
    c->min_lr_ratio = 0.0f;
}

static const char *const schedule_names[] = {"constant", "linear", "cosine"};

int lr_schedule_parse(const char *name, LrSchedule *out) {
    int i;
    PL_TRY(pl_enum_parse(schedule_names, 3, name, "lr schedule", &i));
    *out = (LrSchedule)i;
    return PL_OK;
}

/* ------------------------------------------------------------ schedule */

/* Warmup is step / warmup, as in transformers: the first step (0) runs at
 * lr 0 and step warmup is the first at the full lr. The decays reach
 * min_lr_ratio * lr at step total_steps and stay there; with total_steps
 * <= warmup_steps they are at the floor right after warmup (as HF's
 * lambdas, which divide by max(1, total - warmup)). */
float lr_at(const OptimConfig *c, long step) {
    double lr = c->lr;
    long warm = c->warmup_steps, total = c->total_steps;
    if (step < 0) step = 0;
    if (step < warm) return (float)(lr * (double)step / (double)warm);
    if (c->schedule == LR_CONSTANT) return (float)lr;

    double span = (double)(total - warm > 1 ? total - warm : 1);
    double progress = (double)(step - warm) / span;
    if (progress > 1.0) progress = 1.0;
    double frac = c->schedule == LR_LINEAR ? 1.0 - progress
                                           : 0.5 * (1.0 + cos(M_PI * progress));
    double lo = c->min_lr_ratio;
    return (float)(lr * (lo + (1.0 - lo) * frac));
}

/* ---------------------------------------------------------------- AdamW */

int adamw_init(AdamW *o, size_t n, const OptimConfig *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->m = calloc(n ? n : 1, sizeof(float));
    o->v = calloc(n ? n : 1, sizeof(float));
    if (!o->m || !o->v) {
        adamw_free(o);
        return pl_fail(PL_ENOMEM, "adamw: out of memory for %zu moments", n);
    }
    return PL_OK;
}

void adamw_free(AdamW *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
    o->n = 0;
}

void adamw_step(AdamW *o, float *params, const float *grads) {
    const OptimConfig *c = &o->cfg;
    double lr = lr_at(c, o->step);
    double t = (double)(o->step + 1);
    /* torch: step_size = lr / bc1; denom = sqrt(v) / sqrt(bc2) + eps. */
    double bc1 = 1.0 - pow((double)c->beta1, t);
    double bc2 = 1.0 - pow((double)c->beta2, t);
    float decay = (float)(1.0 - lr * (double)c->weight_decay);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    float a1 = 1.0f - b1, a2 = 1.0f - b2;
    float *m = o->m, *v = o->v;
    size_t n = o->n;

#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = b1 * m[i] + a1 * g;
        float vi = b2 * v[i] + a2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = params[i] * decay - step_size * (mi / denom);
    }
    o->step++;
}

/* ------------------------------------------------------------- clipping */

double grad_norm(float *const *grads, const size_t *sizes, int nbuf) {
    double ss = 0.0;
    for (int b = 0; b < nbuf; b++) {
        const float *g = grads[b];
        size_t n = sizes[b];
        double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s) if (n >= OPTIM_PAR_MIN)
        for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
        ss += s;
    }
    return sqrt(ss);
}

/* As torch.nn.utils.clip_grad_norm_: scale max_norm / (norm + 1e-6). */
double grad_clip(float *const *grads, const size_t *sizes, int nbuf, float max_norm) {
    double norm = grad_norm(grads, sizes, nbuf);
    if (max_norm <= 0.0f || !(norm > max_norm)) return norm;
    float scale = (float)((double)max_norm / (norm + 1e-6));
    for (int b = 0; b < nbuf; b++) {
        float *g = grads[b];
        size_t n = sizes[b];
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (size_t i = 0; i < n; i++) g[i] *= scale;
    }
    return norm;
}
