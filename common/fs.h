/* fs.h: small filesystem helpers shared by the coordinator, the workers
 * and the data tools. */
#ifndef PLUMB_FS_H
#define PLUMB_FS_H

/* mkdir -p: creates dir and every missing parent (mode 0755). Fails with
 * PL_EINVAL for a path of 4096 bytes or more, PL_EIO naming the folder
 * that could not be made or a path that exists and is no folder. */
int pl_mkdirs(const char *dir);

#endif
