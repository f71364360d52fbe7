#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

int tu_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---------------------------------------------------------- redis-server */

#define TU_MAX_REDIS 16
static pid_t g_redis_pids[TU_MAX_REDIS]; /* atexit backstop: servers not yet stopped */

static void redis_kill_all(void) {
    for (int i = 0; i < TU_MAX_REDIS; i++)
        if (g_redis_pids[i] > 0) {
            kill(g_redis_pids[i], SIGKILL);
            waitpid(g_redis_pids[i], NULL, 0);
            g_redis_pids[i] = 0;
        }
}

int tu_redis_start(TuRedis *s) {
    static int registered, seq;
    if (!registered) atexit(redis_kill_all), registered = 1;
    if (!s->port) s->port = tu_free_port();
    if (!s->dir[0]) {
        if (snprintf(s->dir, sizeof s->dir, "%s/redis%d", tu_tmp_dir(), seq++) >= (int)sizeof s->dir)
            return -1;
        mkdir(s->dir, 0755);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    const char *argv[24] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                            "--dir", s->dir, "--daemonize", "no", "--loglevel", "warning",
                            "--appendonly", s->persist ? "yes" : "no"};
    int argc = 15;
    if (s->persist) argv[argc++] = "--appendfsync", argv[argc++] = "always";
    if (s->password[0]) argv[argc++] = "--requirepass", argv[argc++] = s->password;
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < TU_MAX_REDIS; i++)
        if (g_redis_pids[i] == 0) {
            g_redis_pids[i] = pid;
            break;
        }
    for (int t = 0; t < 500; t++) { /* up to 5 s */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            return -1;
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            /* up: PONG, or NOAUTH with requirepass; not LOADING (AOF replay) */
            int up = r && (r->type == REDIS_REPLY_STATUS ||
                           (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
            if (r) freeReplyObject(r);
            redisFree(c);
            if (up) return 0;
        } else if (c) {
            redisFree(c);
        }
        tu_sleep_ms(10);
    }
    return -1;
}

void tu_redis_stop(TuRedis *s, int sig) {
    if (s->pid <= 0) return;
    kill(s->pid, sig);
    waitpid(s->pid, NULL, 0);
    for (int i = 0; i < TU_MAX_REDIS; i++)
        if (g_redis_pids[i] == s->pid) g_redis_pids[i] = 0;
    s->pid = 0;
}

/* ------------------------------------------------ processes and runs */

double tu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void tu_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* pre + plumb's path + ' ' + the formatted arguments + post, into cmd. */
static void plumb_command(char *cmd, size_t cap, const char *pre, const char *post,
                          const char *fmt, va_list ap) {
    char args[4096];
    vsnprintf(args, sizeof args, fmt, ap);
    snprintf(cmd, cap, "%s%s %s%s", pre, tu_plumb_bin(), args, post);
}

int tu_plumb(char **out, const char *fmt, ...) {
    char cmd[4700];
    va_list ap;
    va_start(ap, fmt);
    plumb_command(cmd, sizeof cmd, "", " 2>&1", fmt, ap);
    va_end(ap);
    char *o = NULL;
    int rc = tu_run(cmd, &o);
    if (out) *out = o;
    else free(o);
    return rc;
}

/* sh -c cmd in the background, its output into log. */
static pid_t spawn_cmd(const char *log, const char *cmd) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

pid_t tu_spawn(const char *log, const char *fmt, ...) {
    char cmd[4700];
    va_list ap;
    va_start(ap, fmt);
    plumb_command(cmd, sizeof cmd, "exec ", "", fmt, ap);
    va_end(ap);
    return spawn_cmd(log, cmd);
}

pid_t tu_spawn_sh(const char *log, const char *fmt, ...) {
    char cmd[4700] = "exec ";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + 5, sizeof cmd - 5, fmt, ap);
    va_end(ap);
    return spawn_cmd(log, cmd);
}

int tu_wait_port(int port, double timeout_s) {
    double end = tu_now_s() + timeout_s;
    do {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0) close(fd);
        if (ok) return 1;
        tu_sleep_ms(20);
    } while (tu_now_s() < end);
    return 0;
}

/* Waits up to timeout_s for pid to exit: 1 with *status set, 0 on timeout. */
int tu_wait_exit(pid_t pid, double timeout_s, int *status) {
    double end = tu_now_s() + timeout_s;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (status) *status = st;
            return 1;
        }
        if (r < 0) return 1; /* already reaped */
        if (tu_now_s() > end) return 0;
        tu_sleep_ms(20);
    }
}

/* Kills pid (one of ours) if it still runs, and reaps it. */
void tu_stop(pid_t pid) {
    if (pid <= 0) return;
    if (waitpid(pid, NULL, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

/* 1 while pid names a live process (a zombie counts as gone). */
int tu_process_alive(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Waits up to timeout_s for file path to contain needle. */
int tu_wait_text(const char *path, const char *needle, double timeout_s) {
    double end = tu_now_s() + timeout_s;
    do {
        char *t = tu_read_file(path, NULL);
        int hit = t && strstr(t, needle);
        free(t);
        if (hit) return 1;
        tu_sleep_ms(30);
    } while (tu_now_s() < end);
    return 0;
}

long tu_count_lines(const char *path) {
    char *t = tu_read_file(path, NULL);
    long n = 0;
    for (char *p = t; p && *p; p++) n += *p == '\n';
    free(t);
    return n;
}

/* Waits up to timeout_s for path to have at least n lines. */
int tu_wait_lines(const char *path, long n, double timeout_s) {
    double end = tu_now_s() + timeout_s;
    do {
        if (tu_count_lines(path) >= n) return 1;
        tu_sleep_ms(30);
    } while (tu_now_s() < end);
    return 0;
}

/* RUN/metrics.jsonl as an array of objects (fails on a line that is not
 * a JSON object with an integer "step"). */
json_t *tu_metrics_load(const char *run) {
    char *t = tu_read_file(tu_path("%s/metrics.jsonl", run), NULL);
    if (!t) fail_msg("%s/metrics.jsonl: missing", run);
    json_t *arr = json_array();
    char *save = NULL;
    for (char *line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (!json_is_object(j) || !json_is_integer(json_object_get(j, "step")))
            fail_msg("%s/metrics.jsonl: bad line: %s", run, line);
        json_array_append_new(arr, j);
    }
    free(t);
    return arr;
}

/* The line of step s, or NULL. */
json_t *tu_metrics_step(json_t *m, long s) {
    size_t i;
    json_t *j;
    json_array_foreach(m, i, j) {
        if (json_integer_value(json_object_get(j, "step")) == s) return j;
    }
    return NULL;
}

/* Steps of m, in order, must be exactly first..last. */
void tu_assert_steps(json_t *m, long first, long last, const char *what) {
    if ((long)json_array_size(m) != last - first + 1)
        fail_msg("%s: %zu metric lines, expected steps %ld..%ld", what, json_array_size(m), first,
                 last);
    for (long s = first; s <= last; s++) {
        long got = (long)json_integer_value(json_object_get(json_array_get(m, s - first), "step"));
        if (got != s) fail_msg("%s: line %ld is step %ld, expected %ld", what, s - first + 1, got, s);
    }
}

/* Every key not under perf/ of step s is the same value in a and b, and
 * both have the same such keys. */
void tu_assert_same_step(json_t *a, json_t *b, long s, const char *what) {
    json_t *la = tu_metrics_step(a, s), *lb = tu_metrics_step(b, s);
    if (!la || !lb) fail_msg("%s: step %ld missing (%s)", what, s, la ? "second" : "first");
    const char *k;
    json_t *v;
    json_object_foreach(la, k, v) {
        if (!strncmp(k, "perf/", 5)) continue;
        json_t *w = json_object_get(lb, k);
        if (!w) fail_msg("%s step %ld: \"%s\" only in the first run", what, s, k);
        if (!json_equal(v, w)) {
            char *x = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
            char *y = json_dumps(w, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
            fail_msg("%s step %ld: \"%s\" is %s vs %s", what, s, k, x, y);
        }
    }
    json_object_foreach(lb, k, v) {
        if (strncmp(k, "perf/", 5) && !json_object_get(la, k))
            fail_msg("%s step %ld: \"%s\" only in the second run", what, s, k);
    }
}
