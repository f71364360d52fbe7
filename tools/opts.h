/* opts.h: the options of a subcommand, parsed from one table.
 *
 *   const char *model = NULL, *file = NULL; int threads = 0, json = 0;
 *   const Opt opts[] = {OPT_REQ("--model", &model), OPT_POS("FILE", &file, 1),
 *                       OPT_INT("--threads", &threads, 1, 1024), OPT_FLAG("--json", &json),
 *                       OPT_END};
 *   int rc = opts_parse("logprobs", argc, argv, 1, opts, usage);
 *   if (rc >= 0) return rc;
 *
 * -h and --help print usage to stdout (exit 0). A value is the next
 * argument, checked against its range (ints and floats) with a message
 * naming the option. An option without its value, an unknown option, a
 * second positional argument, or a required one missing prints
 * "plumb CMD: ..." (and the usage) to stderr (exit 2). */
#ifndef PLUMB_TOOLS_OPTS_H
#define PLUMB_TOOLS_OPTS_H

#include <stdio.h>

typedef enum {
    OPT_KIND_END,
    OPT_KIND_FLAG,
    OPT_KIND_STR,
    OPT_KIND_POS,
    OPT_KIND_INT,
    OPT_KIND_U64,
    OPT_KIND_FLOAT,
    OPT_KIND_FN
} OptKind;

typedef struct {
    const char *name; /* "--model", or for POS what usage calls it: "FILE" */
    OptKind kind;
    void *dst;     /* FLAG, INT: int *; STR, POS: const char **; U64:
                      unsigned long long *; FLOAT: float *; FN: ctx */
    double lo, hi; /* INT, FLOAT: the range, inclusive              */
    int required;  /* STR, POS: the command cannot run without it   */
    int *seen;     /* set to 1 when given (may be NULL)             */
    /* FN: takes the value; prints why and returns < 0 when it is bad */
    int (*fn)(void *ctx, const char *opt, const char *value);
} Opt;

#define OPT_FLAG(n, p)                                                                             \
    { .name = n, .kind = OPT_KIND_FLAG, .dst = p }
#define OPT_STR(n, p)                                                                              \
    { .name = n, .kind = OPT_KIND_STR, .dst = p }
#define OPT_REQ(n, p)                                                                              \
    { .name = n, .kind = OPT_KIND_STR, .dst = p, .required = 1 }
#define OPT_POS(n, p, req)                                                                         \
    { .name = n, .kind = OPT_KIND_POS, .dst = p, .required = req }
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

/* Parses argv[first..argc) against opts (at most one OPT_POS). Returns -1
 * to go on, or the exit status after printing: 0 for the help, 2 for an
 * error. */
int opts_parse(const char *cmd, int argc, char **argv, int first, const Opt *opts,
               void (*usage)(FILE *f));

/* For what the table cannot say (one of two options, say): prints
 * "plumb CMD: WHY" and the usage to stderr, and returns 2. */
int opts_fail(const char *cmd, void (*usage)(FILE *f), const char *why);

#endif
