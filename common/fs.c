/* fs.c: filesystem helpers (fs.h). */
#include "common/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

int pl_mkdirs(const char *dir) {
    char p[PL_PATH];
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

int pl_path_fmt(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return pl_fail(PL_ERANGE, "path too long (over %zu bytes): %.80s...", cap - 1, out);
    return PL_OK;
}

int pl_path_join(char *out, size_t cap, const char *dir, const char *name) {
    return pl_path_fmt(out, cap, "%s/%s", dir, name);
}

int pl_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int pl_copy_file(const char *src, const char *dst) {
    char tmp[PL_PATH + 8];
    PL_TRY(pl_path_fmt(tmp, sizeof tmp, "%s.tmp", dst));
    FILE *in = fopen(src, "rb");
    if (!in) return pl_fail(PL_EIO, "open %s: %s", src, strerror(errno));
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        int e = errno;
        fclose(in);
        return pl_fail(PL_EIO, "open %s: %s", tmp, strerror(e));
    }
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while (!bad && (n = fread(buf, 1, sizeof buf, in)) > 0) bad = fwrite(buf, 1, n, out) != n;
    bad |= ferror(in);
    fclose(in);
    bad |= fclose(out) != 0;
    if (bad || rename(tmp, dst) != 0) {
        unlink(tmp);
        return pl_fail(PL_EIO, "copying %s to %s failed", src, dst);
    }
    return PL_OK;
}

/* fn on each entry of folder dir (not . and ..), until one fails. */
static int each_entry(const char *dir, int (*fn)(const char *path)) {
    DIR *d = opendir(dir);
    if (!d) return pl_fail(PL_EIO, "opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = PL_OK;
    while (rc == PL_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[PL_PATH];
        rc = pl_path_join(sub, sizeof sub, dir, e->d_name);
        if (rc == PL_OK) rc = fn(sub);
    }
    closedir(d);
    return rc;
}

int pl_rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? PL_OK : pl_fail(PL_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        PL_TRY(each_entry(path, pl_rm_rf));
        if (rmdir(path) != 0) return pl_fail(PL_EIO, "rmdir %s: %s", path, strerror(errno));
        return PL_OK;
    }
    if (unlink(path) != 0) return pl_fail(PL_EIO, "unlink %s: %s", path, strerror(errno));
    return PL_OK;
}

static int fsync_path(const char *path, int dir) {
    int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));
    /* some file systems refuse fsync on a folder; the data is what matters */
    int rc = fsync(fd) != 0 && !(dir && errno == EINVAL)
                 ? pl_fail(PL_EIO, "fsync %s: %s", path, strerror(errno))
                 : PL_OK;
    close(fd);
    return rc;
}

int pl_fsync_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return pl_fail(PL_EIO, "%s: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) return fsync_path(path, 0);
    if (!S_ISDIR(st.st_mode)) return PL_OK;
    PL_TRY(each_entry(path, pl_fsync_tree));
    return fsync_path(path, 1);
}

int pl_fsync_parent(const char *path) {
    char dir[PL_PATH];
    PL_TRY(pl_path_fmt(dir, sizeof dir, "%s", path));
    char *slash = strrchr(dir, '/');
    if (!slash) return fsync_path(".", 1);
    if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
    return fsync_path(dir, 1);
}
