/* test_redis.c: the Redis ingestion layer against a real redis-server.
 *
 * Each test starts its own `redis-server` on a free localhost port with a
 * scratch directory and stops it in teardown (SIGTERM, waitpid); an atexit
 * handler kills any server still running if a test aborts. Skipped (77)
 * when redis-server is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include <hiredis/hiredis.h>

#include "testutil.h"

#include "common/err.h"
#include "common/redis.h"

/* ------------------------------------------------------------ the server */


static const char *server_url(const TuRedis *s) {
    return tu_path("redis://127.0.0.1:%d/0", s->port);
}

static int setup(void **state) {
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    return s && tu_redis_start(s) == 0 ? 0 : -1;
}

static int setup_auth(void **state) {
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    if (!s) return -1;
    strcpy(s->password, "goodpw");
    return tu_redis_start(s) == 0 ? 0 : -1;
}

static int setup_persist(void **state) {
    TuRedis *s = calloc(1, sizeof *s);
    *state = s;
    if (!s) return -1;
    s->persist = 1;
    return tu_redis_start(s) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    TuRedis *s = *state;
    tu_redis_stop(s, SIGTERM);
    free(s);
    return 0;
}

/* --------------------------------------------------------------- helpers */

/* Record i: ~200 bytes, with a NUL inside to prove payloads are binary. */
static size_t make_record(int i, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "{\"prompt\":\"p%d\",\"chosen\":\"c%d\",\"rejected\":\"r%d\"}", i,
                     i, i);
    buf[n++] = '\0';
    while (n < 200 && (size_t)n < cap) buf[n] = (char)('a' + (i + n) % 26), n++;
    return (size_t)n;
}

/* Ingests records [0, n) in batches of bs; returns the summary. */
static RdsSummary ingest(RdsConn *c, const char *stream, int n, int bs) {
    RdsSummary sum = {0};
    char (*bufs)[256] = malloc((size_t)bs * 256);
    char (*hashes)[RDS_HASH_HEX] = malloc((size_t)bs * RDS_HASH_HEX);
    RdsItem *items = malloc((size_t)bs * sizeof *items);
    for (int i = 0; i < n; i += bs) {
        int m = n - i < bs ? n - i : bs;
        for (int k = 0; k < m; k++) {
            items[k].len = make_record(i + k, bufs[k], 256);
            rds_hash_hex(bufs[k], items[k].len, hashes[k]);
            items[k].payload = bufs[k];
            items[k].hash = hashes[k];
        }
        int rc = rds_append_batch(c, stream, items, m, NULL, &sum);
        if (rc < 0) fail_msg("append batch: %s", pl_error());
    }
    free(bufs), free(hashes), free(items);
    return sum;
}

/* Record index from a payload made by make_record. */
static int record_index(const RdsRecord *r) {
    int i = -1;
    sscanf(r->payload, "{\"prompt\":\"p%d\"", &i);
    return i;
}

/* ----------------------------------------------------------------- tests */

/* URL parsing: defaults, password, user, db, IPv6, escapes, and errors
 * that name the URL without its password. */
static void test_url_parse(void **state) {
    RdsUrl u;
    assert_int_equal(rds_parse_url("redis://localhost", &u), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(rds_parse_url("redis://:s3cret@10.0.0.5:6380/3", &u), 0);
    assert_string_equal(u.host, "10.0.0.5");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_int_equal(rds_parse_url("redis://alice:p%40ss@h:1/15", &u), 0);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "p@ss");
    assert_int_equal(u.db, 15);
    assert_int_equal(rds_parse_url("redis://[::1]:7000", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    char red[256];
    rds_parse_url("redis://alice:topsecret@h:1/2", &u);
    rds_url_redacted(&u, red, sizeof red);
    assert_string_equal(red, "redis://alice:***@h:1/2");

    const char *bad[] = {"http://h:1", "redis://", "redis://h:0", "redis://h:70000",
                         "redis://h:12x", "redis://h/abc", "redis://:pw%zz@h"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(rds_parse_url(bad[i], &u), PL_EINVAL);
        assert_non_null(strstr(pl_error(), "redis URL"));
    }
    assert_int_equal(rds_parse_url("redis://:topsecret@h:12x", &u), PL_EINVAL);
    assert_null(strstr(pl_error(), "topsecret"));

    /* REDISCLI_AUTH fills a missing password; the URL's own wins */
    setenv("REDISCLI_AUTH", "fromenv", 1);
    assert_int_equal(rds_parse_url("redis://h:1", &u), 0);
    assert_string_equal(u.password, "fromenv");
    assert_int_equal(rds_parse_url("redis://:inurl@h:1", &u), 0);
    assert_string_equal(u.password, "inurl");
    unsetenv("REDISCLI_AUTH");
    assert_int_equal(rds_parse_url("redis://h:1", &u), 0);
    assert_string_equal(u.password, "");
}

/* The hash is FNV-1a 128: published vectors, and it separates records. */
static void test_hash(void **state) {
    char h[RDS_HASH_HEX], g[RDS_HASH_HEX];
    rds_hash_hex("", 0, h);
    assert_string_equal(h, "6c62272e07bb014262b821756295c58d");
    rds_hash_hex("a", 1, h);
    assert_string_equal(h, "d228cb696f1a8caf78912b704e4a8964");
    rds_hash_hex("foobar", 6, h);
    assert_string_equal(h, "343e1662793c64bf6f0d3597ba446f18");
    rds_hash_hex("a\0b", 3, h);
    rds_hash_hex("a\0c", 3, g);
    assert_string_not_equal(h, g);
}

/* AUTH: the right password connects (in the URL or in REDISCLI_AUTH), a
 * wrong or missing one fails with a message naming the redacted URL and
 * the failing step; SELECT picks db. */
static void test_auth(void **state) {
    TuRedis *sp = *state, s = *sp;
    RdsConn *c = NULL;
    int rc = rds_connect(&c, tu_path("redis://:goodpw@127.0.0.1:%d/2", s.port), 2.0);
    if (rc < 0) fail_msg("%s", pl_error());
    int added = 0;
    assert_int_equal(rds_append(c, "s", "x", 1, "h1", &added), 0);
    assert_int_equal(added, 1);
    rds_free(&c);
    assert_null(c);
    /* the record went to db 2, not db 0 */
    redisContext *raw = redisConnect("127.0.0.1", s.port);
    redisReply *r = redisCommand(raw, "AUTH goodpw");
    freeReplyObject(r);
    r = redisCommand(raw, "XLEN s");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = redisCommand(raw, "SELECT 2");
    freeReplyObject(r);
    r = redisCommand(raw, "XLEN s");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    redisFree(raw);

    assert_true(rds_connect(&c, tu_path("redis://:wrongpw@127.0.0.1:%d/0", s.port), 2.0) < 0);
    assert_null(c);
    assert_non_null(strstr(pl_error(), "AUTH"));
    assert_non_null(strstr(pl_error(), tu_path("127.0.0.1:%d", s.port)));
    assert_null(strstr(pl_error(), "wrongpw"));
    assert_true(rds_connect(&c, tu_path("redis://127.0.0.1:%d", s.port), 2.0) < 0);
    assert_non_null(strstr(pl_error(), "NOAUTH"));
    /* the same URL with the password in REDISCLI_AUTH */
    setenv("REDISCLI_AUTH", "goodpw", 1);
    rc = rds_connect(&c, tu_path("redis://127.0.0.1:%d", s.port), 2.0);
    unsetenv("REDISCLI_AUTH");
    if (rc < 0) fail_msg("with REDISCLI_AUTH: %s", pl_error());
    rds_free(&c);
    tu_redis_stop(sp, SIGTERM);
    /* nobody listening: a clear connect error */
    assert_true(rds_connect(&c, tu_path("redis://127.0.0.1:%d", s.port), 1.0) < 0);
    assert_non_null(strstr(pl_error(), "redis connect to"));
}

/* Appending N records twice stores N; the second pass reports N
 * duplicates; single appends agree; payloads come back byte for byte. */
static void test_append_dedupe(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    const int N = 500;
    RdsSummary a = ingest(c, "pref", N, 64);
    assert_int_equal(a.ingested, N);
    assert_int_equal(a.duplicate, 0);
    RdsSummary b = ingest(c, "pref", N, 100);
    assert_int_equal(b.ingested, 0);
    assert_int_equal(b.duplicate, N);
    long long len = 0;
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, N);

    char buf[256], h[RDS_HASH_HEX];
    size_t n = make_record(7, buf, sizeof buf);
    rds_hash_hex(buf, n, h);
    int added = -1;
    assert_int_equal(rds_append(c, "pref", buf, n, h, &added), 0);
    assert_int_equal(added, 0);
    n = make_record(N, buf, sizeof buf);
    rds_hash_hex(buf, n, h);
    assert_int_equal(rds_append(c, "pref", buf, n, h, &added), 0);
    assert_int_equal(added, 1);
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, N + 1);

    /* SCRIPT FLUSH on the server (or a failover) drops the cached scripts:
     * appends fall back to sending the source */
    redisContext *raw = redisConnect("127.0.0.1", s->port);
    redisReply *fr = redisCommand(raw, "SCRIPT FLUSH");
    assert_int_equal(fr->type, REDIS_REPLY_STATUS);
    freeReplyObject(fr);
    RdsSummary d = ingest(c, "pref", N + 3, 200);
    assert_int_equal(d.ingested, 2);
    assert_int_equal(d.duplicate, N + 1);
    fr = redisCommand(raw, "SCRIPT FLUSH");
    freeReplyObject(fr);
    n = make_record(N + 5, buf, sizeof buf);
    rds_hash_hex(buf, n, h);
    assert_int_equal(rds_append(c, "pref", buf, n, h, &added), 0);
    assert_int_equal(added, 1);
    redisFree(raw);
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, N + 4);

    /* the stored payload is the record, NUL and all */
    RdsReader *rd = NULL;
    assert_int_equal(rds_reader_open(&rd, c, "pref", "check", "c1"), 0);
    RdsRecord rec[1];
    int got = 0;
    assert_int_equal(rds_read(rd, 1, 0, rec, &got), 0);
    assert_int_equal(got, 1);
    n = make_record(0, buf, sizeof buf);
    rds_hash_hex(buf, n, h);
    assert_int_equal(rec[0].len, n);
    assert_memory_equal(rec[0].payload, buf, n);
    assert_string_equal(rec[0].hash, h);
    rds_records_clear(rec, got);
    rds_reader_free(&rd);
    rds_free(&c);
}

/* Dead letters keep line number, reason and (truncated) raw line, and a
 * re-run does not repeat them. */
static void test_dead_letter(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    RdsSummary sum = {0};
    char big[RDS_DEAD_RAW_MAX + 100];
    memset(big, 'z', sizeof big);
    for (int pass = 0; pass < 2; pass++) {
        int added = -1;
        assert_int_equal(rds_dead_letter(c, "pref", "line", "3", "invalid JSON", "{oops", 5, &added, &sum), 0);
        assert_int_equal(added, pass == 0);
        assert_int_equal(rds_dead_letter(c, "pref", "line", "9", "missing \"chosen\"", "{\"prompt\":1}", 12,
                                         NULL, &sum), 0);
        assert_int_equal(rds_dead_letter(c, "pref", "line", "12", "line too long", big, sizeof big, NULL,
                                         &sum), 0);
    }
    assert_int_equal(sum.rejected, 3);
    long long len = 0;
    assert_int_equal(rds_stream_len(c, "pref:dead", &len), 0);
    assert_int_equal(len, 3);
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, 0);

    redisContext *raw = redisConnect("127.0.0.1", s->port);
    redisReply *r = redisCommand(raw, "XRANGE pref:dead - +");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 3);
    const char *want_line[] = {"3", "9", "12"};
    const char *want_reason[] = {"invalid JSON", "missing \"chosen\"", "line too long"};
    for (int i = 0; i < 3; i++) {
        redisReply *f = r->element[i]->element[1];
        assert_int_equal(f->elements, 6);
        assert_string_equal(f->element[0]->str, "line");
        assert_string_equal(f->element[1]->str, want_line[i]);
        assert_string_equal(f->element[3]->str, want_reason[i]);
        if (i == 0) assert_string_equal(f->element[5]->str, "{oops");
        if (i == 2) assert_int_equal(f->element[5]->len, RDS_DEAD_RAW_MAX);
    }
    freeReplyObject(r);
    redisFree(raw);
    rds_free(&c);
}

/* Keys of the wrong type and foreign entries give clear errors, not
 * crashes: every reply is checked. */
static void test_bad_replies(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    redisContext *raw = redisConnect("127.0.0.1", s->port);
    freeReplyObject(redisCommand(raw, "SET str x"));
    freeReplyObject(redisCommand(raw, "XADD foreign * other 1"));
    redisFree(raw);
    assert_int_equal(rds_append(c, "str", "r", 1, "h", NULL), PL_EIO);
    assert_non_null(strstr(pl_error(), "WRONGTYPE"));
    /* the failed append left no trace: "h" was not marked seen (Redis does
     * not roll back scripts, so a SADD before the XADD would stick and the
     * retry below would be counted a duplicate, losing the record) */
    RdsItem it = {"r", 1, "h"};
    assert_int_equal(rds_append_batch(c, "str", &it, 1, NULL, NULL), PL_EIO);
    assert_non_null(strstr(pl_error(), "WRONGTYPE"));
    long long len;
    assert_int_equal(rds_stream_len(c, "str", &len), PL_EIO);
    RdsReader *rd = NULL;
    assert_true(rds_reader_open(&rd, c, "str", "g", "w") < 0);
    assert_null(rd);
    assert_non_null(strstr(pl_error(), "XGROUP"));
    assert_int_equal(rds_reader_open(&rd, c, "foreign", "g", "w"), 0);
    RdsRecord rec[4];
    int got = -1;
    assert_int_equal(rds_read(rd, 4, 0, rec, &got), PL_EFORMAT);
    assert_int_equal(got, 0);
    assert_non_null(strstr(pl_error(), "no \"rec\" field"));
    rds_reader_free(&rd);
    /* the connection is still usable after server errors */
    int added = 0;
    assert_int_equal(rds_append(c, "ok", "r", 1, "h", &added), 0);
    assert_int_equal(added, 1);
    rds_free(&c);
}

/* A run's cursor: stream order, bounded reads, reading again what the
 * group delivered before (a resumed run), acks, the lag, and a second
 * consumer of the group caught. */
static void test_cursor(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    char last[RDS_ID_MAX];
    assert_int_equal(rds_last_id(c, "cur", last), 0);
    assert_string_equal(last, "0-0");
    assert_true(rds_id_cmp("5-1", "5-2") < 0 && rds_id_cmp("6", "5-9") > 0 &&
                rds_id_cmp("7-0", "7") == 0);
    ingest(c, "cur", 30, 8);
    RdsCursor cur;
    assert_int_equal(rds_cursor_open(c, &cur, "cur", "g", "trainer", NULL), 0);
    assert_string_equal(cur.at, "0-0"); /* a new group starts at the stream's start */
    RdsRecord rec[40];
    int got = 0;
    assert_int_equal(rds_cursor_read(c, &cur, 10, NULL, 0, rec, &got), 0);
    assert_int_equal(got, 10);
    for (int i = 0; i < got; i++) assert_int_equal(record_index(&rec[i]), i);
    char id5[RDS_ID_MAX];
    strcpy(id5, rec[4].id);
    rds_records_clear(rec, got);
    long long lag = -1;
    assert_int_equal(rds_cursor_lag(c, &cur, &lag), 0);
    assert_int_equal(lag, 20);
    /* bounded: up to the 15th entry, whatever max says */
    redisContext *raw = redisConnect("127.0.0.1", s->port);
    redisReply *r = redisCommand(raw, "XRANGE cur - + COUNT 15");
    char id15[RDS_ID_MAX];
    snprintf(id15, sizeof id15, "%s", r->element[14]->element[0]->str);
    freeReplyObject(r);
    assert_int_equal(rds_cursor_read(c, &cur, 40, id15, 0, rec, &got), 0);
    assert_int_equal(got, 5);
    assert_int_equal(record_index(&rec[4]), 14);
    rds_records_clear(rec, got);
    assert_int_equal(rds_cursor_read(c, &cur, 40, id15, 0, rec, &got), 0);
    assert_int_equal(got, 0);
    /* a resumed run's cursor at the 5th: 6..15 again (delivered before),
     * then the rest as new */
    RdsCursor again;
    assert_int_equal(rds_cursor_open(c, &again, "cur", "g", "trainer", id5), 0);
    assert_int_equal(again.pending, 15);
    assert_string_equal(again.delivered, id15);
    assert_int_equal(rds_cursor_read(c, &again, 40, NULL, 0, rec, &got), 0);
    assert_int_equal(got, 10);
    assert_int_equal(record_index(&rec[0]), 5);
    assert_int_equal(record_index(&rec[9]), 14);
    const char *ids[40];
    for (int i = 0; i < got; i++) ids[i] = rec[i].id;
    long long acked = 0;
    assert_int_equal(rds_cursor_ack(c, &again, ids, got, &acked), 0);
    assert_int_equal(acked, 10);
    rds_records_clear(rec, got);
    assert_int_equal(rds_cursor_read(c, &again, 3, NULL, 0, rec, &got), 0);
    assert_int_equal(got, 3);
    assert_int_equal(record_index(&rec[0]), 15);
    rds_records_clear(rec, got);
    long long pend = 0;
    RdsReader *rd = NULL;
    assert_int_equal(rds_reader_open(&rd, c, "cur", "g", "x"), 0);
    assert_int_equal(rds_pending(rd, &pend), 0);
    assert_int_equal(pend, 15 - 10 + 3);
    rds_reader_free(&rd);
    /* another consumer takes an entry: a bounded read sees the gap */
    freeReplyObject(redisCommand(raw, "XREADGROUP GROUP g thief COUNT 1 STREAMS cur >"));
    assert_int_equal(rds_last_id(c, "cur", last), 0);
    assert_int_equal(rds_cursor_read(c, &again, 40, last, 0, rec, &got), PL_EPEER);
    assert_non_null(strstr(pl_error(), "another consumer"));
    /* the stream's tokenizer: the first claim sets it, later ones read it */
    char have[128];
    assert_int_equal(rds_claim(c, "cur:tokenizer", "aaa dir1", have, sizeof have), 0);
    assert_string_equal(have, "aaa dir1");
    assert_int_equal(rds_claim(c, "cur:tokenizer", "bbb dir2", have, sizeof have), 0);
    assert_string_equal(have, "aaa dir1");
    redisFree(raw);
    rds_free(&c);
}

/* One consumer reads everything in batches, acks each batch: every record
 * exactly once, nothing pending after, and a later read finds nothing. */
static void test_consume_all(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    const int N = 300;
    ingest(c, "pref", N, 50);
    RdsReader *rd = NULL;
    assert_int_equal(rds_reader_open(&rd, c, "pref", "run1", "w0"), 0);
    int *seen = calloc(N, sizeof *seen);
    RdsRecord rec[64];
    int total = 0, got;
    for (;;) {
        assert_int_equal(rds_read(rd, 64, 0, rec, &got), 0);
        if (!got) break;
        const char *ids[64];
        for (int i = 0; i < got; i++) {
            int k = record_index(&rec[i]);
            assert_true(k >= 0 && k < N);
            seen[k]++;
            ids[i] = rec[i].id;
        }
        long long acked = 0;
        assert_int_equal(rds_ack(rd, ids, got, &acked), 0);
        assert_int_equal(acked, got);
        total += got;
        rds_records_clear(rec, got);
    }
    assert_int_equal(total, N);
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    long long pend = -1;
    assert_int_equal(rds_pending(rd, &pend), 0);
    assert_int_equal(pend, 0);
    /* a blocking read with nothing new times out empty */
    assert_int_equal(rds_read(rd, 8, 50, rec, &got), 0);
    assert_int_equal(got, 0);
    /* reopening joins the existing group (BUSYGROUP is not an error) */
    RdsReader *again = NULL;
    assert_int_equal(rds_reader_open(&again, c, "pref", "run1", "w0"), 0);
    assert_int_equal(rds_read(again, 8, 0, rec, &got), 0);
    assert_int_equal(got, 0);
    rds_reader_free(&again);
    rds_reader_free(&rd);
    assert_null(rd);
    free(seen);
    rds_free(&c);
}

/* A child process reads a batch as consumer A and is SIGKILLed before it
 * acks. It writes the ids it got to a pipe first. */
static int crash_consumer(const char *url, const char *consumer, int count, char ids[][RDS_ID_MAX]) {
    int fd[2];
    if (pipe(fd)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        RdsConn *c = NULL;
        RdsReader *rd = NULL;
        RdsRecord rec[64];
        int got = 0;
        if (rds_connect(&c, url, 2.0) || rds_reader_open(&rd, c, "pref", "run", consumer) ||
            rds_read(rd, count, 0, rec, &got))
            _exit(1);
        for (int i = 0; i < got; i++)
            if (write(fd[1], rec[i].id, RDS_ID_MAX) != RDS_ID_MAX) _exit(1);
        close(fd[1]);
        raise(SIGKILL); /* mid-batch: read, not acknowledged */
        _exit(2);
    }
    close(fd[1]);
    int n = 0;
    while (n < count && read(fd[0], ids[n], RDS_ID_MAX) == RDS_ID_MAX) n++;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFSIGNALED(st)) return -1;
    return n;
}

typedef struct {
    int N;
    int *trained; /* times each record was handed to a step  */
    int *acked;   /* times XACK counted it as acknowledged   */
} Ledger;

/* Trains on one batch: counts it, then (the checkpoint done) acks it. */
static int step(RdsReader *rd, Ledger *l, int max, int ack) {
    RdsRecord rec[64];
    int got = 0;
    if (rds_read(rd, max, 0, rec, &got) < 0) fail_msg("read: %s", pl_error());
    const char *ids[64];
    for (int i = 0; i < got; i++) {
        int k = record_index(&rec[i]);
        assert_true(k >= 0 && k < l->N);
        l->trained[k]++;
        ids[i] = rec[i].id;
    }
    if (ack && got) {
        for (int i = 0; i < got; i++) {
            long long a = 0; /* one at a time, to attribute each ack */
            assert_int_equal(rds_ack(rd, &ids[i], 1, &a), 0);
            l->acked[record_index(&rec[i])] += (int)a;
        }
    }
    rds_records_clear(rec, got);
    return got;
}

/* Crash and recovery: A is killed mid-batch; A' (same name) gets exactly
 * A's pending entries back first; A' is killed too; B claims A's idle
 * entries with XAUTOCLAIM; every record is trained on at least once and
 * acknowledged exactly once, and nothing stays pending. */
static void test_crash_recovery(void **state) {
    TuRedis *s = *state;
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, server_url(s), 2.0), 0);
    const int N = 120;
    ingest(c, "pref", N, 40);
    Ledger l = {N, calloc(N, sizeof(int)), calloc(N, sizeof(int))};

    char ids_a[16][RDS_ID_MAX];
    assert_int_equal(crash_consumer(server_url(s), "A", 16, ids_a), 16);

    /* A' restarts with A's name: its first read is A's unacked batch */
    RdsReader *a2 = NULL;
    assert_int_equal(rds_reader_open(&a2, c, "pref", "run", "A"), 0);
    RdsRecord rec[64];
    int got = 0;
    assert_int_equal(rds_read(a2, 64, 0, rec, &got), 0);
    assert_int_equal(got, 16);
    for (int i = 0; i < got; i++) assert_string_equal(rec[i].id, ids_a[i]);
    const char *ids[64];
    for (int i = 0; i < got; i++) {
        l.trained[record_index(&rec[i])]++;
        ids[i] = rec[i].id;
    }
    for (int i = 0; i < got; i++) {
        long long a = 0;
        assert_int_equal(rds_ack(a2, &ids[i], 1, &a), 0);
        l.acked[record_index(&rec[i])] += (int)a;
    }
    rds_records_clear(rec, got);
    /* A' trains one more batch without acking, then dies too */
    assert_int_equal(step(a2, &l, 20, 0), 20);
    rds_reader_free(&a2);
    RdsConn *c2 = NULL; /* A' had its own connection; B gets another */
    assert_int_equal(rds_connect(&c2, server_url(s), 2.0), 0);
    rds_free(&c);

    /* B claims A's 20 idle entries (min idle 0 here), then reads the rest */
    RdsReader *b = NULL;
    assert_int_equal(rds_reader_open(&b, c2, "pref", "run", "B"), 0);
    rds_reader_set_min_idle(b, 0);
    int first = step(b, &l, 64, 1);
    assert_int_equal(first, 20);
    while (step(b, &l, 32, 1) > 0) {}
    long long pend = -1, len = 0;
    assert_int_equal(rds_pending(b, &pend), 0);
    assert_int_equal(pend, 0);
    assert_int_equal(rds_stream_len(c2, "pref", &len), 0);
    assert_int_equal(len, N);
    for (int i = 0; i < N; i++) {
        if (l.trained[i] < 1) fail_msg("record %d never trained on", i);
        if (l.acked[i] != 1) fail_msg("record %d acked %d times", i, l.acked[i]);
    }
    /* A' trained 20 without a checkpoint and B redid them: the only
     * records delivered twice (the killed child's 16 are not in the ledger) */
    int twice = 0;
    for (int i = 0; i < N; i++) twice += l.trained[i] > 1;
    assert_int_equal(twice, 20);
    rds_reader_free(&b);
    free(l.trained), free(l.acked);
    rds_free(&c2);
}

/* Redis dies during ingestion: the next append fails with a clear error
 * naming the operation; after a restart (AOF, fsync always) re-running the
 * whole ingestion completes and duplicates nothing. */
static void test_redis_restart(void **state) {
    TuRedis *s = *state;
    const char *url = tu_path("redis://127.0.0.1:%d/0", s->port);
    char url_copy[256];
    snprintf(url_copy, sizeof url_copy, "%s", url);
    RdsConn *c = NULL;
    assert_int_equal(rds_connect(&c, url_copy, 1.0), 0);
    const int N = 100, K = 40;
    char buf[256], h[RDS_HASH_HEX];
    for (int i = 0; i < K; i++) {
        size_t n = make_record(i, buf, sizeof buf);
        rds_hash_hex(buf, n, h);
        assert_int_equal(rds_append(c, "pref", buf, n, h, NULL), 0);
    }
    tu_redis_stop(s, SIGKILL);
    size_t n = make_record(K, buf, sizeof buf);
    rds_hash_hex(buf, n, h);
    int rc = rds_append(c, "pref", buf, n, h, NULL);
    assert_int_equal(rc, PL_EIO);
    assert_non_null(strstr(pl_error(), "append"));
    assert_non_null(strstr(pl_error(), url_copy));
    /* a dead connection keeps failing clearly (batch and read too) */
    RdsItem it = {buf, n, h};
    assert_int_equal(rds_append_batch(c, "pref", &it, 1, NULL, NULL), PL_EIO);
    assert_non_null(strstr(pl_error(), "connection lost"));
    rds_free(&c);

    assert_int_equal(tu_redis_start(s), 0); /* same port, same dir: the AOF reloads */
    assert_int_equal(rds_connect(&c, url_copy, 1.0), 0);
    long long len = 0;
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, K);
    RdsSummary sum = ingest(c, "pref", N, 16);
    assert_int_equal(sum.ingested, N - K);
    assert_int_equal(sum.duplicate, K);
    assert_int_equal(rds_stream_len(c, "pref", &len), 0);
    assert_int_equal(len, N);
    rds_free(&c);
}

int main(void) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_redis: redis-server not installed, skipping\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_hash),
        cmocka_unit_test_setup_teardown(test_auth, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_append_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consume_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart, setup_persist, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
