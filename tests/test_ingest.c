/* test_ingest.c: `plumb ingest` end to end, and the packed record format.
 *
 * Proves: a packed record unpacks to the same record and a damaged one is
 * refused; ingesting into a shard file and into a real redis-server (started
 * on a free localhost port) adds every good record once, keeps bad lines as
 * dead letters with their line numbers, and adds nothing when run again; a
 * stopped server gives a clear error. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "data/record.h"
#include "testutil.h"

/* Runs plumb with args, returns the exit status and the stdout JSON object. */
static int ingest(json_t **summary, const char *fmt, ...) {
    char args[2048], cmd[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s ingest %s 2>/dev/null", tu_plumb_bin(), args);
    char *out = NULL;
    int rc = tu_run(cmd, &out);
    *summary = json_loads(out ? out : "", 0, NULL);
    free(out);
    return rc;
}

static long long field(const json_t *j, const char *k) {
    return json_integer_value(json_object_get(j, k));
}

static const char *dir;

/* The synthetic task (its tokenizer and preference pairs) plus three bad
 * lines, as lines 4001..4003 after 4000 good ones. */
static int setup(void **state) {
    dir = tu_tmp_dir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s data arith --out %s/arith --seed 5 > /dev/null && "
             "cat %s/arith/pref.jsonl > %s/in.jsonl && "
             "printf '%%s\\n' 'not json' '{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"2\"}' "
             "'{\"prompt\": 7, \"chosen\": \"2\", \"rejected\": \"3\"}' >> %s/in.jsonl",
             tu_plumb_bin(), dir, dir, dir, dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* pack -> unpack is the identity; wrong magic and lying counts fail. */
static void test_record_roundtrip(void **state) {
    int p[3] = {256, 49, 43}, c[2] = {50, 257}, r[2] = {51, 257};
    DsRecord rec = {.shape = 0, .prompt = p, .n_prompt = 3, .chosen = c, .n_chosen = 2,
                    .rejected = r, .n_rejected = 2, .answer = "2", .has_margin = 1, .margin = 0.5f};
    unsigned char *buf;
    size_t len;
    const char *fp = "0123456789abcdef0123456789abcdef";
    assert_int_equal(rec_pack(&rec, fp, &buf, &len), 0);
    DsRecord back;
    char tok[REC_TOK_HEX];
    assert_int_equal(rec_unpack(buf, len, &back, tok), 0);
    assert_string_equal(tok, fp);
    assert_int_equal(back.n_prompt, 3);
    assert_memory_equal(back.prompt, p, sizeof p);
    assert_memory_equal(back.chosen, c, sizeof c);
    assert_memory_equal(back.rejected, r, sizeof r);
    assert_string_equal(back.answer, "2");
    assert_true(back.has_margin && back.margin == 0.5f);
    ds_record_free(&back);
    assert_int_equal(rec_unpack(buf, len - 1, &back, NULL), PL_EFORMAT);
    buf[12] = 200; /* n_prompt now disagrees with the length */
    assert_int_equal(rec_unpack(buf, len, &back, NULL), PL_EFORMAT);
    memcpy(buf, "PLR1", 4); /* the format before fingerprints: says to ingest again */
    assert_int_equal(rec_unpack(buf, len, &back, NULL), PL_EFORMAT);
    assert_non_null(strstr(pl_error(), "ingest the data again"));
    buf[0] = 'X';
    assert_int_equal(rec_unpack(buf, len, &back, NULL), PL_EFORMAT);
    free(buf);
}

/* Shard file: counts, dead letters with line numbers, idempotent re-run. */
static void test_ingest_file(void **state) {
    json_t *s;
    assert_int_equal(ingest(&s, "%s/in.jsonl --tokenizer %s/arith --out %s/shard.bin", dir, dir, dir), 0);
    assert_non_null(s);
    assert_int_equal(field(s, "read"), 4003);
    assert_int_equal(field(s, "ingested"), 4000);
    assert_int_equal(field(s, "rejected"), 3);
    json_decref(s);
    assert_int_equal(ingest(&s, "%s/in.jsonl --tokenizer %s/arith --out %s/shard.bin", dir, dir, dir), 0);
    assert_int_equal(field(s, "ingested"), 0);
    assert_int_equal(field(s, "duplicate"), 4000);
    assert_int_equal(field(s, "rejected"), 0);
    json_decref(s);
    size_t n;
    char *dead = tu_read_file(tu_path("%s/shard.bin.dead.jsonl", dir), &n);
    assert_non_null(dead);
    assert_non_null(strstr(dead, "\"line\":4001,\"reason\":\"invalid_json\""));
    assert_non_null(strstr(dead, "\"line\":4002,\"reason\":\"chosen_equals_rejected\""));
    assert_non_null(strstr(dead, "\"line\":4003,\"reason\":\"field_type\""));
    /* a letter keeps the bad line itself, not only the reason */
    assert_non_null(strstr(dead, "\"raw\":\"not json\""));
    assert_non_null(strstr(dead, "\"raw\":\"{\\\"prompt\\\": 7, \\\"chosen\\\": \\\"2\\\""));
    /* three letters, once each after the re-run */
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += dead[i] == '\n';
    assert_int_equal(lines, 3);
    free(dead);
    /* every stored record unpacks, with the fingerprint of its tokenizer */
    char fp[REC_TOK_HEX], tok[REC_TOK_HEX];
    assert_int_equal(rec_tokenizer_fp(tu_path("%s/arith", dir), fp), 0);
    char *shard = tu_read_file(tu_path("%s/shard.bin", dir), &n);
    size_t at = 0, count = 0;
    while (at + 4 <= n) {
        const unsigned char *h = (const unsigned char *)shard + at;
        size_t len = h[0] | h[1] << 8 | h[2] << 16 | (size_t)h[3] << 24;
        DsRecord rec;
        assert_int_equal(rec_unpack(h + 4, len, &rec, tok), 0);
        assert_string_equal(tok, fp);
        assert_true(rec.n_chosen > 0 && rec.n_rejected > 0);
        ds_record_free(&rec);
        at += 4 + len;
        count++;
    }
    assert_int_equal(at, n);
    assert_int_equal(count, 4000);
    free(shard);
}

/* A run killed while writing leaves the shard (or its dead letters) cut at
 * any byte: inside a record's 4-byte length, inside its data, between two
 * records, inside a letter. Each such file, run again, loses its torn tail
 * with a message saying how many bytes, and ends byte for byte as the
 * uninterrupted run's (the records go in file order, so the re-run writes
 * exactly what was cut). Needs test_ingest_file's shard. */
static void test_ingest_torn_tail(void **state) {
    size_t n, nd;
    char *whole = tu_read_file(tu_path("%s/shard.bin", dir), &n);
    char *dead = tu_read_file(tu_path("%s/shard.bin.dead.jsonl", dir), &nd);
    assert_non_null(whole);
    assert_non_null(dead);
    /* the records' offsets, to cut at and around them */
    size_t starts[4096], ns = 0;
    for (size_t at = 0; at + 4 <= n && ns < 4096;) {
        const unsigned char *h = (const unsigned char *)whole + at;
        starts[ns++] = at;
        at += 4 + (h[0] | h[1] << 8 | h[2] << 16 | (size_t)h[3] << 24);
    }
    const size_t last = starts[ns - 1], mid = starts[ns / 2];
    const size_t cuts[] = {1, 2, 3, 4, 5, mid, mid + 1, mid + 3, mid + 4, mid + 9,
                           last, last + 2, last + 4, last + 5, n - 1};
    char cmd[4096];
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        /* the shard cut at cuts[c], the letters cut inside the second one */
        size_t dcut = c % 3 == 0 ? nd : (size_t)(strchr(dead, '\n') - dead) + 1 + 7 * (c % 3);
        FILE *f = fopen(tu_path("%s/torn.bin", dir), "wb");
        fwrite(whole, 1, cuts[c], f);
        fclose(f);
        f = fopen(tu_path("%s/torn.bin.dead.jsonl", dir), "wb");
        fwrite(dead, 1, dcut, f);
        fclose(f);
        char *out = NULL;
        snprintf(cmd, sizeof cmd, "%s ingest %s/in.jsonl --tokenizer %s/arith --out %s/torn.bin 2>&1",
                 tu_plumb_bin(), dir, dir, dir);
        int rc = tu_run(cmd, &out);
        if (rc != 0) fail_msg("cut at %zu: exit %d\n%s", cuts[c], rc, out);
        size_t from = 0; /* the last whole record's end before the cut */
        for (size_t k = 0; k < ns && starts[k] <= cuts[c]; k++) from = starts[k];
        char want[160];
        snprintf(want, sizeof want, "torn.bin: dropped %zu bytes of a torn record at byte %zu",
                 cuts[c] - from, from);
        if (cuts[c] != from && !strstr(out, want)) fail_msg("cut at %zu: no \"%s\"\n%s", cuts[c], want, out);
        snprintf(want, sizeof want, "torn.bin.dead.jsonl: dropped %zu bytes of a torn dead letter",
                 (size_t)(7 * (c % 3)));
        if (dcut < nd && !strstr(out, want)) fail_msg("letters cut at %zu: no \"%s\"\n%s", dcut, want, out);
        free(out);
        size_t m, md;
        char *again = tu_read_file(tu_path("%s/torn.bin", dir), &m);
        char *dagain = tu_read_file(tu_path("%s/torn.bin.dead.jsonl", dir), &md);
        if (m != n || memcmp(again, whole, n)) fail_msg("cut at %zu: the shard differs", cuts[c]);
        if (md != nd || memcmp(dagain, dead, nd)) fail_msg("cut at %zu: the letters differ", cuts[c]);
        free(again);
        free(dagain);
    }
    free(whole);
    free(dead);
}

/* A real redis-server: ingest, re-ingest, dead letters; then the server
 * stops and ingestion fails with a message naming the URL. */
static void test_ingest_redis(void **state) {
    if (system("command -v redis-server > /dev/null") != 0) skip();
    int port = tu_free_port();
    assert_true(port > 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
             "--dir %s --logfile %s/redis.log > /dev/null && "
             "for i in $(seq 50); do redis-cli -p %d ping 2>/dev/null | grep -q PONG && exit 0; sleep 0.1; done; exit 1",
             port, dir, dir, port);
    assert_int_equal(system(cmd), 0);
    json_t *s;
    int rc = ingest(&s, "%s/in.jsonl --tokenizer %s/arith --to redis://127.0.0.1:%d/3 --stream prefs",
                    dir, dir, port);
    int rc2 = -1;
    json_t *s2 = NULL;
    if (rc == 0)
        rc2 = ingest(&s2, "%s/in.jsonl --tokenizer %s/arith --to redis://127.0.0.1:%d/3 --stream prefs",
                     dir, dir, port);
    char *xlen = NULL, *dlen = NULL;
    snprintf(cmd, sizeof cmd, "redis-cli -p %d -n 3 XLEN prefs", port);
    tu_run(cmd, &xlen);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d -n 3 XLEN prefs:dead", port);
    tu_run(cmd, &dlen);
    char *letters = NULL;
    snprintf(cmd, sizeof cmd, "redis-cli -p %d -n 3 XRANGE prefs:dead - +", port);
    tu_run(cmd, &letters);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d shutdown nosave > /dev/null 2>&1", port);
    system(cmd); /* stop the server before any assertion can fail */
    assert_int_equal(rc, 0);
    assert_int_equal(field(s, "ingested"), 4000);
    assert_int_equal(field(s, "rejected"), 3);
    assert_int_equal(rc2, 0);
    assert_int_equal(field(s2, "ingested"), 0);
    assert_int_equal(field(s2, "duplicate"), 4000);
    assert_int_equal(atoi(xlen), 4000);
    assert_int_equal(atoi(dlen), 3);
    /* a letter keeps the line itself, and the reason with its message */
    assert_non_null(letters);
    assert_non_null(strstr(letters, "not json"));
    assert_non_null(strstr(letters, "invalid_json: invalid JSON at column"));
    free(letters);
    json_decref(s);
    json_decref(s2);
    free(xlen);
    free(dlen);
    /* the server is gone: a clear error, exit 1 */
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s ingest %s/in.jsonl --tokenizer %s/arith --to redis://127.0.0.1:%d/3 "
             "--stream prefs 2>&1", tu_plumb_bin(), dir, dir, port);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "redis://127.0.0.1"));
    free(out);
}

/* Bad command lines: both sinks, neither, a stream without a URL. */
static void test_bad_arguments(void **state) {
    json_t *s;
    assert_int_equal(ingest(&s, "%s/in.jsonl --tokenizer %s/arith", dir, dir), 2);
    assert_int_equal(ingest(&s, "%s/in.jsonl --tokenizer %s/arith --out x --to redis://h/0 --stream s",
                            dir, dir), 2);
    assert_int_equal(ingest(&s, "%s/in.jsonl --tokenizer %s/arith --to redis://h/0", dir, dir), 2);
    assert_int_equal(ingest(&s, "%s/missing.jsonl --tokenizer %s/arith --out %s/x.bin", dir, dir, dir), 1);
}

int main(void) {
    unsetenv("REDISCLI_AUTH"); /* the test servers have no password */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_ingest_file),
        cmocka_unit_test(test_ingest_torn_tail),
        cmocka_unit_test(test_ingest_redis),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
