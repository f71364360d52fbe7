/* reference.c: the reference role (reference.h). */
#include "reference/reference.h"
#include "worker/infer.h"

/* The run-wide configuration names the trained roles' adapter, head, full
 * fine-tuning and resume state; the reference takes none of them. */
static void configure(Plumb__RoleConfig *cfg) {
    cfg->lora_rank = 0;
    cfg->head = 0;
    cfg->train_base = 0;
    cfg->head_path = NULL;
    cfg->resume_dir = NULL; /* base_path stays: reference.model */
}

static const RoleRequest requests[] = {{PLUMB__ENVELOPE__BODY_LOGPROBS, role_on_logprobs}};

const RoleDesc reference_role = {.kind = ROLE_REFERENCE, .requests = requests, .n_requests = 1,
                                 .configure = configure};
