/* eval.c: the held-out evals (run_impl.h): greedy answers to data.eval by
 * exact match, and the choice between chosen and rejected on
 * data.eval_pref by the policy or the reward model. The first eval.n
 * records of each (all with eval.n 0) are used, the same every time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "algo/rules.h"
#include "common/err.h"
#include "coordinator/run_impl.h"

/* Pairs per request: a bound on the message size however many there are. */
#define PAIR_CHUNK 4096

/* The indices 0..n-1 of the first n of `total` eval records (eval.n of
 * them when set), or NULL when out of memory. */
static long *eval_which(const RunConfig *c, long total, long *n_out) {
    long n = c->eval_n > 0 && c->eval_n < total ? c->eval_n : total;
    long *which = malloc(sizeof(long) * (n ? n : 1));
    for (long i = 0; which && i < n; i++)
        which[i] = i;
    *n_out = n;
    return which;
}

/* eval/reward_mean: the reward worker's mean score of the answers. */
static int eval_reward(Run *r, const long *which, const Packed *seqs) {
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall sc;
    memset(&sc, 0, sizeof sc);
    float *scores = NULL;
    int rc = req_score(r, a, &r->eval, which, 1, seqs, &sc);
    if (rc == 0) rc = req_call(r, &sc, 1);
    if (rc == 0) rc = req_expect(r, &sc, PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
    if (rc == 0) rc = req_f32(r, &sc, sc.rep->score_rep->scores, seqs->B, "scores", &scores);
    if (rc == 0) {
        double s = 0;
        for (int b = 0; b < seqs->B; b++)
            s += scores[b];
        stats_put(&r->stats, "eval/reward_mean", s / (seqs->B ? seqs->B : 1));
    }
    free(scores);
    pool_calls_free(&sc, 1);
    wire_arena_free(&a);
    return rc;
}

int eval_generate(Run *r) {
    const RunConfig *c = r->cfg;
    long n;
    long *which = eval_which(c, r->eval.n, &n);
    PL_CHECK_ALLOC(which);
    Rollout ro;
    int max_new = c->eval_max_new_tokens > 0 ? c->eval_max_new_tokens : c->max_new_tokens;
    int rc = rollout_sync_adapters(r);
    if (rc == 0) rc = rollout_generate(r, &r->eval, which, (int)n, 1, 0.0f, max_new, 0, &ro);
    if (rc < 0) {
        free(which);
        return rc;
    }
    long right = 0;
    for (int b = 0; b < ro.seqs.B && rc == 0; b++) {
        char *text = rollout_response_text(r, &ro.seqs, b);
        const DsRecord *rec = &r->eval.r[which[b]];
        int hit = rec->answer && reward_rule_score(RULE_EXACT_MATCH, NULL, text, 0, rec->answer) > 0.5;
        right += hit;
        if (b < c->eval_samples) { /* what a dashboard shows next to the numbers */
            char *prompt = NULL;
            if (tok_decode(r->tok, rec->prompt, rec->n_prompt, 1, &prompt) < 0) prompt = NULL;
            rc = metrics_sample(r->metrics, r->step, prompt, text, rec->answer ? hit : NAN,
                                rec->answer);
            free(prompt);
        }
        free(text);
    }
    stats_put(&r->stats, "eval/accuracy", (double)right / (n ? n : 1));
    int rw;
    if (pool_workers_with(r->pool, ROLE_REWARD, &rw, 1) > 0) rc = eval_reward(r, which, &ro.seqs);
    free(which);
    rollout_free(&ro);
    return rc;
}

/* Each pair's value for its chosen (vc) and rejected (vr) sequence: role
 * k's score (reward), or the sum of its completion log-probs. */
static int values_of(Run *r, const long *which, long n, RoleKind k, double *vc, double *vr) {
    for (long at = 0; at < n; at += PAIR_CHUNK) {
        int m = n - at < PAIR_CHUNK ? (int)(n - at) : PAIR_CHUNK;
        Packed pc, pr;
        float *x[2] = {NULL, NULL};
        int rc = req_pair(r, &r->eval_pref, which + at, m, k, &pc, &pr, x);
        for (int i = 0; rc == 0 && i < m; i++) {
            if (k == ROLE_REWARD) {
                vc[at + i] = x[0][i], vr[at + i] = x[1][i];
                continue;
            }
            double sc = 0, sr = 0;
            for (int t = pc.offsets[i]; t < pc.offsets[i + 1]; t++)
                sc += pc.mask[t] * x[0][t];
            for (int t = pr.offsets[i]; t < pr.offsets[i + 1]; t++)
                sr += pr.mask[t] * x[1][t];
            vc[at + i] = sc, vr[at + i] = sr;
        }
        free(x[0]), free(x[1]);
        packed_free(&pc);
        packed_free(&pr);
        PL_TRY(rc);
    }
    return 0;
}

/* The eval pairs this step scores (*which, *n) and their values from role
 * k: chosen's in (*v)[0..n), rejected's in (*v)[n..2n). The caller frees
 * both, whatever the result. */
static int pair_values(Run *r, RoleKind k, long **which, long *n, double **v) {
    *which = eval_which(r->cfg, r->eval_pref.n, n);
    *v = malloc(sizeof(double) * 2 * (*n ? *n : 1));
    if (!*which || !*v) return pl_fail(PL_ENOMEM, "eval of %ld pairs", *n);
    return values_of(r, *which, *n, k, *v, *v + *n);
}

/* The sum of a cached sequence's completion log-probs (those after its
 * prompt). */
static double completion_sum(const float *lp, int n_prompt, int n_resp) {
    double s = 0;
    for (int t = n_prompt; t < n_prompt + n_resp; t++)
        s += lp[t];
    return s;
}

/* eval/pref_accuracy: chosen's summed log-probs above rejected's; with a
 * reference (dpo, kto) also eval/reward_accuracy, by log-ratios to it. */
int eval_pref_policy(Run *r) {
    long n, *which;
    double *v;
    int rc = pair_values(r, ROLE_ACTOR, &which, &n, &v);
    int ref = (r->algo->roles(r->cfg) & (1u << ROLE_REFERENCE)) != 0;
    if (rc == 0 && ref) rc = refcache_get(r, &r->eval_pref, which, (int)n, &r->eval_ref);
    if (rc == 0) {
        long right = 0, right_ref = 0;
        for (long i = 0; i < n; i++) {
            const DsRecord *d = &r->eval_pref.r[i];
            double sc = v[i], sr = v[n + i], dc = 0, dr = 0;
            if (ref) {
                dc = completion_sum(r->eval_ref.c[i], d->n_prompt, d->n_chosen);
                dr = completion_sum(r->eval_ref.r[i], d->n_prompt, d->n_rejected);
            }
            right += sc > sr;
            right_ref += (sc - dc) > (sr - dr);
        }
        stats_put(&r->stats, "eval/pref_accuracy", (double)right / (n ? n : 1));
        if (ref) stats_put(&r->stats, "eval/reward_accuracy", (double)right_ref / (n ? n : 1));
    }
    free(v);
    free(which);
    return rc;
}

/* eval/accuracy: the reward model scores chosen above rejected. */
int eval_pref_rm(Run *r) {
    long n, *which;
    double *v;
    int rc = pair_values(r, ROLE_REWARD, &which, &n, &v);
    if (rc == 0) {
        long right = 0;
        for (long i = 0; i < n; i++)
            right += v[i] > v[n + i];
        stats_put(&r->stats, "eval/accuracy", (double)right / (n ? n : 1));
    }
    free(v);
    free(which);
    return rc;
}
