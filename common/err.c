#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[1024];

int pl_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

int pl_wrap(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    /* prefix, ": ", then as much of the old message as fits */
    size_t n = strlen(prefix);
    if (n > sizeof err_buf - 3) n = sizeof err_buf - 3;
    memcpy(err_buf, prefix, n);
    memcpy(err_buf + n, ": ", 2);
    n += 2;
    size_t m = strlen(old);
    if (m > sizeof err_buf - 1 - n) m = sizeof err_buf - 1 - n;
    memcpy(err_buf + n, old, m);
    err_buf[n + m] = '\0';
    return code;
}

const char *pl_error(void) { return err_buf; }

void pl_clear_error(void) { err_buf[0] = '\0'; }
