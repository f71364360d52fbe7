/* test_roles.c: the worker roles (worker/role.h) answering real requests
 * that do not train them: generate, logprobs, values and score, and requests
 * that reach the wrong role.
 *
 * Every request is built with wire.h's builders, packed and unpacked as on
 * the wire, handled by role_handle, and its reply packed and unpacked again
 * (rolesutil.h). A tiny random model (vocabulary 259: the arith byte
 * tokenizer, EOS 257) stands behind every role. The train bodies are
 * test_roles_train.c's; adapter sync, checkpoints and bad requests
 * test_roles_state.c's.
 *
 * Proves: roles with a base of their own share one copy of it and are
 * refused for another vocabulary or another fingerprint; generate's shapes,
 * masks, sampled log-probs, determinism and split invariance; the per-token
 * shift of logprobs, entropy and values against model_forward; reference ==
 * a fresh actor; every reward rule and the model score at the last token;
 * requests a role does not answer, or addressed to another role, fail
 * naming both. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/wire.h"
#include "data/arith.h"
#include "algo/rules.h"
#include "testutil.h"
#include "worker/bases.h"
#include "worker/role.h"
#include "rolesutil.h"

#define EOS ARITH_EOS

/* -------------------------------------------------- own bases, generate */

static Plumb__Envelope *req_generate(WireArena *a, const Pk *prompts, int n, int64_t first) {
    Plumb__Envelope *e = wire_envelope(a, 1, "actor");
    Plumb__GenerateReq *g = wire_alloc(a, sizeof *g);
    plumb__generate_req__init(g);
    g->prompts = rl_pk_seqs(a, prompts);
    g->n = n;
    g->temperature = 0.9f;
    g->top_k = 0;
    g->top_p = 1.0f;
    g->seed = 11;
    g->max_new_tokens = 6;
    g->first_index = first;
    e->body_case = PLUMB__ENVELOPE__BODY_GENERATE;
    e->generate = g;
    return e;
}

/* Roles with a base of their own (critic.model, reference.model, a
 * reward model): a model of another size than the worker's, loaded once
 * per folder for every role of the worker that names it, freed with the
 * last of them; one of another vocabulary is refused naming both. */
static void test_own_bases_shared(void **state) {
    (void)state;
    ModelConfig c = rl_base->cfg;
    c.dim = 16, c.hidden_dim = 24, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1;
    Base *other;
    assert_int_equal(base_new_random(&other, &c, 3, 0.3f), 0);
    const char *dir = tu_path("%s/other-base", tu_tmp_dir());
    assert_int_equal(base_save_hf(other, dir), 0);
    base_free(&other);
    char path[600];
    snprintf(path, sizeof path, "%s", dir);
    Bases *bs;
    assert_int_equal(bases_new(&bs), 0);
    Plumb__Optim o = PLUMB__OPTIM__INIT;
    o.lr = 1e-2f, o.grad_clip = 1.0f, o.schedule = "constant";
    Plumb__RoleConfig rc = PLUMB__ROLE_CONFIG__INIT;
    rc.optim = &o, rc.seed = 5, rc.base_path = path;
    Role *critic, *ref;
    rc.role = "critic", rc.lora_rank = 2, rc.lora_alpha = 4, rc.head = 1;
    if (role_new(&critic, rl_desc_of("critic"), &rc, rl_base, NULL, rl_tok, rl_tokdir, NULL,
                 bs) < 0)
        fail_msg("%s", pl_error());
    rc.role = "reference", rc.lora_rank = 0, rc.head = 0;
    if (role_new(&ref, rl_desc_of("reference"), &rc, rl_base, NULL, rl_tok, rl_tokdir, NULL,
                 bs) < 0)
        fail_msg("%s", pl_error());
    assert_ptr_equal(critic->base, ref->base); /* one copy */
    assert_true(critic->base != rl_base);
    assert_int_equal(critic->base->cfg.dim, 16);
    assert_int_equal(critic->model->base->cfg.n_layers, 1);
    role_free(&critic); /* the reference still computes on it */
    float lp[3];
    const int ids[4] = {ARITH_BOS, 5, 6, 7}, tg[4] = {5, 6, 7, -1}, cu[2] = {0, 4};
    Batch b = {.tokens = ids, .targets = tg, .cu_seqlens = cu, .B = 1};
    float lp4[4];
    assert_int_equal(model_forward(ref->model, &b, lp4, NULL, NULL, NULL), 0);
    (void)lp;
    role_free(&ref);

    /* another vocabulary: refused, naming both */
    c.vocab_size = rl_base->cfg.vocab_size + 1;
    assert_int_equal(base_new_random(&other, &c, 3, 0.3f), 0);
    const char *dir2 = tu_path("%s/other-vocab", tu_tmp_dir());
    assert_int_equal(base_save_hf(other, dir2), 0);
    base_free(&other);
    snprintf(path, sizeof path, "%s", dir2);
    rc.role = "reference";
    assert_true(role_new(&ref, rl_desc_of("reference"), &rc, rl_base, NULL, rl_tok, rl_tokdir, NULL,
                         bs) < 0);
    assert_non_null(strstr(pl_error(), "vocabulary of"));
    assert_null(ref);

    /* the coordinator's fingerprint of the folder: the same model is
     * accepted, another one (a host with another checkpoint at that path)
     * refused naming the role and the folder, shared or not */
    snprintf(path, sizeof path, "%s", dir);
    Base *loaded;
    char fp[33];
    assert_int_equal(base_load(&loaded, dir), 0);
    assert_int_equal(wire_fingerprint(loaded, fp), 0);
    base_free(&loaded);
    rc.base_fingerprint = fp;
    if (role_new(&ref, rl_desc_of("reference"), &rc, rl_base, NULL, rl_tok, rl_tokdir, NULL,
                 bs) < 0)
        fail_msg("%s", pl_error());
    role_free(&ref);
    char wrong[33];
    snprintf(wrong, sizeof wrong, "%s", fp);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    rc.base_fingerprint = wrong;
    for (int shared = 0; shared < 2; shared++) {
        assert_true(role_new(&ref, rl_desc_of("reference"), &rc, rl_base, NULL, rl_tok, rl_tokdir,
                             NULL, shared ? bs : NULL) < 0);
        assert_non_null(strstr(pl_error(), "reference: its model"));
        assert_non_null(strstr(pl_error(), dir));
        assert_null(ref);
    }
    bases_free(&bs);
}

/* B * n sequences, prompt-major, each its prompt then generated ids with
 * mask 1 and their sampled log-probs; the same request gives the same
 * tokens; prompt 1 alone with first_index n gives prompt 1's samples; the
 * sampled log-probs equal a logprobs request at the sampling temperature. */
static void test_generate(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    rl_randomize_adapter(r, 3);
    Pk pr = {0}, p1 = {0};
    rl_pk_add(&pr, "12+30=", "", 0);
    rl_pk_add(&pr, "7+8=", "", 0);
    rl_pk_add(&p1, "7+8=", "", 0);
    const int n = 3;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, req_generate(a, &pr, n, 0));
    Plumb__Envelope *rep2 = rl_call_ok(r, req_generate(a, &pr, n, 0));
    Plumb__Envelope *rep3 = rl_call_ok(r, req_generate(a, &p1, n, n));
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_GENERATED);
    WireLimits lim = {.vocab = ARITH_VOCAB, .max_seq = 48};
    WireSeqs s, s2, s3;
    assert_int_equal(wire_get_seqs(rep->generated->seqs, &lim, "g", &s), 0);
    assert_int_equal(wire_get_seqs(rep2->generated->seqs, &lim, "g2", &s2), 0);
    assert_int_equal(wire_get_seqs(rep3->generated->seqs, &lim, "g3", &s3), 0);
    assert_int_equal(s.B, 2 * n);
    assert_int_equal(s3.B, n);
    float *lp = rl_f32(rep->generated->logprobs, s.N);
    unsigned char *eos = NULL;
    assert_non_null(rep->generated->eos);
    assert_int_equal(rep->generated->eos->data.len, 2 * n);
    eos = rep->generated->eos->data.data;
    assert_int_equal(rep->generated->adapter_version, 0);
    for (int b = 0; b < s.B; b++) {
        int i = b / n, plen = pr.off[i + 1] - pr.off[i], len = s.offsets[b + 1] - s.offsets[b];
        assert_true(len > plen && len <= plen + 6);
        assert_memory_equal(s.tokens + s.offsets[b], pr.tok + pr.off[i], sizeof(int) * plen);
        for (int t = 0; t < len; t++) {
            int k = s.offsets[b] + t;
            assert_int_equal(s.mask[k], t >= plen);
            if (t < plen) assert_true(lp[k] == 0.0f);
            else assert_true(lp[k] <= 0.0f && isfinite(lp[k]));
            if (t >= plen && t + 1 < len) assert_int_not_equal(s.tokens[k], EOS);
        }
        assert_int_equal(eos[b], s.tokens[s.offsets[b + 1] - 1] == EOS);
    }
    /* deterministic */
    assert_int_equal(s.N, s2.N);
    assert_memory_equal(s.tokens, s2.tokens, sizeof(int) * s.N);
    /* split invariance: prompt 1 alone at first_index n */
    int o1 = s.offsets[n];
    assert_int_equal(s3.N, s.N - o1);
    assert_memory_equal(s3.tokens, s.tokens + o1, sizeof(int) * s3.N);
    /* sampled log-probs = recomputed at T 0.9 on the response tokens */
    Pk g = {0};
    for (int b = 0; b < s.B; b++) {
        int len = s.offsets[b + 1] - s.offsets[b];
        rl_pk_add_ids(&g, s.tokens + s.offsets[b], len, 0);
    }
    float *re = rl_get_lp(r, &g, 0.9f);
    for (int t = 0; t < s.N; t++)
        if (s.mask[t]) assert_true(fabsf(re[t] - lp[t]) < 1e-4f);
    free(re);
    free(lp);
    wire_seqs_free(&s);
    wire_seqs_free(&s2);
    wire_seqs_free(&s3);
    wire_free(&rep);
    wire_free(&rep2);
    wire_free(&rep3);
    wire_arena_free(&a);
    role_free(&r);
    assert_null(r);
}

/* -------------------------------------------------- logprobs and values */

/* logprobs[t] = model lp at t - 1 (0 at each first token), entropy too,
 * at the request temperature; the reference equals a fresh actor. */
static void test_logprobs_shift(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    /* the reference takes no adapter, head or resume state from a shared config */
    Role *ref =
        rl_mk_ok((Spec){.role = "reference", .rank = 2, .head = 1, .resume = "/nonexistent"});
    assert_null(ref->model->lora);
    assert_null(ref->model->head);
    assert_int_equal(ref->n_opt, 0);
    rl_randomize_adapter(r, 4);
    Pk p = {0};
    rl_pk_add(&p, "3+4=", "7", 1);
    rl_pk_add(&p, "25+25=", "50", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, rl_req_logprobs(a, "actor", &p, 0.7f, 1));
    float *lp = rl_f32(rep->logprobs_rep->logprobs, p.N),
          *ent = rl_f32(rep->logprobs_rep->entropy, p.N);
    float mlp[64], ment[64];
    rl_model_outputs(r->model, &p, 0.7f, mlp, ment, NULL);
    for (int b = 0; b < p.B; b++) {
        assert_true(lp[p.off[b]] == 0.0f && ent[p.off[b]] == 0.0f);
        for (int t = p.off[b] + 1; t < p.off[b + 1]; t++) {
            assert_true(fabsf(lp[t] - mlp[t - 1]) < 1e-6f);
            assert_true(fabsf(ent[t] - ment[t - 1]) < 1e-6f);
        }
    }
    /* the reference (no adapter) equals an actor with a fresh adapter (B = 0) */
    Role *fresh = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    float *l1 = rl_get_lp(fresh, &p, 1.0f), *l2 = rl_get_lp(ref, &p, 1.0f);
    tu_assert_close(l1, l2, p.N, 1e-6f, 1e-6f, "reference vs fresh actor");
    free(l1);
    free(l2);
    free(lp);
    free(ent);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&fresh);
    role_free(&ref);
    role_free(&r);
}

/* values[t] = head at t - 1, 0 at each first token. */
static void test_values_shift(void **state) {
    Role *c = rl_mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    rl_randomize_adapter(c, 5);
    Pk p = {0};
    rl_pk_add(&p, "3+4=", "7", 1);
    rl_pk_add(&p, "9=", "9", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = wire_envelope(a, 2, "critic");
    Plumb__ValuesReq *q = wire_alloc(a, sizeof *q);
    plumb__values_req__init(q);
    q->seqs = rl_pk_seqs(a, &p);
    e->body_case = PLUMB__ENVELOPE__BODY_VALUES;
    e->values = q;
    Plumb__Envelope *rep = rl_call_ok(c, e);
    assert_int_equal(rep->body_case, PLUMB__ENVELOPE__BODY_VALUES_REP);
    float *v = rl_f32(rep->values_rep->values, p.N), mv[64], mlp[64];
    rl_model_outputs(c->model, &p, 1.0f, mlp, NULL, mv);
    for (int b = 0; b < p.B; b++) {
        assert_true(v[p.off[b]] == 0.0f);
        for (int t = p.off[b] + 1; t < p.off[b + 1]; t++) assert_true(fabsf(v[t] - mv[t - 1]) < 1e-6f);
    }
    free(v);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&c);
}

/* ---------------------------------------------------------------- score */

static Plumb__Envelope *req_score(WireArena *a, const Pk *p, const char *const *answers, int n) {
    Plumb__Envelope *e = wire_envelope(a, 3, "reward");
    Plumb__ScoreReq *q = wire_alloc(a, sizeof *q);
    plumb__score_req__init(q);
    q->seqs = rl_pk_seqs(a, p);
    q->n_answers = (size_t)n;
    q->answers = (char **)answers;
    e->body_case = PLUMB__ENVELOPE__BODY_SCORE;
    e->score = q;
    return e;
}

/* Scores of p by a reward role with rule/arg (n answers). */
static void scores(const char *rule, const char *arg, const Pk *p, const char *const *ans, int n,
                   const float *want) {
    Role *r = rl_mk_ok((Spec){.role = "reward", .rule = rule, .arg = arg});
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, req_score(a, p, ans, n));
    float *s = rl_f32(rep->score_rep->scores, p->B);
    for (int b = 0; b < p->B; b++)
        if (fabsf(s[b] - want[b]) > 1e-6f) fail_msg("%s: sequence %d scores %g, want %g", rule, b, s[b], want[b]);
    free(s);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&r);
}

/* The pure rules, then each rule through a reward role (the response is
 * the mask-1 tokens less a trailing EOS); missing answers and bad
 * arguments are errors that name the problem. */
static void test_rules(void **state) {
    RewardRule rr;
    void *st = NULL;
    assert_int_equal(reward_rule_parse("exact_match", &rr), 0);
    assert_int_equal(rr, RULE_EXACT_MATCH);
    assert_true(reward_rule_parse("fuzzy", &rr) < 0);
    assert_non_null(strstr(pl_error(), "fuzzy"));
    assert_int_equal(reward_rule_prepare(RULE_EXACT_MATCH, "", &st), 0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, " 42\n", 3, "42 ") == 1.0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, "420", 3, "42") == 0.0);
    assert_true(reward_rule_score(RULE_EXACT_MATCH, st, "42", 2, NULL) == 0.0);
    reward_rule_free(&st);
    assert_null(st);
    assert_int_equal(reward_rule_prepare(RULE_NUMERIC_MATCH, NULL, &st), 0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, " 12.0", 4, "12") == 1.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "1e1", 3, "10.0000001") == 1.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "12 apples", 9, "12") == 0.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "", 0, "0") == 0.0);
    assert_true(reward_rule_score(RULE_NUMERIC_MATCH, st, "12.01", 5, "12") == 0.0);
    reward_rule_free(&st);
    assert_int_equal(reward_rule_prepare(RULE_REGEX, "^\\d+$", &st), 0);
    assert_true(reward_rule_score(RULE_REGEX, st, "123", 3, NULL) == 1.0);
    assert_true(reward_rule_score(RULE_REGEX, st, "12a", 3, NULL) == 0.0);
    reward_rule_free(&st);
    assert_true(reward_rule_prepare(RULE_REGEX, "([a-z", &st) < 0);
    assert_non_null(strstr(pl_error(), "([a-z"));
    assert_true(reward_rule_prepare(RULE_LENGTH, "0", &st) < 0);
    assert_true(reward_rule_prepare(RULE_LENGTH, "4x", &st) < 0);
    assert_int_equal(reward_rule_prepare(RULE_LENGTH, "4", &st), 0);
    assert_true(fabs(reward_rule_score(RULE_LENGTH, st, "", 2, NULL) - 0.5) < 1e-12);
    assert_true(reward_rule_score(RULE_LENGTH, st, "", 9, NULL) == 1.0);
    reward_rule_free(&st);

    Pk p = {0};
    rl_pk_add(&p, "40+2=", "42", 1);
    rl_pk_add(&p, "7+8=", " 15 ", 0);
    rl_pk_add(&p, "1+1=", "3", 1);
    rl_pk_add(&p, "2+2=", "4.0", 1);
    const char *ans[] = {"42", "15", "2", "4"};
    scores("exact_match", NULL, &p, ans, 4, (float[]){1, 1, 0, 0});
    scores("numeric_match", NULL, &p, ans, 4, (float[]){1, 1, 0, 1});
    scores("regex", "^\\s*\\d+\\s*$", &p, NULL, 0, (float[]){1, 1, 1, 0});
    scores("length", "4", &p, NULL, 0, (float[]){0.5f, 1.0f, 0.25f, 0.75f});

    /* exact_match without answers; a bad regex at role_new */
    Role *r = rl_mk_ok((Spec){.role = "reward", .rule = "exact_match"});
    WireArena *a = wire_arena_new();
    int rc;
    assert_null(rl_call(r, req_score(a, &p, NULL, 0), &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_non_null(strstr(pl_error(), "sequence 0"));
    assert_null(rl_call(r, req_score(a, &p, ans, 3), &rc));
    assert_non_null(strstr(pl_error(), "3 answers for 4 sequences"));
    role_free(&r);
    assert_true(rl_mk(&r, (Spec){.role = "reward", .rule = "regex", .arg = "(unclosed"}) < 0);
    assert_null(r);
    assert_non_null(strstr(pl_error(), "(unclosed"));
    assert_non_null(strstr(pl_error(), "reward"));
    wire_arena_free(&a);
}

/* Without a rule the reward model scores each sequence by its head at the
 * sequence's last token. */
static void test_score_model(void **state) {
    Role *r = rl_mk_ok((Spec){.role = "reward", .rank = 2, .head = 1});
    rl_randomize_adapter(r, 6);
    Pk p = {0};
    rl_pk_add(&p, "3+4=", "7", 1);
    rl_pk_add(&p, "9=", "99", 0);
    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = rl_call_ok(r, req_score(a, &p, NULL, 0));
    float *s = rl_f32(rep->score_rep->scores, p.B), mv[64];
    rl_model_outputs(r->model, &p, 1.0f, NULL, NULL, mv);
    for (int b = 0; b < p.B; b++) assert_true(fabsf(s[b] - mv[p.off[b + 1] - 1]) < 1e-6f);
    free(s);
    wire_free(&rep);
    wire_arena_free(&a);
    role_free(&r);
}

/* ----------------------------------------------------------- wrong role */

/* Requests a role does not answer, and requests addressed to another
 * role, fail with PL_EPROTO naming both. */
static void test_wrong_role(void **state) {
    Role *c = rl_mk_ok((Spec){.role = "critic", .rank = 2, .head = 1});
    Role *ref = rl_mk_ok((Spec){.role = "reference"});
    Role *act = rl_mk_ok((Spec){.role = "actor", .rank = 2});
    Pk p;
    rl_fixed_batch(&p);
    WireArena *a = wire_arena_new();
    int rc;
    Plumb__Envelope *g = req_generate(a, &p, 1, 0);
    g->role = "critic";
    assert_null(rl_call(c, g, &rc));
    assert_int_equal(rc, PL_EPROTO);
    assert_string_equal(pl_error(), "role 'critic' does not answer 'generate'");
    Plumb__Envelope *s = rl_req_sft(a, &p, 1, 1);
    s->role = "critic";
    assert_null(rl_call(c, s, &rc));
    assert_string_equal(pl_error(), "role 'critic' does not answer 'train.sft'");
    s->role = "reference";
    assert_null(rl_call(ref, s, &rc));
    assert_non_null(strstr(pl_error(), "role 'reference' does not answer 'train.sft'"));
    static const float zeros[1024];
    assert_null(rl_call(act, rl_req_value(a, &p, zeros, zeros), &rc));
    assert_non_null(strstr(pl_error(), "'critic'"));
    assert_non_null(strstr(pl_error(), "reached role 'actor'"));
    Plumb__Envelope *v = rl_req_value(a, &p, zeros, zeros);
    v->role = "actor";
    assert_null(rl_call(act, v, &rc));
    assert_string_equal(pl_error(), "role 'actor' does not answer 'train.value'");
    wire_arena_free(&a);
    role_free(&act);
    role_free(&ref);
    role_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_bases_shared),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_logprobs_shift),
        cmocka_unit_test(test_values_shift),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_score_model),
        cmocka_unit_test(test_wrong_role),
    };
    return cmocka_run_group_tests(tests, rl_setup, rl_teardown);
}
