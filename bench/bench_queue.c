/* bench_queue: the job system's speed. Starts redis-server (AOF everysec)
 * and graft-broker as separate processes, runs noop stages through W worker
 * threads that answer every TASK at once, and prints
 *   - throughput: stages/s from the first dispatch to the job's end,
 *   - latency at about half that rate: p50/p99 of enqueue -> worker receives
 *     (TASK ready_us, the broker's clock, vs. the worker's clock: same host),
 *   - two peers on the same Redis, so the figures read as ratios: a
 *     3-command Lua transition, pipelined (what Redis does for a minimal
 *     transition), and graft's own dispatch.lua + done.lua driven directly,
 *     pipelined, with no broker and no ZeroMQ (what Redis allows graft),
 *   - broker RSS after each of several jobs (memory must stay flat).
 * Usage: bench_queue [--stages 20000] [--workers 4] [--jobs 5] [--half-s 5]
 *                    [--lat-rate R]  (latency at R stages/s instead of half)
 *                    [--sweep OUT.svg]  (then latency at 0.1..0.8 of the best
 *                    rate, half-s seconds each, plotted as SVG)
 * graft-broker is looked up as $GRAFT_BIN/graft-broker, else beside this
 * program's directory. */
#include "../tests/unit/test_broker_util.h"
#include "gr_lua.h"
#include "gr_svg.h"

#include <limits.h>
#include <math.h>

#define OUT_ID "sha256:0000000000000000000000000000000000000000000000000000000000000000"

typedef struct bworker_t {
    pthread_t t;
    void *zctx;
    const char *endpoint;
    int id;
    volatile int *stop;
    int64_t *lat_us; /* latency samples */
    size_t nlat, cap;
    volatile int record;
    uint64_t tasks;
    int64_t first_us, last_us;
} bworker_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *worker_main(void *p)
{
    bworker_t *w = p;
    th_peer peer = th_connect(w->zctx, w->endpoint);
    char wid[32];
    snprintf(wid, sizeof wid, "bench-%d", w->id);
    th_ready(&peer, wid, "[\"noop\"]", NULL, 0);
    gr_wire_msg m = {0};
    gr_buf out = {0};
    int64_t last_hb = 0;
    while (!*w->stop) {
        /* heartbeats on the worker's own clock, as graft-worker's I/O thread */
        if (th_now_ms() - last_hb >= 300) {
            gr_wire_send(peer.sock, NULL, 0, GR_CMD_HEARTBEAT, NULL, 0, NULL);
            last_hb = th_now_ms();
        }
        zmq_pollitem_t it = {peer.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        while (gr_wire_recv(peer.sock, GR_WIRE_TO_WORKER, 0, GR_WIRE_NOWAIT, &m, &peer.st) == 0) {
            if (m.cmd == GR_CMD_HEARTBEAT) continue;
            if (m.cmd == GR_CMD_DISCONNECT) {
                th_ready(&peer, wid, "[\"noop\"]", NULL, 0);
                continue;
            }
            if (m.cmd != GR_CMD_TASK) continue;
            int64_t t = now_us();
            int64_t ready = gr_json_get_int(m.body, "ready_us", 0);
            if (!w->first_us) w->first_us = t;
            w->last_us = t;
            w->tasks++;
            if (w->record && ready > 0) {
                if (w->nlat == w->cap) {
                    size_t nc = w->cap ? w->cap * 2 : 4096;
                    int64_t *v = realloc(w->lat_us, nc * sizeof *v);
                    if (v) {
                        w->lat_us = v;
                        w->cap = nc;
                    }
                }
                if (w->nlat < w->cap) w->lat_us[w->nlat++] = t - ready;
            }
            gr_buf_reset(&out);
            gr_wire_pk_map(&out, 4);
            gr_wire_pk_kv_str(&out, "task", gr_json_get_str(m.body, "task", ""));
            gr_wire_pk_kv_int(&out, "attempt", gr_json_get_int(m.body, "attempt", 0));
            gr_wire_pk_str(&out, "outputs");
            gr_wire_pk_map(&out, 1);
            gr_wire_pk_kv_str(&out, "out", OUT_ID);
            gr_wire_pk_str(&out, "metrics");
            gr_wire_pk_map(&out, 0);
            gr_wire_send(peer.sock, NULL, 0, GR_CMD_DONE, out.data, out.len, NULL);
        }
    }
    gr_buf_free(&out);
    gr_wire_msg_clear(&m);
    th_close(&peer);
    return NULL;
}

static char *pipeline_yaml(int n, const char *name)
{
    gr_buf b = {0};
    gr_buf_printf(&b, "name: %s\nstages:\n", name);
    for (int i = 0; i < n; i++) gr_buf_printf(&b, "  s%d: {op: noop}\n", i);
    return gr_buf_take(&b);
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

/* CPU time (user + system) of a process so far, in microseconds */
static double cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Waits until the job is final; returns its wall time end (ms) or -1. */
static int wait_done(th_peer *cl, const char *jid, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    while (th_now_ms() < end) {
        char err[256];
        /* LIST is cheaper than a 20,000-stage STATUS */
        gr_json *r = th_request(cl, GR_CMD_LIST, "{\"limit\":1}", err, sizeof err);
        const gr_json *jobs = gr_json_get(r, "jobs");
        int fin = 0;
        for (size_t i = 0; jobs && i < jobs->len; i++)
            if (!strcmp(gr_json_get_str(jobs->items[i], "job", ""), jid)) {
                const char *st = gr_json_get_str(jobs->items[i], "state", "");
                fin = !strcmp(st, "done")                                   ? 1
                      : (!strcmp(st, "failed") || !strcmp(st, "cancelled")) ? -1
                                                                            : 0;
            }
        gr_json_free(r);
        if (fin) return fin > 0 ? 0 : -1;
        th_sleep_ms(5);
    }
    return -1;
}

/* The peer: a 3-command transition (HSET, ZADD, HINCRBY) as one Lua script,
 * EVALSHA pipelined in batches of 256 from one client. */
static double redis_lua_rate(const th_redis *r, int n)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) return 0;
    const char *script = "redis.call('HSET', KEYS[1], 'state', ARGV[1], 'worker', ARGV[2]) "
                         "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]) "
                         "return redis.call('HINCRBY', KEYS[3], 'n', 1)";
    redisReply *rep = redisCommand(c, "SCRIPT LOAD %s", script);
    if (!rep || rep->type != REDIS_REPLY_STRING) {
        if (rep) freeReplyObject(rep);
        redisFree(c);
        return 0;
    }
    char sha[41];
    snprintf(sha, sizeof sha, "%s", rep->str);
    freeReplyObject(rep);
    int64_t t0 = th_now_ms();
    for (int done = 0; done < n;) {
        int batch = n - done < 256 ? n - done : 256;
        for (int i = 0; i < batch; i++)
            redisAppendCommand(
                c, "EVALSHA %s 3 peer:stage:%d peer:leases peer:metrics running w1 %d m%d", sha,
                (done + i) % 20000, done + i, (done + i) % 20000);
        for (int i = 0; i < batch; i++) {
            void *rr;
            if (redisGetReply(c, &rr) != REDIS_OK) {
                redisFree(c);
                return 0;
            }
            freeReplyObject(rr);
        }
        done += batch;
    }
    double s = (double)(th_now_ms() - t0) / 1000.0;
    rep = redisCommand(c, "DEL peer:leases peer:metrics");
    if (rep) freeReplyObject(rep);
    redisFree(c);
    return n / s;
}

/* Peer 2: the broker's own transitions without the broker. A job of n
 * `echo` stages (no bench worker serves echo, so they wait in ready:echo) is
 * leased and finished by calling dispatch.lua and done.lua from here,
 * pipelined in batches of 256. Returns stages/s. */
static double raw_stage_rate(const th_redis *r, th_peer *cl, int n)
{
    gr_buf y = {0};
    gr_buf_puts(&y, "name: raw\nstages:\n");
    for (int i = 0; i < n; i++) gr_buf_printf(&y, "  e%d: {op: echo}\n", i);
    char err[256];
    const char *jid = th_submit(cl, y.data, 1, err, sizeof err);
    gr_buf_free(&y);
    if (!jid) return 0;
    struct timeval tv = {30, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) return 0;
    char sha[2][41];
    int ids[2] = {GR_LUA_DISPATCH, GR_LUA_DONE};
    for (int k = 0; k < 2; k++) {
        redisReply *rep = redisCommand(c, "SCRIPT LOAD %s", gr_lua_src[ids[k]]);
        snprintf(sha[k], 41, "%s", rep && rep->type == REDIS_REPLY_STRING ? rep->str : "");
        if (rep) freeReplyObject(rep);
    }
    /* wait until the broker has queued them all */
    for (int t = 0; t < 600; t++) {
        redisReply *rep = redisCommand(c, "ZCARD bench:ready:echo");
        long long q = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
        if (rep) freeReplyObject(rep);
        if (q >= n) break;
        th_sleep_ms(50);
    }
    int64_t t0 = th_now_ms();
    int done = 0;
    char jids[256][40], sids[256][40];
    long long att[256];
    while (done < n) {
        int batch = 0;
        for (int i = 0; i < 256; i++) {
            int64_t us = now_us();
            redisAppendCommand(c,
                               "EVALSHA %s 0 bench: %lld %lld 604800 10000 1000 1.0 raw 60000 echo",
                               sha[0], (long long)(us / 1000), (long long)us);
        }
        for (int i = 0; i < 256; i++) {
            void *v;
            if (redisGetReply(c, &v) != REDIS_OK) goto fail;
            redisReply *rep = v;
            if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 3) {
                snprintf(jids[batch], 40, "%s", rep->element[0]->str);
                snprintf(sids[batch], 40, "%s", rep->element[1]->str);
                att[batch++] = rep->element[2]->integer;
            }
            freeReplyObject(rep);
        }
        if (!batch) break;
        for (int i = 0; i < batch; i++) {
            int64_t us = now_us();
            redisAppendCommand(c,
                               "EVALSHA %s 0 bench: %lld %lld 604800 10000 1000 1.0 %s %s %lld raw "
                               "{\"out\":\"%s\"} {} 0 60000",
                               sha[1], (long long)(us / 1000), (long long)us, jids[i], sids[i],
                               att[i], OUT_ID);
        }
        for (int i = 0; i < batch; i++) {
            void *v;
            if (redisGetReply(c, &v) != REDIS_OK) goto fail;
            freeReplyObject(v);
        }
        done += batch;
    }
    double secs = (double)(th_now_ms() - t0) / 1000.0;
    redisFree(c);
    return secs > 0 && done == n ? done / secs : 0;
fail:
    redisFree(c);
    return 0;
}

static const char *broker_path(const char *argv0)
{
    static char p[PATH_MAX];
    const char *bin = getenv("GRAFT_BIN");
    if (bin) {
        snprintf(p, sizeof p, "%s/graft-broker", bin);
        return p;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return "graft-broker";
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(p, sizeof p, "%s/../graft-broker", self);
    (void)argv0;
    return p;
}

/* GRAFT_BENCH_PROFILE=1: time per script (by sha) from the slow log, which
 * the bench sets to log every command; the log is emptied afterwards. */
static void print_profile(const th_redis *rr, const char *phase)
{
    th_redis R = *rr;
    printf("  profile (%s):\n", phase);
    /* sums per script sha: usec total and calls */
    redisReply *sl = th_redis_cmd(&R, "SLOWLOG GET 200000");
    struct {
        char sha[41];
        double us;
        long n;
    } agg[32];
    int na = 0;
    for (size_t i = 0; sl && sl->type == REDIS_REPLY_ARRAY && i < sl->elements; i++) {
        const redisReply *e = sl->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4) continue;
        const redisReply *args = e->element[3];
        if (args->type != REDIS_REPLY_ARRAY || args->elements < 2 ||
            strcasecmp(args->element[0]->str, "evalsha"))
            continue;
        int k;
        for (k = 0; k < na; k++)
            if (!strncmp(agg[k].sha, args->element[1]->str, 40)) break;
        if (k == na && na < 32) {
            snprintf(agg[na].sha, 41, "%s", args->element[1]->str);
            agg[na].us = 0;
            agg[na++].n = 0;
        }
        if (k < na) {
            agg[k].us += (double)e->element[2]->integer;
            agg[k].n++;
        }
    }
    for (int k = 0; k < na; k++)
        printf("  profile: script %.8s: %ld calls, %.1f us per call, %.0f ms in all\n", agg[k].sha,
               agg[k].n, agg[k].us / agg[k].n, agg[k].us / 1000);
    if (sl) freeReplyObject(sl);
    redisReply *pr = th_redis_cmd(&R, "HGETALL prof");
    for (size_t i = 0; pr && pr->type == REDIS_REPLY_ARRAY && i + 1 < pr->elements; i += 2)
        printf("  prof %s = %s\n", pr->element[i]->str, pr->element[i + 1]->str);
    if (pr) freeReplyObject(pr);
    redisReply *x = th_redis_cmd(&R, "SLOWLOG RESET");
    if (x) freeReplyObject(x);
}

/* Redis AOF rewrites so far, after waiting (up to 2 minutes) for one that
 * runs or is scheduled to end: a rewrite forks a child that competes for the
 * two cores for seconds, which latency figures should not mix in unsaid. */
static long long aof_settle(const th_redis *R)
{
    int64_t until = th_now_ms() + 120000;
    long long rewrites = -1;
    for (;;) {
        redisReply *p = th_redis_cmd(R, "INFO persistence");
        const char *t = p && p->type == REDIS_REPLY_STRING ? p->str : "";
        const char *a = strstr(t, "aof_rewrite_in_progress:");
        const char *b = strstr(t, "aof_rewrite_scheduled:");
        const char *c = strstr(t, "aof_rewrites:");
        int busy = (a && atoi(a + 24)) || (b && atoi(b + 22));
        if (c) rewrites = atoll(c + 13);
        if (p) freeReplyObject(p);
        if (!busy || th_now_ms() > until) break;
        th_sleep_ms(100);
    }
    return rewrites;
}

/* Latency at a given load: 4-stage noop jobs submitted at rate stages/s
 * for secs seconds; p50/p99/max of enqueue -> worker receives. */
typedef struct latres {
    double offered, p50, p99, max;
    size_t n;
    long long rewrites; /* AOF rewrites that started during the phase */
} latres;

static int lat_phase(const th_redis *R, pid_t bpid, th_peer *cl, bworker_t *ws, int nworkers,
                     double rate, int secs, int report_cpu, latres *out)
{
    int per = 4; /* stages per submitted job */
    double interval_ms = per * 1000.0 / (rate > 1 ? rate : 1);
    long long rw0 = aof_settle(R);
    char *small = pipeline_yaml(per, "lat");
    char err[512];
    for (int i = 0; i < nworkers; i++) {
        ws[i].nlat = 0;
        ws[i].record = 1;
    }
    int64_t t0 = th_now_ms();
    double lcpu0[3] = {cpu_us(R->pid), cpu_us(bpid), cpu_us(getpid())};
    int sub = 0;
    while (th_now_ms() - t0 < secs * 1000) {
        int64_t due = t0 + (int64_t)(sub * interval_ms);
        while (th_now_ms() < due) th_sleep_ms(0 + (due - th_now_ms() > 1));
        if (!th_submit(cl, small, 1, err, sizeof err)) {
            fprintf(stderr, "bench_queue: submit failed: %s\n", err);
            break;
        }
        sub++;
    }
    th_sleep_ms(500);
    if (report_cpu && getenv("GRAFT_BENCH_PROFILE")) print_profile(R, "latency jobs");
    if (report_cpu && sub) {
        double st = (double)sub * per;
        double wall = (double)(th_now_ms() - t0) * 1e3;
        double r = (cpu_us(R->pid) - lcpu0[0]) / st, b = (cpu_us(bpid) - lcpu0[1]) / st,
               w = (cpu_us(getpid()) - lcpu0[2]) / st;
        printf("  CPU per stage in %d-stage jobs: redis-server %.0f us, broker %.0f us, bench "
               "workers+client %.0f us; %.2f of %ld cores busy\n",
               per, r, b, w, (r + b + w) * st / wall, sysconf(_SC_NPROCESSORS_ONLN));
    }
    for (int i = 0; i < nworkers; i++) ws[i].record = 0;
    size_t nl = 0;
    for (int i = 0; i < nworkers; i++) nl += ws[i].nlat;
    int64_t *all = calloc(nl ? nl : 1, sizeof *all);
    size_t k = 0;
    for (int i = 0; all && i < nworkers; i++)
        for (size_t q = 0; q < ws[i].nlat; q++) all[k++] = ws[i].lat_us[q];
    free(small);
    if (!all || !nl) {
        free(all);
        return -1;
    }
    qsort(all, nl, sizeof *all, cmp_i64);
    *out = (latres){.offered = sub * per / ((double)(th_now_ms() - t0 - 500) / 1000.0),
                    .p50 = (double)all[nl / 2],
                    .p99 = (double)all[(size_t)((double)nl * 0.99)],
                    .max = (double)all[nl - 1],
                    .n = nl};
    {
        redisReply *p = th_redis_cmd(R, "INFO persistence");
        const char *c = p && p->type == REDIS_REPLY_STRING ? strstr(p->str, "aof_rewrites:") : NULL;
        const char *a =
            p && p->type == REDIS_REPLY_STRING ? strstr(p->str, "aof_rewrite_in_progress:") : NULL;
        out->rewrites = c && rw0 >= 0 ? atoll(c + 13) - rw0 + (a && atoi(a + 24)) : 0;
        if (p) freeReplyObject(p);
    }
    free(all);
    return 0;
}

int main(int argc, char **argv)
{
    int nstages = 20000, nworkers = 4, njobs = 5, half_s = 5;
    double lat_rate = 0;
    const char *sweep_svg = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--stages"))
            nstages = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--workers"))
            nworkers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--jobs"))
            njobs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--half-s"))
            half_s = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lat-rate"))
            lat_rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--sweep"))
            sweep_svg = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_queue [--stages N] [--workers W] [--jobs J] [--half-s S] "
                            "[--lat-rate R] [--sweep OUT.svg]\n");
            return 2;
        }
    }
    if (nstages < 1 || nworkers < 1 || nworkers > 64 || njobs < 1 || half_s < 1) {
        fprintf(stderr, "bench_queue: bad arguments\n");
        return 2;
    }
    gr_log_set_level(GR_LOG_WARN);
    th_redis R = {0};
    if (th_redis_start(&R)) {
        fprintf(stderr, "bench_queue: cannot start redis-server\n");
        return 1;
    }
    char endpoint[64], port[16];
    snprintf(port, sizeof port, "%d", th_free_port());
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%s", port);
    const char *broker = broker_path(argv[0]);
    pid_t bpid = fork();
    if (bpid == 0) {
        setenv("GRAFT_LOG", "warn", 1);
        execl(broker, "graft-broker", "--bind", endpoint, "--redis", R.url, "--prefix",
              "bench:", (char *)NULL);
        fprintf(stderr, "bench_queue: cannot run %s\n", broker);
        _exit(127);
    }
    th_sleep_ms(300);
    void *z = zmq_ctx_new();
    volatile int stop = 0;
    bworker_t *ws = calloc((size_t)nworkers, sizeof *ws);
    for (int i = 0; i < nworkers; i++) {
        ws[i] = (bworker_t){.zctx = z, .endpoint = endpoint, .id = i, .stop = &stop};
        pthread_create(&ws[i].t, NULL, worker_main, &ws[i]);
    }
    th_peer cl = th_connect(z, endpoint);
    th_sleep_ms(300);
    char *yaml = pipeline_yaml(nstages, "bench");
    char err[512];
    int rc = 1;

    printf("bench_queue: %d noop stages per job, %d workers, redis-server %s AOF everysec, broker "
           "%s\n",
           nstages, nworkers, R.url, broker);
    if (getenv("GRAFT_BENCH_PROFILE")) { /* per-script timings from the slow log */
        redisReply *x = th_redis_cmd(&R, "CONFIG SET slowlog-log-slower-than 0");
        if (x) freeReplyObject(x);
        x = th_redis_cmd(&R, "CONFIG SET slowlog-max-len 200000");
        if (x) freeReplyObject(x);
    }
    /* ---- throughput, repeated for the memory check ---- */
    long rss[64];
    double best = 0, first_rate = 0;
    int jobs_run = 0;
    double cpu0[3] = {cpu_us(R.pid), cpu_us(bpid), cpu_us(getpid())};
    int64_t wall0 = th_now_ms();
    for (int j = 0; j < njobs && j < 64; j++) {
        for (int i = 0; i < nworkers; i++) ws[i].first_us = ws[i].last_us = 0;
        int64_t t0 = th_now_ms();
        const char *jid = th_submit(&cl, yaml, 1, err, sizeof err);
        int64_t t1 = th_now_ms();
        if (!jid) {
            fprintf(stderr, "bench_queue: submit failed: %s\n", err);
            goto out;
        }
        char jcopy[64];
        snprintf(jcopy, sizeof jcopy, "%s", jid);
        if (wait_done(&cl, jcopy, 600000)) {
            fprintf(stderr, "bench_queue: job %s did not finish\n", jcopy);
            goto out;
        }
        int64_t first = INT64_MAX, last = 0;
        for (int i = 0; i < nworkers; i++) {
            if (ws[i].first_us && ws[i].first_us < first) first = ws[i].first_us;
            if (ws[i].last_us > last) last = ws[i].last_us;
        }
        double secs = (double)(last - first) / 1e6;
        double rate = secs > 0 ? nstages / secs : 0;
        if (rate > best) best = rate;
        if (!j) first_rate = rate;
        rss[j] = rss_kb(bpid);
        jobs_run++;
        printf("  job %d: submit+expand %lld ms, dispatch->last task %.2f s: %.0f stages/s; broker "
               "RSS %ld KiB\n",
               j + 1, (long long)(t1 - t0), secs, rate, rss[j]);
        fflush(stdout);
    }
    (void)first_rate;
    if (jobs_run) {
        /* where the machine's CPU went (submission included): the budget of a
         * stage is cores / rate */
        double st = (double)jobs_run * nstages, wall = (double)(th_now_ms() - wall0) * 1e3;
        double r = (cpu_us(R.pid) - cpu0[0]) / st, b = (cpu_us(bpid) - cpu0[1]) / st,
               w = (cpu_us(getpid()) - cpu0[2]) / st;
        printf("  CPU per stage: redis-server %.0f us, broker %.0f us, bench workers+client %.0f "
               "us; %.2f of %ld cores busy\n",
               r, b, w, (r + b + w) * st / wall, sysconf(_SC_NPROCESSORS_ONLN));
    }
    {
        /* how long Redis spends inside the broker's scripts */
        redisReply *st = th_redis_cmd(&R, "INFO commandstats");
        const char *e =
            st && st->type == REDIS_REPLY_STRING ? strstr(st->str, "cmdstat_evalsha:") : NULL;
        if (e) {
            long long calls = 0;
            double usec = 0, per = 0;
            sscanf(e, "cmdstat_evalsha:calls=%lld,usec=%lf,usec_per_call=%lf", &calls, &usec, &per);
            printf(
                "  redis time in broker scripts: %lld calls, %.1f us per call, %.1f us per stage\n",
                calls, per, usec / ((double)jobs_run * nstages));
        }
        /* commands the scripts ran (the server's counts, every command but
         * EVALSHA itself): a figure the machine's load does not change */
        long long ncmd = 0;
        for (const char *q = st && st->type == REDIS_REPLY_STRING ? st->str : NULL;
             q && (q = strstr(q, "cmdstat_")) != NULL; q++) {
            long long c = 0;
            const char *colon = strchr(q, ':');
            if (colon && strncmp(q, "cmdstat_evalsha:", 16) &&
                sscanf(colon, ":calls=%lld", &c) == 1)
                ncmd += c;
        }
        if (getenv("GRAFT_BENCH_PROFILE") && st && st->type == REDIS_REPLY_STRING) {
            /* per command: calls and Redis time per stage */
            for (const char *q = st->str; (q = strstr(q, "cmdstat_")) != NULL; q++) {
                char name[64];
                long long c = 0;
                double us = 0;
                if (sscanf(q, "cmdstat_%63[^:]:calls=%lld,usec=%lf", name, &c, &us) == 3)
                    printf("  profile: %-12s %6.2f calls, %6.1f us per stage\n", name,
                           (double)c / ((double)jobs_run * nstages),
                           us / ((double)jobs_run * nstages));
            }
        }
        if (ncmd)
            printf("  redis commands run: %.1f per stage (all commands but EVALSHA, bench's "
                   "own included)\n",
                   (double)ncmd / ((double)jobs_run * nstages));
        if (st) freeReplyObject(st);
    }

    if (getenv("GRAFT_BENCH_PROFILE")) print_profile(&R, "throughput jobs");
    /* ---- latency at about half the best rate ---- */
    double half = lat_rate > 0 ? lat_rate : best / 2;
    latres L;
    if (lat_phase(&R, bpid, &cl, ws, nworkers, half, half_s, 1, &L) == 0)
        printf("  latency at %.0f stages/s offered (%s %.0f): enqueue->worker receives p50 "
               "%.0f us, p99 %.0f us, max %.0f us (%zu stages)%s\n",
               L.offered, lat_rate > 0 ? "set; best" : "half of", best, L.p50, L.p99, L.max, L.n,
               L.rewrites ? "; a Redis AOF rewrite ran meanwhile" : "");
    if (sweep_svg) {
        /* latency against load, from a tenth of the best rate to 0.8 of it */
        static const double frac[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8};
        enum { NF = sizeof frac / sizeof frac[0] };
        double x[NF], y50[NF], y99[NF];
        const char *note[NF];
        size_t np = 0;
        printf("  latency sweep (%d s each): offered stages/s, p50 us, p99 us\n", half_s);
        for (size_t i = 0; i < NF; i++) {
            if (lat_phase(&R, bpid, &cl, ws, nworkers, best * frac[i], half_s, 0, &L)) break;
            printf("    %.0f (%.1f of best)  %.0f  %.0f%s\n", L.offered, frac[i], L.p50, L.p99,
                   L.rewrites ? "  (a Redis AOF rewrite ran meanwhile)" : "");
            x[np] = L.offered;
            y50[np] = L.p50 / 1000;
            note[np] = L.rewrites ? "AOF rewrite" : NULL;
            y99[np++] = L.p99 / 1000;
        }
        gr_svg_plot *pl = gr_svg_new(720, 440);
        /* points in order of offered load (a saturated client offers less) */
        for (size_t i = 1; i < np; i++)
            for (size_t j = i; j > 0 && x[j - 1] > x[j]; j--) {
                double t;
                t = x[j], x[j] = x[j - 1], x[j - 1] = t;
                t = y50[j], y50[j] = y50[j - 1], y50[j - 1] = t;
                t = y99[j], y99[j] = y99[j - 1], y99[j - 1] = t;
                const char *n = note[j];
                note[j] = note[j - 1], note[j - 1] = n;
            }
        char title[160], half_lbl[64];
        snprintf(title, sizeof title,
                 "graft queue: latency vs load (4-stage noop jobs, %d workers)", nworkers);
        snprintf(half_lbl, sizeof half_lbl, "half of best (%.0f/s)", best / 2);
        if (pl && !gr_svg_title(pl, title) && !gr_svg_xlabel(pl, "offered load (stages/s)") &&
            !gr_svg_ylabel(pl, "enqueue -> worker receives (ms)")) {
            gr_svg_ylog(pl, 1);
            int s1 = gr_svg_line(pl, "p99", x, y99, np);
            int s0 = gr_svg_line(pl, "p50", x, y50, np);
            if (s0 >= 0) gr_svg_series_markers(pl, s0, 3);
            if (s1 >= 0) gr_svg_series_markers(pl, s1, 3);
            if (s1 >= 0 && np) gr_svg_point_labels(pl, s1, note, np);
            gr_svg_hline(pl, 2.0, "aim: p99 2 ms");
            gr_svg_vline(pl, best / 2, half_lbl);
            if (gr_svg_save(pl, sweep_svg))
                fprintf(stderr, "bench_queue: %s\n", gr_errmsg());
            else
                printf("  latency sweep plot: %s\n", sweep_svg);
        }
        gr_svg_destroy(&pl);
    }

    /* ---- the peers: raw Redis rates, same server ---- */
    double lua = redis_lua_rate(&R, 200000);
    printf("  redis peer 1: %.0f Lua transitions/s (a 3-command script, pipelined)\n", lua);
    double raw = raw_stage_rate(&R, &cl, nstages);
    if (raw > 0) {
        printf("  redis peer 2: %.0f stages/s through graft's own scripts driven directly "
               "(dispatch.lua + done.lua per stage, pipelined, no broker, no ZeroMQ)\n",
               raw);
        printf("  ratio: broker %.0f stages/s = %.2f of peer 2, %.2f of peer 1\n", best, best / raw,
               lua > 0 ? best / lua : 0);
    }
    if (jobs_run > 1)
        printf("  broker RSS over %d stages: %ld KiB after the first job, %ld KiB after the last "
               "(%+ld KiB)\n",
               jobs_run * nstages, rss[0], rss[jobs_run - 1], rss[jobs_run - 1] - rss[0]);
    rc = 0;
out:
    stop = 1;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(ws[i].t, NULL);
        free(ws[i].lat_us);
    }
    free(ws);
    th_close(&cl);
    zmq_ctx_term(z);
    kill(bpid, SIGTERM);
    int st;
    waitpid(bpid, &st, 0);
    th_redis_cleanup(&R);
    free(yaml);
    return rc;
}
