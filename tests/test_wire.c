/* test_wire.c: envelopes and tensor blobs (common/wire.h): round trips, and
 * every kind of bad frame a peer could send is refused with a message
 * before any element is used. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/wire.h"
#include "model/weights.h"

static const WireLimits LIM = {.vocab = 100, .max_seq = 8, .max_tokens = 0};

/* Packs e, unpacks it, and returns the received envelope. */
static Plumb__Envelope *roundtrip(const Plumb__Envelope *e) {
    void *buf;
    size_t len;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    Plumb__Envelope *got = NULL;
    assert_int_equal(wire_unpack(buf, len, 1 << 20, "test", &got), 0);
    free(buf);
    return got;
}

/* A logprobs request survives packing: sequences, mask and scalars. */
static void test_roundtrip(void **state) {
    (void)state;
    WireArena *a = wire_arena_new();
    int tok[] = {1, 2, 3, 4, 5}, off[] = {0, 3, 5};
    unsigned char mask[] = {0, 1, 1, 0, 1};
    Plumb__Envelope *e = wire_envelope(a, 42, "reference");
    Plumb__LogprobsReq *q = wire_alloc(a, sizeof *q);
    plumb__logprobs_req__init(q);
    q->seqs = wire_seqs(a, tok, off, mask, 2);
    q->temperature = 0.7f;
    e->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS;
    e->logprobs = q;
    Plumb__Envelope *got = roundtrip(e);
    assert_int_equal(got->id, 42);
    assert_string_equal(got->role, "reference");
    assert_int_equal(got->body_case, PLUMB__ENVELOPE__BODY_LOGPROBS);
    WireSeqs s;
    assert_int_equal(wire_get_seqs(got->logprobs->seqs, &LIM, "q", &s), 0);
    assert_int_equal(s.B, 2);
    assert_int_equal(s.N, 5);
    assert_memory_equal(s.tokens, tok, sizeof tok);
    assert_memory_equal(s.offsets, off, sizeof off);
    assert_memory_equal(s.mask, mask, sizeof mask);
    assert_true(s.maskf[1] == 1.0f && s.maskf[3] == 0.0f);
    assert_true(got->logprobs->temperature == 0.7f);
    wire_seqs_free(&s);
    wire_free(&got);
    wire_arena_free(&a);
}

/* Garbage, an oversized frame, another protocol version and an empty body
 * are each refused with a message naming the sender. */
static void test_bad_frames(void **state) {
    (void)state;
    Plumb__Envelope *got = NULL;
    const char garbage[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01 not protobuf";
    assert_int_equal(wire_unpack(garbage, sizeof garbage, 1 << 20, "worker 7", &got), PL_EPROTO);
    assert_null(got);
    assert_non_null(strstr(pl_error(), "worker 7"));
    assert_non_null(strstr(pl_error(), "not a plumb Envelope"));

    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = wire_envelope(a, 1, NULL);
    Plumb__Ok *ok = wire_alloc(a, sizeof *ok);
    plumb__ok__init(ok);
    e->body_case = PLUMB__ENVELOPE__BODY_OK;
    e->ok = ok;
    void *buf;
    size_t len;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    assert_int_equal(wire_unpack(buf, len, len - 1, "w", &got), PL_ERANGE);
    assert_non_null(strstr(pl_error(), "over the limit"));
    free(buf);

    e->protocol = PLUMB_PROTOCOL + 1;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    assert_int_equal(wire_unpack(buf, len, 0, "w", &got), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "protocol"));
    free(buf);

    e->protocol = PLUMB_PROTOCOL;
    e->body_case = PLUMB__ENVELOPE__BODY__NOT_SET;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    assert_int_equal(wire_unpack(buf, len, 0, "w", &got), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "no body"));
    free(buf);
    wire_arena_free(&a);
}

/* Shapes that lie about their data, offsets that do not partition the
 * tokens, ids outside the vocabulary and over-long sequences are refused. */
static void test_lying_shapes(void **state) {
    (void)state;
    WireArena *a = wire_arena_new();
    int tok[] = {1, 2, 3, 4, 5}, off[] = {0, 3, 5};
    WireSeqs s;

    Plumb__Seqs *m = wire_seqs(a, tok, off, NULL, 2);
    m->tokens->shape[0] = 6; /* claims 6 tokens, carries 5 */
    assert_int_equal(wire_get_seqs(m, &LIM, "train.seqs", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "train.seqs.tokens"));

    int bad_off[] = {0, 4, 3};
    m = wire_seqs(a, tok, bad_off, NULL, 2);
    m->tokens->shape[0] = 3, m->tokens->data.len = 12;
    assert_int_equal(wire_get_seqs(m, &LIM, "s", &s), PL_EPROTO);

    int big[] = {1, 200, 3, 4, 5};
    m = wire_seqs(a, big, off, NULL, 2);
    assert_int_equal(wire_get_seqs(m, &LIM, "s", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "vocabulary"));

    int long_off[] = {0, 0, 5};
    m = wire_seqs(a, tok, long_off, NULL, 2);
    assert_int_equal(wire_get_seqs(m, &LIM, "s", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "length 0"));

    WireLimits tight = LIM;
    tight.max_seq = 2;
    m = wire_seqs(a, tok, off, NULL, 2);
    assert_int_equal(wire_get_seqs(m, &tight, "s", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "context"));

    unsigned char mask[] = {0, 1, 2, 0, 1};
    m = wire_seqs(a, tok, off, mask, 2);
    assert_int_equal(wire_get_seqs(m, &LIM, "s", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "mask"));

    m = wire_seqs(a, tok, off, NULL, 2);
    m->offsets->dtype = PLUMB__DTYPE__DT_F32;
    assert_int_equal(wire_get_seqs(m, &LIM, "s", &s), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "dtype"));

    float x[] = {1, 2, NAN};
    float *got;
    assert_int_equal(wire_get_f32(wire_f32(a, x, 3), 4, 1, "lp", &got), PL_EPROTO);
    assert_int_equal(wire_get_f32(wire_f32(a, x, 3), 3, 1, "lp", &got), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "lp[2]"));
    assert_int_equal(wire_get_f32(wire_f32(a, x, 3), 3, 0, "lp", &got), 0);
    free(got);
    assert_int_equal(wire_get_f32(NULL, 3, 0, "values", &got), PL_EPROTO);
    assert_non_null(strstr(pl_error(), "values: missing"));
    wire_arena_free(&a);
}

/* The fingerprint tells apart two bases that differ in one weight, and is
 * stable for the same base. */
static void test_fingerprint(void **state) {
    (void)state;
    ModelConfig c;
    config_defaults(&c);
    c.vocab_size = 64, c.dim = 16, c.hidden_dim = 32, c.n_layers = 2, c.n_heads = 2;
    c.n_kv_heads = 1, c.head_dim = 8, c.max_seq_len = 16;
    Base *b1, *b2;
    assert_int_equal(base_new_random(&b1, &c, 1, 0.02f), 0);
    assert_int_equal(base_new_random(&b2, &c, 1, 0.02f), 0);
    char f1[33], f2[33];
    assert_int_equal(wire_fingerprint(b1, f1), 0);
    assert_int_equal(wire_fingerprint(b2, f2), 0);
    assert_string_equal(f1, f2);
    b2->w.embed[0] += 1.0f;
    assert_int_equal(wire_fingerprint(b2, f2), 0);
    assert_string_not_equal(f1, f2);
    base_free(&b1);
    base_free(&b2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_lying_shapes),
        cmocka_unit_test(test_fingerprint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
