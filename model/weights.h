/* weights.h: the base model's tensors, their names and where they live.
 *
 * A ParamTable lists every tensor of a config with its Hugging Face name,
 * its shape and its offset in the "flat" layout: all tensors one after the
 * other in one buffer. Gradients and AdamW moments always use the flat
 * layout, so the optimizer and an all-reduce are one loop over one buffer.
 * The weights themselves may be flat (random init, llama2.c, full
 * fine-tuning) or scattered (mapped straight out of safetensors files). */
#ifndef PLUMB_WEIGHTS_H
#define PLUMB_WEIGHTS_H

#include <stddef.h>

#include "config.h"

typedef enum {
    P_EMBED,      /* model.embed_tokens.weight            (V, C)        */
    P_ATTN_NORM,  /* model.layers.i.input_layernorm.weight (C)          */
    P_WQ,         /* self_attn.q_proj.weight              (NH*HS, C)    */
    P_WK,         /* self_attn.k_proj.weight              (NKV*HS, C)   */
    P_WV,         /* self_attn.v_proj.weight              (NKV*HS, C)   */
    P_BQ,         /* self_attn.q_proj.bias                (NH*HS)       */
    P_BK,         /* self_attn.k_proj.bias                (NKV*HS)      */
    P_BV,         /* self_attn.v_proj.bias                (NKV*HS)      */
    P_QNORM,      /* self_attn.q_norm.weight (Qwen3)      (HS)          */
    P_KNORM,      /* self_attn.k_norm.weight (Qwen3)      (HS)          */
    P_WO,         /* self_attn.o_proj.weight              (C, NH*HS)    */
    P_MLP_NORM,   /* post_attention_layernorm.weight      (C)           */
    P_GATE,       /* mlp.gate_proj.weight                 (H, C)        */
    P_UP,         /* mlp.up_proj.weight                   (H, C)        */
    P_DOWN,       /* mlp.down_proj.weight                 (C, H)        */
    P_FINAL_NORM, /* model.norm.weight                    (C)           */
    P_LM_HEAD,    /* lm_head.weight                       (V, C), absent when tied */
    P_NKINDS
} ParamKind;

typedef struct {
    char name[96];     /* Hugging Face tensor name                          */
    ParamKind kind;
    int layer;         /* -1 for model-level tensors                        */
    int ndim;          /* 1 or 2                                            */
    int shape[2];      /* (rows, cols) or (n, 0)                            */
    size_t numel;
    size_t offset;     /* in floats, into the flat layout                   */
} Param;

typedef struct {
    Param *p;
    int n;
    size_t total;      /* floats in the flat layout                         */
} ParamTable;

typedef struct {
    float *attn_norm;  /* (C)          */
    float *wq;         /* (NH*HS, C)   */
    float *wk;         /* (NKV*HS, C)  */
    float *wv;         /* (NKV*HS, C)  */
    float *bq;         /* (NH*HS) or NULL without qkv_bias  */
    float *bk;         /* (NKV*HS) or NULL                  */
    float *bv;         /* (NKV*HS) or NULL                  */
    float *q_norm;     /* (HS) or NULL without qk_norm      */
    float *k_norm;     /* (HS) or NULL                      */
    float *wo;         /* (C, NH*HS)   */
    float *mlp_norm;   /* (C)          */
    float *w_gate;     /* (H, C)       */
    float *w_up;       /* (H, C)       */
    float *w_down;     /* (C, H)       */
} LayerWeights;

typedef struct {
    float *embed;        /* (V, C)                          */
    float *final_norm;   /* (C)                             */
    float *lm_head;      /* (V, C); == embed when tied      */
    LayerWeights *layers;/* (L)                             */
    int n_layers;
} Weights;

/* Allocates n floats for weights (free with free()): 2 MiB aligned and
 * advised for transparent huge pages, since every decode step streams all
 * of them and 4 KiB pages cost a TLB miss per page. NULL when out of memory. */
float *weights_alloc(size_t n);

/* Lists the tensors of config c in a fixed order. On error returns < 0. */
int param_table_build(ParamTable *t, const ModelConfig *c);
void param_table_free(ParamTable *t);
const Param *param_table_find(const ParamTable *t, const char *name);

/* Allocates the per-layer pointer array (all pointers NULL). */
int weights_init(Weights *w, int n_layers);
void weights_free(Weights *w);

/* The pointer field of w that holds tensor p. */
float **weights_slot(Weights *w, const Param *p);

/* Points every tensor of w into flat at its table offset (lm_head aliases
 * embed when tied). */
void weights_bind_flat(Weights *w, const ParamTable *t, float *flat, int tie_embeddings);

struct StFile;
struct Device;

/* The base model: config, tensor table, and the storage behind Weights.
 * Roles in one process share one Base read-only; each keeps its own
 * adapters and head (model.h). */
typedef struct Base {
    ModelConfig cfg;
    ParamTable table;
    Weights w;
    float *flat;            /* (table.total) owned, when the weights are flat   */
    float *heap;            /* owned storage of converted (non-mapped) tensors  */
    struct StFile *files;   /* mapped safetensors files backing w (owned)       */
    int n_files;
    /* a copy on a device (base_to_device), which models on it compute with */
    struct Device *dev;     /* not owned: close it after base_free              */
    float *dflat;           /* (table.total) on dev                             */
    Weights dw;             /* every tensor in dflat                            */
} Base;

/* A base with random weights (normal * std, norms = 1), flat. */
int base_new_random(Base **out, const ModelConfig *c, unsigned long long seed, float std);

/* Loads a checkpoint: a Hugging Face folder (config.json with
 * model.safetensors or model.safetensors.index.json, F32/BF16/F16) or a
 * llama2.c .bin file. F32 tensors are mapped, not copied. */
int base_load(Base **out, const char *path);

/* Copies mapped tensors into one owned flat buffer (for full fine-tuning). */
int base_make_flat(Base *b);

/* A new base holding a flat copy of src's weights (src is unchanged). */
int base_clone_flat(const Base *src, Base **out);

/* Puts a flat copy of the weights on device d (fp32), once: a second call
 * for the same device does nothing, one for another device fails. The
 * host weights stay (checkpoints and full fine-tuning read them). */
int base_to_device(Base *b, struct Device *d);

/* Copies the host weights (after full fine-tuning changed them) onto the
 * device copy. */
int base_upload(Base *b);

/* Writes config.json and model.safetensors (F32) into dir (created). */
int base_save_hf(const Base *b, const char *dir);

void base_free(Base **b);

#endif
