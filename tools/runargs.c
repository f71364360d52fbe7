/* runargs.c: CONFIG [key=value ...] for plumb train and plumb coordinator. */
#include "tools/runargs.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

int runargs_parse(RunArgs *a, const char *cmd, int argc, char **argv, void (*usage)(FILE *f)) {
    memset(a, 0, sizeof *a);
    runcfg_defaults(&a->cfg);
    const char *sets[256];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(s, "--help-config")) {
            runcfg_help(stdout);
            return 1;
        } else if (!strcmp(s, "--quiet")) {
            a->quiet = 1;
        } else if (!strcmp(s, "--resume")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plumb %s: --resume needs a checkpoint or run folder\n", cmd);
                return 2;
            }
            a->resume = argv[++i];
        } else if (s[0] == '-') {
            fprintf(stderr, "plumb %s: unknown option %s\n", cmd, s);
            usage(stderr);
            return 2;
        } else if (strchr(s, '=')) {
            if (n_sets == 256) {
                fprintf(stderr, "plumb %s: too many overrides\n", cmd);
                return 2;
            }
            sets[n_sets++] = s;
        } else if (!a->config_path) {
            a->config_path = s;
        } else {
            fprintf(stderr, "plumb %s: unexpected argument '%s' (overrides are key=value)\n",
                    cmd, s);
            return 2;
        }
    }
    if (!a->config_path) {
        fprintf(stderr, "plumb %s: no config file given\n", cmd);
        usage(stderr);
        return 2;
    }
    if (runcfg_load(&a->cfg, a->config_path) < 0) {
        fprintf(stderr, "plumb %s: %s\n", cmd, pl_error());
        return 2;
    }
    for (int i = 0; i < n_sets; i++)
        if (runcfg_set(&a->cfg, sets[i]) < 0) {
            fprintf(stderr, "plumb %s: %s\n", cmd, pl_error());
            return 2;
        }
    if (runcfg_validate(&a->cfg) < 0) {
        fprintf(stderr, "plumb %s: %s: %s\n", cmd, a->config_path, pl_error());
        return 2;
    }
    return 0;
}
