/* collective.c: the checked entry points of collective.h. */
#include "common/collective.h"

#include "common/clock.h"
#include "common/err.h"

static int check(const Collective *c, const CollGroup *g, const char *what) {
    if (!c || !g) return pl_fail(PL_EINVAL, "%s: no collective or no group", what);
    if (g->size < 1 || g->rank < 0 || g->rank >= g->size)
        return pl_fail(PL_EINVAL, "%s: rank %d of a group of %d", what, g->rank, g->size);
    return 0;
}

int coll_allreduce_sum(Collective *c, const CollGroup *g, float *buf, size_t n) {
    PL_TRY(check(c, g, "all-reduce"));
    if (g->size == 1) return 0;
    double t0 = pl_now_s();
    int rc = c->ops->allreduce_sum(c, g, buf, n);
    c->busy_s += pl_now_s() - t0;
    c->bytes += n * sizeof(float);
    return rc;
}

int coll_broadcast(Collective *c, const CollGroup *g, int root, float *buf, size_t n) {
    PL_TRY(check(c, g, "broadcast"));
    if (root < 0 || root >= g->size)
        return pl_fail(PL_EINVAL, "broadcast: root %d outside a group of %d", root, g->size);
    if (g->size == 1) return 0;
    double t0 = pl_now_s();
    int rc = c->ops->broadcast(c, g, root, buf, n);
    c->busy_s += pl_now_s() - t0;
    c->bytes += n * sizeof(float);
    return rc;
}

void coll_free(Collective **c) {
    if (!c || !*c) return;
    (*c)->ops->free(*c);
    *c = NULL;
}
