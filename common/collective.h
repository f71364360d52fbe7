/* collective.h: sums and broadcasts among the replicas of a data-parallel
 * group, behind one table of functions.
 *
 * A group is the `size` replicas of a role that serve one train request
 * together, each with its rank in [0, size). Every replica of the group
 * makes the same calls in the same order with buffers of the same length;
 * a call returns once every replica's buffer holds the result:
 *
 *   allreduce_sum  buf[i] = the sum over the ranks of their buf[i], added
 *                  in rank order (0 + 1 + 2 ...), so that every replica
 *                  gets the same bits, run after run;
 *   broadcast      buf = root's buf.
 *
 * A call fails (< 0, pl_error() naming the group and what happened) when a
 * peer is gone, the group was given up, or the buffers disagree in length;
 * the buffer's contents are then undefined. Implementations: the ZeroMQ
 * relay through the coordinator (worker/relay.h, on its own socket); NCCL
 * between GPUs plugs in behind the same calls.
 *
 * A Collective is used by one thread at a time. */
#ifndef PLUMB_COLLECTIVE_H
#define PLUMB_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t group;          /* unique per set of requests served together    */
    int rank, size;          /* this replica; size >= 1                       */
    uint64_t request;        /* id of the request the group serves            */
} CollGroup;

typedef struct Collective Collective;

typedef struct {
    const char *name;        /* "relay", "nccl"                               */
    int (*allreduce_sum)(Collective *c, const CollGroup *g, float *buf, size_t n);
    int (*broadcast)(Collective *c, const CollGroup *g, int root, float *buf, size_t n);
    void (*free)(Collective *c);
} CollectiveOps;

/* Implementations put this first in their own struct. */
struct Collective {
    const CollectiveOps *ops;
    double busy_s;           /* seconds spent in calls so far (communication and
                                waiting for peers, not compute)                */
    uint64_t bytes;          /* the bytes of the buffers of those calls        */
};

/* The calls, checked: a group of one returns at once (nothing to do); a
 * rank outside [0, size) or a root outside the group fails with PL_EINVAL. */
int coll_allreduce_sum(Collective *c, const CollGroup *g, float *buf, size_t n);
int coll_broadcast(Collective *c, const CollGroup *g, int root, float *buf, size_t n);

/* Frees c (through its implementation) and sets *c to NULL; NULL is fine. */
void coll_free(Collective **c);

#endif
