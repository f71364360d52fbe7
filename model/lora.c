/* lora.c: adapters, their PEFT files, merge and unmerge (see lora.h). */
#include "lora.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/rng.h"
#include "safetensors.h"
#include "weights.h"

static const char *const target_names[LORA_NT] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
static const char *const target_short[LORA_NT] = {"q", "k", "v", "o", "gate", "up", "down"};

const char *lora_target_name(int t) { return target_names[t]; }

static const char *target_parent(int t) { return t <= LORA_O ? "self_attn" : "mlp"; }

int lora_parse_targets(const char *s, unsigned *mask) {
    *mask = 0;
    if (!strcmp(s, "all")) {
        *mask = (1u << LORA_NT) - 1;
        return 0;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int found = -1;
        for (int t = 0; t < LORA_NT; t++)
            if (!strcmp(tok, target_names[t]) || !strcmp(tok, target_short[t])) found = t;
        if (found < 0)
            return pl_fail(PL_EINVAL,
                           "LoRA target '%s' is not one of q,k,v,o,gate,up,down (or q_proj, ...)", tok);
        *mask |= 1u << found;
    }
    if (!*mask) return pl_fail(PL_EINVAL, "LoRA targets: none given");
    return 0;
}

void lora_target_dims(const ModelConfig *c, int t, int *ic, int *oc) {
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    switch (t) {
    case LORA_Q: *ic = c->dim; *oc = QD; break;
    case LORA_K:
    case LORA_V: *ic = c->dim; *oc = KD; break;
    case LORA_O: *ic = QD; *oc = c->dim; break;
    case LORA_GATE:
    case LORA_UP: *ic = c->dim; *oc = c->hidden_dim; break;
    default: *ic = c->hidden_dim; *oc = c->dim; break;
    }
}

/* Allocates the flat buffer and points a/b at their tensors (zeroed). */
static int lora_alloc(Lora **out, const ModelConfig *c, const LoraConfig *lc) {
    *out = NULL;
    if (lc->rank <= 0) return pl_fail(PL_EINVAL, "LoRA rank must be positive, got %d", lc->rank);
    if (!(lc->alpha > 0)) return pl_fail(PL_EINVAL, "LoRA alpha must be positive");
    if (!lc->targets || lc->targets >= (1u << LORA_NT))
        return pl_fail(PL_EINVAL, "LoRA targets mask 0x%x is invalid", lc->targets);
    Lora *l = calloc(1, sizeof *l);
    PL_CHECK_ALLOC(l);
    l->cfg = *lc;
    l->n_layers = c->n_layers;
    l->scale = lc->alpha / (float)lc->rank;
    l->a = calloc((size_t)c->n_layers * LORA_NT, sizeof(float *));
    l->b = calloc((size_t)c->n_layers * LORA_NT, sizeof(float *));
    size_t n = 0;
    for (int t = 0; t < LORA_NT; t++) {
        if (!(lc->targets & (1u << t))) continue;
        int ic, oc;
        lora_target_dims(c, t, &ic, &oc);
        n += (size_t)c->n_layers * lc->rank * (size_t)(ic + oc);
    }
    l->n = n;
    l->mem = calloc(n, sizeof(float));
    if (!l->a || !l->b || !l->mem) {
        lora_free(&l);
        return pl_fail(PL_ENOMEM, "LoRA: out of memory");
    }
    size_t off = 0;
    for (int li = 0; li < c->n_layers; li++) {
        for (int t = 0; t < LORA_NT; t++) {
            if (!(lc->targets & (1u << t))) continue;
            int ic, oc;
            lora_target_dims(c, t, &ic, &oc);
            l->a[li * LORA_NT + t] = l->mem + off;
            off += (size_t)lc->rank * ic;
            l->b[li * LORA_NT + t] = l->mem + off;
            off += (size_t)oc * lc->rank;
        }
    }
    *out = l;
    return 0;
}

int lora_new(Lora **out, const ModelConfig *c, const LoraConfig *lc, unsigned long long seed) {
    PL_TRY(lora_alloc(out, c, lc));
    Lora *l = *out;
    Rng r;
    rng_seed2(&r, seed, 0x10a);
    for (int li = 0; li < c->n_layers; li++) {
        for (int t = 0; t < LORA_NT; t++) {
            float *a = l->a[li * LORA_NT + t];
            if (!a) continue;
            int ic, oc;
            lora_target_dims(c, t, &ic, &oc);
            float bound = 1.0f / sqrtf((float)ic);
            for (size_t i = 0; i < (size_t)lc->rank * ic; i++)
                a[i] = (2.0f * rng_uniform(&r) - 1.0f) * bound;
        }
    }
    return 0;
}

void lora_free(Lora **lp) {
    Lora *l = *lp;
    if (!l) return;
    free(l->a);
    free(l->b);
    free(l->mem);
    free(l);
    *lp = NULL;
}

/* ------------------------------------------------------------ PEFT I/O */

static void peft_name(char *buf, size_t n, int layer, int t, char ab) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             target_parent(t), target_names[t], ab);
}

static int mkdir_p(const char *dir) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return pl_fail(PL_EIO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return pl_fail(PL_EIO, "mkdir %s: %s", buf, strerror(errno));
    return 0;
}

int lora_save_peft(const Lora *l, const ModelConfig *c, const char *dir,
                   const char *base_model_name) {
    PL_TRY(mkdir_p(dir));
    json_t *cfg = json_object();
    json_t *targets = json_array();
    for (int t = 0; t < LORA_NT; t++)
        if (l->cfg.targets & (1u << t)) json_array_append_new(targets, json_string(target_names[t]));
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "r", json_integer(l->cfg.rank));
    json_object_set_new(cfg, "lora_alpha", json_real(l->cfg.alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(0.0));
    json_object_set_new(cfg, "target_modules", targets);
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "use_rslora", json_false());
    json_object_set_new(cfg, "use_dora", json_false());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "modules_to_save", json_null());
    json_object_set_new(cfg, "base_model_name_or_path",
                        base_model_name ? json_string(base_model_name) : json_null());
    char path[1100];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    int rc = json_dump_file(cfg, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    if (rc != 0) return pl_fail(PL_EIO, "writing %s failed", path);

    int nt = 0;
    for (int t = 0; t < LORA_NT; t++)
        if (l->cfg.targets & (1u << t)) nt++;
    int n = 2 * nt * l->n_layers;
    StWrite *ws = calloc((size_t)n, sizeof *ws);
    char (*names)[128] = calloc((size_t)n, sizeof *names);
    if (!ws || !names) {
        free(ws);
        free(names);
        return pl_fail(PL_ENOMEM, "LoRA save: out of memory");
    }
    int k = 0;
    for (int li = 0; li < l->n_layers; li++) {
        for (int t = 0; t < LORA_NT; t++) {
            if (!(l->cfg.targets & (1u << t))) continue;
            int ic, oc;
            lora_target_dims(c, t, &ic, &oc);
            peft_name(names[k], sizeof names[k], li, t, 'A');
            ws[k] = (StWrite){.name = names[k], .data = l->a[li * LORA_NT + t], .ndim = 2,
                              .shape = {l->cfg.rank, ic}};
            k++;
            peft_name(names[k], sizeof names[k], li, t, 'B');
            ws[k] = (StWrite){.name = names[k], .data = l->b[li * LORA_NT + t], .ndim = 2,
                              .shape = {oc, l->cfg.rank}};
            k++;
        }
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = st_write(path, ws, n, ST_F32, "{\"format\": \"pt\"}");
    free(ws);
    free(names);
    return rc;
}

static int json_num(const json_t *v, double *out) {
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

int lora_load_peft(Lora **out, const ModelConfig *c, const char *dir) {
    *out = NULL;
    char path[1100];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!cfg) return pl_fail(PL_EFORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    int rc = 0;
    LoraConfig lc = {0};
    double r, alpha;
    const json_t *pt = json_object_get(cfg, "peft_type");
    const json_t *tm = json_object_get(cfg, "target_modules");
    if (pt && (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))) {
        rc = pl_fail(PL_ENOTSUP, "%s: peft_type must be \"LORA\"", path);
    } else if (json_num(json_object_get(cfg, "r"), &r) < 0 || r < 1 || r != floor(r)) {
        rc = pl_fail(PL_EFORMAT, "%s: \"r\" must be a positive integer", path);
    } else if (json_num(json_object_get(cfg, "lora_alpha"), &alpha) < 0 || !(alpha > 0)) {
        rc = pl_fail(PL_EFORMAT, "%s: \"lora_alpha\" must be a positive number", path);
    } else if (json_is_true(json_object_get(cfg, "use_rslora")) ||
               json_is_true(json_object_get(cfg, "use_dora")) ||
               json_is_true(json_object_get(cfg, "fan_in_fan_out"))) {
        rc = pl_fail(PL_ENOTSUP, "%s: use_rslora, use_dora and fan_in_fan_out are not supported", path);
    } else if (!json_is_array(tm) || json_array_size(tm) == 0) {
        rc = pl_fail(PL_EFORMAT, "%s: \"target_modules\" must be a non-empty list", path);
    } else {
        lc.rank = (int)r;
        lc.alpha = (float)alpha;
        size_t i;
        json_t *v;
        json_array_foreach(tm, i, v) {
            unsigned bit;
            if (!json_is_string(v) || lora_parse_targets(json_string_value(v), &bit) < 0) {
                rc = pl_fail(PL_ENOTSUP, "%s: target module %s is not supported", path,
                             json_is_string(v) ? json_string_value(v) : "(not a string)");
                break;
            }
            lc.targets |= bit;
        }
    }
    json_decref(cfg);
    if (rc < 0) return rc;

    Lora *l;
    PL_TRY(lora_alloc(&l, c, &lc));
    StFile f;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = st_open(&f, path);
    if (rc < 0) {
        lora_free(&l);
        return rc;
    }
    char name[128];
    for (int li = 0; li < c->n_layers && rc == 0; li++) {
        for (int t = 0; t < LORA_NT && rc == 0; t++) {
            if (!(lc.targets & (1u << t))) continue;
            int ic, oc;
            lora_target_dims(c, t, &ic, &oc);
            for (int ab = 0; ab < 2 && rc == 0; ab++) {
                peft_name(name, sizeof name, li, t, ab ? 'B' : 'A');
                const StTensor *st = st_find(&f, name);
                /* PEFT also writes names without the ".weight" of the
                   adapter name, e.g. lora_A.default.weight: accept both */
                if (!st) {
                    char alt[160];
                    snprintf(alt, sizeof alt, "base_model.model.model.layers.%d.%s.%s.lora_%c.default.weight",
                             li, target_parent(t), target_names[t], ab ? 'B' : 'A');
                    st = st_find(&f, alt);
                }
                int rows = ab ? oc : lc.rank, cols = ab ? lc.rank : ic;
                if (!st) {
                    rc = pl_fail(PL_EFORMAT, "%s: tensor %s is missing", path, name);
                } else if (st->ndim != 2 || st->shape[0] != rows || st->shape[1] != cols) {
                    rc = pl_fail(PL_EFORMAT, "%s: tensor %s has the wrong shape (want [%d, %d])", path,
                                 name, rows, cols);
                } else {
                    rc = st_copy_f32(&f, st, ab ? l->b[li * LORA_NT + t] : l->a[li * LORA_NT + t]);
                }
            }
        }
    }
    st_close(&f);
    if (rc < 0) {
        lora_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ------------------------------------------------------- merge, unmerge */

float *lora_target_weight(const LayerWeights *lw, int t) {
    switch (t) {
    case LORA_Q: return lw->wq;
    case LORA_K: return lw->wk;
    case LORA_V: return lw->wv;
    case LORA_O: return lw->wo;
    case LORA_GATE: return lw->w_gate;
    case LORA_UP: return lw->w_up;
    default: return lw->w_down;
    }
}

/* W (OC, IC) += sign * scale * B (OC, R) @ A (R, IC) on every target. */
static int lora_fold(Lora *l, Base *b, float sign) {
    if (!b->flat) return pl_fail(PL_EINVAL, "LoRA merge needs flat base weights (base_make_flat)");
    const ModelConfig *c = &b->cfg;
    if (l->n_layers != c->n_layers) return pl_fail(PL_EINVAL, "LoRA merge: adapter and base differ in layers");
    int R = l->cfg.rank;
    for (int li = 0; li < c->n_layers; li++) {
        for (int t = 0; t < LORA_NT; t++) {
            const float *A = l->a[li * LORA_NT + t], *Bm = l->b[li * LORA_NT + t];
            if (!A) continue;
            int ic, oc;
            lora_target_dims(c, t, &ic, &oc);
            float *W = lora_target_weight(&b->w.layers[li], t);
            float s = sign * l->scale;
#pragma omp parallel for
            for (int o = 0; o < oc; o++) {
                float *wr = W + (size_t)o * ic;
                for (int r = 0; r < R; r++) {
                    float br = s * Bm[(size_t)o * R + r];
                    const float *ar = A + (size_t)r * ic;
                    for (int i = 0; i < ic; i++) wr[i] += br * ar[i];
                }
            }
        }
    }
    return 0;
}

int lora_merge(Lora *l, Base *b) {
    if (l->merged) return pl_fail(PL_EINVAL, "LoRA adapter is already merged");
    PL_TRY(lora_fold(l, b, 1.0f));
    l->merged = 1;
    return 0;
}

int lora_unmerge(Lora *l, Base *b) {
    if (!l->merged) return pl_fail(PL_EINVAL, "LoRA adapter is not merged");
    PL_TRY(lora_fold(l, b, -1.0f));
    l->merged = 0;
    return 0;
}
