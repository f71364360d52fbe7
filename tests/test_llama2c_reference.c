/* test_llama2c_reference.c: plumb against llama2.c's own run.c.
 *
 * tests/data/llama2c/ holds two small random .bin files (legacy format)
 * and run.c's greedy ids and log-probs on them (README.md there says how
 * they were made). plumb must give the same ids, log-probs to 1e-4, and
 * stop where run.c stops: on token 1, which plumb keeps as the last id.
 * One case fills the whole context. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/generate.h"
#include "testutil.h"

static void check_bin(const char *name) {
    const char *bin = tu_path("%s/llama2c/%s.bin", tu_data_dir(), name);
    const char *exp = tu_path("%s/llama2c/%s.expected.json", tu_data_dir(), name);
    Base *base;
    if (base_load(&base, bin) < 0) fail_msg("%s: %s", bin, pl_error());
    assert_int_equal(base->cfg.rope_interleaved, 1);
    ModelOptions opt = {0};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    json_error_t err;
    json_t *j = json_load_file(exp, 0, &err);
    if (!j) fail_msg("%s: %s", exp, err.text);
    const json_t *cases = json_object_get(j, "cases");
    assert_true(json_array_size(cases) >= 3);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        const json_t *jp = json_object_get(c, "prompt"), *ji = json_object_get(c, "ids");
        const json_t *jl = json_object_get(c, "logprobs");
        int np = (int)json_array_size(jp), nid = (int)json_array_size(ji);
        int steps = (int)json_integer_value(json_object_get(c, "steps"));
        int stopped = json_is_true(json_object_get(c, "stopped_on_bos"));
        int *prompt = malloc(sizeof(int) * np);
        for (int t = 0; t < np; t++) prompt[t] = (int)json_integer_value(json_array_get(jp, t));
        /* run.c: at most steps - len + 1 tokens; stops on (and drops) token 1 */
        GenParams p = {.max_new_tokens = steps - np + 1, .sampler = {0.0f, 0, 1.0f}};
        GenResult r;
        const int *prompts[1] = {prompt};
        assert_int_equal(gen_generate(m, prompts, &np, 1, &p, &r), 0);
        /* run.c samples one token past a full context without feeding it;
         * plumb keeps prompt + output within the context, one id fewer */
        int cap = base->cfg.max_seq_len - np, want_n = nid + stopped;
        if (want_n > cap) want_n = cap;
        assert_int_equal(r.n, want_n);
        for (int t = 0; t < nid && t < r.n; t++) {
            assert_int_equal(r.ids[t], (int)json_integer_value(json_array_get(ji, t)));
            float want = (float)json_number_value(json_array_get(jl, t));
            tu_assert_close(&r.logprobs[t], &want, 1, 1e-4f, 0.0f, name);
        }
        if (stopped && want_n == nid + 1) {
            assert_int_equal(r.ids[nid], 1);
            assert_true(r.stopped_on_eos);
            float want = (float)json_number_value(json_object_get(c, "bos_logprob"));
            tu_assert_close(&r.logprobs[nid], &want, 1, 1e-4f, 0.0f, "bos logprob");
        }
        gen_result_free(&r);
        free(prompt);
    }
    json_decref(j);
    model_free(&m);
    base_free(&base);
}

/* Shared classifier, GQA (4 heads, 2 kv heads). */
static void test_tiny(void **state) { check_bin("tiny"); }

/* Unshared classifier (negative vocab_size in the header), MHA. */
static void test_tiny_unshared(void **state) { check_bin("tiny-unshared"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_tiny_unshared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
