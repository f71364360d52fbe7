/* weights.c: the tensor table of a config, binding Weights to storage, and
 * random initialization.
 *
 * Dimension letters: V vocab, C channels, H MLP hidden, L layers, NH query
 * heads, NKV key/value heads, HS head size. */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"

/* ---------------------------------------------------------------- table */

static void add(ParamTable *t, ParamKind kind, int layer, const char *name, int rows,
                int cols) {
    Param *p = &t->p[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->layer = layer;
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 0;
    p->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    p->offset = t->total;
    t->total += p->numel;
}

int param_table_build(ParamTable *t, const ModelConfig *c) {
    memset(t, 0, sizeof *t);
    PL_TRY(config_validate(c));
    int C = c->dim, H = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    int Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    int per_layer = 9 + (c->qkv_bias ? 3 : 0) + (c->qk_norm ? 2 : 0);
    int n = 1 + L * per_layer + 1 + (c->tie_embeddings ? 0 : 1);
    t->p = calloc((size_t)n, sizeof *t->p);
    PL_CHECK_ALLOC(t->p);

    char name[96];
    add(t, P_EMBED, -1, "model.embed_tokens.weight", V, C);
    for (int l = 0; l < L; l++) {
#define LAYER(KIND, SUFFIX, R, CO)                                              \
    do {                                                                        \
        snprintf(name, sizeof name, "model.layers.%d.%s", l, SUFFIX);           \
        add(t, KIND, l, name, R, CO);                                           \
    } while (0)
        LAYER(P_ATTN_NORM, "input_layernorm.weight", C, 0);
        LAYER(P_WQ, "self_attn.q_proj.weight", Q, C);
        LAYER(P_WK, "self_attn.k_proj.weight", KV, C);
        LAYER(P_WV, "self_attn.v_proj.weight", KV, C);
        if (c->qkv_bias) {
            LAYER(P_BQ, "self_attn.q_proj.bias", Q, 0);
            LAYER(P_BK, "self_attn.k_proj.bias", KV, 0);
            LAYER(P_BV, "self_attn.v_proj.bias", KV, 0);
        }
        if (c->qk_norm) {
            LAYER(P_QNORM, "self_attn.q_norm.weight", c->head_dim, 0);
            LAYER(P_KNORM, "self_attn.k_norm.weight", c->head_dim, 0);
        }
        LAYER(P_WO, "self_attn.o_proj.weight", C, Q);
        LAYER(P_MLP_NORM, "post_attention_layernorm.weight", C, 0);
        LAYER(P_GATE, "mlp.gate_proj.weight", H, C);
        LAYER(P_UP, "mlp.up_proj.weight", H, C);
        LAYER(P_DOWN, "mlp.down_proj.weight", C, H);
#undef LAYER
    }
    add(t, P_FINAL_NORM, -1, "model.norm.weight", C, 0);
    if (!c->tie_embeddings) add(t, P_LM_HEAD, -1, "lm_head.weight", V, C);
    return 0;
}

void param_table_free(ParamTable *t) {
    if (!t) return;
    free(t->p);
    memset(t, 0, sizeof *t);
}

const Param *param_table_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->p[i].name, name) == 0) return &t->p[i];
    return NULL;
}

/* --------------------------------------------------------------- weights */

int weights_init(Weights *w, int n_layers) {
    memset(w, 0, sizeof *w);
    if (n_layers <= 0) return pl_fail(PL_EINVAL, "weights_init: %d layers", n_layers);
    w->layers = calloc((size_t)n_layers, sizeof *w->layers);
    PL_CHECK_ALLOC(w->layers);
    w->n_layers = n_layers;
    return 0;
}

void weights_free(Weights *w) {
    if (!w) return;
    free(w->layers);
    memset(w, 0, sizeof *w);
}

float **weights_slot(Weights *w, const Param *p) {
    switch (p->kind) {
    case P_EMBED: return &w->embed;
    case P_FINAL_NORM: return &w->final_norm;
    case P_LM_HEAD: return &w->lm_head;
    default: break;
    }
    if (p->layer < 0 || p->layer >= w->n_layers) return NULL;
    LayerWeights *lw = &w->layers[p->layer];
    switch (p->kind) {
    case P_ATTN_NORM: return &lw->attn_norm;
    case P_WQ: return &lw->wq;
    case P_WK: return &lw->wk;
    case P_WV: return &lw->wv;
    case P_BQ: return &lw->bq;
    case P_BK: return &lw->bk;
    case P_BV: return &lw->bv;
    case P_QNORM: return &lw->q_norm;
    case P_KNORM: return &lw->k_norm;
    case P_WO: return &lw->wo;
    case P_MLP_NORM: return &lw->mlp_norm;
    case P_GATE: return &lw->w_gate;
    case P_UP: return &lw->w_up;
    case P_DOWN: return &lw->w_down;
    default: return NULL;
    }
}

void weights_bind_flat(Weights *w, const ParamTable *t, float *flat, int tie_embeddings) {
    for (int i = 0; i < t->n; i++) {
        float **slot = weights_slot(w, &t->p[i]);
        if (slot) *slot = flat + t->p[i].offset;
    }
    if (tie_embeddings) w->lm_head = w->embed;
}

float *weights_alloc(size_t n) {
    const size_t huge = (size_t)2 << 20;
    size_t bytes = n * sizeof(float);
    if (bytes < huge) return malloc(bytes > 0 ? bytes : 1);
    bytes = (bytes + huge - 1) / huge * huge;
    float *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, bytes, MADV_HUGEPAGE); /* a hint: failure is harmless */
#endif
    return p;
}

/* ------------------------------------------------------------ random base */

int base_new_random(Base **out, const ModelConfig *c, unsigned long long seed, float std) {
    *out = NULL;
    Base *b = calloc(1, sizeof *b);
    PL_CHECK_ALLOC(b);
    b->cfg = *c;
    int rc = param_table_build(&b->table, c);
    if (rc < 0) goto fail;
    rc = weights_init(&b->w, c->n_layers);
    if (rc < 0) goto fail;
    b->flat = weights_alloc(b->table.total);
    if (!b->flat) {
        rc = pl_fail(PL_ENOMEM, "base_new_random: out of memory for %zu floats",
                     b->table.total);
        goto fail;
    }
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < b->table.n; i++) {
        const Param *p = &b->table.p[i];
        float *x = b->flat + p->offset;
        int is_norm = p->kind == P_ATTN_NORM || p->kind == P_MLP_NORM ||
                      p->kind == P_FINAL_NORM || p->kind == P_QNORM || p->kind == P_KNORM;
        for (size_t j = 0; j < p->numel; j++) x[j] = is_norm ? 1.0f : rng_normal(&rng) * std;
    }
    weights_bind_flat(&b->w, &b->table, b->flat, c->tie_embeddings);
    *out = b;
    return 0;
fail:
    base_free(&b);
    return rc;
}
