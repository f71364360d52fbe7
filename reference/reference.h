/* reference.h: the reference policy: the frozen base (plus an
 * init_adapter when configured, e.g. the SFT adapter for DPO). It answers
 * logprobs only and never trains. */
#ifndef PLUMB_REFERENCE_H
#define PLUMB_REFERENCE_H

#include "worker/role.h"

extern const RoleDesc reference_role;

#endif
