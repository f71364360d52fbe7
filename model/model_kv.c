/* model_kv.c: the KV cache, prefill and the decode step (model.h).
 *
 * Prefill runs the prompts as one packed forward and copies each layer's
 * keys and values into the cache slots; a decode step runs one row per
 * sequence through the layers, appending its key and value, with
 * attention over the cache. All of it on the model's device: the host
 * keeps only each slot's length and stages a step's ids, positions and
 * slots. */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/model_impl.h"

/* Decode scratch per row: x, xn, q, k, v, att (QD), gate, up, h, u. */
static size_t decode_scratch_floats(const ModelConfig *c, int R) {
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    return 2 * (size_t)c->dim + 2 * QD + 2 * KD + 3 * (size_t)c->hidden_dim + (size_t)R;
}

#define KV_MAX_RANK 256

int kv_new(KVCache **out, const Model *m, int B, int maxT) {
    *out = NULL;
    const ModelConfig *c = &m->base->cfg;
    if (B <= 0 || maxT <= 0) return pl_fail(PL_EINVAL, "kv cache: bad size B=%d T=%d", B, maxT);
    KVCache *kc = calloc(1, sizeof *kc);
    PL_CHECK_ALLOC(kc);
    Device *d = m->dev;
    kc->dev = d;
    kc->L = c->n_layers;
    kc->B = B;
    kc->maxT = maxT;
    kc->KD = c->n_kv_heads * c->head_dim;
    kc->V = c->vocab_size;
    size_t n = (size_t)kc->L * B * maxT * kc->KD;
    kc->k = d->be->alloc(d, sizeof(float) * n);
    kc->v = d->be->alloc(d, sizeof(float) * n);
    kc->d_ids = d->be->alloc(d, sizeof(int) * (size_t)B);
    kc->d_pos = d->be->alloc(d, sizeof(int) * (size_t)B);
    kc->d_slots = d->be->alloc(d, sizeof(int) * (size_t)B);
    kc->d_lens = d->be->alloc(d, sizeof(int) * (size_t)B);
    kc->scratch = d->be->alloc(d, sizeof(float) * (size_t)B * decode_scratch_floats(c, KV_MAX_RANK));
    kc->logits = d->be->alloc(d, sizeof(float) * (size_t)B * kc->V);
    kc->len = calloc((size_t)B, sizeof(int));
    int rc = dev_sync(d);
    if (rc == 0 && !kc->len) rc = pl_fail(PL_ENOMEM, "out of memory");
    if (rc < 0) {
        kv_free(&kc);
        return pl_wrap(rc, "kv cache of %zu floats", 2 * n);
    }
    *out = kc;
    return 0;
}

void kv_free(KVCache **cp) {
    KVCache *c = *cp;
    if (!c) return;
    Device *d = c->dev;
    void *bufs[] = {c->k,       c->v,      c->d_ids,   c->d_pos,
                    c->d_slots, c->d_lens, c->scratch, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        d->be->free(d, bufs[i]);
    free(c->len);
    free(c);
    *cp = NULL;
}

static float *kv_row(const KVCache *c, float *base, int l, int slot, int t) {
    return base + (((size_t)l * c->B + slot) * c->maxT + t) * c->KD;
}

/* The logits of n rows of x (n, C) into the host's logits (n, V), through
 * the cache's device buffer. */
static void lm_head(const Model *m, KVCache *c, const float *x, int n, float *logits) {
    Device *d = m->dev;
    const ModelConfig *cfg = &m->base->cfg;
    model_matmul(m, cfg->n_layers * LORA_NT, c->logits, x, m->dv.w->lm_head, NULL, n, cfg->dim,
                 c->V, 0);
    d->be->download(d, logits, c->logits, sizeof(float) * (size_t)n * c->V);
}

int model_prefill(Model *m, KVCache *c, const int *slots, const int *const *prompts,
                  const int *lens, int n, float *logits) {
    const ModelConfig *cfg = &m->base->cfg;
    int N = 0;
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= c->B)
            return pl_fail(PL_EINVAL, "prefill: bad slot %d", slots[i]);
        if (lens[i] > c->maxT)
            return pl_fail(PL_ERANGE, "prompt %d has %d tokens, more than the cache holds (%d)", i,
                           lens[i], c->maxT);
        N += lens[i];
    }
    int *tokens = malloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    int *cu = malloc(sizeof(int) * (size_t)(n + 1));
    if (!tokens || !cu) {
        free(tokens);
        free(cu);
        return pl_fail(PL_ENOMEM, "prefill: out of memory");
    }
    cu[0] = 0;
    for (int i = 0; i < n; i++) {
        memcpy(tokens + cu[i], prompts[i], sizeof(int) * (size_t)lens[i]);
        cu[i + 1] = cu[i] + lens[i];
    }
    Batch b = {.tokens = tokens, .cu_seqlens = cu, .B = n};
    int rc = model_forward(m, &b, NULL, NULL, NULL, NULL);
    if (rc == 0) {
        Device *d = m->dev;
        /* the stored activations are those of the last forward: this one */
        const float *ks_all = model_layer_k(m), *vs_all = model_layer_v(m);
        int KD = c->KD;
        for (int l = 0; l < cfg->n_layers; l++) {
            for (int i = 0; i < n; i++) {
                const float *ks = ks_all + ((size_t)l * N + cu[i]) * KD;
                const float *vs = vs_all + ((size_t)l * N + cu[i]) * KD;
                size_t bytes = sizeof(float) * (size_t)lens[i] * KD;
                d->be->copy(d, kv_row(c, c->k, l, slots[i], 0), ks, bytes);
                d->be->copy(d, kv_row(c, c->v, l, slots[i], 0), vs, bytes);
            }
        }
        for (int i = 0; i < n; i++)
            lm_head(m, c, model_final_hidden(m) + (size_t)(cu[i + 1] - 1) * cfg->dim, 1,
                    logits + (size_t)i * cfg->vocab_size);
        rc = dev_sync(d);
        /* the slots hold their prompts only once the device says so */
        for (int i = 0; rc == 0 && i < n; i++) c->len[slots[i]] = lens[i];
    }
    free(tokens);
    free(cu);
    return rc;
}

/* Model.packed (ModelOptions.decode_copy): the frozen base's projections
 * and LM head in the few-row layout, made once, at the first decode, where
 * the backend has it. A
 * decode step reads every weight for a few rows, and the layout turns the
 * 16 row streams of a block into one (about twice the bandwidth here);
 * the sums are the same. A model that trains its base changes its
 * weights every step and reads them as they are; without the memory for
 * the copies, decode reads them as they are too. */
static void pack_for_decode(Model *m) {
    const Backend *be = m->dev->be;
    if (!m->decode_copy || m->packed_w || !be->matmul_pack || m->train_base) return;
    const ModelConfig *c = &m->base->cfg;
    const Weights *w = m->dv.w;
    const int nk = c->n_layers * LORA_NT + 1;
    const float **pw = calloc(2 * (size_t)nk, sizeof *pw);
    int *ic = malloc(sizeof(int) * 2 * (size_t)nk), *oc = ic ? ic + nk : NULL;
    if (!pw || !ic) goto fail;
    for (int k = 0; k < nk - 1; k++) {
        pw[nk + k] = lora_target_weight(&w->layers[k / LORA_NT], k % LORA_NT);
        lora_target_dims(c, k % LORA_NT, &ic[k], &oc[k]);
    }
    pw[2 * nk - 1] = w->lm_head, ic[nk - 1] = c->dim, oc[nk - 1] = c->vocab_size;
    size_t total = 0;
    for (int k = 0; k < nk; k++) total += matmul_packed_floats(ic[k], oc[k]);
    float *buf = malloc(sizeof(float) * total);
    if (!buf) goto fail;
    float *dst = buf;
    for (int k = 0; k < nk; k++) {
        be->matmul_pack(m->dev, dst, pw[nk + k], ic[k], oc[k]);
        pw[k] = dst;
        dst += matmul_packed_floats(ic[k], oc[k]);
    }
    m->packed = buf;
    m->packed_w = pw;
    free(ic);
    return;
fail:
    free(pw);
    free(ic);
}

int model_decode(Model *m, KVCache *c, const int *slots, const int *ids, int n, float *logits) {
    const ModelConfig *cfg = &m->base->cfg;
    const Weights *w = m->dv.w;
    Device *d = m->dev;
    const Backend *be = d->be;
    int C = cfg->dim, H = cfg->hidden_dim, NH = cfg->n_heads, NKV = cfg->n_kv_heads;
    int HS = cfg->head_dim, QD = NH * HS, KD = NKV * HS, V = cfg->vocab_size;
    int R = m->lora ? m->lora->cfg.rank : 0;
    if (R > KV_MAX_RANK)
        return pl_fail(PL_ENOTSUP, "decode: LoRA rank %d above %d", R, KV_MAX_RANK);
    if (n > c->B) return pl_fail(PL_EINVAL, "decode: %d rows for a cache of %d", n, c->B);
    int pos[n], lens[n];
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V)
            return pl_fail(PL_ERANGE, "decode: token %d outside the vocabulary [0, %d)", ids[i], V);
        if (slots[i] < 0 || slots[i] >= c->B)
            return pl_fail(PL_EINVAL, "decode: bad slot %d", slots[i]);
        if (c->len[slots[i]] >= c->maxT || c->len[slots[i]] >= cfg->max_seq_len)
            return pl_fail(PL_ERANGE, "decode: sequence in slot %d is full (%d positions)",
                           slots[i], c->len[slots[i]]);
        pos[i] = c->len[slots[i]];
        lens[i] = pos[i] + 1;
    }
    model_params_up(m);
    pack_for_decode(m);
    be->upload(d, c->d_ids, ids, sizeof(int) * (size_t)n);
    be->upload(d, c->d_pos, pos, sizeof(int) * (size_t)n);
    be->upload(d, c->d_slots, slots, sizeof(int) * (size_t)n);
    be->upload(d, c->d_lens, lens, sizeof(int) * (size_t)n);
    float *x = c->scratch, *xn = x + (size_t)n * C, *q = xn + (size_t)n * C;
    float *k = q + (size_t)n * QD, *v = k + (size_t)n * KD, *att = v + (size_t)n * KD;
    float *gate = att + (size_t)n * QD, *up = gate + (size_t)n * H, *h = up + (size_t)n * H;
    float *u = h + (size_t)n * H;
    const RopeFreq rf = {m->rope_inv, m->rope_scale};
    be->embedding_forward(d, x, c->d_ids, w->embed, n, C);
    for (int l = 0; l < cfg->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
#define LIN(tg, out, in, W, bias, IC, OC, acc)                                                     \
    model_linear_forward(m, l, tg, out, in, W, bias, u, n, IC, OC, acc)
        be->rmsnorm_forward(d, xn, NULL, x, lw->attn_norm, n, C, cfg->norm_eps);
        LIN(LORA_Q, q, xn, lw->wq, lw->bq, C, QD, 0);
        LIN(LORA_K, k, xn, lw->wk, lw->bk, C, KD, 0);
        LIN(LORA_V, v, xn, lw->wv, lw->bv, C, KD, 0);
        if (cfg->qk_norm) { /* in place: each row's sum is taken before it is written */
            be->rmsnorm_forward(d, q, NULL, q, lw->q_norm, n * NH, HS, cfg->norm_eps);
            be->rmsnorm_forward(d, k, NULL, k, lw->k_norm, n * NKV, HS, cfg->norm_eps);
        }
        be->rope_forward(d, q, c->d_pos, n, NH, HS, rf, cfg->rope_interleaved);
        be->rope_forward(d, k, c->d_pos, n, NKV, HS, rf, cfg->rope_interleaved);
        for (int i = 0; i < n; i++) {
            be->copy(d, kv_row(c, c->k, l, slots[i], pos[i]), k + (size_t)i * KD,
                     sizeof(float) * KD);
            be->copy(d, kv_row(c, c->v, l, slots[i], pos[i]), v + (size_t)i * KD,
                     sizeof(float) * KD);
        }
        be->attention_decode(d, att, q, kv_row(c, c->k, l, 0, 0), kv_row(c, c->v, l, 0, 0),
                             c->d_slots, c->d_lens, n, NH, NKV, HS, c->maxT);
        LIN(LORA_O, x, att, lw->wo, NULL, QD, C, 1);
        be->rmsnorm_forward(d, xn, NULL, x, lw->mlp_norm, n, C, cfg->norm_eps);
        LIN(LORA_GATE, gate, xn, lw->w_gate, NULL, C, H, 0);
        LIN(LORA_UP, up, xn, lw->w_up, NULL, C, H, 0);
        be->swiglu_forward(d, h, gate, up, (size_t)n * H);
        LIN(LORA_DOWN, x, h, lw->w_down, NULL, H, C, 1);
#undef LIN
    }
    be->rmsnorm_forward(d, xn, NULL, x, w->final_norm, n, C, cfg->norm_eps);
    lm_head(m, c, xn, n, logits);
    int rc = dev_sync(d);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i++)
        c->len[slots[i]] = pos[i] + 1;
    return 0;
}
