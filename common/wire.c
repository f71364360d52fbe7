/* wire.c: building, packing and checked reading of plumb.proto messages. */
#include "wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/redis.h"
#include "model/weights.h"

/* ---------------------------------------------------------------- arena */

/* A list of blocks; every builder allocates from it. */
typedef struct ArenaBlock {
    struct ArenaBlock *next;
    max_align_t data[];
} ArenaBlock;

struct WireArena {
    ArenaBlock *head;
};

WireArena *wire_arena_new(void) { return calloc(1, sizeof(WireArena)); }

void wire_arena_free(WireArena **a) {
    if (!a || !*a) return;
    for (ArenaBlock *b = (*a)->head; b;) {
        ArenaBlock *n = b->next;
        free(b);
        b = n;
    }
    free(*a);
    *a = NULL;
}

void *wire_alloc(WireArena *a, size_t bytes) {
    ArenaBlock *b = calloc(1, sizeof(ArenaBlock) + (bytes ? bytes : 1));
    if (!b) return NULL;
    b->next = a->head;
    a->head = b;
    return b->data;
}

char *wire_strdup(WireArena *a, const char *s) {
    size_t n = strlen(s ? s : "");
    char *d = wire_alloc(a, n + 1);
    if (d) memcpy(d, s ? s : "", n);
    return d;
}

/* -------------------------------------------------------------- builders */

static size_t dtype_size(Plumb__DType dt) {
    switch (dt) {
    case PLUMB__DTYPE__DT_I32:
    case PLUMB__DTYPE__DT_F32: return 4;
    case PLUMB__DTYPE__DT_U8: return 1;
    default: return 0;
    }
}

static const char *dtype_name(Plumb__DType dt) {
    switch (dt) {
    case PLUMB__DTYPE__DT_I32: return "i32";
    case PLUMB__DTYPE__DT_F32: return "f32";
    case PLUMB__DTYPE__DT_U8: return "u8";
    default: return "invalid";
    }
}

Plumb__Tensor *wire_tensor(WireArena *a, Plumb__DType dt, const void *data, int ndim,
                           const int64_t *shape) {
    Plumb__Tensor *t = wire_alloc(a, sizeof *t);
    int64_t *sh = wire_alloc(a, sizeof(int64_t) * (ndim > 0 ? ndim : 1));
    if (!t || !sh) return NULL;
    plumb__tensor__init(t);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) sh[i] = shape[i], n *= (size_t)shape[i];
    t->dtype = dt;
    t->n_shape = ndim;
    t->shape = sh;
    t->data.len = n * dtype_size(dt);
    t->data.data = (uint8_t *)(t->data.len ? data : NULL);
    return t;
}

Plumb__Tensor *wire_f32(WireArena *a, const float *x, int n) {
    int64_t s = n;
    return wire_tensor(a, PLUMB__DTYPE__DT_F32, x, 1, &s);
}

Plumb__Tensor *wire_i32(WireArena *a, const int *x, int n) {
    int64_t s = n;
    return wire_tensor(a, PLUMB__DTYPE__DT_I32, x, 1, &s);
}

Plumb__Tensor *wire_u8(WireArena *a, const unsigned char *x, int n) {
    int64_t s = n;
    return wire_tensor(a, PLUMB__DTYPE__DT_U8, x, 1, &s);
}

Plumb__Seqs *wire_seqs(WireArena *a, const int *tokens, const int *offsets,
                       const unsigned char *mask, int B) {
    Plumb__Seqs *s = wire_alloc(a, sizeof *s);
    if (!s) return NULL;
    plumb__seqs__init(s);
    int N = B > 0 ? offsets[B] : 0;
    static const int zero = 0;
    s->tokens = wire_i32(a, tokens, N);
    s->offsets = wire_i32(a, B > 0 ? offsets : &zero, B + 1);
    if (mask) s->mask = wire_u8(a, mask, N);
    if (!s->tokens || !s->offsets || (mask && !s->mask)) return NULL;
    return s;
}

Plumb__Envelope *wire_envelope(WireArena *a, uint64_t id, const char *role) {
    Plumb__Envelope *e = wire_alloc(a, sizeof *e);
    if (!e) return NULL;
    plumb__envelope__init(e);
    e->protocol = PLUMB_PROTOCOL;
    e->id = id;
    if (role) e->role = wire_strdup(a, role);
    return e;
}

Plumb__Envelope *wire_error(WireArena *a, uint64_t id, int code, const char *message) {
    Plumb__Envelope *e = wire_envelope(a, id, NULL);
    Plumb__Error *err = wire_alloc(a, sizeof *err);
    if (!e || !err) return NULL;
    plumb__error__init(err);
    err->code = code;
    err->message = wire_strdup(a, message);
    e->body_case = PLUMB__ENVELOPE__BODY_ERROR;
    e->error = err;
    return e;
}

int wire_pack(const Plumb__Envelope *e, void **buf, size_t *len) {
    size_t n = plumb__envelope__get_packed_size(e);
    uint8_t *b = malloc(n ? n : 1);
    PL_CHECK_ALLOC(b);
    size_t got = plumb__envelope__pack(e, b);
    if (got != n) {
        free(b);
        return pl_fail(PL_EPROTO, "packing a message: %zu bytes written, %zu expected", got, n);
    }
    *buf = b;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------- receiving */

int wire_unpack(const void *buf, size_t len, size_t max_bytes, const char *from,
                Plumb__Envelope **out) {
    *out = NULL;
    if (!from) from = "peer";
    if (max_bytes && len > max_bytes)
        return pl_fail(PL_ERANGE, "message from %s is %zu bytes, over the limit of %zu", from,
                       len, max_bytes);
    Plumb__Envelope *e = plumb__envelope__unpack(NULL, len, buf);
    if (!e)
        return pl_fail(PL_EPROTO, "message from %s (%zu bytes) is not a plumb Envelope", from,
                       len);
    if (e->protocol != PLUMB_PROTOCOL) {
        unsigned v = e->protocol;
        plumb__envelope__free_unpacked(e, NULL);
        return pl_fail(PL_EPROTO, "message from %s speaks protocol %u; this build speaks %d",
                       from, v, PLUMB_PROTOCOL);
    }
    if (e->body_case == PLUMB__ENVELOPE__BODY__NOT_SET) {
        plumb__envelope__free_unpacked(e, NULL);
        return pl_fail(PL_EPROTO, "message from %s has no body (an unknown message type?)", from);
    }
    *out = e;
    return 0;
}

void wire_free(Plumb__Envelope **e) {
    if (!e || !*e) return;
    plumb__envelope__free_unpacked(*e, NULL);
    *e = NULL;
}

/* Checks a tensor's dtype and 1-d shape (n) and its byte count. */
static int check_tensor(const Plumb__Tensor *t, Plumb__DType dt, long n, const char *what) {
    if (!t) return pl_fail(PL_EPROTO, "%s: missing", what);
    if (t->dtype != dt)
        return pl_fail(PL_EPROTO, "%s: dtype %s, expected %s", what, dtype_name(t->dtype),
                       dtype_name(dt));
    if (t->n_shape != 1)
        return pl_fail(PL_EPROTO, "%s: %zu dimensions, expected 1", what, t->n_shape);
    if (t->shape[0] != n)
        return pl_fail(PL_EPROTO, "%s: shape (%lld), expected (%ld)", what,
                       (long long)t->shape[0], n);
    if (t->data.len != (size_t)n * dtype_size(dt))
        return pl_fail(PL_EPROTO, "%s: %zu bytes for shape (%ld) of %s", what, t->data.len, n,
                       dtype_name(dt));
    return 0;
}

void wire_seqs_free(WireSeqs *s) {
    if (!s) return;
    free(s->tokens);
    free(s->offsets);
    free(s->mask);
    free(s->maskf);
    memset(s, 0, sizeof *s);
}

int wire_get_seqs(const Plumb__Seqs *m, const WireLimits *lim, const char *what, WireSeqs *out) {
    memset(out, 0, sizeof *out);
    if (!m) return pl_fail(PL_EPROTO, "%s: missing", what);
    const Plumb__Tensor *to = m->offsets, *tt = m->tokens;
    if (!to || to->n_shape != 1 || to->shape[0] < 1 || to->shape[0] > (1 << 24))
        return pl_fail(PL_EPROTO, "%s.offsets: missing or not a (B+1) vector", what);
    long B = (long)to->shape[0] - 1;
    char name[160];
    snprintf(name, sizeof name, "%s.offsets", what);
    PL_TRY(check_tensor(to, PLUMB__DTYPE__DT_I32, B + 1, name));
    if (!tt || tt->n_shape != 1 || tt->shape[0] < 0 || tt->shape[0] > (1L << 30))
        return pl_fail(PL_EPROTO, "%s.tokens: missing or not an (N) vector", what);
    long N = (long)tt->shape[0];
    snprintf(name, sizeof name, "%s.tokens", what);
    PL_TRY(check_tensor(tt, PLUMB__DTYPE__DT_I32, N, name));
    if (lim && lim->max_tokens > 0 && N > lim->max_tokens)
        return pl_fail(PL_EPROTO, "%s: %ld tokens, over the limit of %ld", what, N,
                       lim->max_tokens);
    int *off = malloc(sizeof(int) * (B + 1));
    int *tok = malloc(sizeof(int) * (N ? N : 1));
    unsigned char *mask = calloc(N ? N : 1, 1);
    float *maskf = calloc(N ? N : 1, sizeof(float));
    if (!off || !tok || !mask || !maskf) {
        free(off), free(tok), free(mask), free(maskf);
        return pl_fail(PL_ENOMEM, "%s: out of memory for %ld tokens", what, N);
    }
    memcpy(off, to->data.data, sizeof(int) * (B + 1));
    if (N) memcpy(tok, tt->data.data, sizeof(int) * N);
    int rc = 0;
    if (off[0] != 0 || off[B] != N)
        rc = pl_fail(PL_EPROTO, "%s.offsets: run from %d to %d, expected 0 to %ld (tokens)",
                     what, off[0], off[B], N);
    for (long b = 0; rc == 0 && b < B; b++) {
        long len = (long)off[b + 1] - off[b];
        if (len < 1)
            rc = pl_fail(PL_EPROTO, "%s: sequence %ld has length %ld", what, b, len);
        else if (lim && lim->max_seq > 0 && len > lim->max_seq)
            rc = pl_fail(PL_EPROTO, "%s: sequence %ld has %ld tokens, over the context of %d",
                         what, b, len, lim->max_seq);
    }
    for (long t = 0; rc == 0 && lim && lim->vocab > 0 && t < N; t++)
        if (tok[t] < 0 || tok[t] >= lim->vocab)
            rc = pl_fail(PL_EPROTO, "%s.tokens[%ld] = %d is outside the vocabulary of %d", what,
                         t, tok[t], lim->vocab);
    if (rc == 0 && m->mask) {
        snprintf(name, sizeof name, "%s.mask", what);
        rc = check_tensor(m->mask, PLUMB__DTYPE__DT_U8, N, name);
        for (long t = 0; rc == 0 && t < N; t++) {
            mask[t] = m->mask->data.data[t];
            if (mask[t] > 1)
                rc = pl_fail(PL_EPROTO, "%s.mask[%ld] = %d, expected 0 or 1", what, t, mask[t]);
            maskf[t] = mask[t];
        }
    }
    if (rc < 0) {
        free(off), free(tok), free(mask), free(maskf);
        return rc;
    }
    out->B = (int)B, out->N = (int)N;
    out->tokens = tok, out->offsets = off, out->mask = mask, out->maskf = maskf;
    return 0;
}

int wire_get_f32(const Plumb__Tensor *t, long n, int finite, const char *what, float **out) {
    *out = NULL;
    PL_TRY(check_tensor(t, PLUMB__DTYPE__DT_F32, n, what));
    float *x = malloc(sizeof(float) * (n ? n : 1));
    PL_CHECK_ALLOC(x);
    if (n) memcpy(x, t->data.data, sizeof(float) * n);
    for (long i = 0; finite && i < n; i++)
        if (!isfinite(x[i])) {
            free(x);
            return pl_fail(PL_EPROTO, "%s[%ld] is not finite", what, i);
        }
    *out = x;
    return 0;
}

/* ------------------------------------------------------------ identity */

/* Appends len bytes to a growing buffer. */
static int put(unsigned char **buf, size_t *n, size_t *cap, const void *p, size_t len) {
    PL_TRY(pl_grow(buf, cap, *n + len, 1));
    memcpy(*buf + *n, p, len);
    *n += len;
    return 0;
}

int wire_fingerprint(const Base *b, char out[33]) {
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    const ModelConfig *c = &b->cfg;
    int dims[] = {c->vocab_size, c->dim,        c->hidden_dim,   c->n_layers,      c->n_heads,
                  c->n_kv_heads, c->head_dim,   c->max_seq_len,  c->tie_embeddings, c->qkv_bias,
                  c->rope_interleaved};
    int rc = put(&buf, &n, &cap, dims, sizeof dims);
    if (rc == 0) rc = put(&buf, &n, &cap, &c->rope_theta, sizeof c->rope_theta);
    Weights *w = (Weights *)&b->w;
    for (int i = 0; rc == 0 && i < b->table.n; i++) {
        const Param *p = &b->table.p[i];
        rc = put(&buf, &n, &cap, p->name, strlen(p->name) + 1);
        if (rc == 0) rc = put(&buf, &n, &cap, p->shape, sizeof p->shape);
        const float *x = *weights_slot(w, p);
        if (rc < 0 || !x) continue;
        size_t k = p->numel, edge = k < 1024 ? k : 1024; /* 4 KiB of floats */
        rc = put(&buf, &n, &cap, x, edge * sizeof(float));
        if (rc == 0) rc = put(&buf, &n, &cap, x + (k - edge), edge * sizeof(float));
        for (int s = 0; rc == 0 && s < 64; s++)
            rc = put(&buf, &n, &cap, &x[(size_t)s * (k / 64)], sizeof(float));
    }
    if (rc == 0) rds_hash_hex(buf, n, out);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- names */

/* The field of descriptor d numbered c: the oneof member a body case
 * names (protobuf-c's case values are the field numbers). */
static const char *field_name(const ProtobufCMessageDescriptor *d, unsigned c) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, c);
    return f ? f->name : NULL;
}

const char *wire_train_body_name(Plumb__TrainReq__BodyCase c) {
    const char *n = c ? field_name(&plumb__train_req__descriptor, (unsigned)c) : NULL;
    return n ? n : "?";
}

const char *wire_body_name(const Plumb__Envelope *e, char *buf, size_t cap) {
    const char *n = e && e->body_case ? field_name(&plumb__envelope__descriptor, e->body_case) : NULL;
    if (!n) snprintf(buf, cap, "an empty message");
    else if (e->body_case != PLUMB__ENVELOPE__BODY_TRAIN) snprintf(buf, cap, "%s", n);
    else if (!e->train || !e->train->body_case) snprintf(buf, cap, "train without a body");
    else snprintf(buf, cap, "train.%s", wire_train_body_name(e->train->body_case));
    return buf;
}
