#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tu_data_dir(void) {
    const char *d = getenv("PLUMB_TEST_DATA");
    return d ? d : "tests/data";
}

const char *tu_plumb_bin(void) {
    const char *b = getenv("PLUMB_BIN");
    return b ? b : "build/plumb";
}

const char *tu_tmp_dir(void) {
    static char dir[512];
    if (dir[0]) return dir;
    const char *base = getenv("PLUMB_TMP");
    if (!base) base = "/tmp";
    mkdir(base, 0755);
    snprintf(dir, sizeof dir, "%s/t%d-XXXXXX", base, (int)getpid());
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp %s failed\n", dir);
        abort();
    }
    return dir;
}

const char *tu_path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 1024, fmt, ap);
    va_end(ap);
    return b;
}

void tu_randn(float *x, size_t n, Rng *rng, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(rng) * scale;
}

void tu_assert_close(const float *a, const float *b, size_t n, float tol, float rel,
                     const char *what) {
    for (size_t i = 0; i < n; i++) {
        float lim = tol + fabsf(b[i]) * rel;
        if (!(fabsf(a[i] - b[i]) <= lim)) {
            fail_msg("%s: index %zu: got %.8g want %.8g (limit %.3g)", what, i, a[i], b[i],
                     lim);
        }
    }
}

void tu_fd_check(float *x, int n, const float *g, TuLossFn f, void *ctx, float h, double tol,
                 const char *what) {
    for (int i = 0; i < n; i++) {
        const float xi = x[i];
        x[i] = xi + h;
        const double hp = (double)x[i] - xi, fp = f(ctx);
        x[i] = xi - h;
        const double hm = (double)xi - x[i], fm = f(ctx);
        x[i] = xi;
        const double num = (fp - fm) / (hp + hm);
        if (!(fabs(num - g[i]) <= tol + 1e-3 * fabs(num)))
            fail_msg("%s: d/dx[%d] analytic %.8g, finite differences %.8g", what, i, g[i], num);
    }
}

int tu_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += r;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    b[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

int tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}
