/* sigpipe.h: writes to a peer that went away without killing the program.
 *
 * A write() to a closed pipe or socket raises SIGPIPE, whose default action
 * ends the process. Library code must not change the process's handlers,
 * so the calls that may write to such a peer (hiredis, a reward program's
 * stdin, an HTTP connection) run between pl_sigpipe_block and
 * pl_sigpipe_restore: SIGPIPE is blocked in the calling thread, and one it
 * raised meanwhile is consumed; the write itself fails with EPIPE. */
#ifndef PLUMB_SIGPIPE_H
#define PLUMB_SIGPIPE_H

#include <signal.h>

typedef struct {
    sigset_t old;
    int was_pending;
} PlPipeGuard;

void pl_sigpipe_block(PlPipeGuard *g);
void pl_sigpipe_restore(PlPipeGuard *g);

#endif
