/* optim.h: AdamW, gradient clipping and learning-rate schedules.
 *
 * Parameters, gradients and both moments share one flat layout, so a step
 * is one loop over one buffer. AdamW follows torch.optim.AdamW: decoupled
 * weight decay p -= lr * wd * p, bias-corrected moments. */
#ifndef PLUMB_OPTIM_H
#define PLUMB_OPTIM_H

#include <stddef.h>

typedef enum {
    LR_CONSTANT,  /* warmup, then lr                                        */
    LR_LINEAR,    /* warmup, then linear decay to min_lr_ratio * lr at total */
    LR_COSINE     /* warmup, then cosine decay to min_lr_ratio * lr at total */
} LrSchedule;

typedef struct {
    float lr;            /* peak learning rate                          */
    float beta1, beta2;  /* 0.9, 0.999                                  */
    float eps;           /* 1e-8                                        */
    float weight_decay;  /* decoupled, 0.0 default                      */
    float grad_clip;     /* max global L2 norm; <= 0 disables           */
    LrSchedule schedule;
    int warmup_steps;    /* linear from 0 to lr over these steps        */
    int total_steps;     /* for linear and cosine decay                 */
    float min_lr_ratio;  /* floor of the decay, as a fraction of lr     */
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    size_t n;            /* parameters                                  */
    float *m, *v;        /* (n) first and second moments                */
    long step;           /* completed steps                             */
} AdamW;

void optim_defaults(OptimConfig *c);

/* Parses "constant", "linear", "cosine"; returns < 0 for other names. */
int lr_schedule_parse(const char *name, LrSchedule *out);

/* Learning rate for the 0-based step. */
float lr_at(const OptimConfig *c, long step);

int adamw_init(AdamW *o, size_t n, const OptimConfig *cfg);
void adamw_free(AdamW *o);

/* Global L2 norm over several gradient buffers (double accumulation). */
double grad_norm(float *const *grads, const size_t *sizes, int nbuf);

/* Scales all buffers so their global norm is at most max_norm; returns the
 * norm before clipping. max_norm <= 0 only measures. */
double grad_clip(float *const *grads, const size_t *sizes, int nbuf, float max_norm);

/* One update of params (n) with grads (n) at learning rate lr_at(step);
 * increments o->step. */
void adamw_step(AdamW *o, float *params, const float *grads);

#endif
