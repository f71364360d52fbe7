/* backend.c: opening devices by name, and their sticky errors (backend.h). */
#include "kernels/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

void dev_fail(Device *d, int code, const char *fmt, ...) {
    if (d->err) return; /* the first failure is the one worth naming */
    d->err = code < 0 ? code : PL_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
}

int dev_sync(Device *d) {
    if (!d->lost) d->be->sync(d);
    if (!d->err) return 0;
    int rc = pl_fail(d->err, "%s: %s%s", d->name, d->lost ? "lost: " : "", d->msg);
    if (!d->lost) {
        d->err = 0;
        d->msg[0] = '\0';
    }
    return rc;
}

/* "cuda:N" into *id; -1 when spec is not a device number. */
static int ordinal(const char *s, int *id) {
    if (!*s) return *id = 0, 0;
    if (*s != ':' || !s[1]) return -1;
    char *end;
    long v = strtol(s + 1, &end, 10);
    if (*end || v < 0 || v > 1023 || s[1] == '-' || s[1] == '+') return -1;
    *id = (int)v;
    return 0;
}

int dev_open(Device **out, const char *spec) {
    *out = NULL;
    const Backend *be = NULL;
    int id = 0;
    if (!spec || !strcmp(spec, "cpu")) {
        be = &backend_cpu;
    } else if (!strcmp(spec, "cpu-staged")) {
        be = &backend_staged;
    } else if (!strncmp(spec, "cuda", 4) && ordinal(spec + 4, &id) == 0) {
#ifdef PLUMB_HAVE_CUDA
        be = &backend_cuda;
#else
        return pl_fail(PL_ENOTSUP,
                       "device '%s': this build has no CUDA (nvcc was not found when it was "
                       "configured)",
                       spec);
#endif
    } else {
        return pl_fail(PL_EINVAL, "device '%s': expected cpu, cuda or cuda:N (or cpu-staged)", spec);
    }
    Device *d = calloc(1, sizeof *d);
    PL_CHECK_ALLOC(d);
    d->be = be;
    d->id = id;
    if (!strcmp(be->name, "cuda"))
        snprintf(d->name, sizeof d->name, "cuda:%d", id);
    else
        snprintf(d->name, sizeof d->name, "%s", be->name);
    int rc = be->open(d);
    if (rc < 0) {
        rc = pl_fail(rc, "%s: %s", d->name, d->msg);
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void dev_close(Device **dp) {
    Device *d = *dp;
    if (!d) return;
    d->be->close(d);
    free(d);
    *dp = NULL;
}
