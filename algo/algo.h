/* algo.h: shared types of the alignment math (see ALGORITHMS.md).
 *
 * Every function in algo/ is a pure function over arrays: no model, no I/O,
 * no allocation. Inputs are float arrays (what the model produces); sums and
 * means accumulate in double; gradients come back as float arrays. Each
 * function checks its arguments and returns PL_EINVAL through pl_fail (with
 * a message naming the function and the mismatch) instead of crashing; an
 * empty batch is valid and gives a zero loss, zero gradients and zero
 * metrics.
 *
 * Dimension letters: B sequences, N tokens of the packed batch (all
 * sequences back to back, as in model.h's Batch), G group size, P
 * preference pairs.
 *
 * A batch of sequences is described by cu_seqlens-like offsets into flat
 * token arrays plus a response mask: sequence b owns tokens
 * [offsets[b], offsets[b+1]), and a token counts for a loss only where
 * mask = 1 (generated/completion tokens; prompt and padding are 0). */
#ifndef PLUMB_ALGO_H
#define PLUMB_ALGO_H

#include <stddef.h>

typedef struct {
    int B;                  /* number of sequences                               */
    int N;                  /* tokens in the flat arrays; = offsets[B]           */
    const int *offsets;     /* (B+1) offsets[0] = 0, non-decreasing; may be NULL when B = 0 */
    const float *mask;      /* (N) 1 on response tokens, 0 elsewhere; NULL = all 1 */
} AlgoSeqs;

/* Checks the offsets (offsets[0] = 0, non-decreasing, offsets[B] = N,
 * B >= 0, N >= 0) and that the mask, when given, holds only 0 and 1.
 * `who` names the caller in the message. Returns 0 or PL_EINVAL. */
int algo_seqs_check(const AlgoSeqs *s, const char *who);

/* Mask value of token t (1 when the mask is NULL). */
static inline float algo_m(const AlgoSeqs *s, int t) { return s->mask ? s->mask[t] : 1.0f; }

/* ------------------------------------------------------------- loss_agg */

/* How per-token losses become one number (`loss_agg`, ALGORITHMS.md). */
typedef enum {
    LOSS_AGG_TOKEN_MEAN = 0,           /* sum over tokens / tokens (default)       */
    LOSS_AGG_SEQ_MEAN_TOKEN_MEAN,      /* mean over sequences of token means        */
    LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM,  /* sum / (B * max_new_tokens)  (Dr. GRPO)    */
} LossAgg;

/* "token_mean" | "seq_mean_token_mean" | "seq_mean_token_sum_norm".
 * Returns 0, or PL_EINVAL naming the string (NULL included). */
int loss_agg_parse(const char *name, LossAgg *out);
const char *loss_agg_name(LossAgg a);

/* Normalisers of one aggregation over one batch: the loss is
 * sum_b scale[b] * sum_{t in b} m_t x_t, and scale[b] comes from
 * algo_agg_scale(). Computed once per call (one pass over the mask). */
typedef struct {
    LossAgg agg;
    double tokens;          /* masked tokens in the batch                        */
    double seqs;            /* sequences with at least one masked token          */
    double sum_norm;        /* B * max_new_tokens                                */
} AlgoAgg;

/* Prepares the normalisers. Sequences without any masked token are left
 * out of the seq_mean_token_mean mean (they have no token mean);
 * seq_mean_token_sum_norm divides by all B sequences times max_new_tokens,
 * which must then be > 0. Returns 0 or PL_EINVAL. */
int algo_agg_init(AlgoAgg *a, const AlgoSeqs *s, LossAgg agg, int max_new_tokens);

/* The weight of each masked token of sequence b (which has n_b masked
 * tokens) in the aggregated loss; 0 when the batch or the sequence is
 * empty. */
double algo_agg_scale(const AlgoAgg *a, double n_b);

/* out = agg(x) over the masked tokens, and, when dx is given, dx (N) =
 * d out / dx (0 on unmasked tokens). Returns 0 or PL_EINVAL. */
int algo_agg(const AlgoSeqs *s, const float *x, LossAgg agg, int max_new_tokens,
             double *out, float *dx);

/* ------------------------------------------------------ masked reductions */

/* sum(x*m) over n tokens (m NULL = all ones). Returns 0 or PL_EINVAL. */
int algo_masked_sum(const float *x, const float *m, int n, double *out);

/* MM(x) = sum(x*m)/sum(m); 0 when sum(m) = 0. */
int algo_masked_mean(const float *x, const float *m, int n, double *out);

/* Masked variance with Bessel's correction, sum(m (x-mu)^2)/(sum(m)-1);
 * 0 when fewer than two tokens are masked. */
int algo_masked_var(const float *x, const float *m, int n, double *out);

/* Whitening over the batch: out = (x - mu)/sqrt(var + 1e-8) with mu =
 * MM(x) and the unbiased masked variance; with shift_mean = 0 the mean is
 * added back (out = (x - mu)/sd + mu, as TRL/veRL's masked_whiten). out may
 * be x. Unmasked entries of out are 0. Returns 0 or PL_EINVAL. */
int algo_masked_whiten(float *out, const float *x, const float *m, int n, int shift_mean);

/* out (N) = per_seq[b] on the masked tokens of sequence b, 0 elsewhere
 * (a sequence advantage broadcast over its response tokens). */
int algo_broadcast_seq(const AlgoSeqs *s, const float *per_seq, float *out);

/* Per sequence: sum (B) = sum of m*lp and, when count is given, count (B) =
 * number of masked tokens. */
int algo_seq_sum(const AlgoSeqs *s, const float *lp, float *sum, float *count);

/* ------------------------------------------------------ names, defaults */

/* `algo.name`: which training algorithm a run uses (ALGORITHMS.md; sft from
 * DESIGN.md; simpo and kto are the reference-free / unpaired preference
 * losses of pref.h). */
typedef enum {
    ALGO_SFT = 0, ALGO_RM, ALGO_PPO, ALGO_GRPO, ALGO_DPO, ALGO_ORPO, ALGO_SIMPO, ALGO_KTO,
} AlgoName;

/* "sft" | "rm" | "ppo" | "grpo" | "dpo" | "orpo" | "simpo" | "kto".
 * Returns 0 or PL_EINVAL naming the string. */
int algo_name_parse(const char *name, AlgoName *out);
const char *algo_name_str(AlgoName a);

/* Documented defaults of ALGORITHMS.md that are plain numbers (the option
 * structs have their own *_defaults functions). */
#define ALGO_DEFAULT_GAMMA        1.0f   /* GAE discount                            */
#define ALGO_DEFAULT_LAMBDA       0.95f  /* GAE lambda                              */
#define ALGO_DEFAULT_REWARD_CLIP  10.0f  /* PPO score clip                          */
#define ALGO_DEFAULT_VALUE_CLIP   0.2f   /* value-loss clip range                   */
#define ALGO_DEFAULT_GROUP_SIZE   8      /* GRPO samples per prompt                 */
#define ALGO_DEFAULT_GRPO_KL_COEF 0.04f  /* GRPO KL-in-loss coefficient (k3)        */
#define ALGO_DEFAULT_ORPO_LAMBDA  0.1f   /* ORPO odds-ratio weight                  */
#define ALGO_DEFAULT_DPO_BETA     0.1f   /* DPO beta                                */

/* --------------------------------------------------------- small helpers */

/* log(sigmoid(x)) without overflow for any finite x. */
double algo_logsig(double x);
/* sigmoid(x), stable for large |x|. */
double algo_sigmoid(double x);
/* log(1 - exp(x)) for x < 0 (Maechler's switch at -ln 2). */
double algo_log1mexp(double x);

#endif
