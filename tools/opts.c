/* opts.c: table-driven option parsing (opts.h). */
#include "tools/opts.h"

#include <string.h>

#include "tools/util.h"

static const Opt *find(const Opt *opts, const char *name) {
    for (const Opt *o = opts; o->name; o++)
        if (o->kind != OPT_KIND_POS && !strcmp(o->name, name)) return o;
    return NULL;
}

static const Opt *find_pos(const Opt *opts) {
    for (const Opt *o = opts; o->name; o++)
        if (o->kind == OPT_KIND_POS) return o;
    return NULL;
}

/* Takes value v for option o; -1 after printing why. */
static int take(const Opt *o, const char *v) {
    switch (o->kind) {
    case OPT_KIND_STR:
    case OPT_KIND_POS:
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

int opts_fail(const char *cmd, void (*usage)(FILE *f), const char *why) {
    fprintf(stderr, "plumb %s: %s\n", cmd, why);
    if (usage) usage(stderr);
    return 2;
}

/* The required entries that are still unset, as "--model and --ids". */
static int missing(const Opt *opts, char *buf, size_t cap) {
    int n = 0, total = 0;
    for (const Opt *o = opts; o->name; o++)
        if (o->required && !*(const char **)o->dst) total++;
    buf[0] = '\0';
    for (const Opt *o = opts; o->name; o++) {
        if (!o->required || *(const char **)o->dst) continue;
        const char *sep = n == 0 ? "" : n == total - 1 ? " and " : ", ";
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", sep, o->name);
        n++;
    }
    return n;
}

int opts_parse(const char *cmd, int argc, char **argv, int first, const Opt *opts,
               void (*usage)(FILE *f)) {
    const Opt *pos = find_pos(opts);
    int n_pos = 0;
    char why[512];
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (usage) usage(stdout);
            return 0;
        }
        int is_opt = a[0] == '-' && a[1];
        const Opt *o = is_opt ? find(opts, a) : pos;
        if (!o) {
            snprintf(why, sizeof why, is_opt ? "unknown option '%s'" : "unexpected argument '%s'",
                     a);
            return opts_fail(cmd, usage, why);
        }
        if (o->kind == OPT_KIND_POS && n_pos++) {
            snprintf(why, sizeof why, "one %s only ('%s' and '%s')", o->name,
                     *(const char **)o->dst, a);
            return opts_fail(cmd, usage, why);
        }
        if (o->seen) *o->seen = 1;
        if (o->kind == OPT_KIND_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (o->kind != OPT_KIND_POS && ++i >= argc) {
            snprintf(why, sizeof why, "%s needs a value", a);
            return opts_fail(cmd, usage, why);
        }
        if (take(o, argv[i]) < 0) return 2;
    }
    char list[400];
    if (missing(opts, list, sizeof list)) {
        snprintf(why, sizeof why, "needs %s", list);
        return opts_fail(cmd, usage, why);
    }
    return -1;
}
