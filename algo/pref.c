/* Preference losses: DPO/IPO/hinge, SimPO, KTO, ORPO, Bradley-Terry.
 * Each is one pass over the tokens to form sequence sums, a scalar loss per
 * pair, and one pass to spread the pair's gradient back over its tokens. */
#include "pref.h"

#include <math.h>
#include <string.h>

#include "common/enum.h"
#include "common/err.h"

PL_ENUM_DEFINE(DpoLoss, dpo_loss, "loss_type", "sigmoid", "ipo", "hinge")

void algo_dpo_defaults(DpoOpts *o) {
    o->loss_type = DPO_SIGMOID;
    o->beta = 0.1f;
    o->label_smoothing = 0.0f;
}

void algo_simpo_defaults(SimpoOpts *o) {
    o->beta = 2.0f;
    o->gamma = 0.5f;
    o->label_smoothing = 0.0f;
}

void algo_kto_defaults(KtoOpts *o) {
    o->beta = 0.1f;
    o->desirable_weight = 1.0f;
    o->undesirable_weight = 1.0f;
}

/* Both batches valid, same number of sequences, arrays present. */
static int check_pair(const AlgoSeqs *sc, const float *a, const float *a2, const AlgoSeqs *sr,
                      const float *b, const float *b2, const void *out, const char *who) {
    PL_TRY(algo_seqs_check(sc, who));
    PL_TRY(algo_seqs_check(sr, who));
    if (sc->B != sr->B)
        return pl_fail(PL_EINVAL, "%s: %d chosen but %d rejected sequences", who, sc->B, sr->B);
    if (!out || (sc->N && (!a || !a2)) || (sr->N && (!b || !b2)))
        return pl_fail(PL_EINVAL, "%s: NULL array", who);
    return 0;
}

/* sum over sequence i of m * (x - y) (y may be NULL), and its token count. */
static double seq_sum(const AlgoSeqs *s, int i, const float *x, const float *y, double *n) {
    double a = 0.0, c = 0.0;
    for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) {
        double m = algo_m(s, t);
        a += m * ((double)x[t] - (y ? y[t] : 0.0));
        c += m;
    }
    *n = c;
    return a;
}

/* d[t] = g * m_t over sequence i (NULL d: nothing). */
static void seq_spread(const AlgoSeqs *s, int i, float *d, double g) {
    if (!d) return;
    for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) d[t] = (float)(g * algo_m(s, t));
}

static void finish_rewards(PrefOut *r, int P) {
    if (P > 0) {
        r->loss /= P;
        r->reward_chosen /= P;
        r->reward_rejected /= P;
        r->accuracy /= P;
    }
    r->margin = r->reward_chosen - r->reward_rejected;
}

/* ------------------------------------------------------------------ DPO */

int algo_dpo(const AlgoSeqs *sc, const float *lp_c, const float *ref_c, const AlgoSeqs *sr,
             const float *lp_r, const float *ref_r, const DpoOpts *o, PrefOut *out, float *dlp_c,
             float *dlp_r) {
    PL_TRY(check_pair(sc, lp_c, ref_c, sr, lp_r, ref_r, out, "algo_dpo"));
    if (!o || !(o->beta > 0.0f) || (unsigned)o->loss_type > DPO_HINGE ||
        !(o->label_smoothing >= 0.0f && o->label_smoothing <= 0.5f))
        return pl_fail(PL_EINVAL, "algo_dpo: bad options (beta > 0, label_smoothing in [0, 0.5])");
    const int P = sc->B;
    const double beta = o->beta, eps = o->label_smoothing;
    PrefOut r = {0};
    for (int i = 0; i < P; i++) {
        double nc, nr;
        double xc = seq_sum(sc, i, lp_c, ref_c, &nc), xr = seq_sum(sr, i, lp_r, ref_r, &nr);
        double sc_ = 1.0, sr_ = 1.0; /* d(normalised log-ratio)/d(sum) */
        r.reward_chosen += beta * xc; /* beta (p - ref) on sums, for every loss type */
        r.reward_rejected += beta * xr;
        r.accuracy += beta * xc > beta * xr;
        if (o->loss_type == DPO_IPO) {
            sc_ = nc > 0 ? 1.0 / nc : 0.0;
            sr_ = nr > 0 ? 1.0 / nr : 0.0;
            xc *= sc_, xr *= sr_;
        }
        const double D = xc - xr;
        double l, g; /* loss and dl/dD */
        switch (o->loss_type) {
        case DPO_SIGMOID:
            l = -(1 - eps) * algo_logsig(beta * D) - eps * algo_logsig(-beta * D);
            g = -(1 - eps) * beta * algo_sigmoid(-beta * D) + eps * beta * algo_sigmoid(beta * D);
            break;
        case DPO_IPO: {
            double u = D - 1.0 / (2.0 * beta);
            l = u * u, g = 2.0 * u;
            break;
        }
        default:
            l = 1.0 - beta * D > 0.0 ? 1.0 - beta * D : 0.0;
            g = 1.0 - beta * D > 0.0 ? -beta : 0.0;
            break;
        }
        r.loss += l;
        seq_spread(sc, i, dlp_c, g * sc_ / P);
        seq_spread(sr, i, dlp_r, -g * sr_ / P);
    }
    finish_rewards(&r, P);
    *out = r;
    return 0;
}

/* ---------------------------------------------------------------- SimPO */

int algo_simpo(const AlgoSeqs *sc, const float *lp_c, const AlgoSeqs *sr, const float *lp_r,
               const SimpoOpts *o, PrefOut *out, float *dlp_c, float *dlp_r) {
    PL_TRY(check_pair(sc, lp_c, lp_c, sr, lp_r, lp_r, out, "algo_simpo"));
    if (!o || !(o->beta > 0.0f) || !(o->label_smoothing >= 0.0f && o->label_smoothing <= 0.5f))
        return pl_fail(PL_EINVAL, "algo_simpo: bad options (beta > 0, label_smoothing in [0, 0.5])");
    const int P = sc->B;
    const double beta = o->beta, eps = o->label_smoothing;
    PrefOut r = {0};
    for (int i = 0; i < P; i++) {
        double nc, nr;
        double c = seq_sum(sc, i, lp_c, NULL, &nc), q = seq_sum(sr, i, lp_r, NULL, &nr);
        const double ic = nc > 0 ? 1.0 / nc : 0.0, ir = nr > 0 ? 1.0 / nr : 0.0;
        c *= ic, q *= ir;
        const double x = beta * (c - q) - o->gamma;
        r.loss += -(1 - eps) * algo_logsig(x) - eps * algo_logsig(-x);
        const double g = (-(1 - eps) * algo_sigmoid(-x) + eps * algo_sigmoid(x)) * beta;
        r.reward_chosen += beta * c;
        r.reward_rejected += beta * q;
        r.accuracy += c > q;
        seq_spread(sc, i, dlp_c, g * ic / P);
        seq_spread(sr, i, dlp_r, -g * ir / P);
    }
    finish_rewards(&r, P);
    *out = r;
    return 0;
}

/* ------------------------------------------------------------------ KTO */

int algo_kto(const AlgoSeqs *s, const float *lp, const float *ref, const int *desirable, float kl,
             const KtoOpts *o, PrefOut *out, float *dlp) {
    PL_TRY(algo_seqs_check(s, "algo_kto"));
    if (!out || !o || (s->N && (!lp || !ref)) || (s->B && !desirable))
        return pl_fail(PL_EINVAL, "algo_kto: NULL array");
    if (!(o->beta > 0.0f) || !(o->desirable_weight >= 0.0f) || !(o->undesirable_weight >= 0.0f) ||
        !isfinite(kl))
        return pl_fail(PL_EINVAL, "algo_kto: bad options (beta > 0, weights >= 0, finite kl)");
    const int B = s->B;
    const double beta = o->beta, z0 = kl > 0.0f ? kl : 0.0;
    PrefOut r = {0};
    double nd = 0, nu = 0;
    for (int i = 0; i < B; i++)
        if (desirable[i] != 0 && desirable[i] != 1)
            return pl_fail(PL_EINVAL, "algo_kto: desirable[%d]=%d, want 0 or 1", i, desirable[i]);
    for (int i = 0; i < B; i++) {
        double n;
        const double x = seq_sum(s, i, lp, ref, &n);
        double l, g;
        if (desirable[i]) {
            const double sg = algo_sigmoid(beta * (x - z0));
            l = o->desirable_weight * (1.0 - sg);
            g = -o->desirable_weight * beta * sg * (1.0 - sg);
            r.reward_chosen += beta * x, nd += 1;
        } else {
            const double sg = algo_sigmoid(beta * (z0 - x));
            l = o->undesirable_weight * (1.0 - sg);
            g = o->undesirable_weight * beta * sg * (1.0 - sg);
            r.reward_rejected += beta * x, nu += 1;
        }
        r.loss += l;
        seq_spread(s, i, dlp, g / B);
    }
    if (B) r.loss /= B;
    if (nd) r.reward_chosen /= nd;
    if (nu) r.reward_rejected /= nu;
    r.margin = r.reward_chosen - r.reward_rejected;
    *out = r;
    return 0;
}

/* ----------------------------------------------------------------- ORPO */

int algo_orpo(const AlgoSeqs *sc, const float *lp_c, const AlgoSeqs *sr, const float *lp_r,
              float lambda, PrefOut *out, float *dlp_c, float *dlp_r) {
    PL_TRY(check_pair(sc, lp_c, lp_c, sr, lp_r, lp_r, out, "algo_orpo"));
    if (!(lambda >= 0.0f)) return pl_fail(PL_EINVAL, "algo_orpo: lambda %g must be >= 0", lambda);
    const int P = sc->B;
    const double cap = -1e-6;
    PrefOut r = {0};
    double nll = 0.0, ntok = 0.0;
    for (int i = 0; i < P; i++) {
        double n;
        nll -= seq_sum(sc, i, lp_c, NULL, &n);
        ntok += n;
    }
    const double inll = ntok > 0 ? 1.0 / ntok : 0.0;
    for (int i = 0; i < P; i++) {
        double nc, nr;
        double c = seq_sum(sc, i, lp_c, NULL, &nc), q = seq_sum(sr, i, lp_r, NULL, &nr);
        const double ic = nc > 0 ? 1.0 / nc : 0.0, ir = nr > 0 ? 1.0 / nr : 0.0;
        c *= ic, q *= ir;
        const double gc_ok = c < cap, gr_ok = q < cap;
        if (!gc_ok) c = cap;
        if (!gr_ok) q = cap;
        const double lo = (c - q) - (algo_log1mexp(c) - algo_log1mexp(q));
        r.log_odds += lo;
        r.loss += -lambda * algo_logsig(lo);
        /* d lo/dc = 1/(1 - e^c) = -1/expm1(c); d lo/dr = 1/expm1(r). */
        const double gl = -lambda * algo_sigmoid(-lo) / P;
        const double gc = gl * (-1.0 / expm1(c)) * gc_ok, gr = gl * (1.0 / expm1(q)) * gr_ok;
        r.reward_chosen += lambda * c;
        r.reward_rejected += lambda * q;
        r.accuracy += c > q;
        seq_spread(sc, i, dlp_c, gc * ic - inll);
        seq_spread(sr, i, dlp_r, gr * ir);
    }
    finish_rewards(&r, P);
    if (P) r.log_odds /= P;
    r.nll = nll * inll;
    r.loss += r.nll;
    *out = r;
    return 0;
}

/* --------------------------------------------------------- reward model */

int algo_bt_loss(const float *r_c, const float *r_r, const float *margin, int P, float center_coef,
                 PrefOut *out, float *dr_c, float *dr_r) {
    if (P < 0 || !out || (P && (!r_c || !r_r)))
        return pl_fail(PL_EINVAL, "algo_bt_loss: P=%d or NULL array", P);
    if (!(center_coef >= 0.0f)) return pl_fail(PL_EINVAL, "algo_bt_loss: center_coef %g < 0", center_coef);
    PrefOut r = {0};
    for (int i = 0; i < P; i++) {
        const double x = (double)r_c[i] - r_r[i] - (margin ? margin[i] : 0.0);
        const double u = (double)r_c[i] + r_r[i];
        r.loss += -algo_logsig(x) + center_coef * u * u;
        const double g = -algo_sigmoid(-x) / P, gu = 2.0 * center_coef * u / P;
        if (dr_c) dr_c[i] = (float)(g + gu);
        if (dr_r) dr_r[i] = (float)(-g + gu);
        r.reward_chosen += r_c[i];
        r.reward_rejected += r_r[i];
        r.accuracy += r_c[i] > r_r[i];
    }
    finish_rewards(&r, P);
    *out = r;
    return 0;
}
