/* test_backend.c: devices by name, the sticky error, and the model on a
 * device it is given.
 *
 * What the CPU backend computes is what kernels/cpu computes: every model
 * test (test_model, test_hf_reference, test_generate, ...) runs through it.
 * Here: opening and refusing devices, the first failure kept and reported
 * once by dev_sync, a model on a caller's device giving the numbers of one
 * on its own, and the same on "cpu-staged", whose memory is not the host's:
 * there the model's uploads, downloads and device twins are what a GPU run
 * does, and a host pointer handed to a kernel is an error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "model/generate.h"
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
    /* a lost device (a GPU fault that corrupts its context) stays failed */
    d->lost = 1;
    dev_fail(d, PL_EDEVICE, "an illegal memory access");
    assert_int_equal(dev_sync(d), PL_EDEVICE);
    assert_string_equal(pl_error(), "cpu: lost: an illegal memory access");
    assert_int_equal(dev_sync(d), PL_EDEVICE);
    d->lost = 0, d->err = 0; /* (only so that the rest of this test can go on) */
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

static ModelConfig tiny(void) {
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 11, c.dim = 8, c.hidden_dim = 12, c.n_layers = 2, c.n_heads = 4;
    c.n_kv_heads = 2, c.head_dim = 4, c.max_seq_len = 16, c.qkv_bias = 1;
    return c;
}

/* A kernel given a host buffer on a device whose memory is not the host's
 * fails, naming the kernel and the argument; nothing is computed. */
static void test_staged_refuses_host_pointers(void **state) {
    (void)state;
    Device *d;
    assert_int_equal(dev_open(&d, "cpu-staged"), 0);
    assert_string_equal(d->name, "cpu-staged");
    assert_false(d->be->host_memory);
    float host[4] = {1, 2, 3, 4};
    float *x = d->be->alloc(d, sizeof host);
    d->be->upload(d, x, host, sizeof host);
    d->be->scale(d, x + 1, 3, 2.0f); /* inside the allocation: fine */
    assert_int_equal(dev_sync(d), 0);
    d->be->scale(d, host, 4, 2.0f);
    assert_true(host[0] == 1.0f);
    assert_int_equal(dev_sync(d), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "cpu-staged: scale x:"));
    assert_non_null(strstr(pl_error(), "is not memory of this device"));
    d->be->scale(d, x, 5, 2.0f); /* one past the end */
    assert_int_equal(dev_sync(d), PL_EINVAL);
    float back[4];
    d->be->download(d, back, x, sizeof back);
    assert_true(back[0] == 1.0f && back[1] == 4.0f && back[3] == 8.0f);
    d->be->free(d, x);
    dev_close(&d);
}

/* One model step on dev (or the CPU for NULL): forward, backward, then an
 * optimizer-like change of the host masters and a second forward. */
typedef struct {
    float lp[6], ent[6], val[6], lp2[6];
    float *grads[3];
    size_t sizes[3];
    int nb;
} StepOut;

static void run_step(Base *base, Device *dev, int train_base, StepOut *o) {
    ModelOptions opt = {.lora_rank = train_base ? 0 : 2,
                        .lora_targets = (1u << LORA_NT) - 1,
                        .head = 1,
                        .train_base = train_base,
                        .seed = 3,
                        .dev = dev};
    Model *m;
    assert_int_equal(model_new(&m, base, &opt), 0);
    Rng r;
    rng_seed(&r, 5);
    if (m->lora) tu_randn(m->lora->mem, m->lora->n, &r, 0.3f); /* B != 0: A gets gradients */
    const int tokens[6] = {1, 4, 7, 2, 9, 3}, targets[6] = {4, 7, -1, 9, 3, -1}, cu[3] = {0, 2, 6};
    Batch b = {.tokens = tokens, .targets = targets, .cu_seqlens = cu, .B = 2, .temperature = 0.9f};
    const float dlp[6] = {1, -1, 0, 0.5f, 2, 0}, dent[6] = {0, 0.2f, 0, 0, -0.1f, 0};
    const float dval[6] = {0.1f, 0, 0, 0.3f, 0, -1};
    model_zero_grad(m);
    assert_int_equal(model_forward(m, &b, o->lp, o->ent, o->val, NULL), 0);
    assert_int_equal(model_backward(m, &b, dlp, dent, dval), 0);
    float *params[3], *grads[3];
    o->nb = model_trainable(m, params, grads, o->sizes);
    for (int k = 0; k < o->nb; k++) {
        o->grads[k] = malloc(sizeof(float) * o->sizes[k]);
        memcpy(o->grads[k], grads[k], sizeof(float) * o->sizes[k]);
        for (size_t i = 0; i < o->sizes[k]; i++)
            params[k][i] -= 0.05f * grads[k][i]; /* a step on the host masters */
    }
    assert_int_equal(model_forward(m, &b, o->lp2, NULL, NULL, NULL), 0);
    model_free(&m);
}

static void step_free(StepOut *o) {
    for (int k = 0; k < o->nb; k++) free(o->grads[k]);
}

static void compare_steps(int train_base) {
    ModelConfig c = tiny();
    Base *b1, *b2;
    assert_int_equal(base_new_random(&b1, &c, 7, 0.4f), 0);
    assert_int_equal(base_new_random(&b2, &c, 7, 0.4f), 0);
    Device *d;
    assert_int_equal(dev_open(&d, "cpu-staged"), 0);
    StepOut cpu, st;
    run_step(b1, NULL, train_base, &cpu);
    run_step(b2, d, train_base, &st);
    assert_ptr_equal(b2->dev, d);
    assert_memory_equal(cpu.lp, st.lp, sizeof cpu.lp);
    assert_memory_equal(cpu.ent, st.ent, sizeof cpu.ent);
    assert_memory_equal(cpu.val, st.val, sizeof cpu.val);
    assert_int_equal(cpu.nb, st.nb);
    for (int k = 0; k < cpu.nb; k++)
        assert_memory_equal(cpu.grads[k], st.grads[k], sizeof(float) * cpu.sizes[k]);
    /* the changed parameters reached the device */
    assert_memory_equal(cpu.lp2, st.lp2, sizeof cpu.lp2);
    assert_true(memcmp(cpu.lp, cpu.lp2, sizeof cpu.lp) != 0);
    step_free(&cpu);
    step_free(&st);
    base_free(&b2);
    dev_close(&d);
    base_free(&b1);
}

/* LoRA on every target with a head, and full fine-tuning: forward, backward
 * and a step on the staged device give the CPU's numbers to the bit. */
static void test_staged_lora_step(void **state) {
    (void)state;
    compare_steps(0);
}

static void test_staged_full_step(void **state) {
    (void)state;
    compare_steps(1);
}

/* Sampling through the KV cache (prefill, then decode steps) on the staged
 * device gives the CPU's tokens and log-probs. */
static void test_staged_generate(void **state) {
    (void)state;
    ModelConfig c = tiny();
    Base *base;
    assert_int_equal(base_new_random(&base, &c, 9, 0.6f), 0);
    Device *d;
    assert_int_equal(dev_open(&d, "cpu-staged"), 0);
    const int p0[3] = {1, 2, 3}, p1[1] = {5}, p2[4] = {7, 7, 1, 0};
    const int *prompts[3] = {p0, p1, p2}, lens[3] = {3, 1, 4};
    GenParams gp = {.max_new_tokens = 8, .seed = 4, .ignore_eos = 1,
                    .sampler = {.temperature = 1.0f, .top_p = 0.9f}};
    GenResult res[2][3];
    for (int k = 0; k < 2; k++) {
        ModelOptions opt = {.lora_rank = 2, .seed = 1, .dev = k ? d : NULL};
        Model *m;
        assert_int_equal(model_new(&m, base, &opt), 0);
        Rng r;
        rng_seed(&r, 8);
        tu_randn(m->lora->mem, m->lora->n, &r, 0.3f);
        memset(res[k], 0, sizeof res[k]);
        assert_int_equal(gen_generate(m, prompts, lens, 3, &gp, res[k]), 0);
        model_free(&m);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[0][i].n, res[1][i].n);
        assert_int_equal(res[0][i].n, 8);
        assert_memory_equal(res[0][i].ids, res[1][i].ids, sizeof(int) * res[0][i].n);
        assert_memory_equal(res[0][i].logprobs, res[1][i].logprobs, sizeof(float) * res[0][i].n);
        gen_result_free(&res[0][i]);
        gen_result_free(&res[1][i]);
    }
    base_free(&base);
    dev_close(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_cpu),       cmocka_unit_test(test_refused_names),
        cmocka_unit_test(test_cuda_says_why),  cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_model_on_given_device),
        cmocka_unit_test(test_staged_refuses_host_pointers),
        cmocka_unit_test(test_staged_lora_step),
        cmocka_unit_test(test_staged_full_step),
        cmocka_unit_test(test_staged_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
