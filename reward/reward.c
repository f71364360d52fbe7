/* reward.c: the reward role's requests, its rule or remote scorer and the
 * Bradley-Terry loss (reward.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo/pref.h"
#include "algo/rules.h"
#include "common/err.h"
#include "reward/remote.h"
#include "reward/reward.h"
#include "worker/infer.h"
#include "worker/train.h"

/* The role's own state (Role.priv) when it does not score by its model:
 * a rule, or a scorer outside the worker (remote.h). */
typedef struct {
    RewardRule rule;
    char name[32];
    void *state;             /* reward_rule_prepare's                         */
    const RemoteOps *remote; /* or NULL: the rule                             */
    void *rstate;            /* remote->open's                                */
} Rule;

/* reward.type other than "model" names a rule, or http / exec. */
static int init(Role *r, const Plumb__RoleConfig *cfg) {
    const char *name = cfg->rule && *cfg->rule && strcmp(cfg->rule, "model") ? cfg->rule : NULL;
    if (!name) return 0;
    Rule *u = calloc(1, sizeof *u);
    PL_CHECK_ALLOC(u);
    r->priv = u;
    snprintf(u->name, sizeof u->name, "%s", name);
    if ((u->remote = remote_find(name))) {
        const Plumb__RemoteReward *m = cfg->remote;
        if (!m) return pl_fail(PL_EPROTO, "role reward: reward %s without its settings", name);
        if (!r->tok) return pl_fail(PL_EINVAL, "reward %s needs a tokenizer to decode texts", name);
        if (!(m->timeout_s > 0) || m->retries < 0 || m->backoff_ms < 0 || m->concurrency < 1 ||
            m->batch_size < 1)
            return pl_fail(PL_EPROTO, "role reward: reward %s settings out of range (timeout_s "
                           "%g, retries %d, backoff_ms %d, concurrency %d, batch_size %d)", name,
                           m->timeout_s, m->retries, m->backoff_ms, m->concurrency, m->batch_size);
        RemoteOpts o = {.url = m->url, .command = m->command, .timeout_s = m->timeout_s,
                        .retries = m->retries, .backoff_ms = m->backoff_ms,
                        .concurrency = m->concurrency, .batch_size = m->batch_size};
        return u->remote->open(&o, &u->rstate);
    }
    PL_TRY(reward_rule_parse(name, &u->rule));
    if (reward_rule_needs_text(u->rule) && !r->tok)
        return pl_fail(PL_EINVAL, "rule %s needs a tokenizer to decode responses", name);
    return reward_rule_prepare(u->rule, cfg->rule_arg ? cfg->rule_arg : "", &u->state);
}

static void free_priv(Role *r) {
    Rule *u = r->priv;
    if (u && u->remote) u->remote->close(u->rstate);
    else if (u) reward_rule_free(&u->state);
    free(u);
    r->priv = NULL;
}

/* 1 when id ends generation (the model's EOS ids or the tokenizer's). */
static int is_eos(const Role *r, int id) {
    const ModelConfig *c = &r->base->cfg;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return r->tok && tok_eos(r->tok) == id;
}

/* Sequence b's response: its mask-1 tokens less a trailing EOS, into ids;
 * returns their count. */
static int response_ids(const Role *r, const WireSeqs *s, int b, int *ids) {
    int n = 0;
    for (int t = s->offsets[b]; t < s->offsets[b + 1]; t++)
        if (s->mask[t]) ids[n++] = s->tokens[t];
    if (n > 0 && is_eos(r, ids[n - 1])) n--;
    return n;
}

/* The rule's score of every sequence: its response decoded without special
 * tokens, against answers[b]. */
static int score_rule(Role *r, const Rule *u, const WireSeqs *s, char **answers, size_t n_answers,
                      float *out) {
    if (reward_rule_needs_answer(u->rule) && n_answers == 0 && s->B > 0)
        return pl_fail(PL_EPROTO, "score: sequence 0 has no answer (rule %s needs one)", u->name);
    int *ids = malloc(sizeof(int) * (size_t)(s->N ? s->N : 1));
    PL_CHECK_ALLOC(ids);
    int rc = 0;
    for (int b = 0; rc == 0 && b < s->B; b++) {
        int n = response_ids(r, s, b, ids);
        char *text = NULL;
        if (reward_rule_needs_text(u->rule)) {
            rc = tok_decode(r->tok, ids, n, 1, &text);
            if (rc < 0) {
                rc = pl_wrap(rc, "score: decoding sequence %d", b);
                break;
            }
        }
        const char *answer = n_answers ? answers[b] : NULL;
        out[b] = (float)reward_rule_score(u->rule, u->state, text ? text : "", n, answer);
        free(text);
    }
    free(ids);
    return rc;
}

/* Every sequence as {prompt, response, answer} text (prompt and response
 * decoded without special tokens, the response's trailing EOS dropped),
 * scored by the remote scorer. */
static int score_remote(Role *r, const Rule *u, const WireSeqs *s, char **answers,
                        size_t n_answers, float *out) {
    RewardItem *items = calloc((size_t)(s->B ? s->B : 1), sizeof *items);
    int *ids = malloc(sizeof(int) * (size_t)(s->N ? s->N : 1));
    int rc = items && ids ? 0 : pl_fail(PL_ENOMEM, "score: out of memory");
    for (int b = 0; rc == 0 && b < s->B; b++) {
        int o = s->offsets[b], e = s->offsets[b + 1], np = 0;
        while (o + np < e && !s->mask[o + np])
            np++;
        int n = response_ids(r, s, b, ids);
        char *pt = NULL, *rt = NULL;
        rc = tok_decode(r->tok, s->tokens + o, np, 1, &pt);
        if (rc == 0) rc = tok_decode(r->tok, ids, n, 1, &rt);
        items[b] = (RewardItem){pt, rt, n_answers && answers[b] ? answers[b] : ""};
        if (rc < 0) {
            free(pt), free(rt);
            items[b] = (RewardItem){0};
            rc = pl_wrap(rc, "score: decoding sequence %d", b);
        }
    }
    if (rc == 0) rc = u->remote->score(u->rstate, items, s->B, out);
    for (int b = 0; items && b < s->B; b++)
        free((char *)items[b].prompt), free((char *)items[b].response);
    free(items), free(ids);
    return rc;
}

static int score(Role *r, const Plumb__Envelope *e, WireArena *a, Plumb__Envelope *rep) {
    const Plumb__ScoreReq *q = e->score;
    const Rule *u = r->priv;
    if (!u && !r->model->head)
        return pl_fail(PL_EPROTO, "score: role reward has neither a rule nor a score head");
    WireSeqs s;
    PL_TRY(wire_get_seqs(q->seqs, &r->limits, "score.seqs", &s));
    float *sc = wire_alloc(a, sizeof(float) * (size_t)(s.B ? s.B : 1));
    Plumb__ScoreRep *m = wire_alloc(a, sizeof *m);
    int rc = !sc || !m ? pl_fail(PL_ENOMEM, "score: out of memory") : 0;
    /* a rule or a scorer outside reads answer b beside sequence b */
    if (rc == 0 && u && q->n_answers != 0 && q->n_answers != (size_t)s.B)
        rc = pl_fail(PL_EPROTO, "score: %zu answers for %d sequences", q->n_answers, s.B);
    if (rc == 0) {
        if (u && u->remote) rc = score_remote(r, u, &s, q->answers, q->n_answers, sc);
        else if (u) rc = score_rule(r, u, &s, q->answers, q->n_answers, sc);
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

/* ------------------------------------------------------- Bradley-Terry */

static int bt_prepare(const Role *r, const Plumb__TrainReq *q, TrainJob *j) {
    const Plumb__BtBody *b = q->bt;
    if (!r->model->head)
        return pl_fail(PL_EPROTO, "%s: role %s has no score head", train_what(j), role_kind_name(r->kind));
    PL_TRY(train_get_pair(r, b->chosen, b->rejected, j));
    if (b->margin) PL_TRY(train_get_unit(b->margin, j, 0, "margin"));
    if (!(b->center_coef >= 0) || !isfinite(b->center_coef))
        return pl_fail(PL_EPROTO, "%s: center_coef %g must be >= 0", train_what(j), b->center_coef);
    *(float *)j->opts = b->center_coef;
    j->need_last = 1;
    return 0;
}

/* The head at each last token: the P chosen, then the P rejected; uin[0]
 * the pairs' margins, or NULL. */
static int bt_loss(const TrainJob *j, const TrainPart *p, TrainOut *o, double *loss, double *m) {
    PrefOut out;
    PL_TRY(algo_bt_loss(o->last, o->last + p->P, p->uin[0], p->P, *(const float *)j->opts, &out,
                        o->dlast, o->dlast + p->P));
    *loss = out.loss;
    m[0] = out.accuracy, m[1] = out.margin, m[2] = out.reward_chosen, m[3] = out.reward_rejected;
    return 0;
}

static const char *const bt_metrics[] = {"accuracy", "margin", "reward_chosen", "reward_rejected"};

static const TrainBody reward_bt = {.body = PLUMB__TRAIN_REQ__BODY_BT, .metrics = bt_metrics,
                                    .n_metrics = 4, .opts_size = sizeof(float),
                                    .prepare = bt_prepare, .loss = bt_loss};

/* ---------------------------------------------------------------- role */

static const RoleRequest requests[] = {
    {PLUMB__ENVELOPE__BODY_SCORE, score},
    {PLUMB__ENVELOPE__BODY_CHECKPOINT, role_on_checkpoint},
};
static const TrainBody *const bodies[] = {&reward_bt};

const RoleDesc reward_role = {.kind = ROLE_REWARD, .requests = requests, .n_requests = 2,
                              .bodies = bodies, .n_bodies = 1, .init = init, .free = free_priv};
