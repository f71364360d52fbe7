/* fuzz_util.c: the scratch directory and file helpers of the harnesses. */
#include "fuzz/fuzz_util.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "model/tokenizer.h"

static char g_dir[4096];

static void remove_dir(void) {
    if (!g_dir[0]) return;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[4352];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
}

const char *fuzz_dir(void) {
    if (g_dir[0]) return g_dir;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/plumb-fuzz-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    /* jansson seeds its hash from /dev/urandom: fix it so a crash replays. */
    json_object_seed(1);
    atexit(remove_dir);
    return g_dir;
}

const char *fuzz_write(int slot, const char *name, const void *data, size_t n) {
    static char paths[4][4352];
    char *p = paths[slot & 3];
    snprintf(p, sizeof paths[0], "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(p);
        abort();
    }
    return p;
}

void fuzz_unlink(const char *name) {
    char p[4352];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir(), name);
    unlink(p);
}

void fuzz_split(const uint8_t *data, size_t n, const uint8_t **a, size_t *na,
                const uint8_t **rest, size_t *nrest) {
    const uint8_t *z = memchr(data, 0, n);
    *a = data;
    if (!z) {
        *na = n;
        *rest = NULL;
        *nrest = 0;
        return;
    }
    *na = (size_t)(z - data);
    *rest = z + 1;
    *nrest = n - *na - 1;
}

void fuzz_tokenizers(const char *who, Tokenizer *tok[2], char dirs[2][4096]) {
    fuzz_dir();
    const char *root = getenv("PLUMB_ROOT");
    if (!root) root = FUZZ_ROOT;
    static const char *const rel[2] = {"tests/data/tok/llama2-sp", "fuzz/data/bytelevel"};
    for (int i = 0; i < 2; i++) {
        snprintf(dirs[i], 4096, "%s/%s", root, rel[i]);
        if (tok_load(&tok[i], dirs[i]) != 0) {
            fprintf(stderr, "%s: %s (set PLUMB_ROOT to the repository)\n", who, pl_error());
            abort();
        }
    }
}
