/* dapo.c: DAPO's overlong shaping and group test (dapo.h). */
#include "algo/dapo.h"

#include <math.h>

#include "common/err.h"

static int response_len(const AlgoSeqs *s, int b) {
    int len = 0;
    for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++)
        len += algo_m(s, t) != 0.0f;
    return len;
}

int algo_overlong_penalty(const AlgoSeqs *s, int max_len, int buffer, float factor,
                          float *scores, float *penalty) {
    PL_TRY(algo_seqs_check(s, "algo_overlong_penalty"));
    if (buffer < 1 || buffer > max_len)
        return pl_fail(PL_EINVAL, "algo_overlong_penalty: buffer %d must be in [1, max_len %d]",
                       buffer, max_len);
    if (!(factor >= 0) || !isfinite(factor))
        return pl_fail(PL_EINVAL, "algo_overlong_penalty: factor %g must be finite and >= 0",
                       (double)factor);
    if (s->B > 0 && !scores) return pl_fail(PL_EINVAL, "algo_overlong_penalty: NULL scores");
    /* lengths first, so that a refused batch is left as it was */
    for (int b = 0; b < s->B; b++)
        if (response_len(s, b) > max_len)
            return pl_fail(PL_EINVAL, "algo_overlong_penalty: sequence %d has %d response tokens, "
                           "over max_len %d", b, response_len(s, b), max_len);
    const int expected = max_len - buffer;
    for (int b = 0; b < s->B; b++) {
        const int len = response_len(s, b);
        /* in double, as both references compute it, then one rounding */
        double p = len > expected ? -(double)(len - expected) / buffer * factor : 0.0;
        scores[b] = (float)((double)scores[b] + p);
        if (penalty) penalty[b] = (float)p;
    }
    return PL_OK;
}

int algo_group_informative(const float *scores, int G) {
    for (int i = 1; i < G; i++)
        if (scores[i] != scores[0]) return 1;
    return G <= 1;
}
