/* relay.h: the ZeroMQ relay, the collective (common/collective.h) of
 * replicas that reach each other only through the coordinator.
 *
 * Each worker opens one more DEALER socket to the coordinator's ROUTER,
 * with identity "<worker id>/dp", and sends its contribution to each call
 * as an AllReduce message (the request's id, the group, rank, size, the
 * call's sequence number within the group, and the data, in slices under
 * the message limit). The coordinator answers every rank once all have
 * sent (coordinator/reduce.h): the sum in rank order, or root's data.
 * Being on its own socket, a call never sees the requests and Shutdowns of
 * the main socket, which wait there until the call is over; the main loop
 * never sees AllReduce frames.
 *
 * A call fails when the coordinator answers it with an Error (a replica
 * died, the group was given up: the message says which) or when the
 * heartbeat thread has marked the coordinator as gone. Answers to calls of
 * a request given up before are skipped. */
#ifndef PLUMB_RELAY_H
#define PLUMB_RELAY_H

#include <stdatomic.h>

#include "common/collective.h"
#include "common/transport.h"

/* Connects the relay's socket with o (its identity is o->identity);
 * *coordinator_gone (owned by the caller, may be NULL) ends waits. */
int relay_new(Collective **out, const ZtClientOptions *o, const atomic_int *coordinator_gone);

#endif
