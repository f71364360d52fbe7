/* fuzz_runcfg.c: runcfg_load on arbitrary YAML (a run config), then
 * runcfg_validate and, for a config that loads, runcfg_write, whose output
 * must load back and write the same text.
 * FUZZ_REQUIRES: coordinator/config.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "coordinator/config.h"
#include "fuzz/fuzz_util.h"

FUZZ_INIT_DIR

/* runcfg_write's text of c (malloc'ed). */
static char *text_of(const RunConfig *c, size_t *n) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, n);
    if (!f) abort();
    if (runcfg_write(c, f) != 0) abort();
    fclose(f);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "run.yaml", data, size);
    static RunConfig c, d;
    runcfg_defaults(&c);
    if (runcfg_load(&c, path) != 0) {
        pl_clear_error();
        return 0;
    }
    size_t n1, n2;
    char *t1 = text_of(&c, &n1);
    const char *again = fuzz_write(1, "again.yaml", t1, n1);
    runcfg_defaults(&d);
    if (runcfg_load(&d, again) != 0) abort(); /* what we write must load */
    char *t2 = text_of(&d, &n2);
    if (n1 != n2 || memcmp(t1, t2, n1) != 0) abort();
    free(t1), free(t2);
    (void)runcfg_validate(&c);
    pl_clear_error();
    return 0;
}
