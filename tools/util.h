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

/* Loads a base (HF folder or llama2.c .bin) and, with adapter != NULL, a
 * PEFT adapter into a new Model. Prints errors; returns -1 on failure. */
int load_model(const char *path, const char *adapter, Base **base, Model **model);

/* Prints a float array as a JSON list with 9 significant digits. */
void print_json_floats(FILE *f, const float *x, int n);
void print_json_ints(FILE *f, const int *x, int n);

/* Prints "plumb <cmd>: <message>" for the last library error. */
void report_error(const char *cmd, const char *what);

#endif
