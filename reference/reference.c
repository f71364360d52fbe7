/* reference.c: the reference policy answers logprobs only. It is the base
 * (with an init_adapter when configured, e.g. an SFT adapter for DPO) and
 * never trains. */
#include "common/err.h"
#include "worker/role_impl.h"

int reference_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    if (q->body_case == PLUMB__ENVELOPE__BODY_LOGPROBS) return role_logprobs(r, q->logprobs, a, rep);
    return role_unsupported(r, q);
}
