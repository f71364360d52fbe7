/* config_yaml.c: reading a run config from YAML (config.h): nested or
 * flat keys, each set once, scalars only, errors with file and line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/err.h"
#include "coordinator/config_impl.h"

typedef struct {
    const char *path;
    RunConfig *c;
    int *seen; /* (NKEYS) line a key was set on, 0 if not yet */
    yaml_parser_t p;
} Loader;

static int yaml_fail(Loader *L) {
    const yaml_parser_t *p = &L->p;
    return pl_fail(PL_EFORMAT, "%s:%zu: malformed YAML: %s%s%s", L->path,
                   (size_t)p->problem_mark.line + 1, p->problem ? p->problem : "parse error",
                   p->context ? " " : "", p->context ? p->context : "");
}

static int next_event(Loader *L, yaml_event_t *ev) {
    if (!yaml_parser_parse(&L->p, ev)) return yaml_fail(L);
    return PL_OK;
}

static int line_of(const yaml_event_t *ev) { return (int)ev->start_mark.line + 1; }

static int unknown_key(Loader *L, int line, const char *key) {
    char hint[300];
    runcfg_suggest(key, hint, sizeof hint);
    return pl_fail(PL_EINVAL, "%s:%d: unknown key '%s'%s", L->path, line, key, hint);
}

/* A plain scalar that YAML reads as null. */
static int is_null(const yaml_event_t *ev) {
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || ev->data.scalar.tag) return 0;
    const char *v = (const char *)ev->data.scalar.value;
    return !v[0] || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

/* Sets key (dotted) from the scalar event ev found on line `line`. */
static int set_scalar(Loader *L, const char *key, int line, const yaml_event_t *ev) {
    const Key *k = runcfg_find_key(key);
    if (!k && runcfg_is_section(key)) {
        if (is_null(ev)) return PL_OK; /* "optim:" with every entry commented out */
        return pl_fail(PL_EINVAL, "%s:%d: '%s' is a section, not a key: give its keys under it",
                       L->path, line, key);
    }
    if (!k) return unknown_key(L, line, key);
    int i = runcfg_key_index(k);
    if (L->seen[i])
        return pl_fail(PL_EINVAL, "%s:%d: duplicate key '%s' (first set on line %d)", L->path, line,
                       key, L->seen[i]);
    L->seen[i] = line;
    const char *v = (const char *)ev->data.scalar.value;
    if (strlen(v) != ev->data.scalar.length)
        return pl_fail(PL_EINVAL, "%s:%d: %s: the value contains a NUL character", L->path,
                       line_of(ev), key);
    char why[256];
    int rc = runcfg_parse_value(k, v, is_null(ev), runcfg_field(L->c, k), why, sizeof why);
    if (rc < 0) return pl_fail(rc, "%s:%d: %s: %s", L->path, line_of(ev), key, why);
    return PL_OK;
}

/* Reads the entries of a mapping whose MAPPING-START was just consumed;
 * prefix ("" or "optim.") is prepended to its keys. */
static int load_mapping(Loader *L, const char *prefix, int depth) {
    if (depth > 8) return pl_fail(PL_EFORMAT, "%s: mappings nested too deep", L->path);
    for (;;) {
        yaml_event_t ev;
        PL_TRY(next_event(L, &ev));
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return PL_OK;
        }
        int kline = line_of(&ev);
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            return pl_fail(PL_EFORMAT, "%s:%d: a key must be a plain name", L->path, kline);
        }
        char key[512];
        int kn = snprintf(key, sizeof key, "%s%s", prefix, (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        if (kn >= (int)sizeof key) return unknown_key(L, kline, key);

        PL_TRY(next_event(L, &ev));
        int rc = PL_OK;
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
            rc = set_scalar(L, key, kline, &ev);
            break;
        case YAML_MAPPING_START_EVENT:
            if (runcfg_find_key(key))
                rc = pl_fail(PL_EINVAL, "%s:%d: %s: a mapping where a value belongs", L->path,
                             kline, key);
            else if (!runcfg_is_section(key))
                rc = unknown_key(L, kline, key);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = runcfg_find_key(key)
                     ? pl_fail(PL_EINVAL, "%s:%d: %s: a sequence where a value belongs", L->path,
                               kline, key)
                     : unknown_key(L, kline, key);
            break;
        case YAML_ALIAS_EVENT:
            rc = pl_fail(PL_EINVAL, "%s:%d: %s: aliases are not supported", L->path, kline, key);
            break;
        default:
            rc = pl_fail(PL_EFORMAT, "%s:%d: %s: unexpected YAML event", L->path, kline, key);
            break;
        }
        int nested = ev.type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(&ev);
        if (rc < 0) return rc;
        if (nested) {
            char sub[520];
            snprintf(sub, sizeof sub, "%s.", key);
            PL_TRY(load_mapping(L, sub, depth + 1));
        }
    }
}

/* The stream: at most one document whose root is a mapping (or empty). */
static int load_stream(Loader *L) {
    yaml_event_t ev;
    PL_TRY(next_event(L, &ev)); /* STREAM-START */
    yaml_event_delete(&ev);
    int docs = 0;
    for (;;) {
        PL_TRY(next_event(L, &ev));
        yaml_event_type_t t = ev.type;
        int line = line_of(&ev);
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT) return PL_OK;
        if (t != YAML_DOCUMENT_START_EVENT)
            return pl_fail(PL_EFORMAT, "%s:%d: malformed YAML", L->path, line);
        if (docs++)
            return pl_fail(PL_EFORMAT, "%s:%d: a second YAML document; a config is one document",
                           L->path, line);
        PL_TRY(next_event(L, &ev));
        line = line_of(&ev);
        if (ev.type == YAML_MAPPING_START_EVENT) {
            yaml_event_delete(&ev);
            PL_TRY(load_mapping(L, "", 0));
        } else {
            int empty = ev.type == YAML_SCALAR_EVENT && is_null(&ev);
            yaml_event_delete(&ev);
            if (!empty)
                return pl_fail(PL_EFORMAT, "%s:%d: the top level must be a mapping of keys",
                               L->path, line);
        }
        PL_TRY(next_event(L, &ev)); /* DOCUMENT-END */
        yaml_event_delete(&ev);
    }
}

int runcfg_load(RunConfig *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    Loader L = {.path = path};
    L.c = malloc(sizeof *L.c);
    L.seen = calloc((size_t)runcfg_key_count(), sizeof *L.seen);
    int rc = PL_OK;
    if (!L.c || !L.seen || !yaml_parser_initialize(&L.p)) {
        rc = pl_fail(PL_ENOMEM, "loading %s: out of memory", path);
        free(L.c), free(L.seen), fclose(f);
        return rc;
    }
    *L.c = *c; /* work on a copy: c is unchanged on error */
    yaml_parser_set_input_file(&L.p, f);
    rc = load_stream(&L);
    if (rc == PL_OK) *c = *L.c;
    yaml_parser_delete(&L.p);
    fclose(f);
    free(L.c), free(L.seen);
    return rc;
}
