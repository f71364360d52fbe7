/* test_collective.c: the collective relay (common/collective.h,
 * worker/relay.h, coordinator/reduce.h) between real sockets: a
 * coordinator's pool in this thread, and replicas in threads that register
 * as workers over ZeroMQ, take a data-parallel train request and answer it
 * after collectives through their own relay sockets.
 *
 * Proves: sums come back in rank order on every replica, bit for bit; a
 * broadcast gives every replica the root's buffer; buffers larger than one
 * frame travel in slices; a replica whose peer fails gets an error that
 * says why instead of waiting; a malformed contribution is refused. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/collective.h"
#include "common/err.h"
#include "common/transport.h"
#include "common/wire.h"
#include "coordinator/pool.h"
#include "testutil.h"
#include "worker/relay.h"

#define FP "00112233445566778899aabbccddeeff"
#define N_SMALL 5
#define N_BIG (1 << 19)  /* 2 MiB of floats: over the 1 MiB message limit */

/* What a replica does once its train request comes. */
typedef enum { DO_SUM, DO_BROADCAST, DO_BIG, DO_FAIL } Job;

typedef struct {
    const char *endpoint;
    char id[32];
    int rank;
    Job job;
    /* results */
    atomic_int done;
    float small[N_SMALL];
    float *big;
    int rc;
    char err[512];
} Replica;

static Plumb__RoleConfig *role_config(void *ctx, RoleKind k, WireArena *a) {
    Plumb__RoleConfig *rc = wire_alloc(a, sizeof *rc);
    plumb__role_config__init(rc);
    rc->role = (char *)role_kind_name(k);
    return rc;
}

static int send_env(ZtClient *c, Plumb__Envelope *e) {
    void *buf;
    size_t len;
    PL_TRY(wire_pack(e, &buf, &len));
    int rc = zt_client_send(c, buf, len, 5000);
    free(buf);
    return rc;
}

static Plumb__Envelope *recv_env(ZtClient *c, int ms) {
    void *buf;
    size_t len;
    if (zt_client_recv(c, &buf, &len, ms) != 1) return NULL;
    Plumb__Envelope *e = NULL;
    wire_unpack(buf, len, 64u << 20, "coordinator", &e);
    free(buf);
    return e;
}

/* A replica: registers as an actor, waits for its train request, runs its
 * job through the relay and answers Ok (or an Error for DO_FAIL). */
static void *replica_main(void *arg) {
    Replica *r = arg;
    ZtClientOptions o = {.endpoint = r->endpoint, .identity = r->id, .max_message = 1u << 20};
    ZtClient *main_sock = NULL;
    Collective *coll = NULL;
    r->rc = -100;
    if (zt_client_new(&main_sock, &o) < 0) return NULL;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = wire_envelope(a, 0, NULL);
    Plumb__Register *reg = wire_alloc(a, sizeof *reg);
    Plumb__ModelInfo *mi = wire_alloc(a, sizeof *mi);
    plumb__register__init(reg);
    plumb__model_info__init(mi);
    char *roles[] = {"actor"};
    reg->worker_id = r->id, reg->n_roles = 1, reg->roles = roles;
    reg->fingerprint = FP, reg->host = "test", reg->device = "cpu", reg->pid = getpid();
    mi->vocab = 16, mi->max_seq = 8;
    reg->model = mi;
    e->body_case = PLUMB__ENVELOPE__BODY_REGISTER;
    e->register_ = reg;
    send_env(main_sock, e);
    wire_arena_free(&a);
    Plumb__Envelope *q = recv_env(main_sock, 5000); /* the Welcome */
    wire_free(&q);

    char dp_id[40];
    snprintf(dp_id, sizeof dp_id, "%s/dp", r->id);
    ZtClientOptions d = o;
    d.identity = dp_id;
    if (relay_new(&coll, &d, NULL) < 0) goto done;
    for (int i = 0; i < 100 && !q; i++) q = recv_env(main_sock, 100);
    if (!q || q->body_case != PLUMB__ENVELOPE__BODY_TRAIN) goto done;
    CollGroup g = {.group = q->train->dp->group, .rank = q->train->dp->rank,
                   .size = q->train->dp->size, .request = q->id};
    for (int i = 0; i < N_SMALL; i++) r->small[i] = (float)(r->rank + 1) * (i + 0.1f);
    switch (r->job) {
    case DO_SUM: r->rc = coll_allreduce_sum(coll, &g, r->small, N_SMALL); break;
    case DO_BROADCAST: r->rc = coll_broadcast(coll, &g, 1, r->small, N_SMALL); break;
    case DO_BIG:
        r->big = malloc(sizeof(float) * N_BIG);
        for (int i = 0; i < N_BIG; i++) r->big[i] = (float)(r->rank + 1) * 1e-3f * (i % 977);
        r->rc = coll_allreduce_sum(coll, &g, r->big, N_BIG);
        break;
    case DO_FAIL: r->rc = 0; break;
    }
    if (r->rc < 0) snprintf(r->err, sizeof r->err, "%s", pl_error());
    a = wire_arena_new();
    Plumb__Envelope *rep = r->job == DO_FAIL || r->rc < 0
                               ? wire_error(a, q->id, PL_EIO, "this replica gave up")
                               : wire_envelope(a, q->id, "actor");
    if (rep->body_case != PLUMB__ENVELOPE__BODY_ERROR) {
        Plumb__Ok *ok = wire_alloc(a, sizeof *ok);
        plumb__ok__init(ok);
        rep->body_case = PLUMB__ENVELOPE__BODY_OK;
        rep->ok = ok;
    }
    send_env(main_sock, rep);
    wire_arena_free(&a);
done:
    wire_free(&q);
    coll_free(&coll);
    zt_client_free(&main_sock);
    atomic_store(&r->done, 1);
    return NULL;
}

/* Starts a pool, two replicas with jobs j0 and j1, and one data-parallel
 * train request to both; returns pool_call's status. */
static int run_pair(Replica *rep, Job j0, Job j1) {
    PoolOptions po = {.server = {.endpoint = "tcp://127.0.0.1:*", .max_message = 1u << 20},
                      .vocab = 16, .max_seq = 8, .heartbeat_ms = 500, .dead_after_ms = 60000,
                      .request_timeout_ms = 20000, .role_config = role_config};
    snprintf(po.fingerprint, sizeof po.fingerprint, "%s", FP);
    Pool *p = NULL;
    assert_int_equal(pool_new(&p, &po), 0);
    pthread_t th[2];
    Job jobs[2] = {j0, j1};
    for (int i = 0; i < 2; i++) {
        memset(&rep[i], 0, sizeof rep[i]);
        rep[i].endpoint = pool_endpoint(p);
        snprintf(rep[i].id, sizeof rep[i].id, "replica-%d", i);
        rep[i].rank = i, rep[i].job = jobs[i];
        pthread_create(&th[i], NULL, replica_main, &rep[i]);
    }
    assert_int_equal(pool_wait_roles(p, 1u << ROLE_ACTOR, 2, 5000), 0);
    WireArena *a = wire_arena_new();
    PoolCall calls[2];
    memset(calls, 0, sizeof calls);
    int idx[2];
    assert_int_equal(pool_workers_with(p, ROLE_ACTOR, idx, 2), 2);
    for (int i = 0; i < 2; i++) {
        Plumb__Envelope *e = wire_envelope(a, 0, "actor");
        Plumb__TrainReq *t = wire_alloc(a, sizeof *t);
        Plumb__DataParallel *dp = wire_alloc(a, sizeof *dp);
        plumb__train_req__init(t);
        plumb__data_parallel__init(dp);
        dp->group = 7, dp->rank = i, dp->size = 2;
        t->dp = dp;
        e->body_case = PLUMB__ENVELOPE__BODY_TRAIN;
        e->train = t;
        /* registration order may differ from thread order: rank i goes to replica i */
        for (int w = 0; w < 2; w++)
            if (!strcmp(pool_worker(p, idx[w])->id, rep[i].id)) calls[i].worker = idx[w];
        calls[i].req = e;
    }
    int rc = pool_call(p, calls, 2);
    char err[1024];
    snprintf(err, sizeof err, "%s", pl_error());
    pool_calls_free(calls, 2);
    wire_arena_free(&a);
    /* the coordinator keeps serving after a failed call (as pool_free does
     * while it shuts workers down): a contribution that comes late is
     * refused there */
    for (int i = 0; i < 100 && !(atomic_load(&rep[0].done) && atomic_load(&rep[1].done)); i++)
        pool_poll(p, 50);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pl_fail(rc, "%s", err);
    pool_free(&p, 0);
    return rc;
}

/* Sums in rank order, the same on both replicas. */
static void test_allreduce_sum(void **state) {
    Replica r[2];
    assert_int_equal(run_pair(r, DO_SUM, DO_SUM), 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(r[k].rc, 0);
        for (int i = 0; i < N_SMALL; i++) {
            volatile float x0 = 1.0f * (i + 0.1f), x1 = 2.0f * (i + 0.1f);
            assert_true(r[k].small[i] == x0 + x1);
        }
    }
}

/* Every replica ends with root 1's buffer. */
static void test_broadcast(void **state) {
    Replica r[2];
    assert_int_equal(run_pair(r, DO_BROADCAST, DO_BROADCAST), 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(r[k].rc, 0);
        for (int i = 0; i < N_SMALL; i++) assert_true(r[k].small[i] == 2.0f * (i + 0.1f));
    }
}

/* 2 MiB through a 1 MiB message limit: sliced, summed, identical bits. */
static void test_sliced(void **state) {
    Replica r[2];
    assert_int_equal(run_pair(r, DO_BIG, DO_BIG), 0);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[1].rc, 0);
    for (int i = 0; i < N_BIG; i += 4099) {
        /* volatile: the two products must be rounded before the sum, as
         * the replicas' buffers were (no fused multiply-add) */
        volatile float x0 = 1.0f * 1e-3f * (i % 977), x1 = 2.0f * 1e-3f * (i % 977);
        float want = x0 + x1;
        if (r[0].big[i] != want) fail_msg("big[%d] = %g, want %g", i, r[0].big[i], want);
    }
    assert_memory_equal(r[0].big, r[1].big, sizeof(float) * N_BIG);
    free(r[0].big);
    free(r[1].big);
}

/* Replica 1 fails its request without contributing: replica 0's sum ends
 * with the reason, not a hang. */
static void test_peer_gone(void **state) {
    Replica r[2];
    int rc = run_pair(r, DO_SUM, DO_FAIL);
    assert_true(rc < 0);
    assert_non_null(strstr(pl_error(), "this replica gave up"));
    /* before its contribution came, or after: either way an error that
     * names the call */
    assert_true(r[0].rc < 0);
    assert_non_null(strstr(r[0].err, "all-reduce 0 of group 7"));
    assert_true(strstr(r[0].err, "given up") || strstr(r[0].err, "no data-parallel train request"));
}

/* The checked entry points: a group of one is a no-op, bad ranks fail. */
static void test_checks(void **state) {
    float x[2] = {1, 2};
    CollGroup one = {.group = 1, .rank = 0, .size = 1};
    Collective dummy = {0};
    assert_int_equal(coll_allreduce_sum(&dummy, &one, x, 2), 0);
    assert_true(x[0] == 1 && x[1] == 2);
    CollGroup bad = {.group = 1, .rank = 2, .size = 2};
    assert_int_equal(coll_allreduce_sum(&dummy, &bad, x, 2), PL_EINVAL);
    CollGroup two = {.group = 1, .rank = 0, .size = 2};
    assert_int_equal(coll_broadcast(&dummy, &two, 3, x, 2), PL_EINVAL);
    assert_non_null(strstr(pl_error(), "root 3"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks),       cmocka_unit_test(test_allreduce_sum),
        cmocka_unit_test(test_broadcast),    cmocka_unit_test(test_sliced),
        cmocka_unit_test(test_peer_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
