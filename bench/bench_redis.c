/* bench_redis.c: records per second through the Redis ingestion layer,
 * against a local redis-server that the benchmark starts itself (no
 * persistence, a free localhost port) and stops at exit.
 *
 * Usage: build/bench_redis [records] [bytes] [reps]   (100000 200 5)
 * Prints the median over reps of: one append per round trip (on a tenth of
 * the records), pipelined batches of 100 and 1000, re-ingesting the same
 * records (all duplicates), and reading + acknowledging them through a
 * consumer group in batches of 1000. Each rep starts from an empty db.
 *
 * Then what a training run does per step with data from a stream: read
 * the next B entries through its cursor, check each one's hash, unpack it
 * and fit it to the algorithm (data/record.h, ds_record_fit), for B = 8,
 * 32, 128 and 512, on the synthetic preference pairs (plumb data arith,
 * 20,000 of them), against the file path in the same run: the same pairs
 * read from their JSONL (parsed and tokenized, as a file run does). */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/redis.h"
#include "data/arith.h"
#include "data/dataset.h"
#include "data/record.h"
#include "model/tokenizer.h"

static pid_t g_server;

static void stop_server(void) {
    if (g_server > 0) kill(g_server, SIGTERM), waitpid(g_server, NULL, 0), g_server = 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && !bind(s, (struct sockaddr *)&a, sizeof a) &&
        !getsockname(s, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

static int start_server(int port) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout)) _exit(127);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", "/tmp", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    g_server = pid;
    for (int t = 0; t < 500; t++) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        int up = 0;
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            up = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
        }
        if (c) redisFree(c);
        if (up) return 0;
        usleep(10000);
    }
    return -1;
}

static void flush(int port) {
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r = c && !c->err ? redisCommand(c, "FLUSHALL") : NULL;
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
}

#define DIE(what) return fprintf(stderr, "bench_redis: %s: %s\n", what, pl_error()), 1

/* Records/s of the trainer's read path at batch sizes 8..512, and of
 * reading the same pairs from JSONL, medians of reps. */
static int trainer_reads(RdsConn *c, int reps) {
    char tmpl[] = "/tmp/bench_redis.XXXXXX", path[128];
    const char *dir = mkdtemp(tmpl);
    ArithConfig ac;
    arith_config_default(&ac);
    ac.n_train = 20000, ac.n_eval = 10, ac.max_operand = 999;
    Tokenizer *tok = NULL;
    if (!dir || arith_write(dir, &ac) < 0 || tok_load(&tok, dir) < 0) DIE("arith task");
    DsConfig dc;
    ds_config_init(&dc, tok);
    dc.format = DS_PREF;
    char fp[REC_TOK_HEX];
    snprintf(path, sizeof path, "%s/pref.jsonl", dir);
    if (rec_tokenizer_fp(dir, fp) < 0) DIE("fingerprint");
    /* the stream: every pair packed, as plumb ingest does */
    DsReader *rd = NULL;
    if (ds_reader_open(&rd, path, &dc) < 0) DIE("pref.jsonl");
    long n = 0;
    for (;;) {
        DsRecord rec;
        long line;
        DsReason why;
        char reason[256];
        int r = ds_reader_next(rd, &rec, &line, &why, reason, sizeof reason);
        if (r == 0) break;
        if (r != 1) DIE("pref.jsonl line");
        unsigned char *b;
        size_t len;
        char h[RDS_HASH_HEX];
        if (rec_pack(&rec, fp, &b, &len) < 0) DIE("pack");
        rds_hash_hex(b, len, h);
        RdsItem it = {b, len, h};
        int added = 0;
        if (rds_append_batch(c, "pairs", &it, 1, &added, NULL) < 0) DIE("append");
        n += added;
        free(b);
        ds_record_free(&rec);
    }
    ds_reader_free(&rd);
    const int bs[4] = {8, 32, 128, 512};
    double t[5][64];
    RdsRecord *e = malloc(512 * sizeof *e);
    if (reps > 64 || !e) return 1;
    for (int r = 0; r < reps; r++) {
        for (int b = 0; b < 4; b++) {
            RdsCursor cur;
            char group[32];
            snprintf(group, sizeof group, "t%d-%d", r, b);
            if (rds_cursor_open(c, &cur, "pairs", group, "trainer", NULL) < 0) DIE("cursor");
            long got_all = 0;
            double t0 = pl_now_s();
            for (;;) {
                int got = 0;
                if (rds_cursor_read(c, &cur, bs[b], NULL, 0, e, &got) < 0) DIE("read");
                if (!got) break;
                for (int i = 0; i < got; i++) {
                    char h[RDS_HASH_HEX], fp2[REC_TOK_HEX], why[256];
                    DsRecord rec;
                    DsReason w;
                    rds_hash_hex(e[i].payload, e[i].len, h);
                    if (strcmp(h, e[i].hash) || rec_unpack(e[i].payload, e[i].len, &rec, fp2) < 0 ||
                        strcmp(fp, fp2) || ds_record_fit(&dc, &rec, &w, why, sizeof why) != 1)
                        DIE("a record");
                    ds_record_free(&rec);
                }
                got_all += got;
                rds_records_clear(e, got);
            }
            t[b][r] = got_all / (pl_now_s() - t0);
            if (got_all != n) return fprintf(stderr, "read %ld of %ld\n", got_all, n), 1;
        }
        /* the file path: parse and tokenize every line */
        if (ds_reader_open(&rd, path, &dc) < 0) DIE("pref.jsonl");
        long m = 0;
        double t0 = pl_now_s();
        for (;;) {
            DsRecord rec;
            long line;
            DsReason why;
            char reason[256];
            if (ds_reader_next(rd, &rec, &line, &why, reason, sizeof reason) != 1) break;
            ds_record_free(&rec);
            m++;
        }
        t[4][r] = m / (pl_now_s() - t0);
        ds_reader_free(&rd);
    }
    printf("%ld preference pairs, the trainer's read path, median of %d\n", n, reps);
    for (int k = 0; k < 5; k++) qsort(t[k], reps, sizeof(double), cmp);
    for (int b = 0; b < 4; b++)
        printf("  stream, batches of %-4d %10.0f records/s  %5.2fx the file  %7.1f us per batch\n",
               bs[b], t[b][reps / 2], t[b][reps / 2] / t[4][reps / 2], 1e6 * bs[b] / t[b][reps / 2]);
    printf("  file (JSONL, tokenized)  %10.0f records/s\n", t[4][reps / 2]);
    free(e);
    ds_config_free(&dc);
    tok_free(&tok);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 100000;
    const int S = argc > 2 ? atoi(argv[2]) : 200;
    const int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (N < 10 || S < 16 || reps <= 0) {
        fprintf(stderr, "usage: bench_redis [records >= 10] [bytes >= 16] [reps]\n");
        return 1;
    }
    int port = free_port();
    atexit(stop_server);
    signal(SIGPIPE, SIG_IGN);
    if (port < 0 || start_server(port) < 0) {
        fprintf(stderr, "bench_redis: could not start redis-server\n");
        return 1;
    }
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);

    /* distinct records of S bytes: an index, then filler */
    char *data = malloc((size_t)N * S);
    char(*hash)[RDS_HASH_HEX] = malloc((size_t)N * RDS_HASH_HEX);
    RdsItem *items = malloc((size_t)N * sizeof *items);
    RdsRecord *rec = malloc(1000 * sizeof *rec);
    const char **ids = malloc(1000 * sizeof *ids);
    double *t[5];
    for (int k = 0; k < 5; k++) t[k] = malloc(reps * sizeof(double));
    if (!data || !hash || !items || !rec || !ids) return 1;
    for (int i = 0; i < N; i++) {
        char *p = data + (size_t)i * S;
        int n = snprintf(p, S, "{\"i\":%d,\"text\":\"", i);
        for (int j = n; j < S; j++) p[j] = (char)('a' + (i * 7 + j) % 26);
        rds_hash_hex(p, S, hash[i]);
        items[i] = (RdsItem){p, (size_t)S, hash[i]};
    }

    RdsConn *c = NULL;
    if (rds_connect(&c, url, 10.0) < 0) DIE("connect");
    const int N1 = N / 10;
    for (int r = 0; r < reps; r++) {
        /* one round trip per record */
        flush(port);
        double t0 = pl_now_s();
        for (int i = 0; i < N1; i++)
            if (rds_append(c, "b", items[i].payload, items[i].len, items[i].hash, NULL) < 0)
                DIE("append");
        t[0][r] = N1 / (pl_now_s() - t0);
        /* pipelined batches */
        const int bs[2] = {100, 1000};
        for (int b = 0; b < 2; b++) {
            flush(port);
            RdsSummary sum = {0};
            t0 = pl_now_s();
            for (int i = 0; i < N; i += bs[b])
                if (rds_append_batch(c, "b", items + i, N - i < bs[b] ? N - i : bs[b], NULL,
                                     &sum) < 0)
                    DIE("append batch");
            t[1 + b][r] = N / (pl_now_s() - t0);
            if (sum.ingested != N) return fprintf(stderr, "ingested %lld\n", sum.ingested), 1;
        }
        /* the same records again: all duplicates */
        RdsSummary sum = {0};
        t0 = pl_now_s();
        for (int i = 0; i < N; i += 1000)
            if (rds_append_batch(c, "b", items + i, N - i < 1000 ? N - i : 1000, NULL, &sum) < 0)
                DIE("re-ingest");
        t[3][r] = N / (pl_now_s() - t0);
        if (sum.duplicate != N) return fprintf(stderr, "duplicates %lld\n", sum.duplicate), 1;
        /* consume: read 1000, ack 1000 */
        RdsReader *rd = NULL;
        char group[32];
        snprintf(group, sizeof group, "g%d", r);
        if (rds_reader_open(&rd, c, "b", group, "w") < 0) DIE("reader");
        long long total = 0;
        t0 = pl_now_s();
        for (;;) {
            int got = 0;
            if (rds_read(rd, 1000, 0, rec, &got) < 0) DIE("read");
            if (!got) break;
            for (int i = 0; i < got; i++) ids[i] = rec[i].id;
            if (rds_ack(rd, ids, got, NULL) < 0) DIE("ack");
            rds_records_clear(rec, got);
            total += got;
        }
        t[4][r] = total / (pl_now_s() - t0);
        rds_reader_free(&rd);
        if (total != N) return fprintf(stderr, "consumed %lld\n", total), 1;
    }
    const char *what[5] = {"append, 1 per round trip", "append_batch 100", "append_batch 1000",
                           "re-ingest (duplicates), batch 1000", "read + ack, batch 1000"};
    printf("%d records of %d bytes, median of %d\n", N, S, reps);
    for (int k = 0; k < 5; k++) {
        qsort(t[k], reps, sizeof(double), cmp);
        printf("  %-36s %10.0f records/s\n", what[k], t[k][reps / 2]);
    }
    flush(port);
    int rc = trainer_reads(c, reps);
    rds_free(&c);
    return rc;
}
