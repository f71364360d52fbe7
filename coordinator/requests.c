/* requests.c: what the steps ask of the workers: envelopes, calls and
 * their timing, checked replies, and a trained role's fan-out to its
 * data-parallel replicas (run_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "coordinator/run_impl.h"

/* A train reply's metrics under prefix; one named rollout/... describes
 * the rollout (the actor's rollout/logprob_diff_max) and keeps its name,
 * when the rollout was made by the policy the trainer started from. */
static void put_train_metrics(Run *r, const char *prefix, const Plumb__TrainRep *t) {
    for (size_t i = 0; i < t->n_metrics; i++) {
        char name[160];
        const char *n = t->metrics[i]->name;
        int rollout = !strncmp(n, "rollout/", 8);
        /* a rollout made by an older policy (algo.max_staleness) is not
         * the trainer's to describe */
        if (rollout && r->rollout_stale) continue;
        snprintf(name, sizeof name, "%s%s", rollout ? "" : prefix, n);
        stats_put(&r->stats, name, t->metrics[i]->value);
    }
}

int req_call(Run *r, PoolCall *calls, int n) {
    /* a worker that came after a trained role's state was lost has the
     * wrong state: nothing more is asked before the run goes back */
    if (r->lost[0]) return pl_fail(PL_EPEER, "%s", r->lost);
    int rc = pool_call(r->pool, calls, n);
    /* the group's critical path: the longest handling time is compute, the
     * rest of the longest call is transport and queueing */
    double comp = 0, wall = 0, sync = 0;
    for (int i = 0; i < n; i++) {
        if (calls[i].compute_s > comp) comp = calls[i].compute_s;
        if (calls[i].sync_s > sync) sync = calls[i].sync_s;
        r->sync_bytes += calls[i].sync_bytes;
        if (calls[i].wall_s > wall) wall = calls[i].wall_s;
        r->serialize_s += calls[i].pack_s;
    }
    r->compute_s += comp;
    r->sync_s += sync;
    r->transport_s += wall > comp ? wall - comp : 0;
    return rc;
}

/* Names the worker and the request of a bad reply in the error. */
int req_bad_reply(Run *r, const PoolCall *c, int rc) {
    char who[256];
    return pl_wrap(rc, "the reply of %s to request %llu",
                   pool_worker_name(r->pool, c->worker, who, sizeof who),
                   (unsigned long long)c->req->id);
}

int req_expect(Run *r, const PoolCall *c, Plumb__Envelope__BodyCase kind, const char *what) {
    if (!c->rep || c->rep->body_case != kind)
        return req_bad_reply(r, c,
                             pl_fail(PL_EPROTO, "answers %s with message kind %d", what,
                                     c->rep ? (int)c->rep->body_case : -1));
    return 0;
}

int req_first(Run *r, RoleKind k) {
    int idx[POOL_MAX_WORKERS];
    int n = pool_await_role(r->pool, k, idx, POOL_MAX_WORKERS);
    if (n < 0) return n;
    if (n == 0) return pl_fail(PL_EPEER, "no live worker hosts the %s role", role_kind_name(k));
    return idx[0];
}

Plumb__Envelope *req_env(WireArena *a, RoleKind k) {
    return wire_envelope(a, 0, role_kind_name(k));
}

Plumb__Seqs *req_packed(WireArena *a, const Packed *p) {
    return wire_seqs(a, p->tokens, p->offsets, p->mask, p->B);
}

Plumb__Envelope *req_logprobs(WireArena *a, RoleKind k, const Packed *p, float temp) {
    Plumb__Envelope *e = req_env(a, k);
    Plumb__LogprobsReq *q = wire_alloc(a, sizeof *q);
    plumb__logprobs_req__init(q);
    q->seqs = req_packed(a, p);
    q->temperature = temp;
    e->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS;
    e->logprobs = q;
    return e;
}

Plumb__Envelope *req_values(WireArena *a, RoleKind k, const Packed *p) {
    Plumb__Envelope *e = req_env(a, k);
    Plumb__ValuesReq *q = wire_alloc(a, sizeof *q);
    plumb__values_req__init(q);
    q->seqs = req_packed(a, p);
    e->body_case = PLUMB__ENVELOPE__BODY_VALUES;
    e->values = q;
    return e;
}

Plumb__Envelope *req_train(WireArena *a, RoleKind k, const Run *r, uint64_t seed) {
    Plumb__Envelope *e = req_env(a, k);
    Plumb__TrainReq *t = wire_alloc(a, sizeof *t);
    plumb__train_req__init(t);
    t->epochs = r->cfg->epochs;
    t->minibatches = r->cfg->minibatches;
    t->seed = seed;
    e->body_case = PLUMB__ENVELOPE__BODY_TRAIN;
    e->train = t;
    return e;
}

int req_f32(Run *r, const PoolCall *c, const Plumb__Tensor *t, long n, const char *what,
            float **out) {
    int rc = wire_get_f32(t, n, 1, what, out);
    return rc < 0 ? req_bad_reply(r, c, rc) : 0;
}

int req_score(Run *r, WireArena *a, const Records *recs, const long *which, int G, const Packed *p,
              PoolCall *c) {
    int w = req_first(r, ROLE_REWARD);
    if (w < 0) return w;
    Plumb__Envelope *e = req_env(a, ROLE_REWARD);
    Plumb__ScoreReq *q = wire_alloc(a, sizeof *q);
    plumb__score_req__init(q);
    q->seqs = req_packed(a, p);
    q->n_answers = p->B;
    q->answers = wire_alloc(a, sizeof(char *) * (p->B ? p->B : 1));
    for (int b = 0; b < p->B; b++) {
        const char *ans = recs->r[which[b / G]].answer;
        q->answers[b] = (char *)(ans ? ans : "");
    }
    e->body_case = PLUMB__ENVELOPE__BODY_SCORE;
    e->score = q;
    c->worker = w;
    c->req = e;
    return 0;
}

int req_train_add(Run *r, WireArena *a, RoleKind k, Plumb__Envelope *e, PoolCall *calls, int cap) {
    int *idx = r->trainers[k], n = r->n_trainers[k];
    if (n == 0) {
        n = r->n_trainers[k] = pool_workers_with(r->pool, k, idx, POOL_MAX_WORKERS);
        if (n == 0) return pl_fail(PL_EPEER, "no live worker hosts the %s role", role_kind_name(k));
        /* train.replicas: the first ones train, the others only generate */
        if (k == ROLE_ACTOR && r->cfg->train_replicas > 0 && n > r->cfg->train_replicas)
            n = r->n_trainers[k] = r->cfg->train_replicas;
    }
    if (n > cap) return pl_fail(PL_EINVAL, "%d %s replicas: at most %d", n, role_kind_name(k), cap);
    if (n == 1 && !pool_worker(r->pool, idx[0])->alive) {
        /* the trainer died: the worker that took its place (with the live
         * copy of its state, launch.keep_state) trains from now on */
        int live[POOL_MAX_WORKERS];
        int m = pool_await_role(r->pool, k, live, POOL_MAX_WORKERS);
        if (m < 0) return m;
        if (m == 0) return pl_fail(PL_EPEER, "the %s trainer died and no worker took its place",
                                   role_kind_name(k));
        idx[0] = live[0];
    }
    memset(calls, 0, sizeof *calls * (size_t)n);
    calls[0].worker = idx[0], calls[0].req = e;
    if (n == 1) {
        /* launch.keep_state: the trainer keeps its state with the update */
        char dir[CFG_PATH + 64];
        if (r->keep_state && strcmp(pool_worker(r->pool, idx[0])->host, r->host) != 0) {
            /* the copy would be on the trainer's disk, not where a
             * replacement starts: keep none, and let a death stop the run */
            r->keep_state = 0;
            pool_set_replaceable(r->pool, coord_needed_roles(r->cfg) & ~r->algo->trained);
            fprintf(stderr, "plumb coordinator: launch.keep_state: the %s trainer runs on %s, not "
                            "on this host; its state is not kept, and a trainer that dies stops "
                            "the run\n", role_kind_name(k), pool_worker(r->pool, idx[0])->host);
        }
        if (r->keep_state) {
            snprintf(dir, sizeof dir, "%s/.live/step-%06ld", r->cfg->run_dir, r->step + 1);
            e->train->keep_dir = wire_strdup(a, dir);
        }
        return 1;
    }
    /* a replica that dies is replaced with a survivor's state (dp_recover):
     * its other requests can go to any live worker of the role */
    pool_set_replaceable(r->pool, pool_replaceable(r->pool) | (1u << k));
    uint64_t group = ++r->dp_groups;
    for (int i = 0; i < n; i++) {
        Plumb__Envelope *ce = i ? wire_alloc(a, sizeof *ce) : e;
        Plumb__TrainReq *t = i ? wire_alloc(a, sizeof *t) : e->train;
        Plumb__DataParallel *dp = wire_alloc(a, sizeof *dp);
        if (!ce || !t || !dp) return pl_fail(PL_ENOMEM, "train requests: out of memory");
        if (i) *ce = *e, *t = *e->train, ce->train = t;
        plumb__data_parallel__init(dp);
        dp->group = group, dp->rank = i, dp->size = n;
        dp->sync_from = r->dp_sync[k];
        t->dp = dp;
        calls[i].worker = idx[i], calls[i].req = ce;
    }
    return n;
}

int req_train_done(Run *r, RoleKind k, const PoolCall *calls, int n, const char *prefix) {
    int i0 = -1; /* given_up 2: a replica replaced after its group's step */
    for (int i = 0; i < n; i++) {
        if (calls[i].given_up == 2) continue;
        PL_TRY(req_expect(r, &calls[i], PLUMB__ENVELOPE__BODY_TRAIN_REP, "train"));
        if (i0 < 0) i0 = i;
    }
    if (i0 < 0) return pl_fail(PL_EPEER, "no %s replica answered the train request", role_kind_name(k));
    const Plumb__TrainRep *t0 = calls[i0].rep->train_rep;
    for (int i = i0 + 1; i < n; i++) {
        if (calls[i].given_up == 2) continue;
        const Plumb__TrainRep *t = calls[i].rep->train_rep;
        if (t->params_hash != t0->params_hash || t->adapter_version != t0->adapter_version) {
            char a[256], b[256];
            return pl_fail(
                PL_EPEER,
                "the %s replicas diverged: %s holds parameters %016llx (version %llu), "
                "%s %016llx (version %llu)",
                role_kind_name(k), pool_worker_name(r->pool, calls[i0].worker, a, sizeof a),
                (unsigned long long)t0->params_hash, (unsigned long long)t0->adapter_version,
                pool_worker_name(r->pool, calls[i].worker, b, sizeof b),
                (unsigned long long)t->params_hash, (unsigned long long)t->adapter_version);
        }
    }
    put_train_metrics(r, prefix, t0);
    if (k == ROLE_ACTOR) r->adapter_version = t0->adapter_version;
    const char *kept = calls[0].req->train ? calls[0].req->train->keep_dir : NULL;
    if (n == 1 && kept && *kept) checkpoint_kept(r, k, kept);
    for (int i = 0; i < n; i++)
        if (calls[i].given_up != 2)
            ((PoolWorker *)pool_worker(r->pool, calls[i].worker))->adapter_version =
                t0->adapter_version;
    if (n > 1 && r->dp_sync[k] && calls[0].req->train->dp->sync_from == r->dp_sync[k])
        r->dp_sync[k] = 0; /* the new replica took the state */
    if (n > 1) {
        char name[64];
        snprintf(name, sizeof name, "%sreplicas", prefix);
        stats_put(&r->stats, name, n);
    }
    return 0;
}

static const Plumb__DataParallel *call_dp(const PoolCall *c) {
    const Plumb__TrainReq *t = c->req->body_case == PLUMB__ENVELOPE__BODY_TRAIN ? c->req->train : NULL;
    return t && t->dp && t->dp->size > 1 ? t->dp : NULL;
}

static int call_ok(const PoolCall *c) {
    return c->rep && c->rep->body_case == PLUMB__ENVELOPE__BODY_TRAIN_REP;
}

/* After a failed set of train calls: for each data-parallel group with a
 * dead rank and a live one, a new worker of the role takes each dead rank
 * (r->trainers). A group that finished its step without the dead (a live
 * rank answered) is done, and the role's next call first syncs the new
 * replica (r->dp_sync); one that did not is sent again with sync_from, every
 * rank first taking a survivor's state (a failed call leaves each survivor
 * as it was before). Groups given up without a death are sent again as
 * they were. Returns 1 to send the unfinished calls again, 0 when the
 * failure stands, < 0 when no worker came in time. */
static int dp_recover(Run *r, PoolCall *c, int n) {
    char why[1024], nm[256], nm2[256];
    snprintf(why, sizeof why, "%s", pl_error());
    int any = 0;
    for (int i = 0; i < n; i++)
        if (c[i].given_up != 2 && !pool_worker(r->pool, c[i].worker)->alive) {
            if (!call_dp(&c[i])) return 0; /* the pool could not replace it */
            any = 1;
        }
    if (!any) return 0;
    for (int i = 0; i < n; i++) {
        const Plumb__DataParallel *dp = call_dp(&c[i]);
        int first = dp != NULL;
        for (int j = 0; first && j < i; j++)
            if (call_dp(&c[j]) && call_dp(&c[j])->group == dp->group) first = 0;
        if (!first) continue;
        RoleKind k = ROLE_ACTOR;
        role_kind_parse(c[i].req->role, &k);
        int in[POOL_MAX_WORKERS], m = 0, root = -1, done = -1, dead = 0;
        for (int j = i; j < n; j++)
            if (call_dp(&c[j]) && call_dp(&c[j])->group == dp->group) in[m++] = j;
        for (int q = 0; q < m; q++) {
            const PoolCall *cj = &c[in[q]];
            if (cj->given_up == 2) continue;
            if (!pool_worker(r->pool, cj->worker)->alive) dead++;
            else if (root < 0) root = in[q];
            if (call_ok(cj)) done = in[q];
        }
        if (dead && root < 0) return 0; /* no survivor to take the state from */
        for (int q = 0; q < m; q++) {
            PoolCall *cj = &c[in[q]];
            int rank = call_dp(cj)->rank;
            if (cj->given_up == 2 || pool_worker(r->pool, cj->worker)->alive) continue;
            fprintf(stderr, "plumb coordinator: %s replica rank %d, %s, died; waiting up to %d s "
                            "for a worker to take its place\n",
                    role_kind_name(k), rank, pool_worker_name(r->pool, cj->worker, nm, sizeof nm),
                    r->cfg->startup_timeout_s);
            int w = pool_await_other(r->pool, k, r->trainers[k], r->n_trainers[k]);
            if (w < 0) return pl_wrap(w, "%s", why);
            r->trainers[k][rank] = cj->worker = w;
            int src = done >= 0 ? done : root;
            fprintf(stderr, "plumb coordinator: %s takes rank %d of the %s replicas, with the "
                            "state of rank %d (%s)\n", pool_worker_name(r->pool, w, nm, sizeof nm),
                    rank, role_kind_name(k), call_dp(&c[src])->rank,
                    pool_worker_name(r->pool, c[src].worker, nm2, sizeof nm2));
            if (done >= 0) cj->given_up = 2; /* the step is done: synced at the next call */
        }
        if (done >= 0) {
            if (dead) r->dp_sync[k] = call_dp(&c[done])->rank + 1;
            continue;
        }
        uint64_t group = ++r->dp_groups;
        for (int q = 0; q < m; q++) {
            Plumb__DataParallel *d = c[in[q]].req->train->dp;
            d->group = group;
            d->sync_from = dead ? call_dp(&c[root])->rank + 1 : d->sync_from;
        }
    }
    return 1;
}

int req_train_run(Run *r, PoolCall *c, int n) {
    int rc = req_call(r, c, n);
    for (int tries = 0; rc < 0 && tries < 4; tries++) {
        int again = dp_recover(r, c, n);
        if (again <= 0) {
            if (again < 0) rc = again;
            break;
        }
        /* the calls without an answer, again */
        PoolCall sub[POOL_MAX_WORKERS];
        int map[POOL_MAX_WORKERS], m = 0;
        for (int i = 0; i < n && m < POOL_MAX_WORKERS; i++)
            if (!call_ok(&c[i]) && c[i].given_up != 2) {
                wire_free(&c[i].rep);
                sub[m] = c[i], map[m++] = i;
            }
        rc = req_call(r, sub, m);
        for (int j = 0; j < m; j++) c[map[j]] = sub[j];
    }
    return rc;
}

int req_train_call(Run *r, RoleKind k, Plumb__Envelope *e, WireArena *a, const char *prefix) {
    PoolCall c[POOL_MAX_WORKERS];
    int n = req_train_add(r, a, k, e, c, POOL_MAX_WORKERS);
    if (n < 0) return n;
    int rc = req_train_run(r, c, n);
    if (rc == 0) rc = req_train_done(r, k, c, n, prefix);
    pool_calls_free(c, n);
    return rc;
}

int req_pair(Run *r, const Records *recs, const long *which, int n, RoleKind k, Packed *pc,
             Packed *pr, float *x[2]) {
    int score_ = k == ROLE_REWARD;
    x[0] = x[1] = NULL;
    memset(pr, 0, sizeof *pr);
    int rc = pack_records(recs, which, n, 0, pc);
    if (rc == 0) rc = pack_records(recs, which, n, 1, pr);
    WireArena *a = wire_arena_new();
    PoolCall cs[2];
    memset(cs, 0, sizeof cs);
    if (rc == 0 && !a) rc = pl_fail(PL_ENOMEM, "pair requests: out of memory");
    for (int s = 0; rc == 0 && s < 2; s++) {
        const Packed *p = s ? pr : pc;
        if (score_) {
            rc = req_score(r, a, recs, which, 1, p, &cs[s]);
        } else {
            cs[s].worker = req_first(r, k);
            if (cs[s].worker < 0) rc = cs[s].worker;
            cs[s].req = req_logprobs(a, k, p, 1.0f);
        }
    }
    if (rc == 0) rc = req_call(r, cs, 2);
    for (int s = 0; rc == 0 && s < 2; s++) {
        const Packed *p = s ? pr : pc;
        if (score_) {
            rc = req_expect(r, &cs[s], PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
            if (rc == 0)
                rc = req_f32(r, &cs[s], cs[s].rep->score_rep->scores, p->B, "scores", &x[s]);
        } else {
            rc = req_expect(r, &cs[s], PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "logprobs");
            if (rc == 0)
                rc = req_f32(r, &cs[s], cs[s].rep->logprobs_rep->logprobs, p->N, "logprobs", &x[s]);
        }
    }
    pool_calls_free(cs, 2);
    wire_arena_free(&a);
    return rc;
}
