/* plumb coordinator: the coordinator alone; workers join from anywhere. */
#include <stdio.h>

#include "common/err.h"
#include "coordinator/run.h"
#include "tools/cmd.h"
#include "tools/runargs.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb coordinator CONFIG.yaml [key.sub=value ...] [--resume DIR]\n"
            "                         [--quiet] [--help-config]\n"
            "\n"
            "Runs a training run's coordinator: binds transport.endpoint (set it to an\n"
            "address the workers can reach, e.g. transport.endpoint=tcp://0.0.0.0:5555),\n"
            "waits for `plumb worker` processes to register the roles the algorithm needs,\n"
            "then drives the run. Workers must load the same model.path. Metrics go to\n"
            "RUN_DIR/metrics.jsonl (and metrics.redis when set), checkpoints to\n"
            "RUN_DIR/checkpoints. A dead worker's place goes to the next `plumb worker`\n"
            "that registers for its roles (within transport.startup_timeout_s); when a\n"
            "trained role's state died with it, the run goes back to its newest\n"
            "checkpoint and every worker registers again (start them with --rejoin-s).\n"
            "--resume continues from a checkpoint folder, or from the newest checkpoint of\n"
            "a run folder. --help-config lists every config key.\n");
}

int cmd_coordinator(int argc, char **argv) {
    RunArgs a;
    int rc = runargs_parse(&a, "coordinator", argc, argv, usage);
    if (rc) return rc == 1 ? 0 : 2;
    CoordHooks h = {.resume = a.resume, .quiet = a.quiet};
    if (coord_run(&a.cfg, &h) < 0) {
        fprintf(stderr, "plumb coordinator: %s\n", pl_error());
        return 1;
    }
    return 0;
}
