/* bases.c: one copy of each base model a worker's roles load by path
 * (bases.h). */
#include "worker/bases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/fs.h"

typedef struct {
    char path[PL_PATH];
    Base *base;
    int refs;
} Entry;

struct Bases {
    Entry *e; /* the bases in use */
    size_t n, cap;
};

int bases_new(Bases **out) {
    *out = calloc(1, sizeof **out);
    PL_CHECK_ALLOC(*out);
    return 0;
}

void bases_free(Bases **bp) {
    Bases *b = *bp;
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) base_free(&b->e[i].base);
    free(b->e);
    free(b);
    *bp = NULL;
}

int bases_get(Bases *b, const char *path, Base **out) {
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->e[i].path, path)) {
            b->e[i].refs++;
            *out = b->e[i].base;
            return 0;
        }
    if (strlen(path) >= PL_PATH) return pl_fail(PL_ERANGE, "%s: path too long", path);
    PL_TRY(pl_grow(&b->e, &b->cap, b->n + 1, sizeof *b->e));
    Base *base;
    PL_TRY(base_load(&base, path));
    Entry *e = &b->e[b->n++];
    snprintf(e->path, sizeof e->path, "%s", path);
    e->base = base;
    e->refs = 1;
    *out = base;
    return 0;
}

void bases_put(Bases *b, Base *base) {
    for (size_t i = 0; i < b->n; i++) {
        if (b->e[i].base != base || --b->e[i].refs > 0) continue;
        base_free(&b->e[i].base);
        b->e[i] = b->e[--b->n]; /* the last one takes the freed place */
        return;
    }
}
