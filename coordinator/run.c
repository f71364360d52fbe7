/* run.c: a run from set-up to teardown (run.h): the model's identity,
 * the data, the pool and its workers, the eval of the starting point, the
 * step loop with its metrics, evals and checkpoints, and the final export.
 * What a step does is the algorithm's (algos.h). */
#define _GNU_SOURCE
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"
#include "coordinator/run_impl.h"
#include "model/weights.h"

unsigned coord_needed_roles(const RunConfig *c) {
    const AlgoDesc *d = algos_find(c->algo);
    return d ? d->roles(c) : 1u << ROLE_ACTOR;
}

unsigned coord_trained_roles(const RunConfig *c) {
    const AlgoDesc *d = algos_find(c->algo);
    return d ? d->trained : 1u << ROLE_ACTOR;
}

int coord_keeps_state(const RunConfig *c) {
    unsigned t = coord_trained_roles(c);
    return c->keep_state && !((t & (1u << ROLE_ACTOR)) && c->full_finetune) &&
           !((t & (1u << ROLE_REWARD)) && c->reward_full_finetune) && c->lora_rank > 0;
}

static int load_data(Run *r) {
    const RunConfig *c = r->cfg;
    DsFormat fmt = r->algo->data;
    ds_config_init(&r->dc, r->tok);
    r->dc.max_prompt_len = c->max_prompt_len;
    r->dc.max_response_len = c->max_response_len;
    PL_TRY(ds_config_chat(&r->dc, c->tokenizer, strcmp(c->chat, "auto") ? c->chat : NULL));
    PL_TRY(ds_config_chat_date(&r->dc, c->chat_date, "data.chat_date"));
    if (!strncmp(c->train_path, "redis://", 8)) PL_TRY(stream_open(r));
    else PL_TRY(records_load(&r->train, "data.train", c->train_path, &r->dc, fmt, r->hooks->quiet));
    if (c->eval_path[0])
        PL_TRY(
            records_load(&r->eval, "data.eval", c->eval_path, &r->dc, DS_PROMPT, r->hooks->quiet));
    if (c->eval_pref_path[0])
        PL_TRY(records_load(&r->eval_pref, "data.eval_pref", c->eval_pref_path, &r->dc, DS_PREF,
                            r->hooks->quiet));
    if (r->stream) return 0; /* stream_open set the order */
    r->order.n = r->train.n;
    r->order.perm = malloc(sizeof(long) * r->train.n);
    PL_CHECK_ALLOC(r->order.perm);
    r->order.epoch = r->order.block = -1;
    r->order.seed = c->seed;
    r->order.shuffle = c->shuffle;
    return 0;
}

static void run_free(Run *r) {
    refcache_free(&r->ref);
    refcache_free(&r->eval_ref);
    pending_free_all(r);
    stream_free(r);
    records_free(&r->train);
    records_free(&r->eval);
    records_free(&r->eval_pref);
    free(r->order.perm);
    stats_free(&r->stats);
    ds_config_free(&r->dc);
    tok_free(&r->tok);
    metrics_close(&r->metrics);
}

static void progress(Run *r, double t_start, long first_step) {
    const RunConfig *c = r->cfg;
    if (r->hooks->quiet || (r->step % c->log_every != 0 && r->step != c->steps)) return;
    double el = pl_now_s() - t_start;
    double tps = stats_get(&r->stats, "perf/tokens_per_s");
    double reward = stats_get(&r->stats, "rollout/reward_mean");
    if (isnan(reward)) reward = stats_get(&r->stats, "train/accuracy");
    double kl = stats_get(&r->stats, "train/kl");
    if (isnan(kl)) kl = stats_get(&r->stats, "rollout/kl");
    long done = r->step - first_step;
    /* metrics_progress estimates from elapsed / step: scale to the steps run here */
    double scaled = done > 0 ? el * r->step / done : NAN;
    metrics_progress(stdout, r->step, c->steps, reward, kl, tps, scaled,
                     (long)stats_get(&r->stats, "run/restarts"));
}

/* PoolOptions.on_registered: a worker that loaded the live copy of the
 * actor's state holds its adapter version. */
static void on_registered(void *ctx, int i) {
    Run *r = ctx;
    PoolWorker *w = (PoolWorker *)pool_worker(r->pool, i);
    if (w && r->live_dir[ROLE_ACTOR][0] && (w->roles & (1u << ROLE_ACTOR)))
        w->adapter_version = r->live_version;
}

/* Whether dead worker i held the only state of a trained role: it was the
 * role's trainer (or the role has none yet), no copy is kept
 * (launch.keep_state) and no other replica lives. Then r->lost says so,
 * and the run goes back to its last checkpoint (coord_run). */
static void check_lost(Run *r, int i) {
    const PoolWorker *w = pool_worker(r->pool, i);
    if (r->keep_state || r->lost[0] || !w->accepted) return;
    for (int k = 0; k < ROLE_NKINDS; k++) {
        if (!(w->roles & r->algo->trained & (1u << k))) continue;
        int n = r->n_trainers[k], mine = n == 0, other = 0;
        for (int j = 0; j < n; j++)
            if (r->trainers[k][j] == i) mine = 1;
            else if (pool_worker(r->pool, r->trainers[k][j])->alive) other = 1;
        if (!mine || other) continue;
        char nm[256];
        snprintf(r->lost, sizeof r->lost,
                 "%s held the %s role's state, and no copy of it is kept (%s)",
                 pool_worker_name(r->pool, i, nm, sizeof nm), role_kind_name((RoleKind)k),
                 r->cfg->keep_state ? "full fine-tuning, or a trainer on another host"
                                    : "launch.keep_state is off");
        r->lost_at = pl_now_s();
        return;
    }
}

/* PoolOptions.on_dead: a worker of this host that stopped beating may
 * hang; the launcher (when there is one) ends it so that it is replaced. */
static void on_dead(void *ctx, int i) {
    Run *r = ctx;
    const PoolWorker *w = pool_worker(r->pool, i);
    if (!w) return;
    if (r->hooks->hung_pid && !strcmp(w->host, r->host)) r->hooks->hung_pid(r->hooks->ctx, w->pid);
    check_lost(r, i);
}

static int tick_pass(void *ctx) {
    Run *r = ctx;
    int rc = r->hooks->tick ? r->hooks->tick(r->hooks->ctx) : 0;
    if (rc < 0) r->stopped = 1; /* a signal, or the launcher: no going back */
    metrics_alive(r->metrics); /* the registry's heartbeat, through long steps */
    if (rc == 0 && r->hooks->dead_pid && r->pool)
        for (int pid; (pid = r->hooks->dead_pid(r->hooks->ctx)) > 0;)
            pool_mark_dead(r->pool, pid, r->host);
    return rc;
}

/* A run that failed because a trained role's only state died with its
 * worker (Run.lost): coord_run starts it again from its last checkpoint. */
typedef struct {
    long step;               /* the steps it had done                         */
    long recoveries;         /* its pool's, for run/restarts                  */
    double lost_at;          /* when the state was lost (pl_now_s)            */
    double started_wall;     /* status.json's start, kept by the next         */
    char why[2048];
} Rewind;

static int run_once(RunConfig *cfg, const CoordHooks *hooks, Rewind *rw) {
    Run run, *r = &run;
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->hooks = hooks;
    r->run_id = hooks->run_id;
    r->algo = algos_find(cfg->algo);
    if (!r->algo)
        return pl_fail(PL_ENOTSUP, "algo.name %s is not driven by the coordinator",
                       algo_name_str(cfg->algo));
    int rc = 0;
    if (r->hooks->resume)
        PL_TRY(checkpoint_resume_dir(r->hooks->resume, r->resume_from, sizeof r->resume_from));
    PL_TRY(coord_prepare_model(cfg));
    PL_TRY(pl_mkdirs(cfg->run_dir));

    /* the base model's identity, which every worker must match */
    Base *base = NULL;
    rc = base_load(&base, cfg->model_path);
    if (rc < 0) return pl_wrap(rc, "model.path %s", cfg->model_path);
    PoolOptions po = {0};
    rc = wire_fingerprint(base, po.fingerprint);
    po.vocab = base->cfg.vocab_size, po.max_seq = base->cfg.max_seq_len;
    r->lim.vocab = po.vocab, r->lim.max_seq = po.max_seq;
    r->eos = base->cfg.n_eos > 0 ? base->cfg.eos_ids[0] : -1;
    base_free(&base);
    PL_TRY(rc);
    PL_TRY(roles_fingerprints(r)); /* and of each role's own model */

    if ((rc = tok_load(&r->tok, cfg->tokenizer)) < 0) {
        run_free(r);
        return pl_wrap(rc, "model.tokenizer %s", cfg->tokenizer);
    }
    if (tok_eos(r->tok) >= 0) r->eos = tok_eos(r->tok);
    if ((rc = load_data(r)) < 0) {
        run_free(r);
        return rc;
    }
    r->kl.kl_coef = cfg->kl_coef;
    r->kl.target = cfg->kl_target;
    r->kl.horizon = cfg->kl_horizon;
    if (r->resume_from[0] && (rc = checkpoint_load_state(r)) < 0) {
        run_free(r);
        return rc;
    }
    long first_step = r->step;

    /* the resolved config, and the metrics (a resumed run keeps only the
     * lines up to its checkpoint) */
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/config.yaml", cfg->run_dir);
    FILE *f = fopen(path, "w");
    if (f) runcfg_write(cfg, f), fclose(f);
    if (r->resume_from[0])
        metrics_truncate_after(cfg->run_dir, r->step);
    else {
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->run_dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/samples.jsonl", cfg->run_dir);
        unlink(path);
    }
    if ((rc = metrics_open(&r->metrics, cfg->run_dir, cfg->redis_url, cfg->redis_stream)) < 0) {
        run_free(r);
        return rc;
    }
    metrics_restart(r->metrics, r->resume_from[0] ? r->step : -1);

    po.server.endpoint = cfg->endpoint;
    po.server.secret_key = cfg->secret_key[0] ? cfg->secret_key : NULL;
    po.server.authorized_keys = cfg->authorized_keys[0] ? cfg->authorized_keys : NULL;
    po.server.max_message = (size_t)cfg->max_message_mb << 20;
    po.heartbeat_ms = cfg->heartbeat_ms;
    po.dead_after_ms = cfg->dead_after_ms;
    po.request_timeout_ms = cfg->request_timeout_s * 1000;
    po.role_config = roles_config;
    po.on_registered = on_registered;
    po.on_dead = on_dead;
    /* a dead worker's requests go to the one that takes its place: for an
     * untrained role it needs no state, for a trained one the copy each
     * update keeps (launch.keep_state) */
    if (gethostname(r->host, sizeof r->host - 1) != 0) strcpy(r->host, "unknown");
    r->keep_state = coord_keeps_state(cfg);
    if (r->keep_state) { /* copies an earlier coordinator of this run kept */
        snprintf(path, sizeof path, "%s/.live", cfg->run_dir);
        pl_rm_rf(path);
    }
    po.replaceable = coord_needed_roles(cfg) & (r->keep_state ? ~0u : ~r->algo->trained);
    po.replace_wait_ms = cfg->startup_timeout_s * 1000;
    po.ctx = r;
    po.tick = tick_pass;
    if ((rc = pool_new(&r->pool, &po)) < 0) {
        run_free(r);
        return rc;
    }
    r->started_wall = hooks->started_wall;
    status_write(r, "running", NULL);
    if (!r->hooks->quiet)
        fprintf(stderr, "plumb coordinator: %s run, %d steps, listening on %s\n",
                algo_name_str(cfg->algo), cfg->steps, pool_endpoint(r->pool));
    if (r->hooks->on_bound) rc = r->hooks->on_bound(r->hooks->ctx, pool_endpoint(r->pool));
    if (rc == 0)
        rc = pool_wait_roles(r->pool, coord_needed_roles(cfg),
                             r->hooks->min_workers > cfg->min_workers ? r->hooks->min_workers
                                                                      : cfg->min_workers,
                             cfg->startup_timeout_s * 1000);
    /* a coordinator started again after one died: the time until its
     * workers are back goes into its first step's perf/recovery_s */
    double recovery_s = rc == 0 && r->hooks->down_since > 0 ? pl_now_s() - r->hooks->down_since : 0;
    if (rc == 0 && r->resume_from[0]) { /* the actors loaded the checkpoint's adapter */
        int idx[POOL_MAX_WORKERS];
        int n = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
        for (int i = 0; i < n; i++)
            ((PoolWorker *)pool_worker(r->pool, idx[i]))->adapter_version = r->adapter_version;
    }

    double t_start = pl_now_s();
    if (rc == 0 && first_step == 0) {
        /* eval of the starting point, logged as step 0 */
        rc = r->algo->eval(r);
        if (rc == 0 && r->stats.n)
            rc = metrics_log(r->metrics, 0, (const char *const *)r->stats.names, r->stats.values,
                             r->stats.n);
        if (rc == 0 && !r->hooks->quiet && !isnan(stats_get(&r->stats, "eval/accuracy")))
            fprintf(stderr, "plumb coordinator: step 0 eval/accuracy %.3f\n",
                    stats_get(&r->stats, "eval/accuracy"));
    }
    int B = cfg->batch_size;
    long *which = malloc(sizeof(long) * B);
    if (!which) rc = pl_fail(PL_ENOMEM, "batch");
    while (rc == 0 && r->step < cfg->steps) {
        stats_free(&r->stats);
        r->compute_s = r->transport_s = r->serialize_s = r->sync_s = 0;
        r->sync_bytes = 0;
        r->tokens = 0;
        double t0 = pl_now_s();
        if (r->stream) rc = stream_next(r, which, B);
        else order_step(&r->order, r->step, B, which);
        if (rc < 0 || (rc = r->algo->step(r, which, B)) < 0) break;
        r->step++;
        if (r->stream && (rc = stream_step_done(r, which, B)) < 0) break;
        double dt = pl_now_s() - t0;
        stats_put(&r->stats, "perf/step_s", dt);
        stats_put(&r->stats, "perf/compute_s", r->compute_s);
        stats_put(&r->stats, "perf/transport_s", r->transport_s);
        if (r->sync_bytes) {
            stats_put(&r->stats, "perf/sync_s", r->sync_s);
            stats_put(&r->stats, "perf/sync_bytes", (double)r->sync_bytes);
        }
        stats_put(&r->stats, "perf/serialize_s", r->serialize_s);
        stats_put(&r->stats, "perf/overhead_frac", dt > 0 ? 1.0 - r->compute_s / dt : 0);
        stats_put(&r->stats, "perf/tokens_per_s", dt > 0 ? r->tokens / dt : 0);
        stats_put(&r->stats, "perf/recovery_s", pool_recovery_s_take(r->pool) + recovery_s);
        stats_put(&r->stats, "perf/time", pl_wall_s()); /* a dashboard's x axis */
        stats_put(&r->stats, "run/restarts",
                  (double)(pool_recoveries(r->pool) + r->hooks->restarts));
        recovery_s = 0;
        int last = r->step == cfg->steps;
        if ((cfg->eval_every > 0 && r->step % cfg->eval_every == 0) || last) rc = r->algo->eval(r);
        if (rc == 0)
            rc = metrics_log(r->metrics, r->step, (const char *const *)r->stats.names,
                             r->stats.values, r->stats.n);
        if (rc == 0) progress(r, t_start, first_step);
        if (rc == 0 && ((cfg->save_every > 0 && r->step % cfg->save_every == 0) || last))
            rc = checkpoint_write(r, last);
    }
    free(which);
    if (rc == 0 && r->keep_state) { /* the run is over: nothing to replace */
        char live[CFG_PATH + 16];
        snprintf(live, sizeof live, "%s/.live", cfg->run_dir);
        pl_rm_rf(live);
    }
    if (rc == 0) {
        /* RUN_DIR/final -> the last checkpoint's Hugging Face export */
        char link[CFG_PATH + 16], target[64];
        snprintf(link, sizeof link, "%s/final", cfg->run_dir);
        snprintf(target, sizeof target, "checkpoints/step-%06ld/hf", r->step);
        unlink(link);
        if ((r->algo->trained & (1u << ROLE_ACTOR)) && symlink(target, link) != 0)
            rc = pl_fail(PL_EIO, "linking %s: %s", link, strerror(errno));
        if (!r->hooks->quiet) {
            fprintf(stderr, "plumb coordinator: done; metrics in %s/metrics.jsonl", cfg->run_dir);
            if (r->algo->trained & (1u << ROLE_ACTOR))
                fprintf(stderr, ", model in %s/final", cfg->run_dir);
            fprintf(stderr, "\n");
        }
    }
    char err[2048];
    snprintf(err, sizeof err, "%s", pl_error());
    int rewind = rc < 0 && r->lost[0] && !r->stopped;
    if (!rewind) status_write(r, rc == 0 ? "finished" : "failed", rc == 0 ? NULL : err);
    rw->started_wall = r->started_wall;
    if (rewind) {
        rw->step = r->step;
        rw->recoveries = pool_recoveries(r->pool);
        rw->lost_at = r->lost_at;
        snprintf(rw->why, sizeof rw->why, "%.*s", (int)sizeof r->lost - 1, r->lost);
        /* the next pool binds the address this one had (its workers keep
         * connecting to it), also when the config asked for any port */
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "%s", pool_endpoint(r->pool));
    }
    /* after a failure, do not wait on the dead; going back, the workers
     * stay, and register with the next pool */
    pool_free(&r->pool, rewind ? 0 : rc < 0 ? 500 : 5000);
    run_free(r);
    if (rc < 0) pl_fail(rc, "%s", err);
    return rc;
}

uint64_t coord_new_run_id(void) {
    uint64_t id = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&id, sizeof id, 1, f) != 1) id = 0;
        fclose(f);
    }
    if (!id) id = ((uint64_t)getpid() << 32) ^ (uint64_t)(pl_now_s() * 1e6);
    return id ? id : 1;
}

int coord_run(RunConfig *cfg, const CoordHooks *hooks) {
    CoordHooks h = {0};
    if (hooks) h = *hooks;
    if (!h.run_id) h.run_id = coord_new_run_id();
    char from[CFG_PATH + 64];
    long failed_at = -1;
    int again = 0;
    for (;;) {
        Rewind rw = {0};
        int rc = run_once(cfg, &h, &rw);
        if (rc == 0 || !rw.why[0]) return rc;
        /* a trained role's state died with its worker: every role goes back
         * to the run's last checkpoint (or its start), and the steps since
         * are run again; the run is deterministic, so they come out the same */
        char err[2048];
        snprintf(err, sizeof err, "%s", pl_error());
        again = rw.step == failed_at ? again + 1 : 1;
        failed_at = rw.step;
        if (again > cfg->max_restarts)
            return pl_fail(rc, "step %ld failed %d times, each time after going back to the last "
                               "checkpoint (launch.max_restarts %d): %s",
                           rw.step + 1, again, cfg->max_restarts, err);
        h.resume = hooks ? hooks->resume : NULL;
        if (coord_newest_checkpoint(cfg->run_dir, h.run_id, from, sizeof from) == 0) h.resume = from;
        h.restarts += (int)rw.recoveries + 1;
        h.down_since = rw.lost_at;
        h.started_wall = rw.started_wall;
        fprintf(stderr, "plumb coordinator: %s; %s\n"
                        "plumb coordinator: going back to %s, and running the steps since again "
                        "(up to step %ld)\n",
                rw.why, err, h.resume ? h.resume : "the start of the run", rw.step);
    }
}
