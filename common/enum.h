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

/* Defines an enumeration's parser and namer from its table of names:
 *
 *   PL_ENUM_DEFINE(KlEstimator, kl_estimator, "kl_estimator", "k1", "k2", "k3")
 *
 * defines int kl_estimator_parse(const char *s, KlEstimator *out) and
 * const char *kl_estimator_name(KlEstimator v), as their header declares. */
#define PL_ENUM_DEFINE(Type, prefix, what, ...)                                                    \
    static const char *const prefix##_names_[] = {__VA_ARGS__};                                    \
    enum { prefix##_n_ = sizeof prefix##_names_ / sizeof *prefix##_names_ };                       \
    int prefix##_parse(const char *s, Type *out) {                                                 \
        int i_, rc_ = pl_enum_parse(prefix##_names_, prefix##_n_, s, what, &i_);                   \
        if (rc_ == 0) *out = (Type)i_;                                                             \
        return rc_;                                                                                \
    }                                                                                              \
    const char *prefix##_name(Type v) { return pl_enum_name(prefix##_names_, prefix##_n_, (int)v); }

#endif
