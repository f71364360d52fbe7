/* enum.h: names of enumerations, parsed from one table.
 *
 * An enumeration whose values are 0..n-1 has a table of n names; parsing
 * and naming both read it, so that a name is spelled once. */
#ifndef PLUMB_ENUM_H
#define PLUMB_ENUM_H

/* The index of s in names[0..n) into *out. An unknown s (NULL included)
 * fails with PL_EINVAL: "WHAT: unknown 'S' (a | b | c)". */
int pl_enum_parse(const char *const *names, int n, const char *s, const char *what, int *out);

/* names[v], or "?" when v is outside [0, n). */
const char *pl_enum_name(const char *const *names, int n, int v);

/* "a | b | c" into buf (cap bytes, cut when short); returns buf. */
const char *pl_enum_list(const char *const *names, int n, char *buf, int cap);

#endif
