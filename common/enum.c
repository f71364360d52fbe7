/* enum.c: enumeration names from one table (enum.h). */
#include "common/enum.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

const char *pl_enum_list(const char *const *names, int n, char *buf, int cap) {
    int used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < cap; i++)
        used += snprintf(buf + used, (size_t)(cap - used), "%s%s", i ? " | " : "", names[i]);
    return buf;
}

int pl_enum_parse(const char *const *names, int n, const char *s, const char *what, int *out) {
    for (int i = 0; s && i < n; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return 0;
        }
    char list[512];
    return pl_fail(PL_EINVAL, "%s: unknown '%s' (%s)", what, s ? s : "(null)",
                   pl_enum_list(names, n, list, (int)sizeof list));
}

const char *pl_enum_name(const char *const *names, int n, int v) {
    return v >= 0 && v < n ? names[v] : "?";
}
