/* roles.c: role names (roles.h). */
#include "common/roles.h"

#include <stdio.h>

#include "common/enum.h"

static const char *const kind_names[ROLE_NKINDS] = {"actor", "critic", "reward", "reference"};

int role_kind_parse(const char *s, RoleKind *out) {
    int k;
    int rc = pl_enum_parse(kind_names, ROLE_NKINDS, s, "role", &k);
    if (rc == 0) *out = (RoleKind)k;
    return rc;
}

const char *role_kind_name(RoleKind k) { return pl_enum_name(kind_names, ROLE_NKINDS, (int)k); }

const char *role_mask_str(unsigned mask, const char *sep, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < ROLE_NKINDS && used < cap; k++)
        if (mask & (1u << k))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? sep : "", kind_names[k]);
    return buf;
}
