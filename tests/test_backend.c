/* test_backend.c: devices by name, the sticky error, and the model on a
 * device it is given.
 *
 * What the CPU backend computes is what kernels/cpu computes: every model
 * test (test_model, test_hf_reference, test_generate, ...) runs through it.
 * Here: opening and refusing devices, the first failure kept and reported
 * once by dev_sync, and a model on a caller's device giving the numbers of
 * one on its own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "testutil.h"

static void test_open_cpu(void **state) {
    (void)state;
    Device *d;
    assert_int_equal(dev_open(&d, "cpu"), 0);
    assert_string_equal(d->name, "cpu");
    assert_true(d->be->host_memory);
    float *x = d->be->alloc(d, 4 * sizeof(float));
    assert_non_null(x);
    for (int i = 0; i < 4; i++) assert_true(x[i] == 0.0f); /* zeroed */
    const float h[4] = {1, 2, 3, 4};
    d->be->upload(d, x, h, sizeof h);
    d->be->scale(d, x, 4, 0.5f);
    float back[4];
    d->be->download(d, back, x, sizeof back);
    for (int i = 0; i < 4; i++) assert_true(back[i] == h[i] * 0.5f);
    assert_null(d->be->alloc(d, 0)); /* nothing to hold: no error */
    assert_int_equal(dev_sync(d), 0);
    d->be->free(d, x);
    dev_close(&d);
    assert_null(d);
}

static void test_refused_names(void **state) {
    (void)state;
    const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1a", "cpu0", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Device *d = (Device *)1;
        assert_int_equal(dev_open(&d, bad[i]), PL_EINVAL);
        assert_null(d);
        assert_non_null(strstr(pl_error(), "expected cpu, cuda or cuda:N"));
    }
}

/* cuda:N opens only where a GPU is: elsewhere it fails saying why (a build
 * without CUDA, no device, no such ordinal) and names the device. */
static void test_cuda_says_why(void **state) {
    (void)state;
    Device *d;
    int rc = dev_open(&d, "cuda:7");
#ifdef PLUMB_HAVE_CUDA
    if (rc == 0) { /* a machine with 8 GPUs */
        assert_string_equal(d->name, "cuda:7");
        dev_close(&d);
        return;
    }
    assert_non_null(strstr(pl_error(), "cuda:7"));
#else
    assert_int_equal(rc, PL_ENOTSUP);
    assert_non_null(strstr(pl_error(), "this build has no CUDA"));
#endif
    assert_null(d);
}

/* A failure is kept, stops what follows, and is reported once. (A real
 * allocation failure cannot be provoked under AddressSanitizer, which
 * aborts on an impossible size instead of returning NULL.) */
static void test_sticky_error(void **state) {
    (void)state;
    Device *d;
    assert_int_equal(dev_open(&d, "cpu"), 0);
    float *ok = d->be->alloc(d, sizeof(float));
    dev_fail(d, PL_ENOMEM, "out of memory allocating %d bytes", 12);
    assert_int_equal(d->err, PL_ENOMEM);
    /* later calls do nothing, and a later failure does not replace it */
    assert_null(d->be->alloc(d, sizeof(float)));
    const float one = 1.0f;
    d->be->upload(d, ok, &one, sizeof one);
    d->be->scale(d, ok, 1, 2.0f);
    assert_true(*ok == 0.0f);
    dev_fail(d, PL_EINVAL, "second");
    assert_int_equal(dev_sync(d), PL_ENOMEM);
    assert_string_equal(pl_error(), "cpu: out of memory allocating 12 bytes");
    assert_int_equal(dev_sync(d), 0); /* reported once, then cleared */
    d->be->upload(d, ok, &one, sizeof one);
    assert_true(*ok == 1.0f);
    d->be->free(d, ok);
    dev_close(&d);
}

/* A model on a device the caller opened computes what a model on its own
 * CPU device does, to the bit, forward and backward. */
static void test_model_on_given_device(void **state) {
    (void)state;
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 11, c.dim = 8, c.hidden_dim = 12, c.n_layers = 2, c.n_heads = 4;
    c.n_kv_heads = 2, c.head_dim = 4, c.max_seq_len = 16, c.qkv_bias = 1;
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 7, 0.4f), 0);
    Device *d;
    assert_int_equal(dev_open(&d, "cpu"), 0);
    ModelOptions o1 = {.lora_rank = 2, .lora_targets = (1u << LORA_NT) - 1, .head = 1, .seed = 3};
    ModelOptions o2 = o1;
    o2.dev = d;
    Model *m1, *m2;
    assert_int_equal(model_new(&m1, base, &o1), 0);
    assert_int_equal(model_new(&m2, base, &o2), 0);
    assert_ptr_equal(m2->dev, d);
    assert_null(m2->own_dev);
    const int tokens[6] = {1, 4, 7, 2, 9, 3}, targets[6] = {4, 7, -1, 9, 3, -1}, cu[3] = {0, 2, 6};
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2};
    float lp[2][6], ent[2][6], val[2][6];
    const float dlp[6] = {1, -1, 0, 0.5f, 2, 0}, dval[6] = {0.1f, 0, 0, 0.3f, 0, -1};
    Model *ms[2] = {m1, m2};
    for (int k = 0; k < 2; k++) {
        model_zero_grad(ms[k]);
        assert_int_equal(model_forward(ms[k], &b, lp[k], ent[k], val[k], NULL), 0);
        assert_int_equal(model_backward(ms[k], &b, dlp, NULL, dval), 0);
    }
    assert_memory_equal(lp[0], lp[1], sizeof lp[0]);
    assert_memory_equal(ent[0], ent[1], sizeof ent[0]);
    assert_memory_equal(val[0], val[1], sizeof val[0]);
    assert_memory_equal(m1->g_lora, m2->g_lora, sizeof(float) * m1->lora->n);
    assert_memory_equal(m1->g_head, m2->g_head, sizeof(float) * (c.dim + 1));
    model_free(&m2);
    model_free(&m1);
    dev_close(&d);
    base_free(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_cpu),       cmocka_unit_test(test_refused_names),
        cmocka_unit_test(test_cuda_says_why),  cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_model_on_given_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
