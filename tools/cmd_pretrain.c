/* plumb pretrain: full training of a small byte-level model on a text
 * file (token id = byte value, vocabulary 256). It is how the project
 * makes its own small models for the demo and for tests, and a check that
 * forward, backward and AdamW learn together. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/rng.h"
#include "model/optim.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb pretrain --text FILE --out DIR [--steps N] [--batch B] [--seq-len T]\n"
            "                      [--lr X] [--warmup N] [--dim C] [--hidden H] [--layers L]\n"
            "                      [--heads NH] [--kv-heads NKV] [--eos ID] [--seed S]\n"
            "                      [--threads N] [--log-every N]\n"
            "\n"
            "Trains every weight of a new byte-level Llama model (vocabulary 256: a token\n"
            "is a byte) on random windows of FILE with AdamW (cosine schedule, warmup,\n"
            "clipping at 1.0) and writes a Hugging Face folder to DIR. Defaults: 300 steps,\n"
            "batch 16, seq-len 64, lr 3e-3, warmup 20, C 64, H 172, L 2, NH 4, NKV 2,\n"
            "EOS 10 (newline), so generation stops at the end of a line.\n");
}

int cmd_pretrain(int argc, char **argv) {
    const char *text_path = NULL, *out = NULL;
    int steps = 300, B = 16, T = 64, warmup = 20, threads = 0, log_every = 10, eos = 10;
    float lr = 3e-3f;
    unsigned long long seed = 0;
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 256, c.dim = 64, c.hidden_dim = 172, c.n_layers = 2, c.n_heads = 4;
    c.n_kv_heads = 2;
    const Opt opts[] = {
        OPT_REQ("--text", &text_path), OPT_REQ("--out", &out),
        OPT_INT("--steps", &steps, 1, 1 << 30), OPT_INT("--batch", &B, 1, 1 << 16),
        OPT_INT("--seq-len", &T, 2, 1 << 16), OPT_FLOAT("--lr", &lr, 0.0f, 10.0f),
        OPT_INT("--warmup", &warmup, 0, 1 << 30), OPT_INT("--dim", &c.dim, 2, 1 << 16),
        OPT_INT("--hidden", &c.hidden_dim, 1, 1 << 18), OPT_INT("--layers", &c.n_layers, 1, 1024),
        OPT_INT("--heads", &c.n_heads, 1, 1024), OPT_INT("--kv-heads", &c.n_kv_heads, 1, 1024),
        OPT_INT("--eos", &eos, 0, 255), OPT_U64("--seed", &seed),
        OPT_INT("--threads", &threads, 1, 1024), OPT_INT("--log-every", &log_every, 1, 1 << 30),
        OPT_END};
    int prc = opts_parse("pretrain", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    c.head_dim = c.dim / c.n_heads;
    c.max_seq_len = T > 128 ? T : 128;
    c.bos_id = -1;
    c.eos_ids[0] = eos;
    c.n_eos = 1;
    if (config_validate(&c) < 0) {
        report_error("pretrain", NULL);
        return 2;
    }
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        fprintf(stderr, "plumb pretrain: cannot open %s\n", text_path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < T + 1) {
        fprintf(stderr, "plumb pretrain: %s has %ld bytes, fewer than --seq-len + 1 = %d\n", text_path,
                size, T + 1);
        fclose(f);
        return 1;
    }
    unsigned char *text = malloc((size_t)size);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        fprintf(stderr, "plumb pretrain: reading %s failed\n", text_path);
        free(text);
        return 1;
    }
    set_threads(threads);

    Base *base = NULL;
    Model *m = NULL;
    AdamW opt = {0};
    int N = B * T, rc = 0;
    int *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N), *cu = malloc(sizeof(int) * (B + 1));
    float *lp = malloc(sizeof(float) * N), *dlp = malloc(sizeof(float) * N);
    ModelOptions mo = {.train_base = 1, .seed = seed};
    OptimConfig oc;
    optim_defaults(&oc);
    oc.lr = lr, oc.weight_decay = 0.01f, oc.grad_clip = 1.0f, oc.schedule = LR_COSINE;
    oc.warmup_steps = warmup, oc.total_steps = steps, oc.min_lr_ratio = 0.1f;
    if ((rc = base_new_random(&base, &c, seed, 0.02f)) < 0 || (rc = model_new(&m, base, &mo)) < 0 ||
        (rc = adamw_init(&opt, base->table.total, &oc)) < 0) {
        report_error("pretrain", NULL);
        goto done;
    }
    fprintf(stderr, "plumb pretrain: %.2fM parameters, %ld bytes of text, %d steps of %d tokens\n",
            config_num_params(&c) / 1e6, size, steps, N);
    Rng rng;
    rng_seed(&rng, seed);
    for (int b = 0; b <= B; b++) cu[b] = b * T;
    Batch batch = {.tokens = tok, .targets = tgt, .cu_seqlens = cu, .B = B};
    double t_start = pl_now_s(), loss_acc = 0.0;
    int loss_n = 0;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            long start = (long)(rng_u64(&rng) % (unsigned long long)(size - T));
            for (int t = 0; t < T; t++) {
                tok[b * T + t] = text[start + t];
                tgt[b * T + t] = text[start + t + 1];
            }
        }
        for (int i = 0; i < N; i++) dlp[i] = -1.0f / N;
        model_zero_grad(m);
        if ((rc = model_forward(m, &batch, lp, NULL, NULL, NULL)) < 0 ||
            (rc = model_backward(m, &batch, dlp, NULL, NULL)) < 0) {
            report_error("pretrain", NULL);
            goto done;
        }
        double loss = 0.0;
        for (int i = 0; i < N; i++) loss -= lp[i];
        loss_acc += loss / N;
        loss_n++;
        float *g = m->g_base;
        size_t n = base->table.total;
        grad_clip(&g, &n, 1, oc.grad_clip);
        float cur_lr = lr_at(&oc, opt.step);
        adamw_step(&opt, base->flat, m->g_base);
        if ((step + 1) % log_every == 0 || step + 1 == steps) {
            double el = pl_now_s() - t_start;
            double tps = (double)(step + 1) * N / el;
            double eta = el / (step + 1) * (steps - step - 1);
            fprintf(stderr, "step %5d/%d  loss %.4f  lr %.2e  %.0f tok/s  eta %.0fs\n", step + 1, steps,
                    loss_acc / loss_n, cur_lr, tps, eta);
            loss_acc = 0.0;
            loss_n = 0;
        }
    }
    if ((rc = base_save_hf(base, out)) < 0) report_error("pretrain", out);
    else fprintf(stderr, "plumb pretrain: wrote %s\n", out);
done:
    adamw_free(&opt);
    model_free(&m);
    base_free(&base);
    free(text);
    free(tok);
    free(tgt);
    free(cu);
    free(lp);
    free(dlp);
    return rc < 0 ? 1 : 0;
}
