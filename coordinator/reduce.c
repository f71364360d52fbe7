/* reduce.c: sums and broadcasts of the relay (reduce.h). */
#include "coordinator/reduce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "coordinator/pool.h"

#define MAX_CALLS 16

/* One call in progress: the contributions of a group's ranks to its call
 * seq. */
typedef struct {
    int used;
    uint64_t group;
    int seq, size, got, op, root;
    Plumb__Envelope *part[POOL_MAX_WORKERS];
    ZtPeer peer[POOL_MAX_WORKERS];
} Call;

struct Reducer {
    ReduceSend send;
    void *ctx;
    Call calls[MAX_CALLS];
};

int reducer_new(Reducer **out, ReduceSend send, void *ctx) {
    *out = calloc(1, sizeof **out);
    PL_CHECK_ALLOC(*out);
    (*out)->send = send, (*out)->ctx = ctx;
    return 0;
}

static void call_clear(Call *x) {
    for (int i = 0; i < POOL_MAX_WORKERS; i++)
        wire_free(&x->part[i]);
    memset(x, 0, sizeof *x);
}

static void send_error(Reducer *r, const ZtPeer *peer, uint64_t id, const char *msg) {
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = a ? wire_error(a, id, PL_EPEER, msg) : NULL;
    if (e) r->send(r->ctx, peer, e);
    wire_arena_free(&a);
}

/* Answers every contribution of x with an Error saying msg. */
static void call_fail(Reducer *r, Call *x, const char *msg) {
    for (int i = 0; i < x->size && i < POOL_MAX_WORKERS; i++)
        if (x->part[i]) send_error(r, &x->peer[i], x->part[i]->id, msg);
    call_clear(x);
}

void reducer_fail_all(Reducer *r, const char *msg) {
    for (int i = 0; i < MAX_CALLS; i++)
        if (r->calls[i].used) call_fail(r, &r->calls[i], msg);
}

void reducer_free(Reducer **pr) {
    if (!pr || !*pr) return;
    for (int i = 0; i < MAX_CALLS; i++)
        call_clear(&(*pr)->calls[i]);
    free(*pr);
    *pr = NULL;
}

/* All contributions are in: the sum in rank order (or root's data), sent
 * to every rank as the answer to its own request. */
static int call_finish(Reducer *r, Call *x, char *msg, size_t cap) {
    int broadcast = x->op == PLUMB__ALL_REDUCE__OP__BROADCAST;
    const Plumb__Tensor *t0 = x->part[broadcast ? x->root : 0]->all_reduce->data;
    size_t n = t0->data.len / sizeof(float);
    for (int i = 0; !broadcast && i < x->size; i++)
        if (x->part[i]->all_reduce->data->data.len != t0->data.len) {
            snprintf(msg, cap,
                     "all-reduce %d of group %llu: rank %d sent %zu values and rank 0 %zu", x->seq,
                     (unsigned long long)x->group, i,
                     x->part[i]->all_reduce->data->data.len / sizeof(float), n);
            call_fail(r, x, msg);
            return PL_EPROTO;
        }
    float *sum = malloc(sizeof(float) * (n ? n : 1)), *v = malloc(sizeof(float) * (n ? n : 1));
    if (!sum || !v) {
        free(sum), free(v);
        snprintf(msg, cap, "all-reduce: the coordinator is out of memory");
        call_fail(r, x, msg);
        return PL_ENOMEM;
    }
    memcpy(sum, t0->data.data, sizeof(float) * n);
    for (int i = 1; !broadcast && i < x->size; i++) {
        memcpy(v, x->part[i]->all_reduce->data->data.data, sizeof(float) * n);
        for (size_t k = 0; k < n; k++)
            sum[k] += v[k];
    }
    free(v);
    WireArena *a = wire_arena_new();
    for (int i = 0; a && i < x->size; i++) {
        Plumb__Envelope *e = wire_envelope(a, x->part[i]->id, NULL);
        Plumb__AllReduce *m = e ? wire_alloc(a, sizeof *m) : NULL;
        if (!m) break;
        plumb__all_reduce__init(m);
        m->group = x->group, m->rank = i, m->size = x->size, m->seq = x->seq;
        m->op = x->op, m->root = x->root;
        m->data = wire_f32(a, sum, (int)n);
        e->body_case = PLUMB__ENVELOPE__BODY_ALL_REDUCE;
        e->all_reduce = m;
        r->send(r->ctx, &x->peer[i], e);
    }
    wire_arena_free(&a);
    free(sum);
    call_clear(x);
    return 0;
}

/* Why contribution m does not fit call x ("" when it does). */
static void mismatch(const Call *x, const Plumb__AllReduce *m, char *msg, size_t cap) {
    msg[0] = '\0';
    if (m->size != x->size || m->op != x->op || m->root != x->root)
        snprintf(msg, cap,
                 "call %d of group %llu: rank %d sent op %d root %d of %d ranks, "
                 "another op %d root %d of %d",
                 m->seq, (unsigned long long)m->group, m->rank, (int)m->op, m->root, m->size, x->op,
                 x->root, x->size);
    else if (x->part[m->rank])
        snprintf(msg, cap, "call %d of group %llu: rank %d sent twice", m->seq,
                 (unsigned long long)m->group, m->rank);
    else if (x->op == PLUMB__ALL_REDUCE__OP__BROADCAST && m->rank != x->root &&
             m->data->data.len != 0)
        snprintf(msg, cap, "broadcast %d of group %llu: rank %d is not the root %d but sent data",
                 m->seq, (unsigned long long)m->group, m->rank, x->root);
}

int reducer_add(Reducer *r, const ZtPeer *peer, Plumb__Envelope *e, char *msg, size_t cap) {
    const Plumb__AllReduce *m = e->all_reduce;
    msg[0] = '\0';
    if (m->size < 2 || m->size > POOL_MAX_WORKERS || m->rank < 0 || m->rank >= m->size)
        snprintf(msg, cap, "all-reduce as rank %d of %d", m->rank, m->size);
    else if (m->op != PLUMB__ALL_REDUCE__OP__SUM && m->op != PLUMB__ALL_REDUCE__OP__BROADCAST)
        snprintf(msg, cap, "all-reduce with unknown op %d", (int)m->op);
    else if (m->op == PLUMB__ALL_REDUCE__OP__BROADCAST && (m->root < 0 || m->root >= m->size))
        snprintf(msg, cap, "broadcast from root %d of %d ranks", m->root, m->size);
    else if (!m->data || m->data->dtype != PLUMB__DTYPE__DT_F32 || m->data->n_shape != 1 ||
             m->data->shape[0] < 0 ||
             (size_t)m->data->shape[0] * sizeof(float) != m->data->data.len)
        snprintf(msg, cap, "all-reduce %d: data is not a (n) f32 tensor", m->seq);
    Call *x = NULL, *spare = NULL;
    for (int i = 0; !msg[0] && i < MAX_CALLS; i++) {
        Call *y = &r->calls[i];
        if (y->used && y->group == m->group && y->seq == m->seq) x = y;
        if (!y->used && !spare) spare = y;
    }
    if (!msg[0] && !x && !spare)
        snprintf(msg, cap, "all-reduce: over %d calls in progress", MAX_CALLS);
    if (!msg[0] && !x) {
        x = spare;
        x->used = 1, x->group = m->group, x->seq = m->seq, x->size = m->size;
        x->op = m->op, x->root = m->op == PLUMB__ALL_REDUCE__OP__BROADCAST ? m->root : 0;
    }
    if (!msg[0]) mismatch(x, m, msg, cap);
    if (msg[0]) {
        send_error(r, peer, e->id, msg);
        wire_free(&e);
        return PL_EPROTO;
    }
    x->part[m->rank] = e;
    x->peer[m->rank] = *peer;
    if (++x->got == x->size) return call_finish(r, x, msg, cap);
    return 0;
}
