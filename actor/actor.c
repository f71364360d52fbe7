/* actor.c: the actor's own requests, generate and adapter get / set, and
 * its table (actor.h).
 *
 * Dimension letters: B prompts, n samples per prompt, N packed tokens. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor.h"
#include "actor/bodies.h"
#include "common/err.h"
#include "model/generate.h"
#include "worker/infer.h"

/* B * n sequences in prompt-major order: sample j of prompt i is sequence
 * i * n + j and draws from Rng stream first_index + i * n + j, so that a
 * split of the prompts across replicas (each given its first_index) yields
 * the same tokens. Generation runs r->micro_batch sequences at a time. */
static int generate(Role *r, const Plumb__Envelope *e, WireArena *a, Plumb__Envelope *rep) {
    const Plumb__GenerateReq *g = e->generate;
    WireSeqs p;
    PL_TRY(wire_get_seqs(g->prompts, &r->limits, "generate.prompts", &p));
    SamplerParams sp = {.temperature = g->temperature, .top_k = g->top_k,
                        .top_p = g->top_p > 0 ? g->top_p : 1.0f};
    long total = (long)p.B * (g->n > 0 ? g->n : 1);
    int rc = 0;
    if (g->n < 1 || g->max_new_tokens < 1)
        rc = pl_fail(PL_EPROTO, "generate: n %d and max_new_tokens %d must be >= 1", g->n,
                     g->max_new_tokens);
    else if (!isfinite(g->temperature) || sampler_validate(&sp) < 0)
        rc = pl_fail(PL_EPROTO, "generate: temperature %g, top_k %d, top_p %g out of range",
                     g->temperature, g->top_k, g->top_p);
    else if (g->first_index < 0 || total > INT_MAX || g->first_index > INT_MAX - total)
        rc = pl_fail(PL_EPROTO, "generate: first_index %lld with %ld sequences is out of range",
                     (long long)g->first_index, total);
    if (rc < 0) {
        wire_seqs_free(&p);
        return rc;
    }
    int n = g->n, S = (int)total;
    const int **prompts = malloc(sizeof(int *) * (S ? S : 1));
    int *lens = malloc(sizeof(int) * (S ? S : 1));
    GenResult *res = calloc((size_t)(S ? S : 1), sizeof *res);
    if (!prompts || !lens || !res) {
        rc = pl_fail(PL_ENOMEM, "generate: out of memory for %d sequences", S);
        goto done;
    }
    for (int i = 0; i < p.B; i++)
        for (int k = 0; k < n; k++) {
            prompts[i * n + k] = p.tokens + p.offsets[i];
            lens[i * n + k] = p.offsets[i + 1] - p.offsets[i];
        }
    int mb = r->micro_batch > 0 ? r->micro_batch : (S ? S : 1);
    for (int s0 = 0; rc == 0 && s0 < S; s0 += mb) {
        int cnt = s0 + mb < S ? mb : S - s0;
        GenParams gp = {.max_new_tokens = g->max_new_tokens, .sampler = sp, .seed = g->seed,
                        .ignore_eos = 0, .first_index = (int)g->first_index + s0};
        rc = gen_generate(r->model, prompts + s0, lens + s0, cnt, &gp, res + s0);
        if (rc < 0) {
            memset(res + s0, 0, sizeof *res * cnt);
            rc = pl_wrap(rc, "generate: sequences %d..%d", s0, s0 + cnt - 1);
        }
    }
    if (rc < 0) goto done;
    long N = 0;
    for (int s = 0; s < S; s++) N += lens[s] + res[s].n;
    if (N > INT_MAX) {
        rc = pl_fail(PL_ERANGE, "generate: %ld tokens do not fit one message", N);
        goto done;
    }
    size_t nn = (size_t)(N ? N : 1);
    int *tok = wire_alloc(a, sizeof(int) * nn), *off = wire_alloc(a, sizeof(int) * (S + 1));
    unsigned char *mask = wire_alloc(a, nn), *eos = wire_alloc(a, (size_t)(S ? S : 1));
    float *lp = wire_alloc(a, sizeof(float) * nn);
    Plumb__GenerateRep *m = wire_alloc(a, sizeof *m);
    if (!tok || !off || !mask || !eos || !lp || !m) {
        rc = pl_fail(PL_ENOMEM, "generate: out of memory for the reply");
        goto done;
    }
    int pos = 0;
    for (int s = 0; s < S; s++) {
        off[s] = pos;
        memcpy(tok + pos, prompts[s], sizeof(int) * lens[s]);
        pos += lens[s]; /* mask and log-probs of the prompt stay 0 */
        memcpy(tok + pos, res[s].ids, sizeof(int) * res[s].n);
        memcpy(lp + pos, res[s].logprobs, sizeof(float) * res[s].n);
        memset(mask + pos, 1, (size_t)res[s].n);
        pos += res[s].n;
        eos[s] = res[s].stopped_on_eos ? 1 : 0;
    }
    off[S] = pos;
    plumb__generate_rep__init(m);
    m->seqs = wire_seqs(a, tok, off, mask, S);
    m->logprobs = wire_f32(a, lp, (int)N);
    m->eos = wire_u8(a, eos, S);
    m->adapter_version = r->adapter_version;
    if (!m->seqs || !m->logprobs || !m->eos) {
        rc = pl_fail(PL_ENOMEM, "generate: out of memory for the reply");
        goto done;
    }
    rep->body_case = PLUMB__ENVELOPE__BODY_GENERATED;
    rep->generated = m;
done:
    for (int s = 0; res && s < S; s++) gen_result_free(&res[s]);
    free(res);
    free(prompts);
    free(lens);
    wire_seqs_free(&p);
    return rc;
}

/* get: the adapter's flat buffer and version. set: installs data (checked
 * against the adapter's size) at the given version. */
static int adapter(Role *r, const Plumb__Envelope *e, WireArena *a, Plumb__Envelope *rep) {
    const Plumb__AdapterMsg *q = e->adapter;
    Lora *l = r->model->lora;
    if (!l) return pl_fail(PL_EPROTO, "adapter: role %s has no adapter (lora_rank 0)", "actor");
    if (l->n > INT_MAX) return pl_fail(PL_ERANGE, "adapter: %zu floats do not fit one tensor", l->n);
    if (q->get) {
        Plumb__AdapterMsg *m = wire_alloc(a, sizeof *m);
        float *copy = wire_alloc(a, sizeof(float) * l->n);
        if (!m || !copy) return pl_fail(PL_ENOMEM, "adapter: out of memory");
        memcpy(copy, l->mem, sizeof(float) * l->n);
        plumb__adapter_msg__init(m);
        m->version = r->adapter_version;
        m->data = wire_f32(a, copy, (int)l->n);
        if (!m->data) return pl_fail(PL_ENOMEM, "adapter: out of memory");
        rep->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
        rep->adapter = m;
        return 0;
    }
    float *x;
    PL_TRY(wire_get_f32(q->data, (long)l->n, 1, "adapter.data", &x));
    memcpy(l->mem, x, sizeof(float) * l->n);
    free(x);
    r->adapter_version = q->version;
    return role_reply_ok(a, rep);
}

static const RoleRequest requests[] = {
    {PLUMB__ENVELOPE__BODY_GENERATE, generate},
    {PLUMB__ENVELOPE__BODY_LOGPROBS, role_on_logprobs},
    {PLUMB__ENVELOPE__BODY_ADAPTER, adapter},
    {PLUMB__ENVELOPE__BODY_CHECKPOINT, role_on_checkpoint_hf},
};
static const TrainBody *const bodies[] = {&actor_sft, &actor_ppo,   &actor_grpo, &actor_dpo,
                                          &actor_orpo, &actor_simpo, &actor_kto};

const RoleDesc actor_role = {.kind = ROLE_ACTOR, .requests = requests, .n_requests = 4,
                             .bodies = bodies, .n_bodies = 7};
