/* fs.c: filesystem helpers (fs.h). */
#include "common/fs.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"

int pl_mkdirs(const char *dir) {
    char p[4096];
    size_t n = strlen(dir);
    if (n == 0) return PL_OK;
    if (n >= sizeof p) return pl_fail(PL_EINVAL, "path too long: %.80s...", dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char save = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return pl_fail(PL_EIO, "mkdir %s: %s", p, strerror(errno));
        p[i] = save;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return pl_fail(PL_EIO, "%s is not a directory", dir);
    return PL_OK;
}
