/* plumb lora: make a new adapter, or merge one into its base for export. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb lora init  --model PATH --out DIR [--rank R] [--alpha A]\n"
            "                        [--targets q,k,v,o,gate,up,down|all] [--seed S] [--b-std X]\n"
            "       plumb lora merge --model PATH --adapter DIR --out DIR\n"
            "\n"
            "init:  writes a new adapter for the model in PEFT's layout\n"
            "       (adapter_config.json + adapter_model.safetensors). Standard init: A\n"
            "       uniform in +-1/sqrt(in_features), B zero. --b-std X draws B from\n"
            "       normal(0, X) instead, for tests that need an adapter with an effect.\n"
            "       Defaults: rank 8, alpha 16, targets q,v, seed 0.\n"
            "merge: folds the adapter into the weights and writes a Hugging Face folder\n"
            "       (config.json + model.safetensors, fp32) that transformers loads.\n");
}

static int lora_init_cmd(const char *model_path, const char *out, LoraConfig *lc,
                         unsigned long long seed, float b_std) {
    Base *base;
    if (base_load(&base, model_path) < 0) {
        report_error("lora", model_path);
        return 1;
    }
    Lora *l;
    int rc = lora_new(&l, &base->cfg, lc, seed);
    if (rc == 0 && b_std > 0.0f) {
        Rng r;
        rng_seed2(&r, seed, 0xb);
        for (int li = 0; li < l->n_layers; li++)
            for (int t = 0; t < LORA_NT; t++) {
                float *b = l->b[li * LORA_NT + t];
                if (!b) continue;
                int ic, oc;
                lora_target_dims(&base->cfg, t, &ic, &oc);
                for (int i = 0; i < oc * lc->rank; i++) b[i] = rng_normal(&r) * b_std;
            }
    }
    if (rc == 0) rc = lora_save_peft(l, &base->cfg, out, model_path);
    if (rc < 0) report_error("lora init", NULL);
    else fprintf(stderr, "plumb lora: wrote %s (%zu parameters)\n", out, l->n);
    lora_free(&l);
    base_free(&base);
    return rc < 0 ? 1 : 0;
}

static int lora_merge_cmd(const char *model_path, const char *adapter, const char *out) {
    Base *base;
    if (base_load(&base, model_path) < 0) {
        report_error("lora", model_path);
        return 1;
    }
    Lora *l = NULL;
    int rc = lora_load_peft(&l, &base->cfg, adapter);
    if (rc == 0) rc = base_make_flat(base);
    if (rc == 0) rc = lora_merge(l, base);
    if (rc == 0) rc = base_save_hf(base, out);
    if (rc < 0) report_error("lora merge", NULL);
    else fprintf(stderr, "plumb lora: wrote merged model %s\n", out);
    lora_free(&l);
    base_free(&base);
    return rc < 0 ? 1 : 0;
}

/* OPT_FN for --targets: "q,v" into the LoraConfig's mask. */
static int targets_opt(void *ctx, const char *opt, const char *v) {
    if (lora_parse_targets(v, &((LoraConfig *)ctx)->targets) < 0) {
        fprintf(stderr, "plumb lora: %s\n", pl_error());
        return -1;
    }
    return 0;
}

int cmd_lora(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1], *model_path = NULL, *out = NULL, *adapter = NULL;
    LoraConfig lc = {.rank = 8, .alpha = 16.0f, .targets = (1u << LORA_Q) | (1u << LORA_V)};
    unsigned long long seed = 0;
    float b_std = 0.0f;
    int alpha_set = 0;
    const Opt opts[] = {
        OPT_REQ("--model", &model_path), OPT_REQ("--out", &out), OPT_STR("--adapter", &adapter),
        OPT_INT("--rank", &lc.rank, 1, 4096),
        {.name = "--alpha", .kind = OPT_KIND_FLOAT, .dst = &lc.alpha, .lo = 1e-6f, .hi = 1e6f,
         .seen = &alpha_set},
        OPT_U64("--seed", &seed), OPT_FLOAT("--b-std", &b_std, 0.0f, 100.0f),
        OPT_FN("--targets", targets_opt, &lc), OPT_END};
    int prc = opts_parse("lora", argc, argv, 2, opts, usage);
    if (prc >= 0) return prc;
    if (!alpha_set) lc.alpha = 2.0f * lc.rank;
    if (!strcmp(mode, "init")) return lora_init_cmd(model_path, out, &lc, seed, b_std);
    if (!strcmp(mode, "merge")) {
        if (!adapter) {
            fprintf(stderr, "plumb lora merge: needs --adapter\n");
            return 2;
        }
        return lora_merge_cmd(model_path, adapter, out);
    }
    fprintf(stderr, "plumb lora: mode must be init or merge, got '%s'\n", mode);
    return 2;
}
