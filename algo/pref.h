/* pref.h: preference losses: DPO (sigmoid, ipo, hinge), SimPO, KTO, ORPO
 * and the Bradley-Terry reward-model loss (ALGORITHMS.md, "DPO", "ORPO",
 * "Reward model").
 *
 * Pairs come as two batches of B = P sequences, chosen and rejected, whose
 * masks select the completion tokens (prompt masked): pair i is chosen
 * sequence i and rejected sequence i. A sequence log-prob is the sum of its
 * masked token log-probs (mean for ipo/SimPO/ORPO, as named below).
 * Losses are means over pairs; gradients come back per token (N of each
 * batch), 0 on unmasked tokens. Mismatched batches (different B) fail with
 * PL_EINVAL; an empty batch gives zeros. */
#ifndef PLUMB_ALGO_PREF_H
#define PLUMB_ALGO_PREF_H

#include "algo.h"

typedef enum { DPO_SIGMOID = 0, DPO_IPO, DPO_HINGE } DpoLoss;

/* "sigmoid" | "ipo" | "hinge". 0 or PL_EINVAL naming the string. */
int dpo_loss_parse(const char *name, DpoLoss *out);
const char *dpo_loss_name(DpoLoss l);

/* Metrics shared by the pairwise losses (means over pairs). */
typedef struct {
    double loss;
    double reward_chosen;   /* mean implicit reward of the chosen                */
    double reward_rejected; /* ... of the rejected                               */
    double margin;          /* mean(reward_chosen - reward_rejected)             */
    double accuracy;        /* fraction with reward_chosen > reward_rejected      */
    double nll;             /* ORPO: chosen NLL (token mean); else 0              */
    double log_odds;        /* ORPO: mean log odds ratio; else 0                  */
} PrefOut;

/* ------------------------------------------------------------------ DPO */

typedef struct {
    DpoLoss loss_type;      /* sigmoid                                           */
    float beta;             /* 0.1                                               */
    float label_smoothing;  /* eps in [0, 0.5), sigmoid only; 0                   */
} DpoOpts;

void algo_dpo_defaults(DpoOpts *o);

/* D = (pc - refc) - (pr - refr) with sequence sums of log-probs.
 * sigmoid: -(1-eps) logsig(beta D) - eps logsig(-beta D);
 * ipo: (D' - 1/(2 beta))^2 where D' uses per-sequence mean log-ratios
 * (sum / completion tokens; a sequence with none counts as 0);
 * hinge: relu(1 - beta D). Rewards beta (p - ref) on the sums for every
 * loss type (ipo included, as TRL 1.x). lp_c, ref_c (chosen N); lp_r, ref_r (rejected N);
 * dlp_c, dlp_r (or NULL) = d loss / d lp. Fails with PL_EINVAL on bad or
 * mismatched batches, NULL arrays, beta <= 0, eps outside [0, 0.5]. */
int algo_dpo(const AlgoSeqs *sc, const float *lp_c, const float *ref_c, const AlgoSeqs *sr,
             const float *lp_r, const float *ref_r, const DpoOpts *o, PrefOut *out, float *dlp_c,
             float *dlp_r);

/* ---------------------------------------------------------------- SimPO */

typedef struct {
    float beta;             /* 2.0                                               */
    float gamma;            /* target margin (TRL's simpo_gamma), 0.5            */
    float label_smoothing;  /* 0                                                 */
} SimpoOpts;

void algo_simpo_defaults(SimpoOpts *o);

/* SimPO (reference-free): with c, r the mean completion log-probs,
 * x = beta (c - r) - gamma, loss = -(1-eps) logsig(x) - eps logsig(-x).
 * Rewards beta c and beta r. Shapes and failures as algo_dpo. */
int algo_simpo(const AlgoSeqs *sc, const float *lp_c, const AlgoSeqs *sr, const float *lp_r,
               const SimpoOpts *o, PrefOut *out, float *dlp_c, float *dlp_r);

/* ------------------------------------------------------------------ KTO */

typedef struct {
    float beta;             /* 0.1                                               */
    float desirable_weight; /* 1                                                 */
    float undesirable_weight; /* 1                                               */
} KtoOpts;

void algo_kto_defaults(KtoOpts *o);

/* KTO (unpaired): per example b with log-ratio x_b = sum m (lp - ref) and
 * the reference point z0 = max(kl, 0) (a detached batch KL estimate the
 * caller computes, TRL: mean log-ratio on mismatched completions), loss_b =
 * w_d (1 - sig(beta (x - z0))) if desirable[b] else w_u (1 - sig(beta (z0 -
 * x))); loss = mean over examples. reward_chosen / reward_rejected: mean
 * beta x over desirable / undesirable examples; margin their difference;
 * accuracy 0. desirable (B) holds 0/1. Fails with PL_EINVAL on a bad batch,
 * NULL arrays, beta <= 0 or negative weights. */
int algo_kto(const AlgoSeqs *s, const float *lp, const float *ref, const int *desirable, float kl,
             const KtoOpts *o, PrefOut *out, float *dlp);

/* ----------------------------------------------------------------- ORPO */

/* ORPO: c, r mean completion log-probs (clamped to <= -1e-6 so that
 * log1mexp stays finite; no gradient through the clamp), log_odds = (c - r)
 * - (log1mexp(c) - log1mexp(r)), loss = NLL - lambda mean logsig(log_odds)
 * where NLL = -(sum of chosen completion log-probs)/(chosen completion
 * tokens), a token mean over the batch as TRL's cross-entropy. Rewards
 * lambda c and lambda r; nll and log_odds (mean) reported. Shapes and
 * failures as algo_dpo (lambda >= 0). */
int algo_orpo(const AlgoSeqs *sc, const float *lp_c, const AlgoSeqs *sr, const float *lp_r,
              float lambda, PrefOut *out, float *dlp_c, float *dlp_r);

/* --------------------------------------------------------- reward model */

/* Bradley-Terry: loss = mean(-logsig(r_c - r_r - margin)) + center_coef *
 * mean((r_c + r_r)^2). r_c, r_r (P) scalar rewards read at the last
 * non-pad token; margin (P, or NULL = 0); dr_c, dr_r (P, or NULL).
 * Metrics: reward_chosen/rejected means, margin = mean(r_c - r_r),
 * accuracy = fraction with r_c > r_r. Fails with PL_EINVAL on P < 0, NULL
 * arrays or center_coef < 0. */
int algo_bt_loss(const float *r_c, const float *r_r, const float *margin, int P, float center_coef,
                 PrefOut *out, float *dr_c, float *dr_r);

#endif
