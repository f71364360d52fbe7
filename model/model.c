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
 * them. Either way no softmax is stored.
 *
 * Every buffer the math touches (activations, gradients, the adapter's
 * scratch) is memory of the model's device, and every kernel, copy and
 * fill goes through its backend (kernels/backend.h). The host keeps the
 * batch's ids, which it stages to the device once per call, and reads
 * back only what the caller asked for. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "kernels/backend.h"
#include "model/model_impl.h"
#include "model/rope.h"

#define LOGIT_CHUNK 256                /* rows of logits per chunk when not kept */
#define LOGITS_KEEP ((size_t)64 << 20) /* default Model.logits_budget (256 MiB) */

struct Acts {
    int capN;           /* rows the buffers hold                        */
    int N, maxT;        /* the staged batch: rows, longest sequence     */
    int *h_pos, *h_tgt; /* (N) host staging of pos and tgt              */
    /* on the device from here on */
    int *tok;           /* (N) input ids                                */
    int *tgt;           /* (N) targets, -1 where none                   */
    int *pos;           /* (N) position of each row in its sequence     */
    int *cu;            /* (N+1) cu_seqlens (a sequence has >= 1 row)   */
    float *lp;          /* (N) log-probs of the targets                 */
    float *val;         /* (N) scalar head outputs                      */
    float *dlp, *dent;  /* (N) the caller's gradients, staged           */
    float *dval;        /* (N)                                          */
    float *res;         /* (L+1, N, C) residual stream at layer inputs  */
    float *xn1, *rstd1; /* (L, N, C), (L, N)                            */
    float *q;           /* (L, N, QD) after RoPE                        */
    float *k, *v;       /* (L, N, KD) after RoPE                        */
    float *qp, *kp;     /* (L, N, QD), (L, N, KD) before the q/k norms  */
    float *rq, *rk;     /* (L, N, NH), (L, N, NKV) their 1/rms (Qwen3)  */
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
    float *dqp, *dkp;        /* (N, QD), (N, KD) before the q/k norms        */
    float *dgate, *dup, *dh; /* (N, H)                                  */
    float *du;               /* (N, R)                                       */
    size_t bytes;
};

/* ------------------------------------------------------------ helpers */

static void acts_free(Device *d, Acts *a) {
    if (!a) return;
    free(a->h_pos);
    free(a->h_tgt);
    void *bufs[] = {a->qp,      a->kp,     a->rq,    a->rk,     a->dqp,    a->dkp,
                    a->tok,     a->tgt,    a->pos,   a->cu,     a->lp,     a->val,  a->dlp,
                    a->dent,    a->dval,   a->res,   a->xn1,    a->rstd1,  a->q,    a->k,
                    a->v,       a->att,    a->lse,   a->mid,    a->xn2,    a->rstd2, a->gate,
                    a->up,      a->hmid,   a->lora_u, a->xf,    a->rstdf,  a->out_lse,
                    a->out_ent, a->logits, a->dres,  a->dxn,    a->dq,     a->datt, a->dk,
                    a->dv,      a->dgate,  a->dup,   a->dh,     a->du};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        d->be->free(d, bufs[i]);
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
    Device *d = m->dev;
    acts_free(d, m->acts);
    m->acts = NULL;
    Acts *a = calloc(1, sizeof *a);
    PL_CHECK_ALLOC(a);
    size_t L = c->n_layers, Nn = cap, C = c->dim, H = c->hidden_dim, V = c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    size_t R = m->lora ? m->lora->cfg.rank : 0;
    size_t total = 0;
    /* one check at the end: a failed allocation is the device's sticky error */
#define ALLOC(field, count)                                                                        \
    do {                                                                                           \
        size_t n_ = (count) > 0 ? (count) : 1;                                                     \
        a->field = d->be->alloc(d, sizeof *a->field * n_);                                         \
        total += sizeof *a->field * n_;                                                            \
    } while (0)
    ALLOC(tok, Nn);
    ALLOC(tgt, Nn);
    ALLOC(pos, Nn);
    ALLOC(cu, Nn + 1);
    ALLOC(lp, Nn);
    ALLOC(val, Nn);
    ALLOC(dlp, Nn);
    ALLOC(dent, Nn);
    ALLOC(dval, Nn);
    ALLOC(res, (L + 1) * Nn * C);
    ALLOC(xn1, L * Nn * C);
    ALLOC(rstd1, L * Nn);
    ALLOC(q, L * Nn * QD);
    ALLOC(k, L * Nn * KD);
    ALLOC(v, L * Nn * KD);
    size_t QN = c->qk_norm; /* the q/k norm buffers, only where there are norms */
    ALLOC(qp, QN * L * Nn * QD);
    ALLOC(kp, QN * L * Nn * KD);
    ALLOC(rq, QN * L * Nn * c->n_heads);
    ALLOC(rk, QN * L * Nn * c->n_kv_heads);
    ALLOC(dqp, QN * Nn * QD);
    ALLOC(dkp, QN * Nn * KD);
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
    a->h_pos = malloc(sizeof(int) * Nn);
    a->h_tgt = malloc(sizeof(int) * Nn);
    int rc = dev_sync(d);
    if (rc == 0 && (!a->h_pos || !a->h_tgt)) rc = pl_fail(PL_ENOMEM, "activations: out of memory");
    if (rc < 0) {
        acts_free(d, a);
        return pl_wrap(rc, "activations for %d tokens", N);
    }
    a->capN = cap;
    a->bytes = total;
    m->acts = a;
    return 0;
}

/* Stages batch b on the device for forward and the backward after it:
 * ids, targets (-1 for none: a forward that scores nothing, entropy only),
 * positions and boundaries. Returns the longest sequence. */
static int stage_batch(Model *m, const Batch *b, int N) {
    Device *d = m->dev;
    Acts *a = m->acts;
    int maxT = 0;
    for (int s = 0; s < b->B; s++) {
        int s0 = b->cu_seqlens[s], s1 = b->cu_seqlens[s + 1];
        if (s1 - s0 > maxT) maxT = s1 - s0;
        for (int i = s0; i < s1; i++)
            a->h_pos[i] = i - s0;
    }
    for (int i = 0; i < N; i++)
        a->h_tgt[i] = b->targets ? b->targets[i] : -1;
    d->be->upload(d, a->tok, b->tokens, sizeof(int) * (size_t)N);
    d->be->upload(d, a->tgt, a->h_tgt, sizeof(int) * (size_t)N);
    d->be->upload(d, a->pos, a->h_pos, sizeof(int) * (size_t)N);
    d->be->upload(d, a->cu, b->cu_seqlens, sizeof(int) * (size_t)(b->B + 1));
    a->N = N, a->maxT = maxT;
    return maxT;
}

/* The LoRA pair of layer l, target t (on the device), or 0 when not
 * active. */
static int lora_active(const Model *m, int l, int t, const float **A, const float **Bm) {
    const Lora *lo = m->lora;
    if (!lo || lo->merged || !lo->a[l * LORA_NT + t]) return 0;
    *A = m->dv.lora + (lo->a[l * LORA_NT + t] - lo->mem);
    *Bm = m->dv.lora + (lo->b[l * LORA_NT + t] - lo->mem);
    return 1;
}

void model_params_up(Model *m) {
    Device *d = m->dev;
    if (d->be->host_memory) return;
    size_t nh = (size_t)m->base->cfg.dim + 1;
    if (m->head) d->be->upload(d, m->dv.head, m->head, sizeof(float) * nh);
    if (m->lora) d->be->upload(d, m->dv.lora, m->lora->mem, sizeof(float) * m->lora->n);
    if (m->train_base)
        d->be->upload(d, m->base->dflat, m->base->flat, sizeof(float) * m->base->table.total);
}

/* The gradients back into the host buffers that model_trainable shows. */
static void grads_down(Model *m) {
    Device *d = m->dev;
    if (d->be->host_memory) return;
    size_t nh = (size_t)m->base->cfg.dim + 1;
    if (m->g_head) d->be->download(d, m->g_head, m->dv.g_head, sizeof(float) * nh);
    if (m->g_lora) d->be->download(d, m->g_lora, m->dv.g_lora, sizeof(float) * m->lora->n);
    if (m->g_base)
        d->be->download(d, m->g_base, m->dv.g_base, sizeof(float) * m->base->table.total);
}

/* A device twin of host buffer h (n floats): h itself on host memory. */
static float *twin(Device *d, float *h, size_t n) {
    return d->be->host_memory || !h ? h : d->be->alloc(d, sizeof(float) * n);
}

static void twin_free(Device *d, float *dv, const float *h) {
    if (dv != h) d->be->free(d, dv);
}

void model_matmul(const Model *m, int k, float *out, const float *x, const float *W,
                  const float *bias, int N, int IC, int OC, int accumulate) {
    Device *d = m->dev;
    const int nk = m->base->cfg.n_layers * LORA_NT + 1;
    if (m->packed_w && m->packed_w[nk + k] == W)
        d->be->matmul_forward_packed(d, out, x, m->packed_w[k], W, bias, N, IC, OC, accumulate);
    else
        d->be->matmul_forward(d, out, x, W, bias, N, IC, OC, accumulate);
}

void model_linear_forward(const Model *m, int l, int t, float *out, const float *x,
                          const float *W, const float *bias, float *u, int N, int IC, int OC,
                          int accumulate) {
    Device *d = m->dev;
    model_matmul(m, l * LORA_NT + t, out, x, W, bias, N, IC, OC, accumulate);
    const float *A, *Bm;
    if (lora_active(m, l, t, &A, &Bm)) {
        int R = m->lora->cfg.rank;
        d->be->matmul_forward(d, u, x, A, NULL, N, IC, R, 0);
        d->be->scale(d, u, (size_t)N * R, m->lora->scale);
        d->be->matmul_forward(d, out, u, Bm, NULL, N, R, OC, 1);
    }
}

/* Backward of linear_forward: dx (N,IC) +=, and the gradients of W, bias
 * (when training the base) and of A, B (when an adapter is active). */
static void linear_backward(Model *m, int l, int t, float *dx, float *dW, float *dbias,
                            const float *dy, const float *x, const float *W, const float *u, int N,
                            int IC, int OC) {
    Device *d = m->dev;
    d->be->matmul_backward(d, dx, dW, dbias, dy, x, W, N, IC, OC);
    const float *A, *Bm;
    if (lora_active(m, l, t, &A, &Bm)) {
        Lora *lo = m->lora;
        int R = lo->cfg.rank;
        size_t off_a = (size_t)(lo->a[l * LORA_NT + t] - lo->mem);
        size_t off_b = (size_t)(lo->b[l * LORA_NT + t] - lo->mem);
        float *du = m->acts->du;
        /* dB += dy^T u (u already carries the scale) */
        d->be->matmul_backward(d, NULL, m->dv.g_lora + off_b, NULL, dy, u, Bm, N, R, OC);
        d->be->zero(d, du, sizeof(float) * (size_t)N * R);
        d->be->matmul_backward(d, du, NULL, NULL, dy, u, Bm, N, R, OC);
        d->be->scale(d, du, (size_t)N * R, lo->scale);
        d->be->matmul_backward(d, dx, m->dv.g_lora + off_a, NULL, du, x, A, N, IC, R);
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
    m->decode_copy = opt->decode_copy;
    m->logits_budget = LOGITS_KEEP;
    int rc = 0;
    m->dev = opt->dev;
    if (!m->dev) {
        rc = dev_open(&m->own_dev, "cpu");
        if (rc < 0) goto fail;
        m->dev = m->own_dev;
    }
    Device *d = m->dev;
    m->rope_inv = malloc(sizeof(float) * (size_t)(c->head_dim / 2 > 0 ? c->head_dim / 2 : 1));
    if (!m->rope_inv) goto oom;
    rope_init(c, m->rope_inv, &m->rope_scale);
    m->dv.w = &base->w;
    if (!d->be->host_memory) {
        rc = base_to_device(base, d);
        if (rc < 0) goto fail;
        m->dv.w = &base->dw;
    }
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
    size_t nh = (size_t)c->dim + 1, nl = m->lora ? m->lora->n : 0;
    m->dv.lora = twin(d, m->lora ? m->lora->mem : NULL, nl);
    m->dv.g_lora = twin(d, m->g_lora, nl);
    m->dv.head = twin(d, m->head, nh);
    m->dv.g_head = twin(d, m->g_head, nh);
    m->dv.g_base = twin(d, m->g_base, base->table.total);
    rc = dev_sync(d);
    if (rc < 0) {
        rc = pl_wrap(rc, "model");
        goto fail;
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
    Device *d = m->dev;
    if (d) {
        twin_free(d, m->dv.lora, m->lora ? m->lora->mem : NULL);
        twin_free(d, m->dv.g_lora, m->g_lora);
        twin_free(d, m->dv.head, m->head);
        twin_free(d, m->dv.g_head, m->g_head);
        twin_free(d, m->dv.g_base, m->g_base);
        acts_free(d, m->acts);
    }
    lora_free(&m->lora);
    free(m->head);
    free(m->g_base);
    free(m->g_lora);
    free(m->g_head);
    free(m->rope_inv);
    free(m->packed);
    free(m->packed_w);
    dev_close(&m->own_dev);
    free(m);
    *mp = NULL;
}

int model_set_lora(Model *m, Lora *l) {
    Device *d = m->dev;
    float *g = NULL, *dl = NULL, *dg = NULL;
    if (l) {
        g = calloc(l->n, sizeof(float));
        dl = twin(d, l->mem, l->n);
        dg = twin(d, g, l->n);
        int rc = dev_sync(d);
        if (rc == 0 && !g) rc = pl_fail(PL_ENOMEM, "adapter gradients: out of memory");
        if (rc < 0) {
            twin_free(d, dl, l->mem);
            twin_free(d, dg, g);
            free(g);
            return rc;
        }
    }
    twin_free(d, m->dv.lora, m->lora ? m->lora->mem : NULL);
    twin_free(d, m->dv.g_lora, m->g_lora);
    lora_free(&m->lora);
    free(m->g_lora);
    m->lora = l;
    m->g_lora = g;
    m->dv.lora = dl;
    m->dv.g_lora = dg;
    acts_free(d, m->acts); /* the rank may have changed */
    m->acts = NULL;
    return 0;
}

void model_zero_grad(Model *m) {
    Device *d = m->dev;
    size_t nb = m->base->table.total, nl = m->lora ? m->lora->n : 0;
    size_t nh = (size_t)m->base->cfg.dim + 1;
    float *host[3] = {m->g_base, m->g_lora, m->g_head}, *dev[3] = {m->dv.g_base, m->dv.g_lora,
                                                                   m->dv.g_head};
    size_t n[3] = {nb, nl, nh};
    for (int i = 0; i < 3; i++) {
        if (!host[i]) continue;
        memset(host[i], 0, sizeof(float) * n[i]);
        if (dev[i] != host[i]) d->be->zero(d, dev[i], sizeof(float) * n[i]);
    }
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

const float *model_layer_k(const Model *m) { return m->acts->k; }
const float *model_layer_v(const Model *m) { return m->acts->v; }
const float *model_final_hidden(const Model *m) { return m->acts->xf; }

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
    float *qp, *kp, *rq, *rk; /* Qwen3's q/k norms; NULL without them */
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
        .qp = c->qk_norm ? a->qp + l * n * QD : NULL,
        .kp = c->qk_norm ? a->kp + l * n * KD : NULL,
        .rq = c->qk_norm ? a->rq + l * n * c->n_heads : NULL,
        .rk = c->qk_norm ? a->rk + l * n * c->n_kv_heads : NULL,
    };
}

/* -------------------------------------------------------------- forward */

/* Runs the layers on the N rows of acts->res[0] (already embedded). */
static void layers_forward(Model *m, int B, int N, int maxT) {
    const ModelConfig *c = &m->base->cfg;
    const Weights *w = m->dv.w;
    Device *d = m->dev;
    const Backend *be = d->be;
    Acts *a = m->acts;
    int C = c->dim, H = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim;
    int QD = NH * HS, KD = NKV * HS, R = m->lora ? m->lora->cfg.rank : 0;
    size_t NC = (size_t)N * C;
    const RopeFreq rf = {m->rope_inv, m->rope_scale};
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        LayerActs t = layer_acts(a, c, l, N, R);
        size_t NR = (size_t)N * R;
#define LIN(tg, out, x, W, bias, IC, OC, acc)                                                      \
    model_linear_forward(m, l, tg, out, x, W, bias, t.u + tg * NR, N, IC, OC, acc)

        be->rmsnorm_forward(d, t.xn1, t.rstd1, t.x, lw->attn_norm, N, C, c->norm_eps);
        if (c->qk_norm) { /* Qwen3: each head of q and k normed before RoPE */
            LIN(LORA_Q, t.qp, t.xn1, lw->wq, lw->bq, C, QD, 0);
            LIN(LORA_K, t.kp, t.xn1, lw->wk, lw->bk, C, KD, 0);
            be->rmsnorm_forward(d, t.q, t.rq, t.qp, lw->q_norm, N * NH, HS, c->norm_eps);
            be->rmsnorm_forward(d, t.k, t.rk, t.kp, lw->k_norm, N * NKV, HS, c->norm_eps);
        } else {
            LIN(LORA_Q, t.q, t.xn1, lw->wq, lw->bq, C, QD, 0);
            LIN(LORA_K, t.k, t.xn1, lw->wk, lw->bk, C, KD, 0);
        }
        LIN(LORA_V, t.v, t.xn1, lw->wv, lw->bv, C, KD, 0);
        be->rope_forward(d, t.q, a->pos, N, NH, HS, rf, c->rope_interleaved);
        be->rope_forward(d, t.k, a->pos, N, NKV, HS, rf, c->rope_interleaved);
        be->attention_forward(d, t.att, t.lse, t.q, t.k, t.v, a->cu, B, N, maxT, NH, NKV, HS);
        be->copy(d, t.mid, t.x, sizeof(float) * NC);
        LIN(LORA_O, t.mid, t.att, lw->wo, NULL, QD, C, 1);

        be->rmsnorm_forward(d, t.xn2, t.rstd2, t.mid, lw->mlp_norm, N, C, c->norm_eps);
        LIN(LORA_GATE, t.gate, t.xn2, lw->w_gate, NULL, C, H, 0);
        LIN(LORA_UP, t.up, t.xn2, lw->w_up, NULL, C, H, 0);
        be->swiglu_forward(d, t.hmid, t.gate, t.up, (size_t)N * H);
        be->copy(d, t.xo, t.mid, sizeof(float) * NC);
        LIN(LORA_DOWN, t.xo, t.hmid, lw->w_down, NULL, H, C, 1);
#undef LIN
    }
    be->rmsnorm_forward(d, a->xf, a->rstdf, a->res + (size_t)c->n_layers * NC, w->final_norm, N,
                        C, c->norm_eps);
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
    Device *d = m->dev;
    const Backend *be = d->be;
    Acts *a = m->acts;
    int maxT = stage_batch(m, b, N);
    model_params_up(m);
    be->embedding_forward(d, a->res, a->tok, m->dv.w->embed, N, C);
    layers_forward(m, b->B, N, maxT);

    a->logits_valid = 0;
    if (lp || ent || logits) {
        float inv_t = inv_temperature(b);
        int chunk = a->keep_logits ? N : LOGIT_CHUNK;
        for (int i0 = 0; i0 < N; i0 += chunk) {
            int n = N - i0 < chunk ? N - i0 : chunk;
            float *z = a->logits;
            be->matmul_forward(d, z, a->xf + (size_t)i0 * C, m->dv.w->lm_head, NULL, n, C, V, 0);
            if (logits) be->download(d, logits + (size_t)i0 * V, z, sizeof(float) * (size_t)n * V);
            be->logprob_forward(d, a->lp + i0, a->out_ent + i0, a->out_lse + i0, z, a->tgt + i0, n,
                                V, inv_t);
        }
        a->logits_valid = a->keep_logits;
        if (lp) be->download(d, lp, a->lp, sizeof(float) * N);
        if (ent) be->download(d, ent, a->out_ent, sizeof(float) * N);
    }
    if (values) {
        be->head_forward(d, a->val, a->xf, m->dv.head, N, C);
        be->download(d, values, a->val, sizeof(float) * N);
    }
    return dev_sync(d);
}

/* ------------------------------------------------------------- backward */

static int rows_have_grad(const float *dlp, const float *dent, int i0, int n) {
    for (int i = i0; i < i0 + n; i++)
        if ((dlp && dlp[i] != 0.0f) || (dent && dent[i] != 0.0f)) return 1;
    return 0;
}

/* The language-model head and the scalar head: d xf into dxf. */
static void heads_backward(Model *m, const Batch *b, int N, const float *dlp, const float *dent,
                           const float *dvalues, float *g_lm_head, float *dxf) {
    const ModelConfig *c = &m->base->cfg;
    Device *d = m->dev;
    const Backend *be = d->be;
    Acts *a = m->acts;
    const Weights *w = m->dv.w;
    int C = c->dim, V = c->vocab_size;
    /* language-model head: the kept logits, or chunk by chunk recomputed */
    if (dlp || dent) {
        float inv_t = inv_temperature(b);
        if (dlp) be->upload(d, a->dlp, dlp, sizeof(float) * N);
        if (dent) be->upload(d, a->dent, dent, sizeof(float) * N);
        int chunk = a->logits_valid ? N : LOGIT_CHUNK;
        for (int i0 = 0; i0 < N; i0 += chunk) {
            int n = N - i0 < chunk ? N - i0 : chunk;
            if (!rows_have_grad(dlp, dent, i0, n)) continue;
            const float *xf = a->xf + (size_t)i0 * C;
            if (!a->logits_valid)
                be->matmul_forward(d, a->logits, xf, w->lm_head, NULL, n, C, V, 0);
            be->logprob_backward(d, a->logits, dlp ? a->dlp + i0 : NULL,
                                 dent ? a->dent + i0 : NULL, a->logits, a->out_lse + i0,
                                 a->out_ent + i0, a->tgt + i0, n, V, inv_t);
            be->matmul_backward(d, dxf + (size_t)i0 * C, g_lm_head, NULL, a->logits, xf,
                                w->lm_head, n, C, V);
        }
        a->logits_valid = 0; /* the buffer now holds gradients */
    }
    if (dvalues) {
        be->upload(d, a->dval, dvalues, sizeof(float) * N);
        be->head_backward(d, dxf, m->dv.g_head, a->dval, a->xf, m->dv.head, N, C);
    }
}

int model_backward(Model *m, const Batch *b, const float *dlp, const float *dent,
                   const float *dvalues) {
    const ModelConfig *c = &m->base->cfg;
    Acts *a = m->acts;
    int N = b->cu_seqlens[b->B];
    if (!a || a->N != N) return pl_fail(PL_EINVAL, "backward without a matching forward");
    if (dvalues && !m->head)
        return pl_fail(PL_EINVAL, "value gradients for a model without a head");
    Device *d = m->dev;
    const Backend *be = d->be;
    const Weights *w = m->dv.w;
    Weights gw = {0};
    LayerWeights *glayers = NULL;
    if (m->train_base) {
        glayers = calloc((size_t)c->n_layers, sizeof *glayers);
        PL_CHECK_ALLOC(glayers);
        gw.layers = glayers;
        gw.n_layers = c->n_layers;
        weights_bind_flat(&gw, &m->base->table, m->dv.g_base, c->tie_embeddings);
    }
#define GB(field) (m->train_base ? gw.field : NULL)
    int C = c->dim, H = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads;
    int HS = c->head_dim, QD = NH * HS, KD = NKV * HS, R = m->lora ? m->lora->cfg.rank : 0;
    size_t NC = (size_t)N * C, NR = (size_t)N * R;
    const RopeFreq rf = {m->rope_inv, m->rope_scale};
    const int maxT = a->maxT; /* the batch forward staged */
    float *dxf = a->dxn;
    be->zero(d, dxf, sizeof(float) * NC);
    heads_backward(m, b, N, dlp, dent, dvalues, GB(lm_head), dxf);
    if (!m->train_base && !m->lora) {
        free(glayers);
        grads_down(m);
        return dev_sync(d); /* only the head trains: nothing below it needs gradients */
    }
    float *dres = a->dres;
    be->zero(d, dres, sizeof(float) * NC);
    be->rmsnorm_backward(d, dres, GB(final_norm), dxf, a->res + (size_t)c->n_layers * NC,
                         w->final_norm, a->rstdf, N, C);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerWeights *lw = &w->layers[l];
        LayerWeights *gl = m->train_base ? &glayers[l] : NULL;
        LayerActs t = layer_acts(a, c, l, N, R);
#define GL(field) (gl ? gl->field : NULL)
#define LIN(tg, dx, dW, dbias, dy, x, W, IC, OC)                                                   \
    linear_backward(m, l, tg, dx, dW, dbias, dy, x, W, t.u + tg * NR, N, IC, OC)

        /* MLP: x' = mid + down(silu(gate) * up); dres is d x' and becomes d mid */
        be->zero(d, a->dh, sizeof(float) * (size_t)N * H);
        LIN(LORA_DOWN, a->dh, GL(w_down), NULL, dres, t.hmid, lw->w_down, H, C);
        be->swiglu_backward(d, a->dgate, a->dup, a->dh, t.gate, t.up, (size_t)N * H);
        be->zero(d, a->dxn, sizeof(float) * NC);
        LIN(LORA_GATE, a->dxn, GL(w_gate), NULL, a->dgate, t.xn2, lw->w_gate, C, H);
        LIN(LORA_UP, a->dxn, GL(w_up), NULL, a->dup, t.xn2, lw->w_up, C, H);
        be->rmsnorm_backward(d, dres, GL(mlp_norm), a->dxn, t.mid, lw->mlp_norm, t.rstd2, N, C);

        /* attention: mid = x + o(att); dres becomes d x */
        be->zero(d, a->datt, sizeof(float) * (size_t)N * QD);
        LIN(LORA_O, a->datt, GL(wo), NULL, dres, t.att, lw->wo, QD, C);
        be->attention_backward(d, a->dq, a->dk, a->dv, a->datt, t.att, t.lse, t.q, t.k, t.v, a->cu,
                               b->B, N, maxT, NH, NKV, HS);
        be->rope_backward(d, a->dq, a->pos, N, NH, HS, rf, c->rope_interleaved);
        be->rope_backward(d, a->dk, a->pos, N, NKV, HS, rf, c->rope_interleaved);
        float *dq = a->dq, *dk = a->dk; /* d of the projections' outputs */
        if (c->qk_norm) {
            be->zero(d, a->dqp, sizeof(float) * (size_t)N * QD);
            be->zero(d, a->dkp, sizeof(float) * (size_t)N * KD);
            be->rmsnorm_backward(d, a->dqp, GL(q_norm), a->dq, t.qp, lw->q_norm, t.rq, N * NH, HS);
            be->rmsnorm_backward(d, a->dkp, GL(k_norm), a->dk, t.kp, lw->k_norm, t.rk, N * NKV, HS);
            dq = a->dqp, dk = a->dkp;
        }
        be->zero(d, a->dxn, sizeof(float) * NC);
        LIN(LORA_Q, a->dxn, GL(wq), GL(bq), dq, t.xn1, lw->wq, C, QD);
        LIN(LORA_K, a->dxn, GL(wk), GL(bk), dk, t.xn1, lw->wk, C, KD);
        LIN(LORA_V, a->dxn, GL(wv), GL(bv), a->dv, t.xn1, lw->wv, C, KD);
        be->rmsnorm_backward(d, dres, GL(attn_norm), a->dxn, t.x, lw->attn_norm, t.rstd1, N, C);
#undef LIN
#undef GL
    }
    if (m->train_base) be->embedding_backward(d, gw.embed, dres, a->tok, N, C);
#undef GB
    free(glayers);
    grads_down(m);
    return dev_sync(d);
}
