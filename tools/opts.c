/* opts.c: table-driven option parsing (opts.h). */
#include "tools/opts.h"

#include <string.h>

#include "tools/util.h"

static const Opt *find(const Opt *opts, const char *name) {
    for (const Opt *o = opts; o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

/* Takes value v for option o; -1 after printing why. */
static int take(const Opt *o, const char *v) {
    switch (o->kind) {
    case OPT_KIND_STR:
        *(const char **)o->dst = v;
        return 0;
    case OPT_KIND_INT:
        return arg_int(o->name, v, (long long)o->lo, (long long)o->hi, o->dst);
    case OPT_KIND_U64:
        return arg_u64(o->name, v, o->dst);
    case OPT_KIND_FLOAT:
        return arg_float(o->name, v, (float)o->lo, (float)o->hi, o->dst);
    case OPT_KIND_FN:
        return o->fn(o->dst, o->name, v) < 0 ? -1 : 0;
    default:
        return -1;
    }
}

int opts_parse(const char *cmd, int argc, char **argv, int first, const Opt *opts,
               void (*usage)(FILE *f), const char **pos, int max_pos, int *n_pos) {
    if (n_pos) *n_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (usage) usage(stdout);
            return 1;
        }
        const Opt *o = a[0] == '-' && a[1] ? find(opts, a) : NULL;
        if (!o && a[0] == '-' && a[1]) {
            fprintf(stderr, "plumb %s: unknown option '%s'\n", cmd, a);
            if (usage) usage(stderr);
            return 2;
        }
        if (!o) {
            if (!pos || *n_pos >= max_pos) {
                fprintf(stderr, "plumb %s: unexpected argument '%s'\n", cmd, a);
                if (usage) usage(stderr);
                return 2;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        if (o->seen) *o->seen = 1;
        if (o->kind == OPT_KIND_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "plumb %s: %s needs a value\n", cmd, a);
            return 2;
        }
        if (take(o, argv[++i]) < 0) return 2;
    }
    return 0;
}
