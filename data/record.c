/* record.c: packing tokenized records (see record.h). */
#include "record.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/redis.h"

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_ids(unsigned char *p, const int *ids, int n) {
    for (int i = 0; i < n; i++) put_u32(p + 4 * (size_t)i, (uint32_t)ids[i]);
}

/* Appends the bytes of file path to b (missing: PL_EIO unless optional). */
static int add_file(PlBuf *b, const char *path, int optional) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional && errno == ENOENT) return 0;
        return pl_fail(PL_EIO, "tokenizer fingerprint: cannot read %s: %s", path, strerror(errno));
    }
    char chunk[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = pl_buf_put(b, chunk, n);
    if (rc == 0 && ferror(f)) rc = pl_fail(PL_EIO, "tokenizer fingerprint: reading %s failed", path);
    fclose(f);
    return rc;
}

int rec_tokenizer_fp(const char *dir, char out[REC_TOK_HEX]) {
    char path[4096];
    PlBuf b = {0};
    int rc = pl_path_fmt(path, sizeof path, "%s/tokenizer.json", dir);
    if (rc == 0) rc = add_file(&b, path, 0);
    if (rc == 0) rc = pl_buf_put(&b, "", 1);
    if (rc == 0) rc = pl_path_fmt(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (rc == 0) rc = add_file(&b, path, 1);
    if (rc == 0) rds_hash_hex(b.p, b.n, out);
    pl_buf_free(&b);
    return rc;
}

int rec_stream_tokenizer(RdsConn *c, const char *stream, const char *fp, const char *dir,
                         char *have, size_t cap) {
    char key[512], mine[4200];
    snprintf(key, sizeof key, "%s:tokenizer", stream);
    snprintf(mine, sizeof mine, "%s %s", fp, dir);
    PL_TRY(rds_claim(c, key, mine, have, cap));
    return strncmp(have, fp, REC_TOK_HEX - 1) == 0;
}

int rec_pack(const DsRecord *rec, const char *tok, unsigned char **buf, size_t *len) {
    size_t alen = rec->answer ? strlen(rec->answer) : 0;
    size_t nids = (size_t)rec->n_prompt + rec->n_chosen + rec->n_rejected;
    size_t n = REC_HEADER_BYTES + 4 * nids + alen;
    unsigned char *b = malloc(n);
    PL_CHECK_ALLOC(b);
    memcpy(b, "PLR2", 4);
    b[4] = (unsigned char)rec->shape;
    b[5] = (unsigned char)(rec->has_margin != 0);
    b[6] = b[7] = 0;
    uint32_t m;
    memcpy(&m, &rec->margin, 4);
    put_u32(b + 8, rec->has_margin ? m : 0);
    put_u32(b + 12, (uint32_t)rec->n_prompt);
    put_u32(b + 16, (uint32_t)rec->n_chosen);
    put_u32(b + 20, (uint32_t)rec->n_rejected);
    put_u32(b + 24, (uint32_t)alen);
    memset(b + 28, '0', 32);
    if (tok) memcpy(b + 28, tok, strnlen(tok, 32));
    unsigned char *p = b + REC_HEADER_BYTES;
    put_ids(p, rec->prompt, rec->n_prompt);
    p += 4 * (size_t)rec->n_prompt;
    put_ids(p, rec->chosen, rec->n_chosen);
    p += 4 * (size_t)rec->n_chosen;
    put_ids(p, rec->rejected, rec->n_rejected);
    p += 4 * (size_t)rec->n_rejected;
    if (alen) memcpy(p, rec->answer, alen);
    *buf = b;
    *len = n;
    return 0;
}

/* Copies n ids from p into a new array (NULL when n = 0). */
static int get_ids(const unsigned char *p, int n, int **out) {
    *out = NULL;
    if (n == 0) return 0;
    int *v = malloc(sizeof(int) * (size_t)n);
    PL_CHECK_ALLOC(v);
    for (int i = 0; i < n; i++) {
        uint32_t x = get_u32(p + 4 * (size_t)i);
        if (x > INT32_MAX) {
            free(v);
            return pl_fail(PL_EFORMAT, "record: token id %u at %d is negative", x, i);
        }
        v[i] = (int)x;
    }
    *out = v;
    return 0;
}

int rec_unpack(const unsigned char *buf, size_t len, DsRecord *rec, char tok[REC_TOK_HEX]) {
    memset(rec, 0, sizeof *rec);
    if (len >= 4 && memcmp(buf, "PLR1", 4) == 0)
        return pl_fail(PL_EFORMAT, "record: format PLR1 carries no tokenizer fingerprint (an "
                                   "older plumb ingest made it); ingest the data again");
    if (len < REC_HEADER_BYTES || memcmp(buf, "PLR2", 4) != 0)
        return pl_fail(PL_EFORMAT, "record: not a packed record (%zu bytes, bad magic)", len);
    uint64_t np = get_u32(buf + 12), nc = get_u32(buf + 16), nr = get_u32(buf + 20);
    uint64_t alen = get_u32(buf + 24);
    if (np > INT32_MAX || nc > INT32_MAX || nr > INT32_MAX ||
        REC_HEADER_BYTES + 4 * (np + nc + nr) + alen != len)
        return pl_fail(PL_EFORMAT, "record: counts (%llu, %llu, %llu, answer %llu) disagree with %zu bytes",
                       (unsigned long long)np, (unsigned long long)nc, (unsigned long long)nr,
                       (unsigned long long)alen, len);
    if (buf[4] >= DS_NSHAPES) return pl_fail(PL_EFORMAT, "record: shape %u out of range", buf[4]);
    if (tok) memcpy(tok, buf + 28, 32), tok[32] = '\0';
    rec->shape = (DsShape)buf[4];
    rec->has_margin = buf[5] != 0;
    uint32_t m = get_u32(buf + 8);
    memcpy(&rec->margin, &m, 4);
    rec->n_prompt = (int)np, rec->n_chosen = (int)nc, rec->n_rejected = (int)nr;
    const unsigned char *p = buf + REC_HEADER_BYTES;
    int rc = get_ids(p, (int)np, &rec->prompt);
    if (rc == 0) rc = get_ids(p + 4 * np, (int)nc, &rec->chosen);
    if (rc == 0) rc = get_ids(p + 4 * (np + nc), (int)nr, &rec->rejected);
    if (rc == 0 && alen) {
        rec->answer = malloc(alen + 1);
        if (!rec->answer) rc = pl_fail(PL_ENOMEM, "record: out of memory");
        else {
            memcpy(rec->answer, p + 4 * (np + nc + nr), alen);
            rec->answer[alen] = '\0';
        }
    }
    if (rc < 0) ds_record_free(rec);
    return rc;
}
