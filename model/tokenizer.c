#define _GNU_SOURCE /* memmem */
/* tokenizer.c: loading tokenizer.json, lookups, and the UTF-8 and buffer
 * helpers encoding and decoding share. Encoding is in tokenizer_encode.c,
 * decoding in tokenizer_decode.c. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/tokenizer_internal.h"

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

/* One stage of the pipeline (normalizer, pre_tokenizer or decoder): a
 * list that a "Sequence" object flattens into, and the reader of one
 * element of it, which fills the zeroed item from o. */
typedef struct {
    const char *what;    /* "pre_tokenizer"                       */
    const char *seq_key; /* the Sequence's list: "pretokenizers"  */
    size_t size;
    int (*one)(Tokenizer *t, json_t *o, const char *type, void *item, const char *path);
} Stage;

static int load_stage(Tokenizer *t, const Stage *s, void **arr, int *n, json_t *o,
                      const char *path) {
    if (json_is_null(o) || !o) return 0;
    const char *type = jstr(o, "type");
    if (!type) return pl_fail(PL_EFORMAT, "%s: %s without a type", path, s->what);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, s->seq_key);
        if (!json_is_array(a))
            return pl_fail(PL_EFORMAT, "%s: Sequence %s without %s", path, s->what, s->seq_key);
        size_t i;
        json_t *c;
        json_array_foreach(a, i, c) PL_TRY(load_stage(t, s, arr, n, c, path));
        return 0;
    }
    char *grown = grow_one(*arr, *n, s->size);
    PL_CHECK_ALLOC(grown);
    *arr = grown;
    PL_TRY(s->one(t, o, type, grown + s->size * (size_t)*n, path));
    (*n)++;
    return 0;
}

static int pretok_one(Tokenizer *t, json_t *o, const char *type, void *item, const char *path) {
    PreTok *p = item;
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
    return 0;
}

static int norm_one(Tokenizer *t, json_t *o, const char *type, void *item, const char *path) {
    (void)t;
    Normalizer *n = item;
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
    return 0;
}

static int dec_one(Tokenizer *t, json_t *o, const char *type, void *item, const char *path) {
    (void)t;
    Decoder *d = item;
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
    return 0;
}

static const Stage STAGE_PRE = {"pre_tokenizer", "pretokenizers", sizeof(PreTok), pretok_one};
static const Stage STAGE_NORM = {"normalizer", "normalizers", sizeof(Normalizer), norm_one};
static const Stage STAGE_DEC = {"decoder", "decoders", sizeof(Decoder), dec_one};

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
    PlBuf cat = {0};
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
        int rc = pl_buf_put(&cat, a, al);
        if (!rc) rc = pl_buf_put(&cat, b, bl);
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
        t->cp_byte[tok_byte_to_cp(b)] = (int16_t)b;
    json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    int rc = 0;
    if (!json_is_object(model)) rc = pl_fail(PL_EFORMAT, "%s: no \"model\" object", path);
    if (!rc && added && !json_is_null(added) && !json_is_array(added))
        rc = pl_fail(PL_EFORMAT, "%s: added_tokens is not a list", path);
    if (!rc) rc = load_model_bpe(t, model, added, path);
    if (!rc) rc = load_added(t, added, path);
    /* through void * and back: load_stage grows any of the three lists */
    void *norm = NULL, *pre = NULL, *dec = NULL;
    json_t *jn = json_object_get(root, "normalizer"), *jp = json_object_get(root, "pre_tokenizer"),
           *jd = json_object_get(root, "decoder");
    if (!rc) rc = load_stage(t, &STAGE_NORM, &norm, &t->n_norm, jn, path);
    t->norm = norm;
    if (!rc) rc = load_stage(t, &STAGE_PRE, &pre, &t->n_pre, jp, path);
    t->pre = pre;
    if (!rc) rc = load_stage(t, &STAGE_DEC, &dec, &t->n_dec, jd, path);
    t->dec = dec;
    if (!rc) rc = load_post(t, json_object_get(root, "post_processor"), path);
    json_decref(root);
    if (!rc && t->byte_level) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            int l = tok_cp_to_utf8(tok_byte_to_cp(b), u);
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
