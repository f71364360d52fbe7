/* run.h: the coordinator: drives one run of an algorithm over its workers.
 *
 * coord_run binds the ROUTER, waits for the roles the algorithm needs,
 * and then runs cfg->steps steps as DESIGN.md's table lays out (requests
 * that do not depend on each other are in flight together), with eval,
 * checkpoints and metrics:
 *   RUN_DIR/metrics.jsonl        one JSON object per step ("step", "train/...",
 *                                "rollout/...", "eval/...", "perf/..."); perf/
 *                                keys are wall-clock timings, all others are
 *                                reproducible for a seed
 *   RUN_DIR/samples.jsonl        a few generations of each eval (eval.samples)
 *   RUN_DIR/status.json          running, finished or failed (status.c)
 *   RUN_DIR/config.yaml          the resolved configuration
 *   RUN_DIR/checkpoints/step-N/  coordinator.json, config.yaml, one folder per
 *                                stateful role (written to .step-N.tmp, synced,
 *                                then renamed: a crash never leaves a step-N
 *                                that is not whole)
 *   RUN_DIR/final                the actor as a Hugging Face folder (a link into
 *                                the last checkpoint)
 * Data order, generation seeds and minibatch orders derive from run.seed and
 * the step number, so a resumed run repeats the uninterrupted one exactly. */
#ifndef PLUMB_COORD_RUN_H
#define PLUMB_COORD_RUN_H

#include <stdint.h>

#include "coordinator/config.h"

typedef struct {
    const char *resume;      /* a checkpoint folder, or a run folder (its newest) */
    /* Called once the socket is bound (the launcher starts its workers). */
    int (*on_bound)(void *ctx, const char *endpoint);
    /* Called about every 100 ms while waiting; < 0 stops the run (the
     * launcher reports dead children and Ctrl-C here). */
    int (*tick)(void *ctx);
    /* Called after tick: the pid of a worker process on this host that the
     * launcher saw die since the last call, or 0. The pool takes it for
     * dead at once instead of after transport.dead_after_ms. */
    int (*dead_pid)(void *ctx);
    /* Called with the pid of a worker on this host that the pool takes for
     * dead while its process may still be there (it hangs): the launcher
     * kills it, and then starts it again. May be NULL. */
    void (*hung_pid)(void *ctx, int pid);
    void *ctx;
    int quiet;               /* no progress lines                                 */
    int min_workers;         /* wait for this many workers (the launcher's count)
                              * when more than transport.min_workers          */
    /* A coordinator started again after one died: how many were (counted
     * in run/restarts), and when the last died (pl_now_s; the time until
     * this one has its workers back is its first step's perf/recovery_s). */
    int restarts;
    double down_since;
    /* The run's identity, written into its checkpoints, so that a restart
     * takes only this run's, never one an earlier run left in RUN_DIR.
     * Coordinators that restart one run share it; 0: coord_run draws one. */
    uint64_t run_id;
    /* When the run started (wall clock seconds; status.json), for a
     * coordinator started again; 0: now. */
    double started_wall;
} CoordHooks;

/* The roles an algorithm needs (bit (1u << RoleKind)). */
unsigned coord_needed_roles(const RunConfig *cfg);
/* The roles the algorithm trains (bit mask): their workers hold state. */
unsigned coord_trained_roles(const RunConfig *cfg);
/* launch.keep_state applies: each update of a trained role keeps a copy of
 * its state, when that is small (adapters and heads, not fully fine-tuned
 * weights), so a new worker can replace a dead trainer. */
int coord_keeps_state(const RunConfig *cfg);

/* The newest checkpoint under RUN_DIR/checkpoints that was written whole
 * (one being written is a hidden .step-N.tmp) into out, of run run_id
 * only (CoordHooks.run_id; 0: of any run); PL_EIO when there is none. */
int coord_newest_checkpoint(const char *run_dir, uint64_t run_id, char *out, size_t cap);

/* With model.path empty, writes the random model.init.* model (seeded by
 * run.seed) with the tokenizer's files into RUN_DIR/init and points
 * model.path there; fills model.tokenizer from model.path when empty.
 * Idempotent: an existing RUN_DIR/init with the same config is reused. */
int coord_prepare_model(RunConfig *cfg);

/* A new run identity (CoordHooks.run_id): random, never 0. */
uint64_t coord_new_run_id(void);

/* Runs the whole run. Returns 0, or < 0 with pl_error() naming what failed
 * (a worker that died and was not replaced in time, a bad checkpoint, ...).
 *
 * A dead worker is replaced by the next one to register for its roles: it
 * gets the dead one's requests, and its state from a surviving replica, or
 * from the copy launch.keep_state keeps. When neither holds a trained
 * role's state (full fine-tuning, keep_state off), the run goes back to
 * its newest checkpoint (or its start): the pool is closed without telling
 * the workers, a new one binds the same address, every worker registers
 * with it again (plumb worker --rejoin-s) and loads the checkpoint's state,
 * and the steps since are run again, with the same numbers. A step that
 * fails this way more than launch.max_restarts times in a row stops the
 * run. */
int coord_run(RunConfig *cfg, const CoordHooks *hooks);

#endif
