/* test_generate.c: batched generation with the KV cache.
 *
 * Proves: the cached decode gives the same log-probs as a full forward
 * over prompt + output; the same seed gives the same tokens; a batch gives
 * the same tokens as generating each prompt alone; EOS and max_new_tokens
 * stop a sequence; bad prompts are rejected with a message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/generate.h"
#include "testutil.h"

static Base *base;
static Model *model;

static int setup(void **state) {
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 50;
    c.dim = 32;
    c.hidden_dim = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.max_seq_len = 40;
    c.qkv_bias = 1;
    c.eos_ids[0] = 3;
    c.n_eos = 1;
    if (base_new_random(&base, &c, 21, 0.3f) < 0) return -1;
    ModelOptions opt = {.lora_rank = 2, .lora_alpha = 4.0f, .lora_targets = (1u << LORA_NT) - 1, .seed = 5};
    if (model_new(&model, base, &opt) < 0) return -1;
    Rng r;
    rng_seed(&r, 8);
    tu_randn(model->lora->mem, model->lora->n, &r, 0.2f); /* an adapter that matters */
    return 0;
}

static int teardown(void **state) {
    model_free(&model);
    base_free(&base);
    return 0;
}

static const int p0[] = {1, 7, 9, 20}, p1[] = {1, 30}, p2[] = {5, 6, 7, 8, 9, 10, 11, 12, 2};
static const int *const prompts[3] = {p0, p1, p2};
static const int lens[3] = {4, 2, 9};

/* Sampled log-probs from the cache equal a full forward over the same
 * tokens at the sampling temperature (prefill + decode are consistent). */
static void test_cache_matches_forward(void **state) {
    GenParams p = {.max_new_tokens = 12, .sampler = {.temperature = 0.7f, .top_p = 1.0f}, .seed = 4,
                   .ignore_eos = 1};
    GenResult r;
    assert_int_equal(gen_generate(model, prompts, lens, 1, &p, &r), 0);
    int n = lens[0] + r.n;
    int *ids = malloc(sizeof(int) * n), *tg = malloc(sizeof(int) * n);
    memcpy(ids, p0, sizeof(int) * lens[0]);
    memcpy(ids + lens[0], r.ids, sizeof(int) * r.n);
    for (int t = 0; t < n; t++) tg[t] = t + 1 < n ? ids[t + 1] : -1;
    float *lp = malloc(sizeof(float) * n);
    int cu[2] = {0, n};
    Batch b = {.tokens = ids, .targets = tg, .cu_seqlens = cu, .B = 1, .temperature = 0.7f};
    assert_int_equal(model_forward(model, &b, lp, NULL, NULL, NULL), 0);
    tu_assert_close(r.logprobs, lp + lens[0] - 1, r.n, 0, 0, "cached vs full forward"); /* bit for bit */
    gen_result_free(&r);
    free(ids);
    free(tg);
    free(lp);
}

/* Same seed, same tokens; another seed, other tokens. */
static void test_seeded(void **state) {
    GenParams p = {.max_new_tokens = 20, .sampler = {.temperature = 1.0f, .top_k = 20, .top_p = 0.95f},
                   .seed = 123, .ignore_eos = 1};
    GenResult a, b, c;
    assert_int_equal(gen_generate(model, prompts, lens, 1, &p, &a), 0);
    assert_int_equal(gen_generate(model, prompts, lens, 1, &p, &b), 0);
    p.seed = 124;
    assert_int_equal(gen_generate(model, prompts, lens, 1, &p, &c), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, sizeof(int) * a.n);
    assert_memory_equal(a.logprobs, b.logprobs, sizeof(float) * a.n);
    assert_int_equal(c.n, 20);
    assert_true(memcmp(a.ids, c.ids, sizeof(int) * a.n) != 0);
    gen_result_free(&a);
    gen_result_free(&b);
    gen_result_free(&c);
}

/* Three prompts of different lengths in one batch give the tokens each
 * gives alone (with its stream index), greedy and sampled. */
static void test_batched_equals_single(void **state) {
    for (int mode = 0; mode < 2; mode++) {
        GenParams p = {.max_new_tokens = 15, .seed = 77, .ignore_eos = mode == 0};
        p.sampler = mode == 0 ? (SamplerParams){0.0f, 0, 1.0f} : (SamplerParams){0.9f, 10, 0.9f};
        GenResult batch[3];
        assert_int_equal(gen_generate(model, prompts, lens, 3, &p, batch), 0);
        for (int i = 0; i < 3; i++) {
            GenParams pi = p;
            pi.first_index = i;
            GenResult one;
            assert_int_equal(gen_generate(model, prompts + i, lens + i, 1, &pi, &one), 0);
            assert_int_equal(one.n, batch[i].n);
            assert_memory_equal(one.ids, batch[i].ids, sizeof(int) * one.n);
            tu_assert_close(one.logprobs, batch[i].logprobs, one.n, 1e-5f, 1e-5f, "batched logprobs");
            gen_result_free(&one);
            gen_result_free(&batch[i]);
        }
    }
}

/* Generation stops at EOS (kept as the last id) unless ignore_eos, and
 * never exceeds max_new_tokens nor the context. */
static void test_stops(void **state) {
    GenParams p = {.max_new_tokens = 30, .sampler = {.temperature = 1.5f, .top_p = 1.0f}};
    int saw_eos = 0;
    for (unsigned long long seed = 0; seed < 40 && !saw_eos; seed++) {
        p.seed = seed;
        GenResult r;
        assert_int_equal(gen_generate(model, prompts, lens, 1, &p, &r), 0);
        assert_true(r.n >= 1 && r.n <= 30);
        for (int i = 0; i + 1 < r.n; i++) assert_int_not_equal(r.ids[i], 3);
        if (r.stopped_on_eos) {
            assert_int_equal(r.ids[r.n - 1], 3);
            saw_eos = 1;
        }
        gen_result_free(&r);
    }
    assert_true(saw_eos);
    /* the context (40) caps a long request: prompt 9 + output <= 40 */
    GenParams q = {.max_new_tokens = 100, .sampler = {0.0f, 0, 1.0f}, .ignore_eos = 1};
    GenResult r;
    assert_int_equal(gen_generate(model, prompts + 2, lens + 2, 1, &q, &r), 0);
    assert_int_equal(r.n, 40 - 9);
    gen_result_free(&r);
}

/* Bad prompts: ids outside the vocabulary, longer than the context, empty;
 * bad sampler settings. Each is an error with a message, not a crash. */
static void test_bad_prompts(void **state) {
    GenParams p = {.max_new_tokens = 4, .sampler = {0.0f, 0, 1.0f}};
    GenResult r[1];
    int bad[2] = {1, 50};
    const int *pb[1] = {bad};
    int n2 = 2;
    assert_int_equal(gen_generate(model, pb, &n2, 1, &p, r), PL_ERANGE);
    assert_non_null(strstr(pl_error(), "vocabulary"));
    int longp[40] = {0};
    const int *pl[1] = {longp};
    int n40 = 40;
    assert_int_equal(gen_generate(model, pl, &n40, 1, &p, r), PL_ERANGE);
    assert_non_null(strstr(pl_error(), "context"));
    int n0 = 0;
    assert_int_equal(gen_generate(model, pb, &n0, 1, &p, r), PL_EINVAL);
    p.sampler.top_p = 0.0f;
    assert_true(gen_generate(model, prompts, lens, 1, &p, r) < 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_matches_forward),
        cmocka_unit_test(test_seeded),
        cmocka_unit_test(test_batched_equals_single),
        cmocka_unit_test(test_stops),
        cmocka_unit_test(test_bad_prompts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
