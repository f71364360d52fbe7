/* dispatch.c: a request to the handler its role's table names (role.h). */
#include <string.h>

#include "common/err.h"
#include "worker/role.h"
#include "worker/train.h"

int role_unsupported(const Role *r, const Plumb__Envelope *q) {
    char name[64];
    return pl_fail(PL_EPROTO, "role '%s' does not answer '%s'", role_kind_name(r->kind),
                   wire_body_name(q, name, sizeof name));
}

int role_reply_ok(WireArena *a, Plumb__Envelope *rep) {
    Plumb__Ok *ok = wire_alloc(a, sizeof *ok);
    PL_CHECK_ALLOC(ok);
    plumb__ok__init(ok);
    rep->body_case = PLUMB__ENVELOPE__BODY_OK;
    rep->ok = ok;
    return 0;
}

int role_handle(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    if (!r || !q || !a || !rep) return pl_fail(PL_EINVAL, "role_handle: NULL argument");
    const char *name = role_kind_name(r->kind);
    if (q->role && *q->role && strcmp(q->role, name)) {
        char body[64];
        return pl_fail(PL_EPROTO, "a request for role '%s' ('%s') reached role '%s'", q->role,
                       wire_body_name(q, body, sizeof body), name);
    }
    pl_clear_error();
    const RoleDesc *d = r->desc;
    if (q->body_case == PLUMB__ENVELOPE__BODY_TRAIN) {
        for (int i = 0; q->train && i < d->n_bodies; i++)
            if (d->bodies[i]->body == q->train->body_case) return role_train(r, d->bodies[i], q, a, rep);
        return role_unsupported(r, q);
    }
    for (int i = 0; i < d->n_requests; i++)
        if (d->requests[i].body == q->body_case) return d->requests[i].fn(r, q, a, rep);
    return role_unsupported(r, q);
}
