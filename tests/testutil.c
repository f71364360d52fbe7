#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
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

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
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
        sleep_ms(10);
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
