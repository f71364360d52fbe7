/* checkpoint.c: loading and saving a Base.
 *
 * Two sources: a Hugging Face folder (config.json + safetensors, one file
 * or shards listed by model.safetensors.index.json) whose F32 tensors are
 * used straight from the mapping, and a llama2.c .bin (legacy or version 1
 * export) read into one flat buffer.
 *
 * Dimension letters: V vocab, C channels, H MLP hidden, L layers, KVD the
 * key/value width NKV*HS, T the llama2.c seq_len, HS head size. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/err.h"
#include "common/fs.h"
#include "kernels/backend.h"
#include "safetensors.h"
#include "weights.h"

void base_free(Base **pb) {
    if (!pb || !*pb) return;
    Base *b = *pb;
    for (int i = 0; i < b->n_files; i++) st_close(&b->files[i]);
    free(b->files);
    free(b->heap);
    free(b->flat);
    weights_free(&b->w);
    if (b->dev) b->dev->be->free(b->dev, b->dflat);
    weights_free(&b->dw);
    param_table_free(&b->table);
    free(b);
    *pb = NULL;
}

static const char *join(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ------------------------------------------------------ Hugging Face dir */

/* Opens the shards named by index.json (each once, in order of first use). */
static int open_index(Base *b, const char *dir, const char *index_path) {
    json_error_t err;
    json_t *root = json_load_file(index_path, 0, &err);
    if (!root)
        return pl_fail(PL_EFORMAT, "%s:%d:%d: invalid JSON: %s", index_path, err.line,
                       err.column, err.text);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = pl_fail(PL_EFORMAT, "%s: missing object \"weight_map\"", index_path);
        goto out;
    }
    size_t cap = json_object_size(wm);
    const char **names = calloc(cap ? cap : 1, sizeof *names);
    b->files = calloc(cap ? cap : 1, sizeof *b->files);
    if (!names || !b->files) {
        free(names);
        rc = pl_fail(PL_ENOMEM, "out of memory");
        goto out;
    }
    int n_names = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = pl_fail(PL_EFORMAT, "%s: weight_map[\"%s\"] must be a file name", index_path,
                         key);
            break;
        }
        const char *shard = json_string_value(v);
        if (shard[0] == '/' || strstr(shard, "..") || strchr(shard, '/')) {
            rc = pl_fail(PL_EFORMAT, "%s: shard name \"%s\" must be a plain file name",
                         index_path, shard);
            break;
        }
        int seen = 0;
        for (int i = 0; i < n_names && !seen; i++) seen = strcmp(names[i], shard) == 0;
        if (seen) continue;
        names[n_names++] = shard;
        char path[4096];
        join(path, sizeof path, dir, shard);
        if (!file_exists(path)) {
            rc = pl_fail(PL_EIO, "%s: shard file %s (listed for tensor \"%s\") is missing",
                         index_path, shard, key);
            break;
        }
        rc = st_open(&b->files[b->n_files], path);
        if (rc < 0) break;
        b->n_files++;
    }
    free(names);
out:
    json_decref(root);
    return rc;
}

static int find_tensor(const Base *b, const char *name, int *file, const StTensor **t) {
    for (int i = 0; i < b->n_files; i++) {
        const StTensor *x = st_find(&b->files[i], name);
        if (x) {
            *file = i;
            *t = x;
            return 1;
        }
    }
    return 0;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int mappable(const StFile *f, const StTensor *t) {
    uintptr_t p = (uintptr_t)f->map + f->data_start + t->begin;
    return t->dtype == ST_F32 && (p & 3) == 0;
}

/* Rejects tensors that would change the math but that the table has no
 * place for (o_proj / MLP biases); other extras (rotary inv_freq, a tied
 * lm_head copy) are ignored. */
static int check_extras(const Base *b) {
    for (int i = 0; i < b->n_files; i++) {
        const StFile *f = &b->files[i];
        for (int j = 0; j < f->n; j++) {
            const char *name = f->t[j].name;
            size_t len = strlen(name);
            if (len > 5 && strcmp(name + len - 5, ".bias") == 0 &&
                !param_table_find(&b->table, name))
                return pl_fail(PL_ENOTSUP, "%s: tensor \"%s\" is a bias this model "
                               "(qkv_bias=%d) has no place for", f->path, name,
                               b->cfg.qkv_bias);
        }
    }
    return 0;
}

static int bind_tensors(Base *b, const char *dir) {
    const ParamTable *tab = &b->table;
    size_t heap_floats = 0;
    for (int i = 0; i < tab->n; i++) {
        const Param *p = &tab->p[i];
        int fi;
        const StTensor *t;
        if (!find_tensor(b, p->name, &fi, &t))
            return pl_fail(PL_EFORMAT, "%s: tensor \"%s\" not found%s", dir, p->name,
                           p->kind == P_LM_HEAD ? " (config.json says the head is not tied)"
                                                : "");
        int64_t want[2] = {p->shape[0], p->shape[1]};
        int ok = t->ndim == p->ndim;
        for (int d = 0; ok && d < p->ndim; d++) ok = t->shape[d] == want[d];
        if (!ok) {
            char got[128], exp[64];
            shape_str(got, sizeof got, t->shape, t->ndim);
            shape_str(exp, sizeof exp, want, p->ndim);
            return pl_fail(PL_EFORMAT, "%s: tensor \"%s\" has shape %s, config.json implies %s",
                           b->files[fi].path, p->name, got, exp);
        }
        if (!mappable(&b->files[fi], t)) heap_floats += p->numel;
    }
    PL_TRY(check_extras(b));
    if (heap_floats) {
        b->heap = weights_alloc(heap_floats);
        if (!b->heap)
            return pl_fail(PL_ENOMEM, "%s: out of memory converting %zu floats", dir,
                           heap_floats);
    }
    size_t used = 0;
    for (int i = 0; i < tab->n; i++) {
        const Param *p = &tab->p[i];
        int fi = 0;
        const StTensor *t = NULL;
        if (!find_tensor(b, p->name, &fi, &t))
            return pl_fail(PL_EFORMAT, "%s: tensor \"%s\" not found", dir, p->name);
        float *ptr;
        if (mappable(&b->files[fi], t)) {
            int copied;
            PL_TRY(st_read_f32(&b->files[fi], t, &ptr, &copied));
        } else {
            ptr = b->heap + used;
            used += p->numel;
            PL_TRY(st_copy_f32(&b->files[fi], t, ptr));
        }
        *weights_slot(&b->w, p) = ptr;
    }
    if (b->cfg.tie_embeddings) b->w.lm_head = b->w.embed;
    return 0;
}

static int load_hf(Base *b, const char *dir) {
    char path[4096];
    PL_TRY(config_load_json(&b->cfg, join(path, sizeof path, dir, "config.json")));
    PL_TRY(config_load_generation(&b->cfg, join(path, sizeof path, dir,
                                                 "generation_config.json")));
    PL_TRY(param_table_build(&b->table, &b->cfg));
    PL_TRY(weights_init(&b->w, b->cfg.n_layers));

    if (file_exists(join(path, sizeof path, dir, "model.safetensors"))) {
        b->files = calloc(1, sizeof *b->files);
        PL_CHECK_ALLOC(b->files);
        PL_TRY(st_open(&b->files[0], path));
        b->n_files = 1;
    } else if (file_exists(join(path, sizeof path, dir, "model.safetensors.index.json"))) {
        PL_TRY(open_index(b, dir, path));
    } else {
        return pl_fail(PL_EIO, "%s: neither model.safetensors nor "
                       "model.safetensors.index.json found", dir);
    }
    return bind_tensors(b, dir);
}

/* --------------------------------------------------------- llama2.c .bin */

#define L2C_MAGIC 0x616b3432u /* "ak42" */
#define L2C_V1_HEADER 256

static const Param *find_param(const ParamTable *t, ParamKind kind, int layer) {
    for (int i = 0; i < t->n; i++)
        if (t->p[i].kind == kind && t->p[i].layer == layer) return &t->p[i];
    return NULL;
}

/* Reads, for every layer in turn (or once for a model-level tensor), the
 * tensor of this kind into its place in the flat buffer. */
static int read_kind(Base *b, FILE *fp, ParamKind kind, int per_layer, const char *path) {
    int n = per_layer ? b->cfg.n_layers : 1;
    for (int l = 0; l < n; l++) {
        const Param *p = find_param(&b->table, kind, per_layer ? l : -1);
        if (!p) return pl_fail(PL_EINVAL, "%s: internal: no tensor of kind %d", path, kind);
        if (fread(b->flat + p->offset, sizeof(float), p->numel, fp) != p->numel)
            return pl_fail(PL_EIO, "%s: short read of %s", path, p->name);
    }
    return 0;
}

static int load_llama2c(Base *b, const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    int rc = 0;
    int32_t hdr[9];
    long long fsize;
    if (fseek(fp, 0, SEEK_END) != 0 || (fsize = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        rc = pl_fail(PL_EIO, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    if (fsize < 28) {
        rc = pl_fail(PL_EFORMAT, "%s: %lld bytes, too short for a llama2.c header", path, fsize);
        goto out;
    }
    if (fread(hdr, 4, 7, fp) != 7) {
        rc = pl_fail(PL_EIO, "%s: cannot read the header", path);
        goto out;
    }
    int version = 0, shared;
    const int32_t *p7 = hdr;
    long long header_bytes = 28;
    if ((uint32_t)hdr[0] == L2C_MAGIC) {
        version = hdr[1];
        if (version != 1) {
            rc = pl_fail(PL_ENOTSUP, "%s: llama2.c export version %d is not supported "
                         "(legacy and version 1 fp32 only)", path, version);
            goto out;
        }
        if (fsize < L2C_V1_HEADER || fread(hdr + 7, 4, 2, fp) != 2) {
            rc = pl_fail(PL_EFORMAT, "%s: truncated version 1 header", path);
            goto out;
        }
        unsigned char flag;
        if (fseek(fp, 36, SEEK_SET) != 0 || fread(&flag, 1, 1, fp) != 1) {
            rc = pl_fail(PL_EIO, "%s: cannot read the header", path);
            goto out;
        }
        p7 = hdr + 2;
        shared = flag != 0;
        header_bytes = L2C_V1_HEADER;
    } else {
        shared = hdr[5] > 0; /* negative vocab_size: unshared classifier */
    }
    int C = p7[0], H = p7[1], L = p7[2], NH = p7[3], NKV = p7[4], T = p7[6];
    int V = p7[5] < 0 ? -p7[5] : p7[5];
    if (C <= 0 || H <= 0 || L <= 0 || NH <= 0 || NKV <= 0 || V <= 0 || T <= 0 ||
        C % NH != 0 || NH % NKV != 0 || (C / NH) % 2 != 0) {
        rc = pl_fail(PL_EFORMAT, "%s: bad llama2.c header (dim %d hidden %d layers %d heads %d "
                     "kv_heads %d vocab %d seq_len %d)", path, C, H, L, NH, NKV, p7[5], T);
        goto out;
    }
    ModelConfig *c = &b->cfg;
    config_defaults(c);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->vocab_size = V;
    c->dim = C;
    c->hidden_dim = H;
    c->n_layers = L;
    c->n_heads = NH;
    c->n_kv_heads = NKV;
    c->head_dim = C / NH;
    c->max_seq_len = T;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->tie_embeddings = shared;
    c->qkv_bias = 0;
    c->rope_interleaved = 1; /* Meta / llama2.c pair layout */
    /* llama2.c models separate documents with BOS, and run.c stops when it
     * samples it: generation here stops on 1 too (it is kept as the last id) */
    c->bos_id = 1;
    c->eos_ids[0] = 1;
    c->n_eos = 1;
    rc = param_table_build(&b->table, c);
    if (rc < 0) {
        rc = pl_wrap(rc, "%s (its llama2.c header)", path);
        goto out;
    }

    long long HS = C / NH;
    long long freq = version == 0 ? 2LL * T * HS / 2 : 0; /* freq_cis real and imag */
    long long expect = header_bytes + 4 * ((long long)b->table.total + freq);
    if (fsize != expect) {
        rc = pl_fail(PL_EFORMAT, "%s: expected %lld bytes for this llama2.c header "
                     "(dim %d, layers %d, vocab %d, seq_len %d, %s classifier), file has %lld "
                     "(truncated or wrong format)", path, expect, C, L, V, T,
                     shared ? "shared" : "separate", fsize);
        goto out;
    }
    rc = weights_init(&b->w, L);
    if (rc < 0) goto out;
    b->flat = weights_alloc(b->table.total);
    if (!b->flat) {
        rc = pl_fail(PL_ENOMEM, "%s: out of memory for %zu floats", path, b->table.total);
        goto out;
    }
    if (fseek(fp, header_bytes, SEEK_SET) != 0) {
        rc = pl_fail(PL_EIO, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    /* llama2.c's w1 is the gate, w2 the down and w3 the up projection. */
    static const ParamKind legacy[] = {P_EMBED, P_ATTN_NORM, P_WQ, P_WK, P_WV, P_WO,
                                       P_MLP_NORM, P_GATE, P_DOWN, P_UP, P_FINAL_NORM};
    static const ParamKind v1[] = {P_ATTN_NORM, P_MLP_NORM, P_FINAL_NORM, P_EMBED, P_WQ,
                                   P_WK, P_WV, P_WO, P_GATE, P_DOWN, P_UP};
    const ParamKind *order = version == 0 ? legacy : v1;
    for (int i = 0; i < 11 && rc == 0; i++) {
        ParamKind k = order[i];
        rc = read_kind(b, fp, k, k != P_EMBED && k != P_FINAL_NORM, path);
    }
    if (rc == 0 && freq && fseek(fp, 4 * freq, SEEK_CUR) != 0)
        rc = pl_fail(PL_EIO, "%s: cannot seek: %s", path, strerror(errno));
    if (rc == 0 && !shared) rc = read_kind(b, fp, P_LM_HEAD, 0, path);
    if (rc == 0) weights_bind_flat(&b->w, &b->table, b->flat, shared);
out:
    fclose(fp);
    return rc;
}

/* ------------------------------------------------------------ public API */

int base_load(Base **out, const char *path) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    Base *b = calloc(1, sizeof *b);
    PL_CHECK_ALLOC(b);
    int rc;
    if (S_ISDIR(st.st_mode)) rc = load_hf(b, path);
    else if (S_ISREG(st.st_mode)) rc = load_llama2c(b, path);
    else rc = pl_fail(PL_EINVAL, "%s: neither a directory nor a file", path);
    if (rc < 0) {
        base_free(&b);
        return rc;
    }
    *out = b;
    return 0;
}

/* b's tensors, wherever they live, in the table's flat layout. */
static float *flat_copy(const Base *b) {
    float *flat = weights_alloc(b->table.total);
    if (!flat) {
        pl_fail(PL_ENOMEM, "out of memory for a copy of %zu floats of weights", b->table.total);
        return NULL;
    }
    Weights *w = (Weights *)&b->w; /* weights_slot only reads through it here */
    for (int i = 0; i < b->table.n; i++) {
        const Param *p = &b->table.p[i];
        memcpy(flat + p->offset, *weights_slot(w, p), p->numel * sizeof(float));
    }
    return flat;
}

int base_clone_flat(const Base *src, Base **out) {
    *out = NULL;
    Base *b = calloc(1, sizeof *b);
    PL_CHECK_ALLOC(b);
    b->cfg = src->cfg;
    int rc = param_table_build(&b->table, &b->cfg);
    if (rc == 0) rc = weights_init(&b->w, b->cfg.n_layers);
    if (rc == 0 && !(b->flat = flat_copy(src))) rc = PL_ENOMEM;
    if (rc < 0) {
        base_free(&b);
        return rc;
    }
    weights_bind_flat(&b->w, &b->table, b->flat, b->cfg.tie_embeddings);
    *out = b;
    return 0;
}

int base_make_flat(Base *b) {
    if (b->flat && !b->heap && b->n_files == 0) return 0;
    float *flat = flat_copy(b);
    if (!flat) return pl_wrap(PL_ENOMEM, "base_make_flat");
    weights_bind_flat(&b->w, &b->table, flat, b->cfg.tie_embeddings);
    for (int i = 0; i < b->n_files; i++) st_close(&b->files[i]);
    free(b->files);
    b->files = NULL;
    b->n_files = 0;
    free(b->heap);
    b->heap = NULL;
    free(b->flat);
    b->flat = flat;
    return 0;
}

int base_to_device(Base *b, Device *d) {
    if (b->dev == d) return 0;
    if (b->dev)
        return pl_fail(PL_EINVAL, "base weights are on %s already, not %s", b->dev->name, d->name);
    int flat_now = b->flat && !b->heap && b->n_files == 0;
    float *host = flat_now ? b->flat : flat_copy(b);
    if (!host) return pl_wrap(PL_ENOMEM, "base weights for %s", d->name);
    size_t bytes = sizeof(float) * b->table.total;
    float *dflat = d->be->alloc(d, bytes);
    d->be->upload(d, dflat, host, bytes);
    int rc = dev_sync(d); /* the copy is done before its source goes */
    if (!flat_now) free(host);
    if (rc == 0) rc = weights_init(&b->dw, b->cfg.n_layers);
    if (rc < 0) {
        d->be->free(d, dflat);
        return pl_wrap(rc, "base weights (%zu MiB) onto %s", bytes >> 20, d->name);
    }
    weights_bind_flat(&b->dw, &b->table, dflat, b->cfg.tie_embeddings);
    b->dev = d;
    b->dflat = dflat;
    return 0;
}

int base_upload(Base *b) {
    if (!b->dev) return 0;
    if (!b->flat || b->heap || b->n_files)
        return pl_fail(PL_EINVAL, "base_upload: the host weights are not flat");
    b->dev->be->upload(b->dev, b->dflat, b->flat, sizeof(float) * b->table.total);
    return dev_sync(b->dev);
}

int base_save_hf(const Base *b, const char *dir) {
    PL_TRY(pl_mkdirs(dir));
    char path[4096];
    PL_TRY(config_save_json(&b->cfg, join(path, sizeof path, dir, "config.json")));
    const ParamTable *t = &b->table;
    StWrite *ts = calloc((size_t)t->n, sizeof *ts);
    PL_CHECK_ALLOC(ts);
    Weights *w = (Weights *)&b->w; /* weights_slot only reads through it here */
    for (int i = 0; i < t->n; i++) {
        const Param *p = &t->p[i];
        ts[i].name = p->name;
        ts[i].data = *weights_slot(w, p);
        ts[i].ndim = p->ndim;
        ts[i].shape[0] = p->shape[0];
        ts[i].shape[1] = p->shape[1];
    }
    int rc = st_write(join(path, sizeof path, dir, "model.safetensors"), ts, t->n, ST_F32,
                      "{\"format\": \"pt\"}");
    free(ts);
    return rc;
}
