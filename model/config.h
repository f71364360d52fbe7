/* config.h: the shape of a Llama-family model.
 *
 * Read from a Hugging Face config.json (LlamaForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM, MistralForCausalLM) or from a llama2.c .bin header. */
#ifndef PLUMB_CONFIG_H
#define PLUMB_CONFIG_H

#define CONFIG_MAX_EOS 8

/* rope_scaling's (or rope_parameters') rope_type */
typedef enum { ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3, ROPE_YARN } RopeType;

/* Its parameters, as transformers reads them; unused ones stay 0. */
typedef struct {
    RopeType type;
    float factor;           /* linear, llama3, yarn                                   */
    float low_freq_factor;  /* llama3                                                 */
    float high_freq_factor; /* llama3                                                 */
    int original_max_pos;   /* llama3, yarn: original_max_position_embeddings         */
    float beta_fast, beta_slow;  /* yarn (32 and 1 when absent)                       */
    float mscale, mscale_all_dim; /* yarn (0: absent)                                 */
    float attention_factor; /* yarn: the factor on cos and sin (0: derived)           */
    int truncate;           /* yarn: round the correction range (1 when absent)       */
} RopeScaling;

typedef struct {
    char arch[32];        /* "llama", "qwen2" or "qwen3": model_type of config.json */
    int vocab_size;       /* V                                                       */
    int dim;              /* C, hidden_size                                          */
    int hidden_dim;       /* H, intermediate_size of the SwiGLU MLP                  */
    int n_layers;         /* L, num_hidden_layers                                    */
    int n_heads;          /* NH, num_attention_heads                                 */
    int n_kv_heads;       /* NKV, num_key_value_heads (GQA when < NH)                */
    int head_dim;         /* HS, head_dim or hidden_size / num_attention_heads       */
    int max_seq_len;      /* max_position_embeddings: the context limit              */
    float rope_theta;     /* RoPE base, 10000 for Llama 2, 1e6 for Qwen2             */
    float norm_eps;       /* rms_norm_eps                                            */
    int tie_embeddings;   /* lm_head shares the token embedding                      */
    int qkv_bias;         /* q/k/v projections carry a bias (Qwen2, attention_bias)  */
    int qk_norm;          /* RMSNorm on q and k per head, before RoPE (Qwen3)        */
    int rope_interleaved; /* 1: llama2.c pairs (2j,2j+1); 0: HF halves (j, j+HS/2)   */
    RopeScaling rope;     /* rope_scaling: plain RoPE unless rope.type says otherwise */
    int bos_id;           /* -1 when unknown                                         */
    int eos_ids[CONFIG_MAX_EOS]; /* generation stops on any of these                 */
    int n_eos;
} ModelConfig;

/* Fills c with the defaults of a Llama config (theta 1e4, eps 1e-5, untied). */
void config_defaults(ModelConfig *c);

/* Parses a Hugging Face config.json. Unknown keys are ignored (HF configs
 * carry many); known keys of the wrong JSON type are errors naming the key.
 * On error returns a negative PL_E* code and c is unspecified. */
int config_load_json(ModelConfig *c, const char *path);

/* Reads eos_token_id / bos_token_id from a generation_config.json and
 * overrides those of c. A missing file is not an error (returns 0). */
int config_load_generation(ModelConfig *c, const char *path);

/* Checks the shape is usable (positive sizes, NH % NKV == 0, HS even...). */
int config_validate(const ModelConfig *c);

/* Writes a Hugging Face config.json for c (architectures, model_type, ...). */
int config_save_json(const ModelConfig *c, const char *path);

/* Number of parameters of the base model (counting a tied head once). */
long long config_num_params(const ModelConfig *c);

#endif
