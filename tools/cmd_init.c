/* plumb init: a new model with random weights, saved as a Hugging Face
 * folder or a llama2.c .bin. Tests and benchmarks make their models this
 * way; `plumb pretrain` starts from one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb init --out PATH [--format hf|llama2c] [--preset tiny|15m]\n"
            "                  [--vocab V] [--dim C] [--hidden H] [--layers L] [--heads NH]\n"
            "                  [--kv-heads NKV] [--seq-len T] [--theta X] [--tie] [--qkv-bias]\n"
            "                  [--seed S] [--std X]\n"
            "\n"
            "Presets: tiny (V 256, C 64, H 172, L 2, NH 4, NKV 2, T 128) and 15m (the\n"
            "llama2.c stories15M shape: V 32000, C 288, H 768, L 6, NH 6, NKV 6, T 256,\n"
            "tied embeddings).\n"
            "Options after --preset override it. --format llama2c writes the legacy .bin\n"
            "(interleaved RoPE, theta 10000, eps 1e-5); hf writes config.json and\n"
            "model.safetensors. Weights are normal(0, std), std 0.02 by default.\n");
}

static int preset(ModelConfig *c, const char *name) {
    config_defaults(c);
    if (!strcmp(name, "tiny")) {
        c->vocab_size = 256, c->dim = 64, c->hidden_dim = 172, c->n_layers = 2;
        c->n_heads = 4, c->n_kv_heads = 2, c->max_seq_len = 128;
    } else if (!strcmp(name, "15m")) {
        c->vocab_size = 32000, c->dim = 288, c->hidden_dim = 768, c->n_layers = 6;
        c->n_heads = 6, c->n_kv_heads = 6, c->max_seq_len = 256;
        c->tie_embeddings = 1;
    } else {
        fprintf(stderr, "plumb init: unknown preset '%s' (tiny, 15m)\n", name);
        return -1;
    }
    c->head_dim = c->dim / c->n_heads;
    return 0;
}

/* llama2.c legacy layout: header of 7 int32, then the weights by kind
 * across layers (all wq, then all wk, ...), freq tables, optional wcls. */
static int save_llama2c(const Base *b, const char *path) {
    const ModelConfig *c = &b->cfg;
    FILE *f = fopen(path, "wb");
    if (!f) return pl_fail(PL_EIO, "cannot write %s", path);
    int hdr[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                  c->tie_embeddings ? c->vocab_size : -c->vocab_size, c->max_seq_len};
    int ok = fwrite(hdr, sizeof hdr, 1, f) == 1;
    const Weights *w = &b->w;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
#define PUT(ptr, n) ok = ok && fwrite((ptr), sizeof(float), (size_t)(n), f) == (size_t)(n)
    PUT(w->embed, (size_t)c->vocab_size * c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].attn_norm, c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].wq, (size_t)QD * c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].wk, (size_t)KD * c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].wv, (size_t)KD * c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].wo, (size_t)c->dim * QD);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].mlp_norm, c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].w_gate, (size_t)c->hidden_dim * c->dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].w_down, (size_t)c->dim * c->hidden_dim);
    for (int l = 0; l < c->n_layers; l++) PUT(w->layers[l].w_up, (size_t)c->hidden_dim * c->dim);
    PUT(w->final_norm, c->dim);
    size_t nfreq = (size_t)c->max_seq_len * c->head_dim / 2;
    float *zeros = calloc(nfreq, sizeof(float)); /* unused by readers: they recompute RoPE */
    PUT(zeros, nfreq);
    PUT(zeros, nfreq);
    free(zeros);
    if (!c->tie_embeddings) PUT(w->lm_head, (size_t)c->vocab_size * c->dim);
#undef PUT
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : pl_fail(PL_EIO, "writing %s failed", path);
}

/* OPT_FN for --preset: the whole config from a named preset. */
static int preset_opt(void *ctx, const char *opt, const char *v) {
    return preset(ctx, v) ? -1 : 0;
}

int cmd_init(int argc, char **argv) {
    ModelConfig c;
    preset(&c, "tiny");
    const char *out = NULL, *format = "hf";
    unsigned long long seed = 0;
    float std = 0.02f;
    int explicit_dim_heads = 0;
    const Opt opts[] = {
        OPT_REQ("--out", &out), OPT_STR("--format", &format), OPT_FN("--preset", preset_opt, &c),
        OPT_INT("--vocab", &c.vocab_size, 1, 1 << 24),
        {.name = "--dim", .kind = OPT_KIND_INT, .dst = &c.dim, .lo = 2, .hi = 1 << 16,
         .seen = &explicit_dim_heads},
        OPT_INT("--hidden", &c.hidden_dim, 1, 1 << 18), OPT_INT("--layers", &c.n_layers, 1, 1024),
        {.name = "--heads", .kind = OPT_KIND_INT, .dst = &c.n_heads, .lo = 1, .hi = 1024,
         .seen = &explicit_dim_heads},
        OPT_INT("--kv-heads", &c.n_kv_heads, 1, 1024),
        OPT_INT("--seq-len", &c.max_seq_len, 1, 1 << 20),
        OPT_FLOAT("--theta", &c.rope_theta, 1.0f, 1e9f), OPT_U64("--seed", &seed),
        OPT_FLOAT("--std", &std, 0.0f, 10.0f), OPT_FLAG("--tie", &c.tie_embeddings),
        OPT_FLAG("--qkv-bias", &c.qkv_bias), OPT_END};
    int prc = opts_parse("init", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    int l2c = !strcmp(format, "llama2c");
    if (!l2c && strcmp(format, "hf")) {
        fprintf(stderr, "plumb init: --format must be hf or llama2c\n");
        return 2;
    }
    if (explicit_dim_heads) c.head_dim = c.dim / c.n_heads;
    if (l2c) {
        c.rope_interleaved = 1;
        c.rope_theta = 10000.0f;
        c.norm_eps = 1e-5f;
        if (c.qkv_bias) {
            fprintf(stderr, "plumb init: the llama2.c format has no q/k/v bias\n");
            return 2;
        }
    }
    if (config_validate(&c) < 0) {
        report_error("init", NULL);
        return 2;
    }
    Base *b;
    if (base_new_random(&b, &c, seed, std) < 0) {
        report_error("init", NULL);
        return 1;
    }
    int rc = l2c ? save_llama2c(b, out) : base_save_hf(b, out);
    if (rc < 0) report_error("init", out);
    else
        fprintf(stderr, "plumb init: wrote %s (%s, %.2fM parameters)\n", out, format,
                config_num_params(&c) / 1e6);
    base_free(&b);
    return rc < 0 ? 1 : 0;
}
