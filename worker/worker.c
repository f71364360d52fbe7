/* worker.c: the worker process loop (worker.h). */
#define _GNU_SOURCE
#include "worker.h"
#include "worker/bases.h"

#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/transport.h"
#include "common/wire.h"
#include "worker/relay.h"
#include "worker/role.h"

#define MAX_ROLES ROLE_NKINDS

/* The first of names (n, NULL-free) set to a whole decimal in [0, 2^30),
 * or -1. */
static int env_index(const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(names[i]);
        char *end;
        if (!v || !*v) continue;
        long r = strtol(v, &end, 10);
        if (*end == '\0' && r >= 0 && r < (1L << 30)) return (int)r;
    }
    return -1;
}

int worker_rank_from_env(void) {
    const char *names[] = {"SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"};
    return env_index(names, sizeof names / sizeof *names);
}

int worker_local_rank_from_env(void) {
    const char *names[] = {"SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                           "LOCAL_RANK"};
    return env_index(names, sizeof names / sizeof *names);
}

int worker_device_from_env(char *out, size_t cap, const char *spec) {
    if (strcmp(spec, "cuda")) return snprintf(out, cap, "%s", spec) < (int)cap ? 0 : -1;
    int local = worker_local_rank_from_env();
    if (local < 0) return snprintf(out, cap, "cuda:0") < (int)cap ? 0 : -1;
    /* A launcher that gives each task its own GPUs lists them in
     * CUDA_VISIBLE_DEVICES, and they are numbered from 0 again inside. */
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    int n = 0;
    if (vis && *vis) {
        n = 1;
        for (const char *c = vis; *c; c++) n += *c == ',';
    }
    return snprintf(out, cap, "cuda:%d", n > 0 ? local % n : local) < (int)cap ? 0 : -1;
}

/* ------------------------------------------------------------ heartbeat */

/* Heartbeat.coordinator_gone: why the coordinator is taken for gone. */
enum { GONE_SILENT = 1, GONE_UNKNOWN = 2 };

typedef struct {
    ZtClientOptions copt;      /* the heartbeat socket's options            */
    char worker_id[128];
    int period_ms;
    int coordinator_timeout_ms;
    atomic_int stop;
    atomic_int coordinator_gone;
} Heartbeat;

/* Sends a Heartbeat every period and watches the coordinator's acks. */
static void *heartbeat_main(void *arg) {
    Heartbeat *h = arg;
    ZtClient *c = NULL;
    if (zt_client_new(&c, &h->copt) < 0) {
        fprintf(stderr, "plumb worker: heartbeat socket: %s\n", pl_error());
        atomic_store(&h->coordinator_gone, 1);
        return NULL;
    }
    double last_ack = pl_now_s();
    uint64_t seq = 0;
    while (!atomic_load(&h->stop)) {
        WireArena *a = wire_arena_new();
        Plumb__Envelope *e = a ? wire_envelope(a, 0, NULL) : NULL;
        Plumb__Heartbeat *hb = e ? wire_alloc(a, sizeof *hb) : NULL;
        if (hb) {
            plumb__heartbeat__init(hb);
            hb->worker_id = h->worker_id;
            hb->seq = seq++;
            e->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
            e->heartbeat = hb;
            void *buf;
            size_t len;
            if (wire_pack(e, &buf, &len) == 0) {
                zt_client_send(c, buf, len, 0);
                free(buf);
            }
        }
        wire_arena_free(&a);
        /* Drain acknowledgements until the next beat is due. */
        double next = pl_now_s() + h->period_ms * 1e-3;
        for (;;) {
            int wait = (int)((next - pl_now_s()) * 1e3);
            if (wait <= 0 || atomic_load(&h->stop)) break;
            void *buf;
            size_t len;
            if (zt_client_recv(c, &buf, &len, wait) == 1) {
                Plumb__Envelope *q = NULL;
                int unknown = wire_unpack(buf, len, WIRE_MAX_MESSAGE_DEFAULT, "the coordinator",
                                          &q) == 0 &&
                              q->body_case == PLUMB__ENVELOPE__BODY_ERROR;
                wire_free(&q);
                free(buf);
                if (unknown) { /* a coordinator that does not know us: a new one */
                    atomic_store(&h->coordinator_gone, GONE_UNKNOWN);
                    break;
                }
                last_ack = pl_now_s();
            }
        }
        if (atomic_load(&h->coordinator_gone)) break;
        if (pl_now_s() - last_ack > h->coordinator_timeout_ms * 1e-3) {
            atomic_store(&h->coordinator_gone, GONE_SILENT);
            break;
        }
    }
    zt_client_free(&c);
    return NULL;
}

/* ------------------------------------------------------------ the worker */

typedef struct {
    const WorkerOptions *o;
    ZtClient *client;
    Base *base;
    Device *dev; /* where the roles compute (--device)         */
    Bases *bases; /* the roles' other bases, one copy per path */
    Tokenizer *tok;
    char tok_dir[4096];
    char worker_id[128];
    char fingerprint[33];
    char host[256];
    Role *roles[MAX_ROLES];
    RoleKind kinds[MAX_ROLES];
    int n_roles;
    size_t max_message;
    int heartbeat_ms;
    atomic_int *coordinator_gone; /* set by the heartbeat thread             */
    Collective *coll;        /* the replicas' relay (its own socket)          */
} Worker;

/* Parses "actor,reference" into w->kinds. */
static int parse_roles(Worker *w, const char *spec) {
    char buf[256];
    if (!spec || !*spec) return pl_fail(PL_EINVAL, "--role: no role given");
    if (strlen(spec) >= sizeof buf) return pl_fail(PL_EINVAL, "--role: too long");
    strcpy(buf, spec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        RoleKind k;
        PL_TRY(role_kind_parse(t, &k));
        for (int i = 0; i < w->n_roles; i++)
            if (w->kinds[i] == k) return pl_fail(PL_EINVAL, "--role: '%s' given twice", t);
        if (w->n_roles == MAX_ROLES) return pl_fail(PL_EINVAL, "--role: too many roles");
        w->kinds[w->n_roles++] = k;
    }
    return 0;
}

/* Sends a packed envelope on the main socket. */
static int send_env(Worker *w, const Plumb__Envelope *e) {
    void *buf;
    size_t len;
    PL_TRY(wire_pack(e, &buf, &len));
    int rc = zt_client_send(w->client, buf, len, 10000);
    free(buf);
    return rc;
}

static int send_error(Worker *w, uint64_t id, int code, const char *msg) {
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    Plumb__Envelope *e = wire_error(a, id, code, msg);
    int rc = e ? send_env(w, e) : PL_ENOMEM;
    wire_arena_free(&a);
    return rc;
}

/* Registers and waits for the Welcome (into *welcome, for wire_free). */
static int do_register(Worker *w, int timeout, Plumb__Envelope **welcome) {
    *welcome = NULL;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    Plumb__Envelope *e = wire_envelope(a, 0, NULL);
    Plumb__Register *r = wire_alloc(a, sizeof *r);
    Plumb__ModelInfo *mi = wire_alloc(a, sizeof *mi);
    char **names = wire_alloc(a, sizeof(char *) * MAX_ROLES);
    if (!e || !r || !mi || !names) {
        wire_arena_free(&a);
        return pl_fail(PL_ENOMEM, "registration: out of memory");
    }
    plumb__register__init(r);
    plumb__model_info__init(mi);
    for (int i = 0; i < w->n_roles; i++) names[i] = (char *)role_kind_name(w->kinds[i]);
    r->worker_id = w->worker_id;
    r->n_roles = w->n_roles;
    r->roles = names;
    r->rank = w->o->rank >= 0 ? w->o->rank : 0;
    r->device = (char *)(w->o->device ? w->o->device : "cpu");
    r->host = w->host;
    r->pid = (int)getpid();
    r->fingerprint = w->fingerprint;
    mi->vocab = w->base->cfg.vocab_size;
    mi->max_seq = w->base->cfg.max_seq_len;
    mi->dim = w->base->cfg.dim;
    mi->layers = w->base->cfg.n_layers;
    r->model = mi;
    e->body_case = PLUMB__ENVELOPE__BODY_REGISTER;
    e->register_ = r;
    int rc = send_env(w, e);
    wire_arena_free(&a);
    PL_TRY(rc);

    void *buf;
    size_t len;
    rc = zt_client_recv(w->client, &buf, &len, timeout);
    if (rc == 0)
        return pl_fail(PL_ETIMEOUT, "no answer from the coordinator at %s within %d ms",
                       w->o->connect, timeout);
    PL_TRY(rc);
    Plumb__Envelope *q = NULL;
    rc = wire_unpack(buf, len, w->max_message, "the coordinator", &q);
    free(buf);
    PL_TRY(rc);
    if (q->body_case == PLUMB__ENVELOPE__BODY_ERROR) {
        rc = pl_fail(PL_EPEER, "the coordinator refused this worker: %s", q->error->message);
        wire_free(&q);
        return rc;
    }
    if (q->body_case != PLUMB__ENVELOPE__BODY_WELCOME) {
        wire_free(&q);
        return pl_fail(PL_EPROTO, "the coordinator answered registration with message %d",
                       (int)q->body_case);
    }
    w->heartbeat_ms = q->welcome->heartbeat_ms > 0 ? q->welcome->heartbeat_ms : 500;
    *welcome = q;
    return 0;
}

/* Builds the roles from the Welcome's RoleConfigs. */
static int build_roles(Worker *w, const Plumb__Welcome *wel) {
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < wel->n_roles; i++) {
        RoleKind k;
        rc = role_kind_parse(wel->roles[i]->role, &k);
        int slot = -1;
        for (int j = 0; rc == 0 && j < w->n_roles; j++)
            if (w->kinds[j] == k) slot = j;
        if (rc == 0 && slot < 0)
            rc = pl_fail(PL_EPROTO, "the coordinator configured role '%s', not hosted here",
                         wel->roles[i]->role);
        if (rc == 0) /* role_new's errors name the role */
            rc = role_new(&w->roles[slot], w->o->roles_table[k], wel->roles[i], w->base,
                          w->o->model, w->tok, w->tok_dir, w->dev, w->bases);
    }
    for (int j = 0; rc == 0 && j < w->n_roles; j++)
        if (!w->roles[j])
            rc = pl_fail(PL_EPROTO, "the coordinator sent no configuration for role '%s'",
                         role_kind_name(w->kinds[j]));
    if (w->o->verbose && rc == 0)
        fprintf(stderr, "plumb worker %s: registered as worker %d\n", w->worker_id,
                wel->worker_index);
    return rc;
}

/* Answers one request. Returns 1 after Shutdown, 2 when the device is lost
 * (pl_error says why), 0 otherwise, < 0 only when the socket fails. */
static int serve_one(Worker *w, const void *buf, size_t len) {
    Plumb__Envelope *q = NULL;
    if (wire_unpack(buf, len, w->max_message, "the coordinator", &q) < 0) {
        fprintf(stderr, "plumb worker %s: %s\n", w->worker_id, pl_error());
        return send_error(w, 0, PL_EPROTO, pl_error()) < 0 ? -1 : 0;
    }
    double t0 = pl_now_s(), busy0 = w->coll->busy_s;
    uint64_t bytes0 = w->coll->bytes;
    if (q->body_case == PLUMB__ENVELOPE__BODY_ERROR) {
        /* the coordinator refused something this worker sent: nothing waits */
        if (w->o->verbose)
            fprintf(stderr, "plumb worker %s: the coordinator said: %s\n", w->worker_id,
                    q->error->message);
        wire_free(&q);
        return 0;
    }
    if (q->body_case == PLUMB__ENVELOPE__BODY_SHUTDOWN) {
        WireArena *a = wire_arena_new();
        Plumb__Envelope *e = wire_envelope(a, q->id, NULL);
        Plumb__Ok *ok = wire_alloc(a, sizeof *ok);
        plumb__ok__init(ok);
        e->body_case = PLUMB__ENVELOPE__BODY_OK;
        e->ok = ok;
        send_env(w, e);
        wire_arena_free(&a);
        wire_free(&q);
        return 1;
    }
    Role *role = NULL;
    RoleKind k;
    if (role_kind_parse(q->role, &k) == 0)
        for (int i = 0; i < w->n_roles; i++)
            if (w->kinds[i] == k) role = w->roles[i];
    int rc;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    if (!role) {
        rc = pl_fail(PL_EPROTO, "request %llu is for role '%s', which this worker does not host",
                     (unsigned long long)q->id, q->role);
    } else {
        Plumb__Envelope *rep = wire_envelope(a, q->id, q->role);
        rc = role_handle(role, q, a, rep);
        if (rc == 0) {
            /* time in collectives is communication and waiting for peers */
            rep->sync_s = w->coll->busy_s - busy0;
            rep->compute_s = pl_now_s() - t0 - rep->sync_s;
            rep->sync_bytes = w->coll->bytes - bytes0;
            rc = send_env(w, rep);
            wire_arena_free(&a);
            wire_free(&q);
            return rc < 0 ? -1 : 0;
        }
    }
    /* The request failed: answer with the reason and keep serving, unless
     * the device is lost: then a worker that stays only fails every later
     * request, so it stops and a replacement can take its place. */
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", pl_error());
    if (w->o->verbose) fprintf(stderr, "plumb worker %s: %s\n", w->worker_id, msg);
    int src = send_error(w, q->id, rc, msg);
    wire_arena_free(&a);
    wire_free(&q);
    if (src >= 0 && w->dev && w->dev->lost) {
        pl_fail(PL_EDEVICE, "%s is lost, so the worker stops (%s)", w->dev->name, msg);
        return 2;
    }
    return src < 0 ? -1 : 0;
}

/* Ends a registration: its roles, its collective and its socket. */
static void session_free(Worker *w) {
    for (int i = 0; i < w->n_roles; i++) role_free(&w->roles[i]);
    coll_free(&w->coll);
    zt_client_free(&w->client);
}

static void worker_free(Worker *w) {
    session_free(w);
    bases_free(&w->bases);
    base_free(&w->base); /* the bases' device copies before their device */
    dev_close(&w->dev);
    tok_free(&w->tok);
}

/* One registration with the coordinator at o->connect: a new identity and
 * sockets, the roles built from the Welcome, the heartbeat thread, and the
 * requests served until Shutdown. Returns 0 after Shutdown, 1 when the
 * coordinator went away (pl_error says how), < 0 on anything else. */
static int session(Worker *w, int register_timeout_ms) {
    const WorkerOptions *o = w->o;
    /* an identity of its own: nothing queued for or from an earlier
     * registration can be taken for this one's */
    snprintf(w->worker_id, sizeof w->worker_id, "%.96s:%d:%08lx", w->host, (int)getpid(),
             (unsigned long)(pl_now_s() * 1e6) & 0xffffffffUL);
    ZtClientOptions co = {.endpoint = o->connect,
                          .server_key = o->server_key,
                          .secret_key = o->secret_key,
                          .identity = w->worker_id,
                          .max_message = w->max_message};
    int rc;
    Plumb__Envelope *welcome = NULL;
    if ((rc = zt_client_new(&w->client, &co)) < 0 ||
        (rc = do_register(w, register_timeout_ms, &welcome)) < 0) {
        session_free(w);
        return rc;
    }
    Heartbeat hb;
    memset(&hb, 0, sizeof hb);
    char hb_id[160];
    snprintf(hb_id, sizeof hb_id, "%s/hb", w->worker_id);
    hb.copt = co;
    hb.copt.identity = hb_id;
    snprintf(hb.worker_id, sizeof hb.worker_id, "%s", w->worker_id);
    hb.period_ms = w->heartbeat_ms;
    hb.coordinator_timeout_ms = o->coordinator_timeout_ms > 0 ? o->coordinator_timeout_ms : 30000;
    char dp_id[160];
    snprintf(dp_id, sizeof dp_id, "%s/dp", w->worker_id);
    ZtClientOptions dpo = co;
    dpo.identity = dp_id;
    if ((rc = relay_new(&w->coll, &dpo, &hb.coordinator_gone)) < 0) {
        wire_free(&welcome);
        session_free(w);
        return rc;
    }
    /* beating before the roles are built: the coordinator accepts a
     * registration at its first heartbeat, and building can take long
     * (a role's own base to load, weights to move to the device) */
    pthread_t thread;
    if (pthread_create(&thread, NULL, heartbeat_main, &hb) != 0) {
        wire_free(&welcome);
        session_free(w);
        return pl_fail(PL_ENOMEM, "starting the heartbeat thread");
    }
    rc = build_roles(w, welcome->welcome);
    wire_free(&welcome);
    for (int i = 0; rc == 0 && i < w->n_roles; i++) w->roles[i]->coll = w->coll;
    while (rc == 0) {
        int gone = atomic_load(&hb.coordinator_gone);
        if (gone) {
            pl_fail(PL_ETIMEOUT, gone == GONE_UNKNOWN
                                     ? "the coordinator at %s no longer knows this worker "
                                       "(it was restarted, or took this worker for dead)"
                                     : "the coordinator at %s stopped answering heartbeats",
                    o->connect);
            rc = 1;
            break;
        }
        void *buf;
        size_t len;
        int got = zt_client_recv(w->client, &buf, &len, 200);
        if (got == 0) continue;
        if (got == PL_ERANGE) {
            fprintf(stderr, "plumb worker %s: dropped a %zu-byte message over the limit\n",
                    w->worker_id, len);
            send_error(w, 0, PL_ERANGE, "message over the worker's size limit");
            continue;
        }
        if (got < 0) {
            rc = got;
            break;
        }
        int s = serve_one(w, buf, len);
        free(buf);
        if (s == 1) {
            rc = 0;
            break;
        }
        if (s == 2) { /* the device is lost: pl_error says why */
            rc = PL_EDEVICE;
            break;
        }
        if (s < 0) {
            rc = pl_fail(PL_EIO, "sending a reply to %s failed", o->connect);
            break;
        }
    }
    char err[1024];
    snprintf(err, sizeof err, "%s", pl_error());
    atomic_store(&hb.stop, 1);
    pthread_join(thread, NULL);
    session_free(w);
    pl_fail(rc, "%s", err);
    return rc;
}

int worker_run(const WorkerOptions *o) {
    Worker w;
    memset(&w, 0, sizeof w);
    w.o = o;
    w.max_message = o->max_message ? o->max_message : WIRE_MAX_MESSAGE_DEFAULT;
    if (!o->connect || !*o->connect) return pl_fail(PL_EINVAL, "--connect: no endpoint given");
    if (!o->model || !*o->model) return pl_fail(PL_EINVAL, "--model: no base model given");
    PL_TRY(parse_roles(&w, o->roles));
    if (gethostname(w.host, sizeof w.host - 1) != 0) strcpy(w.host, "unknown");

    /* The tokenizer folder: given, or the model's (its parent for a file). */
    if (o->tokenizer && *o->tokenizer) {
        snprintf(w.tok_dir, sizeof w.tok_dir, "%s", o->tokenizer);
    } else {
        struct stat st;
        snprintf(w.tok_dir, sizeof w.tok_dir, "%s", o->model);
        if (stat(o->model, &st) == 0 && !S_ISDIR(st.st_mode)) {
            char tmp[4096];
            snprintf(tmp, sizeof tmp, "%s", o->model);
            snprintf(w.tok_dir, sizeof w.tok_dir, "%s", dirname(tmp));
        }
    }
    /* the device first: a worker that cannot have it says so before loading */
    int rc = dev_open(&w.dev, o->device ? o->device : "cpu");
    if (rc < 0) return pl_wrap(rc, "--device");
    if ((rc = bases_new(&w.bases)) < 0) {
        worker_free(&w);
        return rc;
    }
    rc = base_load(&w.base, o->model);
    if (rc < 0) {
        worker_free(&w);
        return pl_wrap(rc, "loading the base model %s", o->model);
    }
    rc = tok_load(&w.tok, w.tok_dir);
    if (rc < 0) {
        rc = pl_wrap(rc, "loading the tokenizer from %s", w.tok_dir);
        worker_free(&w);
        return rc;
    }
    if ((rc = wire_fingerprint(w.base, w.fingerprint)) < 0) {
        worker_free(&w);
        return rc;
    }
    /* The model stays loaded across registrations: a coordinator that comes
     * back (restarted from its checkpoint) gets the same process again, its
     * roles rebuilt from the new Welcome. */
    rc = session(&w, o->register_timeout_ms > 0 ? o->register_timeout_ms : 60000);
    while (rc == 1 && o->rejoin_ms > 0) {
        fprintf(stderr, "plumb worker %s: %s; registering again (for up to %d s)\n", w.worker_id,
                pl_error(), o->rejoin_ms / 1000);
        rc = session(&w, o->rejoin_ms);
    }
    if (rc == 1) rc = PL_ETIMEOUT; /* pl_error says how it went */
    worker_free(&w);
    return rc;
}
