/* safetensors.h: reading (mmap) and writing safetensors files.
 *
 * Format: u64 little-endian header length n, n bytes of JSON mapping tensor
 * names to {dtype, shape, data_offsets: [begin, end]} (relative to the end
 * of the header), optional "__metadata__" of string pairs, then the data.
 * The reader validates every offset, shape and dtype against the file size
 * before anything touches the data. */
#ifndef PLUMB_SAFETENSORS_H
#define PLUMB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;   /* byte offsets relative to the data section */
} StTensor;

typedef struct StFile {
    char *path;
    void *map;           /* read-only mapping of the whole file */
    size_t size;
    size_t data_start;   /* 8 + header length */
    StTensor *t;
    int n;
} StFile;

/* Maps and parses path; on error (missing, truncated, bad JSON, offsets out
 * of range, unknown dtype, shape/size mismatch) returns < 0 with a message
 * naming the file and the tensor. */
int st_open(StFile *f, const char *path);
void st_close(StFile *f);

const StTensor *st_find(const StFile *f, const char *name);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);

/* The tensor as fp32. If it is F32 and 4-byte aligned in the mapping,
 * *out points into the mapping and *copied = 0; otherwise (BF16, F16, F64,
 * unaligned F32) a malloc'ed converted copy is returned with *copied = 1. */
int st_read_f32(const StFile *f, const StTensor *t, float **out, int *copied);

/* Converts n elements of tensor t into dst (fp32). */
int st_copy_f32(const StFile *f, const StTensor *t, float *dst);

typedef struct {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} StWrite;

/* Writes tensors as F32 (dtype ST_F32) or BF16, with optional metadata
 * (a JSON object of string values, may be NULL). Writes to path.tmp and
 * renames, so a crash never leaves a half-written file under path. */
int st_write(const char *path, const StWrite *ts, int n, StDtype dtype,
             const char *metadata_json);

#endif
