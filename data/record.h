/* record.h: the binary form of a tokenized record, as stored in a Redis
 * stream or a local shard file by `plumb ingest` and read back by the
 * trainers.
 *
 * Layout (little-endian):
 *   "PLR2" | u8 shape | u8 has_margin | u16 0 | f32 margin |
 *   u32 n_prompt | u32 n_chosen | u32 n_rejected | u32 answer_len |
 *   char tokenizer[32] (the fingerprint, 32 hex digits) |
 *   i32 prompt[n_prompt] | i32 chosen[n_chosen] | i32 rejected[n_rejected] |
 *   answer bytes (no NUL)
 * The line number and truncation flag are not part of it, so the same
 * content from another file hashes the same. The tokenizer's fingerprint
 * is: token ids mean nothing without the tokenizer that made them, and a
 * trainer with another one must not read them (the same text through two
 * tokenizers is also two records). */
#ifndef PLUMB_RECORD_H
#define PLUMB_RECORD_H

#include <stddef.h>

#include "dataset.h"

#define REC_HEADER_BYTES 60
#define REC_TOK_HEX 33 /* a tokenizer fingerprint: 32 hex digits + NUL */

/* The fingerprint of the tokenizer in folder dir: FNV-1a 128 (rds_hash_hex)
 * of tokenizer.json, a NUL, and tokenizer_config.json when there is one
 * (its chat template renders conversational records). PL_EIO naming the
 * file when tokenizer.json cannot be read. */
int rec_tokenizer_fp(const char *dir, char out[REC_TOK_HEX]);

typedef struct RdsConn RdsConn;

/* Ties stream to the tokenizer of fingerprint fp (folder dir): the key
 * `<stream>:tokenizer` holds "FP DIR", set by whoever comes first (an
 * ingestion or a run). Returns 1 when the stream's tokenizer is fp, 0 when
 * it is another (have, cap bytes, holds what the key says), < 0 on a
 * Redis error. */
int rec_stream_tokenizer(RdsConn *c, const char *stream, const char *fp, const char *dir,
                         char *have, size_t cap);

/* Packs rec, made by the tokenizer of fingerprint tok (32 hex digits), into
 * a malloc'ed buffer *buf of *len bytes. */
int rec_pack(const DsRecord *rec, const char *tok, unsigned char **buf, size_t *len);

/* Unpacks len bytes into *rec (arrays malloc'ed; free with ds_record_free)
 * and the tokenizer fingerprint into tok (may be NULL). Rejects
 * (PL_EFORMAT, nothing allocated) a wrong magic (naming PLR1, the format
 * without a fingerprint), counts that disagree with len, a shape out of
 * range or negative ids. */
int rec_unpack(const unsigned char *buf, size_t len, DsRecord *rec, char tok[REC_TOK_HEX]);

#endif
