/* test_optim.c: AdamW, gradient clipping and learning-rate schedules.
 *
 * The AdamW + clip + schedule path is checked against torch.optim.AdamW,
 * torch.nn.utils.clip_grad_norm_ and transformers' warmup schedules
 * (tests/data/optim_ref.json, produced by tests/ref/optim_ref.py); the
 * schedules and clipping are also checked against hand-computed values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "testutil.h"

#include "common/err.h"
#include "model/optim.h"

static void assert_near(double got, double want, double tol, const char *what) {
    if (!(fabs(got - want) <= tol)) fail_msg("%s: got %.10g want %.10g", what, got, want);
}

/* ----------------------------------------------------------- schedules */

/* Defaults are those of torch's AdamW plus a constant schedule. */
static void test_defaults(void **state) {
    OptimConfig c;
    optim_defaults(&c);
    assert_true(c.lr > 0.0f);
    assert_true(c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f);
    assert_true(c.weight_decay == 0.0f && c.grad_clip == 1.0f);
    assert_int_equal(c.schedule, LR_CONSTANT);
    assert_int_equal(c.warmup_steps, 0);
    assert_true(lr_at(&c, 0) == c.lr && lr_at(&c, 123456) == c.lr);
}

/* The three names parse; anything else fails with a message. */
static void test_schedule_parse(void **state) {
    LrSchedule s;
    assert_int_equal(lr_schedule_parse("constant", &s), 0);
    assert_int_equal(s, LR_CONSTANT);
    assert_int_equal(lr_schedule_parse("linear", &s), 0);
    assert_int_equal(s, LR_LINEAR);
    assert_int_equal(lr_schedule_parse("cosine", &s), 0);
    assert_int_equal(s, LR_COSINE);
    pl_clear_error();
    assert_true(lr_schedule_parse("Cosine", &s) < 0);
    assert_non_null(strstr(pl_error(), "Cosine"));
    assert_true(lr_schedule_parse("", &s) < 0);
    assert_true(lr_schedule_parse(NULL, &s) < 0);
}

/* Warmup is step / warmup (HF): lr 0 at step 0, full lr at step warmup. */
static void test_lr_warmup_constant(void **state) {
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 1.0f;
    c.warmup_steps = 4;
    const double want[] = {0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0};
    for (int s = 0; s < 7; s++) assert_near(lr_at(&c, s), want[s], 1e-7, "warmup");
    assert_near(lr_at(&c, -3), 0.0, 0.0, "negative step clamps to 0");
}

/* Linear: from lr at step warmup to min_lr_ratio * lr at step total, then
 * flat. */
static void test_lr_linear(void **state) {
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 2.0f;
    c.schedule = LR_LINEAR;
    c.warmup_steps = 2;
    c.total_steps = 6;
    const double want[] = {0.0, 1.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0, 0.0};
    for (int s = 0; s < 9; s++) assert_near(lr_at(&c, s), want[s], 1e-6, "linear");
    c.min_lr_ratio = 0.25f; /* floor 0.5: lr = 2 * (0.25 + 0.75 * frac) */
    const double want_min[] = {0.0, 1.0, 2.0, 1.625, 1.25, 0.875, 0.5, 0.5};
    for (int s = 0; s < 8; s++) assert_near(lr_at(&c, s), want_min[s], 1e-6, "linear min");
}

/* Cosine: half a cosine from lr to the floor over total - warmup steps,
 * flat afterwards (HF's lambda would rise again past total). */
static void test_lr_cosine(void **state) {
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 1.0f;
    c.schedule = LR_COSINE;
    c.warmup_steps = 1;
    c.total_steps = 5; /* progress 0, 1/4, 1/2, 3/4, 1 at steps 1..5 */
    const double want[] = {0.0, 1.0, 0.5 * (1 + cos(M_PI / 4)), 0.5, 0.5 * (1 + cos(3 * M_PI / 4)),
                           0.0, 0.0, 0.0};
    for (int s = 0; s < 8; s++) assert_near(lr_at(&c, s), want[s], 1e-6, "cosine");
    c.min_lr_ratio = 0.1f;
    for (int s = 1; s < 8; s++)
        assert_near(lr_at(&c, s), 0.1 + 0.9 * want[s], 1e-6, "cosine min");
    /* No warmup: step 0 is already the peak. */
    c.warmup_steps = 0;
    c.total_steps = 10;
    assert_near(lr_at(&c, 0), 1.0, 0.0, "cosine no warmup");
    assert_near(lr_at(&c, 5), 0.1 + 0.9 * 0.5, 1e-6, "cosine midpoint");
}

/* ------------------------------------------------------------- clipping */

/* Norm over two buffers is the norm of their concatenation; a clip to 1
 * scales by 1 / (norm + 1e-6) and returns the pre-clip norm; a norm under
 * the limit and max_norm <= 0 leave the gradients alone. */
static void test_clip(void **state) {
    float a[2] = {3.0f, 0.0f}, b[1] = {4.0f}; /* norm 5 */
    float *bufs[2] = {a, b};
    size_t sizes[2] = {2, 1};
    assert_near(grad_norm(bufs, sizes, 2), 5.0, 0.0, "norm");
    assert_near(grad_clip(bufs, sizes, 2, 0.0f), 5.0, 0.0, "measure only");
    assert_true(a[0] == 3.0f && b[0] == 4.0f);
    assert_near(grad_clip(bufs, sizes, 2, 10.0f), 5.0, 0.0, "under the limit");
    assert_true(a[0] == 3.0f && b[0] == 4.0f);
    assert_near(grad_clip(bufs, sizes, 2, 1.0f), 5.0, 0.0, "clip returns pre-clip norm");
    assert_near(a[0], 3.0 / (5.0 + 1e-6), 1e-7, "a scaled");
    assert_near(b[0], 4.0 / (5.0 + 1e-6), 1e-7, "b scaled");
    assert_near(grad_norm(bufs, sizes, 2), 1.0, 1e-6, "norm after clip");

    /* A large buffer goes through the OpenMP path; double accumulation
     * keeps the sum of 1e6 equal squares exact. */
    size_t n = 1000000;
    float *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = 0.5f;
    float *one[1] = {g};
    assert_near(grad_clip(one, &n, 1, 1.0f), 500.0, 1e-9, "big norm");
    assert_near(grad_norm(one, &n, 1), 1.0, 1e-6, "big norm after clip");
    free(g);
}

/* ---------------------------------------------------------------- AdamW */

/* First step by hand: mhat = g, vhat = g^2, so p -= lr * g / (|g| + eps)
 * after p *= 1 - lr * wd; a second step with the same grad moves by the
 * same amount again. */
static void test_adamw_by_hand(void **state) {
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 0.01f;
    c.weight_decay = 0.5f;
    AdamW o;
    assert_int_equal(adamw_init(&o, 3, &c), 0);
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.3f, -4.0f, 0.0f};
    adamw_step(&o, p, g);
    assert_int_equal(o.step, 1);
    double d = 1.0 - 0.01 * 0.5;
    assert_near(p[0], 1.0 * d - 0.01 * 0.3 / (0.3 + 1e-8), 1e-6, "p0");
    assert_near(p[1], -2.0 * d + 0.01 * 4.0 / (4.0 + 1e-8), 1e-6, "p1");
    assert_near(p[2], 0.5 * d, 1e-7, "zero grad only decays");
    assert_near(o.m[1], 0.1 * -4.0, 1e-6, "m");
    assert_near(o.v[1], 0.001 * 16.0, 1e-6, "v");
    float p0 = p[0];
    adamw_step(&o, p, g);
    assert_near(p[0], p0 * d - 0.01 * 0.3 / (0.3 + 1e-8), 1e-6, "second step");
    adamw_free(&o);
    assert_null(o.m);
    assert_null(o.v);
}

static double jnum(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) fail_msg("optim_ref.json: missing number '%s'", key);
    return json_number_value(v);
}

static void jfloats(json_t *arr, float *out, size_t n, const char *what) {
    if (!json_is_array(arr) || json_array_size(arr) != n)
        fail_msg("optim_ref.json: %s is not an array of %zu", what, n);
    for (size_t i = 0; i < n; i++) out[i] = (float)json_number_value(json_array_get(arr, i));
}

/* Replays every case of the torch reference: per step, clip the raw
 * gradients (two buffers), check the norm and lr, step, and compare the
 * parameters to torch's within 1e-6 relative. */
static void test_adamw_matches_torch(void **state) {
    const char *path = tu_path("%s/optim_ref.json", tu_data_dir());
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    json_t *cases = json_object_get(doc, "cases");
    assert_true(json_array_size(cases) >= 3);

    size_t ci;
    json_t *cs;
    json_array_foreach(cases, ci, cs) {
        const char *name = json_string_value(json_object_get(cs, "name"));
        json_t *jc = json_object_get(cs, "config");
        OptimConfig c;
        optim_defaults(&c);
        c.lr = (float)jnum(jc, "lr");
        c.beta1 = (float)jnum(jc, "beta1");
        c.beta2 = (float)jnum(jc, "beta2");
        c.eps = (float)jnum(jc, "eps");
        c.weight_decay = (float)jnum(jc, "weight_decay");
        c.grad_clip = (float)jnum(jc, "grad_clip");
        c.warmup_steps = (int)jnum(jc, "warmup_steps");
        c.total_steps = (int)jnum(jc, "total_steps");
        c.min_lr_ratio = (float)jnum(jc, "min_lr_ratio");
        assert_int_equal(
            lr_schedule_parse(json_string_value(json_object_get(jc, "schedule")), &c.schedule), 0);

        json_t *jsz = json_object_get(cs, "sizes");
        size_t sizes[2] = {(size_t)json_integer_value(json_array_get(jsz, 0)),
                           (size_t)json_integer_value(json_array_get(jsz, 1))};
        size_t n = sizes[0] + sizes[1];
        float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *want = malloc(n * sizeof *want);
        jfloats(json_object_get(cs, "params0"), p, n, "params0");
        AdamW o;
        assert_int_equal(adamw_init(&o, n, &c), 0);

        size_t si;
        json_t *st;
        json_array_foreach(json_object_get(cs, "steps"), si, st) {
            char what[128];
            snprintf(what, sizeof what, "%s step %zu", name, si);
            jfloats(json_object_get(st, "grads"), g, n, "grads");
            jfloats(json_object_get(st, "params"), want, n, "params");
            float *bufs[2] = {g, g + sizes[0]};
            double norm = grad_clip(bufs, sizes, 2, c.grad_clip);
            double want_norm = jnum(st, "grad_norm");
            assert_near(norm, want_norm, 1e-6 * want_norm, what);
            assert_near(lr_at(&c, o.step), jnum(st, "lr"), 1e-6 * c.lr, what);
            adamw_step(&o, p, g);
            tu_assert_close(p, want, n, 1e-6f, 1e-6f, what);
        }
        assert_int_equal(o.step, (long)json_array_size(json_object_get(cs, "steps")));
        adamw_free(&o);
        free(p);
        free(g);
        free(want);
    }
    json_decref(doc);
}

/* A large buffer (OpenMP path) gives the same result as element-by-element
 * small steps over its pieces. */
static void test_adamw_parallel_matches_serial(void **state) {
    size_t n = 200003;
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 1e-3f;
    c.weight_decay = 0.1f;
    Rng r;
    rng_seed(&r, 7);
    float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q), *g = malloc(n * sizeof *g);
    tu_randn(p, n, &r, 1.0f);
    memcpy(q, p, n * sizeof *p);
    AdamW big;
    assert_int_equal(adamw_init(&big, n, &c), 0);
    size_t chunk = 1000;
    size_t nchunks = (n + chunk - 1) / chunk;
    AdamW *small = calloc(nchunks, sizeof *small);
    for (size_t k = 0; k < nchunks; k++) {
        size_t len = k + 1 < nchunks ? chunk : n - k * chunk;
        assert_int_equal(adamw_init(&small[k], len, &c), 0);
    }
    for (int s = 0; s < 3; s++) {
        tu_randn(g, n, &r, 0.1f);
        adamw_step(&big, p, g);
        for (size_t k = 0; k < nchunks; k++) adamw_step(&small[k], q + k * chunk, g + k * chunk);
    }
    assert_memory_equal(p, q, n * sizeof *p);
    for (size_t k = 0; k < nchunks; k++) adamw_free(&small[k]);
    free(small);
    adamw_free(&big);
    free(p);
    free(q);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_schedule_parse),
        cmocka_unit_test(test_lr_warmup_constant),
        cmocka_unit_test(test_lr_linear),
        cmocka_unit_test(test_lr_cosine),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_adamw_by_hand),
        cmocka_unit_test(test_adamw_matches_torch),
        cmocka_unit_test(test_adamw_parallel_matches_serial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
