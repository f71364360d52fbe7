/* test_checkpoint.c: config.json parsing, the tensor table, and loading and
 * saving a Base (Hugging Face folders and llama2.c .bin files).
 *
 * Small models (V=37, C=16, H=24, L=2) so every test runs in milliseconds
 * and every tensor can be compared element by element. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

static ModelConfig small_cfg(const char *arch, int tied, int bias, int NH, int NKV) {
    ModelConfig c;
    config_defaults(&c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.vocab_size = 37;
    c.dim = 16;
    c.hidden_dim = 24;
    c.n_layers = 2;
    c.n_heads = NH;
    c.n_kv_heads = NKV;
    c.head_dim = 16 / NH;
    c.max_seq_len = 64;
    c.rope_theta = strcmp(arch, "qwen2") == 0 ? 1e6f : 1e4f;
    c.norm_eps = 1e-6f;
    c.tie_embeddings = tied;
    c.qkv_bias = bias;
    c.bos_id = 1;
    c.eos_ids[0] = 2;
    c.eos_ids[1] = 5;
    c.n_eos = 2;
    return c;
}

/* An empty path under the scratch dir (its own buffers: tu_path rotates). */
static const char *fresh_dir(const char *name) {
    static char bufs[4][1024];
    static int next;
    char *d = bufs[next++ & 3];
    snprintf(d, sizeof bufs[0], "%s/%s", tu_tmp_dir(), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    return d;
}

static void assert_error_mentions(const char *what) {
    if (!strstr(pl_error(), what))
        fail_msg("error \"%s\" does not mention \"%s\"", pl_error(), what);
}

static void assert_cfg_equal(const ModelConfig *a, const ModelConfig *b) {
    assert_string_equal(a->arch, b->arch);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->max_seq_len, b->max_seq_len);
    assert_true(a->rope_theta == b->rope_theta);
    assert_true(a->norm_eps == b->norm_eps);
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_int_equal(a->qkv_bias, b->qkv_bias);
    assert_int_equal(a->rope_interleaved, b->rope_interleaved);
    assert_int_equal(a->qk_norm, b->qk_norm);
    assert_memory_equal(&a->rope, &b->rope, sizeof a->rope);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->n_eos, b->n_eos);
    for (int i = 0; i < a->n_eos; i++) assert_int_equal(a->eos_ids[i], b->eos_ids[i]);
}

/* Every tensor of b equals (within tol + rel*|ref|) the one of ref. */
static void assert_weights_close(Base *b, Base *ref, float tol, float rel) {
    assert_int_equal(b->table.n, ref->table.n);
    assert_int_equal(b->table.total, ref->table.total);
    for (int i = 0; i < ref->table.n; i++) {
        const Param *p = &ref->table.p[i];
        assert_string_equal(b->table.p[i].name, p->name);
        float *x = *weights_slot(&b->w, &b->table.p[i]);
        float *y = *weights_slot(&ref->w, p);
        assert_non_null(x);
        tu_assert_close(x, y, p->numel, tol, rel, p->name);
    }
    if (b->cfg.tie_embeddings) assert_ptr_equal(b->w.lm_head, b->w.embed);
    else assert_ptr_not_equal(b->w.lm_head, b->w.embed);
}

static int in_map(const Base *b, const float *x) {
    for (int i = 0; i < b->n_files; i++) {
        const char *m = b->files[i].map;
        if ((const char *)x >= m && (const char *)x < m + b->files[i].size) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- config */

/* The table lists tensors in the documented order with flat offsets, and
 * config_num_params agrees with it (a tied head counted once). */
static void test_param_table(void **state) {
    (void)state;
    ModelConfig c = small_cfg("qwen2", 0, 1, 4, 2);
    ParamTable t;
    assert_int_equal(param_table_build(&t, &c), 0);
    assert_int_equal(t.n, 1 + 2 * 12 + 2);
    assert_string_equal(t.p[0].name, "model.embed_tokens.weight");
    assert_string_equal(t.p[1].name, "model.layers.0.input_layernorm.weight");
    assert_string_equal(t.p[5].name, "model.layers.0.self_attn.q_proj.bias");
    assert_string_equal(t.p[8].name, "model.layers.0.self_attn.o_proj.weight");
    assert_string_equal(t.p[12].name, "model.layers.0.mlp.down_proj.weight");
    assert_int_equal(t.p[12].shape[0], 16);
    assert_int_equal(t.p[12].shape[1], 24);
    assert_int_equal(t.p[3].shape[0], 8); /* k_proj: NKV*HS = 2*4 */
    assert_string_equal(t.p[t.n - 2].name, "model.norm.weight");
    assert_string_equal(t.p[t.n - 1].name, "lm_head.weight");
    for (int i = 1; i < t.n; i++)
        assert_int_equal(t.p[i].offset, t.p[i - 1].offset + t.p[i - 1].numel);
    assert_int_equal(t.total, config_num_params(&c));
    assert_non_null(param_table_find(&t, "model.layers.1.mlp.up_proj.weight"));
    assert_null(param_table_find(&t, "model.layers.2.mlp.up_proj.weight"));
    param_table_free(&t);
    c.tie_embeddings = 1;
    assert_int_equal(param_table_build(&t, &c), 0);
    assert_string_equal(t.p[t.n - 1].name, "model.norm.weight");
    assert_int_equal(t.total, config_num_params(&c));
    param_table_free(&t);
}

static const char *write_text(const char *name, const char *text) {
    const char *path = tu_path("%s/%s", tu_tmp_dir(), name);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    return path;
}

/* config.json of a small llama with extra (JSON members after the
 * required ones), written as name. */
static const char *small_json(const char *name, const char *extra) {
    static char text[2048];
    snprintf(text, sizeof text,
             "{\"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 128,"
             " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, %s}", extra);
    return write_text(name, text);
}

/* A real-looking Qwen2 config.json parses with its defaults (head_dim from
 * hidden/heads, qkv bias implied), an eos list, and generation_config.json
 * overriding eos; a missing generation_config.json is fine. */
static void test_config_parse(void **state) {
    (void)state;
    const char *path = write_text("qwen2_config.json",
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\",\n"
        " \"vocab_size\": 151936, \"hidden_size\": 896, \"intermediate_size\": 4864,\n"
        " \"num_hidden_layers\": 24, \"num_attention_heads\": 14, \"num_key_value_heads\": 2,\n"
        " \"max_position_embeddings\": 32768, \"rope_theta\": 1000000.0,\n"
        " \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, \"hidden_act\": \"silu\",\n"
        " \"bos_token_id\": 151643, \"eos_token_id\": 151643, \"use_sliding_window\": false,\n"
        " \"sliding_window\": 32768, \"rope_scaling\": null, \"torch_dtype\": \"bfloat16\"}\n");
    ModelConfig c;
    assert_int_equal(config_load_json(&c, path), 0);
    assert_string_equal(c.arch, "qwen2");
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.max_seq_len, 32768);
    assert_true(c.rope_theta == 1e6f);
    assert_true(c.norm_eps == 1e-6f);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.rope_interleaved, 0);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_ids[0], 151643);
    const char *gen = write_text("gen.json", "{\"bos_token_id\": 7, \"eos_token_id\": [151645, 151643]}");
    assert_int_equal(config_load_generation(&c, gen), 0);
    assert_int_equal(c.bos_id, 7);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_ids[0], 151645);
    assert_int_equal(config_load_generation(&c, tu_path("%s/no-such.json", tu_tmp_dir())), 0);
    assert_int_equal(c.n_eos, 2);

    /* llama defaults: kv heads = heads, eps 1e-6, theta 1e4, untied, no bias */
    path = write_text("llama_min.json",
        "{\"model_type\": \"llama\", \"vocab_size\": 32, \"hidden_size\": 64,"
        " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"plumb_rope_interleaved\": true}");
    assert_int_equal(config_load_json(&c, path), 0);
    assert_string_equal(c.arch, "llama");
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_true(c.norm_eps == 1e-6f);
    assert_true(c.rope_theta == 1e4f);
    assert_int_equal(c.tie_embeddings, 0);
    assert_int_equal(c.qkv_bias, 0);
    assert_int_equal(c.rope_interleaved, 1);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.n_eos, 0);
}

/* Known keys of the wrong type, missing required keys, scaled RoPE and
 * unknown model types are rejected with a message naming key and file. */
static void test_config_errors(void **state) {
    (void)state;
    ModelConfig c;
    const char *path = write_text("bad_type.json",
        "{\"model_type\": \"llama\", \"vocab_size\": 32, \"hidden_size\": \"64\","
        " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4}");
    assert_int_equal(config_load_json(&c, path), PL_EFORMAT);
    assert_error_mentions("hidden_size");
    assert_error_mentions("bad_type.json");

    path = write_text("bad_eos.json",
        "{\"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 128,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"eos_token_id\": \"2\"}");
    assert_int_equal(config_load_json(&c, path), PL_EFORMAT);
    assert_error_mentions("eos_token_id");

    path = write_text("missing.json",
        "{\"hidden_size\": 64, \"intermediate_size\": 128,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4}");
    assert_int_equal(config_load_json(&c, path), PL_EFORMAT);
    assert_error_mentions("vocab_size");

    path = small_json("scaled.json", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}");
    assert_int_equal(config_load_json(&c, path), 0);
    assert_int_equal(c.rope.type, ROPE_LINEAR);
    assert_true(c.rope.factor == 2.0f);

    /* Llama 3.1's block, in transformers 5's rope_parameters */
    path = small_json("llama31.json", "\"max_position_embeddings\": 131072,"
        " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0,"
        " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
        " \"original_max_position_embeddings\": 8192}");
    assert_int_equal(config_load_json(&c, path), 0);
    assert_int_equal(c.rope.type, ROPE_LLAMA3);
    assert_int_equal(c.rope.original_max_pos, 8192);
    assert_true(c.rope_theta == 500000.0f && c.rope.high_freq_factor == 4.0f);

    /* YaRN without a factor: max_position_embeddings / original, as transformers */
    path = small_json("yarn.json", "\"max_position_embeddings\": 131072,"
        " \"rope_scaling\": {\"rope_type\": \"yarn\", \"original_max_position_embeddings\": 32768}");
    assert_int_equal(config_load_json(&c, path), 0);
    assert_int_equal(c.rope.type, ROPE_YARN);
    assert_true(c.rope.factor == 4.0f && c.rope.truncate == 1);

    path = small_json("llama3_partial.json", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}");
    assert_int_equal(config_load_json(&c, path), PL_EFORMAT);
    assert_error_mentions("original_max_position_embeddings");

    path = small_json("dynamic.json", "\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}");
    assert_int_equal(config_load_json(&c, path), PL_ENOTSUP);
    assert_error_mentions("\"dynamic\"");

    path = small_json("partial_rotary.json", "\"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}");
    assert_int_equal(config_load_json(&c, path), PL_ENOTSUP);
    assert_error_mentions("partial_rotary_factor");

    path = write_text("default_scaling.json",
        "{\"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 128,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"rope_scaling\": {\"rope_type\": \"default\"}}");
    assert_int_equal(config_load_json(&c, path), 0);

    /* counts no model has are refused naming the key and the file, before
     * anything is sized from them (1e9 layers overflowed an int here) */
    const char *huge[][2] = {{"num_hidden_layers", "1000000000"},
                             {"vocab_size", "2147483647"},
                             {"hidden_size", "1073741824"},
                             {"max_position_embeddings", "2147483647"}};
    for (int i = 0; i < 4; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                 " \"max_position_embeddings\": 64, \"%s\": %s}", huge[i][0], huge[i][1]);
        path = write_text("huge.json", body);
        assert_int_equal(config_load_json(&c, path), PL_ERANGE);
        assert_error_mentions(huge[i][0]);
        assert_error_mentions("huge.json");
    }

    path = write_text("gpt2.json", "{\"model_type\": \"gpt2\", \"vocab_size\": 32}");
    assert_int_equal(config_load_json(&c, path), PL_ENOTSUP);
    assert_error_mentions("gpt2");

    path = write_text("gqa.json",
        "{\"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 128,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}");
    assert_int_equal(config_load_json(&c, path), PL_EINVAL);
    assert_error_mentions("num_key_value_heads");

    path = write_text("notjson.json", "{\"vocab_size\": ");
    assert_int_equal(config_load_json(&c, path), PL_EFORMAT);
    assert_error_mentions("notjson.json");
}

/* ------------------------------------------------------------- HF folder */

/* base_new_random -> base_save_hf -> base_load gives back the same config
 * and bit-identical tensors, for untied GQA llama, tied qwen2 with q/k/v
 * biases, a tied interleaved-RoPE llama, a qwen3 (q/k norms, head_dim 8 in
 * hidden 16 / 4 heads) and a llama with Llama 3.1's scaled RoPE; F32
 * tensors are mapped. */
static void test_hf_roundtrip(void **state) {
    (void)state;
    ModelConfig cfgs[5] = {small_cfg("llama", 0, 0, 4, 2), small_cfg("qwen2", 1, 1, 4, 1),
                           small_cfg("llama", 1, 0, 2, 2), small_cfg("qwen3", 1, 0, 4, 2),
                           small_cfg("llama", 0, 0, 4, 2)};
    cfgs[2].rope_interleaved = 1;
    cfgs[2].n_eos = 1;
    cfgs[3].qk_norm = 1, cfgs[3].head_dim = 8;
    cfgs[4].rope = (RopeScaling){.type = ROPE_LLAMA3, .factor = 8, .low_freq_factor = 1,
                                 .high_freq_factor = 4, .original_max_pos = 16, .truncate = 1};
    const char *archs[5] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM",
                            "Qwen3ForCausalLM", "LlamaForCausalLM"};
    for (int k = 0; k < 5; k++) {
        Base *ref, *b;
        assert_int_equal(base_new_random(&ref, &cfgs[k], 42 + k, 0.02f), 0);
        assert_non_null(ref->flat);
        assert_true(ref->w.layers[1].attn_norm[3] == 1.0f);
        assert_true(ref->w.final_norm[0] == 1.0f);
        if (cfgs[k].qkv_bias) assert_true(ref->w.layers[0].bq[0] != 0.0f);
        else assert_null(ref->w.layers[0].bq);
        const char *dir = fresh_dir(tu_path("rt%d/nested", k));
        assert_int_equal(base_save_hf(ref, dir), 0);
        char *json = tu_read_file(tu_path("%s/config.json", dir), NULL);
        assert_non_null(json);
        assert_int_equal(strstr(json, "plumb_rope_interleaved") != NULL, k == 2);
        assert_non_null(strstr(json, archs[k]));
        if (k == 3) assert_true(ref->w.layers[1].k_norm[7] == 1.0f);
        free(json);

        assert_int_equal(base_load(&b, dir), 0);
        assert_cfg_equal(&b->cfg, &cfgs[k]);
        assert_weights_close(b, ref, 0.0f, 0.0f);
        assert_null(b->heap);
        assert_int_equal(b->n_files, 1);
        assert_true(in_map(b, b->w.embed));
        assert_true(in_map(b, b->w.layers[1].w_down));
        base_free(&b);
        assert_null(b);
        base_free(&ref);
        assert_null(ref);
    }
}

/* A BF16 checkpoint loads (converted into b->heap, within bf16 rounding). */
static void test_bf16_load(void **state) {
    (void)state;
    ModelConfig c = small_cfg("qwen2", 0, 1, 4, 2);
    Base *ref, *b;
    assert_int_equal(base_new_random(&ref, &c, 7, 0.5f), 0);
    const char *dir = fresh_dir("bf16");
    assert_int_equal(base_save_hf(ref, dir), 0);
    StWrite *ts = calloc(ref->table.n, sizeof *ts);
    for (int i = 0; i < ref->table.n; i++) {
        const Param *p = &ref->table.p[i];
        ts[i] = (StWrite){p->name, *weights_slot(&ref->w, p), p->ndim, {p->shape[0], p->shape[1]}};
    }
    assert_int_equal(st_write(tu_path("%s/model.safetensors", dir), ts, ref->table.n, ST_BF16,
                              NULL), 0);
    free(ts);
    assert_int_equal(base_load(&b, dir), 0);
    assert_non_null(b->heap);
    assert_false(in_map(b, b->w.embed));
    assert_weights_close(b, ref, 0.0f, 1.0f / 256);
    base_free(&b);
    base_free(&ref);
}

/* Random f16 bit patterns (normal and subnormal) with their values computed
 * by ldexp, independently of the library's converter. */
static uint16_t rand_f16(Rng *r, float *val) {
    int sign = rng_u64(r) & 1, e = 1 + (int)(rng_u64(r) % 20), m = (int)(rng_u64(r) % 1024);
    if (rng_u64(r) % 16 == 0) e = 0; /* some subnormals */
    *val = (e ? ldexpf((float)(1024 + m), e - 25) : ldexpf((float)m, -24)) * (sign ? -1 : 1);
    return (uint16_t)(sign << 15 | e << 10 | m);
}

/* Writes an F16 model.safetensors for the table of ref with random values;
 * ref's tensors are overwritten with the exact expected fp32 values. */
static void write_f16_model(Base *ref, const char *path) {
    const ParamTable *t = &ref->table;
    size_t cap = 256 + 160 * (size_t)t->n, len = 0;
    char *hdr = malloc(cap);
    len += snprintf(hdr + len, cap - len, "{");
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        const Param *p = &t->p[i];
        if (p->ndim == 2)
            len += snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%d,%d],"
                            "\"data_offsets\":[%zu,%zu]}", i ? "," : "", p->name, p->shape[0],
                            p->shape[1], off, off + 2 * p->numel);
        else
            len += snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%d],"
                            "\"data_offsets\":[%zu,%zu]}", i ? "," : "", p->name, p->shape[0],
                            off, off + 2 * p->numel);
        off += 2 * p->numel;
    }
    len += snprintf(hdr + len, cap - len, "}");
    assert_true(len < cap);
    size_t total = 8 + len + off;
    unsigned char *buf = malloc(total);
    uint64_t n = len;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, hdr, len);
    Rng r;
    rng_seed(&r, 99);
    uint16_t *d = (uint16_t *)(buf + 8 + len); /* may be unaligned: use memcpy */
    size_t k = 0;
    for (int i = 0; i < t->n; i++) {
        float *x = *weights_slot(&ref->w, &t->p[i]);
        for (size_t j = 0; j < t->p[i].numel; j++, k++) {
            uint16_t h = rand_f16(&r, &x[j]);
            memcpy((unsigned char *)d + 2 * k, &h, 2);
        }
    }
    assert_int_equal(tu_write_file(path, buf, total), 0);
    free(buf);
    free(hdr);
}

/* An F16 checkpoint loads with exact values (subnormals included), and
 * base_make_flat then moves it into one owned buffer. */
static void test_f16_load_and_make_flat(void **state) {
    (void)state;
    ModelConfig c = small_cfg("llama", 1, 0, 4, 4);
    Base *ref, *b;
    assert_int_equal(base_new_random(&ref, &c, 3, 1.0f), 0);
    const char *dir = fresh_dir("f16");
    assert_int_equal(base_save_hf(ref, dir), 0);
    write_f16_model(ref, tu_path("%s/model.safetensors", dir));
    assert_int_equal(base_load(&b, dir), 0);
    assert_non_null(b->heap);
    assert_weights_close(b, ref, 0.0f, 0.0f);
    assert_int_equal(base_make_flat(b), 0);
    assert_null(b->heap);
    assert_int_equal(b->n_files, 0);
    assert_ptr_equal(b->w.embed, b->flat);
    assert_weights_close(b, ref, 0.0f, 0.0f);
    base_free(&b);
    base_free(&ref);
}

/* base_make_flat on a mapped F32 checkpoint: values kept, files closed,
 * every tensor at its table offset in b->flat, tied head still aliased. */
static void test_make_flat_mapped(void **state) {
    (void)state;
    ModelConfig cfgs[2] = {small_cfg("llama", 0, 0, 4, 2), small_cfg("qwen2", 1, 1, 2, 1)};
    for (int k = 0; k < 2; k++) {
        Base *ref, *b;
        assert_int_equal(base_new_random(&ref, &cfgs[k], 11, 0.1f), 0);
        const char *dir = fresh_dir(tu_path("flat%d", k));
        assert_int_equal(base_save_hf(ref, dir), 0);
        assert_int_equal(base_load(&b, dir), 0);
        assert_null(b->flat);
        assert_int_equal(base_make_flat(b), 0);
        assert_non_null(b->flat);
        assert_null(b->files);
        assert_int_equal(b->n_files, 0);
        for (int i = 0; i < b->table.n; i++)
            assert_ptr_equal(*weights_slot(&b->w, &b->table.p[i]), b->flat + b->table.p[i].offset);
        assert_weights_close(b, ref, 0.0f, 0.0f);
        assert_int_equal(base_make_flat(b), 0); /* already flat: no-op */
        assert_weights_close(b, ref, 0.0f, 0.0f);
        base_free(&b);
        base_free(&ref);
    }
}

/* Two shards listed by model.safetensors.index.json load; removing one is
 * an error naming the missing shard file. */
static void test_sharded(void **state) {
    (void)state;
    ModelConfig c = small_cfg("llama", 0, 0, 4, 2);
    Base *ref, *b;
    assert_int_equal(base_new_random(&ref, &c, 5, 0.02f), 0);
    const char *dir = fresh_dir("sharded");
    assert_int_equal(base_save_hf(ref, dir), 0);
    assert_int_equal(unlink(tu_path("%s/model.safetensors", dir)), 0);

    const char *shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    int n = ref->table.n, half = n / 2;
    StWrite *ts = calloc(n, sizeof *ts);
    size_t cap = 256 + 96 * (size_t)n, len = 0;
    char *idx = malloc(cap);
    len += snprintf(idx + len, cap - len, "{\"metadata\": {\"total_size\": %zu}, \"weight_map\": {",
                    ref->table.total * 4);
    for (int i = 0; i < n; i++) {
        const Param *p = &ref->table.p[i];
        ts[i] = (StWrite){p->name, *weights_slot(&ref->w, p), p->ndim, {p->shape[0], p->shape[1]}};
        len += snprintf(idx + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "", p->name,
                        shard[i >= half]);
    }
    len += snprintf(idx + len, cap - len, "}}");
    assert_true(len < cap);
    assert_int_equal(st_write(tu_path("%s/%s", dir, shard[0]), ts, half, ST_F32, NULL), 0);
    assert_int_equal(st_write(tu_path("%s/%s", dir, shard[1]), ts + half, n - half, ST_F32, NULL), 0);
    free(ts);
    assert_int_equal(tu_write_file(tu_path("%s/model.safetensors.index.json", dir), idx, len), 0);
    free(idx);

    assert_int_equal(base_load(&b, dir), 0);
    assert_int_equal(b->n_files, 2);
    assert_weights_close(b, ref, 0.0f, 0.0f);
    base_free(&b);

    assert_int_equal(unlink(tu_path("%s/%s", dir, shard[1])), 0);
    pl_clear_error();
    assert_true(base_load(&b, dir) < 0);
    assert_null(b);
    assert_error_mentions(shard[1]);
    base_free(&ref);
}

/* A tensor whose shape disagrees with config.json is rejected, naming the
 * tensor and both shapes; a missing untied lm_head is named too; a tied
 * config over a file that also has lm_head.weight loads. */
static void test_shape_and_missing(void **state) {
    (void)state;
    ModelConfig c = small_cfg("llama", 0, 0, 4, 2);
    Base *ref, *b;
    assert_int_equal(base_new_random(&ref, &c, 9, 0.02f), 0);
    const char *dir = fresh_dir("shape");
    assert_int_equal(base_save_hf(ref, dir), 0);
    const char *cj = tu_path("%s/config.json", dir);

    ModelConfig bad = c;
    bad.hidden_dim = 32;
    assert_int_equal(config_save_json(&bad, cj), 0);
    pl_clear_error();
    assert_int_equal(base_load(&b, dir), PL_EFORMAT);
    assert_null(b);
    assert_error_mentions("model.layers.0.mlp.gate_proj.weight");
    assert_error_mentions("[24, 16]");
    assert_error_mentions("[32, 16]");

    /* tied config, file has lm_head.weight: extra tensor ignored */
    ModelConfig tied = c;
    tied.tie_embeddings = 1;
    assert_int_equal(config_save_json(&tied, cj), 0);
    assert_int_equal(base_load(&b, dir), 0);
    assert_ptr_equal(b->w.lm_head, b->w.embed);
    tu_assert_close(b->w.embed, ref->w.embed, 37 * 16, 0, 0, "embed");
    base_free(&b);

    /* untied config over a tied checkpoint: lm_head.weight is missing */
    Base *tref;
    assert_int_equal(base_new_random(&tref, &tied, 9, 0.02f), 0);
    assert_int_equal(base_save_hf(tref, dir), 0);
    assert_int_equal(config_save_json(&c, cj), 0);
    pl_clear_error();
    assert_int_equal(base_load(&b, dir), PL_EFORMAT);
    assert_error_mentions("lm_head.weight");

    /* a bias the config has no place for is refused, not silently dropped */
    ModelConfig biased = small_cfg("qwen2", 0, 1, 4, 2);
    Base *bref;
    assert_int_equal(base_new_random(&bref, &biased, 9, 0.02f), 0);
    assert_int_equal(base_save_hf(bref, dir), 0);
    assert_int_equal(config_save_json(&c, cj), 0);
    pl_clear_error();
    assert_int_equal(base_load(&b, dir), PL_ENOTSUP);
    assert_error_mentions("q_proj.bias");

    /* no weights at all */
    assert_int_equal(unlink(tu_path("%s/model.safetensors", dir)), 0);
    assert_true(base_load(&b, dir) < 0);
    assert_error_mentions("model.safetensors");
    base_free(&bref);
    base_free(&tref);
    base_free(&ref);
}

/* -------------------------------------------------------------- llama2.c */

typedef struct {
    int C, H, L, NH, NKV, V, T, shared, version;
} L2c;

static size_t l2c_floats(const L2c *m) {
    size_t C = m->C, H = m->H, L = m->L, V = m->V, KVD = C * m->NKV / m->NH, HS = C / m->NH;
    size_t n = V * C + L * C + L * C * C + 2 * L * KVD * C + L * C * C + L * C + 3 * L * H * C + C;
    if (m->version == 0) n += m->T * HS; /* freq_cis real + imag, (T, HS/2) each */
    if (!m->shared) n += V * C;
    return n;
}

/* Writes a llama2.c file of random floats; returns those floats. */
static float *write_l2c(const char *path, const L2c *m, size_t *nbytes) {
    size_t n = l2c_floats(m);
    size_t hb = m->version == 0 ? 28 : 256;
    unsigned char *buf = calloc(hb + 4 * n, 1);
    int32_t p[7] = {m->C, m->H, m->L, m->NH, m->NKV, m->V, m->T};
    if (m->version == 0) {
        if (!m->shared) p[5] = -p[5];
        memcpy(buf, p, 28);
    } else {
        uint32_t magic = 0x616b3432;
        int32_t ver = 1;
        memcpy(buf, &magic, 4);
        memcpy(buf + 4, &ver, 4);
        memcpy(buf + 8, p, 28);
        buf[36] = (unsigned char)m->shared;
    }
    float *x = malloc(4 * n);
    Rng r;
    rng_seed(&r, 1234);
    tu_randn(x, n, &r, 1.0f);
    memcpy(buf + hb, x, 4 * n);
    *nbytes = hb + 4 * n;
    assert_int_equal(tu_write_file(path, buf, *nbytes), 0);
    free(buf);
    return x;
}

/* Checks one per-layer section of the file against a LayerWeights field. */
#define CHECK_SECTION(FIELD, SIZE)                                             \
    do {                                                                       \
        for (int l = 0; l < m->L; l++)                                         \
            tu_assert_close(b->w.layers[l].FIELD, x + cur + (size_t)l * (SIZE), \
                            (SIZE), 0, 0, #FIELD);                             \
        cur += (size_t)m->L * (SIZE);                                          \
    } while (0)

static void check_l2c(Base *b, const L2c *m, const float *x) {
    size_t C = m->C, H = m->H, V = m->V, KVD = C * m->NKV / m->NH, cur = 0;
    const ModelConfig *c = &b->cfg;
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->dim, m->C);
    assert_int_equal(c->hidden_dim, m->H);
    assert_int_equal(c->n_layers, m->L);
    assert_int_equal(c->n_heads, m->NH);
    assert_int_equal(c->n_kv_heads, m->NKV);
    assert_int_equal(c->vocab_size, m->V);
    assert_int_equal(c->head_dim, m->C / m->NH);
    assert_int_equal(c->max_seq_len, m->T);
    assert_int_equal(c->rope_interleaved, 1);
    assert_true(c->norm_eps == 1e-5f);
    assert_true(c->rope_theta == 1e4f);
    assert_int_equal(c->tie_embeddings, m->shared);
    assert_int_equal(c->qkv_bias, 0);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->n_eos, 1);
    assert_int_equal(c->eos_ids[0], 1); /* run.c stops on BOS */
    assert_non_null(b->flat);
    if (m->version == 0) {
        tu_assert_close(b->w.embed, x, V * C, 0, 0, "embed");
        cur += V * C;
        CHECK_SECTION(attn_norm, C);
        CHECK_SECTION(wq, C * C);
        CHECK_SECTION(wk, KVD * C);
        CHECK_SECTION(wv, KVD * C);
        CHECK_SECTION(wo, C * C);
        CHECK_SECTION(mlp_norm, C);
        CHECK_SECTION(w_gate, H * C);
        CHECK_SECTION(w_down, C * H);
        CHECK_SECTION(w_up, H * C);
        tu_assert_close(b->w.final_norm, x + cur, C, 0, 0, "final_norm");
        cur += C + (size_t)m->T * (C / m->NH);
    } else {
        CHECK_SECTION(attn_norm, C);
        CHECK_SECTION(mlp_norm, C);
        tu_assert_close(b->w.final_norm, x + cur, C, 0, 0, "final_norm");
        cur += C;
        tu_assert_close(b->w.embed, x + cur, V * C, 0, 0, "embed");
        cur += V * C;
        CHECK_SECTION(wq, C * C);
        CHECK_SECTION(wk, KVD * C);
        CHECK_SECTION(wv, KVD * C);
        CHECK_SECTION(wo, C * C);
        CHECK_SECTION(w_gate, H * C);
        CHECK_SECTION(w_down, C * H);
        CHECK_SECTION(w_up, H * C);
    }
    if (m->shared) {
        assert_ptr_equal(b->w.lm_head, b->w.embed);
    } else {
        tu_assert_close(b->w.lm_head, x + cur, V * C, 0, 0, "lm_head");
        cur += V * C;
    }
    assert_int_equal(cur, l2c_floats(m));
    assert_null(b->w.layers[0].bq);
}

/* A legacy llama2.c .bin (written here, unshared classifier + GQA, and
 * shared) loads with the llama2.c config and every weight in place. */
static void test_llama2c_legacy(void **state) {
    (void)state;
    L2c ms[2] = {{16, 24, 2, 4, 2, 37, 32, 0, 0}, {8, 12, 3, 2, 2, 11, 16, 1, 0}};
    for (int k = 0; k < 2; k++) {
        const char *path = tu_path("%s/legacy%d.bin", tu_tmp_dir(), k);
        size_t nb;
        float *x = write_l2c(path, &ms[k], &nb);
        Base *b;
        assert_int_equal(base_load(&b, path), 0);
        check_l2c(b, &ms[k], x);
        base_free(&b);
        free(x);
    }
}

/* A version 1 ("ak42") export loads the same way. */
static void test_llama2c_v1(void **state) {
    (void)state;
    L2c ms[2] = {{16, 24, 2, 4, 1, 37, 32, 1, 1}, {16, 24, 2, 4, 2, 19, 32, 0, 1}};
    for (int k = 0; k < 2; k++) {
        const char *path = tu_path("%s/v1_%d.bin", tu_tmp_dir(), k);
        size_t nb;
        float *x = write_l2c(path, &ms[k], &nb);
        Base *b;
        assert_int_equal(base_load(&b, path), 0);
        check_l2c(b, &ms[k], x);
        base_free(&b);
        free(x);
    }
}

/* A truncated (or overlong) .bin is rejected saying expected vs actual
 * bytes; an unknown export version is "not supported". */
static void test_llama2c_bad(void **state) {
    (void)state;
    L2c m = {16, 24, 2, 4, 2, 37, 32, 0, 0};
    const char *path = tu_path("%s/trunc.bin", tu_tmp_dir());
    size_t nb;
    float *x = write_l2c(path, &m, &nb);
    free(x);
    assert_int_equal(truncate(path, (off_t)nb - 4), 0);
    Base *b;
    pl_clear_error();
    assert_int_equal(base_load(&b, path), PL_EFORMAT);
    assert_null(b);
    assert_error_mentions(tu_path("expected %zu bytes", nb));
    assert_error_mentions(tu_path("file has %zu", nb - 4));

    m.version = 1;
    x = write_l2c(path, &m, &nb);
    free(x);
    size_t len;
    char *buf = tu_read_file(path, &len);
    buf[4] = 2; /* version 2: int8 quantized */
    assert_int_equal(tu_write_file(path, buf, len), 0);
    free(buf);
    assert_int_equal(base_load(&b, path), PL_ENOTSUP);
    assert_error_mentions("version 2");

    int32_t junk[7] = {16, 24, 2, 3, 2, 37, 32}; /* heads not a multiple of kv heads */
    assert_int_equal(tu_write_file(path, junk, sizeof junk), 0);
    assert_int_equal(base_load(&b, path), PL_EFORMAT);
    assert_int_equal(base_load(&b, tu_path("%s/none.bin", tu_tmp_dir())), PL_EIO);

    /* a billion layers: refused naming the count and the file, nothing sized */
    int32_t huge[7] = {16, 24, 1000000000, 4, 2, 37, 32};
    assert_int_equal(tu_write_file(path, huge, sizeof huge), 0);
    assert_int_equal(base_load(&b, path), PL_ERANGE);
    assert_error_mentions("num_hidden_layers 1000000000");
    assert_error_mentions("trunc.bin");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_table),
        cmocka_unit_test(test_config_parse),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_hf_roundtrip),
        cmocka_unit_test(test_bf16_load),
        cmocka_unit_test(test_f16_load_and_make_flat),
        cmocka_unit_test(test_make_flat_mapped),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_shape_and_missing),
        cmocka_unit_test(test_llama2c_legacy),
        cmocka_unit_test(test_llama2c_v1),
        cmocka_unit_test(test_llama2c_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
