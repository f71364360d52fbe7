/* util.h: small helpers shared by the subcommands. */
#ifndef PLUMB_TOOLS_UTIL_H
#define PLUMB_TOOLS_UTIL_H

#include <stdio.h>

#include "model/model.h"

/* Strict number parsing for option values; on error prints which option
 * and returns -1. */
int arg_int(const char *opt, const char *s, long long lo, long long hi, int *out);
int arg_u64(const char *opt, const char *s, unsigned long long *out);
int arg_float(const char *opt, const char *s, float lo, float hi, float *out);

/* Parses "1 2 3" or "1,2,3" into a malloc'ed array; prints an error naming
 * opt and the bad item and returns -1. */
int arg_ids(const char *opt, const char *s, int **ids, int *n);

/* Sets OpenMP and OpenBLAS threads (n <= 0: leave as the environment says). */
void set_threads(int n);

/* Loads base model path (and the PEFT adapter, when given) as a model on
 * device spec ("cpu", "cuda:N", ...), which it opens into *dev (close it
 * after freeing the base); decode_copy as ModelOptions'. Prints "plumb
 * CMD: ..." and returns -1 when the device cannot be opened or the model
 * cannot be loaded or placed. */
int load_model_on(const char *cmd, const char *path, const char *adapter, const char *spec,
                  int decode_copy, Device **dev, Base **base, Model **model);

/* Opens device spec for command cmd; prints why and returns -1 if not. */
int open_device(const char *cmd, const char *spec, Device **dev);

/* Prints a float array as a JSON list with 9 significant digits. */
void print_json_floats(FILE *f, const float *x, int n);
void print_json_ints(FILE *f, const int *x, int n);

/* Prints "plumb <cmd>: <message>" for the last library error. */
void report_error(const char *cmd, const char *what);

#endif
