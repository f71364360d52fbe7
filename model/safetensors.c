/* safetensors.c: mmap reader and tmp+rename writer for safetensors files.
 *
 * The reader checks every tensor's dtype, shape and byte range against the
 * file before anyone touches the data, so a corrupt or truncated file fails
 * at open with a message naming the file and the tensor, never with a
 * SIGBUS later. Assumes a little-endian host, as the format does. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/err.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER (100u << 20) /* 100 MiB: far above any real header */

static const char *const dtype_names[] = {"F32", "F16", "BF16", "F64", "I64",
                                          "I32", "I16", "I8",   "U8",  "BOOL"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

size_t st_dtype_size(StDtype d) {
    return (unsigned)d < sizeof dtype_sizes / sizeof *dtype_sizes ? dtype_sizes[d] : 0;
}

const char *st_dtype_name(StDtype d) {
    return (unsigned)d < sizeof dtype_names / sizeof *dtype_names ? dtype_names[d] : "?";
}

static int dtype_parse(const char *s, StDtype *d) {
    for (int i = 0; i < (int)(sizeof dtype_names / sizeof *dtype_names); i++) {
        if (strcmp(s, dtype_names[i]) == 0) {
            *d = (StDtype)i;
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ conversions */

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) {                      /* inf / nan: keep the payload */
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {                  /* normal: rebias 15 -> 127 */
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {                  /* signed zero */
        u = sign;
    } else {                                /* subnormal: man * 2^-24, normalize */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest, ties to even; nan stays a (quiet) nan. */
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static void convert(float *dst, const unsigned char *src, StDtype d, size_t n) {
    switch (d) {
    case ST_F32: memcpy(dst, src, n * 4); break;
/* each element read through memcpy: src need not be aligned */
#define CONV(TAG, T, TO_F32)                                                                       \
    case TAG:                                                                                      \
        for (size_t i = 0; i < n; i++) {                                                           \
            T x;                                                                                   \
            memcpy(&x, src + sizeof(T) * i, sizeof(T));                                            \
            dst[i] = TO_F32(x);                                                                    \
        }                                                                                          \
        break;
#define AS_FLOAT(x) ((float)(x))
        CONV(ST_F16, uint16_t, f16_to_f32)
        CONV(ST_BF16, uint16_t, bf16_to_f32)
        CONV(ST_F64, double, AS_FLOAT)
        CONV(ST_I64, int64_t, AS_FLOAT)
        CONV(ST_I32, int32_t, AS_FLOAT)
        CONV(ST_I16, int16_t, AS_FLOAT)
        CONV(ST_I8, int8_t, AS_FLOAT)
        CONV(ST_U8, uint8_t, AS_FLOAT)
#undef CONV
#undef AS_FLOAT
    case ST_BOOL:
        for (size_t i = 0; i < n; i++) dst[i] = src[i] ? 1.0f : 0.0f;
        break;
    }
}

/* ----------------------------------------------------------------- reading */

void st_close(StFile *f) {
    if (!f) return;
    if (f->map && f->size) munmap(f->map, f->size);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Parses one header entry into t (name already set). */
static int parse_tensor(StTensor *t, json_t *v, const char *path, size_t data_size) {
    const char *name = t->name;
    if (!json_is_object(v))
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": header entry is not an object", path,
                       name);
    json_t *dt = json_object_get(v, "dtype");
    json_t *sh = json_object_get(v, "shape");
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) ||
        json_array_size(off) != 2)
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": needs dtype (string), shape (list) "
                       "and data_offsets ([begin, end])", path, name);
    if (dtype_parse(json_string_value(dt), &t->dtype) != 0)
        return pl_fail(PL_ENOTSUP, "%s: tensor \"%s\": dtype %s is not supported", path, name,
                       json_string_value(dt));
    size_t nd = json_array_size(sh);
    if (nd > ST_MAX_DIMS)
        return pl_fail(PL_ENOTSUP, "%s: tensor \"%s\": %zu dimensions, at most %d", path,
                       name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": shape[%zu] is not a size", path,
                           name, i);
        t->shape[i] = json_integer_value(d);
        size_t s = (size_t)t->shape[i];
        if (s && numel > SIZE_MAX / 8 / s)
            return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": shape overflows", path, name);
        numel *= s;
    }
    t->numel = numel;
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < 0)
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": data_offsets must be two sizes", path,
                       name);
    t->begin = (size_t)json_integer_value(b);
    t->end = (size_t)json_integer_value(e);
    if (t->begin > t->end)
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": data_offsets begin %zu > end %zu", path,
                       name, t->begin, t->end);
    if (t->end > data_size)
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": data_offsets end %zu overruns the "
                       "data section (%zu bytes; file truncated?)", path, name, t->end,
                       data_size);
    size_t want = numel * st_dtype_size(t->dtype);
    if (t->end - t->begin != want)
        return pl_fail(PL_EFORMAT, "%s: tensor \"%s\": %s shape needs %zu bytes but "
                       "data_offsets span %zu", path, name, st_dtype_name(t->dtype), want,
                       t->end - t->begin);
    return 0;
}

static int parse_header(StFile *f, const char *hdr, size_t n) {
    json_error_t err;
    json_t *root = json_loadb(hdr, n, 0, &err);
    if (!root)
        return pl_fail(PL_EFORMAT, "%s: invalid JSON header at byte %d: %s", f->path,
                       err.position, err.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = pl_fail(PL_EFORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    size_t cap = json_object_size(root);
    f->t = calloc(cap ? cap : 1, sizeof *f->t);
    if (!f->t) {
        rc = pl_fail(PL_ENOMEM, "%s: out of memory for %zu tensors", f->path, cap);
        goto out;
    }
    size_t data_size = f->size - f->data_start;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        StTensor *t = &f->t[f->n];
        t->name = strdup(key);
        if (!t->name) {
            rc = pl_fail(PL_ENOMEM, "%s: out of memory", f->path);
            goto out;
        }
        f->n++;
        rc = parse_tensor(t, v, f->path, data_size);
        if (rc < 0) goto out;
    }
out:
    json_decref(root);
    return rc;
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return pl_fail(PL_ENOMEM, "out of memory");
    int rc = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        rc = pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = pl_fail(PL_EIO, "stat %s: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (st.st_size < 8) {
        rc = pl_fail(PL_EFORMAT, "%s: truncated: %lld bytes, a safetensors file has at "
                     "least 8", path, (long long)st.st_size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        rc = pl_fail(PL_EIO, "mmap %s: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->size = (size_t)st.st_size;

    uint64_t n;
    memcpy(&n, f->map, 8);
    if (n > f->size - 8) {
        rc = pl_fail(PL_EFORMAT, "%s: header length %llu exceeds the file (%zu bytes; "
                     "truncated or not safetensors)", path, (unsigned long long)n, f->size);
        goto fail;
    }
    if (n > ST_MAX_HEADER) {
        rc = pl_fail(PL_EFORMAT, "%s: header length %llu is larger than %u bytes", path,
                     (unsigned long long)n, ST_MAX_HEADER);
        goto fail;
    }
    f->data_start = 8 + (size_t)n;
    rc = parse_header(f, (const char *)f->map + 8, (size_t)n);
    if (rc < 0) goto fail;
    return 0;
fail:
    st_close(f);
    return rc;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

static const unsigned char *tensor_bytes(const StFile *f, const StTensor *t) {
    return (const unsigned char *)f->map + f->data_start + t->begin;
}

int st_copy_f32(const StFile *f, const StTensor *t, float *dst) {
    if (!f->map) return pl_fail(PL_EINVAL, "st_copy_f32: file not open");
    convert(dst, tensor_bytes(f, t), t->dtype, t->numel);
    return 0;
}

int st_read_f32(const StFile *f, const StTensor *t, float **out, int *copied) {
    const unsigned char *p = tensor_bytes(f, t);
    if (t->dtype == ST_F32 && ((uintptr_t)p & 3) == 0) {
        *out = (float *)p;
        *copied = 0;
        return 0;
    }
    float *dst = malloc(t->numel ? t->numel * sizeof(float) : 1);
    if (!dst)
        return pl_fail(PL_ENOMEM, "%s: out of memory converting tensor \"%s\" (%zu floats)",
                       f->path, t->name, t->numel);
    convert(dst, p, t->dtype, t->numel);
    *out = dst;
    *copied = 1;
    return 0;
}

/* ----------------------------------------------------------------- writing */

static char *build_header(const StWrite *ts, int n, StDtype dtype, const char *metadata_json,
                          const char *path, int *rc) {
    json_t *root = json_object();
    if (!root) {
        *rc = pl_fail(PL_ENOMEM, "out of memory");
        return NULL;
    }
    if (metadata_json) {
        json_error_t err;
        json_t *m = json_loads(metadata_json, 0, &err);
        int ok = m && json_is_object(m);
        const char *k;
        json_t *v;
        if (ok) json_object_foreach(m, k, v) if (!json_is_string(v)) ok = 0;
        if (!ok) {
            json_decref(m);
            json_decref(root);
            *rc = pl_fail(PL_EINVAL, "%s: metadata must be a JSON object of strings", path);
            return NULL;
        }
        json_object_set_new(root, "__metadata__", m);
    }
    size_t off = 0, esz = st_dtype_size(dtype);
    for (int i = 0; i < n; i++) {
        if (ts[i].ndim < 0 || ts[i].ndim > ST_MAX_DIMS || !ts[i].name) {
            json_decref(root);
            *rc = pl_fail(PL_EINVAL, "%s: tensor %d: bad name or ndim %d", path, i, ts[i].ndim);
            return NULL;
        }
        if (json_object_get(root, ts[i].name)) {
            json_decref(root);
            *rc = pl_fail(PL_EINVAL, "%s: tensor \"%s\" listed twice", path, ts[i].name);
            return NULL;
        }
        size_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].ndim; d++) {
            if (ts[i].shape[d] < 0) {
                json_decref(shape);
                json_decref(root);
                *rc = pl_fail(PL_EINVAL, "%s: tensor \"%s\": negative shape", path, ts[i].name);
                return NULL;
            }
            numel *= (size_t)ts[i].shape[d];
            json_array_append_new(shape, json_integer(ts[i].shape[d]));
        }
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + numel * esz)));
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(st_dtype_name(dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(root, ts[i].name, e);
        off += numel * esz;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s) *rc = pl_fail(PL_ENOMEM, "%s: out of memory for the header", path);
    return s;
}

static size_t tensor_numel(const StWrite *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

int st_write(const char *path, const StWrite *ts, int n, StDtype dtype,
             const char *metadata_json) {
    if (dtype != ST_F32 && dtype != ST_BF16)
        return pl_fail(PL_ENOTSUP, "%s: writing dtype %s is not supported (F32, BF16)", path,
                       st_dtype_name(dtype));
    int rc = 0;
    char *hdr = build_header(ts, n, dtype, metadata_json, path, &rc);
    if (!hdr) return rc;
    size_t hlen = strlen(hdr);
    size_t pad = (8 - (8 + hlen) % 8) % 8; /* data section starts 8-byte aligned */
    uint64_t n_hdr = hlen + pad;

    size_t plen = strlen(path) + 5;
    char *tmp = malloc(plen);
    if (!tmp) {
        free(hdr);
        return pl_fail(PL_ENOMEM, "out of memory");
    }
    snprintf(tmp, plen, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        rc = pl_fail(PL_EIO, "open %s: %s", tmp, strerror(errno));
        free(hdr);
        free(tmp);
        return rc;
    }
    int ok = fwrite(&n_hdr, 8, 1, fp) == 1 && fwrite(hdr, 1, hlen, fp) == hlen;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', fp) != EOF;
    free(hdr);
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = dtype == ST_BF16 ? malloc(CHUNK * sizeof *buf) : NULL;
    if (dtype == ST_BF16 && !buf) ok = 0;
    for (int i = 0; ok && i < n; i++) {
        size_t numel = tensor_numel(&ts[i]);
        if (numel && !ts[i].data) {
            fclose(fp);
            unlink(tmp);
            free(tmp);
            free(buf);
            return pl_fail(PL_EINVAL, "%s: tensor \"%s\" has no data", path, ts[i].name);
        }
        if (dtype == ST_F32) {
            ok = fwrite(ts[i].data, sizeof(float), numel, fp) == numel;
            continue;
        }
        for (size_t j = 0; ok && j < numel; j += CHUNK) {
            size_t m = numel - j < CHUNK ? numel - j : CHUNK;
            for (size_t k = 0; k < m; k++) buf[k] = f32_to_bf16(ts[i].data[j + k]);
            ok = fwrite(buf, 2, m, fp) == m;
        }
    }
    free(buf);
    int err = ok ? 0 : errno;
    if (fclose(fp) != 0) {
        err = errno;
        ok = 0;
    }
    if (!ok) {
        rc = pl_fail(PL_EIO, "write %s: %s", tmp, strerror(err ? err : EIO));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        rc = pl_fail(PL_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}
