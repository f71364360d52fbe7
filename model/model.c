/* model.c: forward and backward of the decoder over a packed batch.
 *
 * Dimension letters (kernels.h): N tokens, B sequences, C channels,
 * H MLP hidden, NH/NKV heads, HS head size, QD = NH*HS, KD = NKV*HS,
 * V vocabulary, L layers, R LoRA rank.
 *
 * One layer:
 *   xn1 = rmsnorm(x)            q,k,v = lin(xn1) (+bias, +LoRA), rope(q,k)
 *   att = attention(q,k,v)      mid = x + lin_o(att)
 *   xn2 = rmsnorm(mid)          h = silu(lin_g(xn2)) * lin_u(xn2)
 *   x'  = mid + lin_d(h)
 * then xf = rmsnorm(x_L), logits = xf @ lm_head^T, and the scalar head
 * values = xf @ head_w + head_b. The logits of a batch are kept for
 * backward when they fit in Model.logits_budget floats (one GEMM each way);
 * larger batches go in chunks of LOGIT_CHUNK rows and backward recomputes
 * them. Either way no softmax is stored. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "kernels/kernels.h"

#define LOGIT_CHUNK 256                /* rows of logits per chunk when not kept */
#define LOGITS_KEEP ((size_t)64 << 20) /* default Model.logits_budget (256 MiB) */

struct Acts {
    int capN;           /* rows the buffers hold                        */
    int *pos;           /* (N) position of each row in its sequence     */
    int *no_tgt;        /* (N) all -1: targets when the batch has none  */
    float *res;         /* (L+1, N, C) residual stream at layer inputs  */
    float *xn1, *rstd1; /* (L, N, C), (L, N)                            */
    float *q;           /* (L, N, QD) after RoPE                        */
    float *k, *v;       /* (L, N, KD) after RoPE                        */
    float *att, *lse;   /* (L, N, QD), (L, N, NH)                       */
    float *mid;         /* (L, N, C) residual after attention           */
    float *xn2, *rstd2; /* (L, N, C), (L, N)                            */
    float *gate, *up;   /* (L, N, H)                                    */
    float *hmid;        /* (L, N, H) silu(gate) * up                    */
    float *lora_u;      /* (L, NT, N, R) scale * x A^T                  */
    float *xf, *rstdf;  /* (N, C), (N)                                  */
    float *out_lse;     /* (N) logsumexp of each logits row             */
    float *out_ent;     /* (N) entropy of each row                      */
    float *logits;      /* (N, V) when kept, else (CHUNK, V)            */
    int keep_logits;    /* the buffer holds every row                   */
    int logits_valid;   /* it holds the last forward's logits           */
    /* backward scratch */
    float *dres, *dxn;       /* (N, C)                                       */
    float *dq, *datt;        /* (N, QD)                                      */
    float *dk, *dv;          /* (N, KD)                                      */
    float *dgate, *dup, *dh; /* (N, H)                                  */
    float *du;               /* (N, R)                                       */
    size_t bytes;
};

/* ------------------------------------------------------------ helpers */

static void acts_free(Acts *a) {
    if (!a) return;
    free(a->pos);
    free(a->no_tgt);
    float **bufs[] = {&a->res,     &a->xn1,    &a->rstd1,  &a->q,   &a->k,     &a->v,
                      &a->att,     &a->lse,    &a->mid,    &a->xn2, &a->rstd2, &a->gate,
                      &a->up,      &a->hmid,   &a->lora_u, &a->xf,  &a->rstdf, &a->out_lse,
                      &a->out_ent, &a->logits, &a->dres,   &a->dxn, &a->dq,    &a->datt,
                      &a->dk,      &a->dv,     &a->dgate,  &a->dup, &a->dh,    &a->du};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(*bufs[i]);
    free(a);
}

static int acts_ensure(Model *m, int N) {
    if (m->acts && m->acts->capN >= N) return 0;
    const ModelConfig *c = &m->base->cfg;
    int cap = N < 16 ? 16 : N;
    if (m->acts) {
        int grown = m->acts->capN * 3 / 2;
        if (cap < grown) cap = grown;
    }
    acts_free(m->acts);
    m->acts = NULL;
    Acts *a = calloc(1, sizeof *a);
    PL_CHECK_ALLOC(a);
    size_t L = c->n_layers, Nn = cap, C = c->dim, H = c->hidden_dim, V = c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    size_t R = m->lora ? m->lora->cfg.rank : 0;
    size_t total = 0;
#define ALLOC(field, count)                                                                        \
    do {                                                                                           \
        size_t n_ = (count) > 0 ? (count) : 1;                                                     \
        a->field = malloc(sizeof(float) * n_);                                                     \
        if (!a->field) {                                                                           \
            acts_free(a);                                                                          \
            return pl_fail(PL_ENOMEM, "activations for %d tokens: out of memory", N);              \
        }                                                                                          \
        total += sizeof(float) * n_;                                                               \
    } while (0)
    ALLOC(res, (L + 1) * Nn * C);
    ALLOC(xn1, L * Nn * C);
    ALLOC(rstd1, L * Nn);
    ALLOC(q, L * Nn * QD);
    ALLOC(k, L * Nn * KD);
    ALLOC(v, L * Nn * KD);
    ALLOC(att, L * Nn * QD);
    ALLOC(lse, L * Nn * c->n_heads);
    ALLOC(mid, L * Nn * C);
    ALLOC(xn2, L * Nn * C);
    ALLOC(rstd2, L * Nn);
    ALLOC(gate, L * Nn * H);
    ALLOC(up, L * Nn * H);
    ALLOC(hmid, L * Nn * H);
    ALLOC(lora_u, L * LORA_NT * Nn * R);
    ALLOC(xf, Nn * C);
    ALLOC(rstdf, Nn);
    ALLOC(out_lse, Nn);
    ALLOC(out_ent, Nn);
    a->keep_logits = Nn * V <= m->logits_budget;
    ALLOC(logits, (a->keep_logits ? Nn : LOGIT_CHUNK) * V);
    ALLOC(dres, Nn * C);
    ALLOC(dxn, Nn * C);
    ALLOC(dq, Nn * QD);
    ALLOC(datt, Nn * QD);
    ALLOC(dk, Nn * KD);
    ALLOC(dv, Nn * KD);
    ALLOC(dgate, Nn * H);
    ALLOC(dup, Nn * H);
    ALLOC(dh, Nn * H);
    ALLOC(du, Nn * R);
#undef ALLOC
    a->pos = malloc(sizeof(int) * Nn);
    a->no_tgt = malloc(sizeof(int) * Nn);
    if (!a->pos || !a->no_tgt) {
        acts_free(a);
        return pl_fail(PL_ENOMEM, "activations: out of memory");
    }
    a->capN = cap;
    a->bytes = total;
    m->acts = a;
    return 0;
}

/* n targets of -1, for a forward that scores nothing (entropy only). */
static const int *no_target(Acts *a, int n) {
    for (int i = 0; i < n; i++)
        a->no_tgt[i] = -1;
    return a->no_tgt;
}

static void scale_buf(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

/* The LoRA pair of layer l, target t, or NULL when not active. */
static int lora_active(const Model *m, int l, int t, const float **A, const float **Bm) {
    const Lora *lo = m->lora;
    if (!lo || lo->merged || !lo->a[l * LORA_NT + t]) return 0;
    *A = lo->a[l * LORA_NT + t];
    *Bm = lo->b[l * LORA_NT + t];
    return 1;
}

/* out (N,OC) (= or +=) x W^T + bias + scale (x A^T) B^T; u (N,R) keeps
 * scale * x A^T for backward. */
static void linear_forward(const Model *m, int l, int t, float *out, const float *x, const float *W,
                           const float *bias, float *u, int N, int IC, int OC, int accumulate) {
    matmul_forward(out, x, W, bias, N, IC, OC, accumulate);
    const float *A, *Bm;
    if (lora_active(m, l, t, &A, &Bm)) {
        int R = m->lora->cfg.rank;
        matmul_forward(u, x, A, NULL, N, IC, R, 0);
        scale_buf(u, (size_t)N * R, m->lora->scale);
        matmul_forward(out, u, Bm, NULL, N, R, OC, 1);
    }
}

/* Backward of linear_forward: dx (N,IC) +=, and the gradients of W, bias
 * (when training the base) and of A, B (when an adapter is active). */
static void linear_backward(Model *m, int l, int t, float *dx, float *dW, float *dbias,
                            const float *dy, const float *x, const float *W, const float *u, int N,
                            int IC, int OC) {
    matmul_backward(dx, dW, dbias, dy, x, W, N, IC, OC);
    const float *A, *Bm;
    if (lora_active(m, l, t, &A, &Bm)) {
        Lora *lo = m->lora;
        int R = lo->cfg.rank;
        size_t off_a = (size_t)(lo->a[l * LORA_NT + t] - lo->mem);
        size_t off_b = (size_t)(lo->b[l * LORA_NT + t] - lo->mem);
        float *du = m->acts->du;
        /* dB += dy^T u (u already carries the scale) */
        matmul_backward(NULL, m->g_lora + off_b, NULL, dy, u, Bm, N, R, OC);
        memset(du, 0, sizeof(float) * (size_t)N * R);
        matmul_backward(du, NULL, NULL, dy, u, Bm, N, R, OC);
        scale_buf(du, (size_t)N * R, lo->scale);
        matmul_backward(dx, m->g_lora + off_a, NULL, du, x, A, N, IC, R);
    }
}

/* ----------------------------------------------------------- lifecycle */

int model_new(Model **out, Base *base, const ModelOptions *opt) {
    *out = NULL;
    const ModelConfig *c = &base->cfg;
    if (opt->train_base && !base->flat)
        return pl_fail(PL_EINVAL, "full fine-tuning needs flat base weights (base_make_flat)");
    Model *m = calloc(1, sizeof *m);
    PL_CHECK_ALLOC(m);
    m->base = base;
    m->train_base = opt->train_base;
    m->logits_budget = LOGITS_KEEP;
    int rc = 0;
    if (opt->lora_rank > 0) {
        LoraConfig lc = {.rank = opt->lora_rank,
                         .alpha = opt->lora_alpha > 0 ? opt->lora_alpha : (float)opt->lora_rank,
                         .targets = opt->lora_targets ? opt->lora_targets
                                                      : (1u << LORA_Q) | (1u << LORA_V)};
        rc = lora_new(&m->lora, c, &lc, opt->seed);
        if (rc < 0) goto fail;
        m->g_lora = calloc(m->lora->n, sizeof(float));
        if (!m->g_lora) goto oom;
    }
    if (opt->head) {
        size_t n = (size_t)c->dim + 1;
        m->head = calloc(n, sizeof(float));
        m->g_head = calloc(n, sizeof(float));
        if (!m->head || !m->g_head) goto oom;
        /* small init so initial values are near 0 but gradients flow */
        Rng r;
        rng_seed2(&r, opt->seed, 0x4ead);
        float std = 1.0f / sqrtf((float)c->dim + 1.0f);
        for (int i = 0; i < c->dim; i++)
            m->head[i] = rng_normal(&r) * std;
    }
    if (opt->train_base) {
        m->g_base = calloc(base->table.total, sizeof(float));
        if (!m->g_base) goto oom;
    }
    *out = m;
    return 0;
oom:
    rc = pl_fail(PL_ENOMEM, "model: out of memory");
fail:
    model_free(&m);
    return rc;
}

void model_free(Model **mp) {
    Model *m = *mp;
    if (!m) return;
    lora_free(&m->lora);
    free(m->head);
    free(m->g_base);
    free(m->g_lora);
    free(m->g_head);
    acts_free(m->acts);
    free(m);
    *mp = NULL;
}

int model_set_lora(Model *m, Lora *l) {
    float *g = NULL;
    if (l) {
        g = calloc(l->n, sizeof(float));
        PL_CHECK_ALLOC(g);
    }
    lora_free(&m->lora);
    free(m->g_lora);
    m->lora = l;
    m->g_lora = g;
    acts_free(m->acts); /* the rank may have changed */
    m->acts = NULL;
    return 0;
}

void model_zero_grad(Model *m) {
    if (m->g_base) memset(m->g_base, 0, sizeof(float) * m->base->table.total);
    if (m->g_lora) memset(m->g_lora, 0, sizeof(float) * m->lora->n);
    if (m->g_head) memset(m->g_head, 0, sizeof(float) * ((size_t)m->base->cfg.dim + 1));
}

int model_trainable(Model *m, float **params, float **grads, size_t *sizes) {
    int n = 0;
    if (m->train_base) {
        params[n] = m->base->flat;
        grads[n] = m->g_base;
        sizes[n++] = m->base->table.total;
    }
    if (m->lora) {
        params[n] = m->lora->mem;
        grads[n] = m->g_lora;
        sizes[n++] = m->lora->n;
    }
    if (m->head) {
        params[n] = m->head;
        grads[n] = m->g_head;
        sizes[n++] = (size_t)m->base->cfg.dim + 1;
    }
    return n;
}

size_t model_acts_bytes(const Model *m) { return m->acts ? m->acts->bytes : 0; }

int model_check_batch(const Model *m, const Batch *b) {
    const ModelConfig *c = &m->base->cfg;
    if (b->B <= 0) return pl_fail(PL_EINVAL, "batch: no sequences");
    if (b->cu_seqlens[0] != 0) return pl_fail(PL_EINVAL, "batch: cu_seqlens[0] must be 0");
    for (int s = 0; s < b->B; s++) {
        int len = b->cu_seqlens[s + 1] - b->cu_seqlens[s];
        if (len <= 0) return pl_fail(PL_EINVAL, "batch: sequence %d is empty", s);
        if (len > c->max_seq_len)
            return pl_fail(PL_ERANGE, "batch: sequence %d has %d tokens, the context is %d", s, len,
                           c->max_seq_len);
    }
    int N = b->cu_seqlens[b->B];
    for (int i = 0; i < N; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size)
            return pl_fail(PL_ERANGE,
                           "batch: token %d at position %d is outside the vocabulary [0, %d)",
                           b->tokens[i], i, c->vocab_size);
        if (b->targets && (b->targets[i] < -1 || b->targets[i] >= c->vocab_size))
            return pl_fail(PL_ERANGE,
                           "batch: target %d at position %d is outside the vocabulary [0, %d)",
                           b->targets[i], i, c->vocab_size);
    }
    return 0;
}

/* Layer l's slices of the stored activations (N rows). */
typedef struct {
    float *x, *xn1, *rstd1, *q, *k, *v, *att, *lse, *mid, *xn2, *rstd2;
    float *gate, *up, *hmid, *u, *xo;
} LayerActs;

static LayerActs layer_acts(const Acts *a, const ModelConfig *c, int l, int N, int R) {
    size_t n = (size_t)N, NC = n * c->dim, H = (size_t)c->hidden_dim;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    return (LayerActs){
        .x = a->res + l * NC,
        .xo = a->res + (l + 1) * NC,
        .xn1 = a->xn1 + l * NC,
        .rstd1 = a->rstd1 + l * n,
        .q = a->q + l * n * QD,
        .k = a->k + l * n * KD,
        .v = a->v + l * n * KD,
        .att = a->att + l * n * QD,
        .lse = a->lse + l * n * c->n_heads,
        .mid = a->mid + l * NC,
        .xn2 = a->xn2 + l * NC,
        .rstd2 = a->rstd2 + l * n,
        .gate = a->gate + l * n * H,
        .up = a->up + l * n * H,
        .hmid = a->hmid + l * n * H,
        .u = a->lora_u + l * LORA_NT * n * R,
    };
}

/* -------------------------------------------------------------- forward */

/* Runs the layers on the N rows of acts->res[0] (already embedded). */
static void layers_forward(Model *m, const int *cu, int B, int N) {
    const ModelConfig *c = &m->base->cfg;
    const Weights *w = &m->base->w;
    Acts *a = m->acts;
    int C = c->dim, H = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim;
    int QD = NH * HS, KD = NKV * HS, R = m->lora ? m->lora->cfg.rank : 0;
    size_t NC = (size_t)N * C;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        LayerActs t = layer_acts(a, c, l, N, R);
        size_t NR = (size_t)N * R;

        rmsnorm_forward(t.xn1, t.rstd1, t.x, lw->attn_norm, N, C, c->norm_eps);
        linear_forward(m, l, LORA_Q, t.q, t.xn1, lw->wq, lw->bq, t.u + LORA_Q * NR, N, C, QD, 0);
        linear_forward(m, l, LORA_K, t.k, t.xn1, lw->wk, lw->bk, t.u + LORA_K * NR, N, C, KD, 0);
        linear_forward(m, l, LORA_V, t.v, t.xn1, lw->wv, lw->bv, t.u + LORA_V * NR, N, C, KD, 0);
        rope_forward(t.q, a->pos, N, NH, HS, c->rope_theta, c->rope_interleaved);
        rope_forward(t.k, a->pos, N, NKV, HS, c->rope_theta, c->rope_interleaved);
        attention_forward(t.att, t.lse, t.q, t.k, t.v, cu, B, NH, NKV, HS);
        memcpy(t.mid, t.x, sizeof(float) * NC);
        linear_forward(m, l, LORA_O, t.mid, t.att, lw->wo, NULL, t.u + LORA_O * NR, N, QD, C, 1);

        rmsnorm_forward(t.xn2, t.rstd2, t.mid, lw->mlp_norm, N, C, c->norm_eps);
        linear_forward(m, l, LORA_GATE, t.gate, t.xn2, lw->w_gate, NULL, t.u + LORA_GATE * NR, N, C,
                       H, 0);
        linear_forward(m, l, LORA_UP, t.up, t.xn2, lw->w_up, NULL, t.u + LORA_UP * NR, N, C, H, 0);
        swiglu_forward(t.hmid, t.gate, t.up, (size_t)N * H);
        memcpy(t.xo, t.mid, sizeof(float) * NC);
        linear_forward(m, l, LORA_DOWN, t.xo, t.hmid, lw->w_down, NULL, t.u + LORA_DOWN * NR, N, H,
                       C, 1);
    }
    rmsnorm_forward(a->xf, a->rstdf, a->res + (size_t)c->n_layers * NC, w->final_norm, N, C,
                    c->norm_eps);
}

static float inv_temperature(const Batch *b) {
    return b->temperature > 0.0f ? 1.0f / b->temperature : 1.0f;
}

int model_forward(Model *m, const Batch *b, float *lp, float *ent, float *values, float *logits) {
    PL_TRY(model_check_batch(m, b));
    if (values && !m->head)
        return pl_fail(PL_EINVAL, "values requested from a model without a head");
    const ModelConfig *c = &m->base->cfg;
    int N = b->cu_seqlens[b->B], C = c->dim, V = c->vocab_size;
    PL_TRY(acts_ensure(m, N));
    Acts *a = m->acts;
    for (int s = 0; s < b->B; s++)
        for (int i = b->cu_seqlens[s]; i < b->cu_seqlens[s + 1]; i++)
            a->pos[i] = i - b->cu_seqlens[s];
    embedding_forward(a->res, b->tokens, m->base->w.embed, N, C);
    layers_forward(m, b->cu_seqlens, b->B, N);

    a->logits_valid = 0;
    if (lp || ent || logits) {
        float inv_t = inv_temperature(b);
        int chunk = a->keep_logits ? N : LOGIT_CHUNK;
        for (int i0 = 0; i0 < N; i0 += chunk) {
            int n = N - i0 < chunk ? N - i0 : chunk;
            float *z = a->logits;
            matmul_forward(z, a->xf + (size_t)i0 * C, m->base->w.lm_head, NULL, n, C, V, 0);
            if (logits) memcpy(logits + (size_t)i0 * V, z, sizeof(float) * (size_t)n * V);
            const int *tg = b->targets ? b->targets + i0 : no_target(a, n);
            float *lpo = a->dq; /* scratch when lp is not wanted: N floats fit */
            logprob_forward(lp ? lp + i0 : lpo, a->out_ent + i0, a->out_lse + i0, z, tg, n, V,
                            inv_t);
        }
        a->logits_valid = a->keep_logits;
        if (ent) memcpy(ent, a->out_ent, sizeof(float) * N);
    }
    if (values) {
        const float *hw = m->head, hb = m->head[C];
        for (int i = 0; i < N; i++) {
            const float *x = a->xf + (size_t)i * C;
            float s = hb;
            for (int j = 0; j < C; j++)
                s += x[j] * hw[j];
            values[i] = s;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- backward */

static int rows_have_grad(const float *dlp, const float *dent, int i0, int n) {
    for (int i = i0; i < i0 + n; i++)
        if ((dlp && dlp[i] != 0.0f) || (dent && dent[i] != 0.0f)) return 1;
    return 0;
}

int model_backward(Model *m, const Batch *b, const float *dlp, const float *dent,
                   const float *dvalues) {
    const ModelConfig *c = &m->base->cfg;
    Acts *a = m->acts;
    int N = b->cu_seqlens[b->B];
    if (!a || a->capN < N) return pl_fail(PL_EINVAL, "backward without a matching forward");
    if (dvalues && !m->head)
        return pl_fail(PL_EINVAL, "value gradients for a model without a head");
    const Weights *w = &m->base->w;
    Weights gw = {0};
    LayerWeights *glayers = NULL;
    if (m->train_base) {
        glayers = calloc((size_t)c->n_layers, sizeof *glayers);
        PL_CHECK_ALLOC(glayers);
        gw.layers = glayers;
        gw.n_layers = c->n_layers;
        weights_bind_flat(&gw, &m->base->table, m->g_base, c->tie_embeddings);
    }
#define GB(field) (m->train_base ? gw.field : NULL)
    int C = c->dim, H = c->hidden_dim, V = c->vocab_size, NH = c->n_heads, NKV = c->n_kv_heads;
    int HS = c->head_dim, QD = NH * HS, KD = NKV * HS, R = m->lora ? m->lora->cfg.rank : 0;
    size_t NC = (size_t)N * C, NR = (size_t)N * R;
    float *dxf = a->dxn;
    memset(dxf, 0, sizeof(float) * NC);

    /* language-model head: the kept logits, or chunk by chunk recomputed */
    if (dlp || dent) {
        float inv_t = inv_temperature(b);
        int chunk = a->logits_valid ? N : LOGIT_CHUNK;
        for (int i0 = 0; i0 < N; i0 += chunk) {
            int n = N - i0 < chunk ? N - i0 : chunk;
            if (!rows_have_grad(dlp, dent, i0, n)) continue;
            const float *xf = a->xf + (size_t)i0 * C;
            if (!a->logits_valid) matmul_forward(a->logits, xf, w->lm_head, NULL, n, C, V, 0);
            const int *tg = b->targets ? b->targets + i0 : no_target(a, n);
            logprob_backward(a->logits, dlp ? dlp + i0 : NULL, dent ? dent + i0 : NULL, a->logits,
                             a->out_lse + i0, a->out_ent + i0, tg, n, V, inv_t);
            matmul_backward(dxf + (size_t)i0 * C, GB(lm_head), NULL, a->logits, xf, w->lm_head, n,
                            C, V);
        }
        a->logits_valid = 0; /* the buffer now holds gradients */
    }
    /* scalar head */
    if (dvalues) {
        float *gh = m->g_head;
        for (int i = 0; i < N; i++) {
            float d = dvalues[i];
            if (d == 0.0f) continue;
            const float *x = a->xf + (size_t)i * C;
            float *dx = dxf + (size_t)i * C;
            for (int j = 0; j < C; j++) {
                gh[j] += d * x[j];
                dx[j] += d * m->head[j];
            }
            gh[C] += d;
        }
    }
    if (!m->train_base && !m->lora) {
        free(glayers);
        return 0; /* only the head trains: nothing below it needs gradients */
    }
    float *dres = a->dres;
    memset(dres, 0, sizeof(float) * NC);
    rmsnorm_backward(dres, GB(final_norm), dxf, a->res + (size_t)c->n_layers * NC, w->final_norm,
                     a->rstdf, N, C);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerWeights *lw = &w->layers[l];
        LayerWeights *gl = m->train_base ? &glayers[l] : NULL;
#define GL(field) (gl ? gl->field : NULL)
        LayerActs t = layer_acts(a, c, l, N, R);

        /* MLP: x' = mid + down(silu(gate) * up); dres is d x' and becomes d mid */
        memset(a->dh, 0, sizeof(float) * (size_t)N * H);
        linear_backward(m, l, LORA_DOWN, a->dh, GL(w_down), NULL, dres, t.hmid, lw->w_down,
                        t.u + LORA_DOWN * NR, N, H, C);
        swiglu_backward(a->dgate, a->dup, a->dh, t.gate, t.up, (size_t)N * H);
        memset(a->dxn, 0, sizeof(float) * NC);
        linear_backward(m, l, LORA_GATE, a->dxn, GL(w_gate), NULL, a->dgate, t.xn2, lw->w_gate,
                        t.u + LORA_GATE * NR, N, C, H);
        linear_backward(m, l, LORA_UP, a->dxn, GL(w_up), NULL, a->dup, t.xn2, lw->w_up,
                        t.u + LORA_UP * NR, N, C, H);
        rmsnorm_backward(dres, GL(mlp_norm), a->dxn, t.mid, lw->mlp_norm, t.rstd2, N, C);

        /* attention: mid = x + o(att); dres becomes d x */
        memset(a->datt, 0, sizeof(float) * (size_t)N * QD);
        linear_backward(m, l, LORA_O, a->datt, GL(wo), NULL, dres, t.att, lw->wo, t.u + LORA_O * NR,
                        N, QD, C);
        attention_backward(a->dq, a->dk, a->dv, a->datt, t.att, t.lse, t.q, t.k, t.v, b->cu_seqlens,
                           b->B, NH, NKV, HS);
        rope_backward(a->dq, a->pos, N, NH, HS, c->rope_theta, c->rope_interleaved);
        rope_backward(a->dk, a->pos, N, NKV, HS, c->rope_theta, c->rope_interleaved);
        memset(a->dxn, 0, sizeof(float) * NC);
        linear_backward(m, l, LORA_Q, a->dxn, GL(wq), GL(bq), a->dq, t.xn1, lw->wq,
                        t.u + LORA_Q * NR, N, C, QD);
        linear_backward(m, l, LORA_K, a->dxn, GL(wk), GL(bk), a->dk, t.xn1, lw->wk,
                        t.u + LORA_K * NR, N, C, KD);
        linear_backward(m, l, LORA_V, a->dxn, GL(wv), GL(bv), a->dv, t.xn1, lw->wv,
                        t.u + LORA_V * NR, N, C, KD);
        rmsnorm_backward(dres, GL(attn_norm), a->dxn, t.x, lw->attn_norm, t.rstd1, N, C);
#undef GL
    }
    if (m->train_base) embedding_backward(gw.embed, dres, b->tokens, N, C);
#undef GB
    free(glayers);
    return 0;
}

/* ------------------------------------------------------------- KV cache */

/* Decode scratch per row: x, xn, q, k, v, att (QD), gate, up, h, u. */
static size_t decode_scratch_floats(const ModelConfig *c, int R) {
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    return 2 * (size_t)c->dim + 2 * QD + 2 * KD + 3 * (size_t)c->hidden_dim + (size_t)R;
}

#define KV_MAX_RANK 256

int kv_new(KVCache **out, const ModelConfig *c, int B, int maxT) {
    *out = NULL;
    if (B <= 0 || maxT <= 0) return pl_fail(PL_EINVAL, "kv cache: bad size B=%d T=%d", B, maxT);
    KVCache *kc = calloc(1, sizeof *kc);
    PL_CHECK_ALLOC(kc);
    kc->L = c->n_layers;
    kc->B = B;
    kc->maxT = maxT;
    kc->KD = c->n_kv_heads * c->head_dim;
    size_t n = (size_t)kc->L * B * maxT * kc->KD;
    kc->k = malloc(sizeof(float) * n);
    kc->v = malloc(sizeof(float) * n);
    kc->len = calloc((size_t)B, sizeof(int));
    kc->scratch = malloc(sizeof(float) * (size_t)B * decode_scratch_floats(c, KV_MAX_RANK));
    if (!kc->k || !kc->v || !kc->len || !kc->scratch) {
        kv_free(&kc);
        return pl_fail(PL_ENOMEM, "kv cache of %zu floats: out of memory", 2 * n);
    }
    *out = kc;
    return 0;
}

void kv_free(KVCache **cp) {
    KVCache *c = *cp;
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c->len);
    free(c->scratch);
    free(c);
    *cp = NULL;
}

static float *kv_row(const KVCache *c, float *base, int l, int slot, int t) {
    return base + (((size_t)l * c->B + slot) * c->maxT + t) * c->KD;
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
        Acts *a = m->acts;
        int KD = c->KD;
        for (int l = 0; l < cfg->n_layers; l++) {
            for (int i = 0; i < n; i++) {
                const float *ks = a->k + ((size_t)l * N + cu[i]) * KD;
                const float *vs = a->v + ((size_t)l * N + cu[i]) * KD;
                memcpy(kv_row(c, c->k, l, slots[i], 0), ks, sizeof(float) * (size_t)lens[i] * KD);
                memcpy(kv_row(c, c->v, l, slots[i], 0), vs, sizeof(float) * (size_t)lens[i] * KD);
            }
        }
        for (int i = 0; i < n; i++) {
            c->len[slots[i]] = lens[i];
            const float *xl = a->xf + (size_t)(cu[i + 1] - 1) * cfg->dim;
            matmul_forward(logits + (size_t)i * cfg->vocab_size, xl, m->base->w.lm_head, NULL, 1,
                           cfg->dim, cfg->vocab_size, 0);
        }
    }
    free(tokens);
    free(cu);
    return rc;
}

int model_decode(Model *m, KVCache *c, const int *slots, const int *ids, int n, float *logits) {
    const ModelConfig *cfg = &m->base->cfg;
    const Weights *w = &m->base->w;
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
        if (c->len[slots[i]] >= c->maxT || c->len[slots[i]] >= cfg->max_seq_len)
            return pl_fail(PL_ERANGE, "decode: sequence in slot %d is full (%d positions)",
                           slots[i], c->len[slots[i]]);
        pos[i] = c->len[slots[i]];
        lens[i] = pos[i] + 1;
    }
    float *x = c->scratch, *xn = x + (size_t)n * C, *q = xn + (size_t)n * C;
    float *k = q + (size_t)n * QD, *v = k + (size_t)n * KD, *att = v + (size_t)n * KD;
    float *gate = att + (size_t)n * QD, *up = gate + (size_t)n * H, *h = up + (size_t)n * H;
    float *u = h + (size_t)n * H;
    embedding_forward(x, ids, w->embed, n, C);
    for (int l = 0; l < cfg->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        rmsnorm_forward(xn, NULL, x, lw->attn_norm, n, C, cfg->norm_eps);
        linear_forward(m, l, LORA_Q, q, xn, lw->wq, lw->bq, u, n, C, QD, 0);
        linear_forward(m, l, LORA_K, k, xn, lw->wk, lw->bk, u, n, C, KD, 0);
        linear_forward(m, l, LORA_V, v, xn, lw->wv, lw->bv, u, n, C, KD, 0);
        rope_forward(q, pos, n, NH, HS, cfg->rope_theta, cfg->rope_interleaved);
        rope_forward(k, pos, n, NKV, HS, cfg->rope_theta, cfg->rope_interleaved);
        for (int i = 0; i < n; i++) {
            memcpy(kv_row(c, c->k, l, slots[i], pos[i]), k + (size_t)i * KD, sizeof(float) * KD);
            memcpy(kv_row(c, c->v, l, slots[i], pos[i]), v + (size_t)i * KD, sizeof(float) * KD);
        }
        attention_decode(att, q, kv_row(c, c->k, l, 0, 0), kv_row(c, c->v, l, 0, 0), slots, lens, n,
                         NH, NKV, HS, c->maxT);
        linear_forward(m, l, LORA_O, x, att, lw->wo, NULL, u, n, QD, C, 1);
        rmsnorm_forward(xn, NULL, x, lw->mlp_norm, n, C, cfg->norm_eps);
        linear_forward(m, l, LORA_GATE, gate, xn, lw->w_gate, NULL, u, n, C, H, 0);
        linear_forward(m, l, LORA_UP, up, xn, lw->w_up, NULL, u, n, C, H, 0);
        swiglu_forward(h, gate, up, (size_t)n * H);
        linear_forward(m, l, LORA_DOWN, x, h, lw->w_down, NULL, u, n, H, C, 1);
    }
    rmsnorm_forward(xn, NULL, x, w->final_norm, n, C, cfg->norm_eps);
    matmul_forward(logits, xn, w->lm_head, NULL, n, C, V, 0);
    for (int i = 0; i < n; i++)
        c->len[slots[i]] = pos[i] + 1;
    return 0;
}
