/* stream.c: training data from a Redis stream that `plumb ingest` fills
 * (run_impl.h).
 *
 * The stream fixes the order. With data.follow the run takes windows of
 * data.shuffle_window consecutive valid records, each shuffled by run.seed
 * and its index, and a step's batch is the next train.batch_size of the
 * window; it waits for records that have not arrived yet. Without it, the
 * run takes what the stream held when it began (up to that entry's id)
 * and makes epochs over it, as over a file. Either way the batches depend
 * only on the stream's content, never on when the records came.
 *
 * A record is acknowledged (XACK) only after the checkpoint that covers
 * the step that used it is in place. The checkpoint keeps the cursor, the
 * window's records and the ids still to acknowledge (stream.json,
 * stream.bin), so a resumed run reads on from the cursor and acknowledges
 * what its predecessor could not. RUN_DIR/consumed.jsonl says which entry
 * ids each step trained on.
 *
 * Entries the run cannot use (not a record, another tokenizer, a shape the
 * algorithm does not take) go to `<stream>:dead` with the reason, and the
 * run goes on. A lost connection is waited out: reconnecting with backoff,
 * serving the workers meanwhile, saying so on stdout and in perf/. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/redis.h"
#include "coordinator/run_impl.h"
#include "data/record.h"

#define READ_CHUNK 256       /* entries per read                            */
#define FOLLOW_BLOCK_MS 200  /* a wait for new entries, between pool polls  */
#define WAIT_NOTE_S 10.0     /* how often a waiting run says so             */
#define CONSUMER "trainer"   /* the run's one consumer in its group         */

typedef char StreamId[RDS_ID_MAX];

typedef struct {
    StreamId *v;
    size_t n, cap;
} IdList;

typedef struct Stream Stream;

struct Stream {
    RdsConn *conn;
    RdsCursor cur;
    char fp[REC_TOK_HEX];  /* this run's tokenizer                         */
    long window;           /* follow: records of one window                */
    long block;            /* follow: the window r->train holds, -1 none   */
    char end[RDS_ID_MAX];  /* epochs: the newest id when the run began     */
    IdList ids;            /* (r->train.n) each record's entry id          */
    size_t rec_cap;        /* of r->train.r                                */
    IdList unacked;        /* used or dead since the last checkpoint       */
    IdList dead;           /* dead-lettered while reading this step's data */
    long dead_total;       /* dead entries met by the run                  */
    long reconnects;
    long long lag;         /* entries the group had not had, at the window's load */
    double wait_s, redis_s; /* this step: reading and waiting; Redis down  */
    double last_note;
    FILE *consumed;        /* RUN_DIR/consumed.jsonl                       */
};

static int ids_add(IdList *l, const char *id) {
    PL_TRY(pl_grow(&l->v, &l->cap, l->n + 1, sizeof *l->v));
    snprintf(l->v[l->n++], RDS_ID_MAX, "%s", id);
    return 0;
}

static void ids_free(IdList *l) {
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Waits ms, serving the workers when they are there. */
static int wait_ms(Run *r, int ms) {
    if (r->pool) return pool_poll(r->pool, ms);
    if (ms > 0) usleep((useconds_t)ms * 1000);
    return 0;
}

static void note(Run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(Run *r, const char *fmt, ...) {
    if (r->hooks->quiet) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    printf("step %ld/%d  %s\n", r->step, r->cfg->steps, line);
    fflush(stdout);
}

/* The connection is gone: connect again, as long as it takes, and reopen
 * the cursor where it was. A server that came back without the entries up
 * to the cursor (restarted without persistence) is an error. */
static int reconnect(Run *r, Stream *s) {
    const RunConfig *c = r->cfg;
    char why[512];
    snprintf(why, sizeof why, "%s", pl_error());
    double t0 = pl_now_s(), delay = 0.2;
    for (int attempt = 1;; attempt++) {
        note(r, "Redis lost (%s); reconnecting, attempt %d", why, attempt);
        rds_free(&s->conn);
        PL_TRY(wait_ms(r, (int)(delay * 1000)));
        RdsCursor cur;
        char last[RDS_ID_MAX];
        int rc = rds_connect(&s->conn, c->train_path, 5.0);
        if (rc == 0) rc = rds_cursor_open(s->conn, &cur, c->data_stream, c->data_group, CONSUMER,
                                          s->cur.at);
        if (rc == 0) rc = rds_last_id(s->conn, c->data_stream, last);
        if (rc == 0 && rds_id_cmp(last, s->cur.at) < 0)
            return pl_fail(PL_EIO,
                           "data.stream %s came back from Redis ending at %s, before the run's "
                           "cursor %s: the server lost entries (run it with appendonly yes)",
                           c->data_stream, last, s->cur.at);
        if (rc == 0) {
            s->cur = cur;
            s->reconnects++;
            s->redis_s += pl_now_s() - t0;
            note(r, "Redis back after %.1f s", pl_now_s() - t0);
            return 0;
        }
        if (s->conn && !rds_conn_lost(s->conn)) return rc; /* it answers, with an error */
        snprintf(why, sizeof why, "%s", pl_error());
        delay = delay * 2 < 5.0 ? delay * 2 : 5.0;
    }
}

/* After an operation failed with *rc: 1 to try it again once the
 * connection is back, 0 when *rc stands. */
static int retry(Run *r, Stream *s, int *rc) {
    if (*rc >= 0 || !rds_conn_lost(s->conn)) return 0;
    int e = reconnect(r, s);
    if (e < 0) {
        *rc = e;
        return 0;
    }
    return 1;
}

/* Sends entry e to the dead letters with the reason; the run goes on. */
static int dead_letter(Run *r, Stream *s, const RdsRecord *e, const char *reason) {
    int rc;
    do rc = rds_dead_letter(s->conn, r->cfg->data_stream, "entry", e->id, reason, e->payload,
                            e->len, NULL, NULL);
    while (retry(r, s, &rc));
    PL_TRY(rc);
    if (!r->hooks->quiet && s->dead_total < 5)
        fprintf(stderr, "plumb coordinator: data.stream %s entry %s to %s:dead: %s\n",
                r->cfg->data_stream, e->id, r->cfg->data_stream, reason);
    s->dead_total++;
    PL_TRY(ids_add(&s->dead, e->id));
    return ids_add(&s->unacked, e->id);
}

/* One entry: a record the run can train on joins r->train, anything else
 * becomes a dead letter. */
static int take(Run *r, Stream *s, const RdsRecord *e) {
    char why[1024], tok[REC_TOK_HEX], h[RDS_HASH_HEX];
    DsRecord rec;
    rds_hash_hex(e->payload, e->len, h);
    if (e->hash[0] && strcmp(h, e->hash) != 0)
        return dead_letter(r, s, e, "hash: the record does not match its hash field");
    if (rec_unpack(e->payload, e->len, &rec, tok) < 0) {
        snprintf(why, sizeof why, "bad_record: %s", pl_error());
        return dead_letter(r, s, e, why);
    }
    if (strcmp(tok, s->fp) != 0) {
        ds_record_free(&rec);
        snprintf(why, sizeof why, "tokenizer: made by tokenizer %s; this run's (%.300s) is %s", tok,
                 r->cfg->tokenizer, s->fp);
        return dead_letter(r, s, e, why);
    }
    DsConfig dc = r->dc;
    dc.format = r->algo->data;
    DsReason w;
    char msg[512];
    if (ds_record_fit(&dc, &rec, &w, msg, sizeof msg) == 0) {
        ds_record_free(&rec);
        snprintf(why, sizeof why, "%s: %s cannot use it: %s", ds_reason_name(w),
                 algo_name_str(r->cfg->algo), msg);
        return dead_letter(r, s, e, why);
    }
    int rc = pl_grow(&r->train.r, &s->rec_cap, (size_t)r->train.n + 1, sizeof *r->train.r);
    if (rc == 0) rc = ids_add(&s->ids, e->id);
    if (rc < 0) {
        ds_record_free(&rec);
        return rc;
    }
    r->train.r[r->train.n++] = rec;
    return 0;
}

/* Reads valid records into r->train until it holds want of them, or, not
 * following, until nothing is left up to upto. Never reads past what it
 * needs: the cursor must stop at the last record taken. */
static int read_until(Run *r, Stream *s, long want, const char *upto, int follow) {
    RdsRecord *buf = calloc(READ_CHUNK, sizeof *buf);
    PL_CHECK_ALLOC(buf);
    int rc = 0;
    double waiting = 0;
    while (rc == 0 && r->train.n < want) {
        long left = want - r->train.n;
        int max = left < READ_CHUNK ? (int)left : READ_CHUNK, got = 0;
        do rc = rds_cursor_read(s->conn, &s->cur, max, upto, follow ? FOLLOW_BLOCK_MS : 0, buf,
                                &got);
        while (retry(r, s, &rc));
        for (int i = 0; rc == 0 && i < got; i++)
            rc = take(r, s, &buf[i]);
        rds_records_clear(buf, got);
        if (rc < 0 || got > 0) continue;
        if (!follow) break;
        double now = pl_now_s();
        if (waiting == 0) waiting = now;
        if (now - s->last_note >= WAIT_NOTE_S && now - waiting >= 1.0) {
            long long lag = -1;
            do rc = rds_cursor_lag(s->conn, &s->cur, &lag);
            while (retry(r, s, &rc));
            note(r, "waiting for data: %ld of the %ld records of window %ld, %lld pending in %s",
                 r->train.n, want, s->block + 1, lag, r->cfg->data_stream);
            s->last_note = now;
        }
        if (rc == 0) rc = wait_ms(r, 0);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------- checkpoint state */

static json_t *ids_json(const StreamId *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static int ids_from_json(IdList *l, json_t *a, const char *path, const char *key) {
    size_t i;
    json_t *v;
    if (!json_is_array(a)) return pl_fail(PL_EFORMAT, "%s: \"%s\" is not a list of ids", path, key);
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || strlen(json_string_value(v)) >= RDS_ID_MAX)
            return pl_fail(PL_EFORMAT, "%s: %s[%zu] is not a stream id", path, key, i);
        PL_TRY(ids_add(l, json_string_value(v)));
    }
    return 0;
}

/* The window's records (u32 length + packed record, each) of stream.bin. */
static int window_load(Run *r, Stream *s, const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return pl_fail(PL_EIO, "%s: %s", path, strerror(errno));
    int rc = pl_grow(&r->train.r, &s->rec_cap, n, sizeof *r->train.r);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char h[4], *b = NULL;
        size_t len = 0;
        if (fread(h, 1, 4, f) == 4) len = h[0] | h[1] << 8 | h[2] << 16 | (size_t)h[3] << 24;
        if (len == 0 || len > (64u << 20) || !(b = malloc(len)) || fread(b, 1, len, f) != len)
            rc = pl_fail(PL_EFORMAT, "%s: record %zu of %zu is cut short", path, i, n);
        if (rc == 0 && (rc = rec_unpack(b, len, &r->train.r[i], NULL)) < 0)
            rc = pl_wrap(rc, "%s: record %zu", path, i);
        if (rc == 0) r->train.n++;
        free(b);
    }
    fclose(f);
    return rc;
}

int stream_save(Run *r, const char *dir) {
    Stream *s = r->stream;
    const RunConfig *c = r->cfg;
    long next = r->step * (long)c->batch_size;
    int keep_window = c->follow && s->block >= 0 && next / s->window == s->block;
    char path[CFG_PATH + 64];
    json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "mode",
                          c->follow ? "follow" : "epochs", "step", (json_int_t)r->step, "at",
                          s->cur.at, "end", s->end, "block",
                          (json_int_t)(keep_window ? s->block : -1), "records",
                          (json_int_t)r->train.n, "dead", (json_int_t)s->dead_total);
    if (j) json_object_set_new(j, "unacked", ids_json(s->unacked.v, s->unacked.n));
    if (j && keep_window) json_object_set_new(j, "window", ids_json(s->ids.v, s->ids.n));
    snprintf(path, sizeof path, "%s/stream.json", dir);
    int rc = j && json_dump_file(j, path, JSON_INDENT(1)) == 0 ? 0
                                                               : pl_fail(PL_EIO, "writing %s", path);
    json_decref(j);
    if (rc < 0 || !keep_window) return rc;
    snprintf(path, sizeof path, "%s/stream.bin", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return pl_fail(PL_EIO, "writing %s: %s", path, strerror(errno));
    for (long i = 0; rc == 0 && i < r->train.n; i++) {
        unsigned char *b, h[4];
        size_t len;
        if ((rc = rec_pack(&r->train.r[i], s->fp, &b, &len)) < 0) break;
        for (int k = 0; k < 4; k++) h[k] = (unsigned char)(len >> (8 * k));
        if (fwrite(h, 1, 4, f) != 4 || fwrite(b, 1, len, f) != len)
            rc = pl_fail(PL_EIO, "writing %s", path);
        free(b);
    }
    if (fclose(f) != 0 && rc == 0) rc = pl_fail(PL_EIO, "writing %s", path);
    return rc;
}

int stream_saved(Run *r) {
    Stream *s = r->stream;
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < s->unacked.n; at += 1024) {
        const char *ids[1024];
        int n = s->unacked.n - at < 1024 ? (int)(s->unacked.n - at) : 1024;
        for (int i = 0; i < n; i++)
            ids[i] = s->unacked.v[at + i];
        do rc = rds_cursor_ack(s->conn, &s->cur, ids, n, NULL);
        while (retry(r, s, &rc));
    }
    if (rc == 0) s->unacked.n = 0;
    return rc;
}

/* The state a checkpoint kept (stream.json), into s; *step is its step. */
static int state_load(Run *r, Stream *s, long *step, long *records) {
    const RunConfig *c = r->cfg;
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/stream.json", r->resume_from);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        return pl_fail(PL_EFORMAT, "%s: %s (a checkpoint of a run that read a stream has one)",
                       path, err.text);
    const char *mode = NULL, *at = NULL, *end = NULL;
    json_int_t st = 0, block = -1, recs = 0, dead = 0;
    int rc = 0;
    if (json_unpack(j, "{s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "mode", &mode, "step", &st, "at",
                    &at, "end", &end, "block", &block, "records", &recs, "dead", &dead) ||
        strlen(at) >= RDS_ID_MAX || strlen(end) >= RDS_ID_MAX)
        rc = pl_fail(PL_EFORMAT, "%s: missing or bad mode, step, at, end, block, records or dead",
                     path);
    else if (strcmp(mode, c->follow ? "follow" : "epochs") != 0)
        rc = pl_fail(PL_EINVAL, "%s was written with data.follow %s; this run has %s", path,
                     c->follow ? "false" : "true", c->follow ? "true" : "false");
    if (rc == 0) rc = ids_from_json(&s->unacked, json_object_get(j, "unacked"), path, "unacked");
    if (rc == 0 && block >= 0)
        rc = ids_from_json(&s->ids, json_object_get(j, "window"), path, "window");
    if (rc == 0) {
        snprintf(s->cur.at, RDS_ID_MAX, "%s", at);
        snprintf(s->end, RDS_ID_MAX, "%s", end);
        s->block = (long)block, s->dead_total = (long)dead;
        *step = (long)st, *records = (long)recs;
    }
    json_decref(j);
    if (rc == 0 && block >= 0) {
        snprintf(path, sizeof path, "%s/stream.bin", r->resume_from);
        rc = window_load(r, s, path, s->ids.n);
    }
    return rc;
}

/* ------------------------------------------------------------------- run */

int stream_open(Run *r) {
    const RunConfig *c = r->cfg;
    Stream *s = calloc(1, sizeof *s);
    PL_CHECK_ALLOC(s);
    r->stream = s;
    s->block = -1;
    strcpy(s->cur.at, "0-0");
    strcpy(s->end, "0-0");
    PL_TRY(rec_tokenizer_fp(c->tokenizer, s->fp));
    int rc = rds_connect(&s->conn, c->train_path, 5.0);
    if (rc < 0) return pl_wrap(rc, "data.train");
    /* the stream's tokenizer must be this run's (a run that comes first
     * ties the stream to its own, so an ingestion with another is refused) */
    char have[CFG_PATH + 64];
    int same = rec_stream_tokenizer(s->conn, c->data_stream, s->fp, c->tokenizer, have, sizeof have);
    if (same < 0) return same;
    if (!same)
        return pl_fail(PL_EINVAL, "data.stream %s was ingested with tokenizer %s; this run's "
                                  "model.tokenizer %s is %s",
                       c->data_stream, have, c->tokenizer, s->fp);
    long step = 0, records = -1;
    if (r->resume_from[0]) PL_TRY(state_load(r, s, &step, &records));
    /* a resumed run follows on from its checkpoint's cursor; a new one,
     * and one making epochs, reads the stream from its start */
    char at[RDS_ID_MAX];
    snprintf(at, sizeof at, "%s", c->follow && r->resume_from[0] ? s->cur.at : "0-0");
    PL_TRY(rds_cursor_open(s->conn, &s->cur, c->data_stream, c->data_group, CONSUMER, at));
    if (!r->resume_from[0] && rds_id_cmp(s->cur.delivered, "0-0") > 0) {
        if (!r->hooks->quiet)
            fprintf(stderr, "plumb coordinator: data.group %s had read %s up to %s (an earlier "
                            "run); this new run reads it from the start (--resume goes on from "
                            "a checkpoint)\n",
                    c->data_group, c->data_stream, s->cur.delivered);
        PL_TRY(rds_cursor_rewind(s->conn, &s->cur));
    }
    /* re-acknowledge what the checkpoint's run may not have */
    PL_TRY(stream_saved(r));

    if (!c->follow) {
        if (!r->resume_from[0]) PL_TRY(rds_last_id(s->conn, c->data_stream, s->end));
        PL_TRY(read_until(r, s, 1L << 62, s->end, 0));
        if (r->train.n == 0)
            return pl_fail(PL_EFORMAT, "data.stream %s holds no usable record up to %s (%ld dead)",
                           c->data_stream, s->end, s->dead_total);
        if (records >= 0 && records != r->train.n)
            return pl_fail(PL_EFORMAT, "data.stream %s now holds %ld usable records up to %s; the "
                                       "checkpoint's run had %ld (entries were deleted or trimmed)",
                           c->data_stream, r->train.n, s->end, records);
        r->order.n = r->train.n;
        r->order.window = c->shuffle_window;
    } else {
        s->window = c->shuffle_window;
        r->order.n = s->window;
    }
    r->order.perm = malloc(sizeof(long) * (size_t)r->order.n);
    PL_CHECK_ALLOC(r->order.perm);
    r->order.epoch = r->order.block = -1;
    r->order.seed = c->seed;
    r->order.shuffle = c->shuffle;

    char path[CFG_PATH + 32];
    snprintf(path, sizeof path, "%s/consumed.jsonl", c->run_dir);
    if (r->resume_from[0]) PL_TRY(jsonl_truncate_after(path, step));
    else unlink(path);
    if (!(s->consumed = fopen(path, "a")))
        return pl_fail(PL_EIO, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

int stream_next(Run *r, long *which, int B) {
    Stream *s = r->stream;
    double t0 = pl_now_s();
    s->redis_s = 0;
    s->dead.n = 0;
    long k0 = r->step * (long)B;
    if (r->cfg->follow && k0 / s->window != s->block) {
        /* the next window: its records replace the last one's */
        for (long i = 0; i < r->train.n; i++)
            ds_record_free(&r->train.r[i]);
        r->train.n = 0;
        s->ids.n = 0;
        refcache_free(&r->ref);
        s->block = k0 / s->window;
        PL_TRY(read_until(r, s, s->window, NULL, 1));
        r->order.epoch = -1;
        /* once a window, not every step: a round trip */
        int rc;
        do rc = rds_cursor_lag(s->conn, &s->cur, &s->lag);
        while (retry(r, s, &rc));
        PL_TRY(rc);
    }
    order_step(&r->order, r->step, B, which);
    s->wait_s = pl_now_s() - t0;
    return 0;
}

int stream_step_done(Run *r, const long *which, int B) {
    Stream *s = r->stream;
    json_t *ids = json_array(), *line = json_object();
    long k0 = (r->step - 1) * (long)B;
    int rc = ids && line ? 0 : pl_fail(PL_ENOMEM, "consumed.jsonl: out of memory");
    for (int i = 0; rc == 0 && i < B; i++) {
        json_array_append_new(ids, json_string(s->ids.v[which[i]]));
        /* acknowledge a record once: epochs after the first use it again */
        if (r->cfg->follow || k0 + i < r->train.n) rc = ids_add(&s->unacked, s->ids.v[which[i]]);
    }
    if (rc == 0) {
        json_object_set_new(line, "step", json_integer(r->step));
        json_object_set(line, "ids", ids);
        if (s->dead.n) json_object_set_new(line, "dead", ids_json(s->dead.v, s->dead.n));
        char *txt = json_dumps(line, JSON_COMPACT);
        if (!txt || fprintf(s->consumed, "%s\n", txt) < 0 || fflush(s->consumed) != 0)
            rc = pl_fail(PL_EIO, "writing consumed.jsonl of %s", r->cfg->run_dir);
        free(txt);
    }
    json_decref(ids);
    json_decref(line);
    stats_put(&r->stats, "data/dead", (double)s->dead_total);
    stats_put(&r->stats, "perf/data_wait_s", s->wait_s);
    stats_put(&r->stats, "perf/redis_down_s", s->redis_s);
    stats_put(&r->stats, "perf/redis_reconnects", (double)s->reconnects);
    if (r->cfg->follow) stats_put(&r->stats, "perf/data_pending", (double)s->lag);
    return rc;
}

void stream_free(Run *r) {
    Stream *s = r->stream;
    if (!s) return;
    if (s->consumed) fclose(s->consumed);
    rds_free(&s->conn);
    ids_free(&s->ids);
    ids_free(&s->unacked);
    ids_free(&s->dead);
    free(s);
    r->stream = NULL;
}
