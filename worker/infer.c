/* infer.c: forwards in the wire's convention (infer.h). */
#include "worker/infer.h"

#include <math.h>
#include <stdlib.h>

#include "common/err.h"

void infer_targets(const int *tokens, const int *offsets, int B, int *targets) {
    for (int b = 0; b < B; b++)
        for (int t = offsets[b]; t < offsets[b + 1]; t++)
            targets[t] = t + 1 < offsets[b + 1] ? tokens[t + 1] : -1;
}

/* The Batch of sequences [s0, s1), with cu filled relative to their start. */
static Batch range_batch(const int *tokens, const int *targets, const int *offsets, int s0,
                         int s1, float T, int *cu) {
    int t0 = offsets[s0];
    for (int i = 0; i <= s1 - s0; i++) cu[i] = offsets[s0 + i] - t0;
    return (Batch){.tokens = tokens + t0, .targets = targets + t0, .cu_seqlens = cu,
                   .B = s1 - s0, .temperature = T};
}

int infer_forward(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                  int s1, float T, int *cu, float *lp, float *ent, float *val) {
    int t0 = offsets[s0];
    Batch b = range_batch(tokens, targets, offsets, s0, s1, T, cu);
    return model_forward(m, &b, lp ? lp + t0 : NULL, ent ? ent + t0 : NULL, val ? val + t0 : NULL,
                         NULL);
}

int infer_backward(Model *m, const int *tokens, const int *targets, const int *offsets, int s0,
                   int s1, float T, int *cu, const float *dlp, const float *dent,
                   const float *dval) {
    int t0 = offsets[s0];
    Batch b = range_batch(tokens, targets, offsets, s0, s1, T, cu);
    return model_backward(m, &b, dlp ? dlp + t0 : NULL, dent ? dent + t0 : NULL,
                          dval ? dval + t0 : NULL);
}

void shift_in(const int *offsets, int B, const float *model, float *wire) {
    for (int b = 0; b < B; b++) {
        int s = offsets[b], e = offsets[b + 1];
        wire[s] = 0.0f;
        for (int t = s + 1; t < e; t++) wire[t] = model[t - 1];
    }
}

void shift_back(const int *offsets, int B, const float *dwire, float *dmodel) {
    for (int b = 0; b < B; b++) {
        int s = offsets[b], e = offsets[b + 1];
        for (int t = s; t + 1 < e; t++) dmodel[t] = dwire[t + 1];
        dmodel[e - 1] = 0.0f;
    }
}

int infer_chunk(const Role *r, int S) {
    return r->micro_batch > 0 && r->micro_batch < S ? r->micro_batch : (S > 0 ? S : 1);
}

int role_infer(Role *r, const int *tokens, const int *offsets, int B, float T, float *lp,
               float *ent, float *values, float *last) {
    if (B <= 0) return 0;
    if ((values || last) && !r->model->head)
        return pl_fail(PL_EINVAL, "role %s has no value head", role_kind_name(r->kind));
    int N = offsets[B], mb = infer_chunk(r, B), rc = 0;
    int *targets = malloc(sizeof(int) * N), *cu = malloc(sizeof(int) * (mb + 1));
    float *mlp = lp ? malloc(sizeof(float) * N) : NULL;
    float *ment = ent ? malloc(sizeof(float) * N) : NULL;
    float *mval = values || last ? malloc(sizeof(float) * N) : NULL;
    if (!targets || !cu || (lp && !mlp) || (ent && !ment) || ((values || last) && !mval)) {
        rc = pl_fail(PL_ENOMEM, "role %s: out of memory for %d tokens", role_kind_name(r->kind), N);
        goto done;
    }
    infer_targets(tokens, offsets, B, targets);
    for (int s0 = 0; rc == 0 && s0 < B; s0 += mb) {
        int s1 = s0 + mb < B ? s0 + mb : B;
        rc = infer_forward(r->model, tokens, targets, offsets, s0, s1, T, cu, mlp, ment, mval);
    }
    if (rc < 0) goto done;
    if (lp) shift_in(offsets, B, mlp, lp);
    if (ent) shift_in(offsets, B, ment, ent);
    if (values) shift_in(offsets, B, mval, values);
    if (last)
        for (int b = 0; b < B; b++) last[b] = mval[offsets[b + 1] - 1];
done:
    free(targets);
    free(cu);
    free(mlp);
    free(ment);
    free(mval);
    return rc;
}

int role_on_logprobs(Role *r, const Plumb__Envelope *e, WireArena *a, Plumb__Envelope *rep) {
    const Plumb__LogprobsReq *q = e->logprobs;
    WireSeqs s;
    PL_TRY(wire_get_seqs(q->seqs, &r->limits, "logprobs.seqs", &s));
    float T = q->temperature > 0 && isfinite(q->temperature) ? q->temperature : 1.0f;
    size_t n = (size_t)(s.N ? s.N : 1);
    float *lp = wire_alloc(a, sizeof(float) * n);
    float *ent = q->entropy ? wire_alloc(a, sizeof(float) * n) : NULL;
    Plumb__LogprobsRep *m = wire_alloc(a, sizeof *m);
    int rc = !lp || !m || (q->entropy && !ent) ? pl_fail(PL_ENOMEM, "logprobs: out of memory") : 0;
    if (rc == 0) rc = role_infer(r, s.tokens, s.offsets, s.B, T, lp, ent, NULL, NULL);
    if (rc == 0) {
        plumb__logprobs_rep__init(m);
        m->logprobs = wire_f32(a, lp, s.N);
        m->entropy = ent ? wire_f32(a, ent, s.N) : NULL;
        m->adapter_version = r->adapter_version;
        rep->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS_REP;
        rep->logprobs_rep = m;
    }
    wire_seqs_free(&s);
    return rc;
}
