#define _GNU_SOURCE /* memmem */
/* tokenizer_decode.c: ids back to text through the tokenizer.json's
 * decoder chain (tokenizer.h). */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "model/tokenizer_internal.h"

/* ----------------------------------------------------------------- decode */

/* The decoders work on a list of strings, as Hugging Face's decode_chain. */
typedef struct {
    PlBuf *s;
    int n;
} StrList;

static void list_free(StrList *l) {
    for (int i = 0; i < l->n; i++)
        free(l->s[i].p);
    free(l->s);
    l->s = NULL;
    l->n = 0;
}

/* Replaces every pat in s by rep, into a new PlBuf. */
static int replace_all(const PlBuf *s, const char *pat, int pl, const char *rep, int rl,
                       PlBuf *o) {
    memset(o, 0, sizeof *o);
    PL_TRY(pl_buf_put(o, "", 0));
    size_t i = 0;
    while (i < s->n) {
        const char *hit = pl <= (int)(s->n - i) ? memmem(s->p + i, s->n - i, pat, pl) : NULL;
        size_t end = hit ? (size_t)(hit - s->p) : s->n;
        PL_TRY(pl_buf_put(o, s->p + i, end - i));
        if (!hit) break;
        PL_TRY(pl_buf_put(o, rep, rl));
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
    StrList o = {calloc(l->n + 1, sizeof(PlBuf)), 0};
    PL_CHECK_ALLOC(o.s);
    int rc = 0;
    switch (d->type) {
    case DEC_BYTELEVEL: {
        PlBuf raw = {0};
        rc = pl_buf_put(&raw, "", 0);
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
                tok_utf8_cp(s + j, &cp);
                int b = cp < 324 ? cp_byte[cp] : -1;
                if (b < 0)
                    ok = 0;
                else {
                    unsigned char c = (unsigned char)b;
                    rc = pl_buf_put(&raw, &c, 1);
                }
                j += len;
            }
            if (!ok && !rc) {
                raw.n = start;
                rc = pl_buf_put(&raw, s, n);
            }
        }
        if (!rc) {
            memset(&o.s[0], 0, sizeof(PlBuf));
            rc = pl_buf_put(&o.s[0], "", 0);
            if (!rc) rc = tok_buf_put_lossy(&o.s[0], (unsigned char *)raw.p, raw.n);
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
        PlBuf bytes = {0};
        int nb = 0;
        for (int i = 0; !rc && i <= l->n; i++) {
            const PlBuf *s = i < l->n ? &l->s[i] : NULL;
            int h1, h2;
            if (s && s->n == 6 && !memcmp(s->p, "<0x", 3) && s->p[5] == '>' &&
                (h1 = hexval(s->p[3])) >= 0 && (h2 = hexval(s->p[4])) >= 0) {
                unsigned char c = (unsigned char)(h1 * 16 + h2);
                rc = pl_buf_put(&bytes, &c, 1);
                nb++;
                continue;
            }
            if (nb) {
                PlBuf *dst = &o.s[o.n++];
                memset(dst, 0, sizeof *dst);
                rc = pl_buf_put(dst, "", 0);
                int valid = 1;
                for (size_t j = 0; j < bytes.n && valid;) {
                    int len = tok_utf8_len((unsigned char *)bytes.p + j, bytes.n - j);
                    if (!len) valid = 0;
                    j += len;
                }
                if (valid)
                    rc = rc ? rc : pl_buf_put(dst, bytes.p, bytes.n);
                else
                    for (int k = 0; !rc && k < nb; k++)
                        rc = pl_buf_put(dst, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
                nb = 0;
            }
            if (s && !rc) {
                PlBuf *dst = &o.s[o.n++];
                memset(dst, 0, sizeof *dst);
                rc = pl_buf_put(dst, s->p, s->n);
            }
        }
        free(bytes.p);
        break;
    }
    case DEC_FUSE:
        memset(&o.s[0], 0, sizeof(PlBuf));
        rc = pl_buf_put(&o.s[0], "", 0);
        for (int i = 0; !rc && i < l->n; i++)
            rc = pl_buf_put(&o.s[0], l->s[i].p, l->s[i].n);
        o.n = 1;
        break;
    case DEC_STRIP:
        for (int i = 0; !rc && i < l->n; i++) {
            const PlBuf *s = &l->s[i];
            size_t a = 0, b = s->n;
            for (int k = 0; k < d->start && a < b && (unsigned char)s->p[a] == d->strip_char; k++)
                a++;
            for (int k = 0; k < d->stop && b > a && (unsigned char)s->p[b - 1] == d->strip_char;
                 k++)
                b--;
            memset(&o.s[o.n], 0, sizeof(PlBuf));
            rc = pl_buf_put(&o.s[o.n++], s->p + a, b - a);
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
    StrList l = {calloc(n + 1, sizeof(PlBuf)), 0};
    PL_CHECK_ALLOC(l.s);
    int rc = 0;
    for (int i = 0; !rc && i < n; i++) {
        if (skip_special && t->is_special[ids[i]]) continue;
        rc = pl_buf_put(&l.s[l.n++], t->tok_str[ids[i]], t->tok_len[ids[i]]);
    }
    for (int i = 0; !rc && i < t->n_dec; i++)
        rc = run_decoder(&t->dec[i], t->cp_byte, &l);
    PlBuf all = {0};
    if (!rc) rc = pl_buf_put(&all, "", 0);
    for (int i = 0; !rc && i < l.n; i++) {
        if (i && !t->n_dec) rc = pl_buf_put(&all, " ", 1); /* no decoder: joined by spaces */
        if (!rc) rc = pl_buf_put(&all, l.s[i].p, l.s[i].n);
    }
    list_free(&l);
    if (rc) {
        free(all.p);
        return rc;
    }
    *text = all.p;
    return 0;
}
