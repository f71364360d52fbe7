/* roles.h: the four roles of a run, as the coordinator and the workers
 * both name them (on the wire, in configs, on the command line). */
#ifndef PLUMB_ROLES_H
#define PLUMB_ROLES_H

#include <stddef.h>

typedef enum { ROLE_ACTOR, ROLE_CRITIC, ROLE_REWARD, ROLE_REFERENCE, ROLE_NKINDS } RoleKind;

/* "actor" | "critic" | "reward" | "reference" -> kind; PL_EINVAL naming s. */
int role_kind_parse(const char *s, RoleKind *out);
const char *role_kind_name(RoleKind k);

/* A set of roles (bit 1u << RoleKind) as "actor,reference" into buf (cap
 * bytes); "" for none. Returns buf. */
const char *role_mask_str(unsigned mask, const char *sep, char *buf, size_t cap);

#endif
