/* exec.c: reward.type exec, scores from the user's program (remote.h).
 *
 * The program runs once, started at the first batch, and lives as long as
 * the role: one JSON object per line in, one score per line out. Lines are
 * written and read at the same time (both pipes non-blocking under one
 * poll) so that a program that answers as it reads never blocks on a full
 * pipe. A program that went wrong (exited, answered garbage, ran past
 * timeout_s) is killed and waited for; the next batch starts a new one, as
 * its stream of lines can no longer be trusted to line up. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/sigpipe.h"
#include "reward/remote.h"

extern char **environ;

enum { MAX_LINE = 1 << 20 }; /* bytes of one answer line */

typedef struct {
    RemoteOpts o;
    char *command;
    pid_t pid;               /* 0: not running                                */
    int in, out;             /* its stdin (we write), its stdout (we read)    */
    PlBuf pending;           /* bytes read past the last full line            */
} Exec;

static int exec_open(const RemoteOpts *o, void **state) {
    *state = NULL;
    if (!o->command || !*o->command) return pl_fail(PL_EINVAL, "reward.command is empty");
    Exec *x = calloc(1, sizeof *x);
    PL_CHECK_ALLOC(x);
    x->o = *o;
    x->command = strdup(o->command);
    if (!x->command) {
        free(x);
        return pl_fail(PL_ENOMEM, "reward exec: out of memory");
    }
    x->o.command = x->command, x->o.url = NULL;
    x->in = x->out = -1;
    *state = x;
    return 0;
}

/* Waits up to wait_s for the program to end; "exited with status 3",
 * "was killed by signal 9" (it is reaped, and x->pid is 0), or "is
 * running". */
static const char *reap(Exec *x, double wait_s, char *buf, size_t n) {
    int st = 0;
    pid_t r = waitpid(x->pid, &st, WNOHANG);
    for (double end = pl_now_s() + wait_s; r == 0 && pl_now_s() < end;) {
        usleep(10000);
        r = waitpid(x->pid, &st, WNOHANG);
    }
    if (r != x->pid) return snprintf(buf, n, "is running"), buf;
    x->pid = 0;
    if (WIFEXITED(st)) snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
    else snprintf(buf, n, "was killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return buf;
}

/* Ends the program (SIGKILL unless it ended by itself) and forgets it. */
static void stop(Exec *x) {
    if (x->in >= 0) close(x->in);
    if (x->out >= 0) close(x->out);
    x->in = x->out = -1;
    char st[64];
    if (x->pid > 0 && !strcmp(reap(x, 0, st, sizeof st), "is running")) {
        kill(x->pid, SIGKILL);
        waitpid(x->pid, NULL, 0);
    }
    x->pid = 0;
    pl_buf_free(&x->pending);
}

static int launch(Exec *x) {
    int pin[2] = {-1, -1}, pout[2] = {-1, -1};
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) {
        int e = errno;
        if (pin[0] >= 0) close(pin[0]), close(pin[1]);
        return pl_fail(PL_EIO, "reward.command '%s': pipe: %s", x->command, strerror(e));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    char *argv[] = {"sh", "-c", x->command, NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pin[0]), close(pout[1]);
    if (e != 0) {
        close(pin[1]), close(pout[0]);
        return pl_fail(PL_EIO, "reward.command '%s': cannot start /bin/sh: %s", x->command,
                       strerror(e));
    }
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    x->pid = pid, x->in = pin[1], x->out = pout[0];
    return 0;
}

static void exec_close(void *state) {
    Exec *x = state;
    if (!x) return;
    if (x->pid > 0) {
        /* its stdin closed is its cue to end; one that does not is killed
         * after a second */
        close(x->in), x->in = -1;
        char st[64];
        reap(x, 1.0, st, sizeof st);
    }
    stop(x);
    free(x->command);
    free(x);
}

/* Takes the full lines of x->pending as scores into out[*got ..]; 0, or
 * < 0 on a line that is not a score. */
static int take_lines(Exec *x, float *out, int n, int *got, int first) {
    size_t at = 0;
    char *p = x->pending.p;
    while (*got < n) {
        char *nl = p ? memchr(p + at, '\n', x->pending.n - at) : NULL;
        if (!nl) break;
        size_t len = (size_t)(nl - (p + at));
        json_error_t je;
        json_t *v = json_loadb(p + at, len, JSON_DECODE_ANY, &je);
        char why[96] = "not JSON";
        int ok = v && remote_score_value(v, &out[*got], why, sizeof why) == 0;
        json_decref(v);
        if (!ok) {
            char snip[96];
            remote_snippet(p + at, len, snip, sizeof snip);
            return pl_fail(PL_EPROTO, "reward.command '%s': line %d of its answer (item %d) is "
                           "%s: '%s'", x->command, *got + 1, first + *got, why, snip);
        }
        (*got)++;
        at += len + 1;
    }
    if (at) {
        memmove(p, p + at, x->pending.n - at);
        x->pending.n -= at;
        p[x->pending.n] = '\0';
    }
    if (x->pending.n > MAX_LINE)
        return pl_fail(PL_EPROTO, "reward.command '%s': a line of its answer is over %d MiB",
                       x->command, MAX_LINE >> 20);
    if (*got == n && x->pending.n)
        return pl_fail(PL_EPROTO, "reward.command '%s': more lines than the %d items it was "
                       "given", x->command, n);
    return 0;
}

/* One batch: items[0..n) written, n scores read, within timeout_s. */
static int batch(Exec *x, const RewardItem *items, int n, float *out, int first) {
    PlBuf in = {0};
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        json_t *v = remote_item_json(&items[i]);
        char *line = v ? json_dumps(v, JSON_COMPACT) : NULL;
        json_decref(v);
        rc = line ? pl_buf_put(&in, line, strlen(line)) : PL_ENOMEM;
        if (rc == 0) rc = pl_buf_put(&in, "\n", 1);
        free(line);
    }
    if (rc < 0) {
        pl_buf_free(&in);
        return pl_fail(PL_ENOMEM, "reward exec: encoding the batch");
    }
    /* lines it wrote after the last batch's answers would be taken for
     * this batch's */
    char stray[256];
    ssize_t sr = read(x->out, stray, sizeof stray);
    if (sr > 0 || x->pending.n) {
        char snip[96];
        if (sr > 0) remote_snippet(stray, (size_t)sr, snip, sizeof snip);
        else remote_snippet(x->pending.p, x->pending.n, snip, sizeof snip);
        pl_buf_free(&in);
        return pl_fail(PL_EPROTO, "reward.command '%s': more lines than the items it was given "
                       "(before items %d..%d): '%s'", x->command, first, first + n - 1, snip);
    }
    size_t sent = 0;
    int got = 0;
    const double deadline = pl_now_s() + x->o.timeout_s;
    while (rc == 0 && got < n) {
        struct pollfd fds[2] = {{.fd = x->out, .events = POLLIN}, {.fd = x->in, .events = POLLOUT}};
        int nf = sent < in.n ? 2 : 1;
        double left = deadline - pl_now_s();
        if (left <= 0) {
            rc = pl_fail(PL_ETIMEOUT, "reward.command '%s': %d of %d scores after %gs "
                         "(reward.timeout_s)", x->command, got, n, x->o.timeout_s);
            break;
        }
        int pr = poll(fds, (nfds_t)nf, (int)fmin(left * 1000.0 + 1, 1000.0));
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) {
            rc = pl_fail(PL_EIO, "reward exec: poll: %s", strerror(errno));
            break;
        }
        if (nf == 2 && fds[1].revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = write(x->in, in.p + sent, in.n - sent);
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = in.n; /* EPIPE: it stopped reading; its end of stdout says more */
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            ssize_t r = read(x->out, buf, sizeof buf);
            if (r > 0) {
                if (pl_buf_put(&x->pending, buf, (size_t)r) < 0) rc = PL_ENOMEM;
                else rc = take_lines(x, out, n, &got, first);
            } else if (r == 0) {
                char st[64];
                rc = pl_fail(PL_EPEER, "reward.command '%s' %s after %d of %d scores of the "
                             "batch (items %d..%d)", x->command, reap(x, 1.0, st, sizeof st),
                             got, n, first, first + n - 1);
            } else if (errno != EAGAIN && errno != EINTR) {
                rc = pl_fail(PL_EIO, "reward.command '%s': reading its answer: %s", x->command,
                             strerror(errno));
            }
        }
    }
    pl_buf_free(&in);
    return rc;
}

static int exec_score(void *state, const RewardItem *items, int n, float *out) {
    Exec *x = state;
    PlPipeGuard g;
    pl_sigpipe_block(&g);
    int rc = 0;
    for (int first = 0; first < n && rc == 0; first += x->o.batch_size) {
        int m = n - first < x->o.batch_size ? n - first : x->o.batch_size;
        if (x->pid == 0) rc = launch(x);
        if (rc == 0) rc = batch(x, items + first, m, out + first, first);
        if (rc < 0) stop(x);
    }
    pl_sigpipe_restore(&g);
    return rc;
}

const RemoteOps remote_exec = {.name = "exec", .open = exec_open, .score = exec_score,
                               .close = exec_close};
