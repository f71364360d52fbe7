/* status.c: RUN_DIR/status.json, what a dashboard lists a run by, and its
 * entry in Redis's registry of runs (metrics.h) (run_impl.h). Written whole (a temporary file renamed over the old), at
 * the run's start and end:
 *   {"state": "running" | "finished" | "failed", "algo": "grpo",
 *    "host": "gpu7", "pid": 4242, "started": 1764779000.5,
 *    "updated": 1764779300.1, "steps": 200, "error": "..."}
 * The step reached is the last line of metrics.jsonl. A "running" run
 * whose coordinator is gone (its pid on this host is not there any more)
 * is shown as stalled. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "coordinator/run_impl.h"

void status_write(Run *r, const char *state, const char *error) {
    if (!r->started_wall) r->started_wall = pl_wall_s();
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:f, s:f, s:i}", "state", state, "algo",
                          algo_name_str(r->cfg->algo), "host", r->host, "pid", (int)getpid(),
                          "started", r->started_wall, "updated", pl_wall_s(), "steps",
                          r->cfg->steps);
    if (j && error && *error) json_object_set_new(j, "error", json_string(error));
    char path[CFG_PATH + 32], tmp[CFG_PATH + 48];
    snprintf(path, sizeof path, "%s/status.json", r->cfg->run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* the dashboard's view only: a failure here never stops a run */
    if (!j || json_dump_file(j, tmp, JSON_INDENT(2)) != 0 || rename(tmp, path) != 0)
        fprintf(stderr, "plumb coordinator: could not write %s: %s\n", path,
                j ? strerror(errno) : "out of memory");
    json_decref(j);
    /* the same in Redis's registry, with the resolved config */
    char text[65536] = "";
    snprintf(path, sizeof path, "%s/config.yaml", r->cfg->run_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        text[fread(text, 1, sizeof text - 1, f)] = '\0';
        fclose(f);
    }
    MetricsRun run = {.state = state, .algo = algo_name_str(r->cfg->algo), .host = r->host,
                      .error = error, .config = text, .pid = (int)getpid(),
                      .steps = r->cfg->steps, .started = r->started_wall};
    metrics_run(r->metrics, &run);
}
