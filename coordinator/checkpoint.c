/* checkpoint.c: RUN_DIR/checkpoints/step-N, written whole or not at all,
 * and the state a resumed run starts from (run_impl.h). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"
#include "coordinator/run_impl.h"

static void ckpt_name(const Run *r, long step, char *out, size_t cap, int tmp) {
    snprintf(out, cap, "%s/checkpoints/%sstep-%06ld%s", r->cfg->run_dir, tmp ? "." : "", step,
             tmp ? ".tmp" : "");
}

/* Asks each trained role to write its state under dir (the actor also its
 * Hugging Face export when export_hf). */
static int save_roles(Run *r, const char *dir, int export_hf) {
    WireArena *a = wire_arena_new();
    PL_CHECK_ALLOC(a);
    PoolCall calls[ROLE_NKINDS];
    memset(calls, 0, sizeof calls);
    int n = 0, rc = 0;
    for (int k = 0; k < ROLE_NKINDS && rc == 0; k++) {
        if (!(r->algo->trained & (1u << k))) continue;
        Plumb__Envelope *e = req_env(a, (RoleKind)k);
        Plumb__CheckpointReq *q = wire_alloc(a, sizeof *q);
        plumb__checkpoint_req__init(q);
        q->dir = wire_strdup(a, dir);
        q->export_hf = export_hf && k == ROLE_ACTOR;
        e->body_case = PLUMB__ENVELOPE__BODY_CHECKPOINT;
        e->checkpoint = q;
        calls[n].worker = req_first(r, (RoleKind)k);
        if (calls[n].worker < 0) rc = calls[n].worker;
        calls[n++].req = e;
    }
    if (rc == 0) rc = req_call(r, calls, n);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = req_expect(r, &calls[i], PLUMB__ENVELOPE__BODY_OK, "checkpoint");
    pool_calls_free(calls, n);
    wire_arena_free(&a);
    return rc;
}

void checkpoint_kept(Run *r, RoleKind k, const char *dir) {
    snprintf(r->live_dir[k], sizeof r->live_dir[k], "%s", dir);
    r->live_step[k] = r->step + 1;
    if (k == ROLE_ACTOR) r->live_version = r->adapter_version;
    /* the steps no role's copy is in any more */
    long oldest = r->live_step[k];
    for (int t = 0; t < ROLE_NKINDS; t++)
        if ((r->algo->trained & (1u << t)) && r->live_step[t] < oldest) oldest = r->live_step[t];
    for (long s = r->live_removed + 1; s < oldest; s++) {
        char old[CFG_PATH + 64];
        snprintf(old, sizeof old, "%s/.live/step-%06ld", r->cfg->run_dir, s);
        pl_rm_rf(old);
    }
    if (oldest - 1 > r->live_removed) r->live_removed = oldest - 1;
}

int checkpoint_write(Run *r, int export_hf) {
    char tmp[CFG_PATH + 64], dst[CFG_PATH + 64];
    ckpt_name(r, r->step, tmp, sizeof tmp, 1);
    ckpt_name(r, r->step, dst, sizeof dst, 0);
    pl_rm_rf(tmp);
    PL_TRY(pl_mkdirs(tmp));
    int rc = save_roles(r, tmp, export_hf);
    if (rc == 0) {
        char path[CFG_PATH + 128];
        snprintf(path, sizeof path, "%s/coordinator.json", tmp);
        char id[24];
        snprintf(id, sizeof id, "%016llx", (unsigned long long)r->run_id);
        json_t *j = json_pack("{s:s, s:I, s:I, s:f, s:I, s:I, s:I}", "run_id", id, "step",
                              (json_int_t)r->step, "seed",
                              (json_int_t)r->cfg->seed, "kl_coef", r->kl.kl_coef, "adapter_version",
                              (json_int_t)r->adapter_version, "data_epoch",
                              (json_int_t)(r->step * (long)r->cfg->batch_size / r->order.n),
                              "data_position",
                              (json_int_t)(r->step * (long)r->cfg->batch_size % r->order.n));
        if (!j || json_dump_file(j, path, JSON_INDENT(2)) != 0)
            rc = pl_fail(PL_EIO, "writing %s", path);
        json_decref(j);
        snprintf(path, sizeof path, "%s/config.yaml", tmp);
        FILE *f = rc == 0 ? fopen(path, "w") : NULL;
        if (rc == 0 && (!f || runcfg_write(r->cfg, f) < 0))
            rc = pl_fail(PL_EIO, "writing %s", path);
        if (f) fclose(f);
    }
    if (rc == 0 && r->stream) rc = stream_save(r, tmp);
    if (rc == 0) rc = pending_save(r, tmp);
    /* on disk before it is named: a crash of the machine, not only of the
     * process, leaves either the old checkpoint or the whole new one */
    if (rc == 0) rc = pl_fsync_tree(tmp);
    if (rc == 0) {
        /* a checkpoint of this step already there (a resumed run passing it
         * again) is moved aside first, never half removed under its name */
        char old[CFG_PATH + 64];
        snprintf(old, sizeof old, "%s/checkpoints/.step-%06ld.old", r->cfg->run_dir, r->step);
        pl_rm_rf(old);
        if (pl_exists(dst) && rename(dst, old) != 0)
            rc = pl_fail(PL_EIO, "rename %s: %s", dst, strerror(errno));
        if (rc == 0 && rename(tmp, dst) != 0)
            rc = pl_fail(PL_EIO, "rename %s: %s", tmp, strerror(errno));
        if (rc == 0) rc = pl_fsync_parent(dst);
        pl_rm_rf(old);
    }
    if (rc == 0 && r->stream) rc = stream_saved(r);
    if (rc < 0) return pl_wrap(rc, "checkpoint at step %ld", r->step);
    if (r->cfg->keep > 0) {
        /* keep the newest `keep` checkpoints */
        int kept = 0;
        for (long s = r->step; s >= 0; s--) {
            char old[CFG_PATH + 64];
            ckpt_name(r, s, old, sizeof old, 0);
            struct stat st;
            if (stat(old, &st) != 0) continue;
            if (++kept <= r->cfg->keep) continue;
            /* hidden before it is removed: a crash midway leaves no
             * half-removed checkpoint that resume could take */
            char gone[CFG_PATH + 64];
            snprintf(gone, sizeof gone, "%s/checkpoints/.step-%06ld.old", r->cfg->run_dir, s);
            if (rename(old, gone) == 0) pl_rm_rf(gone);
        }
    }
    return 0;
}

/* Whether the checkpoint whose coordinator.json is at path was written by
 * run run_id (any, for 0). */
static int of_run(const char *path, uint64_t run_id) {
    if (access(path, R_OK) != 0) return 0;
    if (!run_id) return 1;
    json_t *j = json_load_file(path, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "run_id"));
    int same = id && strtoull(id, NULL, 16) == run_id;
    json_decref(j);
    return same;
}

int coord_newest_checkpoint(const char *run_dir, uint64_t run_id, char *out, size_t cap) {
    char dir[CFG_PATH + 64];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    DIR *d = opendir(dir);
    long best = -1;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long s;
        char tail, f[CFG_PATH + 384];
        /* step-N only (.step-N.tmp is one being written); and with its
         * coordinator.json, in case something else left a folder there */
        if (sscanf(e->d_name, "step-%ld%c", &s, &tail) != 1 || s <= best) continue;
        snprintf(f, sizeof f, "%s/%s/coordinator.json", dir, e->d_name);
        if (of_run(f, run_id)) best = s;
    }
    if (d) closedir(d);
    if (best < 0) return pl_fail(PL_EIO, "%s has no checkpoint%s", dir, run_id ? " of this run" : "");
    return pl_path_fmt(out, cap, "%s/step-%06ld", dir, best);
}

int checkpoint_resume_dir(const char *path, char *out, size_t cap) {
    char f[CFG_PATH + 64];
    snprintf(f, sizeof f, "%s/coordinator.json", path);
    if (access(f, R_OK) == 0) {
        snprintf(out, cap, "%s", path);
        return 0;
    }
    if (coord_newest_checkpoint(path, 0, out, cap) < 0)
        return pl_fail(PL_EIO,
                       "--resume %s: neither a checkpoint (no coordinator.json) nor a "
                       "run folder with checkpoints",
                       path);
    return 0;
}

int checkpoint_load_state(Run *r) {
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/coordinator.json", r->resume_from);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, err.line, err.text);
    json_int_t step = -1, seed = 0, ver = 0;
    double kl = 0;
    int bad = json_unpack(j, "{s:I, s:I, s:F, s:I}", "step", &step, "seed", &seed, "kl_coef", &kl,
                          "adapter_version", &ver);
    json_decref(j);
    if (bad || step < 0)
        return pl_fail(PL_EFORMAT, "%s: missing step, seed, kl_coef or adapter_version", path);
    if ((uint64_t)seed != r->cfg->seed)
        return pl_fail(PL_EINVAL, "%s was written with run.seed %lld, this run has %llu", path,
                       (long long)seed, (unsigned long long)r->cfg->seed);
    r->step = (long)step;
    r->kl.kl_coef = kl;
    r->adapter_version = (uint64_t)ver;
    return pending_load(r, r->resume_from); /* rollouts made ahead, if any */
}
