/* config.c: ModelConfig from and to a Hugging Face config.json.
 *
 * Only the keys that change the math are read; HF configs carry many more
 * (initializer_range, use_cache, ...) and those are ignored. A key we know
 * with the wrong JSON type is an error, not a silent default: a config that
 * says "hidden_size": "64" is broken and should be fixed, not guessed. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/err.h"

void config_defaults(ModelConfig *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->max_seq_len = 2048;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->tie_embeddings = 0;
    c->qkv_bias = 0;
    c->rope_interleaved = 0;
    c->bos_id = -1;
    c->n_eos = 0;
}

/* ------------------------------------------------------------ json helpers */

/* Each getter: 0 when the key is absent or null (out untouched), 1 when it
 * was read, < 0 when present with the wrong type. */

static int get_int(json_t *root, const char *key, int *out, const char *path) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v))
        return pl_fail(PL_EFORMAT, "%s: key \"%s\" must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x < -2147483647LL || x > 2147483647LL)
        return pl_fail(PL_ERANGE, "%s: key \"%s\" = %lld is out of range", path, key,
                       (long long)x);
    *out = (int)x;
    return 1;
}

static int get_num(json_t *root, const char *key, float *out, const char *path) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v))
        return pl_fail(PL_EFORMAT, "%s: key \"%s\" must be a number", path, key);
    *out = (float)json_number_value(v);
    return 1;
}

static int get_bool(json_t *root, const char *key, int *out, const char *path) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v))
        return pl_fail(PL_EFORMAT, "%s: key \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return 1;
}

static int require_int(json_t *root, const char *key, int *out, const char *path) {
    int rc = get_int(root, key, out, path);
    if (rc == 0) return pl_fail(PL_EFORMAT, "%s: missing key \"%s\"", path, key);
    return rc;
}

/* eos_token_id: an integer or a list of integers (Llama 3, Qwen2.5). */
static int get_eos(json_t *root, ModelConfig *c, const char *path) {
    json_t *v = json_object_get(root, "eos_token_id");
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        c->eos_ids[0] = (int)json_integer_value(v);
        c->n_eos = 1;
        return 1;
    }
    if (!json_is_array(v))
        return pl_fail(PL_EFORMAT, "%s: key \"eos_token_id\" must be an integer or a list",
                       path);
    size_t n = json_array_size(v);
    if (n > CONFIG_MAX_EOS)
        return pl_fail(PL_ERANGE, "%s: eos_token_id lists %zu ids, at most %d supported",
                       path, n, CONFIG_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e))
            return pl_fail(PL_EFORMAT, "%s: eos_token_id[%zu] must be an integer", path, i);
        c->eos_ids[i] = (int)json_integer_value(e);
    }
    c->n_eos = (int)n;
    return 1;
}

static json_t *load_json(const char *path, int *rc) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            *rc = pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
        } else {
            fclose(f);
            *rc = pl_fail(PL_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, err.line,
                          err.column, err.text);
        }
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *rc = pl_fail(PL_EFORMAT, "%s: expected a JSON object", path);
        return NULL;
    }
    *rc = 0;
    return root;
}

static const char *const ROPE_TYPES[] = {"default", "linear", "llama3", "yarn"};

/* The RoPE object under key (rope_scaling or rope_parameters): null or
 * plain, or one of the scalings model/rope.h computes, with its
 * parameters; its rope_theta when present. Another type, or a parameter
 * that changes what is rotated (partial_rotary_factor), is refused. */
static int check_rope(json_t *root, const char *key, ModelConfig *c, const char *path) {
    json_t *rs = json_object_get(root, key);
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs))
        return pl_fail(PL_EFORMAT, "%s: key \"%s\" must be an object or null", path, key);
    json_t *ty = json_object_get(rs, "rope_type");
    if (!ty) ty = json_object_get(rs, "type");
    const char *name = ty ? (json_is_string(ty) ? json_string_value(ty) : "(not a string)") : "default";
    int t = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, ROPE_TYPES[i])) t = i;
    if (t < 0)
        return pl_fail(PL_ENOTSUP, "%s: %s type \"%s\" is not supported (default, linear, "
                       "llama3, yarn)", path, key, name);
    PL_TRY(get_num(rs, "rope_theta", &c->rope_theta, path));
    float prf = 1.0f;
    PL_TRY(get_num(rs, "partial_rotary_factor", &prf, path));
    if (prf != 1.0f)
        return pl_fail(PL_ENOTSUP, "%s: %s.partial_rotary_factor %g is not supported (1 only)",
                       path, key, prf);
    if (t == ROPE_DEFAULT) return 0;
    RopeScaling *r = &c->rope;
    memset(r, 0, sizeof *r);
    r->type = (RopeType)t;
    r->truncate = 1;
    int has_factor = get_num(rs, "factor", &r->factor, path);
    PL_TRY(has_factor);
    PL_TRY(get_num(rs, "low_freq_factor", &r->low_freq_factor, path));
    PL_TRY(get_num(rs, "high_freq_factor", &r->high_freq_factor, path));
    PL_TRY(get_int(rs, "original_max_position_embeddings", &r->original_max_pos, path));
    PL_TRY(get_num(rs, "beta_fast", &r->beta_fast, path));
    PL_TRY(get_num(rs, "beta_slow", &r->beta_slow, path));
    PL_TRY(get_num(rs, "mscale", &r->mscale, path));
    PL_TRY(get_num(rs, "mscale_all_dim", &r->mscale_all_dim, path));
    PL_TRY(get_num(rs, "attention_factor", &r->attention_factor, path));
    PL_TRY(get_bool(rs, "truncate", &r->truncate, path));
    const char *need = NULL;
    if (!has_factor && t != ROPE_YARN) need = "factor";
    else if (t == ROPE_LLAMA3 && !r->original_max_pos) need = "original_max_position_embeddings";
    else if (t == ROPE_LLAMA3 && !(r->low_freq_factor > 0)) need = "low_freq_factor";
    else if (t == ROPE_LLAMA3 && !(r->high_freq_factor > 0)) need = "high_freq_factor";
    else if (t == ROPE_YARN && !r->original_max_pos) need = "original_max_position_embeddings";
    if (need)
        return pl_fail(PL_EFORMAT, "%s: %s of type \"%s\" needs \"%s\"", path, key, name, need);
    return 0;
}

/* ---------------------------------------------------------------- loading */

static int parse_config(ModelConfig *c, json_t *root, const char *path) {
    config_defaults(c);
    c->norm_eps = 1e-6f; /* HF LlamaConfig / Qwen2Config default */
    c->max_seq_len = 2048;

    int is_qwen2 = 0, is_qwen3 = 0, is_mistral = 0;
    json_t *mt = json_object_get(root, "model_type");
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt))
            return pl_fail(PL_EFORMAT, "%s: key \"model_type\" must be a string", path);
        const char *s = json_string_value(mt);
        if (strcmp(s, "qwen2") == 0) is_qwen2 = 1;
        else if (strcmp(s, "qwen3") == 0) is_qwen3 = 1;
        else if (strcmp(s, "mistral") == 0) is_mistral = 1;
        else if (strcmp(s, "llama") != 0)
            return pl_fail(PL_ENOTSUP, "%s: model_type \"%s\" is not supported "
                           "(llama, qwen2, qwen3, mistral)", path, s);
    }
    /* Mistral is the Llama graph (plus a sliding window handled below);
     * Qwen3 is Qwen2's with q and k normed per head and no q/k/v bias. */
    snprintf(c->arch, sizeof c->arch, "%s", is_qwen2 ? "qwen2" : is_qwen3 ? "qwen3" : "llama");
    c->qk_norm = is_qwen3;

    PL_TRY(require_int(root, "vocab_size", &c->vocab_size, path));
    PL_TRY(require_int(root, "hidden_size", &c->dim, path));
    PL_TRY(require_int(root, "intermediate_size", &c->hidden_dim, path));
    PL_TRY(require_int(root, "num_hidden_layers", &c->n_layers, path));
    PL_TRY(require_int(root, "num_attention_heads", &c->n_heads, path));
    c->n_kv_heads = c->n_heads;
    PL_TRY(get_int(root, "num_key_value_heads", &c->n_kv_heads, path));
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    PL_TRY(get_int(root, "head_dim", &c->head_dim, path));
    PL_TRY(get_int(root, "max_position_embeddings", &c->max_seq_len, path));
    PL_TRY(get_num(root, "rope_theta", &c->rope_theta, path));
    PL_TRY(get_num(root, "rms_norm_eps", &c->norm_eps, path));
    PL_TRY(get_bool(root, "tie_word_embeddings", &c->tie_embeddings, path));
    int attn_bias = 0, mlp_bias = 0;
    PL_TRY(get_bool(root, "attention_bias", &attn_bias, path));
    PL_TRY(get_bool(root, "mlp_bias", &mlp_bias, path));
    if (mlp_bias)
        return pl_fail(PL_ENOTSUP, "%s: mlp_bias = true is not supported", path);
    if (is_qwen3 && attn_bias) /* Qwen3's attention_bias is on o_proj too */
        return pl_fail(PL_ENOTSUP, "%s: attention_bias = true is not supported for qwen3", path);
    c->qkv_bias = is_qwen2 ? 1 : attn_bias;
    PL_TRY(get_bool(root, "plumb_rope_interleaved", &c->rope_interleaved, path));
    PL_TRY(get_int(root, "bos_token_id", &c->bos_id, path));
    PL_TRY(get_eos(root, c, path));

    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act))
            return pl_fail(PL_EFORMAT, "%s: key \"hidden_act\" must be a string", path);
        if (strcmp(json_string_value(act), "silu") != 0)
            return pl_fail(PL_ENOTSUP, "%s: hidden_act \"%s\" is not supported (silu only)",
                           path, json_string_value(act));
    }

    /* transformers < 5 writes rope_theta and rope_scaling at the top level;
     * transformers 5 writes them inside "rope_parameters". */
    PL_TRY(check_rope(root, "rope_scaling", c, path));
    PL_TRY(check_rope(root, "rope_parameters", c, path));
    if (c->rope.type == ROPE_YARN && !(c->rope.factor > 0) && c->rope.original_max_pos > 0)
        c->rope.factor = (float)c->max_seq_len / (float)c->rope.original_max_pos; /* as transformers */

    /* layer_types (transformers 5): full or sliding attention, the sliding
     * kind handled by the window below; anything else is another model */
    json_t *lt = json_object_get(root, "layer_types");
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt))
            return pl_fail(PL_EFORMAT, "%s: key \"layer_types\" must be a list", path);
        size_t i;
        json_t *v;
        json_array_foreach(lt, i, v) {
            const char *s = json_is_string(v) ? json_string_value(v) : "(not a string)";
            if (strcmp(s, "full_attention") && strcmp(s, "sliding_attention"))
                return pl_fail(PL_ENOTSUP, "%s: layer_types[%zu] \"%s\" is not supported "
                               "(full_attention, sliding_attention)", path, i, s);
        }
    }

    /* A sliding window only changes attention beyond the window; making
     * the window the context limit keeps every supported sequence exact. */
    int use_sw = is_mistral;
    PL_TRY(get_bool(root, "use_sliding_window", &use_sw, path));
    if (is_qwen2 || is_qwen3 || is_mistral) {
        int sw = 0;
        PL_TRY(get_int(root, "sliding_window", &sw, path));
        if (use_sw && sw > 0 && sw < c->max_seq_len) c->max_seq_len = sw;
    }
    return 0;
}

int config_load_json(ModelConfig *c, const char *path) {
    int rc;
    json_t *root = load_json(path, &rc);
    if (!root) return rc;
    rc = parse_config(c, root, path);
    json_decref(root);
    if (rc < 0) return rc;
    rc = config_validate(c);
    if (rc < 0) return pl_wrap(rc, "%s", path);
    return 0;
}

int config_load_generation(ModelConfig *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    }
    fclose(f);
    int rc;
    json_t *root = load_json(path, &rc);
    if (!root) return rc;
    ModelConfig tmp = *c;
    rc = get_eos(root, &tmp, path);
    if (rc >= 0) rc = get_int(root, "bos_token_id", &tmp.bos_id, path);
    json_decref(root);
    if (rc < 0) return rc;
    *c = tmp;
    return 0;
}

int config_validate(const ModelConfig *c) {
    if (strcmp(c->arch, "llama") != 0 && strcmp(c->arch, "qwen2") != 0 &&
        strcmp(c->arch, "qwen3") != 0)
        return pl_fail(PL_ENOTSUP, "config: arch \"%s\" is not supported", c->arch);
    if (c->vocab_size <= 0 || c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->max_seq_len <= 0)
        return pl_fail(PL_EINVAL, "config: sizes must be positive (V=%d C=%d H=%d L=%d "
                       "NH=%d NKV=%d HS=%d T=%d)", c->vocab_size, c->dim, c->hidden_dim,
                       c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->max_seq_len);
    /* Bounds far past any released model, so that no count from a file can
     * overflow the sizes computed from it (an int product, a layer table)
     * or ask for memory before the file is checked to hold the tensors. */
    static const struct {
        const char *key;
        long long max;
    } bounds[] = {{"vocab_size", 1 << 24},          {"hidden_size", 1 << 17},
                  {"intermediate_size", 1 << 20},   {"num_hidden_layers", 4096},
                  {"num_attention_heads", 4096},    {"num_key_value_heads", 4096},
                  {"head_dim", 4096},               {"max_position_embeddings", 1 << 24}};
    const int vals[8] = {c->vocab_size, c->dim,       c->hidden_dim, c->n_layers,
                         c->n_heads,    c->n_kv_heads, c->head_dim,  c->max_seq_len};
    for (int i = 0; i < 8; i++)
        if (vals[i] > bounds[i].max)
            return pl_fail(PL_ERANGE, "config: %s %d is over %lld, more than any model plumb can "
                           "run", bounds[i].key, vals[i], bounds[i].max);
    if ((long long)c->n_heads * c->head_dim > 1 << 20)
        return pl_fail(PL_ERANGE, "config: num_attention_heads %d x head_dim %d is over %d",
                       c->n_heads, c->head_dim, 1 << 20);
    if (c->n_heads % c->n_kv_heads != 0)
        return pl_fail(PL_EINVAL, "config: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return pl_fail(PL_EINVAL, "config: head_dim %d must be even for RoPE", c->head_dim);
    if (!(c->norm_eps > 0.0f) || !(c->rope_theta > 0.0f))
        return pl_fail(PL_EINVAL, "config: rms_norm_eps (%g) and rope_theta (%g) must be > 0",
                       c->norm_eps, c->rope_theta);
    if (c->n_eos < 0 || c->n_eos > CONFIG_MAX_EOS)
        return pl_fail(PL_EINVAL, "config: n_eos %d out of range", c->n_eos);
    const RopeScaling *r = &c->rope;
    if ((unsigned)r->type > ROPE_YARN)
        return pl_fail(PL_EINVAL, "config: rope type %d out of range", (int)r->type);
    if (r->type != ROPE_DEFAULT && !(r->factor > 0 && r->factor < 1e6f))
        return pl_fail(PL_EINVAL, "config: rope_scaling.factor %g must be in (0, 1e6)", r->factor);
    if ((r->type == ROPE_LLAMA3 || r->type == ROPE_YARN) && r->original_max_pos <= 0)
        return pl_fail(PL_EINVAL, "config: rope_scaling.original_max_position_embeddings %d must be > 0",
                       r->original_max_pos);
    if (r->type == ROPE_LLAMA3 && !(r->high_freq_factor > r->low_freq_factor && r->low_freq_factor > 0))
        return pl_fail(PL_EINVAL, "config: rope_scaling needs 0 < low_freq_factor (%g) < "
                       "high_freq_factor (%g)", r->low_freq_factor, r->high_freq_factor);
    return 0;
}

/* ----------------------------------------------------------------- saving */

/* The shortest decimal that reads back as the same float, so config.json
 * says 1e-06 rather than 9.9999999747524271e-07. */
static json_t *json_float(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

/* rope_scaling as transformers reads it: null for plain RoPE. */
static json_t *rope_json(const RopeScaling *r) {
    if (r->type == ROPE_DEFAULT) return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "rope_type", json_string(ROPE_TYPES[r->type]));
    json_object_set_new(o, "factor", json_float(r->factor));
    if (r->type == ROPE_LLAMA3) {
        json_object_set_new(o, "low_freq_factor", json_float(r->low_freq_factor));
        json_object_set_new(o, "high_freq_factor", json_float(r->high_freq_factor));
    }
    if (r->original_max_pos)
        json_object_set_new(o, "original_max_position_embeddings", json_integer(r->original_max_pos));
    if (r->type == ROPE_YARN) {
        if (r->beta_fast > 0) json_object_set_new(o, "beta_fast", json_float(r->beta_fast));
        if (r->beta_slow > 0) json_object_set_new(o, "beta_slow", json_float(r->beta_slow));
        if (r->mscale > 0) json_object_set_new(o, "mscale", json_float(r->mscale));
        if (r->mscale_all_dim > 0)
            json_object_set_new(o, "mscale_all_dim", json_float(r->mscale_all_dim));
        if (r->attention_factor > 0)
            json_object_set_new(o, "attention_factor", json_float(r->attention_factor));
        if (!r->truncate) json_object_set_new(o, "truncate", json_false());
    }
    return o;
}

int config_save_json(const ModelConfig *c, const char *path) {
    PL_TRY(config_validate(c));
    /* HF Llama's attention_bias also puts a bias on o_proj; Qwen2 is exactly
     * the Llama graph with q/k/v biases only. So a llama with qkv_bias is
     * written as qwen2, and a qwen2 without biases as llama. */
    int qwen3 = c->qk_norm, qwen2 = !qwen3 && c->qkv_bias;
    if (qwen3 && c->qkv_bias)
        return pl_fail(PL_ENOTSUP, "config: q/k norms with q/k/v biases have no Hugging Face form");
    json_t *o = json_object();
    PL_CHECK_ALLOC(o);
    json_t *archs = json_array();
    json_array_append_new(archs, json_string(qwen3   ? "Qwen3ForCausalLM"
                                             : qwen2 ? "Qwen2ForCausalLM"
                                                     : "LlamaForCausalLM"));
    json_object_set_new(o, "architectures", archs);
    json_object_set_new(o, "model_type", json_string(qwen3 ? "qwen3" : qwen2 ? "qwen2" : "llama"));
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rope_theta", json_float(c->rope_theta));
    json_object_set_new(o, "rope_scaling", rope_json(&c->rope));
    json_object_set_new(o, "rms_norm_eps", json_float(c->norm_eps));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    if (qwen2 || qwen3) {
        json_object_set_new(o, "use_sliding_window", json_false());
        if (qwen3) json_object_set_new(o, "attention_bias", json_false());
    } else {
        json_object_set_new(o, "attention_bias", json_false());
        json_object_set_new(o, "mlp_bias", json_false());
    }
    if (c->bos_id >= 0) json_object_set_new(o, "bos_token_id", json_integer(c->bos_id));
    if (c->n_eos == 1) {
        json_object_set_new(o, "eos_token_id", json_integer(c->eos_ids[0]));
    } else if (c->n_eos > 1) {
        json_t *e = json_array();
        for (int i = 0; i < c->n_eos; i++) json_array_append_new(e, json_integer(c->eos_ids[i]));
        json_object_set_new(o, "eos_token_id", e);
    }
    if (c->rope_interleaved) json_object_set_new(o, "plumb_rope_interleaved", json_true());

    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (rc != 0) return pl_fail(PL_EIO, "write %s: %s", path, strerror(errno));
    return 0;
}

long long config_num_params(const ModelConfig *c) {
    long long C = c->dim, H = c->hidden_dim, V = c->vocab_size;
    long long Q = (long long)c->n_heads * c->head_dim;
    long long KV = (long long)c->n_kv_heads * c->head_dim;
    long long layer = 2 * C + Q * C + 2 * KV * C + Q * C + 3 * H * C;
    if (c->qkv_bias) layer += Q + 2 * KV;
    if (c->qk_norm) layer += 2 * (long long)c->head_dim;
    long long n = V * C + c->n_layers * layer + C;
    if (!c->tie_embeddings) n += V * C;
    return n;
}
