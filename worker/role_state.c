/* role_state.c: a role's state on disk (role.h): save, resume, the
 * Hugging Face export and the checkpoint request. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"
#include "model/safetensors.h"
#include "worker/role.h"

static int head_save(const Model *m, const char *path) {
    int C = m->base->cfg.dim;
    StWrite ws[2] = {{.name = "weight", .data = m->head, .ndim = 1, .shape = {C}},
                     {.name = "bias", .data = m->head + C, .ndim = 1, .shape = {1}}};
    return st_write(path, ws, 2, ST_F32, NULL);
}

/* Reads tensor name of exactly n floats from f into dst. */
static int st_get(const StFile *f, const char *name, size_t n, float *dst) {
    const StTensor *t = st_find(f, name);
    if (!t) return pl_fail(PL_EFORMAT, "%s: no tensor '%s'", f->path, name);
    if (t->numel != n)
        return pl_fail(PL_EFORMAT, "%s: tensor '%s' has %zu elements, expected %zu", f->path, name,
                       t->numel, n);
    return st_copy_f32(f, t, dst);
}

int role_head_load(Role *r, const char *path) {
    Model *m = r->model;
    StFile f;
    PL_TRY(st_open(&f, path));
    int C = m->base->cfg.dim;
    int rc = st_get(&f, "weight", (size_t)C, m->head);
    if (rc == 0) rc = st_get(&f, "bias", 1, m->head + C);
    st_close(&f);
    return rc;
}

static int optim_save(const Role *r, const char *path) {
    StWrite ws[6];
    char names[6][16];
    for (int i = 0; i < r->n_opt; i++) {
        snprintf(names[2 * i], 16, "m_%d", i);
        snprintf(names[2 * i + 1], 16, "v_%d", i);
        ws[2 * i] = (StWrite){.name = names[2 * i], .data = r->opt[i].m, .ndim = 1,
                              .shape = {(int64_t)r->opt[i].n}};
        ws[2 * i + 1] = (StWrite){.name = names[2 * i + 1], .data = r->opt[i].v, .ndim = 1,
                                  .shape = {(int64_t)r->opt[i].n}};
    }
    return st_write(path, ws, 2 * r->n_opt, ST_F32, NULL);
}

static int optim_load(Role *r, const char *path) {
    StFile f;
    PL_TRY(st_open(&f, path));
    int rc = 0;
    for (int i = 0; rc == 0 && i < r->n_opt; i++) {
        char name[16];
        snprintf(name, sizeof name, "m_%d", i);
        rc = st_get(&f, name, r->opt[i].n, r->opt[i].m);
        snprintf(name, sizeof name, "v_%d", i);
        if (rc == 0) rc = st_get(&f, name, r->opt[i].n, r->opt[i].v);
    }
    if (rc == 0 && st_find(&f, "m_0") && r->n_opt == 0)
        rc = pl_fail(PL_EFORMAT, "%s: optimizer state for a role that trains nothing", path);
    st_close(&f);
    return rc;
}

static int state_save(const Role *r, const char *path) {
    json_t *o = json_object();
    PL_CHECK_ALLOC(o);
    json_object_set_new(o, "role", json_string(role_kind_name(r->kind)));
    json_object_set_new(o, "adapter_version", json_integer((json_int_t)r->adapter_version));
    json_object_set_new(o, "opt_step", json_integer((json_int_t)r->opt_step));
    char tmp[PL_PATH + 8];
    int rc = pl_path_fmt(tmp, sizeof tmp, "%s.tmp", path);
    if (rc == 0 && json_dump_file(o, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) rc = PL_EIO;
    json_decref(o);
    if (rc != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return pl_fail(PL_EIO, "writing %s failed", path);
    }
    return 0;
}

static int state_load(Role *r, const char *path) {
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    json_t *v = json_object_get(o, "adapter_version"), *s = json_object_get(o, "opt_step");
    int rc = 0;
    if (!json_is_integer(v) || !json_is_integer(s) || json_integer_value(v) < 0 ||
        json_integer_value(s) < 0)
        rc = pl_fail(PL_EFORMAT, "%s: needs non-negative integers adapter_version and opt_step",
                     path);
    else {
        r->adapter_version = (uint64_t)json_integer_value(v);
        r->opt_step = (long)json_integer_value(s);
    }
    json_decref(o);
    return rc;
}

int role_resume(Role *r, const char *rdir) {
    char path[PL_PATH];
    if (r->model->head) {
        PL_TRY(pl_path_join(path, sizeof path, rdir, "head.safetensors"));
        PL_TRY(role_head_load(r, path));
    }
    PL_TRY(pl_path_join(path, sizeof path, rdir, "state.json"));
    PL_TRY(state_load(r, path));
    if (r->n_opt) {
        PL_TRY(pl_path_join(path, sizeof path, rdir, "optimizer.safetensors"));
        PL_TRY(optim_load(r, path));
    }
    for (int i = 0; i < r->n_opt; i++) r->opt[i].step = r->opt_step;
    return 0;
}

int role_save(const Role *r, const char *dir) {
    const char *name = role_kind_name(r->kind);
    char rdir[PL_PATH], path[PL_PATH];
    int rc = pl_path_join(rdir, sizeof rdir, dir, name);
    if (rc == 0) rc = pl_mkdirs(rdir);
    const Model *m = r->model;
    if (rc == 0 && m->lora && (rc = pl_path_join(path, sizeof path, rdir, "adapter")) == 0)
        rc = lora_save_peft(m->lora, &r->base->cfg, path, r->base_path[0] ? r->base_path : NULL);
    if (rc == 0 && m->head && (rc = pl_path_join(path, sizeof path, rdir, "head.safetensors")) == 0)
        rc = head_save(m, path);
    if (rc == 0 && r->n_opt && (rc = pl_path_join(path, sizeof path, rdir, "optimizer.safetensors")) == 0)
        rc = optim_save(r, path);
    if (rc == 0 && r->own_base && (rc = pl_path_join(path, sizeof path, rdir, "model")) == 0)
        rc = base_save_hf(r->base, path);
    /* state.json last: its presence marks a complete save */
    if (rc == 0 && (rc = pl_path_join(path, sizeof path, rdir, "state.json")) == 0)
        rc = state_save(r, path);
    return rc < 0 ? pl_wrap(rc, "saving role %s into %s", name, dir) : 0;
}

int role_export_hf(const Role *r, const char *dir) {
    Base *copy = NULL;
    Lora *l = NULL;
    const Lora *src = r->model->lora;
    const ModelConfig *mc = &r->base->cfg;
    char path[PL_PATH], from[PL_PATH];
    int rc = pl_mkdirs(dir);
    if (rc == 0) rc = base_clone_flat(r->base, &copy);
    if (rc == 0 && src) {
        rc = lora_new(&l, mc, &src->cfg, 0);
        if (rc == 0) {
            memcpy(l->mem, src->mem, src->n * sizeof(float));
            rc = lora_merge(l, copy);
        }
    }
    if (rc == 0) rc = base_save_hf(copy, dir);
    static const char *const tok_files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; rc == 0 && r->tok_dir[0] && i < 2; i++) {
        if ((rc = pl_path_join(from, sizeof from, r->tok_dir, tok_files[i])) < 0) break;
        if (!pl_exists(from)) continue;
        if ((rc = pl_path_join(path, sizeof path, dir, tok_files[i])) == 0) rc = pl_copy_file(from, path);
    }
    if (rc == 0 && src && (rc = pl_path_join(path, sizeof path, dir, "adapter")) == 0)
        rc = lora_save_peft(src, mc, path, r->base_path[0] ? r->base_path : NULL);
    lora_free(&l);
    base_free(&copy);
    return rc < 0 ? pl_wrap(rc, "exporting role %s into %s", role_kind_name(r->kind), dir) : 0;
}

static int checkpoint(Role *r, const Plumb__CheckpointReq *q, int allow_export, WireArena *a,
                      Plumb__Envelope *rep) {
    if (!q->dir || !*q->dir) return pl_fail(PL_EPROTO, "checkpoint: no dir");
    PL_TRY(role_save(r, q->dir));
    if (q->export_hf && allow_export) {
        char path[PL_PATH];
        PL_TRY(pl_path_join(path, sizeof path, q->dir, "hf"));
        PL_TRY(role_export_hf(r, path));
    }
    return role_reply_ok(a, rep);
}

int role_on_checkpoint(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    return checkpoint(r, q->checkpoint, 0, a, rep);
}

int role_on_checkpoint_hf(Role *r, const Plumb__Envelope *q, WireArena *a, Plumb__Envelope *rep) {
    return checkpoint(r, q->checkpoint, 1, a, rep);
}
