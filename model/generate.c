/* generate.c: batched sampling over a KV cache (see generate.h). */
#include "generate.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

static int is_eos(const ModelConfig *c, int id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return 0;
}

void gen_result_free(GenResult *r) {
    free(r->ids);
    free(r->logprobs);
    memset(r, 0, sizeof *r);
}

int gen_generate(Model *m, const int *const *prompts, const int *prompt_lens,
                 int n_prompts, const GenParams *p, GenResult *results) {
    const ModelConfig *c = &m->base->cfg;
    int V = c->vocab_size;
    PL_TRY(sampler_validate(&p->sampler));
    if (n_prompts <= 0) return pl_fail(PL_EINVAL, "generate: no prompts");
    if (p->max_new_tokens < 0) return pl_fail(PL_EINVAL, "generate: max_new_tokens < 0");
    int maxlen = 0;
    for (int i = 0; i < n_prompts; i++) {
        int len = prompt_lens[i];
        if (len <= 0) return pl_fail(PL_EINVAL, "generate: prompt %d is empty", i);
        if (len >= c->max_seq_len)
            return pl_fail(PL_ERANGE,
                           "generate: prompt %d has %d tokens; the context is %d, leaving no room to generate",
                           i, len, c->max_seq_len);
        for (int t = 0; t < len; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= V)
                return pl_fail(PL_ERANGE, "generate: prompt %d token %d is %d, outside the vocabulary [0, %d)",
                               i, t, prompts[i][t], V);
        if (len > maxlen) maxlen = len;
    }
    memset(results, 0, sizeof(GenResult) * (size_t)n_prompts);
    int maxT = maxlen + p->max_new_tokens;
    if (maxT > c->max_seq_len) maxT = c->max_seq_len;

    KVCache *kc = NULL;
    float *logits = malloc(sizeof(float) * (size_t)n_prompts * V);
    Rng *rngs = malloc(sizeof(Rng) * (size_t)n_prompts);
    int *slots = malloc(sizeof(int) * (size_t)n_prompts);
    int *next = malloc(sizeof(int) * (size_t)n_prompts);
    int nthreads = omp_get_max_threads();
    size_t scratch_size = sampler_scratch_size(V);
    char *scratch = malloc(scratch_size * (size_t)nthreads);
    int *sampled = malloc(sizeof(int) * (size_t)n_prompts);
    float *sampled_lp = malloc(sizeof(float) * (size_t)n_prompts);
    int rc = 0;
    if (!logits || !rngs || !slots || !next || !scratch || !sampled || !sampled_lp) {
        rc = pl_fail(PL_ENOMEM, "generate: out of memory");
        goto done;
    }
    rc = kv_new(&kc, m, n_prompts, maxT);
    if (rc < 0) goto done;
    for (int i = 0; i < n_prompts; i++) {
        slots[i] = i;
        rng_seed2(&rngs[i], p->seed, (unsigned long long)(p->first_index + i));
        int cap = p->max_new_tokens > 0 ? p->max_new_tokens : 1;
        results[i].ids = malloc(sizeof(int) * (size_t)cap);
        results[i].logprobs = malloc(sizeof(float) * (size_t)cap);
        if (!results[i].ids || !results[i].logprobs) {
            rc = pl_fail(PL_ENOMEM, "generate: out of memory");
            goto done;
        }
    }
    if (p->max_new_tokens == 0) goto done;
    rc = model_prefill(m, kc, slots, prompts, prompt_lens, n_prompts, logits);
    if (rc < 0) goto done;

    /* slots[0..n_active) are the live sequences, logits rows in that order */
    int n_active = n_prompts;
    while (n_active > 0) {
        /* rows sample in parallel: each has its own Rng, so the result does
           not depend on the thread count */
#pragma omp parallel for schedule(static) if (n_active > 1)
        for (int j = 0; j < n_active; j++) {
            void *scr = scratch + scratch_size * (size_t)omp_get_thread_num();
            sampled[j] = sampler_sample(logits + (size_t)j * V, V, &p->sampler, &rngs[slots[j]],
                                        &sampled_lp[j], scr);
        }
        int kept = 0;
        for (int j = 0; j < n_active; j++) {
            int s = slots[j];
            GenResult *r = &results[s];
            int id = sampled[j];
            r->ids[r->n] = id;
            r->logprobs[r->n] = sampled_lp[j];
            r->n++;
            int eos = !p->ignore_eos && is_eos(c, id);
            r->stopped_on_eos = eos;
            if (eos || r->n >= p->max_new_tokens || kc->len[s] + 1 >= maxT) continue;
            slots[kept] = s;
            next[kept] = id;
            kept++;
        }
        n_active = kept;
        if (n_active == 0) break;
        rc = model_decode(m, kc, slots, next, n_active, logits);
        if (rc < 0) goto done;
    }
done:
    if (rc < 0)
        for (int i = 0; i < n_prompts; i++) gen_result_free(&results[i]);
    kv_free(&kc);
    free(logits);
    free(rngs);
    free(slots);
    free(next);
    free(scratch);
    free(sampled);
    free(sampled_lp);
    return rc;
}
