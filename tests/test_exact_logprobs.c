/* test_exact_logprobs: the log-probs generation returns are, to the bit,
 * the log-probs the training forward computes for the same tokens, on CPU
 * in fp32, whatever the batch: for every architecture (Llama with
 * interleaved and with half RoPE, scaled RoPE, Qwen2's q/k/v bias, Qwen3's
 * q/k norm, tied embeddings, GQA), with LoRA and without, at several
 * temperatures. Generation decodes many prompts together over the KV cache;
 * the forward packs the results with other sequences in another order,
 * past the size where a small-batch kernel would take over. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/kernels.h"
#include "model/generate.h"
#include "testutil.h"

typedef struct {
    const char *name;
    int qkv_bias, qk_norm, interleaved, tie, kv_heads;
    RopeType rope;
} Arch;

static const Arch ARCHS[] = {
    {"llama (llama2.c rope)", 0, 0, 1, 0, 2, ROPE_DEFAULT},
    {"llama (hf rope, llama3 scaling)", 0, 0, 0, 0, 1, ROPE_LLAMA3},
    {"qwen2 (bias, tied)", 1, 0, 0, 1, 2, ROPE_DEFAULT},
    {"qwen3 (q/k norm, yarn)", 0, 1, 0, 0, 4, ROPE_YARN},
};

enum { NP = 5, MAXNEW = 14 };

/* max |a - b| over n, and whether any bit differs */
static double max_diff(const float *a, const float *b, int n, int *bits) {
    double m = 0;
    *bits = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m) m = d;
        if (memcmp(&a[i], &b[i], sizeof(float))) *bits = 1;
    }
    return m;
}

static void check(const Arch *a, int lora, float temp, int copy) {
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 61, c.dim = 48, c.hidden_dim = 80, c.n_layers = 2, c.n_heads = 4;
    c.n_kv_heads = a->kv_heads, c.head_dim = 12, c.max_seq_len = 64;
    c.qkv_bias = a->qkv_bias, c.qk_norm = a->qk_norm, c.rope_interleaved = a->interleaved;
    c.tie_embeddings = a->tie;
    c.rope.type = a->rope;
    if (a->rope != ROPE_DEFAULT) {
        c.rope.factor = 4.0f, c.rope.low_freq_factor = 1.0f, c.rope.high_freq_factor = 4.0f;
        c.rope.original_max_pos = 32, c.rope.beta_fast = 32.0f, c.rope.beta_slow = 1.0f;
        c.rope.truncate = 1;
    }
    c.eos_ids[0] = 3, c.n_eos = 1;
    Base *base;
    Model *m;
    assert_int_equal(base_new_random(&base, &c, 31, 0.4f), 0);
    ModelOptions opt = {.lora_rank = lora ? 4 : 0, .lora_alpha = 8.0f,
                        .lora_targets = (1u << LORA_NT) - 1, .seed = 5, .decode_copy = copy};
    assert_int_equal(model_new(&m, base, &opt), 0);
    if (lora) {
        Rng r;
        rng_seed(&r, 8);
        tu_randn(m->lora->mem, m->lora->n, &r, 0.3f);
    }
    /* prompts of different lengths, decoded together */
    int pl[NP] = {3, 9, 1, 6, 17}, *pp[NP];
    Rng r;
    rng_seed(&r, 77);
    for (int i = 0; i < NP; i++) {
        pp[i] = malloc(sizeof(int) * (size_t)pl[i]);
        for (int t = 0; t < pl[i]; t++) pp[i][t] = 4 + (int)(rng_u64(&r) % 57);
    }
    GenParams gp = {.max_new_tokens = MAXNEW, .sampler = {.temperature = temp, .top_p = 1.0f},
                    .seed = 9, .ignore_eos = 1};
    GenResult res[NP];
    assert_int_equal(gen_generate(m, (const int *const *)pp, pl, NP, &gp, res), 0);

    /* the forward: the sequences in reverse order, after a filler */
    int ids[1024], tg[1024], cu[NP + 2], at[NP], N = 0, B = 0;
    cu[0] = 0;
    for (int t = 0; t < 11; t++) ids[N + t] = 5 + t, tg[N + t] = t + 1 < 11 ? 6 + t : -1;
    N += 11, cu[++B] = N;
    for (int i = NP - 1; i >= 0; i--) {
        int n = pl[i] + res[i].n;
        memcpy(ids + N, pp[i], sizeof(int) * (size_t)pl[i]);
        memcpy(ids + N + pl[i], res[i].ids, sizeof(int) * (size_t)res[i].n);
        for (int t = 0; t < n; t++) tg[N + t] = t + 1 < n ? ids[N + t + 1] : -1;
        at[i] = N;
        N += n, cu[++B] = N;
    }
    float *lp = malloc(sizeof(float) * (size_t)N);
    Batch b = {.tokens = ids, .targets = tg, .cu_seqlens = cu, .B = B, .temperature = temp};
    assert_int_equal(model_forward(m, &b, lp, NULL, NULL, NULL), 0);
    for (int i = 0; i < NP; i++) {
        int bits;
        double d = max_diff(res[i].logprobs, lp + at[i] + pl[i] - 1, res[i].n, &bits);
        if (bits)
            fail_msg("%s, %s, temperature %g, prompt %d: generation and training forward differ "
                     "by up to %.3g", a->name, lora ? "LoRA" : "no LoRA", (double)temp, i, d);
        gen_result_free(&res[i]);
        free(pp[i]);
    }
    free(lp);
    model_free(&m);
    base_free(&base);
}

/* matmul_forward gives each row the same bits alone, in any subset and in
 * the whole batch, with bias and accumulating: every shape class (IC with
 * and without a vector tail, OC below, at and off multiples of 4 and 16). */
static void test_matmul_invariant(void **state) {
    (void)state;
    const int ICs[] = {16, 37, 64, 203}, OCs[] = {3, 16, 21, 37, 100};
    enum { N = 70 };
    Rng r;
    rng_seed(&r, 3);
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 5; b++) {
            int IC = ICs[a], OC = OCs[b];
            float *x = malloc(sizeof(float) * N * IC), *w = malloc(sizeof(float) * OC * IC);
            float *bias = malloc(sizeof(float) * OC), *prev = malloc(sizeof(float) * N * OC);
            float *all = malloc(sizeof(float) * N * OC), *part = malloc(sizeof(float) * N * OC);
            tu_randn(x, (size_t)N * IC, &r, 1.0f), tu_randn(w, (size_t)OC * IC, &r, 0.5f);
            tu_randn(bias, (size_t)OC, &r, 1.0f), tu_randn(prev, (size_t)N * OC, &r, 1.0f);
            for (int acc = 0; acc < 2; acc++) {
                const float *bb = acc ? bias : NULL;
                memcpy(all, prev, sizeof(float) * N * OC);
                matmul_forward(all, x, w, bb, N, IC, OC, acc);
                const int sizes[] = {1, 2, 3, 4, 5, 33};
                for (int k = 0; k < 6; k++)
                    for (int n0 = 0; n0 < N; n0 += sizes[k] * 3 + 1) {
                        int n = n0 + sizes[k] <= N ? sizes[k] : N - n0;
                        memcpy(part + (size_t)n0 * OC, prev + (size_t)n0 * OC, sizeof(float) * n * OC);
                        matmul_forward(part + (size_t)n0 * OC, x + (size_t)n0 * IC, w, bb, n, IC, OC, acc);
                        if (memcmp(part + (size_t)n0 * OC, all + (size_t)n0 * OC, sizeof(float) * n * OC))
                            fail_msg("IC %d OC %d accumulate %d: rows %d..%d alone differ from the "
                                     "batch of %d", IC, OC, acc, n0, n0 + n - 1, N);
                    }
            }
            free(x), free(w), free(bias), free(prev), free(all), free(part);
        }
}

static void test_exact(void **state) {
    (void)state;
    const float temps[] = {1.0f, 0.7f};
    for (size_t a = 0; a < sizeof ARCHS / sizeof ARCHS[0]; a++)
        for (int lora = 0; lora < 2; lora++)
            for (int t = 0; t < 2; t++)
                for (int copy = 0; copy < 2; copy++) check(&ARCHS[a], lora, temps[t], copy);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matmul_invariant),
                                       cmocka_unit_test(test_exact)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
