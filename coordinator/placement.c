/* Worker processes, their roles and devices (placement.h). */
#include "coordinator/placement.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/roles.h"
#include "coordinator/algos.h"
#include "coordinator/run.h"

/* A number in [0, PLACE_MAX_GPUS) at *p, advancing *p; -1 if none. */
static int gpu_number(const char **p) {
    if (!isdigit((unsigned char)**p)) return -1;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        v = v * 10 + (**p - '0');
        if (v >= PLACE_MAX_GPUS) return -1;
        (*p)++;
    }
    return (int)v;
}

int place_gpus(const char *spec, int *ids, int max, int *n, const char *what) {
    *n = 0;
    const char *p = spec;
    if (!*p) return pl_fail(PL_EINVAL, "%s: no GPUs listed", what);
    for (;;) {
        int a = gpu_number(&p), b = a;
        if (a >= 0 && *p == '-') {
            p++;
            b = gpu_number(&p);
        }
        if (a < 0 || b < 0 || (*p && *p != ','))
            return pl_fail(PL_EINVAL, "%s: \"%s\" is not a list of GPU numbers below %d (as 0-3,6)",
                           what, spec, PLACE_MAX_GPUS);
        if (b < a) return pl_fail(PL_EINVAL, "%s: the range %d-%d runs backwards", what, a, b);
        for (int g = a; g <= b; g++) {
            for (int i = 0; i < *n; i++)
                if (ids[i] == g) return pl_fail(PL_EINVAL, "%s: GPU %d is listed twice", what, g);
            if (*n == max) return pl_fail(PL_EINVAL, "%s: over %d GPUs", what, max);
            ids[(*n)++] = g;
        }
        if (!*p) return 0;
        p++; /* ',' */
    }
}

static int add(Placement *out, const char *roles, const char *device, const RunConfig *c) {
    if (out->n == PLACE_MAX_PROCS)
        return pl_fail(PL_EINVAL, "launch.workers: \"%s\" makes over %d processes", c->workers,
                       PLACE_MAX_PROCS);
    PlaceProc *p = &out->proc[out->n];
    if (snprintf(p->roles, sizeof p->roles, "%s", roles) >= (int)sizeof p->roles ||
        snprintf(p->device, sizeof p->device, "%s", device) >= (int)sizeof p->device)
        return pl_fail(PL_EINVAL, "launch.workers: the process \"%s\" on %s: names too long",
                       roles, device);
    out->n++;
    return 0;
}

/* One process per GPU of gpus (n), with roles. */
static int add_on(Placement *out, const char *roles, const int *gpus, int n, const RunConfig *c) {
    for (int i = 0; i < n; i++) {
        char dev[24];
        snprintf(dev, sizeof dev, "cuda:%d", gpus[i]);
        PL_TRY(add(out, roles, dev, c));
    }
    return 0;
}

/* The roles of one entry ("actor,reference"): known, and into *placed. */
static int entry_roles(const char *roles, unsigned *placed, const RunConfig *c) {
    char buf[128], *save = NULL;
    if (snprintf(buf, sizeof buf, "%s", roles) >= (int)sizeof buf || !*buf)
        return pl_fail(PL_EINVAL, "launch.workers: the entry \"%s\" in \"%s\"", roles, c->workers);
    for (char *r = strtok_r(buf, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
        RoleKind k;
        if (role_kind_parse(r, &k) < 0)
            return pl_fail(PL_EINVAL, "launch.workers: unknown role '%s' in \"%s\"", r, c->workers);
        *placed |= 1u << k;
    }
    return 0;
}

int place_plan(const RunConfig *c, Placement *out) {
    out->n = 0;
    const unsigned need = coord_needed_roles(c);
    unsigned placed = 0;
    int pool[PLACE_MAX_GPUS], npool = 0;
    if (c->devices[0]) {
        PL_TRY(place_gpus(c->devices, pool, PLACE_MAX_GPUS, &npool, "launch.devices"));
        if (strcmp(c->device, "cuda"))
            return pl_fail(PL_EINVAL, "launch.devices lists GPUs, so launch.device must be cuda, "
                                      "not %s", c->device);
    }
    int colocated = !strcmp(c->workers, "colocated") || (!strcmp(c->workers, "auto") && npool);
    if (colocated) {
        if (!npool)
            return pl_fail(PL_EINVAL, "launch.workers colocated puts every role on every GPU of "
                                      "launch.devices, which lists none");
        char all[128] = "";
        for (int k = 0; k < ROLE_NKINDS; k++)
            if (need & (1u << k))
                snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", all[0] ? "," : "",
                         role_kind_name(k));
        return add_on(out, all, pool, npool, c);
    }
    if (!strcmp(c->workers, "auto")) {
        for (int k = 0; k < ROLE_NKINDS; k++)
            if (need & (1u << k)) PL_TRY(add(out, role_kind_name(k), c->device, c));
        return 0;
    }
    char buf[CFG_STR], *save = NULL;
    snprintf(buf, sizeof buf, "%s", c->workers);
    for (char *e = strtok_r(buf, " \t", &save); e; e = strtok_r(NULL, " \t", &save)) {
        char *at = strchr(e, '@');
        if (at) *at = '\0';
        PL_TRY(entry_roles(e, &placed, c));
        if (!at) {
            if (npool)
                return pl_fail(PL_EINVAL, "launch.workers: \"%s\" says no GPUs; with "
                                          "launch.devices every entry does (%s@GPUS)", e, e);
            PL_TRY(add(out, e, c->device, c));
            continue;
        }
        if (strcmp(c->device, "cuda")) /* cuda:N would say another GPU */
            return pl_fail(PL_EINVAL, "launch.workers: \"%s@%s\" places processes on GPUs, and "
                                      "launch.device is %s, not cuda", e, at + 1, c->device);
        int gpus[PLACE_MAX_GPUS], ng;
        char what[160];
        snprintf(what, sizeof what, "launch.workers \"%.64s@\"", e);
        PL_TRY(place_gpus(at + 1, gpus, PLACE_MAX_GPUS, &ng, what));
        for (int i = 0; npool && i < ng; i++) {
            int in = 0;
            for (int j = 0; j < npool; j++) in |= pool[j] == gpus[i];
            if (!in)
                return pl_fail(PL_EINVAL, "launch.workers: \"%s@%s\" uses GPU %d, which "
                                          "launch.devices (%s) does not list",
                               e, at + 1, gpus[i], c->devices);
        }
        PL_TRY(add_on(out, e, gpus, ng, c));
    }
    for (int k = 0; k < ROLE_NKINDS; k++)
        if ((need & (1u << k)) && !(placed & (1u << k)))
            return pl_fail(PL_EINVAL, "launch.workers \"%s\" places no process for the %s role, "
                                      "which %s needs",
                           c->workers, role_kind_name(k), algo_name_str(c->algo));
    return 0;
}
