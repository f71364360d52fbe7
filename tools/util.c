#include "util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

int arg_int(const char *opt, const char *s, long long lo, long long hi, int *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "plumb: %s expects an integer in [%lld, %lld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int arg_u64(const char *opt, const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "plumb: %s expects a non-negative integer, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_float(const char *opt, const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "plumb: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_ids(const char *opt, const char *s, int **ids, int *n) {
    size_t cap = 16, len = 0;
    int *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > 0x7fffffff ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            fprintf(stderr, "plumb: %s: item %zu is not a token id (non-negative integer): '%.20s'\n",
                    opt, len + 1, p);
            free(v);
            return -1;
        }
        if (len == cap) {
            int *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[len++] = (int)x;
        p = end;
    }
    if (len == 0) {
        fprintf(stderr, "plumb: %s: no token ids given\n", opt);
        free(v);
        return -1;
    }
    *ids = v;
    *n = (int)len;
    return 0;
}

void set_threads(int n) {
    if (n <= 0) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

void report_error(const char *cmd, const char *what) {
    fprintf(stderr, "plumb %s: %s%s%s\n", cmd, what ? what : "", what ? ": " : "", pl_error());
}

int open_device(const char *cmd, const char *spec, Device **dev) {
    if (dev_open(dev, spec) == 0) return 0;
    fprintf(stderr, "plumb %s: --device: %s\n", cmd, pl_error());
    return -1;
}

int load_model_on(const char *cmd, const char *path, const char *adapter, const char *spec,
                  int decode_copy, Device **dev, Base **base, Model **model) {
    *base = NULL;
    *model = NULL;
    if (open_device(cmd, spec ? spec : "cpu", dev) < 0) return -1;
    char what[4200];
    ModelOptions opt = {.dev = *dev, .decode_copy = decode_copy};
    Lora *l;
    snprintf(what, sizeof what, "loading model %s", path);
    if (base_load(base, path) < 0) goto fail;
    snprintf(what, sizeof what, "model on %s", (*dev)->name);
    if (model_new(model, *base, &opt) < 0) goto fail;
    snprintf(what, sizeof what, "loading adapter %s", adapter ? adapter : "");
    if (adapter && lora_load_peft(&l, &(*base)->cfg, adapter) < 0) goto fail;
    if (adapter && model_set_lora(*model, l) < 0) {
        lora_free(&l);
        goto fail;
    }
    return 0;
fail:
    report_error(cmd, what);
    model_free(model);
    base_free(base);
    dev_close(dev);
    return -1;
}

void print_json_floats(FILE *f, const float *x, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (isfinite(x[i])) fprintf(f, "%s%.9g", i ? ", " : "", x[i]);
        else fprintf(f, "%snull", i ? ", " : "");
    }
    fputc(']', f);
}

void print_json_ints(FILE *f, const int *x, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", x[i]);
    fputc(']', f);
}
