/* lora.h: low-rank adapters on the linear layers of the base model.
 *
 * A targeted linear W (OC, IC) computes
 *   out = x W^T + bias + (alpha / r) * (x A^T) B^T,   A (r, IC), B (OC, r).
 * Standard init: A ~ U(-1/sqrt(IC), 1/sqrt(IC)) (kaiming_uniform, a=sqrt(5),
 * as PEFT), B = 0, so a fresh adapter leaves the model unchanged.
 * All A and B tensors sit in one flat buffer; gradients use the same layout.
 * Saved and loaded in PEFT's layout (adapter_config.json +
 * adapter_model.safetensors, names base_model.model.<module>.lora_A.weight). */
#ifndef PLUMB_LORA_H
#define PLUMB_LORA_H

#include <stddef.h>

#include "config.h"
#include "weights.h"

enum { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NT };

typedef struct {
    int rank;            /* r                                              */
    float alpha;         /* scale = alpha / r                              */
    unsigned targets;    /* bit (1u << LORA_Q) ... (1u << LORA_DOWN)       */
} LoraConfig;

typedef struct {
    LoraConfig cfg;
    int n_layers;
    float scale;         /* alpha / rank                                   */
    float **a;           /* (L * LORA_NT) pointers to (r, IC), NULL if untargeted */
    float **b;           /* (L * LORA_NT) pointers to (OC, r)              */
    float *mem;          /* (n) all A and B tensors                        */
    size_t n;
    int merged;          /* folded into the base: forward skips the adapter */
} Lora;

/* The module name PEFT uses for target t ("q_proj", ..., "down_proj"). */
const char *lora_target_name(int t);

/* Parses "q,k,v,o,gate,up,down" (also "q_proj,..." and "all") into a mask. */
int lora_parse_targets(const char *s, unsigned *mask);

/* (IC, OC) of target t for model config c. */
void lora_target_dims(const ModelConfig *c, int t, int *ic, int *oc);

/* The weight (OC, IC) of layer lw that target t adapts (lw->wq, ...). */
float *lora_target_weight(const LayerWeights *lw, int t);

/* A new adapter with the standard init drawn from seed. */
int lora_new(Lora **out, const ModelConfig *c, const LoraConfig *lc, unsigned long long seed);
void lora_free(Lora **l);

/* Saves adapter_config.json + adapter_model.safetensors into dir. */
int lora_save_peft(const Lora *l, const ModelConfig *c, const char *dir,
                   const char *base_model_name);

/* Loads a PEFT adapter for a model of config c; rejects other peft types,
 * rslora, fan_in_fan_out, missing tensors and wrong shapes. */
int lora_load_peft(Lora **out, const ModelConfig *c, const char *dir);

struct Base;

/* W += scale * B A on every targeted weight of base (merge) or -= (unmerge),
 * and marks the adapter merged / unmerged. The base must be flat (call
 * base_make_flat first) and not shared with other models. */
int lora_merge(Lora *l, struct Base *base);
int lora_unmerge(Lora *l, struct Base *base);

#endif
