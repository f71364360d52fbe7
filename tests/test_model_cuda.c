/* test_model_cuda.c: the whole model on cuda:0 against the CPU, in fp32.
 *
 * On the committed tiny Hugging Face checkpoints (Llama with GQA, Qwen2
 * with q/k/v biases): log-probs, entropies and values of a packed batch,
 * the gradients of an adapter on every target and of a value head, the
 * gradients of full fine-tuning, and greedy generation through the KV
 * cache, whose ids must be the CPU's. Where cuda:0 cannot be opened (no
 * GPU, no driver, a build without CUDA) it says why and exits 77, which
 * ctest reports as skipped. PLUMB_TEST_DEVICE names another device:
 * ctest also runs it on cpu-staged (test_model_staged), which proves the
 * test itself on machines without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "model/generate.h"
#include "model/model.h"
#include "testutil.h"

static Device *g_dev;

typedef struct {
    float lp[12], ent[12], val[12];
    float *grads[3];
    size_t sizes[3];
    int nb;
} Out;

/* Two packed sequences (5 and 7 tokens) with next-token targets. */
static const int tokens[12] = {1, 5, 9, 3, 2, 7, 7, 11, 4, 8, 6, 1};
static const int targets[12] = {5, 9, 3, 2, -1, 7, 11, 4, 8, 6, 1, -1};
static const int cu[3] = {0, 5, 12};

static void step(const char *ckpt, Device *dev, int train_base, Out *o) {
    Base *base;
    if (base_load(&base, tu_path("%s/hf/%s", tu_data_dir(), ckpt)) < 0) fail_msg("%s", pl_error());
    if (train_base) assert_int_equal(base_make_flat(base), 0);
    ModelOptions opt = {.lora_rank = train_base ? 0 : 4,
                        .lora_targets = (1u << LORA_NT) - 1,
                        .head = 1,
                        .train_base = train_base,
                        .seed = 5,
                        .dev = dev};
    Model *m;
    if (model_new(&m, base, &opt) < 0) fail_msg("%s: %s", ckpt, pl_error());
    Rng r;
    rng_seed(&r, 17);
    if (m->lora) tu_randn(m->lora->mem, m->lora->n, &r, 0.05f);
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2, .temperature = 0.7f};
    float dlp[12], dent[12], dval[12];
    tu_randn(dlp, 12, &r, 1.0f);
    tu_randn(dent, 12, &r, 0.3f);
    tu_randn(dval, 12, &r, 1.0f);
    model_zero_grad(m);
    if (model_forward(m, &b, o->lp, o->ent, o->val, NULL) < 0) fail_msg("%s", pl_error());
    if (model_backward(m, &b, dlp, dent, dval) < 0) fail_msg("%s", pl_error());
    float *params[3], *grads[3];
    o->nb = model_trainable(m, params, grads, o->sizes);
    for (int k = 0; k < o->nb; k++) {
        o->grads[k] = malloc(sizeof(float) * o->sizes[k]);
        memcpy(o->grads[k], grads[k], sizeof(float) * o->sizes[k]);
    }
    model_free(&m);
    base_free(&base);
}

static void compare(const char *ckpt, int train_base) {
    Out c, g;
    step(ckpt, NULL, train_base, &c);
    step(ckpt, g_dev, train_base, &g);
    tu_assert_close(g.lp, c.lp, 12, 1e-4f, 1e-4f, "log-probs");
    tu_assert_close(g.ent, c.ent, 12, 1e-4f, 1e-4f, "entropies");
    tu_assert_close(g.val, c.val, 12, 1e-4f, 1e-4f, "values");
    assert_int_equal(g.nb, c.nb);
    for (int k = 0; k < c.nb; k++) {
        tu_assert_close(g.grads[k], c.grads[k], c.sizes[k], 1e-4f, 1e-3f, "gradients");
        free(c.grads[k]);
        free(g.grads[k]);
    }
}

static void test_llama_lora(void **state) {
    (void)state;
    compare("llama", 0);
}

static void test_qwen2_lora(void **state) {
    (void)state;
    compare("qwen2", 0);
}

static void test_llama_full(void **state) {
    (void)state;
    compare("llama", 1);
}

/* Greedy generation of three prompts of different lengths in one batch:
 * the same ids as on the CPU, log-probs to 1e-4. */
static void test_generate(void **state) {
    (void)state;
    Base *base;
    assert_int_equal(base_load(&base, tu_path("%s/hf/llama", tu_data_dir())), 0);
    const int p0[3] = {1, 5, 9}, p1[1] = {3}, p2[6] = {7, 7, 2, 4, 1, 8};
    const int *prompts[3] = {p0, p1, p2}, lens[3] = {3, 1, 6};
    GenParams gp = {.max_new_tokens = 20, .ignore_eos = 1, .sampler = {.temperature = 0.0f, .top_p = 1.0f}};
    GenResult res[2][3];
    for (int k = 0; k < 2; k++) {
        ModelOptions opt = {.dev = k ? g_dev : NULL};
        Model *m;
        assert_int_equal(model_new(&m, base, &opt), 0);
        if (gen_generate(m, prompts, lens, 3, &gp, res[k]) < 0) fail_msg("%s", pl_error());
        model_free(&m);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[1][i].n, res[0][i].n);
        assert_memory_equal(res[1][i].ids, res[0][i].ids, sizeof(int) * res[0][i].n);
        tu_assert_close(res[1][i].logprobs, res[0][i].logprobs, res[0][i].n, 1e-4f, 1e-4f,
                        "generated log-probs");
        gen_result_free(&res[0][i]);
        gen_result_free(&res[1][i]);
    }
    base_free(&base);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_lora),
        cmocka_unit_test(test_qwen2_lora),
        cmocka_unit_test(test_llama_full),
        cmocka_unit_test(test_generate),
    };
    const char *spec = getenv("PLUMB_TEST_DEVICE");
    if (!spec || !*spec) spec = "cuda:0";
    if (dev_open(&g_dev, spec) < 0) {
        printf("skipping the model on %s: %s\n", spec, pl_error());
        return 77; /* ctest SKIP_RETURN_CODE */
    }
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dev_close(&g_dev);
    return rc;
}
