/* worker.h: a worker process: one or more roles behind one DEALER socket.
 *
 * worker_run loads the tokenizer and the base model once, connects to the
 * coordinator, registers (protocol version, roles, rank, device, host, pid,
 * base fingerprint), builds its roles from the Welcome's RoleConfigs (they
 * share the base), and then answers requests one at a time until Shutdown.
 * A second thread sends heartbeats on its own socket every heartbeat_ms, so
 * the coordinator can tell a long computation from a dead process. The
 * coordinator is gone when it stops acknowledging them for
 * coordinator_timeout_ms, or answers one with an Error (it does not know
 * this worker: a coordinator restarted from its checkpoint, or one that
 * took the worker for dead). Then the worker gives up, or with rejoin_ms
 * registers again under a new identity, keeping its base model loaded and
 * building its roles afresh from the new Welcome. A third socket carries the collectives of data-parallel
 * train requests (worker/relay.h), which the roles reach through
 * Role.coll.
 *
 * A bad request (undecodable frame, a shape that lies, a role this process
 * does not host) is answered with an Error and the worker keeps serving. */
#ifndef PLUMB_WORKER_H
#define PLUMB_WORKER_H

#include <stddef.h>

#include "worker/role.h"

typedef struct {
    /* What each role is (indexed by RoleKind; the program's table of the
     * role folders' descriptors). */
    const RoleDesc *const *roles_table;
    const char *connect;       /* coordinator endpoint                          */
    const char *roles;         /* "actor" or "actor,reference"                  */
    const char *model;         /* base checkpoint (HF folder or llama2.c .bin)  */
    const char *tokenizer;     /* folder of tokenizer.json (NULL: the model's)  */
    const char *device;        /* "cpu" (NULL: cpu)                             */
    int rank;                  /* < 0: worker_rank_from_env(), else 0           */
    const char *server_key;    /* CURVE: coordinator public key (file or Z85)   */
    const char *secret_key;    /* CURVE: this worker's .key file                */
    size_t max_message;        /* bytes (0: default)                            */
    int register_timeout_ms;   /* waiting for Welcome (0: 60000)                */
    int coordinator_timeout_ms;/* no heartbeat ack for this long: gone (0: 30000) */
    int rejoin_ms;             /* > 0: when the coordinator is gone, register
                                * again (waiting up to this long for one at the
                                * same address); 0: return the error        */
    int verbose;
} WorkerOptions;

/* Runs until Shutdown (returns 0) or a fatal error (< 0, pl_error() says
 * what: refused registration, model load failure, coordinator gone). */
int worker_run(const WorkerOptions *o);

/* The rank from SLURM_PROCID, OMPI_COMM_WORLD_RANK, PMI_RANK or RANK (the
 * first set), or -1. */
int worker_rank_from_env(void);

/* The rank on this host from SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK,
 * MPI_LOCALRANKID or LOCAL_RANK (the first set), or -1. */
int worker_local_rank_from_env(void);

/* The device a worker started by srun or mpirun opens, into out (cap
 * bytes): spec "cuda" (no number) becomes cuda:L, L the local rank (0
 * when none is set), taken modulo the count of CUDA_VISIBLE_DEVICES when
 * that is set (a launcher that binds each task to its own GPUs renumbers
 * them from 0); any other spec is kept. -1 when out is too small. */
int worker_device_from_env(char *out, size_t cap, const char *spec);

#endif
