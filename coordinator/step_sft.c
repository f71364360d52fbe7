/* step_sft.c: one SFT step: the batch's prompt/response records to the
 * actor's trainer (algos.h). */
#include "common/err.h"
#include "common/rng.h"
#include "coordinator/run_impl.h"

int step_sft(Run *r, const long *which, int n) {
    Packed p;
    int rc = pack_records(&r->train, which, n, 0, &p);
    WireArena *a = wire_arena_new();
    if (rc == 0 && !a) rc = pl_fail(PL_ENOMEM, "sft request: out of memory");
    if (rc == 0) {
        Plumb__Envelope *e =
            req_train(a, ROLE_ACTOR, r, rng_mix3(r->cfg->seed, TAG_TRAIN, r->step));
        Plumb__SftBody *b = wire_alloc(a, sizeof *b);
        plumb__sft_body__init(b);
        b->seqs = req_packed(a, &p);
        e->train->body_case = PLUMB__TRAIN_REQ__BODY_SFT;
        e->train->sft = b;
        r->tokens += p.N;
        rc = req_train_call(r, ROLE_ACTOR, e, a, "train/");
    }
    wire_arena_free(&a);
    packed_free(&p);
    return rc;
}
