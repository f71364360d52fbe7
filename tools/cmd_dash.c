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
            "usage: plumb dash [--redis URL | --runs DIR] [--port 8080] [--bind 127.0.0.1]\n"
            "                  [--chart-js FILE]\n"
            "\n"
            "Serves the experiment dashboard at http://BIND:PORT/: a list of runs, a run's\n"
            "charts by metric group with live updates, runs overlaid, the generations of\n"
            "each eval, and CSV or JSONL export; a JSON API under /api/ (README). Read-only.\n"
            "\n"
            "The runs come from the registry that every run with metrics.redis keeps in the\n"
            "Redis at URL (redis://[[user]:password@]host[:port][/db]; a Redis that goes\n"
            "away is reconnected to), or from the run folders under DIR (each a run.dir:\n"
            "metrics.jsonl, samples.jsonl, status.json, config.yaml; default runs).\n"
            "It binds to localhost unless --bind says otherwise. --chart-js defaults to the\n"
            "libjs-chart.js package's chart.min.js. Ctrl-C stops it.\n");
}

int cmd_dash(int argc, char **argv) {
    const char *runs = NULL, *redis = NULL, *bind = "127.0.0.1", *chart = NULL;
    int port = 8080;
    const Opt opts[] = {OPT_STR("--runs", &runs), OPT_STR("--redis", &redis), OPT_STR("--bind", &bind),
                        OPT_STR("--chart-js", &chart), OPT_INT("--port", &port, 1, 65535), OPT_END};
    int prc = opts_parse("dash", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    if (runs && redis) {
        fprintf(stderr, "plumb dash: --runs and --redis: one source at a time\n");
        return 2;
    }
    if (!runs) runs = "runs";
    Dash *d = NULL;
    DashOptions o = {.redis_url = redis, .runs_dir = runs, .chart_js = chart};
    if (dash_new(&d, &o) < 0) {
        fprintf(stderr, "plumb dash: %s\n", pl_error());
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (redis) {
        /* a Redis that is not up yet is waited for, not refused: say so */
        char src[700];
        if (dash_source(d, src, sizeof src) < 0)
            fprintf(stderr, "plumb dash: %s; the page shows it until Redis answers\n", src);
        else
            fprintf(stderr, "plumb dash: the runs in %s at http://%s:%d/\n", src, bind, port);
    } else
        fprintf(stderr, "plumb dash: the runs under %s at http://%s:%d/\n", runs, bind, port);
    int rc = dash_serve(d, bind, port, &g_stop);
    if (rc < 0) fprintf(stderr, "plumb dash: %s\n", pl_error());
    dash_free(&d);
    return rc < 0 ? 1 : 0;
}
