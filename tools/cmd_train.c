/* plumb train: the one-host launcher, a supervisor. It runs the coordinator
 * as one child process and the workers the config places on this host as
 * others, watches them all, and stops them all on exit, error or Ctrl-C.
 * A worker that dies is started again (the coordinator hands it the dead
 * one's requests); a coordinator that dies is started again from the run's
 * newest checkpoint, and the workers, which outlive it, register with the
 * new one.
 *
 * The coordinator child and the launcher talk over a socketpair, one
 * datagram a message:
 *   coordinator -> launcher   "bound ENDPOINT"  listening: start the workers
 *                             "hung PID"        a worker stopped beating: kill it
 *   launcher -> coordinator   "dead PID"        a worker process ended
 *                             "fail MESSAGE"    stop the run with this error
 * The launcher itself never runs the model or OpenMP: each coordinator is a
 * plain fork of it, and the workers exec the binary afresh. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/transport.h"
#include "coordinator/placement.h"
#include "coordinator/run.h"
#include "tools/cmd.h"
#include "tools/runargs.h"
#include "worker/role.h"

#define MAX_PROCS PLACE_MAX_PROCS
#define MSG_MAX 1536

typedef struct {
    PlaceProc place;         /* its roles and device                */
    pid_t pid;
    int exited, status;
    int restarts;            /* times it was started again         */
    char log[CFG_PATH + 64];
} Child;

typedef struct {
    RunConfig *cfg;
    const char *resume;      /* --resume, for a coordinator with no checkpoint yet */
    int quiet;
    Child kids[MAX_PROCS];
    int n;
    int threads;
    char endpoint[CFG_PATH]; /* the coordinator's, once bound        */
    char pub[ZT_KEY_LEN + 1];/* the coordinator's public key (CURVE) */
    int spawned;             /* the workers were started             */
    /* the coordinator */
    pid_t co;                /* its pid, 0 while there is none       */
    int fd;                  /* the launcher's end of the link       */
    int co_restarts;
    double co_down_since;    /* when the last one died (pl_now_s)    */
    int failing;             /* "fail" was sent: it stops, not restarts */
    double fail_at;
    uint64_t run_id;         /* every coordinator's (CoordHooks.run_id)  */
} Launch;

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int s) { g_signal = s; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb train CONFIG.yaml [key.sub=value ...] [--resume DIR] [--quiet]\n"
            "                   [--help-config]\n"
            "\n"
            "Runs a whole training run on this host: the coordinator and one worker\n"
            "process per entry of launch.workers (\"auto\": one per role the algorithm\n"
            "needs; \"actor,reference reward\": actor and reference sharing one process,\n"
            "reward in another; \"actor@0-5 critic,reward@6-7\": six actor processes on\n"
            "GPUs 0-5 and two of critic and reward on 6 and 7; \"colocated\": every role on\n"
            "every GPU of launch.devices). Workers log to RUN_DIR/logs/. A worker that dies is\n"
            "started again (launch.max_restarts times), and so is the coordinator, from\n"
            "the run's newest checkpoint; the launcher stops everything when the run ends,\n"
            "fails, or on Ctrl-C. Overrides take the config's dotted keys (optim.lr=3e-4\n"
            "run.steps=50); --help-config lists them all. --resume continues from a\n"
            "checkpoint folder, or a run folder's newest.\n");
}

/* Sends one link message; errors are the receiver's to notice (it died). */
static void link_send(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void link_send(int fd, const char *fmt, ...) {
    char m[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof m) n = sizeof m - 1;
    if (fd >= 0) send(fd, m, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ------------------------------------------------- the coordinator child */

typedef struct {
    int fd;
    pid_t dead[MAX_PROCS];
    int n_dead;
} Link;

static int co_bound(void *ctx, const char *endpoint) {
    link_send(((Link *)ctx)->fd, "bound %s", endpoint);
    return 0;
}

/* CoordHooks.tick: a signal, or the launcher's messages. */
static int co_tick(void *ctx) {
    Link *k = ctx;
    if (g_signal)
        return pl_fail(PL_EINVAL, "interrupted by signal %d; stopping the workers", (int)g_signal);
    char m[MSG_MAX];
    ssize_t n;
    while ((n = recv(k->fd, m, sizeof m - 1, MSG_DONTWAIT)) > 0) {
        m[n] = '\0';
        if (!strncmp(m, "dead ", 5) && k->n_dead < MAX_PROCS) k->dead[k->n_dead++] = atoi(m + 5);
        else if (!strncmp(m, "fail ", 5)) return pl_fail(PL_EPEER, "%s", m + 5);
    }
    if (n == 0) return pl_fail(PL_EPEER, "the launcher went away");
    return 0;
}

/* CoordHooks.dead_pid: the pids the launcher saw end, one a call. */
static int co_dead_pid(void *ctx) {
    Link *k = ctx;
    return k->n_dead > 0 ? (int)k->dead[--k->n_dead] : 0;
}

/* CoordHooks.hung_pid: the launcher kills it, and starts it again. */
static void co_hung_pid(void *ctx, int pid) { link_send(((Link *)ctx)->fd, "hung %d", pid); }

/* Starts a coordinator process on l->cfg, resuming from `resume` (NULL: a
 * fresh start). */
static int start_coordinator(Launch *l, const char *resume) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return pl_fail(PL_EIO, "socketpair: %s", strerror(errno));
    pid_t parent = getpid();
    fflush(NULL); /* nothing buffered here is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]), close(sv[1]);
        return pl_fail(PL_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* Ctrl-C reaches the launcher, which tells us; the kernel stops us
         * if the launcher dies */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        close(sv[0]);
        if (l->fd >= 0) close(l->fd);
        Link k = {.fd = sv[1]};
        CoordHooks h = {.resume = resume, .on_bound = co_bound, .tick = co_tick,
                        .dead_pid = co_dead_pid, .hung_pid = co_hung_pid, .ctx = &k,
                        .quiet = l->quiet, .min_workers = l->n, .restarts = l->co_restarts,
                        .down_since = l->co_down_since, .run_id = l->run_id};
        int rc = coord_run(l->cfg, &h);
        if (rc < 0) fprintf(stderr, "plumb train: %s\n", pl_error());
        fflush(NULL);
        _exit(rc < 0 ? 1 : 0);
    }
    close(sv[1]);
    if (l->fd >= 0) close(l->fd);
    l->fd = sv[0];
    l->co = pid;
    fprintf(stderr, "plumb train: coordinator pid %d%s%s\n", (int)pid, resume ? ", from " : "",
            resume ? resume : "");
    return 0;
}

/* ------------------------------------------------------------ workers */

/* The processes of launch.workers (coordinator/placement.h). */
static int plan(Launch *l) {
    Placement *pl = malloc(sizeof *pl);
    PL_CHECK_ALLOC(pl);
    int rc = place_plan(l->cfg, pl); /* at most MAX_PROCS */
    for (int i = 0; rc == 0 && i < pl->n; i++) l->kids[i].place = pl->proc[i];
    if (rc == 0) l->n = pl->n;
    free(pl);
    return rc;
}

/* Starts worker process i (again, after a restart). It outlives a
 * coordinator that dies: --rejoin-s makes it register with the next. */
static int spawn_one(Launch *l, int i) {
    const RunConfig *c = l->cfg;
    Child *k = &l->kids[i];
    char threads[16], rank[16], rejoin[16];
    snprintf(threads, sizeof threads, "%d", l->threads);
    snprintf(rank, sizeof rank, "%d", i);
    snprintf(rejoin, sizeof rejoin, "%d", c->startup_timeout_s);
    char *argv[40];
    int a = 0;
    argv[a++] = "plumb", argv[a++] = "worker";
    argv[a++] = "--role", argv[a++] = k->place.roles;
    argv[a++] = "--connect", argv[a++] = l->endpoint;
    argv[a++] = "--model", argv[a++] = (char *)c->model_path;
    argv[a++] = "--tokenizer", argv[a++] = (char *)c->tokenizer;
    argv[a++] = "--threads", argv[a++] = threads;
    argv[a++] = "--device", argv[a++] = k->place.device;
    argv[a++] = "--rank", argv[a++] = rank;
    argv[a++] = "--rejoin-s", argv[a++] = rejoin;
    if (c->secret_key[0]) {
        argv[a++] = "--server-key", argv[a++] = l->pub;
        argv[a++] = "--key", argv[a++] = (char *)c->client_key;
    }
    argv[a++] = "--verbose";
    argv[a] = NULL;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return pl_fail(PL_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* Own process group: Ctrl-C reaches the launcher, which stops us.
         * The kernel stops us if the launcher dies. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        int fd = open(k->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "plumb train: exec: %s\n", strerror(errno));
        _exit(127);
    }
    k->pid = pid;
    k->exited = 0;
    fprintf(stderr, "plumb train: worker %d (%s) pid %d on %s, log %s\n", i, k->place.roles, pid,
            k->place.device, k->log);
    return 0;
}

/* Prints the last lines of a worker's log. */
static void tail_log(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char lines[8][512];
    int n = 0;
    while (fgets(lines[n % 8], sizeof lines[0], f)) n++;
    fclose(f);
    for (int i = n > 8 ? n - 8 : 0; i < n; i++) fprintf(stderr, "  | %s", lines[i % 8]);
}

/* Stops the run with an error: the coordinator, when there is one, is
 * told (it stops the workers and exits 1); else the launcher says it. */
static int stop_run(Launch *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int stop_run(Launch *l, const char *fmt, ...) {
    char m[MSG_MAX - 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    l->failing = 1;
    l->fail_at = pl_now_s();
    if (l->co > 0) {
        link_send(l->fd, "fail %s", m);
        return 0;
    }
    fprintf(stderr, "plumb train: %s\n", m);
    return -1;
}

/* Worker i ended with status st while the run goes on: it is started again,
 * launch.max_restarts times, then the run stops. < 0: stop now. */
static int worker_ended(Launch *l, int i, int st) {
    Child *k = &l->kids[i];
    k->exited = 1, k->status = st;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0; /* it was told to shut down */
    fprintf(stderr, "plumb train: worker %d (%s, pid %d) %s %d; its log %s ends:\n", i,
            k->place.roles, k->pid, WIFSIGNALED(st) ? "was killed by signal" : "exited with status",
            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), k->log);
    tail_log(k->log);
    if (l->failing) return 0;
    if (l->co > 0) link_send(l->fd, "dead %d", (int)k->pid);
    /* the coordinator gives the new one the dead one's requests, and its
     * roles' state: none for an untrained role, else a replica's, the copy
     * launch.keep_state keeps, or the last checkpoint's, every role going
     * back to it (coord_run) */
    if (k->restarts < l->cfg->max_restarts) {
        k->restarts++;
        fprintf(stderr, "plumb train: restarting worker %d (%s), restart %d of %d\n", i,
                k->place.roles, k->restarts, l->cfg->max_restarts);
        return spawn_one(l, i);
    }
    return stop_run(l, "worker %d (%s) died %d times: launch.max_restarts (%d) is spent", i,
                    k->place.roles, k->restarts + 1, l->cfg->max_restarts);
}

/* The coordinator ended with status st. Returns the launcher's exit code
 * when the run is over, or -1 after starting a new coordinator. */
static int coordinator_ended(Launch *l, int st) {
    l->co = 0;
    if (g_signal) return 130;
    if (WIFEXITED(st)) return WEXITSTATUS(st) == 0 ? 0 : 1; /* it said why */
    fprintf(stderr, "plumb train: the coordinator was killed by signal %d\n", WTERMSIG(st));
    if (l->failing) return 1;
    if (l->co_restarts >= l->cfg->max_restarts) {
        fprintf(stderr, "plumb train: the coordinator died %d times: launch.max_restarts (%d) "
                        "is spent\n", l->co_restarts + 1, l->cfg->max_restarts);
        return 1;
    }
    /* from the newest checkpoint that was written whole (an unfinished
     * one is a hidden .tmp folder), else where the run began */
    char from[CFG_PATH + 64];
    const char *resume = l->resume;
    if (coord_newest_checkpoint(l->cfg->run_dir, l->run_id, from, sizeof from) == 0) resume = from;
    l->co_restarts++;
    l->co_down_since = pl_now_s();
    fprintf(stderr, "plumb train: restarting the coordinator from %s, restart %d of %d\n",
            resume ? resume : "the start", l->co_restarts, l->cfg->max_restarts);
    if (start_coordinator(l, resume) < 0) {
        fprintf(stderr, "plumb train: %s\n", pl_error());
        return 1;
    }
    return -1;
}

/* A message from the coordinator. */
static int on_message(Launch *l, const char *m) {
    if (!strncmp(m, "bound ", 6)) {
        snprintf(l->endpoint, sizeof l->endpoint, "%s", m + 6);
        /* a coordinator started again binds the same address, which the
         * workers keep connecting to */
        snprintf(l->cfg->endpoint, sizeof l->cfg->endpoint, "%s", m + 6);
        if (l->spawned) return 0;
        l->spawned = 1;
        for (int i = 0; i < l->n; i++) PL_TRY(spawn_one(l, i));
    } else if (!strncmp(m, "hung ", 5)) {
        /* a child the pool takes for dead (no heartbeats) may hang, as
         * under SIGSTOP: kill it, and worker_ended starts it again */
        pid_t pid = atoi(m + 5);
        for (int i = 0; i < l->n; i++)
            if (l->kids[i].pid == pid && !l->kids[i].exited) {
                fprintf(stderr, "plumb train: worker %d (%s, pid %d) stopped answering; killing it\n",
                        i, l->kids[i].place.roles, (int)pid);
                kill(pid, SIGKILL);
            }
    }
    return 0;
}

/* Runs until the coordinator ends the run; returns the exit code. */
static int supervise(Launch *l) {
    int forwarded = 0;
    for (;;) {
        struct pollfd pf = {.fd = l->fd, .events = POLLIN};
        if (l->co > 0 && poll(&pf, 1, 100) > 0 && (pf.revents & POLLIN)) {
            char m[MSG_MAX];
            ssize_t n;
            while ((n = recv(l->fd, m, sizeof m - 1, MSG_DONTWAIT)) > 0) {
                m[n] = '\0';
                if (on_message(l, m) < 0 && stop_run(l, "%s", pl_error()) < 0) return 1;
            }
        } else if (l->co <= 0) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (g_signal && !forwarded && l->co > 0) kill(l->co, SIGTERM), forwarded = 1;
        if (l->failing && l->co > 0 && pl_now_s() - l->fail_at > 30) kill(l->co, SIGKILL);
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid == l->co) {
                int code = coordinator_ended(l, st);
                if (code >= 0) return code;
                forwarded = 0;
                continue;
            }
            for (int i = 0; i < l->n; i++)
                if (l->kids[i].pid == pid && !l->kids[i].exited && worker_ended(l, i, st) < 0)
                    return 1;
        }
        if (l->co <= 0 && g_signal) return 130;
    }
}

/* Waits for the workers to leave; SIGTERM after grace_s, SIGKILL 3 s later. */
static void reap(Launch *l, double grace_s) {
    struct timespec ts = {0, 50 * 1000000};
    for (int phase = 0; phase < 3; phase++) {
        double limit = phase == 0 ? grace_s : 3.0;
        for (double t = 0; t < limit; t += 0.05) {
            int alive = 0;
            for (int i = 0; i < l->n; i++) {
                Child *k = &l->kids[i];
                if (k->pid <= 0 || k->exited) continue;
                if (waitpid(k->pid, &k->status, WNOHANG) == k->pid) k->exited = 1;
                else alive++;
            }
            if (!alive) return;
            nanosleep(&ts, NULL);
        }
        for (int i = 0; i < l->n; i++)
            if (l->kids[i].pid > 0 && !l->kids[i].exited)
                kill(l->kids[i].pid, phase == 0 ? SIGTERM : SIGKILL);
    }
}

int cmd_train(int argc, char **argv) {
    RunArgs a;
    int rc = runargs_parse(&a, "train", argc, argv, usage);
    if (rc) return rc == 1 ? 0 : 2;
    Launch l;
    memset(&l, 0, sizeof l);
    l.cfg = &a.cfg;
    l.resume = a.resume;
    l.quiet = a.quiet;
    l.fd = -1;
    l.run_id = coord_new_run_id();
    /* what the workers are started with: the model (made here when there
     * is no model.path), the key, their logs' folder */
    rc = plan(&l);
    if (rc == 0) rc = coord_prepare_model(&a.cfg);
    if (rc == 0 && a.cfg.secret_key[0] && !a.cfg.client_key[0])
        rc = pl_fail(PL_EINVAL, "transport.secret_key is set: plumb train also needs "
                                "transport.client_key, the key pair its workers use");
    if (rc == 0 && a.cfg.secret_key[0]) rc = zt_key_read(a.cfg.secret_key, l.pub, NULL);
    char logs[CFG_PATH + 16];
    snprintf(logs, sizeof logs, "%s/logs", a.cfg.run_dir);
    if (rc == 0) rc = pl_mkdirs(logs);
    if (rc < 0) {
        fprintf(stderr, "plumb train: %s\n", pl_error());
        return 2;
    }
    for (int i = 0; i < l.n; i++)
        snprintf(l.kids[i].log, sizeof l.kids[i].log, "%s/worker-%d.log", logs, i);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    l.threads = a.cfg.threads > 0 ? a.cfg.threads : (int)(cores / l.n > 0 ? cores / l.n : 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (start_coordinator(&l, a.resume) < 0) {
        fprintf(stderr, "plumb train: %s\n", pl_error());
        return 1;
    }
    rc = supervise(&l);
    if (l.co > 0) { /* the launcher gave up on it */
        kill(l.co, SIGKILL);
        waitpid(l.co, NULL, 0);
    }
    reap(&l, rc != 0 ? 0.5 : 5.0);
    return rc;
}
