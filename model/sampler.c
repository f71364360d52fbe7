/* sampler.c: temperature, top-k, top-p and one draw per token.
 *
 * V is the vocabulary size; z = logits * (1 / T) are the tempered logits,
 * formed as the training forward forms them, whose per-row function
 * (logprob_row) gives the reported log-prob: generation's log-probs are
 * the trainer's, bit for bit.
 *
 * Every path first computes e_i = exp(z_i - max z) over the full vocab
 * (V), because the reported log-prob z_id - logsumexp(z) is that of the
 * untruncated distribution. Top-k then keeps the k best ids with a size-k
 * min-heap (O(V log k), no full sort) and sorts only those when top-p
 * follows. Top-p alone finds the nucleus with a histogram of e and sorts
 * only the one bucket where the mass crosses p. The kept set is walked in
 * a fixed order against one uniform draw, so the same Rng gives the same
 * ids on every platform. */
#include "model/sampler.h"

#include <math.h>

#include "common/mathx.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/kernels.h"

typedef struct {
    float key;  /* logit (top-k heap) or e_i (top-p sort)                 */
    int id;
} Cand;

/* Scratch layout: e (V floats), then cand (V Cand). */
size_t sampler_scratch_size(int V) {
    if (V <= 0) return 0;
    return (size_t)V * sizeof(float) + (size_t)V * sizeof(Cand) + 64;
}

int sampler_validate(const SamplerParams *p) {
    if (!p) return pl_fail(PL_EINVAL, "sampler: no params");
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return pl_fail(PL_EINVAL, "sampler: temperature %g must be finite and >= 0",
                       (double)p->temperature);
    if (p->top_k < 0) return pl_fail(PL_EINVAL, "sampler: top_k %d must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return pl_fail(PL_EINVAL, "sampler: top_p %g must be in (0, 1] (1 = off)", (double)p->top_p);
    return PL_OK;
}

/* ------------------------------------------------------------ ordering */

/* a ranks below b: smaller key, or equal key and larger id. */
static inline int cand_worse(Cand a, Cand b) {
    return a.key < b.key || (a.key == b.key && a.id > b.id);
}

/* qsort order: key descending, id ascending (a stable sort by id). */
static int cand_cmp_desc(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    if (a->key > b->key) return -1;
    if (a->key < b->key) return 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Min-heap on cand_worse: h[0] is the worst of the kept. */
static void heap_sift_down(Cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_worse(h[l], h[w])) w = l;
        if (r < n && cand_worse(h[r], h[w])) w = r;
        if (w == i) return;
        Cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Keeps the k largest logits in cand[0..k) (ties: lower id wins). Ids are
 * scanned in ascending order, so an equal logit never displaces a kept
 * one, which is what makes the lower id win at the boundary. */
static void top_k_select(const float *logits, int V, int k, Cand *cand) {
    for (int i = 0; i < k; i++) cand[i] = (Cand){logits[i], i};
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift_down(cand, k, i);
    for (int i = k; i < V; i++) {
        if (logits[i] > cand[0].key) {
            cand[0] = (Cand){logits[i], i};
            heap_sift_down(cand, k, 0);
        }
    }
}

/* ---------------------------------------------------------------- draw */

/* Histogram bucket of a non-negative float: its top 12 bits, which order
 * like the value (8 exponent bits and 3 mantissa bits, so a bucket spans a
 * factor 2^(1/8)). e <= 1 has bits >> 20 <= 0x3f8. */
#define NBUCKET 1024
static inline int bucket_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    b >>= 20;
    return b < NBUCKET ? (int)b : NBUCKET - 1; /* NaN from NaN logits */
}

/* c (n) is sorted by key descending and base is the mass ranked above it:
 * returns how many of c to keep so base plus their mass reaches need (at
 * least one, all if it never does), storing the kept mass in *kept. */
static int nucleus_prefix(const Cand *c, int n, double base, double need, double *kept) {
    double acc = base;
    for (int j = 0; j < n; j++) {
        acc += c[j].key;
        if (acc >= need) {
            *kept = acc;
            return j + 1;
        }
    }
    *kept = acc;
    return n;
}

/* The id at which the running mass of c (n, keys = e_i) passes target;
 * the last id with mass if rounding never lets it. */
static int draw(const Cand *c, int n, double target) {
    double acc = 0.0;
    int id = -1;
    for (int j = 0; j < n; j++) {
        if (c[j].key <= 0.0f && id >= 0) continue;
        acc += c[j].key;
        id = c[j].id;
        if (acc > target) break;
    }
    return id;
}

static int argmax_lowest(const float *x, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int sampler_sample(const float *logits, int V, const SamplerParams *p, Rng *rng,
                   float *lp, void *scratch) {
    float T = p->temperature;
    int imax = argmax_lowest(logits, V);

    if (!(T > 0.0f)) {
        /* Greedy: lp is log_softmax(logits) at T = 1; no draw. */
        if (lp) *lp = logprob_row(logits, V, imax, 1.0f, NULL, NULL);
        return imax;
    }

    float *e = scratch;                                 /* (V) exp(z - zmax) */
    Cand *cand = (Cand *)((char *)scratch + (((size_t)V * sizeof(float) + 15) & ~(size_t)15));

    /* Full-vocab softmax numerators, each as the training forward forms it
     * (z * (1 / T) - max, kernels/cpu/logprob.c), so that the tokens are
     * drawn from the distribution the trainer sees. */
    const float inv_t = 1.0f / T, zmax = logits[imax] * inv_t;
    double total = 0.0;
    for (int i = 0; i < V; i++) {
        e[i] = exp_neg(logits[i] * inv_t - zmax);
        total += e[i];
    }

    int k = (p->top_k > 0 && p->top_k < V) ? p->top_k : 0;
    int top_p_on = p->top_p < 1.0f;
    float u = rng_uniform(rng);
    int id = -1;

    if (!k && !top_p_on) {
        /* Plain sampling: walk ids in order against u * total. */
        double target = u * total, acc = 0.0;
        for (int i = 0; i < V; i++) {
            if (e[i] <= 0.0f) continue;
            acc += e[i];
            id = i;
            if (acc > target) break;
        }
    } else if (k) {
        /* top-k (then top-p over the renormalised k). */
        top_k_select(logits, V, k, cand);
        double mass = 0.0;
        for (int j = 0; j < k; j++) {
            cand[j].key = e[cand[j].id];
            mass += cand[j].key;
        }
        int keep = k;
        if (top_p_on) {
            qsort(cand, k, sizeof(Cand), cand_cmp_desc);
            keep = nucleus_prefix(cand, k, 0.0, p->top_p * mass, &mass);
        }
        id = draw(cand, keep, u * mass);
    } else {
        /* top-p over the full vocab without sorting it: bucket the ids by
         * the top bits of e_i (monotone in e_i for positive floats), find
         * the bucket where the mass from the top crosses p, and sort only
         * that bucket. The kept set is the one a full sort would give. */
        double bmass[NBUCKET] = {0};
        double need = p->top_p * total;
        for (int i = 0; i < V; i++) bmass[bucket_of(e[i])] += e[i];
        int cross = 0;
        double acc = 0.0;
        for (int b = NBUCKET - 1; b > 0; b--) {
            acc += bmass[b];
            if (acc >= need) {
                cross = b;
                break;
            }
        }
        /* Bucket 0 holds e_i == 0 (and denormals): never kept unless the
         * crossing falls there, in which case all positive ids are. */
        int na = 0, nc;
        double above = 0.0;
        for (int i = 0; i < V; i++)
            if (e[i] > 0.0f && bucket_of(e[i]) > cross) {
                cand[na++] = (Cand){e[i], i};
                above += e[i];
            }
        nc = na;
        for (int i = 0; i < V; i++)
            if (e[i] > 0.0f && bucket_of(e[i]) == cross) cand[nc++] = (Cand){e[i], i};
        qsort(cand + na, nc - na, sizeof(Cand), cand_cmp_desc);
        double kept;
        int keep = na + nucleus_prefix(cand + na, nc - na, above, need, &kept);
        id = draw(cand, keep, u * kept);
    }
    if (id < 0) id = imax; /* only when every e_i underflowed: cannot happen */

    /* the training forward's own arithmetic (kernels.h), not the draw's */
    if (lp) *lp = logprob_row(logits, V, id, inv_t, NULL, NULL);
    return id;
}
