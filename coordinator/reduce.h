/* reduce.h: the coordinator's half of the collective relay
 * (worker/relay.h): contributions of a data-parallel group's replicas to
 * each of its calls, answered once all ranks have sent theirs.
 *
 * A call is identified by (group, seq). Its contributions must agree on
 * the group's size, the operation and the root, and (sum) on the length;
 * a sum adds them in rank order, so every replica gets the same bits; a
 * broadcast sends root's data to all. Each rank is answered on the peer its
 * contribution came from, with its own request id. The pool checks first
 * that a contribution belongs to the data-parallel train request in flight
 * at its sender. */
#ifndef PLUMB_REDUCE_H
#define PLUMB_REDUCE_H

#include <stddef.h>

#include "common/transport.h"
#include "common/wire.h"

typedef struct Reducer Reducer;

/* How the reducer answers: sends e to peer (0 or < 0). */
typedef int (*ReduceSend)(void *ctx, const ZtPeer *peer, const Plumb__Envelope *e);

int reducer_new(Reducer **out, ReduceSend send, void *ctx);
void reducer_free(Reducer **r);

/* Takes contribution e (an AllReduce) that came from peer. Answers the
 * call's ranks when it completes; an inconsistent contribution fails the
 * whole call (every rank that sent gets an Error) and is reported in msg
 * (cap bytes) with a return of < 0. */
int reducer_add(Reducer *r, const ZtPeer *peer, Plumb__Envelope *e, char *msg, size_t cap);

/* Answers every open call's contributions with an Error saying msg (the
 * requests were given up), and forgets them. */
void reducer_fail_all(Reducer *r, const char *msg);

#endif
