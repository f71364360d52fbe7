/* plumb worker: one worker process hosting one or more roles. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor.h"
#include "common/err.h"
#include "critic/critic.h"
#include "reference/reference.h"
#include "reward/reward.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"
#include "worker/worker.h"

/* The roles this program serves: worker/ hosts them, and each role's
 * folder says what it is. */
static const RoleDesc *const ROLES[ROLE_NKINDS] = {
    [ROLE_ACTOR] = &actor_role,
    [ROLE_CRITIC] = &critic_role,
    [ROLE_REWARD] = &reward_role,
    [ROLE_REFERENCE] = &reference_role,
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb worker --role R[,R2...] --connect ADDR --model PATH\n"
            "                    [--tokenizer DIR] [--device cpu|cuda:N] [--rank N]\n"
            "                    [--threads N] [--server-key KEY] [--key FILE.key]\n"
            "                    [--max-message-mb N] [--rejoin-s N] [--verbose]\n"
            "\n"
            "Connects to a coordinator (plumb coordinator, or plumb train) at ADDR\n"
            "(tcp://HOST:PORT or ipc://PATH) and serves the roles actor, critic, reward\n"
            "and/or reference until the run ends. Roles in one process share one copy of\n"
            "the base model PATH (a Hugging Face folder or a llama2.c .bin), which must be\n"
            "the coordinator's model.path: the coordinator refuses a worker whose model\n"
            "differs. --tokenizer defaults to the model's folder. The rank comes from\n"
            "--rank, else SLURM_PROCID, OMPI_COMM_WORLD_RANK, PMI_RANK or RANK, else 0.\n"
            "With CURVE: --server-key is the coordinator's public key (a .pub file or the\n"
            "key itself) and --key this worker's key pair (plumb keygen); the worker's\n"
            "public key must be listed in the coordinator's transport.authorized_keys.\n"
            "--rejoin-s N: when the coordinator goes away (it died, or was restarted with\n"
            "--resume), register again with the one at ADDR, waiting up to N s for it; the\n"
            "model stays loaded. Without it the worker exits with an error.\n"
            "--device cuda:N runs the roles on GPU N (fp32 for now), or fails saying why\n"
            "(no GPU, a build without CUDA); cpu-staged checks the device path on the CPU.\n"
            "--device cuda (no N) takes the GPU from the local rank that srun or mpirun sets\n"
            "(SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID or LOCAL_RANK),\n"
            "modulo the GPUs CUDA_VISIBLE_DEVICES lists when it is set; 0 without one.\n");
}

int cmd_worker(int argc, char **argv) {
    WorkerOptions o = {.roles_table = ROLES, .rank = -1, .device = "cpu"};
    int threads = 0, mb = 0, rejoin_s = 0;
    const Opt opts[] = {
        OPT_REQ("--role", &o.roles), OPT_REQ("--connect", &o.connect), OPT_REQ("--model", &o.model),
        OPT_STR("--tokenizer", &o.tokenizer), OPT_STR("--device", &o.device),
        OPT_STR("--server-key", &o.server_key), OPT_STR("--key", &o.secret_key),
        OPT_INT("--rank", &o.rank, 0, 1 << 30), OPT_INT("--threads", &threads, 1, 1024),
        OPT_INT("--max-message-mb", &mb, 1, 1 << 14), OPT_INT("--rejoin-s", &rejoin_s, 0, 1 << 20),
        OPT_FLAG("--verbose", &o.verbose), OPT_END};
    int prc = opts_parse("worker", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    if (o.rank < 0) {
        int r = worker_rank_from_env();
        o.rank = r < 0 ? 0 : r;
    }
    char device[64];
    if (worker_device_from_env(device, sizeof device, o.device) < 0) {
        fprintf(stderr, "plumb worker: --device '%s' is too long\n", o.device);
        return 2;
    }
    o.device = device;
    o.max_message = (size_t)mb << 20;
    o.rejoin_ms = rejoin_s * 1000;
    set_threads(threads);
    if (worker_run(&o) < 0) {
        fprintf(stderr, "plumb worker (%s): %s\n", o.roles, pl_error());
        return 1;
    }
    return 0;
}
