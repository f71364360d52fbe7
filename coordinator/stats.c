/* stats.c: the metrics of one step, in the order they were first put
 * (run_impl.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/run_impl.h"

void stats_put(StepStats *s, const char *name, double v) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->values[i] = v;
            return;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **n = realloc(s->names, sizeof *n * (size_t)cap);
        if (n) s->names = n;
        double *x = n ? realloc(s->values, sizeof *x * (size_t)cap) : NULL;
        if (x) s->values = x;
        if (!n || !x) {
            fprintf(stderr, "plumb coordinator: out of memory for metric %s; dropped\n", name);
            return;
        }
        s->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        fprintf(stderr, "plumb coordinator: out of memory for metric %s; dropped\n", name);
        return;
    }
    s->names[s->n] = copy;
    s->values[s->n++] = v;
}

double stats_get(const StepStats *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return s->values[i];
    return NAN;
}

void stats_clear(StepStats *s) {
    for (int i = 0; i < s->n; i++)
        free(s->names[i]);
    s->n = 0;
}

void stats_free(StepStats *s) {
    stats_clear(s);
    free(s->names);
    free(s->values);
    memset(s, 0, sizeof *s);
}
