/* bench_algo.c: time GAE plus the clipped policy loss (with its gradient)
 * over a packed batch of 1M tokens, the per-step cost of PPO's advantage
 * and loss math. Both are single passes with no allocation, so the time
 * should be a few memory passes over the arrays.
 *
 * Usage: build/bench_algo [tokens] [seq_len] [reps]
 * Prints the median over reps of: GAE, policy loss (+ dlp), and both. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "algo/ppo.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/rng.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 1 << 20;
    const int L = argc > 2 ? atoi(argv[2]) : 1024;
    const int reps = argc > 3 ? atoi(argv[3]) : 21;
    if (N <= 0 || L <= 0 || N % L || reps <= 0) {
        fprintf(stderr, "usage: bench_algo [tokens, a multiple of seq_len] [seq_len] [reps]\n");
        return 1;
    }
    const int B = N / L;
    int *off = malloc((B + 1) * sizeof *off);
    float *m = malloc(N * sizeof *m), *r = malloc(N * sizeof *r), *v = malloc(N * sizeof *v);
    float *lp = malloc(N * sizeof *lp), *old = malloc(N * sizeof *old), *adv = malloc(N * sizeof *adv);
    float *ret = malloc(N * sizeof *ret), *dlp = malloc(N * sizeof *dlp);
    double *tg = malloc(reps * sizeof *tg), *tp = malloc(reps * sizeof *tp), *tb = malloc(reps * sizeof *tb);
    if (!off || !m || !r || !v || !lp || !old || !adv || !ret || !dlp || !tg || !tp || !tb) return 1;
    Rng rng;
    rng_seed(&rng, 1);
    for (int b = 0; b <= B; b++) off[b] = b * L;
    for (int t = 0; t < N; t++) {
        m[t] = (t % L) >= L / 8; /* the first eighth of each sequence is prompt */
        r[t] = 0.01f * rng_normal(&rng);
        v[t] = rng_normal(&rng);
        old[t] = -1.0f - rng_uniform(&rng);
        lp[t] = old[t] + 0.2f * rng_normal(&rng);
    }
    AlgoSeqs s = {B, N, off, m};
    PolicyLossOpts o;
    algo_ppo_policy_defaults(&o);
    PolicyLossOut out;
    double sink = 0;
    for (int k = 0; k < reps; k++) {
        double t0 = pl_now_s();
        if (algo_gae(&s, r, v, 1.0f, 0.95f, adv, ret) < 0) return fprintf(stderr, "%s\n", pl_error()), 1;
        double t1 = pl_now_s();
        if (algo_policy_loss(&s, lp, old, adv, NULL, NULL, &o, &out, dlp) < 0)
            return fprintf(stderr, "%s\n", pl_error()), 1;
        double t2 = pl_now_s();
        tg[k] = t1 - t0, tp[k] = t2 - t1, tb[k] = t2 - t0;
        sink += out.loss + dlp[N - 1];
    }
    qsort(tg, reps, sizeof *tg, cmp);
    qsort(tp, reps, sizeof *tp, cmp);
    qsort(tb, reps, sizeof *tb, cmp);
    printf("tokens %d (B %d x %d), median of %d: gae %.2f ms, policy loss + dlp %.2f ms, "
           "both %.2f ms (%.2f ns/token)   [%g]\n",
           N, B, L, reps, 1e3 * tg[reps / 2], 1e3 * tp[reps / 2], 1e3 * tb[reps / 2],
           1e9 * tb[reps / 2] / N, sink);
    free(off), free(m), free(r), free(v), free(lp), free(old), free(adv), free(ret), free(dlp);
    free(tg), free(tp), free(tb);
    return 0;
}
