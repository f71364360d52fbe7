/* buf.c: growable arrays and byte strings (buf.h). */
#include "common/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

int pl_grow(void *pp, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return PL_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return pl_fail(PL_ENOMEM, "out of memory");
        c *= 2;
    }
    /* through memcpy: pp may be any T **, which void ** may not alias */
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, c * elem);
    PL_CHECK_ALLOC(q);
    memcpy(pp, &q, sizeof q);
    *cap = c;
    return PL_OK;
}

int pl_buf_put(PlBuf *b, const void *s, size_t n) {
    PL_TRY(pl_grow(&b->p, &b->cap, b->n + n + 1, 1));
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return PL_OK;
}

void pl_buf_free(PlBuf *b) {
    free(b->p);
    *b = (PlBuf){0};
}
