/* record.h: the binary form of a tokenized record, as stored in a Redis
 * stream or a local shard file by `plumb ingest` and read back by the
 * trainers.
 *
 * Layout (little-endian):
 *   "PLR1" | u8 shape | u8 has_margin | u16 0 | f32 margin |
 *   u32 n_prompt | u32 n_chosen | u32 n_rejected | u32 answer_len |
 *   i32 prompt[n_prompt] | i32 chosen[n_chosen] | i32 rejected[n_rejected] |
 *   answer bytes (no NUL)
 * The line number and truncation flag are not part of it, so the same
 * content from another file hashes the same. */
#ifndef PLUMB_RECORD_H
#define PLUMB_RECORD_H

#include <stddef.h>

#include "dataset.h"

#define REC_HEADER_BYTES 28

/* Packs rec into a malloc'ed buffer *buf of *len bytes. */
int rec_pack(const DsRecord *rec, unsigned char **buf, size_t *len);

/* Unpacks len bytes into *rec (arrays malloc'ed; free with ds_record_free).
 * Rejects (PL_EFORMAT, nothing allocated) a wrong magic, counts that
 * disagree with len, a shape out of range or negative ids. */
int rec_unpack(const unsigned char *buf, size_t len, DsRecord *rec);

#endif
