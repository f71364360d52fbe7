/* pool.h: the coordinator's side of the wire: the ROUTER socket, the
 * registered workers, and requests in flight.
 *
 * Workers register (protocol, roles, fingerprint checked), get a Welcome
 * with their roles' configuration, and heartbeat on a second socket. A
 * worker whose heartbeats stop for dead_after_ms is dead: the requests it
 * held fail with an error naming it, within that time plus one poll.
 *
 * pool_call sends a set of independent requests at once (to different
 * workers, or several to one) and waits until every reply is in, while it
 * keeps answering heartbeats and refusing bad frames. Each request is
 * matched to its reply by id; a reply that matches nothing is dropped with
 * a warning. Bad input from any peer (garbage, another protocol version,
 * an oversized frame, a registration with another base model) is answered
 * with an Error and logged; the pool keeps serving the others.
 *
 * Data parallelism: while pool_call waits, the replicas of a data-parallel
 * train request (TrainReq.dp) send AllReduce messages; the pool checks each
 * against the request in flight at its sender, and once every rank of the
 * group has sent reduction seq, answers each with the sum in rank order.
 * When pool_call ends, reductions still open are answered with an Error,
 * so that no replica waits on a group that was given up. When a replica
 * of a data-parallel train request dies, every group in flight is given
 * up at once, but pool_call goes on until every live worker has answered
 * (each replica restores its state from before the request), and then
 * fails: the caller sees which calls finished, and replaces the dead
 * (coordinator/requests.c). */
#ifndef PLUMB_POOL_H
#define PLUMB_POOL_H

#include <stdint.h>
#include <stdio.h>

#include "common/transport.h"
#include "common/wire.h"
#include "common/roles.h"

#define POOL_MAX_WORKERS 64
#define POOL_MAX_PENDING 16   /* registrations waiting for their first heartbeat */

typedef struct {
    char id[128];            /* worker_id from Register                       */
    ZtPeer peer;             /* routing identity of its main socket           */
    unsigned roles;          /* bit (1u << RoleKind)                          */
    int rank, pid;
    char host[128], device[32];
    double last_seen;        /* monotonic seconds of its last heartbeat/reply */
    int alive;
    int busy;                /* requests in flight                            */
    int used;                /* ever sent a request: its slot is never reused */
    int accepted;            /* its first heartbeat came: it is a worker, not a
                              * registration waiting (see pool_new)           */
    double registered_at;    /* monotonic seconds                             */
    uint64_t adapter_version;/* actor: the adapter it holds (kept by the driver) */
    char gone[64];           /* once dead: how it was noticed                 */
} PoolWorker;

/* Builds the RoleConfig of role k for a new worker, in a (the Welcome's
 * arena). Returns NULL (with pl_error set) to refuse the worker. */
typedef Plumb__RoleConfig *(*PoolRoleConfigFn)(void *ctx, RoleKind k, WireArena *a);

typedef struct {
    ZtServerOptions server;
    char fingerprint[33];    /* of the coordinator's base model               */
    int vocab, max_seq;      /* what workers' models must match               */
    int heartbeat_ms;        /* told to workers                               */
    int dead_after_ms;       /* no heartbeat for this long: dead              */
    int request_timeout_ms;  /* one request, at most                          */
    PoolRoleConfigFn role_config;
    void *ctx;
    /* Called on each poll round (about every 100 ms); a negative return
     * aborts pool_call/pool_wait with that code (the launcher checks its
     * children and Ctrl-C here). */
    int (*tick)(void *ctx);
    FILE *log;               /* messages about peers (stderr)                 */
    /* Roles whose workers a new one can replace (untrained ones, and with
     * launch.keep_state the trained ones, whose state is kept with every
     * update): the requests a dead one held are sent again to another live
     * worker with the role, waiting up to replace_wait_ms for one to
     * register (a restarted or new worker). 0 / 0: a dead worker fails the
     * call. */
    unsigned replaceable;
    int replace_wait_ms;
    /* Called when worker i has registered, and when it is found dead (may
     * be NULL). */
    void (*on_registered)(void *ctx, int i);
    void (*on_dead)(void *ctx, int i);
} PoolOptions;

typedef struct Pool Pool;

/* A registration takes the slot of a worker that died without ever being
 * sent a request (a worker that left early, or a registration that never
 * beat), else a new one: POOL_MAX_WORKERS bounds the live and the used,
 * not everything that ever registered. A registration is accepted at its
 * worker's first heartbeat (which a worker sends before it builds its
 * roles). Until then it waits in a queue of POOL_MAX_PENDING: past that
 * the oldest waiting one is dropped (its peer is told), and one that does
 * not beat within dead_after_ms is dead; so registrations that are never
 * followed up cannot fill the pool. */
int pool_new(Pool **out, const PoolOptions *o);
/* Sends Shutdown to every live worker (waiting up to timeout_ms for their
 * answers), then closes the socket. */
void pool_free(Pool **p, int timeout_ms);
const char *pool_endpoint(const Pool *p);

/* Serves registrations until every role in `needed` (bit mask) has at least
 * one live worker and at least min_workers workers are live, or timeout_ms
 * passes (PL_ETIMEOUT naming the missing roles or the count). */
int pool_wait_roles(Pool *p, unsigned needed, int min_workers, int timeout_ms);

/* Live workers hosting role k, in registration order, into idx (at most
 * max); returns their count. */
int pool_workers_with(const Pool *p, RoleKind k, int *idx, int max);
const PoolWorker *pool_worker(const Pool *p, int i);
/* pool_workers_with, but for a replaceable role with no live worker it
 * serves the socket up to replace_wait_ms until one registers (a worker
 * that died is being replaced). 0 when none came, < 0 when the wait was
 * stopped (the tick hook's error). */
int pool_await_role(Pool *p, RoleKind k, int *idx, int max);

/* A live worker hosting role k that is none of the n indices in `not`
 * (a new one for a data-parallel replica's rank), serving the socket up to
 * replace_wait_ms until one registers. Its index; PL_EPEER when none came,
 * or the tick hook's error. The wait counts as recovery time. */
int pool_await_other(Pool *p, RoleKind k, const int *not, int n);

/* "worker 2 (actor,reference, pid 1234 on host)" into buf; returns buf. */
const char *pool_worker_name(const Pool *p, int i, char *buf, size_t cap);

/* One request in flight. The caller fills worker, req (an envelope built in
 * its own arena; the pool sets req->id); the pool fills rep (free with
 * wire_free) and the timings. */
typedef struct {
    int worker;
    Plumb__Envelope *req;
    Plumb__Envelope *rep;
    double wall_s;           /* send to reply                                 */
    double compute_s;        /* the worker's own handling time                */
    double sync_s;           /* its time in collectives (not in compute_s)    */
    uint64_t sync_bytes;     /* the bytes of its collectives' buffers         */
    double pack_s;           /* packing + unpacking on the coordinator        */
    size_t bytes_out, bytes_in;
    double lost_at;          /* when its worker was found dead (0: it lives)  */
    int waiting;             /* said that it waits for a replacement          */
    int given_up;            /* a data-parallel train request whose worker
                              * died: the call waits for the other replicas'
                              * answers, then fails (the caller replaces it) */
} PoolCall;

/* Sends all n requests, then waits for all replies. A request whose worker
 * dies is sent again to another live worker of its role when the role is
 * replaceable (PoolOptions), once one is there; a late reply from the dead
 * one is dropped. Fails (< 0) when a worker of another role dies, or none
 * takes a dead one's place in time, or a worker times out (naming it, its
 * role and pid), or answers with an Error (its message); the other replies
 * are still collected or dropped, so nothing stays in flight. */
int pool_call(Pool *p, PoolCall *calls, int n);

/* Changes PoolOptions.replaceable (a trained role stops being replaceable
 * when its state cannot be kept). */
void pool_set_replaceable(Pool *p, unsigned roles);
unsigned pool_replaceable(const Pool *p);

/* Takes the live worker with this pid on host for dead (its process was
 * seen to end), as a missed heartbeat would after dead_after_ms. */
void pool_mark_dead(Pool *p, int pid, const char *host);

/* Workers of replaceable roles found dead so far (each one another
 * worker takes the place of), and the seconds calls spent waiting for one
 * to take their requests over since the last call of this. */
long pool_recoveries(const Pool *p);
double pool_recovery_s_take(Pool *p);
void pool_calls_free(PoolCall *calls, int n);

/* Serves the socket for up to ms milliseconds (heartbeats, registrations). */
int pool_poll(Pool *p, int ms);

#endif
