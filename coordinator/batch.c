/* batch.c: packed sequences, the records of a data file, and the order
 * in which training visits them (run_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"
#include "coordinator/run_impl.h"

void packed_free(Packed *p) {
    free(p->tokens), free(p->offsets), free(p->mask);
    memset(p, 0, sizeof *p);
}

int packed_add(Packed *p, const int *prompt, int np, const int *resp, int nr) {
    if (p->B + 2 > p->capB) {
        int c = p->capB ? p->capB * 2 : 64;
        int *o = realloc(p->offsets, sizeof(int) * (c + 1));
        PL_CHECK_ALLOC(o);
        p->offsets = o, p->capB = c;
    }
    if (p->N + np + nr > p->capN) {
        int c = p->capN ? p->capN * 2 : 4096;
        while (c < p->N + np + nr)
            c *= 2;
        int *t = realloc(p->tokens, sizeof(int) * c);
        PL_CHECK_ALLOC(t);
        p->tokens = t;
        unsigned char *m = realloc(p->mask, c);
        PL_CHECK_ALLOC(m);
        p->mask = m, p->capN = c;
    }
    if (p->B == 0) p->offsets[0] = 0;
    memcpy(p->tokens + p->N, prompt, sizeof(int) * np);
    memset(p->mask + p->N, 0, np);
    if (nr) memcpy(p->tokens + p->N + np, resp, sizeof(int) * nr);
    memset(p->mask + p->N + np, 1, nr);
    p->N += np + nr;
    p->offsets[++p->B] = p->N;
    return 0;
}

void records_free(Records *r) {
    for (long i = 0; i < r->n; i++)
        ds_record_free(&r->r[i]);
    free(r->r);
    memset(r, 0, sizeof *r);
}

int records_load(Records *out, const char *key, const char *path, const DsConfig *dc, DsFormat fmt,
                 int quiet) {
    memset(out, 0, sizeof *out);
    DsConfig c = *dc;
    c.format = fmt;
    DsReader *rd = NULL;
    int rc = ds_reader_open(&rd, path, &c);
    if (rc < 0) return pl_wrap(rc, "%s", key);
    long cap = 0, shown = 0;
    for (;;) {
        DsRecord rec;
        long line;
        DsReason why;
        char reason[512];
        rc = ds_reader_next(rd, &rec, &line, &why, reason, sizeof reason);
        if (rc == 0) break;
        if (rc < 0) break;
        if (rc == 2) {
            if (!quiet && shown++ < 5)
                fprintf(stderr, "plumb coordinator: %s %s:%ld dropped (%s): %s\n", key, path, line,
                        ds_reason_name(why), reason);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 1024;
            DsRecord *r = realloc(out->r, sizeof(DsRecord) * cap);
            if (!r) {
                ds_record_free(&rec);
                rc = pl_fail(PL_ENOMEM, "%s: out of memory", key);
                break;
            }
            out->r = r;
        }
        out->r[out->n++] = rec;
    }
    const DsSummary *s = ds_reader_summary(rd);
    long dropped = s->read - s->kept;
    if (rc == 0 && !quiet && dropped > 0)
        fprintf(stderr, "plumb coordinator: %s %s: %ld of %ld lines dropped\n", key, path, dropped,
                s->read);
    ds_reader_free(&rd);
    if (rc == 0 && out->n == 0) rc = pl_fail(PL_EFORMAT, "%s %s: no usable record", key, path);
    if (rc < 0) records_free(out);
    return rc;
}

int pack_records(const Records *recs, const long *which, int n, int rejected, Packed *p) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < n; i++) {
        const DsRecord *d = &recs->r[which[i]];
        PL_TRY(packed_add(p, d->prompt, d->n_prompt, rejected ? d->rejected : d->chosen,
                          rejected ? d->n_rejected : d->n_chosen));
    }
    return 0;
}

long order_at(Order *o, long k) {
    long e = k / o->n, i = k % o->n;
    long w = o->window > 0 && o->window < o->n ? o->window : o->n;
    long j = i / w, s = j * w, m = o->n - s < w ? o->n - s : w;
    if (e != o->epoch || j != o->block) {
        for (long x = 0; x < m; x++)
            o->perm[x] = s + x;
        if (o->shuffle) {
            /* window 0 is seeded as the whole epoch always was */
            Rng r;
            rng_seed2(&r, rng_mix3(o->seed, TAG_DATA, (uint64_t)j), (uint64_t)e);
            for (long x = m - 1; x > 0; x--) {
                long t = (long)(rng_u64(&r) % (uint64_t)(x + 1));
                long y = o->perm[x];
                o->perm[x] = o->perm[t], o->perm[t] = y;
            }
        }
        o->epoch = e, o->block = j;
    }
    return o->perm[i - s];
}

void order_step(Order *o, long step, int B, long *which) {
    for (int i = 0; i < B; i++) which[i] = order_at(o, step * (long)B + i);
}
