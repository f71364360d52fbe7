/* rollout.c: generation across the actor replicas, and the adapter sync
 * that keeps the replicas at the trainer's version (run_impl.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "coordinator/run_impl.h"

void rollout_free(Rollout *ro) {
    packed_free(&ro->seqs);
    free(ro->lp);
    memset(ro, 0, sizeof *ro);
}

int rollout_append(Rollout *dst, const Rollout *src, int first, int n) {
    const Packed *p = &src->seqs;
    long base = dst->seqs.N;
    for (int b = first; b < first + n; b++) {
        int o = p->offsets[b], len = p->offsets[b + 1] - o, np = 0;
        while (np < len && !p->mask[o + np])
            np++;
        PL_TRY(packed_add(&dst->seqs, p->tokens + o, np, p->tokens + o + np, len - np));
    }
    float *l = realloc(dst->lp, sizeof(float) * (dst->seqs.N ? dst->seqs.N : 1));
    PL_CHECK_ALLOC(l);
    dst->lp = l;
    long from = p->offsets[first], cnt = p->offsets[first + n] - from;
    memcpy(dst->lp + base, src->lp + from, sizeof(float) * (size_t)cnt);
    return 0;
}

int rollout_sync_adapters(Run *r) {
    int idx[POOL_MAX_WORKERS];
    int n = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
    if (n <= 1 || r->cfg->full_finetune || r->cfg->lora_rank == 0) return 0;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall get = {.worker = idx[0]};
    get.req = req_env(a, ROLE_ACTOR);
    Plumb__AdapterMsg *m = wire_alloc(a, sizeof *m);
    plumb__adapter_msg__init(m);
    m->get = 1;
    get.req->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
    get.req->adapter = m;
    int rc = req_call(r, &get, 1);
    if (rc == 0) rc = req_expect(r, &get, PLUMB__ENVELOPE__BODY_ADAPTER, "adapter get");
    PoolCall set[POOL_MAX_WORKERS];
    int ns = 0;
    for (int i = 1; rc == 0 && i < n; i++) {
        PoolWorker const *w = pool_worker(r->pool, idx[i]);
        if (w->adapter_version == get.rep->adapter->version) continue;
        memset(&set[ns], 0, sizeof set[ns]);
        set[ns].worker = idx[i];
        set[ns].req = req_env(a, ROLE_ACTOR);
        Plumb__AdapterMsg *s = wire_alloc(a, sizeof *s);
        plumb__adapter_msg__init(s);
        s->version = get.rep->adapter->version;
        s->data = get.rep->adapter->data;
        set[ns].req->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
        set[ns].req->adapter = s;
        ns++;
    }
    if (rc == 0 && ns) rc = req_call(r, set, ns);
    for (int i = 0; rc == 0 && i < ns; i++)
        ((PoolWorker *)pool_worker(r->pool, set[i].worker))->adapter_version =
            get.rep->adapter->version;
    if (rc == 0) {
        size_t bytes = get.rep->adapter->data ? get.rep->adapter->data->data.len : 0;
        stats_put(&r->stats, "perf/adapter_sync_bytes", (double)bytes * ns);
    }
    pool_calls_free(set, ns);
    pool_calls_free(&get, 1);
    wire_arena_free(&a);
    return rc;
}

/* Generates G samples for each of n prompts (records which[0..n)) across
 * the actor replicas that hold the trainer's adapter version (a replica
 * that joined a full fine-tuning run late holds older weights and is left
 * out); greedy when temp = 0. */
void gen_calls_free(GenCalls *g) {
    pool_calls_free(g->calls, g->nw);
    for (int w = 0; w < g->nw; w++)
        packed_free(&g->prompts[w]);
    wire_arena_free(&g->a);
    memset(g, 0, sizeof *g);
}

/* Whether worker wi trains role k. */
static int is_trainer(const Run *r, RoleKind k, int wi) {
    for (int i = 0; i < r->n_trainers[k]; i++)
        if (r->trainers[k][i] == wi) return 1;
    return 0;
}

int rollout_prepare(Run *r, const Records *recs, const long *which, int n, int G, float temp,
                    int max_new, uint64_t seed, int avoid_trainers, GenCalls *g) {
    memset(g, 0, sizeof *g);
    int idx[POOL_MAX_WORKERS], nw = 0, nrest = 0, rest[POOL_MAX_WORKERS];
    int all = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
    for (int i = 0; i < all; i++) {
        if (pool_worker(r->pool, idx[i])->adapter_version != r->adapter_version) continue;
        if (avoid_trainers && is_trainer(r, ROLE_ACTOR, idx[i])) rest[nrest++] = idx[i];
        else idx[nw++] = idx[i];
    }
    if (nw == 0) /* no replica but the trainers: they generate too */
        for (int i = 0; i < nrest; i++) idx[nw++] = rest[i];
    if (nw == 0)
        return pl_fail(PL_EPEER, "no live actor worker holds adapter version %llu",
                       (unsigned long long)r->adapter_version);
    if (nw > n) nw = n;
    g->a = wire_arena_new();
    PL_CHECK_ALLOC(g->a);
    g->nw = nw, g->n = n, g->G = G, g->max_new = max_new, g->version = r->adapter_version;
    int rc = 0, start = 0;
    for (int w = 0; w < nw && rc == 0; w++) {
        int cnt = n / nw + (w < n % nw);
        for (int i = start; i < start + cnt && rc == 0; i++) {
            const DsRecord *d = &recs->r[which[i]];
            rc = packed_add(&g->prompts[w], d->prompt, d->n_prompt, NULL, 0);
        }
        Plumb__Envelope *e = req_env(g->a, ROLE_ACTOR);
        Plumb__GenerateReq *q = wire_alloc(g->a, sizeof *q);
        plumb__generate_req__init(q);
        q->prompts = wire_seqs(g->a, g->prompts[w].tokens, g->prompts[w].offsets, NULL,
                               g->prompts[w].B);
        q->n = G;
        q->temperature = temp;
        q->top_k = temp > 0 ? r->cfg->top_k : 0;
        q->top_p = temp > 0 ? r->cfg->top_p : 1.0f;
        q->seed = seed;
        q->max_new_tokens = max_new;
        q->first_index = (int64_t)start * G;
        e->body_case = PLUMB__ENVELOPE__BODY_GENERATE;
        e->generate = q;
        g->calls[w].worker = idx[w];
        g->calls[w].req = e;
        start += cnt;
    }
    if (rc < 0) gen_calls_free(g);
    return rc;
}

int rollout_collect(Run *r, GenCalls *g, Rollout *out) {
    memset(out, 0, sizeof *out);
    const int G = g->G, max_new = g->max_new;
    int rc = 0;
    for (int w = 0; w < g->nw && rc == 0; w++) {
        PoolCall *c = &g->calls[w];
        rc = req_expect(r, c, PLUMB__ENVELOPE__BODY_GENERATED, "generate");
        if (rc < 0) break;
        const Plumb__GenerateRep *rep = c->rep->generated;
        if (rep->adapter_version != g->version) {
            rc = pl_fail(PL_EPROTO,
                         "stale rollout: actor worker %d generated with adapter version %llu, "
                         "asked for %llu",
                         c->worker, (unsigned long long)rep->adapter_version,
                         (unsigned long long)g->version);
            break;
        }
        WireSeqs s;
        rc = wire_get_seqs(rep->seqs, &r->lim, "generate.seqs", &s);
        if (rc < 0) {
            rc = req_bad_reply(r, c, rc);
            break;
        }
        if (s.B != g->prompts[w].B * G) {
            rc = pl_fail(PL_EPROTO, "actor worker %d returned %d sequences for %d prompts x %d",
                         c->worker, s.B, g->prompts[w].B, G);
            wire_seqs_free(&s);
            break;
        }
        float *lp = NULL;
        rc = req_f32(r, c, rep->logprobs, s.N, "generate.logprobs", &lp);
        long base = out->seqs.N;
        for (int b = 0; rc == 0 && b < s.B; b++) {
            int o = s.offsets[b], len = s.offsets[b + 1] - o, np = 0;
            while (np < len && !s.mask[o + np])
                np++;
            /* a sample must continue the prompt it was asked for, by at most
             * max_new tokens: anything else is a bad reply, not a rollout */
            const Packed *q = &g->prompts[w];
            int pb = b / G, qo = q->offsets[pb], qn = q->offsets[pb + 1] - qo;
            if (np != qn || memcmp(s.tokens + o, q->tokens + qo, sizeof(int) * (size_t)qn) ||
                len - np > max_new) {
                rc = req_bad_reply(r, c,
                                   pl_fail(PL_EPROTO, "generate.seqs: sequence %d does not "
                                                      "continue prompt %d as it was sent (%d "
                                                      "prompt tokens of %d, %d new of at most %d)",
                                           b, pb, np, qn, len - np, max_new));
                break;
            }
            rc = packed_add(&out->seqs, s.tokens + o, np, s.tokens + o + np, len - np);
        }
        if (rc == 0) {
            float *l = realloc(out->lp, sizeof(float) * (out->seqs.N ? out->seqs.N : 1));
            if (!l)
                rc = pl_fail(PL_ENOMEM, "rollout log-probs");
            else {
                out->lp = l;
                memcpy(out->lp + base, lp, sizeof(float) * s.N);
            }
        }
        free(lp);
        wire_seqs_free(&s);
    }
    out->n_prompts = g->n;
    gen_calls_free(g);
    if (rc < 0) rollout_free(out);
    return rc;
}

int rollout_generate(Run *r, const Records *recs, const long *which, int n, int G, float temp,
                     int max_new, uint64_t seed, Rollout *out) {
    GenCalls g;
    memset(out, 0, sizeof *out);
    PL_TRY(rollout_prepare(r, recs, which, n, G, temp, max_new, seed, 0, &g));
    int rc = req_call(r, g.calls, g.nw);
    if (rc < 0) {
        gen_calls_free(&g);
        return rc;
    }
    return rollout_collect(r, &g, out);
}

char *rollout_response_text(Run *r, const Packed *p, int b) {
    int o = p->offsets[b], e = p->offsets[b + 1], s = o;
    while (s < e && !p->mask[s])
        s++;
    if (e > s && p->tokens[e - 1] == r->eos) e--;
    char *text = NULL;
    if (tok_decode(r->tok, p->tokens + s, e - s, 1, &text) < 0) return strdup("");
    return text;
}

void rollout_metrics(Run *r, const Packed *p, const float *scores) {
    double s = 0, s2 = 0, len = 0, eos = 0;
    for (int b = 0; b < p->B; b++) {
        s += scores[b], s2 += (double)scores[b] * scores[b];
        int n = 0;
        for (int t = p->offsets[b]; t < p->offsets[b + 1]; t++)
            n += p->mask[t];
        len += n;
        eos += n > 0 && p->tokens[p->offsets[b + 1] - 1] == r->eos;
    }
    double B = p->B ? p->B : 1, mean = s / B;
    stats_put(&r->stats, "rollout/reward_mean", mean);
    stats_put(&r->stats, "rollout/reward_std", sqrt(fmax(0, s2 / B - mean * mean)));
    stats_put(&r->stats, "rollout/response_len", len / B);
    stats_put(&r->stats, "rollout/eos_frac", eos / B);
    r->tokens += p->N;
}
