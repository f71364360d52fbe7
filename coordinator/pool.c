/* pool.c: registrations, heartbeats and requests in flight (pool.h). */
#define _GNU_SOURCE
#include "pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "coordinator/reduce.h"

struct Pool {
    PoolOptions o;
    Reducer *reducer;      /* the collective relay's calls in progress       */
    ZtServer *server;
    PoolWorker w[POOL_MAX_WORKERS];
    int n;
    uint64_t next_id;
    PoolCall *calls;       /* the pool_call in progress                     */
    int n_calls;
    size_t max_message;
    /* refusals: a token bucket bounds their log lines and error replies, so
     * that a flood of bad frames costs neither the log nor the socket */
    double refusal_tokens, refusal_at;
    long refusals_dropped, refusals_dropped_total;
    double dropped_since;
    long curve_seen;       /* CURVE refusals (ZAP) already logged           */
    long recoveries;       /* dead workers of replaceable roles             */
    double recovery_s;     /* waiting for a replacement, since last taken   */
    double curve_logged;
    /* set while a pool_call with a dead replica waits for the others:
     * every contribution to a collective gets this as its answer, so that
     * no replica starts waiting on a group that is given up */
    char given_up[1100];
};

#define REFUSAL_BURST 20.0 /* refusals logged and answered at once          */
#define REFUSAL_RATE 10.0  /* per second after that                         */

static void plog(Pool *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plog(Pool *p, const char *fmt, ...) {
    FILE *f = p->o.log ? (FILE *)p->o.log : stderr;
    va_list ap;
    va_start(ap, fmt);
    fprintf(f, "plumb coordinator: ");
    vfprintf(f, fmt, ap);
    fprintf(f, "\n");
    fflush(f);
    va_end(ap);
}

/* A message kind as a word, for messages. */
static const char *body_name(Plumb__Envelope__BodyCase c) {
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&plumb__envelope__descriptor, (unsigned)c);
    return f ? f->name : "an empty message";
}

/* "worker 2 (host:pid:x, actor,reference, pid 1234)" */
static const char *wname(const Pool *p, int i, char *buf, size_t cap) {
    const PoolWorker *w = &p->w[i];
    char roles[128];
    role_mask_str(w->roles, ",", roles, sizeof roles);
    snprintf(buf, cap, "worker %d (%s, pid %d on %s)", i, roles, w->pid, w->host);
    return buf;
}

const char *pool_worker_name(const Pool *p, int i, char *buf, size_t cap) {
    if (i < 0 || i >= p->n) {
        snprintf(buf, cap, "worker %d", i);
        return buf;
    }
    return wname(p, i, buf, cap);
}

static int find_peer(const Pool *p, const ZtPeer *peer) {
    for (int i = 0; i < p->n; i++)
        if (p->w[i].peer.len == peer->len && memcmp(p->w[i].peer.id, peer->id, peer->len) == 0)
            return i;
    return -1;
}

/* The worker whose collective socket ("<id>/dp", worker/relay.h) peer is. */
static int find_dp_peer(const Pool *p, const ZtPeer *peer) {
    for (int i = 0; i < p->n; i++) {
        size_t n = strlen(p->w[i].id);
        if (peer->len == n + 3 && !memcmp(peer->id, p->w[i].id, n) && !memcmp(peer->id + n, "/dp", 3))
            return i;
    }
    return -1;
}

static int find_id(const Pool *p, const char *id) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->w[i].id, id) == 0) return i;
    return -1;
}

static int send_to(Pool *p, const ZtPeer *peer, const Plumb__Envelope *e, size_t *bytes) {
    void *buf;
    size_t len;
    PL_TRY(wire_pack(e, &buf, &len));
    int rc = zt_server_send(p->server, peer, buf, len);
    free(buf);
    if (bytes) *bytes = len;
    return rc;
}

static void send_error(Pool *p, const ZtPeer *peer, uint64_t id, int code, const char *msg) {
    WireArena *a = wire_arena_new();
    Plumb__Envelope *e = a ? wire_error(a, id, code, msg) : NULL;
    if (e) send_to(p, peer, e, NULL);
    wire_arena_free(&a);
}

/* Refuses a frame from peer: logs why (the log line) and answers with an
 * Error (reply, what the peer is told), within the rate limit; past it,
 * counts the refusal and says nothing. */
static void refuse(Pool *p, const ZtPeer *peer, uint64_t id, int code, const char *reply,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void refuse(Pool *p, const ZtPeer *peer, uint64_t id, int code, const char *reply,
                   const char *fmt, ...) {
    double t = pl_now_s();
    if (p->refusal_at == 0) p->refusal_tokens = REFUSAL_BURST;
    else p->refusal_tokens += (t - p->refusal_at) * REFUSAL_RATE;
    if (p->refusal_tokens > REFUSAL_BURST) p->refusal_tokens = REFUSAL_BURST;
    p->refusal_at = t;
    if (p->refusal_tokens < 1) {
        if (p->refusals_dropped++ == 0) p->dropped_since = t;
        p->refusals_dropped_total++;
        return;
    }
    p->refusal_tokens -= 1;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    plog(p, "%s", line);
    send_error(p, peer, id, code, reply);
}

/* Says how many refusals the rate limit kept quiet, once they stop or
 * every 5 s. */
static void report_dropped(Pool *p) {
    double t = pl_now_s();
    if (p->refusals_dropped == 0 || (t - p->refusal_at < 1.0 && t - p->dropped_since < 5.0))
        return;
    plog(p, "%ld more bad frames refused in %.1f s without a log line or a reply (rate limit; "
            "%ld in all)",
         p->refusals_dropped, t - p->dropped_since, p->refusals_dropped_total);
    p->refusals_dropped = 0;
}

/* Logs the connections the CURVE handshake refused (their keys are not in
 * transport.authorized_keys), at most once a second. */
static void report_curve(Pool *p) {
    long n = zt_server_refused(p->server);
    double t = pl_now_s();
    if (n == p->curve_seen || t - p->curve_logged < 1.0) return;
    char last[160];
    zt_server_last_refused(p->server, last, sizeof last);
    plog(p, "refused %ld connection(s) whose CURVE key is not in transport.authorized_keys "
            "(%ld in all; the latest from %s)",
         n - p->curve_seen, n, last);
    p->curve_seen = n;
    p->curve_logged = t;
}

/* The reducer's answers: sent, and booked as bytes out of the call whose
 * request they answer. */
static int reduce_send(void *ctx, const ZtPeer *peer, const Plumb__Envelope *e) {
    Pool *p = ctx;
    size_t bytes = 0;
    int rc = send_to(p, peer, e, &bytes);
    for (int c = 0; c < p->n_calls; c++)
        if (p->calls[c].req->id == e->id) p->calls[c].bytes_out += bytes;
    return rc;
}

int pool_new(Pool **out, const PoolOptions *o) {
    *out = NULL;
    Pool *p = calloc(1, sizeof *p);
    PL_CHECK_ALLOC(p);
    p->o = *o;
    p->next_id = 1;
    p->max_message = o->server.max_message ? o->server.max_message : WIRE_MAX_MESSAGE_DEFAULT;
    int rc = reducer_new(&p->reducer, reduce_send, p);
    if (rc == 0) rc = zt_server_new(&p->server, &o->server);
    if (rc < 0) {
        reducer_free(&p->reducer);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

const char *pool_endpoint(const Pool *p) { return zt_server_endpoint(p->server); }

const PoolWorker *pool_worker(const Pool *p, int i) {
    return i >= 0 && i < p->n ? &p->w[i] : NULL;
}

int pool_workers_with(const Pool *p, RoleKind k, int *idx, int max) {
    int n = 0;
    for (int i = 0; i < p->n && n < max; i++)
        if (p->w[i].alive && (p->w[i].roles & (1u << k))) idx[n++] = i;
    return n;
}

/* ------------------------------------------------------------ handlers */

/* The slot a new registration takes: one whose worker died unused, else
 * the next; -1 when the pool is full. */
static int free_slot(const Pool *p) {
    for (int i = 0; i < p->n; i++)
        if (!p->w[i].alive && !p->w[i].used && !p->w[i].busy) return i;
    return p->n < POOL_MAX_WORKERS ? p->n : -1;
}

/* Makes room in the queue of registrations waiting for their first
 * heartbeat: past POOL_MAX_PENDING the oldest is dropped, and told. */
static void drop_oldest_pending(Pool *p) {
    int n = 0, oldest = -1;
    for (int i = 0; i < p->n; i++) {
        const PoolWorker *w = &p->w[i];
        if (!w->alive || w->accepted) continue;
        n++;
        if (oldest < 0 || w->registered_at < p->w[oldest].registered_at) oldest = i;
    }
    if (n < POOL_MAX_PENDING) return;
    PoolWorker *w = &p->w[oldest];
    w->alive = 0;
    refuse(p, &w->peer, 0, PL_EPEER,
           "this registration was dropped before its first heartbeat: too many wait",
           "dropped the registration of worker '%.128s' (pid %d on %.128s): %d registrations "
           "wait for their first heartbeat", w->id, w->pid, w->host, POOL_MAX_PENDING);
}

static void on_register(Pool *p, const ZtPeer *peer, const Plumb__Envelope *e) {
    const Plumb__Register *r = e->register_;
    char msg[1024];
    unsigned roles = 0;
    msg[0] = '\0';
    for (size_t i = 0; i < r->n_roles && !msg[0]; i++) {
        RoleKind k;
        if (role_kind_parse(r->roles[i], &k) < 0)
            snprintf(msg, sizeof msg, "unknown role '%s'", r->roles[i]);
        else
            roles |= 1u << k;
    }
    if (!msg[0] && roles == 0) snprintf(msg, sizeof msg, "no roles");
    if (!msg[0] && strcmp(r->fingerprint, p->o.fingerprint) != 0)
        snprintf(msg, sizeof msg,
                 "its base model differs from the coordinator's (its fingerprint is %.40s): "
                 "load the same checkpoint as model.path",
                 r->fingerprint);
    if (!msg[0] && (!r->model || r->model->vocab != p->o.vocab || r->model->max_seq != p->o.max_seq))
        snprintf(msg, sizeof msg, "its model's vocabulary or context differs from the run's");
    int dup = find_id(p, r->worker_id);
    if (!msg[0] && dup >= 0 && (p->w[dup].alive || p->w[dup].used))
        snprintf(msg, sizeof msg, "worker id '%s' is already registered", r->worker_id);
    if (!msg[0]) drop_oldest_pending(p);
    int slot = dup >= 0 && !msg[0] ? dup : free_slot(p);
    if (!msg[0] && slot < 0)
        snprintf(msg, sizeof msg, "the pool is full (%d workers)", POOL_MAX_WORKERS);

    WireArena *a = wire_arena_new();
    Plumb__Envelope *rep = a ? wire_envelope(a, e->id, NULL) : NULL;
    Plumb__Welcome *wel = rep ? wire_alloc(a, sizeof *wel) : NULL;
    Plumb__RoleConfig **rcs = wel ? wire_alloc(a, sizeof(*rcs) * ROLE_NKINDS) : NULL;
    if (!rcs) {
        wire_arena_free(&a);
        return;
    }
    plumb__welcome__init(wel);
    for (int k = 0; k < ROLE_NKINDS && !msg[0]; k++) {
        if (!(roles & (1u << k))) continue;
        Plumb__RoleConfig *rc = p->o.role_config(p->o.ctx, (RoleKind)k, a);
        if (!rc)
            snprintf(msg, sizeof msg, "%s", pl_error());
        else
            rcs[wel->n_roles++] = rc;
    }
    if (msg[0]) {
        /* the reply does not say which fingerprint would be welcome: only the
         * operator, in the log, learns it */
        int fp = strstr(msg, "base model") != NULL;
        refuse(p, peer, e->id, PL_EPROTO, msg, "refused worker %s (pid %d on %s): %s%s%s%s",
               r->worker_id, r->pid, r->host, msg, fp ? " (this run's is " : "",
               fp ? p->o.fingerprint : "", fp ? ")" : "");
        wire_arena_free(&a);
        return;
    }
    int i = slot;
    if (i == p->n) p->n++;
    PoolWorker *w = &p->w[i];
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", r->worker_id);
    w->peer = *peer;
    w->roles = roles;
    w->rank = r->rank, w->pid = r->pid;
    snprintf(w->host, sizeof w->host, "%s", r->host);
    snprintf(w->device, sizeof w->device, "%s", r->device);
    w->last_seen = w->registered_at = pl_now_s();
    w->alive = 1;
    wel->worker_index = i;
    wel->roles = rcs;
    wel->heartbeat_ms = p->o.heartbeat_ms;
    rep->body_case = PLUMB__ENVELOPE__BODY_WELCOME;
    rep->welcome = wel;
    send_to(p, peer, rep, NULL);
    wire_arena_free(&a);
    char nm[256];
    plog(p, "%s registered (rank %d, %s)", wname(p, i, nm, sizeof nm), w->rank, w->device);
    if (p->o.on_registered) p->o.on_registered(p->o.ctx, i);
}

static void on_heartbeat(Pool *p, const ZtPeer *peer, const Plumb__Envelope *e) {
    int i = find_id(p, e->heartbeat->worker_id);
    if (i < 0 || !p->w[i].alive) {
        /* not (or no longer) one of ours: a worker of a coordinator that
         * was restarted, or one taken for dead; told so, it registers again
         * or stops, instead of beating on unheard */
        refuse(p, peer, 0, PL_EPEER, "this worker is not registered here: register again",
               "heartbeat from worker '%.128s', which is %s", e->heartbeat->worker_id,
               i < 0 ? "not registered here: told to register again" : "taken for dead: told so");
        return;
    }
    p->w[i].last_seen = pl_now_s();
    p->w[i].accepted = 1;
    WireArena *a = wire_arena_new();
    Plumb__Envelope *ack = a ? wire_envelope(a, 0, NULL) : NULL;
    Plumb__Heartbeat *hb = ack ? wire_alloc(a, sizeof *hb) : NULL;
    if (hb) {
        plumb__heartbeat__init(hb);
        hb->worker_id = e->heartbeat->worker_id;
        hb->seq = e->heartbeat->seq;
        ack->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
        ack->heartbeat = hb;
        send_to(p, peer, ack, NULL);
    }
    wire_arena_free(&a);
}

/* A reply: matched to a call in flight by id and sender. Takes e. */
static void on_reply(Pool *p, int wi, Plumb__Envelope *e, double unpack_s) {
    char nm[256];
    for (int c = 0; c < p->n_calls; c++) {
        PoolCall *call = &p->calls[c];
        if (call->rep || call->req->id != e->id) continue;
        if (call->worker != wi) break;
        call->rep = e;
        call->wall_s = pl_now_s() - call->wall_s;
        call->compute_s = e->compute_s;
        call->sync_s = e->sync_s;
        call->sync_bytes = e->sync_bytes;
        call->pack_s += unpack_s;
        p->w[wi].busy--;
        return;
    }
    if (e->body_case == PLUMB__ENVELOPE__BODY_ERROR)
        plog(p, "%s reported: %s", wname(p, wi, nm, sizeof nm), e->error->message);
    else
        plog(p, "dropped a %s (request %llu) from %s that nothing waits for",
             body_name(e->body_case), (unsigned long long)e->id, wname(p, wi, nm, sizeof nm));
    wire_free(&e);
}

/* A replica's contribution to a collective, from peer (its collective
 * socket): checked against the train request it serves (in flight, sent
 * to that worker, with the same group, rank and size), then handed to the
 * reducer. Takes e. */
static void on_allreduce(Pool *p, int wi, const ZtPeer *peer, Plumb__Envelope *e) {
    char nm[256], msg[512];
    const Plumb__AllReduce *m = e->all_reduce;
    const Plumb__DataParallel *dp = NULL;
    for (int c = 0; c < p->n_calls; c++) {
        const PoolCall *call = &p->calls[c];
        if (call->rep || call->req->id != e->id || call->worker != wi) continue;
        if (call->req->body_case == PLUMB__ENVELOPE__BODY_TRAIN) dp = call->req->train->dp;
        if (dp) p->calls[c].bytes_in += m->data ? m->data->data.len : 0;
        break;
    }
    msg[0] = 0;
    if (!dp || dp->size <= 1)
        snprintf(msg, sizeof msg, "all-reduce for request %llu, which is no data-parallel train "
                 "request in flight at this worker", (unsigned long long)e->id);
    else if (m->group != dp->group || m->rank != dp->rank || m->size != dp->size)
        snprintf(msg, sizeof msg, "all-reduce as rank %d of %d in group %llu, but request %llu "
                 "made this worker rank %d of %d in group %llu", m->rank, m->size,
                 (unsigned long long)m->group, (unsigned long long)e->id, dp->rank, dp->size,
                 (unsigned long long)dp->group);
    if (!msg[0] && p->given_up[0]) {
        send_error(p, peer, e->id, PL_EPEER, p->given_up); /* never rate-limited: it ends a wait */
        wire_free(&e);
    } else if (msg[0]) {
        refuse(p, peer, e->id, PL_EPROTO, msg, "refused from %s: %s", wname(p, wi, nm, sizeof nm),
               msg);
        wire_free(&e);
    } else if (reducer_add(p->reducer, peer, e, msg, sizeof msg) < 0) {
        plog(p, "refused from %s: %s", wname(p, wi, nm, sizeof nm), msg);
    }
}

/* Receives and handles one frame (waiting up to ms). */
static int serve(Pool *p, int ms) {
    ZtPeer peer;
    void *buf = NULL;
    size_t len = 0;
    int rc = zt_server_recv(p->server, &peer, &buf, &len, ms);
    char who[300], hex[2 * ZT_PEER_MAX + 1];
    int wi = rc != 0 ? find_peer(p, &peer) : -1;
    if (wi >= 0)
        wname(p, wi, who, sizeof who);
    else if (rc != 0)
        snprintf(who, sizeof who, "peer %s", zt_peer_str(&peer, hex, sizeof hex));
    if (rc == PL_ERANGE) {
        char msg[256];
        snprintf(msg, sizeof msg, "a %zu-byte message is over the limit of %zu bytes", len,
                 p->max_message);
        refuse(p, &peer, 0, PL_ERANGE, msg, "refused a message from %s: %s", who, msg);
        return 0;
    }
    if (rc <= 0) return rc;
    double t0 = pl_now_s();
    Plumb__Envelope *e = NULL;
    rc = wire_unpack(buf, len, p->max_message, who, &e);
    free(buf);
    if (rc < 0) {
        refuse(p, &peer, 0, rc, pl_error(), "refused: %s", pl_error());
        return 0;
    }
    double unpack_s = pl_now_s() - t0;
    switch (e->body_case) {
    case PLUMB__ENVELOPE__BODY_REGISTER: on_register(p, &peer, e); break;
    case PLUMB__ENVELOPE__BODY_HEARTBEAT: on_heartbeat(p, &peer, e); break;
    case PLUMB__ENVELOPE__BODY_ALL_REDUCE:
        if (wi < 0) wi = find_dp_peer(p, &peer);
        if (wi < 0) {
            refuse(p, &peer, e->id, PL_EPROTO, "register first",
                   "refused an all-reduce from %s, which has not registered", who);
            break;
        }
        p->w[wi].last_seen = pl_now_s();
        on_allreduce(p, wi, &peer, e);
        return 0; /* on_allreduce took e */
    case PLUMB__ENVELOPE__BODY_ERROR:
    case PLUMB__ENVELOPE__BODY_OK:
    case PLUMB__ENVELOPE__BODY_GENERATED:
    case PLUMB__ENVELOPE__BODY_LOGPROBS_REP:
    case PLUMB__ENVELOPE__BODY_VALUES_REP:
    case PLUMB__ENVELOPE__BODY_SCORE_REP:
    case PLUMB__ENVELOPE__BODY_TRAIN_REP:
    case PLUMB__ENVELOPE__BODY_ADAPTER:
        if (wi < 0) {
            refuse(p, &peer, e->id, PL_EPROTO, "register first",
                   "refused a reply from %s, which has not registered (%s)", who,
                   body_name(e->body_case));
            break;
        }
        p->w[wi].last_seen = pl_now_s();
        on_reply(p, wi, e, unpack_s);
        return 0; /* on_reply took e */
    default:
        refuse(p, &peer, e->id, PL_EPROTO, "unexpected message kind",
               "refused a %s from %s: workers do not send that", body_name(e->body_case), who);
    }
    wire_free(&e);
    return 0;
}

/* Worker i is dead (why, for the log). */
static void set_dead(Pool *p, int i, const char *why) {
    char nm[256];
    PoolWorker *w = &p->w[i];
    w->alive = 0;
    snprintf(w->gone, sizeof w->gone, "%s", why);
    /* a registration that never beat held nothing: no recovery */
    if (w->accepted && (w->roles & ~p->o.replaceable) == 0) p->recoveries++;
    plog(p, "%s is taken for dead: %s", wname(p, i, nm, sizeof nm), why);
    if (p->o.on_dead) p->o.on_dead(p->o.ctx, i);
}

void pool_set_replaceable(Pool *p, unsigned roles) { p->o.replaceable = roles; }
unsigned pool_replaceable(const Pool *p) { return p->o.replaceable; }

void pool_mark_dead(Pool *p, int pid, const char *host) {
    for (int i = 0; i < p->n; i++)
        if (p->w[i].alive && p->w[i].pid == pid && !strcmp(p->w[i].host, host))
            set_dead(p, i, "its process ended");
}

/* Marks workers whose heartbeats stopped as dead. */
static void check_dead(Pool *p) {
    double t = pl_now_s();
    char nm[256];
    for (int i = 0; i < p->n; i++) {
        PoolWorker *w = &p->w[i];
        if (w->alive && t - w->last_seen > p->o.dead_after_ms * 1e-3) {
            snprintf(nm, sizeof nm, "no heartbeat for %.1f s", t - w->last_seen);
            set_dead(p, i, nm);
        }
    }
}

/* Serves at most one frame (waiting up to ms), then the periodic checks. */
static int poll_once(Pool *p, int ms) {
    PL_TRY(serve(p, ms));
    check_dead(p);
    report_dropped(p);
    report_curve(p);
    return p->o.tick ? p->o.tick(p->o.ctx) : 0;
}

int pool_poll(Pool *p, int ms) {
    double end = pl_now_s() + ms * 1e-3;
    do {
        double left = (end - pl_now_s()) * 1e3;
        PL_TRY(poll_once(p, left < 100 ? (left > 0 ? (int)left : 0) : 100));
    } while (pl_now_s() < end);
    return 0;
}

int pool_wait_roles(Pool *p, unsigned needed, int min_workers, int timeout_ms) {
    double end = pl_now_s() + timeout_ms * 1e-3;
    for (;;) {
        unsigned have = 0;
        int live = 0;
        for (int i = 0; i < p->n; i++)
            if (p->w[i].alive) have |= p->w[i].roles, live++;
        if ((have & needed) == needed && live >= min_workers) return 0;
        if (pl_now_s() > end && (have & needed) == needed)
            return pl_fail(PL_ETIMEOUT, "%d of the %d workers awaited registered within %d s",
                           live, min_workers, timeout_ms / 1000);
        if (pl_now_s() > end) {
            char missing[128];
            role_mask_str(needed & ~have, ", ", missing, sizeof missing);
            return pl_fail(PL_ETIMEOUT, "no worker for role(s) %s registered within %d s",
                           missing, timeout_ms / 1000);
        }
        PL_TRY(pool_poll(p, 100));
    }
}

void pool_calls_free(PoolCall *calls, int n) {
    for (int i = 0; i < n; i++) wire_free(&calls[i].rep);
}

/* Sends call c to its worker with a fresh request id. */
static int send_call(Pool *p, PoolCall *c) {
    char nm[256];
    c->req->id = p->next_id++;
    c->req->protocol = PLUMB_PROTOCOL;
    void *buf;
    size_t len;
    double t0 = pl_now_s();
    PL_TRY(wire_pack(c->req, &buf, &len));
    c->pack_s += pl_now_s() - t0;
    c->bytes_out += len;
    int rc = zt_server_send(p->server, &p->w[c->worker].peer, buf, len);
    free(buf);
    if (rc < 0)
        return pl_wrap(rc, "sending %s to %s", body_name(c->req->body_case),
                       wname(p, c->worker, nm, sizeof nm));
    c->wall_s = pl_now_s(); /* the start; on_reply turns it into a duration */
    p->w[c->worker].busy++;
    p->w[c->worker].used = 1;
    return 0;
}

/* c's worker is dead: 1 when another live worker of the request's role
 * took c over (re-sent), 0 while none is there yet, < 0 when the role is
 * not replaceable or the wait is over. */
/* A data-parallel train request (one part of a group's step). */
static int is_dp(const PoolCall *c) {
    return c->req->body_case == PLUMB__ENVELOPE__BODY_TRAIN && c->req->train->dp &&
           c->req->train->dp->size > 1;
}

static int take_over(Pool *p, PoolCall *c) {
    char nm[256], nm2[256];
    RoleKind k;
    int dead = c->worker;
    if (!c->lost_at) c->lost_at = pl_now_s();
    /* a data-parallel train request is one part of a group's step: the
     * others wait on it in the collective, and no single worker can redo it */
    int ok = c->req->role && role_kind_parse(c->req->role, &k) == 0 && !is_dp(c) &&
             (p->w[dead].roles & ~p->o.replaceable) == 0 && p->o.replace_wait_ms > 0;
    if (!ok)
        return pl_fail(PL_EPEER, "%s died (%s) while handling %s request %llu",
                       wname(p, dead, nm, sizeof nm), p->w[dead].gone,
                       body_name(c->req->body_case), (unsigned long long)c->req->id);
    int idx[POOL_MAX_WORKERS];
    int n = pool_workers_with(p, k, idx, POOL_MAX_WORKERS);
    if (n == 0) {
        if (!c->waiting) {
            plog(p, "%s died holding %s request %llu; waiting up to %d s for a worker of role %s "
                    "to take its place", wname(p, dead, nm, sizeof nm), body_name(c->req->body_case),
                 (unsigned long long)c->req->id, p->o.replace_wait_ms / 1000, role_kind_name(k));
            c->waiting = 1;
        }
        if (pl_now_s() - c->lost_at <= p->o.replace_wait_ms * 1e-3) return 0;
        return pl_fail(PL_EPEER, "%s died while handling %s request %llu, and no other %s worker "
                                 "registered within %d s to take it over",
                       wname(p, dead, nm, sizeof nm), body_name(c->req->body_case),
                       (unsigned long long)c->req->id, role_kind_name(k),
                       p->o.replace_wait_ms / 1000);
    }
    p->w[dead].busy = 0;
    c->worker = idx[0];
    double waited = pl_now_s() - c->lost_at;
    PL_TRY(send_call(p, c));
    p->recovery_s += waited;
    c->lost_at = 0, c->waiting = 0;
    plog(p, "%s died; its %s request went to %s after %.1f s", wname(p, dead, nm, sizeof nm),
         body_name(c->req->body_case), wname(p, c->worker, nm2, sizeof nm2), waited);
    return 1;
}

int pool_await_role(Pool *p, RoleKind k, int *idx, int max) {
    int n = pool_workers_with(p, k, idx, max);
    if (n > 0 || !(p->o.replaceable & (1u << k))) return n;
    double t0 = pl_now_s();
    while (n == 0 && pl_now_s() - t0 < p->o.replace_wait_ms * 1e-3) {
        int rc = poll_once(p, 100);
        if (rc < 0) return rc;
        n = pool_workers_with(p, k, idx, max);
    }
    p->recovery_s += pl_now_s() - t0;
    return n;
}

int pool_await_other(Pool *p, RoleKind k, const int *not, int n) {
    double t0 = pl_now_s();
    for (;;) {
        for (int i = 0; i < p->n; i++) {
            int taken = 0;
            for (int j = 0; j < n; j++) taken |= not[j] == i;
            if (!taken && p->w[i].alive && (p->w[i].roles & (1u << k))) {
                p->recovery_s += pl_now_s() - t0;
                return i;
            }
        }
        if (pl_now_s() - t0 > p->o.replace_wait_ms * 1e-3)
            return pl_fail(PL_EPEER, "no new worker of role %s registered within %d s",
                           role_kind_name(k), p->o.replace_wait_ms / 1000);
        PL_TRY(poll_once(p, 100));
    }
}

long pool_recoveries(const Pool *p) { return p->recoveries; }

double pool_recovery_s_take(Pool *p) {
    double s = p->recovery_s;
    p->recovery_s = 0;
    return s;
}

int pool_call(Pool *p, PoolCall *calls, int n) {
    char nm[256];
    /* all or none sent: a replica must not start a group's step that
     * another cannot join */
    for (int i = 0; i < n; i++) {
        PoolCall *c = &calls[i];
        c->rep = NULL;
        c->pack_s = c->compute_s = c->sync_s = 0;
        c->sync_bytes = 0;
        c->bytes_out = 0;
        c->lost_at = 0, c->waiting = 0, c->given_up = 0;
        if (c->worker < 0 || c->worker >= p->n || !p->w[c->worker].alive)
            return pl_fail(PL_EPEER, "%s request for %s, which is not alive",
                           body_name(c->req->body_case),
                           c->worker >= 0 && c->worker < p->n ? wname(p, c->worker, nm, sizeof nm)
                                                              : "no worker");
    }
    for (int i = 0; i < n; i++) PL_TRY(send_call(p, &calls[i]));
    p->calls = calls, p->n_calls = n;
    double start = pl_now_s();
    int rc = 0, dp_failed = 0;
    char dp_err[1024] = "";
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            PoolCall *c = &calls[i];
            if (c->given_up) continue;
            if (c->rep) {
                /* once a replica died, the others' groups are given up
                 * too: their errors are waited for, not taken as the cause */
                if (c->rep->body_case == PLUMB__ENVELOPE__BODY_ERROR && !(dp_failed && is_dp(c)))
                    rc = pl_fail(PL_EPEER, "%s failed %s: %s",
                                 wname(p, c->worker, nm, sizeof nm),
                                 body_name(c->req->body_case), c->rep->error->message);
                continue;
            }
            pending++;
            if (!p->w[c->worker].alive) {
                int t = take_over(p, c);
                if (t < 0 && is_dp(c)) {
                    /* every live replica's answer is waited for, so that the
                     * caller knows which finished the step (pool.h) */
                    c->given_up = 1, pending--;
                    if (!dp_failed) {
                        snprintf(dp_err, sizeof dp_err, "%s", pl_error());
                        snprintf(p->given_up, sizeof p->given_up,
                                 "the train request was given up: %s", dp_err);
                        reducer_fail_all(p->reducer, p->given_up);
                        dp_failed = 1;
                    }
                } else if (t < 0) rc = t;
                else if (t > 0) start = pl_now_s(); /* the new worker's own time */
            } else if (pl_now_s() - start > p->o.request_timeout_ms * 1e-3)
                rc = pl_fail(PL_ETIMEOUT, "%s did not answer %s request %llu within %d s",
                             wname(p, c->worker, nm, sizeof nm), body_name(c->req->body_case),
                             (unsigned long long)c->req->id, p->o.request_timeout_ms / 1000);
        }
        if (rc < 0 || pending == 0) break;
        if ((rc = poll_once(p, 100)) < 0) break;
    }
    p->given_up[0] = '\0';
    if (rc == 0 && dp_failed) rc = pl_fail(PL_EPEER, "%s", dp_err);
    /* Replies still owed are dropped when they come (nothing matches them);
     * the collectives of the calls are answered with why they were given up,
     * so that no replica waits on a group that is gone. */
    for (int i = 0; i < n; i++)
        if (!calls[i].rep && calls[i].worker < p->n) p->w[calls[i].worker].busy = 0;
    char why[1024];
    snprintf(why, sizeof why, "the train request was given up: %s",
             rc < 0 ? pl_error() : "the call ended");
    reducer_fail_all(p->reducer, why);
    p->calls = NULL, p->n_calls = 0;
    return rc;
}

void pool_free(Pool **pp, int timeout_ms) {
    if (!pp || !*pp) return;
    Pool *p = *pp;
    if (timeout_ms > 0) {
        WireArena *a = wire_arena_new();
        PoolCall calls[POOL_MAX_WORKERS];
        int n = 0;
        for (int i = 0; a && i < p->n; i++) {
            if (!p->w[i].alive) continue;
            Plumb__Envelope *e = wire_envelope(a, 0, NULL);
            Plumb__Shutdown *s = wire_alloc(a, sizeof *s);
            if (!e || !s) break;
            plumb__shutdown__init(s);
            s->reason = "the run is over";
            e->body_case = PLUMB__ENVELOPE__BODY_SHUTDOWN;
            e->shutdown = s;
            memset(&calls[n], 0, sizeof calls[n]);
            calls[n].worker = i, calls[n].req = e;
            n++;
        }
        int saved = p->o.request_timeout_ms;
        p->o.request_timeout_ms = timeout_ms;
        p->o.tick = NULL;
        pool_call(p, calls, n);
        p->o.request_timeout_ms = saved;
        pool_calls_free(calls, n);
        wire_arena_free(&a);
    }
    reducer_free(&p->reducer);
    zt_server_free(&p->server);
    free(p);
    *pp = NULL;
}
