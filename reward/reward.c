/* reward.c: the reward role's requests: score (by rule, or by the model's
 * head at each sequence's last token), train (bt), checkpoint. */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "algo/rules.h"
#include "worker/role_impl.h"

/* 1 when id ends generation (the model's EOS ids or the tokenizer's). */
static int is_eos(const Role *r, int id) {
    const ModelConfig *c = &r->base->cfg;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return r->tok && tok_eos(r->tok) == id;
}

/* The rule's score of every sequence: its mask-1 tokens less a trailing
 * EOS, decoded without special tokens, against answers[b]. */
static int score_rule(Role *r, const WireSeqs *s, char **answers, size_t n_answers, float *out) {
    RewardRule rule = (RewardRule)r->rule_id;
    if (n_answers != 0 && n_answers != (size_t)s->B)
        return pl_fail(PL_EPROTO, "score: %zu answers for %d sequences", n_answers, s->B);
    if (reward_rule_needs_answer(rule) && n_answers == 0 && s->B > 0)
        return pl_fail(PL_EPROTO, "score: sequence 0 has no answer (rule %s needs one)", r->rule);
    int *ids = malloc(sizeof(int) * (size_t)(s->N ? s->N : 1));
    PL_CHECK_ALLOC(ids);
    int rc = 0;
    for (int b = 0; rc == 0 && b < s->B; b++) {
        int n = 0;
        for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++)
            if (s->mask[t]) ids[n++] = s->tokens[t];
        if (n > 0 && is_eos(r, ids[n - 1])) n--;
        char *text = NULL;
        if (reward_rule_needs_text(rule)) {
            rc = tok_decode(r->tok, ids, n, 1, &text);
            if (rc < 0) {
                rc = pl_wrap(rc, "score: decoding sequence %d", b);
                break;
            }
        }
        const char *answer = n_answers ? answers[b] : NULL;
        out[b] = (float)reward_rule_score(rule, r->rule_state, text ? text : "", n, answer);
        free(text);
    }
    free(ids);
    return rc;
}

static int score(Role *r, const Plumb__ScoreReq *q, WireArena *a, Plumb__Envelope *rep) {
    if (r->rule_id < 0 && !r->model->head)
        return pl_fail(PL_EPROTO, "score: role reward has neither a rule nor a score head");
    WireSeqs s;
    PL_TRY(wire_get_seqs(q->seqs, &r->limits, "score.seqs", &s));
    float *sc = wire_alloc(a, sizeof(float) * (size_t)(s.B ? s.B : 1));
    Plumb__ScoreRep *m = wire_alloc(a, sizeof *m);
    int rc = !sc || !m ? pl_fail(PL_ENOMEM, "score: out of memory") : 0;
    if (rc == 0) {
        if (r->rule_id >= 0) rc = score_rule(r, &s, q->answers, q->n_answers, sc);
        else rc = role_infer(r, s.tokens, s.offsets, s.B, 1.0f, NULL, NULL, NULL, sc);
    }
    if (rc == 0) {
        plumb__score_rep__init(m);
        m->scores = wire_f32(a, sc, s.B);
        rep->body_case = PLUMB__ENVELOPE__BODY_SCORE_REP;
        rep->score_rep = m;
    }
    wire_seqs_free(&s);
    return rc;
}

int reward_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    switch (q->body_case) {
    case PLUMB__ENVELOPE__BODY_SCORE: return score(r, q->score, a, rep);
    case PLUMB__ENVELOPE__BODY_CHECKPOINT: return role_checkpoint(r, q->checkpoint, 0, a, rep);
    case PLUMB__ENVELOPE__BODY_TRAIN:
        if (q->train->body_case == PLUMB__TRAIN_REQ__BODY_BT) return role_train(r, q->train, a, rep);
        return role_unsupported(r, q);
    default: return role_unsupported(r, q);
    }
}
