/* redis.c: Redis stream ingestion and consumer groups over hiredis.
 *
 * Every reply is checked: NULL (connection lost or timed out), an error
 * reply, or a type other than the one expected each becomes a message that
 * names the operation and the redacted URL. */
#include "common/redis.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "common/err.h"
#include "common/redis_impl.h"

/* KEYS[1] stream, KEYS[2] seen set; ARGV[1] payload, ARGV[2] hash.
 * Returns the new entry id, or nil when the hash was already seen.
 * Redis does not roll back a script that fails half way, so the order
 * matters: read first (a wrong-type key fails here, having written
 * nothing), XADD (if it fails, e.g. out of memory, nothing was written),
 * then SADD (a script that has written is not stopped for memory). */
static const char APPEND_LUA[] =
    "if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return false end\n"
    "local id = redis.call('XADD', KEYS[1], '*', 'rec', ARGV[1], 'hash', ARGV[2])\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "return id\n";

/* The same for many records: ARGV = payload1, hash1, payload2, hash2, ...
 * Returns one flag per record, 1 appended, 0 duplicate. A failure part way
 * leaves the records before it appended, each with its hash. */
static const char APPEND_MANY_LUA[] =
    "local out = {}\n"
    "for i = 1, #ARGV, 2 do\n"
    "  if redis.call('SISMEMBER', KEYS[2], ARGV[i + 1]) == 0 then\n"
    "    redis.call('XADD', KEYS[1], '*', 'rec', ARGV[i], 'hash', ARGV[i + 1])\n"
    "    redis.call('SADD', KEYS[2], ARGV[i + 1])\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Records per script call in a batch: the server runs one call without
 * interruption, so this bounds how long a batch holds it (~1 ms). */
#define RDS_SCRIPT_CHUNK 128

/* KEYS[1] dead stream, KEYS[2] seen set; ARGV at_field, at, reason, raw,
 * hash. */
static const char DEAD_LUA[] =
    "if redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then return false end\n"
    "local id = redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2], 'reason', ARGV[3], 'raw', "
    "ARGV[4])\n"
    "redis.call('SADD', KEYS[2], ARGV[5])\n"
    "return id\n";

/* ============================================================== replies */

static const char *type_name(int t) {
    switch (t) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

/* Checks a reply: NULL -> connection error, error reply -> server error.
 * Frees the reply on failure. */
int rds_check(RdsConn *c, redisReply *r, const char *op) {
    if (!r) {
        const char *why = c->ctx->err ? c->ctx->errstr : "no reply";
        if (c->ctx->err == REDIS_ERR_EOF || c->ctx->err == REDIS_ERR_IO)
            return pl_fail(PL_EIO, "redis %s at %s: connection lost: %s", op, c->url, why);
        return pl_fail(PL_EIO, "redis %s at %s: %s", op, c->url, why);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int rc = pl_fail(PL_EIO, "redis %s at %s: server error: %.*s", op, c->url, (int)r->len,
                         r->str ? r->str : "");
        freeReplyObject(r);
        return rc;
    }
    return PL_OK;
}

int rds_bad_type(RdsConn *c, redisReply *r, const char *op, const char *want) {
    int rc = pl_fail(PL_EFORMAT, "redis %s at %s: unexpected %s reply (wanted %s)", op, c->url,
                     type_name(r->type), want);
    freeReplyObject(r);
    return rc;
}

redisReply *rds_command(RdsConn *c, int argc, const char **argv, const size_t *lens) {
    if (c->ctx->err) return NULL; /* dead connection: report, don't send */
    return redisCommandArgv(c->ctx, argc, argv, lens);
}

/* ================================================================= URLs */

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* Copies s[0..n) into dst (cap bytes) decoding %XX; -1 if it does not fit
 * or an escape is malformed. */
static int decode(char *dst, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap) return -1;
        dst[o++] = (char)ch;
    }
    dst[o] = '\0';
    return 0;
}

/* For messages about a URL that failed to parse: everything up to the
 * scheme, then the part after the last '@' (never the password). */
static void redact_raw(const char *url, char *buf, size_t n) {
    const char *at = strrchr(url, '@');
    if (at) snprintf(buf, n, "redis://***@%s", at + 1);
    else snprintf(buf, n, "%s", url);
}

int rds_parse_url(const char *url, RdsUrl *out) {
    char shown[600];
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url) return pl_fail(PL_EINVAL, "redis URL is NULL");
    redact_raw(url, shown, sizeof shown);
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return pl_fail(PL_EINVAL, "redis URL %s: must start with redis://", shown);
    const char *p = url + sizeof scheme - 1;
    /* userinfo ends at the last '@' (passwords may contain '/', '@' only escaped) */
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', at - p);
        if (!colon) {
            /* redis://password@host is what redis-cli accepts too */
            if (decode(out->password, sizeof out->password, p, at - p))
                return pl_fail(PL_EINVAL, "redis URL %s: bad password", shown);
        } else {
            if (decode(out->user, sizeof out->user, p, colon - p))
                return pl_fail(PL_EINVAL, "redis URL %s: bad user name", shown);
            if (decode(out->password, sizeof out->password, colon + 1, at - colon - 1))
                return pl_fail(PL_EINVAL, "redis URL %s: bad password", shown);
        }
        p = at + 1;
    }
    const char *hs, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (!he) return pl_fail(PL_EINVAL, "redis URL %s: unclosed '[' in host", shown);
        p = he + 1;
    } else {
        hs = p;
        while (*p && *p != ':' && *p != '/') p++;
        he = p;
    }
    if (he == hs) return pl_fail(PL_EINVAL, "redis URL %s: no host", shown);
    if ((size_t)(he - hs) >= sizeof out->host)
        return pl_fail(PL_EINVAL, "redis URL %s: host too long", shown);
    memcpy(out->host, hs, he - hs);
    out->host[he - hs] = '\0';
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return pl_fail(PL_EINVAL, "redis URL %s: bad port", shown);
        out->port = (int)port;
        p = end;
    }
    if (*p == '/') {
        p++;
        if (*p) {
            char *end;
            long db = strtol(p, &end, 10);
            if (end == p || *end || db < 0 || db > 1000000)
                return pl_fail(PL_EINVAL, "redis URL %s: bad db number", shown);
            out->db = (int)db;
        }
    } else if (*p) {
        return pl_fail(PL_EINVAL, "redis URL %s: unexpected '%c' after host", shown, *p);
    }
    /* no password in the URL: redis-cli's variable, so that the URL (which
     * run configs record) need not carry it */
    const char *env = getenv("REDISCLI_AUTH");
    if (!out->password[0] && env && *env) {
        if (strlen(env) >= sizeof out->password)
            return pl_fail(PL_EINVAL, "REDISCLI_AUTH: the password is over %zu bytes",
                           sizeof out->password - 1);
        strcpy(out->password, env);
    }
    return PL_OK;
}

void rds_url_redacted(const RdsUrl *u, char *buf, size_t n) {
    int v6 = strchr(u->host, ':') != NULL;
    const char *lb = v6 ? "[" : "", *rb = v6 ? "]" : "";
    if (u->password[0] || u->user[0])
        snprintf(buf, n, "redis://%s:%s@%s%s%s:%d/%d", u->user, u->password[0] ? "***" : "", lb,
                 u->host, rb, u->port, u->db);
    else snprintf(buf, n, "redis://%s%s%s:%d/%d", lb, u->host, rb, u->port, u->db);
}

/* =========================================================== connection */

static int load_script(RdsConn *c, const char *src, char sha[41]) {
    const char *argv[] = {"SCRIPT", "LOAD", src};
    redisReply *r = rds_command(c, 3, argv, NULL);
    PL_TRY(rds_check(c, r, "SCRIPT LOAD"));
    if (r->type != REDIS_REPLY_STRING || r->len != 40) return rds_bad_type(c, r, "SCRIPT LOAD", "sha1");
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);
    return PL_OK;
}

int rds_expect_ok(RdsConn *c, redisReply *r, const char *op) {
    PL_TRY(rds_check(c, r, op));
    if (r->type != REDIS_REPLY_STATUS) return rds_bad_type(c, r, op, "status");
    freeReplyObject(r);
    return PL_OK;
}

static int setup_conn(RdsConn *c, const RdsUrl *u) {
    if (u->password[0]) {
        const char *argv[] = {"AUTH", u->user, u->password};
        int argc = 3;
        if (!u->user[0]) argv[1] = u->password, argc = 2;
        PL_TRY(rds_expect_ok(c, rds_command(c, argc, argv, NULL), "AUTH"));
    }
    if (u->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", u->db);
        const char *argv[] = {"SELECT", db};
        PL_TRY(rds_expect_ok(c, rds_command(c, 2, argv, NULL), "SELECT"));
    }
    PL_TRY(load_script(c, APPEND_LUA, c->append_sha));
    PL_TRY(load_script(c, APPEND_MANY_LUA, c->many_sha));
    PL_TRY(load_script(c, DEAD_LUA, c->dead_sha));
    return PL_OK;
}

int rds_connect(RdsConn **out, const char *url, double timeout_s) {
    *out = NULL;
    RdsUrl u;
    PL_TRY(rds_parse_url(url, &u));
    if (!(timeout_s > 0)) timeout_s = 5.0;
    RdsConn *c = calloc(1, sizeof *c);
    PL_CHECK_ALLOC(c);
    rds_url_redacted(&u, c->url, sizeof c->url);
    c->timeout.tv_sec = (time_t)timeout_s;
    c->timeout.tv_usec = (suseconds_t)((timeout_s - (double)c->timeout.tv_sec) * 1e6);
    c->ctx = redisConnectWithTimeout(u.host, u.port, c->timeout);
    if (!c->ctx) {
        int rc = pl_fail(PL_ENOMEM, "redis connect to %s: out of memory", c->url);
        free(c);
        return rc;
    }
    if (c->ctx->err) {
        int rc = pl_fail(PL_EIO, "redis connect to %s: %s", c->url, c->ctx->errstr);
        rds_free(&c);
        return rc;
    }
    redisSetTimeout(c->ctx, c->timeout);
    int rc = setup_conn(c, &u);
    memset(&u, 0, sizeof u); /* don't leave the password on the stack */
    if (rc < 0) {
        rds_free(&c);
        return pl_wrap(rc, "redis connect");
    }
    *out = c;
    return PL_OK;
}

void rds_free(RdsConn **c) {
    if (!c || !*c) return;
    if ((*c)->ctx) redisFree((*c)->ctx);
    free(*c);
    *c = NULL;
}

const char *rds_conn_url(const RdsConn *c) { return c->url; }

int rds_conn_lost(const RdsConn *c) { return !c || !c->ctx || c->ctx->err != 0; }

int rds_stream_len(RdsConn *c, const char *stream, long long *n) {
    const char *argv[] = {"XLEN", stream};
    redisReply *r = rds_command(c, 2, argv, NULL);
    PL_TRY(rds_check(c, r, "XLEN"));
    if (r->type != REDIS_REPLY_INTEGER) return rds_bad_type(c, r, "XLEN", "integer");
    *n = r->integer;
    freeReplyObject(r);
    return PL_OK;
}

/* ================================================================= hash */

void rds_hash_hex(const void *data, size_t len, char out[RDS_HASH_HEX]) {
    typedef unsigned __int128 u128;
    const u128 prime = ((u128)1 << 88) + 0x13b;
    u128 h = ((u128)0x6c62272e07bb0142ULL << 64) | 0x62b821756295c58dULL;
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= prime;
    }
    snprintf(out, RDS_HASH_HEX, "%016llx%016llx", (unsigned long long)(h >> 64),
             (unsigned long long)h);
}

/* ============================================================= producer */

char *rds_key2(const char *stream, const char *suffix) {
    size_t a = strlen(stream), b = strlen(suffix);
    char *k = malloc(a + b + 1);
    if (k) memcpy(k, stream, a), memcpy(k + a, suffix, b + 1);
    return k;
}

/* Builds the argv of one EVALSHA/EVAL append call. */
static void append_argv(const char **argv, size_t *lens, const char *script, const char *stream,
                        const char *seen, const void *payload, size_t len, const char *hash) {
    argv[0] = strlen(script) == 40 ? "EVALSHA" : "EVAL";
    argv[1] = script;
    argv[2] = "2";
    argv[3] = stream;
    argv[4] = seen;
    argv[5] = payload;
    argv[6] = hash;
    for (int i = 0; i < 7; i++) lens[i] = i == 5 ? len : strlen(argv[i]);
}

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Interprets a script reply: entry id -> 1, nil -> 0. Frees r. */
static int added_from(RdsConn *c, redisReply *r, const char *op, int *added) {
    PL_TRY(rds_check(c, r, op));
    int a;
    if (r->type == REDIS_REPLY_STRING) a = 1;
    else if (r->type == REDIS_REPLY_NIL) a = 0;
    else return rds_bad_type(c, r, op, "entry id or nil");
    freeReplyObject(r);
    if (added) *added = a;
    return PL_OK;
}

static int append_one(RdsConn *c, const char *stream, const char *seen, const void *payload,
                      size_t len, const char *hash, int *added) {
    const char *argv[7];
    size_t lens[7];
    append_argv(argv, lens, c->append_sha, stream, seen, payload, len, hash);
    redisReply *r = rds_command(c, 7, argv, lens);
    if (is_noscript(r)) { /* script cache flushed: send the source */
        freeReplyObject(r);
        append_argv(argv, lens, APPEND_LUA, stream, seen, payload, len, hash);
        r = rds_command(c, 7, argv, lens);
    }
    return added_from(c, r, "append (EVALSHA SADD+XADD)", added);
}

static int check_args(const char *stream, const void *payload, const char *hash) {
    if (!stream || !stream[0]) return pl_fail(PL_EINVAL, "redis append: empty stream name");
    if (!hash || !hash[0]) return pl_fail(PL_EINVAL, "redis append to %s: empty hash", stream);
    if (!payload) return pl_fail(PL_EINVAL, "redis append to %s: NULL payload", stream);
    return PL_OK;
}

int rds_append(RdsConn *c, const char *stream, const void *payload, size_t len,
               const char *hash, int *added) {
    PL_TRY(check_args(stream, payload, hash));
    char *seen = rds_key2(stream, ":seen");
    PL_CHECK_ALLOC(seen);
    int rc = append_one(c, stream, seen, payload, len, hash, added);
    free(seen);
    return rc;
}

/* Sends items[0..m) as one EVALSHA (or EVAL when sha is the source) of
 * the many-record script. */
static int send_chunk(RdsConn *c, const char *script, const char *stream, const char *seen,
                      const RdsItem *items, int m, const char **argv, size_t *lens) {
    char nkeys[] = "2";
    argv[0] = strlen(script) == 40 ? "EVALSHA" : "EVAL";
    argv[1] = script, argv[2] = nkeys, argv[3] = stream, argv[4] = seen;
    for (int k = 0; k < 5; k++) lens[k] = strlen(argv[k]);
    for (int k = 0; k < m; k++) {
        argv[5 + 2 * k] = items[k].payload, lens[5 + 2 * k] = items[k].len;
        argv[6 + 2 * k] = items[k].hash, lens[6 + 2 * k] = strlen(items[k].hash);
    }
    if (redisAppendCommandArgv(c->ctx, 5 + 2 * m, argv, lens) != REDIS_OK)
        return pl_fail(PL_ENOMEM, "redis append batch at %s: %s", c->url, c->ctx->errstr);
    return PL_OK;
}

/* Reads one chunk's reply (an array of 1/0) into res[0..m). Returns 1 for
 * NOSCRIPT (resend the source), 0 ok, negative on error. */
static int recv_chunk(RdsConn *c, int m, int *res) {
    redisReply *r = NULL;
    if (redisGetReply(c->ctx, (void **)&r) != REDIS_OK) r = NULL;
    if (is_noscript(r)) {
        freeReplyObject(r);
        return 1;
    }
    const char *op = "append batch (EVALSHA SADD+XADD)";
    PL_TRY(rds_check(c, r, op));
    if (r->type != REDIS_REPLY_ARRAY || (int)r->elements != m)
        return rds_bad_type(c, r, op, "array of one flag per record");
    for (int k = 0; k < m; k++) {
        if (r->element[k]->type != REDIS_REPLY_INTEGER) return rds_bad_type(c, r, op, "integer flags");
        res[k] = r->element[k]->integer != 0;
    }
    freeReplyObject(r);
    return PL_OK;
}

int rds_append_batch(RdsConn *c, const char *stream, const RdsItem *items, int n, int *added,
                     RdsSummary *sum) {
    if (n <= 0) return PL_OK;
    for (int i = 0; i < n; i++) PL_TRY(check_args(stream, items[i].payload, items[i].hash));
    if (c->ctx->err)
        return pl_fail(PL_EIO, "redis append batch at %s: connection lost: %s", c->url,
                       c->ctx->errstr);
    const int CH = RDS_SCRIPT_CHUNK, nch = (n + CH - 1) / CH;
    char *seen = rds_key2(stream, ":seen");
    int *res = added ? added : malloc((size_t)n * sizeof *res);
    const char **argv = malloc((5 + 2 * CH) * sizeof *argv);
    size_t *lens = malloc((5 + 2 * CH) * sizeof *lens);
    char *retry = calloc(nch, 1);
    int rc = PL_OK;
    if (!seen || !res || !argv || !lens || !retry) {
        rc = pl_fail(PL_ENOMEM, "redis append batch: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) res[i] = -1;
    /* pipeline: every chunk is sent before the first reply is read */
    int sent = 0;
    for (; sent < nch && rc == PL_OK; sent++) {
        int i = sent * CH, m = n - i < CH ? n - i : CH;
        rc = send_chunk(c, c->many_sha, stream, seen, items + i, m, argv, lens);
    }
    if (rc < 0) sent--;
    for (int b = 0; b < sent; b++) {
        int i = b * CH, m = n - i < CH ? n - i : CH;
        int st = recv_chunk(c, m, res + i);
        if (st == 1) retry[b] = 1;
        else if (st < 0) {
            if (rc == PL_OK) rc = pl_wrap(st, "records %d..%d of %d", i, i + m - 1, n);
            if (c->ctx->err) break; /* connection lost: no more replies come */
        }
    }
    /* NOSCRIPT (the server's script cache was flushed): resend the source */
    for (int b = 0; b < sent && rc == PL_OK; b++) {
        if (!retry[b]) continue;
        int i = b * CH, m = n - i < CH ? n - i : CH;
        rc = send_chunk(c, APPEND_MANY_LUA, stream, seen, items + i, m, argv, lens);
        if (rc == PL_OK) rc = recv_chunk(c, m, res + i);
        if (rc == 1) rc = pl_fail(PL_EIO, "redis append batch at %s: NOSCRIPT for EVAL", c->url);
    }
    if (sum)
        for (int i = 0; i < n; i++) {
            if (res[i] == 1) sum->ingested++;
            else if (res[i] == 0) sum->duplicate++;
        }
done:
    if (res != added) free(res);
    free(seen), free(argv), free(lens), free(retry);
    return rc;
}

int rds_dead_letter(RdsConn *c, const char *stream, const char *at_field, const char *at,
                    const char *reason, const void *raw, size_t raw_len, int *added,
                    RdsSummary *sum) {
    if (!stream || !stream[0]) return pl_fail(PL_EINVAL, "redis dead letter: empty stream name");
    if (!raw) raw = "", raw_len = 0;
    if (!reason) reason = "";
    if (raw_len > RDS_DEAD_RAW_MAX) raw_len = RDS_DEAD_RAW_MAX;
    /* the dedupe key is where it came from and the (truncated) raw bytes */
    char hash[RDS_HASH_HEX];
    size_t al = strlen(at);
    char *buf = malloc(al + 1 + raw_len);
    PL_CHECK_ALLOC(buf);
    memcpy(buf, at, al + 1);
    memcpy(buf + al + 1, raw, raw_len);
    rds_hash_hex(buf, al + 1 + raw_len, hash);
    free(buf);
    char *dead = rds_key2(stream, ":dead"), *seen = rds_key2(stream, ":dead:seen");
    if (!dead || !seen) {
        free(dead), free(seen);
        return pl_fail(PL_ENOMEM, "redis dead letter: out of memory");
    }
    const char *argv[10] = {"EVALSHA", c->dead_sha, "2", dead, seen, at_field, at, reason, raw, hash};
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = i == 8 ? raw_len : strlen(argv[i]);
    redisReply *r = rds_command(c, 10, argv, lens);
    if (is_noscript(r)) {
        freeReplyObject(r);
        argv[0] = "EVAL", argv[1] = DEAD_LUA;
        lens[0] = 4, lens[1] = strlen(DEAD_LUA);
        r = rds_command(c, 10, argv, lens);
    }
    int a = 0;
    int rc = added_from(c, r, "dead letter (EVALSHA SADD+XADD)", &a);
    free(dead), free(seen);
    if (rc < 0) return rc;
    if (added) *added = a;
    if (sum && a) sum->rejected++;
    return PL_OK;
}

int rds_claim(RdsConn *c, const char *key, const char *value, char *have, size_t cap) {
    const char *argv[] = {"SET", key, value, "NX", "GET"};
    redisReply *r = rds_command(c, 5, argv, NULL);
    PL_TRY(rds_check(c, r, "SET NX GET"));
    if (r->type == REDIS_REPLY_NIL) snprintf(have, cap, "%s", value);
    else if (r->type == REDIS_REPLY_STRING) snprintf(have, cap, "%.*s", (int)r->len, r->str);
    else return rds_bad_type(c, r, "SET NX GET", "string or nil");
    freeReplyObject(r);
    return PL_OK;
}
