/* test_hostile.c: hostile peers and bad input against a real run on
 * loopback (runutil.h): malformed frames, registrations that fill the
 * pool, workers whose replies lie about their shapes or their sequences,
 * and an unknown config key. Each is refused with a message naming it,
 * and the run goes on. */
#define _GNU_SOURCE
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "common/wire.h"
#include "coordinator/pool.h"
#include "model/weights.h"
#include "runutil.h"
#include "testutil.h"

/* ------------------------------------------------------- bad input */

/* A raw DEALER client that speaks (or mangles) the wire protocol. */
typedef struct {
    void *ctx, *sock;
} Raw;

static void raw_open(Raw *r, int port, const char *identity) {
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (identity) zmq_setsockopt(r->sock, ZMQ_ROUTING_ID, identity, strlen(identity));
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    assert_int_equal(zmq_connect(r->sock, ep), 0);
}

static void raw_close(Raw *r) {
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

static void raw_send(Raw *r, const void *buf, size_t len) {
    assert_int_equal(zmq_send(r->sock, buf, len, 0), (int)len);
}

static void raw_send_env(Raw *r, const Plumb__Envelope *e) {
    void *buf;
    size_t len;
    assert_int_equal(wire_pack(e, &buf, &len), 0);
    raw_send(r, buf, len);
    free(buf);
}

/* Receives one envelope within ms (NULL on timeout or when not one). */
static Plumb__Envelope *raw_recv(Raw *r, int ms) {
    zmq_pollitem_t it = {.socket = r->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, ms) <= 0) return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, r->sock, 0) < 0) return NULL;
    Plumb__Envelope *e = NULL;
    wire_unpack(zmq_msg_data(&m), zmq_msg_size(&m), WIRE_MAX_MESSAGE_DEFAULT, "the coordinator", &e);
    zmq_msg_close(&m);
    return e;
}

/* Sends a Register for worker id with one role, the base fingerprint fp
 * and base's dimensions (host "liar", pid 424242). */
static void raw_register(Raw *raw, WireArena *a, const char *id, const char *role,
                         const char *fp, const Base *base) {
    Plumb__Envelope *e = wire_envelope(a, 1, NULL);
    Plumb__Register *r = wire_alloc(a, sizeof *r);
    Plumb__ModelInfo *mi = wire_alloc(a, sizeof *mi);
    char **roles = wire_alloc(a, sizeof *roles);
    plumb__register__init(r);
    plumb__model_info__init(mi);
    roles[0] = wire_strdup(a, role);
    r->worker_id = wire_strdup(a, id);
    r->n_roles = 1, r->roles = roles;
    r->device = "cpu", r->host = "liar", r->pid = 424242;
    r->fingerprint = wire_strdup(a, fp);
    mi->vocab = base->cfg.vocab_size, mi->max_seq = base->cfg.max_seq_len;
    mi->dim = base->cfg.dim, mi->layers = base->cfg.n_layers;
    r->model = mi;
    e->body_case = PLUMB__ENVELOPE__BODY_REGISTER;
    e->register_ = r;
    raw_send_env(raw, e);
}

/* The next Error from the coordinator (other messages skipped), or fails. */
static void expect_error(Raw *r, const char *what, const char *needle) {
    double end = tu_now_s() + 5;
    while (tu_now_s() < end) {
        Plumb__Envelope *e = raw_recv(r, 200);
        if (!e) continue;
        int is_err = e->body_case == PLUMB__ENVELOPE__BODY_ERROR;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", is_err ? e->error->message : "");
        wire_free(&e);
        if (!is_err) continue;
        if (needle && !strstr(msg, needle))
            fail_msg("%s: the Error reply \"%s\" does not mention \"%s\"", what, msg, needle);
        return;
    }
    fail_msg("%s: no Error reply within 5 s", what);
}

/* Seqs whose tokens tensor claims shape (n_claim) but carries n ints. */
static Plumb__Seqs *lying_seqs(WireArena *a, const int *tok, int n, int n_claim) {
    static int offs[2];
    offs[0] = 0, offs[1] = n_claim;
    Plumb__Seqs *s = wire_seqs(a, tok, offs, NULL, 1);
    int64_t *shape = wire_alloc(a, sizeof *shape);
    shape[0] = n_claim;
    s->tokens->shape = shape;
    s->tokens->n_shape = 1;
    s->tokens->data.len = (size_t)n * sizeof(int);
    return s;
}

/* The coordinator of a DPO run (needs actor and reference) with a 1 MiB
 * message limit, waiting for its reference worker while one legitimate
 * actor worker is registered; raw frames then arrive: (a) another protocol
 * version, (b) garbage, (c) 2 MB, (d) a reply whose tensor shape disagrees
 * with its bytes, (e) an all-reduce nothing asked for; and (f) a worker
 * whose base model differs. Each is
 * refused with a message on the coordinator's stderr and (where the sender
 * is known) an Error reply; the other worker exits non-zero saying the base
 * model differs. Then the reference worker joins and the run completes all
 * its steps with exit 0, using the actor worker registered before. */
static void test_bad_frames(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "dpo");
    ru_config(cfg, sizeof cfg, "bad", body);
    int port = tu_free_port();
    assert_true(port > 0);
    const char *run = strdup(tu_path("%s/bad", ru_dir));
    const char *clog = strdup(tu_path("%s/bad-coordinator.log", ru_dir));
    const char *alog = strdup(tu_path("%s/bad-actor.log", ru_dir));
    const char *olog = strdup(tu_path("%s/bad-other.log", ru_dir));
    const char *rlog = strdup(tu_path("%s/bad-reference.log", ru_dir));
    char other[1024];
    snprintf(other, sizeof other, "%s/other-model", ru_dir);
    char *out;
    int rc = tu_plumb(&out, "init --out %s --format hf --vocab 259 --dim 32 --hidden 64 --layers 1 "
                         "--heads 2 --kv-heads 1 --seq-len 24 --seed 99", other);
    if (rc != 0) fail_msg("plumb init: %s", out);
    free(out);

    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d "
                           "transport.max_message_mb=1 transport.startup_timeout_s=60", cfg, port);
    pid_t wa = -1, wo = -1, wr = -1;
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    wa = tu_spawn(alog, "worker --role actor --connect tcp://127.0.0.1:%d --model %s/init "
                     "--tokenizer %s --threads 1", port, run, ru_data);
    if (!tu_wait_text(clog, "(actor, pid", 20)) {
        tu_stop(wa), tu_stop(co);
        fail_msg("the actor worker did not register:\n%s", tu_read_file(alog, NULL));
    }

    Raw raw;
    raw_open(&raw, port, "raw-client");
    WireArena *a = wire_arena_new();

    /* (a) another protocol version */
    Plumb__Envelope *e = wire_envelope(a, 1, NULL);
    Plumb__Heartbeat *hb = wire_alloc(a, sizeof *hb);
    plumb__heartbeat__init(hb);
    hb->worker_id = "raw-client";
    e->protocol = PLUMB_PROTOCOL + 41;
    e->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
    e->heartbeat = hb;
    raw_send_env(&raw, e);
    expect_error(&raw, "(a) protocol", "protocol");
    if (!tu_wait_text(clog, tu_path("protocol %d", PLUMB_PROTOCOL + 41), 5))
        fail_msg("(a): the coordinator's stderr does not mention protocol %d", PLUMB_PROTOCOL + 41);

    /* (b) garbage: no valid protobuf starts with a field of wire type 7 */
    unsigned char junk[64];
    memset(junk, 0xff, sizeof junk);
    raw_send(&raw, junk, sizeof junk);
    expect_error(&raw, "(b) garbage", "not a plumb Envelope");
    if (!tu_wait_text(clog, "not a plumb Envelope", 5))
        fail_msg("(b): the coordinator's stderr does not mention the garbage frame");

    /* (c) 2 MB against a 1 MiB limit */
    size_t big = 2u << 20;
    unsigned char *huge = calloc(1, big);
    raw_send(&raw, huge, big);
    free(huge);
    expect_error(&raw, "(c) oversized", "over the limit");
    if (!tu_wait_text(clog, "2097152-byte message is over the limit", 5))
        fail_msg("(c): the coordinator's stderr does not mention the 2 MB message");

    /* (d) a reply whose tokens claim 500 entries but carry 3 */
    int tok[3] = {1, 2, 3};
    e = wire_envelope(a, 77, "actor");
    Plumb__GenerateRep *g = wire_alloc(a, sizeof *g);
    plumb__generate_rep__init(g);
    g->seqs = lying_seqs(a, tok, 3, 500);
    e->body_case = PLUMB__ENVELOPE__BODY_GENERATED;
    e->generated = g;
    raw_send_env(&raw, e);
    expect_error(&raw, "(d) lying shape", "register");
    if (!tu_wait_text(clog, "refused a reply from peer", 5))
        fail_msg("(d): the coordinator's stderr does not mention the refused reply");

    /* (e) an all-reduce from a peer that serves no train request */
    float v[2] = {1.0f, 2.0f};
    e = wire_envelope(a, 78, NULL);
    Plumb__AllReduce *ar = wire_alloc(a, sizeof *ar);
    plumb__all_reduce__init(ar);
    ar->size = 2;
    ar->data = wire_f32(a, v, 2);
    e->body_case = PLUMB__ENVELOPE__BODY_ALL_REDUCE;
    e->all_reduce = ar;
    raw_send_env(&raw, e);
    expect_error(&raw, "(e) stray all-reduce", "register");
    if (!tu_wait_text(clog, "refused an all-reduce from peer", 5))
        fail_msg("(e): the coordinator's stderr does not mention the refused all-reduce");
    wire_arena_free(&a);
    raw_close(&raw);

    /* (f) a worker on another base model */
    wo = tu_spawn(olog, "worker --role reference --connect tcp://127.0.0.1:%d --model %s "
                     "--tokenizer %s --threads 1", port, other, ru_data);
    int st = 0;
    if (!tu_wait_exit(wo, 30, &st)) {
        tu_stop(wa), tu_stop(wo), tu_stop(co);
        fail_msg("(f): the worker on another model still runs after 30 s");
    }
    char *olt = tu_read_file(olog, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 0 || !strstr(olt, "base model differs"))
        fail_msg("(f): the worker on another model ended with status 0x%x:\n%s", st, olt);
    /* the refusal does not tell the client which fingerprint is welcome */
    Base *base = NULL;
    char fp[33];
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    assert_int_equal(wire_fingerprint(base, fp), 0);
    base_free(&base);
    if (strstr(olt, fp))
        fail_msg("(f): the refused worker was told the run's fingerprint %s:\n%s", fp, olt);
    free(olt);
    if (!tu_wait_text(clog, "base model differs", 5))
        fail_msg("(f): the coordinator's stderr does not mention the refused worker");

    /* (g) a flood of 3000 garbage frames: a bounded number of log lines and
     * replies (20 at once, then 10 a second), and a line that counts the
     * rest */
    raw_open(&raw, port, "raw-flood");
    double t_flood = tu_now_s();
    for (int i = 0; i < 3000; i++) raw_send(&raw, junk, sizeof junk);
    int replies = 0;
    for (Plumb__Envelope *q; (q = raw_recv(&raw, 300));) replies++, wire_free(&q);
    double flood_s = tu_now_s() - t_flood;
    raw_close(&raw);
    if (!tu_wait_text(clog, "without a log line or a reply (rate limit", 10))
        fail_msg("(g): no line counts the refusals the rate limit kept quiet:\n%s",
                 tu_read_file(clog, NULL));
    char *cl = tu_read_file(clog, NULL);
    long lines = 0;
    for (char *q = cl; (q = strstr(q, "not a plumb Envelope")); q++) lines++;
    free(cl);
    long bound = 20 + (long)(10 * flood_s) + 10;
    if (replies > bound || lines > bound + 2)
        fail_msg("(g): 3000 bad frames in %.1f s got %d replies and %ld log lines (at most %ld)",
                 flood_s, replies, lines, bound);

    /* the legitimate run goes on */
    wr = tu_spawn(rlog, "worker --role reference --connect tcp://127.0.0.1:%d --model %s/init "
                     "--tokenizer %s --threads 1", port, run, ru_data);
    int done = tu_wait_exit(co, 60, &st);
    tu_stop(co);
    char *log = tu_read_file(clog, NULL);
    int ok = done && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (ok) {
        /* the workers leave after the Shutdown */
        ok = tu_wait_exit(wa, 10, NULL) && tu_wait_exit(wr, 10, NULL);
    }
    tu_stop(wa), tu_stop(wr);
    if (!ok) fail_msg("the run did not complete after the bad input (status 0x%x):\n%s", st, log);
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 3, "run after bad input");
    json_decref(m);
    free(log);
    free((void *)run), free((void *)clog), free((void *)alog), free((void *)olog),
        free((void *)rlog);
}


/* Log-probs whose tensor claims the request's N tokens but carries 2. */
static Plumb__Envelope *lie_logprobs(WireArena *a, const Plumb__Envelope *q) {
    if (q->body_case != PLUMB__ENVELOPE__BODY_LOGPROBS) return NULL;
    long N = q->logprobs->seqs && q->logprobs->seqs->tokens
                 ? (long)(q->logprobs->seqs->tokens->data.len / sizeof(int)) : 1;
    static float two[2] = {-1.0f, -2.0f};
    Plumb__Envelope *rep = wire_envelope(a, q->id, "reference");
    Plumb__LogprobsRep *lr = wire_alloc(a, sizeof *lr);
    plumb__logprobs_rep__init(lr);
    int64_t shape = N;
    lr->logprobs = wire_tensor(a, PLUMB__DTYPE__DT_F32, two, 1, &shape);
    lr->logprobs->data.len = sizeof two;
    rep->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS_REP;
    rep->logprobs_rep = lr;
    return rep;
}

/* A well-formed rollout whose samples do not continue the prompts sent:
 * each prompt's first token changed, then two new tokens. */
static Plumb__Envelope *lie_generation(WireArena *a, const Plumb__Envelope *q) {
    if (q->body_case != PLUMB__ENVELOPE__BODY_GENERATE) return NULL;
    const Plumb__GenerateReq *g = q->generate;
    const int *pt = (const int *)g->prompts->tokens->data.data;
    const int *po = (const int *)g->prompts->offsets->data.data;
    int P = (int)(g->prompts->offsets->data.len / sizeof(int)) - 1, G = g->n, B = P * G;
    int N = 0;
    for (int p = 0; p < P; p++) N += G * (po[p + 1] - po[p] + 2);
    int *tok = wire_alloc(a, sizeof(int) * N), *off = wire_alloc(a, sizeof(int) * (B + 1));
    unsigned char *mask = wire_alloc(a, N);
    float *lp = wire_alloc(a, sizeof(float) * N);
    int at = 0;
    for (int b = 0; b < B; b++) {
        int p = b / G;
        off[b] = at;
        for (int t = po[p]; t < po[p + 1]; t++, at++)
            tok[at] = t == po[p] ? (pt[t] + 1) % 256 : pt[t], mask[at] = 0, lp[at] = 0;
        for (int k = 0; k < 2; k++, at++) tok[at] = 'x', mask[at] = 1, lp[at] = -1.0f;
    }
    off[B] = at;
    Plumb__Envelope *rep = wire_envelope(a, q->id, "actor");
    Plumb__GenerateRep *gr = wire_alloc(a, sizeof *gr);
    plumb__generate_rep__init(gr);
    gr->seqs = wire_seqs(a, tok, off, mask, B);
    gr->logprobs = wire_f32(a, lp, N);
    rep->body_case = PLUMB__ENVELOPE__BODY_GENERATED;
    rep->generated = gr;
    return rep;
}

/* A reply to request q that lies, in a (NULL: no answer). */
typedef Plumb__Envelope *(*LieFn)(WireArena *a, const Plumb__Envelope *q);

/* A run of algo whose role `raw_role` is served by a raw client (identity
 * NAME:1:0, pid 424242) that answers its requests with lie(), the other
 * roles by a real worker hosting real_roles. The coordinator must not
 * crash or hang: it stops naming field and the liar, or (unless
 * must_stop) finishes its steps. */
static void lying_worker_run(const char *name, const char *algo, const char *raw_role,
                             const char *real_roles, LieFn lie, const char *field, int must_stop) {
    char body[8192], cfg[2048], ident[64];
    ru_algo_body(body, sizeof body, algo);
    ru_config(cfg, sizeof cfg, name, body);
    snprintf(ident, sizeof ident, "%s:1:0", name);
    int port = tu_free_port();
    assert_true(port > 0);
    const char *run = strdup(tu_path("%s/%s", ru_dir, name));
    const char *clog = strdup(tu_path("%s/%s-coordinator.log", ru_dir, name));
    const char *wlog = strdup(tu_path("%s/%s-workers.log", ru_dir, name));
    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d", cfg, port);
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    Base *base = NULL;
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    char fp[33];
    assert_int_equal(wire_fingerprint(base, fp), 0);

    Raw raw;
    raw_open(&raw, port, ident);
    WireArena *a = wire_arena_new();
    raw_register(&raw, a, ident, raw_role, fp, base);
    base_free(&base);
    Plumb__Envelope *w = raw_recv(&raw, 5000);
    if (!w || w->body_case != PLUMB__ENVELOPE__BODY_WELCOME) {
        tu_stop(co);
        fail_msg("the raw client was not welcomed (%s)",
                 w && w->body_case == PLUMB__ENVELOPE__BODY_ERROR ? w->error->message : "no reply");
    }
    wire_free(&w);
    pid_t wk = tu_spawn(wlog, "worker --role %s --connect tcp://127.0.0.1:%d "
                           "--model %s/init --tokenizer %s --threads 1", real_roles, port, run, ru_data);
    /* answer every request with a lying tensor; beat while waiting */
    double end = tu_now_s() + 30, next_beat = 0;
    int lies = 0, st = 0, done = 0;
    while (tu_now_s() < end) {
        if (waitpid(co, &st, WNOHANG) == co) {
            done = 1;
            break;
        }
        if (tu_now_s() > next_beat) {
            Plumb__Envelope *h = wire_envelope(a, 0, NULL);
            Plumb__Heartbeat *hb = wire_alloc(a, sizeof *hb);
            plumb__heartbeat__init(hb);
            hb->worker_id = ident;
            h->body_case = PLUMB__ENVELOPE__BODY_HEARTBEAT;
            h->heartbeat = hb;
            raw_send_env(&raw, h);
            next_beat = tu_now_s() + 0.3;
        }
        Plumb__Envelope *q = raw_recv(&raw, 50);
        if (!q) continue;
        Plumb__Envelope *rep = q->body_case == PLUMB__ENVELOPE__BODY_SHUTDOWN ? NULL : lie(a, q);
        if (rep) {
            raw_send_env(&raw, rep);
            lies++;
        } else if (q->body_case == PLUMB__ENVELOPE__BODY_SHUTDOWN) {
            Plumb__Envelope *ok = wire_envelope(a, q->id, NULL);
            Plumb__Ok *o = wire_alloc(a, sizeof *o);
            plumb__ok__init(o);
            ok->body_case = PLUMB__ENVELOPE__BODY_OK;
            ok->ok = o;
            raw_send_env(&raw, ok);
        }
        wire_free(&q);
    }
    wire_arena_free(&a);
    raw_close(&raw);
    tu_stop(co);
    int wst = 0;
    if (!tu_wait_exit(wk, 10, &wst)) tu_stop(wk);
    char *log = tu_read_file(clog, NULL);
    if (!done) fail_msg("the coordinator still runs 30 s after a lying reply:\n%s", log);
    if (lies == 0) fail_msg("the raw %s was never asked (test setup):\n%s", raw_role, log);
    if (!WIFEXITED(st)) fail_msg("the coordinator crashed (status 0x%x):\n%s", st, log);
    if (WEXITSTATUS(st) != 0) {
        /* stopping is allowed, with the place named: a line about the bad
         * field must also name its sender */
        int named = 0, about = 0;
        char *copy = strdup(log), *save = NULL;
        for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (!strstr(l, field) || strstr(l, "registered")) continue;
            about = 1;
            named |= strstr(l, name) || strstr(l, "424242");
        }
        free(copy);
        if (!about || !named)
            fail_msg("the coordinator stopped on a lying reply without naming the field (%s) and "
                     "the worker (%s, pid 424242) that sent it:\n%s", field, ident, log);
    } else {
        if (must_stop) fail_msg("the coordinator took a lying %s and went on:\n%s", field, log);
        json_t *m = tu_metrics_load(run);
        tu_assert_steps(m, 0, 3, "run after a lying reply");
        json_decref(m);
    }
    free(log);
    free((void *)run), free((void *)clog), free((void *)wlog);
}

/* One client sends more registrations than the pool has slots, none of
 * them followed by a heartbeat: only POOL_MAX_PENDING wait at a time (the
 * oldest is dropped, and told), so the pool never fills, and a real worker
 * that registers right after them is accepted and the run completes. */
static void test_pool_slots(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    ru_algo_body(body, sizeof body, "sft");
    ru_config(cfg, sizeof cfg, "slots", body);
    int port = tu_free_port();
    const char *run = strdup(tu_path("%s/slots", ru_dir));
    const char *clog = strdup(tu_path("%s/slots-coordinator.log", ru_dir));
    pid_t co = tu_spawn(clog, "coordinator %s transport.endpoint=tcp://127.0.0.1:%d "
                        "transport.heartbeat_ms=300 transport.dead_after_ms=1500 "
                        "transport.startup_timeout_s=60", cfg, port);
    if (!tu_wait_text(clog, "listening on", 20)) {
        tu_stop(co);
        fail_msg("the coordinator did not start:\n%s", tu_read_file(clog, NULL));
    }
    Base *base = NULL;
    char fp[33];
    assert_int_equal(base_load(&base, tu_path("%s/init", run)), 0);
    assert_int_equal(wire_fingerprint(base, fp), 0);
    Raw raw;
    raw_open(&raw, port, "squatter");
    WireArena *a = wire_arena_new();
    int welcomed = 0, dropped = 0, full = 0;
    for (int i = 0; i < POOL_MAX_WORKERS + 8; i++) {
        raw_register(&raw, a, tu_path("squatter:%d", i), "reference", fp, base);
        /* its Welcome, and (past the queue's size) the drop of the oldest */
        for (Plumb__Envelope *w; (w = raw_recv(&raw, 2000));) {
            int welcome = w->body_case == PLUMB__ENVELOPE__BODY_WELCOME;
            welcomed += welcome;
            if (w->body_case == PLUMB__ENVELOPE__BODY_ERROR) {
                full += strstr(w->error->message, "full") != NULL;
                dropped += strstr(w->error->message, "dropped") != NULL;
            }
            wire_free(&w);
            if (welcome) break;
        }
    }
    base_free(&base);
    wire_arena_free(&a);
    raw_close(&raw);
    if (welcomed != POOL_MAX_WORKERS + 8 || full ||
        !tu_wait_text(clog, "registrations wait for their first heartbeat", 5)) {
        tu_stop(co);
        fail_msg("%d of %d squatters welcomed, %d told the pool is full, %d told they were "
                 "dropped:\n%s", welcomed, POOL_MAX_WORKERS + 8, full, dropped,
                 tu_read_file(clog, NULL));
    }
    pid_t wk = tu_spawn(tu_path("%s/slots-worker.log", ru_dir), "worker --role actor --connect "
                        "tcp://127.0.0.1:%d --model %s/init --tokenizer %s --threads 1", port,
                        run, ru_data);
    int st = 0, done = tu_wait_exit(co, 60, &st);
    tu_stop(co);
    int wst = 0;
    if (!tu_wait_exit(wk, 10, &wst)) tu_stop(wk);
    if (!done || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the run did not complete after the pool was filled (status 0x%x):\n%s\n%s", st,
                 tu_read_file(clog, NULL), tu_read_file(tu_path("%s/slots-worker.log", ru_dir), NULL));
    json_t *m = tu_metrics_load(run);
    tu_assert_steps(m, 0, 3, "run after the squatters");
    json_decref(m);
    free((void *)run), free((void *)clog);
}

/* A raw reference answers log-prob requests with a tensor that lies
 * about its length. */
static void test_bad_reply_shape(void **state) {
    (void)state;
    lying_worker_run("liar", "dpo", "reference", "actor,reference", lie_logprobs, "logprobs", 0);
}

/* A raw actor answers generate requests with well-formed samples that do
 * not continue the prompts it was sent: refused as a bad reply. */
static void test_bad_generation(void **state) {
    (void)state;
    lying_worker_run("liar-gen", "grpo", "actor", "reference,reward", lie_generation, "generate.seqs", 1);
}

/* (e) An unknown config key: plumb train exits 2 naming the key and its
 * file and line, and starts nothing. */
static void test_unknown_key(void **state) {
    (void)state;
    char body[8192], cfg[2048];
    snprintf(body, sizeof body, "algo.name: sft\ndata.train: %s/sft.jsonl\noptim.lrr: 3\n", ru_data);
    ru_config(cfg, sizeof cfg, "badkey", body);
    char *text = tu_read_file(cfg, NULL), *at = strstr(text, "optim.lrr");
    int line = 1;
    for (char *p = text; p < at; p++) line += *p == '\n';
    free(text);
    char *out;
    int rc = tu_plumb(&out, "train %s", cfg);
    assert_int_equal(rc, 2);
    char want[2100];
    snprintf(want, sizeof want, "%s:%d:", cfg, line);
    if (!strstr(out, want) || !strstr(out, "optim.lrr"))
        fail_msg("expected a message naming %s and 'optim.lrr', got:\n%s", want, out);
    struct stat st;
    assert_int_not_equal(stat(tu_path("%s/badkey/logs", ru_dir), &st), 0);
    free(out);
}

int main(int argc, char **argv) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    if (argc > 1) cmocka_set_test_filter(argv[1]); /* test_hostile test_x */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_bad_reply_shape),
        cmocka_unit_test(test_bad_generation),
        cmocka_unit_test(test_pool_slots),
        cmocka_unit_test(test_unknown_key),
    };
    return cmocka_run_group_tests(tests, ru_setup, NULL);
}
