/* Shared pieces of algo/: batch checks, loss aggregation, masked
 * reductions and the numerically careful scalar helpers. */
#include "algo.h"

#include <math.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"

int algo_seqs_check(const AlgoSeqs *s, const char *who) {
    if (!s) return pl_fail(PL_EINVAL, "%s: NULL batch", who);
    if (s->B < 0 || s->N < 0)
        return pl_fail(PL_EINVAL, "%s: negative size (B=%d, N=%d)", who, s->B, s->N);
    if (s->B == 0) {
        if (s->N != 0) return pl_fail(PL_EINVAL, "%s: 0 sequences but N=%d tokens", who, s->N);
        return 0;
    }
    if (!s->offsets) return pl_fail(PL_EINVAL, "%s: NULL offsets for B=%d", who, s->B);
    if (s->offsets[0] != 0)
        return pl_fail(PL_EINVAL, "%s: offsets[0]=%d, want 0", who, s->offsets[0]);
    for (int b = 0; b < s->B; b++)
        if (s->offsets[b + 1] < s->offsets[b])
            return pl_fail(PL_EINVAL, "%s: offsets decrease at sequence %d (%d > %d)", who, b,
                           s->offsets[b], s->offsets[b + 1]);
    if (s->offsets[s->B] != s->N)
        return pl_fail(PL_EINVAL, "%s: offsets[B=%d]=%d does not match N=%d tokens", who, s->B,
                       s->offsets[s->B], s->N);
    if (s->mask) {
        int bad = 0; /* no early exit: the scan vectorises */
        for (int t = 0; t < s->N; t++) bad |= (s->mask[t] != 0.0f) & (s->mask[t] != 1.0f);
        for (int t = 0; bad && t < s->N; t++)
            if (s->mask[t] != 0.0f && s->mask[t] != 1.0f)
                return pl_fail(PL_EINVAL, "%s: mask[%d]=%g, want 0 or 1", who, t, s->mask[t]);
    }
    return 0;
}

/* ------------------------------------------------------------- loss_agg */

PL_ENUM_DEFINE(LossAgg, loss_agg, "loss_agg", "token_mean", "seq_mean_token_mean",
               "seq_mean_token_sum_norm")

int algo_agg_init(AlgoAgg *a, const AlgoSeqs *s, LossAgg agg, int max_new_tokens) {
    if ((unsigned)agg > LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM)
        return pl_fail(PL_EINVAL, "loss_agg: bad value %d", (int)agg);
    if (agg == LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM && max_new_tokens <= 0)
        return pl_fail(PL_EINVAL, "loss_agg seq_mean_token_sum_norm needs max_new_tokens > 0 (got %d)",
                       max_new_tokens);
    a->agg = agg;
    a->tokens = 0.0;
    a->seqs = 0.0;
    for (int b = 0; b < s->B; b++) {
        double n = 0.0;
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) n += algo_m(s, t);
        a->tokens += n;
        a->seqs += n > 0.0;
    }
    a->sum_norm = (double)s->B * (max_new_tokens > 0 ? max_new_tokens : 0);
    return 0;
}

double algo_agg_scale(const AlgoAgg *a, double n_b) {
    if (n_b <= 0.0) return 0.0;
    switch (a->agg) {
    case LOSS_AGG_TOKEN_MEAN: return a->tokens > 0 ? 1.0 / a->tokens : 0.0;
    case LOSS_AGG_SEQ_MEAN_TOKEN_MEAN: return a->seqs > 0 ? 1.0 / (a->seqs * n_b) : 0.0;
    case LOSS_AGG_SEQ_MEAN_TOKEN_SUM_NORM: return a->sum_norm > 0 ? 1.0 / a->sum_norm : 0.0;
    }
    return 0.0;
}

int algo_agg(const AlgoSeqs *s, const float *x, LossAgg agg, int max_new_tokens, double *out,
             float *dx) {
    PL_TRY(algo_seqs_check(s, "algo_agg"));
    if ((s->N && !x) || !out) return pl_fail(PL_EINVAL, "algo_agg: NULL array");
    AlgoAgg a;
    PL_TRY(algo_agg_init(&a, s, agg, max_new_tokens));
    double total = 0.0;
    for (int b = 0; b < s->B; b++) {
        double n = 0.0, sum = 0.0;
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) {
            n += algo_m(s, t);
            sum += algo_m(s, t) * (double)x[t];
        }
        double w = algo_agg_scale(&a, n);
        total += w * sum;
        if (dx)
            for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) dx[t] = (float)(w * algo_m(s, t));
    }
    *out = total;
    return 0;
}

/* ------------------------------------------------------ masked reductions */

static int check_xmn(const float *x, const float *m, int n, const void *out, const char *who) {
    if (n < 0) return pl_fail(PL_EINVAL, "%s: negative length %d", who, n);
    if ((n && !x) || !out) return pl_fail(PL_EINVAL, "%s: NULL array", who);
    return 0;
}

int algo_masked_sum(const float *x, const float *m, int n, double *out) {
    PL_TRY(check_xmn(x, m, n, out, "algo_masked_sum"));
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (m ? m[i] : 1.0) * (double)x[i];
    *out = s;
    return 0;
}

int algo_masked_mean(const float *x, const float *m, int n, double *out) {
    PL_TRY(check_xmn(x, m, n, out, "algo_masked_mean"));
    double s = 0.0, c = 0.0;
    for (int i = 0; i < n; i++) {
        double w = m ? m[i] : 1.0;
        s += w * (double)x[i];
        c += w;
    }
    *out = c > 0 ? s / c : 0.0;
    return 0;
}

/* Two passes (mean, then squared deviations): exact enough for whitening
 * advantages whose mean is far from 0. */
static void masked_moments(const float *x, const float *m, int n, double *mu, double *var) {
    double s = 0.0, c = 0.0;
    for (int i = 0; i < n; i++) {
        double w = m ? m[i] : 1.0;
        s += w * (double)x[i];
        c += w;
    }
    *mu = c > 0 ? s / c : 0.0;
    double q = 0.0;
    for (int i = 0; i < n; i++) {
        double w = m ? m[i] : 1.0, d = (double)x[i] - *mu;
        q += w * d * d;
    }
    *var = c > 1.0 ? q / (c - 1.0) : 0.0;
}

int algo_masked_var(const float *x, const float *m, int n, double *out) {
    PL_TRY(check_xmn(x, m, n, out, "algo_masked_var"));
    double mu;
    masked_moments(x, m, n, &mu, out);
    return 0;
}

int algo_masked_whiten(float *out, const float *x, const float *m, int n, int shift_mean) {
    if (n == 0) return 0;
    PL_TRY(check_xmn(x, m, n, out, "algo_masked_whiten"));
    double mu, var;
    masked_moments(x, m, n, &mu, &var);
    double inv = 1.0 / sqrt(var + 1e-8);
    for (int i = 0; i < n; i++) {
        double w = (double)x[i] - mu;
        double y = w * inv + (shift_mean ? 0.0 : mu);
        out[i] = (!m || m[i] != 0.0f) ? (float)y : 0.0f;
    }
    return 0;
}

int algo_broadcast_seq(const AlgoSeqs *s, const float *per_seq, float *out) {
    PL_TRY(algo_seqs_check(s, "algo_broadcast_seq"));
    if ((s->B && !per_seq) || (s->N && !out)) return pl_fail(PL_EINVAL, "algo_broadcast_seq: NULL array");
    for (int b = 0; b < s->B; b++)
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) out[t] = algo_m(s, t) * per_seq[b];
    return 0;
}

int algo_seq_sum(const AlgoSeqs *s, const float *lp, float *sum, float *count) {
    PL_TRY(algo_seqs_check(s, "algo_seq_sum"));
    if ((s->N && !lp) || (s->B && !sum)) return pl_fail(PL_EINVAL, "algo_seq_sum: NULL array");
    for (int b = 0; b < s->B; b++) {
        double a = 0.0, c = 0.0;
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++) {
            a += algo_m(s, t) * (double)lp[t];
            c += algo_m(s, t);
        }
        sum[b] = (float)a;
        if (count) count[b] = (float)c;
    }
    return 0;
}

/* ------------------------------------------------------ names, defaults */

static const char *const algo_names[] = {"sft", "rm", "ppo", "grpo", "dpo", "orpo", "simpo", "kto"};
enum { N_ALGO_NAMES = sizeof algo_names / sizeof *algo_names };

int algo_name_parse(const char *name, AlgoName *out) {
    int i;
    PL_TRY(pl_enum_parse(algo_names, N_ALGO_NAMES, name, "algo.name", &i));
    *out = (AlgoName)i;
    return 0;
}

const char *algo_name_str(AlgoName a) { return pl_enum_name(algo_names, N_ALGO_NAMES, (int)a); }

/* --------------------------------------------------------- small helpers */

double algo_logsig(double x) { return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x))); }

double algo_sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

double algo_log1mexp(double x) { return x < -M_LN2 ? log1p(-exp(x)) : log(-expm1(x)); }
