/* plumb logprobs: log p(ids[t+1] | ids[..t]) for one sequence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb logprobs --model PATH --ids \"1 5 77 ...\" [--adapter DIR]\n"
            "                      [--temperature T] [--entropy] [--threads N] [--json]\n"
            "                      [--device cpu|cuda:N]\n"
            "\n"
            "Prints the n-1 log-probabilities log p(ids[t+1] | ids[..t]) at temperature 1\n"
            "(or T), one per line, or {\"logprobs\": [...]} with --json. --entropy adds the\n"
            "entropy of each of those n-1 distributions (\"entropies\" in JSON).\n");
}

int cmd_logprobs(int argc, char **argv) {
    const char *model_path = NULL, *ids_str = NULL, *adapter = NULL;
    int json = 0, threads = 0, want_ent = 0;
    float temperature = 1.0f;
    const char *device = "cpu";
    const Opt opts[] = {OPT_REQ("--model", &model_path), OPT_REQ("--ids", &ids_str),
                        OPT_STR("--adapter", &adapter), OPT_STR("--device", &device),
                        OPT_FLOAT("--temperature", &temperature, 1e-4f, 1e4f),
                        OPT_INT("--threads", &threads, 1, 1024), OPT_FLAG("--entropy", &want_ent),
                        OPT_FLAG("--json", &json), OPT_END};
    int prc = opts_parse("logprobs", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    int *ids, n;
    if (arg_ids("--ids", ids_str, &ids, &n)) return 2;
    set_threads(threads);
    Device *dev;
    Base *base;
    Model *m;
    if (load_model_on("logprobs", model_path, adapter, device, 0, &dev, &base, &m) < 0) {
        free(ids);
        return 1;
    }
    int *targets = malloc(sizeof(int) * n);
    float *lp = malloc(sizeof(float) * n), *ent = malloc(sizeof(float) * n);
    for (int t = 0; t < n; t++) targets[t] = t + 1 < n ? ids[t + 1] : -1;
    int cu[2] = {0, n};
    Batch b = {.tokens = ids, .targets = targets, .cu_seqlens = cu, .B = 1, .temperature = temperature};
    int rc = model_forward(m, &b, lp, ent, NULL, NULL);
    if (rc < 0) {
        report_error("logprobs", NULL);
    } else if (json) {
        printf("{\"logprobs\": ");
        print_json_floats(stdout, lp, n - 1);
        if (want_ent) {
            printf(", \"entropies\": ");
            print_json_floats(stdout, ent, n - 1);
        }
        printf("}\n");
    } else {
        for (int t = 0; t + 1 < n; t++) {
            if (want_ent) printf("%.9g\t%.9g\n", lp[t], ent[t]);
            else printf("%.9g\n", lp[t]);
        }
    }
    free(targets);
    free(lp);
    free(ent);
    model_free(&m);
    base_free(&base);
    dev_close(&dev);
    free(ids);
    return rc < 0 ? 1 : 0;
}
