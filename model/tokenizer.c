#define _GNU_SOURCE /* memmem */
/* tokenizer.c: loading tokenizer.json, decoding, lookups. Encoding is in
 * tokenizer_encode.c. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/tokenizer_internal.h"

/* ---------------------------------------------------------------- helpers */

uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

int tok_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Number of leading bytes of an invalid sequence that Rust's
 * from_utf8_lossy replaces by one U+FFFD (the maximal subpart, >= 1). */
static int utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    int k = 1;
    if (k < (int)n && s[k] >= lo && s[k] <= hi)
        k++;
    else
        return 1;
    while (k < len && k < (int)n && (s[k] & 0xC0) == 0x80)
        k++;
    return k;
}

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_put(Buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        PL_CHECK_ALLOC(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* Appends s with invalid UTF-8 replaced as Rust's from_utf8_lossy does. */
static int buf_put_lossy(Buf *b, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        int l;
        while (j < n && (l = tok_utf8_len(s + j, n - j)) > 0)
            j += l;
        PL_TRY(buf_put(b, s + i, j - i));
        if (j < n) {
            PL_TRY(buf_put(b, "\xEF\xBF\xBD", 3));
            j += utf8_bad_len(s + j, n - j);
        }
        i = j;
    }
    return 0;
}

/* GPT-2's byte <-> printable character table: bytes 33..126, 161..172,
 * 174..255 map to themselves, the rest to 256, 257, ... in order. */
static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) n++;
    return 256 + n;
}

static int cp_to_utf8(int cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Decodes one code point of valid UTF-8 at s; returns its length. */
static int utf8_cp(const unsigned char *s, int *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = (s[0] & 31) << 6 | (s[1] & 63);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = (s[0] & 15) << 12 | (s[1] & 63) << 6 | (s[2] & 63);
        return 3;
    }
    *cp = (s[0] & 7) << 18 | (s[1] & 63) << 12 | (s[2] & 63) << 6 | (s[3] & 63);
    return 4;
}

/* ------------------------------------------------------------------- maps */

int tok_map_get(const Tokenizer *t, const char *s, int len) {
    const StrMap *m = &t->vocab;
    for (uint32_t i = (uint32_t)tok_hash(s, len) & m->mask;; i = (i + 1) & m->mask) {
        int id = m->slot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == len && !memcmp(t->tok_str[id], s, len)) return id;
    }
}

static void map_put(Tokenizer *t, int id) {
    StrMap *m = &t->vocab;
    for (uint32_t i = (uint32_t)tok_hash(t->tok_str[id], t->tok_len[id]) & m->mask;;
         i = (i + 1) & m->mask)
        if (m->slot[i] < 0) {
            m->slot[i] = id;
            return;
        }
}

static void pair_put(PairMap *m, int a, int b, int rank, int merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t h = k * 0x9E3779B97F4A7C15ull;
    for (uint32_t i = (uint32_t)(h >> 32) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) return; /* a repeated merge keeps its first rank */
        if (m->key[i] == UINT64_MAX) {
            m->key[i] = k;
            m->rank[i] = rank;
            m->merged[i] = merged;
            return;
        }
    }
}

static uint32_t pow2_above(size_t n) {
    uint32_t c = 16;
    while (c < n * 2)
        c *= 2;
    return c;
}

/* ------------------------------------------------------------------- load */

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jbool(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int set_token(Tokenizer *t, int id, const char *s, size_t n, const char *path) {
    if (id < 0 || id >= t->n_tok)
        return pl_fail(PL_EFORMAT, "%s: token id %d out of range", path, id);
    if (t->tok_str[id]) {
        if ((size_t)t->tok_len[id] == n && !memcmp(t->tok_str[id], s, n)) return 0;
        free(t->tok_str[id]);
    }
    t->tok_str[id] = dupn(s, n);
    PL_CHECK_ALLOC(t->tok_str[id]);
    t->tok_len[id] = (int)n;
    return 0;
}

static int compile_re(pcre2_code **re, const char *pat, size_t n, int literal, const char *path) {
    int err;
    PCRE2_SIZE off;
    uint32_t flags = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    *re = pcre2_compile((PCRE2_SPTR)pat, n, flags, &err, &off, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return pl_fail(PL_EFORMAT, "%s: split pattern /%.*s/ at %zu: %s", path, (int)n, pat,
                       (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return 0;
}

/* arr (n elements of size bytes) grown by one zeroed element; NULL when out
 * of memory (arr is then unchanged). */
static void *grow_one(void *arr, int n, size_t size) {
    char *p = realloc(arr, size * ((size_t)n + 1));
    if (p) memset(p + size * (size_t)n, 0, size);
    return p;
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pretok(Tokenizer *t, json_t *o, const char *path) {
    if (json_is_null(o) || !o) return 0;
    const char *type = jstr(o, "type");
    if (!type) return pl_fail(PL_EFORMAT, "%s: pre_tokenizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "pretokenizers");
        if (!json_is_array(a))
            return pl_fail(PL_EFORMAT, "%s: Sequence pre_tokenizer without pretokenizers", path);
        size_t i;
        json_t *c;
        json_array_foreach(a, i, c) PL_TRY(load_pretok(t, c, path));
        return 0;
    }
    PreTok *p = grow_one(t->pre, t->n_pre, sizeof *p);
    PL_CHECK_ALLOC(p);
    t->pre = p;
    p += t->n_pre;
    if (!strcmp(type, "ByteLevel")) {
        p->type = PT_BYTELEVEL;
        p->add_prefix_space = jbool(o, "add_prefix_space", 1);
        p->use_regex = jbool(o, "use_regex", 1);
        if (p->use_regex) PL_TRY(compile_re(&p->re, GPT2_PATTERN, strlen(GPT2_PATTERN), 0, path));
        t->byte_level = 1;
    } else if (!strcmp(type, "Split")) {
        p->type = PT_SPLIT;
        json_t *pat = json_object_get(o, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (!re && !lit)
            return pl_fail(PL_EFORMAT, "%s: Split pre_tokenizer without a pattern", path);
        if (jbool(o, "invert", 0))
            return pl_fail(PL_ENOTSUP, "%s: Split with invert=true is not supported", path);
        const char *b = jstr(o, "behavior");
        if (!b || !strcmp(b, "Isolated"))
            p->behavior = SPLIT_ISOLATED;
        else if (!strcmp(b, "Removed"))
            p->behavior = SPLIT_REMOVED;
        else if (!strcmp(b, "MergedWithPrevious"))
            p->behavior = SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext"))
            p->behavior = SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous"))
            p->behavior = SPLIT_CONTIGUOUS;
        else
            return pl_fail(PL_ENOTSUP, "%s: Split behavior '%s' is not supported", path, b);
        const char *s = re ? re : lit;
        PL_TRY(compile_re(&p->re, s, strlen(s), !re, path));
    } else if (!strcmp(type, "Metaspace")) {
        p->type = PT_METASPACE;
        const char *r = jstr(o, "replacement");
        if (!r) r = "\xE2\x96\x81";
        p->repl = dupn(r, strlen(r));
        PL_CHECK_ALLOC(p->repl);
        p->repl_len = (int)strlen(r);
        const char *ps = jstr(o, "prepend_scheme");
        p->prepend = PREPEND_ALWAYS;
        if (ps && !strcmp(ps, "first"))
            p->prepend = PREPEND_FIRST;
        else if (ps && !strcmp(ps, "never"))
            p->prepend = PREPEND_NEVER;
        else if (!ps && !jbool(o, "add_prefix_space", 1))
            p->prepend = PREPEND_NEVER;
        p->split = jbool(o, "split", 1);
    } else if (!strcmp(type, "Digits")) {
        p->type = PT_DIGITS;
        p->individual = jbool(o, "individual_digits", 0);
    } else {
        return pl_fail(PL_ENOTSUP, "%s: pre_tokenizer type '%s' is not supported", path, type);
    }
    t->n_pre++;
    return 0;
}

static int load_normalizer(Tokenizer *t, json_t *o, const char *path) {
    if (json_is_null(o) || !o) return 0;
    const char *type = jstr(o, "type");
    if (!type) return pl_fail(PL_EFORMAT, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "normalizers");
        size_t i;
        json_t *c;
        json_array_foreach(a, i, c) PL_TRY(load_normalizer(t, c, path));
        return 0;
    }
    Normalizer *n = grow_one(t->norm, t->n_norm, sizeof *n);
    PL_CHECK_ALLOC(n);
    t->norm = n;
    n += t->n_norm;
    if (!strcmp(type, "Prepend")) {
        const char *s = jstr(o, "prepend");
        if (!s) return pl_fail(PL_EFORMAT, "%s: Prepend normalizer without prepend", path);
        n->type = NORM_PREPEND;
        n->a = dupn(s, strlen(s));
        n->a_len = (int)strlen(s);
    } else if (!strcmp(type, "Replace")) {
        const char *s = jstr(json_object_get(o, "pattern"), "String"), *c = jstr(o, "content");
        if (!s || !c || !*s)
            return pl_fail(PL_ENOTSUP,
                           "%s: Replace normalizer: only a non-empty String pattern is supported",
                           path);
        n->type = NORM_REPLACE;
        n->a = dupn(s, strlen(s));
        n->a_len = (int)strlen(s);
        n->b = dupn(c, strlen(c));
        n->b_len = (int)strlen(c);
    } else if (!strcmp(type, "NFC")) {
        n->type = NORM_NFC;
    } else if (!strcmp(type, "NFKC")) {
        n->type = NORM_NFKC;
    } else if (!strcmp(type, "NFD")) {
        n->type = NORM_NFD;
    } else if (!strcmp(type, "NFKD")) {
        n->type = NORM_NFKD;
    } else {
        return pl_fail(PL_ENOTSUP, "%s: normalizer type '%s' is not supported", path, type);
    }
    t->n_norm++;
    return 0;
}

static int load_decoder(Tokenizer *t, json_t *o, const char *path) {
    if (json_is_null(o) || !o) return 0;
    const char *type = jstr(o, "type");
    if (!type) return pl_fail(PL_EFORMAT, "%s: decoder without a type", path);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "decoders");
        size_t i;
        json_t *c;
        json_array_foreach(a, i, c) PL_TRY(load_decoder(t, c, path));
        return 0;
    }
    Decoder *d = grow_one(t->dec, t->n_dec, sizeof *d);
    PL_CHECK_ALLOC(d);
    t->dec = d;
    d += t->n_dec;
    if (!strcmp(type, "ByteLevel"))
        d->type = DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        d->type = DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        d->type = DEC_FUSE;
    else if (!strcmp(type, "Replace")) {
        const char *s = jstr(json_object_get(o, "pattern"), "String"), *c = jstr(o, "content");
        if (!s || !c || !*s)
            return pl_fail(PL_ENOTSUP, "%s: Replace decoder: only a String pattern is supported",
                           path);
        d->type = DEC_REPLACE;
        d->a = dupn(s, strlen(s));
        d->a_len = (int)strlen(s);
        d->b = dupn(c, strlen(c));
        d->b_len = (int)strlen(c);
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(o, "content");
        d->type = DEC_STRIP;
        d->strip_char = c && *c ? (unsigned char)c[0] : ' ';
        if (c && (unsigned char)c[0] >= 0x80)
            return pl_fail(PL_ENOTSUP, "%s: Strip decoder with a non-ASCII content", path);
        d->start = (int)json_integer_value(json_object_get(o, "start"));
        d->stop = (int)json_integer_value(json_object_get(o, "stop"));
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(o, "replacement");
        if (!r) r = "\xE2\x96\x81";
        d->type = DEC_METASPACE;
        d->a = dupn(r, strlen(r));
        d->a_len = (int)strlen(r);
        const char *ps = jstr(o, "prepend_scheme");
        d->prepend = ps && !strcmp(ps, "never") ? PREPEND_NEVER : PREPEND_ALWAYS;
        if (!ps && !jbool(o, "add_prefix_space", 1)) d->prepend = PREPEND_NEVER;
    } else {
        return pl_fail(PL_ENOTSUP, "%s: decoder type '%s' is not supported", path, type);
    }
    t->n_dec++;
    return 0;
}

static int added_compare(const void *a, const void *b) {
    const AddedTok *x = a, *y = b;
    return x->id - y->id;
}

/* The post-processor's single-sequence template: ids before and after $A. */
static int load_post(Tokenizer *t, json_t *o, const char *path) {
    if (!o || json_is_null(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type) return pl_fail(PL_EFORMAT, "%s: post_processor without a type", path);
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "processors");
        size_t i;
        json_t *c;
        json_array_foreach(a, i, c) PL_TRY(load_post(t, c, path));
        return 0;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(o, "single"), *sp = json_object_get(o, "special_tokens");
        size_t i;
        json_t *c;
        int seen_a = 0;
        t->n_prefix = t->n_suffix = 0;
        json_array_foreach(single, i, c) {
            json_t *st = json_object_get(c, "SpecialToken");
            if (!st) {
                seen_a = 1;
                continue;
            }
            const char *name = jstr(st, "id");
            json_t *ids = json_object_get(json_object_get(sp, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return pl_fail(PL_EFORMAT, "%s: post_processor: special token '%s' without ids",
                               path, name ? name : "?");
            size_t k;
            json_t *id;
            json_array_foreach(ids, k, id) {
                int *arr = seen_a ? t->suffix : t->prefix,
                    *cnt = seen_a ? &t->n_suffix : &t->n_prefix;
                if (*cnt >= 4)
                    return pl_fail(PL_ENOTSUP, "%s: post_processor template too long", path);
                arr[(*cnt)++] = (int)json_integer_value(id);
            }
        }
        return 0;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_object_get(o, "cls"), *sep = json_object_get(o, "sep");
        t->n_prefix = t->n_suffix = 1;
        t->prefix[0] = (int)json_integer_value(json_array_get(cls, 1));
        t->suffix[0] = (int)json_integer_value(json_array_get(sep, 1));
        return 0;
    }
    return pl_fail(PL_ENOTSUP, "%s: post_processor type '%s' is not supported", path, type);
}

/* bos_token / eos_token in tokenizer_config.json: a string or {"content": ...}. */
static int config_token(const Tokenizer *t, json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
    return s ? tok_token_id(t, s) : -1;
}

static int load_config(Tokenizer *t, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0; /* optional */
    fclose(f);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    t->bos = config_token(t, cfg, "bos_token");
    t->eos = config_token(t, cfg, "eos_token");
    json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
    if (json_is_boolean(ab) || json_is_boolean(ae)) {
        /* transformers rebuilds the template from these flags (Llama). */
        t->n_prefix = t->n_suffix = 0;
        if (json_is_true(ab) && t->bos >= 0) t->prefix[t->n_prefix++] = t->bos;
        if (json_is_true(ae) && t->eos >= 0) t->suffix[t->n_suffix++] = t->eos;
    }
    json_decref(cfg);
    return 0;
}

static int load_model_bpe(Tokenizer *t, json_t *model, json_t *added, const char *path) {
    const char *type = jstr(model, "type");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!type && json_is_object(vocab) && json_is_array(merges)) type = "BPE";
    if (!type) return pl_fail(PL_EFORMAT, "%s: model without a type", path);
    if (strcmp(type, "BPE"))
        return pl_fail(PL_ENOTSUP, "%s: model type '%s' is not supported (only BPE)", path, type);
    if (!json_is_object(vocab) || !json_is_array(merges))
        return pl_fail(PL_EFORMAT, "%s: BPE model needs a vocab object and a merges list", path);
    const char *csp = jstr(model, "continuing_subword_prefix"),
               *ews = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (ews && *ews))
        return pl_fail(PL_ENOTSUP,
                       "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported",
                       path);
    json_t *drop = json_object_get(model, "dropout");
    if (json_is_number(drop) && json_number_value(drop) > 0)
        return pl_fail(PL_ENOTSUP, "%s: BPE dropout is not supported", path);
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);

    /* vocab size: the largest id of the vocab and added tokens */
    int max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 26))
            return pl_fail(PL_EFORMAT, "%s: vocab entry '%s' has a bad id", path, k);
        if (json_integer_value(v) > max_id) max_id = (int)json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > (1 << 26))
            return pl_fail(PL_EFORMAT, "%s: added_tokens[%zu] has a bad id", path, i);
        if (json_integer_value(id) > max_id) max_id = (int)json_integer_value(id);
    }
    t->n_tok = max_id + 1;
    t->tok_str = calloc(t->n_tok, sizeof(char *));
    t->tok_len = calloc(t->n_tok, sizeof(int));
    t->is_special = calloc(t->n_tok, 1);
    PL_CHECK_ALLOC(t->tok_str);
    PL_CHECK_ALLOC(t->tok_len);
    PL_CHECK_ALLOC(t->is_special);
    json_object_foreach(vocab, k, v)
        PL_TRY(set_token(t, (int)json_integer_value(v), k, strlen(k), path));
    t->vocab.mask = pow2_above(json_object_size(vocab)) - 1;
    t->vocab.slot = malloc(sizeof(int32_t) * (t->vocab.mask + 1));
    PL_CHECK_ALLOC(t->vocab.slot);
    memset(t->vocab.slot, 0xff, sizeof(int32_t) * (t->vocab.mask + 1));
    json_object_foreach(vocab, k, v) {
        int id = (int)json_integer_value(v);
        if (tok_map_get(t, k, (int)strlen(k)) < 0) map_put(t, id);
    }

    /* merges: "a b" strings or ["a", "b"] pairs */
    size_t nm = json_array_size(merges);
    PairMap *pm = &t->merges;
    pm->mask = pow2_above(nm) - 1;
    pm->key = malloc(sizeof(uint64_t) * (pm->mask + 1));
    pm->rank = malloc(sizeof(int32_t) * (pm->mask + 1));
    pm->merged = malloc(sizeof(int32_t) * (pm->mask + 1));
    PL_CHECK_ALLOC(pm->key);
    PL_CHECK_ALLOC(pm->rank);
    PL_CHECK_ALLOC(pm->merged);
    memset(pm->key, 0xff, sizeof(uint64_t) * (pm->mask + 1));
    Buf cat = {0};
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(v)) {
            a = json_string_value(v);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(cat.p);
                return pl_fail(PL_EFORMAT, "%s: merges[%zu] \"%s\" is not two tokens", path, i, a);
            }
            al = sp - a;
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(v) && json_array_size(v) == 2 &&
                   json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
            a = json_string_value(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            al = strlen(a);
            bl = strlen(b);
        } else {
            free(cat.p);
            return pl_fail(PL_EFORMAT, "%s: merges[%zu] is neither \"a b\" nor [a, b]", path, i);
        }
        cat.n = 0;
        int rc = buf_put(&cat, a, al);
        if (!rc) rc = buf_put(&cat, b, bl);
        if (rc) {
            free(cat.p);
            return rc;
        }
        int ia = tok_map_get(t, a, (int)al), ib = tok_map_get(t, b, (int)bl);
        int im = tok_map_get(t, cat.p, (int)cat.n);
        if (ia < 0 || ib < 0 || im < 0) {
            int rc2 = pl_fail(PL_EFORMAT, "%s: merges[%zu] (%.*s, %.*s): %s not in the vocab", path,
                              i, (int)al, a, (int)bl, b,
                              ia < 0   ? "left token"
                              : ib < 0 ? "right token"
                                       : "merged token");
            free(cat.p);
            return rc2;
        }
        pair_put(pm, ia, ib, (int)i, im);
    }
    free(cat.p);

    const char *unk = jstr(model, "unk_token");
    t->unk_id = unk ? tok_map_get(t, unk, (int)strlen(unk)) : -1;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->bytefb_id[b] = tok_map_get(t, name, 6);
        if (b < 128) {
            char c = (char)b;
            t->ascii_id[b] = tok_map_get(t, &c, 1);
        }
    }
    return 0;
}

static int load_added(Tokenizer *t, json_t *added, const char *path) {
    size_t i;
    json_t *v;
    t->added = calloc(json_array_size(added) + 1, sizeof(AddedTok));
    PL_CHECK_ALLOC(t->added);
    json_array_foreach(added, i, v) {
        const char *c = jstr(v, "content");
        if (!c || !*c) return pl_fail(PL_EFORMAT, "%s: added_tokens[%zu] has no content", path, i);
        AddedTok *a = &t->added[t->n_added++];
        a->id = (int)json_integer_value(json_object_get(v, "id"));
        a->len = (int)strlen(c);
        a->content = dupn(c, a->len);
        PL_CHECK_ALLOC(a->content);
        a->special = jbool(v, "special", 0);
        a->lstrip = jbool(v, "lstrip", 0);
        a->rstrip = jbool(v, "rstrip", 0);
        a->single_word = jbool(v, "single_word", 0);
        a->normalized = jbool(v, "normalized", !a->special);
        PL_TRY(set_token(t, a->id, c, a->len, path));
        if (a->special) t->is_special[a->id] = 1;
    }
    qsort(t->added, t->n_added, sizeof(AddedTok), added_compare);
    return 0;
}

/* SentencePiece-style BPE sees a whole segment as one word ("▁a▁b", with
 * Metaspace split=false or the Replace normalizer). When no token of the
 * vocab holds the replacement after another character, no merge can cross
 * the spot before a "▁" that follows another character, so BPE may run on
 * the parts between such spots (and cache them) with the same result. */
static void find_ws_cut(Tokenizer *t) {
    const char *r = NULL;
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].type == PT_METASPACE) r = t->pre[i].repl;
    for (int i = 0; i < t->n_norm; i++)
        if (t->norm[i].type == NORM_REPLACE && t->norm[i].a_len == 1 && t->norm[i].a[0] == ' ')
            r = t->norm[i].b;
    if (!r || t->byte_level || t->ignore_merges || !*r || strlen(r) >= sizeof t->ws_cut) return;
    int rl = (int)strlen(r);
    if (tok_map_get(t, r, rl) < 0) return;
    for (int id = 0; id < t->n_tok; id++) {
        const char *s = t->tok_str[id];
        if (!s || tok_map_get(t, s, t->tok_len[id]) != id) continue;
        for (int j = 1; j + rl <= t->tok_len[id]; j++)
            if (!memcmp(s + j, r, rl) && (j < rl || memcmp(s + j - rl, r, rl))) return;
    }
    memcpy(t->ws_cut, r, rl);
    t->ws_cut_len = rl;
}

int tok_load(Tokenizer **out, const char *dir) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    fclose(f);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return pl_fail(PL_EFORMAT, "%s:%d: bad JSON: %s", path, je.line, je.text);
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return pl_fail(PL_ENOMEM, "out of memory loading %s", path);
    }
    t->bos = t->eos = t->unk_id = -1;
    for (int c = 0; c < 324; c++)
        t->cp_byte[c] = -1;
    for (int b = 0; b < 256; b++)
        t->cp_byte[byte_to_cp(b)] = (int16_t)b;
    json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    int rc = 0;
    if (!json_is_object(model)) rc = pl_fail(PL_EFORMAT, "%s: no \"model\" object", path);
    if (!rc && added && !json_is_null(added) && !json_is_array(added))
        rc = pl_fail(PL_EFORMAT, "%s: added_tokens is not a list", path);
    if (!rc) rc = load_model_bpe(t, model, added, path);
    if (!rc) rc = load_added(t, added, path);
    if (!rc) rc = load_normalizer(t, json_object_get(root, "normalizer"), path);
    if (!rc) rc = load_pretok(t, json_object_get(root, "pre_tokenizer"), path);
    if (!rc) rc = load_decoder(t, json_object_get(root, "decoder"), path);
    if (!rc) rc = load_post(t, json_object_get(root, "post_processor"), path);
    json_decref(root);
    if (!rc && t->byte_level) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            int l = cp_to_utf8(byte_to_cp(b), u);
            t->byte_id[b] = tok_map_get(t, u, l);
        }
    }
    for (int i = 0; !rc && i < t->n_added; i++) {
        AddedTok *a = &t->added[i];
        if (a->normalized && t->n_norm) {
            size_t nl;
            rc = tok_normalize(t, a->content, a->len, &a->norm, &nl);
            a->norm_len = (int)nl;
        }
        if (!a->norm) {
            a->norm = dupn(a->content, a->len);
            a->norm_len = a->len;
        }
        t->added_first[a->normalized][(unsigned char)a->norm[0]] = 1;
    }
    if (!rc) find_ws_cut(t);
    for (int i = 0; !rc && i < t->n_added; i++)
        if (t->added[i].single_word && !t->re_alnum) {
            static const char ALNUM[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
            rc = compile_re(&t->re_alnum, ALNUM, strlen(ALNUM), 0, path);
        }
    if (!rc) rc = load_config(t, dir);
    if (rc) {
        tok_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

void tok_free(Tokenizer **tp) {
    Tokenizer *t = *tp;
    if (!t) return;
    for (int i = 0; i < t->n_tok; i++)
        free(t->tok_str[i]);
    free(t->tok_str);
    free(t->tok_len);
    free(t->is_special);
    free(t->vocab.slot);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.merged);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++) {
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
        free(t->pre[i].repl);
    }
    free(t->pre);
    if (t->re_alnum) pcre2_code_free(t->re_alnum);
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    free(t);
    *tp = NULL;
}

/* ---------------------------------------------------------------- lookups */

int tok_vocab_size(const Tokenizer *t) { return t->n_tok; }
int tok_bos(const Tokenizer *t) { return t->bos; }
int tok_eos(const Tokenizer *t) { return t->eos; }

int tok_token_id(const Tokenizer *t, const char *s) {
    int len = (int)strlen(s);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && !memcmp(t->added[i].content, s, len)) return t->added[i].id;
    return tok_map_get(t, s, len);
}

const char *tok_token_str(const Tokenizer *t, int id) {
    return id >= 0 && id < t->n_tok ? t->tok_str[id] : NULL;
}

/* ----------------------------------------------------------------- decode */

/* The decoders work on a list of strings, as Hugging Face's decode_chain. */
typedef struct {
    Buf *s;
    int n;
} StrList;

static void list_free(StrList *l) {
    for (int i = 0; i < l->n; i++)
        free(l->s[i].p);
    free(l->s);
    l->s = NULL;
    l->n = 0;
}

/* Replaces every pat in s by rep, into a new Buf. */
static int replace_all(const Buf *s, const char *pat, int pl, const char *rep, int rl, Buf *o) {
    memset(o, 0, sizeof *o);
    PL_TRY(buf_put(o, "", 0));
    size_t i = 0;
    while (i < s->n) {
        const char *hit = pl <= (int)(s->n - i) ? memmem(s->p + i, s->n - i, pat, pl) : NULL;
        size_t end = hit ? (size_t)(hit - s->p) : s->n;
        PL_TRY(buf_put(o, s->p + i, end - i));
        if (!hit) break;
        PL_TRY(buf_put(o, rep, rl));
        i = end + pl;
    }
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int run_decoder(const Decoder *d, const int16_t *cp_byte, StrList *l) {
    StrList o = {calloc(l->n + 1, sizeof(Buf)), 0};
    PL_CHECK_ALLOC(o.s);
    int rc = 0;
    switch (d->type) {
    case DEC_BYTELEVEL: {
        Buf raw = {0};
        rc = buf_put(&raw, "", 0);
        for (int i = 0; !rc && i < l->n; i++) {
            const unsigned char *s = (const unsigned char *)l->s[i].p;
            size_t n = l->s[i].n, start = raw.n;
            int ok = 1;
            for (size_t j = 0; j < n && ok && !rc;) {
                int cp, len = tok_utf8_len(s + j, n - j);
                if (!len) {
                    ok = 0;
                    break;
                }
                utf8_cp(s + j, &cp);
                int b = cp < 324 ? cp_byte[cp] : -1;
                if (b < 0)
                    ok = 0;
                else {
                    unsigned char c = (unsigned char)b;
                    rc = buf_put(&raw, &c, 1);
                }
                j += len;
            }
            if (!ok && !rc) {
                raw.n = start;
                rc = buf_put(&raw, s, n);
            }
        }
        if (!rc) {
            memset(&o.s[0], 0, sizeof(Buf));
            rc = buf_put(&o.s[0], "", 0);
            if (!rc) rc = buf_put_lossy(&o.s[0], (unsigned char *)raw.p, raw.n);
            o.n = 1;
        }
        free(raw.p);
        break;
    }
    case DEC_REPLACE:
    case DEC_METASPACE:
        for (int i = 0; !rc && i < l->n; i++) {
            if (d->type == DEC_REPLACE)
                rc = replace_all(&l->s[i], d->a, d->a_len, d->b, d->b_len, &o.s[o.n]);
            else if (i == 0 &&
                     d->prepend != PREPEND_NEVER) /* HF drops every "▁" of the first token */
                rc = replace_all(&l->s[i], d->a, d->a_len, "", 0, &o.s[o.n]);
            else
                rc = replace_all(&l->s[i], d->a, d->a_len, " ", 1, &o.s[o.n]);
            o.n++;
        }
        break;
    case DEC_BYTEFALLBACK: {
        Buf bytes = {0};
        int nb = 0;
        for (int i = 0; !rc && i <= l->n; i++) {
            const Buf *s = i < l->n ? &l->s[i] : NULL;
            int h1, h2;
            if (s && s->n == 6 && !memcmp(s->p, "<0x", 3) && s->p[5] == '>' &&
                (h1 = hexval(s->p[3])) >= 0 && (h2 = hexval(s->p[4])) >= 0) {
                unsigned char c = (unsigned char)(h1 * 16 + h2);
                rc = buf_put(&bytes, &c, 1);
                nb++;
                continue;
            }
            if (nb) {
                Buf *dst = &o.s[o.n++];
                memset(dst, 0, sizeof *dst);
                rc = buf_put(dst, "", 0);
                int valid = 1;
                for (size_t j = 0; j < bytes.n && valid;) {
                    int len = tok_utf8_len((unsigned char *)bytes.p + j, bytes.n - j);
                    if (!len) valid = 0;
                    j += len;
                }
                if (valid)
                    rc = rc ? rc : buf_put(dst, bytes.p, bytes.n);
                else
                    for (int k = 0; !rc && k < nb; k++)
                        rc = buf_put(dst, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
                nb = 0;
            }
            if (s && !rc) {
                Buf *dst = &o.s[o.n++];
                memset(dst, 0, sizeof *dst);
                rc = buf_put(dst, s->p, s->n);
            }
        }
        free(bytes.p);
        break;
    }
    case DEC_FUSE:
        memset(&o.s[0], 0, sizeof(Buf));
        rc = buf_put(&o.s[0], "", 0);
        for (int i = 0; !rc && i < l->n; i++)
            rc = buf_put(&o.s[0], l->s[i].p, l->s[i].n);
        o.n = 1;
        break;
    case DEC_STRIP:
        for (int i = 0; !rc && i < l->n; i++) {
            const Buf *s = &l->s[i];
            size_t a = 0, b = s->n;
            for (int k = 0; k < d->start && a < b && (unsigned char)s->p[a] == d->strip_char; k++)
                a++;
            for (int k = 0; k < d->stop && b > a && (unsigned char)s->p[b - 1] == d->strip_char;
                 k++)
                b--;
            memset(&o.s[o.n], 0, sizeof(Buf));
            rc = buf_put(&o.s[o.n++], s->p + a, b - a);
        }
        break;
    }
    list_free(l);
    *l = o;
    if (rc) list_free(l);
    return rc;
}

int tok_decode(const Tokenizer *t, const int *ids, int n, int skip_special, char **text) {
    *text = NULL;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_tok || !t->tok_str[ids[i]])
            return pl_fail(PL_ERANGE, "decode: id %d (at %d) is not in the vocabulary (size %d)",
                           ids[i], i, t->n_tok);
    StrList l = {calloc(n + 1, sizeof(Buf)), 0};
    PL_CHECK_ALLOC(l.s);
    int rc = 0;
    for (int i = 0; !rc && i < n; i++) {
        if (skip_special && t->is_special[ids[i]]) continue;
        rc = buf_put(&l.s[l.n++], t->tok_str[ids[i]], t->tok_len[ids[i]]);
    }
    for (int i = 0; !rc && i < t->n_dec; i++)
        rc = run_decoder(&t->dec[i], t->cp_byte, &l);
    Buf all = {0};
    if (!rc) rc = buf_put(&all, "", 0);
    for (int i = 0; !rc && i < l.n; i++) {
        if (i && !t->n_dec) rc = buf_put(&all, " ", 1); /* no decoder: joined by spaces */
        if (!rc) rc = buf_put(&all, l.s[i].p, l.s[i].n);
    }
    list_free(&l);
    if (rc) {
        free(all.p);
        return rc;
    }
    *text = all.p;
    return 0;
}
