/* test_roles_state.c: what a worker role (worker/role.h) keeps between
 * requests: its adapter, its checkpoints, and that a refused request
 * changes none of it; requests sent through the wire to a role on the tiny
 * random model as in test_roles.c (rolesutil.h).
 *
 * Proves: adapter get / set (a wrong size changes nothing; the critic has
 * no adapter sync); save + resume continues bit for bit (a LoRA actor with
 * warmup, a reward head, full fine-tuning); the Hugging Face export equals
 * the actor; bad requests fail with a message naming the field and leave
 * the role (adapter, moments, step, version) unchanged. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/wire.h"
#include "data/arith.h"
#include "testutil.h"
#include "worker/role.h"
#include "rolesutil.h"

/* ------------------------------------------------------ adapter, resume */

static Plumb__Envelope *req_adapter(WireArena *a, const char *role, int get, uint64_t version,
                                    const float *data, int n) {
    Plumb__Envelope *e = wire_envelope(a, 4, role);
    Plumb__AdapterMsg *m = wire_alloc(a, sizeof *m);
    plumb__adapter_msg__init(m);
    m->get = get;
    m->version = version;
    m->data = data ? wire_f32(a, data, n) : NULL;
    e->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
    e->adapter = m;
    return e;
}

/* get returns the flat adapter and version; set installs it at a version
 * (a rollout replica then samples as the trainer); a wrong size fails and
 * changes nothing; the critic has no adapter sync. */
static void test_adapter(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    Role *src = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    rl_randomize_adapter(src, 12);
    src->adapter_version = 9;
    int n = (int)src->model->lora->n;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *g = rl_call_ok(src, req_adapter(a, "actor", 1, 0, NULL, 0));
    assert_int_equal(g->body_case, PLUMB__ENVELOPE__BODY_ADAPTER);
    assert_int_equal(g->adapter->version, 9);
    float *data = rl_f32(g->adapter->data, n);
    assert_memory_equal(data, src->model->lora->mem, sizeof(float) * n);
    Plumb__Envelope *ok = rl_call_ok(r, req_adapter(a, "actor", 0, 9, data, n));
    assert_int_equal(ok->body_case, PLUMB__ENVELOPE__BODY_OK);
    assert_int_equal(r->adapter_version, 9);
    assert_memory_equal(r->model->lora->mem, src->model->lora->mem, sizeof(float) * n);
    Pk p;
    rl_fixed_batch(&p);
    float *l1 = rl_get_lp(r, &p, 1.0f), *l2 = rl_get_lp(src, &p, 1.0f);
    assert_memory_equal(l1, l2, sizeof(float) * p.N);
    int rc;
    assert_null(rl_call(r, req_adapter(a, "actor", 0, 10, data, n - 1), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_int_equal(r->adapter_version, 9);
    Role *c = rl_mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    assert_null(rl_call(c, req_adapter(a, "critic", 1, 0, NULL, 0), &rc));
    assert_non_null(strstr(pl_error(), "role 'critic' does not answer 'adapter'"));
    free(l1);
    free(l2);
    free(data);
    wire_free(&g);
    wire_free(&ok);
    wire_arena_free(&a);
    role_free(&c);
    role_free(&src);
    role_free(&r);
}

static Plumb__Envelope *req_checkpoint(WireArena *a, const char *role, const char *dir, int hf) {
    Plumb__Envelope *e = wire_envelope(a, 5, role);
    Plumb__CheckpointReq *c = wire_alloc(a, sizeof *c);
    plumb__checkpoint_req__init(c);
    c->dir = (char *)dir;
    c->export_hf = hf;
    e->body_case = PLUMB__ENVELOPE__BODY_CHECKPOINT;
    e->checkpoint = c;
    return e;
}

/* A role saved after two train calls and rebuilt with resume_dir answers
 * the next train call with the same metrics and ends in the same state as
 * the role that went on (adapter, head, moments, step, version), for a
 * LoRA actor (warmup schedule), a reward head, and full fine-tuning. */
static void test_resume(void **state) {
    for (int kind = 0; kind < 3; kind++) {
        Spec s = kind == 0   ? (Spec){.role = "actor", .rank = 2, .micro = 2, .warmup = 3}
                 : kind == 1 ? (Spec){.role = "reward", .rank = 2, .head = 1}
                             : (Spec){.role = "actor", .train_base = 1, .lr = 1e-3f};
        Role *r = rl_mk_ok(s);
        Pk p, c, rj;
        rl_fixed_batch(&p);
        rl_pref_pairs(&c, &rj);
        WireArena *a = wire_arena_new();
        for (int i = 0; i < 2; i++) {
            Plumb__Envelope *q = kind == 1 ? rl_req_bt(a, &c, &rj, i) : rl_req_sft(a, &p, 1, 2);
            wire_free((Plumb__Envelope *[]){rl_call_ok(r, q)});
        }
        const char *dir = tu_path("%s/ckpt%d", tu_tmp_dir(), kind);
        Plumb__Envelope *ok = rl_call_ok(r, req_checkpoint(a, s.role, dir, 0));
        assert_int_equal(ok->body_case, PLUMB__ENVELOPE__BODY_OK);
        wire_free(&ok);
        struct stat st;
        assert_int_equal(stat(tu_path("%s/%s/state.json", dir, s.role), &st), 0);
        Spec s2 = s;
        s2.resume = dir;
        s2.seed = 999; /* the saved state, not the init seed, decides */
        Role *q2 = rl_mk_ok(s2);
        assert_int_equal(q2->opt_step, r->opt_step);
        assert_int_equal(q2->adapter_version, r->adapter_version);
        Plumb__Envelope *q = kind == 1 ? rl_req_bt(a, &c, &rj, 5) : rl_req_sft(a, &p, 2, 2);
        Plumb__Envelope *e1 = rl_call_ok(r, q), *e2 = rl_call_ok(q2, q);
        for (size_t i = 0; i < e1->train_rep->n_metrics; i++)
            assert_true(e1->train_rep->metrics[i]->value == e2->train_rep->metrics[i]->value);
        assert_int_equal(e1->train_rep->optimizer_step, e2->train_rep->optimizer_step);
        float *p1[3], *g1[3], *p2[3], *g2[3];
        size_t n1[3], n2[3];
        int k = model_trainable(r->model, p1, g1, n1);
        assert_int_equal(model_trainable(q2->model, p2, g2, n2), k);
        for (int i = 0; i < k; i++) {
            assert_memory_equal(p1[i], p2[i], sizeof(float) * n1[i]);
            assert_memory_equal(r->opt[i].m, q2->opt[i].m, sizeof(float) * n1[i]);
            assert_memory_equal(r->opt[i].v, q2->opt[i].v, sizeof(float) * n1[i]);
        }
        wire_free(&e1);
        wire_free(&e2);
        wire_arena_free(&a);
        role_free(&q2);
        role_free(&r);
    }
}

/* checkpoint with export_hf writes a merged Hugging Face model that,
 * loaded as a plain base, scores like the actor with its adapter; the
 * tokenizer and the PEFT adapter come along. */
static void test_export(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    rl_randomize_adapter(r, 13);
    const char *dir = tu_path("%s/export", tu_tmp_dir());
    char d[600];
    snprintf(d, sizeof d, "%s", dir);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *ok = rl_call_ok(r, req_checkpoint(a, "actor", d, 1));
    wire_free(&ok);
    struct stat st;
    const char *files[] = {"hf/config.json", "hf/model.safetensors", "hf/tokenizer.json",
                           "hf/tokenizer_config.json", "hf/adapter/adapter_config.json",
                           "actor/adapter/adapter_model.safetensors", "actor/optimizer.safetensors"};
    for (int i = 0; i < 7; i++)
        if (stat(tu_path("%s/%s", d, files[i]), &st) != 0) fail_msg("missing %s", files[i]);
    Base *merged = NULL;
    assert_int_equal(base_load(&merged, tu_path("%s/hf", d)), 0);
    ModelOptions mo = {0};
    Model *m = NULL;
    assert_int_equal(model_new(&m, merged, &mo), 0);
    Pk p;
    rl_fixed_batch(&p);
    float want[1024], got[1024];
    rl_model_outputs(m, &p, 1.0f, want, NULL, NULL);
    rl_model_outputs(r->model, &p, 1.0f, got, NULL, NULL);
    tu_assert_close(got, want, p.N, 1e-4f, 1e-4f, "merged export vs actor");
    model_free(&m);
    base_free(&merged);
    wire_arena_free(&a);
    role_free(&r);
}

/* ------------------------------------------------------------ bad input */

/* A lying shape, a token outside the vocabulary, a sequence over the
 * context, a bad option: each fails with a message naming the field, and
 * the role (adapter, moments, step, version) is unchanged. */
static void test_validation(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    rl_fixed_batch(&p);
    WireArena *a = wire_arena_new();
    wire_free((Plumb__Envelope *[]){rl_call_ok(r, rl_req_sft(a, &p, 1, 1))});
    size_t n = r->model->lora->n;
    float *mem = malloc(sizeof(float) * n), *mm = malloc(sizeof(float) * n);
    memcpy(mem, r->model->lora->mem, sizeof(float) * n);
    memcpy(mm, r->opt[0].m, sizeof(float) * n);
    float *old = rl_get_lp(r, &p, 1.0f), adv[1024] = {0};
    int rc;
    /* old_logprobs one short */
    Plumb__Envelope *q = rl_req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f);
    q->train->grpo->old_logprobs = wire_f32(a, old, p.N - 1);
    assert_null(rl_call(r, q, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "train.grpo.old_logprobs"));
    /* kl_coef without reference log-probs */
    assert_null(rl_call(r, rl_req_policy(a, &p, 1, old, adv, NULL, 0.1f, 0.0f), &rc));
    assert_non_null(strstr(pl_error(), "ref_logprobs"));
    /* a non-finite advantage */
    adv[3] = NAN;
    assert_null(rl_call(r, rl_req_policy(a, &p, 1, old, adv, NULL, 0.0f, 0.0f), &rc));
    assert_non_null(strstr(pl_error(), "advantages"));
    adv[3] = 0;
    /* a bad loss_agg */
    q = rl_req_policy(a, &p, 0, old, adv, NULL, 0.0f, 0.0f);
    q->train->ppo->loss_agg = "median";
    assert_null(rl_call(r, q, &rc));
    assert_non_null(strstr(pl_error(), "median"));
    /* a token id over the vocabulary, in train and in logprobs */
    Pk bad = p;
    bad.tok[2] = ARITH_VOCAB;
    assert_null(rl_call(r, rl_req_sft(a, &bad, 1, 1), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "vocabulary"));
    assert_null(rl_call(r, rl_req_logprobs(a, "actor", &bad, 1.0f, 0), &rc));
    assert_non_null(strstr(pl_error(), "logprobs.seqs"));
    /* a sequence longer than the context */
    Pk lng = {0};
    int ids[60];
    for (int i = 0; i < 60; i++) ids[i] = 40 + i % 10;
    rl_pk_add_ids(&lng, ids, 60, 50);
    assert_null(rl_call(r, rl_req_sft(a, &lng, 1, 1), &rc));
    assert_non_null(strstr(pl_error(), "context"));
    /* sft with no response tokens */
    Pk nom = p;
    memset(nom.mask, 0, sizeof nom.mask);
    assert_null(rl_call(r, rl_req_sft(a, &nom, 1, 1), &rc));
    assert_non_null(strstr(pl_error(), "mask"));
    /* dpo pairs that do not pair */
    Pk c, rj;
    rl_pref_pairs(&c, &rj);
    Pk rj2 = {0};
    rl_pk_add(&rj2, "1=", "1", 1);
    float *rc_lp = rl_get_lp(r, &c, 1.0f), *rr_lp = rl_get_lp(r, &rj2, 1.0f);
    assert_null(rl_call(r, rl_req_dpo(a, &c, &rj2, rc_lp, rr_lp), &rc));
    assert_non_null(strstr(pl_error(), "3 chosen and 1 rejected"));
    /* nothing changed */
    assert_memory_equal(mem, r->model->lora->mem, sizeof(float) * n);
    assert_memory_equal(mm, r->opt[0].m, sizeof(float) * n);
    assert_int_equal(r->opt_step, 1);
    assert_int_equal(r->adapter_version, 1);
    free(rc_lp);
    free(rr_lp);
    free(old);
    free(mem);
    free(mm);
    wire_arena_free(&a);
    role_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adapter),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, rl_setup, rl_teardown);
}
