/* fuzz_wire.c: wire_unpack on arbitrary frames, then every checked getter
 * the roles and the coordinator use on what it accepted (sequences and
 * f32 tensors against small model limits). Nothing may crash, leak or read
 * out of bounds, whatever the frame claims about its shapes.
 * FUZZ_REQUIRES: common/wire.c */
#include <stdint.h>
#include <stdlib.h>

#include "common/err.h"
#include "common/wire.h"

static void seqs(const Plumb__Seqs *m) {
    static const WireLimits lim = {.vocab = 300, .max_seq = 64, .max_tokens = 1 << 16};
    WireSeqs s;
    if (wire_get_seqs(m, &lim, "fuzz", &s) == 0) {
        for (int b = 0; b < s.B; b++)
            if (s.offsets[b + 1] < s.offsets[b]) abort();
        wire_seqs_free(&s);
    }
}

static void f32(const Plumb__Tensor *t) {
    float *x = NULL;
    long n = t && t->n_shape == 1 ? (long)t->shape[0] : 0;
    if (n >= 0 && n < (1 << 20) && wire_get_f32(t, n, 1, "fuzz", &x) == 0) free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Plumb__Envelope *e = NULL;
    if (wire_unpack(data, size, 1 << 20, "fuzz", &e) < 0) {
        pl_clear_error();
        return 0;
    }
    switch (e->body_case) {
    case PLUMB__ENVELOPE__BODY_GENERATE: seqs(e->generate->prompts); break;
    case PLUMB__ENVELOPE__BODY_GENERATED:
        seqs(e->generated->seqs);
        f32(e->generated->logprobs);
        break;
    case PLUMB__ENVELOPE__BODY_LOGPROBS: seqs(e->logprobs->seqs); break;
    case PLUMB__ENVELOPE__BODY_ALL_REDUCE: f32(e->all_reduce->data); break;
    case PLUMB__ENVELOPE__BODY_LOGPROBS_REP: f32(e->logprobs_rep->logprobs); break;
    case PLUMB__ENVELOPE__BODY_SCORE: seqs(e->score->seqs); break;
    case PLUMB__ENVELOPE__BODY_TRAIN:
        if (e->train->body_case == PLUMB__TRAIN_REQ__BODY_GRPO) {
            seqs(e->train->grpo->seqs);
            f32(e->train->grpo->advantages);
        } else if (e->train->body_case == PLUMB__TRAIN_REQ__BODY_DPO) {
            seqs(e->train->dpo->chosen);
            seqs(e->train->dpo->rejected);
            f32(e->train->dpo->ref_chosen);
        } else if (e->train->body_case == PLUMB__TRAIN_REQ__BODY_SFT) {
            seqs(e->train->sft->seqs);
        }
        break;
    default: break;
    }
    wire_free(&e);
    pl_clear_error();
    return 0;
}
