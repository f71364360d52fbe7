/* plumb bench: decode and training throughput on this machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/rng.h"
#include "model/generate.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb bench decode --model PATH [--batch B] [--prompt-len P] [--tokens N]\n"
            "                          [--threads T] [--repeat R]\n"
            "       plumb bench train  --model PATH [--batch B] [--seq-len T] [--steps S]\n"
            "                          [--lora-rank R | --full] [--dpo] [--threads T]\n"
            "       (either: [--device cpu|cuda:N])\n"
            "\n"
            "decode: B sequences of P random prompt ids, then N new tokens each, greedy\n"
            "        with EOS ignored; prints decode tokens/s (all sequences together),\n"
            "        the best of R runs (default 3). Defaults B 1, P 8, N 128.\n"
            "train:  forward + backward of B packed sequences of T random ids with\n"
            "        log-prob loss; prints tokens/s and ms per step (median of S steps\n"
            "        after one warm-up). Defaults B 4, T 256, S 5, LoRA rank 8 on q,v;\n"
            "        --full trains every weight instead. --dpo times a DPO step's compute:\n"
            "        B pairs, the policy's forward + backward on both halves and the\n"
            "        reference's (the base without adapter) forward.\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench_decode(Model *m, int B, int P, int N, int repeat) {
    const ModelConfig *c = &m->base->cfg;
    if (P + N > c->max_seq_len) {
        fprintf(stderr, "plumb bench: prompt %d + tokens %d exceed the context %d\n", P, N, c->max_seq_len);
        return 1;
    }
    Rng r;
    rng_seed(&r, 1234);
    int *ids = malloc(sizeof(int) * (size_t)B * P);
    const int **prompts = malloc(sizeof(int *) * B);
    int *lens = malloc(sizeof(int) * B);
    GenResult *res = calloc((size_t)B, sizeof *res);
    for (int i = 0; i < B * P; i++) ids[i] = (int)(rng_u64(&r) % (unsigned)c->vocab_size);
    for (int b = 0; b < B; b++) {
        prompts[b] = ids + (size_t)b * P;
        lens[b] = P;
    }
    GenParams gp = {.max_new_tokens = N, .sampler = {.temperature = 0.0f, .top_p = 1.0f}, .ignore_eos = 1};
    double best = 0.0;
    int rc = 0;
    for (int rep = 0; rep < repeat && rc == 0; rep++) {
        /* time the prefill alone, then subtract it from the full run */
        GenParams g1 = gp;
        g1.max_new_tokens = 1;
        double t0 = pl_now_s();
        rc = gen_generate(m, prompts, lens, B, &g1, res);
        double t_prefill = pl_now_s() - t0;
        if (rc < 0) break;
        for (int b = 0; b < B; b++) gen_result_free(&res[b]);
        t0 = pl_now_s();
        rc = gen_generate(m, prompts, lens, B, &gp, res);
        double t = pl_now_s() - t0 - t_prefill;
        if (rc < 0) break;
        long toks = 0;
        for (int b = 0; b < B; b++) {
            toks += res[b].n - 1;
            gen_result_free(&res[b]);
        }
        /* a run so short that the prefill's own noise exceeds it: count the
         * whole run, prefill included (a lower bound) */
        if (t <= 0) t = t + t_prefill;
        double tps = toks / (t > 1e-9 ? t : 1e-9);
        if (tps > best) best = tps;
    }
    if (rc < 0) report_error("bench", "decode");
    else printf("decode: batch %d, prompt %d, %d new tokens: %.1f tokens/s\n", B, P, N, best);
    free(ids);
    free(prompts);
    free(lens);
    free(res);
    return rc < 0 ? 1 : 0;
}

/* With ref (DPO), each step also runs ref forward over the batch: B counts
 * the pairs, and the batch holds 2B sequences (chosen and rejected). */
static int bench_train(Model *m, Model *ref, int B, int T, int steps) {
    int pairs = B;
    if (ref) B *= 2;
    const ModelConfig *c = &m->base->cfg;
    if (T > c->max_seq_len) {
        fprintf(stderr, "plumb bench: --seq-len %d exceeds the context %d\n", T, c->max_seq_len);
        return 1;
    }
    int N = B * T;
    Rng r;
    rng_seed(&r, 99);
    int *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N), *cu = malloc(sizeof(int) * (B + 1));
    float *lp = malloc(sizeof(float) * N), *dlp = malloc(sizeof(float) * N);
    double *ms = malloc(sizeof(double) * steps);
    for (int i = 0; i < N; i++) tok[i] = (int)(rng_u64(&r) % (unsigned)c->vocab_size);
    for (int b = 0; b <= B; b++) cu[b] = b * T;
    for (int i = 0; i < N; i++) {
        tgt[i] = (i + 1) % T ? tok[i + 1] : -1;
        dlp[i] = tgt[i] >= 0 ? -1.0f / N : 0.0f;
    }
    Batch b = {.tokens = tok, .targets = tgt, .cu_seqlens = cu, .B = B};
    int rc = 0;
    for (int s = -1; s < steps && rc == 0; s++) {
        double t0 = pl_now_s();
        model_zero_grad(m);
        if (ref) rc = model_forward(ref, &b, lp, NULL, NULL, NULL);
        if (rc == 0) rc = model_forward(m, &b, lp, NULL, NULL, NULL);
        if (rc == 0) rc = model_backward(m, &b, dlp, NULL, NULL);
        if (s >= 0) ms[s] = (pl_now_s() - t0) * 1e3;
    }
    if (rc < 0) {
        report_error("bench", "train");
    } else {
        qsort(ms, steps, sizeof *ms, cmp_double);
        double med = ms[steps / 2];
        if (ref)
            printf("dpo: %d pairs x %d tokens, %s: %.1f ms/step, %.1f tokens/s (activations %.1f MiB)\n",
                   pairs, T, m->train_base ? "full" : "lora", med, N / (med / 1e3),
                   model_acts_bytes(m) / 1048576.0);
        else
            printf("train: batch %d x %d tokens, %s: %.1f ms/step, %.1f tokens/s (activations %.1f MiB)\n",
                   B, T, m->train_base ? "full" : "lora", med, N / (med / 1e3),
                   model_acts_bytes(m) / 1048576.0);
    }
    free(tok);
    free(tgt);
    free(cu);
    free(lp);
    free(dlp);
    free(ms);
    return rc < 0 ? 1 : 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1], *model_path = NULL;
    int is_decode = !strcmp(mode, "decode");
    if (!is_decode && strcmp(mode, "train")) {
        fprintf(stderr, "plumb bench: mode must be decode or train, got '%s'\n", mode);
        return 2;
    }
    int B = is_decode ? 1 : 4, P = 8, N = 128, T = 256, steps = 5, threads = 0, rank = 8, full = 0;
    int repeat = 3, dpo = 0;
    const char *device = "cpu";
    const Opt opts[] = {
        OPT_REQ("--model", &model_path), OPT_INT("--batch", &B, 1, 4096),
        OPT_INT("--prompt-len", &P, 1, 1 << 20), OPT_INT("--tokens", &N, 2, 1 << 20),
        OPT_INT("--seq-len", &T, 2, 1 << 20), OPT_INT("--steps", &steps, 1, 100000),
        OPT_INT("--threads", &threads, 1, 1024), OPT_INT("--lora-rank", &rank, 1, 4096),
        OPT_INT("--repeat", &repeat, 1, 1000), OPT_FLAG("--full", &full),
        OPT_FLAG("--dpo", &dpo), OPT_STR("--device", &device), OPT_END};
    int prc = opts_parse("bench", argc, argv, 2, opts, usage);
    if (prc >= 0) return prc;
    set_threads(threads);
    Device *dev;
    if (open_device("bench", device, &dev) < 0) return 1;
    Base *base;
    if (base_load(&base, model_path) < 0) {
        fprintf(stderr, "plumb bench: loading %s: %s\n", model_path, pl_error());
        dev_close(&dev);
        return 1;
    }
    ModelOptions opt = {.dev = dev, .decode_copy = is_decode};
    if (!is_decode) {
        if (full) {
            opt.train_base = 1;
            if (base_make_flat(base) < 0) {
                report_error("bench", NULL);
                base_free(&base);
                dev_close(&dev);
                return 1;
            }
        } else {
            opt.lora_rank = rank;
            opt.lora_alpha = 2.0f * rank;
            opt.lora_targets = (1u << LORA_Q) | (1u << LORA_V);
        }
    }
    Model *m;
    if (model_new(&m, base, &opt) < 0) {
        report_error("bench", NULL);
        base_free(&base);
        dev_close(&dev);
        return 1;
    }
    /* DPO's reference: the base alone (no adapter, not trained) */
    Model *ref = NULL;
    ModelOptions ro = {.dev = dev};
    int rc = !is_decode && dpo && model_new(&ref, base, &ro) < 0 ? -1 : 0;
    if (rc < 0) report_error("bench", "the DPO reference");
    else rc = is_decode ? bench_decode(m, B, P, N, repeat) : bench_train(m, ref, B, T, steps);
    if (rc < 0) rc = 1;
    model_free(&ref);
    model_free(&m);
    base_free(&base);
    dev_close(&dev);
    return rc;
}
