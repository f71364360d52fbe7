/* fs.h: small filesystem helpers shared by the coordinator, the workers
 * and the data tools. Paths are at most PL_PATH - 1 bytes; a longer one
 * fails instead of being cut. */
#ifndef PLUMB_FS_H
#define PLUMB_FS_H

#include <stddef.h>

#define PL_PATH 4096

/* mkdir -p: creates dir and every missing parent (mode 0755). Fails with
 * PL_EINVAL for a path of PL_PATH bytes or more, PL_EIO naming the folder
 * that could not be made or a path that exists and is no folder. */
int pl_mkdirs(const char *dir);

/* snprintf into out[cap]; PL_ERANGE (naming the start of the path) when the
 * result would not fit. */
int pl_path_fmt(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "dir/name" into out[cap], as pl_path_fmt. */
int pl_path_join(char *out, size_t cap, const char *dir, const char *name);

/* 1 when path exists (any kind of file), else 0. */
int pl_exists(const char *path);

/* Copies src to dst through dst.tmp and a rename, so that dst is either
 * the old file or the whole new one. Fails with PL_EIO naming the file
 * (src unreadable, a short write, the rename); the temporary is removed. */
int pl_copy_file(const char *src, const char *dst);

/* rm -rf: removes path and, for a folder, everything below it (links are
 * removed, not followed). A missing path is fine. PL_EIO naming the first
 * entry that could not be removed. */
int pl_rm_rf(const char *path);

/* fsync of every file and folder at and below path (links are not
 * followed): what a rename then names is on disk. PL_EIO naming the entry. */
int pl_fsync_tree(const char *path);

/* fsync of the folder holding path, after a rename into it. */
int pl_fsync_parent(const char *path);

#endif
