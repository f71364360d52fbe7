/* buf.h: growable arrays and byte strings, grown by doubling.
 *
 *   int *ids = NULL; size_t n = 0, cap = 0;
 *   PL_TRY(pl_grow(&ids, &cap, n + 1, sizeof *ids));
 *   ids[n++] = id;
 *
 *   PlBuf b = {0};
 *   PL_TRY(pl_buf_put(&b, "abc", 3));   // b.p is "abc", NUL-terminated
 *   pl_buf_free(&b);
 */
#ifndef PLUMB_COMMON_BUF_H
#define PLUMB_COMMON_BUF_H

#include <stddef.h>

/* Makes the array that *pp points to (a T ** passed as void *, of *cap
 * elements of elem bytes) hold at least need elements. PL_ENOMEM leaves
 * the array and *cap as they were. */
int pl_grow(void *pp, size_t *cap, size_t need, size_t elem);

typedef struct {
    char *p; /* NUL-terminated once anything is put */
    size_t n, cap;
} PlBuf;

/* Appends n bytes of s; PL_ENOMEM leaves b as it was. */
int pl_buf_put(PlBuf *b, const void *s, size_t n);
void pl_buf_free(PlBuf *b);

#endif
