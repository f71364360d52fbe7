/* redis_read.c: consumers of a stream (redis.h): the group reader that
 * consumers sharing a group use, and the cursor a training run reads
 * with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/redis_impl.h"

/* ========================================================= group reader */

struct RdsReader {
    RdsConn *c;                 /* borrowed                              */
    char *stream, *group, *consumer;
    long long min_idle_ms;
    int backlog_done;           /* own pending entries all handed out    */
    char backlog_cursor[RDS_ID_MAX]; /* last own pending id handed out   */
    char claim_cursor[RDS_ID_MAX];   /* XAUTOCLAIM start                 */
};


void rds_records_clear(RdsRecord *recs, int n) {
    for (int i = 0; i < n; i++) {
        free(recs[i].payload);
        memset(&recs[i], 0, sizeof recs[i]);
    }
}

int rds_reader_open(RdsReader **out, RdsConn *c, const char *stream, const char *group,
                    const char *consumer) {
    *out = NULL;
    if (!stream || !stream[0] || !group || !group[0] || !consumer || !consumer[0])
        return pl_fail(PL_EINVAL, "redis reader: stream, group and consumer must be non-empty");
    const char *argv[] = {"XGROUP", "CREATE", stream, group, "0", "MKSTREAM"};
    redisReply *r = rds_command(c, 6, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "BUSYGROUP", 9) == 0) {
        freeReplyObject(r); /* the group exists: join it */
    } else {
        int rc = rds_expect_ok(c, r, "XGROUP CREATE");
        if (rc < 0) return pl_wrap(rc, "reader for %s group %s", stream, group);
    }
    RdsReader *rd = calloc(1, sizeof *rd);
    PL_CHECK_ALLOC(rd);
    rd->c = c;
    rd->stream = strdup(stream);
    rd->group = strdup(group);
    rd->consumer = strdup(consumer);
    rd->min_idle_ms = RDS_DEFAULT_MIN_IDLE_MS;
    strcpy(rd->backlog_cursor, "0");
    strcpy(rd->claim_cursor, "0-0");
    if (!rd->stream || !rd->group || !rd->consumer) {
        rds_reader_free(&rd);
        return pl_fail(PL_ENOMEM, "redis reader: out of memory");
    }
    *out = rd;
    return PL_OK;
}

void rds_reader_set_min_idle(RdsReader *r, long long min_idle_ms) {
    r->min_idle_ms = min_idle_ms < 0 ? 0 : min_idle_ms;
}

void rds_reader_free(RdsReader **r) {
    if (!r || !*r) return;
    free((*r)->stream);
    free((*r)->group);
    free((*r)->consumer);
    free(*r);
    *r = NULL;
}

static void copy_str(char *dst, size_t cap, const redisReply *s) {
    size_t n = s->len < cap - 1 ? s->len : cap - 1;
    memcpy(dst, s->str, n);
    dst[n] = '\0';
}

/* Parses entries ([id, [k, v, ...] or nil], ...) into out[*n...]. Entries
 * whose fields are nil were deleted from the stream while pending: their
 * ids go to gone[] so the caller can acknowledge them. */
static int parse_entries(RdsConn *c, const char *stream, const redisReply *arr, const char *op,
                         RdsRecord *out, int *n, int max, char (*gone)[RDS_ID_MAX], int *ngone) {
    for (size_t i = 0; i < arr->elements && *n < max; i++) {
        const redisReply *e = arr->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= RDS_ID_MAX)
            return pl_fail(PL_EFORMAT, "redis %s at %s: malformed stream entry", op, c->url);
        const redisReply *f = e->element[1];
        if (f->type == REDIS_REPLY_NIL) {
            if (gone && *ngone < max) copy_str(gone[(*ngone)++], RDS_ID_MAX, e->element[0]);
            continue;
        }
        if (f->type != REDIS_REPLY_ARRAY || f->elements % 2)
            return pl_fail(PL_EFORMAT, "redis %s at %s: malformed fields of entry %s", op, c->url,
                           e->element[0]->str);
        const redisReply *rec = NULL, *hash = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const redisReply *key = f->element[k], *val = f->element[k + 1];
            if (key->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING) continue;
            if (key->len == 3 && !memcmp(key->str, "rec", 3)) rec = val;
            else if (key->len == 4 && !memcmp(key->str, "hash", 4)) hash = val;
        }
        if (!rec)
            return pl_fail(PL_EFORMAT, "redis %s at %s: entry %s of %s has no \"rec\" field", op,
                           c->url, e->element[0]->str, stream);
        RdsRecord *o = &out[*n];
        memset(o, 0, sizeof *o);
        o->payload = malloc(rec->len + 1);
        PL_CHECK_ALLOC(o->payload);
        memcpy(o->payload, rec->str, rec->len);
        ((char *)o->payload)[rec->len] = '\0';
        o->len = rec->len;
        copy_str(o->id, RDS_ID_MAX, e->element[0]);
        if (hash) copy_str(o->hash, RDS_HASH_HEX, hash);
        (*n)++;
    }
    return PL_OK;
}

/* Acknowledges entries that vanished from the stream while pending: there
 * is nothing left to deliver, and leaving them would pin the PEL. */
static int ack_gone(RdsReader *rd, char (*gone)[RDS_ID_MAX], int ngone) {
    if (!ngone) return PL_OK;
    const char **ids = malloc(ngone * sizeof *ids);
    PL_CHECK_ALLOC(ids);
    for (int i = 0; i < ngone; i++) ids[i] = gone[i];
    int rc = rds_ack(rd, ids, ngone, NULL);
    free(ids);
    return rc;
}

/* XREADGROUP reply: nil, or [[stream, entries]]. */
static int read_group(RdsReader *rd, const char *id, int max, int block_ms, RdsRecord *out,
                      int *n, char (*gone)[RDS_ID_MAX], int *ngone) {
    RdsConn *c = rd->c;
    char count[24], block[24];
    snprintf(count, sizeof count, "%d", max);
    snprintf(block, sizeof block, "%d", block_ms);
    const char *argv[11] = {"XREADGROUP", "GROUP", rd->group, rd->consumer, "COUNT", count};
    int argc = 6;
    if (block_ms > 0) argv[argc++] = "BLOCK", argv[argc++] = block;
    argv[argc++] = "STREAMS";
    argv[argc++] = rd->stream;
    argv[argc++] = id;
    if (block_ms > 0) { /* the socket must wait longer than the server */
        struct timeval tv = c->timeout;
        tv.tv_sec += block_ms / 1000;
        tv.tv_usec += (block_ms % 1000) * 1000;
        if (tv.tv_usec >= 1000000) tv.tv_sec++, tv.tv_usec -= 1000000;
        redisSetTimeout(c->ctx, tv);
    }
    redisReply *r = rds_command(c, argc, argv, NULL);
    if (block_ms > 0 && !c->ctx->err) redisSetTimeout(c->ctx, c->timeout);
    PL_TRY(rds_check(c, r, "XREADGROUP"));
    int rc = PL_OK;
    if (r->type == REDIS_REPLY_NIL) {
        /* timed out with nothing new */
    } else if (r->type != REDIS_REPLY_ARRAY) {
        return rds_bad_type(c, r, "XREADGROUP", "array");
    } else {
        for (size_t s = 0; s < r->elements && rc == PL_OK; s++) {
            const redisReply *sr = r->element[s];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2 ||
                sr->element[1]->type != REDIS_REPLY_ARRAY) {
                rc = pl_fail(PL_EFORMAT, "redis XREADGROUP at %s: malformed reply", c->url);
                break;
            }
            rc = parse_entries(rd->c, rd->stream, sr->element[1], "XREADGROUP", out, n, max, gone, ngone);
        }
    }
    freeReplyObject(r);
    return rc;
}

/* XAUTOCLAIM reply (Redis 7): [next cursor, entries, deleted ids]. */
static int autoclaim(RdsReader *rd, int max, RdsRecord *out, int *n) {
    RdsConn *c = rd->c;
    char idle[24], count[24];
    snprintf(idle, sizeof idle, "%lld", rd->min_idle_ms);
    snprintf(count, sizeof count, "%d", max);
    const char *argv[] = {"XAUTOCLAIM", rd->stream, rd->group, rd->consumer, idle,
                          rd->claim_cursor, "COUNT", count};
    redisReply *r = rds_command(c, 8, argv, NULL);
    PL_TRY(rds_check(c, r, "XAUTOCLAIM"));
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= RDS_ID_MAX ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return rds_bad_type(c, r, "XAUTOCLAIM", "[cursor, entries, ...]");
    copy_str(rd->claim_cursor, RDS_ID_MAX, r->element[0]);
    char (*gone)[RDS_ID_MAX] = malloc((size_t)max * RDS_ID_MAX);
    int ngone = 0;
    int rc = gone ? parse_entries(rd->c, rd->stream, r->element[1], "XAUTOCLAIM", out, n, max, gone, &ngone)
                  : pl_fail(PL_ENOMEM, "redis XAUTOCLAIM: out of memory");
    freeReplyObject(r); /* deleted entries were already removed from the PEL by Redis 7 */
    free(gone);
    return rc;
}

int rds_read(RdsReader *rd, int max_count, int block_ms, RdsRecord *out, int *n) {
    *n = 0;
    if (max_count <= 0) return pl_fail(PL_EINVAL, "redis read: max_count %d <= 0", max_count);
    char (*gone)[RDS_ID_MAX] = malloc((size_t)max_count * RDS_ID_MAX);
    PL_CHECK_ALLOC(gone);
    int ngone = 0, rc = PL_OK;
    /* 1. our own pending entries, from an earlier life of this consumer */
    while (!rd->backlog_done && *n == 0 && rc == PL_OK) {
        ngone = 0;
        rc = read_group(rd, rd->backlog_cursor, max_count, 0, out, n, gone, &ngone);
        if (rc == PL_OK) rc = ack_gone(rd, gone, ngone);
        if (rc < 0) break;
        if (*n == 0 && ngone == 0) rd->backlog_done = 1;
        else if (*n > 0) snprintf(rd->backlog_cursor, RDS_ID_MAX, "%s", out[*n - 1].id);
        else snprintf(rd->backlog_cursor, RDS_ID_MAX, "%s", gone[ngone - 1]);
    }
    /* 2. entries that dead consumers left idle */
    if (rc == PL_OK && *n == 0) rc = autoclaim(rd, max_count, out, n);
    /* 3. new entries */
    if (rc == PL_OK && *n == 0) {
        ngone = 0;
        rc = read_group(rd, ">", max_count, block_ms, out, n, gone, &ngone);
    }
    free(gone);
    if (rc < 0) {
        rds_records_clear(out, *n);
        *n = 0;
        return pl_wrap(rc, "reading %s as %s/%s", rd->stream, rd->group, rd->consumer);
    }
    return PL_OK;
}

int rds_ack(RdsReader *rd, const char *const *ids, int n, long long *acked) {
    if (acked) *acked = 0;
    if (n <= 0) return PL_OK;
    const char **argv = malloc((size_t)(n + 3) * sizeof *argv);
    PL_CHECK_ALLOC(argv);
    argv[0] = "XACK", argv[1] = rd->stream, argv[2] = rd->group;
    for (int i = 0; i < n; i++) argv[3 + i] = ids[i];
    redisReply *r = rds_command(rd->c, n + 3, argv, NULL);
    free(argv);
    PL_TRY(rds_check(rd->c, r, "XACK"));
    if (r->type != REDIS_REPLY_INTEGER) return rds_bad_type(rd->c, r, "XACK", "integer");
    if (acked) *acked = r->integer;
    freeReplyObject(r);
    return PL_OK;
}

int rds_pending(RdsReader *rd, long long *n) {
    const char *argv[] = {"XPENDING", rd->stream, rd->group};
    redisReply *r = rds_command(rd->c, 3, argv, NULL);
    PL_TRY(rds_check(rd->c, r, "XPENDING"));
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return rds_bad_type(rd->c, r, "XPENDING", "[count, ...]");
    *n = r->element[0]->integer;
    freeReplyObject(r);
    return PL_OK;
}

/* ========================================================= a run's cursor */

/* "ms-seq" -> two numbers; a bare "ms" has seq 0. */
static void id_parts(const char *id, unsigned long long *ms, unsigned long long *seq) {
    char *end;
    *ms = strtoull(id, &end, 10);
    *seq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
}

int rds_id_cmp(const char *a, const char *b) {
    unsigned long long am, as, bm, bs;
    id_parts(a, &am, &as);
    id_parts(b, &bm, &bs);
    if (am != bm) return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

int rds_last_id(RdsConn *c, const char *stream, char out[RDS_ID_MAX]) {
    const char *argv[] = {"XREVRANGE", stream, "+", "-", "COUNT", "1"};
    redisReply *r = rds_command(c, 6, argv, NULL);
    PL_TRY(rds_check(c, r, "XREVRANGE"));
    if (r->type != REDIS_REPLY_ARRAY) return rds_bad_type(c, r, "XREVRANGE", "array");
    strcpy(out, "0-0");
    if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2 && r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        copy_str(out, RDS_ID_MAX, r->element[0]->element[0]);
    freeReplyObject(r);
    return PL_OK;
}

/* The group's last-delivered id, pending count and lag from XINFO GROUPS
 * (a flat name/value list per group in RESP2). */
static int group_info(RdsConn *c, RdsCursor *cur) {
    const char *argv[] = {"XINFO", "GROUPS", cur->stream};
    redisReply *r = rds_command(c, 3, argv, NULL);
    PL_TRY(rds_check(c, r, "XINFO GROUPS"));
    if (r->type != REDIS_REPLY_ARRAY) return rds_bad_type(c, r, "XINFO GROUPS", "array");
    int found = 0;
    for (size_t g = 0; g < r->elements && !found; g++) {
        const redisReply *e = r->element[g];
        if (e->type != REDIS_REPLY_ARRAY) continue;
        const redisReply *name = NULL, *last = NULL, *pend = NULL, *lag = NULL;
        for (size_t k = 0; k + 1 < e->elements; k += 2) {
            const redisReply *key = e->element[k], *v = e->element[k + 1];
            if (key->type != REDIS_REPLY_STRING) continue;
            if (!strcmp(key->str, "name") && v->type == REDIS_REPLY_STRING) name = v;
            else if (!strcmp(key->str, "last-delivered-id") && v->type == REDIS_REPLY_STRING) last = v;
            else if (!strcmp(key->str, "pending") && v->type == REDIS_REPLY_INTEGER) pend = v;
            else if (!strcmp(key->str, "lag") && v->type == REDIS_REPLY_INTEGER) lag = v;
        }
        if (name && last && !strcmp(name->str, cur->group)) {
            copy_str(cur->delivered, RDS_ID_MAX, last);
            cur->pending = pend ? pend->integer : 0;
            cur->lag = lag ? lag->integer : -1;
            found = 1;
        }
    }
    freeReplyObject(r);
    if (!found)
        return pl_fail(PL_EFORMAT, "redis XINFO GROUPS at %s: stream %s has no group %s", c->url,
                       cur->stream, cur->group);
    return PL_OK;
}

int rds_cursor_open(RdsConn *c, RdsCursor *cur, const char *stream, const char *group,
                    const char *consumer, const char *at) {
    memset(cur, 0, sizeof *cur);
    if (!stream || !stream[0] || !group || !group[0] || !consumer || !consumer[0])
        return pl_fail(PL_EINVAL, "redis cursor: stream, group and consumer must be non-empty");
    if (strlen(stream) >= sizeof cur->stream || strlen(group) >= sizeof cur->group ||
        strlen(consumer) >= sizeof cur->consumer || (at && strlen(at) >= RDS_ID_MAX))
        return pl_fail(PL_EINVAL, "redis cursor: stream, group, consumer or id too long");
    strcpy(cur->stream, stream), strcpy(cur->group, group), strcpy(cur->consumer, consumer);
    const char *argv[] = {"XGROUP", "CREATE", stream, group, "0", "MKSTREAM"};
    redisReply *r = rds_command(c, 6, argv, NULL);
    int rc;
    if (r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "BUSYGROUP", 9) == 0) {
        freeReplyObject(r);
        rc = PL_OK;
    } else {
        rc = rds_expect_ok(c, r, "XGROUP CREATE");
    }
    if (rc == PL_OK) rc = group_info(c, cur);
    if (rc < 0) return pl_wrap(rc, "opening %s as group %s", stream, group);
    snprintf(cur->at, RDS_ID_MAX, "%s", at ? at : cur->delivered);
    return PL_OK;
}

int rds_cursor_rewind(RdsConn *c, RdsCursor *cur) {
    const char *argv[] = {"XGROUP", "SETID", cur->stream, cur->group, "0"};
    PL_TRY(rds_expect_ok(c, rds_command(c, 5, argv, NULL), "XGROUP SETID"));
    strcpy(cur->at, "0-0");
    strcpy(cur->delivered, "0-0");
    return PL_OK;
}

/* XRANGE stream (after end COUNT max into out. */
static int range(RdsConn *c, RdsCursor *cur, const char *end, int max, RdsRecord *out, int *n) {
    char start[RDS_ID_MAX + 1], count[24];
    snprintf(start, sizeof start, "(%s", cur->at);
    snprintf(count, sizeof count, "%d", max);
    const char *argv[] = {"XRANGE", cur->stream, start, end, "COUNT", count};
    redisReply *r = rds_command(c, 6, argv, NULL);
    PL_TRY(rds_check(c, r, "XRANGE"));
    if (r->type != REDIS_REPLY_ARRAY) return rds_bad_type(c, r, "XRANGE", "array");
    int ngone = 0;
    int rc = parse_entries(c, cur->stream, r, "XRANGE", out, n, max, NULL, &ngone);
    freeReplyObject(r);
    return rc;
}

/* XREADGROUP ... COUNT max [BLOCK ms] STREAMS stream > into out. */
static int deliver(RdsConn *c, RdsCursor *cur, int max, int block_ms, RdsRecord *out, int *n) {
    RdsReader rd = {.c = c, .stream = cur->stream, .group = cur->group, .consumer = cur->consumer};
    char (*gone)[RDS_ID_MAX] = malloc((size_t)max * RDS_ID_MAX);
    PL_CHECK_ALLOC(gone);
    int ngone = 0;
    int rc = read_group(&rd, ">", max, block_ms, out, n, gone, &ngone);
    free(gone);
    return rc;
}

int rds_cursor_read(RdsConn *c, RdsCursor *cur, int max, const char *upto, int block_ms,
                    RdsRecord *out, int *n) {
    *n = 0;
    if (max <= 0) return pl_fail(PL_EINVAL, "redis cursor read: max %d <= 0", max);
    if (upto && rds_id_cmp(cur->at, upto) >= 0) return PL_OK;
    int rc;
    if (rds_id_cmp(cur->at, cur->delivered) < 0) {
        /* delivered to the group before: read again */
        const char *end = upto && rds_id_cmp(upto, cur->delivered) < 0 ? upto : cur->delivered;
        rc = range(c, cur, end, max, out, n);
    } else if (upto) {
        /* a bounded read: see what lies before upto, then take exactly that */
        RdsRecord *peek = calloc((size_t)max, sizeof *peek);
        PL_CHECK_ALLOC(peek);
        int m = 0;
        rc = range(c, cur, upto, max, peek, &m);
        if (rc == PL_OK && m > 0) rc = deliver(c, cur, m, 0, out, n);
        for (int i = 0; rc == PL_OK && i < m; i++)
            if (i >= *n || strcmp(out[i].id, peek[i].id) != 0)
                rc = pl_fail(PL_EPEER, "redis cursor on %s: group %s delivered %s where %s was "
                                       "next; another consumer reads this group",
                             cur->stream, cur->group, i < *n ? out[i].id : "nothing", peek[i].id);
        rds_records_clear(peek, m);
        free(peek);
    } else {
        rc = deliver(c, cur, max, block_ms, out, n);
    }
    if (rc < 0) {
        rds_records_clear(out, *n);
        *n = 0;
        return pl_wrap(rc, "reading %s as group %s", cur->stream, cur->group);
    }
    if (*n > 0) {
        snprintf(cur->at, RDS_ID_MAX, "%s", out[*n - 1].id);
        if (rds_id_cmp(cur->at, cur->delivered) > 0) snprintf(cur->delivered, RDS_ID_MAX, "%s", cur->at);
    }
    return PL_OK;
}

int rds_cursor_ack(RdsConn *c, const RdsCursor *cur, const char *const *ids, int n,
                   long long *acked) {
    RdsReader rd = {.c = c, .stream = (char *)cur->stream, .group = (char *)cur->group};
    return rds_ack(&rd, ids, n, acked);
}

int rds_cursor_lag(RdsConn *c, const RdsCursor *cur, long long *n) {
    RdsCursor now = *cur;
    PL_TRY(group_info(c, &now));
    *n = now.lag;
    return PL_OK;
}
