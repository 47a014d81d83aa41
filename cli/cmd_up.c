/* cmd_up: graft up and graft run — a local cluster of redis-server (generated
 * config: AOF everysec, noeviction, loopback, a free port, data in the state
 * directory), graft-broker and N graft-worker processes, supervised (a
 * process that dies is restarted) and stopped in order (workers, broker,
 * Redis) on Ctrl-C or at the end of `run`. */
#include "cli.h"
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"
#include "gr_wire.h"
#include "jobs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UP_MAX_WORKERS   256
#define UP_MAX_ARGS      24
#define UP_START_WAIT_MS 15000 /* for Redis and the broker to answer */
#define UP_STOP_WAIT_MS  10000 /* for a process to exit after SIGTERM */
#define UP_MAX_BACKOFF_S 30.0

typedef struct proc {
    char name[64];
    char *argv[UP_MAX_ARGS + 1]; /* owned strings */
    pid_t pid;
    double started, next_start;
    double backoff;
} proc;

typedef struct cluster {
    char *state, *store, *bindir, *logdir;
    char redis_url[256], broker_ep[256];
    int own_redis, lockfd;
    proc redis, broker;
    proc workers[UP_MAX_WORKERS];
    int nworkers;
    int hb_ms, liveness;
} cluster;

static volatile sig_atomic_t g_stop;
static void on_stop(int sig)
{
    (void)sig;
    g_stop++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return gr_seterr(GR_EIO, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    close(fd);
    return port > 0 ? port : gr_seterr(GR_EIO, "no free port on 127.0.0.1: %s", strerror(errno));
}

static int set_args(proc *p, const char *name, const char *const *args)
{
    snprintf(p->name, sizeof p->name, "%s", name);
    size_t n = 0;
    for (; args[n] && n < UP_MAX_ARGS; n++)
        if (!(p->argv[n] = strdup(args[n]))) return gr_seterr(GR_ENOMEM, "out of memory");
    p->argv[n] = NULL;
    p->backoff = 1.0;
    return 0;
}

static void free_args(proc *p)
{
    for (size_t i = 0; p->argv[i]; i++) free(p->argv[i]);
    memset(p->argv, 0, sizeof p->argv);
}

/* Starts p with stdout and stderr appended to <logdir>/<name>.log; the child
 * gets its own process group (Ctrl-C reaches only us, we stop it in order)
 * and dies with us (PDEATHSIG) if we are killed. */
static int spawn(cluster *C, proc *p)
{
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/%s.log", C->logdir, p->name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return gr_seterr(GR_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        /* Several workers share the cores of one machine: OpenMP threads that
         * spin while waiting steal them from each other (a merge ran 4x
         * slower on two loaded cores). The user's own setting wins. */
        setenv("OMP_WAIT_POLICY", "passive", 0);
        execvp(p->argv[0], p->argv);
        fprintf(stderr, "graft up: cannot run %s: %s\n", p->argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    p->started = now_s();
    return 0;
}

/* Waits up to ms for p to exit; returns 1 if it did. */
static int wait_exit(proc *p, int ms)
{
    double end = now_s() + ms / 1000.0;
    while (p->pid > 0) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) {
            p->pid = 0;
            return 1;
        }
        if (now_s() >= end) return 0;
        sleep_ms(20);
    }
    return 1;
}

static void stop_procs(proc **ps, int n, int ms)
{
    for (int i = 0; i < n; i++)
        if (ps[i]->pid > 0) kill(ps[i]->pid, SIGTERM);
    double end = now_s() + ms / 1000.0;
    for (int i = 0; i < n; i++) {
        int left = (int)((end - now_s()) * 1000);
        if (!wait_exit(ps[i], left > 0 ? left : 0) && ps[i]->pid > 0) {
            fprintf(stderr, "graft: %s (pid %d) did not stop; killing it\n", ps[i]->name,
                    (int)ps[i]->pid);
            kill(ps[i]->pid, SIGKILL);
            wait_exit(ps[i], 2000);
        }
    }
}

static void cluster_stop(cluster *C)
{
    proc *ps[UP_MAX_WORKERS];
    for (int i = 0; i < C->nworkers; i++) ps[i] = &C->workers[i];
    stop_procs(ps, C->nworkers, UP_STOP_WAIT_MS); /* they finish or hand back their task */
    ps[0] = &C->broker;
    stop_procs(ps, 1, UP_STOP_WAIT_MS);
    if (C->own_redis) {
        ps[0] = &C->redis; /* SIGTERM: Redis flushes the AOF and exits */
        stop_procs(ps, 1, UP_STOP_WAIT_MS);
    }
}

static void cluster_free(cluster *C)
{
    free_args(&C->redis);
    free_args(&C->broker);
    for (int i = 0; i < C->nworkers; i++) free_args(&C->workers[i]);
    if (C->lockfd >= 0) close(C->lockfd);
    free(C->state);
    free(C->store);
    free(C->bindir);
    free(C->logdir);
}

/* Directory of the running graft binary (graft-broker and graft-worker are
 * looked up there first, then in PATH). */
static char *bin_dir(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    return strdup(self);
}

static const char *prog(cluster *C, const char *name, char buf[PATH_MAX])
{
    if (C->bindir) {
        snprintf(buf, PATH_MAX, "%s/%s", C->bindir, name);
        if (access(buf, X_OK) == 0) return buf;
    }
    return name;
}

static int redis_ping(const char *host, int port)
{
    struct timeval tv = {0, 300000};
    redisContext *r = redisConnectWithTimeout(host, port, tv);
    int ok = 0;
    if (r && !r->err) {
        redisReply *rep = redisCommand(r, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG");
        if (rep) freeReplyObject(rep);
    }
    if (r) redisFree(r);
    return ok;
}

static int start_redis(cluster *C)
{
    int port = free_port();
    if (port < 0) return port;
    char *dir = gr_fs_join(C->state, "redis"), *conf = gr_fs_join(C->state, "redis.conf");
    int rc = GR_ENOMEM;
    if (!dir || !conf) goto out;
    if ((rc = gr_fs_mkdirs(dir, 0700, 0))) goto out;
    gr_buf b = {0};
    gr_buf_printf(&b,
                  "# generated by graft up: loopback only, AOF everysec, never evict\n"
                  "port %d\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
                  "dir \"%s\"\nappendonly yes\nappendfsync everysec\n"
                  "maxmemory-policy noeviction\nsave \"\"\nlogfile \"\"\n",
                  port, dir);
    rc = b.oom ? GR_ENOMEM : gr_fs_write_atomic(conf, b.data, b.len, 0600);
    gr_buf_free(&b);
    if (rc) goto out;
    const char *args[] = {"redis-server", conf, NULL};
    if ((rc = set_args(&C->redis, "redis", args))) goto out;
    if ((rc = spawn(C, &C->redis))) goto out;
    snprintf(C->redis_url, sizeof C->redis_url, "redis://127.0.0.1:%d", port);
    double end = now_s() + UP_START_WAIT_MS / 1000.0;
    while (!redis_ping("127.0.0.1", port)) {
        int st;
        if (waitpid(C->redis.pid, &st, WNOHANG) == C->redis.pid) {
            C->redis.pid = 0;
            rc = gr_seterr(GR_EIO,
                           "redis-server exited at once (is it installed? see %s/redis.log, or "
                           "pass --redis URL)",
                           C->logdir);
            goto out;
        }
        if (now_s() > end) {
            rc = gr_seterr(GR_ETIMEOUT, "redis-server did not answer on port %d (see %s/redis.log)",
                           port, C->logdir);
            goto out;
        }
        sleep_ms(50);
    }
    rc = 0;
out:
    free(dir);
    free(conf);
    return rc;
}

static int broker_answers(const char *ep, int ms)
{
    gr_client *c = gr_client_new(ep);
    if (!c) return 0;
    gr_json *res = NULL;
    int ok = gr_client_call(c, GR_CMD_WORKERS, NULL, ms, &res) == 0;
    gr_json_free(res);
    gr_client_destroy(&c);
    return ok;
}

typedef struct up_opts {
    int workers;
    const char *redis, *state, *store, *bind;
    int hb_ms, liveness, threads;
} up_opts;

static int cluster_start(cluster *C, const up_opts *o, int quiet)
{
    char pbuf[PATH_MAX], num[4][32];
    int rc;
    memset(C, 0, sizeof *C);
    C->lockfd = -1;
    C->nworkers = o->workers;
    C->hb_ms = o->hb_ms;
    C->liveness = o->liveness;
    if (!(C->state = gr_client_state_dir(o->state))) return gr_errcode();
    if ((rc = gr_fs_mkdirs(C->state, 0700, 0))) return rc;
    if (!(C->logdir = gr_fs_join(C->state, "logs"))) return GR_ENOMEM;
    if ((rc = gr_fs_mkdirs(C->logdir, 0755, 0))) return rc;
    /* one cluster per state directory: its Redis data must have one owner */
    char *lock = gr_fs_join(C->state, "lock");
    if (!lock) return GR_ENOMEM;
    C->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(lock);
    if (C->lockfd < 0) return gr_seterr(GR_EIO, "%s/lock: %s", C->state, strerror(errno));
    if (flock(C->lockfd, LOCK_EX | LOCK_NB)) {
        gr_up_info up;
        int live = gr_client_up_read(C->state, &up);
        if (live == 1)
            return gr_seterr(GR_ESTATE,
                             "graft up is already running for %s (pid %d, broker %s); use it, or "
                             "stop it first",
                             C->state, up.pid, up.broker);
        return gr_seterr(GR_ESTATE,
                         "state directory %s is in use by another graft run; wait for it or give "
                         "--state DIR",
                         C->state);
    }
    if (!(C->store = gr_cas_default_root(o->store))) return gr_errcode();
    gr_cas *cas = gr_cas_open(C->store); /* creates the layout once, up front */
    if (!cas) return gr_errcode();
    gr_cas_destroy(&cas);
    C->bindir = bin_dir();
    /* Redis */
    if (o->redis && *o->redis)
        snprintf(C->redis_url, sizeof C->redis_url, "%s", o->redis);
    else {
        C->own_redis = 1;
        if ((rc = start_redis(C))) return rc;
    }
    /* broker */
    if (o->bind && *o->bind)
        snprintf(C->broker_ep, sizeof C->broker_ep, "%s", o->bind);
    else {
        int port = free_port();
        if (port < 0) return port;
        snprintf(C->broker_ep, sizeof C->broker_ep, "tcp://127.0.0.1:%d", port);
    }
    snprintf(num[0], sizeof num[0], "%d", C->hb_ms);
    snprintf(num[1], sizeof num[1], "%d", C->liveness);
    const char *bargs[] = {prog(C, "graft-broker", pbuf),
                           "--bind",
                           C->broker_ep,
                           "--redis",
                           C->redis_url,
                           "--store",
                           C->store,
                           "--heartbeat-ms",
                           num[0],
                           "--liveness",
                           num[1],
                           NULL};
    if ((rc = set_args(&C->broker, "broker", bargs))) return rc;
    if ((rc = spawn(C, &C->broker))) return rc;
    double end = now_s() + UP_START_WAIT_MS / 1000.0;
    while (!broker_answers(C->broker_ep, 500)) {
        int st;
        if (waitpid(C->broker.pid, &st, WNOHANG) == C->broker.pid) {
            C->broker.pid = 0;
            return gr_seterr(GR_EIO, "graft-broker exited at once (see %s/broker.log)", C->logdir);
        }
        if (now_s() > end)
            return gr_seterr(GR_ETIMEOUT, "graft-broker did not answer at %s (see %s/broker.log)",
                             C->broker_ep, C->logdir);
    }
    /* workers: the machine's cores shared among them */
    cpu_set_t set;
    int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    int threads = o->threads > 0 ? o->threads : (cores / C->nworkers > 0 ? cores / C->nworkers : 1);
    snprintf(num[2], sizeof num[2], "%d", threads);
    char host[128] = "local";
    gethostname(host, sizeof host - 1);
    for (int i = 0; i < C->nworkers; i++) {
        char name[64], id[200];
        snprintf(name, sizeof name, "worker-%d", i + 1);
        snprintf(id, sizeof id, "%.100s-up-%d-%d", host, (int)getpid(), i + 1);
        const char *wargs[] = {prog(C, "graft-worker", pbuf),
                               "--broker",
                               C->broker_ep,
                               "--store",
                               C->store,
                               "--id",
                               id,
                               "--threads",
                               num[2],
                               "--heartbeat-ms",
                               num[0],
                               "--liveness",
                               num[1],
                               NULL};
        if ((rc = set_args(&C->workers[i], name, wargs))) return rc;
        if ((rc = spawn(C, &C->workers[i]))) return rc;
    }
    if (!quiet)
        fprintf(stderr,
                "graft: broker %s, redis %s%s, store %s, %d worker%s (%d thread%s each); logs in "
                "%s\n",
                C->broker_ep, C->redis_url, C->own_redis ? " (own)" : "", C->store, C->nworkers,
                C->nworkers == 1 ? "" : "s", threads, threads == 1 ? "" : "s", C->logdir);
    return 0;
}

/* Restarts any process of the cluster that died (with backoff). */
static void supervise(cluster *C)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        proc *all[UP_MAX_WORKERS + 2];
        int n = 0;
        all[n++] = &C->redis;
        all[n++] = &C->broker;
        for (int i = 0; i < C->nworkers; i++) all[n++] = &C->workers[i];
        for (int i = 0; i < n; i++) {
            proc *p = all[i];
            if (p->pid != pid) continue;
            p->pid = 0;
            double now = now_s();
            if (now - p->started > 10) p->backoff = 1.0; /* it ran a while: start again soon */
            p->next_start = now + p->backoff;
            p->backoff = p->backoff * 2 > UP_MAX_BACKOFF_S ? UP_MAX_BACKOFF_S : p->backoff * 2;
            if (WIFSIGNALED(st))
                fprintf(stderr, "graft up: %s was killed by signal %d; restarting it\n", p->name,
                        WTERMSIG(st));
            else
                fprintf(stderr, "graft up: %s exited with status %d; restarting it\n", p->name,
                        WEXITSTATUS(st));
        }
    }
    proc *all[UP_MAX_WORKERS + 2];
    int n = 0;
    if (C->own_redis) all[n++] = &C->redis;
    all[n++] = &C->broker;
    for (int i = 0; i < C->nworkers; i++) all[n++] = &C->workers[i];
    for (int i = 0; i < n; i++)
        if (!all[i]->pid && all[i]->argv[0] && now_s() >= all[i]->next_start)
            if (spawn(C, all[i])) fprintf(stderr, "graft up: %s\n", gr_errmsg());
}

static int parse_common(int argc, char **argv, int *i, up_opts *o, int *missing)
{
    const char *v;
    if ((v = jobs_opt(argc, argv, i, "--workers", missing)))
        o->workers = atoi(v);
    else if ((v = jobs_opt(argc, argv, i, "--redis", missing)))
        o->redis = v;
    else if ((v = jobs_opt(argc, argv, i, "--state", missing)))
        o->state = v;
    else if ((v = jobs_opt(argc, argv, i, "--store", missing)))
        o->store = v;
    else if ((v = jobs_opt(argc, argv, i, "--bind", missing)))
        o->bind = v;
    else if ((v = jobs_opt(argc, argv, i, "--heartbeat-ms", missing)))
        o->hb_ms = atoi(v);
    else if ((v = jobs_opt(argc, argv, i, "--liveness", missing)))
        o->liveness = atoi(v);
    else if ((v = jobs_opt(argc, argv, i, "--threads", missing)))
        o->threads = atoi(v);
    else
        return 0;
    return 1;
}

static int check_common(const up_opts *o)
{
    if (o->workers < 1 || o->workers > UP_MAX_WORKERS)
        return cli_usage_error("--workers must be from 1 to %d", UP_MAX_WORKERS);
    if (o->hb_ms < 10 || o->hb_ms > 600000)
        return cli_usage_error("--heartbeat-ms must be from 10 to 600000");
    if (o->liveness < 1 || o->liveness > 100)
        return cli_usage_error("--liveness must be from 1 to 100");
    if (o->threads < 0) return cli_usage_error("--threads must be >= 0");
    return 0;
}

static void install_stop_handlers(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cmd_up(int argc, char **argv)
{
    up_opts o = {.workers = 2, .hb_ms = 1000, .liveness = 3};
    int missing = 0;
    const char *env = getenv("GRAFT_REDIS");
    if (env && *env) o.redis = env;
    for (int i = 1; i < argc; i++) {
        if (parse_common(argc, argv, &i, &o, &missing)) continue;
        return cli_usage_error(
            "%s: %s\nusage: graft up [--workers N] [--redis URL] [--state DIR] [--store DIR]\n"
            "                [--bind tcp://HOST:PORT] [--threads N] [--heartbeat-ms MS] "
            "[--liveness N]",
            argv[i], missing ? "missing value" : "unknown option");
    }
    if (missing) return cli_usage_error("up: missing value");
    int rc = check_common(&o);
    if (rc) return rc;
    install_stop_handlers();
    cluster C;
    rc = cluster_start(&C, &o, 0);
    if (!rc) {
        gr_up_info info = {.pid = getpid()};
        snprintf(info.broker, sizeof info.broker, "%s", C.broker_ep);
        snprintf(info.redis, sizeof info.redis, "%s", C.redis_url);
        snprintf(info.store, sizeof info.store, "%s", C.store);
        rc = gr_client_up_write(C.state, &info);
    }
    if (rc) {
        int st = cli_fail(rc);
        cluster_stop(&C);
        cluster_free(&C);
        return st;
    }
    printf("%s\n", C.broker_ep); /* for scripts: GRAFT_BROKER=$(...) */
    fflush(stdout);
    fprintf(stderr, "graft up: running; Ctrl-C stops everything\n");
    while (!g_stop) {
        supervise(&C);
        sleep_ms(100);
    }
    fprintf(stderr, "graft up: stopping workers, broker%s\n", C.own_redis ? ", redis" : "");
    char *upf = gr_fs_join(C.state, "up.json");
    if (upf) unlink(upf);
    free(upf);
    cluster_stop(&C);
    cluster_free(&C);
    return 0;
}

int cmd_run(int argc, char **argv)
{
    up_opts o = {.workers = 2, .hb_ms = 1000, .liveness = 3};
    const char *path = NULL, *broker = NULL, *sets[256];
    size_t nsets = 0;
    int json = 0, no_cache = 0, missing = 0;
    const char *env = getenv("GRAFT_REDIS");
    if (env && *env) o.redis = env;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (parse_common(argc, argv, &i, &o, &missing)) continue;
        if ((v = jobs_opt(argc, argv, &i, "--set", &missing))) {
            if (nsets == 256) return cli_usage_error("too many --set options");
            sets[nsets++] = v;
        } else if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--no-cache"))
            no_cache = 1;
        else if (missing || argv[i][0] == '-' || path)
            return cli_usage_error(
                "%s: %s\nusage: graft run PIPELINE.yaml [--set k=v]... [--workers N] [--json] "
                "[--no-cache]\n                 [--broker URL | --redis URL --state DIR --store "
                "DIR]",
                argv[i],
                missing ? "missing value"
                : path  ? "one pipeline at a time"
                        : "unknown option");
        else
            path = argv[i];
    }
    if (!path) return cli_usage_error("usage: graft run PIPELINE.yaml [--set k=v]... [--json]");
    int rc = check_common(&o);
    if (rc) return rc;
    /* a broker that is already up (--broker, GRAFT_BROKER, graft up) is used
     * as is; otherwise one is started for this run and stopped after it */
    char *ep = NULL;
    const char *envb = getenv("GRAFT_BROKER");
    if (broker || (envb && *envb))
        ep = gr_client_broker(broker);
    else {
        char *state = gr_client_state_dir(o.state);
        gr_up_info up;
        if (state && gr_client_up_read(state, &up) == 1) ep = strdup(up.broker);
        free(state);
        gr_clearerr();
    }
    /* bad input is reported before anything is started */
    gr_pipeline *pl = gr_pipeline_load(path, sets, nsets);
    if (!pl) {
        free(ep);
        return cli_fail(gr_errcode());
    }
    gr_pipeline_free(&pl);
    install_stop_handlers();
    cluster C;
    int started = 0;
    if (!ep) {
        rc = cluster_start(&C, &o, json);
        if (rc) {
            int st = cli_fail(rc);
            cluster_stop(&C);
            cluster_free(&C);
            return st;
        }
        started = 1;
        ep = strdup(C.broker_ep);
    }
    gr_client *c = ep ? gr_client_new(ep) : NULL;
    char jid[128];
    gr_json *final = NULL;
    int result;
    if (!c)
        result = cli_fail(gr_errcode());
    else if ((result = jobs_submit(c, path, sets, nsets, no_cache, jid)) == 0) {
        if (!json) fprintf(stderr, "graft run: job %s\n", jid);
        result = jobs_watch(c, jid, stderr, &final, (volatile int *)&g_stop);
        if (result == 130) {
            /* interrupted: cancel what we submitted before stopping */
            fprintf(stderr, "graft run: interrupted; cancelling %s\n", jid);
            gr_json *body = gr_jsonb_obj(), *res = NULL;
            if (body && !gr_jsonb_set(body, "job", gr_jsonb_str(jid)))
                gr_client_call(c, GR_CMD_CANCEL, body, 3000, &res);
            gr_json_free(res);
            gr_json_free(body);
        } else if (final)
            jobs_print_status(stdout, final, json);
    }
    fflush(stdout);
    gr_json_free(final);
    gr_client_destroy(&c);
    free(ep);
    if (started) {
        cluster_stop(&C);
        cluster_free(&C);
    }
    return result;
}
