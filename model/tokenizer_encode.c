#define _GNU_SOURCE /* memmem */
/* tokenizer_encode.c: text -> ids, in the order Hugging Face runs it:
 * added tokens on the raw text, the normalizer, added tokens marked
 * "normalized" on the normalized text, the pre-tokenizers, then BPE on each
 * piece (with a per-call cache of pieces already seen). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common/err.h"
#include "model/tokenizer_internal.h"

typedef struct {
    const char *p;
    size_t n;
    int first; /* starts at offset 0 of the original text        */
} Piece;

typedef struct {
    Piece *v;
    int n;
    size_t cap;
} Pieces;

typedef struct {
    int rank, pos, merged;
} Merge;

#define CACHE_BITS    16
#define CACHE_MAX_KEY 48

typedef struct {
    uint64_t h; /* 0: empty                                       */
    uint32_t key_off, key_len, ids_off, ids_n;
} CacheEnt;

typedef struct {
    const Tokenizer *t;
    int *ids; /* output                                                */
    int n;
    size_t cap;
    int *sym, *prev, *next; /* BPE symbols of the current piece               */
    int scap;
    Merge *heap;
    int hn, hcap;
    char *disp;
    size_t dcap; /* byte-level piece in vocab form (ignore_merges) */
    CacheEnt *cache;
    int cache_n;
    uint32_t cache_mask; /* slots - 1: sized by the text, up to 2^CACHE_BITS */
    char *ckey;
    size_t ckey_n, ckey_cap;
    int *cids;
    size_t cids_n, cids_cap;
    pcre2_match_data *md;
    char *stage[8];
    size_t stage_cap[8]; /* text written by pre-tokenizers     */
    Pieces pl[2];
} Enc;

/* ------------------------------------------------------------------ output */

static int push_id(Enc *e, int id) {
    PL_TRY(pl_grow(&e->ids, &e->cap, (size_t)e->n + 1, sizeof(int)));
    e->ids[e->n++] = id;
    return 0;
}

static int push_piece(Pieces *l, const char *p, size_t n, int first) {
    if (!n) return 0;
    PL_TRY(pl_grow(&l->v, &l->cap, (size_t)l->n + 1, sizeof(Piece)));
    l->v[l->n++] = (Piece){p, n, first};
    return 0;
}

/* -------------------------------------------------------------------- BPE */

static void heap_push(Enc *e, Merge m) {
    Merge *h = e->heap;
    int i = e->hn++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p].rank < m.rank || (h[p].rank == m.rank && h[p].pos <= m.pos)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static Merge heap_pop(Enc *e) {
    Merge *h = e->heap, top = h[0], last = h[--e->hn];
    int i = 0, n = e->hn;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n &&
            (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (last.rank < h[c].rank || (last.rank == h[c].rank && last.pos <= h[c].pos)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static int grow_syms(Enc *e, size_t n) {
    if ((int)n <= e->scap) return 0;
    int cap = e->scap ? e->scap : 64;
    while (cap < (int)n)
        cap *= 2;
    int *a = realloc(e->sym, sizeof(int) * cap),
        *b = a ? realloc(e->prev, sizeof(int) * cap) : NULL;
    if (a) e->sym = a;
    if (b) e->prev = b;
    int *c = b ? realloc(e->next, sizeof(int) * cap) : NULL;
    if (c) e->next = c;
    Merge *h = c ? realloc(e->heap, sizeof(Merge) * 3 * cap) : NULL;
    if (h) e->heap = h;
    if (!h) return pl_fail(PL_ENOMEM, "out of memory: BPE scratch for %zu symbols", n);
    e->scap = cap;
    e->hcap = 3 * cap;
    return 0;
}

/* Initial symbols of a piece: bytes (byte-level) or characters, with
 * byte_fallback and unk as Hugging Face's BPE does. */
static int init_syms(Enc *e, const unsigned char *s, size_t n) {
    const Tokenizer *t = e->t;
    int k = 0, last_unk = 0;
    for (size_t i = 0; i < n;) {
        int id, len;
        if (t->byte_level) {
            len = 1;
            id = t->byte_id[s[i]];
        } else if (s[i] < 0x80) {
            len = 1;
            id = t->ascii_id[s[i]];
        } else {
            len = tok_utf8_len(s + i, n - i);
            if (!len) len = 1;
            id = tok_map_get(t, (const char *)s + i, len);
        }
        if (id >= 0) {
            e->sym[k++] = id;
            last_unk = 0;
        } else {
            int fb = t->byte_fallback;
            for (int j = 0; fb && j < len; j++)
                fb = t->bytefb_id[s[i + j]] >= 0;
            if (fb) {
                for (int j = 0; j < len; j++)
                    e->sym[k++] = t->bytefb_id[s[i + j]];
                last_unk = 0;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && last_unk)) e->sym[k++] = t->unk_id;
                last_unk = 1;
            }
        }
        i += len;
    }
    return k;
}

static int bpe_word(Enc *e, const unsigned char *s, size_t n) {
    const Tokenizer *t = e->t;
    if (t->ignore_merges) {
        int id;
        if (t->byte_level) {
            if (e->dcap < 2 * n) {
                char *d = realloc(e->disp, 2 * n + 16);
                PL_CHECK_ALLOC(d);
                e->disp = d;
                e->dcap = 2 * n + 16;
            }
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                int b = t->byte_id[s[i]];
                const char *ts = b >= 0 ? t->tok_str[b] : NULL;
                if (!ts || t->tok_len[b] > 2) {
                    m = (size_t)-1;
                    break;
                }
                memcpy(e->disp + m, ts, t->tok_len[b]);
                m += t->tok_len[b];
            }
            id = m == (size_t)-1 ? -1 : tok_map_get(t, e->disp, (int)m);
        } else {
            id = tok_map_get(t, (const char *)s, (int)n);
        }
        if (id >= 0) return push_id(e, id);
    }
    PL_TRY(grow_syms(e, n * 4 + 4));
    int k = init_syms(e, s, n);
    if (k == 0) return 0;
    int *sym = e->sym, *prev = e->prev, *next = e->next;
    for (int i = 0; i < k; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < k ? i + 1 : -1;
    }
    e->hn = 0;
    int rank, merged;
    for (int i = 0; i + 1 < k; i++)
        if (tok_pair_get(&t->merges, sym[i], sym[i + 1], &rank, &merged))
            heap_push(e, (Merge){rank, i, merged});
    while (e->hn) {
        Merge m = heap_pop(e);
        int p = m.pos;
        if (sym[p] < 0 || next[p] < 0) continue;
        int r = next[p];
        if (!tok_pair_get(&t->merges, sym[p], sym[r], &rank, &merged) || merged != m.merged)
            continue;
        sym[p] = merged;
        sym[r] = -1;
        next[p] = next[r];
        if (next[r] >= 0) prev[next[r]] = p;
        if (e->hn + 2 > e->hcap) return pl_fail(PL_ENOMEM, "BPE heap overflow");
        if (prev[p] >= 0 && tok_pair_get(&t->merges, sym[prev[p]], sym[p], &rank, &merged))
            heap_push(e, (Merge){rank, prev[p], merged});
        if (next[p] >= 0 && tok_pair_get(&t->merges, sym[p], sym[next[p]], &rank, &merged))
            heap_push(e, (Merge){rank, p, merged});
    }
    for (int i = 0; i >= 0; i = next[i])
        PL_TRY(push_id(e, sym[i]));
    return 0;
}

/* BPE with the cache of short pieces. */
static int bpe_piece(Enc *e, const char *p, size_t n) {
    if (n > CACHE_MAX_KEY) return bpe_word(e, (const unsigned char *)p, n);
    uint64_t h = tok_hash(p, n) | 1;
    uint32_t mask = e->cache_mask, i = (uint32_t)h & mask;
    for (;; i = (i + 1) & mask) {
        CacheEnt *c = &e->cache[i];
        if (!c->h) break;
        if (c->h == h && c->key_len == n && !memcmp(e->ckey + c->key_off, p, n)) {
            for (uint32_t j = 0; j < c->ids_n; j++)
                PL_TRY(push_id(e, e->cids[c->ids_off + j]));
            return 0;
        }
    }
    int start = e->n;
    PL_TRY(bpe_word(e, (const unsigned char *)p, n));
    if ((uint32_t)e->cache_n >= (mask + 1) / 2) return 0; /* half full: stop caching */
    size_t nid = e->n - start;
    PL_TRY(pl_grow(&e->ckey, &e->ckey_cap, e->ckey_n + n, 1));
    PL_TRY(pl_grow(&e->cids, &e->cids_cap, e->cids_n + nid, sizeof(int)));
    memcpy(e->ckey + e->ckey_n, p, n);
    if (nid) /* a piece of unknown characters has no ids, and e->ids may be NULL */
        memcpy(e->cids + e->cids_n, e->ids + start, sizeof(int) * nid);
    e->cache[i] =
        (CacheEnt){h, (uint32_t)e->ckey_n, (uint32_t)n, (uint32_t)e->cids_n, (uint32_t)nid};
    e->ckey_n += n;
    e->cids_n += nid;
    e->cache_n++;
    return 0;
}

/* ------------------------------------------------------------ normalizers */

static int replace_into(const char *s, size_t n, const char *pat, int pl, const char *rep, int rl,
                        char **out, size_t *on) {
    size_t cnt = 0;
    for (const char *q = s; (q = memmem(q, n - (q - s), pat, pl)); q += pl)
        cnt++;
    size_t m = n + cnt * rl - cnt * pl;
    char *o = malloc(m + 1);
    PL_CHECK_ALLOC(o);
    size_t w = 0;
    const char *q = s;
    for (const char *hit; (hit = memmem(q, n - (q - s), pat, pl)); q = hit + pl) {
        memcpy(o + w, q, hit - q);
        w += hit - q;
        memcpy(o + w, rep, rl);
        w += rl;
    }
    memcpy(o + w, q, n - (q - s));
    w += n - (q - s);
    o[w] = 0;
    *out = o;
    *on = w;
    return 0;
}

int tok_normalize(const Tokenizer *t, const char *s, size_t n, char **out, size_t *out_n) {
    char *cur = malloc(n + 1);
    PL_CHECK_ALLOC(cur);
    memcpy(cur, s, n);
    cur[n] = 0;
    size_t cn = n;
    for (int i = 0; i < t->n_norm; i++) {
        const Normalizer *z = &t->norm[i];
        char *nx = NULL;
        size_t nn = 0;
        if (z->type == NORM_PREPEND) {
            if (!cn) continue;
            nx = malloc(cn + z->a_len + 1);
            if (!nx) {
                free(cur);
                return pl_fail(PL_ENOMEM, "out of memory normalizing");
            }
            memcpy(nx, z->a, z->a_len);
            memcpy(nx + z->a_len, cur, cn + 1);
            nn = cn + z->a_len;
        } else if (z->type == NORM_REPLACE) {
            int rc = replace_into(cur, cn, z->a, z->a_len, z->b, z->b_len, &nx, &nn);
            if (rc) {
                free(cur);
                return rc;
            }
        } else { /* Unicode normal forms, by utf8proc */
            int opts = UTF8PROC_STABLE | (z->type == NORM_NFC || z->type == NORM_NFKC
                                              ? UTF8PROC_COMPOSE
                                              : UTF8PROC_DECOMPOSE);
            if (z->type == NORM_NFKC || z->type == NORM_NFKD) opts |= UTF8PROC_COMPAT;
            utf8proc_uint8_t *res = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)cur, (utf8proc_ssize_t)cn,
                                              &res, (utf8proc_option_t)opts);
            if (r < 0) {
                free(cur);
                return pl_fail(PL_EINVAL, "Unicode normalization failed: %s", utf8proc_errmsg(r));
            }
            nx = (char *)res;
            nn = (size_t)r;
        }
        free(cur);
        cur = nx;
        cn = nn;
    }
    *out = cur;
    *out_n = cn;
    return 0;
}

/* --------------------------------------------------------- pre-tokenizers */

static int regex_split(Enc *e, const PreTok *pt, const Piece *pc, Pieces *out) {
    size_t at = 0, gap = 0;
    /* MERGED_NEXT: a match opens a piece that runs to the next match */
    size_t open = (size_t)-1;
    int first = pc->first;
    for (;;) {
        int rc = pcre2_match(pt->re, (PCRE2_SPTR)pc->p, pc->n, at, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return pl_fail(PL_EINVAL, "pre-tokenizer regex failed (PCRE2 error %d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            if (ms >= pc->n) break;
            int l = tok_utf8_len((const unsigned char *)pc->p + ms, pc->n - ms);
            at = ms + (l ? l : 1);
            continue;
        }
        switch (pt->behavior) {
        case SPLIT_ISOLATED:
            PL_TRY(push_piece(out, pc->p + gap, ms - gap, first && gap == 0));
            PL_TRY(push_piece(out, pc->p + ms, me - ms, first && ms == 0));
            break;
        case SPLIT_REMOVED:
            PL_TRY(push_piece(out, pc->p + gap, ms - gap, first && gap == 0));
            break;
        case SPLIT_MERGED_PREV:
            PL_TRY(push_piece(out, pc->p + gap, me - gap, first && gap == 0));
            break;
        case SPLIT_MERGED_NEXT:
            if (open == (size_t)-1)
                PL_TRY(push_piece(out, pc->p + gap, ms - gap, first && gap == 0));
            else
                PL_TRY(push_piece(out, pc->p + open, ms - open, first && open == 0));
            open = ms;
            break;
        case SPLIT_CONTIGUOUS:
            if (open != (size_t)-1 && ms == gap) { /* extends the previous match */
                out->v[out->n - 1].n = me - open;
            } else {
                PL_TRY(push_piece(out, pc->p + gap, ms - gap, first && gap == 0));
                PL_TRY(push_piece(out, pc->p + ms, me - ms, first && ms == 0));
                open = ms;
            }
            break;
        }
        gap = at = me;
    }
    if (pt->behavior == SPLIT_MERGED_NEXT && open != (size_t)-1)
        return push_piece(out, pc->p + open, pc->n - open, first && open == 0);
    return push_piece(out, pc->p + gap, pc->n - gap, first && gap == 0);
}

/* Room for stage s's output of at most n bytes; pieces point into it, so it
 * is sized once per stage and never moves while written. */
static int stage_room(Enc *e, int s, size_t n) {
    if (e->stage_cap[s] >= n) return 0;
    char *p = realloc(e->stage[s], n);
    PL_CHECK_ALLOC(p);
    e->stage[s] = p;
    e->stage_cap[s] = n;
    return 0;
}

static int run_pretok(Enc *e, int si, const PreTok *pt, const Pieces *in, Pieces *out) {
    out->n = 0;
    size_t total = 0;
    for (int i = 0; i < in->n; i++)
        total += in->v[i].n;
    switch (pt->type) {
    case PT_BYTELEVEL: {
        Pieces mid = {0};
        const Pieces *src = in;
        if (pt->add_prefix_space) {
            PL_TRY(stage_room(e, si, total + in->n + 1));
            size_t w = 0;
            for (int i = 0; i < in->n; i++) {
                const Piece *pc = &in->v[i];
                char *d = e->stage[si] + w;
                size_t m = 0;
                if (pc->p[0] != ' ') d[m++] = ' ';
                memcpy(d + m, pc->p, pc->n);
                m += pc->n;
                w += m;
                int rc = push_piece(&mid, d, m, pc->first);
                if (rc) {
                    free(mid.v);
                    return rc;
                }
            }
            src = &mid;
        }
        int rc = 0;
        for (int i = 0; !rc && i < src->n; i++) {
            if (pt->use_regex)
                rc = regex_split(e, pt, &src->v[i], out);
            else
                rc = push_piece(out, src->v[i].p, src->v[i].n, src->v[i].first);
        }
        free(mid.v);
        return rc;
    }
    case PT_SPLIT:
        for (int i = 0; i < in->n; i++)
            PL_TRY(regex_split(e, pt, &in->v[i], out));
        return 0;
    case PT_DIGITS:
        for (int i = 0; i < in->n; i++) {
            const Piece *pc = &in->v[i];
            size_t a = 0;
            while (a < pc->n) {
                int dig = pc->p[a] >= '0' && pc->p[a] <= '9';
                size_t b = a + 1;
                if (!dig || !pt->individual)
                    while (b < pc->n && (pc->p[b] >= '0' && pc->p[b] <= '9') == dig)
                        b++;
                PL_TRY(push_piece(out, pc->p + a, b - a, pc->first && a == 0));
                a = b;
            }
        }
        return 0;
    case PT_METASPACE: {
        PL_TRY(stage_room(e, si, total * pt->repl_len + (size_t)in->n * pt->repl_len + 1));
        size_t w = 0;
        for (int i = 0; i < in->n; i++) {
            const Piece *pc = &in->v[i];
            char *d = e->stage[si] + w;
            size_t m = 0;
            int starts = pc->n >= (size_t)pt->repl_len && !memcmp(pc->p, pt->repl, pt->repl_len);
            if (pc->p[0] == ' ') starts = 1;
            if (!starts &&
                (pt->prepend == PREPEND_ALWAYS || (pt->prepend == PREPEND_FIRST && pc->first))) {
                memcpy(d, pt->repl, pt->repl_len);
                m = pt->repl_len;
            }
            for (size_t j = 0; j < pc->n; j++) {
                if (pc->p[j] == ' ') {
                    memcpy(d + m, pt->repl, pt->repl_len);
                    m += pt->repl_len;
                } else
                    d[m++] = pc->p[j];
            }
            w += m;
            if (!pt->split) {
                PL_TRY(push_piece(out, d, m, pc->first));
                continue;
            }
            size_t a = 0;
            for (size_t j = 1; j + pt->repl_len <= m; j++)
                if (!memcmp(d + j, pt->repl, pt->repl_len)) {
                    PL_TRY(push_piece(out, d + a, j - a, pc->first && a == 0));
                    a = j;
                }
            PL_TRY(push_piece(out, d + a, m - a, pc->first && a == 0));
        }
        return 0;
    }
    }
    return 0;
}

/* Pre-tokenizes and BPE-encodes one text segment (no added tokens in it). */
static int encode_plain(Enc *e, const char *s, size_t n, int first) {
    const Tokenizer *t = e->t;
    if (!n) return 0;
    Pieces *cur = &e->pl[0], *nxt = &e->pl[1];
    cur->n = 0;
    PL_TRY(push_piece(cur, s, n, first));
    for (int i = 0; i < t->n_pre; i++) {
        PL_TRY(run_pretok(e, i, &t->pre[i], cur, nxt));
        Pieces *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    int rl = t->ws_cut_len;
    for (int i = 0; i < cur->n; i++) {
        const char *p = cur->v[i].p;
        size_t n = cur->v[i].n, a = 0;
        if (rl) /* see find_ws_cut in tokenizer.c */
            for (size_t j = rl; j + rl <= n; j++)
                if (p[j] == t->ws_cut[0] && !memcmp(p + j, t->ws_cut, rl) &&
                    memcmp(p + j - rl, t->ws_cut, rl)) {
                    PL_TRY(bpe_piece(e, p + a, j - a));
                    a = j;
                    j += rl - 1;
                }
        PL_TRY(bpe_piece(e, p + a, n - a));
    }
    return 0;
}

/* ----------------------------------------------------------- added tokens */

/* Rust's char::is_whitespace (Unicode White_Space), which trim_start /
 * trim_end use for lstrip / rstrip. */
static int is_white_space(int c) {
    return c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int cp_at(const char *s, size_t n, size_t i, int *len) {
    const unsigned char *u = (const unsigned char *)s + i;
    int l = tok_utf8_len(u, n - i);
    *len = l ? l : 1;
    if (u[0] < 0x80 || !l) return u[0];
    if (l == 2) return (u[0] & 31) << 6 | (u[1] & 63);
    if (l == 3) return (u[0] & 15) << 12 | (u[1] & 63) << 6 | (u[2] & 63);
    return (u[0] & 7) << 18 | (u[1] & 63) << 12 | (u[2] & 63) << 6 | (u[3] & 63);
}

/* Start of the character that ends at s[i] (exclusive). */
static size_t char_before(const char *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80)
        j--;
    return j;
}

/* Rust regex's Unicode \w (Alphabetic, M, Nd, Pc, Join_Control), which
 * single_word tests next to a match; non-ASCII characters ask PCRE2's
 * Unicode tables. */
static int is_alnum_at(const Tokenizer *t, const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (!t->re_alnum) return 1;
    int len;
    cp_at(s, n, i, &len);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return 1;
    int rc = pcre2_match(t->re_alnum, (PCRE2_SPTR)s + i, len, 0, PCRE2_NO_UTF_CHECK, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* Finds the leftmost-longest added token (of the pass: normalized or not)
 * in s[from..n); returns its index in t->added and the span (with lstrip /
 * rstrip whitespace), or -1. */
static int find_added(const Tokenizer *t, int pass, const char *s, size_t n, size_t from,
                      size_t *ms, size_t *me) {
    const uint8_t *first = t->added_first[pass];
    for (size_t i = from; i < n; i++) {
        if (!first[(unsigned char)s[i]]) continue;
        int best = -1, best_len = 0;
        for (int k = 0; k < t->n_added; k++) {
            const AddedTok *a = &t->added[k];
            if (a->normalized != pass) continue;
            const char *c = pass ? a->norm : a->content;
            int l = pass ? a->norm_len : a->len;
            if (l <= best_len || (size_t)l > n - i || memcmp(s + i, c, l)) continue;
            if (a->single_word) {
                if (i > 0 && is_alnum_at(t, s, n, char_before(s, i))) continue;
                if (i + l < n && is_alnum_at(t, s, n, i + l)) continue;
            }
            best = k;
            best_len = l;
        }
        if (best < 0) continue;
        size_t a = i, b = i + best_len;
        int len;
        if (t->added[best].lstrip)
            while (a > from && is_white_space(cp_at(s, n, char_before(s, a), &len)))
                a = char_before(s, a);
        if (t->added[best].rstrip)
            while (b < n && is_white_space(cp_at(s, n, b, &len)))
                b += len;
        *ms = a;
        *me = b;
        return best;
    }
    return -1;
}

/* The normalized pass over one raw segment. */
static int encode_normalized(Enc *e, const char *s, size_t n, int first) {
    const Tokenizer *t = e->t;
    char *norm = NULL;
    size_t nn = n;
    if (t->n_norm) {
        PL_TRY(tok_normalize(t, s, n, &norm, &nn));
        s = norm;
    }
    size_t at = 0, ms, me;
    int rc = 0;
    while (!rc) {
        int k = find_added(t, 1, s, nn, at, &ms, &me);
        if (k < 0) break;
        rc = encode_plain(e, s + at, ms - at, first && at == 0);
        if (!rc) rc = push_id(e, t->added[k].id);
        at = me;
    }
    if (!rc) rc = encode_plain(e, s + at, nn - at, first && at == 0);
    free(norm);
    return rc;
}

/* ----------------------------------------------------------------- encode */

static int check_utf8(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        int l = tok_utf8_len(s + i, len - i);
        if (!l) return pl_fail(PL_EINVAL, "encode: invalid UTF-8 at byte offset %zu", i);
        i += l;
    }
    return 0;
}

static void enc_free(Enc *e) {
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
    free(e->disp);
    free(e->cache);
    free(e->ckey);
    free(e->cids);
    if (e->md) pcre2_match_data_free(e->md);
    for (int i = 0; i < 8; i++)
        free(e->stage[i]);
    free(e->pl[0].v);
    free(e->pl[1].v);
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int add_special, int **ids,
               int *n) {
    *ids = NULL;
    *n = 0;
    PL_TRY(check_utf8(text, len));
    if (t->n_pre > 8) return pl_fail(PL_ENOTSUP, "encode: more than 8 pre-tokenizers");
    Enc e = {.t = t};
    size_t slots = 256;
    while (slots < ((size_t)1 << CACHE_BITS) && slots < len / 4)
        slots *= 2;
    e.cache_mask = (uint32_t)slots - 1;
    e.cache = calloc(slots, sizeof(CacheEnt));
    e.md = pcre2_match_data_create(4, NULL);
    int rc = e.cache && e.md ? 0 : pl_fail(PL_ENOMEM, "out of memory: encode scratch");
    if (add_special)
        for (int i = 0; !rc && i < t->n_prefix; i++)
            rc = push_id(&e, t->prefix[i]);
    size_t at = 0, ms, me;
    while (!rc) {
        int k = find_added(t, 0, text, len, at, &ms, &me);
        if (k < 0) break;
        rc = encode_normalized(&e, text + at, ms - at, at == 0);
        if (!rc) rc = push_id(&e, t->added[k].id);
        at = me;
    }
    if (!rc) rc = encode_normalized(&e, text + at, len - at, at == 0);
    if (add_special)
        for (int i = 0; !rc && i < t->n_suffix; i++)
            rc = push_id(&e, t->suffix[i]);
    if (rc) {
        free(e.ids);
        enc_free(&e);
        return rc;
    }
    enc_free(&e);
    *ids = e.ids ? e.ids : malloc(sizeof(int));
    *n = e.n;
    if (!*ids) return pl_fail(PL_ENOMEM, "out of memory: ids");
    return 0;
}
