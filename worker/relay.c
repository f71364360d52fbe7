/* relay.c: collectives through the coordinator (relay.h). */
#include "worker/relay.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/wire.h"

typedef struct {
    Collective base;
    ZtClient *client;
    const atomic_int *gone;
    size_t max_message;
    uint64_t group;          /* the group of the last call                    */
    int seq;                 /* calls (slices) of that group so far           */
} Relay;

/* Floats per frame: well under the message limit. */
static size_t slice_of(const Relay *r) {
    size_t n = r->max_message > 8192 ? (r->max_message - 4096) / 2 / sizeof(float) : 0;
    return n < 1024 ? 1024 : n;
}

static int send_part(Relay *r, const CollGroup *g, Plumb__AllReduce__Op op, int root, int seq,
                     const float *x, size_t n) {
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = a ? wire_envelope(a, g->request, NULL) : NULL;
    Plumb__AllReduce *m = e ? wire_alloc(a, sizeof *m) : NULL;
    int rc = m ? 0 : pl_fail(PL_ENOMEM, "all-reduce: out of memory");
    if (rc == 0) {
        plumb__all_reduce__init(m);
        m->group = g->group, m->rank = g->rank, m->size = g->size, m->seq = seq;
        m->op = op, m->root = root;
        m->data = wire_f32(a, x, (int)n);
        e->body_case = PLUMB__ENVELOPE__BODY_ALL_REDUCE;
        e->all_reduce = m;
        void *buf;
        size_t len;
        rc = m->data ? wire_pack(e, &buf, &len) : pl_fail(PL_ENOMEM, "all-reduce: out of memory");
        if (rc == 0) {
            rc = zt_client_send(r->client, buf, len, 10000);
            free(buf);
        }
    }
    wire_arena_free(&a);
    return rc;
}

/* Waits for the answer to call seq of g's request and copies its n floats
 * into out. */
static int wait_part(Relay *r, const CollGroup *g, int seq, float *out, size_t n) {
    for (;;) {
        if (r->gone && atomic_load(r->gone))
            return pl_fail(PL_ETIMEOUT, "the coordinator stopped answering heartbeats");
        void *buf;
        size_t len;
        int got = zt_client_recv(r->client, &buf, &len, 200);
        if (got == 0) continue;
        if (got < 0) return got;
        Plumb__Envelope *e = NULL;
        int rc = wire_unpack(buf, len, r->max_message, "the coordinator", &e);
        free(buf);
        PL_TRY(rc);
        rc = 1; /* 1: not ours, keep waiting */
        if (e->id == g->request && e->body_case == PLUMB__ENVELOPE__BODY_ERROR) {
            rc = pl_fail(PL_EPEER, "%s", e->error->message);
        } else if (e->id == g->request && e->body_case == PLUMB__ENVELOPE__BODY_ALL_REDUCE &&
                   e->all_reduce->group == g->group && e->all_reduce->seq >= seq) {
            float *x = NULL;
            if (e->all_reduce->seq != seq)
                rc = pl_fail(PL_EPROTO, "call %d answered as %d", seq, e->all_reduce->seq);
            else if ((rc = wire_get_f32(e->all_reduce->data, (long)n, 0, "all_reduce.data", &x)) == 0)
                memcpy(out, x, sizeof(float) * n);
            free(x);
        }
        wire_free(&e);
        if (rc <= 0) return rc;
    }
}

/* One collective over buf[0..n), slice by slice; every rank sends its
 * slice (a broadcast's non-roots send none) and takes the answer. */
static int run(Relay *r, const CollGroup *g, Plumb__AllReduce__Op op, int root, float *buf,
               size_t n, const char *what) {
    if (g->group != r->group) r->group = g->group, r->seq = 0;
    size_t per = slice_of(r), at = 0;
    int rc = 0, sends = op == PLUMB__ALL_REDUCE__OP__SUM || g->rank == root;
    do { /* at least one frame, also for n = 0 */
        size_t k = n - at < per ? n - at : per;
        int seq = r->seq++;
        rc = send_part(r, g, op, root, seq, buf + at, sends ? k : 0);
        if (rc == 0) rc = wait_part(r, g, seq, buf + at, k);
        if (rc < 0) rc = pl_wrap(rc, "%s %d of group %llu (rank %d of %d)", what, seq,
                                 (unsigned long long)g->group, g->rank, g->size);
        at += k;
    } while (rc == 0 && at < n);
    return rc;
}

static int allreduce_sum(Collective *c, const CollGroup *g, float *buf, size_t n) {
    return run((Relay *)c, g, PLUMB__ALL_REDUCE__OP__SUM, 0, buf, n, "all-reduce");
}

static int broadcast(Collective *c, const CollGroup *g, int root, float *buf, size_t n) {
    return run((Relay *)c, g, PLUMB__ALL_REDUCE__OP__BROADCAST, root, buf, n, "broadcast");
}

static void relay_free(Collective *c) {
    Relay *r = (Relay *)c;
    zt_client_free(&r->client);
    free(r);
}

static const CollectiveOps relay_ops = {.name = "relay", .allreduce_sum = allreduce_sum,
                                        .broadcast = broadcast, .free = relay_free};

int relay_new(Collective **out, const ZtClientOptions *o, const atomic_int *gone) {
    *out = NULL;
    Relay *r = calloc(1, sizeof *r);
    PL_CHECK_ALLOC(r);
    r->base.ops = &relay_ops;
    r->gone = gone;
    r->max_message = o->max_message ? o->max_message : WIRE_MAX_MESSAGE_DEFAULT;
    int rc = zt_client_new(&r->client, o);
    if (rc < 0) {
        free(r);
        return pl_wrap(rc, "the collective's socket");
    }
    *out = &r->base;
    return 0;
}
