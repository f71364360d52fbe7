/* run.c: the coordinator's algorithm drivers, eval and checkpoints (run.h). */
#define _GNU_SOURCE
#include "run.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "algo/grpo.h"
#include "algo/ppo.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/rng.h"
#include "coordinator/metrics.h"
#include "coordinator/pool.h"
#include "data/dataset.h"
#include "model/lora.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "algo/rules.h"

enum { TAG_DATA = 1, TAG_GEN, TAG_TRAIN, TAG_ACTOR, TAG_CRITIC, TAG_REWARD, TAG_CRITIC_TRAIN };

unsigned coord_needed_roles(const RunConfig *c) {
    unsigned a = 1u << ROLE_ACTOR, r = 1u << ROLE_REWARD, ref = 1u << ROLE_REFERENCE;
    switch (c->algo) {
    case ALGO_SFT:
    case ALGO_ORPO: return a;
    case ALGO_RM: return r;
    case ALGO_DPO: return a | ref;
    case ALGO_GRPO: return a | r | (c->kl_coef != 0 ? ref : 0);
    case ALGO_PPO: return a | r | (1u << ROLE_CRITIC) | (c->kl_coef != 0 ? ref : 0);
    default: return a;
    }
}

/* ------------------------------------------------------------ files */

/* snprintf into out[cap], failing (instead of truncating) when the result
 * would not fit. */
static int path_fmt(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return pl_fail(PL_ERANGE, "path too long (over %zu bytes): %.80s...", cap - 1, out);
    return 0;
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return 1; /* absent: nothing to copy */
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return pl_fail(PL_EIO, "writing %s: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? 0 : pl_fail(PL_EIO, "writing %s", to);
}

static int rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[CFG_PATH * 2];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        if (d) closedir(d);
        return rmdir(path);
    }
    return unlink(path);
}

int coord_prepare_model(RunConfig *c) {
    if (!c->model_path[0]) {
        char dir[CFG_PATH + 16];
        snprintf(dir, sizeof dir, "%s/init", c->run_dir);
        if (!c->tokenizer[0])
            return pl_fail(PL_EINVAL, "model.init needs model.tokenizer (a folder with "
                                      "tokenizer.json) since there is no model.path");
        char cfgpath[CFG_PATH + 32];
        PL_TRY(path_fmt(cfgpath, sizeof cfgpath, "%s/model.safetensors", dir));
        if (access(cfgpath, R_OK) != 0) {
            Tokenizer *tok = NULL;
            int rc = tok_load(&tok, c->tokenizer);
            if (rc < 0) return pl_wrap(rc, "model.tokenizer %s", c->tokenizer);
            ModelConfig mc;
            config_defaults(&mc);
            mc.vocab_size = tok_vocab_size(tok);
            mc.dim = c->init_dim, mc.hidden_dim = c->init_hidden, mc.n_layers = c->init_layers;
            mc.n_heads = c->init_heads, mc.n_kv_heads = c->init_kv_heads;
            mc.head_dim = c->init_dim / c->init_heads, mc.max_seq_len = c->init_max_seq;
            mc.rope_theta = c->init_rope_theta;
            mc.bos_id = tok_bos(tok);
            if (tok_eos(tok) >= 0) mc.eos_ids[0] = tok_eos(tok), mc.n_eos = 1;
            tok_free(&tok);
            PL_TRY(config_validate(&mc));
            Base *b = NULL;
            PL_TRY(base_new_random(&b, &mc, rng_mix3(c->seed, 99, 0), c->init_std));
            rc = pl_mkdirs(dir);
            if (rc == 0) rc = base_save_hf(b, dir);
            base_free(&b);
            PL_TRY(rc);
        }
        const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
        for (int i = 0; i < 2; i++) {
            char from[CFG_PATH + 64], to[CFG_PATH + 64];
            snprintf(from, sizeof from, "%s/%s", c->tokenizer, files[i]);
            snprintf(to, sizeof to, "%s/%s", dir, files[i]);
            PL_TRY(copy_file(from, to));
        }
        PL_TRY(path_fmt(c->model_path, sizeof c->model_path, "%s", dir));
    }
    if (!c->tokenizer[0]) {
        struct stat st;
        snprintf(c->tokenizer, sizeof c->tokenizer, "%s", c->model_path);
        if (stat(c->model_path, &st) == 0 && !S_ISDIR(st.st_mode)) {
            char *slash = strrchr(c->tokenizer, '/');
            if (slash) *slash = '\0';
            else strcpy(c->tokenizer, ".");
        }
    }
    return 0;
}

/* ------------------------------------------------------------- packing */

/* Sequences packed back to back, as the wire carries them. */
typedef struct {
    int B, N, capB, capN;
    int *tokens, *offsets;
    unsigned char *mask;
} Packed;

static void packed_free(Packed *p) {
    free(p->tokens), free(p->offsets), free(p->mask);
    memset(p, 0, sizeof *p);
}

/* Appends prompt (mask 0) then response (mask 1). */
static int packed_add(Packed *p, const int *prompt, int np, const int *resp, int nr) {
    if (p->B + 2 > p->capB) {
        int c = p->capB ? p->capB * 2 : 64;
        int *o = realloc(p->offsets, sizeof(int) * (c + 1));
        PL_CHECK_ALLOC(o);
        p->offsets = o, p->capB = c;
    }
    if (p->N + np + nr > p->capN) {
        int c = p->capN ? p->capN * 2 : 4096;
        while (c < p->N + np + nr) c *= 2;
        int *t = realloc(p->tokens, sizeof(int) * c);
        PL_CHECK_ALLOC(t);
        p->tokens = t;
        unsigned char *m = realloc(p->mask, c);
        PL_CHECK_ALLOC(m);
        p->mask = m, p->capN = c;
    }
    if (p->B == 0) p->offsets[0] = 0;
    memcpy(p->tokens + p->N, prompt, sizeof(int) * np);
    memset(p->mask + p->N, 0, np);
    if (nr) memcpy(p->tokens + p->N + np, resp, sizeof(int) * nr);
    memset(p->mask + p->N + np, 1, nr);
    p->N += np + nr;
    p->offsets[++p->B] = p->N;
    return 0;
}

/* ---------------------------------------------------------------- data */

typedef struct {
    DsRecord *r;
    long n;
} Records;

static void records_free(Records *r) {
    for (long i = 0; i < r->n; i++) ds_record_free(&r->r[i]);
    free(r->r);
    memset(r, 0, sizeof *r);
}

/* Reads a whole JSONL file; dropped lines are reported (not fatal) but a
 * file with no usable record is an error. */
static int records_load(Records *out, const char *key, const char *path, const DsConfig *dc,
                        DsFormat fmt, int quiet) {
    memset(out, 0, sizeof *out);
    DsConfig c = *dc;
    c.format = fmt;
    DsReader *rd = NULL;
    int rc = ds_reader_open(&rd, path, &c);
    if (rc < 0) return pl_wrap(rc, "%s", key);
    long cap = 0, shown = 0;
    for (;;) {
        DsRecord rec;
        long line;
        DsReason why;
        char reason[512];
        rc = ds_reader_next(rd, &rec, &line, &why, reason, sizeof reason);
        if (rc == 0) break;
        if (rc < 0) break;
        if (rc == 2) {
            if (!quiet && shown++ < 5)
                fprintf(stderr, "plumb coordinator: %s %s:%ld dropped (%s): %s\n", key, path,
                        line, ds_reason_name(why), reason);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 1024;
            DsRecord *r = realloc(out->r, sizeof(DsRecord) * cap);
            if (!r) {
                ds_record_free(&rec);
                rc = pl_fail(PL_ENOMEM, "%s: out of memory", key);
                break;
            }
            out->r = r;
        }
        out->r[out->n++] = rec;
    }
    const DsSummary *s = ds_reader_summary(rd);
    long dropped = s->read - s->kept;
    if (rc == 0 && !quiet && dropped > 0)
        fprintf(stderr, "plumb coordinator: %s %s: %ld of %ld lines dropped\n", key, path,
                dropped, s->read);
    ds_reader_free(&rd);
    if (rc == 0 && out->n == 0) rc = pl_fail(PL_EFORMAT, "%s %s: no usable record", key, path);
    if (rc < 0) records_free(out);
    return rc;
}

/* The record at position k of the endless, per-epoch shuffled order. */
typedef struct {
    long n;
    long *perm;     /* (n) order of the current epoch */
    long epoch;     /* epoch perm holds, -1 none      */
    uint64_t seed;
    int shuffle;
} Order;

static long order_at(Order *o, long k) {
    long e = k / o->n, i = k % o->n;
    if (e != o->epoch) {
        for (long j = 0; j < o->n; j++) o->perm[j] = j;
        if (o->shuffle) {
            Rng r;
            rng_seed2(&r, rng_mix3(o->seed, TAG_DATA, 0), (uint64_t)e);
            for (long j = o->n - 1; j > 0; j--) {
                long t = (long)(rng_u64(&r) % (uint64_t)(j + 1));
                long x = o->perm[j];
                o->perm[j] = o->perm[t], o->perm[t] = x;
            }
        }
        o->epoch = e;
    }
    return o->perm[i];
}

/* ----------------------------------------------------------- the run */

typedef struct {
    RunConfig *cfg;
    const CoordHooks *hooks;
    Pool *pool;
    Tokenizer *tok;
    DsConfig dc;
    Records train, eval, eval_pref;
    Order order;
    Metrics *metrics;
    WireLimits lim;
    int eos;
    long step;               /* completed steps                        */
    uint64_t adapter_version;/* the trainer's                          */
    uint64_t dp_groups;      /* data-parallel groups formed so far      */
    /* each role's trainers: its replicas live at its first train request
     * (a replica that registers later has neither the updates nor the
     * optimizer state, and only generates); n_trainers[k] 0: none yet */
    int trainers[ROLE_NKINDS][POOL_MAX_WORKERS], n_trainers[ROLE_NKINDS];
    KlController kl;
    float **ref_c, **ref_r;  /* DPO reference cache per train record    */
    float **eval_ref_c, **eval_ref_r;
    /* metrics of the current step */
    char *names[128];
    double values[128];
    int n_metrics;
    /* step timing */
    double compute_s, transport_s, serialize_s;
    long tokens;
    char resume_from[CFG_PATH]; /* checkpoint folder, or "" */
} Run;

static void put_metric(Run *r, const char *name, double v) {
    for (int i = 0; i < r->n_metrics; i++)
        if (!strcmp(r->names[i], name)) {
            r->values[i] = v;
            return;
        }
    if (r->n_metrics == 128) return;
    r->names[r->n_metrics] = strdup(name);
    r->values[r->n_metrics++] = v;
}

static double get_metric(const Run *r, const char *name) {
    for (int i = 0; i < r->n_metrics; i++)
        if (!strcmp(r->names[i], name)) return r->values[i];
    return NAN;
}

static void clear_metrics(Run *r) {
    for (int i = 0; i < r->n_metrics; i++) free(r->names[i]);
    r->n_metrics = 0;
}

/* Metrics of a TrainRep under prefix ("train/", "critic/"). */
static void put_train_metrics(Run *r, const char *prefix, const Plumb__TrainRep *t) {
    for (size_t i = 0; i < t->n_metrics; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, t->metrics[i]->name);
        put_metric(r, name, t->metrics[i]->value);
    }
}

/* Runs calls in parallel and books their timings into the step. */
static int call(Run *r, PoolCall *calls, int n) {
    int rc = pool_call(r->pool, calls, n);
    /* the group's critical path: the longest handling time is compute, the
     * rest of the longest call is transport and queueing */
    double comp = 0, wall = 0;
    for (int i = 0; i < n; i++) {
        if (calls[i].compute_s > comp) comp = calls[i].compute_s;
        if (calls[i].wall_s > wall) wall = calls[i].wall_s;
        r->serialize_s += calls[i].pack_s;
    }
    r->compute_s += comp;
    r->transport_s += wall > comp ? wall - comp : 0;
    return rc;
}

/* Checks that a reply has the expected kind. */
/* Names the worker and the request of a bad reply in the error. */
static int bad_reply(Run *r, const PoolCall *c, int rc) {
    char who[256];
    return pl_wrap(rc, "the reply of %s to request %llu", pool_worker_name(r->pool, c->worker, who, sizeof who),
                   (unsigned long long)c->req->id);
}

/* Checks that a reply has the expected kind. */
static int expect(Run *r, const PoolCall *c, Plumb__Envelope__BodyCase kind, const char *what) {
    if (!c->rep || c->rep->body_case != kind)
        return bad_reply(r, c, pl_fail(PL_EPROTO, "answers %s with message kind %d", what,
                                       c->rep ? (int)c->rep->body_case : -1));
    return 0;
}

static int first_worker(Run *r, RoleKind k) {
    int idx[POOL_MAX_WORKERS];
    int n = pool_workers_with(r->pool, k, idx, POOL_MAX_WORKERS);
    if (n == 0) return pl_fail(PL_EPEER, "no live worker hosts the %s role", role_kind_name(k));
    return idx[0];
}

/* --------------------------------------------------------- requests */

static Plumb__Envelope *env(WireArena *a, RoleKind k) {
    return wire_envelope(a, 0, role_kind_name(k));
}

static Plumb__Envelope *logprobs_req(WireArena *a, RoleKind k, const Packed *p, float temp) {
    Plumb__Envelope *e = env(a, k);
    Plumb__LogprobsReq *q = wire_alloc(a, sizeof *q);
    plumb__logprobs_req__init(q);
    q->seqs = wire_seqs(a, p->tokens, p->offsets, p->mask, p->B);
    q->temperature = temp;
    e->body_case = PLUMB__ENVELOPE__BODY_LOGPROBS;
    e->logprobs = q;
    return e;
}

static Plumb__Envelope *train_req(WireArena *a, RoleKind k, const Run *r, uint64_t seed) {
    Plumb__Envelope *e = env(a, k);
    Plumb__TrainReq *t = wire_alloc(a, sizeof *t);
    plumb__train_req__init(t);
    t->epochs = r->cfg->epochs;
    t->minibatches = r->cfg->minibatches;
    t->seed = seed;
    e->body_case = PLUMB__ENVELOPE__BODY_TRAIN;
    e->train = t;
    return e;
}

/* Reads an f32 vector reply field of n elements. */
static int reply_f32(Run *r, const PoolCall *c, const Plumb__Tensor *t, long n, const char *what,
                     float **out) {
    int rc = wire_get_f32(t, n, 1, what, out);
    return rc < 0 ? bad_reply(r, c, rc) : 0;
}

/* ------------------------------------------------------------ rollout */

typedef struct {
    Packed seqs;             /* B*G sequences, prompt-major           */
    float *lp;               /* (N) rollout log-probs                 */
    long first;              /* data position of the first prompt     */
    int n_prompts;
} Rollout;

static void rollout_free(Rollout *ro) {
    packed_free(&ro->seqs);
    free(ro->lp);
    memset(ro, 0, sizeof *ro);
}

/* Makes every actor replica hold the trainer's adapter. */
static int sync_adapters(Run *r) {
    int idx[POOL_MAX_WORKERS];
    int n = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
    if (n <= 1 || r->cfg->full_finetune || r->cfg->lora_rank == 0) return 0;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall get = {.worker = idx[0]};
    get.req = env(a, ROLE_ACTOR);
    Plumb__AdapterMsg *m = wire_alloc(a, sizeof *m);
    plumb__adapter_msg__init(m);
    m->get = 1;
    get.req->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
    get.req->adapter = m;
    int rc = call(r, &get, 1);
    if (rc == 0) rc = expect(r, &get, PLUMB__ENVELOPE__BODY_ADAPTER, "adapter get");
    PoolCall set[POOL_MAX_WORKERS];
    int ns = 0;
    for (int i = 1; rc == 0 && i < n; i++) {
        PoolWorker const *w = pool_worker(r->pool, idx[i]);
        if (w->adapter_version == get.rep->adapter->version) continue;
        memset(&set[ns], 0, sizeof set[ns]);
        set[ns].worker = idx[i];
        set[ns].req = env(a, ROLE_ACTOR);
        Plumb__AdapterMsg *s = wire_alloc(a, sizeof *s);
        plumb__adapter_msg__init(s);
        s->version = get.rep->adapter->version;
        s->data = get.rep->adapter->data;
        set[ns].req->body_case = PLUMB__ENVELOPE__BODY_ADAPTER;
        set[ns].req->adapter = s;
        ns++;
    }
    if (rc == 0 && ns) rc = call(r, set, ns);
    for (int i = 0; rc == 0 && i < ns; i++)
        ((PoolWorker *)pool_worker(r->pool, set[i].worker))->adapter_version =
            get.rep->adapter->version;
    if (rc == 0) {
        size_t bytes = get.rep->adapter->data ? get.rep->adapter->data->data.len : 0;
        put_metric(r, "perf/adapter_sync_bytes", (double)bytes * ns);
    }
    pool_calls_free(set, ns);
    pool_calls_free(&get, 1);
    wire_arena_free(&a);
    return rc;
}

/* Generates G samples for each of n prompts (records rec[first..]) across
 * the actor replicas that hold the trainer's adapter version (a replica
 * that joined a full fine-tuning run late holds older weights and is left
 * out); greedy when temp = 0. */
static int generate(Run *r, const Records *recs, const long *which, int n, int G, float temp,
                    int max_new, uint64_t seed, Rollout *out) {
    memset(out, 0, sizeof *out);
    int idx[POOL_MAX_WORKERS];
    int nw = 0, all = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
    for (int i = 0; i < all; i++)
        if (pool_worker(r->pool, idx[i])->adapter_version == r->adapter_version) idx[nw++] = idx[i];
    if (nw == 0) return pl_fail(PL_EPEER, "no live actor worker holds adapter version %llu",
                                (unsigned long long)r->adapter_version);
    if (nw > n) nw = n;
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    Packed prompts[POOL_MAX_WORKERS];
    PoolCall calls[POOL_MAX_WORKERS];
    memset(prompts, 0, sizeof prompts);
    memset(calls, 0, sizeof calls);
    int rc = 0, start = 0;
    for (int w = 0; w < nw && rc == 0; w++) {
        int cnt = n / nw + (w < n % nw);
        for (int i = start; i < start + cnt && rc == 0; i++) {
            const DsRecord *d = &recs->r[which[i]];
            rc = packed_add(&prompts[w], d->prompt, d->n_prompt, NULL, 0);
        }
        Plumb__Envelope *e = env(a, ROLE_ACTOR);
        Plumb__GenerateReq *g = wire_alloc(a, sizeof *g);
        plumb__generate_req__init(g);
        g->prompts = wire_seqs(a, prompts[w].tokens, prompts[w].offsets, NULL, prompts[w].B);
        g->n = G;
        g->temperature = temp;
        g->top_k = temp > 0 ? r->cfg->top_k : 0;
        g->top_p = temp > 0 ? r->cfg->top_p : 1.0f;
        g->seed = seed;
        g->max_new_tokens = max_new;
        g->first_index = (int64_t)start * G;
        e->body_case = PLUMB__ENVELOPE__BODY_GENERATE;
        e->generate = g;
        calls[w].worker = idx[w];
        calls[w].req = e;
        start += cnt;
    }
    if (rc == 0) rc = call(r, calls, nw);
    for (int w = 0; w < nw && rc == 0; w++) {
        rc = expect(r, &calls[w], PLUMB__ENVELOPE__BODY_GENERATED, "generate");
        if (rc < 0) break;
        const Plumb__GenerateRep *g = calls[w].rep->generated;
        if (g->adapter_version != r->adapter_version) {
            rc = pl_fail(PL_EPROTO,
                         "stale rollout: actor worker %d generated with adapter version %llu, "
                         "the trainer is at %llu",
                         idx[w], (unsigned long long)g->adapter_version,
                         (unsigned long long)r->adapter_version);
            break;
        }
        WireSeqs s;
        rc = wire_get_seqs(g->seqs, &r->lim, "generate.seqs", &s);
        if (rc < 0) {
            rc = bad_reply(r, &calls[w], rc);
            break;
        }
        if (s.B != prompts[w].B * G) {
            rc = pl_fail(PL_EPROTO, "actor worker %d returned %d sequences for %d prompts x %d",
                         idx[w], s.B, prompts[w].B, G);
            wire_seqs_free(&s);
            break;
        }
        float *lp = NULL;
        rc = reply_f32(r, &calls[w], g->logprobs, s.N, "generate.logprobs", &lp);
        long base = out->seqs.N;
        for (int b = 0; rc == 0 && b < s.B; b++) {
            int o = s.offsets[b], len = s.offsets[b + 1] - o, np = 0;
            while (np < len && !s.mask[o + np]) np++;
            rc = packed_add(&out->seqs, s.tokens + o, np, s.tokens + o + np, len - np);
        }
        if (rc == 0) {
            float *l = realloc(out->lp, sizeof(float) * (out->seqs.N ? out->seqs.N : 1));
            if (!l) rc = pl_fail(PL_ENOMEM, "rollout log-probs");
            else {
                out->lp = l;
                memcpy(out->lp + base, lp, sizeof(float) * s.N);
            }
        }
        free(lp);
        wire_seqs_free(&s);
    }
    pool_calls_free(calls, nw);
    for (int w = 0; w < nw; w++) packed_free(&prompts[w]);
    wire_arena_free(&a);
    out->n_prompts = n;
    if (rc < 0) rollout_free(out);
    return rc;
}

/* Response text of sequence b (mask tokens, trailing EOS dropped). */
static char *response_text(Run *r, const Packed *p, int b) {
    int o = p->offsets[b], e = p->offsets[b + 1], s = o;
    while (s < e && !p->mask[s]) s++;
    if (e > s && p->tokens[e - 1] == r->eos) e--;
    char *text = NULL;
    if (tok_decode(r->tok, p->tokens + s, e - s, 1, &text) < 0) return strdup("");
    return text;
}

/* Scores rollout sequences on a reward worker (answers from the records). */
static int score(Run *r, WireArena *a, const Records *recs, const long *which, int G,
                 const Packed *p, PoolCall *c) {
    int w = first_worker(r, ROLE_REWARD);
    if (w < 0) return w;
    Plumb__Envelope *e = env(a, ROLE_REWARD);
    Plumb__ScoreReq *q = wire_alloc(a, sizeof *q);
    plumb__score_req__init(q);
    q->seqs = wire_seqs(a, p->tokens, p->offsets, p->mask, p->B);
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

/* Rollout statistics: reward mean/std, response length, EOS share. */
static void rollout_metrics(Run *r, const Packed *p, const float *scores) {
    double s = 0, s2 = 0, len = 0, eos = 0;
    for (int b = 0; b < p->B; b++) {
        s += scores[b], s2 += (double)scores[b] * scores[b];
        int n = 0;
        for (int t = p->offsets[b]; t < p->offsets[b + 1]; t++) n += p->mask[t];
        len += n;
        eos += n > 0 && p->tokens[p->offsets[b + 1] - 1] == r->eos;
    }
    double B = p->B ? p->B : 1, mean = s / B;
    put_metric(r, "rollout/reward_mean", mean);
    put_metric(r, "rollout/reward_std", sqrt(fmax(0, s2 / B - mean * mean)));
    put_metric(r, "rollout/response_len", len / B);
    put_metric(r, "rollout/eos_frac", eos / B);
    r->tokens += p->N;
}

/* -------------------------------------------------------------- steps */

static void batch_indices(Run *r, long *which, int n) {
    long k0 = r->step * (long)r->cfg->batch_size;
    for (int i = 0; i < n; i++) which[i] = order_at(&r->order, k0 + i);
}

/* Sequences (prompt + chosen or rejected) of records which[0..n). */
static int pack_records(const Records *recs, const long *which, int n, int rejected, Packed *p) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < n; i++) {
        const DsRecord *d = &recs->r[which[i]];
        PL_TRY(packed_add(p, d->prompt, d->n_prompt, rejected ? d->rejected : d->chosen,
                          rejected ? d->n_rejected : d->n_chosen));
    }
    return 0;
}

/* Appends train request e (body set) for role k to calls[0..cap): one call
 * to the role's trainer, or, with several, one per trainer, each a copy of
 * e with its rank in a new data-parallel group (the replicas then split
 * every minibatch and sum outputs and gradients; see role.h). The trainers
 * are the role's replicas live at its first train request. Returns the
 * number of calls added, or < 0. */
static int add_train(Run *r, WireArena *a, RoleKind k, Plumb__Envelope *e, PoolCall *calls,
                     int cap) {
    int *idx = r->trainers[k], n = r->n_trainers[k];
    if (n == 0) {
        n = r->n_trainers[k] = pool_workers_with(r->pool, k, idx, POOL_MAX_WORKERS);
        if (n == 0) return pl_fail(PL_EPEER, "no live worker hosts the %s role", role_kind_name(k));
    }
    if (n > cap) return pl_fail(PL_EINVAL, "%d %s replicas: at most %d", n, role_kind_name(k), cap);
    memset(calls, 0, sizeof *calls * (size_t)n);
    calls[0].worker = idx[0], calls[0].req = e;
    if (n == 1) return 1;
    uint64_t group = ++r->dp_groups;
    for (int i = 0; i < n; i++) {
        Plumb__Envelope *ce = i ? wire_alloc(a, sizeof *ce) : e;
        Plumb__TrainReq *t = i ? wire_alloc(a, sizeof *t) : e->train;
        Plumb__DataParallel *dp = wire_alloc(a, sizeof *dp);
        if (!ce || !t || !dp) return pl_fail(PL_ENOMEM, "train requests: out of memory");
        if (i) *ce = *e, *t = *e->train, ce->train = t;
        plumb__data_parallel__init(dp);
        dp->group = group, dp->rank = i, dp->size = n;
        t->dp = dp;
        calls[i].worker = idx[i], calls[i].req = ce;
    }
    return n;
}

/* Takes the replies of the n train calls add_train made for role k: the
 * metrics (the replicas' agree: they are reduced) of the first under
 * prefix, every replica's adapter version, and a check that data-parallel
 * replicas still hold the same parameters. */
static int train_done(Run *r, RoleKind k, const PoolCall *calls, int n, const char *prefix) {
    for (int i = 0; i < n; i++) PL_TRY(expect(r, &calls[i], PLUMB__ENVELOPE__BODY_TRAIN_REP, "train"));
    const Plumb__TrainRep *t0 = calls[0].rep->train_rep;
    for (int i = 1; i < n; i++) {
        const Plumb__TrainRep *t = calls[i].rep->train_rep;
        if (t->params_hash != t0->params_hash || t->adapter_version != t0->adapter_version) {
            char a[256], b[256];
            return pl_fail(PL_EPEER,
                           "the %s replicas diverged: %s holds parameters %016llx (version %llu), "
                           "%s %016llx (version %llu)",
                           role_kind_name(k), pool_worker_name(r->pool, calls[0].worker, a, sizeof a),
                           (unsigned long long)t0->params_hash,
                           (unsigned long long)t0->adapter_version,
                           pool_worker_name(r->pool, calls[i].worker, b, sizeof b),
                           (unsigned long long)t->params_hash, (unsigned long long)t->adapter_version);
        }
    }
    put_train_metrics(r, prefix, t0);
    if (k == ROLE_ACTOR) r->adapter_version = t0->adapter_version;
    for (int i = 0; i < n; i++)
        ((PoolWorker *)pool_worker(r->pool, calls[i].worker))->adapter_version = t0->adapter_version;
    if (n > 1) {
        char name[64];
        snprintf(name, sizeof name, "%sreplicas", prefix);
        put_metric(r, name, n);
    }
    return 0;
}

static int train_call(Run *r, RoleKind k, Plumb__Envelope *e, WireArena *a, const char *prefix) {
    PoolCall c[POOL_MAX_WORKERS];
    int n = add_train(r, a, k, e, c, POOL_MAX_WORKERS);
    if (n < 0) return n;
    int rc = call(r, c, n);
    if (rc == 0) rc = train_done(r, k, c, n, prefix);
    pool_calls_free(c, n);
    return rc;
}

static int step_sft(Run *r, const long *which, int n) {
    Packed p;
    int rc = pack_records(&r->train, which, n, 0, &p);
    WireArena *a = wire_arena_new();
    if (rc == 0 && a) {
        Plumb__Envelope *e = train_req(a, ROLE_ACTOR, r, rng_mix3(r->cfg->seed, TAG_TRAIN, r->step));
        Plumb__SftBody *b = wire_alloc(a, sizeof *b);
        plumb__sft_body__init(b);
        b->seqs = wire_seqs(a, p.tokens, p.offsets, p.mask, p.B);
        e->train->body_case = PLUMB__TRAIN_REQ__BODY_SFT;
        e->train->sft = b;
        r->tokens += p.N;
        rc = train_call(r, ROLE_ACTOR, e, a, "train/");
    }
    wire_arena_free(&a);
    packed_free(&p);
    return rc;
}

/* Packs the chosen (pc) and rejected (pr) sequences of records which[0..n)
 * and sends both at once to the first worker with role k: score requests
 * to the reward role (x[s]: one value per sequence), else logprobs at
 * temperature 1 (x[s]: one per token). The caller frees x[0], x[1], pc and
 * pr, also on failure. */
static int pair_call(Run *r, const Records *recs, const long *which, int n, RoleKind k,
                     Packed *pc, Packed *pr, float *x[2]) {
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
            rc = score(r, a, recs, which, 1, p, &cs[s]);
        } else {
            cs[s].worker = first_worker(r, k);
            if (cs[s].worker < 0) rc = cs[s].worker;
            cs[s].req = logprobs_req(a, k, p, 1.0f);
        }
    }
    if (rc == 0) rc = call(r, cs, 2);
    for (int s = 0; rc == 0 && s < 2; s++) {
        const Packed *p = s ? pr : pc;
        if (score_) {
            rc = expect(r, &cs[s], PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
            if (rc == 0) rc = reply_f32(r, &cs[s], cs[s].rep->score_rep->scores, p->B, "scores", &x[s]);
        } else {
            rc = expect(r, &cs[s], PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "logprobs");
            if (rc == 0) rc = reply_f32(r, &cs[s], cs[s].rep->logprobs_rep->logprobs, p->N, "logprobs", &x[s]);
        }
    }
    pool_calls_free(cs, 2);
    wire_arena_free(&a);
    return rc;
}

/* Reference log-probs of the chosen and rejected sequences of records
 * which[], cached per record (cache[i] NULL until computed). */
static int ref_cached(Run *r, const Records *recs, const long *which, int n, float **cc,
                      float **cr) {
    long miss[4096];
    int nm = 0;
    for (int i = 0; i < n && nm < 4096; i++)
        if (!cc[which[i]]) {
            int dup = 0;
            for (int j = 0; j < nm; j++) dup |= miss[j] == which[i];
            if (!dup) miss[nm++] = which[i];
        }
    if (nm == 0) return 0;
    Packed pc, pr;
    float *lp[2];
    int rc = pair_call(r, recs, miss, nm, ROLE_REFERENCE, &pc, &pr, lp);
    for (int s = 0; s < 2 && rc == 0; s++) {
        const Packed *p = s ? &pr : &pc;
        for (int i = 0; rc == 0 && i < nm; i++) {
            int len = p->offsets[i + 1] - p->offsets[i];
            float *x = malloc(sizeof(float) * len);
            if (!x) {
                rc = pl_fail(PL_ENOMEM, "reference cache");
                break;
            }
            memcpy(x, lp[s] + p->offsets[i], sizeof(float) * len);
            (s ? cr : cc)[miss[i]] = x;
        }
    }
    free(lp[0]), free(lp[1]);
    packed_free(&pc);
    packed_free(&pr);
    return rc;
}

/* Concatenates cached per-record arrays in batch order. */
static float *gather(float **cache, const long *which, int n, const Packed *p) {
    float *x = malloc(sizeof(float) * (p->N ? p->N : 1));
    for (int i = 0; x && i < n; i++)
        memcpy(x + p->offsets[i], cache[which[i]],
               sizeof(float) * (p->offsets[i + 1] - p->offsets[i]));
    return x;
}

static int step_pref(Run *r, const long *which, int n) {
    const RunConfig *c = r->cfg;
    Packed pc, pr;
    int rc = pack_records(&r->train, which, n, 0, &pc);
    if (rc == 0) rc = pack_records(&r->train, which, n, 1, &pr);
    if (rc == 0 && c->algo == ALGO_DPO) rc = ref_cached(r, &r->train, which, n, r->ref_c, r->ref_r);
    float *rc_ = NULL, *rr_ = NULL, *margin = NULL;
    WireArena *a = wire_arena_new();
    if (rc == 0 && a) {
        RoleKind k = c->algo == ALGO_RM ? ROLE_REWARD : ROLE_ACTOR;
        Plumb__Envelope *e = train_req(a, k, r, rng_mix3(c->seed, TAG_TRAIN, r->step));
        Plumb__Seqs *sc = wire_seqs(a, pc.tokens, pc.offsets, pc.mask, pc.B);
        Plumb__Seqs *sr = wire_seqs(a, pr.tokens, pr.offsets, pr.mask, pr.B);
        if (c->algo == ALGO_DPO) {
            Plumb__DpoBody *b = wire_alloc(a, sizeof *b);
            plumb__dpo_body__init(b);
            rc_ = gather(r->ref_c, which, n, &pc);
            rr_ = gather(r->ref_r, which, n, &pr);
            b->chosen = sc, b->rejected = sr;
            b->ref_chosen = wire_f32(a, rc_, pc.N);
            b->ref_rejected = wire_f32(a, rr_, pr.N);
            b->loss_type = (char *)c->loss_type;
            b->beta = c->beta;
            b->label_smoothing = c->label_smoothing;
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_DPO;
            e->train->dpo = b;
        } else if (c->algo == ALGO_ORPO) {
            Plumb__OrpoBody *b = wire_alloc(a, sizeof *b);
            plumb__orpo_body__init(b);
            b->chosen = sc, b->rejected = sr;
            b->lambda = c->orpo_lambda;
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_ORPO;
            e->train->orpo = b;
        } else {
            Plumb__BtBody *b = wire_alloc(a, sizeof *b);
            plumb__bt_body__init(b);
            b->chosen = sc, b->rejected = sr;
            int any = 0;
            margin = calloc(n ? n : 1, sizeof(float));
            for (int i = 0; margin && i < n; i++)
                if (r->train.r[which[i]].has_margin)
                    margin[i] = r->train.r[which[i]].margin, any = 1;
            if (any) b->margin = wire_f32(a, margin, n);
            b->center_coef = c->center_coef;
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_BT;
            e->train->bt = b;
        }
        r->tokens += pc.N + pr.N;
        rc = train_call(r, k, e, a, "train/");
    }
    free(rc_), free(rr_), free(margin);
    wire_arena_free(&a);
    packed_free(&pc);
    packed_free(&pr);
    return rc;
}

/* GRPO and PPO: rollout, scoring (+ reference, + values), advantages,
 * update(s), adapter sync. */
static int step_rl(Run *r, const long *which, int n) {
    const RunConfig *c = r->cfg;
    int ppo = c->algo == ALGO_PPO, G = c->group_size;
    Rollout ro;
    long *rep_which = malloc(sizeof(long) * n * G);
    PL_CHECK_ALLOC(rep_which);
    int rc = sync_adapters(r);
    if (rc == 0)
        rc = generate(r, &r->train, which, n, G, c->temperature, c->max_new_tokens,
                      rng_mix3(c->seed, TAG_GEN, r->step), &ro);
    if (rc < 0) {
        free(rep_which);
        return rc;
    }
    Packed *p = &ro.seqs;
    AlgoSeqs as = {.B = p->B, .N = p->N, .offsets = p->offsets};
    float *maskf = malloc(sizeof(float) * (p->N ? p->N : 1));
    float *scores = NULL, *lp_ref = NULL, *values = NULL;
    float *adv = calloc(p->N ? p->N : 1, sizeof(float));
    float *ret = calloc(p->N ? p->N : 1, sizeof(float));
    float *rewards = calloc(p->N ? p->N : 1, sizeof(float));
    float *seq_adv = calloc(p->B ? p->B : 1, sizeof(float));
    if (!maskf || !adv || !ret || !rewards || !seq_adv) rc = pl_fail(PL_ENOMEM, "rollout arrays");
    for (int t = 0; rc == 0 && t < p->N; t++) maskf[t] = p->mask[t];
    as.mask = maskf;

    /* score + reference + values, in parallel */
    WireArena *a = wire_arena_new();
    PoolCall calls[3];
    memset(calls, 0, sizeof calls);
    int nc = 0, i_ref = -1, i_val = -1;
    if (rc == 0) rc = score(r, a, &r->train, which, G, p, &calls[nc++]);
    if (rc == 0 && c->kl_coef != 0) {
        calls[nc].worker = first_worker(r, ROLE_REFERENCE);
        if ((rc = calls[nc].worker) >= 0) {
            calls[nc].req = logprobs_req(a, ROLE_REFERENCE, p, c->temperature);
            i_ref = nc++;
            rc = 0;
        }
    }
    if (rc == 0 && ppo) {
        calls[nc].worker = first_worker(r, ROLE_CRITIC);
        if ((rc = calls[nc].worker) >= 0) {
            Plumb__Envelope *e = env(a, ROLE_CRITIC);
            Plumb__ValuesReq *q = wire_alloc(a, sizeof *q);
            plumb__values_req__init(q);
            q->seqs = wire_seqs(a, p->tokens, p->offsets, p->mask, p->B);
            e->body_case = PLUMB__ENVELOPE__BODY_VALUES;
            e->values = q;
            calls[nc].req = e;
            i_val = nc++;
            rc = 0;
        }
    }
    if (rc == 0) rc = call(r, calls, nc);
    if (rc == 0) rc = expect(r, &calls[0], PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
    if (rc == 0) rc = reply_f32(r, &calls[0], calls[0].rep->score_rep->scores, p->B, "score.scores", &scores);
    if (rc == 0 && i_ref >= 0) {
        rc = expect(r, &calls[i_ref], PLUMB__ENVELOPE__BODY_LOGPROBS_REP, "reference logprobs");
        if (rc == 0)
            rc = reply_f32(r, &calls[i_ref], calls[i_ref].rep->logprobs_rep->logprobs, p->N, "logprobs", &lp_ref);
    }
    if (rc == 0 && i_val >= 0) {
        rc = expect(r, &calls[i_val], PLUMB__ENVELOPE__BODY_VALUES_REP, "values");
        if (rc == 0) rc = reply_f32(r, &calls[i_val], calls[i_val].rep->values_rep->values, p->N, "values", &values);
    }
    pool_calls_free(calls, nc);
    if (rc == 0) rollout_metrics(r, p, scores);

    /* advantages */
    if (rc == 0 && !ppo) {
        AdvEstimator est;
        rc = adv_estimator_parse(c->advantage, &est);
        if (rc == 0) rc = algo_group_advantages(scores, p->B, G, est, seq_adv);
        if (rc == 0) rc = algo_broadcast_seq(&as, seq_adv, adv);
    } else if (rc == 0) {
        KlEstimator ke;
        rc = kl_estimator_parse(c->kl_estimator, &ke);
        if (rc == 0)
            rc = algo_ppo_rewards(&as, ro.lp, lp_ref, scores, (float)r->kl.kl_coef, ke,
                                  c->reward_clip, rewards);
        if (rc == 0) rc = algo_gae(&as, rewards, values, c->gamma, c->lambda, adv, ret);
        if (rc == 0 && c->whiten_advantages) rc = algo_masked_whiten(adv, adv, maskf, p->N, 1);
        if (rc == 0) {
            double vm;
            algo_masked_mean(values, maskf, p->N, &vm);
            put_metric(r, "rollout/value_mean", vm);
            put_metric(r, "rollout/kl_coef", r->kl.kl_coef);
        }
    }
    if (rc == 0 && lp_ref) {
        /* sequence KL of the rollout: mean over sequences of sum (lp - lp_ref) */
        double kl = 0;
        for (int t = 0; t < p->N; t++) kl += maskf[t] * (ro.lp[t] - lp_ref[t]);
        put_metric(r, "rollout/kl", kl / (p->B ? p->B : 1));
    }

    /* update(s): the actor's replicas, then the critic's */
    PoolCall up[2 * POOL_MAX_WORKERS];
    memset(up, 0, sizeof up);
    int nu = 0, na = 0;
    if (rc == 0) {
        Plumb__Envelope *e = train_req(a, ROLE_ACTOR, r, rng_mix3(c->seed, TAG_TRAIN, r->step));
        Plumb__PolicyBody *b = wire_alloc(a, sizeof *b);
        plumb__policy_body__init(b);
        b->seqs = wire_seqs(a, p->tokens, p->offsets, p->mask, p->B);
        b->old_logprobs = wire_f32(a, ro.lp, p->N);
        b->advantages = wire_f32(a, adv, p->N);
        if (lp_ref && !ppo) b->ref_logprobs = wire_f32(a, lp_ref, p->N);
        b->clip_low = c->clip_low, b->clip_high = c->clip_high, b->dual_clip = c->dual_clip;
        b->loss_agg = (char *)c->loss_agg;
        b->max_new_tokens = c->max_new_tokens;
        b->kl_coef = ppo ? 0 : c->kl_coef; /* PPO's KL is in the rewards */
        b->kl_estimator = (char *)c->kl_estimator;
        b->temperature = c->temperature;
        b->entropy_coef = c->entropy_coef;
        if (ppo) {
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_PPO;
            e->train->ppo = b;
        } else {
            e->train->body_case = PLUMB__TRAIN_REQ__BODY_GRPO;
            e->train->grpo = b;
        }
        rc = na = add_train(r, a, ROLE_ACTOR, e, up, POOL_MAX_WORKERS);
        if (rc > 0) nu = na, rc = 0;
        if (rc == 0 && ppo) {
            Plumb__Envelope *v = train_req(a, ROLE_CRITIC, r, rng_mix3(c->seed, TAG_CRITIC_TRAIN, r->step));
            Plumb__ValueBody *vb = wire_alloc(a, sizeof *vb);
            plumb__value_body__init(vb);
            vb->seqs = b->seqs;
            vb->old_values = wire_f32(a, values, p->N);
            vb->returns = wire_f32(a, ret, p->N);
            vb->clip_range = c->value_clip;
            vb->loss_agg = (char *)c->loss_agg;
            vb->max_new_tokens = c->max_new_tokens;
            v->train->body_case = PLUMB__TRAIN_REQ__BODY_VALUE;
            v->train->value = vb;
            rc = add_train(r, a, ROLE_CRITIC, v, up + na, POOL_MAX_WORKERS);
            if (rc > 0) nu += rc, rc = 0;
        }
        if (rc == 0) rc = call(r, up, nu);
    }
    if (rc == 0) rc = train_done(r, ROLE_ACTOR, up, na, "train/");
    if (rc == 0 && nu > na) rc = train_done(r, ROLE_CRITIC, up + na, nu - na, "critic/");
    pool_calls_free(up, nu);
    if (rc == 0 && ppo && c->kl_target > 0) {
        double kl = get_metric(r, "rollout/kl");
        rc = algo_kl_ctl_update(&r->kl, isfinite(kl) ? kl : 0, p->B);
    }
    if (rc == 0) rc = sync_adapters(r);
    wire_arena_free(&a);
    free(maskf), free(scores), free(lp_ref), free(values), free(adv), free(ret), free(rewards);
    free(seq_adv), free(rep_which);
    rollout_free(&ro);
    return rc;
}

/* ---------------------------------------------------------------- eval */

/* The indices 0..n-1 of the first n of `total` eval records (eval.n of
 * them when set), or NULL when out of memory. */
static long *eval_which(const RunConfig *c, long total, long *n_out) {
    long n = c->eval_n > 0 && c->eval_n < total ? c->eval_n : total;
    long *which = malloc(sizeof(long) * (n ? n : 1));
    for (long i = 0; which && i < n; i++) which[i] = i;
    *n_out = n;
    return which;
}

static int eval_generate(Run *r) {
    const RunConfig *c = r->cfg;
    long n;
    long *which = eval_which(c, r->eval.n, &n);
    PL_CHECK_ALLOC(which);
    Rollout ro;
    int max_new = c->eval_max_new_tokens > 0 ? c->eval_max_new_tokens : c->max_new_tokens;
    int rc = sync_adapters(r);
    if (rc == 0) rc = generate(r, &r->eval, which, (int)n, 1, 0.0f, max_new, 0, &ro);
    if (rc < 0) {
        free(which);
        return rc;
    }
    long right = 0;
    for (int b = 0; b < ro.seqs.B; b++) {
        char *text = response_text(r, &ro.seqs, b);
        const char *ans = r->eval.r[which[b]].answer;
        right += ans && reward_rule_score(RULE_EXACT_MATCH, NULL, text, 0, ans) > 0.5;
        free(text);
    }
    put_metric(r, "eval/accuracy", (double)right / (n ? n : 1));
    int rw;
    if (pool_workers_with(r->pool, ROLE_REWARD, &rw, 1) > 0) {
        WireArena *a = wire_arena_new();
        PoolCall sc;
        memset(&sc, 0, sizeof sc);
        float *scores = NULL;
        rc = score(r, a, &r->eval, which, 1, &ro.seqs, &sc);
        if (rc == 0) rc = call(r, &sc, 1);
        if (rc == 0) rc = expect(r, &sc, PLUMB__ENVELOPE__BODY_SCORE_REP, "score");
        if (rc == 0) rc = reply_f32(r, &sc, sc.rep->score_rep->scores, ro.seqs.B, "scores", &scores);
        if (rc == 0) {
            double s = 0;
            for (int b = 0; b < ro.seqs.B; b++) s += scores[b];
            put_metric(r, "eval/reward_mean", s / (ro.seqs.B ? ro.seqs.B : 1));
        }
        free(scores);
        pool_calls_free(&sc, 1);
        wire_arena_free(&a);
    }
    free(which);
    rollout_free(&ro);
    return rc;
}

/* Preference eval: the policy's (or reward model's) choice between chosen
 * and rejected on held-out pairs. */
static int eval_pref(Run *r) {
    const RunConfig *c = r->cfg;
    long n;
    long *which = eval_which(c, r->eval_pref.n, &n);
    PL_CHECK_ALLOC(which);
    int rc = 0, rm = c->algo == ALGO_RM;
    if (c->algo == ALGO_DPO)
        rc = ref_cached(r, &r->eval_pref, which, (int)n, r->eval_ref_c, r->eval_ref_r);
    Packed pc, pr;
    float *x[2] = {NULL, NULL};
    memset(&pc, 0, sizeof pc);
    memset(&pr, 0, sizeof pr);
    if (rc == 0)
        rc = pair_call(r, &r->eval_pref, which, (int)n, rm ? ROLE_REWARD : ROLE_ACTOR, &pc, &pr, x);
    if (rc == 0) {
        long right = 0, right_ref = 0;
        for (long i = 0; i < n; i++) {
            if (rm) {
                right += x[0][i] > x[1][i];
                continue;
            }
            double sc = 0, sr = 0, dc = 0, dr = 0;
            for (int t = pc.offsets[i]; t < pc.offsets[i + 1]; t++) {
                sc += pc.mask[t] * x[0][t];
                if (c->algo == ALGO_DPO)
                    dc += pc.mask[t] * r->eval_ref_c[i][t - pc.offsets[i]];
            }
            for (int t = pr.offsets[i]; t < pr.offsets[i + 1]; t++) {
                sr += pr.mask[t] * x[1][t];
                if (c->algo == ALGO_DPO)
                    dr += pr.mask[t] * r->eval_ref_r[i][t - pr.offsets[i]];
            }
            right += sc > sr;
            right_ref += (sc - dc) > (sr - dr);
        }
        put_metric(r, rm ? "eval/accuracy" : "eval/pref_accuracy", (double)right / (n ? n : 1));
        if (c->algo == ALGO_DPO)
            put_metric(r, "eval/reward_accuracy", (double)right_ref / (n ? n : 1));
    }
    free(x[0]), free(x[1]);
    packed_free(&pc);
    packed_free(&pr);
    free(which);
    return rc;
}

static int run_eval(Run *r) {
    if (r->eval.n > 0 && r->cfg->algo != ALGO_RM) PL_TRY(eval_generate(r));
    if (r->eval_pref.n > 0 &&
        (r->cfg->algo == ALGO_DPO || r->cfg->algo == ALGO_ORPO || r->cfg->algo == ALGO_RM))
        PL_TRY(eval_pref(r));
    return 0;
}

/* --------------------------------------------------------- checkpoints */

static void ckpt_name(const Run *r, long step, char *out, size_t cap, int tmp) {
    snprintf(out, cap, "%s/checkpoints/%sstep-%06ld%s", r->cfg->run_dir, tmp ? "." : "", step,
             tmp ? ".tmp" : "");
}

/* Writes RUN_DIR/checkpoints/step-N: each stateful role's state, then the
 * coordinator's, then renames the folder into place. */
static int checkpoint(Run *r, int export_hf) {
    char tmp[CFG_PATH + 64], dst[CFG_PATH + 64];
    ckpt_name(r, r->step, tmp, sizeof tmp, 1);
    ckpt_name(r, r->step, dst, sizeof dst, 0);
    rm_rf(tmp);
    PL_TRY(pl_mkdirs(tmp));
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall calls[ROLE_NKINDS];
    memset(calls, 0, sizeof calls);
    int n = 0, rc = 0;
    unsigned need = coord_needed_roles(r->cfg);
    RoleKind stateful[] = {ROLE_ACTOR, ROLE_CRITIC, ROLE_REWARD};
    for (int i = 0; i < 3 && rc == 0; i++) {
        RoleKind k = stateful[i];
        if (!(need & (1u << k))) continue;
        if (k == ROLE_REWARD && r->cfg->algo != ALGO_RM) continue; /* not trained */
        Plumb__Envelope *e = env(a, k);
        Plumb__CheckpointReq *q = wire_alloc(a, sizeof *q);
        plumb__checkpoint_req__init(q);
        q->dir = wire_strdup(a, tmp);
        q->export_hf = export_hf && k == ROLE_ACTOR;
        e->body_case = PLUMB__ENVELOPE__BODY_CHECKPOINT;
        e->checkpoint = q;
        calls[n].worker = first_worker(r, k);
        if (calls[n].worker < 0) rc = calls[n].worker;
        calls[n++].req = e;
    }
    if (rc == 0) rc = call(r, calls, n);
    for (int i = 0; rc == 0 && i < n; i++) rc = expect(r, &calls[i], PLUMB__ENVELOPE__BODY_OK, "checkpoint");
    pool_calls_free(calls, n);
    wire_arena_free(&a);
    if (rc == 0) {
        char path[CFG_PATH + 128];
        snprintf(path, sizeof path, "%s/coordinator.json", tmp);
        json_t *j = json_pack("{s:I, s:I, s:f, s:I, s:I, s:I}", "step", (json_int_t)r->step,
                              "seed", (json_int_t)r->cfg->seed, "kl_coef", r->kl.kl_coef,
                              "adapter_version", (json_int_t)r->adapter_version, "data_epoch",
                              (json_int_t)(r->step * (long)r->cfg->batch_size / r->order.n),
                              "data_position",
                              (json_int_t)(r->step * (long)r->cfg->batch_size % r->order.n));
        if (!j || json_dump_file(j, path, JSON_INDENT(2)) != 0)
            rc = pl_fail(PL_EIO, "writing %s", path);
        json_decref(j);
        snprintf(path, sizeof path, "%s/config.yaml", tmp);
        FILE *f = rc == 0 ? fopen(path, "w") : NULL;
        if (rc == 0 && (!f || runcfg_write(r->cfg, f) < 0)) rc = pl_fail(PL_EIO, "writing %s", path);
        if (f) fclose(f);
    }
    if (rc == 0) {
        rm_rf(dst);
        if (rename(tmp, dst) != 0) rc = pl_fail(PL_EIO, "rename %s: %s", tmp, strerror(errno));
    }
    if (rc < 0) return pl_wrap(rc, "checkpoint at step %ld", r->step);
    if (r->cfg->keep > 0) {
        /* keep the newest `keep` checkpoints */
        int kept = 0;
        for (long s = r->step; s >= 0; s--) {
            char old[CFG_PATH + 64];
            ckpt_name(r, s, old, sizeof old, 0);
            struct stat st;
            if (stat(old, &st) != 0) continue;
            if (++kept > r->cfg->keep) rm_rf(old);
        }
    }
    return 0;
}

/* The checkpoint folder to resume from: the folder itself, or the newest
 * step-N under RUN/checkpoints. */
static int resume_dir(const char *path, char *out, size_t cap) {
    char f[CFG_PATH + 64];
    snprintf(f, sizeof f, "%s/coordinator.json", path);
    if (access(f, R_OK) == 0) {
        snprintf(out, cap, "%s", path);
        return 0;
    }
    snprintf(f, sizeof f, "%s/checkpoints", path);
    DIR *d = opendir(f);
    long best = -1;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long s;
        char tail;
        if (sscanf(e->d_name, "step-%ld%c", &s, &tail) == 1 && s > best) best = s;
    }
    if (d) closedir(d);
    if (best < 0)
        return pl_fail(PL_EIO, "--resume %s: neither a checkpoint (no coordinator.json) nor a "
                               "run folder with checkpoints",
                       path);
    return path_fmt(out, cap, "%s/step-%06ld", f, best);
}

/* ------------------------------------------------------- role configs */

/* rm_dir/reward/name in a, or NULL when optional and not readable (or
 * out of memory). */
static char *rm_file(WireArena *a, const char *rm_dir, const char *name, int optional) {
    char p[CFG_PATH + 64];
    snprintf(p, sizeof p, "%s/reward/%s", rm_dir, name);
    return optional && access(p, R_OK) != 0 ? NULL : wire_strdup(a, p);
}

static Plumb__RoleConfig *role_config(void *ctx, RoleKind k, WireArena *a) {
    Run *r = ctx;
    const RunConfig *c = r->cfg;
    Plumb__RoleConfig *rc = wire_alloc(a, sizeof *rc);
    Plumb__Optim *o = wire_alloc(a, sizeof *o);
    if (!rc || !o) return NULL;
    plumb__role_config__init(rc);
    plumb__optim__init(o);
    rc->role = (char *)role_kind_name(k);
    o->lr = c->lr, o->beta1 = c->beta1, o->beta2 = c->beta2, o->eps = c->eps;
    o->weight_decay = c->weight_decay, o->grad_clip = c->grad_clip;
    o->schedule = (char *)c->schedule;
    o->warmup_steps = c->warmup_steps;
    o->total_steps = (int)runcfg_total_optimizer_steps(c);
    o->min_lr_ratio = c->min_lr_ratio;
    rc->optim = o;
    rc->micro_batch = c->micro_batch;
    rc->lora_alpha = c->lora_alpha;
    rc->lora_targets = (char *)c->lora_targets;
    switch (k) {
    case ROLE_ACTOR:
        if (c->full_finetune) rc->train_base = 1;
        else rc->lora_rank = c->lora_rank;
        rc->seed = rng_mix3(c->seed, TAG_ACTOR, 0);
        break;
    case ROLE_CRITIC:
        rc->lora_rank = c->lora_rank;
        rc->head = 1;
        rc->seed = rng_mix3(c->seed, TAG_CRITIC, 0);
        if (c->critic_lr > 0) o->lr = c->critic_lr;
        break;
    case ROLE_REWARD:
        rc->seed = rng_mix3(c->seed, TAG_REWARD, 0);
        if (c->algo == ALGO_RM) {
            if (c->reward_full_finetune) rc->train_base = 1;
            else rc->lora_rank = c->lora_rank;
            rc->head = 1;
        } else if (!strcmp(c->reward_type, "model")) {
            rc->head = 1;
            rc->init_adapter = rm_file(a, c->reward_model, "adapter", 1);
            rc->lora_rank = rc->init_adapter ? c->lora_rank : 0;
            rc->base_path = rm_file(a, c->reward_model, "model", 1); /* a fully fine-tuned rm */
            rc->head_path = rm_file(a, c->reward_model, "head.safetensors", 0);
        } else {
            rc->rule = (char *)c->reward_type;
            rc->rule_arg = (char *)c->reward_arg;
        }
        break;
    default: break;
    }
    if (r->resume_from[0] && k != ROLE_REFERENCE) {
        char p[CFG_PATH + 64];
        snprintf(p, sizeof p, "%s/%s", r->resume_from, role_kind_name(k));
        if (access(p, R_OK) == 0) rc->resume_dir = r->resume_from;
    }
    return rc;
}

/* ---------------------------------------------------------------- run */

static int load_data(Run *r) {
    const RunConfig *c = r->cfg;
    DsFormat fmt = c->algo == ALGO_SFT ? DS_SFT
                   : (c->algo == ALGO_GRPO || c->algo == ALGO_PPO) ? DS_PROMPT
                                                                    : DS_PREF;
    ds_config_init(&r->dc, r->tok);
    r->dc.max_prompt_len = c->max_prompt_len;
    r->dc.max_response_len = c->max_response_len;
    PL_TRY(ds_config_chat(&r->dc, c->tokenizer, NULL));
    PL_TRY(records_load(&r->train, "data.train", c->train_path, &r->dc, fmt, r->hooks->quiet));
    if (c->eval_path[0])
        PL_TRY(records_load(&r->eval, "data.eval", c->eval_path, &r->dc, DS_PROMPT,
                            r->hooks->quiet));
    if (c->eval_pref_path[0])
        PL_TRY(records_load(&r->eval_pref, "data.eval_pref", c->eval_pref_path, &r->dc, DS_PREF,
                            r->hooks->quiet));
    r->order.n = r->train.n;
    r->order.perm = malloc(sizeof(long) * r->train.n);
    PL_CHECK_ALLOC(r->order.perm);
    r->order.epoch = -1;
    r->order.seed = c->seed;
    r->order.shuffle = c->shuffle;
    if (c->algo == ALGO_DPO) {
        r->ref_c = calloc(r->train.n, sizeof(float *));
        r->ref_r = calloc(r->train.n, sizeof(float *));
        r->eval_ref_c = calloc(r->eval_pref.n + 1, sizeof(float *));
        r->eval_ref_r = calloc(r->eval_pref.n + 1, sizeof(float *));
        if (!r->ref_c || !r->ref_r || !r->eval_ref_c || !r->eval_ref_r)
            return pl_fail(PL_ENOMEM, "reference cache");
    }
    return 0;
}

static void free_cache(float **c, long n) {
    for (long i = 0; c && i < n; i++) free(c[i]);
    free(c);
}

static void run_free(Run *r) {
    /* the caches first: their sizes are the record counts */
    free_cache(r->ref_c, r->train.n);
    free_cache(r->ref_r, r->train.n);
    free_cache(r->eval_ref_c, r->eval_pref.n + 1);
    free_cache(r->eval_ref_r, r->eval_pref.n + 1);
    records_free(&r->train);
    records_free(&r->eval);
    records_free(&r->eval_pref);
    free(r->order.perm);
    clear_metrics(r);
    ds_config_free(&r->dc);
    tok_free(&r->tok);
    metrics_close(&r->metrics);
}

static int load_coordinator_state(Run *r) {
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/coordinator.json", r->resume_from);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, err.line, err.text);
    json_int_t step = -1, seed = 0, ver = 0;
    double kl = 0;
    int bad = json_unpack(j, "{s:I, s:I, s:F, s:I}", "step", &step, "seed", &seed, "kl_coef",
                          &kl, "adapter_version", &ver);
    json_decref(j);
    if (bad || step < 0) return pl_fail(PL_EFORMAT, "%s: missing step, seed, kl_coef or adapter_version", path);
    if ((uint64_t)seed != r->cfg->seed)
        return pl_fail(PL_EINVAL, "%s was written with run.seed %lld, this run has %llu", path,
                       (long long)seed, (unsigned long long)r->cfg->seed);
    r->step = (long)step;
    r->kl.kl_coef = kl;
    r->adapter_version = (uint64_t)ver;
    return 0;
}

static void progress(Run *r, double t_start, long first_step) {
    const RunConfig *c = r->cfg;
    if (r->hooks->quiet || (r->step % c->log_every != 0 && r->step != c->steps)) return;
    double el = pl_now_s() - t_start;
    double tps = get_metric(r, "perf/tokens_per_s");
    double reward = get_metric(r, "rollout/reward_mean");
    if (isnan(reward)) reward = get_metric(r, "train/accuracy");
    double kl = get_metric(r, "train/kl");
    if (isnan(kl)) kl = get_metric(r, "rollout/kl");
    long done = r->step - first_step;
    /* metrics_progress estimates from elapsed / step: scale to the steps run here */
    double scaled = done > 0 ? el * r->step / done : NAN;
    metrics_progress(stdout, r->step, c->steps, reward, kl, tps, scaled);
}

static int tick_pass(void *ctx) {
    Run *r = ctx;
    return r->hooks->tick ? r->hooks->tick(r->hooks->ctx) : 0;
}

int coord_run(RunConfig *cfg, const CoordHooks *hooks) {
    Run run, *r = &run;
    memset(r, 0, sizeof *r);
    CoordHooks none = {0};
    r->cfg = cfg;
    r->hooks = hooks ? hooks : &none;
    int rc = 0;
    if (r->hooks->resume) PL_TRY(resume_dir(r->hooks->resume, r->resume_from, sizeof r->resume_from));
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
    if (r->resume_from[0] && (rc = load_coordinator_state(r)) < 0) {
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
    if (r->resume_from[0]) metrics_truncate_after(cfg->run_dir, r->step);
    else {
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->run_dir);
        unlink(path);
    }
    if ((rc = metrics_open(&r->metrics, cfg->run_dir, cfg->redis_url, cfg->redis_stream)) < 0) {
        run_free(r);
        return rc;
    }

    po.server.endpoint = cfg->endpoint;
    po.server.secret_key = cfg->secret_key[0] ? cfg->secret_key : NULL;
    po.server.authorized_keys = cfg->authorized_keys[0] ? cfg->authorized_keys : NULL;
    po.server.max_message = (size_t)cfg->max_message_mb << 20;
    po.heartbeat_ms = cfg->heartbeat_ms;
    po.dead_after_ms = cfg->dead_after_ms;
    po.request_timeout_ms = cfg->request_timeout_s * 1000;
    po.role_config = role_config;
    po.ctx = r;
    po.tick = tick_pass;
    if ((rc = pool_new(&r->pool, &po)) < 0) {
        run_free(r);
        return rc;
    }
    if (!r->hooks->quiet)
        fprintf(stderr, "plumb coordinator: %s run, %d steps, listening on %s\n",
                algo_name_str(cfg->algo), cfg->steps, pool_endpoint(r->pool));
    if (r->hooks->on_bound) rc = r->hooks->on_bound(r->hooks->ctx, pool_endpoint(r->pool));
    if (rc == 0)
        rc = pool_wait_roles(r->pool, coord_needed_roles(cfg),
                             r->hooks->min_workers > cfg->min_workers ? r->hooks->min_workers
                                                                      : cfg->min_workers,
                             cfg->startup_timeout_s * 1000);
    if (rc == 0 && r->resume_from[0]) { /* the actors loaded the checkpoint's adapter */
        int idx[POOL_MAX_WORKERS];
        int n = pool_workers_with(r->pool, ROLE_ACTOR, idx, POOL_MAX_WORKERS);
        for (int i = 0; i < n; i++)
            ((PoolWorker *)pool_worker(r->pool, idx[i]))->adapter_version = r->adapter_version;
    }

    double t_start = pl_now_s();
    if (rc == 0 && first_step == 0) {
        /* eval of the starting point, logged as step 0 */
        rc = run_eval(r);
        if (rc == 0 && r->n_metrics) rc = metrics_log(r->metrics, 0, (const char *const *)r->names,
                                                      r->values, r->n_metrics);
        if (rc == 0 && !r->hooks->quiet && !isnan(get_metric(r, "eval/accuracy")))
            fprintf(stderr, "plumb coordinator: step 0 eval/accuracy %.3f\n",
                    get_metric(r, "eval/accuracy"));
    }
    int B = cfg->batch_size;
    long *which = malloc(sizeof(long) * B);
    if (!which) rc = pl_fail(PL_ENOMEM, "batch");
    while (rc == 0 && r->step < cfg->steps) {
        clear_metrics(r);
        r->compute_s = r->transport_s = r->serialize_s = 0;
        r->tokens = 0;
        double t0 = pl_now_s();
        batch_indices(r, which, B);
        switch (cfg->algo) {
        case ALGO_SFT: rc = step_sft(r, which, B); break;
        case ALGO_RM:
        case ALGO_DPO:
        case ALGO_ORPO: rc = step_pref(r, which, B); break;
        case ALGO_GRPO:
        case ALGO_PPO: rc = step_rl(r, which, B); break;
        default: rc = pl_fail(PL_ENOTSUP, "algo.name %s is not driven by the coordinator",
                              algo_name_str(cfg->algo));
        }
        if (rc < 0) break;
        r->step++;
        double dt = pl_now_s() - t0;
        put_metric(r, "perf/step_s", dt);
        put_metric(r, "perf/compute_s", r->compute_s);
        put_metric(r, "perf/transport_s", r->transport_s);
        put_metric(r, "perf/serialize_s", r->serialize_s);
        put_metric(r, "perf/overhead_frac", dt > 0 ? 1.0 - r->compute_s / dt : 0);
        put_metric(r, "perf/tokens_per_s", dt > 0 ? r->tokens / dt : 0);
        int last = r->step == cfg->steps;
        if ((cfg->eval_every > 0 && r->step % cfg->eval_every == 0) || last) rc = run_eval(r);
        if (rc == 0)
            rc = metrics_log(r->metrics, r->step, (const char *const *)r->names, r->values,
                             r->n_metrics);
        if (rc == 0) progress(r, t_start, first_step);
        if (rc == 0 && ((cfg->save_every > 0 && r->step % cfg->save_every == 0) || last))
            rc = checkpoint(r, last);
    }
    free(which);
    if (rc == 0) {
        /* RUN_DIR/final -> the last checkpoint's Hugging Face export */
        char link[CFG_PATH + 16], target[64];
        snprintf(link, sizeof link, "%s/final", cfg->run_dir);
        snprintf(target, sizeof target, "checkpoints/step-%06ld/hf", r->step);
        unlink(link);
        if ((coord_needed_roles(cfg) & (1u << ROLE_ACTOR)) && symlink(target, link) != 0)
            rc = pl_fail(PL_EIO, "linking %s: %s", link, strerror(errno));
        if (!r->hooks->quiet) {
            fprintf(stderr, "plumb coordinator: done; metrics in %s/metrics.jsonl", cfg->run_dir);
            if (coord_needed_roles(cfg) & (1u << ROLE_ACTOR))
                fprintf(stderr, ", model in %s/final", cfg->run_dir);
            fprintf(stderr, "\n");
        }
    }
    char err[2048];
    snprintf(err, sizeof err, "%s", pl_error());
    pool_free(&r->pool, rc < 0 ? 500 : 5000); /* after a failure, do not wait on the dead */
    run_free(r);
    if (rc < 0) pl_fail(rc, "%s", err);
    return rc;
}
