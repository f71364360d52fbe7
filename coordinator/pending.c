/* pending.c: rollouts made ahead for later steps (algo.max_staleness), in
 * the order of the steps that train on them, and their file in a
 * checkpoint (run_impl.h).
 *
 * A checkpoint after step s holds the rollouts of steps s + 1 .. s + K
 * (made by the policies of steps s + 1 - K .. s), so that a resumed run
 * trains on exactly what the uninterrupted one did: its in-flight
 * rollouts are not made again by a newer policy. Log-probs go through
 * JSON as doubles of 17 digits, which give each float back exactly. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "coordinator/run_impl.h"

static void pending_clear(Pending *p) {
    rollout_free(&p->ro);
    free(p->which);
    memset(p, 0, sizeof *p);
}

void pending_free_all(Run *r) {
    for (int i = 0; i < r->n_pending; i++) pending_clear(&r->pending[i]);
    r->n_pending = 0;
}

int pending_push(Run *r, Rollout *ro, const long *which, int n, long step, long made_at) {
    if (r->n_pending == PENDING_MAX)
        return pl_fail(PL_EINVAL, "more than %d rollouts made ahead", PENDING_MAX);
    if (r->n_pending && r->pending[r->n_pending - 1].step >= step)
        return pl_fail(PL_EINVAL, "a rollout for step %ld after one for step %ld", step,
                       r->pending[r->n_pending - 1].step);
    Pending *p = &r->pending[r->n_pending];
    p->which = malloc(sizeof(long) * (size_t)(n ? n : 1));
    PL_CHECK_ALLOC(p->which);
    memcpy(p->which, which, sizeof(long) * (size_t)n);
    p->n = n, p->step = step, p->made_at = made_at;
    p->ro = *ro;
    memset(ro, 0, sizeof *ro);
    r->n_pending++;
    return 0;
}

int pending_pop(Run *r, long step, Pending *out) {
    if (r->n_pending == 0 || r->pending[0].step != step)
        return pl_fail(PL_EINVAL, "no rollout made ahead for step %ld", step);
    *out = r->pending[0];
    memmove(r->pending, r->pending + 1, sizeof(Pending) * (size_t)(r->n_pending - 1));
    r->n_pending--;
    memset(&r->pending[r->n_pending], 0, sizeof(Pending));
    return 0;
}

void pending_release(Pending *p) { pending_clear(p); }

static json_t *ints(const int *x, long n) {
    json_t *a = json_array();
    for (long i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(x[i])) < 0) json_decref(a), a = NULL;
    return a;
}

int pending_save(const Run *r, const char *dir) {
    if (r->n_pending == 0) return 0;
    json_t *list = json_array();
    for (int k = 0; list && k < r->n_pending; k++) {
        const Pending *p = &r->pending[k];
        const Packed *s = &p->ro.seqs;
        json_t *which = json_array(), *mask = json_array(), *lp = json_array();
        for (int i = 0; which && i < p->n; i++) json_array_append_new(which, json_integer(p->which[i]));
        for (int t = 0; mask && lp && t < s->N; t++) {
            json_array_append_new(mask, json_integer(s->mask[t]));
            json_array_append_new(lp, json_real(p->ro.lp[t]));
        }
        json_t *o = json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "step", (json_int_t)p->step,
                              "made_at", (json_int_t)p->made_at, "which", which, "offsets",
                              ints(s->offsets, s->B + 1), "tokens", ints(s->tokens, s->N), "mask",
                              mask, "lp", lp);
        if (!o || json_array_append_new(list, o) < 0) json_decref(list), list = NULL;
    }
    char path[CFG_PATH + 128];
    snprintf(path, sizeof path, "%s/rollouts.json", dir);
    json_t *doc = list ? json_pack("{s:o}", "pending", list) : NULL;
    int rc = doc && json_dump_file(doc, path, JSON_COMPACT | JSON_REAL_PRECISION(17)) == 0
                 ? 0
                 : pl_fail(PL_EIO, "writing %s", path);
    json_decref(doc);
    return rc;
}

/* One saved rollout into p; < 0 naming what is wrong. */
static int load_one(json_t *o, int k, const char *path, const Run *r, Pending *p) {
    json_int_t step = -1, made = -1;
    json_t *which, *offsets, *tokens, *mask, *lp;
    if (json_unpack(o, "{s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "step", &step, "made_at", &made,
                    "which", &which, "offsets", &offsets, "tokens", &tokens, "mask", &mask, "lp",
                    &lp) < 0 ||
        !json_is_array(which) || !json_is_array(offsets) || !json_is_array(tokens) ||
        !json_is_array(mask) || !json_is_array(lp))
        return pl_fail(PL_EFORMAT, "%s: rollout %d lacks step, made_at, which, offsets, tokens, "
                       "mask or lp", path, k);
    size_t B = json_array_size(offsets) - 1, N = json_array_size(tokens);
    if (json_array_size(offsets) < 1 || json_array_size(mask) != N || json_array_size(lp) != N)
        return pl_fail(PL_EFORMAT, "%s: rollout %d: %zu tokens, %zu mask values, %zu log-probs",
                       path, k, N, json_array_size(mask), json_array_size(lp));
    p->step = (long)step, p->made_at = (long)made, p->n = (int)json_array_size(which);
    p->which = malloc(sizeof(long) * (size_t)(p->n ? p->n : 1));
    PL_CHECK_ALLOC(p->which);
    for (int i = 0; i < p->n; i++) {
        p->which[i] = (long)json_integer_value(json_array_get(which, (size_t)i));
        if (p->which[i] < 0 || p->which[i] >= r->train.n)
            return pl_fail(PL_EFORMAT, "%s: rollout %d names record %ld of %ld", path, k,
                           p->which[i], r->train.n);
    }
    int *ids = malloc(sizeof(int) * (N ? N : 1)), prev = 0, rc = 0;
    PL_CHECK_ALLOC(ids);
    for (size_t t = 0; t < N; t++) ids[t] = (int)json_integer_value(json_array_get(tokens, t));
    for (size_t b = 0; rc == 0 && b < B; b++) {
        int o0 = (int)json_integer_value(json_array_get(offsets, b));
        int o1 = (int)json_integer_value(json_array_get(offsets, b + 1));
        if (o0 != prev || o1 < o0 || (size_t)o1 > N) {
            rc = pl_fail(PL_EFORMAT, "%s: rollout %d: bad offsets at sequence %zu", path, k, b);
            break;
        }
        int np = 0, len = o1 - o0;
        while (np < len && !json_integer_value(json_array_get(mask, (size_t)(o0 + np)))) np++;
        rc = packed_add(&p->ro.seqs, ids + o0, np, ids + o0 + np, len - np);
        prev = o1;
    }
    free(ids);
    PL_TRY(rc);
    p->ro.lp = malloc(sizeof(float) * (N ? N : 1));
    PL_CHECK_ALLOC(p->ro.lp);
    for (size_t t = 0; t < N; t++) p->ro.lp[t] = (float)json_number_value(json_array_get(lp, t));
    p->ro.n_prompts = p->n;
    return 0;
}

int pending_load(Run *r, const char *dir) {
    char path[CFG_PATH + 128];
    snprintf(path, sizeof path, "%s/rollouts.json", dir);
    if (access(path, R_OK) != 0) return 0;
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (!doc) return pl_fail(PL_EFORMAT, "%s:%d: %s", path, err.line, err.text);
    json_t *list = json_object_get(doc, "pending");
    int rc = json_is_array(list) ? 0 : pl_fail(PL_EFORMAT, "%s: no \"pending\" list", path);
    for (size_t k = 0; rc == 0 && k < json_array_size(list); k++) {
        Pending p = {0};
        rc = load_one(json_array_get(list, k), (int)k, path, r, &p);
        if (rc == 0) rc = pending_push(r, &p.ro, p.which, p.n, p.step, p.made_at);
        pending_clear(&p);
    }
    json_decref(doc);
    if (rc < 0) pending_free_all(r);
    return rc;
}
