/* bases.c: one copy of each base model a worker's roles load by path
 * (bases.h). */
#include "worker/bases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/fs.h"

typedef struct {
    char path[PL_PATH];
    Base *base;
    int refs;
} Entry;

struct Bases {
    Entry *e;
    int n, cap;
};

int bases_new(Bases **out) {
    *out = calloc(1, sizeof **out);
    PL_CHECK_ALLOC(*out);
    return 0;
}

void bases_free(Bases **bp) {
    Bases *b = *bp;
    if (!b) return;
    for (int i = 0; i < b->n; i++) base_free(&b->e[i].base);
    free(b->e);
    free(b);
    *bp = NULL;
}

int bases_get(Bases *b, const char *path, Base **out, int *loaded) {
    *loaded = 0;
    for (int i = 0; i < b->n; i++)
        if (b->e[i].base && !strcmp(b->e[i].path, path)) {
            b->e[i].refs++;
            *out = b->e[i].base;
            return 0;
        }
    if (strlen(path) >= PL_PATH) return pl_fail(PL_ERANGE, "%s: path too long", path);
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 4;
        Entry *e = realloc(b->e, sizeof *e * cap);
        PL_CHECK_ALLOC(e);
        b->e = e, b->cap = cap;
    }
    Base *base;
    PL_TRY(base_load(&base, path));
    Entry *e = &b->e[b->n++];
    snprintf(e->path, sizeof e->path, "%s", path);
    e->base = base;
    e->refs = 1;
    *out = base;
    *loaded = 1;
    return 0;
}

void bases_put(Bases *b, Base *base) {
    for (int i = 0; i < b->n; i++)
        if (b->e[i].base == base && --b->e[i].refs == 0) base_free(&b->e[i].base);
}
