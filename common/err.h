/* err.h: status codes and the thread-local error message.
 *
 * Library code returns a plain int: 0 on success, a negative PL_E* code on
 * failure, after recording a human-readable message that names what failed
 * and where. The caller prints pl_error(); only main() exits. */
#ifndef PLUMB_ERR_H
#define PLUMB_ERR_H

#define PL_OK       0
#define PL_EINVAL  -1   /* bad argument or value                       */
#define PL_EIO     -2   /* open/read/write/mmap failed                 */
#define PL_ENOMEM  -3   /* allocation failed                           */
#define PL_EFORMAT -4   /* malformed file contents                     */
#define PL_ERANGE  -5   /* a value outside its allowed range           */
#define PL_ENOTSUP -6   /* valid but not supported (dtype, device...)  */
#define PL_EPROTO  -7   /* a malformed or unexpected message           */
#define PL_ETIMEOUT -8  /* a peer did not answer in time               */
#define PL_EPEER   -9   /* a peer reported an error, or went away      */
#define PL_EDEVICE -10  /* a device (GPU) call or kernel failed        */

/* Records the message (printf format) and returns code, so that a failing
 * path reads `return pl_fail(PL_EIO, "open %s: %s", path, strerror(errno));` */
int pl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with more context ("loading x: <old msg>")
 * and returns code unchanged. */
int pl_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread ("" when none). */
const char *pl_error(void);

/* Clears the message. */
void pl_clear_error(void);

/* Propagates a negative status from an expression. */
#define PL_TRY(expr)                                                          \
    do {                                                                      \
        int pl_rc_ = (expr);                                                  \
        if (pl_rc_ < 0) return pl_rc_;                                        \
    } while (0)

/* Allocation check inside functions that return a status. */
#define PL_CHECK_ALLOC(ptr)                                                   \
    do {                                                                      \
        if ((ptr) == NULL)                                                    \
            return pl_fail(PL_ENOMEM, "out of memory: %s (%s:%d)", #ptr,      \
                           __FILE__, __LINE__);                               \
    } while (0)

#endif
