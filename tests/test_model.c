/* test_model.c: the whole model's gradients against finite differences,
 * LoRA merge/unmerge, PEFT save/load, and batch validation.
 *
 * The tiny config has GQA (NH 4, NKV 2), q/k/v bias, LoRA on all seven
 * targets and a scalar head; the loss is a random linear functional of the
 * log-probs, the entropies and the values, so every output path is checked. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/model.h"
#include "testutil.h"

static ModelConfig tiny_config(int tied, int interleaved) {
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 11;
    c.dim = 8;
    c.hidden_dim = 12;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 4;
    c.max_seq_len = 16;
    c.qkv_bias = 1;
    c.tie_embeddings = tied;
    c.rope_interleaved = interleaved;
    c.rope_theta = 100.0f;
    return c;
}

/* Two packed sequences of lengths 3 and 5 with next-token targets. */
static const int tokens[8] = {1, 4, 7, 2, 9, 3, 3, 10};
static const int targets[8] = {4, 7, -1, 9, 3, 3, 10, -1};
static const int cu[3] = {0, 3, 8};

typedef struct {
    float r_lp[8], r_ent[8], r_val[8];
} Functional;

static double loss_of(Model *m, const Batch *b, const Functional *f) {
    float lp[8], ent[8], val[8];
    int rc = model_forward(m, b, lp, ent, m->head ? val : NULL, NULL);
    assert_int_equal(rc, 0);
    double L = 0.0;
    for (int i = 0; i < 8; i++) {
        L += (double)f->r_lp[i] * lp[i] + (double)f->r_ent[i] * ent[i];
        if (m->head) L += (double)f->r_val[i] * val[i];
    }
    return L;
}

/* Compares the analytic gradient of every parameter in (p, g, n) with a
 * central difference; returns the worst normalised error. */
static void check_buffer(Model *m, const Batch *b, const Functional *f, float *p, const float *g,
                         size_t n, const char *what, float eps) {
    for (size_t i = 0; i < n; i++) {
        float old = p[i];
        p[i] = old + eps;
        double lp = loss_of(m, b, f);
        p[i] = old - eps;
        double lm = loss_of(m, b, f);
        p[i] = old;
        double fd = (lp - lm) / (2.0 * eps);
        double err = fabs(fd - g[i]);
        if (err > 2e-3 + 2e-2 * fabs(fd))
            fail_msg("%s[%zu]: analytic %.6g, finite difference %.6g", what, i, g[i], fd);
    }
}

static void run_grad_check_cfg(ModelConfig c, int train_base, int keep_logits, float eps);

static void run_grad_check(int tied, int interleaved, int train_base, int keep_logits) {
    run_grad_check_cfg(tiny_config(tied, interleaved), train_base, keep_logits, 1e-2f);
}

/* eps: the central difference's step */
static void run_grad_check_cfg(ModelConfig c, int train_base, int keep_logits, float eps) {
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 7, 0.4f), 0);
    ModelOptions opt = {.lora_rank = train_base ? 0 : 2,
                        .lora_alpha = 3.0f,
                        .lora_targets = (1u << LORA_NT) - 1,
                        .head = 1,
                        .train_base = train_base,
                        .seed = 3};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    if (!keep_logits) m->logits_budget = 0; /* backward recomputes them in chunks */
    Rng r;
    rng_seed(&r, 11);
    if (m->lora) tu_randn(m->lora->mem, m->lora->n, &r, 0.3f); /* B != 0 so A gets gradients */
    tu_randn(m->head, (size_t)c.dim + 1, &r, 0.5f);
    Functional f;
    tu_randn(f.r_lp, 8, &r, 1.0f);
    tu_randn(f.r_ent, 8, &r, 1.0f);
    tu_randn(f.r_val, 8, &r, 1.0f);
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2, .temperature = 0.8f};

    float lp[8], ent[8], val[8];
    model_zero_grad(m);
    assert_int_equal(model_forward(m, &b, lp, ent, val, NULL), 0);
    assert_int_equal(model_backward(m, &b, f.r_lp, f.r_ent, f.r_val), 0);
    /* copy the gradients: the finite differences rerun forward */
    float *params[3], *grads[3];
    size_t sizes[3];
    int nb = model_trainable(m, params, grads, sizes);
    assert_true(nb >= 2);
    for (int k = 0; k < nb; k++) {
        float *g = malloc(sizeof(float) * sizes[k]);
        memcpy(g, grads[k], sizeof(float) * sizes[k]);
        check_buffer(m, &b, &f, params[k], g, sizes[k], k == nb - 1 ? "head" : train_base ? "base" : "lora",
                     eps);
        free(g);
    }
    model_free(&m);
    base_free(&base);
}

/* LoRA on all targets with a frozen base: adapter and head gradients
 * match finite differences (HF RoPE, untied head). */
/* Qwen3's shape: q and k RMS-normed per head before RoPE (their weights
 * train with the base), no q/k/v bias, and a head_dim (6) that is not
 * hidden / heads (8 / 4), with LoRA on every target and in full. A norm
 * over 6 values curves the loss more: the central difference takes a
 * smaller step (at 1e-2 its truncation error alone is up to 0.04). */
static ModelConfig qwen3_config(void) {
    ModelConfig c = tiny_config(1, 0);
    snprintf(c.arch, sizeof c.arch, "qwen3");
    c.qkv_bias = 0;
    c.qk_norm = 1;
    c.head_dim = 6;
    return c;
}
static void test_grad_qwen3_lora(void **state) { run_grad_check_cfg(qwen3_config(), 0, 1, 2.5e-3f); }
static void test_grad_qwen3_full(void **state) { run_grad_check_cfg(qwen3_config(), 1, 0, 2.5e-3f); }

static void test_grad_lora(void **state) { run_grad_check(0, 0, 0, 1); }

/* The same with the logits recomputed in backward instead of kept. */
static void test_grad_lora_recompute(void **state) { run_grad_check(0, 0, 0, 0); }

/* Full fine-tuning: every base weight's gradient, with tied embeddings
 * (the head's gradient lands in the embedding) and interleaved RoPE. */
static void test_grad_full_tied(void **state) { run_grad_check(1, 1, 1, 1); }

/* Full fine-tuning, untied, HF RoPE, logits recomputed in backward. */
static void test_grad_full_untied(void **state) { run_grad_check(0, 0, 1, 0); }

/* A packed batch gives the same outputs as each sequence alone: no
 * attention crosses a boundary and positions restart per sequence. */
static void test_packing_isolates_sequences(void **state) {
    ModelConfig c = tiny_config(0, 0);
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 5, 0.4f), 0);
    ModelOptions opt = {0};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    float lp[8], ent[8];
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2};
    assert_int_equal(model_forward(m, &b, lp, ent, NULL, NULL), 0);
    for (int s = 0; s < 2; s++) {
        int n = cu[s + 1] - cu[s], one[2] = {0, n};
        float lp1[8], ent1[8];
        Batch b1 = {.tokens = tokens + cu[s], .targets = targets + cu[s], .cu_seqlens = one, .B = 1};
        assert_int_equal(model_forward(m, &b1, lp1, ent1, NULL, NULL), 0);
        tu_assert_close(lp1, lp + cu[s], n, 1e-5f, 1e-5f, "lp alone vs packed");
        tu_assert_close(ent1, ent + cu[s], n, 1e-5f, 1e-5f, "entropy alone vs packed");
    }
    model_free(&m);
    base_free(&base);
}

/* Merging an adapter gives the same logits as base + adapter, and
 * unmerging restores the base weights. */
static void test_lora_merge_unmerge(void **state) {
    ModelConfig c = tiny_config(0, 0);
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 9, 0.4f), 0);
    float *orig = malloc(sizeof(float) * base->table.total);
    memcpy(orig, base->flat, sizeof(float) * base->table.total);
    ModelOptions opt = {.lora_rank = 3, .lora_alpha = 6.0f, .lora_targets = (1u << LORA_NT) - 1, .seed = 1};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    Rng r;
    rng_seed(&r, 2);
    tu_randn(m->lora->mem, m->lora->n, &r, 0.3f);
    int V = c.vocab_size;
    float *z_adapter = malloc(sizeof(float) * 8 * V), *z_merged = malloc(sizeof(float) * 8 * V);
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2};
    assert_int_equal(model_forward(m, &b, NULL, NULL, NULL, z_adapter), 0);
    assert_int_equal(lora_merge(m->lora, base), 0);
    assert_int_equal(lora_merge(m->lora, base), PL_EINVAL); /* twice is an error */
    assert_int_equal(model_forward(m, &b, NULL, NULL, NULL, z_merged), 0);
    tu_assert_close(z_merged, z_adapter, (size_t)8 * V, 1e-4f, 1e-4f, "merged vs adapter logits");
    assert_int_equal(lora_unmerge(m->lora, base), 0);
    tu_assert_close(base->flat, orig, base->table.total, 1e-5f, 1e-5f, "unmerged weights");
    free(orig);
    free(z_adapter);
    free(z_merged);
    model_free(&m);
    base_free(&base);
}

/* A PEFT adapter saved by plumb loads back bit-identically. */
static void test_peft_roundtrip(void **state) {
    ModelConfig c = tiny_config(0, 0);
    LoraConfig lc = {.rank = 2, .alpha = 4.0f, .targets = (1u << LORA_Q) | (1u << LORA_V) | (1u << LORA_DOWN)};
    Lora *l, *l2;
    assert_int_equal(lora_new(&l, &c, &lc, 42), 0);
    Rng r;
    rng_seed(&r, 3);
    tu_randn(l->mem, l->n, &r, 0.1f);
    const char *dir = tu_path("%s/peft", tu_tmp_dir());
    assert_int_equal(lora_save_peft(l, &c, dir, "tiny"), 0);
    assert_int_equal(lora_load_peft(&l2, &c, dir), 0);
    assert_int_equal(l2->n, l->n);
    assert_int_equal(l2->cfg.rank, 2);
    assert_true(l2->cfg.targets == lc.targets);
    assert_memory_equal(l2->mem, l->mem, sizeof(float) * l->n);
    /* a config with a different shape is rejected, naming the tensor */
    ModelConfig other = c;
    other.dim = 12;
    Lora *l3 = NULL;
    assert_true(lora_load_peft(&l3, &other, dir) < 0);
    assert_non_null(strstr(pl_error(), "lora_A"));
    assert_null(l3);
    lora_free(&l);
    lora_free(&l2);
}

/* Fresh adapters follow the standard init: B = 0 (model unchanged), A
 * bounded by 1/sqrt(in_features). */
static void test_lora_init(void **state) {
    ModelConfig c = tiny_config(0, 0);
    LoraConfig lc = {.rank = 4, .alpha = 8.0f, .targets = (1u << LORA_NT) - 1};
    Lora *l;
    assert_int_equal(lora_new(&l, &c, &lc, 1), 0);
    for (int li = 0; li < c.n_layers; li++) {
        for (int t = 0; t < LORA_NT; t++) {
            int ic, oc;
            lora_target_dims(&c, t, &ic, &oc);
            const float *a = l->a[li * LORA_NT + t], *b = l->b[li * LORA_NT + t];
            float bound = 1.0f / sqrtf((float)ic), amax = 0.0f;
            for (int i = 0; i < lc.rank * ic; i++) amax = fmaxf(amax, fabsf(a[i]));
            assert_true(amax <= bound && amax > 0.5f * bound);
            for (int i = 0; i < oc * lc.rank; i++) assert_true(b[i] == 0.0f);
        }
    }
    unsigned mask;
    assert_int_equal(lora_parse_targets("q,v,gate_proj", &mask), 0);
    assert_true(mask == ((1u << LORA_Q) | (1u << LORA_V) | (1u << LORA_GATE)));
    assert_true(lora_parse_targets("q,x", &mask) < 0);
    lora_free(&l);
}

/* Bad batches are rejected with a message, not a crash: ids outside the
 * vocabulary, a sequence longer than the context, empty sequences. */
static void test_bad_batches(void **state) {
    ModelConfig c = tiny_config(0, 0);
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 5, 0.4f), 0);
    ModelOptions opt = {0};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    float lp[32];
    int bad_tok[3] = {1, 11, 2}, cu3[2] = {0, 3};
    Batch b = {.tokens = bad_tok, .cu_seqlens = cu3, .B = 1};
    assert_int_equal(model_forward(m, &b, NULL, NULL, NULL, NULL), PL_ERANGE);
    assert_non_null(strstr(pl_error(), "vocabulary"));
    int long_tok[17] = {0}, cu17[2] = {0, 17};
    Batch bl = {.tokens = long_tok, .cu_seqlens = cu17, .B = 1};
    assert_int_equal(model_forward(m, &bl, lp, NULL, NULL, NULL), PL_ERANGE);
    assert_non_null(strstr(pl_error(), "context"));
    int cu_empty[3] = {0, 0, 3};
    Batch be = {.tokens = tokens, .cu_seqlens = cu_empty, .B = 2};
    assert_int_equal(model_forward(m, &be, NULL, NULL, NULL, NULL), PL_EINVAL);
    float v[3];
    Batch ok = {.tokens = tokens, .cu_seqlens = cu3, .B = 1};
    assert_int_equal(model_forward(m, &ok, NULL, NULL, v, NULL), PL_EINVAL); /* no head */
    model_free(&m);
    base_free(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_lora),
        cmocka_unit_test(test_grad_qwen3_lora),
        cmocka_unit_test(test_grad_qwen3_full),
        cmocka_unit_test(test_grad_lora_recompute),
        cmocka_unit_test(test_grad_full_tied),
        cmocka_unit_test(test_grad_full_untied),
        cmocka_unit_test(test_packing_isolates_sequences),
        cmocka_unit_test(test_lora_merge_unmerge),
        cmocka_unit_test(test_peft_roundtrip),
        cmocka_unit_test(test_lora_init),
        cmocka_unit_test(test_bad_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
