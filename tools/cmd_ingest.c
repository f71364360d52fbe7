/* plumb ingest: validate and tokenize a JSONL dataset into a Redis stream
 * or a local shard file, idempotently, keeping bad lines as dead letters. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/redis.h"
#include "data/dataset.h"
#include "data/record.h"
#include "model/tokenizer.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

#include <jansson.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb ingest FILE.jsonl --tokenizer DIR [--format auto|prompt|sft|pref]\n"
            "                    [--chat FORMAT] [--chat-date DATE] [--max-prompt-len N]\n"
            "                    [--max-response-len N] [--drop-long] [--batch N]\n"
            "                    (--to redis://[:password@]host:port/db --stream NAME | --out FILE)\n"
            "\n"
            "Validates and tokenizes each line as `plumb data check` does (--chat and\n"
            "--chat-date as there), packs each record\n"
            "(data/record.h, with the tokenizer's fingerprint) and appends it to the Redis\n"
            "stream NAME (XADD; NAME:tokenizer names the tokenizer, and a stream of another\n"
            "tokenizer is refused) or to the shard\n"
            "FILE (u32 length + record, repeated). Records are deduplicated by a content hash\n"
            "(kept in Redis as NAME:seen, or rebuilt from FILE), so ingesting the same file\n"
            "again adds nothing. A bad line is kept with its line number and reason in the\n"
            "stream NAME:dead, or in FILE.dead.jsonl. Progress goes to stderr; the summary\n"
            "{\"read\", \"ingested\", \"duplicate\", \"rejected\", \"seconds\", \"records_per_s\"} to\n"
            "stdout. --batch N records go to Redis per round trip (default 256).\n");
}

/* -------------------------------------------------- set of hash strings */

typedef struct {
    char (*keys)[RDS_HASH_HEX];
    size_t cap, n;
} HashSet;

static uint64_t key_slot(const char *k) {
    uint64_t h = 0;
    for (int i = 0; i < 16 && k[i]; i++) h = h * 16 + (uint64_t)(k[i] <= '9' ? k[i] - '0' : k[i] - 'a' + 10);
    return h;
}

/* Adds k; returns 1 when new, 0 when present, < 0 out of memory. */
static int set_add(HashSet *s, const char *k) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        char (*keys)[RDS_HASH_HEX] = calloc(cap, RDS_HASH_HEX);
        PL_CHECK_ALLOC(keys);
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->keys[i][0]) continue;
            size_t j = key_slot(s->keys[i]) & (cap - 1);
            while (keys[j][0]) j = (j + 1) & (cap - 1);
            memcpy(keys[j], s->keys[i], RDS_HASH_HEX);
        }
        free(s->keys);
        s->keys = keys;
        s->cap = cap;
    }
    size_t j = key_slot(k) & (s->cap - 1);
    for (; s->keys[j][0]; j = (j + 1) & (s->cap - 1))
        if (!strcmp(s->keys[j], k)) return 0;
    memcpy(s->keys[j], k, RDS_HASH_HEX);
    s->n++;
    return 1;
}

/* ------------------------------------------------------------- sinks */

typedef struct {
    /* Redis */
    RdsConn *conn;
    const char *stream;
    RdsItem *items;
    unsigned char **bufs;
    char (*hashes)[RDS_HASH_HEX];
    int n_items, batch;
    /* file */
    FILE *out, *dead;
    HashSet seen, dead_seen;
    RdsSummary sum;
} Sink;

static int flush_redis(Sink *s) {
    int rc = s->n_items ? rds_append_batch(s->conn, s->stream, s->items, s->n_items, NULL, &s->sum) : 0;
    for (int i = 0; i < s->n_items; i++) free(s->bufs[i]);
    s->n_items = 0;
    return rc;
}

static int sink_record(Sink *s, unsigned char *buf, size_t len) {
    char hash[RDS_HASH_HEX];
    rds_hash_hex(buf, len, hash);
    if (s->conn) { /* takes ownership of buf */
        s->bufs[s->n_items] = buf;
        memcpy(s->hashes[s->n_items], hash, RDS_HASH_HEX);
        s->items[s->n_items] = (RdsItem){buf, len, s->hashes[s->n_items]};
        if (++s->n_items == s->batch) return flush_redis(s);
        return 0;
    }
    int rc = set_add(&s->seen, hash);
    if (rc == 1) {
        uint32_t n = (uint32_t)len;
        unsigned char hdr[4] = {n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24};
        if (fwrite(hdr, 4, 1, s->out) != 1 || fwrite(buf, 1, len, s->out) != len)
            rc = pl_fail(PL_EIO, "writing the shard failed");
        else s->sum.ingested++;
    } else if (rc == 0) {
        s->sum.duplicate++;
    }
    free(buf);
    return rc < 0 ? rc : 0;
}

/* A bad line, kept: its number, the reason (name and message) and the line
 * itself (raw, at most RDS_DEAD_RAW_MAX bytes). */
static int sink_dead(Sink *s, long line, const char *reason, const char *message, const char *raw,
                     size_t raw_len) {
    if (raw_len > RDS_DEAD_RAW_MAX) raw_len = RDS_DEAD_RAW_MAX;
    if (s->conn) {
        int rc = flush_redis(s); /* keep the stream in file order */
        if (rc < 0) return rc;
        char why[640];
        snprintf(why, sizeof why, "%s: %s", reason, message);
        char at[24];
        snprintf(at, sizeof at, "%ld", line);
        return rds_dead_letter(s->conn, s->stream, "line", at, why, raw, raw_len, NULL, &s->sum);
    }
    /* json_stringn: the line may be no valid UTF-8; jansson then refuses it,
     * and the letter keeps the rest */
    json_t *j = json_pack("{s:I, s:s, s:s}", "line", (json_int_t)line, "reason", reason, "message", message);
    json_t *r = json_stringn(raw, raw_len);
    if (j) json_object_set_new(j, "raw", r ? r : json_string("(not UTF-8)"));
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt) return pl_fail(PL_ENOMEM, "dead letter: out of memory");
    char hash[RDS_HASH_HEX];
    rds_hash_hex(txt, strlen(txt), hash);
    int rc = set_add(&s->dead_seen, hash);
    if (rc == 1) {
        fprintf(s->dead, "%s\n", txt);
        s->sum.rejected++;
    }
    free(txt);
    return rc < 0 ? rc : 0;
}

/* Ties the stream to this tokenizer (`<stream>:tokenizer` = "FP DIR"), or
 * refuses when it holds records of another: their ids would not mean the
 * same tokens. */
static int claim_stream(RdsConn *c, const char *stream, const char *fp, const char *dir) {
    char have[4200];
    int same = rec_stream_tokenizer(c, stream, fp, dir, have, sizeof have);
    if (same < 0) return same;
    if (!same)
        return pl_fail(PL_EINVAL,
                       "stream %s holds records of tokenizer %s; --tokenizer %s is %s (another "
                       "tokenizer: use another --stream)",
                       stream, have, dir, fp);
    return 0;
}

/* Cuts path back to its first `keep` bytes: the torn tail a killed run
 * left, which the re-run writes again. Says so on stderr. */
static int cut_tail(const char *path, long long keep, long long size, const char *what) {
    if (truncate(path, (off_t)keep) != 0)
        return pl_fail(PL_EIO, "%s: cannot drop its torn tail: %s", path, strerror(errno));
    fprintf(stderr, "plumb ingest: %s: dropped %lld bytes of a torn %s at byte %lld (an "
                    "interrupted run); going on\n",
            path, size - keep, what, keep);
    return 0;
}

/* Rebuilds the sets from an existing shard and dead-letter file, so that a
 * re-run adds nothing twice. A record or letter cut short (a run killed
 * mid-write) is dropped from the file, and written again by this run. */
static int load_existing(Sink *s, const char *path, const char *dead_path) {
    FILE *f = fopen(path, "rb");
    if (f) {
        unsigned char hdr[4];
        long long at = 0;
        int torn = 0;
        for (;;) {
            size_t got = fread(hdr, 1, 4, f);
            if (got == 0) break;
            size_t n = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
            unsigned char *b = got == 4 ? malloc(n ? n : 1) : NULL;
            if (got == 4 && !b) {
                fclose(f);
                return pl_fail(PL_ENOMEM, "%s: a record of %zu bytes at byte %lld", path, n, at);
            }
            if (got < 4 || fread(b, 1, n, f) != n) {
                free(b);
                torn = 1;
                break;
            }
            char hash[RDS_HASH_HEX];
            rds_hash_hex(b, n, hash);
            free(b);
            if (set_add(&s->seen, hash) < 0) {
                fclose(f);
                return PL_ENOMEM;
            }
            at += 4 + (long long)n;
        }
        int err = ferror(f);
        fseek(f, 0, SEEK_END);
        long long size = ftell(f);
        fclose(f);
        if (err) return pl_fail(PL_EIO, "reading %s failed", path);
        if (torn) PL_TRY(cut_tail(path, at, size, "record"));
    }
    f = fopen(dead_path, "rb");
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        long long at = 0, size = 0;
        ssize_t n;
        int rc = 0;
        /* letters are whole lines: a last one without its newline is torn */
        while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
            size += n;
            if (line[n - 1] != '\n') break;
            char hash[RDS_HASH_HEX];
            rds_hash_hex(line, (size_t)n - 1, hash);
            rc = set_add(&s->dead_seen, hash) < 0 ? PL_ENOMEM : 0;
            at = size;
        }
        fclose(f);
        free(line);
        if (rc < 0) return rc;
        if (at < size) PL_TRY(cut_tail(dead_path, at, size, "dead letter"));
    }
    return 0;
}

int cmd_ingest(int argc, char **argv) {
    const char *input = NULL, *tokdir = NULL, *to = NULL, *stream = NULL, *out = NULL, *chat = NULL,
               *chat_date = NULL;
    const char *format = "auto";
    int max_prompt = 0, max_resp = 0, drop_long = 0, batch = 256;
    const Opt opts[] = {
        OPT_POS("FILE.jsonl", &input, 1), OPT_REQ("--tokenizer", &tokdir),
        OPT_STR("--format", &format), OPT_STR("--chat", &chat),
        OPT_STR("--chat-date", &chat_date), OPT_STR("--to", &to),
        OPT_STR("--stream", &stream), OPT_STR("--out", &out),
        OPT_INT("--max-prompt-len", &max_prompt, 0, 1 << 30),
        OPT_INT("--max-response-len", &max_resp, 0, 1 << 30),
        OPT_INT("--batch", &batch, 1, 1 << 16), OPT_FLAG("--drop-long", &drop_long), OPT_END};
    int prc = opts_parse("ingest", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    if (!to == !out || (to && !stream))
        return opts_fail("ingest", usage, "needs either --to URL --stream NAME or --out FILE");
    DsFormat fmt;
    if (ds_format_parse(format, &fmt) < 0) {
        fprintf(stderr, "plumb ingest: %s\n", pl_error());
        return 2;
    }
    Tokenizer *tok = NULL;
    DsConfig cfg;
    DsReader *rd = NULL;
    Sink s = {.batch = batch};
    char *dead_path = NULL;
    char tokfp[REC_TOK_HEX];
    int rc = tok_load(&tok, tokdir);
    if (rc == 0) rc = rec_tokenizer_fp(tokdir, tokfp);
    if (rc < 0) goto done;
    ds_config_init(&cfg, tok);
    cfg.format = fmt, cfg.max_prompt_len = max_prompt, cfg.max_response_len = max_resp;
    cfg.drop_long = drop_long;
    if ((rc = ds_config_chat(&cfg, tokdir, chat)) < 0) goto done_cfg;
    if ((rc = ds_config_chat_date(&cfg, chat_date, "--chat-date")) < 0) goto done_cfg;
    if ((rc = ds_reader_open(&rd, input, &cfg)) < 0) goto done_cfg;
    if (to) {
        s.stream = stream;
        s.items = calloc((size_t)batch, sizeof *s.items);
        s.bufs = calloc((size_t)batch, sizeof *s.bufs);
        s.hashes = calloc((size_t)batch, sizeof *s.hashes);
        if (!s.items || !s.bufs || !s.hashes) rc = pl_fail(PL_ENOMEM, "out of memory");
        else rc = rds_connect(&s.conn, to, 10.0);
        if (rc == 0) rc = claim_stream(s.conn, stream, tokfp, tokdir);
    } else {
        size_t n = strlen(out) + 16;
        dead_path = malloc(n);
        snprintf(dead_path, n, "%s.dead.jsonl", out);
        rc = load_existing(&s, out, dead_path);
        if (rc == 0 && (!(s.out = fopen(out, "ab")) || !(s.dead = fopen(dead_path, "ab"))))
            rc = pl_fail(PL_EIO, "cannot write %s or %s", out, dead_path);
    }
    if (rc < 0) goto done_cfg;

    double t0 = pl_now_s(), last = t0;
    for (;;) {
        DsRecord rec;
        long line = 0;
        DsReason why;
        char reason[512];
        int r = ds_reader_next(rd, &rec, &line, &why, reason, sizeof reason);
        if (r < 0) {
            rc = r;
            break;
        }
        if (r == 0) break;
        if (r == 2) {
            size_t raw_len;
            const char *raw = ds_reader_raw(rd, &raw_len);
            rc = sink_dead(&s, line, ds_reason_name(why), reason, raw, raw_len);
        } else {
            unsigned char *buf;
            size_t len;
            rc = rec_pack(&rec, tokfp, &buf, &len);
            ds_record_free(&rec);
            if (rc == 0) rc = sink_record(&s, buf, len);
        }
        if (rc < 0) break;
        double now = pl_now_s();
        if (now - last >= 2.0) {
            const DsSummary *ds = ds_reader_summary(rd);
            fprintf(stderr, "plumb ingest: %ld lines, %.0f lines/s\n", ds->read, ds->read / (now - t0));
            last = now;
        }
    }
    if (rc == 0 && s.conn) rc = flush_redis(&s);
    if (rc == 0 && s.out && (fflush(s.out) != 0 || fflush(s.dead) != 0))
        rc = pl_fail(PL_EIO, "writing %s failed", out);
    if (rc == 0) {
        double secs = pl_now_s() - t0;
        const DsSummary *ds = ds_reader_summary(rd);
        printf("{\"read\": %ld, \"ingested\": %lld, \"duplicate\": %lld, \"rejected\": %lld, "
               "\"seconds\": %.3f, \"records_per_s\": %.0f}\n",
               ds->read, s.sum.ingested, s.sum.duplicate, s.sum.rejected, secs,
               ds->read / (secs > 1e-9 ? secs : 1e-9));
    }
done_cfg:
    ds_reader_free(&rd);
    ds_config_free(&cfg);
done:
    if (rc < 0) fprintf(stderr, "plumb ingest: %s\n", pl_error());
    for (int i = 0; i < s.n_items; i++) free(s.bufs[i]);
    free(s.items);
    free(s.bufs);
    free(s.hashes);
    rds_free(&s.conn);
    if (s.out) fclose(s.out);
    if (s.dead) fclose(s.dead);
    free(s.seen.keys);
    free(s.dead_seen.keys);
    free(dead_path);
    tok_free(&tok);
    return rc < 0 ? 1 : 0;
}
