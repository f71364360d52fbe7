/* bases.h: the base models a worker's roles load by path, beside the
 * worker's own (--model): a reward model of another size, a critic or a
 * reference started from another checkpoint. Roles that name the same
 * folder share one copy, read-only; a role that trains every weight keeps
 * its own copy and does not come here. */
#ifndef PLUMB_WORKER_BASES_H
#define PLUMB_WORKER_BASES_H

#include "model/weights.h"

typedef struct Bases Bases;

int bases_new(Bases **out);
/* Frees the cache and every base still in it (after the roles that used
 * them, before their device is closed). */
void bases_free(Bases **b);

/* The base at path, loaded on the first get; each get is matched by a
 * bases_put, and the last put frees it. */
int bases_get(Bases *b, const char *path, Base **out);
void bases_put(Bases *b, Base *base);

#endif
