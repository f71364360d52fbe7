/* opts.h: the options of a subcommand, parsed from one table.
 *
 *   const char *model = NULL; int threads = 0, json = 0;
 *   const Opt opts[] = {OPT_STR("--model", &model), OPT_INT("--threads", &threads, 1, 1024),
 *                       OPT_FLAG("--json", &json), OPT_END};
 *   int rc = opts_parse("logprobs", argc, argv, 1, opts, usage, NULL, 0, NULL);
 *   if (rc) return rc == 1 ? 0 : 2;
 *
 * -h and --help print usage to stdout (1). A value is the next argument,
 * checked against its range (ints and floats) with a message naming the
 * option; an option without its value, an unknown option or an argument
 * the command takes no more of prints "plumb CMD: ..." to stderr (2). */
#ifndef PLUMB_TOOLS_OPTS_H
#define PLUMB_TOOLS_OPTS_H

#include <stdio.h>

typedef enum {
    OPT_KIND_END,
    OPT_KIND_FLAG,
    OPT_KIND_STR,
    OPT_KIND_INT,
    OPT_KIND_U64,
    OPT_KIND_FLOAT,
    OPT_KIND_FN
} OptKind;

typedef struct {
    const char *name; /* "--model"                                     */
    OptKind kind;
    void *dst;     /* FLAG, INT: int *; STR: const char **; U64:
                      unsigned long long *; FLOAT: float *; FN: ctx */
    double lo, hi; /* INT, FLOAT: the range, inclusive              */
    int *seen;     /* set to 1 when given (may be NULL)             */
    /* FN: takes the value; prints why and returns < 0 when it is bad */
    int (*fn)(void *ctx, const char *opt, const char *value);
} Opt;

#define OPT_FLAG(n, p)                                                                             \
    { .name = n, .kind = OPT_KIND_FLAG, .dst = p }
#define OPT_STR(n, p)                                                                              \
    { .name = n, .kind = OPT_KIND_STR, .dst = p }
#define OPT_INT(n, p, l, h)                                                                        \
    { .name = n, .kind = OPT_KIND_INT, .dst = p, .lo = l, .hi = h }
#define OPT_U64(n, p)                                                                              \
    { .name = n, .kind = OPT_KIND_U64, .dst = p }
#define OPT_FLOAT(n, p, l, h)                                                                      \
    { .name = n, .kind = OPT_KIND_FLOAT, .dst = p, .lo = l, .hi = h }
#define OPT_FN(n, f, ctx)                                                                          \
    { .name = n, .kind = OPT_KIND_FN, .dst = ctx, .fn = f }
#define OPT_END                                                                                    \
    { .name = NULL }

/* Parses argv[first..argc) against opts. Arguments that are no option go
 * to pos[0..max_pos) (their count in *n_pos). Returns 0 to go on, 1 after
 * printing the help (exit 0), 2 after printing an error (exit 2). */
int opts_parse(const char *cmd, int argc, char **argv, int first, const Opt *opts,
               void (*usage)(FILE *f), const char **pos, int max_pos, int *n_pos);

#endif
