/* run_impl.h: what the coordinator's files share about a run in progress.
 * Private to coordinator/.
 *
 *   batch.c       Packed sequences, Records (JSONL), Order (epoch shuffle)
 *   stats.c       the step's metrics
 *   requests.c    envelopes (req_), calls and their timing, replies, train fan-out
 *   rollout.c     generation across the actor replicas, adapter sync
 *   pending.c     rollouts made ahead for later steps (algo.max_staleness)
 *   step_sft.c, step_pref.c, step_rl.c   one step of each algorithm
 *   eval.c        held-out generation and preference evals
 *   checkpoint.c  checkpoints and resume
 *   stream.c      training data from a Redis stream
 *   roles.c       RunConfig -> each role's RoleConfig; the random init model
 *   status.c      RUN_DIR/status.json, for dashboards
 *   algos.c       the algorithm table that ties them together
 *   run.c         coord_run: set-up, the step loop, teardown
 *
 * Dimension letters: B sequences, N packed tokens, G samples per prompt. */
#ifndef PLUMB_RUN_IMPL_H
#define PLUMB_RUN_IMPL_H

#include <stdint.h>

#include "algo/ppo.h"
#include "coordinator/algos.h"
#include "coordinator/config.h"
#include "coordinator/metrics.h"
#include "coordinator/pool.h"
#include "coordinator/run.h"
#include "data/dataset.h"
#include "model/tokenizer.h"

/* Streams derived from run.seed (rng_mix3's tag). */
enum {
    TAG_DATA = 1, TAG_GEN, TAG_TRAIN, TAG_ACTOR, TAG_CRITIC, TAG_REWARD, TAG_CRITIC_TRAIN,
    TAG_FILTER,              /* algo.filter_groups: refill records and rounds */
};

/* ------------------------------------------------------------ batch.c */

/* Sequences packed back to back, as the wire carries them. */
typedef struct {
    int B, N, capB, capN;
    int *tokens, *offsets;   /* (N), (B+1)                                    */
    unsigned char *mask;     /* (N) 1 on response tokens                      */
} Packed;

void packed_free(Packed *p);
/* Appends prompt (mask 0) then response (mask 1). */
int packed_add(Packed *p, const int *prompt, int np, const int *resp, int nr);

/* A data file's records, all in memory. */
typedef struct {
    DsRecord *r;
    long n;
} Records;

/* Reads a whole JSONL file (key names it in messages); dropped lines are
 * reported on stderr (unless quiet) but a file with no usable record is
 * an error. */
int records_load(Records *out, const char *key, const char *path, const DsConfig *dc,
                 DsFormat fmt, int quiet);
void records_free(Records *r);

/* Prompt + chosen (or rejected) of records which[0..n). */
int pack_records(const Records *recs, const long *which, int n, int rejected, Packed *p);

/* The record at position k of the endless order: epoch e = k / n visits
 * the n records in windows of `window` consecutive ones (0: one window of
 * all n), each window shuffled by the seed, its index and e. */
typedef struct {
    long n;
    long window;             /* records shuffled together, 0: n               */
    long *perm;              /* (n) order of the current window               */
    long epoch, block;       /* epoch and window perm holds, -1 none          */
    uint64_t seed;
    int shuffle;
} Order;

long order_at(Order *o, long k);
/* The B records of step `step` (0-based): positions step * B .. + B - 1. */
void order_step(Order *o, long step, int B, long *which);

/* ------------------------------------------------------------ stats.c */

/* The metrics of one step, in the order they were first put. */
typedef struct {
    char **names;
    double *values;
    int n, cap;
} StepStats;

/* Sets name to v (a new name goes last). Out of memory is reported once
 * on stderr and the metric is dropped: metrics never stop a run. */
void stats_put(StepStats *s, const char *name, double v);
/* NAN when absent. */
double stats_get(const StepStats *s, const char *name);
void stats_clear(StepStats *s);
void stats_free(StepStats *s);

/* ---------------------------------------------------------- pending.c */

/* Generated sequences and their sampling log-probs (rollout.c). */
typedef struct {
    Packed seqs;             /* B*G sequences, prompt-major                   */
    float *lp;               /* (N) rollout log-probs                         */
    int n_prompts;
} Rollout;


/* A rollout made ahead for a later step (algo.max_staleness). */
typedef struct {
    Rollout ro;
    long *which;             /* (n) its records, G samples each               */
    int n;
    long step;               /* the step that trains on it                    */
    long made_at;            /* the step whose policy made it                 */
} Pending;

#define PENDING_MAX 16       /* algo.max_staleness at most                    */

/* ------------------------------------------------------------ the run */

/* Reference log-probs of each record's chosen and rejected sequences,
 * computed once (step_pref.c). */
typedef struct {
    long n;                  /* records                                       */
    float **c, **r;          /* (n) per record: its tokens' log-probs, or NULL */
} RefCache;

typedef struct Run {
    RunConfig *cfg;
    const AlgoDesc *algo;
    const CoordHooks *hooks;
    Pool *pool;
    Tokenizer *tok;
    DsConfig dc;
    Records train, eval, eval_pref;
    Order order;
    Metrics *metrics;
    WireLimits lim;
    int eos;
    long step;               /* completed steps                               */
    uint64_t adapter_version;/* the trainer's                                 */
    uint64_t dp_groups;      /* data-parallel groups formed so far            */
    /* each role's trainers: its replicas live at its first train request
     * (a replica that registers later has neither the updates nor the
     * optimizer state, and only generates); n_trainers[k] 0: none yet */
    int trainers[ROLE_NKINDS][POOL_MAX_WORKERS], n_trainers[ROLE_NKINDS];
    /* > 0: role k's next data-parallel call first gives every rank the
     * state of rank dp_sync[k] - 1 (a replica replaced after its group
     * finished a step without it) */
    int dp_sync[ROLE_NKINDS];
    KlController kl;
    RefCache ref, eval_ref;  /* dpo, kto                                      */
    StepStats stats;         /* the current step's metrics                    */
    double compute_s, transport_s, serialize_s; /* the step's timing          */
    double sync_s;           /* the step's longest replica time in collectives
                                (inside transport_s: a replica waits there)    */
    uint64_t sync_bytes;     /* the bytes the replicas' collectives carried   */
    long tokens;             /* the step's tokens                             */
    char resume_from[CFG_PATH]; /* checkpoint folder, or ""                    */
    struct Stream *stream;   /* data.train from Redis (stream.c), or NULL     */
    /* launch.keep_state: each trained role's state after its last update,
     * which a worker replacing a dead one loads (checkpoint_kept) */
    int keep_state;          /* on for this run (coord_keeps_state, and every
                              * trainer on this host)                         */
    char host[128];          /* this host's name, as workers report theirs    */
    char live_dir[ROLE_NKINDS][CFG_PATH + 64];
    long live_step[ROLE_NKINDS]; /* the step of each role's copy (0: none)    */
    long live_removed;       /* .live/step-N removed up to this step          */
    uint64_t live_version;   /* the adapter version the actor's copy holds    */
    uint64_t run_id;         /* CoordHooks.run_id, in each checkpoint          */
    /* set when a trained role's only state died with its worker (run.c):
     * no call is sent after that, and the run goes back to its checkpoint */
    char lost[512];
    double lost_at;
    int stopped;             /* CoordHooks.tick stopped the run               */
    double started_wall;     /* status.json's "started"                       */
    char role_fp[ROLE_NKINDS][33]; /* of each role's own model ("": none)     */
    Pending pending[PENDING_MAX]; /* rollouts made ahead, by step (pending.c) */
    int n_pending;
    int rollout_stale;       /* this step's rollout is not the trainer's policy's */
} Run;

/* Appends ro (moved: *ro is emptied) for step, made by step made_at's policy;
 * steps must rise. */
int pending_push(Run *r, Rollout *ro, const long *which, int n, long step, long made_at);
/* Takes the first one, which must be step's, into out (pending_release it). */
int pending_pop(Run *r, long step, Pending *out);
void pending_release(Pending *p);
void pending_free_all(Run *r);
/* DIR/rollouts.json from the queue (nothing when it is empty); and back. */
int pending_save(const Run *r, const char *dir);
int pending_load(Run *r, const char *dir);

/* ------------------------------------------------------------ status.c */

/* Writes RUN_DIR/status.json with state ("running", "finished", "failed")
 * and error (NULL: none); a failure is reported on stderr, never fatal. */
void status_write(Run *r, const char *state, const char *error);

/* ---------------------------------------------------------- requests.c */

/* Runs calls in parallel and books their timings into the step. */
int req_call(Run *r, PoolCall *calls, int n);
/* Checks that a reply has the expected kind (naming worker and request). */
int req_expect(Run *r, const PoolCall *c, Plumb__Envelope__BodyCase kind, const char *what);
/* Wraps rc with the worker and the request of a bad reply. */
int req_bad_reply(Run *r, const PoolCall *c, int rc);
/* Reads an f32 vector reply field of n elements. */
int req_f32(Run *r, const PoolCall *c, const Plumb__Tensor *t, long n, const char *what,
              float **out);
/* The first live worker of role k, or PL_EPEER. */
int req_first(Run *r, RoleKind k);

/* p's sequences as the wire carries them (in a). */
Plumb__Seqs *req_packed(WireArena *a, const Packed *p);
/* A request envelope for role k (body unset). */
Plumb__Envelope *req_env(WireArena *a, RoleKind k);
Plumb__Envelope *req_logprobs(WireArena *a, RoleKind k, const Packed *p, float temp);
Plumb__Envelope *req_values(WireArena *a, RoleKind k, const Packed *p);
/* A train request with the run's epochs and minibatches (body unset). */
Plumb__Envelope *req_train(WireArena *a, RoleKind k, const Run *r, uint64_t seed);
/* A score request for p's sequences, sequence b answered by
 * recs->r[which[b / G]]'s answer, to the first reward worker, into c. */
int req_score(Run *r, WireArena *a, const Records *recs, const long *which, int G,
              const Packed *p, PoolCall *c);

/* Appends train request e (body set) for role k to calls[0..cap): one call
 * to the role's trainer, or, with several, one per trainer, each a copy of
 * e with its rank in a new data-parallel group (worker/train.h). Returns
 * the number of calls added, or < 0. */
int req_train_add(Run *r, WireArena *a, RoleKind k, Plumb__Envelope *e, PoolCall *calls, int cap);
/* Takes the replies of the n calls req_train_add made for role k: metrics
 * under prefix, versions, and the replicas' agreement. */
int req_train_done(Run *r, RoleKind k, const PoolCall *calls, int n, const char *prefix);
/* req_call for a set of train calls (req_train_add's, of one role or
 * several): a data-parallel replica that dies is replaced by a new worker
 * of its role, which takes a survivor's state by broadcast, and the calls
 * left unfinished are sent again, so that the step comes out as it would
 * have. */
int req_train_run(Run *r, PoolCall *calls, int n);
/* req_train_add, req_train_run and req_train_done for one request. */
int req_train_call(Run *r, RoleKind k, Plumb__Envelope *e, WireArena *a, const char *prefix);

/* Packs the chosen (pc) and rejected (pr) sequences of records which[0..n)
 * and sends both at once to the first worker with role k: score requests
 * to the reward role (x[s]: one value per sequence), else logprobs at
 * temperature 1 (x[s]: one per token). The caller frees x[0], x[1], pc and
 * pr, also on failure. */
int req_pair(Run *r, const Records *recs, const long *which, int n, RoleKind k, Packed *pc,
              Packed *pr, float *x[2]);

/* ----------------------------------------------------------- rollout.c */

void rollout_free(Rollout *ro);
/* Makes every actor replica hold the trainer's adapter. */
int rollout_sync_adapters(Run *r);
/* G samples for each of records which[0..n) across the actor replicas at
 * the trainer's adapter version; greedy when temp = 0. */
int rollout_generate(Run *r, const Records *recs, const long *which, int n, int G, float temp,
             int max_new, uint64_t seed, Rollout *out);

/* rollout_generate in two halves, for a caller that sends the generate
 * requests with others (algo.max_staleness: beside the update). */
typedef struct {
    PoolCall calls[POOL_MAX_WORKERS];
    Packed prompts[POOL_MAX_WORKERS];
    int nw, n, G, max_new;
    uint64_t version;        /* the adapter version asked for                 */
    WireArena *a;
} GenCalls;

/* The generate requests into g, for the replicas at the trainer's version;
 * with avoid_trainers, those that do not train when there are any. */
int rollout_prepare(Run *r, const Records *recs, const long *which, int n, int G, float temp,
                    int max_new, uint64_t seed, int avoid_trainers, GenCalls *g);
/* The rollout from g's replies (g's calls were run); frees g. */
int rollout_collect(Run *r, GenCalls *g, Rollout *out);
void gen_calls_free(GenCalls *g);
/* Appends src's sequences first .. first + n - 1, with their log-probs, to
 * dst (n_prompts is the caller's). */
int rollout_append(Rollout *dst, const Rollout *src, int first, int n);
/* Response text of sequence b (mask tokens, trailing EOS dropped). */
char *rollout_response_text(Run *r, const Packed *p, int b);
/* rollout/reward_mean, reward_std, response_len, eos_frac. */
void rollout_metrics(Run *r, const Packed *p, const float *scores);

/* ------------------------------------------------------------- steps */

int step_sft(Run *r, const long *which, int n);
int step_rm(Run *r, const long *which, int n);
int step_dpo(Run *r, const long *which, int n);
int step_orpo(Run *r, const long *which, int n);
int step_simpo(Run *r, const long *which, int n);
int step_kto(Run *r, const long *which, int n);
int step_grpo(Run *r, const long *which, int n);
int step_ppo(Run *r, const long *which, int n);

/* Reference log-probs of records which[0..n) into cache (made on first
 * use for recs->n records). */
int refcache_get(Run *r, const Records *recs, const long *which, int n, RefCache *cache);
void refcache_free(RefCache *c);

/* -------------------------------------------------------------- eval.c */

/* Greedy answers to data.eval, exact match (and the reward's mean when a
 * reward worker is there). */
int eval_generate(Run *r);
/* The policy's choice between chosen and rejected of data.eval_pref by
 * summed log-probs (and, with a reference, by log-ratios). */
int eval_pref_policy(Run *r);
/* The reward model's choice on data.eval_pref. */
int eval_pref_rm(Run *r);

/* -------------------------------------------------------- checkpoint.c */

/* Writes RUN_DIR/checkpoints/step-N (each trained role's state, then the
 * coordinator's), renamed into place when complete; keeps the newest
 * checkpoint.keep. export_hf: the actor also writes its Hugging Face
 * export. */
int checkpoint_write(Run *r, int export_hf);
/* Role k's train request saved its state into dir (RUN_DIR/.live/step-N)
 * before it answered: the copy a replacement loads. Removes the steps no
 * role's copy is in. */
void checkpoint_kept(Run *r, RoleKind k, const char *dir);
/* The checkpoint folder to resume from: path itself, or the newest step-N
 * under path/checkpoints. */
int checkpoint_resume_dir(const char *path, char *out, size_t cap);
/* Step, KL coefficient and adapter version from resume_from. */
int checkpoint_load_state(Run *r);

/* ------------------------------------------------------------ stream.c */

/* data.train redis://: connects, checks the stream's tokenizer, and (not
 * following) reads what the stream holds into r->train; resumes from
 * r->resume_from's stream.json. Sets r->order. */
int stream_open(Run *r);
/* The records of step r->step into which[0..B) (indices into r->train),
 * waiting for them when following. */
int stream_next(Run *r, long *which, int B);
/* After step r->step: its line of consumed.jsonl, its ids to acknowledge
 * after the next checkpoint, and its data/ and perf/ metrics. */
int stream_step_done(Run *r, const long *which, int B);
/* The stream's part of a checkpoint being written in dir. */
int stream_save(Run *r, const char *dir);
/* The checkpoint is in place: acknowledges what it covers. */
int stream_saved(Run *r);
void stream_free(Run *r);

/* ------------------------------------------------------------- roles.c */

/* PoolRoleConfigFn: role k's RoleConfig from the run's config. */
Plumb__RoleConfig *roles_config(void *ctx, RoleKind k, WireArena *a);
/* Reads the model of each role of the run that has one of its own
 * (critic.model, reference.model, a fully fine-tuned reward.model) into
 * Run.role_fp, which the role's config carries: a worker that finds
 * another model at that path refuses the role. */
int roles_fingerprints(Run *r);

#endif
