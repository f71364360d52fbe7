/* test_hf_reference.c: plumb against Hugging Face transformers and peft.
 *
 * tests/data/hf/ holds small random checkpoints and the log-probs,
 * entropies and greedy generations that transformers (and peft for the
 * adapter) computed on them; tests/data/hf/README.md says how. Every value
 * must agree to 1e-4 in fp32, and greedy ids exactly. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/generate.h"
#include "testutil.h"

static json_t *load_expected(const char *dir) {
    json_error_t err;
    json_t *j = json_load_file(tu_path("%s/expected.json", dir), 0, &err);
    if (!j) fail_msg("%s/expected.json: %s", dir, err.text);
    return j;
}

static int *json_ints(const json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *v = malloc(sizeof(int) * (*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int)json_integer_value(json_array_get(a, i));
    return v;
}

static float *json_floats(const json_t *a, int *n) {
    *n = (int)json_array_size(a);
    float *v = malloc(sizeof(float) * (*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (float)json_number_value(json_array_get(a, i));
    return v;
}

/* Log-probs and entropies of every expected sequence, at 1e-4. */
static void check_sequences(Model *m, const json_t *seqs, const json_t *lps, const json_t *ents,
                            const char *what) {
    for (size_t s = 0; s < json_array_size(seqs); s++) {
        int n, nl, ne;
        int *ids = json_ints(json_array_get(seqs, s), &n);
        float *want_lp = json_floats(json_array_get(lps, s), &nl);
        float *want_ent = json_floats(json_array_get(ents, s), &ne);
        assert_int_equal(nl, n - 1);
        int *tg = malloc(sizeof(int) * n);
        float *lp = malloc(sizeof(float) * n), *ent = malloc(sizeof(float) * n);
        for (int t = 0; t < n; t++) tg[t] = t + 1 < n ? ids[t + 1] : -1;
        int cu[2] = {0, n};
        Batch b = {.tokens = ids, .targets = tg, .cu_seqlens = cu, .B = 1};
        assert_int_equal(model_forward(m, &b, lp, ent, NULL, NULL), 0);
        tu_assert_close(lp, want_lp, (size_t)n - 1, 1e-4f, 0.0f, what);
        tu_assert_close(ent, want_ent, (size_t)n - 1, 1e-4f, 0.0f, what);
        free(ids);
        free(want_lp);
        free(want_ent);
        free(tg);
        free(lp);
        free(ent);
    }
}

/* Greedy generation: the same ids as transformers' generate, log-probs at 1e-4. */
static void check_greedy(Model *m, const json_t *greedy, const char *what) {
    for (size_t g = 0; g < json_array_size(greedy); g++) {
        const json_t *c = json_array_get(greedy, g);
        int np, nid, nlp;
        int *prompt = json_ints(json_object_get(c, "prompt"), &np);
        int *want = json_ints(json_object_get(c, "ids"), &nid);
        float *want_lp = json_floats(json_object_get(c, "logprobs"), &nlp);
        GenParams p = {.max_new_tokens = nid, .sampler = {.temperature = 0.0f, .top_p = 1.0f}, .ignore_eos = 1};
        GenResult r;
        const int *prompts[1] = {prompt};
        assert_int_equal(gen_generate(m, prompts, &np, 1, &p, &r), 0);
        assert_int_equal(r.n, nid);
        assert_memory_equal(r.ids, want, sizeof(int) * nid);
        tu_assert_close(r.logprobs, want_lp, nid, 1e-4f, 0.0f, what);
        gen_result_free(&r);
        free(prompt);
        free(want);
        free(want_lp);
    }
}

static void check_folder(const char *name) {
    const char *dir = tu_path("%s/hf/%s", tu_data_dir(), name);
    Base *base;
    if (base_load(&base, dir) < 0) fail_msg("loading %s: %s", dir, pl_error());
    ModelOptions opt = {0};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    json_t *e = load_expected(dir);
    check_sequences(m, json_object_get(e, "sequences"), json_object_get(e, "logprobs"),
                    json_object_get(e, "entropies"), name);
    check_greedy(m, json_object_get(e, "greedy"), name);
    json_decref(e);
    model_free(&m);
    base_free(&base);
}

/* LlamaForCausalLM, fp32, GQA, untied head, weights mapped from the file. */
static void test_llama(void **state) { check_folder("llama"); }

/* The same model stored as bf16 (upcast to fp32 on load). */
static void test_llama_bf16(void **state) { check_folder("llama-bf16"); }

/* The same model in three shards behind model.safetensors.index.json. */
static void test_llama_sharded(void **state) { check_folder("llama-sharded"); }

/* Qwen2ForCausalLM: q/k/v bias, tied embeddings, rope_theta 1e6. */
static void test_qwen2(void **state) { check_folder("qwen2"); }

/* Qwen3ForCausalLM (tests/ref/make_qwen3_ref.py): q and k RMS-normed per
 * head before RoPE, head_dim 32 where hidden / heads is 16, tied, no bias. */
static void test_qwen3(void **state) { check_folder("qwen3"); }
static void test_qwen3_bf16(void **state) { check_folder("qwen3-bf16"); }

/* Scaled RoPE (tests/ref/make_rope_ref.py): an original context of 32 in
 * 256, sequences of 200 and a greedy prompt of 40, where the scaling bites:
 * Llama 3.1's llama3, linear interpolation, and YaRN with its factor on
 * cos and sin. */
static void test_rope_llama3(void **state) { check_folder("llama-rope-llama3"); }
static void test_rope_linear(void **state) { check_folder("llama-rope-linear"); }
static void test_rope_yarn(void **state) { check_folder("llama-rope-yarn"); }

/* A PEFT adapter saved by peft: plumb applies it as peft does, and after
 * merging into the base gives peft's merge_and_unload log-probs. */
static void test_peft_adapter(void **state) {
    const char *dir = tu_path("%s/hf/llama", tu_data_dir());
    const char *adir = tu_path("%s/hf/llama/peft", tu_data_dir());
    Base *base;
    assert_int_equal(base_load(&base, dir), 0);
    ModelOptions opt = {0};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    Lora *l;
    if (lora_load_peft(&l, &base->cfg, adir) < 0) fail_msg("%s", pl_error());
    assert_int_equal(model_set_lora(m, l), 0);
    json_t *e = load_expected(adir);
    check_sequences(m, json_object_get(e, "sequences"), json_object_get(e, "logprobs"),
                    json_object_get(e, "entropies"), "peft adapter");
    check_greedy(m, json_object_get(e, "greedy"), "peft adapter greedy");
    assert_int_equal(base_make_flat(base), 0);
    assert_int_equal(lora_merge(m->lora, base), 0);
    const json_t *merged = json_object_get(e, "merged");
    check_sequences(m, json_object_get(e, "sequences"), json_object_get(merged, "logprobs"),
                    json_object_get(merged, "entropies"), "peft merged");
    json_decref(e);
    model_free(&m);
    base_free(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_llama_bf16),
        cmocka_unit_test(test_llama_sharded),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_peft_adapter),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_qwen3_bf16),
        cmocka_unit_test(test_rope_llama3),
        cmocka_unit_test(test_rope_linear),
        cmocka_unit_test(test_rope_yarn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
