/* plumb train: the one-host launcher. Runs the coordinator in this process
 * and the workers the config places on this host as child processes,
 * watches them, and stops them all on exit, error or Ctrl-C. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/transport.h"
#include "coordinator/run.h"
#include "tools/cmd.h"
#include "tools/runargs.h"
#include "worker/role.h"

#define MAX_PROCS 16

typedef struct {
    char roles[128];
    unsigned mask;           /* its roles, as bits                 */
    pid_t pid;
    int exited, status;
    int restarts;            /* times it was started again         */
    char log[CFG_PATH + 64];
} Child;

typedef struct {
    RunConfig *cfg;
    Child kids[MAX_PROCS];
    int n;
    int threads;
    int running;             /* 1 while the run should be going on */
    char endpoint[512];      /* the coordinator's, for restarts    */
    char pub[ZT_KEY_LEN + 1];/* the coordinator's public key (CURVE) */
    pid_t dead[MAX_PROCS];   /* restarted workers' old pids, for the pool */
    int n_dead;
} Launch;

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int s) { g_signal = s; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb train CONFIG.yaml [key.sub=value ...] [--resume DIR] [--quiet]\n"
            "                   [--help-config]\n"
            "\n"
            "Runs a whole training run on this host: the coordinator in this process and\n"
            "one worker process per entry of launch.workers (\"auto\": one per role the\n"
            "algorithm needs; \"actor,reference reward\": actor and reference sharing one\n"
            "process, reward in another). Workers log to RUN_DIR/logs/. The launcher\n"
            "stops every worker when the run ends, fails, or on Ctrl-C; a worker that\n"
            "dies stops the run with its log's last lines. Overrides take the config's\n"
            "dotted keys (optim.lr=3e-4 run.steps=50); --help-config lists them all.\n"
            "--resume continues from a checkpoint folder, or a run folder's newest.\n");
}

/* Splits launch.workers into process role lists. */
static int plan(Launch *l) {
    const RunConfig *c = l->cfg;
    unsigned need = coord_needed_roles(c), placed = 0;
    if (!strcmp(c->workers, "auto")) {
        for (int k = 0; k < ROLE_NKINDS; k++)
            if (need & (1u << k)) {
                l->kids[l->n].mask = 1u << k;
                snprintf(l->kids[l->n++].roles, 128, "%s", role_kind_name(k));
            }
        return 0;
    }
    char buf[CFG_STR];
    snprintf(buf, sizeof buf, "%s", c->workers);
    char *save = NULL;
    for (char *p = strtok_r(buf, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
        if (l->n == MAX_PROCS) return pl_fail(PL_EINVAL, "launch.workers: over %d processes", MAX_PROCS);
        char roles[128], *s2 = NULL;
        snprintf(roles, sizeof roles, "%s", p);
        for (char *r = strtok_r(roles, ",", &s2); r; r = strtok_r(NULL, ",", &s2)) {
            RoleKind k;
            if (role_kind_parse(r, &k) < 0)
                return pl_fail(PL_EINVAL, "launch.workers: unknown role '%s' in \"%s\"", r,
                               c->workers);
            placed |= 1u << k;
            l->kids[l->n].mask |= 1u << k;
        }
        snprintf(l->kids[l->n++].roles, 128, "%s", p);
    }
    for (int k = 0; k < ROLE_NKINDS; k++)
        if ((need & (1u << k)) && !(placed & (1u << k)))
            return pl_fail(PL_EINVAL, "launch.workers \"%s\" places no process for the %s role, "
                                      "which %s needs",
                           c->workers, role_kind_name(k), algo_name_str(c->algo));
    return 0;
}

/* Starts worker process i (again, after a restart). */
static int spawn_one(Launch *l, int i) {
    const RunConfig *c = l->cfg;
    Child *k = &l->kids[i];
    char threads[16], rank[16];
    snprintf(threads, sizeof threads, "%d", l->threads);
    snprintf(rank, sizeof rank, "%d", i);
    char *argv[32];
    int a = 0;
    argv[a++] = "plumb", argv[a++] = "worker";
    argv[a++] = "--role", argv[a++] = k->roles;
    argv[a++] = "--connect", argv[a++] = l->endpoint;
    argv[a++] = "--model", argv[a++] = (char *)c->model_path;
    argv[a++] = "--tokenizer", argv[a++] = (char *)c->tokenizer;
    argv[a++] = "--threads", argv[a++] = threads;
    argv[a++] = "--device", argv[a++] = (char *)c->device;
    argv[a++] = "--rank", argv[a++] = rank;
    if (c->secret_key[0]) {
        argv[a++] = "--server-key", argv[a++] = l->pub;
        argv[a++] = "--key", argv[a++] = (char *)c->client_key;
    }
    argv[a++] = "--verbose";
    argv[a] = NULL;
    pid_t parent = getpid();
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
    fprintf(stderr, "plumb train: worker %d (%s) pid %d, log %s\n", i, k->roles, pid, k->log);
    return 0;
}

/* Starts the workers once the coordinator is listening. */
static int spawn(void *ctx, const char *endpoint) {
    Launch *l = ctx;
    const RunConfig *c = l->cfg;
    char logs[CFG_PATH + 16];
    snprintf(logs, sizeof logs, "%s/logs", c->run_dir);
    mkdir(logs, 0755);
    snprintf(l->endpoint, sizeof l->endpoint, "%s", endpoint);
    if (c->secret_key[0]) {
        if (!c->client_key[0])
            return pl_fail(PL_EINVAL, "transport.secret_key is set: plumb train also needs "
                                      "transport.client_key, the key pair its workers use");
        PL_TRY(zt_key_read(c->secret_key, l->pub, NULL));
    }
    for (int i = 0; i < l->n; i++) {
        snprintf(l->kids[i].log, sizeof l->kids[i].log, "%s/worker-%d.log", logs, i);
        PL_TRY(spawn_one(l, i));
    }
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

static int watch(void *ctx) {
    Launch *l = ctx;
    if (g_signal)
        return pl_fail(PL_EINVAL, "interrupted by signal %d; stopping the workers", (int)g_signal);
    for (int i = 0; i < l->n; i++) {
        Child *k = &l->kids[i];
        if (k->pid <= 0 || k->exited) continue;
        int st;
        if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
            k->exited = 1, k->status = st;
            if (!l->running) continue;
            fprintf(stderr, "plumb train: worker %d (%s, pid %d) %s %d; its log %s ends:\n", i,
                    k->roles, k->pid, WIFSIGNALED(st) ? "was killed by signal" : "exited with status",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), k->log);
            tail_log(k->log);
            /* an untrained role holds nothing a new process lacks: start it
             * again, and the coordinator gives it the dead one's requests */
            /* a trained role's worker too, when the coordinator keeps a copy
             * of the state (launch.keep_state); it refuses the rest */
            int stateless = !(k->mask & coord_trained_roles(l->cfg)) || coord_keeps_state(l->cfg);
            if (stateless && k->restarts < l->cfg->max_restarts) {
                k->restarts++;
                if (l->n_dead < MAX_PROCS) l->dead[l->n_dead++] = k->pid;
                fprintf(stderr, "plumb train: restarting worker %d (%s), restart %d of %d\n", i,
                        k->roles, k->restarts, l->cfg->max_restarts);
                PL_TRY(spawn_one(l, i));
                continue;
            }
            if (stateless)
                return pl_fail(PL_EPEER, "worker %d (%s) died %d times: launch.max_restarts (%d) "
                                         "is spent", i, k->roles, k->restarts + 1,
                               l->cfg->max_restarts);
            return pl_fail(PL_EPEER, "worker %d (%s) stopped during the run (a role it trains "
                                     "holds state a new process does not have: --resume from "
                                     "the last checkpoint)", i, k->roles);
        }
    }
    return 0;
}

/* CoordHooks.dead_pid: the old pids of restarted workers, one a call. */
static int dead_pid(void *ctx) {
    Launch *l = ctx;
    return l->n_dead > 0 ? (int)l->dead[--l->n_dead] : 0;
}

/* CoordHooks.hung_pid: a child the pool takes for dead (no heartbeats)
 * may hang, as under SIGSTOP; kill it, and watch() starts it again. */
static void hung_pid(void *ctx, int pid) {
    Launch *l = ctx;
    for (int i = 0; i < l->n; i++)
        if (l->kids[i].pid == pid && !l->kids[i].exited) {
            fprintf(stderr, "plumb train: worker %d (%s, pid %d) stopped answering; killing it\n",
                    i, l->kids[i].roles, pid);
            kill(pid, SIGKILL);
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
    if (plan(&l) < 0) {
        fprintf(stderr, "plumb train: %s\n", pl_error());
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    l.threads = a.cfg.threads > 0 ? a.cfg.threads : (int)(cores / l.n > 0 ? cores / l.n : 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    l.running = 1;
    CoordHooks h = {.resume = a.resume, .on_bound = spawn, .tick = watch, .dead_pid = dead_pid,
                    .hung_pid = hung_pid, .ctx = &l,
                    .quiet = a.quiet, .min_workers = l.n};
    rc = coord_run(&a.cfg, &h);
    l.running = 0;
    if (rc < 0) fprintf(stderr, "plumb train: %s\n", pl_error());
    reap(&l, rc < 0 ? 0.5 : 5.0);
    if (g_signal) return 130;
    return rc < 0 ? 1 : 0;
}
