/* model.h: forward and backward of a Llama-family decoder over a packed
 * batch, with optional LoRA adapters and a scalar head.
 *
 * A Model is a view on a shared Base (read-only unless full fine-tuning)
 * plus what one role owns: its adapter, its head, its gradients and its
 * activations. Several Models can share one Base in a process.
 *
 * Outputs per token t of the packed batch (N tokens):
 *   lp[t]     log p(targets[t] | tokens of its sequence up to t) at the
 *             batch temperature, 0 where targets[t] < 0
 *   ent[t]    entropy of that distribution
 *   values[t] scalar head on the final normed hidden state (with a head)
 * Backward takes dL/dlp, dL/dent and dL/dvalues and accumulates gradients
 * into the model's trainable buffers.
 *
 * The math runs on the model's device (kernels/backend.h): activations and
 * the KV cache are that device's memory. The trainable buffers the model
 * shows (head, adapter, gradients; model_trainable) are host memory, the
 * masters the optimizer and checkpoints use: on a device that is not host
 * memory, forward uploads the parameters and backward downloads the
 * gradients. The batch, the outputs and the gradients passed in are host
 * memory too. */
#ifndef PLUMB_MODEL_H
#define PLUMB_MODEL_H

#include <stddef.h>

#include "kernels/backend.h"
#include "lora.h"
#include "weights.h"

typedef struct {
    const int *tokens;      /* (N) input ids                                     */
    const int *targets;     /* (N) id scored at each position, -1 = none; or NULL */
    const int *cu_seqlens;  /* (B+1) sequence boundaries, cu_seqlens[0] = 0      */
    int B;
    float temperature;      /* log-prob/entropy temperature; <= 0 means 1        */
} Batch;

typedef struct {
    int lora_rank;          /* 0: no adapter                                     */
    float lora_alpha;
    unsigned lora_targets;  /* mask of LORA_* bits                               */
    int head;               /* 1: a scalar head (critic / reward)                */
    int train_base;         /* 1: full fine-tuning (base must be flat, unshared) */
    unsigned long long seed;/* adapter and head init                             */
    Device *dev;            /* where the math runs (not owned); NULL: the CPU    */
    int decode_copy;        /* 1: a few-row copy of the frozen base for decoding
                               (Model.packed): faster decode of up to 8
                               sequences for one more copy of the weights     */
} ModelOptions;

typedef struct Acts Acts;

typedef struct Model {
    Base *base;             /* shared, not owned                                 */
    Device *dev;            /* where the math runs                               */
    Device *own_dev;        /* dev when the model opened it (the CPU default)    */
    Lora *lora;             /* owned, NULL without adapter                       */
    float *head;            /* (C + 1): weight (C) then bias; NULL without head  */
    int train_base;
    /* gradients, same layouts as the parameters */
    float *g_base;          /* (base->table.total) when train_base               */
    float *g_lora;          /* (lora->n)                                         */
    float *g_head;          /* (C + 1)                                           */
    Acts *acts;             /* activations kept for backward                     */
    /* what the device computes with: the buffers above on a device of host
     * memory (the CPU), copies on the device otherwise */
    struct {
        const Weights *w;   /* the base's weights                                */
        float *lora;        /* (lora->n) the adapter, laid out as lora->mem      */
        float *head, *g_head, *g_lora, *g_base;
    } dv;
    size_t logits_budget;   /* floats of logits kept for backward (default 64M);
                               larger batches recompute them in chunks           */
    int n_threads;
    /* with decode_copy, decode's copies of the frozen base's projections
     * and LM head in the few-row layout (kernels.h, matmul_pack), made at
     * the first decode on a backend that has it (model_kv.c); NULL
     * otherwise. packed_w holds
     * L * LORA_NT + 1 copies (the LM head last), then the weights each was
     * made from */
    int decode_copy;        /* ModelOptions.decode_copy                          */
    float *packed;
    const float **packed_w;
    float *rope_inv;        /* (HS/2) RoPE's frequencies (model/rope.h), host     */
    float rope_scale;       /* the factor on cos and sin                         */
} Model;

/* Builds a Model on base (not owned). On error returns < 0. */
int model_new(Model **out, Base *base, const ModelOptions *opt);
void model_free(Model **m);

/* Replaces the adapter (takes ownership of l; frees the old one). */
int model_set_lora(Model *m, Lora *l);

/* Validates a batch against the model (ids in vocab, lengths within the
 * context, boundaries increasing). Returns < 0 with a message otherwise. */
int model_check_batch(const Model *m, const Batch *b);

/* Forward pass. lp, ent, values may each be NULL (values needs a head).
 * With logits != NULL the full (N, V) logits are also written (tests,
 * small batches). Keeps the activations backward needs. */
int model_forward(Model *m, const Batch *b, float *lp, float *ent, float *values,
                  float *logits);

/* Backward of the last model_forward on the same batch. dlp, dent, dvalues
 * (N) may be NULL. Gradients are accumulated (+=): call model_zero_grad
 * between steps. */
int model_backward(Model *m, const Batch *b, const float *dlp, const float *dent,
                   const float *dvalues);

void model_zero_grad(Model *m);

/* The trainable buffers (params, grads, sizes) in a fixed order: base (when
 * train_base), adapter, head. Returns their count (at most 3). */
int model_trainable(Model *m, float **params, float **grads, size_t *sizes);

/* Bytes held by activations (for benchmarks). */
size_t model_acts_bytes(const Model *m);

/* ------------------------------------------------------------ KV cache */

/* Keys and values of up to B sequences (slots), maxT positions each,
 * plus the scratch a decode step needs, on a model's device. */
typedef struct {
    Device *dev;
    int L, B, maxT, KD, V;
    float *k, *v;          /* (L, B, maxT, KD) after RoPE (device)        */
    int *len;              /* (B) positions filled per slot (host)        */
    int *d_ids, *d_pos;    /* (B) a decode step's rows, staged (device)   */
    int *d_slots, *d_lens; /* (B)                                         */
    float *scratch;        /* decode-step activations for B rows (device) */
    float *logits;         /* (B, V) (device)                             */
} KVCache;

/* A cache for model m's shape, on its device. */
int kv_new(KVCache **out, const Model *m, int B, int maxT);
void kv_free(KVCache **c);

/* Runs the n prompts (prompts[i] of lens[i] ids) as one packed forward,
 * fills slots[i] of the cache (which must be empty) and writes the logits
 * of each prompt's last position into logits (n, V). */
int model_prefill(Model *m, KVCache *c, const int *slots, const int *const *prompts,
                  const int *lens, int n, float *logits);

/* One decode step: token ids[i] is appended to slots[i] (n rows) and the
 * next-token logits written to logits (n, V). */
int model_decode(Model *m, KVCache *c, const int *slots, const int *ids, int n,
                 float *logits);

#endif
