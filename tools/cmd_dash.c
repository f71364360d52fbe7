/* plumb dash: the experiment dashboard, a web page over the run folders
 * (dash/dash.h). */
#include <signal.h>
#include <stdio.h>

#include "common/err.h"
#include "dash/dash.h"
#include "tools/cmd.h"
#include "tools/opts.h"

static volatile int g_stop = 0;
static void on_signal(int s) {
    (void)s;
    g_stop = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb dash [--runs DIR] [--port 8080] [--bind 127.0.0.1] [--chart-js FILE]\n"
            "\n"
            "Serves the experiment dashboard at http://BIND:PORT/: the runs under DIR (each\n"
            "a run.dir: metrics.jsonl, samples.jsonl, status.json, config.yaml), a run's\n"
            "charts by metric group with live updates, runs overlaid, the generations of\n"
            "each eval, and CSV or JSONL export; a JSON API under /api/ (README). Read-only.\n"
            "It binds to localhost unless --bind says otherwise. --runs defaults to runs;\n"
            "--chart-js to the libjs-chart.js package's chart.min.js. Ctrl-C stops it.\n");
}

int cmd_dash(int argc, char **argv) {
    const char *runs = "runs", *bind = "127.0.0.1", *chart = NULL;
    int port = 8080;
    const Opt opts[] = {OPT_STR("--runs", &runs), OPT_STR("--bind", &bind),
                        OPT_STR("--chart-js", &chart), OPT_INT("--port", &port, 1, 65535), OPT_END};
    int prc = opts_parse("dash", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    Dash *d = NULL;
    DashOptions o = {.runs_dir = runs, .chart_js = chart};
    if (dash_new(&d, &o) < 0) {
        fprintf(stderr, "plumb dash: %s\n", pl_error());
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "plumb dash: the runs under %s at http://%s:%d/\n", runs, bind, port);
    int rc = dash_serve(d, bind, port, &g_stop);
    if (rc < 0) fprintf(stderr, "plumb dash: %s\n", pl_error());
    dash_free(&d);
    return rc < 0 ? 1 : 0;
}
