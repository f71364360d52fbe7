/* critic.c: the critic's requests: values, train (value), checkpoint.
 * The critic is the base with its own adapter and a scalar head; values[t]
 * is the head at position t - 1 (role.h), 0 at each first token. */
#include <stdlib.h>

#include "common/err.h"
#include "worker/role_impl.h"

static int values(Role *r, const Plumb__ValuesReq *q, WireArena *a, Plumb__Envelope *rep) {
    if (!r->model->head) return pl_fail(PL_EPROTO, "values: role critic has no value head");
    WireSeqs s;
    PL_TRY(wire_get_seqs(q->seqs, &r->limits, "values.seqs", &s));
    float *v = wire_alloc(a, sizeof(float) * (size_t)(s.N ? s.N : 1));
    Plumb__ValuesRep *m = wire_alloc(a, sizeof *m);
    int rc = !v || !m ? pl_fail(PL_ENOMEM, "values: out of memory") : 0;
    if (rc == 0) rc = role_infer(r, s.tokens, s.offsets, s.B, 1.0f, NULL, NULL, v, NULL);
    if (rc == 0) {
        plumb__values_rep__init(m);
        m->values = wire_f32(a, v, s.N);
        rep->body_case = PLUMB__ENVELOPE__BODY_VALUES_REP;
        rep->values_rep = m;
    }
    wire_seqs_free(&s);
    return rc;
}

int critic_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    switch (q->body_case) {
    case PLUMB__ENVELOPE__BODY_VALUES: return values(r, q->values, a, rep);
    case PLUMB__ENVELOPE__BODY_CHECKPOINT: return role_checkpoint(r, q->checkpoint, 0, a, rep);
    case PLUMB__ENVELOPE__BODY_TRAIN:
        if (q->train->body_case == PLUMB__TRAIN_REQ__BODY_VALUE) return role_train(r, q->train, a, rep);
        return role_unsupported(r, q);
    default: return role_unsupported(r, q);
    }
}
