/* runargs.h: the arguments plumb train and plumb coordinator share. */
#ifndef PLUMB_TOOLS_RUNARGS_H
#define PLUMB_TOOLS_RUNARGS_H

#include "coordinator/config.h"

typedef struct {
    RunConfig cfg;
    const char *config_path;
    const char *resume;      /* --resume DIR or NULL */
    int quiet;
} RunArgs;

/* Parses CONFIG [key=value ...] [--resume DIR] [--quiet] [--help-config],
 * loads, overrides and validates. Returns 0 to go on, 1 when it printed
 * help (exit 0), or 2 after printing an error (exit 2). */
int runargs_parse(RunArgs *a, const char *cmd, int argc, char **argv,
                  void (*usage)(FILE *f));

#endif
